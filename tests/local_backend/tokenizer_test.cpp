#include "tollgate/local_backend/tokenizer.hpp"

#include "tollgate/local_backend/gguf.hpp"
#include "test_model.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

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

TEST_F(TokenizerTest, ParsesControlTokensOnlyWhenAsked) {
  EXPECT_EQ(tok().kind(), TokenizerKind::kSentencePiece);
  EXPECT_EQ(tok().end_of_generation_ids(), (std::vector<TokenId>{2}));
  EXPECT_TRUE(tok().IsEndOfGeneration(2));
  EXPECT_FALSE(tok().IsEndOfGeneration(1));
  const std::vector<TokenId> plain = tok().Encode("Once</s>", EncodeOptions{.add_special = false});
  EXPECT_EQ(std::count(plain.begin(), plain.end(), 2), 0);
  EXPECT_EQ(tok().Decode(plain), " Once</s>");
  // Parsed, "</s>" is EOS, and the text after a special token gets its own
  // space prefix (llama.cpp is_prev_special).
  const std::vector<TokenId> parsed =
      tok().Encode("Once</s>Once", EncodeOptions{.add_special = true, .parse_special = true});
  EXPECT_EQ(parsed, (std::vector<TokenId>{1, 403, 2, 403}));
  EXPECT_EQ(tok().Decode(parsed), "Once Once");
  EXPECT_EQ(tok().Decode(parsed, /*render_special=*/true), "<s>Once</s> Once");
  EXPECT_EQ(tok().Find("<s>"), std::optional<TokenId>(1));
  EXPECT_FALSE(tok().Find("no such piece"));
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


// --- Byte-level BPE with hand-built vocabularies -----------------------------

// GPT-2 bytes_to_unicode, written out independently of the engine's table.
std::string Sym(std::string_view bytes) {
  std::string out;
  for (char ch : bytes) {
    const auto b = static_cast<unsigned char>(ch);
    uint32_t cp = b;
    if (!((b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE))) {
      uint32_t n = 0;
      for (unsigned x = 0; x < b; ++x) {
        if (!((x >= '!' && x <= '~') || (x >= 0xA1 && x <= 0xAC) || (x >= 0xAE))) ++n;
      }
      cp = 256 + n;
    }
    if (cp < 0x80) {
      out += static_cast<char>(cp);
    } else {
      out += static_cast<char>(0xC0 | (cp >> 6));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    }
  }
  return out;
}

// Ids 0..255 are the byte symbols (id == byte value); each merge (raw bytes)
// adds its result token after them, in order; `extra` tokens (texts as
// stored, with their types) follow.
struct HandVocab {
  TokenizerSpec spec;
  TokenId Id(std::string_view raw) const {
    const std::string s = Sym(raw);
    for (size_t i = 0; i < spec.tokens.size(); ++i) {
      if (spec.tokens[i] == s) return static_cast<TokenId>(i);
    }
    ADD_FAILURE() << "no token for '" << raw << "'";
    return -1;
  }
  TokenId Added(std::string_view text) const {
    for (size_t i = 0; i < spec.tokens.size(); ++i) {
      if (spec.tokens[i] == text) return static_cast<TokenId>(i);
    }
    ADD_FAILURE() << "no token '" << text << "'";
    return -1;
  }
};

HandVocab MakeVocab(std::string pre, const std::vector<std::pair<std::string, std::string>>& merges,
                    const std::vector<std::pair<std::string, TokenType>>& extra = {},
                    const std::vector<std::string>& plain_tokens = {}) {
  HandVocab v;
  v.spec.model = "gpt2";
  v.spec.pre = std::move(pre);
  for (int b = 0; b < 256; ++b) v.spec.tokens.push_back(Sym(std::string(1, static_cast<char>(b))));
  for (const auto& [l, r] : merges) {
    v.spec.merges.push_back(Sym(l) + " " + Sym(r));
    const std::string joined = Sym(l + r);
    if (std::find(v.spec.tokens.begin(), v.spec.tokens.end(), joined) == v.spec.tokens.end()) {
      v.spec.tokens.push_back(joined);
    }
  }
  for (const auto& raw : plain_tokens) v.spec.tokens.push_back(Sym(raw));
  v.spec.types.assign(v.spec.tokens.size(), TokenType::kNormal);
  for (const auto& [text, type] : extra) {
    v.spec.tokens.push_back(text);
    v.spec.types.push_back(type);
  }
  return v;
}

Tokenizer Build(TokenizerSpec spec) {
  auto t = Tokenizer::FromSpec(std::move(spec));
  EXPECT_TRUE(t) << (t ? "" : t.error().message);
  if (!t) std::abort();
  return std::move(*t);
}

constexpr EncodeOptions kPlain{.add_special = false, .parse_special = false};

TEST(ByteLevelTokenizer, EmitsOneTokenPerByteWithoutMerges) {
  const HandVocab v = MakeVocab("qwen2", {});
  const Tokenizer t = Build(v.spec);
  EXPECT_EQ(t.kind(), TokenizerKind::kByteLevelBpe);
  EXPECT_EQ(t.pre(), "qwen2");
  EXPECT_EQ(t.Encode("h\xC3\xA9!", kPlain), (std::vector<TokenId>{'h', 0xC3, 0xA9, '!'}));
  EXPECT_EQ(t.Text(' '), "\xC4\xA0");  // "Ġ"
  EXPECT_EQ(t.Text('\n'), "\xC4\x8A");  // "Ċ"
  EXPECT_EQ(t.Piece(' '), " ");
  EXPECT_EQ(t.Piece(0xC3), "\xC3");  // a lone byte of a UTF-8 sequence
  EXPECT_TRUE(t.Encode("", EncodeOptions{}).empty());
}

TEST(ByteLevelTokenizer, MergesLowestRankFirst) {
  {
    const HandVocab v = MakeVocab("qwen2", {{"b", "c"}, {"a", "b"}});
    const Tokenizer t = Build(v.spec);
    EXPECT_EQ(t.Encode("abc", kPlain), (std::vector<TokenId>{v.Id("a"), v.Id("bc")}));
  }
  {
    const HandVocab v = MakeVocab("qwen2", {{"a", "b"}, {"b", "c"}});
    const Tokenizer t = Build(v.spec);
    EXPECT_EQ(t.Encode("abc", kPlain), (std::vector<TokenId>{v.Id("ab"), v.Id("c")}));
  }
  {
    const HandVocab v = MakeVocab("qwen2", {{"h", "e"}, {"l", "l"}, {"he", "ll"}, {"hell", "o"}, {" ", "w"}});
    const Tokenizer t = Build(v.spec);
    EXPECT_EQ(t.Encode("hello world", kPlain),
              (std::vector<TokenId>{v.Id("hello"), v.Id(" w"), 'o', 'r', 'l', 'd'}));
  }
}

TEST(ByteLevelTokenizer, BreaksRankTiesLeftmost) {
  const HandVocab v = MakeVocab("qwen2", {{"a", "a"}});
  const Tokenizer t = Build(v.spec);
  EXPECT_EQ(t.Encode("aaa", kPlain), (std::vector<TokenId>{v.Id("aa"), 'a'}));
  EXPECT_EQ(t.Encode("aaaaa", kPlain), (std::vector<TokenId>{v.Id("aa"), v.Id("aa"), 'a'}));
}

TEST(ByteLevelTokenizer, NeverMergesAcrossPreTokens) {
  // "o " would merge first, but "go on" pre-tokenizes to "go", " on".
  const HandVocab v = MakeVocab("qwen2", {{"o", " "}, {" ", "o"}});
  const Tokenizer t = Build(v.spec);
  EXPECT_EQ(t.Encode("go on", kPlain), (std::vector<TokenId>{'g', 'o', v.Id(" o"), 'n'}));
  // Qwen splits digits one by one; Llama 3 by three.
  const HandVocab d = MakeVocab("qwen2", {{"1", "2"}, {"12", "3"}});
  EXPECT_EQ(Build(d.spec).Encode("1234", kPlain), (std::vector<TokenId>{'1', '2', '3', '4'}));
  HandVocab l = MakeVocab("llama-bpe", {{"1", "2"}, {"12", "3"}});
  l.spec.add_bos = false;  // this vocabulary has no BOS token
  EXPECT_EQ(Build(l.spec).Encode("1234", EncodeOptions{.add_special = false}),
            (std::vector<TokenId>{l.Id("123"), '4'}));
}

TEST(ByteLevelTokenizer, Llama3LooksUpWholePreTokensBeforeMerging) {
  // "abc" is in the vocabulary but no merge builds it (Hugging Face ignore_merges).
  HandVocab v = MakeVocab("llama-bpe", {{"a", "b"}}, {}, {"abc"});
  v.spec.add_bos = false;
  EXPECT_EQ(Build(v.spec).Encode("abc", kPlain), (std::vector<TokenId>{v.Id("abc")}));
  HandVocab q = v;
  q.spec.pre = "qwen2";
  EXPECT_EQ(Build(q.spec).Encode("abc", kPlain), (std::vector<TokenId>{v.Id("ab"), 'c'}));
}

TEST(ByteLevelTokenizer, DecodesExactlyWhatWasEncoded) {
  const HandVocab v = MakeVocab("deepseek-v3", {{" ", " "}, {"e", "r"}, {"\xE4", "\xBD"}, {"\xE4\xBD", "\xA0"}});
  const Tokenizer t = Build(v.spec);
  for (const std::string& text : std::vector<std::string>{"", " ", "hello  world\n\n\ttabs   ", "\xE4\xBD\xA0\xE5\xA5\xBD", "caf\xC3\xA9 \xF0\x9F\x98\x80", "x\xFFy\xC3",
        std::string("nul\0byte", 8), "  trailing  "}) {
    EXPECT_EQ(t.Decode(t.Encode(text, kPlain)), text);
  }
}

// A Qwen-like vocabulary: control tokens, a user-defined token, an EOS.
HandVocab QwenLike() {
  HandVocab v = MakeVocab("qwen2", {{"h", "i"}},
                          {{"<|endoftext|>", TokenType::kControl},
                           {"<|im_start|>", TokenType::kControl},
                           {"<|im_end|>", TokenType::kControl},
                           {"<|im", TokenType::kControl},
                           {"<think>", TokenType::kUserDefined},
                           {"<|file_sep|>", TokenType::kNormal}});
  v.spec.eos_id = v.Added("<|im_end|>");
  v.spec.bos_id = v.Added("<|endoftext|>");
  v.spec.add_bos = false;
  return v;
}

TEST(ByteLevelTokenizer, MatchesUserDefinedTokensAlwaysAndControlTokensOnlyWhenAsked) {
  const HandVocab v = QwenLike();
  const Tokenizer t = Build(v.spec);
  const TokenId im_start = v.Added("<|im_start|>");
  const TokenId im_end = v.Added("<|im_end|>");
  const TokenId think = v.Added("<think>");
  const std::string text = "<|im_start|>hi<think>hi<|im_end|>";
  const std::vector<TokenId> plain = t.Encode(text, kPlain);
  EXPECT_EQ(std::count(plain.begin(), plain.end(), im_start), 0);
  EXPECT_EQ(std::count(plain.begin(), plain.end(), im_end), 0);
  EXPECT_EQ(std::count(plain.begin(), plain.end(), think), 1);
  EXPECT_EQ(t.Decode(plain), text);
  const std::vector<TokenId> parsed = t.Encode(text, EncodeOptions{.add_special = false, .parse_special = true});
  EXPECT_EQ(parsed, (std::vector<TokenId>{im_start, v.Id("hi"), think, v.Id("hi"), im_end}));
  EXPECT_EQ(t.Decode(parsed), "hi<think>hi");
  EXPECT_EQ(t.Decode(parsed, /*render_special=*/true), text);
  // Leftmost-longest: "<|im" is a token too, but "<|im_end|>" is longer.
  EXPECT_EQ(t.Encode("<|im_end|><|im", EncodeOptions{.add_special = false, .parse_special = true}),
            (std::vector<TokenId>{im_end, v.Added("<|im")}));
}

TEST(ByteLevelTokenizer, AddsBosAndEosAsTheMetadataSays) {
  HandVocab v = QwenLike();
  const TokenId bos = v.Added("<|endoftext|>");
  const TokenId eos = v.Added("<|im_end|>");
  EXPECT_EQ(Build(v.spec).Encode("hi", EncodeOptions{}), (std::vector<TokenId>{v.Id("hi")}));
  v.spec.add_bos = true;
  v.spec.add_eos = true;
  const Tokenizer t = Build(v.spec);
  EXPECT_EQ(t.Encode("hi", EncodeOptions{}), (std::vector<TokenId>{bos, v.Id("hi"), eos}));
  EXPECT_EQ(t.Encode("hi", kPlain), (std::vector<TokenId>{v.Id("hi")}));
  EXPECT_EQ(t.Encode("hi", /*add_bos=*/true), (std::vector<TokenId>{bos, v.Id("hi"), eos}));
  EXPECT_EQ(t.Decode(t.Encode("hi", EncodeOptions{})), "hi");
  // Llama 3 adds BOS by default; Qwen does not.
  HandVocab l = MakeVocab("llama-bpe", {}, {{"<|begin_of_text|>", TokenType::kControl}});
  l.spec.bos_id = l.Added("<|begin_of_text|>");
  EXPECT_TRUE(Build(l.spec).add_bos());
  EXPECT_FALSE(Build(MakeVocab("qwen2", {}).spec).add_bos());
  // add_bos without a BOS id is refused, as llama.cpp does.
  l.spec.bos_id.reset();
  EXPECT_FALSE(Tokenizer::FromSpec(l.spec));
}

TEST(ByteLevelTokenizer, CollectsEndOfGenerationTokens) {
  HandVocab v = QwenLike();
  v.spec.eot_id = v.Added("<|im_start|>");  // any id given as EOT counts
  const Tokenizer t = Build(v.spec);
  EXPECT_EQ(t.end_of_generation_ids(),
            (std::vector<TokenId>{v.Added("<|endoftext|>"), v.Added("<|im_start|>"), v.Added("<|im_end|>"),
                                  v.Added("<|file_sep|>")}));
  EXPECT_TRUE(t.IsEndOfGeneration(v.Added("<|im_end|>")));
  EXPECT_FALSE(t.IsEndOfGeneration(v.Added("<think>")));
  EXPECT_FALSE(t.IsEndOfGeneration(-1));
  // An end-of-generation text typed normal becomes control, as in llama.cpp.
  EXPECT_EQ(t.Type(v.Added("<|file_sep|>")), TokenType::kControl);
  EXPECT_EQ(t.Piece(v.Added("<|file_sep|>")), "");
  EXPECT_EQ(t.Piece(v.Added("<|file_sep|>"), /*render_special=*/true), "<|file_sep|>");
}

TEST(ByteLevelTokenizer, IncrementalDetokenizerNeverSplitsCharacters) {
  const HandVocab v = QwenLike();
  const Tokenizer t = Build(v.spec);
  const std::string text = "h\xC3\xA9\xF0\x9F\x98\x80!";
  const std::vector<TokenId> ids = t.Encode(text, kPlain);
  ASSERT_EQ(ids.size(), 8u);
  IncrementalDetokenizer detok(t, -1);
  std::vector<std::string> deltas;
  for (TokenId id : ids) deltas.push_back(detok.Push(id));
  EXPECT_EQ(deltas, (std::vector<std::string>{"h", "", "\xC3\xA9", "", "", "", "\xF0\x9F\x98\x80", "!"}));
  EXPECT_EQ(detok.Flush(), "");
  // No SPM after-BOS rule for byte-level vocabularies.
  IncrementalDetokenizer after_bos(t, v.Added("<|endoftext|>"));
  EXPECT_EQ(after_bos.Push(' '), " ");
  IncrementalDetokenizer special(t, -1, /*render_special=*/true);
  EXPECT_EQ(special.Push(v.Added("<|im_end|>")), "<|im_end|>");
}

TEST(ByteLevelTokenizer, EncodesConcurrently) {
  const HandVocab v = MakeVocab("llama-bpe", {{"h", "e"}, {"l", "l"}, {"he", "ll"}, {" ", "w"}},
                                {{"<|begin_of_text|>", TokenType::kControl}});
  HandVocab with_bos = v;
  with_bos.spec.bos_id = v.Added("<|begin_of_text|>");
  const Tokenizer t = Build(with_bos.spec);
  const std::string text = "hello world, 12345 <|begin_of_text|> \xE4\xBD\xA0\xE5\xA5\xBD  \n\n done";
  const std::vector<TokenId> expected = t.Encode(text, EncodeOptions{.parse_special = true});
  std::vector<int> mismatches(8, 0);
  std::vector<std::thread> threads;
  for (int i = 0; i < 8; ++i) {
    threads.emplace_back([&, i] {
      for (int n = 0; n < 500; ++n) {
        if (t.Encode(text, EncodeOptions{.parse_special = true}) != expected) ++mismatches[i];
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(mismatches, std::vector<int>(8, 0));
}

TEST(ByteLevelTokenizer, RefusesIncompleteVocabularies) {
  HandVocab v = MakeVocab("qwen2", {{"a", "b"}});
  TokenizerSpec no_pre = v.spec;
  no_pre.pre.clear();
  EXPECT_FALSE(Tokenizer::FromSpec(no_pre));
  TokenizerSpec unknown_pre = v.spec;
  unknown_pre.pre = "chameleon";
  auto r = Tokenizer::FromSpec(unknown_pre);
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find("chameleon"), std::string::npos);
  TokenizerSpec bad_merge = v.spec;
  bad_merge.merges.push_back("nospace");
  EXPECT_FALSE(Tokenizer::FromSpec(bad_merge));
  TokenizerSpec bad_id = v.spec;
  bad_id.eos_id = 100000;
  EXPECT_FALSE(Tokenizer::FromSpec(bad_id));
  TokenizerSpec bad_model = v.spec;
  bad_model.model = "bert";
  EXPECT_FALSE(Tokenizer::FromSpec(bad_model));
}

}  // namespace
}  // namespace tollgate::local_backend
