#include "tollgate/wire/common.hpp"

#include "tollgate/core/text.hpp"

#include "json_util.hpp"

#include <boost/json/parse.hpp>
#include <boost/url/pct_string_view.hpp>
#include <openssl/evp.h>
#include <boost/json/value.hpp>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <limits>
#include <set>

namespace tollgate::wire {

std::string SseFrame(std::string_view data, std::string_view type) {
  std::string out;
  out.reserve(data.size() + type.size() + 16);
  if (!type.empty()) {
    out += "event: ";
    out += type;
    out += '\n';
  }
  out += "data: ";
  out += data;
  out += "\n\n";
  return out;
}

std::optional<int64_t> TokenCount(const boost::json::value* v) {
  if (v == nullptr) return std::nullopt;
  if (v->is_int64()) return std::clamp<int64_t>(v->get_int64(), 0, kMaxUsageTokens);
  if (v->is_uint64()) {  // only values above INT64_MAX parse as uint64
    return v->get_uint64() > static_cast<uint64_t>(kMaxUsageTokens) ? kMaxUsageTokens
                                                                     : static_cast<int64_t>(v->get_uint64());
  }
  if (v->is_double()) {
    const double d = v->get_double();
    if (!(d > 0)) return 0;  // negative, -0 (and NaN, which JSON cannot carry)
    if (d >= static_cast<double>(kMaxUsageTokens)) return kMaxUsageTokens;
    return static_cast<int64_t>(d);  // truncates toward zero
  }
  return std::nullopt;
}

void ClampUsage(Usage& u) {
  auto clamp = [](int64_t v) { return std::clamp<int64_t>(v, 0, kMaxUsageTokens); };
  u.prompt_tokens = clamp(u.prompt_tokens);
  u.completion_tokens = clamp(u.completion_tokens);
  u.cached_tokens = std::min(clamp(u.cached_tokens), u.prompt_tokens);
  u.cache_write_tokens = std::min(clamp(u.cache_write_tokens), u.prompt_tokens - u.cached_tokens);
  u.reasoning_tokens = std::min(clamp(u.reasoning_tokens), u.completion_tokens);
}

std::string NewToolCallId() { return "call_" + RandomBase62(24); }

std::string Base64(std::string_view bytes) {
  // EVP_EncodeBlock writes 4 characters per 3 bytes (rounded up) plus a NUL.
  std::string out(4 * ((bytes.size() + 2) / 3) + 1, '\0');
  const int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                                reinterpret_cast<const unsigned char*>(bytes.data()), static_cast<int>(bytes.size()));
  out.resize(static_cast<std::size_t>(n));
  return out;
}

int JsonNestingDepth(std::string_view text) {
  int depth = 0;
  int deepest = 0;
  bool in_string = false;
  for (std::size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (in_string) {
      if (c == '\\') {
        ++i;  // the escaped character, '"' included
      } else if (c == '"') {
        in_string = false;
      }
    } else if (c == '"') {
      in_string = true;
    } else if (c == '{' || c == '[') {
      deepest = std::max(deepest, ++depth);
    } else if ((c == '}' || c == ']') && depth > 0) {
      --depth;
    }
  }
  return deepest;
}

namespace {

std::optional<boost::json::value> Parse(std::string_view text, bool allow_invalid_utf8) {
  boost::json::parse_options options;
  options.max_depth = 64;
  options.allow_invalid_utf8 = allow_invalid_utf8;
  boost::system::error_code ec;
  boost::json::value v = boost::json::parse(text, ec, {}, options);
  if (ec) return std::nullopt;
  return v;
}

bool StartsWithIgnoreCase(std::string_view text, std::string_view lower_prefix) {
  if (text.size() < lower_prefix.size()) return false;
  for (std::size_t i = 0; i < lower_prefix.size(); ++i) {
    char c = text[i];
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
    if (c != lower_prefix[i]) return false;
  }
  return true;
}

}  // namespace

// ---------------------------------------------------------------- base64url

