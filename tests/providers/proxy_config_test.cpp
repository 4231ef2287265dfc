// providers/src/proxy_config.hpp: proxy URLs, curl's NO_PROXY matching, and
// which environment variables win (curl.se/libcurl/c/CURLOPT_NOPROXY.html,
// everything.curl.dev/usingcurl/proxies/env).
#include "proxy_config.hpp"

#include <gtest/gtest.h>

#include <map>

namespace tollgate::providers::detail {
namespace {

struct Case {
  const char* host;
  std::uint16_t port;
  bool bypass;
};

void ExpectMatches(std::string_view list, const std::vector<Case>& cases) {
  const auto no_proxy = NoProxyList::Parse(list);
  for (const auto& c : cases) {
    EXPECT_EQ(no_proxy.Matches(c.host, c.port), c.bypass) << "NO_PROXY=" << list << " host=" << c.host << ":" << c.port;
  }
}

TEST(NoProxyList, NamesMatchTheHostAndItsSubdomainsWithOrWithoutALeadingDot) {
  for (const char* list : {"example.com", ".example.com", " other.org , EXAMPLE.com ", "example.com."}) {
    ExpectMatches(list, {{"example.com", 443, true},
                         {"www.example.com", 443, true},
                         {"a.b.Example.COM", 80, true},
                         {"example.com.", 443, true},
                         {"notexample.com", 443, false},
                         {"example.com.org", 443, false},
                         {"example.co", 443, false},
                         {"com", 443, false}});
  }
}

TEST(NoProxyList, StarAloneMatchesEverythingAndEmptyMatchesNothing) {
  ExpectMatches("*", {{"example.com", 443, true}, {"10.1.2.3", 80, true}, {"::1", 80, true}});
  ExpectMatches("foo.com, *", {{"example.com", 443, true}});
  ExpectMatches("", {{"example.com", 443, false}, {"localhost", 80, false}});
  EXPECT_TRUE(NoProxyList::Parse("").empty());
  EXPECT_TRUE(NoProxyList::Parse(" , ,").empty());
  // "*" is only a wildcard alone, not inside a name.
  ExpectMatches("*.example.com", {{"www.example.com", 443, false}});
}

TEST(NoProxyList, IpLiteralsAndCidrRangesMatchIpHostsOnly) {
  ExpectMatches("10.0.0.0/8, 192.168.1.7, ::1, fd00::/8", {{"10.200.3.4", 443, true},
                                                          {"11.0.0.1", 443, false},
                                                          {"192.168.1.7", 443, true},
                                                          {"192.168.1.70", 443, false},
                                                          {"::1", 443, true},
                                                          {"[::1]", 443, true},
                                                          {"::2", 443, false},
                                                          {"fd12:3456::1", 443, true},
                                                          {"fe80::1", 443, false},
                                                          // names are not resolved to match
                                                          {"localhost", 443, false}});
  ExpectMatches("0.0.0.0/0", {{"8.8.8.8", 53, true}, {"::1", 53, false}});
  ExpectMatches("127.0.0.1/33, 10.0.0.0/x, /8", {{"127.0.0.1", 80, false}, {"10.0.0.1", 80, false}});
}

TEST(NoProxyList, HostPortEntriesMatchThatPortOnly) {
  ExpectMatches("example.com:8443, 10.0.0.1:80, [::1]:9000", {{"example.com", 8443, true},
                                                              {"api.example.com", 8443, true},
                                                              {"example.com", 443, false},
                                                              {"10.0.0.1", 80, true},
                                                              {"10.0.0.1", 81, false},
                                                              {"::1", 9000, true},
                                                              {"::1", 9001, false}});
  ExpectMatches("example.com:notaport, example.com:0", {{"example.com", 443, false}});
}

TEST(ParseProxyUrl, AcceptsHttpUrlsWithDefaultsAndDecodedCredentials) {
  auto p = ParseProxyUrl("http://proxy.corp:3128", "proxy");
  ASSERT_TRUE(p.has_value()) << p.error().message;
  EXPECT_EQ(p->host, "proxy.corp");
  EXPECT_EQ(p->port, 3128);
  EXPECT_TRUE(p->authorization.empty());
  EXPECT_EQ(p->Authority(), "proxy.corp:3128");

  p = ParseProxyUrl("proxy.corp", "HTTPS_PROXY");  // no scheme = http, port 1080 (curl)
  ASSERT_TRUE(p.has_value()) << p.error().message;
  EXPECT_EQ(p->host, "proxy.corp");
  EXPECT_EQ(p->port, 1080);

  p = ParseProxyUrl("HTTP://[::1]:8080/", "proxy");
  ASSERT_TRUE(p.has_value()) << p.error().message;
  EXPECT_EQ(p->host, "::1");
  EXPECT_EQ(p->Authority(), "[::1]:8080");

  // RFC 7617: Basic base64(user ":" password), percent-decoded first.
  // "us@er:p:ss w" -> dXNAZXI6cDpzcyB3
  p = ParseProxyUrl("http://us%40er:p%3Ass%20w@10.0.0.1:3128", "proxy");
  ASSERT_TRUE(p.has_value()) << p.error().message;
  EXPECT_EQ(p->authorization, "Basic dXNAZXI6cDpzcyB3");
  EXPECT_EQ(p->password, "p:ss w");
  p = ParseProxyUrl("http://user@10.0.0.1:3128", "proxy");  // user, no password
  ASSERT_TRUE(p.has_value());
  EXPECT_EQ(p->authorization, "Basic dXNlcjo=");
}

TEST(ParseProxyUrl, RefusesWhatItCannotUseWithoutRepeatingTheUrl) {
  for (const char* url : {"https://user:hunter2@proxy:443", "socks5://user:hunter2@proxy:1080",
                          "http://user:hunter2@proxy:3128/path", "http://user:hunter2@proxy:3128/?q=1",
                          "http://user:hunter2@:3128", "http://user:hunter2@proxy:0", "http://user:hun%0D%0Ater2@proxy",
                          "http://user:hunter2@proxy:3128#frag", "not a url hunter2"}) {
    auto p = ParseProxyUrl(url, "HTTPS_PROXY");
    ASSERT_FALSE(p.has_value()) << url;
    EXPECT_EQ(p.error().code, ErrorCode::kInvalidArgument);
    EXPECT_EQ(p.error().param, "proxy");
    EXPECT_TRUE(p.error().message.starts_with("HTTPS_PROXY: ")) << p.error().message;
    EXPECT_EQ(p.error().message.find("hunter2"), std::string::npos) << p.error().message;
    EXPECT_EQ(p.error().message.find("hun"), std::string::npos) << p.error().message;
  }
}

TEST(ProxySettings, LoopbackUpstreamsAreNeverProxied) {
  ProxySettings s;
  s.https = ProxyServer{"proxy.corp", 3128, {}, {}};
  for (const char* host : {"localhost", "LOCALHOST.", "vllm.localhost", "127.0.0.1", "127.1.2.3", "::1", "[::1]"}) {
    EXPECT_EQ(s.For(true, host, 443), nullptr) << host;
    EXPECT_TRUE(IsLoopbackHost(host)) << host;
  }
  for (const char* host : {"localhost.example.com", "mylocalhost", "128.0.0.1", "::2", "api.openai.com"}) {
    EXPECT_NE(s.For(true, host, 443), nullptr) << host;
    EXPECT_FALSE(IsLoopbackHost(host)) << host;
  }
  EXPECT_EQ(s.For(false, "api.openai.com", 80), nullptr);  // no http proxy set
}

class ResolveProxySettingsTest : public ::testing::Test {
 protected:
  GetEnvFn Env() {
    return [this](const char* name) -> const char* {
      auto it = env_.find(name);
      return it == env_.end() ? nullptr : it->second.c_str();
    };
  }
  std::map<std::string, std::string> env_;
};

TEST_F(ResolveProxySettingsTest, EnvironmentLowerCaseWinsAndEmptyMeansUnset) {
  env_ = {{"https_proxy", "http://lower:1"}, {"HTTPS_PROXY", "http://upper:2"}, {"HTTP_PROXY", "http://plain:3"},
          {"NO_PROXY", "internal.corp"}, {"no_proxy", ""}};
  auto s = ResolveProxySettings(std::nullopt, std::nullopt, Env());
  ASSERT_TRUE(s.has_value()) << s.error().message;
  ASSERT_TRUE(s->https);
  EXPECT_EQ(s->https->host, "lower");
  ASSERT_TRUE(s->http);
  EXPECT_EQ(s->http->host, "plain");
  EXPECT_NE(s->For(true, "api.openai.com", 443), nullptr);
  EXPECT_EQ(s->For(true, "llm.internal.corp", 443), nullptr);  // empty no_proxy -> NO_PROXY
  EXPECT_EQ(s->For(false, "llm.internal.corp", 80), nullptr);

  env_ = {{"HTTPS_PROXY", "http://upper:2"}};
  s = ResolveProxySettings(std::nullopt, std::nullopt, Env());
  ASSERT_TRUE(s.has_value());
  EXPECT_EQ(s->https->host, "upper");
  EXPECT_FALSE(s->http);  // https_proxy is for https upstreams only
  EXPECT_EQ(s->For(false, "example.com", 80), nullptr);
}

TEST_F(ResolveProxySettingsTest, HttpProxyUpperCaseIsIgnoredUnderCgi) {
  env_ = {{"HTTP_PROXY", "http://from-a-request-header:1"}, {"REQUEST_METHOD", "GET"}};
  auto s = ResolveProxySettings(std::nullopt, std::nullopt, Env());
  ASSERT_TRUE(s.has_value());
  EXPECT_FALSE(s->http);
  env_["http_proxy"] = "http://operator:3128";
  s = ResolveProxySettings(std::nullopt, std::nullopt, Env());
  ASSERT_TRUE(s.has_value());
  EXPECT_EQ(s->http->host, "operator");
}

TEST_F(ResolveProxySettingsTest, ExplicitOptionsOverrideTheEnvironment) {
  env_ = {{"https_proxy", "http://env:1"}, {"http_proxy", "http://env:1"}, {"no_proxy", "*"}};
  auto s = ResolveProxySettings(std::string("http://explicit:3128"), std::string(""), Env());
  ASSERT_TRUE(s.has_value());
  ASSERT_TRUE(s->https && s->http);
  EXPECT_EQ(s->https->host, "explicit");
  EXPECT_EQ(s->http->host, "explicit");
  EXPECT_NE(s->For(true, "anything.example", 443), nullptr);  // "" = no exceptions, env's "*" ignored

  s = ResolveProxySettings(std::string(""), std::nullopt, Env());  // "" = never a proxy
  ASSERT_TRUE(s.has_value());
  EXPECT_FALSE(s->https);
  EXPECT_FALSE(s->http);
  EXPECT_EQ(s->For(true, "api.openai.com", 443), nullptr);

  // The explicit proxy still honours NO_PROXY from the environment (curl does too).
  s = ResolveProxySettings(std::string("http://explicit:3128"), std::nullopt, Env());
  ASSERT_TRUE(s.has_value());
  EXPECT_EQ(s->For(true, "api.openai.com", 443), nullptr);
}

TEST_F(ResolveProxySettingsTest, ABadProxyInTheEnvironmentIsAnErrorNamingTheVariable) {
  env_ = {{"HTTPS_PROXY", "socks5://user:hunter2@proxy:1080"}};
  auto s = ResolveProxySettings(std::nullopt, std::nullopt, Env());
  ASSERT_FALSE(s.has_value());
  EXPECT_TRUE(s.error().message.starts_with("HTTPS_PROXY: ")) << s.error().message;
  EXPECT_EQ(s.error().message.find("hunter2"), std::string::npos);
}

}  // namespace
}  // namespace tollgate::providers::detail
