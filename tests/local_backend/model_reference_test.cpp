// Logits of small random models of every architecture and tensor type against
// a float64 forward pass over the same (exactly dequantized) weights
// (random_model.hpp), and the invariances the engine promises: identical
// results on every kernel instruction set, batched prefill equal to token by
// token, KV memory that grows with the sequence; and LlamaRunner's batches of
// sequences and prefix cache giving the logits each sequence gets alone.
#include "random_model.hpp"
#include "tollgate/local_backend/model.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <map>
#include <string>
#include <vector>

namespace tollgate::local_backend {
namespace {

using testing::DecodeTogether;
using testing::RandomModelFile;
using testing::RandomModelSpec;
using testing::ReferenceModel;
using testing::RelativeError;

std::shared_ptr<const GgufFile> Open(const std::string& path) {
  auto f = GgufFile::Open(path);
  if (!f) ADD_FAILURE() << f.error().message;
  return f ? std::shared_ptr<const GgufFile>(std::move(*f)) : nullptr;
}

std::shared_ptr<const LlamaModel> LoadModel(std::shared_ptr<const GgufFile> gguf, const std::string& isa = "",
                                            int threads = 2) {
  CpuBackendOptions cpu;
  cpu.threads = threads;
  cpu.isa = isa;
  auto backend = CreateCpuBackend(cpu);
  if (!backend) {
    ADD_FAILURE() << backend.error().message;
    return nullptr;
  }
  ModelOptions options;
  options.backend = *backend;
  auto m = LlamaModel::Load(std::move(gguf), options);
  if (!m) ADD_FAILURE() << m.error().message;
  return m ? *m : nullptr;
}

std::vector<int32_t> Prompt(int n, int vocab, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<int32_t> ids(static_cast<size_t>(n));
  for (int32_t& id : ids) id = static_cast<int32_t>(rng() % static_cast<uint32_t>(vocab));
  return ids;
}

// Relative L2 error of the logits after a 70-token prompt (prefilled in
// batches of 16, two KV pages) and after each of 3 decoded tokens; the worst.
double WorstError(const RandomModelSpec& spec, KvType kv, const std::string& isa = "") {
  RandomModelFile file(spec);
  auto gguf = Open(file.path());
  if (!gguf) return 1e9;
  auto model = LoadModel(gguf, isa);
  if (!model) return 1e9;
  ReferenceModel ref(*gguf, spec);
  std::vector<int32_t> tokens = Prompt(73, spec.vocab, spec.seed + 1);
  const std::vector<std::vector<double>> want = ref.Logits(tokens);
  ContextOptions co;
  co.kv_type = kv;
  co.max_batch = 16;
  auto ctx = LlamaContext::Create(model, co).value();
  double worst = 0;
  auto got = ctx->Decode(std::span<const int32_t>(tokens.data(), 70)).value();
  worst = std::max(worst, RelativeError(got, want[69]));
  for (int t = 70; t < 73; ++t) {
    got = ctx->Decode(std::span<const int32_t>(&tokens[static_cast<size_t>(t)], 1)).value();
    worst = std::max(worst, RelativeError(got, want[static_cast<size_t>(t)]));
  }
  return worst;
}

struct TypeBound {
  GgmlType type;
  double f32_kv;  // bound with an F32 KV cache
  double f16_kv;  // bound with the default F16 KV cache
};

// Stated bounds: relative L2 error of the logits against float64 on the same
// weights, worst of the four architectures (measured in brackets on these
// 2-layer models with deliberately sharp attention).
//   - F32, F16, BF16 weights: float32 rounding only [1e-6]; with the F16 KV
//     cache, K and V rounded to half precision [1e-4 .. 9e-4].
//   - Quantized weights are exact in the reference as well, so the error is the
//     engine's 8-bit quantization of the activations, which is ggml's scheme:
//     Q8_0 blocks of 32 values for Q8_0/Q4_0/Q4_1/Q5_0/Q5_1 weights
//     [1.2% .. 3.3%], Q8_K blocks of 256 for the K-quants [1.7% .. 4.4%].
constexpr TypeBound kBounds[] = {
    {GgmlType::kF32, 1e-5, 3e-3},  {GgmlType::kF16, 1e-5, 3e-3},  {GgmlType::kBF16, 1e-5, 3e-3},
    {GgmlType::kQ8_0, 5e-2, 5e-2}, {GgmlType::kQ4_0, 5e-2, 5e-2}, {GgmlType::kQ4_K, 6e-2, 6e-2},
    {GgmlType::kQ5_K, 6e-2, 6e-2}, {GgmlType::kQ6_K, 6e-2, 6e-2}, {GgmlType::kQ4_1, 5e-2, 5e-2},
    {GgmlType::kQ5_0, 5e-2, 5e-2}, {GgmlType::kQ5_1, 5e-2, 5e-2},
};

TEST(ModelReference, LogitsMatchFloat64ForEveryArchitectureAndType) {
  std::string table;
  for (const char* arch : {"llama", "mistral", "qwen2", "qwen3"}) {
    for (const TypeBound& b : kBounds) {
      RandomModelSpec spec;
      spec.arch = arch;
      spec.type = b.type;
      const double e32 = WorstError(spec, KvType::kF32);
      const double e16 = WorstError(spec, KvType::kF16);
      EXPECT_LE(e32, b.f32_kv) << arch << " " << GgmlTypeName(b.type) << " (F32 KV)";
      EXPECT_LE(e16, b.f16_kv) << arch << " " << GgmlTypeName(b.type) << " (F16 KV)";
      char line[128];
      std::snprintf(line, sizeof(line), "%-8s %-5s  f32 kv %.2e  f16 kv %.2e\n", arch, GgmlTypeName(b.type).c_str(), e32,
                    e16);
      table += line;
    }
  }
  std::printf("relative logit error vs float64:\n%s", table.c_str());
}

TEST(ModelReference, RopeScalingAndFrequencyFactorsMatchFloat64) {
  struct Variant {
    const char* arch;
    const char* scaling;
    float factor;
    int original;
    bool freq_factors;
  } variants[] = {
      {"llama", "linear", 4.0f, 0, false},
      {"qwen2", "yarn", 4.0f, 64, false},
      {"llama", "yarn", 8.0f, 32, false},
      {"llama", "", 1.0f, 0, true},  // Llama 3.1: rope_freqs.weight
  };
  for (const Variant& v : variants) {
    RandomModelSpec spec;
    spec.arch = v.arch;
    spec.rope_scaling = v.scaling;
    spec.rope_factor = v.factor;
    spec.rope_original_context = v.original;
    spec.rope_freq_factors = v.freq_factors;
    EXPECT_LE(WorstError(spec, KvType::kF32), 1e-5) << v.arch << " " << v.scaling << (v.freq_factors ? " rope_freqs" : "");
  }
}

TEST(ModelReference, TiedOutputUsesTheTokenEmbedding) {
  RandomModelSpec spec;
  spec.arch = "qwen2";
  spec.tied = true;
  spec.type = GgmlType::kQ8_0;
  EXPECT_LE(WorstError(spec, KvType::kF16), 5e-2);
  RandomModelFile file(spec);
  auto model = LoadModel(Open(file.path()));
  ASSERT_TRUE(model);
  EXPECT_TRUE(model->hparams().tied_output);
  EXPECT_EQ(&model->output(), &model->token_embd());
}

TEST(ModelReference, ReadsArchitectureTraits) {
  for (const char* arch : {"llama", "mistral", "qwen2", "qwen3"}) {
    RandomModelSpec spec;
    spec.arch = arch;
    RandomModelFile file(spec);
    auto model = LoadModel(Open(file.path()));
    ASSERT_TRUE(model) << arch;
    const LlamaHparams& hp = model->hparams();
    EXPECT_EQ(hp.architecture, arch);
    const bool qwen = std::string(arch).starts_with("qwen");
    EXPECT_EQ(hp.rope_mode, qwen ? RopeMode::kNeox : RopeMode::kNormal) << arch;
    EXPECT_EQ(hp.attention_bias, std::string(arch) == "qwen2") << arch;
    EXPECT_EQ(hp.qk_norm, std::string(arch) == "qwen3") << arch;
    EXPECT_EQ(hp.head_dim, 64);
    EXPECT_EQ(hp.context_length, 256);
    EXPECT_FLOAT_EQ(hp.rms_eps, 1e-6f);
  }
}

// Every kernel table gives the same logits, bit for bit (cpu_kernels.hpp).
TEST(ModelReference, EveryInstructionSetGivesIdenticalLogits) {
  for (const TypeBound& b : kBounds) {
    RandomModelSpec spec;
    spec.arch = "qwen2";
    spec.type = b.type;
    RandomModelFile file(spec);
    auto gguf = Open(file.path());
    const std::vector<int32_t> tokens = Prompt(40, spec.vocab, 3);
    std::vector<float> first;
    for (const char* isa : {"generic", "avx2", "avx512"}) {
      CpuBackendOptions probe;
      probe.isa = isa;
      if (!CreateCpuBackend(probe)) continue;  // not on this CPU or build
      auto model = LoadModel(gguf, isa);
      ASSERT_TRUE(model);
      auto ctx = LlamaContext::Create(model, 0).value();
      auto logits = ctx->Decode(tokens).value();
      if (first.empty()) {
        first.assign(logits.begin(), logits.end());
        continue;
      }
      ASSERT_EQ(logits.size(), first.size());
      for (size_t i = 0; i < first.size(); ++i) {
        ASSERT_EQ(logits[i], first[i]) << GgmlTypeName(b.type) << " " << isa << " logit " << i;
      }
    }
  }
}

// A token's logits do not depend on how the prompt was batched (the kernels'
// per-element arithmetic is the same for every tile shape).
TEST(ModelReference, BatchedPrefillEqualsTokenByTokenForEveryType) {
  for (const TypeBound& b : kBounds) {
    RandomModelSpec spec;
    spec.arch = "llama";
    spec.type = b.type;
    RandomModelFile file(spec);
    auto model = LoadModel(Open(file.path()));
    ASSERT_TRUE(model);
    const std::vector<int32_t> tokens = Prompt(37, spec.vocab, 5);
    ContextOptions co;
    co.max_batch = 16;
    auto batched = LlamaContext::Create(model, co).value();
    auto single = LlamaContext::Create(model, co).value();
    auto a = batched->Decode(tokens).value();
    const std::vector<float> want(a.begin(), a.end());
    std::span<const float> got;
    for (int32_t t : tokens) got = single->Decode(std::span<const int32_t>(&t, 1)).value();
    for (size_t i = 0; i < want.size(); ++i) ASSERT_EQ(got[i], want[i]) << GgmlTypeName(b.type) << " logit " << i;
  }
}

TEST(ModelReference, KvCacheGrowsWithTheSequence) {
  RandomModelSpec spec;
  spec.context = 32768;
  RandomModelFile file(spec);
  auto model = LoadModel(Open(file.path()));
  ASSERT_TRUE(model);
  auto ctx = LlamaContext::Create(model, 0).value();
  EXPECT_EQ(ctx->context_length(), 32768);
  EXPECT_EQ(ctx->kv_bytes(), 0u);  // nothing until a token arrives
  // One 64-token page: 2 layers x (K, V) x 2 KV heads x 64 positions x 64 dims x 2 bytes.
  const size_t page = 2 * 2 * 2 * 64 * 64 * 2;
  ASSERT_TRUE(ctx->Decode(Prompt(10, spec.vocab, 1)));
  EXPECT_EQ(ctx->kv_bytes(), page);
  ASSERT_TRUE(ctx->Decode(Prompt(60, spec.vocab, 2)));
  EXPECT_EQ(ctx->kv_bytes(), 2 * page);
  ctx->Reset();
  ASSERT_TRUE(ctx->Decode(Prompt(5, spec.vocab, 3)));
  EXPECT_EQ(ctx->kv_bytes(), 2 * page);  // pages are kept for reuse

  ContextOptions f32;
  f32.kv_type = KvType::kF32;
  auto ctx32 = LlamaContext::Create(model, f32).value();
  ASSERT_TRUE(ctx32->Decode(Prompt(3, spec.vocab, 4)));
  EXPECT_EQ(ctx32->kv_bytes(), 2 * page);  // 4-byte values
}

TEST(ModelReference, RejectsWhatItCannotRun) {
  {
    RandomModelSpec spec;
    spec.type = GgmlType::kQ8_K;  // an activation format, not a weight type any model ships
    RandomModelFile file(spec);
    auto m = LlamaModel::Load(Open(file.path()));
    ASSERT_FALSE(m);
    EXPECT_EQ(m.error().code, ErrorCode::kInvalidArgument);
    EXPECT_NE(m.error().message.find("token_embd.weight has type Q8_K"), std::string::npos) << m.error().message;
  }
  {
    RandomModelSpec spec;
    spec.rope_scaling = "longrope";
    spec.rope_factor = 2.0f;
    RandomModelFile file(spec);
    auto m = LlamaModel::Load(Open(file.path()));
    ASSERT_FALSE(m);
    EXPECT_NE(m.error().message.find("'longrope' is not supported"), std::string::npos) << m.error().message;
  }
  {
    RandomModelSpec spec;
    spec.arch = "gemma";
    RandomModelFile file(spec);
    auto m = LlamaModel::Load(Open(file.path()));
    ASSERT_FALSE(m);
    EXPECT_NE(m.error().message.find("'gemma' is not supported"), std::string::npos) << m.error().message;
  }
}

// --- LlamaRunner: many sequences in one pass, and the prompt-prefix cache.

int32_t Argmax(std::span<const float> logits) {
  return static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
}

// A sequence's logits after its prompt and after each greedy token, and the
// greedy tokens (argmax of each row).
struct Trace {
  std::vector<std::vector<float>> logits;
  std::vector<int32_t> tokens;
};

// `prompt` then `steps` greedy steps through LlamaContext (prefill in batches
// of 64, one sequence).
Trace Alone(const std::shared_ptr<const LlamaModel>& model, const std::vector<int32_t>& prompt, int steps) {
  auto ctx = LlamaContext::Create(model, ContextOptions{}).value();
  Trace t;
  auto logits = ctx->Decode(prompt).value();
  for (int i = 0;; ++i) {
    t.logits.emplace_back(logits.begin(), logits.end());
    t.tokens.push_back(Argmax(logits));
    if (i == steps) break;
    logits = ctx->Decode(std::span<const int32_t>(&t.tokens.back(), 1)).value();
  }
  return t;
}

// The same for every prompt at once through one LlamaRunner: sequence i joins
// at step joins[i]; its prompt goes in chunks of at most `chunk` tokens (logits
// only with the last), then each step decodes one token of every sequence.
std::vector<Trace> Together(const std::shared_ptr<const LlamaModel>& model,
                            const std::vector<std::vector<int32_t>>& prompts, const std::vector<int>& joins,
                            int chunk, int steps) {
  std::vector<Trace> traces(prompts.size());
  const bool ok = DecodeTogether(model, prompts, joins, chunk, steps + 1, [&](size_t i, std::span<const float> row) {
    traces[i].logits.emplace_back(row.begin(), row.end());
    traces[i].tokens.push_back(Argmax(row));
    return traces[i].tokens.back();
  });
  return ok ? traces : std::vector<Trace>{};
}

// Each sequence's logits do not depend on which other sequences share its
// batch, nor on how its prompt was chunked: attention reads only its own
// pages, and every kernel computes a row the same way in any batch.
TEST(ModelReference, RunnerBatchOfSequencesEqualsEachAlone) {
  constexpr int kSteps = 8;
  for (const char* arch : {"llama", "qwen2", "qwen3"}) {
    for (GgmlType type : {GgmlType::kF16, GgmlType::kQ8_0}) {
      RandomModelSpec spec;
      spec.arch = arch;
      spec.type = type;
      RandomModelFile file(spec);
      auto model = LoadModel(Open(file.path()));
      ASSERT_TRUE(model);
      const std::vector<std::vector<int32_t>> prompts = {
          Prompt(5, spec.vocab, 21), Prompt(70, spec.vocab, 22), Prompt(130, spec.vocab, 23)};
      std::vector<Trace> alone;
      for (const auto& p : prompts) alone.push_back(Alone(model, p, kSteps));
      struct Schedule {
        const char* name;
        std::vector<int> joins;
        int chunk;
      } schedules[] = {
          {"prefilled together", {0, 0, 0}, 512},
          {"joining later, prompts in chunks of 64", {0, 1, 3}, 64},
      };
      for (const Schedule& s : schedules) {
        const std::vector<Trace> together = Together(model, prompts, s.joins, s.chunk, kSteps);
        ASSERT_EQ(together.size(), prompts.size()) << s.name;
        for (size_t i = 0; i < prompts.size(); ++i) {
          SCOPED_TRACE(std::string(arch) + " " + GgmlTypeName(type) + ", " + s.name + ", prompt of " +
                       std::to_string(prompts[i].size()));
          ASSERT_EQ(together[i].tokens, alone[i].tokens);
          for (size_t step = 0; step < alone[i].logits.size(); ++step) {
            const std::vector<float>& want = alone[i].logits[step];
            const std::vector<float>& got = together[i].logits[step];
            for (size_t v = 0; v < want.size(); ++v) ASSERT_EQ(got[v], want[v]) << "step " << step << " logit " << v;
          }
        }
      }
    }
  }
}

// Keys and values taken from the prefix cache are those the prompt would
// have computed: the logits are bit for bit those of a fresh context.
TEST(ModelReference, RunnerPrefixFromTheCacheGivesTheSameLogits) {
  for (const char* arch : {"llama", "qwen2", "qwen3"}) {
    RandomModelSpec spec;
    spec.arch = arch;
    spec.type = GgmlType::kF16;
    RandomModelFile file(spec);
    auto model = LoadModel(Open(file.path()));
    ASSERT_TRUE(model);
    const int vocab = spec.vocab;
    auto join = [](std::vector<int32_t> a, const std::vector<int32_t>& b) {
      a.insert(a.end(), b.begin(), b.end());
      return a;
    };
    const std::vector<int32_t> shared = Prompt(128, vocab, 31);
    const std::vector<int32_t> first = join(shared, Prompt(22, vocab, 32));
    const std::vector<int32_t> second = join(shared, Prompt(30, vocab, 33));
    auto fresh = [&](const std::vector<int32_t>& prompt) {
      auto ctx = LlamaContext::Create(model, ContextOptions{}).value();
      auto logits = ctx->Decode(prompt).value();
      return std::vector<float>(logits.begin(), logits.end());
    };
    auto expect_same = [&](std::span<const float> got, const std::vector<float>& want, const char* what) {
      ASSERT_EQ(got.size(), want.size()) << arch << " " << what;
      for (size_t v = 0; v < want.size(); ++v) ASSERT_EQ(got[v], want[v]) << arch << " " << what << " logit " << v;
    };

    const KvPoolShape shape = model->KvShape(KvType::kF16, 16 * kKvPageTokens * model->KvBytesPerToken(KvType::kF16));
    auto cache = PagedKvCache::Create(model->backend(), shape, /*prefix_cache=*/true).value();
    auto runner = LlamaRunner::Create(model, 256, 2).value();
    KvSequence a;
    ASSERT_EQ(cache->AttachPrefix(a, first), 0);
    const BatchItem item_a{&a, first, true};
    ASSERT_TRUE(runner->Decode(*cache, std::span<const BatchItem>(&item_a, 1)));

    // While the first sequence runs: its two full pages are shared.
    KvSequence b;
    ASSERT_EQ(cache->AttachPrefix(b, second), 128) << arch;
    EXPECT_EQ(b.pages()[0], a.pages()[0]);
    EXPECT_EQ(b.pages()[1], a.pages()[1]);
    const BatchItem item_b{&b, std::span<const int32_t>(second).subspan(128), true};
    auto logits = runner->Decode(*cache, std::span<const BatchItem>(&item_b, 1));
    ASSERT_TRUE(logits);
    expect_same(*logits, fresh(second), "sharing a running sequence's pages");

    // Both go on in one batch, reading the shared pages.
    const int32_t next_a = 3;
    const int32_t next_b = 4;
    const BatchItem both[] = {{&a, std::span<const int32_t>(&next_a, 1), true},
                              {&b, std::span<const int32_t>(&next_b, 1), true}};
    logits = runner->Decode(*cache, both);
    ASSERT_TRUE(logits);
    expect_same(logits->first(static_cast<size_t>(vocab)), fresh(join(first, {next_a})), "the owner after sharing");
    expect_same(logits->subspan(static_cast<size_t>(vocab)), fresh(join(second, {next_b})), "the sharer in a batch");

    // After both are released the pages stay cached. A prompt of exactly 128
    // tokens takes the first page only: its last token must be computed.
    cache->Release(a);
    cache->Release(b);
    EXPECT_EQ(cache->stats().cached_pages, 2) << arch;
    KvSequence c;
    ASSERT_EQ(cache->AttachPrefix(c, shared), 64) << arch;
    const BatchItem item_c{&c, std::span<const int32_t>(shared).subspan(64), true};
    logits = runner->Decode(*cache, std::span<const BatchItem>(&item_c, 1));
    ASSERT_TRUE(logits);
    expect_same(*logits, fresh(shared), "a prompt of exactly two pages from released pages");
    cache->Release(c);
  }
}

TEST(ModelReference, RunnerDecodeRejectsABadBatchWithoutAdvancingAnySequence) {
  RandomModelSpec spec;
  spec.type = GgmlType::kF16;
  RandomModelFile file(spec);
  auto model = LoadModel(Open(file.path()));
  ASSERT_TRUE(model);
  EXPECT_FALSE(LlamaRunner::Create(model, 0, 1));
  EXPECT_FALSE(LlamaRunner::Create(model, 16, 0));
  const KvPoolShape shape = model->KvShape(KvType::kF16, 8 * kKvPageTokens * model->KvBytesPerToken(KvType::kF16));
  auto cache = PagedKvCache::Create(model->backend(), shape, /*prefix_cache=*/false).value();
  auto runner = LlamaRunner::Create(model, 16, 2).value();
  KvSequence a;
  KvSequence b;
  KvSequence c;
  const std::vector<int32_t> five = Prompt(5, spec.vocab, 1);
  const BatchItem start{&a, five, true};
  ASSERT_TRUE(runner->Decode(*cache, std::span<const BatchItem>(&start, 1)));
  const int used = cache->stats().used_pages;

  const std::vector<int32_t> one = {1};
  const std::vector<int32_t> ten = Prompt(10, spec.vocab, 2);
  const std::vector<int32_t> seven = Prompt(7, spec.vocab, 3);
  const std::vector<int32_t> past_vocab = {1, spec.vocab};
  const std::vector<int32_t> negative = {-1};
  const std::vector<int32_t> none;
  struct Case {
    const char* what;
    std::vector<BatchItem> items;
  } cases[] = {
      {"no items", {}},
      {"an item without tokens", {{&a, one, true}, {&b, none, true}}},
      {"an item without a sequence", {{nullptr, one, true}}},
      {"one sequence twice", {{&a, one, false}, {&b, one, true}, {&a, one, true}}},
      {"17 tokens for a batch of 16", {{&a, ten, true}, {&b, seven, false}}},
      {"3 logit rows for 2", {{&a, one, true}, {&b, one, true}, {&c, one, true}}},
      {"a token id of vocab_size", {{&b, one, true}, {&c, past_vocab, true}}},
      {"a negative token id", {{&b, negative, false}}},
  };
  for (const Case& k : cases) {
    auto r = runner->Decode(*cache, k.items);
    ASSERT_FALSE(r) << k.what;
    EXPECT_EQ(r.error().code, ErrorCode::kInvalidArgument) << k.what;
    EXPECT_EQ(a.tokens(), 5) << k.what;
    EXPECT_EQ(b.tokens(), 0) << k.what;
    EXPECT_EQ(c.tokens(), 0) << k.what;
    EXPECT_EQ(cache->stats().used_pages, used) << k.what << ": pages were taken";
  }

  // The runner still works, and a's first five positions are intact.
  const BatchItem ok[] = {{&a, ten, true}, {&b, five, false}};
  auto logits = runner->Decode(*cache, ok);
  ASSERT_TRUE(logits);
  EXPECT_EQ(logits->size(), static_cast<size_t>(spec.vocab));
  auto ctx = LlamaContext::Create(model, ContextOptions{}).value();
  std::vector<int32_t> fifteen = five;
  fifteen.insert(fifteen.end(), ten.begin(), ten.end());
  auto want = ctx->Decode(fifteen).value();
  for (size_t v = 0; v < want.size(); ++v) ASSERT_EQ((*logits)[v], want[v]) << "logit " << v;
  cache->Release(a);
  cache->Release(b);
}

// A batch whose new positions need more pages than the budget has fails as a
// whole: no sequence advances, and pages already taken stay with their
// sequences (usable by the next try).
TEST(ModelReference, RunnerDecodeOutOfPagesAdvancesNothing) {
  RandomModelSpec spec;
  spec.type = GgmlType::kF16;
  RandomModelFile file(spec);
  auto model = LoadModel(Open(file.path()));
  ASSERT_TRUE(model);
  const KvPoolShape shape = model->KvShape(KvType::kF16, 2 * kKvPageTokens * model->KvBytesPerToken(KvType::kF16));
  ASSERT_EQ(shape.max_pages, 2);
  auto cache = PagedKvCache::Create(model->backend(), shape, /*prefix_cache=*/false).value();
  auto runner = LlamaRunner::Create(model, 128, 2).value();
  KvSequence a;
  KvSequence b;
  const std::vector<int32_t> sixty = Prompt(60, spec.vocab, 1);
  const std::vector<int32_t> eight = Prompt(8, spec.vocab, 2);
  const BatchItem start{&a, sixty, true};
  ASSERT_TRUE(runner->Decode(*cache, std::span<const BatchItem>(&start, 1)));
  const BatchItem both[] = {{&a, eight, true}, {&b, eight, true}};  // a needs a second page, b a third
  auto r = runner->Decode(*cache, both);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, ErrorCode::kResourceExhausted);
  EXPECT_EQ(a.tokens(), 60);
  EXPECT_EQ(b.tokens(), 0);
  EXPECT_EQ(a.pages().size(), 2u);
  cache->Release(b);
  const BatchItem alone{&a, eight, true};
  auto logits = runner->Decode(*cache, std::span<const BatchItem>(&alone, 1));
  ASSERT_TRUE(logits);
  EXPECT_EQ(a.tokens(), 68);
  cache->Release(a);
}

}  // namespace
}  // namespace tollgate::local_backend
