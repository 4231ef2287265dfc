// RateLimiter against PostgreSQL: two replicas (two limiters with different
// replica ids) on one database share their counts through rate_counters.
#include "tollgate/billing/rate_limiter.hpp"

#include "rate_limiter_test_keys.hpp"

#include "pg_test_database.hpp"
#include "tollgate/billing/log.hpp"

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace tollgate::billing {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;
using std::chrono::steady_clock;
using std::chrono::system_clock;
using testing::WaitFor;
using testing::kMinute0;
using testing::RateLimitedKey;

// Real time flowing from kMinute0 + 5 s, so a test never crosses a minute
// boundary unless it waits 55 s; rate_counters' rows carry these times.
class RateLimiterPg : public testing::MigratedPgTest {
 protected:
  system_clock::time_point Now() const {
    return kMinute0 + seconds(5) +
           std::chrono::duration_cast<system_clock::duration>(steady_clock::now() - started_);
  }
  RateLimiter::Clock Clock() const {
    return [this] { return Now(); };
  }
  std::unique_ptr<RateLimiter> MustStart(const std::string& replica, int interval_ms) {
    auto limiter = RateLimiter::Start(url(), replica, interval_ms, Clock());
    EXPECT_TRUE(limiter) << limiter.error().message;
    return limiter ? std::move(*limiter) : nullptr;
  }
  std::string Window() const { return "to_timestamp(" + std::to_string(1'795'000'020) + ")"; }

  steady_clock::time_point started_ = steady_clock::now();
};

TEST_F(RateLimiterPg, StartValidatesItsArguments) {
  auto unreachable =
      RateLimiter::Start("postgresql://postgres@127.0.0.1:1/postgres?connect_timeout=2", "a");
  ASSERT_FALSE(unreachable);
  EXPECT_EQ(unreachable.error().code, ErrorCode::kUnavailable);
  auto bad_interval = RateLimiter::Start(url(), "a", 0);
  ASSERT_FALSE(bad_interval);
  EXPECT_EQ(bad_interval.error().code, ErrorCode::kInvalidArgument);
  auto no_replica = RateLimiter::Start(url(), "", 250);
  ASSERT_FALSE(no_replica);
  EXPECT_EQ(no_replica.error().code, ErrorCode::kInvalidArgument);
}

TEST_F(RateLimiterPg, WritesThisReplicasCountsAndDeletesOldWindows) {
  Query("INSERT INTO rate_counters (api_key_id, window_start, replica_id, requests) VALUES "
        "(1, " + Window() + " - interval '10 minutes', 'gone', 7), "
        "(1, " + Window() + " - interval '2 minutes', 'recent', 7)");
  auto a = MustStart("host-a:1", 60'000);  // the first round only, then SyncNow
  ASSERT_TRUE(a);
  KeyRecord key = RateLimitedKey(1, 100, 10'000, 5);
  RateDecision first = a->Acquire(key, 40, Now());
  RateDecision second = a->Acquire(key, 60, Now());
  ASSERT_TRUE(first.allowed && second.allowed);
  a->Release(first, 25, Now());
  ASSERT_TRUE(a->SyncNow());
  EXPECT_EQ(Query("SELECT requests || '/' || tokens || '/' || in_flight FROM rate_counters "
                  "WHERE replica_id = 'host-a:1' AND api_key_id = 1 AND window_start = " +
                  Window()),
            "2/85/1");
  // Older than two minutes: gone; the one of two minutes ago stays.
  EXPECT_EQ(QueryInt("SELECT count(*) FROM rate_counters WHERE replica_id = 'gone'"), 0);
  EXPECT_EQ(QueryInt("SELECT count(*) FROM rate_counters WHERE replica_id = 'recent'"), 1);
  EXPECT_GE(a->syncs(), 1);
  EXPECT_EQ(a->sync_failures(), 0);
}

TEST_F(RateLimiterPg, ReadsOtherReplicasSumsAndIgnoresStaleCallsInFlight) {
  auto b = MustStart("b", 60'000);
  ASSERT_TRUE(b);
  KeyRecord key = RateLimitedKey(3, 100, std::nullopt, 10);
  ASSERT_TRUE(b->Acquire(key, 0, Now()).allowed);
  Query("INSERT INTO rate_counters (api_key_id, window_start, replica_id, requests, tokens, "
        "in_flight, updated_at) VALUES "
        "(3, " + Window() + ", 'x', 10, 100, 2, now()), "
        "(3, " + Window() + ", 'dead', 20, 200, 5, now() - interval '40 seconds'), "
        // The previous window: its requests no longer count, its calls in
        // flight do (x's newest row is this window's, so not x's).
        "(3, " + Window() + " - interval '1 minute', 'y', 40, 400, 3, now()), "
        "(3, " + Window() + " - interval '1 minute', 'x', 40, 400, 9, now()), "
        // Another key.
        "(4, " + Window() + ", 'x', 50, 500, 1, now())");
  ASSERT_TRUE(b->SyncNow());
  RateUsage usage = b->Usage(3, Now());
  EXPECT_EQ(usage.others.requests, 30);
  EXPECT_EQ(usage.others.tokens, 300);
  EXPECT_EQ(usage.others.in_flight, 5);  // x's 2 and y's 3; dead's 5 are stale
  EXPECT_EQ(usage.local.requests, 1);
  RateDecision d = b->Acquire(key, 0, Now());
  EXPECT_TRUE(d.allowed);
  EXPECT_EQ(d.remaining_requests, 100 - 30 - 2);
  // Key 4 was never used on b: read all the same.
  RateUsage other_key = b->Usage(4, Now());
  EXPECT_EQ(other_key.local.requests, 0);
  EXPECT_EQ(other_key.others.requests, 50);
  EXPECT_EQ(other_key.others.tokens, 500);
  EXPECT_EQ(other_key.others.in_flight, 1);
}

// The scale-out reproduction: rpm 5, six calls on a give 5 admitted and 1
// refused; once a round of each replica has run, six concurrent calls on b,
// which has never seen the key, are all refused (before the fix b admitted 5
// more: it read only keys it had used itself).
TEST_F(RateLimiterPg, AKeyUsedUpOnOneReplicaIsRefusedAtItsFirstUseOnAnother) {
  constexpr int kIntervalMs = 250;
  auto a = MustStart("a", kIntervalMs);
  auto b = MustStart("b", kIntervalMs);
  ASSERT_TRUE(a && b);
  KeyRecord key = RateLimitedKey(14, 5);
  int admitted_on_a = 0;
  for (int i = 0; i < 6; ++i) {
    RateDecision d = a->Acquire(key, 0, Now());
    if (!d.allowed) continue;
    ++admitted_on_a;
    a->Release(d, 0, Now());
  }
  ASSERT_EQ(admitted_on_a, 5);
  // A round of a that started after the calls (its second end from now) has
  // written them; then a round of b that started after that has read them.
  steady_clock::time_point start = steady_clock::now();
  const int64_t a_rounds = a->syncs();
  ASSERT_TRUE(WaitFor([&] { return a->syncs() >= a_rounds + 2; }, 5000));
  const int64_t b_rounds = b->syncs();
  ASSERT_TRUE(WaitFor([&] { return b->syncs() >= b_rounds + 2; }, 5000));
  auto waited_ms = std::chrono::duration_cast<milliseconds>(steady_clock::now() - start).count();
  EXPECT_EQ(b->sync_failures(), 0);
  RateUsage seen = b->Usage(14, Now());
  EXPECT_EQ(seen.local.requests, 0);
  EXPECT_EQ(seen.others.requests, 5);

  std::atomic<int> admitted_on_b{0};
  std::atomic<int> refused_on_requests{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 6; ++t) {
    threads.emplace_back([&] {
      RateDecision d = b->Acquire(key, 0, Now());
      if (d.allowed) {
        admitted_on_b.fetch_add(1);
        b->Release(d, 0, Now());
      } else if (d.refused_by == RateLimitKind::kRequests && d.remaining_requests == 0) {
        refused_on_requests.fetch_add(1);
      }
    });
  }
  for (auto& thread : threads) thread.join();
  std::printf("rpm 5: 5 admitted on a; %d of 6 concurrent first calls on b admitted, %lld ms "
              "after a's calls (sync interval %d ms)\n",
              admitted_on_b.load(), static_cast<long long>(waited_ms), kIntervalMs);
  EXPECT_EQ(admitted_on_b.load(), 0);
  EXPECT_EQ(refused_on_requests.load(), 6);
}

// A replica that starts after a key was used up elsewhere refuses the key's
// first call on it at once: Start runs a round before it returns.
TEST_F(RateLimiterPg, AReplicaStartedLaterCountsTheOthersFromItsFirstCall) {
  auto a = MustStart("a", 50);
  ASSERT_TRUE(a);
  KeyRecord key = RateLimitedKey(15, 3, std::nullopt, 4);
  std::vector<RateDecision> held;
  for (int i = 0; i < 3; ++i) {
    held.push_back(a->Acquire(key, 0, Now()));
    ASSERT_TRUE(held.back().allowed);
  }
  const int64_t a_rounds = a->syncs();
  ASSERT_TRUE(WaitFor([&] { return a->syncs() >= a_rounds + 2; }, 5000));
  auto c = MustStart("c", 60'000);  // no round after Start's within the test
  ASSERT_TRUE(c);
  EXPECT_EQ(c->syncs(), 1);
  RateDecision first = c->Acquire(key, 0, Now());
  EXPECT_FALSE(first.allowed);
  EXPECT_EQ(first.refused_by, RateLimitKind::kRequests);
  RateUsage seen = c->Usage(15, Now());
  EXPECT_EQ(seen.others.requests, 3);
  EXPECT_EQ(seen.others.in_flight, 3);
  // Calls in flight elsewhere count too: 3 of 4 on a, so one more here.
  KeyRecord concurrent_only = RateLimitedKey(15, std::nullopt, std::nullopt, 4);
  RateDecision one = c->Acquire(concurrent_only, 0, Now());
  EXPECT_TRUE(one.allowed);
  EXPECT_EQ(c->Acquire(concurrent_only, 0, Now()).refused_by, RateLimitKind::kConcurrency);
  c->Release(one, 0, Now());
  for (const RateDecision& d : held) a->Release(d, 0, Now());
}

TEST_F(RateLimiterPg, TwoReplicasHoldTheRequestLimitWithinTheTolerance) {
  constexpr int kIntervalMs = 250;
  constexpr int kRequests = 60;
  constexpr int kSpacingMs = 100;  // alternating: 5 requests a second on each replica
  auto a = MustStart("a", kIntervalMs);
  auto b = MustStart("b", kIntervalMs);
  ASSERT_TRUE(a && b);
  KeyRecord key = RateLimitedKey(10, 30);
  int admitted = 0;
  int admitted_on[2] = {0, 0};
  steady_clock::time_point next = steady_clock::now();
  for (int i = 0; i < kRequests; ++i) {
    std::this_thread::sleep_until(next);  // pacing, not synchronisation
    next += milliseconds(kSpacingMs);
    RateLimiter& limiter = i % 2 == 0 ? *a : *b;
    RateDecision d = limiter.Acquire(key, 0, Now());
    if (!d.allowed) {
      EXPECT_EQ(d.refused_by, RateLimitKind::kRequests);
      continue;
    }
    ++admitted;
    ++admitted_on[i % 2];
    limiter.Release(d, 0, Now());
  }
  // Each replica sees the other's counts at most 2 intervals + round trips
  // late (the header's tolerance); allow 1 s, in which the other admits 5.
  const int tolerance = 2 * static_cast<int>(std::ceil(1000.0 / (2 * kSpacingMs)));
  std::printf("rate limit 30/min over two replicas: %d admitted (%d + %d) of %d\n", admitted,
              admitted_on[0], admitted_on[1], kRequests);
  EXPECT_GE(admitted, 30);  // a replica refuses only when the true count is >= its view
  EXPECT_LE(admitted, 30 + tolerance);
  EXPECT_GT(admitted_on[0], 0);
  EXPECT_GT(admitted_on[1], 0);
  // Once synced, both agree: 30 or more in the window, no room left.
  ASSERT_TRUE(a->SyncNow());
  ASSERT_TRUE(b->SyncNow());
  ASSERT_TRUE(a->SyncNow());
  for (RateLimiter* limiter : {a.get(), b.get()}) {
    RateUsage usage = limiter->Usage(10, Now());
    EXPECT_EQ(usage.local.requests + usage.others.requests, admitted);
    EXPECT_FALSE(limiter->Acquire(key, 0, Now()).allowed);
  }
}

TEST_F(RateLimiterPg, SecondReplicaSeesTheFirstsCountsWithinTwoIntervals) {
  constexpr int kIntervalMs = 250;
  auto a = MustStart("a", kIntervalMs);
  auto b = MustStart("b", kIntervalMs);
  ASSERT_TRUE(a && b);
  KeyRecord key = RateLimitedKey(11, 1000, 100'000);
  RateDecision on_b = b->Acquire(key, 0, Now());  // b reads key 11 from now on
  ASSERT_TRUE(on_b.allowed);
  b->Release(on_b, 0, Now());
  std::vector<RateDecision> on_a;
  steady_clock::time_point start = steady_clock::now();
  for (int i = 0; i < 5; ++i) on_a.push_back(a->Acquire(key, 100, Now()));
  ASSERT_TRUE(WaitFor([&] { return b->Usage(11, Now()).others.requests == 5; }, 5000));
  auto seen_ms = std::chrono::duration_cast<milliseconds>(steady_clock::now() - start).count();
  RateUsage usage = b->Usage(11, Now());
  EXPECT_EQ(usage.others.tokens, 500);
  EXPECT_EQ(usage.others.in_flight, 5);
  std::printf("replica b saw replica a's 5 requests after %lld ms (sync interval %d ms)\n",
              static_cast<long long>(seen_ms), kIntervalMs);
  EXPECT_LE(seen_ms, 2 * kIntervalMs + 500);  // 2 intervals + round trips on a busy machine

  // a's calls end with 20 tokens each: b sees tokens and calls in flight drop.
  for (const RateDecision& d : on_a) a->Release(d, 20, Now());
  EXPECT_TRUE(WaitFor([&] {
    RateUsage u = b->Usage(11, Now());
    return u.others.tokens == 100 && u.others.in_flight == 0;
  }, 5000));
}

TEST_F(RateLimiterPg, CallsInFlightCountAcrossReplicas) {
  auto a = MustStart("a", 50);
  auto b = MustStart("b", 50);
  ASSERT_TRUE(a && b);
  KeyRecord key = RateLimitedKey(12, std::nullopt, std::nullopt, 2);
  RateDecision on_b = b->Acquire(key, 0, Now());
  ASSERT_TRUE(on_b.allowed);
  b->Release(on_b, 0, Now());
  RateDecision x = a->Acquire(key, 0, Now());
  RateDecision y = a->Acquire(key, 0, Now());
  ASSERT_TRUE(x.allowed && y.allowed);
  ASSERT_TRUE(WaitFor([&] { return b->Usage(12, Now()).others.in_flight == 2; }, 5000));
  RateDecision refused = b->Acquire(key, 0, Now());
  EXPECT_EQ(refused.refused_by, RateLimitKind::kConcurrency);
  a->Release(x, 0, Now());
  ASSERT_TRUE(WaitFor([&] { return b->Usage(12, Now()).others.in_flight == 1; }, 5000));
  RateDecision admitted = b->Acquire(key, 0, Now());
  EXPECT_TRUE(admitted.allowed);
  b->Release(admitted, 0, Now());
  a->Release(y, 0, Now());
}

TEST_F(RateLimiterPg, SyncsWhileManyThreadsAcquireAndRelease) {
  auto a = MustStart("a", 1);
  ASSERT_TRUE(a);
  constexpr int kThreads = 4;
  constexpr int kCalls = 2'000;
  std::atomic<int> admitted{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kCalls; ++i) {
        KeyRecord key = RateLimitedKey(100 + (i + t) % 8, 1'000'000, 1'000'000'000, 3);
        RateDecision d = a->Acquire(key, 10, Now());
        if (!d.allowed) continue;
        admitted.fetch_add(1);
        a->Release(d, 7, Now());
      }
    });
  }
  for (auto& thread : threads) thread.join();
  ASSERT_TRUE(a->SyncNow());
  EXPECT_EQ(QueryInt("SELECT sum(requests) FROM rate_counters WHERE replica_id = 'a'"),
            admitted.load());
  EXPECT_EQ(QueryInt("SELECT sum(tokens) FROM rate_counters WHERE replica_id = 'a'"),
            7 * admitted.load());
  EXPECT_EQ(QueryInt("SELECT sum(in_flight) FROM rate_counters WHERE replica_id = 'a'"), 0);
  EXPECT_GT(admitted.load(), kThreads * kCalls / 2);  // only the concurrency limit refuses
  EXPECT_GT(a->syncs(), 1);
}

TEST_F(RateLimiterPg, CountsLocallyThroughAnOutageAndLogsOnce) {
  std::mutex mutex;
  std::vector<std::string> logged;
  SetLogHandler([&](LogLevel, std::string_view message) {
    std::lock_guard lock(mutex);
    logged.emplace_back(message);
  });
  auto a = MustStart("a", 50);
  ASSERT_TRUE(a);
  KeyRecord key = RateLimitedKey(13, 5);
  ASSERT_TRUE(a->Acquire(key, 0, Now()).allowed);
  ASSERT_TRUE(WaitFor([&] {
    return QueryInt("SELECT coalesce(sum(requests), 0) FROM rate_counters WHERE api_key_id = 13") ==
           1;
  }));

  BeginOutage();
  int64_t failures_before = a->sync_failures();
  ASSERT_TRUE(WaitFor([&] { return a->sync_failures() >= failures_before + 3; }, 10'000));
  // Still limiting, locally.
  for (int i = 0; i < 4; ++i) EXPECT_TRUE(a->Acquire(key, 0, Now()).allowed) << i;
  EXPECT_EQ(a->Acquire(key, 0, Now()).refused_by, RateLimitKind::kRequests);
  EndOutage();

  // The counts made during the outage reach the table after it.
  ASSERT_TRUE(WaitFor([&] {
    return QueryInt("SELECT coalesce(sum(requests), 0) FROM rate_counters WHERE api_key_id = 13") ==
           5;
  }, 10'000));
  a->Stop();
  SetLogHandler(nullptr);
  std::lock_guard lock(mutex);
  int failed_lines = 0;
  int recovered_lines = 0;
  for (const std::string& line : logged) {
    failed_lines += line.find("rate limit sync failed") != std::string::npos;
    recovered_lines += line.find("rate limit sync recovered") != std::string::npos;
    EXPECT_EQ(line.find(url()), std::string::npos);
  }
  EXPECT_EQ(failed_lines, 1);
  EXPECT_EQ(recovered_lines, 1);
}

}  // namespace
}  // namespace tollgate::billing
