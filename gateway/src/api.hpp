// Wire formats of the gateway's own HTTP API: request parsing and validation,
// response and SSE chunk rendering. No sockets here, so all of it tests
// without a server.
//
// Sources:
// - OpenAI API reference, "Chat Completions" (create, chunk object) and
//   "Completions" (legacy): request fields, `chat.completion`,
//   `chat.completion.chunk`, `text_completion`, `stream_options.include_usage`
//   (usage chunk with empty `choices` before `data: [DONE]`).
// - OpenRouter API reference: `usage.cost` in USD, `provider` on responses,
//   GET /api/v1/models (ModelsListResponse) and GET /api/v1/generation
//   (GenerationResponse) as the strict schemas of @openrouter/sdk 1.3 define them.
#pragma once

#include "tollgate/billing/usage_event.hpp"
#include "tollgate/core/chat.hpp"
#include "tollgate/core/error.hpp"
#include "tollgate/core/money.hpp"
#include "tollgate/routing/catalog.hpp"

#include <cstdint>
#include <string>
#include <string_view>

namespace tollgate::gateway {

// Parses and validates a request body for `kind`. JSON depth is limited to 64.
// Unknown fields are ignored (SDKs send many); fields Tollgate cannot honour
// (n > 1, tools) are rejected rather than silently dropped.
// Errors: kInvalidArgument with `param` naming the offending field.
Result<ChatRequest> ParseChatRequest(std::string_view body, RequestKind kind);

// What every response of one call shares.
struct ResponseMeta {
  std::string id;        // "gen-..."
  int64_t created = 0;   // unix seconds
  std::string model;     // the slug the caller asked for
  std::string provider;  // display name of the endpoint's provider
  RequestKind kind = RequestKind::kChat;
};

// Non-streamed response body (`chat.completion` or `text_completion`).
std::string RenderCompletion(const ResponseMeta& meta, std::string_view text,
                             const Completion& completion, Money cost);

// One SSE event `data: {...}\n\n` carrying a content delta. `first` adds
// `role: "assistant"` (chat only).
std::string RenderDeltaEvent(const ResponseMeta& meta, std::string_view text, bool first);

// The final choice event: empty delta and the finish reason.
std::string RenderFinishEvent(const ResponseMeta& meta, FinishReason reason);

// The usage event (`choices: []`) sent before [DONE] when include_usage was asked.
std::string RenderUsageEvent(const ResponseMeta& meta, const Usage& usage, Money cost);

// An error inside a stream that already answered 200: `data: {"error": {...}}`
// (OpenRouter's mid-stream error, openrouter.ai/docs/api-reference/streaming).
std::string RenderErrorEvent(const Error& error, ErrorFlavor flavor);

inline constexpr std::string_view kDoneEvent = "data: [DONE]\n\n";

// The `usage` object: prompt/completion/total tokens, details, `cost` (USD).
// Exposed for tests.
std::string RenderUsageJson(const Usage& usage, Money cost);

// GET /v1/models in OpenRouter's ModelsListResponse shape (also what OpenAI's
// SDK reads: `data[].id`, `object`, `owned_by`).
std::string RenderModels(const routing::Catalog& catalog);

// GET /api/v1/models/{author}/{slug}/endpoints: the model's endpoints in
// OpenRouter's ListEndpointsResponse shape. `description` is required there
// and Tollgate has none: it is "". Live stats (latency, uptime) are null.
std::string RenderModelEndpoints(const routing::Model& model);

// GET /api/v1/generation: `{"data": GenerationResponseData}`. Values Tollgate
// does not record are null. Three required by @openrouter/sdk's strict schema
// get fixed values: origin "" (no HTTP referer is recorded), data_region
// "global" and api_type "completions".
std::string RenderGeneration(const billing::UsageEvent& event);

// A fresh request id: "gen-" + unix seconds + "-" + 20 random base62 chars.
std::string NewRequestId();

}  // namespace tollgate::gateway
