// The admin HTTP API, /admin/v1/..., as a pure function of a request: no
// sockets, so it tests without a server. The server calls HandleAdmin on its
// blocking pool (AccountStore is blocking) and writes the response.
//
// Authentication: `Authorization: Bearer <admin token>`, compared with the
// configured token in constant time (billing::SecretEquals: CRYPTO_memcmp
// of SHA-256 digests). Wrong or missing: 401. No token configured: 403 for
// every request (the API is off). Authentication comes before routing, so an
// unauthenticated caller learns nothing about routes or ids.
//
// JSON in and out. Every money value goes out twice: as a USD number for
// people ("balance": 12.5) and exactly as integer nano-USD
// ("balance_nano_usd": 12500000000). In, a money field X may be given as
// "X" or "X_usd" (a USD number, or a decimal string such as "12.50"; at most
// 9 decimals; numbers are read back from their shortest decimal form, so give
// large amounts with many decimals as strings or in nano-USD) or as
// "X_nano_usd" (an integer), one of them; null clears X in a PATCH.
// Unknown fields are refused (400), so a typo never passes silently.
// Timestamps are RFC 3339 UTC ("2026-11-29T08:04:53Z").
//
// Routes (ids are decimal integers; responses wrap the result in "data"):
//   POST   /accounts                  {name, prepaid?, budget?, budget_reset?, soft_limit?,
//                                      byok_fee_ppm?, credits?}          201 account
//   GET    /accounts                                                       200 [account]
//   GET    /accounts/{id}                                                  200 account
//   PATCH  /accounts/{id}             {name?, prepaid?, budget?, budget_reset?, soft_limit?,
//                                      byok_fee_ppm?, disabled?}         200 account
//   POST   /accounts/{id}/credits     {amount (signed: < 0 removes), reason, idempotency_key}
//                                      (or the Idempotency-Key header)    201 entry, 200 replay
//   GET    /accounts/{id}/ledger?limit=1..1000&before=ID                   200 [entry], next_before
//   POST   /accounts/{id}/keys        {name, limit?, limit_reset?, soft_limit?, expires_at?,
//                                      allowed_models?, requests_per_minute?, tokens_per_minute?,
//                                      max_concurrent?}                   201 key + "key": plaintext
//   GET    /accounts/{id}/keys                                             200 [key]
//   GET    /keys                                                           200 [key]
//   GET    /keys/{id}                                                      200 key
//   PATCH  /keys/{id}                 {the create fields but account}     200 key
//   DELETE /keys/{id}                 revoke (repeating it is harmless)   200 key
//   PUT    /accounts/{id}/provider_keys/{provider}   {key}                200 {provider, label}
//   GET    /accounts/{id}/provider_keys[/{provider}]                       200 labels only
//   DELETE /accounts/{id}/provider_keys/{provider}                         200, 404 if none
//   GET    /ledger/check                                                   200 report (ok: bool)
//   POST   /reload                    re-read the config file, as SIGHUP does   200 {status:
//                                      "reloaded", models, providers}; 422 when the new
//                                      config is refused (the old one stays; the message
//                                      names the bad setting); 503 when reload is unset
// The plaintext API key appears only in the create-key response; provider
// keys never appear (only SecretLabel's "sk-...abcd").
//
// Errors: OpenAI error shape (core ErrorBody) with status 400 (bad JSON,
// field; `param` names it), 401/403 (above), 404 (route, account, key,
// provider key), 405 (method; with an Allow header), 409 (idempotency key
// reused with other values, removal beyond the balance or the leases), 503
// (database unreachable), 500.
#pragma once

#include "tollgate/billing/account_store.hpp"

#include <boost/json/object.hpp>

#include <functional>

#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace tollgate::gateway {

struct AdminRequest {
  std::string method;                         // "GET", "POST", "PATCH", "PUT", "DELETE"
  std::string path;                           // after /admin/v1, without the query, not percent-decoded: "/accounts/12/credits"
  std::map<std::string, std::string> query;   // percent-decoded query parameters
  std::string body;                           // request body (JSON), may be empty
  std::string authorization;                  // the Authorization header's value as received, or empty
  std::string idempotency_key;                // the Idempotency-Key header's value, or empty
  std::string admin_token;                    // the configured admin token; empty = API off (403)
  // Provider ids of the config; when set, PUT provider_keys refuses others (400).
  std::optional<std::vector<std::string>> known_providers;
  // POST /reload: reloads the config (blocking: may load models) and returns
  // the error, or nullopt with `summary` filled ({models, providers}).
  std::function<std::optional<std::string>(boost::json::object& summary)> reload;
};

struct AdminResponse {
  int status = 200;
  std::string body;                                          // JSON
  std::vector<std::pair<std::string, std::string>> headers;  // besides Content-Type: application/json
};

// Handles one admin request (routes above). Blocking: runs AccountStore
// calls. Thread-safe as far as `store` is (it is). Never throws.
AdminResponse HandleAdmin(const AdminRequest& request, billing::AccountStore& store);

}  // namespace tollgate::gateway
