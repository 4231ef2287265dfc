// providers/src/http_client.cpp over loopback: the forward proxy (CONNECT
// tunnels for https upstreams with TLS verified end to end, absolute-form
// requests for http ones, Basic credentials, 407/502, NO_PROXY, the
// environment, tunnels pooled per upstream), Accept-Encoding and gzip/deflate
// answers, and the DNS cache. Upstreams: FakeUpstream; proxy: FakeProxy (the
// wire behaviour of squid/tinyproxy); no mocks inside HttpClient.
#include "http_client.hpp"

#include "fake_proxy.hpp"
#include "fake_upstream.hpp"
#include "recording_sink.hpp"
#include "tollgate/providers/remote_provider.hpp"

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <gtest/gtest.h>
#include <unistd.h>
#include <zlib.h>

#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <mutex>
#include <thread>

namespace tollgate::providers::detail {
namespace {

using namespace std::chrono_literals;
using testing::FakeProxy;
using testing::FakeRequest;
using testing::FakeResponder;
using testing::FakeUpstream;

// Proxy credentials "tg-user" / "s3cret:pw" ("tg-user:s3cret:pw" in base64).
constexpr const char* kProxyUserInfo = "tg-user:s3cret%3Apw";
constexpr const char* kProxyPassword = "s3cret:pw";
constexpr const char* kProxyAuthorization = "Basic dGctdXNlcjpzM2NyZXQ6cHc=";
// Upstream names that only the proxy can resolve (to 127.0.0.1): loopback
// names are never proxied (proxy_config.hpp), and these resolve nowhere else,
// so a request that should have gone through the proxy cannot succeed without it.
constexpr const char* kUpstreamHost = "upstream.test";
constexpr const char* kOtherHost = "other.test";

void MapTestHosts(FakeProxy& proxy) {
  proxy.MapHost(kUpstreamHost, "127.0.0.1");
  proxy.MapHost(kOtherHost, "127.0.0.1");
}

// Collects one exchange; waits for its terminal event.
class Collector final : public HttpResponseHandler {
 public:
  void OnHead(const HttpResponseHead& h) override {
    std::lock_guard lock(mu_);
    head_ = h;
  }
  bool OnBody(std::string_view bytes) override {
    std::function<void(const std::string&)> hook;
    {
      std::lock_guard lock(mu_);
      body_.append(bytes);
      hook = on_body;
    }
    cv_.notify_all();
    if (hook) hook(body());
    return true;
  }
  void OnEnd() override {
    std::lock_guard lock(mu_);
    ended_ = true;
    cv_.notify_all();
  }
  void OnFailure(const HttpFailure& f) override {
    std::lock_guard lock(mu_);
    failure_ = f;
    cv_.notify_all();
  }
  bool Wait(std::chrono::milliseconds timeout = 10s) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, timeout, [&] { return ended_ || failure_.has_value(); });
  }
  bool WaitBody(std::string_view part, std::chrono::milliseconds timeout = 10s) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, timeout, [&] { return body_.find(part) != std::string::npos; });
  }
  std::string body() const {
    std::lock_guard lock(mu_);
    return body_;
  }
  bool ended() const {
    std::lock_guard lock(mu_);
    return ended_;
  }
  std::optional<HttpResponseHead> head() const {
    std::lock_guard lock(mu_);
    return head_;
  }
  std::optional<HttpFailure> failure() const {
    std::lock_guard lock(mu_);
    return failure_;
  }
  std::function<void(const std::string&)> on_body;

 private:
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::optional<HttpResponseHead> head_;
  std::string body_;
  bool ended_ = false;
  std::optional<HttpFailure> failure_;
};

// gzip (window_bits 31), zlib (15) or raw deflate (-15); Z_SYNC_FLUSH after
// each of `pieces`, so a reader can decode each piece as soon as it arrives.
std::vector<std::string> CompressPieces(const std::vector<std::string>& pieces, int window_bits) {
  z_stream zs{};
  deflateInit2(&zs, 6, Z_DEFLATED, window_bits, 8, Z_DEFAULT_STRATEGY);
  std::vector<std::string> out;
  char buf[8192];
  for (std::size_t i = 0; i <= pieces.size(); ++i) {
    const std::string_view piece = i < pieces.size() ? std::string_view(pieces[i]) : std::string_view();
    const int flush = i < pieces.size() ? Z_SYNC_FLUSH : Z_FINISH;
    zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(piece.data()));
    zs.avail_in = static_cast<uInt>(piece.size());
    std::string encoded;
    do {
      zs.next_out = reinterpret_cast<Bytef*>(buf);
      zs.avail_out = sizeof buf;
      deflate(&zs, flush);
      encoded.append(buf, sizeof buf - zs.avail_out);
    } while (zs.avail_out == 0);
    out.push_back(encoded);
  }
  deflateEnd(&zs);
  return out;
}

