// Outbound Responses codec tests (wire/responses.hpp: EncodeRequest,
// ResponseDecoder). The streams below are typed out by hand after OpenAI's
// "Streaming events" reference and the event interfaces of the `openai` npm
// package 6.x (resources/responses/responses.d.ts): every event is
// `event: TYPE` + `data: {"type": TYPE, "sequence_number": N, ...}`, output
// items announced by response.output_item.added and finished by
// response.output_item.done, the whole response on response.completed /
// response.incomplete / response.failed. Ids, texts and encrypted payloads are
// made up.
#include "tollgate/wire/responses.hpp"

#include "tollgate/wire/sse_parser.hpp"

#include <boost/json.hpp>
#include <gtest/gtest.h>

#include <optional>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

namespace tollgate::wire::responses {
namespace {

namespace json = boost::json;

json::value J(std::string_view text) { return json::parse(text); }

json::object Encode(const ChatRequest& r, RequestOptions o = {"gpt-5-mini", true}) {
  return json::parse(EncodeRequest(r, o)).as_object();
}

Message Text(Role role, std::string text) { return Message{role, {TextPart{std::move(text), {}}}, {}}; }

ReasoningPart Reasoning(ReasoningPart::Kind kind, std::string text, std::string data, std::string format,
                        std::string id, std::string signature = {}) {
  ReasoningPart p;
  p.kind = kind;
  p.text = std::move(text);
  p.data = std::move(data);
  p.format = std::move(format);
  p.id = std::move(id);
  p.signature = std::move(signature);
  return p;
}

// ---------------------------------------------------------------- EncodeRequest

TEST(ResponsesUpstreamEncode, EveryMessageAndPartKind) {
  ChatRequest r;
  r.model = "openai/gpt-5-mini";
  r.messages.push_back(Text(Role::kSystem, "Be brief."));
  r.messages.push_back(Text(Role::kDeveloper, "Answer in French."));
  Message user{Role::kUser, {}, {}};
  user.parts.emplace_back(TextPart{"What is in this image?", {}});
  user.parts.emplace_back(ImagePart{"https://example.com/cat.png", "", {}});
  user.parts.emplace_back(ImagePart{"data:image/png;base64,iVBORw0KGgo=", "high", {}});
  r.messages.push_back(user);
  Message assistant{Role::kAssistant, {}, {}};
  assistant.parts.emplace_back(TextPart{"Let me look that up.", {}});
  assistant.parts.emplace_back(ToolCallPart{"call_a1", "lookup", R"({"q":"cat"})", {}, {}});
  assistant.parts.emplace_back(ToolCallPart{"call_b2", "noargs", "", {}, {}});
  r.messages.push_back(assistant);
  ToolResultPart result;
  result.tool_call_id = "call_a1";
  result.content.emplace_back(TextPart{"a cat", {}});
  result.content.emplace_back(TextPart{" on a mat", {}});
  r.messages.push_back(Message{Role::kTool, {result}, {}});
  ToolResultPart image_result;
  image_result.tool_call_id = "call_b2";
  image_result.content.emplace_back(TextPart{"see:", {}});
  image_result.content.emplace_back(ImagePart{"https://example.com/out.png", "low", {}});
  r.messages.push_back(Message{Role::kTool, {image_result}, {}});
  r.messages.push_back(Text(Role::kUser, "Thanks"));

  const json::object body = Encode(r);
  EXPECT_EQ(body.at("model"), J(R"("gpt-5-mini")"));
  EXPECT_EQ(body.at("input"), J(R"([
    {"type":"message","role":"system","content":[{"type":"input_text","text":"Be brief."}]},
    {"type":"message","role":"developer","content":[{"type":"input_text","text":"Answer in French."}]},
    {"type":"message","role":"user","content":[
      {"type":"input_text","text":"What is in this image?"},
      {"type":"input_image","image_url":"https://example.com/cat.png","detail":"auto"},
      {"type":"input_image","image_url":"data:image/png;base64,iVBORw0KGgo=","detail":"high"}]},
    {"type":"message","role":"assistant","content":[{"type":"output_text","text":"Let me look that up."}]},
    {"type":"function_call","call_id":"call_a1","name":"lookup","arguments":"{\"q\":\"cat\"}"},
    {"type":"function_call","call_id":"call_b2","name":"noargs","arguments":"{}"},
    {"type":"function_call_output","call_id":"call_a1","output":"a cat on a mat"},
    {"type":"function_call_output","call_id":"call_b2","output":[
      {"type":"input_text","text":"see:"},
      {"type":"input_image","image_url":"https://example.com/out.png","detail":"low"}]},
    {"type":"message","role":"user","content":[{"type":"input_text","text":"Thanks"}]}
  ])"));
  // Stateless, always: the gateway keeps the state [STATE].
  EXPECT_EQ(body.at("store"), J("false"));
  EXPECT_EQ(body.at("include"), J(R"(["reasoning.encrypted_content"])"));
  EXPECT_EQ(body.at("stream"), J("true"));
  for (const char* absent : {"tools", "tool_choice", "parallel_tool_calls", "text", "reasoning", "max_output_tokens",
                             "temperature", "top_p", "top_logprobs", "user", "instructions", "previous_response_id",
                             "messages", "metadata"}) {
    EXPECT_FALSE(body.contains(absent)) << absent;
  }
}

TEST(ResponsesUpstreamEncode, ModelFallsBackToTheRequestsAndStreamFollowsTheOption) {
  ChatRequest r;
  r.model = "gpt-4.1";
  r.messages.push_back(Text(Role::kUser, "Hi"));
  const json::object body = Encode(r, {"", false});
  EXPECT_EQ(body.at("model"), J(R"("gpt-4.1")"));
  EXPECT_EQ(body.at("stream"), J("false"));
}

TEST(ResponsesUpstreamEncode, LegacyCompletionPromptIsOneUserMessage) {
  ChatRequest r;
  r.kind = RequestKind::kCompletion;
  r.prompt = "Once upon a time";
  EXPECT_EQ(Encode(r).at("input"),
            J(R"([{"type":"message","role":"user","content":[{"type":"input_text","text":"Once upon a time"}]}])"));
}

TEST(ResponsesUpstreamEncode, ReplaysOnlyOpenAiReasoningWithItsIdAndEncryptedContent) {
  ChatRequest r;
  r.messages.push_back(Text(Role::kUser, "Plan the trip."));
  Message a{Role::kAssistant, {}, {}};
  using K = ReasoningPart::Kind;
  // Item rs_1: two summaries and the encrypted content, as the decoder gives them.
  a.parts.emplace_back(Reasoning(K::kSummary, "**Planning**\n\nFirst Paris.", "", "openai-responses-v1", "rs_1"));
  a.parts.emplace_back(Reasoning(K::kSummary, "Then Tokyo.", "", "openai-responses-v1", "rs_1"));
  a.parts.emplace_back(Reasoning(K::kEncrypted, "", "gAAAAABoENC1==", "openai-responses-v1", "rs_1"));
  a.parts.emplace_back(ToolCallPart{"call_p", "get_weather", R"({"location":"Paris"})", {}, {}});
  // Another provider's reasoning (Anthropic thinking + signature): left out.
  a.parts.emplace_back(Reasoning(K::kText, "hmm", "", "anthropic-claude-v1", "", "EqQBCgIYAhIM"));
  // OpenAI reasoning without encrypted content cannot be replayed statelessly: left out.
  a.parts.emplace_back(Reasoning(K::kSummary, "Only a summary.", "", "openai-responses-v1", "rs_2"));
  // Reasoning text (open-weight models) goes in `content`.
  a.parts.emplace_back(Reasoning(K::kText, "raw thought", "", "openai-responses-v1", "rs_3"));
  a.parts.emplace_back(Reasoning(K::kEncrypted, "", "gAAAAABoENC3==", "openai-responses-v1", "rs_3"));
  // Unknown format, and an encrypted part without an id: left out.
  a.parts.emplace_back(Reasoning(K::kEncrypted, "", "opaque", "", ""));
  a.parts.emplace_back(Reasoning(K::kEncrypted, "", "gAAAAABoNOID==", "openai-responses-v1", ""));
  a.parts.emplace_back(TextPart{"Paris first.", {}});
  r.messages.push_back(a);
  EXPECT_EQ(Encode(r).at("input"), J(R"([
    {"type":"message","role":"user","content":[{"type":"input_text","text":"Plan the trip."}]},
    {"type":"reasoning","id":"rs_1","summary":[
      {"type":"summary_text","text":"**Planning**\n\nFirst Paris."},
      {"type":"summary_text","text":"Then Tokyo."}],"encrypted_content":"gAAAAABoENC1=="},
    {"type":"function_call","call_id":"call_p","name":"get_weather","arguments":"{\"location\":\"Paris\"}"},
    {"type":"reasoning","id":"rs_3","summary":[],"content":[{"type":"reasoning_text","text":"raw thought"}],
     "encrypted_content":"gAAAAABoENC3=="},
    {"type":"message","role":"assistant","content":[{"type":"output_text","text":"Paris first."}]}
  ])"));
}

TEST(ResponsesUpstreamEncode, ToolsToolChoiceFormatReasoningAndSampling) {
  ChatRequest r;
  r.messages.push_back(Text(Role::kUser, "Go"));
  ToolDefinition weather;
  weather.name = "get_weather";
  weather.description = "Weather for a city";
  weather.parameters = J(R"({"type":"object","properties":{"city":{"type":"string"}},"required":["city"]})");
  weather.strict = true;
  ToolDefinition time;
  time.name = "get_time";
  r.tools = {weather, time};
  r.tool_choice = ToolChoice{ToolChoice::Mode::kFunction, "get_weather"};
  r.parallel_tool_calls = false;
  ResponseFormat f;
  f.type = ResponseFormat::Type::kJsonSchema;
  f.name = "answer";
  f.description = "The answer";
  f.schema = J(R"({"type":"object","properties":{"a":{"type":"integer"}},"required":["a"],"additionalProperties":false})");
  f.strict = true;
  r.response_format = f;
  r.reasoning = ReasoningSettings{"high", std::nullopt, false, std::nullopt};
  r.max_tokens = 512;
  r.temperature = 0.5;
  r.top_p = 0.9;
  r.top_logprobs = 3;
  r.user = "user-42";
  const json::object body = Encode(r);
  EXPECT_EQ(body.at("tools"), J(R"([
    {"type":"function","name":"get_weather","description":"Weather for a city",
     "parameters":{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]},"strict":true},
    {"type":"function","name":"get_time","parameters":{"type":"object","properties":{}},"strict":false}])"));
  EXPECT_EQ(body.at("tool_choice"), J(R"({"type":"function","name":"get_weather"})"));
  EXPECT_EQ(body.at("parallel_tool_calls"), J("false"));
  EXPECT_EQ(body.at("text"), J(R"({"format":{"type":"json_schema","name":"answer","description":"The answer",
    "schema":{"type":"object","properties":{"a":{"type":"integer"}},"required":["a"],"additionalProperties":false},
    "strict":true}})"));
  EXPECT_EQ(body.at("reasoning"), J(R"({"effort":"high","summary":"auto"})"));
  EXPECT_EQ(body.at("max_output_tokens"), J("512"));
  EXPECT_EQ(body.at("temperature"), J("0.5"));
  EXPECT_EQ(body.at("top_p"), J("0.9"));
  EXPECT_EQ(body.at("top_logprobs"), J("3"));
  EXPECT_EQ(body.at("user"), J(R"("user-42")"));
  EXPECT_FALSE(body.contains("prompt_cache_key"));

