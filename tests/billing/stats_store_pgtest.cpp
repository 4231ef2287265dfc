// StatsStore against a direct aggregation of the raw usage rows: random usage
// written through the real UsageRecorder (so the rollups are maintained by
// the writer's statement), then every aggregate compared with plain SQL
// GROUP BY over usage_events, across hour, day and DST boundaries
// (America/New_York 2026-03-08 and 2026-11-01) and the time zones
// Asia/Kolkata (+05:30), Asia/Kathmandu (+05:45) and UTC.
#include "tollgate/billing/stats_store.hpp"

#include "pg_test_database.hpp"
#include "tollgate/billing/account_store.hpp"
#include "tollgate/billing/usage_recorder.hpp"

#include <libpq-fe.h>

#include <atomic>
#include <map>
#include <thread>
#include <random>
#include <set>

namespace tollgate::billing {
namespace {

using namespace std::chrono_literals;
using Rows = std::vector<std::vector<std::string>>;

StatsTime At(int64_t unix_seconds) { return StatsTime(std::chrono::seconds(unix_seconds)); }
// 2026-03-07T00:00Z and 2026-10-31T00:00Z; each segment spans 3 days.
constexpr int64_t kSpring = 1772841600;
constexpr int64_t kFall = 1793404800;
constexpr int64_t kDay = 86400;

std::string Ts(StatsTime t) {
  const auto s = std::chrono::duration_cast<std::chrono::seconds>(t.time_since_epoch()).count();
  return "to_timestamp(" + std::to_string(s) + ")";
}

// The raw-row measures, in StatsMeasures order (plain SQL, independent of the rollups).
constexpr const char* kRawMeasures =
    "count(*), count(*) FILTER (WHERE status >= 400), count(*) FILTER (WHERE status >= 500),"
    " count(*) FILTER (WHERE cancelled), count(*) FILTER (WHERE NOT usage_estimated),"
    " coalesce(sum(prompt_tokens) FILTER (WHERE NOT usage_estimated), 0),"
    " coalesce(sum(completion_tokens) FILTER (WHERE NOT usage_estimated), 0),"
    " coalesce(sum(cached_tokens) FILTER (WHERE NOT usage_estimated), 0),"
    " coalesce(sum(cache_write_tokens) FILTER (WHERE NOT usage_estimated), 0),"
    " coalesce(sum(reasoning_tokens) FILTER (WHERE NOT usage_estimated), 0),"
    " coalesce(sum(prompt_tokens) FILTER (WHERE usage_estimated), 0),"
    " coalesce(sum(completion_tokens) FILTER (WHERE usage_estimated), 0),"
    " sum(cost_nano_usd), count(*) FILTER (WHERE byok), coalesce(sum(provider_cost_nano_usd) FILTER (WHERE byok), 0),"
    " sum(latency_ms), count(ttft_ms), coalesce(sum(ttft_ms), 0),"
    " coalesce(sum(completion_tokens) FILTER (WHERE NOT usage_estimated AND ttft_ms IS NOT NULL AND latency_ms > ttft_ms), 0),"
    " coalesce(sum(latency_ms - ttft_ms) FILTER (WHERE NOT usage_estimated AND ttft_ms IS NOT NULL AND latency_ms > ttft_ms), 0),"
    " percentile_disc(0.5) WITHIN GROUP (ORDER BY latency_ms), percentile_disc(0.9) WITHIN GROUP (ORDER BY latency_ms),"
    " percentile_disc(0.5) WITHIN GROUP (ORDER BY ttft_ms), percentile_disc(0.9) WITHIN GROUP (ORDER BY ttft_ms)";

std::vector<int64_t> MeasureList(const StatsMeasures& m) {
  return {m.requests, m.errors, m.server_errors, m.cancelled, m.usage_reported_requests, m.prompt_tokens,
          m.completion_tokens, m.cached_tokens, m.cache_write_tokens, m.reasoning_tokens,
          m.estimated_prompt_tokens, m.estimated_completion_tokens, m.cost.nano_usd, m.byok_requests,
          m.provider_cost.nano_usd, m.latency_ms_sum, m.ttft_requests, m.ttft_ms_sum, m.generation_tokens,
          m.generation_ms};
}

// Within the sketch's 2% relative accuracy of the exact rank value.
void ExpectQuantile(const std::optional<double>& estimate, const std::string& exact, const std::string& what) {
  if (exact.empty()) {
    EXPECT_FALSE(estimate) << what;
    return;
  }
  ASSERT_TRUE(estimate) << what;
  const double v = std::stod(exact);
  EXPECT_LE(std::abs(*estimate - v), 0.02 * v + 1e-9) << what << ": " << *estimate << " vs " << v;
}

// Compares measures (and optionally quantiles) with a raw row whose first
// `skip` columns are keys, then kRawMeasures.
void ExpectMeasures(const StatsMeasures& m, const std::vector<std::string>& raw, size_t skip, bool quantiles,
                    const std::string& what) {
  const std::vector<int64_t> got = MeasureList(m);
  static const char* names[] = {"requests", "errors", "server_errors", "cancelled", "usage_reported_requests",
                                "prompt", "completion", "cached", "cache_write", "reasoning", "est_prompt",
                                "est_completion", "cost", "byok", "provider_cost", "latency_sum", "ttft_n",
                                "ttft_sum", "gen_tokens", "gen_ms"};
  for (size_t i = 0; i < got.size(); ++i) {
    EXPECT_EQ(got[i], std::stoll(raw[skip + i])) << what << " " << names[i];
  }
  if (quantiles) {
    ExpectQuantile(m.latency.Quantile(0.5), raw[skip + 20], what + " latency p50");
    ExpectQuantile(m.latency.Quantile(0.9), raw[skip + 21], what + " latency p90");
    ExpectQuantile(m.ttft.Quantile(0.5), raw[skip + 22], what + " ttft p50");
    ExpectQuantile(m.ttft.Quantile(0.9), raw[skip + 23], what + " ttft p90");
  }
}

class StatsStorePg : public testing::MigratedPgTest {
 protected:
  void SetUp() override {
    MigratedPgTest::SetUp();
    if (HasFatalFailure()) return;
    auto accounts = AccountStore::Connect(url());
    ASSERT_TRUE(accounts) << accounts.error().message;
    for (int i = 0; i < 3; ++i) {
      testing::TestKey k = testing::CreateAccountAndKey(**accounts, "acct" + std::to_string(i));
      keys_.push_back({k.id, k.account_id});
    }
    // A second key in account 0.
    auto extra = (*accounts)->CreateKey(NewKey{.account_id = keys_[0].second, .name = "second"});
    ASSERT_TRUE(extra);
    keys_.push_back({extra->details.id, keys_[0].second});
    keys_.push_back({0, 0});  // calls that never authenticated
    auto store = StatsStore::Connect(url());
    ASSERT_TRUE(store) << store.error().message;
    store_ = std::move(*store);
  }

