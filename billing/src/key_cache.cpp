#include "tollgate/billing/key_cache.hpp"

#include "log_internal.hpp"
#include "pg.hpp"
#include "tollgate/billing/api_key.hpp"

#include <boost/json.hpp>

#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <mutex>
#include <set>
#include <thread>
#include <tuple>
#include <unordered_map>
#include <utility>
#include <vector>

namespace tollgate::billing {

std::string_view LimitResetName(LimitReset reset) {
  switch (reset) {
    case LimitReset::kNone: return "none";
    case LimitReset::kDaily: return "daily";
    case LimitReset::kWeekly: return "weekly";
    case LimitReset::kMonthly: return "monthly";
  }
  return "none";
}

std::optional<LimitReset> ParseLimitReset(std::string_view name) {
  if (name == "none") return LimitReset::kNone;
  if (name == "daily") return LimitReset::kDaily;
  if (name == "weekly") return LimitReset::kWeekly;
  if (name == "monthly") return LimitReset::kMonthly;
  return std::nullopt;
}

std::chrono::system_clock::time_point PeriodStart(LimitReset reset,
                                                  std::chrono::system_clock::time_point at) {
  using namespace std::chrono;
  // floor, not duration_cast: times before the epoch round down too.
  const sys_days day = floor<days>(at);
  switch (reset) {
    case LimitReset::kNone:
      return system_clock::time_point{};
    case LimitReset::kDaily:
      return day;
    case LimitReset::kWeekly:
      // weekday difference is taken modulo 7: the days since the Monday on or
      // before `day` (ISO weeks, as PostgreSQL's date_trunc('week', ...)).
      return day - (weekday{day} - Monday);
    case LimitReset::kMonthly: {
      const year_month_day ymd{day};
      return sys_days{ymd.year() / ymd.month() / 1};
    }
  }
  return system_clock::time_point{};
}

bool KeyUsable(const KeyRecord& record, std::chrono::system_clock::time_point now) {
  if (record.revoked || record.account.disabled) return false;
  return !record.expires_at || now < *record.expires_at;
}

namespace {

using Clock = std::chrono::steady_clock;
using internal::PgConnPtr;
using internal::PgOutcome;

constexpr std::string_view kChannel = "tollgate_billing";
// More distinct changes than this in one batch of notifications (a bulk
// update): one full reload is cheaper than a targeted query that big.
constexpr size_t kMaxTargetedChanges = 256;

// A key as stored in a snapshot: its record (account embedded) and hash.
struct KeyEntry {
  KeyRecord record;
  std::string key_hash;
};
using KeyPtr = std::shared_ptr<const KeyEntry>;
using AccountPtr = std::shared_ptr<const AccountRecord>;

// One immutable generation of the cache; readers share it through a
// shared_ptr, so a reload never mutates what a Lookup is reading. A reload
// for notifications copies the maps (pointers, not records) and replaces
// the entries it reloaded.
struct Snapshot {
  std::unordered_map<int64_t, KeyPtr> keys;          // by api_keys.id
  std::unordered_map<std::string, KeyPtr> by_hash;   // by key_hash
  std::unordered_map<int64_t, AccountPtr> accounts;  // by accounts.id
  // When the full reload this snapshot derives from started querying: it
  // shows every key committed before then.
  Clock::time_point full_load_started;

