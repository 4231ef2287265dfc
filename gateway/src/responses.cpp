#include "responses.hpp"

#include "tollgate/core/text.hpp"

#include <boost/json.hpp>

#include <chrono>
#include <utility>

namespace tollgate::gateway {

ResponseEncoder::ResponseEncoder(const ChatRequest& request, wire::ResponseMeta meta, ErrorFlavor error_flavor,
                                 int64_t prompt_tokens_hint,
                                 std::optional<wire::responses::ResponseOptions> responses)
    : api_(request.api),
      kind_(request.kind),
      stream_(request.stream),
      include_usage_(request.include_usage),
      include_reasoning_(!(request.reasoning && request.reasoning->exclude)),
      meta_(std::move(meta)),
      error_flavor_(error_flavor),
      prompt_tokens_hint_(prompt_tokens_hint),
      responses_options_(std::move(responses)) {
  if (api_ == ApiFlavor::kOpenAiResponses && !responses_options_) responses_options_.emplace();
}

namespace {

int64_t UnixNow() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

// Adds `"routing": routing` to the JSON object `json` (serialized).
std::string WithRouting(const std::string& json, const boost::json::value& routing) {
  boost::json::error_code ec;
  boost::json::value v = boost::json::parse(json, ec);
  if (ec || !v.is_object()) return json;
  v.as_object()["routing"] = routing;
  return boost::json::serialize(v);
}

// The first SSE frame of `bytes` with `"routing"` added to its JSON data.
std::string FirstFrameWithRouting(const std::string& bytes, const boost::json::value& routing) {
  const std::size_t data = bytes.find("data: ");
  if (data == std::string::npos) return bytes;
  const std::size_t end = bytes.find("\n\n", data);
  if (end == std::string::npos) return bytes;
  const std::size_t start = data + 6;
  return bytes.substr(0, start) + WithRouting(bytes.substr(start, end - start), routing) + bytes.substr(end);
}

}  // namespace

boost::json::value RoutingExplanation(const routing::Plan& plan) {
  boost::json::array candidates;
  for (const routing::Considered& c : plan.considered) {
    boost::json::object o{{"endpoint", c.endpoint->id},
                          {"provider", c.endpoint->provider != nullptr ? std::string(c.endpoint->provider->Name())
                                                                       : c.endpoint->provider_id},
                          {"model", c.model->id}};
    if (c.skipped == routing::SkipReason::kNone) {
      // Shares are what the default strategy draws by; sorts and the
      // configured order have none (the position in `order` says it all).
      if (plan.strategy == routing::RoutingPolicy::Strategy::kShares) o["share"] = c.share;
      o["effective_price"] = c.effective_price;
    } else {
      o["skipped"] = std::string(routing::SkipReasonName(c.skipped));
      if (!c.unsupported.empty()) o["unsupported_parameters"] = c.unsupported.Names();
    }
    candidates.push_back(std::move(o));
  }
  boost::json::array order;
  for (const routing::Candidate& c : plan.candidates) order.emplace_back(c.endpoint->id);
  std::string_view strategy;
  switch (plan.strategy) {
    case routing::RoutingPolicy::Strategy::kShares: strategy = "shares"; break;
    case routing::RoutingPolicy::Strategy::kPrice: strategy = "price"; break;
    case routing::RoutingPolicy::Strategy::kThroughput: strategy = "throughput"; break;
    case routing::RoutingPolicy::Strategy::kLatency: strategy = "latency"; break;
    case routing::RoutingPolicy::Strategy::kOrdered: strategy = "ordered"; break;
  }
  return boost::json::object{{"strategy", strategy},
                             {"sticky", !plan.candidates.empty() && plan.candidates.front().sticky},
                             {"order", std::move(order)},
                             {"candidates", std::move(candidates)}};
}

void ResponseEncoder::Commit(const CommitInfo& info) {
  meta_.provider = info.provider;
  meta_.model = info.model.empty() ? meta_.model : info.model;
  if (info.plan != nullptr) routing_ = RoutingExplanation(*info.plan);
  if (!stream_) return;
  if (api_ == ApiFlavor::kAnthropicMessages) {
    anthropic_.emplace(meta_, prompt_tokens_hint_);
  } else if (api_ == ApiFlavor::kOpenAiResponses) {
    responses_.emplace(meta_, *responses_options_);
  } else {
    openai_.emplace(meta_, wire::openai::ResponseOptions{kind_, include_usage_, include_reasoning_});
  }
}

std::string ResponseEncoder::Event(const StreamEvent& event) {
  std::string bytes;
  if (anthropic_) {
    if (!include_reasoning_ && std::holds_alternative<ReasoningDelta>(event)) return {};
    bytes = anthropic_->Encode(event);
  } else if (responses_) {
    bytes = responses_->Encode(event);
  } else if (openai_) {
    bytes = openai_->Encode(event);
  }
  // The routing explanation rides on the stream's first chunk (OpenAI shapes)
  // or its message_start event (Anthropic's).
  if (routing_ && !bytes.empty()) bytes = FirstFrameWithRouting(bytes, *std::exchange(routing_, std::nullopt));
  return bytes;
}

std::string ResponseEncoder::StreamEnd(const CallSummary& summary) {
  if (anthropic_) return anthropic_->Finish(summary.usage);
  if (responses_) return responses_->Finish(summary.usage, summary.cost, summary.byok, UnixNow());
  if (openai_) return openai_->Finish(summary.usage, summary.cost, summary.byok);
  return {};
}

std::string ResponseEncoder::StreamError(const Error& error) {
  if (api_ == ApiFlavor::kAnthropicMessages) return wire::anthropic::StreamEncoder::ErrorEvent(error);
  if (responses_) return responses_->Fail(InCallersTerms(api_, error));
  // OpenRouter's mid-stream error (openrouter.ai/docs/api-reference/streaming,
  // "Mid-stream errors"): a chunk with the stream's id, `error`, and choice 0
  // ending with finish_reason "error" (@openrouter/sdk parses it as a chunk;
  // the openai SDK raises on `error`); no [DONE] after it.
  boost::json::value body = boost::json::parse(tollgate::ErrorBody(error, error_flavor_));
  boost::json::object choice{{"index", 0}, {"finish_reason", "error"}};
  if (kind_ == RequestKind::kChat) {
    choice["delta"] = boost::json::object{{"content", ""}};
  } else {
    choice["text"] = "";
  }
  boost::json::object chunk{{"id", meta_.id},
                            {"object", kind_ == RequestKind::kChat ? "chat.completion.chunk" : "text_completion"},
                            {"created", meta_.created},
                            {"model", meta_.model},
                            {"provider", meta_.provider},
                            {"error", std::move(body.as_object()["error"])},
                            {"choices", boost::json::array{std::move(choice)}}};
  return wire::SseFrame(boost::json::serialize(chunk));
}

std::string ResponseEncoder::WholeBody(const CallSummary& summary) {
  ChatResponse response = whole_.Take();
  if (api_ == ApiFlavor::kOpenAiResponses) {
    // The stored output keeps the reasoning (the next turn replays it); the
    // client sees it as options_.include_reasoning says.
    responses_whole_ =
        wire::responses::BuildResponse(meta_, *responses_options_, response, summary.usage, summary.cost, summary.byok,
                                       UnixNow());
    if (routing_) responses_whole_->client["routing"] = *routing_;
    return boost::json::serialize(responses_whole_->client);
  }
  if (!include_reasoning_) {
    for (auto& choice : response.choices) choice.reasoning.clear();
  }
  std::string body = api_ == ApiFlavor::kAnthropicMessages
                         ? wire::anthropic::EncodeMessagesResponse(meta_, response, summary.usage)
                         : wire::openai::EncodeResponse(
                               meta_, wire::openai::ResponseOptions{kind_, include_usage_, include_reasoning_},
                               response, summary.usage, summary.cost, summary.byok);
  return routing_ ? WithRouting(body, *routing_) : body;
}

const wire::responses::BuiltResponse* ResponseEncoder::responses_result() const {
  if (responses_whole_) return &*responses_whole_;
  if (responses_) return &responses_->result();
  return nullptr;
}

std::string ResponseEncoder::ErrorBody(const Error& error) const {
  return tollgate::ErrorBody(InCallersTerms(api_, error), error_flavor_);
}

Error InCallersTerms(ApiFlavor api, const Error& error) {
  if (api != ApiFlavor::kOpenAiResponses || !error.param.starts_with("messages")) return error;
  Error renamed = error;
  renamed.param = "input";
  return renamed;
}

std::string MarkNotStored(std::string bytes, bool stream) {
  std::size_t start = 0;
  std::size_t end = bytes.size();
  if (stream) {
    const std::size_t data = bytes.rfind("\ndata: ");
    if (data == std::string::npos) return bytes;
    start = data + 7;
    end = bytes.find("\n\n", start);
    if (end == std::string::npos) return bytes;
  }
  // Depth 64, as callers may nest (a tool schema echoed in the response).
  std::optional<boost::json::value> parsed = wire::ParseJson(std::string_view(bytes).substr(start, end - start));
  if (!parsed || !parsed->is_object()) return bytes;
  boost::json::value& v = *parsed;
  boost::json::object* response = &v.as_object();
  if (stream) {
    boost::json::value* inner = response->if_contains("response");
    if (inner == nullptr || !inner->is_object()) return bytes;
    response = &inner->as_object();
  }
  (*response)["store"] = false;
  return bytes.substr(0, start) + boost::json::serialize(v) + bytes.substr(end);
}

ErrorFlavor ErrorFlavorForPath(std::string_view path) {
  const bool openrouter = path.starts_with("/api/");
  const std::string_view route = openrouter ? path.substr(4) : path;
  if (route == "/v1/messages" || route.starts_with("/v1/messages/")) return ErrorFlavor::kAnthropic;
  return openrouter ? ErrorFlavor::kOpenRouter : ErrorFlavor::kOpenAi;
}

std::string NewRequestId(int64_t unix_seconds) {
  return "gen-" + std::to_string(unix_seconds) + "-" + RandomBase62(20);
}

}  // namespace tollgate::gateway
