// The CPU implementation of backend.hpp: kernels from cpu_kernels.hpp (chosen
// by CPUID), one thread pool per backend.
//
// Memory: weights are used in place from the GGUF mapping (the kernels read
// the supported types in their file layout, so nothing is converted or copied
// at load and the page cache holds the only copy), except Q4_0 and Q5_0: each
// is repacked into an interleaved copy of the same size, eight rows per block
// (RepackQ4_0x8, RepackQ5_0x8; the matrix-vector product then streams one
// sequential run of bytes, and one multiply covers eight rows with each row's
// sums in their own lanes, no horizontal sums), and the file's pages of those
// tensors are dropped from the process, so resident memory stays at one copy.
// That costs a pass over the Q4_0/Q5_0 bytes at load (parallel over the pool);
// Q5_0 matters because real Q4_K_M files carry most of their matrices in it
// (llama-quantize's fallback for rows that are not a multiple of 256).
// Activations quantized for a matrix multiply go to per-format scratch buffers
// that grow to the largest batch seen. KV pools allocate each page when first
// used.
#include "tollgate/local_backend/backend.hpp"

#include "cpu_kernels.hpp"
#include "mapped_pages.hpp"
#include "thread_pool.hpp"
#include "tollgate/local_backend/quant.hpp"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cassert>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>
#include <random>
#include <thread>
#include <vector>

namespace tollgate::local_backend {

ActTensor ActTensor::Split(int width) const {
  assert(stride == cols && width > 0 && cols % width == 0);
  return {data, rows * (cols / width), width, width};
}

std::string_view KvTypeName(KvType type) {
  switch (type) {
    case KvType::kF32: return "f32";
    case KvType::kF16: return "f16";
    case KvType::kQ8: return "q8";
  }
  return "?";
}

size_t KvRowBytes(KvType type, int head_dim) {
  const auto n = static_cast<size_t>(head_dim);
  switch (type) {
    case KvType::kF32: return n * 4;
    case KvType::kF16: return n * 2;
    case KvType::kQ8: return n + 2;
  }
  return 0;
}

namespace {

static_assert(kKvPageTokens <= cpu::kKvQ8MaxRows);

using cpu::ActFormat;
using cpu::Kernels;

// Below this many multiply-adds an operation runs on the calling thread: waking
// the pool costs microseconds, more than tiny models' whole operations.
constexpr double kMinParallelWork = 1 << 17;
constexpr size_t kAlign = 64;

struct FreeDeleter {
  void operator()(void* p) const { std::free(p); }
};
using AlignedBytes = std::unique_ptr<std::byte, FreeDeleter>;

// Large buffers (repacked weights, big scratch) sit on 2 MiB boundaries and ask
// for transparent huge pages: 512 times fewer page faults when they are first
// written, and fewer TLB misses when a matrix-vector product streams them.
AlignedBytes AllocAligned(size_t bytes) {
  constexpr size_t kHuge = size_t{1} << 21;
  const size_t align = bytes >= kHuge ? kHuge : kAlign;
  const size_t rounded = (std::max<size_t>(bytes, 1) + align - 1) / align * align;
  auto* p = static_cast<std::byte*>(std::aligned_alloc(align, rounded));
#if defined(MADV_HUGEPAGE)
  if (p != nullptr && align == kHuge) madvise(p, rounded, MADV_HUGEPAGE);
#endif
  return AlignedBytes(p);
}

// Maps in the pages of `bytes` (a file mapping) with one call instead of a page
// fault per 4 KiB (MADV_POPULATE_READ, Linux 5.14; a no-op where unsupported).
void PopulatePages(std::span<const std::byte> bytes) {
  constexpr int kPopulateRead = 22;  // MADV_POPULATE_READ
  const uintptr_t page = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));
  const uintptr_t begin = reinterpret_cast<uintptr_t>(bytes.data()) / page * page;
  const uintptr_t end = reinterpret_cast<uintptr_t>(bytes.data()) + bytes.size();
  madvise(reinterpret_cast<void*>(begin), end - begin, kPopulateRead);
}

