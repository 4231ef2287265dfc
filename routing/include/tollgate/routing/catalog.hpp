// Model catalog: model slug -> the endpoints that can serve it, with what
// routing needs to choose among them (prices, context, quantization,
// supported parameters, data policy, capacity, weight) and the model's own
// routing policy (strategy, retries, hedging, stickiness).
//
// Routing never calls a provider and never learns whether it is remote: an
// endpoint holds a non-owning `Provider*` that the gateway created and keeps
// alive for the catalog's lifetime.
//
// Field meanings follow OpenRouter's endpoint listing
// (GET /api/v1/models/{author}/{slug}/endpoints, openrouter.ai/docs/api-reference)
// and its provider-routing guide (openrouter.ai/docs/features/provider-routing).
#pragma once

#include "tollgate/core/error.hpp"
#include "tollgate/core/money.hpp"
#include "tollgate/core/parameters.hpp"
#include "tollgate/core/provider.hpp"

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace tollgate::routing {

// A context-length price tier: when a request's prompt has more than
// `above_prompt_tokens` tokens, the whole request is priced at `pricing`
// (Gemini 2.5 Pro's "> 200k tokens" prices, Qwen's tiers).
struct PriceTier {
  int64_t above_prompt_tokens = 0;
  Pricing pricing;
};

// What an endpoint's provider does with prompts (OpenRouter's data policies).
struct DataPolicy {
  bool trains_on_prompts = false;    // may train on prompts and completions
  bool retains_prompts = false;      // stores prompts beyond the call (abuse monitoring, logs)
  bool zero_data_retention = false;  // contractually retains nothing (implies !retains_prompts)
};

struct Endpoint {
  // Stable id, unique in the catalog: the config's `id`, else
  // "<provider_id>/<upstream_model>" (a local model's file stem).
  std::string id;
  std::string provider_id;       // config key, "openai"
  Provider* provider = nullptr;  // not owned; outlives the catalog
  std::string upstream_model;    // the model's name at that provider ("gpt-4o-mini")
  Pricing pricing;               // per token (money.hpp units); the base tier
  std::vector<PriceTier> tiers;  // ascending above_prompt_tokens; may be empty
  int64_t context_length = 0;     // tokens; 0 = unknown
  int64_t max_output_tokens = 0;  // tokens; 0 = unknown (bounded by the context)
  std::string quantization;       // lower case: "fp16", "fp8", "int4", "q4_k_m"; "" = unknown
  ParameterSet supported;         // parameters this endpoint honours (its provider's, narrowed by config)
  DataPolicy data_policy;
  int max_concurrency = 0;  // calls in flight at once; 0 = unlimited
  double weight = 1.0;      // multiplies the endpoint's default traffic share; > 0
  std::size_t index = 0;    // dense 0..Catalog::endpoint_count()-1, set by Catalog (health slot)

  // The pricing that applies to a request of `prompt_tokens` (the last tier
  // it exceeds, else `pricing`).
  const Pricing& PricingFor(int64_t prompt_tokens) const;
  // Field by field, the dearest price over all tiers (worst-case reservations).
  Pricing Dearest() const;
};

// How a model's calls are routed when the caller states no preference.
struct RoutingPolicy {
  enum class Strategy {
    kShares,      // weighted random draw by effective price (docs/routing.md), the default
    kPrice,       // cheapest effective price first
    kThroughput,  // highest live throughput first
    kLatency,     // lowest live time to first token first
    kOrdered,     // config order: "local first, cloud on overflow" or "cloud first, local last"
  };
  Strategy strategy = Strategy::kShares;
  // Retries on the same endpoint before moving on (connect failures,
  // timeouts before the first byte, 5xx, overload; never 429 or a 4xx), the
  // k-th after retry_backoff * 2^(k-1).
  int retries = 0;
  std::chrono::milliseconds retry_backoff{250};
  // When > 0: if no first byte arrived by then, the next endpoint starts in
  // parallel; the first to answer wins, the other is cancelled.
  std::chrono::milliseconds hedge_after{0};
  // Prompt-cache stickiness: how long a conversation keeps going back to the
  // endpoint that served it after its last call. 0 = off.
  std::chrono::seconds sticky_ttl{600};
};

struct Model {
  std::string id;              // slug callers send, "openai/gpt-4o-mini"
  std::string name;            // display name, "OpenAI: GPT-4o mini"
  int64_t context_length = 0;  // tokens, the largest of its endpoints'
  int64_t created = 0;         // unix seconds the model was added to the catalog
  std::vector<Endpoint> endpoints;
  RoutingPolicy routing;
};

// Immutable after construction; safe to read from any thread. Endpoint
// addresses are stable for the catalog's lifetime (do not copy a catalog
// that a Router refers to).
class Catalog {
 public:
  Catalog() = default;
  Catalog(const Catalog&) = delete;
  Catalog& operator=(const Catalog&) = delete;
  Catalog(Catalog&&) = default;
  Catalog& operator=(Catalog&&) = default;
  // Assigns Endpoint::index in order (model by model, endpoint by endpoint).
  explicit Catalog(std::vector<Model> models);

  // The model with slug `id`, or nullptr. Exact, case-sensitive match.
  const Model* Find(std::string_view id) const;
  const std::vector<Model>& models() const { return models_; }
  std::size_t endpoint_count() const { return endpoints_.size(); }
  // By Endpoint::index; `index` < endpoint_count().
  const Endpoint& endpoint(std::size_t index) const { return *endpoints_[index]; }
  // The model that lists `endpoint`.
  const Model& model_of(const Endpoint& endpoint) const { return *owners_[endpoint.index]; }

 private:
  std::vector<Model> models_;
  std::vector<const Endpoint*> endpoints_;
  std::vector<const Model*> owners_;
};

// Splits a model variant suffix: "meta/llama:nitro" -> {"meta/llama", "nitro"};
// no suffix -> {id, ""}. Only ":nitro" and ":floor" are variants; anything
// else after a colon is part of the slug.
std::pair<std::string_view, std::string_view> SplitVariant(std::string_view model_id);

}  // namespace tollgate::routing
