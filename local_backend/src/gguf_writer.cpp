#include "tollgate/local_backend/gguf_writer.hpp"

#include "tollgate/local_backend/quant.hpp"

#include <algorithm>
#include <atomic>
#include <bit>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <limits>
#include <memory>
#include <thread>

namespace tollgate::local_backend {
namespace {

constexpr uint32_t kGgufMagic = 0x46554747;  // "GGUF" as a little-endian u32
constexpr uint32_t kGgufVersion = 3;
constexpr uint64_t kDefaultAlignment = 32;   // gguf.md GGUF_DEFAULT_ALIGNMENT
constexpr int kMaxArrayDepth = 8;            // as gguf.cpp's reader
// Rows are converted in chunks of about this many elements, so a RowSource
// tensor never needs more than a few MiB of buffers whatever its size.
constexpr int64_t kChunkElements = int64_t{1} << 22;

GgufValue Scalar(GgufType type, uint64_t v) { return GgufValue{type, GgufType::kUint8, v}; }
GgufValue Signed(GgufType type, int64_t v) { return GgufValue{type, GgufType::kUint8, v}; }

// Checks that `v` is representable as its declared GGUF type.
Result<void> Validate(std::string_view key, const GgufValue& v, int depth) {
  auto bad = [&](std::string_view why) {
    return InvalidArgument("GGUF metadata '" + std::string(key) + "': " + std::string(why));
  };
  auto unsigned_max = [](GgufType t) -> uint64_t {
    switch (t) {
      case GgufType::kUint8: return 0xff;
      case GgufType::kUint16: return 0xffff;
      case GgufType::kUint32: return 0xffffffffu;
      default: return std::numeric_limits<uint64_t>::max();
    }
  };
  auto signed_range = [](GgufType t, int64_t* lo, int64_t* hi) {
    switch (t) {
      case GgufType::kInt8: *lo = -128; *hi = 127; return;
      case GgufType::kInt16: *lo = -32768; *hi = 32767; return;
      case GgufType::kInt32: *lo = std::numeric_limits<int32_t>::min(); *hi = std::numeric_limits<int32_t>::max(); return;
      default: *lo = std::numeric_limits<int64_t>::min(); *hi = std::numeric_limits<int64_t>::max(); return;
    }
  };
  switch (v.type) {
    case GgufType::kUint8:
    case GgufType::kUint16:
    case GgufType::kUint32:
    case GgufType::kUint64: {
      const auto* u = std::get_if<uint64_t>(&v.data);
      if (!u) return bad("an unsigned type must hold uint64_t");
      if (*u > unsigned_max(v.type)) return bad("value " + std::to_string(*u) + " does not fit its type");
      return {};
    }
    case GgufType::kInt8:
    case GgufType::kInt16:
    case GgufType::kInt32:
    case GgufType::kInt64: {
      const auto* i = std::get_if<int64_t>(&v.data);
      if (!i) return bad("a signed type must hold int64_t");
      int64_t lo = 0, hi = 0;
      signed_range(v.type, &lo, &hi);
      if (*i < lo || *i > hi) return bad("value " + std::to_string(*i) + " does not fit its type");
      return {};
    }
    case GgufType::kFloat32:
    case GgufType::kFloat64:
      if (!std::holds_alternative<double>(v.data)) return bad("a float type must hold double");
      return {};
    case GgufType::kBool:
      if (!std::holds_alternative<bool>(v.data)) return bad("a bool must hold bool");
      return {};
    case GgufType::kString:
      if (!std::holds_alternative<std::string>(v.data)) return bad("a string must hold std::string");
      return {};
    case GgufType::kArray: {
      if (depth >= kMaxArrayDepth) return bad("arrays nested too deeply");
      const auto* items = std::get_if<std::vector<GgufValue>>(&v.data);
      if (!items) return bad("an array must hold std::vector<GgufValue>");
      for (const GgufValue& item : *items) {
        if (item.type != v.array_type) return bad("array items must all have the array's element type");
        if (auto r = Validate(key, item, depth + 1); !r) return r;
      }
      return {};
    }
  }
  return bad("unknown value type " + std::to_string(static_cast<uint32_t>(v.type)));
}

// Buffered little-endian output to a FILE; the first failure sticks.
class Out {
 public:
  explicit Out(std::FILE* f) : f_(f) {}
  bool ok() const { return ok_; }
  uint64_t pos() const { return pos_; }
  void Bytes(const void* p, size_t n) {
    if (!ok_ || n == 0) return;
    if (std::fwrite(p, 1, n, f_) != n) ok_ = false;
    pos_ += n;
  }
  template <class T>
  void Raw(T v) { Bytes(&v, sizeof v); }  // little-endian host (x86-64, aarch64)
  void String(std::string_view s) {
    Raw<uint64_t>(s.size());
    Bytes(s.data(), s.size());
  }
  void PadTo(uint64_t alignment) {
    static constexpr char kZeros[256] = {};
    uint64_t pad = (alignment - pos_ % alignment) % alignment;
    while (pad > 0) {
      const size_t n = static_cast<size_t>(std::min<uint64_t>(pad, sizeof kZeros));
      Bytes(kZeros, n);
      pad -= n;
    }
  }

