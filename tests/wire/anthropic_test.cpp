// Tests for the Anthropic Messages codec. The SSE streams below follow the
// event sequences of Anthropic's "Streaming Messages" documentation (text,
// tool use with input_json_delta, extended thinking with signature_delta,
// ping, mid-stream errors); ids, texts and signatures are made up.
#include "tollgate/wire/anthropic.hpp"
#include "tollgate/core/parameters.hpp"

#include "tollgate/wire/sse_parser.hpp"

#include <boost/json.hpp>
#include <gtest/gtest.h>

#include <optional>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

namespace tollgate::wire::anthropic {
namespace {

namespace json = boost::json;
using namespace std::string_literals;

// ---------------------------------------------------------------- helpers

json::value J(std::string_view text) { return json::parse(text); }

json::object Obj(std::string_view text) { return json::parse(text).as_object(); }

// One line per event, for comparisons and readable failures.
std::string Describe(const StreamEvent& event) {
  struct V {
    std::string operator()(const TextDelta& e) const {
      return "text[" + std::to_string(e.choice) + "] " + e.text;
    }
    std::string operator()(const ReasoningDelta& e) const {
      return "reasoning[" + std::to_string(e.choice) + "," + std::to_string(e.index) +
             "] kind=" + std::to_string(static_cast<int>(e.kind)) + " text=" + e.text +
             " sig=" + e.signature + " data=" + e.data + " format=" + e.format;
    }
    std::string operator()(const ToolCallDelta& e) const {
      return "tool[" + std::to_string(e.choice) + "," + std::to_string(e.index) + "] id=" + e.id +
             " name=" + e.name + " args=" + e.arguments;
    }
    std::string operator()(const FinishDelta& e) const {
      return "finish[" + std::to_string(e.choice) + "] " + std::string(FinishReasonName(e.reason)) + " (" +
             e.native_reason + ")";
    }
    std::string operator()(const UsageDelta& e) const {
      const Usage& u = e.usage;
      return "usage prompt=" + std::to_string(u.prompt_tokens) +
             " completion=" + std::to_string(u.completion_tokens) +
             " cached=" + std::to_string(u.cached_tokens) + " write=" + std::to_string(u.cache_write_tokens);
    }
  };
  return std::visit(V{}, event);
}

std::vector<std::string> Describe(const std::vector<StreamEvent>& events) {
  std::vector<std::string> out;
  for (const auto& e : events) out.push_back(Describe(e));
  return out;
}

// Builds an SSE body from (event type, JSON data) pairs.
std::string Sse(const std::vector<std::pair<std::string, std::string>>& events) {
  std::string out;
  for (const auto& [type, data] : events) out += "event: " + type + "\ndata: " + data + "\n\n";
  return out;
}

struct Decoded {
  std::vector<StreamEvent> events;
  std::optional<Error> error;
  bool done = false;
};

// Feeds `body` to an SseParser in the given slices and every parsed event to
// a ResponseDecoder; stops at the first decoder error.
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
      return true;
    });
    EXPECT_TRUE(fed.has_value());
    if (result.error) break;
  }
  if (!result.error) decoder.Finish(result.events);
  result.done = decoder.done();
  return result;
}

Decoded DecodeStream(std::string_view body) { return DecodeSlices({body}); }

ChatResponse Accumulate(const std::vector<StreamEvent>& events) {
  ResponseAccumulator acc;
  for (const auto& e : events) acc.Add(e);
  return acc.Take();
}

// Parsed SSE events of an encoder's output: (event name, data object).
std::vector<std::pair<std::string, json::object>> ParseSse(std::string_view body) {
  std::vector<std::pair<std::string, json::object>> out;
  SseParser parser;
  auto fed = parser.Feed(body, [&](const auto& e) {
    out.emplace_back(e.type, json::parse(e.data).as_object());
    return true;
  });
  EXPECT_TRUE(fed.has_value());
  return out;
}

std::string S(const json::value& v) { return std::string(v.as_string().data(), v.as_string().size()); }

// Checks the invariants clients such as Claude Code rely on and returns a
// list of violations (empty = valid): exactly one message_start, first; the
// SSE name equals data.type; each content block starts at the next index,
// gets only deltas of its own kind while open, and stops before the next
// starts; thinking blocks carry a signature_delta before they stop;
// message_delta (with stop_reason and usage.output_tokens) after every block
// stopped; message_stop last.
std::vector<std::string> ProtocolViolations(std::string_view body) {
  std::vector<std::string> problems;
  const auto events = ParseSse(body);
  if (events.empty()) return {"no events"};
  int message_starts = 0;
  int open = -1;
  int next_index = 0;
  std::string open_type;
  bool signature_seen = false;
  bool message_delta_seen = false;
  for (std::size_t i = 0; i < events.size(); ++i) {
    const auto& [name, data] = events[i];
    const std::string type = data.contains("type") ? S(data.at("type")) : "";
    if (name != type) problems.push_back("event name " + name + " != data.type " + type);
    if (i == 0 && type != "message_start") problems.push_back("first event is " + type);
    if (type == "message_start") {
      ++message_starts;
      const auto& usage = data.at("message").at("usage").as_object();
      if (!usage.contains("input_tokens") || !usage.contains("output_tokens")) {
        problems.push_back("message_start without usage counts");
      }
    } else if (type == "content_block_start") {
      if (open != -1) problems.push_back("block started while another is open");
      const int index = static_cast<int>(data.at("index").as_int64());
      if (index != next_index) problems.push_back("block index " + std::to_string(index));
      open = index;
      ++next_index;
      open_type = S(data.at("content_block").at("type"));
      signature_seen = false;
    } else if (type == "content_block_delta") {
      const int index = static_cast<int>(data.at("index").as_int64());
      if (index != open) problems.push_back("delta for block that is not open");
      const std::string delta = S(data.at("delta").at("type"));
      const bool fits = (delta == "text_delta" && open_type == "text") ||
                        (delta == "thinking_delta" && open_type == "thinking" && !signature_seen) ||
                        (delta == "signature_delta" && open_type == "thinking") ||
                        (delta == "input_json_delta" && open_type == "tool_use");
      if (!fits) problems.push_back(delta + " inside a " + open_type + " block");
      if (delta == "signature_delta") signature_seen = true;
    } else if (type == "content_block_stop") {
      const int index = static_cast<int>(data.at("index").as_int64());
      if (index != open) problems.push_back("stop for block that is not open");
      if (open_type == "thinking" && !signature_seen) {
        problems.push_back("thinking block stopped without signature");
      }
      open = -1;
    } else if (type == "message_delta") {
      if (open != -1) problems.push_back("message_delta while a block is open");
      if (!data.at("delta").as_object().contains("stop_reason")) {
        problems.push_back("message_delta without stop_reason");
      }
      if (!data.at("usage").as_object().contains("output_tokens")) {
        problems.push_back("message_delta without output_tokens");
      }
      message_delta_seen = true;
    } else if (type == "message_stop") {
      if (i + 1 != events.size()) problems.push_back("message_stop is not last");
      if (!message_delta_seen) problems.push_back("message_stop before message_delta");
    } else if (type != "ping") {
      problems.push_back("unexpected event " + type);
    }
  }
  if (message_starts != 1) problems.push_back("message_start count " + std::to_string(message_starts));
  if (events.back().first != "message_stop") problems.push_back("last event is " + events.back().first);
  return problems;
}

// ---------------------------------------------------------------- realistic upstream streams

// Text answer with a ping between blocks, cache counts in message_start and
// a cumulative output count in message_delta.
const std::string kTextStream = Sse({
    {"message_start",
     R"({"type":"message_start","message":{"id":"msg_01Text","type":"message","role":"assistant","content":[],"model":"claude-sonnet-4-5","stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":25,"cache_creation_input_tokens":100,"cache_read_input_tokens":2000,"output_tokens":1}}})"},
    {"content_block_start",
     R"({"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}})"},
    {"ping", R"({"type": "ping"})"},
    {"content_block_delta",
     R"({"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hello"}})"},
    {"content_block_delta",
     R"({"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"!"}})"},
    {"content_block_stop", R"({"type":"content_block_stop","index":0})"},
    {"message_delta",
     R"({"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":15}})"},
    {"message_stop", R"({"type":"message_stop"})"},
});

// Text, then a tool call whose input arrives as partial JSON.
const std::string kToolStream = Sse({
    {"message_start",
     R"({"type":"message_start","message":{"id":"msg_01Tool","type":"message","role":"assistant","model":"claude-sonnet-4-5","stop_sequence":null,"usage":{"input_tokens":472,"output_tokens":2},"content":[],"stop_reason":null}})"},
    {"content_block_start",
     R"({"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}})"},
    {"ping", R"({"type": "ping"})"},
    {"content_block_delta",
     R"({"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Okay, let me check the weather."}})"},
    {"content_block_stop", R"({"type":"content_block_stop","index":0})"},
    {"content_block_start",
     R"({"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"toolu_01Weather","name":"get_weather","input":{}}})"},
    {"content_block_delta",
     R"({"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":""}})"},
    {"content_block_delta",
     R"({"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{\"location\":"}})"},
    {"content_block_delta",
     R"({"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":" \"San Francisco, CA\"}"}})"},
    {"content_block_stop", R"({"type":"content_block_stop","index":1})"},
    {"message_delta",
     R"({"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},"usage":{"output_tokens":89}})"},
    {"message_stop", R"({"type":"message_stop"})"},
});

// Extended thinking: thinking deltas, the signature last, then the answer.
const std::string kThinkingStream = Sse({
    {"message_start",
     R"({"type":"message_start","message":{"id":"msg_01Think","type":"message","role":"assistant","content":[],"model":"claude-sonnet-4-5","stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":40,"output_tokens":3}}})"},
    {"content_block_start",
     R"({"type":"content_block_start","index":0,"content_block":{"type":"thinking","thinking":"","signature":""}})"},
    {"content_block_delta",
     R"({"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"Find gcd(1071, 462). 1071 = 2*462 + 147."}})"},
    {"content_block_delta",
     R"({"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":" 462 = 3*147 + 21. 147 = 7*21."}})"},
    {"content_block_delta",
     R"({"type":"content_block_delta","index":0,"delta":{"type":"signature_delta","signature":"EqQBCgIYAhIMsig0123"}})"},
    {"content_block_stop", R"({"type":"content_block_stop","index":0})"},
    {"content_block_start",
     R"({"type":"content_block_start","index":1,"content_block":{"type":"text","text":""}})"},
    {"content_block_delta",
     R"({"type":"content_block_delta","index":1,"delta":{"type":"text_delta","text":"The GCD is 21."}})"},
    {"content_block_stop", R"({"type":"content_block_stop","index":1})"},
    {"message_delta",
     R"({"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":120}})"},
    {"message_stop", R"({"type":"message_stop"})"},
});

// Two tool calls in one turn, the second one without any input.
const std::string kParallelToolStream = Sse({
    {"message_start",
     R"({"type":"message_start","message":{"id":"msg_01Par","type":"message","role":"assistant","content":[],"model":"claude-sonnet-4-5","stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":300,"output_tokens":1}}})"},
    {"content_block_start",
     R"({"type":"content_block_start","index":0,"content_block":{"type":"tool_use","id":"toolu_A","name":"get_weather","input":{}}})"},
    {"content_block_delta",
     R"({"type":"content_block_delta","index":0,"delta":{"type":"input_json_delta","partial_json":"{\"city\": \"Paris\"}"}})"},
    {"content_block_stop", R"({"type":"content_block_stop","index":0})"},
    {"content_block_start",
     R"({"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"toolu_B","name":"get_time","input":{}}})"},
    {"content_block_delta",
     R"({"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":""}})"},
    {"content_block_stop", R"({"type":"content_block_stop","index":1})"},
    {"message_delta",
     R"({"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},"usage":{"output_tokens":60}})"},
    {"message_stop", R"({"type":"message_stop"})"},
});

// ---------------------------------------------------------------- upstream stream decoding

TEST(AnthropicDecode, TextStreamGivesTextFinishAndUsage) {
  const Decoded d = DecodeStream(kTextStream);
  ASSERT_FALSE(d.error) << d.error->message;
  EXPECT_TRUE(d.done);
  EXPECT_EQ(Describe(d.events), (std::vector<std::string>{
                                    "usage prompt=2125 completion=1 cached=2000 write=100",
                                    "text[0] Hello",
                                    "text[0] !",
                                    "finish[0] stop (end_turn)",
                                    "usage prompt=2125 completion=15 cached=2000 write=100",
                                }));
}

TEST(AnthropicDecode, ToolUseInputArrivesAsArgumentFragments) {
  const Decoded d = DecodeStream(kToolStream);
  ASSERT_FALSE(d.error);
  const ChatResponse r = Accumulate(d.events);
  ASSERT_EQ(r.choices.size(), 1u);
  EXPECT_EQ(r.choices[0].text, "Okay, let me check the weather.");
  ASSERT_EQ(r.choices[0].tool_calls.size(), 1u);
  EXPECT_EQ(r.choices[0].tool_calls[0].id, "toolu_01Weather");
  EXPECT_EQ(r.choices[0].tool_calls[0].name, "get_weather");
  EXPECT_EQ(J(r.choices[0].tool_calls[0].arguments), J(R"({"location":"San Francisco, CA"})"));
  EXPECT_EQ(r.choices[0].finish, FinishReason::kToolCalls);
  EXPECT_EQ(r.choices[0].native_finish_reason, "tool_use");
  ASSERT_TRUE(r.usage);
  EXPECT_EQ(r.usage->prompt_tokens, 472);
  EXPECT_EQ(r.usage->completion_tokens, 89);
}

TEST(AnthropicDecode, ThinkingKeepsTextAndSignatureInOneReasoningBlock) {
  const Decoded d = DecodeStream(kThinkingStream);
  ASSERT_FALSE(d.error);
  const ChatResponse r = Accumulate(d.events);
  ASSERT_EQ(r.choices[0].reasoning.size(), 1u);
  const ReasoningPart& block = r.choices[0].reasoning[0];
  EXPECT_EQ(block.kind, ReasoningPart::Kind::kText);
  EXPECT_EQ(block.text, "Find gcd(1071, 462). 1071 = 2*462 + 147. 462 = 3*147 + 21. 147 = 7*21.");
  EXPECT_EQ(block.signature, "EqQBCgIYAhIMsig0123");
  EXPECT_EQ(block.format, "anthropic-claude-v1");
  EXPECT_EQ(r.choices[0].text, "The GCD is 21.");
  // The text block's index (1) does not become a reasoning index.
  for (const auto& e : d.events) {
    if (const auto* rd = std::get_if<ReasoningDelta>(&e)) {
      EXPECT_EQ(rd->index, 0);
    }
  }
}

