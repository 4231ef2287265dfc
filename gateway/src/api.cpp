#include "api.hpp"

#include <boost/json.hpp>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <random>

namespace tollgate::gateway {
namespace json = boost::json;
namespace {

constexpr size_t kMaxStopStrings = 4;
constexpr int64_t kMaxTokensLimit = 1 << 24;

Error Bad(std::string message, std::string param) {
  return InvalidArgument(std::move(message), std::move(param));
}

// Content is a string, null, or an array of parts whose text parts are joined.
Result<std::string> ContentText(const json::value& content, const std::string& param) {
  if (content.is_string()) return std::string(content.as_string());
  if (content.is_null()) return std::string();
  if (content.is_array()) {
    std::string text;
    for (const auto& part : content.as_array()) {
      const json::object* p = part.if_object();
      if (p == nullptr) return Bad("content parts must be objects", param);
      const json::value* type = p->if_contains("type");
      if (type == nullptr || !type->is_string()) return Bad("content part needs a type", param);
      if (type->as_string() != "text") {
        return Bad("content part type '" + std::string(type->as_string()) + "' is not supported by this model",
                   param);
      }
      const json::value* t = p->if_contains("text");
      if (t == nullptr || !t->is_string()) return Bad("text part needs a text string", param);
      text += t->as_string();
    }
    return text;
  }
  return Bad("content must be a string or an array of content parts", param);
}

Result<double> Number(const json::value& v, const char* param, double lo, double hi) {
  if (!v.is_number()) return Bad(std::string(param) + " must be a number", param);
  double d = v.to_number<double>();
  if (!std::isfinite(d) || d < lo || d > hi) {
    char range[64];
    std::snprintf(range, sizeof range, " must be between %g and %g", lo, hi);
    return Bad(std::string(param) + range, param);
  }
  return d;
}

Result<int64_t> Integer(const json::value& v, const char* param, int64_t lo, int64_t hi) {
  if (!v.is_int64() && !v.is_uint64()) return Bad(std::string(param) + " must be an integer", param);
  if (v.is_uint64() && v.as_uint64() > static_cast<uint64_t>(INT64_MAX)) {
    return Bad(std::string(param) + " is too large", param);
  }
  int64_t i = v.is_int64() ? v.as_int64() : static_cast<int64_t>(v.as_uint64());
  if (i < lo || i > hi) {
    return Bad(std::string(param) + " must be between " + std::to_string(lo) + " and " + std::to_string(hi), param);
  }
  return i;
}

json::object UsageObject(const Usage& usage, Money cost) {
  return json::object{
      {"prompt_tokens", usage.prompt_tokens},
      {"completion_tokens", usage.completion_tokens},
      {"total_tokens", usage.total_tokens()},
      {"prompt_tokens_details", json::object{{"cached_tokens", usage.cached_tokens}}},
      {"completion_tokens_details", json::object{{"reasoning_tokens", usage.reasoning_tokens}}},
      {"cost", ToUsd(cost)},
      {"is_byok", false},
  };
}

// Tollgate has no `system_fingerprint`. @openrouter/sdk 1.3 wants it null on
// a whole answer (ChatResult: required, nullable) and absent on a chunk
// (ChatStreamChunk: optional, not nullable); RenderCompletion adds the null.
json::object Envelope(const ResponseMeta& meta, std::string_view object) {
  return json::object{
      {"id", meta.id}, {"object", object}, {"created", meta.created}, {"model", meta.model}, {"provider", meta.provider}};
}

std::string Event(const json::value& v) { return "data: " + json::serialize(v) + "\n\n"; }

std::string_view ChunkObject(RequestKind kind) {
  return kind == RequestKind::kChat ? "chat.completion.chunk" : "text_completion";
}

json::object Choice(const ResponseMeta& meta, std::string_view text, bool first, const json::value& finish) {
  if (meta.kind == RequestKind::kChat) {
    json::object delta;
    if (first) delta["role"] = "assistant";
    if (!text.empty() || first) delta["content"] = text;
    return json::object{{"index", 0}, {"delta", std::move(delta)}, {"logprobs", nullptr}, {"finish_reason", finish}};
  }
  return json::object{{"index", 0}, {"text", text}, {"logprobs", nullptr}, {"finish_reason", finish}};
}

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

Result<ChatRequest> ParseChatRequest(std::string_view body, RequestKind kind) {
  json::parse_options options;
  options.max_depth = 64;
  boost::system::error_code ec;
  json::value root = json::parse(body, ec, {}, options);
  if (ec) return Bad("request body is not valid JSON: " + ec.message(), "");
  json::object* obj = root.if_object();
  if (obj == nullptr) return Bad("request body must be a JSON object", "");

  ChatRequest req;
  req.kind = kind;
  const json::value* model = obj->if_contains("model");
  if (model == nullptr || model->is_null()) return Bad("you must provide a model parameter", "model");
  if (!model->is_string() || model->as_string().empty()) return Bad("model must be a non-empty string", "model");
  req.model = std::string(model->as_string());

  if (kind == RequestKind::kChat) {
    const json::value* messages = obj->if_contains("messages");
    if (messages == nullptr) return Bad("you must provide a messages parameter", "messages");
    if (!messages->is_array()) return Bad("messages must be an array of message objects", "messages");
    if (messages->as_array().empty()) return Bad("messages must contain at least one message", "messages");
    size_t i = 0;
    for (const auto& m : messages->as_array()) {
      std::string param = "messages[" + std::to_string(i++) + "]";
      const json::object* mo = m.if_object();
      if (mo == nullptr) return Bad(param + " must be an object", param);
      const json::value* role = mo->if_contains("role");
      if (role == nullptr || !role->is_string()) return Bad(param + ".role must be a string", param + ".role");
      std::string r(role->as_string());
      if (r != "system" && r != "user" && r != "assistant" && r != "developer" && r != "tool") {
        return Bad(param + ".role '" + r + "' is not one of system, developer, user, assistant, tool",
                   param + ".role");
      }
      const json::value* content = mo->if_contains("content");
      // Only an assistant message (one that carried tool calls) may have no content.
      if ((content == nullptr || content->is_null()) && r != "assistant") {
        return Bad(param + ".content is required", param + ".content");
      }
      auto text = content ? ContentText(*content, param + ".content") : Result<std::string>(std::string());
      if (!text) return text.error();
      req.messages.push_back(ChatMessage{std::move(r), std::move(*text)});
    }
    if (const json::value* tools = obj->if_contains("tools");
        tools != nullptr && !tools->is_null() && !(tools->is_array() && tools->as_array().empty())) {
      return Bad("tools are not supported yet", "tools");
    }
  } else {
    const json::value* prompt = obj->if_contains("prompt");
    if (prompt == nullptr) return Bad("you must provide a prompt parameter", "prompt");
    if (prompt->is_string()) {
      req.prompt = std::string(prompt->as_string());
    } else if (prompt->is_array() && prompt->as_array().size() == 1 && prompt->as_array()[0].is_string()) {
      req.prompt = std::string(prompt->as_array()[0].as_string());
    } else {
      return Bad("prompt must be a string (or an array of exactly one string)", "prompt");
    }
  }

  for (const char* name : {"max_tokens", "max_completion_tokens"}) {
    const json::value* v = obj->if_contains(name);
    if (v == nullptr || v->is_null()) continue;
    auto n = Integer(*v, name, 1, kMaxTokensLimit);
    if (!n) return n.error();
    req.max_tokens = req.max_tokens ? std::min(*req.max_tokens, *n) : *n;
  }
  if (const json::value* v = obj->if_contains("temperature"); v && !v->is_null()) {
    auto t = Number(*v, "temperature", 0.0, 2.0);
    if (!t) return t.error();
    req.temperature = *t;
  }
  if (const json::value* v = obj->if_contains("top_p"); v && !v->is_null()) {
    auto t = Number(*v, "top_p", 0.0, 1.0);
    if (!t) return t.error();
    if (*t == 0.0) return Bad("top_p must be greater than 0", "top_p");
    req.top_p = *t;
  }
  if (const json::value* v = obj->if_contains("stop"); v && !v->is_null()) {
    if (v->is_string()) {
      req.stop.emplace_back(v->as_string());
    } else if (v->is_array()) {
      if (v->as_array().size() > kMaxStopStrings) return Bad("stop takes at most 4 sequences", "stop");
      for (const auto& s : v->as_array()) {
        if (!s.is_string()) return Bad("stop must be a string or an array of strings", "stop");
        req.stop.emplace_back(s.as_string());
      }
    } else {
      return Bad("stop must be a string or an array of strings", "stop");
    }
    for (const auto& s : req.stop) {
      if (s.empty()) return Bad("stop sequences must not be empty", "stop");
    }
  }
  if (const json::value* v = obj->if_contains("seed"); v && !v->is_null()) {
    if (v->is_int64()) {
      req.seed = static_cast<uint64_t>(v->as_int64());
    } else if (v->is_uint64()) {
      req.seed = v->as_uint64();
    } else {
      return Bad("seed must be an integer", "seed");
    }
  }
  if (const json::value* v = obj->if_contains("stream"); v && !v->is_null()) {
    if (!v->is_bool()) return Bad("stream must be a boolean", "stream");
    req.stream = v->as_bool();
  }
  if (const json::value* v = obj->if_contains("stream_options"); v && !v->is_null()) {
    const json::object* so = v->if_object();
    if (so == nullptr) return Bad("stream_options must be an object", "stream_options");
    if (const json::value* iu = so->if_contains("include_usage"); iu && !iu->is_null()) {
      if (!iu->is_bool()) return Bad("stream_options.include_usage must be a boolean", "stream_options.include_usage");
      req.include_usage = iu->as_bool();
    }
  }
  if (const json::value* v = obj->if_contains("user"); v && !v->is_null()) {
    if (!v->is_string()) return Bad("user must be a string", "user");
    req.user = std::string(v->as_string());
  }
  if (const json::value* v = obj->if_contains("n"); v && !v->is_null()) {
    auto n = Integer(*v, "n", 1, 1);
    if (!n) return Bad("only n = 1 is supported", "n");
  }
  return req;
}

std::string RenderUsageJson(const Usage& usage, Money cost) { return json::serialize(UsageObject(usage, cost)); }

std::string RenderCompletion(const ResponseMeta& meta, std::string_view text, const Completion& completion,
                             Money cost) {
  json::object choice{{"index", 0}, {"logprobs", nullptr}, {"finish_reason", FinishReasonName(completion.finish_reason)}};
  if (meta.kind == RequestKind::kChat) {
    choice["message"] = json::object{{"role", "assistant"}, {"content", text}, {"refusal", nullptr}};
  } else {
    choice["text"] = text;
  }
  json::object out = Envelope(meta, meta.kind == RequestKind::kChat ? "chat.completion" : "text_completion");
  out["system_fingerprint"] = nullptr;
  out["choices"] = json::array{std::move(choice)};
  out["usage"] = UsageObject(completion.usage, cost);
  return json::serialize(out);
}

std::string RenderDeltaEvent(const ResponseMeta& meta, std::string_view text, bool first) {
  json::object out = Envelope(meta, ChunkObject(meta.kind));
  out["choices"] = json::array{Choice(meta, text, first, nullptr)};
  return Event(out);
}

std::string RenderFinishEvent(const ResponseMeta& meta, FinishReason reason) {
  json::object out = Envelope(meta, ChunkObject(meta.kind));
  out["choices"] = json::array{Choice(meta, "", false, json::string(FinishReasonName(reason)))};
  return Event(out);
}

std::string RenderUsageEvent(const ResponseMeta& meta, const Usage& usage, Money cost) {
  json::object out = Envelope(meta, ChunkObject(meta.kind));
  out["choices"] = json::array{};
  out["usage"] = UsageObject(usage, cost);
  return Event(out);
}

std::string RenderErrorEvent(const Error& error, ErrorFlavor flavor) {
  return "data: " + ErrorBody(error, flavor) + "\n\n";
}

namespace {

// OpenRouter `pricing`: decimal strings in USD per token.
json::object PricingObject(const Pricing& p) {
  json::object pricing{{"prompt", FormatUsdPerToken(p.prompt)}, {"completion", FormatUsdPerToken(p.completion)}};
  if (p.cached_prompt != p.prompt) pricing["input_cache_read"] = FormatUsdPerToken(p.cached_prompt);
  return pricing;
}

// `tokenizer` is optional in a /models entry but required (nullable) in an
// endpoints listing (@openrouter/sdk ModelArchitecture vs Architecture).
json::object ArchitectureObject(bool with_tokenizer) {
  json::object a{{"modality", "text->text"},
                 {"input_modalities", json::array{"text"}},
                 {"output_modalities", json::array{"text"}},
                 {"instruct_type", nullptr}};
  if (with_tokenizer) a["tokenizer"] = nullptr;
  return a;
}

json::array SupportedParameters() { return json::array{"max_tokens", "temperature", "top_p", "stop", "seed"}; }

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
        {"architecture", ArchitectureObject(false)},
        {"pricing", PricingObject(top.pricing)},
        {"top_provider", json::object{{"context_length", context},
                                      {"max_completion_tokens", nullptr},
                                      {"is_moderated", false}}},
        {"per_request_limits", nullptr},
        {"supported_parameters", SupportedParameters()},
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
        {"supported_parameters", SupportedParameters()},
        {"supports_implicit_caching", false},
        {"supports_tool_choice", json::object{{"auto", false}, {"function", false}, {"none", false},
                                              {"required", false}}},
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
                    {"architecture", ArchitectureObject(true)},
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

std::string NewRequestId() {
  static constexpr char kAlphabet[] = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
  thread_local std::mt19937_64 rng{std::random_device{}()};
  std::uniform_int_distribution<int> pick(0, 61);
  auto secs = std::chrono::duration_cast<std::chrono::seconds>(
                  std::chrono::system_clock::now().time_since_epoch()).count();
  std::string id = "gen-" + std::to_string(secs) + "-";
  for (int i = 0; i < 20; ++i) id += kAlphabet[pick(rng)];
  return id;
}

}  // namespace tollgate::gateway
