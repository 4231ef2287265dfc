// The CUDA backend's kernels (cuda_kernels.hpp). Dequantization follows
// quant.cpp (ggml's dequantize_row_*) value for value, in float32.
#include "cuda_kernels.hpp"

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cfloat>
#include <cstdint>
#include <cstring>

namespace tollgate::local_backend::cuda {
namespace {

constexpr int kWarp = 32;
constexpr int kPageTokens = 64;  // backend.hpp kKvPageTokens
constexpr int kMaxHeadDim = 256;

// IEEE half bits to float (host and device).
__host__ __device__ __forceinline__ float HalfBits(uint16_t bits) {
  __half_raw raw;
  raw.x = bits;
  return __half2float(__half(raw));
}

__host__ __device__ __forceinline__ float Half(const unsigned char* p) {
  return HalfBits(*reinterpret_cast<const uint16_t*>(p));
}

__device__ __forceinline__ float WarpSum(float v) {
#pragma unroll
  for (int o = kWarp / 2; o > 0; o /= 2) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

__device__ __forceinline__ float WarpMax(float v) {
#pragma unroll
  for (int o = kWarp / 2; o > 0; o /= 2) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

__host__ __device__ __forceinline__ float FloatFromBits(uint32_t u) {
#ifdef __CUDA_ARCH__
  return __uint_as_float(u);
#else
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
#endif
}

// Eight bytes at `p` (2-byte aligned) into b[0..7].
__host__ __device__ __forceinline__ void Bytes8(const unsigned char* p, unsigned char b[8]) {
  const auto* h = reinterpret_cast<const uint16_t*>(p);
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const uint16_t v = h[i];
    b[2 * i] = static_cast<unsigned char>(v & 0xFF);
    b[2 * i + 1] = static_cast<unsigned char>(v >> 8);
  }
}

// Eight bytes at `p` (8-byte aligned) into b[0..7] with one load: the Q4_K and
// Q5_K quants (blocks of 144 and 176 bytes, multiples of 8, from a cudaMalloc
// base; quants at offsets 16 + 32c + l and 48 + 32c + l, qh at 16 + l, l a
// multiple of 8), where four 16-bit loads per lane would bound the
// matrix-vector kernel by load instructions rather than by memory.
__host__ __device__ __forceinline__ void Bytes8Aligned(const unsigned char* p, unsigned char b[8]) {
  const uint2 u = *reinterpret_cast<const uint2*>(p);
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    b[i] = static_cast<unsigned char>(u.x >> (8 * i));
    b[4 + i] = static_cast<unsigned char>(u.y >> (8 * i));
  }
}

// The 6-bit scale and min of sub-block j of a Q4_K/Q5_K block (quant.hpp GetScaleMinK4).
__host__ __device__ __forceinline__ void ScaleMinK4(int j, const unsigned char* s, int* sc, int* m) {
  if (j < 4) {
    *sc = s[j] & 63;
    *m = s[j + 4] & 63;
  } else {
    *sc = (s[j + 4] & 0xF) | ((s[j - 4] >> 6) << 4);
    *m = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
  }
}

// v[0..7] = elements e .. e + 7 of a row (e a multiple of 8).
template <WType T>
__host__ __device__ __forceinline__ void Load8(const unsigned char* row, int e, float v[8]) {
  if constexpr (T == WType::kF32) {
    const float4 a = *reinterpret_cast<const float4*>(row + 4 * e);
    const float4 b = *reinterpret_cast<const float4*>(row + 4 * e + 16);
    v[0] = a.x; v[1] = a.y; v[2] = a.z; v[3] = a.w;
    v[4] = b.x; v[5] = b.y; v[6] = b.z; v[7] = b.w;
  } else if constexpr (T == WType::kF16) {
    const uint4 u = *reinterpret_cast<const uint4*>(row + 2 * e);
    const uint32_t w[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      v[2 * i] = HalfBits(static_cast<uint16_t>(w[i] & 0xFFFF));
      v[2 * i + 1] = HalfBits(static_cast<uint16_t>(w[i] >> 16));
    }
  } else if constexpr (T == WType::kBF16) {
    const uint4 u = *reinterpret_cast<const uint4*>(row + 2 * e);
    const uint32_t w[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      v[2 * i] = FloatFromBits(w[i] << 16);
      v[2 * i + 1] = FloatFromBits(w[i] & 0xFFFF0000u);
    }
  } else if constexpr (T == WType::kQ8_0) {
    const unsigned char* b = row + (e / 32) * 34;
    const float d = Half(b);
    unsigned char q[8];
    Bytes8(b + 2 + e % 32, q);
#pragma unroll
    for (int i = 0; i < 8; ++i) v[i] = static_cast<float>(static_cast<signed char>(q[i])) * d;
  } else if constexpr (T == WType::kQ4_0 || T == WType::kQ4_1) {
    constexpr int kBytes = T == WType::kQ4_0 ? 18 : 20;
    const unsigned char* b = row + (e / 32) * kBytes;
    const int j = e % 32;
    const float d = Half(b);
    unsigned char q[8];
    Bytes8(b + (T == WType::kQ4_0 ? 2 : 4) + (j & 15), q);
    const int shift = j < 16 ? 0 : 4;
    if constexpr (T == WType::kQ4_0) {
#pragma unroll
      for (int i = 0; i < 8; ++i) v[i] = static_cast<float>(((q[i] >> shift) & 0xF) - 8) * d;
    } else {
      const float m = Half(b + 2);
#pragma unroll
      for (int i = 0; i < 8; ++i) v[i] = static_cast<float>((q[i] >> shift) & 0xF) * d + m;
    }
  } else if constexpr (T == WType::kQ5_0 || T == WType::kQ5_1) {
    constexpr bool k0 = T == WType::kQ5_0;
    const unsigned char* b = row + (e / 32) * (k0 ? 22 : 24);
    const int j = e % 32;
    const float d = Half(b);
    const unsigned char* qhp = b + (k0 ? 2 : 4);
    const uint32_t qh = static_cast<uint32_t>(qhp[0]) | (static_cast<uint32_t>(qhp[1]) << 8) |
                        (static_cast<uint32_t>(qhp[2]) << 16) | (static_cast<uint32_t>(qhp[3]) << 24);
    unsigned char q[8];
    Bytes8(b + (k0 ? 6 : 8) + (j & 15), q);
    const int shift = j < 16 ? 0 : 4;
#pragma unroll
    for (int i = 0; i < 8; ++i) {
      const int x = ((q[i] >> shift) & 0xF) | (((qh >> (j + i)) & 1) << 4);
      if constexpr (k0) {
        v[i] = static_cast<float>(x - 16) * d;
      } else {
        v[i] = static_cast<float>(x) * d + Half(b + 2);
      }
    }
  } else if constexpr (T == WType::kQ4_K || T == WType::kQ5_K) {
    constexpr bool k4 = T == WType::kQ4_K;
    const unsigned char* b = row + (e / 256) * (k4 ? 144 : 176);
    const int i = e % 256;
    const int c = i / 64;
    const int within = i % 64;
    const int l = within % 32;
    const int is = 2 * c + (within >= 32 ? 1 : 0);
    int sc, m;
    ScaleMinK4(is, b + 4, &sc, &m);
    const float d1 = Half(b) * static_cast<float>(sc);
    const float m1 = Half(b + 2) * static_cast<float>(m);
    unsigned char q[8];
    Bytes8Aligned(b + (k4 ? 16 : 48) + c * 32 + l, q);
    const int shift = within < 32 ? 0 : 4;
    if constexpr (k4) {
#pragma unroll
      for (int k = 0; k < 8; ++k) v[k] = d1 * static_cast<float>((q[k] >> shift) & 0xF) - m1;
    } else {
      unsigned char h[8];
      Bytes8Aligned(b + 16 + l, h);
      const int bit = 1 << is;
#pragma unroll
      for (int k = 0; k < 8; ++k) {
        v[k] = d1 * static_cast<float>(((q[k] >> shift) & 0xF) + ((h[k] & bit) ? 16 : 0)) - m1;
      }
    }
  } else if constexpr (T == WType::kQ6_K) {
    const unsigned char* b = row + (e / 256) * 210;
    const int i = e % 256;
    const int n = i / 128;
    const int r = i % 128;
    const int quarter = r / 32;
    const int l = r % 32;
    const unsigned char* ql = b + 64 * n + (quarter & 1 ? 32 : 0) + l;
    const unsigned char* qh = b + 128 + 32 * n + l;
    const float d = Half(b + 208);
    const float ds = d * static_cast<float>(static_cast<signed char>(b[192 + 8 * n + l / 16 + 2 * quarter]));
    unsigned char lo[8], hi[8];
    Bytes8(ql, lo);
    Bytes8(qh, hi);
    const int lshift = quarter < 2 ? 0 : 4;
    const int hshift = 2 * quarter;
#pragma unroll
    for (int k = 0; k < 8; ++k) {
      const int q = ((lo[k] >> lshift) & 0xF) | (((hi[k] >> hshift) & 3) << 4);
      v[k] = ds * static_cast<float>(q - 32);
    }
  }
}

// ------------------------------------------------------------ matrix-vector

constexpr int kMatVecWarps = 4;

// Each warp computes R rows: the activations it loads (8 values per lane per
// token) serve all R rows, so x is read from L1 once per R weight rows rather
// than once per row (at 1 token and Q4_K, x is 7x the weight's bytes).
template <WType T, int NT, int R>
__global__ void __launch_bounds__(kMatVecWarps * kWarp)
    MatVecKernel(const unsigned char* __restrict__ w, size_t row_bytes, int rows, int cols,
                 const float* __restrict__ x, int x_stride, bool x_vec4, float* __restrict__ out, int out_stride,
                 bool accumulate) {
  const int lane = threadIdx.x % kWarp;
  const int row0 = (blockIdx.x * kMatVecWarps + threadIdx.x / kWarp) * R;
  if (row0 >= rows) return;
  const int nr = min(R, rows - row0);  // the same for the whole warp
  float acc[R][NT];
#pragma unroll
  for (int r = 0; r < R; ++r) {
#pragma unroll
    for (int t = 0; t < NT; ++t) acc[r][t] = 0.0f;
  }
  // Unrolled so that several loads of the rows are in flight per warp.
#pragma unroll 2
  for (int e = lane * 8; e < cols; e += kWarp * 8) {
    float xv[NT][8];
#pragma unroll
    for (int t = 0; t < NT; ++t) {
      const float* xt = x + static_cast<size_t>(t) * x_stride + e;
      if (x_vec4) {
        const float4 a = __ldg(reinterpret_cast<const float4*>(xt));
        const float4 b = __ldg(reinterpret_cast<const float4*>(xt + 4));
        xv[t][0] = a.x; xv[t][1] = a.y; xv[t][2] = a.z; xv[t][3] = a.w;
        xv[t][4] = b.x; xv[t][5] = b.y; xv[t][6] = b.z; xv[t][7] = b.w;
      } else {
#pragma unroll
        for (int i = 0; i < 8; ++i) xv[t][i] = __ldg(xt + i);
      }
    }
#pragma unroll
    for (int r = 0; r < R; ++r) {
      if (r < nr) {
        float v[8];
        Load8<T>(w + static_cast<size_t>(row0 + r) * row_bytes, e, v);
#pragma unroll
        for (int t = 0; t < NT; ++t) {
#pragma unroll
          for (int i = 0; i < 8; ++i) acc[r][t] = fmaf(v[i], xv[t][i], acc[r][t]);
        }
      }
    }
  }
#pragma unroll
  for (int r = 0; r < R; ++r) {
    if (r >= nr) break;
#pragma unroll
    for (int t = 0; t < NT; ++t) {
      const float s = WarpSum(acc[r][t]);
      if (lane == t) {
        float* o = out + static_cast<size_t>(t) * out_stride + row0 + r;
        *o = accumulate ? *o + s : s;
      }
    }
  }
}

// Rows per warp: 4 when that still leaves about two blocks per multiprocessor
// of an H100/H200 (132 of them), else 1 (small matrices need every warp).
constexpr int kMatVecWideRows = 2 * 132 * kMatVecWarps * 4;

template <WType T, int R>
void MatVecRows(const MatVecArgs& a, bool vec4, cudaStream_t stream) {
  const dim3 grid((a.rows + kMatVecWarps * R - 1) / (kMatVecWarps * R));
  const dim3 block(kMatVecWarps * kWarp);
  const auto* w = static_cast<const unsigned char*>(a.w);
#define TOLLGATE_MATVEC(NT)                                                                                        \
  case NT:                                                                                                         \
    MatVecKernel<T, NT, R><<<grid, block, 0, stream>>>(w, a.row_bytes, a.rows, a.cols, a.x, a.x_stride, vec4, a.out, \
                                                       a.out_stride, a.accumulate);                                \
    break;
  switch (a.tokens) {
    TOLLGATE_MATVEC(1)
    TOLLGATE_MATVEC(2)
    TOLLGATE_MATVEC(3)
    TOLLGATE_MATVEC(4)
    TOLLGATE_MATVEC(5)
    TOLLGATE_MATVEC(6)
    TOLLGATE_MATVEC(7)
    TOLLGATE_MATVEC(8)
    default: break;
  }
#undef TOLLGATE_MATVEC
}

template <WType T>
void MatVecTyped(const MatVecArgs& a, cudaStream_t stream) {
  const bool vec4 = reinterpret_cast<uintptr_t>(a.x) % 16 == 0 && a.x_stride % 4 == 0;
  if (a.rows >= kMatVecWideRows) {
    MatVecRows<T, 4>(a, vec4, stream);
  } else {
    MatVecRows<T, 1>(a, vec4, stream);
  }
}

// Runs STATEMENT with the constant T set to the runtime weight type.
#define TOLLGATE_FOR_TYPE(type, STATEMENT)                 \
  switch (type) {                                          \
    TOLLGATE_TYPE_CASE(kF32, STATEMENT)                    \
    TOLLGATE_TYPE_CASE(kF16, STATEMENT)                    \
    TOLLGATE_TYPE_CASE(kBF16, STATEMENT)                   \
    TOLLGATE_TYPE_CASE(kQ8_0, STATEMENT)                   \
    TOLLGATE_TYPE_CASE(kQ4_0, STATEMENT)                   \
    TOLLGATE_TYPE_CASE(kQ4_1, STATEMENT)                   \
    TOLLGATE_TYPE_CASE(kQ5_0, STATEMENT)                   \
    TOLLGATE_TYPE_CASE(kQ5_1, STATEMENT)                   \
    TOLLGATE_TYPE_CASE(kQ4_K, STATEMENT)                   \
    TOLLGATE_TYPE_CASE(kQ5_K, STATEMENT)                   \
    TOLLGATE_TYPE_CASE(kQ6_K, STATEMENT)                   \
  }
#define TOLLGATE_TYPE_CASE(name, STATEMENT) \
  case WType::name: {                       \
    constexpr WType T = WType::name;        \
    STATEMENT;                              \
    break;                                  \
  }

// ------------------------------------------------------------ dequantization

template <WType T>
__global__ void DequantHalfKernel(const unsigned char* __restrict__ w, size_t row_bytes, int first_row, int rows,
                                  int cols, __half* __restrict__ out) {
  const int groups = cols / 8;
  const int64_t total = static_cast<int64_t>(rows) * groups;
  for (int64_t g = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; g < total;
       g += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int r = static_cast<int>(g / groups);
    const int e = static_cast<int>(g % groups) * 8;
    float v[8];
    Load8<T>(w + static_cast<size_t>(first_row + r) * row_bytes, e, v);
    __half2 h[4];
#pragma unroll
    for (int i = 0; i < 4; ++i) h[i] = __floats2half2_rn(v[2 * i], v[2 * i + 1]);
    *reinterpret_cast<uint4*>(out + static_cast<size_t>(r) * cols + e) = *reinterpret_cast<const uint4*>(h);
  }
}

template <WType T>
__global__ void GetRowsKernel(const unsigned char* __restrict__ w, size_t row_bytes, const int32_t* __restrict__ ids,
                              int n, int cols, float* __restrict__ out, int out_stride) {
  const int groups = cols / 8;
  for (int g = blockIdx.x * blockDim.x + threadIdx.x; g < n * groups; g += gridDim.x * blockDim.x) {
    const int r = g / groups;
    const int e = (g % groups) * 8;
    float v[8];
    Load8<T>(w + static_cast<size_t>(ids[r]) * row_bytes, e, v);
    float* o = out + static_cast<size_t>(r) * out_stride + e;
#pragma unroll
    for (int i = 0; i < 8; ++i) o[i] = v[i];
  }
}

int GridFor(int64_t work, int block) {
  const int64_t blocks = (work + block - 1) / block;
  return static_cast<int>(blocks < 65535 * 16 ? (blocks > 0 ? blocks : 1) : 65535 * 16);
}

// ------------------------------------------------------------ elementwise

__global__ void ToHalfKernel(const float* __restrict__ x, int x_stride, int rows, int cols, bool bf16,
                             void* __restrict__ out) {
  const int64_t total = static_cast<int64_t>(rows) * cols;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int r = static_cast<int>(i / cols);
    const int c = static_cast<int>(i % cols);
    const float v = x[static_cast<size_t>(r) * x_stride + c];
    if (bf16) {
      static_cast<__nv_bfloat16*>(out)[i] = __float2bfloat16_rn(v);
    } else {
      static_cast<__half*>(out)[i] = __float2half_rn(v);
    }
  }
}

constexpr int kNormThreads = 256;

__global__ void __launch_bounds__(kNormThreads)
    RmsNormKernel(const float* __restrict__ x, int x_stride, const float* __restrict__ w, int cols, float eps,
                  float* out, int out_stride) {
  const float* xr = x + static_cast<size_t>(blockIdx.x) * x_stride;
  float* orow = out + static_cast<size_t>(blockIdx.x) * out_stride;
  double sum = 0.0;
  for (int c = threadIdx.x; c < cols; c += kNormThreads) sum += static_cast<double>(xr[c]) * xr[c];
  __shared__ double partial[kNormThreads / kWarp];
#pragma unroll
  for (int o = kWarp / 2; o > 0; o /= 2) sum += __shfl_xor_sync(0xffffffffu, sum, o);
  if (threadIdx.x % kWarp == 0) partial[threadIdx.x / kWarp] = sum;
  __syncthreads();
  double total = 0.0;
#pragma unroll
  for (int i = 0; i < kNormThreads / kWarp; ++i) total += partial[i];
  const float scale = static_cast<float>(1.0 / sqrt(total / cols + static_cast<double>(eps)));
  for (int c = threadIdx.x; c < cols; c += kNormThreads) {
    const float v = xr[c] * scale;
    orow[c] = w != nullptr ? v * w[c] : v;
  }
}

__global__ void AddBiasKernel(float* x, int x_stride, int rows, int cols, const float* __restrict__ b) {
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < rows * cols; i += gridDim.x * blockDim.x) {
    x[static_cast<size_t>(i / cols) * x_stride + i % cols] += b[i % cols];
  }
}

