#include "pg.hpp"

#include "tollgate/core/text.hpp"

#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace tollgate::billing::internal {
namespace {

// libpq messages end in "\n" and may span lines ("\n\tIs the server running");
// log lines should not.
std::string OneLine(const char* text) {
  std::string out = text ? text : "";
  for (char& c : out) {
    if (c == '\n' || c == '\t' || c == '\r') c = ' ';
  }
  while (!out.empty() && out.back() == ' ') out.pop_back();
  return out;
}

// Server NOTICEs ("relation ... already exists, skipping") are expected chatter;
// libpq's default processor would print them on stderr.
void IgnoreNotice(void*, const char*) {}

}  // namespace

Result<PgConnPtr> PgConnect(const std::string& database_url) {
  char* parse_error = nullptr;
  PQconninfoOption* options = PQconninfoParse(database_url.c_str(), &parse_error);
  if (options == nullptr) {
    // libpq's parse message can quote fragments of the URL, password included.
    if (parse_error != nullptr) PQfreemem(parse_error);
    return Error{ErrorCode::kInvalidArgument,
                 "database URL is not a valid libpq connection string or URI", {}, {}};
  }
  bool has_timeout = std::getenv("PGCONNECT_TIMEOUT") != nullptr;
  bool has_app_name = std::getenv("PGAPPNAME") != nullptr;
  bool has_encoding = std::getenv("PGCLIENTENCODING") != nullptr;
  for (PQconninfoOption* o = options; o->keyword != nullptr; ++o) {
    if (o->val == nullptr || *o->val == '\0') continue;
    if (std::strcmp(o->keyword, "connect_timeout") == 0) has_timeout = true;
    if (std::strcmp(o->keyword, "application_name") == 0) has_app_name = true;
    if (std::strcmp(o->keyword, "client_encoding") == 0) has_encoding = true;
  }
  PQconninfoFree(options);

  std::vector<const char*> keywords;
  std::vector<const char*> values;
  // Without a timeout libpq waits for an unreachable host as long as the OS
  // does (minutes), which would stall background refreshes.
  if (!has_timeout) keywords.push_back("connect_timeout"), values.push_back("10");
  if (!has_app_name) keywords.push_back("application_name"), values.push_back("tollgate");
  if (!has_encoding) keywords.push_back("client_encoding"), values.push_back("UTF8");
  // expand_dbname = 1: the URL is expanded in place of this entry.
  keywords.push_back("dbname");
  values.push_back(database_url.c_str());
  keywords.push_back(nullptr);
  values.push_back(nullptr);

  PgConnPtr conn(PQconnectdbParams(keywords.data(), values.data(), /*expand_dbname=*/1));
  if (conn == nullptr) {
    return Error{ErrorCode::kUnavailable, "cannot connect to the database: out of memory", {}, {}};
  }
  if (PQstatus(conn.get()) != CONNECTION_OK) {
    return Error{ErrorCode::kUnavailable,
                 "cannot connect to the database: " + OneLine(PQerrorMessage(conn.get())), {}, {}};
  }
  PQsetNoticeProcessor(conn.get(), IgnoreNotice, nullptr);
  return conn;
}

bool PgOutcome::permanent() const {
  return sqlstate.size() == 5 && (sqlstate.starts_with("22") || sqlstate.starts_with("23"));
}

Error PgOutcome::ToError(std::string_view what, bool schema_hint) const {
  bool unavailable = connection_bad || sqlstate.empty() || sqlstate.starts_with("08") ||
                     sqlstate.starts_with("40") || sqlstate.starts_with("53") ||
                     sqlstate.starts_with("57") || sqlstate.starts_with("58");
  std::string text = std::string(what) + ": " + message;
  if (!sqlstate.empty()) text += " (SQLSTATE " + sqlstate + ")";
  if (schema_hint && undefined_table()) text += "; " + std::string(kSchemaMissingHint);
  return Error{unavailable ? ErrorCode::kUnavailable : ErrorCode::kInternal, std::move(text), {}, {}};
}

