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

// A catalog endpoint; `supported` is what the provider declares, as the
// server sets it when the config does not narrow it.
routing::Endpoint MakeEndpoint(std::string id, std::string provider_id, Provider* provider, Pricing pricing,
                               int64_t context_length) {
  routing::Endpoint e;
  e.id = std::move(id);
  e.provider_id = std::move(provider_id);
  e.provider = provider;
  e.upstream_model = "upstream";
  e.pricing = pricing;
  e.context_length = context_length;
  e.supported = provider->SupportedParameters();
  return e;
}

Pricing Prices(int64_t prompt, int64_t completion, int64_t cached, int64_t write) {
  return Pricing{TokenPrice{prompt}, TokenPrice{completion}, TokenPrice{cached}, TokenPrice{write}};
}

TEST(Api, ModelsListHasOpenRouterShape) {
  NamedProvider provider({Param::kMaxTokens, Param::kTools, Param::kImageInput});
  routing::Model m{"openai/gpt-4o-mini", "GPT-4o mini", 128000, 1700000000, {}};
  m.endpoints.push_back(MakeEndpoint("openai/gpt-4o-mini", "openai", &provider,
                                     Prices(150'000'000, 600'000'000, 75'000'000, 150'000'000), 128000));
  routing::Catalog catalog({m});
  auto v = json::parse(RenderModels(catalog));
  EXPECT_EQ(v.at("total_count").to_number<int64_t>(), 1);
  const auto& model = v.at("data").at(0);
  EXPECT_EQ(model.at("id").as_string(), "openai/gpt-4o-mini");
  EXPECT_EQ(model.at("pricing").at("prompt").as_string(), "0.00000015");
  EXPECT_EQ(model.at("pricing").at("completion").as_string(), "0.0000006");
  EXPECT_EQ(model.at("pricing").at("input_cache_read").as_string(), "0.000000075");
  EXPECT_FALSE(model.at("pricing").as_object().contains("internal_reasoning"));
  EXPECT_FALSE(model.at("pricing").as_object().contains("request"));
  EXPECT_EQ(model.at("context_length").as_int64(), 128000);
  EXPECT_TRUE(model.at("top_provider").at("max_completion_tokens").is_null());
  EXPECT_TRUE(v.at("links").at("next").is_null());
  // What the model's providers declare, in OpenRouter's parameter names; the
  // image modality shows in the architecture, not as a parameter.
  EXPECT_EQ(json::serialize(model.at("supported_parameters")), R"(["tools","max_tokens"])");
  EXPECT_EQ(json::serialize(model.at("architecture").at("input_modalities")), R"(["text","image"])");
}

