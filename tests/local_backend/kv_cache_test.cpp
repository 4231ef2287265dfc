// PagedKvCache (kv_cache.hpp): pages taken lazily within a budget, the exact
// prompt-prefix cache and its least-recently-used eviction. And what storing
// keys and values in F16 or 8 bits (KvType, backend.hpp) does to a model's
// logits: measured against an F32 cache and a float64 forward pass on small
// random models (random_model.hpp), with the numbers printed for
// docs/local-engine.md.
#include "random_model.hpp"
#include "tollgate/local_backend/kv_cache.hpp"
#include "tollgate/local_backend/model.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <functional>
#include <numeric>
#include <random>
#include <set>
#include <string>
#include <vector>

namespace tollgate::local_backend {
namespace {

std::shared_ptr<Backend> Cpu() {
  CpuBackendOptions o;
  o.threads = 1;
  return CreateCpuBackend(o).value();
}

// One layer, one KV head of 8 values: a page is 2 KiB in F16.
std::unique_ptr<PagedKvCache> MakeCache(Backend& backend, int max_pages, bool prefix_cache) {
  KvPoolShape shape;
  shape.layers = 1;
  shape.kv_heads = 1;
  shape.head_dim = 8;
  shape.type = KvType::kF16;
  shape.max_pages = max_pages;
  return PagedKvCache::Create(backend, shape, prefix_cache).value();
}

// first, first + 1, ..., n ids.
std::vector<TokenId> Ids(TokenId first, int n) {
  std::vector<TokenId> ids(static_cast<size_t>(n));
  std::iota(ids.begin(), ids.end(), first);
  return ids;
}

std::vector<TokenId> Head(const std::vector<TokenId>& ids, int n) {
  return std::vector<TokenId>(ids.begin(), ids.begin() + n);
}

// Stores `tokens` after what `seq` holds, as LlamaRunner::Decode does.
void Store(PagedKvCache& cache, KvSequence& seq, std::span<const TokenId> tokens) {
  ASSERT_TRUE(cache.Reserve(seq, seq.tokens() + static_cast<int>(tokens.size())));
  cache.Append(seq, tokens);
}

// Positions a new sequence with `prompt` would take from the prefix cache
// (the lookup is counted, and attached pages become most recently used).
int Attachable(PagedKvCache& cache, std::span<const TokenId> prompt) {
  KvSequence seq;
  const int attached = cache.AttachPrefix(seq, prompt);
  EXPECT_EQ(seq.tokens(), attached);
  cache.Release(seq);
  return attached;
}

TEST(PagedKvCache, ReserveTakesPagesLazilyWithinTheBudget) {
  auto be = Cpu();
  auto cache = MakeCache(*be, 4, /*prefix_cache=*/false);
  const size_t page = cache->pool().page_bytes();
  EXPECT_EQ(page, 1u * 2 * 1 * 64 * 8 * 2);
  EXPECT_EQ(cache->pool().allocated_pages(), 0);  // no memory before a sequence needs it
  EXPECT_EQ(cache->available_pages(), 4);

  KvSequence a;
  ASSERT_TRUE(cache->Reserve(a, 0));
  EXPECT_TRUE(a.pages().empty());
  ASSERT_TRUE(cache->Reserve(a, 1));
  EXPECT_EQ(a.pages().size(), 1u);
  EXPECT_EQ(a.capacity(), 64);
  EXPECT_EQ(cache->pool().allocated_pages(), 1);
  ASSERT_TRUE(cache->Reserve(a, 64));
  EXPECT_EQ(a.pages().size(), 1u);
  ASSERT_TRUE(cache->Reserve(a, 65));
  EXPECT_EQ(a.pages().size(), 2u);
  EXPECT_EQ(cache->pool().bytes(), 2 * page);
  EXPECT_EQ(cache->available_pages(), 2);
  EXPECT_EQ(a.tokens(), 0);  // reserved, nothing stored yet

  // Three more pages do not fit: the sequence keeps the two it got.
  KvSequence b;
  auto r = cache->Reserve(b, 3 * 64);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, ErrorCode::kResourceExhausted);
  EXPECT_NE(r.error().message.find("budget of 4 pages"), std::string::npos) << r.error().message;
  EXPECT_EQ(b.pages().size(), 2u);
  EXPECT_EQ(cache->available_pages(), 0);
  r = cache->Reserve(a, 129);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, ErrorCode::kResourceExhausted);
  EXPECT_EQ(a.capacity(), 128);

