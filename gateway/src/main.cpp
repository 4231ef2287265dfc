// The `tollgate` command line: serve, migrate, keys create|list|revoke.
#include "tollgate/gateway/config.hpp"
#include "tollgate/gateway/server.hpp"
#include "tollgate/billing/key_store.hpp"
#include "tollgate/billing/migrations.hpp"

#include <cstring>
#include <iostream>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace {

using namespace tollgate;

constexpr const char* kUsage = R"(usage:
  tollgate serve [--config FILE] [--listen HOST:PORT] [--port-file PATH] [--database-url URL]
  tollgate migrate [--config FILE] [--database-url URL]
  tollgate keys create --name NAME [--credits USD] [--config FILE] [--database-url URL]
  tollgate keys list [--config FILE] [--database-url URL]
  tollgate keys revoke ID [--config FILE] [--database-url URL]

serve reads config/tollgate.yaml when --config is not given. The database is a
libpq URI from --database-url, else the environment variable
TOLLGATE_DATABASE_URL, else database.url in the config file.
)";

struct Args {
  std::vector<std::string> positional;
  std::map<std::string, std::string> flags;
};

// Parses "--flag value" pairs; every flag takes a value.
std::optional<Args> ParseArgs(int argc, char** argv) {
  Args args;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "-h" || a == "--help") return std::nullopt;
    if (a.rfind("--", 0) == 0) {
      std::string name = a.substr(2), value;
      if (size_t eq = name.find('='); eq != std::string::npos) {
        value = name.substr(eq + 1);
        name = name.substr(0, eq);
      } else if (i + 1 < argc) {
        value = argv[++i];
      } else {
        std::cerr << "tollgate: --" << name << " needs a value\n";
        return std::nullopt;
      }
      args.flags[name] = value;
    } else {
      args.positional.push_back(a);
    }
  }
  return args;
}

constexpr const char* kDefaultConfig = "config/tollgate.yaml";

// --config FILE; `serve` falls back to config/tollgate.yaml in the current
// directory, the other commands to no file (the database URL from the environment).
std::optional<gateway::Config> LoadConfigFlag(const Args& args, bool required) {
  auto it = args.flags.find("config");
  std::string path = it != args.flags.end() ? it->second : required ? kDefaultConfig : "";
  if (path.empty()) return gateway::Config{};
  auto config = gateway::LoadConfig(path, gateway::ProcessEnv());
  if (!config) {
    std::cerr << "tollgate: bad config: " << config.error().message << "\n";
    return std::nullopt;
  }
  return std::move(*config);
}

std::string DatabaseUrl(const Args& args, const gateway::Config& config) {
  if (auto it = args.flags.find("database-url"); it != args.flags.end()) return it->second;
  if (const char* env = std::getenv("TOLLGATE_DATABASE_URL"); env != nullptr && *env != '\0') return env;
  return config.database_url;
}

int Fail(const std::string& what) {
  std::cerr << "tollgate: " << what << "\n";
  return 1;
}

bool CheckFlags(const Args& args, std::initializer_list<std::string_view> allowed) {
  for (const auto& [name, value] : args.flags) {
    bool ok = name == "config" || name == "database-url";
    for (auto a : allowed) ok = ok || a == name;
    if (!ok) {
      std::cerr << "tollgate: unknown flag --" << name << "\n" << kUsage;
      return false;
    }
  }
  return true;
}

int Serve(const Args& args) {
  if (!CheckFlags(args, {"listen", "port-file"})) return 2;
  auto config = LoadConfigFlag(args, true);
  if (!config) return 2;
  if (auto it = args.flags.find("listen"); it != args.flags.end()) {
    // Reuse the config parser's HOST:PORT validation.
    auto parsed = gateway::ParseConfig("server: {listen: '" + it->second + "'}", ".", gateway::ProcessEnv());
    if (!parsed) return Fail("--listen: " + parsed.error().message);
    config->server.host = parsed->server.host;
    config->server.port = parsed->server.port;
  }
  gateway::ServeOptions options;
  options.database_url = DatabaseUrl(args, *config);
  if (options.database_url.empty()) {
    return Fail("no database: set TOLLGATE_DATABASE_URL or database.url in the config");
  }
  if (auto it = args.flags.find("port-file"); it != args.flags.end()) options.port_file = it->second;
  return gateway::Serve(*config, options);
}

