// OpenAiCompatibleProvider against a fake upstream on 127.0.0.1 that speaks
// the OpenAI streaming wire format (WIRE-FORMATS.md 3.1) and splits each event
// across several TCP writes with small pauses.
#include "tollgate/providers/openai_compatible.hpp"

#include "fake_upstream.hpp"
#include "recording_sink.hpp"

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/json.hpp>
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <fstream>
#include <functional>
#include <mutex>
#include <optional>
#include <thread>

namespace tollgate::providers {
namespace {

using namespace std::chrono_literals;
using testing::FakeRequest;
using testing::FakeResponder;
using testing::FakeUpstream;

constexpr const char* kApiKey = "sk-test-SECRET-0123456789";

std::string Chunk(std::string_view delta_json, std::string_view finish = "null") {
  return R"(data: {"id":"chatcmpl-abc","object":"chat.completion.chunk","created":1700000000,"model":"gpt-4o-mini-2024-07-18","choices":[{"index":0,"delta":)" +
         std::string(delta_json) + R"(,"finish_reason":)" + std::string(finish) +
         R"(}],"usage":null})" + "\n\n";
}

std::string ContentChunk(std::string_view text) {
  return Chunk(R"({"content":")" + std::string(text) + R"("})");
}

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

using test_support::RecordingSink;

class OpenAiCompatibleTest : public ::testing::Test {
 protected:
  OpenAiCompatibleTest() : work_(boost::asio::make_work_guard(ioc_)) {
    for (int i = 0; i < 2; ++i) threads_.emplace_back([this] { ioc_.run(); });
    request_.model = "openai/gpt-4o-mini";
    request_.messages = {{"system", "be brief"}, {"user", "Say hello"}};
    request_.max_tokens = 32;
    request_.temperature = 0.2;
    request_.stream = false;
  }

  ~OpenAiCompatibleTest() override {
    provider_.reset();
    work_.reset();
    ioc_.stop();
    for (auto& t : threads_) t.join();
  }

  OpenAiCompatibleOptions Options(const std::string& base_url) {
    OpenAiCompatibleOptions o;
    o.display_name = "FakeAI";
    o.base_url = base_url;
    o.api_key = kApiKey;
    o.connect_timeout_ms = 2000;
    o.first_byte_timeout_ms = 3000;
    return o;
  }

  OpenAiCompatibleProvider& Make(OpenAiCompatibleOptions options) {
    auto p = OpenAiCompatibleProvider::Create(std::move(options), ioc_);
    EXPECT_TRUE(p.has_value()) << (p.has_value() ? "" : p.error().message);
    provider_ = std::move(*p);
    return *provider_;
  }

  std::shared_ptr<RecordingSink> Run(std::stop_token cancel = {},
                                     std::chrono::steady_clock::time_point deadline = {}) {
    auto sink = std::make_shared<RecordingSink>();
    Start(sink, std::move(cancel), deadline);
    EXPECT_TRUE(sink->WaitTerminal());
    return sink;
  }

  void Start(std::shared_ptr<RecordingSink> sink, std::stop_token cancel = {},
             std::chrono::steady_clock::time_point deadline = {}) {
    ProviderRequest pr;
    pr.request = &request_;
    pr.upstream_model = "gpt-4o-mini-2024-07-18";
    pr.deadline = deadline;
    provider_->Start(pr, std::move(sink), std::move(cancel));
  }

  bool WaitFor(const std::function<bool()>& condition, std::chrono::milliseconds timeout = 5s) {
    const auto until = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < until) {
      if (condition()) return true;
      std::this_thread::sleep_for(5ms);
    }
    return condition();
  }

