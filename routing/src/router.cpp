#include "tollgate/routing/router.hpp"

#include <algorithm>
#include <array>
#include <cmath>
#include <string>
#include <utility>

namespace tollgate::routing {
namespace {

using Strategy = RoutingPolicy::Strategy;
using Sort = ProviderPreferences::Sort;

bool EqualsIgnoreCase(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    auto lower = [](char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; };
    if (lower(a[i]) != lower(b[i])) return false;
  }
  return true;
}

// A name in provider.order / only / ignore names an endpoint by its provider's
// config key, its provider's display name, or its own id (chat.hpp).
bool NameMatches(const Endpoint& e, std::string_view name) {
  return EqualsIgnoreCase(e.provider_id, name) || EqualsIgnoreCase(e.id, name) ||
         (e.provider != nullptr && EqualsIgnoreCase(e.provider->Name(), name));
}

bool MatchesAny(const Endpoint& e, const std::vector<std::string>& names) {
  for (const std::string& n : names) {
    if (NameMatches(e, n)) return true;
  }
  return false;
}

// The position of the first entry of provider.order that names `e`, or
// names.size() when none does.
std::size_t OrderRank(const Endpoint& e, const std::vector<std::string>& names) {
  for (std::size_t i = 0; i < names.size(); ++i) {
    if (NameMatches(e, names[i])) return i;
  }
  return names.size();
}

bool QuantizationAllowed(const Endpoint& e, const std::vector<std::string>& allowed) {
  for (const std::string& q : allowed) {
    if (EqualsIgnoreCase(e.quantization, q)) return true;
  }
  return false;
}

// A uniform double in [0, 1) from the top 53 bits: the same sequence for the
// same seed on every standard library, unlike uniform_real_distribution.
double Uniform01(std::mt19937_64& rng) { return static_cast<double>(rng() >> 11) * 0x1.0p-53; }

Strategy StrategyFor(Sort sort, std::string_view variant, Strategy model_default) {
  switch (sort) {
    case Sort::kPrice: return Strategy::kPrice;
    case Sort::kThroughput: return Strategy::kThroughput;
    case Sort::kLatency: return Strategy::kLatency;
    case Sort::kDefault: break;
  }
  if (variant == "nitro") return Strategy::kThroughput;
  if (variant == "floor") return Strategy::kPrice;
  return model_default;
}

// The effective price of docs/routing.md, in femto-USD per blended token.
double EffectivePrice(const Endpoint& e, const HealthSnapshot& h, int64_t prompt_tokens, const RouterOptions& o) {
  const Pricing& p = e.PricingFor(prompt_tokens);
  const double hit = std::clamp(h.cache_hit_ratio, 0.0, 1.0);  // negative: no sample yet
  const double prompt = static_cast<double>(p.prompt.femto_usd_per_token) * (1 - hit) +
                        static_cast<double>(p.cached_prompt.femto_usd_per_token) * hit;
  const double completion = static_cast<double>(p.completion.femto_usd_per_token);
  const double weights = o.prompt_weight + o.completion_weight;
  double blended = (o.prompt_weight * prompt + o.completion_weight * completion) / weights;
  // The per-request fee spread over the call's blended tokens: its prompt
  // plus the completion the 3:1 blend assumes (prompt x completion/prompt weight).
  if (p.per_request.nano_usd > 0) {
    const double tokens = static_cast<double>(std::max<int64_t>(prompt_tokens, 1)) * weights / o.prompt_weight;
    blended += static_cast<double>(p.per_request.nano_usd) * 1e6 / tokens;
  }
  // A free endpoint (the local engine) still has a price to square and divide by.
  blended = std::max(blended, 1.0);
  double penalty = (1 + o.error_penalty * h.error_rate) * (1 + o.rate_limit_penalty * h.rate_limited_rate);
  if (h.ttft_ms > o.ttft_threshold_ms) penalty *= 1 + o.ttft_penalty_per_s * (h.ttft_ms - o.ttft_threshold_ms) / 1000;
  return blended * penalty;
}

// A preference's list as the caller wrote it, capped like the slug below.
std::string Quoted(const std::vector<std::string>& names) {
  constexpr std::size_t kMaxEcho = 200;
  std::string out = "[";
  for (std::size_t i = 0; i < names.size(); ++i) {
    if (i > 0) out += ", ";
    out += names[i];
    if (out.size() > kMaxEcho) {
      out.resize(kMaxEcho);
      return out + "...]";
    }
  }
  return out + "]";
}

// The slug is echoed back, capped so a huge one cannot inflate the error.
std::string Shown(std::string_view slug) {
  constexpr std::size_t kMaxEcho = 200;
  std::string shown(slug.substr(0, kMaxEcho));
  if (slug.size() > kMaxEcho) shown += "...";
  return shown;
}

Error ModelNotFound(std::string_view slug, std::string param) {
  return Error{ErrorCode::kNotFound, "The model '" + Shown(slug) + "' does not exist; GET /v1/models lists the models",
               std::move(param), "model_not_found"};
}

}  // namespace

