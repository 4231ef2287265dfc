// RateLimiter without a database: windows, decisions, headers, token
// correction, concurrency, and two limiters synced through a fake
// rate_counters table driven by the sync API.
#include "tollgate/billing/rate_limiter.hpp"

#include "rate_limiter_test_keys.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <map>
#include <set>
#include <thread>
#include <tuple>
#include <vector>

namespace tollgate::billing {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;
using std::chrono::system_clock;
using testing::kMinute0;
using testing::RateLimitedKey;

system_clock::time_point At(int64_t ms_after_minute0) { return kMinute0 + milliseconds(ms_after_minute0); }

using Headers = std::vector<std::pair<std::string, std::string>>;

TEST(RateLimitReset, FormatsAsGoDurations) {
  EXPECT_EQ(FormatRateLimitReset(milliseconds(0)), "0s");
  EXPECT_EQ(FormatRateLimitReset(milliseconds(-5)), "0s");
  EXPECT_EQ(FormatRateLimitReset(milliseconds(12)), "12ms");
  EXPECT_EQ(FormatRateLimitReset(milliseconds(999)), "999ms");
  EXPECT_EQ(FormatRateLimitReset(milliseconds(1000)), "1s");
  EXPECT_EQ(FormatRateLimitReset(milliseconds(59'500)), "59.5s");
  EXPECT_EQ(FormatRateLimitReset(milliseconds(1'050)), "1.05s");
  EXPECT_EQ(FormatRateLimitReset(milliseconds(1'001)), "1.001s");
  EXPECT_EQ(FormatRateLimitReset(milliseconds(60'000)), "1m0s");
  EXPECT_EQ(FormatRateLimitReset(milliseconds(360'000)), "6m0s");
  EXPECT_EQ(FormatRateLimitReset(milliseconds(252'172)), "4m12.172s");
  EXPECT_EQ(FormatRateLimitReset(milliseconds(3'723'004)), "1h2m3.004s");
  EXPECT_EQ(FormatRateLimitReset(milliseconds(3'600'000)), "1h0m0s");
}

TEST(RateLimiter, KeyWithoutLimitsIsAllowedAndNotTracked) {
  RateLimiter limiter;
  RateDecision d = limiter.Acquire(RateLimitedKey(1, std::nullopt), 1'000'000, At(0));
  EXPECT_TRUE(d.allowed);
  EXPECT_FALSE(d.counted);
  EXPECT_EQ(limiter.tracked_keys(), 0u);
  EXPECT_TRUE(RateLimitHeaders(d).empty());
  limiter.Release(d, 5, At(1));  // harmless
  EXPECT_EQ(limiter.tracked_keys(), 0u);
  EXPECT_TRUE(limiter.PrepareSync(At(2)).changed.empty());
}

TEST(RateLimiter, RefusesRequestsOverTheLimitUntilTheNextMinute) {
  RateLimiter limiter;
  KeyRecord key = RateLimitedKey(7, 3);
  for (int i = 0; i < 3; ++i) {
    RateDecision d = limiter.Acquire(key, 0, At(10'000));
    ASSERT_TRUE(d.allowed) << i;
    EXPECT_EQ(d.remaining_requests, 2 - i);
    EXPECT_EQ(d.reset_requests, milliseconds(50'000));
    limiter.Release(d, 0, At(10'000));
  }
  RateDecision refused = limiter.Acquire(key, 0, At(48'200));
  EXPECT_FALSE(refused.allowed);
  EXPECT_FALSE(refused.counted);
  EXPECT_EQ(refused.refused_by, RateLimitKind::kRequests);
  EXPECT_EQ(refused.remaining_requests, 0);
  EXPECT_EQ(refused.retry_after_s, 12);  // 11.8 s rounded up
  EXPECT_EQ(refused.message, "rate limit: 3 requests per minute for this key; retry in 12 s");
  EXPECT_EQ(limiter.Usage(7, At(48'200)).local.requests, 3);  // refusals do not count

  RateDecision next = limiter.Acquire(key, 0, At(60'000));
  EXPECT_TRUE(next.allowed);
  EXPECT_EQ(next.remaining_requests, 2);
  EXPECT_EQ(next.reset_requests, milliseconds(60'000));
  EXPECT_EQ(next.window_start, kMinute0 + seconds(60));
}

TEST(RateLimiter, WindowsAreAlignedToUtcMinutes) {
  RateLimiter limiter;
  KeyRecord key = RateLimitedKey(1, 1);
  ASSERT_TRUE(limiter.Acquire(key, 0, At(59'999)).allowed);
  // One millisecond later is a new minute, not 60 s after the first call.
  RateDecision d = limiter.Acquire(key, 0, At(60'000));
  EXPECT_TRUE(d.allowed);
  EXPECT_FALSE(limiter.Acquire(key, 0, At(119'999)).allowed);
}

TEST(RateLimiter, RendersOpenAiHeaders) {
  RateLimiter limiter;
  RateDecision d = limiter.Acquire(RateLimitedKey(1, 60, 150'000), 16, At(30'500));
  ASSERT_TRUE(d.allowed);
  EXPECT_EQ(RateLimitHeaders(d), (Headers{{"x-ratelimit-limit-requests", "60"},
                                          {"x-ratelimit-remaining-requests", "59"},
                                          {"x-ratelimit-reset-requests", "29.5s"},
                                          {"x-ratelimit-limit-tokens", "150000"},
                                          {"x-ratelimit-remaining-tokens", "149984"},
                                          {"x-ratelimit-reset-tokens", "29.5s"}}));

  // Only the limits the key has; retry-after on refusals.
  RateDecision first = limiter.Acquire(RateLimitedKey(2, 1), 0, At(0));
  EXPECT_EQ(RateLimitHeaders(first), (Headers{{"x-ratelimit-limit-requests", "1"},
                                              {"x-ratelimit-remaining-requests", "0"},
                                              {"x-ratelimit-reset-requests", "1m0s"}}));
  RateDecision refused = limiter.Acquire(RateLimitedKey(2, 1), 0, At(59'400));
  EXPECT_EQ(RateLimitHeaders(refused), (Headers{{"x-ratelimit-limit-requests", "1"},
                                                {"x-ratelimit-remaining-requests", "0"},
                                                {"x-ratelimit-reset-requests", "600ms"},
                                                {"retry-after", "1"}}));

  RateDecision tokens_only = limiter.Acquire(RateLimitedKey(3, std::nullopt, 100), 40, At(0));
  EXPECT_EQ(RateLimitHeaders(tokens_only), (Headers{{"x-ratelimit-limit-tokens", "100"},
                                                    {"x-ratelimit-remaining-tokens", "60"},
                                                    {"x-ratelimit-reset-tokens", "1m0s"}}));

  // Concurrency has no header of its own.
  RateDecision concurrent = limiter.Acquire(RateLimitedKey(4, std::nullopt, std::nullopt, 1), 0, At(0));
  EXPECT_TRUE(concurrent.counted);
  EXPECT_TRUE(RateLimitHeaders(concurrent).empty());
  RateDecision busy = limiter.Acquire(RateLimitedKey(4, std::nullopt, std::nullopt, 1), 0, At(0));
  EXPECT_EQ(RateLimitHeaders(busy), (Headers{{"retry-after", "1"}}));
}

TEST(RateLimiter, RefusesTokensOverTheLimitAndCorrectsToActual) {
  RateLimiter limiter;
  KeyRecord key = RateLimitedKey(5, std::nullopt, 1000);
  RateDecision a = limiter.Acquire(key, 600, At(1'000));
  ASSERT_TRUE(a.allowed);
  EXPECT_EQ(a.remaining_tokens, 400);

  RateDecision b = limiter.Acquire(key, 600, At(2'000));
  EXPECT_FALSE(b.allowed);
  EXPECT_EQ(b.refused_by, RateLimitKind::kTokens);
  EXPECT_EQ(b.remaining_tokens, 400);
  EXPECT_EQ(b.retry_after_s, 58);
  EXPECT_EQ(b.message,
            "rate limit: 1000 tokens per minute for this key (600 used in this minute, this call "
            "may need 600); retry in 58 s");

  // The first call used 100 tokens, not 600: the second now fits.
  limiter.Release(a, 100, At(3'000));
  EXPECT_EQ(limiter.Usage(5, At(3'000)).local.tokens, 100);
  RateDecision c = limiter.Acquire(key, 600, At(4'000));
  EXPECT_TRUE(c.allowed);
  EXPECT_EQ(c.remaining_tokens, 300);

  // More than estimated counts too.
  limiter.Release(c, 900, At(5'000));
  EXPECT_EQ(limiter.Usage(5, At(5'000)).local.tokens, 1000);
  EXPECT_FALSE(limiter.Acquire(key, 1, At(6'000)).allowed);
}

TEST(RateLimiter, OneCallAboveTheTokenLimitPassesInAnEmptyWindow) {
  RateLimiter limiter;
  KeyRecord key = RateLimitedKey(5, std::nullopt, 100);
  RateDecision big = limiter.Acquire(key, 500, At(0));
  EXPECT_TRUE(big.allowed);
  EXPECT_EQ(big.remaining_tokens, 0);
  EXPECT_FALSE(limiter.Acquire(key, 1, At(1'000)).allowed);
  limiter.Release(big, 450, At(2'000));
  EXPECT_FALSE(limiter.Acquire(key, 500, At(3'000)).allowed);
  EXPECT_TRUE(limiter.Acquire(key, 500, At(60'000)).allowed);
  // A zero limit refuses every call that needs tokens.
  EXPECT_FALSE(limiter.Acquire(RateLimitedKey(6, std::nullopt, 0), 1, At(0)).allowed);
}

TEST(RateLimiter, NegativeEstimatesCountAsZero) {
  RateLimiter limiter;
  RateDecision d = limiter.Acquire(RateLimitedKey(5, std::nullopt, 100), -50, At(0));
  EXPECT_TRUE(d.allowed);
  EXPECT_EQ(d.estimated_tokens, 0);
  EXPECT_EQ(d.remaining_tokens, 100);
  limiter.Release(d, -7, At(1));
  EXPECT_EQ(limiter.Usage(5, At(1)).local.tokens, 0);
}

TEST(RateLimiter, CorrectsTokensOnlyInTheWindowTheCallWasAdmittedIn) {
  RateLimiter limiter;
  KeyRecord key = RateLimitedKey(5, std::nullopt, 1000);
  RateDecision late = limiter.Acquire(key, 300, At(59'000));
  ASSERT_TRUE(late.allowed);
  RateDecision now = limiter.Acquire(key, 200, At(61'000));
  ASSERT_TRUE(now.allowed);
  // Ends in the next minute: that minute's tokens (the second call's) stay.
  limiter.Release(late, 10, At(62'000));
  RateUsage usage = limiter.Usage(5, At(62'000));
  EXPECT_EQ(usage.local.tokens, 200);
  EXPECT_EQ(usage.local.in_flight, 1);
  // The tokens of a window never go below zero.
  limiter.Release(now, 0, At(63'000));
  EXPECT_EQ(limiter.Usage(5, At(63'000)).local.tokens, 0);
  EXPECT_EQ(limiter.Usage(5, At(63'000)).local.in_flight, 0);
}

TEST(RateLimiter, LimitsCallsInFlightAcrossWindows) {
  RateLimiter limiter;
  KeyRecord key = RateLimitedKey(9, std::nullopt, std::nullopt, 2);
  RateDecision a = limiter.Acquire(key, 0, At(58'000));
  RateDecision b = limiter.Acquire(key, 0, At(59'000));
  ASSERT_TRUE(a.allowed);
  ASSERT_TRUE(b.allowed);
  RateDecision c = limiter.Acquire(key, 0, At(61'000));  // a new minute: still two in flight
  EXPECT_FALSE(c.allowed);
  EXPECT_EQ(c.refused_by, RateLimitKind::kConcurrency);
  EXPECT_EQ(c.retry_after_s, 1);
  EXPECT_EQ(c.message, "rate limit: 2 concurrent calls for this key; retry in 1 s");
  limiter.Release(a, 0, At(62'000));
  RateDecision d = limiter.Acquire(key, 0, At(62'000));
  EXPECT_TRUE(d.allowed);
  EXPECT_EQ(limiter.Usage(9, At(62'000)).local.in_flight, 2);
  // A Release without its Acquire (a refusal) changes nothing.
  limiter.Release(c, 0, At(62'000));
  EXPECT_EQ(limiter.Usage(9, At(62'000)).local.in_flight, 2);
}

TEST(RateLimiter, ChecksRequestsThenTokensThenConcurrency) {
  RateLimiter limiter;
  KeyRecord key = RateLimitedKey(3, 1, 10, 1);
  ASSERT_TRUE(limiter.Acquire(key, 10, At(0)).allowed);
  EXPECT_EQ(limiter.Acquire(key, 10, At(1)).refused_by, RateLimitKind::kRequests);
  KeyRecord more_requests = RateLimitedKey(3, 5, 10, 1);
  EXPECT_EQ(limiter.Acquire(more_requests, 10, At(2)).refused_by, RateLimitKind::kTokens);
  EXPECT_EQ(limiter.Acquire(more_requests, 0, At(3)).refused_by, RateLimitKind::kConcurrency);
}

TEST(RateLimiter, ConcurrentThreadsNeverExceedTheLimits) {
  RateLimiter limiter;
  constexpr int kThreads = 8;
  constexpr int kTries = 5'000;
  KeyRecord key = RateLimitedKey(11, 1'000, std::nullopt, 3);
  std::atomic<int> holding{0};
  std::atomic<int> most_holding{0};
  std::atomic<int> admitted{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < kTries; ++i) {
        RateDecision d = limiter.Acquire(key, 1, At(1'000));
        if (!d.allowed) continue;
        admitted.fetch_add(1);
        int now_holding = holding.fetch_add(1) + 1;
        int seen = most_holding.load();
        while (now_holding > seen && !most_holding.compare_exchange_weak(seen, now_holding)) {
        }
        holding.fetch_sub(1);
        limiter.Release(d, 1, At(1'000));
      }
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(admitted.load(), 1'000);  // exactly the limit, although 40'000 tried
  EXPECT_LE(most_holding.load(), 3);
  RateUsage usage = limiter.Usage(11, At(1'000));
  EXPECT_EQ(usage.local.requests, 1'000);
  EXPECT_EQ(usage.local.tokens, 1'000);
  EXPECT_EQ(usage.local.in_flight, 0);
}

// --- The sync API, against a fake rate_counters table.

class FakeRateCounters {
 public:
  // One sync round of `limiter` as replica `replica` at `now`, like the
  // statement of RateLimiter::Start's thread: the others' sums of every key
  // in the table, all-zero sums left out.
  void Sync(RateLimiter& limiter, const std::string& replica, system_clock::time_point now) {
    RateSyncBatch batch = limiter.PrepareSync(now);
    for (const RateCounterRow& row : batch.changed) {
      rows_[{row.key_id, batch.window_start, replica}] = {row, now};
    }
    std::set<int64_t> keys;
    for (const auto& [id, row] : rows_) keys.insert(std::get<0>(id));
    std::vector<RateCounterRow> others;
    for (int64_t key_id : keys) {
      RateCounterRow sum{key_id, 0, 0, 0};
      std::map<std::string, std::pair<system_clock::time_point, const Row*>> newest;
      for (const auto& [id, row] : rows_) {
        const auto& [k, window, r] = id;
        if (k != key_id || r == replica) continue;
        if (window < batch.window_start - seconds(60) || window > batch.window_start) continue;
        if (window == batch.window_start) {
          sum.requests += row.counts.requests;
          sum.tokens += row.counts.tokens;
        }
        auto& slot = newest[r];
        if (slot.second == nullptr || window > slot.first) slot = {window, &row};
      }
      for (const auto& [r, slot] : newest) {
        if (now - slot.second->updated_at < seconds(RateLimiter::kStaleInFlightSeconds)) {
          sum.in_flight += slot.second->counts.in_flight;
        }
      }
      if (sum.requests != 0 || sum.tokens != 0 || sum.in_flight != 0) others.push_back(sum);
    }
    limiter.ApplyOthers(batch, others);
  }

  size_t rows() const { return rows_.size(); }

 private:
  struct Row {
    RateCounterRow counts;
    system_clock::time_point updated_at;
  };
  std::map<std::tuple<int64_t, system_clock::time_point, std::string>, Row> rows_;
};

TEST(RateLimiterSync, TwoReplicasShareTheLimitsOnceSynced) {
  FakeRateCounters table;
  RateLimiter a, b;
  KeyRecord key = RateLimitedKey(21, 10, 1000, 8);
  std::vector<RateDecision> on_a, on_b;
  for (int i = 0; i < 6; ++i) {
    on_a.push_back(a.Acquire(key, 50, At(1'000)));
    ASSERT_TRUE(on_a.back().allowed);
  }
  for (int i = 0; i < 2; ++i) {
    on_b.push_back(b.Acquire(key, 100, At(1'100)));
    ASSERT_TRUE(on_b.back().allowed);
  }
  // Before any sync each counts only its own.
  EXPECT_EQ(b.Usage(21, At(1'100)).others.requests, 0);

  table.Sync(a, "a", At(1'250));
  table.Sync(b, "b", At(1'300));
  table.Sync(a, "a", At(1'500));
  RateUsage seen_by_a = a.Usage(21, At(1'500));
  EXPECT_EQ(seen_by_a.others.requests, 2);
  EXPECT_EQ(seen_by_a.others.tokens, 200);
  EXPECT_EQ(seen_by_a.others.in_flight, 2);
  RateUsage seen_by_b = b.Usage(21, At(1'300));
  EXPECT_EQ(seen_by_b.others.requests, 6);
  EXPECT_EQ(seen_by_b.others.tokens, 300);
  EXPECT_EQ(seen_by_b.others.in_flight, 6);

  // 8 in flight of 8: both refuse on concurrency; 8 requests of 10 and 500
  // tokens of 1000 leave room for the rest.
  EXPECT_EQ(b.Acquire(key, 0, At(1'600)).refused_by, RateLimitKind::kConcurrency);
  EXPECT_EQ(a.Acquire(key, 0, At(1'600)).refused_by, RateLimitKind::kConcurrency);
  // A 600-token call does not fit the 500 left.
  EXPECT_EQ(a.Acquire(key, 600, At(1'600)).refused_by, RateLimitKind::kTokens);

  // a's calls end having used 10 tokens each: b sees it after a's next sync.
  for (const RateDecision& d : on_a) a.Release(d, 10, At(1'700));
  table.Sync(a, "a", At(1'750));
  table.Sync(b, "b", At(1'800));
  seen_by_b = b.Usage(21, At(1'800));
  EXPECT_EQ(seen_by_b.others.requests, 6);
  EXPECT_EQ(seen_by_b.others.tokens, 60);
  EXPECT_EQ(seen_by_b.others.in_flight, 0);
  RateDecision third = b.Acquire(key, 600, At(1'900));
  EXPECT_TRUE(third.allowed);
  EXPECT_EQ(third.remaining_requests, 1);   // 10 - 6 - 3
  EXPECT_EQ(third.remaining_tokens, 140);   // 1000 - 60 - 200 - 600
  EXPECT_EQ(b.Acquire(key, 0, At(1'900)).allowed, true);
  EXPECT_EQ(b.Acquire(key, 0, At(1'900)).refused_by, RateLimitKind::kRequests);
}

TEST(RateLimiterSync, AdmitsTheLimitInTotalAcrossReplicasWhenSyncedBetweenCalls) {
  FakeRateCounters table;
  RateLimiter a, b;
  KeyRecord key = RateLimitedKey(22, 30);
  int admitted = 0;
  int64_t ms = 1'000;
  for (int i = 0; i < 60; ++i, ms += 100) {
    RateLimiter& limiter = i % 2 == 0 ? a : b;
    RateDecision d = limiter.Acquire(key, 0, At(ms));
    if (d.allowed) {
      ++admitted;
      limiter.Release(d, 0, At(ms));
    }
    // The caller's replica writes, then the other one reads.
    table.Sync(limiter, i % 2 == 0 ? "a" : "b", At(ms + 30));
    table.Sync(i % 2 == 0 ? b : a, i % 2 == 0 ? "b" : "a", At(ms + 60));
  }
  EXPECT_EQ(admitted, 30);

  // Synced a round late, each replica may admit what the other admitted
  // since its last read: the documented tolerance.
  RateLimiter e, f;
  KeyRecord late_key = RateLimitedKey(23, 30);
  int admitted_late = 0;
  ms = 1'000;
  for (int i = 0; i < 60; ++i, ms += 100) {
    RateLimiter& limiter = i % 2 == 0 ? e : f;
    RateDecision d = limiter.Acquire(late_key, 0, At(ms));
    admitted_late += d.allowed;
    table.Sync(limiter, i % 2 == 0 ? "e" : "f", At(ms + 50));
  }
  EXPECT_GT(admitted_late, 30);
  EXPECT_LE(admitted_late, 31);

  // Without syncs each replica admits the full limit: the sync is what holds it.
  RateLimiter c, d;
  int unsynced = 0;
  for (int i = 0; i < 60; ++i) unsynced += (i % 2 == 0 ? c : d).Acquire(key, 0, At(1'000)).allowed;
  EXPECT_EQ(unsynced, 60);
}

TEST(RateLimiterSync, WritesOnlyChangesAndRewritesAfterAFailure) {
  RateLimiter limiter;
  KeyRecord key = RateLimitedKey(31, 100);
  RateDecision d = limiter.Acquire(key, 5, At(1'000));
  RateSyncBatch first = limiter.PrepareSync(At(1'250));
  ASSERT_EQ(first.changed.size(), 1u);
  EXPECT_EQ(first.changed[0].key_id, 31);
  EXPECT_EQ(first.changed[0].requests, 1);
  EXPECT_EQ(first.changed[0].tokens, 5);
  EXPECT_EQ(first.changed[0].in_flight, 1);
  EXPECT_EQ(first.window_start, kMinute0);

  // Nothing changed: nothing to write (the round still reads).
  RateSyncBatch second = limiter.PrepareSync(At(1'500));
  EXPECT_TRUE(second.changed.empty());
  EXPECT_EQ(second.window_start, kMinute0);

  // A failed round writes the same key again next time, with its latest counts.
  limiter.SyncFailed(first);
  limiter.Release(d, 3, At(1'600));
  RateSyncBatch third = limiter.PrepareSync(At(1'750));
  ASSERT_EQ(third.changed.size(), 1u);
  EXPECT_EQ(third.changed[0].tokens, 3);
  EXPECT_EQ(third.changed[0].in_flight, 0);
}

TEST(RateLimiterSync, CarriesCallsInFlightIntoNewWindowsAndHeartbeatsThem) {
  RateLimiter limiter;
  KeyRecord key = RateLimitedKey(32, std::nullopt, std::nullopt, 5);
  RateDecision d = limiter.Acquire(key, 0, At(50'000));
  ASSERT_EQ(limiter.PrepareSync(At(50'100)).changed.size(), 1u);
  EXPECT_TRUE(limiter.PrepareSync(At(55'000)).changed.empty());
  // Heartbeat: rewritten once kInFlightHeartbeatSeconds passed.
  EXPECT_EQ(limiter.PrepareSync(At(60'100)).changed.size(), 1u);  // new window
  EXPECT_TRUE(limiter.PrepareSync(At(61'000)).changed.empty());
  RateSyncBatch beat = limiter.PrepareSync(At(70'100));
  ASSERT_EQ(beat.changed.size(), 1u);
  EXPECT_EQ(beat.changed[0].requests, 0);  // this window's requests
  EXPECT_EQ(beat.changed[0].in_flight, 1);
  EXPECT_EQ(beat.window_start, kMinute0 + seconds(60));
  limiter.Release(d, 0, At(71'000));
  ASSERT_EQ(limiter.PrepareSync(At(71'100)).changed.size(), 1u);
  EXPECT_TRUE(limiter.PrepareSync(At(90'000)).changed.empty());  // nothing in flight: no heartbeat
}

TEST(RateLimiterSync, ForgetsIdleKeysButNotKeysWithCallsInFlight) {
  RateLimiter limiter;
  RateDecision idle = limiter.Acquire(RateLimitedKey(41, 10), 0, At(1'000));
  limiter.Release(idle, 0, At(1'000));
  RateDecision busy = limiter.Acquire(RateLimitedKey(42, 10), 0, At(1'000));
  EXPECT_EQ(limiter.tracked_keys(), 2u);
  limiter.PrepareSync(At(2'000));
  limiter.PrepareSync(At(119'000));  // the next minute: still kept
  EXPECT_EQ(limiter.tracked_keys(), 2u);
  limiter.PrepareSync(At(121'000));
  EXPECT_EQ(limiter.tracked_keys(), 1u);
  EXPECT_EQ(limiter.Usage(42, At(121'000)).local.in_flight, 1);
  EXPECT_EQ(limiter.Usage(41, At(121'000)).local.requests, 0);
  limiter.Release(busy, 0, At(122'000));
  EXPECT_EQ(limiter.PrepareSync(At(122'100)).changed.size(), 1u);  // the release is written first
  limiter.PrepareSync(At(240'000));
  EXPECT_EQ(limiter.tracked_keys(), 0u);

  // A key refused (on the others' counts) in a minute was used in it: kept.
  KeyRecord shared = RateLimitedKey(43, 10);
  RateDecision used = limiter.Acquire(shared, 0, At(241'000));
  ASSERT_TRUE(used.allowed);
  limiter.Release(used, 0, At(241'000));
  limiter.ApplyOthers(limiter.PrepareSync(At(300'500)), {{43, 10, 0, 0}});
  EXPECT_EQ(limiter.Acquire(shared, 0, At(301'000)).refused_by, RateLimitKind::kRequests);
  limiter.PrepareSync(At(361'000));
  EXPECT_EQ(limiter.tracked_keys(), 1u);
  limiter.PrepareSync(At(421'000));
  EXPECT_EQ(limiter.tracked_keys(), 0u);
}

TEST(RateLimiterSync, OthersRequestsEndWithTheirWindowAndTheirCallsInFlightLater) {
  RateLimiter limiter;
  KeyRecord key = RateLimitedKey(51, 10, std::nullopt, 4);
  ASSERT_TRUE(limiter.Acquire(key, 0, At(1'000)).allowed);
  RateSyncBatch batch = limiter.PrepareSync(At(1'100));
  limiter.ApplyOthers(batch, {{51, 9, 0, 2}});
  EXPECT_EQ(limiter.Acquire(key, 0, At(2'000)).refused_by, RateLimitKind::kRequests);

  // Next minute, no sync yet: the others' requests are gone, their calls in
  // flight still count (they carry into the new window).
  RateDecision d = limiter.Acquire(key, 0, At(61'000));
  EXPECT_TRUE(d.allowed);
  EXPECT_EQ(d.remaining_requests, 9);
  EXPECT_EQ(limiter.Acquire(key, 0, At(61'001)).refused_by, RateLimitKind::kConcurrency);
  // Two minutes without a sync (database down): the stale calls stop counting.
  RateUsage usage = limiter.Usage(51, At(121'000));
  EXPECT_EQ(usage.others.requests, 0);
  EXPECT_EQ(usage.others.in_flight, 0);
  // Keys missing from a sync's answer have no other calls.
  RateSyncBatch again = limiter.PrepareSync(At(62'000));
  limiter.ApplyOthers(again, {});
  EXPECT_EQ(limiter.Usage(51, At(62'000)).others.in_flight, 0);
}

// The first-use gap: rpm 5, six calls on a (5 admitted, 1 refused); after a
// round of each, six calls on b, which never saw the key before, are all
// refused: b counts a's admissions from its first decision on.
TEST(RateLimiterSync, AKeysFirstCallsOnAReplicaCountWhatTheOthersAdmitted) {
  FakeRateCounters table;
  RateLimiter a, b;
  KeyRecord key = RateLimitedKey(24, 5, 1000, 10);
  int admitted_on_a = 0;
  for (int i = 0; i < 6; ++i) {
    RateDecision d = a.Acquire(key, 100, At(1'000));
    if (!d.allowed) continue;
    ++admitted_on_a;
    a.Release(d, 100, At(1'100));
  }
  ASSERT_EQ(admitted_on_a, 5);
  table.Sync(a, "a", At(1'250));
  // b has nothing to write and has never seen key 24: its round still reads it.
  RateSyncBatch b_batch = b.PrepareSync(At(1'300));
  EXPECT_TRUE(b_batch.changed.empty());
  table.Sync(b, "b", At(1'300));
  EXPECT_EQ(b.tracked_keys(), 1u);
  RateUsage seen = b.Usage(24, At(1'300));
  EXPECT_EQ(seen.local.requests, 0);
  EXPECT_EQ(seen.others.requests, 5);
  EXPECT_EQ(seen.others.tokens, 500);
  for (int i = 0; i < 6; ++i) {
    RateDecision d = b.Acquire(key, 0, At(3'000));
    EXPECT_FALSE(d.allowed) << i;
    EXPECT_EQ(d.refused_by, RateLimitKind::kRequests);
    EXPECT_EQ(d.remaining_requests, 0);
    EXPECT_EQ(d.retry_after_s, 57);
  }
  // A token limit of a key first seen here counts the others' tokens too.
  KeyRecord tokens_key = RateLimitedKey(24, std::nullopt, 1000);
  RateDecision big = b.Acquire(tokens_key, 600, At(3'000));
  EXPECT_EQ(big.refused_by, RateLimitKind::kTokens);
  EXPECT_EQ(big.remaining_tokens, 500);
  // Next minute: a's requests no longer count.
  EXPECT_TRUE(b.Acquire(key, 0, At(60'000)).allowed);
}

// Calls in flight on the others limit a key's first calls here as well.
TEST(RateLimiterSync, AKeysFirstCallsOnAReplicaCountTheOthersCallsInFlight) {
  FakeRateCounters table;
  RateLimiter a, b;
  KeyRecord key = RateLimitedKey(25, std::nullopt, std::nullopt, 2);
  RateDecision x = a.Acquire(key, 0, At(1'000));
  RateDecision y = a.Acquire(key, 0, At(1'000));
  ASSERT_TRUE(x.allowed && y.allowed);
  table.Sync(a, "a", At(1'250));
  table.Sync(b, "b", At(1'300));
  EXPECT_EQ(b.Acquire(key, 0, At(1'400)).refused_by, RateLimitKind::kConcurrency);
  a.Release(x, 0, At(1'500));
  table.Sync(a, "a", At(1'750));
  table.Sync(b, "b", At(1'800));
  RateDecision one = b.Acquire(key, 0, At(1'900));
  EXPECT_TRUE(one.allowed);
  EXPECT_EQ(b.Acquire(key, 0, At(1'900)).refused_by, RateLimitKind::kConcurrency);
  b.Release(one, 0, At(2'000));
  a.Release(y, 0, At(2'000));
}

// Entries for keys only the others use: created by ApplyOthers (not for
// all-zero sums), kept from one round to the next (no gap between a round's
// PrepareSync and its ApplyOthers), zeroed when missing from an answer and
// dropped with their window.
TEST(RateLimiterSync, KeepsTheOthersCountsOfKeysNotUsedHereAndDropsThemWithTheirWindow) {
  RateLimiter limiter;
  limiter.ApplyOthers(limiter.PrepareSync(At(1'000)),
                      {{61, 5, 50, 0}, {62, 0, 0, 2}, {63, 0, 0, 0}});
  EXPECT_EQ(limiter.tracked_keys(), 2u);
  EXPECT_EQ(limiter.Usage(61, At(1'000)).others.requests, 5);
  EXPECT_EQ(limiter.Usage(63, At(1'000)).others.requests, 0);

  // The next round's PrepareSync keeps both, and nothing is written for them.
  RateSyncBatch next = limiter.PrepareSync(At(1'250));
  EXPECT_TRUE(next.changed.empty());
  EXPECT_EQ(limiter.tracked_keys(), 2u);
  // A first call here between that PrepareSync and its ApplyOthers counts
  // the others' 5 requests.
  EXPECT_EQ(limiter.Acquire(RateLimitedKey(61, 5), 0, At(1'300)).refused_by,
            RateLimitKind::kRequests);
  EXPECT_EQ(limiter.Usage(62, At(1'300)).others.in_flight, 2);
  limiter.ApplyOthers(next, {{61, 5, 50, 0}, {62, 0, 0, 2}});

  // Next minute: 61's requests are over (61 stays a window more: it was used
  // here); 62, never used here, stays for the others' calls in flight, which
  // carry over until a sync reads them as gone.
  limiter.PrepareSync(At(60'100));
  EXPECT_EQ(limiter.tracked_keys(), 2u);
  EXPECT_EQ(limiter.Usage(61, At(60'100)).others.requests, 0);
  EXPECT_EQ(limiter.Usage(62, At(60'100)).others.in_flight, 2);
  RateSyncBatch gone = limiter.PrepareSync(At(60'200));
  limiter.ApplyOthers(gone, {});  // nothing on the others any more
  EXPECT_EQ(limiter.Usage(62, At(60'200)).others.in_flight, 0);
  limiter.PrepareSync(At(60'300));
  EXPECT_EQ(limiter.tracked_keys(), 1u);  // 61, used here in the last window
  limiter.PrepareSync(At(120'300));
  EXPECT_EQ(limiter.tracked_keys(), 0u);

  // Requests of a key only the others use go with their window, unread.
  limiter.ApplyOthers(limiter.PrepareSync(At(121'000)), {{64, 3, 0, 0}});
  EXPECT_EQ(limiter.tracked_keys(), 1u);
  limiter.PrepareSync(At(179'999));
  EXPECT_EQ(limiter.tracked_keys(), 1u);
  limiter.PrepareSync(At(180'000));
  EXPECT_EQ(limiter.tracked_keys(), 0u);
}

TEST(RateLimiterSync, SyncNowNeedsADatabase) {
  RateLimiter limiter;
  auto result = limiter.SyncNow();
  ASSERT_FALSE(result);
  EXPECT_EQ(result.error().code, ErrorCode::kInvalidArgument);
}

}  // namespace
}  // namespace tollgate::billing
