// OpenAI Chat Completions and legacy Completions <-> canonical. The contract
// and its sources are in openai.hpp; the notes here say why, and cite the
// page behind each provider quirk.
#include "tollgate/wire/openai.hpp"

#include "json_util.hpp"

#include <boost/json/array.hpp>
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <boost/json/string.hpp>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <limits>
#include <optional>
#include <utility>
#include <variant>

namespace tollgate::wire::openai {
namespace json = boost::json;
using detail::ArrayAt;
using detail::AsInteger;
using detail::Bad;
using detail::BadRequest;
using detail::BadUpstream;
using detail::Item;
using detail::Num;
using detail::ObjectAt;
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

// Output-token limit accepted from callers (max_tokens, max_completion_tokens,
// reasoning.max_tokens): 2^24, far above any model's output window.
constexpr int64_t kMaxOutputTokens = int64_t{1} << 24;
// OpenAI API reference, "Create chat completion": `stop` takes up to 4
// sequences, `n` 1..128, `top_logprobs` 0..20; "Create completion": integer
// `logprobs` up to 5.
constexpr std::size_t kMaxStopSequences = 4;
constexpr int64_t kMaxChoices = 128;
constexpr int64_t kMaxTopLogprobs = 20;
constexpr int64_t kMaxCompletionLogprobs = 5;
// Upstream text passed on in an error message is capped at this many bytes.
constexpr std::size_t kMaxUpstreamMessageBytes = 2000;

// OpenRouter's `reasoning_details[].format` (openrouter.ai/docs/guides/
// best-practices/reasoning-tokens, "reasoning_details Array Structure"; the
// same enum in @openrouter/sdk's schema: unknown, openai-responses-v1,
// xai-responses-v1, anthropic-claude-v1, google-gemini-v1).
constexpr std::string_view kUnknownFormat = "unknown";
constexpr std::string_view kGeminiFormat = kReasoningFormatGemini;

// A Gemini thought signature that belongs to a function call
// (ai.google.dev/gemini-api/docs/thought-signatures) travels in OpenAI shape as
// a `reasoning.encrypted` entry of `reasoning_details` with format
// google-gemini-v1 and the tool call's id as its `id`: that is how
// OpenRouter-speaking clients keep it attached to its call (e.g. the
// earendil-works/pi PR #260, "preserve Gemini thought signatures for tool
// calls"). Both directions of this codec use that shape, so a signature
// survives a round trip through a caller.

// Reasoning effort values: OpenRouter's `reasoning.effort` and OpenAI's
// `reasoning_effort` ("xhigh", "high", "medium", "low", "minimal", "none").
bool IsEffort(std::string_view effort) {
  return effort == "xhigh" || effort == "high" || effort == "medium" || effort == "low" ||
         effort == "minimal" || effort == "none";
}

// OpenAI function and json_schema names: a-z, A-Z, 0-9, underscores and
// dashes, at most 64 characters (API reference, `tools[].function.name`,
// `response_format.json_schema.name`).
bool IsFunctionName(std::string_view name) {
  if (name.empty() || name.size() > 64) return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '-';
  });
}

// ---------------------------------------------------------------- small helpers

std::string Field(std::string_view base, std::string_view key) {
  std::string out(base);
  if (!out.empty()) out += '.';
  out += key;
  return out;
}

std::string_view Trim(std::string_view s) {
  constexpr std::string_view kSpace = " \t\r\n";
  const auto first = s.find_first_not_of(kSpace);
  if (first == std::string_view::npos) return {};
  return s.substr(first, s.find_last_not_of(kSpace) - first + 1);
}

// OpenAI `logit_bias`: an object of token ids (decimal strings) to biases in
// [-100, 100] (API reference, chat/create). At most kMaxLogitBias entries.
constexpr std::size_t kMaxLogitBias = 1024;
Status ReadLogitBias(const json::object& o, std::vector<std::pair<int64_t, double>>& out) {
  const json::value* v = Present(o, "logit_bias");
  if (v == nullptr) return {};
  if (!v->is_object()) return Bad("logit_bias must be an object of token ids to biases", "logit_bias");
  if (v->get_object().size() > kMaxLogitBias) {
    return Bad("logit_bias may hold at most " + std::to_string(kMaxLogitBias) + " tokens", "logit_bias");
  }
  for (const auto& kv : v->get_object()) {
    const std::string_view key = kv.key();
    int64_t token = -1;
    auto [end, ec] = std::from_chars(key.data(), key.data() + key.size(), token);
    const std::string shown(key.substr(0, 24));
    if (ec != std::errc() || end != key.data() + key.size() || token < 0 || token > INT32_MAX) {
      return Bad("logit_bias keys must be token ids (non-negative integers), got '" + shown + "'", "logit_bias");
    }
    if (!kv.value().is_number()) return Bad("logit_bias['" + shown + "'] must be a number", "logit_bias");
    const double bias = kv.value().to_number<double>();
    if (!std::isfinite(bias) || bias < -100 || bias > 100) {
      return Bad("logit_bias['" + shown + "'] must be between -100 and 100", "logit_bias");
    }
    out.emplace_back(token, bias);
  }
  return {};
}

// ---------------------------------------------------------------- inbound: content

using InputPart = std::variant<TextPart, ImagePart>;

// Which part types a role's content may hold (OpenAI API reference,
// "Create chat completion" > messages: system and developer messages take text
// parts; user messages text and image_url (input_audio and file are not
// supported here); assistant messages text and refusal; tool messages text,
// and images, which Anthropic-shaped tool results carry and the canonical
// model keeps).
struct PartRules {
  std::string_view role;
  bool images = false;
  bool refusal = false;
};

Status ReadCacheControl(const json::object& part, const std::string& param, CacheControl& out) {
  const json::value* v = Present(part, "cache_control");
  if (v == nullptr) return {};
  if (!v->is_object()) return Bad(param + ".cache_control must be an object", param + ".cache_control");
  out = v->get_object();
  return {};
}

Status DecodeImagePart(const json::object& part, const std::string& param, ImagePart& out) {
  const std::string p = param + ".image_url";
  const json::value* image = Present(part, "image_url");
  if (image != nullptr && image->is_string()) {  // a bare URL string, as some clients send it
    out.url = std::string(View(image->get_string()));
  } else if (image != nullptr && image->is_object()) {
    const json::value* url = Present(image->get_object(), "url");
    if (url == nullptr || !url->is_string()) return Bad(p + ".url must be a string", p + ".url");
    out.url = std::string(View(url->get_string()));
    std::optional<std::string> detail;
    if (auto e = ReadString(image->get_object(), "detail", p + ".detail", detail)) return e;
    out.detail = detail.value_or("");
  } else {
    return Bad(p + " must be an object with a url", p);
  }
  if (out.url.empty()) return Bad(p + ".url must not be empty", p + ".url");
  return ReadCacheControl(part, param, out.cache_control);
}

// `content`: a string (one text part) or an array of typed parts.
Status DecodeParts(const json::value& content, const std::string& param, const PartRules& rules,
                   std::vector<InputPart>& out) {
  if (content.is_string()) {
    out.emplace_back(TextPart{std::string(View(content.get_string())), {}});
    return {};
  }
  if (!content.is_array()) return Bad(param + " must be a string or an array of content parts", param);
  const json::array& parts = content.get_array();
  for (std::size_t j = 0; j < parts.size(); ++j) {
    const std::string p = Item(param, j);
    const json::object* part = parts[j].if_object();
    if (part == nullptr) return Bad(p + " must be an object", p);
    const json::value* type = part->if_contains("type");
    if (type == nullptr || !type->is_string()) return Bad(p + ".type must be a string", p + ".type");
    const std::string_view t = View(type->get_string());
    if (t == "text" || (rules.refusal && t == "refusal")) {
      // An assistant's refusal part is what the model said: kept as text.
      const std::string key(t == "text" ? "text" : "refusal");
      const json::value* text = part->if_contains(key);
      if (text == nullptr || !text->is_string()) return Bad(Field(p, key) + " must be a string", Field(p, key));
      TextPart text_part{std::string(View(text->get_string())), {}};
      if (auto e = ReadCacheControl(*part, p, text_part.cache_control)) return e;
      out.emplace_back(std::move(text_part));
    } else if (rules.images && t == "image_url") {
      ImagePart image;
      if (auto e = DecodeImagePart(*part, p, image)) return e;
      out.emplace_back(std::move(image));
    } else {
      std::string supported = "text";
      if (rules.images) supported += ", image_url";
      if (rules.refusal) supported += ", refusal";
      return Bad(p + ".type '" + std::string(t) + "' is not supported in " + std::string(rules.role) +
                     " messages (supported: " + supported + ")",
                 p + ".type");
    }
  }
  return {};
}

// ---------------------------------------------------------------- inbound: assistant turns

Status DecodeToolCalls(const json::array& calls, const std::string& param, std::vector<ToolCallPart>& out) {
  for (std::size_t k = 0; k < calls.size(); ++k) {
    const std::string p = Item(param, k);
    const json::object* call = calls[k].if_object();
    if (call == nullptr) return Bad(p + " must be an object", p);
    const json::value* id = call->if_contains("id");
    if (id == nullptr || !id->is_string() || id->get_string().empty()) {
      return Bad(p + ".id must be a non-empty string", p + ".id");
    }
    if (const json::value* type = Present(*call, "type"); type != nullptr &&
                                                          (!type->is_string() || type->get_string() != "function")) {
      return Bad(p + ".type must be \"function\"", p + ".type");
    }
    const json::object* function = ObjectAt(*call, "function");
    if (function == nullptr) return Bad(p + ".function must be an object", p + ".function");
    const json::value* name = function->if_contains("name");
    if (name == nullptr || !name->is_string() || name->get_string().empty()) {
      return Bad(p + ".function.name must be a non-empty string", p + ".function.name");
    }
    ToolCallPart part;
    part.id = std::string(View(id->get_string()));
    part.name = std::string(View(name->get_string()));
    // `arguments` is a JSON string (API reference); a client that sent the
    // object itself gets it serialized rather than a 400.
    if (const json::value* args = Present(*function, "arguments")) {
      if (args->is_string()) {
        part.arguments = std::string(View(args->get_string()));
      } else if (args->is_object()) {
        part.arguments = json::serialize(*args);
      } else {
        return Bad(p + ".function.arguments must be a string", p + ".function.arguments");
      }
    }
    if (part.arguments.empty()) part.arguments = "{}";
    out.push_back(std::move(part));
  }
  return {};
}

