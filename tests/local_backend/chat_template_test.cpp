#include "tollgate/local_backend/chat_template.hpp"

#include <gtest/gtest.h>

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <chrono>
#include <fstream>
#include <sstream>
#include <string>
#include <string_view>

// Expected texts below come from Python's Jinja2 3.1.6 set up as
// transformers' chat_template_utils.py sets it up (ImmutableSandboxedEnvironment,
// trim_blocks, lstrip_blocks, loopcontrols, its tojson / raise_exception /
// strftime_now), i.e. what apply_chat_template gives for the same input.

namespace tollgate::local_backend {
namespace {

// 2024-07-26 12:00:00 UTC: "26 Jul 2024" in every time zone within 11 hours of UTC.
const auto kNow = std::chrono::system_clock::time_point(std::chrono::seconds(1721995200));

std::string ReadTemplate(const std::string& name) {
  const std::string path = std::string(TOLLGATE_SOURCE_DIR) + "/tests/local_backend/chat_templates/" + name;
  std::ifstream in(path, std::ios::binary);
  EXPECT_TRUE(in) << "cannot read " << path;
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

ChatTemplate MustParse(std::string_view source, std::string bos = {}, std::string eos = {}) {
  auto parsed = ChatTemplate::Parse(source, std::move(bos), std::move(eos));
  if (!parsed) {
    ADD_FAILURE() << parsed.error().message;
    return *ChatTemplate::Parse("");
  }
  return *parsed;
}

// Renders `source` with the JSON object `variables`; errors come back as "ERROR: message".
std::string RenderSource(std::string_view source, std::string_view variables = "{}") {
  auto parsed = ChatTemplate::Parse(source);
  if (!parsed) return "ERROR: " + parsed.error().message;
  auto rendered = parsed->RenderVariables(boost::json::parse(variables).as_object(), kNow);
  if (!rendered) return "ERROR: " + rendered.error().message;
  return *rendered;
}

std::string ParseError(std::string_view source) {
  auto parsed = ChatTemplate::Parse(source);
  if (parsed) return "parsed";
  EXPECT_EQ(parsed.error().code, ErrorCode::kInvalidArgument);
  return parsed.error().message;
}

// ---------------------------------------------------------------- the Jinja subset

TEST(ChatTemplate, WhitespaceControlFollowsTrimAndLstripBlocks) {
  EXPECT_EQ(RenderSource(R"tmpl({# c #}
{% if true %}
    {% set x = 1 %}
    A{{ x }}
  {%- if true -%}
    B
  {%- endif %}

{%+ if true %}C{% endif +%}
D {{- ' E ' -}} F
{% endif %}
)tmpl",
                         R"json({})json"),
            "    A1B\n"
            "C\n"
            "D E F\n");
}

TEST(ChatTemplate, ForLoopsHaveLoopVariablesFiltersAndElse) {
  EXPECT_EQ(
      RenderSource(
          R"tmpl({% for m in items if m != 'skip' %}{{ loop.index }}/{{ loop.length }}:{{ m }}{% if loop.first %}<first>{% endif %}{% if loop.last %}<last>{% endif %}{% if not loop.last %},{% endif %}{% else %}empty{% endfor %}|{% for x in [] %}x{% else %}none{% endfor %}|{% for k, v in {'a': 1, 'b': 2}.items() %}{{ k }}{{ v }}{{ loop.revindex0 }}{% endfor %})tmpl",
          R"json({"items": ["a", "skip", "b", "c"]})json"),
      "1/3:a<first>,2/3:b,3/3:c<last>|none|a11b20");
}

TEST(ChatTemplate, SetInsideALoopStaysThereButNamespacesCarryOut) {
  EXPECT_EQ(
      RenderSource(
          R"tmpl({% set n = 0 %}{% set ns = namespace(n=0, last='') %}{% for i in range(4) %}{% set n = n + 1 %}{% set ns.n = ns.n + i %}{% set ns.last = i | string %}{% endfor %}{{ n }} {{ ns.n }} {{ ns.last }})tmpl",
          R"json({})json"),
      "0 6 3");
}

TEST(ChatTemplate, SlicesAndIndexesWorkLikePython) {
  EXPECT_EQ(
      RenderSource(
          R"tmpl({{ (messages[::-1] | map(attribute='role') | join(',')) }} {{ messages[1:] | length }} {{ messages[-1].content }} {{ 'héllo😀'[::-1] }} {{ 'héllo'[1:3] }} {{ [1, 2, 3, 4, 5][1:-1:2] }} {{ messages[9] is defined }})tmpl",
          R"json({"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}, {"role": "assistant", "content": "a"}]})json"),
      "assistant,user,system 2 a 😀olléh él [2, 4] False");
}