__global__ void AddKernel(float* x, int x_stride, const float* y, int y_stride, int rows, int cols) {
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < rows * cols; i += gridDim.x * blockDim.x) {
    const int r = i / cols;
    const int c = i % cols;
    x[static_cast<size_t>(r) * x_stride + c] += y[static_cast<size_t>(r) * y_stride + c];
  }
}

__global__ void SwiGluKernel(const float* g, int g_stride, const float* u, int u_stride, float* out, int out_stride,
                             int rows, int cols) {
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < rows * cols; i += gridDim.x * blockDim.x) {
    const int r = i / cols;
    const int c = i % cols;
    const float gv = g[static_cast<size_t>(r) * g_stride + c];
    const float uv = u[static_cast<size_t>(r) * u_stride + c];
    out[static_cast<size_t>(r) * out_stride + c] = gv / (1.0f + expf(-gv)) * uv;
  }
}

__global__ void RopeKernel(float* x, int x_stride, int rows, int heads, int head_dim, const float* __restrict__ cs,
                           int dims, bool neox) {
  const int half = dims / 2;
  const int total = rows * heads * half;
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < total; i += gridDim.x * blockDim.x) {
    const int p = i % half;
    const int h = (i / half) % heads;
    const int r = i / (half * heads);
    float* v = x + static_cast<size_t>(r) * x_stride + static_cast<size_t>(h) * head_dim;
    const float c = cs[static_cast<size_t>(r) * dims + 2 * p];
    const float s = cs[static_cast<size_t>(r) * dims + 2 * p + 1];
    const int a = neox ? p : 2 * p;
    const int b = neox ? p + half : 2 * p + 1;
    const float v0 = v[a];
    const float v1 = v[b];
    v[a] = v0 * c - v1 * s;
    v[b] = v0 * s + v1 * c;
  }
}

