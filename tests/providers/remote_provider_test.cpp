// RemoteProvider's transport (kOpenAiCompatible, no preset unless a test says
// so) against a fake upstream on 127.0.0.1 that speaks the OpenAI streaming
// wire format (WIRE-FORMATS.md 3.1; platform.openai.com/docs/api-reference/chat-streaming)
// and splits each event across several TCP writes with small pauses.
// Covers pooling and reuse, TLS, timeouts, cancellation, the deadline, error
// statuses, cut-off streams, flow control, and what error messages may say.
// Per-API wire conformance lives in conformance_test.cpp.
#include "tollgate/providers/presets.hpp"
#include "tollgate/providers/remote_provider.hpp"

#include "fake_upstream.hpp"
#include "recording_sink.hpp"

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/json.hpp>
#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <fstream>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <thread>

namespace tollgate::providers {
namespace {

using namespace std::chrono_literals;
using testing::FakeRequest;
using testing::FakeResponder;
using testing::FakeUpstream;
using test_support::RecordingSink;

constexpr const char* kApiKey = "sk-test-SECRET-0123456789";
constexpr const char* kProviderName = "FakeAI";

std::string Chunk(std::string_view delta_json, std::string_view finish = "null") {
  return R"(data: {"id":"chatcmpl-abc","object":"chat.completion.chunk","created":1700000000,"model":"gpt-4o-mini-2024-07-18","choices":[{"index":0,"delta":)" +
         std::string(delta_json) + R"(,"finish_reason":)" + std::string(finish) + R"(}],"usage":null})" + "\n\n";
}

std::string ContentChunk(std::string_view text) { return Chunk(R"({"content":")" + std::string(text) + R"("})"); }

const std::string kUsageChunk =
    R"(data: {"id":"chatcmpl-abc","object":"chat.completion.chunk","created":1700000000,"model":"gpt-4o-mini-2024-07-18","choices":[],"usage":{"prompt_tokens":21,"completion_tokens":9,"total_tokens":30,"prompt_tokens_details":{"cached_tokens":16},"completion_tokens_details":{"reasoning_tokens":4}}})"
    "\n\n";

// Streams role, "Hel", "lo", " héllo 🙂", finish=stop, usage, [DONE]; each
// event split over three writes with 2 ms pauses, plus a keep-alive comment.
void StreamHello(const FakeRequest&, FakeResponder& r) {
  r.StartChunked();
  r.ChunkSplit(Chunk(R"({"role":"assistant","content":""})"));
  r.ChunkSplit(": OPENROUTER PROCESSING\n\n");
  r.ChunkSplit(ContentChunk("Hel"));
  r.ChunkSplit(ContentChunk("lo"));
  r.ChunkSplit(ContentChunk(" héllo 🙂"), 7, 1);  // cuts inside the UTF-8 bytes
  r.ChunkSplit(Chunk("{}", R"("stop")"));
  r.ChunkSplit(kUsageChunk);
  r.ChunkSplit("data: [DONE]\n\n");
  r.EndChunked();
}

Message Msg(Role role, std::string text) { return Message{role, {TextPart{std::move(text), {}}}, {}}; }

bool WaitFor(const std::function<bool()>& condition, std::chrono::milliseconds timeout = 5s) {
  const auto until = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < until) {
    if (condition()) return true;
    std::this_thread::sleep_for(2ms);
  }
  return condition();
}

class RemoteProviderTest : public ::testing::Test {
 protected:
  RemoteProviderTest() : work_(boost::asio::make_work_guard(ioc_)) {
    for (int i = 0; i < 2; ++i) threads_.emplace_back([this] { ioc_.run(); });
    request_.model = "openai/gpt-4o-mini";
    request_.messages = {Msg(Role::kSystem, "be brief"), Msg(Role::kUser, "Say hello")};
    request_.max_tokens = 32;
    request_.temperature = 0.2;
    request_.stream = false;
  }

  ~RemoteProviderTest() override {
    provider_.reset();
    work_.reset();
    ioc_.stop();
    for (auto& t : threads_) t.join();
  }

  RemoteProviderOptions Options(const std::string& base_url) {
    RemoteProviderOptions o;
    o.api = RemoteApi::kOpenAiCompatible;
    o.display_name = kProviderName;
    o.base_url = base_url;
    o.api_key = kApiKey;
    o.connect_timeout_ms = 2000;
    o.first_byte_timeout_ms = 3000;
    return o;
  }

  RemoteProvider& Make(RemoteProviderOptions options) {
    auto p = RemoteProvider::Create(std::move(options), ioc_);
    EXPECT_TRUE(p.has_value()) << (p.has_value() ? "" : p.error().message);
    provider_ = std::move(*p);
    return *provider_;
  }

  std::shared_ptr<RecordingSink> Run(std::stop_token cancel = {}, std::chrono::steady_clock::time_point deadline = {}) {
    auto sink = std::make_shared<RecordingSink>();
    Start(sink, std::move(cancel), deadline);
    EXPECT_TRUE(sink->WaitTerminal());
    return sink;
  }

  void Start(std::shared_ptr<StreamSink> sink, std::stop_token cancel = {},
             std::chrono::steady_clock::time_point deadline = {}) {
    ProviderRequest pr;
    pr.request = &request_;
    pr.upstream_model = "gpt-4o-mini-2024-07-18";
    pr.deadline = deadline;
    provider_->Start(pr, std::move(sink), std::move(cancel));
  }