  std::set<int32_t> ids(a.pages().begin(), a.pages().end());
  ids.insert(b.pages().begin(), b.pages().end());
  EXPECT_EQ(ids, (std::set<int32_t>{0, 1, 2, 3}));
  PagedKvCacheStats s = cache->stats();
  EXPECT_EQ(s.total_pages, 4);
  EXPECT_EQ(s.used_pages, 4);
  EXPECT_EQ(s.cached_pages, 0);

  // Release gives the pages back; their memory stays for reuse.
  cache->Release(b);
  EXPECT_TRUE(b.pages().empty());
  EXPECT_EQ(cache->available_pages(), 2);
  EXPECT_EQ(cache->stats().used_pages, 2);
  const std::vector<TokenId> tokens = Ids(10, 200);
  Store(*cache, a, tokens);
  EXPECT_EQ(a.tokens(), 200);
  EXPECT_EQ(a.pages().size(), 4u);
  EXPECT_TRUE(std::equal(a.token_ids().begin(), a.token_ids().end(), tokens.begin(), tokens.end()));
  EXPECT_EQ(cache->pool().allocated_pages(), 4);
  cache->Release(a);
  EXPECT_EQ(a.tokens(), 0);
  EXPECT_TRUE(a.pages().empty());
  EXPECT_EQ(cache->available_pages(), 4);
  s = cache->stats();
  EXPECT_EQ(s.used_pages, 0);
  EXPECT_EQ(s.cached_pages, 0);  // no prefix cache: everything went to the free list
  EXPECT_EQ(cache->pool().bytes(), 4 * page);
}

TEST(PagedKvCache, AttachPrefixSharesWholePagesOfAStoredPrompt) {
  auto be = Cpu();
  auto cache = MakeCache(*be, 16, /*prefix_cache=*/true);
  const std::vector<TokenId> prompt = Ids(1000, 200);
  KvSequence a;
  Store(*cache, a, prompt);  // pages 0..2 full and registered, page 3 holds 8 positions
  EXPECT_EQ(cache->stats().used_pages, 4);

  KvSequence b;
  EXPECT_EQ(cache->AttachPrefix(b, prompt), 192);
  EXPECT_EQ(b.tokens(), 192);
  ASSERT_EQ(b.pages().size(), 3u);
  for (size_t i = 0; i < 3; ++i) EXPECT_EQ(b.pages()[i], a.pages()[i]) << i;
  EXPECT_TRUE(std::equal(b.token_ids().begin(), b.token_ids().end(), prompt.begin(), prompt.begin() + 192));
  EXPECT_EQ(cache->stats().used_pages, 4);  // a shared page counts once
  // The rest of the prompt goes to a page of b's own.
  Store(*cache, b, std::span<const TokenId>(prompt).subspan(192));
  ASSERT_EQ(b.pages().size(), 4u);
  EXPECT_NE(b.pages()[3], a.pages()[3]);
  EXPECT_EQ(cache->stats().used_pages, 5);
  cache->Release(b);
  EXPECT_EQ(cache->stats().used_pages, 4);  // a still holds the shared pages

  // Whole pages only, and never the prompt's last token (its logits are needed).
  EXPECT_EQ(Attachable(*cache, Head(prompt, 193)), 192);
  EXPECT_EQ(Attachable(*cache, Head(prompt, 192)), 128);
  EXPECT_EQ(Attachable(*cache, Head(prompt, 129)), 128);
  EXPECT_EQ(Attachable(*cache, Head(prompt, 128)), 64);
  EXPECT_EQ(Attachable(*cache, Head(prompt, 65)), 64);
  EXPECT_EQ(Attachable(*cache, Head(prompt, 64)), 0);
  EXPECT_EQ(Attachable(*cache, Head(prompt, 1)), 0);
  EXPECT_EQ(Attachable(*cache, {}), 0);
  // A prompt that goes on past what was stored: page 3 is not full, so not shared.
  std::vector<TokenId> longer = prompt;
  const std::vector<TokenId> more = Ids(5000, 100);
  longer.insert(longer.end(), more.begin(), more.end());
  EXPECT_EQ(Attachable(*cache, longer), 192);

  // A difference anywhere in a page stops sharing at the page before it.
  for (int at : {0, 1, 63, 64, 100, 127, 128, 150, 191, 195}) {
    std::vector<TokenId> p = prompt;
    p[static_cast<size_t>(at)] = 7;
    EXPECT_EQ(Attachable(*cache, p), at / 64 * 64) << "difference at " << at;
  }
  // The same tokens shifted by one position are different content.
  EXPECT_EQ(Attachable(*cache, Ids(1001, 200)), 0);

  // Pages filled by a later Append are registered then.
  Store(*cache, a, std::span<const TokenId>(more).first(56));
  EXPECT_EQ(a.tokens(), 256);
  EXPECT_EQ(Attachable(*cache, longer), 256);
  cache->Release(a);
  EXPECT_EQ(cache->stats().used_pages, 0);
  EXPECT_EQ(cache->stats().cached_pages, 4);
}