  Rows Raw(const std::string& sql) {
    Rows rows;
    PGconn* conn = PQconnectdb(url().c_str());
    PGresult* r = PQexec(conn, sql.c_str());
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
      ADD_FAILURE() << sql << ": " << PQerrorMessage(conn);
    } else {
      for (int i = 0; i < PQntuples(r); ++i) {
        std::vector<std::string> row;
        for (int j = 0; j < PQnfields(r); ++j) row.emplace_back(PQgetisnull(r, i, j) ? "" : PQgetvalue(r, i, j));
        rows.push_back(std::move(row));
      }
    }
    PQclear(r);
    PQfinish(conn);
    return rows;
  }

  // Writes `n` random calls per segment through the UsageRecorder, with
  // duplicates queued twice and a replay of a batch already written.
  void WriteRandomUsage(int n) {
    auto recorder = UsageRecorder::Start(url(), 50, 200);
    ASSERT_TRUE(recorder) << recorder.error().message;
    std::mt19937_64 rng(20261205);
    auto pick = [&](int k) { return static_cast<int>(rng() % static_cast<uint64_t>(k)); };
    const char* models[] = {"openai/gpt-4o-mini", "anthropic/claude-3.5", "meta/llama-3", "local/qwen"};
    const char* providers[] = {"OpenAI", "Anthropic", "Together"};
    const char* apps[] = {"", "https://app-a.example", "title:Bench"};
    std::vector<UsageEvent> written;
    int id = 0;
    for (int64_t segment : {kSpring, kFall}) {
      for (int i = 0; i < n; ++i) {
        UsageEvent e;
        e.request_id = "gen-stats-" + std::to_string(++id);
        auto [key, account] = keys_[static_cast<size_t>(pick(static_cast<int>(keys_.size())))];
        e.api_key_id = key;
        e.account_id = account;
        e.model = models[pick(4)];
        const int p = pick(3);
        e.provider = providers[p];
        e.endpoint_id = e.provider + "-ep" + std::to_string(pick(2));
        e.upstream_model = e.model;
        e.created_at = At(segment) + std::chrono::microseconds(static_cast<int64_t>(rng() % (3 * kDay * 1000000)));
        e.finished_at = e.created_at + 1s;
        const int s = pick(20);
        e.status = s < 15 ? 200 : s == 15 ? 400 : s == 16 ? 429 : s == 17 ? 500 : s == 18 ? 502 : 499;
        e.cancelled = e.status == 499;
        e.usage_estimated = pick(7) == 0;
        e.usage = Usage{pick(5000), pick(2000), pick(100), pick(50), pick(30)};
        e.cost = Money{pick(3'000'000) * 7};
        e.latency_ms = 1 + pick(60000);
        if (pick(4) != 0) e.ttft_ms = 1 + pick(static_cast<int>(e.latency_ms));
        if (pick(10) == 0) {
          e.byok = true;
          e.provider_cost = Money{pick(1'000'000)};
        }
        const char* app = apps[pick(3)];
        e.app = app;
        if (e.app == "title:Bench") e.app_title = "Bench";
        if (e.app == "https://app-a.example") e.app_title = pick(2) ? "App A" : "App \"A\", v2";
        // A model only ever used without reported usage.
        if (i % 50 == 0) {
          e.model = "mystery/unreported";
          e.usage_estimated = true;
        }
        (*recorder)->Record(e);
        if (i % 97 == 0) (*recorder)->Record(e);  // a duplicate in the queue
        written.push_back(std::move(e));
      }
    }
    (*recorder)->Flush();
    // A replay of rows already stored (a spool replayed after a crash).
    for (size_t i = 0; i < written.size(); i += 13) (*recorder)->Record(written[i]);
    (*recorder)->Flush();
    (*recorder)->Stop();
    ASSERT_EQ(QueryInt("SELECT count(*) FROM usage_events"), static_cast<int64_t>(written.size()));
  }

