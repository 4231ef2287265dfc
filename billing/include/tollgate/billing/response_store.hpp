// Stored responses of the OpenAI Responses API (POST /v1/responses with
// store: true; GET and DELETE /v1/responses/{id}; previous_response_id), in
// the PostgreSQL table `responses` (migrations/007_responses.sql).
//
// Every read and delete is scoped to one API key: another key's response is
// indistinguishable from an unknown id. A response expires at its
// expires_at: reads never return it from then on, even before it is pruned
// (Prune, run hourly by UsageMaintenance::Run).
//
// The JSON travels as serialized text, so billing stays free of wire formats:
// the gateway owns what is inside (wire/responses.hpp). The store only checks
// that `response` is a JSON object and `context` a JSON array (the database
// does) and that neither is over kMaxStoredJsonBytes; it reads them back
// byte for byte as written.
//
// Blocking; call it from a worker thread, not an I/O thread.
#pragma once

#include "tollgate/core/error.hpp"

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

namespace tollgate::billing {

// Largest `response` and largest `context` (each, serialized, in bytes) that
// Put stores: 16 MiB. Keeps rows bounded, since every stored response of a
// conversation carries the whole conversation.
inline constexpr size_t kMaxStoredJsonBytes = size_t{16} << 20;

struct StoredResponse {
  std::string id;          // "resp_..." (any non-empty text is accepted)
  std::string request_id;  // the call's request id, "gen-..." (its usage row)
  int64_t api_key_id = 0;  // owner: the only key that can read or delete it
  int64_t account_id = 0;  // the key's account
  std::string model;       // model slug as requested
  // Microsecond precision survives the round trip exactly (finer is truncated).
  std::chrono::system_clock::time_point created_at;
  std::chrono::system_clock::time_point expires_at;  // expired when now >= expires_at
  std::string response;  // serialized JSON object: the response as the client sees it
  std::string context;   // serialized JSON array: the conversation's items so far
};

class ResponseStore {
 public:
  // Connects to `database_url` (libpq connection string or URI; schema
  // migrated). Opens one connection now and up to `connections` (>= 1) in
  // all, on demand, so that concurrent calls do not queue behind one
  // another's round trips.
  // Errors: kInvalidArgument (unparsable URL, connections < 1), kUnavailable
  // (cannot connect).
  static Result<std::unique_ptr<ResponseStore>> Connect(const std::string& database_url, int connections = 4);

  ~ResponseStore();
  ResponseStore(const ResponseStore&) = delete;
  ResponseStore& operator=(const ResponseStore&) = delete;

  // Inserts `response`. A connection found broken (one this store had open)
  // is replaced and the insert retried once; the first try may have been
  // committed with its answer lost, so when the retry finds a row with this
  // id that has this response's request_id and api_key_id, that row is
  // taken as this Put's own and Put succeeds (another row with the id is
  // kConflict). Without a retry any existing row is kConflict. A connection
  // still broken on the retry: kUnavailable (the insert may or may not have
  // happened).
  // Errors: kConflict (a response with this id exists, whoever owns it),
  // kPayloadTooLarge (`response` or `context` over kMaxStoredJsonBytes;
  // nothing written), kInvalidArgument (empty id, `response` not a JSON
  // object or `context` not a JSON array, invalid UTF-8, a NUL byte, or an
  // unknown api_key_id), kUnavailable, kInternal.
  Result<void> Put(const StoredResponse& response);

  // The response `id` if key `api_key_id` stored it and it has not expired
  // at `now` (expires_at > now); nullopt for an unknown id, another key's
  // response or an expired one, and for an id with a NUL byte (no stored id
  // has one; the database is not asked).
  // Errors: kUnavailable (database unreachable, after one reconnect
  // attempt), kInternal.
  Result<std::optional<StoredResponse>> Get(std::string_view id, int64_t api_key_id,
                                            std::chrono::system_clock::time_point now);

  // Deletes the response `id` of key `api_key_id`. True when it existed and
  // had not expired at `now` (what Get would have returned); false for an
  // unknown id, another key's response (left alone) or an expired one
  // (deleted anyway); false for an id with a NUL byte (no stored id has one;
  // the database is not asked).
  // Errors: kUnavailable, kInternal.
  Result<bool> Delete(std::string_view id, int64_t api_key_id,
                      std::chrono::system_clock::time_point now = std::chrono::system_clock::now());

  // Deletes every response expired at `now` (expires_at <= now), in batches
  // of short transactions; returns how many. UsageMaintenance::Run does this
  // hourly.
  // Errors: kUnavailable, kInternal. Rows deleted by earlier batches stay
  // deleted.
  Result<int64_t> Prune(std::chrono::system_clock::time_point now);

  // kUnavailable and kInternal messages never quote the stored JSON.
  //
  // Thread-safe: each call takes one of the pooled connections (waiting
  // while all are busy); a connection found broken is re-opened by the next
  // call that takes it.

 private:
  struct Impl;
  explicit ResponseStore(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace tollgate::billing
