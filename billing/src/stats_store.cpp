#include "tollgate/billing/stats_store.hpp"

#include "pg.hpp"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <set>
#include <tuple>
#include <unordered_map>

namespace tollgate::billing {
namespace {

using internal::PgInt64;
using internal::PgOptInt64;
using internal::PgOptText;
using internal::PgOutcome;
using internal::PgParam;
using internal::PgText;

constexpr double kGamma = 1.02 / 0.98;
constexpr int64_t kQuarterMicros = int64_t{15} * 60 * 1000000;
constexpr int64_t kHourMicros = int64_t{3600} * 1000000;
constexpr int64_t kDayMicros = int64_t{24} * 3600 * 1000000;

int64_t Micros(StatsTime t) {
  return std::chrono::duration_cast<std::chrono::microseconds>(t.time_since_epoch()).count();
}
int64_t FloorDiv(int64_t a, int64_t b) { return a / b - ((a % b != 0) && ((a < 0) != (b < 0))); }

// A statement and its text parameters, numbered as they are added.
struct Sql {
  std::string text;
  std::vector<PgParam> params;
  std::string P(std::string value, std::string_view cast) {
    params.emplace_back(std::move(value));
    return "$" + std::to_string(params.size()) + "::" + std::string(cast);
  }
  std::string Time(StatsTime t) { return P(internal::PgTimestamp(t), "timestamptz"); }
};

// The rollup columns summed per group, in StatsMeasures order.
constexpr const char* kMeasureColumns[] = {
    "requests",          "errors",          "server_errors",     "cancelled",
    "usage_reported_requests", "prompt_tokens", "completion_tokens", "cached_tokens",
    "cache_write_tokens", "reasoning_tokens", "estimated_prompt_tokens", "estimated_completion_tokens",
    "cost_nano_usd",     "byok_requests",   "provider_cost_nano_usd", "latency_ms_sum",
    "ttft_requests",     "ttft_ms_sum",     "generation_tokens", "generation_ms"};
constexpr int kMeasureCount = sizeof kMeasureColumns / sizeof kMeasureColumns[0];

void ReadMeasures(const PGresult* r, int row, int col, StatsMeasures& m) {
  int64_t* fields[] = {&m.requests,
                       &m.errors,
                       &m.server_errors,
                       &m.cancelled,
                       &m.usage_reported_requests,
                       &m.prompt_tokens,
                       &m.completion_tokens,
                       &m.cached_tokens,
                       &m.cache_write_tokens,
                       &m.reasoning_tokens,
                       &m.estimated_prompt_tokens,
                       &m.estimated_completion_tokens,
                       &m.cost.nano_usd,
                       &m.byok_requests,
                       &m.provider_cost.nano_usd,
                       &m.latency_ms_sum,
                       &m.ttft_requests,
                       &m.ttft_ms_sum,
                       &m.generation_tokens,
                       &m.generation_ms};
  static_assert(sizeof fields / sizeof fields[0] == kMeasureCount);
  for (int i = 0; i < kMeasureCount; ++i) *fields[i] = PgInt64(r, row, col + i);
}

// "i:n,i:n" (string_agg below) -> sketch.
LatencySketch ParseSketch(std::string_view text) {
  LatencySketch s;
  while (!text.empty()) {
    size_t comma = text.find(',');
    std::string_view item = text.substr(0, comma);
    size_t colon = item.find(':');
    int i = 0;
    int64_t n = 0;
    if (colon != std::string_view::npos) {
      std::from_chars(item.data(), item.data() + colon, i);
      std::from_chars(item.data() + colon + 1, item.data() + item.size(), n);
      if (n > 0) s.buckets[i] += n;
    }
    if (comma == std::string_view::npos) break;
    text.remove_prefix(comma + 1);
  }
  return s;
}

// The grouping of a query: up to two key columns of a rollup row and the
// label of the group (an expression over g1).
struct GroupSql {
  std::string g1 = "''";
  std::string g2 = "''";
  std::string label = "''";
};

GroupSql GroupColumns(StatsGroup group) {
  switch (group) {
    case StatsGroup::kNone: return {};
    case StatsGroup::kModel: return {"model", "''", "''"};
    case StatsGroup::kProvider: return {"provider", "''", "''"};
    case StatsGroup::kEndpoint: return {"endpoint_id", "''", "''"};
    case StatsGroup::kKey:
      return {"api_key_id::text", "''", "coalesce((SELECT k.name FROM api_keys k WHERE k.id = g1::bigint), '')"};
    case StatsGroup::kAccount:
      return {"account_id::text", "''", "coalesce((SELECT a.name FROM accounts a WHERE a.id = g1::bigint), '')"};
    case StatsGroup::kApp:
      return {"app", "''", "coalesce((SELECT p.title FROM apps p WHERE p.app = g1), '')"};
  }
  return {};
}

void AppendScope(Sql& q, const StatsScope& scope, std::string& where) {
  if (scope.api_key_id) where += " AND api_key_id = " + q.P(std::to_string(*scope.api_key_id), "bigint");
  if (scope.account_id) where += " AND account_id = " + q.P(std::to_string(*scope.account_id), "bigint");
}

// How the rows of a query are bucketed.
struct BucketSql {
  // The bucket of a usage_rollup_15m row (an expression over bucket_start);
  // also of a usage_rollup_1h row when `hourly`.
  std::string quarter;
  std::string daily;    // of a usage_rollup_1d row; empty = read no daily rows
  // Whether every UTC hour of the range lies inside one bucket, so the whole
  // hours may come from usage_rollup_1h (the bucket of an hour row is that
  // of its first quarter).
  bool hourly = true;
};

struct AggRow {
  int64_t bucket_micros = 0;
  std::string g1, g2, label;
  StatsMeasures measures;
};

}  // namespace

// ------------------------------------------------------------------ sketch, measures

int LatencySketch::Index(int64_t ms) {
  if (ms < 1) return 0;
  // Same expression as tollgate_sketch_index (the 1e-9 keeps exact powers in their bucket).
  return static_cast<int>(std::ceil(std::log(static_cast<double>(ms)) / std::log(kGamma) - 1e-9)) + 1;
}

void LatencySketch::Merge(const LatencySketch& other) {
  for (const auto& [i, n] : other.buckets) buckets[i] += n;
}

int64_t LatencySketch::count() const {
  int64_t n = 0;
  for (const auto& [i, c] : buckets) n += c;
  return n;
}

std::optional<double> LatencySketch::Quantile(double q) const {
  const int64_t total = count();
  if (total <= 0) return std::nullopt;
  const auto rank = std::max<int64_t>(1, static_cast<int64_t>(std::ceil(q * static_cast<double>(total))));
  int64_t cum = 0;
  for (const auto& [i, n] : buckets) {
    cum += n;
    if (cum >= rank) return i == 0 ? 0.0 : 2 * std::pow(kGamma, i - 1) / (kGamma + 1);
  }
  return std::nullopt;
}

void StatsMeasures::Merge(const StatsMeasures& o) {
  requests += o.requests;
  errors += o.errors;
  server_errors += o.server_errors;
  cancelled += o.cancelled;
  usage_reported_requests += o.usage_reported_requests;
  prompt_tokens += o.prompt_tokens;
  completion_tokens += o.completion_tokens;
  cached_tokens += o.cached_tokens;
  cache_write_tokens += o.cache_write_tokens;
  reasoning_tokens += o.reasoning_tokens;
  estimated_prompt_tokens += o.estimated_prompt_tokens;
  estimated_completion_tokens += o.estimated_completion_tokens;
  cost.nano_usd += o.cost.nano_usd;
  byok_requests += o.byok_requests;
  provider_cost.nano_usd += o.provider_cost.nano_usd;
  latency_ms_sum += o.latency_ms_sum;
  ttft_requests += o.ttft_requests;
  ttft_ms_sum += o.ttft_ms_sum;
  generation_tokens += o.generation_tokens;
  generation_ms += o.generation_ms;
  latency.Merge(o.latency);
  ttft.Merge(o.ttft);
}

std::optional<double> StatsMeasures::throughput() const {
  if (generation_ms <= 0) return std::nullopt;
  return static_cast<double>(generation_tokens) * 1000.0 / static_cast<double>(generation_ms);
}

std::string_view StatsGroupName(StatsGroup group) {
  switch (group) {
    case StatsGroup::kNone: return "none";
    case StatsGroup::kModel: return "model";
    case StatsGroup::kProvider: return "provider";
    case StatsGroup::kEndpoint: return "endpoint";
    case StatsGroup::kKey: return "key";
    case StatsGroup::kAccount: return "account";
    case StatsGroup::kApp: return "app";
  }
  return "none";
}

std::optional<StatsGroup> ParseStatsGroup(std::string_view name) {
  for (StatsGroup g : {StatsGroup::kNone, StatsGroup::kModel, StatsGroup::kProvider, StatsGroup::kEndpoint,
                       StatsGroup::kKey, StatsGroup::kAccount, StatsGroup::kApp}) {
    if (StatsGroupName(g) == name) return g;
  }
  return std::nullopt;
}

// ------------------------------------------------------------------ store

struct StatsStore::Impl {
  std::string url;
  std::mutex mutex;
  std::condition_variable idle_cv;
  // An idle connection and the server process it had when it was given the
  // session settings (a reconnect gets a new one, so the settings are redone).
  struct Pooled {
    std::unique_ptr<internal::PgSession> session;
    int configured_pid = 0;
  };
  std::vector<Pooled> idle;  // guarded by mutex
  int open = 0;                                            // sessions made; guarded by mutex
  int pool_size = 2;
  std::optional<std::set<std::string>> time_zones;         // guarded by mutex

