#include "tollgate/local_backend/output_parser.hpp"

#include <algorithm>
#include <boost/json/parse.hpp>
#include <optional>
#include <utility>

#include "tollgate/core/text.hpp"

namespace tollgate::local_backend {
namespace {

constexpr std::string_view kThinkOpen = "<think>";
constexpr std::string_view kThinkClose = "</think>";
constexpr std::string_view kCallOpen = "<tool_call>";
constexpr std::string_view kCallClose = "</tool_call>";
constexpr std::string_view kPythonTag = "<|python_tag|>";

bool IsWs(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

size_t FirstNonWs(std::string_view s) {
  size_t i = 0;
  while (i < s.size() && IsWs(s[i])) ++i;
  return i;
}

// Length of the longest suffix of `text` that is a proper prefix of `tag`.
size_t PartialTagSuffix(std::string_view text, std::string_view tag) {
  for (size_t n = std::min(text.size(), tag.size() - 1); n > 0; --n) {
    if (text.substr(text.size() - n) == tag.substr(0, n)) return n;
  }
  return 0;
}

std::optional<std::string> DecodeJsonString(std::string_view token) {
  boost::system::error_code ec;
  boost::json::value v = boost::json::parse(token, ec);
  if (ec || !v.is_string()) return std::nullopt;
  return std::string(v.get_string());
}

// Scans one JSON object incrementally (the text grows between calls) and
// records where each top-level member's value lies, so that a tool call's
// name can be read as soon as it is complete and its arguments forwarded as
// they arrive. Structure only: numbers and literals are not validated.
class ObjectScanner {
 public:
  enum class Status { kNeedMore, kDone, kMalformed };
  struct Member {
    std::string key;
    char kind = 'x';  // 's' string, 'o' object or array, 'x' other
    size_t start = 0;
    size_t end = 0;
    bool complete = false;
  };

  Status Scan(std::string_view b) {
    while (pos_ < b.size() && status_ == Status::kNeedMore) Step(b);
    return status_;
  }
  const std::vector<Member>& members() const { return members_; }
  const Member* Find(std::string_view key) const {
    for (const auto& m : members_) {
      if (m.key == key) return &m;
    }
    return nullptr;
  }
  size_t end() const { return pos_; }  // after the closing brace once kDone
  Status status() const { return status_; }

 private:
  enum class Phase { kStart, kKeyOrEnd, kKey, kColon, kValue, kValueBody, kComma };

  void Step(std::string_view b) {
    const char c = b[pos_];
    if (in_string_) {
      if (escape_) {
        escape_ = false;
      } else if (c == '\\') {
        escape_ = true;
      } else if (c == '"') {
        in_string_ = false;
        if (depth_ == 1 && phase_ == Phase::kKey) {
          const auto key = DecodeJsonString(b.substr(token_start_, pos_ + 1 - token_start_));
          if (!key) {
            status_ = Status::kMalformed;
            return;
          }
          members_.push_back(Member{*key});
          phase_ = Phase::kColon;
        } else if (depth_ == 1 && phase_ == Phase::kValueBody) {
          EndMember(pos_ + 1);
        }
      }
      ++pos_;
      return;
    }
    switch (phase_) {
      case Phase::kStart:
        if (IsWs(c)) break;
        if (c != '{') {
          status_ = Status::kMalformed;
          return;
        }
        depth_ = 1;
        phase_ = Phase::kKeyOrEnd;
        break;
      case Phase::kKeyOrEnd:
        if (IsWs(c)) break;
        if (c == '}') {
          depth_ = 0;
          ++pos_;
          status_ = Status::kDone;
          return;
        }
        if (c != '"') {
          status_ = Status::kMalformed;
          return;
        }
        in_string_ = true;
        token_start_ = pos_;
        phase_ = Phase::kKey;
        break;
      case Phase::kKey:
        break;  // unreachable: keys are strings
      case Phase::kColon:
        if (IsWs(c)) break;
        if (c != ':') {
          status_ = Status::kMalformed;
          return;
        }
        phase_ = Phase::kValue;
        break;
      case Phase::kValue:
        if (IsWs(c)) break;
        members_.back().start = pos_;
        phase_ = Phase::kValueBody;
        if (c == '"') {
          members_.back().kind = 's';
          in_string_ = true;
        } else if (c == '{' || c == '[') {
          members_.back().kind = 'o';
          ++depth_;
        } else if (c == '}' || c == ']' || c == ',' || c == ':') {
          status_ = Status::kMalformed;
          return;
        } else {
          members_.back().kind = 'x';
        }
        break;
      case Phase::kValueBody:
        if (members_.back().kind == 'x') {
          if (IsWs(c) || c == ',' || c == '}') {
            EndMember(pos_);
            return;  // the delimiter is read again in kComma
          }
          break;
        }
        if (c == '"') {
          in_string_ = true;
        } else if (c == '{' || c == '[') {
          ++depth_;
        } else if (c == '}' || c == ']') {
          if (--depth_ == 1) {
            EndMember(pos_ + 1);
            ++pos_;
            return;
          }
        }
        break;
      case Phase::kComma:
        if (IsWs(c)) break;
        if (c == ',') {
          phase_ = Phase::kKeyOrEnd;
          break;
        }
        if (c == '}') {
          depth_ = 0;
          ++pos_;
          status_ = Status::kDone;
          return;
        }
        status_ = Status::kMalformed;
        return;
    }
    ++pos_;
  }

  void EndMember(size_t end) {
    members_.back().end = end;
    members_.back().complete = true;
    phase_ = Phase::kComma;
  }

  size_t pos_ = 0;
  int depth_ = 0;
  bool in_string_ = false;
  bool escape_ = false;
  size_t token_start_ = 0;
  Phase phase_ = Phase::kStart;
  Status status_ = Status::kNeedMore;
  std::vector<Member> members_;
};

}  // namespace

struct OutputParser::State {
  enum class Mode { kText, kReasoning, kQwenCall, kQwenAfterCall, kLlamaCall, kDiscard };

