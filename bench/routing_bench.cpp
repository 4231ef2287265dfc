// Routing decisions per second for one model with 50 endpoints whose health
// is live (each fed a few hundred attempts, some failed or rate limited),
// and the heap allocations on the decision path, which must be 0: global
// operator new is replaced by a counting one, and `allocs/decision` is what
// Router::Decide allocated per call with a warmed, reused Plan.
//
//   build/bench/tollgate_routing_bench --benchmark_min_time=0.5s
#include "tollgate/routing/router.hpp"

#include <benchmark/benchmark.h>

#include <atomic>
#include <cstdlib>
#include <memory>
#include <new>
#include <random>
#include <string>
#include <vector>

namespace {

std::atomic<int64_t> g_allocations{0};

}  // namespace

// Counting replacements ([new.delete.single], [new.delete.array]): every
// allocation in the process passes here, the benchmark library's included,
// which is why only the span around Decide calls is read. GCC cannot tell
// that these malloc/free pairs are the replacement itself.
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
void* operator new(std::size_t size) {
  g_allocations.fetch_add(1, std::memory_order_relaxed);
  if (void* p = std::malloc(size == 0 ? 1 : size)) return p;
  throw std::bad_alloc();
}
void* operator new[](std::size_t size) { return operator new(size); }
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }

namespace tollgate::routing {
namespace {

using std::chrono::milliseconds;

class BenchProvider final : public Provider {
 public:
  explicit BenchProvider(std::string name) : name_(std::move(name)) {}
  std::string_view Name() const override { return name_; }
  const ParameterSet& SupportedParameters() const override { return supported_; }
  void Start(const ProviderRequest&, std::shared_ptr<StreamSink>, std::stop_token) override {}

 private:
  std::string name_;
  ParameterSet supported_ = ParameterSet::All();
};

constexpr int kEndpoints = 50;

// One model, 50 endpoints with spread prices, quantizations and policies,
// and a router whose health has seen 200-400 attempts per endpoint.
struct Setup {
  std::vector<std::unique_ptr<BenchProvider>> providers;
  std::unique_ptr<Catalog> catalog;
  std::unique_ptr<Router> router;
  SteadyTime now = SteadyTime{} + std::chrono::hours(1000);