TEST(PagedKvCache, SameContentStoredTwiceIsCachedOnce) {
  auto be = Cpu();
  auto cache = MakeCache(*be, 16, /*prefix_cache=*/true);
  const std::vector<TokenId> prompt = Ids(0, 129);
  // Two sequences compute the same prompt side by side (neither found the
  // other's pages): the first to fill a page registers it.
  KvSequence a;
  KvSequence b;
  Store(*cache, a, Head(prompt, 70));
  Store(*cache, b, Head(prompt, 70));
  Store(*cache, a, std::span<const TokenId>(prompt).subspan(70));
  Store(*cache, b, std::span<const TokenId>(prompt).subspan(70));
  EXPECT_EQ(cache->stats().used_pages, 6);

  KvSequence c;
  EXPECT_EQ(cache->AttachPrefix(c, prompt), 128);
  ASSERT_EQ(c.pages().size(), 2u);
  EXPECT_EQ(c.pages()[0], a.pages()[0]);
  EXPECT_EQ(c.pages()[1], a.pages()[1]);
  cache->Release(c);

  cache->Release(a);  // its two registered pages stay cached, its third is free
  EXPECT_EQ(cache->stats().cached_pages, 2);
  EXPECT_EQ(cache->stats().used_pages, 3);
  cache->Release(b);  // b's copies were never registered: they go to the free list
  EXPECT_EQ(cache->stats().cached_pages, 2);
  EXPECT_EQ(cache->stats().used_pages, 0);
  EXPECT_EQ(Attachable(*cache, prompt), 128);
}

TEST(PagedKvCache, ReleasedPrefixesAreEvictedLeastRecentlyUsedFirst) {
  auto be = Cpu();
  auto cache = MakeCache(*be, 4, /*prefix_cache=*/true);
  const std::vector<TokenId> x = Ids(0, 65);
  const std::vector<TokenId> y = Ids(1000, 65);
  KvSequence sx;
  KvSequence sy;
  Store(*cache, sx, x);  // one registered page and one partial page each
  Store(*cache, sy, y);
  cache->Release(sx);
  EXPECT_EQ(cache->stats().cached_pages, 1);
  EXPECT_EQ(cache->stats().used_pages, 2);
  cache->Release(sy);
  PagedKvCacheStats s = cache->stats();
  EXPECT_EQ(s.cached_pages, 2);
  EXPECT_EQ(s.used_pages, 0);
  EXPECT_EQ(cache->available_pages(), 4);  // cached pages can be taken
  EXPECT_EQ(cache->pool().allocated_pages(), 4);

  // Using x's page makes it the most recently used; y's is first out.
  EXPECT_EQ(Attachable(*cache, x), 64);
  EXPECT_EQ(cache->stats().cached_pages, 2);

  KvSequence n;
  ASSERT_TRUE(cache->Reserve(n, 128));  // the two free pages first
  EXPECT_EQ(cache->stats().cached_pages, 2);
  ASSERT_TRUE(cache->Reserve(n, 192));  // then the least recently used cached page
  EXPECT_EQ(cache->stats().cached_pages, 1);
  EXPECT_EQ(Attachable(*cache, y), 0);
  EXPECT_EQ(Attachable(*cache, x), 64);
  ASSERT_TRUE(cache->Reserve(n, 256));
  EXPECT_EQ(cache->stats().cached_pages, 0);
  EXPECT_EQ(Attachable(*cache, x), 0);
  auto r = cache->Reserve(n, 257);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, ErrorCode::kResourceExhausted);
  cache->Release(n);  // nothing stored: nothing to cache
  EXPECT_EQ(cache->stats().cached_pages, 0);
  EXPECT_EQ(cache->available_pages(), 4);

  // A prefix computed again after its eviction is cached again.
  KvSequence again;
  Store(*cache, again, y);
  cache->Release(again);
  EXPECT_EQ(Attachable(*cache, y), 64);
}