// A scratch area that grows to the largest request and keeps its memory.
class Scratch {
 public:
  std::byte* Get(size_t bytes) {
    if (bytes > size_) {
      data_ = AllocAligned(bytes);
      if (!data_) throw std::bad_alloc();
      size_ = bytes;
    }
    return data_.get();
  }

 private:
  AlignedBytes data_;
  size_t size_ = 0;
};

// Memory for repacked weights: 64 MiB huge-page chunks that tensors are cut
// from one after another, so that they all get huge pages without rounding each
// tensor up to 2 MiB (only the used part of a chunk is ever touched). A chunk
// lives as long as any weight cut from it.
class WeightArena {
 public:
  using Chunk = std::shared_ptr<AlignedBytes>;
  // 64-byte aligned; null chunk when out of memory.
  std::pair<Chunk, std::byte*> Allocate(size_t bytes) {
    constexpr size_t kChunk = size_t{64} << 20;
    bytes = (bytes + kAlign - 1) / kAlign * kAlign;
    if (bytes > kChunk) {
      auto own = std::make_shared<AlignedBytes>(AllocAligned(bytes));
      return {*own ? own : nullptr, own->get()};
    }
    if (!chunk_ || used_ + bytes > kChunk) {
      chunk_ = std::make_shared<AlignedBytes>(AllocAligned(kChunk));
      used_ = 0;
      if (!*chunk_) {
        chunk_.reset();
        return {nullptr, nullptr};
      }
    }
    std::byte* p = chunk_->get() + used_;
    used_ += bytes;
    return {chunk_, p};
  }

 private:
  Chunk chunk_;
  size_t used_ = 0;
};

// Types the kernels read in an interleaved eight-row copy made at load.
bool Repacked(GgmlType type) { return type == GgmlType::kQ4_0 || type == GgmlType::kQ5_0; }

class CpuWeight final : public BackendWeight {
 public:
  // In place (no chunk) or repacked into `chunk` (data points into it).
  CpuWeight(GgmlType type, int rows, int cols, const std::byte* data, size_t row_bytes, WeightArena::Chunk chunk,
            size_t owned_bytes)
      : BackendWeight(type, rows, cols, owned_bytes), data_(data), row_bytes_(row_bytes), chunk_(std::move(chunk)) {}
  const std::byte* data() const { return data_; }
  size_t row_bytes() const { return row_bytes_; }

 private:
  const std::byte* data_;
  size_t row_bytes_;
  WeightArena::Chunk chunk_;
};

class CpuVector final : public BackendVector {
 public:
  explicit CpuVector(std::span<const float> values)
      : BackendVector(static_cast<int>(values.size())), values_(values.begin(), values.end()) {}
  const float* data() const { return values_.data(); }

 private:
  std::vector<float> values_;
};

class CpuActivations final : public ActivationBuffer {
 public:
  CpuActivations(AlignedBytes data, size_t floats) : data_(std::move(data)), floats_(floats) {}
  ActTensor Tensor(size_t offset, int rows, int cols) override {
    assert(offset + static_cast<size_t>(rows) * static_cast<size_t>(cols) <= floats_);
    return {reinterpret_cast<float*>(data_.get()) + offset, rows, cols, cols};
  }

 private:
  AlignedBytes data_;
  size_t floats_;
};

// Page layout: [layer][0 = K, 1 = V][kv_head] runs of kKvPageTokens rows of
// KvRowBytes; in kQ8 a run is the kKvPageTokens int8 rows, then their
// kKvPageTokens half scales.
class CpuKvPool final : public KvPool {
 public:
  explicit CpuKvPool(const KvPoolShape& shape)
      : KvPool(shape), run_bytes_(static_cast<size_t>(kKvPageTokens) * KvRowBytes(shape.type, shape.head_dim)) {}

