// Conformance of every remote adapter against its provider's documented wire
// format: ONE table of cases (plain text, system prompts, multi-turn, tool
// round trips, parallel calls, JSON modes, stop, max tokens, images,
// reasoning replay, split UTF-8, upstream errors, cut-off and unterminated
// streams), each with a fixture and the expected outcome per adapter:
//
//   openai     RemoteApi::kOpenAiCompatible, preset "openai"
//   deepseek   RemoteApi::kOpenAiCompatible, preset "deepseek"
//   generic    RemoteApi::kOpenAiCompatible, no preset (a vLLM server)
//   anthropic  RemoteApi::kAnthropic
//   gemini     RemoteApi::kGemini
//   responses  RemoteApi::kOpenAiResponses (OpenAI's own Responses API)
//
// Each (case, adapter) pair is its own test (value-parameterized):
//   SpeaksTheDocumentedWireFormat/<Case>_<adapter>
//                             the request goes through RemoteProvider to a
//                             FakeUpstream that answers with the fixture; the
//                             test checks what the upstream received (path,
//                             auth headers, body fields) and the canonical
//                             outcome (text, reasoning, tool calls, finish,
//                             usage) or error (code, status, param,
//                             retry_after, code_string, provider_name, and no
//                             key / host / port in the message); where the
//                             case says so, the answer then goes back as the
//                             assistant turn of a follow-up request, whose
//                             encoding is checked (reasoning replay);
//   EverySplitGivesTheSameEvents/<Case>_<adapter>
//                             the fixture's body is replayed through
//                             detail::ResponseReader whole, split in two at
//                             every byte boundary, and one byte at a time;
//                             every replay must give exactly the same events
//                             and the same ending.
// Adding a case is one entry in Cases(); adding an adapter is one entry in
// Adapters() and a column in each case (ConformanceTable checks both).
//
// The fixtures are written by hand from the providers' public references,
// never produced by our own encoders (that would be circular). Sources:
//   [OAI-CHAT]   OpenAI API reference, "Create chat completion" and "The chat
//                completion object" (platform.openai.com/docs/api-reference/chat)
//   [OAI-CHUNK]  OpenAI, "The chat completion chunk object" (…/chat-streaming):
//                `data: {chunk}\n\n`, `usage: null` on every chunk but the
//                include_usage one (`choices: []`), then `data: [DONE]`;
//                tool-call deltas {index, id, type, function{name, arguments}}
//   [OAI-ERR]    OpenAI, "Error codes" (platform.openai.com/docs/guides/error-codes):
//                {"error": {message, type, param, code}}
//   [DS-CHAT]    DeepSeek API, "Create Chat Completion"
//                (api-docs.deepseek.com/api/create-chat-completion): OpenAI chunk
//                shape; usage {prompt_tokens, completion_tokens, total_tokens,
//                prompt_cache_hit_tokens, prompt_cache_miss_tokens,
//                completion_tokens_details.reasoning_tokens}
//   [DS-THINK]   DeepSeek, "Thinking Mode" (api-docs.deepseek.com/guides/thinking_mode):
//                `reasoning_content` next to `content`; a turn that called tools
//                must send its reasoning_content back
//   [DS-ERR]     DeepSeek, "Error Codes" (api-docs.deepseek.com/quick_start/error_codes):
//                400, 401, 429, 500, 503; bodies in the OpenAI-compatible shape
//   [VLLM]       vLLM, "OpenAI-Compatible Server" and "Reasoning Outputs"
//                (docs.vllm.ai): the OpenAI chunk shape with `stop_reason`,
//                `delta.reasoning_content`, tool ids "chatcmpl-tool-…", errors
//                {"object": "error", message, type, param, code}
//   [ANT-MSG]    Anthropic, "Messages" (docs.anthropic.com/en/api/messages),
//                version 2023-06-01: Message {id, type, role, content, model,
//                stop_reason, stop_sequence, usage}
//   [ANT-STREAM] Anthropic, "Streaming Messages"
//                (docs.anthropic.com/en/docs/build-with-claude/streaming):
//                named events message_start, content_block_start / _delta /
//                _stop, message_delta, message_stop, ping; text_delta,
//                input_json_delta (first one often ""), thinking_delta,
//                signature_delta (just before the thinking block stops)
//   [ANT-THINK]  Anthropic, "Extended thinking": thinking blocks replayed with
//                their signature; interleaved thinking after tool results with
//                `anthropic-beta: interleaved-thinking-2025-05-14`
//   [ANT-ERR]    Anthropic, "Errors" (docs.anthropic.com/en/api/errors):
//                {"type": "error", "error": {type, message}, "request_id"};
//                429 rate_limit_error with `retry-after`, 529 overloaded_error
//   [GEM-GEN]    Gemini API, "Generating content" (ai.google.dev/api/generate-content):
//                GenerateContentResponse {candidates[{content{parts, role},
//                finishReason, index}], usageMetadata, modelVersion,
//                responseId}; streamGenerateContent?alt=sse sends one such
//                object per `data:` event and no terminator
//   [GEM-THINK]  Gemini, "Thinking" and "Thought signatures"
//                (ai.google.dev/gemini-api/docs/thought-signatures): thought
//                parts {text, thought: true}; thoughtSignature on the first
//                functionCall part of a step, to be returned on that part;
//                "skip_thought_signature_validator" for calls without one
//   [GEM-ERR]    Gemini, "Troubleshooting" (ai.google.dev/gemini-api/docs/troubleshooting)
//                and Google's error model (cloud.google.com/apis/design/errors):
//                {"error": {code, message, status, details}}; 429
//                RESOURCE_EXHAUSTED carries google.rpc.RetryInfo in `details`
//   [RSP]        OpenAI API reference, "Create a model response" and "The response
//                object" (platform.openai.com/docs/api-reference/responses), and the
//                `openai` npm package 6.x types (resources/responses/responses.d.ts):
//                input items (message, function_call, function_call_output,
//                reasoning {id, summary, encrypted_content}), FunctionTool
//                {type, name, parameters, strict}, text.format, ResponseUsage
//                {input_tokens, input_tokens_details.cached_tokens, output_tokens,
//                output_tokens_details.reasoning_tokens}; incomplete_details.reason
//   [RSP-STREAM] OpenAI, "Streaming events" (…/responses-streaming):
//                `event: TYPE` + `data: {type, sequence_number, ...}`;
//                response.created, .in_progress, .output_item.added / .done,
//                .content_part.added / .done, .output_text.delta / .done,
//                .reasoning_summary_part.added, .reasoning_summary_text.delta,
//                .function_call_arguments.delta / .done, then response.completed
//                (or .incomplete / .failed, or an `error` event); no terminator
//   [WIRE]       shared/WIRE-FORMATS.md sections 3.1-3.3
#include "response_reader.hpp"
#include "tollgate/core/parameters.hpp"
#include "tollgate/providers/remote_provider.hpp"

#include "fake_upstream.hpp"
#include "recording_sink.hpp"

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/json.hpp>
#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <ostream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <variant>
#include <vector>

namespace tollgate::providers {
namespace {

namespace json = boost::json;
using namespace std::chrono_literals;
using test_support::RecordingSink;
using testing::FakeRequest;
using testing::FakeResponder;
using testing::FakeUpstream;

// ================================================================ adapters

enum class Adapter { kOpenAi, kDeepSeek, kGeneric, kAnthropic, kGemini, kResponses };

struct AdapterSpec {
  Adapter id;
  const char* name;  // test-name suffix
  RemoteApi api;
  const char* preset;        // kOpenAiCompatible only; "" = generic server
  const char* display_name;  // Provider::Name(), expected in Error::provider_name
  const char* api_key;
  const char* model;      // ProviderRequest::upstream_model unless a case overrides it
  const char* base_path;  // base_url path: up to the API version
};

// The keys are distinctive so that a leak into a URL, a body or a message is
// found by a plain substring search.
const std::vector<AdapterSpec>& Adapters() {
  static const std::vector<AdapterSpec> adapters = {
      {Adapter::kOpenAi, "openai", RemoteApi::kOpenAiCompatible, "openai", "OpenAI", "sk-proj-CONFORMANCEopenaiKEY0001",
       "gpt-4o-mini", "/v1"},
      {Adapter::kDeepSeek, "deepseek", RemoteApi::kOpenAiCompatible, "deepseek", "DeepSeek",
       "sk-CONFORMANCEdeepseekKEY0002", "deepseek-chat", "/v1"},
      {Adapter::kGeneric, "generic", RemoteApi::kOpenAiCompatible, "", "Lab vLLM", "token-CONFORMANCEgenericKEY0003",
       "meta-llama/Llama-3.1-8B-Instruct", "/v1"},
      {Adapter::kAnthropic, "anthropic", RemoteApi::kAnthropic, "", "Anthropic",
       "sk-ant-api03-CONFORMANCEanthropicKEY0004", "claude-sonnet-4-5", "/v1"},
      {Adapter::kGemini, "gemini", RemoteApi::kGemini, "", "Google AI Studio", "AIzaSyCONFORMANCEgeminiKEY0005",
       "gemini-2.5-flash", "/v1beta"},
      {Adapter::kResponses, "responses", RemoteApi::kOpenAiResponses, "", "OpenAI",
       "sk-proj-CONFORMANCEresponsesKEY0006", "gpt-5-mini", "/v1"},
  };
  return adapters;
}

const AdapterSpec& Spec(Adapter a) {
  for (const auto& s : Adapters()) {
    if (s.id == a) return s;
  }
  throw std::logic_error("unknown adapter");
}

// ================================================================ the table's vocabulary

// What the fake upstream answers. The body is `pieces` in order, each one
// HTTP chunk (a separate TCP write) for event streams; a JSON or text body
// goes whole with a Content-Length. "{{KEY}}" in a piece is replaced by the
// adapter's API key (upstreams that echo it).
struct Fixture {
  int status = 200;
  std::string content_type = "text/event-stream";
  std::string retry_after;    // sent as `Retry-After` when not empty
  std::string extra_headers;  // more "Name: value\r\n" lines
  std::vector<std::string> pieces;
  // The connection is closed in the middle of the last piece's HTTP chunk
  // (the chunk announces more bytes than come): a stream cut off upstream.
  bool cut = false;
};

// One JSON-pointer check on the request body the upstream received.
// `expected` is JSON text, or kAbsent: the pointer must not resolve.
struct JsonCheck {
  std::string pointer;  // RFC 6901; "" = the whole body
  std::string expected;
};
constexpr const char* kAbsent = "<absent>";

struct ExpectedReasoning {
  ReasoningPart::Kind kind = ReasoningPart::Kind::kText;
  std::string text;
  std::string signature;
  std::string data;
  std::string format;
};

struct ExpectedCall {
  std::string id;  // "" = one made up by the adapter ("call_" + 24 base62)
  std::string name;
  std::string arguments;  // compared as JSON when both sides parse, else byte for byte
  std::string thought_signature;
};

struct ExpectedError {
  ErrorCode code = ErrorCode::kBadGateway;
  int http = 502;                // HttpStatus(code)
  std::string message;           // exact when not empty
  std::string message_contains;  // substring when not empty
  std::string param;
  std::string retry_after;
  std::string code_string;
};

struct Outcome {
  std::string text;  // all text (for an error: the text delivered before it)
  std::vector<ExpectedReasoning> reasoning;
  std::vector<ExpectedCall> calls;
  std::optional<FinishReason> finish;
  std::string native_finish;
  std::optional<Usage> usage;  // nullopt: none reported
  std::optional<ExpectedError> error;
};

// One adapter's column of a case.
struct AdapterCase {
  Adapter adapter;
  // The request this adapter gets, when not the case's own (a conversation
  // that began on this provider, for reasoning replay).
  std::function<ChatRequest()> request;
  std::string model;  // upstream model, when not the adapter's default
  // Parameters the gateway drops for this adapter before Start
  // (SupportedParameters() lacks them; parameters.hpp).
  std::vector<Param> dropped;
  // An essential parameter this adapter does not support: the gateway never
  // uses the endpoint for the request, so nothing is sent.
  std::optional<Param> unusable;
  // Request headers beyond the adapter's standard ones: name (lower case) ->
  // value, or kAbsent.
  std::vector<std::pair<std::string, std::string>> headers;
  std::vector<JsonCheck> body;
  Fixture reply;
  Outcome expect;
  // When not empty: the answer goes back as the assistant turn of a
  // follow-up request (its reasoning blocks, text and tool calls, in that
  // order, then a tool result "ok" per call, or a user "Thanks!"), and these
  // checks apply to that request's body. Decode then encode must keep what
  // the provider needs to accept its own output again.
  std::vector<JsonCheck> replay;
};

struct Case {
  std::string name;  // PascalCase, part of the test name
  std::function<ChatRequest()> request;
  std::vector<AdapterCase> adapters;
};

// ================================================================ canonical requests

Message Msg(Role role, std::string text) { return Message{role, {TextPart{std::move(text), {}}}, {}}; }
Message User(std::string text) { return Msg(Role::kUser, std::move(text)); }
Message System(std::string text) { return Msg(Role::kSystem, std::move(text)); }

ToolCallPart Call(std::string id, std::string name, std::string arguments, std::string thought_signature = {}) {
  return ToolCallPart{std::move(id), std::move(name), std::move(arguments), std::move(thought_signature), {}};
}

Message AssistantCalls(std::vector<ContentPart> parts) { return Message{Role::kAssistant, std::move(parts), {}}; }

Message ToolResult(std::string call_id, std::string name, std::string text) {
  ToolResultPart result;
  result.tool_call_id = std::move(call_id);
  result.name = std::move(name);
  result.content.emplace_back(TextPart{std::move(text), {}});
  return Message{Role::kTool, {std::move(result)}, {}};
}

constexpr const char* kWeatherSchema =
    R"({"type":"object","properties":{"location":{"type":"string","description":"City name"}},"required":["location"]})";

ToolDefinition WeatherTool() {
  ToolDefinition t;
  t.name = "get_weather";
  t.description = "Current weather for a city";
  t.parameters = json::parse(kWeatherSchema);
  return t;
}

ToolDefinition TimeTool() {
  ToolDefinition t;
  t.name = "get_time";
  t.description = "Current UTC time";
  return t;  // no parameters at all
}

ChatRequest Base(std::vector<Message> messages) {
  ChatRequest r;
  r.model = "conformance/model";
  r.messages = std::move(messages);
  r.stream = true;
  r.include_usage = true;
  return r;
}

// The tool loop that the round-trip cases continue: the user asked for two
// cities, the model called the tool for the first, the tool answered.
std::vector<Message> WeatherHistory() {
  return {User("What's the weather in Paris, then in Tokyo? One call at a time."),
          AssistantCalls({Call("call_paris1", "get_weather", R"({"location":"Paris"})")}),
          ToolResult("call_paris1", "get_weather", "18°C, sunny")};
}

// ================================================================ fixture helpers
//
// Envelopes typed out from the references above; the deltas, parts and usage
// objects are written in each case. Nothing here calls a Tollgate encoder.

const std::string kDone = "data: [DONE]\n\n";

// [OAI-CHUNK]
std::string OpenAiChunk(std::string_view delta, std::string_view finish = "null") {
  return std::string(
             R"(data: {"id":"chatcmpl-BfQz1HdMHkS4qvBnEw5Xk1lQ2xYtP","object":"chat.completion.chunk","created":1749120000,"model":"gpt-4o-mini-2024-07-18","service_tier":"default","system_fingerprint":"fp_34a54ae93c","choices":[{"index":0,"delta":)") +
         std::string(delta) + R"(,"logprobs":null,"finish_reason":)" + std::string(finish) + R"(}],"usage":null})" +
         "\n\n";
}
std::string OpenAiUsage(std::string_view usage) {
  return std::string(
             R"(data: {"id":"chatcmpl-BfQz1HdMHkS4qvBnEw5Xk1lQ2xYtP","object":"chat.completion.chunk","created":1749120000,"model":"gpt-4o-mini-2024-07-18","service_tier":"default","system_fingerprint":"fp_34a54ae93c","choices":[],"usage":)") +
         std::string(usage) + "}\n\n";
}
std::string OpenAiText(std::string_view text) { return OpenAiChunk(R"({"content":")" + std::string(text) + R"("})"); }
const std::string kOpenAiRole = OpenAiChunk(R"({"role":"assistant","content":"","refusal":null})");
std::string OpenAiTokens(int prompt, int completion, int cached = 0, int reasoning = 0) {
  return OpenAiUsage(R"({"prompt_tokens":)" + std::to_string(prompt) + R"(,"completion_tokens":)" +
                     std::to_string(completion) + R"(,"total_tokens":)" + std::to_string(prompt + completion) +
                     R"(,"prompt_tokens_details":{"cached_tokens":)" + std::to_string(cached) +
                     R"(,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":)" +
                     std::to_string(reasoning) +
                     R"(,"audio_tokens":0,"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}})");
}

// [DS-CHAT]
std::string DeepSeekChunk(std::string_view delta, std::string_view finish = "null",
                          std::string_view model = "deepseek-chat") {
  return std::string(
             R"(data: {"id":"5f3c7a52-0c3e-4f1e-9a53-1d2b6f0e8c41","object":"chat.completion.chunk","created":1749120001,"model":")") +
         std::string(model) + R"(","system_fingerprint":"fp_8802369eaa_prod0623","choices":[{"index":0,"delta":)" +
         std::string(delta) + R"(,"logprobs":null,"finish_reason":)" + std::string(finish) + "}]}\n\n";
}
std::string DeepSeekUsage(std::string_view usage, std::string_view model = "deepseek-chat") {
  return std::string(
             R"(data: {"id":"5f3c7a52-0c3e-4f1e-9a53-1d2b6f0e8c41","object":"chat.completion.chunk","created":1749120001,"model":")") +
         std::string(model) + R"(","system_fingerprint":"fp_8802369eaa_prod0623","choices":[],"usage":)" +
         std::string(usage) + "}\n\n";
}
// "Rate Limit" (api-docs.deepseek.com/quick_start/rate_limit): while a request
// waits, streams get SSE keep-alive comments and non-streamed answers empty
// lines before the body.
const std::string kDeepSeekKeepAlive = ": keep-alive\n\n";
std::string DeepSeekText(std::string_view text) {
  return DeepSeekChunk(R"({"content":")" + std::string(text) + R"("})");
}
const std::string kDeepSeekRole = DeepSeekChunk(R"({"role":"assistant","content":""})");
// DeepSeek reports cache hits as prompt_cache_hit_tokens (no
// prompt_tokens_details in the documented usage object).
std::string DeepSeekTokens(int prompt, int completion, int cache_hit = 0, int reasoning = -1,
                           std::string_view model = "deepseek-chat") {
  std::string u = R"({"prompt_tokens":)" + std::to_string(prompt) + R"(,"completion_tokens":)" +
                  std::to_string(completion) + R"(,"total_tokens":)" + std::to_string(prompt + completion) +
                  R"(,"prompt_cache_hit_tokens":)" + std::to_string(cache_hit) + R"(,"prompt_cache_miss_tokens":)" +
                  std::to_string(prompt - cache_hit);
  if (reasoning >= 0) u += R"(,"completion_tokens_details":{"reasoning_tokens":)" + std::to_string(reasoning) + "}";
  return DeepSeekUsage(u + "}", model);
}

// [VLLM]
std::string VllmChunk(std::string_view delta, std::string_view finish = "null") {
  std::string tail = finish == "null" ? "" : R"(,"stop_reason":null)";
  return std::string(
             R"(data: {"id":"chatcmpl-9c2f6e1d7a8b4f03b5e4a1c2d3e4f5a6","object":"chat.completion.chunk","created":1749120002,"model":"meta-llama/Llama-3.1-8B-Instruct","choices":[{"index":0,"delta":)") +
         std::string(delta) + R"(,"logprobs":null,"finish_reason":)" + std::string(finish) + tail + "}]}\n\n";
}
std::string VllmText(std::string_view text) { return VllmChunk(R"({"content":")" + std::string(text) + R"("})"); }
const std::string kVllmRole = VllmChunk(R"({"role":"assistant","content":""})");
std::string VllmTokens(int prompt, int completion) {
  return std::string(
             R"(data: {"id":"chatcmpl-9c2f6e1d7a8b4f03b5e4a1c2d3e4f5a6","object":"chat.completion.chunk","created":1749120002,"model":"meta-llama/Llama-3.1-8B-Instruct","choices":[],"usage":{"prompt_tokens":)") +
         std::to_string(prompt) + R"(,"total_tokens":)" + std::to_string(prompt + completion) +
         R"(,"completion_tokens":)" + std::to_string(completion) + "}}\n\n";
}

// [ANT-STREAM]
std::string AntEvent(std::string_view type, std::string_view data) {
  return "event: " + std::string(type) + "\ndata: " + std::string(data) + "\n\n";
}
std::string AntStart(int input, int cache_creation = 0, int cache_read = 0) {
  return AntEvent(
      "message_start",
      R"({"type":"message_start","message":{"id":"msg_01XFDUDYJgAACzvnptvVoYEL","type":"message","role":"assistant","model":"claude-sonnet-4-5-20250929","content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":)" +
          std::to_string(input) + R"(,"cache_creation_input_tokens":)" + std::to_string(cache_creation) +
          R"(,"cache_read_input_tokens":)" + std::to_string(cache_read) +
          R"(,"cache_creation":{"ephemeral_5m_input_tokens":)" + std::to_string(cache_creation) +
          R"(,"ephemeral_1h_input_tokens":0},"output_tokens":1,"service_tier":"standard"}}})");
}
const std::string kAntPing = AntEvent("ping", R"({"type": "ping"})");
std::string AntTextStart(int index) {
  return AntEvent("content_block_start", R"({"type":"content_block_start","index":)" + std::to_string(index) +
                                             R"(,"content_block":{"type":"text","text":""}})");
}
std::string AntText(int index, std::string_view text) {
  return AntEvent("content_block_delta", R"({"type":"content_block_delta","index":)" + std::to_string(index) +
                                             R"(,"delta":{"type":"text_delta","text":")" + std::string(text) +
                                             R"("}})");
}
std::string AntToolStart(int index, std::string_view id, std::string_view name) {
  return AntEvent("content_block_start", R"({"type":"content_block_start","index":)" + std::to_string(index) +
                                             R"(,"content_block":{"type":"tool_use","id":")" + std::string(id) +
                                             R"(","name":")" + std::string(name) + R"(","input":{}}})");
}
// `partial_json` as it goes on the wire (already JSON-escaped).
std::string AntJson(int index, std::string_view partial_json) {
  return AntEvent("content_block_delta", R"({"type":"content_block_delta","index":)" + std::to_string(index) +
                                             R"(,"delta":{"type":"input_json_delta","partial_json":")" +
                                             std::string(partial_json) + R"("}})");
}
std::string AntBlockStop(int index) {
  return AntEvent("content_block_stop", R"({"type":"content_block_stop","index":)" + std::to_string(index) + "}");
}
std::string AntDelta(std::string_view stop_reason, int output_tokens, std::string_view stop_sequence = "null") {
  return AntEvent("message_delta", R"({"type":"message_delta","delta":{"stop_reason":")" + std::string(stop_reason) +
                                       R"(","stop_sequence":)" + std::string(stop_sequence) +
                                       R"(},"usage":{"output_tokens":)" + std::to_string(output_tokens) + "}}");
}
const std::string kAntStop = AntEvent("message_stop", R"({"type":"message_stop"})");

// [GEM-GEN]. Lines end in CRLF here: WHATWG HTML 9.2.6 allows CRLF, LF or
// CR, and the split replay then also cuts between CR and LF.
std::string GemChunk(std::string_view candidate, std::string_view usage) {
  return std::string(R"(data: {"candidates": [{)") + std::string(candidate) + R"(}],"usageMetadata": )" +
         std::string(usage) + R"(,"modelVersion": "gemini-2.5-flash","responseId": "Xr9iaPmFKbGvz7IPhMaR8Qc"})" +
         "\r\n\r\n";
}
std::string GemParts(std::string_view parts, std::string_view finish = {}) {
  std::string c = R"("content": {"parts": [)" + std::string(parts) + R"(],"role": "model"})";
  if (!finish.empty()) c += R"(,"finishReason": ")" + std::string(finish) + R"(")";
  return c;  // streams leave Candidate.index (proto3 optional) out
}
std::string GemText(std::string_view text) { return R"({"text": ")" + std::string(text) + R"("})"; }
std::string GemUsage(int prompt, int candidates, int thoughts = 0, int cached = 0) {
  std::string u = R"({"promptTokenCount": )" + std::to_string(prompt) + R"(,"candidatesTokenCount": )" +
                  std::to_string(candidates) + R"(,"totalTokenCount": )" +
                  std::to_string(prompt + candidates + thoughts);
  if (cached > 0) u += R"(,"cachedContentTokenCount": )" + std::to_string(cached);
  if (thoughts > 0) u += R"(,"thoughtsTokenCount": )" + std::to_string(thoughts);
  return u + R"(,"promptTokensDetails": [{"modality": "TEXT","tokenCount": )" + std::to_string(prompt) + "}]}";
}