// OpenRouter `reasoning_details` replayed on an assistant message. Entries keep
// their order (the docs require the sequence unmodified). Consecutive entries
// with the same explicit `index` and type are one block sent in fragments
// (clients that stored streamed details one entry per chunk), merged the way
// ResponseAccumulator merges ReasoningDelta fragments.
Status DecodeReasoningDetails(const json::array& details, const std::string& param,
                              std::vector<ToolCallPart>& calls, std::vector<ReasoningPart>& out) {
  std::optional<int64_t> last_index;
  for (std::size_t k = 0; k < details.size(); ++k) {
    const std::string p = Item(param, k);
    const json::object* entry = details[k].if_object();
    if (entry == nullptr) return Bad(p + " must be an object", p);
    const std::string_view type = StringAt(*entry, "type");
    ReasoningPart part;
    std::optional<std::string> text;
    if (type == "reasoning.text") {
      part.kind = ReasoningPart::Kind::kText;
      if (auto e = ReadString(*entry, "text", p + ".text", text)) return e;
      std::optional<std::string> signature;
      if (auto e = ReadString(*entry, "signature", p + ".signature", signature)) return e;
      part.signature = signature.value_or("");
    } else if (type == "reasoning.summary") {
      part.kind = ReasoningPart::Kind::kSummary;
      if (auto e = ReadString(*entry, "summary", p + ".summary", text)) return e;
      if (!text) return Bad(p + ".summary must be a string", p + ".summary");
    } else if (type == "reasoning.encrypted") {
      part.kind = ReasoningPart::Kind::kEncrypted;
      std::optional<std::string> data;
      if (auto e = ReadString(*entry, "data", p + ".data", data)) return e;
      if (!data) return Bad(p + ".data must be a string", p + ".data");
      part.data = std::move(*data);
    } else {
      return Bad(p + ".type must be one of reasoning.text, reasoning.summary, reasoning.encrypted",
                 p + ".type");
    }
    part.text = text.value_or("");
    std::optional<std::string> format, id;
    if (auto e = ReadString(*entry, "format", p + ".format", format)) return e;
    if (auto e = ReadString(*entry, "id", p + ".id", id)) return e;
    part.format = format.value_or("");
    part.id = id.value_or("");
    std::optional<int64_t> index;
    if (auto e = ReadInteger(*entry, "index", p + ".index", 0, std::numeric_limits<int64_t>::max(), index)) {
      return e;
    }

    if (part.kind == ReasoningPart::Kind::kEncrypted && part.format == kGeminiFormat && !part.id.empty()) {
      auto call = std::find_if(calls.begin(), calls.end(), [&](const ToolCallPart& c) { return c.id == part.id; });
      if (call != calls.end()) {
        call->thought_signature = part.data;
        continue;
      }
    }
    if (index && last_index == index && !out.empty() && out.back().kind == part.kind) {
      ReasoningPart& block = out.back();
      block.text += part.text;
      block.data += part.data;
      if (!part.signature.empty()) block.signature = part.signature;
      if (!part.format.empty()) block.format = part.format;
      if (!part.id.empty()) block.id = part.id;
      continue;
    }
    last_index = index;
    out.push_back(std::move(part));
  }
  return {};
}

// What the decoder remembers across messages.
struct MessageContext {
  std::map<std::string, std::string> tool_names;  // tool call id -> function name
  std::string last_function_call_id;              // the latest legacy `function_call`
};

// An assistant message: reasoning, then text, then tool calls (the order in
// which models produce them).
Status DecodeAssistant(const json::object& m, const std::string& param, std::size_t index,
                       MessageContext& ctx, Message& out) {
  std::vector<InputPart> content;
  if (const json::value* c = Present(m, "content")) {
    if (auto e = DecodeParts(*c, param + ".content", PartRules{"assistant", false, true}, content)) return e;
  }
  // A top-level `refusal` string (what OpenAI's own answers carry) is text.
  std::optional<std::string> refusal;
  if (auto e = ReadString(m, "refusal", param + ".refusal", refusal)) return e;

  std::vector<ToolCallPart> calls;
  if (const json::value* tc = Present(m, "tool_calls")) {
    if (!tc->is_array()) return Bad(param + ".tool_calls must be an array", param + ".tool_calls");
    if (auto e = DecodeToolCalls(tc->get_array(), param + ".tool_calls", calls)) return e;
  }
  if (const json::value* fc = Present(m, "function_call")) {  // deprecated single call
    const std::string p = param + ".function_call";
    if (!fc->is_object()) return Bad(p + " must be an object", p);
    const json::value* name = fc->get_object().if_contains("name");
    if (name == nullptr || !name->is_string() || name->get_string().empty()) {
      return Bad(p + ".name must be a non-empty string", p + ".name");
    }
    ToolCallPart call;
    // The legacy shape has no id; a stable one lets the `function` message
    // that answers it refer to it.
    call.id = "call_legacy_" + std::to_string(index);
    call.name = std::string(View(name->get_string()));
    if (const json::value* args = Present(fc->get_object(), "arguments")) {
      if (!args->is_string()) return Bad(p + ".arguments must be a string", p + ".arguments");
      call.arguments = std::string(View(args->get_string()));
    }
    if (call.arguments.empty()) call.arguments = "{}";
    ctx.last_function_call_id = call.id;
    calls.push_back(std::move(call));
  }

  std::vector<ReasoningPart> reasoning;
  if (const json::value* details = Present(m, "reasoning_details")) {
    if (!details->is_array()) return Bad(param + ".reasoning_details must be an array", param + ".reasoning_details");
    if (auto e = DecodeReasoningDetails(details->get_array(), param + ".reasoning_details", calls, reasoning)) {
      return e;
    }
  }
  std::optional<std::string> plain, plain_content;
  if (auto e = ReadString(m, "reasoning", param + ".reasoning", plain)) return e;
  if (auto e = ReadString(m, "reasoning_content", param + ".reasoning_content", plain_content)) return e;
  // `reasoning` / `reasoning_content` (OpenRouter's text field, DeepSeek's)
  // repeat what reasoning_details hold; they count only without them.
  if (reasoning.empty()) {
    std::string text = plain && !plain->empty() ? *plain : plain_content.value_or("");
    if (!text.empty()) reasoning.push_back(ReasoningPart{ReasoningPart::Kind::kText, std::move(text), {}, {}, {}, {}});
  }

  for (auto& r : reasoning) out.parts.emplace_back(std::move(r));
  bool has_text = false;
  for (auto& part : content) {
    if (auto* t = std::get_if<TextPart>(&part); t != nullptr && (!t->text.empty() || !t->cache_control.empty())) {
      out.parts.emplace_back(std::move(*t));
      has_text = true;
    }
  }
  if (!has_text && refusal && !refusal->empty()) out.parts.emplace_back(TextPart{std::move(*refusal), {}});
  for (auto& call : calls) {
    ctx.tool_names[call.id] = call.name;
    out.parts.emplace_back(std::move(call));
  }
  return {};
}

Status DecodeMessage(const json::object& m, const std::string& param, std::size_t index, MessageContext& ctx,
                     Message& out) {
  const json::value* role_value = m.if_contains("role");
  if (role_value == nullptr || !role_value->is_string()) {
    return Bad(param + ".role must be a string", param + ".role");
  }
  const std::string_view role_name = View(role_value->get_string());
  std::optional<std::string> name;
  if (auto e = ReadString(m, "name", param + ".name", name)) return e;
  const json::value* content = Present(m, "content");

  if (role_name == "function") {
    // Deprecated: the result of an assistant `function_call`.
    if (ctx.last_function_call_id.empty()) {
      return Bad(param + " is a function message without an assistant function_call before it", param + ".role");
    }
    if (!name || name->empty()) return Bad(param + ".name is required for a function message", param + ".name");
    ToolResultPart result{ctx.last_function_call_id, *name, {}, false, {}};
    if (content != nullptr) {
      std::vector<InputPart> parts;
      if (auto e = DecodeParts(*content, param + ".content", PartRules{"function", false, false}, parts)) return e;
      result.content = std::move(parts);
    }
    out.role = Role::kTool;
    out.parts.emplace_back(std::move(result));
    return {};
  }

  const std::optional<Role> role = ParseRole(role_name);
  if (!role) {
    return Bad(param + ".role '" + std::string(role_name) +
                   "' is not one of system, developer, user, assistant, tool",
               param + ".role");
  }
  out.role = *role;
  if (*role == Role::kAssistant) {
    out.name = name.value_or("");
    return DecodeAssistant(m, param, index, ctx, out);
  }
  if (content == nullptr) return Bad(param + ".content is required", param + ".content");

  if (*role == Role::kTool) {
    const json::value* id = m.if_contains("tool_call_id");
    if (id == nullptr || !id->is_string() || id->get_string().empty()) {
      return Bad(param + ".tool_call_id must be a non-empty string", param + ".tool_call_id");
    }
    ToolResultPart result;
    result.tool_call_id = std::string(View(id->get_string()));
    if (name && !name->empty()) {
      result.name = *name;
    } else if (auto it = ctx.tool_names.find(result.tool_call_id); it != ctx.tool_names.end()) {
      result.name = it->second;
    }
    if (auto e = DecodeParts(*content, param + ".content", PartRules{"tool", true, false}, result.content)) return e;
    out.parts.emplace_back(std::move(result));
    return {};
  }

  out.name = name.value_or("");
  const bool user = *role == Role::kUser;
  std::vector<InputPart> parts;
  if (auto e = DecodeParts(*content, param + ".content", PartRules{role_name, user, false}, parts)) return e;
  for (auto& part : parts) {
    std::visit([&](auto& p) { out.parts.emplace_back(std::move(p)); }, part);
  }
  return {};
}

