// 256-bit SIMD primitives for the CPU kernels, x86 (AVX2 + FMA + F16C, and
// AVX-512 VL/BW/VNNI when the including file is compiled for it). Internal to
// local_backend; included only by kernels_avx2.cpp and kernels_avx512.cpp,
// each inside its own namespace (TOLLGATE_KERNEL_NS), so nothing compiled here
// with wider instructions can be picked by the linker for baseline code.
//
// simd_generic.hpp defines the same names with portable scalar code that
// reproduces every operation bit for bit (same lanes, same rounding, same
// saturation), so every kernel gives identical results on every instruction set.
// Semantics of the integer operations are those of the Intel intrinsics named
// in the comments (Intel Intrinsics Guide).
#pragma once

#if !defined(TOLLGATE_KERNEL_NS)
#error "define TOLLGATE_KERNEL_NS before including simd_x86.hpp"
#endif
#if !defined(__AVX2__) || !defined(__FMA__) || !defined(__F16C__)
#error "simd_x86.hpp needs -mavx2 -mfma -mf16c"
#endif

#include <immintrin.h>

#include <cstdint>
#include <cstring>

namespace tollgate::local_backend::cpu::TOLLGATE_KERNEL_NS {
namespace {

#define TOLLGATE_SIMD_INLINE inline __attribute__((always_inline))

struct F8 {
  __m256 v;
};
struct I256 {
  __m256i v;
};
struct I128 {
  __m128i v;
};

// ---- float
TOLLGATE_SIMD_INLINE F8 F8Zero() { return {_mm256_setzero_ps()}; }
TOLLGATE_SIMD_INLINE F8 F8Set1(float x) { return {_mm256_set1_ps(x)}; }
TOLLGATE_SIMD_INLINE F8 F8Load(const float* p) { return {_mm256_loadu_ps(p)}; }
TOLLGATE_SIMD_INLINE void F8Store(float* p, F8 a) { _mm256_storeu_ps(p, a.v); }
// 8 IEEE halves -> floats (exact).
TOLLGATE_SIMD_INLINE F8 F8LoadF16(const uint16_t* p) {
  return {_mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)))};
}
// 8 int8 -> floats (exact).
TOLLGATE_SIMD_INLINE F8 F8LoadI8(const int8_t* p) {
  return {_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))))};
}
// 8 bfloat16 -> floats (exact: the bits move to the top half).
TOLLGATE_SIMD_INLINE F8 F8LoadBf16(const uint16_t* p) {
  const __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  return {_mm256_castsi256_ps(_mm256_slli_epi32(w, 16))};
}
// floats -> 8 IEEE halves, round to nearest even (as FloatToHalf).
TOLLGATE_SIMD_INLINE void F8StoreF16(uint16_t* p, F8 a) {
  _mm_storeu_si128(reinterpret_cast<__m128i*>(p), _mm256_cvtps_ph(a.v, _MM_FROUND_TO_NEAREST_INT));
}
TOLLGATE_SIMD_INLINE F8 Add(F8 a, F8 b) { return {_mm256_add_ps(a.v, b.v)}; }
TOLLGATE_SIMD_INLINE F8 Sub(F8 a, F8 b) { return {_mm256_sub_ps(a.v, b.v)}; }
TOLLGATE_SIMD_INLINE F8 Mul(F8 a, F8 b) { return {_mm256_mul_ps(a.v, b.v)}; }
TOLLGATE_SIMD_INLINE F8 Div(F8 a, F8 b) { return {_mm256_div_ps(a.v, b.v)}; }
// max as _mm256_max_ps (returns b when either is NaN).
TOLLGATE_SIMD_INLINE F8 Max(F8 a, F8 b) { return {_mm256_max_ps(a.v, b.v)}; }
TOLLGATE_SIMD_INLINE F8 Min(F8 a, F8 b) { return {_mm256_min_ps(a.v, b.v)}; }
// a * b + c with one rounding.
TOLLGATE_SIMD_INLINE F8 Fma(F8 a, F8 b, F8 c) { return {_mm256_fmadd_ps(a.v, b.v, c.v)}; }
// Round to nearest integer, ties to even.
TOLLGATE_SIMD_INLINE F8 RoundNearest(F8 a) {
  return {_mm256_round_ps(a.v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)};
}
// 2^n for integral n in [-126, 127] given as floats.
TOLLGATE_SIMD_INLINE F8 Pow2(F8 n) {
  const __m256i e = _mm256_add_epi32(_mm256_cvtps_epi32(n.v), _mm256_set1_epi32(127));
  return {_mm256_castsi256_ps(_mm256_slli_epi32(e, 23))};
}
// Sum of the 8 lanes in a fixed tree: t[i] = a[i] + a[i+4]; (t0 + t2) + (t1 + t3).
TOLLGATE_SIMD_INLINE float HSum(F8 a) {
  __m128 t = _mm_add_ps(_mm256_castps256_ps128(a.v), _mm256_extractf128_ps(a.v, 1));
  t = _mm_add_ps(t, _mm_movehl_ps(t, t));
  t = _mm_add_ss(t, _mm_movehdup_ps(t));
  return _mm_cvtss_f32(t);
}
// Max of the 8 lanes, same tree (as _mm_max_ps: second operand on NaN).
TOLLGATE_SIMD_INLINE float HMax(F8 a) {
  __m128 t = _mm_max_ps(_mm256_castps256_ps128(a.v), _mm256_extractf128_ps(a.v, 1));
  t = _mm_max_ps(t, _mm_movehl_ps(t, t));
  t = _mm_max_ss(t, _mm_movehdup_ps(t));
  return _mm_cvtss_f32(t);
}
// int32 lanes -> float (round to nearest even, exact below 2^24).
TOLLGATE_SIMD_INLINE F8 CvtI32(I256 a) { return {_mm256_cvtepi32_ps(a.v)}; }

