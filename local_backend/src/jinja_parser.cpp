#include "jinja_parser.hpp"

#include <algorithm>
#include <cstdlib>
#include <initializer_list>
#include <set>

#include "jinja_interpreter.hpp"

namespace tollgate::local_backend::jinja {
namespace {

// Deep nesting is refused instead of overflowing the stack: templates come
// from model files.
constexpr int kMaxNesting = 200;

struct Token {
  enum class Type { kText, kVarBegin, kVarEnd, kBlockBegin, kBlockEnd, kName, kString, kInt, kFloat, kOp, kEof };
  Type type;
  std::string value;
  int line = 1;
  bool Is(Type t, std::string_view v) const { return type == t && value == v; }
  bool IsName(std::string_view v) const { return type == Type::kName && value == v; }
  bool IsOp(std::string_view v) const { return type == Type::kOp && value == v; }
};

[[noreturn]] void Fail(int line, const std::string& message) {
  throw TemplateError("line " + std::to_string(line) + ": " + message);
}

bool IsInlineSpace(char c) { return c == ' ' || c == '\t' || c == '\v' || c == '\f' || c == '\r'; }
bool IsSpace(char c) { return IsInlineSpace(c) || c == '\n'; }
bool IsNameStart(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'; }
bool IsNameChar(char c) { return IsNameStart(c) || (c >= '0' && c <= '9'); }
bool IsDigit(char c) { return c >= '0' && c <= '9'; }

// Strips trailing whitespace as Python's str.rstrip() does (ASCII and the
// Unicode spaces of IsPySpace).
void RStripPy(std::string& text) {
  while (!text.empty()) {
    size_t start = text.size() - 1;
    while (start > 0 && (static_cast<unsigned char>(text[start]) & 0xC0) == 0x80) --start;
    size_t i = start;
    const uint32_t cp = NextCodePoint(text, i);
    if (i != text.size() || !IsPySpace(cp)) return;
    text.resize(start);
  }
}

size_t SkipPySpace(std::string_view s, size_t pos) {
  while (pos < s.size()) {
    size_t i = pos;
    const uint32_t cp = NextCodePoint(s, i);
    if (!IsPySpace(cp)) break;
    pos = i;
  }
  return pos;
}

class Lexer {
 public:
  explicit Lexer(std::string_view raw) {
    // newline_re normalisation and keep_trailing_newline=False.
    src_.reserve(raw.size());
    for (size_t i = 0; i < raw.size(); ++i) {
      if (raw[i] == '\r') {
        src_ += '\n';
        if (i + 1 < raw.size() && raw[i + 1] == '\n') ++i;
      } else {
        src_ += raw[i];
      }
    }
    if (!src_.empty() && src_.back() == '\n') src_.pop_back();
  }

  std::vector<Token> Run() {
    while (pos_ < src_.size()) {
      const size_t start = FindTagStart(pos_);
      std::string text = src_.substr(pos_, start == std::string::npos ? std::string::npos : start - pos_);
      if (start == std::string::npos) {
        PushText(std::move(text), pos_);
        pos_ = src_.size();
        break;
      }
      const char kind = src_[start + 1];
      const char modifier = start + 2 < src_.size() ? src_[start + 2] : '\0';
      if (modifier == '-') {
        RStripPy(text);
      } else if (modifier != '+' && (kind == '%' || kind == '#')) {
        LStripBlock(text);
      }
      PushText(std::move(text), pos_);
      pos_ = start + 2 + ((modifier == '-' || modifier == '+') ? 1 : 0);
      const int line = LineAt(start);
      if (kind == '#') {
        LexComment(line);
      } else if (kind == '{') {
        tokens_.push_back({Token::Type::kVarBegin, "{{", line});
        LexInside(false);
      } else {
        if (IsRawBlock()) {
          LexRaw(line);
          continue;
        }
        tokens_.push_back({Token::Type::kBlockBegin, "{%", line});
        LexInside(true);
      }
    }
    tokens_.push_back({Token::Type::kEof, "", LineAt(src_.size())});
    return std::move(tokens_);
  }

 private:
  size_t FindTagStart(size_t from) const {
    size_t i = from;
    while ((i = src_.find('{', i)) != std::string::npos) {
      if (i + 1 < src_.size() && (src_[i + 1] == '{' || src_[i + 1] == '%' || src_[i + 1] == '#')) return i;
      ++i;
    }
    return std::string::npos;
  }

  int LineAt(size_t offset) {
    // Offsets only grow, so count incrementally.
    while (line_offset_ < offset && line_offset_ < src_.size()) {
      if (src_[line_offset_] == '\n') ++line_;
      ++line_offset_;
    }
    return line_;
  }

  void PushText(std::string text, size_t at) {
    if (text.empty()) return;
    tokens_.push_back({Token::Type::kText, std::move(text), LineAt(at)});
  }

  // lstrip_blocks: whitespace between the line start and a block or comment
  // tag goes (jinja2 lexer.py, `lstrip_blocks` handling in tokeniter).
  void LStripBlock(std::string& text) const {
    const size_t nl = text.rfind('\n');
    const size_t from = nl == std::string::npos ? 0 : nl + 1;
    if (nl == std::string::npos && !(pos_ == 0 || src_[pos_ - 1] == '\n')) return;
    for (size_t i = from; i < text.size(); ++i) {
      if (!IsInlineSpace(text[i])) return;
    }
    text.resize(from);
  }

  void LexComment(int line) {
    const size_t end = src_.find("#}", pos_);
    if (end == std::string::npos) Fail(line, "missing end of comment tag '#}'");
    const bool strip_after = end > pos_ && src_[end - 1] == '-';
    pos_ = end + 2;
    AfterTag(strip_after, true);
  }

  // Whitespace control after a closing tag.
  void AfterTag(bool strip_after, bool trim_newline) {
    if (strip_after) {
      pos_ = SkipPySpace(src_, pos_);
    } else if (trim_newline && pos_ < src_.size() && src_[pos_] == '\n') {
      ++pos_;
    }
  }

  bool IsRawBlock() const {
    size_t i = pos_;
    while (i < src_.size() && IsSpace(src_[i])) ++i;
    if (src_.compare(i, 3, "raw") != 0) return false;
    i += 3;
    return i < src_.size() && !IsNameChar(src_[i]);
  }

  void LexRaw(int line) {
    size_t i = src_.find("raw", pos_) + 3;
    while (i < src_.size() && IsSpace(src_[i])) ++i;
    bool strip_after = false;
    if (src_.compare(i, 3, "-%}") == 0) {
      strip_after = true;
      i += 3;
    } else if (src_.compare(i, 2, "%}") == 0) {
      i += 2;
    } else {
      Fail(line, "expected '%}' after 'raw'");
    }
    pos_ = i;
    AfterTag(strip_after, true);
    // Find {% endraw %} with optional modifiers.
    size_t search = pos_;
    while (true) {
      const size_t open = src_.find("{%", search);
      if (open == std::string::npos) Fail(line, "missing '{% endraw %}'");
      size_t j = open + 2;
      const char modifier = j < src_.size() ? src_[j] : '\0';
      if (modifier == '-' || modifier == '+') ++j;
      while (j < src_.size() && IsSpace(src_[j])) ++j;
      if (src_.compare(j, 6, "endraw") != 0) {
        search = open + 2;
        continue;
      }
      j += 6;
      while (j < src_.size() && IsSpace(src_[j])) ++j;
      bool end_strip = false;
      if (src_.compare(j, 3, "-%}") == 0) {
        end_strip = true;
        j += 3;
      } else if (src_.compare(j, 2, "%}") == 0) {
        j += 2;
      } else {
        Fail(line, "expected '%}' after 'endraw'");
      }
      std::string text = src_.substr(pos_, open - pos_);
      if (modifier == '-') {
        RStripPy(text);
      } else if (modifier != '+') {
        const size_t saved = pos_;
        pos_ = open;  // LStripBlock looks at the character before the tag
        LStripBlock(text);
        pos_ = saved;
      }
      PushText(std::move(text), pos_);
      pos_ = j;
      AfterTag(end_strip, true);
      return;
    }
  }

  // Tokens of one {{ ... }} or {% ... %}, up to and including its end.
  void LexInside(bool block) {
    std::vector<char> balance;
    const int start_line = LineAt(pos_);
    while (true) {
      while (pos_ < src_.size() && IsSpace(src_[pos_])) ++pos_;
      if (pos_ >= src_.size()) Fail(start_line, block ? "missing '%}'" : "missing '}}'");
      const int line = LineAt(pos_);
      if (balance.empty()) {
        if (block) {
          if (src_.compare(pos_, 3, "-%}") == 0 || src_.compare(pos_, 3, "+%}") == 0) {
            // `-%}` strips what follows; `+%}` keeps even the newline.
            const bool strip = src_[pos_] == '-';
            tokens_.push_back({Token::Type::kBlockEnd, "%}", line});
            pos_ += 3;
            AfterTag(strip, false);
            return;
          }
          if (src_.compare(pos_, 2, "%}") == 0) {
            tokens_.push_back({Token::Type::kBlockEnd, "%}", line});
            pos_ += 2;
            AfterTag(false, true);
            return;
          }
        } else {
          if (src_.compare(pos_, 3, "-}}") == 0) {
            tokens_.push_back({Token::Type::kVarEnd, "}}", line});
            pos_ += 3;
            AfterTag(true, false);
            return;
          }
          if (src_.compare(pos_, 2, "}}") == 0) {
            tokens_.push_back({Token::Type::kVarEnd, "}}", line});
            pos_ += 2;
            return;
          }
        }
      }
      const char c = src_[pos_];
      if (IsNameStart(c)) {
        const size_t start = pos_;
        while (pos_ < src_.size() && IsNameChar(src_[pos_])) ++pos_;
        tokens_.push_back({Token::Type::kName, src_.substr(start, pos_ - start), line});
        continue;
      }
      if (IsDigit(c)) {
        LexNumber(line);
        continue;
      }
      if (c == '\'' || c == '"') {
        LexString(line);
        continue;
      }
      static constexpr std::string_view kTwo[] = {"//", "**", "==", "!=", "<=", ">="};
      bool matched = false;
      for (std::string_view op : kTwo) {
        if (src_.compare(pos_, 2, op) == 0) {
          tokens_.push_back({Token::Type::kOp, std::string(op), line});
          pos_ += 2;
          matched = true;
          break;
        }
      }
      if (matched) continue;
      static constexpr std::string_view kOne = "+-*/%~<>=()[]{},.:|";
      if (kOne.find(c) != std::string_view::npos) {
        if (c == '(' || c == '[' || c == '{') balance.push_back(c);
        if (c == ')' || c == ']' || c == '}') {
          const char open = c == ')' ? '(' : (c == ']' ? '[' : '{');
          if (balance.empty() || balance.back() != open) Fail(line, std::string("unexpected '") + c + "'");
          balance.pop_back();
        }
        tokens_.push_back({Token::Type::kOp, std::string(1, c), line});
        ++pos_;
        continue;
      }
      Fail(line, std::string("unexpected character '") + c + "'");
    }
  }

  void LexNumber(int line) {
    const size_t start = pos_;
    auto digits = [&] {
      while (pos_ < src_.size() &&
             (IsDigit(src_[pos_]) || (src_[pos_] == '_' && pos_ + 1 < src_.size() && IsDigit(src_[pos_ + 1])))) {
        ++pos_;
      }
    };
    digits();
    bool is_float = false;
    const bool after_dot = !tokens_.empty() && tokens_.back().IsOp(".");
    if (!after_dot && pos_ + 1 < src_.size() && src_[pos_] == '.' && IsDigit(src_[pos_ + 1])) {
      is_float = true;
      ++pos_;
      digits();
    }
    if (!after_dot && pos_ < src_.size() && (src_[pos_] == 'e' || src_[pos_] == 'E')) {
      size_t j = pos_ + 1;
      if (j < src_.size() && (src_[j] == '+' || src_[j] == '-')) ++j;
      if (j < src_.size() && IsDigit(src_[j])) {
        is_float = true;
        pos_ = j;
        digits();
      }
    }
    std::string text;
    for (size_t i = start; i < pos_; ++i) {
      if (src_[i] != '_') text += src_[i];
    }
    tokens_.push_back({is_float ? Token::Type::kFloat : Token::Type::kInt, std::move(text), line});
  }

  // Python string literal escapes (Jinja decodes literals with
  // "unicode-escape"); unknown escapes keep their backslash.
  void LexString(int line) {
    const char quote = src_[pos_++];
    std::string value;
    while (true) {
      if (pos_ >= src_.size()) Fail(line, "unterminated string literal");
      const char c = src_[pos_++];
      if (c == quote) break;
      if (c != '\\') {
        value += c;
        continue;
      }
      if (pos_ >= src_.size()) Fail(line, "unterminated string literal");
      const char e = src_[pos_++];
      auto hex = [&](int n) -> uint32_t {
        uint32_t cp = 0;
        for (int k = 0; k < n; ++k) {
          if (pos_ >= src_.size()) Fail(line, "truncated \\x/\\u escape");
          const char h = src_[pos_++];
          cp <<= 4;
          if (h >= '0' && h <= '9') {
            cp |= static_cast<uint32_t>(h - '0');
          } else if (h >= 'a' && h <= 'f') {
            cp |= static_cast<uint32_t>(h - 'a' + 10);
          } else if (h >= 'A' && h <= 'F') {
            cp |= static_cast<uint32_t>(h - 'A' + 10);
          } else {
            Fail(line, "bad hexadecimal escape");
          }
        }
        return cp;
      };
      switch (e) {
        case 'n':
          value += '\n';
          break;
        case 't':
          value += '\t';
          break;
        case 'r':
          value += '\r';
          break;
        case 'b':
          value += '\b';
          break;
        case 'f':
          value += '\f';
          break;
        case 'v':
          value += '\v';
          break;
        case 'a':
          value += '\a';
          break;
        case '\\':
          value += '\\';
          break;
        case '\'':
          value += '\'';
          break;
        case '"':
          value += '"';
          break;
        case '\n':
          break;  // line continuation
        case 'x':
          AppendUtf8(value, hex(2));
          break;
        case 'u':
          AppendUtf8(value, hex(4));
          break;
        case 'U':
          AppendUtf8(value, hex(8));
          break;
        default:
          if (e >= '0' && e <= '7') {
            uint32_t cp = static_cast<uint32_t>(e - '0');
            for (int k = 0; k < 2 && pos_ < src_.size() && src_[pos_] >= '0' && src_[pos_] <= '7'; ++k) {
              cp = cp * 8 + static_cast<uint32_t>(src_[pos_++] - '0');
            }
            AppendUtf8(value, cp);
          } else {
            value += '\\';
            value += e;
          }
      }
    }
    tokens_.push_back({Token::Type::kString, std::move(value), line});
  }

  std::string src_;
  size_t pos_ = 0;
  std::vector<Token> tokens_;
  int line_ = 1;
  size_t line_offset_ = 0;
};

class Parser {
 public:
  explicit Parser(std::vector<Token> tokens) : tokens_(std::move(tokens)) {}

  std::unique_ptr<Program> Run() {
    auto program = std::make_unique<Program>();
    program->body = ParseBody({});
    program->names_read.assign(names_read_.begin(), names_read_.end());
    return program;
  }

 private:
  using T = Token::Type;

  const Token& Peek(size_t ahead = 0) const { return tokens_[std::min(pos_ + ahead, tokens_.size() - 1)]; }
  const Token& Next() {
    const Token& t = tokens_[pos_];
    if (pos_ + 1 < tokens_.size()) ++pos_;
    return t;
  }
  std::string Describe(const Token& t) const {
    switch (t.type) {
      case T::kEof:
        return "end of template";
      case T::kBlockEnd:
        return "'%}'";
      case T::kVarEnd:
        return "'}}'";
      case T::kString:
        return "string literal";
      default:
        return "'" + t.value + "'";
    }
  }
  void ExpectOp(std::string_view op) {
    if (!Peek().IsOp(op)) Fail(Peek().line, "expected '" + std::string(op) + "', got " + Describe(Peek()));
    Next();
  }
  void ExpectName(std::string_view name) {
    if (!Peek().IsName(name)) Fail(Peek().line, "expected '" + std::string(name) + "', got " + Describe(Peek()));
    Next();
  }
  std::string ExpectIdentifier() {
    if (Peek().type != T::kName) Fail(Peek().line, "expected a name, got " + Describe(Peek()));
    return Next().value;
  }
  void ExpectBlockEnd() {
    if (Peek().type != T::kBlockEnd) Fail(Peek().line, "expected '%}', got " + Describe(Peek()));
    Next();
  }

  struct Depth {
    explicit Depth(Parser& p) : p(p) {
      if (++p.depth_ > kMaxNesting) Fail(p.Peek().line, "template nests too deeply");
    }
    ~Depth() { --p.depth_; }
    Parser& p;
  };

  // ---------------------------------------------------------------- statements

  Body ParseBody(std::initializer_list<std::string_view> end_names) {
    Depth depth(*this);
    Body body;
    while (true) {
      const Token& t = Peek();
      switch (t.type) {
        case T::kEof:
          if (end_names.size() > 0) Fail(t.line, "missing '{% " + std::string(*(end_names.end() - 1)) + " %}'");
          return body;
        case T::kText: {
          auto stmt = std::make_unique<Stmt>();
          stmt->kind = Stmt::Kind::kText;
          stmt->line = t.line;
          stmt->text = Next().value;
          body.push_back(std::move(stmt));
          break;
        }
        case T::kVarBegin: {
          const int line = Next().line;
          auto stmt = std::make_unique<Stmt>();
          stmt->kind = Stmt::Kind::kOutput;
          stmt->line = line;
          stmt->expr = ParseTuple(true);
          if (Peek().type != T::kVarEnd) Fail(Peek().line, "expected '}}', got " + Describe(Peek()));
          Next();
          body.push_back(std::move(stmt));
          break;
        }
        case T::kBlockBegin: {
          const Token& name = Peek(1);
          if (name.type != T::kName) Fail(name.line, "expected a statement name, got " + Describe(name));
          for (std::string_view end : end_names) {
            if (name.value == end) return body;
          }
          Next();
          body.push_back(ParseStatement());
          break;
        }
        default:
          Fail(t.line, "unexpected " + Describe(t));
      }
    }
  }

  StmtPtr ParseStatement() {
    const Token& name_token = Next();
    const std::string& name = name_token.value;
    const int line = name_token.line;
    auto stmt = std::make_unique<Stmt>();
    stmt->line = line;
    if (name == "if") {
      stmt->kind = Stmt::Kind::kIf;
      ExprPtr condition = ParseExpression(true);
      ExpectBlockEnd();
      Body branch = ParseBody({"elif", "else", "endif"});
      stmt->branches.emplace_back(std::move(condition), std::move(branch));
      while (true) {
        Next();  // {%
        const std::string keyword = Next().value;
        if (keyword == "elif") {
          ExprPtr c = ParseExpression(true);
          ExpectBlockEnd();
          Body b = ParseBody({"elif", "else", "endif"});
          stmt->branches.emplace_back(std::move(c), std::move(b));
        } else if (keyword == "else") {
          ExpectBlockEnd();
          Body b = ParseBody({"endif"});
          stmt->branches.emplace_back(nullptr, std::move(b));
          Next();  // {%
          Next();  // endif
          ExpectBlockEnd();
          break;
        } else {
          ExpectBlockEnd();
          break;
        }
      }
      return stmt;
    }
    if (name == "for") {
      stmt->kind = Stmt::Kind::kFor;
      ParseTargets(stmt->targets);
      ExpectName("in");
      stmt->expr = ParseTuple(false);
      const int loop_reads_before = loop_reads_;
      if (Peek().IsName("if")) {
        Next();
        stmt->filter = ParseExpression(true);
      }
      if (Peek().IsName("recursive")) Fail(Peek().line, "unsupported: recursive for loops");
      ExpectBlockEnd();
      ++loop_depth_;
      stmt->body = ParseBody({"else", "endfor"});
      --loop_depth_;
      Next();  // {%
      if (Next().value == "else") {
        ExpectBlockEnd();
        stmt->else_body = ParseBody({"endfor"});
        Next();
        Next();
      }
      ExpectBlockEnd();
      stmt->uses_loop = loop_reads_ > loop_reads_before;
      return stmt;
    }
    if (name == "set") {
      const std::string first = ExpectIdentifier();
      if (Peek().IsOp(".")) {
        Next();
        stmt->kind = Stmt::Kind::kSet;
        stmt->targets.push_back(first);
        stmt->ns_attr = ExpectIdentifier();
        ExpectOp("=");
        stmt->expr = ParseTuple(true);
        ExpectBlockEnd();
        return stmt;
      }
      stmt->targets.push_back(first);
      while (Peek().IsOp(",")) {
        Next();
        if (Peek().IsOp("=")) break;
        stmt->targets.push_back(ExpectIdentifier());
      }
      if (Peek().IsOp("=")) {
        Next();
        stmt->kind = Stmt::Kind::kSet;
        stmt->expr = ParseTuple(true);
        ExpectBlockEnd();
        return stmt;
      }
      if (stmt->targets.size() != 1) Fail(line, "expected '=' after set targets");
      if (Peek().IsOp("|")) Fail(line, "unsupported: filtered block set");
      ExpectBlockEnd();
      stmt->kind = Stmt::Kind::kSetBlock;
      stmt->body = ParseBody({"endset"});
      Next();
      Next();
      ExpectBlockEnd();
      return stmt;
    }
    if (name == "macro") {
      stmt->kind = Stmt::Kind::kMacro;
      stmt->name = ExpectIdentifier();
      ExpectOp("(");
      while (!Peek().IsOp(")")) {
        if (!stmt->params.empty()) ExpectOp(",");
        if (Peek().IsOp(")")) break;
        stmt->params.push_back(ExpectIdentifier());
        if (Peek().IsOp("=")) {
          Next();
          stmt->defaults.push_back(ParseExpression(true));
        } else {
          if (!stmt->defaults.empty() && stmt->defaults.back()) {
            Fail(line, "non-default macro argument follows default argument");
          }
          stmt->defaults.push_back(nullptr);
        }
      }
      Next();
      ExpectBlockEnd();
      const int saved_loops = loop_depth_;
      loop_depth_ = 0;
      stmt->body = ParseBody({"endmacro"});
      loop_depth_ = saved_loops;
      Next();
      Next();
      if (Peek().type == T::kName) Next();
      ExpectBlockEnd();
      return stmt;
    }
    if (name == "break" || name == "continue") {
      if (loop_depth_ == 0) Fail(line, "'" + name + "' outside a for loop");
      stmt->kind = name == "break" ? Stmt::Kind::kBreak : Stmt::Kind::kContinue;
      ExpectBlockEnd();
      return stmt;
    }
    if (name == "generation") {
      stmt->kind = Stmt::Kind::kGeneration;
      ExpectBlockEnd();
      stmt->body = ParseBody({"endgeneration"});
      Next();
      Next();
      ExpectBlockEnd();
      return stmt;
    }
    static const std::set<std::string, std::less<>> kEnds = {"elif",   "else",     "endif",         "endfor",
                                                             "endset", "endmacro", "endgeneration", "endraw"};
    if (kEnds.count(name) > 0) Fail(line, "unexpected '{% " + name + " %}'");
    Fail(line, "unsupported statement '{% " + name + " %}'");
  }

  void ParseTargets(std::vector<std::string>& targets) {
    const bool paren = Peek().IsOp("(");
    if (paren) Next();
    targets.push_back(ExpectIdentifier());
    while (Peek().IsOp(",")) {
      Next();
      if (Peek().IsName("in") || Peek().IsOp(")")) break;
      targets.push_back(ExpectIdentifier());
    }
    if (paren) ExpectOp(")");
  }

  // ---------------------------------------------------------------- expressions

  ExprPtr Make(Expr::Kind kind, int line) {
    auto e = std::make_unique<Expr>();
    e->kind = kind;
    e->line = line;
    return e;
  }

  bool IsTupleEnd() const {
    const Token& t = Peek();
    return t.type == T::kVarEnd || t.type == T::kBlockEnd || t.IsOp(")") || t.type == T::kEof;
  }

  // jinja2 parser.parse_tuple: comma-separated expressions; a single one
  // without a trailing comma is itself.
  ExprPtr ParseTuple(bool with_condexpr, bool explicit_parens = false) {
    const int line = Peek().line;
    std::vector<ExprPtr> items;
    bool trailing_comma = false;
    while (true) {
      if (!items.empty()) {
        if (!Peek().IsOp(",")) break;
        Next();
        trailing_comma = true;
      }
      if (IsTupleEnd()) break;
      items.push_back(ParseExpression(with_condexpr));
      trailing_comma = false;
      if (!Peek().IsOp(",")) break;
    }
    if (items.size() == 1 && !trailing_comma) return std::move(items[0]);
    if (items.empty() && !explicit_parens) Fail(line, "expected an expression, got " + Describe(Peek()));
    auto tuple = Make(Expr::Kind::kTuple, line);
    tuple->items = std::move(items);
    return tuple;
  }

  ExprPtr ParseExpression(bool with_condexpr) {
    Depth depth(*this);
    return with_condexpr ? ParseCondExpr() : ParseOr();
  }

  ExprPtr ParseCondExpr() {
    ExprPtr expr = ParseOr();
    while (Peek().IsName("if")) {
      const int line = Next().line;
      auto cond = Make(Expr::Kind::kCondition, line);
      cond->a = ParseOr();
      cond->b = std::move(expr);
      if (Peek().IsName("else")) {
        Next();
        cond->c = ParseCondExpr();
      }
      expr = std::move(cond);
    }
    return expr;
  }

  ExprPtr ParseOr() {
    ExprPtr left = ParseAnd();
    while (Peek().IsName("or")) {
      auto node = Make(Expr::Kind::kOr, Next().line);
      node->a = std::move(left);
      node->b = ParseAnd();
      left = std::move(node);
    }
    return left;
  }

  ExprPtr ParseAnd() {
    ExprPtr left = ParseNot();
    while (Peek().IsName("and")) {
      auto node = Make(Expr::Kind::kAnd, Next().line);
      node->a = std::move(left);
      node->b = ParseNot();
      left = std::move(node);
    }
    return left;
  }

  ExprPtr ParseNot() {
    if (Peek().IsName("not")) {
      Depth depth(*this);
      auto node = Make(Expr::Kind::kNot, Next().line);
      node->a = ParseNot();
      return node;
    }
    return ParseCompare();
  }

  ExprPtr ParseCompare() {
    const int line = Peek().line;
    ExprPtr expr = ParseMath1();
    std::vector<std::pair<std::string, ExprPtr>> chain;
    while (true) {
      const Token& t = Peek();
      std::string op;
      if (t.type == T::kOp && (t.value == "==" || t.value == "!=" || t.value == "<" || t.value == "<=" ||
                               t.value == ">" || t.value == ">=")) {
        op = Next().value;
      } else if (t.IsName("in")) {
        Next();
        op = "in";
      } else if (t.IsName("not") && Peek(1).IsName("in")) {
        Next();
        Next();
        op = "not in";
      } else {
        break;
      }
      chain.emplace_back(op, ParseMath1());
    }
    if (chain.empty()) return expr;
    auto node = Make(Expr::Kind::kCompare, line);
    node->a = std::move(expr);
    node->chain = std::move(chain);
    return node;
  }

  ExprPtr Binary(std::string op, ExprPtr left, ExprPtr right, int line) {
    auto node = Make(Expr::Kind::kBinary, line);
    node->name = std::move(op);
    node->a = std::move(left);
    node->b = std::move(right);
    return node;
  }

  ExprPtr ParseMath1() {
    ExprPtr left = ParseConcat();
    while (Peek().IsOp("+") || Peek().IsOp("-")) {
      const Token& op = Next();
      left = Binary(op.value, std::move(left), ParseConcat(), op.line);
    }
    return left;
  }

  ExprPtr ParseConcat() {
    ExprPtr left = ParseMath2();
    while (Peek().IsOp("~")) {
      const int line = Next().line;
      left = Binary("~", std::move(left), ParseMath2(), line);
    }
    return left;
  }

  ExprPtr ParseMath2() {
    ExprPtr left = ParsePow();
    while (Peek().IsOp("*") || Peek().IsOp("/") || Peek().IsOp("//") || Peek().IsOp("%")) {
      const Token& op = Next();
      left = Binary(op.value, std::move(left), ParsePow(), op.line);
    }
    return left;
  }

  ExprPtr ParsePow() {
    ExprPtr left = ParseUnary(true);
    while (Peek().IsOp("**")) {
      const int line = Next().line;
      left = Binary("**", std::move(left), ParseUnary(true), line);
    }
    return left;
  }

  ExprPtr ParseUnary(bool with_filter) {
    Depth depth(*this);
    ExprPtr node;
    if (Peek().IsOp("-") || Peek().IsOp("+")) {
      const Token& op = Next();
      node = Make(op.value == "-" ? Expr::Kind::kNeg : Expr::Kind::kPos, op.line);
      node->a = ParseUnary(false);
    } else {
      node = ParsePrimary();
    }
    node = ParsePostfix(std::move(node));
    if (with_filter) node = ParseFilterExpr(std::move(node));
    return node;
  }

  ExprPtr ParsePrimary() {
    const Token& t = Peek();
    switch (t.type) {
      case T::kName: {
        Next();
        if (t.value == "true" || t.value == "True" || t.value == "false" || t.value == "False") {
          auto lit = Make(Expr::Kind::kLiteral, t.line);
          lit->literal = Value::Bool(t.value == "true" || t.value == "True");
          return lit;
        }
        if (t.value == "none" || t.value == "None") {
          auto lit = Make(Expr::Kind::kLiteral, t.line);
          lit->literal = Value::None();
          return lit;
        }
        auto name = Make(Expr::Kind::kName, t.line);
        name->name = t.value;
        names_read_.insert(t.value);
        if (t.value == "loop") ++loop_reads_;
        return name;
      }
      case T::kString: {
        const int line = t.line;
        std::string value = Next().value;
        while (Peek().type == T::kString) value += Next().value;  // adjacent literals join
        auto lit = Make(Expr::Kind::kLiteral, line);
        lit->literal = Value::Str(std::move(value));
        return lit;
      }
      case T::kInt: {
        Next();
        auto lit = Make(Expr::Kind::kLiteral, t.line);
        try {
          lit->literal = Value::Int(std::stoll(t.value));
        } catch (const std::exception&) {
          Fail(t.line, "integer literal out of range: " + t.value);
        }
        return lit;
      }
      case T::kFloat: {
        Next();
        auto lit = Make(Expr::Kind::kLiteral, t.line);
        lit->literal = Value::Float(std::strtod(t.value.c_str(), nullptr));  // 1e999 is inf, as in Python
        return lit;
      }
      case T::kOp:
        if (t.value == "(") {
          Next();
          ExprPtr inner = ParseTuple(true, true);
          ExpectOp(")");
          return inner;
        }
        if (t.value == "[") {
          auto list = Make(Expr::Kind::kList, Next().line);
          while (!Peek().IsOp("]")) {
            if (!list->items.empty()) ExpectOp(",");
            if (Peek().IsOp("]")) break;
            list->items.push_back(ParseExpression(true));
          }
          Next();
          return list;
        }
        if (t.value == "{") {
          auto dict = Make(Expr::Kind::kDict, Next().line);
          while (!Peek().IsOp("}")) {
            if (!dict->items.empty()) ExpectOp(",");
            if (Peek().IsOp("}")) break;
            dict->items.push_back(ParseExpression(true));
            ExpectOp(":");
            dict->items.push_back(ParseExpression(true));
          }
          Next();
          return dict;
        }
        break;
      default:
        break;
    }
    Fail(t.line, "unexpected " + Describe(t));
  }

  ExprPtr ParsePostfix(ExprPtr node) {
    while (true) {
      if (Peek().IsOp(".") || Peek().IsOp("[")) {
        node = ParseSubscript(std::move(node));
      } else if (Peek().IsOp("(")) {
        node = ParseCall(std::move(node));
      } else {
        return node;
      }
    }
  }

  ExprPtr ParseFilterExpr(ExprPtr node) {
    while (true) {
      if (Peek().IsOp("|")) {
        node = ParseFilter(std::move(node));
      } else if (Peek().IsName("is")) {
        node = ParseTest(std::move(node));
      } else if (Peek().IsOp("(")) {
        node = ParseCall(std::move(node));
      } else {
        return node;
      }
    }
  }

  ExprPtr ParseSubscript(ExprPtr node) {
    const Token& t = Next();
    if (t.value == ".") {
      const Token& attr = Next();
      if (attr.type == T::kName) {
        auto get = Make(Expr::Kind::kGetAttr, attr.line);
        get->name = attr.value;
        get->a = std::move(node);
        return get;
      }
      if (attr.type == T::kInt) {
        auto get = Make(Expr::Kind::kGetItem, attr.line);
        get->a = std::move(node);
        get->b = Make(Expr::Kind::kLiteral, attr.line);
        try {
          get->b->literal = Value::Int(std::stoll(attr.value));
        } catch (const std::exception&) {
          Fail(attr.line, "integer literal out of range: " + attr.value);
        }
        return get;
      }
      Fail(attr.line, "expected an attribute name, got " + Describe(attr));
    }
    // '['
    std::vector<ExprPtr> args;
    while (!Peek().IsOp("]")) {
      if (!args.empty()) {
        ExpectOp(",");
        if (Peek().IsOp("]")) break;
      }
      args.push_back(ParseSubscribed());
    }
    Next();
    if (args.empty()) Fail(t.line, "expected a subscript");
    auto get = Make(args.size() == 1 && args[0]->kind == Expr::Kind::kSlice ? Expr::Kind::kSlice : Expr::Kind::kGetItem,
                    t.line);
    if (get->kind == Expr::Kind::kSlice) {
      ExprPtr slice = std::move(args[0]);
      get->a = std::move(node);
      get->b = std::move(slice->b);
      get->c = std::move(slice->c);
      get->d = std::move(slice->d);
      return get;
    }
    get->a = std::move(node);
    if (args.size() == 1) {
      get->b = std::move(args[0]);
    } else {
      auto tuple = Make(Expr::Kind::kTuple, t.line);
      tuple->items = std::move(args);
      get->b = std::move(tuple);
    }
    return get;
  }

  // An index or a slice [start:stop:step] (parts b, c, d).
  ExprPtr ParseSubscribed() {
    const int line = Peek().line;
    ExprPtr start;
    if (!Peek().IsOp(":")) {
      start = ParseExpression(true);
      if (!Peek().IsOp(":")) return start;
    }
    Next();  // ':'
    auto slice = Make(Expr::Kind::kSlice, line);
    slice->b = std::move(start);
    if (!Peek().IsOp("]") && !Peek().IsOp(",") && !Peek().IsOp(":")) slice->c = ParseExpression(true);
    if (Peek().IsOp(":")) {
      Next();
      if (!Peek().IsOp("]") && !Peek().IsOp(",")) slice->d = ParseExpression(true);
    }
    return slice;
  }

  void ParseCallArgs(Expr& call) {
    ExpectOp("(");
    bool first = true;
    while (!Peek().IsOp(")")) {
      if (!first) {
        ExpectOp(",");
        if (Peek().IsOp(")")) break;
      }
      first = false;
      if (Peek().IsOp("*") || Peek().IsOp("**")) Fail(Peek().line, "unsupported: *args / **kwargs in calls");
      if (Peek().type == T::kName && Peek(1).IsOp("=")) {
        std::string key = Next().value;
        Next();
        call.kwargs.emplace_back(std::move(key), ParseExpression(true));
      } else {
        if (!call.kwargs.empty()) Fail(Peek().line, "positional argument follows keyword argument");
        call.items.push_back(ParseExpression(true));
      }
    }
    Next();
  }

  ExprPtr ParseCall(ExprPtr callee) {
    auto call = Make(Expr::Kind::kCall, Peek().line);
    call->a = std::move(callee);
    ParseCallArgs(*call);
    return call;
  }

  ExprPtr ParseFilter(ExprPtr operand) {
    Next();  // '|'
    const Token& name = Peek();
    const std::string filter = ExpectIdentifier();
    if (Peek().IsOp(".")) Fail(name.line, "unsupported: dotted filter names");
    if (!IsKnownFilter(filter)) Fail(name.line, "unsupported filter '" + filter + "'");
    auto node = Make(Expr::Kind::kFilter, name.line);
    node->name = filter;
    node->a = std::move(operand);
    if (Peek().IsOp("(")) ParseCallArgs(*node);
    return node;
  }

  ExprPtr ParseTest(ExprPtr operand) {
    const int line = Next().line;  // 'is'
    auto node = Make(Expr::Kind::kTest, line);
    if (Peek().IsName("not")) {
      Next();
      node->negated = true;
    }
    const Token& name = Peek();
    std::string test = ExpectIdentifier();
    if (!IsKnownTest(test)) Fail(name.line, "unsupported test '" + test + "'");
    node->name = std::move(test);
    node->a = std::move(operand);
    const Token& t = Peek();
    if (t.IsOp("(")) {
      ParseCallArgs(*node);
    } else if ((t.type == T::kName || t.type == T::kString || t.type == T::kInt || t.type == T::kFloat || t.IsOp("[") ||
                t.IsOp("{")) &&
               !t.IsName("else") && !t.IsName("or") && !t.IsName("and")) {
      if (t.IsName("is")) Fail(t.line, "you cannot chain multiple tests with 'is'");
      ExprPtr arg = ParsePrimary();
      node->items.push_back(ParsePostfix(std::move(arg)));
    }
    return node;
  }

  std::vector<Token> tokens_;
  size_t pos_ = 0;
  int depth_ = 0;
  int loop_depth_ = 0;
  int loop_reads_ = 0;  // how many times `loop` was read so far
  std::set<std::string> names_read_;
};

}  // namespace

std::unique_ptr<Program> Parse(std::string_view source) {
  Lexer lexer(source);
  Parser parser(lexer.Run());
  return parser.Run();
}

}  // namespace tollgate::local_backend::jinja
