// Portable scalar versions of the SIMD primitives in simd_x86.hpp, operation
// for operation: same lanes, same rounding (the file is compiled with
// -ffp-contract=off and uses fmaf only where the vector code fuses), same
// integer saturation. The generic kernels are therefore bit-identical to the
// AVX2/AVX-512 ones, which the kernel tests check on random data. Internal to
// local_backend (kernels_generic.cpp).
#pragma once

#if !defined(TOLLGATE_KERNEL_NS)
#error "define TOLLGATE_KERNEL_NS before including simd_generic.hpp"
#endif

#include "kernel_table.hpp"
#include "tollgate/local_backend/gguf.hpp"
#include "tollgate/local_backend/quant.hpp"

#include <cmath>
#include <cstdint>
#include <cstring>

namespace tollgate::local_backend::cpu::TOLLGATE_KERNEL_NS {
namespace {

#define TOLLGATE_SIMD_INLINE inline

struct F8 {
  float v[8];
};
struct I256 {
  uint8_t b[32];
  int8_t I8(int i) const { return static_cast<int8_t>(b[i]); }
  int16_t I16(int i) const {
    int16_t x;
    std::memcpy(&x, b + 2 * i, 2);
    return x;
  }
  int32_t I32(int i) const {
    int32_t x;
    std::memcpy(&x, b + 4 * i, 4);
    return x;
  }
  void SetI16(int i, int16_t x) { std::memcpy(b + 2 * i, &x, 2); }
  void SetI32(int i, int32_t x) { std::memcpy(b + 4 * i, &x, 4); }
};

struct I128 {
  uint8_t b[16];
};

// ---- float
inline F8 F8Zero() { return F8{}; }
inline F8 F8Set1(float x) {
  F8 r;
  for (float& f : r.v) f = x;
  return r;
}
inline F8 F8Load(const float* p) {
  F8 r;
  std::memcpy(r.v, p, sizeof(r.v));
  return r;
}
inline void F8Store(float* p, F8 a) { std::memcpy(p, a.v, sizeof(a.v)); }
inline float Half(uint16_t h) { return HalfToFloat(h); }
inline float Bf16(uint16_t h) { return Bf16ToFloat(h); }
inline F8 F8LoadF16(const uint16_t* p) {
  F8 r;
  for (int i = 0; i < 8; ++i) r.v[i] = Half(p[i]);
  return r;
}
inline F8 F8LoadI8(const int8_t* p) {
  F8 r;
  for (int i = 0; i < 8; ++i) r.v[i] = static_cast<float>(p[i]);
  return r;
}
inline F8 F8LoadBf16(const uint16_t* p) {
  F8 r;
  for (int i = 0; i < 8; ++i) r.v[i] = Bf16(p[i]);
  return r;
}
inline void F8StoreF16(uint16_t* p, F8 a) {
  for (int i = 0; i < 8; ++i) p[i] = FloatToHalf(a.v[i]);
}
#define TOLLGATE_F8_BINARY(name, expr) \
  inline F8 name(F8 a, F8 b) {         \
    F8 r;                              \
    for (int i = 0; i < 8; ++i) {      \
      const float x = a.v[i];          \
      const float y = b.v[i];          \
      r.v[i] = (expr);                 \
    }                                  \
    return r;                          \
  }
TOLLGATE_F8_BINARY(Add, x + y)
TOLLGATE_F8_BINARY(Sub, x - y)
TOLLGATE_F8_BINARY(Mul, x* y)
TOLLGATE_F8_BINARY(Div, x / y)
TOLLGATE_F8_BINARY(Max, x > y ? x : y)  // _mm256_max_ps: y unless x > y
TOLLGATE_F8_BINARY(Min, x < y ? x : y)
#undef TOLLGATE_F8_BINARY
inline float FmaScalar(float a, float b, float c) { return std::fmaf(a, b, c); }
inline F8 Fma(F8 a, F8 b, F8 c) {
  F8 r;
  for (int i = 0; i < 8; ++i) r.v[i] = FmaScalar(a.v[i], b.v[i], c.v[i]);
  return r;
}
inline F8 RoundNearest(F8 a) {
  F8 r;
  for (int i = 0; i < 8; ++i) r.v[i] = std::nearbyintf(a.v[i]);  // default mode: ties to even
  return r;
}
inline F8 Pow2(F8 n) {
  F8 r;
  for (int i = 0; i < 8; ++i) {
    const uint32_t bits = static_cast<uint32_t>(static_cast<int32_t>(n.v[i]) + 127) << 23;
    std::memcpy(&r.v[i], &bits, 4);
  }
  return r;
}
inline float HSum(F8 a) {
  const float t0 = a.v[0] + a.v[4], t1 = a.v[1] + a.v[5], t2 = a.v[2] + a.v[6], t3 = a.v[3] + a.v[7];
  return (t0 + t2) + (t1 + t3);
}
inline float MaxPs(float x, float y) { return x > y ? x : y; }
inline float HMax(F8 a) {
  const float t0 = MaxPs(a.v[0], a.v[4]), t1 = MaxPs(a.v[1], a.v[5]);
  const float t2 = MaxPs(a.v[2], a.v[6]), t3 = MaxPs(a.v[3], a.v[7]);
  return MaxPs(MaxPs(t0, t2), MaxPs(t1, t3));
}
inline F8 F8FromHalves(uint16_t h0, uint16_t h1, uint16_t h2, uint16_t h3, uint16_t h4, uint16_t h5, uint16_t h6,
                       uint16_t h7) {
  const uint16_t h[8] = {h0, h1, h2, h3, h4, h5, h6, h7};
  return F8LoadF16(h);
}
inline F8 CvtI32(const I256& a) {
  F8 r;
  for (int i = 0; i < 8; ++i) r.v[i] = static_cast<float>(a.I32(i));
  return r;
}

// ---- integer
inline I256 ILoad(const void* p) {
  I256 r;
  std::memcpy(r.b, p, 32);
  return r;
}
inline I256 IZero() { return I256{}; }
inline I256 Set1I8(int8_t x) {
  I256 r;
  std::memset(r.b, static_cast<uint8_t>(x), 32);
  return r;
}
inline I256 Set1I16(int16_t x) {
  I256 r;
  for (int i = 0; i < 16; ++i) r.SetI16(i, x);
  return r;
}
inline I256 Set2I16(int16_t lo, int16_t hi) {
  I256 r;
  for (int i = 0; i < 16; ++i) r.SetI16(i, i < 8 ? lo : hi);
  return r;
}
inline I256 LoadI8ToI16(const int8_t* p) {
  I256 r;
  for (int i = 0; i < 16; ++i) r.SetI16(i, p[i]);
  return r;
}
inline I256 LoadU8ToI16(const uint8_t* p) {
  I256 r;
  for (int i = 0; i < 16; ++i) r.SetI16(i, p[i]);
  return r;
}
inline I256 Nibbles32(const uint8_t* p) {
  I256 r;
  for (int i = 0; i < 16; ++i) {
    r.b[i] = p[i] & 0x0F;
    r.b[i + 16] = p[i] >> 4;
  }
  return r;
}
inline I256 And(const I256& a, const I256& b) {
  I256 r;
  for (int i = 0; i < 32; ++i) r.b[i] = a.b[i] & b.b[i];
  return r;
}
inline I256 Or(const I256& a, const I256& b) {
  I256 r;
  for (int i = 0; i < 32; ++i) r.b[i] = a.b[i] | b.b[i];
  return r;
}
inline I256 AndNot(const I256& a, const I256& b) {
  I256 r;
  for (int i = 0; i < 32; ++i) r.b[i] = static_cast<uint8_t>(~a.b[i] & b.b[i]);
  return r;
}
inline I256 SrlI16(const I256& a, int n) {
  I256 r;
  for (int i = 0; i < 16; ++i) r.SetI16(i, static_cast<int16_t>(static_cast<uint16_t>(a.I16(i)) >> n));
  return r;
}
inline I256 SllI16(const I256& a, int n) {
  I256 r;
  for (int i = 0; i < 16; ++i) r.SetI16(i, static_cast<int16_t>(static_cast<uint16_t>(a.I16(i)) << n));
  return r;
}
inline I256 SllI32(const I256& a, int n) {
  I256 r;
  for (int i = 0; i < 8; ++i) r.SetI32(i, static_cast<int32_t>(static_cast<uint32_t>(a.I32(i)) << n));
  return r;
}
inline I256 SubI8(const I256& a, const I256& b) {
  I256 r;
  for (int i = 0; i < 32; ++i) r.b[i] = static_cast<uint8_t>(a.b[i] - b.b[i]);
  return r;
}
inline I256 AddI16(const I256& a, const I256& b) {
  I256 r;
  for (int i = 0; i < 16; ++i) {
    r.SetI16(i, static_cast<int16_t>(static_cast<uint16_t>(a.I16(i)) + static_cast<uint16_t>(b.I16(i))));
  }
  return r;
}
inline I256 Set1I32(int32_t x) {
  I256 r;
  for (int i = 0; i < 8; ++i) r.SetI32(i, x);
  return r;
}
inline I256 ILoad2x128(const void* lo, const void* hi) {
  I256 r;
  std::memcpy(r.b, lo, 16);
  std::memcpy(r.b + 16, hi, 16);
  return r;
}
inline I256 IBroadcast128(const void* p) { return ILoad2x128(p, p); }
inline I256 IBroadcast32(const void* p) {
  I256 r;
  for (int i = 0; i < 8; ++i) std::memcpy(r.b + 4 * i, p, 4);
  return r;
}
inline I128 ILoad128(const void* p) {
  I128 r;
  std::memcpy(r.b, p, 16);
  return r;
}
inline I256 BroadcastI16(const I256& v, int k) {
  I256 r;
  for (int i = 0; i < 16; ++i) r.SetI16(i, v.I16(i < 8 ? k : 8 + k));
  return r;
}
inline I256 ScalePairI16(const I128& s, int k) {
  I256 r;
  for (int i = 0; i < 16; ++i) r.SetI16(i, static_cast<int8_t>(s.b[i < 8 ? 2 * k : 2 * k + 1]));
  return r;
}
inline I256 U8x8ToI16Twice(const uint8_t* p) {
  I256 r;
  for (int i = 0; i < 16; ++i) r.SetI16(i, p[i % 8]);
  return r;
}
inline I256 U8x8ToI16Pairs(const uint8_t* p) {
  I256 r;
  for (int i = 0; i < 16; ++i) r.SetI16(i, p[i / 2]);
  return r;
}
inline I256 HaddI32(const I256& a, const I256& b) {
  I256 r;
  for (int h = 0; h < 2; ++h) {
    const int o = 4 * h;
    r.SetI32(o + 0, static_cast<int32_t>(static_cast<uint32_t>(a.I32(o)) + static_cast<uint32_t>(a.I32(o + 1))));
    r.SetI32(o + 1, static_cast<int32_t>(static_cast<uint32_t>(a.I32(o + 2)) + static_cast<uint32_t>(a.I32(o + 3))));
    r.SetI32(o + 2, static_cast<int32_t>(static_cast<uint32_t>(b.I32(o)) + static_cast<uint32_t>(b.I32(o + 1))));
    r.SetI32(o + 3, static_cast<int32_t>(static_cast<uint32_t>(b.I32(o + 2)) + static_cast<uint32_t>(b.I32(o + 3))));
  }
  return r;
}
inline I256 AddI32(const I256& a, const I256& b) {
  I256 r;
  for (int i = 0; i < 8; ++i) {
    r.SetI32(i, static_cast<int32_t>(static_cast<uint32_t>(a.I32(i)) + static_cast<uint32_t>(b.I32(i))));
  }
  return r;
}
inline I256 SubI32(const I256& a, const I256& b) {
  I256 r;
  for (int i = 0; i < 8; ++i) {
    r.SetI32(i, static_cast<int32_t>(static_cast<uint32_t>(a.I32(i)) - static_cast<uint32_t>(b.I32(i))));
  }
  return r;
}
inline I256 SignI8(const I256& a, const I256& b) {
  I256 r;
  for (int i = 0; i < 32; ++i) {
    const int8_t s = b.I8(i);
    const uint8_t x = a.b[i];
    r.b[i] = s < 0 ? static_cast<uint8_t>(0u - x) : (s == 0 ? 0 : x);
  }
  return r;
}
inline int16_t SatI16(int32_t x) { return static_cast<int16_t>(x > 32767 ? 32767 : (x < -32768 ? -32768 : x)); }
inline I256 MaddubsI16(const I256& u, const I256& s) {
  I256 r;
  for (int i = 0; i < 16; ++i) {
    const int32_t p = static_cast<int32_t>(u.b[2 * i]) * s.I8(2 * i) + static_cast<int32_t>(u.b[2 * i + 1]) * s.I8(2 * i + 1);
    r.SetI16(i, SatI16(p));
  }
  return r;
}
inline I256 MaddI16(const I256& a, const I256& b) {
  I256 r;
  for (int i = 0; i < 8; ++i) {
    // Only overflows for (-2^15)^2 + (-2^15)^2, where the instruction wraps too.
    const int64_t p = static_cast<int64_t>(a.I16(2 * i)) * b.I16(2 * i) +
                      static_cast<int64_t>(a.I16(2 * i + 1)) * b.I16(2 * i + 1);
    r.SetI32(i, static_cast<int32_t>(static_cast<uint32_t>(p)));
  }
  return r;
}
inline I256 DotU8I8x2Acc(const I256& acc, const I256& u0, const I256& s0, const I256& u1, const I256& s1) {
  return AddI32(acc, MaddI16(AddI16(MaddubsI16(u0, s0), MaddubsI16(u1, s1)), Set1I16(1)));
}
inline I256 DotU8I8(const I256& u, const I256& s) { return MaddI16(MaddubsI16(u, s), Set1I16(1)); }
inline I256 DotU8I8Diff(const I256& u0, const I256& u1, const I256& s) {
  const I256 p0 = MaddubsI16(u0, s);
  const I256 p1 = MaddubsI16(u1, s);
  I256 d;
  for (int i = 0; i < 16; ++i) {
    d.SetI16(i, static_cast<int16_t>(static_cast<uint16_t>(p0.I16(i)) - static_cast<uint16_t>(p1.I16(i))));
  }
  return MaddI16(d, Set1I16(1));
}
inline I256 BitMask32(const void* p) {
  uint32_t bits;
  std::memcpy(&bits, p, 4);
  I256 r;
  for (int i = 0; i < 32; ++i) r.b[i] = ((bits >> i) & 1) != 0 ? 0xFF : 0;
  return r;
}
inline I256 DotI8(const I256& aw, const I256& w, const I256& x) {
  return MaddI16(MaddubsI16(aw, SignI8(x, w)), Set1I16(1));
}
inline int32_t DotI16x16(const I256& a, const I256& b) {
  const I256 p = MaddI16(a, b);
  // Same association as the vector version: (p_i + p_{i+4}), then pairs.
  const int32_t s0 = p.I32(0) + p.I32(4), s1 = p.I32(1) + p.I32(5), s2 = p.I32(2) + p.I32(6), s3 = p.I32(3) + p.I32(7);
  return (s0 + s2) + (s1 + s3);
}

}  // namespace
}  // namespace tollgate::local_backend::cpu::TOLLGATE_KERNEL_NS
