// A deterministic simulation of routing over simulated time: the real Router
// and EndpointHealth, a fake clock, a seeded random source, and simulated
// endpoints whose behaviour is drawn from distributions (lognormal time to
// first token, normal throughput, Bernoulli failures and 429s). Calls arrive
// at a fixed rate and each goes Decide -> Acquire -> (simulated outcome) ->
// Report, falling back along its plan after a failure or a 429, as the call
// driver does. What the routing issue asks of it is checked on the traffic
// that results:
//   - first choices follow the share formula of docs/routing.md, recomputed
//     here from each endpoint's health, and concentrate on the cheap healthy
//     endpoints;
//   - an endpoint that starts failing has its breaker opened and gets
//     (almost) no traffic while it is open; after it heals, a half-open
//     probe closes the breaker and its traffic comes back;
//   - an endpoint answering many 429s loses its share.
#include "tollgate/routing/router.hpp"

#include "fake_provider.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <map>
#include <memory>
#include <optional>
#include <queue>
#include <random>
#include <string>
#include <vector>

namespace tollgate::routing {
namespace {

using testing::FakeProvider;
using testing::PerMillion;

using std::chrono::milliseconds;
using std::chrono::seconds;


// How a simulated endpoint behaves. Times in ms, throughput in tokens/s.
struct Behaviour {
  double ttft_median_ms = 400;
  double ttft_sigma = 0.4;  // of the log
  double tps_mean = 80;
  double tps_sd = 10;
  double error_p = 0.005;      // connect failure / 5xx before the first byte
  double rate_limited_p = 0;   // 429 with Retry-After
  milliseconds retry_after{1000};
  // While [failing_from, failing_until) of simulated time: this error rate.
  std::optional<seconds> failing_from, failing_until;
  double failing_error_p = 0;
};

struct SimEndpoint {
  std::string id;
  double price = 1;  // USD per million, prompt and completion alike
  Behaviour behaviour;
};

constexpr int64_t kPromptTokens = 1000;
constexpr int64_t kCompletionTokens = 200;

class Simulation {
 public:
  Simulation(std::vector<SimEndpoint> endpoints, RouterOptions options, uint64_t seed)
      : specs_(std::move(endpoints)), world_rng_(seed), route_rng_(seed ^ 0x9e3779b97f4a7c15ULL) {
    Model m;
    m.id = "sim/model";
    m.name = "Simulated model";
    for (const SimEndpoint& s : specs_) {
      providers_.push_back(std::make_unique<FakeProvider>(s.id));
      Endpoint e;
      e.id = s.id;
      e.provider_id = s.id;
      e.provider = providers_.back().get();
      e.upstream_model = "model";
      e.pricing.prompt = PerMillion(s.price);
      e.pricing.completion = PerMillion(s.price);
      e.pricing.cached_prompt = e.pricing.prompt;
      e.pricing.cache_write = e.pricing.prompt;
      e.supported = ParameterSet::All();
      m.endpoints.push_back(std::move(e));
    }
    std::vector<Model> models;
    models.push_back(std::move(m));
    catalog_ = std::make_unique<Catalog>(std::move(models));
    router_ = std::make_unique<Router>(catalog_.get(), options);
  }

  const Router& router() const { return *router_; }
  const Endpoint& endpoint(std::size_t i) const { return catalog_->endpoint(i); }
  std::size_t index(std::string_view id) const {
    for (std::size_t i = 0; i < specs_.size(); ++i) {
      if (specs_[i].id == id) return i;
    }
    ADD_FAILURE() << "no endpoint " << id;
    return 0;
  }
  SteadyTime start() const { return start_; }

  // Per endpoint, over a span of simulated time.
  struct Tally {
    int64_t first_choices = 0;   // drawn first
    double predicted_share = 0;  // sum over decisions of the formula's share (0 when skipped)
    int64_t attempts = 0;
    int64_t successes = 0;
    int64_t eligible_decisions = 0;  // decisions where it was not skipped
    double reported_share = 0;       // sum of Considered::share where eligible
  };
  struct Span {
    int64_t decisions = 0;
    std::vector<Tally> endpoints;
  };

