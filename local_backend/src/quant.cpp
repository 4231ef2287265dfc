#include "tollgate/local_backend/quant.hpp"

#include <algorithm>
#include <bit>
#include <cfloat>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

// The formulas follow ggml/src/ggml-quants.c operation by operation (same
// products, same order) so results are bit-identical to ggml's scalar code;
// this file is built with -ffp-contract=off (local_backend/CMakeLists.txt) so
// the compiler cannot fuse `d * q - m` into an FMA and change the rounding.

namespace tollgate::local_backend {
namespace {

[[noreturn]] void Fail(const char* what, GgmlType type, int64_t n) {
  std::fprintf(stderr, "tollgate quant: %s (type %s, n = %lld)\n", what, GgmlTypeName(type).c_str(),
               static_cast<long long>(n));
  std::abort();
}

// ggml-quants.c `nearest_int`: adding 1.5 * 2^23 moves the integer part into the
// low mantissa bits with the FPU's round-half-to-even; valid for |x| < 2^22.
// Kept exactly so ties round as in ggml.
inline int NearestInt(float x) {
  const float v = x + 12582912.f;
  const int32_t i = std::bit_cast<int32_t>(v);
  return (i & 0x007fffff) - 0x00400000;
}

template <class T>
T Load(const std::byte* p) {
  T v;
  std::memcpy(&v, p, sizeof(T));
  return v;
}

float F16(uint16_t h) { return HalfToFloat(h); }

// ------------------------------------------------------------ dequantization

void DequantQ4_0(const std::byte* src, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i) {
    const auto b = Load<BlockQ4_0>(src + i * sizeof(BlockQ4_0));
    const float d = F16(b.d);
    for (int j = 0; j < 16; ++j) {
      const int x0 = (b.qs[j] & 0x0F) - 8;
      const int x1 = (b.qs[j] >> 4) - 8;
      y[i * 32 + j] = x0 * d;
      y[i * 32 + j + 16] = x1 * d;
    }
  }
}

void DequantQ4_1(const std::byte* src, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i) {
    const auto b = Load<BlockQ4_1>(src + i * sizeof(BlockQ4_1));
    const float d = F16(b.d);
    const float m = F16(b.m);
    for (int j = 0; j < 16; ++j) {
      y[i * 32 + j] = (b.qs[j] & 0x0F) * d + m;
      y[i * 32 + j + 16] = (b.qs[j] >> 4) * d + m;
    }
  }
}

void DequantQ5_0(const std::byte* src, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i) {
    const auto b = Load<BlockQ5_0>(src + i * sizeof(BlockQ5_0));
    const float d = F16(b.d);
    uint32_t qh;
    std::memcpy(&qh, b.qh, 4);
    for (int j = 0; j < 16; ++j) {
      const int h0 = ((qh >> j) << 4) & 0x10;
      const int h1 = (qh >> (j + 12)) & 0x10;
      y[i * 32 + j] = (((b.qs[j] & 0x0F) | h0) - 16) * d;
      y[i * 32 + j + 16] = (((b.qs[j] >> 4) | h1) - 16) * d;
    }
  }
}

void DequantQ5_1(const std::byte* src, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i) {
    const auto b = Load<BlockQ5_1>(src + i * sizeof(BlockQ5_1));
    const float d = F16(b.d);
    const float m = F16(b.m);
    uint32_t qh;
    std::memcpy(&qh, b.qh, 4);
    for (int j = 0; j < 16; ++j) {
      const int h0 = ((qh >> j) << 4) & 0x10;
      const int h1 = (qh >> (j + 12)) & 0x10;
      y[i * 32 + j] = ((b.qs[j] & 0x0F) | h0) * d + m;
      y[i * 32 + j + 16] = ((b.qs[j] >> 4) | h1) * d + m;
    }
  }
}

void DequantQ8_0(const std::byte* src, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i) {
    const auto b = Load<BlockQ8_0>(src + i * sizeof(BlockQ8_0));
    const float d = F16(b.d);
    for (int j = 0; j < 32; ++j) y[i * 32 + j] = b.qs[j] * d;
  }
}

void DequantQ4_K(const std::byte* src, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i) {
    const auto b = Load<BlockQ4_K>(src + i * sizeof(BlockQ4_K));
    const float d = F16(b.d);
    const float min = F16(b.dmin);
    const uint8_t* q = b.qs;
    for (int is = 0; is < 8; is += 2) {
      uint8_t sc, m;
      GetScaleMinK4(is, b.scales, &sc, &m);
      const float d1 = d * sc;
      const float m1 = min * m;
      GetScaleMinK4(is + 1, b.scales, &sc, &m);
      const float d2 = d * sc;
      const float m2 = min * m;
      for (int l = 0; l < 32; ++l) *y++ = d1 * (q[l] & 0xF) - m1;
      for (int l = 0; l < 32; ++l) *y++ = d2 * (q[l] >> 4) - m2;
      q += 32;
    }
  }
}

