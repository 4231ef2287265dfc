// The gateway's hot-path authenticator: every API key in memory, refreshed in
// the background, so authenticating a request makes no database call.
//
// Consistency (see billing/README.md): a key created, revoked or re-limited by
// any process (CLI, another replica) is seen within one refresh interval after
// it commits. Credit is checked against spent (from the database, as of the
// last refresh) plus pending spend (added by this process and not yet seen in
// a refresh); the check is soft across replicas, which can each overshoot a
// limit by the calls they admit within one flush + refresh interval.
#pragma once

#include "tollgate/core/error.hpp"
#include "tollgate/core/money.hpp"

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

namespace tollgate::billing {

struct KeyRecord {
  int64_t id = 0;                     // api_keys.id; usage rows reference it
  std::string name;
  std::optional<Money> credit_limit;  // nano-USD; nullopt = unlimited
  Money spent;                        // nano-USD in the database as of the last refresh
  bool revoked = false;               // Lookup returns revoked keys too; reject them (401)
  // Spend this process added with AddPendingSpend that the last refresh did not
  // yet include, as of the Lookup that returned this record (nano-USD, >= 0).
  Money pending_spend;
};

// True if the key may start another call: unlimited, or
// spent + pending_spend < credit_limit (strictly; a zero limit never has
// credit). Uses the record's values as of its Lookup. Does not look at
// `revoked`.
bool HasCredit(const KeyRecord& record);

class KeyCache {
 public:
  // Loads every key from `database_url` (libpq connection string or URI) and
  // starts a background thread that reloads them every `refresh_interval_ms`
  // (>= 1). When a reload fails (database down) the last good snapshot stays in
  // use; the first failure and the recovery are logged once each (log.hpp).
  // Errors: kInvalidArgument (bad URL or interval), kUnavailable (cannot
  // connect or load at start), kInternal (schema missing: run migrations).
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

  // Reloads now, on the calling thread (blocking). For the admin API after it
  // created or revoked a key, and for tests. On error the old snapshot stays.
  // Errors: kUnavailable, kInternal. Thread-safe.
  Result<void> RefreshNow();

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