  // One tool call being read.
  struct Call {
    std::string prefix;  // what opened it, given back if it turns out to be text
    std::string buf;     // its text after the opening tag
    ObjectScanner scanner;
    bool header_sent = false;
    size_t args_sent = 0;  // bytes of an object/array arguments value sent
    bool args_any = false;
    bool args_finished = false;
  };

  OutputParserOptions options;
  Utf8Stitcher stitcher;
  Mode mode = Mode::kText;
  std::string pending;  // text not yet looked at (or held back)
  std::vector<StreamEvent>* out = nullptr;

  // Text.
  std::string held_ws;           // trailing whitespace of the text sent so far
  bool drop_leading_ws = false;  // after </think> and after a call
  bool answer_started = false;   // non-whitespace answer text sent
  bool after_llama_call = false;

  // Reasoning.
  int reasoning_index = 0;
  bool reasoning_sent = false;     // the current block sent text
  bool reasoning_started = false;  // its leading newlines are behind us
  std::string reasoning_held_ws;

  // Tool calls.
  int call_index = 0;
  int calls_made = 0;
  Call call;

  bool AnyTags() const { return options.reasoning || options.qwen_tool_calls || options.llama_tool_calls; }

  void SendText(std::string text) {
    if (text.empty()) return;
    out->push_back(TextDelta{options.choice, std::move(text)});
  }

  // Answer text, with the whitespace rules of the file comment. `before_tag`:
  // a tag follows, so trailing whitespace goes; it is returned, for a call
  // that may turn out to be text after all.
  std::string EmitText(std::string_view seg, bool before_tag) {
    if (drop_leading_ws) {
      const size_t k = FirstNonWs(seg);
      if (k == seg.size()) return {};
      seg.remove_prefix(k);
      drop_leading_ws = false;
    }
    if (!AnyTags()) {
      if (!seg.empty()) answer_started = true;
      SendText(std::string(seg));
      return {};
    }
    size_t body_end = seg.size();
    while (body_end > 0 && IsWs(seg[body_end - 1])) --body_end;
    if (body_end > 0) {
      SendText(held_ws + std::string(seg.substr(0, body_end)));
      held_ws.clear();
      answer_started = true;
    }
    held_ws += seg.substr(body_end);
    if (!before_tag) return {};
    return std::exchange(held_ws, std::string());
  }

  void SendReasoning(std::string text) {
    if (text.empty()) return;
    ReasoningDelta delta;
    delta.choice = options.choice;
    delta.index = reasoning_index;
    delta.kind = ReasoningPart::Kind::kText;
    delta.text = std::move(text);
    out->push_back(std::move(delta));
    reasoning_sent = true;
  }

