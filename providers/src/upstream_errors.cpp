#include "upstream_errors.hpp"

#include "tollgate/core/text.hpp"

#include <boost/json/object.hpp>
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <boost/json/value.hpp>

#include <cmath>
#include <optional>
#include <string>

namespace tollgate::providers::detail {
namespace json = boost::json;
namespace {

constexpr std::size_t kMaxUpstreamParamBytes = 200;
constexpr std::size_t kMaxCodeBytes = 100;

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

std::string_view Trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t' || s.front() == '\r' || s.front() == '\n')) {
    s.remove_prefix(1);
  }
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r' || s.back() == '\n')) {
    s.remove_suffix(1);
  }
  return s;
}

bool IsPrintableText(std::string_view text) {
  for (unsigned char c : text) {
    if (c < 0x20 && c != '\n' && c != '\r' && c != '\t') return false;
  }
  return true;
}

// At most `max` bytes, "..." included when cut; never cuts a UTF-8 sequence.
// Redact before capping: a cut key would escape Redact.
std::string Cap(std::string_view text, std::size_t max) {
  if (text.size() <= max) return std::string(text);
  constexpr std::string_view kEllipsis = "...";
  text = text.substr(0, max - kEllipsis.size());
  return std::string(text.substr(0, CompleteUtf8Prefix(text))) + std::string(kEllipsis);
}

std::optional<json::object> ParseObject(std::string_view body) {
  boost::system::error_code ec;
  json::value v = json::parse(Trim(body), ec);
  if (ec || !v.is_object()) return std::nullopt;
  return std::move(v.get_object());
}

// A short printable string from the body's error object: `field` of
// `error` (or of the top level when `error` is absent).
std::string ErrorField(const json::object& body, std::string_view field, std::string_view secret, std::size_t max) {
  const json::object* err = ObjectAt(body, "error");
  const json::value* v = (err != nullptr ? err : &body)->if_contains(field);
  // Strings only: Gemini's `error.code` is the HTTP status number, and a
  // numeric `param` names nothing.
  std::string out;
  if (v != nullptr && v->is_string()) out = std::string(v->get_string().c_str());
  out = Redact(std::move(out), secret);
  if (!IsPrintableText(out)) return {};
  if (out.size() > max) out.resize(CompleteUtf8Prefix(std::string_view(out).substr(0, max)));
  return out;
}

// Google APIs put machine-readable facts in `error.details` (google.rpc
// Status: cloud.google.com/apis/design/errors): ErrorInfo.reason
// "API_KEY_INVALID" on a rejected key (sent as HTTP 400), RetryInfo.retryDelay
// ("22s", a google.protobuf.Duration) on a 429.
const json::array* GoogleDetails(const json::object& body) {
  const json::object* err = ObjectAt(body, "error");
  if (err == nullptr) return nullptr;
  const auto* details = err->if_contains("details");
  return details != nullptr ? details->if_array() : nullptr;
}

bool IsRejectedGoogleKey(const json::object& body) {
  const json::array* details = GoogleDetails(body);
  if (details == nullptr) return false;
  for (const auto& d : *details) {
    const auto* o = d.if_object();
    if (o != nullptr && StringAt(*o, "reason") == "API_KEY_INVALID") return true;
  }
  return false;
}

// Whole seconds (rounded up) of RetryInfo.retryDelay, or "".
std::string GoogleRetryDelay(const json::object& body) {
  const json::array* details = GoogleDetails(body);
  if (details == nullptr) return {};
  for (const auto& d : *details) {
    const auto* o = d.if_object();
    if (o == nullptr) continue;
    std::string_view delay = StringAt(*o, "retryDelay");
    if (delay.size() < 2 || delay.back() != 's') continue;
    delay.remove_suffix(1);
    double seconds = 0;
    try {
      std::size_t used = 0;
      seconds = std::stod(std::string(delay), &used);
      if (used != delay.size()) continue;
    } catch (const std::exception&) {
      continue;
    }
    if (!(seconds >= 0) || seconds > 86400) continue;
    return std::to_string(static_cast<int64_t>(std::ceil(seconds)));
  }
  return {};
}

}  // namespace

std::string Redact(std::string text, std::string_view secret) {
  if (secret.empty()) return text;
  constexpr std::string_view kMask = "[redacted]";
  for (auto pos = text.find(secret); pos != std::string::npos; pos = text.find(secret, pos + kMask.size())) {
    text.replace(pos, secret.size(), kMask);
  }
  return text;
}

