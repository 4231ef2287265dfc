// Anthropic Messages API <-> canonical, both directions, streaming included.
//
// Sources: Anthropic API reference (docs.anthropic.com/en/api/messages,
// .../messages-streaming, .../messages-count-tokens, .../errors, and the
// guides "Extended thinking", "Tool use", "Prompt caching"), API version
// 2023-06-01; shared/WIRE-FORMATS.md section 3.2.
//
// Mapping to the canonical model:
//   system (string or text blocks)      -> leading kSystem messages (one per block, cache_control kept)
//   role "system" entries in messages   -> kSystem messages in place
//   text / image blocks                 -> TextPart / ImagePart (base64 -> data URI, url -> url)
//   tool_use {id, name, input}          -> ToolCallPart (arguments = serialized input)
//   tool_result {tool_use_id, content, is_error} in a user turn
//                                       -> a kTool message with one ToolResultPart each,
//                                          before the turn's other content
//   thinking {thinking, signature}      -> ReasoningPart kText, format "anthropic-claude-v1"
//   redacted_thinking {data}            -> ReasoningPart kEncrypted, format "anthropic-claude-v1"
//   max_tokens, stop_sequences, temperature, top_p, top_k, tools (custom),
//   tool_choice {auto|any|tool|none, disable_parallel_tool_use},
//   thinking {enabled+budget_tokens | disabled | adaptive}, metadata.user_id
//   stop_reason: end_turn, stop_sequence, pause_turn -> kStop; max_tokens,
//   model_context_window_exceeded -> kLength; tool_use -> kToolCalls;
//   refusal -> kContentFilter.
//   usage: prompt = input_tokens + cache_read_input_tokens +
//   cache_creation_input_tokens; cached = cache_read; cache_write =
//   cache_creation; completion = output_tokens.
#pragma once

