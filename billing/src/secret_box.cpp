#include "tollgate/billing/secret_box.hpp"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include <algorithm>
#include <cstdlib>
#include <memory>
#include <stdexcept>

namespace tollgate::billing {
namespace {

struct CipherCtxDeleter {
  void operator()(EVP_CIPHER_CTX* ctx) const { EVP_CIPHER_CTX_free(ctx); }
};
using CipherCtx = std::unique_ptr<EVP_CIPHER_CTX, CipherCtxDeleter>;

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

const unsigned char* Bytes(std::string_view s) { return reinterpret_cast<const unsigned char*>(s.data()); }

// EVP lengths are int; everything Tollgate seals is tiny, but a caller could
// pass anything.
constexpr size_t kMaxLength = 1u << 30;

}  // namespace

Result<SecretBox> SecretBox::FromHex(std::string_view hex_key) {
  if (hex_key.size() != 2 * kKeyBytes) {
    return InvalidArgument("the secret key must be 64 hex characters (32 bytes), e.g. from `openssl rand -hex 32`; got " +
                               std::to_string(hex_key.size()) + " characters",
                           std::string(kSecretKeyEnv));
  }
  std::array<uint8_t, kKeyBytes> key{};
  for (size_t i = 0; i < kKeyBytes; ++i) {
    int hi = HexValue(hex_key[2 * i]);
    int lo = HexValue(hex_key[2 * i + 1]);
    if (hi < 0 || lo < 0) {
      // Never echo the character: it is part of the key.
      OPENSSL_cleanse(key.data(), key.size());
      return InvalidArgument("the secret key must be 64 hex characters (0-9, a-f); character " +
                                 std::to_string(hi < 0 ? 2 * i + 1 : 2 * i + 2) + " is not a hex digit",
                             std::string(kSecretKeyEnv));
    }
    key[i] = static_cast<uint8_t>(hi * 16 + lo);
  }
  SecretBox box(key);
  OPENSSL_cleanse(key.data(), key.size());
  return box;
}

Result<SecretBox> SecretBox::FromEnv() {
  const char* value = std::getenv(std::string(kSecretKeyEnv).c_str());
  if (value == nullptr || *value == '\0') {
    return InvalidArgument(std::string(kSecretKeyEnv) +
                               " is not set: it must hold the 64-hex-character key that encrypts stored provider "
                               "keys; make one with `openssl rand -hex 32` and keep it safe (losing it makes the "
                               "stored keys unreadable)",
                           std::string(kSecretKeyEnv));
  }
  auto box = FromHex(value);
  if (!box) {
    Error e = box.error();
    e.message = std::string(kSecretKeyEnv) + ": " + e.message;
    return e;
  }
  return box;
}

std::string SecretBox::Seal(std::string_view plaintext, std::string_view associated) const {
  if (plaintext.size() > kMaxLength || associated.size() > kMaxLength) {
    throw std::runtime_error("SecretBox::Seal: input too large");
  }
  std::string out(kNonceBytes + plaintext.size() + kTagBytes, '\0');
  auto* nonce = reinterpret_cast<unsigned char*>(out.data());
  auto* body = nonce + kNonceBytes;
  auto* tag = body + plaintext.size();
  if (RAND_bytes(nonce, static_cast<int>(kNonceBytes)) != 1) {
    throw std::runtime_error("SecretBox::Seal: RAND_bytes failed");
  }
  CipherCtx ctx(EVP_CIPHER_CTX_new());
  int len = 0;
  // A 12-byte nonce is GCM's default IV length (SP 800-38D 8.2), so no
  // EVP_CTRL_GCM_SET_IVLEN is needed.
  bool ok = ctx != nullptr && EVP_EncryptInit_ex(ctx.get(), EVP_aes_256_gcm(), nullptr, key_.data(), nonce) == 1 &&
            (associated.empty() ||
             EVP_EncryptUpdate(ctx.get(), nullptr, &len, Bytes(associated), static_cast<int>(associated.size())) == 1) &&
            (plaintext.empty() ||
             EVP_EncryptUpdate(ctx.get(), body, &len, Bytes(plaintext), static_cast<int>(plaintext.size())) == 1) &&
            EVP_EncryptFinal_ex(ctx.get(), body + plaintext.size(), &len) == 1 &&
            EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_GET_TAG, static_cast<int>(kTagBytes), tag) == 1;
  if (!ok) throw std::runtime_error("SecretBox::Seal: OpenSSL AES-256-GCM encryption failed");
  return out;
}

Result<std::string> SecretBox::Open(std::string_view sealed, std::string_view associated) const {
  if (sealed.size() < kNonceBytes + kTagBytes) {
    return InvalidArgument("sealed secret is too short (" + std::to_string(sealed.size()) + " bytes, at least " +
                           std::to_string(kNonceBytes + kTagBytes) + " expected)");
  }
  if (sealed.size() > kMaxLength || associated.size() > kMaxLength) {
    return InvalidArgument("sealed secret is too large");
  }
  const auto* nonce = Bytes(sealed);
  const auto* body = nonce + kNonceBytes;
  size_t body_size = sealed.size() - kNonceBytes - kTagBytes;
  // EVP_CTRL_GCM_SET_TAG takes a non-const pointer.
  std::array<unsigned char, kTagBytes> tag{};
  std::copy(body + body_size, body + body_size + kTagBytes, tag.begin());
  std::string plain(body_size, '\0');
  CipherCtx ctx(EVP_CIPHER_CTX_new());
  int len = 0;
  bool ok = ctx != nullptr && EVP_DecryptInit_ex(ctx.get(), EVP_aes_256_gcm(), nullptr, key_.data(), nonce) == 1 &&
            (associated.empty() ||
             EVP_DecryptUpdate(ctx.get(), nullptr, &len, Bytes(associated), static_cast<int>(associated.size())) == 1) &&
            (body_size == 0 || EVP_DecryptUpdate(ctx.get(), reinterpret_cast<unsigned char*>(plain.data()), &len, body,
                                                 static_cast<int>(body_size)) == 1) &&
            EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_SET_TAG, static_cast<int>(kTagBytes), tag.data()) == 1;
  // The tag is checked by Final; before it succeeds the output is
  // unauthenticated and must not escape.
  bool verified = ok && EVP_DecryptFinal_ex(ctx.get(), reinterpret_cast<unsigned char*>(plain.data()) + body_size,
                                            &len) == 1;
  if (!verified) {
    OPENSSL_cleanse(plain.data(), plain.size());
    return InvalidArgument(
        "sealed secret does not open: it was altered, or sealed with another key or for another record");
  }
  return plain;
}

std::string SecretLabel(std::string_view secret) {
  if (secret.size() < 12) return "...";
  return std::string(secret.substr(0, 3)) + "..." + std::string(secret.substr(secret.size() - 4));
}

}  // namespace tollgate::billing
