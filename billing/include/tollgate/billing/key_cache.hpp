// The gateway's hot-path authenticator: every API key in memory, refreshed in
// the background, so authenticating a request makes no database call.
//
// Consistency (see billing/README.md): a key created, revoked or re-limited by
// any process (CLI, another replica) is seen within one refresh interval after
// it commits. Credit is checked against spent (from the database, as of the
// last refresh) plus pending spend (added by this process and not yet seen in
// a refresh) plus, with TryReserve, the worst cases of this process's calls in
// flight. Within one process that bounds a key's overshoot by one call
// (TryReserve); across replicas the check stays soft: each replica can
// overshoot a limit by the calls it admits within one flush + refresh interval.
#pragma once

#include "tollgate/core/error.hpp"
#include "tollgate/core/money.hpp"

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace tollgate::billing {

// How often a spending limit starts over: at midnight UTC ('daily'), Monday
// 00:00 UTC ('weekly'), the 1st 00:00 UTC ('monthly'), or never ('none').
// SQL: tollgate_period_start in migrations/004_ledger.sql.
enum class LimitReset { kNone, kDaily, kWeekly, kMonthly };
std::string_view LimitResetName(LimitReset reset);                    // "none", "daily", ...
std::optional<LimitReset> ParseLimitReset(std::string_view name);     // nullopt for other text
// Start of the period that `at` falls in (UTC), as tollgate_period_start;
// the Unix epoch for kNone.
std::chrono::system_clock::time_point PeriodStart(LimitReset reset, std::chrono::system_clock::time_point at);

// An account (migrations/004_ledger.sql accounts) as the hot path needs it.
struct AccountRecord {
  int64_t id = 0;
  std::string name;
  bool prepaid = true;               // calls need credits (the balance) to start
  std::optional<Money> budget;       // nano-USD per budget period, shared by all keys; nullopt = none
  LimitReset budget_reset = LimitReset::kNone;
  std::optional<Money> soft_limit;   // warning threshold (budget, else balance); nullopt = none
  int64_t byok_fee_ppm = 50'000;     // fee on BYOK calls, millionths of the provider's cost
  bool disabled = false;             // every key of a disabled account is refused (401)
  // The account's own provider keys (BYOK), decrypted, by provider id of the
  // config. Secrets: never log, render or compare them outside the provider.
  std::map<std::string, std::string> provider_keys;
};

struct KeyRecord {
  int64_t id = 0;                     // api_keys.id; usage rows reference it
  std::string name;
  int64_t account_id = 0;             // api_keys.account_id
  std::optional<Money> credit_limit;  // spending limit per limit period, nano-USD; nullopt = unlimited
  LimitReset limit_reset = LimitReset::kNone;
  std::optional<Money> soft_limit;    // warning threshold of the key's limit; nullopt = none
  Money spent;                        // all-time usage in the database as of the last refresh
  bool revoked = false;               // Lookup returns revoked keys too; reject them (401)
  std::optional<std::chrono::system_clock::time_point> expires_at;  // refused (401) from then on
  std::optional<std::vector<std::string>> allowed_models;           // model slugs; nullopt = all
  std::optional<int64_t> requests_per_minute;                       // rate limits; nullopt = none
  std::optional<int64_t> tokens_per_minute;
  std::optional<int64_t> max_concurrent;
  AccountRecord account;              // the key's account, as of the same refresh
};

// True if the key may be used at `now`: not revoked, not expired, account not
// disabled.
bool KeyUsable(const KeyRecord& record, std::chrono::system_clock::time_point now);

class KeyCache {
 public:
  // Loads every key from `database_url` (libpq connection string or URI) and
  // starts a background thread that reloads them every `refresh_interval_ms`
  // (>= 1). When a reload fails (database down) the last good snapshot stays in
  // use; the first failure and the recovery are logged once each (log.hpp).
  // Errors: kInvalidArgument (bad URL or interval), kUnavailable (cannot
  // connect or load at start), kInternal (e.g. schema missing: api_keys does
  // not exist, SQLSTATE 42P01; the message then says to run `tollgate migrate`).
  static Result<std::unique_ptr<KeyCache>> Start(const std::string& database_url,
                                                 int refresh_interval_ms = 1000);

  // Stops the refresh thread (Stop()).
  ~KeyCache();
  KeyCache(const KeyCache&) = delete;
  KeyCache& operator=(const KeyCache&) = delete;

  // Hashes `plaintext_key` (SHA-256) and returns its record from the current
  // snapshot, or nullopt for an unknown key. Revoked keys are returned with
  // revoked = true. Never waits for the database: a refresh builds its new
  // snapshot aside and swaps it in under a short mutex. Thread-safe.
  std::optional<KeyRecord> Lookup(std::string_view plaintext_key) const;

  // The record of key `id` from the current snapshot, or nullopt. Thread-safe.
  std::optional<KeyRecord> FindById(int64_t id) const;

  // Reloads now, on the calling thread (blocking). For the admin API after it
  // created or revoked a key, and for tests. On error the old snapshot stays.
  // Errors: kUnavailable, kInternal. Thread-safe.
  Result<void> RefreshNow();

  // Reloads, on the calling thread (blocking), unless the installed snapshot
  // comes from a reload that started querying at or after `t` (each snapshot
  // records the steady-clock time its reload started; that snapshot already
  // shows every key committed before `t`). Then it returns at once: ok, no
  // database call, refreshes() unchanged.
  //
  // For a Lookup miss on a key that may have been created a moment ago: take
  // t = steady_clock::now() *before* the Lookup that missed, then call this
  // from a thread that may block (not an event loop) and Lookup again. A key
  // committed before t is then found, without waiting for the refresh
  // interval.
  //
  // Check and reload run under the mutex that serialises all reloads
  // (background, RefreshNow, this), taken before the check: a caller that
  // finds a reload in flight waits for it to install, then checks. So N
  // concurrent misses with the same t cost at most one reload once a reload
  // started after t has finished (exactly one when none was in flight), and
  // misses spread over time cost about one reload in flight at a time.
  // Every miss may still start a full reload of api_keys, and a caller waits
  // for the reloads ahead of it (each up to the connect timeout while the
  // database is down), so the gateway should call it only for keys that pass
  // LooksLikeApiKey and bound how often unknown keys may trigger it.
  // On error the old snapshot stays and the next call tries again; failures
  // are not counted in refresh_failures() (like RefreshNow).
  // Errors: kUnavailable, kInternal (schema missing: run `tollgate migrate`).
  // Thread-safe.
  Result<void> RefreshIfLoadedBefore(std::chrono::steady_clock::time_point t);

  // Stops and joins the refresh thread. Lookups keep working on the last
  // snapshot. Idempotent; thread-safe; must not be called from a log handler.
  void Stop();

  // Counters for metrics: number of keys in the snapshot, successful and
  // failed reloads (Start's load counts as one success). Thread-safe.
  size_t size() const;
  int64_t refreshes() const;
  int64_t refresh_failures() const;

 private:
  struct Impl;
  explicit KeyCache(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace tollgate::billing
