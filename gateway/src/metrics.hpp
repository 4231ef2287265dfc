// Prometheus metrics of the gateway, served at GET /metrics in the text
// exposition format 0.0.4 (prometheus.io/docs/instrumenting/exposition_formats).
//
// Names follow Prometheus naming conventions: counters end in _total, units
// in the name (_seconds, _nano_usd). Labels never carry secrets or request ids.
// Thread-safe: every method may be called from any thread.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

namespace tollgate::gateway {

class Metrics {
 public:
  Metrics();
  ~Metrics();

  // One HTTP request on `route` ("/v1/chat/completions") answered with `status`.
  void CountRequest(std::string_view route, int status);

  // One metered call: tokens, cost (nano-USD), time to first token and latency (ms).
  void CountCall(std::string_view model, std::string_view provider, int status, int64_t prompt_tokens,
                 int64_t completion_tokens, int64_t cost_nano_usd, std::optional<int64_t> ttft_ms,
                 int64_t latency_ms);

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
  // concurrency), or "credit_unavailable".
  void CountRefusal(std::string_view reason);
  // What a call cost above what it was charged (the provider's cost beyond
  // the call's reservation, absorbed by the operator), nano-USD.
  void CountUncharged(std::string_view model, std::string_view provider, int64_t nano_usd);
  // A call admitted past a soft limit (`scope`: key, budget, credits); the
  // caller was warned in the x-tollgate-soft-limit header.
  void CountSoftLimitWarning(std::string_view scope);

  // Routing state of one endpoint, read at each scrape: calls in flight,
  // calls of its model waiting in the capacity queue, breaker state
  // (0 closed, 1 half-open, 2 open) and whether it cools down after a 429.
  struct EndpointState {
    int64_t in_flight = 0;
    int64_t queued = 0;
    int circuit = 0;
    bool cooling_down = false;
  };
  void SetEndpoint(std::string_view model, std::string_view endpoint_id, const EndpointState& state);

  // One local engine's load (local_backend::LocalEngineStats), by model file stem.
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
