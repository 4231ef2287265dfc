// OpenAI Responses API, outbound half (providers): requests out, responses in.
// wire/include/tollgate/wire/responses.hpp documents the mapping; the facts it
// relies on, and where they come from:
//
// [CREATE] "Create a model response" (platform.openai.com/docs/api-reference/
//          responses/create) and ResponseCreateParamsBase in the `openai` npm
//          package 6.x (resources/responses/responses.d.ts): input, tools,
//          tool_choice, parallel_tool_calls, text.format, reasoning {effort,
//          summary}, max_output_tokens, temperature, top_p, top_logprobs,
//          user, store, stream, include.
// [ITEMS]  ResponseInputItem: EasyInputMessage {role user|assistant|system|
//          developer, content}; input_text {text}; input_image {image_url,
//          detail} (detail required: low | high | auto); assistant
//          output_text {text}; function_call {call_id, name, arguments};
//          function_call_output {call_id, output: string | input_text /
//          input_image list}; reasoning {id, summary[{type: summary_text,
//          text}], content?[{type: reasoning_text, text}], encrypted_content}.
//          FunctionTool {type: function, name, parameters, strict,
//          description}; ToolChoiceFunction {type: function, name};
//          ResponseFormatTextJSONSchemaConfig {type: json_schema, name,
//          schema, description, strict}.
// [STATE]  Reasoning guide, "Encrypted reasoning items": with store false,
//          reasoning items come back to the model only through
//          encrypted_content (include ["reasoning.encrypted_content"]); an
//          item sent with only its id is looked up in storage and fails
//          ("Items are not persisted when `store` is set to false").
// [STREAM] "Streaming events" (platform.openai.com/docs/api-reference/
//          responses-streaming) and ResponseStreamEvent: each event
//          `event: TYPE` + `data: {type, sequence_number, ...}`;
//          response.created / in_progress / queued, output_item.added / done
//          {output_index, item}, content_part.added / done,
//          output_text.delta {item_id, output_index, content_index, delta},
//          refusal.delta, reasoning_summary_part.added / done,
//          reasoning_summary_text.delta / done {summary_index},
//          reasoning_text.delta / done {content_index},
//          function_call_arguments.delta / done {item_id, output_index},
//          response.completed / incomplete / failed {response}, and `error`
//          {code, message, param}. No terminator after the final event.
// [USAGE]  ResponseUsage: input_tokens (cached included),
//          input_tokens_details {cached_tokens, cache_write_tokens},
//          output_tokens (reasoning included), output_tokens_details
//          {reasoning_tokens}, total_tokens: OpenAI token semantics.
// [ERR]    ResponseError.code: server_error, rate_limit_exceeded,
//          invalid_prompt, ... ; Response.incomplete_details.reason:
//          max_output_tokens | content_filter.
#include "tollgate/wire/responses.hpp"

#include "json_util.hpp"
#include "tollgate/core/text.hpp"

#include <boost/json/serialize.hpp>

#include <algorithm>
#include <map>
#include <utility>
#include <variant>

