// Usage statistics read from the rollups of migrations/006_stats.sql
// (usage_rollup_15m, usage_rollup_1h, usage_rollup_1d): rankings, cost, time
// series, provider stats, OpenRouter's datasets and activity; and the one
// raw-row query, the paged list of calls (usage_events). Served by
// gateway/src/stats_api.hpp.
//
// Every aggregate reads only rollup rows, each part of its range from the
// coarsest exact tier: whole UTC days from usage_rollup_1d (unbucketed
// totals, and day buckets in UTC); whole UTC hours from usage_rollup_1h when
// every hour of the range lies inside one bucket (unbucketed totals, and the
// buckets of zones whose offset is a whole number of hours over the range,
// decided once per query); quarter hours from usage_rollup_15m for the rest
// (the partial hours at the ends, and zones with :30/:45 offsets such as
// Asia/Kolkata). Results are the same whichever tiers are read (sums, and
// sketches merged bucket-wise). Ranges are rounded to quarter hours (start
// down, end up), the rollups' resolution.
//
// "Not reported": token measures (prompt_tokens ... reasoning_tokens) sum only
// calls whose usage the provider reported; usage_reported_requests counts
// them; estimated_* sum Tollgate's estimates for the others. A group with
// usage_reported_requests == 0 has no reported token counts at all (render
// null, not 0). Money is integer nano-USD (Money).
//
// Blocking (libpq): call from a worker thread. Thread-safe: a small pool of
// connections, each re-opened when it broke; a call retries once on a fresh
// connection when the old one was found broken (all queries are reads).
// Errors of every query: kUnavailable (database unreachable), kInternal (SQL
// error; a missing table says to run `tollgate migrate`).
#pragma once

