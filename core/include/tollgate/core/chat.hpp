// The canonical request and the canonical stream of events: the one model that
// every inbound API (OpenAI Chat Completions and legacy Completions, Anthropic
// Messages, OpenAI Responses) decodes into and every provider (remote adapters, the local
// engine) encodes from and reports back in. Nothing above a provider sees a
// provider's wire format; nothing in here knows one (wire/ holds the codecs).
//
// Field meanings follow the OpenAI Chat Completions reference
// (platform.openai.com/docs/api-reference/chat/create) extended the way
// OpenRouter extends it (openrouter.ai/docs/api-reference/overview:
// `reasoning`, `top_k`, `repetition_penalty`, `provider`; and
// openrouter.ai/docs/guides/best-practices/reasoning-tokens: `reasoning`,
// `reasoning_details`). Where the Anthropic Messages API
// (docs.anthropic.com/en/api/messages) or Gemini generateContent
// (ai.google.dev/api/generate-content) carries something OpenAI has no name
// for (thinking signatures, redacted thinking, thought signatures,
// cache_control), it has a field here so that a conversation replays exactly.
//
// Token semantics (WIRE-FORMATS.md 3.1, 3.2, 3.3): OpenAI's. prompt_tokens
// includes cached reads and cache writes; completion_tokens includes
// reasoning tokens.
//
// Plain values: copyable, no threads, no ownership tricks.
#pragma once

#include <boost/json/object.hpp>
#include <boost/json/value.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace tollgate {

// ---------------------------------------------------------------- messages

enum class Role { kSystem, kDeveloper, kUser, kAssistant, kTool };

// "system", "developer", "user", "assistant", "tool".
std::string_view RoleName(Role role);
// The inverse of RoleName; nullopt for anything else.
std::optional<Role> ParseRole(std::string_view name);

// A prompt-cache breakpoint as the caller wrote it (Anthropic's
// `cache_control`, e.g. {"type":"ephemeral","ttl":"1h"}; OpenRouter accepts
// the same object on OpenAI-shaped content parts). Passed through untouched to
// upstreams that understand it, dropped for the others. Empty = none.
using CacheControl = boost::json::object;

struct TextPart {
  std::string text;
  CacheControl cache_control;
};

// An image input. `url` is an http(s) URL or a data URI
// ("data:image/png;base64,...."); codecs convert between that and a
// provider's own shape (Anthropic `source`, Gemini `inlineData`/`fileData`).
struct ImagePart {
  std::string url;
  std::string detail;  // OpenAI's "auto" | "low" | "high", or empty
  CacheControl cache_control;
};

// A tool (function) call the assistant made.
struct ToolCallPart {
  std::string id;         // "call_..." / "toolu_..."; codecs make one up when a provider has none
  std::string name;       // function name
  std::string arguments;  // JSON text of the arguments object; "{}" when there are none
  // Gemini's `thoughtSignature` of the functionCall part that carried this
  // call (ai.google.dev/gemini-api/docs/thought-signatures); replayed on the
  // same part on later turns. Empty when none.
  std::string thought_signature;
  CacheControl cache_control;
};

// What a tool returned, answering ToolCallPart `tool_call_id`.
struct ToolResultPart {
  std::string tool_call_id;
  std::string name;  // function name when the caller gave it (Gemini needs it; codecs look it up otherwise)
  std::vector<std::variant<TextPart, ImagePart>> content;
  bool is_error = false;  // Anthropic `is_error`
  CacheControl cache_control;
};

// One block of the model's reasoning, with what its provider needs to accept
// it again on a later turn. Mirrors one entry of OpenRouter's
// `reasoning_details` (types reasoning.text, reasoning.summary,
// reasoning.encrypted) and one Anthropic `thinking` / `redacted_thinking`
// block.
struct ReasoningPart {
  enum class Kind {
    kText,       // visible reasoning text (Anthropic thinking, DeepSeek reasoning_content)
    kSummary,    // a summary of hidden reasoning (OpenAI reasoning summaries)
    kEncrypted,  // opaque data only (Anthropic redacted_thinking `data`, Gemini
                 // thought signatures not tied to a tool call, OpenAI encrypted_content)
  };
  Kind kind = Kind::kText;
  std::string text;       // kText / kSummary
  std::string signature;  // Anthropic thinking `signature` (kText)
  std::string data;       // kEncrypted payload
  // OpenRouter's `format` of the block: "anthropic-claude-v1",
  // "google-gemini-v1", "openai-responses-v1", "unknown", or empty (not known).
  std::string format;
  std::string id;  // OpenRouter's block `id`, when one was given
};

