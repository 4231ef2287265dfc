// The stats API without a database: authentication, parameter validation
// (400 naming the parameter) and CSV quoting. With no StatsStore a request
// that passes both answers 503, which shows it got that far.
#include "stats_api.hpp"

#include <boost/json.hpp>
#include <gtest/gtest.h>

namespace tollgate::gateway {
namespace {

namespace json = boost::json;

constexpr const char* kAdmin = "admin-token-0123456789";

StatsRequest Admin(std::string route, std::map<std::string, std::string> query = {}) {
  StatsRequest r;
  r.route = std::move(route);
  r.query = std::move(query);
  r.admin_token = kAdmin;
  r.bearer = kAdmin;
  return r;
}

StatsRequest Key(std::string route, std::map<std::string, std::string> query = {}) {
  StatsRequest r = Admin(std::move(route), std::move(query));
  r.bearer = "tg-somekey";
  r.key_id = 7;
  r.account_id = 3;
  return r;
}

// The error's param (or "" when none) and status.
std::pair<int, std::string> ErrorOf(const StatsResponse& res) {
  json::value v = json::parse(res.body);
  const json::value& p = v.at("error").at("param");
  return {res.status, p.is_string() ? std::string(p.get_string()) : std::string()};
}

TEST(StatsApi, AnswersEveryRouteOnceAuthenticated) {
  for (const char* route : {"/v1/stats/models", "/v1/stats/cost", "/v1/stats/timeseries", "/v1/stats/providers",
                            "/v1/stats/calls", "/v1/datasets/rankings-daily", "/v1/datasets/app-rankings",
                            "/v1/activity"}) {
    EXPECT_TRUE(IsStatsRoute(route));
    EXPECT_EQ(HandleStats(Admin(route), nullptr).status, 503) << route;
    EXPECT_EQ(HandleStats(Key(route), nullptr).status, 503) << route;
  }
  EXPECT_FALSE(IsStatsRoute("/v1/stats"));
}

TEST(StatsApi, RefusesMissingWrongAndUnusableCredentials) {
  StatsRequest none = Admin("/v1/stats/cost");
  none.bearer.clear();
  EXPECT_EQ(HandleStats(none, nullptr).status, 401);
  StatsRequest wrong = Admin("/v1/stats/cost");
  wrong.bearer = "admin-token-0123456788";
  EXPECT_EQ(HandleStats(wrong, nullptr).status, 401);
  // Without a configured admin token nothing matches it, not even an empty bearer.
  StatsRequest off = Admin("/v1/stats/cost");
  off.admin_token.clear();
  off.bearer = "";
  EXPECT_EQ(HandleStats(off, nullptr).status, 401);
  StatsRequest revoked = Admin("/v1/stats/models");
  revoked.bearer = "tg-revoked";
  revoked.auth_error = Error{ErrorCode::kUnauthenticated, "this API key was revoked", "", "revoked_api_key"};
  StatsResponse res = HandleStats(revoked, nullptr);
  EXPECT_EQ(res.status, 401);
  EXPECT_NE(res.body.find("revoked_api_key"), std::string::npos);
}

TEST(StatsApi, AKeySeesOnlyItsOwnRows) {
  EXPECT_EQ(HandleStats(Key("/v1/stats/cost", {{"key_id", "7"}}), nullptr).status, 503);
  EXPECT_EQ(ErrorOf(HandleStats(Key("/v1/stats/cost", {{"key_id", "8"}}), nullptr)),
            (std::pair<int, std::string>{403, "key_id"}));
  EXPECT_EQ(ErrorOf(HandleStats(Key("/v1/stats/calls", {{"account_id", "4"}}), nullptr)),
            (std::pair<int, std::string>{403, "account_id"}));
  // The admin may filter by any key or account.
  EXPECT_EQ(HandleStats(Admin("/v1/stats/calls", {{"key_id", "8"}, {"account_id", "4"}}), nullptr).status, 503);
}

TEST(StatsApi, NamesTheBadParameter) {
  const std::vector<std::tuple<std::string, std::map<std::string, std::string>, std::string>> cases = {
      {"/v1/stats/models", {{"window", "2h"}}, "window"},
      {"/v1/stats/models", {{"format", "xml"}}, "format"},
      {"/v1/stats/cost", {{"group_by", "user"}}, "group_by"},
      {"/v1/stats/cost", {{"group_by", "none"}}, "group_by"},
      {"/v1/stats/cost", {{"start", "yesterday"}}, "start"},
      {"/v1/stats/cost", {{"start", "2026-12-05"}, {"end", "2026-12-04T00:00:00Z"}}, "start"},
      {"/v1/stats/cost", {{"end", "2026-02-30"}}, "end"},
      {"/v1/stats/cost", {{"key_id", "-1"}}, "key_id"},
      {"/v1/stats/timeseries", {{"metric", "latency_p99"}}, "metric"},
      {"/v1/stats/timeseries", {{"bucket", "minute"}}, "bucket"},
      {"/v1/stats/timeseries", {{"group_by", "user"}}, "group_by"},
      {"/v1/stats/calls", {{"limit", "0"}}, "limit"},
      {"/v1/stats/calls", {{"limit", "501"}}, "limit"},
      {"/v1/stats/calls", {{"limit", "5x"}}, "limit"},
      {"/v1/stats/calls", {{"status", "6xx"}}, "status"},
      {"/v1/stats/calls", {{"cursor", "abc"}}, "cursor"},
      {"/v1/datasets/rankings-daily", {{"period", "year"}}, "period"},
      {"/v1/datasets/rankings-daily", {{"start_date", "2026-12-05"}, {"end_date", "2026-12-01"}}, "start_date"},
      {"/v1/datasets/rankings-daily", {{"end_date", "12/05/2026"}}, "end_date"},
      {"/v1/datasets/rankings-daily", {{"modality", "image"}}, "modality"},
      {"/v1/datasets/app-rankings", {{"sort", "trending"}}, "sort"},
      {"/v1/datasets/app-rankings", {{"offset", "-1"}}, "offset"},
      {"/v1/activity", {{"date", "2026-13-01"}}, "date"},
      {"/v1/activity", {{"group_by", "workspace"}}, "group_by"},
  };
  for (const auto& [route, query, param] : cases) {
    StatsResponse res = HandleStats(Admin(route, query), nullptr);
    EXPECT_EQ(ErrorOf(res), (std::pair<int, std::string>{400, param})) << route << " " << res.body;
    EXPECT_EQ(res.content_type, "application/json");
  }
  // Valid forms pass validation (503: no database here).
  for (const auto& query : std::vector<std::map<std::string, std::string>>{
           {{"window", "1h"}}, {{"window", "30d"}, {"format", "csv"}},
           {{"start", "2026-12-01"}, {"end", "2026-12-04"}},
           {{"start", "2026-12-01T10:00:00+05:45"}}}) {
    EXPECT_EQ(HandleStats(Admin("/v1/stats/cost", query), nullptr).status, 503);
  }
  EXPECT_EQ(HandleStats(Admin("/v1/stats/calls", {{"status", "4xx"}, {"cursor", "1764892800000000.gen-x.y"}}), nullptr)
                .status,
            503);
}

TEST(StatsApi, RefusesTimesTheClockCannotHold) {
  // system_clock counts nanoseconds in an int64 (1677..2262): these used to wrap around.
  const std::vector<std::tuple<std::string, std::map<std::string, std::string>, std::string>> cases = {
      {"/v1/stats/cost", {{"start", "2300-01-01"}}, "start"},
      {"/v1/stats/cost", {{"end", "2300-01-02"}}, "end"},
      {"/v1/stats/cost", {{"start", "0000-01-01"}}, "start"},
      {"/v1/stats/cost", {{"end", "9999-12-30"}}, "end"},
      {"/v1/stats/cost", {{"start", "1999-12-31"}}, "start"},
      {"/v1/stats/cost", {{"end", "2200-01-01"}}, "end"},  // its end: 2200-01-02
      {"/v1/stats/cost", {{"start", "2300-01-01T00:00:00Z"}}, "start"},
      {"/v1/stats/cost", {{"end", "9999-12-31T23:59:59Z"}}, "end"},
      {"/v1/stats/cost", {{"start", "0001-01-01T00:00:00Z"}}, "start"},
      {"/v1/stats/cost", {{"start", "1970-01-01T00:00:00Z"}}, "start"},
      {"/v1/stats/timeseries", {{"start", "2262-04-12"}}, "start"},
      {"/v1/stats/calls", {{"cursor", "9223372036854775807.x"}}, "cursor"},
      {"/v1/stats/calls", {{"cursor", "-9223372036854775807.x"}}, "cursor"},
      {"/v1/stats/calls", {{"cursor", "-1.gen-x"}}, "cursor"},
      {"/v1/datasets/rankings-daily", {{"start_date", "0000-01-01"}}, "start_date"},
      {"/v1/datasets/rankings-daily", {{"end_date", "9999-12-30"}}, "end_date"},
      {"/v1/datasets/app-rankings", {{"end_date", "2300-01-01"}}, "end_date"},
  };
  for (const auto& [route, query, param] : cases) {
    StatsResponse res = HandleStats(Admin(route, query), nullptr);
    EXPECT_EQ(ErrorOf(res), (std::pair<int, std::string>{400, param})) << route << " " << res.body;
  }
  // The edges themselves are fine (503: no database here).
  for (const auto& query : std::vector<std::map<std::string, std::string>>{
           {{"start", "2000-01-01"}, {"end", "2000-01-02"}},
           {{"start", "2199-01-01"}, {"end", "2199-12-31"}},
           {{"start", "2199-12-31T23:00:00Z"}, {"end", "2200-01-01T00:00:00Z"}},
           {{"end", "2000-01-01T01:00:00Z"}}}) {  // its 24h window starts at 2000-01-01
    EXPECT_EQ(HandleStats(Admin("/v1/stats/cost", query), nullptr).status, 503);
  }
}

TEST(StatsApi, ActivityServesOnlyTheLast30UtcDays) {
  using namespace std::chrono;
  StatsRequest r = Key("/v1/activity");
  r.now = sys_days(year(2026) / 12 / 5) + hours(10);
  for (const char* date : {"1900-01-01", "2026-11-05", "2026-12-06", "2199-01-01"}) {
    r.query = {{"date", date}};
    EXPECT_EQ(ErrorOf(HandleStats(r, nullptr)), (std::pair<int, std::string>{400, "date"})) << date;
  }
  for (const char* date : {"2026-11-06", "2026-12-05"}) {
    r.query = {{"date", date}};
    EXPECT_EQ(HandleStats(r, nullptr).status, 503) << date;
  }
}

TEST(StatsApi, ErrorsTakeTheCallersFlavor) {
  // Under /api/v1 the server asks for OpenRouter's shape: an integer code,
  // which @openrouter/sdk needs to raise its typed errors.
  StatsRequest bad = Admin("/v1/stats/models", {{"window", "2h"}});
  bad.error_flavor = ErrorFlavor::kOpenRouter;
  json::value v = json::parse(HandleStats(bad, nullptr).body);
  EXPECT_EQ(v.at("error").at("code"), json::value(400));
  EXPECT_EQ(v.at("error").at("param"), json::value("window"));
  StatsRequest anonymous = Admin("/v1/activity");
  anonymous.bearer.clear();
  anonymous.error_flavor = ErrorFlavor::kOpenRouter;
  EXPECT_EQ(json::parse(HandleStats(anonymous, nullptr).body).at("error").at("code"), json::value(401));
  StatsRequest other = Key("/v1/stats/cost", {{"key_id", "8"}});
  other.error_flavor = ErrorFlavor::kOpenRouter;
  EXPECT_EQ(json::parse(HandleStats(other, nullptr).body).at("error").at("code"), json::value(403));
  StatsRequest down = Admin("/v1/stats/cost");
  down.error_flavor = ErrorFlavor::kOpenRouter;
  StatsResponse res = HandleStats(down, nullptr);
  EXPECT_EQ(res.status, 503);
  EXPECT_EQ(json::parse(res.body).at("error").at("code"), json::value(503));
  // Elsewhere (/v1) OpenAI's: code is a string or null.
  EXPECT_FALSE(json::parse(HandleStats(Admin("/v1/stats/models", {{"window", "2h"}}), nullptr).body)
                   .at("error").at("code").is_int64());
}

TEST(StatsApi, TextParametersMustBeShortUtf8) {
  for (const char* param : {"model", "provider", "endpoint", "app", "status", "cursor", "tz", "window"}) {
    for (const std::string& value : {std::string("\xff\xfe"), std::string("ok\xc3"), std::string("a\0b", 3),
                                     std::string("\xed\xa0\x80"), std::string(257, 'm')}) {
      const char* route = std::string(param) == "tz" ? "/v1/stats/timeseries" : "/v1/stats/calls";
      StatsResponse res = HandleStats(Key(route, {{param, value}}), nullptr);
      EXPECT_EQ(ErrorOf(res), (std::pair<int, std::string>{400, param})) << param << " " << res.body;
    }
  }
  // 256 bytes of UTF-8 pass the check.
  EXPECT_EQ(HandleStats(Key("/v1/stats/calls", {{"model", std::string(254, 'm') + "\xc3\xa9"}}), nullptr).status, 503);
  // A parameter whose name is not UTF-8 is not one of ours: ignored.
  EXPECT_EQ(HandleStats(Key("/v1/stats/calls", {{"\xff", "\xff"}}), nullptr).status, 503);
}

TEST(StatsApi, CsvTextCellsCannotBeFormulas) {
  // OWASP CSV Injection: = + - @ TAB CR at the start make a formula; a quote makes it text.
  EXPECT_EQ(CsvTextField("=HYPERLINK(\"http://x\")"), "\"'=HYPERLINK(\"\"http://x\"\")\"");
  EXPECT_EQ(CsvTextField("+1"), "'+1");
  EXPECT_EQ(CsvTextField("-2+3"), "'-2+3");
  EXPECT_EQ(CsvTextField("@SUM(A1)"), "'@SUM(A1)");
  EXPECT_EQ(CsvTextField("\tx"), "'\tx");
  EXPECT_EQ(CsvTextField("\rx"), "\"'\rx\"");
  EXPECT_EQ(CsvTextField("a=b"), "a=b");
  EXPECT_EQ(CsvTextField("mock/ok"), "mock/ok");
  EXPECT_EQ(CsvTextField(""), "");
  EXPECT_EQ(CsvTextField("a,b"), "\"a,b\"");
}

TEST(StatsApi, QuotesCsvFieldsPerRfc4180) {
  EXPECT_EQ(CsvField("plain"), "plain");
  EXPECT_EQ(CsvField(""), "");
  EXPECT_EQ(CsvField("a,b"), "\"a,b\"");
  EXPECT_EQ(CsvField("say \"hi\""), "\"say \"\"hi\"\"\"");
  EXPECT_EQ(CsvField("two\nlines"), "\"two\nlines\"");
  EXPECT_EQ(CsvField("cr\r"), "\"cr\r\"");
}

}  // namespace
}  // namespace tollgate::gateway
