// OpenAI Responses API <-> canonical, both directions, streaming included.
//
// Sources: OpenAI API reference (platform.openai.com/docs/api-reference/responses):
// "Create a model response", "The response object", "Streaming events"
// (platform.openai.com/docs/api-reference/responses-streaming); the typed
// shapes of the official `openai` npm package 6.x
// (resources/responses/responses.d.ts: ResponseInputItem, ResponseOutputItem,
// ResponseStreamEvent, ResponseUsage); the reasoning guide
// (platform.openai.com/docs/guides/reasoning, "Encrypted reasoning items").
//
// Inbound (gateway): DecodeRequest, PrependContext, StreamEncoder,
// BuildResponse. Outbound (providers, an OpenAI endpoint called through its
// own Responses API so that encrypted reasoning items round-trip untouched):
// EncodeRequest, ResponseDecoder.
//
// Items <-> messages. A Responses conversation is a flat list of items; the
// canonical model groups them into messages:
//   message (role user|system|developer)  -> Message of that role; input_text ->
//                                            TextPart, input_image -> ImagePart
//                                            (image_url, user messages only;
//                                            file_id, input_file and
//                                            input_audio are a 400)
//   message (role assistant), reasoning, function_call
//                                         -> parts of one assistant Message, in
//                                            order (a run of them is one turn,
//                                            also across a stored context and
//                                            the new input); output_text /
//                                            refusal / input_text -> TextPart
//                                            (empty text left out)
//   function_call_output                  -> a kTool Message with one
//                                            ToolResultPart (string output, or
//                                            input_text / input_image parts)
//   reasoning                             -> ReasoningParts: each summary entry
//                                            kSummary, each content reasoning_text
//                                            kText, encrypted_content kEncrypted;
//                                            all with the item's id and format
//                                            "openai-responses-v1" (an item with
//                                            none of them is left out). A sealed
//                                            item (SealReasoning, below) gives
//                                            back the parts it was made from (its
//                                            summary and content are views of
//                                            them); "tollgate.v1." followed by
//                                            anything unsealable is a 400.
//   built-in tool calls and their results (web_search_call, file_search_call,
//   computer_call, custom_tool_call, mcp_call, local_shell_call, their
//   outputs, compaction, ...)             -> left out (Tollgate ran none)
//   item_reference                        -> 400 (nothing to resolve it from)
// The other way, an assistant Message becomes its items in order: reasoning
// parts in a row with the same `format` and the same `id` (where both have
// one) -> one reasoning item (id: the parts' id, else a new "rs_..."); text ->
// one message item with an output_text part; each tool call -> a
// function_call item (call_id = ToolCallPart::id, or a new "call_..."). A
// reasoning item whose parts are all "openai-responses-v1" carries OpenAI's
// encrypted_content untouched; any other item is sealed whole. A Gemini
// thought signature on a call rides on a reasoning item of its own just
// before the call (one kEncrypted part, format "google-gemini-v1", id = the
// call id), which DecodeItems puts back on the call.
//
// Reasoning of other providers (Anthropic thinking with its signature,
// DeepSeek reasoning text, Gemini thought signatures) has no Responses shape
// that a stateless client can hand back. SealReasoning packs such parts into
// the item's `encrypted_content` as "tollgate.v1." + base64url(JSON); it is
// opaque to clients (they return it untouched, as Codex does), not encrypted,
// and carries nothing the caller did not already receive.
#pragma once

#include "tollgate/core/chat.hpp"
#include "tollgate/core/error.hpp"
#include "tollgate/core/money.hpp"
#include "tollgate/wire/common.hpp"

