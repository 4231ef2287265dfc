// OpenAI Responses API, inbound half (gateway): requests in, responses out.
// wire/include/tollgate/wire/responses.hpp documents the mapping; the notes
// here say why where the header leaves a choice open. Shapes follow the
// `openai` npm package's types (resources/responses/responses.d.ts).
#include "tollgate/wire/responses.hpp"

#include "json_util.hpp"

#include "tollgate/core/text.hpp"

#include <boost/json/serialize.hpp>
#include <boost/json/string.hpp>
#include <boost/json/value.hpp>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <limits>
#include <map>
#include <set>
#include <utility>
#include <variant>

namespace tollgate::wire::responses {
namespace json = boost::json;
using detail::ArrayAt;
using detail::AsInteger;
using detail::Bad;
using detail::Base64UrlDecode;
using detail::Base64UrlEncode;
using detail::BadRequest;
using detail::Item;
using detail::Present;
using detail::ReadBool;
using detail::ReadInteger;
using detail::ReadNumber;
using detail::ReadString;
using detail::Status;
using detail::StringAt;
using detail::View;

namespace {

// ---------------------------------------------------------------- limits and constants

// Output-token limit accepted from callers (max_output_tokens), as on chat
// completions: 2^24, far above any model's output window.
constexpr int64_t kMaxOutputTokens = int64_t{1} << 24;
// OpenAI API reference, "Create a model response": top_logprobs 0..20.
constexpr int64_t kMaxTopLogprobs = 20;

constexpr std::string_view kOpenAiFormat = kReasoningFormatOpenAiResponses;
constexpr std::string_view kGeminiFormat = kReasoningFormatGemini;
constexpr std::string_view kSealPrefix = "tollgate.v1.";
constexpr std::string_view kIncludeEncrypted = "reasoning.encrypted_content";
// Response metadata key listing the built-in tools that were left out.
constexpr std::string_view kDroppedToolsKey = "tollgate_dropped_tools";

// Item types of tools Tollgate does not run (built-in tools, custom tools,
// MCP, shell and patch tools, compaction): in a request's input they are the
// record of something that happened elsewhere, left out of what the model
// sees (responses.d.ts, ResponseInputItem).
bool IsForeignItemType(std::string_view type) {
  static constexpr std::array<std::string_view, 24> kTypes = {
      "file_search_call",     "computer_call",      "computer_call_output",    "web_search_call",
      "image_generation_call", "code_interpreter_call", "local_shell_call",     "local_shell_call_output",
      "shell_call",           "shell_call_output",  "apply_patch_call",        "apply_patch_call_output",
      "mcp_list_tools",       "mcp_approval_request", "mcp_approval_response", "mcp_call",
      "custom_tool_call",     "custom_tool_call_output", "tool_search_call",   "tool_search_output",
      "additional_tools",     "compaction",         "compaction_trigger",      "program_output",
  };
  return type == "program" || std::find(kTypes.begin(), kTypes.end(), type) != kTypes.end();
}

// Reasoning effort values (responses.d.ts via shared.d.ts ReasoningEffort).
// "max" is not a canonical effort; it asks for the most there is: "xhigh".
bool IsEffort(std::string_view effort) {
  return effort == "xhigh" || effort == "high" || effort == "medium" || effort == "low" ||
         effort == "minimal" || effort == "none" || effort == "max";
}

// Function and json_schema names: a-z, A-Z, 0-9, underscores and dashes, at
// most 64 characters (API reference, tools[].name, text.format.name).
bool IsFunctionName(std::string_view name) {
  if (name.empty() || name.size() > 64) return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '-';
  });
}

// ---------------------------------------------------------------- small helpers

// A required non-empty string.
Status ReadId(const json::object& o, std::string_view key, const std::string& param, std::string& out) {
  const json::value* v = o.if_contains(key);
  if (v == nullptr || !v->is_string() || v->get_string().empty()) {
    return Bad(param + " must be a non-empty string", param);
  }
  out = std::string(View(v->get_string()));
  return {};
}

// ---------------------------------------------------------------- inbound: items

std::string_view KindName(ReasoningPart::Kind kind) {
  switch (kind) {
    case ReasoningPart::Kind::kText: return "text";
    case ReasoningPart::Kind::kSummary: return "summary";
    case ReasoningPart::Kind::kEncrypted: return "encrypted";
  }
  return "text";
}

std::optional<ReasoningPart::Kind> ParseKind(std::string_view name) {
  if (name == "text") return ReasoningPart::Kind::kText;
  if (name == "summary") return ReasoningPart::Kind::kSummary;
  if (name == "encrypted") return ReasoningPart::Kind::kEncrypted;
  return std::nullopt;
}

// Decodes Responses items into canonical messages, keeping the grouping open
// across calls (a stored context and then this request's input are one
// conversation).
class ItemDecoder {
 public:
  explicit ItemDecoder(std::vector<Message>& out) : out_(out) {}

  Status Decode(const json::array& items, std::string_view param) {
    for (std::size_t i = 0; i < items.size(); ++i) {
      const std::string p = Item(param, i);
      const json::object* item = items[i].if_object();
      if (item == nullptr) return Bad(p + " must be an object", p);
      if (auto e = DecodeItem(*item, p)) return e;
    }
    return {};
  }

  // Gemini thought signatures travel as sealed reasoning parts whose id is
  // their call's id (see StreamEncoder): back onto their calls.
  void Finish() {
    for (std::size_t m = first_; m < out_.size(); ++m) {
      Message& message = out_[m];
      if (message.role != Role::kAssistant) continue;
      // Two passes: a carrier may come before or after its call, so the
      // carriers are collected first and the parts moved only afterwards.
      std::map<std::string, std::string, std::less<>> signatures;
      for (const ContentPart& part : message.parts) {
        if (const auto* r = GeminiCarrier(part)) signatures.insert_or_assign(r->id, r->data);
      }
      if (signatures.empty()) continue;
      std::set<std::string, std::less<>> attached;
      for (ContentPart& part : message.parts) {
        if (auto* call = std::get_if<ToolCallPart>(&part)) {
          if (auto it = signatures.find(call->id); it != signatures.end()) {
            call->thought_signature = it->second;
            attached.insert(call->id);
          }
        }
      }
      std::vector<ContentPart> kept;
      kept.reserve(message.parts.size());
      for (ContentPart& part : message.parts) {
        if (const auto* r = GeminiCarrier(part); r != nullptr && attached.contains(r->id)) continue;
        kept.push_back(std::move(part));
      }
      message.parts = std::move(kept);
    }
  }

 private:
  // A sealed Gemini thought signature riding for the call whose id it has.
  static const ReasoningPart* GeminiCarrier(const ContentPart& part) {
    const auto* r = std::get_if<ReasoningPart>(&part);
    if (r == nullptr || r->kind != ReasoningPart::Kind::kEncrypted || r->format != kGeminiFormat || r->id.empty()) {
      return nullptr;
    }
    return r;
  }

  Message& Assistant() {
    if (!assistant_open_) {
      Message m;
      m.role = Role::kAssistant;
      out_.push_back(std::move(m));
      assistant_open_ = true;
    }
    return out_.back();
  }

  Status DecodeItem(const json::object& item, const std::string& p) {
    const json::value* type_value = Present(item, "type");
    std::string_view type;
    if (type_value == nullptr) {
      // EasyInputMessage: {role, content} without a type.
      if (item.if_contains("role") == nullptr) return Bad(p + ".type must be a string", p + ".type");
      type = "message";
    } else if (!type_value->is_string()) {
      return Bad(p + ".type must be a string", p + ".type");
    } else {
      type = View(type_value->get_string());
    }
    if (type == "message") return DecodeMessage(item, p);
    if (type == "function_call") return DecodeFunctionCall(item, p);
    if (type == "function_call_output") return DecodeFunctionCallOutput(item, p);
    if (type == "reasoning") return DecodeReasoning(item, p);
    if (type == "item_reference") {
      return Bad(p + ": item_reference is not supported (Tollgate keeps no items by id; send the item itself, "
                     "or use previous_response_id)",
                 p + ".type");
    }
    // The record of a tool Tollgate never ran: nothing the model can use.
    if (IsForeignItemType(type)) return {};
    return Bad(p + ".type '" + std::string(type).substr(0, 64) +
                   "' is not supported (supported: message, function_call, function_call_output, reasoning)",
               p + ".type");
  }

