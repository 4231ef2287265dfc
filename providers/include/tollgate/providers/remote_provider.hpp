// Remote providers: one Provider per configured upstream, speaking one of four
// APIs over pooled HTTP/1.1 (+TLS), always streamed, translated to and from the
// canonical model by wire/ codecs.
//
//   kOpenAiCompatible  POST {base_url}/chat/completions (and /completions),
//                      `Authorization: Bearer {api_key}`; OpenAI's Chat
//                      Completions reference and each preset's own
//                      documentation (presets.hpp).
//   kAnthropic         POST {base_url}/messages, `x-api-key: {api_key}`,
//                      `anthropic-version: 2023-06-01` (docs.anthropic.com/en/api/versioning),
//                      the caller's `anthropic-beta` values passed on;
//                      base_url ends in /v1, e.g. https://api.anthropic.com/v1.
//   kGemini            POST {base_url}/models/{model}:streamGenerateContent?alt=sse,
//                      `x-goog-api-key: {api_key}` (never in the URL);
//                      base_url ends in /v1beta, e.g.
//                      https://generativelanguage.googleapis.com/v1beta.
//   kOpenAiResponses   POST {base_url}/responses, `Authorization: Bearer
//                      {api_key}`; OpenAI's Responses API ("Create a model
//                      response", "Streaming events"), stateless (`store:
//                      false`, include reasoning.encrypted_content) so that
//                      OpenAI's encrypted reasoning items round-trip untouched
//                      (wire/responses.hpp); base_url ends in /v1, e.g.
//                      https://api.openai.com/v1 (the default). Parameters:
//                      tools, tool_choice, parallel_tool_calls, response_format,
//                      structured outputs, temperature, top_p, max_tokens,
//                      reasoning, user, image input (the API has no stop,
//                      seed, penalties, n, top_k or logit_bias).
//
// Every call is sent streamed whatever the caller asked for, so that usage is
// always reported and the first byte is known; the gateway assembles whole
// answers from the events. The legacy Completions kind goes only to
// OpenAI-compatible upstreams; the others get it as one user message.
//
// Errors (StreamSink::OnError), with Error::provider_name set and never the
// upstream's host or our key in a message:
//   upstream 400, 422, 413    -> kInvalidArgument (400) with the upstream's message and `param`
//   upstream 404              -> kBadGateway (the provider does not know the model or path)
//   upstream 401, 403         -> kBadGateway "the provider rejected Tollgate's credentials"
//   upstream 402              -> kUnavailable (the provider account is out of credit)
//   upstream 408, 504; connect, first-byte and idle timeouts
//                             -> kUpstreamTimeout (504)
//   upstream 429              -> kResourceExhausted (429), keeping Retry-After and the
//                                upstream's error code (code_string)
//   upstream 503, 529; connection refused, DNS, TLS failures; the HTTP
//   proxy unreachable or refusing (CONNECT not 2xx, 407)
//                             -> kUnavailable (503)
//   other 5xx, malformed or cut-off responses, in-stream errors, an
//   unsupported, corrupt or cut-off Content-Encoding (Accept-Encoding:
//   identity is sent; gzip and deflate answers are decoded)
//                             -> kBadGateway (502), or the in-stream error's own class
//                                (Responses: `error` events and response.failed with
//                                code rate_limit_exceeded -> 429, server_error -> 503)
//   request deadline          -> kDeadlineExceeded; cancel -> kCancelled.
//
// Thread-safety: Create() and every Provider method may be called from any
// thread. I/O runs on the io_context given to Create(), which must outlive the
// provider and its calls; each call runs on its own strand.
#pragma once

#include "tollgate/core/error.hpp"
#include "tollgate/core/provider.hpp"

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

namespace boost::asio {
class io_context;
}  // namespace boost::asio

