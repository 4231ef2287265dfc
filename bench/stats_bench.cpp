// Usage statistics at scale (issue 10): the stats queries of StatsStore
// (billing/include/tollgate/billing/stats_store.hpp) over 10 million usage
// rows, and the usage writer's ingest rate with the rollups maintained in its
// statement (migrations/006_stats.sql), beside the same writer with the
// rollup function replaced by a no-op.
//
//   bench/stats_bench.sh [--rows N] [--runs N]     (starts and stops its own PostgreSQL)
//   build/bench/tollgate_stats_bench SERVER_URL [--rows N] [--days N] [--runs N]
//
// SERVER_URL: a superuser's libpq URI; the program creates (and at the end
// drops) the database tg_stats_bench on that server.
//
// Data (seeded with SQL, one UTC day per transaction): `rows` usage rows over
// the `days` whole UTC days before today, evenly spread in time; 200 keys
// with Zipf popularity (index = floor(exp(u ln 201)) - 1, P(i) ~
// ln((i+2)/(i+1)), close to Zipf s = 1) in 50 accounts; each key uses 6 of
// the 40 models, Zipf-weighted the same way (its first from 3 shared
// favourites, its second from the next 5, the rest spread over the other
// 32), so overall model popularity falls off like a Zipf law; 2 endpoints per
// model on 12 providers, chosen at random; 20 apps (keys 0..19 mod 25; the
// others send none); 3% errors (429/500/502/503), 2% usage not reported.
// The rollups of each day (quarter hours, hours, the day) are built by one
// INSERT ... SELECT per rollup table that groups the day's raw rows exactly
// as tollgate_rollup_usage does (same keys, measures and sketches; checked
// equal to it on the first two hours), which is about 13 times faster than
// calling it on 333k rows.
//
// The queries run as the dashboard asks them, at a simulated "now" of
// yesterday 13:45 UTC (so windows have partial days from the hourly and
// quarter-hour rollups as well as whole days from the daily one), `runs` times each after
// one warm-up; p50 and p99 of the wall time of the StatsStore call (nearest
// rank). "admin" is unscoped; "key" is the scope of the busiest key (id 1,
// about 13% of all rows).
#include "tollgate/billing/migrations.hpp"
#include "tollgate/billing/stats_store.hpp"
#include "tollgate/billing/usage_recorder.hpp"

#include <libpq-fe.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <random>
#include <string>
#include <vector>

