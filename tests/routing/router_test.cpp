#include "tollgate/routing/router.hpp"

#include "fake_provider.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <cctype>
#include <cmath>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

namespace tollgate::routing {
namespace {

using testing::FakeProvider;
using testing::PerMillion;

using std::chrono::milliseconds;
using std::chrono::seconds;

// ---------------------------------------------------------------- fixtures


struct EndpointSpec {
  std::string id;           // also the provider id unless provider_id is set
  double prompt = 1;        // USD per million tokens
  double completion = 1;
  double cached = -1;       // -1: same as prompt
  std::string provider_id;  // "" = id
  std::string quantization;
  ParameterSet supported = ParameterSet::All();
  DataPolicy data_policy;
  int max_concurrency = 0;
  double weight = 1.0;
  int64_t context_length = 0;
  bool no_provider = false;  // Endpoint::provider left null
};

struct ModelSpec {
  std::string id;
  std::vector<EndpointSpec> endpoints;
  RoutingPolicy routing;
};

// A catalog, its router, a fake clock and a seeded random source.
class World {
 public:
  explicit World(std::vector<ModelSpec> specs, RouterOptions options = {}) {
    std::vector<Model> models;
    for (const ModelSpec& ms : specs) {
      Model m;
      m.id = ms.id;
      m.name = ms.id;
      m.routing = ms.routing;
      for (const EndpointSpec& es : ms.endpoints) {
        Endpoint e;
        e.id = ms.id + "@" + es.id;
        e.provider_id = es.provider_id.empty() ? es.id : es.provider_id;
        if (!es.no_provider) {
          // Display names are capitalised ("alpha" -> "Alpha Cloud") so that
          // matching by display name is a distinct case.
          std::string display = e.provider_id;
          display[0] = static_cast<char>(std::toupper(display[0]));
          providers_.push_back(std::make_unique<FakeProvider>(display + " Cloud", es.supported));
          e.provider = providers_.back().get();
        }
        e.upstream_model = ms.id;
        e.pricing.prompt = PerMillion(es.prompt);
        e.pricing.completion = PerMillion(es.completion);
        e.pricing.cached_prompt = PerMillion(es.cached < 0 ? es.prompt : es.cached);
        e.pricing.cache_write = e.pricing.prompt;
        e.quantization = es.quantization;
        e.supported = es.supported;
        e.data_policy = es.data_policy;
        e.max_concurrency = es.max_concurrency;
        e.weight = es.weight;
        e.context_length = es.context_length;
        m.endpoints.push_back(std::move(e));
      }
      models.push_back(std::move(m));
    }
    catalog_ = std::make_unique<Catalog>(std::move(models));
    router_ = std::make_unique<Router>(catalog_.get(), options);
  }

  Router& router() { return *router_; }
  const Model& model(std::string_view id) const { return *catalog_->Find(id); }
  const Endpoint& endpoint(std::string_view model_id, std::string_view id) const {
    for (const Endpoint& e : model(model_id).endpoints) {
      if (e.id == std::string(model_id) + "@" + std::string(id)) return e;
    }
    ADD_FAILURE() << "no endpoint " << id;
    return model(model_id).endpoints.front();
  }

  SteadyTime now() const { return now_; }
  void Advance(milliseconds d) { now_ += d; }
  std::mt19937_64& rng() { return rng_; }

  // One simulated attempt ending now: claimed, then reported. Returns what
  // Acquire said (nothing is reported when it refused).
  Availability Attempt(const Endpoint& e, Outcome outcome, double ttft_ms = 400, double latency_ms = 1500,
                       int64_t completion_tokens = 200, int64_t prompt_tokens = 1000, int64_t cached_tokens = 0,
                       std::optional<milliseconds> retry_after = std::nullopt) {
    const Availability a = router_->health(e).Acquire(now_);
    if (a != Availability::kAvailable) return a;
    AttemptReport r;
    r.outcome = outcome;
    r.started = now_ - milliseconds(static_cast<int64_t>(latency_ms));
    if (outcome == Outcome::kSuccess) r.first_token = r.started + milliseconds(static_cast<int64_t>(ttft_ms));
    r.ended = now_;
    r.prompt_tokens = prompt_tokens;
    r.cached_tokens = cached_tokens;
    r.completion_tokens = outcome == Outcome::kSuccess ? completion_tokens : 0;
    r.retry_after = retry_after;
    router_->Report(e, r);
    return a;
  }

  std::optional<Error> Decide(const RouteQuery& q, Plan* plan) { return router_->Decide(q, now_, rng_, plan); }

  // The ids (after '@') of the plan's endpoints, in order.
  static std::vector<std::string> Ids(const Plan& plan) {
    std::vector<std::string> out;
    for (const Candidate& c : plan.candidates) out.push_back(c.endpoint->id.substr(c.endpoint->id.find('@') + 1));
    return out;
  }
  static SkipReason ReasonOf(const Plan& plan, std::string_view id) {
    for (const Considered& c : plan.considered) {
      if (c.endpoint->id.substr(c.endpoint->id.find('@') + 1) == id) return c.skipped;
    }
    ADD_FAILURE() << "not considered: " << id;
    return SkipReason::kNone;
  }

