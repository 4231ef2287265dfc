// The canonical model's helpers: accumulating events, parameters, UTF-8
// hold-back, random ids.
#include "tollgate/core/chat.hpp"
#include "tollgate/core/parameters.hpp"
#include "tollgate/core/text.hpp"

#include <gtest/gtest.h>

#include <set>

namespace tollgate {
namespace {

TEST(ResponseAccumulator, InterleavedFragmentsLandByIndex) {
  ResponseAccumulator acc;
  acc.Add(ReasoningDelta{0, 0, ReasoningPart::Kind::kText, "think", "", "", "anthropic-claude-v1", ""});
  acc.Add(ToolCallDelta{0, 1, "call_b", "b", "", ""});
  acc.Add(ToolCallDelta{0, 0, "call_a", "a", "{\"x\":", ""});
  acc.Add(ReasoningDelta{0, 0, ReasoningPart::Kind::kText, "ing", "sig", "", "", ""});
  acc.Add(ToolCallDelta{0, 0, "", "", "1}", ""});
  acc.Add(TextDelta{1, "second choice"});
  acc.Add(FinishDelta{0, FinishReason::kToolCalls, "tool_use"});
  acc.Add(UsageDelta{Usage{10, 5, 0, 0, 0}});
  acc.Add(UsageDelta{Usage{10, 7, 2, 1, 3}});  // cumulative: replaces
  const ChatResponse r = acc.Take();
  ASSERT_EQ(r.choices.size(), 2u);
  const ChoiceResult& c = r.choices[0];
  ASSERT_EQ(c.reasoning.size(), 1u);
  EXPECT_EQ(c.reasoning[0].text, "thinking");
  EXPECT_EQ(c.reasoning[0].signature, "sig");
  EXPECT_EQ(c.reasoning[0].format, "anthropic-claude-v1");
  ASSERT_EQ(c.tool_calls.size(), 2u);
  EXPECT_EQ(c.tool_calls[0].arguments, "{\"x\":1}");
  EXPECT_EQ(c.tool_calls[1].arguments, "{}") << "a call without fragments has empty arguments";
  EXPECT_EQ(c.finish, FinishReason::kToolCalls);
  EXPECT_EQ(c.native_finish_reason, "tool_use");
  EXPECT_EQ(r.choices[1].text, "second choice");
  EXPECT_EQ(r.usage, (Usage{10, 7, 2, 1, 3}));
}

TEST(ResponseAccumulator, HostileIndexesAreIgnored) {
  ResponseAccumulator acc;
  acc.Add(TextDelta{1 << 30, "x"});
  acc.Add(TextDelta{-1, "x"});
  acc.Add(ToolCallDelta{0, 1 << 30, "id", "f", "{}", ""});
  acc.Add(ReasoningDelta{0, -5, ReasoningPart::Kind::kText, "r", "", "", "", ""});
  acc.Add(FinishDelta{ResponseAccumulator::kMaxChoices, FinishReason::kStop, ""});
  const ChatResponse r = acc.Take();
  ASSERT_EQ(r.choices.size(), 1u);  // an empty choice 0, nothing else
  EXPECT_TRUE(r.choices[0].tool_calls.empty());
  EXPECT_TRUE(r.choices[0].reasoning.empty());
}

TEST(ResponseAccumulator, ReplayingTheEventsOfAResponseRebuildsIt) {
  ChatResponse r;
  r.choices.resize(1);
  r.choices[0].text = "hi";
  r.choices[0].reasoning.push_back(ReasoningPart{ReasoningPart::Kind::kEncrypted, "", "", "blob", "x", "id1"});
  r.choices[0].tool_calls.push_back(ToolCallPart{"call_1", "f", "{\"a\":1}", "ts", {}});
  r.choices[0].finish = FinishReason::kToolCalls;
  r.usage = Usage{3, 4, 0, 0, 0};
  ResponseAccumulator acc;
  for (const auto& e : ResponseEvents(r)) acc.Add(e);
  const ChatResponse back = acc.Take();
  EXPECT_EQ(back.choices[0].text, "hi");
  EXPECT_EQ(back.choices[0].reasoning[0].data, "blob");
  EXPECT_EQ(back.choices[0].tool_calls[0].thought_signature, "ts");
  EXPECT_EQ(back.usage, r.usage);
}

TEST(Parameters, UsedParametersAreWhatTheRequestSets) {
  ChatRequest r;
  EXPECT_TRUE(ParametersUsed(r).empty());
  r.temperature = 0.5;
  r.top_k = 3;
  r.n = 1;  // n = 1 is the default: not a parameter in use
  r.tool_choice = ToolChoice{};  // auto without tools: nothing
  r.messages.push_back(Message{Role::kUser, {TextPart{"x", {}}, ImagePart{"https://e/x.png", "", {}}}, {}});
  EXPECT_EQ(ParametersUsed(r), (ParameterSet{Param::kTemperature, Param::kTopK, Param::kImageInput}));
  r.response_format = ResponseFormat{ResponseFormat::Type::kJsonSchema, "s", "", {}, true};
  EXPECT_TRUE(ParametersUsed(r).Has(Param::kStructuredOutputs));
  EXPECT_FALSE(ParametersUsed(r).Has(Param::kResponseFormat));
}

TEST(Parameters, DroppingClearsOnlyTheDroppedFieldsAndNeverEssentials) {
  ChatRequest r;
  r.temperature = 0.5;
  r.top_k = 3;
  r.seed = 1;
  r.tools.push_back(ToolDefinition{"f", "", {}, {}, {}});
  DropParameters(r, ParameterSet{Param::kTopK, Param::kSeed, Param::kTools});
  EXPECT_FALSE(r.top_k);
  EXPECT_FALSE(r.seed);
  EXPECT_EQ(r.temperature, 0.5);
  EXPECT_EQ(r.tools.size(), 1u);
  EXPECT_EQ((ParameterSet{Param::kTopK, Param::kLogprobs}).Names(), "top_k, logprobs");
}

TEST(Utf8Stitcher, HoldsBackASplitCharacterUntilItCompletes) {
  const std::string emoji = "\xF0\x9F\x9A\x80";  // U+1F680
  Utf8Stitcher s;
  EXPECT_EQ(s.Push("a" + emoji.substr(0, 1)), "a");
  EXPECT_EQ(s.Push(emoji.substr(1, 2)), "");
  EXPECT_EQ(s.Push(emoji.substr(3) + "b"), emoji + "b");
  EXPECT_TRUE(s.empty());
  EXPECT_EQ(s.Push("\xE6\x97"), "");
  EXPECT_EQ(s.Flush(), "\xEF\xBF\xBD");
}

TEST(ValidUtf8, ReplacesEveryByteOutsideAWellFormedSequence) {
  EXPECT_EQ(ValidUtf8("plain \xE4\xBD\xA0"), "plain \xE4\xBD\xA0");
  EXPECT_EQ(ValidUtf8("a\xE4\xBD" "b"), "a\xEF\xBF\xBD\xEF\xBF\xBD" "b");      // a cut character
  EXPECT_EQ(ValidUtf8("\xC0\xAF"), "\xEF\xBF\xBD\xEF\xBF\xBD");            // overlong '/'
  EXPECT_EQ(ValidUtf8("\xED\xA0\x80"), "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD");  // a surrogate
  EXPECT_EQ(ValidUtf8("\xF4\x90\x80\x80").size(), 12u);                    // past U+10FFFF
}

TEST(RandomBase62, IsAlphanumericAndDoesNotRepeat) {
  std::set<std::string> seen;
  for (int i = 0; i < 1000; ++i) {
    std::string id = RandomBase62(20);
    ASSERT_EQ(id.size(), 20u);
    for (char c : id) ASSERT_TRUE(std::isalnum(static_cast<unsigned char>(c)));
    seen.insert(std::move(id));
  }
  EXPECT_EQ(seen.size(), 1000u);
}

}  // namespace
}  // namespace tollgate