std::string Join(const std::vector<std::string>& parts) {
  std::string all;
  for (const auto& p : parts) all += p;
  return all;
}

void Ok(const FakeRequest&, FakeResponder& r) { r.SendResponse(200, "application/json", R"({"ok":true})"); }

// No message may show the proxy's address or credentials, nor the upstream's.
void ExpectClean(const std::string& message, std::initializer_list<std::string> hidden) {
  EXPECT_FALSE(message.empty());
  for (const auto& h : hidden) EXPECT_EQ(message.find(h), std::string::npos) << "'" << h << "' in: " << message;
  for (const char* secret : {kProxyPassword, "s3cret", kProxyAuthorization, "dGctdXNlcjpzM2NyZXQ6cHc="}) {
    EXPECT_EQ(message.find(secret), std::string::npos) << message;
  }
}

class HttpClientTest : public ::testing::Test {
 protected:
  HttpClientTest() : work_(boost::asio::make_work_guard(ioc_)), identity_(testing::MakeSelfSignedIdentity(kUpstreamHost)) {
    for (int i = 0; i < 2; ++i) threads_.emplace_back([this] { ioc_.run(); });
    ca_path_ = ::testing::TempDir() + "tollgate_http_client_ca_" + std::to_string(::getpid()) + ".pem";
    std::ofstream(ca_path_) << identity_.cert_pem;
  }
  ~HttpClientTest() override {
    client_.reset();
    work_.reset();
    ioc_.stop();
    for (auto& t : threads_) t.join();
    std::remove(ca_path_.c_str());
  }

  // Options that ignore whatever proxy the test machine's environment has.
  HttpClientOptions Options() {
    HttpClientOptions o;
    o.proxy = "";
    o.no_proxy = "";
    return o;
  }
  HttpClient& Make(HttpClientOptions o) {
    auto c = HttpClient::Create(ioc_, std::move(o));
    EXPECT_TRUE(c.has_value()) << (c ? "" : c.error().message);
    client_.emplace(std::move(*c));
    return *client_;
  }
  std::shared_ptr<Collector> Run(HttpUpstream upstream, std::string target = "/v1/chat/completions",
                                 std::vector<std::pair<std::string, std::string>> headers = {}) {
    auto c = std::make_shared<Collector>();
    Start(std::move(upstream), c, std::move(target), std::move(headers));
    EXPECT_TRUE(c->Wait());
    return c;
  }
  void Start(HttpUpstream upstream, std::shared_ptr<Collector> c, std::string target = "/v1/chat/completions",
             std::vector<std::pair<std::string, std::string>> headers = {}) {
    HttpRequest r;
    r.upstream = std::move(upstream);
    r.target = std::move(target);
    r.headers = std::move(headers);
    r.headers.emplace_back("Authorization", "Bearer sk-upstream-key");
    r.body = R"({"model":"m","stream":true})";
    r.connect_timeout_ms = 3000;
    r.first_byte_timeout_ms = 5000;
    r.read_idle_timeout_ms = 5000;
    client_->Start(std::move(r), std::move(c), {});
  }

  boost::asio::io_context ioc_;
  boost::asio::executor_work_guard<boost::asio::io_context::executor_type> work_;
  std::vector<std::thread> threads_;
  testing::FakeTlsIdentity identity_;
  std::string ca_path_;
  std::optional<HttpClient> client_;
};

// ------------------------------------------------------------------ proxy

