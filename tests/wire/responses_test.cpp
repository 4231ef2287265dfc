// Inbound Responses codec tests (wire/responses.hpp: DecodeRequest,
// DecodeItems, PrependContext, SealReasoning / UnsealReasoning, NewResponseId,
// UsageObject, BuildResponse, StreamEncoder). Shapes are checked against the
// `openai` npm package's types (tests/e2e/node_modules/openai/resources/
// responses/responses.d.ts): every required field of each event, item and the
// response object; streams are parsed with SseParser whole, byte by byte and
// split at every byte boundary, and replayed through a copy of the SDK's
// accumulateResponse (lib/responses/ResponseAccumulator.js) whose snapshot must
// equal the final response's output.
#include "tollgate/wire/responses.hpp"

#include "tollgate/wire/sse_parser.hpp"

#include <boost/json.hpp>
#include <gtest/gtest.h>

#include <algorithm>
#include <set>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

namespace tollgate::wire::responses {
namespace {

namespace json = boost::json;

// ---------------------------------------------------------------- helpers

Request Decode(std::string_view body) {
  Result<Request> r = DecodeRequest(body);
  EXPECT_TRUE(r) << (r ? "" : r.error().message + " [" + r.error().param + "]") << "\n" << body;
  return r ? *r : Request{};
}

void ExpectRejected(std::string_view body, std::string_view param, std::string_view message_has = {}) {
  Result<Request> r = DecodeRequest(body);
  ASSERT_FALSE(r) << body;
  EXPECT_EQ(r.error().code, ErrorCode::kInvalidArgument) << body;
  EXPECT_EQ(r.error().param, param) << r.error().message << "\n" << body;
  EXPECT_FALSE(r.error().message.empty());
  if (!message_has.empty()) {
    EXPECT_NE(r.error().message.find(message_has), std::string::npos) << r.error().message;
  }
}

// A body with model "m", string input "hi" and `extra` fields.
std::string Body(std::string_view extra) {
  std::string body = R"({"model":"m","input":"hi")";
  if (!extra.empty()) {
    body += ',';
    body += extra;
  }
  body += '}';
  return body;
}

// A body whose input is the items array `items`.
std::string WithInput(std::string_view items, std::string_view extra = {}) {
  std::string body = R"({"model":"m","input":)" + std::string(items);
  if (!extra.empty()) {
    body += ',';
    body += extra;
  }
  body += '}';
  return body;
}

std::string S(const json::value& v) { return std::string(v.as_string().data(), v.as_string().size()); }

const TextPart& TextOf(const Message& m, std::size_t i) { return std::get<TextPart>(m.parts.at(i)); }
const ImagePart& ImageOf(const Message& m, std::size_t i) { return std::get<ImagePart>(m.parts.at(i)); }
const ToolCallPart& CallOf(const Message& m, std::size_t i) { return std::get<ToolCallPart>(m.parts.at(i)); }
const ToolResultPart& ResultOf(const Message& m, std::size_t i) { return std::get<ToolResultPart>(m.parts.at(i)); }
const ReasoningPart& ReasoningOf(const Message& m, std::size_t i) { return std::get<ReasoningPart>(m.parts.at(i)); }

ReasoningPart Part(ReasoningPart::Kind kind, std::string text, std::string signature, std::string data,
                   std::string format, std::string id) {
  return ReasoningPart{kind, std::move(text), std::move(signature), std::move(data), std::move(format), std::move(id)};
}

bool IsBase62(std::string_view s) {
  return std::all_of(s.begin(), s.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
  });
}

ResponseMeta Meta() { return ResponseMeta{"resp_test", 1700000000, "openai/gpt-5", "OpenAI"}; }

// ---------------------------------------------------------------- SSE parsing and shape checks

struct Ev {
  std::string name;
  json::object data;
  std::string raw;
  bool operator==(const Ev& o) const { return name == o.name && raw == o.raw; }
};

std::vector<Ev> ParseSlices(const std::vector<std::string_view>& slices) {
  std::vector<Ev> out;
  SseParser parser;
  for (std::string_view slice : slices) {
    auto fed = parser.Feed(slice, [&](const SseEvent& e) {
      json::value v = json::parse(e.data);
      EXPECT_TRUE(v.is_object()) << e.data;
      out.push_back(Ev{e.type, v.is_object() ? v.get_object() : json::object{}, e.data});
      return true;
    });
    EXPECT_TRUE(fed.has_value());
  }
  EXPECT_EQ(parser.buffered_bytes(), 0u) << "a stream must end on an event boundary";
  return out;
}

// Parses `sse` whole, and checks that a byte-by-byte feed and a feed split in
// two at every byte boundary give the same events.
std::vector<Ev> Parse(std::string_view sse) {
  std::vector<Ev> whole = ParseSlices({sse});
  std::vector<std::string_view> bytes;
  for (std::size_t i = 0; i < sse.size(); ++i) bytes.push_back(sse.substr(i, 1));
  EXPECT_TRUE(ParseSlices(bytes) == whole) << "byte-by-byte feed differs";
  for (std::size_t k = 0; k <= sse.size(); ++k) {
    if (!(ParseSlices({sse.substr(0, k), sse.substr(k)}) == whole)) {
      ADD_FAILURE() << "split at byte " << k << " gives other events";
      break;
    }
  }
  return whole;
}

std::vector<std::string> Names(const std::vector<Ev>& events) {
  std::vector<std::string> out;
  for (const Ev& e : events) out.push_back(e.name);
  return out;
}

void ExpectKeys(const json::object& o, std::initializer_list<std::string_view> keys, std::string_view what) {
  for (std::string_view k : keys) EXPECT_TRUE(o.contains(k)) << what << " lacks " << k << ": " << json::serialize(o);
}

// ResponseOutputText: annotations [], text, type, logprobs [].
void CheckOutputText(const json::object& part) {
  ExpectKeys(part, {"type", "text", "annotations", "logprobs"}, "output_text part");
  EXPECT_EQ(S(part.at("type")), "output_text");
  EXPECT_TRUE(part.at("annotations").as_array().empty());
  EXPECT_TRUE(part.at("logprobs").as_array().empty());
}

// ResponseOutputItem: message (ResponseOutputMessage), function_call
// (ResponseFunctionToolCall), reasoning (ResponseReasoningItem).
void CheckItem(const json::object& item) {
  const std::string type = S(item.at("type"));
  const std::set<std::string> statuses{"in_progress", "completed", "incomplete"};
  if (type == "message") {
    ExpectKeys(item, {"id", "content", "role", "status", "type"}, "message item");
    EXPECT_EQ(S(item.at("role")), "assistant");
    EXPECT_TRUE(S(item.at("id")).starts_with("msg_"));
    for (const json::value& part : item.at("content").as_array()) CheckOutputText(part.as_object());
  } else if (type == "function_call") {
    ExpectKeys(item, {"arguments", "call_id", "name", "type", "id", "status"}, "function_call item");
    EXPECT_TRUE(S(item.at("id")).starts_with("fc_"));
    EXPECT_FALSE(S(item.at("call_id")).empty());
  } else if (type == "reasoning") {
    ExpectKeys(item, {"id", "summary", "type", "status"}, "reasoning item");
    for (const json::value& s : item.at("summary").as_array()) {
      ExpectKeys(s.as_object(), {"text", "type"}, "summary entry");
      EXPECT_EQ(S(s.at("type")), "summary_text");
    }
    if (const json::value* c = item.if_contains("content")) {
      for (const json::value& e : c->as_array()) EXPECT_EQ(S(e.at("type")), "reasoning_text");
    }
    if (const json::value* enc = item.if_contains("encrypted_content")) {
      EXPECT_TRUE(enc->is_string());
    }
  } else {
    ADD_FAILURE() << "unexpected item type " << type;
  }
  EXPECT_TRUE(statuses.count(S(item.at("status")))) << json::serialize(item);
}

// Response: the fields the SDK's type requires, plus Tollgate's provider.
void CheckResponse(const json::object& r) {
  ExpectKeys(r,
             {"id", "object", "created_at", "status", "error", "incomplete_details", "instructions", "metadata",
              "model", "output", "output_text", "parallel_tool_calls", "temperature", "tool_choice", "tools",
              "top_p", "usage", "provider", "reasoning", "text", "store", "truncation", "max_output_tokens",
              "previous_response_id", "user"},
             "response");
  EXPECT_EQ(S(r.at("object")), "response");
  EXPECT_EQ(S(r.at("id")), "resp_test");
  EXPECT_EQ(r.at("created_at").as_int64(), 1700000000);
  EXPECT_EQ(S(r.at("model")), "openai/gpt-5");
  EXPECT_EQ(S(r.at("provider")), "OpenAI");
  EXPECT_TRUE(r.at("metadata").is_object());
  EXPECT_TRUE(r.at("tools").is_array());
  EXPECT_TRUE(r.at("parallel_tool_calls").is_bool());
  for (const json::value& item : r.at("output").as_array()) CheckItem(item.as_object());
  const std::string status = S(r.at("status"));
  EXPECT_TRUE(status == "in_progress" || status == "completed" || status == "incomplete" || status == "failed");
  if (status != "incomplete") {
    EXPECT_TRUE(r.at("incomplete_details").is_null());
  }
  if (status != "failed") {
    EXPECT_TRUE(r.at("error").is_null());
  }
  if (status == "completed" || status == "incomplete") {
    const json::object& u = r.at("usage").as_object();
    ExpectKeys(u, {"input_tokens", "input_tokens_details", "output_tokens", "output_tokens_details", "total_tokens",
                   "cost", "is_byok"},
               "usage");
    ExpectKeys(u.at("input_tokens_details").as_object(), {"cached_tokens", "cache_write_tokens"}, "usage");
    ExpectKeys(u.at("output_tokens_details").as_object(), {"reasoning_tokens"}, "usage");
  } else {
    EXPECT_TRUE(r.at("usage").is_null());
  }
}

// Each event: SSE name = data.type, sequence_number = its position, and the
// fields its interface in responses.d.ts requires.
void CheckEvents(const std::vector<Ev>& events) {
  for (std::size_t i = 0; i < events.size(); ++i) {
    const Ev& e = events[i];
    const json::object& d = e.data;
    ASSERT_TRUE(d.contains("type")) << e.raw;
    EXPECT_EQ(S(d.at("type")), e.name);
    ASSERT_TRUE(d.contains("sequence_number")) << e.raw;
    EXPECT_EQ(d.at("sequence_number").as_int64(), static_cast<int64_t>(i)) << e.raw;
    const std::string& t = e.name;
    if (t == "response.created" || t == "response.in_progress" || t == "response.completed" ||
        t == "response.incomplete" || t == "response.failed") {
      CheckResponse(d.at("response").as_object());
    } else if (t == "error") {
      ExpectKeys(d, {"code", "message", "param"}, t);
    } else if (t == "response.output_item.added" || t == "response.output_item.done") {
      ExpectKeys(d, {"item", "output_index"}, t);
      CheckItem(d.at("item").as_object());
    } else if (t == "response.content_part.added" || t == "response.content_part.done") {
      ExpectKeys(d, {"content_index", "item_id", "output_index", "part"}, t);
      const json::object& part = d.at("part").as_object();
      if (S(part.at("type")) == "output_text") {
        CheckOutputText(part);
      } else {
        EXPECT_EQ(S(part.at("type")), "reasoning_text");
        ExpectKeys(part, {"text"}, t);
      }
    } else if (t == "response.output_text.delta") {
      ExpectKeys(d, {"content_index", "delta", "item_id", "logprobs", "output_index"}, t);
    } else if (t == "response.output_text.done") {
      ExpectKeys(d, {"content_index", "item_id", "logprobs", "output_index", "text"}, t);
    } else if (t == "response.function_call_arguments.delta") {
      ExpectKeys(d, {"delta", "item_id", "output_index"}, t);
    } else if (t == "response.function_call_arguments.done") {
      ExpectKeys(d, {"arguments", "item_id", "name", "output_index"}, t);
    } else if (t == "response.reasoning_summary_part.added" || t == "response.reasoning_summary_part.done") {
      ExpectKeys(d, {"item_id", "output_index", "part", "summary_index"}, t);
      EXPECT_EQ(S(d.at("part").at("type")), "summary_text");
      ExpectKeys(d.at("part").as_object(), {"text"}, t);
    } else if (t == "response.reasoning_summary_text.delta") {
      ExpectKeys(d, {"delta", "item_id", "output_index", "summary_index"}, t);
    } else if (t == "response.reasoning_summary_text.done") {
      ExpectKeys(d, {"item_id", "output_index", "summary_index", "text"}, t);
    } else if (t == "response.reasoning_text.delta") {
      ExpectKeys(d, {"content_index", "delta", "item_id", "output_index"}, t);
    } else if (t == "response.reasoning_text.done") {
      ExpectKeys(d, {"content_index", "item_id", "output_index", "text"}, t);
    } else {
      ADD_FAILURE() << "unexpected event " << t;
    }
  }
}

// The SDK's accumulateResponse (lib/responses/ResponseAccumulator.js),
// condensed: the snapshot a client builds from the events. Throws (as a test
// failure) where the SDK would throw.
json::object Accumulate(const std::vector<Ev>& events) {
  json::object snapshot;
  bool have = false;
  auto output = [&](const json::object& d) -> json::object* {
    json::array& out = snapshot["output"].as_array();
    const auto i = static_cast<std::size_t>(d.at("output_index").as_int64());
    if (i >= out.size()) {
      ADD_FAILURE() << "missing output at index " << i;
      return nullptr;
    }
    return &out[i].as_object();
  };
  auto entry = [](json::array& list, const json::object& d, std::string_view key) -> json::object* {
    const auto i = static_cast<std::size_t>(d.at(key).as_int64());
    if (i >= list.size()) {
      ADD_FAILURE() << "missing content at index " << i;
      return nullptr;
    }
    return &list[i].as_object();
  };
  auto append = [](json::object& o, std::string_view key, const json::value& delta) {
    std::string s = S(o.at(key));
    s += S(delta);
    o[key] = s;
  };
  for (const Ev& e : events) {
    const json::object& d = e.data;
    const std::string& t = e.name;
    if (!have) {
      EXPECT_EQ(t, "response.created") << "the first event must be response.created";
      snapshot = d.at("response").as_object();
      have = true;
      continue;
    }
    if (t == "response.output_item.added") {
      snapshot["output"].as_array().push_back(d.at("item"));
    } else if (t == "response.output_item.done") {
      if (json::object* o = output(d)) *o = d.at("item").as_object();
    } else if (t == "response.content_part.added") {
      json::object* o = output(d);
      if (o == nullptr) continue;
      const std::string part_type = S(d.at("part").at("type"));
      if (S(o->at("type")) == "message" && part_type != "reasoning_text") {
        (*o)["content"].as_array().push_back(d.at("part"));
      } else if (S(o->at("type")) == "reasoning" && part_type == "reasoning_text") {
        if (!o->contains("content")) (*o)["content"] = json::array{};
        (*o)["content"].as_array().push_back(d.at("part"));
      }
    } else if (t == "response.content_part.done") {
      json::object* o = output(d);
      if (o == nullptr) continue;
      if (!o->contains("content")) {
        ADD_FAILURE() << "missing content";
        continue;
      }
      if (json::object* c = entry((*o)["content"].as_array(), d, "content_index")) *c = d.at("part").as_object();
    } else if (t == "response.output_text.delta" || t == "response.reasoning_text.delta") {
      json::object* o = output(d);
      if (o == nullptr || !o->contains("content")) {
        ADD_FAILURE() << "missing content for " << t;
        continue;
      }
      if (json::object* c = entry((*o)["content"].as_array(), d, "content_index")) {
        EXPECT_EQ(S(c->at("type")), t == "response.output_text.delta" ? "output_text" : "reasoning_text");
        append(*c, "text", d.at("delta"));
      }
    } else if (t == "response.output_text.done" || t == "response.reasoning_text.done") {
      json::object* o = output(d);
      if (o == nullptr || !o->contains("content")) continue;
      if (json::object* c = entry((*o)["content"].as_array(), d, "content_index")) (*c)["text"] = d.at("text");
    } else if (t == "response.function_call_arguments.delta") {
      if (json::object* o = output(d)) append(*o, "arguments", d.at("delta"));
    } else if (t == "response.function_call_arguments.done") {
      if (json::object* o = output(d)) (*o)["arguments"] = d.at("arguments");
    } else if (t == "response.reasoning_summary_part.added") {
      if (json::object* o = output(d)) (*o)["summary"].as_array().push_back(d.at("part"));
    } else if (t == "response.reasoning_summary_part.done") {
      json::object* o = output(d);
      if (o == nullptr) continue;
      if (json::object* c = entry((*o)["summary"].as_array(), d, "summary_index")) *c = d.at("part").as_object();
    } else if (t == "response.reasoning_summary_text.delta") {
      json::object* o = output(d);
      if (o == nullptr) continue;
      if (json::object* c = entry((*o)["summary"].as_array(), d, "summary_index")) append(*c, "text", d.at("delta"));
    } else if (t == "response.reasoning_summary_text.done") {
      json::object* o = output(d);
      if (o == nullptr) continue;
      if (json::object* c = entry((*o)["summary"].as_array(), d, "summary_index")) (*c)["text"] = d.at("text");
    }
  }
  return snapshot;
}

// A whole encoded stream: checked events, and the accumulated snapshot's
// output equal to the terminal response's.
struct Stream {
  std::vector<Ev> events;
  json::object final_response;
};

Stream CheckStream(const std::string& sse, bool compare_snapshot = true) {
  Stream s;
  s.events = Parse(sse);
  CheckEvents(s.events);
  if (s.events.empty()) return s;
  const Ev& last = s.events.back();
  if (last.data.contains("response")) {
    s.final_response = last.data.at("response").as_object();
    if (last.name != "response.failed" && compare_snapshot) {
      const json::object snapshot = Accumulate(s.events);
      EXPECT_EQ(json::serialize(snapshot.at("output")), json::serialize(s.final_response.at("output")));
    }
  }
  return s;
}

std::string EncodeAll(StreamEncoder& enc, const std::vector<StreamEvent>& events) {
  std::string sse;
  for (const StreamEvent& e : events) sse += enc.Encode(e);
  return sse;
}

ReasoningDelta RD(int index, ReasoningPart::Kind kind, std::string text, std::string format = {},
                  std::string id = {}, std::string signature = {}, std::string data = {}) {
  ReasoningDelta d;
  d.index = index;
  d.kind = kind;
  d.text = std::move(text);
  d.format = std::move(format);
  d.id = std::move(id);
  d.signature = std::move(signature);
  d.data = std::move(data);
  return d;
}

ToolCallDelta TC(int index, std::string id, std::string name, std::string arguments, std::string sig = {}) {
  return ToolCallDelta{0, index, std::move(id), std::move(name), std::move(arguments), std::move(sig)};
}

constexpr auto kSummary = ReasoningPart::Kind::kSummary;
constexpr auto kText = ReasoningPart::Kind::kText;
constexpr auto kEncrypted = ReasoningPart::Kind::kEncrypted;

// ================================================================ DecodeRequest

TEST(ResponsesDecode, StringInputIsOneUserMessage) {
  const Request r = Decode(R"({"model":"openai/gpt-5","input":"Hello"})");
  EXPECT_EQ(r.chat.api, ApiFlavor::kOpenAiResponses);
  EXPECT_EQ(r.chat.kind, RequestKind::kChat);
  EXPECT_EQ(r.chat.model, "openai/gpt-5");
  ASSERT_EQ(r.chat.messages.size(), 1u);
  EXPECT_EQ(r.chat.messages[0].role, Role::kUser);
  EXPECT_EQ(TextOf(r.chat.messages[0], 0).text, "Hello");
  ASSERT_EQ(r.input.size(), 1u);
  json::object item = r.input[0].as_object();
  EXPECT_TRUE(item.at("id").as_string().starts_with("msg_")) << item;
  EXPECT_EQ(item.at("id").as_string().size(), 4u + 32u);
  item.erase("id");
  EXPECT_EQ(json::serialize(item),
            R"({"type":"message","role":"user","content":[{"type":"input_text","text":"Hello"}],"status":"completed"})");
  EXPECT_TRUE(r.store);
  EXPECT_FALSE(r.chat.stream);
  EXPECT_FALSE(r.include_encrypted_reasoning);
  EXPECT_TRUE(r.dropped_tools.empty());
  EXPECT_TRUE(r.previous_response_id.empty());
}

TEST(ResponsesDecode, InstructionsComeFirstAsSystem) {
  const Request r = Decode(Body(R"("instructions":"Be brief.")"));
  ASSERT_EQ(r.chat.messages.size(), 2u);
  EXPECT_EQ(r.chat.messages[0].role, Role::kSystem);
  EXPECT_EQ(TextOf(r.chat.messages[0], 0).text, "Be brief.");
  EXPECT_EQ(r.chat.messages[1].role, Role::kUser);
  EXPECT_EQ(r.instructions, "Be brief.");
  EXPECT_EQ(S(r.echo.at("instructions")), "Be brief.");
  // Not kept in the input items (OpenAI does not carry instructions over).
  EXPECT_EQ(r.input.size(), 1u);
  // Empty instructions add nothing.
  EXPECT_EQ(Decode(Body(R"("instructions":"")")).chat.messages.size(), 1u);
}

TEST(ResponsesDecode, EveryInputItemAndPart) {
  const Request r = Decode(WithInput(R"([
    {"type":"message","role":"system","content":"sys"},
    {"type":"message","role":"developer","content":[{"type":"input_text","text":"dev"}]},
    {"role":"user","content":"easy"},
    {"type":"message","role":"user","content":[
      {"type":"input_text","text":"look"},
      {"type":"input_image","image_url":"https://x/y.png","detail":"high"},
      {"type":"input_image","image_url":"data:image/png;base64,AAAA","detail":null}]},
    {"type":"reasoning","id":"rs_1","summary":[{"type":"summary_text","text":"S1"},{"type":"summary_text","text":"S2"}],
     "content":[{"type":"reasoning_text","text":"R"}],"encrypted_content":"gAAAA"},
    {"type":"message","id":"msg_1","role":"assistant","status":"completed","content":[
      {"type":"output_text","text":"A","annotations":[]},{"type":"refusal","refusal":"no"}]},
    {"type":"function_call","id":"fc_1","call_id":"call_1","name":"get","arguments":"{\"a\":1}","status":"completed"},
    {"type":"function_call","call_id":"call_2","name":"put","arguments":{"b":2}},
    {"type":"function_call_output","call_id":"call_1","output":"one"},
    {"type":"function_call_output","call_id":"call_2","output":[
      {"type":"input_text","text":"two"},{"type":"input_image","image_url":"https://x/z.png"}]},
    {"role":"assistant","content":"done"}
  ])"));
  const auto& m = r.chat.messages;
  ASSERT_EQ(m.size(), 8u);
  EXPECT_EQ(m[0].role, Role::kSystem);
  EXPECT_EQ(TextOf(m[0], 0).text, "sys");
  EXPECT_EQ(m[1].role, Role::kDeveloper);
  EXPECT_EQ(TextOf(m[1], 0).text, "dev");
  EXPECT_EQ(m[2].role, Role::kUser);
  EXPECT_EQ(TextOf(m[2], 0).text, "easy");
  ASSERT_EQ(m[3].parts.size(), 3u);
  EXPECT_EQ(TextOf(m[3], 0).text, "look");
  EXPECT_EQ(ImageOf(m[3], 1).url, "https://x/y.png");
  EXPECT_EQ(ImageOf(m[3], 1).detail, "high");
  EXPECT_EQ(ImageOf(m[3], 2).url, "data:image/png;base64,AAAA");
  EXPECT_EQ(ImageOf(m[3], 2).detail, "");

  // reasoning, message and function calls in a row: one assistant turn.
  const Message& a = m[4];
  EXPECT_EQ(a.role, Role::kAssistant);
  ASSERT_EQ(a.parts.size(), 8u);
  const ReasoningPart& s1 = ReasoningOf(a, 0);
  EXPECT_EQ(s1.kind, kSummary);
  EXPECT_EQ(s1.text, "S1");
  EXPECT_EQ(s1.format, "openai-responses-v1");
  EXPECT_EQ(s1.id, "rs_1");
  EXPECT_EQ(ReasoningOf(a, 1).text, "S2");
  EXPECT_EQ(ReasoningOf(a, 2).kind, kText);
  EXPECT_EQ(ReasoningOf(a, 2).text, "R");
  EXPECT_EQ(ReasoningOf(a, 3).kind, kEncrypted);
  EXPECT_EQ(ReasoningOf(a, 3).data, "gAAAA");
  EXPECT_EQ(ReasoningOf(a, 3).id, "rs_1");
  EXPECT_EQ(ReasoningOf(a, 3).format, "openai-responses-v1");
  EXPECT_EQ(TextOf(a, 4).text, "A");
  EXPECT_EQ(TextOf(a, 5).text, "no");  // a refusal is what the model said
  EXPECT_EQ(CallOf(a, 6).id, "call_1");
  EXPECT_EQ(CallOf(a, 6).name, "get");
  EXPECT_EQ(CallOf(a, 6).arguments, R"({"a":1})");
  EXPECT_EQ(CallOf(a, 7).arguments, R"({"b":2})");  // an object is serialized

  EXPECT_EQ(m[5].role, Role::kTool);
  EXPECT_EQ(ResultOf(m[5], 0).tool_call_id, "call_1");
  EXPECT_EQ(ResultOf(m[5], 0).name, "get");
  EXPECT_EQ(std::get<TextPart>(ResultOf(m[5], 0).content.at(0)).text, "one");
  EXPECT_EQ(ResultOf(m[6], 0).name, "put");
  ASSERT_EQ(ResultOf(m[6], 0).content.size(), 2u);
  EXPECT_EQ(std::get<TextPart>(ResultOf(m[6], 0).content[0]).text, "two");
  EXPECT_EQ(std::get<ImagePart>(ResultOf(m[6], 0).content[1]).url, "https://x/z.png");
  EXPECT_EQ(m[7].role, Role::kAssistant);
  EXPECT_EQ(TextOf(m[7], 0).text, "done");
  // The input is kept as sent.
  EXPECT_EQ(r.input.size(), 11u);
}

TEST(ResponsesDecode, FunctionCallWithoutArgumentsGetsEmptyObject) {
  const Request r = Decode(WithInput(R"([{"type":"function_call","call_id":"c","name":"f"},
                                         {"type":"function_call","call_id":"d","name":"g","arguments":""},
                                         {"type":"function_call_output","call_id":"c","output":"1"},
                                         {"type":"function_call_output","call_id":"d","output":"2"}])"));
  ASSERT_EQ(r.chat.messages.size(), 3u);
  EXPECT_EQ(CallOf(r.chat.messages[0], 0).arguments, "{}");
  EXPECT_EQ(CallOf(r.chat.messages[0], 1).arguments, "{}");
}

TEST(ResponsesDecode, EmptyAssistantTextAndEmptyReasoningAreLeftOut) {
  const Request r = Decode(WithInput(R"([{"role":"user","content":"q"},
    {"type":"reasoning","id":"rs_9","summary":[]},
    {"type":"message","role":"assistant","content":[{"type":"output_text","text":""}]},
    {"type":"message","role":"assistant","content":[]},
    {"type":"function_call","call_id":"c","name":"f","arguments":"{}"},
    {"type":"function_call_output","call_id":"c","output":"1"}])"));
  ASSERT_EQ(r.chat.messages.size(), 3u);
  ASSERT_EQ(r.chat.messages[1].parts.size(), 1u);
  EXPECT_EQ(CallOf(r.chat.messages[1], 0).id, "c");
}

TEST(ResponsesDecode, BuiltInToolItemsAreLeftOut) {
  const Request r = Decode(WithInput(R"([{"role":"user","content":"q"},
    {"type":"web_search_call","id":"ws_1","status":"completed","action":{"type":"search","query":"x"}},
    {"type":"file_search_call","id":"fs_1","queries":[],"status":"completed"},
    {"type":"computer_call","id":"cu_1","call_id":"c1","action":{},"pending_safety_checks":[],"status":"completed"},
    {"type":"computer_call_output","call_id":"c1","output":{"type":"computer_screenshot"}},
    {"type":"custom_tool_call","call_id":"c2","name":"apply_patch","input":"x"},
    {"type":"custom_tool_call_output","call_id":"c2","output":"ok"},
    {"type":"mcp_call","id":"m","arguments":"{}","name":"n","server_label":"s"},
    {"type":"image_generation_call","id":"ig","result":null,"status":"completed"},
    {"type":"code_interpreter_call","id":"ci","code":"","container_id":"c","outputs":[],"status":"completed"},
    {"type":"local_shell_call","id":"ls","call_id":"c3","action":{},"status":"completed"},
    {"type":"message","role":"assistant","content":[{"type":"output_text","text":"answer"}]}])"));
  ASSERT_EQ(r.chat.messages.size(), 2u);
  EXPECT_EQ(r.chat.messages[1].role, Role::kAssistant);
  ASSERT_EQ(r.chat.messages[1].parts.size(), 1u);
  EXPECT_EQ(TextOf(r.chat.messages[1], 0).text, "answer");
}

TEST(ResponsesDecode, BadInputErrorsNameTheExactParam) {
  ExpectRejected(WithInput("42"), "input");
  ExpectRejected(WithInput("{}"), "input");
  ExpectRejected(WithInput(R"(["hi"])"), "input[0]");
  ExpectRejected(WithInput(R"([{"content":"x"}])"), "input[0].type");
  ExpectRejected(WithInput(R"([{"type":7,"role":"user","content":"x"}])"), "input[0].type");
  ExpectRejected(WithInput(R"([{"role":"user","content":"x"},{"type":"bogus"}])"), "input[1].type", "bogus");
  ExpectRejected(WithInput(R"([{"type":"item_reference","id":"msg_1"}])"), "input[0].type", "item_reference");
  ExpectRejected(WithInput(R"([{"type":"message","role":"tool","content":"x"}])"), "input[0].role");
  ExpectRejected(WithInput(R"([{"type":"message","content":"x"}])"), "input[0].role");
  ExpectRejected(WithInput(R"([{"type":"message","role":"user"}])"), "input[0].content");
  ExpectRejected(WithInput(R"([{"type":"message","role":"user","content":null}])"), "input[0].content");
  ExpectRejected(WithInput(R"([{"type":"message","role":"user","content":[]}])"), "input[0].content");
  ExpectRejected(WithInput(R"([{"type":"message","role":"user","content":5}])"), "input[0].content");
  ExpectRejected(WithInput(R"([{"role":"user","content":["x"]}])"), "input[0].content[0]");
  ExpectRejected(WithInput(R"([{"role":"user","content":[{"text":"x"}]}])"), "input[0].content[0].type");
  ExpectRejected(WithInput(R"([{"role":"user","content":[{"type":"input_text","text":"a"},{"type":"input_file","file_id":"f"}]}])"),
                 "input[0].content[1].type", "input_file");
  ExpectRejected(WithInput(R"([{"role":"user","content":[{"type":"input_audio"}]}])"), "input[0].content[0].type");
  ExpectRejected(WithInput(R"([{"role":"user","content":[{"type":"output_text","text":"x"}]}])"),
                 "input[0].content[0].type");
  ExpectRejected(WithInput(R"([{"role":"system","content":[{"type":"input_image","image_url":"https://x"}]}])"),
                 "input[0].content[0].type");
  ExpectRejected(WithInput(R"([{"role":"assistant","content":[{"type":"input_image","image_url":"https://x"}]}])"),
                 "input[0].content[0].type");
  ExpectRejected(WithInput(R"([{"role":"user","content":[{"type":"input_text"}]}])"), "input[0].content[0].text");
  ExpectRejected(WithInput(R"([{"role":"user","content":[{"type":"input_text","text":1}]}])"),
                 "input[0].content[0].text");
  ExpectRejected(WithInput(R"([{"role":"assistant","content":[{"type":"refusal"}]}])"), "input[0].content[0].refusal");
  ExpectRejected(WithInput(R"([{"role":"user","content":[{"type":"input_image"}]}])"),
                 "input[0].content[0].image_url");
  ExpectRejected(WithInput(R"([{"role":"user","content":[{"type":"input_image","image_url":""}]}])"),
                 "input[0].content[0].image_url");
  ExpectRejected(WithInput(R"([{"role":"user","content":[{"type":"input_image","file_id":"file-1"}]}])"),
                 "input[0].content[0].file_id", "file_id");
  ExpectRejected(WithInput(R"([{"role":"user","content":[{"type":"input_image","image_url":"https://x","detail":3}]}])"),
                 "input[0].content[0].detail");
  ExpectRejected(WithInput(R"([{"type":"function_call","name":"f","arguments":"{}"}])"), "input[0].call_id");
  ExpectRejected(WithInput(R"([{"type":"function_call","call_id":"","name":"f"}])"), "input[0].call_id");
  ExpectRejected(WithInput(R"([{"type":"function_call","call_id":"c","arguments":"{}"}])"), "input[0].name");
  ExpectRejected(WithInput(R"([{"type":"function_call","call_id":"c","name":"f","arguments":3}])"),
                 "input[0].arguments");
  ExpectRejected(WithInput(R"([{"type":"function_call_output","output":"x"}])"), "input[0].call_id");
  ExpectRejected(WithInput(R"([{"type":"function_call_output","call_id":"c"}])"), "input[0].output");
  ExpectRejected(WithInput(R"([{"type":"function_call_output","call_id":"c","output":7}])"), "input[0].output");
  ExpectRejected(WithInput(R"([{"type":"function_call_output","call_id":"c","output":[1]}])"), "input[0].output[0]");
  ExpectRejected(WithInput(R"([{"type":"function_call_output","call_id":"c","output":[{"type":"input_file"}]}])"),
                 "input[0].output[0].type");
  ExpectRejected(WithInput(R"([{"type":"function_call_output","call_id":"c","output":[{"type":"input_text"}]}])"),
                 "input[0].output[0].text");
  ExpectRejected(WithInput(R"([{"type":"reasoning","id":"r","summary":"x"}])"), "input[0].summary");
  ExpectRejected(WithInput(R"([{"type":"reasoning","id":"r","summary":[{"type":"reasoning_text","text":"x"}]}])"),
                 "input[0].summary[0].type");
  ExpectRejected(WithInput(R"([{"type":"reasoning","id":"r","summary":[{"type":"summary_text"}]}])"),
                 "input[0].summary[0].text");
  ExpectRejected(WithInput(R"([{"type":"reasoning","id":"r","summary":[],"content":[{"type":"summary_text","text":"x"}]}])"),
                 "input[0].content[0].type");
  ExpectRejected(WithInput(R"([{"type":"reasoning","id":5,"summary":[]}])"), "input[0].id");
  ExpectRejected(WithInput(R"([{"type":"reasoning","id":"r","summary":[],"encrypted_content":1}])"),
                 "input[0].encrypted_content");
  ExpectRejected(WithInput(R"([{"type":"reasoning","id":"r","summary":[],"encrypted_content":"tollgate.v1.!!"}])"),
                 "input[0].encrypted_content");
}

TEST(ResponsesDecode, RequestLevelErrors) {
  ExpectRejected("not json", "");
  ExpectRejected("[1]", "");
  std::string deep = R"({"model":"m","input":"hi","metadata":)";
  for (int i = 0; i < 70; ++i) deep += "[";
  for (int i = 0; i < 70; ++i) deep += "]";
  ExpectRejected(deep + "}", "");
  ExpectRejected(R"({"input":"hi"})", "model");
  ExpectRejected(R"({"model":"","input":"hi"})", "model");
  ExpectRejected(R"({"model":3,"input":"hi"})", "model");
  ExpectRejected(R"({"model":"m"})", "input");
  ExpectRejected(R"({"model":"m","input":[]})", "input");
  ExpectRejected(R"({"model":"m","input":null})", "input");
  ExpectRejected(Body(R"("instructions":5)"), "instructions");
  ExpectRejected(Body(R"("temperature":3)"), "temperature");
  ExpectRejected(Body(R"("temperature":"1")"), "temperature");
  ExpectRejected(Body(R"("top_p":0)"), "top_p");
  ExpectRejected(Body(R"("top_p":1.5)"), "top_p");
  ExpectRejected(Body(R"("max_output_tokens":0)"), "max_output_tokens");
  ExpectRejected(Body(R"("max_output_tokens":1.5)"), "max_output_tokens");
  ExpectRejected(Body(R"("top_logprobs":21)"), "top_logprobs");
  ExpectRejected(Body(R"("parallel_tool_calls":"yes")"), "parallel_tool_calls");
  ExpectRejected(Body(R"("stream":1)"), "stream");
  ExpectRejected(Body(R"("store":"no")"), "store");
  ExpectRejected(Body(R"("stream_options":true)"), "stream_options");
  ExpectRejected(Body(R"("previous_response_id":"")"), "previous_response_id");
  ExpectRejected(Body(R"("previous_response_id":12)"), "previous_response_id");
  ExpectRejected(Body(R"("metadata":[])"), "metadata");
  ExpectRejected(Body(R"("metadata":{"k":1})"), "metadata.k");
  ExpectRejected(Body(R"("user":1)"), "user");
  ExpectRejected(Body(R"("truncation":"middle")"), "truncation");
  ExpectRejected(Body(R"("background":true)"), "background");
  ExpectRejected(Body(R"("background":"x")"), "background");
  ExpectRejected(Body(R"("conversation":"conv_1")"), "conversation");
  ExpectRejected(Body(R"("prompt":{"id":"pmpt_1"})"), "prompt");
  ExpectRejected(Body(R"("prompt_cache_key":)" + std::string("\"") + std::string(300, 'k') + "\""),
                 "prompt_cache_key");
  ExpectRejected(Body(R"("provider":{"order":[1]})"), "provider.order[0]");
  // background false is fine.
  Decode(Body(R"("background":false)"));
}

TEST(ResponsesDecode, NullMeansAbsent) {
  const Request r = Decode(R"({"model":"m","input":"hi","instructions":null,"tools":null,"tool_choice":null,
    "text":null,"reasoning":null,"include":null,"metadata":null,"temperature":null,"top_p":null,
    "max_output_tokens":null,"previous_response_id":null,"store":null,"user":null,"stream":null,
    "parallel_tool_calls":null,"truncation":null,"top_logprobs":null,"prompt_cache_key":null,
    "safety_identifier":null,"background":null,"conversation":null,"prompt":null,"stream_options":null,
    "service_tier":null})");
  EXPECT_TRUE(r.store);
  EXPECT_FALSE(r.chat.stream);
  EXPECT_TRUE(r.chat.tools.empty());
  EXPECT_FALSE(r.chat.tool_choice);
  EXPECT_FALSE(r.chat.response_format);
  EXPECT_FALSE(r.chat.reasoning);
  EXPECT_FALSE(r.chat.temperature);
  EXPECT_FALSE(r.chat.max_tokens);
  EXPECT_EQ(r.chat.messages.size(), 1u);
  // Defaults echoed.
  EXPECT_EQ(json::serialize(r.echo),
            R"({"instructions":null,"max_output_tokens":null,"metadata":{},"parallel_tool_calls":true,)"
            R"("previous_response_id":null,"reasoning":{"effort":null,"summary":null},"store":true,)"
            R"("temperature":1E0,"text":{"format":{"type":"text"}},"tool_choice":"auto","tools":[],)"
            R"("top_p":1E0,"truncation":"disabled","user":null})");
}

TEST(ResponsesDecode, SamplingAndTheRest) {
  const Request r = Decode(Body(
      R"("max_output_tokens":512,"temperature":0.2,"top_p":0.9,"top_logprobs":3,"parallel_tool_calls":false,)"
      R"("stream":true,"store":false,"user":"u-1","metadata":{"a":"b"},"truncation":"auto",)"
      R"("prompt_cache_key":"conv-7","previous_response_id":"resp_abc","service_tier":"auto")"));
  EXPECT_EQ(r.chat.max_tokens, 512);
  EXPECT_EQ(r.chat.max_tokens_field, MaxTokensField::kMaxCompletionTokens);
  EXPECT_DOUBLE_EQ(*r.chat.temperature, 0.2);
  EXPECT_DOUBLE_EQ(*r.chat.top_p, 0.9);
  EXPECT_EQ(r.chat.parallel_tool_calls, false);
  EXPECT_TRUE(r.chat.stream);
  EXPECT_FALSE(r.store);
  EXPECT_EQ(r.chat.user, "u-1");
  EXPECT_EQ(json::serialize(r.chat.metadata), R"({"a":"b"})");
  EXPECT_EQ(r.chat.session_id, "conv-7");
  EXPECT_EQ(r.previous_response_id, "resp_abc");
  EXPECT_EQ(r.echo.at("max_output_tokens").as_int64(), 512);
  EXPECT_DOUBLE_EQ(r.echo.at("temperature").as_double(), 0.2);
  EXPECT_DOUBLE_EQ(r.echo.at("top_p").as_double(), 0.9);
  EXPECT_EQ(r.echo.at("top_logprobs").as_int64(), 3);
  // Reaches the canonical request as on a chat completions body with
  // top_logprobs and no logprobs.
  EXPECT_EQ(r.chat.top_logprobs, 3);
  EXPECT_FALSE(r.chat.logprobs);
  EXPECT_EQ(r.echo.at("parallel_tool_calls").as_bool(), false);
  EXPECT_EQ(r.echo.at("store").as_bool(), false);
  EXPECT_EQ(S(r.echo.at("user")), "u-1");
  EXPECT_EQ(S(r.echo.at("truncation")), "auto");
  EXPECT_EQ(S(r.echo.at("previous_response_id")), "resp_abc");
  EXPECT_EQ(json::serialize(r.echo.at("metadata")), R"({"a":"b"})");
  // safety_identifier is the end-user id when `user` is not given; the
  // body's session_id wins over prompt_cache_key.
  const Request s = Decode(Body(R"("safety_identifier":"sid","session_id":"s1","prompt_cache_key":"p1")"));
  EXPECT_EQ(s.chat.user, "sid");
  EXPECT_EQ(s.chat.session_id, "s1");
}

TEST(ResponsesDecode, RoutingFieldsAsOnChatCompletions) {
  const Request r = Decode(R"({"models":["a/b","c/d"],"input":"hi","provider":{"order":["openai"]},
                               "debug":{"routing":true}})");
  EXPECT_EQ(r.chat.model, "a/b");
  EXPECT_EQ(r.chat.fallback_models, (std::vector<std::string>{"c/d"}));
  EXPECT_EQ(r.chat.provider.order, (std::vector<std::string>{"openai"}));
  EXPECT_TRUE(r.chat.explain_routing);
}

TEST(ResponsesDecode, InputItemsAreListedAsOpenAiListsThem) {
  const Request r = Decode(R"({"model":"m","input":[
    {"role":"user","content":"one"},
    {"role":"assistant","content":"two"},
    {"type":"message","id":"msg_mine","role":"user","content":[{"type":"input_text","text":"three"}],"status":"completed"},
    {"type":"function_call","call_id":"call_1","name":"f","arguments":"{}"},
    {"type":"function_call_output","call_id":"call_1","output":"42"},
    {"type":"reasoning","summary":[{"type":"summary_text","text":"s"}]}]})");
  ASSERT_EQ(r.input.size(), 6u);
  auto id = [&](std::size_t i) { return std::string(r.input[i].as_object().at("id").as_string()); };
  EXPECT_TRUE(id(0).starts_with("msg_"));
  EXPECT_NE(id(0), id(1));
  EXPECT_EQ(id(2), "msg_mine");  // the caller's own id stays
  EXPECT_TRUE(id(3).starts_with("fc_"));
  EXPECT_TRUE(id(4).starts_with("fco_"));
  EXPECT_FALSE(r.input[5].as_object().contains("id"));  // a reasoning id would name OpenAI's item
  EXPECT_EQ(json::serialize(r.input[0].as_object().at("content")), R"([{"type":"input_text","text":"one"}])");
  EXPECT_EQ(json::serialize(r.input[1].as_object().at("content")),
            R"([{"type":"output_text","text":"two","annotations":[]}])");
  for (std::size_t i : {0u, 1u, 3u, 4u}) EXPECT_EQ(r.input[i].as_object().at("status"), "completed");
  EXPECT_EQ(r.input[0].as_object().at("type"), "message");
  // The items still decode to the same conversation (what a stored context replays).
  std::vector<Message> again;
  ASSERT_FALSE(DecodeItems(r.input, "input", again));
  EXPECT_EQ(again.size(), r.chat.messages.size());
}

