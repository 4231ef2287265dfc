#include "call_driver.hpp"

#include <boost/json/serialize.hpp>

#include <algorithm>
#include <deque>
#include <mutex>
#include <stop_token>
#include <utility>

namespace tollgate::gateway {
namespace {

using std::chrono::duration_cast;
using std::chrono::milliseconds;

bool IsOutput(const StreamEvent& event) { return !std::holds_alternative<UsageDelta>(event); }

int64_t PromptBytes(const ChatRequest& r, int64_t* images) {
  int64_t bytes = static_cast<int64_t>(r.prompt.size());
  for (const auto& m : r.messages) {
    bytes += 8;
    for (const auto& part : m.parts) {
      if (const auto* t = std::get_if<TextPart>(&part)) {
        bytes += static_cast<int64_t>(t->text.size());
      } else if (std::holds_alternative<ImagePart>(part)) {
        ++*images;
      } else if (const auto* c = std::get_if<ToolCallPart>(&part)) {
        bytes += static_cast<int64_t>(c->name.size() + c->arguments.size() + c->id.size());
      } else if (const auto* res = std::get_if<ToolResultPart>(&part)) {
        for (const auto& rc : res->content) {
          if (const auto* t = std::get_if<TextPart>(&rc)) bytes += static_cast<int64_t>(t->text.size());
          if (std::holds_alternative<ImagePart>(rc)) ++*images;
        }
      } else if (const auto* reasoning = std::get_if<ReasoningPart>(&part)) {
        bytes += static_cast<int64_t>(reasoning->text.size() + reasoning->data.size());
      } else if (const auto* opaque = std::get_if<OpaquePart>(&part)) {
        bytes += static_cast<int64_t>(boost::json::serialize(opaque->block).size());
      }
    }
  }
  for (const auto& tool : r.tools) {
    bytes += static_cast<int64_t>(tool.name.size() + tool.description.size() +
                                  boost::json::serialize(tool.parameters).size());
  }
  return bytes;
}

int64_t OutputBytes(const ChatResponse& output) {
  int64_t bytes = 0;
  for (const auto& c : output.choices) {
    bytes += static_cast<int64_t>(c.text.size());
    for (const auto& r : c.reasoning) bytes += static_cast<int64_t>(r.text.size());
    for (const auto& t : c.tool_calls) bytes += static_cast<int64_t>(t.name.size() + t.arguments.size());
  }
  return bytes;
}

}  // namespace

Money WorstCaseCost(const ChatRequest& request, const routing::Endpoint& endpoint) {
  int64_t images = 0;
  const int64_t prompt = PromptBytes(request, &images) + 1 + images * 4096;
  const int64_t completion = request.max_tokens          ? *request.max_tokens
                             : endpoint.context_length > 0 ? endpoint.context_length
                                                           : kDefaultCompletionBound;
  const int64_t choices = std::max<int64_t>(request.n.value_or(1), 1);
  // Every prompt token at the dearest prompt-side price (cache writes cost
  // more than plain prompt tokens at Anthropic).
  Pricing dearest = endpoint.pricing;
  dearest.prompt = std::max(dearest.prompt, dearest.cache_write);
  Usage worst;
  worst.prompt_tokens = prompt;
  worst.completion_tokens = completion * choices;
  return CallCost(dearest, worst);
}

Billable BillableUsage(const ChatRequest& request, const ChatResponse& output, const std::optional<Usage>& reported,
                       bool complete, const routing::Endpoint& endpoint) {
  const Usage estimate = EstimateUsage(request, output);
  int64_t images = 0;
  const int64_t prompt_bytes = PromptBytes(request, &images);
  const int64_t output_bytes = OutputBytes(output);
  // Bounds no honest report exceeds: at most one token per prompt byte, plus
  // images and what a provider adds (tool schemas, templates, its own system
  // text); at most the output limit per choice plus a reasoning budget.
  const int64_t prompt_bound = 2 * (prompt_bytes + 1 + images * 4096) + 16384;
  const int64_t limit = request.max_tokens          ? *request.max_tokens
                        : endpoint.context_length > 0 ? endpoint.context_length
                                                      : kDefaultCompletionBound;
  const int64_t budget = request.reasoning && request.reasoning->max_tokens ? *request.reasoning->max_tokens : 0;
  const int64_t completion_bound = limit * std::max<int64_t>(request.n.value_or(1), 1) + budget + 1024;

  Billable out{estimate, true};
  if (!reported) return out;
  Usage u = *reported;
  bool estimated = !complete;
  if (!complete) {
    // A broken call: what was reported so far, raised to what the output shows.
    u.prompt_tokens = std::max(u.prompt_tokens, estimate.prompt_tokens);
    u.completion_tokens = std::max(u.completion_tokens, estimate.completion_tokens);
  }
  // Implausibly low: no prompt for a prompt, or fewer completion tokens than
  // one per 16 bytes of output (tokens average 3 to 5 bytes).
  if (u.prompt_tokens <= 0 && prompt_bytes > 0) {
    u.prompt_tokens = estimate.prompt_tokens;
    estimated = true;
  }
  if (u.completion_tokens < output_bytes / 16) {
    u.completion_tokens = estimate.completion_tokens;
    estimated = true;
  }
  // Implausibly high: clamped to the bound, so no call costs more than its
  // admission assumed (plus slack).
  if (u.prompt_tokens > prompt_bound) {
    u.prompt_tokens = prompt_bound;
    estimated = true;
  }
  if (u.completion_tokens > completion_bound) {
    u.completion_tokens = completion_bound;
    estimated = true;
  }
  u.cached_tokens = std::clamp<int64_t>(u.cached_tokens, 0, u.prompt_tokens);
  u.cache_write_tokens = std::clamp<int64_t>(u.cache_write_tokens, 0, u.prompt_tokens - u.cached_tokens);
  u.reasoning_tokens = std::clamp<int64_t>(u.reasoning_tokens, 0, u.completion_tokens);
  return Billable{u, estimated};
}

Usage EstimateUsage(const ChatRequest& request, const ChatResponse& output) {
  int64_t images = 0;
  Usage u;
  u.prompt_tokens = PromptBytes(request, &images) / 4 + 1 + images * 1000;
  u.completion_tokens = (OutputBytes(output) + 3) / 4;
  return u;
}

// ---------------------------------------------------------------- AttemptSink

struct CallDriver::Item {
  enum class Kind { kEvent, kComplete, kError } kind = Kind::kEvent;
  StreamEvent event;
  Error error;
};

// The provider-facing side of one attempt. Providers call it from any thread;
// items queue under a mutex and the driver takes them on its executor. Bounded
// by kHighWaterBytes through StreamSink::Ready.
class CallDriver::AttemptSink final : public StreamSink {
 public:
  AttemptSink(std::weak_ptr<CallDriver> driver, std::shared_ptr<Executor> executor)
      : driver_(std::move(driver)), executor_(std::move(executor)) {}

