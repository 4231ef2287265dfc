// Shared by the wire codec fuzz targets (wire_*_fuzz.cpp): what every codec's
// output must satisfy, whatever the decoded input was.
//
//   - A request a codec decoded is encoded for every upstream format
//     (OpenAI chat and completions, Anthropic Messages, Gemini, Responses)
//     with each kind of options; each body must be valid JSON (strict UTF-8,
//     as Boost.JSON's parser checks it).
//   - The canonical events an upstream decoder produced are encoded for every
//     caller API (OpenAI chat stream, Anthropic stream, Responses stream) and
//     as whole answers; every SSE data payload and every body must be valid
//     JSON. A stream is also ended with the error event.
//   - Every decode error renders as a valid error body.
// A failed check prints what and aborts, so libFuzzer records the input.
#pragma once

#include "tollgate/core/chat.hpp"
#include "tollgate/core/error.hpp"
#include "tollgate/core/money.hpp"
#include "tollgate/wire/anthropic.hpp"
#include "tollgate/wire/common.hpp"
#include "tollgate/wire/gemini.hpp"
#include "tollgate/wire/openai.hpp"
#include "tollgate/wire/responses.hpp"
#include "tollgate/wire/sse_parser.hpp"

#include <boost/json/parse.hpp>
#include <boost/json/parse_options.hpp>
#include <boost/json/serialize.hpp>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