  Setup() {
    std::mt19937_64 rng(42);
    std::uniform_real_distribution<double> price(0.1, 3.0);
    std::uniform_real_distribution<double> ratio(1.0, 4.0);
    Model m;
    m.id = "bench/model";
    m.name = "Bench model";
    const char* quantizations[] = {"fp16", "fp8", "int4", "bf16"};
    for (int i = 0; i < kEndpoints; ++i) {
      const std::string id = "provider" + std::to_string(i);
      providers.push_back(std::make_unique<BenchProvider>("Provider " + std::to_string(i)));
      Endpoint e;
      e.id = id + "/model";
      e.provider_id = id;
      e.provider = providers.back().get();
      e.upstream_model = "model";
      const double prompt = price(rng);
      e.pricing.prompt = TokenPrice{static_cast<int64_t>(prompt * 1e9)};
      e.pricing.completion = TokenPrice{static_cast<int64_t>(prompt * ratio(rng) * 1e9)};
      e.pricing.cached_prompt = TokenPrice{i % 3 == 0 ? e.pricing.prompt.femto_usd_per_token / 10
                                                      : e.pricing.prompt.femto_usd_per_token};
      e.pricing.cache_write = e.pricing.prompt;
      e.context_length = 128'000;
      e.quantization = quantizations[i % 4];
      e.supported = ParameterSet::All();
      e.max_concurrency = i % 5 == 0 ? 8 : 0;
      m.endpoints.push_back(std::move(e));
    }
    std::vector<Model> models;
    models.push_back(std::move(m));
    catalog = std::make_unique<Catalog>(std::move(models));
    router = std::make_unique<Router>(catalog.get(), RouterOptions{});

    // Live health: per endpoint its own error and 429 rates, TTFT and speed.
    std::uniform_real_distribution<double> error_rate(0.0, 0.08);
    std::uniform_real_distribution<double> limited_rate(0.0, 0.02);
    std::lognormal_distribution<double> ttft_ms(6.0, 0.6);  // median ~400 ms
    std::uniform_real_distribution<double> tps(20, 250);
    std::uniform_int_distribution<int> attempts(200, 400);
    std::uniform_real_distribution<double> unit(0, 1);
    const SteadyTime start = now - std::chrono::seconds(200);
    for (const Endpoint& e : catalog->models()[0].endpoints) {
      const double p_error = error_rate(rng);
      const double p_limited = limited_rate(rng);
      const double speed = tps(rng);
      const int n = attempts(rng);
      for (int k = 0; k < n; ++k) {
        const SteadyTime t = start + milliseconds(200'000LL * k / n);
        if (router->health(e).Acquire(t) != Availability::kAvailable) continue;
        AttemptReport r;
        const double u = unit(rng);
        r.outcome = u < p_error                ? Outcome::kFailure
                    : u < p_error + p_limited ? Outcome::kRateLimited
                                              : Outcome::kSuccess;
        const double ttft = ttft_ms(rng);
        const double gen_ms = 300 / speed * 1000;
        r.started = t - milliseconds(static_cast<int64_t>(ttft + gen_ms));
        r.first_token = r.started + milliseconds(static_cast<int64_t>(ttft));
        r.ended = t;
        r.prompt_tokens = 2000;
        r.cached_tokens = static_cast<int64_t>(unit(rng) * 1000);
        r.completion_tokens = 300;
        router->Report(e, r);
      }
    }
  }
};

Setup& World() {
  static Setup setup;
  return setup;
}

void RunDecisions(benchmark::State& state, const ProviderPreferences* prefs, std::string_view model, uint64_t session) {
  Setup& s = World();
  RouteQuery q;
  q.model = model;
  q.preferences = prefs;
  q.parameters = {Param::kTemperature, Param::kMaxTokens};
  q.prompt_tokens = 2000;
  q.session = session;
  std::mt19937_64 rng(1);
  Plan plan;
  // Warm: the plan's vectors grow to the model's size once.
  if (auto error = s.router->Decide(q, s.now, rng, &plan)) {
    state.SkipWithError(error->message.c_str());
    return;
  }
  // The count must be live, or its 0 would prove nothing.
  const int64_t probe = g_allocations.load(std::memory_order_relaxed);
  benchmark::DoNotOptimize(std::make_unique<int>(1));
  if (g_allocations.load(std::memory_order_relaxed) == probe) {
    state.SkipWithError("operator new is not the counting replacement");
    return;
  }
  int64_t plan_size = 0;
  const int64_t before = g_allocations.load(std::memory_order_relaxed);
  for (auto _ : state) {
    auto error = s.router->Decide(q, s.now, rng, &plan);
    benchmark::DoNotOptimize(error);
    plan_size += static_cast<int64_t>(plan.candidates.size());
  }
  const int64_t allocations = g_allocations.load(std::memory_order_relaxed) - before;
  state.counters["decisions/s"] =
      benchmark::Counter(static_cast<double>(state.iterations()), benchmark::Counter::kIsRate);
  state.counters["allocs/decision"] =
      benchmark::Counter(static_cast<double>(allocations), benchmark::Counter::kAvgIterations);
  state.counters["plan_size"] = benchmark::Counter(static_cast<double>(plan_size), benchmark::Counter::kAvgIterations);
}

// The default: weighted draws by effective price (docs/routing.md).
void BM_DecideDefaultShares(benchmark::State& state) { RunDecisions(state, nullptr, "bench/model", 0); }
BENCHMARK(BM_DecideDefaultShares);

void BM_DecideSortPrice(benchmark::State& state) {
  ProviderPreferences prefs;
  prefs.sort = ProviderPreferences::Sort::kPrice;
  RunDecisions(state, &prefs, "bench/model", 0);
}
BENCHMARK(BM_DecideSortPrice);

void BM_DecideNitro(benchmark::State& state) { RunDecisions(state, nullptr, "bench/model:nitro", 0); }
BENCHMARK(BM_DecideNitro);

// Name filters and soft preferences: string comparisons per endpoint, and a
// remembered session.
void BM_DecideFilteredSticky(benchmark::State& state) {
  ProviderPreferences prefs;
  prefs.ignore = {"provider3", "Provider 7", "provider11/model", "provider19", "provider23"};
  prefs.quantizations = {"fp8", "fp16", "bf16"};
  prefs.preferred_min_throughput = 60;
  const Endpoint& sticky = World().catalog->models()[0].endpoints[12];
  World().router->Remember(0xfeedULL, sticky, World().now);
  RunDecisions(state, &prefs, "bench/model", 0xfeedULL);
}
BENCHMARK(BM_DecideFilteredSticky);

}  // namespace
}  // namespace tollgate::routing