  Status DecodeMessage(const json::object& item, const std::string& p) {
    const json::value* role_value = item.if_contains("role");
    if (role_value == nullptr || !role_value->is_string()) return Bad(p + ".role must be a string", p + ".role");
    const std::string_view role_name = View(role_value->get_string());
    Role role;
    if (role_name == "user") {
      role = Role::kUser;
    } else if (role_name == "system") {
      role = Role::kSystem;
    } else if (role_name == "developer") {
      role = Role::kDeveloper;
    } else if (role_name == "assistant") {
      role = Role::kAssistant;
    } else {
      return Bad(p + ".role '" + std::string(role_name).substr(0, 64) +
                     "' is not one of user, system, developer, assistant",
                 p + ".role");
    }
    const json::value* content = item.if_contains("content");
    const std::string cp = p + ".content";
    if (content == nullptr || content->is_null()) return Bad(cp + " is required", cp);
    std::vector<ContentPart> parts;
    if (content->is_string()) {
      parts.emplace_back(TextPart{std::string(View(content->get_string())), {}});
    } else if (content->is_array()) {
      const json::array& list = content->get_array();
      // An assistant turn may have said nothing in text (its calls are items
      // of their own); an input message must say something.
      if (list.empty() && role != Role::kAssistant) return Bad(cp + " must contain at least one content part", cp);
      for (std::size_t j = 0; j < list.size(); ++j) {
        if (auto e = DecodeContentPart(list[j], Item(cp, j), role, parts)) return e;
      }
    } else {
      return Bad(cp + " must be a string or an array of content parts", cp);
    }

    if (role == Role::kAssistant) {
      Message& m = Assistant();
      for (ContentPart& part : parts) {
        // An empty output_text says nothing; providers reject empty text blocks.
        if (const auto* t = std::get_if<TextPart>(&part); t != nullptr && t->text.empty()) continue;
        m.parts.push_back(std::move(part));
      }
      return {};
    }
    assistant_open_ = false;
    Message m;
    m.role = role;
    m.parts = std::move(parts);
    out_.push_back(std::move(m));
    return {};
  }

  // input_text / input_image in input messages (input_image only from the
  // user); output_text / refusal (and input_text, which EasyInputMessage
  // allows) in assistant messages.
  Status DecodeContentPart(const json::value& value, const std::string& p, Role role, std::vector<ContentPart>& out) {
    const json::object* part = value.if_object();
    if (part == nullptr) return Bad(p + " must be an object", p);
    const json::value* type_value = part->if_contains("type");
    if (type_value == nullptr || !type_value->is_string()) return Bad(p + ".type must be a string", p + ".type");
    const std::string_view type = View(type_value->get_string());
    const bool assistant = role == Role::kAssistant;
    if (type == "input_text" || (assistant && type == "output_text")) {
      std::string text;
      if (auto e = ReadText(*part, "text", p, text)) return e;
      out.emplace_back(TextPart{std::move(text), {}});
      return {};
    }
    if (assistant && type == "refusal") {
      std::string text;
      if (auto e = ReadText(*part, "refusal", p, text)) return e;
      out.emplace_back(TextPart{std::move(text), {}});
      return {};
    }
    if (role == Role::kUser && type == "input_image") {
      ImagePart image;
      if (auto e = DecodeImage(*part, p, image)) return e;
      out.emplace_back(std::move(image));
      return {};
    }
    std::string supported = assistant ? "output_text, refusal, input_text"
                                      : (role == Role::kUser ? "input_text, input_image" : "input_text");
    std::string role_name(RoleName(role));
    return Bad(p + ".type '" + std::string(type).substr(0, 64) + "' is not supported in " + role_name +
                   " messages (supported: " + supported + ")",
               p + ".type");
  }

  static Status ReadText(const json::object& part, std::string_view key, const std::string& p, std::string& out) {
    const json::value* text = part.if_contains(key);
    const std::string tp = p + "." + std::string(key);
    if (text == nullptr || !text->is_string()) return Bad(tp + " must be a string", tp);
    out = std::string(View(text->get_string()));
    return {};
  }

  static Status DecodeImage(const json::object& part, const std::string& p, ImagePart& out) {
    const json::value* url = Present(part, "image_url");
    if (url == nullptr) {
      if (Present(part, "file_id") != nullptr) {
        return Bad(p + ".file_id is not supported (Tollgate has no Files API); send image_url (an http(s) URL "
                       "or a data URL)",
                   p + ".file_id");
      }
      return Bad(p + ".image_url is required", p + ".image_url");
    }
    if (!url->is_string() || url->get_string().empty()) {
      return Bad(p + ".image_url must be a non-empty string", p + ".image_url");
    }
    out.url = std::string(View(url->get_string()));
    std::optional<std::string> detail;
    if (auto e = ReadString(part, "detail", p + ".detail", detail)) return e;
    out.detail = detail.value_or("");
    return {};
  }

  Status DecodeFunctionCall(const json::object& item, const std::string& p) {
    ToolCallPart call;
    if (auto e = ReadId(item, "call_id", p + ".call_id", call.id)) return e;
    if (auto e = ReadId(item, "name", p + ".name", call.name)) return e;
    // `arguments` is JSON text; a client that sent the object itself gets it
    // serialized rather than a 400 (as on chat completions).
    if (const json::value* args = Present(item, "arguments")) {
      if (args->is_string()) {
        call.arguments = std::string(View(args->get_string()));
      } else if (args->is_object()) {
        call.arguments = json::serialize(*args);
      } else {
        return Bad(p + ".arguments must be a string", p + ".arguments");
      }
    }
    if (call.arguments.empty()) call.arguments = "{}";
    tool_names_[call.id] = call.name;
    Assistant().parts.emplace_back(std::move(call));
    return {};
  }

  Status DecodeFunctionCallOutput(const json::object& item, const std::string& p) {
    ToolResultPart result;
    if (auto e = ReadId(item, "call_id", p + ".call_id", result.tool_call_id)) return e;
    if (auto it = tool_names_.find(result.tool_call_id); it != tool_names_.end()) result.name = it->second;
    const json::value* output = item.if_contains("output");
    const std::string op = p + ".output";
    if (output == nullptr || output->is_null()) return Bad(op + " is required", op);
    if (output->is_string()) {
      result.content.emplace_back(TextPart{std::string(View(output->get_string())), {}});
    } else if (output->is_array()) {
      const json::array& list = output->get_array();
      for (std::size_t j = 0; j < list.size(); ++j) {
        const std::string pp = Item(op, j);
        const json::object* part = list[j].if_object();
        if (part == nullptr) return Bad(pp + " must be an object", pp);
        const std::string_view type = StringAt(*part, "type");
        if (type == "input_text") {
          std::string text;
          if (auto e = ReadText(*part, "text", pp, text)) return e;
          result.content.emplace_back(TextPart{std::move(text), {}});
        } else if (type == "input_image") {
          ImagePart image;
          if (auto e = DecodeImage(*part, pp, image)) return e;
          result.content.emplace_back(std::move(image));
        } else {
          return Bad(pp + ".type must be input_text or input_image", pp + ".type");
        }
      }
    } else {
      return Bad(op + " must be a string or an array of content parts", op);
    }
    assistant_open_ = false;
    Message m;
    m.role = Role::kTool;
    m.parts.emplace_back(std::move(result));
    out_.push_back(std::move(m));
    return {};
  }