Status DecodeMessages(const json::object& root, ChatRequest& req) {
  const json::value* messages = root.if_contains("messages");
  if (messages == nullptr || messages->is_null()) return Bad("you must provide a messages parameter", "messages");
  if (!messages->is_array()) return Bad("messages must be an array of message objects", "messages");
  if (messages->get_array().empty()) return Bad("messages must contain at least one message", "messages");
  MessageContext ctx;
  const json::array& list = messages->get_array();
  req.messages.reserve(list.size());
  for (std::size_t i = 0; i < list.size(); ++i) {
    const std::string param = Item("messages", i);
    const json::object* m = list[i].if_object();
    if (m == nullptr) return Bad(param + " must be an object", param);
    Message message;
    if (auto e = DecodeMessage(*m, param, i, ctx, message)) return e;
    req.messages.push_back(std::move(message));
  }
  return {};
}

// ---------------------------------------------------------------- inbound: tools and formats

Status DecodeFunction(const json::object& f, const std::string& param, ToolDefinition& out) {
  const json::value* name = f.if_contains("name");
  if (name == nullptr || !name->is_string() || !IsFunctionName(View(name->get_string()))) {
    return Bad(param + ".name must match ^[a-zA-Z0-9_-]{1,64}$", param + ".name");
  }
  out.name = std::string(View(name->get_string()));
  std::optional<std::string> description;
  if (auto e = ReadString(f, "description", param + ".description", description)) return e;
  out.description = description.value_or("");
  if (const json::value* parameters = Present(f, "parameters")) {
    if (!parameters->is_object()) return Bad(param + ".parameters must be a JSON Schema object", param + ".parameters");
    out.parameters = *parameters;
  }
  if (auto e = ReadBool(f, "strict", param + ".strict", out.strict)) return e;
  return {};
}

Status DecodeTools(const json::object& root, ChatRequest& req) {
  if (const json::value* tools = Present(root, "tools")) {
    if (!tools->is_array()) return Bad("tools must be an array", "tools");
    const json::array& list = tools->get_array();
    for (std::size_t i = 0; i < list.size(); ++i) {
      const std::string p = Item("tools", i);
      const json::object* tool = list[i].if_object();
      if (tool == nullptr) return Bad(p + " must be an object", p);
      const json::value* type = tool->if_contains("type");
      if (type == nullptr || !type->is_string() || type->get_string() != "function") {
        return Bad(p + ".type must be \"function\" (the only tool type supported)", p + ".type");
      }
      const json::object* function = ObjectAt(*tool, "function");
      if (function == nullptr) return Bad(p + ".function must be an object", p + ".function");
      ToolDefinition def;
      if (auto e = DecodeFunction(*function, p + ".function", def)) return e;
      if (auto e = ReadCacheControl(*tool, p, def.cache_control)) return e;
      req.tools.push_back(std::move(def));
    }
  }
  if (const json::value* functions = Present(root, "functions")) {  // deprecated spelling of tools
    if (!functions->is_array()) return Bad("functions must be an array", "functions");
    const json::array& list = functions->get_array();
    for (std::size_t i = 0; i < list.size(); ++i) {
      const std::string p = Item("functions", i);
      const json::object* function = list[i].if_object();
      if (function == nullptr) return Bad(p + " must be an object", p);
      ToolDefinition def;
      if (auto e = DecodeFunction(*function, p, def)) return e;
      req.tools.push_back(std::move(def));
    }
  }
  auto has_tool = [&](std::string_view name) {
    return std::any_of(req.tools.begin(), req.tools.end(), [&](const ToolDefinition& t) { return t.name == name; });
  };

  if (const json::value* choice = Present(root, "tool_choice")) {
    ToolChoice tc;
    if (choice->is_string()) {
      const std::string_view s = View(choice->get_string());
      if (s == "auto") {
        tc.mode = ToolChoice::Mode::kAuto;
      } else if (s == "none") {
        tc.mode = ToolChoice::Mode::kNone;
      } else if (s == "required") {
        tc.mode = ToolChoice::Mode::kRequired;
      } else {
        return Bad("tool_choice must be \"auto\", \"none\", \"required\" or a function", "tool_choice");
      }
    } else if (choice->is_object()) {
      const json::object& o = choice->get_object();
      if (StringAt(o, "type") != "function") return Bad("tool_choice.type must be \"function\"", "tool_choice.type");
      const json::object* function = ObjectAt(o, "function");
      const std::string_view name = function != nullptr ? StringAt(*function, "name") : std::string_view();
      if (name.empty()) return Bad("tool_choice.function.name must be a non-empty string", "tool_choice.function.name");
      if (!has_tool(name)) {
        return Bad("tool_choice names function '" + std::string(name) + "', which is not in tools",
                   "tool_choice.function.name");
      }
      tc.mode = ToolChoice::Mode::kFunction;
      tc.function_name = std::string(name);
    } else {
      return Bad("tool_choice must be a string or an object", "tool_choice");
    }
    if (tc.mode == ToolChoice::Mode::kRequired && req.tools.empty()) {
      return Bad("tool_choice \"required\" needs tools", "tool_choice");
    }
    req.tool_choice = std::move(tc);
  } else if (const json::value* call = Present(root, "function_call")) {  // deprecated tool_choice
    ToolChoice tc;
    if (call->is_string() && call->get_string() == "auto") {
      tc.mode = ToolChoice::Mode::kAuto;
    } else if (call->is_string() && call->get_string() == "none") {
      tc.mode = ToolChoice::Mode::kNone;
    } else if (call->is_object()) {
      const std::string_view name = StringAt(call->get_object(), "name");
      if (name.empty() || !has_tool(name)) {
        return Bad("function_call.name must name one of functions", "function_call.name");
      }
      tc.mode = ToolChoice::Mode::kFunction;
      tc.function_name = std::string(name);
    } else {
      return Bad("function_call must be \"auto\", \"none\" or {\"name\": ...}", "function_call");
    }
    req.tool_choice = std::move(tc);
  }
  if (auto e = ReadBool(root, "parallel_tool_calls", "parallel_tool_calls", req.parallel_tool_calls)) return e;
  return {};
}

Status DecodeResponseFormat(const json::object& root, ChatRequest& req) {
  const json::value* v = Present(root, "response_format");
  if (v == nullptr) return {};
  if (!v->is_object()) return Bad("response_format must be an object", "response_format");
  const json::object& o = v->get_object();
  const std::string_view type = StringAt(o, "type");
  ResponseFormat format;
  if (type == "text") {
    format.type = ResponseFormat::Type::kText;
  } else if (type == "json_object") {
    format.type = ResponseFormat::Type::kJsonObject;
  } else if (type == "json_schema") {
    format.type = ResponseFormat::Type::kJsonSchema;
    const json::object* schema = ObjectAt(o, "json_schema");
    if (schema == nullptr) return Bad("response_format.json_schema must be an object", "response_format.json_schema");
    const std::string p = "response_format.json_schema";
    const json::value* name = schema->if_contains("name");
    if (name == nullptr || !name->is_string() || !IsFunctionName(View(name->get_string()))) {
      return Bad(p + ".name must match ^[a-zA-Z0-9_-]{1,64}$", p + ".name");
    }
    format.name = std::string(View(name->get_string()));
    std::optional<std::string> description;
    if (auto e = ReadString(*schema, "description", p + ".description", description)) return e;
    format.description = description.value_or("");
    if (const json::value* s = Present(*schema, "schema")) {
      if (!s->is_object()) return Bad(p + ".schema must be a JSON Schema object", p + ".schema");
      format.schema = *s;
    }
    if (auto e = ReadBool(*schema, "strict", p + ".strict", format.strict)) return e;
  } else {
    return Bad("response_format.type must be one of text, json_object, json_schema", "response_format.type");
  }
  req.response_format = std::move(format);
  return {};
}

// ---------------------------------------------------------------- inbound: sampling and the rest

Status DecodeReasoningSettings(const json::object& root, ChatRequest& req) {
  auto read_effort = [](const json::object& o, std::string_view key, const std::string& param,
                        std::optional<std::string>& out) -> Status {
    if (auto e = ReadString(o, key, param, out)) return e;
    if (out && !IsEffort(*out)) {
      return Bad(param + " must be one of xhigh, high, medium, low, minimal, none", param);
    }
    return {};
  };
  if (const json::value* v = Present(root, "reasoning")) {
    if (!v->is_object()) return Bad("reasoning must be an object", "reasoning");
    const json::object& o = v->get_object();
    ReasoningSettings settings;
    std::optional<std::string> effort;
    if (auto e = read_effort(o, "effort", "reasoning.effort", effort)) return e;
    settings.effort = effort.value_or("");
    if (auto e = ReadInteger(o, "max_tokens", "reasoning.max_tokens", 0, kMaxOutputTokens, settings.max_tokens)) {
      return e;
    }
    std::optional<bool> exclude;
    if (auto e = ReadBool(o, "exclude", "reasoning.exclude", exclude)) return e;
    settings.exclude = exclude.value_or(false);
    if (auto e = ReadBool(o, "enabled", "reasoning.enabled", settings.enabled)) return e;
    req.reasoning = std::move(settings);
  }
  // OpenAI's `reasoning_effort`; the `reasoning` object wins: the effort is
  // taken only when that object gave neither an effort nor a budget (the two
  // are alternatives, OpenRouter reasoning-tokens page).
  std::optional<std::string> effort;
  if (auto e = read_effort(root, "reasoning_effort", "reasoning_effort", effort)) return e;
  if (effort) {
    if (!req.reasoning) req.reasoning.emplace();
    if (req.reasoning->effort.empty() && !req.reasoning->max_tokens) req.reasoning->effort = *effort;
  }
  // OpenRouter's legacy `include_reasoning: false` = `reasoning: {exclude: true}`.
  std::optional<bool> include;
  if (auto e = ReadBool(root, "include_reasoning", "include_reasoning", include)) return e;
  if (include && !*include) {
    if (!req.reasoning) req.reasoning.emplace();
    req.reasoning->exclude = true;
  }
  return {};
}