TEST(PagedKvCache, EvictingPartOfALongPrefixAttachesLess) {
  auto be = Cpu();
  auto cache = MakeCache(*be, 4, /*prefix_cache=*/true);
  const std::vector<TokenId> prompt = Ids(0, 193);
  KvSequence a;
  Store(*cache, a, Head(prompt, 192));  // three registered pages
  cache->Release(a);
  EXPECT_EQ(cache->stats().cached_pages, 3);
  EXPECT_EQ(Attachable(*cache, prompt), 192);

  KvSequence n;
  ASSERT_TRUE(cache->Reserve(n, 128));  // a never-allocated page, then one eviction
  EXPECT_EQ(cache->stats().cached_pages, 2);
  // Pages are released last first, so the eviction took the prefix's end
  // and its beginning is still found.
  EXPECT_EQ(Attachable(*cache, prompt), 128);
  cache->Release(n);
}

// A cached page whose parent was evicted is stale; when the same prefix is
// computed again, the new pages replace it in the index.
TEST(PagedKvCache, RecomputedPrefixReplacesStalePages) {
  auto be = Cpu();
  auto cache = MakeCache(*be, 3, /*prefix_cache=*/true);
  const std::vector<TokenId> prompt = Ids(0, 129);
  KvSequence a;
  Store(*cache, a, Head(prompt, 128));
  cache->Release(a);  // pages of [0, 64) and [64, 128) cached
  KvSequence n;
  ASSERT_TRUE(cache->Reserve(n, 128));  // the free page, then evicts [64, 128)
  ASSERT_TRUE(cache->Reserve(n, 192));  // then [0, 64)
  cache->Release(n);
  EXPECT_EQ(Attachable(*cache, prompt), 0);
  KvSequence c;
  Store(*cache, c, Head(prompt, 128));
  cache->Release(c);
  EXPECT_EQ(Attachable(*cache, prompt), 128);
}

// Two sequences that computed the same prefix side by side: the second one's
// pages after it are cached too, chained from the first one's copy.
TEST(PagedKvCache, PagesAfterADuplicatedPrefixAreCached) {
  auto be = Cpu();
  auto cache = MakeCache(*be, 16, /*prefix_cache=*/true);
  const std::vector<TokenId> shared = Ids(0, 128);
  KvSequence a, b;
  Store(*cache, a, shared);
  Store(*cache, b, shared);
  Store(*cache, b, Ids(1000, 64));
  std::vector<TokenId> prompt = shared;
  for (TokenId t : Ids(1000, 64)) prompt.push_back(t);
  prompt.push_back(5);
  EXPECT_EQ(Attachable(*cache, prompt), 192);
  cache->Release(a);
  cache->Release(b);
  EXPECT_EQ(Attachable(*cache, prompt), 192);
}

