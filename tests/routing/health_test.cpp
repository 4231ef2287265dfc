#include "tollgate/routing/health.hpp"

#include <gtest/gtest.h>

#include <thread>
#include <vector>

namespace tollgate::routing {
namespace {

using std::chrono::seconds;
using std::chrono::minutes;

// A clock that moves only when told. It starts far from the steady clock's
// epoch, on a whole hour, so bucket boundaries are easy to reason about.
struct FakeClock {
  SteadyTime now = SteadyTime{} + std::chrono::hours(1000);
  void Advance(Millis d) { now += d; }
};

HealthOptions Options() {
  HealthOptions o;
  o.consecutive_failures = 3;
  o.open_for = Millis{1'000};
  o.max_open_for = Millis{3'000};
  o.default_cooldown = Millis{10'000};
  o.max_cooldown = Millis{60'000};
  o.window = seconds{100};
  o.ewma_alpha = 0.5;
  return o;
}

// A finished attempt of `latency`, started now.
AttemptReport Report(const FakeClock& clock, Outcome outcome, Millis latency = Millis{100}) {
  AttemptReport r;
  r.outcome = outcome;
  r.started = clock.now;
  r.ended = clock.now + latency;
  return r;
}

// Acquires, then releases an attempt that took no time.
void Call(EndpointHealth& h, const FakeClock& clock, Outcome outcome) {
  ASSERT_EQ(h.Acquire(clock.now), Availability::kAvailable);
  h.Release(Report(clock, outcome, Millis{0}));
}

void Open(EndpointHealth& h, const FakeClock& clock, int failures) {
  for (int i = 0; i < failures; ++i) Call(h, clock, Outcome::kFailure);
  ASSERT_EQ(h.Snapshot(clock.now).circuit, CircuitState::kOpen);
}

TEST(Health, StartsClosedAndAvailableWithoutFigures) {
  HealthOptions o = Options();
  EndpointHealth h(&o, 0);
  FakeClock clock;
  HealthSnapshot s = h.Snapshot(clock.now);
  EXPECT_EQ(s.circuit, CircuitState::kClosed);
  EXPECT_EQ(s.availability, Availability::kAvailable);
  EXPECT_LT(s.latency_ms, 0);
  EXPECT_LT(s.ttft_ms, 0);
  EXPECT_LT(s.throughput_tps, 0);
  EXPECT_LT(s.cache_hit_ratio, 0);
  EXPECT_EQ(s.window_attempts, 0);
  EXPECT_EQ(s.error_rate, 0);
  LiveStats stats = h.Stats(clock.now);
  EXPECT_FALSE(stats.p50_latency_ms);
  EXPECT_FALSE(stats.uptime_30m);
}

TEST(Health, BreakerOpensAfterConsecutiveFailures) {
  HealthOptions o = Options();
  EndpointHealth h(&o, 0);
  FakeClock clock;
  Call(h, clock, Outcome::kFailure);
  Call(h, clock, Outcome::kFailure);
  Call(h, clock, Outcome::kSuccess);  // breaks the run
  Call(h, clock, Outcome::kFailure);
  Call(h, clock, Outcome::kFailure);
  EXPECT_EQ(h.Check(clock.now), Availability::kAvailable);
  Call(h, clock, Outcome::kFailure);

  HealthSnapshot s = h.Snapshot(clock.now);
  EXPECT_EQ(s.circuit, CircuitState::kOpen);
  EXPECT_EQ(s.availability, Availability::kCircuitOpen);
  EXPECT_EQ(s.available_at, clock.now + o.open_for);
  EXPECT_EQ(h.Check(clock.now), Availability::kCircuitOpen);
  EXPECT_EQ(h.Acquire(clock.now), Availability::kCircuitOpen);
  EXPECT_EQ(h.Snapshot(clock.now).in_flight, 0);
}

TEST(Health, RateLimitsAndNeutralOutcomesDoNotCountTowardTheBreaker) {
  HealthOptions o = Options();
  o.default_cooldown = Millis{0};  // so the 429s do not block the next Acquire
  EndpointHealth h(&o, 0);
  FakeClock clock;
  Call(h, clock, Outcome::kFailure);
  Call(h, clock, Outcome::kFailure);
  for (int i = 0; i < 10; ++i) {
    Call(h, clock, Outcome::kRateLimited);
    Call(h, clock, Outcome::kNeutral);
  }
  EXPECT_EQ(h.Snapshot(clock.now).circuit, CircuitState::kClosed);
  Call(h, clock, Outcome::kFailure);  // third in a row: 429s neither broke nor extended the run
  EXPECT_EQ(h.Snapshot(clock.now).circuit, CircuitState::kOpen);
}

TEST(Health, HalfOpenLetsExactlyOneProbeThrough) {
  HealthOptions o = Options();
  EndpointHealth h(&o, 0);
  FakeClock clock;
  Open(h, clock, 3);
  clock.Advance(o.open_for - Millis{1});
  EXPECT_EQ(h.Check(clock.now), Availability::kCircuitOpen);
  clock.Advance(Millis{1});
  EXPECT_EQ(h.Snapshot(clock.now).circuit, CircuitState::kHalfOpen);
  EXPECT_EQ(h.Check(clock.now), Availability::kAvailable);

  EXPECT_EQ(h.Acquire(clock.now), Availability::kAvailable);
  EXPECT_EQ(h.Acquire(clock.now), Availability::kCircuitOpen);
  EXPECT_EQ(h.Check(clock.now), Availability::kCircuitOpen);
  clock.Advance(Millis{60'000});  // waiting does not release a second probe
  EXPECT_EQ(h.Acquire(clock.now), Availability::kCircuitOpen);
  HealthSnapshot s = h.Snapshot(clock.now);
  EXPECT_EQ(s.circuit, CircuitState::kHalfOpen);
  EXPECT_EQ(s.in_flight, 1);
}

TEST(Health, ProbeSuccessClosesTheBreaker) {
  HealthOptions o = Options();
  EndpointHealth h(&o, 0);
  FakeClock clock;
  Open(h, clock, 3);
  clock.Advance(o.open_for);
  Call(h, clock, Outcome::kSuccess);
  EXPECT_EQ(h.Snapshot(clock.now).circuit, CircuitState::kClosed);
  for (int i = 0; i < 5; ++i) EXPECT_EQ(h.Acquire(clock.now), Availability::kAvailable);

  // Closed again from scratch: the next open lasts open_for, not double.
  for (int i = 0; i < 5; ++i) h.Release(Report(clock, Outcome::kSuccess, Millis{0}));
  Open(h, clock, 3);
  EXPECT_EQ(h.Snapshot(clock.now).available_at, clock.now + o.open_for);
}

TEST(Health, ProbeFailureReopensForADoubledPeriodUpToTheCap) {
  HealthOptions o = Options();  // 1 s, doubling, capped at 3 s
  EndpointHealth h(&o, 0);
  FakeClock clock;
  Open(h, clock, 3);

  clock.Advance(Millis{1'000});
  Call(h, clock, Outcome::kFailure);
  EXPECT_EQ(h.Snapshot(clock.now).circuit, CircuitState::kOpen);
  EXPECT_EQ(h.Snapshot(clock.now).available_at, clock.now + Millis{2'000});
  clock.Advance(Millis{1'999});
  EXPECT_EQ(h.Acquire(clock.now), Availability::kCircuitOpen);
  clock.Advance(Millis{1});
  Call(h, clock, Outcome::kFailure);
  EXPECT_EQ(h.Snapshot(clock.now).available_at, clock.now + Millis{3'000});  // 4 s capped

  clock.Advance(Millis{3'000});
  Call(h, clock, Outcome::kFailure);
  EXPECT_EQ(h.Snapshot(clock.now).available_at, clock.now + Millis{3'000});
}

TEST(Health, NeutralProbeIsReturnedWithoutDeciding) {
  HealthOptions o = Options();
  EndpointHealth h(&o, 0);
  FakeClock clock;
  Open(h, clock, 3);
  clock.Advance(o.open_for);
  Call(h, clock, Outcome::kNeutral);
  EXPECT_EQ(h.Snapshot(clock.now).circuit, CircuitState::kHalfOpen);
  // The next call is the new probe.
  ASSERT_EQ(h.Acquire(clock.now), Availability::kAvailable);
  EXPECT_EQ(h.Acquire(clock.now), Availability::kCircuitOpen);
  h.Release(Report(clock, Outcome::kSuccess));
  EXPECT_EQ(h.Snapshot(clock.now).circuit, CircuitState::kClosed);
}

TEST(Health, CallsInFlightWhenItOpenedDoNotDecideTheProbe) {
  HealthOptions o = Options();
  o.consecutive_failures = 1;
  EndpointHealth h(&o, 0);
  FakeClock clock;
  ASSERT_EQ(h.Acquire(clock.now), Availability::kAvailable);
  AttemptReport slow = Report(clock, Outcome::kSuccess, Millis{5'000});
  Call(h, clock, Outcome::kFailure);  // opens while `slow` is out
  ASSERT_EQ(h.Snapshot(clock.now).circuit, CircuitState::kOpen);

  clock.Advance(o.open_for);
  ASSERT_EQ(h.Acquire(clock.now), Availability::kAvailable);  // the probe
  AttemptReport probe = Report(clock, Outcome::kFailure);
  h.Release(slow);  // a success, but from before the breaker opened
  EXPECT_EQ(h.Snapshot(clock.now).circuit, CircuitState::kHalfOpen);
  EXPECT_EQ(h.Acquire(clock.now), Availability::kCircuitOpen);  // the probe is still out
  h.Release(probe);
  EXPECT_EQ(h.Snapshot(clock.now).circuit, CircuitState::kOpen);
  EXPECT_EQ(h.Snapshot(clock.now).in_flight, 0);
}

TEST(Health, TripOpensAClosedBreakerOnly) {
  HealthOptions o = Options();
  EndpointHealth h(&o, 0);
  FakeClock clock;
  h.Trip(clock.now);
  EXPECT_EQ(h.Snapshot(clock.now).circuit, CircuitState::kOpen);
  EXPECT_EQ(h.Snapshot(clock.now).available_at, clock.now + o.open_for);
  clock.Advance(Millis{500});
  h.Trip(clock.now);  // already open: not extended
  EXPECT_EQ(h.Snapshot(clock.now).available_at, clock.now + Millis{500});
  clock.Advance(Millis{500});
  h.Trip(clock.now);  // half-open: the probe decides
  EXPECT_EQ(h.Acquire(clock.now), Availability::kAvailable);
}

TEST(Health, RetryAfterCooldownExpiresExactlyThen) {
  HealthOptions o = Options();
  EndpointHealth h(&o, 0);
  FakeClock clock;
  ASSERT_EQ(h.Acquire(clock.now), Availability::kAvailable);
  AttemptReport r = Report(clock, Outcome::kRateLimited, Millis{200});
  r.retry_after = Millis{5'000};
  h.Release(r);
  const SteadyTime until = r.ended + Millis{5'000};

  HealthSnapshot s = h.Snapshot(clock.now);
  EXPECT_EQ(s.circuit, CircuitState::kClosed);
  EXPECT_EQ(s.availability, Availability::kCoolingDown);
  EXPECT_EQ(s.available_at, until);
  EXPECT_EQ(h.Acquire(until - Millis{1}), Availability::kCoolingDown);
  EXPECT_EQ(h.Check(until), Availability::kAvailable);
  EXPECT_EQ(h.Acquire(until), Availability::kAvailable);
}

TEST(Health, DefaultCooldownWithoutRetryAfterAndACapWithOne) {
  HealthOptions o = Options();
  EndpointHealth h(&o, 0);
  FakeClock clock;
  h.Release(Report(clock, Outcome::kRateLimited, Millis{0}));
  EXPECT_EQ(h.Check(clock.now + o.default_cooldown - Millis{1}), Availability::kCoolingDown);
  EXPECT_EQ(h.Check(clock.now + o.default_cooldown), Availability::kAvailable);

  EndpointHealth capped(&o, 0);
  AttemptReport r = Report(clock, Outcome::kRateLimited, Millis{0});
  r.retry_after = Millis{3'600'000};
  capped.Release(r);
  EXPECT_EQ(capped.Snapshot(clock.now).available_at, clock.now + o.max_cooldown);
  EXPECT_EQ(capped.Check(clock.now + o.max_cooldown), Availability::kAvailable);
}

TEST(Health, AShorterRetryAfterDoesNotCutACooldownShort) {
  HealthOptions o = Options();
  EndpointHealth h(&o, 0);
  FakeClock clock;
  AttemptReport a = Report(clock, Outcome::kRateLimited, Millis{0});
  a.retry_after = Millis{20'000};
  AttemptReport b = a;
  b.retry_after = Millis{1'000};
  h.Release(a);
  h.Release(b);
  EXPECT_EQ(h.Check(clock.now + Millis{19'999}), Availability::kCoolingDown);
}

TEST(Health, ConcurrencyCapIsRespectedAndReleased) {
  HealthOptions o = Options();
  EndpointHealth h(&o, 2);
  FakeClock clock;
  EXPECT_EQ(h.Acquire(clock.now), Availability::kAvailable);
  EXPECT_EQ(h.Acquire(clock.now), Availability::kAvailable);
  EXPECT_EQ(h.Check(clock.now), Availability::kAtCapacity);
  EXPECT_EQ(h.Acquire(clock.now), Availability::kAtCapacity);
  HealthSnapshot s = h.Snapshot(clock.now);
  EXPECT_EQ(s.in_flight, 2);
  EXPECT_EQ(s.max_concurrency, 2);
  EXPECT_EQ(s.availability, Availability::kAtCapacity);

  h.Release(Report(clock, Outcome::kNeutral));
  EXPECT_EQ(h.Snapshot(clock.now).in_flight, 1);
  EXPECT_EQ(h.Acquire(clock.now), Availability::kAvailable);
  h.Release(Report(clock, Outcome::kSuccess));
  h.Release(Report(clock, Outcome::kFailure));
  EXPECT_EQ(h.Snapshot(clock.now).in_flight, 0);
  h.Release(Report(clock, Outcome::kSuccess));  // one too many: never below zero
  EXPECT_EQ(h.Snapshot(clock.now).in_flight, 0);
  EXPECT_EQ(h.Stats(clock.now).in_flight, 0);
}

TEST(Health, UnlimitedConcurrencyNeverFills) {
  HealthOptions o = Options();
  EndpointHealth h(&o, 0);
  FakeClock clock;
  for (int i = 0; i < 1000; ++i) ASSERT_EQ(h.Acquire(clock.now), Availability::kAvailable);
  EXPECT_EQ(h.Snapshot(clock.now).in_flight, 1000);
}

TEST(Health, MovingAveragesLearnFromSuccesses) {
  HealthOptions o = Options();  // alpha 0.5
  EndpointHealth h(&o, 0);
  FakeClock clock;
  AttemptReport r;
  r.outcome = Outcome::kSuccess;
  r.started = clock.now;
  r.first_token = clock.now + Millis{100};
  r.ended = clock.now + Millis{2'100};  // 2 s of generation
  r.prompt_tokens = 1000;
  r.cached_tokens = 500;
  r.completion_tokens = 100;
  h.Release(r);
  HealthSnapshot s = h.Snapshot(clock.now);
  EXPECT_DOUBLE_EQ(s.latency_ms, 2'100);
  EXPECT_DOUBLE_EQ(s.ttft_ms, 100);
  EXPECT_DOUBLE_EQ(s.throughput_tps, 50);
  EXPECT_DOUBLE_EQ(s.cache_hit_ratio, 0.5);

  r.first_token = clock.now + Millis{300};
  r.ended = clock.now + Millis{1'300};  // 1 s of generation: 100 tok/s
  r.cached_tokens = 0;
  h.Release(r);
  s = h.Snapshot(clock.now);
  EXPECT_DOUBLE_EQ(s.latency_ms, (2'100 + 1'300) / 2.0);
  EXPECT_DOUBLE_EQ(s.ttft_ms, 200);
  EXPECT_DOUBLE_EQ(s.throughput_tps, 75);
  EXPECT_DOUBLE_EQ(s.cache_hit_ratio, 0.25);
}

TEST(Health, MovingAveragesSkipWhatTheyCannotMeasure) {
  HealthOptions o = Options();
  EndpointHealth h(&o, 0);
  FakeClock clock;
  // No first token, no tokens, no prompt: only latency.
  h.Release(Report(clock, Outcome::kSuccess, Millis{400}));
  // First token and end at the same instant: no time to measure throughput over.
  AttemptReport r = Report(clock, Outcome::kSuccess, Millis{400});
  r.first_token = r.ended;
  r.completion_tokens = 10;
  h.Release(r);
  // Failures and rate limits teach no timings.
  h.Release(Report(clock, Outcome::kFailure, Millis{1}));
  h.Release(Report(clock, Outcome::kRateLimited, Millis{1}));
  HealthSnapshot s = h.Snapshot(clock.now);
  EXPECT_DOUBLE_EQ(s.latency_ms, 400);
  EXPECT_DOUBLE_EQ(s.ttft_ms, 400);
  EXPECT_LT(s.throughput_tps, 0);
  EXPECT_LT(s.cache_hit_ratio, 0);
}

TEST(Health, WindowCountsErrorAndRateLimitRates) {
  HealthOptions o = Options();
  EndpointHealth h(&o, 0);
  FakeClock clock;
  h.Release(Report(clock, Outcome::kSuccess, Millis{0}));
  h.Release(Report(clock, Outcome::kSuccess, Millis{0}));
  h.Release(Report(clock, Outcome::kFailure, Millis{0}));
  h.Release(Report(clock, Outcome::kRateLimited, Millis{0}));
  h.Release(Report(clock, Outcome::kNeutral, Millis{0}));  // not an attempt on the endpoint's record
  HealthSnapshot s = h.Snapshot(clock.now);
  EXPECT_EQ(s.window_attempts, 4);
  EXPECT_DOUBLE_EQ(s.error_rate, 0.25);
  EXPECT_DOUBLE_EQ(s.rate_limited_rate, 0.25);
}

TEST(Health, OldWindowBucketsExpire) {
  HealthOptions o = Options();  // 100 s window: ten 10 s buckets
  EndpointHealth h(&o, 0);
  FakeClock clock;
  const SteadyTime t0 = clock.now;
  h.Release(Report(clock, Outcome::kFailure, Millis{0}));
  h.Release(Report(clock, Outcome::kFailure, Millis{0}));
  clock.Advance(seconds{50});
  h.Release(Report(clock, Outcome::kSuccess, Millis{0}));
  h.Release(Report(clock, Outcome::kSuccess, Millis{0}));

  HealthSnapshot s = h.Snapshot(t0 + seconds{99});
  EXPECT_EQ(s.window_attempts, 4);
  EXPECT_DOUBLE_EQ(s.error_rate, 0.5);
  s = h.Snapshot(t0 + seconds{100});  // the failures' bucket left the window
  EXPECT_EQ(s.window_attempts, 2);
  EXPECT_DOUBLE_EQ(s.error_rate, 0);
  s = h.Snapshot(t0 + seconds{150});
  EXPECT_EQ(s.window_attempts, 0);
  EXPECT_DOUBLE_EQ(s.error_rate, 0);

  // Coming round to a reused slot starts it afresh.
  clock.now = t0 + seconds{200};
  h.Release(Report(clock, Outcome::kRateLimited, Millis{0}));
  s = h.Snapshot(clock.now);
  EXPECT_EQ(s.window_attempts, 1);
  EXPECT_DOUBLE_EQ(s.error_rate, 0);
  EXPECT_DOUBLE_EQ(s.rate_limited_rate, 1);
}

TEST(Health, AReportOlderThanTheWindowIsNotCounted) {
  HealthOptions o = Options();
  EndpointHealth h(&o, 0);
  FakeClock clock;
  const SteadyTime t0 = clock.now;
  clock.Advance(seconds{100});
  h.Release(Report(clock, Outcome::kSuccess, Millis{0}));  // slot of t0's bucket, reused
  AttemptReport late;
  late.outcome = Outcome::kFailure;
  late.started = late.ended = t0;
  h.Release(late);
  HealthSnapshot s = h.Snapshot(clock.now);
  EXPECT_EQ(s.window_attempts, 1);
  EXPECT_DOUBLE_EQ(s.error_rate, 0);
}

TEST(Health, UptimeCoversTheLastThirtyMinutes) {
  HealthOptions o = Options();
  o.default_cooldown = Millis{0};
  EndpointHealth h(&o, 0);
  FakeClock clock;
  const SteadyTime t0 = clock.now;
  h.Release(Report(clock, Outcome::kFailure, Millis{0}));
  clock.Advance(minutes{10});
  h.Release(Report(clock, Outcome::kSuccess, Millis{0}));
  h.Release(Report(clock, Outcome::kSuccess, Millis{0}));
  h.Release(Report(clock, Outcome::kRateLimited, Millis{0}));
  h.Release(Report(clock, Outcome::kNeutral, Millis{0}));

  EXPECT_DOUBLE_EQ(h.Stats(clock.now).uptime_30m.value(), 50);
  EXPECT_DOUBLE_EQ(h.Stats(t0 + minutes{29} + seconds{59}).uptime_30m.value(), 50);
  EXPECT_DOUBLE_EQ(h.Stats(t0 + minutes{30}).uptime_30m.value(), 100.0 * 2 / 3);
  EXPECT_FALSE(h.Stats(t0 + minutes{40}).uptime_30m.has_value());
}

TEST(Health, StatsReportMediansOfRecentSamples) {
  HealthOptions o = Options();
  EndpointHealth h(&o, 0);
  FakeClock clock;
  for (int latency : {300, 100, 200}) {
    AttemptReport r = Report(clock, Outcome::kSuccess, Millis{latency});
    r.first_token = r.started + Millis{latency / 10};
    r.completion_tokens = latency;  // over 0.9 * latency ms: 1111.1 tok/s each
    h.Release(r);
  }
  LiveStats s = h.Stats(clock.now);
  EXPECT_DOUBLE_EQ(s.p50_latency_ms.value(), 200);
  EXPECT_DOUBLE_EQ(s.p50_ttft_ms.value(), 20);
  EXPECT_NEAR(s.p50_throughput_tps.value(), 1111.1, 0.1);
  EXPECT_EQ(s.circuit, CircuitState::kClosed);
  EXPECT_EQ(s.availability, Availability::kAvailable);

  // An even count: the mean of the middle two. Samples without a first
  // token count toward latency only.
  h.Release(Report(clock, Outcome::kSuccess, Millis{1'000}));
  s = h.Stats(clock.now);
  EXPECT_DOUBLE_EQ(s.p50_latency_ms.value(), 250);
  EXPECT_DOUBLE_EQ(s.p50_ttft_ms.value(), 20);
}

TEST(Health, StatsInterpolateTheUpperPercentiles) {
  HealthOptions o = Options();
  EndpointHealth h(&o, 0);
  FakeClock clock;
  // Latencies 1..64 ms in a shuffled order.
  for (int i = 0; i < EndpointHealth::kSamples; ++i) {
    h.Release(Report(clock, Outcome::kSuccess, Millis{(i * 37) % EndpointHealth::kSamples + 1}));
  }
  const LiveStats s = h.Stats(clock.now);
  ASSERT_TRUE(s.latency_ms);
  EXPECT_DOUBLE_EQ(s.latency_ms->p50, 32.5);
  EXPECT_DOUBLE_EQ(s.latency_ms->p75, 1 + 0.75 * 63);
  EXPECT_DOUBLE_EQ(s.latency_ms->p90, 1 + 0.90 * 63);
  EXPECT_DOUBLE_EQ(s.latency_ms->p99, 1 + 0.99 * 63);
  EXPECT_DOUBLE_EQ(*s.p50_latency_ms, 32.5);
  EXPECT_FALSE(s.ttft_ms) << "no sample had a first token";
}

TEST(Health, StatsKeepOnlyTheLastSamples) {
  HealthOptions o = Options();
  EndpointHealth h(&o, 0);
  FakeClock clock;
  for (int i = 0; i < EndpointHealth::kSamples; ++i) h.Release(Report(clock, Outcome::kSuccess, Millis{10}));
  for (int i = 0; i < EndpointHealth::kSamples / 2 + 1; ++i) {
    h.Release(Report(clock, Outcome::kSuccess, Millis{500}));
  }
  EXPECT_DOUBLE_EQ(h.Stats(clock.now).p50_latency_ms.value(), 500);
}

TEST(Health, ConcurrentAcquireAndReleaseBalance) {
  HealthOptions o = Options();
  EndpointHealth h(&o, 4);
  FakeClock clock;
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 10'000; ++i) {
        if (h.Acquire(clock.now) == Availability::kAvailable) {
          h.Release(Report(clock, Outcome::kSuccess, Millis{1}));
        }
      }
    });
  }
  for (std::thread& t : threads) t.join();
  HealthSnapshot s = h.Snapshot(clock.now);
  EXPECT_EQ(s.in_flight, 0);
  EXPECT_EQ(s.window_attempts, 40'000);
}

}  // namespace
}  // namespace tollgate::routing