// [RSP-STREAM]. Each Event() is one SSE event (one HTTP chunk) with the next
// sequence number; Message / Reasoning / Call add an output item at the next
// output index (texts and arguments already JSON-escaped) and remember its
// finished form for the final Response object.
std::string RspUsage(int input, int output, int cached = 0, int reasoning = 0) {
  return R"({"input_tokens":)" + std::to_string(input) + R"(,"input_tokens_details":{"cached_tokens":)" +
         std::to_string(cached) + R"(},"output_tokens":)" + std::to_string(output) +
         R"(,"output_tokens_details":{"reasoning_tokens":)" + std::to_string(reasoning) + R"(},"total_tokens":)" +
         std::to_string(input + output) + "}";
}
std::string RspResponse(std::string_view status, std::string_view output, std::string_view usage,
                        std::string_view incomplete = "null", std::string_view error = "null") {
  return std::string(R"({"id":"resp_0f3b6c1a9e2d4b7c0a5e8d1f3c6b9a2e4d7f0c3b6a9e","object":"response","created_at":1756400000,"status":")") +
         std::string(status) + R"(","background":false,"error":)" + std::string(error) + R"(,"incomplete_details":)" +
         std::string(incomplete) +
         R"(,"instructions":null,"max_output_tokens":null,"model":"gpt-5-mini-2025-08-07","output":)" +
         std::string(output) +
         R"(,"parallel_tool_calls":true,"previous_response_id":null,"reasoning":{"effort":"medium","summary":null},)"
         R"("service_tier":"default","store":false,"temperature":1.0,"text":{"format":{"type":"text"},"verbosity":"medium"},)"
         R"("tool_choice":"auto","tools":[],"top_p":1.0,"truncation":"disabled","usage":)" +
         std::string(usage) + R"(,"user":null,"metadata":{}})";
}
class RspStream {
 public:
  RspStream() {
    Event("response.created", R"("response":)" + RspResponse("in_progress", "[]", "null"));
    Event("response.in_progress", R"("response":)" + RspResponse("in_progress", "[]", "null"));
  }
  RspStream& Event(std::string_view type, const std::string& fields) {
    pieces_.push_back("event: " + std::string(type) + "\ndata: {\"type\":\"" + std::string(type) +
                      "\",\"sequence_number\":" + std::to_string(seq_++) + "," + fields + "}\n\n");
    return *this;
  }
  RspStream& Message(const std::vector<std::string>& deltas, bool close = true) {
    const std::string id = "msg_0a1b2c3d4e5f60718293a4b5c6d7e8f9" + std::to_string(index_);
    const std::string at = R"("item_id":")" + id + R"(","output_index":)" + std::to_string(index_) + ",";
    std::string text;
    for (const auto& d : deltas) text += d;
    Event("response.output_item.added", R"("output_index":)" + std::to_string(index_) + R"(,"item":{"id":")" + id +
                                            R"(","type":"message","status":"in_progress","content":[],"role":"assistant"})");
    Event("response.content_part.added",
          at + R"("content_index":0,"part":{"type":"output_text","annotations":[],"logprobs":[],"text":""})");
    for (const auto& d : deltas) {
      Event("response.output_text.delta", at + R"("content_index":0,"delta":")" + d + R"(","logprobs":[])");
    }
    const std::string item = R"({"id":")" + id + R"(","type":"message","status":"completed","content":[{"type":"output_text","annotations":[],"logprobs":[],"text":")" +
                             text + R"("}],"role":"assistant"})";
    if (close) {
      Event("response.output_text.done", at + R"("content_index":0,"text":")" + text + R"(","logprobs":[])");
      Event("response.content_part.done", at + R"("content_index":0,"part":{"type":"output_text","annotations":[],"logprobs":[],"text":")" + text + R"("})");
      Event("response.output_item.done", R"("output_index":)" + std::to_string(index_) + R"(,"item":)" + item);
    }
    output_.push_back(item);
    ++index_;
    return *this;
  }
  RspStream& Reasoning(const std::string& id, const std::vector<std::string>& summaries, const std::string& encrypted) {
    const std::string at = R"("item_id":")" + id + R"(","output_index":)" + std::to_string(index_) + ",";
    Event("response.output_item.added", R"("output_index":)" + std::to_string(index_) + R"(,"item":{"id":")" + id +
                                            R"(","type":"reasoning","encrypted_content":")" + encrypted +
                                            R"(","summary":[]})");
    std::string summary;
    for (std::size_t i = 0; i < summaries.size(); ++i) {
      const std::string n = std::to_string(i);
      Event("response.reasoning_summary_part.added",
            at + R"("summary_index":)" + n + R"(,"part":{"type":"summary_text","text":""})");
      Event("response.reasoning_summary_text.delta", at + R"("summary_index":)" + n + R"(,"delta":")" + summaries[i] + R"(")");
      Event("response.reasoning_summary_text.done", at + R"("summary_index":)" + n + R"(,"text":")" + summaries[i] + R"(")");
      Event("response.reasoning_summary_part.done",
            at + R"("summary_index":)" + n + R"(,"part":{"type":"summary_text","text":")" + summaries[i] + R"("})");
      summary += (i ? "," : "") + std::string(R"({"type":"summary_text","text":")") + summaries[i] + R"("})";
    }
    const std::string item = R"({"id":")" + id + R"(","type":"reasoning","encrypted_content":")" + encrypted +
                             R"(","summary":[)" + summary + "]}";
    Event("response.output_item.done", R"("output_index":)" + std::to_string(index_) + R"(,"item":)" + item);
    output_.push_back(item);
    ++index_;
    return *this;
  }
  // A function call; without deltas, its arguments come only on the done item.
  RspStream& Call(const std::string& call_id, const std::string& name, const std::vector<std::string>& deltas,
                  const std::string& whole = {}) {
    const std::string id = "fc_0a1b2c3d4e5f60718293a4b5c6d7e8f9" + std::to_string(index_);
    const std::string at = R"("item_id":")" + id + R"(","output_index":)" + std::to_string(index_) + ",";
    auto item = [&](const std::string& status, const std::string& arguments) {
      return R"({"id":")" + id + R"(","type":"function_call","status":")" + status + R"(","arguments":")" + arguments +
             R"(","call_id":")" + call_id + R"(","name":")" + name + R"("})";
    };
    std::string arguments = whole;
    for (const auto& d : deltas) arguments += d;
    Event("response.output_item.added", R"("output_index":)" + std::to_string(index_) + R"(,"item":)" + item("in_progress", ""));
    for (const auto& d : deltas) Event("response.function_call_arguments.delta", at + R"("delta":")" + d + R"(")");
    if (!deltas.empty()) Event("response.function_call_arguments.done", at + R"("arguments":")" + arguments + R"(")");
    Event("response.output_item.done", R"("output_index":)" + std::to_string(index_) + R"(,"item":)" + item("completed", arguments));
    output_.push_back(item("completed", arguments));
    ++index_;
    return *this;
  }
  // response.completed, or response.incomplete with `incomplete` details.
  RspStream& Final(const std::string& usage, const std::string& incomplete = "null") {
    std::string output = "[";
    for (std::size_t i = 0; i < output_.size(); ++i) output += (i ? "," : "") + output_[i];
    output += "]";
    const bool complete = incomplete == "null";
    return Event(complete ? "response.completed" : "response.incomplete",
                 R"("response":)" + RspResponse(complete ? "completed" : "incomplete", output, usage, incomplete));
  }
  Fixture Done() const {
    Fixture f;
    f.pieces = pieces_;
    return f;
  }
  Fixture WholeJson(const std::string& usage) const {
    std::string output = "[";
    for (std::size_t i = 0; i < output_.size(); ++i) output += (i ? "," : "") + output_[i];
    return Fixture{200, "application/json", {}, {}, {RspResponse("completed", output + "]", usage)}, false};
  }

 private:
  std::vector<std::string> pieces_;
  std::vector<std::string> output_;
  int seq_ = 0;
  int index_ = 0;
};
std::string RspUser(std::string_view escaped_text) {
  return R"({"type":"message","role":"user","content":[{"type":"input_text","text":")" + std::string(escaped_text) +
         R"("}]})";
}

// `piece` without its last `n` bytes (the rest never arrives).
std::string Cut(const std::string& piece, std::size_t n) { return piece.substr(0, piece.size() - n); }

Fixture Stream(std::vector<std::string> pieces) {
  Fixture f;
  f.pieces = std::move(pieces);
  return f;
}
Fixture AntStream(std::vector<std::string> pieces) {
  Fixture f = Stream(std::move(pieces));
  f.content_type = "text/event-stream; charset=utf-8";
  return f;
}
Fixture CutStream(std::vector<std::string> pieces) {
  Fixture f = Stream(std::move(pieces));
  f.cut = true;
  return f;
}
Fixture Json(int status, std::string body, std::string content_type = "application/json") {
  Fixture f;
  f.status = status;
  f.content_type = std::move(content_type);
  f.pieces = {std::move(body)};
  return f;
}

Usage Tokens(int64_t prompt, int64_t completion, int64_t cached = 0, int64_t reasoning = 0, int64_t cache_write = 0) {
  Usage u;
  u.prompt_tokens = prompt;
  u.completion_tokens = completion;
  u.cached_tokens = cached;
  u.reasoning_tokens = reasoning;
  u.cache_write_tokens = cache_write;
  return u;
}

// ================================================================ the cases
//
// Each case lists its five adapters in the order of Adapters(). Request
// checks come after the standard ones every call gets (CheckStandardRequest:
// method, path, auth headers, model, stream flags, no key in URL or body).

std::vector<JsonCheck> Concat(std::vector<JsonCheck> a, const std::vector<JsonCheck>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

const std::string kOaiWeatherTools =
    std::string(
        R"([{"type":"function","function":{"name":"get_weather","description":"Current weather for a city","parameters":)") +
    kWeatherSchema + "}}]";
const std::string kAntWeatherTools =
    std::string(R"([{"name":"get_weather","description":"Current weather for a city","input_schema":)") +
    kWeatherSchema + "}]";
// [RSP] FunctionTool: flat, `strict` always given.
const std::string kRspWeatherTools =
    std::string(R"([{"type":"function","name":"get_weather","description":"Current weather for a city","parameters":)") +
    kWeatherSchema + R"(,"strict":false}])";
const std::string kGemWeatherTools =
    std::string(
        R"([{"functionDeclarations":[{"name":"get_weather","description":"Current weather for a city","parametersJsonSchema":)") +
    kWeatherSchema + "}]}]";

// WeatherHistory() as each API carries it: the assistant tool-call turn and
// the tool-result turn.
std::vector<JsonCheck> OaiWeatherHistory() {
  return {
      {"/messages/0", R"({"role":"user","content":"What's the weather in Paris, then in Tokyo? One call at a time."})"},
      // [OAI-CHAT]: content null on a turn that only calls tools; arguments a JSON string.
      {"/messages/1",
       R"({"role":"assistant","content":null,"tool_calls":[{"id":"call_paris1","type":"function","function":{"name":"get_weather","arguments":"{\"location\":\"Paris\"}"}}]})"},
      {"/messages/2", R"({"role":"tool","tool_call_id":"call_paris1","content":"18°C, sunny"})"},
      {"/messages/3", kAbsent}};
}
std::vector<JsonCheck> AntWeatherHistory() {
  return {
      {"/messages/0",
       R"({"role":"user","content":[{"type":"text","text":"What's the weather in Paris, then in Tokyo? One call at a time."}]})"},
      // [ANT-MSG]: tool_use `input` is an object; tool_result goes in a user turn.
      {"/messages/1",
       R"({"role":"assistant","content":[{"type":"tool_use","id":"call_paris1","name":"get_weather","input":{"location":"Paris"}}]})"},
      {"/messages/2",
       R"({"role":"user","content":[{"type":"tool_result","tool_use_id":"call_paris1","content":"18°C, sunny"}]})"},
      {"/messages/3", kAbsent}};
}
std::vector<JsonCheck> RspWeatherHistory() {
  return {{"/input/0", RspUser("What's the weather in Paris, then in Tokyo? One call at a time.")},
          // [RSP] function_call and function_call_output items; arguments a JSON string.
          {"/input/1",
           R"({"type":"function_call","call_id":"call_paris1","name":"get_weather","arguments":"{\"location\":\"Paris\"}"})"},
          {"/input/2", R"({"type":"function_call_output","call_id":"call_paris1","output":"18°C, sunny"})"},
          {"/input/3", kAbsent}};
}
std::vector<JsonCheck> GemWeatherHistory() {
  return {
      {"/contents/0",
       R"({"role":"user","parts":[{"text":"What's the weather in Paris, then in Tokyo? One call at a time."}]})"},
      // [GEM-THINK]: a call of the current turn without a signature of its
      // own gets the documented placeholder.
      {"/contents/1",
       R"({"role":"model","parts":[{"functionCall":{"name":"get_weather","args":{"location":"Paris"}},"thoughtSignature":"skip_thought_signature_validator"}]})"},
      {"/contents/2",
       R"({"role":"user","parts":[{"functionResponse":{"name":"get_weather","response":{"result":"18°C, sunny"}}}]})"},
      {"/contents/3", kAbsent}};
}

Case PlainText() {
  return Case{
      "PlainText",
      [] { return Base({User("Say hello")}); },
      {
          {.adapter = Adapter::kOpenAi,
           .body =
               {{"",
                 R"({"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say hello"}],"stream":true,"stream_options":{"include_usage":true}})"}},
           .reply = Stream({kOpenAiRole, OpenAiText("Hello"), OpenAiText(" there!"), OpenAiChunk("{}", R"("stop")"),
                            OpenAiTokens(12, 3), kDone}),
           .expect = {.text = "Hello there!",
                      .finish = FinishReason::kStop,
                      .native_finish = "stop",
                      .usage = Tokens(12, 3)}},
          {.adapter = Adapter::kDeepSeek,
           .body =
               {{"",
                 R"({"model":"deepseek-chat","messages":[{"role":"user","content":"Say hello"}],"stream":true,"stream_options":{"include_usage":true}})"}},
           .reply = Stream({kDeepSeekKeepAlive, kDeepSeekKeepAlive, kDeepSeekRole, DeepSeekText("Hello"),
                            DeepSeekText(" there!"), DeepSeekChunk(R"({"content":""})", R"("stop")"),
                            DeepSeekTokens(12, 3, 8), kDone}),
           // Cached tokens come from prompt_cache_hit_tokens [DS-CHAT].
           .expect = {.text = "Hello there!",
                      .finish = FinishReason::kStop,
                      .native_finish = "stop",
                      .usage = Tokens(12, 3, 8)}},
          {.adapter = Adapter::kGeneric,
           .body =
               {{"",
                 R"({"model":"meta-llama/Llama-3.1-8B-Instruct","messages":[{"role":"user","content":"Say hello"}],"stream":true,"stream_options":{"include_usage":true}})"}},
           .reply = Stream({kVllmRole, VllmText("Hello"), VllmText(" there!"),
                            VllmChunk(R"({"content":""})", R"("stop")"), VllmTokens(12, 3), kDone}),
           .expect = {.text = "Hello there!",
                      .finish = FinishReason::kStop,
                      .native_finish = "stop",
                      .usage = Tokens(12, 3)}},
          {.adapter = Adapter::kAnthropic,
           .body =
               {{"",
                 R"({"model":"claude-sonnet-4-5","max_tokens":4096,"messages":[{"role":"user","content":[{"type":"text","text":"Say hello"}]}],"stream":true})"}},
           .reply = AntStream({AntStart(25, 100, 1000), AntTextStart(0), kAntPing, AntText(0, "Hello"),
                               AntText(0, " there!"), AntBlockStop(0), AntDelta("end_turn", 12), kAntStop}),
           // prompt = input + cache read + cache creation (25 + 1000 + 100) [WIRE 3.2].
           .expect = {.text = "Hello there!",
                      .finish = FinishReason::kStop,
                      .native_finish = "end_turn",
                      .usage = Tokens(1125, 12, 1000, 0, 100)}},
          {.adapter = Adapter::kGemini,
           .body = {{"", R"({"contents":[{"role":"user","parts":[{"text":"Say hello"}]}]})"}},
           // In a response without calls the last part carries the thought
           // signature; in a stream that is an empty text part [GEM-THINK]. It
           // is kept as an encrypted reasoning block for replay.
           .reply = Stream(
               {GemChunk(GemParts(GemText("Hello")), GemUsage(9, 1)),
                GemChunk(GemParts(GemText(" there!")), GemUsage(9, 2)),
                GemChunk(
                    GemParts(
                        R"({"text": "","thoughtSignature": "AY89a18iOcFus5wr5bW5xN6zZ4aUiCyhgmg6HE2YjtYDV/dwZ5oZ="})",
                        "STOP"),
                    GemUsage(9, 3))}),
           // usageMetadata is cumulative: the last chunk's counts, not a sum [WIRE 3.3].
           .expect = {.text = "Hello there!",
                      .reasoning = {{ReasoningPart::Kind::kEncrypted, "", "",
                                     "AY89a18iOcFus5wr5bW5xN6zZ4aUiCyhgmg6HE2YjtYDV/dwZ5oZ=", "google-gemini-v1"}},
                      .finish = FinishReason::kStop,
                      .native_finish = "STOP",
                      .usage = Tokens(9, 3)},
           .replay =
               {{"/contents/1",
                 R"({"role":"model","parts":[{"text":"Hello there!","thoughtSignature":"AY89a18iOcFus5wr5bW5xN6zZ4aUiCyhgmg6HE2YjtYDV/dwZ5oZ="}]})"},
                {"/contents/2", R"({"role":"user","parts":[{"text":"Thanks!"}]})"}}},
          // [RSP]: input items, stateless (store false, encrypted reasoning included).
          {.adapter = Adapter::kResponses,
           .body =
               {{"",
                 R"({"model":"gpt-5-mini","input":[{"type":"message","role":"user","content":[{"type":"input_text","text":"Say hello"}]}],"store":false,"include":["reasoning.encrypted_content"],"stream":true})"}},
           .reply = RspStream().Message({"Hello", " there!"}).Final(RspUsage(12, 3)).Done(),
           .expect = {.text = "Hello there!",
                      .finish = FinishReason::kStop,
                      .native_finish = "completed",
                      .usage = Tokens(12, 3)}},
      }};
}

Case SystemPrompts() {
  return Case{
      "SystemPrompts",
      [] {
        return Base({System("You are terse."), Msg(Role::kDeveloper, "Answer in French."), User("Greet me.")});
      },
      {
          // OpenAI takes `developer` messages (reasoning models need them).
          {.adapter = Adapter::kOpenAi,
           .body =
               {{"/messages",
                 R"([{"role":"system","content":"You are terse."},{"role":"developer","content":"Answer in French."},{"role":"user","content":"Greet me."}])"}},
           .reply = Stream(
               {kOpenAiRole, OpenAiText("Bonjour."), OpenAiChunk("{}", R"("stop")"), OpenAiTokens(24, 3), kDone}),
           .expect =
               {.text = "Bonjour.", .finish = FinishReason::kStop, .native_finish = "stop", .usage = Tokens(24, 3)}},
          // DeepSeek knows no `developer` role: sent as system.
          {.adapter = Adapter::kDeepSeek,
           .body =
               {{"/messages",
                 R"([{"role":"system","content":"You are terse."},{"role":"system","content":"Answer in French."},{"role":"user","content":"Greet me."}])"}},
           .reply = Stream({kDeepSeekRole, DeepSeekText("Bonjour."), DeepSeekChunk(R"({"content":""})", R"("stop")"),
                            DeepSeekTokens(24, 3), kDone}),
           .expect =
               {.text = "Bonjour.", .finish = FinishReason::kStop, .native_finish = "stop", .usage = Tokens(24, 3)}},
          // A generic server gets the messages as the caller wrote them.
          {.adapter = Adapter::kGeneric,
           .body =
               {{"/messages",
                 R"([{"role":"system","content":"You are terse."},{"role":"developer","content":"Answer in French."},{"role":"user","content":"Greet me."}])"}},
           .reply = Stream({kVllmRole, VllmText("Bonjour."), VllmChunk(R"({"content":""})", R"("stop")"),
                            VllmTokens(24, 3), kDone}),
           .expect =
               {.text = "Bonjour.", .finish = FinishReason::kStop, .native_finish = "stop", .usage = Tokens(24, 3)}},
          // Anthropic: a top-level `system`, never a message [ANT-MSG].
          {.adapter = Adapter::kAnthropic,
           .body = {{"/system",
                     R"([{"type":"text","text":"You are terse."},{"type":"text","text":"Answer in French."}])"},
                    {"/messages", R"([{"role":"user","content":[{"type":"text","text":"Greet me."}]}])"}},
           .reply = AntStream({AntStart(21), AntTextStart(0), AntText(0, "Bonjour."), AntBlockStop(0),
                               AntDelta("end_turn", 6), kAntStop}),
           .expect = {.text = "Bonjour.",
                      .finish = FinishReason::kStop,
                      .native_finish = "end_turn",
                      .usage = Tokens(21, 6)}},
          // Gemini: `systemInstruction`, a Content of text parts [GEM-GEN].
          {.adapter = Adapter::kGemini,
           .body = {{"/systemInstruction", R"({"parts":[{"text":"You are terse."},{"text":"Answer in French."}]})"},
                    {"/contents", R"([{"role":"user","parts":[{"text":"Greet me."}]}])"}},
           .reply = Stream({GemChunk(GemParts(GemText("Bonjour."), "STOP"), GemUsage(11, 3))}),
           .expect =
               {.text = "Bonjour.", .finish = FinishReason::kStop, .native_finish = "STOP", .usage = Tokens(11, 3)}},
          // [RSP]: system and developer messages are input items of their role.
          {.adapter = Adapter::kResponses,
           .body = {{"/input",
                     R"([{"type":"message","role":"system","content":[{"type":"input_text","text":"You are terse."}]},{"type":"message","role":"developer","content":[{"type":"input_text","text":"Answer in French."}]},)" +
                         RspUser("Greet me.") + "]"},
                    {"/instructions", kAbsent}},
           .reply = RspStream().Message({"Bonjour."}).Final(RspUsage(24, 3)).Done(),
           .expect = {.text = "Bonjour.",
                      .finish = FinishReason::kStop,
                      .native_finish = "completed",
                      .usage = Tokens(24, 3)}},
      }};
}

Case MultiTurn() {
  return Case{
      "MultiTurn",
      [] {
        ChatRequest r =
            Base({User("My name is Ada."), Msg(Role::kAssistant, "Nice to meet you, Ada."), User("What is my name?")});
        r.user = "user-4711";  // the end user, where the API has a field for it
        return r;
      },
      {
          {.adapter = Adapter::kOpenAi,
           .body =
               {{"/messages",
                 R"([{"role":"user","content":"My name is Ada."},{"role":"assistant","content":"Nice to meet you, Ada."},{"role":"user","content":"What is my name?"}])"},
                {"/user", R"("user-4711")"}},
           .reply = Stream({kOpenAiRole, OpenAiText("Your name is "), OpenAiText("Ada."),
                            OpenAiChunk("{}", R"("stop")"), OpenAiTokens(31, 5), kDone}),
           .expect = {.text = "Your name is Ada.",
                      .finish = FinishReason::kStop,
                      .native_finish = "stop",
                      .usage = Tokens(31, 5)}},
          {.adapter = Adapter::kDeepSeek,
           .dropped = {Param::kUser},
           .body =
               {{"/messages",
                 R"([{"role":"user","content":"My name is Ada."},{"role":"assistant","content":"Nice to meet you, Ada."},{"role":"user","content":"What is my name?"}])"},
                {"/user", kAbsent}},
           .reply = Stream({kDeepSeekRole, DeepSeekText("Your name is "), DeepSeekText("Ada."),
                            DeepSeekChunk(R"({"content":""})", R"("stop")"), DeepSeekTokens(31, 5, 0), kDone}),
           .expect = {.text = "Your name is Ada.",
                      .finish = FinishReason::kStop,
                      .native_finish = "stop",
                      .usage = Tokens(31, 5)}},
          {.adapter = Adapter::kGeneric,
           .body =
               {{"/messages",
                 R"([{"role":"user","content":"My name is Ada."},{"role":"assistant","content":"Nice to meet you, Ada."},{"role":"user","content":"What is my name?"}])"},
                {"/user", R"("user-4711")"}},
           .reply = Stream({kVllmRole, VllmText("Your name is "), VllmText("Ada."),
                            VllmChunk(R"({"content":""})", R"("stop")"), VllmTokens(31, 5), kDone}),
           .expect = {.text = "Your name is Ada.",
                      .finish = FinishReason::kStop,
                      .native_finish = "stop",
                      .usage = Tokens(31, 5)}},
          {.adapter = Adapter::kAnthropic,
           .body =
               {{"/messages",
                 R"([{"role":"user","content":[{"type":"text","text":"My name is Ada."}]},{"role":"assistant","content":[{"type":"text","text":"Nice to meet you, Ada."}]},{"role":"user","content":[{"type":"text","text":"What is my name?"}]}])"},
                // [ANT-MSG] metadata.user_id.
                {"/metadata", R"({"user_id":"user-4711"})"}},
           .reply = AntStream({AntStart(28), AntTextStart(0), AntText(0, "Your name is "), AntText(0, "Ada."),
                               AntBlockStop(0), AntDelta("end_turn", 7), kAntStop}),
           .expect = {.text = "Your name is Ada.",
                      .finish = FinishReason::kStop,
                      .native_finish = "end_turn",
                      .usage = Tokens(28, 7)}},
          // Gemini has no end-user field: dropped.
          {.adapter = Adapter::kGemini,
           .dropped = {Param::kUser},
           .body =
               {{"/contents",
                 R"([{"role":"user","parts":[{"text":"My name is Ada."}]},{"role":"model","parts":[{"text":"Nice to meet you, Ada."}]},{"role":"user","parts":[{"text":"What is my name?"}]}])"},
                {"/user", kAbsent},
                {"/generationConfig", kAbsent}},
           // Implicit caching: cachedContentTokenCount is part of promptTokenCount.
           .reply = Stream({GemChunk(GemParts(GemText("Your name is ")), GemUsage(1040, 3, 0, 1024)),
                            GemChunk(GemParts(GemText("Ada."), "STOP"), GemUsage(1040, 5, 0, 1024))}),
           .expect = {.text = "Your name is Ada.",
                      .finish = FinishReason::kStop,
                      .native_finish = "STOP",
                      .usage = Tokens(1040, 5, 1024)}},
          {.adapter = Adapter::kResponses,
           .body = {{"/input", "[" + RspUser("My name is Ada.") +
                                   R"(,{"type":"message","role":"assistant","content":[{"type":"output_text","text":"Nice to meet you, Ada."}]},)" +
                                   RspUser("What is my name?") + "]"},
                    {"/user", R"("user-4711")"}},
           .reply = RspStream().Message({"Your name is ", "Ada."}).Final(RspUsage(31, 5, 16)).Done(),
           .expect = {.text = "Your name is Ada.",
                      .finish = FinishReason::kStop,
                      .native_finish = "completed",
                      .usage = Tokens(31, 5, 16)}},
      }};
}

// The second step of a tool loop, streamed: the request carries the first
// call and its result; the answer is the next call, its arguments in
// fragments.
Case ToolCallStreamed() {
  return Case{
      "ToolCallRoundTripStreamed",
      [] {
        ChatRequest r = Base(WeatherHistory());
        r.tools = {WeatherTool()};
        r.tool_choice = ToolChoice{ToolChoice::Mode::kRequired, {}};
        return r;
      },
      {
          {.adapter = Adapter::kOpenAi,
           .body = Concat({{"/tools", kOaiWeatherTools}, {"/tool_choice", R"("required")"}}, OaiWeatherHistory()),
           .reply = Stream(
               {OpenAiChunk(
                    R"({"role":"assistant","content":null,"tool_calls":[{"index":0,"id":"call_tokyo7Yx2","type":"function","function":{"name":"get_weather","arguments":""}}],"refusal":null})"),
                OpenAiChunk(R"({"tool_calls":[{"index":0,"function":{"arguments":"{\"lo"}}]})"),
                OpenAiChunk(R"({"tool_calls":[{"index":0,"function":{"arguments":"cation\": \"To"}}]})"),
                OpenAiChunk(R"({"tool_calls":[{"index":0,"function":{"arguments":"kyo\"}"}}]})"),
                OpenAiChunk("{}", R"("tool_calls")"), OpenAiTokens(96, 17), kDone}),
           .expect = {.calls = {{"call_tokyo7Yx2", "get_weather", R"({"location": "Tokyo"})"}},
                      .finish = FinishReason::kToolCalls,
                      .native_finish = "tool_calls",
                      .usage = Tokens(96, 17)},
           .replay =
               {{"/messages/3",
                 R"({"role":"assistant","content":null,"tool_calls":[{"id":"call_tokyo7Yx2","type":"function","function":{"name":"get_weather","arguments":"{\"location\": \"Tokyo\"}"}}]})"},
                {"/messages/4", R"({"role":"tool","tool_call_id":"call_tokyo7Yx2","content":"ok"})"}}},
          {.adapter = Adapter::kDeepSeek,
           .body = Concat({{"/tools", kOaiWeatherTools}, {"/tool_choice", R"("required")"}}, OaiWeatherHistory()),
           .reply = Stream(
               {kDeepSeekKeepAlive,
                DeepSeekChunk(
                    R"({"role":"assistant","content":null,"tool_calls":[{"index":0,"id":"call_0_8f3a2c1e-4b5d-4e6f-9a7b-1c2d3e4f5a6b","type":"function","function":{"name":"get_weather","arguments":""}}]})"),
                DeepSeekChunk(R"({"tool_calls":[{"index":0,"function":{"arguments":"{\"location\":"}}]})"),
                DeepSeekChunk(R"({"tool_calls":[{"index":0,"function":{"arguments":" \"Tokyo\"}"}}]})"),
                DeepSeekChunk(R"({"content":""})", R"("tool_calls")"), DeepSeekTokens(150, 21, 128), kDone}),
           .expect = {.calls = {{"call_0_8f3a2c1e-4b5d-4e6f-9a7b-1c2d3e4f5a6b", "get_weather",
                                 R"({"location": "Tokyo"})"}},
                      .finish = FinishReason::kToolCalls,
                      .native_finish = "tool_calls",
                      .usage = Tokens(150, 21, 128)},
           .replay =
               {{"/messages/3",
                 R"({"role":"assistant","content":null,"tool_calls":[{"id":"call_0_8f3a2c1e-4b5d-4e6f-9a7b-1c2d3e4f5a6b","type":"function","function":{"name":"get_weather","arguments":"{\"location\": \"Tokyo\"}"}}]})"},
                {"/messages/4",
                 R"({"role":"tool","tool_call_id":"call_0_8f3a2c1e-4b5d-4e6f-9a7b-1c2d3e4f5a6b","content":"ok"})"}}},
          {.adapter = Adapter::kGeneric,
           .body = Concat({{"/tools", kOaiWeatherTools}, {"/tool_choice", R"("required")"}}, OaiWeatherHistory()),
           // vLLM's tool parsers send the name first, then argument pieces [VLLM].
           .reply = Stream(
               {kVllmRole,
                VllmChunk(
                    R"({"tool_calls":[{"id":"chatcmpl-tool-3f1e0c2d9b8a4c7e","type":"function","index":0,"function":{"name":"get_weather"}}]})"),
                VllmChunk(R"({"tool_calls":[{"index":0,"function":{"arguments":"{\"location\": \""}}]})"),
                VllmChunk(R"({"tool_calls":[{"index":0,"function":{"arguments":"Tokyo"}}]})"),
                VllmChunk(R"({"tool_calls":[{"index":0,"function":{"arguments":"\"}"}}]})"),
                VllmChunk(R"({"content":""})", R"("tool_calls")"), VllmTokens(240, 20), kDone}),
           .expect = {.calls = {{"chatcmpl-tool-3f1e0c2d9b8a4c7e", "get_weather", R"({"location": "Tokyo"})"}},
                      .finish = FinishReason::kToolCalls,
                      .native_finish = "tool_calls",
                      .usage = Tokens(240, 20)},
           .replay =
               {{"/messages/3",
                 R"({"role":"assistant","content":null,"tool_calls":[{"id":"chatcmpl-tool-3f1e0c2d9b8a4c7e","type":"function","function":{"name":"get_weather","arguments":"{\"location\": \"Tokyo\"}"}}]})"},
                {"/messages/4", R"({"role":"tool","tool_call_id":"chatcmpl-tool-3f1e0c2d9b8a4c7e","content":"ok"})"}}},
          {.adapter = Adapter::kAnthropic,
           .body = Concat({{"/tools", kAntWeatherTools}, {"/tool_choice", R"({"type":"any"})"}}, AntWeatherHistory()),
           .reply = AntStream({AntStart(412), AntToolStart(0, "toolu_01T1x1fJ34qAmk2tNTrN7Up6", "get_weather"),
                               AntJson(0, ""), AntJson(0, R"({\"location\": \"Tok)"), AntJson(0, R"(yo\"})"),
                               AntBlockStop(0), AntDelta("tool_use", 56), kAntStop}),
           .expect = {.calls = {{"toolu_01T1x1fJ34qAmk2tNTrN7Up6", "get_weather", R"({"location": "Tokyo"})"}},
                      .finish = FinishReason::kToolCalls,
                      .native_finish = "tool_use",
                      .usage = Tokens(412, 56)},
           .replay =
               {{"/messages/3",
                 R"({"role":"assistant","content":[{"type":"tool_use","id":"toolu_01T1x1fJ34qAmk2tNTrN7Up6","name":"get_weather","input":{"location":"Tokyo"}}]})"},
                {"/messages/4",
                 R"({"role":"user","content":[{"type":"tool_result","tool_use_id":"toolu_01T1x1fJ34qAmk2tNTrN7Up6","content":"ok"}]})"}}},
          {.adapter = Adapter::kGemini,
           .body =
               Concat({{"/tools", kGemWeatherTools}, {"/toolConfig", R"({"functionCallingConfig":{"mode":"ANY"}})"}},
                      GemWeatherHistory()),
           // A functionCall arrives whole; Gemini gives it no id [GEM-GEN].
           .reply = Stream(
               {GemChunk(GemParts(R"({"functionCall": {"name": "get_weather","args": {"location": "Tokyo"}}})", "STOP"),
                         GemUsage(118, 16))}),
           .expect = {.calls = {{"", "get_weather", R"({"location":"Tokyo"})"}},
                      .finish = FinishReason::kToolCalls,
                      .native_finish = "STOP",
                      .usage = Tokens(118, 16)},
           // The made-up id never reaches Gemini; the result finds its
           // function name through it. Calls of the current turn without a
           // signature get the documented placeholder [GEM-THINK].
           .replay =
               {{"/contents/3",
                 R"({"role":"model","parts":[{"functionCall":{"name":"get_weather","args":{"location":"Tokyo"}},"thoughtSignature":"skip_thought_signature_validator"}]})"},
                {"/contents/4",
                 R"({"role":"user","parts":[{"functionResponse":{"name":"get_weather","response":{"result":"ok"}}}]})"}}},
          {.adapter = Adapter::kResponses,
           .body = Concat({{"/tools", kRspWeatherTools}, {"/tool_choice", R"("required")"}}, RspWeatherHistory()),
           .reply = RspStream()
                        .Call("call_tokyo9Rs", "get_weather", {R"({\"lo)", R"(cation\": \"To)", R"(kyo\"})"})
                        .Final(RspUsage(96, 17))
                        .Done(),
           .expect = {.calls = {{"call_tokyo9Rs", "get_weather", R"({"location": "Tokyo"})"}},
                      .finish = FinishReason::kToolCalls,
                      .native_finish = "completed",
                      .usage = Tokens(96, 17)},
           .replay =
               {{"/input/3",
                 R"({"type":"function_call","call_id":"call_tokyo9Rs","name":"get_weather","arguments":"{\"location\": \"Tokyo\"}"})"},
                {"/input/4", R"({"type":"function_call_output","call_id":"call_tokyo9Rs","output":"ok"})"}}},
      }};
}