TEST_F(HttpClientTest, HttpUpstreamThroughAProxyUsesAbsoluteFormAndBasicCredentials) {
  FakeUpstream upstream(Ok);
  FakeProxy proxy(kProxyAuthorization);
  MapTestHosts(proxy);
  auto o = Options();
  o.proxy = proxy.Url(kProxyUserInfo);
  Make(o);
  auto c = Run({false, kUpstreamHost, upstream.port()});
  ASSERT_TRUE(c->ended()) << c->failure()->message;
  EXPECT_EQ(c->head()->status, 200);
  EXPECT_EQ(c->body(), R"({"ok":true})");
  ASSERT_EQ(proxy.requests().size(), 1u);
  const auto seen = proxy.requests()[0];
  EXPECT_EQ(seen.method, "POST");
  EXPECT_EQ(seen.target, "http://" + std::string(kUpstreamHost) + ":" + std::to_string(upstream.port()) + "/v1/chat/completions");
  EXPECT_EQ(seen.headers.at("proxy-authorization"), kProxyAuthorization);
  EXPECT_EQ(seen.headers.at("host"), std::string(kUpstreamHost) + ":" + std::to_string(upstream.port()));
  ASSERT_EQ(upstream.requests().size(), 1u);
  EXPECT_EQ(upstream.requests()[0].target, "/v1/chat/completions");
  EXPECT_EQ(upstream.requests()[0].headers.count("proxy-authorization"), 0u);
  EXPECT_EQ(client_->Stats().proxy_tunnels, 0u);
}

TEST_F(HttpClientTest, HttpsUpstreamThroughAProxyTunnelsAndVerifiesTheUpstream) {
  FakeUpstream a(Ok, identity_);
  FakeUpstream b(Ok, identity_);
  FakeProxy proxy(kProxyAuthorization);
  MapTestHosts(proxy);
  auto o = Options();
  o.proxy = proxy.Url(kProxyUserInfo);
  o.ca_file = ca_path_;
  Make(o);
  ASSERT_TRUE(Run({true, kUpstreamHost, a.port()})->ended());
  ASSERT_EQ(proxy.requests().size(), 1u);
  const auto connect = proxy.requests()[0];
  EXPECT_EQ(connect.method, "CONNECT");
  EXPECT_EQ(connect.target, std::string(kUpstreamHost) + ":" + std::to_string(a.port()));
  EXPECT_EQ(connect.headers.at("host"), std::string(kUpstreamHost) + ":" + std::to_string(a.port()));
  EXPECT_EQ(connect.headers.at("proxy-authorization"), kProxyAuthorization);
  // Inside the tunnel: TLS to the upstream; the proxy never sees the request.
  const std::string tunneled = proxy.tunneled_bytes();
  EXPECT_FALSE(tunneled.empty());
  EXPECT_EQ(tunneled.find("POST"), std::string::npos);
  EXPECT_EQ(tunneled.find("sk-upstream-key"), std::string::npos);
  EXPECT_EQ(a.requests().at(0).target, "/v1/chat/completions");
  EXPECT_EQ(a.requests().at(0).headers.at("host"), std::string(kUpstreamHost) + ":" + std::to_string(a.port()));
  EXPECT_EQ(a.requests().at(0).headers.count("proxy-authorization"), 0u);

  // The tunnel is pooled for its upstream only: same upstream -> reused;
  // another upstream (same host, other port) -> its own CONNECT.
  ASSERT_TRUE(Run({true, kUpstreamHost, a.port()})->ended());
  EXPECT_EQ(proxy.connections(), 1);
  ASSERT_TRUE(Run({true, kUpstreamHost, b.port()})->ended());
  EXPECT_EQ(proxy.connections(), 2);
  EXPECT_EQ(proxy.requests().at(1).target, std::string(kUpstreamHost) + ":" + std::to_string(b.port()));
  EXPECT_EQ(b.requests().size(), 1u);
  EXPECT_EQ(a.requests().size(), 2u);
  const auto stats = client_->Stats();
  EXPECT_EQ(stats.proxy_tunnels, 2u);
  EXPECT_EQ(stats.connections_reused, 1u);
}

TEST_F(HttpClientTest, ATunnelToAnUpstreamWithTheWrongHostNameFailsVerification) {
  FakeUpstream upstream(Ok, identity_);  // certificate for kUpstreamHost only
  FakeProxy proxy;
  MapTestHosts(proxy);
  auto o = Options();
  o.proxy = proxy.Url();
  o.ca_file = ca_path_;
  Make(o);
  auto c = Run({true, kOtherHost, upstream.port()});
  ASSERT_TRUE(c->failure());
  EXPECT_EQ(c->failure()->kind, HttpFailureKind::kConnect);
  EXPECT_NE(c->failure()->message.find("TLS handshake"), std::string::npos) << c->failure()->message;
  EXPECT_EQ(proxy.requests().at(0).method, "CONNECT");  // the tunnel was fine; the upstream was not
  EXPECT_TRUE(upstream.requests().empty());
}