// 8 IEEE halves given one by one -> floats (exact).
TOLLGATE_SIMD_INLINE F8 F8FromHalves(uint16_t h0, uint16_t h1, uint16_t h2, uint16_t h3, uint16_t h4, uint16_t h5,
                                     uint16_t h6, uint16_t h7) {
  return {_mm256_cvtph_ps(_mm_setr_epi16(static_cast<short>(h0), static_cast<short>(h1), static_cast<short>(h2),
                                         static_cast<short>(h3), static_cast<short>(h4), static_cast<short>(h5),
                                         static_cast<short>(h6), static_cast<short>(h7)))};
}

// ---- scalar helpers
TOLLGATE_SIMD_INLINE float Half(uint16_t h) { return _cvtsh_ss(h); }
TOLLGATE_SIMD_INLINE float Bf16(uint16_t h) {
  const uint32_t bits = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof(f));
  return f;
}
TOLLGATE_SIMD_INLINE float FmaScalar(float a, float b, float c) { return __builtin_fmaf(a, b, c); }

// ---- integer (256 bits: 32 x int8, 16 x int16 or 8 x int32, by operation)
TOLLGATE_SIMD_INLINE I256 ILoad(const void* p) { return {_mm256_loadu_si256(static_cast<const __m256i*>(p))}; }
TOLLGATE_SIMD_INLINE I256 IZero() { return {_mm256_setzero_si256()}; }
TOLLGATE_SIMD_INLINE I256 Set1I8(int8_t x) { return {_mm256_set1_epi8(x)}; }
TOLLGATE_SIMD_INLINE I256 Set1I16(int16_t x) { return {_mm256_set1_epi16(x)}; }
// int16 lanes 0..7 = lo, 8..15 = hi.
TOLLGATE_SIMD_INLINE I256 Set2I16(int16_t lo, int16_t hi) {
  return {_mm256_setr_m128i(_mm_set1_epi16(lo), _mm_set1_epi16(hi))};
}
// 16 int16 from 16 int8 (sign-extended).
TOLLGATE_SIMD_INLINE I256 LoadI8ToI16(const int8_t* p) {
  return {_mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)))};
}
// 16 int16 from 16 uint8 (zero-extended).
TOLLGATE_SIMD_INLINE I256 LoadU8ToI16(const uint8_t* p) {
  return {_mm256_cvtepu8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)))};
}
// 32 bytes: 16 low nibbles of p[0..15], then their 16 high nibbles.
TOLLGATE_SIMD_INLINE I256 Nibbles32(const uint8_t* p) {
  const __m128i t = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  const __m256i b = _mm256_setr_m128i(t, _mm_srli_epi16(t, 4));
  return {_mm256_and_si256(b, _mm256_set1_epi8(0x0F))};
}
TOLLGATE_SIMD_INLINE I256 And(I256 a, I256 b) { return {_mm256_and_si256(a.v, b.v)}; }
TOLLGATE_SIMD_INLINE I256 Or(I256 a, I256 b) { return {_mm256_or_si256(a.v, b.v)}; }
// (not a) and b.
TOLLGATE_SIMD_INLINE I256 AndNot(I256 a, I256 b) { return {_mm256_andnot_si256(a.v, b.v)}; }
// 16-bit lanes shifted by n (0..15) bits.
TOLLGATE_SIMD_INLINE I256 SrlI16(I256 a, int n) { return {_mm256_srl_epi16(a.v, _mm_cvtsi32_si128(n))}; }
TOLLGATE_SIMD_INLINE I256 SllI16(I256 a, int n) { return {_mm256_sll_epi16(a.v, _mm_cvtsi32_si128(n))}; }
TOLLGATE_SIMD_INLINE I256 SllI32(I256 a, int n) { return {_mm256_sll_epi32(a.v, _mm_cvtsi32_si128(n))}; }
TOLLGATE_SIMD_INLINE I256 SubI8(I256 a, I256 b) { return {_mm256_sub_epi8(a.v, b.v)}; }
TOLLGATE_SIMD_INLINE I256 AddI16(I256 a, I256 b) { return {_mm256_add_epi16(a.v, b.v)}; }
TOLLGATE_SIMD_INLINE I256 Set1I32(int32_t x) { return {_mm256_set1_epi32(x)}; }
// 16 bytes at lo, then 16 bytes at hi.
TOLLGATE_SIMD_INLINE I256 ILoad2x128(const void* lo, const void* hi) {
  return {_mm256_inserti128_si256(_mm256_castsi128_si256(_mm_loadu_si128(static_cast<const __m128i*>(lo))),
                                  _mm_loadu_si128(static_cast<const __m128i*>(hi)), 1)};
}
// The 16 bytes at p in both halves.
TOLLGATE_SIMD_INLINE I256 IBroadcast128(const void* p) {
  return {_mm256_broadcastsi128_si256(_mm_loadu_si128(static_cast<const __m128i*>(p)))};
}
// The 4 bytes at p in all eight 32-bit lanes.
TOLLGATE_SIMD_INLINE I256 IBroadcast32(const void* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return {_mm256_set1_epi32(v)};
}
// acc + (per int32 lane l) sum of the 4 u8 x s8 products of bytes [4l, 4l+3]
// of u0 * s0 and of u1 * s1. Exact when every |u| * |s| pair sum stays below
// 2^14 (e.g. u <= 15, |s| <= 127), so the AVX2 form never saturates and equals
// the VNNI form.
TOLLGATE_SIMD_INLINE I256 DotU8I8x2Acc(I256 acc, I256 u0, I256 s0, I256 u1, I256 s1) {
#if defined(__AVX512VNNI__) && defined(__AVX512VL__)
  return {_mm256_dpbusd_epi32(_mm256_dpbusd_epi32(acc.v, u0.v, s0.v), u1.v, s1.v)};
#else
  const __m256i p = _mm256_add_epi16(_mm256_maddubs_epi16(u0.v, s0.v), _mm256_maddubs_epi16(u1.v, s1.v));
  return {_mm256_add_epi32(acc.v, _mm256_madd_epi16(p, _mm256_set1_epi16(1)))};
#endif
}
// int32 lane l = sum of the 4 u8 x s8 products of bytes [4l, 4l+3]. Exact when
// every |u| * |s| pair sum stays below 2^15 (e.g. u <= 31, |s| <= 128), so the
// AVX2 form never saturates and equals the VNNI form.
TOLLGATE_SIMD_INLINE I256 DotU8I8(I256 u, I256 s) {
#if defined(__AVX512VNNI__) && defined(__AVX512VL__)
  return {_mm256_dpbusd_epi32(_mm256_setzero_si256(), u.v, s.v)};
#else
  return {_mm256_madd_epi16(_mm256_maddubs_epi16(u.v, s.v), _mm256_set1_epi16(1))};
#endif
}
// int32 lane l = sum over bytes i in [4l, 4l+3] of u0[i] * s[i] - u1[i] * s[i]
// (u unsigned, s signed). Exact when every pair sum of either product and
// their difference stay within int16 (e.g. u0, u1 <= 16, |s| <= 128), so the
// AVX2 form never saturates or wraps and equals the VNNI form.
TOLLGATE_SIMD_INLINE I256 DotU8I8Diff(I256 u0, I256 u1, I256 s) {
#if defined(__AVX512VNNI__) && defined(__AVX512VL__)
  const __m256i zero = _mm256_setzero_si256();
  return {_mm256_sub_epi32(_mm256_dpbusd_epi32(zero, u0.v, s.v), _mm256_dpbusd_epi32(zero, u1.v, s.v))};
#else
  const __m256i p = _mm256_sub_epi16(_mm256_maddubs_epi16(u0.v, s.v), _mm256_maddubs_epi16(u1.v, s.v));
  return {_mm256_madd_epi16(p, _mm256_set1_epi16(1))};
#endif
}
// Byte i = 0xFF where bit i of the little-endian uint32 at p is set, else 0
// (ggml's bytes_from_bits_32: byte i of a broadcast picks source byte i / 8,
// ORed with all bits but i % 8 set; all-ones exactly when that bit is).
TOLLGATE_SIMD_INLINE I256 BitMask32(const void* p) {
  int32_t x32;
  std::memcpy(&x32, p, 4);
  const __m256i shuffle = _mm256_set_epi64x(0x0303030303030303, 0x0202020202020202, 0x0101010101010101, 0);
  const __m256i bytes = _mm256_or_si256(_mm256_shuffle_epi8(_mm256_set1_epi32(x32), shuffle),
                                        _mm256_set1_epi64x(0x7fbfdfeff7fbfdfe));
  return {_mm256_cmpeq_epi8(bytes, _mm256_set1_epi64x(-1))};
}
TOLLGATE_SIMD_INLINE I128 ILoad128(const void* p) { return {_mm_loadu_si128(static_cast<const __m128i*>(p))}; }
// Every int16 lane of each 128-bit half = that half's int16 lane k (0..7).
TOLLGATE_SIMD_INLINE I256 BroadcastI16(I256 v, int k) {
  return {_mm256_shuffle_epi8(v.v, _mm256_set1_epi16(static_cast<short>(((2 * k + 1) << 8) | (2 * k))))};
}
// int16 lanes 0..7 = int8 byte 2k of s, lanes 8..15 = byte 2k + 1 (sign-extended).
TOLLGATE_SIMD_INLINE I256 ScalePairI16(I128 s, int k) {
  const __m128i mask = _mm_set_epi64x(static_cast<long long>(0x0101010101010101ull * static_cast<uint64_t>(2 * k + 1)),
                                      static_cast<long long>(0x0101010101010101ull * static_cast<uint64_t>(2 * k)));
  return {_mm256_cvtepi8_epi16(_mm_shuffle_epi8(s.v, mask))};
}
// 8 bytes at p as int16 (zero-extended), in both 128-bit halves.
TOLLGATE_SIMD_INLINE I256 U8x8ToI16Twice(const uint8_t* p) {
  return {_mm256_broadcastsi128_si256(_mm_cvtepu8_epi16(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))))};
}
// 8 bytes at p as 16 int16: p0 p0 p1 p1 ... p7 p7 (zero-extended).
TOLLGATE_SIMD_INLINE I256 U8x8ToI16Pairs(const uint8_t* p) {
  const __m128i w = _mm_cvtepu8_epi16(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)));
  return {_mm256_setr_m128i(_mm_unpacklo_epi16(w, w), _mm_unpackhi_epi16(w, w))};
}
// _mm256_hadd_epi32: per 128-bit half, [a0+a1, a2+a3, b0+b1, b2+b3].
TOLLGATE_SIMD_INLINE I256 HaddI32(I256 a, I256 b) { return {_mm256_hadd_epi32(a.v, b.v)}; }
TOLLGATE_SIMD_INLINE I256 AddI32(I256 a, I256 b) { return {_mm256_add_epi32(a.v, b.v)}; }
TOLLGATE_SIMD_INLINE I256 SubI32(I256 a, I256 b) { return {_mm256_sub_epi32(a.v, b.v)}; }
// _mm256_sign_epi8: a negated where b < 0, zeroed where b == 0.
TOLLGATE_SIMD_INLINE I256 SignI8(I256 a, I256 b) { return {_mm256_sign_epi8(a.v, b.v)}; }
// _mm256_maddubs_epi16: u8 x s8 products, adjacent pairs summed with int16 saturation.
TOLLGATE_SIMD_INLINE I256 MaddubsI16(I256 u, I256 s) { return {_mm256_maddubs_epi16(u.v, s.v)}; }
// _mm256_madd_epi16: s16 x s16 products, adjacent pairs summed into int32.
TOLLGATE_SIMD_INLINE I256 MaddI16(I256 a, I256 b) { return {_mm256_madd_epi16(a.v, b.v)}; }