  int allocated_pages() const override { return static_cast<int>(pages_.size()); }

  Result<void> Grow(int pages) override {
    if (pages > shape().max_pages) {
      return InvalidArgument("KV pool of " + std::to_string(shape().max_pages) + " pages cannot grow to " +
                             std::to_string(pages));
    }
    while (allocated_pages() < pages) {
      AlignedBytes page = AllocAligned(page_bytes());
      if (!page) {
        return Error{ErrorCode::kResourceExhausted, "cannot allocate " + std::to_string(page_bytes()) +
                                                        " bytes of KV cache"};
      }
      pages_.push_back(std::move(page));
    }
    return {};
  }

  // The run of one (layer, K or V, head) in `page`.
  std::byte* Run(int layer, int kv, int head, int32_t page) const {
    assert(page >= 0 && page < allocated_pages());
    const size_t index = (static_cast<size_t>(layer) * 2 + static_cast<size_t>(kv)) *
                             static_cast<size_t>(shape().kv_heads) +
                         static_cast<size_t>(head);
    return pages_[static_cast<size_t>(page)].get() + index * run_bytes_;
  }

 private:
  size_t run_bytes_;
  std::vector<AlignedBytes> pages_;
};

class CpuBackend final : public Backend {
 public:
  CpuBackend(const Kernels& kernels, int threads)
      : k_(kernels), pool_(threads), scores_(static_cast<size_t>(threads)) {}

  std::string Name() const override {
    return std::string("cpu ") + cpu::IsaName(k_.isa) + " x" + std::to_string(pool_.size()) + " threads";
  }

  bool SupportsWeightType(GgmlType type) const override { return cpu::GemmIndex(type) >= 0; }

  Result<std::unique_ptr<BackendWeight>> PrepareWeight(const WeightData& d) override {
    const std::string name(d.name);
    if (!SupportsWeightType(d.type)) {
      return InvalidArgument("tensor " + name + " has type " + GgmlTypeName(d.type) +
                             ", which the CPU engine cannot compute (supported: F32, F16, BF16, Q8_0, Q4_0, "
                             "Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K)");
    }
    const int64_t block = QuantBlockSize(d.type);
    if (d.rows <= 0 || d.cols <= 0 || d.cols % block != 0) {
      return InvalidArgument("tensor " + name + " has rows of " + std::to_string(d.cols) + " values, not a multiple of " +
                             GgmlTypeName(d.type) + "'s block of " + std::to_string(block));
    }
    const size_t row_bytes = static_cast<size_t>(RowBytes(d.type, d.cols));
    if (d.bytes.size() != row_bytes * static_cast<size_t>(d.rows)) {
      return InvalidArgument("tensor " + name + " has " + std::to_string(d.bytes.size()) + " bytes, expected " +
                             std::to_string(row_bytes * static_cast<size_t>(d.rows)));
    }
    const size_t align = d.type == GgmlType::kF32 ? 4 : (d.type == GgmlType::kQ8_K ? 4 : 2);
    if (reinterpret_cast<uintptr_t>(d.bytes.data()) % align != 0) {
      return InvalidArgument("tensor " + name + " is not aligned in the file");
    }
    if (!Repacked(d.type)) {
      return std::unique_ptr<BackendWeight>(new CpuWeight(d.type, d.rows, d.cols, d.bytes.data(), row_bytes, nullptr, 0));
    }
    // Q4_0, Q5_0: repacked into the interleaved layout the kernels read (the
    // same bytes per row, plus at most 7 padding rows), in parallel by row groups.
    const bool q4 = d.type == GgmlType::kQ4_0;
    const size_t bytes = q4 ? cpu::RepackedQ4_0Bytes(d.rows, d.cols) : cpu::RepackedQ5_0Bytes(d.rows, d.cols);
    auto [chunk, packed] = arena_.Allocate(bytes);
    if (!chunk) return Error{ErrorCode::kResourceExhausted, "cannot allocate " + std::to_string(bytes) + " bytes for " + name};
    if (d.file_mapped) PopulatePages(d.bytes);
    const int groups = (d.rows + 7) / 8;
    const int per_task = 64;
    auto repack = q4 ? &cpu::RepackQ4_0x8 : &cpu::RepackQ5_0x8;
    pool_.Run((groups + per_task - 1) / per_task, [&](int task, int) {
      const int first = task * per_task;
      repack(d.bytes.data(), d.rows, d.cols, packed, first, std::min(per_task, groups - first));
    });
    if (d.file_mapped) DropMappedPages(d.bytes);
    return std::unique_ptr<BackendWeight>(new CpuWeight(d.type, d.rows, d.cols, packed, row_bytes, std::move(chunk), bytes));
  }

