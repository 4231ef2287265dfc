#include "api.hpp"

#include "tollgate/core/text.hpp"

#include <boost/json.hpp>

#include <algorithm>
#include <chrono>
#include <optional>
#include <set>
#include <string_view>
#include <vector>

namespace tollgate::gateway {
namespace json = boost::json;
namespace {

// OpenRouter `pricing` (api.hpp): decimal strings in USD per token; the fee
// per request in USD.
json::object PriceKeys(const Pricing& p, bool overrides) {
  json::object pricing{{"prompt", FormatUsdPerToken(p.prompt)}, {"completion", FormatUsdPerToken(p.completion)}};
  // An override states every price it sets (a tier defaults within itself,
  // not to the base, so nothing may be left to inherit).
  if (overrides || p.cached_prompt != p.prompt) pricing["input_cache_read"] = FormatUsdPerToken(p.cached_prompt);
  if (overrides || p.cache_write != p.prompt) pricing["input_cache_write"] = FormatUsdPerToken(p.cache_write);
  return pricing;
}

json::object PricingObject(const Pricing& p, const std::vector<routing::PriceTier>& tiers) {
  json::object pricing = PriceKeys(p, false);
  if (p.reasoning) pricing["internal_reasoning"] = FormatUsdPerToken(*p.reasoning);
  if (p.per_request.nano_usd > 0) pricing["request"] = FormatUsd(p.per_request);
  if (!tiers.empty()) {
    json::array overrides;
    for (const auto& tier : tiers) {
      json::object o = PriceKeys(tier.pricing, true);
      o["min_prompt_tokens"] = tier.above_prompt_tokens;
      overrides.push_back(std::move(o));
    }
    pricing["overrides"] = std::move(overrides);
  }
  return pricing;
}

json::value OrNull(const std::optional<double>& v) { return v ? json::value(*v) : json::value(nullptr); }

// OpenRouter's PercentileStats {p50, p75, p90, p99}, or null before a sample.
json::value PercentileObject(const std::optional<routing::Percentiles>& p) {
  if (!p) return nullptr;
  return json::object{{"p50", p->p50}, {"p75", p->p75}, {"p90", p->p90}, {"p99", p->p99}};
}

std::string_view CircuitName(routing::CircuitState state) {
  switch (state) {
    case routing::CircuitState::kClosed: return "closed";
    case routing::CircuitState::kOpen: return "open";
    case routing::CircuitState::kHalfOpen: return "half_open";
  }
  return "closed";
}

std::string_view AvailabilityName(routing::Availability availability) {
  switch (availability) {
    case routing::Availability::kAvailable: return "available";
    case routing::Availability::kCircuitOpen: return "circuit_open";
    case routing::Availability::kCoolingDown: return "cooling_down";
    case routing::Availability::kAtCapacity: return "at_capacity";
  }
  return "available";
}

// OpenRouter's EndpointStatus (api.hpp): 0 serving, lower is worse.
int EndpointStatus(const routing::LiveStats& stats) {
  if (stats.circuit == routing::CircuitState::kOpen) return -3;
  if (stats.circuit == routing::CircuitState::kHalfOpen) return -2;
  if (stats.availability == routing::Availability::kCoolingDown) return -1;
  return 0;
}

// `tokenizer` is optional in a /models entry but required (nullable) in an
// endpoints listing (@openrouter/sdk ModelArchitecture vs Architecture).

json::array SupportedParameters(const ParameterSet& params) {
  json::array out;
  for (Param p : params.List()) {
    if (p != Param::kImageInput && p != Param::kDocumentInput) out.emplace_back(ParamName(p));
  }
  return out;
}

// What a model takes: the parameters any of its endpoints supports.
ParameterSet ModelParameters(const routing::Model& m) {
  ParameterSet all;
  for (const auto& e : m.endpoints) {
    for (Param p : e.supported.List()) all.Add(p);
  }
  return all;
}

json::object ArchitectureObject(bool with_tokenizer, const ParameterSet& params) {
  json::array inputs{"text"};
  if (params.Has(Param::kImageInput)) inputs.emplace_back("image");
  json::object a{{"modality", params.Has(Param::kImageInput) ? "text+image->text" : "text->text"},
                 {"input_modalities", std::move(inputs)},
                 {"output_modalities", json::array{"text"}},
                 {"instruct_type", nullptr}};
  if (with_tokenizer) a["tokenizer"] = nullptr;
  return a;
}

}  // namespace

std::string RenderModels(const routing::Catalog& catalog) {
  json::array data;
  for (const auto& m : catalog.models()) {
    if (m.endpoints.empty()) continue;
    const routing::Endpoint& top = m.endpoints.front();
    json::value context = m.context_length > 0 ? json::value(m.context_length) : json::value(nullptr);
    size_t slash = m.id.find('/');
    std::string owner = slash == std::string::npos ? top.provider_id : m.id.substr(0, slash);
    data.push_back(json::object{
        {"id", m.id},
        {"canonical_slug", m.id},
        {"hugging_face_id", nullptr},
        {"name", m.name},
        {"created", m.created},
        {"context_length", context},
        {"architecture", ArchitectureObject(false, ModelParameters(m))},
        {"pricing", PricingObject(top.pricing, top.tiers)},
        {"top_provider", json::object{{"context_length", top.context_length > 0 ? json::value(top.context_length)
                                                                                  : context},
                                      {"max_completion_tokens", top.max_output_tokens > 0
                                                                    ? json::value(top.max_output_tokens)
                                                                    : json::value(nullptr)},
                                      {"is_moderated", false}}},
        {"per_request_limits", nullptr},
        {"supported_parameters", SupportedParameters(ModelParameters(m))},
        {"default_parameters", nullptr},
        {"supported_voices", nullptr},
        {"links", json::object{{"details", "/api/v1/models/" + m.id + "/endpoints"}}},
        {"object", "model"},
        {"owned_by", owner},
    });
  }
  json::object out;
  out["total_count"] = data.size();
  out["object"] = "list";
  out["data"] = std::move(data);
  out["links"] = json::object{{"next", nullptr}};
  return json::serialize(out);
}

std::string RenderModelEndpoints(const routing::Model& m, const routing::Router& router, routing::SteadyTime now) {
  json::array endpoints;
  for (const auto& e : m.endpoints) {
    std::string provider(e.provider->Name());
    const bool tools = e.supported.Has(Param::kToolChoice);
    const routing::LiveStats stats = router.health(e).Stats(now);
    json::object tollgate{
        {"endpoint_id", e.id},
        {"provider", e.provider_id},
        {"in_flight", stats.in_flight},
        {"max_concurrency", e.max_concurrency > 0 ? json::value(e.max_concurrency) : json::value(nullptr)},
        {"circuit", CircuitName(stats.circuit)},
        {"availability", AvailabilityName(stats.availability)},
        {"p50_latency_ms", OrNull(stats.p50_latency_ms)},
        {"p50_ttft_ms", OrNull(stats.p50_ttft_ms)},
        {"p50_throughput_tps", OrNull(stats.p50_throughput_tps)},
        // The endpoint's own context (null when unknown): `context_length`
        // above must be an integer (@openrouter/sdk PublicEndpoint), so it
        // falls back to the model's.
        {"context_length", e.context_length > 0 ? json::value(e.context_length) : json::value(nullptr)},
        {"weight", e.weight},
        {"data_policy", json::object{{"trains_on_prompts", e.data_policy.trains_on_prompts},
                                     {"retains_prompts", e.data_policy.retains_prompts},
                                     {"zero_data_retention", e.data_policy.zero_data_retention}}},
    };
    endpoints.push_back(json::object{
        {"name", provider + " | " + m.id},
        {"model_id", m.id},
        {"model_name", m.name},
        // An integer in OpenRouter's schema (PublicEndpoint: z.int(), not
        // nullable): an unknown endpoint context is the model's (the largest
        // of its endpoints'), and 0 only when no context is known at all.
        {"context_length", e.context_length > 0 ? e.context_length : m.context_length},
        {"pricing", PricingObject(e.pricing, e.tiers)},
        {"provider_name", provider},
        {"tag", e.id},
        {"quantization", e.quantization.empty() ? json::value(nullptr) : json::value(e.quantization)},
        {"max_completion_tokens", e.max_output_tokens > 0 ? json::value(e.max_output_tokens) : json::value(nullptr)},
        {"max_prompt_tokens", nullptr},
        {"supported_parameters", SupportedParameters(e.supported)},
        {"supports_implicit_caching", false},
        {"supports_tool_choice", json::object{{"auto", tools}, {"function", tools}, {"none", tools},
                                              {"required", tools}}},
        {"status", EndpointStatus(stats)},
        {"latency_last_30m", PercentileObject(stats.ttft_ms)},
        {"throughput_last_30m", PercentileObject(stats.throughput_tps)},
        {"uptime_last_5m", nullptr},
        {"uptime_last_30m", OrNull(stats.uptime_30m)},
        {"uptime_last_1d", nullptr},
        {"tollgate", std::move(tollgate)},
    });
  }
  json::object data{{"id", m.id},
                    {"name", m.name},
                    {"created", m.created},
                    {"description", ""},
                    {"architecture", ArchitectureObject(true, ModelParameters(m))},
                    {"endpoints", std::move(endpoints)},
                    {"tollgate", json::object{{"queued", router.queued(m)}}}};
  return json::serialize(json::object{{"data", std::move(data)}});
}

std::string RenderProviders(const routing::Catalog& catalog) {
  json::array data;
  std::set<std::string_view> seen;
  for (const auto& m : catalog.models()) {
    for (const auto& e : m.endpoints) {
      if (!seen.insert(e.provider_id).second) continue;
      data.push_back(json::object{
          {"slug", e.provider_id},
          {"name", e.provider->Name()},
          {"privacy_policy_url", nullptr},
          {"terms_of_service_url", nullptr},
          {"status_page_url", nullptr},
      });
    }
  }
  return json::serialize(json::object{{"data", std::move(data)}});
}

std::string RenderGeneration(const billing::UsageEvent& e) {
  auto opt_int = [](const std::optional<int64_t>& v) { return v ? json::value(*v) : json::value(nullptr); };
  auto opt_str = [](const std::optional<std::string>& v) { return v ? json::value(*v) : json::value(nullptr); };
  double cost = ToUsd(e.cost);
  json::object d{
      {"id", e.request_id},
      {"request_id", e.request_id},
      {"upstream_id", nullptr},
      {"total_cost", cost},
      {"usage", cost},
      {"cache_discount", nullptr},
      {"upstream_inference_cost", e.provider_cost ? json::value(ToUsd(*e.provider_cost)) : json::value(nullptr)},
      {"created_at", FormatUtc(e.created_at, "T", 3, "Z")},
      {"model", e.model},
      {"app_id", nullptr},
      {"streamed", e.streamed},
      {"cancelled", e.cancelled},
      {"provider_name", e.provider},
      {"latency", e.latency_ms},
      {"moderation_latency", nullptr},
      {"generation_time", e.ttft_ms ? json::value(e.latency_ms - *e.ttft_ms) : json::value(nullptr)},
      {"time_to_first_token", opt_int(e.ttft_ms)},
      {"finish_reason", opt_str(e.finish_reason)},
      {"native_finish_reason", opt_str(e.finish_reason)},
      {"tokens_prompt", e.usage.prompt_tokens},
      {"tokens_completion", e.usage.completion_tokens},
      {"native_tokens_prompt", e.usage.prompt_tokens},
      {"native_tokens_completion", e.usage.completion_tokens},
      {"native_tokens_completion_images", nullptr},
      {"native_tokens_reasoning", e.usage.reasoning_tokens},
      {"native_tokens_cached", e.usage.cached_tokens},
      {"num_media_prompt", nullptr},
      {"num_input_audio_prompt", nullptr},
      {"num_media_completion", nullptr},
      {"num_search_results", nullptr},
      {"num_fetches", nullptr},
      {"origin", ""},
      {"is_byok", e.byok},
      {"http_referer", nullptr},
      {"external_user", nullptr},
      {"user_agent", nullptr},
      {"router", nullptr},
      {"api_type", "completions"},
      {"service_tier", nullptr},
      {"data_region", "global"},
      {"preset_id", nullptr},
      {"provider_responses", nullptr},
      {"web_search_engine", nullptr},
      {"workspace_id", nullptr},
      {"status", e.status},
  };
  return json::serialize(json::object{{"data", std::move(d)}});
}

std::string RenderKey(const billing::KeyUsage& u, const billing::KeyRecord& key) {
  const bool limited = key.credit_limit.has_value();
  json::object rate{
      {"interval", "1m"},
      {"requests", key.requests_per_minute ? json::value(*key.requests_per_minute) : json::value(-1)},
      {"note", key.requests_per_minute ? "requests per minute for this key"
                                       : "no request rate limit on this key"},
  };
  json::object d{
      {"label", u.key.label},
      {"limit", limited ? json::value(ToUsd(*key.credit_limit)) : json::value(nullptr)},
      {"limit_remaining", u.limit_remaining ? json::value(ToUsd(*u.limit_remaining)) : json::value(nullptr)},
      {"limit_reset", limited && key.limit_reset != billing::LimitReset::kNone
                          ? json::value(billing::LimitResetName(key.limit_reset))
                          : json::value(nullptr)},
      {"usage", ToUsd(u.usage_total)},
      {"usage_daily", ToUsd(u.usage_daily)},
      {"usage_weekly", ToUsd(u.usage_weekly)},
      {"usage_monthly", ToUsd(u.usage_monthly)},
      {"byok_usage", ToUsd(u.byok_usage_total)},
      {"byok_usage_daily", ToUsd(u.byok_usage_daily)},
      {"byok_usage_weekly", ToUsd(u.byok_usage_weekly)},
      {"byok_usage_monthly", ToUsd(u.byok_usage_monthly)},
      {"include_byok_in_limit", false},
      {"is_free_tier", false},
      {"is_management_key", false},
      {"is_provisioning_key", false},
      {"allowed_data_regions", json::array{"global"}},
      {"creator_user_id", nullptr},
      {"organization_id", nullptr},
      {"workspace_id", nullptr},
      {"expires_at", key.expires_at ? json::value(FormatUtc(*key.expires_at, "T", 3, "Z")) : json::value(nullptr)},
      // Tollgate has no free models with a daily quota.
      {"free_model_daily_requests", json::object{{"limit", 0}, {"remaining", 0}, {"used", 0}}},
      {"rate_limit", std::move(rate)},
  };
  return json::serialize(json::object{{"data", std::move(d)}});
}

std::string RenderCredits(const billing::KeyUsage& u) {
  return json::serialize(json::object{
      {"data", json::object{{"total_credits", ToUsd(u.total_credits)}, {"total_usage", ToUsd(u.total_usage)}}}});
}

std::optional<CallLimitPassed> CheckCallLimits(const ChatRequest& request, ApiFlavor api, const CallLimits& limits) {
  const bool responses = api == ApiFlavor::kOpenAiResponses;
  auto over = [](std::string_view label, std::string_view what, std::size_t count, int limit, std::string_view param) {
    return CallLimitPassed{label, InvalidArgument("the request has " + std::to_string(count) + " " + std::string(what) +
                                                      "; at most " + std::to_string(limit) + " are allowed",
                                                  std::string(param))};
  };
  // System and developer turns are the caller's `system` / `instructions`,
  // not its messages: their parts count below.
  const auto conversation = static_cast<std::size_t>(std::count_if(
      request.messages.begin(), request.messages.end(),
      [](const Message& m) { return m.role != Role::kSystem && m.role != Role::kDeveloper; }));
  if (conversation > static_cast<std::size_t>(limits.max_messages)) {
    return over("messages", responses ? "input items" : "messages", conversation, limits.max_messages,
                responses ? "input" : "messages");
  }
  if (request.tools.size() > static_cast<std::size_t>(limits.max_tools)) {
    return over("tools", "tools", request.tools.size(), limits.max_tools, "tools");
  }
  std::size_t parts = 0;
  for (const Message& m : request.messages) {
    parts += m.parts.size();
    for (const ContentPart& part : m.parts) {
      if (const auto* result = std::get_if<ToolResultPart>(&part)) parts += result->content.size();
    }
  }
  if (parts > static_cast<std::size_t>(limits.max_content_parts)) {
    return over("content_parts", "content parts", parts, limits.max_content_parts, responses ? "input" : "messages");
  }
  return std::nullopt;
}

}  // namespace tollgate::gateway