TEST(ResponsesDecode, EveryCallNeedsItsOutput) {
  ExpectRejected(R"({"model":"m","input":[{"role":"user","content":"q"},
                    {"type":"function_call","call_id":"call_a","name":"f","arguments":"{}"},
                    {"type":"function_call","call_id":"call_b","name":"f","arguments":"{}"},
                    {"type":"function_call_output","call_id":"call_a","output":"1"},
                    {"role":"user","content":"and?"}]})",
                 "input", "No tool output found for function call call_b.");
  // A stored context that ends with calls is answered by the new input.
  Request r = Decode(R"({"model":"m","previous_response_id":"resp_1","input":"never mind"})");
  const std::optional<Error> e = PrependContext(r, json::parse(R"([{"role":"user","content":"q"},
      {"type":"function_call","call_id":"call_c","name":"f","arguments":"{}"}])").as_array());
  ASSERT_TRUE(e);
  EXPECT_EQ(e->message, "No tool output found for function call call_c.");
}

TEST(ResponsesDecode, AToolOutputNeedsAnEarlierCall) {
  ExpectRejected(R"({"model":"m","input":[{"type":"function_call_output","call_id":"call_zzz","output":"42"}]})",
                 "input", "No tool call found for function call output with call_id call_zzz");
  ExpectRejected(R"({"model":"m","input":[{"type":"function_call_output","call_id":"call_2","output":"1"},
                    {"type":"function_call","call_id":"call_2","name":"f","arguments":"{}"}]})",
                 "input", "call_2");
  // With previous_response_id the calls come with the stored context.
  Request r = Decode(R"({"model":"m","previous_response_id":"resp_1",
                         "input":[{"type":"function_call_output","call_id":"call_9","output":"sunny"}]})");
  const json::array with_call{json::object{{"type", "message"}, {"role", "user"}, {"content", "weather?"}},
                              json::object{{"type", "function_call"}, {"call_id", "call_9"}, {"name", "get_weather"},
                                           {"arguments", "{}"}}};
  EXPECT_FALSE(PrependContext(r, with_call));
  Request orphan = Decode(R"({"model":"m","previous_response_id":"resp_1",
                              "input":[{"type":"function_call_output","call_id":"call_8","output":"sunny"}]})");
  const std::optional<Error> e = PrependContext(orphan, with_call);
  ASSERT_TRUE(e);
  EXPECT_EQ(e->param, "input");
}

