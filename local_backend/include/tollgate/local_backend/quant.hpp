// Tensor element formats of GGUF/ggml: block layouts, exact dequantization,
// reference quantizers, and float <-> F16/BF16 conversion.
//
// Sources (ggml as vendored in llama.cpp, github.com/ggml-org/llama.cpp):
//   - block layouts: ggml/src/ggml-common.h (block_q4_0, block_q8_0, block_q4_K,
//     block_q5_K, block_q6_K, block_q8_K, ...), QK_K = 256, K_SCALE_SIZE = 12;
//   - block sizes/bytes: ggml/src/ggml.c `type_traits`;
//   - dequantization: ggml/src/ggml-quants.c `dequantize_row_*`; DequantizeRow
//     gives bit-identical floats (same operations in the same order, F16 scales
//     widened exactly);
//   - quantization: ggml/src/ggml-quants.c `quantize_row_*_ref` (the reference
//     versions without an importance matrix, which llama-quantize also uses when
//     no imatrix is given), ported operation by operation with the same
//     rounding (`nearest_int` = round half to even via the 1.5*2^23 trick,
//     Q4_0's (int8_t)(x + 8.5f), Q4_1/Q5_0/Q5_1's truncating casts, Q8_0's
//     roundf), so it should give ggml's bytes
//     for the same floats (checked here against hand-built blocks and error
//     bounds, not against a ggml binary);
//   - F16: IEEE 754 binary16; FloatToHalf rounds to nearest, ties to even (as
//     ggml's `ggml_compute_fp32_to_fp16` and x86 F16C `_cvtss_sh(x, 0)`),
//     overflow -> +-inf, NaN stays NaN;
//   - BF16: the top 16 bits of a binary32; FloatToBf16 rounds to nearest even
//     and quiets NaNs, as ggml's `ggml_compute_fp32_to_bf16`.
//
// Rows: every function works on one row of `n` elements, n a multiple of the
// type's block size (QuantBlockSize); `src`/`dst` hold n / block size blocks of
// QuantBlockBytes bytes each, packed without padding. Block structs below have
// alignment 1..4 and no padding; quantized data inside a GGUF mapping is only
// 32-byte aligned per tensor, and block starts may be at any multiple of the
// block's size (e.g. Q8_0 blocks at odd multiples of 34), so kernels must read
// fields with memcpy or unaligned loads, not by dereferencing a struct pointer
// at a misaligned address.
//
// Errors: calling DequantizeRow/QuantizeRow with a type that
// IsDequantizeSupported/IsQuantizeSupported rejects, or with n not a multiple of
// the block size, is a programming error: it aborts with a message.
//
// Threading: all functions are pure (no shared state) and may run concurrently.
#pragma once

#include "tollgate/local_backend/gguf.hpp"

#include <cstddef>
#include <cstdint>