TEST(AnthropicDecode, ParallelToolCallsKeepTheirOwnIndexes) {
  const Decoded d = DecodeStream(kParallelToolStream);
  ASSERT_FALSE(d.error);
  const ChatResponse r = Accumulate(d.events);
  ASSERT_EQ(r.choices[0].tool_calls.size(), 2u);
  EXPECT_EQ(r.choices[0].tool_calls[0].id, "toolu_A");
  EXPECT_EQ(J(r.choices[0].tool_calls[0].arguments), J(R"({"city":"Paris"})"));
  EXPECT_EQ(r.choices[0].tool_calls[1].id, "toolu_B");
  EXPECT_EQ(r.choices[0].tool_calls[1].name, "get_time");
}

TEST(AnthropicDecode, EmptyInputToolCallGetsEmptyObjectArguments) {
  const Decoded d = DecodeStream(kParallelToolStream);
  ASSERT_FALSE(d.error);
  // The decoder itself says "{}" (not only the accumulator's default).
  std::string args;
  for (const auto& e : d.events) {
    if (const auto* t = std::get_if<ToolCallDelta>(&e); t != nullptr && t->index == 1) args += t->arguments;
  }
  EXPECT_EQ(args, "{}");
}

TEST(AnthropicDecode, MaxTokensInsideAToolCallIsLength) {
  const std::string body = Sse({
      {"message_start",
       R"({"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","content":[],"model":"m","usage":{"input_tokens":10,"output_tokens":1}}})"},
      {"content_block_start",
       R"({"type":"content_block_start","index":0,"content_block":{"type":"tool_use","id":"toolu_X","name":"write_file","input":{}}})"},
      {"content_block_delta",
       R"({"type":"content_block_delta","index":0,"delta":{"type":"input_json_delta","partial_json":"{\"path\": \"a.txt\", \"content\": \"lo"}})"},
      {"message_delta",
       R"({"type":"message_delta","delta":{"stop_reason":"max_tokens","stop_sequence":null},"usage":{"output_tokens":32}})"},
      {"message_stop", R"({"type":"message_stop"})"},
  });
  const Decoded d = DecodeStream(body);
  ASSERT_FALSE(d.error);
  const ChatResponse r = Accumulate(d.events);
  EXPECT_EQ(r.choices[0].finish, FinishReason::kLength);
  EXPECT_EQ(r.choices[0].native_finish_reason, "max_tokens");
  ASSERT_EQ(r.choices[0].tool_calls.size(), 1u);
  EXPECT_EQ(r.choices[0].tool_calls[0].arguments, R"({"path": "a.txt", "content": "lo)");
}

TEST(AnthropicDecode, StopReasonsMapToCanonicalFinishReasons) {
  const std::vector<std::pair<std::string, FinishReason>> cases = {
      {"end_turn", FinishReason::kStop},
      {"stop_sequence", FinishReason::kStop},
      {"pause_turn", FinishReason::kStop},
      {"max_tokens", FinishReason::kLength},
      {"model_context_window_exceeded", FinishReason::kLength},
      {"tool_use", FinishReason::kToolCalls},
      {"refusal", FinishReason::kContentFilter},
  };
  for (const auto& [native, expected] : cases) {
    ResponseDecoder decoder;
    std::vector<StreamEvent> out;
    ASSERT_TRUE(decoder.OnEvent("message_delta",
                                R"({"type":"message_delta","delta":{"stop_reason":")" + native +
                                    R"(","stop_sequence":null},"usage":{"output_tokens":1}})",
                                out));
    ASSERT_FALSE(out.empty());
    const auto* finish = std::get_if<FinishDelta>(&out[0]);
    ASSERT_NE(finish, nullptr) << native;
    EXPECT_EQ(finish->reason, expected) << native;
    EXPECT_EQ(finish->native_reason, native);
  }
}

TEST(AnthropicDecode, RefusalStreamEndsWithContentFilter) {
  const std::string body = Sse({
      {"message_start",
       R"({"type":"message_start","message":{"id":"msg_r","type":"message","role":"assistant","content":[],"model":"m","usage":{"input_tokens":12,"output_tokens":1}}})"},
      {"content_block_start",
       R"({"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}})"},
      {"content_block_delta",
       R"({"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"I can't help with"}})"},
      {"content_block_stop", R"({"type":"content_block_stop","index":0})"},
      {"message_delta",
       R"({"type":"message_delta","delta":{"stop_reason":"refusal","stop_sequence":null},"usage":{"output_tokens":5}})"},
      {"message_stop", R"({"type":"message_stop"})"},
  });
  const Decoded d = DecodeStream(body);
  ASSERT_FALSE(d.error);
  const ChatResponse r = Accumulate(d.events);
  EXPECT_EQ(r.choices[0].finish, FinishReason::kContentFilter);
  EXPECT_EQ(r.choices[0].text, "I can't help with");
}

TEST(AnthropicDecode, OverloadedErrorMidStreamIsUnavailableAfterEarlierEvents) {
  const std::string body = Sse({
      {"message_start",
       R"({"type":"message_start","message":{"id":"msg_e","type":"message","role":"assistant","content":[],"model":"m","usage":{"input_tokens":12,"output_tokens":1}}})"},
      {"content_block_start",
       R"({"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}})"},
      {"content_block_delta",
       R"({"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Par"}})"},
      {"error", R"({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})"},
  });
  const Decoded d = DecodeStream(body);
  ASSERT_TRUE(d.error);
  EXPECT_EQ(d.error->code, ErrorCode::kUnavailable);
  EXPECT_NE(d.error->message.find("Overloaded"), std::string::npos);
  EXPECT_FALSE(d.done);
  EXPECT_EQ(Accumulate(d.events).choices[0].text, "Par");
}

TEST(AnthropicDecode, ErrorEventTypesMapToErrorCodes) {
  const std::vector<std::pair<std::string, ErrorCode>> cases = {
      {"overloaded_error", ErrorCode::kUnavailable},
      {"rate_limit_error", ErrorCode::kResourceExhausted},
      {"api_error", ErrorCode::kBadGateway},
      {"invalid_request_error", ErrorCode::kBadGateway},
  };
  for (const auto& [type, code] : cases) {
    ResponseDecoder decoder;
    std::vector<StreamEvent> out;
    auto r =
        decoder.OnEvent("error", R"({"type":"error","error":{"type":")" + type + R"(","message":"m"}})", out);
    ASSERT_FALSE(r) << type;
    EXPECT_EQ(r.error().code, code) << type;
  }
}

TEST(AnthropicDecode, PingAndUnknownEventsProduceNothing) {
  ResponseDecoder decoder;
  std::vector<StreamEvent> out;
  ASSERT_TRUE(decoder.OnEvent("ping", R"({"type": "ping"})", out));
  ASSERT_TRUE(decoder.OnEvent("future_event", R"({"type": "future_event", "x": 1})", out));
  EXPECT_TRUE(out.empty());
  EXPECT_FALSE(decoder.done());
}

TEST(AnthropicDecode, MalformedEventsAreBadGateway) {
  ResponseDecoder decoder;
  std::vector<StreamEvent> out;
  auto not_json = decoder.OnEvent("content_block_delta", "{not json", out);
  ASSERT_FALSE(not_json);
  EXPECT_EQ(not_json.error().code, ErrorCode::kBadGateway);
  auto unknown_block = decoder.OnEvent(
      "content_block_delta",
      R"({"type":"content_block_delta","index":7,"delta":{"type":"text_delta","text":"x"}})", out);
  ASSERT_FALSE(unknown_block);
  EXPECT_EQ(unknown_block.error().code, ErrorCode::kBadGateway);
}

TEST(AnthropicDecode, UsageCountsAreCumulativeAndNeverSummedTwice) {
  const std::string body = Sse({
      {"message_start",
       R"({"type":"message_start","message":{"id":"m","type":"message","role":"assistant","content":[],"model":"m","usage":{"input_tokens":50,"cache_creation_input_tokens":10,"cache_read_input_tokens":1000,"output_tokens":1}}})"},
      {"message_delta",
       R"({"type":"message_delta","delta":{"stop_reason":null},"usage":{"output_tokens":10}})"},
      {"message_delta",
       R"({"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"input_tokens":50,"cache_creation_input_tokens":10,"cache_read_input_tokens":1000,"output_tokens":25}})"},
      {"message_stop", R"({"type":"message_stop"})"},
  });
  const Decoded d = DecodeStream(body);
  ASSERT_FALSE(d.error);
  const ChatResponse r = Accumulate(d.events);
  ASSERT_TRUE(r.usage);
  EXPECT_EQ(r.usage->prompt_tokens, 1060);
  EXPECT_EQ(r.usage->cached_tokens, 1000);
  EXPECT_EQ(r.usage->cache_write_tokens, 10);
  EXPECT_EQ(r.usage->completion_tokens, 25);
}

TEST(AnthropicDecode, NewerInputCountsInMessageDeltaReplaceOlderOnes) {
  ResponseDecoder decoder;
  std::vector<StreamEvent> out;
  ASSERT_TRUE(decoder.OnEvent(
      "message_start",
      R"({"type":"message_start","message":{"usage":{"input_tokens":5,"cache_read_input_tokens":0,"output_tokens":1}}})",
      out));
  ASSERT_TRUE(decoder.OnEvent(
      "message_delta",
      R"({"type":"message_delta","delta":{},"usage":{"input_tokens":7,"cache_read_input_tokens":3,"cache_creation_input_tokens":null,"output_tokens":9}})",
      out));
  const auto& last = std::get<UsageDelta>(out.back()).usage;
  EXPECT_EQ(last.prompt_tokens, 10);
  EXPECT_EQ(last.cached_tokens, 3);
  EXPECT_EQ(last.completion_tokens, 9);
}

TEST(AnthropicDecode, ChineseAndEmojiSplitInsideACharacterComeOutWhole) {
  // "你好" is E4 BD A0 E5 A5 BD; "😀" is F0 9F 98 80. Raw bytes of each
  // character are split across deltas, as a byte-oriented upstream might.
  const std::string hello = "\xE4\xBD\xA0\xE5\xA5\xBD";
  const std::string smile = "\xF0\x9F\x98\x80";
  auto delta = [](const std::string& text) {
    return std::pair<std::string, std::string>{
        "content_block_delta",
        R"({"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":")" + text + R"("}})"};
  };
  const std::string body = Sse({
      {"content_block_start",
       R"({"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}})"},
      delta(hello.substr(0, 4)),
      delta(hello.substr(4) + smile.substr(0, 1)),
      delta(smile.substr(1, 2)),
      delta(smile.substr(3) + "!"),
      {"content_block_stop", R"({"type":"content_block_stop","index":0})"},
  });
  const Decoded d = DecodeStream(body);
  ASSERT_FALSE(d.error);
  std::vector<std::string> pieces;
  for (const auto& e : d.events) {
    if (const auto* t = std::get_if<TextDelta>(&e)) pieces.push_back(t->text);
  }
  EXPECT_EQ(pieces, (std::vector<std::string>{"\xE4\xBD\xA0", "\xE5\xA5\xBD", smile + "!"}));
}

TEST(AnthropicDecode, ThinkingSplitInsideACharacterComesOutWhole) {
  const std::string think = "\xE6\x80\x9D";  // 思
  const std::string body = Sse({
      {"content_block_start",
       R"({"type":"content_block_start","index":0,"content_block":{"type":"thinking","thinking":"","signature":""}})"},
      {"content_block_delta",
       R"({"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":")" +
           think.substr(0, 2) + R"("}})"},
      {"content_block_delta",
       R"({"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":")" +
           think.substr(2) + R"(考"}})"},
      {"content_block_stop", R"({"type":"content_block_stop","index":0})"},
  });
  const Decoded d = DecodeStream(body);
  ASSERT_FALSE(d.error);
  for (const auto& e : d.events) {
    if (const auto* r = std::get_if<ReasoningDelta>(&e)) {
      EXPECT_EQ(CompleteUtf8Prefix(r->text), r->text.size());
    }
  }
  EXPECT_EQ(Accumulate(d.events).choices[0].reasoning[0].text, think + "考");
}

TEST(AnthropicDecode, ToolArgumentsSplitInsideACharacterComeOutWhole) {
  const std::string city = "\xE5\x8C\x97\xE4\xBA\xAC";  // 北京
  const std::string body = Sse({
      {"content_block_start",
       R"({"type":"content_block_start","index":0,"content_block":{"type":"tool_use","id":"toolu_1","name":"weather","input":{}}})"},
      {"content_block_delta",
       R"({"type":"content_block_delta","index":0,"delta":{"type":"input_json_delta","partial_json":"{\"city\":\")" +
           city.substr(0, 4) + R"("}})"},
      {"content_block_delta",
       R"({"type":"content_block_delta","index":0,"delta":{"type":"input_json_delta","partial_json":")" +
           city.substr(4) + R"(\"}"}})"},
      {"content_block_stop", R"({"type":"content_block_stop","index":0})"},
  });
  const Decoded d = DecodeStream(body);
  ASSERT_FALSE(d.error);
  for (const auto& e : d.events) {
    if (const auto* c = std::get_if<ToolCallDelta>(&e)) {
      EXPECT_EQ(ValidUtf8(c->arguments), c->arguments) << "every fragment is valid UTF-8";
    }
  }
  EXPECT_EQ(Accumulate(d.events).choices[0].tool_calls[0].arguments, "{\"city\":\"" + city + "\"}");
}

TEST(AnthropicDecode, TextCutInsideACharacterAtTheEndBecomesReplacementCharacter) {
  const std::string body = Sse({
      {"content_block_start",
       R"({"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}})"},
      {"content_block_delta",
       "{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":"
       "\"ok\xE4\xBD\"}}"},
  });
  const Decoded d = DecodeStream(body);
  ASSERT_FALSE(d.error);
  EXPECT_EQ(Accumulate(d.events).choices[0].text, "ok\xEF\xBF\xBD");
}

