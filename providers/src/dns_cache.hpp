// A small DNS cache for upstream connections (internal to providers/).
//
// Resolved addresses are kept per (host, port) for a fixed TTL. The system
// resolver behind Asio (getaddrinfo(3)) does not report record TTLs, so a
// fixed, configurable TTL (default 30 s) is the honest design: an upstream that
// moves is picked up within one TTL, and sooner when every cached address
// refuses or times out (the client then drops the entry and resolves afresh,
// see http_client.cpp). Failures are cached too, briefly (negative TTL,
// default 1 s; 0 = not cached), so that a burst of calls to a host that does
// not resolve does not become a burst of lookups.
//
// Concurrent misses for one host are not coalesced: each resolves and the
// last answer wins (a few duplicate lookups at expiry, no waiting on a shared
// lookup that might hang).
//
// Bounded: at most `max_entries`; inserting into a full cache first drops the
// expired entries, then the entry that expires first.
//
// Thread-safety: every member may be called from any thread (one mutex; no
// I/O under it). The clock is injected for tests.
#pragma once

#include <boost/asio/ip/tcp.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace tollgate::providers::detail {

class DnsCache {
 public:
  using Clock = std::chrono::steady_clock;
  using Endpoints = std::vector<boost::asio::ip::tcp::endpoint>;

  struct Options {
    int ttl_ms = 30000;          // positive answers; <= 0 disables the cache
    int negative_ttl_ms = 1000;  // failures; <= 0 = failures are not cached
    std::size_t max_entries = 1024;
  };

  struct Entry {
    bool failed = false;  // a cached resolution failure
    Endpoints endpoints;  // !failed: the addresses, in the resolver's order
    std::string error;    // failed: the resolver's message (no host name in it)
  };

  struct Stats {
    std::uint64_t hits = 0;     // Find() answered from the cache (either kind)
    std::uint64_t misses = 0;   // Find() found nothing fresh
    std::uint64_t dropped = 0;  // entries removed by Drop() (connect failures)
    std::size_t entries = 0;    // cached now, expired ones included until evicted
  };

  explicit DnsCache(Options options, std::function<Clock::time_point()> now = &Clock::now);

  // A fresh entry for host:port, or nullopt (counted as a miss). Host names
  // compare case-insensitively.
  std::optional<Entry> Find(std::string_view host, std::uint16_t port);
  // Caches addresses (ignored when empty or when the cache is disabled).
  void Put(std::string_view host, std::uint16_t port, Endpoints endpoints);
  // Caches a resolution failure for the negative TTL.
  void PutFailure(std::string_view host, std::uint16_t port, std::string error);
  // Forgets host:port (every cached address failed to connect).
  void Drop(std::string_view host, std::uint16_t port);

  Stats GetStats() const;

 private:
  struct Slot {
    Entry entry;
    Clock::time_point expires;
  };
  static std::string Key(std::string_view host, std::uint16_t port);
  void Insert(std::string key, Slot slot);  // mu_ held

  const Options options_;
  const std::function<Clock::time_point()> now_;
  mutable std::mutex mu_;
  std::map<std::string, Slot, std::less<>> slots_;  // guarded by mu_
  Stats stats_;                                     // guarded by mu_
};

}  // namespace tollgate::providers::detail
