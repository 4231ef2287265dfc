#include "proxy_config.hpp"

#include "tollgate/core/text.hpp"
#include "tollgate/wire/common.hpp"

#include <arpa/inet.h>
#include <boost/url/parse.hpp>
#include <boost/url/url_view.hpp>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cstring>

namespace tollgate::providers::detail {
namespace {

Error ProxyError(std::string_view source, std::string_view what) {
  return Error{ErrorCode::kInvalidArgument, std::string(source) + ": " + std::string(what), "proxy", {}, {}, {}};
}

std::string Lower(std::string_view s) {
  std::string out(s);
  std::transform(out.begin(), out.end(), out.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return out;
}

// An IP literal's bytes: 4 for IPv4, 16 for IPv6.
bool ParseIp(std::string_view text, std::array<unsigned char, 16>& addr, bool& v6) {
  const std::string s(text);
  if (inet_pton(AF_INET, s.c_str(), addr.data()) == 1) {
    v6 = false;
    return true;
  }
  if (inet_pton(AF_INET6, s.c_str(), addr.data()) == 1) {
    v6 = true;
    return true;
  }
  return false;
}

bool PrefixEqual(const std::array<unsigned char, 16>& a, const std::array<unsigned char, 16>& b, int bits) {
  const int full = bits / 8;
  if (std::memcmp(a.data(), b.data(), static_cast<std::size_t>(full)) != 0) return false;
  const int rest = bits % 8;
  if (rest == 0) return true;
  const unsigned char mask = static_cast<unsigned char>(0xff << (8 - rest));
  return (a[full] & mask) == (b[full] & mask);
}

std::optional<std::uint16_t> ParsePort(std::string_view s) {
  unsigned value = 0;
  auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), value);
  if (ec != std::errc() || ptr != s.data() + s.size() || value == 0 || value > 65535) return std::nullopt;
  return static_cast<std::uint16_t>(value);
}

const char* Env(const GetEnvFn& getenv, const char* name) {
  const char* v = getenv(name);
  return v != nullptr && *v != '\0' ? v : nullptr;
}

}  // namespace

std::string ProxyServer::Authority() const {
  const std::string h = host.find(':') != std::string::npos ? "[" + host + "]" : host;
  return h + ":" + std::to_string(port);
}

NoProxyList NoProxyList::Parse(std::string_view list) {
  NoProxyList out;
  while (!list.empty()) {
    const auto comma = list.find(',');
    std::string_view token = TrimOws(list.substr(0, comma));
    list = comma == std::string_view::npos ? std::string_view() : list.substr(comma + 1);
    if (token.empty()) continue;
    if (token == "*") {
      out.all_ = true;
      continue;
    }
    Entry e;
    // Split off a port: "[v6]:port", "name:port", "v4:port". A bare IPv6
    // literal has several colons and no brackets: no port then.
    if (token.front() == '[') {
      const auto close = token.find(']');
      if (close == std::string_view::npos) continue;
      std::string_view rest = token.substr(close + 1);
      if (!rest.empty()) {
        if (rest.front() != ':') continue;
        e.port = ParsePort(rest.substr(1));
        if (!e.port) continue;
      }
      token = token.substr(1, close - 1);
    } else if (std::count(token.begin(), token.end(), ':') == 1) {
      const auto colon = token.find(':');
      e.port = ParsePort(token.substr(colon + 1));
      if (!e.port) continue;
      token = token.substr(0, colon);
    }
    std::string_view address = token;
    std::string_view bits;
    if (const auto slash = token.find('/'); slash != std::string_view::npos) {
      address = token.substr(0, slash);
      bits = token.substr(slash + 1);
    }
    if (ParseIp(address, e.addr, e.v6)) {
      e.ip = true;
      const int max_bits = e.v6 ? 128 : 32;
      e.prefix_bits = max_bits;
      if (!bits.empty() || token.find('/') != std::string_view::npos) {
        int b = -1;
        auto [ptr, ec] = std::from_chars(bits.data(), bits.data() + bits.size(), b);
        if (ec != std::errc() || ptr != bits.data() + bits.size() || b < 0 || b > max_bits) continue;
        e.prefix_bits = b;
      }
      out.entries_.push_back(e);
      continue;
    }
    if (!bits.empty() || token.find('/') != std::string_view::npos) continue;  // a CIDR on a name
    std::string name = Lower(token);
    while (!name.empty() && name.front() == '.') name.erase(0, 1);
    while (!name.empty() && name.back() == '.') name.pop_back();
    if (name.empty()) continue;
    e.name = std::move(name);
    out.entries_.push_back(std::move(e));
  }
  return out;
}

