// Syntax tree of the Jinja subset (jinja_parser.cpp builds it,
// jinja_interpreter.cpp runs it). Immutable once parsed, so one Program is
// shared by all renderings of a template.
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "jinja_value.hpp"

namespace tollgate::local_backend::jinja {

struct Expr;
using ExprPtr = std::unique_ptr<Expr>;

struct Expr {
  enum class Kind {
    kLiteral,    // literal
    kName,       // name
    kList,       // items
    kTuple,      // items
    kDict,       // items: key, value, key, value, ...
    kGetAttr,    // a.name
    kGetItem,    // a[b]
    kSlice,      // a[b:c:d]; absent parts are null
    kCall,       // a(items, kwargs)
    kFilter,     // a | name(items, kwargs); a is null inside {% filter %} (unsupported)
    kTest,       // a is [not] name(items); negated
    kNot,        // not a
    kNeg,        // -a
    kPos,        // +a
    kBinary,     // a op b: + - * / // % ** ~
    kAnd,        // a and b
    kOr,         // a or b
    kCompare,    // a op b (== != < <= > >= in, not in); chains nest as kAnd-like rest
    kCondition,  // b if a else c (c may be null: undefined)
  };
  Kind kind;
  int line = 0;
  Value literal;
  std::string name;  // name, attribute, filter, test, operator
  std::vector<ExprPtr> items;
  std::vector<std::pair<std::string, ExprPtr>> kwargs;
  ExprPtr a, b, c, d;
  bool negated = false;
  // kCompare chains: a op b op2 c ... is kept as a list of (op, operand).
  std::vector<std::pair<std::string, ExprPtr>> chain;
};

struct Stmt;
using StmtPtr = std::unique_ptr<Stmt>;
using Body = std::vector<StmtPtr>;

struct Stmt {
  enum class Kind {
    kText,      // text
    kOutput,    // {{ expr }}
    kIf,        // branches (condition null = else)
    kFor,       // targets in iter [if filter]: body [else else_body]
    kSet,       // targets (or ns_attr) = expr
    kSetBlock,  // {% set name %}body{% endset %}
    kMacro,     // name(params = defaults): body
    kBreak,
    kContinue,
    kGeneration,  // Hugging Face's {% generation %}: renders body
  };
  Kind kind;
  int line = 0;
  std::string text;
  ExprPtr expr;
  std::vector<std::pair<ExprPtr, Body>> branches;
  std::vector<std::string> targets;
  std::string ns_attr;  // kSet on `targets[0].ns_attr`
  ExprPtr filter;
  Body body;
  Body else_body;
  std::string name;
  std::vector<std::string> params;
  std::vector<ExprPtr> defaults;  // one per param; null = required
  bool uses_loop = false;         // kFor: the body reads `loop` (else it is not built)
};

struct Program {
  Body body;
  // Every variable name the template reads ({{ tools }}, `tools is defined`),
  // for capability checks.
  std::vector<std::string> names_read;
};

}  // namespace tollgate::local_backend::jinja
