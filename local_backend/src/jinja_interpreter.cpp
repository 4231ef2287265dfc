#include "jinja_interpreter.hpp"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <ctime>
#include <limits>

namespace tollgate::local_backend::jinja {
namespace {

using K = Value::Kind;

constexpr std::string_view kFilters[] = {
    "abs",        "attr", "capitalize", "count",      "d",       "default", "dictsort", "first",  "float",
    "indent",     "int",  "items",      "join",       "last",    "length",  "list",     "lower",  "map",
    "max",        "min",  "reject",     "rejectattr", "replace", "reverse", "round",    "safe",   "select",
    "selectattr", "sort", "string",     "sum",        "title",   "tojson",  "trim",     "unique", "upper",
};
constexpr std::string_view kTests[] = {
    "boolean", "callable", "defined",  "divisibleby", "eq",      "equalto",   "escaped", "even",
    "false",   "float",    "ge",       "greaterthan", "gt",      "in",        "integer", "iterable",
    "le",      "lessthan", "lower",    "lt",          "mapping", "ne",        "none",    "number",
    "odd",     "sameas",   "sequence", "string",      "true",    "undefined", "upper",
};

[[noreturn]] void Throw(const std::string& message) { throw TemplateError(message); }

[[noreturn]] void ThrowUndefined(const Value& value) {
  const std::string& hint = value.undefined_hint();
  Throw(hint.empty() ? "undefined value" : hint);
}

std::string AttrOwner(const Value& v) {
  switch (v.kind()) {
    case K::kString:
      return "'str object'";
    case K::kList:
      return "'list object'";
    case K::kDict:
      return "'dict object'";
    case K::kNone:
      return "'None'";
    case K::kNamespace:
      return "'Namespace'";
    default:
      return "'" + TypeName(v) + " object'";
  }
}

Value NoAttribute(const Value& owner, std::string_view name) {
  return Value::Undefined(AttrOwner(owner) + " has no attribute '" + std::string(name) + "'");
}

// ---------------------------------------------------------------- arguments

// Binds positional and keyword arguments to parameter names (Python call
// rules, no *args); missing optional ones stay undefined.
std::vector<Value> BindArgs(const std::string& fn, CallArgs& args, std::initializer_list<std::string_view> params,
                            size_t required = 0) {
  std::vector<Value> bound(params.size());
  std::vector<bool> set(params.size(), false);
  if (args.positional.size() > params.size()) {
    Throw(fn + "() takes at most " + std::to_string(params.size()) + " arguments (" +
          std::to_string(args.positional.size()) + " given)");
  }
  for (size_t i = 0; i < args.positional.size(); ++i) {
    bound[i] = args.positional[i];
    set[i] = true;
  }
  for (auto& [name, value] : args.keyword) {
    size_t i = 0;
    for (std::string_view p : params) {
      if (p == name) break;
      ++i;
    }
    if (i == params.size()) Throw(fn + "() got an unexpected keyword argument '" + name + "'");
    if (set[i]) Throw(fn + "() got multiple values for argument '" + name + "'");
    bound[i] = value;
    set[i] = true;
  }
  for (size_t i = 0; i < required; ++i) {
    if (!set[i]) Throw(fn + "() missing required argument '" + std::string(*(params.begin() + i)) + "'");
  }
  return bound;
}

bool IsNone(const Value& v) { return v.is_undefined() || v.is_none(); }

int64_t AsInt(const Value& v, const std::string& what) {
  if (v.kind() == K::kInt) return v.integer();
  if (v.kind() == K::kBool) return v.boolean() ? 1 : 0;
  Throw(what + " must be an integer, not '" + TypeName(v) + "'");
}

const std::string& AsString(const Value& v, const std::string& what) {
  if (!v.is_string()) Throw(what + " must be a string, not '" + TypeName(v) + "'");
  return v.str();
}

// ---------------------------------------------------------------- strings

char AsciiLower(char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; }
char AsciiUpper(char c) { return c >= 'a' && c <= 'z' ? static_cast<char>(c - 'a' + 'A') : c; }
bool IsAsciiAlpha(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
bool IsSpaceByte(char c) { return c == ' ' || (c >= '\t' && c <= '\r') || (c >= 0x1C && c <= 0x1F); }

// Case mapping is ASCII-only (other letters are left as they are).
std::string Lower(std::string s) {
  for (char& c : s) c = AsciiLower(c);
  return s;
}
std::string Upper(std::string s) {
  for (char& c : s) c = AsciiUpper(c);
  return s;
}
std::string Capitalize(const std::string& s) {
  std::string out = Lower(s);
  if (!out.empty()) out[0] = AsciiUpper(out[0]);
  return out;
}
std::string Title(const std::string& s) {
  std::string out;
  bool prev_cased = false;
  for (char c : s) {
    if (IsAsciiAlpha(c)) {
      out += prev_cased ? AsciiLower(c) : AsciiUpper(c);
      prev_cased = true;
    } else {
      out += c;
      prev_cased = (static_cast<unsigned char>(c) & 0x80) != 0 && prev_cased;
    }
  }
  return out;
}

// str.strip([chars]) / lstrip / rstrip, by code point.
std::string Strip(const std::string& s, const Value& chars, bool left, bool right) {
  std::vector<uint32_t> set;
  const bool whitespace = IsNone(chars);
  if (!whitespace) {
    const std::string& c = AsString(chars, "strip argument");
    for (size_t i = 0; i < c.size();) set.push_back(NextCodePoint(c, i));
  }
  auto strip = [&](uint32_t cp) {
    return whitespace ? IsPySpace(cp) : std::find(set.begin(), set.end(), cp) != set.end();
  };
  const std::vector<size_t> offsets = CodePointOffsets(s);
  size_t begin = 0;
  size_t end = offsets.size() - 1;
  auto cp_at = [&](size_t k) {
    size_t i = offsets[k];
    return NextCodePoint(s, i);
  };
  if (left) {
    while (begin < end && strip(cp_at(begin))) ++begin;
  }
  if (right) {
    while (end > begin && strip(cp_at(end - 1))) --end;
  }
  return s.substr(offsets[begin], offsets[end] - offsets[begin]);
}

// str.split(sep=None, maxsplit=-1) and rsplit.
std::vector<std::string> Split(const std::string& s, const Value& sep_value, int64_t maxsplit, bool from_right) {
  std::vector<std::string> parts;
  if (IsNone(sep_value)) {
    // Runs of whitespace separate; no empty strings at the ends.
    std::vector<std::pair<size_t, size_t>> words;
    size_t i = 0;
    while (i < s.size()) {
      size_t j = i;
      const uint32_t cp = NextCodePoint(s, j);
      if (IsPySpace(cp)) {
        i = j;
        continue;
      }
      const size_t start = i;
      i = j;
      while (i < s.size()) {
        size_t k = i;
        if (IsPySpace(NextCodePoint(s, k))) break;
        i = k;
      }
      words.emplace_back(start, i);
    }
    if (maxsplit < 0 || static_cast<size_t>(maxsplit) >= words.size()) {
      for (auto [a, b] : words) parts.push_back(s.substr(a, b - a));
      return parts;
    }
    if (!from_right) {
      // The remainder keeps its trailing whitespace, as in Python.
      for (int64_t k = 0; k < maxsplit; ++k)
        parts.push_back(s.substr(words[k].first, words[k].second - words[k].first));
      parts.push_back(s.substr(words[maxsplit].first));
      return parts;
    }
    const size_t keep = words.size() - static_cast<size_t>(maxsplit);
    parts.push_back(s.substr(0, words[keep - 1].second));
    for (size_t k = keep; k < words.size(); ++k)
      parts.push_back(s.substr(words[k].first, words[k].second - words[k].first));
    return parts;
  }
  const std::string& sep = AsString(sep_value, "split separator");
  if (sep.empty()) Throw("empty separator");
  if (!from_right) {
    size_t start = 0;
    int64_t splits = 0;
    while (maxsplit < 0 || splits < maxsplit) {
      const size_t at = s.find(sep, start);
      if (at == std::string::npos) break;
      parts.push_back(s.substr(start, at - start));
      start = at + sep.size();
      ++splits;
    }
    parts.push_back(s.substr(start));
    return parts;
  }
  size_t end = s.size();
  int64_t splits = 0;
  std::vector<std::string> reversed;
  while (maxsplit < 0 || splits < maxsplit) {
    if (end < sep.size()) break;
    const size_t at = s.rfind(sep, end - sep.size());
    if (at == std::string::npos) break;
    reversed.push_back(s.substr(at + sep.size(), end - at - sep.size()));
    end = at;
    ++splits;
  }
  reversed.push_back(s.substr(0, end));
  return {reversed.rbegin(), reversed.rend()};
}

std::string Replace(const std::string& s, const std::string& old_text, const std::string& new_text, int64_t count) {
  std::string out;
  int64_t done = 0;
  if (old_text.empty()) {
    // Python inserts `new` before every code point and at the end.
    const std::vector<size_t> offsets = CodePointOffsets(s);
    for (size_t k = 0; k + 1 < offsets.size(); ++k) {
      if (count < 0 || done < count) {
        out += new_text;
        ++done;
      }
      out.append(s, offsets[k], offsets[k + 1] - offsets[k]);
    }
    if (count < 0 || done < count) out += new_text;
    return out;
  }
  size_t start = 0;
  while (count < 0 || done < count) {
    const size_t at = s.find(old_text, start);
    if (at == std::string::npos) break;
    out.append(s, start, at - start);
    out += new_text;
    start = at + old_text.size();
    ++done;
  }
  out.append(s, start, std::string::npos);
  return out;
}

// str.splitlines() without keepends.
std::vector<std::string> SplitLines(const std::string& s) {
  std::vector<std::string> lines;
  size_t start = 0;
  size_t i = 0;
  while (i < s.size()) {
    size_t j = i;
    const uint32_t cp = NextCodePoint(s, j);
    const bool is_break = cp == '\n' || cp == '\r' || cp == '\v' || cp == '\f' || (cp >= 0x1C && cp <= 0x1E) ||
                          cp == 0x85 || cp == 0x2028 || cp == 0x2029;
    if (!is_break) {
      i = j;
      continue;
    }
    lines.push_back(s.substr(start, i - start));
    if (cp == '\r' && j < s.size() && s[j] == '\n') ++j;
    start = i = j;
  }
  if (start < s.size()) lines.push_back(s.substr(start));
  return lines;
}

bool AffixMatch(const std::string& s, const Value& affix, bool prefix) {
  auto one = [&](const Value& v) {
    const std::string& a = AsString(v, prefix ? "startswith argument" : "endswith argument");
    if (a.size() > s.size()) return false;
    return prefix ? s.compare(0, a.size(), a) == 0 : s.compare(s.size() - a.size(), a.size(), a) == 0;
  };
  if (affix.is_list()) {
    for (const auto& v : affix.list()) {
      if (one(v)) return true;
    }
    return false;
  }
  return one(affix);
}

// Python str.format with {} / {0} / {name} fields and no format specs.
std::string Format(const std::string& fmt, CallArgs& args) {
  std::string out;
  size_t auto_index = 0;
  for (size_t i = 0; i < fmt.size(); ++i) {
    const char c = fmt[i];
    if (c == '{' && i + 1 < fmt.size() && fmt[i + 1] == '{') {
      out += '{';
      ++i;
    } else if (c == '}' && i + 1 < fmt.size() && fmt[i + 1] == '}') {
      out += '}';
      ++i;
    } else if (c == '{') {
      const size_t close = fmt.find('}', i);
      if (close == std::string::npos) Throw("str.format: unmatched '{'");
      const std::string field = fmt.substr(i + 1, close - i - 1);
      if (field.find_first_of(":!.[") != std::string::npos) Throw("unsupported: str.format field '{" + field + "}'");
      const Value* v = nullptr;
      if (field.empty() || std::all_of(field.begin(), field.end(), [](char d) { return d >= '0' && d <= '9'; })) {
        if (field.size() > 6) Throw("str.format: replacement index out of range");
        const size_t index = field.empty() ? auto_index++ : std::stoul(field);
        if (index >= args.positional.size()) Throw("str.format: replacement index out of range");
        v = &args.positional[index];
      } else {
        for (const auto& [k, value] : args.keyword) {
          if (k == field) v = &value;
        }
        if (!v) Throw("str.format: missing argument '" + field + "'");
      }
      out += ToStr(*v);
      i = close;
    } else if (c == '}') {
      Throw("str.format: single '}'");
    } else {
      out += c;
    }
  }
  return out;
}

// ---------------------------------------------------------------- iteration

std::vector<Value> Iterate(const Value& v) {
  switch (v.kind()) {
    case K::kUndefined:
      return {};
    case K::kList:
      return v.list();
    case K::kDict: {
      std::vector<Value> keys;
      keys.reserve(v.dict().entries.size());
      for (const auto& [k, unused] : v.dict().entries) keys.push_back(Value::Str(k));
      return keys;
    }
    case K::kString: {
      std::vector<Value> chars;
      const std::string& s = v.str();
      const std::vector<size_t> offsets = CodePointOffsets(s);
      for (size_t k = 0; k + 1 < offsets.size(); ++k)
        chars.push_back(Value::Str(s.substr(offsets[k], offsets[k + 1] - offsets[k])));
      return chars;
    }
    default:
      Throw("'" + TypeName(v) + "' object is not iterable");
  }
}

int64_t Length(const Value& v) {
  switch (v.kind()) {
    case K::kUndefined:
      return 0;
    case K::kString:
      return static_cast<int64_t>(CodePointOffsets(v.str()).size() - 1);
    case K::kList:
      return static_cast<int64_t>(v.list().size());
    case K::kDict:
      return static_cast<int64_t>(v.dict().entries.size());
    default:
      Throw("object of type '" + TypeName(v) + "' has no len()");
  }
}

// Python slice semantics (PySlice_AdjustIndices).
std::vector<size_t> SliceIndices(size_t length, const Value& start_v, const Value& stop_v, const Value& step_v) {
  const int64_t n = static_cast<int64_t>(length);
  const int64_t step = IsNone(step_v) ? 1 : AsInt(step_v, "slice step");
  if (step == 0) Throw("slice step cannot be zero");
  auto adjust = [&](const Value& v, bool is_start) -> int64_t {
    if (IsNone(v)) {
      if (step > 0) return is_start ? 0 : n;
      return is_start ? n - 1 : -1;
    }
    int64_t i = AsInt(v, "slice index");
    if (i < 0) {
      i += n;
      if (i < 0) i = step < 0 ? -1 : 0;
    } else if (i >= n) {
      i = step < 0 ? n - 1 : n;
    }
    return i;
  };
  const int64_t start = adjust(start_v, true);
  const int64_t stop = adjust(stop_v, false);
  std::vector<size_t> out;
  if (step > 0) {
    for (int64_t i = start; i < stop; i += step) out.push_back(static_cast<size_t>(i));
  } else {
    for (int64_t i = start; i > stop; i += step) out.push_back(static_cast<size_t>(i));
  }
  return out;
}

bool Contains(const Value& container, const Value& item) {
  switch (container.kind()) {
    case K::kUndefined:
      return false;
    case K::kString:
      if (!item.is_string()) Throw("'in <string>' requires string as left operand, not " + TypeName(item));
      return container.str().find(item.str()) != std::string::npos;
    case K::kList:
      for (const auto& v : container.list()) {
        if (Equal(v, item)) return true;
      }
      return false;
    case K::kDict:
      return item.is_string() && container.dict().Find(item.str()) != nullptr;
    default:
      Throw("argument of type '" + TypeName(container) + "' is not iterable");
  }
}

// ---------------------------------------------------------------- arithmetic

Value Arithmetic(const std::string& op, const Value& a, const Value& b, Interpreter& interp) {
  if (a.is_undefined()) ThrowUndefined(a);
  if (b.is_undefined()) ThrowUndefined(b);
  auto unsupported = [&]() -> Value {
    Throw("unsupported operand type(s) for " + op + ": '" + TypeName(a) + "' and '" + TypeName(b) + "'");
  };
  if (a.is_number() && b.is_number()) {
    const bool ints = a.kind() != K::kFloat && b.kind() != K::kFloat;
    if (ints) {
      const int64_t x = a.kind() == K::kBool ? a.boolean() : a.integer();
      const int64_t y = b.kind() == K::kBool ? b.boolean() : b.integer();
      int64_t r = 0;
      if (op == "+") {
        if (__builtin_add_overflow(x, y, &r)) Throw("integer overflow");
        return Value::Int(r);
      }
      if (op == "-") {
        if (__builtin_sub_overflow(x, y, &r)) Throw("integer overflow");
        return Value::Int(r);
      }
      if (op == "*") {
        if (__builtin_mul_overflow(x, y, &r)) Throw("integer overflow");
        return Value::Int(r);
      }
      if (op == "//" || op == "%") {
        if (y == 0) Throw("integer division or modulo by zero");
        if (x == std::numeric_limits<int64_t>::min() && y == -1) Throw("integer overflow");
        int64_t q = x / y;
        int64_t m = x % y;
        if (m != 0 && ((m < 0) != (y < 0))) {
          --q;
          m += y;
        }
        return op == "//" ? Value::Int(q) : Value::Int(m);
      }
      if (op == "**" && y >= 0) {
        int64_t result = 1;
        for (int64_t k = 0; k < y; ++k) {
          if (__builtin_mul_overflow(result, x, &result)) Throw("integer overflow");
          if (result == 0 || result == 1) break;
        }
        if (result == 1 && x == -1 && y % 2 == 1) result = -1;
        return Value::Int(result);
      }
    }
    const double x = a.AsDouble();
    const double y = b.AsDouble();
    if (op == "+") return Value::Float(x + y);
    if (op == "-") return Value::Float(x - y);
    if (op == "*") return Value::Float(x * y);
    if (op == "/") {
      if (y == 0) Throw("division by zero");
      return Value::Float(x / y);
    }
    if (op == "//") {
      if (y == 0) Throw("float floor division by zero");
      return Value::Float(std::floor(x / y));
    }
    if (op == "%") {
      if (y == 0) Throw("float modulo");
      double m = std::fmod(x, y);
      if (m != 0 && ((m < 0) != (y < 0))) m += y;
      return Value::Float(m);
    }
    if (op == "**") return Value::Float(std::pow(x, y));
    return unsupported();
  }
  if (op == "+") {
    if (a.is_string() && b.is_string()) {
      interp.CheckSize(a.str().size() + b.str().size());
      return Value::Str(a.str() + b.str());
    }
    if (a.is_list() && b.is_list()) {
      List items = a.list();
      items.insert(items.end(), b.list().begin(), b.list().end());
      interp.Step(static_cast<int64_t>(items.size()));
      return Value::MakeList(std::move(items));
    }
    return unsupported();
  }
  if (op == "*") {
    const Value* seq = a.is_string() || a.is_list() ? &a : (b.is_string() || b.is_list() ? &b : nullptr);
    const Value* count = seq == &a ? &b : &a;
    if (!seq || (count->kind() != K::kInt && count->kind() != K::kBool)) return unsupported();
    const int64_t n = std::max<int64_t>(0, AsInt(*count, "repeat count"));
    if (seq->is_string()) {
      if (n > 0 && seq->str().size() > 0)
        interp.CheckSize(seq->str().size() * static_cast<size_t>(std::min<int64_t>(n, 1 << 30)));
      std::string out;
      for (int64_t k = 0; k < n; ++k) out += seq->str();
      return Value::Str(std::move(out));
    }
    interp.Step(n * static_cast<int64_t>(seq->list().size()));
    List out;
    for (int64_t k = 0; k < n; ++k) out.insert(out.end(), seq->list().begin(), seq->list().end());
    return Value::MakeList(std::move(out));
  }
  if (op == "%" && a.is_string()) Throw("unsupported: printf-style string formatting ('%')");
  return unsupported();
}

// ---------------------------------------------------------------- methods

Value BoundMethod(const Value& self, std::string_view name) {
  const std::string full = (self.is_string() ? "str." : (self.is_list() ? "list." : "dict.")) + std::string(name);
  auto make = [&](auto fn) {
    return Value::Function(full, [self, fn](CallArgs& args, Interpreter& interp) { return fn(self, args, interp); });
  };
  if (self.is_string()) {
    if (name == "strip" || name == "lstrip" || name == "rstrip") {
      const bool left = name != "rstrip";
      const bool right = name != "lstrip";
      return make([left, right, full](const Value& s, CallArgs& args, Interpreter&) {
        auto a = BindArgs(full, args, {"chars"});
        return Value::Str(Strip(s.str(), a[0], left, right));
      });
    }
    if (name == "startswith" || name == "endswith") {
      const bool prefix = name == "startswith";
      return make([prefix, full](const Value& s, CallArgs& args, Interpreter&) {
        auto a = BindArgs(full, args, {prefix ? "prefix" : "suffix", "start", "end"}, 1);
        const std::vector<size_t> offsets = CodePointOffsets(s.str());
        const auto range = SliceIndices(offsets.size() - 1, a[1], a[2], Value());
        std::string sub;
        if (!range.empty())
          sub = s.str().substr(offsets[range.front()], offsets[range.back() + 1] - offsets[range.front()]);
        return Value::Bool(AffixMatch(sub, a[0], prefix));
      });
    }
    if (name == "split" || name == "rsplit") {
      const bool from_right = name == "rsplit";
      return make([from_right, full](const Value& s, CallArgs& args, Interpreter&) {
        auto a = BindArgs(full, args, {"sep", "maxsplit"});
        const int64_t maxsplit = IsNone(a[1]) ? -1 : AsInt(a[1], "maxsplit");
        List parts;
        for (auto& part : Split(s.str(), a[0], maxsplit, from_right)) parts.push_back(Value::Str(std::move(part)));
        return Value::MakeList(std::move(parts));
      });
    }
    if (name == "splitlines") {
      return make([full](const Value& s, CallArgs& args, Interpreter&) {
        BindArgs(full, args, {});
        List parts;
        for (auto& line : SplitLines(s.str())) parts.push_back(Value::Str(std::move(line)));
        return Value::MakeList(std::move(parts));
      });
    }
    if (name == "lower" || name == "upper" || name == "title" || name == "capitalize") {
      const std::string which(name);
      return make([which, full](const Value& s, CallArgs& args, Interpreter&) {
        BindArgs(full, args, {});
        if (which == "lower") return Value::Str(Lower(s.str()));
        if (which == "upper") return Value::Str(Upper(s.str()));
        if (which == "title") return Value::Str(Title(s.str()));
        return Value::Str(Capitalize(s.str()));
      });
    }
    if (name == "replace") {
      return make([full](const Value& s, CallArgs& args, Interpreter& interp) {
        auto a = BindArgs(full, args, {"old", "new", "count"}, 2);
        const int64_t count = IsNone(a[2]) ? -1 : AsInt(a[2], "count");
        std::string out = Replace(s.str(), AsString(a[0], "old"), AsString(a[1], "new"), count);
        interp.CheckSize(out.size());
        return Value::Str(std::move(out));
      });
    }
    if (name == "find" || name == "rfind" || name == "count") {
      const std::string which(name);
      return make([which, full](const Value& s, CallArgs& args, Interpreter&) {
        auto a = BindArgs(full, args, {"sub"}, 1);
        const std::string& sub = AsString(a[0], "sub");
        const std::string& str = s.str();
        if (which == "count") {
          if (sub.empty()) return Value::Int(static_cast<int64_t>(CodePointOffsets(str).size()));
          int64_t n = 0;
          for (size_t at = str.find(sub); at != std::string::npos; at = str.find(sub, at + sub.size())) ++n;
          return Value::Int(n);
        }
        const size_t at = which == "find" ? str.find(sub) : str.rfind(sub);
        if (at == std::string::npos) return Value::Int(-1);
        return Value::Int(static_cast<int64_t>(CodePointOffsets(str.substr(0, at)).size() - 1));
      });
    }
    if (name == "join") {
      return make([full](const Value& s, CallArgs& args, Interpreter& interp) {
        auto a = BindArgs(full, args, {"iterable"}, 1);
        std::string out;
        bool first = true;
        for (const auto& item : Iterate(a[0])) {
          if (!item.is_string()) Throw("str.join: expected str instance, " + TypeName(item) + " found");
          if (!first) out += s.str();
          first = false;
          out += item.str();
        }
        interp.CheckSize(out.size());
        return Value::Str(std::move(out));
      });
    }
    if (name == "format") {
      return make([](const Value& s, CallArgs& args, Interpreter& interp) {
        std::string out = Format(s.str(), args);
        interp.CheckSize(out.size());
        return Value::Str(std::move(out));
      });
    }
    if (name == "isdigit" || name == "isalpha" || name == "isalnum" || name == "isspace" || name == "islower" ||
        name == "isupper") {
      const std::string which(name);
      return make([which, full](const Value& s, CallArgs& args, Interpreter&) {
        BindArgs(full, args, {});
        const std::string& str = s.str();
        if (str.empty()) return Value::Bool(false);
        if (which == "islower" || which == "isupper") {
          bool cased = false;
          for (char c : str) {
            if (IsAsciiAlpha(c)) {
              cased = true;
              if ((which == "islower") != (c >= 'a' && c <= 'z')) return Value::Bool(false);
            }
          }
          return Value::Bool(cased);
        }
        for (size_t i = 0; i < str.size();) {
          const uint32_t cp = NextCodePoint(str, i);
          bool ok = false;
          if (which == "isdigit") ok = cp >= '0' && cp <= '9';
          if (which == "isalpha") ok = cp < 0x80 && IsAsciiAlpha(static_cast<char>(cp));
          if (which == "isalnum") ok = cp < 0x80 && (IsAsciiAlpha(static_cast<char>(cp)) || (cp >= '0' && cp <= '9'));
          if (which == "isspace") ok = IsPySpace(cp);
          if (!ok) return Value::Bool(false);
        }
        return Value::Bool(true);
      });
    }
    return NoAttribute(self, name);
  }
  if (self.is_list()) {
    if (name == "count" || name == "index") {
      const bool count = name == "count";
      return make([count, full](const Value& l, CallArgs& args, Interpreter&) {
        auto a = BindArgs(full, args, {"value"}, 1);
        int64_t n = 0;
        for (size_t i = 0; i < l.list().size(); ++i) {
          if (!Equal(l.list()[i], a[0])) continue;
          if (!count) return Value::Int(static_cast<int64_t>(i));
          ++n;
        }
        if (!count) Throw(Repr(a[0]) + " is not in list");
        return Value::Int(n);
      });
    }
    return NoAttribute(self, name);
  }
  if (self.is_dict()) {
    if (name == "items" || name == "keys" || name == "values") {
      const std::string which(name);
      return make([which, full](const Value& d, CallArgs& args, Interpreter&) {
        BindArgs(full, args, {});
        List out;
        for (const auto& [k, v] : d.dict().entries) {
          if (which == "items") {
            out.push_back(Value::MakeTuple({Value::Str(k), v}));
          } else {
            out.push_back(which == "keys" ? Value::Str(k) : v);
          }
        }
        return Value::MakeList(std::move(out));
      });
    }
    if (name == "get") {
      return make([full](const Value& d, CallArgs& args, Interpreter&) {
        auto a = BindArgs(full, args, {"key", "default"}, 1);
        if (a[0].is_string()) {
          if (const Value* v = d.dict().Find(a[0].str())) return *v;
        }
        return a[1].is_undefined() ? Value::None() : a[1];
      });
    }
  }
  return Value::Undefined();
}

}  // namespace

bool IsKnownFilter(std::string_view name) {
  return std::find(std::begin(kFilters), std::end(kFilters), name) != std::end(kFilters);
}

bool IsKnownTest(std::string_view name) {
  return std::find(std::begin(kTests), std::end(kTests), name) != std::end(kTests);
}

Value GetAttr(const Value& object, std::string_view name) {
  switch (object.kind()) {
    case K::kUndefined:
      ThrowUndefined(object);
    case K::kString: {
      return BoundMethod(object, name);
    }
    case K::kDict: {
      Value method = BoundMethod(object, name);
      if (!method.is_undefined()) return method;
      if (const Value* v = object.dict().Find(name)) return *v;
      return NoAttribute(object, name);
    }
    case K::kList:
      return BoundMethod(object, name);
    case K::kNamespace:
      if (const Value* v = object.ns().attrs.Find(name)) return *v;
      return NoAttribute(object, name);
    default:
      return NoAttribute(object, name);
  }
}

Value GetItem(const Value& object, const Value& key) {
  if (object.is_undefined()) ThrowUndefined(object);
  if (key.kind() == K::kInt || key.kind() == K::kBool) {
    const int64_t i = AsInt(key, "index");
    if (object.is_list()) {
      const int64_t n = static_cast<int64_t>(object.list().size());
      const int64_t k = i < 0 ? i + n : i;
      if (k < 0 || k >= n) return Value::Undefined("list object has no element " + std::to_string(i));
      return object.list()[static_cast<size_t>(k)];
    }
    if (object.is_string()) {
      const std::vector<size_t> offsets = CodePointOffsets(object.str());
      const int64_t n = static_cast<int64_t>(offsets.size()) - 1;
      const int64_t k = i < 0 ? i + n : i;
      if (k < 0 || k >= n) return Value::Undefined("str object has no element " + std::to_string(i));
      return Value::Str(object.str().substr(offsets[k], offsets[k + 1] - offsets[k]));
    }
  }
  if (key.is_string()) {
    if (object.is_dict()) {
      if (const Value* v = object.dict().Find(key.str())) return *v;
      Value method = BoundMethod(object, key.str());
      if (!method.is_undefined()) return method;
      return NoAttribute(object, key.str());
    }
    return GetAttr(object, key.str());
  }
  return Value::Undefined(AttrOwner(object) + " has no element " + Repr(key));
}

// ---------------------------------------------------------------- Interpreter

Interpreter::Interpreter(const Program& program, const Dict& variables, std::chrono::system_clock::time_point now,
                         const RenderLimits& limits)
    : program_(program), globals_(std::make_shared<Scope>()), now_(now), limits_(limits) {
  auto& g = globals_->vars;
  g["range"] = Value::Function("range", [](CallArgs& args, Interpreter& interp) {
    if (!args.keyword.empty()) Throw("range() takes no keyword arguments");
    const auto& p = args.positional;
    if (p.empty() || p.size() > 3) Throw("range expected 1 to 3 arguments");
    int64_t start = 0, stop = 0, step = 1;
    if (p.size() == 1) {
      stop = AsInt(p[0], "range argument");
    } else {
      start = AsInt(p[0], "range argument");
      stop = AsInt(p[1], "range argument");
      if (p.size() == 3) step = AsInt(p[2], "range argument");
    }
    if (step == 0) Throw("range() arg 3 must not be zero");
    // Counted (and charged) before anything is allocated.
    const __int128 span = step > 0 ? static_cast<__int128>(stop) - start : static_cast<__int128>(start) - stop;
    const __int128 magnitude = step > 0 ? step : -static_cast<__int128>(step);
    const int64_t count = span <= 0 ? 0 : static_cast<int64_t>((span + magnitude - 1) / magnitude);
    interp.Step(count);
    List out;
    out.reserve(static_cast<size_t>(count));
    for (int64_t k = 0; k < count; ++k) out.push_back(Value::Int(start + k * step));
    return Value::MakeList(std::move(out));
  });
  g["namespace"] = Value::Function("namespace", [](CallArgs& args, Interpreter&) {
    Dict attrs;
    if (args.positional.size() > 1) Throw("namespace() takes at most one positional argument");
    if (args.positional.size() == 1) {
      const Value& init = args.positional[0];
      if (!init.is_dict()) Throw("namespace() argument must be a mapping");
      attrs = init.dict();
    }
    for (auto& [k, v] : args.keyword) attrs.Set(k, v);
    return Value::MakeNamespace(std::move(attrs));
  });
  g["dict"] = Value::Function("dict", [](CallArgs& args, Interpreter&) {
    Dict d;
    if (args.positional.size() > 1) Throw("dict() takes at most one positional argument");
    if (args.positional.size() == 1) {
      const Value& init = args.positional[0];
      if (init.is_dict()) {
        d = init.dict();
      } else {
        for (const auto& pair : Iterate(init)) {
          if (!pair.is_list() || pair.list().size() != 2 || !pair.list()[0].is_string()) {
            Throw("dict() sequence elements must be (str, value) pairs");
          }
          d.Set(pair.list()[0].str(), pair.list()[1]);
        }
      }
    }
    for (auto& [k, v] : args.keyword) d.Set(k, v);
    return Value::MakeDict(std::move(d));
  });
  g["raise_exception"] = Value::Function("raise_exception", [](CallArgs& args, Interpreter&) -> Value {
    const std::string message = args.positional.empty() ? std::string() : ToStr(args.positional[0]);
    throw TemplateRaised(message);
  });
  g["strftime_now"] = Value::Function("strftime_now", [](CallArgs& args, Interpreter& interp) {
    auto a = BindArgs("strftime_now", args, {"format"}, 1);
    const std::string& format = AsString(a[0], "strftime_now format");
    const std::time_t t = std::chrono::system_clock::to_time_t(interp.now());
    std::tm local{};
    localtime_r(&t, &local);
    // C-locale names, as Python's strftime gives in the default locale.
    std::string out(format.size() * 4 + 64, '\0');
    const size_t n = std::strftime(out.data(), out.size(), format.c_str(), &local);
    if (n == 0 && !format.empty()) Throw("strftime_now: could not format '" + format + "'");
    out.resize(n);
    return Value::Str(std::move(out));
  });
  for (const auto& [k, v] : variables.entries) g[k] = v;
}

void Interpreter::Step(int64_t n) {
  steps_ += n;
  if (steps_ > limits_.max_steps) {
    Throw("template rendering exceeded " + std::to_string(limits_.max_steps) + " steps");
  }
}

void Interpreter::CheckSize(size_t bytes) const {
  if (bytes > limits_.max_output_bytes) {
    Throw("template output exceeds " + std::to_string(limits_.max_output_bytes) + " bytes");
  }
}

std::string Interpreter::Render() {
  std::string out;
  ExecBody(program_.body, globals_, out);
  return out;
}

Interpreter::Flow Interpreter::ExecBody(const Body& body, const ScopePtr& scope, std::string& out) {
  for (const auto& stmt : body) {
    const Flow flow = Exec(*stmt, scope, out);
    if (flow != Flow::kNormal) return flow;
  }
  return Flow::kNormal;
}

Interpreter::Flow Interpreter::Exec(const Stmt& stmt, const ScopePtr& scope, std::string& out) {
  Step();
  try {
    switch (stmt.kind) {
      case Stmt::Kind::kText:
        out += stmt.text;
        CheckSize(out.size());
        return Flow::kNormal;
      case Stmt::Kind::kOutput:
        out += ToStr(Eval(*stmt.expr, scope));
        CheckSize(out.size());
        return Flow::kNormal;
      case Stmt::Kind::kIf:
        for (const auto& [condition, body] : stmt.branches) {
          if (!condition || Eval(*condition, scope).Truthy()) return ExecBody(body, scope, out);
        }
        return Flow::kNormal;
      case Stmt::Kind::kFor:
        ExecFor(stmt, scope, out);
        return Flow::kNormal;
      case Stmt::Kind::kSet:
        Assign(stmt, scope, Eval(*stmt.expr, scope));
        return Flow::kNormal;
      case Stmt::Kind::kSetBlock: {
        std::string captured;
        ExecBody(stmt.body, scope, captured);
        Assign(stmt, scope, Value::Str(std::move(captured)));
        return Flow::kNormal;
      }
      case Stmt::Kind::kMacro:
        scope->vars[stmt.name] = DefineMacro(stmt, scope);
        return Flow::kNormal;
      case Stmt::Kind::kBreak:
        return Flow::kBreak;
      case Stmt::Kind::kContinue:
        return Flow::kContinue;
      case Stmt::Kind::kGeneration:
        return ExecBody(stmt.body, scope, out);
    }
  } catch (const TemplateRaised&) {
    throw;
  } catch (const TemplateError& e) {
    const std::string what = e.what();
    if (what.rfind("line ", 0) == 0) throw;
    throw TemplateError("line " + std::to_string(stmt.line) + ": " + what);
  }
  return Flow::kNormal;
}

void Interpreter::ExecFor(const Stmt& stmt, const ScopePtr& scope, std::string& out) {
  const Value iterable = Eval(*stmt.expr, scope);
  // Each iteration gets a fresh scope, as Jinja2's compiled loops do: what
  // the body sets is gone at the next iteration and after the loop.
  auto new_scope = [&] {
    auto s = std::make_shared<Scope>();
    s->parent = scope;
    return s;
  };
  auto bind = [&](Scope& target, const Value& item) {
    if (stmt.targets.size() == 1) {
      target.vars[stmt.targets[0]] = item;
      return;
    }
    const std::vector<Value> values = Iterate(item);
    if (values.size() != stmt.targets.size()) {
      Throw(values.size() > stmt.targets.size()
                ? "too many values to unpack (expected " + std::to_string(stmt.targets.size()) + ")"
                : "not enough values to unpack (expected " + std::to_string(stmt.targets.size()) + ")");
    }
    for (size_t i = 0; i < values.size(); ++i) target.vars[stmt.targets[i]] = values[i];
  };
  // A list is walked in place (`iterable` keeps it alive); other iterables
  // and filtered loops are materialised first, as Jinja's loop.length needs.
  std::vector<Value> materialised;
  const List* items = iterable.is_list() && !stmt.filter ? &iterable.list() : nullptr;
  if (!items) {
    std::vector<Value> candidates = Iterate(iterable);
    if (stmt.filter) {
      for (const auto& candidate : candidates) {
        Step();
        auto filter_scope = new_scope();
        bind(*filter_scope, candidate);
        if (Eval(*stmt.filter, filter_scope).Truthy()) materialised.push_back(candidate);
      }
    } else {
      materialised = std::move(candidates);
    }
    items = &materialised;
  }
  const int64_t n = static_cast<int64_t>(items->size());
  for (int64_t i = 0; i < n; ++i) {
    Step();
    auto loop_scope = new_scope();
    if (stmt.uses_loop) {
      Dict loop;
      loop.entries.reserve(12);
      loop.entries.emplace_back("index", Value::Int(i + 1));
      loop.entries.emplace_back("index0", Value::Int(i));
      loop.entries.emplace_back("revindex", Value::Int(n - i));
      loop.entries.emplace_back("revindex0", Value::Int(n - i - 1));
      loop.entries.emplace_back("first", Value::Bool(i == 0));
      loop.entries.emplace_back("last", Value::Bool(i == n - 1));
      loop.entries.emplace_back("length", Value::Int(n));
      loop.entries.emplace_back("depth", Value::Int(1));
      loop.entries.emplace_back("depth0", Value::Int(0));
      loop.entries.emplace_back("previtem", i > 0 ? (*items)[i - 1] : Value::Undefined("there is no previous item"));
      loop.entries.emplace_back("nextitem", i + 1 < n ? (*items)[i + 1] : Value::Undefined("there is no next item"));
      loop.entries.emplace_back("cycle", Value::Function("loop.cycle", [i](CallArgs& args, Interpreter&) {
                                  if (args.positional.empty()) Throw("no items for cycling given");
                                  return args.positional[static_cast<size_t>(i) % args.positional.size()];
                                }));
      loop_scope->vars["loop"] = Value::MakeDict(std::move(loop));
    }
    bind(*loop_scope, (*items)[i]);
    const Flow flow = ExecBody(stmt.body, loop_scope, out);
    if (flow == Flow::kBreak) break;
  }
  if (n == 0) ExecBody(stmt.else_body, new_scope(), out);
}

void Interpreter::Assign(const Stmt& stmt, const ScopePtr& scope, Value value) {
  if (!stmt.ns_attr.empty()) {
    const Value target = Lookup(stmt.targets[0], scope);
    if (target.kind() != K::kNamespace) {
      Throw("cannot assign attribute on non-namespace object '" + stmt.targets[0] + "'");
    }
    target.ns().attrs.Set(stmt.ns_attr, std::move(value));
    return;
  }
  if (stmt.targets.size() == 1) {
    scope->vars[stmt.targets[0]] = std::move(value);
    return;
  }
  const std::vector<Value> values = Iterate(value);
  if (values.size() != stmt.targets.size()) {
    Throw("cannot unpack " + std::to_string(values.size()) + " values into " + std::to_string(stmt.targets.size()) +
          " names");
  }
  for (size_t i = 0; i < values.size(); ++i) scope->vars[stmt.targets[i]] = values[i];
}

Value Interpreter::DefineMacro(const Stmt& stmt, const ScopePtr& scope) {
  // Macros see the scope they were defined in (late-bound), as in Jinja2.
  // The macro lives in that scope, so it holds it weakly (no cycle); the
  // interpreter keeps it alive until the rendering ends.
  macro_scopes_.push_back(scope);
  const Stmt* macro = &stmt;
  std::weak_ptr<Scope> defining = scope;
  return Value::Function(stmt.name, [macro, defining](CallArgs& args, Interpreter& interp) {
    if (interp.call_depth_ >= interp.limits_.max_call_depth) {
      Throw("macro calls nest deeper than " + std::to_string(interp.limits_.max_call_depth));
    }
    auto local = std::make_shared<Scope>();
    local->parent = defining.lock();
    if (!local->parent) Throw("macro '" + macro->name + "' called after its rendering ended");
    const auto& params = macro->params;
    if (args.positional.size() > params.size()) {
      Throw("macro '" + macro->name + "' takes not more than " + std::to_string(params.size()) + " argument(s)");
    }
    std::vector<bool> given(params.size(), false);
    for (size_t i = 0; i < args.positional.size(); ++i) {
      local->vars[params[i]] = args.positional[i];
      given[i] = true;
    }
    for (auto& [name, value] : args.keyword) {
      const auto it = std::find(params.begin(), params.end(), name);
      if (it == params.end()) Throw("macro '" + macro->name + "' takes no keyword argument '" + name + "'");
      const size_t i = static_cast<size_t>(it - params.begin());
      if (given[i]) Throw("macro '" + macro->name + "' got multiple values for argument '" + name + "'");
      local->vars[name] = value;
      given[i] = true;
    }
    for (size_t i = 0; i < params.size(); ++i) {
      if (given[i]) continue;
      local->vars[params[i]] = macro->defaults[i] ? interp.Eval(*macro->defaults[i], local)
                                                  : Value::Undefined("parameter '" + params[i] + "' was not provided");
    }
    ++interp.call_depth_;
    std::string out;
    try {
      interp.ExecBody(macro->body, local, out);
    } catch (...) {
      --interp.call_depth_;
      throw;
    }
    --interp.call_depth_;
    return Value::Str(std::move(out));
  });
}

Value Interpreter::Lookup(const std::string& name, const ScopePtr& scope) const {
  for (const Scope* s = scope.get(); s; s = s->parent.get()) {
    const auto it = s->vars.find(name);
    if (it != s->vars.end()) return it->second;
  }
  return Value::Undefined("'" + name + "' is undefined");
}

Value Interpreter::Call(const Value& callee, CallArgs& args) {
  if (callee.is_undefined()) ThrowUndefined(callee);
  if (callee.kind() != K::kCallable) Throw("'" + TypeName(callee) + "' object is not callable");
  Step();
  return callee.callable().fn(args, *this);
}

void Interpreter::EvalArgs(const Expr& expr, const ScopePtr& scope, CallArgs& args) {
  for (const auto& item : expr.items) args.positional.push_back(Eval(*item, scope));
  for (const auto& [name, value] : expr.kwargs) args.keyword.emplace_back(name, Eval(*value, scope));
}

Value Interpreter::Eval(const Expr& expr, const ScopePtr& scope) {
  switch (expr.kind) {
    case Expr::Kind::kLiteral:
      return expr.literal;
    case Expr::Kind::kName:
      return Lookup(expr.name, scope);
    case Expr::Kind::kList:
    case Expr::Kind::kTuple: {
      List items;
      for (const auto& item : expr.items) items.push_back(Eval(*item, scope));
      Step(static_cast<int64_t>(items.size()));
      return expr.kind == Expr::Kind::kTuple ? Value::MakeTuple(std::move(items)) : Value::MakeList(std::move(items));
    }
    case Expr::Kind::kDict: {
      Dict dict;
      for (size_t i = 0; i + 1 < expr.items.size(); i += 2) {
        const Value key = Eval(*expr.items[i], scope);
        if (!key.is_string()) Throw("unsupported: dict keys other than strings (" + TypeName(key) + ")");
        dict.Set(key.str(), Eval(*expr.items[i + 1], scope));
      }
      Step(static_cast<int64_t>(dict.entries.size()));
      return Value::MakeDict(std::move(dict));
    }
    case Expr::Kind::kGetAttr:
      return GetAttr(Eval(*expr.a, scope), expr.name);
    case Expr::Kind::kGetItem:
      return GetItem(Eval(*expr.a, scope), Eval(*expr.b, scope));
    case Expr::Kind::kSlice: {
      const Value object = Eval(*expr.a, scope);
      const Value start = expr.b ? Eval(*expr.b, scope) : Value::None();
      const Value stop = expr.c ? Eval(*expr.c, scope) : Value::None();
      const Value step = expr.d ? Eval(*expr.d, scope) : Value::None();
      if (object.is_undefined()) ThrowUndefined(object);
      if (object.is_list()) {
        List out;
        for (size_t i : SliceIndices(object.list().size(), start, stop, step)) out.push_back(object.list()[i]);
        Step(static_cast<int64_t>(out.size()));
        return Value::MakeList(std::move(out));
      }
      if (object.is_string()) {
        const std::vector<size_t> offsets = CodePointOffsets(object.str());
        std::string out;
        for (size_t i : SliceIndices(offsets.size() - 1, start, stop, step)) {
          out.append(object.str(), offsets[i], offsets[i + 1] - offsets[i]);
        }
        return Value::Str(std::move(out));
      }
      // Jinja2 compiles slices to Python slicing (no environment.getitem),
      // so this is a TypeError there too.
      Throw("'" + TypeName(object) + "' object is not subscriptable");
    }
    case Expr::Kind::kCall: {
      const Value callee = Eval(*expr.a, scope);
      CallArgs args;
      EvalArgs(expr, scope, args);
      if (callee.is_undefined() && callee.undefined_hint().find("has no attribute") != std::string::npos) {
        Throw("unsupported method: " + callee.undefined_hint());
      }
      return Call(callee, args);
    }
    case Expr::Kind::kFilter: {
      const Value operand = Eval(*expr.a, scope);
      CallArgs args;
      EvalArgs(expr, scope, args);
      return ApplyFilter(expr.name, operand, args);
    }
    case Expr::Kind::kTest: {
      const Value operand = Eval(*expr.a, scope);
      CallArgs args;
      EvalArgs(expr, scope, args);
      return Value::Bool(ApplyTest(expr.name, operand, args) != expr.negated);
    }
    case Expr::Kind::kNot:
      return Value::Bool(!Eval(*expr.a, scope).Truthy());
    case Expr::Kind::kNeg:
    case Expr::Kind::kPos: {
      const Value v = Eval(*expr.a, scope);
      if (v.is_undefined()) ThrowUndefined(v);
      const bool neg = expr.kind == Expr::Kind::kNeg;
      if (v.kind() == K::kInt || v.kind() == K::kBool) {
        const int64_t i = AsInt(v, "operand");
        if (neg && i == std::numeric_limits<int64_t>::min()) Throw("integer overflow");
        return Value::Int(neg ? -i : i);
      }
      if (v.kind() == K::kFloat) return Value::Float(neg ? -v.floating() : v.floating());
      Throw(std::string("bad operand type for unary ") + (neg ? "-" : "+") + ": '" + TypeName(v) + "'");
    }
    case Expr::Kind::kBinary:
      return EvalBinary(expr, scope);
    case Expr::Kind::kAnd: {
      Value left = Eval(*expr.a, scope);
      return left.Truthy() ? Eval(*expr.b, scope) : left;
    }
    case Expr::Kind::kOr: {
      Value left = Eval(*expr.a, scope);
      return left.Truthy() ? left : Eval(*expr.b, scope);
    }
    case Expr::Kind::kCompare: {
      Value left = Eval(*expr.a, scope);
      for (const auto& [op, operand] : expr.chain) {
        Value right = Eval(*operand, scope);
        if (!EvalCompare(op, left, right)) return Value::Bool(false);
        left = std::move(right);
      }
      return Value::Bool(true);
    }
    case Expr::Kind::kCondition:
      if (Eval(*expr.a, scope).Truthy()) return Eval(*expr.b, scope);
      return expr.c ? Eval(*expr.c, scope) : Value::Undefined("the inline if expression evaluated to false");
  }
  return Value::Undefined();
}

Value Interpreter::EvalBinary(const Expr& expr, const ScopePtr& scope) {
  const Value a = Eval(*expr.a, scope);
  const Value b = Eval(*expr.b, scope);
  if (expr.name == "~") {
    std::string out = ToStr(a) + ToStr(b);
    CheckSize(out.size());
    return Value::Str(std::move(out));
  }
  return Arithmetic(expr.name, a, b, *this);
}

bool Interpreter::EvalCompare(const std::string& op, const Value& left, const Value& right) {
  if (op == "==") return Equal(left, right);
  if (op == "!=") return !Equal(left, right);
  if (op == "in") return Contains(right, left);
  if (op == "not in") return !Contains(right, left);
  if (left.is_undefined()) ThrowUndefined(left);
  if (right.is_undefined()) ThrowUndefined(right);
  const int c = Compare(left, right);
  if (op == "<") return c < 0;
  if (op == "<=") return c <= 0;
  if (op == ">") return c > 0;
  return c >= 0;
}

// ---------------------------------------------------------------- filters

Value Interpreter::ApplyFilter(const std::string& name, const Value& operand, CallArgs& args) {
  Step();
  const std::string fn = "filter '" + name + "'";
  auto sort_key = [](const Value& v, bool case_sensitive) {
    return v.is_string() && !case_sensitive ? Value::Str(Lower(v.str())) : v;
  };
  auto attribute_of = [](const Value& item, const Value& attribute) {
    if (IsNone(attribute)) return item;
    if (attribute.kind() == K::kInt) return GetItem(item, attribute);
    Value v = item;
    for (const auto& part : Split(AsString(attribute, "attribute"), Value::Str("."), -1, false)) {
      bool digits = !part.empty() && std::all_of(part.begin(), part.end(), [](char c) { return c >= '0' && c <= '9'; });
      v = GetItem(v, digits ? Value::Int(std::stoll(part)) : Value::Str(part));
    }
    return v;
  };

  if (name == "default" || name == "d") {
    auto a = BindArgs(fn, args, {"default_value", "boolean"});
    const Value fallback = a[0].is_undefined() ? Value::Str("") : a[0];
    if (operand.is_undefined() || (a[1].Truthy() && !operand.Truthy())) return fallback;
    return operand;
  }
  if (name == "safe") {
    BindArgs(fn, args, {});
    return operand;
  }
  if (name == "tojson") {
    // transformers chat_template_utils.py: tojson(x, ensure_ascii=False,
    // indent=None, separators=None, sort_keys=False).
    auto a = BindArgs(fn, args, {"ensure_ascii", "indent", "separators", "sort_keys"});
    JsonOptions options;
    options.ensure_ascii = a[0].Truthy();
    if (!IsNone(a[1])) {
      if (a[1].is_string()) {
        options.indent = a[1].str();
      } else {
        options.indent = std::string(static_cast<size_t>(std::max<int64_t>(0, AsInt(a[1], "indent"))), ' ');
      }
    }
    if (!IsNone(a[2])) {
      if (!a[2].is_list() || a[2].list().size() != 2) Throw("tojson: separators must be a pair of strings");
      options.item_separator = AsString(a[2].list()[0], "separator");
      options.key_separator = AsString(a[2].list()[1], "separator");
    }
    options.sort_keys = a[3].Truthy();
    std::string out = ToJson(operand, options);
    CheckSize(out.size());
    return Value::Str(std::move(out));
  }
  if (name == "length" || name == "count") {
    BindArgs(fn, args, {});
    return Value::Int(Length(operand));
  }
  if (name == "trim") {
    auto a = BindArgs(fn, args, {"chars"});
    return Value::Str(Strip(ToStr(operand), a[0], true, true));
  }
  if (name == "string") {
    BindArgs(fn, args, {});
    return Value::Str(ToStr(operand));
  }
  if (name == "lower" || name == "upper" || name == "capitalize" || name == "title") {
    BindArgs(fn, args, {});
    const std::string s = ToStr(operand);
    if (name == "lower") return Value::Str(Lower(s));
    if (name == "upper") return Value::Str(Upper(s));
    if (name == "capitalize") return Value::Str(Capitalize(s));
    // jinja2 filters.py do_title: each piece between runs of [-\s({\[<]
    // gets its first character upper-cased and the rest lower-cased.
    std::string out;
    bool word_start = true;
    for (char c : s) {
      const bool separator = IsSpaceByte(c) || c == '-' || c == '(' || c == '{' || c == '[' || c == '<';
      if (separator) {
        out += c;
        word_start = true;
      } else {
        out += word_start ? AsciiUpper(c) : AsciiLower(c);
        word_start = false;
      }
    }
    return Value::Str(std::move(out));
  }
  if (name == "replace") {
    auto a = BindArgs(fn, args, {"old", "new", "count"}, 2);
    const int64_t count = IsNone(a[2]) ? -1 : AsInt(a[2], "count");
    std::string out = Replace(ToStr(operand), ToStr(a[0]), ToStr(a[1]), count);
    CheckSize(out.size());
    return Value::Str(std::move(out));
  }
  if (name == "items") {
    BindArgs(fn, args, {});
    if (operand.is_undefined()) return Value::MakeList({});
    if (!operand.is_dict()) Throw("items: can only get item pairs from a mapping, not '" + TypeName(operand) + "'");
    List out;
    for (const auto& [k, v] : operand.dict().entries) out.push_back(Value::MakeTuple({Value::Str(k), v}));
    return Value::MakeList(std::move(out));
  }
  if (name == "list") {
    BindArgs(fn, args, {});
    return Value::MakeList(Iterate(operand));
  }
  if (name == "first" || name == "last") {
    BindArgs(fn, args, {});
    std::vector<Value> items = Iterate(operand);
    if (items.empty()) return Value::Undefined("no " + name + " item, sequence was empty");
    return name == "first" ? items.front() : items.back();
  }
  if (name == "join") {
    auto a = BindArgs(fn, args, {"d", "attribute"});
    const std::string separator = a[0].is_undefined() ? std::string() : ToStr(a[0]);
    std::string out;
    bool first = true;
    for (const auto& item : Iterate(operand)) {
      if (!first) out += separator;
      first = false;
      out += ToStr(attribute_of(item, a[1]));
      CheckSize(out.size());
    }
    return Value::Str(std::move(out));
  }
  if (name == "reverse") {
    BindArgs(fn, args, {});
    if (operand.is_string()) {
      std::vector<Value> chars = Iterate(operand);
      std::string out;
      for (auto it = chars.rbegin(); it != chars.rend(); ++it) out += it->str();
      return Value::Str(std::move(out));
    }
    std::vector<Value> items = Iterate(operand);
    std::reverse(items.begin(), items.end());
    return Value::MakeList(std::move(items));
  }
  if (name == "sort" || name == "unique" || name == "max" || name == "min") {
    std::vector<Value> a;
    if (name == "sort") {
      a = BindArgs(fn, args, {"reverse", "case_sensitive", "attribute"});
    } else {
      auto b = BindArgs(fn, args, {"case_sensitive", "attribute"});
      a = {Value::Bool(false), b[0], b[1]};
    }
    const bool reverse = a[0].Truthy();
    const bool case_sensitive = a[1].Truthy();
    std::vector<Value> items = Iterate(operand);
    Step(static_cast<int64_t>(items.size()));
    auto key = [&](const Value& item) { return sort_key(attribute_of(item, a[2]), case_sensitive); };
    if (name == "unique") {
      List out;
      std::vector<Value> seen;
      for (const auto& item : items) {
        const Value k = key(item);
        if (std::none_of(seen.begin(), seen.end(), [&](const Value& s) { return Equal(s, k); })) {
          seen.push_back(k);
          out.push_back(item);
        }
      }
      return Value::MakeList(std::move(out));
    }
    if (name == "max" || name == "min") {
      if (items.empty()) return Value::Undefined("no " + name + " item, sequence was empty");
      size_t best = 0;
      for (size_t i = 1; i < items.size(); ++i) {
        const int c = Compare(key(items[i]), key(items[best]));
        if (name == "max" ? c > 0 : c < 0) best = i;
      }
      return items[best];
    }
    std::stable_sort(items.begin(), items.end(), [&](const Value& x, const Value& y) {
      return reverse ? Compare(key(y), key(x)) < 0 : Compare(key(x), key(y)) < 0;
    });
    return Value::MakeList(std::move(items));
  }
  if (name == "dictsort") {
    auto a = BindArgs(fn, args, {"case_sensitive", "by", "reverse"});
    if (!operand.is_dict()) Throw("dictsort: expected a mapping, not '" + TypeName(operand) + "'");
    const bool by_value = !a[1].is_undefined() && AsString(a[1], "by") == "value";
    const bool case_sensitive = a[0].Truthy();
    const bool reverse = a[2].Truthy();
    std::vector<std::pair<std::string, Value>> entries = operand.dict().entries;
    std::stable_sort(entries.begin(), entries.end(), [&](const auto& x, const auto& y) {
      const Value kx = sort_key(by_value ? x.second : Value::Str(x.first), case_sensitive);
      const Value ky = sort_key(by_value ? y.second : Value::Str(y.first), case_sensitive);
      return reverse ? Compare(ky, kx) < 0 : Compare(kx, ky) < 0;
    });
    List out;
    for (auto& [k, v] : entries) out.push_back(Value::MakeTuple({Value::Str(k), v}));
    return Value::MakeList(std::move(out));
  }
  if (name == "select" || name == "reject" || name == "selectattr" || name == "rejectattr") {
    const bool by_attr = name == "selectattr" || name == "rejectattr";
    const bool keep_matches = name == "select" || name == "selectattr";
    size_t next = 0;
    Value attribute;
    if (by_attr) {
      if (args.positional.empty()) Throw(fn + ": missing attribute");
      attribute = args.positional[next++];
    }
    std::string test;
    if (next < args.positional.size()) test = AsString(args.positional[next++], "test name");
    if (!test.empty() && !IsKnownTest(test)) Throw("unsupported test '" + test + "'");
    CallArgs test_args;
    test_args.positional.assign(args.positional.begin() + static_cast<std::ptrdiff_t>(next), args.positional.end());
    test_args.keyword = args.keyword;
    List out;
    for (const auto& item : Iterate(operand)) {
      Step();
      const Value subject = by_attr ? attribute_of(item, attribute) : item;
      CallArgs call = test_args;
      const bool matches = test.empty() ? subject.Truthy() : ApplyTest(test, subject, call);
      if (matches == keep_matches) out.push_back(item);
    }
    return Value::MakeList(std::move(out));
  }
  if (name == "map") {
    List out;
    const Value* attribute = nullptr;
    const Value* fallback = nullptr;
    for (const auto& [k, v] : args.keyword) {
      if (k == "attribute")
        attribute = &v;
      else if (k == "default")
        fallback = &v;
    }
    if (attribute) {
      for (const auto& item : Iterate(operand)) {
        Value v = attribute_of(item, *attribute);
        if (v.is_undefined() && fallback) v = *fallback;
        out.push_back(std::move(v));
      }
      return Value::MakeList(std::move(out));
    }
    if (args.positional.empty()) Throw("map: needs a filter name or attribute=");
    const std::string filter = AsString(args.positional[0], "filter name");
    if (!IsKnownFilter(filter)) Throw("unsupported filter '" + filter + "'");
    for (const auto& item : Iterate(operand)) {
      CallArgs call;
      call.positional.assign(args.positional.begin() + 1, args.positional.end());
      call.keyword = args.keyword;
      out.push_back(ApplyFilter(filter, item, call));
    }
    return Value::MakeList(std::move(out));
  }
  if (name == "attr") {
    auto a = BindArgs(fn, args, {"name"}, 1);
    return GetAttr(operand, AsString(a[0], "attribute name"));
  }
  if (name == "indent") {
    // jinja2 filters.py do_indent (Jinja 3).
    auto a = BindArgs(fn, args, {"width", "first", "blank"});
    std::string indention = "    ";
    if (a[0].is_string()) {
      indention = a[0].str();
    } else if (!a[0].is_undefined()) {
      indention = std::string(static_cast<size_t>(std::max<int64_t>(0, AsInt(a[0], "width"))), ' ');
    }
    const std::vector<std::string> lines = SplitLines(ToStr(operand) + "\n");
    std::string out;
    if (a[2].Truthy()) {
      for (size_t i = 0; i < lines.size(); ++i) {
        if (i > 0) out += "\n" + indention;
        out += lines[i];
      }
    } else if (!lines.empty()) {
      out = lines[0];
      for (size_t i = 1; i < lines.size(); ++i) out += "\n" + (lines[i].empty() ? lines[i] : indention + lines[i]);
    }
    if (a[1].Truthy()) out = indention + out;
    CheckSize(out.size());
    return Value::Str(std::move(out));
  }
  if (name == "int" || name == "float") {
    auto a = name == "int" ? BindArgs(fn, args, {"default", "base"}) : BindArgs(fn, args, {"default"});
    if (operand.is_undefined()) ThrowUndefined(operand);  // int(Undefined) raises in Jinja2
    const Value fallback = !a[0].is_undefined() ? a[0] : (name == "int" ? Value::Int(0) : Value::Float(0.0));
    if (operand.kind() == K::kInt || operand.kind() == K::kBool) {
      return name == "int" ? Value::Int(AsInt(operand, "value")) : Value::Float(operand.AsDouble());
    }
    if (operand.kind() == K::kFloat) {
      const double f = operand.floating();
      if (name == "float") return operand;
      if (!std::isfinite(f) || std::fabs(f) >= 9.2e18) return fallback;
      return Value::Int(static_cast<int64_t>(std::trunc(f)));
    }
    if (operand.is_string()) {
      std::string s = Strip(operand.str(), Value(), true, true);
      s.erase(std::remove(s.begin(), s.end(), '_'), s.end());
      if (name == "int") {
        int64_t i = 0;
        const char* begin = s.data() + (!s.empty() && s[0] == '+' ? 1 : 0);
        auto [end, ec] = std::from_chars(begin, s.data() + s.size(), i);
        if (ec == std::errc() && end == s.data() + s.size() && begin != end) return Value::Int(i);
      }
      double d = 0;
      const char* begin = s.data() + (!s.empty() && s[0] == '+' ? 1 : 0);
      auto [end, ec] = std::from_chars(begin, s.data() + s.size(), d);
      if (ec == std::errc() && end == s.data() + s.size() && begin != end) {
        if (name == "float") return Value::Float(d);
        if (std::isfinite(d) && std::fabs(d) < 9.2e18) return Value::Int(static_cast<int64_t>(std::trunc(d)));
      }
    }
    return fallback;
  }
  if (name == "abs") {
    BindArgs(fn, args, {});
    if (operand.kind() == K::kInt || operand.kind() == K::kBool) {
      const int64_t i = AsInt(operand, "value");
      if (i == std::numeric_limits<int64_t>::min()) Throw("integer overflow");
      return Value::Int(i < 0 ? -i : i);
    }
    if (operand.kind() == K::kFloat) return Value::Float(std::fabs(operand.floating()));
    Throw("bad operand type for abs(): '" + TypeName(operand) + "'");
  }
  if (name == "round") {
    auto a = BindArgs(fn, args, {"precision", "method"});
    if (!operand.is_number()) Throw("round: expected a number, not '" + TypeName(operand) + "'");
    const int64_t precision = a[0].is_undefined() ? 0 : AsInt(a[0], "precision");
    const std::string method = a[1].is_undefined() ? "common" : AsString(a[1], "method");
    const double scale = std::pow(10.0, static_cast<double>(precision));
    const double x = operand.AsDouble() * scale;
    double r = 0;
    if (method == "common") {
      r = std::nearbyint(x);  // round half to even, as Python's round()
    } else if (method == "floor") {
      r = std::floor(x);
    } else if (method == "ceil") {
      r = std::ceil(x);
    } else {
      Throw("round: method must be 'common', 'ceil' or 'floor'");
    }
    return Value::Float(r / scale);
  }
  if (name == "sum") {
    auto a = BindArgs(fn, args, {"attribute", "start"});
    Value total = a[1].is_undefined() ? Value::Int(0) : a[1];
    for (const auto& item : Iterate(operand)) total = Arithmetic("+", total, attribute_of(item, a[0]), *this);
    return total;
  }
  Throw("unsupported filter '" + name + "'");
}

// ---------------------------------------------------------------- tests

bool Interpreter::ApplyTest(const std::string& name, const Value& v, CallArgs& args) {
  const std::string fn = "test '" + name + "'";
  auto arg = [&]() -> Value {
    auto a = BindArgs(fn, args, {"other"}, 1);
    return a[0];
  };
  if (name == "defined") return !v.is_undefined();
  if (name == "undefined") return v.is_undefined();
  if (name == "none") return v.is_none();
  if (name == "boolean") return v.kind() == K::kBool;
  if (name == "true") return v.kind() == K::kBool && v.boolean();
  if (name == "false") return v.kind() == K::kBool && !v.boolean();
  if (name == "integer") return v.kind() == K::kInt;
  if (name == "float") return v.kind() == K::kFloat;
  if (name == "number") return v.is_number();
  if (name == "string") return v.is_string();
  if (name == "mapping") return v.is_dict();
  if (name == "iterable") return v.is_undefined() || v.is_string() || v.is_list() || v.is_dict();
  if (name == "sequence") return v.is_undefined() || v.is_string() || v.is_list() || v.is_dict();
  if (name == "callable") return v.kind() == K::kCallable;
  if (name == "escaped") return false;
  if (name == "lower" || name == "upper") {
    // jinja2 tests.py: str(value).islower() / isupper().
    const std::string text = ToStr(v);
    bool cased = false;
    for (char c : text) {
      if (IsAsciiAlpha(c)) {
        cased = true;
        if ((name == "lower") != (c >= 'a' && c <= 'z')) return false;
      }
    }
    return cased;
  }
  if (name == "odd" || name == "even") {
    // jinja2 tests.py: value % 2 == 1 / == 0, with Python's %.
    const Value rest = Arithmetic("%", v, Value::Int(2), *this);
    return Equal(rest, Value::Int(name == "odd" ? 1 : 0));
  }
  if (name == "divisibleby") return Equal(Arithmetic("%", v, arg(), *this), Value::Int(0));
  if (name == "eq" || name == "equalto") return Equal(v, arg());
  if (name == "ne") return !Equal(v, arg());
  if (name == "sameas") {
    const Value other = arg();
    if (v.kind() != other.kind()) return false;
    if (v.is_none() || v.is_undefined()) return true;
    if (v.kind() == K::kBool) return v.boolean() == other.boolean();
    if (v.kind() == K::kNamespace) return v.SameNamespace(other);
    return false;
  }
  if (name == "in") return Contains(arg(), v);
  if (name == "lt" || name == "lessthan" || name == "le" || name == "gt" || name == "greaterthan" || name == "ge") {
    const std::string op = name == "lt" || name == "lessthan" ? "<" : name == "le" ? "<=" : name == "ge" ? ">=" : ">";
    return EvalCompare(op, v, arg());
  }
  Throw("unsupported test '" + name + "'");
}

}  // namespace tollgate::local_backend::jinja
