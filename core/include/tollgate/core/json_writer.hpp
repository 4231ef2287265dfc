// JsonWriter: appends one JSON text (RFC 8259) to a string, field by field,
// without building a tree. For the records written once per call on the hot
// path (the usage spool record, the access-log line, a usage row's JSON
// columns), where a Boost.JSON tree cost an allocation and a hash per field
// and its serializer most of the rest (bench/gateway_overhead.sh's callgrind
// profile). Readers still parse these texts with Boost.JSON.
//
// Strings are written byte for byte except '"', '\\' and the control
// characters U+0000..U+001F, which are escaped (RFC 8259 section 7); bytes
// that are not valid UTF-8 pass through unchanged, as Boost.JSON's serializer
// passes them (the spool reader parses with allow_invalid_utf8).
// Numbers: integers in decimal; doubles in the shortest form that reads back
// to the same value (std::to_chars), non-finite ones as null.
//
// The caller writes a well-formed sequence (Key before each member value,
// Begin/End paired, at most 64 containers deep); the writer only places the
// commas. Not thread-safe; one per text. It writes into `out`, which it does not own and which must
// outlive it.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace tollgate {

class JsonWriter {
 public:
  explicit JsonWriter(std::string& out) : out_(out) {}

  void BeginObject();
  void EndObject();
  void BeginArray();
  void EndArray();
  // The name of the next object member: a literal name that needs no
  // escaping (no '"', '\\' or control character); returns *this for the value.
  JsonWriter& Key(std::string_view name);

  void String(std::string_view s);
  void Int(int64_t v);
  void Double(double v);
  void Bool(bool v);
  void Null();
  // `json`, already a complete JSON value, as it is.
  void Raw(std::string_view json);
  // The value, or null.
  void OptionalString(const std::optional<std::string>& s);
  void OptionalInt(const std::optional<int64_t>& v);

 private:
  void Separate();
  void Open(char bracket);
  void Close(char bracket);

  std::string& out_;
  // Bit d: a value was written in the open container at depth d (1-based;
  // a comma is due before the next one).
  uint64_t has_value_ = 0;
  int depth_ = 0;
  bool after_key_ = false;
};

}  // namespace tollgate
