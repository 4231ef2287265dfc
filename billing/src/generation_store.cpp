#include "tollgate/billing/generation_store.hpp"

#include "pg.hpp"

#include <mutex>

namespace tollgate::billing {

struct GenerationStore::Impl {
  std::mutex mutex;
  internal::PgSession session;
  explicit Impl(std::string url) : session(std::move(url)) {}
};

GenerationStore::GenerationStore(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
GenerationStore::~GenerationStore() = default;

Result<std::unique_ptr<GenerationStore>> GenerationStore::Connect(const std::string& database_url) {
  auto impl = std::make_unique<Impl>(database_url);
  if (auto ok = impl->session.Ensure(); !ok) return ok.error();
  return std::unique_ptr<GenerationStore>(new GenerationStore(std::move(impl)));
}

Result<std::optional<UsageEvent>> GenerationStore::Find(std::string_view request_id,
                                                        std::optional<int64_t> api_key_id) {
  std::lock_guard lock(impl_->mutex);
  // Timestamps as integer microseconds: extract(epoch ...) is numeric since
  // PostgreSQL 14, so the round trip is exact.
  internal::PgOutcome out = impl_->session.Exec(
      "SELECT request_id, api_key_id, model, provider, upstream_model,"
      " prompt_tokens, completion_tokens, cached_tokens, reasoning_tokens, cost_nano_usd,"
      " latency_ms, ttft_ms, status, finish_reason, streamed, cancelled, usage_estimated,"
      " error_code,"
      " (extract(epoch FROM created_at) * 1000000)::bigint,"
      " (extract(epoch FROM finished_at) * 1000000)::bigint, cache_write_tokens,"
      " endpoint_id, account_id, lease_holder, price_snapshot::text, byok, provider_cost_nano_usd "
      "FROM usage_events WHERE request_id = $1 AND ($2::bigint IS NULL OR api_key_id = $2::bigint)"
      // The row's created_at from usage_request_ids lets the executor skip
      // every other daily partition (run-time pruning).
      " AND created_at = (SELECT created_at FROM usage_request_ids WHERE request_id = $1)",
      {std::string(request_id), api_key_id ? internal::PgParam(std::to_string(*api_key_id)) : std::nullopt},
      /*idempotent=*/true);
  if (!out.ok()) {
    impl_->session.DropIfBad();
    return out.ToError("reading generation");
  }
  const PGresult* r = out.result.get();
  if (PQntuples(r) == 0) return std::optional<UsageEvent>();
  using namespace internal;
  UsageEvent e;
  e.request_id = PgText(r, 0, 0);
  e.api_key_id = PgInt64(r, 0, 1);
  e.model = PgText(r, 0, 2);
  e.provider = PgText(r, 0, 3);
  e.upstream_model = PgText(r, 0, 4);
  e.usage.prompt_tokens = PgInt64(r, 0, 5);
  e.usage.completion_tokens = PgInt64(r, 0, 6);
  e.usage.cached_tokens = PgInt64(r, 0, 7);
  e.usage.reasoning_tokens = PgInt64(r, 0, 8);
  e.cost = Money{PgInt64(r, 0, 9)};
  e.latency_ms = PgInt64(r, 0, 10);
  e.ttft_ms = PgOptInt64(r, 0, 11);
  e.status = static_cast<int>(PgInt64(r, 0, 12));
  e.finish_reason = PgOptText(r, 0, 13);
  e.streamed = PgBool(r, 0, 14);
  e.cancelled = PgBool(r, 0, 15);
  e.usage_estimated = PgBool(r, 0, 16);
  e.error_code = PgOptText(r, 0, 17);
  e.created_at = FromEpochMicros(PgInt64(r, 0, 18));
  e.finished_at = FromEpochMicros(PgInt64(r, 0, 19));
  e.usage.cache_write_tokens = PgInt64(r, 0, 20);
  e.endpoint_id = std::string(PgText(r, 0, 21));
  e.account_id = PgInt64(r, 0, 22);
  e.lease_holder = std::string(PgText(r, 0, 23));
  e.price_snapshot = std::string(PgText(r, 0, 24));
  e.byok = PgBool(r, 0, 25);
  if (std::optional<int64_t> provider_cost = PgOptInt64(r, 0, 26)) e.provider_cost = Money{*provider_cost};
  return std::optional<UsageEvent>(std::move(e));
}

}  // namespace tollgate::billing
