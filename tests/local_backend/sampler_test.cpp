#include "tollgate/local_backend/sampler.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <map>
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
