#include "cpu_kernels.hpp"

#include "tollgate/local_backend/quant.hpp"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstring>
#include <random>
#include <vector>

namespace tollgate::local_backend::cpu {

#define TOLLGATE_SAME_LAYOUT(ours, theirs, field) \
  static_assert(sizeof(ours) == sizeof(theirs) && offsetof(ours, field) == offsetof(theirs, field))
TOLLGATE_SAME_LAYOUT(Q8_0Block, BlockQ8_0, qs);
TOLLGATE_SAME_LAYOUT(Q4_0Block, BlockQ4_0, qs);
TOLLGATE_SAME_LAYOUT(Q4_1Block, BlockQ4_1, qs);
TOLLGATE_SAME_LAYOUT(Q5_0Block, BlockQ5_0, qs);
TOLLGATE_SAME_LAYOUT(Q5_1Block, BlockQ5_1, qs);
TOLLGATE_SAME_LAYOUT(Q4_KBlock, BlockQ4_K, qs);
TOLLGATE_SAME_LAYOUT(Q5_KBlock, BlockQ5_K, qs);
TOLLGATE_SAME_LAYOUT(Q6_KBlock, BlockQ6_K, d);
TOLLGATE_SAME_LAYOUT(Q8_KBlock, BlockQ8_K, bsums);
#undef TOLLGATE_SAME_LAYOUT

uint16_t HalfFromFloat(float x) { return FloatToHalf(x); }
float FloatFromHalf(uint16_t h) { return HalfToFloat(h); }

void QuantizeQ8_KReference(const float* x, void* out, int cols) { QuantizeRow(GgmlType::kQ8_K, x, out, cols); }

const char* IsaName(Isa isa) {
  switch (isa) {
    case Isa::kGeneric: return "generic";
    case Isa::kAvx2: return "avx2";
    case Isa::kAvx512: return "avx512";
  }
  return "?";
}

int GemmIndex(GgmlType type) {
  switch (type) {
    case GgmlType::kF32: return kGemmF32;
    case GgmlType::kF16: return kGemmF16;
    case GgmlType::kBF16: return kGemmBf16;
    case GgmlType::kQ8_0: return kGemmQ8_0;
    case GgmlType::kQ4_0: return kGemmQ4_0;
    case GgmlType::kQ4_1: return kGemmQ4_1;
    case GgmlType::kQ5_0: return kGemmQ5_0;
    case GgmlType::kQ5_1: return kGemmQ5_1;
    case GgmlType::kQ4_K: return kGemmQ4_K;
    case GgmlType::kQ5_K: return kGemmQ5_K;
    case GgmlType::kQ6_K: return kGemmQ6_K;
    default: return -1;
  }
}

ActFormat ActFormatFor(GgmlType weight) {
  switch (weight) {
    case GgmlType::kQ8_0:
    case GgmlType::kQ4_0:
    case GgmlType::kQ4_1:
    case GgmlType::kQ5_0:
    case GgmlType::kQ5_1: return ActFormat::kQ8_0;
    case GgmlType::kQ4_K:
    case GgmlType::kQ5_K:
    case GgmlType::kQ6_K: return ActFormat::kQ8_K;
    default: return ActFormat::kF32;
  }
}

size_t ActRowBytes(ActFormat format, int cols) {
  switch (format) {
    case ActFormat::kF32: return static_cast<size_t>(cols) * sizeof(float);
    // The blocks, then each block's sum of values as int16 (for Q4_0, Q4_1, Q5_1).
    case ActFormat::kQ8_0: return static_cast<size_t>(cols / 32) * (sizeof(Q8_0Block) + sizeof(int16_t));
    case ActFormat::kQ8_K: return static_cast<size_t>(cols / 256) * sizeof(Q8_KBlock);
  }
  return 0;
}

bool CpuSupports(Isa isa) {
#if defined(__x86_64__) && defined(__GNUC__)
  // libgcc's CPU model also checks XGETBV, so the OS saves the wider registers.
  switch (isa) {
    case Isa::kGeneric: return true;
    case Isa::kAvx2:
      return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
    case Isa::kAvx512:
      return CpuSupports(Isa::kAvx2) && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
             __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni");
  }
  return false;
#else
  return isa == Isa::kGeneric;
#endif
}

const Kernels* KernelsFor(Isa isa) {
  if (!CpuSupports(isa)) return nullptr;
  switch (isa) {
    case Isa::kGeneric: return &GenericKernels();
    case Isa::kAvx2: return Avx2Kernels();
    case Isa::kAvx512: return Avx512Kernels();
  }
  return nullptr;
}

Isa BestIsa() {
  for (Isa isa : {Isa::kAvx512, Isa::kAvx2}) {
    if (KernelsFor(isa) != nullptr) return isa;
  }
  return Isa::kGeneric;
}

size_t RepackedQ4_0Bytes(int rows, int cols) {
  return static_cast<size_t>((rows + 7) / 8) * 8 * static_cast<size_t>(RowBytes(GgmlType::kQ4_0, cols));
}

void RepackQ4_0x8(const std::byte* src, int rows, int cols, std::byte* dst, int first_group, int groups) {
  const int nb = cols / 32;
  const size_t row_bytes = static_cast<size_t>(nb) * sizeof(BlockQ4_0);
  for (int g = first_group; g < first_group + groups; ++g) {
    auto* out = reinterpret_cast<Q4_0x8Block*>(dst + static_cast<size_t>(g) * 8 * row_bytes);
    for (int r = 0; r < 8; ++r) {
      const std::byte* in = src + static_cast<size_t>(std::min(8 * g + r, rows - 1)) * row_bytes;
      for (int b = 0; b < nb; ++b, in += sizeof(BlockQ4_0)) {
        // qs[j] holds values j (low nibble) and 16 + j (high), as the repacked
        // byte 32 (j / 4) + 4 r + j % 4 does: the bytes move in runs of four.
        std::memcpy(&out[b].d[r], in, 2);
        for (int k = 0; k < 4; ++k) std::memcpy(&out[b].qs[32 * k + 4 * r], in + 2 + 4 * k, 4);
      }
    }
  }
}

void DequantizeQ4_0x8Row(const std::byte* base, int row, int cols, float* out) {
  const int nb = cols / 32;
  const size_t row_bytes = static_cast<size_t>(nb) * sizeof(BlockQ4_0);
  const auto* blocks = reinterpret_cast<const Q4_0x8Block*>(base + static_cast<size_t>(row / 8) * 8 * row_bytes);
  const int r = row % 8;
  for (int b = 0; b < nb; ++b) {
    const float d = HalfToFloat(blocks[b].d[r]);
    for (int j = 0; j < 16; ++j) {
      const uint8_t v = blocks[b].qs[32 * (j / 4) + 4 * r + j % 4];
      out[32 * b + j] = static_cast<float>((v & 0x0F) - 8) * d;
      out[32 * b + j + 16] = static_cast<float>((v >> 4) - 8) * d;
    }
  }
}

size_t RepackedQ5_0Bytes(int rows, int cols) {
  return static_cast<size_t>((rows + 7) / 8) * 8 * static_cast<size_t>(RowBytes(GgmlType::kQ5_0, cols));
}

void RepackQ5_0x8(const std::byte* src, int rows, int cols, std::byte* dst, int first_group, int groups) {
  const int nb = cols / 32;
  const size_t row_bytes = static_cast<size_t>(nb) * sizeof(BlockQ5_0);
  for (int g = first_group; g < first_group + groups; ++g) {
    auto* out = reinterpret_cast<Q5_0x8Block*>(dst + static_cast<size_t>(g) * 8 * row_bytes);
    for (int r = 0; r < 8; ++r) {
      const std::byte* in = src + static_cast<size_t>(std::min(8 * g + r, rows - 1)) * row_bytes;
      for (int b = 0; b < nb; ++b, in += sizeof(BlockQ5_0)) {
        Q5_0Block block;
        std::memcpy(&block, in, sizeof(block));
        uint32_t qh;
        std::memcpy(&qh, block.qh, 4);
        out[b].d[r] = block.d;
        for (int k = 0; k < 4; ++k) std::memcpy(&out[b].qs[32 * k + 4 * r], &block.qs[4 * k], 4);
        // The fifth bits, inverted: bit 4m + e of qh to bit m of byte 4r + e.
        // Nibble m of qh to byte m of a uint64, then that 8 x 8 bit matrix
        // transposed (Hacker's Delight, transpose8): bit e of byte m to bit m
        // of byte e.
        uint64_t x = ~qh;
        x = ((x & 0xFFFF0000u) << 16) | (x & 0xFFFFu);
        x = ((x & 0x0000FF000000FF00u) << 8) | (x & 0x000000FF000000FFu);
        x = ((x & 0x00F000F000F000F0u) << 4) | (x & 0x000F000F000F000Fu);
        uint64_t t = (x ^ (x >> 7)) & 0x00AA00AA00AA00AAu;
        x = x ^ t ^ (t << 7);
        t = (x ^ (x >> 14)) & 0x0000CCCC0000CCCCu;
        x = x ^ t ^ (t << 14);
        t = (x ^ (x >> 28)) & 0x00000000F0F0F0F0u;
        x = x ^ t ^ (t << 28);
        for (int e = 0; e < 4; ++e) out[b].qh[4 * r + e] = static_cast<uint8_t>(x >> (8 * e));
      }
    }
  }
}

void DequantizeQ5_0x8Row(const std::byte* base, int row, int cols, float* out) {
  const int nb = cols / 32;
  const size_t row_bytes = static_cast<size_t>(nb) * sizeof(BlockQ5_0);
  const auto* blocks = reinterpret_cast<const Q5_0x8Block*>(base + static_cast<size_t>(row / 8) * 8 * row_bytes);
  const int r = row % 8;
  for (int b = 0; b < nb; ++b) {
    const float d = HalfToFloat(blocks[b].d[r]);
    for (int m = 0; m < 8; ++m) {
      for (int e = 0; e < 4; ++e) {
        const uint8_t v = blocks[b].qs[32 * (m % 4) + 4 * r + e];
        const int nibble = m < 4 ? (v & 0x0F) : (v >> 4);
        const int high = ((blocks[b].qh[4 * r + e] >> m) & 1) != 0 ? 0 : 0x10;
        out[32 * b + 4 * m + e] = ((nibble | high) - 16) * d;  // as quant.cpp DequantQ5_0
      }
    }
  }
}

bool MatchesGeneric(const Kernels& k) {
  const Kernels& g = GenericKernels();
  if (&k == &g) return true;
  std::mt19937 rng(1234);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  auto randoms = [&](size_t n) {
    std::vector<float> v(n);
    for (float& f : v) f = normal(rng);
    return v;
  };
  auto same = [](const void* a, const void* b, size_t bytes) { return std::memcmp(a, b, bytes) == 0; };

  // Matrix products of every type, in the matrix-vector and the tiled shapes,
  // with a row tail that is not a multiple of the tiles and (for float
  // weights) a column tail.
  constexpr int kRows = 7;
  constexpr int kTokens = 6;
  for (GgmlType type : {GgmlType::kF32, GgmlType::kF16, GgmlType::kBF16, GgmlType::kQ8_0, GgmlType::kQ4_0,
                        GgmlType::kQ4_1, GgmlType::kQ5_0, GgmlType::kQ5_1, GgmlType::kQ4_K, GgmlType::kQ5_K,
                        GgmlType::kQ6_K}) {
    const int index = GemmIndex(type);
    if (k.gemm[index] == nullptr) return false;
    const int block = static_cast<int>(QuantBlockSize(type));
    const int cols = block == 1 ? 515 : 512;
    const size_t w_row = static_cast<size_t>(RowBytes(type, cols));
    std::vector<std::byte> w(w_row * kRows);
    for (int r = 0; r < kRows; ++r) QuantizeRow(type, randoms(static_cast<size_t>(cols)).data(), w.data() + r * w_row, cols);
    if (type == GgmlType::kQ4_0) {
      std::vector<std::byte> packed(RepackedQ4_0Bytes(kRows, cols));
      RepackQ4_0x8(w.data(), kRows, cols, packed.data(), 0, (kRows + 7) / 8);
      w = std::move(packed);
    } else if (type == GgmlType::kQ5_0) {
      std::vector<std::byte> packed(RepackedQ5_0Bytes(kRows, cols));
      RepackQ5_0x8(w.data(), kRows, cols, packed.data(), 0, (kRows + 7) / 8);
      w = std::move(packed);
    }
    const ActFormat format = ActFormatFor(type);
    const size_t x_row = ActRowBytes(format, cols);
    std::vector<std::byte> xg(x_row * kTokens);
    std::vector<std::byte> xk(x_row * kTokens);
    for (int t = 0; t < kTokens; ++t) {
      const std::vector<float> x = randoms(static_cast<size_t>(cols));
      if (format == ActFormat::kF32) {
        std::memcpy(xg.data() + t * x_row, x.data(), x_row);
        std::memcpy(xk.data() + t * x_row, x.data(), x_row);
      } else {
        auto qg = format == ActFormat::kQ8_0 ? g.quantize_q8_0 : g.quantize_q8_K;
        auto qk = format == ActFormat::kQ8_0 ? k.quantize_q8_0 : k.quantize_q8_K;
        qg(x.data(), xg.data() + t * x_row, cols);
        qk(x.data(), xk.data() + t * x_row, cols);
      }
    }
    if (!same(xg.data(), xk.data(), xg.size())) return false;
    for (int tokens : {1, kTokens}) {
      std::vector<float> og(static_cast<size_t>(kRows * tokens), 1.0f);
      std::vector<float> ok = og;
      GemmArgs a;
      a.w = w.data();
      a.w_row_bytes = w_row;
      a.x = xg.data();
      a.x_row_bytes = x_row;
      a.out = og.data();
      a.out_stride = kRows;
      a.rows = kRows;
      a.tokens = tokens;
      a.cols = cols;
      a.accumulate = tokens == 1;
      g.gemm[index](a);
      a.out = ok.data();
      k.gemm[index](a);
      if (!same(og.data(), ok.data(), og.size() * sizeof(float))) return false;
    }
  }

  // Attention pieces and element-wise kernels.
  constexpr int kHead = 72;
  constexpr int kPositions = 13;
  const std::vector<float> q = randoms(kHead);
  const std::vector<float> kv = randoms(kHead * kPositions);
  std::vector<uint16_t> kv16(kv.size());
  std::vector<uint16_t> kv16k(kv.size());
  g.to_f16(kv.data(), kv16.data(), static_cast<int>(kv.size()));
  k.to_f16(kv.data(), kv16k.data(), static_cast<int>(kv.size()));
  if (!same(kv16.data(), kv16k.data(), kv16.size() * 2)) return false;
  float sg[kPositions];
  float sk[kPositions];
  for (int f16 = 0; f16 < 2; ++f16) {
    if (f16) {
      g.kq_f16(q.data(), kv16.data(), kHead, kPositions, kHead, 0.125f, sg);
      k.kq_f16(q.data(), kv16.data(), kHead, kPositions, kHead, 0.125f, sk);
    } else {
      g.kq_f32(q.data(), kv.data(), kHead, kPositions, kHead, 0.125f, sg);
      k.kq_f32(q.data(), kv.data(), kHead, kPositions, kHead, 0.125f, sk);
    }
    if (!same(sg, sk, sizeof(sg))) return false;
    const float mg = g.max(sg, kPositions);
    if (mg != k.max(sk, kPositions)) return false;
    if (g.softmax(sg, kPositions, mg) != k.softmax(sk, kPositions, mg) || !same(sg, sk, sizeof(sg))) return false;
    std::vector<float> og(kHead, 0.5f);
    std::vector<float> ok = og;
    if (f16) {
      g.av_f16(sg, kv16.data(), kHead, kPositions, kHead, og.data());
      k.av_f16(sk, kv16.data(), kHead, kPositions, kHead, ok.data());
    } else {
      g.av_f32(sg, kv.data(), kHead, kPositions, kHead, og.data());
      k.av_f32(sk, kv.data(), kHead, kPositions, kHead, ok.data());
    }
    if (!same(og.data(), ok.data(), og.size() * sizeof(float))) return false;
  }
  {
    std::vector<int8_t> k8g(kv.size()), k8k(kv.size());
    uint16_t dg[kPositions], dk[kPositions];
    for (int i = 0; i < kPositions; ++i) {
      g.to_q8(kv.data() + i * kHead, k8g.data() + i * kHead, &dg[i], kHead);
      k.to_q8(kv.data() + i * kHead, k8k.data() + i * kHead, &dk[i], kHead);
    }
    if (!same(k8g.data(), k8k.data(), k8g.size()) || !same(dg, dk, sizeof(dg))) return false;
    g.kq_q8(q.data(), k8g.data(), dg, kPositions, kHead, 0.125f, sg);
    k.kq_q8(q.data(), k8g.data(), dg, kPositions, kHead, 0.125f, sk);
    if (!same(sg, sk, sizeof(sg))) return false;
    std::vector<float> og(kHead, 0.5f);
    std::vector<float> ok = og;
    g.av_q8(sg, k8g.data(), dg, kPositions, kHead, og.data());
    k.av_q8(sg, k8g.data(), dg, kPositions, kHead, ok.data());
    if (!same(og.data(), ok.data(), og.size() * sizeof(float))) return false;
  }
  const std::vector<float> gate = randoms(37);
  const std::vector<float> up = randoms(37);
  std::vector<float> og(37);
  std::vector<float> ok(37);
  g.swiglu(gate.data(), up.data(), og.data(), 37);
  k.swiglu(gate.data(), up.data(), ok.data(), 37);
  if (!same(og.data(), ok.data(), og.size() * sizeof(float))) return false;
  g.scale(gate.data(), 0.3f, og.data(), 37);
  k.scale(gate.data(), 0.3f, ok.data(), 37);
  return same(og.data(), ok.data(), og.size() * sizeof(float));
}

void RmsNorm(const float* x, const float* w, int n, float eps, float* out) {
  double sum = 0.0;
  for (int i = 0; i < n; ++i) sum += static_cast<double>(x[i] * x[i]);
  const float mean = static_cast<float>(sum / n);
  const float scale = 1.0f / std::sqrt(mean + eps);
  if (w == nullptr) {
    for (int i = 0; i < n; ++i) out[i] = x[i] * scale;
  } else {
    for (int i = 0; i < n; ++i) out[i] = (x[i] * scale) * w[i];
  }
}

}  // namespace tollgate::local_backend::cpu
