// Write-behind, batched, idempotent usage recording, with an optional local
// spool that makes each row durable before the database has it.
//
// Record() queues an event in memory and returns. With a spool
// (UsageRecorderOptions::spool_dir), the event is also appended to a local
// append-only file of checksummed records that a spool thread fdatasyncs in
// groups (billing/src/usage_spool.hpp has the format and recovery rules);
// `on_durable` runs once the record is on disk. A background writer thread
// writes queued events to PostgreSQL in batches of up to `batch_size`, every
// `flush_interval_ms` or as soon as a full batch is queued; once a batch is
// committed its spool records are marked committed, and a spool file all of
// whose records are committed is deleted. On Start, the records left in the
// spool (a crash, a database outage at the last stop) are queued again first:
// replaying them is harmless, since the database skips request ids it has.
//
// Each batch is one transaction (PostgreSQL 15 manual, SQL command INSERT,
// "ON CONFLICT Clause"; section 7.8.4 "Data-Modifying Statements in WITH"):
//   1. SELECT ... FROM api_keys WHERE id = ANY(keys) ORDER BY id FOR UPDATE
//   2. SELECT ... FROM accounts WHERE id = ANY(accounts) ORDER BY id FOR UPDATE
//      Lock order: keys by id, then accounts by id, then (inside step 3)
//      period_usage and credit_leases rows. Any other transaction that locks
//      several of these rows must take them in the same order, so writers
//      queue instead of deadlocking. A deadlock that still happens (SQLSTATE
//      40P01) is a transient failure: the batch is retried.
//   3. One statement of data-modifying CTEs whose effects all follow from the
//      rows its INSERT actually inserted:
//      - INSERT INTO usage_events ... ON CONFLICT (request_id) DO NOTHING
//        RETURNING ...; account_id is the event's, or the key's account when
//        the event has none (<= 0);
//      - INSERT INTO call_attempts (every attempt, ON CONFLICT DO NOTHING);
//      - api_keys.spent_nano_usd += cost;
//      - for cost > 0 and an account: a ledger_entries row (kind 'usage',
//        amount -cost, idempotency_key = request_id) ON CONFLICT DO NOTHING,
//        and accounts.balance_nano_usd += the amounts of the ledger rows
//        actually inserted, so the balance always equals the sum of the ledger;
//      - period_usage += cost for ('key', key, tollgate_period_start(
//        key.limit_reset, created_at)) and ('budget', account,
//        tollgate_period_start(account.budget_reset, created_at)), for every
//        key and account (limit or not: a limit set later sees the period's
//        spend);
//      - for events with a lease_holder: credit_leases.amount_nano_usd =
//        GREATEST(amount - cost, 0) on that replica's lease of each pot the call
//        was admitted under (UsageEvent::leased_pots, the admission ticket's
//        pots, so a limit changed while the call ran moves no other lease). A
//        row with a lease_holder but no leased_pots (spooled by an older
//        gateway) takes them from the settings at write time: ('credits',
//        account, 'epoch') when the account is prepaid, ('key', key, period)
//        when the key has a limit, ('budget', account, period) when the
//        account has a budget.
//   So a request id already stored (a batch replayed after a lost COMMIT
//   acknowledgement, a spool replayed after a crash, a duplicate Record) is
//   neither inserted nor charged twice.
//
// Failures: on a connection error or any SQLSTATE outside classes 22 and 23
// (08 connection, 40 deadlock/serialization, 53 resources, 57 shutdown, 42
// schema not migrated yet, ...) the batch stays queued and is retried with
// exponential backoff (100 ms doubling to 10 s), reconnecting as needed;
// nothing is dropped, so the queue grows in memory during an outage (and the
// spool on disk, when there is one). On a data or constraint error (SQLSTATE
// class 22 or 23, e.g. text that is not valid UTF-8, an unknown api_key_id or
// account_id; token counts and durations are bigint like their int64 fields)
// the batch is retried row by row and only the offending rows are rejected:
// logged with their request id and counted in rows_rejected(). A
// price_snapshot that is not a JSON object is stored as NULL (logged), not
// rejected. Errors are logged once per outage (log.hpp), without secrets.
#pragma once

#include "tollgate/billing/usage_event.hpp"
#include "tollgate/core/error.hpp"

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

