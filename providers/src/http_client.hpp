// Pooled HTTP/1.1 client for upstream providers (internal to providers/).
//
// Beast-free interface: only src/http_client.cpp includes Beast and Asio, so
// adapters that use this header compile quickly.
//
// One HttpClient serves any number of upstreams; idle keep-alive connections
// are pooled per (scheme, host, port). Each call runs as a C++20 coroutine on
// its own strand of the io_context given to Create(); every handler method of
// that call runs on that strand, never concurrently.
//
// TLS: OpenSSL through asio::ssl, the system CA store
// (SSL_CTX_set_default_verify_paths) plus an optional PEM `ca_file`,
// verify_peer, host-name verification (asio::ssl::host_name_verification, i.e.
// X509_check_host / X509_check_ip_asc), SNI for host names (RFC 6066 section 3:
// never for IP literals), TLS 1.2 minimum. Always on: there is no option to
// turn verification off. Through a proxy the same checks apply to the
// upstream inside the tunnel (never to the proxy, which is plain HTTP).
//
// Forward proxy (proxy_config.hpp for where it comes from and NO_PROXY): an
// https upstream is reached through `CONNECT host:port` (RFC 9110 section
// 9.3.6), then TLS inside the tunnel; an http upstream gets its request in
// absolute form (RFC 9112 section 3.2.2). Pooled connections are keyed by
// scheme, upstream host:port and proxy, so a tunnel only ever carries requests
// for the upstream it was opened to. A proxy that refuses (CONNECT answered
// with anything but 2xx, or 407 to an absolute-form request) or cannot be
// reached is a kConnect failure (nothing reached the upstream). Messages name
// neither the proxy's address nor its credentials.
//
// Content-Encoding: every request says `Accept-Encoding: identity` unless its
// headers set Accept-Encoding; a gzip or deflate answer is decoded on the fly
// (content_decoder.hpp), so handlers always see identity bytes; any other
// coding fails the exchange before OnHead (kBrokenStream).
//
// DNS: host names are resolved through a DnsCache (dns_cache.hpp) shared by
// all calls of one client; IP literals skip it. When connecting to every
// cached address fails, the entry is dropped and the name resolved once more
// within the same connect timeout.
#pragma once

#include "tollgate/core/error.hpp"

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <stop_token>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace boost::asio {
class io_context;
}  // namespace boost::asio