  void EmitReasoning(std::string_view seg, bool closing) {
    if (!reasoning_started) {
      const size_t k = FirstNonWs(seg);
      seg.remove_prefix(k);
      if (seg.empty()) return;
      reasoning_started = true;
    }
    size_t body_end = seg.size();
    while (body_end > 0 && IsWs(seg[body_end - 1])) --body_end;
    if (body_end > 0) {
      SendReasoning(reasoning_held_ws + std::string(seg.substr(0, body_end)));
      reasoning_held_ws.clear();
    }
    if (closing) {
      reasoning_held_ws.clear();
    } else {
      reasoning_held_ws += seg.substr(body_end);
    }
  }

  void StartReasoning() {
    mode = Mode::kReasoning;
    reasoning_started = false;
    reasoning_sent = false;
    reasoning_held_ws.clear();
  }

  void EndReasoning() {
    if (reasoning_sent) ++reasoning_index;
    reasoning_sent = false;
    mode = Mode::kText;
    drop_leading_ws = true;
    answer_started = false;
  }

  std::string NewId() {
    if (options.new_tool_call_id) return options.new_tool_call_id();
    return "call_" + RandomBase62(24);
  }

  void SendCall(std::string id, std::string name, std::string arguments) {
    ToolCallDelta delta;
    delta.choice = options.choice;
    delta.index = call_index;
    delta.id = std::move(id);
    delta.name = std::move(name);
    delta.arguments = std::move(arguments);
    out->push_back(std::move(delta));
  }

  void SendArguments(std::string fragment) {
    if (fragment.empty()) return;
    call.args_any = true;
    SendCall({}, {}, std::move(fragment));
  }

  // The call's name, once its string is complete.
  std::optional<std::string> CallName() const {
    const ObjectScanner::Member* m = call.scanner.Find("name");
    if (!m || !m->complete || m->kind != 's') return std::nullopt;
    return DecodeJsonString(std::string_view(call.buf).substr(m->start, m->end - m->start));
  }

  const ObjectScanner::Member* ArgumentsMember() const {
    const ObjectScanner::Member* m = call.scanner.Find("arguments");
    return m ? m : call.scanner.Find("parameters");
  }

  // Sends the header (once the name is known) and whatever arguments arrived.
  void ForwardCall() {
    if (!call.header_sent) {
      const auto name = CallName();
      if (!name) return;
      SendCall(NewId(), *name, "");
      call.header_sent = true;
    }
    const ObjectScanner::Member* m = ArgumentsMember();
    if (!m || call.args_finished) return;
    if (m->kind == 'o') {
      const size_t end = m->complete ? m->end : call.scanner.end();
      const size_t from = m->start + call.args_sent;
      if (end > from) {
        SendArguments(call.buf.substr(from, end - from));
        call.args_sent = end - m->start;
      }
      if (m->complete) call.args_finished = true;
    } else if (m->complete) {
      // A JSON string holding the arguments is decoded; anything else
      // (null) means none.
      std::string text;
      if (m->kind == 's') {
        text = DecodeJsonString(std::string_view(call.buf).substr(m->start, m->end - m->start)).value_or("");
      }
      SendArguments(text.empty() ? "{}" : text);
      call.args_finished = true;
    }
  }

  void FinishCall() {
    if (!call.args_any) SendArguments("{}");
    ++call_index;
    ++calls_made;
  }

  void StartCall(Mode call_mode, std::string prefix) {
    mode = call_mode;
    call = Call{};
    call.prefix = std::move(prefix);
  }

  // A would-be call that was not one: its text goes out as answer text.
  void CallAsText() {
    EmitText(call.prefix + call.buf, false);
    answer_started = true;
    after_llama_call = false;
    call = Call{};
    mode = Mode::kText;
  }

  // Whether a Llama-form object can still be (or is) a call.
  bool LlamaCallPlausible() const {
    static constexpr std::string_view kKeys[] = {"name", "parameters", "arguments", "type", "function"};
    for (const auto& m : call.scanner.members()) {
      if (std::find(std::begin(kKeys), std::end(kKeys), m.key) == std::end(kKeys)) return false;
    }
    if (const auto name = CallName()) {
      const auto& names = options.tool_names;
      return names.empty() || std::find(names.begin(), names.end(), *name) != names.end();
    }
    const ObjectScanner::Member* m = call.scanner.Find("name");
    return !(m && m->complete);  // a name that is not a string
  }

  // ---------------------------------------------------------------- modes