  Status DecodeReasoning(const json::object& item, const std::string& p) {
    std::optional<std::string> id, encrypted;
    if (auto e = ReadString(item, "id", p + ".id", id)) return e;
    if (auto e = ReadString(item, "encrypted_content", p + ".encrypted_content", encrypted)) return e;
    if (encrypted && std::string_view(*encrypted).substr(0, kSealPrefix.size()) == kSealPrefix) {
      // Sealed by this gateway: the parts it was made from (its summary and
      // content are views of them).
      std::optional<std::vector<ReasoningPart>> parts = UnsealReasoning(*encrypted);
      if (!parts) {
        return Bad(p + ".encrypted_content is not valid (it must be returned exactly as Tollgate sent it)",
                   p + ".encrypted_content");
      }
      if (!parts->empty()) {
        Message& m = Assistant();
        for (ReasoningPart& part : *parts) m.parts.emplace_back(std::move(part));
      }
      return {};
    }
    std::vector<ReasoningPart> parts;
    auto read_entries = [&](std::string_view key, std::string_view entry_type, ReasoningPart::Kind kind) -> Status {
      const json::value* v = Present(item, key);
      if (v == nullptr) return {};
      const std::string ep = p + "." + std::string(key);
      if (!v->is_array()) return Bad(ep + " must be an array", ep);
      const json::array& list = v->get_array();
      for (std::size_t j = 0; j < list.size(); ++j) {
        const std::string pp = Item(ep, j);
        const json::object* entry = list[j].if_object();
        if (entry == nullptr) return Bad(pp + " must be an object", pp);
        if (StringAt(*entry, "type") != entry_type) {
          return Bad(pp + ".type must be \"" + std::string(entry_type) + "\"", pp + ".type");
        }
        ReasoningPart part;
        part.kind = kind;
        if (auto e = ReadText(*entry, "text", pp, part.text)) return e;
        part.format = std::string(kOpenAiFormat);
        part.id = id.value_or("");
        parts.push_back(std::move(part));
      }
      return {};
    };
    if (auto e = read_entries("summary", "summary_text", ReasoningPart::Kind::kSummary)) return e;
    if (auto e = read_entries("content", "reasoning_text", ReasoningPart::Kind::kText)) return e;
    if (encrypted && !encrypted->empty()) {
      ReasoningPart part;
      part.kind = ReasoningPart::Kind::kEncrypted;
      part.data = std::move(*encrypted);
      part.format = std::string(kOpenAiFormat);
      part.id = id.value_or("");
      parts.push_back(std::move(part));
    }
    if (parts.empty()) return {};  // nothing to replay
    Message& m = Assistant();
    for (ReasoningPart& part : parts) m.parts.emplace_back(std::move(part));
    return {};
  }

  std::vector<Message>& out_;
  std::size_t first_ = out_.size();
  bool assistant_open_ = false;
  std::map<std::string, std::string> tool_names_;  // call id -> function name
};

// Tool results whose name was not given by their item get it from the call
// they answer, wherever in the conversation that call is.
void FillToolNames(std::vector<Message>& messages) {
  std::map<std::string, std::string> names;
  for (Message& m : messages) {
    for (ContentPart& part : m.parts) {
      if (const auto* call = std::get_if<ToolCallPart>(&part)) {
        names[call->id] = call->name;
      } else if (auto* result = std::get_if<ToolResultPart>(&part); result != nullptr && result->name.empty()) {
        if (auto it = names.find(result->tool_call_id); it != names.end()) result->name = it->second;
      }
    }
  }
}

// OpenAI's rules: every function_call_output answers a function_call made
// earlier in the conversation ("No tool call found for function call output
// with call_id ..."), and every function_call is answered by a
// function_call_output ("No tool output found for function call ...").
// Providers reject both too (Anthropic: a tool_use without its tool_result),
// less clearly.
Status CheckToolResults(const std::vector<Message>& messages) {
  std::set<std::string> calls;
  std::set<std::string> answered;
  std::vector<std::string> order;  // call ids in order, for the first unanswered one
  for (const Message& m : messages) {
    for (const ContentPart& part : m.parts) {
      if (const auto* call = std::get_if<ToolCallPart>(&part)) {
        if (calls.insert(call->id).second) order.push_back(call->id);
      } else if (const auto* result = std::get_if<ToolResultPart>(&part); result != nullptr) {
        if (!calls.contains(result->tool_call_id)) {
          return Bad("No tool call found for function call output with call_id " +
                         result->tool_call_id.substr(0, 200) + ".",
                     "input");
        }
        answered.insert(result->tool_call_id);
      }
    }
  }
  for (const std::string& id : order) {
    if (!answered.contains(id)) return Bad("No tool output found for function call " + id.substr(0, 200) + ".", "input");
  }
  return {};
}

// request.chat.messages from instructions, `prior` (may be null) and input.
// Tool results are checked against the calls once the whole conversation is
// known (with previous_response_id: when its context comes).
Status BuildMessages(Request& request, const json::array* prior) {
  std::vector<Message> messages;
  if (!request.instructions.empty()) {
    Message system;
    system.role = Role::kSystem;
    system.parts.emplace_back(TextPart{request.instructions, {}});
    messages.push_back(std::move(system));
  }
  ItemDecoder decoder(messages);
  if (prior != nullptr) {
    if (auto e = decoder.Decode(*prior, "previous_response_id")) return e;
  }
  if (auto e = decoder.Decode(request.input, "input")) return e;
  decoder.Finish();
  FillToolNames(messages);
  if (prior != nullptr || request.previous_response_id.empty()) {
    if (auto e = CheckToolResults(messages)) return e;
  }
  request.chat.messages = std::move(messages);
  return {};
}

// Input items as OpenAI lists them (GET /v1/responses/{id}/input_items):
// shorthand messages get type "message" and their string content becomes one
// input_text part (output_text for the assistant); messages, function calls
// and their outputs get an id ("msg_", "fc_", "fco_" + 32 base62) when they
// have none, and status "completed". Reasoning items are kept as they are (an
// id there names OpenAI's own item). Runs on validated items.
void NormalizeInputItems(json::array& items) {
  for (json::value& v : items) {
    if (!v.is_object()) continue;
    json::object& item = v.get_object();
    const json::value* type = item.if_contains("type");
    if ((type == nullptr || type->is_null()) && item.contains("role")) item["type"] = "message";
    const std::string_view t = item.at("type").is_string() ? View(item.at("type").get_string()) : "";
    std::string_view prefix;
    if (t == "message") {
      prefix = "msg_";
      if (json::value* content = item.if_contains("content"); content != nullptr && content->is_string()) {
        const bool assistant = item.at("role") == "assistant";
        json::object part{{"type", assistant ? "output_text" : "input_text"}, {"text", content->get_string()}};
        if (assistant) part["annotations"] = json::array{};
        *content = json::array{std::move(part)};
      }
    } else if (t == "function_call") {
      prefix = "fc_";
    } else if (t == "function_call_output") {
      prefix = "fco_";
    } else {
      continue;
    }
    const json::value* id = item.if_contains("id");
    if (id == nullptr || !id->is_string() || id->get_string().empty()) item["id"] = std::string(prefix) + RandomBase62(32);
    const json::value* status = item.if_contains("status");
    if (status == nullptr || status->is_null()) item["status"] = "completed";
  }
}

// ---------------------------------------------------------------- inbound: tools and formats

// `tools`: function tools -> ToolDefinitions; every other type is dropped
// (listed once each, in order).
Status DecodeTools(const json::object& root, Request& req) {
  const json::value* tools = Present(root, "tools");
  if (tools == nullptr) return {};
  if (!tools->is_array()) return Bad("tools must be an array", "tools");
  const json::array& list = tools->get_array();
  for (std::size_t i = 0; i < list.size(); ++i) {
    const std::string p = Item("tools", i);
    const json::object* tool = list[i].if_object();
    if (tool == nullptr) return Bad(p + " must be an object", p);
    const json::value* type = tool->if_contains("type");
    if (type == nullptr || !type->is_string() || type->get_string().empty()) {
      return Bad(p + ".type must be a non-empty string", p + ".type");
    }
    const std::string_view t = View(type->get_string());
    if (t != "function") {
      std::string name(t.substr(0, 64));
      if (std::find(req.dropped_tools.begin(), req.dropped_tools.end(), name) == req.dropped_tools.end()) {
        req.dropped_tools.push_back(std::move(name));
      }
      continue;
    }
    ToolDefinition def;
    const json::value* name = tool->if_contains("name");
    if (name == nullptr || !name->is_string() || !IsFunctionName(View(name->get_string()))) {
      return Bad(p + ".name must match ^[a-zA-Z0-9_-]{1,64}$", p + ".name");
    }
    def.name = std::string(View(name->get_string()));
    for (const ToolDefinition& other : req.chat.tools) {
      if (other.name == def.name) return Bad(p + ".name '" + def.name + "' is declared twice", p + ".name");
    }
    std::optional<std::string> description;
    if (auto e = ReadString(*tool, "description", p + ".description", description)) return e;
    def.description = description.value_or("");
    if (const json::value* parameters = Present(*tool, "parameters")) {
      if (!parameters->is_object()) return Bad(p + ".parameters must be a JSON Schema object", p + ".parameters");
      def.parameters = *parameters;
    }
    if (auto e = ReadBool(*tool, "strict", p + ".strict", def.strict)) return e;
    req.chat.tools.push_back(std::move(def));
  }
  return {};
}

Error ForcedBuiltIn(std::string_view what) {
  return Bad("tool_choice forces the tool '" + std::string(what).substr(0, 64) +
                 "', which Tollgate cannot run (only function tools are supported)",
             "tool_choice");
}

