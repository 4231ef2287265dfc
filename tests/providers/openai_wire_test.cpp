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
  const std::string capped = UpstreamErrorMessage(std::string(5000, 'x'));
  EXPECT_EQ(capped.size(), kMaxUpstreamMessageBytes);
  EXPECT_EQ(kMaxUpstreamMessageBytes, 2000u);
  EXPECT_EQ(capped.substr(capped.size() - 3), "...");
  EXPECT_EQ(UpstreamErrorMessage(std::string(2000, 'y')), std::string(2000, 'y'));  // not cut
  // Multi-byte text is cut on a character boundary.
  std::string accents;
  for (int i = 0; i < 1500; ++i) accents += "é";
  const std::string cut = UpstreamErrorMessage(R"({"error":{"message":")" + accents + R"("}})");
  EXPECT_LE(cut.size(), 2000u);
  EXPECT_EQ(CompleteUtf8Prefix(cut.substr(0, cut.size() - 3)), cut.size() - 3);
}

TEST(OpenAiWire, KeyIsRedactedBeforeTheMessageIsCapped) {
  // A key straddling the cap must not leave a prefix of itself behind.
  const std::string key = "sk-live-ABCDEFGHIJKLMNOPQRSTUVWXYZ";
  const std::string body = R"({"error":{"message":")" + std::string(1985, 'x') + key + R"("}})";
  for (int status : {400, 429, 500}) {
    const Error e = MapUpstreamStatus(status, body, key);
    EXPECT_EQ(e.message.find("sk-live"), std::string::npos) << status << ": " << e.message.substr(1980);
  }
  OpenAiStreamDecoder d(RequestKind::kChat);
  auto step = d.OnData(R"({"error":{"message":")" + std::string(1985, 'x') + key + R"("}})", key);
  ASSERT_TRUE(step.error);
  EXPECT_EQ(step.error->message.find("sk-live"), std::string::npos);
}

TEST(OpenAiWire, FourXxErrorParamIsPassedThrough) {
  const std::string key = "sk-live-123456";
  EXPECT_EQ(MapUpstreamStatus(400, R"({"error":{"message":"bad","type":"invalid_request_error","param":"messages"}})", key).param,
            "messages");
  EXPECT_EQ(MapUpstreamStatus(422, R"({"error":{"message":"bad","param":"max_tokens"}})", key).param,
            "max_tokens");
  EXPECT_EQ(MapUpstreamStatus(404, R"({"error":{"message":"no such model","param":"model"}})", key).param,
            "model");
  // Without a usable message the param still comes through.
  const Error no_message = MapUpstreamStatus(400, R"({"error":{"param":"temperature"}})", key);
  EXPECT_EQ(no_message.code, ErrorCode::kInvalidArgument);
  EXPECT_EQ(no_message.param, "temperature");
  EXPECT_EQ(MapUpstreamStatus(429, R"({"error":{"message":"slow down","param":"model"}})", key).param,
            "model");
  // Strings only; absent, null, numbers and objects give no param.
  for (const char* body : {R"({"error":{"message":"bad"}})", R"({"error":{"message":"bad","param":null}})",
                           R"({"error":{"message":"bad","param":7}})",
                           R"({"error":{"message":"bad","param":{"a":1}}})", R"({"error":"bad"})",
                           R"({"param":"messages"})", "not json"}) {
    EXPECT_EQ(MapUpstreamStatus(400, body, key).param, "") << body;
  }
  // Capped at 200 bytes, on a UTF-8 boundary.
  EXPECT_EQ(MapUpstreamStatus(400, R"({"error":{"message":"bad","param":")" + std::string(500, 'p') + R"("}})", key).param,
            std::string(200, 'p'));
  std::string accents;
  for (int i = 0; i < 150; ++i) accents += "é";  // 300 bytes
  const std::string p = MapUpstreamStatus(400, R"({"error":{"param":")" + accents + R"("}})", key).param;
  EXPECT_EQ(p.size(), 200u);
  EXPECT_EQ(CompleteUtf8Prefix(p), p.size());
  // Never the key; nothing from 401/403 bodies; not for non-4xx statuses.
  EXPECT_EQ(MapUpstreamStatus(400, R"({"error":{"message":"bad","param":"sk-live-123456"}})", key).param,
            "[redacted]");
  for (int status : {401, 403, 500, 503, 502, 504}) {
    EXPECT_EQ(MapUpstreamStatus(status, R"({"error":{"message":"bad","param":"api_key"}})", key).param, "")
        << status;
  }
}