  std::unique_ptr<StatsStore> store_;
  std::vector<std::pair<int64_t, int64_t>> keys_;  // (key id, account id)
};

// The raw key expression of a group.
std::string RawKey(StatsGroup g) {
  switch (g) {
    case StatsGroup::kNone: return "''";
    case StatsGroup::kModel: return "model";
    case StatsGroup::kProvider: return "provider";
    case StatsGroup::kEndpoint: return "coalesce(endpoint_id, '')";
    case StatsGroup::kKey: return "coalesce(api_key_id, 0)::text";
    case StatsGroup::kAccount: return "coalesce(account_id, 0)::text";
    case StatsGroup::kApp: return "coalesce(app, '')";
  }
  return "''";
}

TEST_F(StatsStorePg, AggregatesEqualRawRowsAcrossDaysTimeZonesAndDst) {
  WriteRandomUsage(1500);
  if (HasFatalFailure()) return;

  // Ranges with partial days at both ends (quarter-aligned), whole days in the middle.
  const std::vector<StatsRange> ranges = {
      {At(kSpring + 3 * 3600 + 15 * 60), At(kSpring + 2 * kDay + 20 * 3600 + 45 * 60)},
      {At(kFall), At(kFall + 3 * kDay)},
      {At(kFall + 5 * 3600), At(kFall + 5 * 3600 + 45 * 60)},  // inside one day
      // Partial UTC hours at both ends, whole hours between (usage_rollup_1h).
      {At(kFall + kDay + 5 * 3600 + 15 * 60), At(kFall + kDay + 9 * 3600 + 30 * 60)},
  };
  const std::vector<StatsScope> scopes = {
      {}, {keys_[0].first, std::nullopt}, {std::nullopt, keys_[0].second}, {keys_[1].first, keys_[1].second}};

  // 1. Grouped totals, every grouping and scope, with quantiles.
  for (const StatsRange& range : ranges) {
    for (const StatsScope& scope : scopes) {
      std::string where = "created_at >= " + Ts(range.start) + " AND created_at < " + Ts(range.end);
      if (scope.api_key_id) where += " AND api_key_id = " + std::to_string(*scope.api_key_id);
      if (scope.account_id) where += " AND account_id = " + std::to_string(*scope.account_id);
      for (StatsGroup g : {StatsGroup::kNone, StatsGroup::kModel, StatsGroup::kProvider, StatsGroup::kEndpoint,
                           StatsGroup::kKey, StatsGroup::kAccount, StatsGroup::kApp}) {
        auto got = store_->Aggregate(range, scope, g, /*with_sketches=*/true);
        ASSERT_TRUE(got) << got.error().message;
        Rows raw = Raw("SELECT " + RawKey(g) + ", " + kRawMeasures + " FROM usage_events WHERE " + where +
                       " GROUP BY 1 ORDER BY 1");
        std::map<std::string, const StatsGroupRow*> by_key;
        for (const StatsGroupRow& r : *got) by_key[r.key] = &r;
        if (g == StatsGroup::kNone && raw.empty()) {
          ASSERT_EQ(got->size(), 1u);
          EXPECT_EQ((*got)[0].measures.requests, 0);
          continue;
        }
        ASSERT_EQ(by_key.size(), raw.size()) << StatsGroupName(g);
        for (const auto& row : raw) {
          ASSERT_TRUE(by_key.count(row[0])) << StatsGroupName(g) << " " << row[0];
          ExpectMeasures(by_key[row[0]]->measures, row, 1, true,
                         std::string(StatsGroupName(g)) + "=" + row[0]);
        }
        if (g == StatsGroup::kKey) {
          for (const StatsGroupRow& r : *got) {
            if (r.key == std::to_string(keys_[3].first)) { EXPECT_EQ(r.label, "second"); }
          }
        }
        if (g == StatsGroup::kApp && by_key.count("title:Bench")) { EXPECT_EQ(by_key["title:Bench"]->label, "Bench"); }
      }
    }
  }

  // 2. "Not reported" stays apart from zero.
  auto models = store_->Aggregate(ranges[1], {}, StatsGroup::kModel);
  ASSERT_TRUE(models);
  bool seen = false;
  for (const StatsGroupRow& r : *models) {
    if (r.key != "mystery/unreported") continue;
    seen = true;
    EXPECT_EQ(r.measures.usage_reported_requests, 0);
    EXPECT_EQ(r.measures.usage_not_reported_requests(), r.measures.requests);
    EXPECT_EQ(r.measures.prompt_tokens, 0);
    EXPECT_GT(r.measures.estimated_tokens(), 0);
  }
  EXPECT_TRUE(seen);

  // 3. Time series in several zones, hour and day buckets, against raw rows;
  //    the buckets of a range sum to the range's total. New York and UTC read
  //    whole hours from usage_rollup_1h, Kolkata and Kathmandu only quarters
  //    (HourlyRollupsServeWholeHourZonesOnly shows which).
  for (const char* tz : {"America/New_York", "Asia/Kolkata", "Asia/Kathmandu", "UTC"}) {
    for (StatsBucket bucket : {StatsBucket::kHour, StatsBucket::kDay}) {
      for (size_t ri : {0, 1, 3}) {
        const StatsRange& range = ranges[ri];
        const std::string z = std::string("'") + tz + "'";
        const std::string raw_bucket =
            bucket == StatsBucket::kHour
                ? "date_trunc('minute', created_at) - extract(minute FROM created_at AT TIME ZONE " + z +
                      ") * interval '1 minute'"
                : "date_trunc('day', created_at, " + z + ")";
        const std::string where = "created_at >= " + Ts(range.start) + " AND created_at < " + Ts(range.end);
        auto ts = store_->Timeseries(range, {}, StatsGroup::kModel, bucket, tz, true);
        ASSERT_TRUE(ts) << ts.error().message;
        const std::string what = std::string(tz) + (bucket == StatsBucket::kHour ? " hour " : " day ") +
                                 std::to_string(ri);
        // Every bucket boundary is a local hour / midnight; consecutive.
        Rows raw_buckets = Raw("SELECT DISTINCT (extract(epoch FROM " + raw_bucket +
                               "))::bigint FROM usage_events WHERE " + where);
        std::set<int64_t> listed;
        for (const TimeseriesBucket& b : ts->buckets) {
          listed.insert(std::chrono::duration_cast<std::chrono::seconds>(b.start.time_since_epoch()).count());
        }
        for (const auto& row : raw_buckets) EXPECT_TRUE(listed.count(std::stoll(row[0]))) << what << " " << row[0];
        if (bucket == StatsBucket::kDay && std::string(tz) == "America/New_York" && ri == 0) {
          // 2026-03-08 is 23 hours long in New York.
          bool short_day = false;
          for (size_t i = 0; i + 1 < ts->buckets.size(); ++i) {
            if (ts->buckets[i + 1].start - ts->buckets[i].start == 23h) short_day = true;
          }
          EXPECT_TRUE(short_day);
          EXPECT_EQ(ts->buckets.front().utc_offset_minutes, -300);
          EXPECT_EQ(ts->buckets.back().utc_offset_minutes, -240);
        }
        if (std::string(tz) == "Asia/Kathmandu") { EXPECT_EQ(ts->buckets.front().utc_offset_minutes, 345); }
        Rows raw = Raw("SELECT (extract(epoch FROM " + raw_bucket + "))::bigint, model, " + kRawMeasures +
                       " FROM usage_events WHERE " + where + " GROUP BY 1, 2");
        std::map<std::pair<int64_t, std::string>, const StatsMeasures*> got;
        StatsMeasures sum;
        for (const auto& s : ts->series) {
          for (size_t i = 0; i < s.values.size(); ++i) {
            sum.Merge(s.values[i]);
            if (s.values[i].requests == 0) continue;
            got[{std::chrono::duration_cast<std::chrono::seconds>(ts->buckets[i].start.time_since_epoch()).count(),
                 s.key}] = &s.values[i];
          }
        }
        ASSERT_EQ(got.size(), raw.size()) << what;
        for (const auto& row : raw) {
          auto it = got.find({std::stoll(row[0]), row[1]});
          ASSERT_NE(it, got.end()) << what << " " << row[0] << " " << row[1];
          ExpectMeasures(*it->second, row, 2, true, what + " " + row[0] + " " + row[1]);
        }
        // Without sketches the store sums per quarter hour first: the same measures.
        auto plain = store_->Timeseries(range, {}, StatsGroup::kModel, bucket, tz, false);
        ASSERT_TRUE(plain) << plain.error().message;
        ASSERT_EQ(plain->buckets.size(), ts->buckets.size());
        std::map<std::string, const TimeseriesResult::Series*> plain_series;
        for (const auto& s : plain->series) plain_series[s.key] = &s;
        ASSERT_EQ(plain_series.size(), ts->series.size()) << what;
        for (const auto& s : ts->series) {
          ASSERT_TRUE(plain_series.count(s.key)) << what;
          for (size_t i = 0; i < s.values.size(); ++i) {
            EXPECT_EQ(MeasureList(plain_series[s.key]->values[i]), MeasureList(s.values[i])) << what << " " << s.key;
          }
        }
        auto total = store_->Aggregate(range, {}, StatsGroup::kNone);
        ASSERT_TRUE(total);
        EXPECT_EQ(MeasureList(sum), MeasureList((*total)[0].measures)) << what << ": buckets sum to the range";
      }
    }
  }

  // 4. Provider stats with percentiles.
  auto providers = store_->ProviderStats(ranges[0], {});
  ASSERT_TRUE(providers);
  Rows raw_providers = Raw("SELECT provider, coalesce(endpoint_id, ''), " + std::string(kRawMeasures) +
                           " FROM usage_events WHERE created_at >= " + Ts(ranges[0].start) + " AND created_at < " +
                           Ts(ranges[0].end) + " GROUP BY 1, 2 ORDER BY 1, 2");
  ASSERT_EQ(providers->size(), raw_providers.size());
  for (size_t i = 0; i < raw_providers.size(); ++i) {
    EXPECT_EQ((*providers)[i].provider, raw_providers[i][0]);
    EXPECT_EQ((*providers)[i].endpoint_id, raw_providers[i][1]);
    ExpectMeasures((*providers)[i].measures, raw_providers[i], 2, true, "provider " + raw_providers[i][1]);
  }

  // 5. Datasets and activity from the daily rollups.
  auto daily = store_->RankingsDaily("2026-03-07", "2026-03-09", DatasetPeriod::kDay);
  ASSERT_TRUE(daily);
  Rows raw_daily = Raw(
      "SELECT to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD'), model, sum(prompt_tokens + completion_tokens)"
      " FROM usage_events WHERE created_at >= '2026-03-07Z' AND created_at < '2026-03-10Z' GROUP BY 1, 2");
  std::map<std::pair<std::string, std::string>, int64_t> daily_got;
  for (const auto& r : *daily) daily_got[{r.date, r.model}] = r.total_tokens;
  for (const auto& row : raw_daily) EXPECT_EQ((daily_got[{row[0], row[1]}]), std::stoll(row[2])) << row[0] << row[1];
  EXPECT_EQ((daily_got[{"2026-03-08", "other"}]), 0);
  EXPECT_EQ(daily->back().model, "other");
  auto monthly = store_->RankingsDaily("2026-10-01", "2026-11-30", DatasetPeriod::kMonth);
  ASSERT_TRUE(monthly);
  std::set<std::string> months;
  for (const auto& r : *monthly) months.insert(r.date);
  EXPECT_EQ(months, (std::set<std::string>{"2026-10-01", "2026-11-01"}));

  auto app_ranks = store_->AppRankings("2026-03-01", "2026-11-30", 1, 1);
  ASSERT_TRUE(app_ranks);
  ASSERT_EQ(app_ranks->size(), 1u);
  EXPECT_EQ((*app_ranks)[0].rank, 2);
  Rows raw_apps = Raw("SELECT app, count(*), sum(prompt_tokens + completion_tokens) FROM usage_events"
                      " WHERE app IS NOT NULL GROUP BY 1 ORDER BY 3 DESC, 1 OFFSET 1 LIMIT 1");
  ASSERT_EQ(raw_apps.size(), 1u);
  EXPECT_EQ((*app_ranks)[0].app, raw_apps[0][0]);
  EXPECT_EQ((*app_ranks)[0].total_requests, std::stoll(raw_apps[0][1]));
  EXPECT_EQ((*app_ranks)[0].total_tokens, std::stoll(raw_apps[0][2]));
  EXPECT_GT((*app_ranks)[0].app_id, 0);

  const StatsScope key0{keys_[0].first, std::nullopt};
  auto activity = store_->Activity("2026-10-31", "2026-11-02", key0);
  ASSERT_TRUE(activity);
  Rows raw_activity = Raw(
      "SELECT to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD'), model, coalesce(endpoint_id, ''), count(*),"
      " sum(prompt_tokens), sum(completion_tokens), coalesce(sum(reasoning_tokens) FILTER (WHERE NOT usage_estimated), 0),"
      " sum(cost_nano_usd) FROM usage_events WHERE api_key_id = " + std::to_string(keys_[0].first) +
      " AND created_at >= '2026-10-31Z' AND created_at < '2026-11-03Z' GROUP BY 1, 2, 3 ORDER BY 1 DESC, 2, 3");
  ASSERT_EQ(activity->size(), raw_activity.size());
  for (size_t i = 0; i < raw_activity.size(); ++i) {
    const ActivityRow& a = (*activity)[i];
    EXPECT_EQ(a.date, raw_activity[i][0]);
    EXPECT_EQ(a.model, raw_activity[i][1]);
    EXPECT_EQ(a.endpoint_id, raw_activity[i][2]);
    EXPECT_EQ(a.requests, std::stoll(raw_activity[i][3]));
    EXPECT_EQ(a.prompt_tokens, std::stoll(raw_activity[i][4]));
    EXPECT_EQ(a.completion_tokens, std::stoll(raw_activity[i][5]));
    EXPECT_EQ(a.reasoning_tokens, std::stoll(raw_activity[i][6]));
    EXPECT_EQ(a.cost.nano_usd, std::stoll(raw_activity[i][7]));
  }

  // 6. Model rankings: current and previous windows.
  auto rankings = store_->ModelRankings({At(kFall + kDay), At(kFall + 2 * kDay)}, {At(kFall), At(kFall + kDay)});
  ASSERT_TRUE(rankings);
  Rows raw_rank = Raw("SELECT model, sum(prompt_tokens + completion_tokens) FILTER (WHERE created_at >= " +
                      Ts(At(kFall + kDay)) + "), sum(prompt_tokens + completion_tokens) FILTER (WHERE created_at < " +
                      Ts(At(kFall + kDay)) + ") FROM usage_events WHERE created_at >= " + Ts(At(kFall)) +
                      " AND created_at < " + Ts(At(kFall + 2 * kDay)) + " GROUP BY 1 ORDER BY 1");
  ASSERT_EQ(rankings->size(), raw_rank.size());
  for (size_t i = 0; i < raw_rank.size(); ++i) {
    EXPECT_EQ((*rankings)[i].model, raw_rank[i][0]);
    EXPECT_EQ((*rankings)[i].current.total_tokens(), raw_rank[i][1].empty() ? 0 : std::stoll(raw_rank[i][1]));
    EXPECT_EQ((*rankings)[i].previous.total_tokens(), raw_rank[i][2].empty() ? 0 : std::stoll(raw_rank[i][2]));
  }
}

// Which tier serves what: after every usage_rollup_1h row is made wrong on
// purpose, the results that read it (totals, whole-hour zones) change by
// exactly the hours they cover, and those of :30/:45 zones do not.
TEST_F(StatsStorePg, HourlyRollupsServeWholeHourZonesOnly) {
  WriteRandomUsage(300);
  if (HasFatalFailure()) return;
  // Over the fall DST change in New York, partial UTC hours at both ends.
  const StatsRange range{At(kFall + 3 * 3600 + 15 * 60), At(kFall + 2 * kDay + 7 * 3600 + 45 * 60)};
  const char* zones[] = {"America/New_York", "UTC", "Asia/Kolkata", "Asia/Kathmandu"};
  auto requests = [&](const char* tz, StatsBucket bucket) {
    auto ts = store_->Timeseries(range, {}, StatsGroup::kNone, bucket, tz, false);
    EXPECT_TRUE(ts) << ts.error().message;
    int64_t n = 0;
    for (const auto& s : ts->series) {
      for (const StatsMeasures& m : s.values) n += m.requests;
    }
    return n;
  };
  const int64_t raw = QueryInt("SELECT count(*) FROM usage_events WHERE created_at >= " + Ts(range.start) +
                               " AND created_at < " + Ts(range.end));
  ASSERT_GT(raw, 0);
  for (const char* tz : zones) {
    EXPECT_EQ(requests(tz, StatsBucket::kHour), raw) << tz;
    EXPECT_EQ(requests(tz, StatsBucket::kDay), raw) << tz;
  }
  auto total = [&] {
    auto t = store_->Aggregate(range, {}, StatsGroup::kNone);
    EXPECT_TRUE(t) << t.error().message;
    return (*t)[0].measures.requests;
  };
  EXPECT_EQ(total(), raw);

  // +1000 requests on every hour row: the whole UTC hours outside whole UTC
  // days are 04:00Z..24:00Z (day 1) and 00:00Z..07:00Z (day 3).
  const int64_t hour_rows_all = QueryInt("SELECT count(*) FROM usage_rollup_1h WHERE bucket_start >= " +
                                         Ts(At(kFall + 4 * 3600)) + " AND bucket_start < " +
                                         Ts(At(kFall + 2 * kDay + 7 * 3600)));
  const int64_t edge_hour_rows = QueryInt("SELECT count(*) FROM usage_rollup_1h WHERE (bucket_start >= " +
                                          Ts(At(kFall + 4 * 3600)) + " AND bucket_start < " + Ts(At(kFall + kDay)) +
                                          ") OR (bucket_start >= " + Ts(At(kFall + 2 * kDay)) +
                                          " AND bucket_start < " + Ts(At(kFall + 2 * kDay + 7 * 3600)) + ")");
  ASSERT_GT(QueryInt("WITH u AS (UPDATE usage_rollup_1h SET requests = requests + 1000 RETURNING 1)"
                     " SELECT count(*) FROM u"),
            0);
  ASSERT_GT(edge_hour_rows, 0);
  // Totals: whole days from usage_rollup_1d, the edge hours from usage_rollup_1h.
  EXPECT_EQ(total(), raw + 1000 * edge_hour_rows);
  // Hour buckets in New York and UTC: every whole hour from usage_rollup_1h.
  EXPECT_EQ(requests("America/New_York", StatsBucket::kHour), raw + 1000 * hour_rows_all);
  EXPECT_EQ(requests("UTC", StatsBucket::kHour), raw + 1000 * hour_rows_all);
  // Day buckets: New York's from hours; UTC's whole days from usage_rollup_1d.
  EXPECT_EQ(requests("America/New_York", StatsBucket::kDay), raw + 1000 * hour_rows_all);
  EXPECT_EQ(requests("UTC", StatsBucket::kDay), raw + 1000 * edge_hour_rows);
  // :30 and :45 zones: quarter hours only.
  for (const char* tz : {"Asia/Kolkata", "Asia/Kathmandu"}) {
    EXPECT_EQ(requests(tz, StatsBucket::kHour), raw) << tz;
    EXPECT_EQ(requests(tz, StatsBucket::kDay), raw) << tz;
  }
}

TEST_F(StatsStorePg, CallsPageThroughFilteredRowsNewestFirst) {
  WriteRandomUsage(300);
  if (HasFatalFailure()) return;
  CallFilter f;
  f.range = {At(kSpring), At(kFall + 3 * kDay)};
  f.scope.api_key_id = keys_[0].first;
  f.status_min = 500;
  f.status_max = 599;
  f.limit = 7;
  std::vector<std::string> ids;
  for (int pages = 0; pages < 100; ++pages) {
    auto page = store_->Calls(f);
    ASSERT_TRUE(page) << page.error().message;
    EXPECT_LE(page->rows.size(), 7u);
    for (const CallRow& c : page->rows) {
      ids.push_back(c.request_id);
      EXPECT_GE(c.status, 500);
      EXPECT_EQ(c.api_key_id, keys_[0].first);
      EXPECT_EQ(c.account_id, keys_[0].second);
    }
    if (!page->next) break;
    f.cursor = page->next;
  }
  Rows raw = Raw("SELECT request_id FROM usage_events WHERE api_key_id = " + std::to_string(keys_[0].first) +
                 " AND status >= 500 ORDER BY created_at DESC, request_id DESC");
  std::vector<std::string> expected;
  for (const auto& r : raw) expected.push_back(r[0]);
  EXPECT_EQ(ids, expected);
  EXPECT_GT(ids.size(), 7u);

  // The fields of one row read back as written.
  CallFilter one;
  one.range = {At(kSpring), At(kFall + 3 * kDay)};
  one.model = "mystery/unreported";
  one.limit = 1;
  auto page = store_->Calls(one);
  ASSERT_TRUE(page);
  ASSERT_EQ(page->rows.size(), 1u);
  EXPECT_FALSE(page->rows[0].usage_reported);
  EXPECT_TRUE(page->next);
}

TEST_F(StatsStorePg, RefusesUnknownTimeZonesAndTooManyBuckets) {
  auto bad = store_->Timeseries({At(kSpring), At(kSpring + kDay)}, {}, StatsGroup::kNone, StatsBucket::kHour,
                                "Mars/Olympus_Mons", false);
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().code, ErrorCode::kInvalidArgument);
  EXPECT_EQ(bad.error().param, "tz");
  EXPECT_NE(bad.error().message.find("Mars/Olympus_Mons"), std::string::npos);
  auto many = store_->Timeseries({At(kSpring), At(kSpring + 100 * kDay)}, {}, StatsGroup::kNone, StatsBucket::kHour,
                                 "UTC", false);
  ASSERT_FALSE(many);
  EXPECT_EQ(many.error().param, "bucket");
  // An empty database: every bucket listed, no series.
  auto empty = store_->Timeseries({At(kSpring), At(kSpring + kDay)}, {}, StatsGroup::kModel, StatsBucket::kHour,
                                  "Asia/Kathmandu", false);
  ASSERT_TRUE(empty) << empty.error().message;
  EXPECT_EQ(empty->buckets.size(), 25u);  // 00:00Z is 05:45 local: a partial first and last hour
  EXPECT_TRUE(empty->series.empty());
}