Status DecodeToolChoice(const json::object& root, Request& req) {
  const json::value* choice = Present(root, "tool_choice");
  if (choice == nullptr) return {};
  auto has_tool = [&](std::string_view name) {
    return std::any_of(req.chat.tools.begin(), req.chat.tools.end(),
                       [&](const ToolDefinition& t) { return t.name == name; });
  };
  ToolChoice tc;
  if (choice->is_string()) {
    const std::string_view s = View(choice->get_string());
    if (s == "auto") {
      tc.mode = ToolChoice::Mode::kAuto;
    } else if (s == "none") {
      tc.mode = ToolChoice::Mode::kNone;
    } else if (s == "required") {
      tc.mode = ToolChoice::Mode::kRequired;
      if (req.chat.tools.empty()) {
        if (!req.dropped_tools.empty()) return ForcedBuiltIn(req.dropped_tools.front());
        return Bad("tool_choice \"required\" needs tools", "tool_choice");
      }
    } else {
      return Bad("tool_choice must be \"auto\", \"none\", \"required\" or an object", "tool_choice");
    }
    req.chat.tool_choice = tc;
    return {};
  }
  if (!choice->is_object()) return Bad("tool_choice must be a string or an object", "tool_choice");
  const json::object& o = choice->get_object();
  const json::value* type_value = o.if_contains("type");
  if (type_value == nullptr || !type_value->is_string()) {
    return Bad("tool_choice.type must be a string", "tool_choice.type");
  }
  const std::string_view type = View(type_value->get_string());
  if (type == "function") {
    const std::string_view name = StringAt(o, "name");
    if (name.empty()) return Bad("tool_choice.name must be a non-empty string", "tool_choice.name");
    if (!has_tool(name)) {
      return Bad("tool_choice names function '" + std::string(name).substr(0, 64) + "', which is not in tools",
                 "tool_choice.name");
    }
    tc.mode = ToolChoice::Mode::kFunction;
    tc.function_name = std::string(name);
  } else if (type == "allowed_tools") {
    const std::string_view mode = StringAt(o, "mode");
    if (mode != "auto" && mode != "required") {
      return Bad("tool_choice.mode must be \"auto\" or \"required\"", "tool_choice.mode");
    }
    const json::array* allowed = ArrayAt(o, "tools");
    if (allowed == nullptr) return Bad("tool_choice.tools must be an array", "tool_choice.tools");
    std::set<std::string> functions;
    std::vector<std::string> built_ins;
    for (std::size_t i = 0; i < allowed->size(); ++i) {
      const std::string p = Item("tool_choice.tools", i);
      const json::object* entry = (*allowed)[i].if_object();
      if (entry == nullptr) return Bad(p + " must be an object", p);
      const std::string_view t = StringAt(*entry, "type");
      if (t.empty()) return Bad(p + ".type must be a non-empty string", p + ".type");
      if (t != "function") {
        built_ins.emplace_back(t.substr(0, 64));
        continue;
      }
      const std::string_view name = StringAt(*entry, "name");
      if (!has_tool(name)) {
        return Bad(p + ".name '" + std::string(name).substr(0, 64) + "' is not a function in tools", p + ".name");
      }
      functions.emplace(name);
    }
    if (functions.empty() && mode == "required") {
      if (!built_ins.empty()) return ForcedBuiltIn(built_ins.front());
      return Bad("tool_choice.tools must name at least one tool when mode is \"required\"", "tool_choice.tools");
    }
    // The model sees only the allowed functions.
    std::erase_if(req.chat.tools, [&](const ToolDefinition& t) { return functions.count(t.name) == 0; });
    tc.mode = mode == "required" ? ToolChoice::Mode::kRequired
                                 : (req.chat.tools.empty() ? ToolChoice::Mode::kNone : ToolChoice::Mode::kAuto);
  } else if (type == "custom" || type == "mcp") {
    const std::string_view name = StringAt(o, type == "mcp" ? "server_label" : "name");
    return ForcedBuiltIn(name.empty() ? type : name);
  } else {
    // file_search, web_search_preview, computer_use_preview, image_generation,
    // code_interpreter, apply_patch, shell, ...: a built-in tool.
    return ForcedBuiltIn(type);
  }
  req.chat.tool_choice = std::move(tc);
  return {};
}

// text.format: {type: text} | {type: json_object} | {type: json_schema, name,
// schema, description, strict} (flat, unlike chat's response_format).
Status DecodeTextFormat(const json::object& root, Request& req) {
  const json::value* text = Present(root, "text");
  if (text == nullptr) return {};
  if (!text->is_object()) return Bad("text must be an object", "text");
  const json::value* format_value = Present(text->get_object(), "format");
  if (format_value == nullptr) return {};
  if (!format_value->is_object()) return Bad("text.format must be an object", "text.format");
  const json::object& o = format_value->get_object();
  const std::string_view type = StringAt(o, "type");
  ResponseFormat format;
  if (type == "text") {
    format.type = ResponseFormat::Type::kText;
  } else if (type == "json_object") {
    format.type = ResponseFormat::Type::kJsonObject;
  } else if (type == "json_schema") {
    format.type = ResponseFormat::Type::kJsonSchema;
    const json::value* name = o.if_contains("name");
    if (name == nullptr || !name->is_string() || !IsFunctionName(View(name->get_string()))) {
      return Bad("text.format.name must match ^[a-zA-Z0-9_-]{1,64}$", "text.format.name");
    }
    format.name = std::string(View(name->get_string()));
    std::optional<std::string> description;
    if (auto e = ReadString(o, "description", "text.format.description", description)) return e;
    format.description = description.value_or("");
    const json::value* schema = Present(o, "schema");
    if (schema == nullptr || !schema->is_object()) {
      return Bad("text.format.schema must be a JSON Schema object", "text.format.schema");
    }
    format.schema = *schema;
    if (auto e = ReadBool(o, "strict", "text.format.strict", format.strict)) return e;
  } else {
    return Bad("text.format.type must be one of text, json_object, json_schema", "text.format.type");
  }
  req.chat.response_format = std::move(format);
  return {};
}

Status DecodeReasoning(const json::object& root, Request& req, json::object& echo) {
  json::object reasoning{{"effort", nullptr}, {"summary", nullptr}};
  if (const json::value* v = Present(root, "reasoning")) {
    if (!v->is_object()) return Bad("reasoning must be an object", "reasoning");
    const json::object& o = v->get_object();
    std::optional<std::string> effort, summary, generate_summary;
    if (auto e = ReadString(o, "effort", "reasoning.effort", effort)) return e;
    if (effort && !IsEffort(*effort)) {
      return Bad("reasoning.effort must be one of none, minimal, low, medium, high, xhigh, max", "reasoning.effort");
    }
    auto check_summary = [](const std::optional<std::string>& s, const std::string& param) -> Status {
      if (s && *s != "auto" && *s != "concise" && *s != "detailed") {
        return Bad(param + " must be one of auto, concise, detailed", param);
      }
      return {};
    };
    if (auto e = ReadString(o, "summary", "reasoning.summary", summary)) return e;
    if (auto e = check_summary(summary, "reasoning.summary")) return e;
    // `generate_summary`: the deprecated spelling of `summary`.
    if (auto e = ReadString(o, "generate_summary", "reasoning.generate_summary", generate_summary)) return e;
    if (auto e = check_summary(generate_summary, "reasoning.generate_summary")) return e;
    if (!summary) summary = generate_summary;
    if (effort) {
      ReasoningSettings settings;
      settings.effort = *effort == "max" ? "xhigh" : *effort;
      req.chat.reasoning = std::move(settings);
      reasoning["effort"] = *effort;
    }
    if (summary) {
      req.reasoning_summary = *summary;
      req.chat.reasoning_summary = *summary;
      reasoning["summary"] = *summary;
    }
  }
  echo["reasoning"] = std::move(reasoning);
  return {};
}

Status DecodeInclude(const json::object& root, Request& req) {
  const json::value* include = Present(root, "include");
  if (include == nullptr) return {};
  if (!include->is_array()) return Bad("include must be an array of strings", "include");
  const json::array& list = include->get_array();
  for (std::size_t i = 0; i < list.size(); ++i) {
    if (!list[i].is_string()) return Bad(Item("include", i) + " must be a string", Item("include", i));
    // Other includables (logprobs, search results, image URLs) ask for
    // things Tollgate never produces: nothing to add.
    if (View(list[i].get_string()) == kIncludeEncrypted) req.include_encrypted_reasoning = true;
  }
  return {};
}

