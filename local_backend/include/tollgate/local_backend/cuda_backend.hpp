// The CUDA compute backend (backend.hpp) for NVIDIA GPUs, built only with
// -DENABLE_CUDA=ON (nvcc, the CUDA runtime and cuBLAS); without it the same
// functions exist and say "built without CUDA", so callers need no #ifdef.
//
// What runs where (cuda_backend.cpp, cuda_kernels.cu):
//   - Weights are uploaded once, in their GGUF type (F32, F16, BF16, Q8_0,
//     Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K; block layouts of ggml's
//     ggml-common.h, as quant.hpp), and never converted in place.
//   - MatMul with at most kCudaMatVecMaxTokens activation rows (decode):
//     fused dequantize-and-multiply matrix-vector kernels, each weight read
//     once for every row (after llama.cpp's mmvq). More rows (prefill,
//     large decode batches): tensor-core GEMM through cuBLAS
//     (cublasGemmEx, FP32 accumulate) on F16/BF16 weights as they are and on
//     quantized weights dequantized to F16 in row chunks; activations are
//     converted to F16/BF16 for it (as llama.cpp's cuBLAS path).
//   - RMSNorm, RoPE, SwiGLU, biases, residual adds, and attention over the
//     paged KV cache (F32, F16 or 8-bit, the CPU backend's page layout) on
//     the GPU; ReadRows copies only the rows asked for (the logits).
//   - The KV pool takes its whole budget's memory at CreateKvPool (Grow only
//     hands pages out), so that running out of device memory is a start-up
//     error, never a failure mid-call.
//   - Host data an op reads (token ids, RoPE tables, page tables) goes up
//     through a pinned staging buffer on the backend's one stream. Ops are
//     recorded and launched at ReadRows, which waits for the device; a step
//     that repeats the previous step's launches (decode of an unchanged
//     batch) runs as a CUDA graph, captured once and replayed.
//     TOLLGATE_CUDA_GRAPHS=0 (read at CreateCudaBackend) launches each op at
//     once instead.
//
// Memory: every device allocation (weights, activations, scratch, KV pool)
// counts against CudaBackendOptions::memory_budget_bytes; one that would pass
// it fails with kResourceExhausted naming what it was for, at load time.
//
// Thread-safety: as backend.hpp (ops from one thread at a time; any thread may
// be that thread, the backend selects its device on it).
#pragma once

#include "tollgate/core/error.hpp"
#include "tollgate/local_backend/backend.hpp"

#include <cstdint>
#include <memory>
#include <string>

namespace tollgate::local_backend {

// MatMul takes the matrix-vector kernels up to this many activation rows and
// cuBLAS GEMM beyond.
constexpr int kCudaMatVecMaxTokens = 8;

// What ProbeCudaDevice found.
struct CudaDeviceStatus {
  bool usable = false;
  // Why not, when !usable: "this build has no CUDA backend (...)", "no NVIDIA
  // driver (...)", "no CUDA device", "device 1 does not exist (1 device)",
  // "compute capability 5.2 is below 7.0", with the CUDA runtime's words.
  std::string reason;
  int device = 0;
  std::string name;  // e.g. "NVIDIA H200"
  int compute_major = 0;
  int compute_minor = 0;
  int64_t total_bytes = 0;  // device memory, bytes
  int64_t free_bytes = 0;   // free now, bytes
  int driver_version = 0;   // e.g. 13000 for CUDA 13.0 (cudaDriverGetVersion)
  // One line for logs: "NVIDIA H200 (cuda:0, sm_90, 140.4 GiB free of 143.8 GiB)"
  // or "no CUDA device: <reason>".
  std::string Describe() const;
};

// True when this build has the CUDA backend (-DENABLE_CUDA=ON).
bool CudaBuilt();

// Looks for CUDA device `device` (its index, as CUDA_VISIBLE_DEVICES leaves
// them). Never fails: a missing build, driver or device is a status with a
// reason. Cheap after the first call (the runtime is initialised once).
CudaDeviceStatus ProbeCudaDevice(int device = 0);

struct CudaBackendOptions {
  int device = 0;
  // Device memory the backend may take for weights, KV cache and scratch,
  // bytes; 0 = the device's free memory at creation less 1 GiB of headroom.
  int64_t memory_budget_bytes = 0;
};

// A backend on `options.device`. Errors: kUnavailable with the probe's reason
// when there is no usable device (or no CUDA in this build); kInvalidArgument
// for a negative device or budget; kResourceExhausted when the budget is more
// than the device has free.
Result<std::shared_ptr<Backend>> CreateCudaBackend(const CudaBackendOptions& options = {});

}  // namespace tollgate::local_backend
