#include "app_attribution.hpp"

#include "tollgate/core/text.hpp"

#include <cctype>
#include <limits>

namespace tollgate::gateway {
namespace {

bool IsSpace(char c) { return c == ' '; }  // tabs are controls, dropped before

std::string Trim(std::string s) {
  size_t a = 0, b = s.size();
  while (a < b && IsSpace(s[a])) ++a;
  while (b > a && IsSpace(s[b - 1])) --b;
  return s.substr(a, b - a);
}

std::string Lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

bool IsHostChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '-' ||
         c == '_';
}

// The origin of an http(s) URL (RFC 3986 section 3 for the parts, RFC 6454
// section 6.2 for the serialisation), or "" when `url` is not one: another
// scheme, no host, a host with other characters than ASCII letters, digits,
// '.', '-', '_' (or an IPv6 literal of hex digits, ':' and '.'), a port that
// is not 1..65535. User info before '@' is never part of the result.
std::string Origin(std::string_view url) {
  const std::string lower = Lower(url.substr(0, 8));
  std::string scheme;
  if (lower.starts_with("https://")) {
    scheme = "https";
  } else if (lower.starts_with("http://")) {
    scheme = "http";
  } else {
    return "";
  }
  std::string_view rest = url.substr(scheme.size() + 3);
  std::string_view authority = rest.substr(0, rest.find_first_of("/?#\\"));
  if (size_t at = authority.rfind('@'); at != std::string_view::npos) authority.remove_prefix(at + 1);
  std::string_view host = authority, port;
  if (authority.starts_with('[')) {  // IPv6 literal
    size_t close = authority.find(']');
    if (close == std::string_view::npos || close == 1) return "";
    host = authority.substr(0, close + 1);
    std::string_view after = authority.substr(close + 1);
    if (!after.empty()) {
      if (after[0] != ':') return "";
      port = after.substr(1);
    }
    for (char c : host.substr(1, host.size() - 2)) {
      if (!std::isxdigit(static_cast<unsigned char>(c)) && c != ':' && c != '.') return "";
    }
  } else {
    if (size_t colon = authority.find(':'); colon != std::string_view::npos) {
      host = authority.substr(0, colon);
      port = authority.substr(colon + 1);
    }
    if (host.empty() || host.size() > 253) return "";
    for (char c : host) {
      if (!IsHostChar(c)) return "";
    }
  }
  // An empty port (RFC 3986 "https://host:/") is the default one.
  unsigned port_number = 0;
  if (!port.empty()) {
    if (port.size() > 5) return "";
    for (char c : port) {
      if (c < '0' || c > '9') return "";
      port_number = port_number * 10 + static_cast<unsigned>(c - '0');
    }
    if (port_number < 1 || port_number > 65535) return "";
  }
  std::string origin = scheme + "://" + Lower(host);
  const bool default_port =
      port_number == 0 || (scheme == "http" && port_number == 80) || (scheme == "https" && port_number == 443);
  if (!default_port) origin += ":" + std::to_string(port_number);
  return origin;
}

// `s` (valid UTF-8) cut to at most max_bytes on a character boundary.
std::string CutUtf8(std::string s, size_t max_bytes) {
  if (s.size() > max_bytes) s.resize(CompleteUtf8Prefix(std::string_view(s).substr(0, max_bytes)));
  return s;
}

}  // namespace

std::string CleanHeaderText(std::string_view value, size_t max_bytes) {
  // Well-formed first (bytes that are not UTF-8 become U+FFFD): PostgreSQL
  // refuses text that is not, and the usage row must not be refused.
  const std::string valid = ValidUtf8(value);
  std::string out;
  out.reserve(valid.size());
  for (size_t i = 0; i < valid.size(); ++i) {
    const auto c = static_cast<unsigned char>(valid[i]);
    if (c < 0x20 || c == 0x7F) continue;  // C0 and DEL
    // C1 (U+0080..U+009F: C2 80..C2 9F); a continuation byte is never
    // taken for a lead here, as `valid` is well-formed.
    if (c == 0xC2 && i + 1 < valid.size() && static_cast<unsigned char>(valid[i + 1]) < 0xA0) {
      ++i;
      continue;
    }
    out.push_back(valid[i]);
  }
  return Trim(CutUtf8(Trim(std::move(out)), max_bytes));
}

AppAttribution AppFromHeaders(std::string_view referer, std::string_view title) {
  AppAttribution a;
  a.app_title = CleanHeaderText(title);
  // Only ever an origin: the rest of a referer (path, query, user info) can
  // hold secrets, and the app id is shown to other keys (app rankings). The
  // whole referer is parsed (a cut could shorten its port); an origin longer
  // than kMaxAppBytes counts as none (a cut one would be another origin).
  const std::string origin = Origin(CleanHeaderText(referer, std::numeric_limits<size_t>::max()));
  if (!origin.empty() && origin.size() <= kMaxAppBytes) {
    a.app = origin;
  } else if (!a.app_title.empty()) {
    a.app = CutUtf8("title:" + a.app_title, kMaxAppBytes);
  }
  return a;
}

}  // namespace tollgate::gateway