void DequantQ5_K(const std::byte* src, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i) {
    const auto b = Load<BlockQ5_K>(src + i * sizeof(BlockQ5_K));
    const float d = F16(b.d);
    const float min = F16(b.dmin);
    const uint8_t* ql = b.qs;
    uint8_t u1 = 1, u2 = 2;
    for (int is = 0; is < 8; is += 2) {
      uint8_t sc, m;
      GetScaleMinK4(is, b.scales, &sc, &m);
      const float d1 = d * sc;
      const float m1 = min * m;
      GetScaleMinK4(is + 1, b.scales, &sc, &m);
      const float d2 = d * sc;
      const float m2 = min * m;
      for (int l = 0; l < 32; ++l) *y++ = d1 * ((ql[l] & 0xF) + (b.qh[l] & u1 ? 16 : 0)) - m1;
      for (int l = 0; l < 32; ++l) *y++ = d2 * ((ql[l] >> 4) + (b.qh[l] & u2 ? 16 : 0)) - m2;
      ql += 32;
      u1 = static_cast<uint8_t>(u1 << 2);
      u2 = static_cast<uint8_t>(u2 << 2);
    }
  }
}

void DequantQ6_K(const std::byte* src, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i) {
    const auto b = Load<BlockQ6_K>(src + i * sizeof(BlockQ6_K));
    const float d = F16(b.d);
    const uint8_t* ql = b.ql;
    const uint8_t* qh = b.qh;
    const int8_t* sc = b.scales;
    for (int n = 0; n < 256; n += 128) {
      for (int l = 0; l < 32; ++l) {
        const int is = l / 16;
        const int q1 = static_cast<int8_t>((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
        const int q2 = static_cast<int8_t>((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
        const int q3 = static_cast<int8_t>((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
        const int q4 = static_cast<int8_t>((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
        // ggml evaluates d * sc * q left to right: (d * sc) * q.
        y[l] = d * sc[is + 0] * q1;
        y[l + 32] = d * sc[is + 2] * q2;
        y[l + 64] = d * sc[is + 4] * q3;
        y[l + 96] = d * sc[is + 6] * q4;
      }
      y += 128;
      ql += 64;
      qh += 32;
      sc += 8;
    }
  }
}

void DequantQ8_K(const std::byte* src, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i) {
    const auto b = Load<BlockQ8_K>(src + i * sizeof(BlockQ8_K));
    for (int j = 0; j < 256; ++j) *y++ = b.d * b.qs[j];
  }
}

// -------------------------------------------------------------- quantization

void QuantQ4_0(const float* x, std::byte* dst, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, x += 32) {
    float amax = 0.0f;
    float max = 0.0f;
    for (int j = 0; j < 32; ++j) {
      if (amax < std::fabs(x[j])) {
        amax = std::fabs(x[j]);
        max = x[j];
      }
    }
    const float d = max / -8;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    BlockQ4_0 b{};
    b.d = FloatToHalf(d);
    for (int j = 0; j < 16; ++j) {
      // (int8_t)(v + 8.5f) truncates toward zero, i.e. rounds half up for
      // v >= -8.5; the MIN keeps +8 (the -max side) inside 0..15.
      const float x0 = x[j] * id;
      const float x1 = x[j + 16] * id;
      const auto xi0 = static_cast<uint8_t>(std::min(15, static_cast<int>(static_cast<int8_t>(x0 + 8.5f))));
      const auto xi1 = static_cast<uint8_t>(std::min(15, static_cast<int>(static_cast<int8_t>(x1 + 8.5f))));
      b.qs[j] = static_cast<uint8_t>(xi0 | (xi1 << 4));
    }
    std::memcpy(dst + i * sizeof(BlockQ4_0), &b, sizeof b);
  }
}

// Q4_1 / Q5_1: d = (max - min) / (2^bits - 1), m = min, q = trunc((x - min) / d
// + 0.5) (ggml's (int8_t) / (uint8_t) casts; Q4_1 clamps to 15, Q5_1 does not).
void QuantQ4_1(const float* x, std::byte* dst, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, x += 32) {
    float min = FLT_MAX;
    float max = -FLT_MAX;
    for (int j = 0; j < 32; ++j) {
      if (x[j] < min) min = x[j];
      if (x[j] > max) max = x[j];
    }
    const float d = (max - min) / ((1 << 4) - 1);
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    BlockQ4_1 b{};
    b.d = FloatToHalf(d);
    b.m = FloatToHalf(min);
    for (int j = 0; j < 16; ++j) {
      const float x0 = (x[j] - min) * id;
      const float x1 = (x[j + 16] - min) * id;
      const auto xi0 = static_cast<uint8_t>(std::min(15, static_cast<int>(static_cast<int8_t>(x0 + 0.5f))));
      const auto xi1 = static_cast<uint8_t>(std::min(15, static_cast<int>(static_cast<int8_t>(x1 + 0.5f))));
      b.qs[j] = static_cast<uint8_t>(xi0 | (xi1 << 4));
    }
    std::memcpy(dst + i * sizeof(BlockQ4_1), &b, sizeof b);
  }
}

// Q5_0: as Q4_0 with d = max / -16 and q = min(31, (int8_t)(x / d + 16.5)); bit 4
// of q goes to bit j of qh.
void QuantQ5_0(const float* x, std::byte* dst, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, x += 32) {
    float amax = 0.0f;
    float max = 0.0f;
    for (int j = 0; j < 32; ++j) {
      if (amax < std::fabs(x[j])) {
        amax = std::fabs(x[j]);
        max = x[j];
      }
    }
    const float d = max / -16;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    BlockQ5_0 b{};
    b.d = FloatToHalf(d);
    uint32_t qh = 0;
    for (int j = 0; j < 16; ++j) {
      const float x0 = x[j] * id;
      const float x1 = x[j + 16] * id;
      const auto xi0 = static_cast<uint8_t>(std::min(31, static_cast<int>(static_cast<int8_t>(x0 + 16.5f))));
      const auto xi1 = static_cast<uint8_t>(std::min(31, static_cast<int>(static_cast<int8_t>(x1 + 16.5f))));
      b.qs[j] = static_cast<uint8_t>((xi0 & 0x0F) | ((xi1 & 0x0F) << 4));
      qh |= ((xi0 & 0x10u) >> 4) << j;
      qh |= ((xi1 & 0x10u) >> 4) << (j + 16);
    }
    std::memcpy(b.qh, &qh, 4);
    std::memcpy(dst + i * sizeof(BlockQ5_0), &b, sizeof b);
  }
}

void QuantQ5_1(const float* x, std::byte* dst, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, x += 32) {
    float min = FLT_MAX;
    float max = -FLT_MAX;
    for (int j = 0; j < 32; ++j) {
      if (x[j] < min) min = x[j];
      if (x[j] > max) max = x[j];
    }
    const float d = (max - min) / ((1 << 5) - 1);
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    BlockQ5_1 b{};
    b.d = FloatToHalf(d);
    b.m = FloatToHalf(min);
    uint32_t qh = 0;
    for (int j = 0; j < 16; ++j) {
      const float x0 = (x[j] - min) * id;
      const float x1 = (x[j + 16] - min) * id;
      const auto xi0 = static_cast<uint8_t>(x0 + 0.5f);
      const auto xi1 = static_cast<uint8_t>(x1 + 0.5f);
      b.qs[j] = static_cast<uint8_t>((xi0 & 0x0F) | ((xi1 & 0x0F) << 4));
      qh |= ((xi0 & 0x10u) >> 4) << j;
      qh |= ((xi1 & 0x10u) >> 4) << (j + 16);
    }
    std::memcpy(b.qh, &qh, 4);
    std::memcpy(dst + i * sizeof(BlockQ5_1), &b, sizeof b);
  }
}

void QuantQ8_0(const float* x, std::byte* dst, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, x += 32) {
    float amax = 0.0f;
    for (int j = 0; j < 32; ++j) amax = std::max(amax, std::fabs(x[j]));
    const float d = amax / 127;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    BlockQ8_0 b{};
    b.d = FloatToHalf(d);
    for (int j = 0; j < 32; ++j) b.qs[j] = static_cast<int8_t>(std::round(x[j] * id));
    std::memcpy(dst + i * sizeof(BlockQ8_0), &b, sizeof b);
  }
}

// ggml-quants.c `make_qkx2_quants`: fits x ~ scale * L + min (min <= 0) with L
// in 0..nmax, trying nstep+1 scales around nmax / (max - min) and keeping the
// least weighted squared error. Returns scale; *the_min = -min.
float MakeQkx2Quants(int n, int nmax, const float* x, const float* weights, uint8_t* L, float* the_min,
                     uint8_t* Laux, float rmin, float rdelta, int nstep) {
  float min = x[0];
  float max = x[0];
  float sum_w = weights[0];
  float sum_x = sum_w * x[0];
  for (int i = 1; i < n; ++i) {
    if (x[i] < min) min = x[i];
    if (x[i] > max) max = x[i];
    const float w = weights[i];
    sum_w += w;
    sum_x += w * x[i];
  }
  if (min > 0) min = 0;
  if (max == min) {
    for (int i = 0; i < n; ++i) L[i] = 0;
    *the_min = -min;
    return 0.f;
  }
  float iscale = nmax / (max - min);
  float scale = 1 / iscale;
  float best_error = 0;
  for (int i = 0; i < n; ++i) {
    const int l = NearestInt(iscale * (x[i] - min));
    L[i] = static_cast<uint8_t>(std::max(0, std::min(nmax, l)));
    float diff = scale * L[i] + min - x[i];
    diff = diff * diff;
    best_error += weights[i] * diff;
  }
  if (nstep < 1) {
    *the_min = -min;
    return scale;
  }
  for (int is = 0; is <= nstep; ++is) {
    iscale = (rmin + rdelta * is + nmax) / (max - min);
    float sum_l = 0, sum_l2 = 0, sum_xl = 0;
    for (int i = 0; i < n; ++i) {
      int l = NearestInt(iscale * (x[i] - min));
      l = std::max(0, std::min(nmax, l));
      Laux[i] = static_cast<uint8_t>(l);
      const float w = weights[i];
      sum_l += w * l;
      sum_l2 += w * l * l;
      sum_xl += w * l * x[i];
    }
    const float D = sum_w * sum_l2 - sum_l * sum_l;
    if (D > 0) {
      float this_scale = (sum_w * sum_xl - sum_x * sum_l) / D;
      float this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D;
      if (this_min > 0) {
        this_min = 0;
        this_scale = sum_xl / sum_l2;
      }
      float cur_error = 0;
      for (int i = 0; i < n; ++i) {
        float diff = this_scale * Laux[i] + this_min - x[i];
        diff = diff * diff;
        cur_error += weights[i] * diff;
      }
      if (cur_error < best_error) {
        for (int i = 0; i < n; ++i) L[i] = Laux[i];
        best_error = cur_error;
        scale = this_scale;
        min = this_min;
      }
    }
  }
  *the_min = -min;
  return scale;
}

// ggml-quants.c `make_qx_quants` with rmse_type 1 and no importance weights
// (the only form quantize_row_q6_K_ref uses): symmetric fit x ~ scale * (L - nmax),
// L in 0..2*nmax-1, trying 19 scales and keeping the best x^2-weighted fit.
float MakeQxQuants(int n, int nmax, const float* x, int8_t* L) {
  constexpr float kGroupMaxEps = 1e-15f;
  float max = 0;
  float amax = 0;
  for (int i = 0; i < n; ++i) {
    const float ax = std::fabs(x[i]);
    if (ax > amax) {
      amax = ax;
      max = x[i];
    }
  }
  if (amax < kGroupMaxEps) {
    for (int i = 0; i < n; ++i) L[i] = 0;
    return 0.f;
  }
  float iscale = -nmax / max;
  float sumlx = 0;
  float suml2 = 0;
  for (int i = 0; i < n; ++i) {
    int l = NearestInt(iscale * x[i]);
    l = std::max(-nmax, std::min(nmax - 1, l));
    L[i] = static_cast<int8_t>(l + nmax);
    const float w = x[i] * x[i];
    sumlx += w * x[i] * l;
    suml2 += w * l * l;
  }
  float scale = suml2 != 0 ? sumlx / suml2 : 0.0f;
  float best = scale * sumlx;
  for (int is = -9; is <= 9; ++is) {
    if (is == 0) continue;
    iscale = -(nmax + 0.1f * is) / max;
    sumlx = suml2 = 0;
    for (int i = 0; i < n; ++i) {
      int l = NearestInt(iscale * x[i]);
      l = std::max(-nmax, std::min(nmax - 1, l));
      const float w = x[i] * x[i];
      sumlx += w * x[i] * l;
      suml2 += w * l * l;
    }
    if (suml2 > 0 && sumlx * sumlx > best * suml2) {
      for (int i = 0; i < n; ++i) {
        const int l = NearestInt(iscale * x[i]);
        L[i] = static_cast<int8_t>(nmax + std::max(-nmax, std::min(nmax - 1, l)));
      }
      scale = sumlx / suml2;
      best = scale * sumlx;
    }
  }
  return scale;
}

// Shared by Q4_K and Q5_K (quantize_row_q{4,5}_K_ref): per 32-element
// sub-block a (scale, min) fit, then both quantized to 6 bits against the
// super-block's largest, packed as GetScaleMinK4 reads them, and the
// elements re-quantized against the packed values. L gets 0..nmax per element.
void QuantKScalesMins(const float* x, int nmax, float rmin, float rdelta, int nstep, uint16_t* d_out,
                      uint16_t* dmin_out, uint8_t* scales_out, uint8_t* L) {
  uint8_t Laux[32];
  float weights[32];
  float mins[8];
  float scales[8];
  float max_scale = 0;
  float max_min = 0;
  for (int j = 0; j < 8; ++j) {
    float sum_x2 = 0;
    for (int l = 0; l < 32; ++l) sum_x2 += x[32 * j + l] * x[32 * j + l];
    const float av_x = std::sqrt(sum_x2 / 32);
    for (int l = 0; l < 32; ++l) weights[l] = av_x + std::fabs(x[32 * j + l]);
    scales[j] = MakeQkx2Quants(32, nmax, x + 32 * j, weights, L + 32 * j, &mins[j], Laux, rmin, rdelta, nstep);
    if (scales[j] > max_scale) max_scale = scales[j];
    if (mins[j] > max_min) max_min = mins[j];
  }
  const float inv_scale = max_scale > 0 ? 63.f / max_scale : 0.f;
  const float inv_min = max_min > 0 ? 63.f / max_min : 0.f;
  std::memset(scales_out, 0, kKScaleSize);
  for (int j = 0; j < 8; ++j) {
    // ggml stores nearest_int into a uint8_t before MIN(63, .), so the value
    // wraps modulo 256 first; kept for identical bytes.
    auto ls = static_cast<uint8_t>(NearestInt(inv_scale * scales[j]));
    auto lm = static_cast<uint8_t>(NearestInt(inv_min * mins[j]));
    ls = std::min<uint8_t>(63, ls);
    lm = std::min<uint8_t>(63, lm);
    if (j < 4) {
      scales_out[j] = ls;
      scales_out[j + 4] = lm;
    } else {
      scales_out[j + 4] = static_cast<uint8_t>((ls & 0xF) | ((lm & 0xF) << 4));
      scales_out[j - 4] |= static_cast<uint8_t>((ls >> 4) << 6);
      scales_out[j] |= static_cast<uint8_t>((lm >> 4) << 6);
    }
  }
  *d_out = FloatToHalf(max_scale / 63.f);
  *dmin_out = FloatToHalf(max_min / 63.f);
  for (int j = 0; j < 8; ++j) {
    uint8_t sc, m;
    GetScaleMinK4(j, scales_out, &sc, &m);
    const float d = F16(*d_out) * sc;
    if (d == 0.0f) continue;
    const float dm = F16(*dmin_out) * m;
    for (int ii = 0; ii < 32; ++ii) {
      const int l = NearestInt((x[32 * j + ii] + dm) / d);
      L[32 * j + ii] = static_cast<uint8_t>(std::max(0, std::min(nmax, l)));
    }
  }
}

void QuantQ4_K(const float* x, std::byte* dst, int64_t nb) {
  uint8_t L[256];
  for (int64_t i = 0; i < nb; ++i, x += 256) {
    BlockQ4_K b{};
    QuantKScalesMins(x, 15, -1.f, 0.1f, 20, &b.d, &b.dmin, b.scales, L);
    uint8_t* q = b.qs;
    for (int j = 0; j < 256; j += 64) {
      for (int l = 0; l < 32; ++l) q[l] = static_cast<uint8_t>(L[j + l] | (L[j + l + 32] << 4));
      q += 32;
    }
    std::memcpy(dst + i * sizeof(BlockQ4_K), &b, sizeof b);
  }
}

void QuantQ5_K(const float* x, std::byte* dst, int64_t nb) {
  uint8_t L[256];
  for (int64_t i = 0; i < nb; ++i, x += 256) {
    BlockQ5_K b{};
    QuantKScalesMins(x, 31, -0.5f, 0.1f, 15, &b.d, &b.dmin, b.scales, L);
    uint8_t* ql = b.qs;
    uint8_t m1 = 1, m2 = 2;
    for (int n = 0; n < 256; n += 64) {
      for (int j = 0; j < 32; ++j) {
        int l1 = L[n + j];
        if (l1 > 15) {
          l1 -= 16;
          b.qh[j] |= m1;
        }
        int l2 = L[n + j + 32];
        if (l2 > 15) {
          l2 -= 16;
          b.qh[j] |= m2;
        }
        ql[j] = static_cast<uint8_t>(l1 | (l2 << 4));
      }
      m1 = static_cast<uint8_t>(m1 << 2);
      m2 = static_cast<uint8_t>(m2 << 2);
      ql += 32;
    }
    std::memcpy(dst + i * sizeof(BlockQ5_K), &b, sizeof b);
  }
}

void QuantQ6_K(const float* x, std::byte* dst, int64_t nb) {
  constexpr float kGroupMaxEps = 1e-15f;
  int8_t L[256];
  float scales[16];
  for (int64_t i = 0; i < nb; ++i, x += 256) {
    BlockQ6_K b{};
    float max_scale = 0;
    float max_abs_scale = 0;
    for (int ib = 0; ib < 16; ++ib) {
      const float scale = MakeQxQuants(16, 32, x + 16 * ib, L + 16 * ib);
      scales[ib] = scale;
      if (std::fabs(scale) > max_abs_scale) {
        max_abs_scale = std::fabs(scale);
        max_scale = scale;
      }
    }
    if (max_abs_scale < kGroupMaxEps) {  // all (near) zero: an all-zero block
      std::memcpy(dst + i * sizeof(BlockQ6_K), &b, sizeof b);
      continue;
    }
    const float iscale = -128.f / max_scale;
    b.d = FloatToHalf(1 / iscale);
    for (int ib = 0; ib < 16; ++ib) {
      b.scales[ib] = static_cast<int8_t>(std::min(127, NearestInt(iscale * scales[ib])));
    }
    for (int j = 0; j < 16; ++j) {
      const float d = F16(b.d) * b.scales[j];
      if (d == 0.0f) continue;
      for (int ii = 0; ii < 16; ++ii) {
        int l = NearestInt(x[16 * j + ii] / d);
        l = std::max(-32, std::min(31, l));
        L[16 * j + ii] = static_cast<int8_t>(l + 32);
      }
    }
    uint8_t* ql = b.ql;
    uint8_t* qh = b.qh;
    for (int j = 0; j < 256; j += 128) {
      for (int l = 0; l < 32; ++l) {
        const uint8_t q1 = L[j + l] & 0xF;
        const uint8_t q2 = L[j + l + 32] & 0xF;
        const uint8_t q3 = L[j + l + 64] & 0xF;
        const uint8_t q4 = L[j + l + 96] & 0xF;
        ql[l] = static_cast<uint8_t>(q1 | (q3 << 4));
        ql[l + 32] = static_cast<uint8_t>(q2 | (q4 << 4));
        qh[l] = static_cast<uint8_t>((L[j + l] >> 4) | ((L[j + l + 32] >> 4) << 2) |
                                     ((L[j + l + 64] >> 4) << 4) | ((L[j + l + 96] >> 4) << 6));
      }
      ql += 64;
      qh += 32;
    }
    std::memcpy(dst + i * sizeof(BlockQ6_K), &b, sizeof b);
  }
}

void QuantQ8_K(const float* x, std::byte* dst, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, x += 256) {
    BlockQ8_K b{};
    float max = 0;
    float amax = 0;
    for (int j = 0; j < 256; ++j) {
      const float ax = std::fabs(x[j]);
      if (ax > amax) {
        amax = ax;
        max = x[j];
      }
    }
    if (amax != 0.0f) {
      // -127 rather than -128, as ggml (its IQ2_XXS AVX kernel needs the symmetry).
      const float iscale = -127.f / max;
      for (int j = 0; j < 256; ++j) b.qs[j] = static_cast<int8_t>(std::min(127, NearestInt(iscale * x[j])));
      for (int j = 0; j < 16; ++j) {
        int sum = 0;
        for (int ii = 0; ii < 16; ++ii) sum += b.qs[j * 16 + ii];
        b.bsums[j] = static_cast<int16_t>(sum);
      }
      b.d = 1 / iscale;
    }
    std::memcpy(dst + i * sizeof(BlockQ8_K), &b, sizeof b);
  }
}

