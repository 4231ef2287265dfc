// Model catalog: model slug -> endpoints that can serve it, with their prices.
//
// Routing never calls a provider and never learns whether it is remote: an
// endpoint holds a non-owning `Provider*` that the gateway created and keeps
// alive for the catalog's lifetime.
#pragma once

#include "tollgate/core/error.hpp"
#include "tollgate/core/money.hpp"
#include "tollgate/core/provider.hpp"

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace tollgate::routing {

struct Endpoint {
  std::string provider_id;     // config key, "openai"
  Provider* provider = nullptr;  // not owned; outlives the catalog
  std::string upstream_model;  // the model's name at that provider ("gpt-4o-mini")
  Pricing pricing;             // per token (money.hpp units)
  int64_t context_length = 0;  // tokens; 0 = unknown
};

struct Model {
  std::string id;              // slug callers send, "openai/gpt-4o-mini"
  std::string name;            // display name, "OpenAI: GPT-4o mini"
  int64_t context_length = 0;  // tokens, the largest of its endpoints'
  int64_t created = 0;         // unix seconds the model was added to the catalog
  std::vector<Endpoint> endpoints;
};

// Immutable after construction; safe to read from any thread.
class Catalog {
 public:
  Catalog() = default;
  explicit Catalog(std::vector<Model> models);

  // The model with slug `id`, or nullptr. Exact, case-sensitive match.
  const Model* Find(std::string_view id) const;
  const std::vector<Model>& models() const { return models_; }

 private:
  std::vector<Model> models_;
};

// The ordered endpoints to try for `model_id`: the first is called, the rest are
// fallbacks used only when an attempt fails before any byte reached the client.
// Errors: kInvalidArgument (empty model id, param "model"), kNotFound (unknown
// model, code "model_not_found"), kUnavailable (model has no endpoint).
Result<std::vector<const Endpoint*>> Plan(const Catalog& catalog, std::string_view model_id);

}  // namespace tollgate::routing