TEST(ChatTemplate, StringMethodsWorkLikePython) {
  EXPECT_EQ(
      RenderSource(
          R"tmpl({{ '\n\nThought\n'.strip('\n') }}|{{ 'xyxhixy'.lstrip('xy') }}|{{ 'a</think>b</think>c'.split('</think>')[-1] }}|{{ 'a b  c'.split() }}|{{ 'k=v=w'.split('=', 1) }}|{{ '<tool_response>x</tool_response>'.startswith(('<tool_response>', 'y')) }}|{{ 'aaa'.replace('a', 'b', 2) }}|{{ 'Hi'.upper() }}{{ 'Hi'.lower() }}|{{ '  x ' | trim }}|{{ 'x,y' | replace(',', ';') }}|{{ 'abc'.endswith('bc') }}|{{ '{}-{}'.format('a', 1) }}|{{ ', '.join(['a', 'b']) }})tmpl",
          R"json({})json"),
      "Thought|hixy|c|['a', 'b', 'c']|['k', 'v=w']|True|bba|HIhi|x|x;y|True|a-1|a, b");
}

TEST(ChatTemplate, TojsonMatchesPythonJsonDumps) {
  EXPECT_EQ(
      RenderSource(
          R"tmpl({{ v | tojson }}
{{ v | tojson(indent=4) }}
{{ v | tojson(separators=(',', ':'), sort_keys=true) }}
{{ 'é😀' | tojson(ensure_ascii=true) }}
{{ [] | tojson(indent=2) }}{{ {} | tojson(indent=2) }})tmpl",
          R"json({"v": {"s": "é \"q\" \\ \n\t\u0001 ☃", "n": [1, -2, 0.5, 1.0, 1e-07, 3e+20, true, false, null], "o": {"z": {}, "a": []}}})json"),
      "{\"s\": \"é \\\"q\\\" \\\\ \\n\\t\\u0001 ☃\", \"n\": [1, -2, 0.5, 1.0, 1e-07, 3e+20, true, false, null], \"o\": "
      "{\"z\": {}, \"a\": []}}\n"
      "{\n"
      "    \"s\": \"é \\\"q\\\" \\\\ \\n\\t\\u0001 ☃\",\n"
      "    \"n\": [\n"
      "        1,\n"
      "        -2,\n"
      "        0.5,\n"
      "        1.0,\n"
      "        1e-07,\n"
      "        3e+20,\n"
      "        true,\n"
      "        false,\n"
      "        null\n"
      "    ],\n"
      "    \"o\": {\n"
      "        \"z\": {},\n"
      "        \"a\": []\n"
      "    }\n"
      "}\n"
      "{\"n\":[1,-2,0.5,1.0,1e-07,3e+20,true,false,null],\"o\":{\"a\":[],\"z\":{}},\"s\":\"é \\\"q\\\" \\\\ "
      "\\n\\t\\u0001 ☃\"}\n"
      "\"\\u00e9\\ud83d\\ude00\"\n"
      "[]{}");
}