  // The caller's summary choice goes as it is, also without an effort (what
  // Codex sends); the session becomes OpenAI's prompt_cache_key.
  ChatRequest summary_only = r;
  summary_only.reasoning.reset();
  summary_only.reasoning_summary = "detailed";
  summary_only.session_id = "conv-7";
  const json::object b2 = Encode(summary_only);
  EXPECT_EQ(b2.at("reasoning"), J(R"({"summary":"detailed"})"));
  EXPECT_EQ(b2.at("prompt_cache_key"), J(R"("conv-7")"));
  summary_only.reasoning_summary.clear();
  EXPECT_FALSE(Encode(summary_only).contains("reasoning"));

  for (auto [mode, want] : std::vector<std::pair<ToolChoice::Mode, const char*>>{
           {ToolChoice::Mode::kAuto, R"("auto")"},
           {ToolChoice::Mode::kNone, R"("none")"},
           {ToolChoice::Mode::kRequired, R"("required")"}}) {
    r.tool_choice = ToolChoice{mode, {}};
    EXPECT_EQ(Encode(r).at("tool_choice"), J(want));
  }
  r.response_format = ResponseFormat{};
  EXPECT_EQ(Encode(r).at("text"), J(R"({"format":{"type":"text"}})"));
  r.response_format->type = ResponseFormat::Type::kJsonObject;
  EXPECT_EQ(Encode(r).at("text"), J(R"({"format":{"type":"json_object"}})"));

