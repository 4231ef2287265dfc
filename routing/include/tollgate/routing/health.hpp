// Live health of one endpoint, learned from real calls only: moving figures
// of latency, time to first token (TTFT), throughput, cache hits and error
// rates; a circuit breaker; 429 cooldowns; the concurrency cap.
//
// Time is injected: every method takes `now` (a steady_clock time point), so
// tests drive it with a fake clock. Nothing here reads a clock.
//
// Circuit breaker (the classic three states; Nygard, "Release It!", and
// Envoy's outlier detection for the "far worse than its peers" rule):
//   closed    -> open       after `consecutive_failures` failures in a row, or
//                            when Trip() is called (the router: an error rate
//                            far worse than the endpoint's peers);
//   open      -> half-open  once `open_for` has passed;
//   half-open: exactly one call (the probe) is let through; its success
//              closes the breaker, its failure opens it again for
//              `open_for` (doubled each time, at most `max_open_for`).
// A 429 (rate limited) does not count toward the breaker: it puts the
// endpoint in cooldown until Retry-After (or `default_cooldown`), capped at
// `max_cooldown`.
//
// Threading: every method is thread-safe (one small mutex per endpoint);
// none allocates after construction, except Stats().
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <mutex>
#include <optional>

namespace tollgate::routing {

using SteadyTime = std::chrono::steady_clock::time_point;
using Millis = std::chrono::milliseconds;

struct HealthOptions {
  int consecutive_failures = 5;        // closed -> open
  Millis open_for{30'000};             // first open period
  Millis max_open_for{300'000};        // doubling stops here
  Millis default_cooldown{10'000};     // a 429 without Retry-After
  Millis max_cooldown{600'000};        // a longer Retry-After is capped
  // Error rates (the penalties of docs/routing.md, the peer comparison) are
  // counted over this window, in `kBuckets` buckets.
  std::chrono::seconds window{300};
  // Weight of the newest sample in the moving averages (EWMA) of latency,
  // TTFT, throughput and cache-hit ratio.
  double ewma_alpha = 0.2;
};

// How an attempt ended, as routing counts it.
enum class Outcome {
  kSuccess,      // served (the call committed and completed, or a stream broke after its first byte: see below)
  kFailure,      // connect failure, timeout, 5xx, overload, a stream that broke: counts toward the breaker
  kRateLimited,  // 429: cooldown; counted in the rate-limit rate, not the breaker
  kNeutral,      // says nothing about the endpoint (client cancelled, a 4xx the request caused, lost a hedge)
};

struct AttemptReport {
  Outcome outcome = Outcome::kNeutral;
  SteadyTime started;                     // attempt started (provider Start)
  std::optional<SteadyTime> first_token;  // first output event, if any
  SteadyTime ended;                       // terminal event
  int64_t prompt_tokens = 0;
  int64_t cached_tokens = 0;      // prompt tokens read from the provider's cache
  int64_t completion_tokens = 0;  // for throughput: completion_tokens / (ended - first_token)
  std::optional<Millis> retry_after;  // kRateLimited: the upstream's Retry-After
};

enum class CircuitState { kClosed, kOpen, kHalfOpen };

// Whether a call may go to the endpoint now.
enum class Availability {
  kAvailable,
  kCircuitOpen,  // open, or half-open with its probe already out
  kCoolingDown,  // after a 429
  kAtCapacity,   // max_concurrency calls in flight
};

// The figures the router reads on its decision path.
struct HealthSnapshot {
  CircuitState circuit = CircuitState::kClosed;
  Availability availability = Availability::kAvailable;
  SteadyTime available_at;  // when kCircuitOpen / kCoolingDown ends (half-open / cooldown over)
  int in_flight = 0;
  int max_concurrency = 0;  // 0 = unlimited
  // Moving averages; negative = no sample yet.
  double ttft_ms = -1;
  double latency_ms = -1;
  double throughput_tps = -1;   // completion tokens per second after the first token
  double cache_hit_ratio = -1;  // cached / prompt tokens
  // Over the window: failures / attempts and 429s / attempts (0 without attempts).
  double error_rate = 0;
  double rate_limited_rate = 0;
  int64_t window_attempts = 0;
};

// Percentiles of the last samples, linearly interpolated between order
// statistics (Hyndman and Fan's definition 7, numpy's default): p50 of an
// even count is the mean of the middle two.
struct Percentiles {
  double p50 = 0, p75 = 0, p90 = 0, p99 = 0;
};

// For GET /api/v1/models/{id}/endpoints: figures of the last kSamples
// successful calls (nullopt before the first), uptime, state.
struct LiveStats {
  std::optional<Percentiles> latency_ms;      // whole attempt
  std::optional<Percentiles> ttft_ms;         // time to first token
  std::optional<Percentiles> throughput_tps;  // completion tokens per second after the first token
  std::optional<double> p50_latency_ms;       // = latency_ms->p50
  std::optional<double> p50_ttft_ms;          // = ttft_ms->p50
  std::optional<double> p50_throughput_tps;   // = throughput_tps->p50
  std::optional<double> uptime_30m;  // successes / (successes + failures + 429s), percent 0..100
  CircuitState circuit = CircuitState::kClosed;
  Availability availability = Availability::kAvailable;
  int in_flight = 0;
};

class EndpointHealth {
 public:
  // Buckets of the error-rate window; samples kept for the medians.
  static constexpr int kBuckets = 10;
  static constexpr int kSamples = 64;

  // `options` must outlive this object. `max_concurrency` 0 = unlimited.
  EndpointHealth(const HealthOptions* options, int max_concurrency);
  EndpointHealth(const EndpointHealth&) = delete;
  EndpointHealth& operator=(const EndpointHealth&) = delete;

  // Whether a call could start now, without claiming anything.
  Availability Check(SteadyTime now) const;
  // Claims a place for one attempt: a concurrency slot and, half-open, the
  // probe. kAvailable: claimed; Release must follow exactly once. Otherwise
  // nothing was claimed.
  Availability Acquire(SteadyTime now);
  // Ends a claimed attempt: frees its slot (and probe) and learns from it.
  // `report.started` must not be earlier than the Acquire it ends: a
  // half-open breaker tells its probe from calls that were already in flight
  // when it opened by their start times. Only the probe moves a breaker out
  // of half-open; other reports that arrive while it is open or half-open
  // count in the figures but not toward the breaker.
  void Release(const AttemptReport& report);
  // Opens a closed breaker now for `open_for` (the router's peer
  // comparison). No effect when it is open or half-open: there the probe
  // decides.
  void Trip(SteadyTime now);

  HealthSnapshot Snapshot(SteadyTime now) const;
  LiveStats Stats(SteadyTime now) const;  // not for the decision path: sorts copies of the samples

 private:
  struct Bucket {
    int64_t start_s = 0;  // window bucket start, seconds since the epoch of SteadyTime
    int64_t attempts = 0;
    int64_t failures = 0;
    int64_t rate_limited = 0;
  };
  struct Sample {
    float latency_ms = -1;
    float ttft_ms = -1;
    float throughput_tps = -1;
  };

  Availability CheckLocked(SteadyTime now) const;
  // The breaker's state as of `now`: open reads half-open once `open_for`
  // has passed, before any Acquire moves it there.
  CircuitState CircuitLocked(SteadyTime now) const;
  void OpenLocked(SteadyTime now, Millis period);
  void CountLocked(SteadyTime now, Outcome outcome);

  const HealthOptions* options_;
  const int max_concurrency_;
  mutable std::mutex mu_;
  CircuitState circuit_ = CircuitState::kClosed;
  SteadyTime open_until_;
  Millis open_period_{0};
  bool probe_out_ = false;
  // Calls claimed before the breaker last opened and not yet released.
  int stale_in_flight_ = 0;
  SteadyTime cooldown_until_;
  int consecutive_failures_ = 0;
  int in_flight_ = 0;
  double ttft_ms_ = -1, latency_ms_ = -1, throughput_tps_ = -1, cache_hit_ratio_ = -1;
  std::array<Bucket, kBuckets> window_{};
  // Uptime over 30 minutes: one bucket per minute.
  std::array<Bucket, 30> minutes_{};
  std::array<Sample, kSamples> samples_{};
  int sample_count_ = 0;
  int next_sample_ = 0;
};

}  // namespace tollgate::routing