TEST(ChatTemplate, TestsAndOperatorsWorkLikePython) {
  EXPECT_EQ(
      RenderSource(
          R"tmpl({{ x is defined }} {{ y is defined }} {{ none is none }} {{ 's' is string }} {{ {} is mapping }} {{ [] is iterable }} {{ 's' is iterable }} {{ 3 is odd }} {{ 4 is even }} {{ 3 is equalto 3 }} {{ 'a' in 'cat' }} {{ 'k' in {'k': 1} }} {{ 2 not in [1] }} {{ 'a' ~ 1 ~ none }} {{ 7 // 2 }} {{ -7 // 2 }} {{ 7 % -3 }} {{ 2 ** 8 }} {{ 7 / 2 }} {{ 'y' if x else 'n' }} {{ x and 'a' or 'b' }} {{ [] or 'empty' }} {{ 1 < 2 <= 2 }} {{ 'b' > 'a' }} {{ 1 == 1.0 == true }})tmpl",
          R"json({"x": 1})json"),
      "True False True True True True True True True True True True True a1None 3 -4 -2 256 3.5 y a empty True True "
      "True");
}

TEST(ChatTemplate, PrintsValuesAsPythonDoes) {
  EXPECT_EQ(
      RenderSource(
          R"tmpl({{ none }}|{{ true }}|{{ 1.0 }}|{{ 0.1 + 0.2 }}|{{ 1e16 }}|{{ [1, 'a', none, {'k': "it's"}] }}|{{ undefined_name }}|{{ -0.0 }})tmpl",
          R"json({})json"),
      "None|True|1.0|0.30000000000000004|1e+16|[1, 'a', None, {'k': \"it's\"}]||-0.0");
}

TEST(ChatTemplate, MacrosAndBlockSetRender) {
  EXPECT_EQ(
      RenderSource(
          R"tmpl({% macro tag(name, body='') -%}<{{ name }}>{{ body }}</{{ name }}>{%- endmacro %}{{ tag('b', 'x') }}{{ tag(name='i') }}{% set captured %}[{{ tag('u', body=1) }}]{% endset %}{{ captured | length }}{{ captured }})tmpl",
          R"json({})json"),
      "<b>x</b><i></i>10[<u>1</u>]");
}

TEST(ChatTemplate, FiltersWorkLikeJinja) {
  EXPECT_EQ(
      RenderSource(
          R"tmpl({{ [3, 1, 2] | sort | list }} {{ ['b', 'A', 'c'] | sort }} {{ [1, 2, 3, 4] | select('even') | list }} {{ ['a', 'code_interpreter'] | reject('equalto', 'code_interpreter') | join(', ') }} {{ users | selectattr('admin') | map(attribute='name') | join('/') }} {{ users | rejectattr('admin') | map(attribute='name') | first }} {{ {'b': 2, 'a': 1} | dictsort }} {{ [1, 1, 2] | unique | list }} {{ [1, 2, 3] | sum }} {{ [4, 9] | max }} {{ 'x' | default('d') }}{{ nothing | default('d') }} {{ 3.14159 | round(2) }} {{ '42' | int + 1 }} {{ 'a\nb\n\nc' | indent(2) }} {{ 'hello world' | title }} {{ {'a': 1} | items | list }} {{ 'abc' | list }} {{ [1, 2] | reverse | list }} {{ [[1, 2]] | first | last }})tmpl",
          R"json({"users": [{"name": "ann", "admin": true}, {"name": "bob", "admin": false}]})json"),
      "[1, 2, 3] ['A', 'b', 'c'] [2, 4] a ann bob [('a', 1), ('b', 2)] [1, 2] 6 9 xd 3.14 43 a\n"
      "  b\n"
      "\n"
      "  c Hello World [('a', 1)] ['a', 'b', 'c'] [2, 1] 2");
}

TEST(ChatTemplate, BreakContinueAndLoopNeighbours) {
  EXPECT_EQ(
      RenderSource(
          R"tmpl({% for i in range(10) %}{% if i is even %}{% continue %}{% endif %}{% if i > 6 %}{% break %}{% endif %}{{ i }}{% endfor %}|{% for i in [1, 2, 3] %}{{ loop.previtem }}-{{ loop.nextitem }}{{ loop.cycle('a', 'b') }};{% endfor %})tmpl",
          R"json({})json"),
      "135|-2a;1-3b;2-a;");
}

