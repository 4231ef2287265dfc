#include "tollgate/wire/openai.hpp"
#include "tollgate/core/parameters.hpp"

#include <boost/json.hpp>
#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace tollgate::wire::openai {
namespace {
namespace json = boost::json;

// ---------------------------------------------------------------- helpers

ChatRequest Decode(std::string_view body) {
  Result<ChatRequest> r = DecodeChatRequest(body);
  EXPECT_TRUE(r) << (r ? "" : r.error().message + " [" + r.error().param + "]") << "\n" << body;
  return r ? *r : ChatRequest{};
}

void ExpectRejected(std::string_view body, std::string_view param, bool completion = false) {
  Result<ChatRequest> r = completion ? DecodeCompletionRequest(body) : DecodeChatRequest(body);
  ASSERT_FALSE(r) << body;
  EXPECT_EQ(r.error().code, ErrorCode::kInvalidArgument) << body;
  EXPECT_EQ(r.error().param, param) << r.error().message << "\n" << body;
  EXPECT_FALSE(r.error().message.empty());
}

// A chat body around `extra` fields (after a comma) and one user message.
std::string Body(std::string_view extra) {
  std::string body = R"({"model":"m","messages":[{"role":"user","content":"hi"}])";
  if (!extra.empty()) body += "," + std::string(extra);
  return body + "}";
}

std::string WithMessages(std::string_view messages, std::string_view extra = {}) {
  std::string body = R"({"model":"m","messages":)" + std::string(messages);
  if (!extra.empty()) body += "," + std::string(extra);
  return body + "}";
}

json::object Object(std::string_view text) {
  json::value v = json::parse(text);
  EXPECT_TRUE(v.is_object()) << text;
  return v.is_object() ? v.get_object() : json::object{};
}

bool IsValidUtf8(std::string_view s) {
  std::size_t i = 0;
  while (i < s.size()) {
    const auto b = static_cast<unsigned char>(s[i]);
    std::size_t n = b < 0x80 ? 1 : (b >> 5) == 0x6 ? 2 : (b >> 4) == 0xE ? 3 : (b >> 3) == 0x1E ? 4 : 0;
    if (n == 0 || i + n > s.size()) return false;
    for (std::size_t k = 1; k < n; ++k) {
      if ((static_cast<unsigned char>(s[i + k]) & 0xC0) != 0x80) return false;
    }
    i += n;
  }
  return true;
}

// Feeds each chunk, then Finish; every chunk must be accepted.
std::vector<StreamEvent> Feed(ResponseDecoder& d, const std::vector<std::string>& chunks) {
  std::vector<StreamEvent> events;
  for (const std::string& chunk : chunks) {
    Result<void> r = d.OnData(chunk, events);
    EXPECT_TRUE(r) << (r ? "" : r.error().message) << "\n" << chunk;
  }
  d.Finish(events);
  return events;
}

std::vector<StreamEvent> FeedChat(const std::vector<std::string>& chunks) {
  ResponseDecoder d(RequestKind::kChat);
  return Feed(d, chunks);
}

ChatResponse Fold(const std::vector<StreamEvent>& events) {
  ResponseAccumulator acc;
  for (const StreamEvent& e : events) acc.Add(e);
  return acc.Take();
}

template <class T>
std::vector<T> All(const std::vector<StreamEvent>& events) {
  std::vector<T> out;
  for (const StreamEvent& e : events) {
    if (const auto* t = std::get_if<T>(&e)) out.push_back(*t);
  }
  return out;
}

// A chat chunk with one choice whose delta is `delta` (JSON text).
std::string DeltaChunk(std::string_view delta, int index = 0, std::string_view finish = "null") {
  return R"({"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":)" +
         std::to_string(index) + R"(,"delta":)" + std::string(delta) + R"(,"finish_reason":)" + std::string(finish) +
         "}]}";
}

std::string Quoted(std::string_view s) { return json::serialize(json::string(s)); }

// The JSON payloads of the `data:` events of an SSE text (no [DONE]).
std::vector<json::object> Chunks(std::string_view sse, bool* saw_done = nullptr) {
  std::vector<json::object> out;
  std::size_t pos = 0;
  while (pos < sse.size()) {
    const std::size_t end = sse.find("\n\n", pos);
    EXPECT_NE(end, std::string_view::npos) << "unterminated event in " << sse;
    if (end == std::string_view::npos) break;
    std::string_view event = sse.substr(pos, end - pos);
    EXPECT_EQ(event.substr(0, 6), "data: ") << event;
    event.remove_prefix(6);
    if (event == "[DONE]") {
      if (saw_done != nullptr) *saw_done = true;
    } else {
      out.push_back(Object(event));
    }
    pos = end + 2;
  }
  return out;
}

ResponseMeta Meta() { return ResponseMeta{"gen-1", 1700000000, "openai/gpt-4o", "OpenAI"}; }

// ================================================================ inbound chat requests

TEST(OpenAiDecode, ParsesAChatRequest) {
  ChatRequest r = Decode(R"({"model":"m","messages":[{"role":"system","content":"be brief"},
      {"role":"user","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]}],
      "max_tokens":10,"temperature":0.5,"top_p":0.9,"stop":["x","y"],"seed":7,
      "stream":true,"stream_options":{"include_usage":true},"user":"u1","frequency_penalty":0})");
  EXPECT_EQ(r.model, "m");
  EXPECT_EQ(r.kind, RequestKind::kChat);
  EXPECT_EQ(r.api, ApiFlavor::kOpenAiChat);
  ASSERT_EQ(r.messages.size(), 2u);
  EXPECT_EQ(r.messages[0].role, Role::kSystem);
  EXPECT_EQ(MessageText(r.messages[0]), "be brief");
  ASSERT_EQ(r.messages[1].parts.size(), 2u);
  EXPECT_EQ(MessageText(r.messages[1]), "ab");
  EXPECT_EQ(*r.max_tokens, 10);
  EXPECT_EQ(r.max_tokens_field, MaxTokensField::kMaxTokens);
  EXPECT_DOUBLE_EQ(*r.temperature, 0.5);
  EXPECT_DOUBLE_EQ(*r.top_p, 0.9);
  EXPECT_EQ(r.stop, (std::vector<std::string>{"x", "y"}));
  EXPECT_EQ(*r.seed, 7u);
  EXPECT_DOUBLE_EQ(*r.frequency_penalty, 0);
  EXPECT_TRUE(r.stream);
  EXPECT_TRUE(r.include_usage);
  EXPECT_EQ(r.user, "u1");
  EXPECT_FALSE(r.presence_penalty);
  EXPECT_FALSE(r.n);
  EXPECT_FALSE(r.reasoning);
}

TEST(OpenAiDecode, MaxCompletionTokensWinsOverMaxTokens) {
  ChatRequest r = Decode(Body(R"("max_tokens":10,"max_completion_tokens":50)"));
  EXPECT_EQ(*r.max_tokens, 50);
  EXPECT_EQ(r.max_tokens_field, MaxTokensField::kMaxCompletionTokens);
  r = Decode(Body(R"("max_completion_tokens":7)"));
  EXPECT_EQ(*r.max_tokens, 7);
  EXPECT_EQ(r.max_tokens_field, MaxTokensField::kMaxCompletionTokens);
  r = Decode(Body(R"("max_tokens":16777216)"));
  EXPECT_EQ(*r.max_tokens, 1 << 24);
  EXPECT_EQ(r.max_tokens_field, MaxTokensField::kMaxTokens);
  r = Decode(Body(R"("max_tokens":null)"));
  EXPECT_FALSE(r.max_tokens);
  EXPECT_EQ(r.max_tokens_field, MaxTokensField::kNone);
}

TEST(OpenAiDecode, RejectsBadRequestsNamingTheField) {
  ExpectRejected("{not json", "");
  ExpectRejected("[1]", "");
  ExpectRejected(R"({"messages":[]})", "model");
  ExpectRejected(R"({"model":"","messages":[]})", "model");
  ExpectRejected(R"({"model":"m"})", "messages");
  ExpectRejected(R"({"model":"m","messages":"hi"})", "messages");
  ExpectRejected(R"({"model":"m","messages":[]})", "messages");
  ExpectRejected(R"({"model":"m","messages":[5]})", "messages[0]");
  ExpectRejected(R"({"model":"m","messages":[{"content":"x"}]})", "messages[0].role");
  ExpectRejected(R"({"model":"m","messages":[{"role":"wizard","content":"x"}]})", "messages[0].role");
  ExpectRejected(R"({"model":"m","messages":[{"role":"user","content":5}]})", "messages[0].content");
  ExpectRejected(R"({"model":"m","messages":[{"role":"user","content":null}]})", "messages[0].content");
  ExpectRejected(R"({"model":"m","messages":[{"role":"system"}]})", "messages[0].content");
  ExpectRejected(R"({"model":"m","messages":[{"role":"user","content":"x","name":3}]})", "messages[0].name");
  ExpectRejected(Body(R"("temperature":3)"), "temperature");
  ExpectRejected(Body(R"("max_tokens":0)"), "max_tokens");
  ExpectRejected(Body(R"("stop":[1])"), "stop");
  ExpectRejected(Body(R"("n":0)"), "n");
  ExpectRejected(Body(R"("stream":"yes")"), "stream");
  ExpectRejected(Body(R"("stream_options":{"include_usage":1})"), "stream_options.include_usage");
  ExpectRejected(Body(R"("stream_options":true)"), "stream_options");
  ExpectRejected(Body(R"("user":5)"), "user");
}

TEST(OpenAiDecode, RangeErrorsReadAsPlainNumbers) {
  Result<ChatRequest> r = DecodeChatRequest(Body(R"("temperature":3)"));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().message, "temperature must be between 0 and 2");
  r = DecodeChatRequest(Body(R"("top_p":0)"));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().message, "top_p must be greater than 0");
  r = DecodeChatRequest(Body(R"("n":500)"));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().message, "n must be between 1 and 128");
}

TEST(OpenAiDecode, RejectsDeeplyNestedJson) {
  std::string deep(100, '[');
  deep += std::string(100, ']');
  ExpectRejected(R"({"model":"m","messages":)" + deep + "}", "");
}

TEST(OpenAiDecode, SamplingRangesAreEnforced) {
  struct Case {
    const char* field;
    const char* param;
  };
  for (const Case& c : {
           Case{R"("temperature":-0.1)", "temperature"},
           Case{R"("temperature":"hot")", "temperature"},
           Case{R"("top_p":0)", "top_p"},
           Case{R"("top_p":1.01)", "top_p"},
           Case{R"("top_k":-1)", "top_k"},
           Case{R"("top_k":1.5)", "top_k"},
           Case{R"("frequency_penalty":2.5)", "frequency_penalty"},
           Case{R"("presence_penalty":-2.5)", "presence_penalty"},
           Case{R"("repetition_penalty":0)", "repetition_penalty"},
           Case{R"("repetition_penalty":2.1)", "repetition_penalty"},
           Case{R"("min_p":-0.1)", "min_p"},
           Case{R"("min_p":1.5)", "min_p"},
           Case{R"("logit_bias":[1])", "logit_bias"},
           Case{R"("logit_bias":{"abc":1})", "logit_bias"},
           Case{R"("logit_bias":{"-1":1})", "logit_bias"},
           Case{R"("logit_bias":{"5":101})", "logit_bias"},
           Case{R"("logit_bias":{"5":"1"})", "logit_bias"},
           Case{R"("max_tokens":16777217)", "max_tokens"},
           Case{R"("max_tokens":-5)", "max_tokens"},
           Case{R"("max_tokens":"10")", "max_tokens"},
           Case{R"("max_completion_tokens":0)", "max_completion_tokens"},
           Case{R"("max_tokens":18446744073709551615)", "max_tokens"},
           Case{R"("n":129)", "n"},
           Case{R"("n":1.5)", "n"},
           Case{R"("top_logprobs":21)", "top_logprobs"},
           Case{R"("top_logprobs":-1)", "top_logprobs"},
           Case{R"("logprobs":"yes")", "logprobs"},
           Case{R"("seed":"7")", "seed"},
           Case{R"("seed":1.5)", "seed"},
           Case{R"("seed":18446744073709551615)", "seed"},
           Case{R"("parallel_tool_calls":1)", "parallel_tool_calls"},
       }) {
    ExpectRejected(Body(c.field), c.param);
  }
}

TEST(OpenAiDecode, SamplingBoundariesAreAccepted) {
  ChatRequest r = Decode(Body(R"("temperature":0,"top_p":1,"top_k":0,"frequency_penalty":-2,
      "presence_penalty":2,"repetition_penalty":2,"max_tokens":1,"n":128,"top_logprobs":20,"logprobs":true,
      "parallel_tool_calls":false)"));
  EXPECT_DOUBLE_EQ(*r.temperature, 0);
  EXPECT_DOUBLE_EQ(*r.top_p, 1);
  EXPECT_EQ(*r.top_k, 0);
  EXPECT_DOUBLE_EQ(*r.frequency_penalty, -2);
  EXPECT_DOUBLE_EQ(*r.presence_penalty, 2);
  EXPECT_DOUBLE_EQ(*r.repetition_penalty, 2);
  EXPECT_EQ(*r.max_tokens, 1);
  EXPECT_EQ(*r.n, 128);
  EXPECT_EQ(*r.top_logprobs, 20);
  EXPECT_TRUE(r.logprobs);
  EXPECT_EQ(r.parallel_tool_calls, false);
  // Integral doubles count as integers (JavaScript clients may send 100.0).
  r = Decode(Body(R"("max_tokens":100.0,"top_k":40)"));
  EXPECT_EQ(*r.max_tokens, 100);
  EXPECT_EQ(*r.top_k, 40);
}

TEST(OpenAiDecode, SeedKeepsSignedValues) {
  EXPECT_EQ(*Decode(Body(R"("seed":-1)")).seed, static_cast<uint64_t>(int64_t{-1}));
  EXPECT_EQ(*Decode(Body(R"("seed":9223372036854775807)")).seed, 9223372036854775807u);
  EXPECT_EQ(*Decode(Body(R"("seed":0)")).seed, 0u);
}

TEST(OpenAiDecode, StopIsAStringOrUpToFourNonEmptyStrings) {
  EXPECT_EQ(Decode(Body(R"("stop":"END")")).stop, std::vector<std::string>{"END"});
  EXPECT_EQ(Decode(Body(R"("stop":["a","b","c","d"])")).stop.size(), 4u);
  EXPECT_TRUE(Decode(Body(R"("stop":null)")).stop.empty());
  EXPECT_TRUE(Decode(Body(R"("stop":[])")).stop.empty());
  ExpectRejected(Body(R"("stop":["a","b","c","d","e"])"), "stop");
  ExpectRejected(Body(R"("stop":"")"), "stop");
  ExpectRejected(Body(R"("stop":["a",""])"), "stop");
  ExpectRejected(Body(R"("stop":{"a":1})"), "stop");
}

TEST(OpenAiDecode, EveryRoleDecodes) {
  ChatRequest r = Decode(WithMessages(R"([
      {"role":"system","content":"sys"},
      {"role":"developer","content":[{"type":"text","text":"dev"}]},
      {"role":"user","content":"hi","name":"ann"},
      {"role":"assistant","content":"calling","tool_calls":[{"id":"call_1","type":"function",
        "function":{"name":"get_weather","arguments":"{\"city\":\"Paris\"}"}}]},
      {"role":"tool","tool_call_id":"call_1","content":"sunny"},
      {"role":"assistant","content":"It is sunny."}])"));
  ASSERT_EQ(r.messages.size(), 6u);
  EXPECT_EQ(r.messages[0].role, Role::kSystem);
  EXPECT_EQ(r.messages[1].role, Role::kDeveloper);
  EXPECT_EQ(MessageText(r.messages[1]), "dev");
  EXPECT_EQ(r.messages[2].role, Role::kUser);
  EXPECT_EQ(r.messages[2].name, "ann");
  EXPECT_EQ(r.messages[3].role, Role::kAssistant);
  ASSERT_EQ(r.messages[3].parts.size(), 2u);
  EXPECT_EQ(std::get<TextPart>(r.messages[3].parts[0]).text, "calling");
  const auto& call = std::get<ToolCallPart>(r.messages[3].parts[1]);
  EXPECT_EQ(call.id, "call_1");
  EXPECT_EQ(call.name, "get_weather");
  EXPECT_EQ(call.arguments, R"({"city":"Paris"})");
  EXPECT_EQ(r.messages[4].role, Role::kTool);
  ASSERT_EQ(r.messages[4].parts.size(), 1u);
  const auto& result = std::get<ToolResultPart>(r.messages[4].parts[0]);
  EXPECT_EQ(result.tool_call_id, "call_1");
  EXPECT_EQ(result.name, "get_weather");  // looked up from the call
  ASSERT_EQ(result.content.size(), 1u);
  EXPECT_EQ(std::get<TextPart>(result.content[0]).text, "sunny");
  EXPECT_EQ(MessageText(r.messages[5]), "It is sunny.");
}

TEST(OpenAiDecode, UserContentKeepsTextImagesAndCacheControl) {
  ChatRequest r = Decode(WithMessages(R"([{"role":"user","content":[
      {"type":"text","text":"look","cache_control":{"type":"ephemeral","ttl":"1h"}},
      {"type":"image_url","image_url":{"url":"https://x.test/a.png","detail":"high"}},
      {"type":"image_url","image_url":"data:image/png;base64,AAAA","cache_control":{"type":"ephemeral"}}]}])"));
  ASSERT_EQ(r.messages[0].parts.size(), 3u);
  const auto& text = std::get<TextPart>(r.messages[0].parts[0]);
  EXPECT_EQ(text.text, "look");
  EXPECT_EQ(text.cache_control.at("ttl").as_string(), "1h");
  const auto& image = std::get<ImagePart>(r.messages[0].parts[1]);
  EXPECT_EQ(image.url, "https://x.test/a.png");
  EXPECT_EQ(image.detail, "high");
  EXPECT_TRUE(image.cache_control.empty());
  const auto& inline_image = std::get<ImagePart>(r.messages[0].parts[2]);
  EXPECT_EQ(inline_image.url, "data:image/png;base64,AAAA");
  EXPECT_EQ(inline_image.cache_control.at("type").as_string(), "ephemeral");
}