  std::unique_ptr<BackendVector> PrepareVector(std::span<const float> values) override {
    return std::make_unique<CpuVector>(values);
  }

  std::unique_ptr<ActivationBuffer> AllocActivations(size_t floats) override {
    AlignedBytes data = AllocAligned(floats * sizeof(float));
    if (!data) throw std::bad_alloc();
    return std::make_unique<CpuActivations>(std::move(data), floats);
  }

  Result<std::unique_ptr<KvPool>> CreateKvPool(const KvPoolShape& shape) override {
    if (shape.layers <= 0 || shape.kv_heads <= 0 || shape.head_dim <= 0 || shape.head_dim % 8 != 0 ||
        shape.max_pages <= 0) {
      return InvalidArgument("bad KV pool shape (head size must be a positive multiple of 8)");
    }
    return std::unique_ptr<KvPool>(new CpuKvPool(shape));
  }

  void GetRows(const BackendWeight& table, std::span<const int32_t> ids, ActTensor out) override {
    const auto& w = static_cast<const CpuWeight&>(table);
    assert(out.rows == static_cast<int>(ids.size()) && out.cols == w.cols());
    RunRows(out.rows, [&](int r) {
      const int id = ids[static_cast<size_t>(r)];
      assert(id >= 0 && id < w.rows());
      float* dst = out.data + static_cast<size_t>(r) * static_cast<size_t>(out.stride);
      if (w.type() == GgmlType::kQ4_0) {
        cpu::DequantizeQ4_0x8Row(w.data(), id, out.cols, dst);
      } else if (w.type() == GgmlType::kQ5_0) {
        cpu::DequantizeQ5_0x8Row(w.data(), id, out.cols, dst);
      } else {
        DequantizeRow(w.type(), w.data() + static_cast<size_t>(id) * w.row_bytes(), dst, out.cols);
      }
    });
  }

  void RmsNorm(const ActTensor& x, const BackendVector* weight, float eps, ActTensor out) override {
    assert(out.rows == x.rows && out.cols == x.cols && (!weight || weight->size() == x.cols));
    const float* w = weight ? static_cast<const CpuVector*>(weight)->data() : nullptr;
    RunRows(
        x.rows,
        [&](int r) {
          cpu::RmsNorm(x.data + static_cast<size_t>(r) * static_cast<size_t>(x.stride), w, x.cols, eps,
                       out.data + static_cast<size_t>(r) * static_cast<size_t>(out.stride));
        },
        x.cols);
  }

  void MatMul(const ActTensor& x, std::span<const MatMulTarget> targets) override;

  void AddBias(ActTensor x, const BackendVector& bias) override {
    assert(bias.size() == x.cols);
    const float* b = static_cast<const CpuVector&>(bias).data();
    for (int r = 0; r < x.rows; ++r) {
      float* row = x.data + static_cast<size_t>(r) * static_cast<size_t>(x.stride);
      for (int c = 0; c < x.cols; ++c) row[c] += b[c];
    }
  }

