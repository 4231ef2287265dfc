#include "tollgate/core/money.hpp"

#include <gtest/gtest.h>

namespace tollgate {
namespace {

TEST(Money, ParsesUsdExactly) {
  EXPECT_EQ(ParseUsd("12").value().nano_usd, 12'000'000'000);
  EXPECT_EQ(ParseUsd("0.5").value().nano_usd, 500'000'000);
  EXPECT_EQ(ParseUsd("0.000000001").value().nano_usd, 1);
  EXPECT_EQ(ParseUsd(".25").value().nano_usd, 250'000'000);
}

TEST(Money, RejectsBadAmounts) {
  EXPECT_FALSE(ParseUsd(""));
  EXPECT_FALSE(ParseUsd("-1"));
  EXPECT_FALSE(ParseUsd("1e3"));
  EXPECT_FALSE(ParseUsd("1."));
  EXPECT_FALSE(ParseUsd("0.0000000001"));  // 10 decimals: not exact in nano-USD
  EXPECT_FALSE(ParseUsd("99999999999999999999"));
  EXPECT_EQ(ParseUsd("abc").error().code, ErrorCode::kInvalidArgument);
}

TEST(Money, PricePerMillionIsFemtoUsdPerToken) {
  EXPECT_EQ(ParsePricePerMillion("0.15").value().femto_usd_per_token, 150'000'000);
  EXPECT_EQ(ParsePricePerMillion("2.50").value().femto_usd_per_token, 2'500'000'000);
  EXPECT_EQ(FormatUsdPerToken(ParsePricePerMillion("0.15").value()), "0.00000015");
  EXPECT_EQ(FormatUsdPerToken(ParsePricePerMillion("0").value()), "0");
  EXPECT_EQ(FormatUsdPerToken(ParsePricePerMillion("60").value()), "0.00006");
}

TEST(Money, FormatsUsdTrimmed) {
  EXPECT_EQ(FormatUsd(Money{0}), "0");
  EXPECT_EQ(FormatUsd(Money{1}), "0.000000001");
  EXPECT_EQ(FormatUsd(Money{5'000'000'000}), "5");
  EXPECT_EQ(FormatUsd(Money{-1'500'000'000}), "-1.5");
}

TEST(Money, CallCostFollowsOpenAiSemantics) {
  Pricing p{ParsePricePerMillion("0.15").value(), ParsePricePerMillion("0.60").value(),
            ParsePricePerMillion("0.075").value()};
  // 1000 prompt (200 cached), 500 completion:
  // 800*150e6 + 200*75e6 + 500*600e6 = 120e9 + 15e9 + 300e9 = 435e9 femto = 435000 nano.
  EXPECT_EQ(CallCost(p, 1000, 200, 500).nano_usd, 435'000);
}

TEST(Money, CallCostRoundsHalfUpToNanoUsd) {
  Pricing p{TokenPrice{1}, TokenPrice{0}, TokenPrice{1}};  // 1 femto-USD per token
  EXPECT_EQ(CallCost(p, 499'999, 0, 0).nano_usd, 0);
  EXPECT_EQ(CallCost(p, 500'000, 0, 0).nano_usd, 1);
  EXPECT_EQ(CallCost(p, 1'499'999, 0, 0).nano_usd, 1);
}

TEST(Money, CallCostDoesNotOverflowOnLargeInputs) {
  Pricing p{ParsePricePerMillion("1000").value(), ParsePricePerMillion("1000").value(),
            ParsePricePerMillion("1000").value()};
  // 100M tokens at $1000/M = $100000 = 1e14 nano-USD; the femto product is 1e20 (> int64).
  EXPECT_EQ(CallCost(p, 100'000'000, 0, 0).nano_usd, 100'000'000'000'000);
}

TEST(Money, CallCostIsNeverNegative) {
  Pricing p{ParsePricePerMillion("1.5").value(), ParsePricePerMillion("3.25").value(),
            ParsePricePerMillion("0.5").value()};
  // An upstream claiming more cached than prompt tokens must not mint credit.
  EXPECT_EQ(CallCost(p, 1000, 900'000, 0), CallCost(p, 1000, 1000, 0));
  EXPECT_GE(CallCost(p, -5, -5, -5).nano_usd, 0);
  EXPECT_EQ(CallCost(p, INT64_MAX, 0, INT64_MAX).nano_usd, INT64_MAX);
}

}  // namespace
}  // namespace tollgate

namespace tollgate {
namespace {

TEST(Money, CacheWritesArePricedApart) {
  Pricing p;
  p.prompt = TokenPrice{3'000'000'000};         // $3 / M
  p.completion = TokenPrice{15'000'000'000};    // $15 / M
  p.cached_prompt = TokenPrice{300'000'000};    // $0.30 / M
  p.cache_write = TokenPrice{3'750'000'000};    // $3.75 / M
  Usage u{1000, 100, 600, 0, 300};  // 100 plain prompt, 600 read, 300 written
  EXPECT_EQ(CallCost(p, u).nano_usd, 100 * 3000 + 600 * 300 + 300 * 3750 + 100 * 15000);
  u.cache_write_tokens = 5000;  // more than is left of prompt: clamped
  EXPECT_EQ(CallCost(p, u).nano_usd, 600 * 300 + 400 * 3750 + 100 * 15000);
}

}  // namespace
}  // namespace tollgate