// Fields Tollgate cannot serve: background mode, Conversations, stored prompts.
Status RejectUnsupported(const json::object& root) {
  if (const json::value* v = Present(root, "background"); v != nullptr) {
    if (!v->is_bool()) return Bad("background must be a boolean", "background");
    if (v->get_bool()) return Bad("background mode is not supported", "background");
  }
  if (Present(root, "conversation") != nullptr) {
    return Bad("conversation is not supported; use previous_response_id", "conversation");
  }
  if (Present(root, "prompt") != nullptr) return Bad("prompt (stored prompt templates) is not supported", "prompt");
  return {};
}

Status DecodeRest(const json::object& root, Request& req, json::object& echo) {
  ChatRequest& chat = req.chat;
  std::optional<int64_t> max_output_tokens;
  if (auto e = ReadInteger(root, "max_output_tokens", "max_output_tokens", 1, kMaxOutputTokens, max_output_tokens)) {
    return e;
  }
  if (max_output_tokens) {
    chat.max_tokens = max_output_tokens;
    // Like max_completion_tokens, max_output_tokens counts reasoning tokens too.
    chat.max_tokens_field = MaxTokensField::kMaxCompletionTokens;
  }
  echo["max_output_tokens"] = max_output_tokens ? json::value(*max_output_tokens) : json::value(nullptr);
  if (auto e = ReadNumber(root, "temperature", "temperature", 0, 2, false, chat.temperature)) return e;
  if (auto e = ReadNumber(root, "top_p", "top_p", 0, 1, true, chat.top_p)) return e;
  std::optional<int64_t> top_logprobs;
  if (auto e = ReadInteger(root, "top_logprobs", "top_logprobs", 0, kMaxTopLogprobs, top_logprobs)) return e;
  // As the chat completions decoder reads a body with top_logprobs and no
  // `logprobs` (which the Responses API does not have): top_logprobs set,
  // logprobs left false.
  chat.top_logprobs = top_logprobs;
  if (auto e = ReadBool(root, "parallel_tool_calls", "parallel_tool_calls", chat.parallel_tool_calls)) return e;

  std::optional<bool> stream, store;
  if (auto e = ReadBool(root, "stream", "stream", stream)) return e;
  chat.stream = stream.value_or(false);
  if (auto e = ReadBool(root, "store", "store", store)) return e;
  req.store = store.value_or(true);
  if (const json::value* so = Present(root, "stream_options"); so != nullptr && !so->is_object()) {
    return Bad("stream_options must be an object", "stream_options");
  }

  std::optional<std::string> previous;
  if (auto e = ReadString(root, "previous_response_id", "previous_response_id", previous)) return e;
  if (previous && previous->empty()) {
    return Bad("previous_response_id must be a non-empty string", "previous_response_id");
  }
  req.previous_response_id = previous.value_or("");

  std::optional<std::string> user, safety_identifier, cache_key;
  if (auto e = ReadString(root, "user", "user", user)) return e;
  if (auto e = ReadString(root, "safety_identifier", "safety_identifier", safety_identifier)) return e;
  // safety_identifier replaces `user` as the end-user id (API reference).
  chat.user = user ? *user : safety_identifier.value_or("");
  if (const json::value* metadata = Present(root, "metadata")) {
    if (!metadata->is_object()) return Bad("metadata must be an object of strings", "metadata");
    for (const auto& [key, value] : metadata->get_object()) {
      if (!value.is_string()) {
        return Bad("metadata values must be strings", "metadata." + std::string(key.data(), key.size()));
      }
    }
    chat.metadata = metadata->get_object();
  }

  std::optional<std::string> truncation;
  if (auto e = ReadString(root, "truncation", "truncation", truncation)) return e;
  if (truncation && *truncation != "auto" && *truncation != "disabled") {
    return Bad("truncation must be \"auto\" or \"disabled\"", "truncation");
  }

  // OpenRouter's routing fields, as on chat completions; `models` alone names
  // the model.
  if (auto e = DecodeRoutingFields(root, ParamStyle::kOpenAi, true, chat)) return e;
  if (chat.model.empty()) return Bad("you must provide a model parameter", "model");
  // prompt_cache_key: OpenAI's conversation identity for prompt caching, what
  // session_id is to routing (the body's session_id wins).
  if (auto e = ReadString(root, "prompt_cache_key", "prompt_cache_key", cache_key)) return e;
  if (cache_key && chat.session_id.empty()) {
    if (cache_key->size() > kMaxSessionIdBytes) {
      return Bad("prompt_cache_key must be at most " + std::to_string(kMaxSessionIdBytes) + " bytes",
                 "prompt_cache_key");
    }
    chat.session_id = *cache_key;
  }
  if (cache_key) echo["prompt_cache_key"] = *cache_key;

  // The fields the response object repeats, OpenAI's defaults for the rest.
  echo["instructions"] = req.instructions.empty() ? json::value(nullptr) : json::value(req.instructions);
  echo["metadata"] = chat.metadata;
  echo["parallel_tool_calls"] = chat.parallel_tool_calls.value_or(true);
  echo["previous_response_id"] = previous ? json::value(*previous) : json::value(nullptr);
  echo["store"] = req.store;
  echo["temperature"] = chat.temperature.value_or(1.0);
  json::object text{{"format", json::object{{"type", "text"}}}};
  if (const json::value* t = Present(root, "text"); t != nullptr && t->is_object()) {
    for (const auto& [k, v] : t->get_object()) {
      if (!v.is_null()) text[k] = v;
    }
  }
  echo["text"] = std::move(text);
  const json::value* tool_choice = Present(root, "tool_choice");
  echo["tool_choice"] = tool_choice != nullptr ? *tool_choice : json::value("auto");
  const json::value* tools = Present(root, "tools");
  echo["tools"] = tools != nullptr ? *tools : json::value(json::array{});
  echo["top_p"] = chat.top_p.value_or(1.0);
  if (top_logprobs) echo["top_logprobs"] = *top_logprobs;
  echo["truncation"] = truncation.value_or("disabled");
  echo["user"] = user ? json::value(*user) : json::value(nullptr);
  return {};
}

// ---------------------------------------------------------------- responses: shapes

json::object OutputTextPart(std::string_view text) {
  return json::object{{"type", "output_text"}, {"annotations", json::array{}}, {"logprobs", json::array{}},
                      {"text", text}};
}

// OpenAI's `error.code` for a failed response (ResponseError.code lists
// server_error, rate_limit_exceeded, invalid_prompt, ...).
std::string FailureCode(const Error& error) {
  if (!error.code_string.empty()) return error.code_string;
  switch (error.code) {
    case ErrorCode::kResourceExhausted: return "rate_limit_exceeded";
    case ErrorCode::kInvalidArgument: return "invalid_prompt";
    default: return "server_error";
  }
}

}  // namespace

// ---------------------------------------------------------------- public: inbound

Result<Request> DecodeRequest(std::string_view body) {
  Request req;
  req.chat.kind = RequestKind::kChat;
  req.chat.api = ApiFlavor::kOpenAiResponses;
  std::optional<json::value> root_value = ParseJson(body);
  if (!root_value) return Bad("request body is not valid JSON (or is nested deeper than 64 levels)", "");
  if (!root_value->is_object()) return Bad("request body must be a JSON object", "");
  const json::object& root = root_value->get_object();

  if (const json::value* model = Present(root, "model")) {
    if (!model->is_string() || model->get_string().empty()) return Bad("model must be a non-empty string", "model");
    req.chat.model = std::string(View(model->get_string()));
  }
  if (auto e = RejectUnsupported(root)) return *e;

  std::optional<std::string> instructions;
  if (auto e = ReadString(root, "instructions", "instructions", instructions)) return *e;
  req.instructions = instructions.value_or("");

  json::object echo;
  if (auto e = DecodeRest(root, req, echo)) return *e;

  if (const json::value* input = Present(root, "input")) {
    if (input->is_string()) {
      req.input.push_back(json::object{
          {"type", "message"},
          {"role", "user"},
          {"content", json::array{json::object{{"type", "input_text"}, {"text", input->get_string()}}}}});
    } else if (input->is_array()) {
      req.input = input->get_array();
    } else {
      return Bad("input must be a string or an array of input items", "input");
    }
  }
  if (req.input.empty() && req.previous_response_id.empty()) {
    return Bad("you must provide an input parameter", "input");
  }
  if (auto e = BuildMessages(req, nullptr)) return *e;
  // Only a stored response lists its input items; ids cost a CSPRNG read each.
  if (req.store) NormalizeInputItems(req.input);

  if (auto e = DecodeTools(root, req)) return *e;
  if (auto e = DecodeToolChoice(root, req)) return *e;
  if (auto e = DecodeTextFormat(root, req)) return *e;
  if (auto e = DecodeReasoning(root, req, echo)) return *e;
  if (auto e = DecodeInclude(root, req)) return *e;

  // The echo in the order OpenAI's response object lists the fields.
  static constexpr std::array<std::string_view, 17> kOrder = {
      "instructions", "max_output_tokens", "metadata",    "parallel_tool_calls", "previous_response_id",
      "prompt_cache_key", "reasoning",     "store",       "temperature",         "text",
      "tool_choice",  "tools",             "top_logprobs", "top_p",              "truncation",
      "user",         ""};
  for (std::string_view key : kOrder) {
    if (key.empty()) break;
    if (json::value* v = echo.if_contains(key)) req.echo[key] = std::move(*v);
  }
  return req;
}

