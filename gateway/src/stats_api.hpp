// The usage statistics API as a pure function of a request (no sockets; the
// server runs it on its blocking pool, since StatsStore is blocking). Routes
// (GET only; the server maps /api/v1/... to /v1/...):
//   /v1/stats/models       rankings by tokens with the previous window (global)
//   /v1/stats/cost         spend and tokens by model|provider|endpoint|key|account|app
//   /v1/stats/timeseries   chart series bucketed by local hour/day of an IANA time zone
//   /v1/stats/providers    per provider and endpoint: uptime, latency/TTFT percentiles, throughput
//   /v1/stats/calls        the raw calls, newest first, keyset-paged (next_cursor)
//   /v1/datasets/rankings-daily, /v1/datasets/app-rankings, /v1/activity
//                          OpenRouter's shapes as @openrouter/sdk 1.3.19 parses them
//                          (models/rankingsdaily*, apprankings*, activity*:
//                          openrouter.ai/docs/api-reference, "Datasets" and "Analytics")
// Shapes, parameters and the field list of each: README.md "Usage statistics API".
//
// Authentication: `Authorization: Bearer <billing.admin_token>` (compared in
// constant time, billing::SecretEquals) sees everything and may filter with
// key_id= / account_id=; a usable API key (the server looks it up in the key
// cache: StatsRequest::key_id) sees only its own key's rows, except the
// rankings and datasets, which are global and name no key or account.
// Otherwise 401 (StatsRequest::auth_error when the server has one).
//
// Windows: window=1h|24h|7d|30d (default 24h) ends at the end of the current
// UTC quarter hour; or start= / end= (RFC 3339, or YYYY-MM-DD: start is that
// day's 00:00Z, end the end of that day). Money goes out as *_usd (number)
// and *_nano_usd (exact integer). Token fields of a group none of whose calls
// had usage reported by the provider are null (not 0); estimated tokens are
// apart in estimated_tokens. format=csv answers text/csv (RFC 4180: header
// row, CRLF, fields with , " CR LF quoted, quotes doubled; null is an empty
// field) on every route; timeseries as long rows bucket,key,label,value.
//
// Errors: core ErrorBody in StatsRequest::error_flavor (the server passes
// FlavorOf(req): OpenRouter's shape, integer `code`, under /api/v1, else
// OpenAI's): 400 with `param` naming the bad parameter (also a value that is
// not UTF-8 or longer than 256 bytes, a time outside 2000-01-01..2200-01-01,
// an activity date outside the last 30 UTC days), 401, 403 (a key asking for
// another key's or account's rows), 503 (database unreachable), 500. No
// database error text reaches the client (it goes to stderr).
#pragma once

#include "tollgate/billing/stats_store.hpp"
#include "tollgate/core/error.hpp"

#include <chrono>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace tollgate::gateway {

struct StatsRequest {
  std::string route;                          // "/v1/stats/models", ... (the /api prefix removed)
  std::map<std::string, std::string> query;   // percent-decoded query parameters
  std::string bearer;                         // the credential presented (`Authorization: Bearer X` or
                                              // `x-api-key: X`, as the server reads it), or empty
  std::string admin_token;                    // billing.admin_token; empty = no admin access
  std::optional<int64_t> key_id;              // the bearer's key when it is a usable API key
  std::optional<int64_t> account_id;          // that key's account
  std::optional<Error> auth_error;            // why the bearer is not usable (401 body), if known
  ErrorFlavor error_flavor = ErrorFlavor::kOpenAi;  // the error shape (ErrorFlavorForPath of the path)
  std::chrono::system_clock::time_point now = std::chrono::system_clock::now();
};

struct StatsResponse {
  int status = 200;
  std::string body;
  std::string content_type = "application/json";
};

// True for the routes above.
bool IsStatsRoute(const std::string& route);

// Handles one request. Blocking (StatsStore). Authentication and parameters
// are checked before `store` is used; a null `store` (no database) then
// answers 503. Thread-safe as far as `store` is (it is). Never throws.
StatsResponse HandleStats(const StatsRequest& request, billing::StatsStore* store);

// RFC 4180 field: quoted when it holds , " CR or LF (quotes doubled).
std::string CsvField(const std::string& value);

// CsvField of a text column's value, neutralised against formula injection
// (OWASP "CSV Injection"): a value starting with = + - @ TAB or CR gets a
// leading single quote. Numeric columns are written as numbers, not through this.
std::string CsvTextField(const std::string& value);

}  // namespace tollgate::gateway
