// The kernel table types shared by the per-ISA kernel files. Internal to
// local_backend. This header includes nothing but <cstddef>/<cstdint> on
// purpose: kernels_avx2.cpp and kernels_avx512.cpp are compiled with wider -m
// flags, and any inline function or vtable they instantiate from a library
// header would be emitted there as a weak symbol that the linker may pick for
// the whole program (an illegal instruction on an older CPU). See
// cpu_kernels.hpp for the contract.
#pragma once

#include <cstddef>
#include <cstdint>

namespace tollgate::local_backend::cpu {

enum class Isa { kGeneric = 0, kAvx2 = 1, kAvx512 = 2 };

// Row formats the activations are converted to before a weight multiplies them.
enum class ActFormat { kF32 = 0, kQ8_0 = 1, kQ8_K = 2 };

// Kernels::gemm slots (GemmIndex in cpu_kernels.hpp maps GgmlType to these).
enum GemmSlot {
  kGemmF32 = 0,
  kGemmF16,
  kGemmBf16,
  kGemmQ8_0,
  kGemmQ4_0,
  kGemmQ4_1,
  kGemmQ5_0,
  kGemmQ5_1,
  kGemmQ4_K,
  kGemmQ5_K,
  kGemmQ6_K,
  kGemmSlots
};

// ggml block layouts (ggml-common.h), the same as quant.hpp's Block* structs
// (cpu_kernels.cpp checks sizes and offsets against them).
struct Q8_0Block {
  uint16_t d;
  int8_t qs[32];
};
struct Q4_0Block {
  uint16_t d;
  uint8_t qs[16];
};
// x = d * q + m; nibbles as Q4_0 (value j low, j + 16 high).
struct Q4_1Block {
  uint16_t d;
  uint16_t m;
  uint8_t qs[16];
};
// x = d * (q - 16); low 4 bits as Q4_0, bit 4 of value j in bit j of the
// little-endian uint32 qh.
struct Q5_0Block {
  uint16_t d;
  uint8_t qh[4];
  uint8_t qs[16];
};
// x = d * q + m; bits as Q5_0.
struct Q5_1Block {
  uint16_t d;
  uint16_t m;
  uint8_t qh[4];
  uint8_t qs[16];
};
// Eight Q4_0 rows' block b, repacked at load (RepackQ4_0x8 in
// cpu_kernels.hpp): the rows' scales, then four 32-byte vectors; vector m holds,
// in byte 4r + e, value 4m + e of row r in its low nibble and value 16 + 4m + e
// in its high nibble (unsigned, 0..15, the stored q; x = d * (q - 8)).
struct Q4_0x8Block {
  uint16_t d[8];
  uint8_t qs[128];
};
// Eight Q5_0 rows' block b, repacked at load (RepackQ5_0x8 in cpu_kernels.hpp):
// Q4_0x8Block's layout plus one 32-byte vector of fifth bits.
//   d[r]: row r's scale;
//   qh:   byte 4r + e holds, in bit m (0..7), the fifth bit of row r's value
//         4m + e, inverted (1 when bit 4 of q is clear); bit plane m belongs to
//         the low (m < 4) or high (m >= 4) nibbles of qs vector m % 4, and a
//         16-bit shift by |m - 4| and a mask make it 16 * bit in every byte;
//   qs:   the low four bits as Q4_0x8Block (vector k, byte 4r + e: value
//         4k + e in the low nibble, 16 + 4k + e in the high one).
// So q = nibble + 16 * (1 - bit) (0..31, x = d * (q - 16)), and the signed
// value q - 16 = nibble - 16 * bit is two unsigned products against the
// activations, each row's in its own 32-bit lane.
struct Q5_0x8Block {
  uint16_t d[8];
  uint8_t qh[32];
  uint8_t qs[128];
};
struct Q4_KBlock {
  uint16_t d;
  uint16_t dmin;
  uint8_t scales[12];
  uint8_t qs[128];
};
struct Q5_KBlock {
  uint16_t d;
  uint16_t dmin;
  uint8_t scales[12];
  uint8_t qh[32];
  uint8_t qs[128];
};
struct Q6_KBlock {
  uint8_t ql[128];
  uint8_t qh[64];
  int8_t scales[16];
  uint16_t d;
};
struct Q8_KBlock {
  float d;
  int8_t qs[256];
  int16_t bsums[16];
};
static_assert(sizeof(Q8_0Block) == 34 && sizeof(Q4_0Block) == 18 && sizeof(Q4_1Block) == 20 && sizeof(Q5_0Block) == 22 &&
              sizeof(Q5_1Block) == 24 && sizeof(Q4_0x8Block) == 8 * 18 && sizeof(Q5_0x8Block) == 8 * 22 &&
              sizeof(Q4_KBlock) == 144 && sizeof(Q5_KBlock) == 176 && sizeof(Q6_KBlock) == 210 &&
              sizeof(Q8_KBlock) == 292);

// Defined in baseline code (cpu_kernels.cpp) for the ISA files: IEEE half
// rounding to nearest even (quant.hpp FloatToHalf) and ggml's reference Q8_K
// quantizer (quant.hpp QuantizeRow).
uint16_t HalfFromFloat(float x);
float FloatFromHalf(uint16_t h);
void QuantizeQ8_KReference(const float* x, void* out, int cols);

// out[t * out_stride + r] (+)= dot(weight row r, activation row t) for r < rows,
// t < tokens. Weight rows are `w_row_bytes` apart in the weight's own ggml
// layout; activation rows `x_row_bytes` apart in ActFormatFor(type).
// Rows av_q8 takes at once (a KV page).
constexpr int kKvQ8MaxRows = 64;

struct GemmArgs {
  const std::byte* w = nullptr;
  size_t w_row_bytes = 0;
  const std::byte* x = nullptr;
  size_t x_row_bytes = 0;
  float* out = nullptr;
  size_t out_stride = 0;
  int rows = 0;
  int tokens = 0;
  int cols = 0;
  bool accumulate = false;  // add to out instead of overwriting it
};
using GemmFn = void (*)(const GemmArgs& args);

struct Kernels {
  Isa isa = Isa::kGeneric;
  // Indexed by GemmSlot; nullptr for types without a kernel.
  GemmFn gemm[kGemmSlots] = {};
  // One row of `cols` floats to the Q8_0 / Q8_K activation format at `out`
  // (ActRowBytes: Q8_0 rows carry each block's int16 sum after the blocks).
  void (*quantize_q8_0)(const float* x, void* out, int cols) = nullptr;
  void (*quantize_q8_K)(const float* x, void* out, int cols) = nullptr;

