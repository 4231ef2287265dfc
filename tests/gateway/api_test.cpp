#include "api.hpp"

#include <boost/json.hpp>
#include <gtest/gtest.h>

namespace tollgate::gateway {
namespace {
namespace json = boost::json;

TEST(Api, ParsesAChatRequest) {
  auto r = ParseChatRequest(R"({"model":"m","messages":[{"role":"system","content":"be brief"},
      {"role":"user","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]}],
      "max_tokens":10,"max_completion_tokens":5,"temperature":0.5,"top_p":0.9,"stop":["x","y"],"seed":7,
      "stream":true,"stream_options":{"include_usage":true},"user":"u1","frequency_penalty":0})",
                            RequestKind::kChat);
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->model, "m");
  ASSERT_EQ(r->messages.size(), 2u);
  EXPECT_EQ(r->messages[1].content, "ab");
  EXPECT_EQ(*r->max_tokens, 5);
  EXPECT_DOUBLE_EQ(*r->temperature, 0.5);
  EXPECT_EQ(r->stop.size(), 2u);
  EXPECT_EQ(*r->seed, 7u);
  EXPECT_TRUE(r->stream);
  EXPECT_TRUE(r->include_usage);
  EXPECT_EQ(r->user, "u1");
}

void ExpectRejected(std::string_view body, std::string_view param, RequestKind kind = RequestKind::kChat) {
  auto r = ParseChatRequest(body, kind);
  ASSERT_FALSE(r) << body;
  EXPECT_EQ(r.error().code, ErrorCode::kInvalidArgument);
  EXPECT_EQ(r.error().param, param) << r.error().message;
}

TEST(Api, RejectsBadRequestsNamingTheField) {
  ExpectRejected("{not json", "");
  ExpectRejected("[1]", "");
  ExpectRejected(R"({"messages":[]})", "model");
  ExpectRejected(R"({"model":"m"})", "messages");
  ExpectRejected(R"({"model":"m","messages":"hi"})", "messages");
  ExpectRejected(R"({"model":"m","messages":[]})", "messages");
  ExpectRejected(R"({"model":"m","messages":[{"role":"wizard","content":"x"}]})", "messages[0].role");
  ExpectRejected(R"({"model":"m","messages":[{"role":"user","content":5}]})", "messages[0].content");
  ExpectRejected(R"({"model":"m","messages":[{"role":"user","content":null}]})", "messages[0].content");
  ExpectRejected(R"({"model":"m","messages":[{"role":"user","content":"x"}],"temperature":3})", "temperature");
  ExpectRejected(R"({"model":"m","messages":[{"role":"user","content":"x"}],"max_tokens":0})", "max_tokens");
  ExpectRejected(R"({"model":"m","messages":[{"role":"user","content":"x"}],"stop":[1]})", "stop");
  ExpectRejected(R"({"model":"m","messages":[{"role":"user","content":"x"}],"n":2})", "n");
  ExpectRejected(R"({"model":"m","messages":[{"role":"user","content":"x"}],"stream":"yes"})", "stream");
  ExpectRejected(R"({"model":"m"})", "prompt", RequestKind::kCompletion);
}

TEST(Api, RangeErrorsReadAsPlainNumbers) {
  auto r = ParseChatRequest(R"({"model":"m","messages":[{"role":"user","content":"x"}],"temperature":3})",
                            RequestKind::kChat);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().message, "temperature must be between 0 and 2");
}

TEST(Api, RejectsDeeplyNestedJson) {
  std::string deep(100, '[');
  deep += std::string(100, ']');
  ExpectRejected(R"({"model":"m","messages":)" + deep + "}", "");
}

TEST(Api, RendersACompletionWithUsageAndCost) {
  ResponseMeta meta{"gen-1", 1700000000, "local/m", "Local", RequestKind::kChat};
  Completion c{FinishReason::kLength, Usage{5, 3, 0, 0}, true, ""};
  auto v = json::parse(RenderCompletion(meta, "hi", c, Money{1500}));
  EXPECT_EQ(v.at("id").as_string(), "gen-1");
  EXPECT_EQ(v.at("object").as_string(), "chat.completion");
  EXPECT_EQ(v.at("provider").as_string(), "Local");
  EXPECT_EQ(v.at("choices").at(0).at("message").at("content").as_string(), "hi");
  EXPECT_EQ(v.at("choices").at(0).at("finish_reason").as_string(), "length");
  EXPECT_EQ(v.at("usage").at("total_tokens").as_int64(), 8);
  EXPECT_DOUBLE_EQ(v.at("usage").at("cost").as_double(), 0.0000015);
}

