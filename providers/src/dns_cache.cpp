#include "dns_cache.hpp"

#include <algorithm>
#include <cctype>

namespace tollgate::providers::detail {

DnsCache::DnsCache(Options options, std::function<Clock::time_point()> now)
    : options_(options), now_(std::move(now)) {}

std::string DnsCache::Key(std::string_view host, std::uint16_t port) {
  std::string key(host);
  std::transform(key.begin(), key.end(), key.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  key += '|';
  key += std::to_string(port);
  return key;
}

std::optional<DnsCache::Entry> DnsCache::Find(std::string_view host, std::uint16_t port) {
  const std::string key = Key(host, port);
  std::lock_guard lock(mu_);
  auto it = slots_.find(key);
  if (it == slots_.end() || it->second.expires <= now_()) {
    if (it != slots_.end()) slots_.erase(it);
    ++stats_.misses;
    return std::nullopt;
  }
  ++stats_.hits;
  return it->second.entry;
}

void DnsCache::Put(std::string_view host, std::uint16_t port, Endpoints endpoints) {
  if (options_.ttl_ms <= 0 || endpoints.empty() || options_.max_entries == 0) return;
  Slot slot{Entry{false, std::move(endpoints), {}}, {}};
  std::lock_guard lock(mu_);
  slot.expires = now_() + std::chrono::milliseconds(options_.ttl_ms);
  Insert(Key(host, port), std::move(slot));
}

void DnsCache::PutFailure(std::string_view host, std::uint16_t port, std::string error) {
  if (options_.ttl_ms <= 0 || options_.negative_ttl_ms <= 0 || options_.max_entries == 0) return;
  Slot slot{Entry{true, {}, std::move(error)}, {}};
  std::lock_guard lock(mu_);
  slot.expires = now_() + std::chrono::milliseconds(options_.negative_ttl_ms);
  Insert(Key(host, port), std::move(slot));
}

void DnsCache::Drop(std::string_view host, std::uint16_t port) {
  const std::string key = Key(host, port);
  std::lock_guard lock(mu_);
  if (slots_.erase(key) > 0) ++stats_.dropped;
}

void DnsCache::Insert(std::string key, Slot slot) {
  auto it = slots_.find(key);
  if (it != slots_.end()) {
    it->second = std::move(slot);
    return;
  }
  if (slots_.size() >= options_.max_entries) {
    const auto now = now_();
    std::erase_if(slots_, [&](const auto& kv) { return kv.second.expires <= now; });
  }
  if (slots_.size() >= options_.max_entries) {
    auto first = std::min_element(slots_.begin(), slots_.end(),
                                  [](const auto& a, const auto& b) { return a.second.expires < b.second.expires; });
    slots_.erase(first);
  }
  slots_.emplace(std::move(key), std::move(slot));
}

DnsCache::Stats DnsCache::GetStats() const {
  std::lock_guard lock(mu_);
  Stats s = stats_;
  s.entries = slots_.size();
  return s;
}

}  // namespace tollgate::providers::detail
