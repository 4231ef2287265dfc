// The compute backend seam between the model graphs (model.cpp) and the
// kernels, after ggml's backend split (ggml/src/ggml-backend-impl.h): the graph
// code names operations on tensors that live in a backend's memory, and a
// backend (the CPU one now, CUDA later) implements them. Model code never reads
// or writes activation memory itself, so a device backend can keep everything
// on the device and only copy logits back (ReadRows).
//
// Data:
//   - BackendWeight: a weight matrix `rows` x `cols` (ggml ne = [cols, rows]) in
//     its file type (F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K,
//     Q6_K), prepared once at load. The CPU backend uses the bytes in place
//     from the GGUF mapping (no copy, no conversion), except Q4_0 and Q5_0,
//     which it repacks into interleaved layouts of the same size (eight rows
//     per block, cpu_kernels.hpp) and then drops the file's pages from memory;
//     the mapping must outlive the weight.
//   - BackendVector: a float32 vector (norm weights, biases).
//   - ActTensor: float32 activations, `rows` (tokens or heads) x `cols`, in
//     memory from AllocActivations(); a view, never owning.
//   - KvPool: keys and values of many sequences in fixed-size pages, in F32,
//     F16 or 8 bits; sequences name their pages in AttentionSeq.
//
// Operations run in call order; on the CPU backend each returns when done (a
// device backend may queue them, so results are only defined for the host after
// ReadRows). Shapes are checked by assertions (a mismatch is a bug in the
// graph code, not a user error); errors that a user can cause (unsupported
// tensor type, memory) come back as Result at preparation time.
//
// Thread-safety: a backend, its weights and vectors may be shared by any number
// of model contexts, but operations must not be issued from two threads at the
// same time (the CPU backend owns one thread pool that every op uses).
// LocalProvider serialises them on its inference thread.
#pragma once

#include "tollgate/core/error.hpp"
#include "tollgate/local_backend/gguf.hpp"

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>

namespace tollgate::local_backend {

// Float32 activations: row i starts at data + i * stride; cols <= stride.
struct ActTensor {
  float* data = nullptr;
  int rows = 0;
  int cols = 0;
  int stride = 0;

  ActTensor Rows(int first, int count) const {
    return {data + static_cast<ptrdiff_t>(first) * stride, count, cols, stride};
  }
  ActTensor Cols(int first, int count) const { return {data + first, rows, count, stride}; }
  // The same memory as rows * (cols / width) rows of `width` (rows must be dense:
  // stride == cols, and cols a multiple of width), e.g. one row per attention head.
  ActTensor Split(int width) const;
};

class BackendWeight {
 public:
  virtual ~BackendWeight() = default;
  GgmlType type() const { return type_; }
  int rows() const { return rows_; }
  int cols() const { return cols_; }
  // Bytes this weight holds beyond the mapped file (0 when used in place).
  size_t owned_bytes() const { return owned_bytes_; }

 protected:
  BackendWeight(GgmlType type, int rows, int cols, size_t owned_bytes)
      : type_(type), rows_(rows), cols_(cols), owned_bytes_(owned_bytes) {}

 private:
  GgmlType type_;
  int rows_;
  int cols_;
  size_t owned_bytes_;
};

class BackendVector {
 public:
  virtual ~BackendVector() = default;
  int size() const { return size_; }

 protected:
  explicit BackendVector(int size) : size_(size) {}

