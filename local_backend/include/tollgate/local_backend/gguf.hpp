// Read-only GGUF v3 (and v2) model files, memory-mapped.
//
// Format: ggml `docs/gguf.md` ("GGUF" file format, version 3) and `ggml/include/gguf.h`.
// All integers are little-endian. Layout:
//   u32 magic "GGUF", u32 version, u64 tensor_count, u64 metadata_kv_count,
//   metadata_kv_count x { gguf_string key, u32 value_type, value },
//   tensor_count x { gguf_string name, u32 n_dims, u64 ne[n_dims], u32 ggml_type, u64 offset },
//   padding to `general.alignment` (default 32), then the tensor data blob.
// gguf_string is { u64 length, bytes } without a terminating NUL. Tensor
// offsets are relative to the start of the data blob and are multiples of the
// alignment. `ne[0]` is the fastest-varying dimension: a matrix with
// ne = [in, out] is stored row-major as `out` rows of `in` elements.
//
// Every length, count and offset is checked against the file size before it is
// used, so a truncated or corrupt file yields Error{kInvalidArgument} naming
// what was wrong and where; it never reads out of bounds.
//
// Thread-safety: a GgufFile is immutable after Open(); all const methods may be
// called concurrently. Pointers and views it hands out stay valid for the
// lifetime of the GgufFile (they point into the mapping).
#pragma once

#include "tollgate/core/error.hpp"

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace tollgate::local_backend {

// Metadata value types (gguf.md, `gguf_metadata_value_type`).
enum class GgufType : uint32_t {
  kUint8 = 0,
  kInt8 = 1,
  kUint16 = 2,
  kInt16 = 3,
  kUint32 = 4,
  kInt32 = 5,
  kFloat32 = 6,
  kBool = 7,
  kString = 8,
  kArray = 9,
  kUint64 = 10,
  kInt64 = 11,
  kFloat64 = 12,
};

// Tensor element types (ggml.h `enum ggml_type`). Open() accepts exactly these
// ids, because it must know each type's block size to bounds-check the data
// (other ids, e.g. the IQ* types, give kInvalidArgument). Block sizes and
// layouts: quant.hpp.
enum class GgmlType : uint32_t {
  kF32 = 0,
  kF16 = 1,
  kQ4_0 = 2,
  kQ4_1 = 3,
  kQ5_0 = 6,
  kQ5_1 = 7,
  kQ8_0 = 8,
  kQ8_1 = 9,
  kQ2_K = 10,
  kQ3_K = 11,
  kQ4_K = 12,
  kQ5_K = 13,
  kQ6_K = 14,
  kQ8_K = 15,
  kI8 = 24,
  kI16 = 25,
  kI32 = 26,
  kI64 = 27,
  kF64 = 28,
  kBF16 = 30,
};

// "F32", "Q8_0", ... or "type#N" for ids this engine does not name.
std::string GgmlTypeName(GgmlType type);

// One metadata value. Integers keep their signedness: unsigned types are held
// as uint64_t, signed as int64_t; kFloat32/kFloat64 as double; arrays as a
// vector of values all of `array_type`.
struct GgufValue {
  GgufType type = GgufType::kUint8;
  GgufType array_type = GgufType::kUint8;  // element type when type == kArray
  std::variant<uint64_t, int64_t, double, bool, std::string, std::vector<GgufValue>> data;
};

struct GgufTensorInfo {
  std::string name;
  std::vector<int64_t> ne;  // dimensions, ne[0] fastest-varying; 1..4 entries
  GgmlType type = GgmlType::kF32;
  uint64_t offset = 0;      // bytes, relative to the data blob
  uint64_t size_bytes = 0;  // bytes the tensor occupies in the file
  int64_t element_count() const;
};

class GgufFile {
 public:
  // Maps `path` read-only (POSIX mmap) and parses and validates header,
  // metadata and tensor infos. Errors (kInvalidArgument): file missing or
  // unreadable, bad magic, unsupported version (only 2 and 3), any length,
  // count, type id, dimension or offset that does not fit the file, duplicate
  // keys or tensor names, non-power-of-two alignment.
  static Result<std::unique_ptr<GgufFile>> Open(const std::string& path);

  ~GgufFile();
  GgufFile(const GgufFile&) = delete;
  GgufFile& operator=(const GgufFile&) = delete;

  uint32_t version() const { return version_; }
  uint64_t alignment() const { return alignment_; }  // bytes
  const std::string& path() const { return path_; }

  // All metadata, by key.
  const std::map<std::string, GgufValue, std::less<>>& metadata() const { return metadata_; }
  // nullptr when absent.
  const GgufValue* Find(std::string_view key) const;

  // Typed accessors. Errors: kNotFound when the key is absent,
  // kInvalidArgument when it has another type (or an integer does not fit).
  // GetInt accepts every integer type; GetFloat accepts kFloat32/kFloat64 and integers.
  Result<std::string_view> GetString(std::string_view key) const;
  Result<int64_t> GetInt(std::string_view key) const;
  Result<double> GetFloat(std::string_view key) const;
  Result<bool> GetBool(std::string_view key) const;
  Result<std::vector<std::string>> GetStringArray(std::string_view key) const;
  Result<std::vector<float>> GetFloatArray(std::string_view key) const;
  Result<std::vector<int64_t>> GetIntArray(std::string_view key) const;

  // Tensor infos in file order.
  const std::vector<GgufTensorInfo>& tensors() const { return tensors_; }
  // nullptr when absent.
  const GgufTensorInfo* FindTensor(std::string_view name) const;
  // The tensor's bytes inside the mapping (size_bytes long, aligned to alignment()).
  std::span<const std::byte> TensorData(const GgufTensorInfo& info) const;

  // The tensor converted to float32, ne[0]-fastest order, with DequantizeRow
  // (quant.hpp: exactly as ggml's `dequantize_row_*`). Supports the types
  // IsDequantizeSupported() accepts: F32 (copied), F16, BF16, Q4_0, Q4_1, Q5_0,
  // Q5_1, Q8_0, Q4_K, Q5_K, Q6_K, Q8_K. Errors: kInvalidArgument for any other
  // type, naming the type and tensor.
  Result<std::vector<float>> ToF32(const GgufTensorInfo& info) const;

 private:
  GgufFile() = default;

  std::string path_;
  const std::byte* base_ = nullptr;
  size_t size_ = 0;
  uint32_t version_ = 0;
  uint64_t alignment_ = 32;
  uint64_t data_offset_ = 0;  // absolute file offset of the data blob
  std::map<std::string, GgufValue, std::less<>> metadata_;
  std::vector<GgufTensorInfo> tensors_;
  std::map<std::string, size_t, std::less<>> tensor_index_;

  friend class GgufParser;
};

// IEEE half -> float (exact).
float HalfToFloat(uint16_t h);

}  // namespace tollgate::local_backend
