#include "tollgate/billing/api_key.hpp"

#include <gtest/gtest.h>

#include <set>

namespace tollgate::billing {
namespace {

TEST(ApiKey, HasPrefixFixedLengthAndBase62Alphabet) {
  for (int i = 0; i < 200; ++i) {
    std::string key = GenerateApiKey();
    ASSERT_EQ(key.size(), kApiKeyLength);
    ASSERT_EQ(key.size(), 46u);
    ASSERT_TRUE(key.starts_with("tg-")) << key;
    for (char c : key.substr(3)) {
      ASSERT_TRUE((c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z'))
          << key;
    }
    EXPECT_TRUE(LooksLikeApiKey(key));
  }
}

TEST(ApiKey, KeysAreUnique) {
  std::set<std::string> keys;
  for (int i = 0; i < 10000; ++i) keys.insert(GenerateApiKey());
  EXPECT_EQ(keys.size(), 10000u);
}

TEST(ApiKey, UsesTheWholeAlphabet) {
  // 43 chars x 2000 keys: every one of the 62 characters shows up unless the
  // encoding is broken (e.g. hex, or a stuck digit).
  std::set<char> seen;
  for (int i = 0; i < 2000; ++i) {
    std::string key = GenerateApiKey();
    seen.insert(key.begin() + 3, key.end());
  }
  EXPECT_EQ(seen.size(), 62u);
}

TEST(ApiKey, HashIsLowercaseHexSha256) {
  // FIPS 180-4 / NIST CSRC example "abc".
  EXPECT_EQ(HashApiKey("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(HashApiKey(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  std::string key = GenerateApiKey();
  EXPECT_EQ(HashApiKey(key), HashApiKey(key));
  EXPECT_NE(HashApiKey(key), HashApiKey(GenerateApiKey()));
  EXPECT_EQ(HashApiKey(key).size(), 64u);
}

TEST(ApiKey, LabelIsMadeFromTheHashOnly) {
  // "abc": SHA-256 ba7816bf...
  EXPECT_EQ(ApiKeyLabel(HashApiKey("abc")), "tg-...ba7816bf");
  std::string key = GenerateApiKey();
  std::string hash = HashApiKey(key);
  std::string label = ApiKeyLabel(hash);
  EXPECT_EQ(label, "tg-..." + hash.substr(0, 8));
  EXPECT_EQ(label.size(), 14u);
  // Nothing of the plaintext's random part: no 6 of its characters appear
  // (a chance match with the hex digits is ~1e-9).
  for (size_t i = 3; i + 6 <= key.size(); ++i) {
    EXPECT_EQ(label.find(key.substr(i, 6)), std::string::npos) << key << " " << label;
  }
}

TEST(ApiKey, LabelOfShortInputsTakesWhatThereIs) {
  EXPECT_EQ(ApiKeyLabel("abc"), "tg-...abc");
  EXPECT_EQ(ApiKeyLabel(""), "tg-...");
}

TEST(ApiKey, LooksLikeApiKeyRejectsOtherShapes) {
  std::string key = GenerateApiKey();
  EXPECT_FALSE(LooksLikeApiKey(key.substr(0, 45)));
  EXPECT_FALSE(LooksLikeApiKey(key + "A"));
  EXPECT_FALSE(LooksLikeApiKey("sk-" + key.substr(3)));
  std::string bad = key;
  bad[10] = '-';
  EXPECT_FALSE(LooksLikeApiKey(bad));
}

}  // namespace
}  // namespace tollgate::billing