Status DecodeSampling(const json::object& o, ChatRequest& req) {
  std::optional<int64_t> max_tokens, max_completion_tokens;
  if (auto e = ReadInteger(o, "max_tokens", "max_tokens", 1, kMaxOutputTokens, max_tokens)) return e;
  if (auto e = ReadInteger(o, "max_completion_tokens", "max_completion_tokens", 1, kMaxOutputTokens,
                           max_completion_tokens)) {
    return e;
  }
  // max_completion_tokens replaces the deprecated max_tokens (API reference).
  if (max_completion_tokens) {
    req.max_tokens = max_completion_tokens;
    req.max_tokens_field = MaxTokensField::kMaxCompletionTokens;
  } else if (max_tokens) {
    req.max_tokens = max_tokens;
    req.max_tokens_field = MaxTokensField::kMaxTokens;
  }
  if (auto e = ReadNumber(o, "temperature", "temperature", 0, 2, false, req.temperature)) return e;
  if (auto e = ReadNumber(o, "top_p", "top_p", 0, 1, true, req.top_p)) return e;
  if (auto e = ReadInteger(o, "top_k", "top_k", 0, std::numeric_limits<int64_t>::max(), req.top_k)) return e;
  if (auto e = ReadNumber(o, "frequency_penalty", "frequency_penalty", -2, 2, false, req.frequency_penalty)) return e;
  if (auto e = ReadNumber(o, "presence_penalty", "presence_penalty", -2, 2, false, req.presence_penalty)) return e;
  if (auto e = ReadNumber(o, "repetition_penalty", "repetition_penalty", 0, 2, true, req.repetition_penalty)) {
    return e;
  }
  if (auto e = ReadNumber(o, "min_p", "min_p", 0, 1, false, req.min_p)) return e;
  if (auto e = ReadLogitBias(o, req.logit_bias)) return e;
  // `seed` is a signed 64-bit integer (API reference); the canonical field
  // keeps its bits, EncodeChatRequest writes it back signed.
  if (const json::value* seed = Present(o, "seed")) {
    if (seed->is_int64()) {
      req.seed = static_cast<uint64_t>(seed->get_int64());
    } else if (seed->is_uint64()) {
      return Bad("seed must be between -9223372036854775808 and 9223372036854775807", "seed");
    } else if (auto i = AsInteger(*seed)) {
      req.seed = static_cast<uint64_t>(*i);
    } else {
      return Bad("seed must be an integer", "seed");
    }
  }
  if (const json::value* stop = Present(o, "stop")) {
    if (stop->is_string()) {
      req.stop.emplace_back(View(stop->get_string()));
    } else if (stop->is_array()) {
      if (stop->get_array().size() > kMaxStopSequences) return Bad("stop takes at most 4 sequences", "stop");
      for (const json::value& s : stop->get_array()) {
        if (!s.is_string()) return Bad("stop must be a string or an array of strings", "stop");
        req.stop.emplace_back(View(s.get_string()));
      }
    } else {
      return Bad("stop must be a string or an array of strings", "stop");
    }
    for (const std::string& s : req.stop) {
      if (s.empty()) return Bad("stop sequences must not be empty", "stop");
    }
  }
  if (auto e = ReadInteger(o, "n", "n", 1, kMaxChoices, req.n)) return e;
  if (auto e = ReadInteger(o, "top_logprobs", "top_logprobs", 0, kMaxTopLogprobs, req.top_logprobs)) return e;
  if (auto e = DecodeReasoningSettings(o, req)) return e;

  std::optional<std::string> user;
  if (auto e = ReadString(o, "user", "user", user)) return e;
  req.user = user.value_or("");
  if (const json::value* metadata = Present(o, "metadata")) {
    if (!metadata->is_object()) return Bad("metadata must be an object of strings", "metadata");
    for (const auto& [key, value] : metadata->get_object()) {
      if (!value.is_string()) {
        return Bad("metadata values must be strings", Field("metadata", std::string_view(key.data(), key.size())));
      }
    }
    req.metadata = metadata->get_object();
  }
  std::optional<bool> stream;
  if (auto e = ReadBool(o, "stream", "stream", stream)) return e;
  req.stream = stream.value_or(false);
  if (const json::value* so = Present(o, "stream_options")) {
    if (!so->is_object()) return Bad("stream_options must be an object", "stream_options");
    std::optional<bool> include_usage;
    if (auto e = ReadBool(so->get_object(), "include_usage", "stream_options.include_usage", include_usage)) return e;
    req.include_usage = include_usage.value_or(false);
  }
  // OpenRouter's provider, models, session_id and debug.routing, shared with
  // the Anthropic decoder. `models` alone names the model (its first entry).
  if (auto e = DecodeRoutingFields(o, ParamStyle::kOpenAi, true, req)) return e;
  if (req.model.empty()) return Bad("you must provide a model parameter", "model");
  return {};
}

Result<json::object> ParseRequestBody(std::string_view body, ChatRequest& req) {
  std::optional<json::value> root = ParseJson(body);
  if (!root) return Bad("request body is not valid JSON (or is nested deeper than 64 levels)", "");
  if (!root->is_object()) return Bad("request body must be a JSON object", "");
  json::object& o = root->get_object();
  const json::value* model = o.if_contains("model");
  if (model == nullptr || model->is_null()) {
    // OpenRouter takes `models` without `model` (its first entry is the
    // model; DecodeSampling reads it).
    const json::value* models = Present(o, "models");
    if (models == nullptr || !models->is_array() || models->get_array().empty()) {
      return Bad("you must provide a model parameter", "model");
    }
    return std::move(o);
  }
  if (!model->is_string() || model->get_string().empty()) return Bad("model must be a non-empty string", "model");
  req.model = std::string(View(model->get_string()));
  return std::move(o);
}

// ---------------------------------------------------------------- outbound requests

json::value CacheControlJson(const CacheControl& cc) { return json::value(cc); }

json::object TextPartJson(const TextPart& t, bool cache_control) {
  json::object part{{"type", "text"}, {"text", t.text}};
  if (cache_control && !t.cache_control.empty()) part["cache_control"] = CacheControlJson(t.cache_control);
  return part;
}

json::object ImagePartJson(const ImagePart& image, bool cache_control) {
  json::object url{{"url", image.url}};
  if (!image.detail.empty()) url["detail"] = image.detail;
  json::object part{{"type", "image_url"}, {"image_url", std::move(url)}};
  if (cache_control && !image.cache_control.empty()) part["cache_control"] = CacheControlJson(image.cache_control);
  return part;
}

// `content` of a message from its text and image parts: a plain string when it
// is one text part with nothing else to say (what every compatible server
// accepts), else an array of parts.
json::value ContentJson(const std::vector<InputPart>& parts, bool cache_control) {
  if (parts.empty()) return json::string();
  if (parts.size() == 1) {
    if (const auto* t = std::get_if<TextPart>(&parts[0]); t != nullptr && (!cache_control || t->cache_control.empty())) {
      return json::string(t->text);
    }
  }
  json::array out;
  for (const auto& part : parts) {
    if (const auto* t = std::get_if<TextPart>(&part)) {
      out.push_back(TextPartJson(*t, cache_control));
    } else {
      out.push_back(ImagePartJson(std::get<ImagePart>(part), cache_control));
    }
  }
  return out;
}

json::object DetailJson(ReasoningPart::Kind kind, std::string_view text, std::string_view signature,
                        std::string_view data, std::string_view format, std::string_view id, int index) {
  json::object d;
  switch (kind) {
    case ReasoningPart::Kind::kText:
      d["type"] = "reasoning.text";
      d["text"] = text;
      d["signature"] = signature.empty() ? json::value(nullptr) : json::value(json::string(signature));
      break;
    case ReasoningPart::Kind::kSummary:
      d["type"] = "reasoning.summary";
      d["summary"] = text;
      break;
    case ReasoningPart::Kind::kEncrypted:
      d["type"] = "reasoning.encrypted";
      d["data"] = data;
      break;
  }
  d["format"] = format.empty() ? kUnknownFormat : format;
  d["index"] = index;
  if (!id.empty()) d["id"] = id;
  return d;
}

// `reasoning_details` of a whole assistant turn: its reasoning blocks, then
// the thought signatures of its tool calls, numbered in that order.
json::array DetailsJson(const std::vector<const ReasoningPart*>& reasoning,
                        const std::vector<const ToolCallPart*>& calls) {
  json::array details;
  int index = 0;
  for (const ReasoningPart* r : reasoning) {
    details.push_back(DetailJson(r->kind, r->text, r->signature, r->data, r->format, r->id, index++));
  }
  for (const ToolCallPart* c : calls) {
    if (c->thought_signature.empty()) continue;
    details.push_back(DetailJson(ReasoningPart::Kind::kEncrypted, {}, {}, c->thought_signature, kGeminiFormat,
                                 c->id, index++));
  }
  return details;
}

json::object ToolCallJson(const ToolCallPart& call) {
  return json::object{
      {"id", call.id},
      {"type", "function"},
      {"function", json::object{{"name", call.name}, {"arguments", call.arguments.empty() ? "{}" : call.arguments}}}};
}