namespace {

using namespace tollgate;
using namespace tollgate::billing;
using Clock = std::chrono::steady_clock;
using std::chrono::system_clock;

double Seconds(Clock::time_point since) { return std::chrono::duration<double>(Clock::now() - since).count(); }

[[noreturn]] void Die(const std::string& what) {
  std::fprintf(stderr, "stats_bench: %s\n", what.c_str());
  std::exit(1);
}

// Runs `sql` (several statements allowed); dies on error. Returns the first
// value of the last result ("" when none).
std::string Exec(PGconn* conn, const std::string& sql) {
  PGresult* r = PQexec(conn, sql.c_str());
  const auto status = PQresultStatus(r);
  if (status != PGRES_COMMAND_OK && status != PGRES_TUPLES_OK) {
    std::string message = PQresultErrorMessage(r);
    PQclear(r);
    Die("SQL failed: " + message + "in: " + sql.substr(0, 300));
  }
  std::string out = PQntuples(r) > 0 && PQnfields(r) > 0 ? PQgetvalue(r, 0, 0) : "";
  PQclear(r);
  return out;
}

PGconn* Connect(const std::string& url) {
  PGconn* conn = PQconnectdb(url.c_str());
  if (PQstatus(conn) != CONNECTION_OK) Die(std::string("cannot connect: ") + PQerrorMessage(conn));
  return conn;
}

// The URL of database `name` on the server of `server_url` (a URI ending in /DBNAME).
std::string DatabaseUrl(const std::string& server_url, const std::string& name) {
  const size_t slash = server_url.rfind('/');
  if (slash == std::string::npos || slash < std::string("postgresql://").size()) Die("SERVER_URL must be a URI");
  const size_t query = server_url.find('?', slash);
  return server_url.substr(0, slash + 1) + name + (query == std::string::npos ? "" : server_url.substr(query));
}

// One day of raw rows: [lo, lo + 1 day), `n` rows, request ids "gen-b<day>-<i>".
std::string SeedDaySql(int day, const std::string& lo, int64_t n) {
  const std::string N = std::to_string(n), D = std::to_string(day);
  return "INSERT INTO usage_events (request_id, api_key_id, model, provider, upstream_model, prompt_tokens,"
         " completion_tokens, cached_tokens, reasoning_tokens, cost_nano_usd, latency_ms, ttft_ms, status,"
         " finish_reason, streamed, cancelled, usage_estimated, error_code, created_at, finished_at,"
         " cache_write_tokens, endpoint_id, account_id, byok, provider_cost_nano_usd, app, app_title)"
         " SELECT 'gen-b" + D + "-' || g, k + 1, 'vendor' || (m % 8) || '/model-' || m,"
         " 'provider-' || ((m + e) % 12), 'model-' || m, p, c, p / 4, c / 10,"
         " p * (m + 1) * 10 + c * (m + 1) * 40, lat, CASE WHEN st = 200 THEN lat / 5 END, st,"
         " CASE WHEN st = 200 THEN 'stop' END, true, false, est,"
         " CASE WHEN st <> 200 THEN 'upstream_error' END, t, t + lat * interval '1 ms', 0,"
         " 'model-' || m || '-ep' || e, k % 50 + 1, false, NULL,"
         " CASE WHEN k % 25 < 20 THEN 'https://app' || (k % 20) || '.example' END,"
         " CASE WHEN k % 25 < 20 THEN 'App ' || (k % 20) END"
         " FROM (SELECT g, CASE r WHEN 0 THEN k % 3 WHEN 1 THEN 3 + k % 5 ELSE (r * 7 + k * 3) % 32 + 8 END AS m,"
         " k, e, p, c, lat, st, est, t FROM"
         " (SELECT g, (floor(exp(random() * ln(7))) - 1)::int AS r,"
         " (floor(exp(random() * ln(201))) - 1)::int AS k, (random() < 0.5)::int AS e,"
         " (200 + random() * 3000)::bigint AS p, (20 + random() * 800)::bigint AS c,"
         " (300 + random() * random() * 20000)::bigint AS lat,"
         " CASE WHEN random() < 0.03 THEN (ARRAY[429, 500, 502, 503])[1 + floor(random() * 4)::int]"
         " ELSE 200 END AS st, random() < 0.02 AS est,"
         " '" + lo + "'::timestamptz + (g::float8 / " + N + ") * interval '1 day' AS t"
         " FROM generate_series(0, " + N + " - 1) g) y) x;"
         "INSERT INTO usage_request_ids (request_id, created_at) SELECT request_id, created_at FROM usage_events"
         " WHERE created_at >= '" + lo + "' AND created_at < '" + lo + "'::timestamptz + interval '1 day';";
}

// The rollup rows of [lo, lo + 1 day) into `table`, grouped as
// tollgate_rollup_usage groups them (bucket = `bucket_sql` of created_at).
std::string RollupDaySql(const std::string& table, const std::string& bucket_sql, const std::string& lo) {
  const std::string keys = "b, model, provider, ep, acc, kid, ap";
  return "WITH r AS (SELECT u.*, " + bucket_sql + " AS b, coalesce(endpoint_id, '') AS ep,"
         " coalesce(account_id, 0) AS acc, coalesce(api_key_id, 0) AS kid, coalesce(app, '') AS ap,"
         " (NOT usage_estimated AND ttft_ms IS NOT NULL AND latency_ms > ttft_ms) AS g FROM usage_events u"
         " WHERE created_at >= '" + lo + "' AND created_at < '" + lo + "'::timestamptz + interval '1 day'),"
         " m AS (SELECT " + keys + ", count(*) AS requests, count(*) FILTER (WHERE status >= 400) AS errors,"
         " count(*) FILTER (WHERE status >= 500) AS server_errors, count(*) FILTER (WHERE cancelled) AS cancelled,"
         " count(*) FILTER (WHERE NOT usage_estimated) AS usage_reported_requests,"
         " coalesce(sum(prompt_tokens) FILTER (WHERE NOT usage_estimated), 0) AS prompt_tokens,"
         " coalesce(sum(completion_tokens) FILTER (WHERE NOT usage_estimated), 0) AS completion_tokens,"
         " coalesce(sum(cached_tokens) FILTER (WHERE NOT usage_estimated), 0) AS cached_tokens,"
         " coalesce(sum(cache_write_tokens) FILTER (WHERE NOT usage_estimated), 0) AS cache_write_tokens,"
         " coalesce(sum(reasoning_tokens) FILTER (WHERE NOT usage_estimated), 0) AS reasoning_tokens,"
         " coalesce(sum(prompt_tokens) FILTER (WHERE usage_estimated), 0) AS estimated_prompt_tokens,"
         " coalesce(sum(completion_tokens) FILTER (WHERE usage_estimated), 0) AS estimated_completion_tokens,"
         " sum(cost_nano_usd) AS cost_nano_usd, count(*) FILTER (WHERE byok) AS byok_requests,"
         " coalesce(sum(provider_cost_nano_usd) FILTER (WHERE byok), 0) AS provider_cost_nano_usd,"
         " sum(latency_ms) AS latency_ms_sum, count(ttft_ms) AS ttft_requests,"
         " coalesce(sum(ttft_ms), 0) AS ttft_ms_sum,"
         " coalesce(sum(completion_tokens) FILTER (WHERE g), 0) AS generation_tokens,"
         " coalesce(sum(latency_ms - ttft_ms) FILTER (WHERE g), 0) AS generation_ms"
         " FROM r GROUP BY 1, 2, 3, 4, 5, 6, 7),"
         " ls AS (SELECT " + keys + ", jsonb_object_agg(i, n) AS s FROM (SELECT " + keys +
         ", tollgate_sketch_index(latency_ms) AS i, count(*) AS n FROM r GROUP BY 1, 2, 3, 4, 5, 6, 7, 8) x"
         " GROUP BY 1, 2, 3, 4, 5, 6, 7),"
         " ts AS (SELECT " + keys + ", jsonb_object_agg(i, n) AS s FROM (SELECT " + keys +
         ", tollgate_sketch_index(ttft_ms) AS i, count(*) AS n FROM r WHERE ttft_ms IS NOT NULL"
         " GROUP BY 1, 2, 3, 4, 5, 6, 7, 8) x GROUP BY 1, 2, 3, 4, 5, 6, 7)"
         " INSERT INTO " + table + " SELECT m.b, m.model, m.provider, m.ep, m.acc, m.kid, m.ap, requests, errors,"
         " server_errors, cancelled, usage_reported_requests, prompt_tokens, completion_tokens, cached_tokens,"
         " cache_write_tokens, reasoning_tokens, estimated_prompt_tokens, estimated_completion_tokens,"
         " cost_nano_usd, byok_requests, provider_cost_nano_usd, latency_ms_sum, ls.s, ttft_requests, ttft_ms_sum,"
         " ts.s, generation_tokens, generation_ms"
         " FROM m JOIN ls USING (" + keys + ") LEFT JOIN ts USING (" + keys + ")";
}

constexpr const char* kQuarter = "date_bin('15 minutes', created_at, 'epoch'::timestamptz)";
constexpr const char* kHour = "date_bin('1 hour', created_at, 'epoch'::timestamptz)";
constexpr const char* kDay = "date_trunc('day', created_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'";

std::string Utc(system_clock::time_point t) {
  const auto secs = std::chrono::duration_cast<std::chrono::seconds>(t.time_since_epoch()).count();
  std::time_t tt = static_cast<std::time_t>(secs);
  std::tm tm{};
  gmtime_r(&tt, &tm);
  char buf[40];
  std::strftime(buf, sizeof(buf), "%Y-%m-%d %H:%M:%S+00", &tm);
  return buf;
}

// Nearest-rank percentile of sorted `v`.
double Percentile(const std::vector<double>& v, double p) {
  if (v.empty()) return 0;
  size_t rank = static_cast<size_t>(std::ceil(p * static_cast<double>(v.size())));
  return v[std::clamp<size_t>(rank, 1, v.size()) - 1];
}

struct QueryCase {
  std::string name;
  std::string scope;
  std::function<size_t()> run;  // returns a result size, to show it did work
};

UsageEvent IngestEvent(std::mt19937_64& rng, int64_t i, const std::string& tag) {
  UsageEvent e;
  const int r = static_cast<int>(std::floor(std::exp(std::uniform_real_distribution<>(0, 1)(rng) * std::log(7.0)))) - 1;
  const int k = static_cast<int>(std::floor(std::exp(std::uniform_real_distribution<>(0, 1)(rng) * std::log(201.0)))) - 1;
  const int m = r == 0 ? k % 3 : r == 1 ? 3 + k % 5 : (r * 7 + k * 3) % 32 + 8;  // as SeedDaySql
  const int ep = static_cast<int>(rng() % 2);
  e.request_id = "gen-ingest-" + tag + "-" + std::to_string(i);
  e.api_key_id = k + 1;
  e.account_id = k % 50 + 1;
  e.model = "vendor" + std::to_string(m % 8) + "/model-" + std::to_string(m);
  e.provider = "provider-" + std::to_string((m + ep) % 12);
  e.upstream_model = "model-" + std::to_string(m);
  e.endpoint_id = e.upstream_model + "-ep" + std::to_string(ep);
  e.usage = Usage{static_cast<int64_t>(200 + rng() % 3000), static_cast<int64_t>(20 + rng() % 800), 0, 0};
  e.cost = Money{e.usage.prompt_tokens * (m + 1) * 10 + e.usage.completion_tokens * (m + 1) * 40};
  e.latency_ms = static_cast<int64_t>(300 + rng() % 8000);
  e.ttft_ms = e.latency_ms / 5;
  e.status = 200;
  e.finish_reason = "stop";
  e.streamed = true;
  e.created_at = system_clock::now();
  e.finished_at = e.created_at;
  if (k % 25 < 20) {
    e.app = "https://app" + std::to_string(k % 20) + ".example";
    e.app_title = "App " + std::to_string(k % 20);
  }
  AttemptRecord a;
  a.attempt = 1;
  a.endpoint_id = e.endpoint_id;
  a.provider = e.provider;
  a.upstream_model = e.upstream_model;
  a.outcome = "served";
  a.status = 200;
  a.latency_ms = e.latency_ms;
  a.usage = e.usage;
  a.cost = e.cost;
  e.attempts.push_back(a);
  return e;
}

// Rows per second through a UsageRecorder of `batch_size` (no spool): all
// `n` rows queued, then timed until Flush() says they are in the database.
double IngestRate(const std::string& url, int batch_size, int64_t n, const std::string& tag) {
  UsageRecorderOptions options;
  options.flush_interval_ms = 1;
  options.batch_size = batch_size;
  auto recorder = UsageRecorder::Start(url, options);
  if (!recorder) Die("UsageRecorder: " + recorder.error().message);
  std::mt19937_64 rng(42);
  std::vector<UsageEvent> events;
  events.reserve(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) events.push_back(IngestEvent(rng, i, tag));
  const auto start = Clock::now();
  for (auto& e : events) (*recorder)->Record(std::move(e));
  (*recorder)->Flush();
  const double s = Seconds(start);
  if ((*recorder)->rows_written() != n) {
    Die("ingest: " + std::to_string((*recorder)->rows_written()) + " of " + std::to_string(n) + " rows written");
  }
  return static_cast<double>(n) / s;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: tollgate_stats_bench SERVER_URL [--rows N] [--days N] [--runs N]\n");
    return 2;
  }
  const std::string server_url = argv[1];
  int64_t rows = 10'000'000;
  int days = 30;
  int runs = 20;
  for (int i = 2; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    const long long v = std::atoll(argv[i + 1]);
    if (flag == "--rows") rows = v;
    else if (flag == "--days") days = static_cast<int>(v);
    else if (flag == "--runs") runs = static_cast<int>(v);
    else Die("unknown flag " + flag);
  }
  if (rows < days || days < 8 || runs < 1) Die("need --days >= 8, --rows >= days, --runs >= 1");
  const auto total_start = Clock::now();

