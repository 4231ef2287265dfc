#include "tollgate/gateway/config.hpp"

#include "tollgate/providers/presets.hpp"

#include <yaml-cpp/yaml.h>

#include <charconv>
#include <cstdlib>
#include <filesystem>
#include <fstream>
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

Config ParseRoot(const YAML::Node& root, Reader& r) {
  Config config;
  if (!root.IsDefined() || root.IsNull()) Fail("(top level)", "the file is empty");
  r.CheckKeys(root, "", {"server", "database", "usage", "providers", "models"});

  if (auto s = root["server"]) {
    r.CheckKeys(s, "server", {"listen", "io_threads", "max_body_bytes", "request_timeout_ms", "drain_timeout_ms"});
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
  }
  if (auto d = root["database"]) {
    r.CheckKeys(d, "database", {"url"});
    // An unset variable here is fine: TOLLGATE_DATABASE_URL or the command line may supply it.
    std::string missing;
    if (d["url"]) config.database_url = r.String(d["url"], "database.url", &missing);
  }
  if (auto u = root["usage"]) {
    r.CheckKeys(u, "usage", {"flush_interval_ms", "batch_size"});
    if (u["flush_interval_ms"]) {
      config.usage.flush_interval_ms =
          static_cast<int>(r.Int(u["flush_interval_ms"], "usage.flush_interval_ms", 1, 60'000));
    }
    if (u["batch_size"]) config.usage.batch_size = static_cast<int>(r.Int(u["batch_size"], "usage.batch_size", 1, 10'000));
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
                            "context_length"});
      if (!n["type"]) Fail(path + ".type", "is required (local, openai_compatible, anthropic or gemini)");
      p.type = r.String(n["type"], path + ".type");
      const bool remote = p.type == "openai_compatible" || p.type == "anthropic" || p.type == "gemini";
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
        if (p.type == "anthropic") p.base_url = "https://api.anthropic.com/v1";
        if (p.type == "gemini") p.base_url = "https://generativelanguage.googleapis.com/v1beta";
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
      } else {
        Fail(path + ".type", "'" + p.type + "' is not a provider type (local, openai_compatible, anthropic, gemini)");
      }
      provider_ids.insert(p.id);
      config.providers.push_back(std::move(p));
    }
  }

  std::set<std::string> model_ids;
  if (auto ms = root["models"]) {
    if (!ms.IsSequence()) Fail("models", "must be a list");
    for (size_t i = 0; i < ms.size(); ++i) {
      std::string path = "models[" + std::to_string(i) + "]";
      const YAML::Node& n = ms[i];
      r.CheckKeys(n, path, {"id", "name", "context_length", "endpoint", "endpoints"});
      ModelConfig m;
      if (!n["id"]) Fail(path + ".id", "is required");
      m.id = r.String(n["id"], path + ".id");
      if (m.id.empty()) Fail(path + ".id", "must not be empty");
      if (!model_ids.insert(m.id).second) Fail(path + ".id", "'" + m.id + "' is listed twice");
      m.name = n["name"] ? r.String(n["name"], path + ".name") : m.id;
      if (n["context_length"]) m.context_length = r.Int(n["context_length"], path + ".context_length", 1, 1LL << 32);
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
        r.CheckKeys(en, epath, {"provider", "model", "pricing", "context_length"});
        EndpointConfig e;
        e.config_path = epath;
        if (!en["provider"]) Fail(epath + ".provider", "is required");
        e.provider = r.String(en["provider"], epath + ".provider");
        if (!provider_ids.count(e.provider)) Fail(epath + ".provider", "'" + e.provider + "' is not under providers:");
        if (!en["model"]) Fail(epath + ".model", "is required");
        bool local = false;
        for (const auto& p : config.providers) local = local || (p.id == e.provider && p.type == "local");
        e.model = local ? r.Path(en["model"], epath + ".model") : r.String(en["model"], epath + ".model");
        if (!en["pricing"]) Fail(epath + ".pricing", "is required (USD per million tokens)");
        const YAML::Node& pn = en["pricing"];
        r.CheckKeys(pn, epath + ".pricing", {"prompt", "completion", "cached_prompt", "cache_write"});
        if (!pn["prompt"]) Fail(epath + ".pricing.prompt", "is required");
        if (!pn["completion"]) Fail(epath + ".pricing.completion", "is required");
        e.pricing.prompt = r.Price(pn["prompt"], epath + ".pricing.prompt");
        e.pricing.completion = r.Price(pn["completion"], epath + ".pricing.completion");
        e.pricing.cached_prompt =
            pn["cached_prompt"] ? r.Price(pn["cached_prompt"], epath + ".pricing.cached_prompt") : e.pricing.prompt;
        e.pricing.cache_write =
            pn["cache_write"] ? r.Price(pn["cache_write"], epath + ".pricing.cache_write") : e.pricing.prompt;
        if (en["context_length"]) e.context_length = r.Int(en["context_length"], epath + ".context_length", 1, 1LL << 32);
        m.endpoints.push_back(std::move(e));
      }
      config.models.push_back(std::move(m));
    }
  }
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
  try {
    YAML::Node root = YAML::Load(std::string(yaml_text));
    Reader reader(env, base_dir);
    return ParseRoot(root, reader);
  } catch (const ConfigError& e) {
    return InvalidArgument(e.message);
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