namespace detail {

std::string Base64UrlEncode(std::string_view bytes) {
  std::string out = Base64(bytes);
  while (!out.empty() && out.back() == '=') out.pop_back();
  for (char& c : out) {
    if (c == '+') c = '-';
    else if (c == '/') c = '_';
  }
  return out;
}

std::optional<std::string> Base64UrlDecode(std::string_view text) {
  // EVP_DecodeBlock takes an int length.
  if (text.size() % 4 == 1 || text.size() > static_cast<std::size_t>(std::numeric_limits<int>::max() - 3)) {
    return std::nullopt;
  }
  std::string padded(text);
  for (char& c : padded) {
    if (c == '-') c = '+';
    else if (c == '_') c = '/';
    else if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'))) return std::nullopt;
  }
  // A canonical encoding leaves the bits after the last byte zero: the last
  // character carries 4 of them in a 2-character group, 2 in a 3-character one.
  if (const std::size_t rest = text.size() % 4; rest != 0) {
    const char last = padded.back();
    const int value = last >= 'A' && last <= 'Z'   ? last - 'A'
                      : last >= 'a' && last <= 'z' ? last - 'a' + 26
                      : last >= '0' && last <= '9' ? last - '0' + 52
                      : last == '+'                ? 62
                                                   : 63;
    if ((value & (rest == 2 ? 0x0F : 0x03)) != 0) return std::nullopt;
  }
  const std::size_t pad = (4 - text.size() % 4) % 4;
  padded.append(pad, '=');
  // EVP_DecodeBlock writes 3 bytes per 4 characters, padding counted as zero bytes.
  std::string out(padded.size() / 4 * 3, '\0');
  const int n = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                                reinterpret_cast<const unsigned char*>(padded.data()), static_cast<int>(padded.size()));
  if (n < 0 || static_cast<std::size_t>(n) < pad) return std::nullopt;
  out.resize(static_cast<std::size_t>(n) - pad);
  return out;
}

}  // namespace detail

std::optional<boost::json::value> ParseJson(std::string_view text) { return Parse(text, false); }

std::optional<boost::json::value> ParseUpstreamJson(std::string_view text) { return Parse(text, true); }

std::optional<DataUri> ParseDataUri(std::string_view url) {
  if (!StartsWithIgnoreCase(url, "data:")) return std::nullopt;
  const std::size_t comma = url.find(',');
  if (comma == std::string_view::npos) return std::nullopt;
  std::string_view header = url.substr(5, comma - 5);
  const std::string_view payload = url.substr(comma + 1);
  constexpr std::string_view kBase64 = ";base64";
  const bool base64 = header.size() >= kBase64.size() &&
                      StartsWithIgnoreCase(header.substr(header.size() - kBase64.size()), kBase64);
  if (base64) header.remove_suffix(kBase64.size());
  DataUri out;
  out.media_type = std::string(header.substr(0, header.find(';')));
  if (out.media_type.empty()) out.media_type = "text/plain";
  if (base64) {
    out.base64 = std::string(payload);
  } else {
    auto pct = boost::urls::make_pct_string_view(payload);
    out.base64 = Base64(pct ? pct->decode() : std::string(payload));
  }
  return out;
}

// ---------------------------------------------------------------- routing fields

namespace {

namespace json = boost::json;
using detail::Present;
using detail::Status;
using detail::View;

// Paths and messages in the caller's API's own style.
class Paths {
 public:
  explicit Paths(ParamStyle style) : style_(style) {}

  std::string Item(std::string_view base, std::size_t i) const {
    return style_ == ParamStyle::kOpenAi ? std::string(base) + "[" + std::to_string(i) + "]"
                                         : std::string(base) + "." + std::to_string(i);
  }
  // `what` reads after the path: "must be a string".
  Error Bad(const std::string& param, std::string_view what) const {
    std::string message = param + (style_ == ParamStyle::kOpenAi ? " " : ": ");
    message += what;
    return detail::BadRequest(std::move(message), param);
  }

