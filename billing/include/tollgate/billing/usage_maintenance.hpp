// Partition upkeep and retention of the raw usage rows (usage_events,
// partitioned by UTC day: migrations/006_stats.sql). The rollups
// (usage_rollup_15m, usage_rollup_1h, usage_rollup_1d) and the apps table are
// never touched, so statistics, rankings and GetKeyUsage outlive the raw rows.
// Run() also deletes expired stored responses (migrations/007_responses.sql).
//
// The server runs Run() at start and hourly on its own thread; `tollgate
// usage prune` runs it once. Several replicas may run it at once: the SQL
// functions serialise on a transaction-scoped advisory lock.
// Blocking; call it from a worker thread, not an I/O thread.
#pragma once

#include "tollgate/core/error.hpp"

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

namespace tollgate::billing {

// Partitions created ahead of time (UTC days before and after today).
inline constexpr int kUsagePartitionDaysBehind = 1;
inline constexpr int kUsagePartitionDaysAhead = 7;

struct UsageMaintenanceReport {
  int64_t partitions_created = 0;  // daily partitions created by EnsurePartitions
  int64_t partitions_dropped = 0;  // daily partitions dropped by retention
  bool retention_applied = false;  // false when retention_days == 0 (keep forever)
  int64_t responses_pruned = 0;    // expired stored responses deleted (ResponseStore; whatever retention_days)
};

class UsageMaintenance {
 public:
  // Connects to `database_url` (libpq connection string or URI; schema migrated).
  // Errors: kInvalidArgument (unparsable URL), kUnavailable (cannot connect).
  static Result<std::unique_ptr<UsageMaintenance>> Connect(const std::string& database_url);

  ~UsageMaintenance();
  UsageMaintenance(const UsageMaintenance&) = delete;
  UsageMaintenance& operator=(const UsageMaintenance&) = delete;

  // Creates the missing daily partitions of the UTC days from
  // day(now) - days_behind to day(now) + days_ahead, inclusive
  // (tollgate_ensure_usage_partitions: a day that already has rows in the
  // default partition gets none and its rows stay there). Returns how many
  // it created.
  Result<int64_t> EnsurePartitions(std::chrono::system_clock::time_point now,
                                   int days_behind = kUsagePartitionDaysBehind,
                                   int days_ahead = kUsagePartitionDaysAhead);

  // Retention (tollgate_drop_usage_partitions): drops every daily partition
  // whose day ends at or before `before`, with the call_attempts and
  // usage_request_ids rows of its calls, and deletes the default
  // partition's rows created before `before` with theirs. Returns the
  // number of partitions dropped. It raises the retention horizon to
  // `before`: the usage writer then skips rows created before it (a spool
  // replayed after an outage longer than the retention), whose request ids
  // may be gone, so that no call is counted or charged twice.
  Result<int64_t> DropBefore(std::chrono::system_clock::time_point before);

  // EnsurePartitions(now), then, when retention_days > 0,
  // DropBefore(now - retention_days * 24 h), then deletes the stored
  // responses expired at `now` (as ResponseStore::Prune; their expiry is
  // their own, retention_days does not apply to them). retention_days == 0
  // keeps raw rows forever; negative is kInvalidArgument. A step that fails
  // ends the run with its error (the steps before it stay done).
  Result<UsageMaintenanceReport> Run(std::chrono::system_clock::time_point now, int retention_days);

  // Errors of every call: kUnavailable (database unreachable after one
  // reconnect, or a lock not granted within the 10 s lock_timeout: another
  // session held usage_events too long; try again later), kInternal (e.g.
  // schema not migrated; the message says to run `tollgate migrate`).
  // Partitions are created and dropped under that lock_timeout: dropping a
  // partition takes an ACCESS EXCLUSIVE lock on usage_events, and waiting
  // behind a long query would stall every usage write queued behind the
  // waiting lock.
  //
  // Thread-safe: calls are serialised on one connection (a mutex).

 private:
  struct Impl;
  explicit UsageMaintenance(std::unique_ptr<Impl> impl);
  Result<int64_t> CallInt(const std::string& sql, const std::string& param, const char* what);
  std::unique_ptr<Impl> impl_;
};

}  // namespace tollgate::billing