  void PutKey(KeyPtr entry) {
    RemoveKey(entry->record.id);
    if (!entry->key_hash.empty()) by_hash[entry->key_hash] = entry;
    keys[entry->record.id] = std::move(entry);
  }
  void RemoveKey(int64_t id) {
    auto it = keys.find(id);
    if (it == keys.end()) return;
    auto hashed = by_hash.find(it->second->key_hash);
    if (hashed != by_hash.end() && hashed->second == it->second) by_hash.erase(hashed);
    keys.erase(it);
  }
};

// What one load read, in one REPEATABLE READ transaction: keys (account not
// yet embedded) and accounts (provider keys opened).
struct Loaded {
  std::vector<KeyEntry> keys;
  std::unordered_map<int64_t, AccountRecord> accounts;
};

// Which rows to load: everything, or the given keys and accounts (a key
// brings its account along; an account brings all its keys).
struct Targets {
  bool full = false;
  std::set<int64_t> key_ids;
  std::set<int64_t> account_ids;
  bool empty() const { return !full && key_ids.empty() && account_ids.empty(); }
  size_t size() const { return key_ids.size() + account_ids.size(); }
};

std::string ArrayParam(const std::set<int64_t>& ids) {
  std::string out = "{";
  for (int64_t id : ids) {
    if (out.size() > 1) out += ',';
    out += std::to_string(id);
  }
  out += '}';
  return out;
}

// allowed_models as to_json(text[]): a JSON array of strings, or SQL NULL.
std::optional<std::vector<std::string>> ParseModels(const PGresult* r, int row, int column) {
  if (internal::PgIsNull(r, row, column)) return std::nullopt;
  std::vector<std::string> models;
  boost::system::error_code ec;
  boost::json::value parsed = boost::json::parse(internal::PgText(r, row, column), ec);
  // Cannot happen for to_json output; an empty list (nothing allowed) fails closed.
  if (ec || !parsed.is_array()) return models;
  for (const boost::json::value& item : parsed.as_array()) {
    if (item.is_string()) models.emplace_back(item.as_string());
  }
  return models;
}

std::optional<std::string> DecodeHex(std::string_view hex) {
  if (hex.size() % 2 != 0) return std::nullopt;
  auto nibble = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  std::string out;
  out.reserve(hex.size() / 2);
  for (size_t i = 0; i < hex.size(); i += 2) {
    int hi = nibble(hex[i]), lo = nibble(hex[i + 1]);
    if (hi < 0 || lo < 0) return std::nullopt;
    out.push_back(static_cast<char>(hi * 16 + lo));
  }
  return out;
}

// Equality for change detection: everything but `spent` (which the usage
// writer changes on every call, and no trigger reports) and the embedded
// account (compared as an account).
bool SameKey(const KeyEntry& a, const KeyEntry& b) {
  const KeyRecord& x = a.record;
  const KeyRecord& y = b.record;
  return std::tie(a.key_hash, x.id, x.name, x.account_id, x.credit_limit, x.limit_reset,
                  x.soft_limit, x.revoked, x.expires_at, x.allowed_models,
                  x.requests_per_minute, x.tokens_per_minute, x.max_concurrent) ==
         std::tie(b.key_hash, y.id, y.name, y.account_id, y.credit_limit, y.limit_reset,
                  y.soft_limit, y.revoked, y.expires_at, y.allowed_models,
                  y.requests_per_minute, y.tokens_per_minute, y.max_concurrent);
}

bool SameAccount(const AccountRecord& x, const AccountRecord& y) {
  return std::tie(x.id, x.name, x.prepaid, x.budget, x.budget_reset, x.soft_limit,
                  x.byok_fee_ppm, x.disabled, x.provider_keys, x.unreadable_provider_keys) ==
         std::tie(y.id, y.name, y.prepaid, y.budget, y.budget_reset, y.soft_limit,
                  y.byok_fee_ppm, y.disabled, y.provider_keys, y.unreadable_provider_keys);
}

// A key whose account row was not loaded with it (impossible within one
// transaction, given the foreign key): refused until the account loads.
AccountRecord MissingAccount(int64_t id) {
  AccountRecord account;
  account.id = id;
  account.disabled = true;
  return account;
}

KeyPtr Embed(const KeyEntry& entry, const AccountRecord& account) {
  auto out = std::make_shared<KeyEntry>(entry);
  out->record.account = account;
  return out;
}

// Changes reported to OnChange callbacks.
using Changes = std::vector<std::pair<std::string_view, int64_t>>;

// Applies the TCP settings that make a silently dead listening connection
// fail within about half a minute instead of the OS's hours: keepalive
// probes after 10 s idle, and a bound on unacknowledged data. No-op on a
// Unix-domain socket.
void TuneSocket(int fd) {
  int on = 1, idle = 10, interval = 5, count = 3;
  unsigned int user_timeout_ms = 30'000;
  ::setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof on);
  ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof idle);
  ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &interval, sizeof interval);
  ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &count, sizeof count);
  ::setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &user_timeout_ms, sizeof user_timeout_ms);
}

}  // namespace