#include "tollgate/core/error.hpp"
#include "tollgate/core/money.hpp"

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace tollgate::billing {

using StatsTime = std::chrono::system_clock::time_point;

// A DDSketch of millisecond values (migrations/006_stats.sql; Masson et al.,
// VLDB 2019), relative accuracy 2%: gamma = 1.02/0.98, bucket 0 holds values
// < 1 ms, bucket i >= 1 holds (gamma^(i-2), gamma^(i-1)].
struct LatencySketch {
  std::map<int, int64_t> buckets;  // index -> count

  static int Index(int64_t ms);  // tollgate_sketch_index
  void AddValue(int64_t ms) { ++buckets[Index(ms)]; }
  void Merge(const LatencySketch& other);
  int64_t count() const;
  // tollgate_sketch_quantile: the estimate (ms) of the bucket holding the
  // value of rank max(1, ceil(q n)); 0 for bucket 0, 2 gamma^(i-1)/(gamma+1)
  // otherwise (within 2% of every value in it). nullopt when empty.
  std::optional<double> Quantile(double q) const;
};

// Rollup measures of one group (and bucket). Sketches are filled only by the
// queries that say so.
struct StatsMeasures {
  int64_t requests = 0;
  int64_t errors = 0;         // status >= 400
  int64_t server_errors = 0;  // status >= 500
  int64_t cancelled = 0;
  int64_t usage_reported_requests = 0;
  int64_t prompt_tokens = 0;  // reported calls only (also the next four)
  int64_t completion_tokens = 0;
  int64_t cached_tokens = 0;
  int64_t cache_write_tokens = 0;
  int64_t reasoning_tokens = 0;
  int64_t estimated_prompt_tokens = 0;  // calls without reported usage: Tollgate's estimate
  int64_t estimated_completion_tokens = 0;
  Money cost;  // everything billed
  int64_t byok_requests = 0;
  Money provider_cost;  // BYOK: what the providers charged the accounts
  int64_t latency_ms_sum = 0;
  int64_t ttft_requests = 0;
  int64_t ttft_ms_sum = 0;
  int64_t generation_tokens = 0;  // throughput numerator (completion tokens)
  int64_t generation_ms = 0;      // throughput denominator (latency - ttft)
  LatencySketch latency;
  LatencySketch ttft;

  void Merge(const StatsMeasures& other);
  int64_t usage_not_reported_requests() const { return requests - usage_reported_requests; }
  int64_t estimated_tokens() const { return estimated_prompt_tokens + estimated_completion_tokens; }
  // Reported prompt + completion plus the estimated tokens: what was billed.
  int64_t total_tokens() const { return prompt_tokens + completion_tokens + estimated_tokens(); }
  // tokens/s = generation_tokens * 1000 / generation_ms; nullopt without generation time.
  std::optional<double> throughput() const;
};

// Who may see what: unset = any. Applied in SQL.
struct StatsScope {
  std::optional<int64_t> api_key_id;
  std::optional<int64_t> account_id;
};

// [start, end).
struct StatsRange {
  StatsTime start;
  StatsTime end;
};

enum class StatsGroup { kNone, kModel, kProvider, kEndpoint, kKey, kAccount, kApp };
// "none", "model", "provider", "endpoint", "key", "account", "app"; and back (nullopt: unknown).
std::string_view StatsGroupName(StatsGroup group);
std::optional<StatsGroup> ParseStatsGroup(std::string_view name);

// One group's row. `key`: the model id, provider name, endpoint id, key id,
// account id (decimal), app id; "" for none (no endpoint, no app, an
// unauthenticated call's key 0 is "0"). `label`: the key's name, account's
// name or app's title when known, else empty.
struct StatsGroupRow {
  std::string key;
  std::string label;
  StatsMeasures measures;
};

struct ModelRanking {
  std::string model;
  StatsMeasures current;
  StatsMeasures previous;  // zero when the model had no calls then
};

enum class StatsBucket { kHour, kDay };

struct TimeseriesBucket {
  StatsTime start;        // the bucket's first instant
  int utc_offset_minutes;  // the time zone's offset at `start` (for labels)
};

struct TimeseriesResult {
  std::vector<TimeseriesBucket> buckets;  // every bucket of the range, in order
  // Per group: measures per bucket index (buckets.size() entries; zero measures where no calls).
  struct Series {
    std::string key;
    std::string label;
    std::vector<StatsMeasures> values;
  };
  std::vector<Series> series;  // in no particular order
};

struct ProviderStatsRow {
  std::string provider;
  std::string endpoint_id;
  StatsMeasures measures;  // with latency and ttft sketches
};

// One usage_events row of the calls list.
struct CallRow {
  std::string request_id;
  StatsTime created_at;  // microseconds
  std::string model;
  std::string provider;
  std::string endpoint_id;  // "" when NULL
  int64_t api_key_id = 0;   // 0 when NULL
  int64_t account_id = 0;   // 0 when NULL
  std::string app;          // "" when NULL
  std::string app_title;
  int status = 0;
  std::optional<std::string> error_code;
  std::optional<std::string> finish_reason;
  bool streamed = false;
  bool usage_reported = true;  // NOT usage_estimated
  int64_t prompt_tokens = 0;
  int64_t completion_tokens = 0;
  int64_t cached_tokens = 0;
  int64_t cache_write_tokens = 0;
  int64_t reasoning_tokens = 0;
  Money cost;
  int64_t latency_ms = 0;
  std::optional<int64_t> ttft_ms;
};

// Keyset position: the last row of the previous page.
struct CallCursor {
  StatsTime created_at;
  std::string request_id;
};

struct CallFilter {
  StatsRange range;  // on created_at (partition pruning)
  StatsScope scope;
  std::optional<std::string> model;
  std::optional<std::string> provider;
  std::optional<std::string> endpoint_id;
  std::optional<std::string> app;
  // Status: an exact code, or a class range [status_min, status_max].
  std::optional<int> status_min;
  std::optional<int> status_max;
  std::optional<CallCursor> cursor;  // rows strictly older than it (created_at, request_id)
  int limit = 50;                    // 1..500
};

struct CallPage {
  std::vector<CallRow> rows;          // newest first: (created_at, request_id) descending
  std::optional<CallCursor> next;     // set when more rows follow
};

enum class DatasetPeriod { kDay, kWeek, kMonth };

// A UTC date, "YYYY-MM-DD".
struct RankingsDailyRow {
  std::string date;   // the period's first day (ISO week: Monday; month: the 1st)
  std::string model;  // or "other": the models outside the period's top 50 (every
                      // period with calls has one, last of its date; 0 when none)
  int64_t total_tokens = 0;  // prompt + completion, reported plus estimated
};

struct AppRankingRow {
  int64_t rank = 0;       // 1-based, absolute (offset 50's first row is 51)
  int64_t app_id = 0;     // stable number: the app's position in apps by (first_seen, app), from 1
  std::string app;        // the app id as stored (origin or "title:...")
  std::string app_name;   // its title, else the app id
  int64_t total_requests = 0;
  int64_t total_tokens = 0;
};

struct ActivityRow {
  std::string date;  // UTC day, "YYYY-MM-DD"
  std::string model;
  std::string endpoint_id;
  std::string provider;
  int64_t requests = 0;
  int64_t prompt_tokens = 0;      // reported plus estimated
  int64_t completion_tokens = 0;  // reported plus estimated
  int64_t reasoning_tokens = 0;
  Money cost;
  Money byok_provider_cost;
};

class StatsStore {
 public:
  // Connects once to check the URL and the server (libpq connection string or
  // URI; schema migrated). `pool_size` >= 1 connections at most are open.
  // Errors: kInvalidArgument (unparsable URL), kUnavailable (cannot connect).
  static Result<std::unique_ptr<StatsStore>> Connect(const std::string& database_url, int pool_size = 2);

  ~StatsStore();
  StatsStore(const StatsStore&) = delete;
  StatsStore& operator=(const StatsStore&) = delete;

  // Rounds a time to the quarter hour (down / up).
  static StatsTime FloorQuarter(StatsTime t);
  static StatsTime CeilQuarter(StatsTime t);

  // Measures per group over `range` (no sketches unless `with_sketches`),
  // labels filled; kNone gives one row with key "" (always, even when empty).
  Result<std::vector<StatsGroupRow>> Aggregate(const StatsRange& range, const StatsScope& scope, StatsGroup group,
                                               bool with_sketches = false);

  // Per model: `current` and `previous` windows, global (no scope: rankings
  // hold no key or account information). Models with calls in either.
  Result<std::vector<ModelRanking>> ModelRankings(const StatsRange& current, const StatsRange& previous);

  // Buckets of `bucket` in time zone `tz` (an IANA name known to the server's
  // pg_timezone_names; else kInvalidArgument naming it, param "tz") covering
  // `range`: local hours / local days (23 or 25 h on DST days), the first and
  // last possibly partial. Values are exact sums of rollup rows (every tz
  // offset is a multiple of 15 min; hour rows only where each UTC hour lies
  // in one bucket). At most `max_buckets`, else
  // kInvalidArgument (param "bucket").
  Result<TimeseriesResult> Timeseries(const StatsRange& range, const StatsScope& scope, StatsGroup group,
                                      StatsBucket bucket, const std::string& tz, bool with_sketches,
                                      int max_buckets = 2000);

  // Per (provider, endpoint) with sketches, ordered by provider, endpoint.
  Result<std::vector<ProviderStatsRow>> ProviderStats(const StatsRange& range, const StatsScope& scope);

  // The raw rows (usage_events), newest first, keyset-paged.
  Result<CallPage> Calls(const CallFilter& filter);

  // Daily token totals per model for UTC dates [start_date, end_date]
  // ("YYYY-MM-DD"), grouped by `period`, top 50 per period plus "other";
  // global. Ordered by date, then tokens desc, model; "other" last of its date.
  Result<std::vector<RankingsDailyRow>> RankingsDaily(const std::string& start_date, const std::string& end_date,
                                                      DatasetPeriod period);

  // Apps by tokens over UTC dates [start_date, end_date], rows offset ..
  // offset+limit-1 of the ranking (tokens desc, app asc); global.
  Result<std::vector<AppRankingRow>> AppRankings(const std::string& start_date, const std::string& end_date,
                                                 int limit, int offset);

  // Per UTC day, model, endpoint and provider over [start_date, end_date],
  // from usage_rollup_1d, scoped. Ordered by date desc, then model, endpoint.
  Result<std::vector<ActivityRow>> Activity(const std::string& start_date, const std::string& end_date,
                                            const StatsScope& scope);

  // Whether the server knows time zone `tz` (pg_timezone_names; cached).
  Result<bool> KnownTimeZone(const std::string& tz);

 private:
  struct Impl;
  explicit StatsStore(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace tollgate::billing