  // What happened to one endpoint's attempts, for the breaker checks.
  struct AttemptLog {
    SteadyTime acquired;
    SteadyTime ended;
    CircuitState circuit_at_acquire = CircuitState::kClosed;
    Outcome outcome = Outcome::kNeutral;
    CircuitState circuit_after_report = CircuitState::kClosed;
  };

  // Calls arrive every `interval` from `from` to `to` (simulated time since
  // start); the tally of that span is returned. The endpoint given to
  // Watch() has its circuit recorded at every arrival, and its attempts.
  Span Run(milliseconds from, milliseconds to, milliseconds interval) {
    Span span;
    span.endpoints.resize(specs_.size());
    span_ = &span;
    for (SteadyTime t = start_ + from; t < start_ + to; t += interval) {
      Drain(t);
      Arrive(t, span);
    }
    Drain(start_ + to);
    span_ = nullptr;
    return span;
  }

  void Watch(std::size_t endpoint) { watched_ = endpoint; }
  const std::vector<AttemptLog>& watched_attempts() const { return watched_log_; }
  // (time, circuit) at every arrival, for the watched endpoint.
  const std::vector<std::pair<SteadyTime, CircuitState>>& watched_circuit() const { return watched_circuit_; }
  int64_t failed_calls() const { return failed_calls_; }
  int64_t calls() const { return calls_; }

  // The formula of docs/routing.md from an endpoint's health, independently
  // of the router's code (no tiers, no per-request fee, no cache reads here).
  double PredictedEffectivePrice(std::size_t i, SteadyTime now) const {
    const RouterOptions& o = router_->options();
    const HealthSnapshot h = router_->health(endpoint(i)).Snapshot(now);
    const double list = static_cast<double>(PerMillion(specs_[i].price).femto_usd_per_token);
    double effective = std::max(list, 1.0) * (1 + o.error_penalty * h.error_rate) *
                       (1 + o.rate_limit_penalty * h.rate_limited_rate);
    if (h.ttft_ms > o.ttft_threshold_ms) {
      effective *= 1 + o.ttft_penalty_per_s * (h.ttft_ms - o.ttft_threshold_ms) / 1000;
    }
    return effective;
  }

 private:
  struct Call {
    std::vector<std::size_t> plan;  // endpoint indexes in the order to try
    std::size_t next = 0;
  };
  struct Event {
    SteadyTime at;
    uint64_t seq = 0;
    std::size_t call = 0;
    std::size_t endpoint = 0;
    AttemptReport report;
    bool operator>(const Event& o) const { return at != o.at ? at > o.at : seq > o.seq; }
  };

  bool Failing(const Behaviour& b, SteadyTime now) const {
    return b.failing_from && now >= start_ + *b.failing_from && (!b.failing_until || now < start_ + *b.failing_until);
  }

  // Ends every attempt due by `until`, in time order; failed ones fall back.
  void Drain(SteadyTime until) {
    while (!events_.empty() && events_.top().at <= until) {
      Event ev = events_.top();
      events_.pop();
      router_->Report(endpoint(ev.endpoint), ev.report);
      if (ev.endpoint == watched_ && ev.report.outcome != Outcome::kNeutral) {
        watched_log_[watched_index_.at(ev.seq)].circuit_after_report =
            router_->health(endpoint(ev.endpoint)).Snapshot(ev.at).circuit;
      }
      if (ev.report.outcome == Outcome::kSuccess) {
        if (span_ != nullptr) ++span_->endpoints[ev.endpoint].successes;
      } else {
        StartAttempt(ev.call, ev.at);  // fallback: the next endpoint of the plan
      }
    }
  }

