#include "tollgate/billing/account_store.hpp"

#include "pg.hpp"
#include "tollgate/billing/api_key.hpp"

#include <boost/json.hpp>
#include <openssl/crypto.h>
#include <openssl/evp.h>

#include <algorithm>
#include <array>
#include <charconv>
#include <mutex>
#include <set>
#include <stdexcept>

namespace tollgate::billing {

using internal::PgExec;
using internal::PgOutcome;
using internal::PgParam;
using internal::PgSession;

struct AccountStore::Impl {
  std::mutex mutex;
  PgSession session;
  std::optional<SecretBox> box;
  Impl(std::string url, std::optional<SecretBox> b) : session(std::move(url)), box(std::move(b)) {}
};

namespace {

constexpr size_t kMaxNameBytes = 200;
constexpr size_t kMaxReasonBytes = 1000;
constexpr size_t kMaxIdempotencyKeyBytes = 200;
constexpr size_t kMaxProviderBytes = 64;
constexpr size_t kMaxSecretBytes = 4096;
constexpr int64_t kMaxMovementNanoUsd = 1'000'000'000LL * 1'000'000'000LL;  // 1e9 USD
constexpr int64_t kMaxFeePpm = 1'000'000;
constexpr std::string_view kAdminKeyPrefix = "admin:";

// ------------------------------------------------------------------ small helpers

Error NotFound(std::string message, std::string param = {}) {
  return Error{ErrorCode::kNotFound, std::move(message), std::move(param), {}};
}
Error Conflict(std::string message, std::string param = {}) {
  return Error{ErrorCode::kConflict, std::move(message), std::move(param), {}};
}

std::string Usd(Money m) { return "$" + FormatUsd(m); }

PgParam Int(int64_t v) { return std::to_string(v); }
PgParam OptInt(const std::optional<int64_t>& v) {
  if (!v) return std::nullopt;
  return std::to_string(*v);
}
PgParam OptMoney(const std::optional<Money>& v) {
  if (!v) return std::nullopt;
  return std::to_string(v->nano_usd);
}
PgParam OptTime(const std::optional<TimePoint>& v) {
  if (!v) return std::nullopt;
  return internal::PgTimestamp(*v);
}
PgParam OptModels(const std::optional<std::vector<std::string>>& models) {
  if (!models) return std::nullopt;
  boost::json::array a;
  for (const auto& m : *models) a.emplace_back(m);
  return boost::json::serialize(a);
}
// $n: a JSON array of strings (or NULL) as text[] in the same order.
std::string ModelsSql(int n) {
  std::string p = "$" + std::to_string(n);
  return "(CASE WHEN " + p + "::jsonb IS NULL THEN NULL ELSE ARRAY(SELECT e FROM jsonb_array_elements_text(" + p +
         "::jsonb) WITH ORDINALITY AS t(e, o) ORDER BY o) END)";
}

std::optional<TimePoint> OptTimeAt(const PGresult* r, int row, int col) {
  if (auto micros = internal::PgOptInt64(r, row, col)) return internal::FromEpochMicros(*micros);
  return std::nullopt;
}
std::optional<Money> OptMoneyAt(const PGresult* r, int row, int col) {
  if (auto v = internal::PgOptInt64(r, row, col)) return Money{*v};
  return std::nullopt;
}
LimitReset ResetAt(const PGresult* r, int row, int col) {
  return ParseLimitReset(internal::PgText(r, row, col)).value_or(LimitReset::kNone);
}
int Rows(const PgOutcome& out) { return PQntuples(out.result.get()); }

bool HasControl(std::string_view s) {
  for (unsigned char c : s) {
    if (c < 0x20 || c == 0x7f) return true;
  }
  return false;
}

// ------------------------------------------------------------------ validation

Result<void> CheckName(std::string_view name, const char* field) {
  if (name.empty()) return InvalidArgument(std::string(field) + " must not be empty", field);
  if (name.size() > kMaxNameBytes) {
    return InvalidArgument(std::string(field) + " must be at most " + std::to_string(kMaxNameBytes) + " bytes", field);
  }
  if (HasControl(name)) return InvalidArgument(std::string(field) + " must not contain control characters", field);
  return {};
}

Result<void> CheckAmount(const std::optional<Money>& m, const char* field) {
  if (m && m->nano_usd < 0) return InvalidArgument(std::string(field) + " must not be negative", field);
  return {};
}

Result<void> CheckPositive(const std::optional<int64_t>& v, const char* field) {
  if (v && *v <= 0) return InvalidArgument(std::string(field) + " must be a positive integer", field);
  return {};
}

Result<void> CheckFee(const std::optional<int64_t>& ppm) {
  if (ppm && (*ppm < 0 || *ppm > kMaxFeePpm)) {
    return InvalidArgument("byok_fee_ppm must be between 0 and 1000000 (millionths of the provider's cost)",
                           "byok_fee_ppm");
  }
  return {};
}

Result<void> CheckModels(const std::optional<std::vector<std::string>>& models) {
  if (!models) return {};
  if (models->empty()) {
    return InvalidArgument("allowed_models must not be empty (null allows every model; revoke a key to stop it)",
                           "allowed_models");
  }
  std::set<std::string_view> seen;
  for (const auto& m : *models) {
    if (m.empty() || m.size() > kMaxNameBytes || HasControl(m)) {
      return InvalidArgument("allowed_models entries must be model slugs of 1 to 200 printable bytes",
                             "allowed_models");
    }
    if (!seen.insert(m).second) return InvalidArgument("allowed_models lists '" + m + "' twice", "allowed_models");
  }
  return {};
}

Result<void> CheckProvider(std::string_view provider) {
  if (provider.empty() || provider.size() > kMaxProviderBytes) {
    return InvalidArgument("provider must be a provider id of 1 to 64 characters", "provider");
  }
  for (char c : provider) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
              c == '-';
    if (!ok) return InvalidArgument("provider must consist of letters, digits, '.', '_' and '-'", "provider");
  }
  return {};
}

#define TG_TRY(expr)                      \
  do {                                    \
    if (auto ok_ = (expr); !ok_) return ok_.error(); \
  } while (0)

// ------------------------------------------------------------------ transactions

// One transaction on the session's connection; rolled back unless committed.
class Tx {
 public:
  explicit Tx(PgSession& session) : session_(session) {}
  ~Tx() {
    if (open_) PgExec(session_.conn(), "ROLLBACK");
    session_.DropIfBad();
  }
  Tx(const Tx&) = delete;
  Tx& operator=(const Tx&) = delete;

