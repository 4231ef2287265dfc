#include "tollgate/local_backend/tokenizer.hpp"

#include "tollgate/local_backend/gguf.hpp"
#include "test_model.hpp"

#include <gtest/gtest.h>

namespace tollgate::local_backend {
namespace {

class TokenizerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    // No assertions here: GoogleTest 1.12 reports every test of a suite whose
    // SetUpTestSuite failed as skipped. SetUp fails each test instead.
    auto file = GgufFile::Open(testing::ModelPath());
    if (!file) return;
    auto tok = Tokenizer::FromGguf(**file);
    if (tok) tokenizer_ = new Tokenizer(std::move(*tok));
  }
  void SetUp() override { ASSERT_NE(tokenizer_, nullptr) << "cannot load " << testing::ModelPath() << testing::ModelHint(); }
  static void TearDownTestSuite() {
    delete tokenizer_;
    tokenizer_ = nullptr;
  }
  static const Tokenizer& tok() { return *tokenizer_; }
  static inline Tokenizer* tokenizer_ = nullptr;
};

TEST_F(TokenizerTest, ReadsSpecialIdsAndFlags) {
  EXPECT_EQ(tok().vocab_size(), 512);
  EXPECT_EQ(tok().bos_id(), 1);
  EXPECT_EQ(tok().eos_id(), 2);
  EXPECT_EQ(tok().unk_id(), 0);
  EXPECT_TRUE(tok().add_bos());
  EXPECT_TRUE(tok().add_space_prefix());
  EXPECT_EQ(tok().Type(1), TokenType::kControl);
  EXPECT_EQ(tok().Type(3 + 0x41), TokenType::kByte);
}

TEST_F(TokenizerTest, EncodesAllReferencePromptsExactly) {
  for (const auto& ref : testing::LoadReference()) {
    EXPECT_EQ(tok().Encode(ref.prompt, /*add_bos=*/true), ref.prompt_ids) << '"' << ref.prompt << '"';
  }
  EXPECT_EQ(tok().Encode("Once upon a time", true), (std::vector<TokenId>{1, 403, 407, 261, 378}));
  EXPECT_EQ(tok().Encode("Once upon a time", false), (std::vector<TokenId>{403, 407, 261, 378}));
  EXPECT_EQ(tok().Encode("", true), (std::vector<TokenId>{1}));
  EXPECT_TRUE(tok().Encode("", false).empty());
}

TEST_F(TokenizerTest, FallsBackToByteTokensOutsideTheVocabulary) {
  // U+732B is not in the 512-piece vocabulary: its UTF-8 bytes E7 8C AB become
  // <0xE7> <0x8C> <0xAB>, ids 3 + byte.
  const std::vector<TokenId> ids = tok().Encode("\xE7\x8C\xAB", false);
  ASSERT_GE(ids.size(), 3u);
  const std::vector<TokenId> tail(ids.end() - 3, ids.end());
  EXPECT_EQ(tail, (std::vector<TokenId>{3 + 0xE7, 3 + 0x8C, 3 + 0xAB}));
  EXPECT_EQ(tok().Text(3 + 0xE7), "<0xE7>");
  EXPECT_EQ(tok().Decode(ids), " \xE7\x8C\xAB");  // no BOS, so the prefix space stays
  // Invalid UTF-8 in the input also goes through byte fallback.
  const std::vector<TokenId> raw = tok().Encode("a\xFF", false);
  EXPECT_EQ(raw.back(), 3 + 0xFF);
}

TEST_F(TokenizerTest, DecodeRoundTripsText) {
  for (const std::string text :
       {"Once upon a time", "Tom and Lily were friends", "The little dog", "Hello,  world!\nNew line\ttab",
        "caf\xC3\xA9 \xE7\x8C\xAB \xF0\x9F\x98\x80 ok", "  leading spaces", "trailing "}) {
    EXPECT_EQ(tok().Decode(tok().Encode(text, true)), text) << text;
  }
}

TEST_F(TokenizerTest, DecodeDropsOnlyTheSpaceRightAfterBos) {
  EXPECT_EQ(tok().Decode({1, 403, 407}), "Once upon");
  EXPECT_EQ(tok().Decode({403, 407}), " Once upon");
  EXPECT_EQ(tok().Piece(403), " Once");
  EXPECT_EQ(tok().Piece(1), "");
  EXPECT_EQ(tok().Piece(2), "");
  EXPECT_EQ(tok().Piece(3 + 'A'), "A");
  EXPECT_EQ(tok().Piece(-1), "");
  EXPECT_EQ(tok().Piece(512), "");
}

TEST_F(TokenizerTest, IncrementalDetokenizerHoldsBackPartialCharacters) {
  IncrementalDetokenizer detok(tok(), /*previous=*/1);
  EXPECT_EQ(detok.Push(403), "Once");  // leading space dropped after BOS
  EXPECT_EQ(detok.Push(407), " upon");
  EXPECT_EQ(detok.Push(3 + 0xE7), "");
  EXPECT_EQ(detok.Push(3 + 0x8C), "");
  EXPECT_EQ(detok.Push(3 + 0xAB), "\xE7\x8C\xAB");
  EXPECT_EQ(detok.Push(3 + 0xF0), "");
  EXPECT_EQ(detok.Flush(), "\xEF\xBF\xBD");  // an unfinished character at the end
  EXPECT_EQ(detok.Flush(), "");
}

TEST(Utf8, TakeCompleteUtf8SplitsAndRepairs) {
  std::string bytes = "ab\xE2\x82";
  EXPECT_EQ(TakeCompleteUtf8(bytes), "ab");
  EXPECT_EQ(bytes, "\xE2\x82");
  bytes += "\xAC!";
  EXPECT_EQ(TakeCompleteUtf8(bytes), "\xE2\x82\xAC!");
  EXPECT_TRUE(bytes.empty());
  bytes = "\x80x\xC3(\xED\xA0\x80";  // stray continuation, broken 2-byte, surrogate
  EXPECT_EQ(TakeCompleteUtf8(bytes), "\xEF\xBF\xBDx\xEF\xBF\xBD(\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD");
  EXPECT_TRUE(bytes.empty());
}

}  // namespace
}  // namespace tollgate::local_backend