TEST(PagedKvCache, WithoutPrefixCacheNothingIsSharedOrKept) {
  auto be = Cpu();
  auto cache = MakeCache(*be, 8, /*prefix_cache=*/false);
  const std::vector<TokenId> prompt = Ids(0, 200);
  KvSequence a;
  Store(*cache, a, prompt);
  KvSequence b;
  EXPECT_EQ(cache->AttachPrefix(b, prompt), 0);
  EXPECT_EQ(b.tokens(), 0);
  EXPECT_TRUE(b.pages().empty());
  cache->Release(a);
  const PagedKvCacheStats s = cache->stats();
  EXPECT_EQ(s.used_pages, 0);
  EXPECT_EQ(s.cached_pages, 0);
  EXPECT_EQ(s.prefix_lookups, 1);
  EXPECT_EQ(s.prefix_hit_tokens, 0);
  EXPECT_EQ(cache->available_pages(), 8);
}

TEST(PagedKvCache, StatsCountLookupsHitsAndPages) {
  auto be = Cpu();
  auto cache = MakeCache(*be, 8, /*prefix_cache=*/true);
  PagedKvCacheStats s = cache->stats();
  EXPECT_EQ(s.total_pages, 8);
  EXPECT_EQ(s.used_pages, 0);
  EXPECT_EQ(s.cached_pages, 0);
  EXPECT_EQ(s.prefix_lookups, 0);
  EXPECT_EQ(s.prefix_hit_tokens, 0);

  const std::vector<TokenId> prompt = Ids(0, 130);
  KvSequence a;
  EXPECT_EQ(cache->AttachPrefix(a, prompt), 0);  // a miss is a lookup too
  Store(*cache, a, prompt);
  KvSequence b;
  KvSequence c;
  EXPECT_EQ(cache->AttachPrefix(b, prompt), 128);
  EXPECT_EQ(cache->AttachPrefix(c, Ids(500, 10)), 0);
  s = cache->stats();
  EXPECT_EQ(s.prefix_lookups, 3);
  EXPECT_EQ(s.prefix_hit_tokens, 128);
  EXPECT_EQ(s.used_pages, 3);
  EXPECT_EQ(s.cached_pages, 0);

  cache->Release(a);
  EXPECT_EQ(cache->stats().cached_pages, 0);  // b still holds both registered pages
  EXPECT_EQ(cache->stats().used_pages, 2);
  cache->Release(b);
  cache->Release(c);
  s = cache->stats();
  EXPECT_EQ(s.used_pages, 0);
  EXPECT_EQ(s.cached_pages, 2);
  EXPECT_EQ(s.prefix_lookups, 3);
  EXPECT_EQ(s.prefix_hit_tokens, 128);
}


// --- What the KV storage type does to a model's output.

using testing::RandomModelFile;
using testing::RandomModelSpec;
using testing::ReferenceModel;
using testing::RelativeError;

std::shared_ptr<const LlamaModel> LoadRandomModel(const std::shared_ptr<const GgufFile>& gguf) {
  ModelOptions options;
  options.backend = Cpu();
  return LlamaModel::Load(gguf, options).value();
}

std::vector<TokenId> RandomIds(int n, int vocab, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<TokenId> ids(static_cast<size_t>(n));
  for (TokenId& id : ids) id = static_cast<TokenId>(rng() % static_cast<uint32_t>(vocab));
  return ids;
}

TokenId Argmax(std::span<const float> logits) {
  return static_cast<TokenId>(std::max_element(logits.begin(), logits.end()) - logits.begin());
}

// Logits after `prompt` and after each of `fed` (the same tokens whatever the
// KV type, so that every step compares like with like).
std::vector<std::vector<float>> ForcedLogits(const std::shared_ptr<const LlamaModel>& model, KvType kv,
                                             const std::vector<TokenId>& prompt, const std::vector<TokenId>& fed) {
  ContextOptions co;
  co.kv_type = kv;
  auto ctx = LlamaContext::Create(model, co).value();
  std::vector<std::vector<float>> out;
  auto logits = ctx->Decode(prompt).value();
  out.emplace_back(logits.begin(), logits.end());
  for (TokenId t : fed) {
    logits = ctx->Decode(std::span<const TokenId>(&t, 1)).value();
    out.emplace_back(logits.begin(), logits.end());
  }
  return out;
}