TEST(ChatTemplate, UndefinedFollowsJinjasDefault) {
  EXPECT_EQ(RenderSource("[{{ missing }}]{% for x in missing %}x{% endfor %}{{ missing | length }}"
                         "{{ missing is defined }}{{ 'a' in missing }}{{ missing | default('d') }}"),
            "[]0FalseFalsed");
  EXPECT_EQ(RenderSource("{{ missing.attribute }}"), "ERROR: chat template: line 1: 'missing' is undefined");
  EXPECT_EQ(RenderSource("{{ missing + 1 }}"), "ERROR: chat template: line 1: 'missing' is undefined");
  // A missing key is undefined, not an error, until it is used.
  EXPECT_EQ(RenderSource("{{ m.nope is defined }}{{ m['nope'] | default('x') }}", R"({"m": {"a": 1}})"), "Falsex");
}

TEST(ChatTemplate, RawBlocksAndCommentsAreNotRendered) {
  EXPECT_EQ(RenderSource("{% raw %}{{ not rendered }}{% endraw %}|{# gone #}|{#- trims -#}  x"),
            "{{ not rendered }}||x");
}

TEST(ChatTemplate, UnsupportedConstructsFailNamingThem) {
  EXPECT_EQ(ParseError("a\n{% include 'other.jinja' %}"),
            "chat template: line 2: unsupported statement '{% include %}'");
  EXPECT_EQ(ParseError("{% extends 'base' %}"), "chat template: line 1: unsupported statement '{% extends %}'");
  EXPECT_EQ(ParseError("{% call m() %}x{% endcall %}"), "chat template: line 1: unsupported statement '{% call %}'");
  EXPECT_EQ(ParseError("{{ text | wordwrap(10) }}"), "chat template: line 1: unsupported filter 'wordwrap'");
  EXPECT_EQ(ParseError("{% if x is prime %}{% endif %}"), "chat template: line 1: unsupported test 'prime'");
  EXPECT_EQ(ParseError("{{ f(*args) }}"), "chat template: line 1: unsupported: *args / **kwargs in calls");
  // Methods and globals are only known when called.
  EXPECT_EQ(RenderSource("\n\n{{ 'x'.zfill(3) }}"),
            "ERROR: chat template: line 3: unsupported method: 'str object' has no attribute 'zfill'");
  EXPECT_EQ(RenderSource("{{ lipsum(2) }}"), "ERROR: chat template: line 1: 'lipsum' is undefined");
}

TEST(ChatTemplate, SyntaxErrorsNameTheLine) {
  EXPECT_EQ(ParseError("ok\n{% if x %}never closed"), "chat template: line 2: missing '{% endif %}'");
  EXPECT_EQ(ParseError("{% endfor %}"), "chat template: line 1: unexpected '{% endfor %}'");
  EXPECT_EQ(ParseError("{{ 'unterminated }}"), "chat template: line 1: unterminated string literal");
  EXPECT_EQ(ParseError("\n\n{{ a + }}"), "chat template: line 3: unexpected '}}'");
  EXPECT_EQ(ParseError("{{ a b }}"), "chat template: line 1: expected '}}', got 'b'");
  EXPECT_EQ(ParseError("{% break %}"), "chat template: line 1: 'break' outside a for loop");
}

TEST(ChatTemplate, RaiseExceptionRejectsTheConversation) {
  auto t = MustParse("{% if messages | length == 0 %}{{ raise_exception('Need at least one message!') }}{% endif %}ok");
  auto rendered = t.RenderVariables(boost::json::object{{"messages", boost::json::array{}}});
  ASSERT_FALSE(rendered);
  EXPECT_EQ(rendered.error().code, ErrorCode::kInvalidArgument);
  EXPECT_EQ(rendered.error().message, "chat template rejected the conversation: Need at least one message!");
}

TEST(ChatTemplate, StrftimeNowFormatsTheInjectedTime) {
  EXPECT_EQ(RenderSource("{{ strftime_now('%d %b %Y') }}"), "26 Jul 2024");
}

