// Writes GGUF v3 model files: metadata of every value type and tensors of any
// type that quant.hpp can quantize (or raw bytes of any type gguf.hpp knows).
//
// Format: ggml `docs/gguf.md` (GGUF version 3) and `ggml/src/gguf.cpp`
// (gguf_write_to_buf); the layout is described in gguf.hpp, which reads what
// this writes. Details this writer fixes:
//   - metadata is written in insertion order (setting a key again replaces its
//     value in place); tensor infos and data in the order tensors were added;
//   - every tensor's data starts at a multiple of the alignment and is padded
//     with zero bytes to the next multiple (also after the last tensor), as
//     ggml does; the alignment is 32 bytes unless `general.alignment` is set
//     (as a uint32, which is how gguf.md defines it);
//   - all integers little-endian (the host's order; x86-64 and aarch64).
//
// Shapes: `ne` lists 1..4 dimensions, ne[0] fastest-varying, as in GgufTensorInfo:
// a matrix with `out` rows of `in` elements is ne = {in, out}. For block-quantized
// types ne[0] must be a multiple of the type's block size (QuantBlockSize()).
//
// Ownership: the writer copies everything it is given (keys, values, float or
// raw data) except RowSource callbacks, which it keeps and calls during
// WriteFile(); whatever they capture must outlive that call.
//
// Threading: a GgufWriter is a plain value with no internal locking; use one
// from one thread at a time. Different writers are independent.
#pragma once

#include "tollgate/core/error.hpp"
#include "tollgate/local_backend/gguf.hpp"

#include <cstddef>
#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace tollgate::local_backend {

class GgufWriter {
 public:
  // Fills `row` (ne[0] floats) with row number `row_index` of a tensor, counting
  // rows over all dimensions above ne[0] (row_index in [0, elements / ne[0])).
  // Called once per row from WriteFile(); with WriteFile(path, threads > 1) it
  // is called concurrently for different rows, in no particular order, so it
  // must be thread-safe and should derive its values from row_index alone.
  using RowSource = std::function<void(int64_t row_index, std::span<float> row)>;

  GgufWriter() = default;

  // --- Metadata. Keys are UTF-8 (gguf.md: lower_snake_case, dot-separated).
  // Each setter stores one value of the named GGUF type; a key set before is
  // replaced (it keeps its position). None of these fail.
  void SetUint8(std::string_view key, uint8_t value);
  void SetInt8(std::string_view key, int8_t value);
  void SetUint16(std::string_view key, uint16_t value);
  void SetInt16(std::string_view key, int16_t value);
  void SetUint32(std::string_view key, uint32_t value);
  void SetInt32(std::string_view key, int32_t value);
  void SetUint64(std::string_view key, uint64_t value);
  void SetInt64(std::string_view key, int64_t value);
  void SetFloat32(std::string_view key, float value);
  void SetFloat64(std::string_view key, double value);
  void SetBool(std::string_view key, bool value);
  void SetString(std::string_view key, std::string_view value);
  // Arrays of one element type.
  void SetStringArray(std::string_view key, std::span<const std::string> values);
  void SetInt32Array(std::string_view key, std::span<const int32_t> values);
  void SetInt64Array(std::string_view key, std::span<const int64_t> values);
  void SetUint32Array(std::string_view key, std::span<const uint32_t> values);
  void SetFloat32Array(std::string_view key, std::span<const float> values);
  void SetBoolArray(std::string_view key, std::span<const bool> values);
  // Any value, in GgufFile's representation (gguf.hpp GgufValue: unsigned
  // types held as uint64_t, signed as int64_t, floats as double; arrays as a
  // vector whose items all have `array_type`, nested arrays allowed). The value
  // is checked at WriteFile(): its alternative must match `type` and every
  // integer must fit its type, else kInvalidArgument naming the key.
  void SetValue(std::string_view key, GgufValue value);
  // Removes a key; false when it was absent.
  bool Remove(std::string_view key);
  // nullptr when absent. Invalidated by the next Set*/Remove.
  const GgufValue* Find(std::string_view key) const;

  // --- Tensors. Errors (kInvalidArgument, naming the tensor): empty or
  // duplicate name, 0 or more than 4 dimensions, a negative dimension, ne[0]
  // not a multiple of the type's block size, a type that cannot be produced
  // that way (below), or data of the wrong size.
  //
  // From float data (elements in ne[0]-fastest order, size == product of ne),
  // converted/quantized now with QuantizeRow() (quant.hpp): F32, F16, BF16,
  // Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K, Q8_K (the types
  // IsQuantizeSupported() accepts).
  Result<void> AddTensor(std::string_view name, std::span<const int64_t> ne, GgmlType type,
                         std::span<const float> data);
  // From rows produced during WriteFile() (RowSource above), converted row by
  // row, so a large tensor never exists in float in memory. Same types as AddTensor.
  Result<void> AddTensorRows(std::string_view name, std::span<const int64_t> ne, GgmlType type,
                             RowSource rows);
  // From bytes already in `type`'s on-disk layout; any type gguf.hpp knows.
  // size == (product of ne) / block size * bytes per block.
  Result<void> AddTensorBytes(std::string_view name, std::span<const int64_t> ne, GgmlType type,
                              std::span<const std::byte> data);

  size_t tensor_count() const { return tensors_.size(); }

  // Writes the whole file to `path` (created or truncated; written to
  // `path + ".tmp"` first and renamed, so a failed write never leaves a
  // half-written file under `path`). Errors: kInvalidArgument when
  // `general.alignment` is not a uint32 power of two or a SetValue() value is
  // inconsistent; kInternal when the file cannot be created or written
  // (message names the path and errno text). The writer is unchanged and may
  // be written again.
  // `threads` (>= 1) workers convert RowSource tensors; other tensors are
  // already converted. The file's bytes do not depend on `threads`.
  Result<void> WriteFile(const std::string& path, int threads = 1) const;

 private:
  struct Tensor {
    std::string name;
    std::vector<int64_t> ne;
    GgmlType type = GgmlType::kF32;
    std::vector<std::byte> bytes;  // empty when `rows` is set
    RowSource rows;
    uint64_t size_bytes = 0;
  };
  Result<Tensor*> NewTensor(std::string_view name, std::span<const int64_t> ne, GgmlType type);

  std::vector<std::pair<std::string, GgufValue>> metadata_;
  std::vector<Tensor> tensors_;
};

}  // namespace tollgate::local_backend