  // Runs one read statement on a pooled connection.
  PgOutcome Exec(const Sql& q) {
    Pooled pooled;
    {
      std::unique_lock lock(mutex);
      idle_cv.wait(lock, [&] { return !idle.empty() || open < pool_size; });
      if (!idle.empty()) {
        pooled = std::move(idle.back());
        idle.pop_back();
      } else {
        pooled.session = std::make_unique<internal::PgSession>(url);
        ++open;
      }
    }
    internal::PgSession* session = pooled.session.get();
    // Per connection: no JIT (compiling these short aggregate queries took
    // ~1 s of a 1.6 s query at 10M calls, measured with EXPLAIN ANALYZE) and
    // room to hash-aggregate in memory rather than sort on disk.
    if (session->Ensure() && session->conn() != nullptr && PQbackendPID(session->conn()) != pooled.configured_pid) {
      if (internal::PgExec(session->conn(), "SET jit = off; SET work_mem = '64MB'").ok()) {
        pooled.configured_pid = PQbackendPID(session->conn());
      }
    }
    PgOutcome out = session->Exec(q.text, q.params, /*idempotent=*/true);
    if (!out.ok()) session->DropIfBad();
    {
      std::lock_guard lock(mutex);
      idle.push_back(std::move(pooled));
    }
    idle_cv.notify_one();
    return out;
  }

