#include "tollgate/local_backend/tokenizer.hpp"

#include "byte_level_bpe.hpp"
#include "regex_splitter.hpp"
#include "tollgate/local_backend/gguf.hpp"

#include <algorithm>
#include <array>
#include <cstdio>
#include <map>
#include <queue>

namespace tollgate::local_backend {

struct Tokenizer::ByteLevelState {
  internal::RegexSplitter splitter;
  internal::BpeMerges merges;
  bool ignore_merges = false;
};

namespace {

constexpr std::string_view kSpaceMarker = "\xE2\x96\x81";   // U+2581
constexpr std::string_view kUnknownGlyph = "\xE2\x96\x85";  // U+2585, as llama.cpp prints <unk>
constexpr std::string_view kReplacement = "\xEF\xBF\xBD";   // U+FFFD

// Token texts that end generation whatever the metadata says (llama.cpp
// llama_vocab::impl::load, "special_eog_ids"; ggml-org/llama.cpp#9606), for
// the model families this engine serves. The FIM pad/repo/file-separator
// tokens are there because llama.cpp stops on them too.
constexpr std::array<std::string_view, 13> kEndOfGenerationTexts = {
    "<|eot_id|>",        "<|im_end|>",      "<|end|>",
    "<end_of_turn>",     "<|endoftext|>",   "<|eom_id|>",
    "<EOT>",             "<|end_of_text|>", "<\xEF\xBD\x9C" "end\xE2\x96\x81of\xE2\x96\x81sentence\xEF\xBD\x9C>",
    "<end_of_utterance>", "<|fim_pad|>",    "<|repo_name|>",
    "<|file_sep|>",
};

// Length of a UTF-8 sequence from its lead byte (llama.cpp `unicode_len_utf8`):
// continuation and invalid lead bytes count as 1.
size_t Utf8Len(unsigned char c) {
  if (c < 0x80) return 1;
  if ((c & 0xE0) == 0xC0) return 2;
  if ((c & 0xF0) == 0xE0) return 3;
  if ((c & 0xF8) == 0xF0) return 4;
  return 1;
}

// "<0xNN>" -> NN, else -1.
int ParseByteToken(std::string_view s) {
  if (s.size() != 6 || s.substr(0, 3) != "<0x" || s[5] != '>') return -1;
  int v = 0;
  for (char c : s.substr(3, 2)) {
    v <<= 4;
    if (c >= '0' && c <= '9') v |= c - '0';
    else if (c >= 'A' && c <= 'F') v |= c - 'A' + 10;
    else if (c >= 'a' && c <= 'f') v |= c - 'a' + 10;
    else return -1;
  }
  return v;
}

std::string ReplaceAll(std::string_view s, std::string_view from, std::string_view to) {
  std::string out;
  out.reserve(s.size());
  size_t i = 0;
  while (i < s.size()) {
    if (s.substr(i, from.size()) == from) {
      out += to;
      i += from.size();
    } else {
      out += s[i++];
    }
  }
  return out;
}

struct Symbol {
  int prev;
  int next;
  size_t offset;  // into the escaped text
  size_t n;       // bytes; 0 once merged into its left neighbour
};

struct Bigram {
  int left;
  int right;
  float score;
  size_t size;
};

// Highest score first; on equal scores the leftmost pair (llama.cpp `llm_bigram_spm::comparator`).
struct BigramLess {
  bool operator()(const Bigram& l, const Bigram& r) const {
    return l.score < r.score || (l.score == r.score && l.left > r.left);
  }
};

// Reads an optional key with `get`; absent leaves `out` unset, a present key
// of the wrong type is an error.
template <class T, class Getter>
Result<void> ReadOptional(const GgufFile& gguf, std::string_view key, Getter get, std::optional<T>& out) {
  if (!gguf.Find(key)) return {};
  auto v = get(key);
  if (!v) return InvalidArgument(std::string(key) + ": " + v.error().message);
  out = static_cast<T>(*v);
  return {};
}

}  // namespace

Result<Tokenizer> Tokenizer::FromGguf(const GgufFile& gguf) {
  TokenizerSpec spec;
  auto model = gguf.GetString("tokenizer.ggml.model");
  if (!model) return InvalidArgument("GGUF has no tokenizer.ggml.model");
  spec.model = std::string(*model);
  if (gguf.Find("tokenizer.ggml.pre")) {
    auto pre = gguf.GetString("tokenizer.ggml.pre");
    if (!pre) return InvalidArgument("tokenizer.ggml.pre must be a string");
    spec.pre = std::string(*pre);
  }
  auto tokens = gguf.GetStringArray("tokenizer.ggml.tokens");
  if (!tokens || tokens->empty()) return InvalidArgument("GGUF has no tokenizer.ggml.tokens array");
  spec.tokens = std::move(*tokens);
  if (gguf.Find("tokenizer.ggml.scores")) {
    auto scores = gguf.GetFloatArray("tokenizer.ggml.scores");
    if (!scores) return InvalidArgument("tokenizer.ggml.scores must be a float array");
    spec.scores = std::move(*scores);
  }
  if (gguf.Find("tokenizer.ggml.token_type")) {
    auto types = gguf.GetIntArray("tokenizer.ggml.token_type");
    if (!types) return InvalidArgument("tokenizer.ggml.token_type must be an int array");
    spec.types.reserve(types->size());
    for (int64_t t : *types) spec.types.push_back(static_cast<TokenType>(t));
  }
  if (gguf.Find("tokenizer.ggml.merges")) {
    auto merges = gguf.GetStringArray("tokenizer.ggml.merges");
    if (!merges) return InvalidArgument("tokenizer.ggml.merges must be a string array");
    spec.merges = std::move(*merges);
  } else if (spec.model == "gpt2") {
    return InvalidArgument("GGUF has no tokenizer.ggml.merges (byte-level BPE needs them)");
  }
  auto get_int = [&](std::string_view key) { return gguf.GetInt(key); };
  auto get_bool = [&](std::string_view key) { return gguf.GetBool(key); };
  const std::pair<std::string_view, std::optional<TokenId>*> ids[] = {
      {"tokenizer.ggml.bos_token_id", &spec.bos_id},     {"tokenizer.ggml.eos_token_id", &spec.eos_id},
      {"tokenizer.ggml.eot_token_id", &spec.eot_id},     {"tokenizer.ggml.eom_token_id", &spec.eom_id},
      {"tokenizer.ggml.unknown_token_id", &spec.unk_id},
  };
  for (const auto& [key, out] : ids) {
    std::optional<int64_t> v;
    if (auto r = ReadOptional(gguf, key, get_int, v); !r) return r.error();
    if (v) {
      if (*v < 0 || *v > INT32_MAX) return InvalidArgument(std::string(key) + " is not a token id of the vocabulary");
      *out = static_cast<TokenId>(*v);
    }
  }
  if (auto r = ReadOptional(gguf, "tokenizer.ggml.add_bos_token", get_bool, spec.add_bos); !r) return r.error();
  if (auto r = ReadOptional(gguf, "tokenizer.ggml.add_eos_token", get_bool, spec.add_eos); !r) return r.error();
  if (auto r = ReadOptional(gguf, "tokenizer.ggml.add_space_prefix", get_bool, spec.add_space_prefix); !r) {
    return r.error();
  }
  return FromSpec(std::move(spec));
}

Result<Tokenizer> Tokenizer::FromSpec(TokenizerSpec spec) {
  Tokenizer t;
  if (spec.model == "llama") {
    t.kind_ = TokenizerKind::kSentencePiece;
  } else if (spec.model == "gpt2") {
    t.kind_ = TokenizerKind::kByteLevelBpe;
  } else {
    return InvalidArgument("tokenizer.ggml.model '" + spec.model +
                           "' is not supported (\"llama\": SentencePiece BPE, \"gpt2\": byte-level BPE)");
  }
  const bool spm = t.kind_ == TokenizerKind::kSentencePiece;
  if (spec.tokens.empty()) return InvalidArgument("GGUF has no tokenizer.ggml.tokens array");
  t.pieces_ = std::move(spec.tokens);
  const size_t n = t.pieces_.size();
  if (n > static_cast<size_t>(INT32_MAX)) return InvalidArgument("vocabulary too large");

  if (spec.scores.empty()) {
    t.scores_.assign(n, 0.0f);
  } else if (spec.scores.size() != n) {
    return InvalidArgument("tokenizer.ggml.scores must be a float array as long as tokenizer.ggml.tokens");
  } else {
    t.scores_ = std::move(spec.scores);
  }
  if (spec.types.empty()) {
    t.types_.assign(n, TokenType::kNormal);
    if (spm) {
      for (size_t i = 0; i < n; ++i) {
        if (ParseByteToken(t.pieces_[i]) >= 0) t.types_[i] = TokenType::kByte;
      }
    }
  } else if (spec.types.size() != n) {
    return InvalidArgument("tokenizer.ggml.token_type must be an int array as long as tokenizer.ggml.tokens");
  } else {
    t.types_ = std::move(spec.types);
  }

  auto check_id = [&](std::string_view key, const std::optional<TokenId>& given, TokenId fallback,
                      TokenId* out) -> Result<void> {
    if (given) {
      if (*given < 0 || static_cast<size_t>(*given) >= n) {
        return InvalidArgument("tokenizer.ggml." + std::string(key) + " is not a token id of the vocabulary");
      }
      *out = *given;
    } else {
      *out = fallback;
    }
    return {};
  };
  TokenId eom_id = -1;
  if (auto r = check_id("bos_token_id", spec.bos_id, spm ? 1 : -1, &t.bos_id_); !r) return r.error();
  if (auto r = check_id("eos_token_id", spec.eos_id, spm ? 2 : -1, &t.eos_id_); !r) return r.error();
  if (auto r = check_id("eot_token_id", spec.eot_id, -1, &t.eot_id_); !r) return r.error();
  if (auto r = check_id("eom_token_id", spec.eom_id, -1, &eom_id); !r) return r.error();
  if (auto r = check_id("unknown_token_id", spec.unk_id, spm ? 0 : -1, &t.unk_id_); !r) return r.error();
  if (spm && (t.bos_id_ >= static_cast<TokenId>(n) || t.eos_id_ >= static_cast<TokenId>(n) ||
              t.unk_id_ >= static_cast<TokenId>(n))) {
    return InvalidArgument("vocabulary of " + std::to_string(n) + " tokens lacks the default special ids");
  }

  // Later duplicates win, as in llama.cpp's token_to_id map.
  t.index_.reserve(n);
  for (size_t i = 0; i < n; ++i) t.index_[t.pieces_[i]] = static_cast<TokenId>(i);

  if (spm) {
    t.add_bos_ = spec.add_bos.value_or(true);
    t.add_space_prefix_ = spec.add_space_prefix.value_or(true);
    for (int b = 0; b < 256; ++b) {
      char buf[8];
      std::snprintf(buf, sizeof(buf), "<0x%02X>", b);
      TokenId id = t.Lookup(buf);
      if (id < 0) id = t.Lookup(std::string(1, static_cast<char>(b)));  // llama.cpp's second try
      t.byte_tokens_[b] = id < 0 ? t.unk_id_ : id;
    }
  } else {
    auto preset = internal::RegexSplitter::PresetFor(spec.pre);
    if (!preset) return preset.error();
    auto splitter = internal::RegexSplitter::Create(preset->patterns);
    if (!splitter) return splitter.error();
    auto merges = internal::BpeMerges::Create(spec.merges, [&](std::string_view s) { return t.Lookup(s); });
    if (!merges) return merges.error();
    auto state = std::make_shared<ByteLevelState>(
        ByteLevelState{std::move(*splitter), std::move(*merges), preset->ignore_merges});
    t.byte_level_ = std::move(state);
    t.pre_ = std::move(spec.pre);
    t.add_bos_ = spec.add_bos.value_or(preset->add_bos);
    t.add_space_prefix_ = false;
    std::string symbol;
    for (int b = 0; b < 256; ++b) {
      symbol.clear();
      const char byte = static_cast<char>(b);
      internal::AppendByteLevel(std::string_view(&byte, 1), symbol);
      t.byte_tokens_[b] = t.Lookup(symbol);  // -1: that byte is dropped (llama.cpp)
    }
  }
  t.add_eos_ = spec.add_eos.value_or(false);
  if (t.add_bos_ && t.bos_id_ < 0) {
    return InvalidArgument("tokenizer.ggml.add_bos_token is true but tokenizer.ggml.bos_token_id is not set");
  }
  if (t.add_eos_ && t.eos_id_ < 0) {
    return InvalidArgument("tokenizer.ggml.add_eos_token is true but tokenizer.ggml.eos_token_id is not set");
  }

  // End of generation.
  t.is_eog_.assign(n, false);
  auto mark_eog = [&](TokenId id) {
    if (id >= 0 && static_cast<size_t>(id) < n) t.is_eog_[static_cast<size_t>(id)] = true;
  };
  mark_eog(t.eos_id_);
  mark_eog(t.eot_id_);
  mark_eog(eom_id);
  for (std::string_view text : kEndOfGenerationTexts) {
    if (auto it = t.index_.find(text); it != t.index_.end()) {
      const auto id = static_cast<size_t>(it->second);
      t.is_eog_[id] = true;
      // llama.cpp: "control-looking token ... was not control-type; its type will be overridden".
      if (t.types_[id] == TokenType::kNormal || t.types_[id] == TokenType::kUndefined) {
        t.types_[id] = TokenType::kControl;
      }
    }
  }
  for (size_t i = 0; i < n; ++i) {
    if (t.is_eog_[i]) t.eog_ids_.push_back(static_cast<TokenId>(i));
  }

  // Tokens matched in the text, by first byte, longest first.
  for (auto& table : t.special_by_byte_) table.assign(256, {});
  for (size_t i = 0; i < n; ++i) {
    const std::string& text = t.pieces_[i];
    if (text.empty()) continue;
    const auto first = static_cast<uint8_t>(text[0]);
    const TokenType type = t.types_[i];
    if (type == TokenType::kUserDefined) {
      t.special_by_byte_[0][first].push_back(static_cast<TokenId>(i));
      t.special_by_byte_[1][first].push_back(static_cast<TokenId>(i));
    } else if (type == TokenType::kControl || type == TokenType::kUnknown) {
      t.special_by_byte_[1][first].push_back(static_cast<TokenId>(i));
    }
  }
  for (auto& table : t.special_by_byte_) {
    for (auto& list : table) {
      std::stable_sort(list.begin(), list.end(), [&](TokenId a, TokenId b) {
        return t.pieces_[static_cast<size_t>(a)].size() > t.pieces_[static_cast<size_t>(b)].size();
      });
    }
  }

  // Decoded pieces (Piece(id, false)) for every token.
  t.decoded_.resize(n);
  for (size_t i = 0; i < n; ++i) {
    const std::string& text = t.pieces_[i];
    std::string& piece = t.decoded_[i];
    switch (t.types_[i]) {
      case TokenType::kNormal:
        piece = spm ? ReplaceAll(text, kSpaceMarker, " ") : internal::DecodeByteLevel(text);
        break;
      case TokenType::kUndefined:
        if (spm) piece = ReplaceAll(text, kSpaceMarker, " ");
        break;
      case TokenType::kUserDefined:
        piece = spm ? ReplaceAll(text, kSpaceMarker, " ") : text;
        break;
      case TokenType::kByte:
        if (const int v = ParseByteToken(text); v >= 0) piece = std::string(1, static_cast<char>(v));
        break;
      case TokenType::kUnknown:
        if (spm) piece = std::string(kUnknownGlyph);
        break;
      case TokenType::kControl:
      case TokenType::kUnused:
        break;
    }
  }
  return t;
}

TokenId Tokenizer::Lookup(std::string_view piece) const {
  auto it = index_.find(piece);
  return it == index_.end() ? -1 : it->second;
}

TokenId Tokenizer::ByteToken(uint8_t byte) const { return byte_tokens_[byte]; }

const std::string& Tokenizer::Text(TokenId id) const {
  static const std::string kEmpty;
  if (id < 0 || id >= vocab_size()) return kEmpty;
  return pieces_[static_cast<size_t>(id)];
}

TokenType Tokenizer::Type(TokenId id) const {
  if (id < 0 || id >= vocab_size()) return TokenType::kUndefined;
  return types_[static_cast<size_t>(id)];
}

std::optional<TokenId> Tokenizer::Find(std::string_view text) const {
  const TokenId id = Lookup(text);
  if (id < 0) return std::nullopt;
  return id;
}

bool Tokenizer::IsEndOfGeneration(TokenId id) const {
  return id >= 0 && id < vocab_size() && is_eog_[static_cast<size_t>(id)];
}

std::vector<TokenId> Tokenizer::Encode(std::string_view text, EncodeOptions options) const {
  std::vector<TokenId> out;
  if (options.add_special && add_bos_) out.push_back(bos_id_);
  const auto& specials = special_by_byte_[options.parse_special ? 1 : 0];
  // SPM: a space is prefixed to the first text piece and to every piece after
  // a matched token (llama.cpp `is_prev_special`).
  bool after_special = true;
  auto encode_piece = [&](std::string_view piece) {
    if (piece.empty()) return;
    if (kind_ == TokenizerKind::kSentencePiece) {
      if (add_space_prefix_ && after_special) {
        std::string prefixed = " ";
        prefixed += piece;
        EncodeSentencePiece(prefixed, out);
      } else {
        EncodeSentencePiece(piece, out);
      }
    } else {
      EncodeByteLevel(piece, out);
    }
    after_special = false;
  };
  // Leftmost-longest scan for matched tokens (Hugging Face AddedVocabulary
  // uses an Aho-Corasick automaton with LeftmostLongest matching).
  size_t piece_start = 0;
  size_t i = 0;
  while (i < text.size()) {
    const auto& candidates = specials[static_cast<uint8_t>(text[i])];
    TokenId match = -1;
    for (TokenId id : candidates) {
      const std::string& s = pieces_[static_cast<size_t>(id)];
      if (text.compare(i, s.size(), s) == 0) {
        match = id;
        break;
      }
    }
    if (match < 0) {
      ++i;
      continue;
    }
    encode_piece(text.substr(piece_start, i - piece_start));
    out.push_back(match);
    after_special = true;
    i += pieces_[static_cast<size_t>(match)].size();
    piece_start = i;
  }
  encode_piece(text.substr(piece_start));
  if (options.add_special && add_eos_) out.push_back(eos_id_);
  return out;
}

void Tokenizer::EncodeByteLevel(std::string_view text, std::vector<TokenId>& out) const {
  const ByteLevelState& state = *byte_level_;
  thread_local std::vector<std::string_view> words;
  thread_local std::vector<TokenId> ids;
  thread_local std::string symbols;
  words.clear();
  state.splitter.Split(text, words);
  for (std::string_view word : words) {
    if (state.ignore_merges) {
      symbols.clear();
      internal::AppendByteLevel(word, symbols);
      if (const TokenId id = Lookup(symbols); id >= 0) {
        out.push_back(id);
        continue;
      }
    }
    ids.clear();
    for (char c : word) ids.push_back(byte_tokens_[static_cast<uint8_t>(c)]);
    state.merges.Apply(ids);
    for (TokenId id : ids) {
      if (id >= 0) out.push_back(id);
    }
  }
}

void Tokenizer::EncodeSentencePiece(std::string_view raw, std::vector<TokenId>& out) const {
  if (raw.empty()) return;
  const std::string text = ReplaceAll(raw, " ", kSpaceMarker);

  std::vector<Symbol> symbols;
  for (size_t offs = 0; offs < text.size();) {
    const size_t len = std::min(text.size() - offs, Utf8Len(static_cast<unsigned char>(text[offs])));
    const int index = static_cast<int>(symbols.size());
    symbols.push_back({index - 1, offs + len == text.size() ? -1 : index + 1, offs, len});
    offs += len;
  }

  std::priority_queue<Bigram, std::vector<Bigram>, BigramLess> queue;
  std::map<std::string, std::pair<int, int>, std::less<>> rev_merge;
  auto try_add_bigram = [&](int left, int right) {
    if (left == -1 || right == -1) return;
    const std::string_view piece(text.data() + symbols[left].offset, symbols[left].n + symbols[right].n);
    const TokenId id = Lookup(piece);
    if (id < 0) return;
    queue.push({left, right, scores_[static_cast<size_t>(id)], piece.size()});
    rev_merge.insert_or_assign(std::string(piece), std::make_pair(left, right));
  };
  for (size_t i = 1; i < symbols.size(); ++i) try_add_bigram(static_cast<int>(i) - 1, static_cast<int>(i));

  while (!queue.empty()) {
    const Bigram bigram = queue.top();
    queue.pop();
    Symbol& left = symbols[bigram.left];
    Symbol& right = symbols[bigram.right];
    // Skip pairs made stale by an earlier merge.
    if (left.n == 0 || right.n == 0 || left.n + right.n != bigram.size) continue;
    left.n += right.n;
    right.n = 0;
    left.next = right.next;
    if (right.next >= 0) symbols[right.next].prev = bigram.left;
    try_add_bigram(left.prev, bigram.left);
    try_add_bigram(bigram.left, left.next);
  }

  // Emits a final symbol: its id if in the vocabulary, else the two symbols
  // that were merged into it, else its bytes.
  auto resegment = [&](auto& self, const Symbol& symbol) -> void {
    const std::string_view piece(text.data() + symbol.offset, symbol.n);
    if (const TokenId id = Lookup(piece); id >= 0) {
      out.push_back(id);
      return;
    }
    auto it = rev_merge.find(piece);
    if (it == rev_merge.end()) {
      for (char c : piece) out.push_back(ByteToken(static_cast<uint8_t>(c)));
      return;
    }
    self(self, symbols[it->second.first]);
    self(self, symbols[it->second.second]);
  };
  for (int i = 0; i != -1 && !symbols.empty(); i = symbols[i].next) resegment(resegment, symbols[i]);
}

std::string Tokenizer::Piece(TokenId id, bool render_special) const {
  if (id < 0 || id >= vocab_size()) return {};
  const auto i = static_cast<size_t>(id);
  if (render_special && (types_[i] == TokenType::kControl || types_[i] == TokenType::kUnknown)) {
    return pieces_[i];
  }
  return decoded_[i];
}

std::string Tokenizer::Decode(const std::vector<TokenId>& ids, bool render_special) const {
  std::string out;
  TokenId previous = -1;
  for (TokenId id : ids) {
    std::string piece = Piece(id, render_special);
    if (DropsSpaceAfter(previous) && !piece.empty() && piece[0] == ' ') piece.erase(0, 1);
    out += piece;
    previous = id;
  }
  return out;
}

std::string TakeCompleteUtf8(std::string& bytes) {
  std::string out;
  size_t i = 0;
  while (i < bytes.size()) {
    const auto c = static_cast<unsigned char>(bytes[i]);
    size_t len = 0;
    if (c < 0x80) len = 1;
    else if (c >= 0xC2 && c <= 0xDF) len = 2;
    else if (c >= 0xE0 && c <= 0xEF) len = 3;
    else if (c >= 0xF0 && c <= 0xF4) len = 4;
    if (len == 0) {  // stray continuation byte or invalid lead
      out += kReplacement;
      ++i;
      continue;
    }
    size_t have = 1;
    bool valid = true;
    while (have < len && i + have < bytes.size()) {
      const auto cc = static_cast<unsigned char>(bytes[i + have]);
      // Second-byte ranges exclude overlongs, surrogates and > U+10FFFF (RFC 3629 section 4).
      unsigned char lo = 0x80, hi = 0xBF;
      if (have == 1) {
        if (c == 0xE0) lo = 0xA0;
        if (c == 0xED) hi = 0x9F;
        if (c == 0xF0) lo = 0x90;
        if (c == 0xF4) hi = 0x8F;
      }
      if (cc < lo || cc > hi) {
        valid = false;
        break;
      }
      ++have;
    }
    if (!valid) {
      out += kReplacement;
      i += have;  // resynchronise at the offending byte
      continue;
    }
    if (have < len) break;  // incomplete but valid so far: hold back
    out.append(bytes, i, len);
    i += len;
  }
  bytes.erase(0, i);
  return out;
}

IncrementalDetokenizer::IncrementalDetokenizer(const Tokenizer& tokenizer, TokenId previous, bool render_special)
    : tokenizer_(tokenizer), previous_(previous), render_special_(render_special) {}

std::string IncrementalDetokenizer::Push(TokenId id) {
  std::string piece = tokenizer_.Piece(id, render_special_);
  if (tokenizer_.DropsSpaceAfter(previous_) && !piece.empty() && piece[0] == ' ') piece.erase(0, 1);
  previous_ = id;
  pending_ += piece;
  return TakeCompleteUtf8(pending_);
}

std::string IncrementalDetokenizer::Flush() {
  std::string out = pending_.empty() ? std::string() : std::string(kReplacement);
  pending_.clear();
  return out;
}

}  // namespace tollgate::local_backend
