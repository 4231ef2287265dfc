// The call driver: owns one model call from admission to metering, apart from
// the HTTP server, so it is tested with fake providers and a fake clock,
// without sockets (docs/request-lifecycle.md; Envoy keeps its router filter
// apart from its codec the same way).
//
//   Start():  plan (routing::Router::Decide: preferences, parameters, live
//             health, docs/routing.md), narrowed to the key's allowed models
//             (403) -> admission (Admission::Reserve of the worst case at the
//             plan's dearest endpoint; asynchronous, 402 / 503) -> attempts.
//   attempt:  claims a slot at the endpoint (EndpointHealth::Acquire: its
//             concurrency cap and breaker), then Provider::Start with a
//             bounded AttemptSink. A full endpoint is passed over for the next
//             one ("local first, cloud on overflow"); when every remaining
//             endpoint is full the call waits in the router's capacity queue,
//             at most RouterOptions::queue_timeout, then fails with 429 and
//             Retry-After.
//             Events before the commit are held: a stream commits to the
//             endpoint at its first output event (text, reasoning, tool
//             call, finish), a whole (non-streamed) answer when the provider
//             completed it (ClientSink::OnCommit), since nothing reaches its
//             client before.
//   failure:  a retryable error before the commit (connect failure, timeout
//             before the first byte, 408, 429, 5xx, overload: core/error.hpp
//             IsRetryable) is retried on the same endpoint when the model's
//             policy allows (RoutingPolicy::retries, with backoff; never a
//             429), else the next endpoint of the plan is tried. After the
//             commit, or for an error the request caused (4xx), the call
//             fails. A provider that finishes choice 0 with
//             FinishReason::kError failed too.
//   hedging:  with RoutingPolicy::hedge_after, if no attempt has delivered
//             any event by then, the next endpoint starts in parallel (once
//             per call); the first to commit wins and the other is cancelled.
//   end:      the charge settled (Admission::Settle: the cost, at most the
//             reservation), one usage row (UsageSink::Record) with every
//             attempt beside it (billing::AttemptRecord), metrics
//             (CallObserver); then, once the row is durable, exactly one of
//             ClientSink::OnSuccess / OnFailure, and `on_done`. So a client
//             that saw a complete answer has a usage row that survives a crash.
//             Each attempt's outcome went to routing's health as it ended
//             (Router::Report). The caller pays for the attempt that served
//             only; the others' estimated costs are in their records.
//
// Deadline: `CallSpec::deadline` cancels the attempts; the error becomes 504.
// Cancel() (client gone) and Shutdown() (server stopping) cancel them too;
// the driver then waits for a provider's terminal event, at most
// kCancelGrace, and after that finishes without it (late events are
// ignored). A provider that completes normally after the deadline or a
// shutdown stopped it still ends the call with the 504 / 503: a cut answer
// never looks complete.
//
// Flow control: each attempt's events queue in its AttemptSink (bounded:
// kHighWaterBytes; above it the provider is told to wait, StreamSink::Ready);
// the committed attempt's are handed to the ClientSink only while it is
// Ready(), so a slow client slows its provider instead of growing memory.
//
// Threading: every method of CallDriver, and every ClientSink call it makes,
// runs on its Executor (one strand), except Cancel() and Shutdown(), which
// may be called from any thread. Providers call the AttemptSink from any
// thread; it posts to the executor.
#pragma once

#include "tollgate/billing/key_cache.hpp"
#include "tollgate/billing/usage_event.hpp"
#include "tollgate/core/chat.hpp"
#include "tollgate/core/error.hpp"
#include "tollgate/core/money.hpp"
#include "tollgate/core/parameters.hpp"
#include "tollgate/routing/catalog.hpp"
#include "tollgate/routing/router.hpp"

#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace tollgate::gateway {

using SteadyTime = std::chrono::steady_clock::time_point;
using WallTime = std::chrono::system_clock::time_point;

// Runs functions one at a time, in the order posted (a strand), and keeps
// time. Production: an Asio strand and steady_timer (server.cpp); tests: a
// manual queue and clock (tests/gateway/fake_executor.hpp).
class Executor {
 public:
  class Timer {
   public:
    virtual ~Timer() = default;
    virtual void Cancel() = 0;  // the function will not run (if it did not already)
  };
  virtual ~Executor() = default;
  // Thread-safe. `fn` runs later, never inside Post.
  virtual void Post(std::function<void()> fn) = 0;
  // Runs `fn` on the executor at `at` unless the timer is cancelled or
  // destroyed first. Called on the executor.
  virtual std::unique_ptr<Timer> StartTimer(SteadyTime at, std::function<void()> fn) = 0;
  virtual SteadyTime Now() const = 0;
  virtual WallTime WallNow() const = 0;
};

