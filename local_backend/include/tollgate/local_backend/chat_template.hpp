// Chat templates: a model's own `tokenizer.chat_template` (GGUF metadata, or
// `chat_template` in Hugging Face's tokenizer_config.json), rendered the way
// Hugging Face transformers' `apply_chat_template` renders it
// (transformers/utils/chat_template_utils.py: Jinja2 in an
// ImmutableSandboxedEnvironment with trim_blocks=True, lstrip_blocks=True,
// the loopcontrols extension, `raise_exception` and `strftime_now` globals,
// and a `tojson` filter calling json.dumps(ensure_ascii=False, indent,
// separators, sort_keys)).
//
// The engine implements the Jinja subset that the real templates of Qwen2.5,
// Qwen3 (thinking), Llama 3.x (3.1 tools, 3.2) and DeepSeek V3 / R1 distills
// need, with Python semantics:
//   statements  if/elif/else, for (loop.index/index0/revindex/first/last/
//               length/previtem/nextitem/cycle, tuple targets, `if` filter,
//               else), set (namespace attributes, tuples, block set), macro,
//               break/continue, raw, Hugging Face's generation tag;
//   expressions literals, lists, dicts, tuples, attribute/item access,
//               slices (messages[::-1]), calls with keyword arguments, `not
//               and or in`, comparisons, + - * / // % ** ~, `x if c else y`;
//   filters     abs attr capitalize count d default dictsort first float
//               indent int items join last length list lower map max min
//               reject rejectattr replace reverse round safe select
//               selectattr sort string sum title tojson trim unique upper;
//   tests       defined undefined none boolean true false integer float
//               number string mapping iterable sequence callable lower upper
//               odd even divisibleby eq equalto ne sameas in lt le gt ge;
//   str methods strip lstrip rstrip startswith endswith split rsplit
//               splitlines lower upper title capitalize replace find rfind
//               count join format (plain {} fields) isdigit isalpha isalnum
//               isspace islower isupper; dict methods items keys values get;
//               list methods count index;
//   globals     range namespace dict raise_exception strftime_now.
// Anything else fails: an unknown statement, filter or test when the template
// is parsed, an unknown method or global when it is called, each with an
// Error naming the construct and its line. Case mapping (lower/upper/title)
// is ASCII-only.
//
// Thread-safety: a ChatTemplate is immutable after Parse(); Render may be
// called from any number of threads at once.
#pragma once

#include <boost/json/array.hpp>
#include <boost/json/object.hpp>
#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "tollgate/core/chat.hpp"
#include "tollgate/core/error.hpp"

namespace tollgate::local_backend {

namespace jinja {
struct Program;
}

// What a template does with the parts of a conversation that Hugging Face
// leaves to the caller's conventions. Parse() finds out by rendering a probe
// conversation (a user turn, an assistant turn holding only a tool call, the
// tool's result), the way llama.cpp's minja detects template capabilities.
struct ChatTemplateCaps {
  // The template reads `tools` (the tool definitions reach the prompt).
  bool supports_tools = false;
  // The template reads `enable_thinking` (Qwen3).
  bool supports_enable_thinking = false;
  // The template renders the probe's tool call at all.
  bool renders_tool_calls = false;
  // An assistant turn with tool calls and no text gets content null (OpenAI's
  // convention; DeepSeek templates need it to reach their tool-call branch)
  // rather than "" (Qwen3 concatenates content and fails on null).
  bool null_content_with_tool_calls = true;
  // Tool-call arguments are a JSON object (Hugging Face's convention: Qwen and
  // Llama templates apply `tojson`) rather than the JSON text (DeepSeek's
  // templates concatenate them as strings).
  bool object_arguments = true;
};

struct ChatTemplateOptions {
  // Ends the prompt with the opening of an assistant turn.
  bool add_generation_prompt = true;
  // Qwen3's switch; nullopt leaves it undefined (the template's default).
  std::optional<bool> enable_thinking;
  // More template variables (vLLM's and OpenRouter's `chat_template_kwargs`,
  // Llama's `date_string`, `tools_in_user_message`). They cannot replace
  // messages, tools, add_generation_prompt, enable_thinking or the special
  // tokens.
  boost::json::object extra;
  // The time strftime_now formats (local time zone); nullopt: the system clock.
  std::optional<std::chrono::system_clock::time_point> now;
};

class ChatTemplate {
 public:
  // Parses `source` and probes its capabilities. `bos_token` and `eos_token`
  // are the texts of the model's special tokens, passed to the template as
  // bos_token / eos_token when non-empty (as transformers passes
  // special_tokens_map). Errors: kInvalidArgument "chat template: line N:
  // ..." for a syntax error or a construct outside the subset.
  static Result<ChatTemplate> Parse(std::string_view source, std::string bos_token = {}, std::string eos_token = {});

  // The prompt for a conversation (TemplateMessages / TemplateTools with
  // this template's caps). `tools` reach the template as `tools` (null when
  // empty, as transformers passes tools=None). Errors (kInvalidArgument):
  // "chat template: line N: ..." when rendering fails (an unsupported method,
  // a type error), "chat template rejected the conversation: ..." when the
  // template calls raise_exception.
  Result<std::string> Render(const std::vector<Message>& messages, const std::vector<ToolDefinition>& tools,
                             const ChatTemplateOptions& options) const;

  // Renders with `variables` as the template's globals, exactly as given
  // (messages and tools in Hugging Face's shape); bos_token and eos_token are
  // added unless `variables` has them. Errors as Render.
  Result<std::string> RenderVariables(const boost::json::object& variables,
                                      std::optional<std::chrono::system_clock::time_point> now = std::nullopt) const;

  const ChatTemplateCaps& caps() const { return caps_; }
  const std::string& bos_token() const { return bos_token_; }
  const std::string& eos_token() const { return eos_token_; }

 private:
  ChatTemplate() = default;

  std::shared_ptr<const jinja::Program> program_;
  std::string bos_token_;
  std::string eos_token_;
  ChatTemplateCaps caps_;
};

// How TemplateMessages shapes what templates disagree on (ChatTemplateCaps).
struct TemplateMessageOptions {
  bool null_content_with_tool_calls = true;
  bool object_arguments = true;
};

// Canonical messages in the shape Hugging Face templates read (OpenAI's chat
// messages as transformers receives them), one JSON object per turn:
//   {"role", "content": text, "reasoning_content"?, "tool_calls"?,
//    "tool_call_id"?, "name"?}
// role: RoleName, except developer → "system". content: the turn's text
// parts joined (images and opaque parts are left out); an assistant turn with
// tool calls and no text gets null or "" (options). reasoning_content: the
// text of the turn's reasoning blocks (kText and kSummary) joined, present only
// when non-empty. tool_calls (only when there are some, since Llama templates
// test `'tool_calls' in message`): [{"id", "type": "function", "function":
// {"name", "arguments"}}] with arguments parsed to an object (or kept as the
// JSON text when options say so or it is not JSON). Each ToolResultPart
// becomes its own {"role": "tool", "tool_call_id", "name"?, "content"} turn,
// wherever it was.
boost::json::array TemplateMessages(const std::vector<Message>& messages, const TemplateMessageOptions& options);

// Tool definitions as OpenAI's function tools, which transformers passes
// through: [{"type": "function", "function": {"name", "description"?,
// "parameters"?}}] (description when non-empty, parameters when not null).
boost::json::array TemplateTools(const std::vector<ToolDefinition>& tools);

}  // namespace tollgate::local_backend