namespace tollgate::billing {

struct UsageRecorderOptions {
  int flush_interval_ms = 200;  // >= 1: the longest a queued row waits for a batch
  int batch_size = 256;         // clamped to [1, 2400] (65535 bind parameters / 27 columns)
  // Directory of the local spool (created if missing; one process at a time:
  // a second one is refused), or empty for none: rows then live only in
  // memory until written, and a crash loses what was queued.
  std::string spool_dir;
  // Size at which the spool starts a new segment file (bytes, >= 1). A
  // segment is deleted once all its records are in the database; after a
  // crash the segments left are replayed whole (rows already stored are
  // skipped), so this also bounds the replay work.
  int64_t spool_segment_bytes = int64_t{64} << 20;
};

class UsageRecorder {
 public:
  // Opens the spool (if any) and reads what it holds, connects to
  // `database_url` (libpq connection string or URI), checks that the tables it
  // writes exist, queues the spool's records and starts the writer thread.
  // With a spool, an unreachable database is not an error: Start logs a
  // warning and the writer keeps retrying, so rows are kept (in the spool) and
  // land when the database comes back. A reachable database without the
  // schema is always an error.
  // Errors: kInvalidArgument (bad URL, interval or spool options), kConflict
  // (another process holds the spool directory), kUnavailable (cannot connect,
  // without a spool), kInternal (schema missing: the message says to run
  // `tollgate migrate`; spool I/O error: the message names the path).
  static Result<std::unique_ptr<UsageRecorder>> Start(const std::string& database_url,
                                                      UsageRecorderOptions options);
  // Start without a spool (the form before the spool existed).
  static Result<std::unique_ptr<UsageRecorder>> Start(const std::string& database_url,
                                                      int flush_interval_ms, int batch_size);

  // Stop()s, so it too waits out a database outage; call StopWithin first to
  // bound shutdown.
  ~UsageRecorder();
  UsageRecorder(const UsageRecorder&) = delete;
  UsageRecorder& operator=(const UsageRecorder&) = delete;

  // Queues `event`. Never waits for the database or the disk, and makes no
  // system call of its own (only a short in-memory mutex; waking an idle
  // spool thread may take a futex call). An event whose request_id is already
  // queued is ignored (the first one wins, as in the database) and counted in
  // duplicates_ignored(); its `on_durable` runs when the first one's does.
  //
  // `on_durable` (may be empty) runs exactly once:
  //   - with a spool: once the record is fdatasynced to the spool, on the
  //     spool thread (never inside Record), or, should the spool fail (logged,
  //     counted in spool_write_failures()), once the database has the row, on
  //     the writer thread;
  //   - without a spool: at once, inside Record;
  //   - for a row that is lost (recorded after Stop, or abandoned by
  //     StopWithin without being spooled; logged and counted in rows_lost()):
  //     inside Record or StopWithin, so nobody waits forever.
  // It must be quick and must not call Flush, Stop or StopWithin.
  // Thread-safe.
  void Record(UsageEvent event, std::function<void()> on_durable = {});

  // A copy of the queued, not yet written event with this request id, or
  // nullopt (never recorded, or already written: ask GenerationStore). The
  // gateway's GET /generation uses both. Thread-safe.
  std::optional<UsageEvent> FindPending(std::string_view request_id) const;

  // Blocks until every event recorded before the call (and every event
  // replayed from the spool by Start) is in the database (committed or
  // rejected). During a database outage this waits until the database comes
  // back. Thread-safe.
  void Flush();

  // Flush() with a deadline: returns false if `timeout` passed first (the
  // events stay queued and keep being retried).
  bool FlushFor(std::chrono::milliseconds timeout);

  // Flushes everything recorded, then stops and joins the writer thread and
  // closes the spool. Waits as long as Flush() does. Idempotent; thread-safe.
  void Stop();

  // Stop() with a deadline for the flush. Events still not in the database
  // after `timeout` are abandoned: those in the spool stay there for the next
  // Start (logged, counted in rows_left_in_spool()); the others are lost
  // (logged, counted in rows_lost()). Returns true if nothing was lost.
  bool StopWithin(std::chrono::milliseconds timeout);

  // The stable part of this process's replica id: the spool directory's
  // `replica-id` (32 hex characters, the same across restarts), or without a
  // spool 32 random hex characters made by Start. Thread-safe.
  const std::string& replica_stable_id() const;

  // Counters for metrics (monotonic unless stated). Thread-safe.
  int64_t rows_written() const;        // rows inserted into usage_events
  int64_t rows_duplicate() const;      // rows skipped by ON CONFLICT (request id already stored)
  int64_t duplicates_ignored() const;  // Record()s of an id already queued
  int64_t rows_rejected() const;       // rows refused with a data/constraint error
  int64_t rows_lost() const;           // rows abandoned by StopWithin (not spooled) or recorded after Stop
  int64_t rows_replayed() const;       // rows read back from the spool by Start
  int64_t rows_left_in_spool() const;  // rows StopWithin left in the spool for the next Start
  int64_t batches() const;             // committed batch transactions
  int64_t failures() const;            // failed batch attempts (each retry counts)
  int64_t pending() const;             // events queued now (gauge)
  int64_t spool_syncs() const;         // fdatasyncs of the spool (one per group of records)
  int64_t spool_write_failures() const;   // records the spool could not write
  int64_t spool_records_skipped() const;  // torn tails and corrupt records found by Start

 private:
  struct Impl;
  explicit UsageRecorder(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace tollgate::billing