std::optional<Error> DecodeItems(const json::array& items, std::string_view param, std::vector<Message>& out) {
  ItemDecoder decoder(out);
  if (auto e = decoder.Decode(items, param)) return e;
  decoder.Finish();
  FillToolNames(out);
  return std::nullopt;
}

std::optional<Error> PrependContext(Request& request, const json::array& prior) {
  return BuildMessages(request, &prior);
}

std::string SealReasoning(const std::vector<ReasoningPart>& parts) {
  json::array list;
  for (const ReasoningPart& part : parts) {
    json::object o{{"kind", KindName(part.kind)}};
    if (!part.text.empty()) o["text"] = part.text;
    if (!part.signature.empty()) o["signature"] = part.signature;
    if (!part.data.empty()) o["data"] = part.data;
    if (!part.format.empty()) o["format"] = part.format;
    if (!part.id.empty()) o["id"] = part.id;
    list.push_back(std::move(o));
  }
  return std::string(kSealPrefix) + Base64UrlEncode(json::serialize(list));
}

std::optional<std::vector<ReasoningPart>> UnsealReasoning(std::string_view content) {
  if (content.substr(0, kSealPrefix.size()) != kSealPrefix) return std::nullopt;
  std::optional<std::string> text = Base64UrlDecode(content.substr(kSealPrefix.size()));
  if (!text) return std::nullopt;
  std::optional<json::value> value = ParseJson(*text);
  if (!value || !value->is_array()) return std::nullopt;
  std::vector<ReasoningPart> parts;
  for (const json::value& entry : value->get_array()) {
    const json::object* o = entry.if_object();
    if (o == nullptr) return std::nullopt;
    const std::optional<ReasoningPart::Kind> kind = ParseKind(StringAt(*o, "kind"));
    if (!kind) return std::nullopt;
    ReasoningPart part;
    part.kind = *kind;
    for (auto [key, field] : {std::pair{"text", &part.text}, std::pair{"signature", &part.signature},
                              std::pair{"data", &part.data}, std::pair{"format", &part.format},
                              std::pair{"id", &part.id}}) {
      const json::value* v = o->if_contains(key);
      if (v == nullptr) continue;
      if (!v->is_string()) return std::nullopt;
      *field = std::string(View(v->get_string()));
    }
    parts.push_back(std::move(part));
  }
  return parts;
}

// ---------------------------------------------------------------- public: responses

std::string NewResponseId() { return "resp_" + RandomBase62(32); }

json::object UsageObject(const Usage& usage, Money cost, bool byok) {
  return json::object{
      {"input_tokens", usage.prompt_tokens},
      {"input_tokens_details",
       json::object{{"cached_tokens", usage.cached_tokens}, {"cache_write_tokens", usage.cache_write_tokens}}},
      {"output_tokens", usage.completion_tokens},
      {"output_tokens_details", json::object{{"reasoning_tokens", usage.reasoning_tokens}}},
      {"total_tokens", usage.total_tokens()},
      {"cost", ToUsd(cost)},
      {"is_byok", byok},
  };
}

// ---------------------------------------------------------------- StreamEncoder

// One output item as it is built. Reasoning items keep their canonical parts
// (what the stored view seals); the client sees summary / content entries.
struct OutItem {
  enum class Kind { kReasoning, kMessage, kCall };
  Kind kind = Kind::kMessage;
  std::string id;
  int output_index = -1;  // in the client's view; -1: left out (reasoning not included)
  bool open = true;
  std::string status = "in_progress";
  // kReasoning
  std::vector<ReasoningPart> parts;
  std::vector<int> entry;   // per part: its summary_index / content_index, -1 for encrypted
  int open_part = -1;       // the part whose entry is still streaming
  int summaries = 0;
  int contents = 0;
  bool signature_carrier = false;  // holds a Gemini thought signature of a call
  // kMessage
  std::string text;
  // kCall
  std::string call_id;
  std::string name;
  std::string arguments;
};

struct StreamEncoder::Impl {
  ResponseMeta meta;
  ResponseOptions options;
  int64_t sequence = 0;
  int next_output_index = 0;
  std::vector<OutItem> items;
  std::map<int, std::pair<std::size_t, std::size_t>> blocks;  // canonical reasoning index -> (item, part)
  std::map<int, std::size_t> calls;                           // canonical call index -> item
  std::optional<FinishReason> finish;
  bool started = false;
  bool ended = false;
  std::string out;

  bool Visible(const OutItem& item) const { return item.output_index >= 0; }

  void Emit(std::string_view type, json::object fields) {
    json::object event{{"type", type}};
    for (auto& [k, v] : fields) event[k] = std::move(v);
    event["sequence_number"] = sequence++;
    out += SseFrame(json::serialize(event), type);
  }

  // ---- item shapes

  // How a reasoning part shows in an item: a summary entry (summary_text,
  // reasoning_summary_* events), a content entry (reasoning_text), or not
  // at all (encrypted data). Another provider's visible reasoning is a
  // summary when the caller asked for summaries (reasoning.summary): what
  // clients such as Codex display.
  enum class Shown { kSummary, kContent, kNone };
  Shown ShownAs(const ReasoningPart& p) const {
    if (p.kind == ReasoningPart::Kind::kSummary) return Shown::kSummary;
    if (p.kind != ReasoningPart::Kind::kText) return Shown::kNone;
    return options.reasoning_text_as_summary && p.format != kOpenAiFormat ? Shown::kSummary : Shown::kContent;
  }

  static std::string EncryptedContent(const std::vector<ReasoningPart>& parts) {
    const bool all_openai = std::all_of(parts.begin(), parts.end(),
                                        [](const ReasoningPart& p) { return p.format == kOpenAiFormat; });
    if (!all_openai) return SealReasoning(parts);
    for (const ReasoningPart& p : parts) {
      if (p.kind == ReasoningPart::Kind::kEncrypted && !p.data.empty()) return p.data;
    }
    return {};
  }

  json::object ItemJson(const OutItem& item, bool stored) const {
    switch (item.kind) {
      case OutItem::Kind::kReasoning: {
        json::array summary, content;
        for (const ReasoningPart& p : item.parts) {
          if (ShownAs(p) == Shown::kSummary) {
            summary.push_back(json::object{{"type", "summary_text"}, {"text", p.text}});
          } else if (ShownAs(p) == Shown::kContent) {
            content.push_back(json::object{{"type", "reasoning_text"}, {"text", p.text}});
          }
        }
        json::object o{{"id", item.id}, {"type", "reasoning"}, {"summary", std::move(summary)}};
        if (!content.empty()) o["content"] = std::move(content);
        if (stored || options.include_encrypted_reasoning) {
          std::string encrypted = item.open ? std::string() : EncryptedContent(item.parts);
          if (!encrypted.empty()) o["encrypted_content"] = std::move(encrypted);
        }
        o["status"] = item.status;
        return o;
      }
      case OutItem::Kind::kMessage: {
        json::array content;
        if (!item.open) content.push_back(OutputTextPart(item.text));
        return json::object{{"id", item.id},         {"type", "message"},   {"status", item.status},
                            {"role", "assistant"},   {"content", std::move(content)}};
      }
      case OutItem::Kind::kCall:
        return json::object{{"id", item.id},
                            {"type", "function_call"},
                            {"status", item.status},
                            {"arguments", item.open ? std::string() : item.arguments},
                            {"call_id", item.call_id},
                            {"name", item.name}};
    }
    return {};
  }

  // ---- opening and closing

  void Start() {
    if (started) return;
    started = true;
    json::object response = ResponseJson("in_progress", json::array{}, "", nullptr, nullptr, nullptr);
    Emit("response.created", json::object{{"response", response}});
    Emit("response.in_progress", json::object{{"response", std::move(response)}});
  }