  const std::string db_name = "tg_stats_bench";
  PGconn* admin = Connect(server_url);
  Exec(admin, "DROP DATABASE IF EXISTS " + db_name + " WITH (FORCE)");
  Exec(admin, "CREATE DATABASE " + db_name);
  const std::string url = DatabaseUrl(server_url, db_name);
  if (auto applied = ApplyMigrations(url); !applied) Die("migrate: " + applied.error().message);
  PGconn* conn = Connect(url);
  std::printf("server: PostgreSQL %s\n", Exec(conn, "SHOW server_version").c_str());

  // --- seed
  Exec(conn, "INSERT INTO accounts (name) SELECT 'acct-' || i FROM generate_series(1, 50) i;"
             "INSERT INTO api_keys (name, key_hash, account_id) SELECT 'key-' || i, md5('key-' || i),"
             " (i - 1) % 50 + 1 FROM generate_series(1, 200) i");
  // Partitions for the seeded days and a little beyond (the ingest writes at now()).
  Exec(conn, "SELECT tollgate_ensure_usage_partitions(current_date - " + std::to_string(days + 1) +
                 ", current_date + 2)");
  // Quieter hash joins for the rollup statements (the CTEs' row estimates
  // are poor, and a nested loop over them is quadratic).
  Exec(conn, "SET enable_nestloop = off; SET work_mem = '256MB'");
  const auto today = std::chrono::floor<std::chrono::days>(system_clock::now());
  double seed_raw_s = 0, seed_rollup_s = 0;
  for (int d = days; d >= 1; --d) {
    const std::string lo = Utc(today - std::chrono::days(d));
    const int64_t n = rows / days + (d == 1 ? rows % days : 0);
    auto t = Clock::now();
    Exec(conn, "BEGIN;" + SeedDaySql(d, lo, n) + "COMMIT");
    seed_raw_s += Seconds(t);
    t = Clock::now();
    Exec(conn, "BEGIN;" + RollupDaySql("usage_rollup_15m", kQuarter, lo) + ";" +
                   RollupDaySql("usage_rollup_1h", kHour, lo) + ";" + RollupDaySql("usage_rollup_1d", kDay, lo) +
                   ";COMMIT");
    seed_rollup_s += Seconds(t);
    if (d == days) {
      // The seeding rollup must equal the writer's: tollgate_rollup_usage on
      // the rows of the first two hours, into empty copies of the tables,
      // against the seeded quarter hours and hours of those two hours (the
      // daily rows come from the same statement with the day as the bucket).
      Exec(conn, "BEGIN; ALTER TABLE usage_rollup_15m RENAME TO seeded_15m;"
                 " ALTER TABLE usage_rollup_1h RENAME TO seeded_1h;"
                 " ALTER TABLE usage_rollup_1d RENAME TO seeded_1d;"
                 " CREATE TABLE usage_rollup_15m (LIKE seeded_15m INCLUDING ALL);"
                 " CREATE TABLE usage_rollup_1h (LIKE seeded_1h INCLUDING ALL);"
                 " CREATE TABLE usage_rollup_1d (LIKE seeded_1d INCLUDING ALL);"
                 " SELECT tollgate_rollup_usage(array_agg(u)) FROM usage_events u"
                 " WHERE created_at < '" + lo + "'::timestamptz + interval '2 hours'");
      std::string diff = "0";
      for (const std::string tier : {"15m", "1h"}) {
        const std::string seeded = "(SELECT * FROM seeded_" + tier + " WHERE bucket_start < '" + lo +
                                   "'::timestamptz + interval '2 hours')";
        const std::string d = Exec(
            conn, "SELECT (SELECT count(*) FROM (SELECT * FROM usage_rollup_" + tier + " EXCEPT SELECT * FROM " +
                      seeded + " s) a) + (SELECT count(*) FROM (SELECT * FROM " + seeded +
                      " s EXCEPT SELECT * FROM usage_rollup_" + tier + ") b)"
                      " + (SELECT CASE WHEN count(*) > 0 THEN 0 ELSE 1 END FROM " + seeded + " s)");
        if (d != "0") diff = tier + ": " + d;
      }
      Exec(conn, "ROLLBACK");
      if (diff != "0") Die("the seeding rollup differs from tollgate_rollup_usage in " + diff + " rows");
      std::printf("seed rollup == tollgate_rollup_usage on the first 2 hours (15m, 1h): yes\n");
    }
    std::fprintf(stderr, "seeded day -%d (%lld rows), %.0f s so far\n", d, static_cast<long long>(n),
                 seed_raw_s + seed_rollup_s);
  }
  auto t = Clock::now();
  Exec(conn, "VACUUM ANALYZE");
  const double vacuum_s = Seconds(t);
  std::printf("seeded %lld rows over %d UTC days: raw rows + request ids %.0f s, rollups %.0f s, "
              "VACUUM ANALYZE %.0f s\n",
              static_cast<long long>(rows), days, seed_raw_s, seed_rollup_s, vacuum_s);
  std::printf("rollup rows: 15m %s, 1h %s, 1d %s; database %s\n",
              Exec(conn, "SELECT count(*) FROM usage_rollup_15m").c_str(),
              Exec(conn, "SELECT count(*) FROM usage_rollup_1h").c_str(),
              Exec(conn, "SELECT count(*) FROM usage_rollup_1d").c_str(),
              Exec(conn, "SELECT pg_size_pretty(pg_database_size(current_database()))").c_str());