  // The whole UTC units (days or hours) [u0, u1) inside `range` (u0 == u1 when none).
  static std::pair<StatsTime, StatsTime> WholeUnits(const StatsRange& range, int64_t unit_micros) {
    const int64_t s = Micros(range.start), e = Micros(range.end);
    int64_t u0 = FloorDiv(s + unit_micros - 1, unit_micros) * unit_micros;
    int64_t u1 = FloorDiv(e, unit_micros) * unit_micros;
    if (u0 >= u1) u0 = u1 = e;
    return {StatsTime(std::chrono::microseconds(u0)), StatsTime(std::chrono::microseconds(u1))};
  }
  static std::pair<StatsTime, StatsTime> WholeHours(const StatsRange& range) { return WholeUnits(range, kHourMicros); }

  // The pieces of a quarter-aligned range per rollup tier, coarsest first:
  // whole UTC days (when `days`), whole UTC hours of the rest (when
  // `hours`), and the quarter hours left at the ends. Disjoint; their union
  // is the range.
  struct Tiers {
    std::vector<StatsRange> days, hours, quarters;
  };
  static Tiers Split(const StatsRange& range, bool days, bool hours) {
    Tiers t;
    auto rest = [&](StatsTime a, StatsTime b) {
      if (a >= b) return;
      if (hours) {
        const auto [h0, h1] = WholeHours({a, b});
        if (h0 < h1) {
          if (a < h0) t.quarters.push_back({a, h0});
          t.hours.push_back({h0, h1});
          if (h1 < b) t.quarters.push_back({h1, b});
          return;
        }
      }
      t.quarters.push_back({a, b});
    };
    auto [d0, d1] = days ? WholeUnits(range, kDayMicros) : std::pair{range.end, range.end};
    if (d0 < d1) {
      t.days.push_back({d0, d1});
      rest(range.start, d0);
      rest(d1, range.end);
    } else {
      rest(range.start, range.end);
    }
    return t;
  }