  boost::asio::io_context ioc_;
  boost::asio::executor_work_guard<boost::asio::io_context::executor_type> work_;
  std::vector<std::thread> threads_;
  ChatRequest request_;
  std::unique_ptr<RemoteProvider> provider_;
};

// What every upstream-caused error must look like: it names the provider,
// and never the upstream's host or port, nor our key (remote_provider.hpp).
void ExpectCleanError(const Error& e, std::uint16_t port, std::string_view host = "127.0.0.1") {
  EXPECT_EQ(e.provider_name, kProviderName) << e.message;
  EXPECT_EQ(e.message.find(std::string(host)), std::string::npos) << e.message;
  EXPECT_EQ(e.message.find(std::to_string(port)), std::string::npos) << e.message;
  EXPECT_EQ(e.message.find(kApiKey), std::string::npos) << e.message;
  EXPECT_EQ(e.param.find(kApiKey), std::string::npos) << e.param;
  EXPECT_FALSE(e.message.empty());
}

TEST_F(RemoteProviderTest, StreamsCanonicalEventsInOrderWithUsageAndFinishReason) {
  FakeUpstream upstream(StreamHello);
  Make(Options(upstream.BaseUrl()));
  auto sink = Run();
  ASSERT_FALSE(sink->error()) << sink->error()->message;
  EXPECT_EQ(sink->deltas(), (std::vector<std::string>{"Hel", "lo", " héllo 🙂"}));
  const auto events = sink->events();
  ASSERT_EQ(events.size(), 5u);
  ASSERT_TRUE(std::holds_alternative<FinishDelta>(events[3]));
  EXPECT_EQ(std::get<FinishDelta>(events[3]).reason, FinishReason::kStop);
  EXPECT_EQ(std::get<FinishDelta>(events[3]).native_reason, "stop");
  ASSERT_TRUE(std::holds_alternative<UsageDelta>(events[4]));
  const Usage u = std::get<UsageDelta>(events[4]).usage;
  EXPECT_EQ(u.prompt_tokens, 21);
  EXPECT_EQ(u.completion_tokens, 9);
  EXPECT_EQ(u.cached_tokens, 16);
  EXPECT_EQ(u.reasoning_tokens, 4);
  ASSERT_TRUE(sink->completion());
  EXPECT_EQ(sink->completion()->finish_reason, FinishReason::kStop);
  EXPECT_TRUE(sink->completion()->usage_known);
  EXPECT_EQ(sink->terminal_count(), 1);
  EXPECT_FALSE(sink->misbehaved());
  EXPECT_EQ(provider_->Name(), kProviderName);
}

TEST_F(RemoteProviderTest, SendsAStreamingRequestWithUsageAndBearerKey) {
  FakeUpstream upstream(StreamHello);
  auto options = Options(upstream.BaseUrl());
  options.extra_headers = {{"HTTP-Referer", "https://tollgate.example"}, {"X-Title", "Tollgate"}};
  Make(options);
  auto sink = Run();
  ASSERT_TRUE(sink->completion());
  const auto requests = upstream.requests();
  ASSERT_EQ(requests.size(), 1u);
  const FakeRequest& req = requests[0];
  EXPECT_EQ(req.method, "POST");
  EXPECT_EQ(req.target, "/v1/chat/completions");
  EXPECT_EQ(req.headers.at("authorization"), std::string("Bearer ") + kApiKey);
  EXPECT_EQ(req.headers.at("content-type"), "application/json");
  EXPECT_EQ(req.headers.at("accept"), "text/event-stream");
  EXPECT_EQ(req.headers.at("host"), "127.0.0.1:" + std::to_string(upstream.port()));
  EXPECT_EQ(req.headers.at("x-title"), "Tollgate");
  EXPECT_EQ(req.headers.at("http-referer"), "https://tollgate.example");
  const auto body = boost::json::parse(req.body).as_object();
  EXPECT_EQ(body.at("model").as_string(), "gpt-4o-mini-2024-07-18");
  EXPECT_EQ(body.at("stream").as_bool(), true);  // although the caller did not ask to stream
  EXPECT_EQ(body.at("stream_options").at("include_usage").as_bool(), true);
  ASSERT_EQ(body.at("messages").as_array().size(), 2u);
  EXPECT_EQ(body.at("messages").at(0).at("role").as_string(), "system");
  EXPECT_EQ(body.at("max_tokens").as_int64(), 32);  // generic server: as the caller wrote it
  EXPECT_EQ(body.at("temperature").as_double(), 0.2);
}

TEST_F(RemoteProviderTest, NoAuthorizationHeaderWithoutKey) {
  FakeUpstream upstream(StreamHello);
  auto options = Options(upstream.BaseUrl());
  options.api_key.clear();
  Make(options);
  auto sink = Run();
  ASSERT_TRUE(sink->completion());
  EXPECT_EQ(upstream.requests().at(0).headers.count("authorization"), 0u);
}

TEST_F(RemoteProviderTest, BaseUrlQueryIsKeptAfterTheEndpointPath) {
  // Azure OpenAI style: api-version in the query (remote_provider.hpp).
  FakeUpstream upstream(StreamHello);
  Make(Options("http://127.0.0.1:" + std::to_string(upstream.port()) + "/openai/deployments/d1?api-version=2024-06-01"));
  ASSERT_TRUE(Run()->completion());
  EXPECT_EQ(upstream.requests().at(0).target, "/openai/deployments/d1/chat/completions?api-version=2024-06-01");
}

TEST_F(RemoteProviderTest, PresetsApplyTheirQuirks) {
  FakeUpstream upstream(StreamHello);
  request_.seed = 42;
  request_.messages.insert(request_.messages.begin() + 1, Msg(Role::kDeveloper, "dev note"));
  {
    // OpenAI: max_completion_tokens (reasoning models reject max_tokens),
    // developer messages kept.
    auto options = Options(upstream.BaseUrl());
    options.preset = "openai";
    Make(options);
    ASSERT_TRUE(Run()->completion());
    const auto body = boost::json::parse(upstream.requests().back().body).as_object();
    EXPECT_EQ(body.at("max_completion_tokens").as_int64(), 32);
    EXPECT_FALSE(body.contains("max_tokens"));
    EXPECT_EQ(body.at("messages").at(1).at("role").as_string(), "developer");
    EXPECT_EQ(body.at("seed").as_int64(), 42);
  }
  {
    // Mistral: `random_seed`, developer messages sent as system.
    auto options = Options(upstream.BaseUrl());
    options.preset = "mistral";
    Make(options);
    ASSERT_TRUE(Run()->completion());
    const auto body = boost::json::parse(upstream.requests().back().body).as_object();
    EXPECT_EQ(body.at("random_seed").as_int64(), 42);
    EXPECT_FALSE(body.contains("seed"));
    EXPECT_EQ(body.at("messages").at(1).at("role").as_string(), "system");
    EXPECT_EQ(body.at("max_tokens").as_int64(), 32);
  }
  EXPECT_EQ(provider_->Name(), kProviderName);  // display_name wins over the preset's
}

// Every preset, with every parameter a caller can set: what the gateway
// leaves after dropping the undeclared ones (core/parameters.hpp) is all the
// upstream gets, under the names and with the quirks its API documents.
TEST_F(RemoteProviderTest, EveryPresetSendsOnlyWhatItDeclaresInItsOwnSpelling) {
  FakeUpstream upstream(StreamHello);
  ChatRequest full = request_;
  full.messages.insert(full.messages.begin() + 1, Msg(Role::kDeveloper, "dev note"));
  full.tools.push_back(ToolDefinition{"get_weather", "Weather", boost::json::parse(R"({"type":"object"})"), {}, {}});
  full.tool_choice = ToolChoice{ToolChoice::Mode::kRequired, ""};
  full.parallel_tool_calls = false;
  full.response_format = ResponseFormat{ResponseFormat::Type::kJsonSchema, "s", "", boost::json::parse("{}"), true};
  full.stop = {"END"};
  full.seed = 7;
  full.temperature = 0.5;
  full.top_p = 0.9;
  full.top_k = 40;
  full.frequency_penalty = 0.1;
  full.presence_penalty = 0.2;
  full.repetition_penalty = 1.1;
  full.n = 2;
  full.logprobs = true;
  full.top_logprobs = 3;
  full.reasoning = ReasoningSettings{"high", std::nullopt, false, std::nullopt};
  full.user = "end-user";
  full.metadata = boost::json::parse(R"({"trace":"t"})").as_object();

  // The body fields each parameter may show up as, whatever the spelling.
  const std::map<Param, std::vector<std::string>> fields = {
      {Param::kTools, {"tools"}},
      {Param::kToolChoice, {"tool_choice"}},
      {Param::kParallelToolCalls, {"parallel_tool_calls"}},
      {Param::kResponseFormat, {"response_format"}},
      {Param::kStructuredOutputs, {"response_format"}},
      {Param::kStop, {"stop"}},
      {Param::kSeed, {"seed", "random_seed"}},
      {Param::kTemperature, {"temperature"}},
      {Param::kTopP, {"top_p"}},
      {Param::kTopK, {"top_k"}},
      {Param::kFrequencyPenalty, {"frequency_penalty"}},
      {Param::kPresencePenalty, {"presence_penalty"}},
      {Param::kRepetitionPenalty, {"repetition_penalty"}},
      {Param::kMaxTokens, {"max_tokens", "max_completion_tokens"}},
      {Param::kN, {"n"}},
      {Param::kLogprobs, {"logprobs"}},
      {Param::kTopLogprobs, {"top_logprobs"}},
      {Param::kReasoning, {"reasoning_effort", "reasoning", "enable_thinking", "thinking_budget", "thinking"}},
      {Param::kUser, {"user"}},
      {Param::kMetadata, {"metadata"}},
  };
  for (const Preset& preset : Presets()) {
    SCOPED_TRACE(std::string(preset.name));
    auto options = Options(upstream.BaseUrl());
    options.preset = std::string(preset.name);
    Make(options);
    ASSERT_EQ(provider_->SupportedParameters(), preset.supported);
    request_ = full;
    DropParameters(request_, ParametersUsed(full).Minus(provider_->SupportedParameters()));
    // Essential parameters are never dropped: the gateway would not use this
    // endpoint for such a call at all.
    if (!preset.supported.Has(Param::kTools)) request_.tools.clear();
    if (!preset.supported.Has(Param::kToolChoice)) request_.tool_choice.reset();
    ASSERT_TRUE(Run()->completion());
    const auto body = boost::json::parse(upstream.requests().back().body).as_object();

    std::set<std::string> allowed = {"model", "messages", "stream", "stream_options"};
    for (Param p : preset.supported.List()) {
      if (auto it = fields.find(p); it != fields.end()) allowed.insert(it->second.begin(), it->second.end());
    }
    for (const auto& [key, value] : body) {
      EXPECT_TRUE(allowed.contains(std::string(key))) << "undeclared field sent: " << key;
    }
    // Quirks.
    EXPECT_EQ(body.contains("stream_options"), preset.stream_options);
    EXPECT_EQ(body.contains("random_seed"), preset.seed_as_random_seed && preset.supported.Has(Param::kSeed));
    EXPECT_EQ(body.at("messages").at(1).at("role").as_string(), preset.developer_role ? "developer" : "system");
    if (preset.max_tokens_field == MaxTokensField::kMaxCompletionTokens) {
      EXPECT_TRUE(body.contains("max_completion_tokens"));
      EXPECT_FALSE(body.contains("max_tokens"));
    }
    if (preset.supported.Has(Param::kReasoning)) {
      switch (preset.reasoning) {
        case PresetReasoning::kOpenAi: EXPECT_EQ(body.at("reasoning_effort").as_string(), "high"); break;
        case PresetReasoning::kOpenRouter: EXPECT_EQ(body.at("reasoning").at("effort").as_string(), "high"); break;
        case PresetReasoning::kQwen: EXPECT_TRUE(body.at("enable_thinking").as_bool()); break;
        case PresetReasoning::kZhipu: EXPECT_EQ(body.at("thinking").at("type").as_string(), "enabled"); break;
        case PresetReasoning::kDeepSeek:
        case PresetReasoning::kNone: break;
      }
    }
    EXPECT_FALSE(body.contains("logprobs")) << "no preset takes logprobs: they would never reach the caller";
  }
}

TEST_F(RemoteProviderTest, CompletionsUseTheCompletionsEndpointAndText) {
  FakeUpstream upstream([](const FakeRequest&, FakeResponder& r) {
    r.StartChunked();
    r.ChunkSplit(R"(data: {"id":"cmpl-1","object":"text_completion","choices":[{"index":0,"text":"Once","finish_reason":null}]})"
                 "\n\n");
    r.ChunkSplit(R"(data: {"id":"cmpl-1","object":"text_completion","choices":[{"index":0,"text":" upon","finish_reason":"length"}]})"
                 "\n\n");
    r.ChunkSplit("data: [DONE]\n\n");
    r.EndChunked();
  });
  Make(Options(upstream.BaseUrl()));
  request_.kind = RequestKind::kCompletion;
  request_.api = ApiFlavor::kOpenAiCompletions;
  request_.messages.clear();
  request_.prompt = "Tell me a story";
  auto sink = Run();
  ASSERT_TRUE(sink->completion()) << sink->error()->message;
  EXPECT_EQ(sink->text(), "Once upon");
  EXPECT_EQ(sink->completion()->finish_reason, FinishReason::kLength);
  EXPECT_FALSE(sink->completion()->usage_known);
  const auto req = upstream.requests().at(0);
  EXPECT_EQ(req.target, "/v1/completions");
  const auto body = boost::json::parse(req.body);
  EXPECT_EQ(body.at("prompt").as_string(), "Tell me a story");
  EXPECT_EQ(body.at("stream").as_bool(), true);
}

TEST_F(RemoteProviderTest, ForwardsEachEventWithoutWaitingForTheNext) {
  std::mutex mu;
  std::condition_variable cv;
  bool client_saw_first = false;
  bool server_waited_in_vain = false;
  FakeUpstream upstream([&](const FakeRequest&, FakeResponder& r) {
    r.StartChunked();
    r.ChunkSplit(ContentChunk("first"));
    {
      std::unique_lock lock(mu);
      server_waited_in_vain = !cv.wait_for(lock, 5s, [&] { return client_saw_first; });
    }
    r.ChunkSplit(ContentChunk(" second"));
    r.ChunkSplit(Chunk("{}", R"("stop")"));
    r.ChunkSplit(kUsageChunk);
    r.ChunkSplit("data: [DONE]\n\n");
    r.EndChunked();
  });
  Make(Options(upstream.BaseUrl()));
  auto sink = std::make_shared<RecordingSink>();
  sink->on_delta = [&](const std::string&, std::size_t n) {
    if (n == 1) {
      std::lock_guard lock(mu);
      client_saw_first = true;
      cv.notify_all();
    }
  };
  Start(sink);
  ASSERT_TRUE(sink->WaitTerminal());
  EXPECT_FALSE(server_waited_in_vain);
  EXPECT_EQ(sink->text(), "first second");
  ASSERT_TRUE(sink->completion());
}

TEST_F(RemoteProviderTest, AnUpstreamThatWritesItsOwnAddressIntoAnErrorDoesNotLeakIt) {
  std::string base;
  FakeUpstream upstream([&](const FakeRequest& req, FakeResponder& r) {
    if (req.body.find("html") != std::string::npos) {
      r.SendResponse(502, "text/html", "<html><body>502 Bad Gateway from vllm-prod-7.internal.corp:8000</body></html>");
      return;
    }
    const std::string message = "Invalid model for host " + base + " (" + base + "/chat/completions)";
    r.SendResponse(400, "application/json", R"({"error":{"message":")" + message + R"(","type":"invalid_request_error"}})");
  });
  base = upstream.BaseUrl();
  Make(Options(base));
  auto sink = Run();
  ASSERT_TRUE(sink->error());
  EXPECT_EQ(sink->error()->code, ErrorCode::kInvalidArgument);
  EXPECT_NE(sink->error()->message.find("Invalid model for host"), std::string::npos) << sink->error()->message;
  ExpectCleanError(*sink->error(), upstream.port());
  request_.messages[0].parts = {TextPart{"html please", {}}};
  sink = Run();
  ASSERT_TRUE(sink->error());
  EXPECT_EQ(sink->error()->message.find("internal.corp"), std::string::npos) << sink->error()->message;
}

TEST_F(RemoteProviderTest, MapsUpstreamErrorStatusesWithoutLeakingKeyOrHost) {
  struct Case {
    int status;
    ErrorCode code;
  };
  for (const Case& c : {Case{429, ErrorCode::kResourceExhausted}, Case{500, ErrorCode::kBadGateway},
                        Case{502, ErrorCode::kBadGateway}, Case{503, ErrorCode::kUnavailable},
                        Case{401, ErrorCode::kBadGateway}, Case{403, ErrorCode::kBadGateway},
                        Case{404, ErrorCode::kBadGateway}, Case{402, ErrorCode::kUnavailable},
                        Case{400, ErrorCode::kInvalidArgument}, Case{504, ErrorCode::kUpstreamTimeout}}) {
    FakeUpstream upstream([&](const FakeRequest& req, FakeResponder& r) {
      // The body echoes the key and the Host header, as some proxies do.
      const std::string body = R"({"error":{"message":"Incorrect API key provided: )" + std::string(kApiKey) +
                               " for " + req.headers.at("host") +
                               R"(","type":"invalid_request_error","code":"invalid_api_key"}})";
      r.SendResponse(c.status, "application/json", body, "Retry-After: 3\r\n");
    });
    Make(Options(upstream.BaseUrl()));
    auto sink = Run();
    ASSERT_TRUE(sink->error()) << c.status;
    const Error e = *sink->error();
    EXPECT_EQ(e.code, c.code) << c.status << ": " << e.message;
    EXPECT_EQ(e.message.find(kApiKey), std::string::npos) << e.message;
    EXPECT_EQ(e.provider_name, kProviderName) << c.status;
    EXPECT_TRUE(sink->deltas().empty());
    EXPECT_EQ(sink->terminal_count(), 1);
    if (c.status == 401) {
      EXPECT_EQ(e.message, "the provider rejected Tollgate's credentials (HTTP 401)");
    }
    if (c.status == 400) {
      EXPECT_NE(e.message.find("Incorrect API key provided"), std::string::npos) << e.message;
    }
    EXPECT_EQ(e.retry_after, c.status == 429 ? "3" : "") << c.status;
  }
}