TEST_F(HttpClientTest, ATunnelToAnUntrustedUpstreamFailsVerification) {
  FakeUpstream upstream(Ok, identity_);
  FakeProxy proxy;
  MapTestHosts(proxy);
  auto o = Options();
  o.proxy = proxy.Url();  // no ca_file: the self-signed certificate is not trusted
  Make(o);
  auto c = Run({true, kUpstreamHost, upstream.port()});
  ASSERT_TRUE(c->failure());
  EXPECT_EQ(c->failure()->kind, HttpFailureKind::kConnect);
  EXPECT_NE(c->failure()->message.find("TLS handshake"), std::string::npos) << c->failure()->message;
  EXPECT_TRUE(upstream.requests().empty());
}

TEST_F(HttpClientTest, ProxyAuthenticationFailureIsAConnectFailureThatNamesNoSecret) {
  FakeUpstream plain(Ok);
  FakeUpstream tls(Ok, identity_);
  FakeProxy proxy("Basic b3RoZXI6Y3JlZHM=");  // wants other credentials
  MapTestHosts(proxy);
  auto o = Options();
  o.proxy = proxy.Url(kProxyUserInfo);
  o.ca_file = ca_path_;
  Make(o);
  for (bool use_tls : {true, false}) {
    const std::uint16_t port = use_tls ? tls.port() : plain.port();
    auto c = Run({use_tls, kUpstreamHost, port});
    ASSERT_TRUE(c->failure()) << use_tls;
    EXPECT_EQ(c->failure()->kind, HttpFailureKind::kConnect);
    EXPECT_FALSE(c->head()) << "a proxy's 407 is not the upstream's answer";
    EXPECT_NE(c->failure()->message.find("407"), std::string::npos) << c->failure()->message;
    ExpectClean(c->failure()->message, {"127.0.0.1", std::to_string(proxy.port()), "tg-user", kUpstreamHost});
  }
  EXPECT_TRUE(plain.requests().empty());
  EXPECT_TRUE(tls.requests().empty());
}

TEST_F(HttpClientTest, AProxyThatRefusesTheTunnelOrCannotBeReachedIsAConnectFailure) {
  FakeUpstream upstream(Ok, identity_);
  {
    FakeProxy proxy({}, 502);
    auto o = Options();
    o.proxy = proxy.Url(kProxyUserInfo);
    o.ca_file = ca_path_;
    Make(o);
    auto c = Run({true, kUpstreamHost, upstream.port()});
    ASSERT_TRUE(c->failure());
    EXPECT_EQ(c->failure()->kind, HttpFailureKind::kConnect);
    EXPECT_NE(c->failure()->message.find("502"), std::string::npos) << c->failure()->message;
    ExpectClean(c->failure()->message, {"127.0.0.1", std::to_string(proxy.port()), kUpstreamHost});
  }
  const auto dead = testing::UnusedPort();
  auto o = Options();
  o.proxy = "http://" + std::string(kProxyUserInfo) + "@127.0.0.1:" + std::to_string(dead);
  Make(o);
  auto c = Run({true, kUpstreamHost, upstream.port()});
  ASSERT_TRUE(c->failure());
  EXPECT_EQ(c->failure()->kind, HttpFailureKind::kConnect);
  EXPECT_NE(c->failure()->message.find("proxy"), std::string::npos) << c->failure()->message;
  ExpectClean(c->failure()->message, {"127.0.0.1", std::to_string(dead), kUpstreamHost});
  EXPECT_TRUE(upstream.requests().empty());
}