namespace tollgate::fuzz {

[[noreturn]] inline void Fail(const char* what, std::string_view detail) {
  std::fprintf(stderr, "wire fuzz: %s: %.*s\n", what, static_cast<int>(std::min<size_t>(detail.size(), 4000)),
               detail.data());
  std::abort();
}

// Valid JSON text, as a client's parser would see it (UTF-8 checked; depth as
// deep as the writer may go).
inline void CheckJson(std::string_view text, const char* what) {
  boost::json::parse_options options;
  options.max_depth = 1024;
  boost::system::error_code ec;
  boost::json::parse(text, ec, {}, options);
  if (ec) Fail(what, std::string(ec.message()) + ": " + std::string(text));
}

// Every `data:` payload of an SSE text the gateway wrote is JSON (or [DONE]).
inline void CheckSse(std::string_view sse, const char* what) {
  wire::SseParser parser(64u << 20);
  auto r = parser.Feed(sse, [&](const wire::SseEvent& e) {
    if (e.data != "[DONE]") CheckJson(e.data, what);
    return true;
  });
  if (!r) Fail(what, "SSE framing: " + r.error().message);
  if (parser.buffered_bytes() != 0) Fail(what, "SSE text does not end with a complete event");
}

inline void CheckError(const Error& error) {
  CheckJson(ErrorBody(error, ErrorFlavor::kOpenAi), "OpenAI error body");
  CheckJson(ErrorBody(error, ErrorFlavor::kAnthropic), "Anthropic error body");
}

// A decoded request, sent on to every upstream format.
inline void EncodeForUpstreams(const ChatRequest& request) {
  for (auto reasoning : {wire::openai::ReasoningStyle::kNone, wire::openai::ReasoningStyle::kOpenAi,
                         wire::openai::ReasoningStyle::kOpenRouter, wire::openai::ReasoningStyle::kDeepSeek,
                         wire::openai::ReasoningStyle::kQwen, wire::openai::ReasoningStyle::kZhipu}) {
    wire::openai::RequestOptions o;
    o.upstream_model = "m";
    o.reasoning = reasoning;
    o.replay_reasoning_content = reasoning == wire::openai::ReasoningStyle::kDeepSeek;
    o.cache_control = reasoning == wire::openai::ReasoningStyle::kOpenRouter;
    o.developer_role = reasoning != wire::openai::ReasoningStyle::kQwen;
    CheckJson(wire::openai::EncodeChatRequest(request, o), "openai::EncodeChatRequest");
  }
  wire::openai::RequestOptions completion;
  completion.upstream_model = "m";
  CheckJson(wire::openai::EncodeCompletionRequest(request, completion), "openai::EncodeCompletionRequest");
  wire::anthropic::RequestOptions anthropic;
  anthropic.upstream_model = "claude";
  CheckJson(wire::anthropic::EncodeMessagesRequest(request, anthropic), "anthropic::EncodeMessagesRequest");
  anthropic.default_max_tokens = 1;
  CheckJson(wire::anthropic::EncodeMessagesRequest(request, anthropic), "anthropic::EncodeMessagesRequest (1)");
  CheckJson(wire::gemini::EncodeGenerateContentRequest(request), "gemini::EncodeGenerateContentRequest");
  wire::responses::RequestOptions responses;
  responses.upstream_model = "m";
  CheckJson(wire::responses::EncodeRequest(request, responses), "responses::EncodeRequest");
}

// Events an upstream decoder produced, sent on to every caller API.
inline void EncodeForCallers(const std::vector<StreamEvent>& events) {
  if (events.empty()) return;  // what the encoders write for no events is covered by their unit tests
  wire::ResponseMeta meta{"gen-fuzz", 1700000000, "fuzz/model", "Fuzz"};
  Usage usage;
  ResponseAccumulator acc;
  for (const auto& e : events) acc.Add(e);
  const ChatResponse whole = acc.Take();
  if (acc.usage()) usage = *acc.usage();
  const Money cost = Money{1234};

  for (bool include_reasoning : {true, false}) {
    wire::openai::ResponseOptions o;
    o.include_usage = true;
    o.include_reasoning = include_reasoning;
    wire::openai::StreamEncoder openai(meta, o);
    std::string sse;
    for (const auto& e : events) sse += openai.Encode(e);
    sse += openai.Finish(usage, cost);
    CheckSse(sse, "openai::StreamEncoder");
    CheckJson(wire::openai::EncodeResponse(meta, o, whole, usage, cost), "openai::EncodeResponse");
  }
  {
    wire::openai::ResponseOptions o;
    o.kind = RequestKind::kCompletion;
    wire::openai::StreamEncoder openai(meta, o);
    std::string sse;
    for (const auto& e : events) sse += openai.Encode(e);
    sse += openai.Finish(usage, cost);
    CheckSse(sse, "openai::StreamEncoder (completion)");
    CheckJson(wire::openai::EncodeResponse(meta, o, whole, usage, cost), "openai::EncodeResponse (completion)");
  }
  for (bool fail : {false, true}) {
    wire::anthropic::StreamEncoder anthropic(meta, 7);
    std::string sse;
    for (const auto& e : events) sse += anthropic.Encode(e);
    sse += fail ? wire::anthropic::StreamEncoder::ErrorEvent(Error{ErrorCode::kBadGateway, "upstream failed"})
                : anthropic.Finish(usage);
    CheckSse(sse, "anthropic::StreamEncoder");
  }
  CheckJson(wire::anthropic::EncodeMessagesResponse(meta, whole, usage), "anthropic::EncodeMessagesResponse");
  CheckJson(wire::gemini::EncodeGenerateContentResponse(whole, usage, "fuzz"), "gemini::EncodeGenerateContentResponse");
  for (int variant = 0; variant < 4; variant += 2) {
    wire::responses::ResponseOptions o;
    // 0: reasoning text and encrypted content included; 2: summaries, then a failure.
    o.include_encrypted_reasoning = variant == 0;
    o.reasoning_text_as_summary = variant == 2;
    wire::responses::StreamEncoder responses(meta, o);
    std::string sse;
    for (const auto& e : events) sse += responses.Encode(e);
    sse += variant == 2 ? responses.Fail(Error{ErrorCode::kUnavailable, "upstream failed"})
                        : responses.Finish(usage, cost, false, 1700000001);
    CheckSse(sse, "responses::StreamEncoder");
    const auto built = wire::responses::BuildResponse(meta, o, whole, usage, cost, false, 1700000001);
    CheckJson(boost::json::serialize(built.client), "responses::BuildResponse");
  }
}

// Feeds `input` as an SSE stream, calling `on_event(type, data)` per event
// until it returns false.
template <class OnEvent>
void ForEachSseEvent(std::string_view input, OnEvent on_event) {
  wire::SseParser parser;
  (void)parser.Feed(input, [&](const wire::SseEvent& e) { return on_event(e.type, e.data); });
}

}  // namespace tollgate::fuzz
