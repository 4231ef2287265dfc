// The gateway's hot-path authenticator: every API key, with its account and
// the account's BYOK provider keys, in memory, so authenticating a request
// makes no database call.
//
// Consistency (see billing/README.md): a change an admin commits to a key or
// an account (created, revoked, re-limited, disabled, ...) reaches every
// replica within about a millisecond plus one small query, measured in
// tests/billing/key_cache_pgtest.cpp: each KeyCache holds one connection that
// LISTENs on the channel 'tollgate_billing', where the triggers of
// migrations/004_ledger.sql send 'key:<id>' and 'account:<id>'; on a
// notification it reloads just that key, or that account with its keys and
// provider keys, and installs a new snapshot. Writers that change what no
// trigger covers (provider_keys, the balance) send the notification
// themselves: SELECT pg_notify('tollgate_billing', 'account:<id>').
// When that connection is lost, notifications sent meanwhile are lost too, so
// after reconnecting the cache reloads everything once. A full reload also runs
// every `full_reload_interval_ms` as a safety net.
//
// Credit is not decided here: KeyRecord carries the limits; the CreditGuard
// admits calls against leases (credit_guard.hpp).
#pragma once

#include "tollgate/billing/secret_box.hpp"
#include "tollgate/core/error.hpp"
#include "tollgate/core/money.hpp"

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <set>
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
// Start of the period that `at` falls in (UTC), as tollgate_period_start:
// 00:00 of its day (kDaily), of the Monday on or before it (kWeekly), of the
// 1st of its month (kMonthly); the Unix epoch for kNone. Proleptic Gregorian
// calendar, no leap seconds (std::chrono::sys_days), also before 1970.
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
  // Empty when the cache has no SecretBox; a row that does not open (another
  // TOLLGATE_SECRET_KEY, tampered) is left out and logged (without the secret).
  std::map<std::string, std::string> provider_keys;
  // Providers for which the account stored a key that this gateway cannot
  // read (TOLLGATE_SECRET_KEY unset or another one): its calls must not go
  // to them with the operator's key instead.
  std::set<std::string> unreadable_provider_keys;
};

struct KeyRecord {
  int64_t id = 0;                     // api_keys.id; usage rows reference it
  std::string name;
  int64_t account_id = 0;             // api_keys.account_id
  std::optional<Money> credit_limit;  // spending limit per limit period, nano-USD; nullopt = unlimited
  LimitReset limit_reset = LimitReset::kNone;
  std::optional<Money> soft_limit;    // warning threshold of the key's limit; nullopt = none
  Money spent;                        // all-time usage in the database as of the last load of this
                                      // key (a full reload or a notification); not kept current
  bool revoked = false;               // Lookup returns revoked keys too; reject them (401)
  std::optional<std::chrono::system_clock::time_point> expires_at;  // refused (401) from then on
  std::optional<std::vector<std::string>> allowed_models;           // model slugs; nullopt = all
  std::optional<int64_t> requests_per_minute;                       // rate limits; nullopt = none
  std::optional<int64_t> tokens_per_minute;
  std::optional<int64_t> max_concurrent;
  AccountRecord account;              // the key's account, as of the same load or later
};

// True if the key may be used at `now`: not revoked, not expired, account not
// disabled.
bool KeyUsable(const KeyRecord& record, std::chrono::system_clock::time_point now);

class KeyCache {
 public:
  static constexpr int kDefaultFullReloadIntervalMs = 60'000;

  // Opens the listening connection to `database_url` (libpq connection string
  // or URI), LISTENs on 'tollgate_billing', loads every key, account and
  // provider key on it, and starts the listener thread, which applies
  // notifications as they arrive and reloads everything every
  // `full_reload_interval_ms` (>= 1). With `secrets`, provider_keys rows are
  // opened with it (associated data "provider_keys:<account_id>:<provider>");
  // without, they are ignored (logged once per cache).
  // When the database is unreachable the last good snapshot stays in use: the
  // listener reconnects (first at once, then after 100 ms doubling up to 1 s,
  // never waiting longer than the interval) and, once back, reloads everything;
  // the first failure and the recovery are logged once each (log.hpp).
  // Errors: kInvalidArgument (bad URL or interval), kUnavailable (cannot
  // connect or load at start), kInternal (e.g. schema missing: api_keys does
  // not exist, SQLSTATE 42P01; the message then says to run `tollgate migrate`).
  static Result<std::unique_ptr<KeyCache>> Start(const std::string& database_url,
                                                 std::optional<SecretBox> secrets,
                                                 int full_reload_interval_ms = kDefaultFullReloadIntervalMs);
  // Without a SecretBox.
  static Result<std::unique_ptr<KeyCache>> Start(const std::string& database_url,
                                                 int full_reload_interval_ms = kDefaultFullReloadIntervalMs);

