#include "api.hpp"

#include <boost/json.hpp>

#include <chrono>
#include <cstdio>

namespace tollgate::gateway {
namespace json = boost::json;
namespace {

std::string Iso8601(std::chrono::system_clock::time_point t) {
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch()).count();
  std::time_t secs = static_cast<std::time_t>(ms / 1000);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[64];
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
                tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, static_cast<int>(ms % 1000));
  return buf;
}

}  // namespace

namespace {

// OpenRouter `pricing`: decimal strings in USD per token.
json::object PricingObject(const Pricing& p) {
  json::object pricing{{"prompt", FormatUsdPerToken(p.prompt)}, {"completion", FormatUsdPerToken(p.completion)}};
  if (p.cached_prompt != p.prompt) pricing["input_cache_read"] = FormatUsdPerToken(p.cached_prompt);
  if (p.cache_write != p.prompt) pricing["input_cache_write"] = FormatUsdPerToken(p.cache_write);
  return pricing;
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
    for (Param p : e.provider->SupportedParameters().List()) all.Add(p);
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
        {"pricing", PricingObject(top.pricing)},
        {"top_provider", json::object{{"context_length", context},
                                      {"max_completion_tokens", nullptr},
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

std::string RenderModelEndpoints(const routing::Model& m) {
  json::array endpoints;
  for (const auto& e : m.endpoints) {
    std::string provider(e.provider->Name());
    const bool tools = e.provider->SupportedParameters().Has(Param::kToolChoice);
    endpoints.push_back(json::object{
        {"name", provider + " | " + m.id},
        {"model_id", m.id},
        {"model_name", m.name},
        {"context_length", e.context_length > 0 ? e.context_length : m.context_length},
        {"pricing", PricingObject(e.pricing)},
        {"provider_name", provider},
        {"tag", e.provider_id},
        {"quantization", nullptr},
        {"max_completion_tokens", nullptr},
        {"max_prompt_tokens", nullptr},
        {"supported_parameters", SupportedParameters(e.provider->SupportedParameters())},
        {"supports_implicit_caching", false},
        {"supports_tool_choice", json::object{{"auto", tools}, {"function", tools}, {"none", tools},
                                              {"required", tools}}},
        {"latency_last_30m", nullptr},
        {"throughput_last_30m", nullptr},
        {"uptime_last_5m", nullptr},
        {"uptime_last_30m", nullptr},
        {"uptime_last_1d", nullptr},
    });
  }
  json::object data{{"id", m.id},
                    {"name", m.name},
                    {"created", m.created},
                    {"description", ""},
                    {"architecture", ArchitectureObject(true, ModelParameters(m))},
                    {"endpoints", std::move(endpoints)}};
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
      {"upstream_inference_cost", nullptr},
      {"created_at", Iso8601(e.created_at)},
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
      {"is_byok", false},
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

}  // namespace tollgate::gateway