json::object AssistantJson(const Message& m, const RequestOptions& options) {
  std::vector<const ReasoningPart*> reasoning;
  std::vector<InputPart> content;
  std::vector<const ToolCallPart*> calls;
  for (const ContentPart& part : m.parts) {
    if (const auto* r = std::get_if<ReasoningPart>(&part)) {
      reasoning.push_back(r);
    } else if (const auto* t = std::get_if<TextPart>(&part)) {
      content.emplace_back(*t);
    } else if (const auto* i = std::get_if<ImagePart>(&part)) {
      content.emplace_back(*i);
    } else if (const auto* c = std::get_if<ToolCallPart>(&part)) {
      calls.push_back(c);
    }
  }
  json::object msg{{"role", "assistant"}};
  const bool parts_needed = std::any_of(content.begin(), content.end(), [&](const InputPart& p) {
    if (std::holds_alternative<ImagePart>(p)) return true;
    return options.cache_control && !std::get<TextPart>(p).cache_control.empty();
  });
  std::string text;
  for (const auto& p : content) {
    if (const auto* t = std::get_if<TextPart>(&p)) text += t->text;
  }
  if (parts_needed) {
    msg["content"] = ContentJson(content, options.cache_control);
  } else if (text.empty() && !calls.empty()) {
    msg["content"] = nullptr;  // OpenAI: content is null on a turn that only calls tools
  } else {
    msg["content"] = text;
  }
  if (!m.name.empty()) msg["name"] = m.name;
  if (!calls.empty()) {
    json::array tool_calls;
    for (const ToolCallPart* c : calls) tool_calls.push_back(ToolCallJson(*c));
    msg["tool_calls"] = std::move(tool_calls);
  }
  if (options.reasoning == ReasoningStyle::kOpenRouter) {
    json::array details = DetailsJson(reasoning, calls);
    if (!details.empty()) msg["reasoning_details"] = std::move(details);
  }
  if (options.replay_reasoning_content && !calls.empty()) {
    // DeepSeek thinking mode: "for turns that do perform tool calls, the
    // reasoning_content must be fully passed back to the API in all
    // subsequent requests" (api-docs.deepseek.com/guides/thinking_mode);
    // Moonshot's Kimi thinking models ask the same. Only those turns: the
    // older deepseek-reasoner answers 400 to reasoning_content on a plain
    // turn (api-docs.deepseek.com/guides/reasoning_model).
    std::string replay;
    for (const ReasoningPart* r : reasoning) {
      if (r->kind == ReasoningPart::Kind::kText) replay += r->text;
    }
    if (!replay.empty()) msg["reasoning_content"] = replay;
  }
  return msg;
}

// A tool result as an OpenAI `tool` message. Its text parts are joined with
// "\n"; OpenAI takes no images in a tool message, so they are returned for a
// following user message.
json::object ToolMessageJson(const ToolResultPart& result, bool cache_control, std::vector<ImagePart>& images) {
  std::vector<const TextPart*> texts;
  for (const auto& part : result.content) {
    if (const auto* t = std::get_if<TextPart>(&part)) {
      texts.push_back(t);
    } else {
      images.push_back(std::get<ImagePart>(part));
    }
  }
  json::object msg{{"role", "tool"}, {"tool_call_id", result.tool_call_id}};
  const bool keep_cache = cache_control && (!result.cache_control.empty() ||
                                            std::any_of(texts.begin(), texts.end(), [](const TextPart* t) {
                                              return !t->cache_control.empty();
                                            }));
  if (keep_cache) {
    // cache_control lives on content parts; the result's own breakpoint goes
    // on its last part.
    json::array parts;
    for (const TextPart* t : texts) parts.push_back(TextPartJson(*t, true));
    if (parts.empty()) parts.push_back(json::object{{"type", "text"}, {"text", ""}});
    if (!result.cache_control.empty()) parts.back().as_object()["cache_control"] = CacheControlJson(result.cache_control);
    msg["content"] = std::move(parts);
  } else {
    std::string text;
    for (std::size_t i = 0; i < texts.size(); ++i) {
      if (i > 0) text += '\n';
      text += texts[i]->text;
    }
    msg["content"] = std::move(text);
  }
  return msg;
}

json::array MessagesJson(const ChatRequest& request, const RequestOptions& options) {
  json::array out;
  if (request.kind == RequestKind::kCompletion) {
    // A raw prompt sent to a chat-only upstream: the best it can do is read it
    // as one user turn.
    out.push_back(json::object{{"role", "user"}, {"content", request.prompt}});
    return out;
  }
  // Images of the tool results of one run of tool messages, sent after the
  // run: OpenAI wants every tool message right after the assistant turn that
  // made the calls.
  std::vector<std::pair<std::string, std::vector<ImagePart>>> pending;
  auto flush = [&] {
    if (pending.empty()) return;
    json::array content;
    for (const auto& [id, images] : pending) {
      content.push_back(json::object{{"type", "text"}, {"text", "Images returned by tool call " + id + ":"}});
      for (const ImagePart& image : images) content.push_back(ImagePartJson(image, options.cache_control));
    }
    out.push_back(json::object{{"role", "user"}, {"content", std::move(content)}});
    pending.clear();
  };

  for (const Message& m : request.messages) {
    bool only_results = !m.parts.empty();
    for (const ContentPart& part : m.parts) {
      if (const auto* result = std::get_if<ToolResultPart>(&part)) {
        std::vector<ImagePart> images;
        out.push_back(ToolMessageJson(*result, options.cache_control, images));
        if (!images.empty()) pending.emplace_back(result->tool_call_id, std::move(images));
      } else {
        only_results = false;
      }
    }
    if (m.role == Role::kTool || only_results) continue;
    flush();
    if (m.role == Role::kAssistant) {
      out.push_back(AssistantJson(m, options));
      continue;
    }
    std::vector<InputPart> content;
    for (const ContentPart& part : m.parts) {
      if (const auto* t = std::get_if<TextPart>(&part)) {
        content.emplace_back(*t);
      } else if (const auto* i = std::get_if<ImagePart>(&part)) {
        content.emplace_back(*i);
      }
    }
    std::string_view role = RoleName(m.role);
    if (m.role == Role::kDeveloper && !options.developer_role) role = "system";
    json::object msg{{"role", role}, {"content", ContentJson(content, options.cache_control)}};
    if (!m.name.empty()) msg["name"] = m.name;
    out.push_back(std::move(msg));
  }
  flush();
  return out;
}

// Parameters both endpoints share.
void SamplingJson(const ChatRequest& r, const RequestOptions& options, json::object& body) {
  if (r.temperature) body["temperature"] = *r.temperature;
  if (r.top_p) body["top_p"] = *r.top_p;
  if (r.top_k) body["top_k"] = *r.top_k;
  if (r.frequency_penalty) body["frequency_penalty"] = *r.frequency_penalty;
  if (r.presence_penalty) body["presence_penalty"] = *r.presence_penalty;
  if (r.repetition_penalty) body["repetition_penalty"] = *r.repetition_penalty;
  if (r.min_p) body["min_p"] = *r.min_p;
  if (!r.logit_bias.empty()) {
    json::object bias;
    for (const auto& [token, value] : r.logit_bias) bias[std::to_string(token)] = value;
    body["logit_bias"] = std::move(bias);
  }
  if (r.seed) body[options.seed_field] = static_cast<int64_t>(*r.seed);  // signed, as it came in
  if (!r.stop.empty()) {
    json::array stop;
    for (const std::string& s : r.stop) stop.emplace_back(s);
    body["stop"] = std::move(stop);
  }
  if (r.n) body["n"] = *r.n;
  if (!r.user.empty()) body["user"] = r.user;
}

void StreamJson(const RequestOptions& options, json::object& body) {
  if (!options.stream) return;
  // Without include_usage an OpenAI stream carries no usage at all
  // (WIRE-FORMATS.md 3.1), and usage is what we bill.
  body["stream"] = true;
  if (options.stream_options) body["stream_options"] = json::object{{"include_usage", true}};
}

void ReasoningJson(const ReasoningSettings& s, ReasoningStyle style, json::object& body) {
  switch (style) {
    case ReasoningStyle::kNone:
    case ReasoningStyle::kDeepSeek:
      // DeepSeek: the model (deepseek-reasoner) decides; no request field.
      return;
    case ReasoningStyle::kOpenAi:
      // OpenAI `reasoning_effort`. A budget alone has no OpenAI spelling:
      // OpenRouter maps it to an effort; "medium" is OpenAI's default.
      if (!s.effort.empty()) {
        body["reasoning_effort"] = s.effort;
      } else if (s.Requested()) {
        body["reasoning_effort"] = "medium";
      }
      return;
    case ReasoningStyle::kOpenRouter: {
      json::object r;
      if (!s.effort.empty()) r["effort"] = s.effort;
      if (s.max_tokens) r["max_tokens"] = *s.max_tokens;
      if (s.exclude) r["exclude"] = true;
      if (s.enabled) r["enabled"] = *s.enabled;
      body["reasoning"] = std::move(r);
      return;
    }
    case ReasoningStyle::kQwen:
      // Alibaba Model Studio, "Deep thinking" (OpenAI-compatible mode):
      // `enable_thinking` switches hybrid models, `thinking_budget` caps the
      // thinking tokens.
      body["enable_thinking"] = s.Requested();
      if (s.Requested() && s.max_tokens && *s.max_tokens > 0) body["thinking_budget"] = *s.max_tokens;
      return;
    case ReasoningStyle::kZhipu:
      // Z.AI GLM, "Thinking Mode" (docs.z.ai/guides/capabilities/thinking-mode):
      // `thinking: {"type": "enabled" | "disabled"}`.
      body["thinking"] = json::object{{"type", s.Requested() ? "enabled" : "disabled"}};
      return;
  }
}

// ---------------------------------------------------------------- upstream responses

std::string CapMessage(std::string_view text) {
  if (text.size() <= kMaxUpstreamMessageBytes) return std::string(text);
  constexpr std::string_view kEllipsis = "...";
  text = text.substr(0, kMaxUpstreamMessageBytes - kEllipsis.size());
  return std::string(text.substr(0, CompleteUtf8Prefix(text))) + std::string(kEllipsis);
}

// The message of an in-stream error chunk: `{"error": {...}}` (OpenAI,
// OpenRouter), `{"error": "..."}`, or vLLM's `{"object": "error", "message"}`
// (WIRE-FORMATS.md 3.1, "Mid-stream errors"). nullopt when it is no error.
std::optional<std::string> InStreamError(const json::object& chunk) {
  constexpr std::string_view kGeneric = "upstream reported an error";
  if (const json::value* err = Present(chunk, "error")) {
    if (const json::object* obj = err->if_object()) {
      const std::string_view msg = StringAt(*obj, "message");
      return std::string(msg.empty() ? kGeneric : msg);
    }
    if (err->is_string()) return std::string(View(err->get_string()));
    return std::string(kGeneric);
  }
  if (StringAt(chunk, "object") == "error") {
    const std::string_view msg = StringAt(chunk, "message");
    return std::string(msg.empty() ? kGeneric : msg);
  }
  return std::nullopt;
}

FinishReason ParseFinishReason(std::string_view name) {
  if (name == "length") return FinishReason::kLength;
  if (name == "tool_calls" || name == "function_call") return FinishReason::kToolCalls;
  if (name == "content_filter") return FinishReason::kContentFilter;
  // DeepSeek: "the request is interrupted due to insufficient resource of the
  // inference system" (api-docs.deepseek.com, Create Chat Completion): a cut
  // answer, never a finished one.
  if (name == "error" || name == "insufficient_system_resource") return FinishReason::kError;
  return FinishReason::kStop;  // "stop", and the rest (llama.cpp's "eos", ...)
}