  // A strict function without parameters gets a schema strict mode accepts.
  time.strict = true;
  r.tools = {time};
  EXPECT_EQ(Encode(r).at("tools"), J(R"([{"type":"function","name":"get_time",
    "parameters":{"type":"object","properties":{},"required":[],"additionalProperties":false},"strict":true}])"));

  // Reasoning: enabled without effort -> summary only; exclude -> no
  // summary; effort "none" -> effort only; disabled -> nothing.
  r.reasoning = ReasoningSettings{"", std::nullopt, false, true};
  EXPECT_EQ(Encode(r).at("reasoning"), J(R"({"summary":"auto"})"));
  r.reasoning = ReasoningSettings{"low", std::nullopt, true, std::nullopt};
  EXPECT_EQ(Encode(r).at("reasoning"), J(R"({"effort":"low"})"));
  r.reasoning = ReasoningSettings{"none", std::nullopt, false, std::nullopt};
  EXPECT_EQ(Encode(r).at("reasoning"), J(R"({"effort":"none"})"));
  r.reasoning = ReasoningSettings{"", std::nullopt, false, false};
  EXPECT_FALSE(Encode(r).contains("reasoning"));
}

// ---------------------------------------------------------------- streams

// One line per event, for comparisons and readable failures.
std::string Describe(const StreamEvent& event) {
  struct V {
    std::string operator()(const TextDelta& e) const { return "text " + e.text; }
    std::string operator()(const ReasoningDelta& e) const {
      return "reasoning #" + std::to_string(e.index) + " kind=" + std::to_string(static_cast<int>(e.kind)) +
             " text=" + e.text + " data=" + e.data + " format=" + e.format + " id=" + e.id;
    }
    std::string operator()(const ToolCallDelta& e) const {
      return "tool #" + std::to_string(e.index) + " id=" + e.id + " name=" + e.name + " args=" + e.arguments;
    }
    std::string operator()(const FinishDelta& e) const {
      return "finish " + std::string(FinishReasonName(e.reason)) + " (" + e.native_reason + ")";
    }
    std::string operator()(const UsageDelta& e) const {
      const Usage& u = e.usage;
      return "usage prompt=" + std::to_string(u.prompt_tokens) + " completion=" + std::to_string(u.completion_tokens) +
             " cached=" + std::to_string(u.cached_tokens) + " reasoning=" + std::to_string(u.reasoning_tokens) +
             " write=" + std::to_string(u.cache_write_tokens);
    }
  };
  return std::visit(V{}, event);
}

std::vector<std::string> Describe(const std::vector<StreamEvent>& events) {
  std::vector<std::string> out;
  for (const auto& e : events) out.push_back(Describe(e));
  return out;
}

// Builds a stream: each Event() call is one SSE event with the next sequence number.
class Stream {
 public:
  Stream& Event(std::string_view type, std::string_view fields) {
    body_ += "event: " + std::string(type) + "\ndata: {\"type\":\"" + std::string(type) +
             "\",\"sequence_number\":" + std::to_string(seq_++) + (fields.empty() ? "" : ",") + std::string(fields) +
             "}\n\n";
    return *this;
  }
  // response.created and response.in_progress.
  Stream& Open() {
    Event("response.created", R"("response":)" + Response("in_progress", "[]", "null"));
    return Event("response.in_progress", R"("response":)" + Response("in_progress", "[]", "null"));
  }
  const std::string& body() const { return body_; }

