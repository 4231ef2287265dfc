// OpenAI Chat Completions and legacy Completions <-> canonical, both
// directions, streaming included.
//
// Sources: OpenAI API reference (platform.openai.com/docs/api-reference):
// "Chat > Create chat completion", "The chat completion object", "The chat
// completion chunk object", "Completions > Create completion"; OpenRouter's
// extensions (openrouter.ai/docs/api-reference/overview and
// .../best-practices/reasoning-tokens): `reasoning`, `reasoning_details`,
// `top_k`, `repetition_penalty`, `provider`, `usage.cost`, `provider` on
// responses; shared/WIRE-FORMATS.md section 3.1 for what compatible servers
// really send. Provider quirks this codec handles, each behind an option or
// in the decoder: DeepSeek's and Moonshot's `reasoning_content`
// (api-docs.deepseek.com/guides/reasoning_model), DeepSeek's
// `prompt_cache_hit_tokens`, Moonshot's top-level `cached_tokens`, Qwen's
// `enable_thinking` (help.aliyun.com, "Deep thinking" of Model Studio's
// OpenAI-compatible mode), OpenAI reasoning models' `max_completion_tokens`
// and `developer` role.
#pragma once

#include "tollgate/core/chat.hpp"
#include "tollgate/core/error.hpp"
#include "tollgate/core/money.hpp"
#include "tollgate/core/text.hpp"
#include "tollgate/wire/common.hpp"

#include <boost/json/object.hpp>

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

