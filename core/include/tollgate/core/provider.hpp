// The interface that remote adapters (providers/) and the local inference engine
// (local_backend/) both implement. Everything above it treats the two alike.
#pragma once

#include "tollgate/core/chat.hpp"
#include "tollgate/core/error.hpp"

#include <chrono>
#include <memory>
#include <stop_token>
#include <string>
#include <string_view>

namespace tollgate {

// Receives one generation's events. A provider calls it from any thread, never
// concurrently for one call, in this order:
//   OnDelta*  then exactly one of  OnComplete | OnError.
// OnDelta text is always complete UTF-8 (a provider holds back a partial
// character). After OnError no other method is called. An error after deltas
// means the stream broke mid-way.
class StreamSink {
 public:
  virtual ~StreamSink() = default;
  virtual void OnDelta(std::string_view text) = 0;
  virtual void OnComplete(const Completion& completion) = 0;
  virtual void OnError(const Error& error) = 0;
};

struct ProviderRequest {
  const ChatRequest* request = nullptr;  // valid until the terminal sink event
  std::string upstream_model;            // the endpoint's model name at this provider
  // Absolute deadline for the whole call; the provider derives its connect and
  // first-byte timeouts from it and its own limits.
  std::chrono::steady_clock::time_point deadline;
};

class Provider {
 public:
  virtual ~Provider() = default;

  // Provider name as shown to callers (`provider` field, usage rows): "OpenAI", "Local".
  virtual std::string_view Name() const = 0;

  // Starts one generation and returns at once. The provider keeps `sink` alive
  // until it delivered the terminal event. When `cancel` is signalled (the
  // client went away) the provider stops as soon as it can and delivers
  // OnError(kCancelled) or OnComplete with what it had; either is fine.
  // Errors: kInvalidArgument (prompt too long for the context, bad upstream
  // model), kUnavailable/kUpstreamTimeout/kBadGateway/kResourceExhausted
  // (retryable on another endpoint while no delta was delivered).
  virtual void Start(const ProviderRequest& request, std::shared_ptr<StreamSink> sink,
                     std::stop_token cancel) = 0;
};

}  // namespace tollgate