  boost::asio::io_context ioc_;
  boost::asio::executor_work_guard<boost::asio::io_context::executor_type> work_;
  std::vector<std::thread> threads_;
  ChatRequest request_;
  std::unique_ptr<OpenAiCompatibleProvider> provider_;
};

TEST_F(OpenAiCompatibleTest, StreamsDeltasInOrderWithUsageAndFinishReason) {
  FakeUpstream upstream(StreamHello);
  Make(Options(upstream.BaseUrl()));
  auto sink = Run();
  ASSERT_FALSE(sink->error()) << sink->error()->message;
  EXPECT_EQ(sink->deltas(), (std::vector<std::string>{"Hel", "lo", " héllo 🙂"}));
  ASSERT_TRUE(sink->completion());
  const Completion c = *sink->completion();
  EXPECT_EQ(c.finish_reason, FinishReason::kStop);
  EXPECT_TRUE(c.usage_known);
  EXPECT_EQ(c.usage.prompt_tokens, 21);
  EXPECT_EQ(c.usage.completion_tokens, 9);
  EXPECT_EQ(c.usage.cached_tokens, 16);
  EXPECT_EQ(c.usage.reasoning_tokens, 4);
  EXPECT_EQ(c.upstream_id, "chatcmpl-abc");
  EXPECT_EQ(sink->terminal_count(), 1);
  EXPECT_FALSE(sink->misbehaved());
  EXPECT_EQ(provider_->Name(), "FakeAI");
}

TEST_F(OpenAiCompatibleTest, SendsAStreamingRequestWithUsageAndBearerKey) {
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
  const auto body = boost::json::parse(req.body).as_object();
  EXPECT_EQ(body.at("model").as_string(), "gpt-4o-mini-2024-07-18");
  EXPECT_EQ(body.at("stream").as_bool(), true);
  EXPECT_EQ(body.at("stream_options").at("include_usage").as_bool(), true);
  EXPECT_EQ(body.at("messages").as_array().size(), 2u);
  EXPECT_EQ(body.at("max_tokens").as_int64(), 32);
}

TEST_F(OpenAiCompatibleTest, NoAuthorizationHeaderWithoutKey) {
  FakeUpstream upstream(StreamHello);
  auto options = Options(upstream.BaseUrl());
  options.api_key.clear();
  Make(options);
  auto sink = Run();
  ASSERT_TRUE(sink->completion());
  EXPECT_EQ(upstream.requests().at(0).headers.count("authorization"), 0u);
}

TEST_F(OpenAiCompatibleTest, CompletionsUseTheCompletionsEndpointAndText) {
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
  request_.prompt = "Tell me a story";
  auto sink = Run();
  ASSERT_TRUE(sink->completion());
  EXPECT_EQ(sink->text(), "Once upon");
  EXPECT_EQ(sink->completion()->finish_reason, FinishReason::kLength);
  EXPECT_FALSE(sink->completion()->usage_known);
  const auto req = upstream.requests().at(0);
  EXPECT_EQ(req.target, "/v1/completions");
  EXPECT_EQ(boost::json::parse(req.body).at("prompt").as_string(), "Tell me a story");
}

TEST_F(OpenAiCompatibleTest, ForwardsEachEventWithoutWaitingForTheNext) {
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

TEST_F(OpenAiCompatibleTest, MapsUpstreamErrorStatusesWithoutLeakingTheKey) {
  struct Case {
    int status;
    ErrorCode code;
  };
  for (const Case& c : {Case{429, ErrorCode::kResourceExhausted}, Case{500, ErrorCode::kUnavailable},
                        Case{401, ErrorCode::kBadGateway}, Case{403, ErrorCode::kBadGateway},
                        Case{400, ErrorCode::kInvalidArgument}, Case{504, ErrorCode::kUpstreamTimeout}}) {
    FakeUpstream upstream([&](const FakeRequest&, FakeResponder& r) {
      const std::string body = R"({"error":{"message":"Incorrect API key provided: )" +
                               std::string(kApiKey) +
                               R"(","type":"invalid_request_error","code":"invalid_api_key"}})";
      r.SendResponse(c.status, "application/json", body, "Retry-After: 3\r\n");
    });
    Make(Options(upstream.BaseUrl()));
    auto sink = Run();
    ASSERT_TRUE(sink->error()) << c.status;
    EXPECT_EQ(sink->error()->code, c.code) << c.status << ": " << sink->error()->message;
    EXPECT_EQ(sink->error()->message.find(kApiKey), std::string::npos) << sink->error()->message;
    EXPECT_TRUE(sink->deltas().empty());
    EXPECT_EQ(sink->terminal_count(), 1);
    if (c.status == 401) {
      EXPECT_EQ(sink->error()->message, "upstream rejected our credentials (HTTP 401)");
    }
    if (c.status == 400) {
      EXPECT_NE(sink->error()->message.find("Incorrect API key provided"), std::string::npos);
    }
  }
}

