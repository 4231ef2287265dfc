// Small Boost.JSON helpers shared by the codecs in wire/src (internal).
#pragma once

#include "tollgate/core/error.hpp"

#include <boost/json/array.hpp>
#include <boost/json/object.hpp>
#include <boost/json/string.hpp>
#include <boost/json/value.hpp>

#include <string>
#include <string_view>

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

// True when `key` is present and not null.
inline bool Has(const boost::json::object& o, std::string_view key) {
  const auto* v = o.if_contains(key);
  return v != nullptr && !v->is_null();
}

inline Error BadRequest(std::string message, std::string param = {}) {
  return Error{ErrorCode::kInvalidArgument, std::move(message), std::move(param), {}};
}

inline Error BadUpstream(std::string message) {
  return Error{ErrorCode::kBadGateway, std::move(message), {}, {}};
}

}  // namespace tollgate::wire::detail
