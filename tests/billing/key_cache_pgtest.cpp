// KeyCache against a real PostgreSQL: what it loads (keys with their accounts
// and BYOK provider keys), how changes reach it (LISTEN/NOTIFY, targeted
// reloads, within one second), and how it survives losing the database.
// PeriodStart is checked here too, by hand and against tollgate_period_start.
#include "tollgate/billing/key_cache.hpp"

#include "pg_test_database.hpp"
#include "tollgate/billing/api_key.hpp"
#include "tollgate/billing/log.hpp"
#include "tollgate/billing/secret_box.hpp"

#include <libpq-fe.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

namespace tollgate::billing {
namespace {

using testing::WaitFor;
using Clock = std::chrono::steady_clock;
using SysClock = std::chrono::system_clock;

constexpr std::string_view kKeyHex = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

std::string Hex(std::string_view bytes) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out;
  for (unsigned char c : bytes) {
    out.push_back(kDigits[c >> 4]);
    out.push_back(kDigits[c & 15]);
  }
  return out;
}

SecretBox Box() {
  auto box = SecretBox::FromHex(kKeyHex);
  EXPECT_TRUE(box) << box.error().message;
  return *box;
}

// Polls `condition` every 0.2 ms (fine enough to measure notification
// latency) for up to `timeout`; the time it took, or nullopt.
template <class F>
std::optional<Clock::duration> TimeUntil(F condition, std::chrono::milliseconds timeout) {
  const Clock::time_point start = Clock::now();
  for (;;) {
    if (condition()) return Clock::now() - start;
    if (Clock::now() - start > timeout) return std::nullopt;
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
}

double Ms(Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

// Collects log messages while alive.
class LogCapture {
 public:
  LogCapture() {
    SetLogHandler([this](LogLevel, std::string_view message) {
      std::lock_guard lock(mutex_);
      messages_.emplace_back(message);
    });
  }
  ~LogCapture() { SetLogHandler(nullptr); }
  std::vector<std::string> messages() {
    std::lock_guard lock(mutex_);
    return messages_;
  }
  int Count(std::string_view part) {
    int n = 0;
    for (const std::string& m : messages()) n += m.find(part) != std::string::npos;
    return n;
  }

 private:
  std::mutex mutex_;
  std::vector<std::string> messages_;
};

// Records OnChange calls, and whether the snapshot already showed `probe`
// when each came.
struct ChangeLog {
  std::mutex mutex;
  std::vector<std::pair<std::string, int64_t>> calls;
  bool Has(std::string_view kind, int64_t id) {
    std::lock_guard lock(mutex);
    return std::find(calls.begin(), calls.end(), std::pair(std::string(kind), id)) != calls.end();
  }
  void Attach(KeyCache& cache) {
    cache.OnChange([this](std::string_view kind, int64_t id) {
      std::lock_guard lock(mutex);
      calls.emplace_back(std::string(kind), id);
    });
  }
};

struct TestKey {
  int64_t id = 0;
  std::string key;  // plaintext
};

// Another writer: one libpq connection of its own (an admin process or the
// CLI on another machine), so a change is committed when Exec returns.
class Writer {
 public:
  explicit Writer(const std::string& url) : conn_(PQconnectdb(url.c_str())) {
    EXPECT_EQ(PQstatus(conn_), CONNECTION_OK) << PQerrorMessage(conn_);
  }
  ~Writer() { PQfinish(conn_); }
  // Runs `sql`; the first column of the first row, or "".
  std::string Exec(const std::string& sql) {
    PGresult* r = PQexec(conn_, sql.c_str());
    std::string value;
    if (PQresultStatus(r) != PGRES_COMMAND_OK && PQresultStatus(r) != PGRES_TUPLES_OK) {
      ADD_FAILURE() << sql << ": " << PQerrorMessage(conn_);
    } else if (PQntuples(r) > 0 && PQnfields(r) > 0) {
      value = PQgetvalue(r, 0, 0);
    }
    PQclear(r);
    return value;
  }
  int64_t ExecInt(const std::string& sql) { return std::stoll(Exec(sql)); }

 private:
  PGconn* conn_;
};

class KeyCachePg : public testing::MigratedPgTest {
 protected:
  int64_t CreateAccount(const std::string& name, const std::string& columns = "",
                        const std::string& values = "") {
    return QueryInt("INSERT INTO accounts (name" + columns + ") VALUES ('" + name + "'" + values +
                    ") RETURNING id");
  }
  TestKey CreateKey(int64_t account_id, const std::string& name, const std::string& columns = "",
                    const std::string& values = "") {
    TestKey k;
    k.key = GenerateApiKey();
    k.id = QueryInt("INSERT INTO api_keys (name, key_hash, account_id" + columns + ") VALUES ('" +
                    name + "', '" + HashApiKey(k.key) + "', " + std::to_string(account_id) +
                    values + ") RETURNING id");
    return k;
  }
  // Stores `secret` as account's key for `provider`, sealed for
  // `sealed_for_account` (another account's id makes it not open), and
  // notifies as the admin API does (no trigger covers provider_keys).
  void AddProviderKey(int64_t account, const std::string& provider, const std::string& secret,
                      std::optional<int64_t> sealed_for_account = std::nullopt) {
    const std::string associated =
        "provider_keys:" + std::to_string(sealed_for_account.value_or(account)) + ":" + provider;
    const std::string sealed = Box().Seal(secret, associated);
    Query("BEGIN; INSERT INTO provider_keys (account_id, provider, ciphertext, label) VALUES (" +
          std::to_string(account) + ", '" + provider + "', decode('" + Hex(sealed) +
          "', 'hex'), '" + SecretLabel(secret) + "'); SELECT pg_notify('tollgate_billing', 'account:" +
          std::to_string(account) + "'); COMMIT");
  }
  std::unique_ptr<KeyCache> MustStart(int interval_ms = 60'000,
                                      std::optional<SecretBox> box = std::nullopt) {
    auto cache = KeyCache::Start(url(), std::move(box), interval_ms);
    EXPECT_TRUE(cache) << cache.error().message;
    return cache ? std::move(*cache) : nullptr;
  }
};

// ------------------------------------------------------------------ loading

TEST_F(KeyCachePg, LoadsKeysWithTheirAccountsAtStart) {
  const int64_t acme = CreateAccount(
      "acme", ", prepaid, budget_nano_usd, budget_reset, soft_limit_nano_usd, byok_fee_ppm",
      ", false, 5000, 'monthly', 4000, 20000");
  const int64_t empty = CreateAccount("empty", ", disabled_at", ", now()");
  TestKey full = CreateKey(acme, "full",
                           ", credit_limit_nano_usd, limit_reset, soft_limit_nano_usd, expires_at,"
                           " allowed_models, requests_per_minute, tokens_per_minute, max_concurrent",
                           ", 1000, 'weekly', 800, '2031-02-03 04:05:06.789012+00',"
                           " ARRAY['openai/gpt-4o', 'meta/llama \"3\", 8b'], 60, 100000, 4");
  TestKey plain = CreateKey(acme, "plain");
  Query("UPDATE api_keys SET spent_nano_usd = 123 WHERE id = " + std::to_string(full.id));

  auto cache = MustStart();
  ASSERT_TRUE(cache);
  std::optional<KeyRecord> k = cache->Lookup(full.key);
  ASSERT_TRUE(k);
  EXPECT_EQ(k->id, full.id);
  EXPECT_EQ(k->name, "full");
  EXPECT_EQ(k->account_id, acme);
  EXPECT_EQ(k->credit_limit, Money{1000});
  EXPECT_EQ(k->limit_reset, LimitReset::kWeekly);
  EXPECT_EQ(k->soft_limit, Money{800});
  EXPECT_EQ(k->spent, Money{123});
  EXPECT_FALSE(k->revoked);
  ASSERT_TRUE(k->expires_at);
  // 2031-02-03T04:05:06.789012Z
  EXPECT_EQ(std::chrono::duration_cast<std::chrono::microseconds>(k->expires_at->time_since_epoch()).count(),
            1'927'857'906'789'012);
  ASSERT_TRUE(k->allowed_models);
  EXPECT_EQ(*k->allowed_models, (std::vector<std::string>{"openai/gpt-4o", "meta/llama \"3\", 8b"}));
  EXPECT_EQ(k->requests_per_minute, 60);
  EXPECT_EQ(k->tokens_per_minute, 100000);
  EXPECT_EQ(k->max_concurrent, 4);
  EXPECT_EQ(k->account.id, acme);
  EXPECT_EQ(k->account.name, "acme");
  EXPECT_FALSE(k->account.prepaid);
  EXPECT_EQ(k->account.budget, Money{5000});
  EXPECT_EQ(k->account.budget_reset, LimitReset::kMonthly);
  EXPECT_EQ(k->account.soft_limit, Money{4000});
  EXPECT_EQ(k->account.byok_fee_ppm, 20000);
  EXPECT_FALSE(k->account.disabled);
  EXPECT_TRUE(k->account.provider_keys.empty());
  EXPECT_TRUE(KeyUsable(*k, SysClock::now()));
  EXPECT_FALSE(KeyUsable(*k, *k->expires_at));

  std::optional<KeyRecord> p = cache->Lookup(plain.key);
  ASSERT_TRUE(p);
  EXPECT_FALSE(p->credit_limit);
  EXPECT_EQ(p->limit_reset, LimitReset::kNone);
  EXPECT_FALSE(p->soft_limit);
  EXPECT_FALSE(p->expires_at);
  EXPECT_FALSE(p->allowed_models) << "NULL = all models";
  EXPECT_FALSE(p->requests_per_minute);
  EXPECT_FALSE(p->tokens_per_minute);
  EXPECT_FALSE(p->max_concurrent);

  ASSERT_TRUE(cache->FindById(full.id));
  EXPECT_EQ(cache->FindById(full.id)->name, "full");
  EXPECT_FALSE(cache->Lookup("tg-not-a-key"));
  EXPECT_FALSE(cache->Lookup(full.key + "x"));
  EXPECT_EQ(cache->size(), 2u);
  std::optional<AccountRecord> e = cache->FindAccount(empty);
  ASSERT_TRUE(e) << "accounts without keys load too";
  EXPECT_TRUE(e->disabled);
  EXPECT_TRUE(e->prepaid);
  EXPECT_FALSE(e->budget);
  EXPECT_EQ(e->byok_fee_ppm, 50000);
  EXPECT_FALSE(cache->FindAccount(999'999));
  EXPECT_EQ(cache->refreshes(), 1);
}

TEST_F(KeyCachePg, ExtremeExpiriesNeitherFailTheLoadNorWrapAround) {
  const int64_t acme = CreateAccount("acme");
  TestKey never = CreateKey(acme, "never", ", expires_at", ", 'infinity'");
  TestKey far = CreateKey(acme, "far", ", expires_at", ", '3000-01-01 00:00:00+00'");
  TestKey always = CreateKey(acme, "always", ", expires_at", ", '-infinity'");
  TestKey old = CreateKey(acme, "old", ", expires_at", ", '1900-01-01 00:00:00+00'");
  auto cache = MustStart();
  ASSERT_TRUE(cache);
  const auto now = SysClock::now();
  EXPECT_TRUE(KeyUsable(*cache->Lookup(never.key), now));
  EXPECT_TRUE(KeyUsable(*cache->Lookup(far.key), now));
  EXPECT_FALSE(KeyUsable(*cache->Lookup(always.key), now));
  EXPECT_FALSE(KeyUsable(*cache->Lookup(old.key), now));
}

TEST_F(KeyCachePg, OpensProviderKeysWithTheSecretBoxAndSkipsWhatDoesNotOpen) {
  LogCapture logs;
  const int64_t acme = CreateAccount("acme");
  const int64_t other = CreateAccount("other");
  TestKey k = CreateKey(acme, "k");
  const std::string secret = "sk-proj-very-secret-0123456789";
  const std::string moved = "sk-ant-copied-from-elsewhere-42";
  AddProviderKey(acme, "openai", secret);
  AddProviderKey(acme, "anthropic", moved, /*sealed_for_account=*/other);  // copied row: does not open

  auto cache = MustStart(60'000, Box());
  ASSERT_TRUE(cache);
  std::optional<KeyRecord> record = cache->Lookup(k.key);
  ASSERT_TRUE(record);
  EXPECT_EQ(record->account.provider_keys,
            (std::map<std::string, std::string>{{"openai", secret}}));
  EXPECT_EQ(cache->FindAccount(acme)->provider_keys.size(), 1u);
  ASSERT_TRUE(cache->RefreshNow());  // reloading logs the bad row no second time
  EXPECT_EQ(logs.Count("does not open"), 1);
  EXPECT_EQ(logs.Count("anthropic"), 1);

  // Without a SecretBox: no provider keys, one line however often it loads.
  auto plain = MustStart(60'000);
  ASSERT_TRUE(plain);
  EXPECT_TRUE(plain->Lookup(k.key)->account.provider_keys.empty());
  ASSERT_TRUE(plain->RefreshNow());
  EXPECT_EQ(logs.Count(std::string(kSecretKeyEnv) + " is not set"), 1);

  for (const std::string& m : logs.messages()) {
    EXPECT_EQ(m.find(secret), std::string::npos) << m;
    EXPECT_EQ(m.find(moved), std::string::npos) << m;
  }
}

TEST_F(KeyCachePg, StartFailsWhenTheDatabaseIsUnreachable) {
  auto cache = KeyCache::Start("postgresql://postgres@127.0.0.1:1/postgres?connect_timeout=2");
  ASSERT_FALSE(cache);
  EXPECT_EQ(cache.error().code, ErrorCode::kUnavailable);
  auto bad_interval = KeyCache::Start(url(), 0);
  ASSERT_FALSE(bad_interval);
  EXPECT_EQ(bad_interval.error().code, ErrorCode::kInvalidArgument);
}

TEST_F(KeyCachePg, RefreshNowLoadsAtOnce) {
  auto cache = MustStart();
  ASSERT_TRUE(cache);
  cache->Stop();  // no listener: only RefreshNow can bring the key in
  TestKey alice = CreateKey(CreateAccount("a"), "alice");
  EXPECT_FALSE(cache->Lookup(alice.key));
  ASSERT_TRUE(cache->RefreshNow());
  EXPECT_TRUE(cache->Lookup(alice.key));
  EXPECT_EQ(cache->refreshes(), 2);
}

// ------------------------------------------------------------------ changes by notification

TEST_F(KeyCachePg, RevocationReachesEveryReplicaWithinOneSecond) {
  const int64_t account = CreateAccount("acme");
  TestKey alice = CreateKey(account, "alice");
  auto a = MustStart();  // two replicas; a full reload only every minute
  auto b = MustStart();
  ASSERT_TRUE(a && b);
  Writer writer(url());

  // Revoke and restore the key 20 times from another connection; time from
  // just before the UPDATE is sent until each cache shows it.
  constexpr int kRounds = 20;
  std::vector<double> latencies_ms;
  for (int round = 0; round < kRounds; ++round) {
    const bool revoke = round % 2 == 0;
    const Clock::time_point sent = Clock::now();
    writer.Exec(std::string("UPDATE api_keys SET revoked_at = ") + (revoke ? "now()" : "NULL") +
                " WHERE id = " + std::to_string(alice.id));
    for (KeyCache* cache : {a.get(), b.get()}) {
      auto took = TimeUntil([&] { return cache->Lookup(alice.key)->revoked == revoke; },
                            std::chrono::milliseconds(2000));
      ASSERT_TRUE(took) << "round " << round << ": not seen within 2 s";
      latencies_ms.push_back(Ms(Clock::now() - sent));
    }
  }
  std::sort(latencies_ms.begin(), latencies_ms.end());
  const double median = latencies_ms[latencies_ms.size() / 2];
  const double worst = latencies_ms.back();
  std::printf("[ latency  ] revocation seen by a replica: median %.2f ms, max %.2f ms (%zu samples)\n",
              median, worst, latencies_ms.size());
  EXPECT_LT(worst, 1000.0);
  // Each change reloaded just that key: no full reload beyond Start's.
  EXPECT_EQ(a->refreshes(), 1);
  EXPECT_EQ(b->refreshes(), 1);
  EXPECT_GE(a->notifications_received(), kRounds);
  EXPECT_EQ(a->refresh_failures(), 0);
}

TEST_F(KeyCachePg, NewKeysAndLimitChangesArriveByNotification) {
  const int64_t account = CreateAccount("acme");
  ChangeLog changes;  // declared first: outlives the cache that calls it
  auto cache = MustStart();
  ASSERT_TRUE(cache);
  changes.Attach(*cache);

  TestKey alice = CreateKey(account, "alice");
  ASSERT_TRUE(WaitFor([&] { return cache->Lookup(alice.key).has_value(); }, 1000));
  // The callback runs right after the key is in the map, on the listener's thread.
  EXPECT_TRUE(WaitFor([&] { return changes.Has("key", alice.id); }, 1000));

  Query("UPDATE api_keys SET credit_limit_nano_usd = 777, limit_reset = 'daily',"
        " soft_limit_nano_usd = 700, requests_per_minute = 5, tokens_per_minute = 50,"
        " max_concurrent = 2, allowed_models = ARRAY['x/y'],"
        " expires_at = '2001-01-01 00:00:00+00' WHERE id = " + std::to_string(alice.id));
  ASSERT_TRUE(WaitFor([&] { return cache->FindById(alice.id)->credit_limit == Money{777}; }, 1000));
  KeyRecord k = *cache->FindById(alice.id);
  EXPECT_EQ(k.limit_reset, LimitReset::kDaily);
  EXPECT_EQ(k.soft_limit, Money{700});
  EXPECT_EQ(k.requests_per_minute, 5);
  EXPECT_EQ(k.tokens_per_minute, 50);
  EXPECT_EQ(k.max_concurrent, 2);
  EXPECT_EQ(k.allowed_models, (std::vector<std::string>{"x/y"}));
  EXPECT_FALSE(KeyUsable(k, SysClock::now())) << "expired";
  EXPECT_EQ(k.account.name, "acme") << "the key keeps its account";

  // The usage writer's spend alone notifies nobody (no trigger on it).
  const int64_t notified = cache->notifications_received();
  Query("UPDATE api_keys SET spent_nano_usd = 5 WHERE id = " + std::to_string(alice.id));
  Query("UPDATE api_keys SET name = 'alice2' WHERE id = " + std::to_string(alice.id));
  ASSERT_TRUE(WaitFor([&] { return cache->FindById(alice.id)->name == "alice2"; }, 1000));
  EXPECT_EQ(cache->notifications_received(), notified + 1);
  EXPECT_EQ(cache->FindById(alice.id)->spent, Money{5}) << "a key's reload brings its spend along";
  EXPECT_EQ(cache->refreshes(), 1);
}

TEST_F(KeyCachePg, AnAccountChangeReachesAllItsKeys) {
  const int64_t acme = CreateAccount("acme");
  const int64_t other = CreateAccount("other");
  TestKey k1 = CreateKey(acme, "k1");
  TestKey k2 = CreateKey(acme, "k2");
  TestKey k3 = CreateKey(other, "k3");
  std::atomic<int> seen_disabled_in_callback{0};  // outlives the cache
  auto cache = MustStart();
  ASSERT_TRUE(cache);
  // The callback runs once the new snapshot is installed: it sees the change.
  cache->OnChange([&](std::string_view kind, int64_t id) {
    if (kind == "account" && id == acme && cache->Lookup(k1.key)->account.disabled) {
      seen_disabled_in_callback.fetch_add(1);
    }
  });

  Writer writer(url());
  const Clock::time_point sent = Clock::now();
  writer.Exec("UPDATE accounts SET disabled_at = now(), budget_nano_usd = 42 WHERE id = " +
              std::to_string(acme));
  auto took = TimeUntil(
      [&] { return cache->Lookup(k1.key)->account.disabled && cache->Lookup(k2.key)->account.disabled; },
      std::chrono::milliseconds(1000));
  ASSERT_TRUE(took);
  std::printf("[ latency  ] account disable seen on its keys: %.2f ms\n", Ms(Clock::now() - sent));
  EXPECT_FALSE(KeyUsable(*cache->Lookup(k1.key), SysClock::now()));
  EXPECT_EQ(cache->Lookup(k2.key)->account.budget, Money{42});
  EXPECT_EQ(cache->FindAccount(acme)->budget, Money{42});
  EXPECT_FALSE(cache->Lookup(k3.key)->account.disabled);
  EXPECT_TRUE(WaitFor([&] { return seen_disabled_in_callback.load() == 1; }, 1000));

  // A key moved to another account takes that account along.
  Query("UPDATE api_keys SET account_id = " + std::to_string(other) + " WHERE id = " +
        std::to_string(k2.id));
  ASSERT_TRUE(WaitFor([&] { return cache->Lookup(k2.key)->account_id == other; }, 1000));
  EXPECT_EQ(cache->Lookup(k2.key)->account.name, "other");
  EXPECT_FALSE(cache->Lookup(k2.key)->account.disabled);
  EXPECT_EQ(cache->refreshes(), 1);
}

TEST_F(KeyCachePg, ANewProviderKeyArrivesByNotification) {
  const int64_t acme = CreateAccount("acme");
  TestKey k = CreateKey(acme, "k");
  ChangeLog changes;  // declared first: outlives the cache that calls it
  auto cache = MustStart(60'000, Box());
  ASSERT_TRUE(cache);
  changes.Attach(*cache);
  EXPECT_TRUE(cache->Lookup(k.key)->account.provider_keys.empty());

  AddProviderKey(acme, "openai", "sk-live-abc123456789");
  ASSERT_TRUE(WaitFor([&] { return !cache->Lookup(k.key)->account.provider_keys.empty(); }, 1000));
  EXPECT_EQ(cache->Lookup(k.key)->account.provider_keys.at("openai"), "sk-live-abc123456789");
  EXPECT_TRUE(WaitFor([&] { return changes.Has("account", acme); }, 1000));

  // Removed (and notified): gone.
  Query("BEGIN; DELETE FROM provider_keys WHERE account_id = " + std::to_string(acme) +
        "; SELECT pg_notify('tollgate_billing', 'account:" + std::to_string(acme) + "'); COMMIT");
  ASSERT_TRUE(WaitFor([&] { return cache->Lookup(k.key)->account.provider_keys.empty(); }, 1000));
  EXPECT_EQ(cache->refreshes(), 1);
}

TEST_F(KeyCachePg, ANotifiedKeyThatIsGoneLeavesTheCache) {
  const int64_t acme = CreateAccount("acme");
  TestKey k = CreateKey(acme, "k");
  auto cache = MustStart();
  ASSERT_TRUE(cache);
  Query("BEGIN; DELETE FROM api_keys WHERE id = " + std::to_string(k.id) +
        "; SELECT pg_notify('tollgate_billing', 'key:" + std::to_string(k.id) + "'); COMMIT");
  ASSERT_TRUE(WaitFor([&] { return !cache->Lookup(k.key).has_value(); }, 1000));
  EXPECT_FALSE(cache->FindById(k.id));
  EXPECT_EQ(cache->size(), 0u);
  // Payloads it does not know are counted and ignored.
  Query("SELECT pg_notify('tollgate_billing', 'key:x'), pg_notify('tollgate_billing', 'hello')");
  EXPECT_TRUE(WaitFor([&] { return cache->notifications_received() >= 3; }, 1000));
  EXPECT_EQ(cache->refresh_failures(), 0);
}

TEST_F(KeyCachePg, ABulkChangeArrivesWhole) {
  const int64_t acme = CreateAccount("acme");
  Query("INSERT INTO api_keys (name, key_hash, account_id) SELECT 'bulk' || i, md5(i::text), " +
        std::to_string(acme) + " FROM generate_series(1, 400) i");
  TestKey last = CreateKey(acme, "last");
  ChangeLog changes;  // declared first: outlives the cache that calls it
  auto cache = MustStart();
  ASSERT_TRUE(cache);
  ASSERT_EQ(cache->size(), 401u);
  changes.Attach(*cache);
  const int64_t notified = cache->notifications_received();
  Query("UPDATE api_keys SET revoked_at = now()");  // 401 notifications in one transaction
  ASSERT_TRUE(WaitFor([&] { return cache->notifications_received() == notified + 401; }, 2000));
  ASSERT_TRUE(WaitFor([&] { return changes.Has("key", last.id); }, 1000));
  int revoked = 0;
  for (int64_t id = last.id - 400; id <= last.id; ++id) revoked += cache->FindById(id)->revoked;
  EXPECT_EQ(revoked, 401);
  // Batches of more than 256 changes are one full reload, smaller ones one
  // targeted load each; how the 401 arrive in batches is up to the server.
  std::printf("[ bulk     ] 401 notified changes applied with %lld full reload(s)\n",
              static_cast<long long>(cache->refreshes() - 1));
  EXPECT_EQ(cache->refresh_failures(), 0);
}

// ------------------------------------------------------------------ losing the database

TEST_F(KeyCachePg, RecoversWhenItsListeningConnectionIsKilled) {
  LogCapture logs;
  const int64_t acme = CreateAccount("acme");
  TestKey k = CreateKey(acme, "k");
  auto cache = MustStart();
  ASSERT_TRUE(cache);

  KillConnections();  // pg_terminate_backend of every connection to the test database
  // Noticed at once (the thread waits on the socket), reconnected, reloaded.
  ASSERT_TRUE(WaitFor([&] { return cache->refreshes() >= 2; }, 2000));
  EXPECT_GE(cache->refresh_failures(), 1);
  // Listening again: the next change arrives by notification.
  Writer writer(url());
  const Clock::time_point sent = Clock::now();
  writer.Exec("UPDATE api_keys SET revoked_at = now() WHERE id = " + std::to_string(k.id));
  ASSERT_TRUE(TimeUntil([&] { return cache->Lookup(k.key)->revoked; }, std::chrono::milliseconds(1000)));
  std::printf("[ latency  ] revocation after a reconnect: %.2f ms\n", Ms(Clock::now() - sent));
  EXPECT_EQ(logs.Count("key cache refresh failed"), 1);
  EXPECT_EQ(logs.Count("key cache refresh recovered"), 1);
}

TEST_F(KeyCachePg, AChangeMissedWhileDisconnectedIsFoundByTheReloadAfterReconnecting) {
  const int64_t acme = CreateAccount("acme");
  TestKey k = CreateKey(acme, "k");
  ChangeLog changes;  // declared first: outlives the cache that calls it
  auto cache = MustStart();
  ASSERT_TRUE(cache);
  changes.Attach(*cache);

  // Lock the cache out (from the server's admin database) and cut it off,
  // sparing one connection of our own on which the key is revoked while
  // nobody listens: its notification is lost.
  Writer admin(std::getenv("TOLLGATE_TEST_DATABASE_URL"));
  Writer writer(url());
  const std::string writer_pid = writer.Exec("SELECT pg_backend_pid()");
  admin.Exec("ALTER DATABASE " + database_name() + " ALLOW_CONNECTIONS false");
  admin.Exec("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '" +
             database_name() + "' AND pid <> " + writer_pid);
  writer.Exec("UPDATE api_keys SET revoked_at = now() WHERE id = " + std::to_string(k.id));
  ASSERT_TRUE(WaitFor([&] { return cache->refresh_failures() >= 2; }, 3000))
      << "the cache noticed and failed to reconnect";
  EXPECT_FALSE(cache->Lookup(k.key)->revoked) << "the last snapshot stays in use";
  admin.Exec("ALTER DATABASE " + database_name() + " ALLOW_CONNECTIONS true");

  // Reconnects within about a second (retries back off to 1 s) and reloads.
  ASSERT_TRUE(WaitFor([&] { return cache->Lookup(k.key)->revoked; }, 3000));
  EXPECT_TRUE(changes.Has("key", k.id)) << "the full reload reports what it found changed";
  EXPECT_FALSE(changes.Has("account", acme)) << "and only that";
}

TEST_F(KeyCachePg, KeepsTheLastSnapshotThroughAnOutageAndLogsOnce) {
  LogCapture logs;
  TestKey alice = CreateKey(CreateAccount("a"), "alice");
  auto cache = MustStart(20);
  ASSERT_TRUE(cache);

  BeginOutage();
  EXPECT_TRUE(WaitFor([&] { return cache->refresh_failures() >= 3; }));
  EXPECT_TRUE(cache->Lookup(alice.key)) << "last good snapshot must stay in use";
  EndOutage();
  int64_t refreshes = cache->refreshes();
  EXPECT_TRUE(WaitFor([&] { return cache->refreshes() > refreshes + 1; }));
  cache->Stop();

  EXPECT_EQ(logs.Count("key cache refresh failed"), 1);
  EXPECT_EQ(logs.Count("key cache refresh recovered"), 1);
  for (const std::string& m : logs.messages()) EXPECT_EQ(m.find(alice.key), std::string::npos);
}

TEST_F(KeyCachePg, StopEndsCallbacksAndIsIdempotent) {
  const int64_t acme = CreateAccount("acme");
  std::atomic<int> calls{0};  // outlives the cache
  auto cache = MustStart();
  ASSERT_TRUE(cache);
  cache->OnChange([&](std::string_view, int64_t) { calls.fetch_add(1); });
  cache->Stop();
  cache->Stop();
  CreateKey(acme, "late");
  Query("SELECT pg_sleep(0.2)");
  EXPECT_EQ(calls.load(), 0);
  EXPECT_EQ(cache->notifications_received(), 0);
}

// ------------------------------------------------------------------ miss path

TEST_F(KeyCachePg, RefreshIfLoadedBeforeSkipsWhenALaterReloadIsInstalled) {
  const int64_t acme = CreateAccount("acme");
  const Clock::time_point before_start = Clock::now();
  auto cache = MustStart();
  ASSERT_TRUE(cache);
  cache->Stop();  // keys below arrive only through the miss path
  // Start's own load began after before_start.
  int64_t n = cache->refreshes();
  ASSERT_TRUE(cache->RefreshIfLoadedBefore(before_start));
  EXPECT_EQ(cache->refreshes(), n);

  const Clock::time_point t = Clock::now();
  ASSERT_TRUE(cache->RefreshNow());  // started after t
  n = cache->refreshes();
  TestKey bob = CreateKey(acme, "bob");  // committed after that reload
  ASSERT_TRUE(cache->RefreshIfLoadedBefore(t));
  EXPECT_EQ(cache->refreshes(), n) << "a reload that started after t is installed: no-op";
  EXPECT_FALSE(cache->Lookup(bob.key)) << "so bob's key, created later, is not loaded yet";

  // The gateway's case: a miss on a key created a moment ago.
  const Clock::time_point miss = Clock::now();
  ASSERT_FALSE(cache->Lookup(bob.key));
  ASSERT_TRUE(cache->RefreshIfLoadedBefore(miss));
  EXPECT_EQ(cache->refreshes(), n + 1);
  EXPECT_TRUE(cache->Lookup(bob.key));
  // Once is enough for that t.
  ASSERT_TRUE(cache->RefreshIfLoadedBefore(miss));
  EXPECT_EQ(cache->refreshes(), n + 1);
}

TEST_F(KeyCachePg, ConcurrentRefreshIfLoadedBeforeReloadsOnce) {
  auto cache = MustStart();
  ASSERT_TRUE(cache);
  cache->Stop();
  TestKey alice = CreateKey(CreateAccount("a"), "alice");
  const int64_t n = cache->refreshes();
  const Clock::time_point t = Clock::now();
  ASSERT_FALSE(cache->Lookup(alice.key));

  constexpr int kThreads = 8;
  std::atomic<int> ready{0};
  std::atomic<bool> go{false};
  std::atomic<int> failed{0}, found{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < kThreads; ++i) {
    threads.emplace_back([&] {
      ready.fetch_add(1);
      while (!go.load()) std::this_thread::yield();
      if (!cache->RefreshIfLoadedBefore(t)) failed.fetch_add(1);
      if (cache->Lookup(alice.key)) found.fetch_add(1);
    });
  }
  while (ready.load() < kThreads) std::this_thread::yield();
  go.store(true);
  for (std::thread& thread : threads) thread.join();
  EXPECT_EQ(failed.load(), 0);
  EXPECT_EQ(found.load(), kThreads) << "every caller sees the key once its call returns";
  EXPECT_EQ(cache->refreshes(), n + 1) << "8 concurrent misses at t: exactly one reload";
  EXPECT_EQ(cache->refresh_failures(), 0);
}

TEST_F(KeyCachePg, RefreshIfLoadedBeforeKeepsTheSnapshotWhenTheDatabaseIsDown) {
  TestKey alice = CreateKey(CreateAccount("a"), "alice");
  auto cache = MustStart();
  ASSERT_TRUE(cache);
  cache->Stop();
  const int64_t n = cache->refreshes();
  BeginOutage();
  auto down = cache->RefreshIfLoadedBefore(Clock::now());
  ASSERT_FALSE(down);
  EXPECT_EQ(down.error().code, ErrorCode::kUnavailable);
  EXPECT_EQ(cache->refreshes(), n);
  EXPECT_TRUE(cache->Lookup(alice.key)) << "the last snapshot stays";
  EndOutage();
  // The failed attempt installed nothing, so the next call with the same t reloads.
  ASSERT_TRUE(cache->RefreshIfLoadedBefore(Clock::now()));
  EXPECT_EQ(cache->refreshes(), n + 1);
}

// ------------------------------------------------------------------ limit periods

SysClock::time_point Utc(int y, unsigned m, unsigned d, int hh = 0, int mm = 0, int ss = 0,
                         int micros = 0) {
  using namespace std::chrono;
  return sys_days{year{y} / month{m} / day{d}} + hours{hh} + minutes{mm} + seconds{ss} +
         microseconds{micros};
}

TEST(KeyCachePeriod, NamesRoundTrip) {
  for (LimitReset r : {LimitReset::kNone, LimitReset::kDaily, LimitReset::kWeekly, LimitReset::kMonthly}) {
    EXPECT_EQ(ParseLimitReset(LimitResetName(r)), r);
  }
  EXPECT_EQ(LimitResetName(LimitReset::kWeekly), "weekly");
  EXPECT_FALSE(ParseLimitReset("Daily"));
  EXPECT_FALSE(ParseLimitReset(""));
  EXPECT_FALSE(ParseLimitReset("yearly"));
}

TEST(KeyCachePeriod, DailyStartsAtMidnightUtc) {
  EXPECT_EQ(PeriodStart(LimitReset::kDaily, Utc(2026, 3, 14, 23, 59, 59, 999'999)), Utc(2026, 3, 14));
  EXPECT_EQ(PeriodStart(LimitReset::kDaily, Utc(2026, 3, 15)), Utc(2026, 3, 15));
  EXPECT_EQ(PeriodStart(LimitReset::kDaily, Utc(2026, 3, 15, 0, 0, 0, 1)), Utc(2026, 3, 15));
  EXPECT_EQ(PeriodStart(LimitReset::kDaily, Utc(1969, 12, 31, 12)), Utc(1969, 12, 31)) << "before the epoch";
}

TEST(KeyCachePeriod, WeeklyStartsOnMonday) {
  // 2026-03-15 is a Sunday, 2026-03-16 a Monday.
  EXPECT_EQ(PeriodStart(LimitReset::kWeekly, Utc(2026, 3, 15, 23, 59, 59)), Utc(2026, 3, 9));
  EXPECT_EQ(PeriodStart(LimitReset::kWeekly, Utc(2026, 3, 16)), Utc(2026, 3, 16));
  EXPECT_EQ(PeriodStart(LimitReset::kWeekly, Utc(2026, 3, 16, 0, 0, 0, 1)), Utc(2026, 3, 16));
  EXPECT_EQ(PeriodStart(LimitReset::kWeekly, Utc(2026, 3, 22, 12)), Utc(2026, 3, 16));
  // Across a month and a year: 2027-01-01 is a Friday.
  EXPECT_EQ(PeriodStart(LimitReset::kWeekly, Utc(2027, 1, 1, 8)), Utc(2026, 12, 28));
  // 1970-01-01 was a Thursday.
  EXPECT_EQ(PeriodStart(LimitReset::kWeekly, Utc(1970, 1, 1)), Utc(1969, 12, 29));
}

TEST(KeyCachePeriod, MonthlyStartsOnTheFirst) {
  EXPECT_EQ(PeriodStart(LimitReset::kMonthly, Utc(2026, 1, 31, 23, 59, 59)), Utc(2026, 1, 1));
  EXPECT_EQ(PeriodStart(LimitReset::kMonthly, Utc(2026, 2, 1)), Utc(2026, 2, 1));
  EXPECT_EQ(PeriodStart(LimitReset::kMonthly, Utc(2026, 4, 30, 18)), Utc(2026, 4, 1));
  EXPECT_EQ(PeriodStart(LimitReset::kMonthly, Utc(2026, 12, 31, 23, 59, 59, 999'999)), Utc(2026, 12, 1));
  EXPECT_EQ(PeriodStart(LimitReset::kMonthly, Utc(2027, 1, 1)), Utc(2027, 1, 1));
  // Leap years: 2028-02-29 exists; 2100 is not a leap year, 2000 is.
  EXPECT_EQ(PeriodStart(LimitReset::kMonthly, Utc(2028, 2, 29, 23)), Utc(2028, 2, 1));
  EXPECT_EQ(PeriodStart(LimitReset::kDaily, Utc(2028, 2, 29, 23)), Utc(2028, 2, 29));
  EXPECT_EQ(PeriodStart(LimitReset::kMonthly, Utc(2028, 3, 1)), Utc(2028, 3, 1));
  EXPECT_EQ(PeriodStart(LimitReset::kDaily, Utc(2100, 3, 1, 1)), Utc(2100, 3, 1));
  EXPECT_EQ(PeriodStart(LimitReset::kMonthly, Utc(2000, 2, 29, 1)), Utc(2000, 2, 1));
}

TEST(KeyCachePeriod, NoneIsTheEpoch) {
  EXPECT_EQ(PeriodStart(LimitReset::kNone, Utc(2026, 5, 5, 5)), SysClock::time_point{});
  EXPECT_EQ(PeriodStart(LimitReset::kNone, SysClock::time_point{}), SysClock::time_point{});
}

TEST(KeyCachePeriod, KeyUsable) {
  KeyRecord k;
  const auto now = Utc(2026, 1, 1, 12);
  EXPECT_TRUE(KeyUsable(k, now));
  k.expires_at = now + std::chrono::seconds(1);
  EXPECT_TRUE(KeyUsable(k, now));
  EXPECT_FALSE(KeyUsable(k, now + std::chrono::seconds(1))) << "refused from expires_at on";
  k.expires_at.reset();
  k.account.disabled = true;
  EXPECT_FALSE(KeyUsable(k, now));
  k.account.disabled = false;
  k.revoked = true;
  EXPECT_FALSE(KeyUsable(k, now));
}

// PeriodStart agrees with tollgate_period_start on edge cases and random
// instants (1960..2100, microsecond precision).
TEST_F(KeyCachePg, PeriodStartMatchesTheSqlFunction) {
  std::vector<SysClock::time_point> instants = {
      Utc(2026, 3, 15, 23, 59, 59, 999'999), Utc(2026, 3, 16), Utc(2028, 2, 29, 12),
      Utc(2027, 1, 1), Utc(1970, 1, 1), Utc(1969, 12, 31, 23, 59, 59), Utc(2100, 2, 28, 23)};
  std::mt19937_64 rng(20260315);
  std::uniform_int_distribution<int64_t> micros(-315'619'200'000'000, 4'102'444'800'000'000);
  for (int i = 0; i < 200; ++i) {
    instants.push_back(SysClock::time_point{std::chrono::microseconds(micros(rng))});
  }
  std::string values;
  for (const auto& at : instants) {
    if (!values.empty()) values += ',';
    values += '(';
    values += std::to_string(
        std::chrono::duration_cast<std::chrono::microseconds>(at.time_since_epoch()).count());
    values += ')';
  }
  for (LimitReset reset : {LimitReset::kNone, LimitReset::kDaily, LimitReset::kWeekly, LimitReset::kMonthly}) {
    // One row per instant, in order: the SQL period start in epoch microseconds.
    std::optional<std::string> sql = Query(
        "SELECT string_agg((extract(epoch FROM tollgate_period_start('" +
        std::string(LimitResetName(reset)) +
        "', 'epoch'::timestamptz + m * interval '1 microsecond')) * 1000000)::bigint::text, ','"
        " ORDER BY n) FROM (SELECT m, row_number() OVER () AS n FROM (VALUES " + values +
        ") v(m)) t");
    ASSERT_TRUE(sql);
    size_t pos = 0;
    for (const auto& at : instants) {
      size_t comma = sql->find(',', pos);
      const int64_t expected = std::stoll(sql->substr(pos, comma - pos));
      pos = comma == std::string::npos ? sql->size() : comma + 1;
      EXPECT_EQ(std::chrono::duration_cast<std::chrono::microseconds>(
                    PeriodStart(reset, at).time_since_epoch()).count(),
                expected)
          << LimitResetName(reset) << " at "
          << std::chrono::duration_cast<std::chrono::microseconds>(at.time_since_epoch()).count();
    }
  }
}

}  // namespace
}  // namespace tollgate::billing
