#include "tollgate/billing/response_store.hpp"

#include "pg.hpp"
#include "response_prune.hpp"

#include <condition_variable>
#include <mutex>
#include <vector>

namespace tollgate::billing {

using internal::PgOutcome;
using internal::PgSession;

namespace internal {

Result<int64_t> PruneExpiredResponses(PgSession& session, std::chrono::system_clock::time_point now) {
  const std::string sql =
      "WITH doomed AS (SELECT id FROM responses WHERE expires_at <= $1::timestamptz"
      " ORDER BY expires_at LIMIT " + std::to_string(kResponsePruneBatch) + " FOR UPDATE SKIP LOCKED),"
      " deleted AS (DELETE FROM responses r USING doomed d WHERE r.id = d.id RETURNING 1)"
      " SELECT count(*) FROM deleted";
  const std::string at = PgTimestamp(now);
  int64_t total = 0;
  for (;;) {
    PgOutcome out = session.Exec(sql, {at}, /*idempotent=*/true);
    if (!out.ok()) {
      session.DropIfBad();
      return out.ToError("pruning expired responses");
    }
    const int64_t n = PgInt64(out.result.get(), 0, 0);
    total += n;
    if (n < kResponsePruneBatch) return total;
  }
}

}  // namespace internal

namespace {

// SQLSTATEs (PostgreSQL 15 manual, appendix A).
constexpr std::string_view kUniqueViolation = "23505";
constexpr std::string_view kForeignKeyViolation = "23503";

}  // namespace

struct ResponseStore::Impl {
  std::string url;
  int max_connections = 1;
  std::mutex mutex;
  std::condition_variable available;
  std::vector<std::unique_ptr<PgSession>> idle;  // guarded by mutex
  int opened = 0;                                 // sessions in existence, idle or leased; guarded by mutex

  // One pooled session for the duration of a call.
  class Lease {
   public:
    explicit Lease(Impl& impl) : impl_(impl) {
      std::unique_lock lock(impl_.mutex);
      impl_.available.wait(lock, [&] { return !impl_.idle.empty() || impl_.opened < impl_.max_connections; });
      if (!impl_.idle.empty()) {
        session_ = std::move(impl_.idle.back());
        impl_.idle.pop_back();
      } else {
        session_ = std::make_unique<PgSession>(impl_.url);  // connects on first Exec
        ++impl_.opened;
      }
    }
    ~Lease() {
      {
        std::lock_guard lock(impl_.mutex);
        impl_.idle.push_back(std::move(session_));
      }
      impl_.available.notify_one();
    }
    Lease(const Lease&) = delete;
    Lease& operator=(const Lease&) = delete;
    PgSession& operator*() const { return *session_; }
    PgSession* operator->() const { return session_.get(); }