// Round-to-nearest-even right shift of m by s (1 <= s <= 31).
uint32_t ShiftRne(uint32_t m, int s) {
  const uint32_t q = m >> s;
  const uint32_t rem = m & ((uint32_t{1} << s) - 1);
  const uint32_t half = uint32_t{1} << (s - 1);
  return q + ((rem > half || (rem == half && (q & 1))) ? 1 : 0);
}

}  // namespace

bool LookupGgmlTypeTraits(GgmlType type, GgmlTypeTraits* out) {
  switch (type) {
    case GgmlType::kF32: *out = {1, 4}; return true;
    case GgmlType::kF16: *out = {1, 2}; return true;
    case GgmlType::kQ4_0: *out = {kQk4_0, sizeof(BlockQ4_0)}; return true;
    case GgmlType::kQ4_1: *out = {kQk4_1, sizeof(BlockQ4_1)}; return true;
    case GgmlType::kQ5_0: *out = {kQk5_0, sizeof(BlockQ5_0)}; return true;
    case GgmlType::kQ5_1: *out = {kQk5_1, sizeof(BlockQ5_1)}; return true;
    case GgmlType::kQ8_0: *out = {kQk8_0, sizeof(BlockQ8_0)}; return true;
    case GgmlType::kQ8_1: *out = {32, 36}; return true;    // block_q8_1: d, s, qs[32]
    case GgmlType::kQ2_K: *out = {kQkK, 84}; return true;  // block_q2_K
    case GgmlType::kQ3_K: *out = {kQkK, 110}; return true; // block_q3_K
    case GgmlType::kQ4_K: *out = {kQkK, sizeof(BlockQ4_K)}; return true;
    case GgmlType::kQ5_K: *out = {kQkK, sizeof(BlockQ5_K)}; return true;
    case GgmlType::kQ6_K: *out = {kQkK, sizeof(BlockQ6_K)}; return true;
    case GgmlType::kQ8_K: *out = {kQkK, sizeof(BlockQ8_K)}; return true;
    case GgmlType::kI8: *out = {1, 1}; return true;
    case GgmlType::kI16: *out = {1, 2}; return true;
    case GgmlType::kI32: *out = {1, 4}; return true;
    case GgmlType::kI64: *out = {1, 8}; return true;
    case GgmlType::kF64: *out = {1, 8}; return true;
    case GgmlType::kBF16: *out = {1, 2}; return true;
  }
  return false;
}

