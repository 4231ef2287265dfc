#include "tollgate/core/parameters.hpp"

#include <gtest/gtest.h>

namespace tollgate {
namespace {

TEST(Parameters, EveryNameReadsBackAsItsParameter) {
  for (unsigned i = 0; i < static_cast<unsigned>(Param::kCount_); ++i) {
    const Param p = static_cast<Param>(i);
    EXPECT_EQ(ParamFromName(ParamName(p)), p) << ParamName(p);
  }
}

TEST(Parameters, OtherSpellingsOfTheSameFieldAndUnknownNames) {
  EXPECT_EQ(ParamFromName("max_completion_tokens"), Param::kMaxTokens);
  EXPECT_EQ(ParamFromName("reasoning_effort"), Param::kReasoning);
  EXPECT_EQ(ParamFromName("image_input"), Param::kImageInput);
  EXPECT_FALSE(ParamFromName("Temperature"));  // exact, as OpenRouter lists them
  EXPECT_FALSE(ParamFromName("top_a"));
  EXPECT_EQ(ParamFromName("logit_bias"), Param::kLogitBias);
  EXPECT_EQ(ParamFromName("min_p"), Param::kMinP);
  EXPECT_FALSE(ParamFromName(""));
  EXPECT_FALSE(ParamFromName("unknown"));  // what ParamName prints for no parameter
}

}  // namespace
}  // namespace tollgate