  // A Response object (Response in responses.d.ts).
  static std::string Response(std::string_view status, std::string_view output, std::string_view usage,
                              std::string_view incomplete = "null", std::string_view error = "null") {
    return std::string(R"({"id":"resp_68af4030592c81938ec0a5fbab4a3e9f05438e46b5f69a3b","object":"response",)") +
           R"("created_at":1756315696,"status":")" + std::string(status) + R"(","background":false,"error":)" +
           std::string(error) + R"(,"incomplete_details":)" + std::string(incomplete) +
           R"(,"instructions":null,"max_output_tokens":null,"max_tool_calls":null,"model":"gpt-5-mini-2025-08-07",)"
           R"("output":)" +
           std::string(output) +
           R"(,"parallel_tool_calls":true,"previous_response_id":null,"prompt_cache_key":null,)"
           R"("reasoning":{"effort":"medium","summary":"auto"},"safety_identifier":null,"service_tier":"auto",)"
           R"("store":false,"temperature":1.0,"text":{"format":{"type":"text"},"verbosity":"medium"},)"
           R"("tool_choice":"auto","tools":[],"top_logprobs":0,"top_p":1.0,"truncation":"disabled","usage":)" +
           std::string(usage) + R"(,"user":null,"metadata":{}})";
  }
  static std::string Usage(int input, int output, int cached = 0, int reasoning = 0) {
    return R"({"input_tokens":)" + std::to_string(input) + R"(,"input_tokens_details":{"cached_tokens":)" +
           std::to_string(cached) + R"(},"output_tokens":)" + std::to_string(output) +
           R"(,"output_tokens_details":{"reasoning_tokens":)" + std::to_string(reasoning) +
           R"(},"total_tokens":)" + std::to_string(input + output) + "}";
  }

 private:
  std::string body_;
  int seq_ = 0;
};

struct Decoded {
  std::vector<StreamEvent> events;
  std::optional<Error> error;
  bool done = false;
};

// Feeds `body` to an SseParser in the given slices and every parsed event,
// with its SSE type, to a ResponseDecoder; stops at the first error.
Decoded DecodeSlices(const std::vector<std::string_view>& slices) {
  Decoded result;
  ResponseDecoder decoder;
  SseParser parser;
  for (auto slice : slices) {
    auto fed = parser.Feed(slice, [&](const auto& e) {
      auto r = decoder.OnEvent(e.type, e.data, result.events);
      if (!r) {
        result.error = r.error();
        return false;
      }
      return !decoder.done();
    });
    EXPECT_TRUE(fed.has_value());
    if (result.error || decoder.done()) break;
  }
  if (!result.error) decoder.Finish(result.events);
  result.done = decoder.done();
  return result;
}

std::string Ending(const Decoded& d) {
  if (d.error) return "error " + std::to_string(HttpStatus(d.error->code)) + " " + d.error->message;
  return d.done ? "done" : "open";
}

// Decodes `body` whole, then split in two at every byte boundary, then one
// byte at a time: every reading must give the same events and ending.
Decoded DecodeEverySplit(const std::string& body) {
  const Decoded whole = DecodeSlices({body});
  const auto want = Describe(whole.events);
  const std::string_view all(body);
  for (std::size_t i = 1; i < body.size(); ++i) {
    const Decoded split = DecodeSlices({all.substr(0, i), all.substr(i)});
    if (Describe(split.events) != want || Ending(split) != Ending(whole)) {
      ADD_FAILURE() << "split at byte " << i << " differs";
      break;
    }
  }
  std::vector<std::string_view> bytes;
  for (std::size_t i = 0; i < body.size(); ++i) bytes.push_back(all.substr(i, 1));
  const Decoded one = DecodeSlices(bytes);
  EXPECT_EQ(Describe(one.events), want) << "one byte at a time";
  EXPECT_EQ(Ending(one), Ending(whole));
  return whole;
}

ChatResponse Accumulate(const std::vector<StreamEvent>& events) {
  ResponseAccumulator acc;
  for (const auto& e : events) acc.Add(e);
  return acc.Take();
}

const char* kMsg = "msg_68af403c4ff48193a6c1f5a3c4b9f7e105438e46b5f69a3b";