// ReasoningPart::format values: OpenRouter's reasoning_details formats
// (openrouter.ai/docs/guides/best-practices/reasoning-tokens).
inline constexpr std::string_view kReasoningFormatAnthropic = "anthropic-claude-v1";
inline constexpr std::string_view kReasoningFormatGemini = "google-gemini-v1";
inline constexpr std::string_view kReasoningFormatOpenAiResponses = "openai-responses-v1";

enum class ApiFlavor;

// A block of one API that the canonical model does not carry (Anthropic's
// document, search_result, server_tool_use and *_tool_result blocks, images
// sourced from its Files API), kept verbatim so that an upstream speaking the
// same API gets it back unchanged. Other upstreams never see it: an
// `essential` block (a document the model must read) makes the request need
// Param::kDocumentInput (parameters.hpp), so only endpoints of that API serve
// it; a non-essential one (the record of a server tool's run) is left out.
struct OpaquePart {
  ApiFlavor api;
  boost::json::object block;
  bool essential = false;
};

using ContentPart = std::variant<TextPart, ImagePart, ToolCallPart, ToolResultPart, ReasoningPart, OpaquePart>;

struct Message {
  Role role = Role::kUser;
  // In order. A kTool message holds one ToolResultPart; an assistant turn may
  // hold ReasoningPart(s), TextPart(s) and ToolCallPart(s), in the order the
  // model produced them.
  std::vector<ContentPart> parts;
  std::string name;  // OpenAI's optional participant `name`
};

// The text of all TextParts of `message`, concatenated.
std::string MessageText(const Message& message);

// ---------------------------------------------------------------- options

struct ToolDefinition {
  std::string name;
  std::string description;
  boost::json::value parameters;  // JSON Schema of the arguments object; null when none given
  std::optional<bool> strict;     // OpenAI structured-outputs `strict`
  CacheControl cache_control;
};

struct ToolChoice {
  enum class Mode { kAuto, kNone, kRequired, kFunction };
  Mode mode = Mode::kAuto;
  std::string function_name;  // kFunction only
};

struct ResponseFormat {
  enum class Type { kText, kJsonObject, kJsonSchema };
  Type type = Type::kText;
  // kJsonSchema only (OpenAI `response_format.json_schema`).
  std::string name;
  std::string description;
  boost::json::value schema;
  std::optional<bool> strict;
};

// OpenRouter's unified `reasoning` object, plus OpenAI's `reasoning_effort`
// (which sets `effort`). Effort is one of "xhigh", "high", "medium", "low",
// "minimal", "none".
struct ReasoningSettings {
  std::string effort;                 // empty = not given
  std::optional<int64_t> max_tokens;  // reasoning budget in tokens
  bool exclude = false;               // reason, but do not return the reasoning
  std::optional<bool> enabled;
  // True when reasoning was asked for in any way (enabled, effort other than
  // "none", or a budget).
  bool Requested() const;
};

// Which request field carried the output-token limit, so that an
// OpenAI-compatible upstream can get the same spelling when nothing says
// otherwise (OpenAI's reasoning models accept only max_completion_tokens).
enum class MaxTokensField { kNone, kMaxTokens, kMaxCompletionTokens };

// OpenRouter's `provider` preferences, field for field
// (openrouter.ai/docs/features/provider-routing). Provider names in `order`,
// `only` and `ignore` match an endpoint's provider slug (config key,
// "openai"), its display name ("OpenAI") or its endpoint id, case-insensitive.
// routing/router.hpp applies them; docs/routing.md explains each.
struct ProviderPreferences {
  enum class Sort { kDefault, kPrice, kThroughput, kLatency };
  // With a `models` fallback list: sort each model's endpoints in turn
  // (kModel, OpenRouter's default) or all models' endpoints together (kNone).
  enum class Partition { kModel, kNone };

