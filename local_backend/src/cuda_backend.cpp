// The CUDA implementation of backend.hpp (cuda_backend.hpp says what runs
// where). Host side: memory, the stream, cuBLAS (opened with dlopen), and the
// staging of host data; the kernels are in cuda_kernels.cu.
#include "tollgate/local_backend/cuda_backend.hpp"

#include "cuda_kernels.hpp"
#include "mapped_pages.hpp"
#include "tollgate/local_backend/quant.hpp"

#include <cublas_api.h>
#include <cuda_runtime_api.h>
#include <dlfcn.h>

#include <algorithm>
#include <atomic>
#include <bit>
#include <functional>
#include <cassert>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <new>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

namespace tollgate::local_backend {
namespace {

using cuda::WType;

constexpr int64_t kMiB = int64_t{1} << 20;
// Left free on the device when the budget is "whatever is free" (the CUDA
// context, cuBLAS's workspace and other processes need some).
constexpr int64_t kDefaultHeadroom = int64_t{1} << 30;
// Quantized weights are dequantized for GEMM in chunks of at most this many
// values: 16 MiB of F16, small enough to stay in the L2 cache (50-60 MB on
// Hopper) between the dequantization writing it and cuBLAS reading it, so the
// F16 copy costs no HBM traffic beyond the quantized weight itself.
constexpr int64_t kDequantChunkValues = int64_t{8} << 20;
// Host data staged per ReadRows (token ids, RoPE tables, page tables).
constexpr size_t kStagingBytes = size_t{16} << 20;
constexpr size_t kCublasWorkspace = size_t{32} << 20;

std::string Mib(int64_t bytes) { return std::to_string((bytes + kMiB - 1) / kMiB) + " MiB"; }

// A CUDA runtime failure in an operation leaves the device in an unknown state
// (the error is sticky for the context): report it and stop the process.
void Check(cudaError_t e, const char* what) {
  if (e == cudaSuccess) return;
  std::fprintf(stderr, "tollgate: CUDA error in %s: %s (%s)\n", what, cudaGetErrorName(e), cudaGetErrorString(e));
  std::abort();
}

// ------------------------------------------------------------ cuBLAS, by dlopen

// The few cuBLAS entry points the backend calls (cublas_api.h, CUDA 12/13 ABI).
struct Cublas {
  using CreateFn = cublasStatus_t (*)(cublasHandle_t*);
  using DestroyFn = cublasStatus_t (*)(cublasHandle_t);
  using SetStreamFn = cublasStatus_t (*)(cublasHandle_t, cudaStream_t);
  using SetWorkspaceFn = cublasStatus_t (*)(cublasHandle_t, void*, size_t);
  using GemmExFn = cublasStatus_t (*)(cublasHandle_t, cublasOperation_t, cublasOperation_t, int, int, int,
                                      const void*, const void*, cudaDataType, int, const void*, cudaDataType, int,
                                      const void*, void*, cudaDataType, int, cublasComputeType_t, cublasGemmAlgo_t);
  CreateFn create = nullptr;
  DestroyFn destroy = nullptr;
  SetStreamFn set_stream = nullptr;
  SetWorkspaceFn set_workspace = nullptr;
  GemmExFn gemm_ex = nullptr;
  std::string error;  // why it could not be opened; empty when it was
};

const Cublas& LoadCublas() {
  static const Cublas lib = [] {
    Cublas c;
    void* h = nullptr;
    std::string tried;
    for (const char* name : {"libcublas.so.13", "libcublas.so.12", "libcublas.so"}) {
      h = dlopen(name, RTLD_NOW | RTLD_LOCAL);
      if (h != nullptr) break;
      const char* e = dlerror();
      if (tried.empty()) tried = e != nullptr ? e : name;
    }
    if (h == nullptr) {
      c.error = "cuBLAS not found (" + tried + "); add its directory (e.g. /usr/local/cuda/lib64) to LD_LIBRARY_PATH";
      return c;
    }
    c.create = reinterpret_cast<Cublas::CreateFn>(dlsym(h, "cublasCreate_v2"));
    c.destroy = reinterpret_cast<Cublas::DestroyFn>(dlsym(h, "cublasDestroy_v2"));
    c.set_stream = reinterpret_cast<Cublas::SetStreamFn>(dlsym(h, "cublasSetStream_v2"));
    c.set_workspace = reinterpret_cast<Cublas::SetWorkspaceFn>(dlsym(h, "cublasSetWorkspace_v2"));
    c.gemm_ex = reinterpret_cast<Cublas::GemmExFn>(dlsym(h, "cublasGemmEx"));
    if (!c.create || !c.destroy || !c.set_stream || !c.set_workspace || !c.gemm_ex) {
      c.error = "cuBLAS lacks cublasGemmEx, cublasCreate_v2 or cublasSetWorkspace_v2";
    }
    return c;
  }();
  return lib;
}

// Selects `device` on the calling thread (ops may come from any one thread).
void UseDevice(int device) {
  thread_local int current = -1;
  if (current != device) {
    Check(cudaSetDevice(device), "cudaSetDevice");
    current = device;
  }
}

bool WeightType(GgmlType t, WType* out) {
  switch (t) {
    case GgmlType::kF32: *out = WType::kF32; return true;
    case GgmlType::kF16: *out = WType::kF16; return true;
    case GgmlType::kBF16: *out = WType::kBF16; return true;
    case GgmlType::kQ8_0: *out = WType::kQ8_0; return true;
    case GgmlType::kQ4_0: *out = WType::kQ4_0; return true;
    case GgmlType::kQ4_1: *out = WType::kQ4_1; return true;
    case GgmlType::kQ5_0: *out = WType::kQ5_0; return true;
    case GgmlType::kQ5_1: *out = WType::kQ5_1; return true;
    case GgmlType::kQ4_K: *out = WType::kQ4_K; return true;
    case GgmlType::kQ5_K: *out = WType::kQ5_K; return true;
    case GgmlType::kQ6_K: *out = WType::kQ6_K; return true;
    default: return false;
  }
}

// ------------------------------------------------------------ device memory

// Device memory counted against the backend's budget; freed with the object.
class DeviceMemory {
 public:
  DeviceMemory() = default;
  DeviceMemory(void* p, size_t bytes, std::shared_ptr<std::atomic<int64_t>> used)
      : p_(p), bytes_(bytes), used_(std::move(used)) {}
  DeviceMemory(DeviceMemory&& o) noexcept { *this = std::move(o); }
  DeviceMemory& operator=(DeviceMemory&& o) noexcept {
    if (this != &o) {
      Reset();
      p_ = std::exchange(o.p_, nullptr);
      bytes_ = std::exchange(o.bytes_, 0);
      used_ = std::move(o.used_);
    }
    return *this;
  }
  ~DeviceMemory() { Reset(); }
  void* get() const { return p_; }
  size_t bytes() const { return bytes_; }

