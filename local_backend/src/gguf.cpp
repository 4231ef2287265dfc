#include "tollgate/local_backend/gguf.hpp"

#include "tollgate/local_backend/quant.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <bit>
#include <cerrno>
#include <cstring>
#include <limits>

namespace tollgate::local_backend {
namespace {

constexpr uint32_t kGgufMagic = 0x46554747;  // "GGUF" read as little-endian u32
constexpr int kMaxArrayDepth = 8;
constexpr uint64_t kMaxDims = 4;  // GGML_MAX_DIMS

// Block sizes come from quant.cpp's table (ggml.c `type_traits`), so reader,
// writer and kernels agree. Ids absent there are rejected at Open.
bool LookupTraits(uint32_t id, GgmlTypeTraits* out) {
  return LookupGgmlTypeTraits(static_cast<GgmlType>(id), out);
}

Error Invalid(std::string message) { return InvalidArgument(std::move(message)); }

}  // namespace

std::string GgmlTypeName(GgmlType type) {
  switch (type) {
    case GgmlType::kF32: return "F32";
    case GgmlType::kF16: return "F16";
    case GgmlType::kQ4_0: return "Q4_0";
    case GgmlType::kQ4_1: return "Q4_1";
    case GgmlType::kQ5_0: return "Q5_0";
    case GgmlType::kQ5_1: return "Q5_1";
    case GgmlType::kQ8_0: return "Q8_0";
    case GgmlType::kQ8_1: return "Q8_1";
    case GgmlType::kQ2_K: return "Q2_K";
    case GgmlType::kQ3_K: return "Q3_K";
    case GgmlType::kQ4_K: return "Q4_K";
    case GgmlType::kQ5_K: return "Q5_K";
    case GgmlType::kQ6_K: return "Q6_K";
    case GgmlType::kQ8_K: return "Q8_K";
    case GgmlType::kI8: return "I8";
    case GgmlType::kI16: return "I16";
    case GgmlType::kI32: return "I32";
    case GgmlType::kI64: return "I64";
    case GgmlType::kF64: return "F64";
    case GgmlType::kBF16: return "BF16";
  }
  return "type#" + std::to_string(static_cast<uint32_t>(type));
}

float HalfToFloat(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1fu;
  uint32_t mant = h & 0x3ffu;
  uint32_t bits;
  if (exp == 0) {
    if (mant == 0) {
      bits = sign;
    } else {  // subnormal: renormalise
      int e = -1;
      do {
        ++e;
        mant <<= 1;
      } while ((mant & 0x400u) == 0);
      mant &= 0x3ffu;
      bits = sign | static_cast<uint32_t>(127 - 15 - e) << 23 | mant << 13;
    }
  } else if (exp == 0x1f) {
    bits = sign | 0x7f800000u | mant << 13;  // inf / NaN
  } else {
    bits = sign | (exp + 127 - 15) << 23 | mant << 13;
  }
  return std::bit_cast<float>(bits);
}

int64_t GgufTensorInfo::element_count() const {
  int64_t n = 1;
  for (int64_t d : ne) n *= d;
  return n;
}

// Bounds-checked cursor over the mapping. Every read reports what it was
// reading and the file offset, so corrupt files give actionable messages.
class GgufParser {
 public:
  GgufParser(const std::byte* base, size_t size) : base_(base), size_(size) {}

