// Upstream failures -> the caller's errors (internal to providers/). The
// mapping is documented on RemoteProvider (remote_provider.hpp).
#pragma once

#include "tollgate/core/error.hpp"

#include <cstddef>
#include <string>
#include <string_view>

namespace tollgate::providers::detail {

// Upstream text passed on in error messages is capped at this many bytes
// ("..." included when cut, never inside a UTF-8 sequence), after the API key
// has been redacted from it.
inline constexpr std::size_t kMaxUpstreamMessageBytes = 2000;

// `text` with every occurrence of `secret` replaced by "[redacted]" (no-op
// for an empty secret).
std::string Redact(std::string text, std::string_view secret);

// The human-readable message in an upstream error body: `error.message`
// (OpenAI, Anthropic, Gemini, OpenRouter), `error` (when a string), `message`
// (vLLM), `detail` (FastAPI), else the body itself when it is printable text
// and not markup (an HTML error page may name internal hosts);
// `secret` redacted, then capped at kMaxUpstreamMessageBytes; empty if none.
std::string UpstreamErrorMessage(std::string_view body, std::string_view secret = {});

// Maps a non-2xx upstream status and its (capped) body to our error
// (remote_provider.hpp). `secret` is redacted from any message. For a 4xx
// other than 401/403 whose body names the offending field (OpenAI's
// `error.param`), Error::param is that string (printable, capped at 200
// bytes). For 429, `retry_after` (when printable and short) becomes
// Error::retry_after and the upstream's error code (`error.code`, or
// Anthropic's `error.type`, or Gemini's `error.status`) Error::code_string.
// 401/403 pass nothing from the body on (it may echo our key); neither does a
// 400 whose Google error details say API_KEY_INVALID (Gemini's answer to a bad
// key), which maps like 401. A Gemini 429's RetryInfo.retryDelay stands in for
// the Retry-After header it does not send.
// A 401/403 (and Gemini's bad-key 400) has code_string kProviderCredentialsRejected (core/error.hpp).
Error MapUpstreamStatus(int status, std::string_view body, std::string_view secret,
                        std::string_view retry_after = {});

}  // namespace tollgate::providers::detail