int64_t QuantBlockSize(GgmlType type) {
  GgmlTypeTraits t;
  return LookupGgmlTypeTraits(type, &t) ? t.block_size : 0;
}

int64_t QuantBlockBytes(GgmlType type) {
  GgmlTypeTraits t;
  return LookupGgmlTypeTraits(type, &t) ? t.block_bytes : 0;
}

int64_t RowBytes(GgmlType type, int64_t n) {
  GgmlTypeTraits t;
  if (!LookupGgmlTypeTraits(type, &t) || n % t.block_size != 0) Fail("RowBytes: bad type or length", type, n);
  return n / t.block_size * t.block_bytes;
}

bool IsDequantizeSupported(GgmlType type) {
  switch (type) {
    case GgmlType::kF32:
    case GgmlType::kF16:
    case GgmlType::kBF16:
    case GgmlType::kQ4_0:
    case GgmlType::kQ4_1:
    case GgmlType::kQ5_0:
    case GgmlType::kQ5_1:
    case GgmlType::kQ8_0:
    case GgmlType::kQ4_K:
    case GgmlType::kQ5_K:
    case GgmlType::kQ6_K:
    case GgmlType::kQ8_K:
      return true;
    default:
      return false;
  }
}

bool IsQuantizeSupported(GgmlType type) {
  switch (type) {
    case GgmlType::kF32:
    case GgmlType::kF16:
    case GgmlType::kBF16:
    case GgmlType::kQ4_0:
    case GgmlType::kQ4_1:
    case GgmlType::kQ5_0:
    case GgmlType::kQ5_1:
    case GgmlType::kQ8_0:
    case GgmlType::kQ4_K:
    case GgmlType::kQ5_K:
    case GgmlType::kQ6_K:
    case GgmlType::kQ8_K:
      return true;
    default:
      return false;
  }
}

