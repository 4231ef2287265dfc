// The `tollgate` command line: serve, migrate, and the administration of
// accounts, keys, credits, the ledger and BYOK provider keys (the same
// operations as the admin API, through billing::AccountStore).
#include "tollgate/billing/account_store.hpp"
#include "tollgate/billing/migrations.hpp"
#include "tollgate/billing/secret_box.hpp"
#include "tollgate/billing/usage_maintenance.hpp"
#include "tollgate/gateway/config.hpp"
#include "tollgate/gateway/server.hpp"

#include <termios.h>
#include <unistd.h>

#include <charconv>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <iterator>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <vector>

namespace {

using namespace tollgate;
using billing::AccountStore;

constexpr const char* kUsage = R"(usage:
  tollgate serve [--config FILE] [--listen HOST:PORT] [--port-file PATH] [--database-url URL]
  tollgate migrate
  tollgate check-config [--config FILE]

  tollgate accounts create --name NAME [--postpaid] [--credits USD] [--budget USD]
                           [--budget-reset RESET] [--soft-limit USD] [--byok-fee-ppm N]
  tollgate accounts list
  tollgate accounts show ID
  tollgate accounts update ID [--name NAME] [--prepaid | --postpaid] [--budget USD|none]
                           [--budget-reset RESET] [--soft-limit USD|none] [--byok-fee-ppm N]
  tollgate accounts disable ID
  tollgate accounts enable ID

  tollgate keys create --name NAME [--credits USD] [KEY OPTIONS]
  tollgate keys create --account ID --name NAME [KEY OPTIONS]
  tollgate keys list [--account ID]
  tollgate keys show ID
  tollgate keys update ID [--name NAME] [KEY OPTIONS]
  tollgate keys revoke ID

  tollgate credits add ACCOUNT USD --reason TEXT [--idempotency-key KEY]
  tollgate credits remove ACCOUNT USD --reason TEXT [--idempotency-key KEY]
  tollgate ledger show ACCOUNT [--limit N] [--before ENTRY_ID]
  tollgate ledger check

  tollgate provider-keys set ACCOUNT PROVIDER      (reads the key from stdin)
  tollgate provider-keys list ACCOUNT
  tollgate provider-keys delete ACCOUNT PROVIDER

  tollgate usage prune [--retention-days N]

KEY OPTIONS (in `keys update`, `none` clears one; `--models all` allows every model):
  --limit USD            spending limit per limit period
  --limit-reset RESET    daily, weekly (Monday), monthly (the 1st) at 00:00 UTC, or none
  --soft-limit USD       warning threshold below the limit
  --expires TIME         RFC 3339, e.g. 2026-12-31T23:59:59Z
  --models A,B           the model slugs the key may call
  --rpm N  --tpm N       requests / tokens per minute
  --concurrency N        calls at the same time

`keys create --name NAME` without --account makes an account of the same name for
the key: prepaid with USD of credits (a ledger entry "initial credits") when
--credits is given, else postpaid (it records spend; no credits needed). The
plaintext key is printed once, alone on stdout.

Credit movements are idempotent: rerunning one with the same --idempotency-key
applies it once. Without one a random key is made and printed, so a command
whose outcome is unknown (database unreachable) can be rerun safely with it.
`ledger check` exits 1 if any balance differs from the sum of its ledger or any
key's spend from the sum of its usage costs (the daily rollup, which outlives
retention of the raw rows).

`check-config` reads the config as serve (and a reload) would and says what is
wrong, with its path in the file; exit 0 when it is good, 2 when not. It loads
no model and opens no connection.

`usage prune` does once what serve does hourly: creates the daily partitions
of raw usage rows from yesterday to a week ahead and drops the raw rows older
than N days (default: stats.retention_days of the config, 90; 0 keeps them).
The rollups behind statistics and /api/v1/key are kept. It also deletes
stored Responses API responses past their expiry (responses.ttl_days).

Provider keys are encrypted with TOLLGATE_SECRET_KEY (64 hex characters, e.g.
from `openssl rand -hex 32`), which `serve` needs too to use them.

Every command but serve takes [--config FILE] [--database-url URL]. The database
is a libpq URI from --database-url, else the environment variable
TOLLGATE_DATABASE_URL, else database.url in the config file. serve reads
config/tollgate.yaml when --config is not given.
)";

// Flags that take no value.
const std::set<std::string> kSwitches = {"postpaid", "prepaid"};

struct Args {
  std::vector<std::string> positional;
  std::map<std::string, std::string> flags;

  const std::string* Flag(const std::string& name) const {
    auto it = flags.find(name);
    return it == flags.end() ? nullptr : &it->second;
  }
  bool Has(const std::string& name) const { return flags.count(name) > 0; }
};

// Parses "--flag value" / "--flag=value" pairs and the switches above.
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
      } else if (kSwitches.count(name)) {
        value = "true";
      } else if (i + 1 < argc) {
        value = argv[++i];
      } else {
        std::cerr << "tollgate: --" << name << " needs a value\n";
        return std::nullopt;
      }
      if (args.flags.count(name)) {
        std::cerr << "tollgate: --" << name << " given twice\n";
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
  const std::string* flag = args.Flag("config");
  std::string path = flag ? *flag : required ? kDefaultConfig : "";
  if (path.empty()) return gateway::Config{};
  auto config = gateway::LoadConfig(path, gateway::ProcessEnv());
  if (!config) {
    std::cerr << "tollgate: bad config: " << config.error().message << "\n";
    return std::nullopt;
  }
  return std::move(*config);
}

