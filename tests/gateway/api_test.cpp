#include "api.hpp"
#include "responses.hpp"

#include <boost/json.hpp>
#include <gtest/gtest.h>

namespace tollgate::gateway {
namespace {
namespace json = boost::json;

class NamedProvider : public Provider {
 public:
  explicit NamedProvider(ParameterSet params = {Param::kMaxTokens, Param::kTools, Param::kToolChoice})
      : params_(params) {}
  std::string_view Name() const override { return "OpenAI"; }
  const ParameterSet& SupportedParameters() const override { return params_; }
  void Start(const ProviderRequest&, std::shared_ptr<StreamSink>, std::stop_token) override {}

 private:
  ParameterSet params_;
};

TEST(Api, ModelsListHasOpenRouterShape) {
  NamedProvider provider({Param::kMaxTokens, Param::kTools, Param::kImageInput});
  routing::Model m{"openai/gpt-4o-mini", "GPT-4o mini", 128000, 1700000000, {}};
  m.endpoints.push_back(routing::Endpoint{"openai", &provider, "gpt-4o-mini",
                                          Pricing{TokenPrice{150'000'000}, TokenPrice{600'000'000},
                                                  TokenPrice{75'000'000}, TokenPrice{150'000'000}},
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
  // What the model's providers declare, in OpenRouter's parameter names; the
  // image modality shows in the architecture, not as a parameter.
  EXPECT_EQ(json::serialize(model.at("supported_parameters")), R"(["tools","max_tokens"])");
  EXPECT_EQ(json::serialize(model.at("architecture").at("input_modalities")), R"(["text","image"])");
}

TEST(Api, ModelEndpointsListEachEndpointWithItsPrice) {
  NamedProvider provider;
  routing::Model m{"openai/gpt-4o-mini", "GPT-4o mini", 128000, 1700000000, {}};
  m.endpoints.push_back(routing::Endpoint{"openai", &provider, "gpt-4o-mini",
                                          Pricing{TokenPrice{150'000'000}, TokenPrice{600'000'000},
                                                  TokenPrice{150'000'000}, TokenPrice{150'000'000}},
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
  EXPECT_TRUE(e.at("supports_tool_choice").at("auto").as_bool());
}

TEST(Api, GenerationReportsTheMeteredRecord) {
  billing::UsageEvent e;
  e.request_id = "gen-9";
  e.model = "local/m";
  e.provider = "Local";
  e.usage = Usage{5, 7, 0, 0, 0};
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
  std::string a = NewRequestId(1700000000), b = NewRequestId(1700000000);
  EXPECT_EQ(a.rfind("gen-1700000000-", 0), 0u);
  EXPECT_EQ(a.size(), std::string("gen-1700000000-").size() + 20);
  EXPECT_NE(a, b);
}

TEST(Api, ErrorShapesFollowThePath) {
  EXPECT_EQ(ErrorFlavorForPath("/v1/chat/completions"), ErrorFlavor::kOpenAi);
  EXPECT_EQ(ErrorFlavorForPath("/api/v1/chat/completions"), ErrorFlavor::kOpenRouter);
  EXPECT_EQ(ErrorFlavorForPath("/v1/messages"), ErrorFlavor::kAnthropic);
  EXPECT_EQ(ErrorFlavorForPath("/api/v1/messages/count_tokens"), ErrorFlavor::kAnthropic);
}

}  // namespace
}  // namespace tollgate::gateway