namespace tollgate::local_backend {

// Elements per block (ggml-common.h QK4_0, QK8_0, QK_K).
inline constexpr int64_t kQk4_0 = 32;
inline constexpr int64_t kQk4_1 = 32;
inline constexpr int64_t kQk5_0 = 32;
inline constexpr int64_t kQk5_1 = 32;
inline constexpr int64_t kQk8_0 = 32;
inline constexpr int64_t kQkK = 256;
inline constexpr int kKScaleSize = 12;

// --- Block layouts (ggml-common.h). `d`/`dmin` are IEEE half bit patterns.

// x = d * (q - 8), q in 0..15. qs[j] holds element j (low nibble) and j + 16
// (high nibble).
struct BlockQ4_0 {
  uint16_t d;
  uint8_t qs[kQk4_0 / 2];
};
static_assert(sizeof(BlockQ4_0) == 18);

// x = d * q + m, q in 0..15, nibbles as Q4_0.
struct BlockQ4_1 {
  uint16_t d;
  uint16_t m;
  uint8_t qs[kQk4_1 / 2];
};
static_assert(sizeof(BlockQ4_1) == 20);

// x = d * (q - 16), q in 0..31: low 4 bits as Q4_0, bit 4 of element j in bit j
// of the little-endian u32 qh.
struct BlockQ5_0 {
  uint16_t d;
  uint8_t qh[4];
  uint8_t qs[kQk5_0 / 2];
};
static_assert(sizeof(BlockQ5_0) == 22);

// x = d * q + m, q in 0..31, bits as Q5_0.
struct BlockQ5_1 {
  uint16_t d;
  uint16_t m;
  uint8_t qh[4];
  uint8_t qs[kQk5_1 / 2];
};
static_assert(sizeof(BlockQ5_1) == 24);

// x = d * q, q in -128..127 (the reference quantizer uses -127..127).
struct BlockQ8_0 {
  uint16_t d;
  int8_t qs[kQk8_0];
};
static_assert(sizeof(BlockQ8_0) == 34);

// Super-block of 256 = 8 sub-blocks of 32. Sub-block j has a 6-bit scale sc_j
// and 6-bit min m_j packed in `scales` (GetScaleMinK4); x = d*sc_j*q - dmin*m_j,
// q in 0..15. qs[32*i + l] holds element 64*i + l (low nibble) and 64*i + 32 + l
// (high nibble), i = 0..3.
struct BlockQ4_K {
  uint16_t d;
  uint16_t dmin;
  uint8_t scales[kKScaleSize];
  uint8_t qs[kQkK / 2];
};
static_assert(sizeof(BlockQ4_K) == 144);

// As Q4_K with q in 0..31: bit 4 of element 64*i + l is bit 2i of qh[l], of
// element 64*i + 32 + l bit 2i + 1 of qh[l].
struct BlockQ5_K {
  uint16_t d;
  uint16_t dmin;
  uint8_t scales[kKScaleSize];
  uint8_t qh[kQkK / 8];
  uint8_t qs[kQkK / 2];
};
static_assert(sizeof(BlockQ5_K) == 176);

// Super-block of 256 = 16 sub-blocks of 16 with signed 8-bit scales;
// x = d * scales[k] * (q - 32), q in 0..63. For half h (128 elements, ql
// + 64h, qh + 32h, scales + 8h) and l in 0..31: element 128h + l + 32s for
// s = 0..3 takes its low 4 bits from ql[l] (s=0), ql[l+32] (s=1), ql[l]>>4 (s=2),
// ql[l+32]>>4 (s=3), its top 2 bits from (qh[l] >> 2s) & 3, and scale
// scales[8h + l/16 + 2s].
struct BlockQ6_K {
  uint8_t ql[kQkK / 2];
  uint8_t qh[kQkK / 4];
  int8_t scales[kQkK / 16];
  uint16_t d;
};
static_assert(sizeof(BlockQ6_K) == 210);

// ggml's activation format for K-quant dot products: x = d * q (d is a float),
// bsums[k] = sum of qs[16k .. 16k+15].
struct BlockQ8_K {
  float d;
  int8_t qs[kQkK];
  int16_t bsums[kQkK / 16];
};
static_assert(sizeof(BlockQ8_K) == 292);

// Unpacks sub-block j's (0..7) 6-bit scale and min from a Q4_K/Q5_K `scales`
// array (ggml-quants.c `get_scale_min_k4`): bytes 0..3 hold scales 0..3 in their
// low 6 bits, bytes 4..7 mins 0..3; sub-blocks 4..7 keep their low 4 bits in
// bytes 8..11 (scale low nibble, min high nibble) and their top 2 bits in the top
// 2 bits of bytes j-4 (scale) and j (min).
inline void GetScaleMinK4(int j, const uint8_t* scales, uint8_t* scale, uint8_t* min) {
  if (j < 4) {
    *scale = scales[j] & 63;
    *min = scales[j + 4] & 63;
  } else {
    *scale = static_cast<uint8_t>((scales[j + 4] & 0xF) | ((scales[j - 4] >> 6) << 4));
    *min = static_cast<uint8_t>((scales[j + 4] >> 4) | ((scales[j] >> 6) << 4));
  }
}

// --- Type table (ggml.c type_traits) for every GgmlType gguf.hpp names.
struct GgmlTypeTraits {
  int64_t block_size = 0;   // elements per block (1 for plain types)
  int64_t block_bytes = 0;  // bytes per block
};
// False for ids outside the enum.
bool LookupGgmlTypeTraits(GgmlType type, GgmlTypeTraits* out);
// Elements per block / bytes per block; 0 for unknown types.
int64_t QuantBlockSize(GgmlType type);
int64_t QuantBlockBytes(GgmlType type);
// Bytes of a row of n elements (ggml_row_size); n must be a multiple of the block size.
int64_t RowBytes(GgmlType type, int64_t n);

// Types DequantizeRow handles: F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0,
// Q4_K, Q5_K, Q6_K, Q8_K.
bool IsDequantizeSupported(GgmlType type);
// Types QuantizeRow handles: F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K,
// Q5_K, Q6_K, Q8_K.
bool IsQuantizeSupported(GgmlType type);

// Converts n elements of `type` at `src` (n / block size blocks) to floats at `dst`.
void DequantizeRow(GgmlType type, const void* src, float* dst, int64_t n);
// Converts n floats at `src` to `type` at `dst` (RowBytes(type, n) bytes) with
// ggml's reference quantizer. Non-finite inputs give unspecified (but
// memory-safe) blocks, as in ggml.
void QuantizeRow(GgmlType type, const float* src, void* dst, int64_t n);

// --- Scalar conversions.
uint16_t FloatToHalf(float f);      // round to nearest even; HalfToFloat is in gguf.hpp
uint16_t FloatToBf16(float f);      // round to nearest even, NaN quieted
float Bf16ToFloat(uint16_t b);      // exact

}  // namespace tollgate::local_backend