std::string DatabaseUrl(const Args& args, const gateway::Config& config) {
  if (const std::string* flag = args.Flag("database-url")) return *flag;
  if (const char* env = std::getenv("TOLLGATE_DATABASE_URL"); env != nullptr && *env != '\0') return env;
  return config.database_url;
}

int Fail(const std::string& what) {
  std::cerr << "tollgate: " << what << "\n";
  return 1;
}

int UsageError(const std::string& what) {
  std::cerr << "tollgate: " << what << " (see tollgate --help)\n";
  return 2;
}

bool CheckFlags(const Args& args, std::initializer_list<std::string_view> allowed) {
  for (const auto& [name, value] : args.flags) {
    bool ok = name == "config" || name == "database-url";
    for (auto a : allowed) ok = ok || a == name;
    if (!ok) {
      std::cerr << "tollgate: unknown flag --" << name << " here (see tollgate --help)\n";
      return false;
    }
  }
  return true;
}

// ------------------------------------------------------------------ value parsing

// A command-line error: exit status 2 with a message.
struct BadArg {
  std::string message;
};

int64_t ParseInt(const std::string& text, const std::string& what, bool positive = true) {
  int64_t v = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (ec != std::errc() || end != text.data() + text.size() || (positive && v <= 0)) {
    throw BadArg{what + ": '" + text + "' is not a " + (positive ? "positive " : "") + "integer"};
  }
  return v;
}

int64_t ParseIdArg(const Args& args, size_t index, const std::string& what) {
  if (args.positional.size() <= index) throw BadArg{"missing " + what};
  return ParseInt(args.positional[index], what);
}

Money ParseMoney(const std::string& text, const std::string& flag) {
  auto m = ParseUsd(text);
  if (!m) throw BadArg{"--" + flag + ": " + m.error().message};
  return *m;
}

// The value of --flag, with "none" meaning clear, as an Update of a nullable field.
template <class T, class F>
billing::Update<std::optional<T>> Clearable(const Args& args, const std::string& flag, F parse) {
  const std::string* v = args.Flag(flag);
  if (!v) return std::nullopt;
  if (*v == "none") return std::optional<T>();
  return std::optional<T>(parse(*v));
}

billing::LimitReset ParseReset(const std::string& text, const std::string& flag) {
  auto r = billing::ParseLimitReset(text);
  if (!r) throw BadArg{"--" + flag + " must be daily, weekly, monthly or none"};
  return *r;
}

billing::TimePoint ParseTime(const std::string& text, const std::string& flag) {
  auto t = billing::ParseTimestamp(text);
  if (!t) throw BadArg{"--" + flag + " must be an RFC 3339 time such as 2026-12-31T23:59:59Z"};
  return *t;
}