namespace tollgate::wire::responses {
namespace {

namespace json = boost::json;
using detail::ArrayAt;
using detail::BadUpstream;
using detail::ObjectAt;
using detail::StringAt;

// OpenRouter's `format` of OpenAI Responses reasoning (the only format
// replayed to this API).
constexpr std::string_view kFormat = kReasoningFormatOpenAiResponses;
// Upstream text passed on in an error message is capped at this many bytes.
constexpr std::size_t kMaxUpstreamMessageBytes = 2000;

std::string Str(std::string_view s) { return std::string(s); }

std::string CapMessage(std::string_view text) {
  if (text.size() <= kMaxUpstreamMessageBytes) return std::string(text);
  constexpr std::string_view kEllipsis = "...";
  text = text.substr(0, kMaxUpstreamMessageBytes - kEllipsis.size());
  return std::string(text.substr(0, CompleteUtf8Prefix(text))) + std::string(kEllipsis);
}

// ---------------------------------------------------------------- request encoding

json::object InputText(std::string_view text) { return json::object{{"type", "input_text"}, {"text", text}}; }

json::object InputImage(const ImagePart& image) {
  // [ITEMS] detail is required on input_image.
  return json::object{
      {"type", "input_image"}, {"image_url", image.url}, {"detail", image.detail.empty() ? "auto" : image.detail}};
}

json::object InputMessage(const Message& message) {
  json::array content;
  for (const ContentPart& part : message.parts) {
    if (const auto* text = std::get_if<TextPart>(&part)) {
      content.push_back(InputText(text->text));
    } else if (const auto* image = std::get_if<ImagePart>(&part)) {
      content.push_back(InputImage(*image));
    }
    // Tool calls, results, reasoning and other APIs' blocks have no place in
    // an input message.
  }
  return json::object{{"type", "message"}, {"role", RoleName(message.role)}, {"content", std::move(content)}};
}

json::object FunctionCallOutput(const ToolResultPart& result) {
  json::object item{{"type", "function_call_output"}, {"call_id", result.tool_call_id}};
  bool text_only = true;
  for (const auto& c : result.content) text_only = text_only && std::holds_alternative<TextPart>(c);
  if (text_only) {
    std::string output;
    for (const auto& c : result.content) output += std::get<TextPart>(c).text;
    if (result.is_error && output.empty()) output = "error";
    item["output"] = output;
  } else {
    json::array output;
    for (const auto& c : result.content) {
      if (const auto* text = std::get_if<TextPart>(&c)) {
        output.push_back(InputText(text->text));
      } else {
        output.push_back(InputImage(std::get<ImagePart>(c)));
      }
    }
    item["output"] = std::move(output);
  }
  return item;
}

// The reasoning parts of one item being gathered: replayed only when it is
// OpenAI's own and carries encrypted content [STATE].
struct ReasoningItem {
  std::string id;
  json::array summary;
  json::array content;
  std::string encrypted;
};

void FlushReasoning(std::optional<ReasoningItem>& item, json::array& input) {
  if (!item) return;
  if (!item->id.empty() && !item->encrypted.empty()) {
    json::object o{{"type", "reasoning"}, {"id", item->id}, {"summary", std::move(item->summary)}};
    if (!item->content.empty()) o["content"] = std::move(item->content);
    o["encrypted_content"] = item->encrypted;
    input.push_back(std::move(o));
  }
  item.reset();
}

// An assistant turn as its items, in order [ITEMS].
void AssistantItems(const Message& message, json::array& input) {
  std::optional<ReasoningItem> reasoning;
  json::array text;  // output_text parts of the message item being gathered
  auto flush_text = [&] {
    if (text.empty()) return;
    input.push_back(json::object{{"type", "message"}, {"role", "assistant"}, {"content", std::move(text)}});
    text = json::array{};
  };
  for (const ContentPart& part : message.parts) {
    if (const auto* r = std::get_if<ReasoningPart>(&part)) {
      flush_text();
      if (r->format != kFormat) {
        FlushReasoning(reasoning, input);  // another provider's reasoning: left out
        continue;
      }
      if (reasoning && reasoning->id != r->id) FlushReasoning(reasoning, input);
      if (!reasoning) reasoning = ReasoningItem{r->id, {}, {}, {}};
      switch (r->kind) {
        case ReasoningPart::Kind::kSummary:
          reasoning->summary.push_back(json::object{{"type", "summary_text"}, {"text", r->text}});
          break;
        case ReasoningPart::Kind::kText:
          reasoning->content.push_back(json::object{{"type", "reasoning_text"}, {"text", r->text}});
          break;
        case ReasoningPart::Kind::kEncrypted:
          reasoning->encrypted = r->data;
          break;
      }
      continue;
    }
    FlushReasoning(reasoning, input);
    if (const auto* t = std::get_if<TextPart>(&part)) {
      if (!t->text.empty()) text.push_back(json::object{{"type", "output_text"}, {"text", t->text}});
    } else if (const auto* call = std::get_if<ToolCallPart>(&part)) {
      flush_text();
      input.push_back(json::object{{"type", "function_call"},
                                   {"call_id", call->id},
                                   {"name", call->name},
                                   {"arguments", call->arguments.empty() ? "{}" : call->arguments}});
    }
  }
  FlushReasoning(reasoning, input);
  flush_text();
}

json::array InputItems(const ChatRequest& request) {
  json::array input;
  if (request.kind == RequestKind::kCompletion) {
    input.push_back(json::object{
        {"type", "message"}, {"role", "user"}, {"content", json::array{InputText(request.prompt)}}});
    return input;
  }
  for (const Message& m : request.messages) {
    switch (m.role) {
      case Role::kSystem:
      case Role::kDeveloper:
      case Role::kUser:
        input.push_back(InputMessage(m));
        break;
      case Role::kAssistant:
        AssistantItems(m, input);
        break;
      case Role::kTool:
        for (const ContentPart& part : m.parts) {
          if (const auto* result = std::get_if<ToolResultPart>(&part)) input.push_back(FunctionCallOutput(*result));
        }
        break;
    }
  }
  return input;
}

json::object FunctionTool(const ToolDefinition& t) {
  json::object tool{{"type", "function"}, {"name", t.name}};
  if (!t.description.empty()) tool["description"] = t.description;
  if (t.parameters.is_object()) {
    tool["parameters"] = t.parameters;
  } else {
    // [ITEMS] parameters is required; a function without any takes an empty object.
    json::object empty{{"type", "object"}, {"properties", json::object{}}};
    if (t.strict.value_or(false)) {
      empty["required"] = json::array{};
      empty["additionalProperties"] = false;
    }
    tool["parameters"] = std::move(empty);
  }
  // [ITEMS] strict is required (the API's default is true, Chat Completions' false).
  tool["strict"] = t.strict.value_or(false);
  return tool;
}

json::object TextFormat(const ResponseFormat& f) {
  switch (f.type) {
    case ResponseFormat::Type::kText: return json::object{{"type", "text"}};
    case ResponseFormat::Type::kJsonObject: return json::object{{"type", "json_object"}};
    case ResponseFormat::Type::kJsonSchema: {
      json::object format{{"type", "json_schema"}, {"name", f.name.empty() ? std::string("response") : f.name}};
      if (!f.description.empty()) format["description"] = f.description;
      format["schema"] = f.schema.is_object() ? f.schema : json::value(json::object{});
      if (f.strict) format["strict"] = *f.strict;
      return format;
    }
  }
  return json::object{{"type", "text"}};
}

// ---------------------------------------------------------------- response decoding

FinishReason IncompleteReason(std::string_view reason) {
  return reason == "content_filter" ? FinishReason::kContentFilter : FinishReason::kLength;
}

Error UpstreamError(std::string_view code, std::string_view message) {
  ErrorCode ec = ErrorCode::kBadGateway;
  if (code == "rate_limit_exceeded") {
    ec = ErrorCode::kResourceExhausted;
  } else if (code == "server_error" || code == "overloaded" || code == "server_is_overloaded") {
    ec = ErrorCode::kUnavailable;
  }
  std::string text = code.empty() ? std::string("upstream error") : ValidUtf8(code);
  if (!message.empty()) text += ": " + ValidUtf8(message);
  Error e{ec, CapMessage(text), {}, {}};
  if (ec == ErrorCode::kResourceExhausted) e.code_string = Str(code);
  return e;
}

std::optional<Usage> ParseUsage(const json::object& usage) {
  Usage u;
  auto input = TokenCount(usage.if_contains("input_tokens"));
  auto output = TokenCount(usage.if_contains("output_tokens"));
  if (!input && !output) return std::nullopt;
  u.prompt_tokens = input.value_or(0);
  u.completion_tokens = output.value_or(0);
  if (const json::object* d = ObjectAt(usage, "input_tokens_details")) {
    u.cached_tokens = TokenCount(d->if_contains("cached_tokens")).value_or(0);
    u.cache_write_tokens = TokenCount(d->if_contains("cache_write_tokens")).value_or(0);
  }
  if (const json::object* d = ObjectAt(usage, "output_tokens_details")) {
    u.reasoning_tokens = TokenCount(d->if_contains("reasoning_tokens")).value_or(0);
  }
  ClampUsage(u);
  return u;
}

std::optional<int64_t> IntAt(const json::object& o, std::string_view key) {
  const json::value* v = o.if_contains(key);
  return v != nullptr ? detail::AsInteger(*v) : std::nullopt;
}

}  // namespace

std::string EncodeRequest(const ChatRequest& request, const RequestOptions& options) {
  json::object body;
  body["model"] = options.upstream_model.empty() ? request.model : options.upstream_model;
  body["input"] = InputItems(request);
  if (!request.tools.empty()) {
    json::array tools;
    for (const ToolDefinition& t : request.tools) tools.push_back(FunctionTool(t));
    body["tools"] = std::move(tools);
  }
  if (request.tool_choice) {
    switch (request.tool_choice->mode) {
      case ToolChoice::Mode::kAuto: body["tool_choice"] = "auto"; break;
      case ToolChoice::Mode::kNone: body["tool_choice"] = "none"; break;
      case ToolChoice::Mode::kRequired: body["tool_choice"] = "required"; break;
      case ToolChoice::Mode::kFunction:
        body["tool_choice"] = json::object{{"type", "function"}, {"name", request.tool_choice->function_name}};
        break;
    }
  }
  if (request.parallel_tool_calls) body["parallel_tool_calls"] = *request.parallel_tool_calls;
  if (request.response_format) body["text"] = json::object{{"format", TextFormat(*request.response_format)}};
  json::object reasoning;
  if (request.reasoning && !request.reasoning->effort.empty()) reasoning["effort"] = request.reasoning->effort;
  if (!request.reasoning_summary.empty()) {
    reasoning["summary"] = request.reasoning_summary;  // the caller's own choice
  } else if (request.reasoning && request.reasoning->Requested() && !request.reasoning->exclude) {
    reasoning["summary"] = "auto";
  }
  if (!reasoning.empty()) body["reasoning"] = std::move(reasoning);
  // The caller's conversation identity keeps its turns on one OpenAI prompt
  // cache (platform.openai.com/docs/guides/prompt-caching, prompt_cache_key).
  if (!request.session_id.empty()) body["prompt_cache_key"] = request.session_id;
  if (request.max_tokens) body["max_output_tokens"] = *request.max_tokens;
  if (request.temperature) body["temperature"] = *request.temperature;
  if (request.top_p) body["top_p"] = *request.top_p;
  if (request.top_logprobs) body["top_logprobs"] = *request.top_logprobs;
  if (!request.user.empty()) body["user"] = request.user;
  body["store"] = false;
  body["include"] = json::array{"reasoning.encrypted_content"};
  body["stream"] = options.stream;
  return json::serialize(body);
}

// ---------------------------------------------------------------- ResponseDecoder

struct ResponseDecoder::Impl {
  enum class Kind { kMessage, kReasoning, kCall, kOther };
  struct Item {
    Kind kind = Kind::kOther;
    std::string id;
    bool closed = false;  // output_item.done came
    // kMessage: text emitted; its stitcher.
    bool text_seen = false;
    Utf8Stitcher text;
    // kReasoning: canonical block index per summary_index / content_index,
    // and their stitchers (by canonical index).
    std::map<int64_t, int> summaries;
    std::map<int64_t, int> contents;
    std::map<int, Utf8Stitcher> blocks;
    bool encrypted_seen = false;
    // kCall: canonical index; arguments emitted.
    int call = -1;
    bool arguments_seen = false;
    Utf8Stitcher arguments;
  };