 private:
  void Reset() {
    if (p_ != nullptr) {
      cudaFree(p_);
      *used_ -= static_cast<int64_t>(bytes_);
    }
    p_ = nullptr;
  }
  void* p_ = nullptr;
  size_t bytes_ = 0;
  std::shared_ptr<std::atomic<int64_t>> used_;  // the backend's count; may outlive it
};

class CudaWeight final : public BackendWeight {
 public:
  CudaWeight(GgmlType type, WType wtype, int rows, int cols, size_t row_bytes, DeviceMemory mem)
      : BackendWeight(type, rows, cols, mem.bytes()), wtype_(wtype), row_bytes_(row_bytes), mem_(std::move(mem)) {}
  WType wtype() const { return wtype_; }
  size_t row_bytes() const { return row_bytes_; }
  const void* data() const { return mem_.get(); }

 private:
  WType wtype_;
  size_t row_bytes_;
  DeviceMemory mem_;
};

class CudaVector final : public BackendVector {
 public:
  CudaVector(int size, DeviceMemory mem) : BackendVector(size), mem_(std::move(mem)) {}
  const float* data() const { return static_cast<const float*>(mem_.get()); }

 private:
  DeviceMemory mem_;
};

class CudaActivations final : public ActivationBuffer {
 public:
  CudaActivations(DeviceMemory mem, size_t floats) : mem_(std::move(mem)), floats_(floats) {}
  ActTensor Tensor(size_t offset, int rows, int cols) override {
    assert(offset + static_cast<size_t>(rows) * static_cast<size_t>(cols) <= floats_);
    return {static_cast<float*>(mem_.get()) + offset, rows, cols, cols};
  }

 private:
  DeviceMemory mem_;
  size_t floats_;
};

// All max_pages pages in one allocation made at creation (cuda_backend.hpp);
// the CPU pool's page layout (cpu_backend.cpp CpuKvPool).
class CudaKvPool final : public KvPool {
 public:
  CudaKvPool(const KvPoolShape& shape, DeviceMemory mem) : KvPool(shape), mem_(std::move(mem)) {}
  // The memory is all there, but pages count as allocated only once Grow has
  // given them out: PagedKvCache takes new page ids from allocated_pages() and
  // treats a pool at max_pages as full (it would never hand out a page).
  int allocated_pages() const override { return allocated_; }
  Result<void> Grow(int pages) override {
    if (pages > shape().max_pages) {
      return InvalidArgument("KV pool of " + std::to_string(shape().max_pages) + " pages cannot grow to " +
                             std::to_string(pages));
    }
    allocated_ = std::max(allocated_, pages);
    return {};
  }
  cuda::KvLayout Layout(int layer) const {
    cuda::KvLayout l;
    l.base = static_cast<unsigned char*>(mem_.get());
    l.page_bytes = page_bytes();
    l.run_bytes = static_cast<size_t>(kKvPageTokens) * KvRowBytes(shape().type, shape().head_dim);
    l.layer = layer;
    l.kv_heads = shape().kv_heads;
    l.head_dim = shape().head_dim;
    l.type = shape().type == KvType::kF32 ? 0 : (shape().type == KvType::kF16 ? 1 : 2);
    return l;
  }

 private:
  DeviceMemory mem_;
  int allocated_ = 0;
};

class CudaBackend final : public Backend {
 public:
  CudaBackend(int device, int64_t budget, std::string device_name, const Cublas& cublas)
      : device_(device), budget_(budget), name_("cuda:" + std::to_string(device) + " " + device_name), cublas_(cublas) {}

  ~CudaBackend() override {
    UseDevice(device_);
    if (stream_ != nullptr) {
      // Recorded operations are dropped, not run: nothing can read their
      // results any more, and the weights or activations they name may
      // already be freed (a model's weights can go before its backend).
      step_ops_.clear();
      cudaStreamSynchronize(stream_);
    }
    for (CachedGraph& g : graphs_) cudaGraphExecDestroy(g.exec);
    if (handle_ != nullptr) cublas_.destroy(handle_);
    if (staging_host_ != nullptr) cudaFreeHost(staging_host_);
    if (readback_ != nullptr) cudaFreeHost(readback_);
    if (stream_ != nullptr) cudaStreamDestroy(stream_);
  }