namespace tollgate::wire::openai {

// ---------------------------------------------------------------- inbound requests (gateway)

// Decodes and validates a `POST /v1/chat/completions` body (api kOpenAiChat).
// Accepts the whole Chat Completions surface: messages of every role with
// string or array content (text, image_url parts; other part types such as
// input_audio are a 400 naming the part), assistant `tool_calls`,
// `reasoning` / `reasoning_content` / `reasoning_details` on assistant
// messages (replayed reasoning), tool messages, legacy `function_call` /
// `functions` (mapped to tools); tools, tool_choice, parallel_tool_calls,
// response_format, stop, seed, temperature, top_p, top_k,
// frequency/presence/repetition penalties, max_tokens and
// max_completion_tokens (the latter wins), n, logprobs, top_logprobs,
// reasoning / reasoning_effort / include_reasoning, user, metadata, stream,
// stream_options, per-part cache_control, and OpenRouter's routing fields
// (provider, models, session_id, debug.routing: DecodeRoutingFields in
// common.hpp); `model` may be left out when `models` names it.
// Unknown fields are ignored. JSON depth is limited to 64.
// Errors: kInvalidArgument with `param` naming the offending field
// ("messages[2].content[0].type").
Result<ChatRequest> DecodeChatRequest(std::string_view body);

// Decodes a `POST /v1/completions` body (kind kCompletion, api
// kOpenAiCompletions): `prompt` is a string or an array of exactly one
// string; the sampling fields as above. Errors as above.
Result<ChatRequest> DecodeCompletionRequest(std::string_view body);

// ---------------------------------------------------------------- outbound requests (providers)

// How an OpenAI-compatible upstream wants reasoning asked for and replayed.
enum class ReasoningStyle {
  kNone,         // never send reasoning settings
  kOpenAi,       // `reasoning_effort` (OpenAI o-series, gpt-5; xAI; Groq)
  kOpenRouter,   // OpenRouter's `reasoning` object, `reasoning_details` replay
  kDeepSeek,     // no request field (the model decides); replay as `reasoning_content`
  kQwen,         // `enable_thinking` (+ `thinking_budget` from reasoning.max_tokens)
  kZhipu,        // `thinking: {"type": "enabled"|"disabled"}` (GLM)
};

struct RequestOptions {
  std::string upstream_model;
  // Which field carries the output limit. kNone: as the caller wrote it
  // (request.max_tokens_field; max_tokens when that is kNone too).
  MaxTokensField max_tokens_field = MaxTokensField::kNone;
  bool developer_role = true;  // false: developer messages are sent as system
  ReasoningStyle reasoning = ReasoningStyle::kNone;
  // Assistant turns that made tool calls carry their reasoning text back as
  // `reasoning_content` (DeepSeek and Kimi require it there; plain turns
  // never carry it).
  bool replay_reasoning_content = false;
  bool cache_control = false;  // keep `cache_control` on content parts (OpenRouter upstream)
  // The name of the sampling seed field: "seed", or Mistral's "random_seed"
  // (docs.mistral.ai/api, chat completion request).
  std::string seed_field = "seed";
  bool stream = true;          // `"stream": true, "stream_options": {"include_usage": true}`
  // false: no `stream_options` (Mistral rejects the field, docs.mistral.ai/api,
  // and puts usage on its last chunk anyway).
  bool stream_options = true;
};

// The JSON body for `POST {base}/chat/completions`. Messages keep their
// order; images become image_url parts; tool calls become `tool_calls` with
// string arguments; tool results become `tool` messages (text parts joined;
// images in a tool result go in a following user message, which OpenAI
// accepts); only parameters set in `request` are written.
// Details: a message that is one text part (and no cache_control to keep) is
// sent as a plain string; a tool result's text parts are joined with "\n";
// the images of a run of consecutive tool messages go in one user message
// after the run (each result's images after a line naming its call id), so
// that every tool message still follows its assistant turn directly.
// Reasoning replay on assistant turns: `reasoning_details` (kOpenRouter,
// with each tool call's Gemini thought signature as a `reasoning.encrypted`
// entry whose `id` is the call's id) and/or `reasoning_content` (the text
// blocks, when replay_reasoning_content). `seed` is written as the signed
// 64-bit integer the caller sent. A kCompletion request becomes one user
// message holding its prompt.
std::string EncodeChatRequest(const ChatRequest& request, const RequestOptions& options);

// The JSON body for `POST {base}/completions` (kind kCompletion). The limit is
// always `max_tokens` (the only spelling that endpoint knows), and logprobs
// is the legacy integer (top_logprobs, or 0). No reasoning settings.
std::string EncodeCompletionRequest(const ChatRequest& request, const RequestOptions& options);

// ---------------------------------------------------------------- upstream responses (providers)

// Decodes an upstream's answer into canonical events: a stream of
// `chat.completion.chunk` (or `text_completion`) SSE data payloads, or one
// whole `chat.completion` / `text_completion` body (upstreams that ignore
// `stream: true`).
//
// Per chunk: `choices[i].delta.content` -> TextDelta; `delta.reasoning`,
// `delta.reasoning_content` -> ReasoningDelta (block 0, kind kText) and
// `delta.reasoning_details[]` -> ReasoningDelta per detail `index`;
// `delta.tool_calls[]` -> ToolCallDelta, renumbered so that distinct calls
// get distinct indexes even when the upstream omits or repeats them (a new
// `id` starts a new call); `finish_reason` -> FinishDelta; `usage` (wherever
// it appears, also on a choice chunk) -> UsageDelta (prompt_tokens,
// completion_tokens, prompt_tokens_details.cached_tokens or DeepSeek's
// prompt_cache_hit_tokens or Moonshot's top-level cached_tokens,
// prompt_tokens_details.cache_write_tokens, completion_tokens_details.
// reasoning_tokens; sanitised, common.hpp). `choices: []`, `choices: null`,
// missing `choices` and `index` with n > 1 are all handled. Text is held back
// at an incomplete UTF-8 character until it completes.
//
// Details: reasoning_details entries without an `index` continue the last
// block of their kind in a stream and are one block each in a whole answer;
// `reasoning`/`reasoning_content` are ignored in a delta whose
// reasoning_details carry text (OpenRouter sends both). A `reasoning.encrypted`
// entry with format google-gemini-v1 whose `id` is a tool call's id is that
// call's thought signature (ToolCallDelta.thought_signature). A call whose
// first fragment has no id gets one made up (NewToolCallId). Only the first
// finish_reason of a choice counts; "stop" on a choice that made tool calls
// reads kToolCalls (native_reason keeps "stop"). Held-back bytes of a choice
// are flushed (U+FFFD) before its FinishDelta. Choice indexes outside
// [0, 128) are ignored. `delta.refusal` is text; the deprecated
// `function_call` is a tool call. Error messages are the upstream's text,
// capped at 2000 bytes but not redacted: a provider that may see its own key
// echoed redacts it before the error goes on.
class ResponseDecoder {
 public:
  explicit ResponseDecoder(RequestKind kind) : kind_(kind) {}

  // One SSE `data` payload. `[DONE]` sets done(). An in-stream error object
  // (`{"error": {...}}`, vLLM's `{"object": "error", ...}`) or a chunk that
  // is not a JSON object -> kBadGateway with the upstream's message.
  Result<void> OnData(std::string_view data, std::vector<StreamEvent>& out);

  // A whole non-streamed response body. Errors as OnData.
  Result<void> OnWholeResponse(std::string_view body, std::vector<StreamEvent>& out);

  // End of the upstream body: flushes held-back bytes (U+FFFD).
  void Finish(std::vector<StreamEvent>& out);

  bool done() const { return done_; }
  // True once a finish_reason came for every choice that produced anything
  // (and at least one): a stream that then ends without [DONE] is complete.
  bool finish_seen() const;

 private:
  // One reasoning block of a choice; its canonical index is its position.
  struct ReasoningBlock {
    ReasoningPart::Kind kind = ReasoningPart::Kind::kText;
    Utf8Stitcher text;
  };
  // One tool call of a choice; its canonical index is its position.
  struct ToolCall {
    std::string id;  // the upstream's, or one made up when it sent none
    bool name_sent = false;
    bool has_arguments = false;  // a non-empty argument fragment came
    Utf8Stitcher arguments;
  };
  struct Choice {
    bool produced = false;  // a text, reasoning or tool-call event went out
    bool finished = false;  // a FinishDelta went out
    Utf8Stitcher text;
    std::vector<ReasoningBlock> reasoning;
    std::map<std::string, int> reasoning_by_key;  // upstream block identity -> canonical index
    int last_reasoning = -1;
    std::vector<ToolCall> calls;
    std::map<std::string, int> call_by_id;
    std::map<int64_t, int> call_by_index;  // upstream `index` -> canonical index (latest call)
    int last_call = -1;
  };

