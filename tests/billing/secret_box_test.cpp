#include "tollgate/billing/secret_box.hpp"

#include <gtest/gtest.h>

#include <cstdlib>
#include <set>
#include <string>

namespace tollgate::billing {
namespace {

constexpr std::string_view kKeyHex = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
constexpr std::string_view kOtherKeyHex = "ff0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

std::string FromHexText(std::string_view hex) {
  std::string out;
  for (size_t i = 0; i + 1 < hex.size(); i += 2) {
    out.push_back(static_cast<char>(std::stoi(std::string(hex.substr(i, 2)), nullptr, 16)));
  }
  return out;
}

SecretBox Box(std::string_view hex = kKeyHex) {
  auto box = SecretBox::FromHex(hex);
  EXPECT_TRUE(box) << box.error().message;
  return *box;
}

TEST(SecretBox, RoundTrips) {
  SecretBox box = Box();
  for (std::string plain : {std::string(), std::string("sk-proj-abcdefghijklmnop"), std::string(1000, 'x'),
                            std::string("\0binary\xff", 8)}) {
    std::string sealed = box.Seal(plain, "provider_keys:1:openai");
    EXPECT_EQ(sealed.size(), SecretBox::kNonceBytes + plain.size() + SecretBox::kTagBytes);
    if (plain.size() >= 8) {
      EXPECT_EQ(sealed.find(plain), std::string::npos) << "ciphertext holds the plaintext";
    }
    auto opened = box.Open(sealed, "provider_keys:1:openai");
    ASSERT_TRUE(opened) << opened.error().message;
    EXPECT_EQ(*opened, plain);
  }
}

TEST(SecretBox, FreshNoncePerSeal) {
  SecretBox box = Box();
  std::set<std::string> seen;
  for (int i = 0; i < 100; ++i) seen.insert(box.Seal("same secret", "ad"));
  EXPECT_EQ(seen.size(), 100u);
}

// NIST GCM specification (McGrew & Viega, "The Galois/Counter Mode of
// Operation", revised 2005), test case 16: AES-256, 96-bit IV, with AAD.
TEST(SecretBox, OpensTheGcmSpecTestVector) {
  SecretBox box = Box("feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308");
  std::string iv = FromHexText("cafebabefacedbaddecaf888");
  std::string aad = FromHexText("feedfacedeadbeeffeedfacedeadbeefabaddad2");
  std::string plain = FromHexText(
      "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a721c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657"
      "ba637b39");
  std::string cipher = FromHexText(
      "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0a"
      "bcc9f662");
  std::string tag = FromHexText("76fc6ece0f4e1768cddf8853bb2d551b");
  auto opened = box.Open(iv + cipher + tag, aad);
  ASSERT_TRUE(opened) << opened.error().message;
  EXPECT_EQ(*opened, plain);
  // The same with one bit of the tag flipped does not open.
  tag[0] ^= 1;
  EXPECT_FALSE(box.Open(iv + cipher + tag, aad));
}

TEST(SecretBox, TamperingIsDetected) {
  SecretBox box = Box();
  std::string sealed = box.Seal("sk-secret-value-1234", "ad");
  // Every bit of nonce, ciphertext and tag is authenticated.
  for (size_t i = 0; i < sealed.size(); ++i) {
    for (int bit : {0, 7}) {
      std::string bad = sealed;
      bad[i] = static_cast<char>(bad[i] ^ (1 << bit));
      auto opened = box.Open(bad, "ad");
      ASSERT_FALSE(opened) << "byte " << i;
      EXPECT_EQ(opened.error().code, ErrorCode::kInvalidArgument);
      EXPECT_EQ(opened.error().message.find("sk-secret"), std::string::npos);
    }
  }
  // Truncated or extended.
  EXPECT_FALSE(box.Open(sealed.substr(0, sealed.size() - 1), "ad"));
  EXPECT_FALSE(box.Open(sealed + "x", "ad"));
}

TEST(SecretBox, WrongAssociatedDataDoesNotOpen) {
  SecretBox box = Box();
  std::string sealed = box.Seal("sk-secret", "provider_keys:1:openai");
  EXPECT_FALSE(box.Open(sealed, "provider_keys:2:openai"));
  EXPECT_FALSE(box.Open(sealed, "provider_keys:1:anthropic"));
  EXPECT_FALSE(box.Open(sealed, ""));
  EXPECT_TRUE(box.Open(sealed, "provider_keys:1:openai"));
}

TEST(SecretBox, WrongKeyDoesNotOpen) {
  std::string sealed = Box().Seal("sk-secret", "ad");
  auto opened = Box(kOtherKeyHex).Open(sealed, "ad");
  ASSERT_FALSE(opened);
  EXPECT_EQ(opened.error().code, ErrorCode::kInvalidArgument);
}

TEST(SecretBox, TooShortIsAnError) {
  SecretBox box = Box();
  for (size_t n : {0, 1, 27}) {
    auto opened = box.Open(std::string(n, 'a'), "ad");
    ASSERT_FALSE(opened);
    EXPECT_EQ(opened.error().code, ErrorCode::kInvalidArgument);
  }
  // 28 bytes is the shortest well-formed value (empty plaintext), but not this one.
  EXPECT_FALSE(box.Open(std::string(28, 'a'), "ad"));
}

TEST(SecretBox, KeyHexIsValidated) {
  EXPECT_TRUE(SecretBox::FromHex(std::string(64, 'A')));  // upper case is fine
  EXPECT_TRUE(SecretBox::FromHex(std::string(64, 'f')));
  for (std::string bad : {std::string(), std::string(63, 'a'), std::string(65, 'a'), std::string(128, 'a'),
                          std::string(63, 'a') + "g", "zz" + std::string(62, '0'), std::string(62, '0') + " 0"}) {
    auto box = SecretBox::FromHex(bad);
    ASSERT_FALSE(box) << bad;
    EXPECT_EQ(box.error().code, ErrorCode::kInvalidArgument);
    EXPECT_NE(box.error().message.find("64 hex"), std::string::npos) << box.error().message;
  }
  // The message never repeats the (partly secret) text.
  std::string secretish = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdeQ";
  auto box = SecretBox::FromHex(secretish);
  ASSERT_FALSE(box);
  EXPECT_EQ(box.error().message.find("0123456789"), std::string::npos) << box.error().message;
}

TEST(SecretBox, FromEnv) {
  const char* saved = std::getenv("TOLLGATE_SECRET_KEY");
  std::string saved_value = saved ? saved : "";
  unsetenv("TOLLGATE_SECRET_KEY");
  auto missing = SecretBox::FromEnv();
  ASSERT_FALSE(missing);
  EXPECT_NE(missing.error().message.find("openssl rand -hex 32"), std::string::npos) << missing.error().message;
  setenv("TOLLGATE_SECRET_KEY", "nothex", 1);
  auto bad = SecretBox::FromEnv();
  ASSERT_FALSE(bad);
  EXPECT_NE(bad.error().message.find("TOLLGATE_SECRET_KEY"), std::string::npos);
  EXPECT_EQ(bad.error().message.find("nothex"), std::string::npos);
  setenv("TOLLGATE_SECRET_KEY", std::string(kKeyHex).c_str(), 1);
  auto good = SecretBox::FromEnv();
  ASSERT_TRUE(good) << good.error().message;
  // Same key as FromHex: each opens the other's values.
  EXPECT_EQ(Box().Open(good->Seal("x", "ad"), "ad").value(), "x");
  if (saved) {
    setenv("TOLLGATE_SECRET_KEY", saved_value.c_str(), 1);
  } else {
    unsetenv("TOLLGATE_SECRET_KEY");
  }
}

TEST(SecretLabel, ShowsThreeAndFour) {
  EXPECT_EQ(SecretLabel("sk-proj-abcdefghijklmnopqrstuvwxyz"), "sk-...wxyz");
  EXPECT_EQ(SecretLabel("123456789012"), "123...9012");  // 12: the shortest labelled
  EXPECT_EQ(SecretLabel("12345678901"), "...");
  EXPECT_EQ(SecretLabel(""), "...");
}

}  // namespace
}  // namespace tollgate::billing
