// The original administrative operations on API keys, kept for the tests
// and tools that make keys without caring about accounts; the CLI and the
// admin API use AccountStore (account_store.hpp), which covers all of this
// and accounts, limits, credits and BYOK keys. Blocking, one database
// connection; not for the request path (the gateway authenticates through
// KeyCache, key_cache.hpp).
#pragma once

#include "tollgate/core/error.hpp"
#include "tollgate/core/money.hpp"

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace tollgate::billing {

struct CreatedKey {
  int64_t id = 0;   // api_keys.id
  std::string key;  // plaintext key (api_key.hpp format); shown once, never stored
};

struct KeyInfo {
  int64_t id = 0;
  std::string name;
  // Display label made from the stored hash, ApiKeyLabel(key_hash) (api_key.hpp):
  // "tg-...3f9a0c1e". Not part of the key: no part of the plaintext is stored.
  std::string prefix;
  std::optional<Money> credit_limit;  // nano-USD; nullopt = unlimited
  Money spent;                        // nano-USD written by the usage recorder so far
  std::string created_at;             // RFC 3339 UTC, seconds: "2026-11-29T08:04:53Z"
  bool revoked = false;
};

class KeyStore {
 public:
  // Connects to `database_url` (libpq connection string or URI); the schema
  // must have been migrated (migrations.hpp). Connect does not check that; on an
  // unmigrated database every operation below fails with kInternal and a
  // message saying to run `tollgate migrate`.
  // Errors: kInvalidArgument (unparsable URL), kUnavailable (cannot connect).
  static Result<std::unique_ptr<KeyStore>> Connect(const std::string& database_url);

  ~KeyStore();
  KeyStore(const KeyStore&) = delete;
  KeyStore& operator=(const KeyStore&) = delete;

  // Creates a key named `name` (non-empty, any text) with an optional credit
  // limit in nano-USD (>= 0; nullopt = unlimited), in a new postpaid account
  // of the same name (one statement: both or neither), as migration 004 did
  // for the keys that existed before accounts. Stores only its SHA-256
  // hash (no part of the plaintext) and returns the plaintext once.
  // AccountStore (account_store.hpp) creates keys in existing accounts and
  // with every other setting.
  // Errors: kInvalidArgument (empty name, negative limit), kUnavailable
  // (database unreachable; the key may or may not have been created, and its
  // plaintext is lost either way, so create another), kInternal.
  Result<CreatedKey> Create(std::string name, std::optional<Money> credit_limit);

  // All keys, revoked ones included, ordered by id.
  // Errors: kUnavailable, kInternal.
  Result<std::vector<KeyInfo>> List();

  // Marks key `id` revoked (sets revoked_at = now()). Returns true if it did,
  // false if there is no such key or it was already revoked. Gateways see the
  // revocation within one KeyCache refresh interval.
  // Errors: kUnavailable, kInternal.
  Result<bool> Revoke(int64_t id);

  // Sets (or, with nullopt, removes) key `id`'s credit limit in nano-USD (>= 0).
  // Returns false if there is no such key.
  // Errors: kInvalidArgument (negative limit), kUnavailable, kInternal.
  Result<bool> SetCreditLimit(int64_t id, std::optional<Money> credit_limit);

  // Thread-safety: all methods may be called from any thread; calls are
  // serialised on the one connection, which is re-opened after a failure.

 private:
  struct Impl;
  explicit KeyStore(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace tollgate::billing