// A call's credit reservation (Admission::Reserve).
struct Reservation {
  Money worst_case;                 // reserved: the most the call is ever charged
  std::string lease_holder;         // the leases it was admitted under (usage row), or empty
  std::vector<billing::LeasedPot> pots;  // the pots of those leases (usage row's leased_pots), or empty
  bool soft_limit_reached = false;  // a soft limit is passed: the caller is warned (header, metric)
  std::string soft_limit_what;      // which: "key", "budget" or "credits"
  std::shared_ptr<const void> handle;  // the admission's own state (a CreditGuard ticket)
};

// Credit admission and settlement (billing::CreditGuard in production).
class Admission {
 public:
  virtual ~Admission() = default;
  // Reserves `worst_case` for a call of `key` made at `at` (limit periods
  // count from it) and calls `done` exactly once, on any thread, possibly
  // before Reserve returns: the reservation, or the error to answer with
  // (kPaymentRequired: 402 naming the limit and by how much it falls short;
  // kUnavailable: credit cannot be checked now).
  virtual void Reserve(const billing::KeyRecord& key, Money worst_case, WallTime at,
                       std::function<void(Result<Reservation>)> done) = 0;
  // Ends a reservation when its call ended (successful, failed or
  // cancelled); `cost` is what the call cost. Returns what is charged: `cost`,
  // at most the reserved worst case (the operator absorbs any excess, so no
  // caller spends more than was reserved). Thread-safe; once per reservation.
  virtual Money Settle(const Reservation& reservation, Money cost) = 0;
};

// Where usage rows go (billing::UsageRecorder in production).
class UsageSink {
 public:
  virtual ~UsageSink() = default;
  // Queues `event`; `durable` runs once (on any thread, possibly inside
  // Record) when the driver may answer: when the row can no longer be lost
  // (spooled with fsync, or committed), or at once where the gateway is
  // configured to answer first (config usage.answer_after_spool: false).
  virtual void Record(billing::UsageEvent event, std::function<void()> durable) = 0;
};

struct CallSpec;

// Metrics of calls and attempts (gateway Metrics in production).
class CallObserver {
 public:
  virtual ~CallObserver() = default;
  // A failed attempt that was followed by another endpoint (no usage row).
  virtual void OnAttemptFailed(const std::string& model, const std::string& provider, int status,
                               int64_t latency_ms) = 0;
  // The call's final outcome, as recorded in its usage row.
  virtual void OnCall(const billing::UsageEvent& event) = 0;
  // A call that ended without a usage row: refused before any provider was
  // asked (unknown model, not allowed, admission, stopped before it started;
  // `attempts` empty) or rejected as invalid by the only provider asked (its
  // record in `attempts`). `model` is the model the request named (raw
  // input), `status` the HTTP status answered, `error` why (null for 200).
  virtual void OnUnmetered(const CallSpec& spec, int status, const Error* error,
                           const std::vector<billing::AttemptRecord>& attempts) {}
};

// What the connection learns when the call commits to an endpoint: enough to
// write response headers.
struct CommitInfo {
  std::string provider;        // display name of the endpoint's provider
  std::string upstream_model;  // the endpoint's model name
  std::string endpoint_id;     // routing::Endpoint::id
  std::string model;           // the model that serves (a `models` fallback may replace the one asked for)
  ParameterSet dropped;        // request parameters the endpoint does not support, dropped
  // A soft limit passed at admission ("key", "budget" or "credits"), for a
  // warning header; empty = none.
  std::string soft_limit;
  // The routing decision when the request asked for it (explain_routing),
  // else null. Valid during OnCommit only.
  const routing::Plan* plan = nullptr;
};

// The end of a successful call.
struct CallSummary {
  Usage usage;            // what was billed (reported, or estimated: see usage_estimated)
  bool usage_estimated = false;
  Money cost;             // what the caller is charged
  bool byok = false;      // served with the account's own provider key: `cost` is the BYOK fee
};