std::string_view SkipReasonName(SkipReason reason) {
  switch (reason) {
    case SkipReason::kNone: return "";
    case SkipReason::kNotInOnly: return "only";
    case SkipReason::kIgnored: return "ignore";
    case SkipReason::kNotInOrder: return "order";
    case SkipReason::kQuantization: return "quantizations";
    case SkipReason::kDataCollection: return "data_collection";
    case SkipReason::kNotZdr: return "zdr";
    case SkipReason::kMaxPrice: return "max_price";
    case SkipReason::kUnsupportedParameter: return "unsupported_parameter";
    case SkipReason::kRequireParameters: return "require_parameters";
    case SkipReason::kContextLength: return "context_length";
    case SkipReason::kCircuitOpen: return "circuit_open";
    case SkipReason::kCoolingDown: return "cooling_down";
    case SkipReason::kNoFallbacks: return "no_fallbacks";
  }
  return "";
}

Router::Router(const Catalog* catalog, RouterOptions options) : catalog_(catalog), options_(std::move(options)) {
  health_.reserve(catalog_->endpoint_count());
  for (std::size_t i = 0; i < catalog_->endpoint_count(); ++i) {
    health_.push_back(std::make_unique<EndpointHealth>(&options_.health, catalog_->endpoint(i).max_concurrency));
  }
}

// ---------------------------------------------------------------- Decide

