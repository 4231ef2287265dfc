// The only TU in providers/ that includes Beast and Asio (compile time: see
// providers/CMakeLists.txt). Structure follows Beast's
// example/advanced/server-flex-awaitable (coroutines, as_tuple for expected
// errors) and example/http/client/async-ssl (SNI, host-name verification).
#include "http_client.hpp"

#include "content_decoder.hpp"
#include "dns_cache.hpp"
#include "proxy_config.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/bind_executor.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/address.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/ssl/error.hpp>
#include <boost/asio/ssl/host_name_verification.hpp>
#include <boost/asio/ssl/stream.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/buffer_body.hpp>
#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <sys/socket.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <deque>
#include <exception>
#include <map>
#include <memory>
#include <mutex>

namespace tollgate::providers::detail {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace ssl = asio::ssl;
using tcp = asio::ip::tcp;
using Clock = std::chrono::steady_clock;
using boost::system::error_code;

constexpr auto kAwait = asio::as_tuple(asio::use_awaitable);
constexpr std::size_t kReadChunkBytes = 16 * 1024;
constexpr std::size_t kStreamBufferBytes = 1024;

struct Connection {
  Connection(asio::io_context& ioc, ssl::context* tls_ctx) {
    // Sockets use the io_context's executor, not a call's strand: a pooled
    // connection moves between calls. Every operation is started from the
    // owning call's strand and completes there (the awaitable's executor).
    if (tls_ctx != nullptr) {
      tls.emplace(ioc, *tls_ctx);
    } else {
      plain.emplace(ioc);
    }
  }

  tcp::socket& Socket() { return tls ? tls->next_layer() : *plain; }

  void Close() {
    // No TLS close_notify: the connection is being abandoned (error, cancel,
    // pool eviction) and waiting for the peer would only add latency.
    error_code ignored;
    Socket().shutdown(tcp::socket::shutdown_both, ignored);
    Socket().close(ignored);
  }

  std::optional<tcp::socket> plain;
  std::optional<ssl::stream<tcp::socket>> tls;
  beast::flat_buffer buffer;
  Clock::time_point idle_since{};
};

// A pooled keep-alive connection must have nothing to read: EOF (the server
// closed it while idle), a reset, or stray bytes (a TLS close_notify, junk)
// all mean it is unusable. A non-blocking peek tells without consuming.
// One recv(2) with MSG_DONTWAIT: no toggling of the socket's blocking mode
// (two ioctl(2) calls per reuse).
bool LooksAlive(tcp::socket& socket) {
  if (!socket.is_open()) return false;
  char byte = 0;
  ssize_t n;
  do {
    n = ::recv(socket.native_handle(), &byte, 1, MSG_PEEK | MSG_DONTWAIT);
  } while (n < 0 && errno == EINTR);
  return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
}

// Errors that mean "the server closed this idle keep-alive connection before
// reading our request"; only those make a reused connection retryable.
bool IsStaleConnectionError(const error_code& ec) {
  return ec == http::error::end_of_stream || ec == asio::error::eof ||
         ec == asio::error::connection_reset || ec == asio::error::broken_pipe ||
         ec == asio::error::connection_aborted || ec == ssl::error::stream_truncated;
}

std::string DescribeIoError(const error_code& ec) {
  if (ec == http::error::end_of_stream || ec == asio::error::eof) {
    return "closed the connection";
  }
  if (ec == asio::error::operation_aborted) return "connection was aborted";
  if (ec == http::error::partial_message) return "closed the connection mid-response";
  // Servers often skip close_notify and just close TCP; OpenSSL reports that
  // as stream_truncated. Where the body is length-delimited or chunked (the
  // only case that reaches here) it means the response was cut short.
  if (ec == ssl::error::stream_truncated) return "closed the TLS connection mid-response";
  if (ec == asio::error::connection_reset) return "reset the connection";
  if (ec == asio::error::broken_pipe) return "closed the connection while we were sending";
  if (ec == http::error::header_limit) return "sent an oversized response header";
  if (ec.category() == http::make_error_code(http::error::bad_version).category()) {
    return "sent malformed HTTP (" + ec.message() + ")";
  }
  return "connection failed (" + ec.message() + ")";
}

std::string HostForUrl(const std::string& host) {
  return host.find(':') != std::string::npos ? "[" + host + "]" : host;
}

}  // namespace

