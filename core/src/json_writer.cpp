#include "tollgate/core/json_writer.hpp"

#include <cassert>
#include <charconv>
#include <cmath>
#include <cstring>

namespace tollgate {

namespace {

// The bytes a JSON string must escape (RFC 8259 section 7): '"', '\\' and
// U+0000..U+001F.
bool NeedsEscape(unsigned char c) { return c < 0x20 || c == '"' || c == '\\'; }

// Whether any of the 8 bytes of `w` needs escaping, 8 at a time: "Determine
// if a word has a zero byte" (haszero) and "... a byte less than n"
// (hasless, exact for n <= 128), Sean Eron Anderson's Bit Twiddling Hacks.
// A flagged word is then checked byte by byte.
bool MayNeedEscape(uint64_t w) {
  constexpr uint64_t kOnes = 0x0101010101010101ULL;
  constexpr uint64_t kHigh = 0x8080808080808080ULL;
  auto has_zero = [](uint64_t x) { return (x - kOnes) & ~x & kHigh; };
  const uint64_t below_space = (w - kOnes * 0x20) & ~w & kHigh;
  return (below_space | has_zero(w ^ (kOnes * '"')) | has_zero(w ^ (kOnes * '\\'))) != 0;
}

}  // namespace

void JsonWriter::Separate() {
  if (after_key_) {
    after_key_ = false;
    return;
  }
  if (depth_ > 0) {
    const uint64_t bit = uint64_t{1} << (depth_ - 1);
    if (has_value_ & bit) out_.push_back(',');
    has_value_ |= bit;
  }
}

void JsonWriter::Open(char bracket) {
  assert(depth_ < 64 && "JsonWriter: at most 64 containers deep");
  Separate();
  out_.push_back(bracket);
  ++depth_;
  has_value_ &= ~(uint64_t{1} << (depth_ - 1));
}

void JsonWriter::Close(char bracket) {
  out_.push_back(bracket);
  --depth_;
}

void JsonWriter::BeginObject() { Open('{'); }
void JsonWriter::EndObject() { Close('}'); }
void JsonWriter::BeginArray() { Open('['); }
void JsonWriter::EndArray() { Close(']'); }

JsonWriter& JsonWriter::Key(std::string_view name) {
  Separate();
  char buf[64];  // '"' name '":' in one append: names are short literals
  if (name.size() + 3 <= sizeof buf) {
    buf[0] = '"';
    std::memcpy(buf + 1, name.data(), name.size());
    buf[name.size() + 1] = '"';
    buf[name.size() + 2] = ':';
    out_.append(buf, name.size() + 3);
  } else {
    out_.push_back('"');
    out_.append(name);
    out_ += "\":";
  }
  after_key_ = true;
  return *this;
}

void JsonWriter::String(std::string_view s) {
  static constexpr char kHex[] = "0123456789abcdef";
  Separate();
  out_.push_back('"');
  const char* p = s.data();
  const char* const end = p + s.size();
  const char* run = p;  // start of the bytes not yet copied
  while (p < end) {
    if (end - p >= 8) {
      uint64_t w;
      std::memcpy(&w, p, 8);
      if (!MayNeedEscape(w)) {
        p += 8;
        continue;
      }
    }
    const auto c = static_cast<unsigned char>(*p);
    if (!NeedsEscape(c)) {
      ++p;
      continue;
    }
    out_.append(run, p);
    run = ++p;
    out_.push_back('\\');
    switch (c) {
      case '"': out_.push_back('"'); break;
      case '\\': out_.push_back('\\'); break;
      case '\n': out_.push_back('n'); break;
      case '\r': out_.push_back('r'); break;
      case '\t': out_.push_back('t'); break;
      case '\b': out_.push_back('b'); break;
      case '\f': out_.push_back('f'); break;
      default:
        out_ += "u00";
        out_.push_back(kHex[c >> 4]);
        out_.push_back(kHex[c & 0xF]);
    }
  }
  out_.append(run, end);
  out_.push_back('"');
}

void JsonWriter::Int(int64_t v) {
  Separate();
  char buf[24];
  auto [end, ec] = std::to_chars(buf, buf + sizeof buf, v);
  out_.append(buf, end);
}

void JsonWriter::Double(double v) {
  if (!std::isfinite(v)) return Null();
  Separate();
  char buf[32];
  auto [end, ec] = std::to_chars(buf, buf + sizeof buf, v);
  out_.append(buf, end);
}

void JsonWriter::Bool(bool v) {
  Separate();
  out_ += v ? "true" : "false";
}

void JsonWriter::Null() {
  Separate();
  out_ += "null";
}

void JsonWriter::Raw(std::string_view json) {
  Separate();
  out_.append(json);
}

void JsonWriter::OptionalString(const std::optional<std::string>& s) {
  if (s) return String(*s);
  Null();
}

void JsonWriter::OptionalInt(const std::optional<int64_t>& v) {
  if (v) return Int(*v);
  Null();
}

}  // namespace tollgate