TEST_F(RemoteProviderTest, RateLimitKeepsRetryAfterAndTheUpstreamCode) {
  FakeUpstream upstream([](const FakeRequest&, FakeResponder& r) {
    // platform.openai.com/docs/guides/error-codes: 429 with error.code.
    r.SendResponse(429, "application/json",
                   R"({"error":{"message":"Rate limit reached for gpt-4o-mini in organization org-x on requests per min (RPM): Limit 3, Used 3, Requested 1.","type":"requests","param":null,"code":"rate_limit_exceeded"}})",
                   "Retry-After: 20\r\n");
  });
  Make(Options(upstream.BaseUrl()));
  auto sink = Run();
  ASSERT_TRUE(sink->error());
  const Error e = *sink->error();
  EXPECT_EQ(e.code, ErrorCode::kResourceExhausted);
  EXPECT_EQ(HttpStatus(e.code), 429);
  EXPECT_EQ(e.retry_after, "20");
  EXPECT_EQ(e.code_string, "rate_limit_exceeded");
  EXPECT_NE(e.message.find("Rate limit reached"), std::string::npos) << e.message;
  ExpectCleanError(e, upstream.port());
}

TEST_F(RemoteProviderTest, ConnectionRefusedIsUnavailable) {
  const auto port = testing::UnusedPort();
  Make(Options("http://127.0.0.1:" + std::to_string(port) + "/v1"));
  auto sink = Run();
  ASSERT_TRUE(sink->error());
  EXPECT_EQ(sink->error()->code, ErrorCode::kUnavailable);
  EXPECT_NE(sink->error()->message.find("refused"), std::string::npos) << sink->error()->message;
  ExpectCleanError(*sink->error(), port);
}