TEST_F(OpenAiCompatibleTest, ConnectionRefusedIsUnavailable) {
  Make(Options("http://127.0.0.1:" + std::to_string(testing::UnusedPort()) + "/v1"));
  auto sink = Run();
  ASSERT_TRUE(sink->error());
  EXPECT_EQ(sink->error()->code, ErrorCode::kUnavailable);
  EXPECT_NE(sink->error()->message.find("refused"), std::string::npos) << sink->error()->message;
}

TEST_F(OpenAiCompatibleTest, FirstByteTimeoutIsUpstreamTimeout) {
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
  EXPECT_LT(took, 2s);
  EXPECT_GE(took, 150ms);
  EXPECT_EQ(provider_->Stats().idle_connections, 0u);
}

TEST_F(OpenAiCompatibleTest, StallAfterHeadersIsUpstreamTimeout) {
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
}

TEST_F(OpenAiCompatibleTest, DeadlineIsHonoured) {
  FakeUpstream upstream([](const FakeRequest&, FakeResponder& r) { r.Pause(3000); });
  Make(Options(upstream.BaseUrl()));
  const auto start = std::chrono::steady_clock::now();
  auto sink = Run({}, start + 150ms);
  ASSERT_TRUE(sink->error());
  EXPECT_EQ(sink->error()->code, ErrorCode::kDeadlineExceeded) << sink->error()->message;
  EXPECT_LT(std::chrono::steady_clock::now() - start, 2s);

  auto late = Run({}, std::chrono::steady_clock::now() - 1ms);  // already past
  ASSERT_TRUE(late->error());
  EXPECT_EQ(late->error()->code, ErrorCode::kDeadlineExceeded);
}

TEST_F(OpenAiCompatibleTest, ReusesTheKeepAliveConnection) {
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
}

TEST_F(OpenAiCompatibleTest, RetriesOnceWhenAPooledConnectionWasDropped) {
  // The server accepts the second request on the kept-alive connection, then
  // drops it without a byte: the classic stale keep-alive race.
  FakeUpstream upstream([](const FakeRequest& req, FakeResponder& r) {
    if (req.connection_id == 1 && req.request_index == 1) {
      r.CloseAfterResponse();
      return;
    }
    StreamHello(req, r);
  });
  Make(Options(upstream.BaseUrl()));
  ASSERT_TRUE(Run()->completion());
  ASSERT_TRUE(WaitFor([&] { return provider_->Stats().idle_connections == 1; }));
  auto second = Run();
  ASSERT_TRUE(second->completion()) << second->error()->message;
  EXPECT_EQ(second->text(), "Hello héllo 🙂");
  EXPECT_EQ(upstream.connections(), 2);
  EXPECT_EQ(provider_->Stats().stale_retries, 1u);
}