  // Measures per (bucket, group) over `range` (rounded to quarter hours),
  // each part of it read from the coarsest rollup its bucketing allows.
  Result<std::vector<AggRow>> Aggregate(StatsRange range, const StatsScope& scope, const GroupSql& g,
                                        const std::function<BucketSql(Sql&)>& bucket_of, bool sketches) {
    range.start = FloorQuarter(range.start);
    range.end = CeilQuarter(range.end);
    if (range.end < range.start) range.end = range.start;
    Sql q;
    const BucketSql b = bucket_of(q);
    std::string cols = g.g1 + " AS g1, " + g.g2 + " AS g2";
    for (const char* c : kMeasureColumns) cols += std::string(", ") + c;
    if (sketches) cols += ", latency_sketch, ttft_sketch";
    std::string scope_sql;
    AppendScope(q, scope, scope_sql);
    Tiers tiers = Split(range, !b.daily.empty(), b.hourly);
    // Always a quarter-hour select (an empty range when no quarters are
    // left): it uses the parameters of the bucket expression, whose types
    // the server must infer.
    if (tiers.quarters.empty()) tiers.quarters.push_back({range.end, range.end});
    std::string src;
    auto select = [&](const std::vector<StatsRange>& pieces, const char* table, const std::string& bucket) {
      if (pieces.empty()) return;
      std::string where;
      for (const StatsRange& p : pieces) {
        where += std::string(where.empty() ? "" : " OR ") + "(bucket_start >= " + q.Time(p.start) +
                 " AND bucket_start < " + q.Time(p.end) + ")";
      }
      if (pieces.size() > 1) where = "(" + where + ")";
      src += std::string(src.empty() ? "" : " UNION ALL ") + "SELECT " + bucket + " AS b, " + cols + " FROM " + table +
             " WHERE " + where + scope_sql;
    };
    select(tiers.days, "usage_rollup_1d", b.daily);
    select(tiers.hours, "usage_rollup_1h", b.quarter);
    select(tiers.quarters, "usage_rollup_15m", b.quarter);
    std::string sums;
    for (const char* c : kMeasureColumns) sums += std::string(", sum(") + c + ")::bigint";
    // Materialised once when the sketch sums read it again; else inlined.
    q.text = std::string("WITH src AS ") + (sketches ? "MATERIALIZED (" : "(") + src + "), agg AS (SELECT b, g1, g2" + sums +
             " FROM src GROUP BY b, g1, g2)";
    if (sketches) {
      // Bucket-wise sums (linear in the rows), one "i:n,..." string per group.
      for (const char* s : {"latency", "ttft"}) {
        q.text += std::string(", ") + s + "_s AS (SELECT b, g1, g2, string_agg(i || ':' || n, ',' ORDER BY i) AS s"
                  " FROM (SELECT b, g1, g2, e.key::int AS i, sum(e.value::bigint) AS n FROM src,"
                  " jsonb_each_text(src." + s + "_sketch) e GROUP BY 1, 2, 3, 4) x GROUP BY 1, 2, 3)";
      }
    }
    // Labels looked up once per group, not once per bucket and group.
    q.text += ", labels AS MATERIALIZED (SELECT g1, " + g.label + " AS label FROM (SELECT DISTINCT g1 FROM agg) d)";
    q.text += " SELECT (extract(epoch FROM b) * 1000000)::bigint, g1, g2, labels.label, agg.*";
    q.text += sketches ? ", latency_s.s, ttft_s.s FROM agg JOIN labels USING (g1) LEFT JOIN latency_s USING (b, g1, g2)"
                         " LEFT JOIN ttft_s USING (b, g1, g2)"
                       : " FROM agg JOIN labels USING (g1)";
    return Read(q, sketches);
  }

  // Runs an Aggregate statement: (bucket micros, g1, g2, label, agg.* [, sketches]).
  Result<std::vector<AggRow>> Read(const Sql& q, bool sketches) {
    PgOutcome out = Exec(q);
    if (!out.ok()) return out.ToError("reading usage statistics");
    const PGresult* r = out.result.get();
    std::vector<AggRow> rows(static_cast<size_t>(PQntuples(r)));
    for (int i = 0; i < PQntuples(r); ++i) {
      AggRow& row = rows[static_cast<size_t>(i)];
      row.bucket_micros = PgInt64(r, i, 0);
      row.g1 = PgText(r, i, 1);
      row.g2 = PgText(r, i, 2);
      row.label = PgText(r, i, 3);
      // agg.* repeats b, g1, g2 at 4..6.
      ReadMeasures(r, i, 7, row.measures);
      if (sketches) {
        row.measures.latency = ParseSketch(PgText(r, i, 7 + kMeasureCount));
        row.measures.ttft = ParseSketch(PgText(r, i, 8 + kMeasureCount));
      }
    }
    return rows;
  }

  // One bucket for the whole range (labelled with its start): whole UTC days
  // from usage_rollup_1d, the partial days from usage_rollup_15m.
  Result<std::vector<AggRow>> Totals(const StatsRange& range, const StatsScope& scope, const GroupSql& g,
                                     bool sketches) {
    auto whole = [&](Sql& q) {
      std::string start = q.Time(FloorQuarter(range.start));
      return BucketSql{start, start};
    };
    return Aggregate(range, scope, g, whole, sketches);
  }

