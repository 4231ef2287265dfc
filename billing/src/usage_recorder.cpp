#include "tollgate/billing/usage_recorder.hpp"

#include "tollgate/core/json_writer.hpp"

#include "log_internal.hpp"
#include "pg.hpp"
#include "usage_spool.hpp"

#include <boost/json.hpp>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <random>
#include <span>
#include <thread>
#include <unordered_map>
#include <vector>

namespace tollgate::billing {
namespace {

using internal::PgExec;
using internal::PgOutcome;
using internal::PgParam;

constexpr int kColumns = 29;
// PostgreSQL's protocol allows at most 65535 bind parameters per statement
// (27 per row, plus one for the attempts and one for the leased pots).
constexpr int kMaxBatchSize = 2400;
constexpr std::chrono::milliseconds kInitialBackoff{100};
constexpr std::chrono::milliseconds kMaxBackoff{10'000};

// One recorded event and who waits for it to be durable.
struct Item {
  UsageEvent event;
  uint64_t spool_seq = 0;  // 0: not in the spool; set before the writer sees the item
  // Writer thread only: price_snapshot checked (0 unknown, 1 a JSON object, 2 not).
  int snapshot_state = 0;

  std::mutex mutex;
  bool fired = false;    // the callbacks ran (or are running)
  bool spooled = false;  // the spool synced its record
  std::function<void()> callback;
  std::vector<std::function<void()>> more;  // duplicates' callbacks

  // The row is durable (in the spool when `in_spool`, else in the database or
  // given up): runs the callbacks once.
  void Durable(bool in_spool) {
    std::function<void()> first;
    std::vector<std::function<void()>> rest;
    {
      std::lock_guard lock(mutex);
      if (in_spool) spooled = true;
      if (fired) return;
      fired = true;
      first = std::move(callback);
      rest = std::move(more);
    }
    if (first) first();
    for (auto& fn : rest) fn();
  }

  // Adds a duplicate's callback; false if the callbacks already ran (the
  // caller then runs it itself).
  bool AddCallback(std::function<void()>& fn) {
    std::lock_guard lock(mutex);
    if (fired) return false;
    more.push_back(std::move(fn));
    return true;
  }

  bool in_spool() {
    std::lock_guard lock(mutex);
    return spooled;
  }
};
using ItemPtr = std::shared_ptr<Item>;

// Column order of usage_events as written; placeholders carry casts so the
// server never has to guess a parameter's type.
constexpr const char* kColumnNames =
    "request_id, api_key_id, model, provider, upstream_model,"
    " prompt_tokens, completion_tokens, cached_tokens, reasoning_tokens, cost_nano_usd,"
    " latency_ms, ttft_ms, status, finish_reason, streamed, cancelled, usage_estimated,"
    " error_code, created_at, finished_at, cache_write_tokens, endpoint_id,"
    " account_id, lease_holder, price_snapshot, byok, provider_cost_nano_usd, app, app_title";
constexpr const char* kColumnCasts[kColumns] = {
    "text", "bigint", "text", "text", "text", "bigint", "bigint", "bigint", "bigint", "bigint",
    "bigint", "bigint", "int", "text", "bool", "bool", "bool", "text", "timestamptz", "timestamptz", "bigint",
    "text", "bigint", "text", "jsonb", "bool", "bigint", "text", "text"};
static_assert(kColumnCasts[kColumns - 1] != nullptr, "a cast for every column");

std::string BoolParam(bool value) { return value ? "t" : "f"; }

// price_snapshot as stored: the event's JSON object, or NULL (none, or not a
// JSON object: a broken snapshot must not cost the row).
PgParam SnapshotParam(Item& item) {
  const std::string& text = item.event.price_snapshot;
  if (text.empty()) return std::nullopt;
  if (item.snapshot_state == 0) {
    std::error_code ec;
    boost::json::value v = boost::json::parse(text, ec);
    item.snapshot_state = !ec && v.is_object() ? 1 : 2;
    if (item.snapshot_state == 2) {
      internal::Log(LogLevel::kWarning, "usage row request_id=" + item.event.request_id +
                                            ": price_snapshot is not a JSON object; stored as NULL");
    }
  }
  return item.snapshot_state == 1 ? PgParam(text) : std::nullopt;
}

void AppendParams(Item& item, int64_t account_id, std::vector<PgParam>& params) {
  const UsageEvent& e = item.event;
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
  params.emplace_back(account_id > 0 ? PgParam(std::to_string(account_id)) : std::nullopt);
  params.emplace_back(e.lease_holder.empty() ? std::nullopt : PgParam(e.lease_holder));
  params.emplace_back(SnapshotParam(item));
  params.emplace_back(BoolParam(e.byok));
  params.emplace_back(e.provider_cost ? PgParam(std::to_string(e.provider_cost->nano_usd)) : std::nullopt);
  params.emplace_back(e.app.empty() ? std::nullopt : PgParam(e.app));
  params.emplace_back(e.app_title.empty() ? std::nullopt : PgParam(e.app_title));
}

// The attempts of `items` as one JSON array for jsonb_to_recordset: one
// parameter however many attempts there are.
std::string AttemptsJson(std::span<const ItemPtr> items) {
  std::string out;
  JsonWriter w(out);
  w.BeginArray();
  for (const ItemPtr& item : items) {
    const UsageEvent& e = item->event;
    for (const AttemptRecord& a : e.attempts) {
      w.BeginObject();
      w.Key("request_id").String(e.request_id);
      internal::WriteAttemptFields(w, a);
      w.Key("prompt_tokens").Int(a.usage.prompt_tokens);
      w.Key("completion_tokens").Int(a.usage.completion_tokens);
      w.Key("cached_tokens").Int(a.usage.cached_tokens);
      w.Key("cost_nano_usd").Int(a.cost.nano_usd);
      w.EndObject();
    }
  }
  w.EndArray();
  return out;
}

// The leased pots of `items` as one JSON array for jsonb_to_recordset.
std::string LeasedPotsJson(std::span<const ItemPtr> items) {
  std::string out;
  JsonWriter w(out);
  w.BeginArray();
  for (const ItemPtr& item : items) {
    const UsageEvent& e = item->event;
    for (const LeasedPot& p : e.leased_pots) {
      w.BeginObject();
      w.Key("request_id").String(e.request_id);
      w.Key("scope").String(p.scope);
      w.Key("owner_id").Int(p.owner_id);
      w.Key("period_start").String(internal::PgTimestamp(p.period_start));
      w.EndObject();
    }
  }
  w.EndArray();
  return out;
}

std::string IdArray(std::vector<int64_t>& ids) {
  std::sort(ids.begin(), ids.end());
  ids.erase(std::unique(ids.begin(), ids.end()), ids.end());
  std::string out = "{";
  for (size_t i = 0; i < ids.size(); ++i) {
    if (i > 0) out += ",";
    out += std::to_string(ids[i]);
  }
  return out + "}";
}

// The rest of the batch after the INSERT: each CTE works only on the rows the
// INSERT actually inserted (its RETURNING), so nothing is charged twice. All
// CTEs run to completion whether or not the final SELECT reads them (PostgreSQL
// 15 manual, 7.8.4).
constexpr const char* kInsertTail =
    // The request id is the idempotency key across all partitions
    // (usage_request_ids, migrations/006_stats.sql): a row is inserted only
    // if its id was not there; DISTINCT ON drops a repeat within the batch.
    // Rows created before the retention horizon are skipped: their ids may
    // have been deleted with their partition, so they may be charged already.
    " ids AS (INSERT INTO usage_request_ids (request_id, created_at) SELECT request_id, created_at FROM v"
    " WHERE v.created_at >= (SELECT horizon FROM usage_retention_horizon)"
    " ON CONFLICT (request_id) DO NOTHING RETURNING request_id),"
    " ins AS (INSERT INTO usage_events ($COLUMNS)"
    " SELECT DISTINCT ON (v.request_id) v.* FROM v JOIN ids USING (request_id) ORDER BY v.request_id"
    " ON CONFLICT (request_id, created_at) DO NOTHING RETURNING *),"
    // The rollups and apps (migrations/006_stats.sql) of exactly the rows
    // inserted; referenced by the final SELECT, so it runs.
    " roll AS (SELECT tollgate_rollup_usage(array_agg(ins::usage_events)) AS n FROM ins HAVING count(*) > 0),"
    // Every attempt beside its call; a retried batch finds them there.
    " att AS (INSERT INTO call_attempts (request_id, attempt, endpoint_id, provider, upstream_model, outcome,"
    " status, error_code, started_ms, latency_ms, ttft_ms, prompt_tokens, completion_tokens, cached_tokens,"
    " cost_nano_usd)"
    " SELECT request_id, attempt, endpoint_id, provider, upstream_model, outcome, status, error_code, started_ms,"
    " latency_ms, ttft_ms, prompt_tokens, completion_tokens, cached_tokens, cost_nano_usd"
    " FROM jsonb_to_recordset($ATTEMPTS::jsonb) AS x(request_id text, attempt int, endpoint_id text,"
    " provider text, upstream_model text, outcome text, status int, error_code text, started_ms bigint,"
    " latency_ms bigint, ttft_ms bigint, prompt_tokens bigint, completion_tokens bigint, cached_tokens bigint,"
    " cost_nano_usd bigint)"
    " ON CONFLICT (request_id, attempt) DO NOTHING RETURNING 1),"
    " charged AS (UPDATE api_keys k SET spent_nano_usd = k.spent_nano_usd + s.total"
    " FROM (SELECT api_key_id, sum(cost_nano_usd)::bigint AS total FROM ins"
    " WHERE api_key_id IS NOT NULL GROUP BY api_key_id) s"
    " WHERE k.id = s.api_key_id RETURNING k.id),"
    // The ledger row of each charged call, and the balance moved by exactly
    // the ledger rows inserted: balance = sum(ledger) holds after every batch.
    " ledger AS (INSERT INTO ledger_entries (account_id, amount_nano_usd, kind, idempotency_key, request_id,"
    " api_key_id)"
    " SELECT account_id, -cost_nano_usd, 'usage', request_id, request_id, api_key_id FROM ins"
    " WHERE cost_nano_usd > 0 AND account_id IS NOT NULL ORDER BY request_id"
    " ON CONFLICT (idempotency_key) DO NOTHING RETURNING account_id, amount_nano_usd),"
    " balanced AS (UPDATE accounts a SET balance_nano_usd = a.balance_nano_usd + s.total"
    " FROM (SELECT account_id, sum(amount_nano_usd)::bigint AS total FROM ledger GROUP BY account_id) s"
    " WHERE a.id = s.account_id RETURNING a.id),"
    // The pots (design: credits, key limit, account budget) of each charged
    // call, in the period of its created_at; `leased` when the pot exists.
    " pots AS (SELECT i.request_id, i.lease_holder, i.cost_nano_usd AS cost, p.scope, p.owner_id,"
    " p.period_start, p.leased"
    " FROM ins i LEFT JOIN api_keys k ON k.id = i.api_key_id LEFT JOIN accounts a ON a.id = i.account_id"
    " CROSS JOIN LATERAL (VALUES"
    " ('key'::text, k.id, tollgate_period_start(k.limit_reset, i.created_at),"
    " k.credit_limit_nano_usd IS NOT NULL),"
    " ('budget'::text, a.id, tollgate_period_start(a.budget_reset, i.created_at),"
    " a.budget_nano_usd IS NOT NULL),"
    " ('credits'::text, a.id, 'epoch'::timestamptz, COALESCE(a.prepaid, false)))"
    " AS p(scope, owner_id, period_start, leased)"
    " WHERE i.cost_nano_usd > 0 AND p.owner_id IS NOT NULL),"
    " periods AS (INSERT INTO period_usage (scope, owner_id, period_start, usage_nano_usd)"
    " SELECT scope, owner_id, period_start, sum(cost)::bigint FROM pots WHERE scope <> 'credits'"
    " GROUP BY scope, owner_id, period_start ORDER BY scope, owner_id, period_start"
    " ON CONFLICT (scope, owner_id, period_start)"
    " DO UPDATE SET usage_nano_usd = period_usage.usage_nano_usd + EXCLUDED.usage_nano_usd RETURNING 1),"
    // The pots each call was admitted under (UsageEvent::leased_pots), as
    // the ticket named them: a limit, budget, prepaid flag or reset changed
    // while the call was in flight must not move its cost to a lease that
    // never reserved it.
    " given AS (SELECT DISTINCT request_id, scope, owner_id, period_start"
    " FROM jsonb_to_recordset($LEASED::jsonb) AS x(request_id text, scope text, owner_id bigint,"
    " period_start timestamptz)),"
    // What a settled call took from a replica's lease (design: the DB lease
    // is the replica's free + reserved + settled-but-unwritten amount): the
    // given pots; for a row with a lease_holder but no given pots (a spool
    // record of an older gateway, which knew no leased_pots) the pots derived
    // from the settings now, as that gateway would have: right unless a
    // setting changed meanwhile, and such rows are only replayed at start,
    // whose earlier boot's leases are dropped right after the replay.
    " taken AS (SELECT i.lease_holder, i.cost_nano_usd AS cost, g.scope, g.owner_id, g.period_start"
    " FROM ins i JOIN given g ON g.request_id = i.request_id"
    " WHERE i.cost_nano_usd > 0 AND i.lease_holder IS NOT NULL"
    " UNION ALL SELECT p.lease_holder, p.cost, p.scope, p.owner_id, p.period_start FROM pots p"
    " WHERE p.leased AND p.lease_holder IS NOT NULL"
    " AND NOT EXISTS (SELECT 1 FROM given g WHERE g.request_id = p.request_id)),"
    " leases AS (UPDATE credit_leases l SET amount_nano_usd = GREATEST(l.amount_nano_usd - s.total, 0)"
    " FROM (SELECT lease_holder, scope, owner_id, period_start, sum(cost)::bigint AS total FROM taken"
    " GROUP BY lease_holder, scope, owner_id, period_start) s"
    " WHERE l.replica_id = s.lease_holder AND l.scope = s.scope AND l.owner_id = s.owner_id"
    " AND l.period_start = s.period_start RETURNING 1)"
    " SELECT (SELECT count(*) FROM ins), (SELECT n FROM roll)";

std::string InsertSql(size_t rows) {
  std::string sql = "WITH v (";
  sql += kColumnNames;
  sql += ") AS (VALUES ";
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
  sql += "),";
  std::string tail = kInsertTail;
  tail.replace(tail.find("$COLUMNS"), 8, kColumnNames);
  for (const std::string placeholder : {"$ATTEMPTS", "$LEASED"}) {
    std::string number = "$";
    number += std::to_string(n++);
    tail.replace(tail.find(placeholder), placeholder.size(), number);
  }
  sql += tail;
  return sql;
}

struct BatchOutcome {
  size_t done = 0;       // leading events now in the database (written, duplicate or rejected)
  bool failed = false;   // a transient failure stopped the batch at `done`
  std::string error;     // why, when failed
};

std::string RandomHex32() {
  static constexpr char kHex[] = "0123456789abcdef";
  std::random_device rd;
  std::string out;
  for (int i = 0; i < 4; ++i) {  // 16 random bytes
    uint32_t r = rd();
    for (int j = 0; j < 4; ++j, r >>= 8) {
      out.push_back(kHex[(r >> 4) & 0xf]);
      out.push_back(kHex[r & 0xf]);
    }
  }
  return out;
}

}  // namespace

struct UsageRecorder::Impl {
  Impl(std::string url, const UsageRecorderOptions& options)
      : session(std::move(url)), flush_interval(options.flush_interval_ms),
        batch_size(static_cast<size_t>(std::clamp(options.batch_size, 1, kMaxBatchSize))) {}