 private:
  int size_;
};

// Activation memory from AllocActivations; freed with the object.
class ActivationBuffer {
 public:
  virtual ~ActivationBuffer() = default;
  // `rows` x `cols` dense tensor at float offset `offset` of this buffer.
  virtual ActTensor Tensor(size_t offset, int rows, int cols) = 0;
};

// How keys and values are stored.
//   kF32, kF16: as computed / IEEE half (llama.cpp's default, --cache-type-k f16).
//   kQ8: each head's row of head_dim values as int8 q = round(x / d) with
//        one IEEE-half scale d = max|x| / 127 per row (symmetric absmax, as
//        ggml's Q8_0 but with one scale per row instead of per 32 values, so
//        a row costs head_dim + 2 bytes: 1.94x fewer than F16 at head_dim 64,
//        1.97x at 128). Its effect on output is measured in
//        tests/local_backend/kv_cache_test.cpp and docs/local-engine.md.
enum class KvType { kF32, kF16, kQ8 };
std::string_view KvTypeName(KvType type);
// Bytes one head's row of `head_dim` keys (or values) takes in `type`.
size_t KvRowBytes(KvType type, int head_dim);

// Positions per KV page, the same for every backend (a page table entry
// covers positions [i * kKvPageTokens, (i + 1) * kKvPageTokens)).
constexpr int kKvPageTokens = 64;

struct KvPoolShape {
  int layers = 0;
  int kv_heads = 0;
  int head_dim = 0;  // a multiple of 8
  KvType type = KvType::kF16;
  int max_pages = 0;  // Grow() beyond this fails: the memory budget
};

// Keys and values of many sequences in fixed-size pages (after vLLM's
// PagedAttention, Kwon et al., SOSP 2023): a page holds kKvPageTokens
// positions of every layer, K and V, for all KV heads. Which page holds which
// sequence's positions is the caller's business (PagedKvCache, kv_cache.hpp,
// passes page tables to Attention). Memory is taken as pages are first
// needed (Grow) and kept for reuse until the pool is destroyed.
class KvPool {
 public:
  virtual ~KvPool() = default;
  const KvPoolShape& shape() const { return shape_; }
  // Bytes of one page (every layer, K and V, every KV head).
  size_t page_bytes() const {
    return static_cast<size_t>(shape_.layers) * 2 * static_cast<size_t>(shape_.kv_heads) * kKvPageTokens *
           KvRowBytes(shape_.type, shape_.head_dim);
  }
  // Pages with memory: ids 0 .. allocated_pages() - 1 may be used.
  virtual int allocated_pages() const = 0;
  // Gives memory to pages up to id `pages` - 1 (never shrinks). Errors:
  // kInvalidArgument beyond shape().max_pages, kResourceExhausted when the
  // memory cannot be allocated (pages allocated so far stay usable).
  virtual Result<void> Grow(int pages) = 0;
  size_t bytes() const { return static_cast<size_t>(allocated_pages()) * page_bytes(); }

 protected:
  explicit KvPool(const KvPoolShape& shape) : shape_(shape) {}

 private:
  KvPoolShape shape_;
};

// How a weight's bytes are given to PrepareWeight.
struct WeightData {
  std::string_view name;  // for error messages
  GgmlType type = GgmlType::kF32;
  int rows = 0;
  int cols = 0;
  std::span<const std::byte> bytes;  // rows * RowBytes(type, cols) bytes; must outlive the weight
  // The bytes lie in a read-only file mapping (GgufFile): a backend that copies
  // them (repacking, device upload) may drop those pages from the process
  // (madvise MADV_DONTNEED); reading them again refaults them from the file.
  bool file_mapped = false;
};

// y = W x for one weight; `out` gets rows = x.rows, cols = weight rows.
struct MatMulTarget {
  const BackendWeight* weight = nullptr;
  ActTensor out;
  bool accumulate = false;  // out += W x (a residual connection) instead of out = W x
};

// Rotary position embedding of q or k (Su et al., RoFormer, arXiv:2104.09864).
enum class RopeMode {
  kNormal,  // pairs (x[2i], x[2i+1]) of each head (ggml rope type 0: llama, mistral)
  kNeox,    // pairs (x[i], x[i + dims/2]) (GGML_ROPE_TYPE_NEOX: qwen2, qwen3)
};
// Per activation row r: cos_sin[r * dims + 2i] = cos(theta_i), [.. + 2i + 1] =
// sin(theta_i), i < dims / 2, magnitude scaling already applied. Host memory,
// read during the call.
struct RopeTable {
  const float* cos_sin = nullptr;
  int dims = 0;
};

// Rows [first_row, first_row + rows) of q/k/v belong to one sequence, at
// positions first_pos, first_pos + 1, ...; row i attends to positions
// 0 .. first_pos + i (causal). Position p of the sequence lives in page
// pages[p / kKvPageTokens] of the pool; the table must cover position
// first_pos + rows - 1, and the pages written (those of the new positions)
// must not be shared with another sequence. Several entries batch several
// sequences (continuous batching).
struct AttentionSeq {
  std::span<const int32_t> pages;
  int first_row = 0;
  int rows = 0;
  int first_pos = 0;
};
struct AttentionShape {
  int head_count = 0;
  int head_count_kv = 0;  // head h reads KV head h / (head_count / head_count_kv) (GQA)
  int head_dim = 0;
  float scale = 0.0f;  // usually 1 / sqrt(head_dim)
};

class Backend {
 public:
  virtual ~Backend() = default;

