// Anthropic Messages API codec (API version 2023-06-01). The mapping is in
// the header; the facts it relies on, and where they come from:
//
// [MSG]    Messages > Create (docs.anthropic.com/en/api/messages,
//          platform.claude.com/docs/en/api/messages/create): body fields,
//          content block types, tool_choice {auto, any, tool, none} with
//          disable_parallel_tool_use, metadata.user_id, stop_reason values.
// [STREAM] "Streaming Messages" (docs.anthropic.com/en/docs/build-with-claude/streaming,
//          also .../api/messages-streaming): message_start, content_block_start /
//          _delta / _stop, message_delta (its usage is cumulative), message_stop,
//          ping anywhere, `error` events mid-stream (overloaded_error = HTTP 529 when
//          not streaming), unknown event types to be ignored; delta types text_delta,
//          input_json_delta (partial JSON strings), thinking_delta, signature_delta
//          (sent just before the thinking block's content_block_stop).
// [USAGE]  MessageDeltaUsage in the official SDKs (anthropic-sdk-ruby,
//          lib/anthropic/models/message_delta_usage.rb): input_tokens,
//          cache_creation_input_tokens, cache_read_input_tokens may be present
//          (nullable, cumulative) next to output_tokens.
// [CACHE]  "Prompt caching": cache_control {type: "ephemeral", ttl?} on blocks and
//          tools; usage.input_tokens excludes cache reads and writes
//          (WIRE-FORMATS.md 3.2).
// [THINK]  "Extended thinking" and "Adaptive thinking": thinking {type: enabled,
//          budget_tokens >= 1024 and < max_tokens} | {type: disabled} |
//          {type: adaptive} (+ optional `display`: summarized | omitted), effort in
//          output_config.effort (low | medium | high | max); thinking is not
//          compatible with temperature or top_k changes, and top_p must be in
//          [0.95, 1]; thinking blocks are replayed with their signature,
//          redacted_thinking with its data.
// [SO]     "Structured outputs" (platform.claude.com/docs/en/build-with-claude/
//          structured-outputs): JSON outputs are `output_config.format`
//          {type: "json_schema", schema}, generally available, no beta header. The
//          older `output_format` parameter needed `anthropic-beta:
//          structured-outputs-2025-11-13` and is deprecated; it is still accepted
//          from callers here and sent upstream as output_config.format.
// [ERR]    "Errors" (docs.anthropic.com/en/api/errors): {"type": "error",
//          "error": {"type", "message"}}, types invalid_request_error,
//          authentication_error, billing_error, permission_error, not_found_error,
//          request_too_large, rate_limit_error, api_error, timeout_error,
//          overloaded_error.
// [COUNT]  Messages > Count tokens: the create body without max_tokens;
//          answer {"input_tokens": N}.
// [BLANK]  The API rejects empty text blocks ("text content blocks must be
//          non-empty"), blocks that are only whitespace ("... must contain
//          non-whitespace text"), whitespace-only stop sequences ("each stop
//          sequence must contain non-whitespace") and a final assistant turn
//          ending in whitespace; seen in anthropics/claude-code#23440,
//          LibreChat-AI/agents#124, BerriAI/litellm#3286.
// [CC]     Claude Code 2.x sends role "system" entries inside `messages`,
//          thinking {type: adaptive, display: omitted}, context_management and
//          output_config (psewar/skirnir v0.12.1 release notes); such fields are
//          kept in `passthrough`.
#include "tollgate/wire/anthropic.hpp"

#include "json_util.hpp"

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>

#include <algorithm>
#include <cmath>
#include <limits>
#include <utility>

