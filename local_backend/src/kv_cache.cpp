#include "tollgate/local_backend/kv_cache.hpp"

#include <algorithm>
#include <cassert>
#include <cstring>

namespace tollgate::local_backend {

Result<std::unique_ptr<PagedKvCache>> PagedKvCache::Create(Backend& backend, const KvPoolShape& shape,
                                                          bool prefix_cache) {
  auto pool = backend.CreateKvPool(shape);
  if (!pool) return pool.error();
  return std::unique_ptr<PagedKvCache>(new PagedKvCache(std::move(*pool), prefix_cache));
}

PagedKvCache::PagedKvCache(std::unique_ptr<KvPool> pool, bool prefix_cache)
    : pool_(std::move(pool)), prefix_cache_(prefix_cache) {}

PagedKvCacheStats PagedKvCache::stats() const {
  PagedKvCacheStats s;
  s.total_pages = pool_->shape().max_pages;
  s.used_pages = used_pages_;
  s.cached_pages = static_cast<int>(lru_.size());
  s.prefix_lookups = prefix_lookups_;
  s.prefix_hit_tokens = prefix_hit_tokens_;
  return s;
}

// FNV-1a over the parent's key and the token ids (exactness comes from the
// comparison in AttachPrefix, not from this hash).
uint64_t PagedKvCache::Key(uint64_t parent_key, std::span<const TokenId> tokens) {
  uint64_t h = 14695981039346656037ull;
  auto mix = [&](uint64_t v) {
    for (int i = 0; i < 8; ++i) {
      h ^= (v >> (8 * i)) & 0xff;
      h *= 1099511628211ull;
    }
  };
  mix(parent_key);
  for (TokenId t : tokens) mix(static_cast<uint32_t>(t));
  return h;
}

Result<int32_t> PagedKvCache::TakePage() {
  const bool full = pool_->allocated_pages() >= pool_->shape().max_pages;
  if (free_.empty() && full && !lru_.empty()) Unregister(lru_.front());  // evict the least recently used
  int32_t id = -1;
  if (!free_.empty()) {
    id = free_.back();
    free_.pop_back();
  } else if (!full) {
    const int next = pool_->allocated_pages();
    if (auto r = pool_->Grow(next + 1); !r) return r.error();
    pages_.emplace_back();
    id = next;
  } else {
    return Error{ErrorCode::kResourceExhausted,
                 "the KV cache budget of " + std::to_string(pool_->shape().max_pages) + " pages (" +
                     std::to_string(pool_->page_bytes() * static_cast<size_t>(pool_->shape().max_pages) >> 20) +
                     " MiB) is in use"};
  }
  Page& p = pages_[static_cast<size_t>(id)];
  assert(p.refs == 0);
  p.refs = 1;
  ++used_pages_;
  return id;
}

void PagedKvCache::Unref(int32_t id) {
  Page& p = pages_[static_cast<size_t>(id)];
  assert(p.refs > 0);
  if (--p.refs > 0) return;
  --used_pages_;
  if (p.registered) {
    p.lru = lru_.insert(lru_.end(), id);
  } else {
    free_.push_back(id);
  }
}

int PagedKvCache::AttachPrefix(KvSequence& seq, std::span<const TokenId> prompt) {
  assert(seq.pages_.empty() && seq.tokens_.empty());
  ++prefix_lookups_;
  if (!prefix_cache_ || prompt.empty()) return 0;
  const size_t max_pages = (prompt.size() - 1) / kKvPageTokens;
  uint64_t key = 0;
  int32_t parent = -1;
  for (size_t i = 0; i < max_pages; ++i) {
    const auto tokens = prompt.subspan(i * kKvPageTokens, kKvPageTokens);
    key = Key(key, tokens);
    auto it = index_.find(key);
    if (it == index_.end()) break;
    Page& p = pages_[static_cast<size_t>(it->second)];
    const uint32_t parent_generation = parent < 0 ? 0 : pages_[static_cast<size_t>(parent)].generation;
    if (p.parent != parent || p.parent_generation != parent_generation || !std::equal(tokens.begin(), tokens.end(), p.tokens.begin(), p.tokens.end())) break;
    if (p.refs++ == 0) {
      lru_.erase(p.lru);
      ++used_pages_;
    }
    seq.pages_.push_back(it->second);
    seq.tokens_.insert(seq.tokens_.end(), tokens.begin(), tokens.end());
    parent = it->second;
  }
  seq.registered_ = static_cast<int>(seq.pages_.size());
  seq.chain_tail_ = parent;
  prefix_hit_tokens_ += seq.tokens();
  return seq.tokens();
}

Result<void> PagedKvCache::Reserve(KvSequence& seq, int tokens) {
  while (seq.capacity() < tokens) {
    auto page = TakePage();
    if (!page) return page.error();
    seq.pages_.push_back(*page);
  }
  return {};
}

void PagedKvCache::Append(KvSequence& seq, std::span<const TokenId> tokens) {
  assert(seq.tokens() + static_cast<int>(tokens.size()) <= seq.capacity());
  seq.tokens_.insert(seq.tokens_.end(), tokens.begin(), tokens.end());
  if (!prefix_cache_) return;
  const int full = seq.tokens() / kKvPageTokens;
  for (; seq.registered_ < full; ++seq.registered_) {
    const auto i = static_cast<size_t>(seq.registered_);
    const int32_t id = seq.pages_[i];
    // The chain continues from the registered page holding the previous
    // page's content: the sequence's own, or an identical one registered
    // first by another sequence.
    const int32_t parent = seq.chain_tail_;
    // The page holding the previous content was evicted meanwhile (another
    // sequence's twin): the rest of this sequence cannot be found any more.
    if (parent >= 0 && !pages_[static_cast<size_t>(parent)].registered) {
      seq.registered_ = full;
      break;
    }
    const uint64_t parent_key = parent < 0 ? 0 : pages_[static_cast<size_t>(parent)].key;
    const uint32_t parent_generation = parent < 0 ? 0 : pages_[static_cast<size_t>(parent)].generation;
    const auto ids = std::span<const TokenId>(seq.tokens_).subspan(i * kKvPageTokens, kKvPageTokens);
    const uint64_t key = Key(parent_key, ids);
    if (auto it = index_.find(key); it != index_.end()) {
      Page& twin = pages_[static_cast<size_t>(it->second)];
      if (twin.parent == parent && twin.parent_generation == parent_generation &&
          std::equal(ids.begin(), ids.end(), twin.tokens.begin(), twin.tokens.end())) {
        seq.chain_tail_ = it->second;  // the same content is cached already
        continue;
      }
      // A stale entry (its parent was evicted and reused) or a collision:
      // this page takes its place.
      Unregister(it->second);
    }
    Page& p = pages_[static_cast<size_t>(id)];
    p.registered = true;
    p.key = key;
    p.parent = parent;
    p.parent_generation = parent_generation;
    p.tokens.assign(ids.begin(), ids.end());
    index_.emplace(key, id);
    seq.chain_tail_ = id;
  }
}

void PagedKvCache::Unregister(int32_t id) {
  Page& p = pages_[static_cast<size_t>(id)];
  index_.erase(p.key);
  p.registered = false;
  p.tokens.clear();
  ++p.generation;  // pages registered after it no longer match
  if (p.refs == 0) {
    lru_.erase(p.lru);
    free_.push_back(id);
  }
}

void PagedKvCache::Release(KvSequence& seq) {
  // Last page first: a cached prefix is evicted from its end, so what stays
  // cached of it is still reachable from its beginning (as vLLM frees blocks).
  for (auto it = seq.pages_.rbegin(); it != seq.pages_.rend(); ++it) Unref(*it);
  seq.pages_.clear();
  seq.tokens_.clear();
  seq.registered_ = 0;
  seq.chain_tail_ = -1;
}

}  // namespace tollgate::local_backend