 private:
  std::FILE* f_;
  bool ok_ = true;
  uint64_t pos_ = 0;
};

void WriteValueBody(Out& out, const GgufValue& v) {
  switch (v.type) {
    case GgufType::kUint8: out.Raw(static_cast<uint8_t>(std::get<uint64_t>(v.data))); return;
    case GgufType::kUint16: out.Raw(static_cast<uint16_t>(std::get<uint64_t>(v.data))); return;
    case GgufType::kUint32: out.Raw(static_cast<uint32_t>(std::get<uint64_t>(v.data))); return;
    case GgufType::kUint64: out.Raw(std::get<uint64_t>(v.data)); return;
    case GgufType::kInt8: out.Raw(static_cast<int8_t>(std::get<int64_t>(v.data))); return;
    case GgufType::kInt16: out.Raw(static_cast<int16_t>(std::get<int64_t>(v.data))); return;
    case GgufType::kInt32: out.Raw(static_cast<int32_t>(std::get<int64_t>(v.data))); return;
    case GgufType::kInt64: out.Raw(std::get<int64_t>(v.data)); return;
    case GgufType::kFloat32: out.Raw(static_cast<float>(std::get<double>(v.data))); return;
    case GgufType::kFloat64: out.Raw(std::get<double>(v.data)); return;
    case GgufType::kBool: out.Raw(static_cast<uint8_t>(std::get<bool>(v.data) ? 1 : 0)); return;
    case GgufType::kString: out.String(std::get<std::string>(v.data)); return;
    case GgufType::kArray: {
      const auto& items = std::get<std::vector<GgufValue>>(v.data);
      out.Raw(static_cast<uint32_t>(v.array_type));
      out.Raw(static_cast<uint64_t>(items.size()));
      for (const GgufValue& item : items) WriteValueBody(out, item);
      return;
    }
  }
}

uint64_t AlignUp(uint64_t x, uint64_t a) { return (x + a - 1) / a * a; }

}  // namespace

// ---------------------------------------------------------------- metadata

void GgufWriter::SetValue(std::string_view key, GgufValue value) {
  for (auto& [k, v] : metadata_) {
    if (k == key) {
      v = std::move(value);
      return;
    }
  }
  metadata_.emplace_back(std::string(key), std::move(value));
}

bool GgufWriter::Remove(std::string_view key) {
  auto it = std::find_if(metadata_.begin(), metadata_.end(), [&](const auto& kv) { return kv.first == key; });
  if (it == metadata_.end()) return false;
  metadata_.erase(it);
  return true;
}

const GgufValue* GgufWriter::Find(std::string_view key) const {
  for (const auto& [k, v] : metadata_) {
    if (k == key) return &v;
  }
  return nullptr;
}

void GgufWriter::SetUint8(std::string_view key, uint8_t value) { SetValue(key, Scalar(GgufType::kUint8, value)); }
void GgufWriter::SetInt8(std::string_view key, int8_t value) { SetValue(key, Signed(GgufType::kInt8, value)); }
void GgufWriter::SetUint16(std::string_view key, uint16_t value) { SetValue(key, Scalar(GgufType::kUint16, value)); }
void GgufWriter::SetInt16(std::string_view key, int16_t value) { SetValue(key, Signed(GgufType::kInt16, value)); }
void GgufWriter::SetUint32(std::string_view key, uint32_t value) { SetValue(key, Scalar(GgufType::kUint32, value)); }
void GgufWriter::SetInt32(std::string_view key, int32_t value) { SetValue(key, Signed(GgufType::kInt32, value)); }
void GgufWriter::SetUint64(std::string_view key, uint64_t value) { SetValue(key, Scalar(GgufType::kUint64, value)); }
void GgufWriter::SetInt64(std::string_view key, int64_t value) { SetValue(key, Signed(GgufType::kInt64, value)); }
void GgufWriter::SetFloat32(std::string_view key, float value) {
  SetValue(key, GgufValue{GgufType::kFloat32, GgufType::kUint8, double{value}});
}
void GgufWriter::SetFloat64(std::string_view key, double value) {
  SetValue(key, GgufValue{GgufType::kFloat64, GgufType::kUint8, value});
}
void GgufWriter::SetBool(std::string_view key, bool value) {
  SetValue(key, GgufValue{GgufType::kBool, GgufType::kUint8, value});
}
void GgufWriter::SetString(std::string_view key, std::string_view value) {
  SetValue(key, GgufValue{GgufType::kString, GgufType::kUint8, std::string(value)});
}

namespace {
template <class T, class F>
GgufValue MakeArray(GgufType elem, std::span<const T> values, F make) {
  std::vector<GgufValue> items;
  items.reserve(values.size());
  for (const T& v : values) items.push_back(make(v));
  return GgufValue{GgufType::kArray, elem, std::move(items)};
}
}  // namespace

void GgufWriter::SetStringArray(std::string_view key, std::span<const std::string> values) {
  SetValue(key, MakeArray(GgufType::kString, values, [](const std::string& s) {
             return GgufValue{GgufType::kString, GgufType::kUint8, s};
           }));
}
void GgufWriter::SetInt32Array(std::string_view key, std::span<const int32_t> values) {
  SetValue(key, MakeArray(GgufType::kInt32, values, [](int32_t v) { return Signed(GgufType::kInt32, v); }));
}
void GgufWriter::SetInt64Array(std::string_view key, std::span<const int64_t> values) {
  SetValue(key, MakeArray(GgufType::kInt64, values, [](int64_t v) { return Signed(GgufType::kInt64, v); }));
}
void GgufWriter::SetUint32Array(std::string_view key, std::span<const uint32_t> values) {
  SetValue(key, MakeArray(GgufType::kUint32, values, [](uint32_t v) { return Scalar(GgufType::kUint32, v); }));
}
void GgufWriter::SetFloat32Array(std::string_view key, std::span<const float> values) {
  SetValue(key, MakeArray(GgufType::kFloat32, values, [](float v) {
             return GgufValue{GgufType::kFloat32, GgufType::kUint8, double{v}};
           }));
}
void GgufWriter::SetBoolArray(std::string_view key, std::span<const bool> values) {
  SetValue(key, MakeArray(GgufType::kBool, values, [](bool v) {
             return GgufValue{GgufType::kBool, GgufType::kUint8, v};
           }));
}

// ----------------------------------------------------------------- tensors

Result<GgufWriter::Tensor*> GgufWriter::NewTensor(std::string_view name, std::span<const int64_t> ne,
                                                  GgmlType type) {
  const std::string quoted = "tensor '" + std::string(name) + "'";
  if (name.empty()) return InvalidArgument("GGUF tensor name is empty");
  for (const Tensor& t : tensors_) {
    if (t.name == name) return InvalidArgument("duplicate " + quoted);
  }
  if (ne.empty() || ne.size() > 4) {
    return InvalidArgument(quoted + " has " + std::to_string(ne.size()) + " dimensions (1..4 allowed)");
  }
  GgmlTypeTraits traits;
  if (!LookupGgmlTypeTraits(type, &traits)) {
    return InvalidArgument(quoted + ": unknown ggml type id " + std::to_string(static_cast<uint32_t>(type)));
  }
  int64_t elements = 1;
  for (int64_t d : ne) {
    // Same limits as the reader (gguf.cpp): each dimension < 2^40, product < 2^62.
    if (d < 0 || d > (int64_t{1} << 40) || (d != 0 && elements > (int64_t{1} << 62) / d)) {
      return InvalidArgument(quoted + " has a negative or too large dimension");
    }
    elements *= d;
  }
  if (ne[0] % traits.block_size != 0) {
    return InvalidArgument(quoted + ": row of " + std::to_string(ne[0]) + " elements is not a multiple of the " +
                           GgmlTypeName(type) + " block size " + std::to_string(traits.block_size));
  }
  Tensor t;
  t.name = std::string(name);
  t.ne.assign(ne.begin(), ne.end());
  t.type = type;
  t.size_bytes = static_cast<uint64_t>(elements / traits.block_size) * static_cast<uint64_t>(traits.block_bytes);
  tensors_.push_back(std::move(t));
  return &tensors_.back();
}

Result<void> GgufWriter::AddTensor(std::string_view name, std::span<const int64_t> ne, GgmlType type,
                                   std::span<const float> data) {
  if (!IsQuantizeSupported(type)) {
    return InvalidArgument("tensor '" + std::string(name) + "': cannot convert float data to " + GgmlTypeName(type));
  }
  auto t = NewTensor(name, ne, type);
  if (!t) return t.error();
  Tensor& tensor = **t;
  int64_t elements = 1;
  for (int64_t d : ne) elements *= d;
  if (static_cast<int64_t>(data.size()) != elements) {
    tensors_.pop_back();
    return InvalidArgument("tensor '" + std::string(name) + "': " + std::to_string(data.size()) +
                           " floats given for " + std::to_string(elements) + " elements");
  }
  tensor.bytes.resize(tensor.size_bytes);
  if (elements > 0) QuantizeRow(type, data.data(), tensor.bytes.data(), elements);
  return {};
}

Result<void> GgufWriter::AddTensorRows(std::string_view name, std::span<const int64_t> ne, GgmlType type,
                                       RowSource rows) {
  if (!IsQuantizeSupported(type)) {
    return InvalidArgument("tensor '" + std::string(name) + "': cannot convert float data to " + GgmlTypeName(type));
  }
  if (!rows) return InvalidArgument("tensor '" + std::string(name) + "': empty RowSource");
  auto t = NewTensor(name, ne, type);
  if (!t) return t.error();
  (*t)->rows = std::move(rows);
  return {};
}

Result<void> GgufWriter::AddTensorBytes(std::string_view name, std::span<const int64_t> ne, GgmlType type,
                                        std::span<const std::byte> data) {
  auto t = NewTensor(name, ne, type);
  if (!t) return t.error();
  Tensor& tensor = **t;
  if (data.size() != tensor.size_bytes) {
    const std::string message = "tensor '" + std::string(name) + "': " + std::to_string(data.size()) +
                                " bytes given, " + GgmlTypeName(type) + " of this shape needs " +
                                std::to_string(tensor.size_bytes);
    tensors_.pop_back();
    return InvalidArgument(message);
  }
  tensor.bytes.assign(data.begin(), data.end());
  return {};
}

// ------------------------------------------------------------------- file

Result<void> GgufWriter::WriteFile(const std::string& path, int threads) const {
  if (threads < 1) threads = 1;
  for (const auto& [key, value] : metadata_) {
    if (auto r = Validate(key, value, 0); !r) return r;
  }
  uint64_t alignment = kDefaultAlignment;
  if (const GgufValue* a = Find("general.alignment")) {
    const auto* u = std::get_if<uint64_t>(&a->data);
    if (a->type != GgufType::kUint32 || !u || *u == 0 || !std::has_single_bit(*u)) {
      return InvalidArgument("GGUF metadata 'general.alignment' must be a uint32 power of two");
    }
    alignment = *u;
  }

  const std::string tmp_path = path + ".tmp";
  std::vector<char> buffer(size_t{1} << 20);  // declared first: it must outlive the FILE
  std::FILE* f = std::fopen(tmp_path.c_str(), "wb");
  if (f == nullptr) {
    return Error{ErrorCode::kInternal, "cannot create " + tmp_path + ": " + std::strerror(errno), {}, {}};
  }
  std::unique_ptr<std::FILE, int (*)(std::FILE*)> closer(f, &std::fclose);
  std::setvbuf(f, buffer.data(), _IOFBF, buffer.size());
  auto fail = [&](const std::string& what) -> Result<void> {
    const int err = errno;
    closer.reset();
    std::remove(tmp_path.c_str());
    return Error{ErrorCode::kInternal, what + " " + tmp_path + ": " + std::strerror(err), {}, {}};
  };

  Out out(f);
  out.Raw(kGgufMagic);
  out.Raw(kGgufVersion);
  out.Raw(static_cast<uint64_t>(tensors_.size()));
  out.Raw(static_cast<uint64_t>(metadata_.size()));
  for (const auto& [key, value] : metadata_) {
    out.String(key);
    out.Raw(static_cast<uint32_t>(value.type));
    WriteValueBody(out, value);
  }
  uint64_t offset = 0;
  for (const Tensor& t : tensors_) {
    out.String(t.name);
    out.Raw(static_cast<uint32_t>(t.ne.size()));
    for (int64_t d : t.ne) out.Raw(static_cast<uint64_t>(d));
    out.Raw(static_cast<uint32_t>(t.type));
    out.Raw(offset);
    offset = AlignUp(offset + t.size_bytes, alignment);
  }
  out.PadTo(alignment);
  const uint64_t data_start = out.pos();

  std::vector<std::byte> chunk;
  for (const Tensor& t : tensors_) {
    if (!t.rows) {
      out.Bytes(t.bytes.data(), t.bytes.size());
    } else if (t.size_bytes > 0) {
      const int64_t row_len = t.ne[0];
      int64_t n_rows = 1;
      for (size_t d = 1; d < t.ne.size(); ++d) n_rows *= t.ne[d];
      const auto row_bytes = static_cast<size_t>(RowBytes(t.type, row_len));
      const int64_t chunk_rows = std::max<int64_t>(1, kChunkElements / row_len);
      for (int64_t r0 = 0; r0 < n_rows && out.ok(); r0 += chunk_rows) {
        const int64_t r1 = std::min(n_rows, r0 + chunk_rows);
        chunk.resize(static_cast<size_t>(r1 - r0) * row_bytes);
        std::atomic<int64_t> next{r0};
        auto work = [&] {
          std::vector<float> row(static_cast<size_t>(row_len));
          for (int64_t r = next++; r < r1; r = next++) {
            t.rows(r, std::span<float>(row));
            QuantizeRow(t.type, row.data(), chunk.data() + static_cast<size_t>(r - r0) * row_bytes, row_len);
          }
        };
        const int workers = static_cast<int>(std::min<int64_t>(threads, r1 - r0));
        std::vector<std::thread> pool;
        for (int w = 1; w < workers; ++w) pool.emplace_back(work);
        work();
        for (std::thread& th : pool) th.join();
        out.Bytes(chunk.data(), chunk.size());
      }
    }
    out.PadTo(alignment);
  }
  if (!out.ok()) return fail("cannot write");
  if (out.pos() != data_start + offset) {
    return fail("internal size mismatch writing");  // broken invariant: offsets above disagree with the data
  }
  if (std::fflush(f) != 0) return fail("cannot write");
  if (std::fclose(closer.release()) != 0) {
    const int err = errno;
    std::remove(tmp_path.c_str());
    return Error{ErrorCode::kInternal, "cannot write " + tmp_path + ": " + std::strerror(err), {}, {}};
  }
  if (std::rename(tmp_path.c_str(), path.c_str()) != 0) {
    const int err = errno;
    std::remove(tmp_path.c_str());
    return Error{ErrorCode::kInternal, "cannot rename " + tmp_path + " to " + path + ": " + std::strerror(err), {}, {}};
  }
  return {};
}

}  // namespace tollgate::local_backend