struct HttpClient::Impl {
  Impl(asio::io_context& io, HttpClientOptions opts)
      : ioc(io),
        options(std::move(opts)),
        tls(ssl::context::tls_client),
        dns(DnsCache::Options{options.dns_ttl_ms, options.dns_negative_ttl_ms, options.dns_max_entries}) {}

  std::unique_ptr<Connection> TakeIdle(const std::string& key) {
    std::vector<std::unique_ptr<Connection>> dead;
    std::unique_ptr<Connection> found;
    {
      std::lock_guard lock(mu);
      auto it = idle.find(key);
      if (it == idle.end()) return nullptr;
      auto& queue = it->second;
      const auto now = Clock::now();
      const auto ttl = std::chrono::milliseconds(options.idle_ttl_ms);
      while (!queue.empty() && found == nullptr) {  // most recently used first
        auto conn = std::move(queue.back());
        queue.pop_back();
        if (now - conn->idle_since < ttl && LooksAlive(conn->Socket())) {
          found = std::move(conn);
        } else {
          dead.push_back(std::move(conn));
          ++dead_idle;
        }
      }
      while (!queue.empty() && now - queue.front()->idle_since >= ttl) {
        dead.push_back(std::move(queue.front()));
        queue.pop_front();
      }
    }
    for (auto& conn : dead) conn->Close();
    return found;
  }

  void ReturnIdle(const std::string& key, std::unique_ptr<Connection> conn) {
    if (options.max_idle_connections == 0) {
      conn->Close();
      return;
    }
    conn->idle_since = Clock::now();
    std::unique_ptr<Connection> evicted;
    {
      std::lock_guard lock(mu);
      auto& queue = idle[key];
      if (queue.size() >= options.max_idle_connections) {  // keep the freshest
        evicted = std::move(queue.front());
        queue.pop_front();
      }
      queue.push_back(std::move(conn));
    }
    if (evicted) evicted->Close();
  }

  asio::io_context& ioc;
  HttpClientOptions options;
  ssl::context tls;
  ProxySettings proxies;  // set in Create(), then read-only
  DnsCache dns;
  std::atomic<std::uint64_t> tunnels{0};
  mutable std::mutex mu;
  std::map<std::string, std::deque<std::unique_ptr<Connection>>> idle;  // guarded by mu
  std::atomic<std::uint64_t> opened{0};
  std::atomic<std::uint64_t> reused{0};
  std::atomic<std::uint64_t> stale_retries{0};
  std::atomic<std::uint64_t> dead_idle{0};
};

namespace {

// One exchange. Lives in shared_ptrs held by its coroutine, its watchdog
// handler and (weakly) its stop callback; all of its state is touched on
// `strand_` only, except `stop_cb_`, which is set before the coroutine starts.
class Call : public std::enable_shared_from_this<Call> {
 public:
  Call(std::shared_ptr<HttpClient::Impl> client, HttpRequest request,
       std::shared_ptr<HttpResponseHandler> handler)
      : client_(std::move(client)),
        request_(std::move(request)),
        handler_(std::move(handler)),
        strand_(asio::make_strand(client_->ioc)),
        timer_(strand_),
        pause_(strand_),
        resolver_(strand_) {
    const auto& up = request_.upstream;
    const bool default_port = up.port == (up.tls ? 443 : 80);
    authority_ = HostForUrl(up.host) + ":" + std::to_string(up.port);
    host_header_ = default_port ? HostForUrl(up.host) : authority_;
    pool_key_ = (up.tls ? "https://" : "http://") + authority_;
    proxy_ = client_->proxies.For(up.tls, up.host, up.port);
    // A connection to a proxy is only reused for the same upstream: a tunnel
    // is bound to its CONNECT target, and keying absolute-form requests the
    // same way keeps one rule for both.
    if (proxy_ != nullptr) pool_key_ += " via " + proxy_->Authority();
  }