// Found by tests/fuzz (wire_anthropic): an upstream's invalid UTF-8 outside
// the streamed text (a tool_use id, a stop_reason, an error message) went to
// callers as it was, so the gateway wrote JSON that strict parsers refuse.
TEST(AnthropicDecode, InvalidUtf8InIdsNamesAndReasonsBecomesReplacementCharacters) {
  const std::string bad = "\x9B\xFF";
  const std::string fffd2 = "\xEF\xBF\xBD\xEF\xBF\xBD";
  ResponseDecoder whole;
  std::vector<StreamEvent> out;
  ASSERT_TRUE(whole.OnWholeResponse(
      "{\"type\":\"message\",\"content\":[{\"type\":\"text\",\"text\":\"t" + bad +
          "\"},{\"type\":\"thinking\",\"thinking\":\"r" + bad + "\",\"signature\":\"s" + bad +
          "\"},{\"type\":\"tool_use\",\"id\":\"toolu_" + bad + "\",\"name\":\"f" + bad +
          "\",\"input\":{\"k\":\"v" + bad + "\"}}],\"stop_reason\":\"odd" + bad + "\"}",
      out));
  const ChatResponse r = Accumulate(out);
  ASSERT_EQ(r.choices.size(), 1u);
  EXPECT_EQ(r.choices[0].text, "t" + fffd2);
  ASSERT_EQ(r.choices[0].tool_calls.size(), 1u);
  EXPECT_EQ(r.choices[0].tool_calls[0].id, "toolu_" + fffd2);
  EXPECT_EQ(r.choices[0].tool_calls[0].name, "f" + fffd2);
  EXPECT_EQ(r.choices[0].tool_calls[0].arguments, "{\"k\":\"v" + fffd2 + "\"}");
  EXPECT_EQ(r.choices[0].native_finish_reason, "odd" + fffd2);
  for (const auto& e : out) {
    if (const auto* d = std::get_if<ReasoningDelta>(&e)) {
      EXPECT_EQ(d->text, "r" + fffd2);
      EXPECT_EQ(d->signature, "s" + fffd2);
    }
  }
  // The streamed tool_use block and an error event.
  const Decoded d = DecodeStream(Sse({
      {"content_block_start",
       "{\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"tool_use\",\"id\":\"x" + bad +
           "\",\"name\":\"n" + bad + "\",\"input\":{\"a\":\"" + bad + "\"}}}"},
      {"content_block_stop", R"({"type":"content_block_stop","index":0})"},
      {"error", "{\"type\":\"error\",\"error\":{\"type\":\"api_error\",\"message\":\"m" + bad + "\"}}"},
  }));
  ASSERT_TRUE(d.error);
  EXPECT_EQ(d.error->message, "api_error: m" + fffd2);
  const ChatResponse s = Accumulate(d.events);
  ASSERT_EQ(s.choices.size(), 1u);
  ASSERT_EQ(s.choices[0].tool_calls.size(), 1u);
  EXPECT_EQ(s.choices[0].tool_calls[0].id, "x" + fffd2);
  EXPECT_EQ(s.choices[0].tool_calls[0].name, "n" + fffd2);
  EXPECT_EQ(s.choices[0].tool_calls[0].arguments, "{\"a\":\"" + fffd2 + "\"}");
}

TEST(AnthropicDecode, EverySplitOfTheBodyGivesIdenticalEvents) {
  const std::string emoji_stream = Sse({
      {"message_start",
       R"({"type":"message_start","message":{"id":"m","type":"message","role":"assistant","content":[],"model":"m","usage":{"input_tokens":3,"output_tokens":1}}})"},
      {"content_block_start",
       R"({"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}})"},
      {"content_block_delta",
       R"({"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"你好，世界 🙂"}})"},
      {"content_block_stop", R"({"type":"content_block_stop","index":0})"},
      {"message_delta",
       R"({"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":7}})"},
      {"message_stop", R"({"type":"message_stop"})"},
  });
  for (const std::string* body :
       {&kTextStream, &kToolStream, &kThinkingStream, &kParallelToolStream, &emoji_stream}) {
    const auto whole = Describe(DecodeStream(*body).events);
    ASSERT_FALSE(whole.empty());
    // One byte at a time.
    std::vector<std::string_view> bytes;
    for (std::size_t i = 0; i < body->size(); ++i) bytes.push_back(std::string_view(*body).substr(i, 1));
    EXPECT_EQ(Describe(DecodeSlices(bytes).events), whole);
    // Two slices, split at every byte boundary.
    for (std::size_t k = 0; k <= body->size(); ++k) {
      const std::string_view v(*body);
      const auto split = Describe(DecodeSlices({v.substr(0, k), v.substr(k)}).events);
      ASSERT_EQ(split, whole) << "split at byte " << k;
    }
  }
}

TEST(AnthropicDecode, RedactedThinkingBecomesEncryptedReasoning) {
  const std::string body = Sse({
      {"content_block_start",
       R"({"type":"content_block_start","index":0,"content_block":{"type":"redacted_thinking","data":"EmwKAhgBEgy3va3pzix"}})"},
      {"content_block_stop", R"({"type":"content_block_stop","index":0})"},
      {"content_block_start",
       R"({"type":"content_block_start","index":1,"content_block":{"type":"thinking","thinking":"","signature":""}})"},
      {"content_block_delta",
       R"({"type":"content_block_delta","index":1,"delta":{"type":"signature_delta","signature":"sig2"}})"},
      {"content_block_stop", R"({"type":"content_block_stop","index":1})"},
  });
  const Decoded d = DecodeStream(body);
  ASSERT_FALSE(d.error);
  const ChatResponse r = Accumulate(d.events);
  ASSERT_EQ(r.choices[0].reasoning.size(), 2u);
  EXPECT_EQ(r.choices[0].reasoning[0].kind, ReasoningPart::Kind::kEncrypted);
  EXPECT_EQ(r.choices[0].reasoning[0].data, "EmwKAhgBEgy3va3pzix");
  EXPECT_EQ(r.choices[0].reasoning[1].signature, "sig2");
}

TEST(AnthropicDecode, ServerToolBlocksAreSkippedWithoutConsumingToolIndexes) {
  const std::string body = Sse({
      {"content_block_start",
       R"({"type":"content_block_start","index":0,"content_block":{"type":"server_tool_use","id":"srvtoolu_1","name":"web_search","input":{}}})"},
      {"content_block_delta",
       R"({"type":"content_block_delta","index":0,"delta":{"type":"input_json_delta","partial_json":"{\"query\":\"x\"}"}})"},
      {"content_block_stop", R"({"type":"content_block_stop","index":0})"},
      {"content_block_start",
       R"({"type":"content_block_start","index":1,"content_block":{"type":"web_search_tool_result","tool_use_id":"srvtoolu_1","content":[]}})"},
      {"content_block_stop", R"({"type":"content_block_stop","index":1})"},
      {"content_block_start",
       R"({"type":"content_block_start","index":2,"content_block":{"type":"tool_use","id":"toolu_C","name":"save","input":{}}})"},
      {"content_block_stop", R"({"type":"content_block_stop","index":2})"},
  });
  const Decoded d = DecodeStream(body);
  ASSERT_FALSE(d.error);
  const ChatResponse r = Accumulate(d.events);
  ASSERT_EQ(r.choices[0].tool_calls.size(), 1u);
  EXPECT_EQ(r.choices[0].tool_calls[0].id, "toolu_C");
  EXPECT_EQ(r.choices[0].tool_calls[0].arguments, "{}");
}

TEST(AnthropicDecode, DataTypeIsUsedWhenTheEventLineIsMissing) {
  ResponseDecoder decoder;
  std::vector<StreamEvent> out;
  ASSERT_TRUE(decoder.OnEvent("message", R"({"type":"message_stop"})", out));
  EXPECT_TRUE(decoder.done());
}

TEST(AnthropicDecode, WholeMessageBodyGivesAllBlocksFinishAndUsage) {
  ResponseDecoder decoder;
  std::vector<StreamEvent> out;
  ASSERT_TRUE(decoder.OnWholeResponse(R"({
    "id":"msg_01W","type":"message","role":"assistant","model":"claude-sonnet-4-5",
    "content":[
      {"type":"thinking","thinking":"Think.","signature":"sigW"},
      {"type":"redacted_thinking","data":"opaque"},
      {"type":"text","text":"Calling the tool."},
      {"type":"tool_use","id":"toolu_W","name":"lookup","input":{"q":"x","n":2}},
      {"type":"tool_use","id":"toolu_V","name":"noargs","input":{}}
    ],
    "stop_reason":"tool_use","stop_sequence":null,
    "usage":{"input_tokens":20,"cache_creation_input_tokens":0,"cache_read_input_tokens":80,"output_tokens":30}})",
                                      out));
  EXPECT_TRUE(decoder.done());
  const ChatResponse r = Accumulate(out);
  ASSERT_EQ(r.choices[0].reasoning.size(), 2u);
  EXPECT_EQ(r.choices[0].reasoning[0].signature, "sigW");
  EXPECT_EQ(r.choices[0].reasoning[1].data, "opaque");
  EXPECT_EQ(r.choices[0].text, "Calling the tool.");
  ASSERT_EQ(r.choices[0].tool_calls.size(), 2u);
  EXPECT_EQ(J(r.choices[0].tool_calls[0].arguments), J(R"({"q":"x","n":2})"));
  EXPECT_EQ(r.choices[0].tool_calls[1].arguments, "{}");
  EXPECT_EQ(r.choices[0].finish, FinishReason::kToolCalls);
  EXPECT_EQ(r.usage->prompt_tokens, 100);
  EXPECT_EQ(r.usage->cached_tokens, 80);
  EXPECT_EQ(r.usage->completion_tokens, 30);
}

TEST(AnthropicDecode, WholeErrorBodyIsAnError) {
  ResponseDecoder decoder;
  std::vector<StreamEvent> out;
  auto r = decoder.OnWholeResponse(
      R"({"type":"error","error":{"type":"rate_limit_error","message":"Number of request tokens has exceeded your per-minute rate limit"}})",
      out);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, ErrorCode::kResourceExhausted);
}

TEST(AnthropicDecode, NegativeOrHugeUsageCountsAreSanitised) {
  ResponseDecoder decoder;
  std::vector<StreamEvent> out;
  ASSERT_TRUE(decoder.OnEvent(
      "message_start",
      R"({"type":"message_start","message":{"usage":{"input_tokens":-5,"cache_read_input_tokens":18446744073709551615,"output_tokens":"7"}}})",
      out));
  const Usage& u = std::get<UsageDelta>(out.back()).usage;
  EXPECT_EQ(u.prompt_tokens, kMaxUsageTokens);
  EXPECT_EQ(u.cached_tokens, kMaxUsageTokens);
  EXPECT_EQ(u.completion_tokens, 0);
}

// ---------------------------------------------------------------- inbound request decoding

TEST(AnthropicRequest, DecodesAMinimalRequest) {
  auto r = DecodeMessagesRequest(
      R"({"model":"claude-sonnet-4-5","max_tokens":1024,"messages":[{"role":"user","content":"Hello, Claude"}]})");
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->api, ApiFlavor::kAnthropicMessages);
  EXPECT_EQ(r->model, "claude-sonnet-4-5");
  EXPECT_EQ(r->max_tokens, 1024);
  EXPECT_EQ(r->max_tokens_field, MaxTokensField::kMaxTokens);
  ASSERT_EQ(r->messages.size(), 1u);
  EXPECT_EQ(r->messages[0].role, Role::kUser);
  EXPECT_EQ(MessageText(r->messages[0]), "Hello, Claude");
  EXPECT_FALSE(r->stream);
  EXPECT_TRUE(r->passthrough.empty());
}

TEST(AnthropicRequest, MissingMaxTokensIsAnErrorNamingIt) {
  auto r = DecodeMessagesRequest(R"({"model":"m","messages":[{"role":"user","content":"hi"}]})");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, ErrorCode::kInvalidArgument);
  EXPECT_EQ(r.error().param, "max_tokens");
}

TEST(AnthropicRequest, CountTokensNeedsNoMaxTokens) {
  auto r = DecodeCountTokensRequest(
      R"({"model":"m","system":"Be brief.","messages":[{"role":"user","content":"hi"}],"tools":[{"name":"t","input_schema":{"type":"object"}}]})");
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_FALSE(r->max_tokens);
  EXPECT_EQ(r->messages.size(), 2u);
  EXPECT_EQ(r->tools.size(), 1u);
  EXPECT_EQ(EncodeCountTokensResponse(2095), R"({"input_tokens":2095})");
}

TEST(AnthropicRequest, InvalidBodiesNameTheField) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {R"({"max_tokens":5,"messages":[{"role":"user","content":"x"}]})", "model"},
      {R"({"model":"m","max_tokens":0,"messages":[{"role":"user","content":"x"}]})", "max_tokens"},
      {R"({"model":"m","max_tokens":5})", "messages"},
      {R"({"model":"m","max_tokens":5,"messages":[]})", "messages"},
      {R"({"model":"m","max_tokens":5,"messages":[{"role":"user","content":"x"},{"role":"robot","content":"y"}]})",
       "messages.1.role"},
      {R"({"model":"m","max_tokens":5,"messages":[{"role":"user"}]})", "messages.0.content"},
      {R"({"model":"m","max_tokens":5,"messages":[{"role":"user","content":[{"type":"text"}]}]})",
       "messages.0.content.0.text"},
      {R"({"model":"m","max_tokens":5,"messages":[{"role":"user","content":[{"type":"image","source":{"type":"nope"}}]}]})",
       "messages.0.content.0.source.type"},
      {R"({"model":"m","max_tokens":5,"messages":[{"role":"user","content":[{"text":"no type"}]}]})",
       "messages.0.content.0.type"},
      {R"({"model":"m","max_tokens":5,"messages":[{"role":"assistant","content":[{"type":"tool_result","tool_use_id":"t","content":"x"}]}]})",
       "messages.0.content.0"},
      {R"({"model":"m","max_tokens":5,"messages":[{"role":"user","content":[{"type":"tool_result","tool_use_id":"t","content":[{"type":"document"}]}]}]})",
       "messages.0.content.0.content.0.type"},
      {R"({"model":"m","max_tokens":5,"messages":[{"role":"user","content":"x"}],"tool_choice":{"type":"sometimes"}})",
       "tool_choice.type"},
      {R"({"model":"m","max_tokens":5,"messages":[{"role":"user","content":"x"}],"tool_choice":{"type":"tool"}})",
       "tool_choice.name"},
      {R"({"model":"m","max_tokens":5,"messages":[{"role":"user","content":"x"}],"thinking":{"type":"enabled"}})",
       "thinking.budget_tokens"},
      {R"({"model":"m","max_tokens":5,"messages":[{"role":"user","content":"x"}],"temperature":"hot"})",
       "temperature"},
      {R"({"model":"m","max_tokens":5,"messages":[{"role":"user","content":"x"}],"temperature":5})", "temperature"},
      {R"({"model":"m","max_tokens":5,"messages":[{"role":"user","content":"x"}],"top_p":-3})", "top_p"},
      {R"({"model":"m","max_tokens":5,"messages":[{"role":"user","content":"x"}],"top_k":-100})", "top_k"},
      {R"({"model":"m","max_tokens":5,"messages":[{"role":"user","content":"x"}],"stop_sequences":["a",1]})",
       "stop_sequences.1"},
      {R"({"model":"m","max_tokens":5,"messages":[{"role":"user","content":"x"}],"system":[{"type":"image"}]})",
       "system.0"},
      {R"({"model":"m","max_tokens":5,"messages":[{"role":"user","content":"x"}],"tools":[{"description":"no name"}]})",
       "tools.0.name"},
  };
  for (const auto& [body, param] : cases) {
    auto r = DecodeMessagesRequest(body);
    ASSERT_FALSE(r) << body;
    EXPECT_EQ(r.error().code, ErrorCode::kInvalidArgument) << body;
    EXPECT_EQ(r.error().param, param) << body;
  }
  auto not_json = DecodeMessagesRequest("{");
  ASSERT_FALSE(not_json);
  EXPECT_EQ(not_json.error().code, ErrorCode::kInvalidArgument);
  ASSERT_FALSE(DecodeMessagesRequest("[1]"));
}

