#include "tollgate/billing/migrations.hpp"

#include "embedded_migrations.hpp"
#include "log_internal.hpp"
#include "pg.hpp"

#include <set>

namespace tollgate::billing {
namespace {

using internal::PgExec;
using internal::PgOutcome;

// Key of the session-level advisory lock that serialises migrators: the
// ASCII bytes of "tollgate" as a bigint. Any constant works as long as every
// migrator uses the same one.
constexpr int64_t kMigrationLockKey = 0x746F6C6C67617465;

std::string MigrationLabel(const internal::EmbeddedMigration& m) {
  char version[16];
  std::snprintf(version, sizeof version, "%03d", m.version);
  return std::string(version) + "_" + m.name;
}

}  // namespace

std::vector<MigrationInfo> KnownMigrations() {
  std::vector<MigrationInfo> out;
  for (const auto& m : internal::EmbeddedMigrations()) out.push_back({m.version, m.name});
  return out;
}

Result<int> ApplyMigrations(const std::string& database_url) {
  auto connected = internal::PgConnect(database_url);
  if (!connected) return connected.error();
  // The lock belongs to this session: it is released by the explicit unlock
  // below or, on any early return, when the connection closes.
  internal::PgConnPtr conn = std::move(*connected);
  PGconn* c = conn.get();

  PgOutcome locked = PgExec(c, "SELECT pg_advisory_lock(" + std::to_string(kMigrationLockKey) + ")");
  if (!locked.ok()) return locked.ToError("acquiring the migration lock");

  // Created under the lock: concurrent CREATE TABLE IF NOT EXISTS can still
  // fail with a unique violation on pg_type.
  PgOutcome created = PgExec(c,
      "CREATE TABLE IF NOT EXISTS schema_migrations ("
      " version int PRIMARY KEY,"
      " name text NOT NULL,"
      " applied_at timestamptz NOT NULL DEFAULT now())");
  if (!created.ok()) return created.ToError("creating schema_migrations");

  PgOutcome applied = PgExec(c, "SELECT version FROM schema_migrations");
  if (!applied.ok()) return applied.ToError("reading schema_migrations");
  std::set<int64_t> done;
  for (int row = 0; row < PQntuples(applied.result.get()); ++row) {
    done.insert(internal::PgInt64(applied.result.get(), row, 0));
  }

  int count = 0;
  for (const auto& m : internal::EmbeddedMigrations()) {
    if (done.contains(m.version)) continue;
    std::string label = MigrationLabel(m);
    PgOutcome begun = PgExec(c, "BEGIN");
    // No "run tollgate migrate" hint below: this is the migrator, and a missing
    // table here is a bug in the migration itself.
    if (!begun.ok()) return begun.ToError("migration " + label, /*schema_hint=*/false);
    PgOutcome ran = PgExec(c, m.sql);
    if (ran.ok()) {
      ran = PgExec(c, "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                   {std::to_string(m.version), std::string(m.name)});
    }
    if (ran.ok()) ran = PgExec(c, "COMMIT");
    if (!ran.ok()) {
      if (!ran.connection_bad) PgExec(c, "ROLLBACK");
      return ran.ToError("migration " + label, /*schema_hint=*/false);
    }
    internal::Log(LogLevel::kInfo, "applied migration " + label);
    ++count;
  }

  PgExec(c, "SELECT pg_advisory_unlock(" + std::to_string(kMigrationLockKey) + ")");
  return count;
}

}  // namespace tollgate::billing