TEST(ChatTemplate, LimitsStopRunawayTemplates) {
  EXPECT_EQ(RenderSource("{% for i in range(100000000) %}{% endfor %}"),
            "ERROR: chat template: line 1: template rendering exceeded 4000000 steps");
  EXPECT_EQ(RenderSource("{% for i in range(3000) %}{% for j in range(3000) %}{% endfor %}{% endfor %}"),
            "ERROR: chat template: line 1: template rendering exceeded 4000000 steps");
  EXPECT_EQ(RenderSource("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}"),
            "ERROR: chat template: line 1: macro calls nest deeper than 64");
  EXPECT_EQ(ParseError("{{ " + std::string(1000, '(') + "1" + std::string(1000, ')') + " }}"),
            "chat template: line 1: template nests too deeply");
  std::string nested_ifs;
  for (int i = 0; i < 1000; ++i) nested_ifs += "{% if x %}";
  EXPECT_EQ(ParseError(nested_ifs), "chat template: line 1: template nests too deeply");
  EXPECT_EQ(RenderSource("{% set s = 'x' * 100000000 %}"),
            "ERROR: chat template: line 1: template output exceeds 67108864 bytes");
}

// ---------------------------------------------------------------- real templates

std::vector<Message> WeatherConversation() {
  std::vector<Message> messages;
  messages.push_back({Role::kSystem, {TextPart{"You are a weather bot.", {}}}, ""});
  messages.push_back({Role::kUser, {TextPart{"What's the weather in Paris?", {}}}, ""});
  ReasoningPart reasoning;
  reasoning.text = "The user wants weather.";
  messages.push_back(
      {Role::kAssistant, {reasoning, ToolCallPart{"call_1", "get_weather", R"({"city": "Paris"})", "", {}}}, ""});
  ToolResultPart result;
  result.tool_call_id = "call_1";
  result.content.push_back(TextPart{"18°C, sunny", {}});
  messages.push_back({Role::kTool, {result}, ""});
  messages.push_back({Role::kAssistant, {TextPart{"It is 18°C and sunny in Paris.", {}}}, ""});
  messages.push_back({Role::kUser, {TextPart{"Thanks!", {}}}, ""});
  return messages;
}

std::vector<ToolDefinition> WeatherTools() {
  ToolDefinition tool;
  tool.name = "get_weather";
  tool.description = "Get the current weather";
  tool.parameters =
      boost::json::parse(R"({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]})");
  return {tool};
}

// qwen3.jinja, rendered by Python Jinja2 3.1.6 as transformers configures it.
constexpr std::string_view kQwen3Golden =
    "<|im_start|>system\n"
    "You are a weather bot.\n"
    "\n"
    "# Tools\n"
    "\n"
    "You may call one or more functions to assist with the user query.\n"
    "\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n"
    "<tools>\n"
    "{\"type\": \"function\", \"function\": {\"name\": \"get_weather\", \"description\": \"Get the current weather\", "
    "\"parameters\": {\"type\": \"object\", \"properties\": {\"city\": {\"type\": \"string\"}}, \"required\": "
    "[\"city\"]}}}\n"
    "</tools>\n"
    "\n"
    "For each function call, return a json object with function name and arguments within <tool_call></tool_call> XML "
    "tags:\n"
    "<tool_call>\n"
    "{\"name\": <function-name>, \"arguments\": <args-json-object>}\n"
    "</tool_call><|im_end|>\n"
    "<|im_start|>user\n"
    "What's the weather in Paris?<|im_end|>\n"
    "<|im_start|>assistant\n"
    "<tool_call>\n"
    "{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n"
    "</tool_call><|im_end|>\n"
    "<|im_start|>user\n"
    "<tool_response>\n"
    "18°C, sunny\n"
    "</tool_response><|im_end|>\n"
    "<|im_start|>assistant\n"
    "It is 18°C and sunny in Paris.<|im_end|>\n"
    "<|im_start|>user\n"
    "Thanks!<|im_end|>\n"
    "<|im_start|>assistant\n"
    "<think>\n"
    "\n"
    "</think>\n"
    "\n";