std::string TextStream(std::string_view final_type, std::string_view status, std::string_view incomplete) {
  const std::string done_item = std::string(R"({"id":")") + kMsg +
                                R"(","type":"message","status":"completed","content":[{"type":"output_text",)"
                                R"("annotations":[],"logprobs":[],"text":"Hello there!"}],"role":"assistant"})";
  Stream s;
  s.Open()
      .Event("response.output_item.added", std::string(R"("output_index":0,"item":{"id":")") + kMsg +
                                               R"(","type":"message","status":"in_progress","content":[],)"
                                               R"("role":"assistant"})")
      .Event("response.content_part.added",
             std::string(R"("item_id":")") + kMsg +
                 R"(","output_index":0,"content_index":0,"part":{"type":"output_text","annotations":[],"logprobs":[],"text":""})")
      .Event("response.output_text.delta",
             std::string(R"("item_id":")") + kMsg + R"(","output_index":0,"content_index":0,"delta":"Hello","logprobs":[])")
      .Event("response.output_text.delta", std::string(R"("item_id":")") + kMsg +
                                               R"(","output_index":0,"content_index":0,"delta":" there!","logprobs":[])")
      .Event("response.output_text.done", std::string(R"("item_id":")") + kMsg +
                                              R"(","output_index":0,"content_index":0,"text":"Hello there!","logprobs":[])")
      .Event("response.content_part.done",
             std::string(R"("item_id":")") + kMsg +
                 R"(","output_index":0,"content_index":0,"part":{"type":"output_text","annotations":[],"logprobs":[],"text":"Hello there!"})")
      .Event("response.output_item.done", R"("output_index":0,"item":)" + done_item)
      .Event(final_type, R"("response":)" + Stream::Response(status, "[" + done_item + "]", Stream::Usage(18, 12, 0, 0),
                                                             incomplete));
  return s.body();
}

TEST(ResponsesUpstreamDecode, TextStream) {
  const Decoded d = DecodeEverySplit(TextStream("response.completed", "completed", "null"));
  ASSERT_FALSE(d.error) << d.error->message;
  EXPECT_TRUE(d.done);
  EXPECT_EQ(Describe(d.events), (std::vector<std::string>{
                                    "text Hello",
                                    "text  there!",
                                    "finish stop (completed)",
                                    "usage prompt=18 completion=12 cached=0 reasoning=0 write=0",
                                }));
}

TEST(ResponsesUpstreamDecode, IncompleteAtMaxOutputTokens) {
  const Decoded d = DecodeEverySplit(
      TextStream("response.incomplete", "incomplete", R"({"reason":"max_output_tokens"})"));
  ASSERT_FALSE(d.error) << d.error->message;
  EXPECT_TRUE(d.done);
  ASSERT_GE(d.events.size(), 2u);
  EXPECT_EQ(Describe(d.events[d.events.size() - 2]), "finish length (max_output_tokens)");
  const Decoded filtered =
      DecodeSlices({TextStream("response.incomplete", "incomplete", R"({"reason":"content_filter"})")});
  EXPECT_EQ(Describe(filtered.events[filtered.events.size() - 2]), "finish content_filter (content_filter)");
}

// A reasoning model with summaries: the reasoning item (two summary parts,
// then its encrypted content on output_item.done), then the message.
std::string ReasoningStream() {
  const std::string rs = "rs_68af4030baa48193b0b43b4c2a176a1a05438e46b5f69a3b";
  const std::string enc = "gAAAAABor0A4x1Yq3Zr0_ENCRYPTED_PAYLOAD_1b2c3d==";
  const std::string item_fields = R"("item_id":")" + rs + R"(","output_index":0,)";
  const std::string msg_fields = std::string(R"("item_id":")") + kMsg + R"(","output_index":1,"content_index":0,)";
  const std::string reasoning_done =
      R"({"id":")" + rs + R"(","type":"reasoning","encrypted_content":")" + enc +
      R"(","summary":[{"type":"summary_text","text":"**Counting letters**\n\nThree r's."},)"
      R"({"type":"summary_text","text":"**Answer**\n\nSay 3."}]})";
  const std::string message_done = std::string(R"({"id":")") + kMsg +
                                   R"(","type":"message","status":"completed","content":[{"type":"output_text",)"
                                   R"("annotations":[],"logprobs":[],"text":"There are 3."}],"role":"assistant"})";
  Stream s;
  s.Open()
      .Event("response.output_item.added",
             R"("output_index":0,"item":{"id":")" + rs + R"(","type":"reasoning","encrypted_content":")" + enc +
                 R"(","summary":[]})")
      .Event("response.reasoning_summary_part.added",
             item_fields + R"("summary_index":0,"part":{"type":"summary_text","text":""})")
      .Event("response.reasoning_summary_text.delta",
             item_fields + R"("summary_index":0,"delta":"**Counting letters**\n\n","obfuscation":"x1")")
      .Event("response.reasoning_summary_text.delta", item_fields + R"("summary_index":0,"delta":"Three r's.")")
      .Event("response.reasoning_summary_text.done",
             item_fields + R"("summary_index":0,"text":"**Counting letters**\n\nThree r's.")")
      .Event("response.reasoning_summary_part.done",
             item_fields + R"("summary_index":0,"part":{"type":"summary_text","text":"**Counting letters**\n\nThree r's."})")
      .Event("response.reasoning_summary_part.added",
             item_fields + R"("summary_index":1,"part":{"type":"summary_text","text":""})")
      .Event("response.reasoning_summary_text.delta", item_fields + R"("summary_index":1,"delta":"**Answer**\n\nSay 3.")")
      .Event("response.reasoning_summary_text.done", item_fields + R"("summary_index":1,"text":"**Answer**\n\nSay 3.")")
      .Event("response.reasoning_summary_part.done",
             item_fields + R"("summary_index":1,"part":{"type":"summary_text","text":"**Answer**\n\nSay 3."})")
      .Event("response.output_item.done", R"("output_index":0,"item":)" + reasoning_done)
      .Event("response.output_item.added", std::string(R"("output_index":1,"item":{"id":")") + kMsg +
                                               R"(","type":"message","status":"in_progress","content":[],)"
                                               R"("role":"assistant"})")
      .Event("response.content_part.added",
             msg_fields + R"("part":{"type":"output_text","annotations":[],"logprobs":[],"text":""})")
      .Event("response.output_text.delta", msg_fields + R"("delta":"There are 3.","logprobs":[])")
      .Event("response.output_text.done", msg_fields + R"("text":"There are 3.","logprobs":[])")
      .Event("response.content_part.done",
             msg_fields + R"("part":{"type":"output_text","annotations":[],"logprobs":[],"text":"There are 3."})")
      .Event("response.output_item.done", R"("output_index":1,"item":)" + message_done)
      .Event("response.completed", R"("response":)" +
                                       Stream::Response("completed", "[" + reasoning_done + "," + message_done + "]",
                                                        Stream::Usage(20, 200, 8, 180)));
  return s.body();
}

TEST(ResponsesUpstreamDecode, ReasoningSummariesAndEncryptedContent) {
  const Decoded d = DecodeEverySplit(ReasoningStream());
  ASSERT_FALSE(d.error) << d.error->message;
  const std::string tail = " format=openai-responses-v1 id=rs_68af4030baa48193b0b43b4c2a176a1a05438e46b5f69a3b";
  EXPECT_EQ(Describe(d.events),
            (std::vector<std::string>{
                "reasoning #0 kind=1 text=**Counting letters**\n\n data=" + tail,
                "reasoning #0 kind=1 text=Three r's. data=" + tail,
                "reasoning #1 kind=1 text=**Answer**\n\nSay 3. data=" + tail,
                "reasoning #2 kind=2 text= data=gAAAAABor0A4x1Yq3Zr0_ENCRYPTED_PAYLOAD_1b2c3d==" + tail,
                "text There are 3.",
                "finish stop (completed)",
                "usage prompt=20 completion=200 cached=8 reasoning=180 write=0",
            }));

  // The answer goes back as the next request's assistant turn: the same
  // reasoning item, untouched.
  const ChoiceResult answer = Accumulate(d.events).choices.at(0);
  ChatRequest next;
  next.messages.push_back(Text(Role::kUser, "How many r's in strawberry?"));
  Message turn{Role::kAssistant, {}, {}};
  for (const auto& r : answer.reasoning) turn.parts.emplace_back(r);
  turn.parts.emplace_back(TextPart{answer.text, {}});
  next.messages.push_back(turn);
  next.messages.push_back(Text(Role::kUser, "Sure?"));
  const json::array input = Encode(next).at("input").as_array();
  ASSERT_EQ(input.size(), 4u);
  EXPECT_EQ(input[1], J(R"({"type":"reasoning","id":"rs_68af4030baa48193b0b43b4c2a176a1a05438e46b5f69a3b",
    "summary":[{"type":"summary_text","text":"**Counting letters**\n\nThree r's."},
               {"type":"summary_text","text":"**Answer**\n\nSay 3."}],
    "encrypted_content":"gAAAAABor0A4x1Yq3Zr0_ENCRYPTED_PAYLOAD_1b2c3d=="})"));
  EXPECT_EQ(input[2], J(R"({"type":"message","role":"assistant","content":[{"type":"output_text","text":"There are 3."}]})"));
}

// Text, then two function calls whose arguments stream in deltas.
std::string ParallelCallsStream() {
  const std::string fc1 = "fc_68af40a1b2c3d4e5f60718293a4b5c6d05438e46b5f69a3b";
  const std::string fc2 = "fc_68af40a1f6e5d4c3b2a10f1e2d3c4b5a05438e46b5f69a3b";
  auto call = [](const std::string& id, const std::string& call_id, const std::string& status,
                 const std::string& args) {
    return R"({"id":")" + id + R"(","type":"function_call","status":")" + status + R"(","arguments":")" + args +
           R"(","call_id":")" + call_id + R"(","name":"get_weather"})";
  };
  const std::string msg_done = std::string(R"({"id":")") + kMsg +
                               R"(","type":"message","status":"completed","content":[{"type":"output_text",)"
                               R"("annotations":[],"logprobs":[],"text":"Checking both."}],"role":"assistant"})";
  const std::string paris = R"({\"location\":\"Paris\"})";
  const std::string tokyo = R"({\"location\":\"Tokyo\"})";
  Stream s;
  s.Open()
      .Event("response.output_item.added", std::string(R"("output_index":0,"item":{"id":")") + kMsg +
                                               R"(","type":"message","status":"in_progress","content":[],)"
                                               R"("role":"assistant"})")
      .Event("response.output_text.delta", std::string(R"("item_id":")") + kMsg +
                                               R"(","output_index":0,"content_index":0,"delta":"Checking both.","logprobs":[])")
      .Event("response.output_item.done", R"("output_index":0,"item":)" + msg_done)
      .Event("response.output_item.added", R"("output_index":1,"item":)" + call(fc1, "call_P4r1s", "in_progress", ""))
      .Event("response.function_call_arguments.delta", R"("item_id":")" + fc1 + R"(","output_index":1,"delta":"{\"loc")")
      .Event("response.function_call_arguments.delta",
             R"("item_id":")" + fc1 + R"(","output_index":1,"delta":"ation\":\"Paris\"}")")
      .Event("response.function_call_arguments.done",
             R"("item_id":")" + fc1 + R"(","output_index":1,"arguments":")" + paris + R"(")")
      .Event("response.output_item.done", R"("output_index":1,"item":)" + call(fc1, "call_P4r1s", "completed", paris))
      .Event("response.output_item.added", R"("output_index":2,"item":)" + call(fc2, "call_T0ky0", "in_progress", ""))
      .Event("response.function_call_arguments.delta",
             R"("item_id":")" + fc2 + R"(","output_index":2,"delta":")" + tokyo + R"(")")
      .Event("response.function_call_arguments.done",
             R"("item_id":")" + fc2 + R"(","output_index":2,"arguments":")" + tokyo + R"(")")
      .Event("response.output_item.done", R"("output_index":2,"item":)" + call(fc2, "call_T0ky0", "completed", tokyo))
      .Event("response.completed",
             R"("response":)" + Stream::Response("completed",
                                                 "[" + msg_done + "," + call(fc1, "call_P4r1s", "completed", paris) +
                                                     "," + call(fc2, "call_T0ky0", "completed", tokyo) + "]",
                                                 Stream::Usage(70, 46)));
  return s.body();
}