TEST(ResponsesDecode, PreviousResponseIdAloneNeedsNoInput) {
  const Request r = Decode(R"({"model":"m","previous_response_id":"resp_1","instructions":"sys"})");
  EXPECT_TRUE(r.input.empty());
  ASSERT_EQ(r.chat.messages.size(), 1u);
  EXPECT_EQ(r.chat.messages[0].role, Role::kSystem);
}

// ---------------------------------------------------------------- tools and tool_choice

constexpr std::string_view kTools =
    R"("tools":[{"type":"web_search_preview"},
                {"type":"function","name":"get_weather","description":"Weather","parameters":{"type":"object"},"strict":true},
                {"type":"file_search","vector_store_ids":["vs_1"]},
                {"type":"function","name":"get_time","parameters":null,"strict":null},
                {"type":"web_search_preview"},
                {"type":"custom","name":"apply_patch"}])";

TEST(ResponsesDecode, FunctionToolsKeptBuiltInsDropped) {
  const Request r = Decode(Body(kTools));
  ASSERT_EQ(r.chat.tools.size(), 2u);
  EXPECT_EQ(r.chat.tools[0].name, "get_weather");
  EXPECT_EQ(r.chat.tools[0].description, "Weather");
  EXPECT_EQ(json::serialize(r.chat.tools[0].parameters), R"({"type":"object"})");
  EXPECT_EQ(r.chat.tools[0].strict, true);
  EXPECT_EQ(r.chat.tools[1].name, "get_time");
  EXPECT_TRUE(r.chat.tools[1].parameters.is_null());
  EXPECT_FALSE(r.chat.tools[1].strict);
  EXPECT_EQ(r.dropped_tools, (std::vector<std::string>{"web_search_preview", "file_search", "custom"}));
  // The echo lists the tools as given, built-ins included.
  EXPECT_EQ(r.echo.at("tools").as_array().size(), 6u);
  EXPECT_FALSE(r.chat.tool_choice);
}