TEST(OpenAiDecode, UnsupportedPartTypesNameThePart) {
  ExpectRejected(WithMessages(R"([{"role":"system","content":"s"},{"role":"user","content":[
      {"type":"text","text":"a"},{"type":"image_url","image_url":{"url":"https://x.test/i.png"}},
      {"type":"input_audio","input_audio":{"data":"AAAA","format":"wav"}}]}])"),
                 "messages[1].content[2].type");
  ExpectRejected(WithMessages(R"([{"role":"user","content":[{"type":"file","file":{"file_id":"f"}}]}])"),
                 "messages[0].content[0].type");
  ExpectRejected(WithMessages(R"([{"role":"system","content":[{"type":"image_url","image_url":{"url":"u"}}]}])"),
                 "messages[0].content[0].type");
  ExpectRejected(WithMessages(R"([{"role":"assistant","content":[{"type":"image_url","image_url":{"url":"u"}}]}])"),
                 "messages[0].content[0].type");
  ExpectRejected(WithMessages(R"([{"role":"user","content":[{"type":"refusal","refusal":"no"}]}])"),
                 "messages[0].content[0].type");
  ExpectRejected(WithMessages(R"([{"role":"user","content":[{"text":"a"}]}])"), "messages[0].content[0].type");
  ExpectRejected(WithMessages(R"([{"role":"user","content":["a"]}])"), "messages[0].content[0]");
  ExpectRejected(WithMessages(R"([{"role":"user","content":[{"type":"text"}]}])"), "messages[0].content[0].text");
  ExpectRejected(WithMessages(R"([{"role":"user","content":[{"type":"image_url","image_url":{}}]}])"),
                 "messages[0].content[0].image_url.url");
  ExpectRejected(WithMessages(R"([{"role":"user","content":[{"type":"image_url","image_url":{"url":""}}]}])"),
                 "messages[0].content[0].image_url.url");
  ExpectRejected(WithMessages(R"([{"role":"user","content":[{"type":"image_url"}]}])"),
                 "messages[0].content[0].image_url");
  ExpectRejected(WithMessages(R"([{"role":"user","content":[{"type":"text","text":"a","cache_control":"x"}]}])"),
                 "messages[0].content[0].cache_control");
  Result<ChatRequest> r = DecodeChatRequest(
      WithMessages(R"([{"role":"user","content":[{"type":"input_audio","input_audio":{}}]}])"));
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find("input_audio"), std::string::npos) << r.error().message;
}

TEST(OpenAiDecode, RefusalPartsOnAssistantMessagesCountAsText) {
  ChatRequest r = Decode(WithMessages(R"([{"role":"user","content":"q"},
      {"role":"assistant","content":[{"type":"text","text":"Well, "},{"type":"refusal","refusal":"I can't."}]},
      {"role":"assistant","content":null,"refusal":"No."}])"));
  EXPECT_EQ(MessageText(r.messages[1]), "Well, I can't.");
  EXPECT_EQ(MessageText(r.messages[2]), "No.");
}

TEST(OpenAiDecode, AssistantToolCallArgumentsStayJsonText) {
  ChatRequest r = Decode(WithMessages(R"([{"role":"assistant","content":null,"tool_calls":[
      {"id":"a","type":"function","function":{"name":"f","arguments":""}},
      {"id":"b","function":{"name":"g"}},
      {"id":"c","type":"function","function":{"name":"h","arguments":{"x":1}}}]}])"));
  ASSERT_EQ(r.messages[0].parts.size(), 3u);
  EXPECT_EQ(std::get<ToolCallPart>(r.messages[0].parts[0]).arguments, "{}");
  EXPECT_EQ(std::get<ToolCallPart>(r.messages[0].parts[1]).arguments, "{}");
  EXPECT_EQ(std::get<ToolCallPart>(r.messages[0].parts[2]).arguments, R"({"x":1})");
  ExpectRejected(WithMessages(R"([{"role":"assistant","tool_calls":[{"function":{"name":"f"}}]}])"),
                 "messages[0].tool_calls[0].id");
  ExpectRejected(WithMessages(R"([{"role":"assistant","tool_calls":[{"id":"a","function":{}}]}])"),
                 "messages[0].tool_calls[0].function.name");
  ExpectRejected(WithMessages(R"([{"role":"assistant","tool_calls":[{"id":"a"}]}])"),
                 "messages[0].tool_calls[0].function");
  ExpectRejected(WithMessages(R"([{"role":"assistant","tool_calls":[{"id":"a","type":"custom","function":{"name":"f"}}]}])"),
                 "messages[0].tool_calls[0].type");
  ExpectRejected(WithMessages(R"([{"role":"assistant","tool_calls":[{"id":"a","function":{"name":"f","arguments":5}}]}])"),
                 "messages[0].tool_calls[0].function.arguments");
  ExpectRejected(WithMessages(R"([{"role":"assistant","tool_calls":{}}])"), "messages[0].tool_calls");
}

TEST(OpenAiDecode, AssistantPartsAreReasoningThenTextThenToolCalls) {
  ChatRequest r = Decode(WithMessages(R"([{"role":"assistant","tool_calls":[{"id":"a","type":"function",
      "function":{"name":"f","arguments":"{}"}}],"content":"text","reasoning_content":"thinking"}])"));
  const auto& parts = r.messages[0].parts;
  ASSERT_EQ(parts.size(), 3u);
  EXPECT_EQ(std::get<ReasoningPart>(parts[0]).text, "thinking");
  EXPECT_EQ(std::get<ReasoningPart>(parts[0]).kind, ReasoningPart::Kind::kText);
  EXPECT_EQ(std::get<TextPart>(parts[1]).text, "text");
  EXPECT_EQ(std::get<ToolCallPart>(parts[2]).id, "a");
}

TEST(OpenAiDecode, ReasoningStringsBecomeOneReasoningPart) {
  ChatRequest r = Decode(WithMessages(R"([{"role":"assistant","content":"x","reasoning":"r1"},
      {"role":"assistant","content":"x","reasoning_content":"r2"},
      {"role":"assistant","content":"x","reasoning":"r3","reasoning_content":"r3"},
      {"role":"assistant","content":"x","reasoning":""}])"));
  EXPECT_EQ(std::get<ReasoningPart>(r.messages[0].parts[0]).text, "r1");
  EXPECT_EQ(std::get<ReasoningPart>(r.messages[1].parts[0]).text, "r2");
  ASSERT_EQ(r.messages[2].parts.size(), 2u);  // never duplicated
  EXPECT_EQ(std::get<ReasoningPart>(r.messages[2].parts[0]).text, "r3");
  ASSERT_EQ(r.messages[3].parts.size(), 1u);
  EXPECT_TRUE(std::holds_alternative<TextPart>(r.messages[3].parts[0]));
  ExpectRejected(WithMessages(R"([{"role":"assistant","content":"x","reasoning":5}])"), "messages[0].reasoning");
}

TEST(OpenAiDecode, ReasoningDetailsArePreferredAndKeepEveryField) {
  ChatRequest r = Decode(WithMessages(R"([{"role":"assistant","content":"answer","reasoning":"dup",
      "reasoning_details":[
        {"type":"reasoning.text","text":"step 1","signature":"sig","format":"anthropic-claude-v1","index":0,"id":"rt"},
        {"type":"reasoning.summary","summary":"in short","format":"openai-responses-v1","index":1},
        {"type":"reasoning.encrypted","data":"opaque==","format":"anthropic-claude-v1","index":2,"id":null}]}])"));
  const auto& parts = r.messages[0].parts;
  ASSERT_EQ(parts.size(), 4u);
  const auto& text = std::get<ReasoningPart>(parts[0]);
  EXPECT_EQ(text.kind, ReasoningPart::Kind::kText);
  EXPECT_EQ(text.text, "step 1");
  EXPECT_EQ(text.signature, "sig");
  EXPECT_EQ(text.format, "anthropic-claude-v1");
  EXPECT_EQ(text.id, "rt");
  const auto& summary = std::get<ReasoningPart>(parts[1]);
  EXPECT_EQ(summary.kind, ReasoningPart::Kind::kSummary);
  EXPECT_EQ(summary.text, "in short");
  EXPECT_EQ(summary.format, "openai-responses-v1");
  const auto& encrypted = std::get<ReasoningPart>(parts[2]);
  EXPECT_EQ(encrypted.kind, ReasoningPart::Kind::kEncrypted);
  EXPECT_EQ(encrypted.data, "opaque==");
  EXPECT_TRUE(encrypted.id.empty());
  EXPECT_EQ(std::get<TextPart>(parts[3]).text, "answer");  // "dup" is not a reasoning part
}

TEST(OpenAiDecode, ReasoningDetailFragmentsOfOneBlockMerge) {
  ChatRequest r = Decode(WithMessages(R"([{"role":"assistant","content":"a","reasoning_details":[
      {"type":"reasoning.text","text":"Let me ","format":"anthropic-claude-v1","index":0},
      {"type":"reasoning.text","text":"think.","index":0},
      {"type":"reasoning.text","text":"","signature":"sig","index":0},
      {"type":"reasoning.text","text":"Second block","index":1}]}])"));
  ASSERT_EQ(r.messages[0].parts.size(), 3u);
  const auto& first = std::get<ReasoningPart>(r.messages[0].parts[0]);
  EXPECT_EQ(first.text, "Let me think.");
  EXPECT_EQ(first.signature, "sig");
  EXPECT_EQ(first.format, "anthropic-claude-v1");
  EXPECT_EQ(std::get<ReasoningPart>(r.messages[0].parts[1]).text, "Second block");
}

TEST(OpenAiDecode, BadReasoningDetailsNameTheEntry) {
  ExpectRejected(WithMessages(R"([{"role":"assistant","content":"a","reasoning_details":[{"type":"reasoning.magic"}]}])"),
                 "messages[0].reasoning_details[0].type");
  ExpectRejected(WithMessages(R"([{"role":"assistant","content":"a","reasoning_details":[{"type":"reasoning.text","text":"x"},{"type":"reasoning.encrypted"}]}])"),
                 "messages[0].reasoning_details[1].data");
  ExpectRejected(WithMessages(R"([{"role":"assistant","content":"a","reasoning_details":[{"type":"reasoning.summary"}]}])"),
                 "messages[0].reasoning_details[0].summary");
  ExpectRejected(WithMessages(R"([{"role":"assistant","content":"a","reasoning_details":{}}])"),
                 "messages[0].reasoning_details");
  ExpectRejected(WithMessages(R"([{"role":"assistant","content":"a","reasoning_details":[{"type":"reasoning.text","index":-1}]}])"),
                 "messages[0].reasoning_details[0].index");
}

TEST(OpenAiDecode, GeminiSignatureEntryAttachesToItsToolCall) {
  ChatRequest r = Decode(WithMessages(R"([{"role":"assistant","content":null,
      "tool_calls":[{"id":"call_9","type":"function","function":{"name":"f","arguments":"{}"}}],
      "reasoning_details":[{"type":"reasoning.encrypted","data":"thought-sig","format":"google-gemini-v1","index":0,"id":"call_9"},
                           {"type":"reasoning.encrypted","data":"other","format":"google-gemini-v1","index":1,"id":"not-a-call"}]}])"));
  const auto& parts = r.messages[0].parts;
  ASSERT_EQ(parts.size(), 2u);
  EXPECT_EQ(std::get<ReasoningPart>(parts[0]).data, "other");
  EXPECT_EQ(std::get<ToolCallPart>(parts[1]).thought_signature, "thought-sig");
}

TEST(OpenAiDecode, ToolMessagesNeedToolCallId) {
  ExpectRejected(WithMessages(R"([{"role":"tool","content":"x"}])"), "messages[0].tool_call_id");
  ExpectRejected(WithMessages(R"([{"role":"tool","tool_call_id":"","content":"x"}])"), "messages[0].tool_call_id");
  ExpectRejected(WithMessages(R"([{"role":"tool","tool_call_id":"a"}])"), "messages[0].content");
  ChatRequest r = Decode(WithMessages(R"([{"role":"tool","tool_call_id":"a","name":"lookup",
      "content":[{"type":"text","text":"part 1"},{"type":"text","text":"part 2"},
                 {"type":"image_url","image_url":{"url":"https://x.test/chart.png"}}]}])"));
  ASSERT_EQ(r.messages[0].parts.size(), 1u);
  const auto& result = std::get<ToolResultPart>(r.messages[0].parts[0]);
  EXPECT_EQ(result.tool_call_id, "a");
  EXPECT_EQ(result.name, "lookup");
  ASSERT_EQ(result.content.size(), 3u);
  EXPECT_EQ(std::get<ImagePart>(result.content[2]).url, "https://x.test/chart.png");
}

TEST(OpenAiDecode, LegacyFunctionCallAndFunctionMessageMapToTools) {
  ChatRequest r = Decode(WithMessages(R"([{"role":"user","content":"weather?"},
      {"role":"assistant","content":null,"function_call":{"name":"get_weather","arguments":"{\"c\":1}"}},
      {"role":"function","name":"get_weather","content":"rain"}])",
                                      R"("functions":[{"name":"get_weather","parameters":{"type":"object"}}],
      "function_call":{"name":"get_weather"})"));
  ASSERT_EQ(r.messages.size(), 3u);
  const auto& call = std::get<ToolCallPart>(r.messages[1].parts.at(0));
  EXPECT_EQ(call.name, "get_weather");
  EXPECT_EQ(call.arguments, R"({"c":1})");
  EXPECT_FALSE(call.id.empty());
  EXPECT_EQ(r.messages[2].role, Role::kTool);
  const auto& result = std::get<ToolResultPart>(r.messages[2].parts.at(0));
  EXPECT_EQ(result.tool_call_id, call.id);
  EXPECT_EQ(result.name, "get_weather");
  ASSERT_EQ(r.tools.size(), 1u);
  EXPECT_EQ(r.tools[0].name, "get_weather");
  ASSERT_TRUE(r.tool_choice);
  EXPECT_EQ(r.tool_choice->mode, ToolChoice::Mode::kFunction);
  EXPECT_EQ(r.tool_choice->function_name, "get_weather");
  ExpectRejected(WithMessages(R"([{"role":"function","name":"f","content":"x"}])"), "messages[0].role");
  ExpectRejected(WithMessages(R"([{"role":"user","content":"q"}])", R"("functions":[{"name":"a b"}])"),
                 "functions[0].name");
  ExpectRejected(WithMessages(R"([{"role":"user","content":"q"}])",
                              R"("functions":[{"name":"f"}],"function_call":{"name":"g"})"),
                 "function_call.name");
}

TEST(OpenAiDecode, ToolsAndToolChoice) {
  ChatRequest r = Decode(Body(R"("tools":[{"type":"function","function":{"name":"get_weather",
      "description":"Weather now","parameters":{"type":"object","properties":{"city":{"type":"string"}}},"strict":true}},
      {"type":"function","function":{"name":"noop"}}],"tool_choice":{"type":"function","function":{"name":"noop"}},
      "parallel_tool_calls":true)"));
  ASSERT_EQ(r.tools.size(), 2u);
  EXPECT_EQ(r.tools[0].name, "get_weather");
  EXPECT_EQ(r.tools[0].description, "Weather now");
  EXPECT_EQ(r.tools[0].parameters.at("type").as_string(), "object");
  EXPECT_EQ(r.tools[0].strict, true);
  EXPECT_TRUE(r.tools[1].parameters.is_null());
  EXPECT_FALSE(r.tools[1].strict);
  EXPECT_EQ(r.tool_choice->mode, ToolChoice::Mode::kFunction);
  EXPECT_EQ(r.tool_choice->function_name, "noop");
  EXPECT_EQ(r.parallel_tool_calls, true);

  const std::string tools = R"("tools":[{"type":"function","function":{"name":"f"}}])";
  EXPECT_EQ(Decode(Body(tools + R"(,"tool_choice":"auto")")).tool_choice->mode, ToolChoice::Mode::kAuto);
  EXPECT_EQ(Decode(Body(tools + R"(,"tool_choice":"none")")).tool_choice->mode, ToolChoice::Mode::kNone);
  EXPECT_EQ(Decode(Body(tools + R"(,"tool_choice":"required")")).tool_choice->mode, ToolChoice::Mode::kRequired);
  EXPECT_FALSE(Decode(Body(tools)).tool_choice);
  EXPECT_EQ(Decode(Body(R"("tool_choice":"none")")).tool_choice->mode, ToolChoice::Mode::kNone);
}

TEST(OpenAiDecode, BadToolsNameTheField) {
  ExpectRejected(Body(R"("tools":{})"), "tools");
  ExpectRejected(Body(R"("tools":[{"type":"custom","custom":{"name":"x"}}])"), "tools[0].type");
  ExpectRejected(Body(R"("tools":[{"type":"function"}])"), "tools[0].function");
  ExpectRejected(Body(R"("tools":[{"type":"function","function":{"name":"has space"}}])"), "tools[0].function.name");
  ExpectRejected(Body(R"("tools":[{"type":"function","function":{"name":"ok"}},{"type":"function","function":{"name":")" +
                      std::string(65, 'a') + R"("}}])"),
                 "tools[1].function.name");
  ExpectRejected(Body(R"("tools":[{"type":"function","function":{"name":""}}])"), "tools[0].function.name");
  ExpectRejected(Body(R"("tools":[{"type":"function","function":{"name":"f","parameters":"{}"}}])"),
                 "tools[0].function.parameters");
  ExpectRejected(Body(R"("tools":[{"type":"function","function":{"name":"f","strict":"yes"}}])"),
                 "tools[0].function.strict");
  ExpectRejected(Body(R"("tools":[{"type":"function","function":{"name":"f"}}],
      "tool_choice":{"type":"function","function":{"name":"g"}})"),
                 "tool_choice.function.name");
  ExpectRejected(Body(R"("tool_choice":{"type":"function","function":{"name":"g"}})"), "tool_choice.function.name");
  ExpectRejected(Body(R"("tool_choice":"sometimes")"), "tool_choice");
  ExpectRejected(Body(R"("tool_choice":"required")"), "tool_choice");
  ExpectRejected(Body(R"("tool_choice":{"type":"allowed_tools"})"), "tool_choice.type");
  EXPECT_TRUE(Decode(Body(R"("tools":[{"type":"function","function":{"name":"a-Z_09"}}])")).tools.size() == 1);
}

TEST(OpenAiDecode, ResponseFormats) {
  EXPECT_EQ(Decode(Body(R"("response_format":{"type":"text"})")).response_format->type, ResponseFormat::Type::kText);
  EXPECT_EQ(Decode(Body(R"("response_format":{"type":"json_object"})")).response_format->type,
            ResponseFormat::Type::kJsonObject);
  ChatRequest r = Decode(Body(R"("response_format":{"type":"json_schema","json_schema":{"name":"person",
      "description":"A person","schema":{"type":"object","required":["name"]},"strict":true}})"));
  const ResponseFormat& f = *r.response_format;
  EXPECT_EQ(f.type, ResponseFormat::Type::kJsonSchema);
  EXPECT_EQ(f.name, "person");
  EXPECT_EQ(f.description, "A person");
  EXPECT_EQ(f.schema.at("required").at(0).as_string(), "name");
  EXPECT_EQ(f.strict, true);
  ExpectRejected(Body(R"("response_format":"json")"), "response_format");
  ExpectRejected(Body(R"("response_format":{"type":"yaml"})"), "response_format.type");
  ExpectRejected(Body(R"("response_format":{"type":"json_schema"})"), "response_format.json_schema");
  ExpectRejected(Body(R"("response_format":{"type":"json_schema","json_schema":{"schema":{}}})"),
                 "response_format.json_schema.name");
  ExpectRejected(Body(R"("response_format":{"type":"json_schema","json_schema":{"name":"p","schema":[]}})"),
                 "response_format.json_schema.schema");
}

