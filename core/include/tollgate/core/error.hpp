// Error values on the request path and their OpenAI-shaped rendering.
//
// Failures on the request path are values: `Result<T>` holds either a T or an
// `Error`. Codes follow Abseil's canonical status codes (absl/status/status.h),
// plus two HTTP-specific ones (kPayloadTooLarge, kPaymentRequired), so that each
// code maps to exactly one HTTP status and one retry decision.
//
// Wire shapes:
//   OpenAI (API reference, "Error codes"; ARCHITECTURE.md), served under /v1:
//     {"error": {"message": str, "type": str, "code": str|null, "param": str|null}}
//   OpenRouter (openrouter.ai/docs/api/errors; the ErrorResponse schema of
//   @openrouter/sdk 1.3, which requires an integer code), served under /api/v1:
//     {"error": {"message": str, "type": str, "code": int (HTTP status),
//                "param": str|null, "metadata"?: {"reason": str}}}
//   Both carry message, type and param, so OpenAI clients read either.
//   Anthropic (docs.anthropic.com/en/api/errors), served for /v1/messages:
//     {"type": "error", "error": {"type": str, "message": str}}
//   with type invalid_request_error (400), authentication_error (401),
//   billing_error (402), permission_error (403), not_found_error (404),
//   request_too_large (413), rate_limit_error (429), api_error (500),
//   timeout_error (504), overloaded_error (529); others map to the nearest.
//   An error caused by an upstream also names it, as OpenRouter does
//   ("Provider returned error" bodies, WIRE-FORMATS.md 3.4): the OpenAI and
//   OpenRouter shapes add "metadata": {"provider_name": str}.
#pragma once

#include <boost/system/result.hpp>

#include <string>
#include <string_view>

namespace tollgate {

enum class ErrorCode {
  kInvalidArgument,     // 400: malformed JSON, bad field, unknown model
  kUnauthenticated,     // 401: missing, unknown or revoked API key
  kPaymentRequired,     // 402: key out of credits
  kPermissionDenied,    // 403
  kNotFound,            // 404: unknown route, unknown generation id
  kDeadlineExceeded,    // 408: the caller's own deadline passed
  kConflict,            // 409: the state forbids it now (an idempotency key reused with other values)
  kPayloadTooLarge,     // 413: body over the configured limit
  kResourceExhausted,   // 429: rate limited (ours or upstream's)
  kCancelled,           // 499: client closed the request
  kInternal,            // 500: broken invariant
  kBadGateway,          // 502: upstream answered garbage or an error we cannot pass on
  kUnavailable,         // 503: no endpoint can serve the model; upstream 5xx / connect failure
  kUpstreamTimeout,     // 504: upstream connect/first-byte timeout, or the model did not
                        //      finish within server.request_timeout_ms
};

struct Error {
  ErrorCode code = ErrorCode::kInternal;
  std::string message;  // human-readable; never contains secrets
  std::string param;    // offending request field ("messages", "model"), or empty
  // Machine-readable OpenAI `error.code` string ("model_not_found",
  // "invalid_api_key"), or empty to render null.
  std::string code_string;
  // An upstream's `Retry-After` (seconds or an HTTP date, as sent; printable,
  // short), passed on as our own Retry-After header. Empty = none.
  std::string retry_after;
  // Display name of the provider whose failure this is ("OpenAI"), or empty
  // for Tollgate's own errors. Never a host name.
  std::string provider_name;
  // The HTTP status when it is not HttpStatus(code): the server's request
  // limits answer 408, 414 and 431 with kInvalidArgument's body. 0 = none.
  int status = 0;
};

// Error::code_string of a provider's error when the upstream refused the API
// key it was sent (HTTP 401/403): the gateway tells a caller whose own key
// (BYOK) that was.
inline constexpr std::string_view kProviderCredentialsRejected = "provider_credentials_rejected";

// HTTP status for a code (400, 401, 402, 403, 404, 408, 409, 413, 429, 499, 500, 502, 503, 504).
int HttpStatus(ErrorCode code);

// OpenAI `error.type` for a code: "invalid_request_error", "authentication_error",
// "insufficient_quota", "permission_error", "not_found_error", "conflict_error", "rate_limit_error",
// "timeout_error", "api_error", "upstream_error", "service_unavailable", "request_cancelled".
std::string_view ErrorType(ErrorCode code);

// True when another endpoint may be tried for the same call (before any byte
// reached the client): kUnavailable, kUpstreamTimeout, kBadGateway, kResourceExhausted.
bool IsRetryable(ErrorCode code);

enum class ErrorFlavor { kOpenAi, kOpenRouter, kAnthropic };

// The JSON text `{"error":{...}}` for `error` in the given flavor (shapes
// above). Never throws.
std::string ErrorBody(const Error& error, ErrorFlavor flavor = ErrorFlavor::kOpenAi);

// Anthropic `error.type` for a code (see the file comment).
std::string_view AnthropicErrorType(ErrorCode code);

// Convenience constructors.
Error InvalidArgument(std::string message, std::string param = {});

// boost::system::result throws through this (found by ADL) when value() is
// called on an error; it throws std::runtime_error with the message.
[[noreturn]] void throw_exception_from_error(const Error& error,
                                             const boost::source_location& loc);

template <class T>
using Result = boost::system::result<T, Error>;

}  // namespace tollgate