TEST_F(StatsStorePg, ReportsUnavailableDuringAnOutageAndReconnects) {
  const StatsRange range{At(kSpring), At(kSpring + kDay)};
  ASSERT_TRUE(store_->Aggregate(range, {}, StatsGroup::kModel));
  BeginOutage();
  auto down = store_->Aggregate(range, {}, StatsGroup::kModel);
  ASSERT_FALSE(down);
  EXPECT_EQ(down.error().code, ErrorCode::kUnavailable);
  EndOutage();
  // From several threads at once: the pool hands each its own connection.
  std::vector<std::thread> threads;
  std::atomic<int> ok{0};
  for (int i = 0; i < 6; ++i) {
    threads.emplace_back([&] {
      if (store_->Timeseries(range, {}, StatsGroup::kNone, StatsBucket::kHour, "Asia/Kolkata", true)) ++ok;
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(ok.load(), 6);
}

TEST(LatencySketch, MatchesTheSqlIndexAndStaysWithinTwoPercent) {
  for (int64_t v : {1, 2, 3, 10, 99, 100, 101, 1000, 12345, 600000}) {
    LatencySketch s;
    s.AddValue(v);
    ASSERT_TRUE(s.Quantile(0.5));
    EXPECT_LE(std::abs(*s.Quantile(0.5) - static_cast<double>(v)), 0.02 * static_cast<double>(v) + 1e-9) << v;
  }
  LatencySketch zero;
  zero.AddValue(0);
  EXPECT_EQ(zero.Quantile(0.9), 0.0);
  EXPECT_FALSE(LatencySketch{}.Quantile(0.5));
}

TEST_F(StatsStorePg, SketchIndexAgreesWithSql) {
  for (int64_t v : {1, 2, 3, 7, 10, 49, 50, 51, 99, 100, 1000, 54321, 999999}) {
    EXPECT_EQ(LatencySketch::Index(v), QueryInt("SELECT tollgate_sketch_index(" + std::to_string(v) + ")")) << v;
  }
}

}  // namespace
}  // namespace tollgate::billing
