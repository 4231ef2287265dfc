#include "call_driver.hpp"

#include "tollgate/core/json_writer.hpp"

#include <boost/json/serialize.hpp>

#include <algorithm>
#include <charconv>
#include <ctime>
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

// Reasoning tokens the request allows on top of max_tokens (its reasoning
// budget), or 0.
int64_t ReasoningBudget(const ChatRequest& request) {
  return request.reasoning && request.reasoning->max_tokens ? std::max<int64_t>(*request.reasoning->max_tokens, 0) : 0;
}

}  // namespace

int64_t OutputLimit(const ChatRequest& request, const routing::Endpoint& endpoint) {
  if (request.max_tokens) return *request.max_tokens;
  if (endpoint.max_output_tokens > 0) return endpoint.max_output_tokens;
  if (endpoint.context_length > 0) return endpoint.context_length;
  return kDefaultCompletionBound;
}

int64_t PromptTokensBound(const ChatRequest& request) {
  int64_t images = 0;
  return PromptBytes(request, &images) + 1 + images * 4096;
}

Money WorstCaseCost(const ChatRequest& request, const routing::Endpoint& endpoint) {
  const int64_t prompt = PromptTokensBound(request);
  const int64_t choices = std::max<int64_t>(request.n.value_or(1), 1);
  // Every prompt token at the dearest prompt-side price of any tier (cache
  // writes cost more than plain prompt tokens at Anthropic), every
  // completion token at the dearer of the completion and reasoning prices.
  Pricing dearest = endpoint.Dearest();
  dearest.prompt = std::max(dearest.prompt, dearest.cache_write);
  dearest.completion = std::max(dearest.completion, dearest.reasoning.value_or(dearest.completion));
  dearest.reasoning.reset();
  Usage worst;
  worst.prompt_tokens = prompt;
  // A reasoning budget may come on top of max_tokens (DeepSeek's and Qwen's
  // thinking tokens do not count against it).
  const int64_t budget = ReasoningBudget(request);
  worst.completion_tokens = OutputLimit(request, endpoint) * choices + budget;
  return CallCost(dearest, worst);
}

Billable BillableUsage(const ChatRequest& request, const ChatResponse& output, const std::optional<Usage>& reported,
                       bool complete, const routing::Endpoint& endpoint) {
  const Usage estimate = EstimateUsage(request, output);
  int64_t images = 0;
  const int64_t prompt_bytes = PromptBytes(request, &images);
  // Bounds no honest report exceeds: at most one token per prompt byte, plus
  // images and what a provider adds (tool schemas, templates, its own system
  // text); at most the output limit per choice plus a reasoning budget.
  const int64_t prompt_bound = 2 * (prompt_bytes + 1 + images * 4096) + 16384;
  const int64_t limit = OutputLimit(request, endpoint);
  const int64_t budget = ReasoningBudget(request);
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
  // A complete call's report is trusted downwards: a provider that says a
  // call cost nothing (explicit zero usage: a cache hit, a free tier) is
  // billed nothing. Negative counts are not counts.
  u.prompt_tokens = std::max<int64_t>(u.prompt_tokens, 0);
  u.completion_tokens = std::max<int64_t>(u.completion_tokens, 0);
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
  AttemptSink(std::weak_ptr<CallDriver> driver, std::shared_ptr<Executor> executor, std::size_t attempt)
      : driver_(std::move(driver)), executor_(std::move(executor)), attempt_(attempt) {}

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
      executor_->Post([weak = driver_, attempt = attempt_] {
        if (auto driver = weak.lock()) driver->Drain(attempt);
      });
    }
  }

  std::weak_ptr<CallDriver> driver_;
  std::shared_ptr<Executor> executor_;
  const std::size_t attempt_;
  std::mutex mu_;
  std::deque<Item> queue_;           // guarded by mu_
  std::size_t bytes_ = 0;            // EventBytes of queued events; guarded by mu_
  bool scheduled_ = false;           // a drain is posted or running; guarded by mu_
  bool detached_ = false;            // guarded by mu_
  std::function<void()> resume_;     // a provider waiting for room; guarded by mu_
};

// One attempt at one endpoint.
struct CallDriver::Attempt {
  std::size_t index = 0;      // in attempts_
  std::size_t candidate = 0;  // in plan_.candidates
  int retry = 0;              // 0: first try at this endpoint
  const routing::Endpoint* endpoint = nullptr;
  ChatRequest request;  // what was sent: the call's, minus dropped parameters
  std::shared_ptr<AttemptSink> sink;
  std::stop_source cancel;
  SteadyTime started;
  std::optional<SteadyTime> first_event_at;   // any event: "a first byte" for hedging
  std::optional<SteadyTime> first_output_at;  // first output event (TTFT)
  std::vector<StreamEvent> held;              // a stream's events before its commit (usage reports)
  std::size_t output_bytes = 0;               // EventBytes of its events
  std::optional<FinishDelta> finish;          // choice 0's finish
  ResponseAccumulator output;                 // everything it produced
  bool running = true;                        // no terminal event handled and not abandoned
  bool byok = false;                          // sent with the account's own provider key
  billing::AttemptRecord record;
};

