// Spend added by this process that the key snapshot does not include yet.
// Private to KeyCache; not thread-safe (KeyCache holds its mutex).
#pragma once

#include <cstddef>
#include <cstdint>
#include <unordered_map>

namespace tollgate::billing::internal {

// Each key's pending amount grows with Add and shrinks by however much a new
// snapshot's spent_nano_usd grew over the previous one: growth in the
// database is the recorder having written spend that was pending. This needs
// no link between recorder and cache, and it converges: once the recorder
// has written everything, pending is 0 and spent is exact. Growth caused by
// another replica's writes settles our pending early, which only under-counts
// until our own writes land (a bounded, temporary under-count, never a
// permanent double count).
class PendingSpend {
 public:
  // Adds `nano_usd` (> 0; others ignored) to key `key_id`.
  void Add(int64_t key_id, int64_t nano_usd);
  // Pending nano-USD of key `key_id` (0 if none).
  int64_t Get(int64_t key_id) const;
  // A new snapshot shows key `key_id`'s spent went from `old_spent` to
  // `new_spent`; settles that much of its pending (never below zero).
  void Settle(int64_t key_id, int64_t old_spent, int64_t new_spent);
  // Number of keys with pending spend.
  size_t size() const { return pending_.size(); }

 private:
  std::unordered_map<int64_t, int64_t> pending_;
};

}  // namespace tollgate::billing::internal
