#include "openai_wire.hpp"

#include <boost/json/array.hpp>
#include <boost/json/object.hpp>
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <boost/json/value.hpp>

#include <algorithm>
#include <cstdint>
#include <optional>

namespace tollgate::providers::detail {
namespace json = boost::json;
namespace {

constexpr std::size_t kMaxUpstreamParamBytes = 200;
constexpr std::string_view kReplacementChar = "\xEF\xBF\xBD";  // U+FFFD

// One usage count, per the rule in openai_wire.hpp: null when `v` is absent
// or not a JSON number; else clamped into [0, kMaxUsageTokens], fractions
// truncated toward zero.
std::optional<std::int64_t> TokenCount(const json::value* v) {
  if (v == nullptr) return std::nullopt;
  if (v->is_int64()) return std::clamp<std::int64_t>(v->get_int64(), 0, kMaxUsageTokens);
  if (v->is_uint64()) {  // only values above INT64_MAX parse as uint64
    return v->get_uint64() > static_cast<std::uint64_t>(kMaxUsageTokens)
               ? kMaxUsageTokens
               : static_cast<std::int64_t>(v->get_uint64());
  }
  if (v->is_double()) {
    const double d = v->get_double();
    if (!(d > 0)) return 0;  // negative, -0 (and NaN, which JSON cannot carry)
    if (d >= static_cast<double>(kMaxUsageTokens)) return kMaxUsageTokens;
    return static_cast<std::int64_t>(d);  // truncates toward zero
  }
  return std::nullopt;
}

// `choices[].index`: absent, null or not a number = unnumbered (taken as 0);
// otherwise it must be exactly 0.
bool IsFirstChoiceIndex(const json::value* index) {
  if (index == nullptr) return true;
  if (index->is_int64()) return index->get_int64() == 0;
  if (index->is_uint64()) return index->get_uint64() == 0;
  if (index->is_double()) return index->get_double() == 0.0;
  return true;
}

const json::object* ObjectAt(const json::object& o, std::string_view key) {
  const auto* v = o.if_contains(key);
  return v != nullptr ? v->if_object() : nullptr;
}

std::string_view StringAt(const json::object& o, std::string_view key) {
  const auto* v = o.if_contains(key);
  if (v == nullptr || !v->is_string()) return {};
  const auto& s = v->get_string();
  return std::string_view(s.data(), s.size());
}

// Null when neither prompt_tokens nor completion_tokens is a number: such an
// object reports nothing, and the gateway estimates instead of billing zero.
std::optional<Usage> ParseUsage(const json::object& u) {
  const auto prompt = TokenCount(u.if_contains("prompt_tokens"));
  const auto completion = TokenCount(u.if_contains("completion_tokens"));
  if (!prompt && !completion) return std::nullopt;
  Usage usage;
  usage.prompt_tokens = prompt.value_or(0);
  usage.completion_tokens = completion.value_or(0);
  std::optional<std::int64_t> cached;
  if (const auto* details = ObjectAt(u, "prompt_tokens_details")) {
    cached = TokenCount(details->if_contains("cached_tokens"));
  } else if (u.contains("prompt_cache_hit_tokens")) {
    // DeepSeek's older spelling (api-docs.deepseek.com, "Context Caching").
    cached = TokenCount(u.if_contains("prompt_cache_hit_tokens"));
  } else if (u.contains("cached_tokens")) {
    // Moonshot/Kimi put it at the top level of `usage`.
    cached = TokenCount(u.if_contains("cached_tokens"));
  }
  std::optional<std::int64_t> reasoning;
  if (const auto* details = ObjectAt(u, "completion_tokens_details")) {
    reasoning = TokenCount(details->if_contains("reasoning_tokens"));
  }
  // Parts never exceed their wholes (cached is part of prompt, reasoning of
  // completion): otherwise a discount on cached tokens could go below zero.
  usage.cached_tokens = std::min(cached.value_or(0), usage.prompt_tokens);
  usage.reasoning_tokens = std::min(reasoning.value_or(0), usage.completion_tokens);
  return usage;
}

// At most kMaxUpstreamMessageBytes, "..." included when cut; never cuts a
// UTF-8 sequence. Redact before capping: a cut key would escape Redact.
std::string CapMessage(std::string_view text) {
  if (text.size() <= kMaxUpstreamMessageBytes) return std::string(text);
  constexpr std::string_view kEllipsis = "...";
  text = text.substr(0, kMaxUpstreamMessageBytes - kEllipsis.size());
  return std::string(text.substr(0, CompleteUtf8Prefix(text))) + std::string(kEllipsis);
}

bool IsPrintableText(std::string_view text) {
  for (unsigned char c : text) {
    if (c < 0x20 && c != '\n' && c != '\r' && c != '\t') return false;
  }
  return true;
}

std::string_view Trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t' || s.front() == '\r' ||
                        s.front() == '\n')) {
    s.remove_prefix(1);
  }
  while (!s.empty() &&
         (s.back() == ' ' || s.back() == '\t' || s.back() == '\r' || s.back() == '\n')) {
    s.remove_suffix(1);
  }
  return s;
}