  void Rope(ActTensor x, int heads, int head_dim, const RopeTable& table, RopeMode mode) override {
    assert(x.cols == heads * head_dim && table.dims <= head_dim && table.dims % 2 == 0);
    const int half = table.dims / 2;
    for (int r = 0; r < x.rows; ++r) {
      const float* cs = table.cos_sin + static_cast<size_t>(r) * static_cast<size_t>(table.dims);
      float* row = x.data + static_cast<size_t>(r) * static_cast<size_t>(x.stride);
      for (int h = 0; h < heads; ++h) {
        float* v = row + static_cast<size_t>(h) * static_cast<size_t>(head_dim);
        for (int i = 0; i < half; ++i) {
          const float c = cs[2 * i];
          const float s = cs[2 * i + 1];
          const int a = mode == RopeMode::kNormal ? 2 * i : i;
          const int b = mode == RopeMode::kNormal ? 2 * i + 1 : i + half;
          const float v0 = v[a];
          const float v1 = v[b];
          v[a] = v0 * c - v1 * s;
          v[b] = v0 * s + v1 * c;
        }
      }
    }
  }

  void Attention(int layer, KvPool& pool, const ActTensor& q, const ActTensor& k, const ActTensor& v,
                 std::span<const AttentionSeq> seqs, const AttentionShape& shape, ActTensor out) override;

  void SwiGlu(const ActTensor& gate, const ActTensor& up, ActTensor out) override {
    assert(gate.rows == up.rows && gate.cols == up.cols && out.rows == gate.rows && out.cols == gate.cols);
    RunRows(
        gate.rows,
        [&](int r) {
          k_.swiglu(gate.data + static_cast<size_t>(r) * static_cast<size_t>(gate.stride),
                    up.data + static_cast<size_t>(r) * static_cast<size_t>(up.stride),
                    out.data + static_cast<size_t>(r) * static_cast<size_t>(out.stride), gate.cols);
        },
        8.0 * gate.cols);
  }

  void Add(ActTensor x, const ActTensor& y) override {
    assert(x.rows == y.rows && x.cols == y.cols);
    for (int r = 0; r < x.rows; ++r) {
      float* a = x.data + static_cast<size_t>(r) * static_cast<size_t>(x.stride);
      const float* b = y.data + static_cast<size_t>(r) * static_cast<size_t>(y.stride);
      for (int c = 0; c < x.cols; ++c) a[c] += b[c];
    }
  }

  void ReadRows(const ActTensor& x, std::span<float> out) override {
    assert(out.size() >= static_cast<size_t>(x.rows) * static_cast<size_t>(x.cols));
    for (int r = 0; r < x.rows; ++r) {
      std::memcpy(out.data() + static_cast<size_t>(r) * static_cast<size_t>(x.cols),
                  x.data + static_cast<size_t>(r) * static_cast<size_t>(x.stride),
                  static_cast<size_t>(x.cols) * sizeof(float));
    }
  }

 private:
  // fn(row) for every row, spread over the pool when there are several and
  // rows * work_per_row is worth it.
  template <class F>
  void RunRows(int rows, F&& fn, double work_per_row = kMinParallelWork) {
    if (rows <= 1 || rows * work_per_row < kMinParallelWork) {
      for (int r = 0; r < rows; ++r) fn(r);
      return;
    }
    pool_.Run(rows, [&](int r, int) { fn(r); });
  }

  // pool_.Run, or a plain loop on this thread when `work` is small.
  template <class F>
  void RunTasks(int tasks, double work, F&& fn) {
    if (work < kMinParallelWork) {
      for (int t = 0; t < tasks; ++t) fn(t, 0);
      return;
    }
    pool_.Run(tasks, fn);
  }

  const Kernels& k_;
  cpu::ThreadPool pool_;
  WeightArena arena_;
  Scratch act_[3];                         // x converted to ActFormat kQ8_0 / kQ8_K (index by format)
  std::vector<std::vector<float>> scores_;  // attention scores, one buffer per pool thread
};