void DequantizeRow(GgmlType type, const void* src, float* dst, int64_t n) {
  const int64_t bs = QuantBlockSize(type);
  if (!IsDequantizeSupported(type) || n < 0 || n % bs != 0) Fail("DequantizeRow: unsupported type or length", type, n);
  const auto* s = static_cast<const std::byte*>(src);
  const int64_t nb = n / bs;
  switch (type) {
    case GgmlType::kF32:
      std::memcpy(dst, s, static_cast<size_t>(n) * 4);
      return;
    case GgmlType::kF16:
      for (int64_t i = 0; i < n; ++i) dst[i] = HalfToFloat(Load<uint16_t>(s + 2 * i));
      return;
    case GgmlType::kBF16:
      for (int64_t i = 0; i < n; ++i) dst[i] = Bf16ToFloat(Load<uint16_t>(s + 2 * i));
      return;
    case GgmlType::kQ4_0: DequantQ4_0(s, dst, nb); return;
    case GgmlType::kQ4_1: DequantQ4_1(s, dst, nb); return;
    case GgmlType::kQ5_0: DequantQ5_0(s, dst, nb); return;
    case GgmlType::kQ5_1: DequantQ5_1(s, dst, nb); return;
    case GgmlType::kQ8_0: DequantQ8_0(s, dst, nb); return;
    case GgmlType::kQ4_K: DequantQ4_K(s, dst, nb); return;
    case GgmlType::kQ5_K: DequantQ5_K(s, dst, nb); return;
    case GgmlType::kQ6_K: DequantQ6_K(s, dst, nb); return;
    case GgmlType::kQ8_K: DequantQ8_K(s, dst, nb); return;
    default: break;
  }
  Fail("DequantizeRow: unreachable", type, n);
}