TEST_F(RemoteProviderTest, FirstByteTimeoutIsUpstreamTimeout) {
  FakeUpstream upstream([](const FakeRequest&, FakeResponder& r) {
    r.Pause(3000);  // says nothing
  });
  auto options = Options(upstream.BaseUrl());
  options.first_byte_timeout_ms = 200;
  Make(options);
  const auto start = std::chrono::steady_clock::now();
  auto sink = Run();
  const auto took = std::chrono::steady_clock::now() - start;
  ASSERT_TRUE(sink->error());
  EXPECT_EQ(sink->error()->code, ErrorCode::kUpstreamTimeout) << sink->error()->message;
  ExpectCleanError(*sink->error(), upstream.port());
  EXPECT_LT(took, 2s);
  EXPECT_GE(took, 150ms);
  EXPECT_EQ(provider_->Stats().idle_connections, 0u);
}

TEST_F(RemoteProviderTest, StallAfterHeadersIsUpstreamTimeout) {
  FakeUpstream upstream([](const FakeRequest&, FakeResponder& r) {
    r.StartChunked();
    r.Pause(3000);
  });
  auto options = Options(upstream.BaseUrl());
  options.first_byte_timeout_ms = 200;
  Make(options);
  auto sink = Run();
  ASSERT_TRUE(sink->error());
  EXPECT_EQ(sink->error()->code, ErrorCode::kUpstreamTimeout) << sink->error()->message;
  ExpectCleanError(*sink->error(), upstream.port());
}

TEST_F(RemoteProviderTest, StallMidStreamIsUpstreamTimeoutAfterTheEventsSoFar) {
  FakeUpstream upstream([](const FakeRequest&, FakeResponder& r) {
    r.StartChunked();
    r.ChunkSplit(ContentChunk("so far"));
    r.Pause(3000);
  });
  auto options = Options(upstream.BaseUrl());
  options.first_byte_timeout_ms = 200;
  Make(options);
  auto sink = Run();
  ASSERT_TRUE(sink->error());
  EXPECT_EQ(sink->error()->code, ErrorCode::kUpstreamTimeout) << sink->error()->message;
  EXPECT_EQ(sink->text(), "so far");
  ExpectCleanError(*sink->error(), upstream.port());
}

TEST_F(RemoteProviderTest, DeadlineIsHonoured) {
  FakeUpstream upstream([](const FakeRequest&, FakeResponder& r) { r.Pause(3000); });
  Make(Options(upstream.BaseUrl()));
  const auto start = std::chrono::steady_clock::now();
  auto sink = Run({}, start + 150ms);
  ASSERT_TRUE(sink->error());
  EXPECT_EQ(sink->error()->code, ErrorCode::kDeadlineExceeded) << sink->error()->message;
  ExpectCleanError(*sink->error(), upstream.port());
  EXPECT_LT(std::chrono::steady_clock::now() - start, 2s);

  auto late = Run({}, std::chrono::steady_clock::now() - 1ms);  // already past
  ASSERT_TRUE(late->error());
  EXPECT_EQ(late->error()->code, ErrorCode::kDeadlineExceeded);
}

TEST_F(RemoteProviderTest, ReusesTheKeepAliveConnection) {
  FakeUpstream upstream(StreamHello);
  Make(Options(upstream.BaseUrl()));
  auto first = Run();
  ASSERT_TRUE(first->completion());
  // OnComplete fires at [DONE]; the connection returns to the pool once the
  // chunked body's terminator has been read.
  ASSERT_TRUE(WaitFor([&] { return provider_->Stats().idle_connections == 1; }));
  auto second = Run();
  ASSERT_TRUE(second->completion());
  EXPECT_EQ(second->text(), "Hello héllo 🙂");
  EXPECT_EQ(upstream.connections(), 1);
  const auto requests = upstream.requests();
  ASSERT_EQ(requests.size(), 2u);
  EXPECT_EQ(requests[1].connection_id, requests[0].connection_id);
  EXPECT_EQ(requests[1].request_index, 1);
  const auto stats = provider_->Stats();
  EXPECT_EQ(stats.connections_opened, 1u);
  EXPECT_EQ(stats.connections_reused, 1u);
  EXPECT_EQ(stats.dead_idle_dropped, 0u);
}

TEST_F(RemoteProviderTest, NoReuseWhenThePoolIsDisabled) {
  FakeUpstream upstream(StreamHello);
  auto options = Options(upstream.BaseUrl());
  options.max_idle_connections = 0;
  Make(options);
  ASSERT_TRUE(Run()->completion());
  ASSERT_TRUE(Run()->completion());
  EXPECT_EQ(upstream.connections(), 2);
  EXPECT_EQ(provider_->Stats().connections_reused, 0u);
  EXPECT_EQ(provider_->Stats().idle_connections, 0u);
}

// Regression: the old client retried a request on a fresh connection when a
// reused one failed before the response, even after the request had been
// written whole: the upstream may already be generating (and billing) it. A
// fully written request is never sent again (ARCHITECTURE.md; http_client.hpp).
class NeverResendTest : public RemoteProviderTest, public ::testing::WithParamInterface<bool> {};

