#include "tollgate/billing/usage_recorder.hpp"

#include "log_internal.hpp"
#include "pg.hpp"

#include <boost/json.hpp>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <span>
#include <thread>
#include <unordered_map>
#include <vector>

namespace tollgate::billing {
namespace {

using internal::PgExec;
using internal::PgOutcome;
using internal::PgParam;
using EventPtr = std::shared_ptr<const UsageEvent>;

constexpr int kColumns = 22;
// PostgreSQL's protocol allows at most 65535 bind parameters per statement.
constexpr int kMaxBatchSize = 3000;
constexpr std::chrono::milliseconds kInitialBackoff{100};
constexpr std::chrono::milliseconds kMaxBackoff{10'000};

// Column order of usage_events as written; placeholders carry casts so the
// server never has to guess a parameter's type.
constexpr const char* kInsertHead =
    "INSERT INTO usage_events (request_id, api_key_id, model, provider, upstream_model,"
    " prompt_tokens, completion_tokens, cached_tokens, reasoning_tokens, cost_nano_usd,"
    " latency_ms, ttft_ms, status, finish_reason, streamed, cancelled, usage_estimated,"
    " error_code, created_at, finished_at, cache_write_tokens, endpoint_id) VALUES ";
constexpr const char* kColumnCasts[kColumns] = {
    "text", "bigint", "text", "text", "text", "bigint", "bigint", "bigint", "bigint", "bigint",
    "bigint", "bigint", "int", "text", "bool", "bool", "bool", "text", "timestamptz", "timestamptz", "bigint",
    "text"};

std::string BoolParam(bool value) { return value ? "t" : "f"; }

void AppendParams(const UsageEvent& e, std::vector<PgParam>& params) {
  params.emplace_back(e.request_id);
  params.emplace_back(e.api_key_id > 0 ? PgParam(std::to_string(e.api_key_id)) : std::nullopt);
  params.emplace_back(e.model);
  params.emplace_back(e.provider);
  params.emplace_back(e.upstream_model);
  params.emplace_back(std::to_string(e.usage.prompt_tokens));
  params.emplace_back(std::to_string(e.usage.completion_tokens));
  params.emplace_back(std::to_string(e.usage.cached_tokens));
  params.emplace_back(std::to_string(e.usage.reasoning_tokens));
  params.emplace_back(std::to_string(e.cost.nano_usd));
  params.emplace_back(std::to_string(e.latency_ms));
  params.emplace_back(e.ttft_ms ? PgParam(std::to_string(*e.ttft_ms)) : std::nullopt);
  params.emplace_back(std::to_string(e.status));
  params.emplace_back(e.finish_reason);
  params.emplace_back(BoolParam(e.streamed));
  params.emplace_back(BoolParam(e.cancelled));
  params.emplace_back(BoolParam(e.usage_estimated));
  params.emplace_back(e.error_code);
  params.emplace_back(internal::PgTimestamp(e.created_at));
  params.emplace_back(internal::PgTimestamp(e.finished_at));
  params.emplace_back(std::to_string(e.usage.cache_write_tokens));
  params.emplace_back(e.endpoint_id.empty() ? std::nullopt : PgParam(e.endpoint_id));
}

// The attempts of `events` as one JSON array for jsonb_to_recordset: one
// parameter however many attempts there are.
std::string AttemptsJson(std::span<const EventPtr> events) {
  boost::json::array rows;
  for (const EventPtr& e : events) {
    for (const AttemptRecord& a : e->attempts) {
      rows.push_back(boost::json::object{
          {"request_id", e->request_id},
          {"attempt", a.attempt},
          {"endpoint_id", a.endpoint_id},
          {"provider", a.provider},
          {"upstream_model", a.upstream_model},
          {"outcome", a.outcome},
          {"status", a.status},
          {"error_code", a.error_code ? boost::json::value(*a.error_code) : boost::json::value(nullptr)},
          {"started_ms", a.started_ms},
          {"latency_ms", a.latency_ms},
          {"ttft_ms", a.ttft_ms ? boost::json::value(*a.ttft_ms) : boost::json::value(nullptr)},
          {"prompt_tokens", a.usage.prompt_tokens},
          {"completion_tokens", a.usage.completion_tokens},
          {"cached_tokens", a.usage.cached_tokens},
          {"cost_nano_usd", a.cost.nano_usd},
      });
    }
  }
  return boost::json::serialize(rows);
}

// Inserts the attempts beside their calls' rows, in the same transaction; a
// retried batch finds them there (ON CONFLICT).
constexpr const char* kInsertAttempts =
    "INSERT INTO call_attempts (request_id, attempt, endpoint_id, provider, upstream_model, outcome, status,"
    " error_code, started_ms, latency_ms, ttft_ms, prompt_tokens, completion_tokens, cached_tokens, cost_nano_usd)"
    " SELECT request_id, attempt, endpoint_id, provider, upstream_model, outcome, status, error_code, started_ms,"
    " latency_ms, ttft_ms, prompt_tokens, completion_tokens, cached_tokens, cost_nano_usd"
    " FROM jsonb_to_recordset($1::jsonb) AS x(request_id text, attempt int, endpoint_id text, provider text,"
    " upstream_model text, outcome text, status int, error_code text, started_ms bigint, latency_ms bigint,"
    " ttft_ms bigint, prompt_tokens bigint, completion_tokens bigint, cached_tokens bigint, cost_nano_usd bigint)"
    " ON CONFLICT (request_id, attempt) DO NOTHING";

// One statement that inserts the rows and charges their keys for exactly the
// rows it inserted: data-modifying CTEs see each other's RETURNING output, and
// the statement is atomic (PostgreSQL 15 manual, 7.8.4 "Data-Modifying
// Statements in WITH").
std::string InsertSql(size_t rows) {
  std::string sql = "WITH ins AS (";
  sql += kInsertHead;
  int n = 1;
  for (size_t row = 0; row < rows; ++row) {
    sql += row == 0 ? "(" : ", (";
    for (int col = 0; col < kColumns; ++col) {
      if (col > 0) sql += ", ";
      // Appended piecewise: `"$" + std::to_string(n)` trips GCC 12's bogus -Wrestrict.
      sql += '$';
      sql += std::to_string(n++);
      sql += "::";
      sql += kColumnCasts[col];
    }
    sql += ")";
  }
  sql +=
      " ON CONFLICT (request_id) DO NOTHING RETURNING api_key_id, cost_nano_usd),"
      " charged AS (UPDATE api_keys k SET spent_nano_usd = k.spent_nano_usd + s.total"
      " FROM (SELECT api_key_id, sum(cost_nano_usd)::bigint AS total FROM ins"
      " WHERE api_key_id IS NOT NULL GROUP BY api_key_id) s"
      " WHERE k.id = s.api_key_id RETURNING k.id)"
      " SELECT (SELECT count(*) FROM ins), (SELECT count(*) FROM charged)";
  return sql;
}

struct BatchOutcome {
  size_t done = 0;       // leading events now durable (written, duplicate or rejected)
  bool failed = false;   // a transient failure stopped the batch at `done`
  std::string error;     // why, when failed
};

}  // namespace

struct UsageRecorder::Impl {
  Impl(std::string url, int flush_ms, int batch)
      : session(std::move(url)), flush_interval(flush_ms),
        batch_size(static_cast<size_t>(std::clamp(batch, 1, kMaxBatchSize))) {}

