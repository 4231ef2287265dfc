#include "tollgate/gateway/config.hpp"

#include <gtest/gtest.h>

#include <map>

namespace tollgate::gateway {
namespace {

EnvLookup FakeEnv(std::map<std::string, std::string> vars) {
  return [vars](std::string_view name) -> std::optional<std::string> {
    auto it = vars.find(std::string(name));
    if (it == vars.end()) return std::nullopt;
    return it->second;
  };
}

constexpr const char* kMinimal = R"(
server: {listen: "127.0.0.1:9000"}
providers:
  local: {type: local}
  openai: {type: openai_compatible, base_url: "https://api.openai.com/v1", api_key: "${OPENAI_API_KEY}"}
models:
  - id: local/m
    endpoint: {provider: local, model: "${MODEL_DIR:-models}/m.gguf", pricing: {prompt: "0.01", completion: "0.02"}}
  - id: openai/gpt-4o-mini
    context_length: 128000
    endpoint: {provider: openai, model: gpt-4o-mini, pricing: {prompt: "0.15", completion: "0.60", cached_prompt: "0.075"}}
)";

TEST(Config, InterpolatesWithDefaults) {
  std::string missing;
  auto env = FakeEnv({{"A", "x"}, {"EMPTY", ""}});
  EXPECT_EQ(Interpolate("${A}/${B:-d}", env, &missing), "x/d");
  EXPECT_TRUE(missing.empty());
  EXPECT_EQ(Interpolate("${EMPTY:-d}", env, &missing), "d");
  EXPECT_EQ(Interpolate("pre ${NOPE} post", env, &missing), "pre  post");
  EXPECT_EQ(missing, "NOPE");
}

TEST(Config, ParsesModelsPricesAndResolvesLocalPaths) {
  auto config = ParseConfig(kMinimal, "/etc/tollgate", FakeEnv({{"OPENAI_API_KEY", "sk-test"}}));
  ASSERT_TRUE(config) << config.error().message;
  EXPECT_EQ(config->server.port, 9000);
  ASSERT_EQ(config->models.size(), 2u);
  EXPECT_EQ(config->models[0].endpoints[0].model, "/etc/tollgate/models/m.gguf");
  const auto& p = config->models[1].endpoints[0].pricing;
  EXPECT_EQ(p.prompt.femto_usd_per_token, 150'000'000);
  EXPECT_EQ(p.completion.femto_usd_per_token, 600'000'000);
  EXPECT_EQ(p.cached_prompt.femto_usd_per_token, 75'000'000);
  EXPECT_EQ(config->models[0].endpoints[0].pricing.cached_prompt, config->models[0].endpoints[0].pricing.prompt);
  EXPECT_TRUE(config->providers[1].enabled);
  EXPECT_EQ(config->providers[1].api_key, "sk-test");
}

TEST(Config, UnsetProviderKeyDisablesTheProvider) {
  auto config = ParseConfig(kMinimal, "/x", FakeEnv({}));
  ASSERT_TRUE(config) << config.error().message;
  EXPECT_FALSE(config->providers[1].enabled);
  EXPECT_EQ(config->providers[1].disabled_reason, "OPENAI_API_KEY is not set");
}

void ExpectError(const std::string& yaml, const std::string& expected_path) {
  auto config = ParseConfig(yaml, "/x", FakeEnv({}));
  ASSERT_FALSE(config) << "accepted: " << yaml;
  EXPECT_NE(config.error().message.find(expected_path), std::string::npos) << config.error().message;
}

TEST(Config, BadValuesAreReportedWithTheirPath) {
  ExpectError("server: {listen: 'nope'}", "server.listen");
  ExpectError("server: {io_threads: -1}", "server.io_threads");
  ExpectError("server: {max_body: 5}", "server.max_body");
  ExpectError("providers: {x: {type: carrier_pigeon}}", "providers.x.type");
  ExpectError("providers: {x: {type: openai_compatible, base_url: 'ftp://a'}}", "providers.x.base_url");
  ExpectError(
      "providers: {l: {type: local}}\nmodels:\n  - id: a\n    endpoint: {provider: l, model: m, pricing: "
      "{prompt: '-1', completion: '0'}}",
      "models[0].endpoint.pricing.prompt");
  ExpectError("providers: {l: {type: local}}\nmodels:\n  - id: a\n    endpoint: {provider: zz, model: m, pricing: "
              "{prompt: '1', completion: '0'}}",
              "models[0].endpoint.provider");
  ExpectError("server: {listen: '${UNSET_VAR}'}", "UNSET_VAR");
  ExpectError("server: [1, 2", "line");
}

TEST(Config, DefaultConfigFileParses) {
  auto config = LoadConfig(TOLLGATE_SOURCE_DIR "/config/tollgate.yaml", FakeEnv({{"TOLLGATE_DATABASE_URL", "postgresql://x"}}));
  ASSERT_TRUE(config) << config.error().message;
  EXPECT_EQ(config->database_url, "postgresql://x");
  ASSERT_FALSE(config->models.empty());
  EXPECT_EQ(config->models[0].id, "local/stories260k");
}

}  // namespace
}  // namespace tollgate::gateway