TEST(OpenAiDecode, ReasoningObjectEffortAndIncludeReasoning) {
  ChatRequest r = Decode(Body(R"("reasoning":{"effort":"high","max_tokens":2000,"exclude":true,"enabled":true})"));
  ASSERT_TRUE(r.reasoning);
  EXPECT_EQ(r.reasoning->effort, "high");
  EXPECT_EQ(*r.reasoning->max_tokens, 2000);
  EXPECT_TRUE(r.reasoning->exclude);
  EXPECT_EQ(r.reasoning->enabled, true);

  r = Decode(Body(R"("reasoning_effort":"low")"));
  EXPECT_EQ(r.reasoning->effort, "low");
  EXPECT_FALSE(r.reasoning->exclude);
  // The reasoning object wins over reasoning_effort.
  EXPECT_EQ(Decode(Body(R"("reasoning":{"effort":"high"},"reasoning_effort":"low")")).reasoning->effort, "high");
  r = Decode(Body(R"("reasoning":{"max_tokens":1024},"reasoning_effort":"low")"));
  EXPECT_TRUE(r.reasoning->effort.empty());
  EXPECT_EQ(*r.reasoning->max_tokens, 1024);
  r = Decode(Body(R"("reasoning":{"exclude":true},"reasoning_effort":"minimal")"));
  EXPECT_EQ(r.reasoning->effort, "minimal");
  EXPECT_TRUE(r.reasoning->exclude);

  r = Decode(Body(R"("include_reasoning":false)"));
  ASSERT_TRUE(r.reasoning);
  EXPECT_TRUE(r.reasoning->exclude);
  EXPECT_FALSE(r.reasoning->Requested());
  EXPECT_FALSE(Decode(Body(R"("include_reasoning":true)")).reasoning);

  ExpectRejected(Body(R"("reasoning":{"effort":"extreme"})"), "reasoning.effort");
  ExpectRejected(Body(R"("reasoning_effort":"turbo")"), "reasoning_effort");
  ExpectRejected(Body(R"("reasoning":{"max_tokens":-1})"), "reasoning.max_tokens");
  ExpectRejected(Body(R"("reasoning":{"exclude":"no"})"), "reasoning.exclude");
  ExpectRejected(Body(R"("reasoning":{"enabled":1})"), "reasoning.enabled");
  ExpectRejected(Body(R"("reasoning":true)"), "reasoning");
  ExpectRejected(Body(R"("include_reasoning":"no")"), "include_reasoning");
}