  internal::PgSession session;  // writer thread only (and Start)
  const std::chrono::milliseconds flush_interval;
  const size_t batch_size;

  mutable std::mutex mutex;
  std::condition_variable wake_cv;     // writer: work, flush request, stop
  std::condition_variable durable_cv;  // Flush/Stop waiters: progress
  std::deque<EventPtr> queue;          // oldest first; the writer's batch is its front
  std::unordered_map<std::string, EventPtr> index;  // request_id -> queued event
  uint64_t recorded = 0;      // events ever queued
  uint64_t durable = 0;       // events ever removed from the queue front
  uint64_t flush_target = 0;  // write promptly until durable >= flush_target
  bool stopping = false;
  bool abandon = false;
  bool writer_exited = false;
  std::thread thread;
  std::mutex join_mutex;

  std::atomic<int64_t> rows_written{0}, rows_duplicate{0}, duplicates_ignored{0},
      rows_rejected{0}, rows_lost{0}, batches{0}, failures{0};

  // Writes events[0, n) in one transaction. Locks the keys' rows in id order
  // first: two replicas charging overlapping keys then queue instead of
  // deadlocking.
  PgOutcome InsertRows(std::span<const EventPtr> events, int64_t* inserted) {
    std::vector<int64_t> key_ids;
    std::vector<PgParam> params;
    params.reserve(events.size() * kColumns);
    for (const EventPtr& e : events) {
      if (e->api_key_id > 0) key_ids.push_back(e->api_key_id);
      AppendParams(*e, params);
    }
    std::sort(key_ids.begin(), key_ids.end());
    key_ids.erase(std::unique(key_ids.begin(), key_ids.end()), key_ids.end());
    std::string id_array = "{";
    for (size_t i = 0; i < key_ids.size(); ++i) {
      if (i > 0) id_array += ",";
      id_array += std::to_string(key_ids[i]);
    }
    id_array += "}";

    PGconn* c = session.conn();
    PgOutcome out = PgExec(c, "BEGIN");
    if (out.ok()) {
      out = PgExec(c, "SELECT 1 FROM api_keys WHERE id = ANY($1::bigint[]) ORDER BY id FOR UPDATE",
                   {id_array});
    }
    if (out.ok()) {
      out = PgExec(c, InsertSql(events.size()), params);
      if (out.ok()) *inserted = internal::PgInt64(out.result.get(), 0, 0);
    }
    const bool any_attempts =
        std::any_of(events.begin(), events.end(), [](const EventPtr& e) { return !e->attempts.empty(); });
    if (out.ok() && any_attempts) {
      PgOutcome attempts = PgExec(c, kInsertAttempts, {AttemptsJson(events)});
      if (!attempts.ok()) out = std::move(attempts);
    }
    if (out.ok()) {
      // If this reply is lost the batch may or may not be committed; the
      // retry then finds its rows already there (ON CONFLICT) and bills nothing twice.
      PgOutcome committed = PgExec(c, "COMMIT");
      if (!committed.ok()) return committed;
      return out;
    }
    if (!out.connection_bad) PgExec(c, "ROLLBACK");
    return out;
  }

