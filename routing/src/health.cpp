#include "tollgate/routing/health.hpp"

#include <algorithm>
#include <limits>

namespace tollgate::routing {
namespace {

using std::chrono::duration;

int64_t FloorDiv(int64_t a, int64_t b) { return a / b - ((a % b != 0) && ((a < 0) != (b < 0))); }

int64_t SecondsOf(SteadyTime t) {
  return std::chrono::floor<std::chrono::seconds>(t.time_since_epoch()).count();
}

double MillisBetween(SteadyTime from, SteadyTime to) {
  // A report with its times out of order must not read as "no sample yet".
  return std::max(0.0, duration<double, std::milli>(to - from).count());
}

void Ewma(double& average, double sample, double alpha) {
  average = average < 0 ? sample : alpha * sample + (1 - alpha) * average;
}

struct Totals {
  int64_t attempts = 0;
  int64_t failures = 0;
  int64_t rate_limited = 0;
};

// Both rings are keyed by time: a slot holds the bucket starting at
// start_s, and is reset when time comes round to it again. A report that
// arrives after its slot was reused for a newer bucket is older than the
// whole ring and is dropped.
template <typename Ring>
void CountIn(Ring& ring, int64_t width_s, int64_t now_s, Outcome outcome) {
  const int64_t n = static_cast<int64_t>(ring.size());
  const int64_t index = FloorDiv(now_s, width_s);
  const int64_t start = index * width_s;
  auto& bucket = ring[static_cast<std::size_t>(index - FloorDiv(index, n) * n)];
  if (bucket.start_s > start) return;
  if (bucket.start_s < start) bucket = {start, 0, 0, 0};
  ++bucket.attempts;
  if (outcome == Outcome::kFailure) ++bucket.failures;
  if (outcome == Outcome::kRateLimited) ++bucket.rate_limited;
}

// The current (partial) bucket and the ring.size() - 1 before it; slots
// not written since then hold older buckets and are skipped.
template <typename Ring>
Totals SumOf(const Ring& ring, int64_t width_s, int64_t now_s) {
  const int64_t current = FloorDiv(now_s, width_s) * width_s;
  const int64_t oldest = current - static_cast<int64_t>(ring.size() - 1) * width_s;
  Totals t;
  for (const auto& b : ring) {
    if (b.start_s < oldest || b.start_s > current) continue;
    t.attempts += b.attempts;
    t.failures += b.failures;
    t.rate_limited += b.rate_limited;
  }
  return t;
}

template <std::size_t N>
std::optional<Percentiles> PercentilesOf(std::array<float, N>& values, int count) {
  if (count == 0) return std::nullopt;
  std::sort(values.begin(), values.begin() + count);
  // Hyndman and Fan's definition 7: position q x (n - 1), interpolated.
  auto at = [&](double q) {
    const double pos = q * (count - 1);
    const int lo = static_cast<int>(pos);
    const int hi = std::min(lo + 1, count - 1);
    return values[lo] + (pos - lo) * (static_cast<double>(values[hi]) - values[lo]);
  };
  return Percentiles{at(0.50), at(0.75), at(0.90), at(0.99)};
}

constexpr int64_t kMinuteS = 60;

}  // namespace

EndpointHealth::EndpointHealth(const HealthOptions* options, int max_concurrency)
    : options_(options), max_concurrency_(max_concurrency) {
  // start_s 0 is a real time for a clock whose epoch is 0 (a test clock);
  // mark every slot as never written instead.
  for (Bucket& b : window_) b.start_s = std::numeric_limits<int64_t>::min();
  for (Bucket& b : minutes_) b.start_s = std::numeric_limits<int64_t>::min();
}

CircuitState EndpointHealth::CircuitLocked(SteadyTime now) const {
  if (circuit_ == CircuitState::kOpen && now >= open_until_) return CircuitState::kHalfOpen;
  return circuit_;
}

Availability EndpointHealth::CheckLocked(SteadyTime now) const {
  const CircuitState circuit = CircuitLocked(now);
  if (circuit == CircuitState::kOpen || (circuit == CircuitState::kHalfOpen && probe_out_)) {
    return Availability::kCircuitOpen;
  }
  if (now < cooldown_until_) return Availability::kCoolingDown;
  if (max_concurrency_ > 0 && in_flight_ >= max_concurrency_) return Availability::kAtCapacity;
  return Availability::kAvailable;
}

void EndpointHealth::OpenLocked(SteadyTime now, Millis period) {
  circuit_ = CircuitState::kOpen;
  open_period_ = period;
  open_until_ = now + period;
  // An outstanding probe belongs to the breaker that just ended: its report
  // will count as a stale call, so the next half-open can send a new one.
  probe_out_ = false;
  stale_in_flight_ = in_flight_;
  consecutive_failures_ = 0;
}

void EndpointHealth::CountLocked(SteadyTime now, Outcome outcome) {
  const int64_t now_s = SecondsOf(now);
  const int64_t width_s = std::max<int64_t>(1, options_->window.count() / kBuckets);
  CountIn(window_, width_s, now_s, outcome);
  CountIn(minutes_, kMinuteS, now_s, outcome);
}

Availability EndpointHealth::Check(SteadyTime now) const {
  std::lock_guard lock(mu_);
  return CheckLocked(now);
}

Availability EndpointHealth::Acquire(SteadyTime now) {
  std::lock_guard lock(mu_);
  const Availability availability = CheckLocked(now);
  if (availability != Availability::kAvailable) return availability;
  if (circuit_ == CircuitState::kOpen) circuit_ = CircuitState::kHalfOpen;  // open_for has passed
  if (circuit_ == CircuitState::kHalfOpen) probe_out_ = true;
  ++in_flight_;
  return Availability::kAvailable;
}

void EndpointHealth::Release(const AttemptReport& report) {
  std::lock_guard lock(mu_);
  if (in_flight_ > 0) --in_flight_;

  // Calls claimed before the breaker opened may still come back while it is
  // half-open; they started before it opened, the probe after the open
  // period ended. With none of them left out, whatever comes back is the
  // probe (so a probe reported with a wrong start time cannot stay out).
  const bool probe = circuit_ == CircuitState::kHalfOpen && probe_out_ &&
                     (stale_in_flight_ == 0 || report.started >= open_until_);
  if (!probe && stale_in_flight_ > 0) --stale_in_flight_;

  if (probe) {
    probe_out_ = false;
    if (report.outcome == Outcome::kSuccess) {
      circuit_ = CircuitState::kClosed;
      open_period_ = Millis{0};
      consecutive_failures_ = 0;
    } else if (report.outcome == Outcome::kFailure) {
      OpenLocked(report.ended,
                 std::max(open_period_, std::min(open_period_ * 2, options_->max_open_for)));
    }
    // A 429 or a neutral end says nothing about recovery: the probe is
    // returned and the next Acquire sends another.
  } else if (circuit_ == CircuitState::kClosed) {
    if (report.outcome == Outcome::kFailure) {
      if (++consecutive_failures_ >= options_->consecutive_failures) {
        OpenLocked(report.ended, options_->open_for);
      }
    } else if (report.outcome == Outcome::kSuccess) {
      consecutive_failures_ = 0;
    }
  }

  if (report.outcome == Outcome::kNeutral) return;

  if (report.outcome == Outcome::kRateLimited) {
    const Millis wait =
        std::clamp(report.retry_after.value_or(options_->default_cooldown), Millis{0}, options_->max_cooldown);
    // Never shorten a cooldown: another call's 429 may have asked for longer.
    cooldown_until_ = std::max(cooldown_until_, report.ended + wait);
  }

  CountLocked(report.ended, report.outcome);

  // Timings come from successes only: a failure's latency is how fast it
  // failed, which would make a broken endpoint look quick.
  if (report.outcome != Outcome::kSuccess) return;
  const double alpha = options_->ewma_alpha;
  Sample sample;
  const double latency_ms = MillisBetween(report.started, report.ended);
  Ewma(latency_ms_, latency_ms, alpha);
  sample.latency_ms = static_cast<float>(latency_ms);
  if (report.first_token) {
    const double ttft_ms = MillisBetween(report.started, *report.first_token);
    Ewma(ttft_ms_, ttft_ms, alpha);
    sample.ttft_ms = static_cast<float>(ttft_ms);
    const double generating_s = MillisBetween(*report.first_token, report.ended) / 1000;
    if (report.completion_tokens > 0 && generating_s > 0) {
      const double tps = static_cast<double>(report.completion_tokens) / generating_s;
      Ewma(throughput_tps_, tps, alpha);
      sample.throughput_tps = static_cast<float>(tps);
    }
  }
  if (report.prompt_tokens > 0) {
    const int64_t cached = std::clamp<int64_t>(report.cached_tokens, 0, report.prompt_tokens);
    Ewma(cache_hit_ratio_, static_cast<double>(cached) / static_cast<double>(report.prompt_tokens), alpha);
  }
  samples_[next_sample_] = sample;
  next_sample_ = (next_sample_ + 1) % kSamples;
  sample_count_ = std::min(sample_count_ + 1, kSamples);
}

void EndpointHealth::Trip(SteadyTime now) {
  std::lock_guard lock(mu_);
  if (CircuitLocked(now) == CircuitState::kClosed) OpenLocked(now, options_->open_for);
}

HealthSnapshot EndpointHealth::Snapshot(SteadyTime now) const {
  std::lock_guard lock(mu_);
  HealthSnapshot s;
  s.circuit = CircuitLocked(now);
  s.availability = CheckLocked(now);
  switch (s.availability) {
    case Availability::kCircuitOpen:
      // Half-open with the probe out: no known end; the probe may return any moment.
      s.available_at = s.circuit == CircuitState::kOpen ? std::max(open_until_, cooldown_until_) : now;
      break;
    case Availability::kCoolingDown:
      s.available_at = cooldown_until_;
      break;
    case Availability::kAvailable:
    case Availability::kAtCapacity:
      s.available_at = now;
      break;
  }
  s.in_flight = in_flight_;
  s.max_concurrency = max_concurrency_;
  s.ttft_ms = ttft_ms_;
  s.latency_ms = latency_ms_;
  s.throughput_tps = throughput_tps_;
  s.cache_hit_ratio = cache_hit_ratio_;
  const int64_t width_s = std::max<int64_t>(1, options_->window.count() / kBuckets);
  const Totals t = SumOf(window_, width_s, SecondsOf(now));
  s.window_attempts = t.attempts;
  if (t.attempts > 0) {
    s.error_rate = static_cast<double>(t.failures) / static_cast<double>(t.attempts);
    s.rate_limited_rate = static_cast<double>(t.rate_limited) / static_cast<double>(t.attempts);
  }
  return s;
}

LiveStats EndpointHealth::Stats(SteadyTime now) const {
  std::array<float, kSamples> latency, ttft, throughput;
  int n_latency = 0, n_ttft = 0, n_throughput = 0;
  LiveStats out;
  {
    std::lock_guard lock(mu_);
    for (int i = 0; i < sample_count_; ++i) {
      const Sample& s = samples_[i];
      if (s.latency_ms >= 0) latency[n_latency++] = s.latency_ms;
      if (s.ttft_ms >= 0) ttft[n_ttft++] = s.ttft_ms;
      if (s.throughput_tps >= 0) throughput[n_throughput++] = s.throughput_tps;
    }
    const Totals t = SumOf(minutes_, kMinuteS, SecondsOf(now));
    if (t.attempts > 0) {
      out.uptime_30m = 100.0 * static_cast<double>(t.attempts - t.failures - t.rate_limited) /
                       static_cast<double>(t.attempts);
    }
    out.circuit = CircuitLocked(now);
    out.availability = CheckLocked(now);
    out.in_flight = in_flight_;
  }
  // Sorted outside the lock: the decision path may be waiting on it.
  out.latency_ms = PercentilesOf(latency, n_latency);
  out.ttft_ms = PercentilesOf(ttft, n_ttft);
  out.throughput_tps = PercentilesOf(throughput, n_throughput);
  if (out.latency_ms) out.p50_latency_ms = out.latency_ms->p50;
  if (out.ttft_ms) out.p50_ttft_ms = out.ttft_ms->p50;
  if (out.throughput_tps) out.p50_throughput_tps = out.throughput_tps->p50;
  return out;
}

}  // namespace tollgate::routing
