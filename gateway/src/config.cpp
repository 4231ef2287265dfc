#include "tollgate/gateway/config.hpp"

#include "tollgate/providers/presets.hpp"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

namespace tollgate::gateway {
namespace {

// Thrown inside the parser only, turned into an Error at the boundary.
struct ConfigError {
  std::string message;
};

[[noreturn]] void Fail(const std::string& path, const std::string& what) {
  throw ConfigError{path + ": " + what};
}

std::string Join(const std::string& path, const std::string& key) {
  return path.empty() ? key : path + "." + key;
}

std::string Num(double d) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", d);
  return buf;
}

enum class PriceUnit { kPerMillionTokens, kPerToken };

// USD per token -> femto-USD per token: the same digits read as USD per
// million tokens with the point moved six places right ("0.00000015" ->
// "0.15"), so the conversion is exact.
Result<TokenPrice> ParsePerToken(const std::string& text) {
  const size_t dot = text.find('.');
  if (dot != std::string::npos && dot + 1 == text.size()) return InvalidArgument("not a decimal number");
  const std::string whole = text.substr(0, dot);
  std::string frac = dot == std::string::npos ? std::string() : text.substr(dot + 1);
  if (frac.size() < 6) frac.resize(6, '0');
  std::string shifted = whole + frac.substr(0, 6);
  if (frac.size() > 6) shifted += "." + frac.substr(6);
  return ParsePricePerMillion(shifted);
}

// The unit check. Providers publish prices per million tokens (OpenAI,
// Anthropic, Google pricing pages) while OpenRouter's API lists them per token,
// so the two are easily confused, and a confusion is a factor of a million in
// what callers are charged. Real prices sit between $0.01 and a few hundred
// dollars per million tokens: a nonzero per-million figure below $0.001 is a
// per-token figure, and a per-token figure above $0.001 ($1000 per million) is
// a per-million one. Either stops startup.
constexpr int64_t kLowestPerMillionFemto = 1'000'000;       // $0.001 per million tokens
constexpr int64_t kHighestPerTokenFemto = 1'000'000'000'000;  // $0.001 per token
constexpr Money kHighestPerRequest{10'000'000'000};            // $10 per call

void CheckMagnitude(TokenPrice price, const std::string& text, const std::string& path, PriceUnit unit) {
  const int64_t femto = price.femto_usd_per_token;
  if (unit == PriceUnit::kPerMillionTokens && femto != 0 && femto < kLowestPerMillionFemto) {
    // Read as USD per token, it would be femto * 1e6 nano-USD per million.
    Fail(path, "'" + text + "' USD per million tokens looks like a per-token price (it would be $" +
                   FormatUsd(Money{femto * 1'000'000}) +
                   " per million tokens); write the per-million figure, or set pricing.unit: per_token");
  }
  if (unit == PriceUnit::kPerToken && femto > kHighestPerTokenFemto) {
    Fail(path, "'" + text + "' USD per token looks like a per-million-tokens price (it would be $" +
                   FormatUsdPerToken(TokenPrice{femto / 1'000'000}) +
                   " per token); write USD per token, or drop pricing.unit (per_million_tokens is the default)");
  }
}

class Reader {
 public:
  Reader(const EnvLookup& env, std::string base_dir) : env_(env), base_dir_(std::move(base_dir)) {}

  // Rejects keys outside `allowed`.
  void CheckKeys(const YAML::Node& node, const std::string& path,
                 std::initializer_list<std::string_view> allowed) {
    if (!node.IsMap()) Fail(path.empty() ? "(top level)" : path, "must be a mapping");
    for (const auto& kv : node) {
      std::string key = kv.first.as<std::string>();
      bool ok = false;
      for (auto a : allowed) ok = ok || a == key;
      if (!ok) Fail(Join(path, key), "unknown key");
    }
  }

  // Scalar string with ${} interpolation. `missing` receives an unset variable
  // name when non-null; otherwise an unset variable is an error.
  std::string String(const YAML::Node& node, const std::string& path,
                     std::string* missing = nullptr) {
    if (!node.IsScalar()) Fail(path, "must be a string");
    std::string unset;
    std::string value = Interpolate(node.Scalar(), env_, &unset);
    if (!unset.empty()) {
      if (missing == nullptr) Fail(path, "environment variable " + unset + " is not set");
      *missing = unset;
    }
    return value;
  }

  int64_t Int(const YAML::Node& node, const std::string& path, int64_t min, int64_t max) {
    std::string text = String(node, path);
    int64_t value = 0;
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
    if (ec != std::errc() || end != text.data() + text.size()) Fail(path, "'" + text + "' is not an integer");
    if (value < min || value > max) {
      Fail(path, std::to_string(value) + " is out of range [" + std::to_string(min) + ", " +
                     std::to_string(max) + "]");
    }
    return value;
  }

  TokenPrice Price(const YAML::Node& node, const std::string& path) {
    auto price = ParsePricePerMillion(String(node, path));
    if (!price) Fail(path, price.error().message);
    return *price;
  }

  // A token price in `unit`, checked for the other unit's magnitude (below).
  TokenPrice PriceIn(const YAML::Node& node, const std::string& path, PriceUnit unit) {
    const std::string text = String(node, path);
    if (unit == PriceUnit::kPerMillionTokens) {
      auto price = ParsePricePerMillion(text);
      if (!price) Fail(path, price.error().message);
      CheckMagnitude(*price, text, path, unit);
      return *price;
    }
    auto price = ParsePerToken(text);
    if (!price) Fail(path, "'" + text + "' is not a non-negative decimal of USD per token with at most 15 decimal places");
    CheckMagnitude(*price, text, path, unit);
    return *price;
  }

  Money Usd(const YAML::Node& node, const std::string& path) {
    auto usd = ParseUsd(String(node, path));
    if (!usd) Fail(path, usd.error().message);
    return *usd;
  }

  double Double(const YAML::Node& node, const std::string& path, double min, double max) {
    const std::string text = String(node, path);
    double value = 0;
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
    if (ec != std::errc() || end != text.data() + text.size() || !std::isfinite(value)) {
      Fail(path, "'" + text + "' is not a number");
    }
    if (value < min || value > max) Fail(path, text + " is out of range [" + Num(min) + ", " + Num(max) + "]");
    return value;
  }

  bool Bool(const YAML::Node& node, const std::string& path) {
    const std::string text = String(node, path);
    // YAML 1.2 core schema booleans.
    if (text == "true" || text == "True" || text == "TRUE") return true;
    if (text == "false" || text == "False" || text == "FALSE") return false;
    Fail(path, "'" + text + "' is not true or false");
  }

  std::string Path(const YAML::Node& node, const std::string& path) {
    std::filesystem::path p(String(node, path));
    if (p.is_relative()) p = std::filesystem::path(base_dir_) / p;
    return p.lexically_normal().string();
  }

 private:
  const EnvLookup& env_;
  std::string base_dir_;
};

void ParseListen(const std::string& text, const std::string& path, ServerConfig& server) {
  size_t colon = text.rfind(':');
  if (colon == std::string::npos || colon == 0) Fail(path, "'" + text + "' is not HOST:PORT");
  std::string host = text.substr(0, colon);
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  int port = -1;
  auto [end, ec] = std::from_chars(text.data() + colon + 1, text.data() + text.size(), port);
  if (ec != std::errc() || end != text.data() + text.size() || port < 0 || port > 65535) {
    Fail(path, "'" + text + "' has no valid port");
  }
  server.host = host;
  server.port = static_cast<uint16_t>(port);
}

// `pricing:` of an endpoint: the base prices, per_request, and the tiers.
void ParsePricing(const YAML::Node& pn, const std::string& path, Reader& r, EndpointConfig& e) {
  r.CheckKeys(pn, path, {"prompt", "completion", "cached_prompt", "cache_write", "reasoning", "per_request", "unit",
                         "tiers"});
  PriceUnit unit = PriceUnit::kPerMillionTokens;
  if (pn["unit"]) {
    const std::string u = r.String(pn["unit"], path + ".unit");
    if (u == "per_token") {
      unit = PriceUnit::kPerToken;
    } else if (u != "per_million_tokens") {
      Fail(path + ".unit", "'" + u + "' is not a unit (per_million_tokens, per_token)");
    }
  }
  // Prompt and completion are required; cache reads and writes default to
  // the prompt price, reasoning tokens to the completion price (money.hpp).
  auto read = [&](const YAML::Node& node, const std::string& at, Pricing& out) {
    if (!node["prompt"]) Fail(at + ".prompt", "is required");
    if (!node["completion"]) Fail(at + ".completion", "is required");
    out.prompt = r.PriceIn(node["prompt"], at + ".prompt", unit);
    out.completion = r.PriceIn(node["completion"], at + ".completion", unit);
    out.cached_prompt = node["cached_prompt"] ? r.PriceIn(node["cached_prompt"], at + ".cached_prompt", unit) : out.prompt;
    out.cache_write = node["cache_write"] ? r.PriceIn(node["cache_write"], at + ".cache_write", unit) : out.prompt;
    if (node["reasoning"]) out.reasoning = r.PriceIn(node["reasoning"], at + ".reasoning", unit);
    // Cache reads are discounted prompt tokens everywhere (cache writes may
    // cost more, reads never do): a dearer one is a typo, and would also make
    // stickiness and the cache discount in the routing price run backwards.
    if (out.cached_prompt > out.prompt) {
      auto text = [&](TokenPrice p) {
        return unit == PriceUnit::kPerToken ? FormatUsdPerToken(p) : FormatUsd(Money{p.femto_usd_per_token});
      };
      Fail(at + ".cached_prompt", text(out.cached_prompt) + " is above this pricing's prompt price " +
                                      text(out.prompt) +
                                      ": cache reads are never dearer than prompt tokens (cache writes may be), "
                                      "so this is likely a typo");
    }
  };
  read(pn, path, e.pricing);
  if (pn["per_request"]) {
    e.pricing.per_request = r.Usd(pn["per_request"], path + ".per_request");
    // A fee of more than $10 on every call is a unit mistake (a per-million
    // token price, or cents), not a real price.
    if (e.pricing.per_request > kHighestPerRequest) {
      Fail(path + ".per_request", "$" + FormatUsd(e.pricing.per_request) + " per call is above $" +
                                      FormatUsd(kHighestPerRequest) +
                                      ", likely a unit mistake: per_request is USD per request, e.g. 0.005");
    }
  }
  if (auto ts = pn["tiers"]) {
    if (!ts.IsSequence()) Fail(path + ".tiers", "must be a list of {above_prompt_tokens, prompt, completion, ...}");
    int64_t last = 0;
    for (size_t k = 0; k < ts.size(); ++k) {
      const std::string tpath = path + ".tiers[" + std::to_string(k) + "]";
      r.CheckKeys(ts[k], tpath, {"above_prompt_tokens", "prompt", "completion", "cached_prompt", "cache_write",
                                 "reasoning"});
      if (!ts[k]["above_prompt_tokens"]) Fail(tpath + ".above_prompt_tokens", "is required");
      routing::PriceTier tier;
      tier.above_prompt_tokens = r.Int(ts[k]["above_prompt_tokens"], tpath + ".above_prompt_tokens", 1, 1LL << 32);
      if (tier.above_prompt_tokens <= last) {
        Fail(tpath + ".above_prompt_tokens", "tiers must be in ascending order of above_prompt_tokens");
      }
      last = tier.above_prompt_tokens;
      // A tier prices the whole request; what it leaves out defaults within
      // the tier, as at the base, and the per-request fee is the base's.
      read(ts[k], tpath, tier.pricing);
      tier.pricing.per_request = e.pricing.per_request;
      e.tiers.push_back(std::move(tier));
    }
  }
}

constexpr double kLowestWeight = 0.001;
constexpr double kHighestWeight = 1000;

EndpointConfig ParseEndpoint(const YAML::Node& en, const std::string& epath,
                             const std::vector<ProviderConfig>& providers, Reader& r) {
  r.CheckKeys(en, epath, {"id", "provider", "model", "pricing", "context_length", "max_output_tokens", "quantization",
                          "supported_parameters", "data_policy", "max_concurrency", "weight"});
  EndpointConfig e;
  e.config_path = epath;
  if (!en["provider"]) Fail(epath + ".provider", "is required");
  e.provider = r.String(en["provider"], epath + ".provider");
  const ProviderConfig* provider = nullptr;
  for (const auto& p : providers) {
    if (p.id == e.provider) provider = &p;
  }
  if (provider == nullptr) Fail(epath + ".provider", "'" + e.provider + "' is not under providers:");
  const bool local = provider->type == "local";
  if (!en["model"]) Fail(epath + ".model", "is required");
  e.model = local ? r.Path(en["model"], epath + ".model") : r.String(en["model"], epath + ".model");
  if (en["id"]) {
    e.id = r.String(en["id"], epath + ".id");
    if (e.id.empty()) Fail(epath + ".id", "must not be empty");
  } else {
    // A local model is named by its file, not by where the file lies.
    e.id = e.provider + "/" + (local ? std::filesystem::path(e.model).stem().string() : e.model);
  }
  if (!en["pricing"]) Fail(epath + ".pricing", "is required (USD per million tokens)");
  ParsePricing(en["pricing"], epath + ".pricing", r, e);
  if (en["context_length"]) e.context_length = r.Int(en["context_length"], epath + ".context_length", 1, 1LL << 32);
  if (en["max_output_tokens"]) {
    e.max_output_tokens = r.Int(en["max_output_tokens"], epath + ".max_output_tokens", 1, 1LL << 32);
  }
  if (en["quantization"]) {
    e.quantization = r.String(en["quantization"], epath + ".quantization");
    std::transform(e.quantization.begin(), e.quantization.end(), e.quantization.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  }
  if (auto sp = en["supported_parameters"]) {
    const std::string spath = epath + ".supported_parameters";
    if (!sp.IsSequence()) Fail(spath, "must be a list of parameter names (temperature, tools, ...)");
    ParameterSet set;
    for (size_t k = 0; k < sp.size(); ++k) {
      const std::string at = spath + "[" + std::to_string(k) + "]";
      const std::string name = r.String(sp[k], at);
      std::optional<Param> param = ParamFromName(name);
      if (!param) Fail(at, "'" + name + "' is not a parameter name (" + ParameterSet::All().Names() + ")");
      set.Add(*param);
    }
    e.supported_parameters = set;
  }
  if (auto dp = en["data_policy"]) {
    const std::string dpath = epath + ".data_policy";
    r.CheckKeys(dp, dpath, {"trains_on_prompts", "retains_prompts", "zero_data_retention"});
    if (dp["trains_on_prompts"]) e.data_policy.trains_on_prompts = r.Bool(dp["trains_on_prompts"], dpath + ".trains_on_prompts");
    if (dp["retains_prompts"]) e.data_policy.retains_prompts = r.Bool(dp["retains_prompts"], dpath + ".retains_prompts");
    if (dp["zero_data_retention"]) {
      e.data_policy.zero_data_retention = r.Bool(dp["zero_data_retention"], dpath + ".zero_data_retention");
    }
    if (e.data_policy.zero_data_retention && (e.data_policy.retains_prompts || e.data_policy.trains_on_prompts)) {
      Fail(dpath + ".zero_data_retention", "contradicts retains_prompts / trains_on_prompts");
    }
  }
  // 0 for a local endpoint: the engine's max_sequences (filled in when the
  // engine is loaded), so more calls wait in the router's queue (or spill to
  // another endpoint) rather than pile up in the engine's.
  e.max_concurrency = 0;
  if (en["max_concurrency"]) {
    e.max_concurrency = static_cast<int>(r.Int(en["max_concurrency"], epath + ".max_concurrency", 0, 1'000'000));
  }
  if (en["weight"]) {
    // Bounded so that weight times the inverse-square price share stays a
    // normal double (a weight of 1e-300 made every share NaN).
    e.weight = r.Double(en["weight"], epath + ".weight", kLowestWeight, kHighestWeight);
  }
  return e;
}

// `routing:` of a model (routing/catalog.hpp RoutingPolicy).
routing::RoutingPolicy ParseModelRouting(const YAML::Node& n, const std::string& path, Reader& r) {
  r.CheckKeys(n, path, {"strategy", "retries", "retry_backoff_ms", "hedge_after_ms", "sticky_ttl_s"});
  routing::RoutingPolicy policy;
  using Strategy = routing::RoutingPolicy::Strategy;
  if (n["strategy"]) {
    static const std::pair<std::string_view, Strategy> kStrategies[] = {
        {"shares", Strategy::kShares},         {"price", Strategy::kPrice},     {"throughput", Strategy::kThroughput},
        {"latency", Strategy::kLatency},       {"ordered", Strategy::kOrdered},
    };
    const std::string name = r.String(n["strategy"], path + ".strategy");
    bool found = false;
    for (const auto& [key, value] : kStrategies) {
      if (key == name) {
        policy.strategy = value;
        found = true;
      }
    }
    if (!found) Fail(path + ".strategy", "'" + name + "' is not a strategy (shares, price, throughput, latency, ordered)");
  }
  if (n["retries"]) policy.retries = static_cast<int>(r.Int(n["retries"], path + ".retries", 0, 10));
  if (n["retry_backoff_ms"]) {
    policy.retry_backoff = std::chrono::milliseconds(r.Int(n["retry_backoff_ms"], path + ".retry_backoff_ms", 0, 600'000));
  }
  if (n["hedge_after_ms"]) {
    policy.hedge_after = std::chrono::milliseconds(r.Int(n["hedge_after_ms"], path + ".hedge_after_ms", 0, 600'000));
  }
  if (n["sticky_ttl_s"]) {
    policy.sticky_ttl = std::chrono::seconds(r.Int(n["sticky_ttl_s"], path + ".sticky_ttl_s", 0, 7 * 86'400));
  }
  return policy;
}

// Top-level `routing:` (routing/router.hpp RouterOptions, health.hpp HealthOptions).
routing::RouterOptions ParseRouterOptions(const YAML::Node& n, Reader& r) {
  r.CheckKeys(n, "routing", {"queue_timeout_ms", "max_queued", "sticky_capacity", "exploration_share",
                             "competitive_ratio", "breaker", "default_cooldown_ms", "max_cooldown_ms"});
  routing::RouterOptions o;
  if (n["queue_timeout_ms"]) {
    o.queue_timeout = routing::Millis(r.Int(n["queue_timeout_ms"], "routing.queue_timeout_ms", 0, 3'600'000));
  }
  if (n["max_queued"]) o.max_queued = static_cast<std::size_t>(r.Int(n["max_queued"], "routing.max_queued", 0, 1'000'000));
  if (n["sticky_capacity"]) {
    o.sticky_capacity = static_cast<std::size_t>(r.Int(n["sticky_capacity"], "routing.sticky_capacity", 0, 100'000'000));
  }
  if (n["exploration_share"]) {
    o.exploration_share = r.Double(n["exploration_share"], "routing.exploration_share", 0, 0.5);
  }
  if (n["competitive_ratio"]) {
    o.competitive_ratio = r.Double(n["competitive_ratio"], "routing.competitive_ratio", 1, 1000);
  }
  routing::HealthOptions& h = o.health;
  if (auto b = n["breaker"]) {
    r.CheckKeys(b, "routing.breaker", {"consecutive_failures", "open_ms", "max_open_ms"});
    if (b["consecutive_failures"]) {
      h.consecutive_failures =
          static_cast<int>(r.Int(b["consecutive_failures"], "routing.breaker.consecutive_failures", 1, 1000));
    }
    if (b["open_ms"]) h.open_for = routing::Millis(r.Int(b["open_ms"], "routing.breaker.open_ms", 1, 3'600'000));
    if (b["max_open_ms"]) {
      h.max_open_for = routing::Millis(r.Int(b["max_open_ms"], "routing.breaker.max_open_ms", 1, 86'400'000));
    }
    if (h.max_open_for < h.open_for) Fail("routing.breaker.max_open_ms", "must be at least open_ms");
  }
  if (n["default_cooldown_ms"]) {
    h.default_cooldown = routing::Millis(r.Int(n["default_cooldown_ms"], "routing.default_cooldown_ms", 0, 3'600'000));
  }
  if (n["max_cooldown_ms"]) {
    h.max_cooldown = routing::Millis(r.Int(n["max_cooldown_ms"], "routing.max_cooldown_ms", 0, 86'400'000));
  }
  if (h.max_cooldown < h.default_cooldown) Fail("routing.max_cooldown_ms", "must be at least default_cooldown_ms");
  return o;
}

Config ParseRoot(const YAML::Node& root, Reader& r) {
  Config config;
  if (!root.IsDefined() || root.IsNull()) Fail("(top level)", "the file is empty");
  r.CheckKeys(root, "", {"server", "database", "usage", "billing", "providers", "models", "routing", "log",
                         "stats", "responses", "outbound"});
  if (auto o = root["outbound"]) {
    r.CheckKeys(o, "outbound", {"proxy", "no_proxy", "dns_ttl_ms"});
    // An unset ${VAR} leaves the setting unset: the environment decides.
    auto optional_string = [&](const char* key) -> std::optional<std::string> {
      if (!o[key]) return std::nullopt;
      std::string missing;
      std::string value = r.String(o[key], std::string("outbound.") + key, &missing);
      if (!missing.empty()) return std::nullopt;
      return value;
    };
    config.outbound.proxy = optional_string("proxy");
    config.outbound.no_proxy = optional_string("no_proxy");
    if (o["dns_ttl_ms"]) config.outbound.dns_ttl_ms = static_cast<int>(r.Int(o["dns_ttl_ms"], "outbound.dns_ttl_ms", 0, 86'400'000));
  }
  if (auto l = root["log"]) {
    r.CheckKeys(l, "log", {"access"});
    if (l["access"]) config.log.access = r.Bool(l["access"], "log.access");
  }
  if (auto st = root["stats"]) {
    r.CheckKeys(st, "stats", {"retention_days"});
    if (st["retention_days"]) {
      config.stats.retention_days = static_cast<int>(r.Int(st["retention_days"], "stats.retention_days", 0, 36'500));
    }
  }
  if (auto rs = root["responses"]) {
    r.CheckKeys(rs, "responses", {"ttl_days"});
    if (rs["ttl_days"]) config.responses.ttl_days = static_cast<int>(r.Int(rs["ttl_days"], "responses.ttl_days", 1, 36'500));
  }

  if (auto s = root["server"]) {
    r.CheckKeys(s, "server",
                {"listen", "io_threads", "max_body_bytes", "request_timeout_ms", "drain_timeout_ms",
                 "max_header_bytes", "max_headers", "max_url_bytes", "max_json_depth", "max_messages", "max_tools",
                 "max_content_parts", "max_connections", "max_connections_per_client", "header_timeout_ms",
                 "body_timeout_ms", "idle_timeout_ms", "write_timeout_ms", "tls"});
    if (s["listen"]) ParseListen(r.String(s["listen"], "server.listen"), "server.listen", config.server);
    if (s["io_threads"]) config.server.io_threads = r.Int(s["io_threads"], "server.io_threads", 0, 1024);
    if (s["max_body_bytes"]) {
      config.server.max_body_bytes = r.Int(s["max_body_bytes"], "server.max_body_bytes", 1024, 1LL << 30);
    }
    if (s["request_timeout_ms"]) {
      config.server.request_timeout_ms =
          r.Int(s["request_timeout_ms"], "server.request_timeout_ms", 100, 86'400'000);
    }
    if (s["drain_timeout_ms"]) {
      config.server.drain_timeout_ms = r.Int(s["drain_timeout_ms"], "server.drain_timeout_ms", 0, 3'600'000);
    }
    ServerConfig& sc = config.server;
    auto limit = [&](const char* key, auto& field, int64_t min, int64_t max) {
      if (s[key]) field = static_cast<std::remove_reference_t<decltype(field)>>(r.Int(s[key], std::string("server.") + key, min, max));
    };
    limit("max_header_bytes", sc.max_header_bytes, 1024, 1 << 20);
    limit("max_headers", sc.max_headers, 8, 10'000);
    limit("max_url_bytes", sc.max_url_bytes, 256, 1 << 20);
    limit("max_json_depth", sc.max_json_depth, 4, 64);
    limit("max_messages", sc.max_messages, 1, 1'000'000);
    limit("max_tools", sc.max_tools, 0, 100'000);
    limit("max_content_parts", sc.max_content_parts, 1, 10'000'000);
    limit("max_connections", sc.max_connections, 1, 1'000'000);
    limit("max_connections_per_client", sc.max_connections_per_client, 1, 1'000'000);
    limit("header_timeout_ms", sc.header_timeout_ms, 100, 3'600'000);
    limit("body_timeout_ms", sc.body_timeout_ms, 100, 3'600'000);
    limit("idle_timeout_ms", sc.idle_timeout_ms, 100, 3'600'000);
    limit("write_timeout_ms", sc.write_timeout_ms, 100, 3'600'000);
    if (auto t = s["tls"]) {
      r.CheckKeys(t, "server.tls", {"cert_file", "key_file"});
      if (t["cert_file"]) sc.tls_cert_file = r.Path(t["cert_file"], "server.tls.cert_file");
      if (t["key_file"]) sc.tls_key_file = r.Path(t["key_file"], "server.tls.key_file");
      if (sc.tls_cert_file.empty() != sc.tls_key_file.empty()) {
        Fail("server.tls", "needs both cert_file and key_file");
      }
    }
  }
  if (auto d = root["database"]) {
    r.CheckKeys(d, "database", {"url"});
    // An unset variable here is fine: TOLLGATE_DATABASE_URL or the command line may supply it.
    std::string missing;
    if (d["url"]) config.database_url = r.String(d["url"], "database.url", &missing);
  }
  if (auto u = root["usage"]) {
    r.CheckKeys(u, "usage", {"flush_interval_ms", "batch_size", "spool_dir", "answer_after_spool"});
    if (u["spool_dir"]) {
      std::string missing;
      const std::string dir = r.String(u["spool_dir"], "usage.spool_dir", &missing);
      if (!dir.empty()) config.usage.spool_dir = r.Path(u["spool_dir"], "usage.spool_dir");
    }
    if (u["flush_interval_ms"]) {
      config.usage.flush_interval_ms =
          static_cast<int>(r.Int(u["flush_interval_ms"], "usage.flush_interval_ms", 1, 60'000));
    }
    if (u["batch_size"]) config.usage.batch_size = static_cast<int>(r.Int(u["batch_size"], "usage.batch_size", 1, 10'000));
    if (u["answer_after_spool"]) config.usage.answer_after_spool = r.Bool(u["answer_after_spool"], "usage.answer_after_spool");
  }

  if (auto b = root["billing"]) {
    r.CheckKeys(b, "billing", {"admin_token", "admin_listen", "lease_ttl_ms", "lease_idle_return_ms",
                               "rate_limit_sync_ms"});
    if (b["admin_token"]) {
      // An unset variable leaves the admin API off.
      std::string missing;
      config.billing.admin_token = r.String(b["admin_token"], "billing.admin_token", &missing);
      if (!config.billing.admin_token.empty() && config.billing.admin_token.size() < 16) {
        Fail("billing.admin_token", "is shorter than 16 characters; use a long random token (openssl rand -hex 32)");
      }
    }
    if (b["admin_listen"]) {
      std::string missing;
      const std::string listen = r.String(b["admin_listen"], "billing.admin_listen", &missing);
      if (!listen.empty()) {
        ServerConfig admin;
        ParseListen(listen, "billing.admin_listen", admin);
        config.billing.admin_host = admin.host;
        config.billing.admin_port = admin.port;
      }
    }
    if (b["lease_ttl_ms"]) config.billing.lease_ttl_ms = r.Int(b["lease_ttl_ms"], "billing.lease_ttl_ms", 1000, 3'600'000);
    if (b["lease_idle_return_ms"]) {
      config.billing.lease_idle_return_ms =
          r.Int(b["lease_idle_return_ms"], "billing.lease_idle_return_ms", 10, 3'600'000);
    }
    if (b["rate_limit_sync_ms"]) {
      config.billing.rate_limit_sync_ms = r.Int(b["rate_limit_sync_ms"], "billing.rate_limit_sync_ms", 10, 60'000);
    }
  }

  std::set<std::string> provider_ids;
  if (auto ps = root["providers"]) {
    if (!ps.IsMap()) Fail("providers", "must be a mapping of provider id to settings");
    for (const auto& kv : ps) {
      ProviderConfig p;
      p.id = kv.first.as<std::string>();
      std::string path = "providers." + p.id;
      const YAML::Node& n = kv.second;
      r.CheckKeys(n, path, {"type", "preset", "display_name", "base_url", "api_key", "ca_file", "connect_timeout_ms",
                            "first_byte_timeout_ms", "max_idle_connections", "default_max_tokens", "extra_headers",
                            "context_length", "threads", "max_sequences", "max_queue", "max_batch_tokens",
                            "kv_cache_mib", "kv_cache_type", "prefix_cache", "device", "gpu_device",
                            "gpu_memory_mib"});
      if (!n["type"]) Fail(path + ".type", "is required (local, openai_compatible, openai_responses, anthropic or gemini)");
      p.type = r.String(n["type"], path + ".type");
      const bool remote = p.type == "openai_compatible" || p.type == "openai_responses" || p.type == "anthropic" ||
                          p.type == "gemini";
      std::string default_name = p.id;
      if (n["preset"]) {
        if (p.type != "openai_compatible") Fail(path + ".preset", "applies to openai_compatible providers only");
        p.preset = r.String(n["preset"], path + ".preset");
        const providers::Preset* preset = providers::FindPreset(p.preset);
        if (preset == nullptr) {
          std::string names;
          for (const auto& known : providers::Presets()) names += (names.empty() ? "" : ", ") + std::string(known.name);
          Fail(path + ".preset", "'" + p.preset + "' is not a preset (" + names + ")");
        }
        p.base_url = std::string(preset->base_url);
        default_name = std::string(preset->display_name);
      }
      p.display_name = n["display_name"] ? r.String(n["display_name"], path + ".display_name") : default_name;
      if (remote) {
        for (const char* key : {"context_length", "threads", "max_sequences", "max_queue", "max_batch_tokens",
                                "kv_cache_mib", "kv_cache_type", "prefix_cache", "device", "gpu_device",
                                "gpu_memory_mib"}) {
          if (n[key]) Fail(path + "." + key, "applies to type: local providers only");
        }
        if (p.type == "anthropic") p.base_url = "https://api.anthropic.com/v1";
        if (p.type == "gemini") p.base_url = "https://generativelanguage.googleapis.com/v1beta";
        if (p.type == "openai_responses") p.base_url = "https://api.openai.com/v1";
        if (n["base_url"]) p.base_url = r.String(n["base_url"], path + ".base_url");
        if (p.base_url.empty()) Fail(path + ".base_url", "is required for openai_compatible without a preset");
        if (p.base_url.rfind("http://", 0) != 0 && p.base_url.rfind("https://", 0) != 0) {
          Fail(path + ".base_url", "must start with http:// or https://");
        }
        if (n["api_key"]) {
          std::string missing;
          p.api_key = r.String(n["api_key"], path + ".api_key", &missing);
          if (!missing.empty()) {
            p.enabled = false;
            p.disabled_reason = missing + " is not set";
          } else if (p.api_key.empty() && n["api_key"].Scalar().find("${") != std::string::npos) {
            // Set but empty (a compose file's `KEY=`): off, as unset. A literal
            // "" stays: a keyless server (a local vLLM or Ollama).
            p.enabled = false;
            p.disabled_reason = n["api_key"].Scalar() + " is empty";
          }
        }
        if (n["ca_file"]) p.ca_file = r.Path(n["ca_file"], path + ".ca_file");
        if (n["connect_timeout_ms"]) {
          p.connect_timeout_ms = static_cast<int>(r.Int(n["connect_timeout_ms"], path + ".connect_timeout_ms", 1, 600'000));
        }
        if (n["first_byte_timeout_ms"]) {
          p.first_byte_timeout_ms =
              static_cast<int>(r.Int(n["first_byte_timeout_ms"], path + ".first_byte_timeout_ms", 1, 3'600'000));
        }
        if (n["max_idle_connections"]) {
          p.max_idle_connections =
              static_cast<int>(r.Int(n["max_idle_connections"], path + ".max_idle_connections", 0, 100'000));
        }
        if (n["default_max_tokens"]) {
          p.default_max_tokens = r.Int(n["default_max_tokens"], path + ".default_max_tokens", 1, 1 << 24);
        }
        if (auto h = n["extra_headers"]) {
          if (!h.IsMap()) Fail(path + ".extra_headers", "must be a mapping of header name to value");
          for (const auto& kv : h) {
            const std::string name = kv.first.as<std::string>();
            p.extra_headers[name] = r.String(kv.second, path + ".extra_headers." + name);
          }
        }
      } else if (p.type == "local") {
        if (n["context_length"]) {
          p.context_length = static_cast<int>(r.Int(n["context_length"], path + ".context_length", 0, 1 << 24));
        }
        if (n["threads"]) p.threads = static_cast<int>(r.Int(n["threads"], path + ".threads", 0, 1024));
        if (n["max_sequences"]) {
          p.max_sequences = static_cast<int>(r.Int(n["max_sequences"], path + ".max_sequences", 1, 1024));
        }
        if (n["max_queue"]) p.max_queue = static_cast<int>(r.Int(n["max_queue"], path + ".max_queue", 0, 100'000));
        if (n["max_batch_tokens"]) {
          p.max_batch_tokens = static_cast<int>(r.Int(n["max_batch_tokens"], path + ".max_batch_tokens", 1, 65'536));
        }
        if (n["kv_cache_mib"]) p.kv_cache_mib = r.Int(n["kv_cache_mib"], path + ".kv_cache_mib", 0, 1 << 20);
        if (n["kv_cache_type"]) {
          p.kv_cache_type = r.String(n["kv_cache_type"], path + ".kv_cache_type");
          if (p.kv_cache_type != "f16" && p.kv_cache_type != "q8" && p.kv_cache_type != "f32") {
            Fail(path + ".kv_cache_type", "'" + p.kv_cache_type + "' is not a KV cache type (f16, q8, f32)");
          }
        }
        if (n["prefix_cache"]) p.prefix_cache = r.Bool(n["prefix_cache"], path + ".prefix_cache");
        if (n["device"]) {
          p.device = r.String(n["device"], path + ".device");
          if (p.device != "cpu" && p.device != "cuda" && p.device != "auto") {
            Fail(path + ".device", "'" + p.device + "' is not a device (cpu, cuda, auto)");
          }
        }
        if (n["gpu_device"]) p.gpu_device = static_cast<int>(r.Int(n["gpu_device"], path + ".gpu_device", 0, 1024));
        if (n["gpu_memory_mib"]) p.gpu_memory_mib = r.Int(n["gpu_memory_mib"], path + ".gpu_memory_mib", 0, 1 << 24);
      } else {
        Fail(path + ".type", "'" + p.type + "' is not a provider type (local, openai_compatible, openai_responses, anthropic, gemini)");
      }
      provider_ids.insert(p.id);
      config.providers.push_back(std::move(p));
    }
  }

  std::set<std::string> model_ids;
  std::map<std::string, std::string> endpoint_ids;  // written-out id -> where, for the duplicate message
  if (auto ms = root["models"]) {
    if (!ms.IsSequence()) Fail("models", "must be a list");
    for (size_t i = 0; i < ms.size(); ++i) {
      std::string path = "models[" + std::to_string(i) + "]";
      const YAML::Node& n = ms[i];
      r.CheckKeys(n, path, {"id", "name", "context_length", "endpoint", "endpoints", "routing"});
      ModelConfig m;
      if (!n["id"]) Fail(path + ".id", "is required");
      m.id = r.String(n["id"], path + ".id");
      if (m.id.empty()) Fail(path + ".id", "must not be empty");
      if (!model_ids.insert(m.id).second) Fail(path + ".id", "'" + m.id + "' is listed twice");
      m.name = n["name"] ? r.String(n["name"], path + ".name") : m.id;
      if (n["context_length"]) m.context_length = r.Int(n["context_length"], path + ".context_length", 1, 1LL << 32);
      if (n["routing"]) m.routing = ParseModelRouting(n["routing"], path + ".routing", r);
      std::vector<std::pair<YAML::Node, std::string>> endpoint_nodes;
      if (n["endpoint"] && n["endpoints"]) Fail(path, "give either endpoint or endpoints, not both");
      if (n["endpoint"]) endpoint_nodes.emplace_back(n["endpoint"], path + ".endpoint");
      if (auto es = n["endpoints"]) {
        if (!es.IsSequence()) Fail(path + ".endpoints", "must be a list");
        for (size_t j = 0; j < es.size(); ++j) {
          endpoint_nodes.emplace_back(es[j], path + ".endpoints[" + std::to_string(j) + "]");
        }
      }
      if (endpoint_nodes.empty()) Fail(path, "needs an endpoint");
      for (auto& [en, epath] : endpoint_nodes) {
        EndpointConfig e = ParseEndpoint(en, epath, config.providers, r);
        // A default id ("<provider>/<model>") may recur in another model (an
        // alias of the same upstream model); within a model, and for ids
        // written out, it names one endpoint.
        for (const EndpointConfig& sibling : m.endpoints) {
          if (sibling.id == e.id) {
            Fail(epath + ".id", "'" + e.id + "' is already the id of " + sibling.config_path +
                                    " (give one of them its own `id:`)");
          }
        }
        if (en["id"]) {
          auto [it, fresh] = endpoint_ids.emplace(e.id, epath);
          if (!fresh) {
            Fail(epath + ".id", "'" + e.id + "' is already the id of " + it->second +
                                    " (an `id:` written out is unique in the whole file)");
          }
        }
        m.endpoints.push_back(std::move(e));
      }
      config.models.push_back(std::move(m));
    }
  }
  if (auto rn = root["routing"]) config.routing = ParseRouterOptions(rn, r);
  return config;
}

}  // namespace

EnvLookup ProcessEnv() {
  return [](std::string_view name) -> std::optional<std::string> {
    const char* v = std::getenv(std::string(name).c_str());
    if (v == nullptr) return std::nullopt;
    return std::string(v);
  };
}

std::string Interpolate(std::string_view text, const EnvLookup& env, std::string* missing) {
  std::string out;
  size_t i = 0;
  while (i < text.size()) {
    size_t start = text.find("${", i);
    if (start == std::string_view::npos) {
      out.append(text.substr(i));
      break;
    }
    size_t end = text.find('}', start);
    if (end == std::string_view::npos) {
      out.append(text.substr(i));
      break;
    }
    out.append(text.substr(i, start - i));
    std::string_view expr = text.substr(start + 2, end - start - 2);
    std::string_view name = expr;
    std::optional<std::string_view> fallback;
    if (size_t dash = expr.find(":-"); dash != std::string_view::npos) {
      name = expr.substr(0, dash);
      fallback = expr.substr(dash + 2);
    }
    std::optional<std::string> value = env(name);
    if (value && !value->empty()) {
      out.append(*value);
    } else if (fallback) {
      out.append(*fallback);
    } else if (value) {
      // Set but empty, no default: an empty value.
    } else if (missing != nullptr && missing->empty()) {
      *missing = std::string(name);
    }
    i = end + 1;
  }
  return out;
}

Result<Config> ParseConfig(std::string_view yaml_text, const std::string& base_dir, const EnvLookup& env) {
  // Every value taken from the environment, by variable: an error message
  // shows "${NAME}" where the value would be (a key put in the wrong field
  // must not reach the log). Values under 6 characters are shown: no secret
  // is that short, and "${N}" inside a number would only confuse.
  std::vector<std::pair<std::string, std::string>> used;
  const EnvLookup recording = [&](std::string_view name) {
    std::optional<std::string> value = env(name);
    if (value && value->size() >= 6) used.emplace_back(name, *value);
    return value;
  };
  try {
    YAML::Node root = YAML::Load(std::string(yaml_text));
    Reader reader(recording, base_dir);
    return ParseRoot(root, reader);
  } catch (const ConfigError& e) {
    std::string message = e.message;
    std::sort(used.begin(), used.end(), [](const auto& a, const auto& b) { return a.second.size() > b.second.size(); });
    for (const auto& [name, value] : used) {
      for (std::size_t at = message.find(value); at != std::string::npos; at = message.find(value, at)) {
        message.replace(at, value.size(), "${" + name + "}");
        at += name.size() + 3;
      }
    }
    return InvalidArgument(std::move(message));
  } catch (const YAML::Exception& e) {
    return InvalidArgument("line " + std::to_string(e.mark.line + 1) + ": " + e.msg);
  }
}

Result<Config> LoadConfig(const std::string& path, const EnvLookup& env) {
  std::ifstream in(path);
  if (!in) return InvalidArgument("cannot read config file " + path);
  std::stringstream text;
  text << in.rdbuf();
  std::string dir = std::filesystem::absolute(path).parent_path().string();
  auto config = ParseConfig(text.str(), dir, env);
  if (!config) return InvalidArgument(path + ": " + config.error().message);
  return config;
}

}  // namespace tollgate::gateway