  // Stream, cuBLAS handle and staging buffers. Errors: kUnavailable, kResourceExhausted.
  Result<void> Init() {
    UseDevice(device_);
    if (cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking) != cudaSuccess) {
      return Error{ErrorCode::kUnavailable, "cannot create a CUDA stream on " + name_};
    }
    if (cublas_.create(&handle_) != CUBLAS_STATUS_SUCCESS) {
      handle_ = nullptr;
      return Error{ErrorCode::kUnavailable, "cannot initialise cuBLAS on " + name_};
    }
    cublas_.set_stream(handle_, stream_);
    // A workspace of our own, so that cuBLAS allocates nothing while a step
    // is captured into a graph (cuBLAS's guidance for stream capture).
    auto ws = Allocate(kCublasWorkspace, "the cuBLAS workspace");
    if (!ws) return ws.error();
    cublas_workspace_ = std::move(*ws);
    cublas_.set_workspace(handle_, cublas_workspace_.get(), kCublasWorkspace);
    if (const char* g = std::getenv("TOLLGATE_CUDA_GRAPHS"); g != nullptr && std::string_view(g) == "0") {
      graphs_enabled_ = false;
    }
    if (cudaMallocHost(reinterpret_cast<void**>(&staging_host_), kStagingBytes) != cudaSuccess) {
      staging_host_ = nullptr;
      return Error{ErrorCode::kResourceExhausted, "cannot allocate pinned host memory for CUDA staging"};
    }
    auto dev = Allocate(kStagingBytes, "staging");
    if (!dev) return dev.error();
    staging_dev_ = std::move(*dev);
    return {};
  }

  std::string Name() const override { return name_; }

  bool SupportsWeightType(GgmlType type) const override {
    WType w;
    return WeightType(type, &w);
  }

  Result<std::unique_ptr<BackendWeight>> PrepareWeight(const WeightData& d) override {
    UseDevice(device_);
    const std::string name(d.name);
    WType wtype;
    if (!WeightType(d.type, &wtype)) {
      return InvalidArgument("tensor " + name + " has type " + GgmlTypeName(d.type) +
                             ", which the CUDA engine cannot compute (supported: F32, F16, BF16, Q8_0, Q4_0, Q4_1, "
                             "Q5_0, Q5_1, Q4_K, Q5_K, Q6_K)");
    }
    const int64_t block = QuantBlockSize(d.type);
    if (d.rows <= 0 || d.cols <= 0 || d.cols % block != 0 || d.cols % 8 != 0) {
      return InvalidArgument("tensor " + name + " has rows of " + std::to_string(d.cols) +
                             " values, not a multiple of 8 and of " + GgmlTypeName(d.type) + "'s block of " +
                             std::to_string(block));
    }
    const size_t row_bytes = static_cast<size_t>(RowBytes(d.type, d.cols));
    if (d.bytes.size() != row_bytes * static_cast<size_t>(d.rows)) {
      return InvalidArgument("tensor " + name + " has " + std::to_string(d.bytes.size()) + " bytes, expected " +
                             std::to_string(row_bytes * static_cast<size_t>(d.rows)));
    }
    // GEMM on quantized weights dequantizes row chunks to F16 scratch: size
    // it now, at load time.
    if (wtype != WType::kF16 && wtype != WType::kBF16 && wtype != WType::kF32) {
      const int64_t values = std::min<int64_t>(static_cast<int64_t>(d.rows) * d.cols,
                                               std::max<int64_t>(kDequantChunkValues, d.cols));
      if (auto r = EnsureScratch(dequant_, static_cast<size_t>(values) * 2, "dequantization scratch"); !r) return r.error();
    }
    auto mem = Allocate(d.bytes.size(), "tensor " + name);
    if (!mem) return mem.error();
    if (cudaMemcpy(mem->get(), d.bytes.data(), d.bytes.size(), cudaMemcpyHostToDevice) != cudaSuccess) {
      return Error{ErrorCode::kInternal, "cannot copy tensor " + name + " to " + name_};
    }
    if (d.file_mapped) DropMappedPages(d.bytes);
    return std::unique_ptr<BackendWeight>(new CudaWeight(d.type, wtype, d.rows, d.cols, row_bytes, std::move(*mem)));
  }

  std::unique_ptr<BackendVector> PrepareVector(std::span<const float> values) override {
    UseDevice(device_);
    auto mem = Allocate(values.size_bytes(), "a norm weight or bias");
    if (!mem) throw std::bad_alloc();
    Check(cudaMemcpy(mem->get(), values.data(), values.size_bytes(), cudaMemcpyHostToDevice), "PrepareVector");
    return std::make_unique<CudaVector>(static_cast<int>(values.size()), std::move(*mem));
  }

  // Throws std::bad_alloc beyond the budget (LlamaRunner::Create reports it).
  std::unique_ptr<ActivationBuffer> AllocActivations(size_t floats) override {
    UseDevice(device_);
    auto mem = Allocate(floats * sizeof(float), "activations");
    if (!mem) throw std::bad_alloc();
    // GEMM inputs converted to F16/BF16 are at most every activation.
    if (!EnsureScratch(half_x_, floats * 2, "GEMM input scratch")) throw std::bad_alloc();
    return std::make_unique<CudaActivations>(std::move(*mem), floats);
  }

