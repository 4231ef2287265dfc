// Metrics (gateway/src/metrics.hpp): labels only from the catalog and fixed
// sets, tokens by kind with estimates apart, upstream error reasons.
#include "access_log.hpp"
#include "metrics.hpp"

#include <boost/json.hpp>
#include <gtest/gtest.h>

#include <regex>
#include <string>

namespace tollgate::gateway {
namespace {

int Series(const std::string& text, const std::string& name) {
  int n = 0;
  std::regex line("^" + name + "(\\{[^}]*\\})? ", std::regex::multiline);
  for (auto it = std::sregex_iterator(text.begin(), text.end(), line); it != std::sregex_iterator(); ++it) ++n;
  return n;
}

billing::UsageEvent Row(std::string model, std::string provider) {
  billing::UsageEvent e;
  e.request_id = "gen-1";
  e.model = std::move(model);
  e.provider = std::move(provider);
  e.usage = Usage{100, 20, 40, 5, 0};
  e.cost = Money{1'500'000'000};
  e.latency_ms = 1200;
  e.ttft_ms = 200;
  e.status = 200;
  return e;
}

TEST(Metrics, UnknownModelsProvidersAndStatusesShareOneSeries) {
  Metrics m;
  m.SetKnownLabels({"openai/gpt-4o-mini"}, {"OpenAI"});
  for (int i = 0; i < 50; ++i) {
    m.CountUnmeteredCall("bogus/model-" + std::to_string(i), 400);
    m.CountMeteredCall(Row("nope-" + std::to_string(i), "Someone " + std::to_string(i)));
    m.CountRequest("/v1/junk/" + std::to_string(i), 700 + i);
  }
  const std::string text = m.Serialize();
  EXPECT_EQ(Series(text, "tollgate_calls_total"), 2) << text;  // other/none/400 and other/other/200
  EXPECT_EQ(Series(text, "tollgate_http_requests_total"), 1);
  EXPECT_NE(text.find(R"(tollgate_http_requests_total{route="other",status="other"} 50)"), std::string::npos);
  EXPECT_NE(text.find(R"(tollgate_calls_total{model="other",provider="none",status="400"} 50)"), std::string::npos);
  EXPECT_EQ(text.find("bogus"), std::string::npos);
}

TEST(Metrics, TokensByKindKeepEstimatesApart) {
  Metrics m;
  m.SetKnownLabels({"a/b"}, {"P"});
  m.CountMeteredCall(Row("a/b", "P"));
  billing::UsageEvent estimated = Row("a/b", "P");
  estimated.usage_estimated = true;
  m.CountMeteredCall(estimated);
  const std::string text = m.Serialize();
  EXPECT_NE(text.find(R"(tollgate_tokens_total{kind="prompt",model="a/b",provider="P"} 100)"), std::string::npos) << text;
  EXPECT_NE(text.find(R"(tollgate_tokens_total{kind="cached_read",model="a/b",provider="P"} 40)"), std::string::npos);
  EXPECT_NE(text.find(R"(tollgate_tokens_total{kind="estimated_prompt",model="a/b",provider="P"} 100)"), std::string::npos);
  EXPECT_NE(text.find(R"(tollgate_usage_not_reported_total{model="a/b",provider="P"} 1)"), std::string::npos);
  EXPECT_NE(text.find(R"(tollgate_cost_usd_total{model="a/b",provider="P"} 3)"), std::string::npos);
  // 20 completion tokens in 1.0 s after the first token.
  EXPECT_NE(text.find(R"(tollgate_generation_tokens_per_second_bucket{model="a/b",provider="P",le="20"} 1)"),
            std::string::npos);
}

TEST(Metrics, UpstreamErrorReasonsComeFromAFixedSet) {
  billing::AttemptRecord a;
  a.outcome = "served";
  EXPECT_EQ(Metrics::UpstreamErrorReason(a), std::nullopt);
  a.outcome = "rate_limited";
  a.status = 429;
  EXPECT_EQ(Metrics::UpstreamErrorReason(a), "rate_limited");
  a.outcome = "failed";
  a.status = 502;
  a.error_code = "provider_credentials_rejected";
  EXPECT_EQ(Metrics::UpstreamErrorReason(a), "credentials");
  a.error_code = "whatever the upstream said";
  EXPECT_EQ(Metrics::UpstreamErrorReason(a), "bad_response");
  a.status = 504;
  EXPECT_EQ(Metrics::UpstreamErrorReason(a), "timeout");
  a.status = 503;
  EXPECT_EQ(Metrics::UpstreamErrorReason(a), "unavailable");
  a.outcome = "rejected";
  a.status = 400;
  EXPECT_EQ(Metrics::UpstreamErrorReason(a), "rejected");
}

TEST(Metrics, LocalEngineTotalsBecomeCounters) {
  Metrics m;
  Metrics::LocalEngineState s;
  s.generated_tokens = 10;
  s.kv_pages_total = 4;
  s.kv_pages_used = 1;
  m.SetLocalEngine("local/x", s);
  s.generated_tokens = 25;
  m.SetLocalEngine("local/x", s);
  const std::string text = m.Serialize();
  EXPECT_NE(text.find(R"(tollgate_local_engine_generated_tokens_total{engine="local/x"} 25)"), std::string::npos) << text;
  EXPECT_NE(text.find(R"(tollgate_local_engine_kv_cache_usage_ratio{engine="local/x"} 0.25)"), std::string::npos);
}

TEST(AccessLog, OneJsonObjectWithTheDocumentedFields) {
  billing::UsageEvent e = Row("a/b", "P");
  e.api_key_id = 7;
  e.ttft_ms.reset();
  const boost::json::object o = boost::json::parse(AccessLogLine(e, "a/b", true)).as_object();
  EXPECT_EQ(o.at("key_id").as_int64(), 7);
  EXPECT_TRUE(o.at("account_id").is_null());
  EXPECT_TRUE(o.at("ttft_ms").is_null());
  EXPECT_EQ(o.at("cost_nano_usd").as_int64(), 1'500'000'000);
  EXPECT_DOUBLE_EQ(o.at("cost_usd").as_double(), 1.5);
  EXPECT_TRUE(o.at("usage_reported").as_bool());
  for (const char* field : {"ts", "request_id", "model", "provider", "endpoint", "status", "prompt_tokens",
                            "completion_tokens", "cached_tokens", "cache_write_tokens", "reasoning_tokens",
                            "latency_ms", "streamed"}) {
    EXPECT_TRUE(o.contains(field)) << field;
  }
}

}  // namespace
}  // namespace tollgate::gateway