namespace {

// Retry-After (RFC 9110 10.2.3): delay-seconds or an HTTP-date (IMF-fixdate),
// as a wait from `now`, capped at a day; nullopt when absent or unreadable.
std::optional<routing::Millis> RetryAfter(const std::string& value, WallTime now) {
  if (value.empty()) return std::nullopt;
  constexpr int64_t kDayMs = 86'400'000;
  int64_t seconds = 0;
  auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), seconds);
  if (ec == std::errc() && end == value.data() + value.size() && seconds >= 0) {
    return routing::Millis(std::min<int64_t>(seconds, kDayMs / 1000) * 1000);
  }
  if (ec == std::errc::result_out_of_range) return routing::Millis(kDayMs);
  std::tm tm{};
  const char* parsed = strptime(value.c_str(), "%a, %d %b %Y %H:%M:%S GMT", &tm);
  if (parsed == nullptr || *parsed != '\0') return std::nullopt;
  const auto at = std::chrono::system_clock::from_time_t(timegm(&tm));
  const int64_t ms = duration_cast<milliseconds>(at - now).count();
  return routing::Millis(std::clamp<int64_t>(ms, 0, kDayMs));
}

// Whole seconds, rounded up: what a client is told to wait.
std::string RetryAfterSeconds(routing::Millis wait) { return std::to_string((wait.count() + 999) / 1000); }

int64_t Ms(std::chrono::steady_clock::duration d) { return duration_cast<milliseconds>(d).count(); }

}  // namespace

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
  // Finish() ends everything; this only covers a driver dropped unfinished.
  for (auto& a : attempts_) {
    if (a->sink) a->sink->Detach();
  }
}

void CallDriver::Start() {
  if (stop_ != Stop::kNone) return Finish(StoppedError(Error{ErrorCode::kCancelled, "request cancelled"}));
  routing::RouteQuery query;
  query.model = spec_.request.model;
  query.fallback_models = &spec_.request.fallback_models;
  query.preferences = &spec_.request.provider;
  query.parameters = ParametersUsed(spec_.request);
  query.prompt_tokens = EstimateUsage(spec_.request, ChatResponse{}).prompt_tokens;
  query.prompt_tokens_bound = PromptTokensBound(spec_.request);
  query.session = spec_.session;
  // A provider with its own tokenizer (the local engine) counts exactly, so
  // a prompt that fits its context is never refused on the estimate.
  query.exact_prompt_tokens = [this](const routing::Endpoint& e) -> std::optional<int64_t> {
    return e.provider != nullptr ? e.provider->CountPromptTokens(spec_.request) : std::nullopt;
  };
  std::mt19937_64 rng(spec_.seed);
  if (auto error = deps_.router->Decide(query, executor_->Now(), rng, &plan_)) return Finish(*error);

  // A key limited to some models: the plan keeps their endpoints only.
  if (spec_.key.allowed_models) {
    const auto& allowed = *spec_.key.allowed_models;
    auto& cs = plan_.candidates;
    cs.erase(std::remove_if(cs.begin(), cs.end(),
                            [&](const routing::Candidate& c) {
                              return std::find(allowed.begin(), allowed.end(), c.model->id) == allowed.end();
                            }),
             cs.end());
    if (cs.empty()) {
      std::string list;
      for (const auto& m : allowed) list += (list.empty() ? "" : ", ") + m;
      return Finish(Error{ErrorCode::kPermissionDenied,
                          "this API key may not use model '" + spec_.request.model.substr(0, 200) +
                              "'; it may use: " + list,
                          "model", "model_not_allowed"});
    }
  }
  // An account whose own key for a provider this gateway cannot read: never
  // send its calls there with the operator's key.
  if (const auto& unreadable = spec_.key.account.unreadable_provider_keys; !unreadable.empty()) {
    auto& cs = plan_.candidates;
    std::string skipped;
    cs.erase(std::remove_if(cs.begin(), cs.end(),
                            [&](const routing::Candidate& c) {
                              if (!unreadable.contains(c.endpoint->provider_id)) return false;
                              skipped = c.endpoint->provider_id;
                              return true;
                            }),
             cs.end());
    if (cs.empty()) {
      return Finish(Error{ErrorCode::kUnavailable,
                          "this gateway cannot read the account's own API key for provider '" + skipped +
                              "' (BYOK; the operator must set TOLLGATE_SECRET_KEY to the key it was stored with)",
                          "", "byok_key_unreadable"});
    }
  }
  tried_.assign(plan_.candidates.size(), false);

  // Admission: the worst case at the plan's most expensive endpoint (for an
  // endpoint served with the account's own key, the fee on it).
  Money worst;
  for (const routing::Candidate& c : plan_.candidates) {
    ChatRequest trimmed = spec_.request;
    DropParameters(trimmed, c.dropped);
    const Money cost = WorstCaseCost(trimmed, *c.endpoint);
    worst = std::max(worst, ProviderKeyFor(*c.endpoint) != nullptr ? ByokFee(cost, spec_.key.account) : cost);
  }
  awaiting_admission_ = true;
  deps_.admission->Reserve(spec_.key, worst, spec_.created_at,
                           [weak = weak_from_this(), executor = executor_](Result<Reservation> r) {
                             executor->Post([weak, r = std::move(r)]() mutable {
                               if (auto self = weak.lock()) self->Admitted(std::move(r));
                             });
                           });
}