  void Launch(std::stop_token cancel) {
    if (cancel.stop_possible()) {
      stop_cb_.emplace(std::move(cancel), [weak = weak_from_this(), strand = strand_] {
        // Runs on whichever thread requested the stop: hop to the strand.
        asio::post(strand, [weak] {
          if (auto self = weak.lock()) self->Abort(HttpFailureKind::kCancelled);
        });
      });
    }
    auto self = shared_from_this();
    asio::co_spawn(strand_, Run(self),
                   asio::bind_executor(strand_, [self](std::exception_ptr e) {
                     if (e) self->FailFromException(e);
                   }));
  }

 private:
  enum class Outcome { kDone, kRetryStale };

  static asio::awaitable<void> Run(std::shared_ptr<Call> self) {
    co_await self->Execute();
    self->Finish();
  }

  asio::awaitable<void> Execute() {
    if (aborted_) {
      FailAborted(false);
      co_return;
    }
    if (request_.deadline && *request_.deadline <= Clock::now()) {
      aborted_ = HttpFailureKind::kDeadline;
      FailAborted(false);
      co_return;
    }
    for (int attempt = 0; attempt < 2; ++attempt) {
      bool reused = false;
      if (attempt == 0) {
        conn_ = client_->TakeIdle(pool_key_);
        reused = conn_ != nullptr;
      }
      if (reused) {
        ++client_->reused;
      } else if (!co_await Connect()) {
        co_return;
      }
      const Outcome outcome = conn_->tls ? co_await Exchange(*conn_->tls, reused)
                                         : co_await Exchange(*conn_->plain, reused);
      if (outcome != Outcome::kRetryStale) co_return;
      ++client_->stale_retries;
      conn_->Close();
      conn_.reset();
    }
  }

  asio::awaitable<bool> Connect() {
    const HttpUpstream& up = request_.upstream;
    Arm(request_.connect_timeout_ms, HttpFailureKind::kConnectTimeout);
    conn_ = std::make_unique<Connection>(client_->ioc, up.tls ? &client_->tls : nullptr);
    const bool via_proxy = proxy_ != nullptr;
    if (!co_await ConnectTcp(via_proxy ? proxy_->host : up.host, via_proxy ? proxy_->port : up.port, via_proxy)) {
      co_return false;
    }
    error_code ignored;
    conn_->Socket().set_option(tcp::no_delay(true), ignored);
    if (via_proxy && up.tls && !co_await OpenTunnel()) co_return false;

    if (conn_->tls) {
      auto& stream = *conn_->tls;
      error_code not_ip;
      asio::ip::make_address(up.host, not_ip);
      // SNI carries host names only (RFC 6066 section 3).
      if (not_ip && SSL_set_tlsext_host_name(stream.native_handle(), up.host.c_str()) != 1) {
        co_return Fail(HttpFailureKind::kConnect, "cannot set the TLS server name");
      }
      stream.set_verify_mode(ssl::verify_peer);
      stream.set_verify_callback(ssl::host_name_verification(up.host));
      auto [handshake_ec] = co_await stream.async_handshake(ssl::stream_base::client, kAwait);
      if (aborted_) co_return FailAborted(false);
      if (handshake_ec) {
        std::string why = handshake_ec.message();
        const long verify = SSL_get_verify_result(stream.native_handle());
        if (verify != X509_V_OK) {
          why += std::string("; ") + X509_verify_cert_error_string(verify);
        }
        co_return Fail(HttpFailureKind::kConnect, "TLS handshake with the upstream failed (" + why + ")");
      }
    }
    ++client_->opened;
    co_return true;
  }