  std::map<int64_t, Item> items;               // by output_index
  std::map<std::string, int64_t> by_id;        // item id -> output_index
  int next_reasoning = 0;
  int next_call = 0;
  bool any_call = false;

  Item* Find(const json::object& event) {
    if (auto index = IntAt(event, "output_index")) {
      if (auto it = items.find(*index); it != items.end()) return &it->second;
    }
    if (auto it = by_id.find(Str(StringAt(event, "item_id"))); it != by_id.end()) return &items[it->second];
    return nullptr;
  }

  int ReasoningBlock(std::map<int64_t, int>& slots, int64_t slot) {
    auto [it, fresh] = slots.try_emplace(slot, 0);
    if (fresh) it->second = next_reasoning++;
    return it->second;
  }

  void EmitReasoning(Item& item, int block, ReasoningPart::Kind kind, std::string text,
                     std::vector<StreamEvent>& out) {
    if (text.empty()) return;
    ReasoningDelta d;
    d.index = block;
    d.kind = kind;
    d.text = std::move(text);
    d.format = Str(kFormat);
    d.id = item.id;
    out.emplace_back(std::move(d));
  }

  // output_item.added, or a done item never announced.
  Item& Open(int64_t index, const json::object& item, std::vector<StreamEvent>& out) {
    auto [it, fresh] = items.try_emplace(index);
    Item& state = it->second;
    if (!fresh) return state;
    const std::string_view type = StringAt(item, "type");
    state.id = Str(StringAt(item, "id"));
    if (!state.id.empty()) by_id[state.id] = index;
    if (type == "message") {
      state.kind = Kind::kMessage;
    } else if (type == "reasoning") {
      state.kind = Kind::kReasoning;
    } else if (type == "function_call") {
      state.kind = Kind::kCall;
      state.call = next_call++;
      any_call = true;
      out.emplace_back(ToolCallDelta{0, state.call, Str(StringAt(item, "call_id")),
                                     ValidUtf8(StringAt(item, "name")), {}, {}});
    }
    // Built-in tool calls (web_search_call, ...) and newer item types: nothing.
    return state;
  }

