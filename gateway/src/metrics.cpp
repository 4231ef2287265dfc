#include "metrics.hpp"

#include "tollgate/core/error.hpp"

#include <prometheus/counter.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>
#include <prometheus/text_serializer.h>

#include <algorithm>
#include <array>
#include <map>
#include <mutex>
#include <set>

namespace tollgate::gateway {

namespace {

using prometheus::BuildCounter;
using prometheus::BuildGauge;
using prometheus::BuildHistogram;
using prometheus::Counter;
using prometheus::Family;
using prometheus::Gauge;
using prometheus::Histogram;

constexpr std::array<int, 16> kStatusLabels{200, 400, 401, 402, 403, 404, 405, 408,
                                            409, 413, 429, 499, 500, 502, 503, 504};

// The routes Handle() in server.cpp names (the /api/v1 prefix is cut before).
constexpr std::string_view kRoutes[] = {
    "/v1/chat/completions", "/v1/completions",   "/v1/messages",          "/v1/messages/count_tokens",
    "/healthz",             "/readyz",           "/metrics",              "/v1/models",
    "/v1/providers",        "/v1/generation",    "/v1/key",               "/v1/credits",
    "/v1/models/{id}/endpoints", "/admin/v1",    "unmatched",             "/v1/stats/models",
    "/v1/stats/cost",       "/v1/stats/timeseries", "/v1/stats/providers", "/v1/stats/calls",
    "/v1/datasets/rankings-daily", "/v1/datasets/app-rankings", "/v1/activity", "/dashboard"};

// Buckets (seconds, tokens/s): from a fast local answer to a long
// reasoning call, about 2.5x apart, so p50/p95 by histogram_quantile stay
// within a bucket's width.
const Histogram::BucketBoundaries kDurationBuckets{0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300};
const Histogram::BucketBoundaries kTtftBuckets{0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60};
const Histogram::BucketBoundaries kThroughputBuckets{1, 5, 10, 20, 30, 50, 75, 100, 150, 200, 300, 500, 1000, 2000};

}  // namespace

struct Metrics::Impl {
  std::shared_ptr<prometheus::Registry> registry = std::make_shared<prometheus::Registry>();
  Family<Counter>& http_requests =
      BuildCounter().Name("tollgate_http_requests_total").Help("HTTP requests by route and status").Register(*registry);
  Family<Counter>& calls =
      BuildCounter()
          .Name("tollgate_calls_total")
          .Help("Model calls (chat, completions, messages) by model, provider (none: no provider was asked) and "
                "final HTTP status")
          .Register(*registry);
  Family<Counter>& tokens =
      BuildCounter()
          .Name("tollgate_tokens_total")
          .Help("Tokens of metered calls by model, provider and kind: prompt, completion, cached_read, cache_write, "
                "reasoning as the provider reported them (cached_read is part of prompt, reasoning part of "
                "completion, as OpenAI reports them); estimated_prompt, estimated_completion for calls whose "
                "provider reported no usage (Tollgate's estimate, billed)")
          .Register(*registry);
  Family<Counter>& usage_not_reported =
      BuildCounter()
          .Name("tollgate_usage_not_reported_total")
          .Help("Metered calls whose provider reported no usable usage (billed by Tollgate's estimate), by model and "
                "provider")
          .Register(*registry);
  Family<Counter>& cost_usd =
      BuildCounter()
          .Name("tollgate_cost_usd_total")
          .Help("Cost charged to callers in USD (BYOK calls: the fee), by model and provider")
          .Register(*registry);
  Family<Counter>& cost_nano =
      BuildCounter()
          .Name("tollgate_cost_nano_usd_total")
          .Help("Cost charged to callers in nano-USD (exact up to 2^53), by model and provider")
          .Register(*registry);
  Family<Histogram>& duration =
      BuildHistogram()
          .Name("tollgate_call_duration_seconds")
          .Help("Duration of successful calls, request received to last byte, by model and provider")
          .Register(*registry);
  Family<Histogram>& ttft = BuildHistogram()
                                .Name("tollgate_time_to_first_token_seconds")
                                .Help("Time from request received to the first output token, by model and provider")
                                .Register(*registry);
  Family<Histogram>& throughput =
      BuildHistogram()
          .Name("tollgate_generation_tokens_per_second")
          .Help("Completion tokens per second of the generation phase (first token to end) of calls with reported "
                "usage, by model and provider")
          .Register(*registry);
  Family<Counter>& upstream_errors =
      BuildCounter()
          .Name("tollgate_upstream_errors_total")
          .Help("Failed attempts at providers by provider and reason: rate_limited, at_capacity, credentials, "
                "timeout, unavailable, bad_response, rejected, server_error, other")
          .Register(*registry);
  Family<Gauge>& background =
      BuildGauge().Name("tollgate_background").Help("Usage recorder and key cache state, by item").Register(*registry);
  Family<Gauge>& calls_in_flight = BuildGauge()
                                       .Name("tollgate_calls_in_flight")
                                       .Help("Model calls admitted past rate limits and not yet ended")
                                       .Register(*registry);
  Family<Gauge>& calls_queued =
      BuildGauge()
          .Name("tollgate_calls_queued")
          .Help("Model calls waiting in the router's capacity queue (every endpoint full), by model")
          .Register(*registry);
  Family<Gauge>& endpoints =
      BuildGauge()
          .Name("tollgate_endpoint_state")
          .Help("Routing state per endpoint: in_flight, queued (its model's capacity queue), circuit (0 closed, 1 "
                "half-open, 2 open), cooling_down (1 after an upstream 429)")
          .Register(*registry);
  Family<Gauge>& endpoint_unavailable =
      BuildGauge()
          .Name("tollgate_endpoint_unavailable_seconds")
          .Help("Seconds until an endpoint takes calls again (open circuit or 429 cooldown); 0 when available")
          .Register(*registry);
  Family<Gauge>& engines =
      BuildGauge()
          .Name("tollgate_local_engine")
          .Help("Local engine load by <provider>/<model file stem>: running, queued, max_sequences, max_queue, "
                "kv_pages_used, kv_pages_cached, kv_pages_total (64 tokens each), preemptions and prefix_hit_tokens "
                "since start")
          .Register(*registry);
  Family<Counter>& engine_generated =
      BuildCounter()
          .Name("tollgate_local_engine_generated_tokens_total")
          .Help("Tokens sampled by a local engine (rate: its tokens/s), by engine")
          .Register(*registry);
  Family<Counter>& engine_processed =
      BuildCounter()
          .Name("tollgate_local_engine_processed_tokens_total")
          .Help("Tokens run through a local engine's model, prompt and generated, by engine")
          .Register(*registry);
  Family<Gauge>& engine_batch_sequences =
      BuildGauge()
          .Name("tollgate_local_engine_batch_sequences")
          .Help("Sequences in a local engine's last batched step (0 when idle), by engine")
          .Register(*registry);
  Family<Gauge>& engine_batch_tokens = BuildGauge()
                                           .Name("tollgate_local_engine_batch_tokens")
                                           .Help("Tokens in a local engine's last batched step, by engine")
                                           .Register(*registry);
  Family<Gauge>& engine_kv_usage =
      BuildGauge()
          .Name("tollgate_local_engine_kv_cache_usage_ratio")
          .Help("Share of a local engine's KV-cache pages held by live sequences (0..1), by engine")
          .Register(*registry);
  Family<Gauge>& engine_info =
      BuildGauge()
          .Name("tollgate_local_engine_info")
          .Help("Local engine by <provider>/<model file stem>, with the device it runs on; always 1")
          .Register(*registry);
  Family<Counter>& config_reloads = BuildCounter()
                                       .Name("tollgate_config_reloads_total")
                                       .Help("Config reloads (SIGHUP, POST /admin/v1/reload) by result")
                                       .Register(*registry);
  Gauge& config_reload_ok = BuildGauge()
                                .Name("tollgate_config_last_reload_successful")
                                .Help("1 when the last config reload succeeded (or none was tried), else 0")
                                .Register(*registry)
                                .Add({}, 1);
  Gauge& connections_open = BuildGauge()
                                .Name("tollgate_connections_open")
                                .Help("Client connections open now")
                                .Register(*registry)
                                .Add({});
  Family<Counter>& connections_refused =
      BuildCounter()
          .Name("tollgate_connections_refused_total")
          .Help("Client connections closed at accept, by the limit passed: total, per_client")
          .Register(*registry);
  Family<Counter>& limit_rejections =
      BuildCounter()
          .Name("tollgate_limit_rejections_total")
          .Help("Requests refused by a server limit, by limit (server.max_* and the read timeouts)")
          .Register(*registry);
  Family<Counter>& refusals =
      BuildCounter()
          .Name("tollgate_admission_refusals_total")
          .Help("Calls refused before they started: payment_required:<pot>, rate_limited:<limit>, credit_unavailable")
          .Register(*registry);
  Family<Counter>& uncharged =
      BuildCounter()
          .Name("tollgate_uncharged_nano_usd_total")
          .Help("Provider cost of calls above what they were charged (above their credit reservation), by model and "
                "provider")
          .Register(*registry);
  Family<Counter>& soft_limits = BuildCounter()
                                     .Name("tollgate_soft_limit_warnings_total")
                                     .Help("Calls admitted past a soft limit (key, budget or credits), by scope")
                                     .Register(*registry);