// `steps` greedily chosen tokens after `prompt`.
std::vector<TokenId> GreedyTokens(const std::shared_ptr<const LlamaModel>& model, KvType kv,
                                  const std::vector<TokenId>& prompt, int steps) {
  ContextOptions co;
  co.kv_type = kv;
  auto ctx = LlamaContext::Create(model, co).value();
  std::vector<TokenId> out;
  auto logits = ctx->Decode(prompt).value();
  for (int i = 0; i < steps; ++i) {
    out.push_back(Argmax(logits));
    if (i + 1 < steps) logits = ctx->Decode(std::span<const TokenId>(&out.back(), 1)).value();
  }
  return out;
}

struct KvTypeEffect {
  double max_abs = 0;          // largest |logit - F32-KV logit| over every step and token
  double max_abs_spread = 0;   // the same divided by that step's F32 logit range (max - min), worst step
  double rel_l2 = 0;           // ||logits - F32-KV logits|| / ||F32-KV logits||, worst step
  double rel_l2_f64 = 0;       // the same against the float64 forward pass, worst step
  int forced_agree = 0;        // steps whose argmax equals F32's, fed the same tokens
  int greedy_prefix = 0;       // leading greedy tokens equal to F32's, each run on its own choices
};

KvTypeEffect Measure(const std::vector<std::vector<float>>& got, const std::vector<std::vector<float>>& f32,
                     const std::vector<std::vector<double>>& f64, const std::vector<TokenId>& greedy,
                     const std::vector<TokenId>& greedy_f32) {
  KvTypeEffect e;
  for (size_t s = 0; s < got.size(); ++s) {
    const auto [lo, hi] = std::minmax_element(f32[s].begin(), f32[s].end());
    double step_max = 0;
    double num = 0;
    double den = 0;
    for (size_t i = 0; i < got[s].size(); ++i) {
      const double d = static_cast<double>(got[s][i]) - f32[s][i];
      step_max = std::max(step_max, std::abs(d));
      num += d * d;
      den += static_cast<double>(f32[s][i]) * f32[s][i];
    }
    e.max_abs = std::max(e.max_abs, step_max);
    e.max_abs_spread = std::max(e.max_abs_spread, step_max / (*hi - *lo));
    e.rel_l2 = std::max(e.rel_l2, std::sqrt(num / den));
    e.rel_l2_f64 = std::max(e.rel_l2_f64, RelativeError(got[s], f64[s]));
    e.forced_agree += Argmax(got[s]) == Argmax(f32[s]) ? 1 : 0;
  }
  while (e.greedy_prefix < static_cast<int>(greedy.size()) &&
         greedy[static_cast<size_t>(e.greedy_prefix)] == greedy_f32[static_cast<size_t>(e.greedy_prefix)]) {
    ++e.greedy_prefix;
  }
  return e;
}