namespace {

// Why the list came out empty: each endpoint records the first filter that
// removed it and filters run in SkipReason order, so the last filter to
// remove anything is the one that removed the last endpoint.
Error EmptiedError(const std::vector<Considered>& considered, std::string_view model_slug, bool has_fallbacks,
                   const ProviderPreferences& prefs, int64_t prompt_tokens, SteadyTime now, SteadyTime soonest) {
  SkipReason last = SkipReason::kNone;
  for (const Considered& c : considered) last = std::max(last, c.skipped);
  std::string of = "no endpoint of model '" + Shown(model_slug) + "'" + (has_fallbacks ? " or its fallbacks" : "");
  auto emptied = [&](std::string_view name, std::string what) {
    return Error{ErrorCode::kNotFound, of + " " + what, "provider." + std::string(name), "no_endpoints"};
  };
  switch (last) {
    case SkipReason::kNotInOnly: return emptied("only", "matches provider.only " + Quoted(prefs.only));
    case SkipReason::kIgnored: return emptied("ignore", "is left after provider.ignore " + Quoted(prefs.ignore));
    case SkipReason::kNotInOrder:
      return emptied("order", "matches provider.order " + Quoted(prefs.order) + " (provider.allow_fallbacks is false)");
    case SkipReason::kQuantization:
      return emptied("quantizations", "matches provider.quantizations " + Quoted(prefs.quantizations));
    case SkipReason::kDataCollection:
      return emptied("data_collection", "matches provider.data_collection \"deny\" (every one may train on or "
                                        "retain prompts)");
    case SkipReason::kNotZdr: return emptied("zdr", "matches provider.zdr (none has zero data retention)");
    case SkipReason::kMaxPrice: return emptied("max_price", "matches provider.max_price");
    case SkipReason::kUnsupportedParameter:
    case SkipReason::kRequireParameters: {
      // The wording the call driver used before routing took this over: an
      // essential parameter wins over require_parameters.
      std::optional<Param> essential;
      std::optional<Param> required;
      for (const Considered& c : considered) {
        if (c.skipped == SkipReason::kUnsupportedParameter && !essential) {
          for (Param p : c.unsupported.List()) {
            if (IsEssential(p)) {
              essential = p;
              break;
            }
          }
        }
        if (c.skipped == SkipReason::kRequireParameters && !required && !c.unsupported.empty()) {
          required = c.unsupported.List().front();
        }
      }
      const Param p = essential ? *essential : required ? *required : Param::kCount_;
      const bool input = p == Param::kImageInput || p == Param::kDocumentInput;
      std::string what = p == Param::kImageInput      ? std::string("image input")
                         : p == Param::kDocumentInput ? std::string("document input (a block only its own API carries)")
                                                      : "the parameter '" + std::string(ParamName(p)) + "'";
      std::string why = essential ? "" : " (provider.require_parameters is set)";
      return Error{ErrorCode::kInvalidArgument, of + " supports " + what + why,
                   input ? "messages" : std::string(ParamName(p)), "unsupported_parameter"};
    }
    case SkipReason::kContextLength: {
      // The endpoint with the largest context names the size.
      const Considered* largest = nullptr;
      for (const Considered& c : considered) {
        if (c.skipped == SkipReason::kContextLength &&
            (largest == nullptr || c.endpoint->context_length > largest->endpoint->context_length)) {
          largest = &c;
        }
      }
      const int64_t tokens = largest != nullptr ? largest->prompt_tokens : prompt_tokens;
      const bool exact = largest != nullptr && largest->prompt_exact;
      return Error{ErrorCode::kInvalidArgument,
                   "the prompt (" + std::string(exact ? "" : "about ") + std::to_string(tokens) +
                       " tokens) does not fit the context of any endpoint of model '" + Shown(model_slug) +
                       "' (largest " + std::to_string(largest != nullptr ? largest->endpoint->context_length : 0) +
                       " tokens)",
                   "messages", "context_length_exceeded"};
    }
    case SkipReason::kCircuitOpen:
    case SkipReason::kCoolingDown: {
      // Whole seconds, rounded up, at least 1: a client retrying at once
      // would only be turned away again.
      const auto wait_ms = std::chrono::duration_cast<Millis>(soonest - now).count();
      const int64_t seconds = std::max<int64_t>(1, (wait_ms + 999) / 1000);
      // Only 429 cooldowns: the providers asked us to wait, so the caller
      // is rate limited too (429, which SDKs retry after Retry-After).
      const bool any_open = std::any_of(considered.begin(), considered.end(),
                                        [](const Considered& c) { return c.skipped == SkipReason::kCircuitOpen; });
      const std::string which =
          "every endpoint of model '" + Shown(model_slug) + "'" + (has_fallbacks ? " and its fallbacks" : "");
      if (!any_open) {
        return Error{ErrorCode::kResourceExhausted,
                     which + " is rate limited by its provider; retry in " + std::to_string(seconds) + " s", "model",
                     "rate_limited", std::to_string(seconds)};
      }
      return Error{ErrorCode::kUnavailable,
                   which + " is unavailable (circuit open or rate limited); retry in " + std::to_string(seconds) + " s",
                   "model", "no_endpoints_available", std::to_string(seconds)};
    }
    case SkipReason::kNone:
    case SkipReason::kNoFallbacks: break;
  }
  return Error{ErrorCode::kUnavailable, "no endpoint can serve model '" + Shown(model_slug) + "'", "model", {}};
}

}  // namespace

