// The router: for one call, the ordered endpoints to try (the plan), from the
// catalog, the caller's preferences (OpenRouter's `provider` object, `models`
// fallbacks, `:nitro` / `:floor` variants), the model's routing policy and
// every endpoint's live health; and, afterwards, what each attempt taught
// (health, breakers, cooldowns, stickiness, the capacity queue).
//
// Decision (docs/routing.md gives the formula, its constants and examples):
//   1. models: `model` (variant suffix split off), then `fallback_models`;
//   2. filters, in this order, each recorded as the skip reason of the
//      endpoints it removes: only, ignore, order + allow_fallbacks,
//      quantizations, data_collection, zdr, max_price, parameters
//      (unsupported essential ones; require_parameters), context length,
//      health (breaker open, 429 cooldown). When a filter leaves no endpoint,
//      the error names it;
//   3. order: `provider.order` first; then by sort (price, throughput,
//      latency; `partition`), or the model's strategy; by default (kShares)
//      successive weighted random draws without replacement, so a retry
//      draws again from what is left; soft preferences
//      (preferred_min_throughput / preferred_max_latency) move endpoints that
//      miss them after the others;
//   4. stickiness: a conversation's endpoint goes first while its entry is
//      fresh, unless the caller set `provider.order`, and only when that
//      endpoint's cached-read price is below its prompt price.
// Endpoints at their concurrency cap stay in the plan: the call driver
// claims a slot per attempt (EndpointHealth::Acquire) and skips a full one;
// when every endpoint of a plan is full it waits in the capacity queue.
//
// Allocation: Decide() allocates nothing once `Plan`'s vectors have grown to
// the catalog's size (reuse one Plan per thread), except on errors (their
// message) (bench/routing_bench.cpp counts it).
//
// Threading: every method is thread-safe. Health has one mutex per endpoint;
// the sticky table and the capacity queue have one each.
#pragma once

#include "tollgate/core/chat.hpp"
#include "tollgate/core/error.hpp"
#include "tollgate/core/parameters.hpp"
#include "tollgate/routing/catalog.hpp"
#include "tollgate/routing/health.hpp"

#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace tollgate::routing {

