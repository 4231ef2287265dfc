// Database schema migrations, embedded in the library at build time.
//
// The SQL files migrations/NNN_name.sql are read by CMake at configure time
// (billing/cmake/EmbedMigrations.cmake) and compiled in; nothing is read from
// disk at run time. Applied migrations are recorded in
//   schema_migrations(version int PRIMARY KEY, name text NOT NULL,
//                     applied_at timestamptz NOT NULL DEFAULT now())
#pragma once

#include "tollgate/core/error.hpp"

#include <string>
#include <vector>

namespace tollgate::billing {

struct MigrationInfo {
  int version = 0;   // NNN from the file name, >= 1
  std::string name;  // the file name's part after "NNN_", without ".sql"
};

// The embedded migrations in ascending version order. Never empty.
std::vector<MigrationInfo> KnownMigrations();

// Applies every embedded migration not yet recorded in schema_migrations, in
// ascending version order, each in its own transaction together with its
// schema_migrations row. Concurrent callers (several replicas starting at
// once) are serialised by a session-level pg_advisory_lock, so each migration
// is applied exactly once; the lock is released before returning.
//
// `database_url` is a libpq connection string or URI
// (https://www.postgresql.org/docs/15/libpq-connect.html#LIBPQ-CONNSTRING).
// Returns how many migrations this call applied (0 when already up to date, so
// calling it twice is harmless). Stops at the first failing migration: the ones
// before it stay applied, that one is rolled back.
// Errors: kInvalidArgument (unparsable URL), kUnavailable (cannot connect or
// connection lost), kInternal (a migration's SQL failed; the message names the
// migration and the server's message, never the URL).
// Blocking; thread-safe (uses its own connection).
Result<int> ApplyMigrations(const std::string& database_url);

}  // namespace tollgate::billing
