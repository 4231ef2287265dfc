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
  int32_t id = -1;
  if (!free_.empty()) {
    id = free_.back();
    free_.pop_back();
  } else if (pool_->allocated_pages() < pool_->shape().max_pages) {
    const int next = pool_->allocated_pages();
    if (auto r = pool_->Grow(next + 1); !r) return r.error();
    pages_.emplace_back();
    id = next;
  } else if (!lru_.empty()) {
    id = lru_.front();
    lru_.pop_front();
    Page& p = pages_[static_cast<size_t>(id)];
    index_.erase(p.key);
    p.registered = false;
    p.tokens.clear();
    ++p.generation;
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
    const int32_t parent = i == 0 ? -1 : seq.pages_[i - 1];
    const uint64_t parent_key = parent < 0 ? 0 : pages_[static_cast<size_t>(parent)].key;
    // A parent that is not registered (an identical page was registered
    // first by another sequence) ends the chain: this page cannot be found.
    if (parent >= 0 && !pages_[static_cast<size_t>(parent)].registered) continue;
    const auto ids = std::span<const TokenId>(seq.tokens_).subspan(i * kKvPageTokens, kKvPageTokens);
    const uint64_t key = Key(parent_key, ids);
    if (index_.contains(key)) continue;  // the same content is cached already
    Page& p = pages_[static_cast<size_t>(id)];
    p.registered = true;
    p.key = key;
    p.parent = parent;
    p.parent_generation = parent < 0 ? 0 : pages_[static_cast<size_t>(parent)].generation;
    p.tokens.assign(ids.begin(), ids.end());
    index_.emplace(key, id);
  }
}

void PagedKvCache::Release(KvSequence& seq) {
  for (int32_t id : seq.pages_) Unref(id);
  seq.pages_.clear();
  seq.tokens_.clear();
  seq.registered_ = 0;
}

}  // namespace tollgate::local_backend
