// An upstream's HTTP response, bytes in, canonical events out (internal to
// providers/). Pure: no sockets, so the conformance tests replay every
// recorded stream split at every byte boundary through exactly this code.
//
//   non-2xx status            the body (first 16 KiB) -> MapUpstreamStatus at the end
//   2xx application/json      one whole answer (an upstream that ignored
//                             `stream: true`), decoded at the end (8 MiB cap)
//   2xx anything else         Server-Sent Events (wire::SseParser) -> the API's
//                             wire decoder, event by event as they complete
//
// How a 2xx stream ends: its terminator (OpenAI `data: [DONE]`, Anthropic
// `message_stop`, Responses `response.completed` / `response.incomplete`) -> complete; the end of the body after a finish reason
// (servers that omit the terminator; Gemini never sends one) -> complete; the
// end of the body with neither -> kBadGateway "the upstream stream ended
// before it finished" (a cut-off answer must not look finished); a 2xx body
// without any event -> kBadGateway.
#pragma once

#include "tollgate/core/chat.hpp"
#include "tollgate/core/error.hpp"
#include "tollgate/providers/remote_provider.hpp"

#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace tollgate::providers::detail {

class ResponseReader {
 public:
  // `secret` (the API key) is redacted from every message.
  ResponseReader(RemoteApi api, RequestKind kind, std::string secret);
  ~ResponseReader();
  ResponseReader(const ResponseReader&) = delete;
  ResponseReader& operator=(const ResponseReader&) = delete;

  void OnHead(int status, std::string_view content_type, std::string_view retry_after);

  // Body bytes (any slice). Appends the events they complete to `out`. An
  // error ends the response (read nothing more); so does done().
  Result<void> OnBody(std::string_view bytes, std::vector<StreamEvent>& out);

  // The end of the body. Ok: the answer is complete (events flushed to
  // `out`); else why not.
  Result<void> OnEnd(std::vector<StreamEvent>& out);

  // The stream's terminator arrived: the answer is complete; the rest of the
  // body is only drained.
  bool done() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace tollgate::providers::detail
