#include "../../local_backend/src/byte_level_bpe.hpp"

#include <gtest/gtest.h>

#include <set>
#include <string>
#include <vector>

namespace tollgate::local_backend::internal {
namespace {

TEST(ByteLevel, MapsEveryByteToADistinctSymbol) {
  // GPT-2 encoder.py bytes_to_unicode: printable bytes map to themselves.
  EXPECT_EQ(ByteToCodepoint('A'), 0x41u);
  EXPECT_EQ(ByteToCodepoint(0xE9), 0xE9u);
  EXPECT_EQ(ByteToCodepoint(0x00), 0x100u);
  EXPECT_EQ(ByteToCodepoint(' '), 0x120u);   // "Ġ"
  EXPECT_EQ(ByteToCodepoint('\n'), 0x10Au);  // "Ċ"
  EXPECT_EQ(ByteToCodepoint(0xAD), 0x143u);  // the last of the 68 remapped bytes
  std::set<uint32_t> seen;
  for (int b = 0; b < 256; ++b) seen.insert(ByteToCodepoint(static_cast<uint8_t>(b)));
  EXPECT_EQ(seen.size(), 256u);
}

TEST(ByteLevel, DecodesSymbolsBackToBytes) {
  std::string all;
  for (int b = 0; b < 256; ++b) all += static_cast<char>(b);
  std::string symbols;
  AppendByteLevel(all, symbols);
  EXPECT_EQ(DecodeByteLevel(symbols), all);
  EXPECT_EQ(DecodeByteLevel("\xC4\xA0hello"), " hello");
  // Characters outside the alphabet (here U+4F60 and a plain space) pass through.
  EXPECT_EQ(DecodeByteLevel("\xE4\xBD\xA0 x"), "\xE4\xBD\xA0 x");
}

TEST(BpeMerges, AppliesByRankAndSkipsUnbuildableMerges) {
  // Vocabulary: a=0 b=1 c=2 ab=3 bc=4 abc=5.
  const std::vector<std::string> vocab = {"a", "b", "c", "ab", "bc", "abc"};
  auto lookup = [&](std::string_view s) -> TokenId {
    for (size_t i = 0; i < vocab.size(); ++i) {
      if (vocab[i] == s) return static_cast<TokenId>(i);
    }
    return -1;
  };
  auto merges = BpeMerges::Create({"b c", "a bc", "x y", "a b"}, lookup);
  ASSERT_TRUE(merges);
  EXPECT_EQ(merges->size(), 3u);  // "x y" cannot apply
  std::vector<TokenId> ids = {0, 1, 2};
  merges->Apply(ids);
  EXPECT_EQ(ids, (std::vector<TokenId>{5}));
  ids = {0, 1, -1, 0, 1};
  merges->Apply(ids);
  EXPECT_EQ(ids, (std::vector<TokenId>{3, -1, 3}));
  EXPECT_FALSE(BpeMerges::Create({"ab"}, lookup));
}

}  // namespace
}  // namespace tollgate::local_backend::internal