// The same step answered as one JSON document (an upstream that ignores
// `stream: true`; the caller did not ask to stream either), with a forced
// function.
Case ToolCallWhole() {
  return Case{
      "ToolCallRoundTripNonStreamed",
      [] {
        ChatRequest r = Base(WeatherHistory());
        r.stream = false;
        r.include_usage = false;
        r.tools = {WeatherTool()};
        r.tool_choice = ToolChoice{ToolChoice::Mode::kFunction, "get_weather"};
        return r;
      },
      {
          {.adapter = Adapter::kOpenAi,
           .body = Concat({{"/tools", kOaiWeatherTools},
                           {"/tool_choice", R"({"type":"function","function":{"name":"get_weather"}})"}},
                          OaiWeatherHistory()),
           // [OAI-CHAT] "The chat completion object".
           .reply = Json(200, R"({
  "id": "chatcmpl-BfR0aYk9nQ2wXk3lPq7Rt5Uv8Wz1",
  "object": "chat.completion",
  "created": 1749120010,
  "model": "gpt-4o-mini-2024-07-18",
  "choices": [
    {
      "index": 0,
      "message": {
        "role": "assistant",
        "content": null,
        "tool_calls": [
          {
            "id": "call_tokyo7Yx2",
            "type": "function",
            "function": {
              "name": "get_weather",
              "arguments": "{\"location\":\"Tokyo\"}"
            }
          }
        ],
        "refusal": null,
        "annotations": []
      },
      "logprobs": null,
      "finish_reason": "tool_calls"
    }
  ],
  "usage": {
    "prompt_tokens": 96,
    "completion_tokens": 15,
    "total_tokens": 111,
    "prompt_tokens_details": {"cached_tokens": 64, "audio_tokens": 0},
    "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0, "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}
  },
  "service_tier": "default",
  "system_fingerprint": "fp_34a54ae93c"
}
)",
                         "application/json; charset=utf-8"),
           .expect = {.calls = {{"call_tokyo7Yx2", "get_weather", R"({"location":"Tokyo"})"}},
                      .finish = FinishReason::kToolCalls,
                      .native_finish = "tool_calls",
                      .usage = Tokens(96, 15, 64)}},
          {.adapter = Adapter::kDeepSeek,
           .body = Concat({{"/tools", kOaiWeatherTools},
                           {"/tool_choice", R"({"type":"function","function":{"name":"get_weather"}})"}},
                          OaiWeatherHistory()),
           // [DS-CHAT] non-streamed response, after the empty lines DeepSeek
           // sends while the request waits.
           .reply = Json(
               200,
               "\n\n\n"
               R"({"id":"0b9c3f2e-7d41-4a8e-b1c5-6e2f9d8a7c3b","object":"chat.completion","created":1749120011,"model":"deepseek-chat","choices":[{"index":0,"message":{"role":"assistant","content":"","tool_calls":[{"index":0,"id":"call_0_2d7e9f1a-3b4c-4d5e-8f6a-7b8c9d0e1f2a","type":"function","function":{"name":"get_weather","arguments":"{\"location\": \"Tokyo\"}"}}]},"logprobs":null,"finish_reason":"tool_calls"}],"usage":{"prompt_tokens":150,"completion_tokens":21,"total_tokens":171,"prompt_cache_hit_tokens":128,"prompt_cache_miss_tokens":22},"system_fingerprint":"fp_8802369eaa_prod0623"})"),
           .expect = {.calls = {{"call_0_2d7e9f1a-3b4c-4d5e-8f6a-7b8c9d0e1f2a", "get_weather",
                                 R"({"location": "Tokyo"})"}},
                      .finish = FinishReason::kToolCalls,
                      .native_finish = "tool_calls",
                      .usage = Tokens(150, 21, 128)}},
          {.adapter = Adapter::kGeneric,
           .body = Concat({{"/tools", kOaiWeatherTools},
                           {"/tool_choice", R"({"type":"function","function":{"name":"get_weather"}})"}},
                          OaiWeatherHistory()),
           .reply = Json(
               200,
               R"({"id":"chatcmpl-7e6d5c4b3a2f1e0d9c8b7a6f5e4d3c2b","object":"chat.completion","created":1749120012,"model":"meta-llama/Llama-3.1-8B-Instruct","choices":[{"index":0,"message":{"role":"assistant","reasoning_content":null,"content":null,"tool_calls":[{"id":"chatcmpl-tool-a1b2c3d4e5f60718","type":"function","function":{"name":"get_weather","arguments":"{\"location\": \"Tokyo\"}"}}]},"logprobs":null,"finish_reason":"tool_calls","stop_reason":128008}],"usage":{"prompt_tokens":240,"total_tokens":260,"completion_tokens":20,"prompt_tokens_details":null},"prompt_logprobs":null})"),
           .expect = {.calls = {{"chatcmpl-tool-a1b2c3d4e5f60718", "get_weather", R"({"location": "Tokyo"})"}},
                      .finish = FinishReason::kToolCalls,
                      .native_finish = "tool_calls",
                      .usage = Tokens(240, 20)}},
          {.adapter = Adapter::kAnthropic,
           .body = Concat({{"/tools", kAntWeatherTools}, {"/tool_choice", R"({"type":"tool","name":"get_weather"})"}},
                          AntWeatherHistory()),
           // [ANT-MSG] a whole Message; a forced tool gets no text before it.
           .reply = Json(
               200,
               R"({"id":"msg_01Aq9w938a90dw8qKqMZ7yTh","type":"message","role":"assistant","model":"claude-sonnet-4-5-20250929","content":[{"type":"tool_use","id":"toolu_01A09q90qw90lq917835lq9","name":"get_weather","input":{"location":"Tokyo"}}],"stop_reason":"tool_use","stop_sequence":null,"usage":{"input_tokens":412,"cache_creation_input_tokens":0,"cache_read_input_tokens":256,"output_tokens":40}})"),
           .expect = {.calls = {{"toolu_01A09q90qw90lq917835lq9", "get_weather", R"({"location":"Tokyo"})"}},
                      .finish = FinishReason::kToolCalls,
                      .native_finish = "tool_use",
                      .usage = Tokens(668, 40, 256)}},
          {.adapter = Adapter::kGemini,
           .body = Concat(
               {{"/tools", kGemWeatherTools},
                {"/toolConfig", R"({"functionCallingConfig":{"mode":"ANY","allowedFunctionNames":["get_weather"]}})"}},
               GemWeatherHistory()),
           // [GEM-GEN] a generateContent answer, pretty-printed as the REST API does.
           .reply = Json(200, R"({
  "candidates": [
    {
      "content": {
        "parts": [
          {
            "functionCall": {
              "name": "get_weather",
              "args": {
                "location": "Tokyo"
              }
            }
          }
        ],
        "role": "model"
      },
      "finishReason": "STOP",
      "index": 0
    }
  ],
  "usageMetadata": {
    "promptTokenCount": 118,
    "candidatesTokenCount": 16,
    "totalTokenCount": 134,
    "promptTokensDetails": [
      {
        "modality": "TEXT",
        "tokenCount": 118
      }
    ]
  },
  "modelVersion": "gemini-2.5-flash",
  "responseId": "kL9iaKqJM9Gvz7IPq-rO4Qk"
}
)",
                         "application/json; charset=UTF-8"),
           .expect = {.calls = {{"", "get_weather", R"({"location":"Tokyo"})"}},
                      .finish = FinishReason::kToolCalls,
                      .native_finish = "STOP",
                      .usage = Tokens(118, 16)}},
          // [RSP] ToolChoiceFunction {type, name}; the whole Response object.
          {.adapter = Adapter::kResponses,
           .body = Concat({{"/tools", kRspWeatherTools}, {"/tool_choice", R"({"type":"function","name":"get_weather"})"}},
                          RspWeatherHistory()),
           .reply = RspStream()
                        .Call("call_wh0le7", "get_weather", {}, R"({\"location\":\"Tokyo\"})")
                        .WholeJson(RspUsage(118, 16, 64)),
           .expect = {.calls = {{"call_wh0le7", "get_weather", R"({"location":"Tokyo"})"}},
                      .finish = FinishReason::kToolCalls,
                      .native_finish = "completed",
                      .usage = Tokens(118, 16, 64)}},
      }};
}

