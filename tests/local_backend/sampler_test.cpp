#include "tollgate/local_backend/sampler.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <random>
#include <set>

namespace tollgate::local_backend {
namespace {

TEST(Sampler, GreedyPicksArgmaxWithTiesToLowestId) {
  const std::vector<float> logits = {0.5f, 2.0f, -1.0f, 2.0f};
  EXPECT_EQ(Greedy(logits), 1);
  Sampler sampler(SamplingParams{.temperature = 0.0, .top_p = 1.0, .seed = {}});
  EXPECT_EQ(sampler.Sample(logits), 1);
  const float nan = std::numeric_limits<float>::quiet_NaN();
  EXPECT_EQ(Greedy(std::vector<float>{nan, -3.0f, nan}), 1);
}

TEST(Sampler, SameSeedGivesSameTokens) {
  std::vector<float> logits(64);
  for (size_t i = 0; i < logits.size(); ++i) logits[i] = std::sin(static_cast<float>(i));
  auto draw = [&](uint64_t seed) {
    Sampler s(SamplingParams{.temperature = 1.0, .top_p = 0.9, .seed = seed});
    std::vector<TokenId> out;
    for (int i = 0; i < 200; ++i) out.push_back(s.Sample(logits));
    return out;
  };
  EXPECT_EQ(draw(42), draw(42));
  EXPECT_NE(draw(42), draw(43));
  const auto seq = draw(7);
  EXPECT_GT(std::set<TokenId>(seq.begin(), seq.end()).size(), 3u);  // really sampling
}

TEST(Sampler, TopPKeepsOnlyTheNucleus) {
  // probabilities 0.5, 0.3, 0.15, 0.05 at temperature 1
  const std::vector<float> logits = {std::log(0.15f), std::log(0.5f), std::log(0.05f), std::log(0.3f)};
  {
    Sampler s(SamplingParams{.temperature = 1.0, .top_p = 0.45, .seed = 1});
    for (int i = 0; i < 500; ++i) ASSERT_EQ(s.Sample(logits), 1);
  }
  {
    Sampler s(SamplingParams{.temperature = 1.0, .top_p = 0.75, .seed = 2});
    std::map<TokenId, int> counts;
    for (int i = 0; i < 4000; ++i) ++counts[s.Sample(logits)];
    EXPECT_EQ(counts.size(), 2u);  // {1, 3}: 0.5 + 0.3 reaches 0.75
    EXPECT_NEAR(counts[1] / 4000.0, 0.5 / 0.8, 0.03);
    EXPECT_NEAR(counts[3] / 4000.0, 0.3 / 0.8, 0.03);
  }
  {
    Sampler s(SamplingParams{.temperature = 1.0, .top_p = 1.0, .seed = 3});
    std::map<TokenId, int> counts;
    for (int i = 0; i < 20000; ++i) ++counts[s.Sample(logits)];
    EXPECT_NEAR(counts[0] / 20000.0, 0.15, 0.015);
    EXPECT_NEAR(counts[2] / 20000.0, 0.05, 0.01);
  }
}

TEST(Sampler, LowTemperatureConcentratesOnTheArgmax) {
  const std::vector<float> logits = {1.0f, 1.5f, 0.0f};
  Sampler s(SamplingParams{.temperature = 0.01, .top_p = 1.0, .seed = 9});
  for (int i = 0; i < 200; ++i) ASSERT_EQ(s.Sample(logits), 1);
}

// Frequencies of `draws` samples from `logits`.
std::map<TokenId, int> Histogram(SamplingParams params, const std::vector<float>& logits, int draws) {
  std::map<TokenId, int> seen;
  for (int i = 0; i < draws; ++i) {
    params.seed = static_cast<uint64_t>(i);
    Sampler s(params);
    ++seen[s.Sample(logits)];
  }
  return seen;
}

TEST(Sampler, TopKKeepsTheKMostProbable) {
  const std::vector<float> logits{3.0f, 2.9f, 2.8f, 0.0f, 2.95f};
  SamplingParams p;
  p.temperature = 1.0;
  p.top_k = 2;
  const auto seen = Histogram(p, logits, 400);
  EXPECT_EQ(seen.size(), 2u);
  EXPECT_TRUE(seen.count(0) && seen.count(4));
}

TEST(Sampler, MinPDropsTokensBelowAFractionOfTheMostProbable) {
  // Probabilities proportional to 1, 0.5, 0.1 (logits ln of them).
  const std::vector<float> logits{0.0f, std::log(0.5f), std::log(0.1f)};
  SamplingParams p;
  p.temperature = 1.0;
  p.min_p = 0.3;
  const auto seen = Histogram(p, logits, 600);
  EXPECT_FALSE(seen.count(2)) << "0.1 < 0.3 x 1";
  ASSERT_TRUE(seen.count(0) && seen.count(1));
  EXPECT_NEAR(seen.at(0) / 600.0, 2.0 / 3.0, 0.07);
}

TEST(Sampler, TopPOverALargeVocabularyMatchesTheFullSort) {
  // 150k tokens, a peaked head: the nucleus is found without sorting them all,
  // and is the same set a full sort gives.
  std::vector<float> logits(150'000);
  std::mt19937_64 gen(5);
  std::normal_distribution<float> noise(0.0f, 1.0f);
  for (float& v : logits) v = noise(gen);
  for (int i = 0; i < 40; ++i) logits[static_cast<size_t>(i) * 3000] = 9.0f + 0.01f * static_cast<float>(i);
  SamplingParams p;
  p.temperature = 1.0;
  p.top_p = 0.5;
  std::vector<std::pair<double, TokenId>> all;
  double total = 0;
  for (size_t i = 0; i < logits.size(); ++i) {
    const double w = std::exp(static_cast<double>(logits[i]) - 9.39);
    all.emplace_back(w, static_cast<TokenId>(i));
    total += w;
  }
  std::sort(all.begin(), all.end(), [](auto& a, auto& b) { return a.first > b.first || (a.first == b.first && a.second < b.second); });
  std::set<TokenId> nucleus;
  double cumulative = 0;
  for (const auto& [w, id] : all) {
    nucleus.insert(id);
    cumulative += w / total;
    if (cumulative >= 0.5) break;
  }
  for (const auto& [id, count] : Histogram(p, logits, 100)) EXPECT_TRUE(nucleus.count(id)) << id;
}

TEST(Sampler, LogitBiasCanForceOrBanATokenEvenWhenGreedy) {
  const std::vector<float> logits{5.0f, 1.0f, 0.0f};
  SamplingParams p;
  p.logit_bias = {{0, -100.0f}, {2, 2.0f}};
  Sampler s(p);
  EXPECT_EQ(s.Sample(logits), 2) << "0 banned; 2 raised above 1";
}

TEST(Sampler, RepetitionPenaltyCoversThePromptAndTheOutput) {
  const std::vector<float> logits{2.0f, 1.9f, 1.8f, -1.0f};
  SamplingParams p;
  p.repetition_penalty = 1.2;  // 2.0 -> 1.67, 1.9 -> 1.58
  const TokenId prompt[] = {0};
  Sampler s(p, prompt);
  EXPECT_EQ(s.Sample(logits), 1) << "the prompt's token 0 is penalised";
  s.Accept(1);
  EXPECT_EQ(s.Sample(logits), 2) << "then the output's token 1 too";
}

TEST(Sampler, PresenceAndFrequencyPenaltiesCountTheOutput) {
  const std::vector<float> logits{2.0f, 1.5f};
  SamplingParams p;
  p.frequency_penalty = 0.2;
  Sampler s(p);
  EXPECT_EQ(s.Sample(logits), 0);
  s.Accept(0);
  s.Accept(0);
  EXPECT_EQ(s.Sample(logits), 0) << "2.0 - 2 x 0.2 = 1.6 > 1.5";
  s.Accept(0);
  EXPECT_EQ(s.Sample(logits), 1) << "2.0 - 3 x 0.2 = 1.4 < 1.5";

  SamplingParams q;
  q.presence_penalty = 0.6;
  Sampler t(q);
  t.Accept(0);
  EXPECT_EQ(t.Sample(logits), 1) << "2.0 - 0.6 < 1.5, once is enough";
}

TEST(StopMatcher, FindsAStopStringSplitAcrossPushes) {
  StopMatcher m({"the end"});
  auto a = m.Push("and that was th");
  EXPECT_EQ(a.text, "and that was ");  // "th" may start the stop string
  EXPECT_FALSE(a.stopped);
  auto b = m.Push("e en");
  EXPECT_EQ(b.text, "");
  auto c = m.Push("d. More");
  EXPECT_TRUE(c.stopped);
  EXPECT_EQ(c.text, "");
  EXPECT_EQ(m.Push("x").text, "");
  EXPECT_EQ(m.Flush(), "");
}

TEST(StopMatcher, ReleasesHeldTextWhenItStopsMatching) {
  StopMatcher m({"abc", "xyz"});
  EXPECT_EQ(m.Push("1ab").text, "1");
  EXPECT_EQ(m.Push("d").text, "abd");
  EXPECT_EQ(m.Push("x").text, "");
  EXPECT_EQ(m.Flush(), "x");
}

TEST(StopMatcher, EarliestStopWinsAndTextBeforeItIsEmitted) {
  StopMatcher m({"World", "lo"});
  auto out = m.Push("Hello World");
  EXPECT_TRUE(out.stopped);
  EXPECT_EQ(out.text, "Hel");
}

TEST(StopMatcher, NoStopsPassesEverythingThrough) {
  StopMatcher m({"", ""});
  EXPECT_EQ(m.Push("abc").text, "abc");
  EXPECT_EQ(m.Flush(), "");
}

}  // namespace
}  // namespace tollgate::local_backend
