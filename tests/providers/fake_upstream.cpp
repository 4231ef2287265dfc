#include "fake_upstream.hpp"

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/write.hpp>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <poll.h>
#include <sys/socket.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <chrono>
#include <condition_variable>
#include <csignal>
#include <list>
#include <mutex>
#include <stdexcept>
#include <thread>

namespace tollgate::providers::testing {
namespace {

namespace asio = boost::asio;
namespace ssl = asio::ssl;
using tcp = asio::ip::tcp;
using boost::system::error_code;

// Asio sends with MSG_NOSIGNAL, but be safe: a test must not die of SIGPIPE.
const bool kSigpipeIgnored = [] {
  std::signal(SIGPIPE, SIG_IGN);
  return true;
}();

std::string Lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return s;
}

std::string Trim(std::string s) {
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.pop_back();
  std::size_t i = 0;
  while (i < s.size() && (s[i] == ' ' || s[i] == '\t')) ++i;
  return s.substr(i);
}

std::string StatusText(int status) {
  switch (status) {
    case 200: return "OK";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 402: return "Payment Required";
    case 404: return "Not Found";
    case 408: return "Request Timeout";
    case 413: return "Payload Too Large";
    case 422: return "Unprocessable Entity";
    case 429: return "Too Many Requests";
    case 500: return "Internal Server Error";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 529: return "Overloaded";  // Anthropic (docs.anthropic.com/en/api/errors)
    default: return "Status";
  }
}

// Byte transport over a plain or TLS socket.
class Transport {
 public:
  virtual ~Transport() = default;
  virtual std::size_t ReadSome(char* data, std::size_t size, error_code& ec) = 0;
  virtual bool WriteAll(std::string_view bytes) = 0;
  virtual int Fd() = 0;
};

class PlainTransport final : public Transport {
 public:
  explicit PlainTransport(tcp::socket& s) : s_(s) {}
  std::size_t ReadSome(char* data, std::size_t size, error_code& ec) override {
    return s_.read_some(asio::buffer(data, size), ec);
  }
  bool WriteAll(std::string_view bytes) override {
    error_code ec;
    asio::write(s_, asio::buffer(bytes.data(), bytes.size()), ec);
    return !ec;
  }
  int Fd() override { return s_.native_handle(); }

 private:
  tcp::socket& s_;
};

class TlsTransport final : public Transport {
 public:
  TlsTransport(tcp::socket& s, ssl::context& ctx) : stream_(s, ctx) {}
  bool Handshake() {
    error_code ec;
    stream_.handshake(ssl::stream_base::server, ec);
    return !ec;
  }
  std::size_t ReadSome(char* data, std::size_t size, error_code& ec) override {
    return stream_.read_some(asio::buffer(data, size), ec);
  }
  bool WriteAll(std::string_view bytes) override {
    error_code ec;
    asio::write(stream_, asio::buffer(bytes.data(), bytes.size()), ec);
    return !ec;
  }
  int Fd() override { return stream_.next_layer().native_handle(); }

 private:
  ssl::stream<tcp::socket&> stream_;
};

}  // namespace

bool FakeResponder::SendResponse(int status, std::string_view content_type, std::string_view body,
                                 std::string_view extra_headers) {
  std::string head = "HTTP/1.1 " + std::to_string(status) + " " + StatusText(status) + "\r\n";
  head += "Content-Type: " + std::string(content_type) + "\r\n";
  head += "Content-Length: " + std::to_string(body.size()) + "\r\n";
  head += std::string(extra_headers);
  head += "\r\n";
  return Write(head + std::string(body));
}

bool FakeResponder::StartChunked(int status, std::string_view content_type) {
  std::string head = "HTTP/1.1 " + std::to_string(status) + " " + StatusText(status) + "\r\n";
  head += "Content-Type: " + std::string(content_type) + "\r\n";
  head += "Cache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n\r\n";
  return Write(head);
}

bool FakeResponder::Chunk(std::string_view data) {
  if (data.empty()) return true;  // an empty chunk would end the body
  char size[32];
  std::snprintf(size, sizeof size, "%zx\r\n", data.size());
  return Write(std::string(size) + std::string(data) + "\r\n");
}

bool FakeResponder::EndChunked() { return Write("0\r\n\r\n"); }

bool FakeResponder::ChunkSplit(std::string_view bytes, int pieces, int pause_ms) {
  const std::size_t step = std::max<std::size_t>(1, bytes.size() / std::max(1, pieces));
  for (std::size_t i = 0; i < bytes.size(); i += step) {
    if (!Chunk(bytes.substr(i, step))) return false;
    if (i + step < bytes.size()) Pause(pause_ms);
  }
  return true;
}