void CallDriver::Admitted(Result<Reservation> reservation) {
  awaiting_admission_ = false;
  if (!reservation) {
    if (finished_) return;
    return Finish(reservation.error());
  }
  reservation_ = std::move(*reservation);
  if (finished_) {
    // Stopped while waiting (client gone, shutdown): nothing ran.
    deps_.admission->Settle(*reservation_, Money{});
    reservation_.reset();
    return;
  }
  if (stop_ != Stop::kNone) return Finish(StoppedError(Error{ErrorCode::kCancelled, "request cancelled"}));
  if (spec_.deadline != SteadyTime{}) {
    deadline_timer_ = executor_->StartTimer(spec_.deadline, [weak = weak_from_this()] {
      if (auto self = weak.lock()) self->RequestStop(Stop::kDeadline);
    });
  }
  Advance();
}

const std::string* CallDriver::ProviderKeyFor(const routing::Endpoint& endpoint) const {
  const auto& keys = spec_.key.account.provider_keys;
  auto it = keys.find(endpoint.provider_id);
  return it == keys.end() ? nullptr : &it->second;
}

int CallDriver::Running() const {
  int n = 0;
  for (const auto& a : attempts_) n += a->running ? 1 : 0;
  return n;
}

bool CallDriver::TryStart(std::size_t index, bool* full) {
  *full = false;
  const routing::Endpoint& e = *plan_.candidates[index].endpoint;
  switch (deps_.router->health(e).Acquire(executor_->Now())) {
    case routing::Availability::kAvailable:
      tried_[index] = true;
      StartAttempt(index, 0);
      return true;
    case routing::Availability::kAtCapacity:
      *full = true;
      return false;
    case routing::Availability::kCircuitOpen:
    case routing::Availability::kCoolingDown:
      // Became unavailable since the plan was made (another call's failure).
      tried_[index] = true;
      return false;
  }
  return false;
}

void CallDriver::Advance() {
  if (finished_ || committed_) return;
  if (stop_ != Stop::kNone) {
    if (Running() == 0) Finish(StoppedError(Error{ErrorCode::kCancelled, "request cancelled"}));
    return;
  }
  bool any_full = false;
  for (std::size_t i = 0; i < plan_.candidates.size(); ++i) {
    if (tried_[i]) continue;
    bool full = false;
    if (TryStart(i, &full)) return;
    any_full = any_full || full;
  }
  if (Running() > 0) return;  // a hedged attempt is still going
  if (any_full) return WaitForCapacity();
  Finish(StoppedError(last_error_.value_or(Error{ErrorCode::kUnavailable,
                                    "no endpoint of model '" + spec_.request.model + "' is available; retry later",
                                    "", "no_endpoints"})));
}

void CallDriver::WaitForCapacity() {
  const SteadyTime now = executor_->Now();
  const routing::Model* model = nullptr;
  for (std::size_t i = 0; i < plan_.candidates.size() && model == nullptr; ++i) {
    if (!tried_[i]) model = plan_.candidates[i].model;
  }
  auto at_capacity = [this] {
    Error e{ErrorCode::kResourceExhausted,
            "every endpoint of model '" + spec_.request.model + "' is at capacity; retry shortly", "",
            "at_capacity"};
    e.retry_after = "1";
    return e;
  };
  if (!queue_deadline_) queue_deadline_ = now + deps_.router->options().queue_timeout;
  if (now >= *queue_deadline_) return Finish(at_capacity());
  // The slot that frees is claimed for this call (Router::Report) and handed
  // over on the executor; a call that ended meanwhile gives it back.
  std::vector<const routing::Endpoint*> usable;
  for (std::size_t i = 0; i < plan_.candidates.size(); ++i) {
    if (!tried_[i]) usable.push_back(plan_.candidates[i].endpoint);
  }
  auto wake = [weak = weak_from_this(), executor = executor_, router = deps_.router](const routing::Endpoint& e) {
    executor->Post([weak, executor, router, endpoint = &e] {
      auto self = weak.lock();
      if (self && self->StartClaimed(*endpoint)) return;
      routing::AttemptReport unused;
      unused.started = unused.ended = executor->Now();
      router->Report(*endpoint, unused);
    });
  };
  queue_ticket_ = deps_.router->WaitForCapacity(*model, std::move(usable), std::move(wake));
  if (queue_ticket_ == 0) return Finish(at_capacity());  // the queue is full
  // A slot freed between our look and the registration woke nobody: look again.
  for (std::size_t i = 0; i < plan_.candidates.size(); ++i) {
    if (!tried_[i] && deps_.router->health(*plan_.candidates[i].endpoint).Check(now) ==
                          routing::Availability::kAvailable) {
      if (deps_.router->CancelWait(queue_ticket_)) {
        queue_ticket_ = 0;
        return Advance();
      }
      return;  // woken meanwhile: the wake-up's post goes on
    }
  }
  queue_timer_ = executor_->StartTimer(*queue_deadline_, [weak = weak_from_this(), at_capacity] {
    auto self = weak.lock();
    if (!self || self->finished_ || self->queue_ticket_ == 0) return;
    // Woken at the same moment: the wake-up's post goes on.
    if (!self->deps_.router->CancelWait(self->queue_ticket_)) return;
    self->queue_ticket_ = 0;
    self->Finish(at_capacity());
  });
}

