// Block layouts and exact dequantization (hand-built blocks per ggml's
// ggml-common.h / ggml-quants.c), reference quantizer error bounds, and
// F16/BF16 rounding edge cases.
#include "tollgate/local_backend/quant.hpp"

#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

namespace tollgate::local_backend {
namespace {

constexpr uint16_t kHalfOne = 0x3c00;   // 1.0
constexpr uint16_t kHalfHalf = 0x3800;  // 0.5
constexpr uint16_t kHalfQuarter = 0x3400;  // 0.25

std::vector<float> Dequant(GgmlType type, const void* blocks, int64_t n) {
  std::vector<float> out(static_cast<size_t>(n));
  DequantizeRow(type, blocks, out.data(), n);
  return out;
}

TEST(Quant, TypeTableMatchesGgml) {
  // ggml.c type_traits: {blck_size, type_size}.
  struct Row { GgmlType t; int64_t bs, bytes; };
  const Row rows[] = {
      {GgmlType::kF32, 1, 4},      {GgmlType::kF16, 1, 2},       {GgmlType::kBF16, 1, 2},
      {GgmlType::kQ4_0, 32, 18},   {GgmlType::kQ4_1, 32, 20},    {GgmlType::kQ5_0, 32, 22},
      {GgmlType::kQ5_1, 32, 24},   {GgmlType::kQ8_0, 32, 34},    {GgmlType::kQ8_1, 32, 36},
      {GgmlType::kQ2_K, 256, 84},  {GgmlType::kQ3_K, 256, 110},  {GgmlType::kQ4_K, 256, 144},
      {GgmlType::kQ5_K, 256, 176}, {GgmlType::kQ6_K, 256, 210},  {GgmlType::kQ8_K, 256, 292},
  };
  for (const Row& r : rows) {
    EXPECT_EQ(QuantBlockSize(r.t), r.bs) << GgmlTypeName(r.t);
    EXPECT_EQ(QuantBlockBytes(r.t), r.bytes) << GgmlTypeName(r.t);
  }
  EXPECT_EQ(RowBytes(GgmlType::kQ4_K, 512), 288);
  EXPECT_EQ(QuantBlockSize(static_cast<GgmlType>(99)), 0);
}

TEST(Quant, Q4_0BlockGivesNibbleMinusEightTimesScale) {
  BlockQ4_0 b{};
  b.d = kHalfHalf;
  for (int j = 0; j < 16; ++j) b.qs[j] = static_cast<uint8_t>(j | ((15 - j) << 4));
  const auto y = Dequant(GgmlType::kQ4_0, &b, 32);
  for (int j = 0; j < 16; ++j) {
    EXPECT_EQ(y[j], (j - 8) * 0.5f) << j;                // low nibbles: elements 0..15
    EXPECT_EQ(y[j + 16], (15 - j - 8) * 0.5f) << j;      // high nibbles: elements 16..31
  }
}

TEST(Quant, Q4_1AndQ5BlocksUseMinAndHighBits) {
  BlockQ4_1 b41{};
  b41.d = kHalfHalf;
  b41.m = 0xbc00;  // -1.0
  for (int j = 0; j < 16; ++j) b41.qs[j] = static_cast<uint8_t>(j | (j << 4));
  auto y = Dequant(GgmlType::kQ4_1, &b41, 32);
  for (int j = 0; j < 16; ++j) {
    EXPECT_EQ(y[j], j * 0.5f - 1.0f);
    EXPECT_EQ(y[j + 16], j * 0.5f - 1.0f);
  }

  BlockQ5_0 b50{};
  b50.d = kHalfQuarter;
  const uint32_t qh = 0xA5A5F00Fu;  // bit j: high bit of element j
  std::memcpy(b50.qh, &qh, 4);
  for (int j = 0; j < 16; ++j) b50.qs[j] = static_cast<uint8_t>(j | ((15 - j) << 4));
  y = Dequant(GgmlType::kQ5_0, &b50, 32);
  for (int j = 0; j < 32; ++j) {
    const int low = j < 16 ? j : 15 - (j - 16);
    const int q = low | (((qh >> j) & 1) << 4);
    EXPECT_EQ(y[j], (q - 16) * 0.25f) << j;
  }

  BlockQ5_1 b51{};
  b51.d = kHalfQuarter;
  b51.m = kHalfOne;
  std::memcpy(b51.qh, &qh, 4);
  std::memcpy(b51.qs, b50.qs, 16);
  y = Dequant(GgmlType::kQ5_1, &b51, 32);
  for (int j = 0; j < 32; ++j) {
    const int low = j < 16 ? j : 15 - (j - 16);
    const int q = low | (((qh >> j) & 1) << 4);
    EXPECT_EQ(y[j], q * 0.25f + 1.0f) << j;
  }
}

TEST(Quant, Q8_0BlockIsScaleTimesSignedByte) {
  BlockQ8_0 b[2]{};
  b[0].d = kHalfQuarter;
  b[1].d = 0xc000;  // -2.0
  for (int j = 0; j < 32; ++j) {
    b[0].qs[j] = static_cast<int8_t>(j * 8 - 128);
    b[1].qs[j] = static_cast<int8_t>(127 - j);
  }
  const auto y = Dequant(GgmlType::kQ8_0, b, 64);
  for (int j = 0; j < 32; ++j) {
    EXPECT_EQ(y[j], (j * 8 - 128) * 0.25f);
    EXPECT_EQ(y[32 + j], (127 - j) * -2.0f);
  }
}

// Packs 6-bit scales and mins the way ggml-common.h documents block_q4_K's
// `scales` (written out independently of GetScaleMinK4).
void PackK4Scales(const uint8_t sc[8], const uint8_t mn[8], uint8_t out[12]) {
  for (int j = 0; j < 4; ++j) {
    out[j] = static_cast<uint8_t>((sc[j] & 63) | ((sc[j + 4] >> 4) << 6));
    out[j + 4] = static_cast<uint8_t>((mn[j] & 63) | ((mn[j + 4] >> 4) << 6));
    out[j + 8] = static_cast<uint8_t>((sc[j + 4] & 0xF) | ((mn[j + 4] & 0xF) << 4));
  }
}

constexpr uint8_t kScales[8] = {1, 2, 3, 63, 17, 33, 48, 60};
constexpr uint8_t kMins[8] = {0, 5, 62, 7, 20, 40, 63, 1};

TEST(Quant, K4ScaleMinUnpacking) {
  uint8_t packed[12];
  PackK4Scales(kScales, kMins, packed);
  for (int j = 0; j < 8; ++j) {
    uint8_t sc = 0, m = 0;
    GetScaleMinK4(j, packed, &sc, &m);
    EXPECT_EQ(sc, kScales[j]) << j;
    EXPECT_EQ(m, kMins[j]) << j;
  }
}

TEST(Quant, Q4_KBlockAppliesSubBlockScalesAndMins) {
  BlockQ4_K b{};
  b.d = kHalfOne;
  b.dmin = kHalfHalf;
  PackK4Scales(kScales, kMins, b.scales);
  // Element e = 32*j + l of sub-block j lives in qs[32*(j/2) + l], low nibble
  // for even j, high for odd j.
  auto q_of = [](int j, int l) { return (l + 3 * j) % 16; };
  for (int j = 0; j < 8; ++j) {
    for (int l = 0; l < 32; ++l) {
      uint8_t& byte = b.qs[32 * (j / 2) + l];
      byte = static_cast<uint8_t>(j % 2 == 0 ? (byte & 0xF0) | q_of(j, l) : (byte & 0x0F) | (q_of(j, l) << 4));
    }
  }
  const auto y = Dequant(GgmlType::kQ4_K, &b, 256);
  for (int j = 0; j < 8; ++j) {
    for (int l = 0; l < 32; ++l) {
      const float expected = 1.0f * kScales[j] * q_of(j, l) - 0.5f * kMins[j];
      EXPECT_EQ(y[32 * j + l], expected) << j << "," << l;
    }
  }
}

TEST(Quant, Q5_KBlockAddsHighBits) {
  BlockQ5_K b{};
  b.d = kHalfHalf;
  b.dmin = kHalfOne;
  PackK4Scales(kScales, kMins, b.scales);
  auto q_of = [](int j, int l) { return (7 * l + j) % 32; };
  for (int j = 0; j < 8; ++j) {
    for (int l = 0; l < 32; ++l) {
      const int q = q_of(j, l);
      uint8_t& byte = b.qs[32 * (j / 2) + l];
      byte = static_cast<uint8_t>(j % 2 == 0 ? (byte & 0xF0) | (q & 0xF) : (byte & 0x0F) | ((q & 0xF) << 4));
      if (q & 16) b.qh[l] |= static_cast<uint8_t>(1 << j);  // bit j of qh[l] for sub-block j
    }
  }
  const auto y = Dequant(GgmlType::kQ5_K, &b, 256);
  for (int j = 0; j < 8; ++j) {
    for (int l = 0; l < 32; ++l) {
      const float expected = 0.5f * kScales[j] * q_of(j, l) - 1.0f * kMins[j];
      EXPECT_EQ(y[32 * j + l], expected) << j << "," << l;
    }
  }
}

TEST(Quant, Q6_KBlockUsesSignedScalesAndSixBitQuants) {
  BlockQ6_K b{};
  b.d = kHalfHalf;
  for (int k = 0; k < 16; ++k) b.scales[k] = static_cast<int8_t>(k * 9 - 70);
  auto q_of = [](int e) { return (e * 5 + 3) % 64; };
  // Element e = 128h + 32s + l: low nibble in ql[64h + l + 32*(s&1)] (high half
  // when s >= 2), top 2 bits in qh[32h + l] at bit 2s, scale 8h + l/16 + 2s.
  for (int e = 0; e < 256; ++e) {
    const int h = e / 128, s = (e % 128) / 32, l = e % 32;
    const int q = q_of(e);
    uint8_t& lo = b.ql[64 * h + l + 32 * (s & 1)];
    lo = static_cast<uint8_t>(s < 2 ? (lo & 0xF0) | (q & 0xF) : (lo & 0x0F) | ((q & 0xF) << 4));
    b.qh[32 * h + l] |= static_cast<uint8_t>((q >> 4) << (2 * s));
  }
  const auto y = Dequant(GgmlType::kQ6_K, &b, 256);
  for (int e = 0; e < 256; ++e) {
    const int h = e / 128, s = (e % 128) / 32, l = e % 32;
    const float expected = 0.5f * b.scales[8 * h + l / 16 + 2 * s] * (q_of(e) - 32);
    EXPECT_EQ(y[e], expected) << e;
  }
}

TEST(Quant, Q8_KBlockAndBsums) {
  std::vector<float> x(256);
  for (int i = 0; i < 256; ++i) x[i] = static_cast<float>(i - 100) / 10.0f;
  BlockQ8_K b{};
  QuantizeRow(GgmlType::kQ8_K, x.data(), &b, 256);
  // amax 15.5 is positive, so iscale = -127 / 15.5 and d = 1 / iscale < 0.
  EXPECT_FLOAT_EQ(b.d, -15.5f / 127.0f);
  EXPECT_EQ(b.qs[255], -127);
  for (int k = 0; k < 16; ++k) {
    int sum = 0;
    for (int i = 0; i < 16; ++i) sum += b.qs[16 * k + i];
    EXPECT_EQ(b.bsums[k], sum);
  }
  const auto y = Dequant(GgmlType::kQ8_K, &b, 256);
  for (int i = 0; i < 256; ++i) EXPECT_EQ(y[i], b.d * b.qs[i]);
}

TEST(Quant, Q8_0QuantizesToRoundedMultiplesOfAmaxOver127) {
  std::vector<float> x(32);
  for (int j = 0; j < 32; ++j) x[j] = static_cast<float>(j - 16);  // amax 16
  BlockQ8_0 b{};
  QuantizeRow(GgmlType::kQ8_0, x.data(), &b, 32);
  EXPECT_EQ(b.d, FloatToHalf(16.0f / 127.0f));
  const float id = 127.0f / 16.0f;
  for (int j = 0; j < 32; ++j) EXPECT_EQ(b.qs[j], static_cast<int8_t>(std::round(x[j] * id))) << j;
  EXPECT_EQ(b.qs[0], -127);
}

TEST(Quant, Q4_0RoundTripsValuesOnItsGrid) {
  // amax element -8 gives d = -8 / -8 = 1, so integers -8..7 are exact.
  std::vector<float> x(32);
  for (int j = 0; j < 32; ++j) x[j] = static_cast<float>((j * 7) % 16 - 8);
  x[5] = -8.0f;
  BlockQ4_0 b{};
  QuantizeRow(GgmlType::kQ4_0, x.data(), &b, 32);
  EXPECT_EQ(b.d, kHalfOne);
  EXPECT_EQ(Dequant(GgmlType::kQ4_0, &b, 32), x);
}

// ggml-quants.c quantize_row_{q4_1,q5_0,q5_1}_ref on values that sit on their
// grids: Q4_1/Q5_1 take d = (max - min) / (2^bits - 1) and m = min, Q5_0 takes
// d = max / -16 from the element of largest magnitude (here -16: d = 1).
TEST(Quant, Q4_1Q5_0AndQ5_1RoundTripValuesOnTheirGrids) {
  std::vector<float> x(32);
  for (int j = 0; j < 32; ++j) x[j] = static_cast<float>((j * 7) % 16 - 2);  // -2..13: d 1, m -2
  BlockQ4_1 b41{};
  QuantizeRow(GgmlType::kQ4_1, x.data(), &b41, 32);
  EXPECT_EQ(b41.d, kHalfOne);
  EXPECT_EQ(b41.m, FloatToHalf(-2.0f));
  EXPECT_EQ(b41.qs[1] & 0x0F, 7);  // x[1] = 5 -> q = 5 - m = 7
  EXPECT_EQ(Dequant(GgmlType::kQ4_1, &b41, 32), x);

  for (int j = 0; j < 32; ++j) x[j] = static_cast<float>((j * 13) % 32 - 16);  // -16..15
  BlockQ5_0 b50{};
  QuantizeRow(GgmlType::kQ5_0, x.data(), &b50, 32);
  EXPECT_EQ(b50.d, kHalfOne);
  uint32_t qh;
  std::memcpy(&qh, b50.qh, 4);
  for (int j = 0; j < 32; ++j) EXPECT_EQ((qh >> j) & 1, x[j] >= 0 ? 1u : 0u) << j;  // q = x + 16 >= 16
  EXPECT_EQ(Dequant(GgmlType::kQ5_0, &b50, 32), x);

  for (int j = 0; j < 32; ++j) x[j] = static_cast<float>((j * 13) % 32 - 5);  // -5..26: d 1, m -5
  BlockQ5_1 b51{};
  QuantizeRow(GgmlType::kQ5_1, x.data(), &b51, 32);
  EXPECT_EQ(b51.d, kHalfOne);
  EXPECT_EQ(b51.m, FloatToHalf(-5.0f));
  std::memcpy(&qh, b51.qh, 4);
  for (int j = 0; j < 32; ++j) EXPECT_EQ((qh >> j) & 1, x[j] + 5 >= 16 ? 1u : 0u) << j;
  EXPECT_EQ(Dequant(GgmlType::kQ5_1, &b51, 32), x);
}

TEST(Quant, AllZeroBlocksStayZero) {
  std::vector<float> x(256, 0.0f);
  for (GgmlType t : {GgmlType::kQ4_0, GgmlType::kQ4_1, GgmlType::kQ5_0, GgmlType::kQ5_1, GgmlType::kQ8_0,
                     GgmlType::kQ4_K, GgmlType::kQ5_K, GgmlType::kQ6_K, GgmlType::kQ8_K, GgmlType::kF16,
                     GgmlType::kBF16}) {
    std::vector<std::byte> q(static_cast<size_t>(RowBytes(t, 256)));
    QuantizeRow(t, x.data(), q.data(), 256);
    EXPECT_EQ(Dequant(t, q.data(), 256), x) << GgmlTypeName(t);
  }
}

struct ErrorStats {
  double rel_rmse = 0;       // rmse / rms(x)
  double max_over_amax = 0;  // max |y - x| / max |x| within the same block
};

ErrorStats RoundTrip(GgmlType type, const std::vector<float>& x) {
  const auto n = static_cast<int64_t>(x.size());
  std::vector<std::byte> q(static_cast<size_t>(RowBytes(type, n)));
  QuantizeRow(type, x.data(), q.data(), n);
  const auto y = Dequant(type, q.data(), n);
  const int64_t bs = std::max<int64_t>(QuantBlockSize(type), 32);
  double se = 0, sx = 0;
  ErrorStats s;
  for (int64_t b = 0; b < n; b += bs) {
    double amax = 0, emax = 0;
    for (int64_t i = b; i < b + bs; ++i) {
      amax = std::max(amax, std::fabs(static_cast<double>(x[i])));
      emax = std::max(emax, std::fabs(static_cast<double>(y[i]) - x[i]));
      se += (static_cast<double>(y[i]) - x[i]) * (static_cast<double>(y[i]) - x[i]);
      sx += static_cast<double>(x[i]) * x[i];
    }
    if (amax > 0) s.max_over_amax = std::max(s.max_over_amax, emax / amax);
  }
  s.rel_rmse = std::sqrt(se / sx);
  return s;
}

TEST(Quant, ReferenceQuantizersStayWithinErrorBounds) {
  std::mt19937_64 rng(42);
  std::normal_distribution<float> normal(0.0f, 0.02f);
  std::vector<float> x(256 * 64);
  for (float& v : x) v = normal(rng);
  // Bounds: the measured errors (printed; see the comment per type) with
  // margin. Q4_0's worst case is amax/8 (an element of the sign opposite to the
  // amax one at +8 steps clamps to +7), Q5_0's amax/16 likewise; Q4_1/Q5_1's is
  // half a step of (max - min) / 15 or / 31, at most amax/15 or amax/31, plus
  // the F16 rounding of d and m; Q8_0's is half a step, amax/254, plus the
  // F16 rounding of d times up to 127 steps (amax * 2^-11); Q8_K's scale is a
  // float, so only the half step.
  struct Bound { GgmlType t; double rel_rmse, max_over_amax; };
  const Bound bounds[] = {
      {GgmlType::kF16, 3e-4, 5e-4},     // measured 0.00020, 0.00046
      {GgmlType::kBF16, 2.5e-3, 4e-3},  // 0.00167, 0.00389
      {GgmlType::kQ8_0, 7e-3, 4.5e-3},  // 0.00540, 0.00415
      {GgmlType::kQ4_0, 0.11, 0.126},   // 0.0867, 0.1250
      {GgmlType::kQ4_1, 0.095, 0.07},   // 0.0781, 0.0666
      {GgmlType::kQ5_0, 0.055, 0.064},  // 0.0428, 0.0625
      {GgmlType::kQ5_1, 0.047, 0.035},  // 0.0380, 0.0327
      {GgmlType::kQ4_K, 0.09, 0.09},    // 0.0714, 0.0703
      {GgmlType::kQ5_K, 0.045, 0.045},  // 0.0362, 0.0363
      {GgmlType::kQ6_K, 0.022, 0.02},   // 0.0178, 0.0162
      {GgmlType::kQ8_K, 9e-3, 4.2e-3},  // 0.00707, 0.00394
  };
  for (const Bound& b : bounds) {
    const ErrorStats s = RoundTrip(b.t, x);
    std::printf("  %-5s rel_rmse %.5f  max_err/amax %.5f\n", GgmlTypeName(b.t).c_str(), s.rel_rmse, s.max_over_amax);
    EXPECT_LT(s.rel_rmse, b.rel_rmse) << GgmlTypeName(b.t);
    EXPECT_LT(s.max_over_amax, b.max_over_amax) << GgmlTypeName(b.t);
  }
}

TEST(Quant, QuantizeIsDeterministicAndBlockwise) {
  // Quantizing two rows at once gives the same bytes as one at a time.
  std::mt19937_64 rng(7);
  std::uniform_real_distribution<float> u(-3.0f, 3.0f);
  std::vector<float> x(512);
  for (float& v : x) v = u(rng);
  for (GgmlType t : {GgmlType::kQ4_0, GgmlType::kQ4_1, GgmlType::kQ5_0, GgmlType::kQ5_1, GgmlType::kQ8_0,
                     GgmlType::kQ4_K, GgmlType::kQ5_K, GgmlType::kQ6_K}) {
    const auto half = static_cast<size_t>(RowBytes(t, 256));
    std::vector<std::byte> whole(2 * half), parts(2 * half);
    QuantizeRow(t, x.data(), whole.data(), 512);
    QuantizeRow(t, x.data(), parts.data(), 256);
    QuantizeRow(t, x.data() + 256, parts.data() + half, 256);
    EXPECT_EQ(whole, parts) << GgmlTypeName(t);
  }
}

TEST(Quant, HalfConversionRoundsToNearestEven) {
  EXPECT_EQ(FloatToHalf(1.0f), 0x3c00);
  EXPECT_EQ(FloatToHalf(-2.0f), 0xc000);
  EXPECT_EQ(FloatToHalf(0.0f), 0x0000);
  EXPECT_EQ(FloatToHalf(-0.0f), 0x8000);
  EXPECT_EQ(FloatToHalf(65504.0f), 0x7bff);
  EXPECT_EQ(FloatToHalf(65519.99f), 0x7bff);
  EXPECT_EQ(FloatToHalf(65520.0f), 0x7c00);  // tie between 65504 (odd) and 65536 -> inf
  EXPECT_EQ(FloatToHalf(1e10f), 0x7c00);
  EXPECT_EQ(FloatToHalf(-std::numeric_limits<float>::infinity()), 0xfc00);
  const uint16_t nan = FloatToHalf(std::numeric_limits<float>::quiet_NaN());
  EXPECT_EQ(nan & 0x7c00, 0x7c00);
  EXPECT_NE(nan & 0x03ff, 0);
  // Ties in the normal range: 1 + 2^-11 is half-way between 1 and 1 + 2^-10.
  EXPECT_EQ(FloatToHalf(1.0f + 0x1p-11f), 0x3c00);                // to even (down)
  EXPECT_EQ(FloatToHalf(1.0f + 3 * 0x1p-11f), 0x3c02);            // to even (up)
  EXPECT_EQ(FloatToHalf(1.0f + 0x1p-11f + 0x1p-20f), 0x3c01);     // above half
  EXPECT_EQ(FloatToHalf(2047.0f / 1024.0f + 0x1p-11f), 0x4000);   // carry into the exponent
  // Subnormals: units of 2^-24.
  EXPECT_EQ(FloatToHalf(0x1p-24f), 0x0001);
  EXPECT_EQ(FloatToHalf(0x1p-25f), 0x0000);                       // tie -> even 0
  EXPECT_EQ(FloatToHalf(0x1p-25f * 1.0000001f), 0x0001);
  EXPECT_EQ(FloatToHalf(3 * 0x1p-25f), 0x0002);                   // 1.5 units -> 2
  EXPECT_EQ(FloatToHalf(5 * 0x1p-25f), 0x0002);                   // 2.5 units -> 2
  EXPECT_EQ(FloatToHalf(0x1p-14f), 0x0400);                       // smallest normal
  EXPECT_EQ(FloatToHalf(1023.5f * 0x1p-24f), 0x0400);             // tie, rounds up into the normals
  EXPECT_EQ(FloatToHalf(1e-30f), 0x0000);
  EXPECT_EQ(FloatToHalf(-1e-30f), 0x8000);
  // Every finite half survives float and back; NaNs stay NaN.
  for (uint32_t h = 0; h < 0x10000; ++h) {
    const float f = HalfToFloat(static_cast<uint16_t>(h));
    if (std::isnan(f)) {
      EXPECT_TRUE(std::isnan(HalfToFloat(FloatToHalf(f))));
    } else {
      ASSERT_EQ(FloatToHalf(f), h) << std::hex << h;
    }
  }
}

TEST(Quant, Bf16ConversionRoundsToNearestEven) {
  EXPECT_EQ(FloatToBf16(1.0f), 0x3f80);
  EXPECT_EQ(FloatToBf16(1.0f + 0x1p-8f), 0x3f80);         // tie -> even
  EXPECT_EQ(FloatToBf16(1.0f + 3 * 0x1p-8f), 0x3f82);     // tie -> even (up)
  EXPECT_EQ(FloatToBf16(1.0f + 0x1p-8f + 0x1p-20f), 0x3f81);
  EXPECT_EQ(FloatToBf16(std::numeric_limits<float>::max()), 0x7f80);  // rounds to inf
  EXPECT_EQ(FloatToBf16(-std::numeric_limits<float>::infinity()), 0xff80);
  const uint16_t nan = FloatToBf16(std::bit_cast<float>(0x7f800001u));  // signalling NaN
  EXPECT_EQ(nan & 0x7f80, 0x7f80);
  EXPECT_NE(nan & 0x7f, 0);
  EXPECT_NE(nan & 0x40, 0);  // quieted
  for (uint32_t b = 0; b < 0x10000; ++b) {
    const float f = Bf16ToFloat(static_cast<uint16_t>(b));
    if (!std::isnan(f)) {
      ASSERT_EQ(FloatToBf16(f), b) << std::hex << b;
    }
  }
  std::vector<uint16_t> raw = {0x3f80, 0xc2f7, 0x0001};
  const auto y = Dequant(GgmlType::kBF16, raw.data(), 3);
  EXPECT_EQ(y[0], 1.0f);
  EXPECT_EQ(y[1], -123.5f);
  EXPECT_EQ(y[2], std::bit_cast<float>(0x00010000u));
}

TEST(Quant, SupportSets) {
  for (GgmlType t : {GgmlType::kF32, GgmlType::kF16, GgmlType::kBF16, GgmlType::kQ8_0, GgmlType::kQ4_0,
                     GgmlType::kQ4_1, GgmlType::kQ5_0, GgmlType::kQ5_1, GgmlType::kQ4_K, GgmlType::kQ5_K,
                     GgmlType::kQ6_K, GgmlType::kQ8_K}) {
    EXPECT_TRUE(IsQuantizeSupported(t)) << GgmlTypeName(t);
    EXPECT_TRUE(IsDequantizeSupported(t)) << GgmlTypeName(t);
  }
  EXPECT_FALSE(IsQuantizeSupported(GgmlType::kQ8_1));
  EXPECT_FALSE(IsDequantizeSupported(GgmlType::kQ8_1));
  EXPECT_FALSE(IsDequantizeSupported(GgmlType::kQ2_K));
  EXPECT_FALSE(IsDequantizeSupported(GgmlType::kI32));
}

}  // namespace
}  // namespace tollgate::local_backend