  // The catalog's models and providers: replaced whole by a config reload
  // while calls are counted on other threads.
  struct KnownLabels {
    std::set<std::string, std::less<>> models;
    std::set<std::string, std::less<>> providers;
  };
  std::atomic<std::shared_ptr<const KnownLabels>> known{std::make_shared<const KnownLabels>()};
  // The label of a model or provider: itself when known, else "other" (a
  // bounded label set). Views into the argument or a literal.
  std::string_view ModelLabel(std::string_view model) const {
    return known.load()->models.contains(model) ? model : "other";
  }
  std::string_view ProviderLabel(std::string_view provider) const {
    return known.load()->providers.contains(provider) ? provider : "other";
  }

  // The series of one (model, provider) pair that every metered call
  // touches, looked up once: Family::Add builds a label map and hashes it
  // under the family's lock on every call, and a call touches ten of them.
  // Slots fill on first use, so the exported series are the same as without
  // the cache. Families never remove a series, so the pointers stay valid.
  struct PairSeries {
    std::array<Counter*, kStatusLabels.size() + 1> calls{};  // by place in kStatusLabels; the last: "other"
    std::array<Counter*, 7> tokens{};                        // by place in CountMeteredCall's kKinds
    Counter* usage_not_reported = nullptr;
    Counter* cost_usd = nullptr;
    Counter* cost_nano = nullptr;
    Histogram* duration = nullptr;
    Histogram* ttft = nullptr;
    Histogram* throughput = nullptr;
  };
  std::mutex pairs_mu;
  // model label -> provider label -> series; guarded by pairs_mu
  std::map<std::string, std::map<std::string, PairSeries, std::less<>>, std::less<>> pairs;
  // The engines' counters as last exported, so their growth is added.
  std::mutex engines_mu;
  std::map<std::string, std::pair<int64_t, int64_t>, std::less<>> engine_totals;  // guarded by engines_mu
};

Metrics::Metrics() : impl_(std::make_unique<Impl>()) {}
Metrics::~Metrics() = default;

void Metrics::SetKnownLabels(const std::vector<std::string>& models, const std::vector<std::string>& providers) {
  auto labels = std::make_shared<Impl::KnownLabels>();
  labels->models = {models.begin(), models.end()};
  labels->providers = {providers.begin(), providers.end()};
  impl_->known.store(std::move(labels));
}

std::string Metrics::ModelLabel(std::string_view model) const { return std::string(impl_->ModelLabel(model)); }

std::string Metrics::ProviderLabel(std::string_view provider) const {
  return std::string(impl_->ProviderLabel(provider));
}

std::string Metrics::StatusLabel(int status) {
  for (int s : kStatusLabels) {
    if (s == status) return std::to_string(status);
  }
  return "other";
}

std::string Metrics::RouteLabel(std::string_view route) {
  for (std::string_view r : kRoutes) {
    if (r == route) return std::string(r);
  }
  if (route.starts_with("/dashboard/")) return "/dashboard";
  return "other";
}

std::optional<std::string> Metrics::UpstreamErrorReason(const billing::AttemptRecord& a) {
  if (a.outcome == "served" || a.outcome == "hedge_lost" || a.outcome == "cancelled") return std::nullopt;
  if (a.outcome == "rate_limited") return "rate_limited";
  if (a.outcome == "at_capacity") return "at_capacity";
  if (a.error_code == kProviderCredentialsRejected) return "credentials";
  if (a.outcome == "rejected") return "rejected";
  switch (a.status) {
    case 408:
    case 504: return "timeout";
    case 503: return "unavailable";
    case 502: return "bad_response";
    case 500: return "server_error";
    case 429: return "rate_limited";
    default: break;
  }
  return "other";
}

void Metrics::CountRequest(std::string_view route, int status) {
  impl_->http_requests.Add({{"route", RouteLabel(route)}, {"status", StatusLabel(status)}}).Increment();
}

void Metrics::CountUnmeteredCall(std::string_view model, int status,
                                 const std::vector<billing::AttemptRecord>& attempts) {
  const std::string provider = attempts.empty() ? std::string("none") : ProviderLabel(attempts.back().provider);
  impl_->calls.Add({{"model", ModelLabel(model)}, {"provider", provider}, {"status", StatusLabel(status)}})
      .Increment();
  for (const billing::AttemptRecord& a : attempts) {
    if (auto reason = UpstreamErrorReason(a)) {
      impl_->upstream_errors.Add({{"provider", ProviderLabel(a.provider)}, {"reason", *reason}}).Increment();
    }
  }
}

void Metrics::CountMeteredCall(const billing::UsageEvent& e) {
  Impl& x = *impl_;
  const std::string_view m = x.ModelLabel(e.model);
  const std::string_view p = x.ProviderLabel(e.provider);
  const auto labels = [&]() -> std::map<std::string, std::string> {
    return {{"model", std::string(m)}, {"provider", std::string(p)}};
  };
  {
    std::lock_guard lock(x.pairs_mu);
    auto by_model = x.pairs.find(m);
    if (by_model == x.pairs.end()) by_model = x.pairs.try_emplace(std::string(m)).first;
    auto by_provider = by_model->second.find(p);
    if (by_provider == by_model->second.end()) by_provider = by_model->second.try_emplace(std::string(p)).first;
    Impl::PairSeries& ps = by_provider->second;
    const auto status = std::ranges::find(kStatusLabels, e.status);
    Counter*& calls = ps.calls[static_cast<size_t>(status - kStatusLabels.begin())];
    if (calls == nullptr) {
      auto l = labels();
      l["status"] = StatusLabel(e.status);
      calls = &x.calls.Add(l);
    }
    calls->Increment();
    // Every kind's series exists from a model's first call on, zero or not,
    // so rate() over it starts at the right time.
    static constexpr std::array<const char*, 7> kKinds{"estimated_prompt", "estimated_completion", "prompt",
                                                       "completion", "cached_read", "cache_write", "reasoning"};
    auto add_tokens = [&](size_t kind, int64_t n) {
      Counter*& c = ps.tokens[kind];
      if (c == nullptr) {
        auto l = labels();
        l["kind"] = kKinds[kind];
        c = &x.tokens.Add(l);
      }
      c->Increment(static_cast<double>(std::max<int64_t>(n, 0)));
    };
    auto series = [&](auto*& slot, auto& family, auto&&... extra) -> auto& {
      if (slot == nullptr) slot = &family.Add(labels(), extra...);
      return *slot;
    };
    if (e.usage_estimated) {
      add_tokens(0, e.usage.prompt_tokens);
      add_tokens(1, e.usage.completion_tokens);
      series(ps.usage_not_reported, x.usage_not_reported).Increment();
    } else {
      add_tokens(2, e.usage.prompt_tokens);
      add_tokens(3, e.usage.completion_tokens);
      add_tokens(4, e.usage.cached_tokens);
      add_tokens(5, e.usage.cache_write_tokens);
      add_tokens(6, e.usage.reasoning_tokens);
    }
    const int64_t cost = std::max<int64_t>(e.cost.nano_usd, 0);
    series(ps.cost_usd, x.cost_usd).Increment(static_cast<double>(cost) / 1e9);
    series(ps.cost_nano, x.cost_nano).Increment(static_cast<double>(cost));
    if (e.status == 200) series(ps.duration, x.duration, kDurationBuckets).Observe(e.latency_ms / 1000.0);
    if (e.ttft_ms) series(ps.ttft, x.ttft, kTtftBuckets).Observe(*e.ttft_ms / 1000.0);
    // Generation throughput as routing's health measures it: completion
    // tokens over the time from the first token to the end.
    if (!e.usage_estimated && e.ttft_ms && e.latency_ms > *e.ttft_ms && e.usage.completion_tokens > 0) {
      const double tps =
          static_cast<double>(e.usage.completion_tokens) * 1000.0 / static_cast<double>(e.latency_ms - *e.ttft_ms);
      series(ps.throughput, x.throughput, kThroughputBuckets).Observe(tps);
    }
  }
  for (const billing::AttemptRecord& a : e.attempts) {
    if (auto reason = UpstreamErrorReason(a)) {
      x.upstream_errors.Add({{"provider", ProviderLabel(a.provider)}, {"reason", *reason}}).Increment();
    }
  }
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

void Metrics::CountConfigReload(bool ok) {
  impl_->config_reloads.Add({{"result", ok ? "success" : "failure"}}).Increment();
  impl_->config_reload_ok.Set(ok ? 1 : 0);
}

void Metrics::AddOpenConnections(int delta) { impl_->connections_open.Increment(delta); }

void Metrics::CountConnectionRefused(std::string_view reason) {
  impl_->connections_refused.Add({{"reason", std::string(reason)}}).Increment();
}

void Metrics::CountLimitRejection(std::string_view limit) {
  impl_->limit_rejections.Add({{"limit", std::string(limit)}}).Increment();
}

void Metrics::CountRefusal(std::string_view reason) {
  impl_->refusals.Add({{"reason", std::string(reason)}}).Increment();
}

void Metrics::CountUncharged(std::string_view model, std::string_view provider, int64_t nano_usd) {
  impl_->uncharged.Add({{"model", ModelLabel(model)}, {"provider", ProviderLabel(provider)}})
      .Increment(static_cast<double>(nano_usd));
}

void Metrics::CountSoftLimitWarning(std::string_view scope) {
  impl_->soft_limits.Add({{"scope", std::string(scope)}}).Increment();
}

void Metrics::SetCallsInFlight(int64_t calls) { impl_->calls_in_flight.Add({}).Set(static_cast<double>(calls)); }

void Metrics::SetCallsQueued(std::string_view model, int64_t calls) {
  impl_->calls_queued.Add({{"model", ModelLabel(model)}}).Set(static_cast<double>(calls));
}

void Metrics::SetEndpoint(std::string_view model, std::string_view endpoint_id, const EndpointState& s) {
  const std::string m = ModelLabel(model);
  auto set = [&](const char* item, double value) {
    impl_->endpoints.Add({{"model", m}, {"endpoint", std::string(endpoint_id)}, {"item", item}}).Set(value);
  };
  set("in_flight", static_cast<double>(s.in_flight));
  set("queued", static_cast<double>(s.queued));
  set("circuit", s.circuit);
  set("cooling_down", s.cooling_down ? 1 : 0);
  impl_->endpoint_unavailable.Add({{"model", m}, {"endpoint", std::string(endpoint_id)}}).Set(s.unavailable_seconds);
}

void Metrics::SetLocalEngine(std::string_view engine, const LocalEngineState& s) {
  const std::string name(engine);
  auto set = [&](const char* item, int64_t value) {
    impl_->engines.Add({{"engine", name}, {"item", item}}).Set(static_cast<double>(value));
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
  impl_->engine_batch_sequences.Add({{"engine", name}}).Set(static_cast<double>(s.batch_sequences));
  impl_->engine_batch_tokens.Add({{"engine", name}}).Set(static_cast<double>(s.batch_tokens));
  impl_->engine_kv_usage.Add({{"engine", name}})
      .Set(s.kv_pages_total > 0 ? static_cast<double>(s.kv_pages_used) / static_cast<double>(s.kv_pages_total) : 0.0);
  // The engine keeps running totals; a counter only goes up, by their growth
  // since the last scrape (concurrent scrapes add each growth once).
  std::lock_guard lock(impl_->engines_mu);
  auto& [generated, processed] = impl_->engine_totals[name];
  impl_->engine_generated.Add({{"engine", name}})
      .Increment(static_cast<double>(std::max<int64_t>(s.generated_tokens - generated, 0)));
  impl_->engine_processed.Add({{"engine", name}})
      .Increment(static_cast<double>(std::max<int64_t>(s.processed_tokens - processed, 0)));
  generated = std::max(generated, s.generated_tokens);
  processed = std::max(processed, s.processed_tokens);
}

void Metrics::SetLocalEngineInfo(std::string_view engine, std::string_view device) {
  impl_->engine_info.Add({{"engine", std::string(engine)}, {"device", std::string(device)}}).Set(1);
}

std::string Metrics::Serialize() const {
  return prometheus::TextSerializer().Serialize(impl_->registry->Collect());
}

}  // namespace tollgate::gateway