bool CallDriver::StartClaimed(const routing::Endpoint& endpoint) {
  if (finished_ || committed_ || queue_ticket_ == 0 || stop_ != Stop::kNone) return false;
  for (std::size_t i = 0; i < plan_.candidates.size(); ++i) {
    if (!tried_[i] && plan_.candidates[i].endpoint == &endpoint) {
      queue_ticket_ = 0;
      if (queue_timer_) queue_timer_->Cancel();
      tried_[i] = true;
      StartAttempt(i, 0);
      return true;
    }
  }
  return false;
}

void CallDriver::StartAttempt(std::size_t candidate, int retry) {
  const routing::Candidate& c = plan_.candidates[candidate];
  auto owned = std::make_unique<Attempt>();
  Attempt& a = *owned;
  a.index = attempts_.size();
  a.candidate = candidate;
  a.retry = retry;
  a.endpoint = c.endpoint;
  a.request = spec_.request;
  a.request.model = c.model->id;
  DropParameters(a.request, c.dropped);
  a.sink = std::make_shared<AttemptSink>(weak_from_this(), executor_, a.index);
  a.started = executor_->Now();
  a.record.attempt = static_cast<int>(a.index + 1);
  a.record.endpoint_id = c.endpoint->id;
  a.record.provider = std::string(c.endpoint->provider->Name());
  a.record.upstream_model = c.endpoint->upstream_model;
  a.record.started_ms = Ms(a.started - spec_.received);
  attempts_.push_back(std::move(owned));
  ArmHedge();
  ProviderRequest request{&a.request, c.endpoint->upstream_model, spec_.deadline, {}};
  if (const std::string* own = ProviderKeyFor(*c.endpoint)) {
    request.api_key = *own;
    a.byok = true;
  }
  c.endpoint->provider->Start(request, a.sink, a.cancel.get_token());
}

void CallDriver::ArmHedge() {
  const auto hedge_after = plan_.candidates.front().model->routing.hedge_after;
  if (hedged_ || hedge_after.count() <= 0) return;
  // Counted from the start of the attempt now running (a fallback after a
  // quick failure gets its own hedge_after); replaces an earlier timer.
  hedge_timer_ = executor_->StartTimer(executor_->Now() + hedge_after, [weak = weak_from_this()] {
    auto self = weak.lock();
    if (!self) return;
    if (self->finished_ || self->committed_ || self->stop_ != Stop::kNone || self->Running() != 1) return;
    for (const auto& a : self->attempts_) {
      if (a->running && a->first_event_at) return;  // it answered in time: no hedge
    }
    self->hedged_ = true;
    for (std::size_t i = 0; i < self->plan_.candidates.size(); ++i) {
      bool full = false;
      if (!self->tried_[i] && self->TryStart(i, &full)) return;
    }
  });
}

void CallDriver::Drain(std::size_t index) {
  if (finished_) return;
  if (draining_) {
    // Called from inside another drain (a client's resume): come back after it.
    executor_->Post([weak = weak_from_this(), index] {
      if (auto driver = weak.lock()) driver->Drain(index);
    });
    return;
  }
  Attempt& a = *attempts_[index];
  if (!a.running) return;
  draining_ = true;
  auto self = shared_from_this();  // a terminal item may end the call; stay alive until the loop exits
  while (!finished_ && a.running) {
    if (committed_ && winner_ == &a && stop_ != Stop::kClientGone) {
      if (waiting_for_client_) break;
      const bool ready = client_->Ready([weak = weak_from_this(), index] {
        if (auto driver = weak.lock()) {
          driver->waiting_for_client_ = false;
          driver->Drain(index);
        }
      });
      if (!ready) {
        waiting_for_client_ = true;
        break;
      }
    }
    std::optional<Item> item = a.sink->Pop();
    if (!item) break;
    switch (item->kind) {
      case Item::Kind::kEvent: OnProviderEvent(a, std::move(item->event)); break;
      case Item::Kind::kComplete: OnProviderComplete(a); break;
      case Item::Kind::kError: OnProviderError(a, std::move(item->error)); break;
    }
  }
  draining_ = false;
}

