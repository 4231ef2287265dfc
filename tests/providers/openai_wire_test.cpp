#include "openai_wire.hpp"

#include <boost/json.hpp>
#include <gtest/gtest.h>

namespace tollgate::providers::detail {
namespace {

namespace json = boost::json;

ChatRequest ChatWithEverything() {
  ChatRequest r;
  r.model = "openai/gpt-4o-mini";
  r.messages = {{"system", "be brief"}, {"user", "héllo 🙂"}};
  r.max_tokens = 64;
  r.temperature = 0.5;
  r.top_p = 0.9;
  r.stop = {"\n\n", "END"};
  r.seed = 42;
  r.user = "user-7";
  r.stream = false;  // the caller wants one answer; upstream still streams
  return r;
}

TEST(OpenAiWire, ChatBodyAlwaysStreamsWithUsage) {
  const json::value body = json::parse(BuildRequestBody(ChatWithEverything(), "gpt-4o-mini-2024-07-18"));
  const auto& o = body.as_object();
  EXPECT_EQ(o.at("model").as_string(), "gpt-4o-mini-2024-07-18");
  EXPECT_EQ(o.at("stream").as_bool(), true);
  EXPECT_EQ(o.at("stream_options").at("include_usage").as_bool(), true);
  const auto& messages = o.at("messages").as_array();
  ASSERT_EQ(messages.size(), 2u);
  EXPECT_EQ(messages[0].at("role").as_string(), "system");
  EXPECT_EQ(messages[1].at("content").as_string(), "héllo 🙂");
  EXPECT_EQ(o.at("max_tokens").as_int64(), 64);
  EXPECT_DOUBLE_EQ(o.at("temperature").as_double(), 0.5);
  EXPECT_DOUBLE_EQ(o.at("top_p").as_double(), 0.9);
  EXPECT_EQ(o.at("stop").as_array().size(), 2u);
  EXPECT_EQ(o.at("seed").to_number<std::uint64_t>(), 42u);
  EXPECT_EQ(o.at("user").as_string(), "user-7");
  EXPECT_FALSE(o.contains("prompt"));
}

TEST(OpenAiWire, UnsetFieldsAreOmitted) {
  ChatRequest r;
  r.messages = {{"user", "hi"}};
  const auto o = json::parse(BuildRequestBody(r, "m")).as_object();
  for (const char* key : {"max_tokens", "temperature", "top_p", "stop", "seed", "user", "prompt"}) {
    EXPECT_FALSE(o.contains(key)) << key;
  }
  EXPECT_EQ(o.size(), 4u);  // model, messages, stream, stream_options
}

TEST(OpenAiWire, CompletionBodyUsesPrompt) {
  ChatRequest r;
  r.kind = RequestKind::kCompletion;
  r.prompt = "Once upon a time";
  const auto o = json::parse(BuildRequestBody(r, "davinci")).as_object();
  EXPECT_EQ(o.at("prompt").as_string(), "Once upon a time");
  EXPECT_FALSE(o.contains("messages"));
  EXPECT_EQ(EndpointPath(RequestKind::kCompletion), "/completions");
  EXPECT_EQ(EndpointPath(RequestKind::kChat), "/chat/completions");
}

TEST(OpenAiWire, DecodesChatChunksUsageAndFinishReason) {
  OpenAiStreamDecoder d(RequestKind::kChat);
  std::string text;
  for (const char* chunk : {
           R"({"id":"chatcmpl-9","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}],"usage":null})",
           R"({"id":"chatcmpl-9","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"Hel"},"finish_reason":null}],"usage":null})",
           R"({"id":"chatcmpl-9","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"lo"},"finish_reason":null}],"usage":null})",
           R"({"id":"chatcmpl-9","object":"chat.completion.chunk","choices":[{"index":0,"delta":{},"finish_reason":"length"}],"usage":null})",
           R"({"id":"chatcmpl-9","object":"chat.completion.chunk","choices":[],"usage":{"prompt_tokens":120,"completion_tokens":482,"total_tokens":602,"prompt_tokens_details":{"cached_tokens":100},"completion_tokens_details":{"reasoning_tokens":448}}})",
       }) {
    auto step = d.OnData(chunk, "");
    ASSERT_FALSE(step.error);
    EXPECT_FALSE(step.done);
    text += step.delta;
  }
  EXPECT_TRUE(d.OnData("[DONE]", "").done);
  EXPECT_EQ(text, "Hello");
  const Completion c = d.Finish(nullptr);
  EXPECT_EQ(c.finish_reason, FinishReason::kLength);
  EXPECT_TRUE(c.usage_known);
  EXPECT_EQ(c.usage.prompt_tokens, 120);
  EXPECT_EQ(c.usage.completion_tokens, 482);
  EXPECT_EQ(c.usage.cached_tokens, 100);
  EXPECT_EQ(c.usage.reasoning_tokens, 448);
  EXPECT_EQ(c.upstream_id, "chatcmpl-9");
}