TEST_P(NeverResendTest, AFullyWrittenRequestIsNeverSentAgainOnAReusedConnection) {
  const bool reset = GetParam();
  // The upstream reads the second request on the kept-alive connection, then
  // drops the connection without a byte of response (RST or FIN).
  FakeUpstream upstream([reset](const FakeRequest& req, FakeResponder& r) {
    if (req.connection_id == 1 && req.request_index == 1) {
      if (reset) {
        r.ResetAfterResponse();
      } else {
        r.CloseAfterResponse();
      }
      return;
    }
    StreamHello(req, r);
  });
  Make(Options(upstream.BaseUrl()));
  ASSERT_TRUE(Run()->completion());
  ASSERT_TRUE(WaitFor([&] { return provider_->Stats().idle_connections == 1; }));
  request_.messages.back() = Msg(Role::kUser, "second request");
  auto second = Run();
  ASSERT_TRUE(second->error()) << "completed: " << second->text();
  EXPECT_EQ(second->error()->code, ErrorCode::kBadGateway) << second->error()->message;
  ExpectCleanError(*second->error(), upstream.port());
  EXPECT_TRUE(second->events().empty());
  // Give a (wrong) retry every chance to show up before counting.
  std::this_thread::sleep_for(100ms);
  const auto requests = upstream.requests();
  int seen = 0;
  for (const auto& r : requests) seen += r.body.find("second request") != std::string::npos ? 1 : 0;
  EXPECT_EQ(seen, 1) << "the second request reached the upstream " << seen << " times";
  EXPECT_EQ(requests.size(), 2u);
  EXPECT_EQ(upstream.connections(), 1);
  const auto stats = provider_->Stats();
  EXPECT_EQ(stats.connections_opened, 1u);
  EXPECT_EQ(stats.connections_reused, 1u);
  EXPECT_EQ(stats.idle_connections, 0u);
}

INSTANTIATE_TEST_SUITE_P(ResetOrClose, NeverResendTest, ::testing::Bool(),
                         [](const ::testing::TestParamInfo<bool>& info) {
                           return info.param ? "Reset" : "Close";
                         });

TEST_F(RemoteProviderTest, AnIdleConnectionTheUpstreamClosedIsDroppedBeforeUse) {
  FakeUpstream upstream([](const FakeRequest& req, FakeResponder& r) {
    StreamHello(req, r);
    r.CloseAfterResponse();  // server closes after the response, no Connection: close
  });
  Make(Options(upstream.BaseUrl()));
  ASSERT_TRUE(Run()->completion());
  ASSERT_TRUE(WaitFor([&] { return provider_->Stats().idle_connections == 1; }));
  ASSERT_TRUE(WaitFor([&] { return upstream.closed_connections() == 1; }));
  std::this_thread::sleep_for(20ms);  // the FIN crosses loopback
  auto second = Run();
  ASSERT_TRUE(second->completion()) << second->error()->message;
  EXPECT_EQ(second->text(), "Hello héllo 🙂");
  const auto stats = provider_->Stats();
  EXPECT_EQ(stats.dead_idle_dropped, 1u);
  EXPECT_EQ(stats.connections_reused, 0u);
  EXPECT_EQ(stats.connections_opened, 2u);
  // The request went out once, on the new connection.
  const auto requests = upstream.requests();
  ASSERT_EQ(requests.size(), 2u);
  EXPECT_EQ(requests[1].connection_id, 2);
  EXPECT_EQ(upstream.connections(), 2);
}

TEST_F(RemoteProviderTest, CancellationMidStreamClosesTheUpstreamConnection) {
  std::atomic<bool> peer_closed{false};
  FakeUpstream upstream([&](const FakeRequest&, FakeResponder& r) {
    r.StartChunked();
    r.ChunkSplit(ContentChunk("one"));
    r.ChunkSplit(ContentChunk(" two"));
    peer_closed = r.WaitForPeerClose(5000);
    r.CloseAfterResponse();
  });
  Make(Options(upstream.BaseUrl()));
  std::stop_source stop;
  auto sink = std::make_shared<RecordingSink>();
  sink->on_delta = [&](const std::string&, std::size_t n) {
    if (n == 2) stop.request_stop();  // from inside the sink, on an io thread
  };
  const auto start = std::chrono::steady_clock::now();
  Start(sink, stop.get_token());
  ASSERT_TRUE(sink->WaitTerminal());
  ASSERT_TRUE(sink->error());
  EXPECT_EQ(sink->error()->code, ErrorCode::kCancelled);
  EXPECT_EQ(sink->text(), "one two");
  EXPECT_TRUE(WaitFor([&] { return peer_closed.load(); }));
  EXPECT_LT(std::chrono::steady_clock::now() - start, 3s);
  EXPECT_EQ(provider_->Stats().idle_connections, 0u);
  EXPECT_EQ(sink->terminal_count(), 1);
  EXPECT_FALSE(sink->misbehaved());
}

TEST_F(RemoteProviderTest, CancellationFromAnotherThreadWhileWaiting) {
  FakeUpstream upstream([](const FakeRequest&, FakeResponder& r) {
    r.StartChunked();
    r.ChunkSplit(ContentChunk("only"));
    r.WaitForPeerClose(5000);
    r.CloseAfterResponse();
  });
  Make(Options(upstream.BaseUrl()));
  std::stop_source stop;
  auto sink = std::make_shared<RecordingSink>();
  Start(sink, stop.get_token());
  ASSERT_TRUE(sink->WaitDeltas(1));
  stop.request_stop();
  ASSERT_TRUE(sink->WaitTerminal(2s));
  ASSERT_TRUE(sink->error());
  EXPECT_EQ(sink->error()->code, ErrorCode::kCancelled);
}

TEST_F(RemoteProviderTest, AlreadyCancelledCallEndsAtOnce) {
  FakeUpstream upstream(StreamHello);
  Make(Options(upstream.BaseUrl()));
  std::stop_source stop;
  stop.request_stop();
  auto sink = Run(stop.get_token());
  ASSERT_TRUE(sink->error());
  EXPECT_EQ(sink->error()->code, ErrorCode::kCancelled);
}

TEST_F(RemoteProviderTest, InStreamErrorIsBadGatewayAfterTheEventsSoFar) {
  FakeUpstream upstream([](const FakeRequest&, FakeResponder& r) {
    r.StartChunked();
    r.ChunkSplit(ContentChunk("partial"));
    r.ChunkSplit(R"(data: {"error":{"message":"Provider overloaded","code":502}})"
                 "\n\n");
    r.EndChunked();
  });
  Make(Options(upstream.BaseUrl()));
  auto sink = Run();
  ASSERT_TRUE(sink->error());
  EXPECT_EQ(sink->error()->code, ErrorCode::kBadGateway);
  EXPECT_NE(sink->error()->message.find("Provider overloaded"), std::string::npos);
  EXPECT_EQ(sink->text(), "partial");
  ExpectCleanError(*sink->error(), upstream.port());
}

TEST_F(RemoteProviderTest, StreamBrokenAfterDeltasIsBadGateway) {
  FakeUpstream upstream([](const FakeRequest&, FakeResponder& r) {
    r.StartChunked();
    r.ChunkSplit(ContentChunk("so far"));
    r.Write("40\r\ndata: {\"id\"");  // a chunk cut short, then the connection drops
    r.CloseAfterResponse();
  });
  Make(Options(upstream.BaseUrl()));
  auto sink = Run();
  ASSERT_TRUE(sink->error());
  EXPECT_EQ(sink->error()->code, ErrorCode::kBadGateway) << sink->error()->message;
  EXPECT_EQ(sink->text(), "so far");
  EXPECT_FALSE(sink->completion());
  ExpectCleanError(*sink->error(), upstream.port());
}

TEST_F(RemoteProviderTest, StreamResetAfterDeltasIsBadGateway) {
  FakeUpstream upstream([](const FakeRequest&, FakeResponder& r) {
    r.StartChunked();
    r.ChunkSplit(ContentChunk("so far"));
    r.ResetAfterResponse();
  });
  Make(Options(upstream.BaseUrl()));
  auto sink = Run();
  ASSERT_TRUE(sink->error());
  EXPECT_EQ(sink->error()->code, ErrorCode::kBadGateway) << sink->error()->message;
  EXPECT_EQ(sink->text(), "so far");
  ExpectCleanError(*sink->error(), upstream.port());
}

