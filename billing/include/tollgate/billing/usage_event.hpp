// One row of usage_events (migrations/001_init.sql, partitioned by 006_stats.sql): what one call used and
// cost. Written by UsageRecorder, read back by GenerationStore.
#pragma once

#include "tollgate/core/chat.hpp"
#include "tollgate/core/money.hpp"

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace tollgate::billing {

// One attempt of a call at one endpoint (migrations/003_routing.sql,
// call_attempts): a call that fell back, retried or hedged has several; the
// one that served has `served` set. `cost` is what the attempt cost the
// operator (estimated for attempts cut short), never charged to the caller
// except for the served attempt, whose cost is the call's.
struct AttemptRecord {
  int attempt = 0;             // 1, 2, ... in start order
  std::string endpoint_id;     // routing::Endpoint::id
  std::string provider;        // display name
  std::string upstream_model;
  // "served", "failed" (error before the commit), "broken" (failed after it),
  // "rate_limited" (429), "rejected" (a 4xx the request caused),
  // "hedge_lost" (cancelled: another attempt won), "cancelled" (the call
  // stopped: client gone, deadline, shutdown).
  std::string outcome;
  int status = 0;                         // HTTP status of the attempt's outcome (200 when served)
  std::optional<std::string> error_code;  // the upstream's error code/type, when it failed
  int64_t started_ms = 0;                 // after the call was received
  int64_t latency_ms = 0;                 // attempt start to its end
  std::optional<int64_t> ttft_ms;         // attempt start to its first output
  Usage usage;                            // what it used (reported, or estimated)
  Money cost;
};

// One credit-lease pot a call was admitted under: CreditGuard's
// AdmitTicket::pots entry (credit_guard.hpp PotRef) as the usage writer needs
// it, to take the call's cost off exactly the lease rows that reserved it.
struct LeasedPot {
  std::string scope;   // "credits", "key" or "budget" (PotScopeName; credit_leases.scope)
  int64_t owner_id = 0;  // api_keys.id for "key", accounts.id otherwise
  // The pot's period as admitted (PeriodStart of the call time; the epoch for
  // credits and never-resetting limits); microsecond precision when stored.
  std::chrono::system_clock::time_point period_start;
  friend bool operator==(const LeasedPot&, const LeasedPot&) = default;
};

struct UsageEvent {
  std::string request_id;  // "gen-...": the response id; primary and idempotency key
  int64_t api_key_id = 0;  // api_keys.id; <= 0 is stored as NULL (call never authenticated)
  std::string model;           // model slug as requested ("openai/gpt-4o-mini")
  std::string provider;        // provider display name ("OpenAI", "Local")
  std::string upstream_model;  // the endpoint's model name at the provider
  Usage usage;                 // tokens; OpenAI semantics (cached in prompt, reasoning in completion)
  Money cost;                  // nano-USD charged; added to api_keys.spent_nano_usd
  int64_t latency_ms = 0;              // request received to last byte sent
  std::optional<int64_t> ttft_ms;      // time to first token; nullopt if none was sent
  int status = 200;                    // HTTP status returned to the caller
  std::optional<std::string> finish_reason;  // FinishReasonName(...), nullopt on error
  bool streamed = false;
  bool cancelled = false;        // the client went away (499)
  bool usage_estimated = false;  // upstream never reported usage; counts were estimated
  std::optional<std::string> error_code;  // OpenAI error code/type on failure
  // Stored with microsecond precision (timestamptz); sub-microsecond parts are
  // truncated toward the past.
  std::chrono::system_clock::time_point created_at;   // request received
  std::chrono::system_clock::time_point finished_at;  // last byte sent / call ended
  std::string endpoint_id;              // routing::Endpoint::id of the endpoint that served (or last tried)
  int64_t account_id = 0;               // accounts.id of the key's account; <= 0 stored as NULL
  // The credit leases the call was admitted under (CreditGuard::replica_id());
  // the writer takes `cost` off them. Empty: admitted under none.
  std::string lease_holder;
  // The pots the call was admitted under (AdmitTicket::pots); the writer
  // takes `cost` off lease_holder's lease row of each, whatever the key's and
  // account's settings are when the row is written. Empty: none; except that
  // an event with a lease_holder and no pots (a spool record of an older
  // gateway) gets the pots derived from the settings at write time, as
  // before.
  std::vector<LeasedPot> leased_pots;
  // The prices `cost` was computed from, as a JSON object (PriceSnapshotJson
  // in gateway/src/call_driver.hpp); empty = none (stored as NULL).
  std::string price_snapshot;
  bool byok = false;                    // served with the account's own provider key
  std::optional<Money> provider_cost;   // BYOK: what the provider charges the account; `cost` is the fee
  std::vector<AttemptRecord> attempts;  // every attempt, in start order (call_attempts rows)
  // The calling app (OpenRouter app attribution, migrations/006_stats.sql):
  // AppFromHeaders(HTTP-Referer, X-Title). Empty = none (stored as NULL).
  std::string app;        // "https://example.com" (the referer's origin) or "title:<X-Title>"
  std::string app_title;  // the X-Title as sent, trimmed
};

}  // namespace tollgate::billing