// llama-3.1-instruct.jinja, rendered by Python Jinja2 3.1.6 as transformers configures it.
constexpr std::string_view kLlama31Golden =
    "<BOS><|start_header_id|>system<|end_header_id|>\n"
    "\n"
    "Environment: ipython\n"
    "Cutting Knowledge Date: December 2023\n"
    "Today Date: 26 Jul 2024\n"
    "\n"
    "You are a weather bot.<|eot_id|><|start_header_id|>user<|end_header_id|>\n"
    "\n"
    "Given the following functions, please respond with a JSON for a function call with its proper arguments that best "
    "answers the given prompt.\n"
    "\n"
    "Respond in the format {\"name\": function name, \"parameters\": dictionary of argument name and its value}.Do not "
    "use variables.\n"
    "\n"
    "{\n"
    "    \"type\": \"function\",\n"
    "    \"function\": {\n"
    "        \"name\": \"get_weather\",\n"
    "        \"description\": \"Get the current weather\",\n"
    "        \"parameters\": {\n"
    "            \"type\": \"object\",\n"
    "            \"properties\": {\n"
    "                \"city\": {\n"
    "                    \"type\": \"string\"\n"
    "                }\n"
    "            },\n"
    "            \"required\": [\n"
    "                \"city\"\n"
    "            ]\n"
    "        }\n"
    "    }\n"
    "}\n"
    "\n"
    "What's the weather in Paris?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n"
    "\n"
    "{\"name\": \"get_weather\", \"parameters\": {\"city\": "
    "\"Paris\"}}<|eot_id|><|start_header_id|>ipython<|end_header_id|>\n"
    "\n"
    "\"18°C, sunny\"<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n"
    "\n"
    "It is 18°C and sunny in Paris.<|eot_id|><|start_header_id|>user<|end_header_id|>\n"
    "\n"
    "Thanks!<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n"
    "\n";

// deepseek-r1-distill.jinja, rendered by Python Jinja2 3.1.6 as transformers configures it.
constexpr std::string_view kDeepSeekR1Golden =
    "<BOS>You are a weather bot.<｜User｜>What's the weather in "
    "Paris?<｜Assistant｜><｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather\n"
    "```json\n"
    "{\"city\": \"Paris\"}\n"
    "```<｜tool▁call▁end｜><｜tool▁outputs▁begin｜><｜tool▁output▁begin｜>18°C, "
    "sunny<｜tool▁output▁end｜><｜tool▁outputs▁end｜>It is 18°C and sunny in "
    "Paris.<｜end▁of▁sentence｜><｜User｜>Thanks!<｜Assistant｜><think>\n";

std::string RenderWeather(const std::string& file, std::optional<bool> enable_thinking = std::nullopt) {
  ChatTemplate t = MustParse(ReadTemplate(file), "<BOS>", "<EOS>");
  ChatTemplateOptions options;
  options.enable_thinking = enable_thinking;
  options.now = kNow;
  auto rendered = t.Render(WeatherConversation(), WeatherTools(), options);
  if (!rendered) return "ERROR: " + rendered.error().message;
  return *rendered;
}

TEST(ChatTemplate, Qwen3RendersToolsCallsResultsAndTheThinkingSwitch) {
  EXPECT_EQ(RenderWeather("qwen3.jinja", false), kQwen3Golden);
}

TEST(ChatTemplate, Llama31PutsToolsInTheFirstUserMessage) {
  EXPECT_EQ(RenderWeather("llama-3.1-instruct.jinja"), kLlama31Golden);
}

TEST(ChatTemplate, DeepSeekR1GetsNullContentAndStringArgumentsAndOpensThinking) {
  EXPECT_EQ(RenderWeather("deepseek-r1-distill.jinja"), kDeepSeekR1Golden);
}