bool NoProxyList::Matches(std::string_view host, std::uint16_t port) const {
  if (all_) return true;
  if (entries_.empty()) return false;
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  std::array<unsigned char, 16> addr{};
  bool v6 = false;
  const bool is_ip = ParseIp(host, addr, v6);
  std::string name;
  if (!is_ip) {
    name = Lower(host);
    while (!name.empty() && name.back() == '.') name.pop_back();  // "example.com." is "example.com"
  }
  for (const Entry& e : entries_) {
    if (e.port && *e.port != port) continue;
    if (e.ip) {
      if (is_ip && v6 == e.v6 && PrefixEqual(addr, e.addr, e.prefix_bits)) return true;
      continue;
    }
    if (is_ip) continue;
    if (name == e.name) return true;
    if (name.size() > e.name.size() && name.ends_with(e.name) && name[name.size() - e.name.size() - 1] == '.') {
      return true;
    }
  }
  return false;
}

bool IsLoopbackHost(std::string_view host) {
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  std::array<unsigned char, 16> addr{};
  bool v6 = false;
  if (ParseIp(host, addr, v6)) {
    if (!v6) return addr[0] == 127;
    static constexpr std::array<unsigned char, 16> kV6Loopback{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};
    return addr == kV6Loopback;
  }
  std::string name = Lower(host);
  while (!name.empty() && name.back() == '.') name.pop_back();
  return name == "localhost" || name.ends_with(".localhost");
}

const ProxyServer* ProxySettings::For(bool tls, std::string_view host, std::uint16_t port) const {
  const std::optional<ProxyServer>& proxy = tls ? https : http;
  if (!proxy) return nullptr;
  if (IsLoopbackHost(host) || no_proxy.Matches(host, port)) return nullptr;
  return &*proxy;
}

Result<ProxyServer> ParseProxyUrl(std::string_view url, std::string_view source) {
  url = TrimOws(url);
  std::string text(url);
  if (text.find("://") == std::string::npos) text = "http://" + text;  // curl: no scheme = http
  auto parsed = boost::urls::parse_uri(text);
  if (!parsed) return ProxyError(source, "is not a valid proxy URL");
  const boost::urls::url_view u = *parsed;
  const std::string scheme = Lower(u.scheme());
  if (scheme == "https") {
    return ProxyError(source, "https:// proxies (TLS to the proxy) are not supported; use an http:// proxy");
  }
  if (scheme != "http") return ProxyError(source, "only http:// proxies are supported");
  if (u.has_query() || u.has_fragment() || (!u.encoded_path().empty() && u.encoded_path() != "/")) {
    return ProxyError(source, "a proxy URL has no path, query or fragment");
  }
  if (u.host_type() == boost::urls::host_type::none || u.host_type() == boost::urls::host_type::ipvfuture) {
    return ProxyError(source, "the proxy URL has no usable host");
  }
  ProxyServer proxy;
  proxy.host = u.host_address();
  if (proxy.host.empty()) return ProxyError(source, "the proxy URL has no host");
  if (u.has_port()) {
    if (u.port_number() == 0) return ProxyError(source, "the proxy URL has an invalid port");
    proxy.port = u.port_number();
  }
  if (u.has_userinfo()) {
    const std::string user = u.user();
    const std::string password = u.password();
    if (!user.empty() || !password.empty()) {
      for (char c : user + password) {
        if (c == '\r' || c == '\n' || c == '\0') return ProxyError(source, "the proxy credentials contain CR, LF or NUL");
      }
      proxy.authorization = "Basic " + wire::Base64(user + ":" + password);
      proxy.password = password;
    }
  }
  return proxy;
}

Result<ProxySettings> ResolveProxySettings(const std::optional<std::string>& proxy,
                                           const std::optional<std::string>& no_proxy, const GetEnvFn& getenv) {
  ProxySettings settings;
  if (proxy) {
    if (!TrimOws(*proxy).empty()) {
      auto p = ParseProxyUrl(*proxy, "proxy");
      if (!p) return p.error();
      settings.http = *p;
      settings.https = std::move(*p);
    }
  } else {
    const char* https_name = "https_proxy";
    const char* https = Env(getenv, https_name);
    if (https == nullptr) https = Env(getenv, https_name = "HTTPS_PROXY");
    if (https != nullptr) {
      auto p = ParseProxyUrl(https, https_name);
      if (!p) return p.error();
      settings.https = std::move(*p);
    }
    const char* http_name = "http_proxy";
    const char* http = Env(getenv, http_name);
    if (http == nullptr && Env(getenv, "REQUEST_METHOD") == nullptr) http = Env(getenv, http_name = "HTTP_PROXY");
    if (http != nullptr) {
      auto p = ParseProxyUrl(http, http_name);
      if (!p) return p.error();
      settings.http = std::move(*p);
    }
  }
  if (no_proxy) {
    settings.no_proxy = NoProxyList::Parse(*no_proxy);
  } else {
    const char* list = Env(getenv, "no_proxy");
    if (list == nullptr) list = Env(getenv, "NO_PROXY");
    if (list != nullptr) settings.no_proxy = NoProxyList::Parse(list);
  }
  return settings;
}

}  // namespace tollgate::providers::detail
