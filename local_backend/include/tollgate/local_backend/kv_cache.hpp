// The paged KV cache of the local engine: which pages of a backend KvPool
// (backend.hpp) hold which sequence's positions, within a fixed budget of
// pages, and a prompt-prefix cache over them.
//
// After vLLM (Kwon et al., "Efficient Memory Management for Large Language
// Model Serving with PagedAttention", SOSP 2023) and its automatic prefix
// caching: a sequence owns a page table; position p lives in page
// pages[p / kKvPageTokens]. Pages are taken as a sequence grows, so memory
// follows what the running sequences use, not their maximum length. A page
// that is full is registered under its content (its kKvPageTokens token ids
// and the chain of pages before it, compared exactly, never by hash alone);
// a later prompt that starts with the same tokens shares those pages instead
// of computing them again (a shared system prompt is prefilled once). Shared
// pages are read-only: only whole pages are shared, and a sequence's new
// positions always go to pages it alone holds.
//
// When a sequence is released its registered pages stay cached (least
// recently used first out) until their memory is needed; other pages go back
// to the free list. A page with memory is never returned to the system.
//
// Thread-safety: none. One engine thread owns the cache and its sequences.
#pragma once

#include "tollgate/core/error.hpp"
#include "tollgate/local_backend/backend.hpp"
#include "tollgate/local_backend/tokenizer.hpp"

#include <cstdint>
#include <list>
#include <memory>
#include <span>
#include <unordered_map>
#include <vector>

namespace tollgate::local_backend {

// One sequence's page table and the tokens whose keys and values are stored.
// Create empty; give it back with PagedKvCache::Release before destroying it
// (the destructor does not, since it does not know its cache).
class KvSequence {
 public:
  // Positions stored (0 .. tokens() - 1).
  int tokens() const { return static_cast<int>(tokens_.size()); }
  std::span<const int32_t> pages() const { return pages_; }
  std::span<const TokenId> token_ids() const { return tokens_; }
  // Positions that can be stored without taking another page.
  int capacity() const { return static_cast<int>(pages_.size()) * kKvPageTokens; }

 private:
  friend class PagedKvCache;
  std::vector<int32_t> pages_;
  std::vector<TokenId> tokens_;
  int registered_ = 0;  // leading pages already in the prefix index (or taken from it)
  int32_t chain_tail_ = -1;  // the registered page holding page registered_ - 1's content
};

struct PagedKvCacheStats {
  int total_pages = 0;      // the budget
  int used_pages = 0;       // held by live sequences
  int cached_pages = 0;     // held by nobody, keeping a reusable prefix
  int64_t prefix_lookups = 0;      // AttachPrefix calls
  int64_t prefix_hit_tokens = 0;   // prompt tokens taken from the prefix cache
};

class PagedKvCache {
 public:
  // `shape.max_pages` is the budget. Errors: the backend's (bad shape).
  static Result<std::unique_ptr<PagedKvCache>> Create(Backend& backend, const KvPoolShape& shape,
                                                      bool prefix_cache);

  KvPool& pool() { return *pool_; }
  // Pages a new sequence could take now: free, never allocated, or evictable.
  int available_pages() const { return pool_->shape().max_pages - used_pages_; }
  PagedKvCacheStats stats() const;

  // Shares into the empty `seq` the longest run of whole cached pages that
  // begins `prompt`, leaving at least the prompt's last token to compute (its
  // logits are needed). Returns the positions attached (a multiple of
  // kKvPageTokens; 0 without a prefix cache).
  int AttachPrefix(KvSequence& seq, std::span<const TokenId> prompt);

  // Takes pages so that `seq` can store positions 0 .. tokens - 1.
  // Errors: kResourceExhausted when the budget has no page left after
  // evicting cached prefixes, or memory cannot be allocated; `seq` keeps the
  // pages it had and got.
  Result<void> Reserve(KvSequence& seq, int tokens);

  // Records that `tokens` were stored at positions seq.tokens() ..; pages
  // that became full are registered for reuse. The positions must be
  // reserved.
  void Append(KvSequence& seq, std::span<const TokenId> tokens);

  // Gives back the sequence's pages and empties it.
  void Release(KvSequence& seq);

 private:
  struct Page {
    int refs = 0;
    bool registered = false;
    uint64_t key = 0;        // hash of (parent's key, tokens) when registered
    uint32_t generation = 0;  // bumped each time the page is evicted and reused
    int32_t parent = -1;     // the page before it in the registering sequence
    uint32_t parent_generation = 0;
    std::vector<TokenId> tokens;  // its kKvPageTokens ids when registered
    std::list<int32_t>::iterator lru;  // in lru_ while refs == 0 and registered
  };

  PagedKvCache(std::unique_ptr<KvPool> pool, bool prefix_cache);
  Result<int32_t> TakePage();
  void Unref(int32_t page);
  // Takes a registered page out of the prefix index.
  void Unregister(int32_t page);
  static uint64_t Key(uint64_t parent_key, std::span<const TokenId> tokens);

  std::unique_ptr<KvPool> pool_;
  bool prefix_cache_;
  std::vector<Page> pages_;            // one per allocated page
  std::vector<int32_t> free_;          // allocated, unregistered, unreferenced
  std::list<int32_t> lru_;             // registered, unreferenced: eviction order
  std::unordered_map<uint64_t, int32_t> index_;  // key -> registered page
  int used_pages_ = 0;
  int64_t prefix_lookups_ = 0;
  int64_t prefix_hit_tokens_ = 0;
};

}  // namespace tollgate::local_backend
