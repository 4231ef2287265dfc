#include "fake_proxy.hpp"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <csignal>
#include <list>
#include <mutex>
#include <stdexcept>
#include <thread>

namespace tollgate::providers::testing {
namespace {

const bool kSigpipeIgnored = [] {
  std::signal(SIGPIPE, SIG_IGN);
  return true;
}();

std::string Lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return s;
}

bool WriteAll(int fd, const std::string& bytes) {
  std::size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = ::send(fd, bytes.data() + done, bytes.size() - done, MSG_NOSIGNAL);
    if (n <= 0) return false;
    done += static_cast<std::size_t>(n);
  }
  return true;
}

// TCP connection to host:port (any address getaddrinfo gives), or -1.
int Dial(const std::string& host, const std::string& port) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* list = nullptr;
  if (::getaddrinfo(host.c_str(), port.c_str(), &hints, &list) != 0) return -1;
  int fd = -1;
  for (addrinfo* a = list; a != nullptr; a = a->ai_next) {
    fd = ::socket(a->ai_family, a->ai_socktype, a->ai_protocol);
    if (fd < 0) continue;
    if (::connect(fd, a->ai_addr, a->ai_addrlen) == 0) break;
    ::close(fd);
    fd = -1;
  }
  ::freeaddrinfo(list);
  return fd;
}

// "host:port" or "[v6]:port" -> host, port.
bool SplitAuthority(const std::string& authority, std::string& host, std::string& port) {
  if (!authority.empty() && authority.front() == '[') {
    const auto close = authority.find(']');
    if (close == std::string::npos || authority.size() < close + 2 || authority[close + 1] != ':') return false;
    host = authority.substr(1, close - 1);
    port = authority.substr(close + 2);
    return true;
  }
  const auto colon = authority.rfind(':');
  if (colon == std::string::npos) return false;
  host = authority.substr(0, colon);
  port = authority.substr(colon + 1);
  return true;
}

}  // namespace