// Two calls in one answer: each must get its own index (WIRE-FORMATS 3.1).
Case ParallelToolCalls() {
  return Case{
      "ParallelToolCalls",
      [] {
        ChatRequest r = Base({User("What's the weather in Paris and in Tokyo?")});
        r.tools = {WeatherTool()};
        r.parallel_tool_calls = true;
        return r;
      },
      {
          {.adapter = Adapter::kOpenAi,
           .body = {{"/tools", kOaiWeatherTools}, {"/parallel_tool_calls", "true"}, {"/tool_choice", kAbsent}},
           .reply = Stream(
               {OpenAiChunk(
                    R"({"role":"assistant","content":null,"tool_calls":[{"index":0,"id":"call_P4r1sWx","type":"function","function":{"name":"get_weather","arguments":""}}],"refusal":null})"),
                OpenAiChunk(R"({"tool_calls":[{"index":0,"function":{"arguments":"{\"location\": \"Paris\"}"}}]})"),
                OpenAiChunk(
                    R"({"tool_calls":[{"index":1,"id":"call_T0ky0Qz","type":"function","function":{"name":"get_weather","arguments":""}}]})"),
                OpenAiChunk(R"({"tool_calls":[{"index":1,"function":{"arguments":"{\"location\": \"Tokyo\"}"}}]})"),
                OpenAiChunk("{}", R"("tool_calls")"), OpenAiTokens(70, 46), kDone}),
           .expect = {.calls = {{"call_P4r1sWx", "get_weather", R"({"location": "Paris"})"},
                                {"call_T0ky0Qz", "get_weather", R"({"location": "Tokyo"})"}},
                      .finish = FinishReason::kToolCalls,
                      .native_finish = "tool_calls",
                      .usage = Tokens(70, 46)},
           .replay = {{"/messages/1/tool_calls/0/id", R"("call_P4r1sWx")"},
                      {"/messages/1/tool_calls/1/id", R"("call_T0ky0Qz")"},
                      {"/messages/2", R"({"role":"tool","tool_call_id":"call_P4r1sWx","content":"ok"})"},
                      {"/messages/3", R"({"role":"tool","tool_call_id":"call_T0ky0Qz","content":"ok"})"}}},
          // DeepSeek does not take parallel_tool_calls: the gateway drops it.
          {.adapter = Adapter::kDeepSeek,
           .dropped = {Param::kParallelToolCalls},
           .body = {{"/tools", kOaiWeatherTools}, {"/parallel_tool_calls", kAbsent}},
           .reply = Stream(
               {DeepSeekChunk(
                    R"({"role":"assistant","content":null,"tool_calls":[{"index":0,"id":"call_0_11111111-2222-4333-8444-555555555555","type":"function","function":{"name":"get_weather","arguments":"{\"location\": \"Paris\"}"}}]})"),
                DeepSeekChunk(
                    R"({"tool_calls":[{"index":1,"id":"call_1_66666666-7777-4888-9999-aaaaaaaaaaaa","type":"function","function":{"name":"get_weather","arguments":"{\"location\": \"Tokyo\"}"}}]})"),
                DeepSeekChunk(R"({"content":""})", R"("tool_calls")"), DeepSeekTokens(140, 44, 0), kDone}),
           .expect =
               {.calls = {{"call_0_11111111-2222-4333-8444-555555555555", "get_weather", R"({"location": "Paris"})"},
                          {"call_1_66666666-7777-4888-9999-aaaaaaaaaaaa", "get_weather", R"({"location": "Tokyo"})"}},
                .finish = FinishReason::kToolCalls,
                .native_finish = "tool_calls",
                .usage = Tokens(140, 44)}},
          {.adapter = Adapter::kGeneric,
           .body = {{"/tools", kOaiWeatherTools}, {"/parallel_tool_calls", "true"}},
           .reply = Stream(
               {kVllmRole,
                VllmChunk(
                    R"({"tool_calls":[{"id":"chatcmpl-tool-0aa1bb2cc3dd4ee5","type":"function","index":0,"function":{"name":"get_weather"}}]})"),
                VllmChunk(R"({"tool_calls":[{"index":0,"function":{"arguments":"{\"location\": \"Paris\"}"}}]})"),
                VllmChunk(
                    R"({"tool_calls":[{"id":"chatcmpl-tool-5ff6aa7bb8cc9dd0","type":"function","index":1,"function":{"name":"get_weather"}}]})"),
                VllmChunk(R"({"tool_calls":[{"index":1,"function":{"arguments":"{\"location\": \"Tokyo\"}"}}]})"),
                VllmChunk(R"({"content":""})", R"("tool_calls")"), VllmTokens(230, 40), kDone}),
           .expect = {.calls = {{"chatcmpl-tool-0aa1bb2cc3dd4ee5", "get_weather", R"({"location": "Paris"})"},
                                {"chatcmpl-tool-5ff6aa7bb8cc9dd0", "get_weather", R"({"location": "Tokyo"})"}},
                      .finish = FinishReason::kToolCalls,
                      .native_finish = "tool_calls",
                      .usage = Tokens(230, 40)}},
          // Anthropic: parallel use is the default; `disable_parallel_tool_use`
          // is the switch [ANT-MSG].
          {.adapter = Adapter::kAnthropic,
           .body = {{"/tools", kAntWeatherTools},
                    {"/tool_choice", R"({"type":"auto","disable_parallel_tool_use":false})"}},
           .reply = AntStream({AntStart(380), AntTextStart(0), AntText(0, "I'll check both cities."), AntBlockStop(0),
                               AntToolStart(1, "toolu_01Pa9RsXkLmN3oP4qR5sT6uV", "get_weather"), AntJson(1, ""),
                               AntJson(1, R"({\"location\": \"Paris\"})"), AntBlockStop(1),
                               AntToolStart(2, "toolu_01To8KyWjKlM2nO3pQ4rS5tU", "get_weather"), AntJson(2, ""),
                               AntJson(2, R"({\"location\": \"Tokyo\"})"), AntBlockStop(2), AntDelta("tool_use", 98),
                               kAntStop}),
           .expect = {.text = "I'll check both cities.",
                      .calls = {{"toolu_01Pa9RsXkLmN3oP4qR5sT6uV", "get_weather", R"({"location": "Paris"})"},
                                {"toolu_01To8KyWjKlM2nO3pQ4rS5tU", "get_weather", R"({"location": "Tokyo"})"}},
                      .finish = FinishReason::kToolCalls,
                      .native_finish = "tool_use",
                      .usage = Tokens(380, 98)},
           // Both results in one user turn [ANT-MSG].
           .replay =
               {{"/messages/1",
                 R"({"role":"assistant","content":[{"type":"text","text":"I'll check both cities."},{"type":"tool_use","id":"toolu_01Pa9RsXkLmN3oP4qR5sT6uV","name":"get_weather","input":{"location":"Paris"}},{"type":"tool_use","id":"toolu_01To8KyWjKlM2nO3pQ4rS5tU","name":"get_weather","input":{"location":"Tokyo"}}]})"},
                {"/messages/2",
                 R"({"role":"user","content":[{"type":"tool_result","tool_use_id":"toolu_01Pa9RsXkLmN3oP4qR5sT6uV","content":"ok"},{"type":"tool_result","tool_use_id":"toolu_01To8KyWjKlM2nO3pQ4rS5tU","content":"ok"}]})"},
                {"/messages/3", kAbsent}}},
          // Gemini has no such field (dropped); parallel calls may come one per
          // chunk, only the first carrying a thought signature [GEM-THINK].
          {.adapter = Adapter::kGemini,
           .dropped = {Param::kParallelToolCalls},
           .body = {{"/tools", kGemWeatherTools}, {"/parallel_tool_calls", kAbsent}},
           .reply = Stream(
               {GemChunk(
                    GemParts(
                        R"({"functionCall": {"name": "get_weather","args": {"location": "Paris"}},"thoughtSignature": "CiIBVKhc7oPaRiSsIgNaTuReFiRsTcAlL0="})"),
                    GemUsage(60, 10)),
                GemChunk(GemParts(R"({"functionCall": {"name": "get_weather","args": {"location": "Tokyo"}}})", "STOP"),
                         GemUsage(60, 20))}),
           .expect = {.calls = {{"", "get_weather", R"({"location":"Paris"})", "CiIBVKhc7oPaRiSsIgNaTuReFiRsTcAlL0="},
                                {"", "get_weather", R"({"location":"Tokyo"})"}},
                      .finish = FinishReason::kToolCalls,
                      .native_finish = "STOP",
                      .usage = Tokens(60, 20)},
           // The signature goes back on the first call only, as received.
           .replay =
               {{"/contents/1",
                 R"({"role":"model","parts":[{"functionCall":{"name":"get_weather","args":{"location":"Paris"}},"thoughtSignature":"CiIBVKhc7oPaRiSsIgNaTuReFiRsTcAlL0="},{"functionCall":{"name":"get_weather","args":{"location":"Tokyo"}}}]})"},
                {"/contents/2",
                 R"({"role":"user","parts":[{"functionResponse":{"name":"get_weather","response":{"result":"ok"}}},{"functionResponse":{"name":"get_weather","response":{"result":"ok"}}}]})"}}},
          {.adapter = Adapter::kResponses,
           .body = {{"/tools", kRspWeatherTools}, {"/parallel_tool_calls", "true"}, {"/tool_choice", kAbsent}},
           .reply = RspStream()
                        .Message({"I'll check both cities."})
                        .Call("call_P4r1sRsp", "get_weather", {R"({\"location\": \"Paris\"})"})
                        .Call("call_T0ky0Rsp", "get_weather", {R"({\"location\":)", R"( \"Tokyo\"})"})
                        .Final(RspUsage(70, 46))
                        .Done(),
           .expect = {.text = "I'll check both cities.",
                      .calls = {{"call_P4r1sRsp", "get_weather", R"({"location": "Paris"})"},
                                {"call_T0ky0Rsp", "get_weather", R"({"location": "Tokyo"})"}},
                      .finish = FinishReason::kToolCalls,
                      .native_finish = "completed",
                      .usage = Tokens(70, 46)},
           .replay =
               {{"/input/1",
                 R"({"type":"message","role":"assistant","content":[{"type":"output_text","text":"I'll check both cities."}]})"},
                {"/input/2/call_id", R"("call_P4r1sRsp")"},
                {"/input/3/call_id", R"("call_T0ky0Rsp")"},
                {"/input/4", R"({"type":"function_call_output","call_id":"call_P4r1sRsp","output":"ok"})"},
                {"/input/5", R"({"type":"function_call_output","call_id":"call_T0ky0Rsp","output":"ok"})"}}},
      }};
}

// A function without parameters: its call's arguments read "{}" whatever the
// upstream sent for them (an empty object, "", or nothing).
Case ToolCallWithoutArguments() {
  return Case{
      "ToolCallWithoutArguments",
      [] {
        ChatRequest r = Base({User("What time is it?")});
        r.tools = {TimeTool()};
        r.tool_choice = ToolChoice{ToolChoice::Mode::kAuto, {}};
        return r;
      },
      {
          {.adapter = Adapter::kOpenAi,
           .body = {{"/tools",
                     R"([{"type":"function","function":{"name":"get_time","description":"Current UTC time"}}])"},
                    {"/tool_choice", R"("auto")"}},
           .reply = Stream(
               {OpenAiChunk(
                    R"({"role":"assistant","content":null,"tool_calls":[{"index":0,"id":"call_t1meN0w","type":"function","function":{"name":"get_time","arguments":""}}],"refusal":null})"),
                OpenAiChunk(R"({"tool_calls":[{"index":0,"function":{"arguments":"{}"}}]})"),
                OpenAiChunk("{}", R"("tool_calls")"), OpenAiTokens(45, 11), kDone}),
           .expect = {.calls = {{"call_t1meN0w", "get_time", "{}"}},
                      .finish = FinishReason::kToolCalls,
                      .native_finish = "tool_calls",
                      .usage = Tokens(45, 11)}},
          {.adapter = Adapter::kDeepSeek,
           .body = {{"/tools",
                     R"([{"type":"function","function":{"name":"get_time","description":"Current UTC time"}}])"},
                    {"/tool_choice", R"("auto")"}},
           .reply = Stream(
               {DeepSeekChunk(
                    R"({"role":"assistant","content":null,"tool_calls":[{"index":0,"id":"call_0_9e8d7c6b-5a4f-4e3d-8c2b-1a0f9e8d7c6b","type":"function","function":{"name":"get_time","arguments":"{}"}}]})"),
                DeepSeekChunk(R"({"content":""})", R"("tool_calls")"), DeepSeekTokens(80, 9), kDone}),
           .expect = {.calls = {{"call_0_9e8d7c6b-5a4f-4e3d-8c2b-1a0f9e8d7c6b", "get_time", "{}"}},
                      .finish = FinishReason::kToolCalls,
                      .native_finish = "tool_calls",
                      .usage = Tokens(80, 9)}},
          // A server that never sends `arguments` for a call without any.
          {.adapter = Adapter::kGeneric,
           .body = {{"/tools",
                     R"([{"type":"function","function":{"name":"get_time","description":"Current UTC time"}}])"},
                    {"/tool_choice", R"("auto")"}},
           .reply = Stream(
               {kVllmRole,
                VllmChunk(
                    R"({"tool_calls":[{"id":"chatcmpl-tool-77e8f9a0b1c2d3e4","type":"function","index":0,"function":{"name":"get_time"}}]})"),
                VllmChunk(R"({"content":""})", R"("tool_calls")"), VllmTokens(150, 12), kDone}),
           .expect = {.calls = {{"chatcmpl-tool-77e8f9a0b1c2d3e4", "get_time", "{}"}},
                      .finish = FinishReason::kToolCalls,
                      .native_finish = "tool_calls",
                      .usage = Tokens(150, 12)}},
          // Anthropic needs an input_schema even for no parameters; its
          // stream sends one empty input_json_delta [ANT-STREAM].
          {.adapter = Adapter::kAnthropic,
           .body =
               {{"/tools",
                 R"([{"name":"get_time","description":"Current UTC time","input_schema":{"type":"object","properties":{}}}])"},
                {"/tool_choice", R"({"type":"auto"})"}},
           .reply = AntStream({AntStart(340), AntToolStart(0, "toolu_01Ti3mE4n0W5x6Y7z8A9b0C1", "get_time"),
                               AntJson(0, ""), AntBlockStop(0), AntDelta("tool_use", 33), kAntStop}),
           .expect = {.calls = {{"toolu_01Ti3mE4n0W5x6Y7z8A9b0C1", "get_time", "{}"}},
                      .finish = FinishReason::kToolCalls,
                      .native_finish = "tool_use",
                      .usage = Tokens(340, 33)}},
          // A FunctionDeclaration without parameters; a functionCall without args.
          {.adapter = Adapter::kGemini,
           .body = {{"/tools", R"([{"functionDeclarations":[{"name":"get_time","description":"Current UTC time"}]}])"},
                    {"/toolConfig", R"({"functionCallingConfig":{"mode":"AUTO"}})"}},
           .reply = Stream({GemChunk(GemParts(R"({"functionCall": {"name": "get_time"}})", "STOP"), GemUsage(30, 5))}),
           .expect = {.calls = {{"", "get_time", "{}"}},
                      .finish = FinishReason::kToolCalls,
                      .native_finish = "STOP",
                      .usage = Tokens(30, 5)}},
          // [RSP] `parameters` is required: an empty object schema; the
          // arguments come only on the done item.
          {.adapter = Adapter::kResponses,
           .body =
               {{"/tools",
                 R"([{"type":"function","name":"get_time","description":"Current UTC time","parameters":{"type":"object","properties":{}},"strict":false}])"},
                {"/tool_choice", R"("auto")"}},
           .reply = RspStream().Call("call_t1meRsp", "get_time", {}, "{}").Final(RspUsage(45, 11)).Done(),
           .expect = {.calls = {{"call_t1meRsp", "get_time", "{}"}},
                      .finish = FinishReason::kToolCalls,
                      .native_finish = "completed",
                      .usage = Tokens(45, 11)}},
      }};
}

Case JsonMode() {
  return Case{"JsonMode",
              [] {
                ChatRequest r =
                    Base({System("Reply with a JSON object."), User("What is six times seven? Use the key answer.")});
                r.response_format = ResponseFormat{ResponseFormat::Type::kJsonObject, {}, {}, nullptr, std::nullopt};
                return r;
              },
              {
                  {.adapter = Adapter::kOpenAi,
                   .body = {{"/response_format", R"({"type":"json_object"})"}},
                   .reply = Stream({kOpenAiRole, OpenAiText(R"({\"answer\":)"), OpenAiText(" 42}"),
                                    OpenAiChunk("{}", R"("stop")"), OpenAiTokens(33, 6), kDone}),
                   .expect = {.text = R"({"answer": 42})",
                              .finish = FinishReason::kStop,
                              .native_finish = "stop",
                              .usage = Tokens(33, 6)}},
                  // DeepSeek "JSON Output": response_format json_object.
                  {.adapter = Adapter::kDeepSeek,
                   .body = {{"/response_format", R"({"type":"json_object"})"}},
                   .reply = Stream({kDeepSeekRole, DeepSeekText(R"({\"answer\":)"), DeepSeekText(" 42}"),
                                    DeepSeekChunk(R"({"content":""})", R"("stop")"), DeepSeekTokens(33, 6), kDone}),
                   .expect = {.text = R"({"answer": 42})",
                              .finish = FinishReason::kStop,
                              .native_finish = "stop",
                              .usage = Tokens(33, 6)}},
                  {.adapter = Adapter::kGeneric,
                   .body = {{"/response_format", R"({"type":"json_object"})"}},
                   .reply = Stream({kVllmRole, VllmText(R"({\"answer\":)"), VllmText(" 42}"),
                                    VllmChunk(R"({"content":""})", R"("stop")"), VllmTokens(33, 6), kDone}),
                   .expect = {.text = R"({"answer": 42})",
                              .finish = FinishReason::kStop,
                              .native_finish = "stop",
                              .usage = Tokens(33, 6)}},
                  // Anthropic has no JSON mode: SupportedParameters() lacks it and the
                  // gateway drops it; nothing of it reaches the request.
                  {.adapter = Adapter::kAnthropic,
                   .dropped = {Param::kResponseFormat},
                   .body = {{"/output_config", kAbsent},
                            {"/system", R"([{"type":"text","text":"Reply with a JSON object."}])"}},
                   .reply = AntStream({AntStart(30), AntTextStart(0), AntText(0, R"({\"answer\":)"), AntText(0, " 42}"),
                                       AntBlockStop(0), AntDelta("end_turn", 8), kAntStop}),
                   .expect = {.text = R"({"answer": 42})",
                              .finish = FinishReason::kStop,
                              .native_finish = "end_turn",
                              .usage = Tokens(30, 8)}},
                  // Gemini: generationConfig.responseMimeType [GEM-GEN].
                  {.adapter = Adapter::kGemini,
                   .body = {{"/generationConfig", R"({"responseMimeType":"application/json"})"}},
                   .reply = Stream({GemChunk(GemParts(GemText(R"({\"answer\":)")), GemUsage(20, 3)),
                                    GemChunk(GemParts(GemText(" 42}"), "STOP"), GemUsage(20, 6))}),
                   .expect = {.text = R"({"answer": 42})",
                              .finish = FinishReason::kStop,
                              .native_finish = "STOP",
                              .usage = Tokens(20, 6)}},
                  // [RSP] text.format.
                  {.adapter = Adapter::kResponses,
                   .body = {{"/text", R"({"format":{"type":"json_object"}})"}, {"/response_format", kAbsent}},
                   .reply = RspStream().Message({R"({\"answer\":)", " 42}"}).Final(RspUsage(33, 6)).Done(),
                   .expect = {.text = R"({"answer": 42})",
                              .finish = FinishReason::kStop,
                              .native_finish = "completed",
                              .usage = Tokens(33, 6)}},
              }};
}

constexpr const char* kAnswerSchema =
    R"({"type":"object","properties":{"answer":{"type":"integer"}},"required":["answer"],"additionalProperties":false})";

Case JsonSchema() {
  return Case{"JsonSchema",
              [] {
                ChatRequest r = Base({User("What is six times seven?")});
                r.response_format =
                    ResponseFormat{ResponseFormat::Type::kJsonSchema, "answer", {}, json::parse(kAnswerSchema), true};
                return r;
              },
              {
                  // [OAI-CHAT] response_format json_schema {name, schema, strict}.
                  {.adapter = Adapter::kOpenAi,
                   .body = {{"/response_format",
                             std::string(R"({"type":"json_schema","json_schema":{"name":"answer","schema":)") +
                                 kAnswerSchema + R"(,"strict":true}})"}},
                   .reply = Stream({kOpenAiRole, OpenAiText(R"({\"answer\":42})"), OpenAiChunk("{}", R"("stop")"),
                                    OpenAiTokens(60, 5), kDone}),
                   .expect = {.text = R"({"answer":42})",
                              .finish = FinishReason::kStop,
                              .native_finish = "stop",
                              .usage = Tokens(60, 5)}},
                  // DeepSeek takes json_object only: structured outputs are dropped.
                  {.adapter = Adapter::kDeepSeek,
                   .dropped = {Param::kStructuredOutputs},
                   .body = {{"/response_format", kAbsent}},
                   .reply = Stream({kDeepSeekRole, DeepSeekText(R"({\"answer\":42})"),
                                    DeepSeekChunk(R"({"content":""})", R"("stop")"), DeepSeekTokens(15, 5), kDone}),
                   .expect = {.text = R"({"answer":42})",
                              .finish = FinishReason::kStop,
                              .native_finish = "stop",
                              .usage = Tokens(15, 5)}},
                  {.adapter = Adapter::kGeneric,
                   .body = {{"/response_format",
                             std::string(R"({"type":"json_schema","json_schema":{"name":"answer","schema":)") +
                                 kAnswerSchema + R"(,"strict":true}})"}},
                   .reply = Stream({kVllmRole, VllmText(R"({\"answer\":42})"),
                                    VllmChunk(R"({"content":""})", R"("stop")"), VllmTokens(19, 5), kDone}),
                   .expect = {.text = R"({"answer":42})",
                              .finish = FinishReason::kStop,
                              .native_finish = "stop",
                              .usage = Tokens(19, 5)}},
                  // Anthropic structured outputs: output_config.format (wire/anthropic.hpp [SO]).
                  {.adapter = Adapter::kAnthropic,
                   .body = {{"/output_config",
                             std::string(R"({"format":{"type":"json_schema","schema":)") + kAnswerSchema + "}}"}},
                   .reply = AntStream({AntStart(160), AntTextStart(0), AntText(0, R"({\"answer\":42})"),
                                       AntBlockStop(0), AntDelta("end_turn", 7), kAntStop}),
                   .expect = {.text = R"({"answer":42})",
                              .finish = FinishReason::kStop,
                              .native_finish = "end_turn",
                              .usage = Tokens(160, 7)}},
                  // Gemini: responseJsonSchema next to the JSON MIME type.
                  {.adapter = Adapter::kGemini,
                   .body = {{"/generationConfig",
                             std::string(R"({"responseMimeType":"application/json","responseJsonSchema":)") +
                                 kAnswerSchema + "}"}},
                   .reply = Stream({GemChunk(GemParts(GemText(R"({\"answer\":42})"), "STOP"), GemUsage(8, 5))}),
                   .expect = {.text = R"({"answer":42})",
                              .finish = FinishReason::kStop,
                              .native_finish = "STOP",
                              .usage = Tokens(8, 5)}},
                  // [RSP] text.format json_schema {name, schema, strict}, flat.
                  {.adapter = Adapter::kResponses,
                   .body = {{"/text", std::string(R"({"format":{"type":"json_schema","name":"answer","schema":)") +
                                          kAnswerSchema + R"(,"strict":true}})"}},
                   .reply = RspStream().Message({R"({\"answer\":42})"}).Final(RspUsage(60, 5)).Done(),
                   .expect = {.text = R"({"answer":42})",
                              .finish = FinishReason::kStop,
                              .native_finish = "completed",
                              .usage = Tokens(60, 5)}},
              }};
}

Case StopSequence() {
  return Case{"StopSequence",
              [] {
                ChatRequest r = Base({User("Count from 1 to 9, then say END.")});
                r.stop = {"END"};
                return r;
              },
              {
                  {.adapter = Adapter::kOpenAi,
                   .body = {{"/stop", R"(["END"])"}},
                   .reply = Stream({kOpenAiRole, OpenAiText("1 2 3 4 5"), OpenAiText(" 6 7 8 9 "),
                                    OpenAiChunk("{}", R"("stop")"), OpenAiTokens(20, 18), kDone}),
                   .expect = {.text = "1 2 3 4 5 6 7 8 9 ",
                              .finish = FinishReason::kStop,
                              .native_finish = "stop",
                              .usage = Tokens(20, 18)}},
                  {.adapter = Adapter::kDeepSeek,
                   .body = {{"/stop", R"(["END"])"}},
                   .reply = Stream({kDeepSeekRole, DeepSeekText("1 2 3 4 5"), DeepSeekText(" 6 7 8 9 "),
                                    DeepSeekChunk(R"({"content":""})", R"("stop")"), DeepSeekTokens(20, 18), kDone}),
                   .expect = {.text = "1 2 3 4 5 6 7 8 9 ",
                              .finish = FinishReason::kStop,
                              .native_finish = "stop",
                              .usage = Tokens(20, 18)}},
                  {.adapter = Adapter::kGeneric,
                   .body = {{"/stop", R"(["END"])"}},
                   .reply = Stream({kVllmRole, VllmText("1 2 3 4 5"), VllmText(" 6 7 8 9 "),
                                    VllmChunk(R"({"content":""})", R"("stop")"), VllmTokens(20, 18), kDone}),
                   .expect = {.text = "1 2 3 4 5 6 7 8 9 ",
                              .finish = FinishReason::kStop,
                              .native_finish = "stop",
                              .usage = Tokens(20, 18)}},
                  // stop_sequences; the answer names the sequence that matched [ANT-MSG].
                  {.adapter = Adapter::kAnthropic,
                   .body = {{"/stop_sequences", R"(["END"])"}, {"/stop", kAbsent}},
                   .reply = AntStream({AntStart(22), AntTextStart(0), AntText(0, "1 2 3 4 5"), AntText(0, " 6 7 8 9 "),
                                       AntBlockStop(0), AntDelta("stop_sequence", 18, R"("END")"), kAntStop}),
                   .expect = {.text = "1 2 3 4 5 6 7 8 9 ",
                              .finish = FinishReason::kStop,
                              .native_finish = "stop_sequence",
                              .usage = Tokens(22, 18)}},
                  {.adapter = Adapter::kGemini,
                   .body = {{"/generationConfig", R"({"stopSequences":["END"]})"}},
                   .reply = Stream({GemChunk(GemParts(GemText("1 2 3 4 5")), GemUsage(14, 9)),
                                    GemChunk(GemParts(GemText(" 6 7 8 9 "), "STOP"), GemUsage(14, 18))}),
                   .expect = {.text = "1 2 3 4 5 6 7 8 9 ",
                              .finish = FinishReason::kStop,
                              .native_finish = "STOP",
                              .usage = Tokens(14, 18)}},
                  // The Responses API has no `stop`: the gateway drops it.
                  {.adapter = Adapter::kResponses,
                   .dropped = {Param::kStop},
                   .body = {{"/stop", kAbsent}},
                   .reply = RspStream().Message({"1 2 3 4 5", " 6 7 8 9 END"}).Final(RspUsage(20, 20)).Done(),
                   .expect = {.text = "1 2 3 4 5 6 7 8 9 END",
                              .finish = FinishReason::kStop,
                              .native_finish = "completed",
                              .usage = Tokens(20, 20)}},
              }};
}

ChatRequest WithMaxTokens(ChatRequest r, int64_t max_tokens) {
  r.max_tokens = max_tokens;
  r.max_tokens_field = MaxTokensField::kMaxTokens;  // the caller wrote `max_tokens`
  return r;
}

