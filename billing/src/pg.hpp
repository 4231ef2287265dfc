// Thin RAII layer over libpq (private to billing; libpq-fe.h stays out of the
// public headers). https://www.postgresql.org/docs/15/libpq.html
#pragma once

#include "tollgate/core/error.hpp"

#include <libpq-fe.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace tollgate::billing::internal {

struct PgConnDeleter {
  void operator()(PGconn* conn) const { PQfinish(conn); }
};
struct PgResultDeleter {
  void operator()(PGresult* result) const { PQclear(result); }
};
using PgConnPtr = std::unique_ptr<PGconn, PgConnDeleter>;
using PgResultPtr = std::unique_ptr<PGresult, PgResultDeleter>;

// Opens a blocking connection. Adds connect_timeout=10 and
// application_name=tollgate unless the URL sets them.
// Errors: kInvalidArgument (libpq cannot parse the URL; the message does not
// repeat it, since it may hold a password), kUnavailable (cannot connect).
Result<PgConnPtr> PgConnect(const std::string& database_url);

// Outcome of one statement.
struct PgOutcome {
  PgResultPtr result;
  std::string sqlstate;  // five characters, or empty when no server error (connection lost)
  std::string message;   // primary message only: DETAIL may quote row values
  bool success = false;  // PGRES_COMMAND_OK or PGRES_TUPLES_OK
  bool connection_bad = false;

  bool ok() const { return success; }
  // A data or constraint problem with the statement's values (SQLSTATE class
  // 22 or 23): retrying the same values cannot succeed.
  bool permanent() const;
  // SQLSTATE 42P01 undefined_table: a table the statement names does not
  // exist, which for billing's own statements means the schema was never
  // migrated (or only partly).
  bool undefined_table() const { return sqlstate == kUndefinedTable; }
  // The Error for a caller: kUnavailable when the connection is gone or the
  // server is shutting down / out of resources, kInternal otherwise. With
  // `schema_hint` (all callers but the migrator itself), an undefined_table
  // error says so and tells to run `tollgate migrate` (kSchemaMissingHint).
  Error ToError(std::string_view what, bool schema_hint = true) const;

  static constexpr std::string_view kUndefinedTable = "42P01";
};

// Appended to errors caused by a missing table.
inline constexpr std::string_view kSchemaMissingHint =
    "the database schema is missing or out of date: run `tollgate migrate`";

// Text-format parameter; nullopt is SQL NULL.
using PgParam = std::optional<std::string>;

// Runs `sql` (with $1.. placeholders when `params` is not empty; without
// params it may hold several statements).
PgOutcome PgExec(PGconn* conn, const std::string& sql, const std::vector<PgParam>& params = {});

// Convenience accessors for text-format results.
std::string_view PgText(const PGresult* result, int row, int column);
bool PgIsNull(const PGresult* result, int row, int column);
int64_t PgInt64(const PGresult* result, int row, int column);  // 0 for NULL
std::optional<int64_t> PgOptInt64(const PGresult* result, int row, int column);
std::optional<std::string> PgOptText(const PGresult* result, int row, int column);
bool PgBool(const PGresult* result, int row, int column);  // "t"

// Timestamps travel as integer microseconds since the Unix epoch, exactly:
// written as to_timestamp-free text ("2026-11-29 08:04:53.123456+00") and read
// as (extract(epoch from col) * 1000000)::bigint (numeric in PostgreSQL >= 14,
// so exact).
std::string PgTimestamp(std::chrono::system_clock::time_point time);
std::chrono::system_clock::time_point FromEpochMicros(int64_t micros);

// One connection re-opened on demand. Not thread-safe: callers hold a mutex.
class PgSession {
 public:
  explicit PgSession(std::string database_url) : url_(std::move(database_url)) {}

  // Opens the connection if there is none or it broke.
  Result<void> Ensure();
  PGconn* conn() const { return conn_.get(); }
  // Drops a broken connection so the next Ensure() reconnects.
  void DropIfBad();
  // Ensure(), then PgExec; if the connection was found broken and `idempotent`,
  // reconnects and runs it once more.
  PgOutcome Exec(const std::string& sql, const std::vector<PgParam>& params, bool idempotent);

 private:
  std::string url_;
  PgConnPtr conn_;
};

}  // namespace tollgate::billing::internal