TEST_F(HttpClientTest, NoProxyHostsAndLoopbackAreReachedDirectly) {
  FakeUpstream upstream(Ok);
  FakeProxy proxy;
  MapTestHosts(proxy);
  auto o = Options();
  o.proxy = proxy.Url();
  o.no_proxy = "example.com, .upstream.test";
  Make(o);
  // Listed: direct, so the name (which only the proxy knows) does not resolve.
  auto direct = Run({false, kUpstreamHost, upstream.port()});
  ASSERT_TRUE(direct->failure());
  EXPECT_NE(direct->failure()->message.find("cannot resolve the upstream"), std::string::npos)
      << direct->failure()->message;
  EXPECT_EQ(proxy.connections(), 0);
  // Not listed: through the proxy.
  ASSERT_TRUE(Run({false, kOtherHost, upstream.port()})->ended());
  EXPECT_EQ(proxy.connections(), 1);
  // Loopback is never proxied.
  ASSERT_TRUE(Run({false, "localhost", upstream.port()})->ended());
  ASSERT_TRUE(Run({false, "127.0.0.1", upstream.port()})->ended());
  EXPECT_EQ(proxy.connections(), 1);
  EXPECT_EQ(upstream.requests().size(), 3u);
}

TEST_F(HttpClientTest, TheEnvironmentGivesTheProxyUnlessTheOptionsSayOtherwise) {
  FakeUpstream upstream(Ok, identity_);
  FakeProxy proxy;
  MapTestHosts(proxy);
  ::setenv("https_proxy", proxy.Url().c_str(), 1);
  ::unsetenv("no_proxy");
  ::unsetenv("NO_PROXY");
  auto from_env = Options();
  from_env.proxy.reset();
  from_env.no_proxy.reset();
  from_env.ca_file = ca_path_;
  Make(from_env);
  ASSERT_TRUE(Run({true, kUpstreamHost, upstream.port()})->ended());
  EXPECT_EQ(proxy.connections(), 1);

  auto none = from_env;
  none.proxy = "";  // explicit: no proxy, whatever the environment says
  Make(none);
  auto direct = Run({true, kUpstreamHost, upstream.port()});
  ASSERT_TRUE(direct->failure());  // the name resolves only at the proxy
  EXPECT_EQ(proxy.connections(), 1);

  ::setenv("NO_PROXY", kUpstreamHost, 1);
  Make(from_env);
  ASSERT_TRUE(Run({true, kUpstreamHost, upstream.port()})->failure());
  ASSERT_TRUE(Run({true, kOtherHost, upstream.port()})->failure());  // proxied; certificate is for kUpstreamHost
  EXPECT_EQ(proxy.connections(), 2);

  ::setenv("https_proxy", "socks5://u:hunter2@127.0.0.1:1080", 1);
  auto bad = HttpClient::Create(ioc_, from_env);
  ::unsetenv("https_proxy");
  ::unsetenv("NO_PROXY");
  ASSERT_FALSE(bad.has_value());
  EXPECT_EQ(bad.error().param, "proxy");
  EXPECT_TRUE(bad.error().message.starts_with("https_proxy: ")) << bad.error().message;
  EXPECT_EQ(bad.error().message.find("hunter2"), std::string::npos);
}

// ------------------------------------------------------- content encoding

TEST_F(HttpClientTest, AsksForIdentityAndDecodesAGzipStreamEventByEvent) {
  const std::vector<std::string> events = {"data: {\"n\":1}\n\n", "data: {\"n\":2}\n\n", "data: [DONE]\n\n"};
  const auto pieces = CompressPieces(events, 31);
  std::mutex mu;
  std::condition_variable cv;
  bool first_seen = false;
  FakeUpstream upstream([&](const FakeRequest&, FakeResponder& r) {
    r.Write("HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Encoding: gzip\r\n"
            "Transfer-Encoding: chunked\r\n\r\n");
    r.Chunk(pieces[0]);
    {
      // The second event is only sent once the client has decoded the first.
      std::unique_lock lock(mu);
      cv.wait_for(lock, 5s, [&] { return first_seen; });
    }
    for (std::size_t i = 1; i < pieces.size(); ++i) r.ChunkSplit(pieces[i], 3, 1);
    r.EndChunked();
  });
  Make(Options());
  auto c = std::make_shared<Collector>();
  c->on_body = [&](const std::string& body) {
    if (body.find("\"n\":1") != std::string::npos) {
      std::lock_guard lock(mu);
      first_seen = true;
      cv.notify_all();
    }
  };
  Start({false, "127.0.0.1", upstream.port()}, c);
  ASSERT_TRUE(c->Wait());
  ASSERT_TRUE(c->ended()) << c->failure()->message;
  EXPECT_TRUE(first_seen);
  EXPECT_EQ(c->body(), Join(events));
  EXPECT_EQ(upstream.requests().at(0).headers.at("accept-encoding"), "identity");
  // Decoded and fully read: the connection goes back to the pool.
  ASSERT_TRUE(Run({false, "127.0.0.1", upstream.port()})->ended());
  EXPECT_EQ(upstream.connections(), 1);
}

