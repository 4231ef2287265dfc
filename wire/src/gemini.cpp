// Gemini API v1beta generateContent / streamGenerateContent codec.
//
// Field names and enum values follow the v1beta reference
// (ai.google.dev/api/generate-content, ai.google.dev/api/caching) as the
// protos state them: google/ai/generativelanguage/v1beta/content.proto and
// generative_service.proto (googleapis/googleapis, 2025). Behaviour of thought
// signatures follows ai.google.dev/gemini-api/docs/thought-signatures; the
// mapping of reasoning effort to thinking budgets follows
// ai.google.dev/gemini-api/docs/openai ("low", "medium", "high" -> 1K, 8K,
// 24K thinking tokens; "none" turns thinking off).
#include "tollgate/wire/gemini.hpp"

#include "json_util.hpp"

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <deque>
#include <limits>
#include <optional>
#include <unordered_map>
#include <utility>

namespace tollgate::wire::gemini {
namespace {

namespace json = boost::json;
using detail::ArrayAt;
using detail::BadRequest;
using detail::BadUpstream;
using detail::ObjectAt;
using detail::StringAt;
using detail::View;

// OpenRouter's `format` for Gemini reasoning blocks
// (openrouter.ai/docs/guides/best-practices/reasoning-tokens).
constexpr std::string_view kFormat = kReasoningFormatGemini;

// The thought-signatures guide (FAQ) documents this value for function calls
// the model did not produce itself (history from another model, injected
// calls): Gemini 3 validates that the first functionCall of every step of the
// current turn carries a signature and answers 400 otherwise.
constexpr std::string_view kForeignCallSignature = "skip_thought_signature_validator";

// candidateCount is small (the API allows up to 8); an index beyond this is a
// broken upstream, and must not make consumers allocate a choice per index.
constexpr int kMaxCandidates = 64;

// ---------------------------------------------------------------- text helpers

std::string ToLower(std::string_view s) {
  std::string out(s);
  for (char& c : out) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return out;
}

// fileData.mimeType is optional in the reference, but the model reads a file
// by its type; guess the common image types from the URL's extension.
std::string GuessMimeType(std::string_view url) {
  std::string_view path = url.substr(0, url.find_first_of("?#"));
  const std::size_t dot = path.rfind('.');
  if (dot == std::string_view::npos || path.find('/', dot) != std::string_view::npos) return {};
  const std::string ext = ToLower(path.substr(dot + 1));
  if (ext == "png") return "image/png";
  if (ext == "jpg" || ext == "jpeg") return "image/jpeg";
  if (ext == "webp") return "image/webp";
  if (ext == "gif") return "image/gif";
  if (ext == "heic") return "image/heic";
  if (ext == "heif") return "image/heif";
  if (ext == "pdf") return "application/pdf";
  return {};
}

int64_t ClampInt32(int64_t v) {
  return std::clamp<int64_t>(v, std::numeric_limits<int32_t>::min(), std::numeric_limits<int32_t>::max());
}

// ---------------------------------------------------------------- finish reasons

// Candidate.FinishReason (generative_service.proto).
FinishReason MapFinishReason(std::string_view native, bool call_seen) {
  if (native == "STOP") return call_seen ? FinishReason::kToolCalls : FinishReason::kStop;
  if (native == "MAX_TOKENS") return FinishReason::kLength;
  if (native == "SAFETY" || native == "RECITATION" || native == "PROHIBITED_CONTENT" ||
      native == "BLOCKLIST" || native == "SPII" || native == "IMAGE_SAFETY" ||
      native == "IMAGE_PROHIBITED_CONTENT" || native == "IMAGE_RECITATION") {
    return FinishReason::kContentFilter;
  }
  // MALFORMED_FUNCTION_CALL, UNEXPECTED_TOOL_CALL, TOO_MANY_TOOL_CALLS,
  // LANGUAGE, OTHER, NO_IMAGE, IMAGE_OTHER, and values added later.
  return FinishReason::kError;
}

std::string_view NativeFinishReason(const ChoiceResult& choice) {
  const bool calls = !choice.tool_calls.empty();
  if (!choice.native_finish_reason.empty() &&
      MapFinishReason(choice.native_finish_reason, calls) == *choice.finish) {
    return choice.native_finish_reason;
  }
  switch (*choice.finish) {
    case FinishReason::kStop:
    case FinishReason::kToolCalls: return "STOP";
    case FinishReason::kLength: return "MAX_TOKENS";
    case FinishReason::kContentFilter: return "SAFETY";
    case FinishReason::kError: return "OTHER";
  }
  return "OTHER";
}

// ---------------------------------------------------------------- usage

// UsageMetadata (generative_service.proto): promptTokenCount includes cached
// content; candidatesTokenCount excludes thoughts (WIRE-FORMATS.md 3.3);
// toolUsePromptTokenCount is prompt read by tools.
std::optional<Usage> DecodeUsage(const json::object& m) {
  const auto prompt = TokenCount(m.if_contains("promptTokenCount"));
  const auto candidates = TokenCount(m.if_contains("candidatesTokenCount"));
  const auto cached = TokenCount(m.if_contains("cachedContentTokenCount"));
  const auto thoughts = TokenCount(m.if_contains("thoughtsTokenCount"));
  const auto tool_use = TokenCount(m.if_contains("toolUsePromptTokenCount"));
  if (!prompt && !candidates && !cached && !thoughts && !tool_use) return std::nullopt;
  Usage u;
  u.prompt_tokens = prompt.value_or(0) + tool_use.value_or(0);
  u.cached_tokens = cached.value_or(0);
  u.completion_tokens = candidates.value_or(0) + thoughts.value_or(0);
  u.reasoning_tokens = thoughts.value_or(0);
  ClampUsage(u);
  return u;
}

json::object UsageJson(Usage usage) {
  ClampUsage(usage);  // so that candidatesTokenCount is never negative
  json::object m;
  m["promptTokenCount"] = usage.prompt_tokens;
  m["candidatesTokenCount"] = usage.completion_tokens - usage.reasoning_tokens;
  m["totalTokenCount"] = usage.prompt_tokens + usage.completion_tokens;
  if (usage.cached_tokens > 0) m["cachedContentTokenCount"] = usage.cached_tokens;
  if (usage.reasoning_tokens > 0) m["thoughtsTokenCount"] = usage.reasoning_tokens;
  return m;
}

// ---------------------------------------------------------------- upstream errors

// Google API errors are {"error": {"code": int (HTTP), "message": str,
// "status": google.rpc.Code name}} (cloud.google.com/apis/design/errors);
// streams send the same object as an SSE event.
Error UpstreamError(const json::value& value) {
  const json::object* o = value.if_object();
  std::string message = o != nullptr ? ValidUtf8(StringAt(*o, "message")) : std::string();
  const std::string_view status = o != nullptr ? StringAt(*o, "status") : std::string_view();
  int64_t code = 0;
  if (o != nullptr) {
    if (const auto c = TokenCount(o->if_contains("code"))) code = *c;
  }
  if (message.empty()) message = "Gemini returned an error";
  ErrorCode mapped = ErrorCode::kBadGateway;
  if (status == "RESOURCE_EXHAUSTED" || code == 429) {
    mapped = ErrorCode::kResourceExhausted;
  } else if (status == "DEADLINE_EXCEEDED" || code == 504) {
    mapped = ErrorCode::kUpstreamTimeout;
  } else if (status == "UNAVAILABLE" || status == "INTERNAL" || (code >= 500 && code <= 599)) {
    mapped = ErrorCode::kUnavailable;
  } else if (status == "INVALID_ARGUMENT" || (status.empty() && code == 400)) {
    mapped = ErrorCode::kInvalidArgument;
  }
  Error e;
  e.code = mapped;
  e.message = std::move(message);
  return e;
}

// ---------------------------------------------------------------- parts (encode)

json::object TextJson(std::string_view text) { return json::object{{"text", text}}; }

json::object ImageJson(const ImagePart& image) {
  if (auto data = ParseDataUri(image.url)) {
    return json::object{
        {"inlineData", json::object{{"mimeType", data->media_type}, {"data", data->base64}}}};
  }
  json::object file;
  if (std::string mime = GuessMimeType(image.url); !mime.empty()) file["mimeType"] = mime;
  file["fileUri"] = image.url;
  return json::object{{"fileData", std::move(file)}};
}

json::object FunctionCallJson(const ToolCallPart& call) {
  // FunctionCall.args is a Struct: an object. Arguments that are not a JSON
  // object (a model's broken output replayed) cannot be carried; {} is sent.
  json::object args;
  if (auto v = ParseJson(call.arguments); v && v->is_object()) args = std::move(v->get_object());
  json::object part;
  part["functionCall"] = json::object{{"name", call.name}, {"args", std::move(args)}};
  if (!call.thought_signature.empty()) part["thoughtSignature"] = call.thought_signature;
  return part;
}

std::string ResultText(const ToolResultPart& result) {
  std::string text;
  for (const auto& c : result.content) {
    if (const auto* t = std::get_if<TextPart>(&c)) text += t->text;
  }
  return text;
}

// FunctionResponse.response is a Struct. The reference (FunctionResponse,
// ai.google.dev/api/caching#FunctionResponse) reads an "error" key as error
// details and treats the whole object as output otherwise.
json::object FunctionResponseJson(const ToolResultPart& result, std::string_view name) {
  const std::string text = ResultText(result);
  auto parsed = ParseJson(text);
  const bool is_object = parsed && parsed->is_object();
  json::object response;
  if (result.is_error) {
    response["error"] = is_object ? std::move(*parsed) : json::value(text);
  } else if (is_object) {
    response = std::move(parsed->get_object());
  } else {
    response["result"] = text;
  }
  return json::object{
      {"functionResponse", json::object{{"name", name}, {"response", std::move(response)}}}};
}

// The parts of a model turn, in the order of `parts`. Reasoning of another
// provider (format other than kFormat) is left out unless `any_format`
// (response encoding, where everything is ours to print).
json::array ModelParts(const std::vector<ContentPart>& parts, bool any_format) {
  json::array out;
  std::optional<std::string> pending_signature;  // a kEncrypted block waiting for a text part
  auto flush_pending = [&] {
    if (!pending_signature) return;
    json::object part = TextJson("");
    part["thoughtSignature"] = std::move(*pending_signature);
    out.emplace_back(std::move(part));
    pending_signature.reset();
  };
  for (const auto& p : parts) {
    if (const auto* r = std::get_if<ReasoningPart>(&p)) {
      if (!any_format && r->format != kFormat) continue;
      if (r->kind == ReasoningPart::Kind::kEncrypted) {
        if (r->data.empty()) continue;
        flush_pending();
        pending_signature = r->data;
        continue;
      }
      if (r->text.empty() && r->signature.empty()) continue;
      json::object part = TextJson(r->text);
      part["thought"] = true;
      if (!r->signature.empty()) part["thoughtSignature"] = r->signature;
      out.emplace_back(std::move(part));
    } else if (const auto* t = std::get_if<TextPart>(&p)) {
      if (t->text.empty() && !pending_signature) continue;
      json::object part = TextJson(t->text);
      if (pending_signature) {
        part["thoughtSignature"] = std::move(*pending_signature);
        pending_signature.reset();
      }
      out.emplace_back(std::move(part));
    } else if (const auto* c = std::get_if<ToolCallPart>(&p)) {
      out.emplace_back(FunctionCallJson(*c));
    } else if (const auto* i = std::get_if<ImagePart>(&p)) {
      out.emplace_back(ImageJson(*i));
    }
    // A ToolResultPart has no place in a model turn.
  }
  flush_pending();
  return out;
}

bool HasPart(const json::object& part, std::string_view key) { return part.if_contains(key) != nullptr; }

// See kForeignCallSignature. The current turn begins after the last user
// content that is not a tool step (one without functionResponse parts).
void AddMissingCallSignatures(json::array& contents) {
  std::size_t start = 0;
  for (std::size_t i = contents.size(); i-- > 0;) {
    const json::object& content = contents[i].get_object();
    if (StringAt(content, "role") != "user") continue;
    bool tool_step = false;
    for (const auto& part : content.at("parts").get_array()) {
      tool_step = tool_step || HasPart(part.get_object(), "functionResponse");
    }
    if (!tool_step) {
      start = i + 1;
      break;
    }
  }
  for (std::size_t i = start; i < contents.size(); ++i) {
    json::object& content = contents[i].get_object();
    if (StringAt(content, "role") != "model") continue;
    for (auto& part : content.at("parts").get_array()) {
      json::object& p = part.get_object();
      if (!HasPart(p, "functionCall")) continue;
      if (StringAt(p, "thoughtSignature").empty()) p["thoughtSignature"] = kForeignCallSignature;
      break;  // only the first call of a step needs one
    }
  }
}

std::optional<int64_t> EffortBudget(std::string_view effort) {
  if (effort == "minimal" || effort == "low") return 1024;
  if (effort == "medium") return 8192;
  if (effort == "high" || effort == "xhigh") return 24576;
  return std::nullopt;
}

// GenerationConfig.thinkingConfig (ThinkingConfig, generative_service.proto;
// budgets 0 = off and -1 = dynamic per ai.google.dev/gemini-api/docs/thinking).
std::optional<json::object> ThinkingConfigJson(const ReasoningSettings& r) {
  const bool off = (r.enabled.has_value() && !*r.enabled) || r.effort == "none";
  if (off) return json::object{{"thinkingBudget", 0}};
  // Thoughts are not returned unless asked for, so `exclude` alone says nothing new.
  if (!r.Requested()) return std::nullopt;
  int64_t budget = -1;
  if (r.max_tokens && *r.max_tokens > 0) {
    budget = ClampInt32(*r.max_tokens);
  } else if (auto b = EffortBudget(r.effort)) {
    budget = *b;
  }
  return json::object{{"thinkingBudget", budget}, {"includeThoughts", !r.exclude}};
}

json::object GenerationConfigJson(const ChatRequest& request) {
  json::object config;
  if (request.max_tokens) config["maxOutputTokens"] = ClampInt32(*request.max_tokens);
  if (!request.stop.empty()) {
    json::array stop;
    for (const auto& s : request.stop) stop.emplace_back(s);
    config["stopSequences"] = std::move(stop);
  }
  if (request.temperature) config["temperature"] = *request.temperature;
  if (request.top_p) config["topP"] = *request.top_p;
  if (request.top_k) config["topK"] = ClampInt32(*request.top_k);
  if (request.n) config["candidateCount"] = ClampInt32(*request.n);
  if (request.seed) {
    // GenerationConfig.seed is an int32: its low 32 bits, two's complement.
    config["seed"] = static_cast<int64_t>(static_cast<int32_t>(static_cast<uint32_t>(*request.seed)));
  }
  if (request.presence_penalty) config["presencePenalty"] = *request.presence_penalty;
  if (request.frequency_penalty) config["frequencyPenalty"] = *request.frequency_penalty;
  if (request.response_format) {
    const ResponseFormat& f = *request.response_format;
    if (f.type == ResponseFormat::Type::kText) {
      config["responseMimeType"] = "text/plain";
    } else {
      config["responseMimeType"] = "application/json";
      // responseJsonSchema takes JSON Schema as written; responseSchema takes
      // only an OpenAPI 3.0 subset (GenerationConfig, generative_service.proto).
      if (f.type == ResponseFormat::Type::kJsonSchema && !f.schema.is_null()) {
        config["responseJsonSchema"] = f.schema;
      }
    }
  }
  if (request.logprobs) {
    config["responseLogprobs"] = true;
    if (request.top_logprobs) config["logprobs"] = ClampInt32(*request.top_logprobs);
  }
  if (request.reasoning) {
    if (auto thinking = ThinkingConfigJson(*request.reasoning)) config["thinkingConfig"] = std::move(*thinking);
  }
  return config;
}

json::object ToolConfigJson(const ToolChoice& choice) {
  json::object f;
  switch (choice.mode) {
    case ToolChoice::Mode::kAuto: f["mode"] = "AUTO"; break;
    case ToolChoice::Mode::kNone: f["mode"] = "NONE"; break;
    case ToolChoice::Mode::kRequired: f["mode"] = "ANY"; break;
    case ToolChoice::Mode::kFunction:
      f["mode"] = "ANY";
      f["allowedFunctionNames"] = json::array{json::value(choice.function_name)};
      break;
  }
  return json::object{{"functionCallingConfig", std::move(f)}};
}

json::object FunctionDeclarationJson(const ToolDefinition& tool) {
  json::object d;
  d["name"] = tool.name;
  if (!tool.description.empty()) d["description"] = tool.description;
  // parametersJsonSchema (FunctionDeclaration, v1beta) takes plain JSON
  // Schema, so nothing is stripped or converted to the OpenAPI subset that
  // `parameters` takes. An empty schema is a function without parameters.
  const bool empty = tool.parameters.is_null() ||
                     (tool.parameters.is_object() && tool.parameters.get_object().empty());
  if (!empty) d["parametersJsonSchema"] = tool.parameters;
  return d;
}

// ---------------------------------------------------------------- request decoding helpers

std::string Param(std::string_view a, std::size_t i) { return std::string(a) + "." + std::to_string(i); }

Result<std::optional<double>> NumberField(const json::object& o, std::string_view key, std::string_view base) {
  const json::value* v = o.if_contains(key);
  if (v == nullptr || v->is_null()) return std::optional<double>();
  if (v->is_double()) return std::optional<double>(v->get_double());
  if (v->is_int64()) return std::optional<double>(static_cast<double>(v->get_int64()));
  if (v->is_uint64()) return std::optional<double>(static_cast<double>(v->get_uint64()));
  return BadRequest(std::string(key) + " must be a number", std::string(base) + "." + std::string(key));
}

Result<std::optional<int64_t>> IntField(const json::object& o, std::string_view key, std::string_view base) {
  const json::value* v = o.if_contains(key);
  if (v == nullptr || v->is_null()) return std::optional<int64_t>();
  if (v->is_int64()) return std::optional<int64_t>(v->get_int64());
  if (v->is_double()) {
    // 1e3 and 10.0 are integers too; the range check keeps the cast defined.
    const double d = v->get_double();
    if (d >= -9.0e18 && d <= 9.0e18 && d == std::trunc(d)) return std::optional<int64_t>(static_cast<int64_t>(d));
  }
  return BadRequest(std::string(key) + " must be an integer", std::string(base) + "." + std::string(key));
}

ImagePart ImageFromInlineData(const json::object& blob) {
  return ImagePart{"data:" + std::string(StringAt(blob, "mimeType")) + ";base64," +
                       std::string(StringAt(blob, "data")),
                   {},
                   {}};
}

// The text of a FunctionResponse.response, the inverse of FunctionResponseJson.
void DecodeFunctionResponse(const json::object& response, ToolResultPart& out) {
  if (response.size() == 1) {
    const auto& [key, value] = *response.begin();
    if (key == "error" || key == "result" || key == "output") {
      out.is_error = key == "error";
      std::string text = value.is_string() ? std::string(View(value.get_string())) : json::serialize(value);
      out.content.emplace_back(TextPart{std::move(text), {}});
      return;
    }
  }
  out.content.emplace_back(TextPart{json::serialize(response), {}});
}

}  // namespace

// ---------------------------------------------------------------- EncodeGenerateContentRequest

std::string EncodeGenerateContentRequest(const ChatRequest& request) {
  json::array system_parts;
  json::array contents;
  std::unordered_map<std::string, std::string> call_names;  // tool-call id -> function name

  // Consecutive turns of one role become one Content.
  auto append = [&](std::string_view role, json::array parts) {
    if (parts.empty()) return;
    if (!contents.empty()) {
      json::object& last = contents.back().get_object();
      if (StringAt(last, "role") == role) {
        json::array& into = last["parts"].get_array();
        for (auto& p : parts) into.emplace_back(std::move(p));
        return;
      }
    }
    contents.emplace_back(json::object{{"role", role}, {"parts", std::move(parts)}});
  };
  auto tool_result_parts = [&](const ToolResultPart& result, json::array& out) {
    std::string name = result.name;
    if (name.empty()) {
      auto it = call_names.find(result.tool_call_id);
      // Gemini requires a name; with no call to take it from, the id is the
      // only hint left.
      name = it != call_names.end() ? it->second : result.tool_call_id;
    }
    out.emplace_back(FunctionResponseJson(result, name));
    for (const auto& c : result.content) {
      if (const auto* image = std::get_if<ImagePart>(&c)) out.emplace_back(ImageJson(*image));
    }
  };

  if (request.kind == RequestKind::kCompletion) {
    append("user", json::array{TextJson(request.prompt)});
  }
  for (const Message& m : request.messages) {
    switch (m.role) {
      case Role::kSystem:
      case Role::kDeveloper:
        // systemInstruction is text only (GenerateContentRequest reference).
        for (const auto& p : m.parts) {
          if (const auto* t = std::get_if<TextPart>(&p)) system_parts.emplace_back(TextJson(t->text));
        }
        break;
      case Role::kAssistant:
        for (const auto& p : m.parts) {
          if (const auto* c = std::get_if<ToolCallPart>(&p)) call_names[c->id] = c->name;
        }
        append("model", ModelParts(m.parts, /*any_format=*/false));
        break;
      case Role::kUser:
      case Role::kTool: {
        json::array parts;
        for (const auto& p : m.parts) {
          if (const auto* t = std::get_if<TextPart>(&p)) {
            if (!t->text.empty()) parts.emplace_back(TextJson(t->text));
          } else if (const auto* i = std::get_if<ImagePart>(&p)) {
            parts.emplace_back(ImageJson(*i));
          } else if (const auto* r = std::get_if<ToolResultPart>(&p)) {
            tool_result_parts(*r, parts);
          }
        }
        append("user", std::move(parts));
        break;
      }
    }
  }
  AddMissingCallSignatures(contents);

  json::object body;
  body["contents"] = std::move(contents);
  if (!system_parts.empty()) body["systemInstruction"] = json::object{{"parts", std::move(system_parts)}};
  if (!request.tools.empty()) {
    json::array declarations;
    for (const auto& t : request.tools) declarations.emplace_back(FunctionDeclarationJson(t));
    body["tools"] = json::array{json::object{{"functionDeclarations", std::move(declarations)}}};
    if (request.tool_choice) body["toolConfig"] = ToolConfigJson(*request.tool_choice);
  }
  if (json::object config = GenerationConfigJson(request); !config.empty()) {
    body["generationConfig"] = std::move(config);
  }
  return json::serialize(body);
}

// ---------------------------------------------------------------- DecodeGenerateContentRequest

Result<ChatRequest> DecodeGenerateContentRequest(std::string_view body) {
  auto parsed = ParseJson(body);
  if (!parsed) return BadRequest("request body is not valid JSON");
  const json::object* root = parsed->if_object();
  if (root == nullptr) return BadRequest("request body must be a JSON object");
  ChatRequest req;

  if (const json::value* si = root->if_contains("systemInstruction"); si != nullptr && !si->is_null()) {
    const json::object* o = si->if_object();
    const json::array* parts = o != nullptr ? ArrayAt(*o, "parts") : nullptr;
    if (parts == nullptr) return BadRequest("systemInstruction must be a Content", "systemInstruction");
    for (std::size_t j = 0; j < parts->size(); ++j) {
      const json::object* part = (*parts)[j].if_object();
      const json::value* text = part != nullptr ? part->if_contains("text") : nullptr;
      if (text == nullptr || !text->is_string()) {
        return BadRequest("systemInstruction takes text parts only", Param("systemInstruction.parts", j));
      }
      req.messages.push_back(Message{Role::kSystem, {TextPart{std::string(View(text->get_string())), {}}}, {}});
    }
  }

  const json::array* contents = ArrayAt(*root, "contents");
  if (contents == nullptr) return BadRequest("contents is required and must be an array", "contents");
  std::deque<std::pair<std::string, std::string>> open_calls;  // (name, id), oldest first
  for (std::size_t i = 0; i < contents->size(); ++i) {
    const std::string base = Param("contents", i);
    const json::object* content = (*contents)[i].if_object();
    const json::array* parts = content != nullptr ? ArrayAt(*content, "parts") : nullptr;
    if (parts == nullptr) return BadRequest("a Content needs a parts array", base);
    const std::string_view role = StringAt(*content, "role");
    // Content.role: "user" or "model"; it may be left out for single turns.
    if (role == "model") {
      Message m{Role::kAssistant, {}, {}};
      for (std::size_t j = 0; j < parts->size(); ++j) {
        const std::string pbase = Param(base + ".parts", j);
        const json::object* part = (*parts)[j].if_object();
        if (part == nullptr) return BadRequest("a Part must be an object", pbase);
        const std::string signature(StringAt(*part, "thoughtSignature"));
        if (const json::object* fc = ObjectAt(*part, "functionCall")) {
          ToolCallPart call;
          call.name = std::string(StringAt(*fc, "name"));
          if (call.name.empty()) return BadRequest("functionCall.name is required", pbase);
          call.id = std::string(StringAt(*fc, "id"));
          if (call.id.empty()) call.id = NewToolCallId();
          const json::object* args = ObjectAt(*fc, "args");
          call.arguments = args != nullptr ? json::serialize(*args) : "{}";
          call.thought_signature = signature;
          open_calls.emplace_back(call.name, call.id);
          m.parts.emplace_back(std::move(call));
        } else if (const json::value* text = part->if_contains("text"); text != nullptr && text->is_string()) {
          std::string t(View(text->get_string()));
          const json::value* thought = part->if_contains("thought");
          if (thought != nullptr && thought->is_bool() && thought->get_bool()) {
            ReasoningPart r;
            r.kind = ReasoningPart::Kind::kText;
            r.text = std::move(t);
            r.signature = signature;
            r.format = kFormat;
            m.parts.emplace_back(std::move(r));
            continue;
          }
          if (!signature.empty()) {
            ReasoningPart r;
            r.kind = ReasoningPart::Kind::kEncrypted;
            r.data = signature;
            r.format = kFormat;
            m.parts.emplace_back(std::move(r));
          }
          if (!t.empty()) m.parts.emplace_back(TextPart{std::move(t), {}});
        } else if (const json::object* blob = ObjectAt(*part, "inlineData")) {
          m.parts.emplace_back(ImageFromInlineData(*blob));
        } else if (const json::object* file = ObjectAt(*part, "fileData")) {
          m.parts.emplace_back(ImagePart{std::string(StringAt(*file, "fileUri")), {}, {}});
        } else {
          return BadRequest("unsupported part in a model turn", pbase);
        }
      }
      if (!m.parts.empty()) req.messages.push_back(std::move(m));
      continue;
    }
    if (!role.empty() && role != "user") return BadRequest("role must be \"user\" or \"model\"", base + ".role");
    Message pending{Role::kUser, {}, {}};
    auto flush = [&] {
      if (!pending.parts.empty()) req.messages.push_back(std::move(pending));
      pending = Message{Role::kUser, {}, {}};
    };
    for (std::size_t j = 0; j < parts->size(); ++j) {
      const std::string pbase = Param(base + ".parts", j);
      const json::object* part = (*parts)[j].if_object();
      if (part == nullptr) return BadRequest("a Part must be an object", pbase);
      if (const json::object* fr = ObjectAt(*part, "functionResponse")) {
        ToolResultPart result;
        result.name = std::string(StringAt(*fr, "name"));
        result.tool_call_id = std::string(StringAt(*fr, "id"));
        if (result.tool_call_id.empty()) {
          // Gemini pairs calls and responses by name and order.
          auto it = std::find_if(open_calls.begin(), open_calls.end(),
                                 [&](const auto& c) { return c.first == result.name; });
          if (it != open_calls.end()) {
            result.tool_call_id = it->second;
            open_calls.erase(it);
          } else {
            result.tool_call_id = NewToolCallId();
          }
        }
        const json::object* response = ObjectAt(*fr, "response");
        DecodeFunctionResponse(response != nullptr ? *response : json::object(), result);
        flush();
        req.messages.push_back(Message{Role::kTool, {std::move(result)}, {}});
      } else if (const json::value* text = part->if_contains("text"); text != nullptr && text->is_string()) {
        pending.parts.emplace_back(TextPart{std::string(View(text->get_string())), {}});
      } else if (const json::object* blob = ObjectAt(*part, "inlineData")) {
        pending.parts.emplace_back(ImageFromInlineData(*blob));
      } else if (const json::object* file = ObjectAt(*part, "fileData")) {
        pending.parts.emplace_back(ImagePart{std::string(StringAt(*file, "fileUri")), {}, {}});
      } else {
        return BadRequest("unsupported part in a user turn", pbase);
      }
    }
    flush();
  }

  if (const json::array* tools = ArrayAt(*root, "tools")) {
    for (std::size_t i = 0; i < tools->size(); ++i) {
      const json::object* tool = (*tools)[i].if_object();
      if (tool == nullptr) return BadRequest("a Tool must be an object", Param("tools", i));
      const json::array* decls = ArrayAt(*tool, "functionDeclarations");
      if (decls == nullptr) continue;  // googleSearch, codeExecution: nothing canonical
      for (std::size_t j = 0; j < decls->size(); ++j) {
        const json::object* d = (*decls)[j].if_object();
        if (d == nullptr || StringAt(*d, "name").empty()) {
          return BadRequest("a FunctionDeclaration needs a name", Param(Param("tools", i) + ".functionDeclarations", j));
        }
        ToolDefinition def;
        def.name = std::string(StringAt(*d, "name"));
        def.description = std::string(StringAt(*d, "description"));
        if (const json::value* p = d->if_contains("parametersJsonSchema"); p != nullptr && !p->is_null()) {
          def.parameters = *p;
        } else if (const json::value* q = d->if_contains("parameters"); q != nullptr && !q->is_null()) {
          def.parameters = *q;
        }
        req.tools.push_back(std::move(def));
      }
    }
  }

  if (const json::object* tc = ObjectAt(*root, "toolConfig")) {
    if (const json::object* fc = ObjectAt(*tc, "functionCallingConfig")) {
      const std::string_view mode = StringAt(*fc, "mode");
      const json::array* allowed = ArrayAt(*fc, "allowedFunctionNames");
      ToolChoice choice;
      if (mode == "NONE") {
        choice.mode = ToolChoice::Mode::kNone;
      } else if (mode == "ANY") {
        if (allowed != nullptr && allowed->size() == 1 && (*allowed)[0].is_string()) {
          choice.mode = ToolChoice::Mode::kFunction;
          choice.function_name = std::string(View((*allowed)[0].get_string()));
        } else {
          choice.mode = ToolChoice::Mode::kRequired;
        }
      }  // AUTO, VALIDATED, unspecified: auto
      req.tool_choice = choice;
    }
  }

  if (const json::object* gc = ObjectAt(*root, "generationConfig")) {
    constexpr std::string_view kBase = "generationConfig";
    auto max = IntField(*gc, "maxOutputTokens", kBase);
    if (!max) return max.error();
    req.max_tokens = *max;
    if (const json::array* stop = ArrayAt(*gc, "stopSequences")) {
      for (const auto& s : *stop) {
        if (!s.is_string()) return BadRequest("stopSequences must be strings", "generationConfig.stopSequences");
        req.stop.emplace_back(View(s.get_string()));
      }
    }
    auto temperature = NumberField(*gc, "temperature", kBase);
    if (!temperature) return temperature.error();
    req.temperature = *temperature;
    auto top_p = NumberField(*gc, "topP", kBase);
    if (!top_p) return top_p.error();
    req.top_p = *top_p;
    auto top_k = IntField(*gc, "topK", kBase);
    if (!top_k) return top_k.error();
    req.top_k = *top_k;
    auto n = IntField(*gc, "candidateCount", kBase);
    if (!n) return n.error();
    req.n = *n;
    auto seed = IntField(*gc, "seed", kBase);
    if (!seed) return seed.error();
    if (*seed) req.seed = static_cast<uint64_t>(static_cast<uint32_t>(**seed));
    auto presence = NumberField(*gc, "presencePenalty", kBase);
    if (!presence) return presence.error();
    req.presence_penalty = *presence;
    auto frequency = NumberField(*gc, "frequencyPenalty", kBase);
    if (!frequency) return frequency.error();
    req.frequency_penalty = *frequency;

    const std::string_view mime = StringAt(*gc, "responseMimeType");
    const json::value* schema = gc->if_contains("responseJsonSchema");
    if (schema == nullptr || schema->is_null()) schema = gc->if_contains("_responseJsonSchema");
    if (schema == nullptr || schema->is_null()) schema = gc->if_contains("responseSchema");
    if (mime == "application/json") {
      ResponseFormat f;
      f.type = ResponseFormat::Type::kJsonObject;
      if (schema != nullptr && !schema->is_null()) {
        f.type = ResponseFormat::Type::kJsonSchema;
        f.schema = *schema;
      }
      req.response_format = std::move(f);
    } else if (mime == "text/plain") {
      req.response_format = ResponseFormat{};
    }

    if (const json::value* lp = gc->if_contains("responseLogprobs"); lp != nullptr && lp->is_bool()) {
      req.logprobs = lp->get_bool();
    }
    auto top_logprobs = IntField(*gc, "logprobs", kBase);
    if (!top_logprobs) return top_logprobs.error();
    req.top_logprobs = *top_logprobs;

    if (const json::object* tc = ObjectAt(*gc, "thinkingConfig")) {
      ReasoningSettings r;
      auto budget = IntField(*tc, "thinkingBudget", "generationConfig.thinkingConfig");
      if (!budget) return budget.error();
      if (*budget) {
        if (**budget == 0) {
          r.enabled = false;
        } else if (**budget < 0) {
          r.enabled = true;
        } else {
          r.max_tokens = **budget;
        }
      }
      if (const json::value* include = tc->if_contains("includeThoughts"); include != nullptr && include->is_bool()) {
        r.exclude = !include->get_bool();
      }
      r.effort = ToLower(StringAt(*tc, "thinkingLevel"));  // Gemini 3
      req.reasoning = std::move(r);
    }
  }
  return req;
}

// ---------------------------------------------------------------- ResponseDecoder

Result<void> ResponseDecoder::OnChunk(std::string_view data, std::vector<StreamEvent>& out) {
  auto parsed = ParseUpstreamJson(data);
  if (!parsed) return BadUpstream("Gemini sent a chunk that is not JSON");
  if (const json::array* many = parsed->if_array()) {
    for (const auto& v : *many) {
      if (auto r = OnResponse(v, out); !r) return r;
    }
    return {};
  }
  return OnResponse(*parsed, out);
}

Result<void> ResponseDecoder::OnResponse(const json::value& response, std::vector<StreamEvent>& out) {
  const json::object* root = response.if_object();
  if (root == nullptr) return BadUpstream("Gemini sent a chunk that is not a JSON object");
  if (const json::value* error = root->if_contains("error"); error != nullptr && !error->is_null()) {
    return UpstreamError(*error);
  }

  const json::array* candidates = ArrayAt(*root, "candidates");
  if (candidates != nullptr) {
    for (std::size_t pos = 0; pos < candidates->size(); ++pos) {
      const json::object* c = (*candidates)[pos].if_object();
      if (c == nullptr) return BadUpstream("Gemini sent a candidate that is not an object");
      // Candidate.index is proto3-optional; streams often leave index 0 out.
      int64_t index = static_cast<int64_t>(pos);
      if (const json::value* i = c->if_contains("index"); i != nullptr && i->is_number()) {
        index = i->is_int64() ? i->get_int64() : -1;
      }
      if (index < 0 || index >= kMaxCandidates) return BadUpstream("Gemini sent a candidate index out of range");
      const int choice = static_cast<int>(index);
      Candidate& state = candidates_[choice];
      if (const json::object* content = ObjectAt(*c, "content")) {
        if (const json::array* parts = ArrayAt(*content, "parts")) {
          for (const auto& p : *parts) {
            if (const json::object* part = p.if_object()) OnPart(choice, state, *part, out);
          }
        }
      }
      const std::string_view reason = StringAt(*c, "finishReason");
      if (!reason.empty() && reason != "FINISH_REASON_UNSPECIFIED") {
        CloseThought(choice, state, out);
        CloseText(choice, state, out);
        out.emplace_back(FinishDelta{choice, MapFinishReason(reason, state.call_seen), ValidUtf8(reason)});
        finish_seen_ = true;
      }
    }
  }
  if (candidates == nullptr || candidates->empty()) {
    // "Returns no candidates at all only if there was something wrong with
    // the prompt (check prompt_feedback)" (GenerateContentResponse).
    if (const json::object* feedback = ObjectAt(*root, "promptFeedback")) {
      const std::string_view block = StringAt(*feedback, "blockReason");
      if (!block.empty() && block != "BLOCK_REASON_UNSPECIFIED") {
        out.emplace_back(FinishDelta{0, FinishReason::kContentFilter, ValidUtf8(block)});
        finish_seen_ = true;
      }
    }
  }
  // usageMetadata is cumulative: each report replaces the last.
  if (const json::object* usage = ObjectAt(*root, "usageMetadata")) {
    if (auto u = DecodeUsage(*usage)) out.emplace_back(UsageDelta{*u});
  }
  return {};
}

void ResponseDecoder::OnPart(int choice, Candidate& state, const json::object& part,
                             std::vector<StreamEvent>& out) {
  const std::string signature = ValidUtf8(StringAt(part, "thoughtSignature"));
  if (const json::object* fc = ObjectAt(part, "functionCall")) {
    CloseThought(choice, state, out);
    CloseText(choice, state, out);
    // Each call arrives whole in one part, also when parallel calls come one
    // per chunk: each gets the candidate's next index. Gemini's function
    // parts carry no id we could hand to OpenAI-shaped clients; one is made.
    ToolCallDelta d;
    d.choice = choice;
    d.index = state.next_tool_index++;
    d.id = NewToolCallId();
    d.name = ValidUtf8(StringAt(*fc, "name"));
    const json::object* args = ObjectAt(*fc, "args");
    d.arguments = args != nullptr ? ValidUtf8(json::serialize(*args)) : "{}";
    d.thought_signature = signature;
    state.call_seen = true;
    out.emplace_back(std::move(d));
    return;
  }
  const json::value* text = part.if_contains("text");
  if (text != nullptr && text->is_string()) {
    const std::string_view t = View(text->get_string());
    const json::value* thought = part.if_contains("thought");
    if (thought != nullptr && thought->is_bool() && thought->get_bool()) {
      // A thought summary (ai.google.dev/gemini-api/docs/thinking): one
      // reasoning block for as long as thought parts follow each other.
      CloseText(choice, state, out);
      if (state.open_thought_block < 0) state.open_thought_block = state.next_reasoning_index++;
      std::string piece = ValidUtf8(state.thought.Push(t));
      if (!piece.empty() || !signature.empty()) {
        out.emplace_back(ReasoningDelta{choice, state.open_thought_block, ReasoningPart::Kind::kText,
                                        std::move(piece), signature, {}, std::string(kFormat), {}});
      }
      return;
    }
    CloseThought(choice, state, out);
    if (!signature.empty()) {
      // A signature on answer text (often the last part, or an empty text
      // part at the end of a stream, per the thought-signatures guide) is
      // kept as an encrypted reasoning block and replayed on the text.
      out.emplace_back(ReasoningDelta{choice, state.next_reasoning_index++, ReasoningPart::Kind::kEncrypted,
                                      {}, {}, signature, std::string(kFormat), {}});
    }
    std::string piece = ValidUtf8(state.text.Push(t));
    if (!piece.empty()) out.emplace_back(TextDelta{choice, std::move(piece)});
    return;
  }
  // Parts without a canonical event (images the model generated,
  // executableCode, codeExecutionResult): only a signature on them is kept.
  if (!signature.empty()) {
    CloseThought(choice, state, out);
    out.emplace_back(ReasoningDelta{choice, state.next_reasoning_index++, ReasoningPart::Kind::kEncrypted, {},
                                    {}, signature, std::string(kFormat), {}});
  }
}

void ResponseDecoder::CloseText(int choice, Candidate& state, std::vector<StreamEvent>& out) {
  std::string tail = state.text.Flush();
  if (!tail.empty()) out.emplace_back(TextDelta{choice, std::move(tail)});
}

void ResponseDecoder::CloseThought(int choice, Candidate& state, std::vector<StreamEvent>& out) {
  if (state.open_thought_block < 0) return;
  std::string tail = state.thought.Flush();
  if (!tail.empty()) {
    out.emplace_back(ReasoningDelta{choice, state.open_thought_block, ReasoningPart::Kind::kText,
                                    std::move(tail), {}, {}, std::string(kFormat), {}});
  }
  state.open_thought_block = -1;
}

void ResponseDecoder::Finish(std::vector<StreamEvent>& out) {
  for (auto& [choice, state] : candidates_) {
    CloseThought(choice, state, out);
    CloseText(choice, state, out);
  }
}

// ---------------------------------------------------------------- EncodeGenerateContentResponse

std::string EncodeGenerateContentResponse(const ChatResponse& response, const Usage& usage,
                                          std::string_view model_version) {
  json::array candidates;
  for (std::size_t i = 0; i < response.choices.size(); ++i) {
    const ChoiceResult& choice = response.choices[i];
    std::vector<ContentPart> parts;
    for (const auto& r : choice.reasoning) parts.emplace_back(r);
    if (!choice.text.empty()) parts.emplace_back(TextPart{choice.text, {}});
    for (const auto& c : choice.tool_calls) parts.emplace_back(c);
    json::object candidate;
    candidate["content"] = json::object{{"parts", ModelParts(parts, /*any_format=*/true)}, {"role", "model"}};
    if (choice.finish) candidate["finishReason"] = NativeFinishReason(choice);
    candidate["index"] = static_cast<int64_t>(i);
    candidates.emplace_back(std::move(candidate));
  }
  json::object root;
  root["candidates"] = std::move(candidates);
  root["usageMetadata"] = UsageJson(usage);
  root["modelVersion"] = model_version;
  return json::serialize(root);
}

}  // namespace tollgate::wire::gemini