std::optional<Error> Router::Decide(const RouteQuery& query, SteadyTime now, std::mt19937_64& rng, Plan* plan) const {
  plan->candidates.clear();
  plan->considered.clear();
  plan->scratch.clear();
  plan->scratch_index.clear();
  if (query.model.empty()) return InvalidArgument("you must provide a model parameter", "model");

  static const ProviderPreferences kNoPreferences;
  const ProviderPreferences& prefs = query.preferences != nullptr ? *query.preferences : kNoPreferences;
  const auto [slug, variant] = SplitVariant(query.model);
  const Model* primary = catalog_->Find(slug);
  if (primary == nullptr) return ModelNotFound(query.model, "model");
  const bool has_fallbacks = query.fallback_models != nullptr && !query.fallback_models->empty();
  if (has_fallbacks) {
    for (const std::string& id : *query.fallback_models) {
      if (catalog_->Find(SplitVariant(id).first) == nullptr) return ModelNotFound(id, "models");
    }
  }
  plan->strategy = StrategyFor(prefs.sort, variant, primary->routing.strategy);

  // ---- 1 + 2: every endpoint of every model, through the filters.
  auto consider = [&](const Model& model) {
    // A model listed twice (as `model` and in `models`) is looked at once.
    for (const Considered& c : plan->considered) {
      if (c.model == &model) return;
    }
    const bool order_only = !prefs.allow_fallbacks && !prefs.order.empty();
    for (const Endpoint& e : model.endpoints) {
      Considered c;
      c.model = &model;
      c.endpoint = &e;
      // max_price holds at the dearest tier the prompt can reach.
      const Pricing& cap_price = e.PricingFor(std::max(query.prompt_tokens, query.prompt_tokens_bound));
      const ParameterSet unsupported = query.parameters.Minus(e.supported);
      bool essential_missing = false;
      for (unsigned i = 0; i < static_cast<unsigned>(Param::kCount_); ++i) {
        if (unsupported.Has(static_cast<Param>(i)) && IsEssential(static_cast<Param>(i))) essential_missing = true;
      }
      if (!prefs.only.empty() && !MatchesAny(e, prefs.only)) {
        c.skipped = SkipReason::kNotInOnly;
      } else if (MatchesAny(e, prefs.ignore)) {
        c.skipped = SkipReason::kIgnored;
      } else if (order_only && !MatchesAny(e, prefs.order)) {
        c.skipped = SkipReason::kNotInOrder;
      } else if (!prefs.quantizations.empty() && !QuantizationAllowed(e, prefs.quantizations)) {
        c.skipped = SkipReason::kQuantization;
      } else if (prefs.deny_data_collection &&
                 (e.data_policy.trains_on_prompts || e.data_policy.retains_prompts)) {
        c.skipped = SkipReason::kDataCollection;
      } else if (prefs.zdr && !e.data_policy.zero_data_retention) {
        c.skipped = SkipReason::kNotZdr;
      } else if ((prefs.max_prompt_price && cap_price.prompt.femto_usd_per_token > *prefs.max_prompt_price) ||
                 (prefs.max_completion_price &&
                  cap_price.completion.femto_usd_per_token > *prefs.max_completion_price) ||
                 (prefs.max_request_price && cap_price.per_request.nano_usd > *prefs.max_request_price)) {
        c.skipped = SkipReason::kMaxPrice;
      } else if (essential_missing) {
        c.skipped = SkipReason::kUnsupportedParameter;
        c.unsupported = unsupported;
      } else if (prefs.require_parameters && !unsupported.empty()) {
        c.skipped = SkipReason::kRequireParameters;
        c.unsupported = unsupported;
      } else if (e.context_length > 0) {
        c.prompt_tokens = query.prompt_tokens;
        if (query.exact_prompt_tokens) {
          if (const std::optional<int64_t> exact = query.exact_prompt_tokens(e)) {
            c.prompt_tokens = *exact;
            c.prompt_exact = true;
          }
        }
        if (c.prompt_tokens > e.context_length) c.skipped = SkipReason::kContextLength;
      }
      plan->considered.push_back(c);
    }
  };
  consider(*primary);
  if (has_fallbacks) {
    for (const std::string& id : *query.fallback_models) consider(*catalog_->Find(SplitVariant(id).first));
  }
  if (plan->considered.empty()) {
    return Error{ErrorCode::kUnavailable, "no endpoint can serve model '" + Shown(slug) + "'", "model", {}};
  }

  // Health last: it is the only filter that reads shared state, so it reads
  // it only for endpoints the request could use. scratch holds, per
  // considered endpoint, its throughput and TTFT (for sorting and the soft
  // preferences).
  const std::size_t n = plan->considered.size();
  plan->scratch.resize(2 * n);
  SteadyTime soonest = SteadyTime::max();
  bool any_eligible = false;
  for (std::size_t i = 0; i < n; ++i) {
    Considered& c = plan->considered[i];
    plan->scratch[2 * i] = -1;
    plan->scratch[2 * i + 1] = -1;
    if (c.skipped != SkipReason::kNone) continue;
    const HealthSnapshot h = health_[c.endpoint->index]->Snapshot(now);
    c.effective_price = EffectivePrice(*c.endpoint, h, query.prompt_tokens, options_);
    plan->scratch[2 * i] = h.throughput_tps;
    plan->scratch[2 * i + 1] = h.ttft_ms;
    if (h.availability == Availability::kCircuitOpen || h.availability == Availability::kCoolingDown) {
      c.skipped = h.availability == Availability::kCircuitOpen ? SkipReason::kCircuitOpen : SkipReason::kCoolingDown;
      soonest = std::min(soonest, h.available_at);
      continue;
    }
    any_eligible = true;  // kAtCapacity stays: the call driver claims slots per attempt
  }
  if (!any_eligible) {
    return EmptiedError(plan->considered, slug, has_fallbacks, prefs, query.prompt_tokens, now, soonest);
  }

  // ---- 3: order. scratch_index[0, m) is the plan in considered indexes;
  // [m, 2m) is room for the stable partition of the soft preferences.
  auto& idx = plan->scratch_index;
  for (std::size_t i = 0; i < n; ++i) {
    if (plan->considered[i].skipped == SkipReason::kNone) idx.push_back(i);
  }
  const std::size_t m = idx.size();
  idx.resize(2 * m);

  auto price = [&](std::size_t i) { return plan->considered[i].effective_price; };
  auto throughput = [&](std::size_t i) { return plan->scratch[2 * i]; };
  auto ttft = [&](std::size_t i) { return plan->scratch[2 * i + 1]; };

  // Sorts keep unknown figures after known ones, ties by effective price then
  // config order, so that equal inputs give the same plan.
  auto by_price = [&](std::size_t a, std::size_t b) {
    return price(a) != price(b) ? price(a) < price(b) : a < b;
  };
  auto by_throughput = [&](std::size_t a, std::size_t b) {
    const double ta = throughput(a), tb = throughput(b);
    if ((ta >= 0) != (tb >= 0)) return ta >= 0;
    if (ta != tb) return ta > tb;
    return by_price(a, b);
  };
  auto by_latency = [&](std::size_t a, std::size_t b) {
    const double la = ttft(a), lb = ttft(b);
    if ((la >= 0) != (lb >= 0)) return la >= 0;
    if (la != lb) return la < lb;
    return by_price(a, b);
  };
  auto misses_soft = [&](std::size_t i) {
    if (prefs.preferred_min_throughput && throughput(i) >= 0 && throughput(i) < *prefs.preferred_min_throughput) {
      return true;
    }
    return prefs.preferred_max_latency_s && ttft(i) >= 0 && ttft(i) > *prefs.preferred_max_latency_s * 1000;
  };

  // Successive weighted draws without replacement over [b, e): the first
  // draw picks with probability weight / total, the next from what is left.
  // Weights are held in Considered::share until the shares are final.
  auto draw = [&](std::size_t b, std::size_t e) {
    auto sum = [&](std::size_t from) {
      double total = 0;
      for (std::size_t j = from; j < e; ++j) total += plan->considered[idx[j]].share;
      return total;
    };
    double total = sum(b);
    for (std::size_t k = b; k < e; ++k) {
      if (total <= 0) total = sum(k);  // subtraction drifted; recount
      if (total <= 0) {
        // Only zero weights left (exploration_share 0): cheapest first.
        std::sort(idx.begin() + k, idx.begin() + e, by_price);
        return;
      }
      double r = Uniform01(rng) * total;
      // r past the last weight (rounding) picks the last positive one.
      std::size_t pick = e;
      for (std::size_t j = k; j < e; ++j) {
        const double w = plan->considered[idx[j]].share;
        if (w <= 0) continue;
        pick = j;
        if (r < w) break;
        r -= w;
      }
      if (pick == e) {  // a drifted total over zero weights only
        std::sort(idx.begin() + k, idx.begin() + e, by_price);
        return;
      }
      total -= plan->considered[idx[pick]].share;
      std::swap(idx[k], idx[pick]);
    }
  };

  // Orders the group idx[b, e) (one model, or all models with partition
  // "none") by `strategy`.
  auto order_group = [&](std::size_t b, std::size_t e, Strategy strategy) {
    // provider.order first, by the position of the entry that names them,
    // then config order (a stable placement: insertion keeps it).
    std::size_t ordered = b;
    if (!prefs.order.empty()) {
      for (std::size_t k = b; k < e; ++k) {
        const std::size_t rank = OrderRank(*plan->considered[idx[k]].endpoint, prefs.order);
        if (rank == prefs.order.size()) continue;
        // To the end of the placed ones (the others keep their order), then
        // back past any placed one whose entry comes later.
        std::rotate(idx.begin() + ordered, idx.begin() + k, idx.begin() + k + 1);
        for (std::size_t pos = ordered;
             pos > b && OrderRank(*plan->considered[idx[pos - 1]].endpoint, prefs.order) > rank; --pos) {
          std::swap(idx[pos], idx[pos - 1]);
        }
        ++ordered;
      }
    }
    if (ordered == e) return;
    // Soft preferences: those that miss them go after the rest, each part
    // keeping its order (a stable partition through the spare half of idx).
    std::size_t met = ordered;
    if (prefs.preferred_min_throughput || prefs.preferred_max_latency_s) {
      std::size_t spare = m;
      for (std::size_t k = ordered; k < e; ++k) {
        if (misses_soft(idx[k])) {
          idx[spare++] = idx[k];
        } else {
          idx[met++] = idx[k];
        }
      }
      std::copy(idx.begin() + m, idx.begin() + spare, idx.begin() + met);
    } else {
      met = e;
    }
    switch (strategy) {
      case Strategy::kPrice:
        std::sort(idx.begin() + ordered, idx.begin() + met, by_price);
        std::sort(idx.begin() + met, idx.begin() + e, by_price);
        return;
      case Strategy::kThroughput:
        std::sort(idx.begin() + ordered, idx.begin() + met, by_throughput);
        std::sort(idx.begin() + met, idx.begin() + e, by_throughput);
        return;
      case Strategy::kLatency:
        std::sort(idx.begin() + ordered, idx.begin() + met, by_latency);
        std::sort(idx.begin() + met, idx.begin() + e, by_latency);
        return;
      case Strategy::kOrdered:
        return;  // idx is in config order already
      case Strategy::kShares: break;
    }
    // Default shares (docs/routing.md): the competitive set (within
    // competitive_ratio of the cheapest) splits 1 - exploration_share by
    // weight / price^2; the others split exploration_share equally.
    double cheapest = price(idx[ordered]);
    for (std::size_t k = ordered; k < e; ++k) cheapest = std::min(cheapest, price(idx[k]));
    double inverse_sq = 0;
    std::size_t explorers = 0;
    for (std::size_t k = ordered; k < e; ++k) {
      Considered& c = plan->considered[idx[k]];
      if (c.effective_price <= options_.competitive_ratio * cheapest) {
        inverse_sq += c.endpoint->weight / (c.effective_price * c.effective_price);
      } else {
        ++explorers;
      }
    }
    const double explore = explorers > 0 ? options_.exploration_share : 0.0;
    for (std::size_t k = ordered; k < e; ++k) {
      Considered& c = plan->considered[idx[k]];
      c.share = c.effective_price <= options_.competitive_ratio * cheapest
                    ? (1 - explore) * c.endpoint->weight / (c.effective_price * c.effective_price) / inverse_sq
                    : explore / static_cast<double>(explorers);
    }
    draw(ordered, met);
    draw(met, e);
    // A share is the chance of being drawn first: demoted endpoints are
    // drawn only after every other one.
    double first_total = 0;
    for (std::size_t k = ordered; k < met; ++k) first_total += plan->considered[idx[k]].share;
    for (std::size_t k = ordered; k < e; ++k) {
      Considered& c = plan->considered[idx[k]];
      if (met > ordered) {
        c.share = k < met && first_total > 0 ? c.share / first_total : 0;
      }
    }
  };

  const bool together = prefs.partition == ProviderPreferences::Partition::kNone;
  for (std::size_t b = 0; b < m;) {
    std::size_t e = b + 1;
    if (together) {
      e = m;
    } else {
      while (e < m && plan->considered[idx[e]].model == plan->considered[idx[b]].model) ++e;
    }
    const Model& model = *plan->considered[idx[b]].model;
    order_group(b, e, together ? plan->strategy : StrategyFor(prefs.sort, variant, model.routing.strategy));
    b = e;
  }

  // ---- 4: stickiness.
  std::size_t sticky_at = m;
  if (query.session != 0 && prefs.order.empty()) {
    std::optional<std::size_t> endpoint_index;
    {
      std::lock_guard lock(sticky_mu_);
      auto it = sticky_.find(query.session);
      if (it != sticky_.end() && it->second.expires > now) endpoint_index = it->second.endpoint;
    }
    if (endpoint_index) {
      // With partition "model" a conversation stays on its first model: a
      // sticky endpoint of a fallback model does not jump ahead of it.
      const Model* first_model = plan->considered[idx[0]].model;
      for (std::size_t k = 0; k < m; ++k) {
        if (!together && plan->considered[idx[k]].model != first_model) break;
        const Endpoint& e = *plan->considered[idx[k]].endpoint;
        if (e.index != *endpoint_index) continue;
        const Pricing& p = e.PricingFor(query.prompt_tokens);
        if (p.cached_prompt < p.prompt) {
          std::rotate(idx.begin(), idx.begin() + k, idx.begin() + k + 1);
          sticky_at = 0;
        }
        break;
      }
    }
  }

  // allow_fallbacks false without an order: only each model's first choice.
  const bool first_only = !prefs.allow_fallbacks && prefs.order.empty();
  for (std::size_t k = 0; k < m; ++k) {
    Considered& c = plan->considered[idx[k]];
    if (first_only) {
      bool model_seen = false;
      for (const Candidate& cand : plan->candidates) model_seen = model_seen || cand.model == c.model;
      if (model_seen) {
        c.skipped = SkipReason::kNoFallbacks;
        continue;
      }
    }
    Candidate cand;
    cand.model = c.model;
    cand.endpoint = c.endpoint;
    cand.dropped = query.parameters.Minus(c.endpoint->supported);
    cand.share = c.share;
    cand.sticky = k == sticky_at;
    plan->candidates.push_back(cand);
  }
  return std::nullopt;
}

