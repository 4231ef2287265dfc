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
    // The slug is echoed back, capped so a huge one cannot inflate the error.
    constexpr size_t kMaxEcho = 200;
    std::string shown(model_id.substr(0, kMaxEcho));
    if (model_id.size() > kMaxEcho) shown += "...";
    return Error{ErrorCode::kNotFound, "The model '" + shown + "' does not exist; GET /v1/models lists the models",
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
