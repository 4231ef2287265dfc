#include "byte_level_bpe.hpp"

#include <algorithm>
#include <array>
#include <bit>

namespace tollgate::local_backend::internal {
namespace {

struct ByteTables {
  std::array<uint32_t, 256> to_codepoint{};
  std::array<int16_t, 324> to_byte{};  // code points < 0x144; -1 where not a symbol
  ByteTables() {
    to_byte.fill(-1);
    uint32_t next = 256;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
      to_codepoint[b] = printable ? static_cast<uint32_t>(b) : next++;
      to_byte[to_codepoint[b]] = static_cast<int16_t>(b);
    }
  }
};

const ByteTables& Tables() {
  static const ByteTables tables;
  return tables;
}

void AppendUtf8(uint32_t cp, std::string& out) {
  // Only code points below U+0800 occur in the byte-level alphabet.
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

}  // namespace

uint32_t ByteToCodepoint(uint8_t byte) { return Tables().to_codepoint[byte]; }

void AppendByteLevel(std::string_view bytes, std::string& out) {
  const ByteTables& t = Tables();
  for (char c : bytes) AppendUtf8(t.to_codepoint[static_cast<uint8_t>(c)], out);
}

std::string DecodeByteLevel(std::string_view text) {
  const ByteTables& t = Tables();
  std::string out;
  out.reserve(text.size());
  size_t i = 0;
  while (i < text.size()) {
    const auto c0 = static_cast<unsigned char>(text[i]);
    if (c0 < 0x80) {
      const int b = t.to_byte[c0];
      if (b >= 0) out += static_cast<char>(b);
      else out += static_cast<char>(c0);  // ASCII outside the alphabet (e.g. ' '): as is
      ++i;
      continue;
    }
    if ((c0 & 0xE0) == 0xC0 && i + 1 < text.size() && (static_cast<unsigned char>(text[i + 1]) & 0xC0) == 0x80) {
      const uint32_t cp = ((c0 & 0x1Fu) << 6) | (static_cast<unsigned char>(text[i + 1]) & 0x3Fu);
      if (cp < t.to_byte.size() && t.to_byte[cp] >= 0) {
        out += static_cast<char>(t.to_byte[cp]);
        i += 2;
        continue;
      }
    }
    // Not a symbol of the alphabet: copy this character (or stray byte) unchanged.
    size_t len = 1;
    if ((c0 & 0xE0) == 0xC0) len = 2;
    else if ((c0 & 0xF0) == 0xE0) len = 3;
    else if ((c0 & 0xF8) == 0xF0) len = 4;
    len = std::min(len, text.size() - i);
    out.append(text, i, len);
    i += len;
  }
  return out;
}

Result<BpeMerges> BpeMerges::Create(const std::vector<std::string>& merges,
                                    const std::function<TokenId(std::string_view)>& lookup) {
  BpeMerges m;
  size_t capacity = 16;
  while (capacity < 2 * merges.size()) capacity *= 2;
  m.slots_.assign(capacity, Slot{});
  m.mask_ = capacity - 1;
  m.shift_ = 64 - std::countr_zero(capacity);
  std::string joined;
  for (size_t i = 0; i < merges.size(); ++i) {
    const std::string& merge = merges[i];
    const size_t space = merge.size() > 1 ? merge.find(' ', 1) : std::string::npos;
    if (space == std::string::npos) {
      return InvalidArgument("tokenizer.ggml.merges[" + std::to_string(i) + "] is not \"left right\"");
    }
    const std::string_view left(merge.data(), space);
    const std::string_view right(merge.data() + space + 1, merge.size() - space - 1);
    joined.assign(left);
    joined += right;
    const TokenId l = lookup(left);
    const TokenId r = lookup(right);
    const TokenId result = lookup(joined);
    if (l < 0 || r < 0 || result < 0) continue;
    const uint64_t key = Key(l, r);
    size_t slot = m.Home(key);
    while (m.slots_[slot].key != kEmpty && m.slots_[slot].key != key) slot = (slot + 1) & m.mask_;
    if (m.slots_[slot].key == key) continue;  // keeps the first (lowest rank)
    m.slots_[slot] = Slot{key, static_cast<int32_t>(i), result};
    ++m.size_;
  }
  return m;
}

// Most pre-tokens are a few bytes long. For them a flat array of pair ranks,
// scanned for the lowest (leftmost on ties) after every merge, beats the heap:
// the same ~3n table lookups, and the O(n^2) part is integer compares.
void BpeMerges::ApplyShort(std::vector<TokenId>& ids) const {
  constexpr int32_t kNone = INT32_MAX;
  int n = static_cast<int>(ids.size());
  int32_t rank[kShortWord];
  TokenId result[kShortWord];
  auto pair = [&](int i) {
    if (const Slot* m = Find(ids[i], ids[i + 1])) {
      rank[i] = m->rank;
      result[i] = m->result;
    } else {
      rank[i] = kNone;
    }
  };
  for (int i = 0; i + 1 < n; ++i) pair(i);
  while (n > 1) {
    int best = 0;
    for (int i = 1; i + 1 < n; ++i) {
      if (rank[i] < rank[best]) best = i;
    }
    if (rank[best] == kNone) break;
    ids[best] = result[best];
    for (int i = best + 1; i + 1 < n; ++i) {
      ids[i] = ids[i + 1];
      rank[i] = rank[i + 1];
      result[i] = result[i + 1];
    }
    --n;
    if (best > 0) pair(best - 1);
    if (best + 1 < n) pair(best);
  }
  ids.resize(static_cast<size_t>(n));
}

void BpeMerges::Apply(std::vector<TokenId>& ids) const {
  const int n = static_cast<int>(ids.size());
  if (n < 2) return;
  if (n <= kShortWord) {
    ApplyShort(ids);
    return;
  }

  struct Candidate {
    int32_t rank;
    int32_t pos;  // index of the left symbol
    TokenId left;
    TokenId right;
    TokenId result;
  };
  // Heap order: lowest rank first, then leftmost (llama.cpp llm_bigram_bpe::comparator,
  // Hugging Face models/bpe/word.rs Merge ordering).
  auto later = [](const Candidate& a, const Candidate& b) {
    return a.rank > b.rank || (a.rank == b.rank && a.pos > b.pos);
  };
  thread_local std::vector<int32_t> next;
  thread_local std::vector<int32_t> prev;
  thread_local std::vector<Candidate> heap;
  next.resize(static_cast<size_t>(n));
  prev.resize(static_cast<size_t>(n));
  heap.clear();
  for (int i = 0; i < n; ++i) {
    prev[i] = i - 1;
    next[i] = i + 1 < n ? i + 1 : -1;
  }
  auto consider = [&](int pos) {
    if (pos < 0 || next[pos] < 0) return;
    const TokenId left = ids[pos];
    const TokenId right = ids[next[pos]];
    if (const Slot* m = Find(left, right)) {
      heap.push_back({m->rank, pos, left, right, m->result});
      std::push_heap(heap.begin(), heap.end(), later);
    }
  };
  for (int i = 0; i + 1 < n; ++i) consider(i);

  constexpr TokenId kMerged = -2;
  while (!heap.empty()) {
    std::pop_heap(heap.begin(), heap.end(), later);
    const Candidate c = heap.back();
    heap.pop_back();
    // Stale when either side changed since the candidate was queued: a symbol's
    // id changes whenever it absorbs its right neighbour, and a symbol merged
    // away holds kMerged.
    const int right_pos = next[c.pos];
    if (ids[c.pos] != c.left || right_pos < 0 || ids[right_pos] != c.right) continue;
    ids[c.pos] = c.result;
    ids[right_pos] = kMerged;
    next[c.pos] = next[right_pos];
    if (next[c.pos] >= 0) prev[next[c.pos]] = c.pos;
    consider(prev[c.pos]);
    consider(c.pos);
  }
  ids.erase(std::remove(ids.begin(), ids.end(), kMerged), ids.end());
}

}  // namespace tollgate::local_backend::internal
