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
#include "tollgate/core/text.hpp"
#include "tollgate/wire/common.hpp"

#include <cstdint>
#include <map>
#include <optional>
#include <set>
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
// unknown field is never an error. `output_config.format` (and the older
// beta `output_format`) json_schema -> response_format, the rest of
// output_config stays in `passthrough`; `output_config.effort` sets
// reasoning.effort when thinking is on ("max" -> "xhigh"); thinking
// {type: adaptive} -> reasoning enabled, and the thinking object is kept in
// `passthrough` (also when it has fields such as `display`). tool_result
// blocks take a tool call's name from the tool_use with its id. Block types
// the canonical model does not carry (document, search_result,
// container_upload, server_tool_use, *_tool_result, newer ones) and images
// from the Files API are kept verbatim as OpaquePart (core/chat.hpp) and sent
// back as they came to an Anthropic upstream: documents, search results,
// uploads and Files images are essential (only Anthropic endpoints serve the
// call), a server tool's record is left out for other upstreams.
// OpenRouter's additions are read and never passed upstream: provider,
// models, session_id, debug.routing (DecodeRoutingFields in common.hpp),
// `fallbacks` [{model}] (at most 3; not with `models`) into fallback_models,
// and a top-level `user` when metadata.user_id gives none.
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
//     max_tokens. The caller's max_tokens is never raised (it caps what the
//     caller pays): the budget shrinks to fit, and under 1024 there is no
//     thinking; without a caller max_tokens, the default is raised to budget
//     + 1024 when needed. enabled false or effort "none" -> no thinking; with thinking built here,
//     temperature and top_k are left out and top_p only kept in [0.95, 1]
//     (Anthropic rejects the combination);
//   - response_format json_schema -> `output_config.format` {type: json_schema,
//     schema} (Anthropic structured outputs, generally available: no
//     anthropic-beta header needed; the older beta field `output_format`
//     needed `anthropic-beta: structured-outputs-2025-11-13` and is deprecated,
//     so it is accepted from callers but never sent); merged with the
//     caller's own output_config (effort) from `passthrough`; json_object ->
//     left out (not supported);
//   - cache_control on blocks passes through untouched;
//   - user -> metadata.user_id;
//   - empty and whitespace-only text blocks are left out, and a final
//     assistant turn (a prefill) loses its trailing whitespace (Anthropic
//     rejects both);
//   - when request.api is kAnthropicMessages, `passthrough` fields are added
//     at the top level (server tools appended to `tools`; a passthrough
//     `thinking`, e.g. {type: adaptive}, replaces the one built from
//     `reasoning`; `output_config` merged as above).
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
  enum class BlockKind { kText, kThinking, kRedacted, kToolUse, kOther };
  struct Block {
    BlockKind kind = BlockKind::kOther;
    int index = 0;            // canonical reasoning or tool-call index
    bool has_input = false;   // tool_use: a non-empty input_json_delta came
    bool stopped = false;
    std::string start_input;  // tool_use: `input` of content_block_start when not {}
    Utf8Stitcher stitcher;    // text / thinking
  };
  Result<void> OnBlockStart(const boost::json::object& event, std::vector<StreamEvent>& out);
  Result<void> OnBlockDelta(const boost::json::object& event, std::vector<StreamEvent>& out);
  void OnBlockStop(Block& block, std::vector<StreamEvent>& out);
  void ReadUsage(const boost::json::object& usage);
  Usage CurrentUsage() const;

  bool done_ = false;
  std::map<int64_t, Block> blocks_;  // by Anthropic content block index
  int next_reasoning_ = 0;
  int next_tool_ = 0;
  // Latest cumulative counts (message_start, then message_delta).
  int64_t input_tokens_ = 0;
  int64_t cache_read_tokens_ = 0;
  int64_t cache_creation_tokens_ = 0;
  int64_t output_tokens_ = 0;
};

// ---------------------------------------------------------------- responses to callers (gateway)

// Encodes canonical events (choice 0 only; others are ignored) as Anthropic's
// named SSE events: message_start (id, model, empty content, usage with the
// input counts known so far, else `input_tokens_hint`), then per output block
// content_block_start, content_block_delta (text_delta, thinking_delta,
// signature_delta, input_json_delta) and content_block_stop, one block open at
// a time, each tool call its own tool_use block (the fragments of parallel
// calls an upstream interleaves: the first call streams, the others are sent
// whole when its block stops); a ping after message_start.
// Finish: the open block's stop, message_delta {stop_reason, stop_sequence:
// the matched stop string when the FinishDelta named one (stop_reason is then
// "stop_sequence"), else null} with the final usage, message_stop. A stream that fails after its
// first byte ends with ErrorEvent instead of Finish; so does one whose
// provider finished with an error (FinishReason::kError, no stop_reason for it).
// Details clients rely on: nothing is written before the first text,
// reasoning or tool-call fragment (a UsageDelta is only remembered for
// message_start), so started() stays false until then; every thinking block
// ends with a signature_delta (empty for reasoning that is not Anthropic's,
// whose signature Anthropic would reject on replay); redacted_thinking is
// sent only for Anthropic data; a tool_use block that got no arguments gets
// the input_json_delta "{}"; a turn that sent tool_use blocks and would end
// with "end_turn" ends with "tool_use"; a fragment for a tool call whose
// block was already stopped (calls interleaved by the upstream) is dropped.
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
  enum class OpenBlock { kNone, kText, kThinking, kToolUse };
  void Start(std::string& out);
  void CloseBlock(std::string& out);
  void OpenNew(std::string& out, OpenBlock kind, int canonical_index, boost::json::object content_block);

  ResponseMeta meta_;
  int64_t input_tokens_hint_ = 0;
  bool started_ = false;
  OpenBlock open_ = OpenBlock::kNone;
  int open_index_ = -1;          // canonical reasoning / tool-call index of the open block
  int next_block_ = 0;           // next Anthropic content block index
  std::string open_signature_;   // thinking: signature to send before the block stops
  bool open_foreign_ = false;    // thinking: reasoning of another provider's format (no signature)
  bool open_has_input_ = false;  // tool_use: an input_json_delta was sent
  std::set<int> closed_tool_calls_;
  struct PendingCall {
    std::string id;
    std::string name;
    std::string arguments;
  };
  std::map<int, PendingCall> pending_calls_;  // calls held while another tool_use block streams
  bool tool_use_sent_ = false;
  std::optional<FinishReason> finish_;
  std::string native_finish_;
  std::string stop_sequence_;
  std::optional<Usage> usage_;
};

// A whole Message body: id, type "message", role "assistant", model, content
// blocks (thinking, redacted_thinking, text, tool_use with `input` objects) of
// choice 0, stop_reason, stop_sequence (as in the stream's Finish), usage (input_tokens = prompt -
// cached - cache_write, cache_read_input_tokens, cache_creation_input_tokens,
// output_tokens). As in the stream: thinking of another provider's format has
// an empty signature, redacted_thinking is kept for Anthropic data only, and
// a turn with tool_use blocks says "tool_use" rather than "end_turn".
std::string EncodeMessagesResponse(const ResponseMeta& meta, const ChatResponse& response, const Usage& usage);

// Anthropic's stop_reason for a canonical finish ("end_turn", "max_tokens",
// "tool_use", "refusal"; a native Anthropic reason is kept as it was).
std::string_view StopReason(FinishReason reason, std::string_view native_reason);

}  // namespace tollgate::wire::anthropic