  Result<void> Parse(GgufFile& file) {
    uint32_t magic = 0;
    if (auto r = ReadU32("magic", magic); !r) return r;
    if (magic != kGgufMagic) return Invalid("not a GGUF file (bad magic) in " + file.path_);
    if (auto r = ReadU32("version", file.version_); !r) return r;
    if (file.version_ != 2 && file.version_ != 3) {
      return Invalid("unsupported GGUF version " + std::to_string(file.version_) + " in " +
                     file.path_ + " (supported: 2, 3)");
    }
    uint64_t tensor_count = 0;
    uint64_t kv_count = 0;
    if (auto r = ReadU64("tensor_count", tensor_count); !r) return r;
    if (auto r = ReadU64("metadata_kv_count", kv_count); !r) return r;
    // Each kv needs at least 8 (key length) + 4 (type) + 1 bytes; each tensor
    // info at least 8 + 4 + 4 + 8. Reject absurd counts before allocating.
    if (kv_count > Remaining() / 13) return Invalid(At("metadata_kv_count too large for file"));
    for (uint64_t i = 0; i < kv_count; ++i) {
      std::string key;
      if (auto r = ReadString("metadata key", key); !r) return r;
      uint32_t type = 0;
      if (auto r = ReadU32("metadata value type", type); !r) return r;
      GgufValue value;
      if (auto r = ReadValue(key, type, 0, value); !r) return r;
      if (!file.metadata_.emplace(key, std::move(value)).second) {
        return Invalid("duplicate metadata key '" + key + "' in " + file.path_);
      }
    }
    if (file.Find("general.alignment") != nullptr) {
      auto alignment = file.GetInt("general.alignment");
      if (!alignment || *alignment <= 0 || !std::has_single_bit(static_cast<uint64_t>(*alignment))) {
        return Invalid("general.alignment must be a positive power of two in " + file.path_);
      }
      file.alignment_ = static_cast<uint64_t>(*alignment);
    }
    if (tensor_count > Remaining() / 24) return Invalid(At("tensor_count too large for file"));
    file.tensors_.reserve(tensor_count);
    for (uint64_t i = 0; i < tensor_count; ++i) {
      GgufTensorInfo info;
      if (auto r = ReadTensorInfo(info); !r) return r;
      if (!file.tensor_index_.emplace(info.name, file.tensors_.size()).second) {
        return Invalid("duplicate tensor name '" + info.name + "' in " + file.path_);
      }
      file.tensors_.push_back(std::move(info));
    }
    const uint64_t align = file.alignment_;
    file.data_offset_ = (pos_ + align - 1) / align * align;
    const uint64_t blob = file.data_offset_ <= size_ ? size_ - file.data_offset_ : 0;
    for (const GgufTensorInfo& t : file.tensors_) {
      if (t.offset % align != 0) {
        return Invalid("tensor '" + t.name + "' offset " + std::to_string(t.offset) +
                       " is not a multiple of the alignment " + std::to_string(align));
      }
      if (t.offset > blob || t.size_bytes > blob - t.offset) {
        return Invalid("tensor '" + t.name + "' data [" + std::to_string(t.offset) + ", +" +
                       std::to_string(t.size_bytes) + ") lies outside the file's data section (" +
                       std::to_string(blob) + " bytes); file truncated?");
      }
    }
    return {};
  }

 private:
  size_t Remaining() const { return size_ - pos_; }
  std::string At(std::string_view what) const {
    return std::string(what) + " at byte " + std::to_string(pos_) + " of " + std::to_string(size_);
  }
  Error Truncated(std::string_view what) const {
    return Invalid("GGUF file truncated: " + At("cannot read " + std::string(what)));
  }

  template <class T>
  Result<void> ReadRaw(std::string_view what, T& out) {
    if (Remaining() < sizeof(T)) return Truncated(what);
    std::memcpy(&out, base_ + pos_, sizeof(T));  // little-endian host assumed (x86-64, aarch64)
    pos_ += sizeof(T);
    return {};
  }
  Result<void> ReadU32(std::string_view what, uint32_t& out) { return ReadRaw(what, out); }
  Result<void> ReadU64(std::string_view what, uint64_t& out) { return ReadRaw(what, out); }

  Result<void> ReadString(std::string_view what, std::string& out) {
    uint64_t len = 0;
    if (auto r = ReadU64(what, len); !r) return r;
    if (len > Remaining()) return Invalid(At(std::string(what) + " length " + std::to_string(len) + " exceeds the file"));
    out.assign(reinterpret_cast<const char*>(base_ + pos_), len);
    pos_ += len;
    return {};
  }

