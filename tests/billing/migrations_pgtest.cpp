#include "tollgate/billing/migrations.hpp"

#include "pg_test_database.hpp"

#include <atomic>
#include <thread>
#include <vector>

namespace tollgate::billing {
namespace {

using MigrationsPg = testing::PgTest;

TEST_F(MigrationsPg, ApplyOnceThenNothing) {
  const int known = static_cast<int>(KnownMigrations().size());
  Result<int> first = ApplyMigrations(url());
  ASSERT_TRUE(first) << first.error().message;
  EXPECT_EQ(*first, known);
  Result<int> second = ApplyMigrations(url());
  ASSERT_TRUE(second) << second.error().message;
  EXPECT_EQ(*second, 0);

  EXPECT_EQ(QueryInt("SELECT count(*) FROM schema_migrations"), known);
  EXPECT_EQ(Query("SELECT name FROM schema_migrations WHERE version = 1"), "init");
  EXPECT_EQ(QueryInt("SELECT count(*) FROM schema_migrations WHERE applied_at IS NULL"), 0);
  EXPECT_EQ(QueryInt("SELECT count(*) FROM information_schema.tables WHERE table_name IN "
                     "('api_keys', 'usage_events')"),
            2);
  // Money columns are bigint, never floating point.
  EXPECT_EQ(Query("SELECT data_type FROM information_schema.columns WHERE table_name = "
                  "'usage_events' AND column_name = 'cost_nano_usd'"),
            "bigint");
  EXPECT_EQ(Query("SELECT data_type FROM information_schema.columns WHERE table_name = "
                  "'api_keys' AND column_name = 'spent_nano_usd'"),
            "bigint");
  EXPECT_EQ(QueryInt("SELECT count(*) FROM pg_indexes WHERE tablename = 'usage_events' AND "
                     "indexname IN ('usage_events_api_key_created_idx', "
                     "'usage_events_model_created_idx')"),
            2);
}

TEST_F(MigrationsPg, ConcurrentMigratorsApplyEachMigrationOnce) {
  const int known = static_cast<int>(KnownMigrations().size());
  std::atomic<int> total{0};
  std::atomic<int> errors{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < 4; ++i) {
    threads.emplace_back([&] {
      Result<int> applied = ApplyMigrations(url());
      if (applied) {
        total += *applied;
      } else {
        ++errors;
        ADD_FAILURE() << applied.error().message;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(errors.load(), 0);
  EXPECT_EQ(total.load(), known);
  EXPECT_EQ(QueryInt("SELECT count(*) FROM schema_migrations"), known);
}

// 007_responses applies to a database migrated up to 006 (every deployment
// before it): undo it, then migrate again.
TEST_F(MigrationsPg, ResponsesMigrationAppliesOnTopOf006) {
  Result<int> first = ApplyMigrations(url());
  ASSERT_TRUE(first) << first.error().message;
  EXPECT_EQ(Query("SELECT name FROM schema_migrations WHERE version = 7"), "responses");
  EXPECT_EQ(QueryInt("SELECT max(version) FROM schema_migrations"), 7);
  Query("DROP TABLE responses; DELETE FROM schema_migrations WHERE version = 7 RETURNING 1");
  EXPECT_EQ(QueryInt("SELECT max(version) FROM schema_migrations"), 6);
  Result<int> again = ApplyMigrations(url());
  ASSERT_TRUE(again) << again.error().message;
  EXPECT_EQ(*again, 1);
  EXPECT_EQ(Query("SELECT string_agg(column_name || ':' || data_type, ',' ORDER BY ordinal_position) FROM "
                  "information_schema.columns WHERE table_name = 'responses'"),
            "id:text,request_id:text,api_key_id:bigint,account_id:bigint,model:text,"
            "created_at:timestamp with time zone,expires_at:timestamp with time zone,response:json,context:json");
  EXPECT_EQ(QueryInt("SELECT count(*) FROM pg_indexes WHERE tablename = 'responses' AND "
                     "indexname = 'responses_expires_idx'"),
            1);
}

TEST_F(MigrationsPg, UnreachableServerIsUnavailable) {
  Result<int> applied = ApplyMigrations("postgresql://postgres@127.0.0.1:1/postgres?connect_timeout=2");
  ASSERT_FALSE(applied);
  EXPECT_EQ(applied.error().code, ErrorCode::kUnavailable);
}

TEST_F(MigrationsPg, MalformedUrlIsInvalidArgumentWithoutEchoingIt) {
  Result<int> applied = ApplyMigrations("postgresql://user:s3cret@host/db?no_such_option=s3cret");
  ASSERT_FALSE(applied);
  EXPECT_EQ(applied.error().code, ErrorCode::kInvalidArgument);
  EXPECT_EQ(applied.error().message.find("s3cret"), std::string::npos);
}

}  // namespace
}  // namespace tollgate::billing