  // BEGIN may reconnect once (nothing has happened yet).
  PgOutcome Begin(const std::string& begin = "BEGIN") {
    PgOutcome out = session_.Exec(begin, {}, /*idempotent=*/true);
    open_ = out.ok();
    return out;
  }
  PgOutcome Exec(const std::string& sql, const std::vector<PgParam>& params = {}) {
    return PgExec(session_.conn(), sql, params);
  }
  PgOutcome Commit() {
    PgOutcome out = Exec("COMMIT");
    open_ = false;
    return out;
  }

 private:
  PgSession& session_;
  bool open_ = false;
};

// ------------------------------------------------------------------ rows

// accounts a: the columns AccountAt reads.
constexpr const char* kAccountColumns =
    "a.id, a.name, a.prepaid, a.balance_nano_usd, a.budget_nano_usd, a.budget_reset,"
    " COALESCE((SELECT p.usage_nano_usd FROM period_usage p WHERE p.scope = 'budget' AND p.owner_id = a.id"
    "   AND p.period_start = tollgate_period_start(a.budget_reset, now())), 0),"
    " a.soft_limit_nano_usd, a.byok_fee_ppm,"
    " COALESCE((SELECT sum(l.amount_nano_usd) FROM credit_leases l WHERE l.scope = 'credits'"
    "   AND l.owner_id = a.id AND l.expires_at > now()), 0)::bigint,"
    " (extract(epoch FROM a.disabled_at) * 1000000)::bigint,"
    " (extract(epoch FROM a.created_at) * 1000000)::bigint";

AccountInfo AccountAt(const PGresult* r, int row) {
  AccountInfo a;
  a.id = internal::PgInt64(r, row, 0);
  a.name = internal::PgText(r, row, 1);
  a.prepaid = internal::PgBool(r, row, 2);
  a.balance = Money{internal::PgInt64(r, row, 3)};
  a.budget = OptMoneyAt(r, row, 4);
  a.budget_reset = ResetAt(r, row, 5);
  a.budget_period_usage = Money{internal::PgInt64(r, row, 6)};
  a.soft_limit = OptMoneyAt(r, row, 7);
  a.byok_fee_ppm = internal::PgInt64(r, row, 8);
  a.leased_credits = Money{internal::PgInt64(r, row, 9)};
  a.disabled_at = OptTimeAt(r, row, 10);
  a.disabled = a.disabled_at.has_value();
  a.created_at = internal::FromEpochMicros(internal::PgInt64(r, row, 11));
  return a;
}

constexpr const char* kKeyColumns =
    "k.id, k.account_id, k.name, k.key_hash, k.credit_limit_nano_usd, k.limit_reset, k.soft_limit_nano_usd,"
    " (extract(epoch FROM k.expires_at) * 1000000)::bigint, array_to_json(k.allowed_models)::text,"
    " k.requests_per_minute, k.tokens_per_minute, k.max_concurrent, k.spent_nano_usd,"
    " (extract(epoch FROM k.revoked_at) * 1000000)::bigint, (extract(epoch FROM k.created_at) * 1000000)::bigint";

KeyDetails KeyAt(const PGresult* r, int row) {
  KeyDetails k;
  k.id = internal::PgInt64(r, row, 0);
  k.account_id = internal::PgInt64(r, row, 1);
  k.name = internal::PgText(r, row, 2);
  k.label = ApiKeyLabel(internal::PgText(r, row, 3));
  k.limit = OptMoneyAt(r, row, 4);
  k.limit_reset = ResetAt(r, row, 5);
  k.soft_limit = OptMoneyAt(r, row, 6);
  k.expires_at = OptTimeAt(r, row, 7);
  if (auto json = internal::PgOptText(r, row, 8)) {
    std::vector<std::string> models;
    boost::system::error_code ec;
    boost::json::value v = boost::json::parse(*json, ec);
    if (!ec && v.is_array()) {
      for (const auto& m : v.as_array()) {
        if (m.is_string()) models.emplace_back(m.as_string());
      }
    }
    k.allowed_models = std::move(models);
  }
  k.requests_per_minute = internal::PgOptInt64(r, row, 9);
  k.tokens_per_minute = internal::PgOptInt64(r, row, 10);
  k.max_concurrent = internal::PgOptInt64(r, row, 11);
  k.spent = Money{internal::PgInt64(r, row, 12)};
  k.revoked_at = OptTimeAt(r, row, 13);
  k.revoked = k.revoked_at.has_value();
  k.created_at = internal::FromEpochMicros(internal::PgInt64(r, row, 14));
  return k;
}

constexpr const char* kLedgerColumns =
    "id, account_id, amount_nano_usd, kind, idempotency_key, reason, request_id, api_key_id,"
    " (extract(epoch FROM created_at) * 1000000)::bigint";

LedgerEntry LedgerAt(const PGresult* r, int row) {
  LedgerEntry e;
  e.id = internal::PgInt64(r, row, 0);
  e.account_id = internal::PgInt64(r, row, 1);
  e.amount = Money{internal::PgInt64(r, row, 2)};
  e.kind = internal::PgText(r, row, 3);
  e.idempotency_key = internal::PgText(r, row, 4);
  e.reason = internal::PgText(r, row, 5);
  e.request_id = internal::PgOptText(r, row, 6);
  e.api_key_id = internal::PgOptInt64(r, row, 7);
  e.created_at = internal::FromEpochMicros(internal::PgInt64(r, row, 8));
  return e;
}

constexpr const char* kProviderKeyColumns =
    "account_id, provider, label, (extract(epoch FROM created_at) * 1000000)::bigint";

ProviderKeyInfo ProviderKeyAt(const PGresult* r, int row) {
  ProviderKeyInfo p;
  p.account_id = internal::PgInt64(r, row, 0);
  p.provider = internal::PgText(r, row, 1);
  p.label = internal::PgText(r, row, 2);
  p.created_at = internal::FromEpochMicros(internal::PgInt64(r, row, 3));
  return p;
}

// A database refusal of the values (class 22: out of range; 23: a
// constraint) is the caller's, not ours.
Error ToError(const PgOutcome& out, std::string_view what) {
  if (out.permanent() && out.sqlstate != "23505") {
    return InvalidArgument(std::string(what) + ": the database refused the values: " + out.message);
  }
  return out.ToError(what);
}

Result<AccountInfo> SelectAccount(PgSession& s, int64_t id) {
  PgOutcome out = s.Exec(std::string("SELECT ") + kAccountColumns + " FROM accounts a WHERE a.id = $1", {Int(id)},
                         /*idempotent=*/true);
  if (!out.ok()) return ToError(out, "reading account");
  if (Rows(out) == 0) return NotFound("no account " + std::to_string(id), "account_id");
  return AccountAt(out.result.get(), 0);
}

Result<KeyDetails> SelectKey(PgSession& s, int64_t id) {
  PgOutcome out = s.Exec(std::string("SELECT ") + kKeyColumns + " FROM api_keys k WHERE k.id = $1", {Int(id)},
                         /*idempotent=*/true);
  if (!out.ok()) return ToError(out, "reading key");
  if (Rows(out) == 0) return NotFound("no key " + std::to_string(id), "key_id");
  return KeyAt(out.result.get(), 0);
}

Result<void> AccountExists(PgSession& s, int64_t id) {
  PgOutcome out = s.Exec("SELECT 1 FROM accounts WHERE id = $1", {Int(id)}, /*idempotent=*/true);
  if (!out.ok()) return ToError(out, "reading account");
  if (Rows(out) == 0) return NotFound("no account " + std::to_string(id), "account_id");
  return {};
}

// Builds "col = $n" clauses of an UPDATE.
class SetList {
 public:
  explicit SetList(std::vector<PgParam> first) : params_(std::move(first)) {}
  void Add(const std::string& column, PgParam value, const std::string& wrap = "") {
    params_.push_back(std::move(value));
    std::string p = "$" + std::to_string(params_.size());
    Raw(column + " = " + (wrap.empty() ? p : p + "::" + wrap));
  }
  void AddSql(const std::string& column, PgParam value, const std::string& sql_with_placeholder) {
    params_.push_back(std::move(value));
    std::string sql = sql_with_placeholder;
    std::string p = "$" + std::to_string(params_.size());
    for (size_t at; (at = sql.find("$?")) != std::string::npos;) sql.replace(at, 2, p);
    Raw(column + " = " + sql);
  }
  void Raw(const std::string& clause) {
    if (!sql_.empty()) sql_ += ", ";
    sql_ += clause;
  }
  bool empty() const { return sql_.empty(); }
  const std::string& sql() const { return sql_; }
  const std::vector<PgParam>& params() const { return params_; }

