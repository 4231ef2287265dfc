#include "tollgate/billing/migrations.hpp"

#include "embedded_migrations.hpp"

#include <gtest/gtest.h>

#include <regex>
#include <string>
#include <string_view>

namespace tollgate::billing {
namespace {

TEST(Migrations, AreEmbeddedInAscendingOrder) {
  std::vector<MigrationInfo> known = KnownMigrations();
  ASSERT_FALSE(known.empty());
  EXPECT_EQ(known[0].version, 1);
  EXPECT_EQ(known[0].name, "init");
  for (size_t i = 1; i < known.size(); ++i) EXPECT_LT(known[i - 1].version, known[i].version);
}

TEST(Migrations, EmbedTheSqlText) {
  auto embedded = internal::EmbeddedMigrations();
  ASSERT_FALSE(embedded.empty());
  std::string_view init = embedded[0].sql;
  EXPECT_NE(init.find("CREATE TABLE api_keys"), std::string_view::npos);
  EXPECT_NE(init.find("CREATE TABLE usage_events"), std::string_view::npos);
  // Money is integer nano-USD: no floating-point column type in any table
  // (functions may compute in float8, e.g. the latency sketch's quantiles).
  const std::regex float_type(R"(\b(real|float[48]?|double\s+precision)\b)", std::regex::icase);
  const std::regex table_statement(R"(^\s*(CREATE|ALTER)\s+TABLE\b)", std::regex::icase);
  for (const auto& m : embedded) {
    std::string code = std::regex_replace(std::string(m.sql), std::regex("--[^\n]*"), "");
    code = std::regex_replace(code, std::regex(R"(\$(q?)\$[\s\S]*?\$\1\$)"), "");  // function bodies
    size_t start = 0;
    while (start < code.size()) {
      size_t end = code.find(';', start);
      if (end == std::string::npos) end = code.size();
      const std::string statement = code.substr(start, end - start);
      if (std::regex_search(statement, table_statement)) {
        EXPECT_FALSE(std::regex_search(statement, float_type)) << m.name << ": " << statement;
      }
      start = end + 1;
    }
  }
}

}  // namespace
}  // namespace tollgate::billing
