// The access log: one JSON object per model call, one line each, written to
// stderr beside the gateway's other log lines (config `log.access`, default
// on). For log shippers (Vector, Fluent Bit, Loki's promtail): a line that
// starts with '{' is an access-log record.
//
// Fields (JSON types; README "Metrics and logs"):
//   "log": "access"             tells these lines from others
//   "ts": string                RFC 3339 UTC with milliseconds, when the call ended
//   "request_id": string        "gen-...": the response id and usage row key
//   "key_id", "account_id": int|null   api_keys.id / accounts.id (never the key)
//   "model": string             the catalog model id; "other" for a name the catalog lacks
//   "provider", "endpoint": string|null  display name / endpoint id of the attempt that served
//                               (or was tried last); null when no provider was asked
//   "app": string|null          the calling app (UsageEvent::app: the HTTP-Referer's origin or
//                               "title:<X-Title>"), null when none
//   "status": int               HTTP status answered (499: the client left)
//   "error_code": string|null   OpenAI error type of a failed call
//   "prompt_tokens", "completion_tokens", "cached_tokens", "cache_write_tokens",
//   "reasoning_tokens": int     what was billed (0 for a call without a usage row)
//   "usage_reported": bool      the provider reported the usage (false: Tollgate's estimate, or no row)
//   "cost_usd": number, "cost_nano_usd": int   charged (BYOK: the fee)
//   "latency_ms": int, "ttft_ms": int|null     from request received
//   "streamed": bool, "attempts": int, "byok": bool, "metered": bool (a usage row was written)
//   "reason": string            only on a refused call's line (RefusedCallLine): Tollgate's own
//                               error code ("invalid_api_key", "rate_limit_exceeded",
//                               "model_not_found", ...; Error::code_string), absent when it has none
// Every request to a call route gets exactly one line: the driver's calls
// from its observer (AccessLogLine), calls refused before any provider was
// asked (401, 400, 404, 402, 403, 413, 429, 503) from RefusedCallLine.
// Nothing else of the request is logged: no key, header (but the app
// attribution), prompt or raw model name (an unknown one is "other").
#pragma once

#include "tollgate/billing/usage_event.hpp"
#include "tollgate/core/error.hpp"

#include <cstdint>

#include <string>
#include <string_view>

namespace tollgate::gateway {

// The JSON line (without newline) of `row`, its model given as `model` (a
// catalog id or "other": Metrics::ModelLabel). `metered`: a usage row was
// written for it.
std::string AccessLogLine(const billing::UsageEvent& row, std::string_view model, bool metered);

// A call refused before any provider was asked: by the server before the
// call driver (no key, bad key, malformed body, too large, rate limited,
// shutting down) or by the driver itself (unknown model, not allowed, no
// credits, credits unavailable).
struct RefusedCall {
  std::string_view request_id;   // "gen-...", also sent as x-request-id
  int64_t key_id = 0;            // api_keys.id when the key authenticated, else 0 (logged as null)
  int64_t account_id = 0;        // its account, else 0
  std::string_view model;        // a catalog id or "other" (Metrics::ModelLabel)
  std::string_view app;          // UsageEvent::app when known, else empty
  const Error* error = nullptr;  // why (status, type, reason); never null
  int64_t latency_ms = 0;        // from request received
  bool streamed = false;         // the request asked for a stream
};

// The JSON line (without newline) of a refused call: AccessLogLine's fields
// (no provider, tokens or cost; metered false) plus "reason".
std::string RefusedCallLine(const RefusedCall& call);

// Writes `line` and a newline to stderr in one write(2), so lines of
// concurrent calls never interleave. Thread-safe.
void WriteLogLine(std::string_view line);

}  // namespace tollgate::gateway
