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

namespace internal {
struct KeyCacheTestAccess;  // billing/src/key_cache_testing.hpp (tests only)
}

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

  // Adds `amount` (nano-USD, >= 0; ignored otherwise) to key `key_id`'s pending
  // spend: the cost of a call recorded with UsageRecorder::Record but not yet
  // in the database. It stops counting once a refresh shows the key's
  // spent_nano_usd grown by as much (the recorder added it there). Call it
  // when you Record the call's usage (before or right after Record). Thread-safe.
  void AddPendingSpend(int64_t key_id, Money amount);

  // Pending spend of key `key_id` now (nano-USD). Thread-safe.
  Money PendingSpend(int64_t key_id) const;

  // Like the free HasCredit, but with this cache's current pending spend for
  // record.id instead of the record's copy. Thread-safe.
  bool HasCredit(const KeyRecord& record) const;

  // Credit reservation for one call, made before the call starts (a false
  // answer is a 402). `worst_case` is the most the call can cost (nano-USD,
  // e.g. its prompt plus max_tokens at the endpoint's prices; negative counts
  // as 0). Unlimited keys: always true, nothing is reserved. Otherwise, with
  //   used = spent (this cache's latest snapshot of key record.id)
  //        + pending spend (AddPendingSpend, not yet in the snapshot)
  //        + the sum of the key's outstanding reservations,
  // the call is admitted, and `worst_case` reserved, if
  //   used + worst_case <= credit_limit, or
  //   the key has no outstanding reservation and used < credit_limit
  // (so a key with less credit left than one call's worst case can still make
  // one call at a time). Else false. The limit and spent are the latest
  // snapshot's (the record's own only if the key is no longer in it), read in
  // the same critical section as pending spend and reservations. Does not look
  // at `revoked` (reject revoked keys first). A worst_case of 0 always fits
  // when used <= limit, so a call that cannot cost anything is admitted even on
  // an exhausted key; check HasCredit as well to refuse those.
  //
  // Guaranteed, for one key and this process, if every call is admitted by
  // TryReserve, ends with AddPendingSpend(actual) then Release(worst_case),
  // and costs no more than its worst_case: spent + pending + reserved never
  // exceeds the limit except through a call admitted by the second rule, of
  // which at most one is in flight at a time and none once spent + pending
  // reaches the limit; so this process's spend exceeds the limit by less
  // than one call's worst case (10 concurrent calls on a key with credit for
  // one get one admission, not ten). Not guaranteed: anything across
  // replicas (each reserves only against what it sees, so N replicas can
  // still overshoot as described in billing/README.md), calls costing more
  // than their worst case (the excess overshoots), and calls that skip
  // TryReserve. Reservations live in memory only; a restart forgets them,
  // together with the calls they covered. Thread-safe.
  bool TryReserve(const KeyRecord& record, Money worst_case);

  // Ends a reservation made by a TryReserve(record, worst_case) that returned
  // true, with the same key id and worst_case: call it once per admitted call
  // when the call ends (right after AddPendingSpend of its actual cost, so
  // the cost is never uncounted in between), whether it succeeded, failed or
  // was cancelled. Ignored when the key has no outstanding reservation (so
  // calling it for an unlimited key is harmless; only if the key got a limit
  // while such a call was in flight can its Release end another call's
  // reservation early). Thread-safe.
  void Release(int64_t key_id, Money worst_case);

  // Sum of key `key_id`'s outstanding reservations now (nano-USD). Thread-safe.
  Money Reserved(int64_t key_id) const;

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
  friend struct internal::KeyCacheTestAccess;
  struct Impl;
  explicit KeyCache(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace tollgate::billing