TEST(OpenAiDecode, UserMetadataStreamOptionsAndProvider) {
  ChatRequest r = Decode(Body(R"("user":"end-user-1","metadata":{"team":"search","run":"7"},
      "stream":true,"stream_options":{"include_usage":false},"provider":{"require_parameters":true,"order":["x"]})"));
  EXPECT_EQ(r.user, "end-user-1");
  EXPECT_EQ(r.metadata.at("team").as_string(), "search");
  EXPECT_TRUE(r.stream);
  EXPECT_FALSE(r.include_usage);
  EXPECT_TRUE(r.provider.require_parameters);
  ExpectRejected(Body(R"("metadata":{"n":1})"), "metadata.n");
  ExpectRejected(Body(R"("metadata":[])"), "metadata");
  ExpectRejected(Body(R"("provider":{"require_parameters":"yes"})"), "provider.require_parameters");
  ExpectRejected(Body(R"("provider":"openai")"), "provider");
}

// OpenRouter's `provider` object, field for field
// (openrouter.ai/docs/features/provider-routing; @openrouter/sdk 1.3
// ProviderPreferences).
TEST(OpenAiDecode, ProviderPreferencesDecodeEveryField) {
  ChatRequest r = Decode(Body(R"("provider":{"order":["openai","Together"],"allow_fallbacks":false,
      "require_parameters":true,"data_collection":"deny","zdr":true,"only":["openai","groq"],
      "ignore":["deepinfra"],"quantizations":["FP8","int4"],"sort":"throughput",
      "max_price":{"prompt":1,"completion":"2.5","request":0.001},
      "preferred_min_throughput":50,"preferred_max_latency":{"p50":1.5,"p90":3}})"));
  const ProviderPreferences& p = r.provider;
  EXPECT_EQ(p.order, (std::vector<std::string>{"openai", "Together"}));
  EXPECT_FALSE(p.allow_fallbacks);
  EXPECT_TRUE(p.require_parameters);
  EXPECT_TRUE(p.deny_data_collection);
  EXPECT_TRUE(p.zdr);
  EXPECT_EQ(p.only, (std::vector<std::string>{"openai", "groq"}));
  EXPECT_EQ(p.ignore, (std::vector<std::string>{"deepinfra"}));
  EXPECT_EQ(p.quantizations, (std::vector<std::string>{"fp8", "int4"}));  // lower-cased
  EXPECT_EQ(p.sort, ProviderPreferences::Sort::kThroughput);
  EXPECT_EQ(p.partition, ProviderPreferences::Partition::kModel);
  EXPECT_EQ(p.max_prompt_price, 1'000'000'000);      // $1 / M = 1e9 femto-USD per token
  EXPECT_EQ(p.max_completion_price, 2'500'000'000);  // "2.5"
  EXPECT_EQ(p.max_request_price, 1'000'000);        // $0.001 = 1e6 nano-USD
  EXPECT_EQ(p.preferred_min_throughput, 50.0);
  EXPECT_EQ(p.preferred_max_latency_s, 1.5);  // p50 of the cutoffs
}

TEST(OpenAiDecode, ProviderDefaultsWhenAbsentOrNull) {
  for (std::string_view extra : {std::string_view(), std::string_view(R"("provider":null)"),
                                 std::string_view(R"("provider":{"order":null,"allow_fallbacks":null,
                                     "data_collection":null,"sort":null,"max_price":null,
                                     "preferred_max_latency":null})")}) {
    ChatRequest r = Decode(Body(extra));
    const ProviderPreferences& p = r.provider;
    EXPECT_TRUE(p.order.empty()) << extra;
    EXPECT_TRUE(p.allow_fallbacks) << extra;
    EXPECT_FALSE(p.deny_data_collection) << extra;
    EXPECT_EQ(p.sort, ProviderPreferences::Sort::kDefault) << extra;
    EXPECT_FALSE(p.max_prompt_price) << extra;
    EXPECT_FALSE(p.preferred_max_latency_s) << extra;
    EXPECT_TRUE(r.fallback_models.empty());
    EXPECT_TRUE(r.session_id.empty());
    EXPECT_FALSE(r.explain_routing);
  }
  EXPECT_FALSE(Decode(Body(R"("provider":{"data_collection":"allow"})")).provider.deny_data_collection);
}

TEST(OpenAiDecode, ProviderSortIsAStringOrAnObjectWithAPartition) {
  EXPECT_EQ(Decode(Body(R"("provider":{"sort":"price"})")).provider.sort, ProviderPreferences::Sort::kPrice);
  EXPECT_EQ(Decode(Body(R"("provider":{"sort":"latency"})")).provider.sort, ProviderPreferences::Sort::kLatency);
  ChatRequest r = Decode(Body(R"("provider":{"sort":{"by":"throughput","partition":"none"}})"));
  EXPECT_EQ(r.provider.sort, ProviderPreferences::Sort::kThroughput);
  EXPECT_EQ(r.provider.partition, ProviderPreferences::Partition::kNone);
  r = Decode(Body(R"("provider":{"sort":{"partition":"model"}})"));
  EXPECT_EQ(r.provider.sort, ProviderPreferences::Sort::kDefault);
  EXPECT_EQ(r.provider.partition, ProviderPreferences::Partition::kModel);
  // Documented, measured by nothing Tollgate has: the model's own strategy.
  EXPECT_EQ(Decode(Body(R"("provider":{"sort":"exacto"})")).provider.sort, ProviderPreferences::Sort::kDefault);
}

TEST(OpenAiDecode, MaxPricesConvertExactlyFromNumbersAndStrings) {
  auto prompt = [](std::string_view value) {
    return Decode(Body(R"("provider":{"max_price":{"prompt":)" + std::string(value) + "}}")).provider.max_prompt_price;
  };
  // Through the number's shortest decimal text: no binary-float residue.
  EXPECT_EQ(prompt("0.1"), 100'000'000);
  EXPECT_EQ(prompt("0.3"), 300'000'000);
  EXPECT_EQ(prompt("1e-7"), 100);  // 0.0000001 USD / M = 100 femto-USD per token
  EXPECT_EQ(prompt("2E1"), 20'000'000'000);
  EXPECT_EQ(prompt("0"), 0);
  EXPECT_EQ(prompt("-0.0"), 0);
  EXPECT_EQ(prompt("15"), 15'000'000'000);
  EXPECT_EQ(prompt(R"("0.15")"), 150'000'000);
  EXPECT_EQ(prompt(R"("1000")"), 1'000'000'000'000);
  // Past the 9th decimal: dropped, which only lowers the cap.
  EXPECT_EQ(prompt("0.0000000019"), 1);
  EXPECT_EQ(prompt("1e-12"), 0);
  auto request = [](std::string_view value) {
    return Decode(Body(R"("provider":{"max_price":{"request":)" + std::string(value) + "}}")).provider.max_request_price;
  };
  EXPECT_EQ(request("0.005"), 5'000'000);  // USD per request -> nano-USD
  EXPECT_EQ(request(R"("2")"), 2'000'000'000);
  // Documented caps Tollgate has nothing to hold against.
  ChatRequest r = Decode(Body(R"("provider":{"max_price":{"image":"1","audio":2,"completion":3}})"));
  EXPECT_EQ(r.provider.max_completion_price, 3'000'000'000);
  EXPECT_FALSE(r.provider.max_prompt_price);
}

// int64 femto-USD per token holds up to 9223372036.854775807 USD per million
// tokens (int64 nano-USD per request: the same figure in USD). A cap above that
// caps nothing: no limit, not an error.
TEST(OpenAiDecode, MaxPricesBeyondTheLargestHeldAmountAreNoCap) {
  auto caps = [](const std::string& value) {
    return Decode(Body(R"("provider":{"max_price":{"prompt":)" + value + R"(,"completion":)" + value +
                       R"(,"request":)" + value + "}}"))
        .provider;
  };
  for (const std::string& huge :
       {std::string("1e20"), std::string("1e300"), std::string("1.7976931348623157e308"),
        std::string("9223372036.854775808"), std::string("10000000000"), std::string("18446744073709551615"),
        std::string("184467440737095516150"), std::string(R"("99999999999999999999")"),
        "\"" + std::string(300, '9') + ".5\""}) {
    const ProviderPreferences p = caps(huge);
    EXPECT_FALSE(p.max_prompt_price) << huge;
    EXPECT_FALSE(p.max_completion_price) << huge;
    EXPECT_FALSE(p.max_request_price) << huge;
  }
  // The largest held amount itself is a cap.
  EXPECT_EQ(caps(R"("9223372036.854775807")").max_prompt_price, INT64_MAX);
  EXPECT_EQ(caps(R"("9223372036.854775807")").max_request_price, INT64_MAX);
  EXPECT_EQ(caps(R"("9223372036.8547758079")").max_completion_price, INT64_MAX);  // the 10th decimal is dropped
  EXPECT_EQ(caps("1e9").max_prompt_price, 1'000'000'000'000'000'000);
  // Huge but malformed is still an error, quoting at most 40 characters.
  for (const std::string& bad : {std::string("-1e300"), "\"-" + std::string(300, '9') + "\"",
                                 "\"" + std::string(300, '9') + "x\"", std::string("\"1e300\"")}) {
    Result<ChatRequest> r = DecodeChatRequest(Body(R"("provider":{"max_price":{"prompt":)" + bad + "}}"));
    ASSERT_FALSE(r) << bad;
    EXPECT_EQ(r.error().param, "provider.max_price.prompt");
    EXPECT_LT(r.error().message.size(), 140u) << r.error().message;
  }
}

TEST(OpenAiDecode, PerformancePreferencesTakeANumberOrTheP50Cutoff) {
  ChatRequest r = Decode(Body(R"("provider":{"preferred_min_throughput":{"p50":100,"p99":20},
      "preferred_max_latency":2})"));
  EXPECT_EQ(r.provider.preferred_min_throughput, 100.0);
  EXPECT_EQ(r.provider.preferred_max_latency_s, 2.0);
  // Only tail cutoffs: nothing Tollgate's medians can be held against.
  r = Decode(Body(R"("provider":{"preferred_min_throughput":{"p90":10}})"));
  EXPECT_FALSE(r.provider.preferred_min_throughput);
}

TEST(OpenAiDecode, DocumentedButUnusedProviderFieldsAreIgnored) {
  ChatRequest r = Decode(Body(R"("provider":{"enforce_distillable_text":true,"something_new":{"x":1}},
      "debug":{"echo_upstream_body":true})"));
  EXPECT_TRUE(r.provider.allow_fallbacks);
  EXPECT_FALSE(r.explain_routing);
}

TEST(OpenAiDecode, BadProviderFieldsNameTheirExactPath) {
  ExpectRejected(Body(R"("provider":[])"), "provider");
  ExpectRejected(Body(R"("provider":{"order":"openai"})"), "provider.order");
  ExpectRejected(Body(R"("provider":{"order":["openai",7]})"), "provider.order[1]");
  ExpectRejected(Body(R"("provider":{"only":[null]})"), "provider.only[0]");
  ExpectRejected(Body(R"("provider":{"ignore":{}})"), "provider.ignore");
  ExpectRejected(Body(R"("provider":{"quantizations":[1]})"), "provider.quantizations[0]");
  ExpectRejected(Body(R"("provider":{"allow_fallbacks":"no"})"), "provider.allow_fallbacks");
  ExpectRejected(Body(R"("provider":{"zdr":1})"), "provider.zdr");
  ExpectRejected(Body(R"("provider":{"data_collection":"maybe"})"), "provider.data_collection");
  ExpectRejected(Body(R"("provider":{"data_collection":false})"), "provider.data_collection");
  ExpectRejected(Body(R"("provider":{"sort":"cheapest"})"), "provider.sort");
  ExpectRejected(Body(R"("provider":{"sort":3})"), "provider.sort");
  ExpectRejected(Body(R"("provider":{"sort":{"by":"speed"}})"), "provider.sort.by");
  ExpectRejected(Body(R"("provider":{"sort":{"by":"price","partition":"provider"}})"), "provider.sort.partition");
  ExpectRejected(Body(R"("provider":{"max_price":5})"), "provider.max_price");
  ExpectRejected(Body(R"("provider":{"max_price":{"prompt":-1}})"), "provider.max_price.prompt");
  ExpectRejected(Body(R"("provider":{"max_price":{"prompt":"cheap"}})"), "provider.max_price.prompt");
  ExpectRejected(Body(R"("provider":{"max_price":{"prompt":"1e-3"}})"), "provider.max_price.prompt");
  ExpectRejected(Body(R"("provider":{"max_price":{"prompt":true}})"), "provider.max_price.prompt");
  ExpectRejected(Body(R"("provider":{"max_price":{"completion":[1]}})"), "provider.max_price.completion");
  ExpectRejected(Body(R"("provider":{"max_price":{"request":"-0.5"}})"), "provider.max_price.request");
  ExpectRejected(Body(R"("provider":{"preferred_min_throughput":"fast"})"), "provider.preferred_min_throughput");
  ExpectRejected(Body(R"("provider":{"preferred_min_throughput":-5})"), "provider.preferred_min_throughput");
  ExpectRejected(Body(R"("provider":{"preferred_max_latency":{"p50":"1s"}})"), "provider.preferred_max_latency.p50");
  ExpectRejected(Body(R"("provider":{"preferred_max_latency":{"p90":[]}})"), "provider.preferred_max_latency.p90");
  ExpectRejected(Body(R"("provider":{"preferred_max_latency":[1]})"), "provider.preferred_max_latency");
}

TEST(OpenAiDecode, ModelsAreFallbacksInOrderWithoutRepeats) {
  ChatRequest r = Decode(Body(R"("models":["m","a/x","b/y:nitro","a/x"])"));
  EXPECT_EQ(r.model, "m");
  EXPECT_EQ(r.fallback_models, (std::vector<std::string>{"a/x", "b/y:nitro"}));
  // `models` alone: its first entry is the model (OpenRouter's own examples).
  r = Decode(R"({"models":["a/x","b/y"],"messages":[{"role":"user","content":"hi"}]})");
  EXPECT_EQ(r.model, "a/x");
  EXPECT_EQ(r.fallback_models, (std::vector<std::string>{"b/y"}));
  EXPECT_TRUE(Decode(Body(R"("models":[])")).fallback_models.empty());
  EXPECT_TRUE(Decode(Body(R"("models":null)")).fallback_models.empty());

  ExpectRejected(R"({"messages":[{"role":"user","content":"hi"}],"models":[]})", "model");
  ExpectRejected(R"({"messages":[{"role":"user","content":"hi"}],"models":[3]})", "models[0]");
  ExpectRejected(Body(R"("models":"a/x")"), "models");
  ExpectRejected(Body(R"("models":["a/x",""])"), "models[1]");
  json::array many;  // one more fallback than allowed
  for (std::size_t i = 0; i <= kMaxFallbackModels; ++i) many.emplace_back(std::to_string(i) + "/fallback");
  ExpectRejected(Body(R"("models":)" + json::serialize(many)), "models");
}

TEST(OpenAiDecode, SessionIdAndTheRoutingExplainFlag) {
  ChatRequest r = Decode(Body(R"("session_id":"conv-42","debug":{"routing":true,"echo_upstream_body":false})"));
  EXPECT_EQ(r.session_id, "conv-42");
  EXPECT_TRUE(r.explain_routing);
  EXPECT_FALSE(Decode(Body(R"("debug":{"routing":false})")).explain_routing);
  ExpectRejected(Body(R"("session_id":42)"), "session_id");
  ExpectRejected(Body(R"("session_id":")" + std::string(kMaxSessionIdBytes + 1, 's') + "\""), "session_id");
  EXPECT_EQ(Decode(Body(R"("session_id":")" + std::string(kMaxSessionIdBytes, 's') + "\"")).session_id.size(),
            kMaxSessionIdBytes);
  ExpectRejected(Body(R"("debug":true)"), "debug");
  ExpectRejected(Body(R"("debug":{"routing":"yes"})"), "debug.routing");
}

TEST(OpenAiDecode, CompletionsTakeTheSameRoutingFields) {
  Result<ChatRequest> r = DecodeCompletionRequest(
      R"({"models":["a/x","b/y"],"prompt":"Once","provider":{"sort":"price","max_price":{"completion":0.5}},
          "session_id":"s","debug":{"routing":true}})");
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->model, "a/x");
  EXPECT_EQ(r->fallback_models, (std::vector<std::string>{"b/y"}));
  EXPECT_EQ(r->provider.sort, ProviderPreferences::Sort::kPrice);
  EXPECT_EQ(r->provider.max_completion_price, 500'000'000);
  EXPECT_EQ(r->session_id, "s");
  EXPECT_TRUE(r->explain_routing);
  ExpectRejected(R"({"model":"m","prompt":"x","provider":{"max_price":{"prompt":"x"}}})", "provider.max_price.prompt",
                 true);
  ExpectRejected(R"({"model":"m","prompt":"x","models":[1]})", "models[0]", true);
  ExpectRejected(R"({"prompt":"x"})", "model", true);
}

TEST(OpenAiDecode, UnknownFieldsAreIgnored) {
  ChatRequest r = Decode(Body(R"("service_tier":"auto","modalities":["text"],
      "prediction":{"type":"content"},"web_search_options":{},"transforms":["middle-out"],"x_custom":[1,2])"));
  EXPECT_EQ(r.model, "m");
  ASSERT_EQ(r.messages.size(), 1u);
}

TEST(OpenAiDecode, MinPAndLogitBiasRoundTrip) {
  ChatRequest r = Decode(Body(R"("min_p":0.05,"logit_bias":{"50256":-100,"7":2.5})"));
  ASSERT_TRUE(r.min_p);
  EXPECT_DOUBLE_EQ(*r.min_p, 0.05);
  ASSERT_EQ(r.logit_bias.size(), 2u);
  EXPECT_EQ(r.logit_bias[0], (std::pair<int64_t, double>{50256, -100}));
  EXPECT_EQ(r.logit_bias[1], (std::pair<int64_t, double>{7, 2.5}));
  EXPECT_TRUE(tollgate::ParametersUsed(r).Has(tollgate::Param::kMinP));
  EXPECT_TRUE(tollgate::ParametersUsed(r).Has(tollgate::Param::kLogitBias));
  const json::object o = Object(EncodeChatRequest(r, RequestOptions{}));
  EXPECT_DOUBLE_EQ(o.at("min_p").to_number<double>(), 0.05);
  EXPECT_DOUBLE_EQ(o.at("logit_bias").at("50256").to_number<double>(), -100);
  std::string many = "{";
  for (int i = 0; i < 1025; ++i) many += (i ? ",\"" : "\"") + std::to_string(i) + "\":1";
  ExpectRejected(Body(R"("logit_bias":)" + many + "}"), "logit_bias");
}

TEST(OpenAiDecode, CompletionRequestsTakeAPrompt) {
  Result<ChatRequest> r = DecodeCompletionRequest(
      R"({"model":"m","prompt":"Once upon","max_tokens":5,"logprobs":3,"echo":false,"stop":"\n"})");
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->kind, RequestKind::kCompletion);
  EXPECT_EQ(r->api, ApiFlavor::kOpenAiCompletions);
  EXPECT_EQ(r->prompt, "Once upon");
  EXPECT_EQ(*r->max_tokens, 5);
  EXPECT_TRUE(r->logprobs);
  EXPECT_EQ(*r->top_logprobs, 3);
  EXPECT_EQ(r->stop, std::vector<std::string>{"\n"});
  EXPECT_TRUE(r->messages.empty());
  r = DecodeCompletionRequest(R"({"model":"m","prompt":["only one"]})");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->prompt, "only one");
  EXPECT_FALSE(r->logprobs);
  ExpectRejected(R"({"model":"m"})", "prompt", true);
  ExpectRejected(R"({"model":"m","prompt":["a","b"]})", "prompt", true);
  ExpectRejected(R"({"model":"m","prompt":[1]})", "prompt", true);
  ExpectRejected(R"({"model":"m","prompt":"x","logprobs":6})", "logprobs", true);
  ExpectRejected(R"({"model":"m","prompt":"x","temperature":9})", "temperature", true);
  ExpectRejected(R"({"prompt":"x"})", "model", true);
}

// ================================================================ outbound requests

ChatRequest ChatWithEverything() {
  ChatRequest r;
  r.model = "openai/gpt-4o-mini";
  r.messages = {Message{Role::kSystem, {TextPart{"be brief", {}}}, ""},
                Message{Role::kUser, {TextPart{"héllo 🙂", {}}}, ""}};
  r.max_tokens = 64;
  r.temperature = 0.5;
  r.top_p = 0.9;
  r.top_k = 40;
  r.frequency_penalty = 0.1;
  r.presence_penalty = -0.1;
  r.repetition_penalty = 1.1;
  r.stop = {"\n\n", "END"};
  r.seed = 42;
  r.n = 2;
  r.logprobs = true;
  r.top_logprobs = 3;
  r.user = "user-7";
  r.metadata = json::object{{"k", "v"}};
  r.stream = false;  // the caller wants one answer; upstream still streams
  return r;
}

TEST(OpenAiEncode, ChatBodyStreamsWithUsageAndWritesSetParameters) {
  RequestOptions options;
  options.upstream_model = "gpt-4o-mini-2024-07-18";
  const json::object o = Object(EncodeChatRequest(ChatWithEverything(), options));
  EXPECT_EQ(o.at("model").as_string(), "gpt-4o-mini-2024-07-18");
  EXPECT_EQ(o.at("stream").as_bool(), true);
  EXPECT_EQ(o.at("stream_options").at("include_usage").as_bool(), true);
  const auto& messages = o.at("messages").as_array();
  ASSERT_EQ(messages.size(), 2u);
  EXPECT_EQ(messages[0].at("role").as_string(), "system");
  EXPECT_EQ(messages[0].at("content").as_string(), "be brief");
  EXPECT_EQ(messages[1].at("content").as_string(), "héllo 🙂");
  EXPECT_EQ(o.at("max_tokens").as_int64(), 64);
  EXPECT_DOUBLE_EQ(o.at("temperature").as_double(), 0.5);
  EXPECT_DOUBLE_EQ(o.at("top_p").as_double(), 0.9);
  EXPECT_EQ(o.at("top_k").as_int64(), 40);
  EXPECT_DOUBLE_EQ(o.at("frequency_penalty").as_double(), 0.1);
  EXPECT_DOUBLE_EQ(o.at("presence_penalty").as_double(), -0.1);
  EXPECT_DOUBLE_EQ(o.at("repetition_penalty").as_double(), 1.1);
  EXPECT_EQ(o.at("stop").as_array().size(), 2u);
  EXPECT_EQ(o.at("seed").as_int64(), 42);
  EXPECT_EQ(o.at("n").as_int64(), 2);
  EXPECT_EQ(o.at("logprobs").as_bool(), true);
  EXPECT_EQ(o.at("top_logprobs").as_int64(), 3);
  EXPECT_EQ(o.at("user").as_string(), "user-7");
  EXPECT_EQ(o.at("metadata").at("k").as_string(), "v");
  EXPECT_FALSE(o.contains("prompt"));
}

TEST(OpenAiEncode, UnsetFieldsAreOmitted) {
  ChatRequest r;
  r.model = "m";
  r.messages = {Message{Role::kUser, {TextPart{"hi", {}}}, ""}};
  const json::object o = Object(EncodeChatRequest(r, RequestOptions{}));
  EXPECT_EQ(o.size(), 4u) << json::serialize(o);  // model, messages, stream, stream_options
  RequestOptions no_stream;
  no_stream.stream = false;
  const json::object plain = Object(EncodeChatRequest(r, no_stream));
  EXPECT_EQ(plain.size(), 2u) << json::serialize(plain);
  EXPECT_EQ(plain.at("model").as_string(), "m");  // the request's own model without upstream_model
}

TEST(OpenAiEncode, MaxTokensFieldFollowsTheOptionsThenTheCaller) {
  ChatRequest r = ChatWithEverything();
  RequestOptions options;
  EXPECT_TRUE(Object(EncodeChatRequest(r, options)).contains("max_tokens"));
  r.max_tokens_field = MaxTokensField::kMaxCompletionTokens;
  json::object o = Object(EncodeChatRequest(r, options));
  EXPECT_EQ(o.at("max_completion_tokens").as_int64(), 64);
  EXPECT_FALSE(o.contains("max_tokens"));
  options.max_tokens_field = MaxTokensField::kMaxTokens;
  o = Object(EncodeChatRequest(r, options));
  EXPECT_EQ(o.at("max_tokens").as_int64(), 64);
  EXPECT_FALSE(o.contains("max_completion_tokens"));
  r.max_tokens_field = MaxTokensField::kMaxTokens;
  options.max_tokens_field = MaxTokensField::kMaxCompletionTokens;
  o = Object(EncodeChatRequest(r, options));
  EXPECT_EQ(o.at("max_completion_tokens").as_int64(), 64);
  EXPECT_FALSE(o.contains("max_tokens"));
}

TEST(OpenAiEncode, DeveloperBecomesSystemWhenTheUpstreamLacksIt) {
  ChatRequest r;
  r.messages = {Message{Role::kDeveloper, {TextPart{"rules", {}}}, ""}, Message{Role::kUser, {TextPart{"q", {}}}, ""}};
  RequestOptions options;
  EXPECT_EQ(Object(EncodeChatRequest(r, options)).at("messages").at(0).at("role").as_string(), "developer");
  options.developer_role = false;
  EXPECT_EQ(Object(EncodeChatRequest(r, options)).at("messages").at(0).at("role").as_string(), "system");
}

ChatRequest WithReasoning(ReasoningSettings settings) {
  ChatRequest r;
  r.messages = {Message{Role::kUser, {TextPart{"q", {}}}, ""}};
  r.reasoning = settings;
  return r;
}

json::object EncodeWithStyle(const ChatRequest& r, ReasoningStyle style) {
  RequestOptions options;
  options.reasoning = style;
  options.stream = false;
  return Object(EncodeChatRequest(r, options));
}

TEST(OpenAiEncode, ReasoningSettingsFollowTheUpstreamsStyle) {
  ReasoningSettings high;
  high.effort = "high";
  high.max_tokens = 3000;
  high.exclude = true;
  const ChatRequest r = WithReasoning(high);

  json::object o = EncodeWithStyle(r, ReasoningStyle::kNone);
  EXPECT_EQ(o.size(), 2u) << json::serialize(o);
  o = EncodeWithStyle(r, ReasoningStyle::kDeepSeek);
  EXPECT_EQ(o.size(), 2u) << json::serialize(o);

  o = EncodeWithStyle(r, ReasoningStyle::kOpenAi);
  EXPECT_EQ(o.at("reasoning_effort").as_string(), "high");
  EXPECT_FALSE(o.contains("reasoning"));

  o = EncodeWithStyle(r, ReasoningStyle::kOpenRouter);
  EXPECT_EQ(o.at("reasoning").at("effort").as_string(), "high");
  EXPECT_EQ(o.at("reasoning").at("max_tokens").as_int64(), 3000);
  EXPECT_EQ(o.at("reasoning").at("exclude").as_bool(), true);
  EXPECT_FALSE(o.at("reasoning").as_object().contains("enabled"));
  EXPECT_FALSE(o.contains("reasoning_effort"));

  o = EncodeWithStyle(r, ReasoningStyle::kQwen);
  EXPECT_EQ(o.at("enable_thinking").as_bool(), true);
  EXPECT_EQ(o.at("thinking_budget").as_int64(), 3000);

  o = EncodeWithStyle(r, ReasoningStyle::kZhipu);
  EXPECT_EQ(o.at("thinking").at("type").as_string(), "enabled");

  ReasoningSettings off;
  off.effort = "none";
  const ChatRequest disabled = WithReasoning(off);
  EXPECT_EQ(EncodeWithStyle(disabled, ReasoningStyle::kQwen).at("enable_thinking").as_bool(), false);
  EXPECT_FALSE(EncodeWithStyle(disabled, ReasoningStyle::kQwen).contains("thinking_budget"));
  EXPECT_EQ(EncodeWithStyle(disabled, ReasoningStyle::kZhipu).at("thinking").at("type").as_string(), "disabled");
  EXPECT_EQ(EncodeWithStyle(disabled, ReasoningStyle::kOpenAi).at("reasoning_effort").as_string(), "none");

  ReasoningSettings budget_only;
  budget_only.max_tokens = 500;
  EXPECT_EQ(EncodeWithStyle(WithReasoning(budget_only), ReasoningStyle::kOpenAi).at("reasoning_effort").as_string(),
            "medium");
  ReasoningSettings enabled;
  enabled.enabled = true;
  EXPECT_EQ(EncodeWithStyle(WithReasoning(enabled), ReasoningStyle::kOpenRouter).at("reasoning").at("enabled").as_bool(),
            true);

  ChatRequest none;
  none.messages = r.messages;
  for (ReasoningStyle style : {ReasoningStyle::kOpenAi, ReasoningStyle::kOpenRouter, ReasoningStyle::kQwen,
                               ReasoningStyle::kZhipu}) {
    EXPECT_EQ(EncodeWithStyle(none, style).size(), 2u) << static_cast<int>(style);
  }
}

ChatRequest ToolConversation() {
  ChatRequest r;
  r.model = "m";
  Message assistant{Role::kAssistant, {}, ""};
  assistant.parts.emplace_back(ReasoningPart{ReasoningPart::Kind::kText, "I should look", "sig-1", "", "anthropic-claude-v1", ""});
  assistant.parts.emplace_back(ReasoningPart{ReasoningPart::Kind::kEncrypted, "", "", "blob", "anthropic-claude-v1", "r2"});
  assistant.parts.emplace_back(ToolCallPart{"call_a", "lookup", R"({"q":"a"})", "", {}});
  assistant.parts.emplace_back(ToolCallPart{"call_b", "lookup", "", "gemini-sig", {}});
  r.messages = {Message{Role::kUser, {TextPart{"find a and b", {}}}, ""}, assistant};
  r.messages.push_back(Message{Role::kTool, {ToolResultPart{"call_a", "lookup", {TextPart{"A1", {}}, TextPart{"A2", {}}}, false, {}}}, ""});
  r.messages.push_back(Message{Role::kTool,
                               {ToolResultPart{"call_b", "lookup",
                                               {TextPart{"see image", {}}, ImagePart{"https://x.test/b.png", "low", {}}},
                                               false,
                                               {}}},
                               ""});
  r.messages.push_back(Message{Role::kUser, {TextPart{"thanks", {}}}, ""});
  r.tools = {ToolDefinition{"lookup", "Look things up", json::parse(R"({"type":"object"})"), true, {}}};
  r.tool_choice = ToolChoice{ToolChoice::Mode::kAuto, ""};
  r.parallel_tool_calls = true;
  return r;
}

TEST(OpenAiEncode, AssistantToolCallsHaveNullContentAndStringArguments) {
  const json::object o = EncodeWithStyle(ToolConversation(), ReasoningStyle::kNone);
  const auto& assistant = o.at("messages").at(1).as_object();
  EXPECT_EQ(assistant.at("role").as_string(), "assistant");
  EXPECT_TRUE(assistant.at("content").is_null());
  const auto& calls = assistant.at("tool_calls").as_array();
  ASSERT_EQ(calls.size(), 2u);
  EXPECT_EQ(calls[0].at("id").as_string(), "call_a");
  EXPECT_EQ(calls[0].at("type").as_string(), "function");
  EXPECT_EQ(calls[0].at("function").at("name").as_string(), "lookup");
  EXPECT_EQ(calls[0].at("function").at("arguments").as_string(), R"({"q":"a"})");
  EXPECT_EQ(calls[1].at("function").at("arguments").as_string(), "{}");
  EXPECT_FALSE(assistant.contains("reasoning_details"));
  EXPECT_FALSE(assistant.contains("reasoning_content"));
  EXPECT_EQ(o.at("tools").at(0).at("function").at("name").as_string(), "lookup");
  EXPECT_EQ(o.at("tools").at(0).at("function").at("strict").as_bool(), true);
  EXPECT_EQ(o.at("tool_choice").as_string(), "auto");
  EXPECT_EQ(o.at("parallel_tool_calls").as_bool(), true);
}

TEST(OpenAiEncode, ToolResultImagesGoInAFollowingUserMessage) {
  const json::object o = EncodeWithStyle(ToolConversation(), ReasoningStyle::kNone);
  const auto& m = o.at("messages").as_array();
  ASSERT_EQ(m.size(), 6u) << json::serialize(m);
  EXPECT_EQ(m[2].at("role").as_string(), "tool");
  EXPECT_EQ(m[2].at("tool_call_id").as_string(), "call_a");
  EXPECT_EQ(m[2].at("content").as_string(), "A1\nA2");
  EXPECT_EQ(m[3].at("role").as_string(), "tool");  // both tool messages right after the calls
  EXPECT_EQ(m[3].at("content").as_string(), "see image");
  EXPECT_EQ(m[4].at("role").as_string(), "user");
  const auto& content = m[4].at("content").as_array();
  ASSERT_EQ(content.size(), 2u);
  EXPECT_NE(std::string(content[0].at("text").as_string()).find("call_b"), std::string::npos);
  EXPECT_EQ(content[1].at("type").as_string(), "image_url");
  EXPECT_EQ(content[1].at("image_url").at("url").as_string(), "https://x.test/b.png");
  EXPECT_EQ(content[1].at("image_url").at("detail").as_string(), "low");
  EXPECT_EQ(m[5].at("content").as_string(), "thanks");
}

TEST(OpenAiEncode, OpenRouterStyleReplaysReasoningDetails) {
  const json::object o = EncodeWithStyle(ToolConversation(), ReasoningStyle::kOpenRouter);
  const auto& details = o.at("messages").at(1).at("reasoning_details").as_array();
  ASSERT_EQ(details.size(), 3u);
  EXPECT_EQ(details[0].at("type").as_string(), "reasoning.text");
  EXPECT_EQ(details[0].at("text").as_string(), "I should look");
  EXPECT_EQ(details[0].at("signature").as_string(), "sig-1");
  EXPECT_EQ(details[0].at("format").as_string(), "anthropic-claude-v1");
  EXPECT_EQ(details[0].at("index").as_int64(), 0);
  EXPECT_EQ(details[1].at("type").as_string(), "reasoning.encrypted");
  EXPECT_EQ(details[1].at("data").as_string(), "blob");
  EXPECT_EQ(details[1].at("id").as_string(), "r2");
  EXPECT_EQ(details[2].at("type").as_string(), "reasoning.encrypted");  // the thought signature of call_b
  EXPECT_EQ(details[2].at("data").as_string(), "gemini-sig");
  EXPECT_EQ(details[2].at("id").as_string(), "call_b");
  EXPECT_EQ(details[2].at("format").as_string(), "google-gemini-v1");
  EXPECT_EQ(details[2].at("index").as_int64(), 2);
}

TEST(OpenAiEncode, ReasoningContentIsReplayedWhenAsked) {
  RequestOptions options;
  options.reasoning = ReasoningStyle::kDeepSeek;
  options.replay_reasoning_content = true;
  json::object o = Object(EncodeChatRequest(ToolConversation(), options));
  const auto& assistant = o.at("messages").at(1).as_object();
  EXPECT_EQ(assistant.at("reasoning_content").as_string(), "I should look");  // text blocks only
  EXPECT_FALSE(assistant.contains("reasoning_details"));
  options.replay_reasoning_content = false;
  o = Object(EncodeChatRequest(ToolConversation(), options));
  EXPECT_FALSE(o.at("messages").at(1).as_object().contains("reasoning_content"));
}

TEST(OpenAiEncode, ReasoningContentIsNotReplayedOnPlainTurns) {
  ChatRequest r;
  r.model = "m";
  r.messages.push_back(Message{Role::kUser, {TextPart{"hi", {}}}, {}});
  r.messages.push_back(
      Message{Role::kAssistant, {ReasoningPart{ReasoningPart::Kind::kText, "thinking", "", "", "", ""}, TextPart{"hello", {}}}, {}});
  r.messages.push_back(Message{Role::kUser, {TextPart{"again", {}}}, {}});
  RequestOptions options;
  options.reasoning = ReasoningStyle::kDeepSeek;
  options.replay_reasoning_content = true;
  json::object o = Object(EncodeChatRequest(r, options));
  EXPECT_FALSE(o.at("messages").at(1).as_object().contains("reasoning_content"))
      << "deepseek-reasoner answers 400 to reasoning_content on a turn without tool calls";
}

TEST(OpenAiEncode, SeedFieldNameFollowsTheOption) {
  ChatRequest r;
  r.model = "m";
  r.seed = 42;
  r.messages.push_back(Message{Role::kUser, {TextPart{"hi", {}}}, {}});
  RequestOptions options;
  EXPECT_EQ(Object(EncodeChatRequest(r, options)).at("seed").as_int64(), 42);
  options.seed_field = "random_seed";  // Mistral
  json::object o = Object(EncodeChatRequest(r, options));
  EXPECT_EQ(o.at("random_seed").as_int64(), 42);
  EXPECT_FALSE(o.contains("seed"));
}

TEST(OpenAiEncode, CacheControlOnlyWhenAsked) {
  ChatRequest r;
  r.model = "m";
  CacheControl cc{{"type", "ephemeral"}};
  r.messages = {Message{Role::kSystem, {TextPart{"long prompt", cc}}, ""},
                Message{Role::kUser, {TextPart{"q", {}}, ImagePart{"https://x.test/i.png", "", cc}}, ""},
                Message{Role::kAssistant, {TextPart{"a", cc}}, ""},
                Message{Role::kTool, {ToolResultPart{"t", "", {TextPart{"r", {}}}, false, cc}}, ""}};
  r.tools = {ToolDefinition{"f", "", nullptr, std::nullopt, cc}};
  RequestOptions options;
  options.stream = false;
  json::object o = Object(EncodeChatRequest(r, options));
  const auto& m = o.at("messages").as_array();
  EXPECT_EQ(m[0].at("content").as_string(), "long prompt");
  EXPECT_FALSE(m[1].at("content").at(1).as_object().contains("cache_control"));
  EXPECT_EQ(m[2].at("content").as_string(), "a");
  EXPECT_EQ(m[3].at("content").as_string(), "r");
  EXPECT_FALSE(o.at("tools").at(0).as_object().contains("cache_control"));
  options.cache_control = true;
  o = Object(EncodeChatRequest(r, options));
  const auto& c = o.at("messages").as_array();
  EXPECT_EQ(c[0].at("content").at(0).at("cache_control").at("type").as_string(), "ephemeral");
  EXPECT_EQ(c[0].at("content").at(0).at("text").as_string(), "long prompt");
  EXPECT_EQ(c[1].at("content").at(1).at("cache_control").at("type").as_string(), "ephemeral");
  EXPECT_EQ(c[2].at("content").at(0).at("cache_control").at("type").as_string(), "ephemeral");
  EXPECT_EQ(c[3].at("content").at(0).at("text").as_string(), "r");
  EXPECT_EQ(c[3].at("content").at(0).at("cache_control").at("type").as_string(), "ephemeral");
  EXPECT_EQ(o.at("tools").at(0).at("cache_control").at("type").as_string(), "ephemeral");
  // ...and the decoder keeps them all.
  const ChatRequest back = Decode(json::serialize(o));
  EXPECT_FALSE(std::get<TextPart>(back.messages[0].parts[0]).cache_control.empty());
  EXPECT_FALSE(std::get<ImagePart>(back.messages[1].parts[1]).cache_control.empty());
  EXPECT_FALSE(std::get<TextPart>(std::get<ToolResultPart>(back.messages[3].parts[0]).content[0]).cache_control.empty());
  EXPECT_FALSE(back.tools[0].cache_control.empty());
}

TEST(OpenAiEncode, ResponseFormatAndNamedToolChoice) {
  ChatRequest r;
  r.messages = {Message{Role::kUser, {TextPart{"q", {}}}, "bob"}};
  r.tools = {ToolDefinition{"f", "", nullptr, std::nullopt, {}}};
  r.tool_choice = ToolChoice{ToolChoice::Mode::kFunction, "f"};
  ResponseFormat format;
  format.type = ResponseFormat::Type::kJsonSchema;
  format.name = "out";
  format.schema = json::parse(R"({"type":"object"})");
  format.strict = false;
  r.response_format = format;
  const json::object o = EncodeWithStyle(r, ReasoningStyle::kNone);
  EXPECT_EQ(o.at("messages").at(0).at("name").as_string(), "bob");
  EXPECT_EQ(o.at("tool_choice").at("type").as_string(), "function");
  EXPECT_EQ(o.at("tool_choice").at("function").at("name").as_string(), "f");
  const auto& fn = o.at("tools").at(0).at("function").as_object();
  EXPECT_FALSE(fn.contains("parameters"));
  EXPECT_FALSE(fn.contains("description"));
  EXPECT_EQ(o.at("response_format").at("type").as_string(), "json_schema");
  EXPECT_EQ(o.at("response_format").at("json_schema").at("name").as_string(), "out");
  EXPECT_EQ(o.at("response_format").at("json_schema").at("strict").as_bool(), false);
  for (auto [mode, name] : {std::pair{ToolChoice::Mode::kNone, "none"}, std::pair{ToolChoice::Mode::kRequired, "required"}}) {
    r.tool_choice = ToolChoice{mode, ""};
    EXPECT_EQ(EncodeWithStyle(r, ReasoningStyle::kNone).at("tool_choice").as_string(), name);
  }
}

TEST(OpenAiEncode, NegativeSeedIsWrittenSigned) {
  ChatRequest r = ChatWithEverything();
  r.seed = static_cast<uint64_t>(int64_t{-5});
  EXPECT_EQ(EncodeWithStyle(r, ReasoningStyle::kNone).at("seed").as_int64(), -5);
}

TEST(OpenAiEncode, RoundTripsThroughTheDecoder) {
  const std::string body = R"({"model":"m","messages":[
      {"role":"developer","content":"rules"},
      {"role":"user","content":[{"type":"text","text":"look"},{"type":"image_url","image_url":{"url":"https://x.test/i.png","detail":"auto"}}],"name":"u"},
      {"role":"assistant","content":"","tool_calls":[{"id":"c1","type":"function","function":{"name":"f","arguments":"{\"a\":1}"}}],
       "reasoning_details":[{"type":"reasoning.text","text":"hmm","signature":"s","format":"anthropic-claude-v1","index":0}]},
      {"role":"tool","tool_call_id":"c1","content":"42"},
      {"role":"assistant","content":"The answer is 42."}],
      "tools":[{"type":"function","function":{"name":"f","description":"d","parameters":{"type":"object"},"strict":false}}],
      "tool_choice":"required","parallel_tool_calls":false,
      "response_format":{"type":"json_schema","json_schema":{"name":"n","schema":{"type":"object"},"strict":true}},
      "stop":["x"],"seed":-3,"temperature":0.7,"top_p":0.5,"top_k":5,"frequency_penalty":0.5,"presence_penalty":0.25,
      "repetition_penalty":1.05,"max_completion_tokens":99,"n":3,"logprobs":true,"top_logprobs":4,
      "reasoning":{"effort":"low","exclude":false},"user":"me","metadata":{"a":"b"}})";
  const ChatRequest first = Decode(body);
  RequestOptions options;
  options.reasoning = ReasoningStyle::kOpenRouter;
  options.upstream_model = "m";
  const std::string encoded = EncodeChatRequest(first, options);
  const ChatRequest second = Decode(encoded);
  EXPECT_EQ(EncodeChatRequest(second, options), encoded);  // a fixed point
  ASSERT_EQ(second.messages.size(), first.messages.size());
  EXPECT_EQ(second.messages[1].name, "u");
  EXPECT_EQ(std::get<ImagePart>(second.messages[1].parts[1]).detail, "auto");
  const auto& reasoning = std::get<ReasoningPart>(second.messages[2].parts[0]);
  EXPECT_EQ(reasoning.signature, "s");
  EXPECT_EQ(std::get<ToolCallPart>(second.messages[2].parts[1]).arguments, R"({"a":1})");
  EXPECT_EQ(std::get<ToolResultPart>(second.messages[3].parts[0]).tool_call_id, "c1");
  EXPECT_EQ(second.tool_choice->mode, ToolChoice::Mode::kRequired);
  EXPECT_EQ(second.parallel_tool_calls, false);
  EXPECT_EQ(second.response_format->strict, true);
  EXPECT_EQ(static_cast<int64_t>(*second.seed), -3);
  EXPECT_EQ(*second.max_tokens, 99);
  EXPECT_EQ(second.max_tokens_field, MaxTokensField::kMaxCompletionTokens);
  EXPECT_EQ(*second.n, 3);
  EXPECT_EQ(*second.top_k, 5);
  EXPECT_DOUBLE_EQ(*second.repetition_penalty, 1.05);
  EXPECT_EQ(second.reasoning->effort, "low");
  EXPECT_EQ(second.metadata.at("a").as_string(), "b");
  EXPECT_TRUE(second.stream);  // the upstream request always streams
  EXPECT_TRUE(second.include_usage);
}