std::vector<std::string> ParseModels(const std::string& text) {
  std::vector<std::string> models;
  size_t start = 0;
  while (start <= text.size()) {
    size_t comma = text.find(',', start);
    std::string m = text.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
    while (!m.empty() && m.front() == ' ') m.erase(m.begin());
    while (!m.empty() && m.back() == ' ') m.pop_back();
    if (m.empty()) throw BadArg{"--models: empty model slug in '" + text + "'"};
    models.push_back(m);
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  return models;
}

#define TG_KEY_OPTION_FLAGS "limit", "limit-reset", "soft-limit", "expires", "models", "rpm", "tpm", "concurrency"

void ReadKeyOptions(const Args& args, billing::NewKey& k) {
  if (auto v = args.Flag("limit")) k.limit = ParseMoney(*v, "limit");
  if (auto v = args.Flag("limit-reset")) k.limit_reset = ParseReset(*v, "limit-reset");
  if (auto v = args.Flag("soft-limit")) k.soft_limit = ParseMoney(*v, "soft-limit");
  if (auto v = args.Flag("expires")) k.expires_at = ParseTime(*v, "expires");
  if (auto v = args.Flag("models")) k.allowed_models = ParseModels(*v);
  if (auto v = args.Flag("rpm")) k.requests_per_minute = ParseInt(*v, "--rpm");
  if (auto v = args.Flag("tpm")) k.tokens_per_minute = ParseInt(*v, "--tpm");
  if (auto v = args.Flag("concurrency")) k.max_concurrent = ParseInt(*v, "--concurrency");
}

billing::KeyChanges ReadKeyChanges(const Args& args) {
  billing::KeyChanges c;
  if (auto v = args.Flag("name")) c.name = *v;
  c.limit = Clearable<Money>(args, "limit", [](const std::string& v) { return ParseMoney(v, "limit"); });
  if (auto v = args.Flag("limit-reset")) c.limit_reset = ParseReset(*v, "limit-reset");
  c.soft_limit = Clearable<Money>(args, "soft-limit", [](const std::string& v) { return ParseMoney(v, "soft-limit"); });
  if (auto v = args.Flag("expires"); v && *v == "never") {
    c.expires_at = std::optional<billing::TimePoint>();
  } else {
    c.expires_at = Clearable<billing::TimePoint>(args, "expires",
                                                 [](const std::string& v) { return ParseTime(v, "expires"); });
  }
  if (auto v = args.Flag("models"); v && *v == "all") {
    c.allowed_models = std::optional<std::vector<std::string>>();
  } else {
    c.allowed_models = Clearable<std::vector<std::string>>(args, "models", ParseModels);
  }
  c.requests_per_minute = Clearable<int64_t>(args, "rpm", [](const std::string& v) { return ParseInt(v, "--rpm"); });
  c.tokens_per_minute = Clearable<int64_t>(args, "tpm", [](const std::string& v) { return ParseInt(v, "--tpm"); });
  c.max_concurrent =
      Clearable<int64_t>(args, "concurrency", [](const std::string& v) { return ParseInt(v, "--concurrency"); });
  return c;
}

void ExpectPositional(const Args& args, size_t count, const std::string& form) {
  if (args.positional.size() != count) throw BadArg{"usage: tollgate " + form};
}

// ------------------------------------------------------------------ output

// (append, not "$" + ...: GCC 12 warns falsely about that, bug 105329)
std::string Usd(Money m) { return std::string("$").append(FormatUsd(m)); }
std::string UsdOr(const std::optional<Money>& m, const char* none) { return m ? Usd(*m) : none; }
std::string TimeOr(const std::optional<billing::TimePoint>& t, const char* none) {
  return t ? billing::FormatTimestamp(*t) : none;
}

void PrintAccount(const billing::AccountInfo& a) {
  std::printf("id:            %lld\n", static_cast<long long>(a.id));
  std::printf("name:          %s\n", a.name.c_str());
  std::printf("type:          %s\n", a.prepaid ? "prepaid" : "postpaid");
  std::printf("balance:       %s\n", Usd(a.balance).c_str());
  std::printf("leased:        %s (to gateway replicas)\n", Usd(a.leased_credits).c_str());
  std::printf("budget:        %s", UsdOr(a.budget, "none").c_str());
  if (a.budget) {
    std::printf(" per %s period, %s used in this one", std::string(billing::LimitResetName(a.budget_reset)).c_str(),
                Usd(a.budget_period_usage).c_str());
  }
  std::printf("\nsoft limit:    %s\n", UsdOr(a.soft_limit, "none").c_str());
  std::printf("BYOK fee:      %lld ppm (%s%%)\n", static_cast<long long>(a.byok_fee_ppm),
              FormatUsd(Money{a.byok_fee_ppm * 100'000}).c_str());
  std::printf("status:        %s\n", a.disabled ? ("disabled since " + TimeOr(a.disabled_at, "")).c_str() : "active");
  std::printf("created:       %s\n", billing::FormatTimestamp(a.created_at).c_str());
}

std::string Models(const std::optional<std::vector<std::string>>& models) {
  if (!models) return "all";
  std::string out;
  for (const auto& m : *models) out += (out.empty() ? "" : ",") + m;
  return out;
}

std::string OptInt(const std::optional<int64_t>& v) { return v ? std::to_string(*v) : "none"; }

void PrintKey(const billing::KeyDetails& k) {
  std::printf("id:            %lld\n", static_cast<long long>(k.id));
  std::printf("account:       %lld\n", static_cast<long long>(k.account_id));
  std::printf("name:          %s\n", k.name.c_str());
  std::printf("label:         %s\n", k.label.c_str());
  std::printf("limit:         %s", UsdOr(k.limit, "none").c_str());
  if (k.limit) std::printf(" per %s period", std::string(billing::LimitResetName(k.limit_reset)).c_str());
  std::printf("\nsoft limit:    %s\n", UsdOr(k.soft_limit, "none").c_str());
  std::printf("expires:       %s\n", TimeOr(k.expires_at, "never").c_str());
  std::printf("models:        %s\n", Models(k.allowed_models).c_str());
  std::printf("rate limits:   %s requests/min, %s tokens/min, %s concurrent\n", OptInt(k.requests_per_minute).c_str(),
              OptInt(k.tokens_per_minute).c_str(), OptInt(k.max_concurrent).c_str());
  std::printf("spent:         %s (all time)\n", Usd(k.spent).c_str());
  std::printf("status:        %s\n", k.revoked ? ("revoked " + TimeOr(k.revoked_at, "")).c_str() : "active");
  std::printf("created:       %s\n", billing::FormatTimestamp(k.created_at).c_str());
}

void PrintKeyTable(const std::vector<billing::KeyDetails>& keys) {
  std::printf("%-6s %-8s %-20s %-16s %-14s %-8s %-14s %-8s %s\n", "ID", "ACCOUNT", "NAME", "LABEL", "LIMIT_USD",
              "RESET", "SPENT_USD", "STATUS", "CREATED");
  for (const auto& k : keys) {
    std::string status = k.revoked ? "revoked"
                         : k.expires_at && *k.expires_at <= std::chrono::system_clock::now() ? "expired"
                                                                                              : "active";
    std::printf("%-6lld %-8lld %-20s %-16s %-14s %-8s %-14s %-8s %s\n", static_cast<long long>(k.id),
                static_cast<long long>(k.account_id), k.name.c_str(), k.label.c_str(),
                k.limit ? FormatUsd(*k.limit).c_str() : "unlimited",
                std::string(billing::LimitResetName(k.limit_reset)).c_str(), FormatUsd(k.spent).c_str(),
                status.c_str(), billing::FormatTimestamp(k.created_at).c_str());
  }
}

void PrintEntry(const billing::LedgerEntry& e) {
  std::printf("%-8lld %-20s %-7s %16s  %s%s%s\n", static_cast<long long>(e.id),
              billing::FormatTimestamp(e.created_at).c_str(), e.kind.c_str(), FormatUsd(e.amount).c_str(),
              e.reason.c_str(), e.request_id ? ("request " + *e.request_id).c_str() : "",
              e.reason.empty() && !e.request_id ? e.idempotency_key.c_str() : "");
}

// ------------------------------------------------------------------ commands

// Connects the store the admin commands use; `with_box`: with the SecretBox
// from TOLLGATE_SECRET_KEY (required then).
std::unique_ptr<AccountStore> Connect(const Args& args, bool with_box, int* status) {
  *status = 2;
  auto config = LoadConfigFlag(args, false);
  if (!config) return nullptr;
  std::string url = DatabaseUrl(args, *config);
  if (url.empty()) {
    Fail("no database: set TOLLGATE_DATABASE_URL, pass --database-url or --config");
    return nullptr;
  }
  std::optional<billing::SecretBox> box;
  if (with_box) {
    auto made = billing::SecretBox::FromEnv();
    if (!made) {
      Fail(made.error().message);
      return nullptr;
    }
    box = *made;
  }
  auto store = AccountStore::Connect(url, box);
  if (!store) {
    *status = 1;
    Fail("database: " + store.error().message);
    return nullptr;
  }
  return std::move(*store);
}

int CheckConfig(const Args& args) {
  if (!CheckFlags(args, {})) return 2;
  if (args.positional.size() > 1) {
    Fail("check-config takes no arguments (see tollgate --help)");
    return 2;
  }
  auto config = LoadConfigFlag(args, true);
  if (!config) return 2;
  if (std::optional<std::string> error = gateway::CheckServeConfig(*config)) {
    std::cerr << "tollgate: bad config: " << *error << "\n";
    return 2;
  }
  std::size_t enabled = 0;
  for (const auto& p : config->providers) enabled += p.enabled ? 1 : 0;
  std::cout << "config OK: " << config->models.size() << " models, " << enabled << " of " << config->providers.size()
            << " providers enabled\n";
  return 0;
}

int Serve(const Args& args) {
  if (!CheckFlags(args, {"listen", "port-file"})) return 2;
  auto config = LoadConfigFlag(args, true);
  if (!config) return 2;
  gateway::ServeOptions options;
  if (const std::string* listen = args.Flag("listen")) {
    // Reuse the config parser's HOST:PORT validation.
    auto parsed = gateway::ParseConfig("server: {listen: '" + *listen + "'}", ".", gateway::ProcessEnv());
    if (!parsed) return Fail("--listen: " + parsed.error().message);
    config->server.host = parsed->server.host;
    config->server.port = parsed->server.port;
    options.listen_overridden = true;
  }
  options.database_url = DatabaseUrl(args, *config);
  if (options.database_url.empty()) {
    return Fail("no database: set TOLLGATE_DATABASE_URL or database.url in the config");
  }
  if (const std::string* port_file = args.Flag("port-file")) options.port_file = *port_file;
  options.config_path = args.Flag("config") ? *args.Flag("config") : kDefaultConfig;
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

int Accounts(const Args& args) {
  if (args.positional.size() < 2) throw BadArg{"accounts needs create, list, show, update, disable or enable"};
  const std::string& verb = args.positional[1];
  int status = 0;
  if (verb == "create") {
    if (!CheckFlags(args, {"name", "postpaid", "credits", "budget", "budget-reset", "soft-limit", "byok-fee-ppm"})) {
      return 2;
    }
    ExpectPositional(args, 2, "accounts create --name NAME [...]");
    billing::NewAccount a;
    const std::string* name = args.Flag("name");
    if (!name) throw BadArg{"accounts create needs --name NAME"};
    a.name = *name;
    a.prepaid = !args.Has("postpaid");
    if (auto v = args.Flag("credits")) a.initial_credits = ParseMoney(*v, "credits");
    if (auto v = args.Flag("budget")) a.budget = ParseMoney(*v, "budget");
    if (auto v = args.Flag("budget-reset")) a.budget_reset = ParseReset(*v, "budget-reset");
    if (auto v = args.Flag("soft-limit")) a.soft_limit = ParseMoney(*v, "soft-limit");
    if (auto v = args.Flag("byok-fee-ppm")) a.byok_fee_ppm = ParseInt(*v, "--byok-fee-ppm", false);
    auto store = Connect(args, false, &status);
    if (!store) return status;
    auto created = store->CreateAccount(a);
    if (!created) return Fail("accounts create: " + created.error().message);
    std::cerr << "tollgate: created account " << created->id << "\n";
    PrintAccount(*created);
    return 0;
  }
  if (verb == "list") {
    if (!CheckFlags(args, {})) return 2;
    ExpectPositional(args, 2, "accounts list");
    auto store = Connect(args, false, &status);
    if (!store) return status;
    auto accounts = store->ListAccounts();
    if (!accounts) return Fail("accounts list: " + accounts.error().message);
    std::printf("%-6s %-20s %-9s %-16s %-16s %-8s %-9s %s\n", "ID", "NAME", "TYPE", "BALANCE_USD", "BUDGET_USD",
                "RESET", "STATUS", "CREATED");
    for (const auto& a : *accounts) {
      std::printf("%-6lld %-20s %-9s %-16s %-16s %-8s %-9s %s\n", static_cast<long long>(a.id), a.name.c_str(),
                  a.prepaid ? "prepaid" : "postpaid", FormatUsd(a.balance).c_str(),
                  a.budget ? FormatUsd(*a.budget).c_str() : "none",
                  std::string(billing::LimitResetName(a.budget_reset)).c_str(), a.disabled ? "disabled" : "active",
                  billing::FormatTimestamp(a.created_at).c_str());
    }
    return 0;
  }
  if (verb == "show") {
    if (!CheckFlags(args, {})) return 2;
    ExpectPositional(args, 3, "accounts show ID");
    int64_t id = ParseIdArg(args, 2, "account ID");
    auto store = Connect(args, false, &status);
    if (!store) return status;
    auto a = store->GetAccount(id);
    if (!a) return Fail("accounts show: " + a.error().message);
    PrintAccount(*a);
    auto keys = store->ListKeys(id);
    if (keys && !keys->empty()) {
      std::printf("\n");
      PrintKeyTable(*keys);
    }
    return 0;
  }
  if (verb == "update") {
    if (!CheckFlags(args, {"name", "prepaid", "postpaid", "budget", "budget-reset", "soft-limit", "byok-fee-ppm"})) {
      return 2;
    }
    ExpectPositional(args, 3, "accounts update ID [...]");
    int64_t id = ParseIdArg(args, 2, "account ID");
    if (args.Has("prepaid") && args.Has("postpaid")) throw BadArg{"give --prepaid or --postpaid, not both"};
    billing::AccountChanges c;
    if (auto v = args.Flag("name")) c.name = *v;
    if (args.Has("prepaid")) c.prepaid = true;
    if (args.Has("postpaid")) c.prepaid = false;
    c.budget = Clearable<Money>(args, "budget", [](const std::string& v) { return ParseMoney(v, "budget"); });
    if (auto v = args.Flag("budget-reset")) c.budget_reset = ParseReset(*v, "budget-reset");
    c.soft_limit = Clearable<Money>(args, "soft-limit", [](const std::string& v) { return ParseMoney(v, "soft-limit"); });
    if (auto v = args.Flag("byok-fee-ppm")) c.byok_fee_ppm = ParseInt(*v, "--byok-fee-ppm", false);
    auto store = Connect(args, false, &status);
    if (!store) return status;
    auto updated = store->UpdateAccount(id, c);
    if (!updated) return Fail("accounts update: " + updated.error().message);
    PrintAccount(*updated);
    return 0;
  }
  if (verb == "disable" || verb == "enable") {
    if (!CheckFlags(args, {})) return 2;
    ExpectPositional(args, 3, "accounts " + verb + " ID");
    int64_t id = ParseIdArg(args, 2, "account ID");
    auto store = Connect(args, false, &status);
    if (!store) return status;
    auto updated = store->UpdateAccount(id, billing::AccountChanges{.disabled = verb == "disable"});
    if (!updated) return Fail("accounts " + verb + ": " + updated.error().message);
    std::cerr << "tollgate: account " << id << (verb == "disable" ? " disabled: its keys are refused" : " enabled")
              << "\n";
    return 0;
  }
  throw BadArg{"unknown accounts command '" + verb + "'"};
}

int Keys(const Args& args) {
  if (args.positional.size() < 2) throw BadArg{"keys needs create, list, show, update or revoke"};
  const std::string& verb = args.positional[1];
  int status = 0;
  if (verb == "create") {
    if (!CheckFlags(args, {"name", "credits", "account", TG_KEY_OPTION_FLAGS})) return 2;
    ExpectPositional(args, 2, "keys create --name NAME [...]");
    billing::NewKey k;
    const std::string* name = args.Flag("name");
    if (!name) throw BadArg{"keys create needs --name NAME"};
    k.name = *name;
    ReadKeyOptions(args, k);
    std::optional<Money> credits;
    if (auto v = args.Flag("credits")) credits = ParseMoney(*v, "credits");
    const std::string* account = args.Flag("account");
    if (account && credits) {
      throw BadArg{"--credits makes a new account; add credits to an existing one with `tollgate credits add`"};
    }
    auto store = Connect(args, false, &status);
    if (!store) return status;
    if (account) {
      k.account_id = ParseInt(*account, "--account");
    } else {
      billing::NewAccount a;
      a.name = *name;
      a.prepaid = credits.has_value();
      if (credits && credits->nano_usd > 0) a.initial_credits = credits;
      auto created = store->CreateAccount(a);
      if (!created) return Fail("keys create: " + created.error().message);
      k.account_id = created->id;
      std::cerr << "tollgate: created " << (a.prepaid ? "prepaid" : "postpaid") << " account " << created->id << " '"
                << *name << "'" << (credits ? " with " + Usd(*credits) + " of credits" : std::string()) << "\n";
    }
    auto issued = store->CreateKey(k);
    if (!issued) {
      std::string hint = account ? "" : " (the account was created: add a key with --account " +
                                            std::to_string(k.account_id) + ")";
      return Fail("keys create: " + issued.error().message + hint);
    }
    std::cerr << "tollgate: created key " << issued->details.id << " '" << *name << "' in account "
              << issued->details.account_id << ", limit " << UsdOr(issued->details.limit, "none")
              << "; the key (on stdout) is shown only this once\n";
    std::cout << issued->plaintext << std::endl;
    return 0;
  }
  if (verb == "list") {
    if (!CheckFlags(args, {"account"})) return 2;
    ExpectPositional(args, 2, "keys list [--account ID]");
    std::optional<int64_t> account;
    if (auto v = args.Flag("account")) account = ParseInt(*v, "--account");
    auto store = Connect(args, false, &status);
    if (!store) return status;
    auto keys = store->ListKeys(account);
    if (!keys) return Fail("keys list: " + keys.error().message);
    PrintKeyTable(*keys);
    return 0;
  }
  if (verb == "show") {
    if (!CheckFlags(args, {})) return 2;
    ExpectPositional(args, 3, "keys show ID");
    int64_t id = ParseIdArg(args, 2, "key ID");
    auto store = Connect(args, false, &status);
    if (!store) return status;
    auto u = store->GetKeyUsage(id);
    if (!u) return Fail("keys show: " + u.error().message);
    PrintKey(u->key);
    std::printf("usage:         %s today, %s this week, %s this month (UTC)\n", Usd(u->usage_daily).c_str(),
                Usd(u->usage_weekly).c_str(), Usd(u->usage_monthly).c_str());
    if (u->limit_remaining) {
      std::printf("limit left:    %s of %s in this period\n", Usd(*u->limit_remaining).c_str(),
                  UsdOr(u->key.limit, "").c_str());
    }
    return 0;
  }
  if (verb == "update") {
    if (!CheckFlags(args, {"name", TG_KEY_OPTION_FLAGS})) return 2;
    ExpectPositional(args, 3, "keys update ID [...]");
    int64_t id = ParseIdArg(args, 2, "key ID");
    billing::KeyChanges c = ReadKeyChanges(args);
    auto store = Connect(args, false, &status);
    if (!store) return status;
    auto updated = store->UpdateKey(id, c);
    if (!updated) return Fail("keys update: " + updated.error().message);
    PrintKey(*updated);
    return 0;
  }
  if (verb == "revoke") {
    if (!CheckFlags(args, {})) return 2;
    if (args.positional.size() != 3) return Fail("keys revoke needs the key's ID (see keys list)");
    int64_t id = ParseIdArg(args, 2, "key ID");
    auto store = Connect(args, false, &status);
    if (!store) return status;
    auto before = store->GetKey(id);
    if (!before) return Fail(before.error().code == ErrorCode::kNotFound ? "no key with ID " + std::to_string(id)
                                                                         : "keys revoke: " + before.error().message);
    if (before->revoked) return Fail("key " + std::to_string(id) + " was already revoked");
    auto revoked = store->RevokeKey(id);
    if (!revoked) return Fail("keys revoke: " + revoked.error().message);
    std::cerr << "tollgate: key " << id << " revoked\n";
    return 0;
  }
  throw BadArg{"unknown keys command '" + verb + "'"};
}

std::string RandomIdempotencyKey() {
  std::random_device rd;
  static constexpr char kHex[] = "0123456789abcdef";
  std::string key = "cli-";
  for (int i = 0; i < 4; ++i) {  // 128 bits
    uint32_t word = rd();
    for (int j = 0; j < 4; ++j) {
      key.push_back(kHex[(word >> (8 * j + 4)) & 15]);
      key.push_back(kHex[(word >> (8 * j)) & 15]);
    }
  }
  return key;
}

int Credits(const Args& args) {
  if (args.positional.size() < 2) throw BadArg{"credits needs add or remove"};
  const std::string& verb = args.positional[1];
  if (verb != "add" && verb != "remove") throw BadArg{"unknown credits command '" + verb + "'"};
  if (!CheckFlags(args, {"reason", "idempotency-key"})) return 2;
  ExpectPositional(args, 4, "credits " + verb + " ACCOUNT USD --reason TEXT [--idempotency-key KEY]");
  int64_t account = ParseIdArg(args, 2, "account ID");
  Money amount = ParseMoney(args.positional[3], "amount");
  if (amount.nano_usd == 0) throw BadArg{"the amount must be more than 0"};
  const std::string* reason = args.Flag("reason");
  if (!reason || reason->empty()) throw BadArg{"credits " + verb + " needs --reason TEXT"};
  std::string key;
  if (const std::string* k = args.Flag("idempotency-key")) {
    key = *k;
  } else {
    key = RandomIdempotencyKey();
    std::cerr << "tollgate: idempotency key " << key << " (if the outcome is unknown, rerun with --idempotency-key "
              << key << ": it applies at most once)\n";
  }
  int status = 0;
  auto store = Connect(args, false, &status);
  if (!store) return status;
  auto moved = store->MoveCredits(
      {account, Money{verb == "add" ? amount.nano_usd : -amount.nano_usd}, *reason, key});
  if (!moved) return Fail("credits " + verb + ": " + moved.error().message);
  if (moved->replayed) {
    std::cerr << "tollgate: already applied as ledger entry " << moved->entry.id
              << " (same idempotency key); nothing moved now\n";
  } else {
    std::cerr << "tollgate: " << (verb == "add" ? "added " : "removed ") << Usd(amount)
              << (verb == "add" ? " to" : " from") << " account " << account << " (ledger entry " << moved->entry.id
              << ")\n";
  }
  std::printf("balance: %s\n", Usd(moved->balance).c_str());
  return 0;
}

int Ledger(const Args& args) {
  if (args.positional.size() < 2) throw BadArg{"ledger needs show or check"};
  const std::string& verb = args.positional[1];
  int status = 0;
  if (verb == "show") {
    if (!CheckFlags(args, {"limit", "before"})) return 2;
    ExpectPositional(args, 3, "ledger show ACCOUNT [--limit N] [--before ENTRY_ID]");
    int64_t account = ParseIdArg(args, 2, "account ID");
    int limit = 50;
    if (auto v = args.Flag("limit")) {
      int64_t n = ParseInt(*v, "--limit");
      if (n > 1000) throw BadArg{"--limit must be at most 1000"};
      limit = static_cast<int>(n);
    }
    std::optional<int64_t> before;
    if (auto v = args.Flag("before")) before = ParseInt(*v, "--before");
    auto store = Connect(args, false, &status);
    if (!store) return status;
    auto a = store->GetAccount(account);
    if (!a) return Fail("ledger show: " + a.error().message);
    auto entries = store->ListLedger(account, limit, before);
    if (!entries) return Fail("ledger show: " + entries.error().message);
    std::printf("account %lld '%s': balance %s\n", static_cast<long long>(a->id), a->name.c_str(),
                Usd(a->balance).c_str());
    std::printf("%-8s %-20s %-7s %16s  %s\n", "ENTRY", "TIME", "KIND", "AMOUNT_USD", "REASON");
    for (const auto& e : *entries) PrintEntry(e);
    if (static_cast<int>(entries->size()) == limit) {
      std::cerr << "tollgate: older entries: --before " << entries->back().id << "\n";
    }
    return 0;
  }
  if (verb == "check") {
    if (!CheckFlags(args, {})) return 2;
    ExpectPositional(args, 2, "ledger check");
    auto store = Connect(args, false, &status);
    if (!store) return status;
    auto report = store->CheckLedger();
    if (!report) return Fail("ledger check: " + report.error().message);
    for (const auto& m : report->account_mismatches) {
      std::printf("MISMATCH account %lld: balance %s, sum of ledger %s (difference %s)\n",
                  static_cast<long long>(m.account_id), Usd(m.balance).c_str(), Usd(m.ledger_sum).c_str(),
                  Usd(Money{m.balance.nano_usd - m.ledger_sum.nano_usd}).c_str());
    }
    for (const auto& m : report->key_mismatches) {
      std::printf("MISMATCH key %lld: spent %s, sum of usage costs %s (difference %s)\n",
                  static_cast<long long>(m.key_id), Usd(m.spent).c_str(), Usd(m.usage_sum).c_str(),
                  Usd(Money{m.spent.nano_usd - m.usage_sum.nano_usd}).c_str());
    }
    std::printf("%s: %lld accounts and %lld keys checked, %zu mismatches\n", report->ok() ? "ok" : "FAILED",
                static_cast<long long>(report->accounts_checked), static_cast<long long>(report->keys_checked),
                report->account_mismatches.size() + report->key_mismatches.size());
    return report->ok() ? 0 : 1;
  }
  throw BadArg{"unknown ledger command '" + verb + "'"};
}

// The provider key from stdin: one line typed without echo on a terminal,
// else all of stdin; surrounding whitespace (the newline) dropped. Never from
// argv, which other users of the machine can read (ps, /proc).
std::string ReadSecret() {
  std::string secret;
  if (isatty(STDIN_FILENO)) {
    std::cerr << "provider key (not shown), then Enter: " << std::flush;
    termios old{};
    bool restore = tcgetattr(STDIN_FILENO, &old) == 0;
    if (restore) {
      termios quiet = old;
      quiet.c_lflag &= ~static_cast<tcflag_t>(ECHO);
      tcsetattr(STDIN_FILENO, TCSANOW, &quiet);
    }
    std::getline(std::cin, secret);
    if (restore) tcsetattr(STDIN_FILENO, TCSANOW, &old);
    std::cerr << "\n";
  } else {
    secret.assign(std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>());
  }
  auto space = [](char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; };
  while (!secret.empty() && space(secret.back())) secret.pop_back();
  size_t start = 0;
  while (start < secret.size() && space(secret[start])) ++start;
  return secret.substr(start);
}

int ProviderKeys(const Args& args) {
  if (args.positional.size() < 2) throw BadArg{"provider-keys needs set, list or delete"};
  const std::string& verb = args.positional[1];
  if (!CheckFlags(args, {})) return 2;
  int status = 0;
  if (verb == "set") {
    ExpectPositional(args, 4, "provider-keys set ACCOUNT PROVIDER   (the key on stdin)");
    int64_t account = ParseIdArg(args, 2, "account ID");
    const std::string& provider = args.positional[3];
    auto store = Connect(args, true, &status);
    if (!store) return status;
    std::string secret = ReadSecret();
    if (secret.empty()) return Fail("provider-keys set: no key on stdin");
    auto set = store->SetProviderKey(account, provider, secret);
    std::fill(secret.begin(), secret.end(), '\0');
    if (!set) return Fail("provider-keys set: " + set.error().message);
    std::cerr << "tollgate: stored the " << set->provider << " key " << set->label << " for account " << account
              << " (encrypted)\n";
    return 0;
  }
  if (verb == "list") {
    ExpectPositional(args, 3, "provider-keys list ACCOUNT");
    int64_t account = ParseIdArg(args, 2, "account ID");
    auto store = Connect(args, false, &status);
    if (!store) return status;
    auto keys = store->ListProviderKeys(account);
    if (!keys) return Fail("provider-keys list: " + keys.error().message);
    std::printf("%-20s %-16s %s\n", "PROVIDER", "LABEL", "SET");
    for (const auto& k : *keys) {
      std::printf("%-20s %-16s %s\n", k.provider.c_str(), k.label.c_str(),
                  billing::FormatTimestamp(k.created_at).c_str());
    }
    return 0;
  }
  if (verb == "delete") {
    ExpectPositional(args, 4, "provider-keys delete ACCOUNT PROVIDER");
    int64_t account = ParseIdArg(args, 2, "account ID");
    auto store = Connect(args, false, &status);
    if (!store) return status;
    auto deleted = store->DeleteProviderKey(account, args.positional[3]);
    if (!deleted) return Fail("provider-keys delete: " + deleted.error().message);
    if (!*deleted) return Fail("account " + std::to_string(account) + " has no key for " + args.positional[3]);
    std::cerr << "tollgate: deleted the " << args.positional[3] << " key of account " << account << "\n";
    return 0;
  }
  throw BadArg{"unknown provider-keys command '" + verb + "'"};
}

int UsageCommand(const Args& args) {
  if (args.positional.size() < 2 || args.positional[1] != "prune") throw BadArg{"usage needs prune"};
  if (!CheckFlags(args, {"retention-days"})) return 2;
  ExpectPositional(args, 2, "usage prune [--retention-days N]");
  auto config = LoadConfigFlag(args, false);
  if (!config) return 2;
  int retention_days = config->stats.retention_days;
  if (const std::string* days = args.Flag("retention-days")) {
    retention_days = static_cast<int>(ParseInt(*days, "--retention-days", /*positive=*/false));
    if (retention_days < 0 || retention_days > 36'500) throw BadArg{"--retention-days: 0 to 36500"};
  }
  std::string url = DatabaseUrl(args, *config);
  if (url.empty()) return Fail("no database: set TOLLGATE_DATABASE_URL, pass --database-url or --config");
  auto maintenance = billing::UsageMaintenance::Connect(url);
  if (!maintenance) return Fail("database: " + maintenance.error().message);
  auto report = (*maintenance)->Run(std::chrono::system_clock::now(), retention_days);
  if (!report) return Fail("usage prune: " + report.error().message);
  std::printf("%lld daily partitions created, %lld dropped (%s)\n",
              static_cast<long long>(report->partitions_created), static_cast<long long>(report->partitions_dropped),
              retention_days == 0 ? "retention off: raw rows kept"
                                  : ("raw rows older than " + std::to_string(retention_days) + " days removed").c_str());
  std::printf("%lld expired stored responses deleted\n", static_cast<long long>(report->responses_pruned));
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  auto args = ParseArgs(argc, argv);
  if (!args || args->positional.empty()) {
    std::cerr << kUsage;
    return args ? 2 : 0;
  }
  const std::string& command = args->positional[0];
  try {
    if (command == "serve") return Serve(*args);
    if (command == "migrate") return Migrate(*args);
    if (command == "check-config") return CheckConfig(*args);
    if (command == "accounts") return Accounts(*args);
    if (command == "keys") return Keys(*args);
    if (command == "credits") return Credits(*args);
    if (command == "ledger") return Ledger(*args);
    if (command == "provider-keys") return ProviderKeys(*args);
    if (command == "usage") return UsageCommand(*args);
  } catch (const BadArg& e) {
    return UsageError(e.message);
  }
  std::cerr << "tollgate: unknown command '" << command << "'\n" << kUsage;
  return 2;
}