Case MaxTokens() {
  return Case{"MaxTokensReached",
              [] { return WithMaxTokens(Base({User("Tell me a story.")}), 5); },
              {
                  // OpenAI's reasoning models take only max_completion_tokens.
                  {.adapter = Adapter::kOpenAi,
                   .body = {{"/max_completion_tokens", "5"}, {"/max_tokens", kAbsent}},
                   .reply = Stream({kOpenAiRole, OpenAiText("Once upon"), OpenAiText(" a time,"),
                                    OpenAiChunk("{}", R"("length")"), OpenAiTokens(12, 5), kDone}),
                   .expect = {.text = "Once upon a time,",
                              .finish = FinishReason::kLength,
                              .native_finish = "length",
                              .usage = Tokens(12, 5)}},
                  {.adapter = Adapter::kDeepSeek,
                   .body = {{"/max_tokens", "5"}, {"/max_completion_tokens", kAbsent}},
                   .reply = Stream({kDeepSeekRole, DeepSeekText("Once upon"), DeepSeekText(" a time,"),
                                    DeepSeekChunk(R"({"content":""})", R"("length")"), DeepSeekTokens(12, 5), kDone}),
                   .expect = {.text = "Once upon a time,",
                              .finish = FinishReason::kLength,
                              .native_finish = "length",
                              .usage = Tokens(12, 5)}},
                  // A generic server gets the spelling the caller used.
                  {.adapter = Adapter::kGeneric,
                   .body = {{"/max_tokens", "5"}, {"/max_completion_tokens", kAbsent}},
                   .reply = Stream({kVllmRole, VllmText("Once upon"), VllmText(" a time,"),
                                    VllmChunk(R"({"content":""})", R"("length")"), VllmTokens(12, 5), kDone}),
                   .expect = {.text = "Once upon a time,",
                              .finish = FinishReason::kLength,
                              .native_finish = "length",
                              .usage = Tokens(12, 5)}},
                  {.adapter = Adapter::kAnthropic,
                   .body = {{"/max_tokens", "5"}},
                   .reply = AntStream({AntStart(12), AntTextStart(0), AntText(0, "Once upon"), AntText(0, " a time,"),
                                       AntBlockStop(0), AntDelta("max_tokens", 5), kAntStop}),
                   .expect = {.text = "Once upon a time,",
                              .finish = FinishReason::kLength,
                              .native_finish = "max_tokens",
                              .usage = Tokens(12, 5)}},
                  {.adapter = Adapter::kGemini,
                   .body = {{"/generationConfig", R"({"maxOutputTokens":5})"}},
                   .reply = Stream({GemChunk(GemParts(GemText("Once upon")), GemUsage(6, 2)),
                                    GemChunk(GemParts(GemText(" a time,"), "MAX_TOKENS"), GemUsage(6, 5))}),
                   .expect = {.text = "Once upon a time,",
                              .finish = FinishReason::kLength,
                              .native_finish = "MAX_TOKENS",
                              .usage = Tokens(6, 5)}},
                  // [RSP] max_output_tokens; response.incomplete with reason max_output_tokens.
                  {.adapter = Adapter::kResponses,
                   .body = {{"/max_output_tokens", "5"}, {"/max_tokens", kAbsent}, {"/max_completion_tokens", kAbsent}},
                   .reply = RspStream()
                                .Message({"Once upon", " a time,"})
                                .Final(RspUsage(12, 5), R"({"reason":"max_output_tokens"})")
                                .Done(),
                   .expect = {.text = "Once upon a time,",
                              .finish = FinishReason::kLength,
                              .native_finish = "max_output_tokens",
                              .usage = Tokens(12, 5)}},
              }};
}

// The limit hits while the model writes a call's arguments: the answer ends
// with "length", not "tool_calls", and keeps the partial arguments as sent.
Case MaxTokensMidToolCall() {
  return Case{
      "MaxTokensMidToolCall",
      [] {
        ChatRequest r = WithMaxTokens(Base({User("Weather in Paris?")}), 12);
        r.tools = {WeatherTool()};
        return r;
      },
      {
          {.adapter = Adapter::kOpenAi,
           .body = {{"/max_completion_tokens", "12"}, {"/tools", kOaiWeatherTools}},
           .reply = Stream(
               {OpenAiChunk(
                    R"({"role":"assistant","content":null,"tool_calls":[{"index":0,"id":"call_cUtOfF12","type":"function","function":{"name":"get_weather","arguments":""}}],"refusal":null})"),
                OpenAiChunk(R"({"tool_calls":[{"index":0,"function":{"arguments":"{\"location\": \"Pa"}}]})"),
                OpenAiChunk("{}", R"("length")"), OpenAiTokens(70, 12), kDone}),
           .expect = {.calls = {{"call_cUtOfF12", "get_weather", R"({"location": "Pa)"}},
                      .finish = FinishReason::kLength,
                      .native_finish = "length",
                      .usage = Tokens(70, 12)}},
          {.adapter = Adapter::kDeepSeek,
           .body = {{"/max_tokens", "12"}, {"/tools", kOaiWeatherTools}},
           .reply = Stream(
               {DeepSeekChunk(
                    R"({"role":"assistant","content":null,"tool_calls":[{"index":0,"id":"call_0_c0ffee00-1234-4abc-8def-0123456789ab","type":"function","function":{"name":"get_weather","arguments":""}}]})"),
                DeepSeekChunk(R"({"tool_calls":[{"index":0,"function":{"arguments":"{\"location\": \"Pa"}}]})"),
                DeepSeekChunk(R"({"content":""})", R"("length")"), DeepSeekTokens(120, 12), kDone}),
           .expect = {.calls = {{"call_0_c0ffee00-1234-4abc-8def-0123456789ab", "get_weather", R"({"location": "Pa)"}},
                      .finish = FinishReason::kLength,
                      .native_finish = "length",
                      .usage = Tokens(120, 12)}},
          {.adapter = Adapter::kGeneric,
           .body = {{"/max_tokens", "12"}, {"/tools", kOaiWeatherTools}},
           .reply = Stream(
               {kVllmRole,
                VllmChunk(
                    R"({"tool_calls":[{"id":"chatcmpl-tool-deadbeef00112233","type":"function","index":0,"function":{"name":"get_weather"}}]})"),
                VllmChunk(R"({"tool_calls":[{"index":0,"function":{"arguments":"{\"location\": \"Pa"}}]})"),
                VllmChunk(R"({"content":""})", R"("length")"), VllmTokens(210, 12), kDone}),
           .expect = {.calls = {{"chatcmpl-tool-deadbeef00112233", "get_weather", R"({"location": "Pa)"}},
                      .finish = FinishReason::kLength,
                      .native_finish = "length",
                      .usage = Tokens(210, 12)}},
          {.adapter = Adapter::kAnthropic,
           .body = {{"/max_tokens", "12"}, {"/tools", kAntWeatherTools}},
           .reply = AntStream({AntStart(350), AntToolStart(0, "toolu_01CuT0fFmAxT0kEnS2x3y4z5", "get_weather"),
                               AntJson(0, ""), AntJson(0, R"({\"location\": \"Pa)"), AntBlockStop(0),
                               AntDelta("max_tokens", 12), kAntStop}),
           .expect = {.calls = {{"toolu_01CuT0fFmAxT0kEnS2x3y4z5", "get_weather", R"({"location": "Pa)"}},
                      .finish = FinishReason::kLength,
                      .native_finish = "max_tokens",
                      .usage = Tokens(350, 12)}},
          // Gemini never sends part of a functionCall: when thinking used up
          // the budget the candidate ends MAX_TOKENS with no parts.
          {.adapter = Adapter::kGemini,
           .body = {{"/generationConfig", R"({"maxOutputTokens":12})"}, {"/tools", kGemWeatherTools}},
           .reply = Stream({GemChunk(R"("content": {"role": "model"},"finishReason": "MAX_TOKENS")",
                                     R"({"promptTokenCount": 45,"totalTokenCount": 57,"thoughtsTokenCount": 12})")}),
           .expect = {.finish = FinishReason::kLength, .native_finish = "MAX_TOKENS", .usage = Tokens(45, 12, 0, 12)}},
          {.adapter = Adapter::kResponses,
           .body = {{"/max_output_tokens", "12"}, {"/tools", kRspWeatherTools}},
           .reply = RspStream()
                        .Call("call_cUtRsp12", "get_weather", {R"({\"location\": \"Pa)"})
                        .Final(RspUsage(70, 12), R"({"reason":"max_output_tokens"})")
                        .Done(),
           .expect = {.calls = {{"call_cUtRsp12", "get_weather", R"({"location": "Pa)"}},
                      .finish = FinishReason::kLength,
                      .native_finish = "max_output_tokens",
                      .usage = Tokens(70, 12)}},
      }};
}

// 1x1 PNG.
constexpr const char* kPngBase64 =
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==";
constexpr const char* kAntUrl =
    "https://upload.wikimedia.org/wikipedia/commons/a/a7/Camponotus_flavomarginatus_ant.jpg";

Case ImageInput() {
  const std::string data_uri = std::string("data:image/png;base64,") + kPngBase64;
  const std::string oai_content =
      R"([{"type":"text","text":"What is in these images?"},{"type":"image_url","image_url":{"url":")" + data_uri +
      R"(","detail":"low"}},{"type":"image_url","image_url":{"url":")" + kAntUrl + R"("}}])";
  return Case{
      "ImageInput",
      [data_uri] {
        Message m{Role::kUser, {}, {}};
        m.parts.emplace_back(TextPart{"What is in these images?", {}});
        m.parts.emplace_back(ImagePart{data_uri, "low", {}});
        m.parts.emplace_back(ImagePart{kAntUrl, "", {}});
        return Base({m});
      },
      {
          // [OAI-CHAT] image_url content parts.
          {.adapter = Adapter::kOpenAi,
           .body = {{"/messages/0/content", oai_content}},
           .reply = Stream({kOpenAiRole, OpenAiText("A red pixel and an ant."), OpenAiChunk("{}", R"("stop")"),
                            OpenAiTokens(1120, 8), kDone}),
           .expect = {.text = "A red pixel and an ant.",
                      .finish = FinishReason::kStop,
                      .native_finish = "stop",
                      .usage = Tokens(1120, 8)}},
          // deepseek-chat takes no images: an essential parameter the preset
          // lacks, so the gateway never sends this request there.
          {.adapter = Adapter::kDeepSeek, .unusable = Param::kImageInput},
          {.adapter = Adapter::kGeneric,
           .body = {{"/messages/0/content", oai_content}},
           .reply = Stream({kVllmRole, VllmText("A red pixel and an ant."), VllmChunk(R"({"content":""})", R"("stop")"),
                            VllmTokens(1500, 8), kDone}),
           .expect = {.text = "A red pixel and an ant.",
                      .finish = FinishReason::kStop,
                      .native_finish = "stop",
                      .usage = Tokens(1500, 8)}},
          // [ANT-MSG] image blocks: base64 source with media_type, url source.
          {.adapter = Adapter::kAnthropic,
           .body =
               {{"/messages/0/content",
                 std::string(
                     R"([{"type":"text","text":"What is in these images?"},{"type":"image","source":{"type":"base64","media_type":"image/png","data":")") +
                     kPngBase64 + R"("}},{"type":"image","source":{"type":"url","url":")" + kAntUrl + R"("}}])"}},
           .reply = AntStream({AntStart(1610), AntTextStart(0), AntText(0, "A red pixel and an ant."), AntBlockStop(0),
                               AntDelta("end_turn", 10), kAntStop}),
           .expect = {.text = "A red pixel and an ant.",
                      .finish = FinishReason::kStop,
                      .native_finish = "end_turn",
                      .usage = Tokens(1610, 10)}},
          // [GEM-GEN] Part.inlineData {mimeType, data} and Part.fileData {mimeType, fileUri}.
          {.adapter = Adapter::kGemini,
           .body = {{"/contents/0/parts",
                     std::string(
                         R"([{"text":"What is in these images?"},{"inlineData":{"mimeType":"image/png","data":")") +
                         kPngBase64 + R"("}},{"fileData":{"mimeType":"image/jpeg","fileUri":")" + kAntUrl + R"("}}])"}},
           .reply = Stream({GemChunk(GemParts(GemText("A red pixel and an ant."), "STOP"), GemUsage(524, 7))}),
           .expect = {.text = "A red pixel and an ant.",
                      .finish = FinishReason::kStop,
                      .native_finish = "STOP",
                      .usage = Tokens(524, 7)}},
          // [RSP] input_image {image_url, detail} (detail required: "auto" when not given).
          {.adapter = Adapter::kResponses,
           .body = {{"/input/0/content",
                     R"([{"type":"input_text","text":"What is in these images?"},{"type":"input_image","image_url":")" +
                         data_uri + R"(","detail":"low"},{"type":"input_image","image_url":")" + kAntUrl +
                         R"(","detail":"auto"}])"}},
           .reply = RspStream().Message({"A red pixel and an ant."}).Final(RspUsage(1120, 8)).Done(),
           .expect = {.text = "A red pixel and an ant.",
                      .finish = FinishReason::kStop,
                      .native_finish = "completed",
                      .usage = Tokens(1120, 8)}},
      }};
}

// Reasoning, and what each API needs of it on the next turn. Every adapter
// continues a conversation that began on its own provider, so each has its
// own request.
constexpr const char* kAntPrevSignature =
    "EqQBCkgIARABGAIiQL1ZRmYt8cR0f7nSvGmC2lrXxOq5m6u3d9Hx0Jz1yVgLwP3sQw8oC4aDf6bN2eKjT7uM5hW9iYpEaQZxRvBt5YYAEgzH1c0dPr";
constexpr const char* kAntNewSignature =
    "EuYBCkQYAiJA7p3mKp2Xn4cT1sQ9vH6wR8yZ0aB5dE7fG9hJ1kL3mN5pQ7rS9tU1vW3xY5zA7bC9dE1fG3hJ5kL7mN9pQ1rS3tU5vW7xY9zA";
constexpr const char* kGemPrevSignature =
    "CoQBAY89a1+PrEvIoUs/SiGnAtUrE0fThEpArIsCaLl+Xz9Kw3Lm5Nb7Vc1Qd2Ry8Tu0Op4Gh6Jk==";
constexpr const char* kGemNewSignature = "CpwCAY89a1/NeWsIgNaTuRe+OfThEtOkYoCaLl2Aa0Bb1Cc2Dd3Ee4Ff5Gg6Hh7Ii8Jj9Kk0Ll==";

ChatRequest ReasoningHistory(std::vector<ContentPart> assistant_turn, std::string call_id, std::string effort,
                             std::optional<int64_t> budget) {
  ChatRequest r = Base({User("Weather in Paris, then Tokyo?"), AssistantCalls(std::move(assistant_turn)),
                        ToolResult(call_id, "get_weather", "18°C, sunny")});
  r.tools = {WeatherTool()};
  ReasoningSettings s;
  s.effort = std::move(effort);
  s.max_tokens = budget;
  r.reasoning = s;
  return r;
}

ReasoningPart Reasoning(ReasoningPart::Kind kind, std::string text, std::string signature, std::string data,
                        std::string format) {
  ReasoningPart p;
  p.kind = kind;
  p.text = std::move(text);
  p.signature = std::move(signature);
  p.data = std::move(data);
  p.format = std::move(format);
  return p;
}

Case ReasoningReplay() {
  return Case{
      "ReasoningWithReplay",
      [] { return Base({User("unused: every adapter has its own conversation")}); },
      {
          // OpenAI Chat Completions returns no reasoning text and takes none
          // back: reasoning_effort goes out, nothing is replayed, and the
          // reasoning shows only as usage (reasoning_tokens within
          // completion_tokens).
          {.adapter = Adapter::kOpenAi,
           .request =
               [] {
                 return ReasoningHistory(
                     {Reasoning(ReasoningPart::Kind::kEncrypted, "", "", "gAAAAABoX0cEnCrYpTeD", "openai-responses-v1"),
                      Call("call_paris1", "get_weather", R"({"location":"Paris"})")},
                     "call_paris1", "low", std::nullopt);
               },
           .model = "o4-mini",
           .body =
               {{"/reasoning_effort", R"("low")"},
                {"/messages/1",
                 R"({"role":"assistant","content":null,"tool_calls":[{"id":"call_paris1","type":"function","function":{"name":"get_weather","arguments":"{\"location\":\"Paris\"}"}}]})"},
                {"/model", R"("o4-mini")"}},
           .reply = Stream({kOpenAiRole, OpenAiText("Paris is sunny; "), OpenAiText("Tokyo next."),
                            OpenAiChunk("{}", R"("stop")"), OpenAiTokens(150, 210, 0, 192), kDone}),
           .expect = {.text = "Paris is sunny; Tokyo next.",
                      .finish = FinishReason::kStop,
                      .native_finish = "stop",
                      .usage = Tokens(150, 210, 0, 192)},
           .replay = {{"/messages/3", R"({"role":"assistant","content":"Paris is sunny; Tokyo next."})"},
                      {"/messages/4", R"({"role":"user","content":"Thanks!"})"}}},
          // DeepSeek thinking mode [DS-THINK]: reasoning_content streams first
          // (cut inside "°" between events here); a turn that called tools
          // gets its reasoning_content back on every later request, a plain
          // turn never. DeepSeek takes no reasoning settings (dropped).
          {.adapter = Adapter::kDeepSeek,
           .request =
               [] {
                 ChatRequest r =
                     ReasoningHistory({Reasoning(ReasoningPart::Kind::kText,
                                                 "The user wants Paris first; call get_weather.", "", "", ""),
                                       Call("call_00_ds1", "get_weather", R"({"location":"Paris"})")},
                                      "call_00_ds1", "high", std::nullopt);
                 // An earlier exchange without tools: its reasoning stays out.
                 r.messages.insert(
                     r.messages.begin(),
                     {User("Hi!"), Message{Role::kAssistant,
                                           {Reasoning(ReasoningPart::Kind::kText, "A greeting.", "", "", ""),
                                            TextPart{"Hello! How can I help?", {}}},
                                           {}}});
                 return r;
               },
           .model = "deepseek-reasoner",
           .dropped = {Param::kReasoning},
           .body =
               {{"/messages/1", R"({"role":"assistant","content":"Hello! How can I help?"})"},
                {"/messages/3",
                 R"({"role":"assistant","content":null,"tool_calls":[{"id":"call_00_ds1","type":"function","function":{"name":"get_weather","arguments":"{\"location\":\"Paris\"}"}}],"reasoning_content":"The user wants Paris first; call get_weather."})"},
                {"/messages/4", R"({"role":"tool","tool_call_id":"call_00_ds1","content":"18°C, sunny"})"},
                {"/reasoning_effort", kAbsent},
                {"/thinking", kAbsent},
                {"/model", R"("deepseek-reasoner")"}},
           .reply = Stream(
               {DeepSeekChunk(R"({"role":"assistant","content":null,"reasoning_content":""})", "null",
                              "deepseek-reasoner"),
                DeepSeekChunk("{\"content\":null,\"reasoning_content\":\"Paris is 18\xC2\"}", "null",
                              "deepseek-reasoner"),
                DeepSeekChunk("{\"content\":null,\"reasoning_content\":\"\xB0\x43 and sunny; now Tokyo.\"}", "null",
                              "deepseek-reasoner"),
                DeepSeekChunk(
                    R"({"content":null,"reasoning_content":null,"tool_calls":[{"index":0,"id":"call_01_ds2","type":"function","function":{"name":"get_weather","arguments":"{\"location\":\"Tokyo\"}"}}]})",
                    "null", "deepseek-reasoner"),
                DeepSeekChunk(R"({"content":null,"reasoning_content":null})", R"("tool_calls")", "deepseek-reasoner"),
                DeepSeekTokens(120, 40, 64, 22, "deepseek-reasoner"), kDone}),
           .expect = {.reasoning = {{ReasoningPart::Kind::kText, "Paris is 18°C and sunny; now Tokyo.", "", "", ""}},
                      .calls = {{"call_01_ds2", "get_weather", R"({"location":"Tokyo"})"}},
                      .finish = FinishReason::kToolCalls,
                      .native_finish = "tool_calls",
                      .usage = Tokens(120, 40, 64, 22)},
           .replay =
               {{"/messages/1", R"({"role":"assistant","content":"Hello! How can I help?"})"},
                {"/messages/3/reasoning_content", R"("The user wants Paris first; call get_weather.")"},
                {"/messages/5",
                 R"({"role":"assistant","content":null,"tool_calls":[{"id":"call_01_ds2","type":"function","function":{"name":"get_weather","arguments":"{\"location\":\"Tokyo\"}"}}],"reasoning_content":"Paris is 18°C and sunny; now Tokyo."})"},
                {"/messages/6", R"({"role":"tool","tool_call_id":"call_01_ds2","content":"ok"})"}}},
          // A vLLM server with a reasoning parser streams reasoning_content
          // [VLLM]; it needs nothing back and gets no reasoning settings.
          {.adapter = Adapter::kGeneric,
           .request =
               [] {
                 return ReasoningHistory(
                     {Reasoning(ReasoningPart::Kind::kText, "Paris first.", "", "", ""),
                      Call("chatcmpl-tool-0f0e0d0c0b0a0908", "get_weather", R"({"location":"Paris"})")},
                     "chatcmpl-tool-0f0e0d0c0b0a0908", "medium", std::nullopt);
               },
           .body =
               {{"/messages/1",
                 R"({"role":"assistant","content":null,"tool_calls":[{"id":"chatcmpl-tool-0f0e0d0c0b0a0908","type":"function","function":{"name":"get_weather","arguments":"{\"location\":\"Paris\"}"}}]})"},
                {"/reasoning_effort", kAbsent},
                {"/reasoning", kAbsent}},
           .reply = Stream({kVllmRole, VllmChunk(R"({"reasoning_content":"Sunny in Paris."})"),
                            VllmChunk(R"({"reasoning_content":" Answer."})"), VllmText("Sunny, 18°C."),
                            VllmChunk(R"({"content":""})", R"("stop")"), VllmTokens(300, 25), kDone}),
           .expect = {.text = "Sunny, 18°C.",
                      .reasoning = {{ReasoningPart::Kind::kText, "Sunny in Paris. Answer.", "", "", ""}},
                      .finish = FinishReason::kStop,
                      .native_finish = "stop",
                      .usage = Tokens(300, 25)},
           .replay = {{"/messages/3", R"({"role":"assistant","content":"Sunny, 18°C."})"}}},
          // Anthropic [ANT-THINK]: the earlier thinking block goes back with
          // its signature, first in its turn; the answer (interleaved
          // thinking, so a thinking block after a tool result) carries
          // thinking_delta (cut inside "°") and signature_delta, then text and
          // the next call; on the follow-up that block goes back whole, first
          // in the turn of the tool loop.
          {.adapter = Adapter::kAnthropic,
           .request =
               [] {
                 ChatRequest r =
                     ReasoningHistory({Reasoning(ReasoningPart::Kind::kText, "I should call get_weather for Paris.",
                                                 kAntPrevSignature, "", "anthropic-claude-v1"),
                                       Call("toolu_01A09q90qw90lq917835lq9", "get_weather", R"({"location":"Paris"})")},
                                      "toolu_01A09q90qw90lq917835lq9", "", 2048);
                 r.max_tokens = 4096;
                 r.anthropic_beta = {"interleaved-thinking-2025-05-14"};
                 return r;
               },
           .headers = {{"anthropic-beta", "interleaved-thinking-2025-05-14"}},
           .body =
               {{"/thinking", R"({"type":"enabled","budget_tokens":2048})"},
                {"/max_tokens", "4096"},
                {"/messages/1",
                 std::string(
                     R"({"role":"assistant","content":[{"type":"thinking","thinking":"I should call get_weather for Paris.","signature":")") +
                     kAntPrevSignature +
                     R"("},{"type":"tool_use","id":"toolu_01A09q90qw90lq917835lq9","name":"get_weather","input":{"location":"Paris"}}]})"},
                {"/messages/2",
                 R"({"role":"user","content":[{"type":"tool_result","tool_use_id":"toolu_01A09q90qw90lq917835lq9","content":"18°C, sunny"}]})"}},
           .reply = AntStream(
               {AntStart(530, 0, 0),
                AntEvent(
                    "content_block_start",
                    R"({"type":"content_block_start","index":0,"content_block":{"type":"thinking","thinking":"","signature":""}})"),
                AntEvent(
                    "content_block_delta",
                    "{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"thinking_delta\",\"thinking\":\"The tool says 18\xC2\"}}"),
                AntEvent(
                    "content_block_delta",
                    "{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"thinking_delta\",\"thinking\":\"\xB0\x43 and sunny.\"}}"),
                AntEvent(
                    "content_block_delta",
                    std::string(
                        R"({"type":"content_block_delta","index":0,"delta":{"type":"signature_delta","signature":")") +
                        kAntNewSignature + R"("}})"),
                AntBlockStop(0), AntTextStart(1), AntText(1, "Now Tokyo."), AntBlockStop(1),
                AntToolStart(2, "toolu_01NeXtT0kY0cAlL5x6y7z8a9", "get_weather"), AntJson(2, ""),
                AntJson(2, R"({\"location\": \"Tokyo\"})"), AntBlockStop(2), AntDelta("tool_use", 85), kAntStop}),
           .expect = {.text = "Now Tokyo.",
                      .reasoning = {{ReasoningPart::Kind::kText, "The tool says 18°C and sunny.", kAntNewSignature, "",
                                     "anthropic-claude-v1"}},
                      .calls = {{"toolu_01NeXtT0kY0cAlL5x6y7z8a9", "get_weather", R"({"location": "Tokyo"})"}},
                      .finish = FinishReason::kToolCalls,
                      .native_finish = "tool_use",
                      .usage = Tokens(530, 85)},
           .replay =
               {{"/thinking", R"({"type":"enabled","budget_tokens":2048})"},
                {"/messages/3",
                 std::string(
                     R"({"role":"assistant","content":[{"type":"thinking","thinking":"The tool says 18°C and sunny.","signature":")") +
                     kAntNewSignature +
                     R"("},{"type":"text","text":"Now Tokyo."},{"type":"tool_use","id":"toolu_01NeXtT0kY0cAlL5x6y7z8a9","name":"get_weather","input":{"location":"Tokyo"}}]})"},
                {"/messages/4",
                 R"({"role":"user","content":[{"type":"tool_result","tool_use_id":"toolu_01NeXtT0kY0cAlL5x6y7z8a9","content":"ok"}]})"}}},
          // Gemini [GEM-THINK]: the earlier call's thoughtSignature goes back on
          // the same functionCall part; the answer has a thought part and a
          // call with a new signature, which the follow-up returns on that
          // call's part.
          {.adapter = Adapter::kGemini,
           .request =
               [] {
                 return ReasoningHistory({Call("call_gemprev000000000000000001", "get_weather",
                                               R"({"location":"Paris"})", kGemPrevSignature)},
                                         "call_gemprev000000000000000001", "", 1024);
               },
           .body =
               {{"/generationConfig", R"({"thinkingConfig":{"thinkingBudget":1024,"includeThoughts":true}})"},
                {"/contents/1",
                 std::string(
                     R"({"role":"model","parts":[{"functionCall":{"name":"get_weather","args":{"location":"Paris"}},"thoughtSignature":")") +
                     kGemPrevSignature + R"("}]})"},
                {"/contents/2",
                 R"({"role":"user","parts":[{"functionResponse":{"name":"get_weather","response":{"result":"18°C, sunny"}}}]})"}},
           .reply = Stream(
               {GemChunk(
                    GemParts(
                        R"({"text": "**Planning the next call**\nParis is done; Tokyo is next.","thought": true})"),
                    R"({"promptTokenCount": 210,"totalTokenCount": 283,"thoughtsTokenCount": 73})"),
                GemChunk(
                    GemParts(
                        std::string(
                            R"({"functionCall": {"name": "get_weather","args": {"location": "Tokyo"}},"thoughtSignature": ")") +
                            kGemNewSignature + R"("})",
                        "STOP"),
                    GemUsage(210, 18, 73))}),
           .expect = {.reasoning = {{ReasoningPart::Kind::kText,
                                     "**Planning the next call**\nParis is done; Tokyo is next.", "", "",
                                     "google-gemini-v1"}},
                      .calls = {{"", "get_weather", R"({"location":"Tokyo"})", kGemNewSignature}},
                      .finish = FinishReason::kToolCalls,
                      .native_finish = "STOP",
                      .usage = Tokens(210, 91, 0, 73)},
           .replay =
               {{"/contents/1/parts/0/thoughtSignature", std::string("\"") + kGemPrevSignature + "\""},
                {"/contents/3",
                 std::string(
                     R"({"role":"model","parts":[{"text":"**Planning the next call**\nParis is done; Tokyo is next.","thought":true},{"functionCall":{"name":"get_weather","args":{"location":"Tokyo"}},"thoughtSignature":")") +
                     kGemNewSignature + R"("}]})"},
                {"/contents/4",
                 R"({"role":"user","parts":[{"functionResponse":{"name":"get_weather","response":{"result":"ok"}}}]})"}}},
          // The Responses API returns reasoning items (summary + encrypted
          // content, with include) and takes them back untouched, under
          // their id [RSP]: the prior item goes out again, and the new one
          // comes back on the next turn.
          {.adapter = Adapter::kResponses,
           .request =
               [] {
                 ReasoningPart summary =
                     Reasoning(ReasoningPart::Kind::kSummary, "Paris first.", "", "", "openai-responses-v1");
                 summary.id = "rs_prev0a1b2c3d";
                 ReasoningPart encrypted =
                     Reasoning(ReasoningPart::Kind::kEncrypted, "", "", "gAAAAABoPREVenc==", "openai-responses-v1");
                 encrypted.id = "rs_prev0a1b2c3d";
                 return ReasoningHistory({summary, encrypted, Call("call_paris1", "get_weather", R"({"location":"Paris"})")},
                                         "call_paris1", "low", std::nullopt);
               },
           .model = "o4-mini",
           .body =
               {{"/reasoning", R"({"effort":"low","summary":"auto"})"},
                {"/input/1",
                 R"({"type":"reasoning","id":"rs_prev0a1b2c3d","summary":[{"type":"summary_text","text":"Paris first."}],"encrypted_content":"gAAAAABoPREVenc=="})"},
                {"/input/2",
                 R"({"type":"function_call","call_id":"call_paris1","name":"get_weather","arguments":"{\"location\":\"Paris\"}"})"},
                {"/input/3", R"({"type":"function_call_output","call_id":"call_paris1","output":"18°C, sunny"})"},
                {"/model", R"("o4-mini")"}},
           .reply = RspStream()
                        .Reasoning("rs_new9f8e7d6c", {R"(**Tokyo next**\n\nParis is done.)"}, "gAAAAABoNEWenc==")
                        .Message({"Paris is sunny; ", "Tokyo next."})
                        .Final(RspUsage(150, 210, 0, 192))
                        .Done(),
           .expect = {.text = "Paris is sunny; Tokyo next.",
                      .reasoning = {{ReasoningPart::Kind::kSummary, "**Tokyo next**\n\nParis is done.", "", "",
                                     "openai-responses-v1"},
                                    {ReasoningPart::Kind::kEncrypted, "", "", "gAAAAABoNEWenc==", "openai-responses-v1"}},
                      .finish = FinishReason::kStop,
                      .native_finish = "completed",
                      .usage = Tokens(150, 210, 0, 192)},
           .replay =
               {{"/input/4",
                 R"({"type":"reasoning","id":"rs_new9f8e7d6c","summary":[{"type":"summary_text","text":"**Tokyo next**\n\nParis is done."}],"encrypted_content":"gAAAAABoNEWenc=="})"},
                {"/input/5",
                 R"({"type":"message","role":"assistant","content":[{"type":"output_text","text":"Paris is sunny; Tokyo next."}]})"},
                {"/input/6", R"({"type":"message","role":"user","content":[{"type":"input_text","text":"Thanks!"}]})"}}},
      }};
}