TEST(OpenAiEncode, ToolConversationRoundTripsWithSignatures) {
  RequestOptions options;
  options.reasoning = ReasoningStyle::kOpenRouter;
  const ChatRequest original = ToolConversation();
  const ChatRequest back = Decode(EncodeChatRequest(original, options));
  // user, assistant, tool, tool, user (images), user
  ASSERT_EQ(back.messages.size(), 6u);
  const auto& parts = back.messages[1].parts;
  ASSERT_EQ(parts.size(), 4u);
  EXPECT_EQ(std::get<ReasoningPart>(parts[0]).signature, "sig-1");
  EXPECT_EQ(std::get<ReasoningPart>(parts[1]).data, "blob");
  EXPECT_EQ(std::get<ToolCallPart>(parts[3]).thought_signature, "gemini-sig");
  EXPECT_TRUE(std::get<ToolCallPart>(parts[2]).thought_signature.empty());
  EXPECT_EQ(std::get<ImagePart>(back.messages[4].parts.at(1)).url, "https://x.test/b.png");
}

TEST(OpenAiEncode, CompletionBodyUsesPrompt) {
  ChatRequest r = ChatWithEverything();
  r.kind = RequestKind::kCompletion;
  r.prompt = "Once upon a time";
  r.max_tokens_field = MaxTokensField::kMaxCompletionTokens;
  RequestOptions options;
  options.upstream_model = "davinci";
  const json::object o = Object(EncodeCompletionRequest(r, options));
  EXPECT_EQ(o.at("model").as_string(), "davinci");
  EXPECT_EQ(o.at("prompt").as_string(), "Once upon a time");
  EXPECT_FALSE(o.contains("messages"));
  EXPECT_EQ(o.at("max_tokens").as_int64(), 64);  // the legacy endpoint has no max_completion_tokens
  EXPECT_EQ(o.at("logprobs").as_int64(), 3);      // legacy logprobs is a count
  EXPECT_EQ(o.at("stream").as_bool(), true);
  EXPECT_EQ(o.at("stop").as_array().size(), 2u);
  Result<ChatRequest> back = DecodeCompletionRequest(EncodeCompletionRequest(r, options));
  ASSERT_TRUE(back) << back.error().message;
  EXPECT_EQ(back->prompt, r.prompt);
  EXPECT_EQ(*back->top_logprobs, 3);
}

TEST(OpenAiEncode, ACompletionSentToAChatUpstreamIsOneUserTurn) {
  ChatRequest r;
  r.kind = RequestKind::kCompletion;
  r.prompt = "raw prompt";
  const json::object o = EncodeWithStyle(r, ReasoningStyle::kNone);
  ASSERT_EQ(o.at("messages").as_array().size(), 1u);
  EXPECT_EQ(o.at("messages").at(0).at("role").as_string(), "user");
  EXPECT_EQ(o.at("messages").at(0).at("content").as_string(), "raw prompt");
}

// ================================================================ upstream responses

TEST(OpenAiResponse, DecodesChatChunksUsageAndFinishReason) {
  ResponseDecoder d(RequestKind::kChat);
  std::vector<StreamEvent> events;
  for (const char* chunk : {
           R"({"id":"chatcmpl-9","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}],"usage":null})",
           R"({"id":"chatcmpl-9","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"Hel"},"finish_reason":null}],"usage":null})",
           R"({"id":"chatcmpl-9","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"lo"},"finish_reason":null}],"usage":null})",
           R"({"id":"chatcmpl-9","object":"chat.completion.chunk","choices":[{"index":0,"delta":{},"finish_reason":"length"}],"usage":null})",
           R"({"id":"chatcmpl-9","object":"chat.completion.chunk","choices":[],"usage":{"prompt_tokens":120,"completion_tokens":482,"total_tokens":602,"prompt_tokens_details":{"cached_tokens":100},"completion_tokens_details":{"reasoning_tokens":448}}})",
       }) {
    ASSERT_TRUE(d.OnData(chunk, events));
    EXPECT_FALSE(d.done());
  }
  ASSERT_TRUE(d.OnData("[DONE]", events));
  EXPECT_TRUE(d.done());
  d.Finish(events);
  const auto texts = All<TextDelta>(events);
  ASSERT_EQ(texts.size(), 2u);
  EXPECT_EQ(texts[0].text, "Hel");
  EXPECT_EQ(texts[1].text, "lo");
  const auto finishes = All<FinishDelta>(events);
  ASSERT_EQ(finishes.size(), 1u);
  EXPECT_EQ(finishes[0].reason, FinishReason::kLength);
  EXPECT_EQ(finishes[0].native_reason, "length");
  const auto usages = All<UsageDelta>(events);
  ASSERT_EQ(usages.size(), 1u);
  EXPECT_EQ(usages[0].usage, (Usage{120, 482, 100, 448, 0}));
  EXPECT_TRUE(std::holds_alternative<UsageDelta>(events.back()));
}

TEST(OpenAiResponse, UsageChunkWithNullOrMissingChoices) {
  for (const char* chunk : {R"({"id":"x","choices":null,"usage":{"prompt_tokens":3,"completion_tokens":4}})",
                            R"({"id":"x","usage":{"prompt_tokens":3,"completion_tokens":4}})",
                            R"({"id":"x","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":4}})"}) {
    const auto usages = All<UsageDelta>(FeedChat({chunk}));
    ASSERT_EQ(usages.size(), 1u) << chunk;
    EXPECT_EQ(usages[0].usage.total_tokens(), 7);
  }
}

TEST(OpenAiResponse, UsageOnAChoiceChunkOrInsideTheChoiceIsTaken) {
  auto events = FeedChat({R"({"choices":[{"index":0,"delta":{"content":"a"},"finish_reason":"stop"}],
      "usage":{"prompt_tokens":5,"completion_tokens":1}})"});
  ASSERT_EQ(All<UsageDelta>(events).size(), 1u);
  EXPECT_EQ(All<UsageDelta>(events)[0].usage.prompt_tokens, 5);
  events = FeedChat({R"({"choices":[{"index":0,"delta":{},"finish_reason":"stop","usage":{"prompt_tokens":6,"completion_tokens":2}}]})"});
  ASSERT_EQ(All<UsageDelta>(events).size(), 1u);
  EXPECT_EQ(All<UsageDelta>(events)[0].usage.prompt_tokens, 6);
}

TEST(OpenAiResponse, NullUsageOnEveryChunkReportsNothing) {
  const auto events = FeedChat({DeltaChunk(R"({"content":"a"})") , DeltaChunk("{}", 0, R"("stop")")});
  EXPECT_TRUE(All<UsageDelta>(events).empty());
  EXPECT_FALSE(Fold(events).usage);
}

TEST(OpenAiResponse, UsageVariantsOfCompatibleServers) {
  auto usage_of = [](std::string_view usage_json) {
    const auto usages = All<UsageDelta>(FeedChat({R"({"id":"x","choices":[],"usage":)" + std::string(usage_json) + "}"}));
    EXPECT_EQ(usages.size(), 1u) << usage_json;
    return usages.empty() ? Usage{} : usages[0].usage;
  };
  // DeepSeek (api-docs.deepseek.com, Context Caching).
  EXPECT_EQ(usage_of(R"({"prompt_tokens":100,"completion_tokens":10,"prompt_cache_hit_tokens":64,"prompt_cache_miss_tokens":36})")
                .cached_tokens,
            64);
  // Moonshot: top-level cached_tokens.
  EXPECT_EQ(usage_of(R"({"prompt_tokens":100,"completion_tokens":10,"cached_tokens":80})").cached_tokens, 80);
  // OpenRouter: cache writes.
  const Usage u = usage_of(R"({"prompt_tokens":100,"completion_tokens":10,
      "prompt_tokens_details":{"cached_tokens":20,"cache_write_tokens":30},"completion_tokens_details":{"reasoning_tokens":4},
      "cost":0.01,"is_byok":false})");
  EXPECT_EQ(u, (Usage{100, 10, 20, 4, 30}));
  // Details present without cached_tokens: DeepSeek's spelling still counts.
  EXPECT_EQ(usage_of(R"({"prompt_tokens":9,"completion_tokens":1,"prompt_tokens_details":{},"prompt_cache_hit_tokens":5})")
                .cached_tokens,
            5);
}

Usage UsageOf(std::string_view usage_json) {
  const auto usages = All<UsageDelta>(FeedChat({R"({"id":"x","choices":[],"usage":)" + std::string(usage_json) + "}"}));
  EXPECT_EQ(usages.size(), 1u) << usage_json;
  return usages.empty() ? Usage{} : usages.back().usage;
}