void CallDriver::OnProviderEvent(Attempt& a, StreamEvent event) {
  const SteadyTime now = executor_->Now();
  if (!a.first_event_at) a.first_event_at = now;
  if (IsOutput(event) && !a.first_output_at) a.first_output_at = now;
  if (const auto* f = std::get_if<FinishDelta>(&event); f != nullptr && f->choice == 0) a.finish = *f;
  a.output.Add(event);
  a.output_bytes += EventBytes(event);
  if (!committed_) {
    // A stream commits at its first output: from then on the client has it.
    // A whole answer reaches the client only when it is complete, so it
    // commits then, and a provider that breaks mid-way can still be replaced.
    // (Commit hands a whole answer over from the attempt's output.)
    if (!spec_.request.stream) {
      if (a.output_bytes > kMaxWholeAnswerBytes) {
        a.cancel.request_stop();
        OnProviderError(a, Error{ErrorCode::kBadGateway, "the provider's answer is larger than the gateway holds"});
      }
      return;
    }
    if (!IsOutput(event)) {
      a.held.push_back(std::move(event));
      return;
    }
    Commit(a);
  }
  if (winner_ == &a) Hand(event);
}

void CallDriver::Commit(Attempt& a) {
  committed_ = true;
  winner_ = &a;
  if (hedge_timer_) hedge_timer_->Cancel();
  // The first to answer wins; the others are cancelled.
  for (auto& other : attempts_) {
    if (other.get() != &a && other->running) {
      other->cancel.request_stop();
      EndAttempt(*other, routing::Outcome::kNeutral, "hedge_lost", 499, std::nullopt);
    }
  }
  const routing::Candidate& c = plan_.candidates[a.candidate];
  CommitInfo info;
  info.provider = a.record.provider;
  info.upstream_model = c.endpoint->upstream_model;
  info.endpoint_id = c.endpoint->id;
  info.model = c.model->id;
  info.dropped = c.dropped;
  if (reservation_ && reservation_->soft_limit_reached) info.soft_limit = reservation_->soft_limit_what;
  info.plan = spec_.request.explain_routing ? &plan_ : nullptr;
  client_->OnCommit(info);
  std::vector<StreamEvent> held = spec_.request.stream ? std::move(a.held) : ResponseEvents(a.output.Take());
  a.held.clear();
  for (const auto& e : held) Hand(e);
}

void CallDriver::Hand(const StreamEvent& event) {
  if (stop_ != Stop::kClientGone) client_->OnEvent(event);
}

void CallDriver::OnProviderComplete(Attempt& a) {
  // A provider may end normally when told to stop (the local engine finishes
  // with what it has). Stopped by the deadline or a shutdown, the answer was
  // cut: it must not look complete. (A client that left gets nothing either
  // way; its row keeps the exact usage.)
  if (stop_ == Stop::kDeadline || stop_ == Stop::kShutdown) {
    EndAttempt(a, routing::Outcome::kNeutral, "cancelled", 499, std::nullopt);
    return Finish(StoppedError(Error{ErrorCode::kCancelled, "request cancelled"}));
  }
  // A provider that ended the answer with an error (DeepSeek's
  // insufficient_system_resource, Gemini's MALFORMED_FUNCTION_CALL) cut it:
  // a failure like a broken stream, retried elsewhere while uncommitted.
  if (a.finish && a.finish->reason == FinishReason::kError && stop_ == Stop::kNone) {
    return OnProviderError(a, Error{ErrorCode::kBadGateway,
                                    "the provider ended the answer with an error (" +
                                        (a.finish->native_reason.empty() ? std::string("error")
                                                                         : a.finish->native_reason) +
                                        ")"});
  }
  if (!committed_) Commit(a);  // an empty answer is still an answer
  if (winner_ != &a) return;
  if (stop_ == Stop::kClientGone) {
    EndAttempt(a, routing::Outcome::kNeutral, "cancelled", 499, std::nullopt);
  } else {
    EndAttempt(a, routing::Outcome::kSuccess, "served", 200, std::nullopt);
  }
  if (spec_.session != 0 && stop_ == Stop::kNone) deps_.router->Remember(spec_.session, *a.endpoint, executor_->Now());
  Finish(std::nullopt);
}