TEST_F(RemoteProviderTest, EndOfBodyWithoutDoneCompletes) {
  // Connection-delimited body (no length, not chunked), no usage, no [DONE].
  FakeUpstream upstream([](const FakeRequest&, FakeResponder& r) {
    r.Write("HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n");
    r.Write(ContentChunk("bye"));
    r.Pause(5);
    r.Write(Chunk("{}", R"("stop")"));
    r.CloseAfterResponse();
  });
  Make(Options(upstream.BaseUrl()));
  auto sink = Run();
  ASSERT_TRUE(sink->completion()) << sink->error()->message;
  EXPECT_EQ(sink->text(), "bye");
  EXPECT_FALSE(sink->completion()->usage_known);
  EXPECT_EQ(sink->completion()->finish_reason, FinishReason::kStop);
}

TEST_F(RemoteProviderTest, StreamCutOffWithoutFinishIsBadGateway) {
  // Connection-delimited body: content deltas, then the upstream closes the
  // TCP connection with no finish_reason and no [DONE]. That is a broken
  // stream, not a short answer that ended with "stop".
  FakeUpstream upstream([](const FakeRequest&, FakeResponder& r) {
    r.Write("HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n");
    r.Write(Chunk(R"({"role":"assistant","content":""})"));
    r.Write(ContentChunk("so"));
    r.Pause(5);
    r.Write(ContentChunk(" far"));
    r.CloseAfterResponse();
  });
  Make(Options(upstream.BaseUrl()));
  auto sink = Run();
  ASSERT_TRUE(sink->error()) << "completed with finish " << FinishReasonName(sink->completion()->finish_reason);
  EXPECT_EQ(sink->error()->code, ErrorCode::kBadGateway);
  EXPECT_NE(sink->error()->message.find("ended before it finished"), std::string::npos) << sink->error()->message;
  EXPECT_EQ(sink->text(), "so far");
  EXPECT_EQ(sink->terminal_count(), 1);
  EXPECT_FALSE(sink->misbehaved());
  ExpectCleanError(*sink->error(), upstream.port());
}

TEST_F(RemoteProviderTest, CleanlyEndedBodyWithoutFinishOrDoneIsBadGateway) {
  // A well-framed chunked body (even one that carried usage) that ends with
  // neither a finish_reason nor [DONE] was still cut off upstream.
  FakeUpstream upstream([](const FakeRequest&, FakeResponder& r) {
    r.StartChunked();
    r.ChunkSplit(ContentChunk("partial"));
    r.ChunkSplit(kUsageChunk);
    r.EndChunked();
  });
  Make(Options(upstream.BaseUrl()));
  auto sink = Run();
  ASSERT_TRUE(sink->error());
  EXPECT_EQ(sink->error()->code, ErrorCode::kBadGateway);
  EXPECT_NE(sink->error()->message.find("ended before it finished"), std::string::npos);
  EXPECT_EQ(sink->text(), "partial");
}

TEST_F(RemoteProviderTest, EndOfBodyAfterFinishReasonCompletesWithUsage) {
  // Servers that omit [DONE]: finish_reason, usage, then the end of the body.
  FakeUpstream upstream([](const FakeRequest&, FakeResponder& r) {
    r.StartChunked();
    r.ChunkSplit(ContentChunk("done"));
    r.ChunkSplit(Chunk("{}", R"("length")"));
    r.ChunkSplit(kUsageChunk);
    r.EndChunked();
  });
  Make(Options(upstream.BaseUrl()));
  auto sink = Run();
  ASSERT_TRUE(sink->completion()) << sink->error()->message;
  EXPECT_EQ(sink->text(), "done");
  EXPECT_EQ(sink->completion()->finish_reason, FinishReason::kLength);
  EXPECT_TRUE(sink->completion()->usage_known);
  EXPECT_EQ(sink->completion()->usage.prompt_tokens, 21);
}

TEST_F(RemoteProviderTest, InsaneUsageIsClampedBeforeItLeavesTheAdapter) {
  FakeUpstream upstream([](const FakeRequest&, FakeResponder& r) {
    r.StartChunked();
    r.ChunkSplit(ContentChunk("x"));
    r.ChunkSplit(Chunk("{}", R"("stop")"));
    r.ChunkSplit(
        R"(data: {"id":"chatcmpl-abc","choices":[],"usage":{"prompt_tokens":-50,"completion_tokens":18446744073709551615,"prompt_tokens_details":{"cached_tokens":99},"completion_tokens_details":{"reasoning_tokens":2.7}}})"
        "\n\n");
    r.ChunkSplit("data: [DONE]\n\n");
    r.EndChunked();
  });
  Make(Options(upstream.BaseUrl()));
  auto sink = Run();
  ASSERT_TRUE(sink->completion()) << sink->error()->message;
  const Usage u = sink->completion()->usage;
  EXPECT_TRUE(sink->completion()->usage_known);
  EXPECT_EQ(u.prompt_tokens, 0);
  EXPECT_EQ(u.cached_tokens, 0);  // never more than prompt_tokens
  EXPECT_EQ(u.completion_tokens, 1'000'000'000'000);
  EXPECT_EQ(u.reasoning_tokens, 2);
}

TEST_F(RemoteProviderTest, UpstreamErrorParamIsPassedOnAndMessagesAreCapped) {
  FakeUpstream upstream([](const FakeRequest&, FakeResponder& r) {
    r.SendResponse(400, "application/json",
                   R"({"error":{"message":")" + std::string(5000, 'm') +
                       R"(","type":"invalid_request_error","param":"messages","code":null}})");
  });
  Make(Options(upstream.BaseUrl()));
  auto sink = Run();
  ASSERT_TRUE(sink->error());
  EXPECT_EQ(sink->error()->code, ErrorCode::kInvalidArgument);
  EXPECT_EQ(sink->error()->param, "messages");
  EXPECT_LE(sink->error()->message.size(), 2000u);
  EXPECT_GE(sink->error()->message.size(), 1990u);
  ExpectCleanError(*sink->error(), upstream.port());
}

TEST_F(RemoteProviderTest, ErrorBodyCutOffAfterTheStatusLineKeepsTheStatusMeaning) {
  // A 503 whose body never arrives whole: still "unavailable", not a
  // generic broken stream.
  FakeUpstream upstream([](const FakeRequest&, FakeResponder& r) {
    r.Write("HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nContent-Length: 500\r\n\r\n");
    r.Write(R"({"error":{"message":"upstream conn)");
    r.CloseAfterResponse();
  });
  Make(Options(upstream.BaseUrl()));
  auto sink = Run();
  ASSERT_TRUE(sink->error());
  EXPECT_EQ(sink->error()->code, ErrorCode::kUnavailable) << sink->error()->message;
  ExpectCleanError(*sink->error(), upstream.port());
}

TEST_F(RemoteProviderTest, BodyWithoutAnyEventIsBadGateway) {
  FakeUpstream upstream([](const FakeRequest&, FakeResponder& r) {
    r.SendResponse(200, "text/html", "<html><body>captive portal</body></html>");
  });
  Make(Options(upstream.BaseUrl()));
  auto sink = Run();
  ASSERT_TRUE(sink->error());
  EXPECT_EQ(sink->error()->code, ErrorCode::kBadGateway);
  ExpectCleanError(*sink->error(), upstream.port());
}

TEST_F(RemoteProviderTest, AcceptsANonStreamedJsonAnswer) {
  FakeUpstream upstream([](const FakeRequest&, FakeResponder& r) {
    r.SendResponse(200, "application/json; charset=utf-8",
                   R"({"id":"chatcmpl-j","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"whole"},"finish_reason":"stop"}],"usage":{"prompt_tokens":2,"completion_tokens":1,"total_tokens":3}})");
  });
  Make(Options(upstream.BaseUrl()));
  auto sink = Run();
  ASSERT_TRUE(sink->completion()) << sink->error()->message;
  EXPECT_EQ(sink->text(), "whole");
  EXPECT_EQ(sink->completion()->finish_reason, FinishReason::kStop);
  EXPECT_TRUE(sink->completion()->usage_known);
  EXPECT_EQ(sink->completion()->usage.prompt_tokens, 2);
  EXPECT_EQ(sink->completion()->usage.completion_tokens, 1);
}