void QuantizeRow(GgmlType type, const float* src, void* dst, int64_t n) {
  const int64_t bs = QuantBlockSize(type);
  if (!IsQuantizeSupported(type) || n < 0 || n % bs != 0) Fail("QuantizeRow: unsupported type or length", type, n);
  auto* d = static_cast<std::byte*>(dst);
  const int64_t nb = n / bs;
  switch (type) {
    case GgmlType::kF32:
      std::memcpy(d, src, static_cast<size_t>(n) * 4);
      return;
    case GgmlType::kF16:
      for (int64_t i = 0; i < n; ++i) {
        const uint16_t h = FloatToHalf(src[i]);
        std::memcpy(d + 2 * i, &h, 2);
      }
      return;
    case GgmlType::kBF16:
      for (int64_t i = 0; i < n; ++i) {
        const uint16_t h = FloatToBf16(src[i]);
        std::memcpy(d + 2 * i, &h, 2);
      }
      return;
    case GgmlType::kQ4_0: QuantQ4_0(src, d, nb); return;
    case GgmlType::kQ4_1: QuantQ4_1(src, d, nb); return;
    case GgmlType::kQ5_0: QuantQ5_0(src, d, nb); return;
    case GgmlType::kQ5_1: QuantQ5_1(src, d, nb); return;
    case GgmlType::kQ8_0: QuantQ8_0(src, d, nb); return;
    case GgmlType::kQ4_K: QuantQ4_K(src, d, nb); return;
    case GgmlType::kQ5_K: QuantQ5_K(src, d, nb); return;
    case GgmlType::kQ6_K: QuantQ6_K(src, d, nb); return;
    case GgmlType::kQ8_K: QuantQ8_K(src, d, nb); return;
    default: break;
  }
  Fail("QuantizeRow: unreachable", type, n);
}