// ------------------------------------------------------------ KV cache

// The run of (layer, kv, head) in `page`.
__device__ __forceinline__ unsigned char* Run(const KvLayout& kv, int32_t page, int which, int head) {
  return kv.base + static_cast<size_t>(page) * kv.page_bytes +
         (static_cast<size_t>(kv.layer * 2 + which) * kv.kv_heads + head) * kv.run_bytes;
}

// One warp per (row, kv head, K or V).
__global__ void KvStoreKernel(KvLayout kv, const float* __restrict__ k, int k_stride, const float* __restrict__ v,
                              int v_stride, const AttnRow* __restrict__ rows, int n_rows,
                              const int32_t* __restrict__ tables) {
  const int lane = threadIdx.x % kWarp;
  const int item = blockIdx.x * (blockDim.x / kWarp) + threadIdx.x / kWarp;
  if (item >= n_rows * kv.kv_heads * 2) return;
  const int which = item % 2;
  const int head = (item / 2) % kv.kv_heads;
  const AttnRow r = rows[item / (2 * kv.kv_heads)];
  const int hd = kv.head_dim;
  const float* src = (which == 0 ? k + static_cast<size_t>(r.row) * k_stride : v + static_cast<size_t>(r.row) * v_stride) +
                     static_cast<size_t>(head) * hd;
  unsigned char* run = Run(kv, tables[r.table + r.pos / kPageTokens], which, head);
  const int slot = r.pos % kPageTokens;
  if (kv.type == 0) {
    float* dst = reinterpret_cast<float*>(run) + static_cast<size_t>(slot) * hd;
    for (int i = lane; i < hd; i += kWarp) dst[i] = src[i];
  } else if (kv.type == 1) {
    __half* dst = reinterpret_cast<__half*>(run) + static_cast<size_t>(slot) * hd;
    for (int i = lane; i < hd; i += kWarp) dst[i] = __float2half_rn(src[i]);
  } else {
    // Symmetric absmax, one half scale per row (backend.hpp KvType::kQ8; the
    // CPU's ToQ8: the scale is rounded to half first and the values divided
    // by the rounded scale).
    float amax = 0.0f;
    for (int i = lane; i < hd; i += kWarp) amax = fmaxf(amax, fabsf(src[i]));
    amax = WarpMax(amax);
    const __half d = __float2half_rn(amax / 127.0f);
    const float dd = __half2float(d);
    const float id = dd != 0.0f ? 1.0f / dd : 0.0f;
    signed char* q = reinterpret_cast<signed char*>(run) + static_cast<size_t>(slot) * hd;
    for (int i = lane; i < hd; i += kWarp) {
      const int x = static_cast<int>(rintf(src[i] * id));
      q[i] = static_cast<signed char>(x > 127 ? 127 : (x < -127 ? -127 : x));
    }
    if (lane == 0) reinterpret_cast<__half*>(run + static_cast<size_t>(kPageTokens) * hd)[slot] = d;
  }
}