namespace tollgate::providers {

enum class RemoteApi { kOpenAiCompatible, kAnthropic, kGemini, kOpenAiResponses };

struct RemoteProviderOptions {
  RemoteApi api = RemoteApi::kOpenAiCompatible;
  // kOpenAiCompatible only: a preset name (presets.hpp), or "" for a generic
  // OpenAI-compatible server (every parameter passed on as given).
  std::string preset;
  std::string display_name;  // Provider::Name(): "OpenAI", "DeepSeek", ...
  // http:// or https:// URL up to the API version; empty = the preset's
  // (kOpenAiResponses: https://api.openai.com/v1).
  // A query (e.g. Azure's "?api-version=...") is kept after the endpoint path.
  // No user-info, no fragment.
  std::string base_url;
  std::string api_key;  // may be empty: then no auth header. Never logged.
  std::string ca_file;  // extra trusted CA certificates (PEM file), or empty
  int connect_timeout_ms = 10000;     // resolve + TCP connect + TLS handshake
  int first_byte_timeout_ms = 60000;  // request sent -> first body byte; also the longest silence mid-stream
  int max_idle_connections = 64;      // keep-alive pool size for this upstream; 0 = no reuse
  // Forward proxy for this upstream: "http://[user:password@]host[:port]"
  // (port 1080 when absent, as curl; http:// proxies only; https upstreams
  // tunnel through CONNECT and are still verified end to end). "" = never a
  // proxy; unset = the environment: https_proxy / HTTPS_PROXY for https
  // upstreams, http_proxy / HTTP_PROXY for http ones (HTTP_PROXY ignored
  // under CGI, "httpoxy"). The password is never logged or shown.
  std::optional<std::string> proxy;
  // Hosts reached directly despite a proxy, curl's NO_PROXY syntax: a comma
  // list of names (each also matching its subdomains, leading dot or not),
  // IP literals or CIDR ranges, optional ":port", or "*" for all.
  // "" = no exceptions; unset = the environment (no_proxy / NO_PROXY).
  // providers/src/proxy_config.hpp has the details and curl's documentation.
  std::optional<std::string> no_proxy;
  // Resolved addresses of the upstream (or proxy) host are reused for this
  // long; getaddrinfo gives no record TTL, so this is fixed. 0 = resolve for
  // every new connection. Failed resolutions are remembered for 1 s.
  int dns_ttl_ms = 30000;
  // kAnthropic: max_tokens sent when the caller gave none (Anthropic requires one).
  int64_t default_max_tokens = 4096;
  // Sent with every request after the standard headers (same name replaces),
  // e.g. OpenRouter's "HTTP-Referer" / "X-Title".
  std::map<std::string, std::string> extra_headers;
};

// Connection pool counters (monotonic except idle_connections).
struct ConnectionStats {
  std::uint64_t connections_opened = 0;  // new TCP (+TLS) connections
  std::uint64_t connections_reused = 0;  // requests sent on a pooled connection
  std::uint64_t dead_idle_dropped = 0;   // pooled connections found dead before use
  std::size_t idle_connections = 0;      // in the pool now
  std::uint64_t proxy_tunnels = 0;       // CONNECT tunnels opened through the proxy
  std::uint64_t dns_cache_hits = 0;      // connections whose addresses came from the DNS cache
  std::uint64_t dns_cache_misses = 0;    // connections that asked the resolver
};

class RemoteProvider : public Provider {
 public:
  // Validates `options` and sets up the TLS context and connection pool.
  // Errors (kInvalidArgument, `param` naming the option): unknown preset;
  // base_url missing (and no preset default), not an absolute http/https URL
  // with a host, or with user-info or a fragment; a timeout <= 0;
  // max_idle_connections < 0; dns_ttl_ms < 0; api_key or an extra header
  // containing CR, LF or NUL, or an invalid header name; a ca_file that cannot
  // be loaded; a proxy (explicit or from the environment) that is not a
  // usable http:// URL (param "proxy"). Messages never contain api_key or a
  // proxy URL.
  static Result<std::unique_ptr<RemoteProvider>> Create(RemoteProviderOptions options,
                                                        boost::asio::io_context& ioc);

  // Pool counters, for metrics and tests. Thread-safe.
  virtual ConnectionStats Stats() const = 0;
};

}  // namespace tollgate::providers