// The client side of a call: the connection encodes and writes. Called on the
// driver's executor, in this order:
//   OnCommit? OnEvent*  then exactly one of  OnSuccess | OnFailure.
// OnEvent only after OnCommit; OnSuccess always after OnCommit. OnFailure with
// committed = false: nothing was committed (answer with the error's status);
// with committed = true: events were handed over (a stream ends with an error
// event). The driver hands over an event only when Ready() said yes.
class ClientSink {
 public:
  virtual ~ClientSink() = default;
  virtual void OnCommit(const CommitInfo& info) = 0;
  virtual void OnEvent(const StreamEvent& event) = 0;
  virtual void OnSuccess(const CallSummary& summary) = 0;
  virtual void OnFailure(const Error& error, bool committed) = 0;
  // True: send more. False: wait; `resume` is called (on the executor) when
  // there is room again.
  virtual bool Ready(std::function<void()> resume) = 0;
};

struct CallDeps {
  routing::Router* router = nullptr;  // plans, health, stickiness, capacity queue
  Admission* admission = nullptr;
  UsageSink* usage = nullptr;
  CallObserver* observer = nullptr;  // may be null
};

struct CallSpec {
  ChatRequest request;
  billing::KeyRecord key;
  std::string request_id;  // "gen-...", the usage row's idempotency key
  SteadyTime received;     // request received (latency and TTFT origin)
  WallTime created_at;     // the same, wall clock (usage row)
  SteadyTime deadline;     // the whole call; time_point{} = none
  uint64_t session = 0;    // routing::SessionKey of the request; 0 = no stickiness
  uint64_t seed = 0;       // seeds the routing draws of this call
  // The calling app (AppFromHeaders in app_attribution.hpp), copied to the
  // usage row; empty = none.
  std::string app;
  std::string app_title;
};

// Completion tokens assumed for a reservation when neither max_tokens nor a
// context length is known.
inline constexpr int64_t kDefaultCompletionBound = 4096;

// The most prompt tokens `request` can have: its bytes (+1 for BOS, +8 per
// message for a template, 4096 per image; SentencePiece with byte fallback
// and byte-level BPE emit at most one token per byte).
int64_t PromptTokensBound(const ChatRequest& request);

// The completion tokens one choice of `request` may produce at `endpoint`:
// max_tokens, else the endpoint's max output tokens, else its context
// length, else kDefaultCompletionBound.
int64_t OutputLimit(const ChatRequest& request, const routing::Endpoint& endpoint);

// The most `request` can cost at `endpoint`: PromptTokensBound prompt tokens
// at the dearest prompt-side price of any tier (Endpoint::Dearest),
// completion tokens by OutputLimit times n plus the request's reasoning
// budget at the dearer of the completion and reasoning prices, plus the
// per-request price. A provider whose reasoning is bounded by neither (no
// budget given) can report more: the charge is then clamped to this
// reservation and the rest counted in tollgate_uncharged_nano_usd_total.
Money WorstCaseCost(const ChatRequest& request, const routing::Endpoint& endpoint);

// Usage estimated when a provider reported none: 4 bytes per token (OpenAI's
// rule of thumb for English text) of the prompt and of the output.
Usage EstimateUsage(const ChatRequest& request, const ChatResponse& output);

// What a call is billed for, from what its provider reported (nullopt:
// nothing) and what it produced. An upstream's counts are not trusted
// blindly (a bad one must neither bill a fortune nor make a call free):
//   - nothing reported: the estimate;
//   - the call broke (`complete` false): the report so far, raised to the
//     estimate of what the output shows;
//   - a complete call's report is trusted downwards: explicit zero usage is
//     billed as zero, never re-estimated;
//   - a report above what the request allows (prompt: 2 x (prompt bytes + 1
//     + 4096 per image) + 16384 for what a provider adds; completion: the
//     output limit x n + the reasoning budget + 1024) is clamped
//     to that bound (the output limit is OutputLimit).
// `estimated` is true whenever the estimate or a bound decided a count.
struct Billable {
  Usage usage;
  bool estimated = false;
};
Billable BillableUsage(const ChatRequest& request, const ChatResponse& output, const std::optional<Usage>& reported,
                       bool complete, const routing::Endpoint& endpoint);

// The fee charged for a call served with the account's own provider key
// (BYOK): account.byok_fee_ppm millionths of what the provider charges it,
// rounded up to the nano-USD.
Money ByokFee(Money provider_cost, const billing::AccountRecord& account);

// The prices a cost was computed from, as stored with the usage row
// (usage_events.price_snapshot, migrations/004_ledger.sql): {"endpoint",
// "tier_above_prompt_tokens", "unit": "femto_usd_per_token", "prompt",
// "completion", "cached_read", "cache_write", "reasoning" (or null),
// "request_nano_usd"} and, for BYOK, "byok_fee_ppm". `prices` is
// endpoint.PricingFor(...) (a reference into `endpoint`).
std::string PriceSnapshotJson(const routing::Endpoint& endpoint, const Pricing& prices,
                              const billing::AccountRecord* byok_account);