  std::vector<std::string> order;  // try these first, in this order
  bool allow_fallbacks = true;     // false: only `order` (or, without it, only the first choice)
  bool require_parameters = false;  // skip endpoints that do not support every parameter given
  bool deny_data_collection = false;  // data_collection "deny": no endpoint that trains on or retains prompts
  bool zdr = false;                   // only zero-data-retention endpoints
  std::vector<std::string> only;      // only these
  std::vector<std::string> ignore;    // never these
  std::vector<std::string> quantizations;  // only endpoints of these quantizations ("fp8", "int4", "q4_k_m")
  Sort sort = Sort::kDefault;
  Partition partition = Partition::kModel;
  // max_price, from USD per million tokens (prompt, completion) and USD per
  // request: femto-USD per token (money.hpp TokenPrice units) and nano-USD.
  std::optional<int64_t> max_prompt_price;
  std::optional<int64_t> max_completion_price;
  std::optional<int64_t> max_request_price;
  // Soft preferences: endpoints whose live p50 is known and misses them go
  // after those that meet them (or are unknown). Tokens per second; seconds.
  std::optional<double> preferred_min_throughput;
  std::optional<double> preferred_max_latency_s;
};

enum class RequestKind {
  kChat,        // messages
  kCompletion,  // legacy completions: a raw `prompt`, no chat template
};

// The inbound API a request came in by; decides the shape of its answers and
// errors, and which passthrough fields an upstream of the same API gets.
enum class ApiFlavor { kOpenAiChat, kOpenAiCompletions, kAnthropicMessages, kOpenAiResponses };

struct ChatRequest {
  RequestKind kind = RequestKind::kChat;
  ApiFlavor api = ApiFlavor::kOpenAiChat;
  std::string model;              // model slug as the caller wrote it ("local/stories260k")
  std::vector<Message> messages;  // kChat: system/developer messages included, in order
  std::string prompt;             // kCompletion only

  // Tools.
  std::vector<ToolDefinition> tools;
  std::optional<ToolChoice> tool_choice;
  std::optional<bool> parallel_tool_calls;

  std::optional<ResponseFormat> response_format;

  // Sampling and limits; nullopt = not given (the upstream's default).
  std::optional<int64_t> max_tokens;  // output tokens (max_completion_tokens wins over max_tokens)
  MaxTokensField max_tokens_field = MaxTokensField::kNone;
  std::optional<double> temperature;
  std::optional<double> top_p;
  std::optional<int64_t> top_k;
  std::optional<double> frequency_penalty;
  std::optional<double> presence_penalty;
  std::optional<double> repetition_penalty;
  std::optional<double> min_p;  // keep tokens with p >= min_p * p_max (OpenRouter, vLLM, llama.cpp)
  // OpenAI `logit_bias`: token id -> bias in [-100, 100] added to its logit,
  // in the order given. Token ids are the serving model's own.
  std::vector<std::pair<int64_t, double>> logit_bias;
  std::optional<uint64_t> seed;
  std::vector<std::string> stop;
  std::optional<int64_t> n;  // choices to generate
  bool logprobs = false;
  std::optional<int64_t> top_logprobs;

  std::optional<ReasoningSettings> reasoning;
  // OpenAI Responses `reasoning.summary` ("auto", "concise", "detailed"), or
  // empty: how much of its hidden reasoning an OpenAI reasoning model
  // summarises. Only an OpenAI Responses upstream uses it; it asks for no
  // reasoning by itself.
  std::string reasoning_summary;

  std::string user;              // end-user id
  boost::json::object metadata;  // caller's metadata (OpenAI `metadata`, Anthropic `metadata`)

  bool stream = false;
  bool include_usage = false;  // stream_options.include_usage

  ProviderPreferences provider;
  // OpenRouter's `models`: models to fall back to, in order, after `model`
  // (openrouter.ai/docs/features/model-routing).
  std::vector<std::string> fallback_models;
  // Conversation identity for prompt-cache stickiness: the caller's
  // `session_id` (body) or `x-session-id` header. Empty: routing uses `user`,
  // else a hash of the conversation's first messages.
  std::string session_id;
  // `debug.routing: true`: the answer carries the routing decision (the
  // candidates with their shares, or why each was skipped).
  bool explain_routing = false;

  // Anthropic clients: `anthropic-beta` header values, and top-level request
  // fields Tollgate does not model, passed on to an Anthropic upstream only
  // (`api` == kAnthropicMessages).
  std::vector<std::string> anthropic_beta;
  boost::json::object passthrough;
};

// ---------------------------------------------------------------- events

// Why a choice ended.
enum class FinishReason { kStop, kLength, kToolCalls, kContentFilter, kError };