namespace tollgate::wire::anthropic {
namespace {

namespace json = boost::json;
using detail::ArrayAt;
using detail::BadRequest;
using detail::BadUpstream;
using detail::Has;
using detail::ObjectAt;
using detail::StringAt;

// OpenRouter's `format` of Anthropic reasoning blocks.
constexpr std::string_view kFormat = kReasoningFormatAnthropic;
// OpenRouter's limit on `fallbacks` entries (model-fallbacks guide, "Limitations").
constexpr std::size_t kMaxFallbacks = 3;

std::string Str(std::string_view s) { return std::string(s); }

std::string Path(std::string_view base, std::size_t i) {
  std::string out(base);
  out += '.';
  out += std::to_string(i);
  return out;
}

std::string Path(std::string_view base, std::string_view field) {
  std::string out(base);
  out += '.';
  out += field;
  return out;
}

std::optional<double> NumberOf(const json::value& v) {
  if (v.is_int64()) return static_cast<double>(v.get_int64());
  if (v.is_uint64()) return static_cast<double>(v.get_uint64());
  if (v.is_double()) return v.get_double();
  return std::nullopt;
}

// An integral JSON number (1024 or 1024.0).
std::optional<int64_t> IntegerOf(const json::value& v) {
  if (v.is_int64()) return v.get_int64();
  if (v.is_uint64()) return std::nullopt;  // above INT64_MAX
  if (v.is_double()) {
    const double d = v.get_double();
    if (std::trunc(d) == d && std::fabs(d) < 9e15) return static_cast<int64_t>(d);
  }
  return std::nullopt;
}

CacheControl CacheControlOf(const json::object& block) {
  if (const auto* cc = ObjectAt(block, "cache_control")) return *cc;
  return {};
}

void PutCacheControl(json::object& block, const CacheControl& cc) {
  if (!cc.empty()) block["cache_control"] = cc;
}

bool IsBlank(std::string_view s) {
  return std::all_of(s.begin(), s.end(), [](char c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
  });
}

// JSON text of a value, or "{}" for null.
std::string Serialize(const json::value* v) {
  if (v == nullptr || v->is_null()) return "{}";
  return json::serialize(*v);
}

// ------------------------------------------------------------------ inbound decoding

struct DecodeState {
  ChatRequest request;
  std::map<std::string, std::string, std::less<>> tool_names;  // tool_use id -> name
};

Result<ImagePart> DecodeImage(const json::object& block, const std::string& path) {
  const json::object* source = ObjectAt(block, "source");
  if (source == nullptr) return BadRequest(path + ".source: field required", path + ".source");
  const std::string_view type = StringAt(*source, "type");
  ImagePart image;
  image.cache_control = CacheControlOf(block);
  if (type == "base64") {
    const std::string_view media_type = StringAt(*source, "media_type");
    const auto* data = source->if_contains("data");
    if (media_type.empty() || data == nullptr || !data->is_string()) {
      return BadRequest(path + ".source: base64 images need media_type and data", path + ".source");
    }
    image.url = "data:" + Str(media_type) + ";base64," + Str(detail::View(data->get_string()));
  } else if (type == "url") {
    const std::string_view url = StringAt(*source, "url");
    if (url.empty()) return BadRequest(path + ".source.url: field required", path + ".source.url");
    image.url = Str(url);
  } else if (type.empty()) {
    return BadRequest(path + ".source.type: field required", path + ".source.type");
  } else {
    // "file" (Files API) and anything newer: no canonical form; DecodeMessage
    // keeps such images as they are (OpaquePart).
    return BadRequest(path + ".source.type: image source \"" + Str(type) + "\" has no canonical form",
                      path + ".source.type");
  }
  return image;
}

Result<TextPart> DecodeText(const json::object& block, const std::string& path) {
  const auto* text = block.if_contains("text");
  if (text == nullptr || !text->is_string()) {
    return BadRequest(path + ".text: field required (a string)", path + ".text");
  }
  return TextPart{Str(detail::View(text->get_string())), CacheControlOf(block)};
}

Result<ToolResultPart> DecodeToolResult(const json::object& block, const std::string& path,
                                        const DecodeState& state) {
  ToolResultPart result;
  const auto* id = block.if_contains("tool_use_id");
  if (id == nullptr || !id->is_string()) {
    return BadRequest(path + ".tool_use_id: field required", path + ".tool_use_id");
  }
  result.tool_call_id = Str(detail::View(id->get_string()));
  if (auto it = state.tool_names.find(result.tool_call_id); it != state.tool_names.end()) {
    result.name = it->second;
  }
  if (const auto* is_error = block.if_contains("is_error"); is_error != nullptr && !is_error->is_null()) {
    if (!is_error->is_bool()) return BadRequest(path + ".is_error: must be a boolean", path + ".is_error");
    result.is_error = is_error->get_bool();
  }
  result.cache_control = CacheControlOf(block);
  const auto* content = block.if_contains("content");
  if (content == nullptr || content->is_null()) return result;
  if (content->is_string()) {
    result.content.emplace_back(TextPart{Str(detail::View(content->get_string())), {}});
    return result;
  }
  if (!content->is_array()) {
    return BadRequest(path + ".content: must be a string or an array of blocks", path + ".content");
  }
  const json::array& items = content->get_array();
  for (std::size_t k = 0; k < items.size(); ++k) {
    const std::string item_path = Path(Path(path, "content"), k);
    const json::object* item = items[k].if_object();
    if (item == nullptr) return BadRequest(item_path + ": must be an object", item_path);
    const std::string_view type = StringAt(*item, "type");
    if (type == "text") {
      auto text = DecodeText(*item, item_path);
      if (!text) return text.error();
      result.content.emplace_back(std::move(*text));
    } else if (type == "image") {
      auto image = DecodeImage(*item, item_path);
      if (!image) return image.error();
      result.content.emplace_back(std::move(*image));
    } else {
      return BadRequest(
          item_path + ".type: tool_result content block type \"" + Str(type) + "\" is not supported",
          item_path + ".type");
    }
  }
  return result;
}

Result<void> DecodeMessage(const json::value& value, std::size_t i, DecodeState& state) {
  const std::string path = Path("messages", i);
  const json::object* message = value.if_object();
  if (message == nullptr) return BadRequest(path + ": must be an object", path);
  const std::string_view role_name = StringAt(*message, "role");
  Role role;
  if (role_name == "user") {
    role = Role::kUser;
  } else if (role_name == "assistant") {
    role = Role::kAssistant;
  } else if (role_name == "system") {
    // Not in the public reference, but sent by Claude Code [CC] and accepted
    // by newer models as a mid-conversation system message.
    role = Role::kSystem;
  } else {
    return BadRequest(path + ".role: must be \"user\" or \"assistant\"", path + ".role");
  }
  const auto* content = message->if_contains("content");
  if (content == nullptr) return BadRequest(path + ".content: field required", path + ".content");
  Message main{role, {}, {}};
  if (content->is_string()) {
    main.parts.emplace_back(TextPart{Str(detail::View(content->get_string())), {}});
    state.request.messages.push_back(std::move(main));
    return {};
  }
  if (!content->is_array()) {
    return BadRequest(path + ".content: must be a string or an array of blocks", path + ".content");
  }
  std::vector<Message> tool_messages;
  const json::array& blocks = content->get_array();
  for (std::size_t j = 0; j < blocks.size(); ++j) {
    const std::string block_path = Path(Path(path, "content"), j);
    const json::object* block = blocks[j].if_object();
    if (block == nullptr) return BadRequest(block_path + ": must be an object", block_path);
    const std::string_view type = StringAt(*block, "type");
    if (role == Role::kSystem && type != "text") {
      return BadRequest(block_path + ".type: system messages hold only text blocks", block_path + ".type");
    }
    if (type == "text") {
      auto text = DecodeText(*block, block_path);
      if (!text) return text.error();
      main.parts.emplace_back(std::move(*text));
    } else if (type == "image") {
      const json::object* source = ObjectAt(*block, "source");
      const std::string_view source_type = source != nullptr ? StringAt(*source, "type") : std::string_view{};
      if (source_type == "file") {
        // A Files API image: only Anthropic can resolve it.
        main.parts.emplace_back(OpaquePart{ApiFlavor::kAnthropicMessages, *block, /*essential=*/true});
        continue;
      }
      auto image = DecodeImage(*block, block_path);
      if (!image) return image.error();
      main.parts.emplace_back(std::move(*image));
    } else if (type == "tool_use") {
      ToolCallPart call;
      call.id = Str(StringAt(*block, "id"));
      call.name = Str(StringAt(*block, "name"));
      if (call.id.empty()) return BadRequest(block_path + ".id: field required", block_path + ".id");
      if (call.name.empty()) return BadRequest(block_path + ".name: field required", block_path + ".name");
      const auto* input = block->if_contains("input");
      if (input != nullptr && !input->is_null() && !input->is_object()) {
        return BadRequest(block_path + ".input: must be an object", block_path + ".input");
      }
      call.arguments = Serialize(input);
      call.cache_control = CacheControlOf(*block);
      state.tool_names[call.id] = call.name;
      main.parts.emplace_back(std::move(call));
    } else if (type == "tool_result") {
      if (role != Role::kUser) {
        return BadRequest(block_path + ": tool_result blocks belong in user messages", block_path);
      }
      auto result = DecodeToolResult(*block, block_path, state);
      if (!result) return result.error();
      tool_messages.push_back(Message{Role::kTool, {std::move(*result)}, {}});
    } else if (type == "thinking") {
      ReasoningPart part;
      part.kind = ReasoningPart::Kind::kText;
      part.text = Str(StringAt(*block, "thinking"));
      part.signature = Str(StringAt(*block, "signature"));
      part.format = Str(kFormat);
      main.parts.emplace_back(std::move(part));
    } else if (type == "redacted_thinking") {
      ReasoningPart part;
      part.kind = ReasoningPart::Kind::kEncrypted;
      part.data = Str(StringAt(*block, "data"));
      if (part.data.empty()) return BadRequest(block_path + ".data: field required", block_path + ".data");
      part.format = Str(kFormat);
      main.parts.emplace_back(std::move(part));
    } else if (type.empty()) {
      return BadRequest(block_path + ".type: field required", block_path + ".type");
    } else {
      // document, search_result, container_upload, server_tool_use,
      // web_search_tool_result and newer block types: kept as they came for
      // an Anthropic upstream (OpaquePart). What the model must read
      // (documents, search results, uploads) is essential; the record of a
      // server tool's run is history other providers can do without.
      const bool essential = !(type == "server_tool_use" || type.ends_with("_tool_result"));
      main.parts.emplace_back(OpaquePart{ApiFlavor::kAnthropicMessages, *block, essential});
    }
  }
  // Tool results first: in Anthropic's shape they open the user turn that
  // answers the tool calls, and canonically they are kTool messages.
  for (auto& m : tool_messages) state.request.messages.push_back(std::move(m));
  if (tool_messages.empty() || !main.parts.empty()) state.request.messages.push_back(std::move(main));
  return {};
}

Result<void> DecodeSystem(const json::value& system, DecodeState& state) {
  if (system.is_null()) return {};
  if (system.is_string()) {
    const std::string_view text = detail::View(system.get_string());
    if (!text.empty()) {
      state.request.messages.push_back(Message{Role::kSystem, {TextPart{Str(text), {}}}, {}});
    }
    return {};
  }
  if (!system.is_array()) return BadRequest("system: must be a string or an array of text blocks", "system");
  const json::array& blocks = system.get_array();
  for (std::size_t j = 0; j < blocks.size(); ++j) {
    const std::string path = Path("system", j);
    const json::object* block = blocks[j].if_object();
    if (block == nullptr || StringAt(*block, "type") != "text") {
      return BadRequest(path + ": system blocks must be text blocks", path);
    }
    auto text = DecodeText(*block, path);
    if (!text) return text.error();
    state.request.messages.push_back(Message{Role::kSystem, {std::move(*text)}, {}});
  }
  return {};
}

Result<void> DecodeTools(const json::value& tools, DecodeState& state) {
  if (tools.is_null()) return {};
  if (!tools.is_array()) return BadRequest("tools: must be an array", "tools");
  json::array server_tools;
  const json::array& items = tools.get_array();
  for (std::size_t j = 0; j < items.size(); ++j) {
    const std::string path = Path("tools", j);
    const json::object* tool = items[j].if_object();
    if (tool == nullptr) return BadRequest(path + ": must be an object", path);
    if (Has(*tool, "type") && StringAt(*tool, "type") != "custom") {
      // A server tool (web_search_..., code_execution_..., bash_..., ...):
      // only an Anthropic upstream can run it.
      server_tools.push_back(*tool);
      continue;
    }
    ToolDefinition def;
    def.name = Str(StringAt(*tool, "name"));
    if (def.name.empty()) return BadRequest(path + ".name: field required", path + ".name");
    def.description = Str(StringAt(*tool, "description"));
    if (const auto* schema = tool->if_contains("input_schema"); schema != nullptr && !schema->is_null()) {
      if (!schema->is_object()) {
        return BadRequest(path + ".input_schema: must be an object", path + ".input_schema");
      }
      def.parameters = *schema;
    }
    if (const auto* strict = tool->if_contains("strict"); strict != nullptr && strict->is_bool()) {
      def.strict = strict->get_bool();
    }
    def.cache_control = CacheControlOf(*tool);
    state.request.tools.push_back(std::move(def));
  }
  if (!server_tools.empty()) state.request.passthrough["tools"] = std::move(server_tools);
  return {};
}

Result<void> DecodeToolChoice(const json::value& value, DecodeState& state) {
  if (value.is_null()) return {};
  const json::object* choice = value.if_object();
  if (choice == nullptr) return BadRequest("tool_choice: must be an object", "tool_choice");
  const std::string_view type = StringAt(*choice, "type");
  ToolChoice out;
  if (type == "auto") {
    out.mode = ToolChoice::Mode::kAuto;
  } else if (type == "any") {
    out.mode = ToolChoice::Mode::kRequired;
  } else if (type == "none") {
    out.mode = ToolChoice::Mode::kNone;
  } else if (type == "tool") {
    out.mode = ToolChoice::Mode::kFunction;
    out.function_name = Str(StringAt(*choice, "name"));
    if (out.function_name.empty()) return BadRequest("tool_choice.name: field required", "tool_choice.name");
  } else {
    return BadRequest("tool_choice.type: must be auto, any, tool or none", "tool_choice.type");
  }
  if (const auto* d = choice->if_contains("disable_parallel_tool_use"); d != nullptr && d->is_bool()) {
    state.request.parallel_tool_calls = !d->get_bool();
  }
  state.request.tool_choice = std::move(out);
  return {};
}

Result<void> DecodeThinking(const json::value& value, DecodeState& state) {
  if (value.is_null()) return {};
  const json::object* thinking = value.if_object();
  if (thinking == nullptr) return BadRequest("thinking: must be an object", "thinking");
  const auto* type_value = thinking->if_contains("type");
  if (type_value == nullptr || !type_value->is_string()) {
    return BadRequest("thinking.type: field required", "thinking.type");
  }
  const std::string_view type = detail::View(type_value->get_string());
  ChatRequest& request = state.request;
  if (type == "enabled") {
    const auto* budget_value = thinking->if_contains("budget_tokens");
    const auto budget = budget_value != nullptr ? IntegerOf(*budget_value) : std::nullopt;
    if (!budget || *budget < 0) {
      return BadRequest("thinking.budget_tokens: a non-negative integer is required",
                        "thinking.budget_tokens");
    }
    request.reasoning = ReasoningSettings{{}, *budget, false, true};
    // Fields the canonical settings cannot say (`display`) travel as they are.
    if (thinking->size() > 2) request.passthrough["thinking"] = *thinking;
  } else if (type == "disabled") {
    request.reasoning = ReasoningSettings{{}, std::nullopt, false, false};
    if (thinking->size() > 1) request.passthrough["thinking"] = *thinking;
  } else if (type == "adaptive") {
    // The model decides how much to think [THINK]; other upstreams see
    // "reasoning enabled" (effort from output_config.effort, below).
    request.reasoning = ReasoningSettings{{}, std::nullopt, false, true};
    request.passthrough["thinking"] = *thinking;
  } else {
    // A type newer than this codec: Anthropic upstreams still get it.
    request.passthrough["thinking"] = *thinking;
  }
  return {};
}

Result<void> DecodeJsonSchemaFormat(const json::object& format, const std::string& path, DecodeState& state) {
  const auto* schema = format.if_contains("schema");
  if (schema == nullptr || !schema->is_object()) {
    return BadRequest(path + ".schema: an object is required", path + ".schema");
  }
  ResponseFormat rf;
  rf.type = ResponseFormat::Type::kJsonSchema;
  rf.schema = *schema;
  state.request.response_format = std::move(rf);
  return {};
}

// Anthropic effort [THINK] -> canonical effort ("max" is beyond OpenAI's
// "xhigh" scale; it maps to the top).
std::string CanonicalEffort(std::string_view effort) {
  if (effort == "max") return "xhigh";
  if (effort == "xhigh" || effort == "high" || effort == "medium" || effort == "low") return Str(effort);
  return {};
}

Result<void> DecodeOutputConfig(const json::value& value, DecodeState& state) {
  if (value.is_null()) return {};
  const json::object* config = value.if_object();
  if (config == nullptr) {
    state.request.passthrough["output_config"] = value;
    return {};
  }
  json::object rest = *config;
  if (const json::object* format = ObjectAt(*config, "format");
      format != nullptr && StringAt(*format, "type") == "json_schema") {
    auto r = DecodeJsonSchemaFormat(*format, "output_config.format", state);
    if (!r) return r;
    rest.erase("format");
  }
  // effort shapes every reply of an Anthropic model; for other upstreams it
  // says how hard to reason, which only matters when thinking is on.
  const std::string effort = CanonicalEffort(StringAt(*config, "effort"));
  if (!effort.empty() && state.request.reasoning && state.request.reasoning->Requested()) {
    state.request.reasoning->effort = effort;
  }
  if (!rest.empty()) state.request.passthrough["output_config"] = std::move(rest);
  return {};
}

Result<void> DecodeMetadata(const json::value& value, DecodeState& state) {
  if (value.is_null()) return {};
  const json::object* metadata = value.if_object();
  if (metadata == nullptr) return BadRequest("metadata: must be an object", "metadata");
  json::object rest = *metadata;
  if (const auto* user = metadata->if_contains("user_id"); user != nullptr && user->is_string()) {
    state.request.user = Str(detail::View(user->get_string()));
    rest.erase("user_id");
  }
  state.request.metadata = std::move(rest);
  return {};
}

// OpenRouter's additions to the Messages API (openrouter.ai/docs/api-reference,
// "Create a message"; @openrouter/sdk 1.3 MessagesRequest): the routing fields
// every inbound API shares (DecodeRoutingFields), Anthropic-SDK-shaped
// `fallbacks` [{model}] (at most 3, not together with `models`;
// openrouter.ai/docs/guides/routing/model-fallbacks), and a top-level `user`,
// which fills `user` when metadata.user_id (the native field, read first)
// did not.
Result<void> DecodeOpenRouterFields(const json::object& root, DecodeState& state) {
  ChatRequest& request = state.request;
  if (auto e = DecodeRoutingFields(root, ParamStyle::kAnthropic, false, request)) return *e;
  if (const auto* v = root.if_contains("fallbacks"); v != nullptr && !v->is_null()) {
    if (const auto* models = root.if_contains("models"); models != nullptr && !models->is_null()) {
      return BadRequest("fallbacks: cannot be combined with models", "fallbacks");
    }
    const json::array* entries = v->if_array();
    if (entries == nullptr) return BadRequest("fallbacks: must be an array of {\"model\": ...}", "fallbacks");
    if (entries->size() > kMaxFallbacks) {
      return BadRequest("fallbacks: takes at most " + std::to_string(kMaxFallbacks) + " entries", "fallbacks");
    }
    for (std::size_t i = 0; i < entries->size(); ++i) {
      const std::string path = Path(Path("fallbacks", i), std::string_view("model"));
      const json::object* entry = (*entries)[i].if_object();
      const json::value* model = entry != nullptr ? entry->if_contains("model") : nullptr;
      if (model == nullptr || !model->is_string() || model->get_string().empty()) {
        return BadRequest(path + ": must be a non-empty string", path);
      }
      const std::string id = Str(detail::View(model->get_string()));
      if (id == request.model ||
          std::find(request.fallback_models.begin(), request.fallback_models.end(), id) !=
              request.fallback_models.end()) {
        continue;  // a repeat adds nothing, as in `models`
      }
      request.fallback_models.push_back(id);
    }
  }
  if (const auto* v = root.if_contains("user"); v != nullptr && !v->is_null()) {
    if (!v->is_string()) return BadRequest("user: must be a string", "user");
    if (request.user.empty()) request.user = Str(detail::View(v->get_string()));
  }
  return {};
}

// The fields this codec models; everything else goes to `passthrough`.
bool IsModeledField(std::string_view key) {
  static constexpr std::string_view kFields[] = {
      "model",       "messages", "system", "max_tokens",    "stop_sequences",
      "temperature", "top_p",    "top_k",  "tools",         "tool_choice",
      "thinking",    "metadata", "stream", "output_config", "output_format",
      // OpenRouter's fields on its Messages endpoint: Tollgate's own routing
      // input, never sent to an upstream (Anthropic rejects unknown fields).
      "provider",    "models",   "fallbacks", "session_id", "debug", "user",
  };
  return std::find(std::begin(kFields), std::end(kFields), key) != std::end(kFields);
}

Result<ChatRequest> DecodeRequest(std::string_view body, bool count_tokens) {
  const auto parsed = ParseJson(body);
  if (!parsed) return BadRequest("request body is not valid JSON");
  const json::object* root = parsed->if_object();
  if (root == nullptr) return BadRequest("request body must be a JSON object");

  DecodeState state;
  ChatRequest& request = state.request;
  request.kind = RequestKind::kChat;
  request.api = ApiFlavor::kAnthropicMessages;

  const auto* model = root->if_contains("model");
  if (model == nullptr || !model->is_string() || model->get_string().empty()) {
    return BadRequest("model: field required", "model");
  }
  request.model = Str(detail::View(model->get_string()));

  const auto* max_tokens = root->if_contains("max_tokens");
  if (max_tokens != nullptr && !max_tokens->is_null()) {
    const auto n = IntegerOf(*max_tokens);
    if (!n || *n < 1) {
      if (!count_tokens) return BadRequest("max_tokens: must be a positive integer", "max_tokens");
    } else {
      request.max_tokens = *n;
      request.max_tokens_field = MaxTokensField::kMaxTokens;
    }
  } else if (!count_tokens) {
    return BadRequest("max_tokens: field required", "max_tokens");
  }

  if (const auto* system = root->if_contains("system")) {
    auto r = DecodeSystem(*system, state);
    if (!r) return r.error();
  }

  const json::array* messages = ArrayAt(*root, "messages");
  if (messages == nullptr) return BadRequest("messages: field required (an array)", "messages");
  if (messages->empty()) return BadRequest("messages: at least one message is required", "messages");
  for (std::size_t i = 0; i < messages->size(); ++i) {
    auto r = DecodeMessage((*messages)[i], i, state);
    if (!r) return r.error();
  }

  if (const auto* stop = root->if_contains("stop_sequences"); stop != nullptr && !stop->is_null()) {
    if (!stop->is_array()) return BadRequest("stop_sequences: must be an array of strings", "stop_sequences");
    const json::array& items = stop->get_array();
    for (std::size_t j = 0; j < items.size(); ++j) {
      if (!items[j].is_string()) {
        return BadRequest(Path("stop_sequences", j) + ": must be a string", Path("stop_sequences", j));
      }
      request.stop.push_back(Str(detail::View(items[j].get_string())));
    }
  }

  for (const std::string_view key : {"temperature", "top_p"}) {
    const auto* v = root->if_contains(key);
    if (v == nullptr || v->is_null()) continue;
    const auto number = NumberOf(*v);
    if (!number) return BadRequest(Str(key) + ": must be a number", Str(key));
    // Both range over [0, 1] in the Messages API reference.
    if (!(*number >= 0.0 && *number <= 1.0)) return BadRequest(Str(key) + ": must be between 0 and 1", Str(key));
    (key == "temperature" ? request.temperature : request.top_p) = *number;
  }
  if (const auto* v = root->if_contains("top_k"); v != nullptr && !v->is_null()) {
    const auto n = IntegerOf(*v);
    if (!n) return BadRequest("top_k: must be an integer", "top_k");
    if (*n < 0) return BadRequest("top_k: must not be negative", "top_k");
    request.top_k = *n;
  }
  if (const auto* v = root->if_contains("stream"); v != nullptr && !v->is_null()) {
    if (!v->is_bool()) return BadRequest("stream: must be a boolean", "stream");
    request.stream = v->get_bool();
  }

  if (const auto* v = root->if_contains("tools")) {
    auto r = DecodeTools(*v, state);
    if (!r) return r.error();
  }
  if (const auto* v = root->if_contains("tool_choice")) {
    auto r = DecodeToolChoice(*v, state);
    if (!r) return r.error();
  }
  if (const auto* v = root->if_contains("thinking")) {
    auto r = DecodeThinking(*v, state);
    if (!r) return r.error();
  }
  if (const auto* v = root->if_contains("output_config")) {
    auto r = DecodeOutputConfig(*v, state);
    if (!r) return r.error();
  }
  if (const json::object* format = ObjectAt(*root, "output_format");
      format != nullptr && !request.response_format && StringAt(*format, "type") == "json_schema") {
    auto r = DecodeJsonSchemaFormat(*format, "output_format", state);
    if (!r) return r.error();
  }
  if (const auto* v = root->if_contains("metadata")) {
    auto r = DecodeMetadata(*v, state);
    if (!r) return r.error();
  }
  {
    auto r = DecodeOpenRouterFields(*root, state);
    if (!r) return r.error();
  }

  for (const auto& field : *root) {
    if (!IsModeledField(field.key())) request.passthrough[field.key()] = field.value();
  }
  return std::move(state.request);
}

// ------------------------------------------------------------------ outbound encoding

json::object TextBlock(std::string_view text, const CacheControl& cc) {
  json::object block;
  block["type"] = "text";
  block["text"] = text;
  PutCacheControl(block, cc);
  return block;
}

// data URI -> base64 source with media_type; anything else -> url source
// (http(s) URLs; Anthropic rejects other schemes itself).
json::object ImageBlock(const ImagePart& image) {
  json::object source;
  if (auto data = ParseDataUri(image.url)) {
    source["type"] = "base64";
    source["media_type"] = data->media_type;
    source["data"] = data->base64;
  } else {
    source["type"] = "url";
    source["url"] = image.url;
  }
  json::object block;
  block["type"] = "image";
  block["source"] = std::move(source);
  PutCacheControl(block, image.cache_control);
  return block;
}

// The arguments object of a call: parsed JSON text, {} when empty or not an object.
json::object InputObject(std::string_view arguments) {
  if (auto v = ParseJson(arguments); v && v->is_object()) return std::move(v->get_object());
  return {};
}

json::object ToolUseBlock(const ToolCallPart& call) {
  json::object block;
  block["type"] = "tool_use";
  block["id"] = call.id;
  block["name"] = call.name;
  block["input"] = InputObject(call.arguments);
  PutCacheControl(block, call.cache_control);
  return block;
}

json::object ToolResultBlock(const ToolResultPart& result) {
  json::object block;
  block["type"] = "tool_result";
  block["tool_use_id"] = result.tool_call_id;
  json::array content;
  bool plain_text = true;  // one text part without cache_control: sent as a string
  for (const auto& part : result.content) {
    if (const auto* text = std::get_if<TextPart>(&part)) {
      if (IsBlank(text->text)) continue;  // [BLANK]
      plain_text = plain_text && text->cache_control.empty();
      content.push_back(TextBlock(text->text, text->cache_control));
    } else if (const auto* image = std::get_if<ImagePart>(&part)) {
      plain_text = false;
      content.push_back(ImageBlock(*image));
    }
  }
  if (content.size() == 1 && plain_text) {
    block["content"] = content[0].as_object()["text"];
  } else if (!content.empty()) {
    block["content"] = std::move(content);
  }
  if (result.is_error) block["is_error"] = true;
  PutCacheControl(block, result.cache_control);
  return block;
}

// Only reasoning Anthropic signed can go back to it [THINK].
bool IsAnthropicFormat(std::string_view format) { return format.empty() || format == kFormat; }

std::optional<json::object> ReasoningBlock(const ReasoningPart& part) {
  if (!IsAnthropicFormat(part.format)) return std::nullopt;
  json::object block;
  if (part.kind == ReasoningPart::Kind::kText && !part.signature.empty()) {
    block["type"] = "thinking";
    block["thinking"] = part.text;
    block["signature"] = part.signature;
    return block;
  }
  if (part.kind == ReasoningPart::Kind::kEncrypted && !part.data.empty()) {
    block["type"] = "redacted_thinking";
    block["data"] = part.data;
    return block;
  }
  return std::nullopt;
}

struct Turn {
  bool assistant = false;
  json::array tool_results;  // user turns: always first [MSG]
  json::array blocks;
};

Turn ToTurn(const Message& message) {
  Turn turn;
  turn.assistant = message.role == Role::kAssistant;
  for (const auto& part : message.parts) {
    if (const auto* text = std::get_if<TextPart>(&part)) {
      if (!IsBlank(text->text)) turn.blocks.push_back(TextBlock(text->text, text->cache_control));  // [BLANK]
    } else if (const auto* image = std::get_if<ImagePart>(&part)) {
      if (!turn.assistant) turn.blocks.push_back(ImageBlock(*image));
    } else if (const auto* call = std::get_if<ToolCallPart>(&part)) {
      if (turn.assistant) turn.blocks.push_back(ToolUseBlock(*call));
    } else if (const auto* result = std::get_if<ToolResultPart>(&part)) {
      if (!turn.assistant) turn.tool_results.push_back(ToolResultBlock(*result));
    } else if (const auto* reasoning = std::get_if<ReasoningPart>(&part)) {
      if (!turn.assistant) continue;
      if (auto block = ReasoningBlock(*reasoning)) turn.blocks.push_back(std::move(*block));
    } else if (const auto* opaque = std::get_if<OpaquePart>(&part)) {
      // Anthropic's own blocks that the canonical model does not carry, as
      // the caller sent them.
      if (opaque->api == ApiFlavor::kAnthropicMessages) turn.blocks.push_back(opaque->block);
    }
  }
  return turn;
}

std::string_view BlockType(const json::value& block) { return StringAt(block.as_object(), "type"); }

bool IsReasoningBlock(const json::value& block) {
  const std::string_view type = BlockType(block);
  return type == "thinking" || type == "redacted_thinking";
}

// Drops turns left empty and merges neighbours of the same role (consecutive
// same-role turns merge [MSG]; tool results stay first in a user turn).
void MergeTurns(std::vector<Turn>& turns) {
  std::vector<Turn> merged;
  for (Turn& turn : turns) {
    if (turn.blocks.empty() && turn.tool_results.empty()) continue;
    if (!merged.empty() && merged.back().assistant == turn.assistant) {
      Turn& last = merged.back();
      for (auto& b : turn.tool_results) last.tool_results.push_back(std::move(b));
      for (auto& b : turn.blocks) last.blocks.push_back(std::move(b));
    } else {
      merged.push_back(std::move(turn));
    }
  }
  turns = std::move(merged);
}

// The API rejects an assistant turn that ends in a thinking block ("The final
// block in an assistant message cannot be `thinking`", tailcallhq/forgecode#2107).
void DropTrailingReasoning(std::vector<Turn>& turns) {
  for (Turn& turn : turns) {
    while (turn.assistant && !turn.blocks.empty() && IsReasoningBlock(turn.blocks.back())) {
      turn.blocks.pop_back();
    }
  }
  MergeTurns(turns);
}

// A final assistant turn (a prefill) must not end in whitespace [BLANK].
void TrimFinalAssistant(std::vector<Turn>& turns) {
  while (!turns.empty() && turns.back().assistant) {
    json::array& blocks = turns.back().blocks;
    if (blocks.empty() || BlockType(blocks.back()) != "text") return;
    json::object& last = blocks.back().as_object();
    std::string text(detail::View(last["text"].as_string()));
    while (!text.empty() && IsBlank(std::string_view(&text.back(), 1))) text.pop_back();
    if (!text.empty()) {
      last["text"] = text;
      return;
    }
    blocks.pop_back();
    DropTrailingReasoning(turns);
  }
}

// With thinking on, the assistant turn of the current tool loop (the last
// one, when it called tools) must start with its thinking block ("When
// `thinking` is enabled, a final `assistant` message must start with a
// thinking block", n8n-io/n8n#22550). A conversation that began on another
// model has none to replay; such a request goes without thinking.
bool ToolLoopLacksThinking(const std::vector<Turn>& turns) {
  for (auto it = turns.rbegin(); it != turns.rend(); ++it) {
    if (!it->assistant) continue;
    const bool calls_tools = std::any_of(it->blocks.begin(), it->blocks.end(),
                                         [](const json::value& b) { return BlockType(b) == "tool_use"; });
    return calls_tools && !IsReasoningBlock(it->blocks.front());
  }
  return false;
}

// With thinking off, a final assistant turn (a prefill) may not hold
// thinking blocks ("When thinking is disabled, an `assistant` message in the
// final position cannot contain `thinking`", tailcallhq/forgecode#1853).
void DropFinalReasoning(std::vector<Turn>& turns) {
  if (turns.empty() || !turns.back().assistant) return;
  json::array kept;
  for (auto& b : turns.back().blocks) {
    if (!IsReasoningBlock(b)) kept.push_back(std::move(b));
  }
  turns.back().blocks = std::move(kept);
  MergeTurns(turns);
  TrimFinalAssistant(turns);
}

int64_t ThinkingBudget(const ReasoningSettings& reasoning, int64_t max_tokens) {
  if (reasoning.max_tokens && *reasoning.max_tokens > 0) {
    return std::max<int64_t>(*reasoning.max_tokens, 1024);
  }
  // OpenRouter's effort rule (openrouter.ai/docs/guides/best-practices/
  // reasoning-tokens): a share of max_tokens. xhigh is not in that rule as we
  // read it; 95 % keeps it above high.
  double share = 0.5;
  const std::string_view effort = reasoning.effort;
  if (effort == "xhigh") {
    share = 0.95;
  } else if (effort == "high") {
    share = 0.8;
  } else if (effort == "low" || effort == "minimal") {
    share = 0.2;
  }
  return std::max<int64_t>(static_cast<int64_t>(static_cast<double>(max_tokens) * share), 1024);
}

bool ThinkingIsOn(const json::value& thinking) {
  const json::object* o = thinking.if_object();
  if (o == nullptr) return false;
  const std::string_view type = StringAt(*o, "type");
  return type == "enabled" || type == "adaptive";
}

}  // namespace

// ------------------------------------------------------------------ inbound requests

Result<ChatRequest> DecodeMessagesRequest(std::string_view body) { return DecodeRequest(body, false); }

Result<ChatRequest> DecodeCountTokensRequest(std::string_view body) { return DecodeRequest(body, true); }

std::string EncodeCountTokensResponse(int64_t input_tokens) {
  return json::serialize(json::object{{"input_tokens", std::max<int64_t>(input_tokens, 0)}});
}

// ------------------------------------------------------------------ outbound requests

std::string EncodeMessagesRequest(const ChatRequest& request, const RequestOptions& options) {
  const bool anthropic_caller = request.api == ApiFlavor::kAnthropicMessages;
  const json::object empty;
  const json::object& passthrough = anthropic_caller ? request.passthrough : empty;

  json::array system;
  std::vector<Turn> turns;
  for (const Message& message : request.messages) {
    if (message.role == Role::kSystem || message.role == Role::kDeveloper) {
      for (const auto& part : message.parts) {
        if (const auto* text = std::get_if<TextPart>(&part); text != nullptr && !IsBlank(text->text)) {
          system.push_back(TextBlock(text->text, text->cache_control));
        }
      }
      continue;
    }
    turns.push_back(ToTurn(message));
  }
  MergeTurns(turns);
  DropTrailingReasoning(turns);
  TrimFinalAssistant(turns);

  int64_t max_tokens = request.max_tokens.value_or(options.default_max_tokens);
  if (max_tokens < 1) max_tokens = options.default_max_tokens;

  // thinking: the caller's own object when it came from an Anthropic client,
  // else built from the canonical settings.
  std::optional<json::value> thinking;
  bool built_thinking = false;
  const json::value* caller_thinking = passthrough.if_contains("thinking");
  const bool wants_thinking = caller_thinking != nullptr
                                  ? ThinkingIsOn(*caller_thinking)
                                  : request.reasoning && request.reasoning->Requested();
  if (wants_thinking && ToolLoopLacksThinking(turns)) {
    // Sent without thinking (see ToolLoopLacksThinking).
  } else if (caller_thinking != nullptr) {
    thinking = *caller_thinking;
  } else if (wants_thinking) {
    int64_t budget = ThinkingBudget(*request.reasoning, max_tokens);
    if (!request.max_tokens) {
      // No cap from the caller: make room for the budget.
      if (budget >= max_tokens) max_tokens = budget + 1024;
    } else {
      // The caller's max_tokens is its cap on what it pays for: the budget
      // fits under it (Anthropic: 1024 <= budget_tokens < max_tokens), or
      // there is no thinking.
      budget = std::min(budget, max_tokens - 1);
    }
    if (budget >= 1024) {
      thinking = json::object{{"type", "enabled"}, {"budget_tokens", budget}};
      built_thinking = true;
    }
  }
  const bool thinking_on = thinking && ThinkingIsOn(*thinking);
  if (!thinking_on) DropFinalReasoning(turns);

  json::array messages;
  for (Turn& turn : turns) {
    json::array content = std::move(turn.tool_results);
    for (auto& b : turn.blocks) content.push_back(std::move(b));
    messages.push_back(
        json::object{{"role", turn.assistant ? "assistant" : "user"}, {"content", std::move(content)}});
  }

  json::object body;
  body["model"] = options.upstream_model.empty() ? request.model : options.upstream_model;
  body["max_tokens"] = max_tokens;
  if (!system.empty()) body["system"] = std::move(system);
  body["messages"] = std::move(messages);

  json::array tools;
  for (const ToolDefinition& def : request.tools) {
    json::object tool;
    tool["name"] = def.name;
    if (!def.description.empty()) tool["description"] = def.description;
    if (def.parameters.is_object()) {
      tool["input_schema"] = def.parameters;
    } else {
      tool["input_schema"] = json::object{{"type", "object"}, {"properties", json::object{}}};
    }
    if (def.strict) tool["strict"] = *def.strict;
    PutCacheControl(tool, def.cache_control);
    tools.push_back(std::move(tool));
  }
  if (const auto* server = passthrough.if_contains("tools"); server != nullptr && server->is_array()) {
    for (const auto& t : server->get_array()) tools.push_back(t);
  }
  if (!tools.empty()) {
    body["tools"] = std::move(tools);
    if (request.tool_choice || request.parallel_tool_calls) {
      const ToolChoice choice = request.tool_choice.value_or(ToolChoice{});
      json::object tc;
      switch (choice.mode) {
        case ToolChoice::Mode::kAuto: tc["type"] = "auto"; break;
        case ToolChoice::Mode::kRequired: tc["type"] = "any"; break;
        case ToolChoice::Mode::kNone: tc["type"] = "none"; break;
        case ToolChoice::Mode::kFunction:
          tc["type"] = "tool";
          tc["name"] = choice.function_name;
          break;
      }
      if (request.parallel_tool_calls && choice.mode != ToolChoice::Mode::kNone) {
        tc["disable_parallel_tool_use"] = !*request.parallel_tool_calls;
      }
      body["tool_choice"] = std::move(tc);
    }
  }

  if (thinking) body["thinking"] = std::move(*thinking);
  // Thinking does not combine with temperature or top_k, and wants top_p in
  // [0.95, 1] [THINK]. A caller who asked for both through another API gets
  // the thinking; an Anthropic caller's own choice is passed on as written.
  const bool drop_sampling = built_thinking && thinking_on;
  if (request.temperature && !drop_sampling) body["temperature"] = *request.temperature;
  if (request.top_p && !(drop_sampling && *request.top_p < 0.95)) body["top_p"] = *request.top_p;
  if (request.top_k && !drop_sampling) body["top_k"] = *request.top_k;

  json::array stop;
  for (const auto& s : request.stop) {
    if (!IsBlank(s)) stop.push_back(json::string(s));  // [BLANK]
  }
  if (!stop.empty()) body["stop_sequences"] = std::move(stop);

  json::object output_config;
  if (const auto* oc = passthrough.if_contains("output_config"); oc != nullptr && oc->is_object()) {
    output_config = oc->get_object();
  }
  if (request.response_format && request.response_format->type == ResponseFormat::Type::kJsonSchema &&
      request.response_format->schema.is_object()) {
    // [SO]: output_config.format, no beta header needed. json_object has no
    // Anthropic equivalent and is left out.
    output_config["format"] =
        json::object{{"type", "json_schema"}, {"schema", request.response_format->schema}};
  }
  if (!output_config.empty()) body["output_config"] = std::move(output_config);

  if (!request.user.empty()) body["metadata"] = json::object{{"user_id", request.user}};
  if (options.stream) body["stream"] = true;

  for (const auto& field : passthrough) {
    const std::string_view key = field.key();
    if (key == "thinking" || key == "tools" || key == "output_config") continue;  // merged above
    if (!body.contains(key)) body[key] = field.value();
  }
  return json::serialize(body);
}

// ------------------------------------------------------------------ upstream responses

namespace {

FinishReason MapStopReason(std::string_view reason) {
  if (reason == "max_tokens" || reason == "model_context_window_exceeded") return FinishReason::kLength;
  if (reason == "tool_use") return FinishReason::kToolCalls;
  if (reason == "refusal") return FinishReason::kContentFilter;
  return FinishReason::kStop;  // end_turn, stop_sequence, pause_turn, and newer ones
}

Error UpstreamError(const json::object& event) {
  const json::object* error = ObjectAt(event, "error");
  const std::string_view type = error != nullptr ? StringAt(*error, "type") : std::string_view{};
  const std::string_view message = error != nullptr ? StringAt(*error, "message") : std::string_view{};
  ErrorCode code = ErrorCode::kBadGateway;
  if (type == "overloaded_error") {
    code = ErrorCode::kUnavailable;
  } else if (type == "rate_limit_error") {
    code = ErrorCode::kResourceExhausted;
  }
  std::string text = type.empty() ? std::string("error") : ValidUtf8(type);
  if (!message.empty()) text += ": " + ValidUtf8(message);
  return Error{code, std::move(text), {}, {}};
}

std::optional<int64_t> CountAt(const json::object& usage, std::string_view key) {
  return TokenCount(usage.if_contains(key));
}

}  // namespace

void ResponseDecoder::ReadUsage(const json::object& usage) {
  // Each count is cumulative [USAGE]: a newer one replaces the older.
  if (auto n = CountAt(usage, "input_tokens")) input_tokens_ = *n;
  if (auto n = CountAt(usage, "cache_read_input_tokens")) cache_read_tokens_ = *n;
  if (auto n = CountAt(usage, "cache_creation_input_tokens")) cache_creation_tokens_ = *n;
  if (auto n = CountAt(usage, "output_tokens")) output_tokens_ = *n;
}

Usage ResponseDecoder::CurrentUsage() const {
  Usage u;
  u.prompt_tokens = input_tokens_ + cache_read_tokens_ + cache_creation_tokens_;
  u.cached_tokens = cache_read_tokens_;
  u.cache_write_tokens = cache_creation_tokens_;
  u.completion_tokens = output_tokens_;
  ClampUsage(u);
  return u;
}

Result<void> ResponseDecoder::OnBlockStart(const json::object& event, std::vector<StreamEvent>& out) {
  const auto* index_value = event.if_contains("index");
  const json::object* content = ObjectAt(event, "content_block");
  if (index_value == nullptr || !index_value->is_int64() || content == nullptr) {
    return BadUpstream("Anthropic upstream sent a malformed content_block_start");
  }
  auto [it, fresh] = blocks_.try_emplace(index_value->get_int64());
  Block& block = it->second;
  if (!fresh) {  // an index used twice: finish the old block first
    OnBlockStop(block, out);
    block = Block{};
  }
  const std::string_view type = StringAt(*content, "type");
  if (type == "text") {
    block.kind = BlockKind::kText;
    const std::string text = ValidUtf8(block.stitcher.Push(StringAt(*content, "text")));
    if (!text.empty()) out.emplace_back(TextDelta{0, text});
  } else if (type == "thinking") {
    block.kind = BlockKind::kThinking;
    block.index = next_reasoning_++;
    ReasoningDelta delta;
    delta.index = block.index;
    delta.kind = ReasoningPart::Kind::kText;
    delta.text = ValidUtf8(block.stitcher.Push(StringAt(*content, "thinking")));
    delta.signature = ValidUtf8(StringAt(*content, "signature"));
    delta.format = Str(kFormat);
    out.emplace_back(std::move(delta));
  } else if (type == "redacted_thinking") {
    block.kind = BlockKind::kRedacted;
    block.index = next_reasoning_++;
    ReasoningDelta delta;
    delta.index = block.index;
    delta.kind = ReasoningPart::Kind::kEncrypted;
    delta.data = ValidUtf8(StringAt(*content, "data"));
    delta.format = Str(kFormat);
    out.emplace_back(std::move(delta));
  } else if (type == "tool_use") {
    block.kind = BlockKind::kToolUse;
    block.index = next_tool_++;
    if (const json::object* input = ObjectAt(*content, "input"); input != nullptr && !input->empty()) {
      block.start_input = ValidUtf8(json::serialize(*input));
    }
    out.emplace_back(ToolCallDelta{
        0, block.index, ValidUtf8(StringAt(*content, "id")), ValidUtf8(StringAt(*content, "name")), {}, {}});
  } else {
    // server_tool_use, web_search_tool_result, ...: run and answered by
    // Anthropic itself; the canonical stream has no place for them.
    block.kind = BlockKind::kOther;
  }
  return {};
}

Result<void> ResponseDecoder::OnBlockDelta(const json::object& event, std::vector<StreamEvent>& out) {
  const auto* index_value = event.if_contains("index");
  const json::object* delta = ObjectAt(event, "delta");
  if (index_value == nullptr || !index_value->is_int64() || delta == nullptr) {
    return BadUpstream("Anthropic upstream sent a malformed content_block_delta");
  }
  auto it = blocks_.find(index_value->get_int64());
  if (it == blocks_.end()) return BadUpstream("Anthropic upstream sent a delta for a block it never started");
  Block& block = it->second;
  const std::string_view type = StringAt(*delta, "type");
  if (type == "text_delta" && block.kind == BlockKind::kText) {
    const std::string text = ValidUtf8(block.stitcher.Push(StringAt(*delta, "text")));
    if (!text.empty()) out.emplace_back(TextDelta{0, text});
  } else if (type == "thinking_delta" && block.kind == BlockKind::kThinking) {
    const std::string text = ValidUtf8(block.stitcher.Push(StringAt(*delta, "thinking")));
    if (!text.empty()) {
      ReasoningDelta r;
      r.index = block.index;
      r.text = text;
      out.emplace_back(std::move(r));
    }
  } else if (type == "signature_delta" && block.kind == BlockKind::kThinking) {
    ReasoningDelta r;
    r.index = block.index;
    r.signature = ValidUtf8(StringAt(*delta, "signature"));
    out.emplace_back(std::move(r));
  } else if (type == "input_json_delta" && block.kind == BlockKind::kToolUse) {
    // A character of a string argument may be split between two deltas.
    std::string partial = ValidUtf8(block.stitcher.Push(StringAt(*delta, "partial_json")));
    if (!partial.empty()) {
      block.has_input = true;
      out.emplace_back(ToolCallDelta{0, block.index, {}, {}, std::move(partial), {}});
    }
  }
  // citations_delta, deltas of server tool blocks, newer delta types: ignored.
  return {};
}

void ResponseDecoder::OnBlockStop(Block& block, std::vector<StreamEvent>& out) {
  if (block.stopped) return;
  block.stopped = true;
  std::string tail = block.stitcher.Flush();
  if (block.kind == BlockKind::kText && !tail.empty()) {
    out.emplace_back(TextDelta{0, std::move(tail)});
  } else if (block.kind == BlockKind::kThinking && !tail.empty()) {
    ReasoningDelta r;
    r.index = block.index;
    r.text = std::move(tail);
    out.emplace_back(std::move(r));
  } else if (block.kind == BlockKind::kToolUse && !tail.empty()) {
    out.emplace_back(ToolCallDelta{0, block.index, {}, {}, std::move(tail), {}});
  } else if (block.kind == BlockKind::kToolUse && !block.has_input) {
    // No input_json_delta with content: the call takes no arguments.
    out.emplace_back(ToolCallDelta{
        0, block.index, {}, {}, block.start_input.empty() ? std::string("{}") : block.start_input, {}});
  }
}

Result<void> ResponseDecoder::OnEvent(std::string_view type, std::string_view data,
                                      std::vector<StreamEvent>& out) {
  const auto parsed = ParseUpstreamJson(data);
  if (!parsed || !parsed->is_object()) {
    return BadUpstream("Anthropic upstream sent an event that is not a JSON object");
  }
  const json::object& event = parsed->get_object();
  // The SSE event name and the data's `type` always match [STREAM]; the
  // data wins when an intermediary dropped the `event:` line.
  const std::string_view data_type = StringAt(event, "type");
  const std::string_view kind = data_type.empty() ? type : data_type;

  if (kind == "message_start") {
    if (const json::object* message = ObjectAt(event, "message")) {
      if (const json::object* usage = ObjectAt(*message, "usage")) {
        ReadUsage(*usage);
        out.emplace_back(UsageDelta{CurrentUsage()});
      }
    }
  } else if (kind == "content_block_start") {
    return OnBlockStart(event, out);
  } else if (kind == "content_block_delta") {
    return OnBlockDelta(event, out);
  } else if (kind == "content_block_stop") {
    const auto* index_value = event.if_contains("index");
    if (index_value != nullptr && index_value->is_int64()) {
      if (auto it = blocks_.find(index_value->get_int64()); it != blocks_.end()) OnBlockStop(it->second, out);
    }
  } else if (kind == "message_delta") {
    if (const json::object* delta = ObjectAt(event, "delta")) {
      const std::string_view reason = StringAt(*delta, "stop_reason");
      if (!reason.empty()) {
        out.emplace_back(
            FinishDelta{0, MapStopReason(reason), ValidUtf8(reason), ValidUtf8(StringAt(*delta, "stop_sequence"))});
      }
    }
    if (const json::object* usage = ObjectAt(event, "usage")) {
      ReadUsage(*usage);
      out.emplace_back(UsageDelta{CurrentUsage()});
    }
  } else if (kind == "message_stop") {
    Finish(out);
    done_ = true;
  } else if (kind == "error") {
    return UpstreamError(event);
  }
  // ping and event types newer than this codec: nothing [STREAM].
  return {};
}

Result<void> ResponseDecoder::OnWholeResponse(std::string_view body, std::vector<StreamEvent>& out) {
  const auto parsed = ParseUpstreamJson(body);
  if (!parsed || !parsed->is_object()) {
    return BadUpstream("Anthropic upstream answered with a body that is not JSON");
  }
  const json::object& message = parsed->get_object();
  if (StringAt(message, "type") == "error") return UpstreamError(message);
  const json::array* content = ArrayAt(message, "content");
  if (content == nullptr) return BadUpstream("Anthropic upstream answered without `content`");
  for (const auto& item : *content) {
    const json::object* block = item.if_object();
    if (block == nullptr) continue;
    const std::string_view type = StringAt(*block, "type");
    if (type == "text") {
      const std::string_view text = StringAt(*block, "text");
      if (!text.empty()) out.emplace_back(TextDelta{0, ValidUtf8(text)});
    } else if (type == "thinking" || type == "redacted_thinking") {
      ReasoningDelta r;
      r.index = next_reasoning_++;
      r.format = Str(kFormat);
      if (type == "thinking") {
        r.text = ValidUtf8(StringAt(*block, "thinking"));
        r.signature = ValidUtf8(StringAt(*block, "signature"));
      } else {
        r.kind = ReasoningPart::Kind::kEncrypted;
        r.data = ValidUtf8(StringAt(*block, "data"));
      }
      out.emplace_back(std::move(r));
    } else if (type == "tool_use") {
      const auto* input = block->if_contains("input");
      std::string arguments = ValidUtf8(Serialize(input));
      out.emplace_back(ToolCallDelta{0,
                                     next_tool_++,
                                     ValidUtf8(StringAt(*block, "id")),
                                     ValidUtf8(StringAt(*block, "name")),
                                     std::move(arguments),
                                     {}});
    }
  }
  const std::string_view reason = StringAt(message, "stop_reason");
  if (!reason.empty()) {
    out.emplace_back(
        FinishDelta{0, MapStopReason(reason), ValidUtf8(reason), ValidUtf8(StringAt(message, "stop_sequence"))});
  }
  if (const json::object* usage = ObjectAt(message, "usage")) {
    ReadUsage(*usage);
    out.emplace_back(UsageDelta{CurrentUsage()});
  }
  done_ = true;
  return {};
}

void ResponseDecoder::Finish(std::vector<StreamEvent>& out) {
  for (auto& [index, block] : blocks_) OnBlockStop(block, out);
}

// ------------------------------------------------------------------ responses to callers

std::string_view StopReason(FinishReason reason, std::string_view native_reason) {
  static constexpr std::string_view kNative[] = {
      "end_turn",
      "max_tokens",
      "stop_sequence",
      "tool_use",
      "pause_turn",
      "refusal",
      "model_context_window_exceeded",
  };
  for (const std::string_view n : kNative) {
    if (n == native_reason) return n;
  }
  switch (reason) {
    case FinishReason::kStop: return "end_turn";
    case FinishReason::kLength: return "max_tokens";
    case FinishReason::kToolCalls: return "tool_use";
    case FinishReason::kContentFilter: return "refusal";
    case FinishReason::kError: return "end_turn";
  }
  return "end_turn";
}

namespace {

// usage as Anthropic reports it: input_tokens without cache reads and writes [CACHE].
json::object UsageObject(const Usage& usage, std::optional<int64_t> output_tokens = std::nullopt) {
  Usage u = usage;
  ClampUsage(u);
  json::object out;
  out["input_tokens"] = u.prompt_tokens - u.cached_tokens - u.cache_write_tokens;
  out["cache_creation_input_tokens"] = u.cache_write_tokens;
  out["cache_read_input_tokens"] = u.cached_tokens;
  out["output_tokens"] = output_tokens.value_or(u.completion_tokens);
  return out;
}

void AppendEvent(std::string& out, const json::object& data) {
  const std::string_view type = StringAt(data, "type");
  out += SseFrame(json::serialize(data), type);
}

}  // namespace

StreamEncoder::StreamEncoder(ResponseMeta meta, int64_t input_tokens_hint)
    : meta_(std::move(meta)), input_tokens_hint_(std::max<int64_t>(input_tokens_hint, 0)) {}

void StreamEncoder::Start(std::string& out) {
  if (started_) return;
  started_ = true;
  json::object usage;
  if (usage_ && usage_->prompt_tokens > 0) {
    usage = UsageObject(*usage_, std::max<int64_t>(usage_->completion_tokens, 1));
  } else {
    Usage hint;
    hint.prompt_tokens = input_tokens_hint_;
    usage = UsageObject(hint, 1);
  }
  json::object message;
  message["id"] = meta_.id;
  message["type"] = "message";
  message["role"] = "assistant";
  message["model"] = meta_.model;
  message["content"] = json::array{};
  message["stop_reason"] = nullptr;
  message["stop_sequence"] = nullptr;
  message["usage"] = std::move(usage);
  AppendEvent(out, json::object{{"type", "message_start"}, {"message", std::move(message)}});
  AppendEvent(out, json::object{{"type", "ping"}});
}

void StreamEncoder::CloseBlock(std::string& out) {
  if (open_ == OpenBlock::kNone) return;
  const int index = next_block_ - 1;
  if (open_ == OpenBlock::kThinking) {
    // Anthropic sends the signature last, just before the stop [STREAM].
    const std::string signature = open_foreign_ ? std::string() : open_signature_;
    AppendEvent(out,
                json::object{{"type", "content_block_delta"},
                             {"index", index},
                             {"delta", json::object{{"type", "signature_delta"}, {"signature", signature}}}});
  } else if (open_ == OpenBlock::kToolUse) {
    if (!open_has_input_) {
      // Clients that parse the accumulated partial JSON at the stop need
      // something to parse.
      AppendEvent(
          out, json::object{{"type", "content_block_delta"},
                            {"index", index},
                            {"delta", json::object{{"type", "input_json_delta"}, {"partial_json", "{}"}}}});
    }
    closed_tool_calls_.insert(open_index_);
  }
  AppendEvent(out, json::object{{"type", "content_block_stop"}, {"index", index}});
  const bool was_tool_use = open_ == OpenBlock::kToolUse;
  open_ = OpenBlock::kNone;
  open_index_ = -1;
  open_signature_.clear();
  open_foreign_ = false;
  open_has_input_ = false;
  if (was_tool_use) {
    // The calls held while this one streamed, each as a whole block.
    for (auto& [call_index, held] : pending_calls_) {
      const int block = next_block_++;
      AppendEvent(out, json::object{{"type", "content_block_start"},
                                    {"index", block},
                                    {"content_block", json::object{{"type", "tool_use"},
                                                                   {"id", held.id.empty() ? "toolu_" + RandomBase62(24) : held.id},
                                                                   {"name", held.name},
                                                                   {"input", json::object{}}}}});
      AppendEvent(out, json::object{{"type", "content_block_delta"},
                                    {"index", block},
                                    {"delta", json::object{{"type", "input_json_delta"},
                                                           {"partial_json", held.arguments.empty() ? std::string("{}")
                                                                                                   : held.arguments}}}});
      AppendEvent(out, json::object{{"type", "content_block_stop"}, {"index", block}});
      closed_tool_calls_.insert(call_index);
    }
    pending_calls_.clear();
  }
}

void StreamEncoder::OpenNew(std::string& out, OpenBlock kind, int canonical_index,
                            json::object content_block) {
  CloseBlock(out);
  AppendEvent(out, json::object{{"type", "content_block_start"},
                                {"index", next_block_},
                                {"content_block", std::move(content_block)}});
  ++next_block_;
  open_ = kind;
  open_index_ = canonical_index;
}

std::string StreamEncoder::Encode(const StreamEvent& event) {
  std::string out;
  if (const auto* e = std::get_if<UsageDelta>(&event)) {
    usage_ = e->usage;  // for message_start; nothing is sent before content
    return out;
  }
  if (const auto* e = std::get_if<FinishDelta>(&event)) {
    if (e->choice == 0) {
      finish_ = e->reason;
      native_finish_ = e->native_reason;
      stop_sequence_ = e->stop_sequence;
    }
    return out;
  }
  if (const auto* e = std::get_if<TextDelta>(&event)) {
    if (e->choice != 0 || e->text.empty()) return out;
    Start(out);
    if (open_ != OpenBlock::kText) {
      OpenNew(out, OpenBlock::kText, 0, json::object{{"type", "text"}, {"text", ""}});
    }
    AppendEvent(out, json::object{{"type", "content_block_delta"},
                                  {"index", next_block_ - 1},
                                  {"delta", json::object{{"type", "text_delta"}, {"text", e->text}}}});
    return out;
  }
  if (const auto* e = std::get_if<ReasoningDelta>(&event)) {
    if (e->choice != 0) return out;
    const bool anthropic = IsAnthropicFormat(e->format);
    if (e->kind == ReasoningPart::Kind::kEncrypted) {
      // Opaque data only Anthropic can read again: a whole redacted_thinking
      // block, or nothing for other providers' ciphertext.
      if (e->data.empty() || !anthropic) return out;
      Start(out);
      OpenNew(out, OpenBlock::kNone, e->index,
              json::object{{"type", "redacted_thinking"}, {"data", e->data}});
      AppendEvent(out, json::object{{"type", "content_block_stop"}, {"index", next_block_ - 1}});
      return out;
    }
    if (e->text.empty() && e->signature.empty() && open_ == OpenBlock::kThinking && open_index_ == e->index) {
      open_foreign_ = open_foreign_ || !anthropic;
      return out;
    }
    Start(out);
    if (open_ != OpenBlock::kThinking || open_index_ != e->index) {
      OpenNew(out, OpenBlock::kThinking, e->index,
              json::object{{"type", "thinking"}, {"thinking", ""}, {"signature", ""}});
    }
    if (!e->text.empty()) {
      AppendEvent(out,
                  json::object{{"type", "content_block_delta"},
                               {"index", next_block_ - 1},
                               {"delta", json::object{{"type", "thinking_delta"}, {"thinking", e->text}}}});
    }
    // Another provider's signature would be rejected when the client replays
    // the block to Anthropic; such blocks stop with an empty signature.
    open_foreign_ = open_foreign_ || !anthropic;
    if (!e->signature.empty()) open_signature_ = e->signature;
    return out;
  }
  if (const auto* e = std::get_if<ToolCallDelta>(&event)) {
    if (e->choice != 0) return out;
    if (open_ != OpenBlock::kToolUse || open_index_ != e->index) {
      // A fragment of a call whose block already stopped cannot be sent: one
      // block is open at a time and a stopped block does not reopen.
      if (closed_tool_calls_.count(e->index) != 0) return out;
      // Upstreams may interleave the fragments of parallel calls; the first
      // call streams, the others are held and sent whole once its block
      // stops (CloseBlock), so no fragment is lost.
      if (open_ == OpenBlock::kToolUse || pending_calls_.count(e->index) != 0) {
        PendingCall& held = pending_calls_[e->index];
        if (!e->id.empty()) held.id = e->id;
        if (!e->name.empty()) held.name = e->name;
        held.arguments += e->arguments;
        return out;
      }
      Start(out);
      std::string id = e->id.empty() ? "toolu_" + RandomBase62(24) : e->id;
      OpenNew(out, OpenBlock::kToolUse, e->index,
              json::object{{"type", "tool_use"}, {"id", id}, {"name", e->name}, {"input", json::object{}}});
      tool_use_sent_ = true;
    }
    if (!e->arguments.empty()) {
      open_has_input_ = true;
      AppendEvent(out, json::object{{"type", "content_block_delta"},
                                    {"index", next_block_ - 1},
                                    {"delta", json::object{{"type", "input_json_delta"},
                                                           {"partial_json", e->arguments}}}});
    }
    return out;
  }
  return out;
}

std::string StreamEncoder::Finish(const Usage& usage) {
  std::string out;
  if (!usage_) usage_ = usage;
  Start(out);
  CloseBlock(out);
  std::string_view stop_reason = StopReason(finish_.value_or(FinishReason::kStop), native_finish_);
  // Clients run tools when the turn says so; some upstreams end a tool-call
  // turn with a plain "stop".
  if (tool_use_sent_ && stop_reason == "end_turn") stop_reason = "tool_use";
  json::value stop_sequence = nullptr;
  if (!stop_sequence_.empty() && (stop_reason == "end_turn" || stop_reason == "stop_sequence")) {
    stop_reason = "stop_sequence";
    stop_sequence = stop_sequence_;
  }
  if (finish_ == FinishReason::kError) {
    // The provider ended the answer with an error (DeepSeek's
    // insufficient_system_resource, Gemini's MALFORMED_FUNCTION_CALL):
    // Anthropic has no stop_reason for that, and a cut answer must not look
    // complete, so the stream ends with an error event.
    out += ErrorEvent(Error{ErrorCode::kBadGateway,
                            "the provider ended the answer with an error (" + native_finish_ + ")", {}, {}});
    return out;
  }
  AppendEvent(out,
              json::object{{"type", "message_delta"},
                           {"delta", json::object{{"stop_reason", stop_reason}, {"stop_sequence", stop_sequence}}},
                           {"usage", UsageObject(usage)}});
  AppendEvent(out, json::object{{"type", "message_stop"}});
  return out;
}

std::string StreamEncoder::ErrorEvent(const Error& error) {
  json::object data{
      {"type", "error"},
      {"error", json::object{{"type", AnthropicErrorType(error.code)}, {"message", error.message}}}};
  return SseFrame(json::serialize(data), "error");
}

std::string EncodeMessagesResponse(const ResponseMeta& meta, const ChatResponse& response,
                                   const Usage& usage) {
  json::array content;
  bool tool_use = false;
  std::string_view stop_reason = "end_turn";
  json::value stop_sequence = nullptr;
  if (!response.choices.empty()) {
    const ChoiceResult& choice = response.choices[0];
    for (const ReasoningPart& part : choice.reasoning) {
      if (part.kind == ReasoningPart::Kind::kEncrypted) {
        if (!part.data.empty() && IsAnthropicFormat(part.format)) {
          content.push_back(json::object{{"type", "redacted_thinking"}, {"data", part.data}});
        }
        continue;
      }
      content.push_back(
          json::object{{"type", "thinking"},
                       {"thinking", part.text},
                       {"signature", IsAnthropicFormat(part.format) ? part.signature : std::string()}});
    }
    if (!choice.text.empty()) content.push_back(json::object{{"type", "text"}, {"text", choice.text}});
    for (const ToolCallPart& call : choice.tool_calls) {
      content.push_back(json::object{{"type", "tool_use"},
                                     {"id", call.id.empty() ? "toolu_" + RandomBase62(24) : call.id},
                                     {"name", call.name},
                                     {"input", InputObject(call.arguments)}});
      tool_use = true;
    }
    stop_reason = StopReason(choice.finish.value_or(FinishReason::kStop), choice.native_finish_reason);
    if (!choice.stop_sequence.empty() && (stop_reason == "end_turn" || stop_reason == "stop_sequence")) {
      stop_reason = "stop_sequence";
      stop_sequence = choice.stop_sequence;
    }
  }
  if (tool_use && stop_reason == "end_turn") stop_reason = "tool_use";
  // An answer the provider ended with an error has no Anthropic stop_reason.
  const bool errored = !response.choices.empty() && response.choices[0].finish == FinishReason::kError;
  json::object body;
  body["id"] = meta.id;
  body["type"] = "message";
  body["role"] = "assistant";
  body["model"] = meta.model;
  body["content"] = std::move(content);
  body["stop_reason"] = errored ? json::value(nullptr) : json::value(stop_reason);
  body["stop_sequence"] = stop_sequence;
  body["usage"] = UsageObject(usage);
  return json::serialize(body);
}

}  // namespace tollgate::wire::anthropic