// ---------------------------------------------------------------- Report

void Router::Report(const Endpoint& endpoint, const AttemptReport& report) {
  EndpointHealth& h = health(endpoint);
  h.Release(report);
  const SteadyTime now = report.ended;
  const Model& model = catalog_->model_of(endpoint);

  // Peer comparison (Envoy's outlier detection in spirit): only a failure can
  // make an endpoint worse than its peers, so only a failure checks.
  if (report.outcome == Outcome::kFailure && model.endpoints.size() > 1) {
    const HealthSnapshot self = h.Snapshot(now);
    if (self.circuit == CircuitState::kClosed && self.window_attempts >= options_.peer_min_attempts &&
        self.error_rate >= options_.peer_min_error_rate) {
      // Peers without attempts in the window say nothing about what is
      // normal for this model and are left out. A stack buffer covers any
      // sane model; a huge one pays for a vector.
      constexpr std::size_t kStackPeers = 128;
      std::array<double, kStackPeers> stack_rates;
      std::vector<double> heap_rates;
      double* rates = stack_rates.data();
      if (model.endpoints.size() > kStackPeers) {
        heap_rates.resize(model.endpoints.size());
        rates = heap_rates.data();
      }
      std::size_t count = 0;
      for (const Endpoint& peer : model.endpoints) {
        if (&peer == &endpoint) continue;
        const HealthSnapshot s = health(peer).Snapshot(now);
        if (s.window_attempts > 0) rates[count++] = s.error_rate;
      }
      if (count > 0) {
        std::sort(rates, rates + count);
        const double median = count % 2 == 1 ? rates[count / 2] : (rates[count / 2 - 1] + rates[count / 2]) / 2;
        if (self.error_rate >= median + options_.peer_margin) h.Trip(now);
      }
    }
  }

  // A slot freed: claimed for the oldest waiter that can use it, so a call
  // that arrives now cannot take it from one that waited, and a waiter that
  // cannot use it does not swallow the wake-up.
  std::function<void(const Endpoint&)> wake;
  {
    std::lock_guard lock(queue_mu_);
    auto it = std::find_if(waiters_.begin(), waiters_.end(), [&](const Waiter& w) {
      return std::find(w.usable.begin(), w.usable.end(), &endpoint) != w.usable.end();
    });
    if (it != waiters_.end() && h.Acquire(now) == Availability::kAvailable) {
      wake = std::move(it->wake);
      waiters_.erase(it);
    }
  }
  if (wake) wake(endpoint);
}

