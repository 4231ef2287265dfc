// What every codec in wire/ shares: the facts of one answer that all response
// encoders print, SSE framing, and the usage-count sanitising rule.
//
// wire/ is pure: functions from bytes to canonical values (core/chat.hpp) and
// back, no I/O, no clocks, no threads. The gateway uses the inbound decoders
// and response encoders; providers/ uses the outbound encoders and response
// decoders.
#pragma once

#include "tollgate/core/chat.hpp"
#include "tollgate/core/money.hpp"

#include <boost/json/fwd.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace tollgate::wire {

// What the gateway's answers to one call share.
struct ResponseMeta {
  std::string id;        // "gen-..." (OpenAI shapes) or "msg_..." (Anthropic shape)
  int64_t created = 0;   // unix seconds
  std::string model;     // the slug the caller asked for
  std::string provider;  // display name of the provider that served it ("OpenAI"), OpenRouter's `provider`
};

// One SSE event: "data: DATA\n\n", or "event: TYPE\ndata: DATA\n\n" when
// `type` is not empty (WHATWG HTML 9.2.6). DATA must not contain CR or LF
// (serialized JSON never does).
std::string SseFrame(std::string_view data, std::string_view type = {});

// Usage sanitising. Token counts come from an upstream we do not control and
// are billed as they are (core/money.hpp). An upstream must never be able to
// mint credit or overflow billing, so each count read from a JSON value is:
//   - a JSON integer: clamped into [0, kMaxUsageTokens] (negative -> 0; a
//     uint64 above INT64_MAX, e.g. 2^64-1, -> kMaxUsageTokens);
//   - a JSON number with a fraction or exponent: truncated toward zero, then
//     clamped the same way;
//   - anything else (string, bool, null, object) or missing: nullopt.
// 10^12 tokens is far above any real call, yet a million such calls still sum
// well inside int64.
inline constexpr int64_t kMaxUsageTokens = 1'000'000'000'000;
std::optional<int64_t> TokenCount(const boost::json::value* value);

// After reading: parts never exceed their wholes (cached + cache_write <=
// prompt, reasoning <= completion), so no discount goes below zero.
void ClampUsage(Usage& usage);

// A tool-call id for providers that give none (Gemini): "call_" + 24 random
// base62 characters (CSPRNG).
std::string NewToolCallId();

// Parses `text` as JSON with a depth limit of 64 (what the gateway accepts
// from callers). nullopt when it is not JSON.
std::optional<boost::json::value> ParseJson(std::string_view text);

// The same for an upstream's body or stream chunk, with invalid UTF-8 inside
// strings allowed: a server that splits a character between two chunks sends
// each half as invalid bytes. The decoders join the halves (Utf8Stitcher) and
// pass what they emit through ValidUtf8 (core/text.hpp).
std::optional<boost::json::value> ParseUpstreamJson(std::string_view text);

// A data URI (RFC 2397: "data:[<mediatype>][;base64],<data>"), with its
// payload as base64 (a percent-encoded payload is decoded and re-encoded).
// The media type defaults to "text/plain" (RFC 2397 section 2). nullopt when
// `url` is not a data URI.
struct DataUri {
  std::string media_type;
  std::string base64;
};
std::optional<DataUri> ParseDataUri(std::string_view url);

}  // namespace tollgate::wire