constexpr int kAttnWarps = 4;
constexpr int kAttnDims = kMaxHeadDim / kWarp;  // output values per lane
// Query heads one block serves: those sharing a KV head (GQA), up to this
// many; larger groups are split over several blocks.
constexpr int kAttnMaxGroup = 8;

// s[j] = q[j] . K row `slot` of `run` for the block's nq query heads (q in
// shared memory, kMaxHeadDim apart): each key value is loaded once for all.
__device__ __forceinline__ void KeyDots(const float (*q)[kMaxHeadDim], int nq, const unsigned char* run, int slot,
                                        int hd, int type, float s[kAttnMaxGroup]) {
#pragma unroll
  for (int j = 0; j < kAttnMaxGroup; ++j) s[j] = 0.0f;
  float d = 1.0f;
  if (type == 2) d = __half2float(reinterpret_cast<const __half*>(run + static_cast<size_t>(kPageTokens) * hd)[slot]);
  for (int i = 0; i < hd; i += 8) {
    float k[8];
    if (type == 0) {
      const float* kr = reinterpret_cast<const float*>(run) + static_cast<size_t>(slot) * hd + i;
      const float4 a = *reinterpret_cast<const float4*>(kr);
      const float4 b = *reinterpret_cast<const float4*>(kr + 4);
      k[0] = a.x; k[1] = a.y; k[2] = a.z; k[3] = a.w;
      k[4] = b.x; k[5] = b.y; k[6] = b.z; k[7] = b.w;
    } else if (type == 1) {
      const uint4 u = *reinterpret_cast<const uint4*>(reinterpret_cast<const __half*>(run) +
                                                      static_cast<size_t>(slot) * hd + i);
      const uint32_t w[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
      for (int t = 0; t < 4; ++t) {
        k[2 * t] = HalfBits(static_cast<uint16_t>(w[t] & 0xFFFF));
        k[2 * t + 1] = HalfBits(static_cast<uint16_t>(w[t] >> 16));
      }
    } else {
      const uint2 u = *reinterpret_cast<const uint2*>(reinterpret_cast<const signed char*>(run) +
                                                      static_cast<size_t>(slot) * hd + i);
      const uint32_t w[2] = {u.x, u.y};
#pragma unroll
      for (int t = 0; t < 8; ++t) k[t] = static_cast<float>(static_cast<signed char>((w[t / 4] >> (8 * (t % 4))) & 0xFF));
    }
#pragma unroll
    for (int j = 0; j < kAttnMaxGroup; ++j) {
      if (j < nq) {
#pragma unroll
        for (int t = 0; t < 8; ++t) s[j] = fmaf(q[j][i + t], k[t], s[j]);
      }
    }
  }
  if (type == 2) {
#pragma unroll
    for (int j = 0; j < kAttnMaxGroup; ++j) s[j] *= d;
  }
}

__device__ __forceinline__ float ValueAt(const unsigned char* run, int slot, int i, int hd, int type) {
  if (type == 0) return reinterpret_cast<const float*>(run)[static_cast<size_t>(slot) * hd + i];
  if (type == 1) return __half2float(reinterpret_cast<const __half*>(run)[static_cast<size_t>(slot) * hd + i]);
  const float d = __half2float(reinterpret_cast<const __half*>(run + static_cast<size_t>(kPageTokens) * hd)[slot]);
  return static_cast<float>(reinterpret_cast<const signed char*>(run)[static_cast<size_t>(slot) * hd + i]) * d;
}

// Block (row, KV head, part): the query heads of one KV head (at most
// kAttnMaxGroup of them: `part` picks which) against that KV head's keys and
// values, so each key and value is read once for all of them. Each warp takes
// 32-position tiles in turn, a lane per position for the scores, then a lane
// per output value for the weighted values, with an online softmax per query
// head (Milakov & Gimelshein 2018); the warps are combined at the end
// (Flash-Decoding's split over the keys).
__global__ void __launch_bounds__(kAttnWarps * kWarp)
    AttentionKernel(KvLayout kv, const float* __restrict__ q, int q_stride, float* __restrict__ out, int out_stride,
                    const AttnRow* __restrict__ rows, const int32_t* __restrict__ tables, int group, int parts,
                    float scale) {
  __shared__ float qs[kAttnMaxGroup][kMaxHeadDim];
  __shared__ float warp_m[kAttnWarps][kAttnMaxGroup];
  __shared__ float warp_l[kAttnWarps][kAttnMaxGroup];
  __shared__ float warp_acc[kAttnWarps][kAttnMaxGroup][kMaxHeadDim];
  const AttnRow r = rows[blockIdx.x];
  const int g = blockIdx.y / parts;
  const int part = blockIdx.y % parts;
  const int h0 = g * group + part * kAttnMaxGroup;  // the block's first query head
  const int nq = min(kAttnMaxGroup, group - part * kAttnMaxGroup);
  const int hd = kv.head_dim;
  const int lane = threadIdx.x % kWarp;
  const int warp = threadIdx.x / kWarp;
  const float* qrow = q + static_cast<size_t>(r.row) * q_stride + static_cast<size_t>(h0) * hd;
  for (int i = threadIdx.x; i < nq * hd; i += blockDim.x) qs[i / hd][i % hd] = qrow[i];
  __syncthreads();

  const int n = r.pos + 1;
  const int32_t* table = tables + r.table;
  float m[kAttnMaxGroup];
  float l[kAttnMaxGroup];
  float acc[kAttnMaxGroup][kAttnDims];
#pragma unroll
  for (int j = 0; j < kAttnMaxGroup; ++j) {
    m[j] = -FLT_MAX;
    l[j] = 0.0f;
#pragma unroll
    for (int i = 0; i < kAttnDims; ++i) acc[j][i] = 0.0f;
  }
  for (int tile = warp; tile * kWarp < n; tile += kAttnWarps) {
    const int pos = tile * kWarp + lane;
    const bool valid = pos < n;
    // A 32-position tile lies in one page (kPageTokens is a multiple of 32).
    const int32_t page = table[(tile * kWarp) / kPageTokens];
    const int slot = pos % kPageTokens;
    float p[kAttnMaxGroup] = {};
    if (valid) KeyDots(qs, nq, Run(kv, page, 0, g), slot, hd, kv.type, p);
#pragma unroll
    for (int j = 0; j < kAttnMaxGroup; ++j) {
      if (j < nq) {  // the same for the whole warp
        const float sc = valid ? p[j] * scale : -FLT_MAX;
        const float new_m = fmaxf(m[j], WarpMax(sc));
        p[j] = valid ? expf(sc - new_m) : 0.0f;
        const float corr = expf(m[j] - new_m);
        l[j] = l[j] * corr + WarpSum(p[j]);
#pragma unroll
        for (int i = 0; i < kAttnDims; ++i) acc[j][i] *= corr;
        m[j] = new_m;
      }
    }
    const unsigned char* vrun = Run(kv, page, 1, g);
    const int count = min(kWarp, n - tile * kWarp);
    for (int t = 0; t < count; ++t) {
      float pt[kAttnMaxGroup];
#pragma unroll
      for (int j = 0; j < kAttnMaxGroup; ++j) pt[j] = __shfl_sync(0xffffffffu, p[j], t);
      const int st = (tile * kWarp + t) % kPageTokens;
#pragma unroll
      for (int i = 0; i < kAttnDims; ++i) {
        const int dim = lane + i * kWarp;
        if (dim < hd) {
          const float v = ValueAt(vrun, st, dim, hd, kv.type);
#pragma unroll
          for (int j = 0; j < kAttnMaxGroup; ++j) {
            if (j < nq) acc[j][i] = fmaf(pt[j], v, acc[j][i]);
          }
        }
      }
    }
  }
  if (lane == 0) {
#pragma unroll
    for (int j = 0; j < kAttnMaxGroup; ++j) {
      warp_m[warp][j] = m[j];
      warp_l[warp][j] = l[j];
    }
  }
#pragma unroll
  for (int j = 0; j < kAttnMaxGroup; ++j) {
    if (j < nq) {
#pragma unroll
      for (int i = 0; i < kAttnDims; ++i) {
        const int dim = lane + i * kWarp;
        if (dim < hd) warp_acc[warp][j][dim] = acc[j][i];
      }
    }
  }
  __syncthreads();
  float* orow = out + static_cast<size_t>(r.row) * out_stride + static_cast<size_t>(h0) * hd;
  for (int idx = threadIdx.x; idx < nq * hd; idx += blockDim.x) {
    const int j = idx / hd;
    const int i = idx % hd;
    float mm = -FLT_MAX;
#pragma unroll
    for (int w = 0; w < kAttnWarps; ++w) mm = fmaxf(mm, warp_m[w][j]);
    float sum = 0.0f;
    float v = 0.0f;
#pragma unroll
    for (int w = 0; w < kAttnWarps; ++w) {
      const float f = warp_l[w][j] > 0.0f ? expf(warp_m[w][j] - mm) : 0.0f;
      sum += warp_l[w][j] * f;
      v += warp_acc[w][j][i] * f;
    }
    orow[idx] = v / sum;
  }
}

}  // namespace