uint16_t FloatToHalf(float f) {
  const uint32_t x = std::bit_cast<uint32_t>(f);
  const auto sign = static_cast<uint16_t>((x >> 16) & 0x8000u);
  const uint32_t a = x & 0x7fffffffu;
  if (a > 0x7f800000u) return sign | 0x7e00u;  // NaN -> quiet NaN, as ggml
  if (a >= 0x477ff000u) return sign | 0x7c00u; // >= 65520 (half-way above 65504, odd) -> inf
  const uint32_t e = a >> 23;
  if (e < 113) {  // below 2^-14: a half subnormal (or zero), units of 2^-24
    if (e < 102) return sign;  // < 2^-25: rounds to zero
    const uint32_t m = (a & 0x7fffffu) | 0x800000u;
    // value = m * 2^(e - 150) = (m * 2^(e - 126)) units; 126 - e in 14..24.
    return static_cast<uint16_t>(sign | ShiftRne(m, static_cast<int>(126 - e)));
  }
  // Normal: rebias the exponent (127 -> 15) and round the 23-bit mantissa to
  // 10; a carry out of the mantissa correctly bumps the exponent.
  const uint32_t h = ((e - 112) << 10) | ((a & 0x7fffffu) >> 13);
  const uint32_t rem = a & 0x1fffu;
  const uint32_t rounded = h + ((rem > 0x1000u || (rem == 0x1000u && (h & 1))) ? 1 : 0);
  return static_cast<uint16_t>(sign | rounded);
}

uint16_t FloatToBf16(float f) {
  const uint32_t x = std::bit_cast<uint32_t>(f);
  if ((x & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((x >> 16) | 0x40u);  // quiet the NaN
  return static_cast<uint16_t>((x + 0x7fffu + ((x >> 16) & 1)) >> 16);
}

float Bf16ToFloat(uint16_t b) { return std::bit_cast<float>(static_cast<uint32_t>(b) << 16); }

}  // namespace tollgate::local_backend
