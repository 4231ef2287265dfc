// Fuzz target: the tokenizers (local_backend/include/tollgate/local_backend/tokenizer.hpp)
// over text a caller sends.
//
// Vocabularies:
//   - SentencePiece: the real 512-token vocabulary of stories260K.gguf
//     (../shared/models, or $TOLLGATE_MODEL_DIR; see its README.md);
//   - byte-level BPE, one per pre-tokenizer family ("qwen2", "llama-bpe",
//     "deepseek-v3", "gpt2"): the 256 byte symbols, merges that build
//     common English pieces, digits and spaces, Qwen-style control tokens
//     (<|im_start|>, <|im_end|>, <|endoftext|>) and a user-defined <think>.
// The input is the text. For each vocabulary and each EncodeOptions: every id
// is in range; Decode and the IncrementalDetokenizer run over the ids, and
// the detokenizer's deltas are valid UTF-8 that add up to Decode's text
// (repaired). For byte-level BPE, Decode(Encode(t, parse_special), true) == t
// for valid UTF-8 t (tokenizer.hpp promises it).
#include "tollgate/local_backend/gguf.hpp"
#include "tollgate/local_backend/tokenizer.hpp"

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <utility>
#include <vector>

using namespace tollgate;
using namespace tollgate::local_backend;

namespace {

[[noreturn]] void Fail(const std::string& what) {
  std::fprintf(stderr, "tokenizer_fuzz: %s\n", what.c_str());
  std::abort();
}

bool ValidUtf8(std::string_view s) {
  std::string copy(s);
  return TakeCompleteUtf8(copy) == s && copy.empty();
}

// GPT-2 bytes_to_unicode (Radford et al. 2019, encoder.py) of each byte.
std::string Sym(std::string_view bytes) {
  std::string out;
  for (char ch : bytes) {
    const auto b = static_cast<unsigned char>(ch);
    auto printable = [](unsigned x) { return (x >= '!' && x <= '~') || (x >= 0xA1 && x <= 0xAC) || x >= 0xAE; };
    uint32_t cp = b;
    if (!printable(b)) {
      uint32_t n = 0;
      for (unsigned x = 0; x < b; ++x) n += printable(x) ? 0 : 1;
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

Tokenizer ByteLevel(const std::string& pre) {
  TokenizerSpec spec;
  spec.model = "gpt2";
  spec.pre = pre;
  for (int b = 0; b < 256; ++b) spec.tokens.push_back(Sym(std::string(1, static_cast<char>(b))));
  const std::vector<std::pair<std::string, std::string>> merges = {
      {" ", "t"}, {"h", "e"}, {" t", "he"}, {"i", "n"}, {" ", "a"}, {"e", "r"}, {"o", "n"}, {"r", "e"},
      {" ", " "}, {"  ", "  "}, {"1", "2"}, {"12", "3"}, {"\n", "\n"}, {"l", "l"}, {"he", "ll"}, {"hell", "o"},
      {"\xE4", "\xBD"}, {"\xE4\xBD", "\xA0"}, {" ", "w"}, {"o", "r"}, {" w", "or"}, {"l", "d"}, {" wor", "ld"}};
  for (const auto& [l, r] : merges) {
    spec.merges.push_back(Sym(l) + " " + Sym(r));
    spec.tokens.push_back(Sym(l + r));
  }
  spec.types.assign(spec.tokens.size(), TokenType::kNormal);
  for (auto [text, type] : std::vector<std::pair<std::string, TokenType>>{
           {"<|endoftext|>", TokenType::kControl}, {"<|im_start|>", TokenType::kControl},
           {"<|im_end|>", TokenType::kControl}, {"<|im", TokenType::kControl},
           {"<think>", TokenType::kUserDefined}, {"</think>", TokenType::kUserDefined}}) {
    spec.tokens.push_back(text);
    spec.types.push_back(type);
  }
  spec.bos_id = static_cast<TokenId>(spec.tokens.size() - 6);
  spec.eos_id = static_cast<TokenId>(spec.tokens.size() - 4);
  spec.add_bos = pre == "llama-bpe";
  auto t = Tokenizer::FromSpec(std::move(spec));
  if (!t) Fail("byte-level vocabulary " + pre + ": " + t.error().message);
  return std::move(*t);
}

std::vector<Tokenizer>& Tokenizers() {
  static std::vector<Tokenizer> all = [] {
    std::vector<Tokenizer> v;
    const char* dir = std::getenv("TOLLGATE_MODEL_DIR");
    const std::string path = std::string(dir != nullptr && *dir != '\0' ? dir : TOLLGATE_SOURCE_DIR "/../shared/models") +
                             "/stories260K.gguf";
    auto gguf = GgufFile::Open(path);
    if (!gguf) Fail("cannot open " + path + " (set TOLLGATE_MODEL_DIR; ../shared/models/README.md): " + gguf.error().message);
    auto spm = Tokenizer::FromGguf(**gguf);
    if (!spm) Fail("SentencePiece vocabulary of " + path + ": " + spm.error().message);
    v.push_back(std::move(*spm));
    for (const char* pre : {"qwen2", "llama-bpe", "deepseek-v3", "gpt2"}) v.push_back(ByteLevel(pre));
    return v;
  }();
  return all;
}

void Check(const Tokenizer& t, std::string_view text, EncodeOptions options) {
  const std::vector<TokenId> ids = t.Encode(text, options);
  for (TokenId id : ids) {
    if (id < 0 || id >= t.vocab_size()) Fail("id out of range: " + std::to_string(id));
  }
  for (bool render : {false, true}) {
    std::string decoded = t.Decode(ids, render);
    IncrementalDetokenizer detok(t, options.add_special && t.add_bos() ? t.bos_id() : -1, render);
    std::string streamed;
    for (TokenId id : ids) {
      std::string delta = detok.Push(id);
      if (!ValidUtf8(delta)) Fail("detokenizer delta is not valid UTF-8");
      streamed += delta;
    }
    streamed += detok.Flush();
    if (!ValidUtf8(streamed)) Fail("detokenizer output is not valid UTF-8");
    (void)decoded;
  }
  if (t.kind() == TokenizerKind::kByteLevelBpe && !options.add_special && options.parse_special && ValidUtf8(text)) {
    if (t.Decode(ids, true) != text) Fail("byte-level Decode(Encode(t)) != t for \"" + std::string(text) + "\"");
  }
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  (void)Tokenizers();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  for (const Tokenizer& t : Tokenizers()) {
    for (bool add_special : {false, true}) {
      for (bool parse_special : {false, true}) Check(t, text, EncodeOptions{add_special, parse_special});
    }
    (void)t.Find(text);
  }
  return 0;
}