TEST(ResponsesUpstreamDecode, ParallelFunctionCallsWithArgumentDeltas) {
  const Decoded d = DecodeEverySplit(ParallelCallsStream());
  ASSERT_FALSE(d.error) << d.error->message;
  EXPECT_EQ(Describe(d.events), (std::vector<std::string>{
                                    "text Checking both.",
                                    "tool #0 id=call_P4r1s name=get_weather args=",
                                    R"(tool #0 id= name= args={"loc)",
                                    R"(tool #0 id= name= args=ation":"Paris"})",
                                    "tool #1 id=call_T0ky0 name=get_weather args=",
                                    R"(tool #1 id= name= args={"location":"Tokyo"})",
                                    "finish tool_calls (completed)",
                                    "usage prompt=70 completion=46 cached=0 reasoning=0 write=0",
                                }));
  const ChoiceResult c = Accumulate(d.events).choices.at(0);
  ASSERT_EQ(c.tool_calls.size(), 2u);
  EXPECT_EQ(c.tool_calls[0].arguments, R"({"location":"Paris"})");
  EXPECT_EQ(c.tool_calls[1].arguments, R"({"location":"Tokyo"})");
}

TEST(ResponsesUpstreamDecode, FunctionCallWithoutDeltas) {
  const std::string fc = "fc_68af40c0ffee00000000000000000000005438e46b5f69a3b";
  const std::string added =
      R"({"id":")" + fc + R"(","type":"function_call","status":"in_progress","arguments":"","call_id":"call_t1me","name":"get_time"})";
  const std::string done =
      R"({"id":")" + fc + R"(","type":"function_call","status":"completed","arguments":"","call_id":"call_t1me","name":"get_time"})";
  const std::string with_args =
      R"({"id":")" + fc + R"(","type":"function_call","status":"completed","arguments":"{\"tz\":\"UTC\"}","call_id":"call_t1me","name":"get_time"})";
  for (const auto& [final_item, want] : std::vector<std::pair<std::string, std::string>>{
           {done, "{}"}, {with_args, R"({"tz":"UTC"})"}}) {
    Stream s;
    s.Open()
        .Event("response.output_item.added", R"("output_index":0,"item":)" + added)
        .Event("response.output_item.done", R"("output_index":0,"item":)" + final_item)
        .Event("response.completed",
               R"("response":)" + Stream::Response("completed", "[" + final_item + "]", Stream::Usage(45, 11)));
    const Decoded d = DecodeEverySplit(s.body());
    ASSERT_FALSE(d.error) << d.error->message;
    EXPECT_EQ(Describe(d.events), (std::vector<std::string>{
                                      "tool #0 id=call_t1me name=get_time args=",
                                      "tool #0 id= name= args=" + want,
                                      "finish tool_calls (completed)",
                                      "usage prompt=45 completion=11 cached=0 reasoning=0 write=0",
                                  }));
  }
}

