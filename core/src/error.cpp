#include "tollgate/core/error.hpp"

#include <boost/json.hpp>

#include <stdexcept>

namespace tollgate {

int HttpStatus(ErrorCode code) {
  switch (code) {
    case ErrorCode::kInvalidArgument: return 400;
    case ErrorCode::kUnauthenticated: return 401;
    case ErrorCode::kPaymentRequired: return 402;
    case ErrorCode::kPermissionDenied: return 403;
    case ErrorCode::kNotFound: return 404;
    case ErrorCode::kDeadlineExceeded: return 408;
    case ErrorCode::kConflict: return 409;
    case ErrorCode::kPayloadTooLarge: return 413;
    case ErrorCode::kResourceExhausted: return 429;
    case ErrorCode::kCancelled: return 499;
    case ErrorCode::kInternal: return 500;
    case ErrorCode::kBadGateway: return 502;
    case ErrorCode::kUnavailable: return 503;
    case ErrorCode::kUpstreamTimeout: return 504;
  }
  return 500;
}

std::string_view ErrorType(ErrorCode code) {
  switch (code) {
    case ErrorCode::kInvalidArgument: return "invalid_request_error";
    case ErrorCode::kUnauthenticated: return "authentication_error";
    case ErrorCode::kPaymentRequired: return "insufficient_quota";
    case ErrorCode::kPermissionDenied: return "permission_error";
    case ErrorCode::kNotFound: return "not_found_error";
    case ErrorCode::kDeadlineExceeded: return "timeout_error";
    case ErrorCode::kConflict: return "conflict_error";
    case ErrorCode::kPayloadTooLarge: return "invalid_request_error";
    case ErrorCode::kResourceExhausted: return "rate_limit_error";
    case ErrorCode::kCancelled: return "request_cancelled";
    case ErrorCode::kInternal: return "api_error";
    case ErrorCode::kBadGateway: return "upstream_error";
    case ErrorCode::kUnavailable: return "service_unavailable";
    case ErrorCode::kUpstreamTimeout: return "timeout_error";
  }
  return "api_error";
}

bool IsRetryable(ErrorCode code) {
  return code == ErrorCode::kUnavailable || code == ErrorCode::kUpstreamTimeout ||
         code == ErrorCode::kBadGateway || code == ErrorCode::kResourceExhausted;
}

std::string_view AnthropicErrorType(ErrorCode code) {
  switch (code) {
    case ErrorCode::kInvalidArgument: return "invalid_request_error";
    case ErrorCode::kUnauthenticated: return "authentication_error";
    case ErrorCode::kPaymentRequired: return "billing_error";
    case ErrorCode::kPermissionDenied: return "permission_error";
    case ErrorCode::kNotFound: return "not_found_error";
    case ErrorCode::kDeadlineExceeded: return "timeout_error";
    case ErrorCode::kConflict: return "invalid_request_error";
    case ErrorCode::kPayloadTooLarge: return "request_too_large";
    case ErrorCode::kResourceExhausted: return "rate_limit_error";
    case ErrorCode::kCancelled: return "api_error";
    case ErrorCode::kInternal: return "api_error";
    case ErrorCode::kBadGateway: return "api_error";
    case ErrorCode::kUnavailable: return "overloaded_error";
    case ErrorCode::kUpstreamTimeout: return "timeout_error";
  }
  return "api_error";
}

std::string ErrorBody(const Error& error, ErrorFlavor flavor) {
  if (flavor == ErrorFlavor::kAnthropic) {
    return boost::json::serialize(boost::json::object{
        {"type", "error"},
        {"error", boost::json::object{{"type", AnthropicErrorType(error.code)}, {"message", error.message}}}});
  }
  boost::json::object inner;
  inner["message"] = error.message;
  inner["type"] = ErrorType(error.code);
  boost::json::object metadata;
  if (!error.provider_name.empty()) metadata["provider_name"] = error.provider_name;
  if (flavor == ErrorFlavor::kOpenRouter) {
    inner["code"] = error.status != 0 ? error.status : HttpStatus(error.code);
    if (!error.code_string.empty()) metadata["reason"] = error.code_string;
  } else if (error.code_string.empty()) {
    inner["code"] = nullptr;
  } else {
    inner["code"] = error.code_string;
  }
  if (error.param.empty()) {
    inner["param"] = nullptr;
  } else {
    inner["param"] = error.param;
  }
  if (!metadata.empty()) inner["metadata"] = std::move(metadata);
  boost::json::object outer;
  outer["error"] = std::move(inner);
  return boost::json::serialize(outer);
}

Error InvalidArgument(std::string message, std::string param) {
  return Error{ErrorCode::kInvalidArgument, std::move(message), std::move(param), {}, {}, {}};
}

void throw_exception_from_error(const Error& error, const boost::source_location&) {
  throw std::runtime_error(error.message);
}

}  // namespace tollgate
