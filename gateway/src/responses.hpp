// How each inbound API answers a call: the bridge between the call driver's
// events (call_driver.hpp) and the wire encoders (wire/), per API. No sockets;
// server.cpp writes what these return.
//
//   OpenAI Chat Completions, legacy Completions (/v1 and OpenRouter's /api/v1):
//     wire::openai::StreamEncoder / EncodeResponse; errors in OpenAI's shape,
//     or OpenRouter's under /api/v1 (core/error.hpp).
//   Anthropic Messages (/v1/messages): wire::anthropic::StreamEncoder /
//     EncodeMessagesResponse; errors in Anthropic's shape.
//   OpenAI Responses (/v1/responses): wire::responses::StreamEncoder /
//     BuildResponse; errors in OpenAI's (OpenRouter's under /api/v1) shape.
//     A stream that fails ends with `error` + response.failed.
// A stream that fails after its first byte ends with the API's error event,
// which is the last thing sent (never followed by [DONE] or message_stop).
#pragma once

#include "call_driver.hpp"
#include "tollgate/core/chat.hpp"
#include "tollgate/core/error.hpp"
#include "tollgate/wire/anthropic.hpp"
#include "tollgate/wire/common.hpp"
#include "tollgate/wire/openai.hpp"
#include "tollgate/wire/responses.hpp"

#include <boost/json/value.hpp>

#include <memory>
#include <optional>
#include <string>
#include <string_view>

namespace tollgate::gateway {

class ResponseEncoder {
 public:
  // `request` is the decoded call (its api, kind, stream options); `meta.provider`
  // is filled in at commit. `error_flavor` is the shape of errors (by path).
  // `responses`: the Responses API's options (request.api kOpenAiResponses only).
  ResponseEncoder(const ChatRequest& request, wire::ResponseMeta meta, ErrorFlavor error_flavor,
                  int64_t prompt_tokens_hint,
                  std::optional<wire::responses::ResponseOptions> responses = std::nullopt);

  // The call committed to a provider (streamed calls start encoding now).
  void Commit(const CommitInfo& info);

  // Streamed: SSE bytes for one event (may be empty).
  std::string Event(const StreamEvent& event);
  // Streamed: the last bytes of a successful stream.
  std::string StreamEnd(const CallSummary& summary);
  // Streamed: the error event that ends a broken stream.
  std::string StreamError(const Error& error);

  // Not streamed: the whole body of a successful call, from its events.
  void Accumulate(const StreamEvent& event) { whole_.Add(event); }
  std::string WholeBody(const CallSummary& summary);

  // Responses API, after StreamEnd / WholeBody: the response as sent and its
  // output items for a stored conversation; nullptr for other APIs.
  const wire::responses::BuiltResponse* responses_result() const;

  // The JSON error body for a call that failed before anything was sent.
  std::string ErrorBody(const Error& error) const;

  bool stream() const { return stream_; }

 private:

  ApiFlavor api_;
  RequestKind kind_;
  bool stream_;
  bool include_usage_;
  bool include_reasoning_;
  wire::ResponseMeta meta_;
  ErrorFlavor error_flavor_;
  int64_t prompt_tokens_hint_;
  std::optional<wire::openai::StreamEncoder> openai_;
  std::optional<wire::anthropic::StreamEncoder> anthropic_;
  std::optional<wire::responses::ResponseOptions> responses_options_;
  std::optional<wire::responses::StreamEncoder> responses_;
  std::optional<wire::responses::BuiltResponse> responses_whole_;
  ResponseAccumulator whole_;
  std::optional<boost::json::value> routing_;  // the explanation, until it is sent
};

// The routing decision as the answer's `routing` object (explain_routing):
// {"strategy", "sticky", "order": [endpoint ids], "candidates": [{"endpoint",
// "provider", "model", "share" (strategy "shares" only), "effective_price"
// (femto-USD per blended token, docs/routing.md)} or {..., "skipped": reason,
// "unsupported_parameters"}]}.
boost::json::value RoutingExplanation(const routing::Plan& plan);

// `error` as the caller's API names things: a Responses caller sent the
// conversation as `input`, which the router and the driver call `messages`
// (their `messages[i]` counts canonical messages, not input items, so the
// param becomes plain "input"). Other APIs: unchanged.
Error InCallersTerms(ApiFlavor api, const Error& error);

// A Responses API answer whose response could not be stored: `store` made
// false in the whole body (`stream` false), or in the response object of a
// stream's last event (its terminal one), so the caller does not continue
// from an id that was never kept. Bytes it cannot read come back unchanged.
std::string MarkNotStored(std::string bytes, bool stream);

// The caller's error shape for a request path: Anthropic's under /v1/messages
// (and /api/v1/messages), OpenRouter's under /api/, else OpenAI's.
ErrorFlavor ErrorFlavorForPath(std::string_view path);

// A fresh request id: "gen-" + unix seconds + "-" + 20 base62 characters from
// the kernel's CSPRNG (core/text.hpp RandomBase62), so replicas never collide
// on the usage row's idempotency key.
std::string NewRequestId(int64_t unix_seconds);

}  // namespace tollgate::gateway
