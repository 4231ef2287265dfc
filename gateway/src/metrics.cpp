#include "metrics.hpp"

#include <prometheus/counter.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>
#include <prometheus/text_serializer.h>

namespace tollgate::gateway {

struct Metrics::Impl {
  std::shared_ptr<prometheus::Registry> registry = std::make_shared<prometheus::Registry>();
  prometheus::Family<prometheus::Counter>& requests =
      prometheus::BuildCounter().Name("tollgate_http_requests_total").Help("HTTP requests by route and status").Register(*registry);
  prometheus::Family<prometheus::Counter>& calls =
      prometheus::BuildCounter().Name("tollgate_calls_total").Help("Metered model calls by model, provider and status").Register(*registry);
  prometheus::Family<prometheus::Counter>& tokens =
      prometheus::BuildCounter().Name("tollgate_tokens_total").Help("Tokens metered, by model, provider and type (prompt, completion)").Register(*registry);
  prometheus::Family<prometheus::Counter>& cost =
      prometheus::BuildCounter().Name("tollgate_cost_nano_usd_total").Help("Cost charged in nano-USD, by model and provider").Register(*registry);
  prometheus::Family<prometheus::Histogram>& ttft =
      prometheus::BuildHistogram().Name("tollgate_time_to_first_token_seconds").Help("Time to first token").Register(*registry);
  prometheus::Family<prometheus::Histogram>& latency =
      prometheus::BuildHistogram().Name("tollgate_call_duration_seconds").Help("Whole call duration").Register(*registry);
  prometheus::Family<prometheus::Gauge>& background =
      prometheus::BuildGauge().Name("tollgate_background").Help("Usage recorder and key cache state, by item").Register(*registry);
  prometheus::Family<prometheus::Gauge>& endpoints =
      prometheus::BuildGauge()
          .Name("tollgate_endpoint_state")
          .Help("Routing state per endpoint: in_flight, queued (its model's capacity queue), circuit (0 closed, 1 half-open, 2 open), cooling_down")
          .Register(*registry);
  prometheus::Family<prometheus::Gauge>& engines =
      prometheus::BuildGauge()
          .Name("tollgate_local_engine")
          .Help("Local engine load by <provider>/<model file stem>: running, queued, max_sequences, max_queue, kv_pages_used, "
                "kv_pages_cached, kv_pages_total (64 tokens each), preemptions and prefix_hit_tokens since start")
          .Register(*registry);
  prometheus::Family<prometheus::Gauge>& engine_info =
      prometheus::BuildGauge()
          .Name("tollgate_local_engine_info")
          .Help("Local engine by <provider>/<model file stem>, with the device it runs on; always 1")
          .Register(*registry);
  prometheus::Family<prometheus::Counter>& refusals =
      prometheus::BuildCounter()
          .Name("tollgate_admission_refusals_total")
          .Help("Calls refused before they started: payment_required:<pot>, rate_limited:<limit>, credit_unavailable")
          .Register(*registry);
  prometheus::Family<prometheus::Counter>& uncharged =
      prometheus::BuildCounter()
          .Name("tollgate_uncharged_nano_usd_total")
          .Help("Provider cost of calls above what they were charged (above their credit reservation), by model and provider")
          .Register(*registry);
  prometheus::Family<prometheus::Counter>& soft_limits =
      prometheus::BuildCounter()
          .Name("tollgate_soft_limit_warnings_total")
          .Help("Calls admitted past a soft limit (key, budget or credits), by scope")
          .Register(*registry);
  const prometheus::Histogram::BucketBoundaries buckets{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60};
};

Metrics::Metrics() : impl_(std::make_unique<Impl>()) {}
Metrics::~Metrics() = default;

void Metrics::CountRequest(std::string_view route, int status) {
  impl_->requests.Add({{"route", std::string(route)}, {"status", std::to_string(status)}}).Increment();
}

void Metrics::CountCall(std::string_view model, std::string_view provider, int status, int64_t prompt_tokens,
                        int64_t completion_tokens, int64_t cost_nano_usd, std::optional<int64_t> ttft_ms,
                        int64_t latency_ms) {
  std::string m(model), p(provider);
  impl_->calls.Add({{"model", m}, {"provider", p}, {"status", std::to_string(status)}}).Increment();
  impl_->tokens.Add({{"model", m}, {"provider", p}, {"type", "prompt"}}).Increment(static_cast<double>(prompt_tokens));
  impl_->tokens.Add({{"model", m}, {"provider", p}, {"type", "completion"}})
      .Increment(static_cast<double>(completion_tokens));
  impl_->cost.Add({{"model", m}, {"provider", p}}).Increment(static_cast<double>(cost_nano_usd));
  if (ttft_ms) impl_->ttft.Add({{"model", m}, {"provider", p}}, impl_->buckets).Observe(*ttft_ms / 1000.0);
  impl_->latency.Add({{"model", m}, {"provider", p}}, impl_->buckets).Observe(latency_ms / 1000.0);
}

void Metrics::SetBackground(const BackgroundStats& s) {
  auto set = [&](const char* item, int64_t value) {
    impl_->background.Add({{"item", item}}).Set(static_cast<double>(value));
  };
  set("usage_rows_written", s.usage_rows_written);
  set("usage_rows_pending", s.usage_rows_pending);
  set("usage_rows_rejected", s.usage_rows_rejected);
  set("usage_rows_lost", s.usage_rows_lost);
  set("usage_write_failures", s.usage_write_failures);
  set("keys_loaded", s.keys_loaded);
  set("key_reload_failures", s.key_reload_failures);
  set("key_notifications", s.key_notifications);
  set("usage_rows_replayed", s.usage_rows_replayed);
  set("credit_lease_grants", s.credit_lease_grants);
  set("credit_leased_nano_usd", s.credit_leased_nano_usd);
  set("credit_returned_nano_usd", s.credit_returned_nano_usd);
  set("credit_lost_nano_usd", s.credit_lost_nano_usd);
  set("credit_db_errors", s.credit_db_errors);
  set("rate_limit_sync_failures", s.rate_limit_sync_failures);
}

void Metrics::CountRefusal(std::string_view reason) {
  impl_->refusals.Add({{"reason", std::string(reason)}}).Increment();
}

void Metrics::CountUncharged(std::string_view model, std::string_view provider, int64_t nano_usd) {
  impl_->uncharged.Add({{"model", std::string(model)}, {"provider", std::string(provider)}})
      .Increment(static_cast<double>(nano_usd));
}

void Metrics::CountSoftLimitWarning(std::string_view scope) {
  impl_->soft_limits.Add({{"scope", std::string(scope)}}).Increment();
}

void Metrics::SetEndpoint(std::string_view model, std::string_view endpoint_id, const EndpointState& s) {
  auto set = [&](const char* item, double value) {
    impl_->endpoints.Add({{"model", std::string(model)}, {"endpoint", std::string(endpoint_id)}, {"item", item}})
        .Set(value);
  };
  set("in_flight", static_cast<double>(s.in_flight));
  set("queued", static_cast<double>(s.queued));
  set("circuit", s.circuit);
  set("cooling_down", s.cooling_down ? 1 : 0);
}

void Metrics::SetLocalEngine(std::string_view engine, const LocalEngineState& s) {
  auto set = [&](const char* item, int64_t value) {
    impl_->engines.Add({{"engine", std::string(engine)}, {"item", item}}).Set(static_cast<double>(value));
  };
  set("running", s.running);
  set("queued", s.queued);
  set("max_sequences", s.max_sequences);
  set("max_queue", s.max_queue);
  set("kv_pages_used", s.kv_pages_used);
  set("kv_pages_cached", s.kv_pages_cached);
  set("kv_pages_total", s.kv_pages_total);
  set("preemptions", s.preemptions);
  set("prefix_hit_tokens", s.prefix_hit_tokens);
}

void Metrics::SetLocalEngineInfo(std::string_view engine, std::string_view device) {
  impl_->engine_info.Add({{"engine", std::string(engine)}, {"device", std::string(device)}}).Set(1);
}

std::string Metrics::Serialize() const {
  return prometheus::TextSerializer().Serialize(impl_->registry->Collect());
}

}  // namespace tollgate::gateway
