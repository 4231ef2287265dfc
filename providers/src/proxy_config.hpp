// Forward-proxy settings for upstream calls (internal to providers/): which
// proxy, if any, a request to an upstream goes through. Pure: no I/O, no Asio.
//
// Where the settings come from (each of the two independently):
//   proxy     an explicit URL (HttpClientOptions::proxy) for http and https
//             upstreams alike; "" = never use a proxy, whatever the
//             environment says; unset = the environment:
//               https upstreams: https_proxy, else HTTPS_PROXY
//               http upstreams:  http_proxy, else HTTP_PROXY; HTTP_PROXY is
//                 ignored while REQUEST_METHOD is set (a CGI environment,
//                 where a request's `Proxy:` header becomes HTTP_PROXY:
//                 "httpoxy", CVE-2016-5385; curl reads only the lower-case
//                 name for the same reason, Go's net/http skips HTTP_PROXY
//                 under CGI as we do)
//             An empty variable counts as unset. ALL_PROXY is not read.
//   no_proxy  an explicit list (HttpClientOptions::no_proxy); "" = no
//             exceptions; unset = no_proxy, else NO_PROXY.
//
// Proxy URLs: `http://[user[:password]@]host[:port][/]`; a URL without a
// scheme is taken as http:// (as curl does). The port defaults to 1080, curl's
// default for a proxy without one (curl.se/libcurl/c/CURLOPT_PROXY.html). Only
// plain-HTTP proxies are supported (https:// proxies, i.e. TLS to the proxy,
// and socks* are refused at startup, not silently bypassed). User and password
// are percent-decoded and sent as `Proxy-Authorization: Basic
// base64(user:password)` (RFC 9110 section 11.7.2, RFC 7617): on the CONNECT
// of an https upstream, on every absolute-form request of an http upstream;
// never to the upstream itself.
//
// NO_PROXY follows curl (curl.se/libcurl/c/CURLOPT_NOPROXY.html and
// everything.curl.dev/usingcurl/proxies/env): a comma-separated list, blanks
// around entries ignored, case-insensitive;
//   "*" alone                     matches every host;
//   a name, with or without a leading dot ("example.com", ".example.com")
//                                 matches that host and every subdomain
//                                 ("www.example.com"), never
//                                 "notexample.com" or "example.com.org";
//   an IP literal (IPv6 without brackets), optionally in CIDR form
//   ("10.0.0.0/8", "::1", "fd00::/8")
//                                 matches a host given as that IP literal
//                                 (hosts are not resolved for the match);
//   "name:port", "ip:port", "[v6]:port"
//                                 matches that host on that port only (an
//                                 extension that Go's x/net/http/httpproxy
//                                 and Node.js also accept; curl ignores ports).
// Malformed entries (an empty name, a bad CIDR prefix) are skipped, as curl
// skips them.
//
// Loopback upstreams ("localhost", "*.localhost", 127.0.0.0/8, ::1) are never
// proxied, whatever NO_PROXY says: a proxy would reach its own loopback, not
// ours (a local inference server, a sidecar). curl has no such rule; Go's
// golang.org/x/net/http/httpproxy (Config.ProxyFunc) has the same one.
//
// Thread-safety: the types here are immutable after construction; const
// members may be called from any thread.
#pragma once

#include "tollgate/core/error.hpp"

#include <array>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace tollgate::providers::detail {

struct ProxyServer {
  std::string host;           // DNS name or IP literal (no brackets)
  std::uint16_t port = 1080;
  // "Basic <base64>" when the URL had user-info, else empty. A secret: never
  // logged, never in an error message.
  std::string authorization;
  std::string password;       // percent-decoded, for redaction only; may be empty

  // "host:port", IPv6 literals in brackets (RFC 9112 section 3.2.3,
  // authority-form of a CONNECT).
  std::string Authority() const;
};

class NoProxyList {
 public:
  NoProxyList() = default;
  // Never fails: malformed entries are dropped (see the file comment).
  static NoProxyList Parse(std::string_view list);

  // True when a request to `host` (DNS name or IP literal without brackets) on
  // `port` must not use a proxy.
  bool Matches(std::string_view host, std::uint16_t port) const;

  bool empty() const { return !all_ && entries_.empty(); }

 private:
  struct Entry {
    bool ip = false;
    std::string name;                    // lower case, no leading or trailing dot
    std::array<unsigned char, 16> addr{};  // ip: network-order bytes (IPv4 uses 4)
    bool v6 = false;
    int prefix_bits = -1;                // ip: -1 = the whole address
    std::optional<std::uint16_t> port;
  };
  bool all_ = false;
  std::vector<Entry> entries_;
};

struct ProxySettings {
  std::optional<ProxyServer> http;   // for http:// upstreams
  std::optional<ProxyServer> https;  // for https:// upstreams (CONNECT tunnel)
  NoProxyList no_proxy;

  // The proxy to use for this upstream, or nullptr for a direct connection
  // (no proxy for its scheme, a NO_PROXY match, or a loopback host).
  // The pointer is valid as long as these settings are.
  const ProxyServer* For(bool tls, std::string_view host, std::uint16_t port) const;
};

// Parses one proxy URL (see the file comment). `source` names where it came
// from ("proxy", "HTTPS_PROXY") and starts every error message; messages
// never repeat the URL (it may hold a password). Errors: kInvalidArgument
// with `param` = "proxy".
Result<ProxyServer> ParseProxyUrl(std::string_view url, std::string_view source);

// True for "localhost", names under ".localhost" (RFC 6761 section 6.3),
// 127.0.0.0/8 and ::1 (brackets allowed).
bool IsLoopbackHost(std::string_view host);

// `getenv`: returns the variable's value or nullptr (std::getenv in
// production; a map in tests).
using GetEnvFn = std::function<const char*(const char*)>;

// Builds the settings from the explicit options and the environment (file
// comment). Errors: those of ParseProxyUrl.
Result<ProxySettings> ResolveProxySettings(const std::optional<std::string>& proxy,
                                           const std::optional<std::string>& no_proxy, const GetEnvFn& getenv);

}  // namespace tollgate::providers::detail
