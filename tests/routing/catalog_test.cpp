#include "tollgate/routing/catalog.hpp"

#include <gtest/gtest.h>

namespace tollgate::routing {
namespace {

Endpoint MakeEndpoint(std::string provider_id, std::string upstream_model) {
  Endpoint e;
  e.id = provider_id + "/" + upstream_model;
  e.provider_id = std::move(provider_id);
  e.upstream_model = std::move(upstream_model);
  e.context_length = 128000;
  return e;
}

Pricing Prices(int64_t prompt, int64_t completion) {
  Pricing p;
  p.prompt = {prompt};
  p.completion = {completion};
  p.cached_prompt = {prompt / 2};
  p.cache_write = {prompt};
  return p;
}

Catalog ThreeModels() {
  Model a;
  a.id = "openai/gpt-4o-mini";
  a.endpoints.push_back(MakeEndpoint("openai", "gpt-4o-mini"));
  a.endpoints.push_back(MakeEndpoint("azure", "gpt-4o-mini-2024"));
  Model empty;
  empty.id = "empty/model";
  Model b;
  b.id = "meta/llama-3.1-8b";
  b.endpoints.push_back(MakeEndpoint("local", "llama-3.1-8b-q4_k_m"));
  std::vector<Model> models;
  models.push_back(std::move(a));
  models.push_back(std::move(empty));
  models.push_back(std::move(b));
  return Catalog(std::move(models));
}

TEST(Catalog, AssignsDenseIndicesModelByModel) {
  Catalog c = ThreeModels();
  ASSERT_EQ(c.endpoint_count(), 3u);
  EXPECT_EQ(c.endpoint(0).id, "openai/gpt-4o-mini");
  EXPECT_EQ(c.endpoint(1).id, "azure/gpt-4o-mini-2024");
  EXPECT_EQ(c.endpoint(2).id, "local/llama-3.1-8b-q4_k_m");
  for (std::size_t i = 0; i < c.endpoint_count(); ++i) EXPECT_EQ(c.endpoint(i).index, i);
  EXPECT_EQ(&c.model_of(c.endpoint(1)), c.Find("openai/gpt-4o-mini"));
  EXPECT_EQ(&c.model_of(c.endpoint(2)), c.Find("meta/llama-3.1-8b"));
  // endpoint(i) is the model's own endpoint, not a copy.
  EXPECT_EQ(&c.endpoint(2), &c.Find("meta/llama-3.1-8b")->endpoints[0]);
}

TEST(Catalog, EndpointAddressesSurviveAMove) {
  Catalog c = ThreeModels();
  const Endpoint* before = &c.endpoint(1);
  Catalog moved = std::move(c);
  EXPECT_EQ(&moved.endpoint(1), before);
  EXPECT_EQ(&moved.model_of(*before), moved.Find("openai/gpt-4o-mini"));
}

TEST(Catalog, EmptyCatalogHasNoEndpoints) {
  Catalog c;
  EXPECT_EQ(c.endpoint_count(), 0u);
  EXPECT_EQ(c.Find("openai/gpt-4o-mini"), nullptr);
}

TEST(Catalog, FindIsExactAndCaseSensitive) {
  Catalog c = ThreeModels();
  ASSERT_NE(c.Find("openai/gpt-4o-mini"), nullptr);
  EXPECT_EQ(c.Find("openai/gpt-4o-mini")->endpoints.size(), 2u);
  ASSERT_NE(c.Find("empty/model"), nullptr);
  EXPECT_TRUE(c.Find("empty/model")->endpoints.empty());
  EXPECT_EQ(c.Find("OpenAI/gpt-4o-mini"), nullptr);
  EXPECT_EQ(c.Find("openai/gpt-4o"), nullptr);
  EXPECT_EQ(c.Find("openai/gpt-4o-mini:nitro"), nullptr);
  EXPECT_EQ(c.Find(""), nullptr);
}

TEST(Catalog, PricingForPicksTheLastTierThePromptExceeds) {
  Endpoint e = MakeEndpoint("google", "gemini-2.5-pro");
  e.pricing = Prices(1'250'000'000, 10'000'000'000);
  e.tiers.push_back({200'000, Prices(2'500'000'000, 15'000'000'000)});
  e.tiers.push_back({500'000, Prices(5'000'000'000, 30'000'000'000)});

  EXPECT_EQ(&e.PricingFor(0), &e.pricing);
  EXPECT_EQ(&e.PricingFor(1000), &e.pricing);
  // "Above 200k": exactly 200k is still the base price.
  EXPECT_EQ(&e.PricingFor(200'000), &e.pricing);
  EXPECT_EQ(&e.PricingFor(200'001), &e.tiers[0].pricing);
  EXPECT_EQ(&e.PricingFor(500'000), &e.tiers[0].pricing);
  EXPECT_EQ(&e.PricingFor(500'001), &e.tiers[1].pricing);
  EXPECT_EQ(e.PricingFor(900'000).prompt.femto_usd_per_token, 5'000'000'000);
}

TEST(Catalog, PricingForWithoutTiersIsTheBasePrice) {
  Endpoint e = MakeEndpoint("openai", "gpt-4o-mini");
  e.pricing = Prices(150'000'000, 600'000'000);
  EXPECT_EQ(&e.PricingFor(10'000'000), &e.pricing);
}

TEST(Catalog, DearestTakesEachFieldsMaximumOverTiers) {
  Endpoint e = MakeEndpoint("qwen", "qwen-plus");
  e.pricing = Prices(400'000'000, 1'200'000'000);
  e.pricing.cache_write = {900'000'000};  // dearer than the tier's
  e.pricing.per_request = Money{5'000};
  Pricing tier = Prices(1'200'000'000, 3'600'000'000);
  tier.per_request = Money{1'000};
  e.tiers.push_back({128'000, tier});

  Pricing d = e.Dearest();
  EXPECT_EQ(d.prompt.femto_usd_per_token, 1'200'000'000);
  EXPECT_EQ(d.completion.femto_usd_per_token, 3'600'000'000);
  EXPECT_EQ(d.cached_prompt.femto_usd_per_token, 600'000'000);
  EXPECT_EQ(d.cache_write.femto_usd_per_token, 1'200'000'000);
  EXPECT_EQ(d.per_request.nano_usd, 5'000);
  // No reasoning price anywhere: reasoning stays billed at completion.
  EXPECT_FALSE(d.reasoning.has_value());
}

TEST(Catalog, DearestComparesEffectiveReasoningPrices) {
  Endpoint e = MakeEndpoint("x", "thinker");
  e.pricing = Prices(100, 1000);
  e.pricing.reasoning = TokenPrice{2000};
  // The tier has no reasoning price of its own: its reasoning costs its
  // completion price, 3000, which beats the base's explicit 2000.
  e.tiers.push_back({1000, Prices(100, 3000)});
  EXPECT_EQ(e.Dearest().reasoning, TokenPrice{3000});

  e.tiers[0].pricing.reasoning = TokenPrice{1500};
  EXPECT_EQ(e.Dearest().reasoning, TokenPrice{2000});
  EXPECT_EQ(e.Dearest().completion, TokenPrice{3000});
}

TEST(Catalog, DearestWithoutTiersIsTheBasePrice) {
  Endpoint e = MakeEndpoint("openai", "o3");
  e.pricing = Prices(2'000'000'000, 8'000'000'000);
  e.pricing.reasoning = TokenPrice{9'000'000'000};
  Pricing d = e.Dearest();
  EXPECT_EQ(d.prompt, e.pricing.prompt);
  EXPECT_EQ(d.completion, e.pricing.completion);
  EXPECT_EQ(d.reasoning, e.pricing.reasoning);
}

TEST(Catalog, SplitsOnlyRoutingVariants) {
  using P = std::pair<std::string_view, std::string_view>;
  EXPECT_EQ(SplitVariant("meta/llama:nitro"), P("meta/llama", "nitro"));
  EXPECT_EQ(SplitVariant("meta/llama:floor"), P("meta/llama", "floor"));
  EXPECT_EQ(SplitVariant("meta/llama"), P("meta/llama", ""));
  // Other suffixes are part of the slug.
  EXPECT_EQ(SplitVariant("meta/llama:free"), P("meta/llama:free", ""));
  EXPECT_EQ(SplitVariant("meta/llama:Nitro"), P("meta/llama:Nitro", ""));
  EXPECT_EQ(SplitVariant("meta/llama:free:nitro"), P("meta/llama:free", "nitro"));
  EXPECT_EQ(SplitVariant("meta/llama:"), P("meta/llama:", ""));
  EXPECT_EQ(SplitVariant(""), P("", ""));
}

}  // namespace
}  // namespace tollgate::routing