void CpuBackend::MatMul(const ActTensor& x, std::span<const MatMulTarget> targets) {
  struct Input {
    const std::byte* data = nullptr;
    size_t row_bytes = 0;
  };
  Input inputs[3];
  for (const MatMulTarget& t : targets) {
    const auto* w = static_cast<const CpuWeight*>(t.weight);
    assert(w->cols() == x.cols && t.out.rows == x.rows && t.out.cols == w->rows());
    const ActFormat f = cpu::ActFormatFor(w->type());
    Input& in = inputs[static_cast<int>(f)];
    if (in.data != nullptr) continue;
    if (f == ActFormat::kF32) {
      in = {reinterpret_cast<const std::byte*>(x.data), static_cast<size_t>(x.stride) * sizeof(float)};
      continue;
    }
    in.row_bytes = cpu::ActRowBytes(f, x.cols);
    std::byte* dst = act_[static_cast<int>(f)].Get(in.row_bytes * static_cast<size_t>(x.rows));
    in.data = dst;
    auto quantize = f == ActFormat::kQ8_0 ? k_.quantize_q8_0 : k_.quantize_q8_K;
    RunRows(
        x.rows,
        [&](int r) {
          quantize(x.data + static_cast<size_t>(r) * static_cast<size_t>(x.stride),
                   dst + static_cast<size_t>(r) * in.row_bytes, x.cols);
        },
        4.0 * x.cols);
  }

  // Work items: row ranges of each target, with every token. Small enough that
  // the threads balance, large enough that a weight tile is reused across the
  // batch and the claim counter is not contended.
  struct Item {
    int target;
    int row0;
    int rows;
  };
  int total_rows = 0;
  for (const MatMulTarget& t : targets) total_rows += t.weight->rows();
  const int threads = pool_.size();
  int chunk = threads == 1 ? total_rows : std::max(16, total_rows / (threads * 8));
  if (x.rows >= 8) chunk = std::min(chunk, 64);
  chunk = (chunk + 15) / 16 * 16;
  std::vector<Item> items;
  items.reserve(static_cast<size_t>(total_rows / chunk + static_cast<int>(targets.size())));
  for (size_t i = 0; i < targets.size(); ++i) {
    const int rows = targets[i].weight->rows();
    for (int r = 0; r < rows; r += chunk) items.push_back({static_cast<int>(i), r, std::min(chunk, rows - r)});
  }
  const double work = static_cast<double>(total_rows) * x.cols * x.rows;
  RunTasks(static_cast<int>(items.size()), work, [&](int index, int) {
    const Item& item = items[static_cast<size_t>(index)];
    const MatMulTarget& t = targets[static_cast<size_t>(item.target)];
    const auto* w = static_cast<const CpuWeight*>(t.weight);
    const Input& in = inputs[static_cast<int>(cpu::ActFormatFor(w->type()))];
    cpu::GemmArgs a;
    a.w = w->data() + static_cast<size_t>(item.row0) * w->row_bytes();
    a.w_row_bytes = w->row_bytes();
    a.x = in.data;
    a.x_row_bytes = in.row_bytes;
    a.out = t.out.data + item.row0;
    a.out_stride = static_cast<size_t>(t.out.stride);
    a.rows = item.rows;
    a.tokens = x.rows;
    a.cols = x.cols;
    a.accumulate = t.accumulate;
    k_.gemm[cpu::GemmIndex(w->type())](a);
  });
}