// ---------------------------------------------------------------- stickiness

void Router::Remember(uint64_t session, const Endpoint& endpoint, SteadyTime now) {
  if (session == 0) return;
  const auto ttl = catalog_->model_of(endpoint).routing.sticky_ttl;
  if (ttl <= std::chrono::seconds::zero()) return;
  const Sticky entry{endpoint.index, now + ttl};
  std::lock_guard lock(sticky_mu_);
  if (auto it = sticky_.find(session); it != sticky_.end()) {
    it->second = entry;
    return;
  }
  if (sticky_.size() >= options_.sticky_capacity) {
    // Full: drop what has expired. A table still full of live conversations
    // keeps them; the newcomer is simply not sticky (it costs a cache miss,
    // nothing else).
    // A sweep walks the whole table under the lock every decision takes:
    // at most once a second.
    if (now < next_sweep_) return;
    std::erase_if(sticky_, [&](const auto& kv) { return kv.second.expires <= now; });
    next_sweep_ = now + std::chrono::seconds(1);
    if (sticky_.size() >= options_.sticky_capacity) return;
  }
  sticky_.emplace(session, entry);
}

// ---------------------------------------------------------------- capacity queue

uint64_t Router::WaitForCapacity(const Model& model, std::vector<const Endpoint*> usable,
                                 std::function<void(const Endpoint&)> wake) {
  std::lock_guard lock(queue_mu_);
  if (waiters_.size() >= options_.max_queued) return 0;
  const uint64_t ticket = next_ticket_++;
  waiters_.push_back(Waiter{ticket, &model, std::move(usable), std::move(wake)});
  return ticket;
}