TEST(OpenAiResponse, UsageCountsAreClampedToSaneValues) {
  Usage u = UsageOf(R"({"prompt_tokens":-5,"completion_tokens":-9223372036854775808,
      "prompt_tokens_details":{"cached_tokens":-1},"completion_tokens_details":{"reasoning_tokens":-2}})");
  EXPECT_EQ(u, Usage{});
  u = UsageOf(R"({"prompt_tokens":18446744073709551615,"completion_tokens":9223372036854775807,
      "prompt_tokens_details":{"cached_tokens":1e300},"completion_tokens_details":{"reasoning_tokens":1000000000001}})");
  EXPECT_EQ(u.prompt_tokens, kMaxUsageTokens);
  EXPECT_EQ(u.completion_tokens, kMaxUsageTokens);
  EXPECT_EQ(u.cached_tokens, kMaxUsageTokens);
  EXPECT_EQ(u.reasoning_tokens, kMaxUsageTokens);
  u = UsageOf(R"({"prompt_tokens":12.9,"completion_tokens":7.5,
      "prompt_tokens_details":{"cached_tokens":-0.5},"completion_tokens_details":{"reasoning_tokens":3.99}})");
  EXPECT_EQ(u, (Usage{12, 7, 0, 3, 0}));
  u = UsageOf(R"({"prompt_tokens":1.5e3,"completion_tokens":2E1})");
  EXPECT_EQ(u.prompt_tokens, 1500);
  EXPECT_EQ(u.completion_tokens, 20);
  u = UsageOf(R"({"prompt_tokens":"100","completion_tokens":4,
      "prompt_tokens_details":{"cached_tokens":true},"completion_tokens_details":{"reasoning_tokens":null}})");
  EXPECT_EQ(u, (Usage{0, 4, 0, 0, 0}));
}

TEST(OpenAiResponse, UsagePartsNeverExceedTheirTotals) {
  EXPECT_EQ(UsageOf(R"({"prompt_tokens":10,"completion_tokens":3,
      "prompt_tokens_details":{"cached_tokens":50,"cache_write_tokens":9},"completion_tokens_details":{"reasoning_tokens":4}})"),
            (Usage{10, 3, 10, 3, 0}));
  EXPECT_EQ(UsageOf(R"({"prompt_tokens":10,"completion_tokens":1,"prompt_tokens_details":{"cached_tokens":4,"cache_write_tokens":9}})")
                .cache_write_tokens,
            6);
  EXPECT_EQ(UsageOf(R"({"prompt_tokens":10,"completion_tokens":1,"prompt_cache_hit_tokens":11})").cached_tokens, 10);
  EXPECT_EQ(UsageOf(R"({"prompt_tokens":10,"completion_tokens":1,"cached_tokens":1e20})").cached_tokens, 10);
  EXPECT_EQ(UsageOf(R"({"prompt_tokens":10,"completion_tokens":1,"cached_tokens":-3})").cached_tokens, 0);
}

TEST(OpenAiResponse, UsageWithoutAnyCountReportsNothingAndLaterReportsReplace) {
  for (const char* usage : {R"({})", R"({"prompt_tokens":"x","completion_tokens":null})", R"({"total_tokens":30})"}) {
    EXPECT_TRUE(All<UsageDelta>(FeedChat({R"({"id":"x","choices":[],"usage":)" + std::string(usage) + "}"})).empty())
        << usage;
  }
  const auto events = FeedChat({R"({"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":4}})",
                                R"({"choices":[],"usage":{}})",
                                R"({"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":9}})"});
  ASSERT_EQ(All<UsageDelta>(events).size(), 2u);
  EXPECT_EQ(Fold(events).usage->completion_tokens, 9);
}

TEST(OpenAiResponse, WholeResponseUsageIsClampedToo) {
  ResponseDecoder d(RequestKind::kChat);
  std::vector<StreamEvent> events;
  ASSERT_TRUE(d.OnWholeResponse(
      R"({"id":"c","choices":[{"index":0,"message":{"content":"Hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":-7,"completion_tokens":18446744073709551615}})",
      events));
  const auto usages = All<UsageDelta>(events);
  ASSERT_EQ(usages.size(), 1u);
  EXPECT_EQ(usages[0].usage.prompt_tokens, 0);
  EXPECT_EQ(usages[0].usage.completion_tokens, kMaxUsageTokens);
}

// The same class as tests/fuzz found in the Anthropic and Gemini decoders: an
// upstream's native finish_reason with invalid UTF-8 is passed on repaired.
TEST(OpenAiResponse, InvalidUtf8InTheFinishReasonBecomesReplacementCharacters) {
  const auto events = FeedChat({"{\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\"},\"finish_reason\":\"odd\x9B\"}]}"});
  const auto finishes = All<FinishDelta>(events);
  ASSERT_EQ(finishes.size(), 1u);
  EXPECT_EQ(finishes[0].native_reason, "odd\xEF\xBF\xBD");
}

TEST(OpenAiResponse, ANullErrorFieldIsNoError) {
  const auto events = FeedChat({R"({"error":null,"choices":[{"index":0,"delta":{"content":"fine"}}]})"});
  EXPECT_EQ(Fold(events).choices[0].text, "fine");
}

TEST(OpenAiResponse, CompletionChunksCarryText) {
  ResponseDecoder d(RequestKind::kCompletion);
  const auto events = Feed(d, {R"({"id":"cmpl-1","object":"text_completion","choices":[{"index":0,"text":" there","finish_reason":null}]})",
                               R"({"id":"cmpl-1","object":"text_completion","choices":[{"index":0,"text":"!","finish_reason":"stop"}]})"});
  const ChatResponse r = Fold(events);
  EXPECT_EQ(r.choices[0].text, " there!");
  EXPECT_EQ(r.choices[0].finish, FinishReason::kStop);
}

TEST(OpenAiResponse, ErrorChunksBecomeBadGateway) {
  for (const char* chunk : {R"({"error":{"message":"Overloaded","code":502}})",
                            R"({"object":"error","message":"Overloaded: context too long","type":"BadRequestError"})",
                            R"({"error":"Overloaded now"})"}) {
    ResponseDecoder d(RequestKind::kChat);
    std::vector<StreamEvent> events;
    Result<void> r = d.OnData(chunk, events);
    ASSERT_FALSE(r) << chunk;
    EXPECT_EQ(r.error().code, ErrorCode::kBadGateway);
    EXPECT_NE(r.error().message.find("Overloaded"), std::string::npos) << r.error().message;
    EXPECT_TRUE(events.empty());
  }
  for (const char* garbage : {"{not json", "[1,2]", "\"text\"", "42"}) {
    ResponseDecoder d(RequestKind::kChat);
    std::vector<StreamEvent> events;
    Result<void> r = d.OnData(garbage, events);
    ASSERT_FALSE(r) << garbage;
    EXPECT_EQ(r.error().code, ErrorCode::kBadGateway);
  }
  ResponseDecoder d(RequestKind::kChat);
  std::vector<StreamEvent> events;
  EXPECT_FALSE(d.OnWholeResponse("<html>502</html>", events));
  EXPECT_FALSE(d.OnWholeResponse(R"({"error":{"message":"quota"}})", events));
  EXPECT_FALSE(d.done());
}

TEST(OpenAiResponse, LongUpstreamErrorMessagesAreCapped) {
  std::string accents;
  for (int i = 0; i < 1500; ++i) accents += "é";
  ResponseDecoder d(RequestKind::kChat);
  std::vector<StreamEvent> events;
  Result<void> r = d.OnData(R"({"error":{"message":")" + accents + R"("}})", events);
  ASSERT_FALSE(r);
  EXPECT_LE(r.error().message.size(), 2100u);
  EXPECT_TRUE(IsValidUtf8(r.error().message));
  EXPECT_EQ(r.error().message.substr(r.error().message.size() - 3), "...");
}

TEST(OpenAiResponse, WholeResponseIsAccepted) {
  ResponseDecoder d(RequestKind::kChat);
  std::vector<StreamEvent> events;
  ASSERT_TRUE(d.OnWholeResponse(
      R"({"id":"chatcmpl-2","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"Hi!",
          "reasoning_content":"greet"},"finish_reason":"stop"}],"usage":{"prompt_tokens":5,"completion_tokens":2,"total_tokens":7}})",
      events));
  EXPECT_TRUE(d.done());
  EXPECT_TRUE(d.finish_seen());
  d.Finish(events);
  const ChatResponse r = Fold(events);
  EXPECT_EQ(r.choices[0].text, "Hi!");
  ASSERT_EQ(r.choices[0].reasoning.size(), 1u);
  EXPECT_EQ(r.choices[0].reasoning[0].text, "greet");
  EXPECT_EQ(r.choices[0].finish, FinishReason::kStop);
  EXPECT_EQ(r.usage->completion_tokens, 2);
}

TEST(OpenAiResponse, WholeResponseWithToolCallsAndContentParts) {
  ResponseDecoder d(RequestKind::kChat);
  std::vector<StreamEvent> events;
  ASSERT_TRUE(d.OnWholeResponse(R"({"choices":[{"index":0,"message":{"role":"assistant",
      "content":[{"type":"text","text":"Let me "},{"type":"text","text":"check."}],
      "tool_calls":[{"id":"call_1","type":"function","function":{"name":"a","arguments":"{\"x\":1}"}},
                    {"id":"call_2","type":"function","function":{"name":"b","arguments":""}},
                    {"id":"call_1","type":"function","function":{"name":"c","arguments":"{}"}}]},
      "finish_reason":"tool_calls"}]})",
                                events));
  d.Finish(events);
  const ChatResponse r = Fold(events);
  EXPECT_EQ(r.choices[0].text, "Let me check.");
  ASSERT_EQ(r.choices[0].tool_calls.size(), 3u);  // every entry of a whole answer is its own call
  EXPECT_EQ(r.choices[0].tool_calls[0].arguments, R"({"x":1})");
  EXPECT_EQ(r.choices[0].tool_calls[1].name, "b");
  EXPECT_EQ(r.choices[0].tool_calls[1].arguments, "{}");
  EXPECT_EQ(r.choices[0].tool_calls[2].name, "c");
  EXPECT_EQ(r.choices[0].finish, FinishReason::kToolCalls);
}

TEST(OpenAiResponse, FinishReasonsMapKeepingTheNativeWord) {
  struct Case {
    const char* native;
    FinishReason reason;
  };
  for (const Case& c : {Case{"stop", FinishReason::kStop}, Case{"length", FinishReason::kLength},
                        Case{"tool_calls", FinishReason::kToolCalls}, Case{"function_call", FinishReason::kToolCalls},
                        Case{"content_filter", FinishReason::kContentFilter}, Case{"error", FinishReason::kError},
                        Case{"eos", FinishReason::kStop}, Case{"end_turn", FinishReason::kStop}}) {
    const auto finishes = All<FinishDelta>(FeedChat({DeltaChunk(R"({"content":"a"})", 0, Quoted(c.native))}));
    ASSERT_EQ(finishes.size(), 1u) << c.native;
    EXPECT_EQ(finishes[0].reason, c.reason) << c.native;
    EXPECT_EQ(finishes[0].native_reason, c.native);
  }
}

TEST(OpenAiResponse, StopAfterToolCallsReadsAsToolCalls) {
  const auto events = FeedChat({DeltaChunk(R"({"tool_calls":[{"index":0,"id":"c","type":"function","function":{"name":"f","arguments":"{}"}}]})"),
                                DeltaChunk("{}", 0, R"("stop")"),
                                DeltaChunk("{}", 0, R"("length")")});  // a second finish is ignored
  const auto finishes = All<FinishDelta>(events);
  ASSERT_EQ(finishes.size(), 1u);
  EXPECT_EQ(finishes[0].reason, FinishReason::kToolCalls);
  EXPECT_EQ(finishes[0].native_reason, "stop");
}

// Every way of cutting `text` into `pieces` byte ranges, fed as separate
// content chunks, comes out whole and as complete UTF-8.
TEST(OpenAiResponse, ChineseAndEmojiSplitInsideACharacterComeOutWhole) {
  const std::string text = "你好，世界🙂👍🏽é!";
  for (std::size_t piece = 1; piece <= 5; ++piece) {
    std::vector<std::string> chunks;
    for (std::size_t i = 0; i < text.size(); i += piece) {
      // Raw bytes inside a JSON string: how servers that cut tokens mid-character send them.
      chunks.push_back(DeltaChunk(R"({"content":")" + text.substr(i, piece) + R"("})"));
    }
    chunks.push_back(DeltaChunk("{}", 0, R"("stop")"));
    const auto events = FeedChat(chunks);
    std::string joined;
    for (const TextDelta& t : All<TextDelta>(events)) {
      EXPECT_TRUE(IsValidUtf8(t.text)) << "piece " << piece;
      EXPECT_FALSE(t.text.empty());
      joined += t.text;
    }
    EXPECT_EQ(joined, text) << "piece " << piece;
    EXPECT_TRUE(std::holds_alternative<FinishDelta>(events.back()));
  }
}

TEST(OpenAiResponse, SplitCharactersInReasoningAndArgumentsComeOutWhole) {
  const std::string thought = "思考中🤔";
  const std::string args = R"({"city":"東京"})";
  std::vector<std::string> chunks;
  for (std::size_t i = 0; i < thought.size(); i += 2) {
    chunks.push_back(DeltaChunk(R"({"reasoning_content":")" + thought.substr(i, 2) + R"("})"));
  }
  chunks.push_back(DeltaChunk(R"({"tool_calls":[{"index":0,"id":"c1","type":"function","function":{"name":"weather","arguments":""}}]})"));
  const std::string escaped = json::serialize(json::string(args));  // "{\"city\":\"東京\"}"
  const std::string inner = escaped.substr(1, escaped.size() - 2);
  for (std::size_t i = 0; i < inner.size(); i += 3) {
    std::string piece = inner.substr(i, 3);
    if (piece.back() == '\\' && i + 3 < inner.size()) {  // never split a JSON escape
      piece += inner[i + 3];
      ++i;
    }
    chunks.push_back(DeltaChunk(R"({"tool_calls":[{"index":0,"function":{"arguments":")" + piece + R"("}}]})"));
  }
  const auto events = FeedChat(chunks);
  for (const auto& r : All<ReasoningDelta>(events)) EXPECT_TRUE(IsValidUtf8(r.text));
  for (const auto& c : All<ToolCallDelta>(events)) EXPECT_TRUE(IsValidUtf8(c.arguments));
  const ChatResponse r = Fold(events);
  ASSERT_EQ(r.choices[0].reasoning.size(), 1u);
  EXPECT_EQ(r.choices[0].reasoning[0].text, thought);
  ASSERT_EQ(r.choices[0].tool_calls.size(), 1u);
  EXPECT_EQ(r.choices[0].tool_calls[0].arguments, args);
}

TEST(OpenAiResponse, ACharacterCutOffAtTheEndBecomesAReplacementCharacter) {
  ResponseDecoder d(RequestKind::kChat);
  std::vector<StreamEvent> events;
  ASSERT_TRUE(d.OnData(DeltaChunk("{\"content\":\"ok\xF0\x9F\"}"), events));
  ASSERT_EQ(All<TextDelta>(events).size(), 1u);
  EXPECT_EQ(All<TextDelta>(events)[0].text, "ok");
  d.Finish(events);
  EXPECT_EQ(Fold(events).choices[0].text, "ok\xEF\xBF\xBD");
  // ...and before the finish of its choice, not after it.
  ResponseDecoder f(RequestKind::kChat);
  std::vector<StreamEvent> cut;
  ASSERT_TRUE(f.OnData(DeltaChunk("{\"content\":\"a\xE4\xB8\"}", 0, R"("length")"), cut));
  ASSERT_GE(cut.size(), 2u);
  EXPECT_TRUE(std::holds_alternative<FinishDelta>(cut.back()));
  EXPECT_EQ(Fold(cut).choices[0].text, "a\xEF\xBF\xBD");
}

TEST(OpenAiResponse, MalformedUtf8FromUpstreamBecomesReplacementCharacters) {
  // A stray continuation byte, an overlong "/", a UTF-16 surrogate encoded as
  // UTF-8, and a lead byte followed by ASCII: each bad byte is one U+FFFD.
  const std::string bad = "a\x80" "b\xC0\xAF" "c\xED\xA0\x80" "d\xE4" "x";
  const auto events = FeedChat({DeltaChunk(R"({"content":")" + bad + R"(","reasoning":")" + bad + R"("})"),
                                DeltaChunk(R"({"tool_calls":[{"index":0,"id":"c","function":{"name":"f","arguments":")" + bad + R"("}}]})")});
  const std::string want = "a\xEF\xBF\xBD" "b\xEF\xBF\xBD\xEF\xBF\xBD" "c\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD" "d\xEF\xBF\xBDx";
  for (const StreamEvent& e : events) {
    if (const auto* t = std::get_if<TextDelta>(&e)) {
      EXPECT_TRUE(IsValidUtf8(t->text));
    } else if (const auto* r = std::get_if<ReasoningDelta>(&e)) {
      EXPECT_TRUE(IsValidUtf8(r->text));
    } else if (const auto* c = std::get_if<ToolCallDelta>(&e)) {
      EXPECT_TRUE(IsValidUtf8(c->arguments));
    }
  }
  const ChatResponse r = Fold(events);
  EXPECT_EQ(r.choices[0].text, want);
  EXPECT_EQ(r.choices[0].reasoning.at(0).text, want);
  EXPECT_EQ(r.choices[0].tool_calls.at(0).arguments, want);
}

ChatResponse ToolCallsOf(const std::vector<std::string>& chunks) {
  const auto events = FeedChat(chunks);
  std::vector<int> seen;
  for (const ToolCallDelta& d : All<ToolCallDelta>(events)) {
    if (!d.id.empty()) seen.push_back(d.index);
  }
  std::vector<int> sorted = seen;
  std::sort(sorted.begin(), sorted.end());
  EXPECT_EQ(std::adjacent_find(sorted.begin(), sorted.end()), sorted.end()) << "an id was announced twice";
  return Fold(events);
}

void ExpectTwoCalls(const ChatResponse& r) {
  ASSERT_EQ(r.choices[0].tool_calls.size(), 2u);
  const auto& calls = r.choices[0].tool_calls;
  EXPECT_EQ(calls[0].id, "call_a");
  EXPECT_EQ(calls[0].name, "get_weather");
  EXPECT_EQ(calls[0].arguments, R"({"city":"Paris"})");
  EXPECT_EQ(calls[1].id, "call_b");
  EXPECT_EQ(calls[1].name, "get_time");
  EXPECT_EQ(calls[1].arguments, R"({"tz":"CET"})");
}

TEST(OpenAiResponse, ParallelToolCallsWithDistinctIndexes) {
  ExpectTwoCalls(ToolCallsOf({
      DeltaChunk(R"({"role":"assistant","content":null,"tool_calls":[{"index":0,"id":"call_a","type":"function","function":{"name":"get_weather","arguments":""}}]})"),
      DeltaChunk(R"({"tool_calls":[{"index":0,"function":{"arguments":"{\"city\":"}}]})"),
      DeltaChunk(R"({"tool_calls":[{"index":1,"id":"call_b","type":"function","function":{"name":"get_time","arguments":"{\"tz\""}}]})"),
      DeltaChunk(R"({"tool_calls":[{"index":0,"function":{"arguments":"\"Paris\"}"}}]})"),
      DeltaChunk(R"({"tool_calls":[{"index":1,"function":{"arguments":":\"CET\"}"}}]})"),
      DeltaChunk("{}", 0, R"("tool_calls")"),
  }));
}