  // --- queries
  auto store = StatsStore::Connect(url, 1);
  if (!store) Die("StatsStore: " + store.error().message);
  StatsStore& s = **store;
  const auto now = today - std::chrono::days(1) + std::chrono::hours(13) + std::chrono::minutes(45);
  auto range = [&](std::chrono::hours w) { return StatsRange{now - w, now}; };
  auto previous = [&](std::chrono::hours w) { return StatsRange{now - 2 * w, now - w}; };
  const std::chrono::hours h24(24), d7(24 * 7), d30(24 * 30);
  const StatsScope admin_scope;
  StatsScope key_scope;
  key_scope.api_key_id = 1;
  auto check = [](auto result, const char* what) {
    if (!result) Die(std::string(what) + ": " + result.error().message);
    return std::move(*result);
  };
  std::vector<QueryCase> cases;
  const std::vector<std::pair<std::string, std::chrono::hours>> windows = {{"24h", h24}, {"7d", d7}, {"30d", d30}};
  for (const auto& window : windows) {
    const std::chrono::hours w = window.second;
    cases.push_back({"rankings /stats/models window=" + window.first, "global",
                     [&, w] { return check(s.ModelRankings(range(w), previous(w)), "rankings").size(); }});
  }
  const std::vector<std::pair<std::string, StatsScope>> scopes = {{"admin", admin_scope}, {"key 1", key_scope}};
  for (const auto& scoped : scopes) {
    const StatsScope scope = scoped.second;
    const std::string label = scoped.first;
    auto series = [&, scope](std::chrono::hours w, StatsGroup g, StatsBucket b, std::string tz, bool sketches) {
      return [&, scope, w, g, b, tz, sketches] {
        return check(s.Timeseries(range(w), scope, g, b, tz, sketches), "timeseries").series.size();
      };
    };
    auto cost = [&, scope](std::chrono::hours w, StatsGroup g) {
      return [&, scope, w, g] { return check(s.Aggregate(range(w), scope, g), "cost").size(); };
    };
    cases.push_back({"cost group_by=model window=30d", label, cost(d30, StatsGroup::kModel)});
    cases.push_back({"cost group_by=key window=30d", label, cost(d30, StatsGroup::kKey)});
    cases.push_back({"cost group_by=provider window=24h", label, cost(h24, StatsGroup::kProvider)});
    cases.push_back({"timeseries tokens by model, hour, 24h, UTC", label,
                     series(h24, StatsGroup::kModel, StatsBucket::kHour, "UTC", false)});
    cases.push_back({"timeseries tokens by model, hour, 7d, America/New_York", label,
                     series(d7, StatsGroup::kModel, StatsBucket::kHour, "America/New_York", false)});
    cases.push_back({"timeseries tokens by model, day, 30d, Asia/Kolkata", label,
                     series(d30, StatsGroup::kModel, StatsBucket::kDay, "Asia/Kolkata", false)});
    cases.push_back({"timeseries latency sketches, hour, 24h, UTC", label,
                     series(h24, StatsGroup::kNone, StatsBucket::kHour, "UTC", true)});
  }
  std::printf("\nqueries: %d runs each after one warm-up; \"now\" = %s\n\n", runs, Utc(now).c_str());
  std::printf("| query | scope | result rows | p50 ms | p99 ms |\n| --- | --- | ---: | ---: | ---: |\n");
  for (const QueryCase& c : cases) {
    const size_t size = c.run();
    std::vector<double> ms;
    for (int i = 0; i < runs; ++i) {
      const auto q = Clock::now();
      c.run();
      ms.push_back(Seconds(q) * 1000);
    }
    std::sort(ms.begin(), ms.end());
    std::printf("| %s | %s | %zu | %.1f | %.1f |\n", c.name.c_str(), c.scope.c_str(), size, Percentile(ms, 0.5),
                Percentile(ms, 0.99));
    std::fflush(stdout);
  }