bool Router::CancelWait(uint64_t ticket) {
  std::function<void(const Endpoint&)> dropped;  // destroyed outside the lock: it may own anything
  std::lock_guard lock(queue_mu_);
  auto it = std::find_if(waiters_.begin(), waiters_.end(), [&](const Waiter& w) { return w.ticket == ticket; });
  if (it == waiters_.end()) return false;
  dropped = std::move(it->wake);
  waiters_.erase(it);
  return true;
}

std::size_t Router::queued(const Model& model) const {
  std::lock_guard lock(queue_mu_);
  return static_cast<std::size_t>(
      std::count_if(waiters_.begin(), waiters_.end(), [&](const Waiter& w) { return w.model == &model; }));
}

// ---------------------------------------------------------------- SessionKey

namespace {

// FNV-1a, 64 bit (Fowler, Noll, Vo; IETF draft-eastlake-fnv, section 2).
constexpr uint64_t kFnvOffset = 14695981039346656037ull;
constexpr uint64_t kFnvPrime = 1099511628211ull;

void Fnv(uint64_t& h, std::string_view bytes) {
  for (unsigned char c : bytes) {
    h ^= c;
    h *= kFnvPrime;
  }
}

// The text of `m` as FNV input, part by part, without building a string.
void FnvText(uint64_t& h, const Message& m) {
  for (const ContentPart& part : m.parts) {
    if (const auto* t = std::get_if<TextPart>(&part)) Fnv(h, t->text);
  }
}

}  // namespace