// nullopt when neither prompt_tokens nor completion_tokens is a number: such
// an object reports nothing, and the gateway estimates instead of billing zero.
std::optional<Usage> ParseUsage(const json::object& u) {
  const std::optional<int64_t> prompt = TokenCount(u.if_contains("prompt_tokens"));
  const std::optional<int64_t> completion = TokenCount(u.if_contains("completion_tokens"));
  if (!prompt && !completion) return std::nullopt;
  Usage usage;
  usage.prompt_tokens = prompt.value_or(0);
  usage.completion_tokens = completion.value_or(0);
  const json::object* prompt_details = ObjectAt(u, "prompt_tokens_details");
  std::optional<int64_t> cached;
  if (prompt_details != nullptr) cached = TokenCount(prompt_details->if_contains("cached_tokens"));
  // DeepSeek: prompt_cache_hit_tokens (api-docs.deepseek.com, "Context
  // Caching"); Moonshot/Kimi: `cached_tokens` at the top of `usage`.
  if (!cached) cached = TokenCount(u.if_contains("prompt_cache_hit_tokens"));
  if (!cached) cached = TokenCount(u.if_contains("cached_tokens"));
  usage.cached_tokens = cached.value_or(0);
  if (prompt_details != nullptr) {  // OpenRouter's cache writes
    usage.cache_write_tokens = TokenCount(prompt_details->if_contains("cache_write_tokens")).value_or(0);
  }
  if (const json::object* details = ObjectAt(u, "completion_tokens_details")) {
    usage.reasoning_tokens = TokenCount(details->if_contains("reasoning_tokens")).value_or(0);
  }
  ClampUsage(usage);
  return usage;
}

// `choices[].index`: absent or null = 0; otherwise an integer in [0, 128) (n
// is at most 128; a larger index would size every per-choice vector after it).
std::optional<int> ChoiceIndex(const json::object& choice) {
  const json::value* v = Present(choice, "index");
  if (v == nullptr) return 0;
  const std::optional<int64_t> i = AsInteger(*v);
  if (!i || *i < 0 || *i >= kMaxChoices) return std::nullopt;
  return static_cast<int>(*i);
}

std::optional<int64_t> OptionalIndex(const json::object& o) {
  const json::value* v = Present(o, "index");
  if (v == nullptr) return std::nullopt;
  return AsInteger(*v);
}

// ---------------------------------------------------------------- responses to callers

json::object UsageObject(const Usage& usage, Money cost, bool byok) {
  return json::object{
      {"prompt_tokens", usage.prompt_tokens},
      {"completion_tokens", usage.completion_tokens},
      {"total_tokens", usage.total_tokens()},
      {"prompt_tokens_details",
       json::object{{"cached_tokens", usage.cached_tokens}, {"cache_write_tokens", usage.cache_write_tokens}}},
      {"completion_tokens_details", json::object{{"reasoning_tokens", usage.reasoning_tokens}}},
      {"cost", ToUsd(cost)},
      {"is_byok", byok},
  };
}

// Tollgate has no `system_fingerprint`. @openrouter/sdk wants it null on a
// whole answer (ChatResponse: nullable) and absent on a chunk (ChatStreamChunk:
// a string when present); EncodeResponse adds the null.
json::object Envelope(const ResponseMeta& meta, std::string_view object) {
  return json::object{{"id", meta.id},
                      {"object", object},
                      {"created", meta.created},
                      {"model", meta.model},
                      {"provider", meta.provider}};
}

std::string_view ChunkObject(RequestKind kind) {
  return kind == RequestKind::kChat ? "chat.completion.chunk" : "text_completion";
}

json::value FinishJson(const std::optional<FinishReason>& reason) {
  return reason ? json::value(json::string(FinishReasonName(*reason))) : json::value(nullptr);
}

}  // namespace

// ---------------------------------------------------------------- public: inbound

Result<ChatRequest> DecodeChatRequest(std::string_view body) {
  ChatRequest req;
  req.kind = RequestKind::kChat;
  req.api = ApiFlavor::kOpenAiChat;
  Result<json::object> root = ParseRequestBody(body, req);
  if (!root) return root.error();
  if (auto e = DecodeMessages(*root, req)) return *e;
  if (auto e = DecodeTools(*root, req)) return *e;
  if (auto e = DecodeResponseFormat(*root, req)) return *e;
  if (auto e = DecodeSampling(*root, req)) return *e;
  std::optional<bool> logprobs;
  if (auto e = ReadBool(*root, "logprobs", "logprobs", logprobs)) return *e;
  req.logprobs = logprobs.value_or(false);
  return req;
}

Result<ChatRequest> DecodeCompletionRequest(std::string_view body) {
  ChatRequest req;
  req.kind = RequestKind::kCompletion;
  req.api = ApiFlavor::kOpenAiCompletions;
  Result<json::object> root = ParseRequestBody(body, req);
  if (!root) return root.error();
  const json::value* prompt = root->if_contains("prompt");
  if (prompt == nullptr || prompt->is_null()) return Bad("you must provide a prompt parameter", "prompt");
  if (prompt->is_string()) {
    req.prompt = std::string(View(prompt->get_string()));
  } else if (prompt->is_array() && prompt->get_array().size() == 1 && prompt->get_array()[0].is_string()) {
    req.prompt = std::string(View(prompt->get_array()[0].get_string()));
  } else {
    return Bad("prompt must be a string (or an array of exactly one string)", "prompt");
  }
  if (auto e = DecodeSampling(*root, req)) return *e;
  // Legacy `logprobs` is an integer: return the log probabilities of that
  // many most likely tokens, at most 5 ("Create completion").
  if (const json::value* v = Present(*root, "logprobs")) {
    if (v->is_bool()) {
      req.logprobs = v->get_bool();
    } else {
      std::optional<int64_t> n;
      if (auto e = ReadInteger(*root, "logprobs", "logprobs", 0, kMaxCompletionLogprobs, n)) return *e;
      req.logprobs = true;
      req.top_logprobs = n;
    }
  }
  return req;
}

// ---------------------------------------------------------------- public: outbound

std::string EncodeChatRequest(const ChatRequest& request, const RequestOptions& options) {
  json::object body;
  body["model"] = options.upstream_model.empty() ? request.model : options.upstream_model;
  body["messages"] = MessagesJson(request, options);

  if (!request.tools.empty()) {
    json::array tools;
    for (const ToolDefinition& t : request.tools) {
      json::object function{{"name", t.name}};
      if (!t.description.empty()) function["description"] = t.description;
      if (!t.parameters.is_null()) function["parameters"] = t.parameters;
      if (t.strict) function["strict"] = *t.strict;
      json::object tool{{"type", "function"}, {"function", std::move(function)}};
      if (options.cache_control && !t.cache_control.empty()) tool["cache_control"] = CacheControlJson(t.cache_control);
      tools.push_back(std::move(tool));
    }
    body["tools"] = std::move(tools);
  }
  if (request.tool_choice) {
    switch (request.tool_choice->mode) {
      case ToolChoice::Mode::kAuto: body["tool_choice"] = "auto"; break;
      case ToolChoice::Mode::kNone: body["tool_choice"] = "none"; break;
      case ToolChoice::Mode::kRequired: body["tool_choice"] = "required"; break;
      case ToolChoice::Mode::kFunction:
        body["tool_choice"] = json::object{{"type", "function"},
                                           {"function", json::object{{"name", request.tool_choice->function_name}}}};
        break;
    }
  }
  if (request.parallel_tool_calls) body["parallel_tool_calls"] = *request.parallel_tool_calls;
  if (request.response_format) {
    const ResponseFormat& f = *request.response_format;
    switch (f.type) {
      case ResponseFormat::Type::kText: body["response_format"] = json::object{{"type", "text"}}; break;
      case ResponseFormat::Type::kJsonObject: body["response_format"] = json::object{{"type", "json_object"}}; break;
      case ResponseFormat::Type::kJsonSchema: {
        json::object schema{{"name", f.name}};
        if (!f.description.empty()) schema["description"] = f.description;
        if (!f.schema.is_null()) schema["schema"] = f.schema;
        if (f.strict) schema["strict"] = *f.strict;
        body["response_format"] = json::object{{"type", "json_schema"}, {"json_schema", std::move(schema)}};
        break;
      }
    }
  }

  if (request.max_tokens) {
    MaxTokensField field = options.max_tokens_field;
    if (field == MaxTokensField::kNone) field = request.max_tokens_field;
    body[field == MaxTokensField::kMaxCompletionTokens ? "max_completion_tokens" : "max_tokens"] = *request.max_tokens;
  }
  SamplingJson(request, options, body);
  if (request.logprobs) body["logprobs"] = true;
  if (request.top_logprobs) body["top_logprobs"] = *request.top_logprobs;
  if (request.reasoning) ReasoningJson(*request.reasoning, options.reasoning, body);
  if (!request.metadata.empty()) body["metadata"] = request.metadata;
  StreamJson(options, body);
  return json::serialize(body);
}

std::string EncodeCompletionRequest(const ChatRequest& request, const RequestOptions& options) {
  json::object body;
  body["model"] = options.upstream_model.empty() ? request.model : options.upstream_model;
  body["prompt"] = request.prompt;
  // The legacy endpoint knows only max_tokens.
  if (request.max_tokens) body["max_tokens"] = *request.max_tokens;
  SamplingJson(request, options, body);
  if (request.logprobs) body["logprobs"] = request.top_logprobs.value_or(0);
  StreamJson(options, body);
  return json::serialize(body);
}

// ---------------------------------------------------------------- public: ResponseDecoder

Result<void> ResponseDecoder::OnData(std::string_view data, std::vector<StreamEvent>& out) {
  const std::string_view trimmed = Trim(data);
  if (trimmed.empty() || done_) return {};  // an empty keep-alive event; anything after [DONE]
  if (trimmed == "[DONE]") {
    done_ = true;
    return {};
  }
  std::optional<json::value> v = ParseUpstreamJson(trimmed);
  if (!v || !v->is_object()) return BadUpstream("upstream sent a malformed stream chunk");
  return Absorb(v->get_object(), false, out);
}