TEST_F(RemoteProviderTest, ConcurrentCallsEachGetTheirOwnAnswer) {
  FakeUpstream upstream(StreamHello);
  Make(Options(upstream.BaseUrl()));
  std::vector<std::shared_ptr<RecordingSink>> sinks;
  for (int i = 0; i < 8; ++i) {
    sinks.push_back(std::make_shared<RecordingSink>());
    Start(sinks.back());
  }
  for (auto& s : sinks) {
    ASSERT_TRUE(s->WaitTerminal());
    ASSERT_TRUE(s->completion());
    EXPECT_EQ(s->text(), "Hello héllo 🙂");
    EXPECT_FALSE(s->misbehaved());
  }
  EXPECT_TRUE(WaitFor([&] { return provider_->Stats().idle_connections == 8; }));
}

// ---------------------------------------------------------------- flow control

// A consumer that falls behind after `pause_after` text deltas: Ready()
// answers false once and keeps the resume callback for the test to call.
class SlowSink final : public StreamSink {
 public:
  explicit SlowSink(std::size_t pause_after) : pause_after_(pause_after) {}

  void OnEvent(StreamEvent event) override {
    std::lock_guard lock(mu_);
    if (terminal_) bad_ = true;
    if (const auto* t = std::get_if<TextDelta>(&event)) texts_.push_back(t->text);
    events_.push_back(std::move(event));
  }
  void OnComplete() override { Terminal({}); }
  void OnError(const Error& error) override { Terminal(error); }
  bool Ready(std::function<void()> resume) override {
    std::lock_guard lock(mu_);
    ++ready_calls_;
    if (paused_once_ || texts_.size() < pause_after_) return true;
    paused_once_ = true;
    resume_ = std::move(resume);
    cv_.notify_all();
    return false;
  }

  bool WaitPaused(std::chrono::milliseconds timeout) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, timeout, [&] { return resume_ != nullptr; });
  }
  bool WaitTerminal(std::chrono::milliseconds timeout) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, timeout, [&] { return terminal_; });
  }
  void Resume() {
    std::function<void()> resume;
    {
      std::lock_guard lock(mu_);
      resume = std::move(resume_);
    }
    resume();  // from the test thread, never from inside Ready
  }
  std::size_t event_count() const {
    std::lock_guard lock(mu_);
    return events_.size();
  }
  std::vector<std::string> texts() const {
    std::lock_guard lock(mu_);
    return texts_;
  }
  std::vector<StreamEvent> events() const {
    std::lock_guard lock(mu_);
    return events_;
  }
  std::optional<Error> error() const {
    std::lock_guard lock(mu_);
    return error_;
  }
  bool completed() const {
    std::lock_guard lock(mu_);
    return terminal_ && !error_;
  }
  bool bad() const {
    std::lock_guard lock(mu_);
    return bad_;
  }

 private:
  void Terminal(std::optional<Error> error) {
    std::lock_guard lock(mu_);
    if (terminal_) bad_ = true;
    terminal_ = true;
    error_ = std::move(error);
    cv_.notify_all();
  }

  const std::size_t pause_after_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::vector<StreamEvent> events_;
  std::vector<std::string> texts_;
  std::function<void()> resume_;
  std::optional<Error> error_;
  bool paused_once_ = false;
  bool terminal_ = false;
  bool bad_ = false;
  int ready_calls_ = 0;
};

// An upstream that streams `count` text events of ~1 KiB each (then finish,
// usage, [DONE]) through a small send buffer, counting the bytes it managed
// to write: once the client stops reading, its writes block.
struct BigStream {
  static constexpr int kCount = 2000;
  std::atomic<std::size_t> written{0};
  std::atomic<bool> finished{false};
  std::size_t total = 0;

  static std::string Text(int i) {
    char head[16];
    std::snprintf(head, sizeof head, "[%05d]", i);
    return head + std::string(1000, static_cast<char>('a' + i % 26));
  }

  BigStream() {
    for (int i = 0; i < kCount; ++i) total += ContentChunk(Text(i)).size();
  }

  void Serve(FakeResponder& r) {
    r.SetSendBufferBytes(4096);
    r.StartChunked();
    for (int i = 0; i < kCount; ++i) {
      const std::string event = ContentChunk(Text(i));
      if (!r.Chunk(event)) return;
      written += event.size();
    }
    r.Chunk(Chunk("{}", R"("stop")"));
    r.Chunk(kUsageChunk);
    r.Chunk("data: [DONE]\n\n");
    r.EndChunked();
    finished = true;
  }
};

TEST_F(RemoteProviderTest, AConsumerThatFallsBehindStopsTheReadingUntilResumed) {
  BigStream stream;
  FakeUpstream upstream([&](const FakeRequest&, FakeResponder& r) { stream.Serve(r); });
  auto options = Options(upstream.BaseUrl());
  options.first_byte_timeout_ms = 300;  // the pause below is longer: it must not count as a stall
  Make(options);
  auto sink = std::make_shared<SlowSink>(1);
  Start(sink);
  ASSERT_TRUE(sink->WaitPaused(5s));

  // Paused: the client reads nothing more, so the upstream's writes block
  // and the call does not progress.
  std::size_t last = stream.written.load();
  auto stable_since = std::chrono::steady_clock::now();
  const auto give_up = stable_since + 5s;
  while (std::chrono::steady_clock::now() - stable_since < 400ms && std::chrono::steady_clock::now() < give_up) {
    std::this_thread::sleep_for(10ms);
    const std::size_t now = stream.written.load();
    if (now != last) {
      last = now;
      stable_since = std::chrono::steady_clock::now();
    }
  }
  const std::size_t events_while_paused = sink->event_count();
  EXPECT_FALSE(stream.finished.load());
  EXPECT_LT(stream.written.load(), stream.total / 2) << "the upstream could write everything while paused";
  EXPECT_FALSE(sink->WaitTerminal(200ms)) << "the call ended while paused";
  EXPECT_EQ(sink->event_count(), events_while_paused) << "events arrived while paused";
  EXPECT_LT(events_while_paused, static_cast<std::size_t>(BigStream::kCount / 4));

  sink->Resume();
  ASSERT_TRUE(sink->WaitTerminal(10s));
  ASSERT_TRUE(sink->completed()) << sink->error()->message;
  EXPECT_FALSE(sink->bad());
  EXPECT_TRUE(stream.finished.load());
  std::string all;
  for (const auto& t : sink->texts()) all += t;
  std::string expected;
  for (int i = 0; i < BigStream::kCount; ++i) expected += BigStream::Text(i);
  EXPECT_TRUE(all == expected) << "text out of order or incomplete: " << all.size() << " of " << expected.size();
  const auto events = sink->events();
  ASSERT_GE(events.size(), 2u);
  EXPECT_TRUE(std::holds_alternative<FinishDelta>(events[events.size() - 2]));
  EXPECT_TRUE(std::holds_alternative<UsageDelta>(events.back()));
}

TEST_F(RemoteProviderTest, CancellationEndsAPausedCall) {
  BigStream stream;
  FakeUpstream upstream([&](const FakeRequest&, FakeResponder& r) { stream.Serve(r); });
  Make(Options(upstream.BaseUrl()));
  auto sink = std::make_shared<SlowSink>(1);
  std::stop_source stop;
  Start(sink, stop.get_token());
  ASSERT_TRUE(sink->WaitPaused(5s));
  stop.request_stop();
  ASSERT_TRUE(sink->WaitTerminal(2s));
  ASSERT_TRUE(sink->error());
  EXPECT_EQ(sink->error()->code, ErrorCode::kCancelled);
  EXPECT_FALSE(sink->bad());
  EXPECT_EQ(provider_->Stats().idle_connections, 0u);
}