   private:
    Impl& impl_;
    std::unique_ptr<PgSession> session_;
  };
};

ResponseStore::ResponseStore(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
ResponseStore::~ResponseStore() = default;

Result<std::unique_ptr<ResponseStore>> ResponseStore::Connect(const std::string& database_url, int connections) {
  if (connections < 1) {
    return Error{ErrorCode::kInvalidArgument, "response store: connections must be >= 1", {}, {}};
  }
  auto first = std::make_unique<PgSession>(database_url);
  if (auto ok = first->Ensure(); !ok) return ok.error();
  auto impl = std::make_unique<Impl>();
  impl->url = database_url;
  impl->max_connections = connections;
  impl->idle.push_back(std::move(first));
  impl->opened = 1;
  return std::unique_ptr<ResponseStore>(new ResponseStore(std::move(impl)));
}

Result<void> ResponseStore::Put(const StoredResponse& r) {
  if (r.response.size() > kMaxStoredJsonBytes || r.context.size() > kMaxStoredJsonBytes) {
    return Error{ErrorCode::kPayloadTooLarge,
                 "stored response: " + std::string(r.response.size() > kMaxStoredJsonBytes ? "response" : "context") +
                     " is over the " + std::to_string(kMaxStoredJsonBytes >> 20) + " MiB limit",
                 {}, {}};
  }
  if (r.id.empty()) return Error{ErrorCode::kInvalidArgument, "stored response: empty id", {}, {}};
  // libpq passes parameters as C strings: a NUL byte would cut the value short.
  // Serialized JSON never holds one (it is escaped as \u0000).
  for (const std::string* s : {&r.id, &r.request_id, &r.model, &r.response, &r.context}) {
    if (s->find('\0') != std::string::npos) {
      return Error{ErrorCode::kInvalidArgument, "stored response: a NUL byte in a text value", {}, {}};
    }
  }
  Impl::Lease session(*impl_);
  const std::string sql =
      "INSERT INTO responses (id, request_id, api_key_id, account_id, model, created_at, expires_at,"
      " response, context) VALUES ($1, $2, $3::bigint, $4::bigint, $5, $6::timestamptz, $7::timestamptz,"
      " $8::json, $9::json)";
  const std::vector<internal::PgParam> params = {r.id,
                                                 r.request_id,
                                                 std::to_string(r.api_key_id),
                                                 std::to_string(r.account_id),
                                                 r.model,
                                                 internal::PgTimestamp(r.created_at),
                                                 internal::PgTimestamp(r.expires_at),
                                                 r.response,
                                                 r.context};
  // One retry when the connection turns out broken, as PgSession::Exec does
  // for idempotent statements: an insert is not, so a unique violation after
  // the retry is checked against the row that is there (our own first insert
  // if it carries our request id and key; ids are 32 random base62
  // characters, so another call's row with the same id does not happen).
  bool retried = false;
  PgOutcome out;
  for (int attempt = 0;; ++attempt) {
    const bool had_connection = session->conn() != nullptr;
    out = session->Exec(sql, params, /*idempotent=*/false);
    if (out.ok() || !out.connection_bad || !had_connection || attempt > 0) break;
    retried = true;
  }
  if (out.ok()) return {};
  if (out.sqlstate == kUniqueViolation) {
    if (retried) {
      PgOutcome mine = session->Exec(
          "SELECT 1 FROM responses WHERE id = $1 AND request_id = $2 AND api_key_id = $3::bigint",
          {r.id, r.request_id, std::to_string(r.api_key_id)}, /*idempotent=*/true);
      if (mine.ok() && PQntuples(mine.result.get()) == 1) return {};
    }
    return Error{ErrorCode::kConflict, "stored response: id " + r.id + " already exists", {}, {}};
  }
  if (out.sqlstate == kForeignKeyViolation) {
    return Error{ErrorCode::kInvalidArgument,
                 "stored response: unknown api_key_id " + std::to_string(r.api_key_id), {}, {}};
  }
  if (out.permanent()) {
    // Class 22 (invalid JSON, invalid UTF-8) or 23 (a CHECK: empty id,
    // response not an object, context not an array). The primary message
    // names the problem without quoting the value.
    return Error{ErrorCode::kInvalidArgument,
                 "stored response: " + out.message + " (SQLSTATE " + out.sqlstate + ")", {}, {}};
  }
  session->DropIfBad();
  return out.ToError("storing response");
}

Result<std::optional<StoredResponse>> ResponseStore::Get(std::string_view id, int64_t api_key_id,
                                                         std::chrono::system_clock::time_point now) {
  // libpq would cut the id at a NUL byte (and match another id); Put stores none.
  if (id.find('\0') != std::string_view::npos) return std::optional<StoredResponse>();
  Impl::Lease session(*impl_);
  // Timestamps as integer microseconds (exact: extract is numeric since
  // PostgreSQL 14); the JSON columns as their stored text.
  PgOutcome out = session->Exec(
      "SELECT id, request_id, api_key_id, account_id, model,"
      " (extract(epoch FROM created_at) * 1000000)::bigint,"
      " (extract(epoch FROM expires_at) * 1000000)::bigint, response::text, context::text "
      "FROM responses WHERE id = $1 AND api_key_id = $2::bigint AND expires_at > $3::timestamptz",
      {std::string(id), std::to_string(api_key_id), internal::PgTimestamp(now)}, /*idempotent=*/true);
  if (!out.ok()) {
    session->DropIfBad();
    return out.ToError("reading stored response");
  }
  const PGresult* res = out.result.get();
  if (PQntuples(res) == 0) return std::optional<StoredResponse>();
  using namespace internal;
  StoredResponse r;
  r.id = std::string(PgText(res, 0, 0));
  r.request_id = std::string(PgText(res, 0, 1));
  r.api_key_id = PgInt64(res, 0, 2);
  r.account_id = PgInt64(res, 0, 3);
  r.model = std::string(PgText(res, 0, 4));
  r.created_at = FromEpochMicros(PgInt64(res, 0, 5));
  r.expires_at = FromEpochMicros(PgInt64(res, 0, 6));
  r.response = std::string(PgText(res, 0, 7));
  r.context = std::string(PgText(res, 0, 8));
  return std::optional<StoredResponse>(std::move(r));
}

Result<bool> ResponseStore::Delete(std::string_view id, int64_t api_key_id, std::chrono::system_clock::time_point now) {
  // As in Get: an id with a NUL byte names no stored response.
  if (id.find('\0') != std::string_view::npos) return false;
  Impl::Lease session(*impl_);
  // Re-running it after a lost connection is harmless (at worst it reports
  // false for a row the first run deleted).
  PgOutcome out = session->Exec(
      "DELETE FROM responses WHERE id = $1 AND api_key_id = $2::bigint"
      " RETURNING expires_at > $3::timestamptz",
      {std::string(id), std::to_string(api_key_id), internal::PgTimestamp(now)}, /*idempotent=*/true);
  if (!out.ok()) {
    session->DropIfBad();
    return out.ToError("deleting stored response");
  }
  const PGresult* res = out.result.get();
  return PQntuples(res) == 1 && internal::PgBool(res, 0, 0);
}

Result<int64_t> ResponseStore::Prune(std::chrono::system_clock::time_point now) {
  Impl::Lease session(*impl_);
  return internal::PruneExpiredResponses(*session, now);
}

}  // namespace tollgate::billing