TEST(ResponsesDecode, ToolErrors) {
  ExpectRejected(Body(R"("tools":{})"), "tools");
  ExpectRejected(Body(R"("tools":[1])"), "tools[0]");
  ExpectRejected(Body(R"("tools":[{"name":"f"}])"), "tools[0].type");
  ExpectRejected(Body(R"("tools":[{"type":"function","name":"f"},{"type":"function","name":"bad name"}])"),
                 "tools[1].name");
  ExpectRejected(Body(R"("tools":[{"type":"function"}])"), "tools[0].name");
  ExpectRejected(Body(R"("tools":[{"type":"function","name":"f"},{"type":"function","name":"f"}])"),
                 "tools[1].name");
  ExpectRejected(Body(R"("tools":[{"type":"function","name":"f","parameters":"x"}])"), "tools[0].parameters");
  ExpectRejected(Body(R"("tools":[{"type":"function","name":"f","description":1}])"), "tools[0].description");
  ExpectRejected(Body(R"("tools":[{"type":"function","name":"f","strict":"yes"}])"), "tools[0].strict");
}

TEST(ResponsesDecode, EveryToolChoiceForm) {
  const std::string tools(kTools);
  auto choice = [&](std::string_view tc) { return Decode(Body(tools + R"(,"tool_choice":)" + std::string(tc))); };
  EXPECT_EQ(choice(R"("auto")").chat.tool_choice->mode, ToolChoice::Mode::kAuto);
  EXPECT_EQ(choice(R"("none")").chat.tool_choice->mode, ToolChoice::Mode::kNone);
  EXPECT_EQ(choice(R"("required")").chat.tool_choice->mode, ToolChoice::Mode::kRequired);
  const Request f = choice(R"({"type":"function","name":"get_time"})");
  EXPECT_EQ(f.chat.tool_choice->mode, ToolChoice::Mode::kFunction);
  EXPECT_EQ(f.chat.tool_choice->function_name, "get_time");
  EXPECT_EQ(json::serialize(f.echo.at("tool_choice")), R"({"type":"function","name":"get_time"})");

  // allowed_tools narrows the functions the model sees.
  const Request a = choice(
      R"({"type":"allowed_tools","mode":"auto","tools":[{"type":"function","name":"get_time"},{"type":"web_search_preview"}]})");
  EXPECT_EQ(a.chat.tool_choice->mode, ToolChoice::Mode::kAuto);
  ASSERT_EQ(a.chat.tools.size(), 1u);
  EXPECT_EQ(a.chat.tools[0].name, "get_time");
  const Request q = choice(R"({"type":"allowed_tools","mode":"required","tools":[{"type":"function","name":"get_weather"}]})");
  EXPECT_EQ(q.chat.tool_choice->mode, ToolChoice::Mode::kRequired);
  ASSERT_EQ(q.chat.tools.size(), 1u);
  EXPECT_EQ(q.chat.tools[0].name, "get_weather");
  // Only built-ins allowed, mode auto: the model gets no tools.
  const Request b = choice(R"({"type":"allowed_tools","mode":"auto","tools":[{"type":"file_search"}]})");
  EXPECT_TRUE(b.chat.tools.empty());
  EXPECT_EQ(b.chat.tool_choice->mode, ToolChoice::Mode::kNone);
}

TEST(ResponsesDecode, ToolChoiceForcingABuiltInIs400NamingIt) {
  const std::string tools(kTools);
  auto rejected = [&](std::string_view tc, std::string_view name, std::string_view param = "tool_choice") {
    ExpectRejected(Body(tools + R"(,"tool_choice":)" + std::string(tc)), param, name);
  };
  rejected(R"({"type":"web_search_preview"})", "'web_search_preview'");
  rejected(R"({"type":"file_search"})", "'file_search'");
  rejected(R"({"type":"computer_use_preview"})", "'computer_use_preview'");
  rejected(R"({"type":"image_generation"})", "'image_generation'");
  rejected(R"({"type":"code_interpreter"})", "'code_interpreter'");
  rejected(R"({"type":"mcp","server_label":"deepwiki"})", "'deepwiki'");
  rejected(R"({"type":"custom","name":"apply_patch"})", "'apply_patch'");
  rejected(R"({"type":"allowed_tools","mode":"required","tools":[{"type":"web_search_preview"}]})",
           "'web_search_preview'");
  // "required" with nothing but built-ins declared forces one of them.
  ExpectRejected(Body(R"("tools":[{"type":"web_search"}],"tool_choice":"required")"), "tool_choice", "'web_search'");
  // A declared built-in is fine when nothing forces it.
  Decode(Body(R"("tools":[{"type":"web_search"}],"tool_choice":"auto")"));
}

TEST(ResponsesDecode, ToolChoiceErrors) {
  const std::string tools(kTools);
  ExpectRejected(Body(tools + R"(,"tool_choice":"any")"), "tool_choice");
  ExpectRejected(Body(tools + R"(,"tool_choice":3)"), "tool_choice");
  ExpectRejected(Body(tools + R"(,"tool_choice":{})"), "tool_choice.type");
  ExpectRejected(Body(tools + R"(,"tool_choice":{"type":"function"})"), "tool_choice.name");
  ExpectRejected(Body(tools + R"(,"tool_choice":{"type":"function","name":"nope"})"), "tool_choice.name", "nope");
  ExpectRejected(Body(tools + R"(,"tool_choice":{"type":"allowed_tools","mode":"sometimes","tools":[]})"),
                 "tool_choice.mode");
  ExpectRejected(Body(tools + R"(,"tool_choice":{"type":"allowed_tools","mode":"auto"})"), "tool_choice.tools");
  ExpectRejected(Body(tools + R"(,"tool_choice":{"type":"allowed_tools","mode":"auto","tools":[1]})"),
                 "tool_choice.tools[0]");
  ExpectRejected(Body(tools + R"(,"tool_choice":{"type":"allowed_tools","mode":"auto","tools":[{"type":"function","name":"x"}]})"),
                 "tool_choice.tools[0].name");
  ExpectRejected(Body(tools + R"(,"tool_choice":{"type":"allowed_tools","mode":"required","tools":[]})"),
                 "tool_choice.tools");
  ExpectRejected(Body(R"("tool_choice":"required")"), "tool_choice");
}

// ---------------------------------------------------------------- text.format, reasoning, include