TEST(ChatTemplate, EveryRealTemplateRendersTheWeatherConversation) {
  for (const char* file : {"qwen2.5-instruct.jinja", "qwq-32b.jinja", "llama-3.2-instruct.jinja", "deepseek-v3.jinja",
                           "llama-3-instruct.jinja"}) {
    const std::string out = RenderWeather(file);
    EXPECT_EQ(out.rfind("ERROR", 0), std::string::npos) << file << ": " << out;
    EXPECT_NE(out.find("It is 18°C and sunny in Paris."), std::string::npos) << file;
  }
  EXPECT_NE(RenderWeather("qwen2.5-instruct.jinja")
                .find("<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>"),
            std::string::npos);
  EXPECT_NE(RenderWeather("llama-3.2-instruct.jinja").find("Today Date: 26 Jul 2024\n"), std::string::npos);
  EXPECT_NE(RenderWeather("deepseek-v3.jinja").find("get_weather\n```json\n{\"city\": \"Paris\"}\n```"),
            std::string::npos);
}

TEST(ChatTemplate, Qwen3RendersReasoningOfTheTurnAfterTheLastQuery) {
  ChatTemplate t = MustParse(ReadTemplate("qwen3.jinja"));
  ReasoningPart reasoning;
  reasoning.text = "Add them.";
  std::vector<Message> messages = {{Role::kUser, {TextPart{"What is 2+2?", {}}}, ""},
                                   {Role::kAssistant, {reasoning, TextPart{"4", {}}}, ""}};
  ChatTemplateOptions options;
  options.add_generation_prompt = false;
  EXPECT_EQ(
      *t.Render(messages, {}, options),
      "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n<think>\nAdd them.\n</think>\n\n4<|im_end|>\n");
  // Earlier turns lose their reasoning, as the template wants.
  messages.push_back({Role::kUser, {TextPart{"Bye", {}}}, ""});
  options.add_generation_prompt = true;
  EXPECT_EQ(
      *t.Render(messages, {}, options),
      "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n4<|im_end|>\n<|im_start|>user\nBye<|im_end|>\n"
      "<|im_start|>assistant\n");
  options.enable_thinking = false;
  const std::string closed = *t.Render(messages, {}, options);
  EXPECT_TRUE(closed.ends_with("Bye<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n")) << closed;
}

TEST(ChatTemplate, Llama32DatesThePromptWithStrftimeNow) {
  ChatTemplate t = MustParse(ReadTemplate("llama-3.2-instruct.jinja"), "<B>");
  ChatTemplateOptions options;
  options.now = kNow;
  EXPECT_EQ(*t.Render({{Role::kUser, {TextPart{"Hi", {}}}, ""}}, {}, options),
            "<B><|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023\n"
            "Today Date: 26 Jul 2024\n\n<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\n");
  // Extra variables reach the template (Llama's date_string), fixed ones cannot be replaced.
  options.extra = boost::json::object{{"date_string", "01 Jan 2030"}, {"messages", boost::json::array{}}};
  const std::string out = *t.Render({{Role::kUser, {TextPart{"Hi", {}}}, ""}}, {}, options);
  EXPECT_NE(out.find("Today Date: 01 Jan 2030\n"), std::string::npos);
  EXPECT_NE(out.find("Hi<|eot_id|>"), std::string::npos);
}

TEST(ChatTemplate, ProbesWhatEachTemplateExpects) {
  struct Expected {
    const char* file;
    bool tools;
    bool thinking;
    bool renders_calls;
    bool null_content;
    bool object_arguments;
  };
  for (const Expected& e : {Expected{"qwen2.5-instruct.jinja", true, false, true, true, true},
                            Expected{"qwen3.jinja", true, true, true, false, true},
                            Expected{"qwq-32b.jinja", true, false, true, false, true},
                            Expected{"llama-3-instruct.jinja", false, false, false, false, true},
                            Expected{"llama-3.1-instruct.jinja", true, false, true, true, true},
                            Expected{"llama-3.2-instruct.jinja", true, false, true, true, true},
                            Expected{"deepseek-r1-distill.jinja", false, false, true, true, false},
                            Expected{"deepseek-v3.jinja", false, false, true, true, false}}) {
    const ChatTemplateCaps caps = MustParse(ReadTemplate(e.file)).caps();
    EXPECT_EQ(caps.supports_tools, e.tools) << e.file;
    EXPECT_EQ(caps.supports_enable_thinking, e.thinking) << e.file;
    EXPECT_EQ(caps.renders_tool_calls, e.renders_calls) << e.file;
    EXPECT_EQ(caps.null_content_with_tool_calls, e.null_content) << e.file;
    EXPECT_EQ(caps.object_arguments, e.object_arguments) << e.file;
  }
}

