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
  r.authorization = std::string("Bearer ") + kAdmin;
  return r;
}

StatsRequest Key(std::string route, std::map<std::string, std::string> query = {}) {
  StatsRequest r = Admin(std::move(route), std::move(query));
  r.authorization = "Bearer tg-somekey";
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
  none.authorization.clear();
  EXPECT_EQ(HandleStats(none, nullptr).status, 401);
  StatsRequest wrong = Admin("/v1/stats/cost");
  wrong.authorization = "Bearer admin-token-0123456788";
  EXPECT_EQ(HandleStats(wrong, nullptr).status, 401);
  // Without a configured admin token nothing matches it, not even an empty bearer.
  StatsRequest off = Admin("/v1/stats/cost");
  off.admin_token.clear();
  off.authorization = "Bearer ";
  EXPECT_EQ(HandleStats(off, nullptr).status, 401);
  StatsRequest revoked = Admin("/v1/stats/models");
  revoked.authorization = "Bearer tg-revoked";
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