TEST(ResponsesDecode, TextFormatAllThree) {
  const Request t = Decode(Body(R"("text":{"format":{"type":"text"}})"));
  EXPECT_EQ(t.chat.response_format->type, ResponseFormat::Type::kText);
  const Request o = Decode(Body(R"("text":{"format":{"type":"json_object"}})"));
  EXPECT_EQ(o.chat.response_format->type, ResponseFormat::Type::kJsonObject);
  const Request s = Decode(Body(
      R"("text":{"format":{"type":"json_schema","name":"person","description":"A person","strict":true,)"
      R"("schema":{"type":"object","properties":{"name":{"type":"string"}},"required":["name"]}},"verbosity":"low"})"));
  ASSERT_TRUE(s.chat.response_format);
  EXPECT_EQ(s.chat.response_format->type, ResponseFormat::Type::kJsonSchema);
  EXPECT_EQ(s.chat.response_format->name, "person");
  EXPECT_EQ(s.chat.response_format->description, "A person");
  EXPECT_EQ(s.chat.response_format->strict, true);
  EXPECT_EQ(S(s.chat.response_format->schema.at("type")), "object");
  // The echo repeats text as given.
  EXPECT_EQ(S(s.echo.at("text").at("format").at("name")), "person");
  EXPECT_EQ(S(s.echo.at("text").at("verbosity")), "low");
  // text without a format: format text in the echo, none in the request.
  const Request v = Decode(Body(R"("text":{"verbosity":"high"})"));
  EXPECT_FALSE(v.chat.response_format);
  EXPECT_EQ(json::serialize(v.echo.at("text")), R"({"format":{"type":"text"},"verbosity":"high"})");

  ExpectRejected(Body(R"("text":"json")"), "text");
  ExpectRejected(Body(R"("text":{"format":"json"})"), "text.format");
  ExpectRejected(Body(R"("text":{"format":{"type":"xml"}})"), "text.format.type");
  ExpectRejected(Body(R"("text":{"format":{"type":"json_schema","schema":{}}})"), "text.format.name");
  ExpectRejected(Body(R"("text":{"format":{"type":"json_schema","name":"a b","schema":{}}})"), "text.format.name");
  ExpectRejected(Body(R"("text":{"format":{"type":"json_schema","name":"p"}})"), "text.format.schema");
  ExpectRejected(Body(R"("text":{"format":{"type":"json_schema","name":"p","schema":{},"strict":1}})"),
                 "text.format.strict");
  ExpectRejected(Body(R"("text":{"format":{"type":"json_schema","name":"p","schema":{},"description":1}})"),
                 "text.format.description");
}

TEST(ResponsesDecode, PromptCacheKeyIsTheSessionAndIsEchoed) {
  const Request r = Decode(Body(R"("prompt_cache_key":"conv-1")"));
  EXPECT_EQ(r.chat.session_id, "conv-1");
  EXPECT_EQ(r.echo.at("prompt_cache_key"), "conv-1");
  EXPECT_FALSE(Decode(Body("")).echo.contains("prompt_cache_key"));
}

TEST(ResponsesDecode, ReasoningEffortAndSummary) {
  const Request r = Decode(Body(R"("reasoning":{"effort":"high","summary":"auto"})"));
  ASSERT_TRUE(r.chat.reasoning);
  EXPECT_EQ(r.chat.reasoning->effort, "high");
  EXPECT_TRUE(r.chat.reasoning->Requested());
  EXPECT_EQ(r.reasoning_summary, "auto");
  EXPECT_EQ(json::serialize(r.echo.at("reasoning")), R"({"effort":"high","summary":"auto"})");
  // max is the most there is.
  EXPECT_EQ(Decode(Body(R"("reasoning":{"effort":"max"})")).chat.reasoning->effort, "xhigh");
  EXPECT_EQ(Decode(Body(R"("reasoning":{"effort":"none"})")).chat.reasoning->effort, "none");
  // A summary alone asks for no reasoning setting; generate_summary is its old name.
  const Request s = Decode(Body(R"("reasoning":{"generate_summary":"concise"})"));
  EXPECT_FALSE(s.chat.reasoning);
  EXPECT_EQ(s.reasoning_summary, "concise");
  EXPECT_EQ(s.chat.reasoning_summary, "concise");  // for an OpenAI Responses upstream
  EXPECT_EQ(json::serialize(s.echo.at("reasoning")), R"({"effort":null,"summary":"concise"})");
  const Request n = Decode(Body(R"("reasoning":{"effort":null,"summary":null})"));
  EXPECT_FALSE(n.chat.reasoning);
  EXPECT_TRUE(n.reasoning_summary.empty());

  ExpectRejected(Body(R"("reasoning":"high")"), "reasoning");
  ExpectRejected(Body(R"("reasoning":{"effort":"extreme"})"), "reasoning.effort");
  ExpectRejected(Body(R"("reasoning":{"effort":1})"), "reasoning.effort");
  ExpectRejected(Body(R"("reasoning":{"summary":"long"})"), "reasoning.summary");
  ExpectRejected(Body(R"("reasoning":{"generate_summary":"long"})"), "reasoning.generate_summary");
}

TEST(ResponsesDecode, Include) {
  EXPECT_TRUE(Decode(Body(R"("include":["message.output_text.logprobs","reasoning.encrypted_content"])"))
                  .include_encrypted_reasoning);
  EXPECT_FALSE(Decode(Body(R"("include":["file_search_call.results"])")).include_encrypted_reasoning);
  EXPECT_FALSE(Decode(Body(R"("include":[])")).include_encrypted_reasoning);
  ExpectRejected(Body(R"("include":"reasoning.encrypted_content")"), "include");
  ExpectRejected(Body(R"("include":["reasoning.encrypted_content",3])"), "include[1]");
}

// ---------------------------------------------------------------- DecodeItems and PrependContext

TEST(ResponsesItems, DecodeItemsAppendsAndPrefixesParams) {
  std::vector<Message> out(1);
  const json::array items = json::parse(R"([{"role":"user","content":"x"}])").as_array();
  EXPECT_FALSE(DecodeItems(items, "context", out));
  EXPECT_EQ(out.size(), 2u);
  const json::array bad = json::parse(R"([{"role":"user","content":"x"},{"type":"nope"}])").as_array();
  std::optional<Error> e = DecodeItems(bad, "context", out);
  ASSERT_TRUE(e);
  EXPECT_EQ(e->param, "context[1].type");
  EXPECT_EQ(e->code, ErrorCode::kInvalidArgument);
}

TEST(ResponsesDecode, TopLogprobsReachesTheChatRequest) {
  const Request zero = Decode(Body(R"("top_logprobs":0)"));
  EXPECT_EQ(zero.chat.top_logprobs, 0);
  EXPECT_FALSE(zero.chat.logprobs);
  EXPECT_EQ(zero.echo.at("top_logprobs").as_int64(), 0);
  const Request most = Decode(Body(R"("top_logprobs":20)"));
  EXPECT_EQ(most.chat.top_logprobs, 20);
  const Request absent = Decode(Body(""));
  EXPECT_FALSE(absent.chat.top_logprobs.has_value());
  EXPECT_FALSE(absent.echo.contains("top_logprobs"));
  const Request null = Decode(Body(R"("top_logprobs":null)"));
  EXPECT_FALSE(null.chat.top_logprobs.has_value());
  ExpectRejected(Body(R"("top_logprobs":-1)"), "top_logprobs");
}

// A Gemini thought signature rides on a reasoning item of its own (format
// google-gemini-v1, id = the call id); DecodeItems puts it back on the call
// whether the carrier comes before the call (a signature on the call's first
// fragment) or after it (a signature that came late).
TEST(ResponsesItems, GeminiSignatureCarrierBeforeOrAfterItsCall) {
  const std::string sealed_a =
      SealReasoning({Part(kEncrypted, "", "", "sig-a", "google-gemini-v1", "call_a")});
  const std::string sealed_b =
      SealReasoning({Part(kEncrypted, "", "", "sig-b", "google-gemini-v1", "call_b")});
  auto carrier = [](std::string_view id, const std::string& sealed) {
    return json::value(json::object{
        {"type", "reasoning"}, {"id", id}, {"summary", json::array{}}, {"encrypted_content", sealed}});
  };
  auto call = [](std::string_view call_id) {
    return json::value(json::object{{"type", "function_call"}, {"id", std::string("fc_") + std::string(call_id)},
                                    {"call_id", call_id}, {"name", "f"}, {"arguments", "{}"},
                                    {"status", "completed"}});
  };
  // call_a's carrier before it, call_b's after it.
  for (const json::array& items : {json::array{carrier("rs_1", sealed_a), call("call_a"), call("call_b"),
                                               carrier("rs_2", sealed_b)},
                                   json::array{call("call_b"), carrier("rs_2", sealed_b), carrier("rs_1", sealed_a),
                                               call("call_a")}}) {
    std::vector<Message> back;
    ASSERT_FALSE(DecodeItems(items, "input", back)) << json::serialize(items);
    ASSERT_EQ(back.size(), 1u);
    ASSERT_EQ(back[0].parts.size(), 2u) << json::serialize(items);  // no stray reasoning part
    for (std::size_t i = 0; i < 2; ++i) {
      const ToolCallPart& c = CallOf(back[0], i);
      EXPECT_EQ(c.thought_signature, c.id == "call_a" ? "sig-a" : "sig-b") << c.id;
    }
  }
  // A carrier without its call stays a reasoning part.
  std::vector<Message> alone;
  ASSERT_FALSE(DecodeItems(json::array{carrier("rs_1", sealed_a), call("call_b")}, "input", alone));
  ASSERT_EQ(alone[0].parts.size(), 2u);
  EXPECT_EQ(ReasoningOf(alone[0], 0).data, "sig-a");
  EXPECT_EQ(CallOf(alone[0], 1).thought_signature, "");
}

TEST(ResponsesItems, PrependContextGoesAfterInstructionsBeforeInput) {
  Request r = Decode(R"({"model":"m","instructions":"new rules","previous_response_id":"resp_1",
    "input":[{"type":"function_call_output","call_id":"call_7","output":"42"}]})");
  const json::array prior = json::parse(R"([
    {"type":"message","role":"user","content":[{"type":"input_text","text":"what is 6*7?"}]},
    {"type":"reasoning","id":"rs_1","summary":[{"type":"summary_text","text":"multiply"}],"encrypted_content":"gAAA"},
    {"type":"function_call","id":"fc_1","call_id":"call_7","name":"calc","arguments":"{}","status":"completed"}
  ])").as_array();
  ASSERT_FALSE(PrependContext(r, prior));
  const auto& m = r.chat.messages;
  ASSERT_EQ(m.size(), 4u);
  EXPECT_EQ(m[0].role, Role::kSystem);
  EXPECT_EQ(TextOf(m[0], 0).text, "new rules");
  EXPECT_EQ(m[1].role, Role::kUser);
  EXPECT_EQ(m[2].role, Role::kAssistant);
  ASSERT_EQ(m[2].parts.size(), 3u);
  EXPECT_EQ(ReasoningOf(m[2], 1).data, "gAAA");
  EXPECT_EQ(CallOf(m[2], 2).id, "call_7");
  EXPECT_EQ(m[3].role, Role::kTool);
  EXPECT_EQ(ResultOf(m[3], 0).tool_call_id, "call_7");
  EXPECT_EQ(ResultOf(m[3], 0).name, "calc");  // found in the prior context

  // Errors in a stored context name previous_response_id.
  Request bad = Decode(Body(""));
  std::optional<Error> e = PrependContext(bad, json::parse(R"([{"type":"zzz"}])").as_array());
  ASSERT_TRUE(e);
  EXPECT_EQ(e->param, "previous_response_id[0].type");
}

TEST(ResponsesItems, PriorAssistantItemsAndNewAssistantItemsAreOneTurn) {
  Request r = Decode(R"({"model":"m","previous_response_id":"resp_1","input":[
      {"type":"function_call","call_id":"c2","name":"g","arguments":"{}"},
      {"type":"function_call_output","call_id":"c1","output":"1"},
      {"type":"function_call_output","call_id":"c2","output":"2"}]})");
  ASSERT_FALSE(PrependContext(r, json::parse(R"([{"role":"user","content":"q"},
      {"type":"function_call","call_id":"c1","name":"f","arguments":"{}"}])").as_array()));
  ASSERT_EQ(r.chat.messages.size(), 4u);
  EXPECT_EQ(r.chat.messages[1].parts.size(), 2u);
}

// ---------------------------------------------------------------- Seal / Unseal, ids, usage

