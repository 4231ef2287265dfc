// Write-behind, batched, idempotent usage recording.
//
// Record() queues an event in memory and returns; a background thread writes
// queued events in batches of up to `batch_size`, every `flush_interval_ms` or
// as soon as a full batch is queued. Each batch is one transaction:
//   INSERT INTO usage_events ... VALUES (...), (...) ON CONFLICT (request_id) DO NOTHING
//   RETURNING api_key_id, cost_nano_usd
// and, in the same statement (a data-modifying WITH), api_keys.spent_nano_usd
// += the summed cost of the rows actually inserted (PostgreSQL 15 manual: SQL
// command INSERT, "ON CONFLICT Clause"; section 7.8.4 "Data-Modifying
// Statements in WITH"). So a request id already in the table (a replayed
// batch after a lost COMMIT acknowledgement, or a duplicate Record) is neither
// inserted nor billed twice. The api_keys rows are locked in id order first, so
// replicas writing concurrently never deadlock.
//
// Failures: on a connection error or any SQLSTATE outside classes 22 and 23
// (08 connection, 40 deadlock/serialization, 53 resources, 57 shutdown, 42
// schema not migrated yet, ...) the batch stays queued and is retried with exponential backoff
// (100 ms doubling to 10 s), reconnecting as needed; nothing is dropped, so the
// queue grows in memory during an outage. On a data or constraint error
// (SQLSTATE class 22 or 23, e.g. text that is not valid UTF-8 or an unknown
// api_key_id; token counts and durations are bigint like their int64 fields) the batch is retried row by row and only the offending rows are
// rejected: logged with their request id and counted in rows_rejected().
// Errors are logged once per outage (log.hpp), without secrets.
#pragma once

#include "tollgate/billing/usage_event.hpp"
#include "tollgate/core/error.hpp"

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

namespace tollgate::billing {

class UsageRecorder {
 public:
  // Connects to `database_url` (libpq connection string or URI), checks that
  // the tables it writes (usage_events, api_keys) exist, and starts the writer
  // thread. `flush_interval_ms` >= 1; the batch size is clamped to [1, 3000]
  // (65535 bind parameters per statement / 21 columns).
  // Errors: kInvalidArgument (bad URL or interval), kUnavailable (cannot
  // connect), kInternal (schema missing: the message says to run
  // `tollgate migrate`).
  static Result<std::unique_ptr<UsageRecorder>> Start(const std::string& database_url,
                                                      int flush_interval_ms, int batch_size);

  // Stop()s, so it too waits out a database outage; call StopWithin first to
  // bound shutdown.
  ~UsageRecorder();
  UsageRecorder(const UsageRecorder&) = delete;
  UsageRecorder& operator=(const UsageRecorder&) = delete;

  // Queues `event`. Never waits for the database (only for a short in-memory
  // mutex). An event whose request_id is already queued is ignored (the first
  // one wins, as in the database) and counted in duplicates_ignored().
  // After Stop() the event is logged as lost and counted in rows_lost().
  // Thread-safe.
  void Record(UsageEvent event);

  // A copy of the queued, not yet durable event with this request id, or
  // nullopt (never recorded, or already written: ask GenerationStore). The
  // gateway's GET /generation uses both. Thread-safe.
  std::optional<UsageEvent> FindPending(std::string_view request_id) const;

  // Blocks until every event recorded before the call is durable (committed
  // or rejected). During a database outage this waits until the database
  // comes back. Thread-safe.
  void Flush();

  // Flush() with a deadline: returns false if `timeout` passed first (the
  // events stay queued and keep being retried).
  bool FlushFor(std::chrono::milliseconds timeout);

  // Flushes everything recorded, then stops and joins the writer thread.
  // Waits as long as Flush() does. Idempotent; thread-safe.
  void Stop();

  // Stop() with a deadline for the flush: events still not durable after
  // `timeout` are abandoned, logged and counted in rows_lost(). Returns true
  // if nothing was lost.
  bool StopWithin(std::chrono::milliseconds timeout);

  // Counters for metrics (monotonic unless stated). Thread-safe.
  int64_t rows_written() const;        // rows inserted into usage_events
  int64_t rows_duplicate() const;      // rows skipped by ON CONFLICT (request id already stored)
  int64_t duplicates_ignored() const;  // Record()s of an id already queued
  int64_t rows_rejected() const;       // rows refused with a data/constraint error
  int64_t rows_lost() const;           // rows abandoned by StopWithin or recorded after Stop
  int64_t batches() const;             // committed batch transactions
  int64_t failures() const;            // failed batch attempts (each retry counts)
  int64_t pending() const;             // events queued now (gauge)

 private:
  struct Impl;
  explicit UsageRecorder(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace tollgate::billing
