// wire/common.hpp: SSE frames, usage sanitising, data URIs, JSON parsing;
// and base64url from the internal wire/src/json_util.hpp.
#include "tollgate/wire/common.hpp"

#include "json_util.hpp"

#include <boost/json.hpp>
#include <gtest/gtest.h>

#include <random>
#include <string>

namespace tollgate::wire {
namespace {

TEST(WireCommon, SseFramesWithAndWithoutAType) {
  EXPECT_EQ(SseFrame("{}"), "data: {}\n\n");
  EXPECT_EQ(SseFrame("{}", "ping"), "event: ping\ndata: {}\n\n");
}

TEST(WireCommon, TokenCountsAreClampedAndNeverNegative) {
  EXPECT_EQ(TokenCount(nullptr), std::nullopt);
  boost::json::value v = -5;
  EXPECT_EQ(TokenCount(&v), 0);
  v = 18446744073709551615ull;
  EXPECT_EQ(TokenCount(&v), kMaxUsageTokens);
  v = 12.9;
  EXPECT_EQ(TokenCount(&v), 12);
  v = "12";
  EXPECT_EQ(TokenCount(&v), std::nullopt);
  Usage u{10, 5, 8, 9, 7};  // parts larger than their wholes
  ClampUsage(u);
  EXPECT_EQ(u, (Usage{10, 5, 8, 5, 2}));
}

TEST(WireCommon, DataUrisGiveMediaTypeAndBase64) {
  auto png = ParseDataUri("data:image/png;base64,iVBORw0KGgo=");
  ASSERT_TRUE(png);
  EXPECT_EQ(png->media_type, "image/png");
  EXPECT_EQ(png->base64, "iVBORw0KGgo=");
  auto text = ParseDataUri("DATA:text/plain;charset=utf-8,hi%20there");
  ASSERT_TRUE(text);
  EXPECT_EQ(text->media_type, "text/plain");
  EXPECT_EQ(text->base64, "aGkgdGhlcmU=");  // "hi there"
  auto bare = ParseDataUri("data:,x");
  ASSERT_TRUE(bare);
  EXPECT_EQ(bare->media_type, "text/plain");
  EXPECT_FALSE(ParseDataUri("https://example.com/cat.png"));
  EXPECT_FALSE(ParseDataUri("data:image/png;base64"));  // no comma
}

TEST(WireCommon, UpstreamJsonMayCarryHalfACharacter) {
  const std::string half = "{\"t\":\"\xE4\xBD\"}";
  EXPECT_FALSE(ParseJson(half)) << "callers' JSON must be valid UTF-8";
  auto v = ParseUpstreamJson(half);
  ASSERT_TRUE(v);
  EXPECT_EQ(v->at("t").as_string().size(), 2u);
  std::string deep(100, '[');
  EXPECT_FALSE(ParseUpstreamJson(deep + std::string(100, ']'))) << "depth is limited";
}

TEST(WireCommon, ToolCallIdsAreFreshAndShaped) {
  const std::string a = NewToolCallId(), b = NewToolCallId();
  EXPECT_EQ(a.rfind("call_", 0), 0u);
  EXPECT_EQ(a.size(), 5u + 24u);
  EXPECT_NE(a, b);
}

// RFC 4648 section 10's vectors in the URL-safe alphabet, unpadded.
TEST(WireCommon, Base64UrlEncodesUnpaddedWithTheUrlAlphabet) {
  using detail::Base64UrlEncode;
  EXPECT_EQ(Base64UrlEncode(""), "");
  EXPECT_EQ(Base64UrlEncode("f"), "Zg");
  EXPECT_EQ(Base64UrlEncode("fo"), "Zm8");
  EXPECT_EQ(Base64UrlEncode("foo"), "Zm9v");
  EXPECT_EQ(Base64UrlEncode("foob"), "Zm9vYg");
  EXPECT_EQ(Base64UrlEncode("fooba"), "Zm9vYmE");
  EXPECT_EQ(Base64UrlEncode("foobar"), "Zm9vYmFy");
  EXPECT_EQ(Base64UrlEncode("\xfb\xff"), "-_8");  // "+/8=" in standard base64
  EXPECT_EQ(Base64UrlEncode(std::string("\0\0\0", 3)), "AAAA");
}

TEST(WireCommon, Base64UrlRoundTripsEveryLengthAndByte) {
  using detail::Base64UrlDecode;
  using detail::Base64UrlEncode;
  std::mt19937 rng(20240611);
  std::uniform_int_distribution<int> byte(0, 255);
  for (std::size_t n = 0; n <= 64; ++n) {
    std::string bytes(n, '\0');
    for (char& c : bytes) c = static_cast<char>(byte(rng));
    const std::string text = Base64UrlEncode(bytes);
    EXPECT_EQ(text.size(), (4 * n + 2) / 3) << n;
    EXPECT_EQ(text.find_first_of("+/="), std::string::npos) << text;
    EXPECT_EQ(Base64UrlDecode(text), bytes) << n;
  }
  std::string all;
  for (int i = 0; i < 256; ++i) all += static_cast<char>(i);
  for (std::size_t skip = 0; skip < 3; ++skip) {  // each byte in each position of a group
    const std::string bytes = all.substr(skip);
    EXPECT_EQ(Base64UrlDecode(Base64UrlEncode(bytes)), bytes) << skip;
  }
}

TEST(WireCommon, Base64UrlRejectsOtherAlphabetsPaddingAndBadLengths) {
  using detail::Base64UrlDecode;
  EXPECT_EQ(Base64UrlDecode(""), std::string());
  EXPECT_EQ(Base64UrlDecode("Zm9vYg"), "foob");
  EXPECT_FALSE(Base64UrlDecode("Zg=="));   // padding
  EXPECT_FALSE(Base64UrlDecode("Zm9vYg=")); // padding
  EXPECT_FALSE(Base64UrlDecode("+_8"));    // standard alphabet
  EXPECT_FALSE(Base64UrlDecode("-/8"));
  EXPECT_FALSE(Base64UrlDecode("Zm9v Yg"));
  EXPECT_FALSE(Base64UrlDecode("Zm9v\nYg"));
  EXPECT_FALSE(Base64UrlDecode(std::string("Zm9v\0", 5)));
  EXPECT_FALSE(Base64UrlDecode("Z"));      // length 4n+1
  EXPECT_FALSE(Base64UrlDecode("Zm9vY"));
  EXPECT_FALSE(Base64UrlDecode("Zh"));     // leftover bits set ("f" is "Zg")
  EXPECT_FALSE(Base64UrlDecode("Zm9"));    // leftover bits set ("fo" is "Zm8")
}

}  // namespace
}  // namespace tollgate::wire