FakeTlsIdentity MakeSelfSignedIdentity(const std::string& dns_name) {
  EVP_PKEY* key = EVP_EC_gen("P-256");
  if (key == nullptr) throw std::runtime_error("EVP_EC_gen failed");
  X509* cert = X509_new();
  X509_set_version(cert, 2);  // v3
  ASN1_INTEGER_set(X509_get_serialNumber(cert), 1);
  X509_gmtime_adj(X509_getm_notBefore(cert), -60);
  X509_gmtime_adj(X509_getm_notAfter(cert), 24 * 3600);
  X509_set_pubkey(cert, key);
  X509_NAME* name = X509_get_subject_name(cert);
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                             reinterpret_cast<const unsigned char*>(dns_name.c_str()), -1, -1, 0);
  X509_set_issuer_name(cert, name);
  X509V3_CTX v3;
  X509V3_set_ctx_nodb(&v3);
  X509V3_set_ctx(&v3, cert, cert, nullptr, nullptr, 0);
  const std::string san = "DNS:" + dns_name;
  X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &v3, NID_subject_alt_name, san.c_str());
  X509_add_ext(cert, ext, -1);
  X509_EXTENSION_free(ext);
  if (X509_sign(cert, key, EVP_sha256()) == 0) throw std::runtime_error("X509_sign failed");

  auto to_pem = [](auto write) {
    BIO* bio = BIO_new(BIO_s_mem());
    write(bio);
    char* data = nullptr;
    const long len = BIO_get_mem_data(bio, &data);
    std::string pem(data, static_cast<std::size_t>(len));
    BIO_free(bio);
    return pem;
  };
  FakeTlsIdentity id;
  id.cert_pem = to_pem([&](BIO* b) { PEM_write_bio_X509(b, cert); });
  id.key_pem = to_pem(
      [&](BIO* b) { PEM_write_bio_PrivateKey(b, key, nullptr, nullptr, 0, nullptr, nullptr); });
  X509_free(cert);
  EVP_PKEY_free(key);
  return id;
}

struct FakeUpstream::Impl {
  class Responder final : public FakeResponder {
   public:
    Responder(Impl& impl, Transport& t) : impl_(impl), t_(t) {}
    bool Write(std::string_view bytes) override { return t_.WriteAll(bytes); }
    void Pause(int ms) override {
      std::unique_lock lock(impl_.mu);
      impl_.cv.wait_for(lock, std::chrono::milliseconds(ms), [&] { return impl_.stopping; });
    }
    bool WaitForPeerClose(int timeout_ms) override {
      const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
      while (std::chrono::steady_clock::now() < until) {
        pollfd p{t_.Fd(), POLLIN, 0};
        if (::poll(&p, 1, 20) > 0) {
          if (p.revents & (POLLHUP | POLLERR)) return true;
          char c;
          const auto n = ::recv(t_.Fd(), &c, 1, MSG_PEEK | MSG_DONTWAIT);
          if (n <= 0) return true;
        }
        std::lock_guard lock(impl_.mu);
        if (impl_.stopping) return false;
      }
      return false;
    }
    void CloseAfterResponse() override { close_ = true; }
    void ResetAfterResponse() override {
      close_ = true;
      reset_ = true;
    }
    void SetSendBufferBytes(int bytes) override {
      ::setsockopt(t_.Fd(), SOL_SOCKET, SO_SNDBUF, &bytes, sizeof bytes);
    }
    bool close_ = false;
    bool reset_ = false;

   private:
    Impl& impl_;
    Transport& t_;
  };

  Impl(Handler h, std::optional<FakeTlsIdentity> tls_identity)
      : handler(std::move(h)), acceptor(ioc), tls_ctx(ssl::context::tls_server) {
    if (tls_identity) {
      tls = true;
      tls_ctx.use_certificate_chain(
          asio::buffer(tls_identity->cert_pem.data(), tls_identity->cert_pem.size()));
      tls_ctx.use_private_key(
          asio::buffer(tls_identity->key_pem.data(), tls_identity->key_pem.size()),
          ssl::context::pem);
    }
    tcp::endpoint ep(asio::ip::make_address("127.0.0.1"), 0);
    acceptor.open(ep.protocol());
    acceptor.set_option(tcp::acceptor::reuse_address(true));
    acceptor.bind(ep);
    acceptor.listen();
    port = acceptor.local_endpoint().port();
    accept_thread = std::thread([this] { AcceptLoop(); });
  }

  ~Impl() {
    {
      std::lock_guard lock(mu);
      stopping = true;
      for (auto* s : sockets) ::shutdown(s->native_handle(), SHUT_RDWR);
    }
    cv.notify_all();
    ::shutdown(acceptor.native_handle(), SHUT_RDWR);  // wakes accept() on Linux
    accept_thread.join();
    for (auto& t : connection_threads) t.join();
  }

  void AcceptLoop() {
    for (;;) {
      auto socket = std::make_unique<tcp::socket>(ioc);
      error_code ec;
      acceptor.accept(*socket, ec);
      std::lock_guard lock(mu);
      if (stopping || ec) return;
      ++accepted;
      const int id = accepted;
      sockets.push_back(socket.get());
      connection_threads.emplace_back(
          [this, id, s = std::move(socket)]() mutable { Serve(id, std::move(s)); });
    }
  }