 private:
  std::vector<std::unique_ptr<FakeProvider>> providers_;
  std::unique_ptr<Catalog> catalog_;
  std::unique_ptr<Router> router_;
  SteadyTime now_ = SteadyTime{} + seconds(1'000'000);
  std::mt19937_64 rng_{20240611};
};

RouteQuery Query(std::string_view model, const ProviderPreferences* prefs = nullptr) {
  RouteQuery q;
  q.model = model;
  q.preferences = prefs;
  q.prompt_tokens = 1000;
  return q;
}

ModelSpec ThreePriced() {
  return {"m/three", {{"cheap", 0.5, 0.5}, {"mid", 1, 1}, {"dear", 3, 3}}, {}};
}

// ---------------------------------------------------------------- health in the plan

TEST(Router, SortByPriceSkipsCheapestEndpointWithOpenCircuit) {
  World w({ThreePriced()});
  ProviderPreferences prefs;
  prefs.sort = ProviderPreferences::Sort::kPrice;
  Plan plan;
  ASSERT_FALSE(w.Decide(Query("m/three", &prefs), &plan));
  EXPECT_EQ(World::Ids(plan), (std::vector<std::string>{"cheap", "mid", "dear"}));
  EXPECT_EQ(plan.strategy, RoutingPolicy::Strategy::kPrice);

  // Five failures in a row (HealthOptions::consecutive_failures) open it.
  for (int i = 0; i < 5; ++i) w.Attempt(w.endpoint("m/three", "cheap"), Outcome::kFailure);
  ASSERT_FALSE(w.Decide(Query("m/three", &prefs), &plan));
  EXPECT_EQ(World::Ids(plan), (std::vector<std::string>{"mid", "dear"}));
  EXPECT_EQ(World::ReasonOf(plan, "cheap"), SkipReason::kCircuitOpen);
  EXPECT_EQ(plan.considered.size(), 3u);
}

TEST(Router, RateLimitCooldownExpires) {
  World w({{"m/one", {{"only", 1, 1}}, {}}, ThreePriced()});
  const Endpoint& e = w.endpoint("m/one", "only");
  w.Attempt(e, Outcome::kRateLimited, 0, 300, 0, 1000, 0, milliseconds(20'000));

  Plan plan;
  auto error = w.Decide(Query("m/one"), &plan);
  ASSERT_TRUE(error);
  EXPECT_EQ(error->code, ErrorCode::kResourceExhausted) << "only cooldowns: the caller is rate limited too";
  EXPECT_EQ(error->code_string, "rate_limited");
  EXPECT_EQ(error->retry_after, "20");
  EXPECT_EQ(World::ReasonOf(plan, "only"), SkipReason::kCoolingDown);

  w.Advance(milliseconds(19'500));
  error = w.Decide(Query("m/one"), &plan);
  ASSERT_TRUE(error);
  EXPECT_EQ(error->retry_after, "1");  // rounded up, never 0

  w.Advance(milliseconds(500));
  EXPECT_FALSE(w.Decide(Query("m/one"), &plan));
  EXPECT_EQ(World::Ids(plan), (std::vector<std::string>{"only"}));

  // Without Retry-After: HealthOptions::default_cooldown (10 s); the other
  // endpoints of the model carry on meanwhile.
  const Endpoint& mid = w.endpoint("m/three", "mid");
  w.Attempt(mid, Outcome::kRateLimited);
  ASSERT_FALSE(w.Decide(Query("m/three"), &plan));
  EXPECT_EQ(World::ReasonOf(plan, "mid"), SkipReason::kCoolingDown);
  EXPECT_EQ(plan.candidates.size(), 2u);
  w.Advance(milliseconds(9'999));
  ASSERT_FALSE(w.Decide(Query("m/three"), &plan));
  EXPECT_EQ(World::ReasonOf(plan, "mid"), SkipReason::kCoolingDown);
  w.Advance(milliseconds(1));
  ASSERT_FALSE(w.Decide(Query("m/three"), &plan));
  EXPECT_EQ(World::ReasonOf(plan, "mid"), SkipReason::kNone);
  EXPECT_EQ(plan.candidates.size(), 3u);
}

TEST(Router, HalfOpenProbeSuccessClosesTheBreaker) {
  World w({ThreePriced()});
  const Endpoint& cheap = w.endpoint("m/three", "cheap");
  for (int i = 0; i < 5; ++i) w.Attempt(cheap, Outcome::kFailure);
  ProviderPreferences prefs;
  prefs.sort = ProviderPreferences::Sort::kPrice;
  Plan plan;

  w.Advance(milliseconds(29'999));
  ASSERT_FALSE(w.Decide(Query("m/three", &prefs), &plan));
  EXPECT_EQ(World::ReasonOf(plan, "cheap"), SkipReason::kCircuitOpen);

  // open_for (30 s) over: half-open, back in the plan for one probe.
  w.Advance(milliseconds(1));
  ASSERT_FALSE(w.Decide(Query("m/three", &prefs), &plan));
  EXPECT_EQ(World::ReasonOf(plan, "cheap"), SkipReason::kNone);
  EXPECT_EQ(plan.candidates.size(), 3u);
  ASSERT_EQ(w.router().health(cheap).Acquire(w.now()), Availability::kAvailable);  // the probe
  // While the probe is out nobody else goes there.
  ASSERT_FALSE(w.Decide(Query("m/three", &prefs), &plan));
  EXPECT_EQ(World::ReasonOf(plan, "cheap"), SkipReason::kCircuitOpen);

  AttemptReport probe;
  probe.outcome = Outcome::kSuccess;
  probe.started = w.now();
  w.Advance(milliseconds(800));
  probe.first_token = w.now() - milliseconds(500);
  probe.ended = w.now();
  w.router().Report(cheap, probe);
  EXPECT_EQ(w.router().health(cheap).Snapshot(w.now()).circuit, CircuitState::kClosed);
  ASSERT_FALSE(w.Decide(Query("m/three", &prefs), &plan));
  EXPECT_EQ(World::ReasonOf(plan, "cheap"), SkipReason::kNone);
  // Back, though last for now: sort=price orders by effective price, and its
  // window still holds five failures in six (x (1 + 10 x 5/6)).
  EXPECT_EQ(World::Ids(plan), (std::vector<std::string>{"mid", "dear", "cheap"}));
}

TEST(Router, HalfOpenProbeFailureReopensTheBreakerForLonger) {
  World w({ThreePriced()});
  const Endpoint& cheap = w.endpoint("m/three", "cheap");
  for (int i = 0; i < 5; ++i) w.Attempt(cheap, Outcome::kFailure);
  w.Advance(milliseconds(30'000));
  Plan plan;
  ASSERT_FALSE(w.Decide(Query("m/three"), &plan));
  EXPECT_EQ(World::ReasonOf(plan, "cheap"), SkipReason::kNone);

  // The probe fails: open again, for twice as long (60 s).
  EXPECT_EQ(w.Attempt(cheap, Outcome::kFailure), Availability::kAvailable);
  ASSERT_FALSE(w.Decide(Query("m/three"), &plan));
  EXPECT_EQ(World::ReasonOf(plan, "cheap"), SkipReason::kCircuitOpen);
  w.Advance(milliseconds(59'999));
  ASSERT_FALSE(w.Decide(Query("m/three"), &plan));
  EXPECT_EQ(World::ReasonOf(plan, "cheap"), SkipReason::kCircuitOpen);
  w.Advance(milliseconds(1));
  ASSERT_FALSE(w.Decide(Query("m/three"), &plan));
  EXPECT_EQ(World::ReasonOf(plan, "cheap"), SkipReason::kNone);
}

TEST(Router, EveryEndpointOpenIsUnavailableWithRetryAfterOfTheSoonest) {
  World w({ThreePriced()});
  for (int i = 0; i < 5; ++i) w.Attempt(w.endpoint("m/three", "cheap"), Outcome::kFailure);
  w.Advance(milliseconds(5'000));
  for (int i = 0; i < 5; ++i) w.Attempt(w.endpoint("m/three", "mid"), Outcome::kFailure);
  w.Attempt(w.endpoint("m/three", "dear"), Outcome::kRateLimited, 0, 100, 0, 1000, 0, milliseconds(120'000));
  Plan plan;
  auto error = w.Decide(Query("m/three"), &plan);
  ASSERT_TRUE(error);
  EXPECT_EQ(error->code, ErrorCode::kUnavailable);
  EXPECT_EQ(error->retry_after, "25");  // cheap's breaker half-opens first
  EXPECT_TRUE(plan.candidates.empty());
}

TEST(Router, EndpointAtCapacityStaysInThePlan) {
  World w({{"m/local", {{"local", 0, 0, -1, "", "", ParameterSet::All(), {}, 1}, {"cloud", 1, 1}},
            {RoutingPolicy::Strategy::kOrdered}}});
  const Endpoint& local = w.endpoint("m/local", "local");
  ASSERT_EQ(w.router().health(local).Acquire(w.now()), Availability::kAvailable);
  EXPECT_EQ(w.router().health(local).Check(w.now()), Availability::kAtCapacity);
  Plan plan;
  ASSERT_FALSE(w.Decide(Query("m/local"), &plan));
  // Local first, cloud on overflow: the call driver skips the full one.
  EXPECT_EQ(World::Ids(plan), (std::vector<std::string>{"local", "cloud"}));
  EXPECT_EQ(plan.strategy, RoutingPolicy::Strategy::kOrdered);
}

// ---------------------------------------------------------------- default shares

// The formula of docs/routing.md, written out again from the constants.
double ExpectedEffective(double prompt, double completion, double cached, double hit, double error_rate,
                         double rate_limited, double ttft_ms) {
  const double prompt_eff = prompt * (1 - hit) + cached * hit;
  const double blended = (3 * prompt_eff + 1 * completion) / 4 * 1e9;  // femto-USD per token
  double penalty = (1 + 10 * error_rate) * (1 + 5 * rate_limited);
  if (ttft_ms > 2000) penalty *= 1 + 0.25 * (ttft_ms - 2000) / 1000;
  return blended * penalty;
}

TEST(Router, TrafficSharesConvergeToTheDocumentedFormula) {
  // a: cheapest list price with a real cache discount; b: 5% errors;
  // c: 10% 429s and weight 2; d: slow first tokens; e: too dear; f: cheap
  // but 40% errors. e and f fall outside the competitive set.
  World w({{"m/six",
            {{"a", 1.0, 2.0, 0.25},
             {"b", 1.2, 0.8},
             {"c", 0.9, 1.5, -1, "", "", ParameterSet::All(), {}, 0, 2.0},
             {"d", 0.8, 0.8},
             {"e", 3.0, 3.0},
             {"f", 0.5, 0.5}},
            {}}});
  auto& router = w.router();
  const Endpoint& a = w.endpoint("m/six", "a");
  const Endpoint& b = w.endpoint("m/six", "b");
  const Endpoint& c = w.endpoint("m/six", "c");
  const Endpoint& d = w.endpoint("m/six", "d");
  const Endpoint& e = w.endpoint("m/six", "e");
  const Endpoint& f = w.endpoint("m/six", "f");
  for (int i = 0; i < 20; ++i) w.Attempt(a, Outcome::kSuccess, 400, 1500, 200, 1000, 500);
  for (int i = 0; i < 20; ++i) w.Attempt(b, i == 7 ? Outcome::kFailure : Outcome::kSuccess);
  for (int i = 0; i < 18; ++i) w.Attempt(c, Outcome::kSuccess);
  // Two calls in flight together both get a 429 (the first one's cooldown
  // would turn the second away at Acquire).
  ASSERT_EQ(router.health(c).Acquire(w.now()), Availability::kAvailable);
  ASSERT_EQ(router.health(c).Acquire(w.now()), Availability::kAvailable);
  for (int i = 0; i < 2; ++i) {
    AttemptReport limited;
    limited.outcome = Outcome::kRateLimited;
    limited.started = w.now() - milliseconds(200);
    limited.ended = w.now();
    router.Report(c, limited);
  }
  for (int i = 0; i < 20; ++i) w.Attempt(d, Outcome::kSuccess, 4000, 6000);
  for (int i = 0; i < 20; ++i) w.Attempt(e, Outcome::kSuccess);
  for (int i = 0; i < 10; ++i) w.Attempt(f, i % 2 == 1 && i < 9 ? Outcome::kFailure : Outcome::kSuccess);
  w.Advance(milliseconds(15'000));  // c's cooldown over; everything still in the window

  // The figures the formula reads, as health reports them.
  const SteadyTime now = w.now();
  EXPECT_NEAR(router.health(a).Snapshot(now).cache_hit_ratio, 0.5, 1e-12);
  EXPECT_NEAR(router.health(b).Snapshot(now).error_rate, 0.05, 1e-12);
  EXPECT_NEAR(router.health(c).Snapshot(now).rate_limited_rate, 0.1, 1e-12);
  EXPECT_NEAR(router.health(d).Snapshot(now).ttft_ms, 4000, 1e-9);
  EXPECT_NEAR(router.health(f).Snapshot(now).error_rate, 0.4, 1e-12);
  EXPECT_EQ(router.health(f).Snapshot(now).circuit, CircuitState::kClosed);

  std::map<std::string, double> eff = {
      {"a", ExpectedEffective(1.0, 2.0, 0.25, 0.5, 0, 0, 400)},     // 0.96875 $/M
      {"b", ExpectedEffective(1.2, 0.8, 1.2, 0, 0.05, 0, 400)},     // 1.1 x 1.5 = 1.65
      {"c", ExpectedEffective(0.9, 1.5, 0.9, 0, 0, 0.1, 400)},      // 1.05 x 1.5 = 1.575
      {"d", ExpectedEffective(0.8, 0.8, 0.8, 0, 0, 0, 4000)},       // 0.8 x 1.5 = 1.2
      {"e", ExpectedEffective(3.0, 3.0, 3.0, 0, 0, 0, 400)},        // 3.0
      {"f", ExpectedEffective(0.5, 0.5, 0.5, 0, 0.4, 0, 400)}};     // 0.5 x 5 = 2.5
  const std::map<std::string, double> weight = {{"a", 1}, {"b", 1}, {"c", 2}, {"d", 1}, {"e", 1}, {"f", 1}};
  double cheapest = 1e300;
  for (const auto& [id, p] : eff) cheapest = std::min(cheapest, p);
  double inverse_sq = 0;
  int explorers = 0;
  for (const auto& [id, p] : eff) {
    if (p <= 2 * cheapest) {
      inverse_sq += weight.at(id) / (p * p);
    } else {
      ++explorers;
    }
  }
  ASSERT_EQ(explorers, 2);
  std::map<std::string, double> expected;
  for (const auto& [id, p] : eff) {
    expected[id] = p <= 2 * cheapest ? 0.95 * weight.at(id) / (p * p) / inverse_sq : 0.05 / explorers;
  }

  Plan plan;
  ASSERT_FALSE(w.Decide(Query("m/six"), &plan));
  EXPECT_EQ(plan.strategy, RoutingPolicy::Strategy::kShares);
  ASSERT_EQ(plan.candidates.size(), 6u);
  for (const Considered& con : plan.considered) {
    const std::string id = con.endpoint->id.substr(con.endpoint->id.find('@') + 1);
    EXPECT_NEAR(con.effective_price, eff[id], eff[id] * 1e-12) << id;
    EXPECT_NEAR(con.share, expected[id], 1e-12) << id;
  }

  // 10,000 draws: first-choice frequencies within 2 points of the shares,
  // and each plan holds every endpoint once. A retry draws again from what
  // is left: after `a` first, the second choice follows the remaining
  // shares renormalised.
  constexpr int kDraws = 10'000;
  std::map<std::string, int> first;
  std::map<std::string, int> second_after_a;
  int a_first = 0;
  for (int i = 0; i < kDraws; ++i) {
    ASSERT_FALSE(w.Decide(Query("m/six"), &plan));
    const auto ids = World::Ids(plan);
    ASSERT_EQ(std::set<std::string>(ids.begin(), ids.end()).size(), 6u);
    ++first[ids[0]];
    if (ids[0] == "a") {
      ++a_first;
      ++second_after_a[ids[1]];
    }
  }
  for (const auto& [id, share] : expected) {
    EXPECT_NEAR(first[id] / static_cast<double>(kDraws), share, 0.02) << id;
  }
  for (const auto& [id, share] : expected) {
    if (id == "a") continue;
    EXPECT_NEAR(second_after_a[id] / static_cast<double>(a_first), share / (1 - expected["a"]), 0.03) << id;
  }
}

TEST(Router, EffectivePriceUsesTheTierAndAmortisesThePerRequestFee) {
  std::vector<Model> models(1);
  models[0].id = "m/tiered";
  Endpoint e;
  e.id = "tiered";
  e.provider_id = "tiered";
  e.pricing.prompt = PerMillion(1);
  e.pricing.completion = PerMillion(2);
  e.pricing.cached_prompt = PerMillion(1);
  e.pricing.per_request = Money{1'000};  // 1e-6 USD a call
  PriceTier tier;
  tier.above_prompt_tokens = 200'000;
  tier.pricing = e.pricing;
  tier.pricing.prompt = PerMillion(2);
  tier.pricing.completion = PerMillion(4);
  tier.pricing.cached_prompt = PerMillion(2);
  e.tiers.push_back(tier);
  models[0].endpoints.push_back(e);
  Catalog catalog(std::move(models));
  Router router(&catalog, {});
  std::mt19937_64 rng(1);
  Plan plan;

  RouteQuery q = Query("m/tiered");
  q.prompt_tokens = 1000;
  ASSERT_FALSE(router.Decide(q, SteadyTime{}, rng, &plan));
  // (3 x 1 + 2) / 4 $/M = 1.25e9 femto; plus 1e-6 USD = 1e9 femto over
  // 1000 x 4/3 blended tokens.
  EXPECT_NEAR(plan.considered[0].effective_price, 1.25e9 + 1e9 / (1000.0 * 4 / 3), 1);
  q.prompt_tokens = 300'000;
  ASSERT_FALSE(router.Decide(q, SteadyTime{}, rng, &plan));
  EXPECT_NEAR(plan.considered[0].effective_price, 2.5e9 + 1e9 / (300'000.0 * 4 / 3), 1);
}

TEST(Router, FreeEndpointTakesTheCompetitiveShare) {
  // Zero prices are floored at 1 femto-USD per token, so a free local engine
  // is "infinitely" cheaper than any paid endpoint, which keeps only the
  // exploration share.
  World w({{"m/free", {{"local", 0, 0}, {"cloud", 0.1, 0.1}}, {}}});
  Plan plan;
  ASSERT_FALSE(w.Decide(Query("m/free"), &plan));
  EXPECT_DOUBLE_EQ(plan.considered[0].effective_price, 1.0);
  EXPECT_NEAR(plan.considered[0].share, 0.95, 1e-12);
  EXPECT_NEAR(plan.considered[1].share, 0.05, 1e-12);
}

TEST(Router, WithoutExplorationOutsidersFollowCheapestFirst) {
  RouterOptions options;
  options.exploration_share = 0;
  World w({{"m/x", {{"far", 9, 9}, {"a", 1, 1}, {"near", 8, 8}, {"b", 1.2, 1.2}}, {}}}, options);
  Plan plan;
  for (int i = 0; i < 200; ++i) {
    ASSERT_FALSE(w.Decide(Query("m/x"), &plan));
    const auto ids = World::Ids(plan);
    ASSERT_EQ(ids.size(), 4u);
    EXPECT_EQ(ids[2], "near");
    EXPECT_EQ(ids[3], "far");
  }
  EXPECT_EQ(plan.considered[0].share, 0.0);
}

TEST(Router, WeightsSplitEqualPricesInProportion) {
  World w({{"m/w", {{"x", 1, 1, -1, "", "", ParameterSet::All(), {}, 0, 3.0}, {"y", 1, 1}}, {}}});
  Plan plan;
  ASSERT_FALSE(w.Decide(Query("m/w"), &plan));
  EXPECT_NEAR(plan.considered[0].share, 0.75, 1e-12);
  EXPECT_NEAR(plan.considered[1].share, 0.25, 1e-12);
  EXPECT_NEAR(plan.candidates[0].share + plan.candidates[1].share, 1.0, 1e-12);
}

// ---------------------------------------------------------------- stickiness

ModelSpec Cached() {
  // Cache reads at a tenth of the prompt price: stickiness pays.
  return {"m/cached", {{"p", 1, 1, 0.1}, {"q", 1, 1, 0.1}, {"r", 1, 1, 0.1}}, {}};
}

TEST(Router, StickinessHoldsWhileFreshAndExpires) {
  World w({Cached()});
  const Endpoint& r = w.endpoint("m/cached", "r");
  w.router().Remember(42, r, w.now());
  RouteQuery q = Query("m/cached");
  q.session = 42;
  Plan plan;
  for (int i = 0; i < 200; ++i) {
    ASSERT_FALSE(w.Decide(q, &plan));
    ASSERT_EQ(plan.candidates[0].endpoint, &r);
    EXPECT_TRUE(plan.candidates[0].sticky);
    EXPECT_FALSE(plan.candidates[1].sticky);
    EXPECT_EQ(plan.candidates.size(), 3u);  // the others stay as fallbacks
  }
  // Another conversation is not affected.
  q.session = 43;
  int r_first = 0;
  for (int i = 0; i < 300; ++i) {
    ASSERT_FALSE(w.Decide(q, &plan));
    r_first += plan.candidates[0].endpoint == &r;
    EXPECT_FALSE(plan.candidates[0].sticky);
  }
  EXPECT_LT(r_first, 150);

  // Each call refreshes it; idle past sticky_ttl (600 s) it is gone.
  w.Advance(milliseconds(599'000));
  q.session = 42;
  ASSERT_FALSE(w.Decide(q, &plan));
  EXPECT_TRUE(plan.candidates[0].sticky);
  w.router().Remember(42, r, w.now());
  w.Advance(milliseconds(599'000));
  ASSERT_FALSE(w.Decide(q, &plan));
  EXPECT_TRUE(plan.candidates[0].sticky);
  w.Advance(milliseconds(1'000));
  r_first = 0;
  for (int i = 0; i < 300; ++i) {
    ASSERT_FALSE(w.Decide(q, &plan));
    r_first += plan.candidates[0].endpoint == &r;
    EXPECT_FALSE(plan.candidates[0].sticky);
  }
  EXPECT_GT(r_first, 50);
  EXPECT_LT(r_first, 150);
}

TEST(Router, StickinessYieldsToProviderOrder) {
  World w({Cached()});
  w.router().Remember(7, w.endpoint("m/cached", "r"), w.now());
  ProviderPreferences prefs;
  prefs.order = {"p"};
  RouteQuery q = Query("m/cached", &prefs);
  q.session = 7;
  Plan plan;
  ASSERT_FALSE(w.Decide(q, &plan));
  EXPECT_EQ(World::Ids(plan).front(), "p");
  for (const Candidate& c : plan.candidates) EXPECT_FALSE(c.sticky);
}

TEST(Router, StickinessOnlyWhereCachedReadsAreCheaper) {
  World w({{"m/nocache", {{"p", 1, 1}, {"q", 1, 1}, {"r", 1, 1}}, {}}});
  w.router().Remember(7, w.endpoint("m/nocache", "r"), w.now());
  RouteQuery q = Query("m/nocache");
  q.session = 7;
  Plan plan;
  int r_first = 0;
  for (int i = 0; i < 300; ++i) {
    ASSERT_FALSE(w.Decide(q, &plan));
    EXPECT_FALSE(plan.candidates[0].sticky);
    r_first += World::Ids(plan).front() == "r";
  }
  EXPECT_LT(r_first, 150);
}

TEST(Router, StickyEndpointThatIsNoLongerEligibleIsNotForced) {
  World w({Cached()});
  const Endpoint& r = w.endpoint("m/cached", "r");
  w.router().Remember(9, r, w.now());
  for (int i = 0; i < 5; ++i) w.Attempt(r, Outcome::kFailure);
  RouteQuery q = Query("m/cached");
  q.session = 9;
  Plan plan;
  ASSERT_FALSE(w.Decide(q, &plan));
  EXPECT_EQ(plan.candidates.size(), 2u);
  EXPECT_FALSE(plan.candidates[0].sticky);
  EXPECT_EQ(World::ReasonOf(plan, "r"), SkipReason::kCircuitOpen);
}

TEST(Router, StickyTableIsBoundedAndSweepsExpiredEntries) {
  RouterOptions options;
  options.sticky_capacity = 2;
  World w({Cached()}, options);
  const Endpoint& r = w.endpoint("m/cached", "r");
  w.router().Remember(1, r, w.now());
  w.Advance(milliseconds(1'000));
  w.router().Remember(2, r, w.now());
  w.router().Remember(3, r, w.now());  // full of live entries: not remembered
  auto sticky = [&](uint64_t session) {
    RouteQuery q = Query("m/cached");
    q.session = session;
    Plan plan;
    EXPECT_FALSE(w.Decide(q, &plan));
    return plan.candidates[0].sticky;
  };
  EXPECT_TRUE(sticky(1));
  EXPECT_TRUE(sticky(2));
  EXPECT_FALSE(sticky(3));
  w.Advance(milliseconds(599'500));  // entry 1 expired, entry 2 not
  w.router().Remember(3, r, w.now());
  EXPECT_FALSE(sticky(1));
  EXPECT_TRUE(sticky(2));
  EXPECT_TRUE(sticky(3));
}

TEST(Router, SessionKeyComesFromSessionUserOrFirstMessages) {
  ChatRequest a;
  a.model = "m/cached";
  EXPECT_EQ(SessionKey(a, 7), 0u);  // nothing to key on

  a.messages.push_back(Message{Role::kSystem, {TextPart{"be brief", {}}}, ""});
  a.messages.push_back(Message{Role::kUser, {TextPart{"hello", {}}}, ""});
  const uint64_t by_messages = SessionKey(a, 7);
  EXPECT_NE(by_messages, 0u);
  // Later turns of the same conversation keep the key.
  ChatRequest later = a;
  later.messages.push_back(Message{Role::kAssistant, {TextPart{"hi", {}}}, ""});
  later.messages.push_back(Message{Role::kUser, {TextPart{"more", {}}}, ""});
  EXPECT_EQ(SessionKey(later, 7), by_messages);
  // A variant is the same conversation; another model is not.
  later.model = "m/cached:nitro";
  EXPECT_EQ(SessionKey(later, 7), by_messages);
  later.model = "m/other";
  EXPECT_NE(SessionKey(later, 7), by_messages);

  ChatRequest user = a;
  user.user = "u-1";
  ChatRequest session = a;
  session.session_id = "u-1";
  EXPECT_NE(SessionKey(user, 7), by_messages);
  EXPECT_NE(SessionKey(session, 7), SessionKey(user, 7));
  ChatRequest both = user;
  both.session_id = "u-1";
  EXPECT_EQ(SessionKey(both, 7), SessionKey(session, 7));  // session_id wins over user

  // Never across API keys: the same conversation under another key is
  // another session (no key learns from stickiness what another sent).
  EXPECT_NE(SessionKey(a, 8), by_messages);
  EXPECT_NE(SessionKey(session, 8), SessionKey(session, 7));
}

// ---------------------------------------------------------------- preferences

ModelSpec Quantized() {
  return {"m/q",
          {{"alpha", 0.5, 0.5, -1, "", "int4"},
           {"beta", 1, 1, -1, "", "fp8"},
           {"gamma", 2, 2, -1, "", "fp8"},
           {"delta", 0.8, 0.8, -1, "", "fp16"}},
          {}};
}

TEST(Router, PreferencesCompose) {
  World w({Quantized()});
  ProviderPreferences prefs;
  prefs.only = {"alpha", "Beta Cloud", "m/q@gamma"};  // slug, display name, endpoint id
  prefs.quantizations = {"FP8"};
  prefs.max_prompt_price = PerMillion(1.5).femto_usd_per_token;
  prefs.sort = ProviderPreferences::Sort::kPrice;
  Plan plan;
  ASSERT_FALSE(w.Decide(Query("m/q", &prefs), &plan));
  EXPECT_EQ(World::Ids(plan), (std::vector<std::string>{"beta"}));
  EXPECT_EQ(World::ReasonOf(plan, "alpha"), SkipReason::kQuantization);
  EXPECT_EQ(World::ReasonOf(plan, "beta"), SkipReason::kNone);
  EXPECT_EQ(World::ReasonOf(plan, "gamma"), SkipReason::kMaxPrice);
  EXPECT_EQ(World::ReasonOf(plan, "delta"), SkipReason::kNotInOnly);

  // A lower price cap empties the list: the error names max_price.
  prefs.max_prompt_price = PerMillion(0.9).femto_usd_per_token;
  auto error = w.Decide(Query("m/q", &prefs), &plan);
  ASSERT_TRUE(error);
  EXPECT_EQ(error->code, ErrorCode::kNotFound);
  EXPECT_EQ(error->param, "provider.max_price");
  EXPECT_EQ(error->code_string, "no_endpoints");
  EXPECT_NE(error->message.find("m/q"), std::string::npos);

  // Quantizations that nothing in `only` has: the error names them.
  prefs.max_prompt_price.reset();
  prefs.only = {"alpha", "delta"};
  error = w.Decide(Query("m/q", &prefs), &plan);
  ASSERT_TRUE(error);
  EXPECT_EQ(error->param, "provider.quantizations");
  EXPECT_EQ(error->message, "no endpoint of model 'm/q' matches provider.quantizations [FP8]");

  // And `only` naming nothing of this model.
  prefs.only = {"nobody"};
  error = w.Decide(Query("m/q", &prefs), &plan);
  ASSERT_TRUE(error);
  EXPECT_EQ(error->param, "provider.only");
  EXPECT_EQ(HttpStatus(error->code), 404);
}

TEST(Router, MaxPriceCoversCompletionAndRequestPrices) {
  World w({Quantized()});
  ProviderPreferences prefs;
  prefs.max_completion_price = PerMillion(0.9).femto_usd_per_token;
  Plan plan;
  ASSERT_FALSE(w.Decide(Query("m/q", &prefs), &plan));
  EXPECT_EQ(plan.candidates.size(), 2u);  // alpha 0.5, delta 0.8
  prefs.max_completion_price.reset();
  prefs.max_request_price = 0;  // no per-request fee anywhere: all pass
  ASSERT_FALSE(w.Decide(Query("m/q", &prefs), &plan));
  EXPECT_EQ(plan.candidates.size(), 4u);
}

TEST(Router, IgnoreAndOrderMatchNamesCaseInsensitively) {
  World w({Quantized()});
  ProviderPreferences prefs;
  prefs.ignore = {"ALPHA"};
  prefs.order = {"gamma cloud", "M/Q@DELTA"};
  Plan plan;
  ASSERT_FALSE(w.Decide(Query("m/q", &prefs), &plan));
  EXPECT_EQ(World::Ids(plan), (std::vector<std::string>{"gamma", "delta", "beta"}));
  EXPECT_EQ(World::ReasonOf(plan, "alpha"), SkipReason::kIgnored);
  for (const Candidate& c : plan.candidates) EXPECT_EQ(c.share, c.endpoint->id == "m/q@beta" ? 1.0 : 0.0);

  prefs.ignore = {"alpha", "beta", "gamma", "delta"};
  auto error = w.Decide(Query("m/q", &prefs), &plan);
  ASSERT_TRUE(error);
  EXPECT_EQ(error->param, "provider.ignore");
}

TEST(Router, EndpointsWithoutAProviderObjectMatchBySlugAndId) {
  EndpointSpec bare{"bare", 1, 1};
  bare.no_provider = true;
  World w({{"m/bare", {bare, {"other", 2, 2}}, {}}});
  ProviderPreferences prefs;
  prefs.order = {"BARE"};
  prefs.allow_fallbacks = false;
  Plan plan;
  ASSERT_FALSE(w.Decide(Query("m/bare", &prefs), &plan));
  EXPECT_EQ(World::Ids(plan), (std::vector<std::string>{"bare"}));
  prefs.order = {"Bare Cloud"};  // a display name it does not have
  EXPECT_TRUE(w.Decide(Query("m/bare", &prefs), &plan));
}

TEST(Router, AllowFallbacksFalse) {
  World w({Quantized()});
  ProviderPreferences prefs;
  prefs.allow_fallbacks = false;
  Plan plan;
  // Without an order: only the first choice.
  ASSERT_FALSE(w.Decide(Query("m/q", &prefs), &plan));
  ASSERT_EQ(plan.candidates.size(), 1u);
  int no_fallbacks = 0;
  for (const Considered& c : plan.considered) no_fallbacks += c.skipped == SkipReason::kNoFallbacks;
  EXPECT_EQ(no_fallbacks, 3);

  // With an order: only the ordered ones, in that order.
  prefs.order = {"delta", "beta"};
  ASSERT_FALSE(w.Decide(Query("m/q", &prefs), &plan));
  EXPECT_EQ(World::Ids(plan), (std::vector<std::string>{"delta", "beta"}));
  EXPECT_EQ(World::ReasonOf(plan, "alpha"), SkipReason::kNotInOrder);

  // ... and when those are gone, the error says order emptied it.
  prefs.order = {"nobody"};
  auto error = w.Decide(Query("m/q", &prefs), &plan);
  ASSERT_TRUE(error);
  EXPECT_EQ(error->param, "provider.order");
  EXPECT_NE(error->message.find("allow_fallbacks"), std::string::npos);
}

TEST(Router, DataCollectionDenyAndZdr) {
  EndpointSpec trains{"trains", 0.1, 0.1};
  trains.data_policy.trains_on_prompts = true;
  EndpointSpec retains{"retains", 0.2, 0.2};
  retains.data_policy.retains_prompts = true;
  EndpointSpec clean{"clean", 0.3, 0.3};
  EndpointSpec zdr{"zdr", 0.4, 0.4};
  zdr.data_policy.zero_data_retention = true;
  World w({{"m/d", {trains, retains, clean, zdr}, {}}});
  ProviderPreferences prefs;
  prefs.deny_data_collection = true;
  prefs.sort = ProviderPreferences::Sort::kPrice;
  Plan plan;
  ASSERT_FALSE(w.Decide(Query("m/d", &prefs), &plan));
  EXPECT_EQ(World::Ids(plan), (std::vector<std::string>{"clean", "zdr"}));
  EXPECT_EQ(World::ReasonOf(plan, "trains"), SkipReason::kDataCollection);
  EXPECT_EQ(World::ReasonOf(plan, "retains"), SkipReason::kDataCollection);

  prefs.zdr = true;
  ASSERT_FALSE(w.Decide(Query("m/d", &prefs), &plan));
  EXPECT_EQ(World::Ids(plan), (std::vector<std::string>{"zdr"}));
  EXPECT_EQ(World::ReasonOf(plan, "clean"), SkipReason::kNotZdr);

  prefs.only = {"clean", "trains"};
  auto error = w.Decide(Query("m/d", &prefs), &plan);
  ASSERT_TRUE(error);
  EXPECT_EQ(error->param, "provider.zdr");
  prefs.zdr = false;
  prefs.only = {"retains", "trains"};
  error = w.Decide(Query("m/d", &prefs), &plan);
  ASSERT_TRUE(error);
  EXPECT_EQ(error->param, "provider.data_collection");
}

TEST(Router, UnsupportedParametersAreDroppedOrSkipped) {
  EndpointSpec full{"full", 2, 2};
  EndpointSpec no_top_k{"no_top_k", 1, 1};
  no_top_k.supported = ParameterSet::All().Minus({Param::kTopK, Param::kLogprobs});
  EndpointSpec no_tools{"no_tools", 0.5, 0.5};
  no_tools.supported = ParameterSet::All().Minus({Param::kTools, Param::kImageInput});
  World w({{"m/p", {full, no_top_k, no_tools}, {}}});
  ProviderPreferences prefs;
  prefs.sort = ProviderPreferences::Sort::kPrice;
  RouteQuery q = Query("m/p", &prefs);
  q.parameters = {Param::kTopK, Param::kTemperature};
  Plan plan;
  ASSERT_FALSE(w.Decide(q, &plan));
  EXPECT_EQ(World::Ids(plan), (std::vector<std::string>{"no_tools", "no_top_k", "full"}));
  EXPECT_EQ(plan.candidates[1].dropped, (ParameterSet{Param::kTopK}));  // dropped before the call
  EXPECT_TRUE(plan.candidates[2].dropped.empty());

  prefs.require_parameters = true;
  ASSERT_FALSE(w.Decide(q, &plan));
  EXPECT_EQ(World::Ids(plan), (std::vector<std::string>{"no_tools", "full"}));
  EXPECT_EQ(World::ReasonOf(plan, "no_top_k"), SkipReason::kRequireParameters);
  EXPECT_EQ(plan.considered[1].unsupported, (ParameterSet{Param::kTopK}));

  // An essential parameter is never dropped: without require_parameters
  // the endpoint is skipped all the same.
  prefs.require_parameters = false;
  q.parameters = {Param::kTools};
  ASSERT_FALSE(w.Decide(q, &plan));
  EXPECT_EQ(World::ReasonOf(plan, "no_tools"), SkipReason::kUnsupportedParameter);
  EXPECT_EQ(plan.candidates.size(), 2u);
}

TEST(Router, NoEndpointSupportingAParameterKeepsTheCallDriversWording) {
  EndpointSpec a{"a", 1, 1};
  a.supported = ParameterSet::All().Minus({Param::kTools, Param::kTopK, Param::kImageInput});
  EndpointSpec b{"b", 2, 2};
  b.supported = a.supported;
  World w({{"m/p", {a, b}, {}}});
  Plan plan;
  RouteQuery q = Query("m/p");
  q.parameters = {Param::kTools, Param::kTemperature};
  auto error = w.Decide(q, &plan);
  ASSERT_TRUE(error);
  EXPECT_EQ(error->code, ErrorCode::kInvalidArgument);
  EXPECT_EQ(error->code_string, "unsupported_parameter");
  EXPECT_EQ(error->param, "tools");
  EXPECT_EQ(error->message, "no endpoint of model 'm/p' supports the parameter 'tools'");

  q.parameters = {Param::kImageInput};
  error = w.Decide(q, &plan);
  ASSERT_TRUE(error);
  EXPECT_EQ(error->param, "messages");
  EXPECT_EQ(error->message, "no endpoint of model 'm/p' supports image input");

  ProviderPreferences prefs;
  prefs.require_parameters = true;
  q.preferences = &prefs;
  q.parameters = {Param::kTopK, Param::kTemperature};
  error = w.Decide(q, &plan);
  ASSERT_TRUE(error);
  EXPECT_EQ(error->param, "top_k");
  EXPECT_EQ(error->message,
            "no endpoint of model 'm/p' supports the parameter 'top_k' (provider.require_parameters is set)");
}

TEST(Router, PromptLongerThanEveryContextIsRefused) {
  EndpointSpec small{"small", 1, 1};
  small.context_length = 8'000;
  EndpointSpec big{"big", 2, 2};
  big.context_length = 128'000;
  World w({{"m/ctx", {small, big}, {}}});
  RouteQuery q = Query("m/ctx");
  q.prompt_tokens = 10'000;
  Plan plan;
  ASSERT_FALSE(w.Decide(q, &plan));
  EXPECT_EQ(World::Ids(plan), (std::vector<std::string>{"big"}));
  EXPECT_EQ(World::ReasonOf(plan, "small"), SkipReason::kContextLength);
  q.prompt_tokens = 200'000;
  auto error = w.Decide(q, &plan);
  ASSERT_TRUE(error);
  EXPECT_EQ(error->code, ErrorCode::kInvalidArgument);
  EXPECT_EQ(error->code_string, "context_length_exceeded");
}

// An endpoint whose provider counts the prompt exactly (the local engine) is
// judged on that count, not on the estimate.
TEST(Router, ExactPromptCountDecidesTheContextOfEndpointsThatHaveOne) {
  EndpointSpec local{"local", 1, 1};
  local.context_length = 512;
  EndpointSpec remote{"remote", 2, 2};
  remote.context_length = 256;
  World w({{"m/exact", {local, remote}, {}}});
  RouteQuery q = Query("m/exact");
  q.prompt_tokens = 720;  // the estimate: over both
  q.exact_prompt_tokens = [](const Endpoint& e) -> std::optional<int64_t> {
    if (e.provider_id == "local") return 500;
    return std::nullopt;
  };
  Plan plan;
  ASSERT_FALSE(w.Decide(q, &plan));
  EXPECT_EQ(World::Ids(plan), (std::vector<std::string>{"local"}));
  EXPECT_EQ(World::ReasonOf(plan, "remote"), SkipReason::kContextLength);
  q.exact_prompt_tokens = [](const Endpoint& e) -> std::optional<int64_t> {
    if (e.provider_id == "local") return 600;
    return std::nullopt;
  };
  auto error = w.Decide(q, &plan);
  ASSERT_TRUE(error);
  EXPECT_EQ(error->code_string, "context_length_exceeded");
  EXPECT_EQ(error->message,
            "the prompt (600 tokens) does not fit the context of any endpoint of model 'm/exact' (largest 512 tokens)");
}

TEST(Router, SoftPreferencesDemoteEndpointsThatMissThem) {
  World w({{"m/soft", {{"slow", 0.5, 0.5}, {"fast", 1, 1}, {"unknown", 2, 2}}, {}}});
  // slow: 20 tokens/s after a 3 s first token; fast: 200 tokens/s.
  for (int i = 0; i < 3; ++i) w.Attempt(w.endpoint("m/soft", "slow"), Outcome::kSuccess, 3000, 13'000, 200);
  for (int i = 0; i < 3; ++i) w.Attempt(w.endpoint("m/soft", "fast"), Outcome::kSuccess, 200, 1200, 200);
  ProviderPreferences prefs;
  prefs.sort = ProviderPreferences::Sort::kPrice;
  prefs.preferred_min_throughput = 50;
  Plan plan;
  ASSERT_FALSE(w.Decide(Query("m/soft", &prefs), &plan));
  EXPECT_EQ(World::Ids(plan), (std::vector<std::string>{"fast", "unknown", "slow"}));

  prefs.preferred_min_throughput.reset();
  prefs.preferred_max_latency_s = 1.0;
  ASSERT_FALSE(w.Decide(Query("m/soft", &prefs), &plan));
  EXPECT_EQ(World::Ids(plan), (std::vector<std::string>{"fast", "unknown", "slow"}));

  // Under the default shares the demoted endpoint is never drawn first.
  prefs.sort = ProviderPreferences::Sort::kDefault;
  for (int i = 0; i < 200; ++i) {
    ASSERT_FALSE(w.Decide(Query("m/soft", &prefs), &plan));
    EXPECT_EQ(World::Ids(plan).back(), "slow");
  }
  EXPECT_EQ(plan.considered[0].share, 0.0);
}

TEST(Router, NitroSortsByThroughputAndFloorByPrice) {
  World w({{"m/v", {{"cheap_slow", 0.5, 0.5}, {"dear_fast", 2, 2}, {"mid_unknown", 1, 1}}, {}}});
  for (int i = 0; i < 3; ++i) w.Attempt(w.endpoint("m/v", "cheap_slow"), Outcome::kSuccess, 500, 10'500, 200);
  for (int i = 0; i < 3; ++i) w.Attempt(w.endpoint("m/v", "dear_fast"), Outcome::kSuccess, 300, 1'300, 200);
  Plan plan;
  ASSERT_FALSE(w.Decide(Query("m/v:nitro"), &plan));
  EXPECT_EQ(plan.strategy, RoutingPolicy::Strategy::kThroughput);
  EXPECT_EQ(World::Ids(plan), (std::vector<std::string>{"dear_fast", "cheap_slow", "mid_unknown"}));
  ASSERT_FALSE(w.Decide(Query("m/v:floor"), &plan));
  EXPECT_EQ(plan.strategy, RoutingPolicy::Strategy::kPrice);
  EXPECT_EQ(World::Ids(plan), (std::vector<std::string>{"cheap_slow", "mid_unknown", "dear_fast"}));
  ProviderPreferences prefs;
  prefs.sort = ProviderPreferences::Sort::kLatency;
  ASSERT_FALSE(w.Decide(Query("m/v", &prefs), &plan));
  EXPECT_EQ(World::Ids(plan), (std::vector<std::string>{"dear_fast", "cheap_slow", "mid_unknown"}));
  // An explicit sort wins over the variant.
  prefs.sort = ProviderPreferences::Sort::kPrice;
  ASSERT_FALSE(w.Decide(Query("m/v:nitro", &prefs), &plan));
  EXPECT_EQ(plan.strategy, RoutingPolicy::Strategy::kPrice);
}

// ---------------------------------------------------------------- models fallbacks

TEST(Router, FallbackModelsPartitionByModelOrTogether) {
  World w({{"m/primary", {{"p1", 2, 2}, {"p2", 3, 3}}, {}}, {"m/backup", {{"b1", 0.5, 0.5}, {"b2", 1, 1}}, {}}});
  const std::vector<std::string> fallbacks = {"m/backup", "m/primary"};  // a repeat is looked at once
  ProviderPreferences prefs;
  prefs.sort = ProviderPreferences::Sort::kPrice;
  RouteQuery q = Query("m/primary", &prefs);
  q.fallback_models = &fallbacks;
  Plan plan;
  ASSERT_FALSE(w.Decide(q, &plan));
  EXPECT_EQ(World::Ids(plan), (std::vector<std::string>{"p1", "p2", "b1", "b2"}));
  EXPECT_EQ(plan.considered.size(), 4u);
  EXPECT_EQ(plan.candidates[2].model, &w.model("m/backup"));

  prefs.partition = ProviderPreferences::Partition::kNone;
  ASSERT_FALSE(w.Decide(q, &plan));
  EXPECT_EQ(World::Ids(plan), (std::vector<std::string>{"b1", "b2", "p1", "p2"}));

  // The primary model's endpoints all down: the backup serves.
  prefs.partition = ProviderPreferences::Partition::kModel;
  for (int i = 0; i < 5; ++i) w.Attempt(w.endpoint("m/primary", "p1"), Outcome::kFailure);
  for (int i = 0; i < 5; ++i) w.Attempt(w.endpoint("m/primary", "p2"), Outcome::kFailure);
  ASSERT_FALSE(w.Decide(q, &plan));
  EXPECT_EQ(World::Ids(plan), (std::vector<std::string>{"b1", "b2"}));

  // An unknown fallback model is refused, naming `models`.
  const std::vector<std::string> unknown = {"m/nope"};
  q.fallback_models = &unknown;
  auto error = w.Decide(q, &plan);
  ASSERT_TRUE(error);
  EXPECT_EQ(error->code, ErrorCode::kNotFound);
  EXPECT_EQ(error->param, "models");
}

TEST(Router, FallbackModelsEachGetTheirFirstChoiceWithoutFallbacks) {
  World w({{"m/primary", {{"p1", 2, 2}, {"p2", 3, 3}}, {}}, {"m/backup", {{"b1", 0.5, 0.5}, {"b2", 1, 1}}, {}}});
  const std::vector<std::string> fallbacks = {"m/backup"};
  ProviderPreferences prefs;
  prefs.sort = ProviderPreferences::Sort::kPrice;
  prefs.allow_fallbacks = false;
  RouteQuery q = Query("m/primary", &prefs);
  q.fallback_models = &fallbacks;
  Plan plan;
  ASSERT_FALSE(w.Decide(q, &plan));
  EXPECT_EQ(World::Ids(plan), (std::vector<std::string>{"p1", "b1"}));
}

TEST(Router, ModelErrors) {
  World w({ThreePriced(), {"m/empty", {}, {}}});
  Plan plan;
  auto error = w.Decide(Query(""), &plan);
  ASSERT_TRUE(error);
  EXPECT_EQ(error->code, ErrorCode::kInvalidArgument);
  EXPECT_EQ(error->param, "model");
  error = w.Decide(Query("m/none"), &plan);
  ASSERT_TRUE(error);
  EXPECT_EQ(error->code, ErrorCode::kNotFound);
  EXPECT_EQ(error->code_string, "model_not_found");
  const std::string huge(1'000'000, 'x');
  error = w.Decide(Query(huge), &plan);
  ASSERT_TRUE(error);
  EXPECT_LT(error->message.size(), 400u);
  error = w.Decide(Query("m/empty"), &plan);
  ASSERT_TRUE(error);
  EXPECT_EQ(error->code, ErrorCode::kUnavailable);
}

// ---------------------------------------------------------------- capacity queue

// Ends a claimed attempt at `e` without teaching health anything.
void Free(World& w, const Endpoint& e) {
  AttemptReport r;
  r.started = r.ended = w.now();
  w.router().Report(e, r);
}

TEST(Router, CapacityQueueHandsTheFreedSlotToTheOldestWaiterThatCanUseIt) {
  // Two one-slot endpoints, both busy.
  World w({{"m/two", {{"a", 1, 1, -1, "", "", ParameterSet::All(), {}, 1}, {"b", 1, 1, -1, "", "", ParameterSet::All(), {}, 1}}, {}}});
  const Model& m = w.model("m/two");
  const Endpoint& a = w.endpoint("m/two", "a");
  const Endpoint& b = w.endpoint("m/two", "b");
  ASSERT_EQ(w.router().health(a).Acquire(w.now()), Availability::kAvailable);
  ASSERT_EQ(w.router().health(b).Acquire(w.now()), Availability::kAvailable);

  std::vector<std::pair<int, std::string>> woken;
  auto waiter = [&](int id) { return [&woken, id](const Endpoint& e) { woken.emplace_back(id, e.id); }; };
  const uint64_t only_b = w.router().WaitForCapacity(m, {&b}, waiter(1));  // provider.only: b
  const uint64_t any1 = w.router().WaitForCapacity(m, {&a, &b}, waiter(2));
  const uint64_t any2 = w.router().WaitForCapacity(m, {&a, &b}, waiter(3));
  ASSERT_NE(only_b, 0u);
  ASSERT_NE(any1, 0u);
  ASSERT_NE(any2, 0u);
  EXPECT_EQ(w.router().queued(m), 3u);
  EXPECT_TRUE(woken.empty());  // never called from inside WaitForCapacity

  // a frees: the oldest waiter that can use a gets it (not the older one
  // that only takes b, which would swallow the wake-up), claimed for it.
  Free(w, a);
  ASSERT_EQ(woken.size(), 1u);
  EXPECT_EQ(woken[0], std::make_pair(2, a.id));
  EXPECT_EQ(w.router().health(a).Snapshot(w.now()).in_flight, 1) << "the slot went straight to the waiter";
  EXPECT_EQ(w.router().health(a).Acquire(w.now()), Availability::kAtCapacity) << "a newcomer cannot take it";
  EXPECT_FALSE(w.router().CancelWait(any1)) << "already handed a slot";

  // b frees: the b-only waiter, first in line.
  Free(w, b);
  ASSERT_EQ(woken.size(), 2u);
  EXPECT_EQ(woken[1], std::make_pair(1, b.id));
  EXPECT_TRUE(w.router().CancelWait(any2));  // gave up
  Free(w, a);
  Free(w, b);
  EXPECT_EQ(woken.size(), 2u) << "nobody waits";
  EXPECT_EQ(w.router().queued(m), 0u);
  EXPECT_EQ(w.router().health(a).Snapshot(w.now()).in_flight, 0);
  EXPECT_EQ(w.router().health(b).Snapshot(w.now()).in_flight, 0);
}

TEST(Router, CapacityQueueIsBounded) {
  RouterOptions options;
  options.max_queued = 2;
  World w({ThreePriced()}, options);
  const Model& m = w.model("m/three");
  const Endpoint& cheap = w.endpoint("m/three", "cheap");
  int called = 0;
  EXPECT_NE(w.router().WaitForCapacity(m, {&cheap}, [&](const Endpoint& e) { ++called; Free(w, e); }), 0u);
  EXPECT_NE(w.router().WaitForCapacity(m, {&cheap}, [&](const Endpoint& e) { ++called; Free(w, e); }), 0u);
  bool refused_called = false;
  EXPECT_EQ(w.router().WaitForCapacity(m, {&cheap}, [&](const Endpoint&) { refused_called = true; }), 0u);
  EXPECT_EQ(w.router().queued(m), 2u);
  w.Attempt(cheap, Outcome::kSuccess);
  EXPECT_EQ(called, 2) << "each freed slot went to the next waiter, who gave it back";
  EXPECT_FALSE(refused_called);
  EXPECT_EQ(w.router().queued(m), 0u);
}

TEST(Router, AWokenWaiterMayQueueAgainWithoutDeadlock) {
  World w({ThreePriced()});
  const Model& m = w.model("m/three");
  const Endpoint& mid = w.endpoint("m/three", "mid");
  int wakes = 0;
  std::function<void(const Endpoint&)> again = [&](const Endpoint& e) {
    ++wakes;
    if (wakes < 3) {
      EXPECT_NE(w.router().WaitForCapacity(m, {&mid}, again), 0u);
    }
    Free(w, e);  // from inside a wake: Report may hand the slot on at once
  };
  w.router().WaitForCapacity(m, {&mid}, again);
  w.Attempt(mid, Outcome::kSuccess);
  EXPECT_EQ(wakes, 3);
  EXPECT_EQ(w.router().health(mid).Snapshot(w.now()).in_flight, 0);
}

// ---------------------------------------------------------------- peer comparison

ModelSpec Peers() {
  return {"m/peers", {{"bad", 1, 1}, {"ok1", 1, 1}, {"ok2", 1, 1}, {"ok3", 1, 1}}, {}};
}

TEST(Router, EndpointFarWorseThanItsPeersIsTripped) {
  World w({Peers()});
  std::mt19937_64 rng(7);
  std::bernoulli_distribution peer_error(0.05);
  for (const char* id : {"ok1", "ok2", "ok3"}) {
    for (int i = 0; i < 40; ++i) {
      w.Attempt(w.endpoint("m/peers", id), peer_error(rng) ? Outcome::kFailure : Outcome::kSuccess);
    }
  }
  // Two failures in three: never five in a row, so the plain breaker stays
  // closed; the error rate (about 0.67) is far above the peers' (about 0.05).
  const Endpoint& bad = w.endpoint("m/peers", "bad");
  int attempts = 0;
  while (w.router().health(bad).Snapshot(w.now()).circuit == CircuitState::kClosed && attempts < 100) {
    w.Attempt(bad, attempts % 3 == 2 ? Outcome::kSuccess : Outcome::kFailure);
    ++attempts;
  }
  EXPECT_EQ(w.router().health(bad).Snapshot(w.now()).circuit, CircuitState::kOpen);
  // Tripped as soon as it had peer_min_attempts (10) attempts (its 10th is
  // a failure, 7 in 10).
  EXPECT_EQ(attempts, 10);
  Plan plan;
  ASSERT_FALSE(w.Decide(Query("m/peers"), &plan));
  EXPECT_EQ(World::ReasonOf(plan, "bad"), SkipReason::kCircuitOpen);
}

TEST(Router, EndpointNoWorseThanItsPeersIsNotTripped) {
  World w({Peers()});
  // Every endpoint fails two calls in three: a bad upstream model or a bad
  // prompt pattern, not one bad endpoint.
  for (int i = 0; i < 30; ++i) {
    for (const char* id : {"bad", "ok1", "ok2", "ok3"}) {
      w.Attempt(w.endpoint("m/peers", id), i % 3 == 2 ? Outcome::kSuccess : Outcome::kFailure);
    }
  }
  for (const char* id : {"bad", "ok1", "ok2", "ok3"}) {
    EXPECT_EQ(w.router().health(w.endpoint("m/peers", id)).Snapshot(w.now()).circuit, CircuitState::kClosed) << id;
  }
}

// ---------------------------------------------------------------- threads

// Invariants only (thread interleaving is not deterministic): decisions,
// reports, stickiness and the queue from several threads at once leave no
// slot claimed, and every waiter is woken exactly once or still waits.
// Meant for TSan too.
TEST(Router, ConcurrentDecisionsAndReportsKeepTheInvariants) {
  World w({Cached(), ThreePriced()});
  Router& router = w.router();
  const SteadyTime start = w.now();
  std::atomic<int> woken{0};
  std::atomic<int> registered{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937_64 rng(t);
      Plan plan;
      RouteQuery q = Query(t % 2 == 0 ? "m/cached" : "m/three");
      for (int i = 0; i < 2000; ++i) {
        const SteadyTime now = start + milliseconds(i);
        q.session = static_cast<uint64_t>(i % 7 + 1);
        if (router.Decide(q, now, rng, &plan)) continue;  // all cooling down for a moment
        const Endpoint& e = *plan.candidates[0].endpoint;
        if (router.health(e).Acquire(now) != Availability::kAvailable) continue;
        if (i % 50 == 0 && router.WaitForCapacity(*plan.candidates[0].model, {&e}, [&](const Endpoint& freed) {
                               woken.fetch_add(1);
                               AttemptReport unused;
                               unused.started = unused.ended = now;
                               router.Report(freed, unused);
                             }) != 0) {
          registered.fetch_add(1);
        }
        AttemptReport r;
        r.outcome = i % 97 == 0 ? Outcome::kRateLimited : i % 13 == 0 ? Outcome::kFailure : Outcome::kSuccess;
        r.started = now;
        r.first_token = now;
        r.ended = now + milliseconds(1);
        r.prompt_tokens = 100;
        r.completion_tokens = 10;
        r.retry_after = milliseconds(5);
        router.Report(e, r);
        router.Remember(q.session, e, now);
      }
    });
  }
  for (auto& t : threads) t.join();
  for (const Model* m : {&w.model("m/cached"), &w.model("m/three")}) {
    for (const Endpoint& e : m->endpoints) EXPECT_EQ(router.health(e).Snapshot(w.now()).in_flight, 0);
  }
  const std::size_t queued = router.queued(w.model("m/cached")) + router.queued(w.model("m/three"));
  EXPECT_EQ(static_cast<std::size_t>(woken.load()) + queued, static_cast<std::size_t>(registered.load()));
  EXPECT_GT(woken.load(), 0);
}

// ---------------------------------------------------------------- names

TEST(Router, SkipReasonNames) {
  EXPECT_EQ(SkipReasonName(SkipReason::kNone), "");
  EXPECT_EQ(SkipReasonName(SkipReason::kNotInOnly), "only");
  EXPECT_EQ(SkipReasonName(SkipReason::kIgnored), "ignore");
  EXPECT_EQ(SkipReasonName(SkipReason::kNotInOrder), "order");
  EXPECT_EQ(SkipReasonName(SkipReason::kQuantization), "quantizations");
  EXPECT_EQ(SkipReasonName(SkipReason::kDataCollection), "data_collection");
  EXPECT_EQ(SkipReasonName(SkipReason::kNotZdr), "zdr");
  EXPECT_EQ(SkipReasonName(SkipReason::kMaxPrice), "max_price");
  EXPECT_EQ(SkipReasonName(SkipReason::kUnsupportedParameter), "unsupported_parameter");
  EXPECT_EQ(SkipReasonName(SkipReason::kRequireParameters), "require_parameters");
  EXPECT_EQ(SkipReasonName(SkipReason::kContextLength), "context_length");
  EXPECT_EQ(SkipReasonName(SkipReason::kCircuitOpen), "circuit_open");
  EXPECT_EQ(SkipReasonName(SkipReason::kCoolingDown), "cooling_down");
  EXPECT_EQ(SkipReasonName(SkipReason::kNoFallbacks), "no_fallbacks");
}

}  // namespace
}  // namespace tollgate::routing
