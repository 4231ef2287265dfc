// App attribution: which app made a call, from the headers OpenRouter reads
// for its app rankings (openrouter.ai/docs/app-attribution, 2026-12:
// `HTTP-Referer` is the app's URL, `X-Title` (also `X-OpenRouter-Title`) its
// display name). Stored on every usage row (usage_events.app, app_title) and
// keyed on by the rollups (migrations/006_stats.sql). Pure: no I/O, no Beast.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace tollgate::gateway {

struct AppAttribution {
  // The app id: the referer's origin when it is an http(s) URL with a valid
  // host and port (RFC 6454 section 6.2 serialisation, lowercased: scheme,
  // host of ASCII letters, digits, '.', '-', '_' or an IPv6 literal, port
  // 1..65535 unless the scheme's default: "https://example.com",
  // "http://localhost:3000"). Never anything else of the referer: user info
  // ("user:pass@") is stripped, path, query and fragment too, and a referer
  // that yields no valid origin (another scheme, odd host characters, a bad
  // port, no URL at all) contributes nothing, since the app id is shown to
  // other keys (app rankings) and a referer can carry secrets. Without an
  // origin: "title:<app_title>"; empty when neither header gave anything.
  std::string app;
  std::string app_title;  // X-Title (else X-OpenRouter-Title); empty = none
  friend bool operator==(const AppAttribution&, const AppAttribution&) = default;
};

// Longest stored app id and title, in bytes.
inline constexpr size_t kMaxAppBytes = 200;

// The attribution of a call from its raw header values (empty = absent).
// Each value is cleaned before use: bytes that are not valid UTF-8 replaced
// by U+FFFD (ValidUtf8, core/text.hpp), control characters (C0 incl. tab,
// DEL, C1) dropped, leading and trailing spaces trimmed, cut to kMaxAppBytes on a UTF-8 character boundary (so a row never
// holds a half character, which PostgreSQL would refuse). `title` is the
// X-Title value when the caller sent one, else X-OpenRouter-Title's.
AppAttribution AppFromHeaders(std::string_view referer, std::string_view title);

// The cleaning AppFromHeaders applies, with the byte limit `max_bytes`.
std::string CleanHeaderText(std::string_view value, size_t max_bytes = kMaxAppBytes);

}  // namespace tollgate::gateway