  // --- ingest
  std::printf("\n| usage ingest (UsageRecorder, no spool) | batch size | rows | rows/s |\n| --- | ---: | ---: | ---: |\n");
  const std::string def = Exec(conn, "SELECT pg_get_functiondef('tollgate_rollup_usage(usage_events[])'::regprocedure)");
  for (bool rollups : {true, false}) {
    if (!rollups) {
      Exec(conn, "CREATE OR REPLACE FUNCTION tollgate_rollup_usage(p_rows usage_events[]) RETURNS bigint"
                 " LANGUAGE sql AS $$ SELECT cardinality(p_rows)::bigint $$");
    }
    for (auto [batch, n] : {std::pair{1, int64_t{2000}}, std::pair{200, int64_t{40000}}}) {
      const double rate = IngestRate(url, batch, n, std::string(rollups ? "r" : "n") + std::to_string(batch));
      std::printf("| %s | %d | %lld | %.0f |\n", rollups ? "rollups on" : "rollup function a no-op", batch,
                  static_cast<long long>(n), rate);
      std::fflush(stdout);
    }
  }
  Exec(conn, def);  // as it was

  PQfinish(conn);
  Exec(admin, "DROP DATABASE " + db_name + " WITH (FORCE)");
  PQfinish(admin);
  std::printf("\ntotal runtime %.0f s\n", Seconds(total_start));
  return 0;
}