// "stop", "length", "tool_calls", "content_filter", "error".
std::string_view FinishReasonName(FinishReason reason);

// Token counts (OpenAI semantics, see the file comment): `cached_tokens`
// (cache reads) and `cache_write_tokens` are included in `prompt_tokens`,
// `reasoning_tokens` in `completion_tokens`.
struct Usage {
  int64_t prompt_tokens = 0;
  int64_t completion_tokens = 0;
  int64_t cached_tokens = 0;
  int64_t reasoning_tokens = 0;
  int64_t cache_write_tokens = 0;
  int64_t total_tokens() const { return prompt_tokens + completion_tokens; }
  friend bool operator==(const Usage&, const Usage&) = default;
};

// A fragment of answer text for choice `choice`. Complete UTF-8.
struct TextDelta {
  int choice = 0;
  std::string text;
};

// A fragment of reasoning block `index` (0, 1, ... within the choice, in
// order). Fragments of one block share its index; `text` fragments are
// concatenated; `signature`, `data`, `format` and `id` arrive whole, on any
// fragment of the block (Anthropic sends the signature last).
struct ReasoningDelta {
  int choice = 0;
  int index = 0;
  ReasoningPart::Kind kind = ReasoningPart::Kind::kText;
  std::string text;
  std::string signature;
  std::string data;
  std::string format;
  std::string id;
};

// A fragment of tool call `index` (0, 1, ... within the choice, distinct per
// call even when the upstream repeats or omits indexes). The first fragment of
// a call carries `id` and `name`; `arguments` fragments are concatenated into
// JSON text. A provider sends "{}" for a call without arguments, so the
// concatenation is always a JSON object.
struct ToolCallDelta {
  int choice = 0;
  int index = 0;
  std::string id;
  std::string name;
  std::string arguments;
  std::string thought_signature;  // Gemini, whole
};

// Choice `choice` ended. `native_reason` is the provider's own word
// ("end_turn", "MAX_TOKENS"), for usage rows. `stop_sequence` is the stop
// string that ended it, when the provider says which (Anthropic's
// `stop_sequence`, the local engine), else empty.
struct FinishDelta {
  int choice = 0;
  FinishReason reason = FinishReason::kStop;
  std::string native_reason;
  std::string stop_sequence;
};

// Usage of the whole call so far. Reports are cumulative: a later one
// replaces an earlier one, never adds to it.
struct UsageDelta {
  Usage usage;
};

using StreamEvent = std::variant<TextDelta, ReasoningDelta, ToolCallDelta, FinishDelta, UsageDelta>;

// Bytes an event holds (its strings), for bounding queues of events.
std::size_t EventBytes(const StreamEvent& event);

// ---------------------------------------------------------------- whole responses

struct ChoiceResult {
  std::string text;
  std::vector<ReasoningPart> reasoning;   // blocks in index order
  std::vector<ToolCallPart> tool_calls;   // in index order; arguments "{}" when none came
  std::optional<FinishReason> finish;     // nullopt until a FinishDelta
  std::string native_finish_reason;
  std::string stop_sequence;              // FinishDelta::stop_sequence
};

// A whole answer: what a stream of events adds up to.
struct ChatResponse {
  std::vector<ChoiceResult> choices;  // index = choice; at least one once anything arrived
  std::optional<Usage> usage;         // nullopt: the provider never reported usage
};

// Folds a stream of events into a ChatResponse. Events for choices, blocks
// and calls may arrive interleaved; indexes decide where they go. Indexes come
// from upstreams: an event with a negative index, a choice index of
// kMaxChoices or more, or a block or call index of kMaxParts or more is
// ignored, so no upstream can make it allocate without bound. Not
// thread-safe.
class ResponseAccumulator {
 public:
  static constexpr int kMaxChoices = 128;  // OpenAI's `n` limit
  static constexpr int kMaxParts = 4096;   // reasoning blocks or tool calls per choice

  void Add(const StreamEvent& event);
  // The response so far. Tool calls without arguments read "{}".
  ChatResponse Take() const;
  const std::optional<Usage>& usage() const { return response_.usage; }

 private:
  ChoiceResult* Choice(int index);
  ChatResponse response_;
};

// The events that replay `response` in order: per choice its reasoning
// blocks, text, tool calls and finish; then the usage when known.
std::vector<StreamEvent> ResponseEvents(const ChatResponse& response);

}  // namespace tollgate