TEST(AnthropicRequest, SystemStringAndBlocksBecomeLeadingSystemMessages) {
  auto r = DecodeMessagesRequest(R"({"model":"m","max_tokens":5,
    "system":[{"type":"text","text":"You are Claude Code."},
              {"type":"text","text":"Project rules...","cache_control":{"type":"ephemeral","ttl":"1h"}}],
    "messages":[{"role":"user","content":"hi"}]})");
  ASSERT_TRUE(r);
  ASSERT_EQ(r->messages.size(), 3u);
  EXPECT_EQ(r->messages[0].role, Role::kSystem);
  EXPECT_EQ(MessageText(r->messages[0]), "You are Claude Code.");
  EXPECT_EQ(r->messages[1].role, Role::kSystem);
  EXPECT_EQ(std::get<TextPart>(r->messages[1].parts[0]).cache_control,
            Obj(R"({"type":"ephemeral","ttl":"1h"})"));
  EXPECT_EQ(r->messages[2].role, Role::kUser);

  auto s = DecodeMessagesRequest(
      R"({"model":"m","max_tokens":5,"system":"Be brief.","messages":[{"role":"user","content":"hi"}]})");
  ASSERT_TRUE(s);
  EXPECT_EQ(s->messages[0].role, Role::kSystem);
  EXPECT_EQ(MessageText(s->messages[0]), "Be brief.");
}

TEST(AnthropicRequest, SystemRoleInsideMessagesStaysInPlace) {
  auto r = DecodeMessagesRequest(R"({"model":"m","max_tokens":5,"messages":[
    {"role":"user","content":"first"},
    {"role":"assistant","content":"ok"},
    {"role":"system","content":[{"type":"text","text":"<system-reminder>todo list changed</system-reminder>","cache_control":{"type":"ephemeral"}}]},
    {"role":"user","content":"second"}]})");
  ASSERT_TRUE(r) << r.error().message;
  ASSERT_EQ(r->messages.size(), 4u);
  EXPECT_EQ(r->messages[2].role, Role::kSystem);
  EXPECT_EQ(MessageText(r->messages[2]), "<system-reminder>todo list changed</system-reminder>");
  EXPECT_FALSE(std::get<TextPart>(r->messages[2].parts[0]).cache_control.empty());
}

TEST(AnthropicRequest, ImagesBecomeDataUrisOrUrls) {
  auto r = DecodeMessagesRequest(R"({"model":"m","max_tokens":5,"messages":[{"role":"user","content":[
    {"type":"image","source":{"type":"base64","media_type":"image/png","data":"iVBORw0KGgo="}},
    {"type":"image","source":{"type":"url","url":"https://example.com/cat.jpg"},"cache_control":{"type":"ephemeral"}},
    {"type":"text","text":"What are these?"}]}]})");
  ASSERT_TRUE(r) << r.error().message;
  const auto& parts = r->messages[0].parts;
  ASSERT_EQ(parts.size(), 3u);
  EXPECT_EQ(std::get<ImagePart>(parts[0]).url, "data:image/png;base64,iVBORw0KGgo=");
  EXPECT_EQ(std::get<ImagePart>(parts[1]).url, "https://example.com/cat.jpg");
  EXPECT_FALSE(std::get<ImagePart>(parts[1]).cache_control.empty());
  EXPECT_EQ(std::get<TextPart>(parts[2]).text, "What are these?");
}

TEST(AnthropicRequest, ToolUseAndToolResultsBecomeCallsAndToolMessagesBeforeText) {
  auto r = DecodeMessagesRequest(R"({"model":"m","max_tokens":5,"messages":[
    {"role":"user","content":"Weather in Paris and the time?"},
    {"role":"assistant","content":[
      {"type":"text","text":"Checking."},
      {"type":"tool_use","id":"toolu_1","name":"get_weather","input":{"city":"Paris"}},
      {"type":"tool_use","id":"toolu_2","name":"get_time","input":{}}]},
    {"role":"user","content":[
      {"type":"tool_result","tool_use_id":"toolu_1","content":"18 C, cloudy"},
      {"type":"tool_result","tool_use_id":"toolu_2","is_error":true,"content":[
        {"type":"text","text":"clock unavailable"},
        {"type":"image","source":{"type":"base64","media_type":"image/gif","data":"R0lG"}}]},
      {"type":"text","text":"Summarise please."}]}]})");
  ASSERT_TRUE(r) << r.error().message;
  ASSERT_EQ(r->messages.size(), 5u);
  const auto& assistant = r->messages[1];
  EXPECT_EQ(assistant.role, Role::kAssistant);
  ASSERT_EQ(assistant.parts.size(), 3u);
  const auto& call = std::get<ToolCallPart>(assistant.parts[1]);
  EXPECT_EQ(call.id, "toolu_1");
  EXPECT_EQ(J(call.arguments), J(R"({"city":"Paris"})"));
  EXPECT_EQ(std::get<ToolCallPart>(assistant.parts[2]).arguments, "{}");

  EXPECT_EQ(r->messages[2].role, Role::kTool);
  const auto& first = std::get<ToolResultPart>(r->messages[2].parts[0]);
  EXPECT_EQ(first.tool_call_id, "toolu_1");
  EXPECT_EQ(first.name, "get_weather");  // looked up from the tool_use
  ASSERT_EQ(first.content.size(), 1u);
  EXPECT_EQ(std::get<TextPart>(first.content[0]).text, "18 C, cloudy");
  EXPECT_FALSE(first.is_error);

  EXPECT_EQ(r->messages[3].role, Role::kTool);
  const auto& second = std::get<ToolResultPart>(r->messages[3].parts[0]);
  EXPECT_TRUE(second.is_error);
  EXPECT_EQ(second.name, "get_time");
  ASSERT_EQ(second.content.size(), 2u);
  EXPECT_EQ(std::get<ImagePart>(second.content[1]).url, "data:image/gif;base64,R0lG");

  EXPECT_EQ(r->messages[4].role, Role::kUser);
  EXPECT_EQ(MessageText(r->messages[4]), "Summarise please.");
}

TEST(AnthropicRequest, ThinkingBlocksBecomeReasoningParts) {
  auto r = DecodeMessagesRequest(R"({"model":"m","max_tokens":5,"messages":[
    {"role":"user","content":"q"},
    {"role":"assistant","content":[
      {"type":"thinking","thinking":"Let me think.","signature":"sigA"},
      {"type":"redacted_thinking","data":"encrypted-blob"},
      {"type":"text","text":"Answer."}]},
    {"role":"user","content":"more"}]})");
  ASSERT_TRUE(r) << r.error().message;
  const auto& parts = r->messages[1].parts;
  const auto& thinking = std::get<ReasoningPart>(parts[0]);
  EXPECT_EQ(thinking.kind, ReasoningPart::Kind::kText);
  EXPECT_EQ(thinking.text, "Let me think.");
  EXPECT_EQ(thinking.signature, "sigA");
  EXPECT_EQ(thinking.format, "anthropic-claude-v1");
  const auto& redacted = std::get<ReasoningPart>(parts[1]);
  EXPECT_EQ(redacted.kind, ReasoningPart::Kind::kEncrypted);
  EXPECT_EQ(redacted.data, "encrypted-blob");
}

TEST(AnthropicRequest, EveryThinkingTypeIsAccepted) {
  const std::string head = R"({"model":"m","max_tokens":20000,"messages":[{"role":"user","content":"x"}],)";
  auto enabled = DecodeMessagesRequest(head + R"("thinking":{"type":"enabled","budget_tokens":10000}})");
  ASSERT_TRUE(enabled);
  ASSERT_TRUE(enabled->reasoning);
  EXPECT_EQ(enabled->reasoning->enabled, true);
  EXPECT_EQ(enabled->reasoning->max_tokens, 10000);
  EXPECT_FALSE(enabled->passthrough.contains("thinking"));

  auto disabled = DecodeMessagesRequest(head + R"("thinking":{"type":"disabled"}})");
  ASSERT_TRUE(disabled);
  EXPECT_FALSE(disabled->reasoning->Requested());

  auto adaptive = DecodeMessagesRequest(
      head + R"("thinking":{"type":"adaptive","display":"omitted"},"output_config":{"effort":"max"}})");
  ASSERT_TRUE(adaptive) << adaptive.error().message;
  EXPECT_TRUE(adaptive->reasoning->Requested());
  EXPECT_EQ(adaptive->reasoning->effort, "xhigh");
  EXPECT_EQ(adaptive->passthrough.at("thinking"), J(R"({"type":"adaptive","display":"omitted"})"));
  EXPECT_EQ(adaptive->passthrough.at("output_config"), J(R"({"effort":"max"})"));

  auto with_display = DecodeMessagesRequest(
      head + R"("thinking":{"type":"enabled","budget_tokens":2048,"display":"summarized"}})");
  ASSERT_TRUE(with_display);
  EXPECT_EQ(with_display->reasoning->max_tokens, 2048);
  EXPECT_TRUE(with_display->passthrough.contains("thinking"));

  auto future = DecodeMessagesRequest(head + R"("thinking":{"type":"deliberate","depth":3}})");
  ASSERT_TRUE(future);
  EXPECT_FALSE(future->reasoning);
  EXPECT_TRUE(future->passthrough.contains("thinking"));
}

TEST(AnthropicRequest, CustomToolsServerToolsAndToolChoice) {
  auto r = DecodeMessagesRequest(R"({"model":"m","max_tokens":5,"messages":[{"role":"user","content":"x"}],
    "tools":[
      {"name":"Read","description":"Read a file","input_schema":{"type":"object","properties":{"path":{"type":"string"}},"required":["path"]},"strict":true},
      {"type":"custom","name":"Bash","input_schema":{"type":"object"},"cache_control":{"type":"ephemeral"}},
      {"type":"web_search_20250305","name":"web_search","max_uses":5}],
    "tool_choice":{"type":"any","disable_parallel_tool_use":true}})");
  ASSERT_TRUE(r) << r.error().message;
  ASSERT_EQ(r->tools.size(), 2u);
  EXPECT_EQ(r->tools[0].name, "Read");
  EXPECT_EQ(r->tools[0].description, "Read a file");
  EXPECT_EQ(r->tools[0].parameters.at("required"), J(R"(["path"])"));
  EXPECT_EQ(r->tools[0].strict, true);
  EXPECT_EQ(r->tools[1].name, "Bash");
  EXPECT_FALSE(r->tools[1].cache_control.empty());
  EXPECT_EQ(r->passthrough.at("tools"),
            J(R"([{"type":"web_search_20250305","name":"web_search","max_uses":5}])"));
  ASSERT_TRUE(r->tool_choice);
  EXPECT_EQ(r->tool_choice->mode, ToolChoice::Mode::kRequired);
  EXPECT_EQ(r->parallel_tool_calls, false);

  const std::string head =
      R"({"model":"m","max_tokens":5,"messages":[{"role":"user","content":"x"}],"tool_choice":)";
  auto tool = DecodeMessagesRequest(head + R"({"type":"tool","name":"Read"}})");
  ASSERT_TRUE(tool);
  EXPECT_EQ(tool->tool_choice->mode, ToolChoice::Mode::kFunction);
  EXPECT_EQ(tool->tool_choice->function_name, "Read");
  EXPECT_FALSE(tool->parallel_tool_calls);
  EXPECT_EQ(DecodeMessagesRequest(head + R"({"type":"auto"}})")->tool_choice->mode, ToolChoice::Mode::kAuto);
  EXPECT_EQ(DecodeMessagesRequest(head + R"({"type":"none"}})")->tool_choice->mode, ToolChoice::Mode::kNone);
}

TEST(AnthropicRequest, MetadataUserIdBecomesUser) {
  auto r = DecodeMessagesRequest(
      R"({"model":"m","max_tokens":5,"messages":[{"role":"user","content":"x"}],"metadata":{"user_id":"user_abc_account_123_session_9"}})");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->user, "user_abc_account_123_session_9");
  EXPECT_TRUE(r->metadata.empty());
}

TEST(AnthropicRequest, SamplingStopAndStreamFields) {
  auto r = DecodeMessagesRequest(R"({"model":"m","max_tokens":5,"messages":[{"role":"user","content":"x"}],
    "temperature":0.5,"top_p":0.9,"top_k":40,"stop_sequences":["\n\nHuman:","END"],"stream":true})");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->temperature, 0.5);
  EXPECT_EQ(r->top_p, 0.9);
  EXPECT_EQ(r->top_k, 40);
  EXPECT_EQ(r->stop, (std::vector<std::string>{"\n\nHuman:", "END"}));
  EXPECT_TRUE(r->stream);
}

TEST(AnthropicRequest, UnknownAndBetaOnlyFieldsGoToPassthrough) {
  auto r = DecodeMessagesRequest(R"({"model":"m","max_tokens":5,"messages":[{"role":"user","content":"x"}],
    "service_tier":"auto","container":"container_1","inference_geo":"us",
    "mcp_servers":[{"type":"url","url":"https://mcp.example.com/sse","name":"ex"}],
    "context_management":{"edits":[{"type":"clear_tool_uses_20250919"}]},
    "cache_control":{"type":"ephemeral"},
    "a_field_from_next_year":{"x":1}})");
  ASSERT_TRUE(r) << r.error().message;
  for (const char* key : {"service_tier", "container", "inference_geo", "mcp_servers", "context_management",
                          "cache_control", "a_field_from_next_year"}) {
    EXPECT_TRUE(r->passthrough.contains(key)) << key;
  }
  EXPECT_EQ(r->passthrough.size(), 7u);
}