  ~Impl() {
    if (spool) spool->Close();
  }

  internal::PgSession session;  // writer thread only (and Start)
  const std::chrono::milliseconds flush_interval;
  const size_t batch_size;
  std::unique_ptr<internal::UsageSpool> spool;  // null without a spool dir
  std::string replica_stable_id;

  mutable std::mutex mutex;
  std::condition_variable wake_cv;     // writer: work, flush request, stop
  std::condition_variable durable_cv;  // Flush/Stop waiters: progress
  std::deque<ItemPtr> queue;           // oldest first; the writer's batch is its front
  std::unordered_map<std::string, ItemPtr> index;  // request_id -> queued item
  uint64_t recorded = 0;      // events ever queued
  uint64_t durable = 0;       // events ever removed from the queue front
  uint64_t flush_target = 0;  // write promptly until durable >= flush_target
  bool stopping = false;
  bool abandon = false;
  bool writer_exited = false;
  std::thread thread;
  std::mutex join_mutex;

  std::atomic<int64_t> rows_written{0}, rows_duplicate{0}, duplicates_ignored{0}, rows_rejected{0},
      rows_lost{0}, rows_replayed{0}, rows_left_in_spool{0}, batches{0}, failures{0};
  int64_t spool_skipped_at_start = 0;

  // Writes items[0, n) in one transaction (the header lists its statements).
  PgOutcome InsertRows(std::span<const ItemPtr> items, int64_t* inserted) {
    std::vector<int64_t> key_ids;
    for (const ItemPtr& item : items) {
      if (item->event.api_key_id > 0) key_ids.push_back(item->event.api_key_id);
    }
    std::string key_array = IdArray(key_ids);

    PGconn* c = session.conn();
    PgOutcome out = PgExec(c, "BEGIN");
    // Keys first, in id order, then accounts in id order: the lock order of
    // every billing writer (usage_recorder.hpp).
    std::unordered_map<int64_t, int64_t> key_account;
    if (out.ok()) {
      out = PgExec(c, "SELECT id, account_id FROM api_keys WHERE id = ANY($1::bigint[]) ORDER BY id FOR UPDATE",
                   {key_array});
      if (out.ok()) {
        const PGresult* r = out.result.get();
        for (int row = 0; row < PQntuples(r); ++row) {
          key_account[internal::PgInt64(r, row, 0)] = internal::PgInt64(r, row, 1);
        }
      }
    }
    std::vector<int64_t> accounts;
    accounts.reserve(items.size());
    for (const ItemPtr& item : items) {
      int64_t account = item->event.account_id;
      if (account <= 0) {
        auto it = key_account.find(item->event.api_key_id);
        account = it == key_account.end() ? 0 : it->second;
      }
      accounts.push_back(account);
    }
    if (out.ok()) {
      std::vector<int64_t> account_ids;
      for (int64_t a : accounts) {
        if (a > 0) account_ids.push_back(a);
      }
      if (!account_ids.empty()) {
        out = PgExec(c, "SELECT 1 FROM accounts WHERE id = ANY($1::bigint[]) ORDER BY id FOR UPDATE",
                     {IdArray(account_ids)});
      }
    }
    if (out.ok()) {
      std::vector<PgParam> params;
      params.reserve(items.size() * kColumns + 2);
      for (size_t i = 0; i < items.size(); ++i) AppendParams(*items[i], accounts[i], params);
      params.emplace_back(AttemptsJson(items));
      params.emplace_back(LeasedPotsJson(items));
      out = PgExec(c, InsertSql(items.size()), params);
      if (out.ok()) *inserted = internal::PgInt64(out.result.get(), 0, 0);
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

  BatchOutcome WriteBatch(std::span<const ItemPtr> batch) {
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
    for (const ItemPtr& item : batch) {
      inserted = 0;
      out = InsertRows(std::span<const ItemPtr>(&item, 1), &inserted);
      if (out.ok()) {
        Count(1, inserted);
      } else if (out.permanent()) {
        const UsageEvent& e = item->event;
        rows_rejected.fetch_add(1, std::memory_order_relaxed);
        internal::Log(LogLevel::kError,
                      "usage row rejected, not billed: request_id=" + e.request_id +
                          " api_key_id=" + std::to_string(e.api_key_id) +
                          " cost_nano_usd=" + std::to_string(e.cost.nano_usd) + ": " +
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

  // The database has `items` now (or refused them for good): their spool
  // records need no replay, and whoever waits for them may go on.
  void Resolved(std::span<const ItemPtr> items) {
    if (items.empty()) return;
    if (spool) {
      std::vector<uint64_t> seqs;
      seqs.reserve(items.size());
      for (const ItemPtr& item : items) {
        if (item->spool_seq != 0) seqs.push_back(item->spool_seq);
      }
      spool->MarkCommitted(seqs);
    }
    for (const ItemPtr& item : items) item->Durable(/*in_spool=*/false);
  }

  // Removes the first n queued items. Caller holds `mutex`.
  void PopDurable(size_t n) {
    for (size_t i = 0; i < n; ++i) {
      index.erase(queue.front()->event.request_id);
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
      std::vector<ItemPtr> batch(queue.begin(), queue.begin() + static_cast<ptrdiff_t>(n));
      lock.unlock();
      BatchOutcome result = WriteBatch(batch);
      Resolved(std::span<const ItemPtr>(batch).first(result.done));
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
                                            std::to_string(queue.size()) + " row(s) queued" +
                                            (spool ? " (and spooled)" : "") +
                                            " and retrying: " + result.error);
      }
      wake_cv.wait_for(lock, backoff, [&] { return abandon; });
      backoff = std::min(backoff * 2, kMaxBackoff);
      retrying = true;
    }
    writer_exited = true;
    durable_cv.notify_all();
  }

  void Join() {
    std::lock_guard join_lock(join_mutex);
    if (thread.joinable()) thread.join();
    // The writer is gone, so no Record reaches the spool any more: sync what it
    // holds and release the directory.
    if (spool) spool->Close();
  }
};

UsageRecorder::UsageRecorder(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

UsageRecorder::~UsageRecorder() { Stop(); }

Result<std::unique_ptr<UsageRecorder>> UsageRecorder::Start(const std::string& database_url,
                                                            int flush_interval_ms, int batch_size) {
  UsageRecorderOptions options;
  options.flush_interval_ms = flush_interval_ms;
  options.batch_size = batch_size;
  return Start(database_url, std::move(options));
}

Result<std::unique_ptr<UsageRecorder>> UsageRecorder::Start(const std::string& database_url,
                                                            UsageRecorderOptions options) {
  if (options.flush_interval_ms < 1) {
    return InvalidArgument("usage flush interval must be >= 1 ms", "flush_interval_ms");
  }
  if (options.spool_segment_bytes < 1) {
    return InvalidArgument("usage spool segment size must be >= 1 byte", "spool_segment_bytes");
  }
  auto impl = std::make_unique<Impl>(database_url, options);
  std::vector<internal::SpooledEvent> replay;
  if (!options.spool_dir.empty()) {
    auto spool = internal::UsageSpool::Open({options.spool_dir, options.spool_segment_bytes});
    if (!spool) return spool.error();
    impl->spool = std::move(*spool);
    impl->replica_stable_id = impl->spool->replica_id();
    internal::UsageSpoolStats stats = impl->spool->stats();
    impl->spool_skipped_at_start = stats.torn_tails + stats.corrupt_records;
    replay = impl->spool->TakeRecovered();
  } else {
    impl->replica_stable_id = RandomHex32();
  }

  // Fail now, with "run tollgate migrate" (SQLSTATE 42P01), rather than queue
  // rows that the writer would retry forever against a missing table. With a
  // spool an unreachable database is only a warning: the rows are safe on
  // disk and the writer keeps trying.
  Error unreachable;
  bool reachable = false;
  if (auto ok = impl->session.Ensure(); !ok) {
    if (!impl->spool || ok.error().code != ErrorCode::kUnavailable) return ok.error();
    unreachable = ok.error();
  } else {
    internal::PgOutcome schema = impl->session.Exec(
        "SELECT 1 FROM usage_events, usage_retention_horizon, api_keys, accounts, ledger_entries, period_usage,"
        " credit_leases LIMIT 0",
        {}, /*idempotent=*/true);
    if (schema.ok()) {
      reachable = true;
    } else {
      Error error = schema.ToError("checking the usage tables");
      if (!impl->spool || error.code != ErrorCode::kUnavailable) return error;
      impl->session.DropIfBad();
      unreachable = std::move(error);
    }
  }
  if (!reachable) {
    internal::Log(LogLevel::kWarning, "usage database unreachable at start; usage rows are kept in the spool (" +
                                          options.spool_dir + ") and written when it comes back: " +
                                          unreachable.message);
  }

  // Replayed rows go first, in their original order; the database skips any
  // it already has. Nobody waits on them, so they count as durable already.
  for (internal::SpooledEvent& spooled : replay) {
    auto item = std::make_shared<Item>();
    item->event = std::move(spooled.event);
    item->spool_seq = spooled.seq;
    item->fired = true;
    item->spooled = true;
    if (!impl->index.emplace(item->event.request_id, item).second) {
      impl->duplicates_ignored.fetch_add(1, std::memory_order_relaxed);
      uint64_t seq = spooled.seq;
      impl->spool->MarkCommitted(std::span<const uint64_t>(&seq, 1));
      continue;
    }
    impl->queue.push_back(std::move(item));
  }
  impl->recorded = impl->queue.size();
  impl->flush_target = impl->recorded;  // write them promptly
  impl->rows_replayed.store(static_cast<int64_t>(impl->queue.size()));

  Impl* raw = impl.get();
  impl->thread = std::thread([raw] { raw->Run(); });
  return std::unique_ptr<UsageRecorder>(new UsageRecorder(std::move(impl)));
}

void UsageRecorder::Record(UsageEvent event, std::function<void()> on_durable) {
  auto item = std::make_shared<Item>();
  item->event = std::move(event);
  std::unique_lock lock(impl_->mutex);
  if (impl_->writer_exited) {
    lock.unlock();
    impl_->rows_lost.fetch_add(1, std::memory_order_relaxed);
    const UsageEvent& e = item->event;
    internal::Log(LogLevel::kError, "usage row recorded after Stop, not billed: request_id=" +
                                        e.request_id + " api_key_id=" + std::to_string(e.api_key_id) +
                                        " cost_nano_usd=" + std::to_string(e.cost.nano_usd));
    if (on_durable) on_durable();
    return;
  }
  auto [it, inserted] = impl_->index.emplace(item->event.request_id, item);
  if (!inserted) {
    ItemPtr first = it->second;
    lock.unlock();
    impl_->duplicates_ignored.fetch_add(1, std::memory_order_relaxed);
    if (on_durable && !first->AddCallback(on_durable)) {
      // The first one is durable already; still never run it inside Record
      // when there is a thread to run it on.
      if (impl_->spool) {
        impl_->spool->Defer(std::move(on_durable));
      } else {
        on_durable();
      }
    }
    return;
  }
  if (!impl_->spool) {
    item->fired = true;  // durable "at once": a duplicate's callback runs at once too
  } else {
    item->callback = std::move(on_durable);
    std::shared_ptr<const UsageEvent> event_ptr(item, &item->event);
    // Under the mutex, so the writer never sees the item before its seq.
    item->spool_seq = impl_->spool->Append(std::move(event_ptr), [item](bool durable) {
      if (durable) item->Durable(/*in_spool=*/true);
    });
  }
  impl_->queue.push_back(std::move(item));
  ++impl_->recorded;
  bool full = impl_->queue.size() >= impl_->batch_size;
  lock.unlock();
  if (!impl_->spool && on_durable) on_durable();
  if (full) impl_->wake_cv.notify_one();
}

std::optional<UsageEvent> UsageRecorder::FindPending(std::string_view request_id) const {
  std::lock_guard lock(impl_->mutex);
  auto it = impl_->index.find(std::string(request_id));
  if (it == impl_->index.end()) return std::nullopt;
  return it->second->event;
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
  impl_->Join();
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
  impl_->Join();  // also syncs the spool: every spooled flag is final now
  std::vector<ItemPtr> left;
  {
    std::lock_guard lock(impl_->mutex);
    left.assign(impl_->queue.begin(), impl_->queue.end());
    impl_->PopDurable(left.size());
  }
  if (left.empty()) return true;
  size_t lost = 0;
  int64_t lost_cost = 0;
  for (const ItemPtr& item : left) {
    if (!item->in_spool()) {
      ++lost;
      lost_cost += item->event.cost.nano_usd;
    }
  }
  size_t kept = left.size() - lost;
  if (kept > 0) {
    internal::Log(LogLevel::kWarning, "usage recorder stopped with " + std::to_string(kept) +
                                          " row(s) not yet in the database; they stay in the spool and are "
                                          "written at the next start");
    impl_->rows_left_in_spool.fetch_add(static_cast<int64_t>(kept), std::memory_order_relaxed);
  }
  if (lost > 0) {
    internal::Log(LogLevel::kError, "usage recorder stopped with " + std::to_string(lost) +
                                        " row(s) not written (" + std::to_string(lost_cost) +
                                        " nano-USD not billed)");
    impl_->rows_lost.fetch_add(static_cast<int64_t>(lost), std::memory_order_relaxed);
  }
  for (const ItemPtr& item : left) item->Durable(/*in_spool=*/false);  // nobody waits forever
  return lost == 0;
}

const std::string& UsageRecorder::replica_stable_id() const { return impl_->replica_stable_id; }

int64_t UsageRecorder::rows_written() const { return impl_->rows_written.load(); }
int64_t UsageRecorder::rows_duplicate() const { return impl_->rows_duplicate.load(); }
int64_t UsageRecorder::duplicates_ignored() const { return impl_->duplicates_ignored.load(); }
int64_t UsageRecorder::rows_rejected() const { return impl_->rows_rejected.load(); }
int64_t UsageRecorder::rows_lost() const { return impl_->rows_lost.load(); }
int64_t UsageRecorder::rows_replayed() const { return impl_->rows_replayed.load(); }
int64_t UsageRecorder::rows_left_in_spool() const { return impl_->rows_left_in_spool.load(); }
int64_t UsageRecorder::batches() const { return impl_->batches.load(); }
int64_t UsageRecorder::failures() const { return impl_->failures.load(); }
int64_t UsageRecorder::pending() const {
  std::lock_guard lock(impl_->mutex);
  return static_cast<int64_t>(impl_->queue.size());
}
int64_t UsageRecorder::spool_syncs() const {
  return impl_->spool ? impl_->spool->stats().group_commits : 0;
}
int64_t UsageRecorder::spool_write_failures() const {
  return impl_->spool ? impl_->spool->stats().write_failures : 0;
}
int64_t UsageRecorder::spool_records_skipped() const { return impl_->spool_skipped_at_start; }

}  // namespace tollgate::billing