  Result<void> ReadValue(const std::string& key, uint32_t type, int depth, GgufValue& out) {
    out.type = static_cast<GgufType>(type);
    switch (out.type) {
      case GgufType::kUint8: { uint8_t v{}; if (auto r = ReadRaw(key, v); !r) return r; out.data = uint64_t{v}; return {}; }
      case GgufType::kInt8: { int8_t v{}; if (auto r = ReadRaw(key, v); !r) return r; out.data = int64_t{v}; return {}; }
      case GgufType::kUint16: { uint16_t v{}; if (auto r = ReadRaw(key, v); !r) return r; out.data = uint64_t{v}; return {}; }
      case GgufType::kInt16: { int16_t v{}; if (auto r = ReadRaw(key, v); !r) return r; out.data = int64_t{v}; return {}; }
      case GgufType::kUint32: { uint32_t v{}; if (auto r = ReadRaw(key, v); !r) return r; out.data = uint64_t{v}; return {}; }
      case GgufType::kInt32: { int32_t v{}; if (auto r = ReadRaw(key, v); !r) return r; out.data = int64_t{v}; return {}; }
      case GgufType::kUint64: { uint64_t v{}; if (auto r = ReadRaw(key, v); !r) return r; out.data = v; return {}; }
      case GgufType::kInt64: { int64_t v{}; if (auto r = ReadRaw(key, v); !r) return r; out.data = v; return {}; }
      case GgufType::kFloat32: { float v{}; if (auto r = ReadRaw(key, v); !r) return r; out.data = double{v}; return {}; }
      case GgufType::kFloat64: { double v{}; if (auto r = ReadRaw(key, v); !r) return r; out.data = v; return {}; }
      case GgufType::kBool: {
        uint8_t v{};
        if (auto r = ReadRaw(key, v); !r) return r;
        if (v > 1) return Invalid(At("metadata '" + key + "': bool value " + std::to_string(v)));
        out.data = v != 0;
        return {};
      }
      case GgufType::kString: {
        std::string s;
        if (auto r = ReadString(key, s); !r) return r;
        out.data = std::move(s);
        return {};
      }
      case GgufType::kArray: {
        if (depth >= kMaxArrayDepth) return Invalid(At("metadata '" + key + "': arrays nested too deeply"));
        uint32_t elem_type = 0;
        uint64_t count = 0;
        if (auto r = ReadU32(key, elem_type); !r) return r;
        if (auto r = ReadU64(key, count); !r) return r;
        // The smallest element is 1 byte; reject counts the file cannot hold.
        if (count > Remaining()) {
          return Invalid(At("metadata '" + key + "': array of " + std::to_string(count) +
                            " elements exceeds the file"));
        }
        out.array_type = static_cast<GgufType>(elem_type);
        std::vector<GgufValue> items(count);
        for (uint64_t i = 0; i < count; ++i) {
          if (auto r = ReadValue(key, elem_type, depth + 1, items[i]); !r) return r;
        }
        out.data = std::move(items);
        return {};
      }
    }
    return Invalid(At("metadata '" + key + "': unknown value type " + std::to_string(type)));
  }

