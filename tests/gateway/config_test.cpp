#include "tollgate/gateway/config.hpp"

#include <gtest/gtest.h>

#include <chrono>
#include <map>
#include <set>
#include <string>
#include <utility>
#include <vector>

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

  // Set but empty (a compose file's OPENAI_API_KEY=) is off too.
  auto empty = ParseConfig(kMinimal, "/x", FakeEnv({{"OPENAI_API_KEY", ""}}));
  ASSERT_TRUE(empty) << empty.error().message;
  EXPECT_FALSE(empty->providers[1].enabled);
  EXPECT_EQ(empty->providers[1].disabled_reason, "${OPENAI_API_KEY} is empty");
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
  ExpectError("stats: {retention_days: -1}", "stats.retention_days");
  ExpectError("stats: {retention_days: 1.5}", "stats.retention_days");
  ExpectError("stats: {retention: 3}", "stats.retention");
}

TEST(Config, StatsRetentionDays) {
  auto config = ParseConfig(std::string(kMinimal), "/etc", FakeEnv({}));
  ASSERT_TRUE(config) << config.error().message;
  EXPECT_EQ(config->stats.retention_days, 90);
  config = ParseConfig(std::string(kMinimal) + "stats: {retention_days: 0}\n", "/etc", FakeEnv({}));
  ASSERT_TRUE(config) << config.error().message;
  EXPECT_EQ(config->stats.retention_days, 0);
}

TEST(Config, AnswerAfterSpoolDefaultsToTrue) {
  auto config = ParseConfig(std::string(kMinimal), "/etc", FakeEnv({}));
  ASSERT_TRUE(config) << config.error().message;
  EXPECT_TRUE(config->usage.answer_after_spool);
  config = ParseConfig(std::string(kMinimal) + "usage: {answer_after_spool: false}\n", "/etc", FakeEnv({}));
  ASSERT_TRUE(config) << config.error().message;
  EXPECT_FALSE(config->usage.answer_after_spool);
  config = ParseConfig(std::string(kMinimal) + "usage: {answer_after_spool: later}\n", "/etc", FakeEnv({}));
  ASSERT_FALSE(config);
  EXPECT_NE(config.error().message.find("usage.answer_after_spool"), std::string::npos) << config.error().message;
}