class CallDriver : public std::enable_shared_from_this<CallDriver> {
 public:
  // Flow-control bounds of the attempt queue (bytes of queued events, see
  // EventBytes).
  static constexpr std::size_t kHighWaterBytes = 256 * 1024;
  static constexpr std::size_t kLowWaterBytes = 64 * 1024;
  // How long a cancelled provider may take to deliver its terminal event.
  static constexpr std::chrono::milliseconds kCancelGrace{5000};
  // The most a whole (non-streamed) answer may hold before it is committed.
  static constexpr std::size_t kMaxWholeAnswerBytes = 32 * 1024 * 1024;

  // `executor`, `deps` and `client` must outlive the driver's last callback
  // (`on_done`). `on_done` runs once, on the executor, after metering.
  static std::shared_ptr<CallDriver> Create(CallDeps deps, std::shared_ptr<Executor> executor,
                                            CallSpec spec, std::shared_ptr<ClientSink> client,
                                            std::function<void()> on_done);
  ~CallDriver();

  // Begins the call. Call once, on the executor.
  void Start();
  // The client went away: cancel; the row says 499. Thread-safe.
  void Cancel();
  // The server is stopping: cancel with 503 (if nothing was committed yet).
  // Thread-safe.
  void Shutdown();

  const CallSpec& spec() const { return spec_; }

 private:
  class AttemptSink;
  struct Item;
  struct Attempt;
  enum class Stop { kNone, kClientGone, kDeadline, kShutdown };

  CallDriver(CallDeps deps, std::shared_ptr<Executor> executor, CallSpec spec,
             std::shared_ptr<ClientSink> client, std::function<void()> on_done);

  // Starts the next attempt the plan allows, or waits for capacity, or fails.
  void Advance();
  // The admission's answer (on the executor).
  void Admitted(Result<Reservation> reservation);
  // The account's own key (BYOK) for `endpoint`'s provider, or null.
  const std::string* ProviderKeyFor(const routing::Endpoint& endpoint) const;
  // Claims a slot at candidate `index` and starts it; false when it is full
  // or no longer available (then `*full` says whether it was full).
  bool TryStart(std::size_t index, bool* full);
  void StartAttempt(std::size_t candidate, int retry);
  // Starts an attempt on a slot the capacity queue claimed for this call;
  // false when the call no longer wants it (the caller gives it back).
  bool StartClaimed(const routing::Endpoint& endpoint);
  void ArmHedge();
  void WaitForCapacity();
  void Drain(std::size_t attempt);
  void OnProviderEvent(Attempt& a, StreamEvent event);
  void OnProviderComplete(Attempt& a);
  void OnProviderError(Attempt& a, Error error);
  void Commit(Attempt& a);
  void Hand(const StreamEvent& event);
  // Ends attempt `a` (its slot released, its outcome reported to routing).
  void EndAttempt(Attempt& a, routing::Outcome outcome, const std::string& what, int status,
                  const std::optional<Error>& error);
  void RequestStop(Stop why);
  void Finish(const std::optional<Error>& outcome);
  Error StoppedError(const Error& provider_error) const;
  int Running() const;

  CallDeps deps_;
  std::shared_ptr<Executor> executor_;
  CallSpec spec_;
  std::shared_ptr<ClientSink> client_;
  std::function<void()> on_done_;

  routing::Plan plan_;
  std::vector<bool> tried_;  // by candidate: an attempt ran there (or it became unavailable)
  bool awaiting_admission_ = false;         // Reserve asked, its answer not yet in
  std::optional<Reservation> reservation_;  // admitted and not yet settled
  std::optional<Error> last_error_;  // of the last failed attempt

  std::vector<std::unique_ptr<Attempt>> attempts_;  // in start order
  Attempt* winner_ = nullptr;                       // the committed attempt
  bool hedged_ = false;
  std::unique_ptr<Executor::Timer> hedge_timer_;
  std::unique_ptr<Executor::Timer> retry_timer_;
  // Capacity queue.
  uint64_t queue_ticket_ = 0;
  std::optional<SteadyTime> queue_deadline_;
  std::unique_ptr<Executor::Timer> queue_timer_;

  bool committed_ = false;
  bool finished_ = false;
  bool draining_ = false;
  bool waiting_for_client_ = false;
  Stop stop_ = Stop::kNone;
  std::unique_ptr<Executor::Timer> deadline_timer_;
  std::unique_ptr<Executor::Timer> grace_timer_;
};

}  // namespace tollgate::gateway