uint64_t SessionKey(const ChatRequest& request, int64_t tenant) {
  uint64_t h = kFnvOffset;
  Fnv(h, std::to_string(tenant));
  Fnv(h, std::string_view("\0", 1));
  // The model (variant aside: "x:nitro" and "x" share a provider's cache),
  // then a tag per source so that a session id never collides with an equal
  // user id or message text.
  Fnv(h, SplitVariant(request.model).first);
  Fnv(h, std::string_view("\0", 1));
  if (!request.session_id.empty()) {
    Fnv(h, "s:");
    Fnv(h, request.session_id);
  } else if (!request.user.empty()) {
    Fnv(h, "u:");
    Fnv(h, request.user);
  } else {
    const Message* system = nullptr;
    const Message* user = nullptr;
    for (const Message& m : request.messages) {
      if (system == nullptr && (m.role == Role::kSystem || m.role == Role::kDeveloper)) system = &m;
      if (user == nullptr && m.role == Role::kUser) user = &m;
      if (system != nullptr && user != nullptr) break;
    }
    if (system == nullptr && user == nullptr) return 0;
    Fnv(h, "m:");
    if (system != nullptr) FnvText(h, *system);
    Fnv(h, std::string_view("\0", 1));
    if (user != nullptr) FnvText(h, *user);
  }
  return h == 0 ? 1 : h;
}

}  // namespace tollgate::routing
