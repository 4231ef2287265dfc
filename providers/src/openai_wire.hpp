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
#include <optional>
#include <string>
#include <string_view>

namespace tollgate::providers::detail {

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
// itself when it is short printable text; capped at 500 bytes; empty if none.
std::string UpstreamErrorMessage(std::string_view body);

// Maps a non-2xx upstream status and its (capped) body to our error:
// 400/404/413/422 -> kInvalidArgument (upstream message passed on);
// 401/403 -> kBadGateway "upstream rejected our credentials" (no upstream text:
// it may echo the key); 408/504 -> kUpstreamTimeout; 429 -> kResourceExhausted;
// 402 and 5xx -> kUnavailable; others -> kBadGateway. `secret` is redacted from
// any message.
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