  // e.g. "cpu avx2 x2 threads".
  virtual std::string Name() const = 0;
  virtual bool SupportsWeightType(GgmlType type) const = 0;

  // --- preparation (load time)
  // Errors (kInvalidArgument, naming the weight): unsupported type, cols not a
  // multiple of the type's block size, byte size not matching the shape.
  virtual Result<std::unique_ptr<BackendWeight>> PrepareWeight(const WeightData& data) = 0;
  virtual std::unique_ptr<BackendVector> PrepareVector(std::span<const float> values) = 0;
  // `floats` float32 values of activation memory, 64-byte aligned, uninitialised.
  virtual std::unique_ptr<ActivationBuffer> AllocActivations(size_t floats) = 0;
  // Errors: kInvalidArgument for a bad shape; kResourceExhausted from a
  // backend that takes the pool's memory here (CUDA does, so that it runs
  // out at start-up, not mid-call). The CPU backend allocates nothing until Grow.
  virtual Result<std::unique_ptr<KvPool>> CreateKvPool(const KvPoolShape& shape) = 0;

  // --- operations
  // out row i = row ids[i] of `table` (any supported type, dequantized exactly).
  virtual void GetRows(const BackendWeight& table, std::span<const int32_t> ids, ActTensor out) = 0;
  // out = RMSNorm(x) (.) weight per row (Zhang & Sennrich 2019; sum of squares in
  // double, as ggml). weight may be null (no scaling). out may be x.
  virtual void RmsNorm(const ActTensor& x, const BackendVector* weight, float eps, ActTensor out) = 0;
  // Every target's out = (or +=) weight * x, x read once per type of weight.
  // Targets must not overlap x.
  virtual void MatMul(const ActTensor& x, std::span<const MatMulTarget> targets) = 0;
  // x row r += bias.
  virtual void AddBias(ActTensor x, const BackendVector& bias) = 0;
  // Rotates the first table.dims values of each of the `heads` heads of every
  // row of x (head_dim values each) in place.
  virtual void Rope(ActTensor x, int heads, int head_dim, const RopeTable& table, RopeMode mode) = 0;
  // Stores k and v (rows as in `seqs`; kv_heads * head_dim columns) in
  // `pool` at each sequence's positions for `layer`, then writes to `out`
  // (head_count * head_dim columns) softmax(q k^T * scale) v over positions
  // 0 .. pos (Vaswani et al. 2017, causal; grouped-query per `shape`).
  virtual void Attention(int layer, KvPool& pool, const ActTensor& q, const ActTensor& k, const ActTensor& v,
                         std::span<const AttentionSeq> seqs, const AttentionShape& shape, ActTensor out) = 0;
  // out = SiLU(gate) (.) up (SwiGLU, Shazeer arXiv:2002.05202). out may be gate.
  virtual void SwiGlu(const ActTensor& gate, const ActTensor& up, ActTensor out) = 0;
  // x += y.
  virtual void Add(ActTensor x, const ActTensor& y) = 0;
  // Copies x (rows x cols) to host memory `out`, row-major, dense.
  virtual void ReadRows(const ActTensor& x, std::span<float> out) = 0;
};

struct CpuBackendOptions {
  int threads = 0;  // 0: every core (std::thread::hardware_concurrency)
  // Kernel table: "" picks the widest this CPU supports; "generic", "avx2" or
  // "avx512" force one (kInvalidArgument when the CPU or build lacks it).
  std::string isa;
};

// The CPU backend. Errors: kInvalidArgument for negative threads or an
// unavailable ISA.
Result<std::shared_ptr<Backend>> CreateCpuBackend(const CpuBackendOptions& options = {});

}  // namespace tollgate::local_backend
