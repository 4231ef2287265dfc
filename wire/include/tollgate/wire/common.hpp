// What every codec in wire/ shares: the facts of one answer that all response
// encoders print, SSE framing, and the usage-count sanitising rule.
//
// wire/ is pure: functions from bytes to canonical values (core/chat.hpp) and
// back, no I/O, no clocks, no threads. The gateway uses the inbound decoders
// and response encoders; providers/ uses the outbound encoders and response
// decoders.
#pragma once

#include "tollgate/core/chat.hpp"
#include "tollgate/core/error.hpp"
#include "tollgate/core/money.hpp"

#include <boost/json/fwd.hpp>

#include <cstddef>
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

// Base64 with the standard alphabet and padding (RFC 4648 section 4), as
// HTTP Basic credentials (RFC 7617) and data: URLs use it.
std::string Base64(std::string_view bytes);

// Parses `text` as JSON with a depth limit of 64 (what the gateway accepts
// from callers). nullopt when it is not JSON.
std::optional<boost::json::value> ParseJson(std::string_view text);

// The deepest nesting of arrays and objects in `text` (0 for a scalar, 1 for
// `{}` or `[1]`), brackets inside strings not counted. One pass, no
// allocation, any input: text that is not JSON gets a count too (its
// brackets outside string literals), so the gateway can name the depth
// before the parser refuses the body.
int JsonNestingDepth(std::string_view text);

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

// How an inbound API spells the path of a bad field in its 400 answers:
// OpenAI's "provider.order[1]" with messages "X must be ...", or Anthropic's
// "provider.order.1" with messages "X: must be ...".
enum class ParamStyle { kOpenAi, kAnthropic };

// At most this many entries in `models` (after dropping repeats of `model`
// and of each other): bounds the work one request can ask of the router.
inline constexpr std::size_t kMaxFallbackModels = 16;
// OpenRouter's limit on `session_id` (API reference, ChatRequest.session_id).
inline constexpr std::size_t kMaxSessionIdBytes = 256;

// OpenRouter's routing fields of a request body, the same on every inbound
// API (OpenRouter accepts them on Chat Completions, Completions and its
// Anthropic Messages endpoint alike):
//   provider          the whole ProviderPreferences object
//                     (openrouter.ai/docs/features/provider-routing;
//                     @openrouter/sdk 1.3 ProviderPreferences): order, only,
//                     ignore, quantizations (arrays of strings; quantizations
//                     lower-cased), allow_fallbacks, require_parameters, zdr
//                     (booleans), data_collection ("allow" | "deny"), sort
//                     ("price" | "throughput" | "latency", or {by, partition:
//                     "model" | "none"}; "exacto", which ranks by tool-calling
//                     quality Tollgate does not measure, means the default),
//                     max_price {prompt, completion (USD per million tokens),
//                     request (USD)} as a JSON number or a decimal string,
//                     preferred_min_throughput (tokens/s) and
//                     preferred_max_latency (seconds), each a number or an
//                     object of percentile cutoffs of which p50 is used;
//                     documented fields Tollgate has no use for
//                     (enforce_distillable_text, max_price.image/.audio, the
//                     p75/p90/p99 cutoffs) and unknown ones are ignored;
//   models            fallback models (strings), in order; repeats of `model`
//                     and of each other are dropped. When `model` is
//                     `model_optional` and absent, the first entry is the model;
//   session_id        string of at most 256 bytes (prompt-cache stickiness);
//   debug.routing     boolean -> explain_routing; other `debug` keys
//                     (echo_upstream_body) are ignored.
// null counts as absent everywhere (what SDKs send for unset fields).
// max_price numbers are converted through their shortest round-trip decimal
// text (0.1 -> "0.1", never 0.1000000000000000055...), then read with
// ParsePricePerMillion / ParseUsd; digits past the 9th decimal are dropped,
// which only ever lowers a cap. A cap beyond the largest amount Tollgate
// holds (about 9.2e9 USD per million tokens, or per request; 1e20, 1e300)
// caps nothing and is left unset. Error messages quote at most 40 characters
// of the caller's number.
// `request.model` is read first (it may already be set by the caller).
// Errors: kInvalidArgument with `param` the exact path
// ("provider.max_price.prompt", "models[2]") in `style`.
std::optional<Error> DecodeRoutingFields(const boost::json::object& body, ParamStyle style, bool model_optional,
                                         ChatRequest& request);

}  // namespace tollgate::wire