  std::size_t OpenItem(OutItem::Kind kind, std::string id, std::string call_id = {}, std::string name = {}) {
    OutItem item;
    item.kind = kind;
    item.id = std::move(id);
    item.call_id = std::move(call_id);
    item.name = std::move(name);
    if (kind != OutItem::Kind::kReasoning || options.include_reasoning) item.output_index = next_output_index++;
    items.push_back(std::move(item));
    const std::size_t i = items.size() - 1;
    if (Visible(items[i])) {
      Emit("response.output_item.added",
           json::object{{"output_index", items[i].output_index}, {"item", ItemJson(items[i], false)}});
    }
    return i;
  }

  void CloseEntry(OutItem& item) {
    if (item.open_part < 0) return;
    const ReasoningPart& part = item.parts[static_cast<std::size_t>(item.open_part)];
    const int entry = item.entry[static_cast<std::size_t>(item.open_part)];
    item.open_part = -1;
    if (!Visible(item)) return;
    if (ShownAs(part) == Shown::kSummary) {
      Emit("response.reasoning_summary_text.done",
           json::object{{"item_id", item.id}, {"output_index", item.output_index}, {"summary_index", entry},
                        {"text", part.text}});
      Emit("response.reasoning_summary_part.done",
           json::object{{"item_id", item.id}, {"output_index", item.output_index}, {"summary_index", entry},
                        {"part", json::object{{"type", "summary_text"}, {"text", part.text}}}});
    } else if (ShownAs(part) == Shown::kContent) {
      Emit("response.reasoning_text.done",
           json::object{{"item_id", item.id}, {"output_index", item.output_index}, {"content_index", entry},
                        {"text", part.text}});
      Emit("response.content_part.done",
           json::object{{"item_id", item.id}, {"output_index", item.output_index}, {"content_index", entry},
                        {"part", json::object{{"type", "reasoning_text"}, {"text", part.text}}}});
    }
  }

  void CloseItem(OutItem& item, std::string_view status) {
    if (!item.open) return;
    if (item.kind == OutItem::Kind::kReasoning) CloseEntry(item);
    if (Visible(item)) {
      if (item.kind == OutItem::Kind::kMessage) {
        Emit("response.output_text.done",
             json::object{{"item_id", item.id}, {"output_index", item.output_index}, {"content_index", 0},
                          {"text", item.text}, {"logprobs", json::array{}}});
        Emit("response.content_part.done",
             json::object{{"item_id", item.id}, {"output_index", item.output_index}, {"content_index", 0},
                          {"part", OutputTextPart(item.text)}});
      } else if (item.kind == OutItem::Kind::kCall) {
        if (item.arguments.empty()) item.arguments = "{}";
        Emit("response.function_call_arguments.done",
             json::object{{"item_id", item.id}, {"output_index", item.output_index}, {"name", item.name},
                          {"arguments", item.arguments}});
      }
    }
    if (item.kind == OutItem::Kind::kCall && item.arguments.empty()) item.arguments = "{}";
    item.open = false;
    item.status = std::string(status);
    if (Visible(item)) {
      Emit("response.output_item.done",
           json::object{{"output_index", item.output_index}, {"item", ItemJson(item, false)}});
    }
  }

  // Closes the open items; function calls stay open when `keep_calls` (the
  // calls of one turn stream together, so that a fragment of any of them
  // still has an open item to go to).
  void CloseOpen(bool keep_calls, std::string_view status = "completed") {
    for (OutItem& item : items) {
      if (!item.open || (keep_calls && item.kind == OutItem::Kind::kCall)) continue;
      CloseItem(item, status);
    }
  }

  // ---- events

  void OnText(const TextDelta& e) {
    if (e.text.empty()) return;
    OutItem* message = nullptr;
    if (!items.empty() && items.back().open && items.back().kind == OutItem::Kind::kMessage) {
      message = &items.back();
    } else {
      CloseOpen(false);
      const std::size_t i = OpenItem(OutItem::Kind::kMessage, "msg_" + RandomBase62(32));
      message = &items[i];
      Emit("response.content_part.added",
           json::object{{"item_id", message->id}, {"output_index", message->output_index}, {"content_index", 0},
                        {"part", OutputTextPart("")}});
    }
    message->text += e.text;
    Emit("response.output_text.delta",
         json::object{{"item_id", message->id}, {"output_index", message->output_index}, {"content_index", 0},
                      {"delta", e.text}, {"logprobs", json::array{}}});
  }

  // Starts `part`'s summary / content entry in `item` (events included).
  void OpenEntry(OutItem& item, std::size_t part_index) {
    const ReasoningPart& part = item.parts[part_index];
    int entry = -1;
    if (ShownAs(part) == Shown::kSummary) entry = item.summaries++;
    if (ShownAs(part) == Shown::kContent) entry = item.contents++;
    item.entry.push_back(entry);
    if (entry < 0) return;
    item.open_part = static_cast<int>(part_index);
    if (!Visible(item)) return;
    if (ShownAs(part) == Shown::kSummary) {
      Emit("response.reasoning_summary_part.added",
           json::object{{"item_id", item.id}, {"output_index", item.output_index}, {"summary_index", entry},
                        {"part", json::object{{"type", "summary_text"}, {"text", ""}}}});
    } else {
      Emit("response.content_part.added",
           json::object{{"item_id", item.id}, {"output_index", item.output_index}, {"content_index", entry},
                        {"part", json::object{{"type", "reasoning_text"}, {"text", ""}}}});
    }
  }

  void EmitReasoningText(const OutItem& item, const ReasoningPart& part, int entry, std::string_view text) {
    if (!Visible(item) || text.empty()) return;
    if (ShownAs(part) == Shown::kSummary) {
      Emit("response.reasoning_summary_text.delta",
           json::object{{"item_id", item.id}, {"output_index", item.output_index}, {"summary_index", entry},
                        {"delta", text}});
    } else if (ShownAs(part) == Shown::kContent) {
      Emit("response.reasoning_text.delta",
           json::object{{"item_id", item.id}, {"output_index", item.output_index}, {"content_index", entry},
                        {"delta", text}});
    }
  }

  void OnReasoning(const ReasoningDelta& e) {
    if (e.index < 0) return;
    if (auto known = blocks.find(e.index); known != blocks.end()) {
      OutItem& item = items[known->second.first];
      const std::size_t pi = known->second.second;
      ReasoningPart& part = item.parts[pi];
      part.text += e.text;
      if (!e.signature.empty()) part.signature = e.signature;
      part.data += e.data;
      if (!e.format.empty()) part.format = e.format;
      if (!e.id.empty()) part.id = e.id;
      // A fragment of an entry that already closed (blocks interleaved) is
      // kept for the final item but cannot be streamed any more.
      if (item.open && item.open_part == static_cast<int>(pi)) EmitReasoningText(item, part, item.entry[pi], e.text);
      return;
    }
    ReasoningPart part{e.kind, e.text, e.signature, e.data, e.format, e.id};
    // A block continues the open reasoning item when it is the same item:
    // same format, and the same id when both have one (OpenAI's summary
    // parts and encrypted content of one item; Anthropic's thinking blocks
    // in a row).
    std::size_t ii = items.size();
    if (!items.empty()) {
      const OutItem& last = items.back();
      if (last.open && last.kind == OutItem::Kind::kReasoning && !last.signature_carrier) {
        const ReasoningPart& first = last.parts.front();
        std::string last_id;
        for (const ReasoningPart& p : last.parts) {
          if (!p.id.empty()) last_id = p.id;
        }
        if (first.format == part.format && (last_id.empty() || part.id.empty() || last_id == part.id)) {
          ii = items.size() - 1;
        }
      }
    }
    if (ii == items.size()) {
      CloseOpen(false);
      ii = OpenItem(OutItem::Kind::kReasoning, part.id.empty() ? "rs_" + RandomBase62(32) : part.id);
    } else {
      CloseEntry(items[ii]);
    }
    OutItem& item = items[ii];
    item.parts.push_back(std::move(part));
    const std::size_t pi = item.parts.size() - 1;
    blocks[e.index] = {ii, pi};
    OpenEntry(item, pi);
    EmitReasoningText(item, item.parts[pi], item.entry[pi], e.text);
  }

