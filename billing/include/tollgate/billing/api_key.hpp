// Caller API keys: generation, hashing, display.
//
// Key format: "tg-" followed by exactly 43 base62 characters [0-9A-Za-z], 46
// characters in all. The 43 characters are the big-endian base62 digits of 32
// bytes (256 bits) from OpenSSL's CSPRNG (RAND_bytes, OpenSSL 3 manual
// RAND_bytes(3)), left-padded with '0'; 43 is the least n with 62^n >= 2^256.
//
// Only HashApiKey(key) is stored (api_keys.key_hash); the plaintext is shown to
// its owner once, and no part of it is stored or listed (ApiKeyLabel below is
// made from the hash). Because keys carry 256 bits of entropy, an unsalted fast hash
// is enough: there is nothing to brute-force (same reasoning as GitHub's and
// OpenAI's token storage).
//
// All functions are thread-safe and touch no database.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace tollgate::billing {

inline constexpr std::string_view kApiKeyPrefix = "tg-";
inline constexpr size_t kApiKeyRandomChars = 43;
inline constexpr size_t kApiKeyLength = 46;  // kApiKeyPrefix.size() + kApiKeyRandomChars

// A fresh random key in the format above. Throws std::runtime_error only if
// OpenSSL's CSPRNG fails (RAND_bytes returns != 1), which means the process
// cannot make secrets at all.
std::string GenerateApiKey();

// Lowercase hex SHA-256 (FIPS 180-4) of the key's bytes, 64 characters, via
// OpenSSL's EVP_Digest. Accepts any input (the gateway hashes whatever a caller
// sent); never throws.
std::string HashApiKey(std::string_view key);

// Display label of a stored key for listings (KeyInfo::prefix, `tollgate keys
// list`) and logs, made from its hash only, since no part of the plaintext is
// stored: kApiKeyLabelMark ("tg-...") followed by the first 8 characters of
// `key_hash_hex` (HashApiKey's output), e.g. "tg-...3f9a0c1e"; fewer if the
// input is shorter. Not a prefix of the key and not enough to authenticate;
// 32 bits of the hash tell a handful of keys apart, not guaranteed unique.
// The owner of a plaintext key finds its label with
// ApiKeyLabel(HashApiKey(key)). ASCII only, so fixed-width listings align.
inline constexpr std::string_view kApiKeyLabelMark = "tg-...";
inline constexpr size_t kApiKeyLabelHashChars = 8;
std::string ApiKeyLabel(std::string_view key_hash_hex);

// True if `key` has the exact format that GenerateApiKey produces. The gateway
// may use it to reject malformed keys before hashing.
bool LooksLikeApiKey(std::string_view key);

}  // namespace tollgate::billing
