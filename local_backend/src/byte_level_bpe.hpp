// Byte-level BPE pieces internal to the tokenizer: GPT-2's byte <-> symbol
// mapping and the merge table. See tokenizer.hpp for the algorithm.
#pragma once

#include "tollgate/core/error.hpp"
#include "tollgate/local_backend/tokenizer.hpp"

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

namespace tollgate::local_backend::internal {

// GPT-2 `bytes_to_unicode` (openai/gpt-2 src/encoder.py): bytes '!'..'~',
// 0xA1..0xAC and 0xAE..0xFF map to the code point of the same value; the
// other 68 bytes, in increasing order, to U+0100, U+0101, ... U+0143.
uint32_t ByteToCodepoint(uint8_t byte);

// Appends the byte-level symbols of `bytes` (UTF-8 of ByteToCodepoint of each
// byte) to `out`.
void AppendByteLevel(std::string_view bytes, std::string& out);

// The bytes a byte-level token text stands for. A character outside the
// 256-symbol alphabet (or invalid UTF-8) is copied unchanged.
std::string DecodeByteLevel(std::string_view text);

// Merge table: (left id, right id) -> (rank, merged id), from
// tokenizer.ggml.merges. Immutable after Create(); Apply() is thread-safe.
class BpeMerges {
 public:
  // `lookup` maps a token text to its id or -1. Each merge "left right" is
  // split at the first space after its first byte (as llama.cpp does); rank
  // is its index. A merge whose left, right or concatenation is not in the
  // vocabulary can never apply and is skipped; when two merges join the same
  // pair, the first (lowest rank) wins. Errors (kInvalidArgument): a merge
  // without a space, naming its index.
  static Result<BpeMerges> Create(const std::vector<std::string>& merges,
                                  const std::function<TokenId(std::string_view)>& lookup);

  // Merges `ids` (the byte tokens of one pre-token; -1 for a byte without a
  // token, which never merges) in place: repeatedly the adjacent pair of
  // lowest rank, leftmost on ties, until no pair has a merge.
  void Apply(std::vector<TokenId>& ids) const;

  size_t size() const { return size_; }

 private:
  static constexpr int kShortWord = 48;  // bytes; longer pre-tokens use a heap
  void ApplyShort(std::vector<TokenId>& ids) const;

  // Open addressing with linear probing over a power-of-two table at most
  // half full: the lookups in Apply() are most of the encoding time, and
  // std::unordered_map's node chasing made them about twice as slow.
  struct Slot {
    uint64_t key = kEmpty;
    int32_t rank = 0;
    TokenId result = 0;
  };
  static constexpr uint64_t kEmpty = ~uint64_t{0};  // no pair of ids >= 0 gives this key
  static uint64_t Key(TokenId left, TokenId right) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) | static_cast<uint32_t>(right);
  }
  size_t Home(uint64_t key) const { return static_cast<size_t>((key * 0x9E3779B97F4A7C15ull) >> shift_); }
  const Slot* Find(TokenId left, TokenId right) const {
    if (left < 0 || right < 0 || slots_.empty()) return nullptr;
    const uint64_t key = Key(left, right);
    for (size_t i = Home(key);; i = (i + 1) & mask_) {
      const Slot& slot = slots_[i];
      if (slot.key == key) return &slot;
      if (slot.key == kEmpty) return nullptr;
    }
  }
  std::vector<Slot> slots_;
  size_t mask_ = 0;
  int shift_ = 64;
  size_t size_ = 0;
};

}  // namespace tollgate::local_backend::internal