std::string UpstreamErrorMessage(std::string_view body, std::string_view secret) {
  body = Trim(body);
  if (body.empty()) return {};
  auto cap = [&](std::string_view text) { return Cap(Redact(std::string(text), secret), kMaxUpstreamMessageBytes); };
  boost::system::error_code ec;
  const json::value v = json::parse(body, ec);
  if (!ec) {
    // Some servers answer an array of errors (Gemini behind some proxies).
    const json::object* o = v.if_object();
    if (o == nullptr && v.is_array() && !v.get_array().empty()) o = v.get_array().front().if_object();
    if (o != nullptr) {
      if (const auto* err = o->if_contains("error"); err != nullptr && !err->is_null()) {
        if (const auto* eo = err->if_object()) {
          if (auto msg = StringAt(*eo, "message"); !msg.empty()) return cap(msg);
        }
        if (err->is_string()) return cap(std::string_view(err->get_string().data(), err->get_string().size()));
      }
      if (auto msg = StringAt(*o, "message"); !msg.empty()) return cap(msg);
      if (const auto* detail = o->if_contains("detail")) {  // FastAPI-style servers
        if (const auto* s = detail->if_string()) return cap(std::string_view(s->data(), s->size()));
        return cap(json::serialize(*detail));
      }
    }
    return {};
  }
  // A markup page (a proxy's or load balancer's HTML error page) says nothing
  // a caller can use and may name internal hosts: not passed on.
  if (body.front() == '<') return {};
  if (IsPrintableText(body)) return cap(body);
  return {};
}

// The upstream refused the key it was sent: marked so that the gateway can
// tell a caller whose own key (BYOK) it was.
Error CredentialsRejected(Error e) {
  e.code_string = std::string(kProviderCredentialsRejected);
  return e;
}

Error MapUpstreamStatus(int status, std::string_view body, std::string_view secret, std::string_view retry_after) {
  const std::string upstream_msg = UpstreamErrorMessage(body, secret);
  const std::string http = "HTTP " + std::to_string(status);
  const auto parsed = status != 401 && status != 403 ? ParseObject(body) : std::nullopt;
  auto make = [&](ErrorCode code, std::string what, bool pass_message) {
    std::string message = std::move(what) + " (" + http + ")";
    if (pass_message && !upstream_msg.empty()) message += ": " + upstream_msg;
    return Error{code, std::move(message), {}, {}, {}, {}};
  };
  // Gemini answers a rejected key with 400 INVALID_ARGUMENT: it is our
  // credentials, not the caller's request.
  if (status == 400 && parsed && IsRejectedGoogleKey(*parsed)) {
    return CredentialsRejected(make(ErrorCode::kBadGateway, "the provider rejected Tollgate's credentials", false));
  }
  switch (status) {
    case 400:
    case 413:
    case 422: {
      Error e = upstream_msg.empty() ? make(ErrorCode::kInvalidArgument, "the provider rejected the request", false)
                                     : Error{ErrorCode::kInvalidArgument, upstream_msg, {}, {}, {}, {}};
      if (parsed) e.param = ErrorField(*parsed, "param", secret, kMaxUpstreamParamBytes);
      return e;
    }
    case 401:
    case 403:
      // Never pass the upstream text on: it may echo (part of) our key.
      return CredentialsRejected(make(ErrorCode::kBadGateway, "the provider rejected Tollgate's credentials", false));
    case 404:
      return make(ErrorCode::kBadGateway, "the provider does not know this model or path", true);
    case 402:
      return make(ErrorCode::kUnavailable, "the provider account has no credits", true);
    case 408:
    case 504:
      return make(ErrorCode::kUpstreamTimeout, "the provider timed out", true);
    case 429: {
      Error e = make(ErrorCode::kResourceExhausted, "the provider rate limited the request", true);
      if (!retry_after.empty() && retry_after.size() < 40 && IsPrintableText(retry_after)) {
        e.retry_after = std::string(Trim(retry_after));
      } else if (parsed) {
        e.retry_after = GoogleRetryDelay(*parsed);  // Gemini sends no Retry-After header
      }
      if (parsed) {
        e.code_string = ErrorField(*parsed, "code", secret, kMaxCodeBytes);
        if (e.code_string.empty()) e.code_string = ErrorField(*parsed, "type", secret, kMaxCodeBytes);
        if (e.code_string.empty()) e.code_string = ErrorField(*parsed, "status", secret, kMaxCodeBytes);
        if (e.code_string == "error") e.code_string.clear();  // Anthropic's outer `type`
      }
      if (e.code_string.empty()) e.code_string = "rate_limit_exceeded";
      return e;
    }
    case 503:
    case 529:  // Anthropic: overloaded
      return make(ErrorCode::kUnavailable, "the provider is overloaded or unavailable", true);
    default:
      break;
  }
  if (status >= 500 && status <= 599) return make(ErrorCode::kBadGateway, "the provider failed", true);
  return make(ErrorCode::kBadGateway, "unexpected status from the provider", true);
}

}  // namespace tollgate::providers::detail
