// Prefill and decode throughput of the local engine on stories260K
// (../shared/models, or $TOLLGATE_MODEL_DIR). Google Benchmark prints the
// table; the `tok/s` column is tokens per second of wall time.
//   ./tollgate_local_bench [--benchmark_min_time=1]
#include "tollgate/local_backend/gguf.hpp"
#include "tollgate/local_backend/model.hpp"
#include "tollgate/local_backend/sampler.hpp"
#include "tollgate/local_backend/tokenizer.hpp"

#include <benchmark/benchmark.h>

#include <cstdlib>
#include <stdexcept>

namespace {

using namespace tollgate::local_backend;

std::string ModelPath() {
  if (const char* dir = std::getenv("TOLLGATE_MODEL_DIR"); dir != nullptr && *dir != '\0') {
    return std::string(dir) + "/stories260K.gguf";
  }
  return TOLLGATE_SOURCE_DIR "/../shared/models/stories260K.gguf";
}

std::shared_ptr<const LlamaModel> Model() {
  static std::shared_ptr<const LlamaModel> model = [] {
    auto file = GgufFile::Open(ModelPath());
    if (!file) throw std::runtime_error(file.error().message);
    auto m = LlamaModel::Load(std::shared_ptr<const GgufFile>(std::move(*file)));
    if (!m) throw std::runtime_error(m.error().message);
    return *m;
  }();
  return model;
}

// Prefill of N prompt tokens from position 0 (batched).
void BM_Prefill(benchmark::State& state) {
  const int n = static_cast<int>(state.range(0));
  auto ctx = LlamaContext::Create(Model(), 0).value();
  std::vector<TokenId> prompt(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) prompt[static_cast<size_t>(i)] = 3 + (i * 37) % 500;
  prompt[0] = 1;
  for (auto _ : state) {
    ctx->Reset();
    benchmark::DoNotOptimize(ctx->Decode(prompt).value().data());
  }
  state.counters["tok/s"] = benchmark::Counter(static_cast<double>(n) * static_cast<double>(state.iterations()),
                                               benchmark::Counter::kIsRate);
}
BENCHMARK(BM_Prefill)->Arg(16)->Arg(128)->Arg(500)->Unit(benchmark::kMillisecond);

// Greedy decode of N tokens after the 5-token prompt "Once upon a time",
// one token per forward pass, as the provider does.
void BM_Decode(benchmark::State& state) {
  const int n = static_cast<int>(state.range(0));
  auto ctx = LlamaContext::Create(Model(), 0).value();
  const std::vector<TokenId> prompt = {1, 403, 407, 261, 378};
  for (auto _ : state) {
    state.PauseTiming();
    ctx->Reset();
    auto logits = ctx->Decode(prompt).value();
    state.ResumeTiming();
    for (int i = 0; i < n; ++i) {
      const TokenId next[1] = {Greedy(logits)};
      logits = ctx->Decode(next).value();
    }
    benchmark::DoNotOptimize(logits.data());
  }
  state.counters["tok/s"] = benchmark::Counter(static_cast<double>(n) * static_cast<double>(state.iterations()),
                                               benchmark::Counter::kIsRate);
}
BENCHMARK(BM_Decode)->Arg(64)->Arg(256)->Arg(500)->Unit(benchmark::kMillisecond);

}  // namespace