#include <boost/json/array.hpp>
#include <boost/json/object.hpp>

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace tollgate::wire::responses {

// ---------------------------------------------------------------- inbound requests (gateway)

// A decoded `POST /v1/responses` body.
struct Request {
  // api kOpenAiResponses, kind kChat. messages: a kSystem message from
  // `instructions` (when given and not empty), then `input`. max_tokens from
  // max_output_tokens; response_format from text.format; reasoning.effort;
  // tools: the function tools only; session_id from prompt_cache_key;
  // top_logprobs as given (logprobs stays false, as on a chat completions
  // body with top_logprobs and no logprobs).
  ChatRequest chat;
  // This request's `input` as items (a string input becomes one user message
  // item with an input_text part); with `store`, as OpenAI lists input items: shorthand
  // messages get type "message" and string content one input_text part
  // (output_text for the assistant); messages, function calls and their
  // outputs without an id get one ("msg_", "fc_", "fco_" + 32 base62) and
  // status "completed"; reasoning items stay as sent. What a stored
  // response's context keeps.
  boost::json::array input;
  std::string instructions;
  bool store = true;  // OpenAI's default
  std::string previous_response_id;
  // `include` has "reasoning.encrypted_content": reasoning items carry it.
  bool include_encrypted_reasoning = false;
  // reasoning.summary ("auto", "concise", "detailed"), or empty.
  std::string reasoning_summary;
  // Built-in tool types that were declared and left out ("web_search",
  // "file_search"), in order, each once.
  std::vector<std::string> dropped_tools;
  // The request fields the response object repeats, with OpenAI's defaults
  // for those not given: instructions, max_output_tokens, metadata,
  // parallel_tool_calls, previous_response_id, reasoning {effort, summary},
  // store, temperature, text {format}, tool_choice, tools (as given, built-in
  // ones included), top_p, truncation, user.
  boost::json::object echo;
};

// Decodes and validates a request body. `input` is a string or an array of
// items (above); `tools` entries of type "function" become ToolDefinitions,
// other types are dropped_tools unless `tool_choice` forces one ({"type":
// "web_search_preview"}, or an allowed_tools list naming only built-ins with
// mode "required"), which is a 400 naming it; tool_choice "auto" | "none" |
// "required" | {"type": "function", "name"} | {"type": "allowed_tools",
// "mode", "tools"} (the function tools are narrowed to those listed);
// text.format text | json_object | json_schema {name, schema, strict,
// description}; reasoning {effort, summary}; include (only
// "reasoning.encrypted_content" changes anything); routing fields as on chat
// completions (DecodeRoutingFields). null counts as absent. Unknown fields
// are ignored. JSON depth limit 64. Details: `input` may be left out only
// with previous_response_id; max_output_tokens -> max_tokens with
// kMaxCompletionTokens (it counts reasoning too); top_logprobs (0..20) ->
// ChatRequest::top_logprobs, with logprobs left false; effort "max" -> "xhigh";
// reasoning.generate_summary is read as summary; user, else
// safety_identifier -> user; prompt_cache_key -> session_id unless the body
// has one (and is echoed); background true, conversation and prompt are a
// 400 (not served); a function_call_output whose call_id no earlier
// function_call made, or a function_call that no function_call_output
// answers, is a 400 (OpenAI's rules; checked in PrependContext when
// previous_response_id brings the calls). `include` values other than
// reasoning.encrypted_content are accepted and change nothing (OpenAI
// rejects unknown ones; new client versions may send new ones).
// Errors: kInvalidArgument with `param` naming the field ("input[3].content[0].type").
Result<Request> DecodeRequest(std::string_view body);

// Items (a stored context, or an input array) -> canonical messages appended
// to `out`, grouped as the file comment says. `param` prefixes error paths.
std::optional<Error> DecodeItems(const boost::json::array& items, std::string_view param, std::vector<Message>& out);

// Continues a conversation: `prior` (the previous response's context: its
// input items and then its output items, with encrypted content) goes before
// this request's input, after its instructions. Errors as DecodeItems.
std::optional<Error> PrependContext(Request& request, const boost::json::array& prior);

// Packs reasoning parts without a Responses shape into one opaque
// encrypted_content string, and back. Unseal: nullopt when `content` is not
// a string SealReasoning made (e.g. OpenAI's own encrypted content).
std::string SealReasoning(const std::vector<ReasoningPart>& parts);
std::optional<std::vector<ReasoningPart>> UnsealReasoning(std::string_view content);

// ---------------------------------------------------------------- responses to callers (gateway)

struct ResponseOptions {
  boost::json::object echo;                 // Request::echo
  bool include_encrypted_reasoning = false;  // Request::include_encrypted_reasoning
  bool include_reasoning = true;             // false: reasoning items are left out entirely
  std::vector<std::string> dropped_tools;    // listed in metadata (below)
  // The caller asked for reasoning summaries (Request::reasoning_summary not
  // empty): other providers' visible reasoning (kText parts of a format other
  // than "openai-responses-v1": Anthropic thinking, DeepSeek reasoning) is
  // shown as summary entries (summary_text, response.reasoning_summary_*
  // events) instead of reasoning_text content, which is what clients that
  // display summaries (Codex) show. The sealed encrypted_content keeps the
  // parts as they were, so replays are unchanged.
  bool reasoning_text_as_summary = false;
};

// Response ids: "resp_" + 32 base62 (CSPRNG); item ids "msg_", "fc_", "rs_"
// + 32 base62, minted by the encoders (a reasoning item from an OpenAI
// upstream keeps the upstream's id).
std::string NewResponseId();

// The `usage` object: input_tokens (= prompt_tokens, cached included),
// input_tokens_details.cached_tokens and .cache_write_tokens (the SDK's
// ResponseUsage requires both), output_tokens (reasoning included),
// output_tokens_details.reasoning_tokens, total_tokens, and OpenRouter's
// `cost` (USD number) and `is_byok`.
boost::json::object UsageObject(const Usage& usage, Money cost, bool byok);

// A finished response, two views:
//   client: what the caller gets (encrypted_content only when included);
//   stored: every output item with its encrypted content, for the context
//           of a later previous_response_id.
struct BuiltResponse {
  boost::json::object client;
  boost::json::array stored_output;
};

// The response object of a whole (non-streamed) answer, from choice 0:
// id = meta.id, object "response", created_at, status "completed", or
// "incomplete" with incomplete_details.reason "max_output_tokens" (finish
// kLength) or "content_filter"; error null; model; output items (reasoning,
// message, function calls, in that order; made by a StreamEncoder run over
// ResponseEvents, so a whole answer has the items a streamed one has);
// output_text (all text); usage;
// the echoed request fields; `metadata` = the caller's, plus
// "tollgate_dropped_tools": comma-separated dropped_tools when any; and
// Tollgate's `provider` (display name), as on chat completions.
// `completed_at` (unix seconds; 0 = unknown) is set on a completed response
// only, null otherwise (OpenAI's Response.completed_at); frequency_penalty and
// presence_penalty are 0 (OpenRouter's response object requires them).
BuiltResponse BuildResponse(const ResponseMeta& meta, const ResponseOptions& options, const ChatResponse& response,
                            const Usage& usage, Money cost, bool byok, int64_t completed_at = 0);

// Encodes canonical events (choice 0; others are ignored) as the Responses
// SSE stream, every event `event: TYPE\ndata: {..., "sequence_number": N}`
// with N = 0, 1, 2, ... in order:
//   first Encode: response.created, response.in_progress (status in_progress,
//     output []);
//   ReasoningDelta starting a new item: response.output_item.added
//     (reasoning, summary []); kSummary text: response.reasoning_summary_part.added
//     (per summary_index) then response.reasoning_summary_text.delta; kText:
//     response.content_part.added (part reasoning_text, which the SDK's
//     accumulator needs before a delta) then response.reasoning_text.delta
//     (content_index); kEncrypted/signature: kept for the item's
//     encrypted_content (sealed when not OpenAI's own); a block joins the open
//     reasoning item as the file comment says, else starts a new one;
//   TextDelta: (message item added + response.content_part.added output_text)
//     response.output_text.delta;
//   ToolCallDelta new call: response.output_item.added (function_call,
//     arguments ""), then response.function_call_arguments.delta;
//   an item closes when another item starts or at the end, except that the
//     function calls of one turn stay open together until a text or
//     reasoning item starts or the end (fragments of parallel calls may
//     interleave); a fragment for an item already closed is kept in the
//     final response and stored output but not streamed; items closed by an
//     incomplete Finish get status "incomplete":
//     response.reasoning_summary_text.done / .reasoning_summary_part.done /
//     response.reasoning_text.done, response.output_text.done /
//     response.content_part.done, response.function_call_arguments.done, then
//     response.output_item.done with the whole item;
//   Finish: response.completed, or response.incomplete, with the whole
//     response object (as BuildResponse's client view);
//   Fail: an `error` event {code, message, param} then response.failed (status
//     failed, error {code, message}, the items so far, open ones with status
//     "incomplete" and no done events); code = Error::code_string, else
//     "rate_limit_exceeded" (kResourceExhausted), "invalid_prompt"
//     (kInvalidArgument) or "server_error". Nothing after it: after Finish or
//     Fail every call returns "".
// Not thread-safe. Movable, not copyable (one stream's state; a moved-from
// encoder may only be destroyed or assigned to).
class StreamEncoder {
 public:
  StreamEncoder(ResponseMeta meta, ResponseOptions options);
  ~StreamEncoder();
  StreamEncoder(StreamEncoder&&) noexcept;
  StreamEncoder& operator=(StreamEncoder&&) noexcept;
  StreamEncoder(const StreamEncoder&) = delete;
  StreamEncoder& operator=(const StreamEncoder&) = delete;

  // Zero or more SSE events for `event` (the opening events on the first call).
  std::string Encode(const StreamEvent& event);
  // Closes open items; response.completed / response.incomplete.
  // `completed_at` as BuildResponse's.
  std::string Finish(const Usage& usage, Money cost, bool byok, int64_t completed_at = 0);
  // Ends a broken stream: error + response.failed. Opening events first if
  // nothing was sent yet.
  std::string Fail(const Error& error);

  // After Finish: the response as sent and its stored output (BuiltResponse).
  const BuiltResponse& result() const { return result_; }
  bool started() const { return started_; }

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  BuiltResponse result_;
  bool started_ = false;
};

// ---------------------------------------------------------------- outbound requests (providers)

struct RequestOptions {
  std::string upstream_model;
  bool stream = true;
};

// The JSON body for `POST {base}/responses`: `input` items from the messages
// (system / developer messages as input messages of that role; assistant
// turns as their items, replaying only reasoning of format
// "openai-responses-v1" (its summary and encrypted_content, under its own
// id; other providers' reasoning is left out); tool messages as
// function_call_output), function tools with `strict` (false when not
// given), tool_choice, parallel_tool_calls, text.format, reasoning {effort,
// summary: request.reasoning_summary, else "auto" when reasoning is
// requested}, max_output_tokens, temperature, top_p, top_logprobs, user,
// prompt_cache_key = session_id; always `store: false` and include
// ["reasoning.encrypted_content"] (stateless: the gateway keeps the state).
std::string EncodeRequest(const ChatRequest& request, const RequestOptions& options);

// Decodes an upstream Responses stream (or whole response object) into
// canonical events: output_text deltas -> TextDelta; reasoning summary
// (per output item and summary index) and reasoning_text deltas ->
// ReasoningDelta kSummary / kText with the item's id and format
// "openai-responses-v1"; a reasoning item's encrypted_content (on
// output_item.done) -> ReasoningDelta kEncrypted; function_call items ->
// ToolCallDelta (id = call_id; arguments from the deltas, or from the done
// item when no delta came); response.completed -> FinishDelta (kToolCalls
// when a call was made, else kStop) and UsageDelta; response.incomplete ->
// kLength (max_output_tokens) or kContentFilter; response.failed and
// `error` events -> an error (kBadGateway, or the class of the upstream's
// code: rate_limit_exceeded 429, server_error / overloaded 503).
// Movable, not copyable (one stream's state).
class ResponseDecoder {
 public:
  ResponseDecoder();
  ~ResponseDecoder();
  ResponseDecoder(ResponseDecoder&&) noexcept;
  ResponseDecoder& operator=(ResponseDecoder&&) noexcept;
  ResponseDecoder(const ResponseDecoder&) = delete;
  ResponseDecoder& operator=(const ResponseDecoder&) = delete;

  // One SSE event: its `event` type (may be empty: then the data's `type`
  // decides) and data.
  Result<void> OnEvent(std::string_view type, std::string_view data, std::vector<StreamEvent>& out);
  // A whole response object (an upstream that ignored stream: true).
  Result<void> OnWholeResponse(std::string_view body, std::vector<StreamEvent>& out);
  // End of the body: flushes held-back bytes.
  void Finish(std::vector<StreamEvent>& out);
  // A terminal event (completed / incomplete) came.
  bool done() const { return done_; }

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  bool done_ = false;
};

}  // namespace tollgate::wire::responses