 private:
  ParamStyle style_;
};

Status ReadFlag(const json::object& o, std::string_view key, const std::string& param, const Paths& paths,
                bool& out) {
  const json::value* v = Present(o, key);
  if (v == nullptr) return {};
  if (!v->is_bool()) return paths.Bad(param, "must be a boolean");
  out = v->get_bool();
  return {};
}

Status ReadNames(const json::object& o, std::string_view key, const std::string& param, const Paths& paths,
                 bool lower, std::vector<std::string>& out) {
  const json::value* v = Present(o, key);
  if (v == nullptr) return {};
  if (!v->is_array()) return paths.Bad(param, "must be an array of strings");
  const json::array& items = v->get_array();
  out.clear();
  out.reserve(items.size());
  for (std::size_t i = 0; i < items.size(); ++i) {
    if (!items[i].is_string()) return paths.Bad(paths.Item(param, i), "must be a string");
    std::string name(View(items[i].get_string()));
    if (lower) {
      std::transform(name.begin(), name.end(), name.begin(),
                     [](char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; });
    }
    out.push_back(std::move(name));
  }
  return {};
}

// A JSON number or decimal string as plain decimal text. A double goes
// through its shortest round-trip fixed-point text (std::to_chars without a
// precision), so 0.1 reads "0.1" and 1e-7 reads "0.0000001": what the caller
// wrote, not the binary value's long expansion. nullopt for other types.
std::optional<std::string> DecimalText(const json::value& v) {
  if (v.is_string()) return std::string(View(v.get_string()));
  if (v.is_int64()) return std::to_string(v.get_int64());
  if (v.is_uint64()) return std::to_string(v.get_uint64());
  if (v.is_double()) {
    const double d = v.get_double();
    if (d == 0) return std::string("0");  // -0 too
    char buf[512];  // the largest double, 1.8e308, is 309 digits in fixed notation
    auto [end, ec] = std::to_chars(buf, buf + sizeof buf, d, std::chars_format::fixed);
    if (ec != std::errc()) return std::string(d < 0 ? "-" : "") + std::string(400, '9');  // never happens
    return std::string(buf, end);
  }
  return std::nullopt;
}

// Drops decimals past the 9th (nano-USD, or femto-USD per token), which only
// lowers a cap. A tail that is not all digits is left for the parser to reject.
std::string TruncateDecimals(std::string text) {
  const std::size_t dot = text.find('.');
  if (dot == std::string::npos || text.size() - dot - 1 <= 9) return text;
  const std::string_view tail = std::string_view(text).substr(dot + 10);
  if (!std::all_of(tail.begin(), tail.end(), [](char c) { return c >= '0' && c <= '9'; })) return text;
  text.resize(dot + 10);
  return text;
}

// At most this much of a caller's number goes back in an error message.
constexpr std::size_t kMaxEchoedChars = 40;

std::string Abridged(const std::string& text) {
  if (text.size() <= kMaxEchoedChars) return text;
  return text.substr(0, kMaxEchoedChars - 3) + "...";
}

// True when `text` is a plain non-negative decimal ("123", "4.5") whose value,
// scaled by 10^9, is beyond int64: a cap above any price Tollgate can hold
// (about 9.2e9 USD per million tokens, or per request), which caps nothing.
bool BeyondLargestCap(std::string_view text) {
  const std::size_t dot = text.find('.');
  const std::string_view whole = text.substr(0, dot);
  const std::string_view frac = dot == std::string_view::npos ? std::string_view{} : text.substr(dot + 1);
  auto digits = [](std::string_view s) {
    return std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
  };
  if (whole.empty() || !digits(whole) || (dot != std::string_view::npos && (frac.empty() || !digits(frac)))) {
    return false;
  }
  __int128 value = 0;
  for (char c : whole) {
    value = value * 10 + (c - '0');
    if (value > INT64_MAX) return true;  // stops before __int128 could overflow
  }
  for (std::size_t i = 0; i < 9; ++i) {
    value = value * 10 + (i < frac.size() ? frac[i] - '0' : 0);
    if (value > INT64_MAX) return true;
  }
  return false;
}

// max_price.prompt / .completion (USD per million tokens -> femto-USD per
// token) and .request (USD -> nano-USD). A cap beyond the largest
// representable amount leaves `out` empty: no cap.
Status ReadMaxPrice(const json::object& o, std::string_view key, const std::string& param, const Paths& paths,
                    bool per_request, std::optional<int64_t>& out) {
  const json::value* v = Present(o, key);
  if (v == nullptr) return {};
  const std::string_view unit = per_request ? "USD per request" : "USD per million tokens";
  std::optional<std::string> text = DecimalText(*v);
  if (!text) {
    return paths.Bad(param, "must be a number (" + std::string(unit) + ") or a decimal string");
  }
  const std::string decimal = TruncateDecimals(*text);
  if (BeyondLargestCap(decimal)) {
    out.reset();
    return {};
  }
  if (per_request) {
    Result<Money> usd = ParseUsd(decimal);
    if (!usd) {
      return paths.Bad(param,
                       "must be a non-negative amount of " + std::string(unit) + " ('" + Abridged(*text) + "')");
    }
    out = usd->nano_usd;
  } else {
    Result<TokenPrice> price = ParsePricePerMillion(decimal);
    if (!price) {
      return paths.Bad(param, "must be a non-negative price in " + std::string(unit) + " ('" + Abridged(*text) + "')");
    }
    out = price->femto_usd_per_token;
  }
  return {};
}

// preferred_min_throughput / preferred_max_latency: a number (the p50 cutoff)
// or {p50, p75, p90, p99}, of which Tollgate's live figures (medians) can
// only be held against p50.
Status ReadCutoff(const json::object& o, std::string_view key, const std::string& param, const Paths& paths,
                  std::optional<double>& out) {
  const json::value* v = Present(o, key);
  if (v == nullptr) return {};
  auto number = [&](const json::value& n, const std::string& p) -> Status {
    const double d = n.to_number<double>();
    if (!std::isfinite(d) || d < 0) return paths.Bad(p, "must be a non-negative number");
    out = d;
    return {};
  };
  if (v->is_number()) return number(*v, param);
  if (!v->is_object()) return paths.Bad(param, "must be a number or an object of percentile cutoffs (p50, ...)");
  for (std::string_view p : {"p50", "p75", "p90", "p99"}) {
    const json::value* cutoff = Present(v->get_object(), p);
    if (cutoff != nullptr && !cutoff->is_number()) return paths.Bad(param + "." + std::string(p), "must be a number");
  }
  if (const json::value* p50 = Present(v->get_object(), "p50")) return number(*p50, param + ".p50");
  return {};
}

Status ReadSortBy(const json::value& v, const std::string& param, const Paths& paths,
                  ProviderPreferences::Sort& out) {
  const std::string_view by = v.is_string() ? View(v.get_string()) : std::string_view{};
  if (by == "price") {
    out = ProviderPreferences::Sort::kPrice;
  } else if (by == "throughput") {
    out = ProviderPreferences::Sort::kThroughput;
  } else if (by == "latency") {
    out = ProviderPreferences::Sort::kLatency;
  } else if (by == "exacto") {
    // OpenRouter ranks by measured tool-calling quality; Tollgate measures
    // none, so the model's own strategy decides.
    out = ProviderPreferences::Sort::kDefault;
  } else {
    return paths.Bad(param, "must be one of price, throughput, latency");
  }
  return {};
}

Status DecodeProvider(const json::value& value, const Paths& paths, ProviderPreferences& out) {
  if (!value.is_object()) return paths.Bad("provider", "must be an object");
  const json::object& o = value.get_object();
  if (auto e = ReadNames(o, "order", "provider.order", paths, false, out.order)) return e;
  if (auto e = ReadFlag(o, "allow_fallbacks", "provider.allow_fallbacks", paths, out.allow_fallbacks)) return e;
  if (auto e = ReadFlag(o, "require_parameters", "provider.require_parameters", paths, out.require_parameters)) {
    return e;
  }
  if (const json::value* v = Present(o, "data_collection")) {
    const std::string_view policy = v->is_string() ? View(v->get_string()) : std::string_view{};
    if (policy != "allow" && policy != "deny") {
      return paths.Bad("provider.data_collection", "must be \"allow\" or \"deny\"");
    }
    out.deny_data_collection = policy == "deny";
  }
  if (auto e = ReadFlag(o, "zdr", "provider.zdr", paths, out.zdr)) return e;
  if (auto e = ReadNames(o, "only", "provider.only", paths, false, out.only)) return e;
  if (auto e = ReadNames(o, "ignore", "provider.ignore", paths, false, out.ignore)) return e;
  if (auto e = ReadNames(o, "quantizations", "provider.quantizations", paths, true, out.quantizations)) return e;
  if (const json::value* v = Present(o, "sort")) {
    if (v->is_string()) {
      if (auto e = ReadSortBy(*v, "provider.sort", paths, out.sort)) return e;
    } else if (v->is_object()) {
      const json::object& sort = v->get_object();
      if (const json::value* by = Present(sort, "by")) {
        if (auto e = ReadSortBy(*by, "provider.sort.by", paths, out.sort)) return e;
      }
      if (const json::value* partition = Present(sort, "partition")) {
        const std::string_view p = partition->is_string() ? View(partition->get_string()) : std::string_view{};
        if (p == "model") {
          out.partition = ProviderPreferences::Partition::kModel;
        } else if (p == "none") {
          out.partition = ProviderPreferences::Partition::kNone;
        } else {
          return paths.Bad("provider.sort.partition", "must be \"model\" or \"none\"");
        }
      }
    } else {
      return paths.Bad("provider.sort", "must be a string (price, throughput, latency) or an object {by, partition}");
    }
  }
  if (const json::value* v = Present(o, "max_price")) {
    if (!v->is_object()) return paths.Bad("provider.max_price", "must be an object");
    const json::object& max = v->get_object();
    if (auto e = ReadMaxPrice(max, "prompt", "provider.max_price.prompt", paths, false, out.max_prompt_price)) return e;
    if (auto e = ReadMaxPrice(max, "completion", "provider.max_price.completion", paths, false,
                              out.max_completion_price)) {
      return e;
    }
    if (auto e = ReadMaxPrice(max, "request", "provider.max_price.request", paths, true, out.max_request_price)) {
      return e;
    }
  }
  if (auto e = ReadCutoff(o, "preferred_min_throughput", "provider.preferred_min_throughput", paths,
                          out.preferred_min_throughput)) {
    return e;
  }
  if (auto e = ReadCutoff(o, "preferred_max_latency", "provider.preferred_max_latency", paths,
                          out.preferred_max_latency_s)) {
    return e;
  }
  return {};
}

Status DecodeModels(const json::value& value, const Paths& paths, bool model_optional, ChatRequest& request) {
  if (!value.is_array()) return paths.Bad("models", "must be an array of model ids");
  const json::array& items = value.get_array();
  std::set<std::string_view> seen;
  if (!request.model.empty()) seen.insert(request.model);
  std::vector<std::string> models;
  for (std::size_t i = 0; i < items.size(); ++i) {
    const std::string param = paths.Item("models", i);
    if (!items[i].is_string() || items[i].get_string().empty()) return paths.Bad(param, "must be a non-empty string");
    const std::string_view id = View(items[i].get_string());
    if (request.model.empty() && model_optional) {
      request.model = std::string(id);  // `models` alone: its first entry is the model
      seen.insert(id);
      continue;
    }
    if (!seen.insert(id).second) continue;
    models.emplace_back(id);
  }
  if (models.size() > kMaxFallbackModels) {
    return paths.Bad("models", "takes at most " + std::to_string(kMaxFallbackModels) + " fallback models");
  }
  request.fallback_models = std::move(models);
  return {};
}

}  // namespace

std::optional<Error> DecodeRoutingFields(const json::object& body, ParamStyle style, bool model_optional,
                                         ChatRequest& request) {
  const Paths paths(style);
  if (const json::value* v = Present(body, "provider")) {
    if (auto e = DecodeProvider(*v, paths, request.provider)) return e;
  }
  if (const json::value* v = Present(body, "models")) {
    if (auto e = DecodeModels(*v, paths, model_optional, request)) return e;
  }
  if (const json::value* v = Present(body, "session_id")) {
    if (!v->is_string()) return paths.Bad("session_id", "must be a string");
    if (v->get_string().size() > kMaxSessionIdBytes) {
      return paths.Bad("session_id", "must be at most " + std::to_string(kMaxSessionIdBytes) + " characters");
    }
    request.session_id = std::string(View(v->get_string()));
  }
  if (const json::value* v = Present(body, "debug")) {
    if (!v->is_object()) return paths.Bad("debug", "must be an object");
    if (auto e = ReadFlag(v->get_object(), "routing", "debug.routing", paths, request.explain_routing)) return e;
  }
  return {};
}

}  // namespace tollgate::wire
