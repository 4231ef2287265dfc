// The gateway's own listings: models, endpoints, generations. (Model calls
// are decoded and encoded by wire/ codecs; see responses.hpp.) No sockets
// here, so all of it tests without a server.
//
// Sources: OpenRouter API reference, GET /api/v1/models (ModelsListResponse),
// GET /api/v1/models/{author}/{slug}/endpoints and GET /api/v1/generation
// (GenerationResponse) as the strict schemas of @openrouter/sdk 1.3 define them.
#pragma once

#include "tollgate/billing/usage_event.hpp"
#include "tollgate/core/chat.hpp"
#include "tollgate/core/error.hpp"
#include "tollgate/core/money.hpp"
#include "tollgate/routing/catalog.hpp"

#include <cstdint>
#include <string>
#include <string_view>

namespace tollgate::gateway {

// GET /v1/models in OpenRouter's ModelsListResponse shape (also what OpenAI's
// SDK reads: `data[].id`, `object`, `owned_by`).
std::string RenderModels(const routing::Catalog& catalog);

// GET /api/v1/models/{author}/{slug}/endpoints: the model's endpoints in
// OpenRouter's ListEndpointsResponse shape. `description` is required there
// and Tollgate has none: it is "". Live stats (latency, uptime) are null.
std::string RenderModelEndpoints(const routing::Model& model);

// GET /api/v1/generation: `{"data": GenerationResponseData}`. Values Tollgate
// does not record are null. Three required by @openrouter/sdk's strict schema
// get fixed values: origin "" (no HTTP referer is recorded), data_region
// "global" and api_type "completions".
std::string RenderGeneration(const billing::UsageEvent& event);


}  // namespace tollgate::gateway