TEST(Config, DefaultConfigFileParses) {
  auto config = LoadConfig(TOLLGATE_SOURCE_DIR "/config/tollgate.yaml", FakeEnv({{"TOLLGATE_DATABASE_URL", "postgresql://x"}}));
  ASSERT_TRUE(config) << config.error().message;
  EXPECT_EQ(config->database_url, "postgresql://x");
  ASSERT_FALSE(config->models.empty());
  EXPECT_EQ(config->models[0].id, "local/stories260k");
  EXPECT_EQ(config->stats.retention_days, 90);
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

// ---------------------------------------------------------------- routing: endpoints and policies (issue 6)

namespace tollgate::gateway {
namespace {

constexpr const char* kProviders = R"(
providers:
  local: {type: local}
  openai: {type: openai_compatible, preset: openai, api_key: k}
  together: {type: openai_compatible, preset: together, api_key: k}
)";

Result<Config> Parse(const std::string& models_and_more) {
  return ParseConfig(std::string(kProviders) + models_and_more, "/etc/tollgate", FakeEnv({}));
}

void ExpectRefused(const std::string& models_and_more, const std::string& path, const std::string& words = {}) {
  auto config = Parse(models_and_more);
  ASSERT_FALSE(config) << "accepted: " << models_and_more;
  EXPECT_EQ(config.error().message.rfind(path + ":", 0), 0u) << config.error().message;
  if (!words.empty()) {
    EXPECT_NE(config.error().message.find(words), std::string::npos) << config.error().message;
  }
}

TEST(Config, EndpointKeysParse) {
  auto config = Parse(R"(
models:
  - id: meta/llama
    routing: {strategy: ordered, retries: 2, retry_backoff_ms: 100, hedge_after_ms: 1500, sticky_ttl_s: 300}
    endpoints:
      - id: llama-on-together
        provider: together
        model: meta-llama/Llama-3.3-70B
        pricing:
          prompt: "0.88"
          completion: "0.88"
          cached_prompt: "0.44"
          cache_write: "1.1"
          reasoning: "1.5"
          per_request: "0.0004"
          tiers:
            - {above_prompt_tokens: 128000, prompt: "1.76", completion: "1.76", cached_prompt: "0.88"}
            - {above_prompt_tokens: 200000, prompt: "3", completion: "4", reasoning: "5"}
        context_length: 262144
        max_output_tokens: 8192
        quantization: FP8
        supported_parameters: [temperature, top_p, tools, tool_choice, max_completion_tokens, image_input]
        data_policy: {trains_on_prompts: false, retains_prompts: true, zero_data_retention: false}
        max_concurrency: 32
        weight: 2.5
)");
  ASSERT_TRUE(config) << config.error().message;
  const ModelConfig& m = config->models[0];
  EXPECT_EQ(m.routing.strategy, routing::RoutingPolicy::Strategy::kOrdered);
  EXPECT_EQ(m.routing.retries, 2);
  EXPECT_EQ(m.routing.retry_backoff, std::chrono::milliseconds(100));
  EXPECT_EQ(m.routing.hedge_after, std::chrono::milliseconds(1500));
  EXPECT_EQ(m.routing.sticky_ttl, std::chrono::seconds(300));
  const EndpointConfig& e = m.endpoints[0];
  EXPECT_EQ(e.id, "llama-on-together");
  EXPECT_EQ(e.pricing.prompt.femto_usd_per_token, 880'000'000);
  EXPECT_EQ(e.pricing.cached_prompt.femto_usd_per_token, 440'000'000);
  EXPECT_EQ(e.pricing.cache_write.femto_usd_per_token, 1'100'000'000);
  ASSERT_TRUE(e.pricing.reasoning);
  EXPECT_EQ(e.pricing.reasoning->femto_usd_per_token, 1'500'000'000);
  EXPECT_EQ(e.pricing.per_request.nano_usd, 400'000);  // $0.0004 per request
  ASSERT_EQ(e.tiers.size(), 2u);
  EXPECT_EQ(e.tiers[0].above_prompt_tokens, 128000);
  EXPECT_EQ(e.tiers[0].pricing.prompt.femto_usd_per_token, 1'760'000'000);
  EXPECT_EQ(e.tiers[0].pricing.cached_prompt.femto_usd_per_token, 880'000'000);
  EXPECT_EQ(e.tiers[0].pricing.cache_write, e.tiers[0].pricing.prompt);  // defaults within the tier
  EXPECT_FALSE(e.tiers[0].pricing.reasoning);                            // the tier's completion price
  EXPECT_EQ(e.tiers[0].pricing.per_request.nano_usd, 400'000);           // the base's fee
  EXPECT_EQ(e.tiers[1].pricing.reasoning->femto_usd_per_token, 5'000'000'000);
  EXPECT_EQ(e.context_length, 262144);
  EXPECT_EQ(e.max_output_tokens, 8192);
  EXPECT_EQ(e.quantization, "fp8");
  ASSERT_TRUE(e.supported_parameters);
  EXPECT_EQ(*e.supported_parameters, (ParameterSet{Param::kTemperature, Param::kTopP, Param::kTools,
                                                    Param::kToolChoice, Param::kMaxTokens, Param::kImageInput}));
  EXPECT_FALSE(e.data_policy.trains_on_prompts);
  EXPECT_TRUE(e.data_policy.retains_prompts);
  EXPECT_FALSE(e.data_policy.zero_data_retention);
  EXPECT_EQ(e.max_concurrency, 32);
  EXPECT_EQ(e.weight, 2.5);
}

TEST(Config, LocalEngineSettings) {
  auto config = ParseConfig(R"(
providers:
  local:
    type: local
    threads: 2
    max_sequences: 4
    max_queue: 10
    max_batch_tokens: 128
    kv_cache_mib: 512
    kv_cache_type: q8
    prefix_cache: false
    device: cuda
    gpu_device: 1
    gpu_memory_mib: 8192
models:
  - id: local/m
    endpoint: {provider: local, model: m.gguf, pricing: {prompt: "0", completion: "0"}}
)",
                            "/etc/tollgate", FakeEnv({}));
  ASSERT_TRUE(config) << config.error().message;
  const ProviderConfig& p = config->providers[0];
  EXPECT_EQ(p.threads, 2);
  EXPECT_EQ(p.max_sequences, 4);
  EXPECT_EQ(p.max_queue, 10);
  EXPECT_EQ(p.max_batch_tokens, 128);
  EXPECT_EQ(p.kv_cache_mib, 512);
  EXPECT_EQ(p.kv_cache_type, "q8");
  EXPECT_FALSE(p.prefix_cache);
  EXPECT_EQ(p.device, "cuda");
  EXPECT_EQ(p.gpu_device, 1);
  EXPECT_EQ(p.gpu_memory_mib, 8192);
  auto bad = ParseConfig("providers:\n  local: {type: local, kv_cache_type: q4}\n", "/etc/tollgate", FakeEnv({}));
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().message.rfind("providers.local.kv_cache_type:", 0), 0u) << bad.error().message;
  auto zero = ParseConfig("providers:\n  local: {type: local, max_sequences: 0}\n", "/etc/tollgate", FakeEnv({}));
  ASSERT_FALSE(zero);
  EXPECT_EQ(zero.error().message.rfind("providers.local.max_sequences:", 0), 0u) << zero.error().message;
}

TEST(Config, LocalEngineDevice) {
  auto defaults = ParseConfig("providers:\n  local: {type: local}\n", "/etc/tollgate", FakeEnv({}));
  ASSERT_TRUE(defaults) << defaults.error().message;
  EXPECT_EQ(defaults->providers[0].device, "auto");
  EXPECT_EQ(defaults->providers[0].gpu_device, 0);
  EXPECT_EQ(defaults->providers[0].gpu_memory_mib, 0);
  for (const char* device : {"cpu", "cuda", "auto"}) {
    auto config = ParseConfig(std::string("providers:\n  local: {type: local, device: ") + device + "}\n",
                              "/etc/tollgate", FakeEnv({}));
    ASSERT_TRUE(config) << config.error().message;
    EXPECT_EQ(config->providers[0].device, device);
  }
  // Refused with the key's path and what is wrong.
  struct Bad {
    const char* setting;
    const char* path;
    const char* says;
  };
  for (const Bad& b : {Bad{"device: gpu", "providers.local.device:", "'gpu' is not a device (cpu, cuda, auto)"},
                       Bad{"device: CUDA", "providers.local.device:", "'CUDA' is not a device"},
                       Bad{"gpu_device: -1", "providers.local.gpu_device:", "out of range"},
                       Bad{"gpu_device: first", "providers.local.gpu_device:", "is not an integer"},
                       Bad{"gpu_memory_mib: -512", "providers.local.gpu_memory_mib:", "out of range"},
                       Bad{"gpu_memory_mib: 8GiB", "providers.local.gpu_memory_mib:", "is not an integer"}}) {
    auto config = ParseConfig(std::string("providers:\n  local: {type: local, ") + b.setting + "}\n", "/etc/tollgate",
                              FakeEnv({}));
    ASSERT_FALSE(config) << b.setting;
    EXPECT_EQ(config.error().message.rfind(b.path, 0), 0u) << config.error().message;
    EXPECT_NE(config.error().message.find(b.says), std::string::npos) << config.error().message;
  }
}

TEST(Config, LocalEngineKeysAreRefusedOnRemoteProviders) {
  for (const char* provider : {"{type: openai_compatible, base_url: 'http://h/v1', api_key: k",
                               "{type: openai_compatible, preset: openai, api_key: k", "{type: anthropic, api_key: k",
                               "{type: gemini, api_key: k"}) {
    for (const char* setting : {"context_length: 4096", "threads: 2", "max_sequences: 4", "max_queue: 10",
                                "max_batch_tokens: 128", "kv_cache_mib: 512", "kv_cache_type: q8",
                                "prefix_cache: false", "device: cuda", "gpu_device: 1", "gpu_memory_mib: 8192"}) {
      auto config = ParseConfig(std::string("providers:\n  remote: ") + provider + ", " + setting + "}\n",
                                "/etc/tollgate", FakeEnv({}));
      ASSERT_FALSE(config) << provider << ", " << setting;
      const std::string key(setting, std::string_view(setting).find(':'));
      EXPECT_EQ(config.error().message.rfind("providers.remote." + key + ":", 0), 0u) << config.error().message;
      EXPECT_NE(config.error().message.find("applies to type: local providers only"), std::string::npos)
          << config.error().message;
    }
  }
}

TEST(Config, EndpointDefaults) {
  auto config = Parse(R"(
models:
  - id: a/m
    endpoints:
      - {provider: local, model: "models/tiny-q8.gguf", pricing: {prompt: "0", completion: "0"}}
      - {provider: openai, model: gpt-4o-mini, pricing: {prompt: "0.15", completion: "0.60"}}
)");
  ASSERT_TRUE(config) << config.error().message;
  const ModelConfig& m = config->models[0];
  EXPECT_EQ(m.routing.strategy, routing::RoutingPolicy::Strategy::kShares);
  EXPECT_EQ(m.routing.sticky_ttl, std::chrono::seconds(600));
  const EndpointConfig& local = m.endpoints[0];
  EXPECT_EQ(local.id, "local/tiny-q8");  // the model file's stem
  EXPECT_EQ(local.max_concurrency, 0);   // the engine's max_sequences, filled in when it loads
  const EndpointConfig& remote = m.endpoints[1];
  EXPECT_EQ(remote.id, "openai/gpt-4o-mini");
  EXPECT_EQ(remote.max_concurrency, 0);  // unlimited
  EXPECT_EQ(remote.weight, 1.0);
  EXPECT_FALSE(remote.supported_parameters);
  EXPECT_FALSE(remote.pricing.reasoning);
  EXPECT_EQ(remote.pricing.per_request.nano_usd, 0);
  EXPECT_TRUE(remote.tiers.empty());
  EXPECT_EQ(remote.quantization, "");
  EXPECT_FALSE(remote.data_policy.trains_on_prompts || remote.data_policy.retains_prompts ||
               remote.data_policy.zero_data_retention);
  // Top-level routing: RouterOptions' defaults.
  EXPECT_EQ(config->routing.queue_timeout, routing::RouterOptions{}.queue_timeout);
  EXPECT_EQ(config->routing.health.consecutive_failures, routing::HealthOptions{}.consecutive_failures);
}

TEST(Config, EndpointIdsAreUniqueInAModelAndWrittenOutOnesInTheWholeFile) {
  // The same upstream model behind two model ids (an alias) keeps its default id.
  auto aliases = Parse(R"(
models:
  - id: a/m
    endpoint: {provider: openai, model: gpt-4o-mini, pricing: {prompt: "1", completion: "1"}}
  - id: b/m
    endpoint: {provider: openai, model: gpt-4o-mini, pricing: {prompt: "1", completion: "1"}}
)");
  ASSERT_TRUE(aliases) << aliases.error().message;
  EXPECT_EQ(aliases->models[1].endpoints[0].id, "openai/gpt-4o-mini");
  ExpectRefused(R"(
models:
  - id: a/m
    endpoints:
      - {provider: openai, model: gpt-4o-mini, pricing: {prompt: "1", completion: "1"}}
      - {provider: openai, model: gpt-4o-mini, pricing: {prompt: "2", completion: "2"}}
)",
                "models[0].endpoints[1].id", "'openai/gpt-4o-mini' is already the id of models[0].endpoints[0]");
  ExpectRefused(R"(
models:
  - id: a/m
    endpoint: {id: shared, provider: openai, model: one, pricing: {prompt: "1", completion: "1"}}
  - id: b/m
    endpoint: {id: shared, provider: openai, model: two, pricing: {prompt: "1", completion: "1"}}
)",
                "models[1].endpoint.id", "'shared' is already the id of models[0].endpoint");
  ExpectRefused(R"(
models:
  - id: a/m
    endpoints:
      - {id: x, provider: openai, model: one, pricing: {prompt: "1", completion: "1"}}
      - {id: x, provider: together, model: two, pricing: {prompt: "1", completion: "1"}}
)",
                "models[0].endpoints[1].id", "already the id of models[0].endpoints[0]");
  // Two endpoints of one upstream model are fine once each has an id.
  auto config = Parse(R"(
models:
  - id: a/m
    endpoint: {provider: openai, model: gpt-4o-mini, pricing: {prompt: "1", completion: "1"}}
  - id: b/m
    endpoint: {id: openai-alias, provider: openai, model: gpt-4o-mini, pricing: {prompt: "1", completion: "1"}}
)");
  ASSERT_TRUE(config) << config.error().message;
  EXPECT_EQ(config->models[1].endpoints[0].id, "openai-alias");
  ExpectRefused("models:\n  - id: a\n    endpoint: {id: '', provider: openai, model: m, pricing: {prompt: '1', "
                "completion: '1'}}",
                "models[0].endpoint.id");
}

std::string WithPricing(const std::string& pricing) {
  return "models:\n  - id: a/m\n    endpoint: {provider: openai, model: m, pricing: " + pricing + "}\n";
}

TEST(Config, PricesInTheOtherUnitAreRefusedAtStart) {
  // A per-token figure in a per-million field (OpenRouter's API lists per token).
  ExpectRefused(WithPricing("{prompt: '0.00000015', completion: '0.6'}"), "models[0].endpoint.pricing.prompt",
                "looks like a per-token price (it would be $0.15 per million tokens)");
  ExpectRefused(WithPricing("{prompt: '0.15', completion: '0.0000006'}"), "models[0].endpoint.pricing.completion",
                "pricing.unit: per_token");
  ExpectRefused(WithPricing("{prompt: '0.15', completion: '0.6', cached_prompt: '0.000000075'}"),
                "models[0].endpoint.pricing.cached_prompt", "per-token");
  ExpectRefused(WithPricing("{prompt: '1', completion: '1', tiers: [{above_prompt_tokens: 10, prompt: '0.0000002', "
                            "completion: '1'}]}"),
                "models[0].endpoint.pricing.tiers[0].prompt", "per-token");
  // A per-million figure under unit: per_token.
  ExpectRefused(WithPricing("{unit: per_token, prompt: '0.15', completion: '0.0000006'}"),
                "models[0].endpoint.pricing.prompt",
                "looks like a per-million-tokens price (it would be $0.00000015 per token)");
  ExpectRefused(WithPricing("{unit: per_token, prompt: '0.00000015', completion: '2', reasoning: '0.000002'}"),
                "models[0].endpoint.pricing.completion", "per-million");
  ExpectRefused(WithPricing("{unit: per_gallon, prompt: '1', completion: '1'}"), "models[0].endpoint.pricing.unit");
  ExpectRefused(WithPricing("{unit: per_token, prompt: '0.0000000000000001', completion: '0'}"),
                "models[0].endpoint.pricing.prompt", "15 decimal places");
  ExpectRefused(WithPricing("{unit: per_token, prompt: 'x', completion: '0'}"), "models[0].endpoint.pricing.prompt");
}

TEST(Config, PerTokenPricesConvertExactly) {
  auto config = Parse(WithPricing(
      "{unit: per_token, prompt: '0.00000015', completion: '0.0000006', cached_prompt: '0.000000075', "
      "cache_write: '.0000001', reasoning: '0.000001', per_request: '0.002', "
      "tiers: [{above_prompt_tokens: 200000, prompt: '0.0000003', completion: '0.0000012'}]}"));
  ASSERT_TRUE(config) << config.error().message;
  const EndpointConfig& e = config->models[0].endpoints[0];
  EXPECT_EQ(e.pricing.prompt.femto_usd_per_token, 150'000'000);
  EXPECT_EQ(e.pricing.completion.femto_usd_per_token, 600'000'000);
  EXPECT_EQ(e.pricing.cached_prompt.femto_usd_per_token, 75'000'000);
  EXPECT_EQ(e.pricing.cache_write.femto_usd_per_token, 100'000'000);
  EXPECT_EQ(e.pricing.reasoning->femto_usd_per_token, 1'000'000'000);
  EXPECT_EQ(e.pricing.per_request.nano_usd, 2'000'000);  // USD per request whatever the unit
  EXPECT_EQ(e.tiers[0].pricing.prompt.femto_usd_per_token, 300'000'000);
  // Free is free in either unit; the smallest real per-million price passes.
  EXPECT_TRUE(Parse(WithPricing("{unit: per_token, prompt: '0', completion: '0.001'}")));
  EXPECT_TRUE(Parse(WithPricing("{prompt: '0', completion: '0.001'}")));
  EXPECT_TRUE(Parse(WithPricing("{prompt: '0.02', completion: '1000'}")));
}

TEST(Config, BadEndpointValuesAreReportedWithTheirPath) {
  const std::string e = "models:\n  - id: a/m\n    endpoint: {provider: openai, model: m, pricing: {prompt: '1', "
                        "completion: '1'}, ";
  ExpectRefused(e + "colour: blue}", "models[0].endpoint.colour", "unknown key");
  ExpectRefused(e + "max_output_tokens: 0}", "models[0].endpoint.max_output_tokens");
  ExpectRefused(e + "supported_parameters: [temperature, top_a]}", "models[0].endpoint.supported_parameters[1]",
                "'top_a' is not a parameter name");
  ExpectRefused(e + "supported_parameters: temperature}", "models[0].endpoint.supported_parameters");
  ExpectRefused(e + "data_policy: {trains_on_prompts: maybe}}", "models[0].endpoint.data_policy.trains_on_prompts");
  ExpectRefused(e + "data_policy: {logs: true}}", "models[0].endpoint.data_policy.logs", "unknown key");
  ExpectRefused(e + "data_policy: {zero_data_retention: true, retains_prompts: true}}",
                "models[0].endpoint.data_policy.zero_data_retention");
  ExpectRefused(e + "max_concurrency: -1}", "models[0].endpoint.max_concurrency");
  ExpectRefused(e + "weight: 0}", "models[0].endpoint.weight", "out of range");
  ExpectRefused(e + "weight: heavy}", "models[0].endpoint.weight");
  ExpectRefused(WithPricing("{prompt: '1', completion: '1', per_request: '-1'}"),
                "models[0].endpoint.pricing.per_request");
  ExpectRefused(WithPricing("{prompt: '1', completion: '1', surge: '2'}"), "models[0].endpoint.pricing.surge");
  ExpectRefused(WithPricing("{prompt: '1', completion: '1', tiers: {above_prompt_tokens: 5}}"),
                "models[0].endpoint.pricing.tiers");
  ExpectRefused(WithPricing("{prompt: '1', completion: '1', tiers: [{prompt: '2', completion: '2'}]}"),
                "models[0].endpoint.pricing.tiers[0].above_prompt_tokens");
  ExpectRefused(WithPricing("{prompt: '1', completion: '1', tiers: [{above_prompt_tokens: 100, prompt: '2'}]}"),
                "models[0].endpoint.pricing.tiers[0].completion");
  ExpectRefused(WithPricing("{prompt: '1', completion: '1', tiers: [{above_prompt_tokens: 100, prompt: '2', "
                            "completion: '2'}, {above_prompt_tokens: 100, prompt: '3', completion: '3'}]}"),
                "models[0].endpoint.pricing.tiers[1].above_prompt_tokens", "ascending");
  ExpectRefused(WithPricing("{prompt: '1', completion: '1', tiers: [{above_prompt_tokens: 100, prompt: '2', "
                            "completion: '2', per_request: '1'}]}"),
                "models[0].endpoint.pricing.tiers[0].per_request", "unknown key");
}

TEST(Config, WeightIsBetweenAThousandthAndAThousand) {
  const std::string e = "models:\n  - id: a/m\n    endpoint: {provider: openai, model: m, pricing: {prompt: '1', "
                        "completion: '1'}, ";
  for (const std::string w : {"0.001", "1", "2.5", "1000"}) {
    auto config = Parse(e + "weight: " + w + "}");
    ASSERT_TRUE(config) << w << ": " << config.error().message;
    EXPECT_EQ(config->models[0].endpoints[0].weight, std::stod(w));
  }
  // 1e-300 once passed and underflowed every traffic share to NaN.
  for (const std::string w : {"1e-300", "0.0009", "-1", "1000.5", "1e6", "1e300"}) {
    ExpectRefused(e + "weight: " + w + "}", "models[0].endpoint.weight", "out of range [0.001, 1000]");
  }
}

TEST(Config, CacheReadsDearerThanPromptTokensAreRefused) {
  ExpectRefused(WithPricing("{prompt: '0.15', completion: '0.6', cached_prompt: '1.5'}"),
                "models[0].endpoint.pricing.cached_prompt",
                "1.5 is above this pricing's prompt price 0.15: cache reads are never dearer than prompt tokens");
  ExpectRefused(WithPricing("{unit: per_token, prompt: '0.00000015', completion: '0.0000006', "
                            "cached_prompt: '0.0000002'}"),
                "models[0].endpoint.pricing.cached_prompt", "0.0000002 is above this pricing's prompt price 0.00000015");
  // Each tier against its own prompt price, not the base's.
  ExpectRefused(WithPricing("{prompt: '1', completion: '1', tiers: [{above_prompt_tokens: 100, prompt: '2', "
                            "completion: '2', cached_prompt: '3'}]}"),
                "models[0].endpoint.pricing.tiers[0].cached_prompt", "likely a typo");
  auto tier = Parse(WithPricing("{prompt: '1', completion: '1', cached_prompt: '0.5', tiers: [{above_prompt_tokens: "
                                "100, prompt: '2', completion: '2', cached_prompt: '1.5'}]}"));
  ASSERT_TRUE(tier) << tier.error().message;
  // Equal is fine (no discount), and cache writes may cost more than prompt tokens.
  auto config = Parse(WithPricing("{prompt: '3', completion: '15', cached_prompt: '3', cache_write: '3.75'}"));
  ASSERT_TRUE(config) << config.error().message;
  EXPECT_EQ(config->models[0].endpoints[0].pricing.cache_write.femto_usd_per_token, 3'750'000'000);
}

TEST(Config, PerRequestFeesAboveTenDollarsAreRefused) {
  ASSERT_TRUE(Parse(WithPricing("{prompt: '1', completion: '1', per_request: '10'}")));
  ASSERT_TRUE(Parse(WithPricing("{unit: per_token, prompt: '0.000001', completion: '0.000001', per_request: '0.005'}")));
  ExpectRefused(WithPricing("{prompt: '1', completion: '1', per_request: '10.000000001'}"),
                "models[0].endpoint.pricing.per_request", "per_request is USD per request, e.g. 0.005");
  ExpectRefused(WithPricing("{prompt: '1', completion: '1', per_request: '500'}"),
                "models[0].endpoint.pricing.per_request", "likely a unit mistake");
}

TEST(Config, ModelRoutingPolicy) {
  for (const auto& [name, strategy] : std::vector<std::pair<std::string, routing::RoutingPolicy::Strategy>>{
           {"shares", routing::RoutingPolicy::Strategy::kShares},
           {"price", routing::RoutingPolicy::Strategy::kPrice},
           {"throughput", routing::RoutingPolicy::Strategy::kThroughput},
           {"latency", routing::RoutingPolicy::Strategy::kLatency},
           {"ordered", routing::RoutingPolicy::Strategy::kOrdered},
       }) {
    auto config = Parse("models:\n  - id: a/m\n    routing: {strategy: " + name +
                        "}\n    endpoint: {provider: openai, model: m, pricing: {prompt: '1', completion: '1'}}\n");
    ASSERT_TRUE(config) << config.error().message;
    EXPECT_EQ(config->models[0].routing.strategy, strategy) << name;
  }
  const std::string head = "models:\n  - id: a/m\n    endpoint: {provider: openai, model: m, pricing: {prompt: '1', "
                           "completion: '1'}}\n    routing: ";
  ExpectRefused(head + "{strategy: random}", "models[0].routing.strategy", "not a strategy");
  ExpectRefused(head + "{retries: 11}", "models[0].routing.retries");
  ExpectRefused(head + "{retry_backoff_ms: -5}", "models[0].routing.retry_backoff_ms");
  ExpectRefused(head + "{hedge_after_ms: soon}", "models[0].routing.hedge_after_ms");
  ExpectRefused(head + "{sticky_ttl_s: -1}", "models[0].routing.sticky_ttl_s");
  ExpectRefused(head + "{sticky: true}", "models[0].routing.sticky", "unknown key");
  ExpectRefused(head + "ordered", "models[0].routing", "must be a mapping");
}

TEST(Config, TopLevelRoutingOptions) {
  auto config = Parse(R"(
routing:
  queue_timeout_ms: 5000
  max_queued: 64
  sticky_capacity: 1000
  exploration_share: 0.1
  competitive_ratio: 1.5
  breaker: {consecutive_failures: 3, open_ms: 2000, max_open_ms: 60000}
  default_cooldown_ms: 15000
  max_cooldown_ms: 120000
models: []
)");
  ASSERT_TRUE(config) << config.error().message;
  const routing::RouterOptions& o = config->routing;
  EXPECT_EQ(o.queue_timeout, routing::Millis(5000));
  EXPECT_EQ(o.max_queued, 64u);
  EXPECT_EQ(o.sticky_capacity, 1000u);
  EXPECT_EQ(o.exploration_share, 0.1);
  EXPECT_EQ(o.competitive_ratio, 1.5);
  EXPECT_EQ(o.health.consecutive_failures, 3);
  EXPECT_EQ(o.health.open_for, routing::Millis(2000));
  EXPECT_EQ(o.health.max_open_for, routing::Millis(60000));
  EXPECT_EQ(o.health.default_cooldown, routing::Millis(15000));
  EXPECT_EQ(o.health.max_cooldown, routing::Millis(120000));

  ExpectRefused("routing: {queue_timeout_ms: -1}", "routing.queue_timeout_ms");
  ExpectRefused("routing: {exploration_share: 0.9}", "routing.exploration_share");
  ExpectRefused("routing: {exploration_share: some}", "routing.exploration_share", "not a number");
  ExpectRefused("routing: {competitive_ratio: 0.5}", "routing.competitive_ratio");
  ExpectRefused("routing: {breaker: {consecutive_failures: 0}}", "routing.breaker.consecutive_failures");
  ExpectRefused("routing: {breaker: {open_ms: 60000, max_open_ms: 1000}}", "routing.breaker.max_open_ms");
  ExpectRefused("routing: {breaker: {half_open_probes: 2}}", "routing.breaker.half_open_probes", "unknown key");
  ExpectRefused("routing: {default_cooldown_ms: 5000, max_cooldown_ms: 1000}", "routing.max_cooldown_ms");
  ExpectRefused("routing: {strategy: price}", "routing.strategy", "unknown key");
}

TEST(Config, TheShippedConfigDocumentsRoutedModels) {
  auto config = LoadConfig(std::string(TOLLGATE_SOURCE_DIR) + "/config/tollgate.yaml",
                           FakeEnv({{"TOLLGATE_DATABASE_URL", "postgresql://x@127.0.0.1/db"}}));
  ASSERT_TRUE(config) << config.error().message;
  std::set<std::string> ids;
  for (const auto& m : config->models) {
    for (const auto& e : m.endpoints) EXPECT_TRUE(ids.insert(e.id).second) << e.id;
  }
  EXPECT_TRUE(ids.count("local/stories260K"));
}

TEST(Config, ServerLimitsAndTls) {
  auto defaults = ParseConfig(kMinimal, "/etc/tollgate", FakeEnv({{"OPENAI_API_KEY", "sk-test"}}));
  ASSERT_TRUE(defaults) << defaults.error().message;
  EXPECT_EQ(defaults->server.max_json_depth, 64);
  EXPECT_EQ(defaults->server.max_header_bytes, 16 * 1024);
  EXPECT_TRUE(defaults->server.tls_cert_file.empty());

  std::string text = kMinimal;
  text.replace(text.find("server: {listen: \"127.0.0.1:9000\"}"), 34,
               "server: {listen: \"127.0.0.1:9000\", max_json_depth: 20, max_messages: 7, max_tools: 0, "
               "header_timeout_ms: 500, max_connections_per_client: 3, tls: {cert_file: c.pem, key_file: k.pem}}");
  auto set = ParseConfig(text, "/etc/tollgate", FakeEnv({{"OPENAI_API_KEY", "sk-test"}}));
  ASSERT_TRUE(set) << set.error().message;
  EXPECT_EQ(set->server.max_json_depth, 20);
  EXPECT_EQ(set->server.max_messages, 7);
  EXPECT_EQ(set->server.max_tools, 0);
  EXPECT_EQ(set->server.header_timeout_ms, 500);
  EXPECT_EQ(set->server.max_connections_per_client, 3);
  EXPECT_EQ(set->server.tls_cert_file, "/etc/tollgate/c.pem");
  EXPECT_EQ(set->server.tls_key_file, "/etc/tollgate/k.pem");

  auto bad = [](std::string_view server) {
    std::string t = kMinimal;
    t.replace(t.find("server: {listen: \"127.0.0.1:9000\"}"), 34, server);
    auto r = ParseConfig(t, "/etc/tollgate", FakeEnv({{"OPENAI_API_KEY", "sk-test"}}));
    return r ? std::string("accepted") : r.error().message;
  };
  EXPECT_EQ(bad("server: {max_json_depth: 65}"), "server.max_json_depth: 65 is out of range [4, 64]");
  EXPECT_EQ(bad("server: {tls: {cert_file: c.pem}}"), "server.tls: needs both cert_file and key_file");
  EXPECT_EQ(bad("server: {tls: {cert: c.pem}}"), "server.tls.cert: unknown key");
}

// A secret interpolated into the wrong field never reaches the message: its
// variable's name does.
TEST(Config, ErrorsNameTheVariableNotItsValue) {
  std::string text = kMinimal;
  text.replace(text.find("server: {listen: \"127.0.0.1:9000\"}"), 34, "server: {io_threads: \"${ADMIN_TOKEN}\"}");
  auto r = ParseConfig(text, "/etc/tollgate",
                       FakeEnv({{"OPENAI_API_KEY", "sk-test"}, {"ADMIN_TOKEN", "s3cr3t-admin-token-value"}}));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().message, "server.io_threads: '${ADMIN_TOKEN}' is not an integer");
  EXPECT_EQ(r.error().message.find("s3cr3t"), std::string::npos);
}

TEST(Config, OutboundProxySettings) {
  auto unset = ParseConfig(kMinimal, "/x", FakeEnv({}));
  ASSERT_TRUE(unset) << unset.error().message;
  EXPECT_FALSE(unset->outbound.proxy);  // the environment decides
  EXPECT_EQ(unset->outbound.dns_ttl_ms, 30'000);
  const std::string text = std::string(kMinimal) +
                           "outbound: {proxy: \"${PROXY}\", no_proxy: \"\", dns_ttl_ms: 0}\n";
  auto from_env = ParseConfig(text, "/x", FakeEnv({{"PROXY", "http://u:p@proxy:3128"}}));
  ASSERT_TRUE(from_env) << from_env.error().message;
  EXPECT_EQ(from_env->outbound.proxy, "http://u:p@proxy:3128");
  EXPECT_EQ(from_env->outbound.no_proxy, "");  // explicitly no exceptions
  EXPECT_EQ(from_env->outbound.dns_ttl_ms, 0);
  auto no_var = ParseConfig(text, "/x", FakeEnv({}));
  ASSERT_TRUE(no_var) << no_var.error().message;
  EXPECT_FALSE(no_var->outbound.proxy);  // ${PROXY} unset: as if not written
}

}  // namespace
}  // namespace tollgate::gateway
