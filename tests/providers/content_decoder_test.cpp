// providers/src/content_decoder.hpp: gzip and deflate (zlib and raw) bodies
// decoded incrementally, split at every byte, and the failures.
#include "content_decoder.hpp"

#include <gtest/gtest.h>
#include <zlib.h>

namespace tollgate::providers::detail {
namespace {

// windowBits: 16 + 15 gzip, 15 zlib, -15 raw deflate (zlib.h, deflateInit2).
// `flush_every`: Z_SYNC_FLUSH after each piece of that many bytes (as a
// streaming server flushes per SSE event).
std::string Compress(std::string_view text, int window_bits, std::size_t flush_every = 0) {
  z_stream zs{};
  EXPECT_EQ(deflateInit2(&zs, 6, Z_DEFLATED, window_bits, 8, Z_DEFAULT_STRATEGY), Z_OK);
  std::string out;
  char buf[4096];
  auto pump = [&](std::string_view piece, int flush) {
    zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(piece.data()));
    zs.avail_in = static_cast<uInt>(piece.size());
    do {
      zs.next_out = reinterpret_cast<Bytef*>(buf);
      zs.avail_out = sizeof buf;
      deflate(&zs, flush);
      out.append(buf, sizeof buf - zs.avail_out);
    } while (zs.avail_out == 0);
  };
  if (flush_every > 0) {
    for (std::size_t i = 0; i < text.size(); i += flush_every) pump(text.substr(i, flush_every), Z_SYNC_FLUSH);
    pump({}, Z_FINISH);
  } else {
    pump(text, Z_FINISH);
  }
  deflateEnd(&zs);
  return out;
}

// Feeds `encoded` in pieces of `step` bytes, pulling with a small buffer.
Result<std::string> Decode(ContentDecoder& d, std::string_view encoded, std::size_t step, std::size_t out_size = 7) {
  std::string out;
  std::string buf(out_size, '\0');
  for (std::size_t i = 0; i < encoded.size(); i += step) {
    d.Feed(encoded.substr(i, step));
    for (;;) {
      auto n = d.Next(buf.data(), buf.size());
      if (!n) return n.error();
      if (*n == 0) break;
      out.append(buf.data(), *n);
    }
  }
  if (auto f = d.Finish(); !f) return f.error();
  return out;
}

std::string Text() {
  std::string sse;
  for (int i = 0; i < 40; ++i) {
    sse += "data: {\"choices\":[{\"delta\":{\"content\":\"token " + std::to_string(i) + " héllo\"}}]}\n\n";
  }
  return sse + "data: [DONE]\n\n";
}

TEST(ContentDecoder, ChoosesByContentEncoding) {
  for (const char* v : {"", "identity", " Identity "}) {
    auto d = ContentDecoder::ForContentEncoding(v);
    ASSERT_TRUE(d.has_value()) << v;
    EXPECT_TRUE(d->identity());
  }
  EXPECT_EQ(ContentDecoder::ForContentEncoding("GZIP")->coding(), ContentDecoder::Coding::kGzip);
  EXPECT_EQ(ContentDecoder::ForContentEncoding("x-gzip")->coding(), ContentDecoder::Coding::kGzip);
  EXPECT_EQ(ContentDecoder::ForContentEncoding("deflate")->coding(), ContentDecoder::Coding::kDeflate);
  for (const char* v : {"br", "zstd", "compress", "gzip, br", "gzip,gzip"}) {
    auto d = ContentDecoder::ForContentEncoding(v);
    ASSERT_FALSE(d.has_value()) << v;
    EXPECT_EQ(d.error().code, ErrorCode::kBadGateway);
    EXPECT_NE(d.error().message.find("Content-Encoding (" + std::string(v) + ")"), std::string::npos)
        << d.error().message;
  }
  auto odd = ContentDecoder::ForContentEncoding(std::string(100, 'x') + "\x01");
  ASSERT_FALSE(odd.has_value());
  EXPECT_LT(odd.error().message.size(), 120u);
}

TEST(ContentDecoder, GzipAndBothDeflateFormsSplitAtEveryByte) {
  const std::string text = Text();
  for (const auto& [coding, bits] : std::vector<std::pair<const char*, int>>{{"gzip", 31}, {"deflate", 15}, {"deflate", -15}}) {
    const std::string encoded = Compress(text, bits, 97);
    for (std::size_t step : {std::size_t{1}, std::size_t{2}, std::size_t{3}, std::size_t{13}, encoded.size()}) {
      auto d = ContentDecoder::ForContentEncoding(coding);
      ASSERT_TRUE(d.has_value());
      auto out = Decode(*d, encoded, step);
      ASSERT_TRUE(out.has_value()) << coding << " " << bits << " step " << step << ": " << out.error().message;
      EXPECT_EQ(*out, text) << coding << " " << bits << " step " << step;
    }
  }
}

TEST(ContentDecoder, SyncFlushedPiecesComeOutBeforeTheStreamEnds) {
  // Each event flushed on its own: feeding just the first flush's bytes yields
  // the whole first event, before anything else has been sent.
  const std::string first = "data: {\"a\":1}\n\n";
  const std::string encoded = Compress(first + "data: {\"b\":2}\n\n", 31, first.size());
  // The first flush ends with the empty stored block 00 00 ff ff.
  const auto end_of_first = encoded.find(std::string("\x00\x00\xff\xff", 4));
  ASSERT_NE(end_of_first, std::string::npos);
  auto d = ContentDecoder::ForContentEncoding("gzip");
  d->Feed(std::string_view(encoded).substr(0, end_of_first + 4));
  std::string out(256, '\0');
  auto n = d->Next(out.data(), out.size());
  ASSERT_TRUE(n.has_value());
  EXPECT_EQ(out.substr(0, *n), first);
}

TEST(ContentDecoder, SeveralGzipMembersInARow) {
  const std::string encoded = Compress("hello, ", 31) + Compress("world", 31);
  auto d = ContentDecoder::ForContentEncoding("gzip");
  auto out = Decode(*d, encoded, 5);
  ASSERT_TRUE(out.has_value()) << out.error().message;
  EXPECT_EQ(*out, "hello, world");
}

TEST(ContentDecoder, CorruptTruncatedAndTrailingBytesAreErrors) {
  const std::string text = Text();
  // A wrong CRC-32 in the trailer (RFC 1952 section 2.3.1): the data decoded
  // fine but is not what was sent.
  std::string bad_crc = Compress(text, 31);
  bad_crc[bad_crc.size() - 6] ^= 0x55;
  auto d = ContentDecoder::ForContentEncoding("gzip");
  auto out = Decode(*d, bad_crc, 64);
  ASSERT_FALSE(out.has_value());
  EXPECT_EQ(out.error().code, ErrorCode::kBadGateway);
  EXPECT_NE(out.error().message.find("corrupt gzip"), std::string::npos) << out.error().message;
  // Damage in the middle: whichever way inflate notices, never success.
  std::string damaged = Compress(text, 31);
  for (std::size_t i = damaged.size() / 2; i < damaged.size() / 2 + 8; ++i) damaged[i] ^= 0x55;
  auto m = ContentDecoder::ForContentEncoding("gzip");
  auto r_damaged = Decode(*m, damaged, 64);
  ASSERT_FALSE(r_damaged.has_value());
  EXPECT_NE(r_damaged.error().message.find("gzip"), std::string::npos) << r_damaged.error().message;

  const std::string whole = Compress(text, 31);
  for (std::size_t cut : {std::size_t{1}, std::size_t{5}, whole.size() / 2, whole.size() - 1}) {
    auto t = ContentDecoder::ForContentEncoding("gzip");
    auto r = Decode(*t, std::string_view(whole).substr(0, cut), 16);
    ASSERT_FALSE(r.has_value()) << cut;
    EXPECT_NE(r.error().message.find("cut short"), std::string::npos) << r.error().message;
  }
  auto one_byte = ContentDecoder::ForContentEncoding("deflate");
  EXPECT_FALSE(Decode(*one_byte, "x", 1).has_value());

  auto trailing = ContentDecoder::ForContentEncoding("deflate");
  auto r = Decode(*trailing, Compress("abc", 15) + "junk", 100);
  ASSERT_FALSE(r.has_value());
  auto garbage = ContentDecoder::ForContentEncoding("gzip");
  EXPECT_FALSE(Decode(*garbage, "this is not gzip at all", 4).has_value());
}

TEST(ContentDecoder, EmptyBodyIsFine) {
  auto d = ContentDecoder::ForContentEncoding("gzip");
  auto out = Decode(*d, "", 1);
  ASSERT_TRUE(out.has_value());
  EXPECT_EQ(*out, "");
}

TEST(ContentDecoder, AHighlyCompressedBodyComesOutInPiecesNoLargerThanTheBuffer) {
  const std::string zeros(4 << 20, '\0');
  const std::string encoded = Compress(zeros, 31);
  ASSERT_LT(encoded.size(), 10000u);
  auto d = ContentDecoder::ForContentEncoding("gzip");
  d->Feed(encoded);
  std::string buf(1024, 'x');
  std::size_t total = 0, pieces = 0;
  for (;;) {
    auto n = d->Next(buf.data(), buf.size());
    ASSERT_TRUE(n.has_value());
    if (*n == 0) break;
    ASSERT_LE(*n, buf.size());
    total += *n;
    ++pieces;
  }
  EXPECT_EQ(total, zeros.size());
  EXPECT_GE(pieces, zeros.size() / buf.size());
  EXPECT_TRUE(d->Finish().has_value());
}

}  // namespace
}  // namespace tollgate::providers::detail
