// A fresh PostgreSQL database per test, on the server named by
// TOLLGATE_TEST_DATABASE_URL (libpq URI or connection string of a superuser on
// that server, e.g. postgresql://postgres@127.0.0.1:5433/postgres; the test
// script starts the server and exports it). Without the variable every test
// fails with a message saying so: these tests are never skipped silently.
#pragma once

#include "tollgate/billing/account_store.hpp"

#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <thread>

namespace tollgate::billing::testing {

class PgTest : public ::testing::Test {
 protected:
  // Creates tg_test_<random> and sets url(); fails the test if the variable is
  // unset or the server unreachable.
  void SetUp() override;
  // Drops the database (WITH (FORCE): disconnects what the test left open).
  void TearDown() override;

  // libpq URL of this test's database, in the same form as the variable.
  const std::string& url() const { return url_; }
  const std::string& database_name() const { return name_; }

  // Runs `sql` on this test's database (new connection); returns the first
  // column of the first row, or nullopt for no rows / NULL. Fails the test
  // (ADD_FAILURE) on error.
  std::optional<std::string> Query(const std::string& sql);
  int64_t QueryInt(const std::string& sql);

  // Simulates a database outage for this test's database only: refuses new
  // connections and terminates the open ones. EndOutage lets them in again.
  void BeginOutage();
  void EndOutage();
  // Terminates this database's open connections (a server restart, as seen by
  // clients) without refusing new ones.
  void KillConnections();

  // Applies the migrations to this test's database (ASSERTs success).
  void Migrate();

 private:
  void Admin(const std::string& sql);

  std::string server_url_;  // the variable's value
  std::string name_;
  std::string url_;
  bool created_ = false;
};

// A PgTest whose database is migrated.
class MigratedPgTest : public PgTest {
 protected:
  void SetUp() override {
    PgTest::SetUp();
    if (HasFatalFailure()) return;
    Migrate();
  }
};

// A key made through AccountStore: its id and its plaintext (shown once).
struct TestKey {
  int64_t account_id = 0;
  int64_t id = 0;
  std::string plaintext;
};

// Creates a postpaid account named `name` (no budget) and in it a key of the
// same name with spending limit `limit` (nullopt = unlimited), through
// `store`. ADD_FAILUREs and returns a TestKey of zeros if either fails.
inline TestKey CreateAccountAndKey(AccountStore& store, const std::string& name,
                                   std::optional<Money> limit = std::nullopt) {
  auto account = store.CreateAccount(NewAccount{.name = name, .prepaid = false});
  if (!account) {
    ADD_FAILURE() << "creating account " << name << ": " << account.error().message;
    return {};
  }
  auto key = store.CreateKey(NewKey{.account_id = account->id, .name = name, .limit = limit});
  if (!key) {
    ADD_FAILURE() << "creating key " << name << ": " << key.error().message;
    return {};
  }
  return TestKey{account->id, key->details.id, std::move(key->plaintext)};
}

// Polls `condition` every 10 ms for up to `timeout_ms`; true once it holds.
template <class F>
bool WaitFor(F condition, int timeout_ms = 5000) {
  for (int waited = 0;; waited += 10) {
    if (condition()) return true;
    if (waited >= timeout_ms) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

}  // namespace tollgate::billing::testing