cudaError_t CheckKernelImage() {
  cudaFuncAttributes attr;
  return cudaFuncGetAttributes(&attr, AttentionKernel);
}

void MatVec(const MatVecArgs& a, cudaStream_t stream) {
  TOLLGATE_FOR_TYPE(a.type, MatVecTyped<T>(a, stream))
}

void DequantToHalf(WType type, const void* w, size_t row_bytes, int first_row, int rows, int cols, void* out,
                   cudaStream_t stream) {
  const int grid = GridFor(static_cast<int64_t>(rows) * (cols / 8), 256);
  TOLLGATE_FOR_TYPE(type, (DequantHalfKernel<T><<<grid, 256, 0, stream>>>(static_cast<const unsigned char*>(w),
                                                                              row_bytes, first_row, rows, cols,
                                                                              static_cast<__half*>(out))))
}

void GetRows(WType type, const void* w, size_t row_bytes, const int32_t* ids, int n, int cols, float* out,
             int out_stride, cudaStream_t stream) {
  const int grid = GridFor(static_cast<int64_t>(n) * (cols / 8), 256);
  TOLLGATE_FOR_TYPE(type, (GetRowsKernel<T><<<grid, 256, 0, stream>>>(static_cast<const unsigned char*>(w), row_bytes,
                                                                          ids, n, cols, out, out_stride)))
}