  Result<std::unique_ptr<KvPool>> CreateKvPool(const KvPoolShape& shape) override {
    UseDevice(device_);
    if (shape.layers <= 0 || shape.kv_heads <= 0 || shape.head_dim <= 0 || shape.head_dim % 8 != 0 ||
        shape.head_dim > 256 || shape.max_pages <= 0) {
      return InvalidArgument("bad KV pool shape (head size must be a positive multiple of 8, at most 256)");
    }
    const size_t page_bytes = static_cast<size_t>(shape.layers) * 2 * static_cast<size_t>(shape.kv_heads) *
                              kKvPageTokens * KvRowBytes(shape.type, shape.head_dim);
    const size_t bytes = static_cast<size_t>(shape.max_pages) * page_bytes;
    auto mem = Allocate(bytes, "the KV cache");
    if (!mem) return mem.error();
    return std::unique_ptr<KvPool>(new CudaKvPool(shape, std::move(*mem)));
  }

  void GetRows(const BackendWeight& table, std::span<const int32_t> ids, ActTensor out) override {
    UseDevice(device_);
    const auto& w = static_cast<const CudaWeight&>(table);
    assert(out.rows == static_cast<int>(ids.size()) && out.cols == w.cols());
    const auto* dev_ids = static_cast<const int32_t*>(Stage(ids.data(), ids.size_bytes()));
    Op([=, &w](cudaStream_t st) {
      cuda::GetRows(w.wtype(), w.data(), w.row_bytes(), dev_ids, out.rows, out.cols, out.data, out.stride, st);
    }, 1, w.wtype(), w.data(), w.row_bytes(), dev_ids, out.rows, out.cols, out.data, out.stride);
  }

  void RmsNorm(const ActTensor& x, const BackendVector* weight, float eps, ActTensor out) override {
    UseDevice(device_);
    assert(out.rows == x.rows && out.cols == x.cols && (!weight || weight->size() == x.cols));
    const float* w = weight ? static_cast<const CudaVector*>(weight)->data() : nullptr;
    Op([=](cudaStream_t st) { cuda::RmsNorm(x.data, x.stride, w, x.rows, x.cols, eps, out.data, out.stride, st); }, 2,
       x.data, x.stride, w, x.rows, x.cols, eps, out.data, out.stride);
  }

  void MatMul(const ActTensor& x, std::span<const MatMulTarget> targets) override;

  void AddBias(ActTensor x, const BackendVector& bias) override {
    UseDevice(device_);
    assert(bias.size() == x.cols);
    const float* b = static_cast<const CudaVector&>(bias).data();
    Op([=](cudaStream_t st) { cuda::AddBias(x.data, x.stride, x.rows, x.cols, b, st); }, 3, x.data, x.stride, x.rows,
       x.cols, b);
  }

  void Rope(ActTensor x, int heads, int head_dim, const RopeTable& table, RopeMode mode) override {
    UseDevice(device_);
    assert(x.cols == heads * head_dim && table.dims <= head_dim && table.dims % 2 == 0);
    const auto* cs = static_cast<const float*>(
        Stage(table.cos_sin, static_cast<size_t>(x.rows) * static_cast<size_t>(table.dims) * sizeof(float)));
    const bool neox = mode == RopeMode::kNeox;
    const int dims = table.dims;
    Op([=](cudaStream_t st) { cuda::Rope(x.data, x.stride, x.rows, heads, head_dim, cs, dims, neox, st); }, 4, x.data,
       x.stride, x.rows, heads, head_dim, cs, dims, neox);
  }

  void Attention(int layer, KvPool& pool, const ActTensor& q, const ActTensor& k, const ActTensor& v,
                 std::span<const AttentionSeq> seqs, const AttentionShape& shape, ActTensor out) override;

  void SwiGlu(const ActTensor& gate, const ActTensor& up, ActTensor out) override {
    UseDevice(device_);
    assert(gate.rows == up.rows && gate.cols == up.cols && out.rows == gate.rows && out.cols == gate.cols);
    Op([=](cudaStream_t st) {
      cuda::SwiGlu(gate.data, gate.stride, up.data, up.stride, out.data, out.stride, gate.rows, gate.cols, st);
    }, 5, gate.data, gate.stride, up.data, up.stride, out.data, out.stride, gate.rows, gate.cols);
  }

  void Add(ActTensor x, const ActTensor& y) override {
    UseDevice(device_);
    assert(x.rows == y.rows && x.cols == y.cols);
    Op([=](cudaStream_t st) { cuda::Add(x.data, x.stride, y.data, y.stride, x.rows, x.cols, st); }, 6, x.data,
       x.stride, y.data, y.stride, x.rows, x.cols);
  }

  void ReadRows(const ActTensor& x, std::span<float> out) override {
    UseDevice(device_);
    const size_t row = static_cast<size_t>(x.cols) * sizeof(float);
    const size_t bytes = row * static_cast<size_t>(x.rows);
    assert(out.size() * sizeof(float) >= bytes);
    Flush();
    if (bytes > readback_bytes_) {
      Check(cudaStreamSynchronize(stream_), "ReadRows");
      if (readback_ != nullptr) cudaFreeHost(readback_);
      readback_ = nullptr;
      readback_bytes_ = 0;
      Check(cudaMallocHost(&readback_, bytes), "cudaMallocHost (logits)");
      readback_bytes_ = bytes;
    }
    Check(cudaMemcpy2DAsync(readback_, row, x.data, static_cast<size_t>(x.stride) * sizeof(float), row,
                            static_cast<size_t>(x.rows), cudaMemcpyDeviceToHost, stream_),
          "ReadRows copy");
    Check(cudaStreamSynchronize(stream_), "a queued operation");
    Check(cudaGetLastError(), "a kernel launch");
    std::memcpy(out.data(), readback_, bytes);
    ResetStaging();
  }

