#include "responses.hpp"

#include "tollgate/core/text.hpp"

#include <boost/json.hpp>

namespace tollgate::gateway {

ResponseEncoder::ResponseEncoder(const ChatRequest& request, wire::ResponseMeta meta, ErrorFlavor error_flavor,
                                 int64_t prompt_tokens_hint)
    : api_(request.api),
      kind_(request.kind),
      stream_(request.stream),
      include_usage_(request.include_usage),
      include_reasoning_(!(request.reasoning && request.reasoning->exclude)),
      meta_(std::move(meta)),
      error_flavor_(error_flavor),
      prompt_tokens_hint_(prompt_tokens_hint) {}

void ResponseEncoder::Commit(const CommitInfo& info) {
  meta_.provider = info.provider;
  if (!stream_) return;
  if (api_ == ApiFlavor::kAnthropicMessages) {
    anthropic_.emplace(meta_, prompt_tokens_hint_);
  } else {
    openai_.emplace(meta_, wire::openai::ResponseOptions{kind_, include_usage_, include_reasoning_});
  }
}

std::string ResponseEncoder::Event(const StreamEvent& event) {
  if (anthropic_) {
    if (!include_reasoning_ && std::holds_alternative<ReasoningDelta>(event)) return {};
    return anthropic_->Encode(event);
  }
  if (openai_) return openai_->Encode(event);
  return {};
}

std::string ResponseEncoder::StreamEnd(const CallSummary& summary) {
  if (anthropic_) return anthropic_->Finish(summary.usage);
  if (openai_) return openai_->Finish(summary.usage, summary.cost);
  return {};
}

std::string ResponseEncoder::StreamError(const Error& error) const {
  if (api_ == ApiFlavor::kAnthropicMessages) return wire::anthropic::StreamEncoder::ErrorEvent(error);
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

std::string ResponseEncoder::WholeBody(const CallSummary& summary) const {
  ChatResponse response = whole_.Take();
  if (!include_reasoning_) {
    for (auto& choice : response.choices) choice.reasoning.clear();
  }
  if (api_ == ApiFlavor::kAnthropicMessages) {
    return wire::anthropic::EncodeMessagesResponse(meta_, response, summary.usage);
  }
  return wire::openai::EncodeResponse(meta_, wire::openai::ResponseOptions{kind_, include_usage_, include_reasoning_},
                                      response, summary.usage, summary.cost);
}

std::string ResponseEncoder::ErrorBody(const Error& error) const { return tollgate::ErrorBody(error, error_flavor_); }

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
