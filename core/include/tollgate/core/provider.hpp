// The interface that remote adapters (providers/) and the local inference engine
// (local_backend/) both implement. Everything above it treats the two alike,
// except through what a provider declares it supports (parameters.hpp).
#pragma once

#include "tollgate/core/chat.hpp"
#include "tollgate/core/error.hpp"
#include "tollgate/core/parameters.hpp"

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <stop_token>
#include <string>
#include <string_view>

namespace tollgate {

// Receives one generation's canonical events. A provider calls it from any
// thread, never concurrently for one call, in this order:
//   OnEvent*  then exactly one of  OnComplete | OnError.
// Text and reasoning fragments are complete UTF-8 (a provider holds back a
// partial character). After the terminal call no method is called again. An
// OnError after events means the stream broke mid-way; OnComplete means the
// provider finished normally (a FinishDelta for each choice came before it,
// and a UsageDelta when the provider reported usage).
//
// Flow control: before producing more (reading more of an upstream body,
// sampling the next token) a provider asks Ready(). True: go on. False: the
// consumer is behind; stop producing and wait until `resume` is called (once,
// from any thread, never from inside Ready). A provider must still deliver the
// events it already has; Ready only asks it not to make more. The default
// accepts everything (an unbounded consumer). A provider waiting on `resume`
// must still honour its cancel token.
class StreamSink {
 public:
  virtual ~StreamSink() = default;
  virtual void OnEvent(StreamEvent event) = 0;
  virtual void OnComplete() = 0;
  virtual void OnError(const Error& error) = 0;
  virtual bool Ready(std::function<void()> resume) { return true; }
};

struct ProviderRequest {
  const ChatRequest* request = nullptr;  // valid during Start() only
  std::string upstream_model;            // the endpoint's model name at this provider
  // Absolute deadline for the whole call; the provider derives its connect and
  // first-byte timeouts from it and its own limits. time_point{} = none.
  std::chrono::steady_clock::time_point deadline;
  // The caller's own key for this provider (BYOK), used instead of the
  // provider's configured key; empty = the configured one. A secret: never
  // logged or put in an error. Remote providers only; the local engine ignores it.
  std::string api_key;
};

class Provider {
 public:
  virtual ~Provider() = default;

  // Provider name as shown to callers (`provider` field, usage rows): "OpenAI", "Local".
  virtual std::string_view Name() const = 0;

  // The request parameters this provider honours (parameters.hpp). The
  // gateway drops the others from a request before Start (or skips the
  // endpoint), so a provider may ignore anything it does not declare.
  virtual const ParameterSet& SupportedParameters() const = 0;

  // The exact prompt tokens `request` would use, when this provider can tell
  // without a call (the local engine's tokenizer); nullopt otherwise.
  // Thread-safe.
  virtual std::optional<int64_t> CountPromptTokens(const ChatRequest& request) const { return std::nullopt; }

  // Starts one generation and returns at once. `*request.request` is read
  // before Start returns (copy what is needed). The provider keeps `sink` alive
  // until it delivered the terminal event. When `cancel` is signalled (the
  // client went away, the deadline passed, shutdown) the provider stops as
  // soon as it can and delivers OnError(kCancelled) or OnComplete with what
  // it had; either is fine.
  // Errors: kInvalidArgument (prompt too long for the context, a request the
  // upstream refused), kUnavailable/kUpstreamTimeout/kBadGateway/
  // kResourceExhausted (retryable on another endpoint while no event was
  // delivered), kDeadlineExceeded, kCancelled.
  virtual void Start(const ProviderRequest& request, std::shared_ptr<StreamSink> sink,
                     std::stop_token cancel) = 0;
};

}  // namespace tollgate