  Result<void> ReadTensorInfo(GgufTensorInfo& info) {
    if (auto r = ReadString("tensor name", info.name); !r) return r;
    uint32_t n_dims = 0;
    if (auto r = ReadU32("tensor n_dims", n_dims); !r) return r;
    if (n_dims == 0 || n_dims > kMaxDims) {
      return Invalid(At("tensor '" + info.name + "' has " + std::to_string(n_dims) + " dimensions (1..4 allowed)"));
    }
    info.ne.resize(n_dims);
    int64_t elements = 1;
    for (uint32_t d = 0; d < n_dims; ++d) {
      uint64_t ne = 0;
      if (auto r = ReadU64("tensor dimension", ne); !r) return r;
      if (ne > (uint64_t{1} << 40) || (ne != 0 && static_cast<uint64_t>(elements) > (uint64_t{1} << 62) / ne)) {
        return Invalid(At("tensor '" + info.name + "' dimensions too large"));
      }
      info.ne[d] = static_cast<int64_t>(ne);
      elements *= static_cast<int64_t>(ne);
    }
    uint32_t type = 0;
    if (auto r = ReadU32("tensor type", type); !r) return r;
    GgmlTypeTraits traits;
    if (!LookupTraits(type, &traits)) {
      return Invalid("tensor '" + info.name + "' has unknown or unsupported ggml type id " + std::to_string(type));
    }
    info.type = static_cast<GgmlType>(type);
    if (info.ne[0] % traits.block_size != 0) {
      return Invalid("tensor '" + info.name + "': row of " + std::to_string(info.ne[0]) +
                     " elements is not a multiple of the " + GgmlTypeName(info.type) + " block size " +
                     std::to_string(traits.block_size));
    }
    info.size_bytes = static_cast<uint64_t>(elements / traits.block_size) * static_cast<uint64_t>(traits.block_bytes);
    if (auto r = ReadU64("tensor offset", info.offset); !r) return r;
    return {};
  }