  void Arrive(SteadyTime now, Span& span) {
    ++calls_;
    RouteQuery q;
    q.model = "sim/model";
    q.prompt_tokens = kPromptTokens;
    std::optional<Error> error = router_->Decide(q, now, route_rng_, &plan_);
    if (watched_ < specs_.size()) {
      watched_circuit_.emplace_back(now, router_->health(endpoint(watched_)).Snapshot(now).circuit);
    }
    if (error) {
      ++failed_calls_;
      return;
    }
    ++span.decisions;
    CheckFormula(now, span);
    ++span.endpoints[plan_.candidates.front().endpoint->index].first_choices;
    Call call;
    for (const Candidate& c : plan_.candidates) call.plan.push_back(c.endpoint->index);
    calls_in_flight_.push_back(std::move(call));
    StartAttempt(calls_in_flight_.size() - 1, now);
  }

  // The router's effective prices and shares against the formula, and the
  // tally of predicted shares.
  void CheckFormula(SteadyTime now, Span& span) {
    const RouterOptions& o = router_->options();
    std::vector<double> effective(specs_.size(), -1);
    double cheapest = 0;
    bool any = false;
    for (const Considered& c : plan_.considered) {
      if (c.skipped != SkipReason::kNone) continue;
      const std::size_t i = c.endpoint->index;
      effective[i] = PredictedEffectivePrice(i, now);
      EXPECT_NEAR(c.effective_price, effective[i], effective[i] * 1e-9) << specs_[i].id;
      cheapest = any ? std::min(cheapest, effective[i]) : effective[i];
      any = true;
    }
    double inverse_sq = 0;
    int explorers = 0;
    for (double p : effective) {
      if (p < 0) continue;
      if (p <= o.competitive_ratio * cheapest) {
        inverse_sq += 1 / (p * p);
      } else {
        ++explorers;
      }
    }
    const double explore = explorers > 0 ? o.exploration_share : 0;
    for (const Considered& c : plan_.considered) {
      if (c.skipped != SkipReason::kNone) continue;
      const std::size_t i = c.endpoint->index;
      const double p = effective[i];
      const double share = p <= o.competitive_ratio * cheapest ? (1 - explore) / (p * p) / inverse_sq
                                                               : explore / explorers;
      EXPECT_NEAR(c.share, share, 1e-9) << specs_[i].id;
      span.endpoints[i].predicted_share += share;
      span.endpoints[i].reported_share += c.share;
      ++span.endpoints[i].eligible_decisions;
    }
  }

  // Claims the next endpoint of the call's plan that has room and simulates
  // the attempt there. None left: the call failed.
  void StartAttempt(std::size_t call_index, SteadyTime now) {
    Call& call = calls_in_flight_[call_index];
    while (call.next < call.plan.size()) {
      const std::size_t i = call.plan[call.next++];
      EndpointHealth& health = router_->health(endpoint(i));
      const CircuitState before = health.Snapshot(now).circuit;
      if (health.Acquire(now) != Availability::kAvailable) continue;
      Event ev{.at = now, .seq = next_seq_++, .call = call_index, .endpoint = i, .report = Simulate(i, now)};
      ev.at = ev.report.ended;
      if (span_ != nullptr) ++span_->endpoints[i].attempts;
      if (i == watched_) {
        watched_index_[ev.seq] = watched_log_.size();
        watched_log_.push_back(AttemptLog{now, ev.at, before, ev.report.outcome, before});
      }
      events_.push(std::move(ev));
      return;
    }
    ++failed_calls_;
  }