TEST(ResponsesSeal, RoundTripsEveryField) {
  const std::vector<ReasoningPart> parts = {
      Part(kText, "I think \"quoted\" é 😀\n", "sig+/==", "", "anthropic-claude-v1", ""),
      Part(kEncrypted, "", "", "redacted-data", "anthropic-claude-v1", "blk_1"),
      Part(kSummary, "sum", "", "", "", "x"),
  };
  const std::string sealed = SealReasoning(parts);
  ASSERT_TRUE(sealed.starts_with("tollgate.v1."));
  for (char c : sealed.substr(12)) {
    EXPECT_TRUE(std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_') << "not base64url: " << c;
  }
  const auto back = UnsealReasoning(sealed);
  ASSERT_TRUE(back);
  ASSERT_EQ(back->size(), 3u);
  for (std::size_t i = 0; i < 3; ++i) {
    EXPECT_EQ((*back)[i].kind, parts[i].kind);
    EXPECT_EQ((*back)[i].text, parts[i].text);
    EXPECT_EQ((*back)[i].signature, parts[i].signature);
    EXPECT_EQ((*back)[i].data, parts[i].data);
    EXPECT_EQ((*back)[i].format, parts[i].format);
    EXPECT_EQ((*back)[i].id, parts[i].id);
  }
  // Every length modulo 3 round-trips.
  for (std::string text : {"", "a", "ab", "abc", "abcd"}) {
    const auto one = UnsealReasoning(SealReasoning({Part(kText, text, "", "", "", "")}));
    ASSERT_TRUE(one);
    EXPECT_EQ(one->at(0).text, text);
  }
  EXPECT_TRUE(UnsealReasoning(SealReasoning({}))->empty());
}

TEST(ResponsesSeal, UnsealRejectsWhatItDidNotMake) {
  EXPECT_FALSE(UnsealReasoning("gAAAAABo-openai-encrypted"));
  EXPECT_FALSE(UnsealReasoning(""));
  EXPECT_FALSE(UnsealReasoning("tollgate.v1."));           // empty is not JSON
  EXPECT_FALSE(UnsealReasoning("tollgate.v1.!!!"));        // not base64url
  EXPECT_FALSE(UnsealReasoning("tollgate.v1.e30="));       // padding is not ours
  EXPECT_FALSE(UnsealReasoning("tollgate.v1.e30"));        // {} is not an array
  EXPECT_FALSE(UnsealReasoning("tollgate.v1.WzFd"));       // [1]
  EXPECT_FALSE(UnsealReasoning("tollgate.v1.W3sia2luZCI6InNvbWV0aGluZyJ9XQ"));  // [{"kind":"something"}]
  EXPECT_FALSE(UnsealReasoning("tollgate.v1.W3sia2luZCI6InRleHQiLCJ0ZXh0IjoxfV0"));  // text: 1
  EXPECT_TRUE(UnsealReasoning("tollgate.v1.W3sia2luZCI6InRleHQifV0"));  // [{"kind":"text"}]
}

TEST(ResponsesIds, NewResponseId) {
  const std::string a = NewResponseId(), b = NewResponseId();
  EXPECT_TRUE(a.starts_with("resp_"));
  EXPECT_EQ(a.size(), 5u + 32u);
  EXPECT_TRUE(IsBase62(a.substr(5)));
  EXPECT_NE(a, b);
}

TEST(ResponsesUsage, UsageObject) {
  const json::object u = UsageObject(Usage{120, 482, 100, 448, 10}, Money{2'500'000}, true);
  EXPECT_EQ(json::serialize(u),
            R"({"input_tokens":120,"input_tokens_details":{"cached_tokens":100,"cache_write_tokens":10},)"
            R"("output_tokens":482,"output_tokens_details":{"reasoning_tokens":448},"total_tokens":602,)"
            R"("cost":2.5E-3,"is_byok":true})");
}

// ================================================================ StreamEncoder

TEST(ResponsesStream, TextOnlyExactEventOrder) {
  StreamEncoder enc(Meta(), ResponseOptions{});
  EXPECT_FALSE(enc.started());
  std::string sse = enc.Encode(TextDelta{0, "Hel"});
  EXPECT_TRUE(enc.started());
  sse += EncodeAll(enc, {TextDelta{0, "lo"}, TextDelta{0, ""}, FinishDelta{0, FinishReason::kStop, "stop", ""},
                   UsageDelta{Usage{5, 2}}});
  sse += enc.Finish(Usage{5, 2, 1, 0, 0}, Money{1500}, false);
  const Stream s = CheckStream(sse);
  EXPECT_EQ(Names(s.events),
            (std::vector<std::string>{"response.created", "response.in_progress", "response.output_item.added",
                                      "response.content_part.added", "response.output_text.delta",
                                      "response.output_text.delta", "response.output_text.done",
                                      "response.content_part.done", "response.output_item.done",
                                      "response.completed"}));
  // The opening events: an in-progress response with no output.
  const json::object& created = s.events[0].data.at("response").as_object();
  EXPECT_EQ(S(created.at("status")), "in_progress");
  EXPECT_TRUE(created.at("output").as_array().empty());
  EXPECT_TRUE(created.at("usage").is_null());
  // Item and text events.
  const json::object& added = s.events[2].data.at("item").as_object();
  const std::string id = S(added.at("id"));
  EXPECT_TRUE(id.starts_with("msg_"));
  EXPECT_EQ(id.size(), 4u + 32u);
  EXPECT_TRUE(IsBase62(id.substr(4)));
  EXPECT_EQ(S(added.at("status")), "in_progress");
  EXPECT_TRUE(added.at("content").as_array().empty());
  EXPECT_EQ(s.events[2].data.at("output_index").as_int64(), 0);
  EXPECT_EQ(S(s.events[4].data.at("delta")), "Hel");
  EXPECT_EQ(S(s.events[4].data.at("item_id")), id);
  EXPECT_EQ(s.events[4].data.at("content_index").as_int64(), 0);
  EXPECT_EQ(S(s.events[6].data.at("text")), "Hello");
  EXPECT_EQ(S(s.events[7].data.at("part").at("text")), "Hello");
  const json::object& done = s.events[8].data.at("item").as_object();
  EXPECT_EQ(S(done.at("status")), "completed");
  EXPECT_EQ(json::serialize(done.at("content")),
            R"([{"type":"output_text","annotations":[],"logprobs":[],"text":"Hello"}])");
  // The final response.
  const json::object& r = s.final_response;
  EXPECT_EQ(S(r.at("status")), "completed");
  EXPECT_EQ(S(r.at("output_text")), "Hello");
  EXPECT_EQ(r.at("usage").at("input_tokens").as_int64(), 5);
  EXPECT_EQ(r.at("usage").at("input_tokens_details").at("cached_tokens").as_int64(), 1);
  EXPECT_EQ(r.at("usage").at("output_tokens").as_int64(), 2);
  EXPECT_EQ(r.at("usage").at("total_tokens").as_int64(), 7);
  EXPECT_DOUBLE_EQ(r.at("usage").at("cost").as_double(), 0.0000015);
  // The result is what was sent.
  EXPECT_EQ(json::serialize(enc.result().client), json::serialize(r));
  ASSERT_EQ(enc.result().stored_output.size(), 1u);
  EXPECT_EQ(json::serialize(enc.result().stored_output), json::serialize(r.at("output")));
  // Nothing after the end.
  EXPECT_EQ(enc.Encode(TextDelta{0, "more"}), "");
  EXPECT_EQ(enc.Finish(Usage{}, Money{}, false), "");
  EXPECT_EQ(enc.Fail(Error{ErrorCode::kInternal, "late", {}, {}}), "");
}

TEST(ResponsesStream, ReasoningSummaryThenTextExactOrder) {
  for (bool include : {false, true}) {
    SCOPED_TRACE(include ? "include encrypted" : "no include");
    ResponseOptions options;
    options.include_encrypted_reasoning = include;
    StreamEncoder enc(Meta(), options);
    const std::string fmt = "openai-responses-v1";
    std::string sse = EncodeAll(enc, {RD(0, kSummary, "Think", fmt, "rs_abc"), RD(0, kSummary, " more"),
                                RD(1, kSummary, "Second", fmt, "rs_abc"),
                                RD(2, kEncrypted, "", fmt, "rs_abc", "", "gAAAAenc"), TextDelta{0, "Answer"},
                                FinishDelta{0, FinishReason::kStop, "", ""}});
    sse += enc.Finish(Usage{10, 20, 0, 15, 0}, Money{0}, false);
    const Stream s = CheckStream(sse);
    EXPECT_EQ(Names(s.events),
              (std::vector<std::string>{
                  "response.created", "response.in_progress", "response.output_item.added",
                  "response.reasoning_summary_part.added", "response.reasoning_summary_text.delta",
                  "response.reasoning_summary_text.delta", "response.reasoning_summary_text.done",
                  "response.reasoning_summary_part.done", "response.reasoning_summary_part.added",
                  "response.reasoning_summary_text.delta", "response.reasoning_summary_text.done",
                  "response.reasoning_summary_part.done", "response.output_item.done",
                  "response.output_item.added", "response.content_part.added", "response.output_text.delta",
                  "response.output_text.done", "response.content_part.done", "response.output_item.done",
                  "response.completed"}));
    // The reasoning item keeps OpenAI's id.
    EXPECT_EQ(S(s.events[2].data.at("item").at("id")), "rs_abc");
    EXPECT_EQ(json::serialize(s.events[2].data.at("item")),
              R"({"id":"rs_abc","type":"reasoning","summary":[],"status":"in_progress"})");
    EXPECT_EQ(s.events[3].data.at("summary_index").as_int64(), 0);
    EXPECT_EQ(s.events[8].data.at("summary_index").as_int64(), 1);
    EXPECT_EQ(S(s.events[6].data.at("text")), "Think more");
    const json::object& item = s.events[12].data.at("item").as_object();
    EXPECT_EQ(json::serialize(item.at("summary")),
              R"([{"type":"summary_text","text":"Think more"},{"type":"summary_text","text":"Second"}])");
    EXPECT_FALSE(item.contains("content"));
    if (include) {
      EXPECT_EQ(S(item.at("encrypted_content")), "gAAAAenc");  // OpenAI's own, untouched
    } else {
      EXPECT_FALSE(item.contains("encrypted_content"));
    }
    EXPECT_EQ(s.events[13].data.at("output_index").as_int64(), 1);
    EXPECT_EQ(S(s.final_response.at("output_text")), "Answer");
    EXPECT_EQ(s.final_response.at("usage").at("output_tokens_details").at("reasoning_tokens").as_int64(), 15);
    // The stored view always has the encrypted content.
    EXPECT_EQ(S(enc.result().stored_output.at(0).at("encrypted_content")), "gAAAAenc");
    // And decodes back into the same parts.
    std::vector<Message> back;
    ASSERT_FALSE(DecodeItems(enc.result().stored_output, "output", back));
    ASSERT_EQ(back.size(), 1u);
    ASSERT_EQ(back[0].parts.size(), 4u);
    EXPECT_EQ(ReasoningOf(back[0], 0).text, "Think more");
    EXPECT_EQ(ReasoningOf(back[0], 1).text, "Second");
    EXPECT_EQ(ReasoningOf(back[0], 2).data, "gAAAAenc");
    EXPECT_EQ(ReasoningOf(back[0], 2).id, "rs_abc");
    EXPECT_EQ(TextOf(back[0], 3).text, "Answer");
  }
}

TEST(ResponsesStream, AnthropicThinkingSealedOnlyWhenIncluded) {
  for (bool include : {false, true}) {
    SCOPED_TRACE(include ? "include encrypted" : "no include");
    ResponseOptions options;
    options.include_encrypted_reasoning = include;
    StreamEncoder enc(Meta(), options);
    const std::string fmt = "anthropic-claude-v1";
    std::string sse = EncodeAll(enc, {RD(0, kText, "Let me", fmt), RD(0, kText, " think"), RD(0, kText, "", "", "", "EqSig=="),
                                RD(1, kEncrypted, "", fmt, "", "", "redacted=="), TextDelta{0, "Hi"},
                                FinishDelta{0, FinishReason::kStop, "end_turn", ""}});
    sse += enc.Finish(Usage{3, 4}, Money{0}, false);
    const Stream s = CheckStream(sse);
    EXPECT_EQ(Names(s.events),
              (std::vector<std::string>{"response.created", "response.in_progress", "response.output_item.added",
                                        "response.content_part.added", "response.reasoning_text.delta",
                                        "response.reasoning_text.delta", "response.reasoning_text.done",
                                        "response.content_part.done", "response.output_item.done",
                                        "response.output_item.added", "response.content_part.added",
                                        "response.output_text.delta", "response.output_text.done",
                                        "response.content_part.done", "response.output_item.done",
                                        "response.completed"}));
    EXPECT_TRUE(S(s.events[2].data.at("item").at("id")).starts_with("rs_"));
    EXPECT_EQ(json::serialize(s.events[3].data.at("part")), R"({"type":"reasoning_text","text":""})");
    EXPECT_EQ(S(s.events[6].data.at("text")), "Let me think");
    const json::object& item = s.events[8].data.at("item").as_object();
    EXPECT_EQ(json::serialize(item.at("content")), R"([{"type":"reasoning_text","text":"Let me think"}])");
    EXPECT_TRUE(item.at("summary").as_array().empty());
    EXPECT_EQ(item.contains("encrypted_content"), include);

    // The stored view is sealed either way; the client view only when included.
    const std::string stored = S(enc.result().stored_output.at(0).at("encrypted_content"));
    EXPECT_TRUE(stored.starts_with("tollgate.v1."));
    if (include) {
      EXPECT_EQ(S(item.at("encrypted_content")), stored);
    }

    // DecodeItems unseals: the signed thinking and the redacted block again.
    for (const bool stored_view : {true, false}) {
      const json::array& items = stored_view ? enc.result().stored_output : s.final_response.at("output").as_array();
      std::vector<Message> back;
      ASSERT_FALSE(DecodeItems(items, "input", back));
      ASSERT_EQ(back.size(), 1u);
      const Message& m = back[0];
      if (stored_view || include) {
        ASSERT_EQ(m.parts.size(), 3u);
        const ReasoningPart& thinking = ReasoningOf(m, 0);
        EXPECT_EQ(thinking.kind, kText);
        EXPECT_EQ(thinking.text, "Let me think");
        EXPECT_EQ(thinking.signature, "EqSig==");
        EXPECT_EQ(thinking.format, "anthropic-claude-v1");
        EXPECT_EQ(ReasoningOf(m, 1).kind, kEncrypted);
        EXPECT_EQ(ReasoningOf(m, 1).data, "redacted==");
        EXPECT_EQ(TextOf(m, 2).text, "Hi");
      } else {
        // Without the sealed content only the visible text comes back.
        ASSERT_EQ(m.parts.size(), 2u);
        EXPECT_EQ(ReasoningOf(m, 0).text, "Let me think");
        EXPECT_EQ(ReasoningOf(m, 0).signature, "");
        EXPECT_EQ(TextOf(m, 1).text, "Hi");
      }
    }
  }
}

TEST(ResponsesStream, OtherProvidersThinkingIsASummaryWhenSummariesAreAsked) {
  ResponseOptions options;
  options.include_encrypted_reasoning = true;
  options.reasoning_text_as_summary = true;
  StreamEncoder enc(Meta(), options);
  const std::string fmt = "anthropic-claude-v1";
  std::string sse = EncodeAll(enc, {RD(0, kText, "Let me", fmt), RD(0, kText, " think"), RD(0, kText, "", "", "", "EqSig=="),
                                    TextDelta{0, "Hi"}, FinishDelta{0, FinishReason::kStop, "end_turn", ""}});
  sse += enc.Finish(Usage{3, 4}, Money{0}, false);
  const Stream s = CheckStream(sse);
  EXPECT_EQ(Names(s.events),
            (std::vector<std::string>{"response.created", "response.in_progress", "response.output_item.added",
                                      "response.reasoning_summary_part.added", "response.reasoning_summary_text.delta",
                                      "response.reasoning_summary_text.delta", "response.reasoning_summary_text.done",
                                      "response.reasoning_summary_part.done", "response.output_item.done",
                                      "response.output_item.added", "response.content_part.added",
                                      "response.output_text.delta", "response.output_text.done",
                                      "response.content_part.done", "response.output_item.done",
                                      "response.completed"}));
  const json::object& item = s.events[8].data.at("item").as_object();
  EXPECT_EQ(json::serialize(item.at("summary")), R"([{"type":"summary_text","text":"Let me think"}])");
  EXPECT_FALSE(item.contains("content"));
  // The seal keeps the thinking as it was: Anthropic gets its signed block again.
  std::vector<Message> back;
  ASSERT_FALSE(DecodeItems(s.final_response.at("output").as_array(), "input", back));
  ASSERT_EQ(back.size(), 1u);
  const ReasoningPart& thinking = ReasoningOf(back[0], 0);
  EXPECT_EQ(thinking.kind, kText);
  EXPECT_EQ(thinking.text, "Let me think");
  EXPECT_EQ(thinking.signature, "EqSig==");
  EXPECT_EQ(thinking.format, fmt);

  // OpenAI's own reasoning text stays content.
  StreamEncoder openai(Meta(), options);
  std::string sse2 = EncodeAll(openai, {RD(0, kText, "raw", "openai-responses-v1", "rs_1"),
                                        FinishDelta{0, FinishReason::kStop, "completed", ""}});
  sse2 += openai.Finish(Usage{3, 4}, Money{0}, false);
  const Stream s2 = CheckStream(sse2);
  EXPECT_EQ(json::serialize(s2.final_response.at("output").at(0).at("content")),
            R"([{"type":"reasoning_text","text":"raw"}])");
}

TEST(ResponsesStream, TwoToolCallsInParallel) {
  StreamEncoder enc(Meta(), ResponseOptions{});
  std::string sse = EncodeAll(enc, {TextDelta{0, "Checking."}, TC(0, "call_1", "get_weather", ""), TC(0, "", "", "{\"city\":"),
                              TC(1, "call_2", "get_time", ""), TC(0, "", "", "\"Paris\"}"), TC(1, "", "", "{}"),
                              FinishDelta{0, FinishReason::kToolCalls, "tool_calls", ""}});
  sse += enc.Finish(Usage{1, 1}, Money{0}, false);
  const Stream s = CheckStream(sse);
  EXPECT_EQ(Names(s.events),
            (std::vector<std::string>{
                "response.created", "response.in_progress", "response.output_item.added",
                "response.content_part.added", "response.output_text.delta", "response.output_text.done",
                "response.content_part.done", "response.output_item.done", "response.output_item.added",
                "response.function_call_arguments.delta", "response.output_item.added",
                "response.function_call_arguments.delta", "response.function_call_arguments.delta",
                "response.function_call_arguments.done", "response.output_item.done",
                "response.function_call_arguments.done", "response.output_item.done", "response.completed"}));
  const json::object& first = s.events[8].data.at("item").as_object();
  EXPECT_EQ(S(first.at("call_id")), "call_1");
  EXPECT_EQ(S(first.at("name")), "get_weather");
  EXPECT_EQ(S(first.at("arguments")), "");
  EXPECT_EQ(S(first.at("status")), "in_progress");
  EXPECT_EQ(s.events[8].data.at("output_index").as_int64(), 1);
  EXPECT_EQ(s.events[10].data.at("output_index").as_int64(), 2);
  // The late fragment of the first call goes to its item.
  EXPECT_EQ(s.events[11].data.at("output_index").as_int64(), 1);
  EXPECT_EQ(S(s.events[11].data.at("item_id")), S(first.at("id")));
  EXPECT_EQ(S(s.events[13].data.at("arguments")), R"({"city":"Paris"})");
  EXPECT_EQ(S(s.events[13].data.at("name")), "get_weather");
  EXPECT_EQ(S(s.events[15].data.at("arguments")), "{}");
  const json::array& output = s.final_response.at("output").as_array();
  ASSERT_EQ(output.size(), 3u);
  EXPECT_EQ(S(output[1].at("arguments")), R"({"city":"Paris"})");
  EXPECT_EQ(S(output[2].at("call_id")), "call_2");
  EXPECT_EQ(S(output[2].at("status")), "completed");
  EXPECT_EQ(S(s.final_response.at("output_text")), "Checking.");

  // Round trip: the same assistant turn.
  std::vector<Message> back;
  ASSERT_FALSE(DecodeItems(enc.result().stored_output, "input", back));
  ASSERT_EQ(back.size(), 1u);
  ASSERT_EQ(back[0].parts.size(), 3u);
  EXPECT_EQ(TextOf(back[0], 0).text, "Checking.");
  EXPECT_EQ(CallOf(back[0], 1).id, "call_1");
  EXPECT_EQ(CallOf(back[0], 1).arguments, R"({"city":"Paris"})");
  EXPECT_EQ(CallOf(back[0], 2).id, "call_2");
  EXPECT_EQ(CallOf(back[0], 2).name, "get_time");
}

TEST(ResponsesStream, CallWithoutIdOrArgumentsGetsThem) {
  StreamEncoder enc(Meta(), ResponseOptions{});
  std::string sse = EncodeAll(enc, {TC(0, "", "ping", "")});
  sse += enc.Finish(Usage{}, Money{}, false);
  const Stream s = CheckStream(sse);
  const json::object& item = s.final_response.at("output").at(0).as_object();
  EXPECT_TRUE(S(item.at("call_id")).starts_with("call_"));
  EXPECT_EQ(S(item.at("arguments")), "{}");
}

TEST(ResponsesStream, LengthEndsIncompleteWithMaxOutputTokens) {
  StreamEncoder enc(Meta(), ResponseOptions{});
  std::string sse = EncodeAll(enc, {TextDelta{0, "abc"}, FinishDelta{0, FinishReason::kLength, "length", ""}});
  sse += enc.Finish(Usage{2, 16}, Money{0}, false);
  const Stream s = CheckStream(sse);
  EXPECT_EQ(Names(s.events),
            (std::vector<std::string>{"response.created", "response.in_progress", "response.output_item.added",
                                      "response.content_part.added", "response.output_text.delta",
                                      "response.output_text.done", "response.content_part.done",
                                      "response.output_item.done", "response.incomplete"}));
  EXPECT_EQ(S(s.events[7].data.at("item").at("status")), "incomplete");
  EXPECT_EQ(S(s.final_response.at("status")), "incomplete");
  EXPECT_EQ(json::serialize(s.final_response.at("incomplete_details")), R"({"reason":"max_output_tokens"})");
  EXPECT_EQ(S(enc.result().client.at("status")), "incomplete");

  StreamEncoder filtered(Meta(), ResponseOptions{});
  std::string f = EncodeAll(filtered, {TextDelta{0, "x"}, FinishDelta{0, FinishReason::kContentFilter, "", ""}});
  f += filtered.Finish(Usage{}, Money{}, false);
  const Stream fs = CheckStream(f);
  EXPECT_EQ(fs.events.back().name, "response.incomplete");
  EXPECT_EQ(json::serialize(fs.final_response.at("incomplete_details")), R"({"reason":"content_filter"})");
}

TEST(ResponsesStream, FailAfterPartialOutput) {
  StreamEncoder enc(Meta(), ResponseOptions{});
  std::string sse = EncodeAll(enc, {TextDelta{0, "par"}, TC(0, "call_1", "f", "{\"a\"")});
  Error error{ErrorCode::kUnavailable, "upstream went away", {}, {}};
  sse += enc.Fail(error);
  // Nothing after a failure.
  EXPECT_EQ(enc.Encode(TextDelta{0, "tial"}), "");
  EXPECT_EQ(enc.Finish(Usage{1, 1}, Money{0}, false), "");
  EXPECT_EQ(enc.Fail(error), "");
  const Stream s = CheckStream(sse);
  EXPECT_EQ(Names(s.events),
            (std::vector<std::string>{"response.created", "response.in_progress", "response.output_item.added",
                                      "response.content_part.added", "response.output_text.delta",
                                      "response.output_text.done", "response.content_part.done",
                                      "response.output_item.done", "response.output_item.added",
                                      "response.function_call_arguments.delta", "error", "response.failed"}));
  const json::object& err = s.events[10].data;
  EXPECT_EQ(S(err.at("code")), "server_error");
  EXPECT_EQ(S(err.at("message")), "upstream went away");
  EXPECT_TRUE(err.at("param").is_null());
  const json::object& r = s.final_response;
  EXPECT_EQ(S(r.at("status")), "failed");
  EXPECT_EQ(json::serialize(r.at("error")), R"({"code":"server_error","message":"upstream went away"})");
  EXPECT_TRUE(r.at("usage").is_null());
  const json::array& output = r.at("output").as_array();
  ASSERT_EQ(output.size(), 2u);
  EXPECT_EQ(S(output[0].at("status")), "completed");  // closed when the call started
  EXPECT_EQ(S(output[0].at("content").at(0).at("text")), "par");
  EXPECT_EQ(S(output[1].at("status")), "incomplete");  // cut short
  EXPECT_EQ(S(output[1].at("arguments")), "{\"a\"");
  EXPECT_EQ(S(enc.result().client.at("status")), "failed");
}

TEST(ResponsesStream, FailBeforeAnythingOpensFirst) {
  StreamEncoder enc(Meta(), ResponseOptions{});
  Error error{ErrorCode::kResourceExhausted, "slow down", "model", {}};
  const Stream s = CheckStream(enc.Fail(error));
  EXPECT_TRUE(enc.started());
  EXPECT_EQ(Names(s.events),
            (std::vector<std::string>{"response.created", "response.in_progress", "error", "response.failed"}));
  EXPECT_EQ(S(s.events[2].data.at("code")), "rate_limit_exceeded");
  EXPECT_EQ(S(s.events[2].data.at("param")), "model");
  Error coded{ErrorCode::kBadGateway, "bad", {}, "upstream_error"};
  StreamEncoder other(Meta(), ResponseOptions{});
  const Stream o = CheckStream(other.Fail(coded));
  EXPECT_EQ(S(o.events[2].data.at("code")), "upstream_error");
}

TEST(ResponsesStream, FinishWithoutEventsIsAnEmptyCompletedResponse) {
  StreamEncoder enc(Meta(), ResponseOptions{});
  const Stream s = CheckStream(enc.Finish(Usage{3, 0}, Money{0}, false));
  EXPECT_EQ(Names(s.events),
            (std::vector<std::string>{"response.created", "response.in_progress", "response.completed"}));
  EXPECT_TRUE(s.final_response.at("output").as_array().empty());
  EXPECT_EQ(S(s.final_response.at("output_text")), "");
}

TEST(ResponsesStream, ReasoningLeftOutWhenNotIncluded) {
  ResponseOptions options;
  options.include_reasoning = false;
  options.include_encrypted_reasoning = true;
  StreamEncoder enc(Meta(), options);
  std::string sse = EncodeAll(enc, {RD(0, kText, "secret", "anthropic-claude-v1", "", "sig"), TextDelta{0, "ok"}});
  sse += enc.Finish(Usage{}, Money{}, false);
  const Stream s = CheckStream(sse);
  for (const Ev& e : s.events) EXPECT_EQ(e.raw.find("secret"), std::string::npos) << e.raw;
  EXPECT_EQ(s.events[2].data.at("output_index").as_int64(), 0);
  ASSERT_EQ(s.final_response.at("output").as_array().size(), 1u);
  // The stored context keeps it for the next turn.
  ASSERT_EQ(enc.result().stored_output.size(), 2u);
  EXPECT_EQ(S(enc.result().stored_output[0].at("type")), "reasoning");
}

TEST(ResponsesStream, ReasoningItemsSplitByIdAndFormat) {
  StreamEncoder enc(Meta(), ResponseOptions{});
  const std::string oa = "openai-responses-v1";
  std::string sse = EncodeAll(enc, {RD(0, kSummary, "a", oa, "rs_1"), RD(1, kSummary, "b", oa, "rs_2"),
                              RD(2, kText, "c", "anthropic-claude-v1"), RD(3, kText, "d", "anthropic-claude-v1"),
                              RD(0, kSummary, "late")});
  sse += enc.Finish(Usage{}, Money{}, false);
  // The late fragment is in the final response but was never streamed.
  const Stream s = CheckStream(sse, false);
  const json::array& output = s.final_response.at("output").as_array();
  ASSERT_EQ(output.size(), 3u);
  EXPECT_EQ(S(output[0].at("id")), "rs_1");
  EXPECT_EQ(S(output[1].at("id")), "rs_2");
  // Anthropic's thinking blocks in a row: one item, two content entries.
  EXPECT_EQ(output[2].at("content").as_array().size(), 2u);
  // A fragment for a closed item is kept in the stored output.
  EXPECT_EQ(S(enc.result().stored_output.at(0).at("summary").at(0).at("text")), "alate");
}

TEST(ResponsesStream, GeminiThoughtSignatureRidesOnAReasoningItem) {
  ResponseOptions options;
  options.include_encrypted_reasoning = true;
  StreamEncoder enc(Meta(), options);
  std::string sse = EncodeAll(enc, {TC(0, "call_g", "lookup", "{\"q\":1}", "gemini-sig")});
  sse += enc.Finish(Usage{}, Money{}, false);
  const Stream s = CheckStream(sse);
  EXPECT_EQ(Names(s.events),
            (std::vector<std::string>{"response.created", "response.in_progress", "response.output_item.added",
                                      "response.output_item.done", "response.output_item.added",
                                      "response.function_call_arguments.delta",
                                      "response.function_call_arguments.done", "response.output_item.done",
                                      "response.completed"}));
  EXPECT_EQ(S(s.events[3].data.at("item").at("type")), "reasoning");
  for (const json::array& items : {enc.result().stored_output, s.final_response.at("output").as_array()}) {
    std::vector<Message> back;
    ASSERT_FALSE(DecodeItems(items, "input", back));
    ASSERT_EQ(back.size(), 1u);
    ASSERT_EQ(back[0].parts.size(), 1u);  // the signature is back on its call, not a reasoning part
    EXPECT_EQ(CallOf(back[0], 0).id, "call_g");
    EXPECT_EQ(CallOf(back[0], 0).thought_signature, "gemini-sig");
  }
}

// One stream's state: moved with the encoder, never shared by a copy.
static_assert(!std::is_copy_constructible_v<StreamEncoder> && !std::is_copy_assignable_v<StreamEncoder>);
static_assert(std::is_nothrow_move_constructible_v<StreamEncoder> && std::is_nothrow_move_assignable_v<StreamEncoder>);

TEST(ResponsesStream, AMovedEncoderKeepsItsStream) {
  StreamEncoder first(Meta(), ResponseOptions{});
  std::string sse = first.Encode(TextDelta{0, "Hello"});
  StreamEncoder moved(std::move(first));
  sse += moved.Encode(TextDelta{0, ", world"});
  StreamEncoder assigned(Meta(), ResponseOptions{});
  assigned = std::move(moved);
  EXPECT_TRUE(assigned.started());
  sse += assigned.Finish(Usage{}, Money{}, false);
  const Stream s = CheckStream(sse);
  EXPECT_EQ(S(s.final_response.at("output_text")), "Hello, world");
  EXPECT_EQ(S(assigned.result().client.at("output_text")), "Hello, world");
}

// wire/openai.cpp emits a Gemini signature that arrives in a later
// reasoning.encrypted detail as a later fragment of the call. Six calls:
// the carriers opened for them grow (and reallocate) the encoder's items.
TEST(ResponsesStream, LateGeminiThoughtSignaturesOfManyCalls) {
  constexpr int kCalls = 6;
  ResponseOptions options;
  options.include_encrypted_reasoning = true;
  StreamEncoder enc(Meta(), options);
  std::vector<StreamEvent> events;
  for (int i = 0; i < kCalls; ++i) {
    events.push_back(TC(i, "call_" + std::to_string(i), "fn" + std::to_string(i), "{\"a\":"));
  }
  for (int i = 0; i < kCalls; ++i) {
    events.push_back(TC(i, "", "", std::to_string(i) + "}", "sig-" + std::to_string(i)));
  }
  std::string sse = EncodeAll(enc, events);
  sse += enc.Finish(Usage{}, Money{}, false);
  CheckStream(sse);

  const json::array& stored = enc.result().stored_output;
  ASSERT_EQ(stored.size(), 2u * kCalls);
  for (int i = 0; i < kCalls; ++i) {
    const json::object& call = stored[static_cast<std::size_t>(i)].as_object();
    EXPECT_EQ(S(call.at("type")), "function_call");
    EXPECT_EQ(S(call.at("call_id")), "call_" + std::to_string(i));
    EXPECT_EQ(S(call.at("name")), "fn" + std::to_string(i));
    EXPECT_EQ(S(call.at("arguments")), "{\"a\":" + std::to_string(i) + "}");
    // The carrier of call i, after all the calls (the signature came late).
    const json::object& carrier = stored[static_cast<std::size_t>(kCalls + i)].as_object();
    EXPECT_EQ(S(carrier.at("type")), "reasoning");
    EXPECT_EQ(S(carrier.at("status")), "completed");
    const auto parts = UnsealReasoning(S(carrier.at("encrypted_content")));
    ASSERT_TRUE(parts) << json::serialize(carrier);
    ASSERT_EQ(parts->size(), 1u);
    EXPECT_EQ((*parts)[0].kind, kEncrypted);
    EXPECT_EQ((*parts)[0].format, "google-gemini-v1");
    EXPECT_EQ((*parts)[0].id, "call_" + std::to_string(i));
    EXPECT_EQ((*parts)[0].data, "sig-" + std::to_string(i));
  }

  std::vector<Message> back;
  ASSERT_FALSE(DecodeItems(stored, "input", back));
  ASSERT_EQ(back.size(), 1u);
  ASSERT_EQ(back[0].parts.size(), static_cast<std::size_t>(kCalls));  // calls only: signatures are back on them
  for (int i = 0; i < kCalls; ++i) {
    const ToolCallPart& c = CallOf(back[0], static_cast<std::size_t>(i));
    EXPECT_EQ(c.id, "call_" + std::to_string(i));
    EXPECT_EQ(c.thought_signature, "sig-" + std::to_string(i));
    EXPECT_EQ(c.arguments, "{\"a\":" + std::to_string(i) + "}");
  }
}

TEST(ResponsesStream, OtherChoicesAreIgnored) {
  StreamEncoder enc(Meta(), ResponseOptions{});
  std::string sse = EncodeAll(enc, {TextDelta{1, "other"}, TextDelta{0, "mine"}, FinishDelta{1, FinishReason::kLength, "", ""}});
  sse += enc.Finish(Usage{}, Money{}, false);
  const Stream s = CheckStream(sse);
  EXPECT_EQ(S(s.final_response.at("output_text")), "mine");
  EXPECT_EQ(S(s.final_response.at("status")), "completed");
}

TEST(ResponsesStream, EchoMetadataAndDroppedTools) {
  const Request req = Decode(Body(std::string(kTools) + R"(,"metadata":{"run":"7"},"instructions":"sys",)" +
                                  R"("temperature":0.5,"reasoning":{"effort":"low"})"));
  ResponseOptions options{req.echo, req.include_encrypted_reasoning, true, req.dropped_tools};
  StreamEncoder enc(Meta(), options);
  const Stream s = CheckStream(enc.Encode(TextDelta{0, "x"}) + enc.Finish(Usage{}, Money{}, false));
  for (const json::object* r : {&s.events[0].data.at("response").as_object(), &s.final_response}) {
    EXPECT_EQ(json::serialize(r->at("metadata")),
              R"({"run":"7","tollgate_dropped_tools":"web_search_preview,file_search,custom"})");
    EXPECT_EQ(S(r->at("instructions")), "sys");
    EXPECT_DOUBLE_EQ(r->at("temperature").as_double(), 0.5);
    EXPECT_EQ(S(r->at("reasoning").at("effort")), "low");
    EXPECT_EQ(r->at("tools").as_array().size(), 6u);
  }
}

// ================================================================ BuildResponse

ChatResponse FullAnswer(FinishReason finish) {
  ChatResponse response;
  ChoiceResult c;
  c.reasoning = {Part(kText, "pondering", "sig-1", "", "anthropic-claude-v1", ""),
                 Part(kEncrypted, "", "", "opaque", "anthropic-claude-v1", "")};
  c.text = "The answer";
  c.tool_calls = {ToolCallPart{"toolu_1", "search", R"({"q":"x"})", "", {}},
                  ToolCallPart{"toolu_2", "fetch", "{}", "", {}}};
  c.finish = finish;
  response.choices.push_back(std::move(c));
  response.usage = Usage{100, 50, 20, 10, 5};
  return response;
}

TEST(ResponsesBuild, WholeResponseShapeAndRoundTrip) {
  const Request req = Decode(Body(R"("tools":[{"type":"function","name":"search"},{"type":"web_search"}],)"
                                  R"("metadata":{"a":"b"},"max_output_tokens":99,"store":false)"));
  ResponseOptions options{req.echo, false, true, req.dropped_tools};
  const BuiltResponse built =
      BuildResponse(Meta(), options, FullAnswer(FinishReason::kToolCalls), Usage{100, 50, 20, 10, 5}, Money{7000}, true);
  const json::object& r = built.client;
  CheckResponse(r);
  EXPECT_EQ(S(r.at("status")), "completed");
  EXPECT_TRUE(r.at("error").is_null());
  EXPECT_TRUE(r.at("incomplete_details").is_null());
  EXPECT_EQ(r.at("max_output_tokens").as_int64(), 99);
  EXPECT_EQ(r.at("store").as_bool(), false);
  EXPECT_EQ(json::serialize(r.at("metadata")), R"({"a":"b","tollgate_dropped_tools":"web_search"})");
  EXPECT_EQ(r.at("tools").as_array().size(), 2u);
  EXPECT_EQ(S(r.at("output_text")), "The answer");
  EXPECT_EQ(json::serialize(r.at("usage")),
            R"({"input_tokens":100,"input_tokens_details":{"cached_tokens":20,"cache_write_tokens":5},)"
            R"("output_tokens":50,"output_tokens_details":{"reasoning_tokens":10},"total_tokens":150,)"
            R"("cost":7E-6,"is_byok":true})");
  const json::array& output = r.at("output").as_array();
  ASSERT_EQ(output.size(), 4u);
  EXPECT_EQ(S(output[0].at("type")), "reasoning");
  EXPECT_FALSE(output[0].as_object().contains("encrypted_content"));  // not included
  EXPECT_EQ(S(output[0].at("content").at(0).at("text")), "pondering");
  EXPECT_EQ(S(output[1].at("type")), "message");
  EXPECT_EQ(S(output[1].at("status")), "completed");
  EXPECT_EQ(S(output[2].at("type")), "function_call");
  EXPECT_EQ(S(output[2].at("call_id")), "toolu_1");
  EXPECT_EQ(S(output[3].at("call_id")), "toolu_2");
  // Keys in OpenAI's order, provider last.
  std::vector<std::string> keys;
  for (const auto& kv : r) keys.emplace_back(kv.key());
  EXPECT_EQ(keys.front(), "id");
  EXPECT_EQ(keys.back(), "provider");

  // The stored output feeds back into the same assistant turn.
  ASSERT_EQ(built.stored_output.size(), 4u);
  EXPECT_TRUE(S(built.stored_output[0].at("encrypted_content")).starts_with("tollgate.v1."));
  std::vector<Message> back;
  ASSERT_FALSE(DecodeItems(built.stored_output, "input", back));
  ASSERT_EQ(back.size(), 1u);
  const Message& m = back[0];
  EXPECT_EQ(m.role, Role::kAssistant);
  ASSERT_EQ(m.parts.size(), 5u);
  EXPECT_EQ(ReasoningOf(m, 0).kind, kText);
  EXPECT_EQ(ReasoningOf(m, 0).text, "pondering");
  EXPECT_EQ(ReasoningOf(m, 0).signature, "sig-1");
  EXPECT_EQ(ReasoningOf(m, 0).format, "anthropic-claude-v1");
  EXPECT_EQ(ReasoningOf(m, 1).kind, kEncrypted);
  EXPECT_EQ(ReasoningOf(m, 1).data, "opaque");
  EXPECT_EQ(TextOf(m, 2).text, "The answer");
  EXPECT_EQ(CallOf(m, 3).id, "toolu_1");
  EXPECT_EQ(CallOf(m, 3).name, "search");
  EXPECT_EQ(CallOf(m, 3).arguments, R"({"q":"x"})");
  EXPECT_EQ(CallOf(m, 4).id, "toolu_2");
}

// The whole answer's output items against an independently written
// expectation (ids aside: minted, checked by prefix).
TEST(ResponsesBuild, WholeOutputItemsAsWritten) {
  const BuiltResponse built = BuildResponse(Meta(), ResponseOptions{}, FullAnswer(FinishReason::kToolCalls),
                                            Usage{1, 2}, Money{0}, false);
  json::array output = built.client.at("output").as_array();
  const std::vector<std::string> prefixes = {"rs_", "msg_", "fc_", "fc_"};
  ASSERT_EQ(output.size(), prefixes.size()) << json::serialize(output);
  for (std::size_t i = 0; i < output.size(); ++i) {
    EXPECT_TRUE(S(output[i].at("id")).starts_with(prefixes[i])) << json::serialize(output[i]);
    output[i].as_object().erase("id");
  }
  const json::value expected = json::parse(R"([
    {"type":"reasoning","summary":[],"content":[{"type":"reasoning_text","text":"pondering"}],
     "status":"completed"},
    {"type":"message","status":"completed","role":"assistant",
     "content":[{"type":"output_text","annotations":[],"logprobs":[],"text":"The answer"}]},
    {"type":"function_call","status":"completed","arguments":"{\"q\":\"x\"}","call_id":"toolu_1",
     "name":"search"},
    {"type":"function_call","status":"completed","arguments":"{}","call_id":"toolu_2","name":"fetch"}
  ])");
  EXPECT_EQ(json::value(output), expected) << json::serialize(output);
  EXPECT_EQ(S(built.client.at("output_text")), "The answer");
}