TEST(Api, RendersStreamChunks) {
  ResponseMeta meta{"gen-1", 1, "m", "P", RequestKind::kChat};
  std::string first = RenderDeltaEvent(meta, "Hel", true);
  ASSERT_EQ(first.rfind("data: ", 0), 0u);
  ASSERT_EQ(first.substr(first.size() - 2), "\n\n");
  auto v = json::parse(first.substr(6));
  EXPECT_EQ(v.at("object").as_string(), "chat.completion.chunk");
  EXPECT_EQ(v.at("choices").at(0).at("delta").at("role").as_string(), "assistant");
  EXPECT_TRUE(v.at("choices").at(0).at("finish_reason").is_null());
  auto fin = json::parse(RenderFinishEvent(meta, FinishReason::kStop).substr(6));
  EXPECT_EQ(fin.at("choices").at(0).at("finish_reason").as_string(), "stop");
  auto usage = json::parse(RenderUsageEvent(meta, Usage{2, 3, 0, 0}, Money{0}).substr(6));
  EXPECT_TRUE(usage.at("choices").as_array().empty());
  EXPECT_EQ(usage.at("usage").at("completion_tokens").as_int64(), 3);

  ResponseMeta text_meta{"gen-2", 1, "m", "P", RequestKind::kCompletion};
  auto t = json::parse(RenderDeltaEvent(text_meta, "x", true).substr(6));
  EXPECT_EQ(t.at("object").as_string(), "text_completion");
  EXPECT_EQ(t.at("choices").at(0).at("text").as_string(), "x");
}

TEST(Api, ModelsListHasOpenRouterShape) {
  routing::Model m{"openai/gpt-4o-mini", "GPT-4o mini", 128000, 1700000000, {}};
  m.endpoints.push_back(routing::Endpoint{"openai", nullptr, "gpt-4o-mini",
                                          Pricing{TokenPrice{150'000'000}, TokenPrice{600'000'000},
                                                  TokenPrice{75'000'000}},
                                          128000});
  routing::Catalog catalog({m});
  auto v = json::parse(RenderModels(catalog));
  EXPECT_EQ(v.at("total_count").to_number<int64_t>(), 1);
  const auto& model = v.at("data").at(0);
  EXPECT_EQ(model.at("id").as_string(), "openai/gpt-4o-mini");
  EXPECT_EQ(model.at("pricing").at("prompt").as_string(), "0.00000015");
  EXPECT_EQ(model.at("pricing").at("completion").as_string(), "0.0000006");
  EXPECT_EQ(model.at("pricing").at("input_cache_read").as_string(), "0.000000075");
  EXPECT_EQ(model.at("context_length").as_int64(), 128000);
  EXPECT_TRUE(v.at("links").at("next").is_null());
}

class NamedProvider : public Provider {
 public:
  std::string_view Name() const override { return "OpenAI"; }
  void Start(const ProviderRequest&, std::shared_ptr<StreamSink>, std::stop_token) override {}
};

TEST(Api, ModelEndpointsListEachEndpointWithItsPrice) {
  NamedProvider provider;
  routing::Model m{"openai/gpt-4o-mini", "GPT-4o mini", 128000, 1700000000, {}};
  m.endpoints.push_back(routing::Endpoint{"openai", &provider, "gpt-4o-mini",
                                          Pricing{TokenPrice{150'000'000}, TokenPrice{600'000'000},
                                                  TokenPrice{150'000'000}},
                                          0});
  auto v = json::parse(RenderModelEndpoints(m));
  const auto& d = v.at("data");
  EXPECT_EQ(d.at("id").as_string(), "openai/gpt-4o-mini");
  const auto& e = d.at("endpoints").at(0);
  EXPECT_EQ(e.at("provider_name").as_string(), "OpenAI");
  EXPECT_EQ(e.at("context_length").as_int64(), 128000);
  EXPECT_EQ(e.at("pricing").at("prompt").as_string(), "0.00000015");
  EXPECT_FALSE(e.at("pricing").as_object().contains("input_cache_read"));
  EXPECT_TRUE(e.at("uptime_last_30m").is_null());
}

TEST(Api, GenerationReportsTheMeteredRecord) {
  billing::UsageEvent e;
  e.request_id = "gen-9";
  e.model = "local/m";
  e.provider = "Local";
  e.usage = Usage{5, 7, 0, 0};
  e.cost = Money{123};
  e.latency_ms = 40;
  e.ttft_ms = 10;
  e.finish_reason = "stop";
  e.created_at = std::chrono::system_clock::time_point(std::chrono::milliseconds(1700000000123));
  auto v = json::parse(RenderGeneration(e));
  const auto& d = v.at("data");
  EXPECT_EQ(d.at("id").as_string(), "gen-9");
  EXPECT_EQ(d.at("tokens_prompt").as_int64(), 5);
  EXPECT_EQ(d.at("tokens_completion").as_int64(), 7);
  EXPECT_EQ(d.at("latency").as_int64(), 40);
  EXPECT_EQ(d.at("generation_time").as_int64(), 30);
  EXPECT_EQ(d.at("created_at").as_string(), "2023-11-14T22:13:20.123Z");
  EXPECT_TRUE(d.at("upstream_inference_cost").is_null());
}

TEST(Api, RequestIdsAreUniqueAndPrefixed) {
  std::string a = NewRequestId(), b = NewRequestId();
  EXPECT_EQ(a.rfind("gen-", 0), 0u);
  EXPECT_NE(a, b);
}

}  // namespace
}  // namespace tollgate::gateway
