// The gateway's own listings: models, endpoints, generations. (Model calls
// are decoded and encoded by wire/ codecs; see responses.hpp.) No sockets
// here, so all of it tests without a server.
//
// Sources: OpenRouter API reference, GET /api/v1/models (ModelsListResponse),
// GET /api/v1/models/{author}/{slug}/endpoints (ListEndpointsResponse,
// PublicEndpoint, PercentileStats, PricingOverride), GET /api/v1/providers
// (ListProvidersResponse) and GET /api/v1/generation (GenerationResponse) as
// the strict schemas of @openrouter/sdk 1.3 define them.
//
// `pricing` everywhere: decimal strings in USD per token (prompt, completion,
// input_cache_read / input_cache_write when they differ from prompt,
// internal_reasoning when reasoning tokens have their own price), `request`
// in USD per request when there is a fee, and the context-length tiers as
// `overrides` [{min_prompt_tokens, prompt, completion, input_cache_read,
// input_cache_write}] (an override applies above min_prompt_tokens, as a
// tier does; a tier's own reasoning price has no field there).
#pragma once

#include "tollgate/billing/account_store.hpp"
#include "tollgate/billing/key_cache.hpp"
#include "tollgate/billing/usage_event.hpp"
#include "tollgate/core/chat.hpp"
#include "tollgate/core/error.hpp"
#include "tollgate/core/money.hpp"
#include "tollgate/routing/catalog.hpp"
#include "tollgate/routing/health.hpp"
#include "tollgate/routing/router.hpp"

#include <cstdint>
#include <string>
#include <string_view>

namespace tollgate::gateway {

// GET /v1/models in OpenRouter's ModelsListResponse shape (also what OpenAI's
// SDK reads: `data[].id`, `object`, `owned_by`).
std::string RenderModels(const routing::Catalog& catalog);

// GET /api/v1/models/{author}/{slug}/endpoints: `{"data": ...}` in
// OpenRouter's ListEndpointsResponse shape, with each endpoint's live figures
// from router.health(e).Stats(now) (the last samples of real calls):
//   latency_last_30m     time to first token in ms (OpenRouter's meaning),
//   throughput_last_30m  completion tokens per second after the first token,
//                        both as PercentileStats {p50, p75, p90, p99} of the
//                        last EndpointHealth::kSamples successful calls; null
//                        before the first;
//   uptime_last_30m      percent of attempts that succeeded (null without
//                        any); uptime_last_5m and uptime_last_1d are null;
//   status               0 serving (also at its concurrency cap), -1 cooling
//                        down after a 429, -2 circuit half-open, -3 circuit
//                        open (OpenRouter documents the values 0, -1, -2, -3,
//                        -5, -10 but not their meaning; lower is worse);
//   tag                  the endpoint id (what provider.order, only and
//                        ignore accept besides the provider's slug and name);
//   quantization, max_completion_tokens  from the catalog, null when unknown.
// Tollgate's own figures go under `tollgate`, per endpoint: endpoint_id,
// provider (the config key), in_flight, max_concurrency (null = unlimited),
// circuit ("closed" | "open" | "half_open"), availability ("available" |
// "circuit_open" | "cooling_down" | "at_capacity"), p50_latency_ms (whole
// call), p50_ttft_ms, p50_throughput_tps (null before a sample), weight,
// data_policy {trains_on_prompts, retains_prompts, zero_data_retention};
// and on `data.tollgate` for the model: queued (calls waiting for a slot on
// any of its endpoints). `description` is required and Tollgate has none: "".
// `model` must be in router.catalog(). Thread-safe (reads health under its
// locks); allocates.
std::string RenderModelEndpoints(const routing::Model& model, const routing::Router& router, routing::SteadyTime now);

// GET /api/v1/providers: `{"data": [{slug, name, privacy_policy_url: null,
// terms_of_service_url: null, status_page_url: null}]}` (ListProvidersData),
// one entry per provider that serves an endpoint of the catalog, in catalog
// order: slug = the provider's config key, name = its display name. The
// schema has no data-policy fields (Tollgate keeps those per endpoint, in the
// endpoints listing above).
std::string RenderProviders(const routing::Catalog& catalog);

// GET /api/v1/generation: `{"data": GenerationResponseData}`. Values Tollgate
// does not record are null. Three required by @openrouter/sdk's strict schema
// get fixed values: origin "" (no HTTP referer is recorded), data_region
// "global" and api_type "completions".
std::string RenderGeneration(const billing::UsageEvent& event);

// GET /api/v1/key: `{"data": ...}` in OpenRouter's GetCurrentKeyData shape
// (@openrouter/sdk 1.3, operations/getcurrentkey.js): label, limit (USD per
// limit period, null = none), limit_remaining (of the current period, null
// without a limit), limit_reset ("daily" | "weekly" | "monthly", null when
// never), usage / usage_daily / usage_weekly / usage_monthly (USD charged),
// byok_usage* (what BYOK calls cost at the account's own providers),
// expires_at, rate_limit {interval "1m", requests (per minute, -1 = none),
// note}; fields Tollgate has no notion of get fixed values (is_free_tier
// false, include_byok_in_limit false, allowed_data_regions ["global"], ids
// null). `key` is the caller's record (limits as the gateway enforces them).
std::string RenderKey(const billing::KeyUsage& usage, const billing::KeyRecord& key);

// GET /api/v1/credits: `{"data": {"total_credits", "total_usage"}}` in USD
// for the key's account (GetCreditsData): credits granted less removed, and
// usage charged; their difference is the balance.
std::string RenderCredits(const billing::KeyUsage& usage);

// Bounds on a decoded call (config server.max_messages, max_tools,
// max_content_parts).
struct CallLimits {
  int max_messages = 0;       // conversation turns: system and developer messages not counted
  int max_tools = 0;
  int max_content_parts = 0;  // over all messages, tool results' parts included
};

// A limit `request` passes: `limit` names it for metrics ("messages",
// "tools", "content_parts"), `error` is the 400 naming the field, its count
// and the limit.
struct CallLimitPassed {
  std::string_view limit;
  Error error;
};

// The first limit `request` passes, or nullopt when it is within `limits`.
// `api` picks the caller's field names (messages, input, tools, content).
std::optional<CallLimitPassed> CheckCallLimits(const ChatRequest& request, ApiFlavor api, const CallLimits& limits);

}  // namespace tollgate::gateway
