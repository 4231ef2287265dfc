#include "tollgate/billing/usage_maintenance.hpp"

#include "pg.hpp"
#include "response_prune.hpp"

#include <mutex>

namespace tollgate::billing {

using internal::PgOutcome;

// lock_timeout of each maintenance transaction (the header says why).
constexpr int64_t kLockTimeoutMs = 10'000;

struct UsageMaintenance::Impl {
  std::mutex mutex;
  internal::PgSession session;
  explicit Impl(std::string url) : session(std::move(url)) {}
};

UsageMaintenance::UsageMaintenance(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
UsageMaintenance::~UsageMaintenance() = default;

Result<std::unique_ptr<UsageMaintenance>> UsageMaintenance::Connect(const std::string& database_url) {
  auto impl = std::make_unique<Impl>(database_url);
  if (auto ok = impl->session.Ensure(); !ok) return ok.error();
  return std::unique_ptr<UsageMaintenance>(new UsageMaintenance(std::move(impl)));
}

// One transaction: lock_timeout for it alone (SET LOCAL), then `sql` with its
// one parameter, returning an integer.
Result<int64_t> UsageMaintenance::CallInt(const std::string& sql, const std::string& param, const char* what) {
  std::lock_guard lock(impl_->mutex);
  internal::PgSession& session = impl_->session;
  PgOutcome begin = session.Exec("BEGIN", {}, /*idempotent=*/true);
  if (!begin.ok()) {
    session.DropIfBad();
    return begin.ToError(what);
  }
  auto fail = [&](const PgOutcome& out) -> Error {
    internal::PgExec(session.conn(), "ROLLBACK");
    session.DropIfBad();
    Error e = out.ToError(what);
    // 55P03 lock_not_available: lock_timeout ran out (PostgreSQL 15 manual, appendix A).
    if (out.sqlstate == "55P03") e.code = ErrorCode::kUnavailable;
    return e;
  };
  PgOutcome timeout = internal::PgExec(session.conn(), "SELECT set_config('lock_timeout', $1, true)",
                                       {std::to_string(kLockTimeoutMs) + "ms"});
  if (!timeout.ok()) return fail(timeout);
  PgOutcome out = internal::PgExec(session.conn(), sql, {param});
  if (!out.ok()) return fail(out);
  const int64_t n = internal::PgInt64(out.result.get(), 0, 0);
  PgOutcome commit = internal::PgExec(session.conn(), "COMMIT");
  if (!commit.ok()) return fail(commit);
  return n;
}

Result<int64_t> UsageMaintenance::EnsurePartitions(std::chrono::system_clock::time_point now, int days_behind,
                                                   int days_ahead) {
  if (days_behind < 0 || days_ahead < 0) {
    return Error{ErrorCode::kInvalidArgument, "days_behind and days_ahead must be >= 0", {}, {}};
  }
  return CallInt("SELECT tollgate_ensure_usage_partitions((t AT TIME ZONE 'UTC')::date - " +
                     std::to_string(days_behind) + ", (t AT TIME ZONE 'UTC')::date + " + std::to_string(days_ahead) +
                     ") FROM (SELECT $1::timestamptz AS t) s",
                 internal::PgTimestamp(now), "creating usage partitions");
}

Result<int64_t> UsageMaintenance::DropBefore(std::chrono::system_clock::time_point before) {
  return CallInt("SELECT tollgate_drop_usage_partitions($1::timestamptz)", internal::PgTimestamp(before),
                 "dropping old usage partitions");
}

Result<UsageMaintenanceReport> UsageMaintenance::Run(std::chrono::system_clock::time_point now, int retention_days) {
  if (retention_days < 0) {
    return Error{ErrorCode::kInvalidArgument, "retention_days must be >= 0 (0 keeps usage rows forever)", {}, {}};
  }
  UsageMaintenanceReport report;
  auto created = EnsurePartitions(now);
  if (!created) return created.error();
  report.partitions_created = *created;
  if (retention_days > 0) {
    auto dropped = DropBefore(now - std::chrono::hours(24) * retention_days);
    if (!dropped) return dropped.error();
    report.partitions_dropped = *dropped;
    report.retention_applied = true;
  }
  {
    std::lock_guard lock(impl_->mutex);
    auto pruned = internal::PruneExpiredResponses(impl_->session, now);
    if (!pruned) return pruned.error();
    report.responses_pruned = *pruned;
  }
  return report;
}

}  // namespace tollgate::billing
