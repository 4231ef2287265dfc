// OpenAI Chat Completions / Completions wire format, without any transport
// (internal to providers/; tested in tests/providers/openai_wire_test.cpp).
//
// Sources: OpenAI API reference, "Chat > Create chat completion" (request body,
// `stream`, `stream_options.include_usage`), "The chat completion chunk object"
// (`id`, `choices[].delta.content`, `choices[].finish_reason`, `usage`),
// "Completions > Create completion" (`prompt`, `choices[].text`);
// https://platform.openai.com/docs/api-reference/chat ; summarised with the
// tolerances of OpenAI-compatible servers in shared/WIRE-FORMATS.md section 3.1.
#pragma once

#include "tollgate/core/chat.hpp"
#include "tollgate/core/error.hpp"

#include <boost/json/fwd.hpp>

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace tollgate::providers::detail {

// Usage sanitising. Token counts come from an upstream we do not control and
// are billed as they are (core/money.hpp: (prompt - cached) * prompt_price +
// cached * cached_price + completion * completion_price). An upstream must
// never be able to mint credit or overflow billing: a negative count, or
// cached > prompt, would make a cost negative (a refund for tokens nobody
// used); a count near 2^63 would overflow sums such as total_tokens() or
// per-key totals. So before a Usage leaves this adapter each of
// prompt_tokens, completion_tokens, cached_tokens
// (prompt_tokens_details.cached_tokens, or DeepSeek's prompt_cache_hit_tokens,
// or Moonshot's top-level cached_tokens) and reasoning_tokens
// (completion_tokens_details.reasoning_tokens) is, when it is
//   - a JSON integer: clamped into [0, kMaxUsageTokens] (negative -> 0; a
//     uint64 above INT64_MAX, e.g. 2^64-1, -> kMaxUsageTokens);
//   - a JSON number with a fraction or exponent: truncated toward zero, then
//     clamped the same way;
//   - anything else (string, bool, null, object) or missing: absent, i.e. 0;
// and then cached_tokens <= prompt_tokens and reasoning_tokens <=
// completion_tokens (each is part of that total). A `usage` object in which
// neither prompt_tokens nor completion_tokens is a number reports nothing and
// is ignored (Completion::usage_known is not set by it, so the gateway
// estimates rather than billing zero). 10^12 tokens is far above any real call,
// yet a million such calls still sum well inside int64.
inline constexpr std::int64_t kMaxUsageTokens = 1'000'000'000'000;

// Upstream text passed on in error messages is capped at this many bytes
// ("..." included when cut, never inside a UTF-8 sequence), after the API key
// has been redacted from it.
inline constexpr std::size_t kMaxUpstreamMessageBytes = 2000;

// "/chat/completions" for kChat, "/completions" for kCompletion.
std::string_view EndpointPath(RequestKind kind);

// The upstream JSON body: model = `upstream_model`; `messages` [{role, content}]
// (kChat) or `prompt` (kCompletion); max_tokens, temperature, top_p, stop,
// seed, user when set; always `"stream": true` and
// `"stream_options": {"include_usage": true}` so usage is always reported.
std::string BuildRequestBody(const ChatRequest& request, std::string_view upstream_model);

// "stop" -> kStop, "length" -> kLength, "tool_calls"/"function_call" ->
// kToolCalls, "content_filter" -> kContentFilter, "error" -> kError; anything
// else (e.g. llama.cpp's "eos") -> kStop.
FinishReason ParseFinishReason(std::string_view name);

// `text` with every occurrence of `secret` replaced by "[redacted]" (no-op
// for an empty secret).
std::string Redact(std::string text, std::string_view secret);

// The human-readable message in an upstream error body: `error.message`,
// `error` (when a string), `message` (vLLM), `detail` (FastAPI), else the body
// itself when it is printable text; `secret` redacted, then capped at
// kMaxUpstreamMessageBytes; empty if none.
std::string UpstreamErrorMessage(std::string_view body, std::string_view secret = {});

// Maps a non-2xx upstream status and its (capped) body to our error:
// 400/404/413/422 -> kInvalidArgument (upstream message passed on);
// 401/403 -> kBadGateway "upstream rejected our credentials" (no upstream text:
// it may echo the key); 408/504 -> kUpstreamTimeout; 429 -> kResourceExhausted;
// 402 and 5xx -> kUnavailable; others -> kBadGateway. `secret` is redacted from
// any message. For a 4xx other than 401/403 whose body is
// {"error": {"param": "<string>", ...}} (OpenAI's shape), Error::param is that
// string (printable, `secret` redacted, capped at 200 bytes on a UTF-8
// boundary); a non-string param is ignored. 401/403 pass nothing from the body on.
Error MapUpstreamStatus(int status, std::string_view body, std::string_view secret,
                        std::string_view retry_after = {});

// Length of the longest prefix of `text` that does not end inside a UTF-8
// multi-byte sequence (a truncated lead+continuation tail is held back).
std::size_t CompleteUtf8Prefix(std::string_view text);

// Decodes the `data` of streamed chunks (chat.completion.chunk or
// text_completion chunks) one at a time.
class OpenAiStreamDecoder {
 public:
  explicit OpenAiStreamDecoder(RequestKind kind) : kind_(kind) {}

  struct Step {
    std::string delta;           // text to forward now (complete UTF-8), may be empty
    bool done = false;           // `[DONE]` seen
    std::optional<Error> error;  // upstream error object, or malformed chunk
  };

  // One SSE `data` payload. `secret` is redacted from error messages.
  Step OnData(std::string_view data, std::string_view secret);

  // A complete (non-streamed) chat.completion / text_completion JSON body, for
  // upstreams that ignore `stream: true`.
  Step OnWholeResponse(std::string_view body, std::string_view secret);

  // The Completion from everything seen so far; `flushed_delta` receives any
  // held-back bytes of a truncated UTF-8 sequence as U+FFFD.
  Completion Finish(std::string* flushed_delta);

  // True once a chunk carried a non-null finish_reason for choice 0: a stream
  // that then ends without `[DONE]` is complete; one that ends before it was
  // cut off.
  bool finish_seen() const { return finish_seen_; }

 private:
  // Consumes a parsed chunk (or whole response) object.
  void Absorb(const boost::json::object& object, bool whole_response, std::string_view secret,
              Step& step);
  void AppendText(std::string_view text, Step& step);

  RequestKind kind_;
  Completion completion_;
  bool finish_seen_ = false;
  std::string utf8_tail_;  // held-back incomplete UTF-8 sequence
};

}  // namespace tollgate::providers::detail