TEST(OpenAiWire, UsageChunkWithNullOrMissingChoices) {
  for (const char* chunk : {R"({"id":"x","choices":null,"usage":{"prompt_tokens":3,"completion_tokens":4}})",
                            R"({"id":"x","usage":{"prompt_tokens":3,"completion_tokens":4}})"}) {
    OpenAiStreamDecoder d(RequestKind::kChat);
    auto step = d.OnData(chunk, "");
    ASSERT_FALSE(step.error);
    const Completion c = d.Finish(nullptr);
    EXPECT_TRUE(c.usage_known);
    EXPECT_EQ(c.usage.total_tokens(), 7);
  }
}

TEST(OpenAiWire, NoUsageChunkMeansUsageUnknown) {
  OpenAiStreamDecoder d(RequestKind::kChat);
  d.OnData(R"({"id":"x","choices":[{"index":0,"delta":{"content":"a"},"finish_reason":"stop"}],"usage":null})", "");
  const Completion c = d.Finish(nullptr);
  EXPECT_FALSE(c.usage_known);
  EXPECT_EQ(c.finish_reason, FinishReason::kStop);
}

TEST(OpenAiWire, CompletionChunksCarryText) {
  OpenAiStreamDecoder d(RequestKind::kCompletion);
  auto step = d.OnData(R"({"id":"cmpl-1","object":"text_completion","choices":[{"index":0,"text":" there","finish_reason":null}]})", "");
  EXPECT_EQ(step.delta, " there");
}

TEST(OpenAiWire, ErrorChunksBecomeBadGatewayWithoutTheKey) {
  OpenAiStreamDecoder d(RequestKind::kChat);
  auto step = d.OnData(R"({"error":{"message":"Overloaded for key sk-secret","code":502}})", "sk-secret");
  ASSERT_TRUE(step.error);
  EXPECT_EQ(step.error->code, ErrorCode::kBadGateway);
  EXPECT_NE(step.error->message.find("Overloaded"), std::string::npos);
  EXPECT_EQ(step.error->message.find("sk-secret"), std::string::npos);

  OpenAiStreamDecoder vllm(RequestKind::kChat);
  step = vllm.OnData(R"({"object":"error","message":"context too long","type":"BadRequestError"})", "");
  ASSERT_TRUE(step.error);
  EXPECT_NE(step.error->message.find("context too long"), std::string::npos);

  OpenAiStreamDecoder garbage(RequestKind::kChat);
  step = garbage.OnData("{not json", "");
  ASSERT_TRUE(step.error);
  EXPECT_EQ(step.error->code, ErrorCode::kBadGateway);
}

TEST(OpenAiWire, WholeResponseIsAccepted) {
  OpenAiStreamDecoder d(RequestKind::kChat);
  auto step = d.OnWholeResponse(
      R"({"id":"chatcmpl-2","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"Hi!"},"finish_reason":"stop"}],"usage":{"prompt_tokens":5,"completion_tokens":2,"total_tokens":7}})",
      "");
  ASSERT_FALSE(step.error);
  EXPECT_TRUE(step.done);
  EXPECT_EQ(step.delta, "Hi!");
  EXPECT_EQ(d.Finish(nullptr).usage.completion_tokens, 2);
}