// OpenRouter accepts its routing fields on its Messages endpoint too
// (@openrouter/sdk 1.3 MessagesRequest); they are Tollgate's, never an
// upstream's.
TEST(AnthropicRequest, OpenRouterRoutingFieldsAreDecodedAndNotPassedOn) {
  auto r = DecodeMessagesRequest(R"({"model":"anthropic/claude","max_tokens":5,
    "messages":[{"role":"user","content":"x"}],
    "provider":{"order":["anthropic","bedrock"],"allow_fallbacks":false,"data_collection":"deny","zdr":true,
      "only":["anthropic"],"ignore":["vertex"],"quantizations":["BF16"],"require_parameters":true,
      "sort":{"by":"latency","partition":"none"},"max_price":{"prompt":3,"completion":"15","request":0.01},
      "preferred_min_throughput":{"p50":40},"preferred_max_latency":0.8},
    "models":["anthropic/claude","openai/gpt"],"session_id":"conv-7","debug":{"routing":true},
    "user":"ignored-when-metadata-names-one","metadata":{"user_id":"u-1"}})");
  ASSERT_TRUE(r) << r.error().message;
  const ProviderPreferences& p = r->provider;
  EXPECT_EQ(p.order, (std::vector<std::string>{"anthropic", "bedrock"}));
  EXPECT_FALSE(p.allow_fallbacks);
  EXPECT_TRUE(p.deny_data_collection);
  EXPECT_TRUE(p.zdr);
  EXPECT_TRUE(p.require_parameters);
  EXPECT_EQ(p.only, (std::vector<std::string>{"anthropic"}));
  EXPECT_EQ(p.ignore, (std::vector<std::string>{"vertex"}));
  EXPECT_EQ(p.quantizations, (std::vector<std::string>{"bf16"}));
  EXPECT_EQ(p.sort, ProviderPreferences::Sort::kLatency);
  EXPECT_EQ(p.partition, ProviderPreferences::Partition::kNone);
  EXPECT_EQ(p.max_prompt_price, 3'000'000'000);
  EXPECT_EQ(p.max_completion_price, 15'000'000'000);
  EXPECT_EQ(p.max_request_price, 10'000'000);
  EXPECT_EQ(p.preferred_min_throughput, 40.0);
  EXPECT_EQ(p.preferred_max_latency_s, 0.8);
  EXPECT_EQ(r->fallback_models, (std::vector<std::string>{"openai/gpt"}));
  EXPECT_EQ(r->session_id, "conv-7");
  EXPECT_TRUE(r->explain_routing);
  EXPECT_EQ(r->user, "u-1");  // the native metadata.user_id first
  EXPECT_TRUE(r->passthrough.empty()) << json::serialize(r->passthrough);
}

TEST(AnthropicRequest, TopLevelUserFillsInWithoutMetadata) {
  auto r = DecodeMessagesRequest(R"({"model":"m","max_tokens":5,"messages":[{"role":"user","content":"x"}],
    "user":"end-user-9"})");
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->user, "end-user-9");
  EXPECT_FALSE(r->passthrough.contains("user"));
  auto bad = DecodeMessagesRequest(R"({"model":"m","max_tokens":5,"messages":[{"role":"user","content":"x"}],
    "user":7})");
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().param, "user");
}

TEST(AnthropicRequest, FallbacksBecomeFallbackModels) {
  const std::string head = R"({"model":"a/m","max_tokens":5,"messages":[{"role":"user","content":"x"}],)";
  auto r = DecodeMessagesRequest(head + R"("fallbacks":[{"model":"b/m"},{"model":"a/m"},{"model":"c/m"}]})");
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->fallback_models, (std::vector<std::string>{"b/m", "c/m"}));
  EXPECT_FALSE(r->passthrough.contains("fallbacks"));

  auto expect_bad = [&](std::string_view extra, std::string_view param) {
    auto bad = DecodeMessagesRequest(head + std::string(extra) + "}");
    ASSERT_FALSE(bad) << extra;
    EXPECT_EQ(bad.error().code, ErrorCode::kInvalidArgument);
    EXPECT_EQ(bad.error().param, param) << bad.error().message;
  };
  expect_bad(R"("fallbacks":[{"model":"b/m"}],"models":["c/m"])", "fallbacks");
  expect_bad(R"("fallbacks":{"model":"b/m"})", "fallbacks");
  expect_bad(R"("fallbacks":[{"model":"b"},{"model":"c"},{"model":"d"},{"model":"e"}])", "fallbacks");
  expect_bad(R"("fallbacks":[{"model":"b"},{"name":"c"}])", "fallbacks.1.model");
}

TEST(AnthropicRequest, BadRoutingFieldsNameTheirPathInAnthropicStyle) {
  const std::string head = R"({"model":"m","max_tokens":5,"messages":[{"role":"user","content":"x"}],)";
  for (const auto& [extra, param] : std::vector<std::pair<std::string, std::string>>{
           {R"("provider":"anthropic")", "provider"},
           {R"("provider":{"order":["a",1]})", "provider.order.1"},
           {R"("provider":{"allow_fallbacks":"no"})", "provider.allow_fallbacks"},
           {R"("provider":{"data_collection":"never"})", "provider.data_collection"},
           {R"("provider":{"sort":"fastest"})", "provider.sort"},
           {R"("provider":{"sort":{"partition":"all"}})", "provider.sort.partition"},
           {R"("provider":{"max_price":{"prompt":"-1"}})", "provider.max_price.prompt"},
           {R"("provider":{"max_price":{"request":{}}})", "provider.max_price.request"},
           {R"("provider":{"preferred_max_latency":"1s"})", "provider.preferred_max_latency"},
           {R"("models":["a",false])", "models.1"},
           {R"("session_id":{})", "session_id"},
           {R"("debug":{"routing":1})", "debug.routing"},
       }) {
    auto r = DecodeMessagesRequest(head + extra + "}");
    ASSERT_FALSE(r) << extra;
    EXPECT_EQ(r.error().code, ErrorCode::kInvalidArgument) << extra;
    EXPECT_EQ(r.error().param, param) << r.error().message;
    EXPECT_EQ(r.error().message.rfind(param + ": ", 0), 0u) << r.error().message;  // Anthropic's "path: what"
  }
}

TEST(AnthropicRequest, StructuredOutputFormatsBecomeResponseFormat) {
  const std::string head = R"({"model":"m","max_tokens":5,"messages":[{"role":"user","content":"x"}],)";
  auto ga = DecodeMessagesRequest(
      head +
      R"("output_config":{"format":{"type":"json_schema","schema":{"type":"object","properties":{"a":{"type":"string"}}}},"effort":"low"}})");
  ASSERT_TRUE(ga) << ga.error().message;
  ASSERT_TRUE(ga->response_format);
  EXPECT_EQ(ga->response_format->type, ResponseFormat::Type::kJsonSchema);
  EXPECT_EQ(ga->response_format->schema.at("type"), "object");
  // format is modelled; effort stays for an Anthropic upstream.
  EXPECT_EQ(ga->passthrough.at("output_config"), J(R"({"effort":"low"})"));
  EXPECT_FALSE(ga->reasoning);  // effort alone does not turn reasoning on

  auto beta =
      DecodeMessagesRequest(head + R"("output_format":{"type":"json_schema","schema":{"type":"object"}}})");
  ASSERT_TRUE(beta);
  ASSERT_TRUE(beta->response_format);
  EXPECT_FALSE(beta->passthrough.contains("output_format"));
}

// A request shaped like the ones Claude Code 2.x sends.
constexpr std::string_view kClaudeCodeRequest = R"({
  "model": "claude-sonnet-4-5",
  "max_tokens": 32000,
  "stream": true,
  "system": [
    {"type": "text", "text": "You are Claude Code, Anthropic's official CLI for Claude."},
    {"type": "text", "text": "Working directory: /repo", "cache_control": {"type": "ephemeral"}}],
  "messages": [
    {"role": "user", "content": [{"type": "text", "text": "Fix the failing test."}]},
    {"role": "assistant", "content": [
      {"type": "thinking", "thinking": "Run the tests first.", "signature": "EuYBCkQYAiJA"},
      {"type": "tool_use", "id": "toolu_01A", "name": "Bash", "input": {"command": "make test", "description": "Run tests"}}]},
    {"role": "user", "content": [
      {"type": "tool_result", "tool_use_id": "toolu_01A", "content": "1 failed", "is_error": true},
      {"type": "text", "text": "<system-reminder>Keep going.</system-reminder>", "cache_control": {"type": "ephemeral"}}]}],
  "tools": [
    {"name": "Bash", "description": "Run a shell command", "input_schema": {"type": "object", "properties": {"command": {"type": "string"}}, "required": ["command"]}},
    {"name": "Read", "description": "Read a file", "input_schema": {"type": "object", "properties": {"file_path": {"type": "string"}}}, "cache_control": {"type": "ephemeral"}}],
  "tool_choice": {"type": "auto"},
  "thinking": {"type": "adaptive"},
  "output_config": {"effort": "high"},
  "context_management": {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
  "metadata": {"user_id": "user_2f1c_account_77_session_abc"}
})";

TEST(AnthropicRequest, DecodesAClaudeCodeRequest) {
  auto r = DecodeMessagesRequest(kClaudeCodeRequest);
  ASSERT_TRUE(r) << r.error().message << " " << r.error().param;
  EXPECT_TRUE(r->stream);
  EXPECT_EQ(r->max_tokens, 32000);
  ASSERT_EQ(r->messages.size(), 6u);  // 2 system, user, assistant, tool, user
  EXPECT_EQ(r->messages[3].role, Role::kAssistant);
  EXPECT_EQ(r->messages[4].role, Role::kTool);
  EXPECT_EQ(std::get<ToolResultPart>(r->messages[4].parts[0]).name, "Bash");
  EXPECT_EQ(r->messages[5].role, Role::kUser);
  EXPECT_EQ(r->tools.size(), 2u);
  EXPECT_EQ(r->user, "user_2f1c_account_77_session_abc");
  EXPECT_EQ(r->reasoning->effort, "high");
  EXPECT_TRUE(r->passthrough.contains("context_management"));
  EXPECT_TRUE(r->passthrough.contains("thinking"));
}

// ---------------------------------------------------------------- outbound request encoding

ChatRequest BaseRequest() {
  ChatRequest r;
  r.model = "anthropic/claude-sonnet-4-5";
  r.max_tokens = 1000;
  return r;
}

Message Msg(Role role, std::vector<ContentPart> parts) { return Message{role, std::move(parts), {}}; }

TextPart Text(std::string text, CacheControl cc = {}) { return TextPart{std::move(text), std::move(cc)}; }

json::object Encode(const ChatRequest& request, RequestOptions options = {}) {
  if (options.upstream_model.empty()) options.upstream_model = "claude-sonnet-4-5-20250929";
  return json::parse(EncodeMessagesRequest(request, options)).as_object();
}

TEST(AnthropicRequest, BlocksWithoutACanonicalFormTravelVerbatimToAnthropic) {
  const std::string body = R"({"model":"m","max_tokens":100,"messages":[
    {"role":"user","content":[
      {"type":"document","source":{"type":"base64","media_type":"application/pdf","data":"JVBERi0="},"cache_control":{"type":"ephemeral"}},
      {"type":"image","source":{"type":"file","file_id":"file_011"}},
      {"type":"text","text":"Summarize both."}]},
    {"role":"assistant","content":[
      {"type":"server_tool_use","id":"srvtoolu_1","name":"web_search","input":{"query":"q"}},
      {"type":"web_search_tool_result","tool_use_id":"srvtoolu_1","content":[]},
      {"type":"text","text":"Done."}]},
    {"role":"user","content":"thanks"}]})";
  auto r = DecodeMessagesRequest(body);
  ASSERT_TRUE(r) << r.error().message;
  const auto& user = r->messages[0].parts;
  ASSERT_EQ(user.size(), 3u);
  ASSERT_TRUE(std::holds_alternative<OpaquePart>(user[0]));
  EXPECT_TRUE(std::get<OpaquePart>(user[0]).essential) << "a document is content the model must read";
  EXPECT_TRUE(std::get<OpaquePart>(user[1]).essential);
  const auto& assistant = r->messages[1].parts;
  EXPECT_FALSE(std::get<OpaquePart>(assistant[0]).essential) << "a server tool's record is history";
  EXPECT_TRUE(ParametersUsed(*r).Has(Param::kDocumentInput));

  // Back to an Anthropic upstream exactly as they came.
  json::object out = Encode(*r);
  const auto& first = out.at("messages").at(0).at("content").as_array();
  EXPECT_EQ(first.at(0), J(R"({"type":"document","source":{"type":"base64","media_type":"application/pdf","data":"JVBERi0="},"cache_control":{"type":"ephemeral"}})"));
  EXPECT_EQ(first.at(1), J(R"({"type":"image","source":{"type":"file","file_id":"file_011"}})"));
  const auto& second = out.at("messages").at(1).at("content").as_array();
  EXPECT_EQ(second.at(0).at("type"), "server_tool_use");
  EXPECT_EQ(second.at(1).at("type"), "web_search_tool_result");
}

TEST(AnthropicEncode, SystemAndDeveloperMessagesGoToTopLevelSystemInOrder) {
  ChatRequest r = BaseRequest();
  r.messages = {Msg(Role::kSystem, {Text("You are helpful.")}),
                Msg(Role::kUser, {Text("hi")}),
                Msg(Role::kDeveloper, {Text("Answer in French.", Obj(R"({"type":"ephemeral"})"))}),
                Msg(Role::kAssistant, {Text("Bonjour")}),
                Msg(Role::kSystem, {Text("Be brief.")}),
                Msg(Role::kUser, {Text("again")})};
  const json::object body = Encode(r);
  EXPECT_EQ(body.at("model"), "claude-sonnet-4-5-20250929");
  EXPECT_EQ(body.at("system"), J(R"([{"type":"text","text":"You are helpful."},
    {"type":"text","text":"Answer in French.","cache_control":{"type":"ephemeral"}},
    {"type":"text","text":"Be brief."}])"));
  EXPECT_EQ(body.at("messages"), J(R"([{"role":"user","content":[{"type":"text","text":"hi"}]},
    {"role":"assistant","content":[{"type":"text","text":"Bonjour"}]},
    {"role":"user","content":[{"type":"text","text":"again"}]}])"));
}

TEST(AnthropicEncode, MergesConsecutiveSameRoleTurns) {
  ChatRequest r = BaseRequest();
  r.messages = {Msg(Role::kUser, {Text("one")}), Msg(Role::kUser, {Text("two")}),
                Msg(Role::kAssistant, {Text("a")}), Msg(Role::kAssistant, {Text("b")}),
                Msg(Role::kUser, {Text("three")})};
  const json::object encoded = Encode(r);
  const json::array& messages = encoded.at("messages").as_array();
  ASSERT_EQ(messages.size(), 3u);
  EXPECT_EQ(messages[0],
            J(R"({"role":"user","content":[{"type":"text","text":"one"},{"type":"text","text":"two"}]})"));
  EXPECT_EQ(messages[1].at("content").as_array().size(), 2u);
}