  // output_item.done: what the deltas did not carry, from the whole item.
  void Close(Item& state, const json::object& item, std::vector<StreamEvent>& out) {
    if (state.closed) return;
    state.closed = true;
    switch (state.kind) {
      case Kind::kMessage: {
        std::string tail = state.text.Flush();
        if (!tail.empty()) out.emplace_back(TextDelta{0, std::move(tail)});
        if (state.text_seen) break;
        if (const json::array* content = ArrayAt(item, "content")) {
          for (const json::value& c : *content) {
            const json::object* part = c.if_object();
            if (part == nullptr) continue;
            const std::string_view type = StringAt(*part, "type");
            std::string_view text;
            if (type == "output_text") text = StringAt(*part, "text");
            if (type == "refusal") text = StringAt(*part, "refusal");
            if (!text.empty()) out.emplace_back(TextDelta{0, ValidUtf8(text)});
          }
        }
        break;
      }
      case Kind::kReasoning: {
        for (auto& [block, stitcher] : state.blocks) {
          std::string tail = stitcher.Flush();
          if (tail.empty()) continue;
          const bool summary = std::any_of(state.summaries.begin(), state.summaries.end(),
                                           [b = block](const auto& s) { return s.second == b; });
          EmitReasoning(state, block, summary ? ReasoningPart::Kind::kSummary : ReasoningPart::Kind::kText,
                        std::move(tail), out);
        }
        // Summaries and reasoning text that came without deltas.
        auto whole = [&](std::string_view key, std::map<int64_t, int>& slots, ReasoningPart::Kind kind) {
          const json::array* entries = ArrayAt(item, key);
          if (entries == nullptr) return;
          for (std::size_t i = 0; i < entries->size(); ++i) {
            const json::object* e = (*entries)[i].if_object();
            if (e == nullptr) continue;
            const auto slot = slots.find(static_cast<int64_t>(i));
            if (slot != slots.end() && state.blocks.contains(slot->second)) continue;  // its deltas came
            const std::string_view text = StringAt(*e, "text");
            if (text.empty()) continue;
            const int block = ReasoningBlock(slots, static_cast<int64_t>(i));
            state.blocks[block];
            EmitReasoning(state, block, kind, ValidUtf8(text), out);
          }
        };
        whole("summary", state.summaries, ReasoningPart::Kind::kSummary);
        whole("content", state.contents, ReasoningPart::Kind::kText);
        const std::string_view encrypted = StringAt(item, "encrypted_content");
        if (!encrypted.empty() && !state.encrypted_seen) {
          state.encrypted_seen = true;
          ReasoningDelta d;
          d.index = next_reasoning++;
          d.kind = ReasoningPart::Kind::kEncrypted;
          d.data = Str(encrypted);
          d.format = Str(kFormat);
          d.id = state.id;
          out.emplace_back(std::move(d));
        }
        break;
      }
      case Kind::kCall: {
        std::string tail = state.arguments.Flush();
        if (!tail.empty()) out.emplace_back(ToolCallDelta{0, state.call, {}, {}, std::move(tail), {}});
        if (!state.arguments_seen) {
          state.arguments_seen = true;
          const std::string_view arguments = StringAt(item, "arguments");
          out.emplace_back(
              ToolCallDelta{0, state.call, {}, {}, arguments.empty() ? std::string("{}") : ValidUtf8(arguments), {}});
        }
        break;
      }
      case Kind::kOther:
        break;
    }
  }

