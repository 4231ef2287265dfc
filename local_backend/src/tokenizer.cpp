#include "tollgate/local_backend/tokenizer.hpp"

#include "tollgate/local_backend/gguf.hpp"

#include <algorithm>
#include <cstdio>
#include <map>
#include <queue>

namespace tollgate::local_backend {
namespace {

constexpr std::string_view kSpaceMarker = "\xE2\x96\x81";   // U+2581
constexpr std::string_view kUnknownGlyph = "\xE2\x96\x85";  // U+2585, as llama.cpp prints <unk>
constexpr std::string_view kReplacement = "\xEF\xBF\xBD";   // U+FFFD

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

}  // namespace

Result<Tokenizer> Tokenizer::FromGguf(const GgufFile& gguf) {
  auto model = gguf.GetString("tokenizer.ggml.model");
  if (!model) return InvalidArgument("GGUF has no tokenizer.ggml.model");
  if (*model != "llama") {
    return InvalidArgument("tokenizer.ggml.model '" + std::string(*model) +
                           "' is not supported (only \"llama\", SentencePiece BPE)");
  }
  Tokenizer t;
  auto tokens = gguf.GetStringArray("tokenizer.ggml.tokens");
  if (!tokens || tokens->empty()) return InvalidArgument("GGUF has no tokenizer.ggml.tokens array");
  t.pieces_ = std::move(*tokens);
  const size_t n = t.pieces_.size();
  if (n > static_cast<size_t>(INT32_MAX)) return InvalidArgument("vocabulary too large");

  if (gguf.Find("tokenizer.ggml.scores")) {
    auto scores = gguf.GetFloatArray("tokenizer.ggml.scores");
    if (!scores || scores->size() != n) {
      return InvalidArgument("tokenizer.ggml.scores must be a float array as long as tokenizer.ggml.tokens");
    }
    t.scores_ = std::move(*scores);
  } else {
    t.scores_.assign(n, 0.0f);
  }
  t.types_.assign(n, TokenType::kNormal);
  if (gguf.Find("tokenizer.ggml.token_type")) {
    auto types = gguf.GetIntArray("tokenizer.ggml.token_type");
    if (!types || types->size() != n) {
      return InvalidArgument("tokenizer.ggml.token_type must be an int array as long as tokenizer.ggml.tokens");
    }
    for (size_t i = 0; i < n; ++i) t.types_[i] = static_cast<TokenType>((*types)[i]);
  } else {
    for (size_t i = 0; i < n; ++i) {
      if (ParseByteToken(t.pieces_[i]) >= 0) t.types_[i] = TokenType::kByte;
    }
  }

  auto read_id = [&](std::string_view key, TokenId fallback, TokenId* out) -> Result<void> {
    if (!gguf.Find(key)) {
      *out = fallback;
      return {};
    }
    auto v = gguf.GetInt(key);
    if (!v || *v < 0 || *v >= static_cast<int64_t>(n)) {
      return InvalidArgument(std::string(key) + " is not a token id of the vocabulary");
    }
    *out = static_cast<TokenId>(*v);
    return {};
  };
  if (auto r = read_id("tokenizer.ggml.bos_token_id", 1, &t.bos_id_); !r) return r.error();
  if (auto r = read_id("tokenizer.ggml.eos_token_id", 2, &t.eos_id_); !r) return r.error();
  if (auto r = read_id("tokenizer.ggml.unknown_token_id", 0, &t.unk_id_); !r) return r.error();
  if (t.bos_id_ >= static_cast<TokenId>(n) || t.eos_id_ >= static_cast<TokenId>(n) ||
      t.unk_id_ >= static_cast<TokenId>(n)) {
    return InvalidArgument("vocabulary of " + std::to_string(n) + " tokens lacks the default special ids");
  }
  if (auto v = gguf.GetBool("tokenizer.ggml.add_bos_token")) t.add_bos_ = *v;
  if (auto v = gguf.GetBool("tokenizer.ggml.add_space_prefix")) t.add_space_prefix_ = *v;

  // Later duplicates win, as in llama.cpp's token_to_id map.
  t.index_.reserve(n);
  for (size_t i = 0; i < n; ++i) t.index_[t.pieces_[i]] = static_cast<TokenId>(i);
  t.byte_values_.assign(n, -1);
  for (size_t i = 0; i < n; ++i) {
    if (t.types_[i] == TokenType::kByte) t.byte_values_[i] = ParseByteToken(t.pieces_[i]);
  }
  for (int b = 0; b < 256; ++b) {
    char buf[8];
    std::snprintf(buf, sizeof(buf), "<0x%02X>", b);
    TokenId id = t.Lookup(buf);
    if (id < 0) id = t.Lookup(std::string(1, static_cast<char>(b)));  // llama.cpp's second try
    t.byte_tokens_[b] = id < 0 ? t.unk_id_ : id;
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

std::vector<TokenId> Tokenizer::Encode(std::string_view raw, bool add_bos) const {
  std::vector<TokenId> out;
  if (add_bos && add_bos_) out.push_back(bos_id_);
  if (raw.empty()) return out;

  std::string text;
  if (add_space_prefix_) text = " ";
  text += raw;
  text = ReplaceAll(text, " ", kSpaceMarker);

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
  return out;
}

std::string Tokenizer::Piece(TokenId id) const {
  if (id < 0 || id >= vocab_size()) return {};
  const auto i = static_cast<size_t>(id);
  switch (types_[i]) {
    case TokenType::kNormal:
    case TokenType::kUserDefined:
    case TokenType::kUndefined:
      return ReplaceAll(pieces_[i], kSpaceMarker, " ");
    case TokenType::kByte:
      if (byte_values_[i] >= 0) return std::string(1, static_cast<char>(byte_values_[i]));
      return {};
    case TokenType::kUnknown:
      return std::string(kUnknownGlyph);
    case TokenType::kControl:
    case TokenType::kUnused:
      return {};
  }
  return {};
}

std::string Tokenizer::Decode(const std::vector<TokenId>& ids) const {
  std::string out;
  TokenId previous = -1;
  for (TokenId id : ids) {
    std::string piece = Piece(id);
    if (previous == bos_id_ && !piece.empty() && piece[0] == ' ') piece.erase(0, 1);
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

IncrementalDetokenizer::IncrementalDetokenizer(const Tokenizer& tokenizer, TokenId previous)
    : tokenizer_(tokenizer), previous_(previous) {}

std::string IncrementalDetokenizer::Push(TokenId id) {
  std::string piece = tokenizer_.Piece(id);
  if (previous_ == tokenizer_.bos_id() && !piece.empty() && piece[0] == ' ') piece.erase(0, 1);
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
