// Prometheus metrics of the gateway, served at GET /metrics in the text
// exposition format 0.0.4 (prometheus.io/docs/instrumenting/exposition_formats)
// through prometheus-cpp. The output passes `promtool check metrics`
// (tests/e2e/test/metrics.test.mjs).
//
// Names follow the Prometheus naming conventions
// (prometheus.io/docs/practices/naming): counters end in _total, base units
// in the name (_seconds, _usd, _nano_usd). The list with labels is in the
// README ("Metrics and logs").
//
// Cardinality: every label value comes from a fixed set or from the config.
//   model     a catalog model id (SetKnownLabels), else "other"
//   provider  a configured provider's display name (SetKnownLabels), "none"
//             for a call no provider was asked for, else "other"
//   status    an HTTP status Tollgate answers (kStatusLabels), else "other"
//   route     a route Tollgate serves (RouteLabel), else "other"
//   kind, reason, scope, item: fixed sets named below
//   endpoint, engine: catalog endpoint ids and local engine labels (config)
// Nothing is derived from keys, users, apps, headers or other raw input, so
// the series count does not grow with them. Labels never carry secrets.
//
// Thread-safe: every method may be called from any thread.
#pragma once

#include "tollgate/billing/usage_event.hpp"

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace tollgate::gateway {

class Metrics {
 public:
  Metrics();
  ~Metrics();

  // The label values allowed for `model` (catalog model ids) and `provider`
  // (display names of the configured providers, routing::Endpoint's
  // provider->Name()). Anything else is counted as "other". Called at start
  // and on each config reload (the sets are swapped whole).
  void SetKnownLabels(const std::vector<std::string>& models, const std::vector<std::string>& providers);
  std::string ModelLabel(std::string_view model) const;
  std::string ProviderLabel(std::string_view provider) const;
  // "200", "400", ... for the statuses Tollgate answers (200, 400, 401, 402,
  // 403, 404, 405, 408, 409, 413, 429, 499, 500, 502, 503, 504), else "other".
  static std::string StatusLabel(int status);
  // `route` itself when it is one Tollgate serves ("/v1/chat/completions",
  // "/metrics", "/admin/v1", "unmatched", ...), "/dashboard" for any page
  // below it, else "other".
  static std::string RouteLabel(std::string_view route);
  // Why an attempt failed, from its record (billing::AttemptRecord): nullopt
  // for an attempt that did not fail (served, hedge_lost, cancelled), else
  // one of "rate_limited" (the upstream's 429), "at_capacity" (the local
  // engine's full queue), "credentials" (the upstream refused the provider
  // key: 401/403, error code provider_credentials_rejected), "timeout"
  // (connect, first byte or read timeout, upstream 408/504), "unavailable"
  // (connect failure, upstream 503/529/402), "bad_response" (an upstream
  // 404/5xx or an answer that did not parse, 502), "rejected" (a 4xx the
  // request caused), "server_error" (500), "other".
  static std::optional<std::string> UpstreamErrorReason(const billing::AttemptRecord& attempt);

  // One HTTP request on `route` (RouteLabel) answered with `status`:
  // tollgate_http_requests_total{route,status}.
  void CountRequest(std::string_view route, int status);

  // A model call that ended without a usage row: refused before any provider
  // was asked (authentication, malformed body, rate limit, admission, unknown
  // model) or rejected by the only provider asked (its attempts in
  // `attempts`, counted as upstream errors). `model` is the model asked for
  // (raw: mapped by ModelLabel); provider "none" when `attempts` is empty.
  void CountUnmeteredCall(std::string_view model, int status,
                          const std::vector<billing::AttemptRecord>& attempts = {});

  // A metered call (its usage row): tollgate_calls_total, tokens by kind
  // (reported, or estimated when usage_estimated), cost (USD and nano-USD),
  // duration (status 200), TTFT and generation throughput histograms, and
  // every failed attempt in `e.attempts` as an upstream error.
  void CountMeteredCall(const billing::UsageEvent& e);

  // State of the write-behind usage recorder and the key cache, read at each
  // scrape (billing/ counts them; exported here as gauges).
  struct BackgroundStats {
    int64_t usage_rows_written = 0;   // rows inserted since start
    int64_t usage_rows_pending = 0;   // queued, not yet durable
    int64_t usage_rows_rejected = 0;  // refused by the database on their values
    int64_t usage_rows_lost = 0;      // abandoned (shutdown during an outage)
    int64_t usage_write_failures = 0; // failed batch attempts (retried)
    int64_t keys_loaded = 0;          // API keys in memory
    int64_t key_reload_failures = 0;  // failed periodic reloads
    int64_t key_notifications = 0;    // key/account change notifications received
    int64_t usage_rows_replayed = 0;  // rows read back from the spool at start
    int64_t credit_lease_grants = 0;  // credit leases granted to this process
    int64_t credit_leased_nano_usd = 0;    // granted in all
    int64_t credit_returned_nano_usd = 0;  // given back unused
    int64_t credit_lost_nano_usd = 0;      // found expired and taken by other replicas
    int64_t credit_db_errors = 0;
    int64_t rate_limit_sync_failures = 0;  // failed rate-counter syncs (limits then per replica)
  };
  void SetBackground(const BackgroundStats& stats);

  // A call refused before it started: `reason` is "payment_required:<pot>"
  // (key, credits, budget), "rate_limited:<limit>" (requests, tokens,
  // concurrency), or "credit_unavailable" (a fixed set).
  void CountRefusal(std::string_view reason);
  // What a call cost above what it was charged (the provider's cost beyond
  // the call's reservation, absorbed by the operator), nano-USD.
  void CountUncharged(std::string_view model, std::string_view provider, int64_t nano_usd);
  // A call admitted past a soft limit (`scope`: key, budget, credits); the
  // caller was warned in the x-tollgate-soft-limit header.
  void CountSoftLimitWarning(std::string_view scope);

  // A config reload (SIGHUP, POST /admin/v1/reload): counted by result
  // (tollgate_config_reloads_total{result="success"|"failure"}), and
  // tollgate_config_last_reload_successful set to 1 or 0.
  void CountConfigReload(bool ok);
  // Client connections open now (tollgate_connections_open), and those
  // closed at accept (tollgate_connections_refused_total{reason}: "total"
  // past server.max_connections, "per_client" past
  // server.max_connections_per_client).
  void AddOpenConnections(int delta);
  void CountConnectionRefused(std::string_view reason);
  // A request refused by a server limit (tollgate_limit_rejections_total
  // {limit}): header_bytes, headers, url_bytes, body_bytes, json_depth,
  // messages, tools, content_parts, header_timeout, body_timeout.
  void CountLimitRejection(std::string_view limit);

  // Calls past authentication and rate limits and not yet ended
  // (tollgate_calls_in_flight), read at each scrape.
  void SetCallsInFlight(int64_t calls);
  // Calls of `model` waiting in the router's capacity queue
  // (tollgate_calls_queued{model}), read at each scrape.
  void SetCallsQueued(std::string_view model, int64_t calls);

  // Routing state of one endpoint, read at each scrape: calls in flight,
  // calls of its model waiting in the capacity queue, breaker state
  // (0 closed, 1 half-open, 2 open), whether it cools down after a 429, and
  // how long until it takes calls again (an open circuit's or a cooldown's
  // end; 0 when available).
  struct EndpointState {
    int64_t in_flight = 0;
    int64_t queued = 0;
    int circuit = 0;
    bool cooling_down = false;
    double unavailable_seconds = 0;
  };
  void SetEndpoint(std::string_view model, std::string_view endpoint_id, const EndpointState& state);

  // One local engine's load (local_backend::LocalEngineStats), by
  // <provider>/<model file stem>. The *_tokens totals are the engine's
  // counters since start (exported as Prometheus counters by their growth).
  struct LocalEngineState {
    int64_t running = 0;
    int64_t queued = 0;
    int64_t max_sequences = 0;
    int64_t max_queue = 0;
    int64_t kv_pages_used = 0;
    int64_t kv_pages_cached = 0;
    int64_t kv_pages_total = 0;
    int64_t preemptions = 0;
    int64_t prefix_hit_tokens = 0;
    int64_t generated_tokens = 0;  // tokens sampled since start
    int64_t processed_tokens = 0;  // tokens run through the model (prompt and generated) since start
    int64_t batch_sequences = 0;   // sequences in the last batched step (0 when idle)
    int64_t batch_tokens = 0;      // tokens in the last batched step
  };
  void SetLocalEngine(std::string_view engine, const LocalEngineState& state);
  // tollgate_local_engine_info{engine, device} 1: where the engine runs (LocalProvider::DeviceName()).
  void SetLocalEngineInfo(std::string_view engine, std::string_view device);

  // The text exposition of all metrics.
  std::string Serialize() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace tollgate::gateway