  // A whole item (from a whole response, or the final response of a stream
  // whose item events did not all come).
  void WholeItem(int64_t index, const json::object& item, std::vector<StreamEvent>& out) {
    Item& state = Open(index, item, out);
    Close(state, item, out);
  }

  void Flush(std::vector<StreamEvent>& out) {
    for (auto& [index, state] : items) Close(state, json::object{}, out);
  }

  // The final response object: items not yet seen, then finish and usage.
  Result<void> Final(const json::object& response, std::vector<StreamEvent>& out) {
    const std::string_view status = StringAt(response, "status");
    if (status == "failed") {
      const json::object* error = ObjectAt(response, "error");
      return UpstreamError(error ? StringAt(*error, "code") : std::string_view{},
                           error ? StringAt(*error, "message") : std::string_view{});
    }
    if (status != "completed" && status != "incomplete") {
      return BadUpstream("OpenAI upstream ended the response with status '" + CapMessage(ValidUtf8(status)) + "'");
    }
    if (const json::array* output = ArrayAt(response, "output")) {
      for (std::size_t i = 0; i < output->size(); ++i) {
        if (const json::object* item = (*output)[i].if_object()) {
          // An item already streamed is matched by its id, else by position.
          const std::string id = Str(StringAt(*item, "id"));
          auto known = id.empty() ? by_id.end() : by_id.find(id);
          if (known != by_id.end()) {
            Close(items[known->second], *item, out);
          } else {
            WholeItem(static_cast<int64_t>(i), *item, out);
          }
        }
      }
    }
    Flush(out);
    if (status == "completed") {
      out.emplace_back(FinishDelta{0, any_call ? FinishReason::kToolCalls : FinishReason::kStop, "completed", {}});
    } else {
      const json::object* details = ObjectAt(response, "incomplete_details");
      const std::string_view reason = details ? StringAt(*details, "reason") : std::string_view{};
      out.emplace_back(
          FinishDelta{0, IncompleteReason(reason), reason.empty() ? std::string("incomplete") : ValidUtf8(reason), {}});
    }
    if (const json::object* usage = ObjectAt(response, "usage")) {
      if (auto u = ParseUsage(*usage)) out.emplace_back(UsageDelta{*u});
    }
    return {};
  }
};

// Impl is made on first use, so a default-constructed decoder costs
// nothing until an event comes.
ResponseDecoder::ResponseDecoder() = default;
ResponseDecoder::~ResponseDecoder() = default;
ResponseDecoder::ResponseDecoder(ResponseDecoder&&) noexcept = default;
ResponseDecoder& ResponseDecoder::operator=(ResponseDecoder&&) noexcept = default;

Result<void> ResponseDecoder::OnEvent(std::string_view type, std::string_view data, std::vector<StreamEvent>& out) {
  if (done_) return {};
  if (!impl_) impl_ = std::make_unique<Impl>();
  Impl& s = *impl_;
  const auto parsed = ParseUpstreamJson(data);
  if (!parsed || !parsed->is_object()) return BadUpstream("OpenAI upstream sent an event that is not a JSON object");
  const json::object& event = parsed->get_object();
  // The SSE event name and the data's `type` match [STREAM]; the data wins
  // when an intermediary dropped the `event:` line.
  const std::string_view data_type = StringAt(event, "type");
  const std::string_view kind = data_type.empty() ? type : data_type;

  if (kind == "response.output_item.added") {
    const json::object* item = ObjectAt(event, "item");
    const auto index = IntAt(event, "output_index");
    if (item == nullptr || !index) return BadUpstream("OpenAI upstream sent a malformed response.output_item.added");
    s.Open(*index, *item, out);
  } else if (kind == "response.output_item.done") {
    const json::object* item = ObjectAt(event, "item");
    const auto index = IntAt(event, "output_index");
    if (item == nullptr || !index) return BadUpstream("OpenAI upstream sent a malformed response.output_item.done");
    s.WholeItem(*index, *item, out);
  } else if (kind == "response.output_text.delta" || kind == "response.refusal.delta") {
    Impl::Item* item = s.Find(event);
    if (item == nullptr || item->kind != Impl::Kind::kMessage) {
      return BadUpstream("OpenAI upstream sent text for an item it never started");
    }
    item->text_seen = true;
    std::string text = ValidUtf8(item->text.Push(StringAt(event, "delta")));
    if (!text.empty()) out.emplace_back(TextDelta{0, std::move(text)});
  } else if (kind == "response.reasoning_summary_text.delta" || kind == "response.reasoning_text.delta") {
    Impl::Item* item = s.Find(event);
    if (item == nullptr || item->kind != Impl::Kind::kReasoning) {
      return BadUpstream("OpenAI upstream sent reasoning for an item it never started");
    }
    const bool summary = kind == "response.reasoning_summary_text.delta";
    const int64_t slot = IntAt(event, summary ? "summary_index" : "content_index").value_or(0);
    const int block = s.ReasoningBlock(summary ? item->summaries : item->contents, slot);
    std::string text = ValidUtf8(item->blocks[block].Push(StringAt(event, "delta")));
    s.EmitReasoning(*item, block, summary ? ReasoningPart::Kind::kSummary : ReasoningPart::Kind::kText,
                    std::move(text), out);
  } else if (kind == "response.reasoning_summary_part.added") {
    // Reserves the block so that blocks keep the upstream's order.
    if (Impl::Item* item = s.Find(event); item != nullptr && item->kind == Impl::Kind::kReasoning) {
      s.ReasoningBlock(item->summaries, IntAt(event, "summary_index").value_or(0));
    }
  } else if (kind == "response.reasoning_summary_text.done" || kind == "response.reasoning_text.done") {
    // The whole text, for a part whose deltas never came.
    Impl::Item* item = s.Find(event);
    if (item != nullptr && item->kind == Impl::Kind::kReasoning) {
      const bool summary = kind == "response.reasoning_summary_text.done";
      const int64_t slot = IntAt(event, summary ? "summary_index" : "content_index").value_or(0);
      auto& slots = summary ? item->summaries : item->contents;
      const bool had = slots.contains(slot) && item->blocks.contains(slots[slot]);
      if (!had) {
        const int block = s.ReasoningBlock(slots, slot);
        item->blocks[block];  // the block has its text now
        s.EmitReasoning(*item, block, summary ? ReasoningPart::Kind::kSummary : ReasoningPart::Kind::kText,
                        ValidUtf8(StringAt(event, "text")), out);
      }
    }
  } else if (kind == "response.function_call_arguments.delta") {
    Impl::Item* item = s.Find(event);
    if (item == nullptr || item->kind != Impl::Kind::kCall) {
      return BadUpstream("OpenAI upstream sent arguments for a call it never started");
    }
    std::string part = ValidUtf8(item->arguments.Push(StringAt(event, "delta")));
    if (!part.empty()) {
      item->arguments_seen = true;
      out.emplace_back(ToolCallDelta{0, item->call, {}, {}, std::move(part), {}});
    }
  } else if (kind == "response.function_call_arguments.done") {
    Impl::Item* item = s.Find(event);
    if (item != nullptr && item->kind == Impl::Kind::kCall && !item->arguments_seen && item->arguments.empty()) {
      item->arguments_seen = true;
      const std::string_view arguments = StringAt(event, "arguments");
      out.emplace_back(
          ToolCallDelta{0, item->call, {}, {}, arguments.empty() ? std::string("{}") : ValidUtf8(arguments), {}});
    }
  } else if (kind == "response.completed" || kind == "response.incomplete" || kind == "response.failed") {
    const json::object* response = ObjectAt(event, "response");
    if (response == nullptr) return BadUpstream("OpenAI upstream sent a final event without its response");
    json::object with_status = *response;
    // The event type decides the status when the object disagrees or lacks it.
    with_status["status"] = kind.substr(std::string_view("response.").size());
    auto r = s.Final(with_status, out);
    if (!r) return r;
    done_ = true;
  } else if (kind == "error") {
    return UpstreamError(StringAt(event, "code"), StringAt(event, "message"));
  }
  // response.created / in_progress / queued, content_part.*, output_text.done,
  // annotation and built-in tool events, newer types: nothing [STREAM].
  return {};
}

Result<void> ResponseDecoder::OnWholeResponse(std::string_view body, std::vector<StreamEvent>& out) {
  if (!impl_) impl_ = std::make_unique<Impl>();
  const auto parsed = ParseUpstreamJson(body);
  if (!parsed || !parsed->is_object()) return BadUpstream("OpenAI upstream answered with a body that is not JSON");
  const json::object& response = parsed->get_object();
  if (const json::object* error = ObjectAt(response, "error"); error != nullptr && !response.contains("status")) {
    return UpstreamError(StringAt(*error, "code"), StringAt(*error, "message"));  // an error body with a 2xx
  }
  auto r = impl_->Final(response, out);
  if (!r) return r;
  done_ = true;
  return {};
}

void ResponseDecoder::Finish(std::vector<StreamEvent>& out) {
  if (impl_) impl_->Flush(out);
}

}  // namespace tollgate::wire::responses