TEST(ResponsesBuild, IncompleteAndEmpty) {
  const BuiltResponse len =
      BuildResponse(Meta(), ResponseOptions{}, FullAnswer(FinishReason::kLength), Usage{}, Money{}, false);
  CheckResponse(len.client);
  EXPECT_EQ(S(len.client.at("status")), "incomplete");
  EXPECT_EQ(json::serialize(len.client.at("incomplete_details")), R"({"reason":"max_output_tokens"})");
  const BuiltResponse filtered =
      BuildResponse(Meta(), ResponseOptions{}, FullAnswer(FinishReason::kContentFilter), Usage{}, Money{}, false);
  EXPECT_EQ(json::serialize(filtered.client.at("incomplete_details")), R"({"reason":"content_filter"})");
  const BuiltResponse empty = BuildResponse(Meta(), ResponseOptions{}, ChatResponse{}, Usage{}, Money{}, false);
  CheckResponse(empty.client);
  EXPECT_EQ(S(empty.client.at("status")), "completed");
  EXPECT_TRUE(empty.client.at("output").as_array().empty());
  EXPECT_TRUE(empty.stored_output.empty());
}

TEST(ResponsesBuild, OpenAiReasoningKeepsItsIdAndEncryptedContent) {
  ChatResponse response;
  ChoiceResult c;
  c.reasoning = {Part(kSummary, "**Plan**", "", "", "openai-responses-v1", "rs_up"),
                 Part(kEncrypted, "", "", "gAAAAB", "openai-responses-v1", "rs_up")};
  c.text = "done";
  c.finish = FinishReason::kStop;
  response.choices.push_back(c);
  ResponseOptions options;
  options.include_encrypted_reasoning = true;
  const BuiltResponse built = BuildResponse(Meta(), options, response, Usage{}, Money{}, false);
  const json::object& item = built.client.at("output").at(0).as_object();
  EXPECT_EQ(json::serialize(item),
            R"({"id":"rs_up","type":"reasoning","summary":[{"type":"summary_text","text":"**Plan**"}],)"
            R"("encrypted_content":"gAAAAB","status":"completed"})");
  // A stateless client hands the client view back: OpenAI's parts again.
  std::vector<Message> back;
  ASSERT_FALSE(DecodeItems(built.client.at("output").as_array(), "input", back));
  ASSERT_EQ(back[0].parts.size(), 3u);
  EXPECT_EQ(ReasoningOf(back[0], 0).id, "rs_up");
  EXPECT_EQ(ReasoningOf(back[0], 1).data, "gAAAAB");
  EXPECT_EQ(ReasoningOf(back[0], 1).format, "openai-responses-v1");
}

}  // namespace
}  // namespace tollgate::wire::responses