  Result<std::vector<StatsGroupRow>> Groups(const StatsRange& range, const StatsScope& scope, StatsGroup group,
                                            bool sketches) {
    auto rows = Totals(range, scope, GroupColumns(group), sketches);
    if (!rows) return rows.error();
    std::vector<StatsGroupRow> out;
    out.reserve(rows->size());
    for (AggRow& row : *rows) out.push_back(StatsGroupRow{std::move(row.g1), std::move(row.label), std::move(row.measures)});
    if (group == StatsGroup::kNone && out.empty()) out.push_back(StatsGroupRow{});
    return out;
  }
};

StatsStore::StatsStore(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
StatsStore::~StatsStore() = default;

Result<std::unique_ptr<StatsStore>> StatsStore::Connect(const std::string& database_url, int pool_size) {
  auto impl = std::make_unique<Impl>();
  impl->url = database_url;
  impl->pool_size = std::max(1, pool_size);
  auto first = std::make_unique<internal::PgSession>(database_url);
  if (auto ok = first->Ensure(); !ok) return ok.error();
  impl->idle.push_back(Impl::Pooled{std::move(first), 0});
  impl->open = 1;
  return std::unique_ptr<StatsStore>(new StatsStore(std::move(impl)));
}

StatsTime StatsStore::FloorQuarter(StatsTime t) {
  return StatsTime(std::chrono::microseconds(FloorDiv(Micros(t), kQuarterMicros) * kQuarterMicros));
}

StatsTime StatsStore::CeilQuarter(StatsTime t) {
  return StatsTime(std::chrono::microseconds(FloorDiv(Micros(t) + kQuarterMicros - 1, kQuarterMicros) * kQuarterMicros));
}

Result<std::vector<StatsGroupRow>> StatsStore::Aggregate(const StatsRange& range, const StatsScope& scope,
                                                         StatsGroup group, bool with_sketches) {
  return impl_->Groups(range, scope, group, with_sketches);
}

Result<std::vector<ModelRanking>> StatsStore::ModelRankings(const StatsRange& current, const StatsRange& previous) {
  auto now = impl_->Groups(current, {}, StatsGroup::kModel, false);
  if (!now) return now.error();
  auto before = impl_->Groups(previous, {}, StatsGroup::kModel, false);
  if (!before) return before.error();
  std::map<std::string, ModelRanking> by_model;
  for (StatsGroupRow& r : *now) {
    ModelRanking& m = by_model[r.key];
    m.model = r.key;
    m.current = std::move(r.measures);
  }
  for (StatsGroupRow& r : *before) {
    ModelRanking& m = by_model[r.key];
    m.model = r.key;
    m.previous = std::move(r.measures);
  }
  std::vector<ModelRanking> out;
  for (auto& [k, v] : by_model) out.push_back(std::move(v));
  return out;
}

Result<bool> StatsStore::KnownTimeZone(const std::string& tz) {
  {
    std::lock_guard lock(impl_->mutex);
    if (impl_->time_zones) return impl_->time_zones->count(tz) > 0;
  }
  Sql q;
  q.text = "SELECT name FROM pg_timezone_names";
  PgOutcome out = impl_->Exec(q);
  if (!out.ok()) return out.ToError("reading time zone names");
  std::set<std::string> names;
  for (int i = 0; i < PQntuples(out.result.get()); ++i) names.emplace(PgText(out.result.get(), i, 0));
  names.emplace("UTC");
  std::lock_guard lock(impl_->mutex);
  impl_->time_zones = std::move(names);
  return impl_->time_zones->count(tz) > 0;
}

Result<TimeseriesResult> StatsStore::Timeseries(const StatsRange& range_in, const StatsScope& scope, StatsGroup group,
                                                StatsBucket bucket, const std::string& tz, bool with_sketches,
                                                int max_buckets) {
  Result<bool> known = KnownTimeZone(tz);
  if (!known) return known.error();
  if (!*known) return InvalidArgument("unknown time zone '" + tz.substr(0, 100) + "' (an IANA name such as Europe/Berlin)", "tz");
  StatsRange range{FloorQuarter(range_in.start), CeilQuarter(range_in.end)};
  if (range.end < range.start) range.end = range.start;
  // A bound before generating anything (a local day is >= 23 h, an hour 1 h).
  const int64_t span = Micros(range.end) - Micros(range.start);
  const int64_t unit = bucket == StatsBucket::kHour ? kHourMicros : 23 * kHourMicros;
  if (span / unit > max_buckets + 1) {
    return InvalidArgument("the range holds more than " + std::to_string(max_buckets) + " buckets", "bucket");
  }
  const bool utc = tz == "UTC" || tz == "Etc/UTC";

  // Buckets of the range: every local hour / day that has a quarter in it.
  TimeseriesResult result;
  bool hours_exact = utc;
  if (range.end > range.start) {
    Sql q;
    const std::string s = q.Time(range.start), e = q.Time(range.end), z = q.P(tz, "text");
    std::string list;
    if (bucket == StatsBucket::kHour) {
      list = "SELECT DISTINCT qs - extract(minute FROM qs AT TIME ZONE " + z + ") * interval '1 minute' AS b"
             " FROM generate_series(" + s + ", " + e + " - interval '15 minutes', interval '15 minutes') qs";
    } else {
      list = "SELECT d::timestamp AT TIME ZONE " + z + " AS b FROM generate_series((" + s + " AT TIME ZONE " + z +
             ")::date, ((" + e + " - interval '15 minutes') AT TIME ZONE " + z + ")::date, interval '1 day') d";
    }
    // Whether every whole UTC hour of the range lies inside one bucket (its
    // four quarters fall in the same local hour / day): true where the zone's
    // offset is a whole number of hours throughout, false for India, Nepal,
    // ... Then the hours come from usage_rollup_1h. Checked once per query
    // on the range's quarters (<= 4 per bucket hour), not assumed per zone.
    std::string hourly = "true";
    const auto [h0, h1] = Impl::WholeHours(range);
    if (!utc && h0 < h1) {
      const std::string of_q = bucket == StatsBucket::kHour
                                   ? "q - extract(minute FROM q AT TIME ZONE " + z + ") * interval '1 minute'"
                                   : "((q AT TIME ZONE " + z + ")::date)::timestamp AT TIME ZONE " + z;
      hourly = "(SELECT coalesce(bool_and(n = 1), true) FROM (SELECT count(DISTINCT " + of_q +
               ") AS n FROM generate_series(" + q.Time(h0) + ", " + q.Time(h1) +
               " - interval '15 minutes', interval '15 minutes') q"
               " GROUP BY date_bin('1 hour', q, 'epoch'::timestamptz)) h)";
    }
    q.text = "SELECT (extract(epoch FROM b) * 1000000)::bigint, (extract(epoch FROM (b AT TIME ZONE " + z +
             ") - (b AT TIME ZONE 'UTC')) / 60)::int, " + hourly + " FROM (" + list + ") x ORDER BY b";
    PgOutcome out = impl_->Exec(q);
    if (!out.ok()) return out.ToError("listing time buckets");
    const PGresult* r = out.result.get();
    if (PQntuples(r) > 0) hours_exact = internal::PgBool(r, 0, 2);
    for (int i = 0; i < PQntuples(r); ++i) {
      result.buckets.push_back(TimeseriesBucket{StatsTime(std::chrono::microseconds(PgInt64(r, i, 0))),
                                                static_cast<int>(PgInt64(r, i, 1))});
    }
    if (static_cast<int>(result.buckets.size()) > max_buckets) {
      return InvalidArgument("the range holds " + std::to_string(result.buckets.size()) + " buckets, more than " +
                                 std::to_string(max_buckets),
                             "bucket");
    }
  }
  if (result.buckets.empty()) return result;

  auto rows = impl_->Aggregate(
      range, scope, GroupColumns(group),
      [&](Sql& q) {
        const std::string z = q.P(tz, "text");
        if (bucket == StatsBucket::kHour) {
          return BucketSql{"bucket_start - extract(minute FROM bucket_start AT TIME ZONE " + z + ") * interval '1 minute'",
                           "", hours_exact};
        }
        // Local midnight of the quarter's local date; UTC days straight from usage_rollup_1d.
        return BucketSql{"((bucket_start AT TIME ZONE " + z + ")::date)::timestamp AT TIME ZONE " + z,
                         utc ? "bucket_start" : "", hours_exact};
      },
      with_sketches);
  if (!rows) return rows.error();
  std::unordered_map<int64_t, size_t> index;
  for (size_t i = 0; i < result.buckets.size(); ++i) index[Micros(result.buckets[i].start)] = i;
  std::map<std::string, size_t> series_of;
  for (AggRow& row : *rows) {
    auto it = index.find(row.bucket_micros);
    if (it == index.end()) continue;  // cannot happen: the list holds every bucket of a quarter in range
    auto [s, inserted] = series_of.emplace(row.g1, result.series.size());
    if (inserted) {
      result.series.push_back(TimeseriesResult::Series{row.g1, row.label, std::vector<StatsMeasures>(result.buckets.size())});
    }
    result.series[s->second].values[it->second].Merge(row.measures);
  }
  return result;
}

Result<std::vector<ProviderStatsRow>> StatsStore::ProviderStats(const StatsRange& range, const StatsScope& scope) {
  GroupSql g{"provider", "endpoint_id", "''"};
  auto rows = impl_->Totals(range, scope, g, /*sketches=*/true);
  if (!rows) return rows.error();
  std::vector<ProviderStatsRow> out;
  for (AggRow& r : *rows) out.push_back(ProviderStatsRow{std::move(r.g1), std::move(r.g2), std::move(r.measures)});
  std::sort(out.begin(), out.end(), [](const ProviderStatsRow& a, const ProviderStatsRow& b) {
    return std::tie(a.provider, a.endpoint_id) < std::tie(b.provider, b.endpoint_id);
  });
  return out;
}

Result<CallPage> StatsStore::Calls(const CallFilter& f) {
  Sql q;
  const int limit = std::clamp(f.limit, 1, 500);
  std::string where = "created_at >= " + q.Time(f.range.start) + " AND created_at < " + q.Time(f.range.end);
  AppendScope(q, f.scope, where);
  if (f.model) where += " AND model = " + q.P(*f.model, "text");
  if (f.provider) where += " AND provider = " + q.P(*f.provider, "text");
  if (f.endpoint_id) where += " AND endpoint_id = " + q.P(*f.endpoint_id, "text");
  if (f.app) where += " AND app = " + q.P(*f.app, "text");
  if (f.status_min) where += " AND status >= " + q.P(std::to_string(*f.status_min), "int");
  if (f.status_max) where += " AND status <= " + q.P(std::to_string(*f.status_max), "int");
  if (f.cursor) {
    where += " AND (created_at, request_id) < (" + q.Time(f.cursor->created_at) + ", " +
             q.P(f.cursor->request_id, "text") + ")";
  }
  q.text =
      "SELECT request_id, (extract(epoch FROM created_at) * 1000000)::bigint, model, provider,"
      " coalesce(endpoint_id, ''), coalesce(api_key_id, 0), coalesce(account_id, 0), coalesce(app, ''),"
      " coalesce(app_title, ''), status, error_code, finish_reason, streamed, usage_estimated, prompt_tokens,"
      " completion_tokens, cached_tokens, cache_write_tokens, reasoning_tokens, cost_nano_usd, latency_ms, ttft_ms"
      " FROM usage_events WHERE " + where + " ORDER BY created_at DESC, request_id DESC LIMIT " +
      std::to_string(limit + 1);
  PgOutcome out = impl_->Exec(q);
  if (!out.ok()) return out.ToError("reading calls");
  const PGresult* r = out.result.get();
  CallPage page;
  const int n = PQntuples(r);
  for (int i = 0; i < std::min(n, limit); ++i) {
    CallRow c;
    c.request_id = PgText(r, i, 0);
    c.created_at = StatsTime(std::chrono::microseconds(PgInt64(r, i, 1)));
    c.model = PgText(r, i, 2);
    c.provider = PgText(r, i, 3);
    c.endpoint_id = PgText(r, i, 4);
    c.api_key_id = PgInt64(r, i, 5);
    c.account_id = PgInt64(r, i, 6);
    c.app = PgText(r, i, 7);
    c.app_title = PgText(r, i, 8);
    c.status = static_cast<int>(PgInt64(r, i, 9));
    c.error_code = PgOptText(r, i, 10);
    c.finish_reason = PgOptText(r, i, 11);
    c.streamed = internal::PgBool(r, i, 12);
    c.usage_reported = !internal::PgBool(r, i, 13);
    c.prompt_tokens = PgInt64(r, i, 14);
    c.completion_tokens = PgInt64(r, i, 15);
    c.cached_tokens = PgInt64(r, i, 16);
    c.cache_write_tokens = PgInt64(r, i, 17);
    c.reasoning_tokens = PgInt64(r, i, 18);
    c.cost = Money{PgInt64(r, i, 19)};
    c.latency_ms = PgInt64(r, i, 20);
    c.ttft_ms = PgOptInt64(r, i, 21);
    page.rows.push_back(std::move(c));
  }
  if (n > limit && !page.rows.empty()) page.next = CallCursor{page.rows.back().created_at, page.rows.back().request_id};
  return page;
}

Result<std::vector<RankingsDailyRow>> StatsStore::RankingsDaily(const std::string& start_date,
                                                                const std::string& end_date, DatasetPeriod period) {
  Sql q;
  const char* unit = period == DatasetPeriod::kDay ? "day" : period == DatasetPeriod::kWeek ? "week" : "month";
  q.text = std::string("SELECT to_char(date_trunc('") + unit +
           "', bucket_start AT TIME ZONE 'UTC'), 'YYYY-MM-DD') AS p, model,"
           " sum(prompt_tokens + completion_tokens + estimated_prompt_tokens + estimated_completion_tokens)::bigint AS t"
           " FROM usage_rollup_1d WHERE bucket_start >= (" + q.P(start_date, "date") +
           "::timestamp AT TIME ZONE 'UTC') AND bucket_start < ((" + q.P(end_date, "date") +
           " + 1)::timestamp AT TIME ZONE 'UTC') GROUP BY 1, 2 ORDER BY 1, 3 DESC, 2";
  PgOutcome out = impl_->Exec(q);
  if (!out.ok()) return out.ToError("reading daily rankings");
  const PGresult* r = out.result.get();
  std::vector<RankingsDailyRow> rows;
  std::string date;
  int in_date = 0;
  int64_t other = 0;
  auto close = [&] {
    if (!date.empty()) rows.push_back(RankingsDailyRow{date, "other", other});
  };
  for (int i = 0; i < PQntuples(r); ++i) {
    std::string d(PgText(r, i, 0));
    if (d != date) {
      close();
      date = d;
      in_date = 0;
      other = 0;
    }
    const int64_t t = PgInt64(r, i, 2);
    if (in_date++ < 50) {
      rows.push_back(RankingsDailyRow{d, std::string(PgText(r, i, 1)), t});
    } else {
      other += t;
    }
  }
  close();
  return rows;
}

Result<std::vector<AppRankingRow>> StatsStore::AppRankings(const std::string& start_date, const std::string& end_date,
                                                           int limit, int offset) {
  Sql q;
  q.text =
      "WITH ids AS (SELECT app, title, row_number() OVER (ORDER BY first_seen, app) AS id FROM apps),"
      " t AS (SELECT app, sum(requests)::bigint AS r,"
      " sum(prompt_tokens + completion_tokens + estimated_prompt_tokens + estimated_completion_tokens)::bigint AS tok"
      " FROM usage_rollup_1d WHERE app <> '' AND bucket_start >= (" + q.P(start_date, "date") +
      "::timestamp AT TIME ZONE 'UTC') AND bucket_start < ((" + q.P(end_date, "date") +
      " + 1)::timestamp AT TIME ZONE 'UTC') GROUP BY app)"
      " SELECT row_number() OVER (ORDER BY tok DESC, t.app), coalesce(ids.id, 0), t.app,"
      " coalesce(nullif(ids.title, ''), t.app), r, tok FROM t LEFT JOIN ids USING (app)"
      " ORDER BY tok DESC, t.app LIMIT " + std::to_string(std::max(0, limit)) + " OFFSET " +
      std::to_string(std::max(0, offset));
  PgOutcome out = impl_->Exec(q);
  if (!out.ok()) return out.ToError("reading app rankings");
  const PGresult* r = out.result.get();
  std::vector<AppRankingRow> rows;
  for (int i = 0; i < PQntuples(r); ++i) {
    rows.push_back(AppRankingRow{PgInt64(r, i, 0), PgInt64(r, i, 1), std::string(PgText(r, i, 2)),
                                 std::string(PgText(r, i, 3)), PgInt64(r, i, 4), PgInt64(r, i, 5)});
  }
  return rows;
}

Result<std::vector<ActivityRow>> StatsStore::Activity(const std::string& start_date, const std::string& end_date,
                                                      const StatsScope& scope) {
  Sql q;
  std::string where = "bucket_start >= (" + q.P(start_date, "date") +
                      "::timestamp AT TIME ZONE 'UTC') AND bucket_start < ((" + q.P(end_date, "date") +
                      " + 1)::timestamp AT TIME ZONE 'UTC')";
  AppendScope(q, scope, where);
  q.text =
      "SELECT to_char(bucket_start AT TIME ZONE 'UTC', 'YYYY-MM-DD'), model, endpoint_id, provider,"
      " sum(requests)::bigint, sum(prompt_tokens + estimated_prompt_tokens)::bigint,"
      " sum(completion_tokens + estimated_completion_tokens)::bigint, sum(reasoning_tokens)::bigint,"
      " sum(cost_nano_usd)::bigint, sum(provider_cost_nano_usd)::bigint"
      " FROM usage_rollup_1d WHERE " + where + " GROUP BY 1, 2, 3, 4 ORDER BY 1 DESC, 2, 3, 4";
  PgOutcome out = impl_->Exec(q);
  if (!out.ok()) return out.ToError("reading activity");
  const PGresult* r = out.result.get();
  std::vector<ActivityRow> rows;
  for (int i = 0; i < PQntuples(r); ++i) {
    rows.push_back(ActivityRow{std::string(PgText(r, i, 0)), std::string(PgText(r, i, 1)),
                               std::string(PgText(r, i, 2)), std::string(PgText(r, i, 3)), PgInt64(r, i, 4),
                               PgInt64(r, i, 5), PgInt64(r, i, 6), PgInt64(r, i, 7), Money{PgInt64(r, i, 8)},
                               Money{PgInt64(r, i, 9)}});
  }
  return rows;
}

}  // namespace tollgate::billing