Result<void> ResponseDecoder::OnWholeResponse(std::string_view body, std::vector<StreamEvent>& out) {
  std::optional<json::value> v = ParseUpstreamJson(Trim(body));
  if (!v || !v->is_object()) return BadUpstream("upstream sent a malformed response body");
  Result<void> r = Absorb(v->get_object(), true, out);
  if (r) done_ = true;
  return r;
}

void ResponseDecoder::Finish(std::vector<StreamEvent>& out) {
  for (auto& [index, choice] : choices_) FlushChoice(index, choice, out);
}

bool ResponseDecoder::finish_seen() const {
  bool any = false;
  for (const auto& [index, choice] : choices_) {
    if (choice.finished) {
      any = true;
    } else if (choice.produced) {
      return false;
    }
  }
  return any;
}

Result<void> ResponseDecoder::Absorb(const json::object& body, bool whole, std::vector<StreamEvent>& out) {
  if (std::optional<std::string> err = InStreamError(body)) {
    return BadUpstream("upstream error: " + CapMessage(ValidUtf8(*err)));
  }
  // `choices` may be an empty array (the usage chunk), null or absent
  // (OpenAI-compatible servers, WIRE-FORMATS.md 3.1).
  const json::object* choice_usage = nullptr;
  if (const json::array* choices = ArrayAt(body, "choices")) {
    for (const json::value& c : *choices) {
      const json::object* choice = c.if_object();
      if (choice == nullptr) continue;
      if (choice_usage == nullptr) choice_usage = ObjectAt(*choice, "usage");
      if (std::optional<int> index = ChoiceIndex(*choice)) AbsorbChoice(*index, *choice, whole, out);
    }
  }
  // Usage normally comes in its own chunk with no choices, but some servers
  // put it on the last choice chunk, or inside the choice: take it anywhere.
  const json::object* usage_object = ObjectAt(body, "usage");
  if (usage_object == nullptr) usage_object = choice_usage;
  if (usage_object != nullptr) {
    if (std::optional<Usage> usage = ParseUsage(*usage_object)) out.emplace_back(UsageDelta{*usage});
  }
  return {};
}

void ResponseDecoder::AbsorbChoice(int index, const json::object& choice, bool whole, std::vector<StreamEvent>& out) {
  Choice& state = choices_[index];
  std::vector<StreamEvent> reasoning, calls;
  std::string text;
  const json::object* carrier = nullptr;
  if (kind_ == RequestKind::kChat) {
    carrier = ObjectAt(choice, whole ? "message" : "delta");
    if (carrier == nullptr) carrier = ObjectAt(choice, whole ? "delta" : "message");
  }
  if (carrier != nullptr) {
    // Tool calls before reasoning, so that a thought signature in
    // reasoning_details finds its call; the events still go out reasoning
    // first.
    if (const json::array* tool_calls = ArrayAt(*carrier, "tool_calls")) {
      for (const json::value& call : *tool_calls) {
        if (const json::object* o = call.if_object()) AbsorbToolCall(index, state, *o, whole, calls);
      }
    }
    if (const json::object* fc = ObjectAt(*carrier, "function_call")) {  // deprecated single call
      AbsorbToolCall(index, state, json::object{{"function", *fc}}, whole, calls);
    }
    AbsorbReasoning(index, state, *carrier, whole, reasoning, calls);
    if (const json::value* content = Present(*carrier, "content")) {
      if (content->is_string()) {
        text = View(content->get_string());
      } else if (content->is_array()) {  // content parts (Mistral and others in whole answers)
        for (const json::value& part : content->get_array()) {
          if (const json::object* p = part.if_object(); p != nullptr && StringAt(*p, "type") == "text") {
            text += StringAt(*p, "text");
          }
        }
      }
    }
    // A refusal is what the model said; the canonical model has no separate
    // channel for it.
    text += StringAt(*carrier, "refusal");
  } else {
    text = StringAt(choice, "text");  // text_completion (also chat servers that answer that way)
  }

  for (auto& e : reasoning) out.push_back(std::move(e));
  if (std::string complete = ValidUtf8(state.text.Push(text)); !complete.empty()) {
    out.emplace_back(TextDelta{index, std::move(complete)});
    state.produced = true;
  }
  for (auto& e : calls) out.push_back(std::move(e));
  if (!reasoning.empty() || !calls.empty()) state.produced = true;

  const std::string_view reason = StringAt(choice, "finish_reason");
  if (!reason.empty() && !state.finished) {
    FlushChoice(index, state, out);
    FinishReason r = ParseFinishReason(reason);
    // Some compatible servers say "stop" after calling tools; callers test for
    // "tool_calls" (Envoy AI Gateway maps Gemini's STOP the same way,
    // WIRE-FORMATS.md 3.3). native_reason keeps the upstream's word.
    if (r == FinishReason::kStop && !state.calls.empty()) r = FinishReason::kToolCalls;
    out.emplace_back(FinishDelta{index, r, ValidUtf8(reason)});
    state.finished = true;
  }
}

void ResponseDecoder::AbsorbReasoning(int index, Choice& state, const json::object& carrier, bool whole,
                                      std::vector<StreamEvent>& reasoning_out, std::vector<StreamEvent>& calls_out) {
  // The canonical block for an upstream identity; a new one when unseen.
  auto block = [&](const std::string& key, ReasoningPart::Kind kind, bool& is_new) {
    auto it = state.reasoning_by_key.find(key);
    if (it != state.reasoning_by_key.end()) {
      is_new = false;
      return it->second;
    }
    const int canonical = static_cast<int>(state.reasoning.size());
    state.reasoning.push_back(ReasoningBlock{kind, {}});
    state.reasoning_by_key.emplace(key, canonical);
    is_new = true;
    return canonical;
  };

  bool details_have_text = false;
  if (const json::array* details = ArrayAt(carrier, "reasoning_details")) {
    for (const json::value& d : *details) {
      const json::object* entry = d.if_object();
      if (entry == nullptr) continue;
      const std::string_view type = StringAt(*entry, "type");
      ReasoningPart::Kind kind;
      std::string_view text;
      if (type == "reasoning.text") {
        kind = ReasoningPart::Kind::kText;
        text = StringAt(*entry, "text");
      } else if (type == "reasoning.summary") {
        kind = ReasoningPart::Kind::kSummary;
        text = StringAt(*entry, "summary");
      } else if (type == "reasoning.encrypted") {
        kind = ReasoningPart::Kind::kEncrypted;
      } else {
        continue;  // a type this codec does not know
      }
      if (!text.empty()) details_have_text = true;
      const std::string_view data = StringAt(*entry, "data");
      const std::string_view format = StringAt(*entry, "format");
      const std::string_view id = StringAt(*entry, "id");
      if (kind == ReasoningPart::Kind::kEncrypted && format == kGeminiFormat && !id.empty()) {
        if (auto call = state.call_by_id.find(std::string(id)); call != state.call_by_id.end()) {
          calls_out.emplace_back(ToolCallDelta{index, call->second, {}, {}, {}, ValidUtf8(data)});
          continue;
        }
      }
      // Block identity: the entry's `index`. Without one, each entry of a
      // whole answer is its own block, and a streamed entry continues the
      // last block of its kind.
      int canonical;
      bool is_new = false;
      if (std::optional<int64_t> i = OptionalIndex(*entry)) {
        canonical = block("d" + std::to_string(*i), kind, is_new);
      } else if (!whole && state.last_reasoning >= 0 && state.reasoning[state.last_reasoning].kind == kind) {
        canonical = state.last_reasoning;
      } else {
        canonical = block("n" + std::to_string(state.reasoning.size()), kind, is_new);
      }
      state.last_reasoning = canonical;
      ReasoningBlock& b = state.reasoning[canonical];
      b.kind = kind;
      ReasoningDelta delta{index,
                           canonical,
                           kind,
                           ValidUtf8(b.text.Push(text)),
                           ValidUtf8(StringAt(*entry, "signature")),
                           ValidUtf8(data),
                           ValidUtf8(format),
                           ValidUtf8(id)};
      if (is_new || !delta.text.empty() || !delta.signature.empty() || !delta.data.empty()) {
        reasoning_out.emplace_back(std::move(delta));
      }
    }
  }
  if (details_have_text) return;  // `reasoning` repeats the text of the details
  // OpenRouter's `reasoning`; DeepSeek's, Qwen's and Moonshot's
  // `reasoning_content` (api-docs.deepseek.com/guides/reasoning_model). Some
  // servers send both with the same text: one is read.
  std::string_view plain = StringAt(carrier, "reasoning");
  if (plain.empty()) plain = StringAt(carrier, "reasoning_content");
  if (plain.empty()) return;
  bool is_new = false;
  const int canonical = block("plain", ReasoningPart::Kind::kText, is_new);
  state.last_reasoning = canonical;
  std::string complete = ValidUtf8(state.reasoning[canonical].text.Push(plain));
  if (is_new || !complete.empty()) {
    reasoning_out.emplace_back(ReasoningDelta{index, canonical, ReasoningPart::Kind::kText, std::move(complete)});
  }
}