  void Count(size_t rows, int64_t inserted) {
    rows_written.fetch_add(inserted, std::memory_order_relaxed);
    rows_duplicate.fetch_add(static_cast<int64_t>(rows) - inserted, std::memory_order_relaxed);
    batches.fetch_add(1, std::memory_order_relaxed);
  }

  BatchOutcome WriteBatch(std::span<const EventPtr> batch) {
    BatchOutcome result;
    if (auto ok = session.Ensure(); !ok) {
      result.failed = true;
      result.error = ok.error().message;
      return result;
    }
    int64_t inserted = 0;
    PgOutcome out = InsertRows(batch, &inserted);
    if (out.ok()) {
      Count(batch.size(), inserted);
      result.done = batch.size();
      return result;
    }
    if (!out.permanent()) {
      session.DropIfBad();
      result.failed = true;
      result.error = out.ToError("writing usage").message;
      return result;
    }
    // Some row's values cannot be stored. Write row by row so that only the
    // offending rows are refused, instead of blocking the queue forever.
    for (const EventPtr& e : batch) {
      inserted = 0;
      out = InsertRows(std::span<const EventPtr>(&e, 1), &inserted);
      if (out.ok()) {
        Count(1, inserted);
      } else if (out.permanent()) {
        rows_rejected.fetch_add(1, std::memory_order_relaxed);
        internal::Log(LogLevel::kError,
                      "usage row rejected, not billed: request_id=" + e->request_id +
                          " api_key_id=" + std::to_string(e->api_key_id) +
                          " cost_nano_usd=" + std::to_string(e->cost.nano_usd) + ": " +
                          out.message + " (SQLSTATE " + out.sqlstate + ")");
      } else {
        session.DropIfBad();
        result.failed = true;
        result.error = out.ToError("writing usage").message;
        return result;
      }
      ++result.done;
    }
    return result;
  }

