// The pre-tokenizer presets against the splits Hugging Face's tokenizers
// produce (recorded with @lenml/tokenizers 3.7.2 on the Qwen3, Llama 3 and
// DeepSeek V3 tokenizer.json files: tokenizer.pre_tokenizer(text), mapped
// back from byte-level symbols to bytes).
#include "../../local_backend/src/regex_splitter.hpp"

#include <gtest/gtest.h>

#include <string>
#include <thread>
#include <vector>

namespace tollgate::local_backend::internal {
namespace {

std::vector<std::string> SplitWith(std::string_view pre, std::string_view text) {
  auto preset = RegexSplitter::PresetFor(pre);
  EXPECT_TRUE(preset) << pre;
  if (!preset) return {};
  auto splitter = RegexSplitter::Create(preset->patterns);
  EXPECT_TRUE(splitter) << (splitter ? "" : splitter.error().message);
  if (!splitter) return {};
  std::vector<std::string_view> pieces;
  splitter->Split(text, pieces);
  return {pieces.begin(), pieces.end()};
}

using Pieces = std::vector<std::string>;

TEST(RegexSplitter, Qwen2SplitsLikeHuggingFace) {
  EXPECT_EQ(SplitWith("qwen2", "Hello world"), (Pieces{"Hello", " world"}));
  EXPECT_EQ(SplitWith("qwen2", "I'm it's THEY'RE we'VE"),
            (Pieces{"I", "'m", " it", "'s", " THEY", "'RE", " we", "'VE"}));
  EXPECT_EQ(SplitWith("qwen2", "12345 67"), (Pieces{"1", "2", "3", "4", "5", " ", "6", "7"}));
  EXPECT_EQ(SplitWith("qwen2", "a  b   \n\n c\t\td "), (Pieces{"a", " ", " b", "   \n\n", " c", "\t", "\td", " "}));
  EXPECT_EQ(SplitWith("qwen2", "你好世界，こんにちは！カタカナ"),
            (Pieces{"你好世界", "，こんにちは", "！カタカナ"}));
  EXPECT_EQ(SplitWith("qwen2", "x=foo(1);\n  return y;"),
            (Pieces{"x", "=foo", "(", "1", ");\n", " ", " return", " y", ";"}));
  EXPECT_EQ(SplitWith("qwen2", "\xF0\x9F\x98\x80 ok!!"), (Pieces{"\xF0\x9F\x98\x80", " ok", "!!"}));
  EXPECT_EQ(SplitWith("qwen2", "'hello"), (Pieces{"'hello"}));
  EXPECT_EQ(SplitWith("qwen2", " $$abc"), (Pieces{" $$", "abc"}));
  EXPECT_EQ(SplitWith("qwen2", "\r\n\r\nz"), (Pieces{"\r\n\r\n", "z"}));
  EXPECT_EQ(SplitWith("qwen2", "   "), (Pieces{"   "}));
  EXPECT_EQ(SplitWith("deepseek-r1-qwen", "3.14"), (Pieces{"3", ".", "1", "4"}));
}

TEST(RegexSplitter, Llama3GroupsDigitsByThree) {
  EXPECT_EQ(SplitWith("llama-bpe", "12345 67"), (Pieces{"123", "45", " ", "67"}));
  EXPECT_EQ(SplitWith("llama-bpe", "3.14159"), (Pieces{"3", ".", "141", "59"}));
  EXPECT_EQ(SplitWith("llama-bpe", "I'm it's THEY'RE we'VE"),
            (Pieces{"I", "'m", " it", "'s", " THEY", "'RE", " we", "'VE"}));
  EXPECT_EQ(SplitWith("llama-bpe", "a  b   \n\n c\t\td "), (Pieces{"a", " ", " b", "   \n\n", " c", "\t", "\td", " "}));
  auto preset = RegexSplitter::PresetFor("llama3");
  ASSERT_TRUE(preset);
  EXPECT_TRUE(preset->ignore_merges);
  EXPECT_TRUE(preset->add_bos);
}

TEST(RegexSplitter, DeepSeekV3AppliesThreeExpressionsInSequence) {
  EXPECT_EQ(SplitWith("deepseek-v3", "12345 67"), (Pieces{"123", "45", " ", "67"}));
  EXPECT_EQ(SplitWith("deepseek-v3", "你好世界，こんにちは！カタカナ"),
            (Pieces{"你好世界", "，", "こんにちは", "！", "カタカナ"}));
  EXPECT_EQ(SplitWith("deepseek-v3", "x=foo(1);\n  return y;"),
            (Pieces{"x", "=foo", "(", "1", ");\n", " ", " return", " y", ";"}));
  EXPECT_EQ(SplitWith("deepseek-v3", "I'm it's"), (Pieces{"I", "'m", " it", "'s"}));
  EXPECT_EQ(SplitWith("deepseek-v3", "3.14159"), (Pieces{"3", ".", "141", "59"}));
}

TEST(RegexSplitter, Gpt2KeepsTheOriginalExpression) {
  EXPECT_EQ(SplitWith("gpt-2", "Hello world's 12345!!"), (Pieces{"Hello", " world", "'s", " 12345", "!!"}));
}

TEST(RegexSplitter, PiecesCoverInvalidUtf8) {
  // Invalid bytes never match; they stay as their own pieces and nothing is lost.
  const std::string text = "ab\xFF\xFE" "cd \xC3";
  const Pieces pieces = SplitWith("qwen2", text);
  std::string joined;
  for (const auto& p : pieces) {
    EXPECT_FALSE(p.empty());
    joined += p;
  }
  EXPECT_EQ(joined, text);
  EXPECT_EQ(pieces.front(), "ab");
}

TEST(RegexSplitter, LongRunsSplitWithoutFailing) {
  const std::string spaces(200000, ' ');
  EXPECT_EQ(SplitWith("qwen2", spaces + "x"), (Pieces{spaces.substr(1), " x"}));
  const std::string digits(30000, '7');
  EXPECT_EQ(SplitWith("llama-bpe", digits).size(), 10000u);
}

TEST(RegexSplitter, RejectsUnknownPreTokenizers) {
  auto preset = RegexSplitter::PresetFor("tekken");
  ASSERT_FALSE(preset);
  EXPECT_NE(preset.error().message.find("tekken"), std::string::npos);
  EXPECT_NE(preset.error().message.find("qwen2"), std::string::npos);  // lists the supported names
  EXPECT_FALSE(RegexSplitter::PresetFor(""));
  EXPECT_FALSE(RegexSplitter::Create({"(unclosed"}));
}

TEST(RegexSplitter, SplitsConcurrently) {
  auto preset = RegexSplitter::PresetFor("deepseek-v3");
  ASSERT_TRUE(preset);
  auto splitter = RegexSplitter::Create(preset->patterns);
  ASSERT_TRUE(splitter);
  const std::string text = "Hello 你好 12345, it's fine!\n\n  ok";
  std::vector<std::string_view> expected;
  splitter->Split(text, expected);
  std::vector<std::thread> threads;
  std::vector<int> mismatches(8, 0);
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 2000; ++i) {
        std::vector<std::string_view> got;
        splitter->Split(text, got);
        if (got != expected) ++mismatches[t];
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(mismatches, std::vector<int>(8, 0));
}

}  // namespace
}  // namespace tollgate::local_backend::internal