  // TCP connection to `host`:`port` (the upstream, or the proxy), through
  // the client's DNS cache. Fails the call (and returns false) on error.
  asio::awaitable<bool> ConnectTcp(const std::string& host, std::uint16_t port, bool to_proxy) {
    const char* peer = to_proxy ? "the HTTP proxy" : "the upstream";
    DnsCache& dns = client_->dns;
    error_code not_ip;  // set when `host` is a name rather than an IP literal
    const auto ip = asio::ip::make_address(host, not_ip);
    for (int round = 0; round < 2; ++round) {
      DnsCache::Endpoints endpoints;
      bool cached = false;
      if (!not_ip) {
        endpoints.emplace_back(ip, port);
      } else if (auto hit = dns.Find(host, port)) {
        if (hit->failed) {
          co_return Fail(HttpFailureKind::kConnect,
                         std::string("cannot resolve ") + peer + "'s host name (" + hit->error + ")");
        }
        endpoints = std::move(hit->endpoints);
        cached = true;
      } else {
        auto [resolve_ec, results] = co_await resolver_.async_resolve(host, std::to_string(port), kAwait);
        if (aborted_) co_return FailAborted(false);
        if (resolve_ec) {
          dns.PutFailure(host, port, resolve_ec.message());
          co_return Fail(HttpFailureKind::kConnect,
                         std::string("cannot resolve ") + peer + "'s host name (" + resolve_ec.message() + ")");
        }
        for (const auto& r : results) endpoints.push_back(r.endpoint());
        dns.Put(host, port, endpoints);
      }
      auto [connect_ec, endpoint] = co_await asio::async_connect(conn_->Socket(), endpoints, kAwait);
      if (aborted_) co_return FailAborted(false);
      if (!connect_ec) co_return true;
      if (not_ip) {  // a host name, not an IP literal
        // Every address failed: it may have moved. Forget it, and when it came
        // from the cache, resolve once more before giving up.
        dns.Drop(host, port);
        if (cached && round == 0) continue;
      }
      if (connect_ec == asio::error::connection_refused) {
        co_return Fail(HttpFailureKind::kConnect, std::string(peer) + " refused the connection");
      }
      co_return Fail(HttpFailureKind::kConnect,
                     std::string("cannot connect to ") + peer + " (" + connect_ec.message() + ")");
    }
    co_return Fail(HttpFailureKind::kConnect, std::string("cannot connect to ") + peer);
  }

  // CONNECT upstream:port through the proxy (RFC 9110 section 9.3.6); on 2xx
  // the socket is a byte tunnel to the upstream, ready for the TLS handshake.
  asio::awaitable<bool> OpenTunnel() {
    tcp::socket& socket = conn_->Socket();
    http::request<http::empty_body> req{http::verb::connect, authority_, 11};
    req.set(http::field::host, authority_);
    req.set(http::field::user_agent, "tollgate/0.1");
    if (!proxy_->authorization.empty()) req.set(http::field::proxy_authorization, proxy_->authorization);
    auto [write_ec, written] = co_await http::async_write(socket, req, kAwait);
    if (aborted_) co_return FailAborted(false);
    if (write_ec) {
      co_return Fail(HttpFailureKind::kConnect,
                     "sending CONNECT to the HTTP proxy failed: it " + DescribeIoError(write_ec));
    }
    http::response_parser<http::empty_body> parser;
    parser.skip(true);  // a 2xx to CONNECT has no body: the tunnel starts after the header
    parser.header_limit(static_cast<std::uint32_t>(client_->options.max_header_bytes));
    beast::flat_buffer buffer;
    auto [read_ec, read] = co_await http::async_read_header(socket, buffer, parser, kAwait);
    if (aborted_) co_return FailAborted(false);
    if (read_ec) {
      co_return Fail(HttpFailureKind::kConnect, "the HTTP proxy " + DescribeIoError(read_ec) + " during CONNECT");
    }
    const int status = static_cast<int>(parser.get().result_int());
    if (status == 407) {
      co_return Fail(HttpFailureKind::kConnect,
                     "the HTTP proxy requires authentication or rejected Tollgate's proxy credentials (407)");
    }
    if (status < 200 || status > 299) {
      co_return Fail(HttpFailureKind::kConnect,
                     "the HTTP proxy refused the tunnel to the upstream (" + std::to_string(status) + ")");
    }
    if (buffer.size() != 0) {
      // The upstream speaks only after our ClientHello: bytes here are the
      // proxy's, and TLS would read them as the server's.
      co_return Fail(HttpFailureKind::kConnect, "the HTTP proxy sent data into the tunnel before TLS started");
    }
    ++client_->tunnels;
    co_return true;
  }