TEST(ResponsesUpstreamDecode, CharactersSplitAcrossDeltasAreJoined) {
  // "é" (C3 A9) split between two deltas, as raw invalid halves.
  Stream s;
  s.Open()
      .Event("response.output_item.added", std::string(R"("output_index":0,"item":{"id":")") + kMsg +
                                               R"(","type":"message","status":"in_progress","content":[],"role":"assistant"})")
      .Event("response.output_text.delta",
             std::string(R"("item_id":")") + kMsg + "\",\"output_index\":0,\"content_index\":0,\"delta\":\"caf\xC3\"")
      .Event("response.output_text.delta",
             std::string(R"("item_id":")") + kMsg + "\",\"output_index\":0,\"content_index\":0,\"delta\":\"\xA9!\"")
      .Event("response.completed", R"("response":)" + Stream::Response("completed", "[]", Stream::Usage(5, 2)));
  const Decoded d = DecodeEverySplit(s.body());
  ASSERT_FALSE(d.error) << d.error->message;
  EXPECT_EQ(Accumulate(d.events).choices.at(0).text, "caf\xC3\xA9!");
}

TEST(ResponsesUpstreamDecode, FailedResponseIsAnError) {
  Stream s;
  s.Open().Event("response.failed",
                 R"("response":)" + Stream::Response("failed", "[]", "null", "null",
                                                    R"({"code":"server_error","message":"The model had an error."})"));
  const Decoded d = DecodeEverySplit(s.body());
  ASSERT_TRUE(d.error);
  EXPECT_EQ(d.error->code, ErrorCode::kUnavailable);
  EXPECT_EQ(d.error->message, "server_error: The model had an error.");
  EXPECT_FALSE(d.done);
}