// "你好，世界🌏！" cut inside 世 (3 bytes) and inside 🌏 (4 bytes), each cut
// between two events: the halves travel as raw bytes in two JSON strings.
const std::string kHello = "你好，世界🌏！";
const std::string kHello1 = kHello.substr(0, 10);  // "你好，" + first byte of 世
const std::string kHello2 = kHello.substr(10, 7);  // rest of 世, 界, 2 bytes of 🌏
const std::string kHello3 = kHello.substr(17);     // last 2 bytes of 🌏, "！"

Case UnicodeSplit() {
  return Case{
      "ChineseAndEmojiSplitInsideACharacter",
      [] { return Base({User("用中文打个招呼 👋")}); },
      {
          {.adapter = Adapter::kOpenAi,
           .body = {{"/messages/0/content", R"("用中文打个招呼 👋")"}},
           .reply = Stream({kOpenAiRole, OpenAiText(kHello1), OpenAiText(kHello2), OpenAiText(kHello3),
                            OpenAiChunk("{}", R"("stop")"), OpenAiTokens(15, 6), kDone}),
           .expect = {.text = kHello, .finish = FinishReason::kStop, .native_finish = "stop", .usage = Tokens(15, 6)}},
          {.adapter = Adapter::kDeepSeek,
           .body = {{"/messages/0/content", R"("用中文打个招呼 👋")"}},
           .reply = Stream({kDeepSeekRole, DeepSeekText(kHello1), DeepSeekText(kHello2), DeepSeekText(kHello3),
                            DeepSeekChunk(R"({"content":""})", R"("stop")"), DeepSeekTokens(15, 6), kDone}),
           .expect = {.text = kHello, .finish = FinishReason::kStop, .native_finish = "stop", .usage = Tokens(15, 6)}},
          {.adapter = Adapter::kGeneric,
           .body = {{"/messages/0/content", R"("用中文打个招呼 👋")"}},
           .reply = Stream({kVllmRole, VllmText(kHello1), VllmText(kHello2), VllmText(kHello3),
                            VllmChunk(R"({"content":""})", R"("stop")"), VllmTokens(15, 6), kDone}),
           .expect = {.text = kHello, .finish = FinishReason::kStop, .native_finish = "stop", .usage = Tokens(15, 6)}},
          {.adapter = Adapter::kAnthropic,
           .body = {{"/messages/0/content/0/text", R"("用中文打个招呼 👋")"}},
           .reply = AntStream({AntStart(18), AntTextStart(0), AntText(0, kHello1), AntText(0, kHello2),
                               AntText(0, kHello3), AntBlockStop(0), AntDelta("end_turn", 9), kAntStop}),
           .expect =
               {.text = kHello, .finish = FinishReason::kStop, .native_finish = "end_turn", .usage = Tokens(18, 9)}},
          {.adapter = Adapter::kGemini,
           .body = {{"/contents/0/parts/0/text", R"("用中文打个招呼 👋")"}},
           .reply = Stream({GemChunk(GemParts(GemText(kHello1)), GemUsage(7, 2)),
                            GemChunk(GemParts(GemText(kHello2)), GemUsage(7, 4)),
                            GemChunk(GemParts(GemText(kHello3), "STOP"), GemUsage(7, 5))}),
           .expect = {.text = kHello, .finish = FinishReason::kStop, .native_finish = "STOP", .usage = Tokens(7, 5)}},
          {.adapter = Adapter::kResponses,
           .body = {{"/input/0/content/0/text", R"("用中文打个招呼 👋")"}},
           .reply = RspStream().Message({kHello1, kHello2, kHello3}).Final(RspUsage(15, 6)).Done(),
           .expect = {.text = kHello, .finish = FinishReason::kStop, .native_finish = "completed", .usage = Tokens(15, 6)}},
      }};
}

// ---------------------------------------------------------------- upstream errors

ExpectedError Err(ErrorCode code, int http) {
  ExpectedError e;
  e.code = code;
  e.http = http;
  return e;
}
ExpectedError WithMessage(ExpectedError e, std::string message, std::string param = {}) {
  e.message = std::move(message);
  e.param = std::move(param);
  return e;
}
// The upstream refused the key it was sent (core/error.hpp).
ExpectedError CredentialsRejected(ExpectedError e) {
  e.code_string = std::string(kProviderCredentialsRejected);
  return e;
}
ExpectedError Containing(ExpectedError e, std::string part) {
  e.message_contains = std::move(part);
  return e;
}
ExpectedError RateLimited(std::string part, std::string retry_after, std::string code_string) {
  ExpectedError e = Containing(Err(ErrorCode::kResourceExhausted, 429), std::move(part));
  e.retry_after = std::move(retry_after);
  e.code_string = std::move(code_string);
  return e;
}

ChatRequest Hi() { return Base({User("Hi")}); }
ChatRequest Story() { return Base({User("Tell me a story.")}); }

// `c` with a check, for every adapter, that the request carried exactly one
// user message with `text`, in its API's shape.
Case WithUserOnly(Case c, const std::string& text) {
  const std::string t = json::serialize(json::value(text));
  for (AdapterCase& col : c.adapters) {
    switch (Spec(col.adapter).api) {
      case RemoteApi::kOpenAiCompatible:
        col.body.push_back({"/messages", R"([{"role":"user","content":)" + t + "}]"});
        break;
      case RemoteApi::kAnthropic:
        col.body.push_back({"/messages", R"([{"role":"user","content":[{"type":"text","text":)" + t + "}]}]"});
        col.body.push_back({"/system", kAbsent});
        break;
      case RemoteApi::kGemini:
        col.body.push_back({"/contents", R"([{"role":"user","parts":[{"text":)" + t + "}]}]"});
        col.body.push_back({"/systemInstruction", kAbsent});
        break;
      case RemoteApi::kOpenAiResponses:
        col.body.push_back({"/input", R"([{"type":"message","role":"user","content":[{"type":"input_text","text":)" +
                                          t + "}]}]"});
        break;
    }
  }
  return c;
}

// A 400 names the field when the API's error object can (OpenAI `param`);
// the message is the upstream's own.
Case Error400() {
  const std::string oai =
      "Invalid 'temperature': decimal above maximum value. Expected a value <= 2, but got 3.5 instead.";
  const std::string ds = "Invalid temperature value, the valid range of temperature is [0, 2]";
  const std::string vllm = "temperature must be in [0, 2], got 3.5.";
  const std::string ant = "temperature: range: 0..1";
  const std::string gem =
      "Unable to submit request because it has a temperature value of 3.5 but the supported range is from 0 "
      "(inclusive) to 2.0001 (exclusive). Update the value and try again.";
  return Case{
      "Upstream400",
      [] {
        ChatRequest r = Hi();
        r.temperature = 3.5;
        return r;
      },
      {
          // [OAI-ERR]
          {.adapter = Adapter::kOpenAi,
           .body = {{"/temperature", "3.5"}},
           .reply = Json(400, R"({
  "error": {
    "message": ")" + oai + R"(",
    "type": "invalid_request_error",
    "param": "temperature",
    "code": "decimal_above_max_value"
  }
})"),
           .expect = {.error = WithMessage(Err(ErrorCode::kInvalidArgument, 400), oai, "temperature")}},
          // [DS-ERR] in the OpenAI-compatible shape, `param` null.
          {.adapter = Adapter::kDeepSeek,
           .body = {{"/temperature", "3.5"}},
           .reply = Json(400, R"({"error":{"message":")" + ds +
                                  R"(","type":"invalid_request_error","param":null,"code":"invalid_request_error"}})"),
           .expect = {.error = WithMessage(Err(ErrorCode::kInvalidArgument, 400), ds)}},
          // [VLLM] ErrorResponse, flat.
          {.adapter = Adapter::kGeneric,
           .body = {{"/temperature", "3.5"}},
           .reply = Json(400, R"({"object":"error","message":")" + vllm +
                                  R"(","type":"BadRequestError","param":"temperature","code":400})"),
           .expect = {.error = WithMessage(Err(ErrorCode::kInvalidArgument, 400), vllm, "temperature")}},
          // [ANT-ERR]: no `param` in Anthropic's error object.
          {.adapter = Adapter::kAnthropic,
           .body = {{"/temperature", "3.5"}},
           .reply = Json(400, R"({"type":"error","error":{"type":"invalid_request_error","message":")" + ant +
                                  R"("},"request_id":"req_011CSHoEeqs5C35K2UUqR7Fy"})"),
           .expect = {.error = WithMessage(Err(ErrorCode::kInvalidArgument, 400), ant)}},
          // [GEM-ERR] google.rpc.Status.
          {.adapter = Adapter::kGemini,
           .body = {{"/generationConfig", R"({"temperature":3.5})"}},
           .reply = Json(400, R"({
  "error": {
    "code": 400,
    "message": ")" + gem + R"(",
    "status": "INVALID_ARGUMENT"
  }
}
)",
                         "application/json; charset=UTF-8"),
           .expect = {.error = WithMessage(Err(ErrorCode::kInvalidArgument, 400), gem)}},
          // The Responses API answers errors in the same [OAI-ERR] shape.
          {.adapter = Adapter::kResponses,
           .body = {{"/temperature", "3.5"}},
           .reply = Json(400, R"({
  "error": {
    "message": ")" + oai + R"(",
    "type": "invalid_request_error",
    "param": "temperature",
    "code": "decimal_above_max_value"
  }
})"),
           .expect = {.error = WithMessage(Err(ErrorCode::kInvalidArgument, 400), oai, "temperature")}},
      }};
}

