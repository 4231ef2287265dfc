// wire/common.hpp: SSE frames, usage sanitising, data URIs, JSON parsing.
#include "tollgate/wire/common.hpp"

#include <boost/json.hpp>
#include <gtest/gtest.h>

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

}  // namespace
}  // namespace tollgate::wire
