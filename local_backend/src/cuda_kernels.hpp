// Launchers for the CUDA backend's kernels (cuda_kernels.cu), called by
// cuda_backend.cpp. Plain C++: the host compiler includes this, nvcc compiles
// the kernels. Every launcher queues work on `stream` and returns at once;
// pointers are device memory unless stated; float32 activations are row-major
// with a row stride in floats; nothing here allocates or synchronises.
//
// Weight formats are ggml's block layouts (ggml-common.h; quant.hpp has the
// same structs and the CPU dequantizers these kernels follow value for
// value). Rows of a weight are `row_bytes` apart.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

namespace tollgate::local_backend::cuda {

// The weight types the kernels read.
enum class WType : int { kF32, kF16, kBF16, kQ8_0, kQ4_0, kQ4_1, kQ5_0, kQ5_1, kQ4_K, kQ5_K, kQ6_K };

// The kernels' own dequantization (the Load8 that every weight kernel uses)
// run on the host, for tests against quant.cpp: row (cols values, a
// multiple of 8, in `type`'s layout, 8-byte aligned) to float32 `out`.
void DequantRowOnHost(WType type, const void* row, int cols, float* out);

// cudaSuccess when this build's kernels can run on the current device
// (cudaErrorNoKernelImageForDevice when it was built for other architectures).
cudaError_t CheckKernelImage();

// out[t][r] (=|+=) sum_c W[r][c] * x[t][c] for t < tokens (1..8), r < rows:
// one warp per row, each weight byte read once for all tokens.
struct MatVecArgs {
  WType type = WType::kF32;
  const void* w = nullptr;
  size_t row_bytes = 0;
  int rows = 0;
  int cols = 0;  // a multiple of the type's block (32 or 256) and of 8
  const float* x = nullptr;
  int x_stride = 0;
  int tokens = 0;
  float* out = nullptr;
  int out_stride = 0;
  bool accumulate = false;
};
void MatVec(const MatVecArgs& a, cudaStream_t stream);

// Rows [first_row, first_row + rows) of W dequantized to IEEE half, dense
// (rows x cols) into `out`.
void DequantToHalf(WType type, const void* w, size_t row_bytes, int first_row, int rows, int cols, void* out,
                   cudaStream_t stream);

// out row i = row ids[i] of W dequantized to float32 (ids in device memory).
void GetRows(WType type, const void* w, size_t row_bytes, const int32_t* ids, int n, int cols, float* out,
             int out_stride, cudaStream_t stream);

// Dense rows x cols IEEE half (bf16 = false) or bfloat16 copy of x.
void ToHalf(const float* x, int x_stride, int rows, int cols, bool bf16, void* out, cudaStream_t stream);

// out = x / sqrt(mean(x^2) + eps) (.) w per row; w may be null; out may be x.
void RmsNorm(const float* x, int x_stride, const float* w, int rows, int cols, float eps, float* out, int out_stride,
             cudaStream_t stream);

// x[r][c] += b[c].
void AddBias(float* x, int x_stride, int rows, int cols, const float* b, cudaStream_t stream);
// x += y.
void Add(float* x, int x_stride, const float* y, int y_stride, int rows, int cols, cudaStream_t stream);
// out = SiLU(g) * u.
void SwiGlu(const float* g, int g_stride, const float* u, int u_stride, float* out, int out_stride, int rows, int cols,
            cudaStream_t stream);

// Rotates the first `dims` values of each head in place; cos_sin holds rows x
// dims floats (cos, sin pairs) as backend.hpp's RopeTable; neox pairs (i, i +
// dims / 2), otherwise (2i, 2i + 1).
void Rope(float* x, int x_stride, int rows, int heads, int head_dim, const float* cos_sin, int dims, bool neox,
          cudaStream_t stream);

// The KV pool: pages of `page_bytes`, each [layer][K, V][kv_head] runs of
// kKvPageTokens rows (cuda_backend.cpp's CudaKvPool; the CPU pool's layout).
struct KvLayout {
  unsigned char* base = nullptr;
  size_t page_bytes = 0;
  size_t run_bytes = 0;  // kKvPageTokens * row bytes
  int layer = 0;
  int kv_heads = 0;
  int head_dim = 0;
  int type = 0;  // 0 F32, 1 F16, 2 Q8 (int8 rows, then one half scale per row)
};

// One query row of the batch: its activation row, position, and the offset
// of its sequence's page table in `tables`.
struct AttnRow {
  int32_t row;
  int32_t pos;
  int32_t table;
};

// Stores k and v of every row in `rows` at its position.
void KvStore(const KvLayout& kv, const float* k, int k_stride, const float* v, int v_stride, const AttnRow* rows,
             int n_rows, const int32_t* tables, cudaStream_t stream);

// out[row][h] = softmax(q[row][h] . K[0..pos] * scale) V for every row and
// head h (KV head h / group), streaming positions with an online softmax
// (Milakov & Gimelshein 2018; FlashAttention's rescaling, Dao et al. 2022).
void Attention(const KvLayout& kv, const float* q, int q_stride, float* out, int out_stride, const AttnRow* rows,
               int n_rows, const int32_t* tables, int heads, int group, float scale, cudaStream_t stream);

}  // namespace tollgate::local_backend::cuda