  void Serve(int id, std::unique_ptr<tcp::socket> socket) {
    socket->set_option(tcp::no_delay(true));
    std::unique_ptr<Transport> transport;
    if (tls) {
      auto t = std::make_unique<TlsTransport>(*socket, tls_ctx);
      if (t->Handshake()) transport = std::move(t);
    } else {
      transport = std::make_unique<PlainTransport>(*socket);
    }
    bool reset = false;
    if (transport) reset = ServeRequests(id, *transport);
    std::lock_guard lock(mu);
    sockets.remove(socket.get());
    error_code ignored;
    if (reset) {
      // SO_LINGER with a zero timeout: close() sends RST (and no FIN first,
      // so no shutdown()).
      socket->set_option(asio::socket_base::linger(true, 0), ignored);
    } else {
      socket->shutdown(tcp::socket::shutdown_both, ignored);
    }
    socket->close(ignored);
    ++closed;
  }

  // Serves requests until the peer or a handler closes; true when the handler
  // asked for a reset.
  bool ServeRequests(int id, Transport& t) {
    std::string buf;
    for (int index = 0;; ++index) {
      // Request head.
      std::size_t head_end;
      while ((head_end = buf.find("\r\n\r\n")) == std::string::npos) {
        char tmp[4096];
        error_code ec;
        const auto n = t.ReadSome(tmp, sizeof tmp, ec);
        if (ec || n == 0) return false;
        buf.append(tmp, n);
      }
      FakeRequest req;
      req.connection_id = id;
      req.request_index = index;
      std::string head = buf.substr(0, head_end);
      buf.erase(0, head_end + 4);
      std::size_t line_end = head.find("\r\n");
      const std::string request_line = head.substr(0, line_end);
      const auto sp1 = request_line.find(' ');
      const auto sp2 = request_line.find(' ', sp1 + 1);
      req.method = request_line.substr(0, sp1);
      req.target = request_line.substr(sp1 + 1, sp2 - sp1 - 1);
      std::size_t pos = line_end == std::string::npos ? head.size() : line_end + 2;
      while (pos < head.size()) {
        auto end = head.find("\r\n", pos);
        if (end == std::string::npos) end = head.size();
        const std::string line = head.substr(pos, end - pos);
        const auto colon = line.find(':');
        if (colon != std::string::npos) {
          req.headers[Lower(line.substr(0, colon))] = Trim(line.substr(colon + 1));
        }
        pos = end + 2;
      }
      std::size_t length = 0;
      if (auto it = req.headers.find("content-length"); it != req.headers.end()) {
        length = std::stoul(it->second);
      }
      while (buf.size() < length) {
        char tmp[4096];
        error_code ec;
        const auto n = t.ReadSome(tmp, sizeof tmp, ec);
        if (ec || n == 0) return false;
        buf.append(tmp, n);
      }
      req.body = buf.substr(0, length);
      buf.erase(0, length);
      {
        std::lock_guard lock(mu);
        requests.push_back(req);
      }
      Responder responder(*this, t);
      handler(req, responder);
      if (responder.close_) return responder.reset_;
      std::lock_guard lock(mu);
      if (stopping) return false;
    }
  }

  Handler handler;
  asio::io_context ioc;  // only for socket construction; all I/O is blocking
  tcp::acceptor acceptor;
  ssl::context tls_ctx;
  bool tls = false;
  std::uint16_t port = 0;
  std::thread accept_thread;

  mutable std::mutex mu;
  std::condition_variable cv;
  bool stopping = false;
  int accepted = 0;
  int closed = 0;
  std::list<tcp::socket*> sockets;
  std::list<std::thread> connection_threads;
  std::vector<FakeRequest> requests;
};

FakeUpstream::FakeUpstream(Handler handler, std::optional<FakeTlsIdentity> tls)
    : impl_(std::make_unique<Impl>(std::move(handler), std::move(tls))) {}

FakeUpstream::~FakeUpstream() = default;

std::uint16_t FakeUpstream::port() const { return impl_->port; }

std::string FakeUpstream::BaseUrl(std::string_view host) const {
  return std::string(impl_->tls ? "https://" : "http://") + std::string(host) + ":" +
         std::to_string(impl_->port) + "/v1";
}

int FakeUpstream::connections() const {
  std::lock_guard lock(impl_->mu);
  return impl_->accepted;
}

int FakeUpstream::closed_connections() const {
  std::lock_guard lock(impl_->mu);
  return impl_->closed;
}

std::vector<FakeRequest> FakeUpstream::requests() const {
  std::lock_guard lock(impl_->mu);
  return impl_->requests;
}

std::uint16_t UnusedPort() {
  asio::io_context ioc;
  tcp::acceptor a(ioc, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
  const auto port = a.local_endpoint().port();
  a.close();
  return port;
}

}  // namespace tollgate::providers::testing
