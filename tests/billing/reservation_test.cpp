// Credit reservations (KeyCache::TryReserve / Release), no database: the rule
// on its own (internal::Reservations) and through a real KeyCache whose
// snapshot is given in memory (key_cache_testing.hpp), from many threads.
#include "key_cache_testing.hpp"
#include "reservations.hpp"

#include "tollgate/billing/key_cache.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <barrier>
#include <cstdint>
#include <limits>
#include <mutex>
#include <thread>
#include <vector>

namespace tollgate::billing {
namespace {

using internal::KeyCacheTestAccess;
using internal::Reservations;

constexpr int64_t kCent = 10'000'000;  // $0.01 in nano-USD

KeyRecord Limited(int64_t id, int64_t limit, int64_t spent = 0) {
  KeyRecord r;
  r.id = id;
  r.name = "key-" + std::to_string(id);
  r.credit_limit = Money{limit};
  r.spent = Money{spent};
  return r;
}

// --- the rule -------------------------------------------------------------

TEST(Reservations, AdmitsWhileTheWorstCasesFit) {
  Reservations r;
  EXPECT_TRUE(r.TryReserve(1, 1000, 0, 300));
  EXPECT_TRUE(r.TryReserve(1, 1000, 0, 300));
  EXPECT_TRUE(r.TryReserve(1, 1000, 0, 400));  // 1000 <= 1000: fits exactly
  EXPECT_FALSE(r.TryReserve(1, 1000, 0, 1));
  EXPECT_EQ(r.Sum(1), 1000);
  EXPECT_EQ(r.Count(1), 3);
  EXPECT_EQ(r.Sum(2), 0);  // per key
  EXPECT_TRUE(r.TryReserve(2, 1000, 0, 1000));
}

TEST(Reservations, CommittedSpendCounts) {
  Reservations r;
  EXPECT_TRUE(r.TryReserve(1, 1000, 700, 300));
  EXPECT_FALSE(r.TryReserve(1, 1000, 700, 1));
  r.Release(1, 300);
  EXPECT_FALSE(r.TryReserve(1, 1000, 1000, 0 + 1));  // spent reached the limit
}

TEST(Reservations, OneCallMayExceedTheRestOnlyWhenAlone) {
  Reservations r;
  // 100 left, worst case 500: admitted as the only call in flight.
  EXPECT_TRUE(r.TryReserve(1, 1000, 900, 500));
  EXPECT_EQ(r.Sum(1), 500);
  // Anything else now waits, even a tiny call.
  EXPECT_FALSE(r.TryReserve(1, 1000, 900, 1));
  EXPECT_FALSE(r.TryReserve(1, 1000, 900, 500));
  r.Release(1, 500);
  EXPECT_EQ(r.Count(1), 0);
  EXPECT_EQ(r.size(), 0u);
  EXPECT_TRUE(r.TryReserve(1, 1000, 900, 500));
  r.Release(1, 500);
  // Exhausted keys and zero limits admit nothing that can cost something.
  EXPECT_FALSE(r.TryReserve(1, 1000, 1000, 1));
  EXPECT_FALSE(r.TryReserve(1, 1000, 1500, 1));
  EXPECT_FALSE(r.TryReserve(3, 0, 0, 1));
}

TEST(Reservations, AloneRuleNeedsNoOutstandingReservation) {
  Reservations r;
  EXPECT_TRUE(r.TryReserve(1, 1000, 0, 600));
  // 400 left, but a reservation is outstanding: 700 does not fit and is refused.
  EXPECT_FALSE(r.TryReserve(1, 1000, 0, 700));
  EXPECT_TRUE(r.TryReserve(1, 1000, 0, 400));
}

TEST(Reservations, ZeroAndNegativeWorstCases) {
  Reservations r;
  // A call that cannot cost anything fits whenever used <= limit (the rule as
  // specified; KeyCache::HasCredit refuses exhausted keys if wanted).
  EXPECT_TRUE(r.TryReserve(1, 1000, 1000, 0));
  EXPECT_TRUE(r.TryReserve(1, 1000, 1000, -5));  // counts as 0
  EXPECT_EQ(r.Sum(1), 0);
  EXPECT_EQ(r.Count(1), 2);
  r.Release(1, -5);
  r.Release(1, 0);
  EXPECT_EQ(r.size(), 0u);
}

TEST(Reservations, HugeWorstCasesDoNotWrap) {
  Reservations r;
  const int64_t max = std::numeric_limits<int64_t>::max();
  EXPECT_TRUE(r.TryReserve(1, 1000, 10, max));  // alone
  EXPECT_FALSE(r.TryReserve(1, 1000, 10, max));
  EXPECT_FALSE(r.TryReserve(1, 1000, 10, 1));
  r.Release(1, max);
  EXPECT_TRUE(r.TryReserve(1, max, max - 1, 1));
  EXPECT_FALSE(r.TryReserve(1, max, max - 1, max));
}

TEST(Reservations, ReleaseWithoutReservationIsIgnored) {
  Reservations r;
  r.Release(1, 100);
  EXPECT_EQ(r.Sum(1), 0);
  EXPECT_EQ(r.size(), 0u);
  EXPECT_TRUE(r.TryReserve(1, 1000, 0, 100));
  r.Release(1, 100);
  r.Release(1, 100);  // a second release of the same call changes nothing
  EXPECT_EQ(r.Count(1), 0);
  EXPECT_TRUE(r.TryReserve(1, 1000, 0, 1000));
}

// --- through KeyCache -----------------------------------------------------

TEST(KeyCacheReserve, UnlimitedKeysAreAlwaysAdmittedWithoutBookkeeping) {
  KeyRecord unlimited;
  unlimited.id = 7;
  auto cache = KeyCacheTestAccess::FromRecords({unlimited});
  for (int i = 0; i < 100; ++i) EXPECT_TRUE(cache->TryReserve(unlimited, Money{1'000'000'000'000}));
  EXPECT_EQ(cache->Reserved(7), Money{0});
  cache->Release(7, Money{1'000'000'000'000});  // harmless
  EXPECT_EQ(cache->Reserved(7), Money{0});
}

TEST(KeyCacheReserve, TenConcurrentCallsOnACentKeyAdmitOne) {
  // The reviewer's case: 10 concurrent calls on a $0.01 key, each able to cost
  // $0.008, spent $0.08. Now exactly one is admitted, in every round.
  for (int round = 0; round < 200; ++round) {
    const KeyRecord key = Limited(1, kCent);
    auto cache = KeyCacheTestAccess::FromRecords({key});
    std::atomic<int> admitted{0};
    std::barrier start(10);
    std::vector<std::thread> threads;
    for (int t = 0; t < 10; ++t) {
      threads.emplace_back([&] {
        start.arrive_and_wait();
        if (cache->TryReserve(key, Money{8'000'000})) admitted.fetch_add(1);
      });
    }
    for (auto& th : threads) th.join();
    ASSERT_EQ(admitted.load(), 1) << "round " << round;
    ASSERT_EQ(cache->Reserved(1), Money{8'000'000});
  }
}

TEST(KeyCacheReserve, ConcurrentCallsAdmitExactlyWhatFits) {
  struct Case {
    int64_t limit, spent, pending, worst_case;
    int expected;
  };
  const Case cases[] = {
      {kCent, 0, 0, 3'000'000, 3},           // 9M fits, 12M does not
      {kCent, 0, 0, 2'500'000, 4},           // exactly the limit
      {kCent, 0, 0, 20'000'000, 1},          // more than the limit: alone
      {kCent, 9'000'000, 0, 3'000'000, 1},   // little credit left: one call
      {kCent, 4'000'000, 2'000'000, 2'000'000, 2},
      {kCent, kCent, 0, 1, 0},               // exhausted
      {kCent, 6'000'000, 4'000'000, 1, 0},   // exhausted by pending spend
      {0, 0, 0, 1, 0},                       // zero limit
  };
  for (const Case& c : cases) {
    for (int round = 0; round < 50; ++round) {
      const KeyRecord key = Limited(1, c.limit, c.spent);
      auto cache = KeyCacheTestAccess::FromRecords({key});
      cache->AddPendingSpend(1, Money{c.pending});
      std::atomic<int> admitted{0};
      constexpr int kThreads = 16;
      std::barrier start(kThreads);
      std::vector<std::thread> threads;
      for (int t = 0; t < kThreads; ++t) {
        threads.emplace_back([&] {
          start.arrive_and_wait();
          if (cache->TryReserve(key, Money{c.worst_case})) admitted.fetch_add(1);
        });
      }
      for (auto& th : threads) th.join();
      ASSERT_EQ(admitted.load(), c.expected)
          << "limit " << c.limit << " spent " << c.spent << " pending " << c.pending << " worst case "
          << c.worst_case;
      ASSERT_EQ(cache->Reserved(1), Money{c.expected * c.worst_case});
    }
  }
}

TEST(KeyCacheReserve, ReleaseFreesCredit) {
  const KeyRecord key = Limited(1, 1000);
  auto cache = KeyCacheTestAccess::FromRecords({key});
  EXPECT_TRUE(cache->TryReserve(key, Money{400}));
  EXPECT_TRUE(cache->TryReserve(key, Money{400}));
  EXPECT_FALSE(cache->TryReserve(key, Money{400}));
  EXPECT_EQ(cache->Reserved(1), Money{800});

  // The first call cost 100 of its 400: the other 300 are free again.
  cache->AddPendingSpend(1, Money{100});
  cache->Release(1, Money{400});
  EXPECT_EQ(cache->Reserved(1), Money{400});
  EXPECT_TRUE(cache->TryReserve(key, Money{500}));  // 100 + 400 + 500 = 1000
  EXPECT_FALSE(cache->TryReserve(key, Money{1}));
  cache->Release(1, Money{400});
  cache->Release(1, Money{500});
  EXPECT_EQ(cache->Reserved(1), Money{0});
  EXPECT_TRUE(cache->TryReserve(key, Money{900}));
}

TEST(KeyCacheReserve, UsesTheLatestSnapshotNotTheCallersCopy) {
  const KeyRecord stale = Limited(1, 1000, 0);
  auto cache = KeyCacheTestAccess::FromRecords({stale});
  cache->AddPendingSpend(1, Money{300});
  // A refresh shows 300 of it written and another 500 spent elsewhere: spent
  // 800, pending settled to 0. The caller's record still says spent 0.
  KeyCacheTestAccess::Refresh(*cache, {Limited(1, 1000, 800)});
  EXPECT_EQ(cache->PendingSpend(1), Money{0});
  EXPECT_TRUE(cache->TryReserve(stale, Money{150}));   // 800 + 150 <= 1000
  EXPECT_FALSE(cache->TryReserve(stale, Money{100}));  // 800 + 150 + 100 > 1000
  cache->Release(1, Money{150});
  // A lowered limit counts at once, too.
  KeyCacheTestAccess::Refresh(*cache, {Limited(1, 800, 800)});
  EXPECT_FALSE(cache->TryReserve(stale, Money{1}));
  // And a limit removed by an administrator makes the key unlimited.
  KeyRecord unlimited = Limited(1, 0, 800);
  unlimited.credit_limit.reset();
  KeyCacheTestAccess::Refresh(*cache, {unlimited});
  EXPECT_TRUE(cache->TryReserve(stale, Money{1'000'000}));
  EXPECT_EQ(cache->Reserved(1), Money{0});
}

TEST(KeyCacheReserve, ReservationsSurviveARefreshAndPendingIsNotCountedTwice) {
  const KeyRecord key = Limited(1, 1000, 0);
  auto cache = KeyCacheTestAccess::FromRecords({key});
  ASSERT_TRUE(cache->TryReserve(key, Money{500}));  // call A in flight
  ASSERT_TRUE(cache->TryReserve(key, Money{300}));  // call B ...
  cache->AddPendingSpend(1, Money{300});           // ... ended, cost 300
  cache->Release(1, Money{300});
  // The recorder wrote B: spent 300, pending 0, A still reserved.
  KeyCacheTestAccess::Refresh(*cache, {Limited(1, 1000, 300)});
  EXPECT_EQ(cache->PendingSpend(1), Money{0});
  EXPECT_EQ(cache->Reserved(1), Money{500});
  EXPECT_TRUE(cache->TryReserve(key, Money{200}));  // 300 + 500 + 200 = 1000
  EXPECT_FALSE(cache->TryReserve(key, Money{1}));
}

TEST(KeyCacheReserve, KeysAreIndependent) {
  const KeyRecord a = Limited(1, 1000), b = Limited(2, 1000);
  auto cache = KeyCacheTestAccess::FromRecords({a, b});
  EXPECT_TRUE(cache->TryReserve(a, Money{1000}));
  EXPECT_FALSE(cache->TryReserve(a, Money{1}));
  EXPECT_TRUE(cache->TryReserve(b, Money{1000}));
  cache->Release(2, Money{1000});
  EXPECT_EQ(cache->Reserved(1), Money{1000});
  EXPECT_EQ(cache->Reserved(2), Money{0});
}

// Many threads run calls to completion (reserve, spend at most the worst
// case, AddPendingSpend, Release, as the gateway does) until the key is used
// up, while another thread keeps refreshing the snapshot with what a recorder
// would have written. Whatever the interleaving, the total spend ends within
// [limit, limit + one worst case).
TEST(KeyCacheReserve, StressSpendStaysWithinOneCallOfTheLimit) {
  struct Case {
    int64_t limit, worst;
    int rounds;
  };
  // Many small calls; few calls fit at once (3); a worst case above the limit.
  for (const Case c : {Case{50'000'000, 70'000, 3}, Case{1'000'000, 300'000, 30}, Case{1'000'000, 2'000'000, 30}})
  for (int round = 0; round < c.rounds; ++round) {
    const int64_t kLimit = c.limit;
    const int64_t kWorst = c.worst;
    SCOPED_TRACE("limit " + std::to_string(kLimit) + " worst case " + std::to_string(kWorst));
    const KeyRecord key = Limited(1, kLimit);
    auto cache = KeyCacheTestAccess::FromRecords({key});
    std::atomic<int64_t> spent_total{0};  // what the calls spent (the truth)
    std::atomic<int64_t> written{0};      // what the "recorder" has written so far
    std::atomic<int> in_flight{0};
    std::atomic<int> max_in_flight{0};
    std::atomic<bool> stop{false};
    std::mutex write_mutex;  // pending spend and the "database" change together

    std::thread refresher([&] {
      while (!stop.load()) {
        {
          std::lock_guard lock(write_mutex);
          KeyCacheTestAccess::Refresh(*cache, {Limited(1, kLimit, written.load())});
        }
        std::this_thread::yield();
      }
    });
    std::vector<std::thread> callers;
    for (int t = 0; t < 8; ++t) {
      callers.emplace_back([&, t] {
        uint64_t rng = 0x9e3779b97f4a7c15ull * static_cast<uint64_t>(t + 1) + static_cast<uint64_t>(round);
        for (int attempt = 0; attempt < 1'000'000 && spent_total.load() < kLimit; ++attempt) {
          if (!cache->TryReserve(key, Money{kWorst})) {
            std::this_thread::yield();
            continue;
          }
          const int now = in_flight.fetch_add(1) + 1;
          int prev = max_in_flight.load();
          while (now > prev && !max_in_flight.compare_exchange_weak(prev, now)) {
          }
          rng = rng * 6364136223846793005ull + 1442695040888963407ull;
          const int64_t cost = static_cast<int64_t>((rng >> 33) % (kWorst + 1));
          std::this_thread::yield();
          in_flight.fetch_sub(1);
          {
            std::lock_guard lock(write_mutex);
            spent_total.fetch_add(cost);
            cache->AddPendingSpend(1, Money{cost});
            written.fetch_add(cost);  // may be "written" before the release
          }
          cache->Release(1, Money{kWorst});
        }
      });
    }
    for (auto& th : callers) th.join();
    stop.store(true);
    refresher.join();
    EXPECT_GE(spent_total.load(), kLimit) << "round " << round;
    EXPECT_LT(spent_total.load(), kLimit + kWorst) << "round " << round;
    EXPECT_LE(max_in_flight.load(), std::max<int64_t>(1, kLimit / kWorst)) << "round " << round;
    EXPECT_EQ(cache->Reserved(1), Money{0});
    EXPECT_FALSE(cache->TryReserve(key, Money{1}));  // used up
  }
}

}  // namespace
}  // namespace tollgate::billing