void CallDriver::OnProviderError(Attempt& a, Error error) {
  if (error.provider_name.empty() && error.code != ErrorCode::kCancelled) error.provider_name = a.record.provider;
  if (a.byok && error.code_string == kProviderCredentialsRejected) {
    // The caller's account's own key, not the operator's: say so.
    error.message = "the provider rejected your account's own API key for it (BYOK); replace it with PUT "
                    "/admin/v1/accounts/" + std::to_string(spec_.key.account_id) + "/provider_keys/" +
                    a.endpoint->provider_id;
  }
  const bool mine = winner_ == &a;
  if (committed_ && !mine) return;  // a loser's late error
  if (mine) {
    // After the commit nothing is retried: the client has part of the answer.
    if (stop_ == Stop::kNone) {
      EndAttempt(a, routing::Outcome::kFailure, "broken", HttpStatus(error.code), error);
    } else {
      EndAttempt(a, routing::Outcome::kNeutral, "cancelled", HttpStatus(StoppedError(error).code), error);
    }
    return Finish(StoppedError(error));
  }
  if (stop_ != Stop::kNone || error.code == ErrorCode::kDeadlineExceeded) {
    // Stopped, or the call's own deadline passed at the provider: no time
    // is left for another endpoint.
    EndAttempt(a, routing::Outcome::kNeutral, "cancelled", 499, error);
    if (Running() == 0) Finish(StoppedError(error));
    return;
  }
  const bool retryable = IsRetryable(error.code);
  // A provider at capacity (the local engine's full queue) says nothing about
  // the endpoint's health: try the next endpoint, no cooldown.
  const bool at_capacity = error.code == ErrorCode::kResourceExhausted && error.code_string == "at_capacity";
  const bool rate_limited = error.code == ErrorCode::kResourceExhausted && !at_capacity;
  EndAttempt(a,
             rate_limited  ? routing::Outcome::kRateLimited
             : at_capacity ? routing::Outcome::kNeutral
             : retryable   ? routing::Outcome::kFailure
                           : routing::Outcome::kNeutral,
             rate_limited ? "rate_limited" : at_capacity ? "at_capacity" : retryable ? "failed" : "rejected",
             HttpStatus(error.code), error);
  if (!retryable) {
    // The request caused it (a 4xx): another endpoint would refuse it too.
    for (auto& other : attempts_) {
      if (other->running) {
        other->cancel.request_stop();
        EndAttempt(*other, routing::Outcome::kNeutral, "cancelled", 499, std::nullopt);
      }
    }
    return Finish(error);
  }
  last_error_ = error;
  if (deps_.observer != nullptr) {
    deps_.observer->OnAttemptFailed(spec_.request.model, a.record.provider, HttpStatus(error.code),
                                    Ms(executor_->Now() - spec_.received));
  }
  if (Running() > 0) return;  // a hedged attempt goes on
  // Retries on the same endpoint (never after a 429: it asked us to stay away).
  const routing::RoutingPolicy& policy = plan_.candidates[a.candidate].model->routing;
  if (!rate_limited && !at_capacity && a.retry < policy.retries) {
    const auto backoff = policy.retry_backoff * (int64_t{1} << std::min(a.retry, 16));
    const std::size_t candidate = a.candidate;
    const int retry = a.retry + 1;
    retry_timer_ = executor_->StartTimer(executor_->Now() + backoff, [weak = weak_from_this(), candidate, retry] {
      auto self = weak.lock();
      if (!self || self->finished_ || self->committed_) return;
      if (self->stop_ != Stop::kNone) return self->Advance();
      const routing::Endpoint& e = *self->plan_.candidates[candidate].endpoint;
      if (self->deps_.router->health(e).Acquire(self->executor_->Now()) == routing::Availability::kAvailable) {
        return self->StartAttempt(candidate, retry);
      }
      self->Advance();  // full or no longer healthy: move on
    });
    return;
  }
  Advance();
}

void CallDriver::EndAttempt(Attempt& a, routing::Outcome outcome, const std::string& what, int status,
                            const std::optional<Error>& error) {
  if (!a.running) return;
  a.running = false;
  a.sink->Detach();
  const SteadyTime now = executor_->Now();
  const std::optional<Usage> reported = a.output.usage();
  a.record.outcome = what;
  a.record.status = status;
  if (error) a.record.error_code = error->code_string.empty() ? std::string(ErrorType(error->code)) : error->code_string;
  a.record.latency_ms = Ms(now - a.started);
  if (a.first_output_at) a.record.ttft_ms = Ms(*a.first_output_at - a.started);
  if (what != "served") {
    // What it cost the operator: what it reported or produced; an attempt cut
    // off while the upstream worked (a lost hedge, a stop) at least its prompt.
    const ChatResponse output = a.output.Take();
    const bool worked = reported.has_value() || a.output_bytes > 0 || what == "hedge_lost" || what == "cancelled" ||
                        what == "broken";
    if (worked) {
      a.record.usage = BillableUsage(a.request, output, reported, /*complete=*/false, *a.endpoint).usage;
      a.record.cost = CallCost(a.endpoint->PricingFor(a.record.usage.prompt_tokens), a.record.usage);
    }
  }
  routing::AttemptReport report;
  report.outcome = outcome;
  report.started = a.started;
  report.first_token = a.first_output_at;
  report.ended = now;
  const Usage used = reported.value_or(Usage{});
  report.prompt_tokens = used.prompt_tokens;
  report.cached_tokens = used.cached_tokens;
  report.completion_tokens = used.completion_tokens;
  if (error) report.retry_after = RetryAfter(error->retry_after, executor_->WallNow());
  deps_.router->Report(*a.endpoint, report);
}