  template <class Stream>
  asio::awaitable<Outcome> Exchange(Stream& stream, bool reused) {
    Arm(request_.first_byte_timeout_ms, HttpFailureKind::kFirstByteTimeout);
    {
      http::request<http::string_body> req;
      req.method_string(request_.method);
      const bool absolute_form = proxy_ != nullptr && !request_.upstream.tls;
      if (absolute_form) {
        // RFC 9112 section 3.2.2: a proxy gets the absolute URI.
        req.target("http://" + authority_ + request_.target);
      } else {
        req.target(request_.target);
      }
      req.version(11);
      req.set(http::field::host, host_header_);
      // Ask for the bytes as they are (RFC 9110 section 12.5.3); a request
      // header may still say otherwise.
      req.set(http::field::accept_encoding, "identity");
      for (const auto& [name, value] : request_.headers) req.set(name, value);
      if (absolute_form && !proxy_->authorization.empty()) {
        req.set(http::field::proxy_authorization, proxy_->authorization);
      }
      req.body() = request_.body;
      req.prepare_payload();
      auto [write_ec, written] = co_await http::async_write(stream, req, kAwait);
      if (aborted_) {
        FailAborted(false);
        co_return Outcome::kDone;
      }
      if (write_ec) {
        // Not written whole: the upstream cannot have acted on it, so a
        // reused connection that turned out dead may be retried on a new one.
        if (reused && IsStaleConnectionError(write_ec)) co_return Outcome::kRetryStale;
        Fail(HttpFailureKind::kConnect, "sending the request failed: the upstream " + DescribeIoError(write_ec));
        co_return Outcome::kDone;
      }
    }

    http::response_parser<http::buffer_body> parser;
    parser.header_limit(static_cast<std::uint32_t>(client_->options.max_header_bytes));
    parser.body_limit(boost::none);  // streamed; the handler bounds what it keeps
    beast::flat_buffer& buffer = conn_->buffer;
    auto [head_ec, head_bytes] = co_await http::async_read_header(stream, buffer, parser, kAwait);
    if (aborted_) {
      FailAborted(false);
      co_return Outcome::kDone;
    }
    if (head_ec) {
      // The request was written whole: the upstream may have read it and
      // started a (billed) generation, so it is never sent again, even on a
      // reused connection (ARCHITECTURE.md: a POST that was fully written is
      // never replayed). Dead idle connections are caught before use instead
      // (LooksAlive).
      Fail(HttpFailureKind::kBrokenStream, "the upstream " + DescribeIoError(head_ec) + " before responding");
      co_return Outcome::kDone;
    }

    // A body of known length in reads as large as it is (up to a chunk),
    // not in the buffer's 512 bytes at a time. A stream (no length) gets a
    // small buffer back if an earlier answer on this pooled connection grew
    // it: its events are small, each is handed on as it comes, and an open
    // stream holds the buffer for its whole life.
    if (auto length = parser.content_length()) {
      if (*length > buffer.capacity()) {
        buffer.reserve(static_cast<std::size_t>(std::min<std::uint64_t>(*length, kReadChunkBytes)));
      }
    } else if (buffer.capacity() > kStreamBufferBytes) {
      buffer.shrink_to_fit();
    }

    if (proxy_ != nullptr && !request_.upstream.tls && parser.get().result_int() == 407) {
      // Absolute-form: the proxy itself answered (an upstream has no reason to
      // send 407), so the request never left it.
      Fail(HttpFailureKind::kConnect,
           "the HTTP proxy requires authentication or rejected Tollgate's proxy credentials (407)");
      co_return Outcome::kDone;
    }
    auto decoder = ContentDecoder::ForContentEncoding(parser.get()[http::field::content_encoding]);
    if (!decoder) {
      Fail(HttpFailureKind::kBrokenStream, decoder.error().message);
      co_return Outcome::kDone;
    }

    HttpResponseHead head;
    head.status = static_cast<int>(parser.get().result_int());
    head.content_type = std::string(parser.get()[http::field::content_type]);
    head.retry_after = std::string(parser.get()[http::field::retry_after]);
    handler_->OnHead(head);

    // The body goes through `chunk` no faster than the buffer reads it, so a
    // chunk the size of the buffer's reads will do: small for a stream (an
    // open stream holds it for its whole life; thousands may be open), up
    // to kReadChunkBytes for a body of known length.
    const std::size_t chunk_size = std::clamp<std::size_t>(buffer.capacity(), kStreamBufferBytes, kReadChunkBytes);
    const auto chunk = std::make_unique_for_overwrite<char[]>(chunk_size);
    std::unique_ptr<char[]> decoded;  // decoder output, allocated on first use
    while (!parser.is_done()) {
      if (!handler_->Ready(ResumeCallback())) {
        co_await Pause();
        if (aborted_) {
          FailAborted(true);
          co_return Outcome::kDone;
        }
      }
      auto& body = parser.get().body();
      body.data = chunk.get();
      body.size = chunk_size;
      // async_read_some returns after each parse step, so bytes are handed on
      // as soon as they arrive instead of after the chunk buffer fills.
      auto [read_ec, read_bytes] = co_await http::async_read_some(stream, buffer, parser, kAwait);
      if (aborted_) {
        FailAborted(true);
        co_return Outcome::kDone;
      }
      if (read_ec == http::error::need_buffer) read_ec = {};
      const std::size_t got = chunk_size - parser.get().body().size;
      if (read_ec == ssl::error::stream_truncated && !parser.chunked() &&
          !parser.content_length()) {
        // A body delimited by connection close: a TCP close without TLS
        // close_notify is how many servers end it.
        read_ec = {};
        parser.put_eof(read_ec);
      }
      if (got > 0) {
        Arm(request_.read_idle_timeout_ms, HttpFailureKind::kReadTimeout);
        if (decoder->identity()) {
          if (!handler_->OnBody(std::string_view(chunk.get(), got))) {
            terminal_sent_ = true;  // the handler ended the exchange itself
            co_return Outcome::kDone;
          }
        } else {
          // Hand on each decoded piece as it comes; one read can inflate to
          // many pieces, so flow control is asked between them too.
          if (!decoded) decoded = std::make_unique_for_overwrite<char[]>(chunk_size);
          decoder->Feed(std::string_view(chunk.get(), got));
          for (bool first = true;; first = false) {
            if (!first && !handler_->Ready(ResumeCallback())) {
              co_await Pause();
              if (aborted_) {
                FailAborted(true);
                co_return Outcome::kDone;
              }
            }
            auto n = decoder->Next(decoded.get(), chunk_size);
            if (!n) {
              Fail(HttpFailureKind::kBrokenStream, n.error().message, /*head_received=*/true);
              co_return Outcome::kDone;
            }
            if (*n == 0) break;
            if (!handler_->OnBody(std::string_view(decoded.get(), *n))) {
              terminal_sent_ = true;
              co_return Outcome::kDone;
            }
          }
        }
      }
      if (read_ec) {
        Fail(HttpFailureKind::kBrokenStream, "the upstream " + DescribeIoError(read_ec), /*head_received=*/true);
        co_return Outcome::kDone;
      }
    }

    Disarm();
    if (auto finished = decoder->Finish(); !finished) {
      Fail(HttpFailureKind::kBrokenStream, finished.error().message, /*head_received=*/true);
      co_return Outcome::kDone;
    }
    if (parser.keep_alive() && buffer.size() == 0) {
      client_->ReturnIdle(pool_key_, std::move(conn_));
    }
    terminal_sent_ = true;
    handler_->OnEnd();
    co_return Outcome::kDone;
  }

