#include "tollgate/wire/common.hpp"

#include "tollgate/core/text.hpp"

#include <boost/json/parse.hpp>
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

std::optional<boost::json::value> ParseJson(std::string_view text) {
  boost::json::parse_options options;
  options.max_depth = 64;
  boost::system::error_code ec;
  boost::json::value v = boost::json::parse(text, ec, {}, options);
  if (ec) return std::nullopt;
  return v;
}

}  // namespace tollgate::wire
