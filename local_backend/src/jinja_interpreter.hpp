// Runs a parsed chat template (jinja_parser.hpp) with Python/Jinja2
// semantics: the globals Jinja2 and Hugging Face transformers provide
// (range, namespace, dict, raise_exception, strftime_now), the filters, tests
// and str/dict methods the chat templates of Llama 3.x, Qwen2.5/3 and
// DeepSeek V3/R1 use, and Jinja2's default `Undefined` (printing it gives "",
// iterating it gives nothing, using it in arithmetic or reading an attribute
// of it is an error).
//
// One Interpreter renders once; it is not thread-safe, but any number may
// run at the same time over one shared Program.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "jinja_ast.hpp"
#include "jinja_value.hpp"

namespace tollgate::local_backend::jinja {

// Whether `name` is a filter / test this interpreter implements (the parser
// refuses the others).
bool IsKnownFilter(std::string_view name);
bool IsKnownTest(std::string_view name);

struct RenderLimits {
  size_t max_output_bytes = 64u << 20;  // rendered text and any one string built on the way
  int64_t max_steps = 4'000'000;        // statements run + loop iterations + items built
  int max_call_depth = 64;              // nested macro calls
};

// Thrown by `raise_exception(message)`: the template refused its input.
class TemplateRaised : public TemplateError {
 public:
  using TemplateError::TemplateError;
};

class Interpreter {
 public:
  // `variables` become the template's globals (over the built-in ones).
  // `now` is what strftime_now formats, in the local time zone as Python's
  // datetime.now() does.
  Interpreter(const Program& program, const Dict& variables, std::chrono::system_clock::time_point now,
              const RenderLimits& limits);

  // Throws TemplateError (TemplateRaised for raise_exception).
  std::string Render();

  std::chrono::system_clock::time_point now() const { return now_; }
  // Counts work towards RenderLimits::max_steps.
  void Step(int64_t n = 1);
  void CheckSize(size_t bytes) const;
  // Calls a callable value (a macro or a native function).
  Value Call(const Value& callee, CallArgs& args);

 private:
  struct Scope {
    std::shared_ptr<Scope> parent;
    std::unordered_map<std::string, Value> vars;
  };
  using ScopePtr = std::shared_ptr<Scope>;
  enum class Flow { kNormal, kBreak, kContinue };

  Flow ExecBody(const Body& body, const ScopePtr& scope, std::string& out);
  Flow Exec(const Stmt& stmt, const ScopePtr& scope, std::string& out);
  void ExecFor(const Stmt& stmt, const ScopePtr& scope, std::string& out);
  void Assign(const Stmt& stmt, const ScopePtr& scope, Value value);
  Value DefineMacro(const Stmt& stmt, const ScopePtr& scope);

  Value Eval(const Expr& expr, const ScopePtr& scope);
  Value Lookup(const std::string& name, const ScopePtr& scope) const;
  Value EvalBinary(const Expr& expr, const ScopePtr& scope);
  bool EvalCompare(const std::string& op, const Value& left, const Value& right);
  void EvalArgs(const Expr& expr, const ScopePtr& scope, CallArgs& args);
  Value ApplyFilter(const std::string& name, const Value& operand, CallArgs& args);
  bool ApplyTest(const std::string& name, const Value& operand, CallArgs& args);

  const Program& program_;
  ScopePtr globals_;
  std::vector<ScopePtr> macro_scopes_;  // scopes macros were defined in (they hold them weakly)
  std::chrono::system_clock::time_point now_;
  RenderLimits limits_;
  int64_t steps_ = 0;
  int call_depth_ = 0;
};

// Jinja's environment.getattr / getitem: attribute (method) first for `.x`,
// item first for `[x]`; a miss gives Undefined; an Undefined operand throws.
Value GetAttr(const Value& object, std::string_view name);
Value GetItem(const Value& object, const Value& key);

}  // namespace tollgate::local_backend::jinja
