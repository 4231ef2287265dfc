#include "tollgate/billing/api_key.hpp"

#include <openssl/evp.h>
#include <openssl/rand.h>

#include <array>
#include <stdexcept>

namespace tollgate::billing {
namespace {

constexpr char kBase62[] = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
constexpr size_t kRandomBytes = 32;

bool IsBase62(char c) {
  return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z');
}

}  // namespace

std::string GenerateApiKey() {
  std::array<unsigned char, kRandomBytes> bytes{};
  if (RAND_bytes(bytes.data(), static_cast<int>(bytes.size())) != 1) {
    throw std::runtime_error("OpenSSL RAND_bytes failed: cannot generate an API key");
  }
  // Big-endian base62 by repeated division of the 256-bit number by 62; the
  // digits come out least significant first.
  std::string digits(kApiKeyRandomChars, '0');
  for (size_t i = 0; i < kApiKeyRandomChars; ++i) {
    unsigned remainder = 0;
    for (unsigned char& byte : bytes) {
      unsigned value = (remainder << 8) | byte;
      byte = static_cast<unsigned char>(value / 62);
      remainder = value % 62;
    }
    digits[kApiKeyRandomChars - 1 - i] = kBase62[remainder];
  }
  OPENSSL_cleanse(bytes.data(), bytes.size());
  return std::string(kApiKeyPrefix) + digits;
}

std::string HashApiKey(std::string_view key) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  // Fetched once: EVP_sha256() makes every EVP_Digest look the algorithm up
  // in the provider again (OpenSSL 3 crypto(7), "Performance": explicit
  // fetching). Runs once per call, to look the caller's key up.
  static EVP_MD* const sha256 = EVP_MD_fetch(nullptr, "SHA256", nullptr);
  if (sha256 == nullptr || EVP_Digest(key.data(), key.size(), digest, &length, sha256, nullptr) != 1) {
    // Only possible if the default provider cannot load SHA-256: a broken install.
    throw std::runtime_error("OpenSSL EVP_Digest(SHA-256) failed");
  }
  static constexpr char kHex[] = "0123456789abcdef";
  std::string hex;
  hex.reserve(length * 2);
  for (unsigned int i = 0; i < length; ++i) {
    hex.push_back(kHex[digest[i] >> 4]);
    hex.push_back(kHex[digest[i] & 0x0f]);
  }
  return hex;
}

std::string ApiKeyLabel(std::string_view key_hash_hex) {
  return std::string(kApiKeyLabelMark) + std::string(key_hash_hex.substr(0, kApiKeyLabelHashChars));
}

bool LooksLikeApiKey(std::string_view key) {
  if (key.size() != kApiKeyLength || !key.starts_with(kApiKeyPrefix)) return false;
  for (char c : key.substr(kApiKeyPrefix.size())) {
    if (!IsBase62(c)) return false;
  }
  return true;
}

}  // namespace tollgate::billing