// The message of an in-stream error chunk: `{"error": {...}}` (OpenAI,
// OpenRouter), `{"error": "..."}`, or vLLM's `{"object": "error", "message"}`
// (WIRE-FORMATS.md 3.1, "Mid-stream errors"). Null when the chunk is no error.
std::optional<std::string> InStreamError(const json::object& chunk) {
  if (const auto* err = chunk.if_contains("error"); err != nullptr && !err->is_null()) {
    if (const auto* obj = err->if_object()) {
      auto msg = StringAt(*obj, "message");
      return std::string(msg.empty() ? std::string_view("upstream reported an error") : msg);
    }
    if (err->is_string()) return std::string(err->get_string().c_str());
    return std::string("upstream reported an error");
  }
  if (StringAt(chunk, "object") == "error") {
    auto msg = StringAt(chunk, "message");
    return std::string(msg.empty() ? std::string_view("upstream reported an error") : msg);
  }
  return std::nullopt;
}

// `error.param` of an upstream error body when it is a non-empty string,
// capped at kMaxUpstreamParamBytes (whole UTF-8 sequences); else empty.
std::string UpstreamErrorParam(std::string_view body, std::string_view secret) {
  boost::system::error_code ec;
  const json::value v = json::parse(Trim(body), ec);
  if (ec || !v.is_object()) return {};
  const auto* err = ObjectAt(v.get_object(), "error");
  if (err == nullptr) return {};
  std::string param = Redact(std::string(StringAt(*err, "param")), secret);
  if (!IsPrintableText(param)) return {};
  if (param.size() > kMaxUpstreamParamBytes) {
    param.resize(CompleteUtf8Prefix(std::string_view(param).substr(0, kMaxUpstreamParamBytes)));
  }
  return param;
}

}  // namespace

std::string_view EndpointPath(RequestKind kind) {
  return kind == RequestKind::kCompletion ? "/completions" : "/chat/completions";
}

std::string BuildRequestBody(const ChatRequest& request, std::string_view upstream_model) {
  json::object body;
  body["model"] = upstream_model;
  if (request.kind == RequestKind::kCompletion) {
    body["prompt"] = request.prompt;
  } else {
    json::array messages;
    messages.reserve(request.messages.size());
    for (const auto& m : request.messages) {
      json::object msg;
      msg["role"] = m.role;
      msg["content"] = m.content;
      messages.emplace_back(std::move(msg));
    }
    body["messages"] = std::move(messages);
  }
  if (request.max_tokens) body["max_tokens"] = *request.max_tokens;
  if (request.temperature) body["temperature"] = *request.temperature;
  if (request.top_p) body["top_p"] = *request.top_p;
  if (!request.stop.empty()) {
    json::array stop;
    for (const auto& s : request.stop) stop.emplace_back(s);
    body["stop"] = std::move(stop);
  }
  if (request.seed) body["seed"] = *request.seed;
  if (!request.user.empty()) body["user"] = request.user;
  // Always streamed with usage, whatever the caller asked for: the gateway
  // assembles non-streamed answers, and usage must be known to bill.
  body["stream"] = true;
  body["stream_options"] = json::object{{"include_usage", true}};
  return json::serialize(body);
}