 private:
  // --- the step being recorded (CUDA graphs)
  //
  // Operations are recorded, not launched, until ReadRows (or anything else
  // that must wait for the device): each as a closure plus a key of every
  // value it launches with (pointers, shapes, staged offsets). At ReadRows a
  // step whose key equals the previous step's (decode steps of an unchanged
  // batch: the positions and tokens change only in staged data) runs as a
  // CUDA graph, captured the first time and replayed after (after
  // llama.cpp's ggml-cuda graph reuse); any other step runs its closures on
  // the stream as they are. Host data reaches the device through staged
  // copies recorded in the same step, so a replay copies this step's data.
  // TOLLGATE_CUDA_GRAPHS=0 launches every operation at once instead.
  using Launch = std::function<void(cudaStream_t)>;

  template <class T>
  static uint64_t Bits(T v) {
    if constexpr (std::is_pointer_v<T>) {
      return reinterpret_cast<uintptr_t>(v);
    } else if constexpr (std::is_same_v<T, float>) {
      return std::bit_cast<uint32_t>(v);
    } else {
      return static_cast<uint64_t>(v);
    }
  }

  // Records (or, without graphs, runs) `fn`; `code` and `key` must hold
  // everything that makes its launch differ from one step to the next.
  template <class F, class... K>
  void Op(F&& fn, int code, K... key) {
    if (!graphs_enabled_) {
      fn(stream_);
      return;
    }
    step_key_.push_back(static_cast<uint64_t>(code));
    (step_key_.push_back(Bits(key)), ...);
    step_ops_.emplace_back(std::forward<F>(fn));
  }

  // Launches what is recorded, eagerly, and marks the step as not replayable.
  void RunPending() {
    for (Launch& fn : step_ops_) fn(stream_);
    step_ops_.clear();
    step_key_.clear();
    last_key_.clear();
  }

  // Launches the recorded step: as a graph when it repeats the previous one.
  void Flush() {
    if (step_ops_.empty()) return;
    if (step_key_ == last_key_ && LaunchGraph()) {
      step_ops_.clear();
      step_key_.clear();
      return;
    }
    for (Launch& fn : step_ops_) fn(stream_);
    step_ops_.clear();
    last_key_ = std::move(step_key_);
    step_key_.clear();
  }

  // The cached graph for step_key_, captured now if new. False (nothing
  // launched) when capture fails; graphs are then turned off.
  bool LaunchGraph() {
    ++graph_clock_;
    for (CachedGraph& g : graphs_) {
      if (g.key == step_key_) {
        g.used = graph_clock_;
        Check(cudaGraphLaunch(g.exec, stream_), "cudaGraphLaunch");
        return true;
      }
    }
    cudaGraph_t graph = nullptr;
    cudaGraphExec_t exec = nullptr;
    // Relaxed, as llama.cpp's graph capture: a call that the stricter modes
    // forbid while capturing (a lazily loaded module, an allocation inside
    // cuBLAS) would invalidate the capture, and the launches in it (Check,
    // Gemm) abort on that error instead of falling back to eager launches.
    bool ok = cudaStreamBeginCapture(stream_, cudaStreamCaptureModeRelaxed) == cudaSuccess;
    if (ok) {
      for (Launch& fn : step_ops_) fn(stream_);
      ok = cudaStreamEndCapture(stream_, &graph) == cudaSuccess && graph != nullptr;
    }
    ok = ok && cudaGraphInstantiate(&exec, graph, 0) == cudaSuccess;
    if (graph != nullptr) cudaGraphDestroy(graph);
    if (!ok) {
      const cudaError_t e = cudaGetLastError();
      std::fprintf(stderr, "tollgate: CUDA graph capture failed on %s (%s); running without graphs\n", name_.c_str(),
                   cudaGetErrorString(e));
      graphs_enabled_ = false;
      return false;
    }
    if (graphs_.size() == kMaxGraphs) {
      auto oldest = std::min_element(graphs_.begin(), graphs_.end(),
                                     [](const CachedGraph& a, const CachedGraph& b) { return a.used < b.used; });
      cudaGraphExecDestroy(oldest->exec);
      graphs_.erase(oldest);
    }
    graphs_.push_back({step_key_, exec, graph_clock_});
    Check(cudaGraphLaunch(exec, stream_), "cudaGraphLaunch");
    return true;
  }

  // Device memory within the budget. Errors: kResourceExhausted naming `what`.
  Result<DeviceMemory> Allocate(size_t bytes, const std::string& what) {
    bytes = std::max<size_t>(bytes, 256);
    if (*used_ + static_cast<int64_t>(bytes) > budget_) {
      return Error{ErrorCode::kResourceExhausted, "GPU memory budget of " + Mib(budget_) + " on " + name_ +
                                                      " exceeded by " + what + " (" + Mib(static_cast<int64_t>(bytes)) +
                                                      "; " + Mib(*used_) + " already used)"};
    }
    void* p = nullptr;
    if (cudaMalloc(&p, bytes) != cudaSuccess) {
      cudaGetLastError();  // clear the (non-sticky) allocation error
      size_t free_bytes = 0, total = 0;
      cudaMemGetInfo(&free_bytes, &total);
      return Error{ErrorCode::kResourceExhausted, "out of GPU memory on " + name_ + " allocating " +
                                                      Mib(static_cast<int64_t>(bytes)) + " for " + what + " (" +
                                                      Mib(static_cast<int64_t>(free_bytes)) + " free)"};
    }
    *used_ += static_cast<int64_t>(bytes);
    return DeviceMemory(p, bytes, used_);
  }