  bool ProcessText(bool final) {
    if (options.llama_tool_calls && (!answer_started || after_llama_call)) {
      size_t i = 0;
      while (i < pending.size() && (IsWs(pending[i]) || (after_llama_call && pending[i] == ';'))) ++i;
      if (i == pending.size()) {
        if (!final) return false;  // undecided
        if (after_llama_call) {
          pending.clear();
          return false;
        }
      } else if (pending[i] == '{') {
        std::string prefix = after_llama_call ? std::string() : pending.substr(0, i);
        pending.erase(0, i);
        StartCall(Mode::kLlamaCall, std::move(prefix));
        return true;
      } else if (after_llama_call) {
        pending.erase(0, i);
        after_llama_call = false;
      }
    }
    struct Tag {
      std::string_view text;
      bool enabled;
    };
    const Tag tags[] = {
        {kThinkOpen, options.reasoning}, {kCallOpen, options.qwen_tool_calls}, {kPythonTag, options.llama_tool_calls}};
    size_t best = std::string::npos;
    std::string_view best_tag;
    for (const Tag& tag : tags) {
      if (!tag.enabled) continue;
      const size_t at = pending.find(tag.text);
      if (at < best) {
        best = at;
        best_tag = tag.text;
      }
    }
    if (best != std::string::npos) {
      std::string dropped = EmitText(std::string_view(pending).substr(0, best), true);
      pending.erase(0, best + best_tag.size());
      if (best_tag == kThinkOpen) {
        StartReasoning();
      } else if (best_tag == kCallOpen) {
        StartCall(Mode::kQwenCall, dropped + std::string(kCallOpen));
      } else {
        StartCall(Mode::kLlamaCall, std::move(dropped));
      }
      return true;
    }
    size_t hold = 0;
    if (!final) {
      for (const Tag& tag : tags) {
        if (tag.enabled) hold = std::max(hold, PartialTagSuffix(pending, tag.text));
      }
    }
    EmitText(std::string_view(pending).substr(0, pending.size() - hold), false);
    pending.erase(0, pending.size() - hold);
    return false;
  }

  bool ProcessReasoning(bool final) {
    const size_t close = pending.find(kThinkClose);
    if (close != std::string::npos) {
      EmitReasoning(std::string_view(pending).substr(0, close), true);
      pending.erase(0, close + kThinkClose.size());
      EndReasoning();
      return true;
    }
    const size_t hold = final ? 0 : PartialTagSuffix(pending, kThinkClose);
    EmitReasoning(std::string_view(pending).substr(0, pending.size() - hold), final);
    pending.erase(0, pending.size() - hold);
    return false;
  }

  bool ProcessQwenCall() {
    // Only the new text (and a tag cut by the previous piece) is searched.
    const size_t search_from = call.buf.size() >= kCallClose.size() ? call.buf.size() - kCallClose.size() + 1 : 0;
    call.buf += pending;
    pending.clear();
    const auto status = call.scanner.Scan(call.buf);
    const size_t close = call.buf.find(kCallClose, search_from);
    if (status == ObjectScanner::Status::kMalformed ||
        (status == ObjectScanner::Status::kNeedMore && close != std::string::npos)) {
      // What was read before the damage decides, however the text was cut:
      // a complete name makes it a call.
      ForwardCall();
      if (!call.header_sent) {
        CallAsText();
        return true;
      }
      FinishCall();
      pending = call.buf.substr(std::min(call.scanner.end(), call.buf.size()));
      mode = Mode::kQwenAfterCall;
      return true;
    }
    ForwardCall();
    if (status == ObjectScanner::Status::kDone) {
      if (!call.header_sent) {
        CallAsText();  // an object without a name
        return true;
      }
      FinishCall();
      pending = call.buf.substr(call.scanner.end());
      mode = Mode::kQwenAfterCall;
      return true;
    }
    return false;
  }

  bool ProcessQwenAfterCall() {
    // Whatever stands between the object and </tool_call> is dropped; a new
    // <tool_call> without the close also ends it.
    const size_t close = pending.find(kCallClose);
    const size_t reopen = pending.find(kCallOpen);
    if (close != std::string::npos && (reopen == std::string::npos || close < reopen)) {
      pending.erase(0, close + kCallClose.size());
      mode = Mode::kText;
      drop_leading_ws = true;
      return true;
    }
    if (reopen != std::string::npos) {
      pending.erase(0, reopen);
      mode = Mode::kText;
      drop_leading_ws = true;
      return true;
    }
    const size_t hold = std::max(PartialTagSuffix(pending, kCallClose), PartialTagSuffix(pending, kCallOpen));
    pending.erase(0, pending.size() - hold);
    return false;
  }