void CpuBackend::Attention(int layer, KvPool& kv_pool, const ActTensor& q, const ActTensor& k, const ActTensor& v,
                           std::span<const AttentionSeq> seqs, const AttentionShape& shape, ActTensor out) {
  auto& pool = static_cast<CpuKvPool&>(kv_pool);
  const int hd = shape.head_dim;
  const int kv_heads = shape.head_count_kv;
  const int group = shape.head_count / kv_heads;
  const KvType type = pool.shape().type;
  const size_t row_bytes = KvRowBytes(type, hd);
  assert(q.cols == shape.head_count * hd && k.cols == kv_heads * hd && v.cols == kv_heads * hd &&
         out.cols == q.cols && hd % 8 == 0 && pool.shape().head_dim == hd && pool.shape().kv_heads == kv_heads);

  // Store the new keys and values.
  int max_positions = 0;
  int jobs = 0;
  for (const AttentionSeq& s : seqs) {
    assert(s.pages.size() * kKvPageTokens >= static_cast<size_t>(s.first_pos + s.rows));
    for (int i = 0; i < s.rows; ++i) {
      const int row = s.first_row + i;
      const int pos = s.first_pos + i;
      const int32_t page = s.pages[static_cast<size_t>(pos / kKvPageTokens)];
      const int slot = pos % kKvPageTokens;
      for (int g = 0; g < kv_heads; ++g) {
        const float* src[2] = {k.data + static_cast<size_t>(row) * static_cast<size_t>(k.stride) + static_cast<size_t>(g * hd),
                               v.data + static_cast<size_t>(row) * static_cast<size_t>(v.stride) + static_cast<size_t>(g * hd)};
        for (int kv = 0; kv < 2; ++kv) {
          std::byte* run = pool.Run(layer, kv, g, page);
          switch (type) {
            case KvType::kF32:
              std::memcpy(run + static_cast<size_t>(slot) * row_bytes, src[kv], static_cast<size_t>(hd) * sizeof(float));
              break;
            case KvType::kF16:
              k_.to_f16(src[kv], reinterpret_cast<uint16_t*>(run + static_cast<size_t>(slot) * row_bytes), hd);
              break;
            case KvType::kQ8:
              k_.to_q8(src[kv], reinterpret_cast<int8_t*>(run) + static_cast<size_t>(slot) * static_cast<size_t>(hd),
                       reinterpret_cast<uint16_t*>(run + static_cast<size_t>(kKvPageTokens) * static_cast<size_t>(hd)) + slot,
                       hd);
              break;
          }
        }
      }
    }
    max_positions = std::max(max_positions, s.first_pos + s.rows);
    jobs += s.rows * shape.head_count;
  }
  const size_t scores_size = (static_cast<size_t>(max_positions) + kKvPageTokens - 1) / kKvPageTokens * kKvPageTokens;
  for (auto& s : scores_) {
    if (s.size() < scores_size) s.resize(scores_size);
  }

  // One job per (row, query head). Scores and the weighted sum of values run
  // page by page; each position's score and each output value's sum (in
  // position order) are the same whatever the page size and batch.
  double work = 0;
  for (const AttentionSeq& s : seqs) {
    work += 2.0 * shape.head_count * hd * s.rows * (s.first_pos + (s.rows + 1) / 2.0);
  }
  const size_t q8_scales = static_cast<size_t>(kKvPageTokens) * static_cast<size_t>(hd);  // byte offset in a run
  RunTasks(jobs, work, [&](int job, int thread) {
    int seq_index = 0;
    while (job >= seqs[static_cast<size_t>(seq_index)].rows * shape.head_count) {
      job -= seqs[static_cast<size_t>(seq_index)].rows * shape.head_count;
      ++seq_index;
    }
    const AttentionSeq& s = seqs[static_cast<size_t>(seq_index)];
    const int i = job / shape.head_count;
    const int h = job % shape.head_count;
    const int g = h / group;
    const int row = s.first_row + i;
    const int n = s.first_pos + i + 1;
    const float* qh = q.data + static_cast<size_t>(row) * static_cast<size_t>(q.stride) + static_cast<size_t>(h * hd);
    float* oh = out.data + static_cast<size_t>(row) * static_cast<size_t>(out.stride) + static_cast<size_t>(h * hd);
    float* scores = scores_[static_cast<size_t>(thread)].data();
    const int pages = (n + kKvPageTokens - 1) / kKvPageTokens;
    for (int p = 0; p < pages; ++p) {
      const int count = std::min(kKvPageTokens, n - p * kKvPageTokens);
      const std::byte* kp = pool.Run(layer, 0, g, s.pages[static_cast<size_t>(p)]);
      float* sp = scores + static_cast<size_t>(p) * kKvPageTokens;
      switch (type) {
        case KvType::kF32:
          k_.kq_f32(qh, reinterpret_cast<const float*>(kp), static_cast<size_t>(hd), count, hd, shape.scale, sp);
          break;
        case KvType::kF16:
          k_.kq_f16(qh, reinterpret_cast<const uint16_t*>(kp), static_cast<size_t>(hd), count, hd, shape.scale, sp);
          break;
        case KvType::kQ8:
          k_.kq_q8(qh, reinterpret_cast<const int8_t*>(kp), reinterpret_cast<const uint16_t*>(kp + q8_scales), count,
                   hd, shape.scale, sp);
          break;
      }
    }
    const float max = k_.max(scores, n);
    const float sum = k_.softmax(scores, n, max);
    std::memset(oh, 0, static_cast<size_t>(hd) * sizeof(float));
    for (int p = 0; p < pages; ++p) {
      const int count = std::min(kKvPageTokens, n - p * kKvPageTokens);
      const std::byte* vp = pool.Run(layer, 1, g, s.pages[static_cast<size_t>(p)]);
      const float* sp = scores + static_cast<size_t>(p) * kKvPageTokens;
      switch (type) {
        case KvType::kF32:
          k_.av_f32(sp, reinterpret_cast<const float*>(vp), static_cast<size_t>(hd), count, hd, oh);
          break;
        case KvType::kF16:
          k_.av_f16(sp, reinterpret_cast<const uint16_t*>(vp), static_cast<size_t>(hd), count, hd, oh);
          break;
        case KvType::kQ8:
          k_.av_q8(sp, reinterpret_cast<const int8_t*>(vp), reinterpret_cast<const uint16_t*>(vp + q8_scales), count, hd,
                   oh);
          break;
      }
    }
    k_.scale(oh, 1.0f / sum, oh, hd);
  });
}

}  // namespace

