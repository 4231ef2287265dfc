#include "tollgate/wire/common.hpp"

#include "tollgate/core/text.hpp"

#include <boost/json/parse.hpp>
#include <boost/url/pct_string_view.hpp>
#include <openssl/evp.h>
#include <boost/json/value.hpp>

#include <algorithm>

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

std::string Base64(std::string_view bytes) {
  // EVP_EncodeBlock writes 4 characters per 3 bytes (rounded up) plus a NUL.
  std::string out(4 * ((bytes.size() + 2) / 3) + 1, '\0');
  const int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                                reinterpret_cast<const unsigned char*>(bytes.data()), static_cast<int>(bytes.size()));
  out.resize(static_cast<std::size_t>(n));
  return out;
}

}  // namespace

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

}  // namespace tollgate::wire