TEST(OpenAiResponse, ParallelToolCallsThatAllSayIndexZero) {
  ExpectTwoCalls(ToolCallsOf({
      DeltaChunk(R"({"tool_calls":[{"index":0,"id":"call_a","type":"function","function":{"name":"get_weather","arguments":"{\"city\":"}}]})"),
      DeltaChunk(R"({"tool_calls":[{"index":0,"function":{"arguments":"\"Paris\"}"}}]})"),
      DeltaChunk(R"({"tool_calls":[{"index":0,"id":"call_b","type":"function","function":{"name":"get_time","arguments":""}}]})"),
      DeltaChunk(R"({"tool_calls":[{"index":0,"function":{"arguments":"{\"tz\":\"CET\"}"}}]})"),
  }));
}

TEST(OpenAiResponse, ParallelToolCallsWithoutIndexes) {
  ExpectTwoCalls(ToolCallsOf({
      DeltaChunk(R"({"tool_calls":[{"id":"call_a","type":"function","function":{"name":"get_weather","arguments":"{\"city\":"}}]})"),
      DeltaChunk(R"({"tool_calls":[{"function":{"arguments":"\"Paris\"}"}}]})"),
      DeltaChunk(R"({"tool_calls":[{"id":"call_b","type":"function","function":{"name":"get_time"}}]})"),
      DeltaChunk(R"({"tool_calls":[{"function":{"arguments":"{\"tz\":\"CET\"}"}}]})"),
  }));
}

TEST(OpenAiResponse, ParallelToolCallsWholeInOneChunkAndIdsOnEveryFragment) {
  ExpectTwoCalls(ToolCallsOf({
      DeltaChunk(R"({"tool_calls":[{"id":"call_a","type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Paris\"}"}},
                                   {"id":"call_b","type":"function","function":{"name":"get_time","arguments":"{\"tz\":\"CET\"}"}}]})"),
  }));
  ExpectTwoCalls(ToolCallsOf({
      DeltaChunk(R"({"tool_calls":[{"index":0,"id":"call_a","function":{"name":"get_weather","arguments":"{\"city\":"}}]})"),
      DeltaChunk(R"({"tool_calls":[{"index":1,"id":"call_b","function":{"name":"get_time","arguments":"{\"tz\":"}}]})"),
      DeltaChunk(R"({"tool_calls":[{"index":0,"id":"call_a","function":{"arguments":"\"Paris\"}"}}]})"),
      DeltaChunk(R"({"tool_calls":[{"index":1,"id":"call_b","function":{"name":"get_time","arguments":"\"CET\"}"}}]})"),
  }));
}

TEST(OpenAiResponse, ToolCallsKeepOpenAiFragmentShape) {
  const auto events = FeedChat({
      DeltaChunk(R"({"tool_calls":[{"index":3,"id":"call_x","type":"function","function":{"name":"f","arguments":""}}]})"),
      DeltaChunk(R"({"tool_calls":[{"index":3,"function":{"arguments":""}}]})"),
      DeltaChunk(R"({"tool_calls":[{"index":3,"function":{"arguments":"{}"}}]})"),
  });
  const auto calls = All<ToolCallDelta>(events);
  ASSERT_EQ(calls.size(), 2u);  // the empty fragment says nothing
  EXPECT_EQ(calls[0].index, 0);  // renumbered from 3
  EXPECT_EQ(calls[0].id, "call_x");
  EXPECT_EQ(calls[0].name, "f");
  EXPECT_TRUE(calls[1].id.empty());
  EXPECT_TRUE(calls[1].name.empty());
  EXPECT_EQ(calls[1].arguments, "{}");
}

TEST(OpenAiResponse, AToolCallWithoutArgumentsReadsEmptyObjectAndGetsAnId) {
  const auto events = FeedChat({DeltaChunk(R"({"tool_calls":[{"index":0,"type":"function","function":{"name":"ping"}}]})"),
                                DeltaChunk("{}", 0, R"("tool_calls")")});
  const auto calls = All<ToolCallDelta>(events);
  ASSERT_EQ(calls.size(), 2u);
  EXPECT_TRUE(calls[0].arguments.empty());
  EXPECT_EQ(calls[0].id.rfind("call_", 0), 0u);  // made up: the upstream sent none
  // At the finish the call still has no arguments: the stream says "{}", so
  // a client that concatenates the fragments gets valid JSON.
  EXPECT_EQ(calls[1].arguments, "{}");
  EXPECT_EQ(calls[1].index, 0);
  const ChatResponse r = Fold(events);
  EXPECT_EQ(r.choices[0].tool_calls[0].arguments, "{}");
  EXPECT_EQ(r.choices[0].tool_calls[0].name, "ping");
}

TEST(OpenAiResponse, LegacyFunctionCallDeltasBecomeAToolCall) {
  const ChatResponse r = Fold(FeedChat({DeltaChunk(R"({"function_call":{"name":"f","arguments":"{\"a\""}})"),
                                        DeltaChunk(R"({"function_call":{"arguments":":1}"}})"),
                                        DeltaChunk("{}", 0, R"("function_call")")}));
  ASSERT_EQ(r.choices[0].tool_calls.size(), 1u);
  EXPECT_EQ(r.choices[0].tool_calls[0].name, "f");
  EXPECT_EQ(r.choices[0].tool_calls[0].arguments, R"({"a":1})");
  EXPECT_EQ(r.choices[0].finish, FinishReason::kToolCalls);
}

TEST(OpenAiResponse, MoreThanOneChoiceStayApart) {
  ResponseDecoder d(RequestKind::kChat);
  const auto events = Feed(d, {
      R"({"choices":[{"index":0,"delta":{"role":"assistant","content":"A"}},{"index":1,"delta":{"role":"assistant","content":"B"}}]})",
      R"({"choices":[{"index":1,"delta":{"content":"b"},"finish_reason":null}]})",
      R"({"choices":[{"index":1,"delta":{"tool_calls":[{"index":0,"id":"c","function":{"name":"f","arguments":"{}"}}]}}]})",
      R"({"choices":[{"index":0,"delta":{"content":"a"},"finish_reason":"stop"}]})",
      R"({"choices":[{"index":1,"delta":{},"finish_reason":"tool_calls"}]})",
      R"({"choices":[],"usage":{"prompt_tokens":4,"completion_tokens":6}})",
  });
  const ChatResponse r = Fold(events);
  ASSERT_EQ(r.choices.size(), 2u);
  EXPECT_EQ(r.choices[0].text, "Aa");
  EXPECT_EQ(r.choices[1].text, "Bb");
  EXPECT_TRUE(r.choices[0].tool_calls.empty());
  ASSERT_EQ(r.choices[1].tool_calls.size(), 1u);
  EXPECT_EQ(r.choices[0].finish, FinishReason::kStop);
  EXPECT_EQ(r.choices[1].finish, FinishReason::kToolCalls);
  EXPECT_TRUE(d.finish_seen());
}

TEST(OpenAiResponse, FinishSeenNeedsEveryChoiceThatSpoke) {
  ResponseDecoder d(RequestKind::kChat);
  std::vector<StreamEvent> events;
  EXPECT_FALSE(d.finish_seen());
  ASSERT_TRUE(d.OnData(R"({"choices":[{"index":0,"delta":{"content":"a"}},{"index":1,"delta":{"content":"b"}}]})", events));
  ASSERT_TRUE(d.OnData(R"({"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":1}})", events));
  EXPECT_FALSE(d.finish_seen());
  ASSERT_TRUE(d.OnData(R"({"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]})", events));
  EXPECT_FALSE(d.finish_seen());  // choice 1 spoke and has not finished
  ASSERT_TRUE(d.OnData(R"({"choices":[{"index":1,"delta":{},"finish_reason":"length"}]})", events));
  EXPECT_TRUE(d.finish_seen());
}

TEST(OpenAiResponse, ChoiceIndexesOutOfRangeAreIgnored) {
  const ChatResponse r = Fold(FeedChat({
      R"({"choices":[{"index":-1,"delta":{"content":"no"}},{"index":0.5,"delta":{"content":"no"}},
                     {"index":1000000000,"delta":{"content":"no"}},{"index":0,"delta":{"content":"yes"}}]})",
      R"({"choices":[{"delta":{"content":"!"}}]})",  // unnumbered: choice 0
      R"({"choices":[5,null,{"index":"0","delta":{"content":"no"}}]})",
  }));
  ASSERT_EQ(r.choices.size(), 1u);
  EXPECT_EQ(r.choices[0].text, "yes!");
}

TEST(OpenAiResponse, DoneEndsTheStreamAndEmptyEventsAreSkipped) {
  ResponseDecoder d(RequestKind::kChat);
  std::vector<StreamEvent> events;
  ASSERT_TRUE(d.OnData("", events));
  ASSERT_TRUE(d.OnData(" \n", events));
  EXPECT_TRUE(events.empty());
  EXPECT_FALSE(d.done());
  ASSERT_TRUE(d.OnData(" [DONE] ", events));
  EXPECT_TRUE(d.done());
  ASSERT_TRUE(d.OnData(DeltaChunk(R"({"content":"late"})"), events));
  EXPECT_TRUE(events.empty());
}

TEST(OpenAiResponse, ReasoningContentAndReasoningAreOneBlockNeverDuplicated) {
  const ChatResponse r = Fold(FeedChat({
      DeltaChunk(R"({"role":"assistant","reasoning_content":"Let me"})"),
      DeltaChunk(R"({"reasoning":" think","reasoning_content":" think"})"),
      DeltaChunk(R"({"content":"Done."})"),
  }));
  ASSERT_EQ(r.choices[0].reasoning.size(), 1u);
  EXPECT_EQ(r.choices[0].reasoning[0].kind, ReasoningPart::Kind::kText);
  EXPECT_EQ(r.choices[0].reasoning[0].text, "Let me think");
  EXPECT_EQ(r.choices[0].text, "Done.");
}

TEST(OpenAiResponse, OpenRouterReasoningDetailsStream) {
  // Anthropic through OpenRouter: text fragments of block 0, its signature
  // last, a redacted block; `reasoning` repeats the text.
  const auto events = FeedChat({
      DeltaChunk(R"({"role":"assistant","content":"","reasoning":"Hmm,","reasoning_details":[{"type":"reasoning.text","text":"Hmm,","format":"anthropic-claude-v1","index":0}]})"),
      DeltaChunk(R"({"reasoning":" yes.","reasoning_details":[{"type":"reasoning.text","text":" yes.","format":"anthropic-claude-v1","index":0}]})"),
      DeltaChunk(R"({"reasoning":"","reasoning_details":[{"type":"reasoning.text","text":"","signature":"EqQB","format":"anthropic-claude-v1","index":0}]})"),
      DeltaChunk(R"({"reasoning_details":[{"type":"reasoning.encrypted","data":"REDACTED==","format":"anthropic-claude-v1","index":1,"id":"rs_1"}]})"),
      DeltaChunk(R"({"reasoning_details":[{"type":"reasoning.summary","summary":"Short.","format":"openai-responses-v1","index":2}]})"),
      DeltaChunk(R"({"content":"Answer"})", 0, R"("stop")"),
  });
  const ChatResponse r = Fold(events);
  ASSERT_EQ(r.choices[0].reasoning.size(), 3u);
  EXPECT_EQ(r.choices[0].reasoning[0].text, "Hmm, yes.");
  EXPECT_EQ(r.choices[0].reasoning[0].signature, "EqQB");
  EXPECT_EQ(r.choices[0].reasoning[0].format, "anthropic-claude-v1");
  EXPECT_EQ(r.choices[0].reasoning[1].kind, ReasoningPart::Kind::kEncrypted);
  EXPECT_EQ(r.choices[0].reasoning[1].data, "REDACTED==");
  EXPECT_EQ(r.choices[0].reasoning[1].id, "rs_1");
  EXPECT_EQ(r.choices[0].reasoning[2].kind, ReasoningPart::Kind::kSummary);
  EXPECT_EQ(r.choices[0].reasoning[2].text, "Short.");
  EXPECT_EQ(r.choices[0].text, "Answer");
  // Reasoning comes before text in each chunk's events.
  EXPECT_TRUE(std::holds_alternative<ReasoningDelta>(events.front()));
}

TEST(OpenAiResponse, ReasoningDetailsOfAWholeAnswerAreBlocksInOrder) {
  ResponseDecoder d(RequestKind::kChat);
  std::vector<StreamEvent> events;
  ASSERT_TRUE(d.OnWholeResponse(R"({"choices":[{"index":0,"finish_reason":"stop","message":{"role":"assistant",
      "content":"ok","reasoning":"one two",
      "reasoning_details":[{"type":"reasoning.text","text":"one","format":"unknown"},
                           {"type":"reasoning.text","text":" two","format":"unknown"}]}}]})",
                                events));
  const ChatResponse r = Fold(events);
  ASSERT_EQ(r.choices[0].reasoning.size(), 2u);  // no index: each entry its own block
  EXPECT_EQ(r.choices[0].reasoning[0].text, "one");
  EXPECT_EQ(r.choices[0].reasoning[1].text, " two");
}

TEST(OpenAiResponse, GeminiThoughtSignatureAttachesToItsToolCall) {
  const auto events = FeedChat({
      DeltaChunk(R"({"tool_calls":[{"index":0,"id":"tool_0","type":"function","function":{"name":"f","arguments":"{}"}}],
                    "reasoning_details":[{"type":"reasoning.encrypted","data":"CiQB","format":"google-gemini-v1","index":0,"id":"tool_0"}]})"),
      DeltaChunk(R"({"reasoning_details":[{"type":"reasoning.encrypted","data":"loose","format":"google-gemini-v1","index":1,"id":"x"}]})"),
  });
  const ChatResponse r = Fold(events);
  ASSERT_EQ(r.choices[0].tool_calls.size(), 1u);
  EXPECT_EQ(r.choices[0].tool_calls[0].thought_signature, "CiQB");
  ASSERT_EQ(r.choices[0].reasoning.size(), 1u);
  EXPECT_EQ(r.choices[0].reasoning[0].data, "loose");
}