Usage UsageOf(std::string_view usage_json) {
  OpenAiStreamDecoder d(RequestKind::kChat);
  auto step = d.OnData(R"({"id":"x","choices":[],"usage":)" + std::string(usage_json) + "}", "");
  EXPECT_FALSE(step.error);
  const Completion c = d.Finish(nullptr);
  EXPECT_TRUE(c.usage_known) << usage_json;
  return c.usage;
}

TEST(OpenAiWire, UsageCountsAreClampedToSaneValues) {
  EXPECT_EQ(kMaxUsageTokens, 1'000'000'000'000);
  // Negative -> 0.
  Usage u = UsageOf(R"({"prompt_tokens":-5,"completion_tokens":-9223372036854775808,
      "prompt_tokens_details":{"cached_tokens":-1},"completion_tokens_details":{"reasoning_tokens":-2}})");
  EXPECT_EQ(u.prompt_tokens, 0);
  EXPECT_EQ(u.completion_tokens, 0);
  EXPECT_EQ(u.cached_tokens, 0);
  EXPECT_EQ(u.reasoning_tokens, 0);
  // Above the cap, including uint64 above INT64_MAX (2^64-1) and huge doubles.
  u = UsageOf(R"({"prompt_tokens":18446744073709551615,"completion_tokens":9223372036854775807,
      "prompt_tokens_details":{"cached_tokens":1e300},"completion_tokens_details":{"reasoning_tokens":1000000000001}})");
  EXPECT_EQ(u.prompt_tokens, kMaxUsageTokens);
  EXPECT_EQ(u.completion_tokens, kMaxUsageTokens);
  EXPECT_EQ(u.cached_tokens, kMaxUsageTokens);
  EXPECT_EQ(u.reasoning_tokens, kMaxUsageTokens);
  EXPECT_EQ(u.total_tokens(), 2 * kMaxUsageTokens);
  u = UsageOf(R"({"prompt_tokens":9223372036854775808,"completion_tokens":1e12})");
  EXPECT_EQ(u.prompt_tokens, kMaxUsageTokens);
  EXPECT_EQ(u.completion_tokens, kMaxUsageTokens);
  // Fractions truncate toward zero; negative fractions become 0.
  u = UsageOf(R"({"prompt_tokens":12.9,"completion_tokens":7.5,
      "prompt_tokens_details":{"cached_tokens":-0.5},"completion_tokens_details":{"reasoning_tokens":3.99}})");
  EXPECT_EQ(u.prompt_tokens, 12);
  EXPECT_EQ(u.completion_tokens, 7);
  EXPECT_EQ(u.cached_tokens, 0);
  EXPECT_EQ(u.reasoning_tokens, 3);
  u = UsageOf(R"({"prompt_tokens":1.5e3,"completion_tokens":2E1})");
  EXPECT_EQ(u.prompt_tokens, 1500);
  EXPECT_EQ(u.completion_tokens, 20);
  // Non-numbers are absent.
  u = UsageOf(R"({"prompt_tokens":"100","completion_tokens":4,
      "prompt_tokens_details":{"cached_tokens":true},"completion_tokens_details":{"reasoning_tokens":null}})");
  EXPECT_EQ(u.prompt_tokens, 0);
  EXPECT_EQ(u.completion_tokens, 4);
  EXPECT_EQ(u.cached_tokens, 0);
  EXPECT_EQ(u.reasoning_tokens, 0);
}