// Our credentials were refused: a 502 that says so and passes nothing of the
// upstream's text on (it may echo part of the key).
Case Error401() {
  const ExpectedError e = CredentialsRejected(
      WithMessage(Err(ErrorCode::kBadGateway, 502), "the provider rejected Tollgate's credentials (HTTP 401)"));
  return Case{
      "Upstream401",
      Hi,
      {
          {.adapter = Adapter::kOpenAi,
           .reply = Json(
               401,
               R"({"error":{"message":"Incorrect API key provided: sk-proj-****************0001. You can find your API key at https://platform.openai.com/account/api-keys.","type":"invalid_request_error","param":null,"code":"invalid_api_key"}})"),
           .expect = {.error = e}},
          {.adapter = Adapter::kDeepSeek,
           .reply = Json(
               401,
               R"({"error":{"message":"Authentication Fails, Your api key: {{KEY}} is invalid","type":"authentication_error","param":null,"code":"invalid_request_error"}})"),
           .expect = {.error = e}},
          // vLLM started with --api-key.
          {.adapter = Adapter::kGeneric, .reply = Json(401, R"({"error":"Unauthorized"})"), .expect = {.error = e}},
          {.adapter = Adapter::kAnthropic,
           .reply = Json(
               401,
               R"({"type":"error","error":{"type":"authentication_error","message":"invalid x-api-key"},"request_id":"req_011CSHoG7qW8yZ1aB2cD3eF4"})"),
           .expect = {.error = e}},
          // [GEM-ERR] UNAUTHENTICATED.
          {.adapter = Adapter::kGemini,
           .reply = Json(
               401,
               R"({"error":{"code":401,"message":"Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential.","status":"UNAUTHENTICATED"}})"),
           .expect = {.error = e}},
          {.adapter = Adapter::kResponses,
           .reply = Json(
               401,
               R"({"error":{"message":"Incorrect API key provided: sk-proj-****************0006. You can find your API key at https://platform.openai.com/account/api-keys.","type":"invalid_request_error","param":null,"code":"invalid_api_key"}})"),
           .expect = {.error = e}},
      }};
}

// Each provider's own answer to an API key it does not accept. Gemini
// answers 400 INVALID_ARGUMENT with ErrorInfo reason API_KEY_INVALID (the
// reason google/api/error_reason.proto defines; the body generativelanguage
// returns, as seen in public issue reports), not 401: it is still Tollgate's
// credentials, not the caller's request, that failed.
Case InvalidApiKey() {
  const ExpectedError e = CredentialsRejected(
      WithMessage(Err(ErrorCode::kBadGateway, 502), "the provider rejected Tollgate's credentials (HTTP 401)"));
  ExpectedError gem = CredentialsRejected(WithMessage(Err(ErrorCode::kBadGateway, 502), ""));
  gem.message_contains = "the provider rejected Tollgate's credentials";
  return Case{
      "InvalidApiKey",
      Hi,
      {
          // [OAI-ERR] 401 invalid_api_key, the key masked.
          {.adapter = Adapter::kOpenAi,
           .reply = Json(
               401,
               R"({"error":{"message":"Incorrect API key provided: sk-proj-****************0001. You can find your API key at https://platform.openai.com/account/api-keys.","type":"invalid_request_error","param":null,"code":"invalid_api_key"}})"),
           .expect = {.error = e}},
          {.adapter = Adapter::kDeepSeek,
           .reply = Json(
               401,
               R"({"error":{"message":"Authentication Fails, Your api key: ****0002 is invalid","type":"authentication_error","param":null,"code":"invalid_request_error"}})"),
           .expect = {.error = e}},
          // A server that echoes the whole key it refused.
          {.adapter = Adapter::kGeneric,
           .reply = Json(
               401,
               R"({"object":"error","message":"Invalid API key: {{KEY}}","type":"Unauthorized","param":null,"code":401})"),
           .expect = {.error = e}},
          {.adapter = Adapter::kAnthropic,
           .reply = Json(
               401,
               R"({"type":"error","error":{"type":"authentication_error","message":"invalid x-api-key"},"request_id":"req_011CSHoL1uA2cD5eF6gH7iJ8"})"),
           .expect = {.error = e}},
          {.adapter = Adapter::kGemini,
           .reply = Json(400, R"({
  "error": {
    "code": 400,
    "message": "API key not valid. Please pass a valid API key.",
    "status": "INVALID_ARGUMENT",
    "details": [
      {
        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
        "reason": "API_KEY_INVALID",
        "domain": "googleapis.com",
        "metadata": {
          "service": "generativelanguage.googleapis.com"
        }
      },
      {
        "@type": "type.googleapis.com/google.rpc.LocalizedMessage",
        "locale": "en-US",
        "message": "API key not valid. Please pass a valid API key."
      }
    ]
  }
}
)",
                         "application/json; charset=UTF-8"),
           .expect = {.error = gem}},
          {.adapter = Adapter::kResponses,
           .reply = Json(
               401,
               R"({"error":{"message":"Incorrect API key provided: sk-proj-****************0006. You can find your API key at https://platform.openai.com/account/api-keys.","type":"invalid_request_error","param":null,"code":"invalid_api_key"}})"),
           .expect = {.error = e}},
      }};
}

// Rate limited: 429 with the upstream's Retry-After and its own error code.
Case Error429() {
  auto with_retry = [](Fixture f) {
    f.retry_after = "7";
    return f;
  };
  return Case{
      "Upstream429",
      Hi,
      {
          {.adapter = Adapter::kOpenAi,
           .reply = with_retry(Json(
               429,
               R"({"error":{"message":"Rate limit reached for gpt-4o-mini in organization org-AbCdEfGh on requests per min (RPM): Limit 3, Used 3, Requested 1. Please try again in 20s.","type":"requests","param":null,"code":"rate_limit_exceeded"}})")),
           .expect = {.error = RateLimited("Rate limit reached for gpt-4o-mini", "7", "rate_limit_exceeded")}},
          // No `code`: its `type` is the machine-readable word.
          {.adapter = Adapter::kDeepSeek,
           .reply = with_retry(Json(
               429,
               R"({"error":{"message":"Rate Limit Reached","type":"rate_limit_error","param":null,"code":null}})")),
           .expect = {.error = RateLimited("Rate Limit Reached", "7", "rate_limit_error")}},
          // A generic server (or the proxy in front of it) answering in plain text.
          {.adapter = Adapter::kGeneric,
           .reply = with_retry(Json(429, "Too many requests, slow down.\n", "text/plain; charset=utf-8")),
           .expect = {.error = RateLimited("Too many requests, slow down.", "7", "rate_limit_exceeded")}},
          // [ANT-ERR]: retry-after and the anthropic-ratelimit-* headers.
          {.adapter = Adapter::kAnthropic,
           .reply =
               [&] {
                 Fixture f = with_retry(Json(
                     429,
                     R"({"type":"error","error":{"type":"rate_limit_error","message":"Number of request tokens has exceeded your per-minute rate limit (https://docs.claude.com/en/api/rate-limits); see the response headers for current usage. Please reduce the prompt length or the maximum tokens requested, or try again later."},"request_id":"req_011CSHoH8rX9zA2bC3dE4fG5"})"));
                 f.extra_headers =
                     "anthropic-ratelimit-requests-limit: 50\r\nanthropic-ratelimit-requests-remaining: 0\r\n";
                 return f;
               }(),
           .expect = {.error = RateLimited("exceeded your per-minute rate limit", "7", "rate_limit_error")}},
          // [GEM-ERR]: Gemini sends no Retry-After header; its hint is
          // google.rpc.RetryInfo in the body, which stands in for it. The
          // code is `status`.
          {.adapter = Adapter::kGemini,
           .reply = Json(429, R"({
  "error": {
    "code": 429,
    "message": "You exceeded your current quota, please check your plan and billing details.",
    "status": "RESOURCE_EXHAUSTED",
    "details": [
      {
        "@type": "type.googleapis.com/google.rpc.QuotaFailure",
        "violations": [
          {
            "quotaMetric": "generativelanguage.googleapis.com/generate_content_free_tier_requests",
            "quotaId": "GenerateRequestsPerMinutePerProjectPerModel-FreeTier"
          }
        ]
      },
      {
        "@type": "type.googleapis.com/google.rpc.RetryInfo",
        "retryDelay": "22s"
      }
    ]
  }
}
)",
                         "application/json; charset=UTF-8"),
           .expect = {.error = RateLimited("You exceeded your current quota", "22", "RESOURCE_EXHAUSTED")}},
          {.adapter = Adapter::kResponses,
           .reply = with_retry(Json(
               429,
               R"({"error":{"message":"Rate limit reached for gpt-5-mini in organization org-AbCdEfGh on tokens per min (TPM): Limit 200000, Used 199000, Requested 1500. Please try again in 450ms.","type":"tokens","param":null,"code":"rate_limit_exceeded"}})")),
           .expect = {.error = RateLimited("Rate limit reached for gpt-5-mini", "7", "rate_limit_exceeded")}},
      }};
}

// A server error: 502 with the upstream's message.
Case Error500() {
  const ExpectedError e = Err(ErrorCode::kBadGateway, 502);
  return Case{
      "Upstream500",
      Hi,
      {
          {.adapter = Adapter::kOpenAi,
           .reply = Json(
               500,
               R"({"error":{"message":"The server had an error while processing your request. Sorry about that!","type":"server_error","param":null,"code":null}})"),
           .expect = {.error = Containing(e, "The server had an error while processing your request.")}},
          {.adapter = Adapter::kDeepSeek,
           .reply = Json(500, R"({"error":{"message":"Server Error","type":"server_error","param":null,"code":null}})"),
           .expect = {.error = Containing(e, "Server Error")}},
          {.adapter = Adapter::kGeneric,
           .reply = Json(
               500,
               R"({"object":"error","message":"EngineCore encountered an issue.","type":"InternalServerError","param":null,"code":500})"),
           .expect = {.error = Containing(e, "EngineCore encountered an issue.")}},
          {.adapter = Adapter::kAnthropic,
           .reply = Json(
               500,
               R"({"type":"error","error":{"type":"api_error","message":"Internal server error"},"request_id":"req_011CSHoJ9sY0aB3cD4eF5gH6"})"),
           .expect = {.error = Containing(e, "Internal server error")}},
          {.adapter = Adapter::kGemini,
           .reply = Json(
               500,
               R"({"error":{"code":500,"message":"An internal error has occurred. Please retry or report in https://developers.generativeai.google/guide/troubleshooting","status":"INTERNAL"}})",
               "application/json; charset=UTF-8"),
           .expect = {.error = Containing(e, "An internal error has occurred.")}},
          {.adapter = Adapter::kResponses,
           .reply = Json(
               500,
               R"({"error":{"message":"The server had an error while processing your request. Sorry about that!","type":"server_error","param":null,"code":null}})"),
           .expect = {.error = Containing(e, "The server had an error while processing your request.")}},
      }};
}

// Overloaded: Anthropic's 529, everyone else's 503 -> 503 (retry elsewhere).
Case Overloaded() {
  const ExpectedError e = Err(ErrorCode::kUnavailable, 503);
  return Case{
      "UpstreamOverloaded",
      Hi,
      {
          {.adapter = Adapter::kOpenAi,
           .reply = Json(
               503,
               R"({"error":{"message":"The engine is currently overloaded, please try again later.","type":"server_error","param":null,"code":null}})"),
           .expect = {.error = Containing(e, "The engine is currently overloaded")}},
          {.adapter = Adapter::kDeepSeek,
           .reply =
               Json(503, R"({"error":{"message":"Server Overloaded","type":"server_error","param":null,"code":null}})"),
           .expect = {.error = Containing(e, "Server Overloaded")}},
          {.adapter = Adapter::kGeneric,
           .reply = Json(
               503,
               R"({"object":"error","message":"The server is overloaded.","type":"ServiceUnavailableError","param":null,"code":503})"),
           .expect = {.error = Containing(e, "The server is overloaded.")}},
          // [ANT-ERR] 529 overloaded_error.
          {.adapter = Adapter::kAnthropic,
           .reply = Json(
               529,
               R"({"type":"error","error":{"type":"overloaded_error","message":"Overloaded"},"request_id":"req_011CSHoK0tZ1bC4dE5fG6hI7"})"),
           .expect = {.error = Containing(e, "Overloaded")}},
          {.adapter = Adapter::kGemini,
           .reply = Json(
               503,
               R"({"error":{"code":503,"message":"The model is overloaded. Please try again later.","status":"UNAVAILABLE"}})",
               "application/json; charset=UTF-8"),
           .expect = {.error = Containing(e, "The model is overloaded.")}},
          {.adapter = Adapter::kResponses,
           .reply = Json(
               503,
               R"({"error":{"message":"The engine is currently overloaded, please try again later.","type":"server_error","param":null,"code":null}})"),
           .expect = {.error = Containing(e, "The engine is currently overloaded")}},
      }};
}

// The provider, not the model, ended the answer: a content filter, a
// refusal, or DeepSeek running out of inference resources. The finish must
// say so (content_filter, or error for an interrupted answer, as Gemini's
// OTHER reads), never "stop": a cut answer must not look finished.
Case EndedByTheProvider() {
  return Case{
      "EndedByTheProvider",
      [] { return Base({User("Write the whole story.")}); },
      {
          // [OAI-CHUNK] finish_reason content_filter.
          {.adapter = Adapter::kOpenAi,
           .reply = Stream({kOpenAiRole, OpenAiText("Here is the"), OpenAiChunk("{}", R"("content_filter")"),
                            OpenAiTokens(20, 3), kDone}),
           .expect = {.text = "Here is the",
                      .finish = FinishReason::kContentFilter,
                      .native_finish = "content_filter",
                      .usage = Tokens(20, 3)}},
          // [DS-CHAT] finish_reason insufficient_system_resource: "the request
          // is interrupted due to insufficient resource of the inference system".
          {.adapter = Adapter::kDeepSeek,
           .reply = Stream({kDeepSeekRole, DeepSeekText("Here is the"),
                            DeepSeekChunk(R"({"content":""})", R"("insufficient_system_resource")"),
                            DeepSeekTokens(20, 3), kDone}),
           .expect = {.text = "Here is the",
                      .finish = FinishReason::kError,
                      .native_finish = "insufficient_system_resource",
                      .usage = Tokens(20, 3)}},
          {.adapter = Adapter::kGeneric,
           .reply = Stream({kVllmRole, VllmText("Here is the"), VllmChunk(R"({"content":""})", R"("content_filter")"),
                            VllmTokens(20, 3), kDone}),
           .expect = {.text = "Here is the",
                      .finish = FinishReason::kContentFilter,
                      .native_finish = "content_filter",
                      .usage = Tokens(20, 3)}},
          // [ANT-MSG] stop_reason refusal (streaming classifiers).
          {.adapter = Adapter::kAnthropic,
           .reply = AntStream({AntStart(20), AntTextStart(0), AntText(0, "Here is the"), AntBlockStop(0),
                               AntDelta("refusal", 3), kAntStop}),
           .expect = {.text = "Here is the",
                      .finish = FinishReason::kContentFilter,
                      .native_finish = "refusal",
                      .usage = Tokens(20, 3)}},
          // [GEM-GEN] finishReason SAFETY with the rating that tripped it.
          {.adapter = Adapter::kGemini,
           .reply = Stream(
               {GemChunk(GemParts(GemText("Here is the")), GemUsage(20, 3)),
                GemChunk(
                    R"("content": {"parts": [{"text": ""}],"role": "model"},"finishReason": "SAFETY","safetyRatings": [{"category": "HARM_CATEGORY_DANGEROUS_CONTENT","probability": "HIGH","blocked": true}])",
                    GemUsage(20, 3))}),
           .expect = {.text = "Here is the",
                      .finish = FinishReason::kContentFilter,
                      .native_finish = "SAFETY",
                      .usage = Tokens(20, 3)}},
          // [RSP] response.incomplete, incomplete_details.reason content_filter.
          {.adapter = Adapter::kResponses,
           .reply = RspStream()
                        .Message({"Here is the"})
                        .Final(RspUsage(20, 3), R"({"reason":"content_filter"})")
                        .Done(),
           .expect = {.text = "Here is the",
                      .finish = FinishReason::kContentFilter,
                      .native_finish = "content_filter",
                      .usage = Tokens(20, 3)}},
      }};
}

// An error event inside a 200 stream after some text: the stream fails with
// the error's own class (overloaded -> 503), never completes.
Case MidStreamError() {
  const ExpectedError bad =
      Containing(Err(ErrorCode::kBadGateway, 502), "The server had an error while processing your request.");
  return Case{
      "ErrorEventMidStream",
      Story,
      {
          // An error object in a `data:` event, then the end (WIRE-FORMATS 3.1).
          {.adapter = Adapter::kOpenAi,
           .reply = Stream(
               {kOpenAiRole, OpenAiText("Once upon"),
                "data: {\"error\":{\"message\":\"The server had an error while processing your request. Sorry about that!\",\"type\":\"server_error\",\"param\":null,\"code\":null}}\n\n"}),
           .expect = {.text = "Once upon", .error = bad}},
          {.adapter = Adapter::kDeepSeek,
           .reply = Stream(
               {kDeepSeekRole, DeepSeekText("Once upon"),
                "data: {\"error\":{\"message\":\"The server had an error while processing your request.\",\"type\":\"server_error\",\"param\":null,\"code\":null}}\n\n"}),
           .expect = {.text = "Once upon", .error = bad}},
          // vLLM's streaming error: {"error": ErrorResponse}.
          {.adapter = Adapter::kGeneric,
           .reply = Stream(
               {kVllmRole, VllmText("Once upon"),
                "data: {\"error\":{\"object\":\"error\",\"message\":\"The server had an error while processing your request.\",\"type\":\"InternalServerError\",\"param\":null,\"code\":500}}\n\n"}),
           .expect = {.text = "Once upon", .error = bad}},
          // [ANT-STREAM] `event: error`, overloaded_error (HTTP 529 when not streaming).
          {.adapter = Adapter::kAnthropic,
           .reply = AntStream(
               {AntStart(12), AntTextStart(0), AntText(0, "Once upon"),
                AntEvent("error",
                         R"({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})")}),
           .expect = {.text = "Once upon", .error = Containing(Err(ErrorCode::kUnavailable, 503), "Overloaded")}},
          // [GEM-ERR] the Status object as an SSE event.
          {.adapter = Adapter::kGemini,
           .reply = Stream(
               {GemChunk(GemParts(GemText("Once upon")), GemUsage(6, 2)),
                "data: {\"error\": {\"code\": 503, \"message\": \"The model is overloaded. Please try again later.\", \"status\": \"UNAVAILABLE\"}}\r\n\r\n"}),
           .expect = {.text = "Once upon",
                      .error = Containing(Err(ErrorCode::kUnavailable, 503), "The model is overloaded.")}},
          // [RSP-STREAM] an `error` event, then response.failed; server_error
          // is the upstream's own trouble: 503 (retry elsewhere).
          {.adapter = Adapter::kResponses,
           .reply = RspStream()
                        .Message({"Once upon"}, false)
                        .Event("error",
                               R"("code":"server_error","message":"The server had an error while processing your request. Sorry about that!","param":null)")
                        .Event("response.failed",
                               R"("response":)" + RspResponse("failed", "[]", "null", "null",
                                                              R"({"code":"server_error","message":"The server had an error while processing your request. Sorry about that!"})"))
                        .Done(),
           .expect = {.text = "Once upon",
                      .error = Containing(Err(ErrorCode::kUnavailable, 503),
                                          "The server had an error while processing your request.")}},
      }};
}

// ---------------------------------------------------------------- stream endings


// The connection drops in the middle of an event, before any finish reason:
// an error after the text so far, never a finished answer.
Case TruncatedStream() {
  const ExpectedError e = Containing(Err(ErrorCode::kBadGateway, 502), "ended before it finished");
  Fixture ant = CutStream(
      {AntStart(12), AntTextStart(0), AntText(0, "Once"), AntText(0, " upon a"), Cut(AntText(0, " time"), 15)});
  ant.content_type = "text/event-stream; charset=utf-8";
  return Case{
      "TruncatedStream",
      Story,
      {
          {.adapter = Adapter::kOpenAi,
           .reply = CutStream({kOpenAiRole, OpenAiText("Once"), OpenAiText(" upon a"), Cut(OpenAiText(" time"), 20)}),
           .expect = {.text = "Once upon a", .error = e}},
          {.adapter = Adapter::kDeepSeek,
           .reply = CutStream(
               {kDeepSeekRole, DeepSeekText("Once"), DeepSeekText(" upon a"), Cut(DeepSeekText(" time"), 20)}),
           .expect = {.text = "Once upon a", .error = e}},
          {.adapter = Adapter::kGeneric,
           .reply = CutStream({kVllmRole, VllmText("Once"), VllmText(" upon a"), Cut(VllmText(" time"), 20)}),
           .expect = {.text = "Once upon a", .error = e}},
          {.adapter = Adapter::kAnthropic, .reply = ant, .expect = {.text = "Once upon a", .error = e}},
          {.adapter = Adapter::kGemini,
           .reply = CutStream({GemChunk(GemParts(GemText("Once")), GemUsage(6, 1)),
                               GemChunk(GemParts(GemText(" upon a")), GemUsage(6, 3)),
                               Cut(GemChunk(GemParts(GemText(" time")), GemUsage(6, 4)), 60)}),
           .expect = {.text = "Once upon a", .error = e}},
          {.adapter = Adapter::kResponses,
           .reply =
               [] {
                 Fixture f = RspStream().Message({"Once", " upon a", " time"}, false).Done();
                 f.pieces.back() = Cut(f.pieces.back(), 20);
                 f.cut = true;
                 return f;
               }(),
           .expect = {.text = "Once upon a", .error = e}},
      }};
}

// The body ends cleanly without the terminator ([DONE], message_stop) but
// after a finish reason: a complete answer (Gemini never sends one).
Case NoTerminatorAfterFinish() {
  return Case{
      "EndsWithoutTerminatorAfterFinish",
      Story,
      {
          {.adapter = Adapter::kOpenAi,
           .reply = Stream({kOpenAiRole, OpenAiText("The end."), OpenAiChunk("{}", R"("stop")"), OpenAiTokens(12, 3)}),
           .expect =
               {.text = "The end.", .finish = FinishReason::kStop, .native_finish = "stop", .usage = Tokens(12, 3)}},
          {.adapter = Adapter::kDeepSeek,
           .reply = Stream({kDeepSeekRole, DeepSeekText("The end."), DeepSeekChunk(R"({"content":""})", R"("stop")"),
                            DeepSeekTokens(12, 3)}),
           .expect =
               {.text = "The end.", .finish = FinishReason::kStop, .native_finish = "stop", .usage = Tokens(12, 3)}},
          {.adapter = Adapter::kGeneric,
           .reply = Stream(
               {kVllmRole, VllmText("The end."), VllmChunk(R"({"content":""})", R"("stop")"), VllmTokens(12, 3)}),
           .expect =
               {.text = "The end.", .finish = FinishReason::kStop, .native_finish = "stop", .usage = Tokens(12, 3)}},
          {.adapter = Adapter::kAnthropic,
           .reply = AntStream(
               {AntStart(12), AntTextStart(0), AntText(0, "The end."), AntBlockStop(0), AntDelta("end_turn", 4)}),
           .expect = {.text = "The end.",
                      .finish = FinishReason::kStop,
                      .native_finish = "end_turn",
                      .usage = Tokens(12, 4)}},
          {.adapter = Adapter::kGemini,
           .reply = Stream({GemChunk(GemParts(GemText("The end.")), GemUsage(6, 2)),
                            GemChunk(GemParts(GemText(""), "STOP"), GemUsage(6, 3))}),
           .expect =
               {.text = "The end.", .finish = FinishReason::kStop, .native_finish = "STOP", .usage = Tokens(6, 3)}},
          // response.completed is both the finish and the end: nothing follows it.
          {.adapter = Adapter::kResponses,
           .reply = RspStream().Message({"The end."}).Final(RspUsage(12, 3)).Done(),
           .expect =
               {.text = "The end.", .finish = FinishReason::kStop, .native_finish = "completed", .usage = Tokens(12, 3)}},
      }};
}

// The body ends cleanly with neither terminator nor finish reason: cut off
// upstream, so an error (not a short answer that looks finished).
Case NoTerminatorNoFinish() {
  const ExpectedError e = Containing(Err(ErrorCode::kBadGateway, 502), "ended before it finished");
  return Case{
      "EndsWithoutTerminatorOrFinish",
      Story,
      {
          {.adapter = Adapter::kOpenAi,
           .reply = Stream({kOpenAiRole, OpenAiText("Part"), OpenAiText("ial")}),
           .expect = {.text = "Partial", .error = e}},
          {.adapter = Adapter::kDeepSeek,
           .reply = Stream({kDeepSeekRole, DeepSeekText("Part"), DeepSeekText("ial")}),
           .expect = {.text = "Partial", .error = e}},
          {.adapter = Adapter::kGeneric,
           .reply = Stream({kVllmRole, VllmText("Part"), VllmText("ial")}),
           .expect = {.text = "Partial", .error = e}},
          {.adapter = Adapter::kAnthropic,
           .reply = AntStream({AntStart(12), AntTextStart(0), AntText(0, "Part"), AntText(0, "ial"), AntBlockStop(0)}),
           .expect = {.text = "Partial", .error = e}},
          {.adapter = Adapter::kGemini,
           .reply = Stream({GemChunk(GemParts(GemText("Part")), GemUsage(6, 1)),
                            GemChunk(GemParts(GemText("ial")), GemUsage(6, 2))}),
           .expect = {.text = "Partial", .error = e}},
          {.adapter = Adapter::kResponses,
           .reply = RspStream().Message({"Part", "ial"}, false).Done(),
           .expect = {.text = "Partial", .error = e}},
      }};
}

const std::vector<Case>& Cases() {
  static const std::vector<Case> cases = {
      PlainText(),
      SystemPrompts(),
      MultiTurn(),
      ToolCallStreamed(),
      ToolCallWhole(),
      ParallelToolCalls(),
      ToolCallWithoutArguments(),
      JsonMode(),
      JsonSchema(),
      StopSequence(),
      MaxTokens(),
      MaxTokensMidToolCall(),
      ImageInput(),
      ReasoningReplay(),
      UnicodeSplit(),
      WithUserOnly(Error400(), "Hi"),
      WithUserOnly(Error401(), "Hi"),
      WithUserOnly(InvalidApiKey(), "Hi"),
      WithUserOnly(Error429(), "Hi"),
      WithUserOnly(Error500(), "Hi"),
      WithUserOnly(Overloaded(), "Hi"),
      WithUserOnly(EndedByTheProvider(), "Write the whole story."),
      WithUserOnly(MidStreamError(), "Tell me a story."),
      WithUserOnly(TruncatedStream(), "Tell me a story."),
      WithUserOnly(NoTerminatorAfterFinish(), "Tell me a story."),
      WithUserOnly(NoTerminatorNoFinish(), "Tell me a story."),
  };
  return cases;
}

// ================================================================ harness

const AdapterCase* Column(const Case& c, Adapter a) {
  for (const auto& col : c.adapters) {
    if (col.adapter == a) return &col;
  }
  return nullptr;
}

std::string Substitute(std::string piece, const AdapterSpec& spec) {
  constexpr std::string_view kKey = "{{KEY}}";
  for (auto pos = piece.find(kKey); pos != std::string::npos; pos = piece.find(kKey, pos)) {
    piece.replace(pos, kKey.size(), spec.api_key);
  }
  return piece;
}

std::string BodyOf(const Fixture& f, const AdapterSpec& spec) {
  std::string body;
  for (const auto& p : f.pieces) body += Substitute(p, spec);
  return body;
}

bool IsEventStream(const Fixture& f) { return f.content_type.starts_with("text/event-stream"); }

// Writes the fixture: a Content-Length body, or a chunked event stream with
// one chunk per piece (cut in the middle of the last one when `cut`).
void Serve(const Fixture& f, const AdapterSpec& spec, FakeResponder& r) {
  std::string headers = f.extra_headers;
  if (!f.retry_after.empty()) headers += "Retry-After: " + f.retry_after + "\r\n";
  if (!IsEventStream(f)) {
    r.SendResponse(f.status, f.content_type, BodyOf(f, spec), headers);
    return;
  }
  r.Write("HTTP/1.1 " + std::to_string(f.status) + " OK\r\nContent-Type: " + f.content_type + "\r\n" + headers +
          "Cache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n\r\n");
  for (std::size_t i = 0; i < f.pieces.size(); ++i) {
    const std::string piece = Substitute(f.pieces[i], spec);
    if (f.cut && i + 1 == f.pieces.size()) {
      char size[32];
      std::snprintf(size, sizeof size, "%zx\r\n", piece.size() + 64);  // announces more than comes
      r.Write(size + piece);
      r.CloseAfterResponse();
      return;
    }
    r.Chunk(piece);
  }
  r.EndChunked();
}

// ---------------------------------------------------------------- describing events

// Text for comparing event sequences. A tool-call id that does not occur in
// the upstream's body was made up by the adapter (randomly): it is printed as
// "made-up#N" by order of appearance, so two replays compare equal.
std::vector<std::string> Describe(const std::vector<StreamEvent>& events, std::string_view body) {
  std::map<std::string, std::string> made_up;
  auto id_of = [&](const std::string& id) -> std::string {
    if (id.empty() || body.find(id) != std::string_view::npos) return id;
    auto [it, fresh] = made_up.try_emplace(id, "made-up#" + std::to_string(made_up.size()));
    return it->second;
  };
  std::vector<std::string> out;
  for (const auto& e : events) {
    std::ostringstream s;
    if (const auto* t = std::get_if<TextDelta>(&e)) {
      s << "text c" << t->choice << " [" << t->text << "]";
    } else if (const auto* r = std::get_if<ReasoningDelta>(&e)) {
      s << "reasoning c" << r->choice << " #" << r->index << " kind" << static_cast<int>(r->kind) << " [" << r->text
        << "] sig[" << r->signature << "] data[" << r->data << "] format[" << r->format << "] id[" << r->id << "]";
    } else if (const auto* c = std::get_if<ToolCallDelta>(&e)) {
      s << "call c" << c->choice << " #" << c->index << " id[" << id_of(c->id) << "] name[" << c->name << "] args["
        << c->arguments << "] sig[" << c->thought_signature << "]";
    } else if (const auto* f = std::get_if<FinishDelta>(&e)) {
      s << "finish c" << f->choice << " " << FinishReasonName(f->reason) << " (" << f->native_reason << ")";
    } else if (const auto* u = std::get_if<UsageDelta>(&e)) {
      s << "usage p" << u->usage.prompt_tokens << " c" << u->usage.completion_tokens << " cached"
        << u->usage.cached_tokens << " r" << u->usage.reasoning_tokens << " w" << u->usage.cache_write_tokens;
    }
    out.push_back(s.str());
  }
  return out;
}

std::string Join(const std::vector<std::string>& lines) {
  std::string all;
  for (const auto& l : lines) all += "  " + l + "\n";
  return all;
}

std::string UsageString(const Usage& u) {
  return "prompt=" + std::to_string(u.prompt_tokens) + " completion=" + std::to_string(u.completion_tokens) +
         " cached=" + std::to_string(u.cached_tokens) + " reasoning=" + std::to_string(u.reasoning_tokens) +
         " cache_write=" + std::to_string(u.cache_write_tokens);
}

std::string FinishString(const std::optional<FinishReason>& f) {
  return f ? std::string(FinishReasonName(*f)) : std::string("(none)");
}

// Well-formed UTF-8 (RFC 3629: no overlongs, surrogates or values past U+10FFFF).
bool IsValidUtf8(std::string_view s) {
  std::size_t i = 0;
  while (i < s.size()) {
    const auto b = static_cast<unsigned char>(s[i]);
    std::size_t n = 0;
    unsigned char lo = 0x80, hi = 0xBF;
    if (b < 0x80) {
      n = 1;
    } else if (b >= 0xC2 && b <= 0xDF) {
      n = 2;
    } else if (b >= 0xE0 && b <= 0xEF) {
      n = 3;
      if (b == 0xE0) lo = 0xA0;
      if (b == 0xED) hi = 0x9F;
    } else if (b >= 0xF0 && b <= 0xF4) {
      n = 4;
      if (b == 0xF0) lo = 0x90;
      if (b == 0xF4) hi = 0x8F;
    } else {
      return false;
    }
    if (i + n > s.size()) return false;
    for (std::size_t k = 1; k < n; ++k) {
      const auto c = static_cast<unsigned char>(s[i + k]);
      if (c < (k == 1 ? lo : 0x80) || c > (k == 1 ? hi : 0xBF)) return false;
    }
    i += n;
  }
  return true;
}

// ---------------------------------------------------------------- the pure reader

struct ReaderResult {
  std::vector<StreamEvent> events;
  std::optional<Error> error;  // nullopt: the answer completed
};

// Feeds `slices` to a ResponseReader the way RemoteProvider's call does: stop
// at an error or at the terminator; otherwise the end of the body.
ReaderResult ReadSlices(const AdapterSpec& spec, const Fixture& f, const std::vector<std::string_view>& slices) {
  detail::ResponseReader reader(spec.api, RequestKind::kChat, spec.api_key);
  reader.OnHead(f.status, f.content_type, f.retry_after);
  ReaderResult out;
  for (std::string_view slice : slices) {
    auto r = reader.OnBody(slice, out.events);
    if (!r) {
      out.error = r.error();
      return out;
    }
    if (reader.done()) return out;
  }
  auto r = reader.OnEnd(out.events);
  if (!r) out.error = r.error();
  return out;
}

std::string Ending(const ReaderResult& r) {
  if (!r.error) return "complete";
  return "error " + std::to_string(HttpStatus(r.error->code)) + " " + r.error->message;
}

// ---------------------------------------------------------------- request checks

const json::value* Find(const json::value& root, const std::string& pointer) {
  boost::system::error_code ec;
  return root.find_pointer(pointer, ec);
}

void CheckBody(const std::vector<JsonCheck>& checks, const json::value& body) {
  for (const auto& check : checks) {
    const json::value* actual = Find(body, check.pointer);
    if (check.expected == kAbsent) {
      EXPECT_EQ(actual, nullptr) << "request body " << check.pointer << " should be absent, is "
                                 << json::serialize(*actual);
      continue;
    }
    if (actual == nullptr) {
      ADD_FAILURE() << "request body has no " << check.pointer << ":\n" << json::serialize(body);
      continue;
    }
    const json::value expected = json::parse(check.expected);
    EXPECT_EQ(*actual, expected) << "request body " << check.pointer << "\n  actual:   " << json::serialize(*actual)
                                 << "\n  expected: " << json::serialize(expected);
  }
}

std::string HeaderOr(const FakeRequest& req, const std::string& name, std::string fallback = kAbsent) {
  auto it = req.headers.find(name);
  return it == req.headers.end() ? fallback : it->second;
}

// What every request to the adapter carries, whatever the case: method, path,
// auth and content headers, model and stream flags; the key only in its
// header, never in the URL or the body.
void CheckStandardRequest(const AdapterSpec& spec, const std::string& model, const FakeRequest& req,
                          const json::value& body) {
  const std::string key = spec.api_key;
  EXPECT_EQ(req.method, "POST");
  EXPECT_EQ(HeaderOr(req, "content-type"), "application/json");
  EXPECT_EQ(HeaderOr(req, "accept"), "text/event-stream");
  EXPECT_EQ(req.target.find(key), std::string::npos) << req.target;
  EXPECT_EQ(req.target.find("key="), std::string::npos) << req.target;
  EXPECT_EQ(req.body.find(key), std::string::npos) << "the API key is in the request body";
  int headers_with_key = 0;
  for (const auto& [name, value] : req.headers) headers_with_key += value.find(key) != std::string::npos ? 1 : 0;
  EXPECT_EQ(headers_with_key, 1) << "the key must travel in exactly one header";
  ASSERT_TRUE(body.is_object()) << req.body;
  switch (spec.api) {
    case RemoteApi::kOpenAiCompatible:
      // [OAI-CHAT]: POST {base}/chat/completions, Bearer auth; always
      // streamed with usage ([OAI-CHUNK] include_usage).
      EXPECT_EQ(req.target, std::string(spec.base_path) + "/chat/completions");
      EXPECT_EQ(HeaderOr(req, "authorization"), "Bearer " + key);
      EXPECT_EQ(HeaderOr(req, "x-api-key"), kAbsent);
      CheckBody({{"/model", json::serialize(json::value(model))},
                 {"/stream", "true"},
                 {"/stream_options", R"({"include_usage":true})"}},
                body);
      break;
    case RemoteApi::kAnthropic:
      // [ANT-MSG]: POST /v1/messages, x-api-key, anthropic-version; max_tokens required.
      EXPECT_EQ(req.target, std::string(spec.base_path) + "/messages");
      EXPECT_EQ(HeaderOr(req, "x-api-key"), key);
      EXPECT_EQ(HeaderOr(req, "anthropic-version"), "2023-06-01");
      EXPECT_EQ(HeaderOr(req, "authorization"), kAbsent);
      CheckBody({{"/model", json::serialize(json::value(model))}, {"/stream", "true"}}, body);
      {
        const json::value* max_tokens = Find(body, "/max_tokens");
        EXPECT_TRUE(max_tokens != nullptr && max_tokens->is_int64() && max_tokens->get_int64() > 0)
            << "max_tokens is required";
      }
      break;
    case RemoteApi::kGemini:
      // [GEM-GEN]: the model in the path, streamed as SSE; the key in
      // x-goog-api-key, never `?key=`.
      EXPECT_EQ(req.target, std::string(spec.base_path) + "/models/" + model + ":streamGenerateContent?alt=sse");
      EXPECT_EQ(HeaderOr(req, "x-goog-api-key"), key);
      EXPECT_EQ(HeaderOr(req, "authorization"), kAbsent);
      CheckBody({{"/model", kAbsent}, {"/stream", kAbsent}}, body);
      {
        const json::value* contents = Find(body, "/contents");
        EXPECT_TRUE(contents != nullptr && contents->is_array() && !contents->get_array().empty());
      }
      break;
    case RemoteApi::kOpenAiResponses:
      // [RSP]: POST {base}/responses, Bearer auth; always streamed and
      // stateless: store false, encrypted reasoning included.
      EXPECT_EQ(req.target, std::string(spec.base_path) + "/responses");
      EXPECT_EQ(HeaderOr(req, "authorization"), "Bearer " + key);
      EXPECT_EQ(HeaderOr(req, "x-api-key"), kAbsent);
      CheckBody({{"/model", json::serialize(json::value(model))},
                 {"/stream", "true"},
                 {"/store", "false"},
                 {"/include", R"(["reasoning.encrypted_content"])"},
                 {"/messages", kAbsent},
                 {"/stream_options", kAbsent}},
                body);
      {
        const json::value* input = Find(body, "/input");
        EXPECT_TRUE(input != nullptr && input->is_array() && !input->get_array().empty());
      }
      break;
  }
}

// ---------------------------------------------------------------- outcome checks

bool SameArguments(const std::string& expected, const std::string& actual) {
  boost::system::error_code ec1, ec2;
  const json::value e = json::parse(expected, ec1);
  const json::value a = json::parse(actual, ec2);
  if (!ec1 && !ec2) return e == a;
  return expected == actual;
}

bool IsMadeUpId(const std::string& id) {
  if (!id.starts_with("call_") || id.size() != 29) return false;
  for (char c : id.substr(5)) {
    if (!std::isalnum(static_cast<unsigned char>(c))) return false;
  }
  return true;
}

std::string CodeName(ErrorCode code) {
  return std::string(ErrorType(code)) + " (" + std::to_string(HttpStatus(code)) + ")";
}

void CheckError(const ExpectedError& expected, const Error& e, const AdapterSpec& spec, std::uint16_t port) {
  EXPECT_EQ(static_cast<int>(e.code), static_cast<int>(expected.code))
      << "got " << CodeName(e.code) << ", expected " << CodeName(expected.code) << ": " << e.message;
  EXPECT_EQ(HttpStatus(e.code), expected.http) << e.message;
  if (!expected.message.empty()) {
    EXPECT_EQ(e.message, expected.message);
  }
  if (!expected.message_contains.empty()) {
    EXPECT_NE(e.message.find(expected.message_contains), std::string::npos)
        << "message: " << e.message << "\nshould contain: " << expected.message_contains;
  }
  EXPECT_EQ(e.param, expected.param);
  EXPECT_EQ(e.retry_after, expected.retry_after);
  EXPECT_EQ(e.code_string, expected.code_string);
  EXPECT_EQ(e.provider_name, spec.display_name);
  EXPECT_FALSE(e.message.empty());
  for (const std::string& field : {e.message, e.param, e.code_string, e.retry_after}) {
    EXPECT_EQ(field.find(spec.api_key), std::string::npos) << "the API key leaked: " << field;
    EXPECT_EQ(field.find("127.0.0.1"), std::string::npos) << "the upstream host leaked: " << field;
    EXPECT_EQ(field.find(std::to_string(port)), std::string::npos) << "the upstream port leaked: " << field;
  }
}

void CheckOutcome(const Outcome& expected, const RecordingSink& sink, const AdapterSpec& spec, std::uint16_t port) {
  const std::vector<StreamEvent> events = sink.events();
  for (const auto& e : events) {
    if (const auto* t = std::get_if<TextDelta>(&e)) {
      EXPECT_EQ(t->choice, 0);
      EXPECT_TRUE(IsValidUtf8(t->text)) << "text delta is not complete UTF-8";
    } else if (const auto* r = std::get_if<ReasoningDelta>(&e)) {
      EXPECT_EQ(r->choice, 0);
      EXPECT_TRUE(IsValidUtf8(r->text)) << "reasoning delta is not complete UTF-8";
    } else if (const auto* c = std::get_if<ToolCallDelta>(&e)) {
      EXPECT_EQ(c->choice, 0);
    }
  }
  const ChatResponse response = sink.response();
  ASSERT_FALSE(response.choices.empty());
  const ChoiceResult& choice = response.choices.front();
  EXPECT_EQ(response.choices.size(), 1u);
  EXPECT_EQ(choice.text, expected.text);

  if (expected.error) {
    ASSERT_TRUE(sink.error()) << "completed (finish " << FinishString(choice.finish) << ") where an error was due";
    EXPECT_FALSE(sink.completion());
    CheckError(*expected.error, *sink.error(), spec, port);
    return;
  }
  ASSERT_FALSE(sink.error()) << sink.error()->message;
  ASSERT_TRUE(sink.completion());

  ASSERT_EQ(choice.reasoning.size(), expected.reasoning.size());
  for (std::size_t i = 0; i < expected.reasoning.size(); ++i) {
    const ReasoningPart& got = choice.reasoning[i];
    const ExpectedReasoning& want = expected.reasoning[i];
    EXPECT_EQ(static_cast<int>(got.kind), static_cast<int>(want.kind)) << "reasoning block " << i;
    EXPECT_EQ(got.text, want.text) << "reasoning block " << i;
    EXPECT_EQ(got.signature, want.signature) << "reasoning block " << i;
    EXPECT_EQ(got.data, want.data) << "reasoning block " << i;
    EXPECT_EQ(got.format, want.format) << "reasoning block " << i;
  }

  ASSERT_EQ(choice.tool_calls.size(), expected.calls.size());
  for (std::size_t i = 0; i < expected.calls.size(); ++i) {
    const ToolCallPart& got = choice.tool_calls[i];
    const ExpectedCall& want = expected.calls[i];
    if (want.id.empty()) {
      EXPECT_TRUE(IsMadeUpId(got.id)) << "call " << i << " id " << got.id;
    } else {
      EXPECT_EQ(got.id, want.id) << "call " << i;
    }
    EXPECT_EQ(got.name, want.name) << "call " << i;
    EXPECT_TRUE(SameArguments(want.arguments, got.arguments))
        << "call " << i << " arguments " << got.arguments << ", expected " << want.arguments;
    EXPECT_EQ(got.thought_signature, want.thought_signature) << "call " << i;
    for (std::size_t j = 0; j < i; ++j) EXPECT_NE(choice.tool_calls[j].id, got.id) << "calls " << j << " and " << i;
  }

  EXPECT_EQ(FinishString(choice.finish), FinishString(expected.finish));
  EXPECT_EQ(choice.native_finish_reason, expected.native_finish);
  if (expected.usage) {
    ASSERT_TRUE(response.usage) << "no usage reported";
    EXPECT_EQ(UsageString(*response.usage), UsageString(*expected.usage));
  } else {
    EXPECT_FALSE(response.usage) << UsageString(*response.usage);
  }
}

// ================================================================ the tests

struct Pair {
  std::size_t case_index = 0;
  Adapter adapter = Adapter::kOpenAi;
};

std::vector<Pair> AllPairs(bool with_fixture_only) {
  std::vector<Pair> pairs;
  for (std::size_t i = 0; i < Cases().size(); ++i) {
    for (const auto& spec : Adapters()) {
      const AdapterCase* col = Column(Cases()[i], spec.id);
      if (with_fixture_only && (col == nullptr || col->unusable)) continue;
      pairs.push_back({i, spec.id});
    }
  }
  return pairs;
}

// gtest prints a parameter with this (ADL) instead of its bytes.
void PrintTo(const Pair& pair, std::ostream* os) {
  *os << Cases()[pair.case_index].name << " / " << Spec(pair.adapter).name;
}

std::string PairName(const ::testing::TestParamInfo<Pair>& info) {
  return Cases()[info.param.case_index].name + "_" + Spec(info.param.adapter).name;
}

// The plain answer every adapter gives to a follow-up request (static: the
// upstream's handler may still be writing it when a test ends).
const Fixture& FollowUp(Adapter a) {
  static const std::map<Adapter, Fixture> fixtures = {
      {Adapter::kOpenAi,
       Stream({kOpenAiRole, OpenAiText("OK."), OpenAiChunk("{}", R"("stop")"), OpenAiTokens(50, 2), kDone})},
      {Adapter::kDeepSeek, Stream({kDeepSeekRole, DeepSeekText("OK."), DeepSeekChunk(R"({"content":""})", R"("stop")"),
                                   DeepSeekTokens(50, 2), kDone})},
      {Adapter::kGeneric,
       Stream({kVllmRole, VllmText("OK."), VllmChunk(R"({"content":""})", R"("stop")"), VllmTokens(50, 2), kDone})},
      {Adapter::kAnthropic, AntStream({AntStart(50), AntTextStart(0), AntText(0, "OK."), AntBlockStop(0),
                                       AntDelta("end_turn", 2), kAntStop})},
      {Adapter::kGemini, Stream({GemChunk(GemParts(GemText("OK."), "STOP"), GemUsage(50, 2))})},
      {Adapter::kResponses, RspStream().Message({"OK."}).Final(RspUsage(50, 2)).Done()},
  };
  return fixtures.at(a);
}

// The assistant turn a caller sends back after `answer`: its reasoning
// blocks, text and tool calls, in the order the events deliver them.
Message AssistantTurn(const ChoiceResult& answer) {
  Message turn{Role::kAssistant, {}, {}};
  for (const auto& r : answer.reasoning) turn.parts.emplace_back(r);
  if (!answer.text.empty()) turn.parts.emplace_back(TextPart{answer.text, {}});
  for (const auto& call : answer.tool_calls) turn.parts.emplace_back(call);
  return turn;
}

// One fake upstream and one provider per adapter, shared by the suite's
// tests and made on first use: RemoteProvider::Create loads the system CA
// store, about 0.1 s each time. Pooling is off, so every call still gets its
// own connection; the upstream answers with the fixture of the running test.
struct SharedAdapter {
  std::mutex mu;
  const Fixture* fixture = nullptr;  // the running test's; guarded by mu
  std::unique_ptr<FakeUpstream> upstream;
  std::unique_ptr<RemoteProvider> provider;
};

class ConformanceTest : public ::testing::TestWithParam<Pair> {
 public:
  static void SetUpTestSuite() {
    ioc_ = std::make_unique<boost::asio::io_context>();
    work_ = std::make_unique<Work>(boost::asio::make_work_guard(*ioc_));
    for (int i = 0; i < 2; ++i) threads_.emplace_back([] { ioc_->run(); });
  }
  static void TearDownTestSuite() {
    for (auto& [id, shared] : shared_) shared->provider.reset();
    work_.reset();
    ioc_->stop();
    for (auto& t : threads_) t.join();
    threads_.clear();
    shared_.clear();  // closes the upstreams, joins their threads
    ioc_.reset();
  }

 protected:
  void TearDown() override {
    if (current_ != nullptr) {
      std::lock_guard lock(current_->mu);
      current_->fixture = nullptr;
    }
  }

  // The adapter's upstream and provider, now answering with `fixture`.
  SharedAdapter& Use(const AdapterSpec& spec, const Fixture& fixture) {
    std::unique_ptr<SharedAdapter>& slot = shared_[spec.id];
    if (slot == nullptr) {
      auto shared = std::make_unique<SharedAdapter>();
      SharedAdapter* raw = shared.get();
      shared->upstream = std::make_unique<FakeUpstream>([raw, &spec](const FakeRequest&, FakeResponder& r) {
        const Fixture* f = nullptr;
        {
          std::lock_guard lock(raw->mu);
          f = raw->fixture;
        }
        if (f != nullptr) {
          Serve(*f, spec, r);
        } else {
          r.SendResponse(500, "text/plain", "no fixture is set");
        }
      });
      RemoteProviderOptions options;
      options.api = spec.api;
      options.preset = spec.preset;
      options.display_name = spec.display_name;
      options.base_url = "http://127.0.0.1:" + std::to_string(shared->upstream->port()) + spec.base_path;
      options.api_key = spec.api_key;
      options.connect_timeout_ms = 2000;
      options.first_byte_timeout_ms = 3000;
      options.max_idle_connections = 0;
      auto made = RemoteProvider::Create(options, *ioc_);
      if (!made) throw std::runtime_error("RemoteProvider::Create: " + made.error().message);
      shared->provider = std::move(*made);
      slot = std::move(shared);
    }
    current_ = slot.get();
    Answer(fixture);
    return *current_;
  }

  // From now on the upstream answers with `fixture` (which must outlive the
  // suite: a handler may still be writing it after the test's call ended).
  void Answer(const Fixture& fixture) {
    std::lock_guard lock(current_->mu);
    current_->fixture = &fixture;
  }

 private:
  using Work = boost::asio::executor_work_guard<boost::asio::io_context::executor_type>;
  static inline std::unique_ptr<boost::asio::io_context> ioc_;
  static inline std::unique_ptr<Work> work_;
  static inline std::vector<std::thread> threads_;
  static inline std::map<Adapter, std::unique_ptr<SharedAdapter>> shared_;
  SharedAdapter* current_ = nullptr;
};

TEST_P(ConformanceTest, SpeaksTheDocumentedWireFormat) {
  const Case& c = Cases()[GetParam().case_index];
  const AdapterSpec& spec = Spec(GetParam().adapter);
  const AdapterCase* col = Column(c, spec.id);
  ASSERT_NE(col, nullptr) << "case " << c.name << " has no entry for " << spec.name;
  const std::string model = col->model.empty() ? spec.model : col->model;
  SharedAdapter& shared = Use(spec, col->reply);
  FakeUpstream& upstream = *shared.upstream;
  RemoteProvider& provider = *shared.provider;
  const std::size_t requests_before = upstream.requests().size();
  EXPECT_EQ(provider.Name(), spec.display_name);

  // What the gateway does before Start (parameters.hpp): an unsupported
  // essential parameter rules the endpoint out; the others are dropped.
  ChatRequest request = col->request ? col->request() : c.request();
  const ParameterSet unsupported = ParametersUsed(request).Minus(provider.SupportedParameters());
  if (col->unusable) {
    EXPECT_TRUE(IsEssential(*col->unusable));
    EXPECT_TRUE(unsupported.Has(*col->unusable))
        << ParamName(*col->unusable) << " is supported now: give the case a fixture for " << spec.name;
    EXPECT_TRUE(col->reply.pieces.empty());
    EXPECT_EQ(upstream.requests().size(), requests_before);
    return;
  }
  ParameterSet expected_dropped;
  for (Param p : col->dropped) expected_dropped.Add(p);
  EXPECT_EQ(unsupported.Names(), expected_dropped.Names()) << "parameters the gateway would drop";
  for (Param p : unsupported.List()) EXPECT_FALSE(IsEssential(p)) << ParamName(p);
  DropParameters(request, unsupported);

  auto sink = std::make_shared<RecordingSink>();
  ProviderRequest pr;
  pr.request = &request;
  pr.upstream_model = model;
  pr.deadline = std::chrono::steady_clock::now() + 10s;
  provider.Start(pr, sink, {});
  ASSERT_TRUE(sink->WaitTerminal(10s)) << "no terminal event";
  EXPECT_EQ(sink->terminal_count(), 1);
  EXPECT_FALSE(sink->misbehaved());

  // What the upstream received.
  const auto requests = upstream.requests();
  ASSERT_EQ(requests.size(), requests_before + 1);
  const FakeRequest& req = requests.back();
  boost::system::error_code ec;
  const json::value body = json::parse(req.body, ec);
  ASSERT_FALSE(ec) << "request body is not JSON: " << req.body;
  CheckStandardRequest(spec, model, req, body);
  for (const auto& [name, value] : col->headers) EXPECT_EQ(HeaderOr(req, name), value) << name;
  if (std::none_of(col->headers.begin(), col->headers.end(),
                   [](const auto& h) { return h.first == "anthropic-beta"; })) {
    EXPECT_EQ(HeaderOr(req, "anthropic-beta"), kAbsent);
  }
  CheckBody(col->body, body);

  // What came out.
  CheckOutcome(col->expect, *sink, spec, upstream.port());

  // The transport adds nothing: the events are exactly those of the pure
  // reader fed the whole body.
  const std::string wire_body = BodyOf(col->reply, spec);
  const ReaderResult reference = ReadSlices(spec, col->reply, {wire_body});
  EXPECT_EQ(Join(Describe(sink->events(), wire_body)), Join(Describe(reference.events, wire_body)));
  EXPECT_EQ(sink->error().has_value(), reference.error.has_value());

  // The next turn: the answer goes back as the conversation's assistant turn.
  if (col->replay.empty()) return;
  ASSERT_TRUE(sink->completion()) << "a replay needs a completed answer";
  const ChoiceResult answer = sink->response().choices.front();
  ChatRequest next = request;
  next.messages.push_back(AssistantTurn(answer));
  if (answer.tool_calls.empty()) next.messages.push_back(User("Thanks!"));
  for (const auto& call : answer.tool_calls) next.messages.push_back(ToolResult(call.id, "", "ok"));
  Answer(FollowUp(spec.id));
  auto follow_sink = std::make_shared<RecordingSink>();
  pr.request = &next;
  pr.deadline = std::chrono::steady_clock::now() + 10s;
  provider.Start(pr, follow_sink, {});
  ASSERT_TRUE(follow_sink->WaitTerminal(10s)) << "no terminal event for the follow-up";
  ASSERT_TRUE(follow_sink->completion()) << follow_sink->error()->message;
  EXPECT_EQ(follow_sink->text(), "OK.");
  const auto all = upstream.requests();
  ASSERT_EQ(all.size(), requests_before + 2);
  const json::value next_body = json::parse(all.back().body, ec);
  ASSERT_FALSE(ec) << all.back().body;
  CheckStandardRequest(spec, model, all.back(), next_body);
  CheckBody(col->replay, next_body);
}

INSTANTIATE_TEST_SUITE_P(Table, ConformanceTest, ::testing::ValuesIn(AllPairs(false)), PairName);

// Every fixture body through detail::ResponseReader: whole, split in two at
// every byte boundary, and one byte at a time. Splits must change nothing:
// not the events (their text fragments included), not the ending.
class ByteSplitTest : public ::testing::TestWithParam<Pair> {};

TEST_P(ByteSplitTest, EverySplitGivesTheSameEvents) {
  const Case& c = Cases()[GetParam().case_index];
  const AdapterSpec& spec = Spec(GetParam().adapter);
  const AdapterCase* col = Column(c, spec.id);
  ASSERT_NE(col, nullptr);
  const Fixture& f = col->reply;
  const std::string body = BodyOf(f, spec);
  ASSERT_GT(body.size(), 1u);

  const ReaderResult whole = ReadSlices(spec, f, {body});
  const std::string want_events = Join(Describe(whole.events, body));
  const std::string want_ending = Ending(whole);
  // The whole-body reading is the one the table's outcome describes.
  EXPECT_EQ(whole.error.has_value(), col->expect.error.has_value()) << want_ending;
  ResponseAccumulator acc;
  for (const auto& e : whole.events) acc.Add(e);
  EXPECT_EQ(acc.Take().choices.front().text, col->expect.text);

  auto same = [&](const ReaderResult& r, const std::string& how) {
    const std::string got_events = Join(Describe(r.events, body));
    if (got_events == want_events && Ending(r) == want_ending) return true;
    ADD_FAILURE() << how << " differs from the whole body.\nwhole:\n"
                  << want_events << "  => " << want_ending << "\nsplit:\n"
                  << got_events << "  => " << Ending(r);
    return false;
  };
  const std::string_view all(body);
  for (std::size_t i = 1; i < body.size(); ++i) {
    if (!same(ReadSlices(spec, f, {all.substr(0, i), all.substr(i)}), "split at byte " + std::to_string(i))) break;
  }
  std::vector<std::string_view> bytes;
  for (std::size_t i = 0; i < body.size(); ++i) bytes.push_back(all.substr(i, 1));
  same(ReadSlices(spec, f, bytes), "one byte at a time");
}

INSTANTIATE_TEST_SUITE_P(Table, ByteSplitTest, ::testing::ValuesIn(AllPairs(true)), PairName);

// The table itself: every case has exactly one entry per adapter, and a
// fixture wherever the endpoint is usable.
TEST(ConformanceTable, EveryCaseCoversEveryAdapterOnce) {
  EXPECT_GE(Cases().size(), 20u);
  for (const Case& c : Cases()) {
    EXPECT_EQ(c.adapters.size(), Adapters().size()) << c.name;
    for (const auto& spec : Adapters()) {
      int n = 0;
      for (const auto& col : c.adapters) n += col.adapter == spec.id ? 1 : 0;
      EXPECT_EQ(n, 1) << c.name << " / " << spec.name;
      const AdapterCase* col = Column(c, spec.id);
      if (col != nullptr && !col->unusable) {
        EXPECT_FALSE(col->reply.pieces.empty()) << c.name << " / " << spec.name;
      }
    }
  }
}

}  // namespace
}  // namespace tollgate::providers