// int32 lane l = sum over j in [4l, 4l+3] of w[j] * x[j] for int8 vectors,
// given aw = SignI8(w, w). Exact when no x[j] is -128 (the 16-bit pair sums
// then stay below 2^15, so maddubs never saturates and the AVX-512 VNNI form
// below gives the same integers).
TOLLGATE_SIMD_INLINE I256 DotI8(I256 aw, I256 w, I256 x) {
  const __m256i sx = _mm256_sign_epi8(x.v, w.v);
#if defined(__AVX512VNNI__) && defined(__AVX512VL__)
  return {_mm256_dpbusd_epi32(_mm256_setzero_si256(), aw.v, sx)};
#else
  return {_mm256_madd_epi16(_mm256_maddubs_epi16(aw.v, sx), _mm256_set1_epi16(1))};
#endif
}

// ---- scalar int8 dot (for the 16-element int16 x int16 dot of scales and sums)
// sum of a[i] * b[i], i < 16, int16 inputs, exact in int32 for |a|,|b| < 2^12.
TOLLGATE_SIMD_INLINE int32_t DotI16x16(I256 a, I256 b) {
  const __m256i p = _mm256_madd_epi16(a.v, b.v);
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(p), _mm256_extracti128_si256(p, 1));
  s = _mm_add_epi32(s, _mm_unpackhi_epi64(s, s));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 1));
  return _mm_cvtsi128_si32(s);
}

}  // namespace
}  // namespace tollgate::local_backend::cpu::TOLLGATE_KERNEL_NS