  Result<void> EnsureScratch(DeviceMemory& m, size_t bytes, const char* what) {
    if (m.bytes() >= bytes) return {};
    if (stream_ != nullptr) {
      RunPending();
      Check(cudaStreamSynchronize(stream_), "scratch growth");
    }
    const size_t old_bytes = m.bytes();
    m = DeviceMemory();
    auto mem = Allocate(bytes, what);
    if (!mem) {
      // Put back a scratch of the old size: the weights and runners already
      // made were sized against it and must keep working after this error.
      if (old_bytes > 0) {
        if (auto back = Allocate(old_bytes, what)) m = std::move(*back);
      }
      return mem.error();
    }
    m = std::move(*mem);
    return {};
  }

  // Copies `bytes` of host data to device memory valid until the next
  // ReadRows, through the pinned staging buffer. Data equal to a recent upload
  // (the same RoPE table or page tables for every layer) is not sent again.
  const void* Stage(const void* data, size_t bytes) {
    for (const StagedItem& s : staged_) {
      if (s.bytes == bytes && std::memcmp(staging_host_ + s.offset, data, bytes) == 0) {
        return static_cast<unsigned char*>(staging_dev_.get()) + s.offset;
      }
    }
    const size_t aligned = (bytes + 255) / 256 * 256;
    if (aligned > kStagingBytes) {
      std::fprintf(stderr, "tollgate: CUDA staging of %zu bytes exceeds the %zu-byte buffer\n", bytes, kStagingBytes);
      std::abort();
    }
    if (staging_used_ + aligned > kStagingBytes) {
      // Full: what is recorded must run before its staged data is reused.
      RunPending();
      Check(cudaStreamSynchronize(stream_), "staging");
      ResetStaging();
    }
    const size_t offset = staging_used_;
    std::memcpy(staging_host_ + offset, data, bytes);
    void* dev = static_cast<unsigned char*>(staging_dev_.get()) + offset;
    const unsigned char* host = staging_host_ + offset;
    Op([=](cudaStream_t st) {
      Check(cudaMemcpyAsync(dev, host, bytes, cudaMemcpyHostToDevice, st), "staging copy");
    }, 7, dev, bytes);
    staging_used_ += aligned;
    if (staged_.size() == kRecentStaged) staged_.erase(staged_.begin());
    staged_.push_back({offset, bytes});
    return dev;
  }

  // Only after the stream has been synchronised.
  void ResetStaging() {
    staging_used_ = 0;
    staged_.clear();
  }

  // t.out (=|+=) w x for `tokens` rows of x (`x_type`, rows ldx apart).
  void Gemm(const CudaWeight& w, const void* x, cudaDataType x_type, int ldx, int tokens, const MatMulTarget& t,
            cudaStream_t stream);

  struct StagedItem {
    size_t offset;
    size_t bytes;
  };
  static constexpr size_t kRecentStaged = 4;
  struct CachedGraph {
    std::vector<uint64_t> key;
    cudaGraphExec_t exec;
    uint64_t used;
  };
  // Graphs kept: one per batch composition in recent use (a decode step's
  // graph depends on how many sequences and rows it has).
  static constexpr size_t kMaxGraphs = 16;