TEST(AnthropicEncode, ParallelToolResultsShareOneUserTurnBeforeText) {
  ChatRequest r = BaseRequest();
  ToolResultPart a{"toolu_A", "get_weather", {Text("18 C")}, false, {}};
  ToolResultPart b{"toolu_B", "get_time", {}, true, Obj(R"({"type":"ephemeral"})")};
  r.messages = {
      Msg(Role::kUser, {Text("Weather and time?")}),
      Msg(Role::kAssistant, {ToolCallPart{"toolu_A", "get_weather", R"({"city":"Paris"})", {}, {}},
                             ToolCallPart{"toolu_B", "get_time", "", {}, {}}}),
      Msg(Role::kUser, {Text("(also: be quick)")}),
      Msg(Role::kTool, {a}),
      Msg(Role::kTool, {b}),
  };
  const json::object encoded = Encode(r);
  const json::array& messages = encoded.at("messages").as_array();
  ASSERT_EQ(messages.size(), 3u);
  EXPECT_EQ(messages[1].at("content"), J(R"([
    {"type":"tool_use","id":"toolu_A","name":"get_weather","input":{"city":"Paris"}},
    {"type":"tool_use","id":"toolu_B","name":"get_time","input":{}}])"));
  EXPECT_EQ(messages[2], J(R"j({"role":"user","content":[
    {"type":"tool_result","tool_use_id":"toolu_A","content":"18 C"},
    {"type":"tool_result","tool_use_id":"toolu_B","is_error":true,"cache_control":{"type":"ephemeral"}},
    {"type":"text","text":"(also: be quick)"}]})j"));
}

TEST(AnthropicEncode, ToolResultWithImageOrCacheControlUsesBlocks) {
  ChatRequest r = BaseRequest();
  ToolResultPart result{
      "toolu_S", "", {Text("screenshot:"), ImagePart{"data:image/png;base64,AAAA", "", {}}}, false, {}};
  r.messages = {Msg(Role::kAssistant, {ToolCallPart{"toolu_S", "screenshot", "{}", {}, {}}}),
                Msg(Role::kTool, {result})};
  const json::object encoded = Encode(r);
  const json::array& messages = encoded.at("messages").as_array();
  EXPECT_EQ(messages[1].at("content").at(0).at("content"), J(R"([{"type":"text","text":"screenshot:"},
    {"type":"image","source":{"type":"base64","media_type":"image/png","data":"AAAA"}}])"));
}

TEST(AnthropicEncode, MaxTokensIsAlwaysSent) {
  ChatRequest r = BaseRequest();
  r.messages = {Msg(Role::kUser, {Text("hi")})};
  EXPECT_EQ(Encode(r).at("max_tokens"), 1000);
  r.max_tokens.reset();
  EXPECT_EQ(Encode(r).at("max_tokens"), 4096);
  RequestOptions options;
  options.default_max_tokens = 8192;
  EXPECT_EQ(Encode(r, options).at("max_tokens"), 8192);
}

TEST(AnthropicEncode, WhitespaceOnlyStopStringsAreDropped) {
  ChatRequest r = BaseRequest();
  r.messages = {Msg(Role::kUser, {Text("hi")})};
  r.stop = {"\n", "", "  \t", "END", "\n\nHuman:"};
  EXPECT_EQ(Encode(r).at("stop_sequences"), J(R"(["END","\n\nHuman:"])"));
  r.stop = {"\n"};
  EXPECT_FALSE(Encode(r).contains("stop_sequences"));
}

TEST(AnthropicEncode, ToolsAndToolChoiceMap) {
  ChatRequest r = BaseRequest();
  r.messages = {Msg(Role::kUser, {Text("hi")})};
  ToolDefinition weather{"get_weather", "Weather by city",
                         J(R"({"type":"object","properties":{"city":{"type":"string"}}})"), true,
                         Obj(R"({"type":"ephemeral"})")};
  ToolDefinition ping{"ping", "", nullptr, std::nullopt, {}};
  r.tools = {weather, ping};
  json::object body = Encode(r);
  EXPECT_EQ(body.at("tools"), J(R"([
    {"name":"get_weather","description":"Weather by city","input_schema":{"type":"object","properties":{"city":{"type":"string"}}},"strict":true,"cache_control":{"type":"ephemeral"}},
    {"name":"ping","input_schema":{"type":"object","properties":{}}}])"));
  EXPECT_FALSE(body.contains("tool_choice"));

  const std::vector<std::pair<ToolChoice, std::string>> cases = {
      {ToolChoice{ToolChoice::Mode::kAuto, ""}, R"({"type":"auto","disable_parallel_tool_use":true})"},
      {ToolChoice{ToolChoice::Mode::kRequired, ""}, R"({"type":"any","disable_parallel_tool_use":true})"},
      {ToolChoice{ToolChoice::Mode::kFunction, "ping"},
       R"({"type":"tool","name":"ping","disable_parallel_tool_use":true})"},
      {ToolChoice{ToolChoice::Mode::kNone, ""}, R"({"type":"none"})"},
  };
  r.parallel_tool_calls = false;
  for (const auto& [choice, expected] : cases) {
    r.tool_choice = choice;
    EXPECT_EQ(Encode(r).at("tool_choice"), J(expected)) << expected;
  }
  r.tool_choice.reset();
  EXPECT_EQ(Encode(r).at("tool_choice"), J(R"({"type":"auto","disable_parallel_tool_use":true})"));

  r.tools.clear();  // no tools: no tool_choice either
  r.tool_choice = ToolChoice{ToolChoice::Mode::kRequired, ""};
  EXPECT_FALSE(Encode(r).contains("tool_choice"));
}

TEST(AnthropicEncode, SignedThinkingIsReplayedAndUnverifiableReasoningLeftOut) {
  ChatRequest r = BaseRequest();
  ReasoningPart signed_block{ReasoningPart::Kind::kText, "Plan.", "sig1", "", "anthropic-claude-v1", ""};
  ReasoningPart redacted{ReasoningPart::Kind::kEncrypted, "", "", "blob", "anthropic-claude-v1", ""};
  ReasoningPart unsigned_block{ReasoningPart::Kind::kText, "DeepSeek musing", "", "", "", ""};
  ReasoningPart gemini{ReasoningPart::Kind::kText, "g", "gsig", "", "google-gemini-v1", ""};
  ReasoningPart openai{ReasoningPart::Kind::kEncrypted, "", "", "enc", "openai-responses-v1", ""};
  ReasoningPart summary{ReasoningPart::Kind::kSummary, "Summary", "", "", "openai-responses-v1", ""};
  r.messages = {Msg(Role::kUser, {Text("q")}),
                Msg(Role::kAssistant, {signed_block, redacted, unsigned_block, gemini, openai, summary,
                                       ToolCallPart{"toolu_1", "f", "{}", {}, {}}}),
                Msg(Role::kTool, {ToolResultPart{"toolu_1", "f", {Text("done")}, false, {}}})};
  const json::object encoded = Encode(r);
  const json::array& messages = encoded.at("messages").as_array();
  EXPECT_EQ(messages[1].at("content"), J(R"([
    {"type":"thinking","thinking":"Plan.","signature":"sig1"},
    {"type":"redacted_thinking","data":"blob"},
    {"type":"tool_use","id":"toolu_1","name":"f","input":{}}])"));
}

TEST(AnthropicEncode, CacheControlPassesThroughUntouched) {
  ChatRequest r = BaseRequest();
  const CacheControl cc = Obj(R"({"type":"ephemeral","ttl":"1h"})");
  r.messages = {Msg(Role::kUser, {Text("long document", cc), ImagePart{"https://e.com/a.png", "high", cc}}),
                Msg(Role::kAssistant, {ToolCallPart{"toolu_1", "f", R"({"a":1})", {}, cc}}),
                Msg(Role::kTool, {ToolResultPart{"toolu_1", "f", {Text("r", cc)}, false, cc}})};
  const json::object encoded = Encode(r);
  const json::array& messages = encoded.at("messages").as_array();
  EXPECT_EQ(messages[0].at("content").at(0).at("cache_control"), J(R"({"type":"ephemeral","ttl":"1h"})"));
  EXPECT_EQ(messages[0].at("content").at(1),
            J(R"({"type":"image","source":{"type":"url","url":"https://e.com/a.png"},
    "cache_control":{"type":"ephemeral","ttl":"1h"}})"));
  EXPECT_EQ(messages[1].at("content").at(0).at("cache_control"), J(R"({"type":"ephemeral","ttl":"1h"})"));
  EXPECT_EQ(messages[2].at("content").at(0), J(R"({"type":"tool_result","tool_use_id":"toolu_1",
    "content":[{"type":"text","text":"r","cache_control":{"type":"ephemeral","ttl":"1h"}}],
    "cache_control":{"type":"ephemeral","ttl":"1h"}})"));
}

TEST(AnthropicEncode, ImagesBecomeBase64OrUrlSources) {
  ChatRequest r = BaseRequest();
  r.messages = {Msg(Role::kUser, {ImagePart{"data:image/webp;base64,UklGRg==", "", {}},
                                  ImagePart{"http://example.com/x.jpg", "", {}}, Text("describe")})};
  const json::object encoded = Encode(r);
  const json::value& content = encoded.at("messages").at(0).at("content");
  EXPECT_EQ(content.at(0),
            J(R"({"type":"image","source":{"type":"base64","media_type":"image/webp","data":"UklGRg=="}})"));
  EXPECT_EQ(content.at(1), J(R"({"type":"image","source":{"type":"url","url":"http://example.com/x.jpg"}})"));
}

TEST(AnthropicEncode, ReasoningBecomesAThinkingBudget) {
  ChatRequest r = BaseRequest();
  r.messages = {Msg(Role::kUser, {Text("hi")})};
  r.max_tokens = 10000;
  r.temperature = 0.7;
  r.top_k = 5;
  r.top_p = 0.5;

  r.reasoning = ReasoningSettings{"high", std::nullopt, false, std::nullopt};
  json::object body = Encode(r);
  EXPECT_EQ(body.at("thinking"), J(R"({"type":"enabled","budget_tokens":8000})"));
  EXPECT_EQ(body.at("max_tokens"), 10000);
  // Thinking does not combine with these [THINK].
  EXPECT_FALSE(body.contains("temperature"));
  EXPECT_FALSE(body.contains("top_k"));
  EXPECT_FALSE(body.contains("top_p"));

  r.reasoning = ReasoningSettings{"medium", std::nullopt, false, std::nullopt};
  EXPECT_EQ(Encode(r).at("thinking").at("budget_tokens"), 5000);
  r.reasoning = ReasoningSettings{"low", std::nullopt, false, std::nullopt};
  EXPECT_EQ(Encode(r).at("thinking").at("budget_tokens"), 2000);
  r.reasoning = ReasoningSettings{"minimal", std::nullopt, false, std::nullopt};
  EXPECT_EQ(Encode(r).at("thinking").at("budget_tokens"), 2000);
  r.reasoning = ReasoningSettings{"", 3000, false, std::nullopt};
  EXPECT_EQ(Encode(r).at("thinking").at("budget_tokens"), 3000);

  // The caller's max_tokens caps what it pays: never raised. The budget
  // shrinks under it, and below Anthropic's minimum of 1024 there is no
  // thinking.
  r.max_tokens = 3000;
  r.reasoning = ReasoningSettings{"", 5000, false, true};
  body = Encode(r);
  EXPECT_EQ(body.at("thinking").at("budget_tokens"), 2999);
  EXPECT_EQ(body.at("max_tokens"), 3000);
  r.max_tokens = 1000;
  r.reasoning = ReasoningSettings{"low", std::nullopt, false, std::nullopt};
  body = Encode(r);
  EXPECT_FALSE(body.contains("thinking"));
  EXPECT_EQ(body.at("max_tokens"), 1000);
  // Without a caller max_tokens the default is raised to make room.
  r.max_tokens.reset();
  r.reasoning = ReasoningSettings{"", 5000, false, true};
  body = Encode(r);  // default_max_tokens 4096
  EXPECT_EQ(body.at("thinking").at("budget_tokens"), 5000);
  EXPECT_EQ(body.at("max_tokens"), 6024);

  // Off.
  r.reasoning = ReasoningSettings{"none", std::nullopt, false, std::nullopt};
  body = Encode(r);
  EXPECT_FALSE(body.contains("thinking"));
  EXPECT_EQ(body.at("temperature"), 0.7);
  r.reasoning = ReasoningSettings{"high", 4000, false, false};
  EXPECT_FALSE(Encode(r).contains("thinking"));
}

TEST(AnthropicEncode, JsonSchemaResponseFormatBecomesOutputConfigFormat) {
  ChatRequest r = BaseRequest();
  r.messages = {Msg(Role::kUser, {Text("extract")})};
  ResponseFormat rf;
  rf.type = ResponseFormat::Type::kJsonSchema;
  rf.name = "person";
  rf.schema = J(
      R"({"type":"object","properties":{"name":{"type":"string"}},"required":["name"],"additionalProperties":false})");
  r.response_format = rf;
  EXPECT_EQ(Encode(r).at("output_config"), J(R"({"format":{"type":"json_schema","schema":
    {"type":"object","properties":{"name":{"type":"string"}},"required":["name"],"additionalProperties":false}}})"));
  r.response_format = ResponseFormat{};
  r.response_format->type = ResponseFormat::Type::kJsonObject;
  EXPECT_FALSE(Encode(r).contains("output_config"));
}

TEST(AnthropicEncode, UserBecomesMetadataUserId) {
  ChatRequest r = BaseRequest();
  r.messages = {Msg(Role::kUser, {Text("hi")})};
  r.user = "end-user-42";
  r.metadata = Obj(R"({"trace":"abc"})");  // OpenAI-style metadata has no Anthropic field
  EXPECT_EQ(Encode(r).at("metadata"), J(R"({"user_id":"end-user-42"})"));
}

TEST(AnthropicEncode, PassthroughOnlyForAnthropicCallers) {
  ChatRequest r = BaseRequest();
  r.max_tokens = 16000;  // room for a thinking budget
  r.messages = {Msg(Role::kUser, {Text("hi")})};
  r.tools = {ToolDefinition{"f", "", nullptr, std::nullopt, {}}};
  r.reasoning = ReasoningSettings{"high", std::nullopt, false, true};
  r.temperature = 1.0;
  r.passthrough = Obj(R"({"service_tier":"auto","context_management":{"edits":[]},
    "tools":[{"type":"web_search_20250305","name":"web_search"}],
    "thinking":{"type":"adaptive","display":"omitted"},"output_config":{"effort":"high"}})");
  ResponseFormat rf;
  rf.type = ResponseFormat::Type::kJsonSchema;
  rf.schema = J(R"({"type":"object"})");
  r.response_format = rf;

  r.api = ApiFlavor::kOpenAiChat;
  json::object body = Encode(r);
  EXPECT_FALSE(body.contains("service_tier"));
  EXPECT_EQ(body.at("tools").as_array().size(), 1u);
  EXPECT_EQ(body.at("thinking").at("type"), "enabled");
  EXPECT_EQ(body.at("output_config"), J(R"({"format":{"type":"json_schema","schema":{"type":"object"}}})"));

  r.api = ApiFlavor::kAnthropicMessages;
  body = Encode(r);
  EXPECT_EQ(body.at("service_tier"), "auto");
  EXPECT_EQ(body.at("context_management"), J(R"({"edits":[]})"));
  EXPECT_EQ(body.at("tools"), J(R"([{"name":"f","input_schema":{"type":"object","properties":{}}},
    {"type":"web_search_20250305","name":"web_search"}])"));
  EXPECT_EQ(body.at("thinking"), J(R"({"type":"adaptive","display":"omitted"})"));
  EXPECT_EQ(body.at("max_tokens"), 16000);  // the caller's, untouched
  EXPECT_EQ(body.at("temperature"), 1.0);  // the Anthropic caller's own choice
  EXPECT_EQ(body.at("output_config"),
            J(R"({"effort":"high","format":{"type":"json_schema","schema":{"type":"object"}}})"));
}