struct FakeProxy::Impl {
  Impl(std::string auth, int refuse) : required_authorization(std::move(auth)), refuse_status(refuse) {
    listen_fd = ::socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    ::setsockopt(listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = 0;
    if (::bind(listen_fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 || ::listen(listen_fd, 64) != 0) {
      throw std::runtime_error("FakeProxy: cannot listen");
    }
    socklen_t len = sizeof addr;
    ::getsockname(listen_fd, reinterpret_cast<sockaddr*>(&addr), &len);
    port = ntohs(addr.sin_port);
    accept_thread = std::thread([this] { AcceptLoop(); });
  }

  ~Impl() {
    {
      std::lock_guard lock(mu);
      stopping = true;
      for (int fd : open_fds) ::shutdown(fd, SHUT_RDWR);
    }
    ::shutdown(listen_fd, SHUT_RDWR);
    accept_thread.join();
    for (auto& t : threads) t.join();
    ::close(listen_fd);
  }

  void Track(int fd) {
    std::lock_guard lock(mu);
    open_fds.push_back(fd);
    if (stopping) ::shutdown(fd, SHUT_RDWR);
  }
  void Untrack(int fd) {
    std::lock_guard lock(mu);
    open_fds.remove(fd);
    ::close(fd);
  }

  void AcceptLoop() {
    for (;;) {
      const int fd = ::accept(listen_fd, nullptr, nullptr);
      std::lock_guard lock(mu);
      if (fd < 0 || stopping) {
        if (fd >= 0) ::close(fd);
        return;
      }
      ++accepted;
      open_fds.push_back(fd);
      threads.emplace_back([this, fd] {
        Serve(fd);
        Untrack(fd);
      });
    }
  }

  void Serve(int client) {
    std::string buf;
    std::size_t head_end;
    while ((head_end = buf.find("\r\n\r\n")) == std::string::npos) {
      char tmp[4096];
      const ssize_t n = ::recv(client, tmp, sizeof tmp, 0);
      if (n <= 0) return;
      buf.append(tmp, static_cast<std::size_t>(n));
    }
    const std::string head = buf.substr(0, head_end);
    std::string rest = buf.substr(head_end + 4);
    ProxiedRequest req;
    std::size_t line_end = head.find("\r\n");
    const std::string line = head.substr(0, line_end);
    const auto sp1 = line.find(' ');
    const auto sp2 = line.find(' ', sp1 + 1);
    req.method = line.substr(0, sp1);
    req.target = line.substr(sp1 + 1, sp2 - sp1 - 1);
    std::vector<std::string> forwarded_headers;
    for (std::size_t pos = line_end == std::string::npos ? head.size() : line_end + 2; pos < head.size();) {
      auto end = head.find("\r\n", pos);
      if (end == std::string::npos) end = head.size();
      const std::string h = head.substr(pos, end - pos);
      const auto colon = h.find(':');
      if (colon != std::string::npos) {
        std::string value = h.substr(colon + 1);
        while (!value.empty() && value.front() == ' ') value.erase(0, 1);
        const std::string name = Lower(h.substr(0, colon));
        req.headers[name] = value;
        if (name != "proxy-authorization" && name != "proxy-connection") forwarded_headers.push_back(h);
      }
      pos = end + 2;
    }
    {
      std::lock_guard lock(mu);
      requests.push_back(req);
    }
    if (refuse_status != 0) {
      WriteAll(client, "HTTP/1.1 " + std::to_string(refuse_status) +
                           " Refused\r\nContent-Type: text/plain\r\nContent-Length: 7\r\nConnection: close\r\n\r\nrefused");
      return;
    }
    if (!required_authorization.empty()) {
      auto it = req.headers.find("proxy-authorization");
      if (it == req.headers.end() || it->second != required_authorization) {
        WriteAll(client,
                 "HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=\"test\"\r\n"
                 "Content-Type: text/plain\r\nContent-Length: 4\r\nConnection: close\r\n\r\nauth");
        return;
      }
    }
    std::string host, port;
    int upstream = -1;
    const bool tunnel = req.method == "CONNECT";
    if (tunnel) {
      if (SplitAuthority(req.target, host, port)) upstream = Dial(Mapped(host), port);
      if (upstream < 0) {
        WriteAll(client, "HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        return;
      }
      WriteAll(client, "HTTP/1.1 200 Connection established\r\n\r\n");
    } else {
      const std::string prefix = "http://";
      const auto slash = req.target.find('/', prefix.size());
      if (req.target.rfind(prefix, 0) != 0 || slash == std::string::npos ||
          !SplitAuthority(req.target.substr(prefix.size(), slash - prefix.size()), host, port) ||
          (upstream = Dial(Mapped(host), port)) < 0) {
        WriteAll(client, "HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        return;
      }
      std::string out = req.method + " " + req.target.substr(slash) + " HTTP/1.1\r\n";
      for (const auto& h : forwarded_headers) out += h + "\r\n";
      out += "\r\n";
      WriteAll(upstream, out);
    }
    Track(upstream);
    if (!rest.empty()) {
      if (tunnel) AddTunneled(rest);
      WriteAll(upstream, rest);
    }
    Relay(client, upstream, tunnel);
    Untrack(upstream);
  }

  std::string Mapped(const std::string& host) {
    std::lock_guard lock(mu);
    auto it = hosts.find(host);
    return it == hosts.end() ? host : it->second;
  }

  void AddTunneled(const std::string& bytes) {
    std::lock_guard lock(mu);
    tunneled += bytes;
  }

  void Relay(int client, int upstream, bool tunnel) {
    pollfd fds[2] = {{client, POLLIN, 0}, {upstream, POLLIN, 0}};
    char tmp[16384];
    for (;;) {
      if (::poll(fds, 2, 100) < 0) return;
      {
        std::lock_guard lock(mu);
        if (stopping) return;
      }
      for (int i = 0; i < 2; ++i) {
        if ((fds[i].revents & (POLLIN | POLLHUP | POLLERR)) == 0) continue;
        const ssize_t n = ::recv(fds[i].fd, tmp, sizeof tmp, 0);
        if (n <= 0) {
          ::shutdown(fds[1 - i].fd, SHUT_RDWR);
          return;
        }
        const std::string bytes(tmp, static_cast<std::size_t>(n));
        if (i == 0 && tunnel) AddTunneled(bytes);
        if (!WriteAll(fds[1 - i].fd, bytes)) return;
      }
    }
  }

  const std::string required_authorization;
  const int refuse_status;
  int listen_fd = -1;
  std::uint16_t port = 0;
  std::thread accept_thread;
  mutable std::mutex mu;
  bool stopping = false;
  int accepted = 0;
  std::list<int> open_fds;
  std::list<std::thread> threads;
  std::vector<ProxiedRequest> requests;
  std::string tunneled;
  std::map<std::string, std::string> hosts;
};

FakeProxy::FakeProxy(std::string required_authorization, int refuse_status)
    : impl_(std::make_unique<Impl>(std::move(required_authorization), refuse_status)) {}
FakeProxy::~FakeProxy() = default;

void FakeProxy::MapHost(const std::string& name, const std::string& address) {
  std::lock_guard lock(impl_->mu);
  impl_->hosts[name] = address;
}

std::uint16_t FakeProxy::port() const { return impl_->port; }

std::string FakeProxy::Url(const std::string& userinfo) const {
  return "http://" + (userinfo.empty() ? std::string() : userinfo + "@") + "127.0.0.1:" + std::to_string(impl_->port);
}

int FakeProxy::connections() const {
  std::lock_guard lock(impl_->mu);
  return impl_->accepted;
}

std::vector<ProxiedRequest> FakeProxy::requests() const {
  std::lock_guard lock(impl_->mu);
  return impl_->requests;
}

std::string FakeProxy::tunneled_bytes() const {
  std::lock_guard lock(impl_->mu);
  return impl_->tunneled;
}

}  // namespace tollgate::providers::testing