  // Watchdog: one steady_timer per call on the call's strand. Arm() moves its
  // expiry; when it fires, the pending operation is aborted by closing the
  // socket (or cancelling the resolver), and the coroutine reports aborted_.
  void Arm(int timeout_ms, HttpFailureKind kind) {
    auto at = Clock::now() + std::chrono::milliseconds(timeout_ms);
    armed_timeout_ms_ = timeout_ms;
    if (request_.deadline && *request_.deadline <= at) {
      at = *request_.deadline;
      kind = HttpFailureKind::kDeadline;
    }
    armed_kind_ = kind;
    timer_.expires_at(at);
    if (!watching_) {
      watching_ = true;
      Watch();
    }
  }

  void Disarm() { timer_.expires_at(Clock::time_point::max()); }

  // Flow control: the handler's consumer is behind. Stop reading until the
  // resume callback (posted to the strand) wakes us; meanwhile only the
  // deadline and cancellation (Abort) apply.
  std::function<void()> ResumeCallback() {
    resumed_ = false;
    return [weak = weak_from_this(), strand = strand_] {
      asio::post(strand, [weak] {
        if (auto self = weak.lock()) {
          self->resumed_ = true;
          self->pause_.cancel();
        }
      });
    };
  }

  asio::awaitable<void> Pause() {
    const int idle_ms = armed_timeout_ms_;
    const HttpFailureKind idle_kind = armed_kind_;
    if (request_.deadline) {
      timer_.expires_at(*request_.deadline);
      armed_kind_ = HttpFailureKind::kDeadline;
    } else {
      Disarm();
    }
    while (!resumed_ && !aborted_) {
      pause_.expires_at(Clock::time_point::max());
      co_await pause_.async_wait(kAwait);  // woken by cancel (resume or abort)
    }
    if (!aborted_) Arm(idle_ms, idle_kind);
  }