TEST(AnthropicEncode, BlankTextIsDroppedAndTheFinalAssistantTurnTrimmed) {
  ChatRequest r = BaseRequest();
  r.messages = {Msg(Role::kSystem, {Text("  ")}), Msg(Role::kUser, {Text("q"), Text(""), Text(" \n")}),
                Msg(Role::kAssistant, {Text("\n")}), Msg(Role::kUser, {Text("q2")}),
                Msg(Role::kAssistant, {Text("The answer is ")})};
  const json::object body = Encode(r);
  EXPECT_FALSE(body.contains("system"));
  EXPECT_EQ(body.at("messages"), J(R"([
    {"role":"user","content":[{"type":"text","text":"q"},{"type":"text","text":"q2"}]},
    {"role":"assistant","content":[{"type":"text","text":"The answer is"}]}])"));
}

TEST(AnthropicEncode, ToolLoopBegunOnAnotherModelIsSentWithoutThinking) {
  ChatRequest r = BaseRequest();
  r.max_tokens = 16000;  // room for a thinking budget
  r.reasoning = ReasoningSettings{"high", std::nullopt, false, true};
  ReasoningPart foreign{ReasoningPart::Kind::kText, "deepseek thoughts", "", "", "", ""};
  r.messages = {Msg(Role::kUser, {Text("list files")}),
                Msg(Role::kAssistant, {foreign, ToolCallPart{"call_1", "ls", "{}", {}, {}}}),
                Msg(Role::kTool, {ToolResultPart{"call_1", "ls", {Text("a.txt")}, false, {}}})};
  EXPECT_FALSE(Encode(r).contains("thinking"));

  // The same loop begun on Claude replays its signed thinking and keeps it on.
  std::get<ReasoningPart>(r.messages[1].parts[0]) =
      ReasoningPart{ReasoningPart::Kind::kText, "claude thoughts", "sig", "", "anthropic-claude-v1", ""};
  const json::object encoded = Encode(r);
  EXPECT_EQ(encoded.at("thinking").at("type"), "enabled");
  EXPECT_EQ(encoded.at("messages").at(1).at("content").at(0).at("type"), "thinking");

  // A finished loop (the user spoke last) has no such requirement.
  std::get<ReasoningPart>(r.messages[1].parts[0]) = foreign;
  r.messages.push_back(Msg(Role::kAssistant, {Text("a.txt is there")}));
  r.messages.push_back(Msg(Role::kUser, {Text("thanks")}));
  EXPECT_TRUE(Encode(r).contains("thinking"));
}

TEST(AnthropicEncode, AssistantTurnsNeverEndInThinking) {
  ChatRequest r = BaseRequest();
  ReasoningPart signed_block{ReasoningPart::Kind::kText, "t", "sig", "", "anthropic-claude-v1", ""};
  r.messages = {Msg(Role::kUser, {Text("one")}), Msg(Role::kAssistant, {signed_block, Text(" ")}),
                Msg(Role::kUser, {Text("two")}), Msg(Role::kAssistant, {signed_block, Text("ok")}),
                Msg(Role::kUser, {Text("three")})};
  const json::object encoded = Encode(r);
  EXPECT_EQ(encoded.at("messages"), J(R"([
    {"role":"user","content":[{"type":"text","text":"one"},{"type":"text","text":"two"}]},
    {"role":"assistant","content":[{"type":"thinking","thinking":"t","signature":"sig"},{"type":"text","text":"ok"}]},
    {"role":"user","content":[{"type":"text","text":"three"}]}])"));
}

TEST(AnthropicEncode, PrefillLosesThinkingWhenThinkingIsOff) {
  ChatRequest r = BaseRequest();
  r.max_tokens = 16000;  // room for a thinking budget
  ReasoningPart signed_block{ReasoningPart::Kind::kText, "t", "sig", "", "anthropic-claude-v1", ""};
  r.messages = {Msg(Role::kUser, {Text("q")}), Msg(Role::kAssistant, {signed_block, Text("Sure: ")})};
  EXPECT_EQ(Encode(r).at("messages").at(1),
            J(R"({"role":"assistant","content":[{"type":"text","text":"Sure:"}]})"));
  r.reasoning = ReasoningSettings{"low", std::nullopt, false, true};
  EXPECT_EQ(Encode(r).at("messages").at(1).at("content").as_array().size(), 2u);
}

TEST(AnthropicEncode, StreamFlagFollowsOptions) {
  ChatRequest r = BaseRequest();
  r.messages = {Msg(Role::kUser, {Text("hi")})};
  EXPECT_EQ(Encode(r).at("stream"), true);
  RequestOptions options;
  options.stream = false;
  EXPECT_FALSE(Encode(r, options).contains("stream"));
}

TEST(AnthropicEncode, RequestRoundTripsThroughEncodeAndDecode) {
  ChatRequest r = BaseRequest();
  r.api = ApiFlavor::kAnthropicMessages;
  r.model = "claude-sonnet-4-5-20250929";
  const CacheControl cc = Obj(R"({"type":"ephemeral"})");
  r.messages = {
      Msg(Role::kSystem, {Text("sys", cc)}),
      Msg(Role::kUser, {Text("look"), ImagePart{"data:image/png;base64,AAAA", "", {}}}),
      Msg(Role::kAssistant,
          {ReasoningPart{ReasoningPart::Kind::kText, "hmm", "sig", "", "anthropic-claude-v1", ""},
           Text("calling"), ToolCallPart{"toolu_1", "f", R"({"x":[1,2]})", {}, {}}}),
      Msg(Role::kTool, {ToolResultPart{"toolu_1", "f", {Text("ok")}, true, {}}}),
      Msg(Role::kUser, {Text("thanks")}),
  };
  r.tools = {ToolDefinition{"f", "does f", J(R"({"type":"object"})"), std::nullopt, cc}};
  r.tool_choice = ToolChoice{ToolChoice::Mode::kFunction, "f"};
  r.parallel_tool_calls = true;
  r.stop = {"END"};
  r.temperature = 0.25;
  r.top_k = 3;
  r.user = "u1";
  r.stream = true;
  r.passthrough = Obj(R"({"service_tier":"standard_only"})");

  RequestOptions options;
  options.upstream_model = r.model;
  const std::string encoded = EncodeMessagesRequest(r, options);
  auto decoded = DecodeMessagesRequest(encoded);
  ASSERT_TRUE(decoded) << decoded.error().message;
  EXPECT_EQ(decoded->model, r.model);
  EXPECT_EQ(decoded->max_tokens, r.max_tokens);
  ASSERT_EQ(decoded->messages.size(), r.messages.size());
  for (std::size_t i = 0; i < r.messages.size(); ++i) {
    EXPECT_EQ(decoded->messages[i].role, r.messages[i].role) << i;
    EXPECT_EQ(decoded->messages[i].parts.size(), r.messages[i].parts.size()) << i;
  }
  const auto& reasoning = std::get<ReasoningPart>(decoded->messages[2].parts[0]);
  EXPECT_EQ(reasoning.signature, "sig");
  EXPECT_EQ(std::get<ToolCallPart>(decoded->messages[2].parts[2]).arguments, R"({"x":[1,2]})");
  EXPECT_TRUE(std::get<ToolResultPart>(decoded->messages[3].parts[0]).is_error);
  EXPECT_EQ(decoded->tool_choice->function_name, "f");
  EXPECT_EQ(decoded->parallel_tool_calls, true);
  EXPECT_EQ(decoded->stop, r.stop);
  EXPECT_EQ(decoded->temperature, r.temperature);
  EXPECT_EQ(decoded->top_k, r.top_k);
  EXPECT_EQ(decoded->user, "u1");
  EXPECT_EQ(decoded->passthrough, r.passthrough);
  // And the second trip changes nothing.
  EXPECT_EQ(J(EncodeMessagesRequest(*decoded, options)), J(encoded));
}

TEST(AnthropicEncode, ClaudeCodeRequestRoundTripsToTheSameBody) {
  auto decoded = DecodeMessagesRequest(kClaudeCodeRequest);
  ASSERT_TRUE(decoded);
  RequestOptions options;
  options.upstream_model = "claude-sonnet-4-5";
  EXPECT_EQ(J(EncodeMessagesRequest(*decoded, options)), J(kClaudeCodeRequest));
}

// ---------------------------------------------------------------- responses to Anthropic clients

ResponseMeta Meta() {
  return ResponseMeta{"msg_gw_123", 1700000000, "anthropic/claude-sonnet-4-5", "Anthropic"};
}

std::string EncodeAll(StreamEncoder& encoder, const std::vector<StreamEvent>& events, const Usage& usage) {
  std::string out;
  for (const auto& e : events) out += encoder.Encode(e);
  return out + encoder.Finish(usage);
}

// The checker itself must reject what Claude Code rejects, or the stream
// tests below prove nothing.
TEST(AnthropicStream, ProtocolCheckerRejectsBrokenStreams) {
  const std::string start = Sse(
      {{"message_start",
        R"({"type":"message_start","message":{"id":"m","usage":{"input_tokens":1,"output_tokens":1}}})"}});
  const std::string end = Sse({
      {"message_delta",
       R"({"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":1}})"},
      {"message_stop", R"({"type":"message_stop"})"},
  });
  EXPECT_TRUE(ProtocolViolations(start + end).empty());
  const std::string thinking_in_text = Sse({
      {"content_block_start",
       R"({"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}})"},
      {"content_block_delta",
       R"({"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"x"}})"},
      {"content_block_stop", R"({"type":"content_block_stop","index":0})"},
  });
  EXPECT_FALSE(ProtocolViolations(start + thinking_in_text + end).empty());
  const std::string unsigned_thinking = Sse({
      {"content_block_start",
       R"({"type":"content_block_start","index":0,"content_block":{"type":"thinking","thinking":""}})"},
      {"content_block_stop", R"({"type":"content_block_stop","index":0})"},
  });
  EXPECT_FALSE(ProtocolViolations(start + unsigned_thinking + end).empty());
  const std::string unclosed = Sse({
      {"content_block_start",
       R"({"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}})"},
  });
  EXPECT_FALSE(ProtocolViolations(start + unclosed + end).empty());
  EXPECT_FALSE(ProtocolViolations(start + start + end).empty());
  EXPECT_FALSE(ProtocolViolations(start).empty());
}

TEST(AnthropicStream, TextAnswerHasTheDocumentedEventOrder) {
  StreamEncoder encoder(Meta(), 42);
  Usage usage{52, 7, 10, 0, 0};
  const std::string body = EncodeAll(
      encoder, {TextDelta{0, "Hello"}, TextDelta{0, " world"}, FinishDelta{0, FinishReason::kStop, "stop"}},
      usage);
  EXPECT_TRUE(ProtocolViolations(body).empty()) << body;
  const auto events = ParseSse(body);
  std::vector<std::string> names;
  for (const auto& [name, data] : events) names.push_back(name);
  EXPECT_EQ(names, (std::vector<std::string>{"message_start", "ping", "content_block_start",
                                             "content_block_delta", "content_block_delta",
                                             "content_block_stop", "message_delta", "message_stop"}));
  const json::object& message = events[0].second.at("message").as_object();
  EXPECT_EQ(message.at("id"), "msg_gw_123");
  EXPECT_EQ(message.at("model"), "anthropic/claude-sonnet-4-5");
  EXPECT_EQ(message.at("content"), J("[]"));
  EXPECT_EQ(message.at("usage").at("input_tokens"), 42);  // the hint: no usage yet
  EXPECT_EQ(events[6].second,
            J(R"({"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},
    "usage":{"input_tokens":42,"cache_creation_input_tokens":0,"cache_read_input_tokens":10,"output_tokens":7}})"));
}

TEST(AnthropicStream, InterleavedParallelCallsLoseNoFragment) {
  StreamEncoder encoder(Meta(), 1);
  std::string sse;
  sse += encoder.Encode(ToolCallDelta{0, 0, "call_a", "f", R"({"x":)", ""});
  sse += encoder.Encode(ToolCallDelta{0, 1, "call_b", "g", R"({"y":)", ""});
  sse += encoder.Encode(ToolCallDelta{0, 0, "", "", "1}", ""});
  sse += encoder.Encode(ToolCallDelta{0, 1, "", "", "2}", ""});
  sse += encoder.Encode(FinishDelta{0, FinishReason::kToolCalls, "tool_calls"});
  sse += encoder.Finish(Usage{5, 9});
  // Reassemble what a client would: partial_json per block index.
  std::map<int64_t, std::string> input;
  std::map<int64_t, std::string> ids;
  for (const auto& [type, data] : ParseSse(sse)) {
    if (type == "content_block_start") ids[data.at("index").as_int64()] = data.at("content_block").at("id").as_string().c_str();
    if (type == "content_block_delta") {
      input[data.at("index").as_int64()] += data.at("delta").at("partial_json").as_string().c_str();
    }
  }
  ASSERT_EQ(ids.size(), 2u);
  EXPECT_EQ(ids[0], "call_a");
  EXPECT_EQ(input[0], R"({"x":1})");
  EXPECT_EQ(ids[1], "call_b");
  EXPECT_EQ(input[1], R"({"y":2})");
}

TEST(AnthropicStream, AnErrorFinishEndsWithAnErrorEventNotMessageStop) {
  StreamEncoder encoder(Meta(), 1);
  std::string sse = encoder.Encode(TextDelta{0, "partial"});
  sse += encoder.Encode(FinishDelta{0, FinishReason::kError, "insufficient_system_resource"});
  sse += encoder.Finish(Usage{5, 2});
  const auto events = ParseSse(sse);
  EXPECT_EQ(events.back().first, "error");
  EXPECT_NE(sse.find("insufficient_system_resource"), std::string::npos);
  EXPECT_EQ(sse.find("message_stop"), std::string::npos);

  ChatResponse r;
  r.choices.resize(1);
  r.choices[0].text = "partial";
  r.choices[0].finish = FinishReason::kError;
  EXPECT_TRUE(J(EncodeMessagesResponse(Meta(), r, Usage{5, 2})).at("stop_reason").is_null());
}