  AttemptReport Simulate(std::size_t i, SteadyTime now) {
    const Behaviour& b = specs_[i].behaviour;
    std::uniform_real_distribution<double> unit(0, 1);
    AttemptReport r;
    r.started = now;
    r.prompt_tokens = kPromptTokens;
    const double error_p = Failing(b, now) ? b.failing_error_p : b.error_p;
    const double draw = unit(world_rng_);
    if (draw < b.rate_limited_p) {
      r.outcome = Outcome::kRateLimited;
      r.retry_after = b.retry_after;
      r.ended = now + milliseconds(100);
      return r;
    }
    if (draw < b.rate_limited_p + error_p) {
      r.outcome = Outcome::kFailure;  // before the first byte
      r.ended = now + milliseconds(std::uniform_int_distribution<int>(50, 500)(world_rng_));
      return r;
    }
    std::lognormal_distribution<double> ttft(std::log(b.ttft_median_ms), b.ttft_sigma);
    std::normal_distribution<double> tps(b.tps_mean, b.tps_sd);
    const double ttft_ms = ttft(world_rng_);
    const double rate = std::max(5.0, tps(world_rng_));
    r.outcome = Outcome::kSuccess;
    r.first_token = now + milliseconds(std::llround(ttft_ms));
    r.ended = *r.first_token + milliseconds(std::llround(1000.0 * kCompletionTokens / rate));
    r.completion_tokens = kCompletionTokens;
    return r;
  }

