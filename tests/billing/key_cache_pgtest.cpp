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

TEST_F(KeyCachePg, PendingSpendCountsUntilTheRecorderWroteIt) {
  CreatedKey alice = MustCreate("alice", Money{1000});
  auto cache = KeyCache::Start(url(), 60'000);  // refreshed by hand below
  ASSERT_TRUE(cache) << cache.error().message;
  auto recorder = UsageRecorder::Start(url(), 60'000, 100);
  ASSERT_TRUE(recorder) << recorder.error().message;

  std::optional<KeyRecord> record = (*cache)->Lookup(alice.key);
  ASSERT_TRUE(record);
  EXPECT_TRUE(HasCredit(*record));

  UsageEvent event;
  event.request_id = "gen-pending-1";
  event.api_key_id = alice.id;
  event.model = "m";
  event.provider = "p";
  event.upstream_model = "u";
  event.cost = Money{600};
  (*recorder)->Record(event);
  (*cache)->AddPendingSpend(alice.id, event.cost);
  EXPECT_EQ((*cache)->PendingSpend(alice.id), Money{600});
  EXPECT_TRUE((*cache)->HasCredit(*record));  // 0 + 600 < 1000

  event.request_id = "gen-pending-2";
  event.cost = Money{400};
  (*recorder)->Record(event);
  (*cache)->AddPendingSpend(alice.id, event.cost);
  EXPECT_FALSE((*cache)->HasCredit(*record));  // 0 + 1000 == limit
  record = (*cache)->Lookup(alice.key);
  EXPECT_EQ(record->pending_spend, Money{1000});
  EXPECT_FALSE(HasCredit(*record));

  // Nothing written yet: a refresh changes nothing.
  ASSERT_TRUE((*cache)->RefreshNow());
  EXPECT_EQ((*cache)->PendingSpend(alice.id), Money{1000});

  (*recorder)->Flush();
  ASSERT_TRUE((*cache)->RefreshNow());
  record = (*cache)->Lookup(alice.key);
  EXPECT_EQ(record->spent, Money{1000});
  EXPECT_EQ(record->pending_spend, Money{0});  // moved from pending to spent, not counted twice
  EXPECT_FALSE(HasCredit(*record));

  ASSERT_TRUE(store_->SetCreditLimit(alice.id, Money{1001}).value());
  ASSERT_TRUE((*cache)->RefreshNow());
  EXPECT_TRUE(HasCredit(*(*cache)->Lookup(alice.key)));
}

TEST_F(KeyCachePg, ReservationsBoundConcurrentCallsAndFollowTheRecorder) {
  // The reviewer's case end to end: a $0.01 key, 10 concurrent calls that can
  // each cost $0.008. One is admitted; after it is written and released, the
  // rest of the credit is usable again.
  constexpr int64_t kCent = 10'000'000;
  CreatedKey alice = MustCreate("alice", Money{kCent});
  CreatedKey bob = MustCreate("bob");  // unlimited
  auto cache = KeyCache::Start(url(), 60'000);  // refreshed by hand below
  ASSERT_TRUE(cache) << cache.error().message;
  auto recorder = UsageRecorder::Start(url(), 60'000, 100);
  ASSERT_TRUE(recorder) << recorder.error().message;

  std::atomic<int> admitted{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 10; ++t) {
    threads.emplace_back([&] {
      std::optional<KeyRecord> record = (*cache)->Lookup(alice.key);
      if (record && (*cache)->TryReserve(*record, Money{8'000'000})) admitted.fetch_add(1);
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(admitted.load(), 1);
  EXPECT_EQ((*cache)->Reserved(alice.id), Money{8'000'000});

  // The admitted call ends having cost $0.005: recorded, pending, released.
  UsageEvent event;
  event.request_id = "gen-reserved-1";
  event.api_key_id = alice.id;
  event.model = "m";
  event.provider = "p";
  event.upstream_model = "u";
  event.cost = Money{5'000'000};
  (*recorder)->Record(event);
  (*cache)->AddPendingSpend(alice.id, event.cost);
  (*cache)->Release(alice.id, Money{8'000'000});
  EXPECT_EQ((*cache)->Reserved(alice.id), Money{0});

  std::optional<KeyRecord> record = (*cache)->Lookup(alice.key);
  ASSERT_TRUE(record);
  EXPECT_TRUE((*cache)->TryReserve(*record, Money{3'000'000}));   // 5 + 3 <= 10
  EXPECT_FALSE((*cache)->TryReserve(*record, Money{3'000'000}));  // 5 + 3 + 3 > 10
  (*cache)->Release(alice.id, Money{3'000'000});

  // Written and refreshed: the spend moved from pending to spent, counted once,
  // even by a caller still holding the record from before the refresh.
  (*recorder)->Flush();
  ASSERT_TRUE((*cache)->RefreshNow());
  EXPECT_EQ((*cache)->FindById(alice.id)->spent, Money{5'000'000});
  EXPECT_EQ((*cache)->PendingSpend(alice.id), Money{0});
  EXPECT_TRUE((*cache)->TryReserve(*record, Money{5'000'000}));  // 5 + 5 <= 10
  EXPECT_FALSE((*cache)->TryReserve(*record, Money{1}));
  (*cache)->Release(alice.id, Money{5'000'000});
  // Little credit left (5 of 10): one call at a time, even if it may cost more.
  EXPECT_TRUE((*cache)->TryReserve(*record, Money{8'000'000}));
  EXPECT_FALSE((*cache)->TryReserve(*record, Money{1}));
  (*cache)->Release(alice.id, Money{8'000'000});

  std::optional<KeyRecord> unlimited = (*cache)->Lookup(bob.key);
  ASSERT_TRUE(unlimited);
  for (int i = 0; i < 10; ++i) EXPECT_TRUE((*cache)->TryReserve(*unlimited, Money{kCent * 1000}));
  EXPECT_EQ((*cache)->Reserved(bob.id), Money{0});
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