FinishReason ParseFinishReason(std::string_view name) {
  if (name == "length") return FinishReason::kLength;
  if (name == "tool_calls" || name == "function_call") return FinishReason::kToolCalls;
  if (name == "content_filter") return FinishReason::kContentFilter;
  if (name == "error") return FinishReason::kError;
  return FinishReason::kStop;
}

std::string Redact(std::string text, std::string_view secret) {
  if (secret.empty()) return text;
  constexpr std::string_view kMask = "[redacted]";
  for (auto pos = text.find(secret); pos != std::string::npos;
       pos = text.find(secret, pos + kMask.size())) {
    text.replace(pos, secret.size(), kMask);
  }
  return text;
}

std::string UpstreamErrorMessage(std::string_view body, std::string_view secret) {
  body = Trim(body);
  if (body.empty()) return {};
  auto cap = [&](std::string_view text) { return CapMessage(Redact(std::string(text), secret)); };
  boost::system::error_code ec;
  const json::value v = json::parse(body, ec);
  if (!ec) {
    if (const auto* o = v.if_object()) {
      if (auto msg = InStreamError(*o)) return cap(*msg);
      if (auto msg = StringAt(*o, "message"); !msg.empty()) return cap(msg);
      if (const auto* detail = o->if_contains("detail")) {  // FastAPI-style servers
        if (const auto* s = detail->if_string()) return cap(std::string_view(s->data(), s->size()));
        return cap(json::serialize(*detail));
      }
    }
    return {};
  }
  if (IsPrintableText(body)) return cap(body);
  return {};
}

Error MapUpstreamStatus(int status, std::string_view body, std::string_view secret,
                        std::string_view retry_after) {
  const std::string upstream_msg = UpstreamErrorMessage(body, secret);
  const std::string http = "HTTP " + std::to_string(status);
  // 401/403 bodies are never looked at (see below); other 4xx may name the
  // offending request field.
  const std::string param = status >= 400 && status <= 499 && status != 401 && status != 403
                                ? UpstreamErrorParam(body, secret)
                                : std::string();
  auto make = [&](ErrorCode code, std::string what, bool pass_message) {
    std::string message = std::move(what) + " (" + http + ")";
    if (pass_message && !upstream_msg.empty()) message += ": " + upstream_msg;
    return Error{code, std::move(message), param, {}};
  };
  switch (status) {
    case 400:
    case 404:
    case 413:
    case 422:
      if (!upstream_msg.empty()) return Error{ErrorCode::kInvalidArgument, upstream_msg, param, {}};
      return make(ErrorCode::kInvalidArgument, "upstream rejected the request", false);
    case 401:
    case 403:
      // Never pass the upstream text on: it may echo (part of) our key.
      return make(ErrorCode::kBadGateway, "upstream rejected our credentials", false);
    case 402:
      return make(ErrorCode::kUnavailable, "upstream account has no credits", true);
    case 408:
    case 504:
      return make(ErrorCode::kUpstreamTimeout, "upstream timed out", true);
    case 429: {
      std::string what = "upstream rate limited the request";
      if (!retry_after.empty() && retry_after.size() < 40 && IsPrintableText(retry_after)) {
        what += ", retry after " + std::string(retry_after);
      }
      return make(ErrorCode::kResourceExhausted, std::move(what), true);
    }
    default:
      break;
  }
  if (status >= 500 && status <= 599) {
    return make(ErrorCode::kUnavailable, "upstream failed", true);
  }
  return make(ErrorCode::kBadGateway, "unexpected upstream status", true);
}

std::size_t CompleteUtf8Prefix(std::string_view text) {
  const std::size_t n = text.size();
  // Find the last lead byte among the final 4 bytes.
  for (std::size_t back = 1; back <= 4 && back <= n; ++back) {
    const auto b = static_cast<unsigned char>(text[n - back]);
    if ((b & 0xC0) == 0x80) continue;  // continuation byte
    std::size_t need = 1;
    if ((b & 0xE0) == 0xC0) {
      need = 2;
    } else if ((b & 0xF0) == 0xE0) {
      need = 3;
    } else if ((b & 0xF8) == 0xF0) {
      need = 4;
    }
    return back < need ? n - back : n;
  }
  return n;  // no lead byte nearby: not a truncated sequence, pass it on
}