// Constants of the default traffic shares (docs/routing.md), the peer
// comparison, the capacity queue and the sticky table.
struct RouterOptions {
  HealthOptions health;
  // Effective price = blended list price x penalties. The blend weighs
  // prompt and completion tokens 3:1 (the usual blended-price convention).
  double prompt_weight = 3.0;
  double completion_weight = 1.0;
  double error_penalty = 10.0;        // x (1 + error_penalty * error_rate)
  double rate_limit_penalty = 5.0;    // x (1 + rate_limit_penalty * 429 rate)
  double ttft_threshold_ms = 2000.0;  // x (1 + ttft_penalty_per_s * seconds of TTFT above this)
  double ttft_penalty_per_s = 0.25;
  // Endpoints whose effective price is within competitive_ratio x the
  // cheapest share (1 - exploration_share) by weight / price^2; the rest
  // share exploration_share equally (0 when every endpoint competes).
  double competitive_ratio = 2.0;
  double exploration_share = 0.05;
  // An endpoint is tripped (breaker opened) when over the window it has at
  // least peer_min_attempts attempts, an error rate of at least
  // peer_min_error_rate, and peer_margin above the median of its model's
  // other endpoints.
  int64_t peer_min_attempts = 10;
  double peer_min_error_rate = 0.5;
  double peer_margin = 0.3;
  // Capacity queue: calls waiting for a slot, in all; how long one waits.
  std::size_t max_queued = 1024;
  Millis queue_timeout{30'000};
  // Sticky table entries at most (conversations remembered).
  std::size_t sticky_capacity = 100'000;
};

enum class SkipReason {
  kNone,
  kNotInOnly,              // provider.only
  kIgnored,                // provider.ignore
  kNotInOrder,             // provider.order with allow_fallbacks false
  kQuantization,           // provider.quantizations
  kDataCollection,         // provider.data_collection "deny"
  kNotZdr,                 // provider.zdr
  kMaxPrice,               // provider.max_price
  kUnsupportedParameter,   // an essential parameter (tools, images) it does not support
  kRequireParameters,      // provider.require_parameters and a parameter it does not support
  kContextLength,          // the prompt does not fit its context
  kCircuitOpen,            // breaker open (or half-open with its probe out)
  kCoolingDown,            // after a 429
  kNoFallbacks,            // allow_fallbacks false: only the first choice is tried
};
// "only", "ignore", "order", "quantizations", "data_collection", "zdr",
// "max_price", "unsupported_parameter", "require_parameters",
// "context_length", "circuit_open", "cooling_down", "no_fallbacks", "".
std::string_view SkipReasonName(SkipReason reason);

struct RouteQuery {
  std::string_view model;  // as the caller wrote it; ":nitro" / ":floor" allowed
  const std::vector<std::string>* fallback_models = nullptr;  // may be null
  const ProviderPreferences* preferences = nullptr;           // null = none
  ParameterSet parameters;    // ParametersUsed(request)
  int64_t prompt_tokens = 0;  // estimate (EstimateUsage); prices the tier, checks the context
  // The most prompt tokens the request can have (call_driver.hpp
  // PromptTokensBound); 0 = prompt_tokens. max_price is checked at the tier
  // this many tokens reach, so an estimate that undercounts never lets a
  // dearer tier through.
  int64_t prompt_tokens_bound = 0;
  uint64_t session = 0;       // SessionKey(request); 0 = no stickiness
  // The exact prompt tokens as an endpoint's provider counts them (its own
  // tokenizer and template: the local engine), or nullopt; checks that
  // endpoint's context instead of the estimate. Empty = none. Called once per
  // endpoint that reaches the context filter, on the deciding thread.
  std::function<std::optional<int64_t>(const Endpoint&)> exact_prompt_tokens;
};

struct Candidate {
  const Model* model = nullptr;
  const Endpoint* endpoint = nullptr;
  ParameterSet dropped;  // request parameters it does not support (dropped before the call)
  double share = 0;      // kShares: its probability of being drawn first; else 0
  bool sticky = false;   // placed first by stickiness
};

struct Considered {
  const Model* model = nullptr;
  const Endpoint* endpoint = nullptr;
  SkipReason skipped = SkipReason::kNone;  // kNone: in the plan
  ParameterSet unsupported;                // kUnsupportedParameter / kRequireParameters: which
  double effective_price = 0;  // femto-USD per blended token, penalties included (docs/routing.md)
  double share = 0;            // as Candidate::share
  // kContextLength: the prompt as this endpoint counts it, and whether that
  // count is exact (RouteQuery::exact_prompt_tokens) or the estimate.
  int64_t prompt_tokens = 0;
  bool prompt_exact = false;
};

// One decision. Reuse it: Decide() clears it and its vectors keep their
// capacity.
struct Plan {
  std::vector<Candidate> candidates;    // in the order to try
  std::vector<Considered> considered;   // every endpoint looked at, model by model, config order
  RoutingPolicy::Strategy strategy = RoutingPolicy::Strategy::kShares;  // what ordered them
  // Scratch space of Decide().
  std::vector<double> scratch;
  std::vector<std::size_t> scratch_index;
};

class Router {
 public:
  // `catalog` must outlive the router.
  Router(const Catalog* catalog, RouterOptions options);
  Router(const Router&) = delete;
  Router& operator=(const Router&) = delete;

