#include "pg_test_database.hpp"

#include "tollgate/billing/migrations.hpp"

#include <libpq-fe.h>

#include <cstdlib>
#include <memory>
#include <random>

namespace tollgate::billing::testing {
namespace {

constexpr const char* kVariable = "TOLLGATE_TEST_DATABASE_URL";

struct ConnCloser {
  void operator()(PGconn* c) const { PQfinish(c); }
};
struct ResultCloser {
  void operator()(PGresult* r) const { PQclear(r); }
};
using Conn = std::unique_ptr<PGconn, ConnCloser>;
using Res = std::unique_ptr<PGresult, ResultCloser>;

// Same server, other database: swaps the path of a URI, or appends dbname=
// to a key=value string (a later keyword wins).
std::string WithDatabase(const std::string& server_url, const std::string& db) {
  size_t scheme = server_url.find("://");
  if (scheme == std::string::npos) return server_url + " dbname=" + db;
  size_t path = server_url.find_first_of("/?", scheme + 3);
  if (path == std::string::npos) return server_url + "/" + db;
  if (server_url[path] == '?') return server_url.substr(0, path) + "/" + db + server_url.substr(path);
  size_t query = server_url.find('?', path);
  std::string rest = query == std::string::npos ? "" : server_url.substr(query);
  return server_url.substr(0, path) + "/" + db + rest;
}

std::string RandomSuffix() {
  std::random_device rd;
  std::mt19937_64 gen((static_cast<uint64_t>(rd()) << 32) ^ rd());
  static constexpr char kHex[] = "0123456789abcdef";
  std::string s;
  for (int i = 0; i < 12; ++i) s.push_back(kHex[gen() % 16]);
  return s;
}

Conn Connect(const std::string& url, std::string* error) {
  Conn c(PQconnectdb(url.c_str()));
  if (PQstatus(c.get()) != CONNECTION_OK) {
    *error = PQerrorMessage(c.get());
    return nullptr;
  }
  return c;
}

}  // namespace

void PgTest::SetUp() {
  const char* value = std::getenv(kVariable);
  if (value == nullptr || *value == '\0') {
    FAIL() << kVariable << " is not set. These integration tests need a running PostgreSQL "
           << "server: export " << kVariable
           << "=postgresql://postgres@127.0.0.1:PORT/postgres (a superuser that may CREATE "
           << "DATABASE; scripts/test.sh does this).";
  }
  server_url_ = value;
  name_ = "tg_test_" + RandomSuffix();
  Admin("CREATE DATABASE " + name_);
  if (HasFatalFailure() || HasFailure()) {
    FAIL() << "cannot create a test database on the server named by " << kVariable;
  }
  created_ = true;
  url_ = WithDatabase(server_url_, name_);
}

void PgTest::TearDown() {
  if (created_) Admin("DROP DATABASE IF EXISTS " + name_ + " WITH (FORCE)");
}

void PgTest::Admin(const std::string& sql) {
  std::string error;
  Conn c = Connect(server_url_, &error);
  if (c == nullptr) {
    ADD_FAILURE() << "cannot connect to " << kVariable << ": " << error;
    return;
  }
  Res r(PQexec(c.get(), sql.c_str()));
  if (PQresultStatus(r.get()) != PGRES_COMMAND_OK && PQresultStatus(r.get()) != PGRES_TUPLES_OK) {
    ADD_FAILURE() << sql << ": " << PQerrorMessage(c.get());
  }
}

std::optional<std::string> PgTest::Query(const std::string& sql) {
  std::string error;
  Conn c = Connect(url_, &error);
  if (c == nullptr) {
    ADD_FAILURE() << "cannot connect to the test database: " << error;
    return std::nullopt;
  }
  Res r(PQexec(c.get(), sql.c_str()));
  if (PQresultStatus(r.get()) != PGRES_COMMAND_OK && PQresultStatus(r.get()) != PGRES_TUPLES_OK) {
    ADD_FAILURE() << sql << ": " << PQerrorMessage(c.get());
    return std::nullopt;
  }
  if (PQntuples(r.get()) == 0 || PQnfields(r.get()) == 0 || PQgetisnull(r.get(), 0, 0)) {
    return std::nullopt;
  }
  return std::string(PQgetvalue(r.get(), 0, 0));
}

int64_t PgTest::QueryInt(const std::string& sql) {
  std::optional<std::string> v = Query(sql);
  if (!v) {
    ADD_FAILURE() << "no value from: " << sql;
    return -1;
  }
  return std::strtoll(v->c_str(), nullptr, 10);
}

void PgTest::BeginOutage() {
  Admin("ALTER DATABASE " + name_ + " ALLOW_CONNECTIONS false");
  KillConnections();
}

void PgTest::EndOutage() { Admin("ALTER DATABASE " + name_ + " ALLOW_CONNECTIONS true"); }

void PgTest::KillConnections() {
  Admin("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '" + name_ +
        "' AND pid <> pg_backend_pid()");
}

void PgTest::Migrate() {
  Result<int> applied = ApplyMigrations(url_);
  ASSERT_TRUE(applied) << applied.error().message;
}

}  // namespace tollgate::billing::testing
