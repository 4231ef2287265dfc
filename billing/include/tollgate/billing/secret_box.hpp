// Encryption at rest of the secrets Tollgate stores (BYOK provider keys):
// AES-256-GCM (NIST SP 800-38D) through OpenSSL's EVP_aes_256_gcm, a fresh
// 96-bit random nonce per message (RAND_bytes), a 128-bit tag.
//
// Sealed form: nonce (12 bytes) || ciphertext (as long as the plaintext) ||
// tag (16 bytes). `associated` (e.g. "provider_keys:<account>:<provider>")
// is authenticated but not stored, so a sealed value copied to another row
// does not open there.
//
// The key comes from the environment variable TOLLGATE_SECRET_KEY: 64 hex
// characters (32 bytes), e.g. from `openssl rand -hex 32`. Losing it makes
// the stored secrets unreadable; changing it needs them re-entered.
//
// Thread-safe (immutable after construction); touches no database.
#pragma once

#include "tollgate/core/error.hpp"

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace tollgate::billing {

inline constexpr std::string_view kSecretKeyEnv = "TOLLGATE_SECRET_KEY";

class SecretBox {
 public:
  static constexpr size_t kKeyBytes = 32;
  static constexpr size_t kNonceBytes = 12;
  static constexpr size_t kTagBytes = 16;

  // From 64 hex characters (either case). Errors: kInvalidArgument saying what
  // is wrong with the text (never echoing it).
  static Result<SecretBox> FromHex(std::string_view hex_key);
  // From TOLLGATE_SECRET_KEY. Errors: kInvalidArgument when it is unset
  // (the message says how to make one) or malformed.
  static Result<SecretBox> FromEnv();

  // Encrypts; the result is kNonceBytes + plaintext.size() + kTagBytes bytes.
  // Throws std::runtime_error only if OpenSSL fails (no randomness).
  std::string Seal(std::string_view plaintext, std::string_view associated) const;
  // Decrypts and verifies. Errors: kInvalidArgument when the value is too
  // short, was tampered with, or was sealed with another key or associated data.
  Result<std::string> Open(std::string_view sealed, std::string_view associated) const;

 private:
  explicit SecretBox(const std::array<uint8_t, kKeyBytes>& key) : key_(key) {}
  std::array<uint8_t, kKeyBytes> key_;
};

// A display label for a secret: its first 3 characters, "...", its last 4
// ("sk-...abcd"); "..." alone for secrets shorter than 12 characters.
std::string SecretLabel(std::string_view secret);

}  // namespace tollgate::billing