TEST_F(HttpClientTest, DecodesDeflateInBothFormsAndKeepsARequestsOwnAcceptEncoding) {
  const std::string body = R"({"choices":[{"message":{"content":"deflated héllo"}}]})";
  for (int bits : {15, -15}) {
    const std::string encoded = Join(CompressPieces({body}, bits));
    FakeUpstream upstream([&](const FakeRequest&, FakeResponder& r) {
      r.SendResponse(200, "application/json", encoded, "Content-Encoding: deflate\r\n");
    });
    Make(Options());
    auto c = Run({false, "127.0.0.1", upstream.port()}, "/v1/x", {{"Accept-Encoding", "gzip, deflate"}});
    ASSERT_TRUE(c->ended()) << bits << ": " << c->failure()->message;
    EXPECT_EQ(c->body(), body) << bits;
    EXPECT_EQ(upstream.requests().at(0).headers.at("accept-encoding"), "gzip, deflate");
  }
}

TEST_F(HttpClientTest, UnsupportedCorruptOrCutOffEncodingsFailTheExchange) {
  const std::string gz = Join(CompressPieces({"data: {\"n\":1}\n\n", "data: [DONE]\n\n"}, 31));
  std::string corrupt = gz;
  for (std::size_t i = 12; i < corrupt.size() - 10; ++i) corrupt[i] ^= 0x5a;
  struct Case {
    const char* name;
    std::string encoding;
    std::string body;
    bool head_received;
    const char* message;
  };
  const std::vector<Case> cases = {
      {"br", "br", "data: x\n\n", false, "unsupported Content-Encoding (br)"},
      {"corrupt", "gzip", corrupt, true, "gzip"},  // "corrupt" or "cut short", as inflate finds it
      {"cut off", "gzip", gz.substr(0, gz.size() - 6), true, "cut short"},
  };
  for (const auto& k : cases) {
    FakeUpstream upstream([&](const FakeRequest&, FakeResponder& r) {
      r.SendResponse(200, "text/event-stream", k.body, "Content-Encoding: " + k.encoding + "\r\n");
    });
    Make(Options());
    auto c = Run({false, "127.0.0.1", upstream.port()});
    ASSERT_TRUE(c->failure()) << k.name;
    EXPECT_EQ(c->failure()->kind, HttpFailureKind::kBrokenStream) << k.name;
    EXPECT_EQ(c->failure()->head_received, k.head_received) << k.name;
    EXPECT_EQ(c->head().has_value(), k.head_received) << k.name;
    EXPECT_NE(c->failure()->message.find(k.message), std::string::npos) << k.name << ": " << c->failure()->message;
    if (!k.head_received) EXPECT_EQ(c->body(), "") << "compressed bytes must not be passed on";
  }
}

// ------------------------------------------------------------------- DNS

TEST_F(HttpClientTest, ResolvedAddressesAreReusedUntilTheTtlPasses) {
  FakeUpstream upstream(Ok);
  auto o = Options();
  o.max_idle_connections = 0;  // a new connection (and lookup) per call
  o.dns_ttl_ms = 300;
  Make(o);
  ASSERT_TRUE(Run({false, "localhost", upstream.port()})->ended());
  ASSERT_TRUE(Run({false, "localhost", upstream.port()})->ended());
  auto s = client_->Stats();
  EXPECT_EQ(s.dns_misses, 1u);
  EXPECT_EQ(s.dns_hits, 1u);
  std::this_thread::sleep_for(350ms);
  ASSERT_TRUE(Run({false, "localhost", upstream.port()})->ended());
  s = client_->Stats();
  EXPECT_EQ(s.dns_misses, 2u);
  EXPECT_EQ(s.dns_hits, 1u);
  // IP literals never go through the cache.
  ASSERT_TRUE(Run({false, "127.0.0.1", upstream.port()})->ended());
  EXPECT_EQ(client_->Stats().dns_misses + client_->Stats().dns_hits, 3u);
}