TEST(JsonNestingDepthTest, CountsArraysAndObjectsOutsideStrings) {
  EXPECT_EQ(tollgate::wire::JsonNestingDepth(""), 0);
  EXPECT_EQ(tollgate::wire::JsonNestingDepth("42"), 0);
  EXPECT_EQ(tollgate::wire::JsonNestingDepth("{}"), 1);
  EXPECT_EQ(tollgate::wire::JsonNestingDepth(R"({"a":[1,{"b":[]}],"c":{}})"), 4);
  // Brackets in strings, escaped quotes included, do not count.
  EXPECT_EQ(tollgate::wire::JsonNestingDepth(R"({"a":"[[[{{\"[[["})"), 1);
  EXPECT_EQ(tollgate::wire::JsonNestingDepth(R"(["\\",[]])"), 2);
  // Not JSON: still a count, never a crash; stray closers do not go below 0.
  EXPECT_EQ(tollgate::wire::JsonNestingDepth("]]]][[["), 3);
  EXPECT_EQ(tollgate::wire::JsonNestingDepth("\"unterminated [[["), 0);
  EXPECT_EQ(tollgate::wire::JsonNestingDepth("\\"), 0);
  EXPECT_EQ(tollgate::wire::JsonNestingDepth(std::string(100000, '[')), 100000);
}