  // Removes the first n queued events as durable. Caller holds `mutex`.
  void PopDurable(size_t n) {
    for (size_t i = 0; i < n; ++i) {
      index.erase(queue.front()->request_id);
      queue.pop_front();
    }
    durable += n;
    durable_cv.notify_all();
  }

  void Run() {
    std::unique_lock lock(mutex);
    std::chrono::milliseconds backoff = kInitialBackoff;
    bool retrying = false;
    int64_t failed_attempts = 0;
    for (;;) {
      if (abandon || (stopping && queue.empty())) break;
      if (!retrying) {
        wake_cv.wait_for(lock, flush_interval, [&] {
          return abandon || stopping || queue.size() >= batch_size || flush_target > durable;
        });
        if (abandon) break;
        if (queue.empty()) continue;
      }
      size_t n = std::min(batch_size, queue.size());
      std::vector<EventPtr> batch(queue.begin(), queue.begin() + static_cast<ptrdiff_t>(n));
      lock.unlock();
      BatchOutcome result = WriteBatch(batch);
      lock.lock();
      PopDurable(result.done);
      if (!result.failed) {
        if (failed_attempts > 0) {
          internal::Log(LogLevel::kInfo, "usage writes recovered after " +
                                             std::to_string(failed_attempts) +
                                             " failed attempt(s)");
        }
        failed_attempts = 0;
        backoff = kInitialBackoff;
        retrying = false;
        continue;
      }
      failures.fetch_add(1, std::memory_order_relaxed);
      if (failed_attempts++ == 0) {
        internal::Log(LogLevel::kError, "usage write failed, keeping " +
                                            std::to_string(queue.size()) +
                                            " row(s) queued and retrying: " + result.error);
      }
      wake_cv.wait_for(lock, backoff, [&] { return abandon; });
      backoff = std::min(backoff * 2, kMaxBackoff);
      retrying = true;
    }
    writer_exited = true;
    durable_cv.notify_all();
  }
};

UsageRecorder::UsageRecorder(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

UsageRecorder::~UsageRecorder() { Stop(); }

Result<std::unique_ptr<UsageRecorder>> UsageRecorder::Start(const std::string& database_url,
                                                            int flush_interval_ms,
                                                            int batch_size) {
  if (flush_interval_ms < 1) {
    return InvalidArgument("usage flush interval must be >= 1 ms", "flush_interval_ms");
  }
  auto impl = std::make_unique<Impl>(database_url, flush_interval_ms, batch_size);
  if (auto ok = impl->session.Ensure(); !ok) return ok.error();
  // Fail now, with "run tollgate migrate" (SQLSTATE 42P01), rather than queue
  // rows that the writer would retry forever against a missing table.
  internal::PgOutcome schema = impl->session.Exec(
      "SELECT 1 FROM usage_events, api_keys LIMIT 0", {}, /*idempotent=*/true);
  if (!schema.ok()) return schema.ToError("checking the usage tables");
  Impl* raw = impl.get();
  impl->thread = std::thread([raw] { raw->Run(); });
  return std::unique_ptr<UsageRecorder>(new UsageRecorder(std::move(impl)));
}

void UsageRecorder::Record(UsageEvent event) {
  auto ptr = std::make_shared<const UsageEvent>(std::move(event));
  std::unique_lock lock(impl_->mutex);
  if (impl_->writer_exited) {
    lock.unlock();
    impl_->rows_lost.fetch_add(1, std::memory_order_relaxed);
    internal::Log(LogLevel::kError, "usage row recorded after Stop, not billed: request_id=" +
                                        ptr->request_id + " api_key_id=" +
                                        std::to_string(ptr->api_key_id) + " cost_nano_usd=" +
                                        std::to_string(ptr->cost.nano_usd));
    return;
  }
  if (!impl_->index.emplace(ptr->request_id, ptr).second) {
    impl_->duplicates_ignored.fetch_add(1, std::memory_order_relaxed);
    return;
  }
  impl_->queue.push_back(std::move(ptr));
  ++impl_->recorded;
  bool full = impl_->queue.size() >= impl_->batch_size;
  lock.unlock();
  if (full) impl_->wake_cv.notify_one();
}

std::optional<UsageEvent> UsageRecorder::FindPending(std::string_view request_id) const {
  std::lock_guard lock(impl_->mutex);
  auto it = impl_->index.find(std::string(request_id));
  if (it == impl_->index.end()) return std::nullopt;
  return *it->second;
}

void UsageRecorder::Flush() {
  std::unique_lock lock(impl_->mutex);
  uint64_t target = impl_->recorded;
  impl_->flush_target = std::max(impl_->flush_target, target);
  impl_->wake_cv.notify_all();
  impl_->durable_cv.wait(lock, [&] { return impl_->durable >= target || impl_->writer_exited; });
}

bool UsageRecorder::FlushFor(std::chrono::milliseconds timeout) {
  std::unique_lock lock(impl_->mutex);
  uint64_t target = impl_->recorded;
  impl_->flush_target = std::max(impl_->flush_target, target);
  impl_->wake_cv.notify_all();
  return impl_->durable_cv.wait_for(lock, timeout, [&] { return impl_->durable >= target; });
}

void UsageRecorder::Stop() {
  {
    std::unique_lock lock(impl_->mutex);
    impl_->stopping = true;
    impl_->wake_cv.notify_all();
    impl_->durable_cv.wait(lock, [&] { return impl_->writer_exited; });
  }
  std::lock_guard join_lock(impl_->join_mutex);
  if (impl_->thread.joinable()) impl_->thread.join();
}

bool UsageRecorder::StopWithin(std::chrono::milliseconds timeout) {
  {
    std::unique_lock lock(impl_->mutex);
    impl_->stopping = true;
    impl_->wake_cv.notify_all();
    if (!impl_->durable_cv.wait_for(lock, timeout, [&] { return impl_->writer_exited; })) {
      impl_->abandon = true;
      impl_->wake_cv.notify_all();
    }
  }
  {
    std::lock_guard join_lock(impl_->join_mutex);
    if (impl_->thread.joinable()) impl_->thread.join();
  }
  std::lock_guard lock(impl_->mutex);
  size_t lost = impl_->queue.size();
  if (lost == 0) return true;
  int64_t lost_cost = 0;
  for (const EventPtr& e : impl_->queue) lost_cost += e->cost.nano_usd;
  internal::Log(LogLevel::kError, "usage recorder stopped with " + std::to_string(lost) +
                                      " row(s) not written (" + std::to_string(lost_cost) +
                                      " nano-USD not billed)");
  impl_->rows_lost.fetch_add(static_cast<int64_t>(lost), std::memory_order_relaxed);
  impl_->PopDurable(lost);
  return false;
}

int64_t UsageRecorder::rows_written() const { return impl_->rows_written.load(); }
int64_t UsageRecorder::rows_duplicate() const { return impl_->rows_duplicate.load(); }
int64_t UsageRecorder::duplicates_ignored() const { return impl_->duplicates_ignored.load(); }
int64_t UsageRecorder::rows_rejected() const { return impl_->rows_rejected.load(); }
int64_t UsageRecorder::rows_lost() const { return impl_->rows_lost.load(); }
int64_t UsageRecorder::batches() const { return impl_->batches.load(); }
int64_t UsageRecorder::failures() const { return impl_->failures.load(); }
int64_t UsageRecorder::pending() const {
  std::lock_guard lock(impl_->mutex);
  return static_cast<int64_t>(impl_->queue.size());
}

}  // namespace tollgate::billing