void ToHalf(const float* x, int x_stride, int rows, int cols, bool bf16, void* out, cudaStream_t stream) {
  ToHalfKernel<<<GridFor(static_cast<int64_t>(rows) * cols, 256), 256, 0, stream>>>(x, x_stride, rows, cols, bf16,
                                                                                    out);
}

void RmsNorm(const float* x, int x_stride, const float* w, int rows, int cols, float eps, float* out, int out_stride,
             cudaStream_t stream) {
  RmsNormKernel<<<rows, kNormThreads, 0, stream>>>(x, x_stride, w, cols, eps, out, out_stride);
}

void AddBias(float* x, int x_stride, int rows, int cols, const float* b, cudaStream_t stream) {
  AddBiasKernel<<<GridFor(static_cast<int64_t>(rows) * cols, 256), 256, 0, stream>>>(x, x_stride, rows, cols, b);
}

void Add(float* x, int x_stride, const float* y, int y_stride, int rows, int cols, cudaStream_t stream) {
  AddKernel<<<GridFor(static_cast<int64_t>(rows) * cols, 256), 256, 0, stream>>>(x, x_stride, y, y_stride, rows, cols);
}

void SwiGlu(const float* g, int g_stride, const float* u, int u_stride, float* out, int out_stride, int rows, int cols,
            cudaStream_t stream) {
  SwiGluKernel<<<GridFor(static_cast<int64_t>(rows) * cols, 256), 256, 0, stream>>>(g, g_stride, u, u_stride, out,
                                                                                    out_stride, rows, cols);
}

