// A reachable database that was never migrated (or lost a table): every
// component fails with an error that says to run `tollgate migrate`
// (SQLSTATE 42P01 undefined_table), instead of an opaque SQL error or, for
// the usage recorder, rows queued for a table that is not there.
#include "pg_test_database.hpp"
#include "tollgate/billing/account_store.hpp"
#include "tollgate/billing/generation_store.hpp"
#include "tollgate/billing/key_cache.hpp"
#include "tollgate/billing/usage_recorder.hpp"

#include <string>

namespace tollgate::billing {
namespace {

class SchemaMissingPg : public testing::PgTest {};

// The error a caller gets for a missing schema.
void ExpectRunMigrate(const Error& error) {
  EXPECT_EQ(error.code, ErrorCode::kInternal) << error.message;
  EXPECT_NE(error.message.find("run `tollgate migrate`"), std::string::npos) << error.message;
  EXPECT_NE(error.message.find("42P01"), std::string::npos) << error.message;
}

TEST_F(SchemaMissingPg, KeyCacheStartSaysToRunMigrate) {
  auto cache = KeyCache::Start(url(), 100);
  ASSERT_FALSE(cache);
  ExpectRunMigrate(cache.error());
  EXPECT_NE(cache.error().message.find("api_keys"), std::string::npos) << cache.error().message;
}

TEST_F(SchemaMissingPg, AccountStoreOperationsSayToRunMigrate) {
  auto store = AccountStore::Connect(url());  // connecting checks no table
  ASSERT_TRUE(store) << store.error().message;
  AccountStore& s = **store;
  auto account = s.CreateAccount(NewAccount{.name = "acme"});
  ASSERT_FALSE(account);
  ExpectRunMigrate(account.error());
  auto accounts = s.ListAccounts();
  ASSERT_FALSE(accounts);
  ExpectRunMigrate(accounts.error());
  auto created = s.CreateKey(NewKey{.account_id = 1, .name = "alice"});
  ASSERT_FALSE(created);
  ExpectRunMigrate(created.error());
  auto listed = s.ListKeys();
  ASSERT_FALSE(listed);
  ExpectRunMigrate(listed.error());
  auto revoked = s.RevokeKey(1);
  ASSERT_FALSE(revoked);
  ExpectRunMigrate(revoked.error());
  auto limited = s.UpdateKey(1, KeyChanges{.limit = std::optional<Money>(Money{1})});
  ASSERT_FALSE(limited);
  ExpectRunMigrate(limited.error());
  auto moved = s.MoveCredits(CreditMovement{1, Money{1}, "test", "k1"});
  ASSERT_FALSE(moved);
  ExpectRunMigrate(moved.error());

  // Once migrated, the same connection works.
  Migrate();
  testing::TestKey key = testing::CreateAccountAndKey(s, "alice");
  EXPECT_GT(key.id, 0);
  EXPECT_FALSE(key.plaintext.empty());
}

TEST_F(SchemaMissingPg, UsageRecorderStartSaysToRunMigrate) {
  auto recorder = UsageRecorder::Start(url(), 100, 10);
  ASSERT_FALSE(recorder);
  ExpectRunMigrate(recorder.error());
}

TEST_F(SchemaMissingPg, UsageRecorderStartChecksUsageEventsToo) {
  Migrate();
  Query("DROP TABLE usage_events CASCADE");
  auto recorder = UsageRecorder::Start(url(), 100, 10);
  ASSERT_FALSE(recorder);
  ExpectRunMigrate(recorder.error());
  EXPECT_NE(recorder.error().message.find("usage_events"), std::string::npos)
      << recorder.error().message;
}

TEST_F(SchemaMissingPg, GenerationStoreSaysToRunMigrate) {
  auto store = GenerationStore::Connect(url());
  ASSERT_TRUE(store) << store.error().message;
  auto found = (*store)->Find("gen-1", 1);
  ASSERT_FALSE(found);
  ExpectRunMigrate(found.error());
}

TEST_F(SchemaMissingPg, EverythingStartsOnceMigrated) {
  Migrate();
  auto cache = KeyCache::Start(url(), 100);
  EXPECT_TRUE(cache) << cache.error().message;
  auto recorder = UsageRecorder::Start(url(), 100, 10);
  EXPECT_TRUE(recorder) << recorder.error().message;
}

}  // namespace
}  // namespace tollgate::billing