TEST(OpenAiWire, FinishReasons) {
  EXPECT_EQ(ParseFinishReason("stop"), FinishReason::kStop);
  EXPECT_EQ(ParseFinishReason("length"), FinishReason::kLength);
  EXPECT_EQ(ParseFinishReason("tool_calls"), FinishReason::kToolCalls);
  EXPECT_EQ(ParseFinishReason("function_call"), FinishReason::kToolCalls);
  EXPECT_EQ(ParseFinishReason("content_filter"), FinishReason::kContentFilter);
  EXPECT_EQ(ParseFinishReason("eos"), FinishReason::kStop);
}

TEST(OpenAiWire, StatusMapping) {
  const std::string key = "sk-live-123456";
  const std::string body = R"({"error":{"message":"Incorrect API key provided: sk-live-123456","type":"invalid_request_error"}})";
  struct Case {
    int status;
    ErrorCode code;
  };
  for (const Case& c : {Case{400, ErrorCode::kInvalidArgument}, Case{404, ErrorCode::kInvalidArgument},
                        Case{422, ErrorCode::kInvalidArgument}, Case{401, ErrorCode::kBadGateway},
                        Case{403, ErrorCode::kBadGateway}, Case{408, ErrorCode::kUpstreamTimeout},
                        Case{504, ErrorCode::kUpstreamTimeout}, Case{429, ErrorCode::kResourceExhausted},
                        Case{500, ErrorCode::kUnavailable}, Case{503, ErrorCode::kUnavailable},
                        Case{418, ErrorCode::kBadGateway}}) {
    const Error e = MapUpstreamStatus(c.status, body, key);
    EXPECT_EQ(e.code, c.code) << c.status;
    EXPECT_EQ(e.message.find(key), std::string::npos) << c.status << ": " << e.message;
  }
  EXPECT_EQ(MapUpstreamStatus(401, body, key).message, "upstream rejected our credentials (HTTP 401)");
  EXPECT_EQ(MapUpstreamStatus(400, R"({"error":{"message":"max_tokens is too large"}})", key).message,
            "max_tokens is too large");
  EXPECT_NE(MapUpstreamStatus(429, "{}", key, "7").message.find("retry after 7"), std::string::npos);
  EXPECT_NE(MapUpstreamStatus(502, "Bad gateway from nginx", key).message.find("nginx"),
            std::string::npos);
}

TEST(OpenAiWire, UpstreamErrorMessageShapes) {
  EXPECT_EQ(UpstreamErrorMessage(R"({"error":{"message":"a"}})"), "a");
  EXPECT_EQ(UpstreamErrorMessage(R"({"error":"b"})"), "b");
  EXPECT_EQ(UpstreamErrorMessage(R"({"message":"c"})"), "c");
  EXPECT_EQ(UpstreamErrorMessage(R"({"detail":"d"})"), "d");
  EXPECT_EQ(UpstreamErrorMessage("plain text"), "plain text");
  EXPECT_EQ(UpstreamErrorMessage(std::string("\x01\x02", 2)), "");
  EXPECT_LE(UpstreamErrorMessage(std::string(5000, 'x')).size(), 503u);
}

TEST(OpenAiWire, Utf8PrefixHoldsBackTruncatedSequences) {
  const std::string s = "a🙂";  // 1 + 4 bytes
  EXPECT_EQ(CompleteUtf8Prefix(s), s.size());
  for (std::size_t cut = 2; cut < s.size(); ++cut) EXPECT_EQ(CompleteUtf8Prefix(s.substr(0, cut)), 1u);
  EXPECT_EQ(CompleteUtf8Prefix("é"), 2u);
  EXPECT_EQ(CompleteUtf8Prefix(""), 0u);
}

TEST(OpenAiWire, RedactReplacesEveryOccurrence) {
  EXPECT_EQ(Redact("k=abc, again abc", "abc"), "k=[redacted], again [redacted]");
  EXPECT_EQ(Redact("nothing", ""), "nothing");
}

}  // namespace
}  // namespace tollgate::providers::detail
