#include "tollgate/billing/key_cache.hpp"

#include "pg_test_database.hpp"
#include "tollgate/billing/key_store.hpp"
#include "tollgate/billing/log.hpp"
#include "tollgate/billing/usage_recorder.hpp"

#include <atomic>
#include <chrono>
#include <mutex>
#include <thread>
#include <vector>

namespace tollgate::billing {
namespace {

using testing::WaitFor;

class KeyCachePg : public testing::MigratedPgTest {
 protected:
  CreatedKey MustCreate(const std::string& name, std::optional<Money> limit = std::nullopt) {
    auto created = store_->Create(name, limit);
    EXPECT_TRUE(created) << created.error().message;
    return created ? *created : CreatedKey{};
  }
};

TEST_F(KeyCachePg, LoadsKeysAtStart) {
  CreatedKey alice = MustCreate("alice", Money{1000});
  auto cache = KeyCache::Start(url(), 100);
  ASSERT_TRUE(cache) << cache.error().message;
  std::optional<KeyRecord> found = (*cache)->Lookup(alice.key);
  ASSERT_TRUE(found);
  EXPECT_EQ(found->id, alice.id);
  EXPECT_EQ(found->name, "alice");
  ASSERT_TRUE(found->credit_limit);
  EXPECT_EQ(found->credit_limit->nano_usd, 1000);
  EXPECT_EQ(found->spent, Money{0});
  EXPECT_FALSE(found->revoked);
  EXPECT_FALSE((*cache)->Lookup("tg-not-a-key"));
  EXPECT_FALSE((*cache)->Lookup(alice.key + "x"));
  EXPECT_EQ((*cache)->size(), 1u);
  ASSERT_TRUE((*cache)->FindById(alice.id));
  EXPECT_EQ((*cache)->FindById(alice.id)->name, "alice");
}

TEST_F(KeyCachePg, SeesNewKeysAndRevocationsWithinARefresh) {
  auto cache = KeyCache::Start(url(), 50);
  ASSERT_TRUE(cache) << cache.error().message;
  CreatedKey alice = MustCreate("alice");
  EXPECT_TRUE(WaitFor([&] { return (*cache)->Lookup(alice.key).has_value(); }, 2000));

  ASSERT_TRUE(store_->Revoke(alice.id).value());
  EXPECT_TRUE(WaitFor([&] { return (*cache)->Lookup(alice.key)->revoked; }, 2000));
  EXPECT_GE((*cache)->refreshes(), 2);
}

TEST_F(KeyCachePg, RefreshNowLoadsAtOnce) {
  auto cache = KeyCache::Start(url(), 60'000);
  ASSERT_TRUE(cache) << cache.error().message;
  CreatedKey alice = MustCreate("alice");
  EXPECT_FALSE((*cache)->Lookup(alice.key));
  ASSERT_TRUE((*cache)->RefreshNow());
  EXPECT_TRUE((*cache)->Lookup(alice.key));
}

TEST_F(KeyCachePg, StartFailsWhenTheDatabaseIsUnreachable) {
  auto cache = KeyCache::Start("postgresql://postgres@127.0.0.1:1/postgres?connect_timeout=2");
  ASSERT_FALSE(cache);
  EXPECT_EQ(cache.error().code, ErrorCode::kUnavailable);
  auto bad_interval = KeyCache::Start(url(), 0);
  ASSERT_FALSE(bad_interval);
  EXPECT_EQ(bad_interval.error().code, ErrorCode::kInvalidArgument);
}

TEST_F(KeyCachePg, KeepsTheLastSnapshotThroughAnOutageAndLogsOnce) {
  std::mutex mutex;
  std::vector<std::string> logged;
  SetLogHandler([&](LogLevel, std::string_view message) {
    std::lock_guard lock(mutex);
    logged.emplace_back(message);
  });
  CreatedKey alice = MustCreate("alice");
  auto cache = KeyCache::Start(url(), 20);
  ASSERT_TRUE(cache) << cache.error().message;

  BeginOutage();
  EXPECT_TRUE(WaitFor([&] { return (*cache)->refresh_failures() >= 3; }));
  EXPECT_TRUE((*cache)->Lookup(alice.key)) << "last good snapshot must stay in use";
  EndOutage();
  int64_t refreshes = (*cache)->refreshes();
  EXPECT_TRUE(WaitFor([&] { return (*cache)->refreshes() > refreshes + 1; }));
  (*cache)->Stop();
  SetLogHandler(nullptr);

  std::lock_guard lock(mutex);
  int failures = 0, recoveries = 0;
  for (const std::string& m : logged) {
    if (m.find("key cache refresh failed") != std::string::npos) ++failures;
    if (m.find("key cache refresh recovered") != std::string::npos) ++recoveries;
    EXPECT_EQ(m.find(alice.key), std::string::npos);
  }
  EXPECT_EQ(failures, 1);
  EXPECT_EQ(recoveries, 1);
}

using Clock = std::chrono::steady_clock;

TEST_F(KeyCachePg, RefreshIfLoadedBeforeSkipsWhenALaterReloadIsInstalled) {
  const Clock::time_point before_start = Clock::now();
  auto cache = KeyCache::Start(url(), 60'000);  // no background reload during the test
  ASSERT_TRUE(cache) << cache.error().message;
  // Start's own load began after before_start.
  int64_t n = (*cache)->refreshes();
  ASSERT_TRUE((*cache)->RefreshIfLoadedBefore(before_start));
  EXPECT_EQ((*cache)->refreshes(), n);

  const Clock::time_point t = Clock::now();
  ASSERT_TRUE((*cache)->RefreshNow());  // started after t
  n = (*cache)->refreshes();
  CreatedKey bob = MustCreate("bob");   // committed after that reload
  ASSERT_TRUE((*cache)->RefreshIfLoadedBefore(t));
  EXPECT_EQ((*cache)->refreshes(), n) << "a reload that started after t is installed: no-op";
  EXPECT_FALSE((*cache)->Lookup(bob.key)) << "so bob's key, created later, is not loaded yet";

  // The gateway's case: a miss on a key created a moment ago.
  const Clock::time_point miss = Clock::now();
  ASSERT_FALSE((*cache)->Lookup(bob.key));
  ASSERT_TRUE((*cache)->RefreshIfLoadedBefore(miss));
  EXPECT_EQ((*cache)->refreshes(), n + 1);
  EXPECT_TRUE((*cache)->Lookup(bob.key));
  // Once is enough for that t.
  ASSERT_TRUE((*cache)->RefreshIfLoadedBefore(miss));
  EXPECT_EQ((*cache)->refreshes(), n + 1);
}

TEST_F(KeyCachePg, ConcurrentRefreshIfLoadedBeforeReloadsOnce) {
  auto cache = KeyCache::Start(url(), 60'000);
  ASSERT_TRUE(cache) << cache.error().message;
  CreatedKey alice = MustCreate("alice");
  const int64_t n = (*cache)->refreshes();
  const Clock::time_point t = Clock::now();
  ASSERT_FALSE((*cache)->Lookup(alice.key));

  constexpr int kThreads = 8;
  std::atomic<int> ready{0};
  std::atomic<bool> go{false};
  std::atomic<int> failed{0}, found{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < kThreads; ++i) {
    threads.emplace_back([&] {
      ready.fetch_add(1);
      while (!go.load()) std::this_thread::yield();
      if (!(*cache)->RefreshIfLoadedBefore(t)) failed.fetch_add(1);
      if ((*cache)->Lookup(alice.key)) found.fetch_add(1);
    });
  }
  while (ready.load() < kThreads) std::this_thread::yield();
  go.store(true);
  for (std::thread& thread : threads) thread.join();
  EXPECT_EQ(failed.load(), 0);
  EXPECT_EQ(found.load(), kThreads) << "every caller sees the key once its call returns";
  EXPECT_EQ((*cache)->refreshes(), n + 1) << "8 concurrent misses at t: exactly one reload";
  EXPECT_EQ((*cache)->refresh_failures(), 0);
}

TEST_F(KeyCachePg, RefreshIfLoadedBeforeKeepsTheSnapshotWhenTheDatabaseIsDown) {
  CreatedKey alice = MustCreate("alice");
  auto cache = KeyCache::Start(url(), 60'000);
  ASSERT_TRUE(cache) << cache.error().message;
  const int64_t n = (*cache)->refreshes();
  BeginOutage();
  auto down = (*cache)->RefreshIfLoadedBefore(Clock::now());
  ASSERT_FALSE(down);
  EXPECT_EQ(down.error().code, ErrorCode::kUnavailable);
  EXPECT_EQ((*cache)->refreshes(), n);
  EXPECT_TRUE((*cache)->Lookup(alice.key)) << "the last snapshot stays";
  EndOutage();
  // The failed attempt installed nothing, so the next call with the same t reloads.
  ASSERT_TRUE((*cache)->RefreshIfLoadedBefore(Clock::now()));
  EXPECT_EQ((*cache)->refreshes(), n + 1);
}

}  // namespace
}  // namespace tollgate::billing
