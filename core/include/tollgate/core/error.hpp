// Error values on the request path and their OpenAI-shaped rendering.
//
// Failures on the request path are values: `Result<T>` holds either a T or an
// `Error`. Codes follow Abseil's canonical status codes (absl/status/status.h),
// plus two HTTP-specific ones (kPayloadTooLarge, kPaymentRequired), so that each
// code maps to exactly one HTTP status and one retry decision.
//
// Wire shape (OpenAI API reference, "Error codes"; ARCHITECTURE.md):
//   {"error": {"message": str, "type": str, "code": str|null, "param": str|null}}
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
  kDeadlineExceeded,    // 408 before the first byte to the client; 504 from upstream
  kPayloadTooLarge,     // 413: body over the configured limit
  kResourceExhausted,   // 429: rate limited (ours or upstream's)
  kCancelled,           // 499: client closed the request
  kInternal,            // 500: broken invariant
  kBadGateway,          // 502: upstream answered garbage or an error we cannot pass on
  kUnavailable,         // 503: no endpoint can serve the model; upstream 5xx / connect failure
  kUpstreamTimeout,     // 504: upstream connect or first-byte timeout
};

struct Error {
  ErrorCode code = ErrorCode::kInternal;
  std::string message;  // human-readable; never contains secrets
  std::string param;    // offending request field ("messages", "model"), or empty
  // Machine-readable OpenAI `code` string ("model_not_found", "invalid_api_key"),
  // or empty to render null.
  std::string type_code;
};

// HTTP status for a code (400, 401, 402, 403, 404, 408, 413, 429, 499, 500, 502, 503, 504).
int HttpStatus(ErrorCode code);

// OpenAI `error.type` for a code: "invalid_request_error", "authentication_error",
// "insufficient_quota", "permission_error", "not_found_error", "rate_limit_error",
// "timeout_error", "api_error", "upstream_error", "service_unavailable", "request_cancelled".
std::string_view ErrorType(ErrorCode code);

// True when another endpoint may be tried for the same call (before any byte
// reached the client): kUnavailable, kUpstreamTimeout, kBadGateway, kResourceExhausted.
bool IsRetryable(ErrorCode code);

// The JSON text `{"error":{...}}` for `error`. Never throws.
std::string ErrorBody(const Error& error);

// Convenience constructors.
Error InvalidArgument(std::string message, std::string param = {});

// boost::system::result throws through this (found by ADL) when value() is
// called on an error; it throws std::runtime_error with the message.
[[noreturn]] void throw_exception_from_error(const Error& error,
                                             const boost::source_location& loc);

template <class T>
using Result = boost::system::result<T, Error>;

}  // namespace tollgate
