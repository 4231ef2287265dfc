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
  // Money is integer nano-USD: no floating-point column type anywhere.
  const std::regex float_type(R"(\b(real|float[48]?|double\s+precision)\b)", std::regex::icase);
  for (const auto& m : embedded) {
    std::string code = std::regex_replace(std::string(m.sql), std::regex("--[^\n]*"), "");
    EXPECT_FALSE(std::regex_search(code, float_type)) << m.name;
  }
}

}  // namespace
}  // namespace tollgate::billing