  bool ProcessLlamaCall() {
    call.buf += pending;
    pending.clear();
    const auto status = call.scanner.Scan(call.buf);
    if (!call.header_sent && !LlamaCallPlausible()) {
      CallAsText();
      return true;
    }
    ForwardCall();
    if (status == ObjectScanner::Status::kMalformed) {
      if (!call.header_sent) {
        CallAsText();
        return true;
      }
      // A call whose JSON breaks after its name: the rest of the answer is
      // dropped, however the text was cut.
      FinishCall();
      call = Call{};
      mode = Mode::kDiscard;
      return true;
    }
    if (status == ObjectScanner::Status::kDone) {
      if (!call.header_sent) {
        CallAsText();
        return true;
      }
      FinishCall();
      pending = call.buf.substr(call.scanner.end());
      call = Call{};
      mode = Mode::kText;
      after_llama_call = true;
      drop_leading_ws = true;
      return true;
    }
    return false;
  }

  void Process(bool final) {
    bool again = true;
    while (again) {
      switch (mode) {
        case Mode::kText:
          again = ProcessText(final);
          break;
        case Mode::kReasoning:
          again = ProcessReasoning(final);
          break;
        case Mode::kQwenCall:
          again = ProcessQwenCall();
          break;
        case Mode::kQwenAfterCall:
          again = ProcessQwenAfterCall();
          break;
        case Mode::kLlamaCall:
          again = ProcessLlamaCall();
          break;
        case Mode::kDiscard:
          pending.clear();
          again = false;
          break;
      }
    }
  }
};

OutputParser::OutputParser(OutputParserOptions options) : state_(std::make_unique<State>()) {
  state_->options = std::move(options);
  if (state_->options.reasoning && state_->options.starts_in_reasoning) state_->StartReasoning();
}

OutputParser::~OutputParser() = default;
OutputParser::OutputParser(OutputParser&&) noexcept = default;
OutputParser& OutputParser::operator=(OutputParser&&) noexcept = default;

void OutputParser::Push(std::string_view text, std::vector<StreamEvent>& out) {
  State& s = *state_;
  s.out = &out;
  s.pending += s.stitcher.Push(text);
  s.Process(false);
  s.out = nullptr;
}

void OutputParser::Finish(FinishDelta finish, std::vector<StreamEvent>& out) {
  State& s = *state_;
  s.out = &out;
  s.pending += s.stitcher.Flush();
  s.Process(true);
  switch (s.mode) {
    case State::Mode::kText:
      if (!s.drop_leading_ws) s.SendText(std::move(s.held_ws));
      s.held_ws.clear();
      break;
    case State::Mode::kReasoning:
    case State::Mode::kQwenAfterCall:
    case State::Mode::kDiscard:
      break;
    case State::Mode::kQwenCall:
    case State::Mode::kLlamaCall:
      if (s.call.header_sent) {
        s.FinishCall();
      } else {
        s.EmitText(s.call.prefix + s.call.buf, false);
        s.SendText(std::move(s.held_ws));
        s.held_ws.clear();
      }
      break;
  }
  finish.choice = s.options.choice;
  if (s.calls_made > 0 && finish.reason == FinishReason::kStop) finish.reason = FinishReason::kToolCalls;
  out.push_back(std::move(finish));
  s.out = nullptr;
}

int OutputParser::tool_calls() const { return state_->calls_made; }

bool OutputParser::in_reasoning() const { return state_->mode == State::Mode::kReasoning; }

bool PromptOpensReasoning(std::string_view prompt) {
  const size_t open = prompt.rfind(kThinkOpen);
  if (open == std::string_view::npos) return false;
  const std::string_view rest = prompt.substr(open + kThinkOpen.size());
  return FirstNonWs(rest) == rest.size();
}

OutputParserOptions OutputOptionsFor(std::string_view template_source, std::string_view prompt,
                                     const std::vector<ToolDefinition>& tools, int choice) {
  OutputParserOptions options;
  options.choice = choice;
  options.reasoning = template_source.find("<think>") != std::string_view::npos ||
                      template_source.find("</think>") != std::string_view::npos;
  options.starts_in_reasoning = options.reasoning && PromptOpensReasoning(prompt);
  if (!tools.empty()) {
    options.qwen_tool_calls = template_source.find("<tool_call>") != std::string_view::npos;
    options.llama_tool_calls = template_source.find("ipython") != std::string_view::npos ||
                               template_source.find("<|python_tag|>") != std::string_view::npos;
    for (const auto& tool : tools) options.tool_names.push_back(tool.name);
  }
  return options;
}

}  // namespace tollgate::local_backend
