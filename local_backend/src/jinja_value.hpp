// Values of the Jinja subset that renders chat templates (chat_template.hpp).
//
// The semantics are Python's, as Jinja2 runs them inside Hugging Face
// transformers (`ImmutableSandboxedEnvironment`, default `Undefined`): str()
// of None is "None", `+` joins only like with like, `==` compares numbers
// across int/float/bool, strings index and measure by code point. Values are
// immutable except namespaces, so copies share their payload (shared_ptr).
//
// Not thread-safe to mutate a Namespace from two threads; everything else is
// read-only once built.
#pragma once

#include <boost/json/value.hpp>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

namespace tollgate::local_backend::jinja {

// Raised inside the engine (syntax errors, unsupported constructs, runtime
// type errors, raise_exception); chat_template.cpp turns it into an Error.
class TemplateError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

class Value;
class Interpreter;

using List = std::vector<Value>;

// A dict with string keys in insertion order (Python 3.7+ dicts, JSON objects).
struct Dict {
  std::vector<std::pair<std::string, Value>> entries;
  const Value* Find(std::string_view key) const;
  // Replaces the value of `key` or appends it.
  void Set(std::string key, Value value);
};

// `namespace(...)`: the one mutable object (`{% set ns.x = ... %}`).
struct Namespace {
  Dict attrs;
};

// Arguments of a call: positional, then keyword in source order.
struct CallArgs {
  std::vector<Value> positional;
  std::vector<std::pair<std::string, Value>> keyword;
};

using NativeFunction = std::function<Value(CallArgs& args, Interpreter& interpreter)>;

struct Callable {
  std::string name;  // for error messages ("str.startswith", "namespace", macro name)
  NativeFunction fn;
};

class Value {
 public:
  enum class Kind { kUndefined, kNone, kBool, kInt, kFloat, kString, kList, kDict, kNamespace, kCallable };

  Value() = default;  // undefined
  static Value Undefined(std::string hint = {});
  static Value None();
  static Value Bool(bool b);
  static Value Int(int64_t i);
  static Value Float(double f);
  static Value Str(std::string s);
  static Value MakeList(List items);
  // A list that prints as a Python tuple: tuple literals and (key, value)
  // pairs of items() / dictsort.
  static Value MakeTuple(List items);
  static Value MakeDict(Dict dict);
  static Value MakeNamespace(Dict attrs);
  static Value Function(std::string name, NativeFunction fn);
  // Deep conversion: objects keep their key order; integers that fit int64
  // stay integers, others become floats.
  static Value FromJson(const boost::json::value& json);

  Kind kind() const { return kind_; }
  bool is_undefined() const { return kind_ == Kind::kUndefined; }
  bool is_none() const { return kind_ == Kind::kNone; }
  bool is_string() const { return kind_ == Kind::kString; }
  bool is_list() const { return kind_ == Kind::kList; }
  bool is_dict() const { return kind_ == Kind::kDict; }
  bool is_tuple() const { return tuple_; }
  bool is_number() const { return kind_ == Kind::kInt || kind_ == Kind::kFloat || kind_ == Kind::kBool; }

  bool boolean() const { return bool_; }
  int64_t integer() const { return int_; }
  double floating() const { return float_; }
  // Numeric value of an int, float or bool.
  double AsDouble() const;
  const std::string& str() const { return *static_cast<const std::string*>(payload_.get()); }
  const List& list() const { return *static_cast<const List*>(payload_.get()); }
  const Dict& dict() const { return *static_cast<const Dict*>(payload_.get()); }
  Namespace& ns() const { return *static_cast<Namespace*>(payload_.get()); }
  const Callable& callable() const { return *static_cast<const Callable*>(payload_.get()); }
  // Why an undefined value is undefined ("'foo' is undefined"), for errors.
  const std::string& undefined_hint() const;

  // Python truthiness (undefined is false).
  bool Truthy() const;

  bool SameNamespace(const Value& other) const { return kind_ == Kind::kNamespace && payload_ == other.payload_; }

 private:
  // One payload pointer whose type the kind says (std::string for strings
  // and undefined's hint, List, Dict, Namespace, Callable), so that a Value
  // is small and cheap to copy.
  Kind kind_ = Kind::kUndefined;
  bool tuple_ = false;
  union {
    bool bool_;
    int64_t int_ = 0;
    double float_;
  };
  std::shared_ptr<void> payload_;
};

// Python's type name of a value ("str", "int", "list", "dict", "NoneType",
// "Undefined", "namespace", "function").
std::string TypeName(const Value& value);

// str(value) as Jinja prints it: undefined → "", None → "None", True →
// "True", floats as Python's repr, lists and dicts as Python's repr.
std::string ToStr(const Value& value);
// repr(value) (strings quoted the way Python quotes them).
std::string Repr(const Value& value);
// Python's repr of a float ("1.0", "0.1", "1e-05", "inf").
std::string FloatRepr(double f);

struct JsonOptions {
  // nullopt: one line (Python indent=None); else the text of one level
  // (indent=4 is four spaces).
  std::optional<std::string> indent;
  // Python's defaults: (", ", ": ") without indent, (",", ": ") with it.
  std::string item_separator;
  std::string key_separator;
  bool sort_keys = false;
  bool ensure_ascii = false;
};
// json.dumps(value, ...) as Hugging Face's `tojson` filter calls it
// (transformers chat_template_utils: ensure_ascii=False, sort_keys=False).
// Throws TemplateError for values JSON cannot hold (undefined, functions).
std::string ToJson(const Value& value, const JsonOptions& options);

// Python ==.
bool Equal(const Value& a, const Value& b);
// Python <, for numbers, strings and lists: negative, zero or positive.
// Throws TemplateError for other pairs.
int Compare(const Value& a, const Value& b);

// ---------------------------------------------------------------- UTF-8 helpers

// Byte offset of each code point of `s`, plus s.size() at the end. Invalid
// bytes count as one code point each.
std::vector<size_t> CodePointOffsets(std::string_view s);
// Decodes the code point at `s[i]` (advancing i); invalid bytes decode as
// themselves (0x80..0xFF).
uint32_t NextCodePoint(std::string_view s, size_t& i);
void AppendUtf8(std::string& out, uint32_t cp);
// Python's str.isspace() for one code point.
bool IsPySpace(uint32_t cp);

}  // namespace tollgate::local_backend::jinja