void CallDriver::RequestStop(Stop why) {
  if (finished_) return;
  if (stop_ == Stop::kNone) stop_ = why;
  if (attempts_.empty() || Running() == 0) {
    // Not started yet (Start() and Admitted() see stop_), waiting for
    // capacity or a retry.
    if (reservation_ && !committed_) Finish(StoppedError(Error{ErrorCode::kCancelled, "request cancelled"}));
    return;
  }
  for (auto& a : attempts_) {
    if (a->running) a->cancel.request_stop();
  }
  if (!grace_timer_) {
    grace_timer_ = executor_->StartTimer(executor_->Now() + kCancelGrace, [weak = weak_from_this()] {
      auto self = weak.lock();
      if (!self || self->finished_) return;
      // The provider did not answer its cancellation in time: end the call
      // without it; what it sends later is dropped (AttemptSink::Detach).
      self->Finish(self->StoppedError(Error{ErrorCode::kCancelled, "request cancelled"}));
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

void CallDriver::Finish(const std::optional<Error>& outcome) {
  if (finished_) return;
  finished_ = true;
  // What the client is told to wait: the upstream's Retry-After in whole
  // seconds (never its raw text), or, for a 429 without one, until the
  // plan's first endpoint is out of its cooldown.
  std::optional<Error> error = outcome;
  if (error && !error->retry_after.empty()) {
    const auto wait = RetryAfter(error->retry_after, executor_->WallNow());
    error->retry_after = wait ? RetryAfterSeconds(*wait) : std::string();
  }
  if (error && error->code == ErrorCode::kResourceExhausted && error->retry_after.empty()) {
    const SteadyTime now = executor_->Now();
    std::optional<SteadyTime> soonest;
    for (const routing::Candidate& c : plan_.candidates) {
      const routing::HealthSnapshot h = deps_.router->health(*c.endpoint).Snapshot(now);
      if (h.availability == routing::Availability::kCoolingDown && (!soonest || h.available_at < *soonest)) {
        soonest = h.available_at;
      }
    }
    if (soonest) error->retry_after = RetryAfterSeconds(duration_cast<routing::Millis>(*soonest - now));
  }
  for (auto* timer : {&deadline_timer_, &grace_timer_, &hedge_timer_, &retry_timer_, &queue_timer_}) {
    if (*timer) (*timer)->Cancel();
  }
  if (queue_ticket_ != 0) deps_.router->CancelWait(std::exchange(queue_ticket_, 0));
  for (auto& a : attempts_) {
    if (a->running) {
      a->cancel.request_stop();
      const bool broke = winner_ == a.get() && error && stop_ == Stop::kNone;
      EndAttempt(*a, broke ? routing::Outcome::kFailure : routing::Outcome::kNeutral,
                 winner_ == a.get() && !error ? "served" : broke ? "broken" : "cancelled",
                 winner_ == a.get() && !error ? 200 : error ? HttpStatus(error->code) : 499, error);
    }
  }
  // The attempt the row is about: the one that served, else the last tried.
  Attempt* a = winner_ != nullptr ? winner_ : attempts_.empty() ? nullptr : attempts_.back().get();

  const ChatResponse output = a != nullptr ? a->output.Take() : ChatResponse{};
  // What reached the client is billed: a whole answer, or the part of a
  // stream that went out before it broke. A non-streamed call that failed
  // delivered nothing, unless its client left: then the provider had already
  // done the work it was asked for.
  const bool delivered = a != nullptr && (!error || (committed_ && spec_.request.stream) || stop_ == Stop::kClientGone);
  CallSummary summary;
  std::optional<Money> provider_cost;
  const Pricing* prices = nullptr;
  if (delivered) {
    const Billable billable = BillableUsage(a->request, output, a->output.usage(), /*complete=*/!error, *a->endpoint);
    summary.usage = billable.usage;
    summary.usage_estimated = billable.estimated;
    prices = &a->endpoint->PricingFor(summary.usage.prompt_tokens);
    summary.cost = CallCost(*prices, summary.usage);
    a->record.usage = summary.usage;
    a->record.cost = summary.cost;
    if (a->byok) {
      provider_cost = summary.cost;
      summary.cost = ByokFee(summary.cost, spec_.key.account);
      summary.byok = true;
    }
  }
  // Settled before the client hears the end: the charge is what the
  // reservation allows (never more than was reserved).
  if (reservation_) summary.cost = deps_.admission->Settle(*reservation_, summary.cost);

  // Metering. No row when no provider was ever asked (a rejection), or when
  // the only provider asked refused the request as invalid before producing
  // anything; after other attempts the row keeps their records.
  const bool rejected = a == nullptr || (error && !committed_ && error->code == ErrorCode::kInvalidArgument &&
                                         attempts_.size() == 1);
  // The client hears the end once the usage row is durable: a call whose
  // client saw a complete answer is never lost (docs: billing/README.md).
  auto deliver = [self = shared_from_this(), error, summary] {
    if (error) {
      self->client_->OnFailure(*error, self->committed_);
    } else {
      self->client_->OnSuccess(summary);
    }
    if (auto done = std::exchange(self->on_done_, nullptr)) done();
  };
  if (rejected) {
    if (reservation_) reservation_.reset();
    if (deps_.observer != nullptr) {
      std::vector<billing::AttemptRecord> records;
      for (const auto& attempt : attempts_) records.push_back(attempt->record);
      deps_.observer->OnUnmetered(spec_, stop_ == Stop::kClientGone ? 499 : error ? HttpStatus(error->code) : 200,
                                  error ? &*error : nullptr, records);
    }
    return deliver();
  }
  billing::UsageEvent row;
  row.request_id = spec_.request_id;
  row.api_key_id = spec_.key.id;
  row.account_id = spec_.key.account_id;
  row.model = plan_.candidates[a->candidate].model->id;
  row.provider = a->record.provider;
  row.upstream_model = a->endpoint->upstream_model;
  row.endpoint_id = a->endpoint->id;
  row.usage = summary.usage;
  row.usage_estimated = summary.usage_estimated;
  row.cost = summary.cost;
  row.byok = a->byok;
  row.provider_cost = provider_cost;
  if (prices != nullptr) row.price_snapshot = PriceSnapshotJson(*a->endpoint, *prices, a->byok ? &spec_.key.account : nullptr);
  if (reservation_) {
    row.lease_holder = reservation_->lease_holder;
    row.leased_pots = reservation_->pots;
  }
  row.latency_ms = Ms(executor_->Now() - spec_.received);
  if (a->first_output_at) row.ttft_ms = Ms(*a->first_output_at - spec_.received);
  const bool client_gone = stop_ == Stop::kClientGone;
  row.status = client_gone ? 499 : error ? HttpStatus(error->code) : 200;
  if (!output.choices.empty() && output.choices.front().finish) {
    row.finish_reason = std::string(FinishReasonName(*output.choices.front().finish));
  }
  if (error) {
    row.finish_reason = client_gone ? "cancelled" : "error";
    row.error_code = std::string(ErrorType(error->code));
  }
  row.streamed = spec_.request.stream;
  row.cancelled = client_gone;
  row.created_at = spec_.created_at;
  row.finished_at = executor_->WallNow();
  row.app = spec_.app;
  row.app_title = spec_.app_title;
  for (const auto& attempt : attempts_) row.attempts.push_back(attempt->record);
  reservation_.reset();
  if (deps_.observer != nullptr) deps_.observer->OnCall(row);
  deps_.usage->Record(std::move(row), [executor = executor_, deliver = std::move(deliver)]() mutable {
    executor->Post(std::move(deliver));
  });
}

Money ByokFee(Money provider_cost, const billing::AccountRecord& account) {
  // Rounded up to the nano-USD: the fee is never zero for a call that cost something.
  const __int128 fee = static_cast<__int128>(std::max<int64_t>(provider_cost.nano_usd, 0)) * account.byok_fee_ppm;
  return Money{static_cast<int64_t>((fee + 999'999) / 1'000'000)};
}

std::string PriceSnapshotJson(const routing::Endpoint& endpoint, const Pricing& prices,
                              const billing::AccountRecord* byok_account) {
  int64_t tier = 0;
  for (const routing::PriceTier& t : endpoint.tiers) {
    if (&t.pricing == &prices) tier = t.above_prompt_tokens;
  }
  std::string out;
  JsonWriter w(out);
  w.BeginObject();
  w.Key("endpoint").String(endpoint.id);
  w.Key("tier_above_prompt_tokens").Int(tier);
  w.Key("unit").String("femto_usd_per_token");
  w.Key("prompt").Int(prices.prompt.femto_usd_per_token);
  w.Key("completion").Int(prices.completion.femto_usd_per_token);
  w.Key("cached_read").Int(prices.cached_prompt.femto_usd_per_token);
  w.Key("cache_write").Int(prices.cache_write.femto_usd_per_token);
  w.Key("reasoning");
  if (prices.reasoning) {
    w.Int(prices.reasoning->femto_usd_per_token);
  } else {
    w.Null();
  }
  w.Key("request_nano_usd").Int(prices.per_request.nano_usd);
  if (byok_account != nullptr) w.Key("byok_fee_ppm").Int(byok_account->byok_fee_ppm);
  w.EndObject();
  return out;
}

}  // namespace tollgate::gateway