 private:
  std::vector<PgParam> params_;
  std::string sql_;
};

}  // namespace

// ------------------------------------------------------------------ free helpers

std::string ProviderKeyAssociatedData(int64_t account_id, std::string_view provider) {
  return "provider_keys:" + std::to_string(account_id) + ":" + std::string(provider);
}

std::string FormatTimestamp(TimePoint time) {
  using namespace std::chrono;
  auto secs = floor<seconds>(time);
  auto day = floor<days>(secs);
  year_month_day ymd{day};
  hh_mm_ss hms{secs - day};
  char buf[40];
  std::snprintf(buf, sizeof buf, "%04d-%02u-%02uT%02d:%02d:%02dZ", static_cast<int>(ymd.year()),
                static_cast<unsigned>(ymd.month()), static_cast<unsigned>(ymd.day()),
                static_cast<int>(hms.hours().count()), static_cast<int>(hms.minutes().count()),
                static_cast<int>(hms.seconds().count()));
  return buf;
}

std::optional<TimePoint> ParseTimestamp(std::string_view text) {
  using namespace std::chrono;
  size_t pos = 0;
  auto digits = [&](size_t n, int& out) {
    if (pos + n > text.size()) return false;
    out = 0;
    for (size_t i = 0; i < n; ++i) {
      char c = text[pos + i];
      if (c < '0' || c > '9') return false;
      out = out * 10 + (c - '0');
    }
    pos += n;
    return true;
  };
  auto expect = [&](std::string_view chars) {
    if (pos >= text.size() || chars.find(text[pos]) == std::string_view::npos) return false;
    ++pos;
    return true;
  };
  int y, mo, d, h, mi, s;
  if (!digits(4, y) || !expect("-") || !digits(2, mo) || !expect("-") || !digits(2, d) || !expect("Tt ") ||
      !digits(2, h) || !expect(":") || !digits(2, mi) || !expect(":") || !digits(2, s)) {
    return std::nullopt;
  }
  int64_t frac_ns = 0;
  if (pos < text.size() && text[pos] == '.') {
    ++pos;
    size_t start = pos;
    int64_t scale = 100'000'000;
    while (pos < text.size() && text[pos] >= '0' && text[pos] <= '9') {
      if (pos - start < 9) frac_ns += (text[pos] - '0') * scale, scale /= 10;
      ++pos;
    }
    if (pos == start) return std::nullopt;
  }
  int offset_min = 0;
  if (pos < text.size() && (text[pos] == 'Z' || text[pos] == 'z')) {
    ++pos;
  } else if (pos < text.size() && (text[pos] == '+' || text[pos] == '-')) {
    int sign = text[pos] == '-' ? -1 : 1;
    ++pos;
    int oh, om;
    if (!digits(2, oh) || !expect(":") || !digits(2, om) || oh > 23 || om > 59) return std::nullopt;
    offset_min = sign * (oh * 60 + om);
  } else {
    return std::nullopt;
  }
  if (pos != text.size()) return std::nullopt;
  year_month_day ymd{year{y}, month{static_cast<unsigned>(mo)}, day{static_cast<unsigned>(d)}};
  if (!ymd.ok() || h > 23 || mi > 59 || s > 60) return std::nullopt;
  auto tp = sys_days{ymd} + hours{h} + minutes{mi} + seconds{s} - minutes{offset_min};
  return time_point_cast<system_clock::duration>(tp + nanoseconds{frac_ns});
}