void Rope(float* x, int x_stride, int rows, int heads, int head_dim, const float* cos_sin, int dims, bool neox,
          cudaStream_t stream) {
  RopeKernel<<<GridFor(static_cast<int64_t>(rows) * heads * (dims / 2), 256), 256, 0, stream>>>(
      x, x_stride, rows, heads, head_dim, cos_sin, dims, neox);
}

void KvStore(const KvLayout& kv, const float* k, int k_stride, const float* v, int v_stride, const AttnRow* rows,
             int n_rows, const int32_t* tables, cudaStream_t stream) {
  const int warps = n_rows * kv.kv_heads * 2;
  constexpr int kWarpsPerBlock = 4;
  KvStoreKernel<<<(warps + kWarpsPerBlock - 1) / kWarpsPerBlock, kWarpsPerBlock * kWarp, 0, stream>>>(
      kv, k, k_stride, v, v_stride, rows, n_rows, tables);
}

void Attention(const KvLayout& kv, const float* q, int q_stride, float* out, int out_stride, const AttnRow* rows,
               int n_rows, const int32_t* tables, int heads, int group, float scale, cudaStream_t stream) {
  const int parts = (group + kAttnMaxGroup - 1) / kAttnMaxGroup;
  AttentionKernel<<<dim3(n_rows, (heads / group) * parts), kAttnWarps * kWarp, 0, stream>>>(
      kv, q, q_stride, out, out_stride, rows, tables, group, parts, scale);
}

void DequantRowOnHost(WType type, const void* row, int cols, float* out) {
  for (int e = 0; e < cols; e += 8) {
    TOLLGATE_FOR_TYPE(type, Load8<T>(static_cast<const unsigned char*>(row), e, out + e))
  }
}

}  // namespace tollgate::local_backend::cuda