  void Watch() {
    timer_.async_wait([self = shared_from_this()](error_code) {
      if (self->finished_) return;
      if (self->timer_.expiry() <= Clock::now()) {
        self->timer_.expires_at(Clock::time_point::max());
        self->Abort(self->armed_kind_);
      }
      self->Watch();
    });
  }

  void Abort(HttpFailureKind kind) {
    if (finished_ || aborted_) return;
    aborted_ = kind;
    resolver_.cancel();
    pause_.cancel();
    if (conn_) conn_->Close();
  }

  bool Fail(HttpFailureKind kind, std::string message, bool head_received = false) {
    if (terminal_sent_) return false;
    terminal_sent_ = true;
    handler_->OnFailure(HttpFailure{kind, std::move(message), head_received});
    return false;
  }

  bool FailAborted(bool head_received) {
    const HttpFailureKind kind = aborted_.value_or(HttpFailureKind::kCancelled);
    const std::string ms = std::to_string(armed_timeout_ms_);
    switch (kind) {
      case HttpFailureKind::kCancelled:
        return Fail(kind, "request cancelled", head_received);
      case HttpFailureKind::kConnectTimeout:
        return Fail(kind, "connecting to the upstream timed out after " + ms + " ms", head_received);
      case HttpFailureKind::kFirstByteTimeout:
        return Fail(kind, "the upstream sent nothing within " + ms + " ms", head_received);
      case HttpFailureKind::kReadTimeout:
        return Fail(kind, "the upstream stalled for " + ms + " ms mid-response", head_received);
      case HttpFailureKind::kDeadline:
        return Fail(kind, "the request deadline passed while waiting for the upstream", head_received);
      case HttpFailureKind::kConnect:
      case HttpFailureKind::kBrokenStream:
        break;
    }
    return Fail(kind, "upstream exchange aborted", head_received);
  }

  void FailFromException(std::exception_ptr e) {
    std::string what = "unknown exception";
    try {
      std::rethrow_exception(e);
    } catch (const std::exception& ex) {
      what = ex.what();
    } catch (...) {
    }
    Fail(HttpFailureKind::kBrokenStream, "internal error in upstream exchange: " + what);
    Finish();
  }

  void Finish() {
    finished_ = true;
    timer_.cancel();
    pause_.cancel();
    stop_cb_.reset();
    if (conn_) {
      conn_->Close();  // not fully read, failed, cancelled or stopped: never pooled
      conn_.reset();
    }
  }