  const std::byte* base_;
  size_t size_;
  size_t pos_ = 0;
};

Result<std::unique_ptr<GgufFile>> GgufFile::Open(const std::string& path) {
  std::unique_ptr<GgufFile> file(new GgufFile());
  file->path_ = path;
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return Invalid("cannot open model file " + path + ": " + std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    return Invalid("model file " + path + " is not a regular file");
  }
  if (st.st_size < 24) {
    ::close(fd);
    return Invalid("model file " + path + " is too small to be GGUF (" + std::to_string(st.st_size) + " bytes)");
  }
  void* map = ::mmap(nullptr, static_cast<size_t>(st.st_size), PROT_READ, MAP_PRIVATE, fd, 0);
  const int map_errno = errno;
  ::close(fd);  // the mapping keeps the file referenced
  if (map == MAP_FAILED) return Invalid("cannot mmap " + path + ": " + std::strerror(map_errno));
  file->base_ = static_cast<const std::byte*>(map);
  file->size_ = static_cast<size_t>(st.st_size);
  GgufParser parser(file->base_, file->size_);
  if (auto r = parser.Parse(*file); !r) {
    Error e = r.error();
    if (e.message.find(path) == std::string::npos) e.message += " (" + path + ")";
    return e;
  }
  return file;
}

GgufFile::~GgufFile() {
  if (base_ != nullptr) ::munmap(const_cast<std::byte*>(base_), size_);
}

const GgufValue* GgufFile::Find(std::string_view key) const {
  auto it = metadata_.find(key);
  return it == metadata_.end() ? nullptr : &it->second;
}

namespace {

Error NotFound(std::string_view key) {
  return Error{ErrorCode::kNotFound, "GGUF metadata key '" + std::string(key) + "' is absent", {}, {}};
}
Error WrongType(std::string_view key, std::string_view want) {
  return Invalid("GGUF metadata key '" + std::string(key) + "' is not " + std::string(want));
}

bool AsInt(const GgufValue& v, int64_t* out) {
  if (const auto* u = std::get_if<uint64_t>(&v.data)) {
    if (*u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) return false;
    *out = static_cast<int64_t>(*u);
    return true;
  }
  if (const auto* i = std::get_if<int64_t>(&v.data)) {
    *out = *i;
    return true;
  }
  return false;
}

}  // namespace

Result<std::string_view> GgufFile::GetString(std::string_view key) const {
  const GgufValue* v = Find(key);
  if (!v) return NotFound(key);
  if (const auto* s = std::get_if<std::string>(&v->data)) return std::string_view(*s);
  return WrongType(key, "a string");
}

Result<int64_t> GgufFile::GetInt(std::string_view key) const {
  const GgufValue* v = Find(key);
  if (!v) return NotFound(key);
  int64_t out = 0;
  if (AsInt(*v, &out)) return out;
  return WrongType(key, "an integer (fitting int64)");
}

Result<double> GgufFile::GetFloat(std::string_view key) const {
  const GgufValue* v = Find(key);
  if (!v) return NotFound(key);
  if (const auto* d = std::get_if<double>(&v->data)) return *d;
  int64_t i = 0;
  if (AsInt(*v, &i)) return static_cast<double>(i);
  return WrongType(key, "a number");
}

Result<bool> GgufFile::GetBool(std::string_view key) const {
  const GgufValue* v = Find(key);
  if (!v) return NotFound(key);
  if (const auto* b = std::get_if<bool>(&v->data)) return *b;
  return WrongType(key, "a bool");
}

Result<std::vector<std::string>> GgufFile::GetStringArray(std::string_view key) const {
  const GgufValue* v = Find(key);
  if (!v) return NotFound(key);
  const auto* items = std::get_if<std::vector<GgufValue>>(&v->data);
  if (!items || v->array_type != GgufType::kString) return WrongType(key, "an array of strings");
  std::vector<std::string> out;
  out.reserve(items->size());
  for (const GgufValue& item : *items) out.push_back(std::get<std::string>(item.data));
  return out;
}

Result<std::vector<float>> GgufFile::GetFloatArray(std::string_view key) const {
  const GgufValue* v = Find(key);
  if (!v) return NotFound(key);
  const auto* items = std::get_if<std::vector<GgufValue>>(&v->data);
  if (!items || (v->array_type != GgufType::kFloat32 && v->array_type != GgufType::kFloat64)) {
    return WrongType(key, "an array of floats");
  }
  std::vector<float> out;
  out.reserve(items->size());
  for (const GgufValue& item : *items) out.push_back(static_cast<float>(std::get<double>(item.data)));
  return out;
}

Result<std::vector<int64_t>> GgufFile::GetIntArray(std::string_view key) const {
  const GgufValue* v = Find(key);
  if (!v) return NotFound(key);
  const auto* items = std::get_if<std::vector<GgufValue>>(&v->data);
  if (!items) return WrongType(key, "an array of integers");
  std::vector<int64_t> out;
  out.reserve(items->size());
  for (const GgufValue& item : *items) {
    int64_t i = 0;
    if (!AsInt(item, &i)) return WrongType(key, "an array of integers");
    out.push_back(i);
  }
  return out;
}

const GgufTensorInfo* GgufFile::FindTensor(std::string_view name) const {
  auto it = tensor_index_.find(name);
  return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

std::span<const std::byte> GgufFile::TensorData(const GgufTensorInfo& info) const {
  return {base_ + data_offset_ + info.offset, static_cast<size_t>(info.size_bytes)};
}

Result<std::vector<float>> GgufFile::ToF32(const GgufTensorInfo& info) const {
  if (!IsDequantizeSupported(info.type)) {
    return Invalid("tensor '" + info.name + "' has type " + GgmlTypeName(info.type) +
                   ", which cannot be converted to F32 (supported: F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, "
                   "Q8_0, Q4_K, Q5_K, Q6_K, Q8_K)");
  }
  // Open() checked that ne[0] is a multiple of the block size and that
  // size_bytes lies inside the mapping, so DequantizeRow reads only the tensor.
  const std::span<const std::byte> bytes = TensorData(info);
  const int64_t n = info.element_count();
  std::vector<float> out(static_cast<size_t>(n));
  if (n > 0) DequantizeRow(info.type, bytes.data(), out.data(), n);
  return out;
}

}  // namespace tollgate::local_backend
