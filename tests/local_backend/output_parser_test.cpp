#include "tollgate/local_backend/output_parser.hpp"

#include <gtest/gtest.h>

#include <fstream>
#include <map>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "tollgate/core/text.hpp"

namespace tollgate::local_backend {
namespace {

// What a stream of events adds up to, plus checks every stream must pass.
struct Outcome {
  std::string text;
  std::vector<std::string> reasoning;  // by block index
  struct Call {
    std::string id;
    std::string name;
    std::string arguments;
  };
  std::vector<Call> calls;  // by call index
  FinishReason finish = FinishReason::kError;
  int finishes = 0;
  bool operator==(const Outcome& o) const {
    return text == o.text && reasoning == o.reasoning && finish == o.finish && finishes == o.finishes &&
           calls.size() == o.calls.size() &&
           std::equal(calls.begin(), calls.end(), o.calls.begin(), [](const Call& a, const Call& b) {
             return a.id == b.id && a.name == b.name && a.arguments == b.arguments;
           });
  }
};

Outcome Fold(const std::vector<StreamEvent>& events) {
  Outcome o;
  for (const auto& event : events) {
    if (const auto* t = std::get_if<TextDelta>(&event)) {
      EXPECT_FALSE(t->text.empty());
      EXPECT_EQ(ValidUtf8(t->text), t->text) << "split UTF-8 in a text event";
      o.text += t->text;
    } else if (const auto* r = std::get_if<ReasoningDelta>(&event)) {
      EXPECT_FALSE(r->text.empty());
      EXPECT_EQ(ValidUtf8(r->text), r->text) << "split UTF-8 in a reasoning event";
      EXPECT_EQ(r->kind, ReasoningPart::Kind::kText);
      EXPECT_LE(r->index, static_cast<int>(o.reasoning.size()));
      if (r->index == static_cast<int>(o.reasoning.size())) o.reasoning.emplace_back();
      o.reasoning[r->index] += r->text;
    } else if (const auto* c = std::get_if<ToolCallDelta>(&event)) {
      EXPECT_EQ(ValidUtf8(c->arguments), c->arguments) << "split UTF-8 in arguments";
      EXPECT_LE(c->index, static_cast<int>(o.calls.size()));
      if (c->index == static_cast<int>(o.calls.size())) {
        // The first fragment of a call names it.
        EXPECT_FALSE(c->id.empty());
        EXPECT_FALSE(c->name.empty());
        o.calls.push_back({c->id, c->name, ""});
      } else {
        EXPECT_TRUE(c->id.empty() && c->name.empty());
      }
      o.calls[c->index].arguments += c->arguments;
    } else if (const auto* f = std::get_if<FinishDelta>(&event)) {
      o.finish = f->reason;
      ++o.finishes;
    }
  }
  return o;
}

OutputParserOptions Options(bool reasoning, bool qwen, bool llama, std::vector<std::string> names = {}) {
  OutputParserOptions options;
  options.reasoning = reasoning;
  options.qwen_tool_calls = qwen;
  options.llama_tool_calls = llama;
  options.tool_names = std::move(names);
  return options;
}

// Parses `output` fed in pieces of `chunk` bytes (0: whole). Unless the
// options bring their own, call ids count up from call_0.
std::vector<StreamEvent> RunParser(OutputParserOptions options, std::string_view output, size_t chunk = 0,
                                   FinishReason reason = FinishReason::kStop, bool counted_ids = true) {
  if (counted_ids) {
    auto counter = std::make_shared<int>(0);
    options.new_tool_call_id = [counter] { return "call_" + std::to_string((*counter)++); };
  }
  OutputParser parser(options);
  std::vector<StreamEvent> events;
  if (chunk == 0) chunk = output.size() + 1;
  for (size_t i = 0; i < output.size(); i += chunk) parser.Push(output.substr(i, chunk), events);
  parser.Finish(FinishDelta{0, reason, "", ""}, events);
  return events;
}

// Folds `output` parsed whole, and checks that every way of cutting it into
// pieces gives the same result.
Outcome Parse(const OutputParserOptions& options, std::string_view output, FinishReason reason = FinishReason::kStop) {
  const Outcome whole = Fold(RunParser(options, output, 0, reason));
  for (size_t chunk : {1, 2, 3, 5, 8}) {
    EXPECT_TRUE(Fold(RunParser(options, output, chunk, reason)) == whole) << "chunk " << chunk << " of: " << output;
  }
  return whole;
}

TEST(OutputParser, PlainTextPassesThroughUntouched) {
  const std::string text = "Hello, <think>this is not parsed</think> 世界 😀\n";
  const Outcome o = Parse(Options(false, false, false), text);
  EXPECT_EQ(o.text, text);
  EXPECT_TRUE(o.reasoning.empty());
  EXPECT_EQ(o.finish, FinishReason::kStop);
  EXPECT_EQ(o.finishes, 1);
}

TEST(OutputParser, ThinkBlocksBecomeReasoningWithoutTheNewlinesAroundThem) {
  const Outcome o =
      Parse(Options(true, false, false), "<think>\nLet me think.\nTwo steps.\n</think>\n\nThe answer is 4.");
  ASSERT_EQ(o.reasoning.size(), 1u);
  EXPECT_EQ(o.reasoning[0], "Let me think.\nTwo steps.");
  EXPECT_EQ(o.text, "The answer is 4.");
  // An empty block (Qwen3 with thinking off writes none, but may) gives no reasoning.
  const Outcome empty = Parse(Options(true, false, false), "<think>\n\n</think>\n\nHi");
  EXPECT_TRUE(empty.reasoning.empty());
  EXPECT_EQ(empty.text, "Hi");
  // A second block gets the next index.
  const Outcome two = Parse(Options(true, false, false), "<think>a</think>x<think>b</think>y");
  EXPECT_EQ(two.reasoning, (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(two.text, "xy");
}

TEST(OutputParser, StartsInsideReasoningWhenThePromptOpenedIt) {
  OutputParserOptions options = Options(true, false, false);
  options.starts_in_reasoning = true;
  const Outcome o = Parse(options, "Okay, so 2 plus 2.\n</think>\n\n**4**");
  EXPECT_EQ(o.reasoning, (std::vector<std::string>{"Okay, so 2 plus 2."}));
  EXPECT_EQ(o.text, "**4**");
  // Cut off before </think>: all of it is reasoning.
  const Outcome cut = Parse(options, "Still thinking about 中文", FinishReason::kLength);
  EXPECT_EQ(cut.reasoning, (std::vector<std::string>{"Still thinking about 中文"}));
  EXPECT_EQ(cut.text, "");
  EXPECT_EQ(cut.finish, FinishReason::kLength);
}

TEST(OutputParser, HoldsBackWhatMightBeATagUntilItIsDecided) {
  OutputParser parser(Options(true, true, false));
  std::vector<StreamEvent> events;
  parser.Push("Hello <thi", events);
  EXPECT_EQ(Fold(events).text, "Hello");
  parser.Push("s is text", events);
  EXPECT_EQ(Fold(events).text, "Hello <this is text");
  parser.Push(" <tool_", events);
  EXPECT_EQ(Fold(events).text, "Hello <this is text");
  parser.Finish(FinishDelta{}, events);
  EXPECT_EQ(Fold(events).text, "Hello <this is text <tool_");
}

TEST(OutputParser, NeverSplitsUtf8EvenWhenTheInputDoes) {
  const std::string text = "<think>思考 🤔</think>答え: 😀";
  OutputParser parser(Options(true, false, false));
  std::vector<StreamEvent> events;
  for (char c : text) parser.Push(std::string_view(&c, 1), events);
  parser.Finish(FinishDelta{}, events);
  const Outcome o = Fold(events);  // Fold checks every event
  EXPECT_EQ(o.reasoning, (std::vector<std::string>{"思考 🤔"}));
  EXPECT_EQ(o.text, "答え: 😀");
}

TEST(OutputParser, QwenToolCallsStreamNameThenArguments) {
  const std::string output =
      "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\", \"days\": [1, 2]}}\n</tool_call>";
  OutputParserOptions options = Options(false, true, false);
  options.new_tool_call_id = [] { return std::string("call_0"); };
  OutputParser parser(options);
  std::vector<StreamEvent> events;
  parser.Push(output.substr(0, 40), events);  // the name is complete, arguments not yet
  ASSERT_EQ(events.size(), 1u);
  const auto& header = std::get<ToolCallDelta>(events[0]);
  EXPECT_EQ(header.id, "call_0");
  EXPECT_EQ(header.name, "get_weather");
  EXPECT_EQ(header.arguments, "");
  parser.Push(output.substr(40, 20), events);
  EXPECT_GT(events.size(), 1u);  // arguments flow before the call is complete
  parser.Push(output.substr(60), events);
  parser.Finish(FinishDelta{0, FinishReason::kStop, "eos", ""}, events);
  const Outcome o = Fold(events);
  ASSERT_EQ(o.calls.size(), 1u);
  EXPECT_EQ(o.calls[0].arguments, R"({"city": "Paris", "days": [1, 2]})");
  EXPECT_EQ(o.text, "");
  EXPECT_EQ(o.finish, FinishReason::kToolCalls);
  EXPECT_EQ(parser.tool_calls(), 1);
  EXPECT_EQ(Parse(Options(false, true, false), output).calls[0].arguments, o.calls[0].arguments);
}

TEST(OutputParser, QwenTextThenSeveralCalls) {
  const Outcome o = Parse(Options(false, true, false),
                          "Let me check both.\n\n<tool_call>\n{\"name\": \"a\", \"arguments\": {\"x\": \"}{\\\"\"}}\n"
                          "</tool_call>\n<tool_call>\n{\"name\": \"b\", \"arguments\": {}}\n</tool_call>\n");
  EXPECT_EQ(o.text, "Let me check both.");
  ASSERT_EQ(o.calls.size(), 2u);
  EXPECT_EQ(o.calls[0].id, "call_0");
  EXPECT_EQ(o.calls[0].name, "a");
  EXPECT_EQ(o.calls[0].arguments, R"({"x": "}{\""})");
  EXPECT_EQ(o.calls[1].id, "call_1");
  EXPECT_EQ(o.calls[1].name, "b");
  EXPECT_EQ(o.calls[1].arguments, "{}");
  EXPECT_EQ(o.finish, FinishReason::kToolCalls);
}

TEST(OutputParser, QwenCallVariantsModelsProduce) {
  // Arguments before the name, arguments as a JSON string, no arguments at all.
  const Outcome o = Parse(Options(false, true, false),
                          "<tool_call>{\"arguments\": {\"q\": 1}, \"name\": \"first\"}</tool_call>"
                          "<tool_call>{\"name\": \"second\", \"arguments\": \"{\\\"q\\\": 2}\"}</tool_call>"
                          "<tool_call>{\"name\": \"third\"}</tool_call>");
  ASSERT_EQ(o.calls.size(), 3u);
  EXPECT_EQ(o.calls[0].name, "first");
  EXPECT_EQ(o.calls[0].arguments, R"({"q": 1})");
  EXPECT_EQ(o.calls[1].arguments, R"({"q": 2})");
  EXPECT_EQ(o.calls[2].arguments, "{}");
}

TEST(OutputParser, MalformedQwenCallComesBackAsText) {
  const Outcome o = Parse(Options(false, true, false), "Before <tool_call>not json</tool_call> after");
  EXPECT_TRUE(o.calls.empty());
  EXPECT_EQ(o.text, "Before <tool_call>not json</tool_call> after");
  EXPECT_EQ(o.finish, FinishReason::kStop);
  // Cut off before the name was complete: text again.
  const Outcome cut = Parse(Options(false, true, false), "<tool_call>\n{\"name\": \"get_we", FinishReason::kLength);
  EXPECT_TRUE(cut.calls.empty());
  EXPECT_EQ(cut.text, "<tool_call>\n{\"name\": \"get_we");
  EXPECT_EQ(cut.finish, FinishReason::kLength);
  // Broken after a complete name: a call; what follows up to </tool_call> is dropped.
  const Outcome late = Parse(Options(false, true, false), "<tool_call>{\"name\": \"f\", oops}</tool_call>ok");
  ASSERT_EQ(late.calls.size(), 1u);
  EXPECT_EQ(late.calls[0].arguments, "{}");
  EXPECT_EQ(late.text, "ok");
}

TEST(OutputParser, CallCutOffAfterItsNameStaysACall) {
  const Outcome o =
      Parse(Options(false, true, false), "<tool_call>{\"name\": \"f\", \"arguments\": {\"a\": ", FinishReason::kLength);
  ASSERT_EQ(o.calls.size(), 1u);
  EXPECT_EQ(o.calls[0].arguments, R"({"a": )");
  EXPECT_EQ(o.finish, FinishReason::kLength);  // length stays length
  const Outcome no_args = Parse(Options(false, true, false), "<tool_call>{\"name\": \"f\"", FinishReason::kStop);
  ASSERT_EQ(no_args.calls.size(), 1u);
  EXPECT_EQ(no_args.calls[0].arguments, "{}");
  EXPECT_EQ(no_args.finish, FinishReason::kToolCalls);
}

TEST(OutputParser, ReasoningThenAToolCall) {
  const Outcome o = Parse(Options(true, true, false),
                          "<think>\nI need the weather.\n</think>\n\n<tool_call>\n{\"name\": \"get_weather\", "
                          "\"arguments\": {\"city\": \"東京\"}}\n</tool_call>");
  EXPECT_EQ(o.reasoning, (std::vector<std::string>{"I need the weather."}));
  EXPECT_EQ(o.text, "");
  ASSERT_EQ(o.calls.size(), 1u);
  EXPECT_EQ(o.calls[0].arguments, R"({"city": "東京"})");
  // A <tool_call> inside reasoning is reasoning.
  const Outcome inside = Parse(Options(true, true, false), "<think>maybe <tool_call>?</think>no");
  EXPECT_EQ(inside.reasoning, (std::vector<std::string>{"maybe <tool_call>?"}));
  EXPECT_TRUE(inside.calls.empty());
}

TEST(OutputParser, LlamaJsonAnswerIsACall) {
  const OutputParserOptions options = Options(false, false, true, {"get_weather", "search"});
  const Outcome o = Parse(options, "{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Paris\"}}");
  ASSERT_EQ(o.calls.size(), 1u);
  EXPECT_EQ(o.calls[0].name, "get_weather");
  EXPECT_EQ(o.calls[0].arguments, R"({"city": "Paris"})");
  EXPECT_EQ(o.text, "");
  EXPECT_EQ(o.finish, FinishReason::kToolCalls);
  // With <|python_tag|>, leading whitespace, and several calls.
  const Outcome tagged = Parse(options,
                               " <|python_tag|>{\"name\": \"search\", \"parameters\": {\"q\": \"a\"}}; "
                               "{\"name\": \"get_weather\", \"parameters\": {}}");
  ASSERT_EQ(tagged.calls.size(), 2u);
  EXPECT_EQ(tagged.calls[0].name, "search");
  EXPECT_EQ(tagged.calls[1].arguments, "{}");
  EXPECT_EQ(tagged.text, "");
}

TEST(OutputParser, LlamaJsonThatIsNoCallStaysText) {
  const OutputParserOptions options = Options(false, false, true, {"get_weather"});
  const std::string person = "{\"name\": \"Ann\", \"parameters\": {}}";  // no such tool
  EXPECT_EQ(Parse(options, person).text, person);
  EXPECT_TRUE(Parse(options, person).calls.empty());
  const std::string data = "{\"answer\": 42}";
  EXPECT_EQ(Parse(options, data).text, data);
  const std::string prose = "Sure: {\"name\": \"get_weather\"} is the call you want.";
  EXPECT_EQ(Parse(options, prose).text, prose);
  EXPECT_EQ(Parse(options, prose).finish, FinishReason::kStop);
  const std::string broken = "{\"name\": get_weather}";
  EXPECT_EQ(Parse(options, broken).text, broken);
  // Broken after a complete name: a call without arguments, the rest dropped.
  const Outcome late = Parse(options, "{\"name\": \"get_weather\", oops, more text");
  ASSERT_EQ(late.calls.size(), 1u);
  EXPECT_EQ(late.calls[0].arguments, "{}");
  EXPECT_EQ(late.text, "");
  // A builtin-tool call (<|python_tag|>brave_search.call(...)) is not parsed: its text is kept.
  EXPECT_EQ(Parse(options, "<|python_tag|>brave_search.call(query=\"x\")").text, "brave_search.call(query=\"x\")");
}

TEST(OutputParser, RandomOutputsComeBackWhateverTheCuts) {
  // Outputs built from known parts (reasoning, text, Qwen calls) must fold
  // back into those parts, cut anywhere (Parse checks several cuttings).
  std::mt19937 rng(20240726);
  const std::vector<std::string> words = {"Hi",  "a < b", "x<y",   "東京", "😀", "{\"json\": 1}",
                                          "1/2", "<to",   "</thi", "tool"};
  auto pick = [&](const std::vector<std::string>& from) { return from[rng() % from.size()]; };
  for (int round = 0; round < 150; ++round) {
    Outcome expected;
    expected.finish = FinishReason::kStop;
    expected.finishes = 1;
    std::string output;
    if (rng() % 2) {
      std::string thought = pick(words) + " " + pick(words);
      output += "<think>\n" + thought + "\n</think>\n\n";
      expected.reasoning.push_back(thought);
    }
    const int pieces = 1 + static_cast<int>(rng() % 4);
    bool after_text = false;  // the output ends with text (and maybe a separator)
    std::string separator;    // whitespace after that text, not yet decided
    for (int p = 0; p < pieces; ++p) {
      if (rng() % 3 == 0) {
        const std::string name = "tool_" + std::to_string(rng() % 5);
        const std::string arguments = "{\"n\": [1, {\"d\": null}], \"s\": \"" + pick(words) + "\"}";
        if (arguments.find("\"}", 27) != arguments.size() - 2) continue;  // a word JSON would escape
        output += "<tool_call>\n{\"name\": \"" + name + "\", \"arguments\": " + arguments + "}\n</tool_call>\n";
        expected.calls.push_back({"call_" + std::to_string(expected.calls.size()), name, arguments});
        expected.finish = FinishReason::kToolCalls;
        after_text = false;  // whitespace before a call goes
        separator.clear();
      } else {
        const std::string text = pick(words) + " " + pick(words);
        if (after_text) expected.text += separator;  // whitespace between texts stays
        output += text;
        expected.text += text;
        separator = rng() % 2 ? "\n" : " ";
        output += separator;
        after_text = true;
      }
    }
    if (after_text) expected.text += separator;  // kept at the end of a text answer
    const Outcome got = Parse(Options(true, true, false), output);
    EXPECT_TRUE(got == expected) << "output: " << output << "\ngot text: " << got.text
                                 << "\nwant text: " << expected.text;
  }
}

TEST(OutputParser, DefaultIdsLookLikeProviderIds) {
  OutputParserOptions options;
  options.qwen_tool_calls = true;
  const Outcome o = Fold(
      RunParser(options, "<tool_call>{\"name\": \"f\", \"arguments\": {}}</tool_call>", 0, FinishReason::kStop, false));
  ASSERT_EQ(o.calls.size(), 1u);
  EXPECT_EQ(o.calls[0].id.size(), 5u + 24u);
  EXPECT_EQ(o.calls[0].id.rfind("call_", 0), 0u);
  EXPECT_EQ(o.calls[0].id.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", 5),
            std::string::npos);
}

TEST(OutputParser, FinishUsesTheChoiceAndKeepsTheEngineReason) {
  OutputParserOptions options;
  options.choice = 3;
  OutputParser parser(options);
  std::vector<StreamEvent> events;
  parser.Push("x", events);
  parser.Finish(FinishDelta{0, FinishReason::kStop, "stop", "###"}, events);
  ASSERT_EQ(events.size(), 2u);
  EXPECT_EQ(std::get<TextDelta>(events[0]).choice, 3);
  const auto& finish = std::get<FinishDelta>(events[1]);
  EXPECT_EQ(finish.choice, 3);
  EXPECT_EQ(finish.reason, FinishReason::kStop);
  EXPECT_EQ(finish.stop_sequence, "###");
}

std::string ReadTemplate(const std::string& name) {
  std::ifstream in(std::string(TOLLGATE_SOURCE_DIR) + "/tests/local_backend/chat_templates/" + name);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

TEST(OutputOptionsFor, FollowsTheTemplateAndWhereThePromptEnds) {
  const std::vector<ToolDefinition> tools = {ToolDefinition{.name = "get_weather"}};
  const auto r1 =
      OutputOptionsFor(ReadTemplate("deepseek-r1-distill.jinja"), "<｜User｜>Hi<｜Assistant｜><think>\n", tools);
  EXPECT_TRUE(r1.reasoning);
  EXPECT_TRUE(r1.starts_in_reasoning);
  EXPECT_FALSE(r1.qwen_tool_calls);
  EXPECT_FALSE(r1.llama_tool_calls);

  const std::string qwen3 = ReadTemplate("qwen3.jinja");
  const auto thinking = OutputOptionsFor(qwen3, "<|im_start|>assistant\n", tools, 2);
  EXPECT_TRUE(thinking.reasoning);
  EXPECT_FALSE(thinking.starts_in_reasoning);
  EXPECT_TRUE(thinking.qwen_tool_calls);
  EXPECT_EQ(thinking.tool_names, (std::vector<std::string>{"get_weather"}));
  EXPECT_EQ(thinking.choice, 2);
  const auto not_thinking = OutputOptionsFor(qwen3, "<|im_start|>assistant\n<think>\n\n</think>\n\n", tools);
  EXPECT_FALSE(not_thinking.starts_in_reasoning);
  EXPECT_FALSE(OutputOptionsFor(qwen3, "<|im_start|>assistant\n", {}).qwen_tool_calls);  // no tools offered

  const auto qwen25 = OutputOptionsFor(ReadTemplate("qwen2.5-instruct.jinja"), "", tools);
  EXPECT_FALSE(qwen25.reasoning);
  EXPECT_TRUE(qwen25.qwen_tool_calls);
  for (const char* llama : {"llama-3.1-instruct.jinja", "llama-3.2-instruct.jinja"}) {
    const auto options = OutputOptionsFor(ReadTemplate(llama), "", tools);
    EXPECT_TRUE(options.llama_tool_calls) << llama;
    EXPECT_FALSE(options.qwen_tool_calls) << llama;
    EXPECT_FALSE(options.reasoning) << llama;
  }
  EXPECT_TRUE(
      OutputOptionsFor(ReadTemplate("qwq-32b.jinja"), "<|im_start|>assistant\n<think>\n", tools).starts_in_reasoning);
}

TEST(PromptOpensReasoning, OnlyWhenTheLastThinkIsStillOpen) {
  EXPECT_TRUE(PromptOpensReasoning("<｜Assistant｜><think>\n"));
  EXPECT_TRUE(PromptOpensReasoning("x<think>"));
  EXPECT_FALSE(PromptOpensReasoning("<think>\n\n</think>\n\n"));
  EXPECT_FALSE(PromptOpensReasoning("<think>old</think> answer<|im_start|>assistant\n"));
  EXPECT_FALSE(PromptOpensReasoning("<think>partial"));
  EXPECT_FALSE(PromptOpensReasoning("no tags"));
}

}  // namespace
}  // namespace tollgate::local_backend