  std::shared_ptr<HttpClient::Impl> client_;
  HttpRequest request_;
  std::shared_ptr<HttpResponseHandler> handler_;
  asio::strand<asio::io_context::executor_type> strand_;
  asio::steady_timer timer_;
  asio::steady_timer pause_;  // flow control: waits for the handler's resume
  tcp::resolver resolver_;
  std::optional<std::stop_callback<std::function<void()>>> stop_cb_;
  std::unique_ptr<Connection> conn_;
  const ProxyServer* proxy_ = nullptr;  // into client_->proxies; null = direct
  std::string authority_;
  std::string host_header_;
  std::string pool_key_;
  std::optional<HttpFailureKind> aborted_;
  HttpFailureKind armed_kind_ = HttpFailureKind::kConnectTimeout;
  int armed_timeout_ms_ = 0;
  bool watching_ = false;
  bool finished_ = false;
  bool terminal_sent_ = false;
  bool resumed_ = false;
};

}  // namespace

Result<HttpClient> HttpClient::Create(asio::io_context& ioc, HttpClientOptions options) {
  auto impl = std::make_shared<Impl>(ioc, std::move(options));
  error_code ec;
  impl->tls.set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 |
                            ssl::context::no_sslv3 | ssl::context::no_tlsv1 |
                            ssl::context::no_tlsv1_1,
                        ec);
  SSL_CTX_set_min_proto_version(impl->tls.native_handle(), TLS1_2_VERSION);
  // A missing system store is not fatal here: ca_file may be all we need, and
  // a call to an untrusted host then fails its handshake with a clear error.
  impl->tls.set_default_verify_paths(ec);
  if (!impl->options.ca_file.empty()) {
    impl->tls.load_verify_file(impl->options.ca_file, ec);
    if (ec) {
      return Error{ErrorCode::kInvalidArgument,
                   "cannot load ca_file " + impl->options.ca_file + " (" + ec.message() + ")",
                   "ca_file",
                   {}};
    }
  }
  impl->tls.set_verify_mode(ssl::verify_peer);
  auto proxies = ResolveProxySettings(impl->options.proxy, impl->options.no_proxy,
                                      [](const char* name) { return std::getenv(name); });
  if (!proxies) return proxies.error();
  impl->proxies = std::move(*proxies);
  return HttpClient(std::move(impl));
}

void HttpClient::Start(HttpRequest request, std::shared_ptr<HttpResponseHandler> handler,
                       std::stop_token cancel) const {
  auto call = std::make_shared<Call>(impl_, std::move(request), std::move(handler));
  call->Launch(std::move(cancel));
}

void HttpClient::Post(std::function<void()> fn) const { asio::post(impl_->ioc, std::move(fn)); }

HttpClientStats HttpClient::Stats() const {
  HttpClientStats stats;
  stats.connections_opened = impl_->opened.load();
  stats.connections_reused = impl_->reused.load();
  stats.stale_retries = impl_->stale_retries.load();
  stats.dead_idle_dropped = impl_->dead_idle.load();
  stats.proxy_tunnels = impl_->tunnels.load();
  const auto dns = impl_->dns.GetStats();
  stats.dns_hits = dns.hits;
  stats.dns_misses = dns.misses;
  stats.dns_dropped = dns.dropped;
  std::lock_guard lock(impl_->mu);
  for (const auto& [key, queue] : impl_->idle) stats.idle_connections += queue.size();
  return stats;
}

std::vector<std::string> HttpClient::Secrets() const {
  std::vector<std::string> secrets;
  for (const auto* proxy : {&impl_->proxies.http, &impl_->proxies.https}) {
    if (!*proxy) continue;
    if (!(*proxy)->authorization.empty()) {
      secrets.push_back((*proxy)->authorization);
      secrets.push_back((*proxy)->authorization.substr(6));  // the base64 alone
    }
    if (!(*proxy)->password.empty()) secrets.push_back((*proxy)->password);
  }
  return secrets;
}

}  // namespace tollgate::providers::detail
