// Provider adapter for OpenAI-compatible Chat Completions / Completions
// upstreams: OpenAI, DeepSeek, Moonshot/Kimi, Qwen/DashScope compatible mode,
// Zhipu/GLM, MiniMax, Mistral, Groq, Together, Fireworks, OpenRouter, vLLM,
// Ollama (/v1), llama-server.
//
// Wire format: OpenAI API reference, "Chat > Create chat completion" and
// "The chat completion chunk object" (https://platform.openai.com/docs/api-reference/chat),
// "Completions > Create completion"; see shared/WIRE-FORMATS.md section 3.1.
// Every call is sent upstream as
//   POST {base_url}/chat/completions   (RequestKind::kChat)
//   POST {base_url}/completions        (RequestKind::kCompletion)
//   Authorization: Bearer {api_key}    (omitted when api_key is empty)
//   Content-Type: application/json
//   Accept: text/event-stream
//   {... , "stream": true, "stream_options": {"include_usage": true}}
// whatever the caller asked for, so usage is always reported; the gateway
// assembles a non-streamed answer from the deltas. The response is read as
// Server-Sent Events (WHATWG HTML, section 9.2.6; see sse_parser.hpp) and each
// complete event is forwarded at once.
//
// Thread-safety: Create(), Start(), Name() and Stats() may be called
// concurrently from any thread. All I/O runs on the io_context
// passed to Create(), which must outlive the provider and all its calls (the
// gateway runs it on N threads); each call runs on its own strand and calls
// its sink from there, never concurrently.
#pragma once

#include "tollgate/core/error.hpp"
#include "tollgate/core/provider.hpp"

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <stop_token>
#include <string>
#include <string_view>

namespace boost::asio {
class io_context;
}  // namespace boost::asio

namespace tollgate::providers {

namespace detail {
class HttpClient;
}  // namespace detail

struct OpenAiCompatibleOptions {
  std::string display_name;  // Provider::Name(): "OpenAI", "DeepSeek", ...
  // http:// or https:// URL up to the API version, e.g. "https://api.openai.com/v1";
  // a query (e.g. Azure's "?api-version=...") is kept after the endpoint path.
  // No user-info, no fragment.
  std::string base_url;
  std::string api_key;  // may be empty: then no Authorization header. Never logged.
  std::string ca_file;  // extra trusted CA certificates (PEM file), or empty
  int connect_timeout_ms = 10000;     // resolve + TCP connect + TLS handshake
  int first_byte_timeout_ms = 60000;  // request sent -> first response body byte;
                                      // also the longest silence allowed mid-stream
  int max_idle_connections = 16;      // keep-alive pool size for this upstream; 0 = no reuse
  // Sent with every request after the standard headers (same name replaces),
  // e.g. OpenRouter's "HTTP-Referer" / "X-Title".
  std::map<std::string, std::string> extra_headers;
};

// Connection pool counters (monotonic except idle_connections).
struct ConnectionStats {
  std::uint64_t connections_opened = 0;  // new TCP (+TLS) connections
  std::uint64_t connections_reused = 0;  // requests sent on a pooled connection
  std::uint64_t stale_retries = 0;       // pooled connection was dead; retried on a new one
  std::size_t idle_connections = 0;      // in the pool now
};

class OpenAiCompatibleProvider final : public Provider {
 public:
  // Validates `options` and sets up the TLS context and connection pool.
  // Errors (kInvalidArgument, with `param` naming the option): base_url not an
  // absolute http/https URL with a host (or with user-info or a fragment);
  // a timeout <= 0; max_idle_connections < 0; api_key or an extra header that
  // contains CR, LF or NUL, or an invalid header name; ca_file that cannot be
  // loaded. Messages never contain api_key.
  static Result<std::unique_ptr<OpenAiCompatibleProvider>> Create(OpenAiCompatibleOptions options,
                                                                 boost::asio::io_context& ioc);

  ~OpenAiCompatibleProvider() override;
  OpenAiCompatibleProvider(const OpenAiCompatibleProvider&) = delete;
  OpenAiCompatibleProvider& operator=(const OpenAiCompatibleProvider&) = delete;

  std::string_view Name() const override { return options_.display_name; }

  // Starts one generation and returns at once (the sink is never called from
  // inside Start()). `request.request` is read before Start() returns.
  //
  // Events, on the call's strand: OnDelta for each non-empty
  // choices[0].delta.content (chat) or choices[0].text (completions), complete
  // UTF-8, in order, as soon as its SSE event is complete; then exactly one of
  //   OnComplete  at `data: [DONE]`, at the end of the body after a chunk
  //               with a non-null finish_reason (servers that omit [DONE]),
  //               or for a whole application/json answer: finish_reason of
  //               the last choice chunk (kStop if none), usage from the
  //               usage chunk (prompt_tokens, completion_tokens,
  //               prompt_tokens_details.cached_tokens,
  //               completion_tokens_details.reasoning_tokens, each clamped
  //               into [0, 10^12], cached <= prompt, reasoning <= completion;
  //               usage_known false when none came), upstream_id = the
  //               chunks' `id`;
  //   OnError     with
  //     kInvalidArgument   upstream 400/404/413/422 (upstream message passed on,
  //                        and its `error.param` as Error::param),
  //     kBadGateway        upstream 401/403 ("upstream rejected our
  //                        credentials"), an in-stream `error` chunk (its
  //                        message), malformed chunks, an SSE event over 1 MiB,
  //                        a 2xx body without any event, a stream that
  //                        breaks mid-way or whose body ends with neither
  //                        [DONE] nor a finish_reason ("upstream stream ended
  //                        before it finished"), a connection closed before
  //                        the response, other statuses,
  //     kResourceExhausted upstream 429,
  //     kUnavailable       upstream 402/5xx, DNS/connect failure or refusal,
  //                        TLS handshake/verification failure,
  //     kUpstreamTimeout   upstream 408/504, connect_timeout_ms,
  //                        first_byte_timeout_ms (also as mid-stream silence),
  //     kDeadlineExceeded  `request.deadline` passed (a default-constructed
  //                        deadline means none),
  //     kCancelled         `cancel` signalled: the upstream connection is
  //                        closed at once and never reused.
  // Upstream text in messages is capped at 2000 bytes. For any upstream 4xx
  // but 401/403, a string `error.param` in its body becomes Error::param
  // (capped at 200 bytes). Error messages never contain api_key or request
  // headers.
  void Start(const ProviderRequest& request, std::shared_ptr<StreamSink> sink,
             std::stop_token cancel) override;

  // Pool counters, for metrics and tests. Thread-safe.
  ConnectionStats Stats() const;

 private:
  struct Endpoint;
  OpenAiCompatibleProvider(OpenAiCompatibleOptions options, std::unique_ptr<Endpoint> endpoint,
                           std::unique_ptr<detail::HttpClient> client);

  OpenAiCompatibleOptions options_;
  std::unique_ptr<Endpoint> endpoint_;  // parsed base_url
  std::unique_ptr<detail::HttpClient> client_;
};

}  // namespace tollgate::providers
