// The CPU kernel tables (local_backend/src/cpu_kernels.hpp): every vector table
// equals the portable one bit for bit, the portable one equals a float64
// computation on the dequantized operands within float32 rounding, and the
// activation quantizers are ggml's.
#include "../../local_backend/src/cpu_kernels.hpp"

#include "tollgate/local_backend/quant.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

namespace tollgate::local_backend::cpu {
namespace {

constexpr GgmlType kTypes[] = {GgmlType::kF32,  GgmlType::kF16,  GgmlType::kBF16, GgmlType::kQ8_0,
                               GgmlType::kQ4_0, GgmlType::kQ4_1, GgmlType::kQ5_0, GgmlType::kQ5_1,
                               GgmlType::kQ4_K, GgmlType::kQ5_K, GgmlType::kQ6_K};

std::vector<float> Randoms(std::mt19937& rng, size_t n, float scale = 1.0f) {
  std::normal_distribution<float> d(0.0f, scale);
  std::vector<float> v(n);
  for (float& f : v) f = d(rng);
  return v;
}

struct Problem {
  GgmlType type;
  int rows, tokens, cols;
  std::vector<std::byte> w, x;
  std::vector<std::byte> original;  // the weights in their file layout
  std::vector<float> x_float;       // the activations before quantization
  size_t w_row = 0, x_row = 0;
};

// Weights normal(w_mean, 1), activations normal(0, 1).
Problem MakeProblem(const Kernels& k, GgmlType type, int rows, int tokens, int cols, uint32_t seed,
                    float w_mean = 0.0f) {
  std::mt19937 rng(seed);
  Problem p{type, rows, tokens, cols, {}, {}, {}};
  p.w_row = static_cast<size_t>(RowBytes(type, cols));
  p.w.resize(p.w_row * static_cast<size_t>(rows));
  for (int r = 0; r < rows; ++r) {
    std::vector<float> row = Randoms(rng, static_cast<size_t>(cols));
    for (float& v : row) v += w_mean;
    QuantizeRow(type, row.data(), p.w.data() + r * p.w_row, cols);
  }
  p.original = p.w;
  if (type == GgmlType::kQ4_0) {  // the kernels read the interleaved copy the backend makes
    p.w.assign(RepackedQ4_0Bytes(rows, cols), std::byte{0});
    RepackQ4_0x8(p.original.data(), rows, cols, p.w.data(), 0, (rows + 7) / 8);
  } else if (type == GgmlType::kQ5_0) {
    p.w.assign(RepackedQ5_0Bytes(rows, cols), std::byte{0});
    RepackQ5_0x8(p.original.data(), rows, cols, p.w.data(), 0, (rows + 7) / 8);
  }
  const ActFormat f = ActFormatFor(type);
  p.x_row = ActRowBytes(f, cols);
  p.x.resize(p.x_row * static_cast<size_t>(tokens));
  p.x_float = Randoms(rng, static_cast<size_t>(cols) * static_cast<size_t>(tokens));
  for (int t = 0; t < tokens; ++t) {
    const float* src = p.x_float.data() + static_cast<size_t>(t) * static_cast<size_t>(cols);
    std::byte* dst = p.x.data() + static_cast<size_t>(t) * p.x_row;
    if (f == ActFormat::kF32) std::memcpy(dst, src, p.x_row);
    if (f == ActFormat::kQ8_0) k.quantize_q8_0(src, dst, cols);
    if (f == ActFormat::kQ8_K) k.quantize_q8_K(src, dst, cols);
  }
  return p;
}

std::vector<float> RunGemm(const Kernels& k, const Problem& p, int row0, int rows, int token0, int tokens, bool accumulate,
                       float init = 0.0f) {
  std::vector<float> out(static_cast<size_t>(p.rows * p.tokens), init);
  GemmArgs a;
  a.w = p.w.data() + static_cast<size_t>(row0) * p.w_row;
  a.w_row_bytes = p.w_row;
  a.x = p.x.data() + static_cast<size_t>(token0) * p.x_row;
  a.x_row_bytes = p.x_row;
  a.out = out.data() + static_cast<size_t>(token0) * static_cast<size_t>(p.rows) + static_cast<size_t>(row0);
  a.out_stride = static_cast<size_t>(p.rows);
  a.rows = rows;
  a.tokens = tokens;
  a.cols = p.cols;
  a.accumulate = accumulate;
  k.gemm[GemmIndex(p.type)](a);
  return out;
}

std::vector<const Kernels*> VectorTables() {
  std::vector<const Kernels*> out;
  for (Isa isa : {Isa::kAvx2, Isa::kAvx512}) {
    if (const Kernels* k = KernelsFor(isa)) out.push_back(k);
  }
  return out;
}

TEST(CpuKernels, SelectsTheWidestSupportedTable) {
  const Kernels* best = KernelsFor(BestIsa());
  ASSERT_NE(best, nullptr);
  EXPECT_EQ(best->isa, BestIsa());
  EXPECT_TRUE(MatchesGeneric(*best));
  // Every x86-64 machine this project runs on has AVX2 (the brief): a build
  // or dispatch that lost the vector kernels must fail here, not pass quietly.
#if defined(__x86_64__) && !defined(TOLLGATE_LOCAL_BACKEND_NO_MULTIVERSION)
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
    EXPECT_FALSE(VectorTables().empty()) << "this CPU has AVX2+FMA, yet no vector kernel table was chosen";
  }
#endif
}

TEST(CpuKernels, VectorTablesMatchThePortableOneBitForBit) {
  const Kernels& g = GenericKernels();
  for (const Kernels* k : VectorTables()) {
    uint32_t seed = 1;
    for (GgmlType type : kTypes) {
      const int block = static_cast<int>(QuantBlockSize(type));
      for (int cols : {block == 1 ? 13 : 256, block == 1 ? 200 : 512, 1024}) {
        for (int rows : {1, 3, 8, 13}) {
          for (int tokens : {1, 2, 5, 9}) {
            const Problem pg = MakeProblem(g, type, rows, tokens, cols, seed);
            const Problem pk = MakeProblem(*k, type, rows, tokens, cols, seed++);
            ASSERT_EQ(pg.x, pk.x) << IsaName(k->isa) << " activation quantizer, " << GgmlTypeName(type);
            const std::vector<float> a = RunGemm(g, pg, 0, rows, 0, tokens, false);
            const std::vector<float> b = RunGemm(*k, pk, 0, rows, 0, tokens, false);
            ASSERT_EQ(0, std::memcmp(a.data(), b.data(), a.size() * sizeof(float)))
                << IsaName(k->isa) << " " << GgmlTypeName(type) << " " << rows << "x" << cols << " tokens " << tokens;
          }
        }
      }
    }
  }
}

// Every output of `p` through `k` against the float64 sum of the dequantized
// products; the kernel's only freedom is float32 rounding of the scaled
// partial sums, bounded relative to sum |w x|.
void ExpectMatchesFloat64(const Kernels& k, const Problem& p) {
  const std::vector<float> got = RunGemm(k, p, 0, p.rows, 0, p.tokens, false);
  const ActFormat f = ActFormatFor(p.type);
  const int cols = p.cols;
  for (int t = 0; t < p.tokens; ++t) {
    std::vector<float> x(static_cast<size_t>(cols));
    const std::byte* xr = p.x.data() + static_cast<size_t>(t) * p.x_row;
    if (f == ActFormat::kF32) std::memcpy(x.data(), xr, p.x_row);
    if (f == ActFormat::kQ8_0) DequantizeRow(GgmlType::kQ8_0, xr, x.data(), cols);
    if (f == ActFormat::kQ8_K) DequantizeRow(GgmlType::kQ8_K, xr, x.data(), cols);
    for (int r = 0; r < p.rows; ++r) {
      std::vector<float> w(static_cast<size_t>(cols));
      DequantizeRow(p.type, p.original.data() + static_cast<size_t>(r) * p.w_row, w.data(), cols);
      double exact = 0, magnitude = 0;
      for (int c = 0; c < cols; ++c) {
        exact += static_cast<double>(w[c]) * x[c];
        magnitude += std::fabs(static_cast<double>(w[c]) * x[c]);
      }
      EXPECT_NEAR(got[static_cast<size_t>(t * p.rows + r)], exact, 2e-6 * magnitude)
          << IsaName(k.isa) << " " << GgmlTypeName(p.type) << " " << p.rows << "x" << cols << " tokens " << p.tokens
          << ": row " << r << " token " << t;
    }
  }
}

TEST(CpuKernels, ProductsMatchFloat64OnTheDequantizedOperands) {
  const Kernels& k = *KernelsFor(BestIsa());
  for (GgmlType type : kTypes) ExpectMatchesFloat64(k, MakeProblem(k, type, 5, 3, 1024, 99));
}

// The 32-value block types (Q8_0 activations) in the matrix-vector shape
// (1, 2 tokens) and the tiled one (3, 7 tokens: a token tail), with row
// tails (rows not a multiple of the tile), odd block counts (32, 96, 896 =
// Qwen2.5-0.5B's rows, which is why files carry Q5_0), and weights far from
// zero mean, where Q4_1/Q5_1's m term carries most of each product.
TEST(CpuKernels, Block32ProductsMatchFloat64InEveryShape) {
  uint32_t seed = 200;
  for (const Kernels* k : {&GenericKernels(), KernelsFor(BestIsa())}) {
    for (GgmlType type : {GgmlType::kQ8_0, GgmlType::kQ4_0, GgmlType::kQ4_1, GgmlType::kQ5_0, GgmlType::kQ5_1}) {
      for (int cols : {32, 96, 896}) {
        for (int rows : {1, 5, 13}) {
          for (int tokens : {1, 2, 3, 7}) {
            for (float w_mean : {0.0f, 3.0f}) {
              ExpectMatchesFloat64(*k, MakeProblem(*k, type, rows, tokens, cols, seed++, w_mean));
            }
          }
        }
      }
    }
  }
}

TEST(CpuKernels, RepackedQ4_0DequantizesLikeTheFileLayout) {
  std::mt19937 rng(12);
  const int rows = 13, cols = 96;  // a padded last group
  const size_t rb = static_cast<size_t>(RowBytes(GgmlType::kQ4_0, cols));
  std::vector<std::byte> src(rb * rows);
  for (int r = 0; r < rows; ++r) QuantizeRow(GgmlType::kQ4_0, Randoms(rng, cols).data(), src.data() + r * rb, cols);
  std::vector<std::byte> packed(RepackedQ4_0Bytes(rows, cols));
  EXPECT_EQ(packed.size(), 16 * rb);
  RepackQ4_0x8(src.data(), rows, cols, packed.data(), 0, 2);
  std::vector<float> want(cols), got(cols);
  for (int r = 0; r < rows; ++r) {
    DequantizeRow(GgmlType::kQ4_0, src.data() + r * rb, want.data(), cols);
    DequantizeQ4_0x8Row(packed.data(), r, cols, got.data());
    ASSERT_EQ(got, want) << "row " << r;
  }
}

TEST(CpuKernels, RepackedQ5_0DequantizesLikeTheFileLayout) {
  std::mt19937 rng(13);
  const int rows = 13, cols = 96;  // a padded last group
  const size_t rb = static_cast<size_t>(RowBytes(GgmlType::kQ5_0, cols));
  std::vector<std::byte> src(rb * rows);
  for (int r = 0; r < rows; ++r) QuantizeRow(GgmlType::kQ5_0, Randoms(rng, cols).data(), src.data() + r * rb, cols);
  std::vector<std::byte> packed(RepackedQ5_0Bytes(rows, cols));
  EXPECT_EQ(packed.size(), 16 * rb);
  RepackQ5_0x8(src.data(), rows, cols, packed.data(), 0, 1);  // two calls, as the backend's tasks
  RepackQ5_0x8(src.data(), rows, cols, packed.data(), 1, 1);
  std::vector<float> want(cols), got(cols);
  for (int r = 0; r < 16; ++r) {
    DequantizeRow(GgmlType::kQ5_0, src.data() + std::min(r, rows - 1) * rb, want.data(), cols);
    DequantizeQ5_0x8Row(packed.data(), r, cols, got.data());
    ASSERT_EQ(got, want) << "row " << r;  // rows 13..15 repeat the last one
  }
}

// The repacked Q5_0 kernel keeps ggml_vec_dot_q5_0_q8_0's AVX2 arithmetic (and
// so the results of the file-layout kernel it replaced) bit for bit: per row
// eight float lanes, lane l += fp16(d_w) * fp16(d_x) times the exact sum of
// the products of values 4l .. 4l+3 (fused), then the tree
// ((l0 + l4) + (l2 + l6)) + ((l1 + l5) + (l3 + l7)).
TEST(CpuKernels, Q5_0ProductsAreGgmlsAvx2Arithmetic) {
  uint32_t seed = 300;
  for (const Kernels* k : {&GenericKernels(), KernelsFor(BestIsa())}) {
    for (int rows : {1, 8, 13}) {
      for (int tokens : {1, 2, 3, 4, 7}) {
        const Problem p = MakeProblem(*k, GgmlType::kQ5_0, rows, tokens, 896, seed++);
        const std::vector<float> got = RunGemm(*k, p, 0, rows, 0, tokens, false);
        const int nb = p.cols / 32;
        for (int t = 0; t < tokens; ++t) {
          const auto* x = reinterpret_cast<const BlockQ8_0*>(p.x.data() + static_cast<size_t>(t) * p.x_row);
          for (int r = 0; r < rows; ++r) {
            const auto* w = reinterpret_cast<const BlockQ5_0*>(p.original.data() + static_cast<size_t>(r) * p.w_row);
            float lane[8] = {};
            for (int b = 0; b < nb; ++b) {
              uint32_t qh;
              std::memcpy(&qh, w[b].qh, 4);
              const float scale = HalfToFloat(w[b].d) * HalfToFloat(x[b].d);
              for (int l = 0; l < 8; ++l) {
                int32_t sum = 0;
                for (int i = 4 * l; i < 4 * l + 4; ++i) {
                  const int nibble = i < 16 ? w[b].qs[i] & 0x0F : w[b].qs[i - 16] >> 4;
                  const int q = nibble | static_cast<int>(((qh >> i) & 1u) << 4);
                  sum += (q - 16) * x[b].qs[i];
                }
                lane[l] = std::fmaf(scale, static_cast<float>(sum), lane[l]);
              }
            }
            const float want = ((lane[0] + lane[4]) + (lane[2] + lane[6])) + ((lane[1] + lane[5]) + (lane[3] + lane[7]));
            ASSERT_EQ(got[static_cast<size_t>(t * rows + r)], want)
                << IsaName(k->isa) << " " << rows << " rows, " << tokens << " tokens: row " << r << " token " << t;
          }
        }
      }
    }
  }
}

// Splitting the rows or the tokens of a product differently never changes a
// value (the property batched prefill relies on), and accumulate adds.
TEST(CpuKernels, ResultsDoNotDependOnHowTheWorkIsSplit) {
  const Kernels& k = *KernelsFor(BestIsa());
  for (GgmlType type : kTypes) {
    const Problem p = MakeProblem(k, type, 21, 11, 512, 5);
    const std::vector<float> whole = RunGemm(k, p, 0, p.rows, 0, p.tokens, false);
    for (int t = 0; t < p.tokens; ++t) {
      // Q4_0 and Q5_0 rows come in groups of 8 (the repacked layouts): start there.
      const bool grouped = type == GgmlType::kQ4_0 || type == GgmlType::kQ5_0;
      for (int r0 : {0, grouped ? 8 : 5, 16}) {
        const int rows = std::min(p.rows - r0, 7);
        const std::vector<float> part = RunGemm(k, p, r0, rows, t, 1, false);
        for (int r = r0; r < r0 + rows; ++r) {
          const size_t i = static_cast<size_t>(t * p.rows + r);
          ASSERT_EQ(part[i], whole[i]) << GgmlTypeName(type) << " row " << r << " token " << t;
        }
      }
    }
    const std::vector<float> acc = RunGemm(k, p, 0, p.rows, 0, p.tokens, true, 0.5f);
    for (size_t i = 0; i < whole.size(); ++i) ASSERT_EQ(acc[i], 0.5f + whole[i]);
  }
}

// ggml's AVX2 quantize_row_q8_0 (ggml-cpu/arch/x86/quants.c): d = amax / 127,
// q = round-half-even(x * (127 / amax)); then the block sums this engine adds.
TEST(CpuKernels, Q8_0ActivationsAreGgmlsAvx2Quantizer) {
  std::mt19937 rng(3);
  std::vector<float> x = Randoms(rng, 256);
  x[5] = 0.5f * 127.0f / 64.0f;  // exercise ties in some block
  std::fill(x.begin() + 64, x.begin() + 96, 0.0f);  // an all-zero block
  for (const Kernels* k : {&GenericKernels(), KernelsFor(BestIsa())}) {
    std::vector<std::byte> out(ActRowBytes(ActFormat::kQ8_0, 256));
    k->quantize_q8_0(x.data(), out.data(), 256);
    const auto* blocks = reinterpret_cast<const BlockQ8_0*>(out.data());
    const auto* sums = reinterpret_cast<const int16_t*>(blocks + 8);
    for (int b = 0; b < 8; ++b) {
      float amax = 0;
      for (int i = 0; i < 32; ++i) amax = std::max(amax, std::fabs(x[b * 32 + i]));
      EXPECT_EQ(blocks[b].d, FloatToHalf(amax / 127.f));
      const float id = amax != 0 ? 127.f / amax : 0.f;
      int sum = 0;
      for (int i = 0; i < 32; ++i) {
        const int q = static_cast<int>(std::nearbyint(x[b * 32 + i] * id));
        EXPECT_EQ(blocks[b].qs[i], q);
        sum += q;
      }
      EXPECT_EQ(sums[b], sum);
    }
  }
}

TEST(CpuKernels, Q8_KActivationsAreGgmlsReferenceQuantizer) {
  std::mt19937 rng(4);
  const std::vector<float> x = Randoms(rng, 512);
  std::vector<std::byte> want(static_cast<size_t>(RowBytes(GgmlType::kQ8_K, 512)));
  QuantizeRow(GgmlType::kQ8_K, x.data(), want.data(), 512);
  for (const Kernels* k : {&GenericKernels(), KernelsFor(BestIsa())}) {
    std::vector<std::byte> got(ActRowBytes(ActFormat::kQ8_K, 512));
    k->quantize_q8_K(x.data(), got.data(), 512);
    EXPECT_EQ(got, want);
  }
}

TEST(CpuKernels, ExpIsAccurateToAFewUlp) {
  double worst = 0;
  for (float x = -87.0f; x <= 88.0f; x += 0.0137f) {
    const double want = std::exp(static_cast<double>(x));
    worst = std::max(worst, std::fabs(ExpApprox(x) - want) / want);
  }
  EXPECT_LT(worst, 2e-7);
  EXPECT_EQ(ExpApprox(0.0f), 1.0f);
  EXPECT_GT(ExpApprox(-1000.0f), 0.0f);  // clamped, never NaN
  EXPECT_LT(ExpApprox(-1000.0f), 1e-37f);
}

TEST(CpuKernels, AttentionPiecesMatchFloat64) {
  const Kernels& k = *KernelsFor(BestIsa());
  std::mt19937 rng(8);
  const int hd = 64, n = 37;
  const std::vector<float> q = Randoms(rng, hd);
  const std::vector<float> kv = Randoms(rng, static_cast<size_t>(hd * n));
  std::vector<float> scores(n);
  k.kq_f32(q.data(), kv.data(), hd, n, hd, 0.125f, scores.data());
  std::vector<double> want(n);
  for (int i = 0; i < n; ++i) {
    double d = 0;
    for (int j = 0; j < hd; ++j) d += static_cast<double>(q[j]) * kv[i * hd + j];
    want[i] = d * 0.125;
    EXPECT_NEAR(scores[i], want[i], 1e-5);
  }
  const float max = k.max(scores.data(), n);
  EXPECT_EQ(max, *std::max_element(scores.begin(), scores.end()));
  const float sum = k.softmax(scores.data(), n, max);
  double want_sum = 0;
  for (int i = 0; i < n; ++i) want_sum += std::exp(want[i] - max);
  EXPECT_NEAR(sum, want_sum, 1e-5 * want_sum);
  std::vector<float> out(hd, 0.0f);
  k.av_f32(scores.data(), kv.data(), hd, n, hd, out.data());
  for (int j = 0; j < hd; ++j) {
    double d = 0;
    for (int i = 0; i < n; ++i) d += static_cast<double>(scores[i]) * kv[i * hd + j];
    EXPECT_NEAR(out[j], d, 1e-4);
  }
}

TEST(CpuKernels, RmsNormMatchesFloat64) {
  std::mt19937 rng(9);
  const std::vector<float> x = Randoms(rng, 896, 3.0f);
  const std::vector<float> w = Randoms(rng, 896);
  std::vector<float> out(896);
  RmsNorm(x.data(), w.data(), 896, 1e-6f, out.data());
  double ss = 0;
  for (float v : x) ss += static_cast<double>(v) * v;
  const double scale = 1.0 / std::sqrt(ss / 896 + 1e-6);
  for (int i = 0; i < 896; ++i) EXPECT_NEAR(out[i], x[i] * scale * w[i], 1e-6 * std::fabs(x[i] * scale * w[i]) + 1e-7);
}

}  // namespace
}  // namespace tollgate::local_backend::cpu