namespace tollgate::providers::detail {

struct HttpUpstream {
  bool tls = false;        // https
  std::string host;        // DNS name or IP literal (no brackets); used for SNI,
                           // certificate checks and the Host header
  std::uint16_t port = 0;
};

struct HttpClientOptions {
  std::string ca_file;                    // extra trusted CAs (PEM), or empty
  std::size_t max_idle_connections = 16;  // per upstream; 0 disables reuse
  int idle_ttl_ms = 30000;                // idle connections older than this are closed
  std::size_t max_header_bytes = 64 * 1024;
  // Forward proxy URL for every upstream ("http://user:pass@host:port"); ""
  // = none; nullopt = from the environment (proxy_config.hpp). Read once, in
  // Create().
  std::optional<std::string> proxy;
  // Hosts that bypass the proxy (curl's NO_PROXY syntax); nullopt = from the
  // environment (no_proxy / NO_PROXY).
  std::optional<std::string> no_proxy;
  int dns_ttl_ms = 30000;          // resolved addresses; <= 0 = no DNS cache
  int dns_negative_ttl_ms = 1000;  // resolution failures; <= 0 = not cached
  std::size_t dns_max_entries = 1024;
};

struct HttpRequest {
  HttpUpstream upstream;
  std::string method = "POST";
  std::string target;  // origin-form: "/v1/chat/completions?x=y"
  std::vector<std::pair<std::string, std::string>> headers;  // Host is added
  std::string body;
  // Timeouts (ms). connect covers resolve + TCP connect + TLS handshake;
  // first_byte runs from sending the request until the first body byte (or
  // the end of an empty body); read_idle bounds each later wait for body bytes.
  int connect_timeout_ms = 10000;
  int first_byte_timeout_ms = 60000;
  int read_idle_timeout_ms = 60000;
  // Absolute deadline for the whole exchange; caps every timeout above.
  std::optional<std::chrono::steady_clock::time_point> deadline;
};

struct HttpResponseHead {
  int status = 0;
  std::string content_type;  // as sent, or empty
  std::string retry_after;   // `Retry-After` as sent, or empty
};

enum class HttpFailureKind {
  kConnect,           // resolve, TCP connect, TLS handshake or sending failed
  kConnectTimeout,    // connect_timeout_ms passed
  kFirstByteTimeout,  // first_byte_timeout_ms passed
  kReadTimeout,       // read_idle_timeout_ms passed after the first byte
  kDeadline,          // the request deadline passed
  kCancelled,         // the stop_token was signalled
  kBrokenStream,      // the connection failed or the peer sent bad HTTP after
                      // the request was sent
};

struct HttpFailure {
  HttpFailureKind kind = HttpFailureKind::kConnect;
  std::string message;  // never contains request headers or body
  bool head_received = false;
};

// Receives one exchange's events on the call's strand, in this order:
//   OnHead? OnBody* then exactly one of OnEnd | OnFailure,
// unless OnBody returns false: then the connection is closed and nothing more
// is called. A failure may come before OnHead.
class HttpResponseHandler {
 public:
  virtual ~HttpResponseHandler() = default;
  virtual void OnHead(const HttpResponseHead& head) = 0;
  // `bytes` is decoded body data (chunked framing removed); valid during the
  // call only. Return false to stop reading and drop the connection.
  virtual bool OnBody(std::string_view bytes) = 0;
  virtual void OnEnd() = 0;
  virtual void OnFailure(const HttpFailure& failure) = 0;
  // Flow control, asked before each read of the body: true = read on; false =
  // the consumer is behind: the client stops reading (TCP then slows the
  // upstream) until `resume` is called, from any thread, once. While paused
  // only the request deadline and cancellation apply, not the idle timeout.
  virtual bool Ready(std::function<void()> resume) { return true; }
};

struct HttpClientStats {
  std::uint64_t connections_opened = 0;  // TCP (+TLS) connections established
  std::uint64_t connections_reused = 0;  // requests sent on a pooled connection
  std::uint64_t stale_retries = 0;       // writing to a reused connection failed before the
                                         // request was sent whole; retried on a fresh one
  std::uint64_t dead_idle_dropped = 0;   // pooled connections found dead (EOF, reset, stray
                                         // bytes, TTL) before use
  std::size_t idle_connections = 0;      // pooled now, all upstreams
  std::uint64_t proxy_tunnels = 0;       // CONNECT tunnels established
  std::uint64_t dns_hits = 0;            // host names answered from the DNS cache
  std::uint64_t dns_misses = 0;          // host names sent to the resolver
  std::uint64_t dns_dropped = 0;         // cache entries dropped after every address failed
};

class HttpClient {
 public:
  // Errors: kInvalidArgument when `ca_file` cannot be loaded (param
  // "ca_file"), or when the proxy URL, explicit or from the environment, is
  // not a usable http:// proxy (param "proxy"; the message names the source,
  // e.g. "HTTPS_PROXY: ...", never the URL).
  // `ioc` must outlive the client and every call started on it.
  static Result<HttpClient> Create(boost::asio::io_context& ioc, HttpClientOptions options);

  // Starts one exchange and returns at once; events go to `handler`, which is
  // kept alive until its last event. A request written whole is never sent
  // again; one whose writing failed on a reused connection (closed by the
  // upstream while idle) is retried once on a fresh one. When `cancel`
  // is signalled the connection is closed (never pooled) and the handler gets
  // OnFailure(kCancelled). Thread-safe.
  void Start(HttpRequest request, std::shared_ptr<HttpResponseHandler> handler,
             std::stop_token cancel) const;

  // Runs `fn` on the io_context (never inline). Thread-safe.
  void Post(std::function<void()> fn) const;

  HttpClientStats Stats() const;

  // Strings that no error message may contain: the proxy passwords and
  // Proxy-Authorization values in use (empty when there is no proxy
  // authentication). For callers that redact upstream-written text.
  std::vector<std::string> Secrets() const;

  struct Impl;

 private:
  explicit HttpClient(std::shared_ptr<Impl> impl) : impl_(std::move(impl)) {}
  std::shared_ptr<Impl> impl_;  // shared with in-flight calls
};

}  // namespace tollgate::providers::detail