#include "tollgate/core/chat.hpp"
#include "tollgate/core/error.hpp"
#include "tollgate/wire/common.hpp"

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace tollgate::wire::anthropic {

// ---------------------------------------------------------------- inbound requests (gateway)

// Decodes a `POST /v1/messages` body (api kAnthropicMessages). `max_tokens`
// is required (as Anthropic requires it). Accepts what current clients send
// (Claude Code, the official SDKs): system as string or blocks, role
// "system" entries inside `messages`, every content block type above, every
// documented `thinking` type; server tools (a `type` other than "custom")
// and top-level fields Tollgate does not model (service_tier, container,
// mcp_servers, context_management, output_config, ...) are kept in
// `passthrough` for an Anthropic upstream and ignored by the others; an
// unknown field is never an error. Document blocks and other block types
// Tollgate cannot carry are a 400 naming the block.
// Errors: kInvalidArgument with `param` naming the field ("messages.2.content.0").
Result<ChatRequest> DecodeMessagesRequest(std::string_view body);

// Decodes a `POST /v1/messages/count_tokens` body: the same fields, without
// max_tokens.
Result<ChatRequest> DecodeCountTokensRequest(std::string_view body);

// `{"input_tokens": N}`.
std::string EncodeCountTokensResponse(int64_t input_tokens);

// ---------------------------------------------------------------- outbound requests (providers)

struct RequestOptions {
  std::string upstream_model;
  // `max_tokens` when the request has none (Anthropic requires it).
  int64_t default_max_tokens = 4096;
  bool stream = true;
};

// The JSON body for `POST {base}/messages`:
//   - every system and developer message, in order, becomes a text block of
//     the top-level `system` (cache_control kept);
//   - consecutive turns of the same role are merged into one;
//   - tool results (kTool messages) become tool_result blocks of a user turn,
//     the results of consecutive tool messages in one turn, before any text
//     of that turn;
//   - assistant reasoning parts with an Anthropic signature are replayed as
//     thinking blocks, redacted ones as redacted_thinking; reasoning Anthropic
//     cannot verify (no signature, another format) is left out;
//   - tool calls become tool_use blocks with `input` parsed from arguments
//     (`{}` when empty or not a JSON object);
//   - `max_tokens` is always sent: request.max_tokens, else
//     options.default_max_tokens;
//   - stop strings that are empty or only whitespace are dropped (Anthropic
//     rejects them);
//   - tools become custom tools (input_schema defaults to an empty object
//     schema); tool_choice auto/required/function/none -> auto/any/tool/none;
//     parallel_tool_calls false -> disable_parallel_tool_use;
//   - reasoning -> `thinking` {type: enabled, budget_tokens}: the budget is
//     reasoning.max_tokens, else by effort (OpenRouter's rule: high 80 %,
//     medium 50 %, low/minimal 20 % of max_tokens), at least 1024 and below
//     max_tokens (max_tokens is raised to budget + 1024 when it is not above);
//     enabled false or effort "none" -> no thinking;
//   - response_format json_schema -> `output_format` {type: json_schema, schema}
//     (Anthropic structured outputs); json_object -> left out (not supported);
//   - cache_control on blocks passes through untouched;
//   - user -> metadata.user_id;
//   - when request.api is kAnthropicMessages, `passthrough` fields are added
//     at the top level (server tools appended to `tools`).
std::string EncodeMessagesRequest(const ChatRequest& request, const RequestOptions& options);

// ---------------------------------------------------------------- upstream responses (providers)

// Decodes an upstream's answer into canonical events: the named SSE events of
// a streamed response, or one whole Message body.
//   message_start  -> UsageDelta (its usage)
//   content_block_start / _delta / _stop -> TextDelta, ReasoningDelta (block
//     index counts thinking/redacted blocks), ToolCallDelta (index counts
//     tool_use blocks; a call whose input never arrives gets arguments "{}")
//   message_delta  -> FinishDelta (stop_reason, mapped) and UsageDelta
//     (output_tokens, cumulative; input counts from message_start unless the
//     delta carries newer ones) - never summed twice
//   message_stop   -> done()
//   ping           -> nothing
//   error          -> kBadGateway, or kUnavailable for overloaded_error,
//                     kResourceExhausted for rate_limit_error, with the message
class ResponseDecoder {
 public:
  // One SSE event (`event` type and `data`).
  Result<void> OnEvent(std::string_view type, std::string_view data, std::vector<StreamEvent>& out);
  // A whole non-streamed Message body.
  Result<void> OnWholeResponse(std::string_view body, std::vector<StreamEvent>& out);
  // End of body: flushes held-back UTF-8.
  void Finish(std::vector<StreamEvent>& out);
  bool done() const { return done_; }

 private:
  bool done_ = false;
  // (per-block state: kinds by Anthropic index, canonical indexes, UTF-8 stitchers, usage so far)
};

// ---------------------------------------------------------------- responses to callers (gateway)

// Encodes canonical events (choice 0 only; others are ignored) as Anthropic's
// named SSE events: message_start (id, model, empty content, usage with the
// input counts known so far, else `input_tokens_hint`), then per output block
// content_block_start, content_block_delta (text_delta, thinking_delta,
// signature_delta, input_json_delta) and content_block_stop, one block open at
// a time, each tool call its own tool_use block; a ping after message_start.
// Finish: the open block's stop, message_delta {stop_reason, stop_sequence:
// null} with the final usage, message_stop. A stream that fails after its
// first byte ends with ErrorEvent instead of Finish.
class StreamEncoder {
 public:
  StreamEncoder(ResponseMeta meta, int64_t input_tokens_hint);
  std::string Encode(const StreamEvent& event);
  // `stop_reason` from the last FinishDelta of choice 0 (end_turn when none).
  std::string Finish(const Usage& usage);
  // `event: error` with {"type": "error", "error": {type, message}}.
  static std::string ErrorEvent(const Error& error);
  bool started() const { return started_; }

 private:
  ResponseMeta meta_;
  int64_t input_tokens_hint_ = 0;
  bool started_ = false;
  // (open block state, last finish reason, usage seen)
};

// A whole Message body: id, type "message", role "assistant", model, content
// blocks (thinking, redacted_thinking, text, tool_use with `input` objects) of
// choice 0, stop_reason, stop_sequence null, usage (input_tokens = prompt -
// cached - cache_write, cache_read_input_tokens, cache_creation_input_tokens,
// output_tokens).
std::string EncodeMessagesResponse(const ResponseMeta& meta, const ChatResponse& response, const Usage& usage);

// Anthropic's stop_reason for a canonical finish ("end_turn", "max_tokens",
// "tool_use", "refusal"; a native Anthropic reason is kept as it was).
std::string_view StopReason(FinishReason reason, std::string_view native_reason);

}  // namespace tollgate::wire::anthropic