void OpenAiStreamDecoder::AppendText(std::string_view text, Step& step) {
  if (text.empty()) return;
  if (utf8_tail_.empty()) {
    const std::size_t k = CompleteUtf8Prefix(text);
    step.delta.append(text.substr(0, k));
    utf8_tail_.assign(text.substr(k));
    return;
  }
  std::string joined = std::move(utf8_tail_);
  joined.append(text);
  const std::size_t k = CompleteUtf8Prefix(joined);
  step.delta.append(joined, 0, k);
  utf8_tail_ = joined.substr(k);
}

void OpenAiStreamDecoder::Absorb(const json::object& chunk, bool whole_response,
                                 std::string_view secret, Step& step) {
  if (auto err = InStreamError(chunk)) {
    step.error = Error{ErrorCode::kBadGateway,
                       "upstream error: " + CapMessage(Redact(*err, secret)), {}, {}};
    return;
  }
  if (completion_.upstream_id.empty()) completion_.upstream_id = StringAt(chunk, "id");

  // `choices` may be an empty array (the usage chunk), null or absent
  // (OpenAI-compatible servers, WIRE-FORMATS.md 3.1).
  if (const auto* choices = chunk.if_contains("choices")) {
    if (const auto* arr = choices->if_array(); arr != nullptr && !arr->empty()) {
      const json::object* choice = nullptr;
      for (const auto& c : *arr) {  // n = 1: take choice 0 (first when unnumbered)
        const auto* o = c.if_object();
        if (o == nullptr) continue;
        if (IsFirstChoiceIndex(o->if_contains("index"))) {
          choice = o;
          break;
        }
      }
      if (choice != nullptr) {
        std::string_view text;
        const json::object* carrier = nullptr;
        if (kind_ == RequestKind::kChat) {
          carrier = ObjectAt(*choice, whole_response ? "message" : "delta");
          if (carrier != nullptr) text = StringAt(*carrier, "content");
        }
        if (carrier == nullptr) text = StringAt(*choice, "text");
        AppendText(text, step);
        if (auto reason = StringAt(*choice, "finish_reason"); !reason.empty()) {
          completion_.finish_reason = ParseFinishReason(reason);
          finish_seen_ = true;
        }
      }
    }
  }
  // Usage normally arrives in its own chunk with empty choices, but some
  // servers attach it to the last choice chunk: take it wherever it is.
  if (const auto* usage_object = ObjectAt(chunk, "usage")) {
    if (auto usage = ParseUsage(*usage_object)) {
      completion_.usage = *usage;
      completion_.usage_known = true;
    }
  }
}

OpenAiStreamDecoder::Step OpenAiStreamDecoder::OnData(std::string_view data,
                                                      std::string_view secret) {
  Step step;
  const std::string_view trimmed = Trim(data);
  if (trimmed == "[DONE]") {
    step.done = true;
    return step;
  }
  boost::system::error_code ec;
  const json::value v = json::parse(trimmed, ec);
  if (ec || !v.is_object()) {
    step.error = Error{ErrorCode::kBadGateway, "upstream sent a malformed stream chunk", {}, {}};
    return step;
  }
  Absorb(v.get_object(), false, secret, step);
  return step;
}

OpenAiStreamDecoder::Step OpenAiStreamDecoder::OnWholeResponse(std::string_view body,
                                                               std::string_view secret) {
  Step step;
  boost::system::error_code ec;
  const json::value v = json::parse(body, ec);
  if (ec || !v.is_object()) {
    step.error = Error{ErrorCode::kBadGateway, "upstream sent a malformed response body", {}, {}};
    return step;
  }
  Absorb(v.get_object(), true, secret, step);
  step.done = !step.error.has_value();
  return step;
}

Completion OpenAiStreamDecoder::Finish(std::string* flushed_delta) {
  if (!utf8_tail_.empty()) {
    if (flushed_delta != nullptr) flushed_delta->assign(kReplacementChar);
    utf8_tail_.clear();
  }
  return completion_;
}

}  // namespace tollgate::providers::detail
