#include "tollgate/routing/catalog.hpp"

#include <gtest/gtest.h>

namespace tollgate::routing {
namespace {

Catalog TwoModels() {
  Model a{"openai/gpt-4o-mini", "GPT-4o mini", 128000, 0, {}};
  a.endpoints.push_back(Endpoint{"openai", nullptr, "gpt-4o-mini", {}, 128000});
  a.endpoints.push_back(Endpoint{"azure", nullptr, "gpt-4o-mini-2024", {}, 128000});
  Model b{"empty/model", "No endpoints", 0, 0, {}};
  return Catalog({a, b});
}

TEST(Routing, PlansEndpointsInConfiguredOrder) {
  Catalog c = TwoModels();
  auto plan = Plan(c, "openai/gpt-4o-mini");
  ASSERT_TRUE(plan);
  ASSERT_EQ(plan->size(), 2u);
  EXPECT_EQ((*plan)[0]->provider_id, "openai");
  EXPECT_EQ((*plan)[1]->provider_id, "azure");
}

TEST(Routing, UnknownModelIsNotFound) {
  Catalog c = TwoModels();
  auto plan = Plan(c, "nope/none");
  ASSERT_FALSE(plan);
  EXPECT_EQ(plan.error().code, ErrorCode::kNotFound);
  EXPECT_EQ(plan.error().code_string, "model_not_found");
  EXPECT_EQ(plan.error().param, "model");
}

TEST(Routing, UnknownModelErrorDoesNotEchoAHugeSlug) {
  Catalog c = TwoModels();
  auto plan = Plan(c, std::string(1'000'000, 'x'));
  ASSERT_FALSE(plan);
  EXPECT_LT(plan.error().message.size(), 400u);
}

TEST(Routing, MissingModelIsInvalidArgument) {
  Catalog c = TwoModels();
  auto plan = Plan(c, "");
  ASSERT_FALSE(plan);
  EXPECT_EQ(plan.error().code, ErrorCode::kInvalidArgument);
}

TEST(Routing, ModelWithoutEndpointsIsUnavailable) {
  Catalog c = TwoModels();
  auto plan = Plan(c, "empty/model");
  ASSERT_FALSE(plan);
  EXPECT_EQ(plan.error().code, ErrorCode::kUnavailable);
}

}  // namespace
}  // namespace tollgate::routing
