// A local forward HTTP proxy for provider tests (RFC 9110 section 9.3.6
// CONNECT tunnels; RFC 9112 section 3.2.2 absolute-form requests), the way
// squid or tinyproxy would behave on the wire. Listens on 127.0.0.1, port 0;
// one thread per client connection, blocking POSIX sockets.
//
//   CONNECT host:port  -> connects to host:port (MapHost'ed names first), answers "200 Connection
//                         established", then relays bytes both ways.
//   GET/POST http://host:port/path
//                      -> connects to host:port, forwards the request in
//                         origin form without Proxy-Authorization, then relays
//                         bytes both ways until either side closes.
// With `required_authorization` set, a request without exactly that
// Proxy-Authorization value gets 407 with Proxy-Authenticate. With
// `refuse_status` set, every request gets that status instead.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace tollgate::providers::testing {

struct ProxiedRequest {
  std::string method;
  std::string target;
  std::map<std::string, std::string> headers;  // names lower-cased
};

class FakeProxy {
 public:
  explicit FakeProxy(std::string required_authorization = {}, int refuse_status = 0);
  ~FakeProxy();  // closes every connection and joins all threads

  // Makes the proxy connect to `address` (an IP literal) for `name`, so that
  // tests can use non-loopback host names (loopback ones are never proxied).
  void MapHost(const std::string& name, const std::string& address);

  std::uint16_t port() const;
  // "http://[userinfo@]127.0.0.1:PORT"
  std::string Url(const std::string& userinfo = {}) const;
  int connections() const;                         // accepted so far
  std::vector<ProxiedRequest> requests() const;    // request heads seen, in order
  std::string tunneled_bytes() const;              // what clients sent into CONNECT tunnels

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace tollgate::providers::testing
