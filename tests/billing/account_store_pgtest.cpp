#include "tollgate/billing/account_store.hpp"

#include "pg_test_database.hpp"
#include "tollgate/billing/api_key.hpp"

#include <libpq-fe.h>

#include <atomic>
#include <map>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

namespace tollgate::billing {
namespace {

using namespace std::chrono_literals;

constexpr std::string_view kBoxKey = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

Money Usd(int64_t whole) { return Money{whole * 1'000'000'000}; }

class AccountStorePg : public testing::MigratedPgTest {
 protected:
  void SetUp() override {
    MigratedPgTest::SetUp();
    if (HasFatalFailure()) return;
    auto box = SecretBox::FromHex(kBoxKey);
    ASSERT_TRUE(box);
    auto store = AccountStore::Connect(url(), *box);
    ASSERT_TRUE(store) << store.error().message;
    accounts_ = std::move(*store);
  }
  void TearDown() override {
    accounts_.reset();
    MigratedPgTest::TearDown();
  }

  AccountInfo MakeAccount(std::string name, bool prepaid = true, std::optional<Money> credits = std::nullopt) {
    NewAccount a;
    a.name = std::move(name);
    a.prepaid = prepaid;
    a.initial_credits = credits;
    auto created = accounts_->CreateAccount(a);
    EXPECT_TRUE(created) << created.error().message;
    return created ? *created : AccountInfo{};
  }

  Result<CreditResult> Move(int64_t account, Money amount, std::string key, std::string reason = "test") {
    return accounts_->MoveCredits({account, amount, std::move(reason), std::move(key)});
  }

  int64_t LedgerSum(int64_t account) {
    return QueryInt("SELECT COALESCE(sum(amount_nano_usd), 0)::bigint FROM ledger_entries WHERE account_id = " +
                    std::to_string(account));
  }
  int64_t Balance(int64_t account) {
    return QueryInt("SELECT balance_nano_usd FROM accounts WHERE id = " + std::to_string(account));
  }

  // Inserts usage rows as the usage writer does: with their rollups
  // (usage_events `rest`: "(columns) VALUES ...", migrations/006_stats.sql).
  void InsertUsage(const std::string& rest) {
    Query("WITH ins AS (INSERT INTO usage_events " + rest +
          " RETURNING *) SELECT tollgate_rollup_usage(array_agg(ins::usage_events)) FROM ins");
  }

  std::unique_ptr<AccountStore> accounts_;
};

// A LISTEN tollgate_billing connection.
class Listener {
 public:
  explicit Listener(const std::string& url) : conn_(PQconnectdb(url.c_str())) {
    EXPECT_EQ(PQstatus(conn_), CONNECTION_OK) << PQerrorMessage(conn_);
    PQclear(PQexec(conn_, "LISTEN tollgate_billing"));
  }
  ~Listener() { PQfinish(conn_); }
  // Waits up to 5 s for `payload`; the payloads seen before it are dropped.
  bool Saw(const std::string& payload) {
    return testing::WaitFor([&] {
      PQconsumeInput(conn_);
      while (PGnotify* n = PQnotifies(conn_)) {
        seen_.insert(n->extra);
        PQfreemem(n);
      }
      return seen_.count(payload) > 0;
    });
  }
  void Clear() {
    PQconsumeInput(conn_);
    while (PGnotify* n = PQnotifies(conn_)) PQfreemem(n);
    seen_.clear();
  }

 private:
  PGconn* conn_;
  std::set<std::string> seen_;
};

// ------------------------------------------------------------------ accounts

TEST_F(AccountStorePg, CreatesGetsListsAccounts) {
  NewAccount a;
  a.name = "acme";
  auto plain = accounts_->CreateAccount(a);
  ASSERT_TRUE(plain) << plain.error().message;
  EXPECT_GT(plain->id, 0);
  EXPECT_EQ(plain->name, "acme");
  EXPECT_TRUE(plain->prepaid);
  EXPECT_EQ(plain->balance, Money{0});
  EXPECT_FALSE(plain->budget);
  EXPECT_EQ(plain->budget_reset, LimitReset::kNone);
  EXPECT_FALSE(plain->soft_limit);
  EXPECT_EQ(plain->byok_fee_ppm, 50'000);
  EXPECT_FALSE(plain->disabled);
  EXPECT_LT(std::chrono::system_clock::now() - plain->created_at, 1min);

  NewAccount full;
  full.name = "globex";
  full.prepaid = false;
  full.budget = Usd(100);
  full.budget_reset = LimitReset::kMonthly;
  full.soft_limit = Usd(80);
  full.byok_fee_ppm = 0;
  full.initial_credits = Money{12'500'000'000};
  auto made = accounts_->CreateAccount(full);
  ASSERT_TRUE(made) << made.error().message;
  EXPECT_FALSE(made->prepaid);
  EXPECT_EQ(made->budget, Usd(100));
  EXPECT_EQ(made->budget_reset, LimitReset::kMonthly);
  EXPECT_EQ(made->soft_limit, Usd(80));
  EXPECT_EQ(made->byok_fee_ppm, 0);
  EXPECT_EQ(made->balance, Money{12'500'000'000});
  // The initial credits are a ledger entry.
  auto ledger = accounts_->ListLedger(made->id);
  ASSERT_TRUE(ledger) << ledger.error().message;
  ASSERT_EQ(ledger->size(), 1u);
  EXPECT_EQ((*ledger)[0].kind, "credit");
  EXPECT_EQ((*ledger)[0].reason, "initial credits");
  EXPECT_EQ((*ledger)[0].amount, Money{12'500'000'000});
  EXPECT_EQ((*ledger)[0].idempotency_key, "initial:" + std::to_string(made->id));

  auto got = accounts_->GetAccount(made->id);
  ASSERT_TRUE(got);
  EXPECT_EQ(got->name, "globex");
  EXPECT_EQ(got->balance, Money{12'500'000'000});

  auto listed = accounts_->ListAccounts();
  ASSERT_TRUE(listed);
  ASSERT_EQ(listed->size(), 2u);
  EXPECT_EQ((*listed)[0].id, plain->id);
  EXPECT_EQ((*listed)[1].id, made->id);

  auto missing = accounts_->GetAccount(987654);
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error().code, ErrorCode::kNotFound);
}

TEST_F(AccountStorePg, ValidatesAccounts) {
  auto expect_invalid = [&](NewAccount a, std::string field) {
    auto made = accounts_->CreateAccount(a);
    ASSERT_FALSE(made) << field;
    EXPECT_EQ(made.error().code, ErrorCode::kInvalidArgument);
    EXPECT_EQ(made.error().param, field) << made.error().message;
  };
  expect_invalid(NewAccount{}, "name");
  expect_invalid(NewAccount{.name = std::string(201, 'x')}, "name");
  expect_invalid(NewAccount{.name = "a\nb"}, "name");
  expect_invalid(NewAccount{.name = "a", .budget = Money{-1}}, "budget");
  expect_invalid(NewAccount{.name = "a", .soft_limit = Money{-1}}, "soft_limit");
  expect_invalid(NewAccount{.name = "a", .byok_fee_ppm = -1}, "byok_fee_ppm");
  expect_invalid(NewAccount{.name = "a", .byok_fee_ppm = 1'000'001}, "byok_fee_ppm");
  expect_invalid(NewAccount{.name = "a", .initial_credits = Money{0}}, "credits");
  EXPECT_EQ(QueryInt("SELECT count(*) FROM accounts"), 0);
}

TEST_F(AccountStorePg, UpdatesAndClearsAccountFields) {
  AccountInfo a = MakeAccount("acme");
  Listener listener(url());
  AccountChanges c;
  c.name = "acme corp";
  c.prepaid = false;
  c.budget = std::optional<Money>(Usd(50));
  c.budget_reset = LimitReset::kDaily;
  c.soft_limit = std::optional<Money>(Usd(40));
  c.byok_fee_ppm = 10'000;
  auto updated = accounts_->UpdateAccount(a.id, c);
  ASSERT_TRUE(updated) << updated.error().message;
  EXPECT_EQ(updated->name, "acme corp");
  EXPECT_FALSE(updated->prepaid);
  EXPECT_EQ(updated->budget, Usd(50));
  EXPECT_EQ(updated->budget_reset, LimitReset::kDaily);
  EXPECT_EQ(updated->soft_limit, Usd(40));
  EXPECT_EQ(updated->byok_fee_ppm, 10'000);
  EXPECT_TRUE(listener.Saw("account:" + std::to_string(a.id)));

  // Clearing: an engaged outer optional holding nullopt.
  AccountChanges clear;
  clear.budget = std::optional<Money>();
  clear.soft_limit = std::optional<Money>();
  updated = accounts_->UpdateAccount(a.id, clear);
  ASSERT_TRUE(updated);
  EXPECT_FALSE(updated->budget);
  EXPECT_FALSE(updated->soft_limit);
  EXPECT_EQ(updated->name, "acme corp");  // untouched fields stay

  // Disable keeps its first time; enable clears it.
  updated = accounts_->UpdateAccount(a.id, AccountChanges{.disabled = true});
  ASSERT_TRUE(updated);
  EXPECT_TRUE(updated->disabled);
  ASSERT_TRUE(updated->disabled_at);
  auto first = *updated->disabled_at;
  updated = accounts_->UpdateAccount(a.id, AccountChanges{.disabled = true});
  ASSERT_TRUE(updated);
  EXPECT_EQ(updated->disabled_at, first);
  updated = accounts_->UpdateAccount(a.id, AccountChanges{.disabled = false});
  ASSERT_TRUE(updated);
  EXPECT_FALSE(updated->disabled);
  EXPECT_FALSE(updated->disabled_at);

  // Nothing to change: the account as it is.
  EXPECT_TRUE(accounts_->UpdateAccount(a.id, AccountChanges{}));
  auto missing = accounts_->UpdateAccount(999999, AccountChanges{.name = "x"});
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error().code, ErrorCode::kNotFound);
  auto missing_noop = accounts_->UpdateAccount(999999, AccountChanges{});
  ASSERT_FALSE(missing_noop);
  EXPECT_EQ(missing_noop.error().code, ErrorCode::kNotFound);
  auto bad = accounts_->UpdateAccount(a.id, AccountChanges{.budget = std::optional<Money>(Money{-5})});
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().param, "budget");
}

// ------------------------------------------------------------------ keys

TEST_F(AccountStorePg, CreatesKeysWithEverySetting) {
  AccountInfo a = MakeAccount("acme");
  Listener listener(url());
  NewKey k;
  k.account_id = a.id;
  k.name = "ci";
  k.limit = Usd(5);
  k.limit_reset = LimitReset::kWeekly;
  k.soft_limit = Usd(4);
  k.expires_at = std::chrono::sys_days{std::chrono::year{2031} / 1 / 2} + 3h + 4min + 5s;
  k.allowed_models = std::vector<std::string>{"openai/gpt-4o-mini", "anthropic/claude \"quoted\", {x}"};
  k.requests_per_minute = 60;
  k.tokens_per_minute = 100'000;
  k.max_concurrent = 4;
  auto issued = accounts_->CreateKey(k);
  ASSERT_TRUE(issued) << issued.error().message;
  EXPECT_TRUE(LooksLikeApiKey(issued->plaintext));
  const KeyDetails& d = issued->details;
  EXPECT_EQ(d.account_id, a.id);
  EXPECT_EQ(d.name, "ci");
  EXPECT_EQ(d.label, ApiKeyLabel(HashApiKey(issued->plaintext)));
  EXPECT_EQ(d.limit, Usd(5));
  EXPECT_EQ(d.limit_reset, LimitReset::kWeekly);
  EXPECT_EQ(d.soft_limit, Usd(4));
  EXPECT_EQ(d.expires_at, k.expires_at);
  EXPECT_EQ(d.allowed_models, k.allowed_models);
  EXPECT_EQ(d.requests_per_minute, 60);
  EXPECT_EQ(d.tokens_per_minute, 100'000);
  EXPECT_EQ(d.max_concurrent, 4);
  EXPECT_EQ(d.spent, Money{0});
  EXPECT_FALSE(d.revoked);
  EXPECT_EQ(Query("SELECT key_hash FROM api_keys WHERE id = " + std::to_string(d.id)), HashApiKey(issued->plaintext));
  EXPECT_EQ(QueryInt("SELECT count(*) FROM api_keys WHERE row_to_json(api_keys)::text LIKE '%" +
                     issued->plaintext.substr(3, 10) + "%'"),
            0);
  EXPECT_TRUE(listener.Saw("key:" + std::to_string(d.id)));

  // Defaults.
  auto bare = accounts_->CreateKey(NewKey{.account_id = a.id, .name = "bare"});
  ASSERT_TRUE(bare) << bare.error().message;
  EXPECT_FALSE(bare->details.limit);
  EXPECT_FALSE(bare->details.allowed_models);
  EXPECT_FALSE(bare->details.expires_at);
  EXPECT_FALSE(bare->details.requests_per_minute);
  EXPECT_NE(bare->plaintext, issued->plaintext);

  auto missing = accounts_->CreateKey(NewKey{.account_id = 424242, .name = "x"});
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error().code, ErrorCode::kNotFound);
}

TEST_F(AccountStorePg, ValidatesKeys) {
  AccountInfo a = MakeAccount("acme");
  auto expect_invalid = [&](NewKey k, std::string field) {
    k.account_id = a.id;
    if (k.name.empty() && field != "name") k.name = "k";
    auto made = accounts_->CreateKey(k);
    ASSERT_FALSE(made) << field;
    EXPECT_EQ(made.error().code, ErrorCode::kInvalidArgument);
    EXPECT_EQ(made.error().param, field) << made.error().message;
  };
  expect_invalid(NewKey{}, "name");
  expect_invalid(NewKey{.limit = Money{-1}}, "limit");
  expect_invalid(NewKey{.soft_limit = Money{-1}}, "soft_limit");
  expect_invalid(NewKey{.allowed_models = std::vector<std::string>{}}, "allowed_models");
  expect_invalid(NewKey{.allowed_models = std::vector<std::string>{"a", "a"}}, "allowed_models");
  expect_invalid(NewKey{.allowed_models = std::vector<std::string>{""}}, "allowed_models");
  expect_invalid(NewKey{.requests_per_minute = 0}, "requests_per_minute");
  expect_invalid(NewKey{.tokens_per_minute = -1}, "tokens_per_minute");
  expect_invalid(NewKey{.max_concurrent = 0}, "max_concurrent");
  EXPECT_EQ(QueryInt("SELECT count(*) FROM api_keys"), 0);
}

TEST_F(AccountStorePg, ListsUpdatesAndRevokesKeys) {
  AccountInfo a = MakeAccount("a");
  AccountInfo b = MakeAccount("b");
  auto k1 = accounts_->CreateKey(NewKey{.account_id = a.id, .name = "k1", .limit = Usd(1), .requests_per_minute = 5});
  auto k2 = accounts_->CreateKey(NewKey{.account_id = b.id, .name = "k2"});
  auto k3 = accounts_->CreateKey(NewKey{.account_id = a.id, .name = "k3"});
  ASSERT_TRUE(k1 && k2 && k3);

  auto of_a = accounts_->ListKeys(a.id);
  ASSERT_TRUE(of_a);
  ASSERT_EQ(of_a->size(), 2u);
  EXPECT_EQ((*of_a)[0].name, "k1");
  EXPECT_EQ((*of_a)[1].name, "k3");
  auto all = accounts_->ListKeys();
  ASSERT_TRUE(all);
  EXPECT_EQ(all->size(), 3u);
  auto none = accounts_->ListKeys(999999);
  ASSERT_FALSE(none);
  EXPECT_EQ(none.error().code, ErrorCode::kNotFound);

  Listener listener(url());
  KeyChanges c;
  c.name = "renamed";
  c.limit = std::optional<Money>(Usd(7));
  c.limit_reset = LimitReset::kMonthly;
  c.soft_limit = std::optional<Money>(Usd(6));
  c.expires_at = std::optional<TimePoint>(std::chrono::sys_days{std::chrono::year{2030} / 6 / 1});
  c.allowed_models = std::optional<std::vector<std::string>>(std::vector<std::string>{"m1"});
  c.tokens_per_minute = std::optional<int64_t>(1000);
  c.max_concurrent = std::optional<int64_t>(2);
  auto updated = accounts_->UpdateKey(k1->details.id, c);
  ASSERT_TRUE(updated) << updated.error().message;
  EXPECT_EQ(updated->name, "renamed");
  EXPECT_EQ(updated->limit, Usd(7));
  EXPECT_EQ(updated->limit_reset, LimitReset::kMonthly);
  EXPECT_EQ(updated->soft_limit, Usd(6));
  EXPECT_TRUE(updated->expires_at);
  EXPECT_EQ(updated->allowed_models, std::vector<std::string>{"m1"});
  EXPECT_EQ(updated->requests_per_minute, 5);  // untouched
  EXPECT_EQ(updated->tokens_per_minute, 1000);
  EXPECT_EQ(updated->max_concurrent, 2);
  EXPECT_TRUE(listener.Saw("key:" + std::to_string(k1->details.id)));

  KeyChanges clear;
  clear.limit = std::optional<Money>();
  clear.soft_limit = std::optional<Money>();
  clear.expires_at = std::optional<TimePoint>();
  clear.allowed_models = std::optional<std::vector<std::string>>();
  clear.requests_per_minute = std::optional<int64_t>();
  clear.tokens_per_minute = std::optional<int64_t>();
  clear.max_concurrent = std::optional<int64_t>();
  updated = accounts_->UpdateKey(k1->details.id, clear);
  ASSERT_TRUE(updated) << updated.error().message;
  EXPECT_FALSE(updated->limit);
  EXPECT_FALSE(updated->soft_limit);
  EXPECT_FALSE(updated->expires_at);
  EXPECT_FALSE(updated->allowed_models);
  EXPECT_FALSE(updated->requests_per_minute);
  EXPECT_FALSE(updated->tokens_per_minute);
  EXPECT_FALSE(updated->max_concurrent);
  EXPECT_EQ(updated->limit_reset, LimitReset::kMonthly);

  auto bad = accounts_->UpdateKey(k1->details.id, KeyChanges{.requests_per_minute = std::optional<int64_t>(0)});
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().param, "requests_per_minute");
  auto missing = accounts_->UpdateKey(999999, KeyChanges{.name = "x"});
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error().code, ErrorCode::kNotFound);

  auto revoked = accounts_->RevokeKey(k2->details.id);
  ASSERT_TRUE(revoked);
  EXPECT_TRUE(revoked->revoked);
  ASSERT_TRUE(revoked->revoked_at);
  auto again = accounts_->RevokeKey(k2->details.id);
  ASSERT_TRUE(again);
  EXPECT_EQ(again->revoked_at, revoked->revoked_at);  // the first revocation stands
  auto got = accounts_->GetKey(k2->details.id);
  ASSERT_TRUE(got);
  EXPECT_TRUE(got->revoked);
  auto no_key = accounts_->RevokeKey(999999);
  ASSERT_FALSE(no_key);
  EXPECT_EQ(no_key.error().code, ErrorCode::kNotFound);
}

TEST_F(AccountStorePg, ListsKeysInIdOrderWithLabelsLimitsAndRevocations) {
  testing::TestKey alice = testing::CreateAccountAndKey(*accounts_, "alice");
  testing::TestKey bob = testing::CreateAccountAndKey(*accounts_, "bob", Usd(5));
  ASSERT_FALSE(HasFailure());
  EXPECT_TRUE(LooksLikeApiKey(alice.plaintext));
  EXPECT_NE(alice.plaintext, bob.plaintext);
  EXPECT_LT(alice.id, bob.id);
  EXPECT_NE(alice.account_id, bob.account_id);

  // All keys, across accounts, by id.
  auto listed = accounts_->ListKeys();
  ASSERT_TRUE(listed) << listed.error().message;
  ASSERT_EQ(listed->size(), 2u);
  const KeyDetails& a = (*listed)[0];
  const KeyDetails& b = (*listed)[1];
  EXPECT_EQ(a.id, alice.id);
  EXPECT_EQ(a.account_id, alice.account_id);
  EXPECT_EQ(a.name, "alice");
  EXPECT_EQ(a.label, ApiKeyLabel(HashApiKey(alice.plaintext)));
  EXPECT_FALSE(a.limit);
  EXPECT_EQ(a.spent, Money{0});
  EXPECT_FALSE(a.revoked);
  EXPECT_FALSE(a.revoked_at);
  EXPECT_LT(std::chrono::system_clock::now() - a.created_at, 1min);
  EXPECT_EQ(FormatTimestamp(a.created_at).size(), 20u);  // 2026-11-29T08:04:53Z
  EXPECT_EQ(b.id, bob.id);
  EXPECT_EQ(b.name, "bob");
  EXPECT_EQ(b.label, ApiKeyLabel(HashApiKey(bob.plaintext)));
  EXPECT_EQ(b.limit, Usd(5));

  // The limit is the column the key cache and the credit guard read.
  std::string where_alice = " FROM api_keys WHERE id = " + std::to_string(alice.id);
  EXPECT_EQ(QueryInt("SELECT credit_limit_nano_usd FROM api_keys WHERE id = " + std::to_string(bob.id)),
            Usd(5).nano_usd);
  EXPECT_EQ(Query("SELECT credit_limit_nano_usd" + where_alice), std::nullopt);
  auto limited = accounts_->UpdateKey(alice.id, KeyChanges{.limit = std::optional<Money>(Money{42})});
  ASSERT_TRUE(limited) << limited.error().message;
  EXPECT_EQ(limited->limit, Money{42});
  EXPECT_EQ(QueryInt("SELECT credit_limit_nano_usd" + where_alice), 42);
  limited = accounts_->UpdateKey(alice.id, KeyChanges{.limit = std::optional<Money>()});
  ASSERT_TRUE(limited) << limited.error().message;
  EXPECT_FALSE(limited->limit);
  EXPECT_EQ(Query("SELECT credit_limit_nano_usd" + where_alice), std::nullopt);
  EXPECT_EQ(QueryInt("SELECT credit_limit_nano_usd FROM api_keys WHERE id = " + std::to_string(bob.id)),
            Usd(5).nano_usd);

  // Revoking one key leaves the other usable; listings show both.
  auto revoked = accounts_->RevokeKey(alice.id);
  ASSERT_TRUE(revoked) << revoked.error().message;
  EXPECT_EQ(QueryInt("SELECT count(*)" + where_alice + " AND revoked_at IS NOT NULL"), 1);
  listed = accounts_->ListKeys();
  ASSERT_TRUE(listed) << listed.error().message;
  ASSERT_EQ(listed->size(), 2u);
  EXPECT_TRUE((*listed)[0].revoked);
  EXPECT_FALSE((*listed)[1].revoked);
  auto of_alice = accounts_->ListKeys(alice.account_id);
  ASSERT_TRUE(of_alice) << of_alice.error().message;
  ASSERT_EQ(of_alice->size(), 1u);
  EXPECT_EQ((*of_alice)[0].id, alice.id);
  EXPECT_TRUE((*of_alice)[0].revoked);
}

// Every window of `size` characters of `text`; any longer substring contains one.
std::vector<std::string> Windows(const std::string& text, size_t size) {
  std::vector<std::string> out;
  for (size_t i = 0; i + size <= text.size(); ++i) out.push_back(text.substr(i, size));
  return out;
}

TEST_F(AccountStorePg, NoColumnHoldsAnyPartOfAPlaintextKey) {
  AccountInfo acme = MakeAccount("acme");
  std::vector<IssuedKey> created;
  for (int i = 0; i < 5; ++i) {
    auto key = accounts_->CreateKey(
        NewKey{.account_id = acme.id, .name = "key-" + std::to_string(i), .limit = Money{1000 + i}});
    ASSERT_TRUE(key) << key.error().message;
    created.push_back(*key);
  }
  ASSERT_TRUE(accounts_->RevokeKey(created[0].details.id));
  ASSERT_TRUE(accounts_->UpdateKey(created[1].details.id, KeyChanges{.name = "renamed"}));
  // key_prefix is gone; what is left is ids, names, the hash, money, limits and times.
  EXPECT_EQ(QueryInt("SELECT count(*) FROM information_schema.columns "
                     "WHERE table_name = 'api_keys' AND column_name = 'key_prefix'"),
            0);
  // Every column of every row, as text (row_to_json names each column and
  // renders each value).
  std::optional<std::string> rows =
      Query("SELECT string_agg(row_to_json(api_keys)::text, E'\\n' ORDER BY id) FROM api_keys");
  ASSERT_TRUE(rows);
  for (const IssuedKey& key : created) {
    ASSERT_NE(rows->find(HashApiKey(key.plaintext)), std::string::npos) << "the hash is stored";
    // No substring of >= 6 characters of the plaintext: the fixed "tg-"
    // start (3 characters) is too short to count, "tg-" + 3 random ones is not.
    for (const std::string& part : Windows(key.plaintext, 6)) {
      EXPECT_EQ(rows->find(part), std::string::npos)
          << "api_keys holds '" << part << "' of key " << key.details.id << ": " << *rows;
    }
  }
  // Listing shows labels made from the hashes, no part of the keys either.
  auto listed = accounts_->ListKeys(acme.id);
  ASSERT_TRUE(listed) << listed.error().message;
  ASSERT_EQ(listed->size(), created.size());
  for (size_t i = 0; i < created.size(); ++i) {
    const KeyDetails& details = (*listed)[i];
    EXPECT_EQ(details.id, created[i].details.id);
    EXPECT_EQ(details.label, ApiKeyLabel(HashApiKey(created[i].plaintext)));
    for (const std::string& part : Windows(created[i].plaintext, 6)) {
      EXPECT_EQ(details.label.find(part), std::string::npos) << details.label;
    }
  }
}

// ------------------------------------------------------------------ credits

TEST_F(AccountStorePg, AddsAndRemovesCredits) {
  AccountInfo a = MakeAccount("acme");
  Listener listener(url());
  auto added = Move(a.id, Usd(10), "top-up-1", "invoice 17");
  ASSERT_TRUE(added) << added.error().message;
  EXPECT_FALSE(added->replayed);
  EXPECT_EQ(added->balance, Usd(10));
  EXPECT_EQ(added->entry.kind, "credit");
  EXPECT_EQ(added->entry.amount, Usd(10));
  EXPECT_EQ(added->entry.reason, "invoice 17");
  EXPECT_EQ(added->entry.idempotency_key, "admin:top-up-1");
  EXPECT_EQ(added->entry.account_id, a.id);
  EXPECT_TRUE(listener.Saw("account:" + std::to_string(a.id)));

  auto removed = Move(a.id, Money{-2'500'000'000}, "refund-1", "goodwill reversal");
  ASSERT_TRUE(removed) << removed.error().message;
  EXPECT_EQ(removed->entry.kind, "debit");
  EXPECT_EQ(removed->balance, Money{7'500'000'000});
  EXPECT_EQ(Balance(a.id), 7'500'000'000);
  EXPECT_EQ(LedgerSum(a.id), 7'500'000'000);

  // Below zero on a prepaid account: refused, nothing moves.
  auto too_much = Move(a.id, Usd(-8), "too-much");
  ASSERT_FALSE(too_much);
  EXPECT_EQ(too_much.error().code, ErrorCode::kConflict);
  EXPECT_NE(too_much.error().message.find("$7.5"), std::string::npos) << too_much.error().message;
  EXPECT_EQ(Balance(a.id), 7'500'000'000);
  EXPECT_EQ(QueryInt("SELECT count(*) FROM ledger_entries"), 2);
  // Exactly to zero is fine.
  ASSERT_TRUE(Move(a.id, Money{-7'500'000'000}, "to-zero"));
  EXPECT_EQ(Balance(a.id), 0);

  // Postpaid accounts may go negative.
  AccountInfo post = MakeAccount("post", /*prepaid=*/false);
  auto negative = Move(post.id, Usd(-3), "post-1");
  ASSERT_TRUE(negative) << negative.error().message;
  EXPECT_EQ(negative->balance, Usd(-3));

  auto missing = Move(999999, Usd(1), "missing");
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error().code, ErrorCode::kNotFound);
}

TEST_F(AccountStorePg, ValidatesCreditMovements) {
  AccountInfo a = MakeAccount("acme");
  auto expect_invalid = [&](CreditMovement m, std::string field) {
    auto moved = accounts_->MoveCredits(m);
    ASSERT_FALSE(moved) << field;
    EXPECT_EQ(moved.error().code, ErrorCode::kInvalidArgument);
    EXPECT_EQ(moved.error().param, field) << moved.error().message;
  };
  expect_invalid({a.id, Money{0}, "r", "k"}, "amount");
  expect_invalid({a.id, Money{1'000'000'000'000'000'001}, "r", "k"}, "amount");
  expect_invalid({a.id, Money{1}, "", "k"}, "reason");
  expect_invalid({a.id, Money{1}, "r", ""}, "idempotency_key");
  expect_invalid({a.id, Money{1}, "r", "has space"}, "idempotency_key");
  expect_invalid({a.id, Money{1}, "r", std::string(201, 'k')}, "idempotency_key");
  EXPECT_EQ(QueryInt("SELECT count(*) FROM ledger_entries"), 0);
}

TEST_F(AccountStorePg, SameIdempotencyKeySameValuesMovesOnce) {
  AccountInfo a = MakeAccount("acme");
  auto first = Move(a.id, Usd(5), "k-1", "invoice");
  ASSERT_TRUE(first);
  auto second = Move(a.id, Usd(5), "k-1", "invoice");
  ASSERT_TRUE(second) << second.error().message;
  EXPECT_TRUE(second->replayed);
  EXPECT_EQ(second->entry.id, first->entry.id);
  EXPECT_EQ(second->entry.created_at, first->entry.created_at);
  EXPECT_EQ(second->balance, Usd(5));
  EXPECT_EQ(Balance(a.id), Usd(5).nano_usd);
  EXPECT_EQ(QueryInt("SELECT count(*) FROM ledger_entries"), 1);
  // A replay after later movements reports the balance now.
  ASSERT_TRUE(Move(a.id, Usd(1), "k-2"));
  auto third = Move(a.id, Usd(5), "k-1", "invoice");
  ASSERT_TRUE(third);
  EXPECT_TRUE(third->replayed);
  EXPECT_EQ(third->balance, Usd(6));
}

TEST_F(AccountStorePg, SameIdempotencyKeyOtherValuesConflicts) {
  AccountInfo a = MakeAccount("a");
  AccountInfo b = MakeAccount("b");
  ASSERT_TRUE(Move(a.id, Usd(5), "k-1", "invoice"));
  for (auto [account, amount, reason] : std::vector<std::tuple<int64_t, Money, std::string>>{
           {a.id, Usd(6), "invoice"}, {a.id, Usd(5), "other"}, {b.id, Usd(5), "invoice"}, {a.id, Usd(-5), "invoice"}}) {
    auto moved = Move(account, amount, "k-1", reason);
    ASSERT_FALSE(moved);
    EXPECT_EQ(moved.error().code, ErrorCode::kConflict);
    EXPECT_EQ(moved.error().param, "idempotency_key");
  }
  EXPECT_EQ(QueryInt("SELECT count(*) FROM ledger_entries"), 1);
  EXPECT_EQ(Balance(a.id), Usd(5).nano_usd);
  EXPECT_EQ(Balance(b.id), 0);
}

TEST_F(AccountStorePg, ConcurrentSameKeyMovesOnce) {
  AccountInfo a = MakeAccount("acme");
  constexpr int kThreads = 6;
  std::vector<std::unique_ptr<AccountStore>> stores;
  for (int i = 0; i < kThreads; ++i) {
    auto s = AccountStore::Connect(url());
    ASSERT_TRUE(s);
    stores.push_back(std::move(*s));
  }
  std::atomic<int> fresh{0}, replayed{0}, failed{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < kThreads; ++i) {
    threads.emplace_back([&, i] {
      for (int round = 0; round < 10; ++round) {
        auto moved = stores[i]->MoveCredits({a.id, Usd(1), "race", "round-" + std::to_string(round)});
        if (!moved) {
          ++failed;
        } else if (moved->replayed) {
          ++replayed;
        } else {
          ++fresh;
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(failed.load(), 0);
  EXPECT_EQ(fresh.load(), 10);
  EXPECT_EQ(replayed.load(), kThreads * 10 - 10);
  EXPECT_EQ(Balance(a.id), Usd(10).nano_usd);
  EXPECT_EQ(LedgerSum(a.id), Usd(10).nano_usd);
}

TEST_F(AccountStorePg, BalanceEqualsLedgerAfterRandomOperations) {
  std::vector<AccountInfo> accounts = {MakeAccount("p1"), MakeAccount("p2"), MakeAccount("post", false)};
  std::mt19937_64 rng(20261205);
  std::map<int64_t, int64_t> model;  // account -> expected balance
  std::map<std::string, std::tuple<int64_t, int64_t, std::string>> used;  // key -> values
  int conflicts = 0, replays = 0, refusals = 0;
  for (int i = 0; i < 300; ++i) {
    size_t a_index = rng() % accounts.size();
    int64_t amount = static_cast<int64_t>(rng() % 2'000'000) - 800'000;
    if (amount == 0) amount = 1;
    std::string key = std::string("k").append(std::to_string(rng() % 150));  // repeats
    std::string reason = (rng() % 4 == 0) ? "other" : "r";
    if (auto it = used.find(key); it != used.end() && rng() % 2 == 0) {
      // A retry of that movement, exactly.
      auto [account, old_amount, old_reason] = it->second;
      for (const AccountInfo& candidate : accounts) {
        if (candidate.id == account) a_index = &candidate - accounts.data();
      }
      amount = old_amount;
      reason = old_reason;
    }
    const AccountInfo& a = accounts[a_index];
    auto moved = Move(a.id, Money{amount}, key, reason);
    auto it = used.find(key);
    if (it != used.end()) {
      bool same = std::get<0>(it->second) == a.id && std::get<1>(it->second) == amount &&
                  std::get<2>(it->second) == reason;
      if (same) {
        ASSERT_TRUE(moved) << moved.error().message;
        EXPECT_TRUE(moved->replayed);
        ++replays;
      } else {
        ASSERT_FALSE(moved);
        EXPECT_EQ(moved.error().code, ErrorCode::kConflict);
        ++conflicts;
      }
      continue;
    }
    if (a.prepaid && model[a.id] + amount < 0) {
      ASSERT_FALSE(moved);
      EXPECT_EQ(moved.error().code, ErrorCode::kConflict);
      ++refusals;
      continue;
    }
    ASSERT_TRUE(moved) << moved.error().message;
    EXPECT_FALSE(moved->replayed);
    model[a.id] += amount;
    used[key] = {a.id, amount, reason};
    EXPECT_EQ(moved->balance.nano_usd, model[a.id]);
  }
  EXPECT_GT(conflicts, 0);
  EXPECT_GT(replays, 0);
  EXPECT_GT(refusals, 0);
  for (const AccountInfo& a : accounts) {
    EXPECT_EQ(Balance(a.id), model[a.id]);
    EXPECT_EQ(LedgerSum(a.id), model[a.id]);
    if (a.prepaid) {
      EXPECT_GE(Balance(a.id), 0);
    }
  }
  auto report = accounts_->CheckLedger();
  ASSERT_TRUE(report) << report.error().message;
  EXPECT_TRUE(report->ok());
  EXPECT_EQ(report->accounts_checked, 3);
}

TEST_F(AccountStorePg, RemovalBlockedByLeasesNotifiesAndSaysRetry) {
  AccountInfo a = MakeAccount("acme", true, Usd(10));
  Query("INSERT INTO credit_leases (replica_id, scope, owner_id, period_start, amount_nano_usd, expires_at) VALUES "
        "('r1:boot', 'credits', " + std::to_string(a.id) + ", 'epoch', 4000000000, now() + interval '1 minute'),"
        "('r2:boot', 'credits', " + std::to_string(a.id) + ", 'epoch', 3000000000, now() + interval '1 minute'),"
        "('r3:boot', 'credits', " + std::to_string(a.id) + ", 'epoch', 2000000000, now() - interval '1 second'),"
        "('r1:boot', 'key', " + std::to_string(a.id) + ", 'epoch', 2000000000, now() + interval '1 minute')");
  auto info = accounts_->GetAccount(a.id);
  ASSERT_TRUE(info);
  EXPECT_EQ(info->leased_credits, Usd(7));  // unexpired 'credits' leases only

  Listener listener(url());
  // 3 of 10 are not leased: removing 3 works, 3.000000001 does not.
  auto blocked = Move(a.id, Money{-3'000'000'001}, "remove-1");
  ASSERT_FALSE(blocked);
  EXPECT_EQ(blocked.error().code, ErrorCode::kConflict);
  EXPECT_NE(blocked.error().message.find("$7 "), std::string::npos) << blocked.error().message;
  EXPECT_NE(blocked.error().message.find("retry in a second"), std::string::npos) << blocked.error().message;
  EXPECT_TRUE(listener.Saw("account:" + std::to_string(a.id)));
  EXPECT_EQ(Balance(a.id), Usd(10).nano_usd);
  EXPECT_EQ(QueryInt("SELECT count(*) FROM ledger_entries"), 1);

  auto ok = Move(a.id, Usd(-3), "remove-2");
  ASSERT_TRUE(ok) << ok.error().message;
  EXPECT_EQ(ok->balance, Usd(7));

  // Once a replica returned its lease, the rest can go.
  Query("UPDATE credit_leases SET amount_nano_usd = 0 WHERE replica_id = 'r1:boot' AND scope = 'credits'");
  auto rest = Move(a.id, Usd(-4), "remove-3");
  ASSERT_TRUE(rest) << rest.error().message;
  EXPECT_EQ(rest->balance, Usd(3));
}

TEST_F(AccountStorePg, LedgerPagesNewestFirst) {
  AccountInfo a = MakeAccount("acme");
  AccountInfo other = MakeAccount("other");
  for (int i = 1; i <= 7; ++i) ASSERT_TRUE(Move(a.id, Money{i}, std::string("k").append(std::to_string(i))));
  ASSERT_TRUE(Move(other.id, Money{100}, "o1"));
  auto page = accounts_->ListLedger(a.id, 3);
  ASSERT_TRUE(page);
  ASSERT_EQ(page->size(), 3u);
  EXPECT_EQ((*page)[0].amount, Money{7});
  EXPECT_EQ((*page)[2].amount, Money{5});
  std::vector<int64_t> all;
  std::optional<int64_t> before;
  while (true) {
    auto p = accounts_->ListLedger(a.id, 3, before);
    ASSERT_TRUE(p);
    if (p->empty()) break;
    for (const auto& e : *p) {
      EXPECT_EQ(e.account_id, a.id);
      all.push_back(e.amount.nano_usd);
    }
    before = p->back().id;
  }
  EXPECT_EQ(all, (std::vector<int64_t>{7, 6, 5, 4, 3, 2, 1}));
  auto bad = accounts_->ListLedger(a.id, 0);
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().param, "limit");
  auto missing = accounts_->ListLedger(999999);
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error().code, ErrorCode::kNotFound);
}

TEST_F(AccountStorePg, CheckDetectsCorruptedBalanceAndSpent) {
  AccountInfo a = MakeAccount("a", true, Usd(3));
  AccountInfo b = MakeAccount("b", true, Usd(4));
  auto key = accounts_->CreateKey(NewKey{.account_id = a.id, .name = "k"});
  ASSERT_TRUE(key);
  auto clean = accounts_->CheckLedger();
  ASSERT_TRUE(clean) << clean.error().message;
  EXPECT_TRUE(clean->ok());
  EXPECT_EQ(clean->accounts_checked, 2);
  EXPECT_EQ(clean->keys_checked, 1);

  Query("UPDATE accounts SET balance_nano_usd = balance_nano_usd + 1 WHERE id = " + std::to_string(b.id));
  Query("UPDATE api_keys SET spent_nano_usd = 99 WHERE id = " + std::to_string(key->details.id));
  auto report = accounts_->CheckLedger();
  ASSERT_TRUE(report);
  EXPECT_FALSE(report->ok());
  ASSERT_EQ(report->account_mismatches.size(), 1u);
  EXPECT_EQ(report->account_mismatches[0].account_id, b.id);
  EXPECT_EQ(report->account_mismatches[0].balance, Money{Usd(4).nano_usd + 1});
  EXPECT_EQ(report->account_mismatches[0].ledger_sum, Usd(4));
  ASSERT_EQ(report->key_mismatches.size(), 1u);
  EXPECT_EQ(report->key_mismatches[0].key_id, key->details.id);
  EXPECT_EQ(report->key_mismatches[0].spent, Money{99});
  EXPECT_EQ(report->key_mismatches[0].usage_sum, Money{0});

  // A usage row of 99 makes the key consistent again.
  InsertUsage("(request_id, api_key_id, model, provider, upstream_model, status, cost_nano_usd) "
              "VALUES ('gen-1', " + std::to_string(key->details.id) + ", 'm', 'p', 'u', 200, 99)");
  report = accounts_->CheckLedger();
  ASSERT_TRUE(report);
  EXPECT_TRUE(report->key_mismatches.empty());
  EXPECT_EQ(report->account_mismatches.size(), 1u);
}

// ------------------------------------------------------------------ BYOK

TEST_F(AccountStorePg, StoresProviderKeysSealed) {
  AccountInfo a = MakeAccount("acme");
  AccountInfo b = MakeAccount("other");
  const std::string secret = "sk-proj-SECRETVALUEabcdefghijklmnop1234";
  Listener listener(url());
  auto set = accounts_->SetProviderKey(a.id, "openai", secret);
  ASSERT_TRUE(set) << set.error().message;
  EXPECT_EQ(set->provider, "openai");
  EXPECT_EQ(set->label, "sk-...1234");
  EXPECT_EQ(set->account_id, a.id);
  EXPECT_TRUE(listener.Saw("account:" + std::to_string(a.id)));

  // At rest: only the sealed form; it opens with the box and the row's
  // associated data, not with another row's.
  std::optional<std::string> hex = Query("SELECT encode(ciphertext, 'hex') FROM provider_keys");
  ASSERT_TRUE(hex);
  std::string sealed;
  for (size_t i = 0; i + 1 < hex->size(); i += 2) {
    sealed.push_back(static_cast<char>(std::stoi(hex->substr(i, 2), nullptr, 16)));
  }
  auto box = SecretBox::FromHex(kBoxKey);
  ASSERT_TRUE(box);
  auto opened = box->Open(sealed, ProviderKeyAssociatedData(a.id, "openai"));
  ASSERT_TRUE(opened) << opened.error().message;
  EXPECT_EQ(*opened, secret);
  EXPECT_FALSE(box->Open(sealed, ProviderKeyAssociatedData(b.id, "openai")));
  EXPECT_EQ(ProviderKeyAssociatedData(7, "openai"), "provider_keys:7:openai");
  EXPECT_EQ(QueryInt("SELECT count(*) FROM provider_keys WHERE row_to_json(provider_keys)::text LIKE '%SECRETVALUE%'"),
            0);

  // Replace, list (labels only), delete.
  ASSERT_TRUE(accounts_->SetProviderKey(a.id, "openai", "sk-new-key-000000000009999"));
  ASSERT_TRUE(accounts_->SetProviderKey(a.id, "anthropic", "sk-ant-0000000000000000abcd"));
  auto listed = accounts_->ListProviderKeys(a.id);
  ASSERT_TRUE(listed);
  ASSERT_EQ(listed->size(), 2u);
  EXPECT_EQ((*listed)[0].provider, "anthropic");
  EXPECT_EQ((*listed)[0].label, "sk-...abcd");
  EXPECT_EQ((*listed)[1].label, "sk-...9999");
  auto other = accounts_->ListProviderKeys(b.id);
  ASSERT_TRUE(other);
  EXPECT_TRUE(other->empty());
  auto deleted = accounts_->DeleteProviderKey(a.id, "openai");
  ASSERT_TRUE(deleted);
  EXPECT_TRUE(*deleted);
  deleted = accounts_->DeleteProviderKey(a.id, "openai");
  ASSERT_TRUE(deleted);
  EXPECT_FALSE(*deleted);
  EXPECT_EQ(QueryInt("SELECT count(*) FROM provider_keys"), 1);

  // Errors: bad provider id, bad secret (not echoed), unknown account.
  auto bad_provider = accounts_->SetProviderKey(a.id, "open ai", secret);
  ASSERT_FALSE(bad_provider);
  EXPECT_EQ(bad_provider.error().param, "provider");
  auto bad_secret = accounts_->SetProviderKey(a.id, "openai", "sk-abc\ndef-SECRET");
  ASSERT_FALSE(bad_secret);
  EXPECT_EQ(bad_secret.error().param, "key");
  EXPECT_EQ(bad_secret.error().message.find("SECRET"), std::string::npos);
  auto empty = accounts_->SetProviderKey(a.id, "openai", "");
  ASSERT_FALSE(empty);
  auto missing = accounts_->SetProviderKey(999999, "openai", secret);
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error().code, ErrorCode::kNotFound);
  EXPECT_EQ(accounts_->ListProviderKeys(999999).error().code, ErrorCode::kNotFound);
  EXPECT_EQ(accounts_->DeleteProviderKey(999999, "openai").error().code, ErrorCode::kNotFound);
}

TEST_F(AccountStorePg, ProviderKeysNeedASecretBox) {
  auto store = AccountStore::Connect(url());
  ASSERT_TRUE(store);
  AccountInfo a = MakeAccount("acme");
  auto set = (*store)->SetProviderKey(a.id, "openai", "sk-0123456789abcdef");
  ASSERT_FALSE(set);
  EXPECT_EQ(set.error().code, ErrorCode::kUnavailable);
  EXPECT_NE(set.error().message.find("TOLLGATE_SECRET_KEY"), std::string::npos);
  EXPECT_TRUE((*store)->ListProviderKeys(a.id));
}

// ------------------------------------------------------------------ key usage

TEST_F(AccountStorePg, KeyUsageSumsPeriodsAndCredits) {
  AccountInfo a = MakeAccount("acme", true, Usd(20));
  auto key = accounts_->CreateKey(NewKey{.account_id = a.id, .name = "k", .limit = Usd(5),
                                         .limit_reset = LimitReset::kDaily});
  auto other = accounts_->CreateKey(NewKey{.account_id = a.id, .name = "other"});
  ASSERT_TRUE(key && other);
  std::string id = std::to_string(key->details.id);
  std::string aid = std::to_string(a.id);
  // Rows now, at the start of the week and month, and long ago; one BYOK; one of another key.
  InsertUsage("(request_id, api_key_id, account_id, model, provider, upstream_model, status,"
        " cost_nano_usd, byok, provider_cost_nano_usd, created_at) VALUES "
        "('g-now', " + id + ", " + aid + ", 'm', 'p', 'u', 200, 100, false, NULL, now()),"
        "('g-byok', " + id + ", " + aid + ", 'm', 'p', 'u', 200, 5, true, 1000, now()),"
        "('g-week', " + id + ", " + aid + ", 'm', 'p', 'u', 200, 20, false, NULL, tollgate_period_start('weekly', now())),"
        "('g-month', " + id + ", " + aid + ", 'm', 'p', 'u', 200, 3, true, 300, tollgate_period_start('monthly', now())),"
        "('g-old', " + id + ", " + aid + ", 'm', 'p', 'u', 200, 7000, true, 9000, now() - interval '400 days'),"
        "('g-other', " + std::to_string(other->details.id) + ", " + aid + ", 'm', 'p', 'u', 200, 50000, false, NULL, now())");
  Query("UPDATE api_keys SET spent_nano_usd = 7128 WHERE id = " + id);
  Query("INSERT INTO period_usage (scope, owner_id, period_start, usage_nano_usd) VALUES "
        "('key', " + id + ", tollgate_period_start('daily', now()), 1000000000),"
        "('key', " + id + ", tollgate_period_start('daily', now() - interval '1 day'), 4000000000)");
  // Usage and refund entries in the ledger (the usage writer's), and a removal.
  Query("INSERT INTO ledger_entries (account_id, amount_nano_usd, kind, idempotency_key) VALUES "
        "(" + aid + ", -3000000000, 'usage', 'g-a'), (" + aid + ", -1000000000, 'usage', 'g-b'),"
        "(" + aid + ", 500000000, 'refund', 'g-b-refund')");
  Query("UPDATE accounts SET balance_nano_usd = balance_nano_usd - 3500000000 WHERE id = " + aid);
  ASSERT_TRUE(Move(a.id, Usd(-2), "rm"));

  auto u = accounts_->GetKeyUsage(key->details.id);
  ASSERT_TRUE(u) << u.error().message;
  EXPECT_EQ(u->key.id, key->details.id);
  EXPECT_EQ(u->account.id, a.id);
  EXPECT_EQ(u->usage_total, Money{7128});
  EXPECT_EQ(u->usage_daily.nano_usd,
            105 + (QueryInt("SELECT (tollgate_period_start('weekly', now()) = tollgate_period_start('daily', now()))::int") ? 20 : 0) +
                (QueryInt("SELECT (tollgate_period_start('monthly', now()) = tollgate_period_start('daily', now()))::int") ? 3 : 0));
  EXPECT_EQ(u->usage_weekly.nano_usd,
            125 + (QueryInt("SELECT (tollgate_period_start('monthly', now()) >= tollgate_period_start('weekly', now()))::int") ? 3 : 0));
  EXPECT_EQ(u->usage_monthly.nano_usd,
            108 + (QueryInt("SELECT (tollgate_period_start('weekly', now()) >= tollgate_period_start('monthly', now()))::int") ? 20 : 0));
  EXPECT_EQ(u->byok_usage_total, Money{10300});
  EXPECT_EQ(u->byok_usage_monthly, Money{1300});
  EXPECT_GE(u->byok_usage_daily, Money{1000});
  EXPECT_EQ(u->limit_period_usage, Usd(1));
  EXPECT_EQ(u->limit_remaining, Usd(4));
  EXPECT_EQ(u->total_credits, Usd(18));  // 20 granted, 2 removed
  EXPECT_EQ(u->total_usage, Money{3'500'000'000});
  EXPECT_EQ(u->total_credits.nano_usd - u->total_usage.nano_usd, u->account.balance.nano_usd);

  // Without a limit nothing remains to report; usage over the limit reports 0 left.
  auto o = accounts_->GetKeyUsage(other->details.id);
  ASSERT_TRUE(o);
  EXPECT_FALSE(o->limit_remaining);
  Query("UPDATE period_usage SET usage_nano_usd = 6000000000 WHERE owner_id = " + id +
        " AND period_start = tollgate_period_start('daily', now())");
  u = accounts_->GetKeyUsage(key->details.id);
  ASSERT_TRUE(u);
  EXPECT_EQ(u->limit_remaining, Money{0});
  EXPECT_EQ(accounts_->GetKeyUsage(999999).error().code, ErrorCode::kNotFound);

  // Retention dropped every raw usage row (stats.retention_days): the
  // periods, the BYOK sums and the ledger check come from the rollups.
  Query("UPDATE period_usage SET usage_nano_usd = 1000000000 WHERE owner_id = " + id +
        " AND period_start = tollgate_period_start('daily', now())");
  auto before = accounts_->GetKeyUsage(key->details.id);
  ASSERT_TRUE(before);
  Query("UPDATE api_keys SET spent_nano_usd = 50000 WHERE id = " + std::to_string(other->details.id));
  auto check = accounts_->CheckLedger();
  ASSERT_TRUE(check) << check.error().message;
  EXPECT_TRUE(check->key_mismatches.empty());
  Query("SELECT tollgate_drop_usage_partitions(now() + interval '10 days')");
  ASSERT_EQ(QueryInt("SELECT count(*) FROM usage_events"), 0);
  auto after = accounts_->GetKeyUsage(key->details.id);
  ASSERT_TRUE(after) << after.error().message;
  EXPECT_EQ(after->usage_daily, before->usage_daily);
  EXPECT_EQ(after->usage_weekly, before->usage_weekly);
  EXPECT_EQ(after->usage_monthly, before->usage_monthly);
  EXPECT_EQ(after->byok_usage_total, Money{10300});
  EXPECT_EQ(after->byok_usage_daily, before->byok_usage_daily);
  EXPECT_EQ(after->byok_usage_weekly, before->byok_usage_weekly);
  EXPECT_EQ(after->byok_usage_monthly, Money{1300});
  EXPECT_EQ(after->usage_total, Money{7128});
  check = accounts_->CheckLedger();
  ASSERT_TRUE(check) << check.error().message;
  EXPECT_TRUE(check->key_mismatches.empty());
}

TEST_F(AccountStorePg, ReconnectsAfterTheServerDroppedTheConnection) {
  AccountInfo a = MakeAccount("acme");
  KillConnections();
  EXPECT_TRUE(testing::WaitFor([&] { return static_cast<bool>(accounts_->ListAccounts()); }));
  // A credit movement whose connection broke is retried (it is idempotent).
  KillConnections();
  auto moved = Move(a.id, Usd(1), "after-kill");
  ASSERT_TRUE(moved) << moved.error().message;
  EXPECT_EQ(Balance(a.id), Usd(1).nano_usd);
}

TEST_F(AccountStorePg, ConnectFailsForAMissingDatabase) {
  auto store = AccountStore::Connect(url() + "_missing");
  ASSERT_FALSE(store);
  EXPECT_EQ(store.error().code, ErrorCode::kUnavailable);
}

// ------------------------------------------------------------------ helpers (no database)

TEST(AccountStoreHelpers, TimestampsRoundTrip) {
  using namespace std::chrono;
  TimePoint t = sys_days{year{2026} / 11 / 29} + 8h + 4min + 53s;
  EXPECT_EQ(FormatTimestamp(t), "2026-11-29T08:04:53Z");
  EXPECT_EQ(FormatTimestamp(t + 999ms), "2026-11-29T08:04:53Z");
  EXPECT_EQ(ParseTimestamp("2026-11-29T08:04:53Z"), t);
  EXPECT_EQ(ParseTimestamp("2026-11-29t08:04:53z"), t);
  EXPECT_EQ(ParseTimestamp("2026-11-29 08:04:53Z"), t);
  EXPECT_EQ(ParseTimestamp("2026-11-29T10:04:53+02:00"), t);
  EXPECT_EQ(ParseTimestamp("2026-11-29T05:34:53-02:30"), t);
  EXPECT_EQ(ParseTimestamp("2026-11-29T08:04:53.25Z"), t + 250ms);
  EXPECT_EQ(FormatTimestamp(sys_days{year{1969} / 12 / 31} + 23h + 59min + 59s + 500ms), "1969-12-31T23:59:59Z");
  for (std::string bad : {"", "2026-11-29", "2026-11-29T08:04:53", "2026-13-01T00:00:00Z", "2026-02-30T00:00:00Z",
                          "2026-11-29T24:00:00Z", "2026-11-29T08:04:53.Z", "2026-11-29T08:04:53Zx",
                          "2026-11-29T08:04:53+0200", "tomorrow"}) {
    EXPECT_FALSE(ParseTimestamp(bad)) << bad;
  }
}

TEST(AccountStoreHelpers, SecretEquals) {
  EXPECT_TRUE(SecretEquals("admin-token", "admin-token"));
  EXPECT_FALSE(SecretEquals("admin-token", "admin-tokem"));
  EXPECT_FALSE(SecretEquals("admin-token", "admin-token2"));
  EXPECT_FALSE(SecretEquals("", "x"));
  EXPECT_TRUE(SecretEquals("", ""));
}

}  // namespace
}  // namespace tollgate::billing
