// Fuzz target: the chat-template engine (local_backend/include/tollgate/local_backend/chat_template.hpp),
// both what a model file brings (the template text) and what a caller
// brings (the conversation).
//
// Input: TEMPLATE, optionally followed by a NUL byte and a JSON body.
//   - TEMPLATE is parsed (ChatTemplate::Parse, which also renders its probe
//     conversation);
//   - with no body, it renders a fixed conversation (system, user, an
//     assistant tool call, its result, a user turn) with one tool, with and
//     without the generation prompt and enable_thinking;
//   - a body that DecodeChatRequest accepts (an OpenAI Chat Completions
//     request, as callers send it) renders its messages and tools;
//   - any other JSON object is passed as the template's variables
//     (RenderVariables).
// Parse and Render must return a value or an Error, never throw or crash,
// and stay within the engine's step and output limits.
#include "tollgate/local_backend/chat_template.hpp"
#include "tollgate/wire/openai.hpp"

#include <boost/json/parse.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

using namespace tollgate;
using namespace tollgate::local_backend;

namespace {

std::vector<Message> Conversation() {
  std::vector<Message> m;
  m.push_back({Role::kSystem, {TextPart{"You are terse.", {}}}, ""});
  m.push_back({Role::kUser, {TextPart{"Weather in Paris?", {}}}, ""});
  m.push_back({Role::kAssistant,
               {ReasoningPart{ReasoningPart::Kind::kText, "Call the tool.", "", "", "", ""},
                ToolCallPart{"call_1", "get_weather", R"({"city":"Paris"})", "", {}}},
               ""});
  m.push_back({Role::kTool, {ToolResultPart{"call_1", "get_weather", {TextPart{"18C", {}}}, false, {}}}, ""});
  m.push_back({Role::kUser, {TextPart{"Thanks", {}}}, ""});
  return m;
}

std::vector<ToolDefinition> Tools() {
  ToolDefinition t;
  t.name = "get_weather";
  t.description = "Current weather";
  t.parameters = boost::json::parse(R"({"type":"object","properties":{"city":{"type":"string"}},"required":["city"]})");
  return {t};
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  const std::size_t nul = input.find('\0');
  const std::string_view source = input.substr(0, nul);
  auto parsed = ChatTemplate::Parse(source, "<s>", "</s>");
  if (!parsed) return 0;
  const ChatTemplate& t = *parsed;
  ChatTemplateOptions options;
  options.now = std::chrono::system_clock::time_point(std::chrono::seconds(1700000000));
  if (nul == std::string_view::npos) {
    static const std::vector<Message> messages = Conversation();
    static const std::vector<ToolDefinition> tools = Tools();
    (void)t.Render(messages, tools, options);
    options.add_generation_prompt = false;
    options.enable_thinking = false;
    (void)t.Render(messages, {}, options);
    return 0;
  }
  const std::string_view body = input.substr(nul + 1);
  if (auto request = wire::openai::DecodeChatRequest(body)) {
    (void)t.Render(request->messages, request->tools, options);
    options.enable_thinking = true;
    (void)t.Render(request->messages, {}, options);
    return 0;
  }
  boost::system::error_code ec;
  boost::json::value variables = boost::json::parse(body, ec);
  if (!ec && variables.is_object()) (void)t.RenderVariables(variables.as_object(), options.now);
  return 0;
}
