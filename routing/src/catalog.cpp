#include "tollgate/routing/catalog.hpp"

#include <algorithm>

namespace tollgate::routing {

Catalog::Catalog(std::vector<Model> models) : models_(std::move(models)) {}

const Model* Catalog::Find(std::string_view id) const {
  auto it = std::find_if(models_.begin(), models_.end(), [&](const Model& m) { return m.id == id; });
  return it == models_.end() ? nullptr : &*it;
}

Result<std::vector<const Endpoint*>> Plan(const Catalog& catalog, std::string_view model_id) {
  if (model_id.empty()) return InvalidArgument("you must provide a model parameter", "model");
  const Model* model = catalog.Find(model_id);
  if (model == nullptr) {
    return Error{ErrorCode::kNotFound,
                 "The model '" + std::string(model_id) + "' does not exist; GET /v1/models lists the models",
                 "model", "model_not_found"};
  }
  if (model->endpoints.empty()) {
    return Error{ErrorCode::kUnavailable, "no endpoint can serve model '" + model->id + "'", "model", {}};
  }
  std::vector<const Endpoint*> plan;
  for (const Endpoint& e : model->endpoints) plan.push_back(&e);
  return plan;
}

}  // namespace tollgate::routing