  void OnEvent(StreamEvent event) override {
    Item item;
    item.event = std::move(event);
    Push(std::move(item));
  }
  void OnComplete() override { Push(Item{Item::Kind::kComplete, {}, {}}); }
  void OnError(const Error& error) override { Push(Item{Item::Kind::kError, {}, error}); }

  bool Ready(std::function<void()> resume) override {
    std::lock_guard lock(mu_);
    if (detached_ || bytes_ < kHighWaterBytes) return true;
    resume_ = std::move(resume);
    return false;
  }

  // On the executor: the next item, or nullopt when the queue is empty (and
  // then the next Push schedules a drain again).
  std::optional<Item> Pop() {
    std::function<void()> resume;
    std::optional<Item> item;
    {
      std::lock_guard lock(mu_);
      if (queue_.empty()) {
        scheduled_ = false;
        return std::nullopt;
      }
      item = std::move(queue_.front());
      queue_.pop_front();
      if (item->kind == Item::Kind::kEvent) bytes_ -= EventBytes(item->event);
      if (resume_ && bytes_ < kLowWaterBytes) resume = std::exchange(resume_, nullptr);
    }
    if (resume) resume();
    return item;
  }

  // The driver no longer listens: drop what is queued and everything that
  // comes, and let a waiting provider go on to its terminal event.
  void Detach() {
    std::function<void()> resume;
    {
      std::lock_guard lock(mu_);
      detached_ = true;
      queue_.clear();
      bytes_ = 0;
      resume = std::exchange(resume_, nullptr);
    }
    if (resume) resume();
  }