// A 70-token prompt (two KV pages) and 32 greedy steps on 2-layer random
// models (F16 weights) whose attention is deliberately sharp
// (random_model.hpp), so that rounding K and V shows more in the logits than
// it would in a trained model. Each KV type is fed the tokens F32 chose
// (teacher forcing), so every step compares the same computation. Stated
// bounds, the worst measured of llama/qwen2/qwen3 in brackets (2026-12-05):
//   F16: max |logit - F32's| <= 2e-3 of the step's logit range [4.3e-4; 2.3e-3
//     absolute on ranges of about 5.5], relative L2 <= 3e-3 [8.3e-4], argmax
//     equal to F32's at >= 31 of 32 steps [32].
//   Q8 (one half scale per head row): <= 4e-2 of the logit range [1.65e-2;
//     9.1e-2 absolute], relative L2 <= 5e-2 [2.55e-2; the error of Q8_0
//     weights' activation quantization, model_reference_test.cpp, is 1.2% ..
//     3.3%], argmax equal to F32's at >= 28 of 32 steps [30].
//   Left to run on their own choices, greedy decoding with Q8 KV leaves F32's
//   path after 3 .. 14 tokens on these models, whose top two logits come
//   within 1e-3 of each other at some steps (printed, not asserted); with F16
//   KV it kept all 32.
//   F32 KV against float64: relative L2 <= 1e-5 [2.1e-6].
TEST(KvCacheType, F16AndQ8KeysAndValuesStayCloseToF32) {
  constexpr int kPrompt = 70;
  constexpr int kSteps = 32;
  std::string table;
  for (const char* arch : {"llama", "qwen2", "qwen3"}) {
    RandomModelSpec spec;
    spec.arch = arch;
    spec.type = GgmlType::kF16;
    RandomModelFile file(spec);
    auto gguf = std::shared_ptr<const GgufFile>(GgufFile::Open(file.path()).value());
    auto model = LoadRandomModel(gguf);
    const std::vector<TokenId> prompt = RandomIds(kPrompt, spec.vocab, 11);
    const std::vector<TokenId> greedy_f32 = GreedyTokens(model, KvType::kF32, prompt, kSteps);
    const std::vector<TokenId> fed(greedy_f32.begin(), greedy_f32.end() - 1);
    std::vector<TokenId> all = prompt;
    all.insert(all.end(), fed.begin(), fed.end());
    const std::vector<std::vector<double>> f64_all = ReferenceModel(*gguf, spec).Logits(all);
    const std::vector<std::vector<double>> f64(f64_all.begin() + (kPrompt - 1), f64_all.end());
    const auto f32 = ForcedLogits(model, KvType::kF32, prompt, fed);
    ASSERT_EQ(f32.size(), static_cast<size_t>(kSteps));
    std::vector<double> gaps;
    std::vector<double> ranges;
    for (const std::vector<float>& l : f32) {
      std::vector<float> sorted = l;
      std::partial_sort(sorted.begin(), sorted.begin() + 2, sorted.end(), std::greater<>());
      gaps.push_back(sorted[0] - sorted[1]);
      ranges.push_back(sorted[0] - *std::min_element(l.begin(), l.end()));
    }
    std::sort(gaps.begin(), gaps.end());
    std::sort(ranges.begin(), ranges.end());
    char head[160];
    std::snprintf(head, sizeof(head), "%-6s F32 KV: median logit range %.2f, top-two gap median %.3f, smallest %.4f\n",
                  arch, ranges[ranges.size() / 2], gaps[gaps.size() / 2], gaps[0]);
    table += head;
    for (KvType kv : {KvType::kF32, KvType::kF16, KvType::kQ8}) {
      const KvTypeEffect e = Measure(ForcedLogits(model, kv, prompt, fed), f32, f64,
                                     GreedyTokens(model, kv, prompt, kSteps), greedy_f32);
      char line[200];
      std::snprintf(line, sizeof(line),
                    "%-6s %-3s  max|d| %.2e  /range %.2e  relL2 %.2e  relL2 f64 %.2e  argmax %d/%d  "
                    "greedy prefix %d/%d\n",
                    arch, std::string(KvTypeName(kv)).c_str(), e.max_abs, e.max_abs_spread, e.rel_l2, e.rel_l2_f64,
                    e.forced_agree, kSteps, e.greedy_prefix, kSteps);
      table += line;
      const char* what = arch;
      switch (kv) {
        case KvType::kF32:
          EXPECT_LE(e.rel_l2_f64, 1e-5) << what;
          break;
        case KvType::kF16:
          EXPECT_LE(e.max_abs_spread, 2e-3) << what;
          EXPECT_LE(e.rel_l2, 3e-3) << what;
          EXPECT_LE(e.rel_l2_f64, 3e-3) << what;
          EXPECT_GE(e.forced_agree, kSteps - 1) << what;
          break;
        case KvType::kQ8:
          EXPECT_LE(e.max_abs_spread, 4e-2) << what;
          EXPECT_LE(e.rel_l2, 5e-2) << what;
          EXPECT_LE(e.rel_l2_f64, 5e-2) << what;
          EXPECT_GE(e.forced_agree, 28) << what;
          break;
      }
    }
  }
  std::printf("logits with each KV type vs F32 KV (%d-token prompt, %d steps, F16 weights):\n%s", kPrompt, kSteps,
              table.c_str());
}

}  // namespace
}  // namespace tollgate::local_backend