Result<std::shared_ptr<Backend>> CreateCpuBackend(const CpuBackendOptions& options) {
  if (options.threads < 0) return InvalidArgument("threads must be >= 0", "threads");
  int threads = options.threads;
  if (threads == 0) threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  const Kernels* kernels = nullptr;
  if (options.isa.empty()) {
    // The widest table that agrees with the portable one on a self-check.
    for (cpu::Isa isa : {cpu::Isa::kAvx512, cpu::Isa::kAvx2}) {
      const Kernels* k = cpu::KernelsFor(isa);
      if (k == nullptr) continue;
      if (cpu::MatchesGeneric(*k)) {
        kernels = k;
        break;
      }
      std::fprintf(stderr, "tollgate: %s kernels disagree with the portable ones on this CPU; not using them\n",
                   cpu::IsaName(isa));
    }
    if (kernels == nullptr) kernels = &cpu::GenericKernels();
  } else {
    for (cpu::Isa isa : {cpu::Isa::kGeneric, cpu::Isa::kAvx2, cpu::Isa::kAvx512}) {
      if (options.isa == cpu::IsaName(isa)) kernels = cpu::KernelsFor(isa);
    }
    if (kernels == nullptr) {
      return InvalidArgument("CPU kernels '" + options.isa + "' are not available on this CPU or build", "isa");
    }
  }
  return std::shared_ptr<Backend>(std::make_shared<CpuBackend>(*kernels, threads));
}

}  // namespace tollgate::local_backend