TEST_F(HttpClientTest, WhenEveryCachedAddressFailsTheEntryIsDroppedAndResolvedAfresh) {
  auto o = Options();
  o.max_idle_connections = 0;
  Make(o);
  std::uint16_t port = 0;
  {
    FakeUpstream upstream(Ok);
    port = upstream.port();
    ASSERT_TRUE(Run({false, "localhost", port})->ended());
  }
  auto c = Run({false, "localhost", port});  // nothing listens now
  ASSERT_TRUE(c->failure());
  EXPECT_EQ(c->failure()->kind, HttpFailureKind::kConnect);
  EXPECT_NE(c->failure()->message.find("refused"), std::string::npos) << c->failure()->message;
  const auto s = client_->Stats();
  EXPECT_EQ(s.dns_hits, 1u);    // the cached addresses were tried first,
  EXPECT_EQ(s.dns_misses, 2u);  // then the name was resolved again
  EXPECT_EQ(s.dns_dropped, 2u);  // and, failing again, dropped again
}

TEST_F(HttpClientTest, AFailedResolutionIsRememberedBriefly) {
  auto o = Options();
  o.dns_negative_ttl_ms = 60000;
  Make(o);
  auto first = Run({false, "no-such-host.invalid", 80});
  ASSERT_TRUE(first->failure());
  EXPECT_EQ(first->failure()->kind, HttpFailureKind::kConnect);
  EXPECT_NE(first->failure()->message.find("cannot resolve"), std::string::npos) << first->failure()->message;
  auto second = Run({false, "no-such-host.invalid", 80});
  ASSERT_TRUE(second->failure());
  EXPECT_EQ(second->failure()->message, first->failure()->message);
  EXPECT_EQ(client_->Stats().dns_misses, 1u);
  EXPECT_EQ(client_->Stats().dns_hits, 1u);
}

// ------------------------------------------------- through RemoteProvider

TEST_F(HttpClientTest, RemoteProviderMapsProxyFailuresToUnavailableWithoutSecretsAndDecodesGzip) {
  FakeProxy bad_proxy("Basic b3RoZXI6Y3JlZHM=");
  const auto gz = CompressPieces(
      {R"(data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":"hi"},"finish_reason":null}]})"
       "\n\n",
       R"(data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]})"
       "\n\ndata: [DONE]\n\n"},
      31);
  FakeUpstream upstream([&](const FakeRequest&, FakeResponder& r) {
    r.Write("HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n");
    for (const auto& p : gz) r.Chunk(p);
    r.EndChunked();
  }, identity_);
  ChatRequest chat;
  chat.model = "m";
  chat.messages = {Message{Role::kUser, {TextPart{"hello", {}}}, {}}};
  auto run = [&](const std::string& proxy_url) {
    RemoteProviderOptions o;
    o.display_name = "FakeAI";
    o.base_url = upstream.BaseUrl(kUpstreamHost);
    o.api_key = "sk-test-SECRET";
    o.ca_file = ca_path_;
    o.proxy = proxy_url;
    o.no_proxy = "";
    auto p = RemoteProvider::Create(o, ioc_);
    EXPECT_TRUE(p.has_value()) << (p ? "" : p.error().message);
    auto sink = std::make_shared<test_support::RecordingSink>();
    ProviderRequest pr;
    pr.request = &chat;
    pr.upstream_model = "m";
    (*p)->Start(pr, sink, {});
    EXPECT_TRUE(sink->WaitTerminal());
    return std::make_pair(std::move(*p), sink);
  };
  auto [refused_provider, refused] = run(bad_proxy.Url(kProxyUserInfo));
  ASSERT_TRUE(refused->error());
  EXPECT_EQ(refused->error()->code, ErrorCode::kUnavailable);
  EXPECT_TRUE(IsRetryable(refused->error()->code));
  EXPECT_EQ(refused->error()->provider_name, "FakeAI");
  ExpectClean(refused->error()->message, {"127.0.0.1", kUpstreamHost, std::to_string(bad_proxy.port()),
                                          std::to_string(upstream.port()), "sk-test-SECRET"});

  FakeProxy proxy(kProxyAuthorization);
  MapTestHosts(proxy);
  auto [provider, ok] = run(proxy.Url(kProxyUserInfo));
  ASSERT_TRUE(ok->completion()) << ok->error()->message;
  EXPECT_EQ(ok->text(), "hi");
  EXPECT_EQ(provider->Stats().proxy_tunnels, 1u);
  EXPECT_EQ(upstream.requests().at(0).headers.at("accept-encoding"), "identity");
}

}  // namespace
}  // namespace tollgate::providers::detail