void ResponseDecoder::AbsorbToolCall(int index, Choice& state, const json::object& entry, bool whole,
                                     std::vector<StreamEvent>& out) {
  const std::string id = ValidUtf8(StringAt(entry, "id"));
  const std::optional<int64_t> upstream_index = OptionalIndex(entry);
  std::string_view name;
  std::string arguments;
  if (const json::object* function = ObjectAt(entry, "function")) {
    name = StringAt(*function, "name");
    if (const json::value* args = Present(*function, "arguments")) {
      if (args->is_string()) {
        arguments = View(args->get_string());
      } else if (args->is_object()) {  // servers that send the object itself
        arguments = json::serialize(*args);
      }
    }
  }

  // Renumbering (WIRE-FORMATS.md 3.1: parallel calls must get distinct
  // indexes): a new `id` starts a new call; a known id, or a known `index`
  // without an id, continues one; a fragment with neither continues the last.
  // In a whole answer every entry is its own call.
  int canonical = -1;
  if (!whole) {
    if (!id.empty()) {
      if (auto it = state.call_by_id.find(id); it != state.call_by_id.end()) canonical = it->second;
    } else if (upstream_index) {
      if (auto it = state.call_by_index.find(*upstream_index); it != state.call_by_index.end()) canonical = it->second;
    } else {
      canonical = state.last_call;
    }
  }
  const bool is_new = canonical < 0;
  if (is_new) {
    canonical = static_cast<int>(state.calls.size());
    state.calls.push_back(ToolCall{id.empty() ? NewToolCallId() : id, false, {}});
    state.call_by_id[state.calls.back().id] = canonical;
  }
  if (!id.empty()) state.call_by_id[id] = canonical;
  if (upstream_index) state.call_by_index[*upstream_index] = canonical;
  state.last_call = canonical;

  ToolCall& call = state.calls[canonical];
  ToolCallDelta delta{index, canonical};
  if (is_new) delta.id = call.id;
  if (!name.empty() && !call.name_sent) {
    delta.name = ValidUtf8(name);
    call.name_sent = true;
  }
  delta.arguments = ValidUtf8(call.arguments.Push(arguments));
  if (!arguments.empty()) call.has_arguments = true;
  if (is_new || !delta.name.empty() || !delta.arguments.empty()) out.emplace_back(std::move(delta));
}

void ResponseDecoder::FlushChoice(int index, Choice& state, std::vector<StreamEvent>& out) {
  for (std::size_t i = 0; i < state.reasoning.size(); ++i) {
    if (std::string rest = state.reasoning[i].text.Flush(); !rest.empty()) {
      out.emplace_back(ReasoningDelta{index, static_cast<int>(i), state.reasoning[i].kind, std::move(rest)});
    }
  }
  if (std::string rest = state.text.Flush(); !rest.empty()) out.emplace_back(TextDelta{index, std::move(rest)});
  for (std::size_t i = 0; i < state.calls.size(); ++i) {
    if (std::string rest = state.calls[i].arguments.Flush(); !rest.empty()) {
      out.emplace_back(ToolCallDelta{index, static_cast<int>(i), {}, {}, std::move(rest)});
    } else if (!state.calls[i].has_arguments) {
      // A call that never sent an argument fragment takes no arguments: the
      // canonical stream says "{}" (core/chat.hpp ToolCallDelta), so that a
      // client concatenating fragments gets valid JSON.
      state.calls[i].has_arguments = true;
      out.emplace_back(ToolCallDelta{index, static_cast<int>(i), {}, {}, "{}"});
    }
  }
}

// ---------------------------------------------------------------- public: StreamEncoder

StreamEncoder::StreamEncoder(ResponseMeta meta, ResponseOptions options)
    : meta_(std::move(meta)), options_(options) {}

std::string StreamEncoder::Chunk(json::object choice) const {
  json::object out = Envelope(meta_, ChunkObject(options_.kind));
  out["choices"] = json::array{std::move(choice)};
  return SseFrame(json::serialize(out));
}

std::string StreamEncoder::Encode(const StreamEvent& event) {
  const bool chat = options_.kind == RequestKind::kChat;
  // A chat choice chunk; the first one of a choice says who is speaking.
  auto chat_choice = [&](int index, json::object delta, json::value finish) {
    Choice& c = choices_[index];
    if (!c.role_sent) {
      json::object with_role{{"role", "assistant"}};
      for (auto& [k, v] : delta) with_role[k] = std::move(v);
      delta = std::move(with_role);
      c.role_sent = true;
    }
    return json::object{
        {"index", index}, {"delta", std::move(delta)}, {"logprobs", nullptr}, {"finish_reason", std::move(finish)}};
  };
  auto text_choice = [](int index, std::string_view text, json::value finish) {
    return json::object{{"index", index}, {"text", text}, {"logprobs", nullptr}, {"finish_reason", std::move(finish)}};
  };

  std::string out;
  if (const auto* e = std::get_if<TextDelta>(&event)) {
    if (e->text.empty()) return out;
    out = chat ? Chunk(chat_choice(e->choice, json::object{{"content", e->text}}, nullptr))
               : Chunk(text_choice(e->choice, e->text, nullptr));
  } else if (const auto* e = std::get_if<ReasoningDelta>(&event)) {
    if (!chat || !options_.include_reasoning) return out;
    Choice& c = choices_[e->choice];
    auto [it, fresh] = c.blocks.try_emplace(e->index);
    SentBlock& block = it->second;
    if (fresh) block.index = c.next_detail_index++;
    if (!e->format.empty()) block.format = e->format;
    if (!e->id.empty()) block.id = e->id;
    if (e->text.empty() && e->signature.empty() && e->data.empty()) return out;
    json::object delta;
    // OpenRouter shows reasoning twice: as text in `reasoning` and typed in
    // `reasoning_details` (reasoning-tokens page, "Streaming Response").
    if (e->kind != ReasoningPart::Kind::kEncrypted && !e->text.empty()) delta["reasoning"] = e->text;
    delta["reasoning_details"] = json::array{
        DetailJson(e->kind, e->text, e->signature, e->data, block.format, block.id, block.index)};
    out = Chunk(chat_choice(e->choice, std::move(delta), nullptr));
  } else if (const auto* e = std::get_if<ToolCallDelta>(&event)) {
    if (!chat) return out;
    Choice& c = choices_[e->choice];
    json::object delta;
    auto known = c.call_ids.find(e->index);
    if (known == c.call_ids.end()) {
      // OpenAI's first fragment of a call: index, id, type, name, arguments.
      const std::string id = e->id.empty() ? NewToolCallId() : e->id;
      known = c.call_ids.emplace(e->index, id).first;
      delta["tool_calls"] = json::array{json::object{
          {"index", e->index},
          {"id", id},
          {"type", "function"},
          {"function", json::object{{"name", e->name}, {"arguments", e->arguments}}}}};
    } else if (!e->arguments.empty()) {
      delta["tool_calls"] =
          json::array{json::object{{"index", e->index}, {"function", json::object{{"arguments", e->arguments}}}}};
    }
    if (!e->thought_signature.empty()) {
      auto [sig, fresh] = c.signature_index.emplace(e->index, c.next_detail_index);
      if (fresh) ++c.next_detail_index;
      delta["reasoning_details"] = json::array{DetailJson(ReasoningPart::Kind::kEncrypted, {}, {},
                                                          e->thought_signature, kGeminiFormat, known->second,
                                                          sig->second)};
    }
    if (delta.empty()) return out;
    out = Chunk(chat_choice(e->choice, std::move(delta), nullptr));
  } else if (const auto* e = std::get_if<FinishDelta>(&event)) {
    const json::string reason(FinishReasonName(e->reason));
    if (chat) {
      json::object delta;
      if (!choices_[e->choice].role_sent) delta["content"] = "";
      out = Chunk(chat_choice(e->choice, std::move(delta), reason));
    } else {
      out = Chunk(text_choice(e->choice, "", reason));
    }
  }
  // UsageDelta: the billed usage goes out in Finish.
  if (!out.empty()) started_ = true;
  return out;
}

std::string StreamEncoder::Finish(const Usage& usage, Money cost, bool byok) {
  std::string out;
  if (options_.include_usage) {
    // stream_options.include_usage: one last chunk with no choices and the
    // usage of the whole call (WIRE-FORMATS.md 3.1).
    json::object chunk = Envelope(meta_, ChunkObject(options_.kind));
    chunk["choices"] = json::array{};
    chunk["usage"] = UsageObject(usage, cost, byok);
    out += SseFrame(json::serialize(chunk));
  }
  out += SseFrame("[DONE]");
  return out;
}

// ---------------------------------------------------------------- public: whole answers

std::string EncodeResponse(const ResponseMeta& meta, const ResponseOptions& options, const ChatResponse& response,
                           const Usage& usage, Money cost, bool byok) {
  const bool chat = options.kind == RequestKind::kChat;
  std::vector<ChoiceResult> choices = response.choices;
  if (choices.empty()) choices.resize(1);
  json::array out_choices;
  for (std::size_t i = 0; i < choices.size(); ++i) {
    const ChoiceResult& c = choices[i];
    json::object choice{{"index", static_cast<int64_t>(i)}};
    if (chat) {
      json::object message{{"role", "assistant"}};
      message["content"] = c.text.empty() && !c.tool_calls.empty() ? json::value(nullptr) : json::value(c.text);
      message["refusal"] = nullptr;
      std::vector<const ToolCallPart*> calls;
      std::vector<ToolCallPart> with_ids = c.tool_calls;
      for (ToolCallPart& call : with_ids) {
        if (call.id.empty()) call.id = NewToolCallId();
        calls.push_back(&call);
      }
      std::vector<const ReasoningPart*> reasoning;
      if (options.include_reasoning) {
        std::string text;
        for (const ReasoningPart& r : c.reasoning) {
          reasoning.push_back(&r);
          if (r.kind != ReasoningPart::Kind::kEncrypted) text += r.text;
        }
        if (!text.empty()) message["reasoning"] = text;
      }
      json::array details = DetailsJson(reasoning, calls);
      if (!details.empty()) message["reasoning_details"] = std::move(details);
      if (!calls.empty()) {
        json::array tool_calls;
        for (const ToolCallPart* call : calls) tool_calls.push_back(ToolCallJson(*call));
        message["tool_calls"] = std::move(tool_calls);
      }
      choice["message"] = std::move(message);
    } else {
      choice["text"] = c.text;
    }
    choice["logprobs"] = nullptr;
    choice["finish_reason"] = FinishJson(c.finish);
    out_choices.push_back(std::move(choice));
  }
  json::object out = Envelope(meta, chat ? "chat.completion" : "text_completion");
  out["system_fingerprint"] = nullptr;
  out["choices"] = std::move(out_choices);
  out["usage"] = UsageObject(usage, cost, byok);
  return json::serialize(out);
}

std::string UsageJson(const Usage& usage, Money cost, bool byok) {
  return json::serialize(UsageObject(usage, cost, byok));
}

}  // namespace tollgate::wire::openai