TEST(OpenAiResponse, RefusalsAreText) {
  EXPECT_EQ(Fold(FeedChat({DeltaChunk(R"({"content":null,"refusal":"I can't help"})"),
                           DeltaChunk(R"({"refusal":" with that."})", 0, R"("stop")")}))
                .choices[0]
                .text,
            "I can't help with that.");
}

// ================================================================ stream encoder

TEST(OpenAiStreamEncoder, ChunksCarryTheEnvelopeAndRoleOnce) {
  StreamEncoder enc(Meta(), ResponseOptions{});
  EXPECT_FALSE(enc.started());
  EXPECT_EQ(enc.Encode(UsageDelta{Usage{1, 2}}), "");
  EXPECT_EQ(enc.Encode(TextDelta{0, ""}), "");
  EXPECT_FALSE(enc.started());
  const std::string first = enc.Encode(TextDelta{0, "Hel"});
  EXPECT_TRUE(enc.started());
  ASSERT_EQ(first.rfind("data: ", 0), 0u);
  ASSERT_EQ(first.substr(first.size() - 2), "\n\n");
  const json::object c = Chunks(first).at(0);
  EXPECT_EQ(c.at("id").as_string(), "gen-1");
  EXPECT_EQ(c.at("object").as_string(), "chat.completion.chunk");
  EXPECT_EQ(c.at("created").as_int64(), 1700000000);
  EXPECT_EQ(c.at("model").as_string(), "openai/gpt-4o");
  EXPECT_EQ(c.at("provider").as_string(), "OpenAI");
  EXPECT_FALSE(c.contains("system_fingerprint"));
  EXPECT_FALSE(c.contains("usage"));
  const auto& choice = c.at("choices").at(0).as_object();
  EXPECT_EQ(choice.at("index").as_int64(), 0);
  EXPECT_EQ(choice.at("delta").at("role").as_string(), "assistant");
  EXPECT_EQ(choice.at("delta").at("content").as_string(), "Hel");
  EXPECT_TRUE(choice.at("logprobs").is_null());
  EXPECT_TRUE(choice.at("finish_reason").is_null());
  const json::object second = Chunks(enc.Encode(TextDelta{0, "lo"})).at(0);
  EXPECT_FALSE(second.at("choices").at(0).at("delta").as_object().contains("role"));
  const json::object fin = Chunks(enc.Encode(FinishDelta{0, FinishReason::kStop, "end_turn"})).at(0);
  EXPECT_EQ(fin.at("choices").at(0).at("finish_reason").as_string(), "stop");
  EXPECT_TRUE(fin.at("choices").at(0).at("delta").as_object().empty());
}

TEST(OpenAiStreamEncoder, FinishSendsUsageThenDone) {
  StreamEncoder with_usage(Meta(), ResponseOptions{RequestKind::kChat, true, true});
  bool done = false;
  const auto chunks = Chunks(with_usage.Finish(Usage{2, 3, 1, 1, 0}, Money{1500}), &done);
  EXPECT_TRUE(done);
  ASSERT_EQ(chunks.size(), 1u);
  EXPECT_TRUE(chunks[0].at("choices").as_array().empty());
  EXPECT_EQ(chunks[0].at("object").as_string(), "chat.completion.chunk");
  const auto& usage = chunks[0].at("usage");
  EXPECT_EQ(usage.at("prompt_tokens").as_int64(), 2);
  EXPECT_EQ(usage.at("completion_tokens").as_int64(), 3);
  EXPECT_EQ(usage.at("total_tokens").as_int64(), 5);
  EXPECT_DOUBLE_EQ(usage.at("cost").as_double(), 0.0000015);
  const std::string plain = StreamEncoder(Meta(), ResponseOptions{}).Finish(Usage{2, 3}, Money{0});
  EXPECT_EQ(plain, "data: [DONE]\n\n");
}

TEST(OpenAiStreamEncoder, ReasoningIsShownAsOpenRouterShowsIt) {
  StreamEncoder enc(Meta(), ResponseOptions{});
  json::object c = Chunks(enc.Encode(ReasoningDelta{0, 0, ReasoningPart::Kind::kText, "Let me", "", "", "anthropic-claude-v1", ""})).at(0);
  auto delta = c.at("choices").at(0).at("delta").as_object();
  EXPECT_EQ(delta.at("role").as_string(), "assistant");
  EXPECT_EQ(delta.at("reasoning").as_string(), "Let me");
  auto detail = delta.at("reasoning_details").at(0).as_object();
  EXPECT_EQ(detail.at("type").as_string(), "reasoning.text");
  EXPECT_EQ(detail.at("text").as_string(), "Let me");
  EXPECT_TRUE(detail.at("signature").is_null());
  EXPECT_EQ(detail.at("format").as_string(), "anthropic-claude-v1");
  EXPECT_EQ(detail.at("index").as_int64(), 0);
  EXPECT_FALSE(detail.contains("id"));

  c = Chunks(enc.Encode(ReasoningDelta{0, 0, ReasoningPart::Kind::kText, "", "sig", "", "", ""})).at(0);
  detail = c.at("choices").at(0).at("delta").at("reasoning_details").at(0).as_object();
  EXPECT_EQ(detail.at("signature").as_string(), "sig");
  EXPECT_EQ(detail.at("format").as_string(), "anthropic-claude-v1");  // the block's, from its first fragment
  EXPECT_FALSE(c.at("choices").at(0).at("delta").as_object().contains("reasoning"));

  c = Chunks(enc.Encode(ReasoningDelta{0, 1, ReasoningPart::Kind::kEncrypted, "", "", "opaque", "openai-responses-v1", "rs_9"})).at(0);
  delta = c.at("choices").at(0).at("delta").as_object();
  EXPECT_FALSE(delta.contains("reasoning"));
  detail = delta.at("reasoning_details").at(0).as_object();
  EXPECT_EQ(detail.at("type").as_string(), "reasoning.encrypted");
  EXPECT_EQ(detail.at("data").as_string(), "opaque");
  EXPECT_EQ(detail.at("id").as_string(), "rs_9");
  EXPECT_EQ(detail.at("index").as_int64(), 1);

  c = Chunks(enc.Encode(ReasoningDelta{0, 2, ReasoningPart::Kind::kSummary, "Summary.", "", "", "", ""})).at(0);
  delta = c.at("choices").at(0).at("delta").as_object();
  EXPECT_EQ(delta.at("reasoning").as_string(), "Summary.");
  detail = delta.at("reasoning_details").at(0).as_object();
  EXPECT_EQ(detail.at("type").as_string(), "reasoning.summary");
  EXPECT_EQ(detail.at("summary").as_string(), "Summary.");
  EXPECT_EQ(detail.at("format").as_string(), "unknown");  // none known for this block
  EXPECT_EQ(detail.at("index").as_int64(), 2);

  EXPECT_EQ(enc.Encode(ReasoningDelta{0, 0, ReasoningPart::Kind::kText, "", "", "", "unknown", ""}), "");
}

TEST(OpenAiStreamEncoder, ABlocksFormatAndIdStayWithItsLaterFragments) {
  StreamEncoder enc(Meta(), ResponseOptions{});
  EXPECT_EQ(enc.Encode(ReasoningDelta{0, 4, ReasoningPart::Kind::kText, "", "", "", "google-gemini-v1", "blk"}), "");
  const json::object c = Chunks(enc.Encode(ReasoningDelta{0, 4, ReasoningPart::Kind::kText, "thought"})).at(0);
  const auto& detail = c.at("choices").at(0).at("delta").at("reasoning_details").at(0).as_object();
  EXPECT_EQ(detail.at("format").as_string(), "google-gemini-v1");
  EXPECT_EQ(detail.at("id").as_string(), "blk");
  EXPECT_EQ(detail.at("index").as_int64(), 0);  // numbered as sent, not as the canonical 4
}

TEST(OpenAiStreamEncoder, ExcludedReasoningIsNotSent) {
  StreamEncoder enc(Meta(), ResponseOptions{RequestKind::kChat, false, false});
  EXPECT_EQ(enc.Encode(ReasoningDelta{0, 0, ReasoningPart::Kind::kText, "secret thoughts"}), "");
  EXPECT_FALSE(enc.started());
  const json::object c = Chunks(enc.Encode(TextDelta{0, "Hi"})).at(0);
  EXPECT_EQ(c.at("choices").at(0).at("delta").at("role").as_string(), "assistant");
}

TEST(OpenAiStreamEncoder, ToolCallFragmentsFollowOpenAi) {
  StreamEncoder enc(Meta(), ResponseOptions{});
  json::object c = Chunks(enc.Encode(ToolCallDelta{0, 0, "call_1", "get_weather", "{\"ci"})).at(0);
  auto delta = c.at("choices").at(0).at("delta").as_object();
  EXPECT_EQ(delta.at("role").as_string(), "assistant");
  const auto& first = delta.at("tool_calls").at(0).as_object();
  EXPECT_EQ(first.at("index").as_int64(), 0);
  EXPECT_EQ(first.at("id").as_string(), "call_1");
  EXPECT_EQ(first.at("type").as_string(), "function");
  EXPECT_EQ(first.at("function").at("name").as_string(), "get_weather");
  EXPECT_EQ(first.at("function").at("arguments").as_string(), "{\"ci");
  c = Chunks(enc.Encode(ToolCallDelta{0, 0, "", "", "ty\":1}"})).at(0);
  const auto& later = c.at("choices").at(0).at("delta").at("tool_calls").at(0).as_object();
  EXPECT_EQ(later.size(), 2u);  // index and function only
  EXPECT_EQ(later.at("index").as_int64(), 0);
  EXPECT_EQ(later.at("function").as_object().size(), 1u);
  EXPECT_EQ(later.at("function").at("arguments").as_string(), "ty\":1}");
  EXPECT_EQ(enc.Encode(ToolCallDelta{0, 0, "", "", ""}), "");
  c = Chunks(enc.Encode(ToolCallDelta{0, 1, "", "noop", ""})).at(0);
  const auto& second = c.at("choices").at(0).at("delta").at("tool_calls").at(0).as_object();
  EXPECT_EQ(second.at("index").as_int64(), 1);
  EXPECT_EQ(second.at("id").as_string().subview().substr(0, 5), "call_");  // made up
  const json::object fin = Chunks(enc.Encode(FinishDelta{0, FinishReason::kToolCalls, "tool_calls"})).at(0);
  EXPECT_EQ(fin.at("choices").at(0).at("finish_reason").as_string(), "tool_calls");
}

TEST(OpenAiStreamEncoder, ThoughtSignaturesGoInReasoningDetailsWithTheCallId) {
  StreamEncoder enc(Meta(), ResponseOptions{RequestKind::kChat, false, false});  // even with reasoning excluded
  enc.Encode(ReasoningDelta{0, 0, ReasoningPart::Kind::kText, "hidden"});
  const json::object c = Chunks(enc.Encode(ToolCallDelta{0, 0, "call_g", "f", "{}", "sig=="})).at(0);
  const auto& delta = c.at("choices").at(0).at("delta").as_object();
  EXPECT_EQ(delta.at("tool_calls").at(0).at("id").as_string(), "call_g");
  const auto& detail = delta.at("reasoning_details").at(0).as_object();
  EXPECT_EQ(detail.at("type").as_string(), "reasoning.encrypted");
  EXPECT_EQ(detail.at("data").as_string(), "sig==");
  EXPECT_EQ(detail.at("id").as_string(), "call_g");
  EXPECT_EQ(detail.at("format").as_string(), "google-gemini-v1");
}

TEST(OpenAiStreamEncoder, EachChoiceGetsItsOwnRole) {
  StreamEncoder enc(Meta(), ResponseOptions{});
  const auto a = Chunks(enc.Encode(TextDelta{0, "A"})).at(0);
  const auto b = Chunks(enc.Encode(TextDelta{1, "B"})).at(0);
  const auto b2 = Chunks(enc.Encode(TextDelta{1, "b"})).at(0);
  EXPECT_EQ(a.at("choices").at(0).at("index").as_int64(), 0);
  EXPECT_EQ(b.at("choices").at(0).at("index").as_int64(), 1);
  EXPECT_EQ(b.at("choices").at(0).at("delta").at("role").as_string(), "assistant");
  EXPECT_FALSE(b2.at("choices").at(0).at("delta").as_object().contains("role"));
  // A choice that finishes without output still says who spoke.
  const auto c = Chunks(enc.Encode(FinishDelta{2, FinishReason::kLength, ""})).at(0);
  EXPECT_EQ(c.at("choices").at(0).at("delta").at("role").as_string(), "assistant");
  EXPECT_EQ(c.at("choices").at(0).at("delta").at("content").as_string(), "");
}

TEST(OpenAiStreamEncoder, TextCompletionChunks) {
  StreamEncoder enc(Meta(), ResponseOptions{RequestKind::kCompletion, true, true});
  const auto t = Chunks(enc.Encode(TextDelta{0, "x"})).at(0);
  EXPECT_EQ(t.at("object").as_string(), "text_completion");
  EXPECT_EQ(t.at("choices").at(0).at("text").as_string(), "x");
  EXPECT_TRUE(t.at("choices").at(0).at("logprobs").is_null());
  EXPECT_EQ(enc.Encode(ReasoningDelta{0, 0, ReasoningPart::Kind::kText, "r"}), "");
  EXPECT_EQ(enc.Encode(ToolCallDelta{0, 0, "c", "f", "{}"}), "");
  const auto f = Chunks(enc.Encode(FinishDelta{0, FinishReason::kLength, "length"})).at(0);
  EXPECT_EQ(f.at("choices").at(0).at("finish_reason").as_string(), "length");
  EXPECT_EQ(f.at("choices").at(0).at("text").as_string(), "");
  const auto u = Chunks(enc.Finish(Usage{1, 1}, Money{0})).at(0);
  EXPECT_EQ(u.at("object").as_string(), "text_completion");
  EXPECT_TRUE(u.at("choices").as_array().empty());
}

TEST(OpenAiStreamEncoder, UsageJsonShape) {
  const json::object u = Object(UsageJson(Usage{120, 482, 100, 448, 10}, Money{2'500'000}));
  EXPECT_EQ(u.at("prompt_tokens").as_int64(), 120);
  EXPECT_EQ(u.at("completion_tokens").as_int64(), 482);
  EXPECT_EQ(u.at("total_tokens").as_int64(), 602);
  EXPECT_EQ(u.at("prompt_tokens_details").at("cached_tokens").as_int64(), 100);
  EXPECT_EQ(u.at("prompt_tokens_details").at("cache_write_tokens").as_int64(), 10);
  EXPECT_EQ(u.at("completion_tokens_details").at("reasoning_tokens").as_int64(), 448);
  EXPECT_DOUBLE_EQ(u.at("cost").as_double(), 0.0025);
  EXPECT_EQ(u.at("is_byok").as_bool(), false);
}

// What the gateway sends, read back by the decoder the providers use, adds
// up to the same answer.
TEST(OpenAiStreamEncoder, EncodedStreamDecodesBackToTheSameAnswer) {
  const std::vector<StreamEvent> events = {
      ReasoningDelta{0, 0, ReasoningPart::Kind::kText, "Think", "", "", "anthropic-claude-v1", ""},
      ReasoningDelta{0, 0, ReasoningPart::Kind::kText, "ing 🤔", "sig", "", "", ""},
      ReasoningDelta{0, 1, ReasoningPart::Kind::kEncrypted, "", "", "blob", "anthropic-claude-v1", "r1"},
      TextDelta{0, "你好"},
      TextDelta{1, "Other choice"},
      ToolCallDelta{0, 0, "call_1", "f", "{\"a\":", ""},
      ToolCallDelta{0, 1, "call_2", "g", "", "gsig"},
      ToolCallDelta{0, 0, "", "", "1}", ""},
      FinishDelta{1, FinishReason::kStop, "stop"},
      FinishDelta{0, FinishReason::kToolCalls, "tool_calls"},
  };
  StreamEncoder enc(Meta(), ResponseOptions{RequestKind::kChat, true, true});
  std::string sse;
  for (const StreamEvent& e : events) sse += enc.Encode(e);
  sse += enc.Finish(Usage{10, 20, 0, 5, 0}, Money{42});

  ResponseDecoder d(RequestKind::kChat);
  std::vector<StreamEvent> decoded;
  std::size_t pos = 0;
  while (pos < sse.size()) {
    const std::size_t end = sse.find("\n\n", pos);
    ASSERT_TRUE(d.OnData(sse.substr(pos + 6, end - pos - 6), decoded));
    pos = end + 2;
  }
  EXPECT_TRUE(d.done());
  EXPECT_TRUE(d.finish_seen());
  d.Finish(decoded);
  const ChatResponse want = Fold(events);
  const ChatResponse got = Fold(decoded);
  ASSERT_EQ(got.choices.size(), 2u);
  EXPECT_EQ(got.choices[0].text, want.choices[0].text);
  EXPECT_EQ(got.choices[1].text, "Other choice");
  ASSERT_EQ(got.choices[0].reasoning.size(), 2u);
  EXPECT_EQ(got.choices[0].reasoning[0].text, "Thinking 🤔");
  EXPECT_EQ(got.choices[0].reasoning[0].signature, "sig");
  EXPECT_EQ(got.choices[0].reasoning[1].data, "blob");
  EXPECT_EQ(got.choices[0].reasoning[1].id, "r1");
  ASSERT_EQ(got.choices[0].tool_calls.size(), 2u);
  EXPECT_EQ(got.choices[0].tool_calls[0].arguments, R"({"a":1})");
  EXPECT_EQ(got.choices[0].tool_calls[1].thought_signature, "gsig");
  EXPECT_EQ(got.choices[0].tool_calls[1].arguments, "{}");
  EXPECT_EQ(got.choices[0].finish, FinishReason::kToolCalls);
  EXPECT_EQ(got.choices[1].finish, FinishReason::kStop);
  EXPECT_EQ(got.usage, (Usage{10, 20, 0, 5, 0}));
}

// ================================================================ whole answers

TEST(OpenAiEncodeResponse, RendersACompletionWithUsageAndCost) {
  ChatResponse response;
  response.choices.resize(1);
  response.choices[0].text = "hi";
  response.choices[0].finish = FinishReason::kLength;
  const json::object v = Object(EncodeResponse(Meta(), ResponseOptions{}, response, Usage{5, 3}, Money{1500}));
  EXPECT_EQ(v.at("id").as_string(), "gen-1");
  EXPECT_EQ(v.at("object").as_string(), "chat.completion");
  EXPECT_EQ(v.at("provider").as_string(), "OpenAI");
  EXPECT_TRUE(v.at("system_fingerprint").is_null());
  const auto& choice = v.at("choices").at(0).as_object();
  EXPECT_EQ(choice.at("message").at("role").as_string(), "assistant");
  EXPECT_EQ(choice.at("message").at("content").as_string(), "hi");
  EXPECT_TRUE(choice.at("message").at("refusal").is_null());
  EXPECT_FALSE(choice.at("message").as_object().contains("tool_calls"));
  EXPECT_FALSE(choice.at("message").as_object().contains("reasoning"));
  EXPECT_TRUE(choice.at("logprobs").is_null());
  EXPECT_EQ(choice.at("finish_reason").as_string(), "length");
  EXPECT_EQ(v.at("usage").at("total_tokens").as_int64(), 8);
  EXPECT_DOUBLE_EQ(v.at("usage").at("cost").as_double(), 0.0000015);
  EXPECT_EQ(v.at("usage").at("is_byok").as_bool(), false);
}

ChatResponse RichResponse() {
  ChatResponse response;
  response.choices.resize(2);
  ChoiceResult& c = response.choices[0];
  c.reasoning = {ReasoningPart{ReasoningPart::Kind::kText, "Step", "sig", "", "anthropic-claude-v1", ""},
                 ReasoningPart{ReasoningPart::Kind::kEncrypted, "", "", "blob", "", "r1"}};
  c.tool_calls = {ToolCallPart{"call_1", "f", R"({"a":1})", "", {}}, ToolCallPart{"", "g", "{}", "gsig", {}}};
  c.finish = FinishReason::kToolCalls;
  response.choices[1].text = "second";
  response.usage = Usage{3, 4};
  return response;
}

TEST(OpenAiEncodeResponse, ToolCallsReasoningAndChoices) {
  const json::object v = Object(EncodeResponse(Meta(), ResponseOptions{}, RichResponse(), Usage{3, 4}, Money{0}));
  const auto& choices = v.at("choices").as_array();
  ASSERT_EQ(choices.size(), 2u);
  const auto& m = choices[0].at("message").as_object();
  EXPECT_TRUE(m.at("content").is_null());
  EXPECT_EQ(m.at("reasoning").as_string(), "Step");
  const auto& details = m.at("reasoning_details").as_array();
  ASSERT_EQ(details.size(), 3u);
  EXPECT_EQ(details[0].at("signature").as_string(), "sig");
  EXPECT_EQ(details[1].at("format").as_string(), "unknown");
  EXPECT_EQ(details[2].at("format").as_string(), "google-gemini-v1");
  const auto& calls = m.at("tool_calls").as_array();
  ASSERT_EQ(calls.size(), 2u);
  EXPECT_EQ(calls[0].at("function").at("arguments").as_string(), R"({"a":1})");
  EXPECT_EQ(calls[1].at("id").as_string(), details[2].at("id").as_string());  // a made-up id, shared
  EXPECT_EQ(choices[0].at("finish_reason").as_string(), "tool_calls");
  EXPECT_EQ(choices[1].at("index").as_int64(), 1);
  EXPECT_EQ(choices[1].at("message").at("content").as_string(), "second");
  EXPECT_TRUE(choices[1].at("finish_reason").is_null());

  const json::object hidden =
      Object(EncodeResponse(Meta(), ResponseOptions{RequestKind::kChat, false, false}, RichResponse(), Usage{}, Money{}));
  const auto& hm = hidden.at("choices").at(0).at("message").as_object();
  EXPECT_FALSE(hm.contains("reasoning"));
  ASSERT_EQ(hm.at("reasoning_details").as_array().size(), 1u);  // the thought signature only
}

TEST(OpenAiEncodeResponse, TextCompletionAndEmptyAnswers) {
  ChatResponse response;
  response.choices.resize(1);
  response.choices[0].text = "once";
  response.choices[0].finish = FinishReason::kStop;
  const json::object v =
      Object(EncodeResponse(Meta(), ResponseOptions{RequestKind::kCompletion, false, true}, response, Usage{}, Money{}));
  EXPECT_EQ(v.at("object").as_string(), "text_completion");
  EXPECT_EQ(v.at("choices").at(0).at("text").as_string(), "once");
  EXPECT_FALSE(v.at("choices").at(0).as_object().contains("message"));
  const json::object empty = Object(EncodeResponse(Meta(), ResponseOptions{}, ChatResponse{}, Usage{}, Money{}));
  ASSERT_EQ(empty.at("choices").as_array().size(), 1u);
  EXPECT_EQ(empty.at("choices").at(0).at("message").at("content").as_string(), "");
}

TEST(OpenAiEncodeResponse, WholeAnswerDecodesBack) {
  const std::string body = EncodeResponse(Meta(), ResponseOptions{}, RichResponse(), Usage{3, 4, 1, 2, 0}, Money{9});
  ResponseDecoder d(RequestKind::kChat);
  std::vector<StreamEvent> events;
  ASSERT_TRUE(d.OnWholeResponse(body, events));
  d.Finish(events);
  const ChatResponse got = Fold(events);
  ASSERT_EQ(got.choices.size(), 2u);
  ASSERT_EQ(got.choices[0].reasoning.size(), 2u);
  EXPECT_EQ(got.choices[0].reasoning[0].signature, "sig");
  EXPECT_EQ(got.choices[0].reasoning[1].data, "blob");
  ASSERT_EQ(got.choices[0].tool_calls.size(), 2u);
  EXPECT_EQ(got.choices[0].tool_calls[1].thought_signature, "gsig");
  EXPECT_EQ(got.choices[0].finish, FinishReason::kToolCalls);
  EXPECT_EQ(got.choices[1].text, "second");
  EXPECT_EQ(got.usage, (Usage{3, 4, 1, 2, 0}));
}

}  // namespace
}  // namespace tollgate::wire::openai
