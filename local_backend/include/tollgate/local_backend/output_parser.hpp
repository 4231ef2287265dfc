// Turns the text a local model generates into canonical stream events
// (core/chat.hpp): answer text, reasoning blocks and tool calls, streamed as
// the text arrives.
//
// Conventions understood (each switched on by OutputParserOptions):
//   - Reasoning: `<think>...</think>` blocks (Qwen3, QwQ, DeepSeek-R1 and its
//     distills) become ReasoningDelta, one block index per block, without the
//     newlines next to the tags (the templates strip them when they render a
//     reasoning turn back: Qwen3 `reasoning_content.strip('\n')`,
//     `content.lstrip('\n')`). DeepSeek-R1 distill templates end the prompt
//     with "<think>\n", so their output starts inside a block
//     (`starts_in_reasoning`).
//   - Qwen / Hermes tool calls (Qwen2.5 and Qwen3 templates: "For each
//     function call, return a json object with function name and arguments
//     within <tool_call></tool_call> XML tags"):
//     `<tool_call>\n{"name": "f", "arguments": {...}}\n</tool_call>`, any
//     number, anywhere in the answer.
//   - Llama 3.1 / 3.2 JSON tool calls (Meta's model cards, "JSON based tool
//     calling"; the templates ask for `{"name": function name, "parameters":
//     dictionary of argument name and its value}`): an answer that is such an
//     object (several may follow each other, separated by whitespace or
//     ';'), with or without a leading `<|python_tag|>`.
// A call streams as ToolCallDelta: the first fragment carries the made-up id
// and the name as soon as the name is complete, later fragments the raw
// arguments JSON as it arrives ("arguments" or "parameters"; an arguments
// value that is a JSON string is decoded; none gives "{}"). Whitespace
// between calls and around tags is dropped. Everything else is TextDelta.
//
// Text that could still become a tag (a trailing "<thi", "<tool_") or a
// Llama call (an answer starting with "{") is held back until decided, and a
// call whose JSON turns out malformed before its name was sent comes back as
// the text it was. Input may split UTF-8 characters anywhere; every event
// carries complete UTF-8 (core/text.hpp Utf8Stitcher).
//
// Not thread-safe: one parser per generated choice.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "tollgate/core/chat.hpp"

namespace tollgate::local_backend {

struct OutputParserOptions {
  int choice = 0;  // the events' `choice`
  // Parse <think>...</think> blocks into reasoning.
  bool reasoning = false;
  // The prompt ended inside an open <think> block.
  bool starts_in_reasoning = false;
  // Parse Qwen's <tool_call> blocks.
  bool qwen_tool_calls = false;
  // Parse Llama 3.1's JSON tool calls.
  bool llama_tool_calls = false;
  // Names of the tools offered. When non-empty, a Llama-form JSON answer
  // naming no offered tool stays text (so a JSON answer with a "name" key is
  // not mistaken for a call).
  std::vector<std::string> tool_names;
  // Makes the id of each call; empty: "call_" + 24 random base62 characters
  // (what wire/common.hpp NewToolCallId makes for providers that give none).
  std::function<std::string()> new_tool_call_id;
};

// The options a model's template implies, for the prompt it rendered:
// reasoning when the template mentions <think>, starts_in_reasoning when the
// prompt ends inside an open <think> block (only whitespace after it), Qwen
// tool calls when it mentions <tool_call>, Llama JSON calls when it mentions
// the `ipython` role (Llama 3.1 / 3.2); tool-call parsing only when the
// request offers tools (their names go into tool_names).
OutputParserOptions OutputOptionsFor(std::string_view template_source, std::string_view prompt,
                                     const std::vector<ToolDefinition>& tools, int choice = 0);

// True when `prompt` ends inside an open <think> block.
bool PromptOpensReasoning(std::string_view prompt);

class OutputParser {
 public:
  explicit OutputParser(OutputParserOptions options);
  ~OutputParser();
  OutputParser(OutputParser&&) noexcept;
  OutputParser& operator=(OutputParser&&) noexcept;

  // Feeds the next piece of generated text and appends the events it
  // completes to `out`.
  void Push(std::string_view text, std::vector<StreamEvent>& out);

  // The generation ended: flushes what was held back (an unfinished call
  // whose name was sent gets its arguments closed with "{}" when none came,
  // else stays as it is; one whose name was not sent comes back as text),
  // then appends `finish` for this choice, with reason kToolCalls when calls
  // were made and the engine stopped normally (kStop).
  void Finish(FinishDelta finish, std::vector<StreamEvent>& out);

  // Tool calls started so far.
  int tool_calls() const;
  // Inside a <think> block after the text pushed so far.
  bool in_reasoning() const;

 private:
  struct State;
  std::unique_ptr<State> state_;
};

}  // namespace tollgate::local_backend