TEST(AnthropicStream, AMatchedStopSequenceIsNamed) {
  StreamEncoder encoder(Meta(), 1);
  encoder.Encode(TextDelta{0, "Once upon"});
  encoder.Encode(FinishDelta{0, FinishReason::kStop, "stop", " a time"});
  const auto events = ParseSse(encoder.Finish(Usage{5, 2}));
  const auto& delta = events.at(events.size() - 2).second.at("delta");
  EXPECT_EQ(delta.at("stop_reason"), "stop_sequence");
  EXPECT_EQ(delta.at("stop_sequence"), " a time");

  ChatResponse r;
  r.choices.resize(1);
  r.choices[0].text = "Once upon";
  r.choices[0].finish = FinishReason::kStop;
  r.choices[0].native_finish_reason = "stop_sequence";
  r.choices[0].stop_sequence = " a time";
  const json::value body = J(EncodeMessagesResponse(Meta(), r, Usage{5, 2}));
  EXPECT_EQ(body.at("stop_reason"), "stop_sequence");
  EXPECT_EQ(body.at("stop_sequence"), " a time");
}

TEST(AnthropicStream, MessageStartUsesUsageKnownBeforeContent) {
  StreamEncoder encoder(Meta(), 1);
  Usage early{2125, 1, 2000, 0, 100};
  EXPECT_EQ(encoder.Encode(UsageDelta{early}), "");
  EXPECT_FALSE(encoder.started());
  const std::string first = encoder.Encode(TextDelta{0, "x"});
  EXPECT_TRUE(encoder.started());
  const auto events = ParseSse(first);
  EXPECT_EQ(
      events[0].second.at("message").at("usage"),
      J(R"({"input_tokens":25,"cache_creation_input_tokens":100,"cache_read_input_tokens":2000,"output_tokens":1})"));
}

TEST(AnthropicStream, ThinkingToolCallsAndTextFormValidBlocks) {
  StreamEncoder encoder(Meta(), 10);
  const std::vector<StreamEvent> events = {
      ReasoningDelta{0, 0, ReasoningPart::Kind::kText, "", "", "", "anthropic-claude-v1", ""},
      ReasoningDelta{0, 0, ReasoningPart::Kind::kText, "Think", "", "", "", ""},
      ReasoningDelta{0, 0, ReasoningPart::Kind::kText, " more", "", "", "", ""},
      ReasoningDelta{0, 0, ReasoningPart::Kind::kText, "", "SIG", "", "", ""},
      TextDelta{0, "I'll call two tools."},
      ToolCallDelta{0, 0, "toolu_1", "get_weather", "", ""},
      ToolCallDelta{0, 0, "", "", "{\"city\":", ""},
      ToolCallDelta{0, 0, "", "", "\"Paris\"}", ""},
      ToolCallDelta{0, 1, "toolu_2", "get_time", "", ""},
      FinishDelta{0, FinishReason::kToolCalls, "tool_calls"},
  };
  const std::string body = EncodeAll(encoder, events, Usage{10, 50, 0, 0, 0});
  const auto problems = ProtocolViolations(body);
  EXPECT_TRUE(problems.empty()) << problems.front() << "\n" << body;
  const auto parsed = ParseSse(body);
  // The signature is sent just before the thinking block stops.
  bool signature_found = false;
  for (std::size_t i = 0; i + 1 < parsed.size(); ++i) {
    const auto& data = parsed[i].second;
    if (parsed[i].first == "content_block_delta" && data.at("delta").at("type") == "signature_delta") {
      EXPECT_EQ(data.at("delta").at("signature"), "SIG");
      EXPECT_EQ(parsed[i + 1].first, "content_block_stop");
      signature_found = true;
    }
  }
  EXPECT_TRUE(signature_found);
  EXPECT_EQ(parsed[parsed.size() - 2].second.at("delta").at("stop_reason"), "tool_use");
}

TEST(AnthropicStream, ToolCallWithEmptyArgumentsStillGetsAValidBlock) {
  StreamEncoder encoder(Meta(), 10);
  const std::string body =
      EncodeAll(encoder, {ToolCallDelta{0, 0, "toolu_E", "list_files", "", ""}}, Usage{10, 3, 0, 0, 0});
  EXPECT_TRUE(ProtocolViolations(body).empty()) << body;
  const auto parsed = ParseSse(body);
  std::string input;
  for (const auto& [name, data] : parsed) {
    if (name == "content_block_start") {
      EXPECT_EQ(data.at("content_block"),
                J(R"({"type":"tool_use","id":"toolu_E","name":"list_files","input":{}})"));
    }
    if (name == "content_block_delta") input += S(data.at("delta").at("partial_json"));
  }
  EXPECT_EQ(J(input), J("{}"));
  // Some upstreams end tool-call turns with a plain stop.
  EXPECT_EQ(parsed[parsed.size() - 2].second.at("delta").at("stop_reason"), "tool_use");
}

TEST(AnthropicStream, StopReasonsFollowTheFinish) {
  const std::vector<std::tuple<FinishReason, std::string, std::string>> cases = {
      {FinishReason::kStop, "stop", "end_turn"},
      {FinishReason::kStop, "stop_sequence", "stop_sequence"},
      {FinishReason::kLength, "length", "max_tokens"},
      {FinishReason::kLength, "model_context_window_exceeded", "model_context_window_exceeded"},
      {FinishReason::kContentFilter, "SAFETY", "refusal"},
      {FinishReason::kStop, "pause_turn", "pause_turn"},
  };
  for (const auto& [reason, native, expected] : cases) {
    StreamEncoder encoder(Meta(), 1);
    const std::string body = EncodeAll(encoder, {TextDelta{0, "x"}, FinishDelta{0, reason, native}}, Usage{});
    const auto parsed = ParseSse(body);
    EXPECT_EQ(parsed[parsed.size() - 2].second.at("delta").at("stop_reason"), J("\"" + expected + "\""))
        << native;
  }
  StreamEncoder none(Meta(), 1);
  const auto parsed = ParseSse(EncodeAll(none, {TextDelta{0, "x"}}, Usage{}));
  EXPECT_EQ(parsed[parsed.size() - 2].second.at("delta").at("stop_reason"), "end_turn");
}

TEST(AnthropicStream, EmptyAnswerStillHasMessageStartAndStop) {
  StreamEncoder encoder(Meta(), 5);
  EXPECT_EQ(encoder.Encode(TextDelta{0, ""}), "");
  EXPECT_FALSE(encoder.started());
  const std::string body = encoder.Finish(Usage{5, 0, 0, 0, 0});
  EXPECT_TRUE(ProtocolViolations(body).empty()) << body;
  EXPECT_EQ(ParseSse(body).size(), 4u);  // message_start, ping, message_delta, message_stop
}

TEST(AnthropicStream, OtherChoicesAreIgnored) {
  StreamEncoder encoder(Meta(), 5);
  EXPECT_EQ(encoder.Encode(TextDelta{1, "other"}), "");
  EXPECT_EQ(encoder.Encode(ToolCallDelta{1, 0, "id", "f", "{}", ""}), "");
  EXPECT_FALSE(encoder.started());
}

TEST(AnthropicStream, ForeignReasoningIsShownWithoutItsSignatureOrCiphertext) {
  StreamEncoder encoder(Meta(), 5);
  const std::string body = EncodeAll(
      encoder,
      {ReasoningDelta{0, 0, ReasoningPart::Kind::kText, "gemini thought", "gsig", "", "google-gemini-v1", ""},
       ReasoningDelta{0, 1, ReasoningPart::Kind::kEncrypted, "", "", "enc", "openai-responses-v1", ""},
       ReasoningDelta{0, 2, ReasoningPart::Kind::kEncrypted, "", "", "ant-blob", "anthropic-claude-v1", ""},
       TextDelta{0, "answer"}},
      Usage{});
  EXPECT_TRUE(ProtocolViolations(body).empty()) << body;
  EXPECT_EQ(body.find("gsig"), std::string::npos);
  EXPECT_EQ(body.find("\"enc\""), std::string::npos);
  EXPECT_NE(body.find("gemini thought"), std::string::npos);
  EXPECT_NE(body.find(R"({"type":"redacted_thinking","data":"ant-blob"})"), std::string::npos);
}

TEST(AnthropicStream, ErrorEventHasAnthropicShape) {
  Error error{ErrorCode::kUnavailable, "upstream overloaded", {}, {}};
  const std::string event = StreamEncoder::ErrorEvent(error);
  EXPECT_EQ(event.substr(0, 13), "event: error\n");
  const auto parsed = ParseSse(event);
  ASSERT_EQ(parsed.size(), 1u);
  EXPECT_EQ(parsed[0].second,
            J(R"({"type":"error","error":{"type":"overloaded_error","message":"upstream overloaded"}})"));
}

TEST(AnthropicStream, UpstreamStreamsSurviveDecodeEncodeDecode) {
  for (const std::string* body : {&kTextStream, &kToolStream, &kThinkingStream, &kParallelToolStream}) {
    const Decoded first = DecodeStream(*body);
    ASSERT_FALSE(first.error);
    const ChatResponse original = Accumulate(first.events);
    StreamEncoder encoder(Meta(), 0);
    const std::string reencoded = EncodeAll(encoder, first.events, *original.usage);
    const auto problems = ProtocolViolations(reencoded);
    EXPECT_TRUE(problems.empty()) << problems.front();
    const Decoded second = DecodeStream(reencoded);
    ASSERT_FALSE(second.error);
    EXPECT_TRUE(second.done);
    const ChatResponse again = Accumulate(second.events);
    EXPECT_EQ(again.choices[0].text, original.choices[0].text);
    ASSERT_EQ(again.choices[0].reasoning.size(), original.choices[0].reasoning.size());
    for (std::size_t i = 0; i < again.choices[0].reasoning.size(); ++i) {
      EXPECT_EQ(again.choices[0].reasoning[i].text, original.choices[0].reasoning[i].text);
      EXPECT_EQ(again.choices[0].reasoning[i].signature, original.choices[0].reasoning[i].signature);
    }
    ASSERT_EQ(again.choices[0].tool_calls.size(), original.choices[0].tool_calls.size());
    for (std::size_t i = 0; i < again.choices[0].tool_calls.size(); ++i) {
      EXPECT_EQ(again.choices[0].tool_calls[i].id, original.choices[0].tool_calls[i].id);
      EXPECT_EQ(again.choices[0].tool_calls[i].name, original.choices[0].tool_calls[i].name);
      EXPECT_EQ(J(again.choices[0].tool_calls[i].arguments), J(original.choices[0].tool_calls[i].arguments));
    }
    EXPECT_EQ(again.choices[0].finish, original.choices[0].finish);
    EXPECT_EQ(again.choices[0].native_finish_reason, original.choices[0].native_finish_reason);
    EXPECT_EQ(again.usage, original.usage);
  }
}

// ---------------------------------------------------------------- whole responses to Anthropic clients

TEST(AnthropicResponse, WholeMessageBodyHasEveryBlock) {
  ChatResponse response;
  ChoiceResult choice;
  choice.reasoning = {
      ReasoningPart{ReasoningPart::Kind::kText, "Plan", "sigP", "", "anthropic-claude-v1", ""},
      ReasoningPart{ReasoningPart::Kind::kEncrypted, "", "", "blob", "anthropic-claude-v1", ""}};
  choice.text = "Here you go.";
  choice.tool_calls = {ToolCallPart{"toolu_9", "save", R"({"path":"a"})", {}, {}},
                       ToolCallPart{"toolu_10", "ping", "", {}, {}}};
  choice.finish = FinishReason::kToolCalls;
  choice.native_finish_reason = "tool_calls";
  response.choices = {choice};
  const Usage usage{1100, 40, 1000, 0, 50};
  const json::value body = J(EncodeMessagesResponse(Meta(), response, usage));
  EXPECT_EQ(body,
            J(R"({"id":"msg_gw_123","type":"message","role":"assistant","model":"anthropic/claude-sonnet-4-5",
    "content":[{"type":"thinking","thinking":"Plan","signature":"sigP"},
               {"type":"redacted_thinking","data":"blob"},
               {"type":"text","text":"Here you go."},
               {"type":"tool_use","id":"toolu_9","name":"save","input":{"path":"a"}},
               {"type":"tool_use","id":"toolu_10","name":"ping","input":{}}],
    "stop_reason":"tool_use","stop_sequence":null,
    "usage":{"input_tokens":50,"cache_creation_input_tokens":50,"cache_read_input_tokens":1000,"output_tokens":40}})"));
}

TEST(AnthropicResponse, WholeMessageRoundTripsThroughTheDecoder) {
  ChatResponse response;
  ChoiceResult choice;
  choice.reasoning = {
      ReasoningPart{ReasoningPart::Kind::kText, "Plan", "sigP", "", "anthropic-claude-v1", ""}};
  choice.text = "你好 🙂";
  choice.tool_calls = {ToolCallPart{"toolu_9", "save", R"({"path":"a"})", {}, {}}};
  choice.finish = FinishReason::kLength;
  choice.native_finish_reason = "max_tokens";
  response.choices = {choice};
  response.usage = Usage{300, 40, 200, 0, 0};
  ResponseDecoder decoder;
  std::vector<StreamEvent> events;
  ASSERT_TRUE(decoder.OnWholeResponse(EncodeMessagesResponse(Meta(), response, *response.usage), events));
  const ChatResponse back = Accumulate(events);
  EXPECT_EQ(back.choices[0].text, choice.text);
  EXPECT_EQ(back.choices[0].reasoning[0].signature, "sigP");
  EXPECT_EQ(back.choices[0].tool_calls[0].id, "toolu_9");
  EXPECT_EQ(J(back.choices[0].tool_calls[0].arguments), J(choice.tool_calls[0].arguments));
  EXPECT_EQ(back.choices[0].finish, FinishReason::kLength);
  EXPECT_EQ(back.usage, response.usage);
}

TEST(AnthropicResponse, StopReasonKeepsNativeAnthropicReasons) {
  EXPECT_EQ(StopReason(FinishReason::kStop, "stop_sequence"), "stop_sequence");
  EXPECT_EQ(StopReason(FinishReason::kStop, "pause_turn"), "pause_turn");
  EXPECT_EQ(StopReason(FinishReason::kStop, "stop"), "end_turn");
  EXPECT_EQ(StopReason(FinishReason::kLength, "length"), "max_tokens");
  EXPECT_EQ(StopReason(FinishReason::kToolCalls, "tool_calls"), "tool_use");
  EXPECT_EQ(StopReason(FinishReason::kContentFilter, "content_filter"), "refusal");
}

}  // namespace
}  // namespace tollgate::wire::anthropic