namespace tollgate::gateway {
namespace {

TEST(Config, PresetsSupplyBaseUrlAndName) {
  auto config = ParseConfig(R"(
providers:
  ds: {type: openai_compatible, preset: deepseek, api_key: "k"}
  mine: {type: openai_compatible, preset: vllm, base_url: "http://10.0.0.5:8000/v1", display_name: "GPU box", api_key: ""}
  claude: {type: anthropic, api_key: "k", default_max_tokens: 8192}
  gem: {type: gemini, api_key: "k", extra_headers: {X-Team: blue}}
models:
  - id: deepseek/chat
    endpoint: {provider: ds, model: deepseek-chat, pricing: {prompt: "0.27", completion: "1.10", cache_write: "0.5"}}
)",
                            "/x", FakeEnv({}));
  ASSERT_TRUE(config) << config.error().message;
  const auto& p = config->providers;
  EXPECT_EQ(p[0].preset, "deepseek");
  EXPECT_EQ(p[0].base_url, "https://api.deepseek.com/v1");
  EXPECT_EQ(p[0].display_name, "DeepSeek");
  EXPECT_EQ(p[1].base_url, "http://10.0.0.5:8000/v1");
  EXPECT_EQ(p[1].display_name, "GPU box");
  EXPECT_EQ(p[2].base_url, "https://api.anthropic.com/v1");
  EXPECT_EQ(p[2].default_max_tokens, 8192);
  EXPECT_EQ(p[3].base_url, "https://generativelanguage.googleapis.com/v1beta");
  EXPECT_EQ(p[3].extra_headers.at("X-Team"), "blue");
  EXPECT_EQ(config->models[0].endpoints[0].pricing.cache_write.femto_usd_per_token, 500'000'000);
}

TEST(Config, PresetMistakesAreReportedWithTheirPath) {
  ExpectError("providers: {x: {type: openai_compatible, preset: nosuch, api_key: k}}", "providers.x.preset");
  ExpectError("providers: {x: {type: anthropic, preset: openai, api_key: k}}", "providers.x.preset");
  ExpectError("providers: {x: {type: openai_compatible, api_key: k}}", "providers.x.base_url");
}

TEST(Config, TheShippedConfigLoads) {
  auto config = LoadConfig(std::string(TOLLGATE_SOURCE_DIR) + "/config/tollgate.yaml",
                           FakeEnv({{"TOLLGATE_DATABASE_URL", "postgresql://x@127.0.0.1/db"}}));
  ASSERT_TRUE(config) << config.error().message;
  int remote = 0;
  for (const auto& p : config->providers) {
    if (p.type == "local") continue;
    ++remote;
    EXPECT_FALSE(p.enabled) << p.id << " is on without its key";
  }
  EXPECT_GE(remote, 19);
}

}  // namespace
}  // namespace tollgate::gateway