  // Stops the listener thread (Stop()).
  ~KeyCache();
  KeyCache(const KeyCache&) = delete;
  KeyCache& operator=(const KeyCache&) = delete;

  // Hashes `plaintext_key` (SHA-256) and returns a copy of its record from
  // the current snapshot, or nullopt for an unknown key. Revoked and expired
  // keys and keys of disabled accounts are returned too: check KeyUsable.
  // Never waits for the database: a reload builds its new snapshot aside and
  // swaps it in under a short mutex. Thread-safe.
  std::optional<KeyRecord> Lookup(std::string_view plaintext_key) const;

  // The record of key `id` from the current snapshot, or nullopt. Thread-safe.
  std::optional<KeyRecord> FindById(int64_t id) const;

  // Account `id` from the current snapshot (also one without keys), or
  // nullopt. Thread-safe.
  std::optional<AccountRecord> FindAccount(int64_t id) const;

  // Registers `callback`, called with ("key", id) or ("account", id) after a
  // snapshot that reflects a change of that key or account is installed:
  // for every notification received (also when nothing visible changed), and
  // for every key or account whose record (other than `spent`) a full reload
  // finds different from the snapshot before it, or added or gone (the reload
  // after a lost connection thus reports what was missed). So a callback may
  // come twice for one change, or for a change it cannot see; it never misses
  // one that is installed after it was registered. Callbacks run on the
  // listener thread, or on the thread calling RefreshNow /
  // RefreshIfLoadedBefore for what their reload finds, outside the cache's
  // locks, in registration order; they may call Lookup, FindById,
  // FindAccount and OnChange, must not call Stop, and should return quickly
  // (the listener applies no notification meanwhile). `callback` must stay
  // callable until Stop() returns (or the cache is destroyed); it cannot be
  // removed. Thread-safe.
  void OnChange(std::function<void(std::string_view kind, int64_t id)> callback);

  // Reloads everything now, on the calling thread (blocking), on a second
  // connection opened on first use. For tests and tools; the admin API does
  // not need it (its changes notify). On error the old snapshot stays.
  // Errors: kUnavailable, kInternal. Thread-safe.
  Result<void> RefreshNow();

  // Reloads everything, on the calling thread (blocking), unless the installed
  // snapshot comes from a full reload that started querying at or after `t`
  // (each full reload records the steady-clock time it started; its snapshot
  // shows every key committed before `t`). Then it returns at once: ok, no
  // database call, refreshes() unchanged. Snapshots installed for
  // notifications do not count: they show only the keys they reloaded.
  //
  // For a Lookup miss on a key that may have been created a moment ago and
  // whose notification is still on its way: take t = steady_clock::now()
  // *before* the Lookup that missed, then call this from a thread that may
  // block (not an event loop) and Lookup again. A key committed before t is
  // then found.
  //
  // Check and reload run under the mutex that serialises all loads
  // (listener, RefreshNow, this), taken before the check: a caller that
  // finds a reload in flight waits for it to install, then checks. So N
  // concurrent misses with the same t cost at most one reload once a reload
  // started after t has finished (exactly one when none was in flight).
  // Every miss may still start a full reload (keys, accounts, provider keys),
  // and a caller waits for the loads ahead of it (each up to the connect
  // timeout while the database is down), so the gateway should call it only
  // for keys that pass LooksLikeApiKey and bound how often unknown keys may
  // trigger it. On error the old snapshot stays and the next call tries
  // again; failures are not counted in refresh_failures() (like RefreshNow).
  // Errors: kUnavailable, kInternal (schema missing: run `tollgate migrate`).
  // Thread-safe.
  Result<void> RefreshIfLoadedBefore(std::chrono::steady_clock::time_point t);

  // Stops and joins the listener thread and closes its connection; no
  // callback starts after it returns (one that a RefreshNow on another thread
  // started before may still be running). Lookups, RefreshNow and
  // RefreshIfLoadedBefore keep working; nothing but them changes the
  // snapshot any more. Idempotent; thread-safe; must not be called from a log handler
  // or an OnChange callback.
  void Stop();

  // Counters for metrics. Thread-safe.
  size_t size() const;                      // keys in the snapshot
  int64_t refreshes() const;                // successful full reloads (Start's load counts as one)
  int64_t refresh_failures() const;         // failed listener work: lost connections, failed
                                            // reconnects, full or notified reloads that failed
  int64_t notifications_received() const;   // notifications on 'tollgate_billing' received
                                            // (each counts, also ones coalesced with another)

 private:
  struct Impl;
  explicit KeyCache(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace tollgate::billing
