// Shared by rate_limiter_test.cpp and rate_limiter_pgtest.cpp: a minute
// boundary to count windows from, and a key with just the rate limits set.
#pragma once

#include "tollgate/billing/key_cache.hpp"

#include <chrono>
#include <cstdint>
#include <optional>

namespace tollgate::billing::testing {

// 2026-11-19 07:07:00 UTC: a minute boundary (1'795'000'020 = 60 * 29'916'667).
inline const std::chrono::system_clock::time_point kMinute0{std::chrono::seconds(1'795'000'020)};

inline KeyRecord RateLimitedKey(int64_t id, std::optional<int64_t> rpm, std::optional<int64_t> tpm = std::nullopt,
                                std::optional<int64_t> concurrent = std::nullopt) {
  KeyRecord key;
  key.id = id;
  key.requests_per_minute = rpm;
  key.tokens_per_minute = tpm;
  key.max_concurrent = concurrent;
  return key;
}

}  // namespace tollgate::billing::testing