PgOutcome PgExec(PGconn* conn, const std::string& sql, const std::vector<PgParam>& params) {
  PgOutcome out;
  if (conn == nullptr) {
    out.connection_bad = true;
    out.message = "no database connection";
    return out;
  }
  if (params.empty()) {
    out.result.reset(PQexec(conn, sql.c_str()));
  } else {
    std::vector<const char*> values;
    values.reserve(params.size());
    for (const PgParam& p : params) values.push_back(p ? p->c_str() : nullptr);
    out.result.reset(PQexecParams(conn, sql.c_str(), static_cast<int>(params.size()),
                                  /*paramTypes=*/nullptr, values.data(),
                                  /*paramLengths=*/nullptr, /*paramFormats=*/nullptr,
                                  /*resultFormat=*/0));
  }
  out.connection_bad = PQstatus(conn) == CONNECTION_BAD;
  if (out.result == nullptr) {
    out.message = OneLine(PQerrorMessage(conn));
    if (out.message.empty()) out.message = "no result from the database";
    return out;
  }
  ExecStatusType status = PQresultStatus(out.result.get());
  if (status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK) {
    out.success = true;
    return out;
  }
  const char* state = PQresultErrorField(out.result.get(), PG_DIAG_SQLSTATE);
  const char* primary = PQresultErrorField(out.result.get(), PG_DIAG_MESSAGE_PRIMARY);
  out.sqlstate = state ? state : "";
  out.message = primary ? OneLine(primary) : OneLine(PQresultErrorMessage(out.result.get()));
  if (out.message.empty()) out.message = PQresStatus(status);
  return out;
}

std::string_view PgText(const PGresult* result, int row, int column) {
  return std::string_view(PQgetvalue(result, row, column),
                          static_cast<size_t>(PQgetlength(result, row, column)));
}

bool PgIsNull(const PGresult* result, int row, int column) {
  return PQgetisnull(result, row, column) != 0;
}

int64_t PgInt64(const PGresult* result, int row, int column) {
  if (PgIsNull(result, row, column)) return 0;
  return std::strtoll(PQgetvalue(result, row, column), nullptr, 10);
}

std::optional<int64_t> PgOptInt64(const PGresult* result, int row, int column) {
  if (PgIsNull(result, row, column)) return std::nullopt;
  return PgInt64(result, row, column);
}

std::optional<std::string> PgOptText(const PGresult* result, int row, int column) {
  if (PgIsNull(result, row, column)) return std::nullopt;
  return std::string(PgText(result, row, column));
}

bool PgBool(const PGresult* result, int row, int column) {
  return !PgIsNull(result, row, column) && PQgetvalue(result, row, column)[0] == 't';
}

std::string PgTimestamp(std::chrono::system_clock::time_point time) {
  return FormatUtc(time, " ", 6, "+00");
}

std::chrono::system_clock::time_point FromEpochMicros(int64_t micros) {
  return std::chrono::system_clock::time_point(
      std::chrono::duration_cast<std::chrono::system_clock::duration>(
          std::chrono::microseconds(micros)));
}

Result<void> PgSession::Ensure() {
  if (conn_ != nullptr && PQstatus(conn_.get()) == CONNECTION_OK) return {};
  conn_.reset();
  auto conn = PgConnect(url_);
  if (!conn) return conn.error();
  conn_ = std::move(*conn);
  return {};
}

void PgSession::DropIfBad() {
  if (conn_ != nullptr && PQstatus(conn_.get()) != CONNECTION_OK) conn_.reset();
}

PgOutcome PgSession::Exec(const std::string& sql, const std::vector<PgParam>& params,
                          bool idempotent) {
  for (int attempt = 0;; ++attempt) {
    bool had_connection = conn_ != nullptr;
    if (auto ensured = Ensure(); !ensured) {
      PgOutcome out;
      out.connection_bad = true;
      out.message = ensured.error().message;
      return out;
    }
    PgOutcome out = PgExec(conn_.get(), sql, params);
    if (out.success || !out.connection_bad) return out;
    conn_.reset();
    // Retry once, and only on a connection we had before (a fresh one that
    // broke at once will not do better) and only when re-running is harmless.
    if (!idempotent || !had_connection || attempt > 0) return out;
  }
}

}  // namespace tollgate::billing::internal
