// A local HTTP/1.1 upstream for provider tests whose replies come from a
// lambda (in the spirit of userver's utest/http_server_mock.hpp and Envoy's
// test/integration/fake_upstream.h). Listens on 127.0.0.1, port 0; one thread
// per connection with blocking sockets; keep-alive (several requests per
// connection) unless the handler closes. Optional TLS with a PEM cert/key.
//
// Asio is confined to fake_upstream.cpp so test TUs stay light.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace tollgate::providers::testing {

struct FakeRequest {
  std::string method;
  std::string target;
  std::map<std::string, std::string> headers;  // names lower-cased
  std::string body;
  int connection_id = 0;  // 1-based accept order
  int request_index = 0;  // 0-based index on its connection
};

// Writes the reply on the handler's connection. Blocking; safe to call only
// from the handler.
class FakeResponder {
 public:
  virtual ~FakeResponder() = default;
  // Raw bytes as one write. False once the peer is gone.
  virtual bool Write(std::string_view bytes) = 0;
  // Sleeps `ms`, returning early when the server shuts down.
  virtual void Pause(int ms) = 0;
  // True when the client closes the connection within `timeout_ms`.
  virtual bool WaitForPeerClose(int timeout_ms) = 0;
  // Close the connection after the handler returns (no keep-alive).
  virtual void CloseAfterResponse() = 0;
  // Abort the connection after the handler returns: close with SO_LINGER 0,
  // so the peer gets a TCP RST instead of a FIN.
  virtual void ResetAfterResponse() = 0;
  // Shrinks this connection's kernel send buffer (SO_SNDBUF), so that writes
  // block soon once the peer stops reading (flow-control tests).
  virtual void SetSendBufferBytes(int bytes) = 0;

  // Full response with Content-Length; `extra_headers` are "Name: value\r\n" lines.
  bool SendResponse(int status, std::string_view content_type, std::string_view body,
                    std::string_view extra_headers = {});
  // Starts a chunked response (Transfer-Encoding: chunked).
  bool StartChunked(int status = 200, std::string_view content_type = "text/event-stream");
  // One chunk per call: each is a separate TCP write.
  bool Chunk(std::string_view data);
  bool EndChunked();
  // Sends `bytes` as `pieces` chunks with `pause_ms` between them, so one SSE
  // event arrives in several TCP segments.
  bool ChunkSplit(std::string_view bytes, int pieces = 3, int pause_ms = 2);
};

struct FakeTlsIdentity {
  std::string cert_pem;
  std::string key_pem;
};

// A self-signed certificate (EC P-256, SHA-256, valid for a day) for
// `dns_name`, as subjectAltName DNS entry and CN. Built with OpenSSL 3 APIs.
FakeTlsIdentity MakeSelfSignedIdentity(const std::string& dns_name);

class FakeUpstream {
 public:
  using Handler = std::function<void(const FakeRequest&, FakeResponder&)>;

  explicit FakeUpstream(Handler handler, std::optional<FakeTlsIdentity> tls = std::nullopt);
  ~FakeUpstream();  // closes every connection and joins all threads

  std::uint16_t port() const;
  // "http://127.0.0.1:PORT/v1" (or https:// with TLS); `host` replaces 127.0.0.1.
  std::string BaseUrl(std::string_view host = "127.0.0.1") const;
  int connections() const;                   // accepted so far
  int closed_connections() const;            // closed by this side so far (after its handler returned)
  std::vector<FakeRequest> requests() const;  // received so far, in order

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// A local port with nothing listening (bound, then closed).
std::uint16_t UnusedPort();

}  // namespace tollgate::providers::testing
