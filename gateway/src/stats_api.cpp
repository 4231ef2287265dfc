#include "stats_api.hpp"

#include "tollgate/billing/account_store.hpp"
#include "tollgate/core/text.hpp"

#include <boost/json.hpp>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <iostream>
#include <variant>

namespace tollgate::gateway {
namespace {

namespace json = boost::json;
using billing::StatsGroup;
using billing::StatsMeasures;
using billing::StatsRange;
using billing::StatsScope;
using billing::StatsStore;
using billing::StatsTime;
using Clock = std::chrono::system_clock;

// ------------------------------------------------------------------ tables: one model, JSON or CSV

using Cell = std::variant<std::monostate, int64_t, double, std::string, bool>;
struct Field {
  std::string name;
  Cell value;
};
using Row = std::vector<Field>;

Cell OptInt(bool present, int64_t v) { return present ? Cell(v) : Cell(); }
Cell OptDouble(const std::optional<double>& v) { return v ? Cell(*v) : Cell(); }
Cell OptText(const std::string& v) { return v.empty() ? Cell() : Cell(v); }
Cell OptText(const std::optional<std::string>& v) { return v ? Cell(*v) : Cell(); }
Cell Usd(Money m) { return Cell(ToUsd(m)); }

std::string Number(double v) {
  if (!std::isfinite(v)) return "null";
  char buf[64];
  auto [end, ec] = std::to_chars(buf, buf + sizeof buf, v);
  return ec == std::errc() ? std::string(buf, end) : "null";
}

std::string JsonString(const std::string& s) { return json::serialize(json::string(s)); }

void AppendJson(std::string& out, const Cell& c) {
  if (std::holds_alternative<std::monostate>(c)) out += "null";
  if (const auto* i = std::get_if<int64_t>(&c)) out += std::to_string(*i);
  if (const auto* d = std::get_if<double>(&c)) out += Number(*d);
  if (const auto* s = std::get_if<std::string>(&c)) out += JsonString(*s);
  if (const auto* b = std::get_if<bool>(&c)) out += *b ? "true" : "false";
}

std::string JsonRow(const Row& row) {
  std::string out = "{";
  for (size_t i = 0; i < row.size(); ++i) {
    if (i) out += ',';
    out += JsonString(row[i].name) + ':';
    AppendJson(out, row[i].value);
  }
  return out + '}';
}

std::string JsonRows(const std::vector<Row>& rows) {
  std::string out = "[";
  for (size_t i = 0; i < rows.size(); ++i) out += (i ? "," : "") + JsonRow(rows[i]);
  return out + ']';
}

// A CSV cell, decided per column by the cell's type: numeric columns
// (int64, double) are written as numbers, negative ones included, so a
// spreadsheet reads them as numbers; text columns (model, key, label, app,
// title, error code, ...: names callers choose) go through CsvTextField,
// which neutralises formulas (OWASP "CSV Injection").
std::string CsvCell(const Cell& c) {
  if (const auto* i = std::get_if<int64_t>(&c)) return std::to_string(*i);
  if (const auto* d = std::get_if<double>(&c)) return std::isfinite(*d) ? Number(*d) : "";
  if (const auto* s = std::get_if<std::string>(&c)) return CsvTextField(*s);
  if (const auto* b = std::get_if<bool>(&c)) return *b ? "true" : "false";
  return "";  // null: an empty field
}

// `header` names the columns (also when there are no rows).
std::string Csv(const Row& header, const std::vector<Row>& rows) {
  std::string out;
  for (size_t i = 0; i < header.size(); ++i) out += (i ? "," : "") + CsvField(header[i].name);
  out += "\r\n";
  for (const Row& row : rows) {
    for (size_t i = 0; i < row.size(); ++i) out += (i ? "," : "") + CsvCell(row[i].value);
    out += "\r\n";
  }
  return out;
}

StatsResponse JsonReply(std::string body) { return StatsResponse{200, std::move(body), "application/json"}; }
StatsResponse CsvReply(std::string body) { return StatsResponse{200, std::move(body), "text/csv; charset=utf-8"}; }
// The error in the caller's flavor (OpenRouter's under /api/v1: an integer
// `code`, which @openrouter/sdk needs to raise its typed errors).
StatsResponse Fail(const StatsRequest& r, const Error& e) {
  return StatsResponse{HttpStatus(e.code), ErrorBody(e, r.error_flavor), "application/json"};
}

// One line on stderr, control characters flattened (a database message can
// span lines).
void LogStatsError(std::string_view what, std::string_view detail) {
  std::string line = "tollgate: stats: " + std::string(what) + ": " + ValidUtf8(detail.substr(0, 2000));
  for (char& c : line) {
    if (static_cast<unsigned char>(c) < 0x20) c = ' ';
  }
  std::cerr << line << '\n';
}

// A StatsStore error: its own parameter checks (tz, bucket count) go out as
// they are; the database's text never reaches the client (it can quote SQL
// and values of other rows): a generic 503 or 500, the details in the log.
StatsResponse StoreFail(const StatsRequest& r, const Error& e) {
  if (e.code == ErrorCode::kInvalidArgument) return Fail(r, e);
  if (!e.message.empty()) LogStatsError(r.route, e.message);
  if (e.code == ErrorCode::kUnavailable) {
    return Fail(r, Error{ErrorCode::kUnavailable, "the usage database is unavailable; try again", "", {}});
  }
  return Fail(r, Error{ErrorCode::kInternal, "internal error while reading usage statistics", "", {}});
}

// ------------------------------------------------------------------ time

// "YYYY-MM-DD" -> that UTC day.
std::optional<std::chrono::sys_days> ParseDate(std::string_view s) {
  if (s.size() != 10 || s[4] != '-' || s[7] != '-') return std::nullopt;
  int y = 0;
  unsigned m = 0, d = 0;
  auto digits = [&](size_t from, size_t n, auto& out) {
    for (size_t i = from; i < from + n; ++i) {
      if (s[i] < '0' || s[i] > '9') return false;
    }
    return std::from_chars(s.data() + from, s.data() + from + n, out).ec == std::errc();
  };
  if (!digits(0, 4, y) || !digits(5, 2, m) || !digits(8, 2, d)) return std::nullopt;
  std::chrono::year_month_day ymd{std::chrono::year(y), std::chrono::month(m), std::chrono::day(d)};
  if (!ymd.ok()) return std::nullopt;
  return std::chrono::sys_days(ymd);
}

std::string FormatDate(std::chrono::sys_days day) {
  std::chrono::year_month_day ymd(day);
  char buf[16];
  std::snprintf(buf, sizeof buf, "%04d-%02u-%02u", static_cast<int>(ymd.year()), static_cast<unsigned>(ymd.month()),
                static_cast<unsigned>(ymd.day()));
  return buf;
}

// RFC 3339 in UTC with milliseconds when there are any.
std::string FormatTime(StatsTime t) {
  using namespace std::chrono;
  const auto ms = floor<milliseconds>(t.time_since_epoch()).count() % 1000;
  std::string s = billing::FormatTimestamp(t);
  if (ms != 0 && s.size() > 1) {
    char buf[8];
    std::snprintf(buf, sizeof buf, ".%03lld", static_cast<long long>((ms + 1000) % 1000));
    s.insert(s.size() - 1, buf);
  }
  return s;
}

// Local wall time of `t` at `offset_minutes`, with the offset: "2026-12-04T00:00:00-05:00".
std::string FormatLocal(StatsTime t, int offset_minutes) {
  std::string s = billing::FormatTimestamp(t + std::chrono::minutes(offset_minutes));
  s.pop_back();  // 'Z'
  const int a = std::abs(offset_minutes);
  char buf[16];
  std::snprintf(buf, sizeof buf, "%c%02d:%02d", offset_minutes < 0 ? '-' : '+', a / 60, a % 60);
  return s + buf;
}

std::chrono::sys_days Today(StatsTime now) { return std::chrono::floor<std::chrono::days>(now); }

// The times the API accepts: [2000-01-01, 2200-01-01] UTC. Usage rows are
// never older, and system_clock (nanoseconds since 1970 in an int64) holds
// only 1677..2262: anything further would wrap around silently.
constexpr std::chrono::sys_days kFirstDay{std::chrono::year(2000) / 1 / 1};
constexpr std::chrono::sys_days kEndDay{std::chrono::year(2200) / 1 / 1};
static_assert(kEndDay < std::chrono::floor<std::chrono::days>(StatsTime::max()) &&
              kFirstDay > std::chrono::ceil<std::chrono::days>(StatsTime::min()));
constexpr const char* kRangeText = "between 2000-01-01 and 2200-01-01";

// ------------------------------------------------------------------ parameters

const std::string* Param(const StatsRequest& r, const std::string& name) {
  auto it = r.query.find(name);
  return it == r.query.end() || it->second.empty() ? nullptr : &it->second;
}

Result<std::optional<int64_t>> IntParam(const StatsRequest& r, const std::string& name, int64_t lo, int64_t hi) {
  const std::string* v = Param(r, name);
  if (!v) return std::optional<int64_t>();
  int64_t n = 0;
  auto [end, ec] = std::from_chars(v->data(), v->data() + v->size(), n);
  if (ec != std::errc() || end != v->data() + v->size() || n < lo || n > hi) {
    return InvalidArgument(name + " must be an integer from " + std::to_string(lo) + " to " + std::to_string(hi), name);
  }
  return std::optional<int64_t>(n);
}

// One of `allowed` (the first is the default).
Result<std::string> EnumParam(const StatsRequest& r, const std::string& name, const std::vector<std::string>& allowed) {
  const std::string* v = Param(r, name);
  if (!v) return allowed.front();
  if (std::find(allowed.begin(), allowed.end(), *v) != allowed.end()) return *v;
  std::string list;
  for (const auto& a : allowed) list += (list.empty() ? "" : "|") + a;
  return InvalidArgument(name + " must be one of " + list, name);
}

Result<void> Unsupported(const StatsRequest& r, const std::vector<std::string>& names) {
  for (const auto& n : names) {
    if (Param(r, n)) return InvalidArgument(n + " is not supported by Tollgate", n);
  }
  return {};
}

// Every parameter value is UTF-8 text of at most kMaxParamBytes bytes
// without NUL (PostgreSQL refuses anything else, and no value of this API is
// longer): 400 naming the parameter. A parameter whose name is not UTF-8 is
// none of ours and is ignored like any unknown one.
constexpr size_t kMaxParamBytes = 256;
Result<void> CheckText(const StatsRequest& r) {
  for (const auto& [name, value] : r.query) {
    if (name.size() > 64 || ValidUtf8(name) != name) continue;
    if (value.size() > kMaxParamBytes) {
      return InvalidArgument(name + " is longer than " + std::to_string(kMaxParamBytes) + " bytes", name);
    }
    if (value.find('\0') != std::string::npos || ValidUtf8(value) != value) {
      return InvalidArgument(name + " must be UTF-8 text", name);
    }
  }
  return {};
}

struct Window {
  StatsRange range;
  std::string name;  // "1h", "24h", "7d", "30d" or "custom"
};

Result<StatsTime> ParseTime(const StatsRequest& r, const std::string& name, bool end_of_day) {
  const std::string& v = *Param(r, name);
  auto out_of_range = [&] { return InvalidArgument(name + " must be " + kRangeText, name); };
  if (auto day = ParseDate(v)) {
    // Compared as days, before the conversion to the clock could overflow.
    const std::chrono::sys_days d = *day + std::chrono::days(end_of_day ? 1 : 0);
    if (d < kFirstDay || d > kEndDay) return out_of_range();
    return StatsTime(d);
  }
  // The year first: ParseTimestamp's result wraps for years the clock cannot hold.
  int year = 0;
  if (v.size() >= 4 && std::from_chars(v.data(), v.data() + 4, year).ec == std::errc() &&
      (year < 1999 || year > 2200)) {
    return out_of_range();
  }
  if (auto t = billing::ParseTimestamp(v)) {
    if (*t < StatsTime(kFirstDay) || *t > StatsTime(kEndDay)) return out_of_range();
    return *t;
  }
  return InvalidArgument(name + " must be an RFC 3339 time (2026-12-04T10:00:00Z) or a date (2026-12-04)", name);
}

Result<Window> ParseWindow(const StatsRequest& r) {
  using namespace std::chrono;
  auto name = EnumParam(r, "window", {"24h", "1h", "7d", "30d"});
  if (!name) return name.error();
  const hours length = *name == "1h" ? hours(1) : *name == "24h" ? hours(24) : *name == "7d" ? hours(24 * 7) : hours(24 * 30);
  Window w{{StatsTime(), StatsStore::CeilQuarter(r.now)}, *name};
  if (Param(r, "end")) {
    auto end = ParseTime(r, "end", true);
    if (!end) return end.error();
    w.range.end = *end;
    w.name = "custom";
  }
  w.range.start = std::max(w.range.end - length, StatsTime(kFirstDay));
  if (Param(r, "start")) {
    auto start = ParseTime(r, "start", false);
    if (!start) return start.error();
    w.range.start = *start;
    w.name = "custom";
  }
  if (w.range.start >= w.range.end) return InvalidArgument("start must be before end", "start");
  if (w.range.end - w.range.start > hours(24 * 3660)) return InvalidArgument("the range is longer than 10 years", "start");
  return w;
}

// A dataset date parameter ("YYYY-MM-DD" in [kFirstDay, kEndDay)); nullopt when absent.
Result<std::optional<std::chrono::sys_days>> DateParam(const StatsRequest& r, const std::string& name) {
  const std::string* v = Param(r, name);
  if (!v) return std::optional<std::chrono::sys_days>();
  auto d = ParseDate(*v);
  if (!d) return InvalidArgument(name + " must be a date (YYYY-MM-DD)", name);
  if (*d < kFirstDay || *d >= kEndDay) return InvalidArgument(name + " must be " + kRangeText, name);
  return d;
}

// Dataset dates: [start_date, end_date], default the last `days` UTC days up to today.
struct Dates {
  std::string start;
  std::string end;
};
Result<Dates> ParseDates(const StatsRequest& r, int days) {
  auto end_param = DateParam(r, "end_date");
  if (!end_param) return end_param.error();
  const std::chrono::sys_days end = end_param->value_or(Today(r.now));
  auto start_param = DateParam(r, "start_date");
  if (!start_param) return start_param.error();
  const std::chrono::sys_days start = start_param->value_or(end - std::chrono::days(days - 1));
  if (start > end) return InvalidArgument("start_date must not be after end_date", "start_date");
  if (end - start > std::chrono::days(3660)) return InvalidArgument("the range is longer than 10 years", "start_date");
  return Dates{FormatDate(start), FormatDate(end)};
}

// ------------------------------------------------------------------ authentication and scope

struct Caller {
  bool admin = false;
  int64_t key_id = 0;
  int64_t account_id = 0;
};

Result<Caller> Authenticate(const StatsRequest& r) {
  const std::string_view token = r.bearer;
  if (!r.admin_token.empty() && !token.empty() && billing::SecretEquals(token, r.admin_token)) {
    return Caller{true, 0, 0};
  }
  if (r.key_id) return Caller{false, *r.key_id, r.account_id.value_or(0)};
  if (r.auth_error) return *r.auth_error;
  if (token.empty()) {
    return Error{ErrorCode::kUnauthenticated,
                 "missing API key: send an API key or the admin token as 'Authorization: Bearer ...'", "",
                 "missing_api_key"};
  }
  return Error{ErrorCode::kUnauthenticated, "invalid API key", "", "invalid_api_key"};
}

// Admin: the key_id= / account_id= filters. A key: its own rows (a filter
// naming another key or account is refused).
Result<StatsScope> ScopeOf(const Caller& c, const StatsRequest& r) {
  auto key = IntParam(r, "key_id", 0, INT64_MAX);
  if (!key) return key.error();
  auto account = IntParam(r, "account_id", 0, INT64_MAX);
  if (!account) return account.error();
  if (c.admin) return StatsScope{*key, *account};
  if ((*key && **key != c.key_id) || (*account && **account != c.account_id)) {
    return Error{ErrorCode::kPermissionDenied, "an API key sees only its own usage", *key ? "key_id" : "account_id",
                 "permission_denied"};
  }
  return StatsScope{c.key_id, std::nullopt};
}

// ------------------------------------------------------------------ shared row parts

// Token fields, null when no call of the group had usage reported.
void PutTokens(Row& row, const StatsMeasures& m, bool detail) {
  const bool reported = m.usage_reported_requests > 0;
  row.push_back({"prompt_tokens", OptInt(reported, m.prompt_tokens)});
  row.push_back({"completion_tokens", OptInt(reported, m.completion_tokens)});
  if (detail) {
    row.push_back({"cached_tokens", OptInt(reported, m.cached_tokens)});
    row.push_back({"cache_write_tokens", OptInt(reported, m.cache_write_tokens)});
    row.push_back({"reasoning_tokens", OptInt(reported, m.reasoning_tokens)});
  }
  row.push_back({"estimated_tokens", m.estimated_tokens()});
}

std::string WindowJson(const Window& w) {
  return "\"window\":" + JsonString(w.name) + ",\"start\":" + JsonString(FormatTime(w.range.start)) +
         ",\"end\":" + JsonString(FormatTime(w.range.end));
}

// ------------------------------------------------------------------ routes

StatsResponse Models(const StatsRequest& r, StatsStore* store, bool csv) {
  auto w = ParseWindow(r);
  if (!w) return Fail(r, w.error());
  if (!store) return StoreFail(r, Error{ErrorCode::kUnavailable, "", "", {}});
  const StatsRange previous{w->range.start - (w->range.end - w->range.start), w->range.start};
  auto rankings = store->ModelRankings(w->range, previous);
  if (!rankings) return StoreFail(r, rankings.error());
  auto order = [](auto tokens) {
    return [tokens](const billing::ModelRanking* a, const billing::ModelRanking* b) {
      return tokens(*a) != tokens(*b) ? tokens(*a) > tokens(*b) : a->model < b->model;
    };
  };
  std::vector<const billing::ModelRanking*> now, before;
  for (const auto& m : *rankings) {
    if (m.current.requests > 0) now.push_back(&m);
    if (m.previous.requests > 0) before.push_back(&m);
  }
  std::sort(now.begin(), now.end(), order([](const billing::ModelRanking& m) { return m.current.total_tokens(); }));
  std::sort(before.begin(), before.end(), order([](const billing::ModelRanking& m) { return m.previous.total_tokens(); }));
  std::map<std::string, int64_t> previous_rank;
  for (size_t i = 0; i < before.size(); ++i) previous_rank[before[i]->model] = static_cast<int64_t>(i + 1);
  int64_t total_tokens = 0, total_requests = 0;
  for (const auto* m : now) {
    total_tokens += m->current.total_tokens();
    total_requests += m->current.requests;
  }
  std::vector<Row> rows;
  for (size_t i = 0; i < now.size(); ++i) {
    const StatsMeasures& c = now[i]->current;
    const int64_t tokens = c.total_tokens(), prev = now[i]->previous.total_tokens();
    Row row{{"rank", static_cast<int64_t>(i + 1)}, {"model", now[i]->model}, {"tokens", tokens}};
    PutTokens(row, c, false);
    row.push_back({"requests", c.requests});
    row.push_back({"usage_not_reported_requests", c.usage_not_reported_requests()});
    row.push_back({"share", total_tokens > 0 ? static_cast<double>(tokens) / static_cast<double>(total_tokens) : 0.0});
    row.push_back({"previous_tokens", prev});
    auto pr = previous_rank.find(now[i]->model);
    row.push_back({"previous_rank", pr == previous_rank.end() ? Cell() : Cell(pr->second)});
    row.push_back({"change", prev > 0 ? Cell(static_cast<double>(tokens - prev) / static_cast<double>(prev)) : Cell()});
    rows.push_back(std::move(row));
  }
  if (csv) {
    static const Row header = [] {
      Row h;
      for (const char* n : {"rank", "model", "tokens", "prompt_tokens", "completion_tokens", "estimated_tokens",
                            "requests", "usage_not_reported_requests", "share", "previous_tokens", "previous_rank",
                            "change"}) {
        h.push_back({n, {}});
      }
      return h;
    }();
    return CsvReply(Csv(header, rows));
  }
  return JsonReply("{" + WindowJson(*w) + ",\"total_tokens\":" + std::to_string(total_tokens) +
                   ",\"total_requests\":" + std::to_string(total_requests) + ",\"data\":" + JsonRows(rows) + "}");
}

Row CostRow(const std::string& key, const std::string& label, const StatsMeasures& m) {
  Row row{{"key", key}, {"label", label}, {"requests", m.requests}, {"errors", m.errors}};
  PutTokens(row, m, true);
  row.push_back({"usage_not_reported_requests", m.usage_not_reported_requests()});
  row.push_back({"cost_usd", Usd(m.cost)});
  row.push_back({"cost_nano_usd", m.cost.nano_usd});
  row.push_back({"byok_provider_cost_usd", Usd(m.provider_cost)});
  row.push_back({"byok_provider_cost_nano_usd", m.provider_cost.nano_usd});
  const int64_t tokens = m.total_tokens();
  row.push_back({"cost_per_million_tokens_usd",
                 tokens > 0 ? Cell(ToUsd(m.cost) / static_cast<double>(tokens) * 1e6) : Cell()});
  return row;
}

StatsResponse Cost(const StatsRequest& r, const Caller& caller, StatsStore* store, bool csv) {
  auto w = ParseWindow(r);
  if (!w) return Fail(r, w.error());
  auto group_name = EnumParam(r, "group_by", {"model", "provider", "endpoint", "key", "account", "app"});
  if (!group_name) return Fail(r, group_name.error());
  auto scope = ScopeOf(caller, r);
  if (!scope) return Fail(r, scope.error());
  if (!store) return StoreFail(r, Error{ErrorCode::kUnavailable, "", "", {}});
  auto groups = store->Aggregate(w->range, *scope, *billing::ParseStatsGroup(*group_name));
  if (!groups) return StoreFail(r, groups.error());
  std::sort(groups->begin(), groups->end(), [](const billing::StatsGroupRow& a, const billing::StatsGroupRow& b) {
    return a.measures.cost != b.measures.cost ? a.measures.cost > b.measures.cost : a.key < b.key;
  });
  StatsMeasures total;
  std::vector<Row> rows;
  for (const auto& g : *groups) {
    total.Merge(g.measures);
    rows.push_back(CostRow(g.key, g.label, g.measures));
  }
  if (csv) return CsvReply(Csv(CostRow("", "", {}), rows));
  return JsonReply("{\"group_by\":" + JsonString(*group_name) + "," + WindowJson(*w) +
                   ",\"total\":" + JsonRow(CostRow("total", "Total", total)) + ",\"data\":" + JsonRows(rows) + "}");
}

Cell MetricValue(const std::string& metric, const StatsMeasures& m) {
  if (metric == "tokens") return m.total_tokens();
  if (metric == "cost") return ToUsd(m.cost);
  if (metric == "requests") return m.requests;
  if (metric == "errors") return m.errors;
  if (metric == "latency_p50") return OptDouble(m.latency.Quantile(0.5));
  if (metric == "latency_p90") return OptDouble(m.latency.Quantile(0.9));
  if (metric == "ttft_p50") return OptDouble(m.ttft.Quantile(0.5));
  if (metric == "ttft_p90") return OptDouble(m.ttft.Quantile(0.9));
  return OptDouble(m.throughput());  // throughput
}

bool Additive(const std::string& metric) {
  return metric == "tokens" || metric == "cost" || metric == "requests" || metric == "errors";
}

double SortValue(const Cell& c) {
  if (const auto* i = std::get_if<int64_t>(&c)) return static_cast<double>(*i);
  if (const auto* d = std::get_if<double>(&c)) return *d;
  return -1;
}

StatsResponse Timeseries(const StatsRequest& r, const Caller& caller, StatsStore* store, bool csv) {
  constexpr size_t kMaxSeries = 20;
  auto w = ParseWindow(r);
  if (!w) return Fail(r, w.error());
  auto metric = EnumParam(r, "metric", {"tokens", "cost", "requests", "errors", "latency_p50", "latency_p90",
                                        "ttft_p50", "ttft_p90", "throughput"});
  if (!metric) return Fail(r, metric.error());
  auto group_name = EnumParam(r, "group_by", {"none", "model", "provider", "endpoint", "key", "account", "app"});
  if (!group_name) return Fail(r, group_name.error());
  const bool short_range = w->range.end - w->range.start <= std::chrono::hours(72);
  auto bucket = EnumParam(r, "bucket", short_range ? std::vector<std::string>{"hour", "day"}
                                                   : std::vector<std::string>{"day", "hour"});
  if (!bucket) return Fail(r, bucket.error());
  const std::string tz = Param(r, "tz") ? *Param(r, "tz") : "UTC";
  if (tz.size() > 64) return Fail(r, InvalidArgument("tz must be an IANA time zone name", "tz"));
  auto scope = ScopeOf(caller, r);
  if (!scope) return Fail(r, scope.error());
  if (!store) return StoreFail(r, Error{ErrorCode::kUnavailable, "", "", {}});
  const bool sketches = !Additive(*metric) && *metric != "throughput";
  auto ts = store->Timeseries(w->range, *scope, *billing::ParseStatsGroup(*group_name),
                              *bucket == "hour" ? billing::StatsBucket::kHour : billing::StatsBucket::kDay, tz,
                              sketches);
  if (!ts) return StoreFail(r, ts.error());

  struct Series {
    std::string key, label;
    std::vector<StatsMeasures> values;
    StatsMeasures total;
  };
  std::vector<Series> series;
  for (auto& s : ts->series) {
    Series out{s.key, s.label, std::move(s.values), {}};
    for (const auto& v : out.values) out.total.Merge(v);
    series.push_back(std::move(out));
  }
  if (*group_name == "none") {
    if (series.empty()) series.push_back(Series{"", "", std::vector<StatsMeasures>(ts->buckets.size()), {}});
    series[0].key = "all";
    series[0].label = "All";
  }
  // Top series by the metric's total (by requests for percentiles and
  // throughput); the rest merged into "other" (exact: measures and sketches add).
  const std::string& rank_metric = Additive(*metric) ? *metric : "requests";
  std::sort(series.begin(), series.end(), [&](const Series& a, const Series& b) {
    const double x = SortValue(MetricValue(rank_metric, a.total)), y = SortValue(MetricValue(rank_metric, b.total));
    return x != y ? x > y : a.key < b.key;
  });
  if (series.size() > kMaxSeries) {
    Series other{"other", "Other", std::vector<StatsMeasures>(ts->buckets.size()), {}};
    for (size_t i = kMaxSeries - 1; i < series.size(); ++i) {
      for (size_t b = 0; b < other.values.size(); ++b) other.values[b].Merge(series[i].values[b]);
      other.total.Merge(series[i].total);
    }
    series.resize(kMaxSeries - 1);
    series.push_back(std::move(other));
  }
  std::vector<std::string> labels;
  for (const auto& b : ts->buckets) labels.push_back(FormatLocal(b.start, b.utc_offset_minutes));
  if (csv) {
    std::vector<Row> rows;
    for (const auto& s : series) {
      for (size_t b = 0; b < labels.size(); ++b) {
        rows.push_back(Row{{"bucket", labels[b]}, {"key", s.key}, {"label", s.label},
                           {"value", MetricValue(*metric, s.values[b])}});
      }
    }
    return CsvReply(Csv(Row{{"bucket", {}}, {"key", {}}, {"label", {}}, {"value", {}}}, rows));
  }
  std::string out = "{\"metric\":" + JsonString(*metric) + ",\"group_by\":" + JsonString(*group_name) +
                    ",\"bucket\":" + JsonString(*bucket) + ",\"tz\":" + JsonString(tz) + "," + WindowJson(*w) +
                    ",\"buckets\":[";
  for (size_t b = 0; b < labels.size(); ++b) out += (b ? "," : "") + JsonString(labels[b]);
  out += "],\"series\":[";
  for (size_t i = 0; i < series.size(); ++i) {
    if (i) out += ',';
    out += "{\"key\":" + JsonString(series[i].key) + ",\"label\":" + JsonString(series[i].label) + ",\"total\":";
    AppendJson(out, MetricValue(*metric, series[i].total));
    out += ",\"values\":[";
    for (size_t b = 0; b < series[i].values.size(); ++b) {
      if (b) out += ',';
      AppendJson(out, MetricValue(*metric, series[i].values[b]));
    }
    out += "]}";
  }
  return JsonReply(out + "]}");
}

Row ProviderRow(const billing::ProviderStatsRow& p) {
  const StatsMeasures& m = p.measures;
  return Row{{"provider", p.provider},
             {"endpoint_id", p.endpoint_id},
             {"requests", m.requests},
             {"errors", m.errors},
             {"server_errors", m.server_errors},
             {"uptime", m.requests > 0 ? Cell(1.0 - static_cast<double>(m.server_errors) / static_cast<double>(m.requests))
                                       : Cell()},
             {"latency_p50_ms", OptDouble(m.latency.Quantile(0.5))},
             {"latency_p90_ms", OptDouble(m.latency.Quantile(0.9))},
             {"ttft_p50_ms", OptDouble(m.ttft.Quantile(0.5))},
             {"ttft_p90_ms", OptDouble(m.ttft.Quantile(0.9))},
             {"throughput_tokens_per_second", OptDouble(m.throughput())}};
}

StatsResponse Providers(const StatsRequest& r, const Caller& caller, StatsStore* store, bool csv) {
  auto w = ParseWindow(r);
  if (!w) return Fail(r, w.error());
  auto scope = ScopeOf(caller, r);
  if (!scope) return Fail(r, scope.error());
  if (!store) return StoreFail(r, Error{ErrorCode::kUnavailable, "", "", {}});
  auto providers = store->ProviderStats(w->range, *scope);
  if (!providers) return StoreFail(r, providers.error());
  std::vector<Row> rows;
  for (const auto& p : *providers) rows.push_back(ProviderRow(p));
  if (csv) return CsvReply(Csv(ProviderRow({}), rows));
  return JsonReply("{" + WindowJson(*w) + ",\"data\":" + JsonRows(rows) + "}");
}

Row CallJson(const billing::CallRow& c) {
  const bool reported = c.usage_reported;
  return Row{{"id", c.request_id},
             {"created_at", FormatTime(c.created_at)},
             {"model", c.model},
             {"provider", c.provider},
             {"endpoint_id", OptText(c.endpoint_id)},
             {"key_id", OptInt(c.api_key_id > 0, c.api_key_id)},
             {"account_id", OptInt(c.account_id > 0, c.account_id)},
             {"app", OptText(c.app)},
             {"app_title", OptText(c.app_title)},
             {"status", static_cast<int64_t>(c.status)},
             {"error_code", OptText(c.error_code)},
             {"finish_reason", OptText(c.finish_reason)},
             {"streamed", c.streamed},
             {"usage_reported", reported},
             {"prompt_tokens", OptInt(reported, c.prompt_tokens)},
             {"completion_tokens", OptInt(reported, c.completion_tokens)},
             {"cached_tokens", OptInt(reported, c.cached_tokens)},
             {"cache_write_tokens", OptInt(reported, c.cache_write_tokens)},
             {"reasoning_tokens", OptInt(reported, c.reasoning_tokens)},
             {"estimated_tokens", reported ? int64_t{0} : c.prompt_tokens + c.completion_tokens},
             {"cost_usd", Usd(c.cost)},
             {"cost_nano_usd", c.cost.nano_usd},
             {"latency_ms", c.latency_ms},
             {"ttft_ms", c.ttft_ms ? Cell(*c.ttft_ms) : Cell()},
             {"generation_url", "/api/v1/generation?id=" + c.request_id}};
}

StatsResponse Calls(const StatsRequest& r, const Caller& caller, StatsStore* store, bool csv) {
  auto w = ParseWindow(r);
  if (!w) return Fail(r, w.error());
  auto scope = ScopeOf(caller, r);
  if (!scope) return Fail(r, scope.error());
  billing::CallFilter f;
  f.range = w->range;
  f.scope = *scope;
  if (const std::string* v = Param(r, "model")) f.model = *v;
  if (const std::string* v = Param(r, "provider")) f.provider = *v;
  if (const std::string* v = Param(r, "endpoint")) f.endpoint_id = *v;
  if (const std::string* v = Param(r, "app")) f.app = *v;
  if (const std::string* v = Param(r, "status")) {
    int code = 0;
    auto [end, ec] = std::from_chars(v->data(), v->data() + v->size(), code);
    if (*v == "4xx") {
      f.status_min = 400, f.status_max = 499;
    } else if (*v == "5xx") {
      f.status_min = 500, f.status_max = 599;
    } else if (*v == "error") {
      f.status_min = 400;
    } else if (*v == "ok") {
      f.status_max = 399;
    } else if (ec == std::errc() && end == v->data() + v->size() && code >= 100 && code <= 599) {
      f.status_min = f.status_max = code;
    } else {
      return Fail(r, InvalidArgument("status must be an HTTP status (200), 4xx, 5xx, error or ok", "status"));
    }
  }
  auto limit = IntParam(r, "limit", 1, 500);
  if (!limit) return Fail(r, limit.error());
  f.limit = static_cast<int>(limit->value_or(50));
  if (const std::string* v = Param(r, "cursor")) {
    // "<created_at in epoch microseconds>.<request id>" (next_cursor as given).
    const size_t dot = v->find('.');
    int64_t micros = 0;
    auto [end, ec] = std::from_chars(v->data(), v->data() + (dot == std::string::npos ? 0 : dot), micros);
    // Bounded like start/end before it becomes a clock time (which could wrap).
    constexpr int64_t kFirstMicros =
        std::chrono::duration_cast<std::chrono::microseconds>(kFirstDay.time_since_epoch()).count();
    constexpr int64_t kEndMicros = std::chrono::duration_cast<std::chrono::microseconds>(kEndDay.time_since_epoch()).count();
    if (dot == std::string::npos || ec != std::errc() || end != v->data() + dot || dot + 1 >= v->size() ||
        micros < kFirstMicros || micros > kEndMicros) {
      return Fail(r, InvalidArgument("cursor must be a next_cursor value of this API", "cursor"));
    }
    f.cursor = billing::CallCursor{StatsTime(std::chrono::microseconds(micros)), v->substr(dot + 1)};
  }
  if (!store) return StoreFail(r, Error{ErrorCode::kUnavailable, "", "", {}});
  auto page = store->Calls(f);
  if (!page) return StoreFail(r, page.error());
  std::vector<Row> rows;
  for (const auto& c : page->rows) rows.push_back(CallJson(c));
  if (csv) return CsvReply(Csv(CallJson({}), rows));
  std::string next = "null";
  if (page->next) {
    const auto micros = std::chrono::duration_cast<std::chrono::microseconds>(page->next->created_at.time_since_epoch());
    next = JsonString(std::to_string(micros.count()) + "." + page->next->request_id);
  }
  return JsonReply("{\"data\":" + JsonRows(rows) + ",\"next_cursor\":" + next + "}");
}

std::string MetaJson(const StatsRequest& r, const Dates& d) {
  return "{\"as_of\":" + JsonString(billing::FormatTimestamp(r.now)) + ",\"start_date\":" + JsonString(d.start) +
         ",\"end_date\":" + JsonString(d.end) + ",\"version\":\"v1\"}";
}

StatsResponse RankingsDaily(const StatsRequest& r, StatsStore* store, bool csv) {
  if (auto ok = Unsupported(r, {"modality", "context_bucket", "category", "language_type"}); !ok) return Fail(r, ok.error());
  auto period = EnumParam(r, "period", {"day", "week", "month"});
  if (!period) return Fail(r, period.error());
  auto dates = ParseDates(r, 30);
  if (!dates) return Fail(r, dates.error());
  if (!store) return StoreFail(r, Error{ErrorCode::kUnavailable, "", "", {}});
  auto ranks = store->RankingsDaily(dates->start, dates->end,
                                    *period == "day"    ? billing::DatasetPeriod::kDay
                                    : *period == "week" ? billing::DatasetPeriod::kWeek
                                                        : billing::DatasetPeriod::kMonth);
  if (!ranks) return StoreFail(r, ranks.error());
  std::vector<Row> rows;
  for (const auto& d : *ranks) {
    // total_tokens is a string in OpenRouter's schema (it can exceed 2^53).
    rows.push_back(Row{{"date", d.date}, {"model_permaslug", d.model}, {"total_tokens", std::to_string(d.total_tokens)}});
  }
  if (csv) return CsvReply(Csv(Row{{"date", {}}, {"model_permaslug", {}}, {"total_tokens", {}}}, rows));
  return JsonReply("{\"data\":" + JsonRows(rows) + ",\"meta\":" + MetaJson(r, *dates) + "}");
}

StatsResponse AppRankings(const StatsRequest& r, StatsStore* store, bool csv) {
  if (auto ok = Unsupported(r, {"category", "subcategory"}); !ok) return Fail(r, ok.error());
  auto sort = EnumParam(r, "sort", {"popular"});
  if (!sort) return Fail(r, sort.error());
  auto limit = IntParam(r, "limit", 1, 500);
  if (!limit) return Fail(r, limit.error());
  auto offset = IntParam(r, "offset", 0, 1'000'000);
  if (!offset) return Fail(r, offset.error());
  auto dates = ParseDates(r, 30);
  if (!dates) return Fail(r, dates.error());
  if (!store) return StoreFail(r, Error{ErrorCode::kUnavailable, "", "", {}});
  auto apps = store->AppRankings(dates->start, dates->end, static_cast<int>(limit->value_or(50)),
                                 static_cast<int>(offset->value_or(0)));
  if (!apps) return StoreFail(r, apps.error());
  std::vector<Row> rows;
  for (const auto& a : *apps) {
    rows.push_back(Row{{"rank", a.rank}, {"app_id", a.app_id}, {"app_name", a.app_name}, {"app", a.app},
                       {"total_requests", a.total_requests}, {"total_tokens", std::to_string(a.total_tokens)}});
  }
  if (csv) {
    return CsvReply(Csv(Row{{"rank", {}}, {"app_id", {}}, {"app_name", {}}, {"app", {}}, {"total_requests", {}},
                            {"total_tokens", {}}},
                        rows));
  }
  return JsonReply("{\"data\":" + JsonRows(rows) + ",\"meta\":" + MetaJson(r, *dates) + "}");
}

Row ActivityJson(const billing::ActivityRow& a) {
  return Row{{"date", a.date},
             {"model", a.model},
             {"model_permaslug", a.model},
             {"endpoint_id", a.endpoint_id},
             {"provider_name", a.provider},
             {"usage", Usd(a.cost)},
             {"byok_usage_inference", Usd(a.byok_provider_cost)},
             {"requests", a.requests},
             {"prompt_tokens", a.prompt_tokens},
             {"completion_tokens", a.completion_tokens},
             {"reasoning_tokens", a.reasoning_tokens}};
}

StatsResponse Activity(const StatsRequest& r, const Caller& caller, StatsStore* store, bool csv) {
  if (auto ok = Unsupported(r, {"group_by", "workspace_id", "api_key_hash", "user_id"}); !ok) return Fail(r, ok.error());
  auto scope = ScopeOf(caller, r);
  if (!scope) return Fail(r, scope.error());
  // The last 30 UTC days, today included (OpenRouter: the 30 completed days).
  Dates dates{FormatDate(Today(r.now) - std::chrono::days(29)), FormatDate(Today(r.now))};
  if (const std::string* v = Param(r, "date")) {
    // OpenRouter: "a single UTC date in the last 30 days".
    auto day = ParseDate(*v);
    if (!day) return Fail(r, InvalidArgument("date must be a date (YYYY-MM-DD)", "date"));
    if (*day < Today(r.now) - std::chrono::days(29) || *day > Today(r.now)) {
      return Fail(r, InvalidArgument("date must be a UTC date in the last 30 days (" + dates.start + " to " + dates.end + ")",
                                     "date"));
    }
    dates = Dates{*v, *v};
  }
  if (!store) return StoreFail(r, Error{ErrorCode::kUnavailable, "", "", {}});
  auto activity = store->Activity(dates.start, dates.end, *scope);
  if (!activity) return StoreFail(r, activity.error());
  std::vector<Row> rows;
  for (const auto& a : *activity) rows.push_back(ActivityJson(a));
  if (csv) return CsvReply(Csv(ActivityJson({}), rows));
  return JsonReply("{\"data\":" + JsonRows(rows) + "}");
}

}  // namespace

std::string CsvField(const std::string& value) {
  if (value.find_first_of(",\"\r\n") == std::string::npos) return value;
  std::string out = "\"";
  for (char c : value) {
    if (c == '"') out += '"';
    out += c;
  }
  return out + '"';
}

std::string CsvTextField(const std::string& value) {
  // OWASP CSV Injection: a cell starting with = + - @ TAB or CR is taken for a
  // formula by spreadsheets; a leading single quote makes it text.
  if (!value.empty() && std::string_view("=+-@\t\r").find(value.front()) != std::string_view::npos) {
    return CsvField("'" + value);
  }
  return CsvField(value);
}

bool IsStatsRoute(const std::string& route) {
  return route == "/v1/stats/models" || route == "/v1/stats/cost" || route == "/v1/stats/timeseries" ||
         route == "/v1/stats/providers" || route == "/v1/stats/calls" || route == "/v1/datasets/rankings-daily" ||
         route == "/v1/datasets/app-rankings" || route == "/v1/activity";
}

StatsResponse HandleStats(const StatsRequest& r, StatsStore* store) {
  try {
    auto caller = Authenticate(r);
    if (!caller) return Fail(r, caller.error());
    if (auto ok = CheckText(r); !ok) return Fail(r, ok.error());
    auto format = EnumParam(r, "format", {"json", "csv"});
    if (!format) return Fail(r, format.error());
    const bool csv = *format == "csv";
    if (r.route == "/v1/stats/models") return Models(r, store, csv);
    if (r.route == "/v1/stats/cost") return Cost(r, *caller, store, csv);
    if (r.route == "/v1/stats/timeseries") return Timeseries(r, *caller, store, csv);
    if (r.route == "/v1/stats/providers") return Providers(r, *caller, store, csv);
    if (r.route == "/v1/stats/calls") return Calls(r, *caller, store, csv);
    if (r.route == "/v1/datasets/rankings-daily") return RankingsDaily(r, store, csv);
    if (r.route == "/v1/datasets/app-rankings") return AppRankings(r, store, csv);
    if (r.route == "/v1/activity") return Activity(r, *caller, store, csv);
    return Fail(r, Error{ErrorCode::kNotFound, "no route " + r.route.substr(0, 200), "", "unknown_url"});
  } catch (const std::exception& e) {
    LogStatsError(r.route, e.what());
    return Fail(r, Error{ErrorCode::kInternal, "internal error while reading usage statistics", "", {}});
  }
}

}  // namespace tollgate::gateway