TEST(Api, ModelsListUsesTheCatalogsNewFields) {
  NamedProvider provider({Param::kMaxTokens, Param::kTools, Param::kTemperature});
  routing::Model m{"google/gemini-pro", "Gemini Pro", 1048576, 1700000000, {}};
  routing::Endpoint e = MakeEndpoint("google/gemini-pro", "google", &provider,
                                     Prices(1'250'000'000, 10'000'000'000, 310'000'000, 1'250'000'000), 1048576);
  e.pricing.reasoning = TokenPrice{12'000'000'000};
  e.pricing.per_request = Money{400'000};  // $0.0004
  e.tiers.push_back(routing::PriceTier{200000, Prices(2'500'000'000, 15'000'000'000, 625'000'000, 2'500'000'000)});
  e.max_output_tokens = 65536;
  e.supported = ParameterSet{Param::kMaxTokens, Param::kTemperature};  // narrowed by the config
  m.endpoints.push_back(e);
  routing::Catalog catalog({m});
  auto v = json::parse(RenderModels(catalog));
  const auto& model = v.at("data").at(0);
  EXPECT_EQ(model.at("top_provider").at("max_completion_tokens").as_int64(), 65536);
  EXPECT_EQ(model.at("top_provider").at("context_length").as_int64(), 1048576);
  EXPECT_EQ(json::serialize(model.at("supported_parameters")), R"(["temperature","max_tokens"])");
  const auto& pricing = model.at("pricing");
  EXPECT_EQ(pricing.at("internal_reasoning").as_string(), "0.000012");
  EXPECT_EQ(pricing.at("request").as_string(), "0.0004");  // USD per request
  EXPECT_FALSE(pricing.as_object().contains("input_cache_write"));
  // Context tiers as PricingOverride entries, every price stated.
  EXPECT_EQ(pricing.at("overrides"), json::parse(R"([{"prompt":"0.0000025","completion":"0.000015",
      "input_cache_read":"0.000000625","input_cache_write":"0.0000025","min_prompt_tokens":200000}])"));
}

TEST(Api, ModelEndpointsListEachEndpointWithItsPrice) {
  NamedProvider provider;
  routing::Model m{"openai/gpt-4o-mini", "GPT-4o mini", 128000, 1700000000, {}};
  m.endpoints.push_back(MakeEndpoint("openai/gpt-4o-mini", "openai", &provider,
                                     Prices(150'000'000, 600'000'000, 150'000'000, 150'000'000), 0));
  routing::Catalog catalog({m});
  routing::Router router(&catalog, routing::RouterOptions{});
  auto v = json::parse(RenderModelEndpoints(*catalog.Find("openai/gpt-4o-mini"), router, routing::SteadyTime{}));
  const auto& d = v.at("data");
  EXPECT_EQ(d.at("id").as_string(), "openai/gpt-4o-mini");
  EXPECT_EQ(d.at("tollgate").at("queued").as_int64(), 0);
  const auto& e = d.at("endpoints").at(0);
  EXPECT_EQ(e.at("provider_name").as_string(), "OpenAI");
  EXPECT_EQ(e.at("tag").as_string(), "openai/gpt-4o-mini");
  EXPECT_EQ(e.at("context_length").as_int64(), 128000);
  EXPECT_EQ(e.at("pricing").at("prompt").as_string(), "0.00000015");
  EXPECT_FALSE(e.at("pricing").as_object().contains("input_cache_read"));
  EXPECT_TRUE(e.at("supports_tool_choice").at("auto").as_bool());
  EXPECT_TRUE(e.at("quantization").is_null());
  EXPECT_TRUE(e.at("max_completion_tokens").is_null());
  // No call yet: no figures, and serving.
  EXPECT_TRUE(e.at("uptime_last_30m").is_null());
  EXPECT_TRUE(e.at("latency_last_30m").is_null());
  EXPECT_TRUE(e.at("throughput_last_30m").is_null());
  EXPECT_EQ(e.at("status").as_int64(), 0);
  const auto& t = e.at("tollgate");
  EXPECT_EQ(t.at("endpoint_id").as_string(), "openai/gpt-4o-mini");
  EXPECT_EQ(t.at("provider").as_string(), "openai");
  // The endpoint's context is unknown: the model's above (the SDK's
  // PublicEndpoint.context_length is a non-null integer), null here.
  EXPECT_TRUE(t.at("context_length").is_null());
  EXPECT_EQ(t.at("circuit").as_string(), "closed");
  EXPECT_EQ(t.at("availability").as_string(), "available");
  EXPECT_EQ(t.at("in_flight").as_int64(), 0);
  EXPECT_TRUE(t.at("max_concurrency").is_null());
  EXPECT_TRUE(t.at("p50_ttft_ms").is_null());
  EXPECT_EQ(t.at("data_policy"),
            json::parse(R"({"trains_on_prompts":false,"retains_prompts":false,"zero_data_retention":false})"));
}

TEST(Api, EndpointContextLengthsAreTheirOwnOrTheModels) {
  NamedProvider provider;
  routing::Model m{"meta/llama", "Llama", 131072, 1700000000, {}};
  m.endpoints.push_back(MakeEndpoint("groq/llama", "groq", &provider, Prices(1, 1, 1, 1), 8192));
  m.endpoints.push_back(MakeEndpoint("together/llama", "together", &provider, Prices(1, 1, 1, 1), 0));
  routing::Model unknown{"local/tiny", "Tiny", 0, 1700000000, {}};
  unknown.endpoints.push_back(MakeEndpoint("local/tiny", "local", &provider, Prices(1, 1, 1, 1), 0));
  routing::Catalog catalog({m, unknown});
  routing::Router router(&catalog, routing::RouterOptions{});
  auto v = json::parse(RenderModelEndpoints(*catalog.Find("meta/llama"), router, routing::SteadyTime{}));
  const auto& endpoints = v.at("data").at("endpoints");
  EXPECT_EQ(endpoints.at(0).at("context_length").as_int64(), 8192);
  EXPECT_EQ(endpoints.at(0).at("tollgate").at("context_length").as_int64(), 8192);
  EXPECT_EQ(endpoints.at(1).at("context_length").as_int64(), 131072);
  EXPECT_TRUE(endpoints.at(1).at("tollgate").at("context_length").is_null());
  // Nothing known at all: still an integer where the SDK requires one, null
  // in Tollgate's own figure and in the models list (Model.context_length is
  // nullable there).
  v = json::parse(RenderModelEndpoints(*catalog.Find("local/tiny"), router, routing::SteadyTime{}));
  const auto& tiny = v.at("data").at("endpoints").at(0);
  EXPECT_EQ(tiny.at("context_length").as_int64(), 0);
  EXPECT_TRUE(tiny.at("tollgate").at("context_length").is_null());
  auto models = json::parse(RenderModels(catalog));
  EXPECT_TRUE(models.at("data").at(1).at("context_length").is_null());
  EXPECT_TRUE(models.at("data").at(1).at("top_provider").at("context_length").is_null());
}

TEST(Api, ModelEndpointsCarryLiveFigures) {
  using std::chrono::milliseconds;
  NamedProvider provider;
  routing::Model m{"meta/llama", "Llama", 131072, 1700000000, {}};
  routing::Endpoint fast = MakeEndpoint("groq/llama", "groq", &provider, Prices(590'000'000, 790'000'000, 0, 0), 0);
  fast.quantization = "fp8";
  fast.max_output_tokens = 8192;
  fast.max_concurrency = 4;
  fast.data_policy.zero_data_retention = true;
  m.endpoints.push_back(fast);
  m.endpoints.push_back(MakeEndpoint("together/llama", "together", &provider, Prices(880'000'000, 880'000'000, 0, 0), 0));
  m.endpoints.push_back(MakeEndpoint("fireworks/llama", "fireworks", &provider, Prices(900'000'000, 900'000'000, 0, 0), 0));
  routing::Catalog catalog({m});
  routing::Router router(&catalog, routing::RouterOptions{});
  const routing::Model& model = *catalog.Find("meta/llama");
  const routing::SteadyTime t0 = routing::SteadyTime{} + std::chrono::hours(1);

  // Three served calls on the first endpoint: TTFT 100, 200 and 300 ms, then
  // 50 tokens in half a second (100 tokens/s).
  routing::SteadyTime now = t0;
  for (int ttft_ms : {100, 300, 200}) {
    routing::EndpointHealth& h = router.health(model.endpoints[0]);
    ASSERT_EQ(h.Acquire(now), routing::Availability::kAvailable);
    routing::AttemptReport r;
    r.outcome = routing::Outcome::kSuccess;
    r.started = now;
    r.first_token = now + milliseconds(ttft_ms);
    r.ended = *r.first_token + milliseconds(500);
    r.prompt_tokens = 10;
    r.completion_tokens = 50;
    h.Release(r);
    now += std::chrono::seconds(1);
  }
  ASSERT_EQ(router.health(model.endpoints[0]).Acquire(now), routing::Availability::kAvailable);  // one in flight
  // A 429 on the second endpoint cools it down; failures open the third's breaker.
  auto fail = [&](const routing::Endpoint& e, routing::Outcome outcome) {
    ASSERT_EQ(router.health(e).Acquire(now), routing::Availability::kAvailable);
    routing::AttemptReport r;
    r.outcome = outcome;
    r.started = now;
    r.ended = now + milliseconds(5);
    if (outcome == routing::Outcome::kRateLimited) r.retry_after = milliseconds(60'000);
    router.health(e).Release(r);
  };
  fail(model.endpoints[1], routing::Outcome::kRateLimited);
  for (int i = 0; i < routing::HealthOptions{}.consecutive_failures; ++i) {
    fail(model.endpoints[2], routing::Outcome::kFailure);
  }
  now += milliseconds(10);

  auto v = json::parse(RenderModelEndpoints(model, router, now));
  const auto& endpoints = v.at("data").at("endpoints");
  const auto& e0 = endpoints.at(0);
  // TTFTs 100, 200, 300 ms: interpolated percentiles.
  EXPECT_EQ(e0.at("latency_last_30m"), json::parse(R"({"p50":200.0,"p75":250.0,"p90":280.0,"p99":298.0})"));
  EXPECT_EQ(e0.at("throughput_last_30m").at("p50").to_number<double>(), 100.0);
  EXPECT_EQ(e0.at("uptime_last_30m").to_number<double>(), 100.0);
  EXPECT_EQ(e0.at("status").as_int64(), 0);
  EXPECT_EQ(e0.at("quantization").as_string(), "fp8");
  EXPECT_EQ(e0.at("max_completion_tokens").as_int64(), 8192);
  const auto& t0_extras = e0.at("tollgate");
  EXPECT_EQ(t0_extras.at("in_flight").as_int64(), 1);
  EXPECT_EQ(t0_extras.at("max_concurrency").as_int64(), 4);
  EXPECT_EQ(t0_extras.at("p50_ttft_ms").to_number<double>(), 200.0);
  EXPECT_EQ(t0_extras.at("p50_latency_ms").to_number<double>(), 700.0);
  EXPECT_TRUE(t0_extras.at("data_policy").at("zero_data_retention").as_bool());

  const auto& e1 = endpoints.at(1);
  EXPECT_EQ(e1.at("status").as_int64(), -1);
  EXPECT_EQ(e1.at("tollgate").at("availability").as_string(), "cooling_down");
  EXPECT_EQ(e1.at("uptime_last_30m").to_number<double>(), 0.0);
  EXPECT_TRUE(e1.at("latency_last_30m").is_null());  // timings come from served calls only

  const auto& e2 = endpoints.at(2);
  EXPECT_EQ(e2.at("status").as_int64(), -3);
  EXPECT_EQ(e2.at("tollgate").at("circuit").as_string(), "open");
  EXPECT_EQ(e2.at("tollgate").at("availability").as_string(), "circuit_open");
}

TEST(Api, ProvidersListEachProviderOnce) {
  class Named : public NamedProvider {
   public:
    explicit Named(std::string_view name) : name_(name) {}
    std::string_view Name() const override { return name_; }

   private:
    std::string_view name_;
  };
  Named openai("OpenAI"), groq("Groq"), local("Local");
  routing::Model a{"openai/gpt", "GPT", 0, 0, {}};
  a.endpoints.push_back(MakeEndpoint("openai/gpt", "openai", &openai, Prices(1, 1, 1, 1), 0));
  a.endpoints.push_back(MakeEndpoint("groq/gpt", "groq", &groq, Prices(1, 1, 1, 1), 0));
  routing::Model b{"meta/llama", "Llama", 0, 0, {}};
  b.endpoints.push_back(MakeEndpoint("groq/llama", "groq", &groq, Prices(1, 1, 1, 1), 0));
  b.endpoints.push_back(MakeEndpoint("local/llama", "local", &local, Prices(0, 0, 0, 0), 0));
  routing::Catalog catalog({a, b});
  auto v = json::parse(RenderProviders(catalog));
  EXPECT_EQ(v, json::parse(R"({"data":[
      {"slug":"openai","name":"OpenAI","privacy_policy_url":null,"terms_of_service_url":null,"status_page_url":null},
      {"slug":"groq","name":"Groq","privacy_policy_url":null,"terms_of_service_url":null,"status_page_url":null},
      {"slug":"local","name":"Local","privacy_policy_url":null,"terms_of_service_url":null,"status_page_url":null}]})"));
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

// ---------------------------------------------------------------- Responses API answers

ChatRequest ResponsesRequest(bool stream) {
  Result<wire::responses::Request> r =
      wire::responses::DecodeRequest(std::string(R"({"model":"m","input":"hi","stream":)") + (stream ? "true}" : "false}"));
  EXPECT_TRUE(r);
  return r->chat;
}

TEST(Api, ResponsesStreamEndsWithTheResponseAndItsStoredOutput) {
  ResponseEncoder encoder(ResponsesRequest(true), wire::ResponseMeta{"resp_1", 1700000000, "m", ""},
                          ErrorFlavor::kOpenAi, 3);
  encoder.Commit(CommitInfo{"OpenAI", "up", "e", "m", {}, {}, nullptr});
  std::string bytes = encoder.Event(TextDelta{0, "Hello"});
  bytes += encoder.Event(FinishDelta{0, FinishReason::kStop, "stop", ""});
  bytes += encoder.StreamEnd(CallSummary{Usage{3, 1}, false, Money{}, false});
  EXPECT_EQ(bytes.rfind("event: response.created\n", 0), 0u) << bytes;
  EXPECT_NE(bytes.find("event: response.completed\n"), std::string::npos);
  ASSERT_NE(encoder.responses_result(), nullptr);
  EXPECT_EQ(encoder.responses_result()->stored_output.size(), 1u);
  EXPECT_EQ(encoder.responses_result()->client.at("store"), true);

  // A response that could not be stored says so in its terminal event, and
  // nowhere else changes.
  const std::string marked = MarkNotStored(bytes, true);
  const std::size_t last = marked.rfind("event: ");
  EXPECT_EQ(marked.substr(0, last), bytes.substr(0, last));
  const json::value terminal = json::parse(marked.substr(marked.find("data: ", last) + 6));
  EXPECT_EQ(terminal.at("type"), "response.completed");
  EXPECT_EQ(terminal.at("response").at("store"), false);
  EXPECT_EQ(terminal.at("response").at("output").as_array().size(), 1u);
  EXPECT_EQ(MarkNotStored("not sse", true), "not sse");
}

TEST(Api, ResponsesWholeBodyAndErrorsInTheCallersTerms) {
  ResponseEncoder encoder(ResponsesRequest(false), wire::ResponseMeta{"resp_2", 1700000000, "m", ""},
                          ErrorFlavor::kOpenAi, 3);
  encoder.Commit(CommitInfo{"OpenAI", "up", "e", "m", {}, {}, nullptr});
  encoder.Accumulate(TextDelta{0, "Hi"});
  encoder.Accumulate(FinishDelta{0, FinishReason::kLength, "length", ""});
  const json::value body = json::parse(encoder.WholeBody(CallSummary{Usage{3, 1}, false, Money{}, false}));
  EXPECT_EQ(body.at("id"), "resp_2");
  EXPECT_EQ(body.at("status"), "incomplete");
  EXPECT_EQ(body.at("provider"), "OpenAI");
  EXPECT_EQ(json::parse(MarkNotStored(json::serialize(body), false)).at("store"), false);

  // The router names the conversation `messages`; a Responses caller sent `input`.
  const json::value error =
      json::parse(encoder.ErrorBody(Error{ErrorCode::kInvalidArgument, "too long", "messages", {}}));
  EXPECT_EQ(error.at("error").at("param"), "input");
  ResponseEncoder streamed(ResponsesRequest(true), wire::ResponseMeta{"resp_3", 1700000000, "m", ""},
                           ErrorFlavor::kOpenAi, 3);
  streamed.Commit(CommitInfo{"OpenAI", "up", "e", "m", {}, {}, nullptr});
  const std::string failed = streamed.StreamError(Error{ErrorCode::kInvalidArgument, "no images", "messages[0]", {}});
  EXPECT_NE(failed.find("event: response.failed"), std::string::npos) << failed;
  EXPECT_NE(failed.find(R"("param":"input")"), std::string::npos) << failed;
  // messages[i] counts canonical messages, not input items: plain `input`.
  EXPECT_EQ(InCallersTerms(ApiFlavor::kOpenAiResponses, Error{ErrorCode::kInvalidArgument, "x", "messages[3]", {}}).param,
            "input");
  EXPECT_EQ(InCallersTerms(ApiFlavor::kOpenAiChat, Error{ErrorCode::kInvalidArgument, "x", "messages[3]", {}}).param,
            "messages[3]");
}

}  // namespace
}  // namespace tollgate::gateway