TEST_F(OpenAiCompatibleTest, IdleConnectionClosedByServerIsNotUsed) {
  FakeUpstream upstream([](const FakeRequest& req, FakeResponder& r) {
    StreamHello(req, r);
    r.CloseAfterResponse();  // server closes after the response, no Connection: close
  });
  Make(Options(upstream.BaseUrl()));
  ASSERT_TRUE(Run()->completion());
  std::this_thread::sleep_for(100ms);  // let the FIN arrive
  auto second = Run();
  ASSERT_TRUE(second->completion()) << second->error()->message;
  EXPECT_EQ(upstream.connections(), 2);
}

TEST_F(OpenAiCompatibleTest, CancellationMidStreamClosesTheUpstreamConnection) {
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
}

TEST_F(OpenAiCompatibleTest, CancellationFromAnotherThreadWhileWaiting) {
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

TEST_F(OpenAiCompatibleTest, AlreadyCancelledCallEndsAtOnce) {
  FakeUpstream upstream(StreamHello);
  Make(Options(upstream.BaseUrl()));
  std::stop_source stop;
  stop.request_stop();
  auto sink = Run(stop.get_token());
  ASSERT_TRUE(sink->error());
  EXPECT_EQ(sink->error()->code, ErrorCode::kCancelled);
}

TEST_F(OpenAiCompatibleTest, InStreamErrorIsBadGateway) {
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
}

TEST_F(OpenAiCompatibleTest, StreamBrokenAfterDeltasIsBadGateway) {
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
}

TEST_F(OpenAiCompatibleTest, EndOfBodyWithoutDoneCompletes) {
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

TEST_F(OpenAiCompatibleTest, StreamCutOffWithoutFinishIsBadGateway) {
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
  ASSERT_TRUE(sink->error()) << "completed with finish "
                             << FinishReasonName(sink->completion()->finish_reason);
  EXPECT_EQ(sink->error()->code, ErrorCode::kBadGateway);
  EXPECT_NE(sink->error()->message.find("upstream stream ended before it finished"),
            std::string::npos)
      << sink->error()->message;
  EXPECT_EQ(sink->text(), "so far");
  EXPECT_EQ(sink->terminal_count(), 1);
  EXPECT_FALSE(sink->misbehaved());
}

TEST_F(OpenAiCompatibleTest, CleanlyEndedBodyWithoutFinishOrDoneIsBadGateway) {
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

TEST_F(OpenAiCompatibleTest, EndOfBodyAfterFinishReasonCompletesWithUsage) {
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

TEST_F(OpenAiCompatibleTest, InsaneUsageIsClampedBeforeItLeavesTheAdapter) {
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

TEST_F(OpenAiCompatibleTest, UpstreamErrorParamIsPassedOnAndMessagesAreCapped) {
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
  EXPECT_GE(sink->error()->message.size(), 1990u);  // not the old 500-byte cap
}

TEST_F(OpenAiCompatibleTest, BodyWithoutAnyEventIsBadGateway) {
  FakeUpstream upstream([](const FakeRequest&, FakeResponder& r) {
    r.SendResponse(200, "text/html", "<html><body>captive portal</body></html>");
  });
  Make(Options(upstream.BaseUrl()));
  auto sink = Run();
  ASSERT_TRUE(sink->error());
  EXPECT_EQ(sink->error()->code, ErrorCode::kBadGateway);
}

TEST_F(OpenAiCompatibleTest, AcceptsANonStreamedJsonAnswer) {
  FakeUpstream upstream([](const FakeRequest&, FakeResponder& r) {
    r.SendResponse(200, "application/json; charset=utf-8",
                   R"({"id":"chatcmpl-j","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"whole"},"finish_reason":"stop"}],"usage":{"prompt_tokens":2,"completion_tokens":1,"total_tokens":3}})");
  });
  Make(Options(upstream.BaseUrl()));
  auto sink = Run();
  ASSERT_TRUE(sink->completion());
  EXPECT_EQ(sink->text(), "whole");
  EXPECT_TRUE(sink->completion()->usage_known);
  EXPECT_EQ(sink->completion()->upstream_id, "chatcmpl-j");
}

TEST_F(OpenAiCompatibleTest, ConcurrentCallsEachGetTheirOwnAnswer) {
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

TEST(OpenAiCompatibleCreate, RejectsBadOptions) {
  boost::asio::io_context ioc;
  auto make = [&](std::string url, auto tweak) {
    OpenAiCompatibleOptions o;
    o.base_url = std::move(url);
    o.api_key = kApiKey;
    tweak(o);
    return OpenAiCompatibleProvider::Create(std::move(o), ioc);
  };
  auto none = [](OpenAiCompatibleOptions&) {};
  for (const char* url : {"", "not a url", "ftp://example.com/v1", "https://user:hunter2@example.com/v1",
                          "https://example.com/v1#frag", "/v1", "http://:80/v1"}) {
    auto r = make(url, none);
    ASSERT_FALSE(r.has_value()) << url;
    EXPECT_EQ(r.error().code, ErrorCode::kInvalidArgument) << url;
    EXPECT_EQ(r.error().message.find("hunter2"), std::string::npos);
  }
  EXPECT_FALSE(make("https://api.openai.com/v1", [](auto& o) { o.connect_timeout_ms = 0; }));
  EXPECT_FALSE(make("https://api.openai.com/v1", [](auto& o) { o.max_idle_connections = -1; }));
  EXPECT_FALSE(make("https://api.openai.com/v1", [](auto& o) { o.api_key = "sk\r\nX-Evil: 1"; }));
  EXPECT_FALSE(make("https://api.openai.com/v1", [](auto& o) { o.extra_headers["Bad Name"] = "x"; }));
  EXPECT_FALSE(make("https://api.openai.com/v1", [](auto& o) { o.ca_file = "/nonexistent/ca.pem"; }));
  auto ok = make("https://api.openai.com/v1/", none);
  ASSERT_TRUE(ok.has_value()) << ok.error().message;
  EXPECT_TRUE(make("http://[::1]:8080/v1?api-version=2024-06-01", none).has_value());
}

// TLS against a self-signed certificate for "localhost", trusted via ca_file.
class OpenAiCompatibleTlsTest : public OpenAiCompatibleTest {
 protected:
  OpenAiCompatibleTlsTest() : identity_(testing::MakeSelfSignedIdentity("localhost")) {
    ca_path_ = ::testing::TempDir() + "tollgate_test_ca_" + std::to_string(::getpid()) + ".pem";
    std::ofstream(ca_path_) << identity_.cert_pem;
  }
  ~OpenAiCompatibleTlsTest() override { std::remove(ca_path_.c_str()); }

  testing::FakeTlsIdentity identity_;
  std::string ca_path_;
};

TEST_F(OpenAiCompatibleTlsTest, StreamsOverVerifiedTls) {
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
}

TEST_F(OpenAiCompatibleTlsTest, WrongHostNameFailsVerification) {
  FakeUpstream upstream(StreamHello, identity_);
  auto options = Options(upstream.BaseUrl("127.0.0.1"));  // cert is for "localhost" only
  options.ca_file = ca_path_;
  Make(options);
  auto sink = Run();
  ASSERT_TRUE(sink->error());
  EXPECT_EQ(sink->error()->code, ErrorCode::kUnavailable);
  EXPECT_NE(sink->error()->message.find("TLS handshake"), std::string::npos) << sink->error()->message;
  EXPECT_TRUE(upstream.requests().empty());
}

TEST_F(OpenAiCompatibleTlsTest, UntrustedCertificateFails) {
  FakeUpstream upstream(StreamHello, identity_);
  Make(Options(upstream.BaseUrl("localhost")));  // no ca_file: system store only
  auto sink = Run();
  ASSERT_TRUE(sink->error());
  EXPECT_EQ(sink->error()->code, ErrorCode::kUnavailable);
  EXPECT_TRUE(upstream.requests().empty());
}

}  // namespace
}  // namespace tollgate::providers
