// Reads usage rows back: GET /api/v1/generation?id=gen-... (OpenRouter's
// "Get a generation" endpoint, openrouter.ai/docs/api-reference/get-a-generation).
// Blocking; call it from a worker thread, not an I/O thread.
#pragma once

#include "tollgate/billing/usage_event.hpp"
#include "tollgate/core/error.hpp"

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

namespace tollgate::billing {

class GenerationStore {
 public:
  // Connects to `database_url` (libpq connection string or URI; schema migrated).
  // Errors: kInvalidArgument (unparsable URL), kUnavailable (cannot connect).
  static Result<std::unique_ptr<GenerationStore>> Connect(const std::string& database_url);

  ~GenerationStore();
  GenerationStore(const GenerationStore&) = delete;
  GenerationStore& operator=(const GenerationStore&) = delete;

  // The stored usage row `request_id` if it belongs to key `api_key_id`
  // (nullopt = any key: the admin token's lookups); nullopt if there is no
  // such row or it belongs to another key (so callers cannot probe other
  // keys' ids). Every column of usage_events is read back:
  // NULL text columns (endpoint_id, lease_holder, price_snapshot) come back
  // empty, a NULL account_id as 0; price_snapshot is PostgreSQL's jsonb text
  // (same JSON value as written, keys and spacing normalised). `attempts` is
  // left empty (call_attempts is not read). Events still queued in a UsageRecorder are
  // not visible here (UsageRecorder::FindPending).
  // Errors: kUnavailable (database unreachable, after one reconnect attempt),
  // kInternal.
  // Thread-safe: calls are serialised on one connection (a mutex), which is
  // re-opened when it broke.
  Result<std::optional<UsageEvent>> Find(std::string_view request_id, std::optional<int64_t> api_key_id);

 private:
  struct Impl;
  explicit GenerationStore(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace tollgate::billing
