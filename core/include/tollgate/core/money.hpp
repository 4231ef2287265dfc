// Exact money arithmetic. No floating point touches the ledger.
//
// Units:
//   Money           integer nano-USD (1e-9 USD); int64 holds +-9.2e9 USD.
//   TokenPrice      integer femto-USD per token (1e-15 USD), which is the same
//                   number as nano-USD per million tokens: "$0.15 / 1M tokens"
//                   is 150'000'000. Any price written with up to 9 decimals of
//                   USD per million tokens is exact.
//
// Cost of a call (OpenAI pricing semantics, see WIRE-FORMATS.md 3.1: cache
// reads and cache writes are included in prompt tokens, reasoning tokens in
// completion tokens):
//   femto = (prompt - cached - cache_write) * prompt_price
//         + cached * cached_price + cache_write * cache_write_price
//         + (completion - reasoning) * completion_price
//         + reasoning * reasoning_price
//   cost_nano_usd = round_half_up(femto / 1'000'000) + per_request
// computed in 128-bit integers, so no intermediate overflows.
#pragma once

#include "tollgate/core/chat.hpp"
#include "tollgate/core/error.hpp"

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace tollgate {

struct Money {
  int64_t nano_usd = 0;
  friend auto operator<=>(const Money&, const Money&) = default;
  Money operator+(Money o) const { return {nano_usd + o.nano_usd}; }
};

struct TokenPrice {
  int64_t femto_usd_per_token = 0;
  friend auto operator<=>(const TokenPrice&, const TokenPrice&) = default;
};

// Per-token prices of one endpoint. `cached_prompt` (cache reads) and
// `cache_write` default to `prompt` when a config gives none (the config
// loader sets them; this struct holds what is configured); reasoning tokens
// cost `reasoning` when set, else `completion`. `per_request` is charged once
// per billed call.
struct Pricing {
  TokenPrice prompt;
  TokenPrice completion;
  TokenPrice cached_prompt;
  TokenPrice cache_write;
  std::optional<TokenPrice> reasoning;
  Money per_request;
};

// Parses a non-negative decimal USD amount ("12", "0.5", "1e-3" is rejected) with
// at most 9 fractional digits into nano-USD. Errors: kInvalidArgument.
Result<Money> ParseUsd(std::string_view decimal);

// Parses a price written as USD per million tokens ("0.15", "2.50") with at most
// 9 fractional digits. Errors: kInvalidArgument.
Result<TokenPrice> ParsePricePerMillion(std::string_view decimal);

// Exact decimal text of a money amount in USD, trailing zeros trimmed
// ("0.000123", "5", "-1.5").
std::string FormatUsd(Money money);

// Exact decimal text of a price in USD per token, as OpenRouter's /models
// `pricing.prompt` strings ("0.00000015", "0").
std::string FormatUsdPerToken(TokenPrice price);

// Approximate USD value for display in JSON responses (`usage.cost`). Never
// stored.
double ToUsd(Money money);

// Cost of one call, formula above. Negative counts count as 0 and cached is
// clamped to [0, prompt], so no input makes a cost negative; a cost beyond
// int64 saturates.
Money CallCost(const Pricing& pricing, int64_t prompt_tokens, int64_t cached_tokens,
               int64_t completion_tokens);

// The same for a whole Usage, cache writes included: cached and cache_write
// are each clamped to what is left of prompt (cached first).
Money CallCost(const Pricing& pricing, const Usage& usage);

}  // namespace tollgate