// ---------------------------------------------------------------- the template's view of a request

TEST(TemplateMessages, GivesTheShapeHuggingFaceTemplatesRead) {
  std::vector<Message> messages = WeatherConversation();
  messages.insert(messages.begin(), Message{Role::kDeveloper, {TextPart{"Be brief.", {}}}, ""});
  messages.push_back({Role::kUser, {TextPart{"from ", {}}, TextPart{"Ann", {}}}, "ann"});
  EXPECT_EQ(
      boost::json::serialize(TemplateMessages(messages, {})),
      R"([{"role":"system","content":"Be brief."},)"
      R"({"role":"system","content":"You are a weather bot."},)"
      R"({"role":"user","content":"What's the weather in Paris?"},)"
      R"({"role":"assistant","content":null,"reasoning_content":"The user wants weather.",)"
      R"("tool_calls":[{"id":"call_1","type":"function","function":{"name":"get_weather","arguments":{"city":"Paris"}}}]},)"
      R"({"role":"tool","tool_call_id":"call_1","content":"18°C, sunny"},)"
      R"({"role":"assistant","content":"It is 18°C and sunny in Paris."},)"
      R"({"role":"user","content":"Thanks!"},)"
      R"({"role":"user","content":"from Ann","name":"ann"}])");
  const auto view = TemplateMessages(messages, {.null_content_with_tool_calls = false, .object_arguments = false});
  EXPECT_EQ(boost::json::serialize(view.at(3).at("content")), R"("")");
  EXPECT_EQ(boost::json::serialize(view.at(3).at("tool_calls").at(0).at("function").at("arguments")),
            R"("{\"city\": \"Paris\"}")");
}

TEST(TemplateMessages, SplitsToolResultsOutOfUserTurns) {
  ToolResultPart result;
  result.tool_call_id = "toolu_1";
  result.name = "lookup";
  result.content.push_back(TextPart{"found", {}});
  const auto view = TemplateMessages({{Role::kUser, {result, TextPart{"and now?", {}}}, ""}}, {});
  EXPECT_EQ(boost::json::serialize(view),
            R"([{"role":"tool","tool_call_id":"toolu_1","name":"lookup","content":"found"},)"
            R"({"role":"user","content":"and now?"}])");
  // Arguments that are not JSON stay text; none become {}.
  const auto calls = TemplateMessages(
      {{Role::kAssistant, {ToolCallPart{"c1", "f", "not json", "", {}}, ToolCallPart{"c2", "g", "", "", {}}}, ""}}, {});
  EXPECT_EQ(boost::json::serialize(calls.at(0).at("tool_calls").at(0).at("function").at("arguments")), R"("not json")");
  EXPECT_EQ(boost::json::serialize(calls.at(0).at("tool_calls").at(1).at("function").at("arguments")), "{}");
}

TEST(TemplateTools, AreOpenAiFunctionTools) {
  std::vector<ToolDefinition> tools = WeatherTools();
  tools.push_back(ToolDefinition{.name = "ping"});
  EXPECT_EQ(boost::json::serialize(TemplateTools(tools)),
            R"([{"type":"function","function":{"name":"get_weather","description":"Get the current weather",)"
            R"("parameters":{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]}}},)"
            R"({"type":"function","function":{"name":"ping"}}])");
}

}  // namespace
}  // namespace tollgate::local_backend