  // Attention over `n` cached positions of one head (head_dim a multiple of 8).
  // scores[i] = dot(q, k + i * k_stride) * scale.
  void (*kq_f32)(const float* q, const float* k, size_t k_stride, int n, int head_dim, float scale,
                 float* scores) = nullptr;
  void (*kq_f16)(const float* q, const uint16_t* k, size_t k_stride, int n, int head_dim, float scale,
                 float* scores) = nullptr;
  // The same over 8-bit rows (KvType::kQ8): row i is k + i * head_dim int8
  // values times the half k_scales[i].
  void (*kq_q8)(const float* q, const int8_t* k, const uint16_t* k_scales, int n, int head_dim, float scale,
                float* scores) = nullptr;
  // scores[i] = exp(scores[i] - max) for i < n; returns their sum (8 lanes + tree + tail).
  float (*softmax)(float* scores, int n, float max) = nullptr;
  // max of scores[0..n) (n >= 1).
  float (*max)(const float* scores, int n) = nullptr;
  // out[d] += sum_i p[i] * v[i * v_stride + d], i in order, for d < head_dim.
  void (*av_f32)(const float* p, const float* v, size_t v_stride, int n, int head_dim, float* out) = nullptr;
  void (*av_f16)(const float* p, const uint16_t* v, size_t v_stride, int n, int head_dim, float* out) = nullptr;
  // out[d] += sum_i p[i] * v_scales[i] * v[i * head_dim + d] (n <= kKvQ8MaxRows).
  void (*av_q8)(const float* p, const int8_t* v, const uint16_t* v_scales, int n, int head_dim, float* out) = nullptr;
  // One row of n floats (a multiple of 8) -> int8 q = round(x / d) with d = max|x| / 127 stored as a half in *scale
  // (q = 0 and d = 0 for an all-zero row). Rounding: nearest, ties to even.
  void (*to_q8)(const float* x, int8_t* out, uint16_t* scale, int n) = nullptr;
  // n floats -> halves (n a multiple of 8), round to nearest even.
  void (*to_f16)(const float* x, uint16_t* out, int n) = nullptr;
  // out[i] = g[i] / (1 + exp(-g[i])) * u[i] (out may alias g or u).
  void (*swiglu)(const float* g, const float* u, float* out, int n) = nullptr;
  // out[i] = x[i] * s (out may alias x).
  void (*scale)(const float* x, float s, float* out, int n) = nullptr;
};

const Kernels& GenericKernels();
// nullptr when the build has no such table (non-x86 or TOLLGATE_LOCAL_BACKEND_NO_SIMD).
const Kernels* Avx2Kernels();
const Kernels* Avx512Kernels();

}  // namespace tollgate::local_backend::cpu
