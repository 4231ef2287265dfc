// PgOutcome::ToError without a database: error codes and the
// "run tollgate migrate" hint for a missing table (SQLSTATE 42P01).
#include "pg.hpp"

#include <gtest/gtest.h>

#include <string>

namespace tollgate::billing::internal {
namespace {

PgOutcome Failed(std::string sqlstate, std::string message) {
  PgOutcome out;
  out.sqlstate = std::move(sqlstate);
  out.message = std::move(message);
  return out;
}

TEST(PgError, UndefinedTableSaysToRunMigrate) {
  PgOutcome out = Failed("42P01", "relation \"api_keys\" does not exist");
  EXPECT_TRUE(out.undefined_table());
  Error e = out.ToError("loading API keys");
  EXPECT_EQ(e.code, ErrorCode::kInternal);
  EXPECT_NE(e.message.find("loading API keys"), std::string::npos) << e.message;
  EXPECT_NE(e.message.find("42P01"), std::string::npos) << e.message;
  EXPECT_NE(e.message.find("run `tollgate migrate`"), std::string::npos) << e.message;
}

TEST(PgError, TheMigratorItselfGetsNoHint) {
  Error e = Failed("42P01", "relation \"x\" does not exist").ToError("migration 2", false);
  EXPECT_EQ(e.message.find("tollgate migrate"), std::string::npos) << e.message;
}

TEST(PgError, OtherErrorsGetNoHint) {
  for (const char* state : {"42703", "42P07", "23505", "08006", "57P01", ""}) {
    PgOutcome out = Failed(state, "something");
    EXPECT_FALSE(out.undefined_table()) << state;
    EXPECT_EQ(out.ToError("x").message.find("tollgate migrate"), std::string::npos) << state;
  }
  EXPECT_EQ(Failed("08006", "gone").ToError("x").code, ErrorCode::kUnavailable);
  EXPECT_EQ(Failed("", "gone").ToError("x").code, ErrorCode::kUnavailable);
  EXPECT_EQ(Failed("42703", "no column").ToError("x").code, ErrorCode::kInternal);
}

}  // namespace
}  // namespace tollgate::billing::internal
