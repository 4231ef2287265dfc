// Test access to KeyCache without a database (tests/billing/ only): a cache
// whose snapshot is given in memory, and "refreshes" with given records. The
// same code paths as production run behind it (Install settles pending spend;
// TryReserve/Release/AddPendingSpend are unchanged).
#pragma once

#include "tollgate/billing/key_cache.hpp"

#include <memory>
#include <vector>

namespace tollgate::billing::internal {

struct KeyCacheTestAccess {
  // A cache holding `records` (by id; Lookup finds record r under the
  // plaintext "test-key-<r.id>"), with no refresh thread and no connection.
  // RefreshNow() on it fails (no database).
  static std::unique_ptr<KeyCache> FromRecords(const std::vector<KeyRecord>& records);
  // Replaces the snapshot with `records` as a background refresh would.
  static void Refresh(KeyCache& cache, const std::vector<KeyRecord>& records);

 private:
  static void InstallRecords(KeyCache::Impl& impl, const std::vector<KeyRecord>& records);
};

}  // namespace tollgate::billing::internal