TEST_F(RemoteProviderTest, TheDeadlineEndsAPausedCall) {
  BigStream stream;
  FakeUpstream upstream([&](const FakeRequest&, FakeResponder& r) { stream.Serve(r); });
  Make(Options(upstream.BaseUrl()));
  auto sink = std::make_shared<SlowSink>(1);
  Start(sink, {}, std::chrono::steady_clock::now() + 300ms);
  ASSERT_TRUE(sink->WaitPaused(5s));
  ASSERT_TRUE(sink->WaitTerminal(3s));
  ASSERT_TRUE(sink->error());
  EXPECT_EQ(sink->error()->code, ErrorCode::kDeadlineExceeded) << sink->error()->message;
  ExpectCleanError(*sink->error(), upstream.port());
}

// ---------------------------------------------------------------- Create

TEST(RemoteProviderCreate, RejectsBadOptions) {
  boost::asio::io_context ioc;
  auto make = [&](std::string url, auto tweak) {
    RemoteProviderOptions o;
    o.base_url = std::move(url);
    o.api_key = kApiKey;
    tweak(o);
    return RemoteProvider::Create(std::move(o), ioc);
  };
  auto none = [](RemoteProviderOptions&) {};
  for (const char* url : {"", "not a url", "ftp://example.com/v1", "https://user:hunter2@example.com/v1",
                          "https://example.com/v1#frag", "/v1", "http://:80/v1"}) {
    auto r = make(url, none);
    ASSERT_FALSE(r.has_value()) << url;
    EXPECT_EQ(r.error().code, ErrorCode::kInvalidArgument) << url;
    EXPECT_EQ(r.error().param, "base_url") << url;
    EXPECT_EQ(r.error().message.find("hunter2"), std::string::npos);
  }
  struct Bad {
    const char* param;
    std::function<void(RemoteProviderOptions&)> tweak;
  };
  const std::vector<Bad> bad = {
      {"connect_timeout_ms", [](auto& o) { o.connect_timeout_ms = 0; }},
      {"first_byte_timeout_ms", [](auto& o) { o.first_byte_timeout_ms = -1; }},
      {"max_idle_connections", [](auto& o) { o.max_idle_connections = -1; }},
      {"default_max_tokens", [](auto& o) { o.default_max_tokens = 0; }},
      {"api_key", [](auto& o) { o.api_key = "sk\r\nX-Evil: 1"; }},
      {"extra_headers", [](auto& o) { o.extra_headers["Bad Name"] = "x"; }},
      {"extra_headers", [](auto& o) { o.extra_headers["X-Ok"] = "a\nb"; }},
      {"ca_file", [](auto& o) { o.ca_file = "/nonexistent/ca.pem"; }},
      {"preset", [](auto& o) { o.preset = "no-such-preset"; }},
      {"preset", [](auto& o) {
         o.api = RemoteApi::kAnthropic;
         o.preset = "openai";
       }},
  };
  for (const auto& b : bad) {
    auto r = make("https://api.openai.com/v1", b.tweak);
    ASSERT_FALSE(r.has_value()) << b.param;
    EXPECT_EQ(r.error().code, ErrorCode::kInvalidArgument) << b.param;
    EXPECT_EQ(r.error().param, b.param) << r.error().message;
    EXPECT_EQ(r.error().message.find(kApiKey), std::string::npos) << r.error().message;
  }
  auto ok = make("https://api.openai.com/v1/", none);
  ASSERT_TRUE(ok.has_value()) << ok.error().message;
  EXPECT_TRUE(make("http://[::1]:8080/v1?api-version=2024-06-01", none).has_value());
  // A preset brings its base URL and display name.
  auto preset = make("", [](auto& o) { o.preset = "deepseek"; });
  ASSERT_TRUE(preset.has_value()) << preset.error().message;
  EXPECT_EQ((*preset)->Name(), "DeepSeek");
  auto anthropic = make("https://api.anthropic.com/v1", [](auto& o) {
    o.api = RemoteApi::kAnthropic;
    o.display_name = "Anthropic";
  });
  ASSERT_TRUE(anthropic.has_value()) << anthropic.error().message;
  EXPECT_EQ((*anthropic)->Name(), "Anthropic");
}

// ---------------------------------------------------------------- TLS

// TLS against a self-signed certificate for "localhost", trusted via ca_file.
class RemoteProviderTlsTest : public RemoteProviderTest {
 protected:
  RemoteProviderTlsTest() : identity_(testing::MakeSelfSignedIdentity("localhost")) {
    ca_path_ = ::testing::TempDir() + "tollgate_test_ca_" + std::to_string(::getpid()) + ".pem";
    std::ofstream(ca_path_) << identity_.cert_pem;
  }
  ~RemoteProviderTlsTest() override { std::remove(ca_path_.c_str()); }

  testing::FakeTlsIdentity identity_;
  std::string ca_path_;
};

TEST_F(RemoteProviderTlsTest, StreamsOverVerifiedTlsAndReusesTheConnection) {
  FakeUpstream upstream(StreamHello, identity_);
  auto options = Options(upstream.BaseUrl("localhost"));
  options.ca_file = ca_path_;
  Make(options);
  auto sink = Run();
  ASSERT_TRUE(sink->completion()) << sink->error()->message;
  EXPECT_EQ(sink->text(), "Hello héllo 🙂");
  EXPECT_EQ(upstream.requests().at(0).headers.at("host"), "localhost:" + std::to_string(upstream.port()));
  // And the TLS connection is pooled and reused.
  ASSERT_TRUE(WaitFor([&] { return provider_->Stats().idle_connections == 1; }));
  ASSERT_TRUE(Run()->completion());
  EXPECT_EQ(upstream.connections(), 1);
  EXPECT_EQ(provider_->Stats().connections_reused, 1u);
}

TEST_F(RemoteProviderTlsTest, TlsStreamCutOffIsBadGateway) {
  FakeUpstream upstream(
      [](const FakeRequest&, FakeResponder& r) {
        r.StartChunked();
        r.ChunkSplit(ContentChunk("so far"));
        r.CloseAfterResponse();  // no close_notify, no chunked terminator
      },
      identity_);
  auto options = Options(upstream.BaseUrl("localhost"));
  options.ca_file = ca_path_;
  Make(options);
  auto sink = Run();
  ASSERT_TRUE(sink->error());
  EXPECT_EQ(sink->error()->code, ErrorCode::kBadGateway) << sink->error()->message;
  EXPECT_EQ(sink->text(), "so far");
  ExpectCleanError(*sink->error(), upstream.port(), "localhost");
}

TEST_F(RemoteProviderTlsTest, WrongHostNameFailsVerification) {
  FakeUpstream upstream(StreamHello, identity_);
  auto options = Options(upstream.BaseUrl("127.0.0.1"));  // cert is for "localhost" only
  options.ca_file = ca_path_;
  Make(options);
  auto sink = Run();
  ASSERT_TRUE(sink->error());
  EXPECT_EQ(sink->error()->code, ErrorCode::kUnavailable);
  EXPECT_NE(sink->error()->message.find("TLS handshake"), std::string::npos) << sink->error()->message;
  ExpectCleanError(*sink->error(), upstream.port());
  EXPECT_TRUE(upstream.requests().empty());
}

TEST_F(RemoteProviderTlsTest, UntrustedCertificateFails) {
  FakeUpstream upstream(StreamHello, identity_);
  Make(Options(upstream.BaseUrl("localhost")));  // no ca_file: system store only
  auto sink = Run();
  ASSERT_TRUE(sink->error());
  EXPECT_EQ(sink->error()->code, ErrorCode::kUnavailable);
  ExpectCleanError(*sink->error(), upstream.port(), "localhost");
  EXPECT_TRUE(upstream.requests().empty());
}

}  // namespace
}  // namespace tollgate::providers