  Result<void> Absorb(const boost::json::object& body, bool whole, std::vector<StreamEvent>& out);
  void AbsorbChoice(int index, const boost::json::object& choice, bool whole,
                    std::vector<StreamEvent>& out);
  void AbsorbReasoning(int index, Choice& choice, const boost::json::object& carrier, bool whole,
                       std::vector<StreamEvent>& reasoning_out, std::vector<StreamEvent>& calls_out);
  void AbsorbToolCall(int index, Choice& choice, const boost::json::object& call, bool whole,
                      std::vector<StreamEvent>& out);
  void FlushChoice(int index, Choice& choice, std::vector<StreamEvent>& out);

  RequestKind kind_;
  bool done_ = false;
  std::map<int, Choice> choices_;
};

// ---------------------------------------------------------------- responses to callers (gateway)

struct ResponseOptions {
  RequestKind kind = RequestKind::kChat;
  bool include_usage = false;     // stream_options.include_usage
  bool include_reasoning = true;  // false when the caller set reasoning.exclude
};

// Encodes canonical events as the caller's SSE stream: `chat.completion.chunk`
// (or `text_completion`) objects with the meta's id, created, model and
// OpenRouter's `provider`. The first chunk of each choice carries
// `role: "assistant"`. TextDelta -> `delta.content`; ReasoningDelta ->
// `delta.reasoning` (the text) and `delta.reasoning_details` (OpenRouter's
// typed entries, with signature / data / format / index); ToolCallDelta ->
// `delta.tool_calls` [{index, id, type: "function", function: {name,
// arguments}}] (id, type and name on the first fragment only); FinishDelta ->
// a chunk with `finish_reason`; UsageDelta -> nothing (the billed usage goes
// in Finish). A stream that fails after its first byte ends with the gateway's
// error event instead of Finish (never [DONE]).
// Details: reasoning_details `index`es are numbered per choice in order of
// first appearance; `format` is "unknown" when the block's is not known. A
// ToolCallDelta's thought_signature goes out as a `reasoning.encrypted`
// entry (format google-gemini-v1, `id` = the call's id), also when reasoning
// is excluded: it is no reasoning text, and replays need it. A call whose
// first fragment has no id gets one made up. A choice that finishes without
// any output still gets `role` (and `content: ""`) on its finish chunk.
class StreamEncoder {
 public:
  StreamEncoder(ResponseMeta meta, ResponseOptions options);

  // Zero or more complete SSE events for `event`.
  std::string Encode(const StreamEvent& event);

  // The last events of a successful stream: the usage chunk (`choices: []`,
  // `usage` with prompt/completion/total tokens, details, `cost` in USD) when
  // include_usage was asked, then `data: [DONE]`. `byok`: the call used the
  // caller's own provider key (`usage.is_byok`; `cost` is then the fee).
  std::string Finish(const Usage& usage, Money cost, bool byok = false);

  // True once Encode produced any output.
  bool started() const { return started_; }

 private:
  // A reasoning block as sent: its `index` in reasoning_details, and the
  // format and id it had on any fragment so far.
  struct SentBlock {
    int index = 0;
    std::string format;
    std::string id;
  };
  struct Choice {
    bool role_sent = false;
    std::map<int, std::string> call_ids;  // canonical tool-call index -> id sent
    // `reasoning_details[].index` as sent: canonical reasoning blocks and
    // tool-call thought signatures share one sequence per choice.
    std::map<int, SentBlock> blocks;     // canonical block index -> as sent
    std::map<int, int> signature_index;  // canonical tool-call index -> index sent
    int next_detail_index = 0;
  };

  std::string Chunk(boost::json::object choice) const;

  ResponseMeta meta_;
  ResponseOptions options_;
  bool started_ = false;
  std::map<int, Choice> choices_;
};

// A whole `chat.completion` (or `text_completion`) body: every choice with
// its message (content, `reasoning`, `reasoning_details`, `tool_calls`,
// `refusal: null`) and finish_reason; `usage` (as in Finish) with `cost`;
// `system_fingerprint: null`; `provider`. `content` is null on a message that
// only calls tools; `finish_reason` is null for a choice that never got one;
// reasoning_details as in StreamEncoder (blocks, then thought signatures).
std::string EncodeResponse(const ResponseMeta& meta, const ResponseOptions& options,
                           const ChatResponse& response, const Usage& usage, Money cost, bool byok = false);

// The `usage` object the encoders write, as JSON text. For tests.
std::string UsageJson(const Usage& usage, Money cost, bool byok = false);

}  // namespace tollgate::wire::openai
