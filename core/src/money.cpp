#include "tollgate/core/money.hpp"

#include <algorithm>

namespace tollgate {
namespace {

// Parses "123.456" into an integer scaled by 10^scale_digits. Rejects signs,
// exponents, empty parts and more than `scale_digits` fractional digits.
Result<int64_t> ParseScaledDecimal(std::string_view text, int scale_digits,
                                   std::string_view what) {
  auto bad = [&](std::string_view why) {
    return InvalidArgument(std::string(what) + " '" + std::string(text) + "': " +
                           std::string(why));
  };
  if (text.empty()) return bad("empty");
  size_t dot = text.find('.');
  std::string_view whole = text.substr(0, dot);
  std::string_view frac = dot == std::string_view::npos ? std::string_view{} : text.substr(dot + 1);
  if (whole.empty() && frac.empty()) return bad("not a number");
  if (dot != std::string_view::npos && frac.empty()) return bad("not a decimal number");
  if (static_cast<int>(frac.size()) > scale_digits) {
    return bad("more than " + std::to_string(scale_digits) + " decimal places");
  }
  __int128 value = 0;
  for (char c : whole) {
    if (c < '0' || c > '9') return bad("not a non-negative decimal number");
    value = value * 10 + (c - '0');
    if (value > INT64_MAX) return bad("too large");
  }
  for (int i = 0; i < scale_digits; ++i) {
    int digit = 0;
    if (i < static_cast<int>(frac.size())) {
      char c = frac[i];
      if (c < '0' || c > '9') return bad("not a non-negative decimal number");
      digit = c - '0';
    }
    value = value * 10 + digit;
    if (value > INT64_MAX) return bad("too large");
  }
  return static_cast<int64_t>(value);
}

// Decimal text of value / 10^scale_digits with trailing zeros trimmed.
std::string FormatScaled(int64_t value, int scale_digits) {
  bool negative = value < 0;
  unsigned __int128 magnitude = negative ? -static_cast<__int128>(value) : value;
  unsigned __int128 scale = 1;
  for (int i = 0; i < scale_digits; ++i) scale *= 10;
  uint64_t whole = static_cast<uint64_t>(magnitude / scale);
  uint64_t frac = static_cast<uint64_t>(magnitude % scale);
  std::string out = negative ? "-" : "";
  out += std::to_string(whole);
  if (frac != 0) {
    std::string digits = std::to_string(frac);
    digits.insert(0, scale_digits - digits.size(), '0');
    while (!digits.empty() && digits.back() == '0') digits.pop_back();
    out += "." + digits;
  }
  return out;
}

}  // namespace

Result<Money> ParseUsd(std::string_view decimal) {
  auto v = ParseScaledDecimal(decimal, 9, "USD amount");
  if (!v) return v.error();
  return Money{*v};
}

Result<TokenPrice> ParsePricePerMillion(std::string_view decimal) {
  // USD per 1e6 tokens with 9 decimals = nano-USD per 1e6 tokens = femto-USD per token.
  auto v = ParseScaledDecimal(decimal, 9, "price (USD per million tokens)");
  if (!v) return v.error();
  return TokenPrice{*v};
}

std::string FormatUsd(Money money) { return FormatScaled(money.nano_usd, 9); }

std::string FormatUsdPerToken(TokenPrice price) {
  return FormatScaled(price.femto_usd_per_token, 15);
}

double ToUsd(Money money) { return static_cast<double>(money.nano_usd) / 1e9; }

Money CallCost(const Pricing& pricing, int64_t prompt_tokens, int64_t cached_tokens,
               int64_t completion_tokens) {
  Usage usage;
  usage.prompt_tokens = prompt_tokens;
  usage.cached_tokens = cached_tokens;
  usage.completion_tokens = completion_tokens;
  return CallCost(pricing, usage);
}

Money CallCost(const Pricing& pricing, const Usage& usage) {
  // Counts come from upstreams: never let a bad one make a cost negative.
  const int64_t prompt_tokens = std::max<int64_t>(usage.prompt_tokens, 0);
  const int64_t completion_tokens = std::max<int64_t>(usage.completion_tokens, 0);
  const int64_t cached_tokens = std::clamp<int64_t>(usage.cached_tokens, 0, prompt_tokens);
  const int64_t write_tokens = std::clamp<int64_t>(usage.cache_write_tokens, 0, prompt_tokens - cached_tokens);
  const int64_t reasoning_tokens = std::clamp<int64_t>(usage.reasoning_tokens, 0, completion_tokens);
  const TokenPrice reasoning_price = pricing.reasoning.value_or(pricing.completion);
  __int128 femto = static_cast<__int128>(prompt_tokens - cached_tokens - write_tokens) *
                       pricing.prompt.femto_usd_per_token +
                   static_cast<__int128>(cached_tokens) * pricing.cached_prompt.femto_usd_per_token +
                   static_cast<__int128>(write_tokens) * pricing.cache_write.femto_usd_per_token +
                   static_cast<__int128>(completion_tokens - reasoning_tokens) * pricing.completion.femto_usd_per_token +
                   static_cast<__int128>(reasoning_tokens) * reasoning_price.femto_usd_per_token;
  __int128 nano = (femto + 500'000) / 1'000'000 +  // round half up; femto >= 0
                  std::max<int64_t>(pricing.per_request.nano_usd, 0);
  return Money{static_cast<int64_t>(std::min<__int128>(nano, INT64_MAX))};
}

}  // namespace tollgate