struct KeyCache::Impl {
  Impl(std::string url, std::optional<SecretBox> box, int interval_ms)
      : database_url(std::move(url)),
        secrets(std::move(box)),
        full_reload_interval(interval_ms),
        session(database_url) {
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC | O_NONBLOCK) == 0) {
      wake_read = fds[0];
      wake_write = fds[1];
    }
  }
  ~Impl() {
    if (wake_read >= 0) ::close(wake_read);
    if (wake_write >= 0) ::close(wake_write);
  }

  const std::string database_url;
  const std::optional<SecretBox> secrets;
  const std::chrono::milliseconds full_reload_interval;

  // Held from a load's first query until its snapshot is installed, by every
  // load (listener, RefreshNow, RefreshIfLoadedBefore), so snapshots install
  // in the order they queried: an older one never replaces a newer one, and a
  // load for notifications builds on the latest snapshot.
  // Lock order: load_mutex, then state_mutex / log_mutex.
  std::mutex load_mutex;
  internal::PgSession session;  // RefreshNow / RefreshIfLoadedBefore only; under load_mutex

  mutable std::mutex state_mutex;
  std::shared_ptr<const Snapshot> snapshot;

  std::mutex callbacks_mutex;
  std::shared_ptr<const std::vector<std::function<void(std::string_view, int64_t)>>> callbacks =
      std::make_shared<std::vector<std::function<void(std::string_view, int64_t)>>>();

  // What was logged once (provider keys without a SecretBox; keys that do
  // not open, by "account:provider").
  std::mutex log_mutex;
  bool logged_no_secrets = false;
  std::set<std::string> logged_unopenable;

  // Listener thread. Stop writes to wake_write; the thread polls wake_read.
  PgConnPtr initial_conn;  // Start's connection, handed to the thread
  std::thread thread;
  std::atomic<bool> stop_requested{false};
  std::mutex join_mutex;
  int wake_read = -1;
  int wake_write = -1;
  bool failing = false;  // listener thread only: logs an outage once
  int failures_in_row = 0;

  std::atomic<int64_t> refreshes{0};
  std::atomic<int64_t> refresh_failures{0};
  std::atomic<int64_t> notifications{0};

  std::shared_ptr<const Snapshot> Current() const {
    std::lock_guard lock(state_mutex);
    return snapshot;
  }

  // ------------------------------------------------------------ loading

  // Runs the queries of `targets` on `conn` in one REPEATABLE READ READ ONLY
  // transaction (keys, accounts and provider keys consistent with each other).
  // expires_at is clamped to +-9e15 us (years 1684..2255): system_clock
  // counts nanoseconds in an int64, and 'infinity' must neither fail the load
  // nor wrap around ('infinity' = in 2255, '-infinity' = long expired).
  Result<Loaded> Load(PGconn* conn, const Targets& targets, bool* connection_bad) {
    *connection_bad = false;
    std::string key_where, account_where, provider_where;
    std::vector<internal::PgParam> params;
    if (!targets.full) {
      params = {ArrayParam(targets.key_ids), ArrayParam(targets.account_ids)};
      key_where = " WHERE k.id = ANY($1::bigint[]) OR k.account_id = ANY($2::bigint[])";
      account_where =
          " WHERE a.id = ANY($2::bigint[])"
          " OR a.id IN (SELECT account_id FROM api_keys WHERE id = ANY($1::bigint[]))";
      provider_where =
          " WHERE p.account_id = ANY($2::bigint[])"
          " OR p.account_id IN (SELECT account_id FROM api_keys WHERE id = ANY($1::bigint[]))";
    }
    auto fail = [&](const PgOutcome& out, std::string_view what) -> Error {
      *connection_bad = out.connection_bad || PQstatus(conn) != CONNECTION_OK;
      if (!*connection_bad) internal::PgExec(conn, "ROLLBACK");
      return out.ToError(what);
    };
    if (PgOutcome out = internal::PgExec(conn, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY");
        !out.ok()) {
      return fail(out, "loading API keys");
    }
    Loaded loaded;
    {
      PgOutcome out = internal::PgExec(
          conn,
          "SELECT k.id, k.name, k.key_hash, k.credit_limit_nano_usd, k.spent_nano_usd,"
          " k.revoked_at IS NOT NULL, k.account_id, k.limit_reset, k.soft_limit_nano_usd,"
          " CASE WHEN k.expires_at IS NOT NULL THEN"  // GREATEST and LEAST skip NULLs
          " LEAST(GREATEST(extract(epoch FROM k.expires_at) * 1000000, -9e15), 9e15)::bigint END,"
          " to_json(k.allowed_models)::text,"
          " k.requests_per_minute, k.tokens_per_minute, k.max_concurrent FROM api_keys k" +
              key_where,
          params);
      if (!out.ok()) return fail(out, "loading API keys");
      const PGresult* r = out.result.get();
      const int rows = PQntuples(r);
      loaded.keys.reserve(rows);
      for (int row = 0; row < rows; ++row) {
        KeyEntry entry;
        KeyRecord& k = entry.record;
        k.id = internal::PgInt64(r, row, 0);
        k.name = internal::PgText(r, row, 1);
        entry.key_hash = internal::PgText(r, row, 2);
        if (auto limit = internal::PgOptInt64(r, row, 3)) k.credit_limit = Money{*limit};
        k.spent = Money{internal::PgInt64(r, row, 4)};
        k.revoked = internal::PgBool(r, row, 5);
        k.account_id = internal::PgInt64(r, row, 6);
        k.limit_reset = ParseLimitReset(internal::PgText(r, row, 7)).value_or(LimitReset::kNone);
        if (auto soft = internal::PgOptInt64(r, row, 8)) k.soft_limit = Money{*soft};
        if (auto micros = internal::PgOptInt64(r, row, 9)) k.expires_at = internal::FromEpochMicros(*micros);
        k.allowed_models = ParseModels(r, row, 10);
        k.requests_per_minute = internal::PgOptInt64(r, row, 11);
        k.tokens_per_minute = internal::PgOptInt64(r, row, 12);
        k.max_concurrent = internal::PgOptInt64(r, row, 13);
        loaded.keys.push_back(std::move(entry));
      }
    }
    {
      PgOutcome out = internal::PgExec(
          conn,
          "SELECT a.id, a.name, a.prepaid, a.budget_nano_usd, a.budget_reset,"
          " a.soft_limit_nano_usd, a.byok_fee_ppm, a.disabled_at IS NOT NULL FROM accounts a" +
              account_where,
          params);
      if (!out.ok()) return fail(out, "loading accounts");
      const PGresult* r = out.result.get();
      for (int row = 0; row < PQntuples(r); ++row) {
        AccountRecord a;
        a.id = internal::PgInt64(r, row, 0);
        a.name = internal::PgText(r, row, 1);
        a.prepaid = internal::PgBool(r, row, 2);
        if (auto budget = internal::PgOptInt64(r, row, 3)) a.budget = Money{*budget};
        a.budget_reset = ParseLimitReset(internal::PgText(r, row, 4)).value_or(LimitReset::kNone);
        if (auto soft = internal::PgOptInt64(r, row, 5)) a.soft_limit = Money{*soft};
        a.byok_fee_ppm = internal::PgInt64(r, row, 6);
        a.disabled = internal::PgBool(r, row, 7);
        loaded.accounts.emplace(a.id, std::move(a));
      }
    }
    {
      PgOutcome out = internal::PgExec(
          conn,
          "SELECT p.account_id, p.provider, encode(p.ciphertext, 'hex') FROM provider_keys p" +
              provider_where + " ORDER BY p.account_id, p.provider",
          params);
      if (!out.ok()) return fail(out, "loading provider keys");
      const PGresult* r = out.result.get();
      const int rows = PQntuples(r);
      if (rows > 0 && !secrets) {
        std::lock_guard lock(log_mutex);
        if (!logged_no_secrets) {
          logged_no_secrets = true;
          internal::Log(LogLevel::kWarning,
                        "key cache: BYOK provider keys are stored but " + std::string(kSecretKeyEnv) +
                            " is not set, so this gateway cannot read them: calls of those "
                            "accounts to those providers fail (503) instead of using the gateway's "
                            "own provider keys");
        }
      }
      for (int row = 0; row < rows; ++row) {
        const int64_t account_id = internal::PgInt64(r, row, 0);
        const std::string provider(internal::PgText(r, row, 1));
        auto account = loaded.accounts.find(account_id);
        if (account == loaded.accounts.end()) continue;
        if (!secrets) {
          account->second.unreadable_provider_keys.insert(provider);
          continue;
        }
        const std::string associated =
            "provider_keys:" + std::to_string(account_id) + ":" + provider;
        std::optional<std::string> sealed = DecodeHex(internal::PgText(r, row, 2));
        Result<std::string> opened =
            sealed ? secrets->Open(*sealed, associated)
                   : Result<std::string>(Error{ErrorCode::kInvalidArgument, "not hex", {}, {}});
        if (opened) {
          account->second.provider_keys.emplace(provider, std::move(*opened));
          continue;
        }
        account->second.unreadable_provider_keys.insert(provider);
        std::lock_guard lock(log_mutex);
        if (logged_unopenable.insert(std::to_string(account_id) + ":" + provider).second) {
          // The error says why (too short, tampered, other key); never the value.
          internal::Log(LogLevel::kError,
                        "key cache: the provider key of account " + std::to_string(account_id) +
                            " for provider '" + provider + "' does not open (stored with another " +
                            std::string(kSecretKeyEnv) + "?); its calls to that provider fail (503): " +
                            opened.error().message);
        }
      }
    }
    if (PgOutcome out = internal::PgExec(conn, "COMMIT"); !out.ok()) {
      return fail(out, "loading API keys");
    }
    return loaded;
  }

  // A snapshot of everything from a full load, and the changes since `old`.
  static std::shared_ptr<Snapshot> BuildFull(Loaded loaded, const Snapshot* old, Changes* changes) {
    auto snap = std::make_shared<Snapshot>();
    for (auto& [id, account] : loaded.accounts) {
      snap->accounts.emplace(id, std::make_shared<const AccountRecord>(std::move(account)));
    }
    snap->keys.reserve(loaded.keys.size());
    snap->by_hash.reserve(loaded.keys.size());
    for (const KeyEntry& entry : loaded.keys) {
      auto account = snap->accounts.find(entry.record.account_id);
      snap->PutKey(Embed(entry, account != snap->accounts.end()
                                    ? *account->second
                                    : MissingAccount(entry.record.account_id)));
    }
    if (old != nullptr) {
      for (const auto& [id, account] : snap->accounts) {
        auto before = old->accounts.find(id);
        if (before == old->accounts.end() || !SameAccount(*before->second, *account)) {
          changes->emplace_back("account", id);
        }
      }
      for (const auto& [id, account] : old->accounts) {
        if (!snap->accounts.contains(id)) changes->emplace_back("account", id);
      }
      for (const auto& [id, entry] : snap->keys) {
        auto before = old->keys.find(id);
        if (before == old->keys.end() || !SameKey(*before->second, *entry)) {
          changes->emplace_back("key", id);
        }
      }
      for (const auto& [id, entry] : old->keys) {
        if (!snap->keys.contains(id)) changes->emplace_back("key", id);
      }
    }
    return snap;
  }

  // `current` with the targeted rows of `loaded` applied: the loaded accounts
  // replace theirs (re-embedded in all their keys), the targeted keys are
  // replaced by what was loaded or removed when gone.
  static std::shared_ptr<Snapshot> BuildTargeted(const Snapshot& current, const Targets& targets,
                                                 Loaded loaded) {
    auto snap = std::make_shared<Snapshot>(current);
    std::vector<int64_t> gone_accounts;
    for (int64_t id : targets.account_ids) {
      if (!loaded.accounts.contains(id)) gone_accounts.push_back(id);
    }
    for (int64_t id : gone_accounts) snap->accounts.erase(id);
    for (auto& [id, account] : loaded.accounts) {
      snap->accounts[id] = std::make_shared<const AccountRecord>(std::move(account));
    }
    if (!loaded.accounts.empty()) {
      std::vector<KeyPtr> reembedded;
      for (const auto& [id, entry] : snap->keys) {
        auto account = snap->accounts.find(entry->record.account_id);
        if (loaded.accounts.contains(entry->record.account_id) && account != snap->accounts.end()) {
          reembedded.push_back(Embed(*entry, *account->second));
        }
      }
      for (KeyPtr& entry : reembedded) snap->PutKey(std::move(entry));
    }
    for (int64_t id : targets.key_ids) snap->RemoveKey(id);
    for (const KeyEntry& entry : loaded.keys) {
      auto account = snap->accounts.find(entry.record.account_id);
      snap->PutKey(Embed(entry, account != snap->accounts.end()
                                    ? *account->second
                                    : MissingAccount(entry.record.account_id)));
    }
    return snap;
  }

  void Install(std::shared_ptr<const Snapshot> next) {
    std::lock_guard lock(state_mutex);
    snapshot = std::move(next);
  }

  // A full load on `conn` and its install. Caller holds load_mutex.
  Result<void> FullReloadLocked(PGconn* conn, bool* connection_bad, Changes* changes) {
    const Clock::time_point started = Clock::now();
    Result<Loaded> loaded = Load(conn, Targets{.full = true}, connection_bad);
    if (!loaded) return loaded.error();
    std::shared_ptr<const Snapshot> old = Current();
    std::shared_ptr<Snapshot> next = BuildFull(std::move(*loaded), old.get(), changes);
    next->full_load_started = started;
    Install(std::move(next));
    refreshes.fetch_add(1, std::memory_order_relaxed);
    return {};
  }

  // A full reload on the session connection (RefreshNow and the miss path),
  // retried once on a fresh connection if the one it had was found broken.
  Result<void> SessionReloadLocked(Changes* changes) {
    for (int attempt = 0;; ++attempt) {
      const bool had_connection = session.conn() != nullptr;
      if (auto ok = session.Ensure(); !ok) return ok.error();
      bool connection_bad = false;
      Result<void> result = FullReloadLocked(session.conn(), &connection_bad, changes);
      if (result || !connection_bad) return result;
      session.DropIfBad();
      if (!had_connection || attempt > 0) return result;
    }
  }

  void Notify(const Changes& changes) {
    if (changes.empty() || stop_requested.load()) return;
    std::shared_ptr<const std::vector<std::function<void(std::string_view, int64_t)>>> list;
    {
      std::lock_guard lock(callbacks_mutex);
      list = callbacks;
    }
    for (const auto& [kind, id] : changes) {
      for (const auto& callback : *list) callback(kind, id);
    }
  }

  Result<void> RefreshNow() {
    Changes changes;
    Result<void> result;
    {
      std::lock_guard lock(load_mutex);
      result = SessionReloadLocked(&changes);
    }
    Notify(changes);
    return result;
  }

  // Reloads unless the installed snapshot's full load started at or after
  // `t`. Checked under load_mutex, after any load in flight has installed.
  Result<void> RefreshIfLoadedBefore(Clock::time_point t) {
    Changes changes;
    Result<void> result;
    {
      std::lock_guard lock(load_mutex);
      if (std::shared_ptr<const Snapshot> current = Current();
          current != nullptr && current->full_load_started >= t) {
        return {};
      }
      result = SessionReloadLocked(&changes);
    }
    Notify(changes);
    return result;
  }

  // ------------------------------------------------------------ listener

  // A new listening connection: LISTEN is in effect when this returns, so a
  // load that starts afterwards misses no change (later ones notify).
  Result<PgConnPtr> ConnectAndListen() {
    Result<PgConnPtr> conn = internal::PgConnect(database_url);
    if (!conn) return conn.error();
    TuneSocket(PQsocket(conn->get()));
    PgOutcome out = internal::PgExec(conn->get(), "LISTEN " + std::string(kChannel));
    if (!out.ok()) return out.ToError("listening for key changes");
    return conn;
  }

  void Failed(std::string_view what) {
    refresh_failures.fetch_add(1, std::memory_order_relaxed);
    ++failures_in_row;
    if (!failing) {
      internal::Log(LogLevel::kError,
                    "key cache refresh failed, serving the last loaded keys until the "
                    "database is back: " + std::string(what));
      failing = true;
    }
  }

  void Succeeded() {
    failures_in_row = 0;
    if (failing) {
      internal::Log(LogLevel::kInfo, "key cache refresh recovered");
      failing = false;
    }
  }

  // After the n-th failure in a row: at once, then 100 ms doubling up to 1 s,
  // never longer than the full reload interval.
  std::chrono::milliseconds RetryDelay() const {
    if (failures_in_row <= 1) return std::chrono::milliseconds(0);
    const int shift = std::min(failures_in_row - 2, 4);
    return std::min({std::chrono::milliseconds(100 << shift), std::chrono::milliseconds(1000),
                     full_reload_interval});
  }

  // Waits up to `timeout` for Stop or, with fd >= 0, for fd to be readable.
  // True if fd is readable.
  bool Wait(int fd, Clock::duration timeout) {
    pollfd fds[2] = {{wake_read, POLLIN, 0}, {fd, POLLIN, 0}};
    const auto ms = std::chrono::ceil<std::chrono::milliseconds>(std::max(timeout, Clock::duration{}));
    const int n = ::poll(fds, fd >= 0 ? 2 : 1,
                         static_cast<int>(std::min<int64_t>(ms.count(), 1'000'000'000)));
    if (n <= 0) return false;
    return fd >= 0 && (fds[1].revents & (POLLIN | POLLERR | POLLHUP)) != 0;
  }

  // Takes the notifications libpq has received so far into `targets`.
  void Drain(PGconn* conn, Targets* targets) {
    while (PGnotify* n = PQnotifies(conn)) {
      std::string_view channel = n->relname ? n->relname : "";
      std::string_view payload = n->extra ? n->extra : "";
      if (channel == kChannel) {
        notifications.fetch_add(1, std::memory_order_relaxed);
        auto parse = [&](std::string_view prefix, std::set<int64_t>* into) {
          if (!payload.starts_with(prefix)) return;
          std::string_view digits = payload.substr(prefix.size());
          if (digits.empty() || digits.size() > 18 ||
              !std::all_of(digits.begin(), digits.end(), [](char c) { return c >= '0' && c <= '9'; })) {
            return;
          }
          into->insert(std::stoll(std::string(digits)));
        };
        parse("key:", &targets->key_ids);
        parse("account:", &targets->account_ids);
      }
      PQfreemem(n);
    }
  }

  // Applies notified changes: one targeted load, or a full one for a big batch.
  Result<void> ApplyTargets(PGconn* conn, const Targets& targets, bool* connection_bad) {
    Changes changes;
    Result<void> result;
    {
      std::lock_guard lock(load_mutex);
      if (targets.size() > kMaxTargetedChanges) {
        result = FullReloadLocked(conn, connection_bad, &changes);
      } else {
        Result<Loaded> loaded = Load(conn, targets, connection_bad);
        if (loaded) {
          std::shared_ptr<const Snapshot> current = Current();
          Install(BuildTargeted(*current, targets, std::move(*loaded)));
        } else {
          result = loaded.error();
        }
      }
    }
    if (!result) return result;
    // Every notified item, even if a full reload found it unchanged; then what
    // a full reload found besides.
    Changes notified;
    for (int64_t id : targets.account_ids) notified.emplace_back("account", id);
    for (int64_t id : targets.key_ids) notified.emplace_back("key", id);
    for (const auto& change : changes) {
      if (std::find(notified.begin(), notified.end(), change) == notified.end()) {
        notified.push_back(change);
      }
    }
    Notify(notified);
    return {};
  }

  void Run() {
    PgConnPtr conn = std::move(initial_conn);
    Clock::time_point next_full = Clock::now() + full_reload_interval;
    bool need_full = false;
    while (!stop_requested.load()) {
      if (conn == nullptr) {
        Result<PgConnPtr> connected = ConnectAndListen();
        if (!connected) {
          Failed(connected.error().message);
          Wait(-1, RetryDelay());
          continue;
        }
        conn = std::move(*connected);
        need_full = true;  // notifications sent while disconnected are lost
      }
      if (need_full || Clock::now() >= next_full) {
        Changes changes;
        bool connection_bad = false;
        Result<void> result;
        {
          std::lock_guard lock(load_mutex);
          result = FullReloadLocked(conn.get(), &connection_bad, &changes);
        }
        if (!result) {
          Failed(result.error().message);
          if (connection_bad) conn.reset();
          need_full = true;
          Wait(-1, RetryDelay());
          continue;
        }
        Notify(changes);
        Succeeded();
        need_full = false;
        next_full = Clock::now() + full_reload_interval;
      }
      // Notifications may already be buffered (received during a query).
      Targets targets;
      Drain(conn.get(), &targets);
      if (!targets.empty()) {
        // A burst (one transaction's changes) may still be arriving: take
        // what the socket already holds, so it is applied in one load.
        for (int64_t seen = -1; seen != notifications.load() && PQconsumeInput(conn.get()) != 0;) {
          seen = notifications.load();
          Drain(conn.get(), &targets);
        }
        bool connection_bad = false;
        if (Result<void> applied = ApplyTargets(conn.get(), targets, &connection_bad); !applied) {
          Failed(applied.error().message);
          if (connection_bad) conn.reset();
          need_full = true;  // what these notifications announced is not applied yet
          Wait(-1, RetryDelay());
        } else {
          Succeeded();
        }
        continue;
      }
      if (Wait(PQsocket(conn.get()), next_full - Clock::now())) {
        if (PQconsumeInput(conn.get()) == 0 || PQstatus(conn.get()) != CONNECTION_OK) {
          Failed("lost the connection that listens for key changes");
          conn.reset();
          Wait(-1, RetryDelay());
        }
      }
    }
  }
};

KeyCache::KeyCache(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

KeyCache::~KeyCache() { Stop(); }

Result<std::unique_ptr<KeyCache>> KeyCache::Start(const std::string& database_url,
                                                  int full_reload_interval_ms) {
  return Start(database_url, std::nullopt, full_reload_interval_ms);
}

Result<std::unique_ptr<KeyCache>> KeyCache::Start(const std::string& database_url,
                                                  std::optional<SecretBox> secrets,
                                                  int full_reload_interval_ms) {
  if (full_reload_interval_ms < 1) {
    return InvalidArgument("key cache full reload interval must be >= 1 ms",
                           "full_reload_interval_ms");
  }
  auto impl = std::make_unique<Impl>(database_url, std::move(secrets), full_reload_interval_ms);
  if (impl->wake_read < 0) {
    return Error{ErrorCode::kInternal, "key cache: cannot create a pipe", {}, {}};
  }
  Result<PgConnPtr> conn = impl->ConnectAndListen();
  if (!conn) return conn.error();
  {
    std::lock_guard lock(impl->load_mutex);
    bool connection_bad = false;
    Changes ignored;
    if (auto ok = impl->FullReloadLocked(conn->get(), &connection_bad, &ignored); !ok) {
      return ok.error();
    }
  }
  impl->initial_conn = std::move(*conn);
  Impl* raw = impl.get();
  impl->thread = std::thread([raw] { raw->Run(); });
  return std::unique_ptr<KeyCache>(new KeyCache(std::move(impl)));
}

std::optional<KeyRecord> KeyCache::Lookup(std::string_view plaintext_key) const {
  std::string hash = HashApiKey(plaintext_key);
  std::shared_ptr<const Snapshot> snap = impl_->Current();
  auto it = snap->by_hash.find(hash);
  if (it == snap->by_hash.end()) return std::nullopt;
  return it->second->record;
}

std::optional<KeyRecord> KeyCache::FindById(int64_t id) const {
  std::shared_ptr<const Snapshot> snap = impl_->Current();
  auto it = snap->keys.find(id);
  if (it == snap->keys.end()) return std::nullopt;
  return it->second->record;
}

std::optional<AccountRecord> KeyCache::FindAccount(int64_t id) const {
  std::shared_ptr<const Snapshot> snap = impl_->Current();
  auto it = snap->accounts.find(id);
  if (it == snap->accounts.end()) return std::nullopt;
  return *it->second;
}

void KeyCache::OnChange(std::function<void(std::string_view kind, int64_t id)> callback) {
  if (!callback) return;
  std::lock_guard lock(impl_->callbacks_mutex);
  auto next = std::make_shared<std::vector<std::function<void(std::string_view, int64_t)>>>(
      *impl_->callbacks);
  next->push_back(std::move(callback));
  impl_->callbacks = std::move(next);
}

Result<void> KeyCache::RefreshNow() { return impl_->RefreshNow(); }

Result<void> KeyCache::RefreshIfLoadedBefore(std::chrono::steady_clock::time_point t) {
  return impl_->RefreshIfLoadedBefore(t);
}

void KeyCache::Stop() {
  impl_->stop_requested.store(true);
  if (impl_->wake_write >= 0) {
    char byte = 1;
    // Non-blocking: a full pipe already wakes the thread.
    [[maybe_unused]] ssize_t n = ::write(impl_->wake_write, &byte, 1);
  }
  // Two threads may call Stop at once; only one may join.
  std::lock_guard join_lock(impl_->join_mutex);
  if (impl_->thread.joinable()) impl_->thread.join();
}

size_t KeyCache::size() const { return impl_->Current()->keys.size(); }
int64_t KeyCache::refreshes() const { return impl_->refreshes.load(std::memory_order_relaxed); }
int64_t KeyCache::refresh_failures() const {
  return impl_->refresh_failures.load(std::memory_order_relaxed);
}
int64_t KeyCache::notifications_received() const {
  return impl_->notifications.load(std::memory_order_relaxed);
}

}  // namespace tollgate::billing
