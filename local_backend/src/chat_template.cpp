#include "tollgate/local_backend/chat_template.hpp"

#include <algorithm>
#include <boost/json/parse.hpp>

#include "jinja_interpreter.hpp"
#include "jinja_parser.hpp"

namespace tollgate::local_backend {
namespace {

constexpr std::string_view kProbeTool = "tollgate_probe_tool";

Error TemplateFailure(const jinja::TemplateError& e) {
  if (dynamic_cast<const jinja::TemplateRaised*>(&e) != nullptr) {
    return InvalidArgument(std::string("chat template rejected the conversation: ") + e.what(), "messages");
  }
  return InvalidArgument(std::string("chat template: ") + e.what());
}

std::string ResultText(const std::vector<std::variant<TextPart, ImagePart>>& content) {
  std::string text;
  for (const auto& part : content) {
    if (const auto* t = std::get_if<TextPart>(&part)) text += t->text;
  }
  return text;
}

boost::json::value Arguments(const std::string& text, bool as_object) {
  if (as_object) {
    boost::system::error_code ec;
    boost::json::value parsed = boost::json::parse(text.empty() ? std::string_view("{}") : std::string_view(text), ec);
    if (!ec) return parsed;
  }
  return boost::json::string(text.empty() ? "{}" : text);
}

// The probe conversation of ChatTemplate::Parse.
boost::json::array ProbeMessages(bool null_content, bool object_arguments) {
  boost::json::object call_function{{"name", kProbeTool}};
  if (object_arguments) {
    call_function["arguments"] = boost::json::object{{"probe_argument", 1}};
  } else {
    call_function["arguments"] = "{\"probe_argument\": 1}";
  }
  boost::json::object assistant{{"role", "assistant"}};
  if (null_content) {
    assistant["content"] = nullptr;
  } else {
    assistant["content"] = "";
  }
  assistant["tool_calls"] = boost::json::array{
      boost::json::object{{"id", "call_probe"}, {"type", "function"}, {"function", std::move(call_function)}}};
  return boost::json::array{
      boost::json::object{{"role", "user"}, {"content", "Probe question"}},
      std::move(assistant),
      boost::json::object{{"role", "tool"}, {"tool_call_id", "call_probe"}, {"content", "probe result"}},
  };
}

}  // namespace

Result<ChatTemplate> ChatTemplate::Parse(std::string_view source, std::string bos_token, std::string eos_token) {
  ChatTemplate t;
  try {
    t.program_ = jinja::Parse(source);
  } catch (const jinja::TemplateError& e) {
    return TemplateFailure(e);
  } catch (const std::exception& e) {
    // Nothing a model file holds may take the process down.
    return InvalidArgument(std::string("chat template: ") + e.what());
  }
  t.bos_token_ = std::move(bos_token);
  t.eos_token_ = std::move(eos_token);
  const auto& names = t.program_->names_read;
  auto reads = [&](std::string_view name) { return std::find(names.begin(), names.end(), name) != names.end(); };
  t.caps_.supports_tools = reads("tools");
  t.caps_.supports_enable_thinking = reads("enable_thinking");

  // Try the conventions in order of preference; keep the first that renders
  // the probe call. A template that renders no tool call keeps "" content
  // (so that a null never prints as "None") and object arguments.
  struct Variant {
    bool null_content;
    bool object_arguments;
  };
  static constexpr Variant kVariants[] = {{true, true}, {false, true}, {true, false}, {false, false}};
  bool found = false;
  for (const Variant& v : kVariants) {
    boost::json::object variables{{"messages", ProbeMessages(v.null_content, v.object_arguments)},
                                  {"tools", nullptr},
                                  {"add_generation_prompt", false}};
    auto rendered = t.RenderVariables(variables, std::chrono::system_clock::time_point{});
    if (rendered && rendered->find(kProbeTool) != std::string::npos) {
      t.caps_.null_content_with_tool_calls = v.null_content;
      t.caps_.object_arguments = v.object_arguments;
      t.caps_.renders_tool_calls = true;
      found = true;
      break;
    }
  }
  if (!found) {
    t.caps_.null_content_with_tool_calls = false;
    t.caps_.object_arguments = true;
  }
  return t;
}

Result<std::string> ChatTemplate::RenderVariables(const boost::json::object& variables,
                                                  std::optional<std::chrono::system_clock::time_point> now) const {
  try {
    jinja::Dict globals;
    globals.entries.reserve(variables.size() + 2);
    for (const auto& kv : variables) {
      globals.entries.emplace_back(std::string(kv.key()), jinja::Value::FromJson(kv.value()));
    }
    if (!bos_token_.empty() && !variables.contains("bos_token"))
      globals.Set("bos_token", jinja::Value::Str(bos_token_));
    if (!eos_token_.empty() && !variables.contains("eos_token"))
      globals.Set("eos_token", jinja::Value::Str(eos_token_));
    jinja::Interpreter interpreter(*program_, globals, now.value_or(std::chrono::system_clock::now()),
                                   jinja::RenderLimits{});
    return interpreter.Render();
  } catch (const jinja::TemplateError& e) {
    return TemplateFailure(e);
  } catch (const std::exception& e) {
    return InvalidArgument(std::string("chat template: ") + e.what());
  }
}

Result<std::string> ChatTemplate::Render(const std::vector<Message>& messages, const std::vector<ToolDefinition>& tools,
                                         const ChatTemplateOptions& options) const {
  boost::json::object variables = options.extra;
  variables["messages"] = TemplateMessages(
      messages, TemplateMessageOptions{.null_content_with_tool_calls = caps_.null_content_with_tool_calls,
                                       .object_arguments = caps_.object_arguments});
  if (tools.empty()) {
    variables["tools"] = nullptr;
  } else {
    variables["tools"] = TemplateTools(tools);
  }
  variables["add_generation_prompt"] = options.add_generation_prompt;
  if (options.enable_thinking) {
    variables["enable_thinking"] = *options.enable_thinking;
  } else {
    variables.erase("enable_thinking");
  }
  variables.erase("bos_token");
  variables.erase("eos_token");
  return RenderVariables(variables, options.now);
}

boost::json::array TemplateMessages(const std::vector<Message>& messages, const TemplateMessageOptions& options) {
  boost::json::array out;
  for (const Message& message : messages) {
    std::string text;
    std::string reasoning;
    boost::json::array tool_calls;
    std::vector<const ToolResultPart*> results;
    for (const ContentPart& part : message.parts) {
      if (const auto* t = std::get_if<TextPart>(&part)) {
        text += t->text;
      } else if (const auto* r = std::get_if<ReasoningPart>(&part)) {
        if (r->kind != ReasoningPart::Kind::kEncrypted) reasoning += r->text;
      } else if (const auto* c = std::get_if<ToolCallPart>(&part)) {
        tool_calls.push_back(boost::json::object{
            {"id", c->id},
            {"type", "function"},
            {"function", boost::json::object{{"name", c->name},
                                             {"arguments", Arguments(c->arguments, options.object_arguments)}}}});
      } else if (const auto* result = std::get_if<ToolResultPart>(&part)) {
        results.push_back(result);
      }
    }
    // Tool results become tool turns of their own, ahead of whatever else
    // the message holds (Anthropic puts them first in a user turn).
    for (const ToolResultPart* result : results) {
      boost::json::object turn{{"role", "tool"}, {"tool_call_id", result->tool_call_id}};
      if (!result->name.empty()) turn["name"] = result->name;
      turn["content"] = ResultText(result->content);
      out.push_back(std::move(turn));
    }
    const bool has_more = !text.empty() || !tool_calls.empty() || !reasoning.empty();
    if (!results.empty() && !(has_more && message.role != Role::kTool)) continue;
    boost::json::object turn;
    turn["role"] = message.role == Role::kDeveloper ? std::string_view("system") : RoleName(message.role);
    if (!tool_calls.empty() && text.empty() && options.null_content_with_tool_calls) {
      turn["content"] = nullptr;
    } else {
      turn["content"] = text;
    }
    if (!reasoning.empty()) turn["reasoning_content"] = reasoning;
    if (!tool_calls.empty()) turn["tool_calls"] = std::move(tool_calls);
    if (!message.name.empty()) turn["name"] = message.name;
    out.push_back(std::move(turn));
  }
  return out;
}

boost::json::array TemplateTools(const std::vector<ToolDefinition>& tools) {
  boost::json::array out;
  for (const ToolDefinition& tool : tools) {
    boost::json::object function{{"name", tool.name}};
    if (!tool.description.empty()) function["description"] = tool.description;
    if (!tool.parameters.is_null()) function["parameters"] = tool.parameters;
    out.push_back(boost::json::object{{"type", "function"}, {"function", std::move(function)}});
  }
  return out;
}

}  // namespace tollgate::local_backend
