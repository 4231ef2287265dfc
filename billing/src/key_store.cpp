#include "tollgate/billing/key_store.hpp"

#include "pg.hpp"
#include "tollgate/billing/api_key.hpp"

#include <mutex>
#include <stdexcept>

namespace tollgate::billing {

using internal::PgOutcome;
using internal::PgParam;

struct KeyStore::Impl {
  std::mutex mutex;
  internal::PgSession session;
  explicit Impl(std::string url) : session(std::move(url)) {}
};

namespace {

PgParam LimitParam(const std::optional<Money>& limit) {
  if (!limit) return std::nullopt;
  return std::to_string(limit->nano_usd);
}

Result<void> CheckLimit(const std::optional<Money>& limit) {
  if (limit && limit->nano_usd < 0) {
    return InvalidArgument("credit limit must not be negative", "credit_limit");
  }
  return {};
}

}  // namespace

KeyStore::KeyStore(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
KeyStore::~KeyStore() = default;

Result<std::unique_ptr<KeyStore>> KeyStore::Connect(const std::string& database_url) {
  auto impl = std::make_unique<Impl>(database_url);
  if (auto ok = impl->session.Ensure(); !ok) return ok.error();
  return std::unique_ptr<KeyStore>(new KeyStore(std::move(impl)));
}

Result<CreatedKey> KeyStore::Create(std::string name, std::optional<Money> credit_limit) {
  if (name.empty()) return InvalidArgument("key name must not be empty", "name");
  if (auto ok = CheckLimit(credit_limit); !ok) return ok.error();
  std::string key;
  try {
    key = GenerateApiKey();
  } catch (const std::exception& e) {
    return Error{ErrorCode::kInternal, e.what(), {}, {}};
  }
  std::lock_guard lock(impl_->mutex);
  // Not idempotent: a lost reply would leave a key whose plaintext nobody has.
  PgOutcome out = impl_->session.Exec(
      "WITH account AS (INSERT INTO accounts (name, prepaid) VALUES ($1, false) RETURNING id) "
      "INSERT INTO api_keys (name, key_hash, credit_limit_nano_usd, account_id) "
      "SELECT $1, $2, $3::bigint, account.id FROM account RETURNING id",
      {std::move(name), HashApiKey(key), LimitParam(credit_limit)},
      /*idempotent=*/false);
  if (!out.ok()) return out.ToError("creating API key");
  return CreatedKey{internal::PgInt64(out.result.get(), 0, 0), std::move(key)};
}

Result<std::vector<KeyInfo>> KeyStore::List() {
  std::lock_guard lock(impl_->mutex);
  PgOutcome out = impl_->session.Exec(
      "SELECT id, name, key_hash, credit_limit_nano_usd, spent_nano_usd,"
      " to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'),"
      " revoked_at IS NOT NULL "
      "FROM api_keys ORDER BY id",
      {}, /*idempotent=*/true);
  if (!out.ok()) return out.ToError("listing API keys");
  const PGresult* r = out.result.get();
  std::vector<KeyInfo> keys;
  keys.reserve(PQntuples(r));
  for (int row = 0; row < PQntuples(r); ++row) {
    KeyInfo info;
    info.id = internal::PgInt64(r, row, 0);
    info.name = internal::PgText(r, row, 1);
    info.prefix = ApiKeyLabel(internal::PgText(r, row, 2));
    if (auto limit = internal::PgOptInt64(r, row, 3)) info.credit_limit = Money{*limit};
    info.spent = Money{internal::PgInt64(r, row, 4)};
    info.created_at = internal::PgText(r, row, 5);
    info.revoked = internal::PgBool(r, row, 6);
    keys.push_back(std::move(info));
  }
  return keys;
}

Result<bool> KeyStore::Revoke(int64_t id) {
  std::lock_guard lock(impl_->mutex);
  // Idempotent: a second run finds the key already revoked. The answer then
  // says false, which is what the state is.
  PgOutcome out = impl_->session.Exec(
      "UPDATE api_keys SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL",
      {std::to_string(id)}, /*idempotent=*/true);
  if (!out.ok()) return out.ToError("revoking API key");
  return std::string_view(PQcmdTuples(out.result.get())) == "1";
}

Result<bool> KeyStore::SetCreditLimit(int64_t id, std::optional<Money> credit_limit) {
  if (auto ok = CheckLimit(credit_limit); !ok) return ok.error();
  std::lock_guard lock(impl_->mutex);
  PgOutcome out = impl_->session.Exec(
      "UPDATE api_keys SET credit_limit_nano_usd = $2::bigint WHERE id = $1",
      {std::to_string(id), LimitParam(credit_limit)}, /*idempotent=*/true);
  if (!out.ok()) return out.ToError("setting credit limit");
  return std::string_view(PQcmdTuples(out.result.get())) == "1";
}

}  // namespace tollgate::billing
