#include "tollgate/routing/catalog.hpp"

#include <algorithm>

namespace tollgate::routing {

const Pricing& Endpoint::PricingFor(int64_t prompt_tokens) const {
  // Scanned from the end so that the last matching tier wins even if a
  // config listed tiers out of order.
  for (auto it = tiers.rbegin(); it != tiers.rend(); ++it) {
    if (it->above_prompt_tokens < prompt_tokens) return it->pricing;
  }
  return pricing;
}

Pricing Endpoint::Dearest() const {
  Pricing out = pricing;
  // Reasoning compares effective prices: a tier without its own reasoning
  // price bills reasoning at its completion price, which may be the dearest.
  bool any_reasoning = pricing.reasoning.has_value();
  TokenPrice reasoning = pricing.reasoning.value_or(pricing.completion);
  for (const PriceTier& tier : tiers) {
    const Pricing& p = tier.pricing;
    out.prompt = std::max(out.prompt, p.prompt);
    out.completion = std::max(out.completion, p.completion);
    out.cached_prompt = std::max(out.cached_prompt, p.cached_prompt);
    out.cache_write = std::max(out.cache_write, p.cache_write);
    out.per_request = std::max(out.per_request, p.per_request);
    any_reasoning = any_reasoning || p.reasoning.has_value();
    reasoning = std::max(reasoning, p.reasoning.value_or(p.completion));
  }
  // Without any explicit reasoning price the effective one is the dearest
  // completion price already, so leaving it unset says the same thing.
  out.reasoning = any_reasoning ? std::optional<TokenPrice>(reasoning) : std::nullopt;
  return out;
}

Catalog::Catalog(std::vector<Model> models) : models_(std::move(models)) {
  std::size_t count = 0;
  for (const Model& m : models_) count += m.endpoints.size();
  endpoints_.reserve(count);
  owners_.reserve(count);
  // models_ is never resized after this, so these addresses stay valid (a
  // moved vector keeps its buffer, so they survive moving the catalog too).
  for (Model& m : models_) {
    for (Endpoint& e : m.endpoints) {
      e.index = endpoints_.size();
      endpoints_.push_back(&e);
      owners_.push_back(&m);
    }
  }
}

const Model* Catalog::Find(std::string_view id) const {
  auto it = std::find_if(models_.begin(), models_.end(), [&](const Model& m) { return m.id == id; });
  return it == models_.end() ? nullptr : &*it;
}

std::pair<std::string_view, std::string_view> SplitVariant(std::string_view model_id) {
  // Slugs may contain colons of their own ("...:free", "...:beta"); only the
  // routing variants are split off.
  size_t colon = model_id.rfind(':');
  if (colon != std::string_view::npos) {
    std::string_view variant = model_id.substr(colon + 1);
    if (variant == "nitro" || variant == "floor") return {model_id.substr(0, colon), variant};
  }
  return {model_id, {}};
}

}  // namespace tollgate::routing
