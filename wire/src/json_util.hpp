// Small helpers shared by the codecs in wire/src (internal): Boost.JSON
// accessors, request-field readers with OpenAI-style messages, base64url.
#pragma once

#include "tollgate/core/error.hpp"

#include <boost/json/array.hpp>
#include <boost/json/object.hpp>
#include <boost/json/string.hpp>
#include <boost/json/value.hpp>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

namespace tollgate::wire::detail {

inline const boost::json::object* ObjectAt(const boost::json::object& o, std::string_view key) {
  const auto* v = o.if_contains(key);
  return v != nullptr ? v->if_object() : nullptr;
}

inline const boost::json::array* ArrayAt(const boost::json::object& o, std::string_view key) {
  const auto* v = o.if_contains(key);
  return v != nullptr ? v->if_array() : nullptr;
}

// The string at `key`, or "" when absent or not a string.
inline std::string_view StringAt(const boost::json::object& o, std::string_view key) {
  const auto* v = o.if_contains(key);
  if (v == nullptr || !v->is_string()) return {};
  const auto& s = v->get_string();
  return std::string_view(s.data(), s.size());
}

inline std::string_view View(const boost::json::string& s) { return std::string_view(s.data(), s.size()); }

inline Error BadRequest(std::string message, std::string param = {}) {
  return Error{ErrorCode::kInvalidArgument, std::move(message), std::move(param), {}};
}

inline Error BadUpstream(std::string message) {
  return Error{ErrorCode::kBadGateway, std::move(message), {}, {}};
}

// ---------------------------------------------------------------- request-field readers
//
// Used by the OpenAI-shaped codecs (chat completions, Responses). Messages
// read "<param> must be ...", with `param` naming the field, e.g.
// "messages[2].content".

using Status = std::optional<Error>;  // nullopt = fine

inline Error Bad(std::string message, std::string param) {
  return BadRequest(std::move(message), std::move(param));
}

// "base[i]".
inline std::string Item(std::string_view base, std::size_t i) {
  return std::string(base) + "[" + std::to_string(i) + "]";
}

// "%g": 2 reads "2", 0.5 reads "0.5".
inline std::string Num(double d) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", d);
  return buf;
}

// The value at `key` unless absent or null (OpenAI treats null as not given,
// and SDKs send null for unset fields).
inline const boost::json::value* Present(const boost::json::object& o, std::string_view key) {
  const boost::json::value* v = o.if_contains(key);
  return v != nullptr && !v->is_null() ? v : nullptr;
}

// True when `key` is present and not null.
inline bool Has(const boost::json::object& o, std::string_view key) { return Present(o, key) != nullptr; }

// A JSON number that is an integer: int64, uint64 (saturated at INT64_MAX so
// that range checks reject it), or a double without a fraction.
inline std::optional<int64_t> AsInteger(const boost::json::value& v) {
  if (v.is_int64()) return v.get_int64();
  if (v.is_uint64()) {
    return v.get_uint64() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())
               ? std::numeric_limits<int64_t>::max()
               : static_cast<int64_t>(v.get_uint64());
  }
  if (v.is_double()) {
    const double d = v.get_double();
    if (std::isfinite(d) && d == std::trunc(d) && std::fabs(d) < 9.2e18) return static_cast<int64_t>(d);
  }
  return std::nullopt;
}

// The readers below leave `out` alone when `key` is absent or null.

inline Status ReadBool(const boost::json::object& o, std::string_view key, const std::string& param,
                       std::optional<bool>& out) {
  const boost::json::value* v = Present(o, key);
  if (v == nullptr) return {};
  if (!v->is_bool()) return Bad(param + " must be a boolean", param);
  out = v->get_bool();
  return {};
}

inline Status ReadString(const boost::json::object& o, std::string_view key, const std::string& param,
                         std::optional<std::string>& out) {
  const boost::json::value* v = Present(o, key);
  if (v == nullptr) return {};
  if (!v->is_string()) return Bad(param + " must be a string", param);
  out = std::string(View(v->get_string()));
  return {};
}

// A number in [lo, hi], or (lo, hi] when `lo_open`.
inline Status ReadNumber(const boost::json::object& o, std::string_view key, const std::string& param, double lo,
                         double hi, bool lo_open, std::optional<double>& out) {
  const boost::json::value* v = Present(o, key);
  if (v == nullptr) return {};
  if (!v->is_number()) return Bad(param + " must be a number", param);
  const double d = v->to_number<double>();
  if (!std::isfinite(d) || d < lo || d > hi) {
    return Bad(param + " must be between " + Num(lo) + " and " + Num(hi), param);
  }
  if (lo_open && d == lo) return Bad(param + " must be greater than " + Num(lo), param);
  out = d;
  return {};
}

// An integer (AsInteger) in [lo, hi]; hi == INT64_MAX reads "must be at least lo".
inline Status ReadInteger(const boost::json::object& o, std::string_view key, const std::string& param, int64_t lo,
                          int64_t hi, std::optional<int64_t>& out) {
  const boost::json::value* v = Present(o, key);
  if (v == nullptr) return {};
  const std::optional<int64_t> i = AsInteger(*v);
  if (!i) return Bad(param + " must be an integer", param);
  if (*i < lo || *i > hi) {
    std::string range = hi == std::numeric_limits<int64_t>::max()
                            ? " must be at least " + std::to_string(lo)
                            : " must be between " + std::to_string(lo) + " and " + std::to_string(hi);
    return Bad(param + range, param);
  }
  out = *i;
  return {};
}

// ---------------------------------------------------------------- base64url (common.cpp)

// RFC 4648 section 5, without padding (OpenSSL's EVP_EncodeBlock, then
// '+' -> '-', '/' -> '_', '=' dropped).
std::string Base64UrlEncode(std::string_view bytes);

// The inverse of Base64UrlEncode: nullopt for any character outside the
// base64url alphabet ('=', '+' and '/' included), a length of 4n+1, or a
// non-canonical final character (leftover bits not zero).
std::optional<std::string> Base64UrlDecode(std::string_view text);

}  // namespace tollgate::wire::detail