TEST(ResponsesUpstreamDecode, ErrorEventsMapTheirCodes) {
  struct Want {
    const char* code;
    ErrorCode mapped;
  };
  for (const Want& w : {Want{"rate_limit_exceeded", ErrorCode::kResourceExhausted},
                        Want{"server_error", ErrorCode::kUnavailable}, Want{"invalid_prompt", ErrorCode::kBadGateway}}) {
    Stream s;
    s.Open().Event("error", std::string(R"("code":")") + w.code + R"(","message":"Something happened.","param":null)");
    // Nothing after an error is read.
    s.Event("response.completed", R"("response":)" + Stream::Response("completed", "[]", Stream::Usage(1, 1)));
    const Decoded d = DecodeEverySplit(s.body());
    ASSERT_TRUE(d.error) << w.code;
    EXPECT_EQ(d.error->code, w.mapped) << w.code;
    EXPECT_EQ(d.error->message, std::string(w.code) + ": Something happened.");
    EXPECT_EQ(d.error->code_string, w.mapped == ErrorCode::kResourceExhausted ? w.code : "");
    EXPECT_TRUE(d.events.empty());
  }
}

TEST(ResponsesUpstreamDecode, EndWithoutFinalEventIsNotDone) {
  const std::string body = TextStream("response.completed", "completed", "null");
  const std::string cut = body.substr(0, body.find("event: response.completed"));
  const Decoded d = DecodeSlices({cut});
  EXPECT_FALSE(d.error);
  EXPECT_FALSE(d.done);
  EXPECT_EQ(Accumulate(d.events).choices.at(0).text, "Hello there!");
}

TEST(ResponsesUpstreamDecode, EventTypeFromTheSseLineWhenDataHasNone) {
  ResponseDecoder decoder;
  std::vector<StreamEvent> out;
  ASSERT_TRUE(decoder.OnEvent("response.completed",
                              R"({"sequence_number":3,"response":)" +
                                  Stream::Response("completed", "[]", Stream::Usage(3, 4)) + "}",
                              out));
  EXPECT_TRUE(decoder.done());
  EXPECT_EQ(Describe(out), (std::vector<std::string>{"finish stop (completed)",
                                                     "usage prompt=3 completion=4 cached=0 reasoning=0 write=0"}));
  ResponseDecoder bad;
  EXPECT_FALSE(bad.OnEvent("response.output_text.delta", "not json", out));
}

// One stream's state: moved with the decoder, never shared by a copy.
static_assert(!std::is_copy_constructible_v<ResponseDecoder> && !std::is_copy_assignable_v<ResponseDecoder>);
static_assert(std::is_nothrow_move_constructible_v<ResponseDecoder> &&
              std::is_nothrow_move_assignable_v<ResponseDecoder>);

TEST(ResponsesUpstreamDecode, AMovedDecoderKeepsItsStream) {
  ResponseDecoder first;
  std::vector<StreamEvent> out;
  ASSERT_TRUE(first.OnEvent("", R"({"type":"response.output_item.added","output_index":0,)"
                                R"("item":{"id":"msg_1","type":"message","role":"assistant","content":[]}})",
                            out));
  ResponseDecoder moved(std::move(first));
  ASSERT_TRUE(moved.OnEvent("", R"({"type":"response.output_text.delta","item_id":"msg_1","output_index":0,)"
                                R"("content_index":0,"delta":"Hi"})",
                            out));
  ResponseDecoder assigned;
  assigned = std::move(moved);
  ASSERT_TRUE(assigned.OnEvent("", R"({"type":"response.output_text.delta","item_id":"msg_1","output_index":0,)"
                                   R"("content_index":0,"delta":" there"})",
                               out));
  EXPECT_EQ(Describe(out), (std::vector<std::string>{"text Hi", "text  there"}));
}

TEST(ResponsesUpstreamDecode, WholeResponseObject) {
  const std::string body = Stream::Response(
      "completed",
      R"([{"id":"rs_1","type":"reasoning","encrypted_content":"gAAAAABwhole==","summary":[{"type":"summary_text","text":"Thinking."}]},
          {"id":"msg_1","type":"message","status":"completed","role":"assistant","content":[{"type":"output_text","annotations":[],"text":"Hi "},{"type":"output_text","annotations":[],"text":"you."}]},
          {"id":"fc_1","type":"function_call","status":"completed","call_id":"call_w1","name":"get_weather","arguments":"{\"location\":\"Oslo\"}"},
          {"id":"ws_1","type":"web_search_call","status":"completed"}])",
      R"({"input_tokens":100,"input_tokens_details":{"cached_tokens":64,"cache_write_tokens":10},"output_tokens":50,"output_tokens_details":{"reasoning_tokens":20},"total_tokens":150})");
  ResponseDecoder decoder;
  std::vector<StreamEvent> out;
  ASSERT_TRUE(decoder.OnWholeResponse(body, out));
  EXPECT_TRUE(decoder.done());
  EXPECT_EQ(Describe(out), (std::vector<std::string>{
                               "reasoning #0 kind=1 text=Thinking. data= format=openai-responses-v1 id=rs_1",
                               "reasoning #1 kind=2 text= data=gAAAAABwhole== format=openai-responses-v1 id=rs_1",
                               "text Hi ",
                               "text you.",
                               "tool #0 id=call_w1 name=get_weather args=",
                               R"(tool #0 id= name= args={"location":"Oslo"})",
                               "finish tool_calls (completed)",
                               "usage prompt=100 completion=50 cached=64 reasoning=20 write=10",
                           }));

  ResponseDecoder incomplete;
  out.clear();
  ASSERT_TRUE(incomplete.OnWholeResponse(
      Stream::Response("incomplete", "[]", Stream::Usage(1, 16), R"({"reason":"max_output_tokens"})"), out));
  EXPECT_EQ(Describe(out.at(0)), "finish length (max_output_tokens)");

  ResponseDecoder failed;
  auto r = failed.OnWholeResponse(
      Stream::Response("failed", "[]", "null", "null", R"({"code":"rate_limit_exceeded","message":"Slow down."})"), out);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, ErrorCode::kResourceExhausted);

  ResponseDecoder not_json;
  EXPECT_FALSE(not_json.OnWholeResponse("<html>", out));
}

}  // namespace
}  // namespace tollgate::wire::responses
