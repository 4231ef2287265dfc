// providers/src/dns_cache.hpp: TTLs, negative caching, the size bound and
// thread-safety, on an injected clock.
#include "dns_cache.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <thread>

namespace tollgate::providers::detail {
namespace {

using namespace std::chrono_literals;
namespace ip = boost::asio::ip;

class DnsCacheTest : public ::testing::Test {
 protected:
  DnsCache Make(DnsCache::Options o) {
    return DnsCache(o, [this] { return DnsCache::Clock::time_point(std::chrono::milliseconds(now_ms_.load())); });
  }
  static DnsCache::Endpoints Addr(const char* a, std::uint16_t port = 443) {
    return {ip::tcp::endpoint(ip::make_address(a), port)};
  }
  std::atomic<long> now_ms_{1000000};
};

TEST_F(DnsCacheTest, AnswersUntilTheTtlPassesThenMisses) {
  auto cache = Make({.ttl_ms = 30000, .negative_ttl_ms = 1000, .max_entries = 8});
  EXPECT_FALSE(cache.Find("api.example.com", 443));
  cache.Put("api.example.com", 443, Addr("192.0.2.1"));
  now_ms_ += 29999;
  auto hit = cache.Find("API.Example.com", 443);  // case-insensitive
  ASSERT_TRUE(hit);
  EXPECT_FALSE(hit->failed);
  ASSERT_EQ(hit->endpoints.size(), 1u);
  EXPECT_EQ(hit->endpoints[0].address().to_string(), "192.0.2.1");
  EXPECT_FALSE(cache.Find("api.example.com", 8443));  // keyed by port too
  now_ms_ += 1;
  EXPECT_FALSE(cache.Find("api.example.com", 443));
  const auto stats = cache.GetStats();
  EXPECT_EQ(stats.hits, 1u);
  EXPECT_EQ(stats.misses, 3u);
  EXPECT_EQ(stats.entries, 0u);  // the expired entry went on the miss
}

TEST_F(DnsCacheTest, FailuresAreCachedForTheNegativeTtlOnly) {
  auto cache = Make({.ttl_ms = 30000, .negative_ttl_ms = 1000, .max_entries = 8});
  cache.PutFailure("nope.invalid", 443, "Host not found");
  auto hit = cache.Find("nope.invalid", 443);
  ASSERT_TRUE(hit);
  EXPECT_TRUE(hit->failed);
  EXPECT_EQ(hit->error, "Host not found");
  now_ms_ += 1000;
  EXPECT_FALSE(cache.Find("nope.invalid", 443));

  auto no_negative = Make({.ttl_ms = 30000, .negative_ttl_ms = 0, .max_entries = 8});
  no_negative.PutFailure("nope.invalid", 443, "Host not found");
  EXPECT_FALSE(no_negative.Find("nope.invalid", 443));
}

TEST_F(DnsCacheTest, ZeroTtlDisablesTheCache) {
  auto cache = Make({.ttl_ms = 0, .negative_ttl_ms = 1000, .max_entries = 8});
  cache.Put("a.example", 443, Addr("192.0.2.1"));
  cache.PutFailure("b.example", 443, "x");
  EXPECT_FALSE(cache.Find("a.example", 443));
  EXPECT_FALSE(cache.Find("b.example", 443));
  EXPECT_EQ(cache.GetStats().entries, 0u);
}

TEST_F(DnsCacheTest, DropForgetsAnEntry) {
  auto cache = Make({.ttl_ms = 30000, .negative_ttl_ms = 1000, .max_entries = 8});
  cache.Put("a.example", 443, Addr("192.0.2.1"));
  cache.Drop("a.example", 443);
  cache.Drop("never.example", 443);
  EXPECT_FALSE(cache.Find("a.example", 443));
  EXPECT_EQ(cache.GetStats().dropped, 1u);
}

TEST_F(DnsCacheTest, StaysWithinItsBoundDroppingExpiredThenSoonestToExpire) {
  auto cache = Make({.ttl_ms = 30000, .negative_ttl_ms = 1000, .max_entries = 3});
  cache.Put("old.example", 443, Addr("192.0.2.1"));
  now_ms_ += 10;
  cache.Put("mid.example", 443, Addr("192.0.2.2"));
  now_ms_ += 10;
  cache.Put("new.example", 443, Addr("192.0.2.3"));
  cache.Put("newest.example", 443, Addr("192.0.2.4"));  // full: the soonest to expire goes
  EXPECT_EQ(cache.GetStats().entries, 3u);
  EXPECT_FALSE(cache.Find("old.example", 443));
  EXPECT_TRUE(cache.Find("mid.example", 443));
  EXPECT_TRUE(cache.Find("newest.example", 443));
  cache.Put("newest.example", 443, Addr("192.0.2.5"));  // replacing does not evict
  EXPECT_TRUE(cache.Find("mid.example", 443));
  now_ms_ += 30000;  // all expired: the next insert clears them
  cache.Put("later.example", 443, Addr("192.0.2.6"));
  EXPECT_EQ(cache.GetStats().entries, 1u);
}

TEST_F(DnsCacheTest, ManyThreadsAtOnce) {
  auto cache = Make({.ttl_ms = 30000, .negative_ttl_ms = 1000, .max_entries = 16});
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 5000; ++i) {
        std::string host = std::to_string((i * 7 + t) % 40);
        host += ".example";
        if (i % 3 == 0) cache.Put(host, 443, Addr("192.0.2.9"));
        if (i % 11 == 0) cache.Drop(host, 443);
        if (auto hit = cache.Find(host, 443)) {
          ASSERT_EQ(hit->endpoints.size(), 1u);
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  const auto stats = cache.GetStats();
  EXPECT_LE(stats.entries, 16u);
  EXPECT_EQ(stats.hits + stats.misses, 4u * 5000u);
}

}  // namespace
}  // namespace tollgate::providers::detail