 private:
  void Push(Item item) {
    bool schedule = false;
    {
      std::lock_guard lock(mu_);
      if (detached_) return;
      if (item.kind == Item::Kind::kEvent) bytes_ += EventBytes(item.event);
      queue_.push_back(std::move(item));
      schedule = !scheduled_;
      scheduled_ = true;
    }
    if (schedule) {
      executor_->Post([weak = driver_] {
        if (auto driver = weak.lock()) driver->Drain();
      });
    }
  }

  std::weak_ptr<CallDriver> driver_;
  std::shared_ptr<Executor> executor_;
  std::mutex mu_;
  std::deque<Item> queue_;           // guarded by mu_
  std::size_t bytes_ = 0;            // EventBytes of queued events; guarded by mu_
  bool scheduled_ = false;           // a drain is posted or running; guarded by mu_
  bool detached_ = false;            // guarded by mu_
  std::function<void()> resume_;     // a provider waiting for room; guarded by mu_
};

// ---------------------------------------------------------------- CallDriver

std::shared_ptr<CallDriver> CallDriver::Create(CallDeps deps, std::shared_ptr<Executor> executor, CallSpec spec,
                                               std::shared_ptr<ClientSink> client, std::function<void()> on_done) {
  return std::shared_ptr<CallDriver>(
      new CallDriver(deps, std::move(executor), std::move(spec), std::move(client), std::move(on_done)));
}

CallDriver::CallDriver(CallDeps deps, std::shared_ptr<Executor> executor, CallSpec spec,
                       std::shared_ptr<ClientSink> client, std::function<void()> on_done)
    : deps_(deps),
      executor_(std::move(executor)),
      spec_(std::move(spec)),
      client_(std::move(client)),
      on_done_(std::move(on_done)) {}

CallDriver::~CallDriver() {
  if (sink_) sink_->Detach();
}

void CallDriver::Start() {
  if (stop_ != Stop::kNone) return Fail(StoppedError(Error{ErrorCode::kCancelled, "request cancelled"}));
  auto plan = routing::Plan(*deps_.catalog, spec_.request.model);
  if (!plan) return Fail(plan.error());

  // Parameters: drop what an endpoint does not support, or skip the endpoint
  // (parameters.hpp).
  const ParameterSet used = ParametersUsed(spec_.request);
  std::optional<Param> missing_essential;
  std::optional<Param> missing_required;
  for (const routing::Endpoint* e : *plan) {
    const ParameterSet unsupported = used.Minus(e->provider->SupportedParameters());
    bool essential = false;
    for (Param p : unsupported.List()) {
      if (IsEssential(p)) {
        essential = true;
        if (!missing_essential) missing_essential = p;
      }
    }
    if (essential) continue;
    if (spec_.request.provider.require_parameters && !unsupported.empty()) {
      if (!missing_required) missing_required = unsupported.List().front();
      continue;
    }
    plan_.push_back(Candidate{e, unsupported});
  }
  if (plan_.empty()) {
    const Param p = missing_essential ? *missing_essential : *missing_required;
    const bool input = p == Param::kImageInput || p == Param::kDocumentInput;
    std::string what = p == Param::kImageInput      ? std::string("image input")
                       : p == Param::kDocumentInput ? std::string("document input (a block only its own API carries)")
                                                    : "the parameter '" + std::string(ParamName(p)) + "'";
    std::string param = input ? "messages" : std::string(ParamName(p));
    std::string why = missing_essential ? "" : " (provider.require_parameters is set)";
    return Fail(Error{ErrorCode::kInvalidArgument,
                      "no endpoint of model '" + spec_.request.model + "' supports " + what + why, param,
                      "unsupported_parameter"});
  }

  // Admission: the worst case at the plan's most expensive endpoint.
  for (const Candidate& c : plan_) {
    ChatRequest trimmed = spec_.request;
    DropParameters(trimmed, c.dropped);
    reserved_ = std::max(reserved_, WorstCaseCost(trimmed, *c.endpoint));
  }
  if (!deps_.admission->TryReserve(spec_.key, reserved_)) {
    reserved_ = Money{};
    return Fail(Error{ErrorCode::kPaymentRequired, "this API key has no credits left; raise its limit or use another key",
                      "", "insufficient_credits"});
  }
  admitted_ = true;

  if (spec_.deadline != SteadyTime{}) {
    deadline_timer_ = executor_->StartTimer(spec_.deadline, [weak = weak_from_this()] {
      if (auto self = weak.lock()) self->RequestStop(Stop::kDeadline);
    });
  }
  StartAttempt();
}

void CallDriver::StartAttempt() {
  current_ = &plan_[next_++];
  attempt_request_ = spec_.request;
  DropParameters(attempt_request_, current_->dropped);
  if (sink_) sink_->Detach();
  sink_ = std::make_shared<AttemptSink>(weak_from_this(), executor_);
  cancel_ = std::make_unique<std::stop_source>();
  held_.clear();
  output_ = ResponseAccumulator{};
  output_bytes_ = 0;
  first_output_at_.reset();
  finish_ = std::nullopt;
  const routing::Endpoint& e = *current_->endpoint;
  e.provider->Start(ProviderRequest{&attempt_request_, e.upstream_model, spec_.deadline}, sink_, cancel_->get_token());
}

void CallDriver::Drain() {
  if (draining_ || finished_ || !sink_) return;
  draining_ = true;
  auto self = shared_from_this();  // a terminal item may end the call; stay alive until the loop exits
  while (!finished_) {
    if (committed_ && stop_ != Stop::kClientGone) {
      if (waiting_for_client_) break;
      const bool ready = client_->Ready([weak = weak_from_this()] {
        if (auto driver = weak.lock()) {
          driver->waiting_for_client_ = false;
          driver->Drain();
        }
      });
      if (!ready) {
        waiting_for_client_ = true;
        break;
      }
    }
    std::optional<Item> item = sink_->Pop();
    if (!item) break;
    switch (item->kind) {
      case Item::Kind::kEvent: OnProviderEvent(std::move(item->event)); break;
      case Item::Kind::kComplete: OnProviderComplete(); break;
      case Item::Kind::kError: OnProviderError(std::move(item->error)); break;
    }
  }
  draining_ = false;
}

void CallDriver::OnProviderEvent(StreamEvent event) {
  if (IsOutput(event) && !first_output_at_) first_output_at_ = executor_->Now();
  if (const auto* f = std::get_if<FinishDelta>(&event); f != nullptr && f->choice == 0) finish_ = *f;
  output_.Add(event);
  output_bytes_ += EventBytes(event);
  if (!committed_) {
    // A stream commits at its first output: from then on the client has it.
    // A whole answer reaches the client only when it is complete, so it
    // commits then, and a provider that breaks mid-way can still be replaced.
    // (Commit hands a whole answer over from output_, which already holds it.)
    if (!spec_.request.stream) {
      if (output_bytes_ > kMaxWholeAnswerBytes) {
        cancel_->request_stop();
        OnProviderError(Error{ErrorCode::kBadGateway, "the provider's answer is larger than the gateway holds"});
      }
      return;
    }
    if (!IsOutput(event)) {
      held_.push_back(std::move(event));
      return;
    }
    Commit();
  }
  Hand(event);
}

void CallDriver::Commit() {
  committed_ = true;
  client_->OnCommit(CommitInfo{std::string(current_->endpoint->provider->Name()), current_->endpoint->upstream_model,
                               current_->dropped});
  std::vector<StreamEvent> held = spec_.request.stream ? std::move(held_) : ResponseEvents(output_.Take());
  held_.clear();
  for (const auto& e : held) Hand(e);
}

void CallDriver::Hand(const StreamEvent& event) {
  if (stop_ != Stop::kClientGone) client_->OnEvent(event);
}

void CallDriver::OnProviderComplete() {
  // A provider may end normally when told to stop (the local engine finishes
  // with what it has). Stopped by the deadline or a shutdown, the answer was
  // cut: it must not look complete. (A client that left gets nothing either
  // way; its row keeps the exact usage.)
  if (stop_ == Stop::kDeadline || stop_ == Stop::kShutdown) {
    return Fail(StoppedError(Error{ErrorCode::kCancelled, "request cancelled"}));
  }
  // A provider that ended the answer with an error (DeepSeek's
  // insufficient_system_resource, Gemini's MALFORMED_FUNCTION_CALL) cut it:
  // a failure like a broken stream, retried elsewhere while uncommitted.
  if (finish_ && finish_->reason == FinishReason::kError && stop_ == Stop::kNone) {
    return OnProviderError(Error{ErrorCode::kBadGateway,
                                 "the provider ended the answer with an error (" +
                                     (finish_->native_reason.empty() ? std::string("error") : finish_->native_reason) +
                                     ")"});
  }
  if (!committed_) Commit();  // an empty answer is still an answer
  Succeed();
}

void CallDriver::OnProviderError(Error error) {
  if (error.provider_name.empty() && error.code != ErrorCode::kCancelled) {
    error.provider_name = std::string(current_->endpoint->provider->Name());
  }
  if (!committed_ && stop_ == Stop::kNone && IsRetryable(error.code) && next_ < plan_.size()) {
    if (deps_.observer != nullptr) {
      deps_.observer->OnAttemptFailed(spec_.request.model, std::string(current_->endpoint->provider->Name()),
                                      HttpStatus(error.code),
                                      duration_cast<milliseconds>(executor_->Now() - spec_.received).count());
    }
    StartAttempt();
    return;
  }
  Fail(StoppedError(error));
}

void CallDriver::RequestStop(Stop why) {
  if (finished_) return;
  if (stop_ == Stop::kNone) stop_ = why;
  if (cancel_ == nullptr) return;  // not started: Start() sees stop_
  cancel_->request_stop();
  if (!grace_timer_) {
    grace_timer_ = executor_->StartTimer(executor_->Now() + kCancelGrace, [weak = weak_from_this()] {
      auto self = weak.lock();
      if (!self || self->finished_) return;
      // The provider did not answer its cancellation in time: end the call
      // without it; what it sends later is dropped (AttemptSink::Detach).
      self->Fail(self->StoppedError(Error{ErrorCode::kCancelled, "request cancelled"}));
    });
  }
}

void CallDriver::Cancel() {
  executor_->Post([weak = weak_from_this()] {
    if (auto self = weak.lock()) self->RequestStop(Stop::kClientGone);
  });
}

void CallDriver::Shutdown() {
  executor_->Post([weak = weak_from_this()] {
    if (auto self = weak.lock()) self->RequestStop(Stop::kShutdown);
  });
}

Error CallDriver::StoppedError(const Error& provider_error) const {
  switch (stop_) {
    case Stop::kDeadline:
      return Error{ErrorCode::kUpstreamTimeout,
                   "the model did not finish within the request timeout (server.request_timeout_ms)", "", "timeout"};
    case Stop::kShutdown:
      return Error{ErrorCode::kUnavailable, "the server is shutting down; retry the request", "", "shutting_down"};
    case Stop::kClientGone:
      return Error{ErrorCode::kCancelled, "the client closed the request", "", "client_closed_request"};
    case Stop::kNone:
      break;
  }
  if (provider_error.code == ErrorCode::kDeadlineExceeded) {
    return Error{ErrorCode::kUpstreamTimeout,
                 "the model did not finish within the request timeout (server.request_timeout_ms)", "", "timeout"};
  }
  return provider_error;
}

void CallDriver::Succeed() {
  Finish(std::nullopt);
}

void CallDriver::Fail(Error error) { Finish(error); }

void CallDriver::Finish(const std::optional<Error>& error) {
  if (finished_) return;
  finished_ = true;
  if (deadline_timer_) deadline_timer_->Cancel();
  if (grace_timer_) grace_timer_->Cancel();
  if (sink_) sink_->Detach();

  const ChatResponse output = output_.Take();
  // What reached the client and is billed: a whole answer, or the part of a
  // stream that went out before it broke. A non-streamed call that failed
  // delivered nothing.
  // What reached the client is billed: a whole answer, or the part of a
  // stream that went out before it broke. A non-streamed call that failed
  // delivered nothing, unless its client left: then the provider had already
  // done the work it was asked for.
  const bool delivered = !error || (committed_ && spec_.request.stream) || stop_ == Stop::kClientGone;
  CallSummary summary;
  if (delivered && current_ != nullptr) {
    const Billable billable =
        BillableUsage(spec_.request, output, output_.usage(), /*complete=*/!error, *current_->endpoint);
    summary.usage = billable.usage;
    summary.usage_estimated = billable.estimated;
    summary.cost = CallCost(current_->endpoint->pricing, summary.usage);
  }

  if (error) {
    client_->OnFailure(*error, committed_);
  } else {
    client_->OnSuccess(summary);
  }

  // Metering. No row when no provider was ever asked (a rejection), or when a
  // provider refused the request as invalid before producing anything.
  const bool rejected = current_ == nullptr || (error && !committed_ && error->code == ErrorCode::kInvalidArgument);
  if (!rejected) {
    const SteadyTime now = executor_->Now();
    billing::UsageEvent row;
    row.request_id = spec_.request_id;
    row.api_key_id = spec_.key.id;
    row.model = spec_.request.model;
    row.provider = std::string(current_->endpoint->provider->Name());
    row.upstream_model = current_->endpoint->upstream_model;
    row.usage = summary.usage;
    row.usage_estimated = summary.usage_estimated;
    row.cost = summary.cost;
    row.latency_ms = duration_cast<milliseconds>(now - spec_.received).count();
    if (first_output_at_) row.ttft_ms = duration_cast<milliseconds>(*first_output_at_ - spec_.received).count();
    const bool client_gone = stop_ == Stop::kClientGone;
    row.status = client_gone ? 499 : error ? HttpStatus(error->code) : 200;
    if (!output.choices.empty() && output.choices.front().finish) {
      row.finish_reason = std::string(FinishReasonName(*output.choices.front().finish));
    }
    if (error) {
      row.finish_reason = "error";
      row.error_code = std::string(ErrorType(error->code));
    }
    row.streamed = spec_.request.stream;
    row.cancelled = client_gone;
    row.created_at = spec_.created_at;
    row.finished_at = executor_->WallNow();
    if (row.cost.nano_usd > 0) deps_.admission->AddPendingSpend(spec_.key.id, row.cost);
    if (deps_.observer != nullptr) deps_.observer->OnCall(row);
    deps_.usage->Record(std::move(row));
  }
  if (admitted_) deps_.admission->Release(spec_.key.id, reserved_);
  admitted_ = false;
  if (auto done = std::exchange(on_done_, nullptr)) done();
}

}  // namespace tollgate::gateway