TEST(OpenAiWire, UsagePartsNeverExceedTheirTotals) {
  Usage u = UsageOf(R"({"prompt_tokens":10,"completion_tokens":3,
      "prompt_tokens_details":{"cached_tokens":50},"completion_tokens_details":{"reasoning_tokens":4}})");
  EXPECT_EQ(u.cached_tokens, 10);
  EXPECT_EQ(u.reasoning_tokens, 3);
  // The same for DeepSeek's and Moonshot's spellings of cached tokens.
  EXPECT_EQ(UsageOf(R"({"prompt_tokens":10,"completion_tokens":1,"prompt_cache_hit_tokens":11})").cached_tokens, 10);
  EXPECT_EQ(UsageOf(R"({"prompt_tokens":10,"completion_tokens":1,"cached_tokens":1e20})").cached_tokens, 10);
  EXPECT_EQ(UsageOf(R"({"prompt_tokens":10,"completion_tokens":1,"cached_tokens":-3})").cached_tokens, 0);
  // In range: unchanged.
  u = UsageOf(R"({"prompt_tokens":120,"completion_tokens":482,
      "prompt_tokens_details":{"cached_tokens":100},"completion_tokens_details":{"reasoning_tokens":448}})");
  EXPECT_EQ(u.prompt_tokens, 120);
  EXPECT_EQ(u.completion_tokens, 482);
  EXPECT_EQ(u.cached_tokens, 100);
  EXPECT_EQ(u.reasoning_tokens, 448);
}

TEST(OpenAiWire, UsageWithoutAnyCountReportsNothing) {
  for (const char* usage : {R"({})", R"({"prompt_tokens":"x","completion_tokens":null})",
                            R"({"total_tokens":30})"}) {
    OpenAiStreamDecoder d(RequestKind::kChat);
    ASSERT_FALSE(d.OnData(R"({"id":"x","choices":[],"usage":)" + std::string(usage) + "}", "").error);
    EXPECT_FALSE(d.Finish(nullptr).usage_known) << usage;
  }
  // ...and does not wipe usage reported earlier.
  OpenAiStreamDecoder d(RequestKind::kChat);
  d.OnData(R"({"id":"x","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":4}})", "");
  d.OnData(R"({"id":"x","choices":[],"usage":{}})", "");
  const Completion c = d.Finish(nullptr);
  EXPECT_TRUE(c.usage_known);
  EXPECT_EQ(c.usage.total_tokens(), 7);
}

TEST(OpenAiWire, WholeResponseUsageIsClampedToo) {
  OpenAiStreamDecoder d(RequestKind::kChat);
  auto step = d.OnWholeResponse(
      R"({"id":"c","choices":[{"index":0,"message":{"content":"Hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":-7,"completion_tokens":18446744073709551615}})",
      "");
  ASSERT_FALSE(step.error);
  const Completion c = d.Finish(nullptr);
  EXPECT_EQ(c.usage.prompt_tokens, 0);
  EXPECT_EQ(c.usage.completion_tokens, kMaxUsageTokens);
}

TEST(OpenAiWire, OnlyChoiceZeroIsRead) {
  OpenAiStreamDecoder d(RequestKind::kChat);
  EXPECT_EQ(d.OnData(R"({"choices":[{"index":-1,"delta":{"content":"no"}},{"index":0.5,"delta":{"content":"no"}},{"index":0,"delta":{"content":"yes"}}]})", "").delta,
            "yes");
  EXPECT_EQ(d.OnData(R"({"choices":[{"delta":{"content":"!"}}]})", "").delta, "!");  // unnumbered
}

TEST(OpenAiWire, FinishSeenTracksANonNullFinishReason) {
  OpenAiStreamDecoder d(RequestKind::kChat);
  d.OnData(R"({"choices":[{"index":0,"delta":{"content":"a"},"finish_reason":null}]})", "");
  d.OnData(R"({"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":1}})", "");
  EXPECT_FALSE(d.finish_seen());
  d.OnData(R"({"choices":[{"index":0,"delta":{},"finish_reason":"length"}]})", "");
  EXPECT_TRUE(d.finish_seen());
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