  const int device_;
  const int64_t budget_;
  std::shared_ptr<std::atomic<int64_t>> used_ = std::make_shared<std::atomic<int64_t>>(0);
  const std::string name_;
  const Cublas& cublas_;
  cudaStream_t stream_ = nullptr;
  cublasHandle_t handle_ = nullptr;
  unsigned char* staging_host_ = nullptr;  // pinned
  DeviceMemory staging_dev_;
  size_t staging_used_ = 0;
  std::vector<StagedItem> staged_;
  void* readback_ = nullptr;  // pinned
  size_t readback_bytes_ = 0;
  DeviceMemory dequant_;  // F16 rows of a quantized weight for GEMM
  DeviceMemory half_x_;   // x as F16 or BF16 for GEMM
  std::vector<int32_t> attn_meta_;  // Attention's rows and page tables, staged together
  bool graphs_enabled_ = true;
  std::vector<Launch> step_ops_;
  std::vector<uint64_t> step_key_;
  std::vector<uint64_t> last_key_;
  std::vector<CachedGraph> graphs_;
  uint64_t graph_clock_ = 0;
  DeviceMemory cublas_workspace_;
};

// out^T (rows x tokens, column-major, ld = out.stride) = W (rows x cols) x^T:
// cuBLAS is column-major, so the row-major weight is A^T with lda = cols.
void CudaBackend::Gemm(const CudaWeight& w, const void* x, cudaDataType x_type, int ldx, int tokens,
                       const MatMulTarget& t, cudaStream_t stream) {
  const float one = 1.0f;
  const float zero = 0.0f;
  const float* beta = t.accumulate ? &one : &zero;
  auto gemm = [&](const void* a, cudaDataType a_type, int rows, float* c, cublasComputeType_t compute) {
    const cublasStatus_t s = cublas_.gemm_ex(handle_, CUBLAS_OP_T, CUBLAS_OP_N, rows, tokens, w.cols(), &one, a, a_type,
                                             w.cols(), x, x_type, ldx, beta, c, CUDA_R_32F, t.out.stride,
                                             compute, CUBLAS_GEMM_DEFAULT);
    if (s != CUBLAS_STATUS_SUCCESS) {
      std::fprintf(stderr, "tollgate: cublasGemmEx failed (status %d) for a %d x %d weight, %d tokens\n",
                   static_cast<int>(s), rows, w.cols(), tokens);
      std::abort();
    }
  };
  switch (w.wtype()) {
    case WType::kF32: gemm(w.data(), CUDA_R_32F, w.rows(), t.out.data, CUBLAS_COMPUTE_32F); return;
    case WType::kF16: gemm(w.data(), CUDA_R_16F, w.rows(), t.out.data, CUBLAS_COMPUTE_32F); return;
    case WType::kBF16: gemm(w.data(), CUDA_R_16BF, w.rows(), t.out.data, CUBLAS_COMPUTE_32F); return;
    default: break;
  }
  const int chunk = static_cast<int>(std::max<int64_t>(1, kDequantChunkValues / w.cols()));
  for (int r0 = 0; r0 < w.rows(); r0 += chunk) {
    const int rows = std::min(chunk, w.rows() - r0);
    cuda::DequantToHalf(w.wtype(), w.data(), w.row_bytes(), r0, rows, w.cols(), dequant_.get(), stream);
    gemm(dequant_.get(), CUDA_R_16F, rows, t.out.data + r0, CUBLAS_COMPUTE_32F);
  }
}

void CudaBackend::MatMul(const ActTensor& x, std::span<const MatMulTarget> targets) {
  UseDevice(device_);
  if (x.rows <= kCudaMatVecMaxTokens) {
    for (const MatMulTarget& t : targets) {
      const auto* w = static_cast<const CudaWeight*>(t.weight);
      assert(w->cols() == x.cols && t.out.rows == x.rows && t.out.cols == w->rows());
      cuda::MatVecArgs a;
      a.type = w->wtype();
      a.w = w->data();
      a.row_bytes = w->row_bytes();
      a.rows = w->rows();
      a.cols = w->cols();
      a.x = x.data;
      a.x_stride = x.stride;
      a.tokens = x.rows;
      a.out = t.out.data;
      a.out_stride = t.out.stride;
      a.accumulate = t.accumulate;
      Op([=](cudaStream_t st) { cuda::MatVec(a, st); }, 8, a.type, a.w, a.rows, a.cols, a.x, a.x_stride, a.tokens, a.out,
         a.out_stride, a.accumulate);
    }
    return;
  }
  // GEMM: x converted once per input type (F32 as is, BF16 for BF16
  // weights, F16 for the rest).
  bool have_f16 = false;
  bool have_bf16 = false;
  // F16 and BF16 inputs share the scratch: convert, run the targets that use
  // that type, then the other.
  for (const bool bf16_pass : {false, true}) {
    for (const MatMulTarget& t : targets) {
      const auto* w = static_cast<const CudaWeight*>(t.weight);
      assert(w->cols() == x.cols && t.out.rows == x.rows && t.out.cols == w->rows());
      const bool wants_bf16 = w->wtype() == WType::kBF16;
      if (w->wtype() == WType::kF32) {
        if (!bf16_pass) {
          Op([=, this](cudaStream_t st) { Gemm(*w, x.data, CUDA_R_32F, x.stride, x.rows, t, st); }, 10, w->data(),
             w->rows(), w->cols(), x.data, x.stride, x.rows, t.out.data, t.out.stride, t.accumulate);
        }
        continue;
      }
      if (wants_bf16 != bf16_pass) continue;
      bool& have = bf16_pass ? have_bf16 : have_f16;
      if (!have) {
        void* dst = half_x_.get();
        Op([=](cudaStream_t st) { cuda::ToHalf(x.data, x.stride, x.rows, x.cols, bf16_pass, dst, st); }, 9, x.data,
           x.stride, x.rows, x.cols, bf16_pass, dst);
        have = true;
      }
      const void* in = half_x_.get();
      const cudaDataType type = bf16_pass ? CUDA_R_16BF : CUDA_R_16F;
      // The key names the weight by its memory, type and shape (a weight freed
      // and another made at the same host address must not match a cached
      // graph), and the dequantization scratch the launch reads.
      Op([=, this](cudaStream_t st) { Gemm(*w, in, type, x.cols, x.rows, t, st); }, 11, w->data(), w->wtype(),
         w->rows(), w->cols(), dequant_.get(), in, type, x.cols, x.rows, t.out.data, t.out.stride, t.accumulate);
    }
  }
}

void CudaBackend::Attention(int layer, KvPool& kv_pool, const ActTensor& q, const ActTensor& k, const ActTensor& v,
                            std::span<const AttentionSeq> seqs, const AttentionShape& shape, ActTensor out) {
  UseDevice(device_);
  auto& pool = static_cast<CudaKvPool&>(kv_pool);
  [[maybe_unused]] const int hd = shape.head_dim;
  assert(q.cols == shape.head_count * hd && k.cols == shape.head_count_kv * hd && v.cols == shape.head_count_kv * hd &&
         out.cols == q.cols && pool.shape().head_dim == hd && pool.shape().kv_heads == shape.head_count_kv);
  // One upload: the rows (AttnRow, three int32 each), then the page tables.
  int n = 0;
  for (const AttentionSeq& s : seqs) n += s.rows;
  if (n == 0) return;
  static_assert(sizeof(cuda::AttnRow) == 3 * sizeof(int32_t));
  attn_meta_.assign(static_cast<size_t>(n) * 3, 0);
  int row = 0;
  for (const AttentionSeq& s : seqs) {
    assert(s.pages.size() * kKvPageTokens >= static_cast<size_t>(s.first_pos + s.rows));
    const auto table = static_cast<int32_t>(attn_meta_.size()) - 3 * n;
    attn_meta_.insert(attn_meta_.end(), s.pages.begin(), s.pages.end());
    for (int i = 0; i < s.rows; ++i, ++row) {
      attn_meta_[static_cast<size_t>(row) * 3] = s.first_row + i;
      attn_meta_[static_cast<size_t>(row) * 3 + 1] = s.first_pos + i;
      attn_meta_[static_cast<size_t>(row) * 3 + 2] = table;
    }
  }
  // Padded to a multiple of 1024 entries: the upload's size then stays the
  // same while sequences gain pages (with many sequences one crosses a page
  // boundary almost every step), so decode steps keep the same graph key.
  attn_meta_.resize((attn_meta_.size() + 1023) / 1024 * 1024, 0);
  const auto* meta = static_cast<const int32_t*>(Stage(attn_meta_.data(), attn_meta_.size() * sizeof(int32_t)));
  const auto* rows = reinterpret_cast<const cuda::AttnRow*>(meta);
  const int32_t* tables = meta + 3 * n;
  const cuda::KvLayout layout = pool.Layout(layer);
  const int heads = shape.head_count;
  const int group = shape.head_count / shape.head_count_kv;
  const float scale = shape.scale;
  Op([=](cudaStream_t st) {
    cuda::KvStore(layout, k.data, k.stride, v.data, v.stride, rows, n, tables, st);
    cuda::Attention(layout, q.data, q.stride, out.data, out.stride, rows, n, tables, heads, group, scale, st);
  }, 12, layout.base, layout.page_bytes, layout.kv_heads, layout.head_dim, layout.type, layer, k.data, k.stride,
     v.data, v.stride, rows, n, tables, q.data, q.stride, out.data, out.stride, heads, group, scale);
}

}  // namespace