bool SecretEquals(std::string_view a, std::string_view b) {
  std::array<unsigned char, EVP_MAX_MD_SIZE> da{}, db{};
  unsigned int la = 0, lb = 0;
  bool ok = EVP_Digest(a.data(), a.size(), da.data(), &la, EVP_sha256(), nullptr) == 1 &&
            EVP_Digest(b.data(), b.size(), db.data(), &lb, EVP_sha256(), nullptr) == 1 && la == lb;
  // Hashing first makes the compared lengths equal whatever the inputs.
  return ok && CRYPTO_memcmp(da.data(), db.data(), la) == 0;
}

// ------------------------------------------------------------------ store

AccountStore::AccountStore(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
AccountStore::~AccountStore() = default;

Result<std::unique_ptr<AccountStore>> AccountStore::Connect(const std::string& database_url,
                                                            std::optional<SecretBox> secret_box) {
  auto impl = std::make_unique<Impl>(database_url, std::move(secret_box));
  if (auto ok = impl->session.Ensure(); !ok) return ok.error();
  return std::unique_ptr<AccountStore>(new AccountStore(std::move(impl)));
}

// --- accounts

Result<AccountInfo> AccountStore::CreateAccount(const NewAccount& account) {
  TG_TRY(CheckName(account.name, "name"));
  TG_TRY(CheckAmount(account.budget, "budget"));
  TG_TRY(CheckAmount(account.soft_limit, "soft_limit"));
  TG_TRY(CheckFee(account.byok_fee_ppm));
  if (account.initial_credits && account.initial_credits->nano_usd <= 0) {
    return InvalidArgument("initial credits must be positive", "credits");
  }
  if (account.initial_credits && account.initial_credits->nano_usd > kMaxMovementNanoUsd) {
    return InvalidArgument("initial credits must be at most $1000000000", "credits");
  }
  std::lock_guard lock(impl_->mutex);
  Tx tx(impl_->session);
  if (auto out = tx.Begin(); !out.ok()) return ToError(out, "creating account");
  PgOutcome inserted = tx.Exec(
      "INSERT INTO accounts (name, prepaid, budget_nano_usd, budget_reset, soft_limit_nano_usd, byok_fee_ppm) "
      "VALUES ($1, $2, $3::bigint, $4, $5::bigint, COALESCE($6::bigint, 50000)) RETURNING id",
      {account.name, account.prepaid ? "true" : "false", OptMoney(account.budget),
       std::string(LimitResetName(account.budget_reset)), OptMoney(account.soft_limit), OptInt(account.byok_fee_ppm)});
  if (!inserted.ok()) return ToError(inserted, "creating account");
  int64_t id = internal::PgInt64(inserted.result.get(), 0, 0);
  if (account.initial_credits) {
    PgOutcome credit = tx.Exec(
        "INSERT INTO ledger_entries (account_id, amount_nano_usd, kind, idempotency_key, reason) "
        "VALUES ($1, $2, 'credit', $3, 'initial credits')",
        {Int(id), Int(account.initial_credits->nano_usd), "initial:" + std::to_string(id)});
    if (!credit.ok()) return ToError(credit, "adding initial credits");
    PgOutcome balance = tx.Exec("UPDATE accounts SET balance_nano_usd = balance_nano_usd + $2 WHERE id = $1",
                                {Int(id), Int(account.initial_credits->nano_usd)});
    if (!balance.ok()) return ToError(balance, "adding initial credits");
  }
  if (auto out = tx.Commit(); !out.ok()) return ToError(out, "creating account");
  return SelectAccount(impl_->session, id);
}

Result<AccountInfo> AccountStore::GetAccount(int64_t id) {
  std::lock_guard lock(impl_->mutex);
  return SelectAccount(impl_->session, id);
}

Result<std::vector<AccountInfo>> AccountStore::ListAccounts() {
  std::lock_guard lock(impl_->mutex);
  PgOutcome out = impl_->session.Exec(std::string("SELECT ") + kAccountColumns + " FROM accounts a ORDER BY a.id", {},
                                      /*idempotent=*/true);
  if (!out.ok()) return ToError(out, "listing accounts");
  std::vector<AccountInfo> accounts;
  for (int row = 0; row < Rows(out); ++row) accounts.push_back(AccountAt(out.result.get(), row));
  return accounts;
}

Result<AccountInfo> AccountStore::UpdateAccount(int64_t id, const AccountChanges& c) {
  if (c.name) TG_TRY(CheckName(*c.name, "name"));
  if (c.budget) TG_TRY(CheckAmount(*c.budget, "budget"));
  if (c.soft_limit) TG_TRY(CheckAmount(*c.soft_limit, "soft_limit"));
  TG_TRY(CheckFee(c.byok_fee_ppm));
  SetList set({Int(id)});
  if (c.name) set.Add("name", *c.name);
  if (c.prepaid) set.Add("prepaid", *c.prepaid ? "true" : "false");
  if (c.budget) set.Add("budget_nano_usd", OptMoney(*c.budget), "bigint");
  if (c.budget_reset) set.Add("budget_reset", std::string(LimitResetName(*c.budget_reset)));
  if (c.soft_limit) set.Add("soft_limit_nano_usd", OptMoney(*c.soft_limit), "bigint");
  if (c.byok_fee_ppm) set.Add("byok_fee_ppm", Int(*c.byok_fee_ppm), "bigint");
  if (c.disabled) set.Raw(*c.disabled ? "disabled_at = COALESCE(disabled_at, now())" : "disabled_at = NULL");
  std::lock_guard lock(impl_->mutex);
  if (!set.empty()) {
    // Idempotent: the same values again leave the same row.
    PgOutcome out = impl_->session.Exec("UPDATE accounts SET " + set.sql() + " WHERE id = $1", set.params(),
                                        /*idempotent=*/true);
    if (!out.ok()) return ToError(out, "updating account");
    if (std::string_view(PQcmdTuples(out.result.get())) == "0") {
      return NotFound("no account " + std::to_string(id), "account_id");
    }
  }
  return SelectAccount(impl_->session, id);
}

// --- keys

Result<IssuedKey> AccountStore::CreateKey(const NewKey& k) {
  TG_TRY(CheckName(k.name, "name"));
  TG_TRY(CheckAmount(k.limit, "limit"));
  TG_TRY(CheckAmount(k.soft_limit, "soft_limit"));
  TG_TRY(CheckModels(k.allowed_models));
  TG_TRY(CheckPositive(k.requests_per_minute, "requests_per_minute"));
  TG_TRY(CheckPositive(k.tokens_per_minute, "tokens_per_minute"));
  TG_TRY(CheckPositive(k.max_concurrent, "max_concurrent"));
  std::string plaintext;
  try {
    plaintext = GenerateApiKey();
  } catch (const std::exception& e) {
    return Error{ErrorCode::kInternal, e.what(), {}, {}};
  }
  std::lock_guard lock(impl_->mutex);
  // Not idempotent: a lost reply would leave a key whose plaintext nobody has.
  PgOutcome out = impl_->session.Exec(
      "INSERT INTO api_keys (account_id, name, key_hash, credit_limit_nano_usd, limit_reset, soft_limit_nano_usd,"
      " expires_at, allowed_models, requests_per_minute, tokens_per_minute, max_concurrent) "
      "SELECT a.id, $2, $3, $4::bigint, $5, $6::bigint, $7::timestamptz, " +
          ModelsSql(8) +
          ", $9::bigint, $10::bigint, $11::bigint FROM accounts a WHERE a.id = $1 RETURNING id",
      {Int(k.account_id), k.name, HashApiKey(plaintext), OptMoney(k.limit), std::string(LimitResetName(k.limit_reset)),
       OptMoney(k.soft_limit), OptTime(k.expires_at), OptModels(k.allowed_models), OptInt(k.requests_per_minute),
       OptInt(k.tokens_per_minute), OptInt(k.max_concurrent)},
      /*idempotent=*/false);
  if (!out.ok()) return ToError(out, "creating key");
  if (Rows(out) == 0) return NotFound("no account " + std::to_string(k.account_id), "account_id");
  auto details = SelectKey(impl_->session, internal::PgInt64(out.result.get(), 0, 0));
  if (!details) return details.error();
  return IssuedKey{std::move(*details), std::move(plaintext)};
}

Result<KeyDetails> AccountStore::GetKey(int64_t id) {
  std::lock_guard lock(impl_->mutex);
  return SelectKey(impl_->session, id);
}

Result<std::vector<KeyDetails>> AccountStore::ListKeys(std::optional<int64_t> account_id) {
  std::lock_guard lock(impl_->mutex);
  if (account_id) TG_TRY(AccountExists(impl_->session, *account_id));
  PgOutcome out = impl_->session.Exec(
      std::string("SELECT ") + kKeyColumns + " FROM api_keys k WHERE $1::bigint IS NULL OR k.account_id = $1 ORDER BY k.id",
      {OptInt(account_id)}, /*idempotent=*/true);
  if (!out.ok()) return ToError(out, "listing keys");
  std::vector<KeyDetails> keys;
  for (int row = 0; row < Rows(out); ++row) keys.push_back(KeyAt(out.result.get(), row));
  return keys;
}

Result<KeyDetails> AccountStore::UpdateKey(int64_t id, const KeyChanges& c) {
  if (c.name) TG_TRY(CheckName(*c.name, "name"));
  if (c.limit) TG_TRY(CheckAmount(*c.limit, "limit"));
  if (c.soft_limit) TG_TRY(CheckAmount(*c.soft_limit, "soft_limit"));
  if (c.allowed_models) TG_TRY(CheckModels(*c.allowed_models));
  if (c.requests_per_minute) TG_TRY(CheckPositive(*c.requests_per_minute, "requests_per_minute"));
  if (c.tokens_per_minute) TG_TRY(CheckPositive(*c.tokens_per_minute, "tokens_per_minute"));
  if (c.max_concurrent) TG_TRY(CheckPositive(*c.max_concurrent, "max_concurrent"));
  SetList set({Int(id)});
  if (c.name) set.Add("name", *c.name);
  if (c.limit) set.Add("credit_limit_nano_usd", OptMoney(*c.limit), "bigint");
  if (c.limit_reset) set.Add("limit_reset", std::string(LimitResetName(*c.limit_reset)));
  if (c.soft_limit) set.Add("soft_limit_nano_usd", OptMoney(*c.soft_limit), "bigint");
  if (c.expires_at) set.Add("expires_at", OptTime(*c.expires_at), "timestamptz");
  if (c.allowed_models) {
    set.AddSql("allowed_models", OptModels(*c.allowed_models),
               "(CASE WHEN $?::jsonb IS NULL THEN NULL ELSE ARRAY(SELECT e FROM jsonb_array_elements_text($?::jsonb) "
               "WITH ORDINALITY AS t(e, o) ORDER BY o) END)");
  }
  if (c.requests_per_minute) set.Add("requests_per_minute", OptInt(*c.requests_per_minute), "bigint");
  if (c.tokens_per_minute) set.Add("tokens_per_minute", OptInt(*c.tokens_per_minute), "bigint");
  if (c.max_concurrent) set.Add("max_concurrent", OptInt(*c.max_concurrent), "bigint");
  std::lock_guard lock(impl_->mutex);
  if (!set.empty()) {
    set.Raw("updated_at = now()");
    PgOutcome out = impl_->session.Exec("UPDATE api_keys SET " + set.sql() + " WHERE id = $1", set.params(),
                                        /*idempotent=*/true);
    if (!out.ok()) return ToError(out, "updating key");
    if (std::string_view(PQcmdTuples(out.result.get())) == "0") {
      return NotFound("no key " + std::to_string(id), "key_id");
    }
  }
  return SelectKey(impl_->session, id);
}

Result<KeyDetails> AccountStore::RevokeKey(int64_t id) {
  std::lock_guard lock(impl_->mutex);
  PgOutcome out = impl_->session.Exec(
      "UPDATE api_keys SET revoked_at = now(), updated_at = now() WHERE id = $1 AND revoked_at IS NULL",
      {Int(id)}, /*idempotent=*/true);
  if (!out.ok()) return ToError(out, "revoking key");
  return SelectKey(impl_->session, id);
}

// --- credits

Result<CreditResult> AccountStore::MoveCredits(const CreditMovement& m) {
  if (m.amount.nano_usd == 0) return InvalidArgument("amount must not be zero", "amount");
  if (m.amount.nano_usd > kMaxMovementNanoUsd || m.amount.nano_usd < -kMaxMovementNanoUsd) {
    return InvalidArgument("amount must be at most $1000000000 either way", "amount");
  }
  if (m.reason.empty() || m.reason.size() > kMaxReasonBytes) {
    return InvalidArgument("reason is required (1 to 1000 bytes)", "reason");
  }
  if (m.idempotency_key.empty() || m.idempotency_key.size() > kMaxIdempotencyKeyBytes) {
    return InvalidArgument("idempotency_key is required (1 to 200 printable ASCII characters)", "idempotency_key");
  }
  for (unsigned char c : m.idempotency_key) {
    if (c < 0x21 || c > 0x7e) {
      return InvalidArgument("idempotency_key must be printable ASCII without spaces", "idempotency_key");
    }
  }
  const std::string key = std::string(kAdminKeyPrefix) + m.idempotency_key;
  const std::string kind = m.amount.nano_usd > 0 ? "credit" : "debit";

  std::lock_guard lock(impl_->mutex);
  // The whole movement is idempotent by its key, so a transaction cut off by
  // a broken connection (or beaten to the key by a concurrent one) is run
  // once more: it then finds the entry, or makes it.
  for (int attempt = 0;; ++attempt) {
    bool retry = false;
    auto failed = [&](const PgOutcome& out, std::string_view what) -> Error {
      if (attempt == 0 && (out.connection_bad || out.sqlstate == "23505")) retry = true;
      Error e = ToError(out, what);
      if (e.code == ErrorCode::kUnavailable) {
        e.message += "; whether it happened is unknown: repeat it with the same idempotency key";
      }
      return e;
    };
    Result<CreditResult> result = [&]() -> Result<CreditResult> {
      Tx tx(impl_->session);
      if (auto out = tx.Begin(); !out.ok()) return failed(out, "moving credits");
      // The account row lock orders this with lease grants and usage writes
      // (both take it FOR NO KEY UPDATE, as the balance update below does).
      PgOutcome account = tx.Exec("SELECT prepaid, balance_nano_usd FROM accounts WHERE id = $1 FOR NO KEY UPDATE",
                                  {Int(m.account_id)});
      if (!account.ok()) return failed(account, "moving credits");
      if (Rows(account) == 0) return NotFound("no account " + std::to_string(m.account_id), "account_id");
      const bool prepaid = internal::PgBool(account.result.get(), 0, 0);
      const Money balance{internal::PgInt64(account.result.get(), 0, 1)};

      PgOutcome existing = tx.Exec(std::string("SELECT ") + kLedgerColumns +
                                       " FROM ledger_entries WHERE idempotency_key = $1",
                                   {key});
      if (!existing.ok()) return failed(existing, "moving credits");
      if (Rows(existing) > 0) {
        LedgerEntry entry = LedgerAt(existing.result.get(), 0);
        if (entry.account_id != m.account_id || entry.amount != m.amount || entry.reason != m.reason ||
            entry.kind != kind) {
          return Conflict("idempotency key '" + m.idempotency_key +
                              "' was already used for another credit movement (ledger entry " +
                              std::to_string(entry.id) + "); use a new key for a new movement",
                          "idempotency_key");
        }
        if (auto out = tx.Commit(); !out.ok()) return failed(out, "moving credits");
        return CreditResult{std::move(entry), balance, /*replayed=*/true};
      }

      if (m.amount.nano_usd < 0 && prepaid) {
        const Money after{balance.nano_usd + m.amount.nano_usd};
        if (after.nano_usd < 0) {
          return Conflict("the account's balance is " + Usd(balance) + "; removing " + Usd(Money{-m.amount.nano_usd}) +
                              " would take it below zero",
                          "amount");
        }
        PgOutcome leased = tx.Exec(
            "SELECT COALESCE(sum(amount_nano_usd), 0)::bigint FROM credit_leases "
            "WHERE scope = 'credits' AND owner_id = $1 AND expires_at > now()",
            {Int(m.account_id)});
        if (!leased.ok()) return failed(leased, "moving credits");
        const Money leased_amount{internal::PgInt64(leased.result.get(), 0, 0)};
        if (after < leased_amount) {
          // Delivered at COMMIT: replicas return what they do not use.
          PgOutcome notify =
              tx.Exec("SELECT pg_notify('tollgate_billing', 'account:' || $1::text)", {Int(m.account_id)});
          if (notify.ok()) tx.Commit();
          return Conflict(Usd(leased_amount) + " of the account's " + Usd(balance) +
                              " balance is leased to gateway replicas, so at most " +
                              Usd(Money{balance.nano_usd - leased_amount.nano_usd}) +
                              " can be removed now; the replicas were asked to return unused leases: "
                              "retry in a second",
                          "amount");
        }
      }

      PgOutcome inserted = tx.Exec("INSERT INTO ledger_entries (account_id, amount_nano_usd, kind, idempotency_key, "
                                   "reason) VALUES ($1, $2, $3, $4, $5) RETURNING " +
                                       std::string(kLedgerColumns),
                                   {Int(m.account_id), Int(m.amount.nano_usd), kind, key, m.reason});
      if (!inserted.ok()) return failed(inserted, "moving credits");
      PgOutcome updated = tx.Exec(
          "UPDATE accounts SET balance_nano_usd = balance_nano_usd + $2 WHERE id = $1 RETURNING balance_nano_usd",
          {Int(m.account_id), Int(m.amount.nano_usd)});
      if (!updated.ok()) return failed(updated, "moving credits");
      PgOutcome notify = tx.Exec("SELECT pg_notify('tollgate_billing', 'account:' || $1::text)", {Int(m.account_id)});
      if (!notify.ok()) return failed(notify, "moving credits");
      CreditResult result{LedgerAt(inserted.result.get(), 0), Money{internal::PgInt64(updated.result.get(), 0, 0)},
                          /*replayed=*/false};
      if (auto out = tx.Commit(); !out.ok()) return failed(out, "moving credits");
      return result;
    }();
    if (result || !retry) return result;
  }
}

Result<std::vector<LedgerEntry>> AccountStore::ListLedger(int64_t account_id, int limit,
                                                          std::optional<int64_t> before_id) {
  if (limit < 1 || limit > 1000) return InvalidArgument("limit must be between 1 and 1000", "limit");
  std::lock_guard lock(impl_->mutex);
  TG_TRY(AccountExists(impl_->session, account_id));
  PgOutcome out = impl_->session.Exec(std::string("SELECT ") + kLedgerColumns +
                                          " FROM ledger_entries WHERE account_id = $1 AND ($2::bigint IS NULL OR "
                                          "id < $2) ORDER BY id DESC LIMIT $3",
                                      {Int(account_id), OptInt(before_id), Int(limit)}, /*idempotent=*/true);
  if (!out.ok()) return ToError(out, "reading the ledger");
  std::vector<LedgerEntry> entries;
  for (int row = 0; row < Rows(out); ++row) entries.push_back(LedgerAt(out.result.get(), row));
  return entries;
}

Result<LedgerCheckReport> AccountStore::CheckLedger() {
  std::lock_guard lock(impl_->mutex);
  Tx tx(impl_->session);
  if (auto out = tx.Begin("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"); !out.ok()) {
    return ToError(out, "checking the ledger");
  }
  LedgerCheckReport report;
  PgOutcome counts = tx.Exec("SELECT (SELECT count(*) FROM accounts), (SELECT count(*) FROM api_keys)");
  if (!counts.ok()) return ToError(counts, "checking the ledger");
  report.accounts_checked = internal::PgInt64(counts.result.get(), 0, 0);
  report.keys_checked = internal::PgInt64(counts.result.get(), 0, 1);
  PgOutcome accounts = tx.Exec(
      "SELECT a.id, a.balance_nano_usd, COALESCE(l.total, 0)::bigint FROM accounts a "
      "LEFT JOIN (SELECT account_id, sum(amount_nano_usd) AS total FROM ledger_entries GROUP BY account_id) l "
      "ON l.account_id = a.id WHERE a.balance_nano_usd <> COALESCE(l.total, 0) ORDER BY a.id");
  if (!accounts.ok()) return ToError(accounts, "checking the ledger");
  for (int row = 0; row < Rows(accounts); ++row) {
    const PGresult* r = accounts.result.get();
    report.account_mismatches.push_back(
        {internal::PgInt64(r, row, 0), Money{internal::PgInt64(r, row, 1)}, Money{internal::PgInt64(r, row, 2)}});
  }
  // Against the daily rollup, not the raw rows: retention drops those
  // (stats.retention_days), while the rollup keeps every row's cost, added in
  // the statement that added it to spent_nano_usd (migrations/006_stats.sql;
  // api_key_id 0 there means none).
  PgOutcome keys = tx.Exec(
      "SELECT k.id, k.spent_nano_usd, COALESCE(u.total, 0)::bigint FROM api_keys k "
      "LEFT JOIN (SELECT api_key_id, sum(cost_nano_usd) AS total FROM usage_rollup_1d WHERE api_key_id <> 0 "
      "GROUP BY api_key_id) u ON u.api_key_id = k.id WHERE k.spent_nano_usd <> COALESCE(u.total, 0) ORDER BY k.id");
  if (!keys.ok()) return ToError(keys, "checking the ledger");
  for (int row = 0; row < Rows(keys); ++row) {
    const PGresult* r = keys.result.get();
    report.key_mismatches.push_back(
        {internal::PgInt64(r, row, 0), Money{internal::PgInt64(r, row, 1)}, Money{internal::PgInt64(r, row, 2)}});
  }
  tx.Commit();
  return report;
}

// --- BYOK

Result<ProviderKeyInfo> AccountStore::SetProviderKey(int64_t account_id, std::string_view provider,
                                                     std::string_view secret) {
  TG_TRY(CheckProvider(provider));
  if (secret.empty() || secret.size() > kMaxSecretBytes) {
    return InvalidArgument("the provider key must be 1 to 4096 bytes", "key");
  }
  if (HasControl(secret)) return InvalidArgument("the provider key must not contain control characters", "key");
  if (!impl_->box) {
    return Error{ErrorCode::kUnavailable,
                 std::string("provider keys cannot be stored: the server has no ") + std::string(kSecretKeyEnv) +
                     " (64 hex characters, e.g. from `openssl rand -hex 32`) to encrypt them with",
                 {}, {}};
  }
  std::string sealed;
  try {
    sealed = impl_->box->Seal(secret, ProviderKeyAssociatedData(account_id, provider));
  } catch (const std::exception& e) {
    return Error{ErrorCode::kInternal, e.what(), {}, {}};
  }
  // bytea in text format: hex escape (\x...).
  static constexpr char kHex[] = "0123456789abcdef";
  std::string bytea = "\\x";
  for (unsigned char c : sealed) {
    bytea.push_back(kHex[c >> 4]);
    bytea.push_back(kHex[c & 15]);
  }
  std::lock_guard lock(impl_->mutex);
  // Idempotent: the same key stored twice is the same state (with a fresh nonce).
  PgOutcome out = impl_->session.Exec(
      std::string("INSERT INTO provider_keys (account_id, provider, ciphertext, label) "
                  "SELECT a.id, $2, $3::bytea, $4 FROM accounts a WHERE a.id = $1 "
                  "ON CONFLICT (account_id, provider) DO UPDATE SET ciphertext = EXCLUDED.ciphertext, "
                  "label = EXCLUDED.label, created_at = now() RETURNING ") +
          kProviderKeyColumns,
      {Int(account_id), std::string(provider), bytea, SecretLabel(secret)}, /*idempotent=*/true);
  if (!out.ok()) return ToError(out, "storing provider key");
  if (Rows(out) == 0) return NotFound("no account " + std::to_string(account_id), "account_id");
  // KeyCache reloads the account (and its provider keys) on this.
  impl_->session.Exec("SELECT pg_notify('tollgate_billing', 'account:' || $1::text)", {Int(account_id)},
                      /*idempotent=*/true);
  return ProviderKeyAt(out.result.get(), 0);
}

Result<std::vector<ProviderKeyInfo>> AccountStore::ListProviderKeys(int64_t account_id) {
  std::lock_guard lock(impl_->mutex);
  TG_TRY(AccountExists(impl_->session, account_id));
  PgOutcome out = impl_->session.Exec(std::string("SELECT ") + kProviderKeyColumns +
                                          " FROM provider_keys WHERE account_id = $1 ORDER BY provider",
                                      {Int(account_id)}, /*idempotent=*/true);
  if (!out.ok()) return ToError(out, "listing provider keys");
  std::vector<ProviderKeyInfo> keys;
  for (int row = 0; row < Rows(out); ++row) keys.push_back(ProviderKeyAt(out.result.get(), row));
  return keys;
}

Result<bool> AccountStore::DeleteProviderKey(int64_t account_id, std::string_view provider) {
  TG_TRY(CheckProvider(provider));
  std::lock_guard lock(impl_->mutex);
  TG_TRY(AccountExists(impl_->session, account_id));
  PgOutcome out = impl_->session.Exec("DELETE FROM provider_keys WHERE account_id = $1 AND provider = $2",
                                      {Int(account_id), std::string(provider)}, /*idempotent=*/true);
  if (!out.ok()) return ToError(out, "deleting provider key");
  bool deleted = std::string_view(PQcmdTuples(out.result.get())) != "0";
  if (deleted) {
    impl_->session.Exec("SELECT pg_notify('tollgate_billing', 'account:' || $1::text)", {Int(account_id)},
                        /*idempotent=*/true);
  }
  return deleted;
}

// --- usage

Result<KeyUsage> AccountStore::GetKeyUsage(int64_t key_id) {
  std::lock_guard lock(impl_->mutex);
  Tx tx(impl_->session);
  if (auto out = tx.Begin("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"); !out.ok()) {
    return ToError(out, "reading key usage");
  }
  KeyUsage u;
  PgOutcome key = tx.Exec(std::string("SELECT ") + kKeyColumns + " FROM api_keys k WHERE k.id = $1", {Int(key_id)});
  if (!key.ok()) return ToError(key, "reading key usage");
  if (Rows(key) == 0) return NotFound("no key " + std::to_string(key_id), "key_id");
  u.key = KeyAt(key.result.get(), 0);
  u.usage_total = u.key.spent;
  PgOutcome account =
      tx.Exec(std::string("SELECT ") + kAccountColumns + " FROM accounts a WHERE a.id = $1", {Int(u.key.account_id)});
  if (!account.ok()) return ToError(account, "reading key usage");
  if (Rows(account) == 0) return NotFound("no account " + std::to_string(u.key.account_id), "account_id");
  u.account = AccountAt(account.result.get(), 0);

  // From the daily rollup (usage_rollup_1d, migrations/006_stats.sql), which
  // outlives the raw rows' retention: the periods start at UTC midnights
  // (tollgate_period_start: the day, Monday, the 1st), so each is a union of
  // whole UTC days and the sums are exact. Its provider_cost_nano_usd sums
  // BYOK rows only. Only this month's and this week's days (the index on
  // (api_key_id, bucket_start) finds them); the week may have started last month.
  PgOutcome periods = tx.Exec(
      "WITH b AS (SELECT tollgate_period_start('daily', now()) AS d, tollgate_period_start('weekly', now()) AS w,"
      " tollgate_period_start('monthly', now()) AS m) "
      "SELECT COALESCE(sum(cost_nano_usd) FILTER (WHERE bucket_start >= b.d), 0)::bigint,"
      " COALESCE(sum(cost_nano_usd) FILTER (WHERE bucket_start >= b.w), 0)::bigint,"
      " COALESCE(sum(cost_nano_usd) FILTER (WHERE bucket_start >= b.m), 0)::bigint,"
      " COALESCE(sum(provider_cost_nano_usd) FILTER (WHERE bucket_start >= b.d), 0)::bigint,"
      " COALESCE(sum(provider_cost_nano_usd) FILTER (WHERE bucket_start >= b.w), 0)::bigint,"
      " COALESCE(sum(provider_cost_nano_usd) FILTER (WHERE bucket_start >= b.m), 0)::bigint "
      "FROM usage_rollup_1d, b WHERE api_key_id = $1 AND bucket_start >= LEAST(b.w, b.m)",
      {Int(key_id)});
  if (!periods.ok()) return ToError(periods, "reading key usage");
  {
    const PGresult* r = periods.result.get();
    u.usage_daily = Money{internal::PgInt64(r, 0, 0)};
    u.usage_weekly = Money{internal::PgInt64(r, 0, 1)};
    u.usage_monthly = Money{internal::PgInt64(r, 0, 2)};
    u.byok_usage_daily = Money{internal::PgInt64(r, 0, 3)};
    u.byok_usage_weekly = Money{internal::PgInt64(r, 0, 4)};
    u.byok_usage_monthly = Money{internal::PgInt64(r, 0, 5)};
  }
  PgOutcome rest = tx.Exec(
      "SELECT"
      " (SELECT COALESCE(sum(provider_cost_nano_usd), 0)::bigint FROM usage_rollup_1d WHERE api_key_id = $1),"
      " (SELECT COALESCE(p.usage_nano_usd, 0) FROM api_keys k LEFT JOIN period_usage p ON p.scope = 'key'"
      "   AND p.owner_id = k.id AND p.period_start = tollgate_period_start(k.limit_reset, now()) WHERE k.id = $1),"
      " (SELECT COALESCE(sum(amount_nano_usd) FILTER (WHERE kind IN ('credit', 'debit')), 0)::bigint"
      "   FROM ledger_entries WHERE account_id = $2),"
      " (SELECT COALESCE(-sum(amount_nano_usd) FILTER (WHERE kind IN ('usage', 'refund')), 0)::bigint"
      "   FROM ledger_entries WHERE account_id = $2)",
      {Int(key_id), Int(u.key.account_id)});
  if (!rest.ok()) return ToError(rest, "reading key usage");
  {
    const PGresult* r = rest.result.get();
    u.byok_usage_total = Money{internal::PgInt64(r, 0, 0)};
    u.limit_period_usage = Money{internal::PgInt64(r, 0, 1)};
    u.total_credits = Money{internal::PgInt64(r, 0, 2)};
    u.total_usage = Money{internal::PgInt64(r, 0, 3)};
  }
  if (u.key.limit) {
    u.limit_remaining = Money{std::max<int64_t>(0, u.key.limit->nano_usd - u.limit_period_usage.nano_usd)};
  }
  tx.Commit();
  return u;
}

}  // namespace tollgate::billing