int Migrate(const Args& args) {
  if (!CheckFlags(args, {})) return 2;
  auto config = LoadConfigFlag(args, false);
  if (!config) return 2;
  std::string url = DatabaseUrl(args, *config);
  if (url.empty()) return Fail("no database: set TOLLGATE_DATABASE_URL or pass --config");
  auto applied = billing::ApplyMigrations(url);
  if (!applied) return Fail("migrate: " + applied.error().message);
  std::cerr << "tollgate: " << *applied << " migration(s) applied\n";
  return 0;
}

int Keys(const Args& args) {
  if (args.positional.size() < 2) {
    std::cerr << kUsage;
    return 2;
  }
  const std::string& verb = args.positional[1];
  if (!CheckFlags(args, {"name", "credits"})) return 2;
  auto config = LoadConfigFlag(args, false);
  if (!config) return 2;
  std::string url = DatabaseUrl(args, *config);
  if (url.empty()) return Fail("no database: set TOLLGATE_DATABASE_URL or pass --config");
  auto store = billing::KeyStore::Connect(url);
  if (!store) return Fail("database: " + store.error().message);

  if (verb == "create") {
    auto name = args.flags.find("name");
    if (name == args.flags.end() || name->second.empty()) return Fail("keys create needs --name NAME");
    std::optional<Money> credits;
    if (auto c = args.flags.find("credits"); c != args.flags.end()) {
      auto parsed = ParseUsd(c->second);
      if (!parsed) return Fail("--credits: " + parsed.error().message);
      credits = *parsed;
    }
    auto created = (*store)->Create(name->second, credits);
    if (!created) return Fail("keys create: " + created.error().message);
    std::cerr << "tollgate: created key " << created->id << " '" << name->second << "' with "
              << (credits ? "$" + FormatUsd(*credits) + " of credits" : std::string("unlimited credits"))
              << "; the key (on stdout) is shown only this once\n";
    std::cout << created->key << std::endl;
    return 0;
  }
  if (verb == "list") {
    auto keys = (*store)->List();
    if (!keys) return Fail("keys list: " + keys.error().message);
    std::printf("%-6s %-20s %-16s %-14s %-14s %-8s %s\n", "ID", "NAME", "PREFIX", "LIMIT_USD", "SPENT_USD", "STATUS",
                "CREATED");
    for (const auto& k : *keys) {
      std::printf("%-6lld %-20s %-16s %-14s %-14s %-8s %s\n", static_cast<long long>(k.id), k.name.c_str(),
                  k.prefix.c_str(), k.credit_limit ? FormatUsd(*k.credit_limit).c_str() : "unlimited",
                  FormatUsd(k.spent).c_str(), k.revoked ? "revoked" : "active", k.created_at.c_str());
    }
    return 0;
  }
  if (verb == "revoke") {
    if (args.positional.size() != 3) return Fail("keys revoke needs the key's ID (see keys list)");
    char* end = nullptr;
    long long id = std::strtoll(args.positional[2].c_str(), &end, 10);
    if (end == args.positional[2].c_str() || *end != '\0') return Fail("'" + args.positional[2] + "' is not a key ID");
    auto revoked = (*store)->Revoke(id);
    if (!revoked) return Fail("keys revoke: " + revoked.error().message);
    if (!*revoked) return Fail("no active key with ID " + args.positional[2]);
    std::cerr << "tollgate: key " << id << " revoked\n";
    return 0;
  }
  std::cerr << kUsage;
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  auto args = ParseArgs(argc, argv);
  if (!args || args->positional.empty()) {
    std::cerr << kUsage;
    return args ? 2 : 0;
  }
  const std::string& command = args->positional[0];
  if (command == "serve") return Serve(*args);
  if (command == "migrate") return Migrate(*args);
  if (command == "keys") return Keys(*args);
  std::cerr << "tollgate: unknown command '" << command << "'\n" << kUsage;
  return 2;
}