  // A Gemini thought signature of call `call_id`: a reasoning item of its
  // own, so that a stateless client hands it back (DecodeItems puts it back
  // on the call). `call_id` by value: callers pass an item's own call_id,
  // and OpenItem below may reallocate `items`.
  void CarrySignature(std::string call_id, const std::string& signature) {
    const std::size_t i = OpenItem(OutItem::Kind::kReasoning, "rs_" + RandomBase62(32));
    OutItem& item = items[i];
    item.signature_carrier = true;
    item.parts.push_back(ReasoningPart{ReasoningPart::Kind::kEncrypted, {}, {}, signature,
                                       std::string(kGeminiFormat), std::move(call_id)});
    item.entry.push_back(-1);
    CloseItem(item, "completed");
  }

  void OnToolCall(const ToolCallDelta& e) {
    if (e.index < 0) return;
    auto known = calls.find(e.index);
    if (known == calls.end()) {
      CloseOpen(true);
      const std::string call_id = e.id.empty() ? NewToolCallId() : e.id;
      if (!e.thought_signature.empty()) CarrySignature(call_id, e.thought_signature);
      known = calls.emplace(e.index, OpenItem(OutItem::Kind::kCall, "fc_" + RandomBase62(32), call_id, e.name)).first;
    } else if (!e.thought_signature.empty()) {
      // A copy: a reference into `items` would dangle once OpenItem grows it.
      std::string call_id = items[known->second].call_id;
      CarrySignature(std::move(call_id), e.thought_signature);
    }
    OutItem& item = items[known->second];
    if (item.name.empty() && !e.name.empty()) item.name = e.name;
    if (e.arguments.empty()) return;
    item.arguments += e.arguments;
    if (item.open && Visible(item)) {
      Emit("response.function_call_arguments.delta",
           json::object{{"item_id", item.id}, {"output_index", item.output_index}, {"delta", e.arguments}});
    }
  }

  // ---- the response object

  json::object ResponseJson(std::string_view status, json::array output, std::string_view output_text,
                            json::value error, json::value incomplete, json::value usage) const {
    json::object r{{"id", meta.id},
                   {"object", "response"},
                   {"created_at", meta.created},
                   {"status", status},
                   {"background", false},
                   {"completed_at", nullptr},  // Finish sets it
                   {"error", std::move(error)},
                   {"incomplete_details", std::move(incomplete)}};
    // An echoed request field, or OpenAI's default when the echo lacks it.
    auto echoed = [&](std::string_view key, json::value fallback) {
      const json::value* v = options.echo.if_contains(key);
      r[key] = v != nullptr ? *v : std::move(fallback);
    };
    echoed("instructions", nullptr);
    echoed("max_output_tokens", nullptr);
    r["model"] = meta.model;
    r["output"] = std::move(output);
    r["output_text"] = output_text;
    echoed("parallel_tool_calls", true);
    // OpenRouter's response object (@openrouter/sdk OpenResponsesResult)
    // requires the penalties, which the Responses API has no request field for.
    r["frequency_penalty"] = 0.0;
    r["presence_penalty"] = 0.0;
    echoed("previous_response_id", nullptr);
    echoed("reasoning", json::object{{"effort", nullptr}, {"summary", nullptr}});
    echoed("store", true);
    echoed("temperature", 1.0);
    echoed("text", json::object{{"format", json::object{{"type", "text"}}}});
    echoed("tool_choice", "auto");
    echoed("tools", json::array{});
    echoed("top_p", 1.0);
    echoed("truncation", "disabled");
    r["usage"] = std::move(usage);
    echoed("user", nullptr);
    json::object metadata;
    if (const json::value* m = options.echo.if_contains("metadata"); m != nullptr && m->is_object()) {
      metadata = m->get_object();
    }
    if (!options.dropped_tools.empty()) {
      std::string list;
      for (const std::string& t : options.dropped_tools) list += (list.empty() ? "" : ",") + t;
      metadata[kDroppedToolsKey] = list;
    }
    r["metadata"] = std::move(metadata);
    // Echoed fields without a default (top_logprobs).
    for (const auto& [key, value] : options.echo) {
      if (!r.contains(key)) r[key] = value;
    }
    r["provider"] = meta.provider;
    return r;
  }

  // The client view and the stored output of the items so far.
  std::pair<json::array, std::string> ClientOutput() const {
    json::array output;
    std::string text;
    for (const OutItem& item : items) {
      if (!Visible(item)) continue;
      output.push_back(ItemJson(item, false));
      if (item.kind == OutItem::Kind::kMessage) text += item.text;
    }
    return {std::move(output), std::move(text)};
  }

  json::array StoredOutput() const {
    json::array output;
    for (const OutItem& item : items) output.push_back(ItemJson(item, true));
    return output;
  }
};

StreamEncoder::StreamEncoder(ResponseMeta meta, ResponseOptions options) : impl_(std::make_unique<Impl>()) {
  impl_->meta = std::move(meta);
  impl_->options = std::move(options);
}

StreamEncoder::~StreamEncoder() = default;
StreamEncoder::StreamEncoder(StreamEncoder&&) noexcept = default;
StreamEncoder& StreamEncoder::operator=(StreamEncoder&&) noexcept = default;

std::string StreamEncoder::Encode(const StreamEvent& event) {
  Impl& s = *impl_;
  if (s.ended) return {};
  s.out.clear();
  s.Start();
  std::visit(
      [&](const auto& e) {
        using T = std::decay_t<decltype(e)>;
        if constexpr (std::is_same_v<T, UsageDelta>) {
          // The billed usage goes out in Finish.
        } else {
          if (e.choice != 0) return;
          if constexpr (std::is_same_v<T, TextDelta>) {
            s.OnText(e);
          } else if constexpr (std::is_same_v<T, ReasoningDelta>) {
            s.OnReasoning(e);
          } else if constexpr (std::is_same_v<T, ToolCallDelta>) {
            s.OnToolCall(e);
          } else if constexpr (std::is_same_v<T, FinishDelta>) {
            if (!s.finish) s.finish = e.reason;
          }
        }
      },
      event);
  started_ = s.started;
  return std::move(s.out);
}

std::string StreamEncoder::Finish(const Usage& usage, Money cost, bool byok, int64_t completed_at) {
  Impl& s = *impl_;
  if (s.ended) return {};
  s.out.clear();
  s.Start();
  std::string status = "completed";
  json::value incomplete = nullptr;
  if (s.finish == FinishReason::kLength || s.finish == FinishReason::kContentFilter) {
    status = "incomplete";
    incomplete = json::object{
        {"reason", s.finish == FinishReason::kLength ? "max_output_tokens" : "content_filter"}};
  }
  s.CloseOpen(false, status == "incomplete" ? "incomplete" : "completed");
  auto [output, text] = s.ClientOutput();
  json::object response =
      s.ResponseJson(status, std::move(output), text, nullptr, std::move(incomplete), UsageObject(usage, cost, byok));
  if (status == "completed" && completed_at > 0) response["completed_at"] = completed_at;
  result_.client = response;
  result_.stored_output = s.StoredOutput();
  s.Emit(status == "completed" ? "response.completed" : "response.incomplete",
         json::object{{"response", std::move(response)}});
  s.ended = true;
  started_ = true;
  return std::move(s.out);
}

std::string StreamEncoder::Fail(const Error& error) {
  Impl& s = *impl_;
  if (s.ended) return {};
  s.out.clear();
  s.Start();
  const std::string code = FailureCode(error);
  s.Emit("error", json::object{{"code", code},
                               {"message", error.message},
                               {"param", error.param.empty() ? json::value(nullptr) : json::value(error.param)}});
  // Items cut short stay as they were, marked incomplete; no done events
  // follow a failure.
  for (OutItem& item : s.items) {
    if (!item.open) continue;
    item.open = false;
    item.status = "incomplete";
  }
  auto [output, text] = s.ClientOutput();
  json::object response = s.ResponseJson("failed", std::move(output), text,
                                         json::object{{"code", code}, {"message", error.message}}, nullptr, nullptr);
  result_.client = response;
  result_.stored_output = s.StoredOutput();
  s.Emit("response.failed", json::object{{"response", std::move(response)}});
  s.ended = true;
  started_ = true;
  return std::move(s.out);
}

BuiltResponse BuildResponse(const ResponseMeta& meta, const ResponseOptions& options, const ChatResponse& response,
                            const Usage& usage, Money cost, bool byok, int64_t completed_at) {
  // The stream encoder over the answer's events: one code path for both
  // shapes, so a streamed and a whole answer carry the same items.
  StreamEncoder encoder(meta, options);
  for (const StreamEvent& event : ResponseEvents(response)) encoder.Encode(event);
  encoder.Finish(usage, cost, byok, completed_at);
  return encoder.result();
}

}  // namespace tollgate::wire::responses