  // Fills `plan` for `query` at `now`, drawing from `rng`. nullopt: `plan`
  // has at least one candidate. Errors:
  //   kInvalidArgument  empty model (param "model"); no endpoint supports an
  //                     essential parameter, or require_parameters
  //                     (code "unsupported_parameter"); the prompt fits no
  //                     endpoint's context (param "messages", code
  //                     "context_length_exceeded");
  //   kNotFound         unknown model ("model_not_found"; param "model", or
  //                     "models" for a fallback); a preference emptied the
  //                     list: the message names it, param is
  //                     "provider.<name>" (code "no_endpoints");
  //   kUnavailable      the model has no endpoints; every remaining
  //                     endpoint's breaker is open or it is cooling down
  //                     (code "no_endpoints_available"): retry_after =
  //                     whole seconds, rounded up, until the first is
  //                     available again.
  std::optional<Error> Decide(const RouteQuery& query, SteadyTime now, std::mt19937_64& rng, Plan* plan) const;

  // The health slot of `endpoint` (which must be in the catalog).
  EndpointHealth& health(const Endpoint& endpoint) const { return *health_[endpoint.index]; }

  // Ends an attempt claimed with health(e).Acquire(): releases its slot,
  // learns from it, trips the breaker when it is far worse than its peers,
  // and hands the freed slot to the oldest call waiting for one that can use
  // `endpoint` (claimed for it: see WaitForCapacity).
  void Report(const Endpoint& endpoint, const AttemptReport& report);

  // Stickiness: `session` was served by `endpoint` at `now`; for the model's
  // sticky_ttl after `now` Decide puts `endpoint` first for that session.
  // Allocates (one table entry).
  void Remember(uint64_t session, const Endpoint& endpoint, SteadyTime now);

  // Capacity queue, first come first served. Registers a call that can use
  // any of `usable` (endpoints of its plan, all full now). When a slot of one
  // of them frees (Report), it is claimed for the oldest waiter that can use
  // it and `wake(endpoint)` is called once, from the thread that freed it,
  // never inside this call: the waiter then owns that slot and must end it
  // with Report (or start its attempt there). Returns a ticket, or 0 when
  // max_queued calls already wait (then `wake` is never called). A slot
  // freed between the caller's own check and this call wakes nobody: check
  // again after registering (and CancelWait if one is free).
  uint64_t WaitForCapacity(const Model& model, std::vector<const Endpoint*> usable,
                           std::function<void(const Endpoint&)> wake);
  // Withdraws a waiter (timed out, client gone). True when it still waited
  // (its `wake` will not be called); false when a slot was already handed to
  // it (its `wake` is on its way).
  bool CancelWait(uint64_t ticket);
  // Calls waiting on `model` now.
  std::size_t queued(const Model& model) const;

  const RouterOptions& options() const { return options_; }
  const Catalog& catalog() const { return *catalog_; }

 private:
  struct Sticky {
    std::size_t endpoint = 0;  // Endpoint::index
    SteadyTime expires;
  };
  struct Waiter {
    uint64_t ticket = 0;
    const Model* model = nullptr;
    std::vector<const Endpoint*> usable;
    std::function<void(const Endpoint&)> wake;
  };

  const Catalog* catalog_;
  RouterOptions options_;
  std::vector<std::unique_ptr<EndpointHealth>> health_;  // by Endpoint::index

  mutable std::mutex sticky_mu_;
  std::unordered_map<uint64_t, Sticky> sticky_;  // guarded by sticky_mu_
  SteadyTime next_sweep_;  // a full table is swept at most once a second; guarded by sticky_mu_

  mutable std::mutex queue_mu_;
  std::deque<Waiter> waiters_;  // FIFO; guarded by queue_mu_
  uint64_t next_ticket_ = 1;    // guarded by queue_mu_
};

// The stickiness key of a conversation (never 0): FNV-1a 64 of `tenant` (the
// caller's API key id: stickiness never crosses keys, so no key can learn
// from a sticky answer what another key sent), the model slug, and
// request.session_id, else `user`, else the text of the conversation's first
// system and first user message. 0 for a request with none of these.
uint64_t SessionKey(const ChatRequest& request, int64_t tenant);

}  // namespace tollgate::routing