bool CudaBuilt() { return true; }

CudaDeviceStatus ProbeCudaDevice(int device) {
  CudaDeviceStatus s;
  s.device = device;
  cudaDriverGetVersion(&s.driver_version);
  if (s.driver_version == 0) {
    s.reason = "no NVIDIA driver (libcuda.so not found, not loadable, or a stub without a driver)";
    return s;
  }
  int count = 0;
  const cudaError_t e = cudaGetDeviceCount(&count);
  if (e == cudaErrorInsufficientDriver) {
    int runtime = 0;
    cudaRuntimeGetVersion(&runtime);
    s.reason = "the NVIDIA driver supports CUDA " + std::to_string(s.driver_version / 1000) + "." +
               std::to_string(s.driver_version % 1000 / 10) + ", older than this build's CUDA " +
               std::to_string(runtime / 1000) + "." + std::to_string(runtime % 1000 / 10);
    return s;
  }
  if (e == cudaErrorNoDevice || (e == cudaSuccess && count == 0)) {
    s.reason = "no CUDA device";
    return s;
  }
  if (e != cudaSuccess) {
    s.reason = std::string("CUDA cannot start: ") + cudaGetErrorString(e);
    return s;
  }
  if (device < 0 || device >= count) {
    s.reason = "device " + std::to_string(device) + " does not exist (" + std::to_string(count) + " device" +
               (count == 1 ? "" : "s") + ")";
    return s;
  }
  cudaDeviceProp prop{};
  if (cudaGetDeviceProperties(&prop, device) != cudaSuccess) {
    s.reason = "cannot read the properties of device " + std::to_string(device);
    return s;
  }
  s.name = prop.name;
  s.compute_major = prop.major;
  s.compute_minor = prop.minor;
  // Creates the device's context: it can fail (device busy or prohibited,
  // out of memory), which is a status here, not UseDevice's abort.
  if (const cudaError_t set = cudaSetDevice(device); set != cudaSuccess) {
    cudaGetLastError();
    s.reason = "cannot use " + s.name + ": " + cudaGetErrorString(set);
    return s;
  }
  UseDevice(device);
  size_t free_bytes = 0, total = 0;
  if (cudaMemGetInfo(&free_bytes, &total) != cudaSuccess) {
    s.reason = "cannot query the memory of " + s.name;
    return s;
  }
  s.free_bytes = static_cast<int64_t>(free_bytes);
  s.total_bytes = static_cast<int64_t>(total);
  if (const cudaError_t k = cuda::CheckKernelImage(); k != cudaSuccess) {
    cudaGetLastError();
    s.reason = s.name + " (sm_" + std::to_string(prop.major) + std::to_string(prop.minor) +
               ") is not among the architectures this build was compiled for (CMAKE_CUDA_ARCHITECTURES): " +
               cudaGetErrorString(k);
    return s;
  }
  const Cublas& cublas = LoadCublas();
  if (!cublas.error.empty()) {
    s.reason = cublas.error;
    return s;
  }
  s.usable = true;
  return s;
}

Result<std::shared_ptr<Backend>> CreateCudaBackend(const CudaBackendOptions& options) {
  if (options.device < 0) return InvalidArgument("CUDA device must be >= 0", "gpu_device");
  if (options.memory_budget_bytes < 0) return InvalidArgument("GPU memory budget must be >= 0", "gpu_memory_mib");
  const CudaDeviceStatus status = ProbeCudaDevice(options.device);
  if (!status.usable) return Error{ErrorCode::kUnavailable, status.reason};
  int64_t budget = options.memory_budget_bytes;
  if (budget == 0) {
    budget = status.free_bytes - kDefaultHeadroom;
    if (budget < 256 * kMiB) {
      return Error{ErrorCode::kResourceExhausted, Mib(status.free_bytes) + " free on " + status.name};
    }
  } else if (budget > status.free_bytes) {
    return Error{ErrorCode::kResourceExhausted,
                 "a budget of " + Mib(budget) + " but only " + Mib(status.free_bytes) + " free on " + status.name};
  }
  auto backend = std::make_shared<CudaBackend>(options.device, budget, status.name, LoadCublas());
  if (auto r = backend->Init(); !r) return r.error();
  return std::shared_ptr<Backend>(std::move(backend));
}

}  // namespace tollgate::local_backend