  std::vector<SimEndpoint> specs_;
  std::vector<std::unique_ptr<FakeProvider>> providers_;
  std::unique_ptr<Catalog> catalog_;
  std::unique_ptr<Router> router_;
  std::mt19937_64 world_rng_;  // outcomes
  std::mt19937_64 route_rng_;  // the router's draws
  const SteadyTime start_ = SteadyTime{} + std::chrono::hours(1000);
  Plan plan_;
  std::vector<Call> calls_in_flight_;
  std::priority_queue<Event, std::vector<Event>, std::greater<>> events_;
  uint64_t next_seq_ = 0;
  Span* span_ = nullptr;
  std::size_t watched_ = static_cast<std::size_t>(-1);
  std::vector<AttemptLog> watched_log_;
  std::map<uint64_t, std::size_t> watched_index_;
  std::vector<std::pair<SteadyTime, CircuitState>> watched_circuit_;
  int64_t calls_ = 0;
  int64_t failed_calls_ = 0;
};

// Observed first-choice frequency against the mean of the formula's shares:
// over 2,400 decisions a frequency near 0.3 has a standard deviation of about
// 0.01, so this is about 3.5 of them (checked over 60 seeds).
constexpr double kFrequencyTolerance = 0.035;

double Fraction(const Simulation::Span& span, std::size_t i) {
  return span.decisions == 0 ? 0 : static_cast<double>(span.endpoints[i].first_choices) / span.decisions;
}
double PredictedFraction(const Simulation::Span& span, std::size_t i) {
  return span.decisions == 0 ? 0 : span.endpoints[i].predicted_share / span.decisions;
}
double AttemptFraction(const Simulation::Span& span, std::size_t i) {
  int64_t all = 0;
  for (const auto& t : span.endpoints) all += t.attempts;
  return all == 0 ? 0 : static_cast<double>(span.endpoints[i].attempts) / all;
}

// Five endpoints of one model:
//   cheap    $0.50/M, healthy;
//   twin     $0.50/M, the same price, but half of its calls answer 429;
//   flaky    $0.55/M, healthy, then fails 90% of its calls for 5 minutes, then heals;
//   slow     $0.60/M, healthy, first tokens around 2.6 s (the TTFT penalty);
//   premium  $2.00/M, healthy, outside the competitive set (exploration only).
// Ten calls a second for 25 minutes of simulated time: 15,000 calls.
class RoutingSimulation : public ::testing::Test {
 protected:
  static RouterOptions Options() {
    RouterOptions o;
    o.health.consecutive_failures = 5;
    o.health.open_for = seconds(10);
    o.health.max_open_for = seconds(80);
    return o;
  }
  static std::vector<SimEndpoint> Endpoints() {
    Behaviour healthy;
    Behaviour rate_limited = healthy;
    rate_limited.rate_limited_p = 0.5;
    rate_limited.retry_after = milliseconds(1000);
    Behaviour flaky = healthy;
    flaky.failing_from = seconds(300);
    flaky.failing_until = seconds(600);
    flaky.failing_error_p = 0.9;
    Behaviour slow = healthy;
    slow.ttft_median_ms = 2600;
    slow.ttft_sigma = 0.2;
    return {{"cheap", 0.50, healthy},
            {"twin", 0.50, rate_limited},
            {"flaky", 0.55, flaky},
            {"slow", 0.60, slow},
            {"premium", 2.00, healthy}};
  }
};

TEST_F(RoutingSimulation, TrafficFollowsTheFormulaBreakersOpenAndRecoverAndRateLimitsCostShare) {
  Simulation sim(Endpoints(), Options(), /*seed=*/20261201);
  const std::size_t cheap = sim.index("cheap"), twin = sim.index("twin"), flaky = sim.index("flaky"),
                    slow = sim.index("slow"), premium = sim.index("premium");
  sim.Watch(flaky);
  const milliseconds every(100);

  // ---- The first call: no figures yet, so the twins are priced alike.
  const Simulation::Span start = sim.Run(seconds(0), every, every);
  ASSERT_EQ(start.decisions, 1);
  EXPECT_EQ(start.endpoints[twin].reported_share, start.endpoints[cheap].reported_share);
  EXPECT_GT(start.endpoints[twin].reported_share, 0.25);

  // ---- Healthy phase: first choices follow the formula.
  sim.Run(every, seconds(60), every);  // figures settle
  const Simulation::Span healthy = sim.Run(seconds(60), seconds(300), every);
  ASSERT_EQ(healthy.decisions, 2400);
  for (std::size_t i : {cheap, twin, flaky, slow, premium}) {
    EXPECT_NEAR(Fraction(healthy, i), PredictedFraction(healthy, i), kFrequencyTolerance) << sim.endpoint(i).id;
  }
  // Concentrated on the cheap healthy endpoints.
  EXPECT_GT(Fraction(healthy, cheap) + Fraction(healthy, flaky) + Fraction(healthy, slow), 0.9);
  // slow: dearer, and penalised for its first tokens.
  EXPECT_GT(Fraction(healthy, cheap), 1.5 * Fraction(healthy, slow));
  EXPECT_GT(Fraction(healthy, flaky), 1.2 * Fraction(healthy, slow));
  EXPECT_LT(Fraction(healthy, premium), 0.05);                     // exploration only
  EXPECT_GT(Fraction(healthy, premium), 0.005);                    // but not starved

  // ---- The 429-heavy twin: same list price as `cheap`, a fraction of its share.
  const double twin_share = healthy.endpoints[twin].reported_share / healthy.endpoints[twin].eligible_decisions;
  const double cheap_share = healthy.endpoints[cheap].reported_share / healthy.endpoints[cheap].eligible_decisions;
  EXPECT_LT(twin_share, 0.06);  // out of the competitive set most of the time: an exploration share
  EXPECT_LT(twin_share, cheap_share / 5);
  EXPECT_LT(Fraction(healthy, twin), Fraction(healthy, cheap) / 5);
  EXPECT_GT(healthy.endpoints[twin].attempts, 0);  // still explored, so its figures stay fresh
  EXPECT_LT(healthy.endpoints[twin].eligible_decisions, healthy.decisions);  // its cooldowns skip it at times

  // ---- flaky fails 90% of calls from t = 300 s: its breaker opens.
  const Simulation::Span failing = sim.Run(seconds(300), seconds(600), every);
  const SteadyTime fail_start = sim.start() + seconds(300);
  const SteadyTime heal = sim.start() + seconds(600);
  std::optional<SteadyTime> opened;
  for (const auto& [at, circuit] : sim.watched_circuit()) {
    if (at >= fail_start && circuit != CircuitState::kClosed) {
      opened = at;
      break;
    }
  }
  ASSERT_TRUE(opened) << "the breaker never opened";
  EXPECT_LT(*opened - fail_start, seconds(20));
  // While it is not closed, only probes reach it: never an attempt through
  // an open breaker, one probe at a time when half-open, and no more probes
  // than open periods (each at least open_for, 10 s) fit in the phase.
  int64_t probes = 0;
  std::optional<SteadyTime> last_probe_end;
  for (const Simulation::AttemptLog& a : sim.watched_attempts()) {
    if (a.acquired < *opened || a.acquired >= heal || a.circuit_at_acquire == CircuitState::kClosed) continue;
    EXPECT_EQ(a.circuit_at_acquire, CircuitState::kHalfOpen) << "an attempt got through an open breaker";
    if (last_probe_end) {
      EXPECT_GE(a.acquired, *last_probe_end) << "two probes at once";
    }
    last_probe_end = a.ended;
    ++probes;
  }
  EXPECT_GT(probes, 0);
  EXPECT_LE(probes, (heal - *opened) / Options().health.open_for + 1);
  // (Almost) no traffic: of every attempt in the failing phase, a sliver.
  EXPECT_LT(AttemptFraction(failing, flaky), 0.03);
  EXPECT_LT(Fraction(failing, flaky), 0.03);
  // The others took its traffic, and the calls were served.
  EXPECT_GT(Fraction(failing, cheap) + Fraction(failing, slow), 0.9);
  EXPECT_LT(sim.failed_calls(), sim.calls() / 200);

  // ---- flaky heals at t = 600 s: a half-open probe closes the breaker.
  const Simulation::Span recovery = sim.Run(seconds(600), seconds(1000), every);
  std::optional<SteadyTime> closed_by_probe;
  for (const Simulation::AttemptLog& a : sim.watched_attempts()) {
    if (a.acquired >= heal && a.circuit_at_acquire == CircuitState::kHalfOpen && a.outcome == Outcome::kSuccess) {
      EXPECT_EQ(a.circuit_after_report, CircuitState::kClosed);
      closed_by_probe = a.acquired;
      break;
    }
  }
  ASSERT_TRUE(closed_by_probe) << "no successful half-open probe after healing";
  EXPECT_LT(*closed_by_probe - heal, Options().health.max_open_for + seconds(60));
  EXPECT_GT(recovery.endpoints[flaky].successes, 0);

  // Once its failures have left the error window (300 s), its share is back.
  const Simulation::Span recovered = sim.Run(seconds(1000), seconds(1500), every);
  for (std::size_t i : {cheap, twin, flaky, slow, premium}) {
    EXPECT_NEAR(Fraction(recovered, i), PredictedFraction(recovered, i), kFrequencyTolerance) << sim.endpoint(i).id;
  }
  EXPECT_GT(Fraction(recovered, flaky), 0.2);
  EXPECT_NEAR(Fraction(recovered, flaky), Fraction(healthy, flaky), 0.05);
  EXPECT_EQ(sim.router().health(sim.endpoint(flaky)).Snapshot(sim.start() + seconds(1500)).circuit,
            CircuitState::kClosed);
}

// The same world with another seed: the conclusions do not hang on one draw.
TEST_F(RoutingSimulation, ConclusionsHoldForOtherSeeds) {
  for (uint64_t seed : {1ULL, 42ULL, 777ULL}) {
    Simulation sim(Endpoints(), Options(), seed);
    const std::size_t cheap = sim.index("cheap"), twin = sim.index("twin"), flaky = sim.index("flaky");
    sim.Run(seconds(0), seconds(60), milliseconds(100));
    const Simulation::Span healthy = sim.Run(seconds(60), seconds(300), milliseconds(100));
    for (std::size_t i = 0; i < 5; ++i) {
      EXPECT_NEAR(Fraction(healthy, i), PredictedFraction(healthy, i), kFrequencyTolerance) << "seed " << seed << " " << i;
    }
    EXPECT_LT(Fraction(healthy, twin), Fraction(healthy, cheap) / 5) << seed;
    const Simulation::Span failing = sim.Run(seconds(300), seconds(600), milliseconds(100));
    EXPECT_LT(AttemptFraction(failing, flaky), 0.03) << seed;
    sim.Run(seconds(600), seconds(1000), milliseconds(100));
    const Simulation::Span recovered = sim.Run(seconds(1000), seconds(1500), milliseconds(100));
    EXPECT_GT(Fraction(recovered, flaky), 0.2) << seed;
  }
}

}  // namespace
}  // namespace tollgate::routing
