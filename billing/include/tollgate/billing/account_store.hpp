// Administration of accounts, their keys, credits and BYOK provider keys: what
// the `tollgate accounts|keys|credits|ledger|provider-keys` CLI and the admin
// API (/admin/v1) do. Blocking, one database connection; never on the request
// path (the gateway authenticates through KeyCache, key_cache.hpp).
//
// Schema: migrations/004_ledger.sql. Money is nano-USD everywhere (Money).
// Times are UTC system_clock time points, stored with microsecond precision.
//
// Change propagation: the database triggers of 004 send NOTIFY
// tollgate_billing 'key:<id>' / 'account:<id>' for every admin change of a key
// or an account row; credit movements, which change only the balance, send
// 'account:<id>' themselves (in the same transaction, so it is delivered
// exactly when the movement commits).
//
// Errors common to every operation: kUnavailable (database unreachable; for
// writes, whether it committed is unknown, except where an operation says it
// is safe to repeat), kInternal (anything else the database refused; an
// unmigrated schema says to run `tollgate migrate`). Arguments are validated
// first: kInvalidArgument with Error::param naming the field.
//
// Thread-safety: every method may be called from any thread; calls are
// serialised on the one connection (a mutex), which is re-opened after it
// broke.
#pragma once

#include "tollgate/billing/key_cache.hpp"
#include "tollgate/billing/secret_box.hpp"
#include "tollgate/core/error.hpp"
#include "tollgate/core/money.hpp"

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace tollgate::billing {

using TimePoint = std::chrono::system_clock::time_point;

// A field of an update: nullopt leaves it as it is. For a nullable column,
// Update<std::optional<T>>{std::nullopt}, i.e. an engaged outer optional
// holding an empty inner one, clears it (NULL).
template <class T>
using Update = std::optional<T>;

// ------------------------------------------------------------------ accounts

struct AccountInfo {
  int64_t id = 0;
  std::string name;
  bool prepaid = true;               // calls need credits; the balance never goes below 0
  Money balance;                     // = sum of the account's ledger entries
  std::optional<Money> budget;       // per budget period, shared by all keys; nullopt = none
  LimitReset budget_reset = LimitReset::kNone;
  Money budget_period_usage;         // period_usage of the current budget period (0 without a budget)
  std::optional<Money> soft_limit;   // warning threshold; nullopt = none
  int64_t byok_fee_ppm = 50'000;     // BYOK fee, millionths of the provider's cost
  Money leased_credits;              // sum of unexpired 'credits' leases held by gateway replicas
  bool disabled = false;
  std::optional<TimePoint> disabled_at;
  TimePoint created_at;
};

struct NewAccount {
  std::string name;                  // required, 1..200 bytes
  bool prepaid = true;
  std::optional<Money> budget;       // >= 0
  LimitReset budget_reset = LimitReset::kNone;
  std::optional<Money> soft_limit;   // >= 0
  std::optional<int64_t> byok_fee_ppm;  // 0..1'000'000; nullopt = the schema's default (50'000 = 5%)
  // Credits the account starts with (> 0): a 'credit' ledger entry with
  // reason "initial credits" and idempotency key "initial:<account id>",
  // written in the same transaction as the account.
  std::optional<Money> initial_credits;
};

struct AccountChanges {
  Update<std::string> name;
  Update<bool> prepaid;
  Update<std::optional<Money>> budget;
  Update<LimitReset> budget_reset;
  Update<std::optional<Money>> soft_limit;
  Update<int64_t> byok_fee_ppm;
  Update<bool> disabled;             // true sets disabled_at = now() (kept if already set); false clears it
};

// ------------------------------------------------------------------ keys

struct KeyDetails {
  int64_t id = 0;
  int64_t account_id = 0;
  std::string name;
  std::string label;                     // ApiKeyLabel(key_hash): "tg-...3f9a0c1e"; no part of the key
  std::optional<Money> limit;            // spending limit per limit period; nullopt = unlimited
  LimitReset limit_reset = LimitReset::kNone;
  std::optional<Money> soft_limit;
  std::optional<TimePoint> expires_at;
  std::optional<std::vector<std::string>> allowed_models;  // nullopt = all
  std::optional<int64_t> requests_per_minute;
  std::optional<int64_t> tokens_per_minute;
  std::optional<int64_t> max_concurrent;
  Money spent;                           // all-time usage (api_keys.spent_nano_usd)
  bool revoked = false;
  std::optional<TimePoint> revoked_at;
  TimePoint created_at;
};

struct NewKey {
  int64_t account_id = 0;                // must exist
  std::string name;                      // required, 1..200 bytes
  std::optional<Money> limit;            // >= 0
  LimitReset limit_reset = LimitReset::kNone;
  std::optional<Money> soft_limit;       // >= 0
  std::optional<TimePoint> expires_at;
  // Each a non-empty model slug of at most 200 bytes, no duplicates; an empty
  // list is refused (it would allow nothing: revoke the key instead).
  std::optional<std::vector<std::string>> allowed_models;
  std::optional<int64_t> requests_per_minute;  // > 0
  std::optional<int64_t> tokens_per_minute;    // > 0
  std::optional<int64_t> max_concurrent;       // > 0
};

struct KeyChanges {
  Update<std::string> name;
  Update<std::optional<Money>> limit;
  Update<LimitReset> limit_reset;
  Update<std::optional<Money>> soft_limit;
  Update<std::optional<TimePoint>> expires_at;
  Update<std::optional<std::vector<std::string>>> allowed_models;
  Update<std::optional<int64_t>> requests_per_minute;
  Update<std::optional<int64_t>> tokens_per_minute;
  Update<std::optional<int64_t>> max_concurrent;
};

struct IssuedKey {
  KeyDetails details;
  std::string plaintext;  // api_key.hpp format; shown once, only its SHA-256 is stored
};

// ------------------------------------------------------------------ ledger

struct LedgerEntry {
  int64_t id = 0;
  int64_t account_id = 0;
  Money amount;                     // > 0 adds credits, < 0 takes them
  std::string kind;                 // "credit" | "debit" | "usage" | "refund"
  // As stored: credit movements made here store "admin:" + the caller's key
  // (so no admin key can collide with a call's request id, which usage
  // entries use).
  std::string idempotency_key;
  std::string reason;
  std::optional<std::string> request_id;
  std::optional<int64_t> api_key_id;
  TimePoint created_at;
};

struct CreditMovement {
  int64_t account_id = 0;
  Money amount;                 // != 0, |amount| <= 1e9 USD; > 0 adds ("credit"), < 0 removes ("debit")
  std::string reason;           // required, 1..1000 bytes
  std::string idempotency_key;  // required, 1..200 printable ASCII characters
};

struct CreditResult {
  LedgerEntry entry;
  Money balance;          // the account's balance after the movement (now, for a replay)
  bool replayed = false;  // the idempotency key had been used with these values: nothing moved now
};

struct AccountMismatch {
  int64_t account_id = 0;
  Money balance;     // accounts.balance_nano_usd
  Money ledger_sum;  // sum of its ledger entries
};

struct KeySpentMismatch {
  int64_t key_id = 0;
  Money spent;      // api_keys.spent_nano_usd
  Money usage_sum;  // sum of its usage costs (usage_rollup_1d.cost_nano_usd: outlives retention)
};

struct LedgerCheckReport {
  int64_t accounts_checked = 0;
  int64_t keys_checked = 0;
  std::vector<AccountMismatch> account_mismatches;
  std::vector<KeySpentMismatch> key_mismatches;
  bool ok() const { return account_mismatches.empty() && key_mismatches.empty(); }
};

// ------------------------------------------------------------------ BYOK

struct ProviderKeyInfo {
  int64_t account_id = 0;
  std::string provider;  // a provider id of the config
  std::string label;     // SecretLabel(secret): "sk-...abcd"
  TimePoint created_at;
};

// The associated data a provider key is sealed with (SecretBox):
// "provider_keys:<account_id>:<provider>", so a sealed value copied to another
// account's or provider's row does not open there.
std::string ProviderKeyAssociatedData(int64_t account_id, std::string_view provider);

// ------------------------------------------------------------------ usage of a key

// What GET /api/v1/key and GET /api/v1/credits report for a key. All sums are
// nano-USD of what was charged (usage_events.cost_nano_usd, which for BYOK
// calls is the fee), as of the last committed usage row. The periods are read
// from the daily rollup (usage_rollup_1d), exact because every period starts
// at a UTC midnight, and unaffected by the raw rows' retention.
struct KeyUsage {
  KeyDetails key;
  AccountInfo account;
  Money usage_total;    // all time (api_keys.spent_nano_usd)
  Money usage_daily;    // since 00:00 UTC today
  Money usage_weekly;   // since Monday 00:00 UTC
  Money usage_monthly;  // since the 1st, 00:00 UTC
  // Providers' costs of the key's BYOK calls (usage_events.provider_cost_nano_usd, summed in the rollup),
  // paid by the account at its providers, over the same periods.
  Money byok_usage_total;
  Money byok_usage_daily;
  Money byok_usage_weekly;
  Money byok_usage_monthly;
  // Usage in the key's current limit period (period_usage, what admission
  // counts against the limit), and what is left of the limit: max(0, limit -
  // that); nullopt without a limit.
  Money limit_period_usage;
  std::optional<Money> limit_remaining;
  // The account's credits (OpenRouter's /api/v1/credits): total_credits = sum
  // of its 'credit' and 'debit' entries (credits granted less credits
  // removed), total_usage = -(sum of its 'usage' and 'refund' entries), so
  // total_credits - total_usage == account.balance.
  Money total_credits;
  Money total_usage;
};

// ------------------------------------------------------------------ helpers

// RFC 3339 UTC with whole seconds: "2026-11-29T08:04:53Z" (sub-seconds truncated).
std::string FormatTimestamp(TimePoint time);
// RFC 3339 date-time (section 5.6): "2026-11-29T08:04:53Z",
// "2026-11-29T08:04:53.5+02:00"; 't'/'z' and a space for 'T' accepted. nullopt
// for anything else (also out-of-range fields).
std::optional<TimePoint> ParseTimestamp(std::string_view text);

// Compares two secrets (e.g. an admin token) in time independent of where
// they differ and of their lengths: CRYPTO_memcmp of their SHA-256 digests.
bool SecretEquals(std::string_view a, std::string_view b);

// ------------------------------------------------------------------ the store

class AccountStore {
 public:
  // Connects to `database_url` (libpq connection string or URI; the schema
  // must be migrated). `secret_box` encrypts BYOK keys; without it
  // SetProviderKey fails (kUnavailable) and everything else works.
  // Errors: kInvalidArgument (unparsable URL), kUnavailable (cannot connect).
  static Result<std::unique_ptr<AccountStore>> Connect(const std::string& database_url,
                                                       std::optional<SecretBox> secret_box = std::nullopt);

  ~AccountStore();
  AccountStore(const AccountStore&) = delete;
  AccountStore& operator=(const AccountStore&) = delete;

  // --- accounts
  // Not idempotent (a lost reply may leave an account behind).
  Result<AccountInfo> CreateAccount(const NewAccount& account);
  // Errors: kNotFound.
  Result<AccountInfo> GetAccount(int64_t id);
  // All accounts by id.
  Result<std::vector<AccountInfo>> ListAccounts();
  // Applies the set fields in one statement and returns the account after it.
  // Errors: kNotFound, kInvalidArgument.
  Result<AccountInfo> UpdateAccount(int64_t id, const AccountChanges& changes);

  // --- keys
  // Creates a key in an existing account; returns its plaintext once. Not
  // idempotent. Errors: kNotFound (no such account), kInvalidArgument.
  Result<IssuedKey> CreateKey(const NewKey& key);
  // Errors: kNotFound.
  Result<KeyDetails> GetKey(int64_t id);
  // The account's keys (kNotFound if there is no such account), or all keys
  // for nullopt; revoked ones included, by id.
  Result<std::vector<KeyDetails>> ListKeys(std::optional<int64_t> account_id = std::nullopt);
  // Errors: kNotFound, kInvalidArgument.
  Result<KeyDetails> UpdateKey(int64_t id, const KeyChanges& changes);
  // Sets revoked_at = now() unless already revoked (then nothing changes, so
  // repeating it is harmless); returns the key. Errors: kNotFound.
  Result<KeyDetails> RevokeKey(int64_t id);

  // --- credits
  // Adds (amount > 0, kind 'credit') or removes (amount < 0, kind 'debit')
  // credits: one ledger row and the balance change, in one transaction that
  // holds the account row lock (as lease grants and the usage writer do), and
  // NOTIFY 'account:<id>' at its commit.
  //
  // Idempotent by idempotency_key: if it was used before for the same
  // account, amount and reason, the original entry is returned with
  // replayed = true and nothing moves, so a caller that lost the reply
  // (kUnavailable) repeats the call safely; used with other values: kConflict.
  //
  // A removal from a prepaid account may take the balance neither below 0
  // (kConflict, saying the balance) nor below the sum of the unexpired
  // 'credits' leases that gateway replicas hold (each replica may spend its
  // lease without asking the database). In that case it sends NOTIFY
  // 'account:<id>' (replicas return their unused leases when they see it)
  // and fails with kConflict saying how much is leased and to retry in a
  // second. Postpaid balances may go negative.
  // Errors: kNotFound (no such account), kConflict, kInvalidArgument.
  Result<CreditResult> MoveCredits(const CreditMovement& movement);

  // The account's ledger, newest first: at most `limit` (1..1000) entries
  // with id < `before_id` (all when nullopt). Errors: kNotFound, kInvalidArgument.
  Result<std::vector<LedgerEntry>> ListLedger(int64_t account_id, int limit = 100,
                                              std::optional<int64_t> before_id = std::nullopt);

  // Verifies, on one consistent snapshot (REPEATABLE READ), that every
  // account's balance equals the sum of its ledger and every key's spent
  // equals the sum of its usage costs (the daily rollup, which keeps them
  // after retention dropped the raw rows); reports each mismatch.
  Result<LedgerCheckReport> CheckLedger();

  // --- BYOK provider keys
  // Stores (or replaces) the account's key for `provider` (1..64 characters
  // of [A-Za-z0-9._-]), sealed with the SecretBox and
  // ProviderKeyAssociatedData; `secret` 1..4096 bytes, no control characters
  // (never echoed in any error). Returns its label.
  // Errors: kNotFound (account), kInvalidArgument, kUnavailable (no SecretBox:
  // TOLLGATE_SECRET_KEY unset).
  Result<ProviderKeyInfo> SetProviderKey(int64_t account_id, std::string_view provider, std::string_view secret);
  // Labels only, by provider. Errors: kNotFound (account).
  Result<std::vector<ProviderKeyInfo>> ListProviderKeys(int64_t account_id);
  // True if it deleted one, false if the account had none for `provider`.
  // Errors: kNotFound (account), kInvalidArgument.
  Result<bool> DeleteProviderKey(int64_t account_id, std::string_view provider);

  // --- usage
  // The key's usage and its account's credits (KeyUsage), read in one
  // snapshot. Errors: kNotFound.
  Result<KeyUsage> GetKeyUsage(int64_t key_id);

 private:
  struct Impl;
  explicit AccountStore(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace tollgate::billing
