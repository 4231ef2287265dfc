// The call driver with fake providers, a fake client and a manual clock: no
// sockets, no threads unless a test starts one.
#include "call_driver.hpp"
#include "fake_executor.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <ctime>
#include <map>
#include <set>
#include <thread>

namespace tollgate::gateway {
namespace {

using namespace std::chrono_literals;
using testing::ManualExecutor;

// ---------------------------------------------------------------- fakes

// A provider whose calls the test drives by hand through the sink it kept.
class FakeProvider final : public Provider {
 public:
  FakeProvider(std::string name, ParameterSet params) : name_(std::move(name)), params_(params) {}

  struct Call {
    ChatRequest request;
    std::string upstream_model;
    std::shared_ptr<StreamSink> sink;
    std::stop_token cancel;
    std::string api_key;
  };

  std::string_view Name() const override { return name_; }
  const ParameterSet& SupportedParameters() const override { return params_; }
  void Start(const ProviderRequest& request, std::shared_ptr<StreamSink> sink, std::stop_token cancel) override {
    calls.push_back(Call{*request.request, request.upstream_model, std::move(sink), std::move(cancel), request.api_key});
    if (on_start) on_start(calls.back());
  }

  std::vector<Call> calls;
  std::function<void(Call&)> on_start;  // answers at once when set

 private:
  std::string name_;
  ParameterSet params_;
};

class FakeClient final : public ClientSink {
 public:
  void OnCommit(const CommitInfo& info) override {
    EXPECT_FALSE(commit) << "committed twice";
    commit = info;
  }
  void OnEvent(const StreamEvent& event) override {
    EXPECT_TRUE(commit) << "event before the commit";
    EXPECT_FALSE(ended) << "event after the end";
    events.push_back(event);
    if (const auto* t = std::get_if<TextDelta>(&event)) text += t->text;
  }
  void OnSuccess(const CallSummary& s) override {
    EXPECT_FALSE(ended);
    EXPECT_TRUE(commit) << "success without a commit";
    ended = true;
    summary = s;
  }
  void OnFailure(const Error& e, bool committed) override {
    EXPECT_FALSE(ended);
    ended = true;
    error = e;
    failed_committed = committed;
  }
  bool Ready(std::function<void()> resume) override {
    if (ready) return true;
    resume_ = std::move(resume);
    return false;
  }
  void SetReady(bool r) {
    ready = r;
    if (r && resume_) std::exchange(resume_, nullptr)();
  }

  std::optional<CommitInfo> commit;
  std::vector<StreamEvent> events;
  std::string text;
  std::optional<CallSummary> summary;
  std::optional<Error> error;
  bool failed_committed = false;
  bool ended = false;
  bool ready = true;

 private:
  std::function<void()> resume_;
};

// Admits from memory; `pending` sums what Settle charged, `reserved` what is
// reserved now. With `defer`, answers wait in `waiting` for the test.
class FakeAdmission final : public Admission {
 public:
  void Reserve(const billing::KeyRecord&, Money worst, WallTime,
               std::function<void(Result<Reservation>)> done) override {
    auto answer = [this, worst, done = std::move(done)] {
      if (!admit) {
        return done(Error{ErrorCode::kPaymentRequired, "key limit: not enough", "", "insufficient_credits"});
      }
      reserved += worst.nano_usd;
      ++reservations;
      Reservation r;
      r.worst_case = worst;
      r.lease_holder = "replica-1:boot";
      r.pots = {billing::LeasedPot{"credits", 3, {}}};
      r.soft_limit_reached = soft_limit;
      r.soft_limit_what = soft_limit ? "key" : "";
      done(std::move(r));
    };
    if (defer) {
      waiting.push_back(std::move(answer));
    } else {
      answer();
    }
  }
  Money Settle(const Reservation& r, Money cost) override {
    reserved -= r.worst_case.nano_usd;
    ++releases;
    const Money charged = std::min(cost, r.worst_case);
    pending += charged.nano_usd;
    return charged;
  }

  bool admit = true;
  bool defer = false;
  bool soft_limit = false;
  std::vector<std::function<void()>> waiting;
  int64_t reserved = 0;
  int64_t pending = 0;
  int reservations = 0;
  int releases = 0;
};

// Keeps rows; with `defer_durable`, their durable callbacks wait in `durable`.
class FakeUsage final : public UsageSink {
 public:
  void Record(billing::UsageEvent e, std::function<void()> on_durable) override {
    rows.push_back(std::move(e));
    if (defer_durable) {
      durable.push_back(std::move(on_durable));
    } else {
      on_durable();
    }
  }
  std::vector<billing::UsageEvent> rows;
  bool defer_durable = false;
  std::vector<std::function<void()>> durable;
};

class FakeObserver final : public CallObserver {
 public:
  void OnAttemptFailed(const std::string&, const std::string& provider, int status, int64_t) override {
    failed.emplace_back(provider, status);
  }
  void OnCall(const billing::UsageEvent& e) override { calls.push_back(e.status); }
  std::vector<std::pair<std::string, int>> failed;
  std::vector<int> calls;
};

Pricing Price(int64_t prompt_femto, int64_t completion_femto) {
  Pricing p;
  p.prompt = TokenPrice{prompt_femto};
  p.completion = TokenPrice{completion_femto};
  p.cached_prompt = p.prompt;
  p.cache_write = p.prompt;
  return p;
}

const ParameterSet kBasic{Param::kMaxTokens, Param::kTemperature, Param::kStop};

ChatRequest UserSays(std::string text, bool stream = true) {
  ChatRequest r;
  r.model = "test/model";
  r.stream = stream;
  r.max_tokens = 100;
  r.messages.push_back(Message{Role::kUser, {TextPart{std::move(text), {}}}, {}});
  return r;
}

Usage MakeUsage(int64_t prompt, int64_t completion) {
  Usage u;
  u.prompt_tokens = prompt;
  u.completion_tokens = completion;
  return u;
}

class CallDriverTest : public ::testing::Test {
 protected:
  // Two endpoints by default: primary, then fallback. Prices: 1000 / 2000
  // femto-USD per token (nano-USD per million), i.e. 1e-6 / 2e-6 nano-USD.
  void SetUp() override {
    primary = std::make_unique<FakeProvider>("Primary", kBasic);
    fallback = std::make_unique<FakeProvider>("Fallback", kBasic);
    BuildCatalog({primary.get(), fallback.get()});
  }

  // Config order (RoutingPolicy kOrdered) unless a test sets `policy`.
  void BuildCatalog(const std::vector<FakeProvider*>& providers) {
    router.reset();
    routing::Model m{"test/model", "Test", 4096, 0, {}, policy};
    for (auto* p : providers) {
      routing::Endpoint e;
      e.id = std::string(p->Name());
      e.provider_id = std::string(p->Name());
      e.provider = p;
      e.upstream_model = "up-" + std::string(p->Name());
      e.pricing = pricing;
      e.context_length = 4096;
      e.supported = p->SupportedParameters();
      e.max_concurrency = max_concurrency;
      m.endpoints.push_back(std::move(e));
    }
    std::vector<routing::Model> models;
    models.push_back(std::move(m));
    catalog = routing::Catalog(std::move(models));
    router = std::make_unique<routing::Router>(&catalog, router_options);
  }

  std::shared_ptr<CallDriver> Start(ChatRequest request, std::chrono::milliseconds timeout = 60s) {
    CallSpec spec;
    spec.request = std::move(request);
    spec.key.id = 7;
    spec.key.account_id = 3;
    spec.key.allowed_models = key_allowed_models;
    spec.key.account.provider_keys = key_provider_keys;
    spec.key.account.unreadable_provider_keys = key_unreadable_providers;
    spec.request_id = "gen-test-1";
    spec.received = executor->Now();
    spec.created_at = executor->WallNow();
    spec.deadline = executor->Now() + timeout;
    spec.session = session;
    spec.seed = ++calls_started;
    driver = CallDriver::Create(CallDeps{router.get(), &admission, &usage, &observer}, executor, std::move(spec), client,
                                [this] { ++done; });
    driver->Start();
    executor->RunUntilIdle();
    return driver;
  }

  std::shared_ptr<ManualExecutor> executor = std::make_shared<ManualExecutor>();
  std::shared_ptr<FakeClient> client = std::make_shared<FakeClient>();
  FakeAdmission admission;
  FakeUsage usage;
  FakeObserver observer;
  routing::RoutingPolicy policy{routing::RoutingPolicy::Strategy::kOrdered};
  routing::RouterOptions router_options;
  int max_concurrency = 0;
  Pricing pricing = Price(1'000'000'000, 2'000'000'000);
  uint64_t session = 0;
  uint64_t calls_started = 0;
  std::optional<std::vector<std::string>> key_allowed_models;
  std::map<std::string, std::string> key_provider_keys;
  std::set<std::string> key_unreadable_providers;
  routing::Catalog catalog;
  std::unique_ptr<routing::Router> router;
  std::unique_ptr<FakeProvider> primary;
  std::unique_ptr<FakeProvider> fallback;
  std::shared_ptr<CallDriver> driver;
  int done = 0;
};

// ---------------------------------------------------------------- tests

TEST_F(CallDriverTest, StreamsEventsThenMetersTheReportedUsage) {
  Start(UserSays("hello"));
  ASSERT_EQ(primary->calls.size(), 1u);
  EXPECT_EQ(primary->calls[0].upstream_model, "up-Primary");
  auto& sink = primary->calls[0].sink;
  sink->OnEvent(TextDelta{0, "Hel"});
  sink->OnEvent(TextDelta{0, "lo"});
  sink->OnEvent(FinishDelta{0, FinishReason::kStop, "stop"});
  sink->OnEvent(UsageDelta{MakeUsage(10, 2)});
  sink->OnComplete();
  executor->RunUntilIdle();

  ASSERT_TRUE(client->commit);
  EXPECT_EQ(client->commit->provider, "Primary");
  EXPECT_EQ(client->text, "Hello");
  ASSERT_TRUE(client->summary);
  EXPECT_EQ(client->summary->usage, MakeUsage(10, 2));
  EXPECT_FALSE(client->summary->usage_estimated);
  EXPECT_EQ(client->summary->cost.nano_usd, 10 * 1000 + 2 * 2000);
  ASSERT_EQ(usage.rows.size(), 1u);
  const auto& row = usage.rows[0];
  EXPECT_EQ(row.request_id, "gen-test-1");
  EXPECT_EQ(row.provider, "Primary");
  EXPECT_EQ(row.status, 200);
  EXPECT_EQ(row.cost.nano_usd, 14000);
  EXPECT_EQ(row.finish_reason, "stop");
  EXPECT_TRUE(row.streamed);
  EXPECT_EQ(admission.pending, 14000);
  EXPECT_EQ(admission.reserved, 0);
  EXPECT_EQ(admission.releases, 1);
  EXPECT_EQ(done, 1);
  EXPECT_EQ(executor->pending_timers(), 0);
}

TEST_F(CallDriverTest, FallsBackWhenPrimaryFailsBeforeAnyOutput) {
  Start(UserSays("hi"));
  // A usage report before any output does not commit the call.
  primary->calls[0].sink->OnEvent(UsageDelta{MakeUsage(5, 0)});
  primary->calls[0].sink->OnError(Error{ErrorCode::kUnavailable, "overloaded"});
  executor->RunUntilIdle();
  ASSERT_EQ(fallback->calls.size(), 1u);
  EXPECT_FALSE(client->commit);
  ASSERT_EQ(observer.failed.size(), 1u);
  EXPECT_EQ(observer.failed[0], std::make_pair(std::string("Primary"), 503));

  fallback->calls[0].sink->OnEvent(TextDelta{0, "ok"});
  fallback->calls[0].sink->OnEvent(FinishDelta{0, FinishReason::kStop, ""});
  fallback->calls[0].sink->OnComplete();
  executor->RunUntilIdle();
  ASSERT_TRUE(client->summary);
  EXPECT_EQ(client->commit->provider, "Fallback");
  // No usage reported by the fallback: estimated, never the primary's report.
  EXPECT_TRUE(client->summary->usage_estimated);
  ASSERT_EQ(usage.rows.size(), 1u);
  EXPECT_EQ(usage.rows[0].provider, "Fallback");
  EXPECT_TRUE(usage.rows[0].usage_estimated);
}

TEST_F(CallDriverTest, NeverFallsBackAfterTheFirstOutput) {
  Start(UserSays("hi"));
  auto& sink = primary->calls[0].sink;
  sink->OnEvent(TextDelta{0, "partial answer"});
  sink->OnError(Error{ErrorCode::kBadGateway, "upstream cut"});
  executor->RunUntilIdle();
  EXPECT_TRUE(fallback->calls.empty());
  ASSERT_TRUE(client->error);
  EXPECT_TRUE(client->failed_committed);
  EXPECT_EQ(client->error->code, ErrorCode::kBadGateway);
  EXPECT_EQ(client->error->provider_name, "Primary");
  // A broken stream is billed for what it delivered (estimated).
  ASSERT_EQ(usage.rows.size(), 1u);
  EXPECT_EQ(usage.rows[0].status, 502);
  EXPECT_TRUE(usage.rows[0].usage_estimated);
  EXPECT_GT(usage.rows[0].cost.nano_usd, 0);
}

TEST_F(CallDriverTest, ANonStreamedAnswerThatBreaksMidWayIsReplacedByTheNextEndpoint) {
  Start(UserSays("hi", /*stream=*/false));
  primary->calls[0].sink->OnEvent(TextDelta{0, "partial"});
  primary->calls[0].sink->OnError(Error{ErrorCode::kBadGateway, "upstream cut"});
  executor->RunUntilIdle();
  EXPECT_FALSE(client->commit) << "nothing reached the client";
  ASSERT_EQ(fallback->calls.size(), 1u);
  fallback->calls[0].sink->OnEvent(TextDelta{0, "whole"});
  fallback->calls[0].sink->OnEvent(FinishDelta{0, FinishReason::kStop, "stop"});
  fallback->calls[0].sink->OnEvent(UsageDelta{MakeUsage(4, 1)});
  fallback->calls[0].sink->OnComplete();
  executor->RunUntilIdle();
  ASSERT_TRUE(client->summary);
  EXPECT_EQ(client->text, "whole") << "only the answer that completed";
  EXPECT_EQ(client->commit->provider, "Fallback");
  ASSERT_EQ(usage.rows.size(), 1u);
  EXPECT_EQ(usage.rows[0].usage, MakeUsage(4, 1));
}

TEST_F(CallDriverTest, ABrokenNonStreamedCallDeliveredNothingAndCostsNothing) {
  BuildCatalog({primary.get()});
  Start(UserSays("hi", /*stream=*/false));
  primary->calls[0].sink->OnEvent(TextDelta{0, "partial"});
  primary->calls[0].sink->OnError(Error{ErrorCode::kBadGateway, "upstream cut"});
  executor->RunUntilIdle();
  ASSERT_TRUE(client->error);
  EXPECT_FALSE(client->failed_committed);
  ASSERT_EQ(usage.rows.size(), 1u);
  EXPECT_EQ(usage.rows[0].cost.nano_usd, 0);
  EXPECT_EQ(admission.pending, 0);
}

TEST_F(CallDriverTest, AnErrorFinishIsAFailureThatFallsBackBeforeTheCommit) {
  Start(UserSays("hi", /*stream=*/false));
  primary->calls[0].sink->OnEvent(TextDelta{0, "cut"});
  primary->calls[0].sink->OnEvent(FinishDelta{0, FinishReason::kError, "insufficient_system_resource"});
  primary->calls[0].sink->OnComplete();
  executor->RunUntilIdle();
  ASSERT_EQ(fallback->calls.size(), 1u) << "a cut answer is not an answer";
  ASSERT_EQ(observer.failed.size(), 1u);
  EXPECT_EQ(observer.failed[0].second, 502);
}

TEST_F(CallDriverTest, AnErrorFinishOfAStreamEndsItWithAnError) {
  BuildCatalog({primary.get()});
  Start(UserSays("hi"));
  primary->calls[0].sink->OnEvent(TextDelta{0, "cut"});
  primary->calls[0].sink->OnEvent(FinishDelta{0, FinishReason::kError, "insufficient_system_resource"});
  primary->calls[0].sink->OnComplete();
  executor->RunUntilIdle();
  ASSERT_TRUE(client->error);
  EXPECT_TRUE(client->failed_committed);
  EXPECT_NE(client->error->message.find("insufficient_system_resource"), std::string::npos);
  EXPECT_EQ(usage.rows.at(0).status, 502);
}

TEST_F(CallDriverTest, ANonStreamedClientThatLeavesIsBilledForWhatTheProviderDid) {
  Start(UserSays("a long prompt", /*stream=*/false));
  primary->calls[0].sink->OnEvent(UsageDelta{MakeUsage(50, 0)});
  primary->calls[0].sink->OnEvent(TextDelta{0, "some words"});
  executor->RunUntilIdle();
  driver->Cancel();
  executor->RunUntilIdle();
  primary->calls[0].sink->OnError(Error{ErrorCode::kCancelled, "request cancelled"});
  executor->RunUntilIdle();
  ASSERT_EQ(usage.rows.size(), 1u);
  EXPECT_EQ(usage.rows[0].status, 499);
  EXPECT_EQ(usage.rows[0].usage.prompt_tokens, 50);
  EXPECT_GT(usage.rows[0].cost.nano_usd, 0);
}

TEST_F(CallDriverTest, AnInvalidRequestIsNotRetriedAndLeavesNoRow) {
  Start(UserSays("hi"));
  primary->calls[0].sink->OnError(Error{ErrorCode::kInvalidArgument, "bad temperature", "temperature"});
  executor->RunUntilIdle();
  EXPECT_TRUE(fallback->calls.empty());
  ASSERT_TRUE(client->error);
  EXPECT_FALSE(client->failed_committed);
  EXPECT_EQ(client->error->param, "temperature");
  EXPECT_TRUE(usage.rows.empty());
  EXPECT_EQ(admission.reserved, 0);
}

TEST_F(CallDriverTest, TheLastEndpointsErrorIsTheAnswer) {
  Start(UserSays("hi"));
  primary->calls[0].sink->OnError(Error{ErrorCode::kUnavailable, "down"});
  executor->RunUntilIdle();
  Error limited{ErrorCode::kResourceExhausted, "slow down"};
  limited.retry_after = "7";
  limited.code_string = "rate_limit_exceeded";
  fallback->calls[0].sink->OnError(limited);
  executor->RunUntilIdle();
  ASSERT_TRUE(client->error);
  EXPECT_EQ(client->error->code, ErrorCode::kResourceExhausted);
  EXPECT_EQ(client->error->retry_after, "7");
  EXPECT_EQ(client->error->provider_name, "Fallback");
  ASSERT_EQ(usage.rows.size(), 1u);
  EXPECT_EQ(usage.rows[0].status, 429);
  EXPECT_EQ(usage.rows[0].cost.nano_usd, 0);
}

TEST_F(CallDriverTest, TheDeadlineCancelsTheProviderAndAnswers504) {
  Start(UserSays("hi"), 1000ms);
  ASSERT_FALSE(primary->calls[0].cancel.stop_requested());
  executor->Advance(999ms);
  EXPECT_FALSE(primary->calls[0].cancel.stop_requested());
  executor->Advance(1ms);
  EXPECT_TRUE(primary->calls[0].cancel.stop_requested());
  primary->calls[0].sink->OnError(Error{ErrorCode::kCancelled, "request cancelled"});
  executor->RunUntilIdle();
  EXPECT_TRUE(fallback->calls.empty()) << "a timed-out call is not retried";
  ASSERT_TRUE(client->error);
  EXPECT_EQ(client->error->code, ErrorCode::kUpstreamTimeout);
  ASSERT_EQ(usage.rows.size(), 1u);
  EXPECT_EQ(usage.rows[0].status, 504);
}

TEST_F(CallDriverTest, AProviderThatIgnoresCancellationIsAbandonedAfterTheGrace) {
  Start(UserSays("hi"), 1000ms);
  primary->calls[0].sink->OnEvent(TextDelta{0, "a"});
  executor->Advance(1000ms);
  EXPECT_TRUE(primary->calls[0].cancel.stop_requested());
  EXPECT_FALSE(client->ended);
  executor->Advance(CallDriver::kCancelGrace);
  ASSERT_TRUE(client->error);
  EXPECT_EQ(client->error->code, ErrorCode::kUpstreamTimeout);
  EXPECT_TRUE(client->failed_committed);
  EXPECT_EQ(done, 1);
  // Late events go nowhere.
  primary->calls[0].sink->OnEvent(TextDelta{0, "late"});
  primary->calls[0].sink->OnComplete();
  executor->RunUntilIdle();
  EXPECT_EQ(client->text, "a");
  EXPECT_EQ(usage.rows.size(), 1u);
}

TEST_F(CallDriverTest, AClientThatLeavesCancelsTheCallAndTheRowSays499) {
  Start(UserSays("hi"));
  primary->calls[0].sink->OnEvent(TextDelta{0, "some text"});
  executor->RunUntilIdle();
  driver->Cancel();
  executor->RunUntilIdle();
  EXPECT_TRUE(primary->calls[0].cancel.stop_requested());
  primary->calls[0].sink->OnEvent(TextDelta{0, " more"});
  primary->calls[0].sink->OnError(Error{ErrorCode::kCancelled, "request cancelled"});
  executor->RunUntilIdle();
  EXPECT_EQ(client->text, "some text") << "nothing is handed to a client that left";
  ASSERT_EQ(usage.rows.size(), 1u);
  EXPECT_EQ(usage.rows[0].status, 499);
  EXPECT_TRUE(usage.rows[0].cancelled);
  EXPECT_GT(usage.rows[0].cost.nano_usd, 0) << "a stream that reached the client is billed";
}

TEST_F(CallDriverTest, ShutdownBeforeAnyOutputAnswers503) {
  Start(UserSays("hi"));
  driver->Shutdown();
  executor->RunUntilIdle();
  EXPECT_TRUE(primary->calls[0].cancel.stop_requested());
  primary->calls[0].sink->OnError(Error{ErrorCode::kCancelled, "request cancelled"});
  executor->RunUntilIdle();
  ASSERT_TRUE(client->error);
  EXPECT_EQ(client->error->code, ErrorCode::kUnavailable);
  EXPECT_FALSE(client->failed_committed);
}

TEST_F(CallDriverTest, UnsupportedParametersAreDroppedAndNamed) {
  auto req = UserSays("hi");
  req.top_k = 40;
  req.temperature = 0.5;
  Start(std::move(req));
  ASSERT_EQ(primary->calls.size(), 1u);
  EXPECT_FALSE(primary->calls[0].request.top_k) << "the provider never sees what it does not support";
  EXPECT_EQ(primary->calls[0].request.temperature, 0.5);
  primary->calls[0].sink->OnEvent(TextDelta{0, "x"});
  executor->RunUntilIdle();
  ASSERT_TRUE(client->commit);
  EXPECT_EQ(client->commit->dropped, ParameterSet{Param::kTopK});
}

TEST_F(CallDriverTest, RequireParametersSkipsEndpointsThatLackOne) {
  auto capable = std::make_unique<FakeProvider>("Capable", ParameterSet{Param::kMaxTokens, Param::kTopK});
  BuildCatalog({primary.get(), capable.get()});
  auto req = UserSays("hi");
  req.top_k = 5;
  req.provider.require_parameters = true;
  Start(std::move(req));
  EXPECT_TRUE(primary->calls.empty());
  ASSERT_EQ(capable->calls.size(), 1u);
  EXPECT_EQ(capable->calls[0].request.top_k, 5);
}

TEST_F(CallDriverTest, RequireParametersWithNoCapableEndpointIs400NamingIt) {
  auto req = UserSays("hi");
  req.top_k = 5;
  req.provider.require_parameters = true;
  Start(std::move(req));
  EXPECT_TRUE(primary->calls.empty());
  ASSERT_TRUE(client->error);
  EXPECT_EQ(client->error->code, ErrorCode::kInvalidArgument);
  EXPECT_EQ(client->error->param, "top_k");
  EXPECT_TRUE(usage.rows.empty());
  EXPECT_EQ(admission.reservations, 0);
}

TEST_F(CallDriverTest, ToolsAreNeverDroppedSilently) {
  auto req = UserSays("weather?");
  req.tools.push_back(ToolDefinition{"get_weather", "", {}, {}, {}});
  Start(std::move(req));
  EXPECT_TRUE(primary->calls.empty());
  ASSERT_TRUE(client->error);
  EXPECT_EQ(client->error->code, ErrorCode::kInvalidArgument);
  EXPECT_EQ(client->error->param, "tools");
  EXPECT_NE(client->error->message.find("tools"), std::string::npos);
}

TEST_F(CallDriverTest, ImagesGoOnlyToEndpointsThatTakeThem) {
  auto vision = std::make_unique<FakeProvider>("Vision", ParameterSet{Param::kMaxTokens, Param::kImageInput});
  BuildCatalog({primary.get(), vision.get()});
  auto req = UserSays("what is this?");
  req.messages[0].parts.push_back(ImagePart{"data:image/png;base64,iVBORw0KGgo=", "", {}});
  Start(std::move(req));
  EXPECT_TRUE(primary->calls.empty());
  ASSERT_EQ(vision->calls.size(), 1u);
}

TEST_F(CallDriverTest, DocumentsGoOnlyToEndpointsThatTakeThem) {
  auto req = UserSays("summarize");
  req.messages[0].parts.push_back(OpaquePart{ApiFlavor::kAnthropicMessages, {{"type", "document"}}, true});
  Start(std::move(req));
  EXPECT_TRUE(primary->calls.empty());
  ASSERT_TRUE(client->error);
  EXPECT_EQ(client->error->code, ErrorCode::kInvalidArgument);
  EXPECT_EQ(client->error->param, "messages");
  EXPECT_NE(client->error->message.find("document input"), std::string::npos);
}

TEST_F(CallDriverTest, AnAnswerCutByTheDeadlineNeverLooksComplete) {
  // A provider that ends normally when told to stop (the local engine does).
  Start(UserSays("hi"), 1000ms);
  primary->calls[0].sink->OnEvent(TextDelta{0, "some"});
  executor->Advance(1000ms);
  ASSERT_TRUE(primary->calls[0].cancel.stop_requested());
  primary->calls[0].sink->OnEvent(FinishDelta{0, FinishReason::kLength, "length"});
  primary->calls[0].sink->OnEvent(UsageDelta{MakeUsage(3, 1)});
  primary->calls[0].sink->OnComplete();
  executor->RunUntilIdle();
  ASSERT_TRUE(client->error) << "a stream cut by the deadline ends with an error, not a success";
  EXPECT_EQ(client->error->code, ErrorCode::kUpstreamTimeout);
  EXPECT_TRUE(client->failed_committed);
  ASSERT_EQ(usage.rows.size(), 1u);
  EXPECT_EQ(usage.rows[0].status, 504);
  EXPECT_EQ(usage.rows[0].usage.prompt_tokens, 3) << "the reported usage is kept";
}

TEST_F(CallDriverTest, NoCreditIs402AndReservesNothing) {
  admission.admit = false;
  Start(UserSays("hi"));
  EXPECT_TRUE(primary->calls.empty());
  ASSERT_TRUE(client->error);
  EXPECT_EQ(client->error->code, ErrorCode::kPaymentRequired);
  EXPECT_EQ(client->error->message, "key limit: not enough") << "the admission's message, which names the limit";
  EXPECT_EQ(admission.releases, 0);
  EXPECT_TRUE(usage.rows.empty());
  EXPECT_EQ(done, 1);
}

TEST_F(CallDriverTest, AnAdmissionAnsweredLaterStartsTheCallThen) {
  admission.defer = true;
  Start(UserSays("hi"));
  EXPECT_TRUE(primary->calls.empty()) << "nothing starts before the admission answers";
  ASSERT_EQ(admission.waiting.size(), 1u);
  admission.waiting[0]();
  executor->RunUntilIdle();
  ASSERT_EQ(primary->calls.size(), 1u);
  primary->calls[0].sink->OnEvent(TextDelta{0, "ok"});
  primary->calls[0].sink->OnEvent(UsageDelta{MakeUsage(3, 1)});
  primary->calls[0].sink->OnComplete();
  executor->RunUntilIdle();
  ASSERT_TRUE(client->summary);
  EXPECT_EQ(usage.rows.at(0).lease_holder, "replica-1:boot");
  EXPECT_EQ(usage.rows.at(0).leased_pots, (std::vector<billing::LeasedPot>{{"credits", 3, {}}}))
      << "the usage writer takes the cost off the pots the call was admitted under";
  EXPECT_EQ(admission.reserved, 0);
}

TEST_F(CallDriverTest, AClientGoneWhileTheAdmissionIsPendingStartsNothingAndSettlesZero) {
  admission.defer = true;
  Start(UserSays("hi"));
  driver->Cancel();
  executor->RunUntilIdle();
  admission.waiting.at(0)();
  executor->RunUntilIdle();
  EXPECT_TRUE(primary->calls.empty());
  ASSERT_TRUE(client->error);
  EXPECT_EQ(client->error->code, ErrorCode::kCancelled);
  EXPECT_EQ(admission.reserved, 0);
  EXPECT_EQ(admission.pending, 0);
  EXPECT_EQ(done, 1);
}

TEST_F(CallDriverTest, TheClientHearsTheEndOnlyOnceTheUsageRowIsDurable) {
  usage.defer_durable = true;
  Start(UserSays("hi"));
  primary->calls[0].sink->OnEvent(TextDelta{0, "ok"});
  primary->calls[0].sink->OnEvent(UsageDelta{MakeUsage(3, 1)});
  primary->calls[0].sink->OnComplete();
  executor->RunUntilIdle();
  ASSERT_EQ(usage.rows.size(), 1u);
  EXPECT_FALSE(client->ended) << "the last byte waits for the spool";
  EXPECT_EQ(done, 0);
  usage.durable.at(0)();
  executor->RunUntilIdle();
  EXPECT_TRUE(client->summary);
  EXPECT_EQ(done, 1);
}

TEST_F(CallDriverTest, TheChargeNeverExceedsTheReservation) {
  BuildCatalog({primary.get()});
  Start(UserSays("hi"));
  const int64_t worst = admission.reserved;
  // A report within the bounds BillableUsage allows but above the reservation.
  primary->calls[0].sink->OnEvent(TextDelta{0, "ok"});
  primary->calls[0].sink->OnEvent(UsageDelta{MakeUsage(4000, 100 + 1000)});
  primary->calls[0].sink->OnComplete();
  executor->RunUntilIdle();
  ASSERT_TRUE(client->summary);
  EXPECT_EQ(client->summary->cost.nano_usd, worst);
  EXPECT_EQ(usage.rows.at(0).cost.nano_usd, worst);
  EXPECT_EQ(usage.rows.at(0).attempts.at(0).cost.nano_usd, 4000 * 1000 + 1100 * 2000)
      << "the attempt keeps what it cost the operator";
}

TEST_F(CallDriverTest, ExplicitZeroUsageIsBilledAsZero) {
  Start(UserSays("hi"));
  primary->calls[0].sink->OnEvent(TextDelta{0, "cached answer"});
  primary->calls[0].sink->OnEvent(UsageDelta{MakeUsage(0, 0)});
  primary->calls[0].sink->OnComplete();
  executor->RunUntilIdle();
  ASSERT_TRUE(client->summary);
  EXPECT_EQ(client->summary->cost.nano_usd, 0);
  EXPECT_FALSE(usage.rows.at(0).usage_estimated);
  EXPECT_EQ(usage.rows.at(0).usage, MakeUsage(0, 0));
}

TEST_F(CallDriverTest, AKeyLimitedToOtherModelsIs403) {
  key_allowed_models = std::vector<std::string>{"other/model"};
  Start(UserSays("hi"));
  ASSERT_TRUE(client->error);
  EXPECT_EQ(client->error->code, ErrorCode::kPermissionDenied);
  EXPECT_NE(client->error->message.find("other/model"), std::string::npos);
  EXPECT_TRUE(primary->calls.empty());
  EXPECT_EQ(admission.reservations, 0);
}

TEST_F(CallDriverTest, TheAccountsOwnProviderKeyIsUsedAndOnlyTheFeeCharged) {
  key_provider_keys["Primary"] = "sk-own-key";
  Start(UserSays("hi"));
  ASSERT_EQ(primary->calls.size(), 1u);
  EXPECT_EQ(primary->calls[0].api_key, "sk-own-key");
  primary->calls[0].sink->OnEvent(TextDelta{0, "ok"});
  primary->calls[0].sink->OnEvent(UsageDelta{MakeUsage(10, 2)});
  primary->calls[0].sink->OnComplete();
  executor->RunUntilIdle();
  const auto& row = usage.rows.at(0);
  EXPECT_TRUE(row.byok);
  ASSERT_TRUE(row.provider_cost);
  EXPECT_EQ(row.provider_cost->nano_usd, 14000);
  EXPECT_EQ(row.cost.nano_usd, 700) << "5% of the provider's cost";
  EXPECT_NE(row.price_snapshot.find("\"byok_fee_ppm\":50000"), std::string::npos) << row.price_snapshot;
}

TEST_F(CallDriverTest, ARejectedOwnKeyIsNamedAsTheAccountsOwn) {
  BuildCatalog({primary.get()});
  key_provider_keys["Primary"] = "sk-own-key";
  Start(UserSays("hi"));
  Error rejected{ErrorCode::kBadGateway, "the provider rejected Tollgate's credentials (HTTP 401)", "",
                 std::string(kProviderCredentialsRejected)};
  primary->calls.at(0).sink->OnError(rejected);
  executor->RunUntilIdle();
  ASSERT_TRUE(client->error);
  EXPECT_NE(client->error->message.find("your account's own API key"), std::string::npos) << client->error->message;
  EXPECT_EQ(client->error->message.find("sk-own-key"), std::string::npos);
}

TEST_F(CallDriverTest, AnOwnKeyThisGatewayCannotReadNeverFallsBackToTheOperatorsKey) {
  key_unreadable_providers = {"Primary"};
  Start(UserSays("hi"));
  EXPECT_TRUE(primary->calls.empty());
  ASSERT_EQ(fallback->calls.size(), 1u) << "the other provider still serves";
  fallback->calls[0].sink->OnComplete();
  executor->RunUntilIdle();

  client = std::make_shared<FakeClient>();
  key_unreadable_providers = {"Primary", "Fallback"};
  Start(UserSays("hi"));
  ASSERT_TRUE(client->error);
  EXPECT_EQ(client->error->code, ErrorCode::kUnavailable);
  EXPECT_EQ(client->error->code_string, "byok_key_unreadable");
  EXPECT_EQ(primary->calls.size(), 0u);
  EXPECT_EQ(fallback->calls.size(), 1u);
}

TEST_F(CallDriverTest, TheUsageRowKeepsThePricesItsCostCameFrom) {
  Start(UserSays("hi"));
  primary->calls[0].sink->OnEvent(TextDelta{0, "ok"});
  primary->calls[0].sink->OnEvent(UsageDelta{MakeUsage(10, 2)});
  primary->calls[0].sink->OnComplete();
  executor->RunUntilIdle();
  const auto& snap = usage.rows.at(0).price_snapshot;
  EXPECT_NE(snap.find("\"endpoint\":\"Primary\""), std::string::npos) << snap;
  EXPECT_NE(snap.find("\"prompt\":1000000000"), std::string::npos) << snap;
  EXPECT_NE(snap.find("\"completion\":2000000000"), std::string::npos) << snap;
}

TEST_F(CallDriverTest, ASoftLimitIsReportedAtTheCommit) {
  admission.soft_limit = true;
  Start(UserSays("hi"));
  primary->calls[0].sink->OnEvent(TextDelta{0, "ok"});
  executor->RunUntilIdle();
  ASSERT_TRUE(client->commit);
  EXPECT_EQ(client->commit->soft_limit, "key");
}

TEST_F(CallDriverTest, UnknownModelIs404WithoutARow) {
  auto req = UserSays("hi");
  req.model = "nobody/none";
  Start(std::move(req));
  ASSERT_TRUE(client->error);
  EXPECT_EQ(client->error->code, ErrorCode::kNotFound);
  EXPECT_TRUE(usage.rows.empty());
}

TEST_F(CallDriverTest, ReservesTheWorstCaseAtTheDearestEndpoint) {
  Start(UserSays("hi"));
  // max_tokens 100 at 2000 nano-USD per token at most, plus the prompt.
  EXPECT_GE(admission.reserved, 100 * 2000);
  primary->calls[0].sink->OnComplete();
  executor->RunUntilIdle();
  EXPECT_EQ(admission.reserved, 0);
}

TEST_F(CallDriverTest, ASlowClientHoldsTheProviderBackWithinBounds) {
  Start(UserSays("go"));
  auto sink = primary->calls[0].sink;
  sink->OnEvent(TextDelta{0, "first"});
  executor->RunUntilIdle();
  ASSERT_TRUE(client->commit);
  client->SetReady(false);

  // The provider produces as long as Ready lets it.
  std::atomic<bool> resumed{false};
  std::size_t produced = 0;
  const std::string piece(1024, 'x');
  while (sink->Ready([&] { resumed = true; })) {
    sink->OnEvent(TextDelta{0, piece});
    produced += piece.size();
    ASSERT_LT(produced, 10u * CallDriver::kHighWaterBytes) << "Ready never said stop";
    executor->RunUntilIdle();
  }
  EXPECT_GE(produced, CallDriver::kHighWaterBytes / 2);
  EXPECT_LE(client->text.size(), 2 * piece.size()) << "nothing is handed to a client that is not ready";
  EXPECT_FALSE(resumed);

  client->SetReady(true);
  executor->RunUntilIdle();
  EXPECT_TRUE(resumed) << "the provider is resumed once the client caught up";
  EXPECT_EQ(client->text.size(), std::string("first").size() + produced);
  sink->OnComplete();
  executor->RunUntilIdle();
  EXPECT_TRUE(client->summary);
}

TEST_F(CallDriverTest, EventsFromAProviderThreadArriveInOrder) {
  primary->on_start = [](FakeProvider::Call& call) {
    std::thread([sink = call.sink] {
      for (int i = 0; i < 1000; ++i) sink->OnEvent(TextDelta{0, std::to_string(i) + ","});
      sink->OnEvent(FinishDelta{0, FinishReason::kStop, ""});
      sink->OnComplete();
    }).detach();
  };
  Start(UserSays("count"));
  for (int i = 0; i < 2000 && !client->ended; ++i) {
    executor->RunUntilIdle();
    std::this_thread::sleep_for(1ms);
  }
  ASSERT_TRUE(client->summary);
  std::string expected;
  for (int i = 0; i < 1000; ++i) expected += std::to_string(i) + ",";
  EXPECT_EQ(client->text, expected);
}

TEST(CallDriverHelpers, UpstreamUsageIsBoundedByWhatTheRequestAllows) {
  routing::Endpoint e;
  e.pricing = Price(1000, 2000);
  e.context_length = 8192;
  ChatRequest r = UserSays("hello there");
  r.max_tokens = 10;
  ChatResponse out;
  out.choices.resize(1);
  out.choices[0].text = "hi";
  // 1e30 completion tokens from a broken or hostile upstream.
  Billable b = BillableUsage(r, out, Usage{5, 1'000'000'000'000, 0, 0, 0}, true, e);
  EXPECT_EQ(b.usage.completion_tokens, 10 + 1024);
  EXPECT_TRUE(b.estimated);
  // Explicit zero usage from a complete call is billed as zero, not re-estimated.
  b = BillableUsage(r, out, Usage{0, 0, 0, 0, 0}, true, e);
  EXPECT_EQ(b.usage, (Usage{0, 0, 0, 0, 0}));
  EXPECT_FALSE(b.estimated);
  // Negative counts are not counts: zero.
  b = BillableUsage(r, out, Usage{-5, -1, 0, 0, 0}, true, e);
  EXPECT_EQ(b.usage, (Usage{0, 0, 0, 0, 0}));
  // A broken call's report is raised to what its output shows.
  out.choices[0].text = std::string(400, 'x');
  b = BillableUsage(r, out, Usage{5, 1, 0, 0, 0}, false, e);
  EXPECT_EQ(b.usage.completion_tokens, 100);
  EXPECT_TRUE(b.estimated);
  // An honest report is taken as it is.
  out.choices[0].text = "hi";
  b = BillableUsage(r, out, Usage{7, 2, 3, 0, 1}, true, e);
  EXPECT_EQ(b.usage, (Usage{7, 2, 3, 0, 1}));
  EXPECT_FALSE(b.estimated);
  // Nothing reported: the estimate.
  EXPECT_TRUE(BillableUsage(r, out, std::nullopt, true, e).estimated);
}

TEST(CallDriverHelpers, EstimateCountsFourBytesPerTokenAndImages) {
  ChatRequest r = UserSays(std::string(400, 'a'));
  ChatResponse out;
  out.choices.resize(1);
  out.choices[0].text = std::string(40, 'b');
  Usage u = EstimateUsage(r, out);
  EXPECT_EQ(u.prompt_tokens, (400 + 8) / 4 + 1);
  EXPECT_EQ(u.completion_tokens, 10);
  r.messages[0].parts.push_back(ImagePart{"https://example.com/cat.png", "", {}});
  EXPECT_EQ(EstimateUsage(r, out).prompt_tokens, (400 + 8) / 4 + 1 + 1000);
}

// ---------------------------------------------------------------- routing

void Answer(StreamSink& sink, const std::string& text, Usage usage) {
  sink.OnEvent(TextDelta{0, text});
  sink.OnEvent(FinishDelta{0, FinishReason::kStop, "stop"});
  sink.OnEvent(UsageDelta{usage});
  sink.OnComplete();
}

TEST_F(CallDriverTest, EveryAttemptIsRecordedBesideTheRowAndOnlyTheServedOneIsCharged) {
  Start(UserSays("hi"));
  primary->calls[0].sink->OnError(Error{ErrorCode::kUnavailable, "overloaded"});
  executor->RunUntilIdle();
  Answer(*fallback->calls[0].sink, "ok", MakeUsage(10, 2));
  executor->RunUntilIdle();
  ASSERT_EQ(usage.rows.size(), 1u);
  const auto& row = usage.rows[0];
  EXPECT_EQ(row.endpoint_id, "Fallback");
  ASSERT_EQ(row.attempts.size(), 2u);
  EXPECT_EQ(row.attempts[0].attempt, 1);
  EXPECT_EQ(row.attempts[0].endpoint_id, "Primary");
  EXPECT_EQ(row.attempts[0].outcome, "failed");
  EXPECT_EQ(row.attempts[0].status, 503);
  EXPECT_EQ(row.attempts[0].cost.nano_usd, 0) << "an upstream error answer costs nothing";
  EXPECT_EQ(row.attempts[1].outcome, "served");
  EXPECT_EQ(row.attempts[1].cost, row.cost);
  EXPECT_EQ(row.cost.nano_usd, 14000);
  EXPECT_EQ(admission.pending, 14000);
  // Routing learned both outcomes and freed both slots.
  EXPECT_EQ(router->health(catalog.models()[0].endpoints[0]).Snapshot(executor->Now()).error_rate, 1.0);
  EXPECT_EQ(router->health(catalog.models()[0].endpoints[0]).Snapshot(executor->Now()).in_flight, 0);
  EXPECT_EQ(router->health(catalog.models()[0].endpoints[1]).Snapshot(executor->Now()).in_flight, 0);
}

TEST_F(CallDriverTest, A429CoolsTheEndpointDownForItsRetryAfter) {
  Start(UserSays("hi"));
  Error limited{ErrorCode::kResourceExhausted, "slow down"};
  limited.retry_after = "30";
  primary->calls[0].sink->OnError(limited);
  executor->RunUntilIdle();
  Answer(*fallback->calls[0].sink, "ok", MakeUsage(1, 1));
  executor->RunUntilIdle();
  EXPECT_EQ(usage.rows[0].attempts[0].outcome, "rate_limited");

  // The next call does not try the primary while it cools down...
  client = std::make_shared<FakeClient>();
  Start(UserSays("again"));
  EXPECT_EQ(primary->calls.size(), 1u);
  ASSERT_EQ(fallback->calls.size(), 2u);
  Answer(*fallback->calls[1].sink, "ok", MakeUsage(1, 1));
  executor->RunUntilIdle();
  // ...and goes back to it once the 30 s are over.
  executor->Advance(30s);
  client = std::make_shared<FakeClient>();
  Start(UserSays("later"));
  EXPECT_EQ(primary->calls.size(), 2u);
}

// A provider at capacity (the local engine's full queue) passes the call on
// and keeps its health: no cooldown, no retry on it.
TEST_F(CallDriverTest, AtCapacityMovesOnWithoutCoolingTheEndpointDown) {
  Start(UserSays("hi"));
  Error full{ErrorCode::kResourceExhausted, "queue full"};
  full.retry_after = "1";
  full.code_string = "at_capacity";
  primary->calls[0].sink->OnError(full);
  executor->RunUntilIdle();
  ASSERT_EQ(fallback->calls.size(), 1u);
  Answer(*fallback->calls[0].sink, "ok", MakeUsage(1, 1));
  executor->RunUntilIdle();
  EXPECT_EQ(usage.rows[0].attempts[0].outcome, "at_capacity");
  EXPECT_EQ(primary->calls.size(), 1u);
  const auto health = router->health(catalog.models()[0].endpoints[0]).Snapshot(executor->Now());
  EXPECT_EQ(health.availability, routing::Availability::kAvailable);
  EXPECT_EQ(health.error_rate, 0.0);
  // The next call may go to the primary at once.
  client = std::make_shared<FakeClient>();
  Start(UserSays("again"));
  EXPECT_EQ(primary->calls.size(), 2u);
}

TEST_F(CallDriverTest, TheClientIsToldToWaitInWholeSecondsNeverTheUpstreamsRawText) {
  BuildCatalog({primary.get()});
  Error limited{ErrorCode::kResourceExhausted, "slow down"};
  limited.retry_after = "999999999999999999999";  // no int64 holds it
  Start(UserSays("hi"));
  primary->calls[0].sink->OnError(limited);
  executor->RunUntilIdle();
  ASSERT_TRUE(client->error);
  EXPECT_EQ(client->error->retry_after, "86400") << "capped at a day";

  // An HTTP-date (RFC 9110) counts from now.
  executor->Advance(std::chrono::hours(25));
  client = std::make_shared<FakeClient>();
  char date[64];
  const std::time_t at = std::chrono::system_clock::to_time_t(executor->WallNow() + 30s);
  std::tm tm{};
  gmtime_r(&at, &tm);
  std::strftime(date, sizeof date, "%a, %d %b %Y %H:%M:%S GMT", &tm);
  limited.retry_after = date;
  Start(UserSays("again"));
  ASSERT_EQ(primary->calls.size(), 2u);
  primary->calls[1].sink->OnError(limited);
  executor->RunUntilIdle();
  ASSERT_TRUE(client->error);
  const int told = std::stoi(client->error->retry_after);
  EXPECT_GE(told, 29);
  EXPECT_LE(told, 31);
}

TEST_F(CallDriverTest, WhenEveryEndpointSaid429TheAnswerCarriesTheSoonestCooldown) {
  Error with{ErrorCode::kResourceExhausted, "slow down"};
  with.retry_after = "3";
  const Error without{ErrorCode::kResourceExhausted, "slow down"};
  Start(UserSays("hi"));
  primary->calls[0].sink->OnError(with);
  executor->RunUntilIdle();
  fallback->calls[0].sink->OnError(without);
  executor->RunUntilIdle();
  ASSERT_TRUE(client->error);
  EXPECT_EQ(client->error->code, ErrorCode::kResourceExhausted);
  EXPECT_EQ(client->error->retry_after, "3") << "the primary is back first";
}

TEST_F(CallDriverTest, AFallbackAfterAQuickFailureGetsItsOwnHedgeDelay) {
  policy.hedge_after = 500ms;
  auto third = std::make_unique<FakeProvider>("Third", kBasic);
  BuildCatalog({primary.get(), fallback.get(), third.get()});
  Start(UserSays("hi"));
  executor->Advance(400ms);
  primary->calls[0].sink->OnError(Error{ErrorCode::kUnavailable, "overloaded"});
  executor->RunUntilIdle();
  ASSERT_EQ(fallback->calls.size(), 1u);
  executor->Advance(400ms);
  EXPECT_TRUE(third->calls.empty()) << "500 ms from the fallback's start, not the first attempt's";
  executor->Advance(100ms);
  EXPECT_EQ(third->calls.size(), 1u);
}

TEST_F(CallDriverTest, RetriesTheSameEndpointWithBackoffWhenThePolicySaysSo) {
  policy.retries = 2;
  policy.retry_backoff = 100ms;
  BuildCatalog({primary.get(), fallback.get()});
  Start(UserSays("hi"));
  primary->calls[0].sink->OnError(Error{ErrorCode::kBadGateway, "reset"});
  executor->RunUntilIdle();
  EXPECT_EQ(primary->calls.size(), 1u) << "waits for the backoff";
  executor->Advance(100ms);
  ASSERT_EQ(primary->calls.size(), 2u);
  primary->calls[1].sink->OnError(Error{ErrorCode::kBadGateway, "reset"});
  executor->RunUntilIdle();
  executor->Advance(150ms);
  EXPECT_EQ(primary->calls.size(), 2u) << "the second backoff is 200 ms";
  executor->Advance(50ms);
  ASSERT_EQ(primary->calls.size(), 3u);
  primary->calls[2].sink->OnError(Error{ErrorCode::kBadGateway, "reset"});
  executor->RunUntilIdle();
  ASSERT_EQ(fallback->calls.size(), 1u) << "retries spent: the next endpoint";
  Answer(*fallback->calls[0].sink, "ok", MakeUsage(1, 1));
  executor->RunUntilIdle();
  EXPECT_EQ(usage.rows[0].attempts.size(), 4u);
}

TEST_F(CallDriverTest, ARequestErrorAfterAFallbackKeepsTheAttemptsOnRecord) {
  Start(UserSays("hi"));
  primary->calls[0].sink->OnError(Error{ErrorCode::kUnavailable, "overloaded"});
  executor->RunUntilIdle();
  fallback->calls[0].sink->OnError(Error{ErrorCode::kInvalidArgument, "bad image", "messages"});
  executor->RunUntilIdle();
  ASSERT_TRUE(client->error);
  EXPECT_EQ(client->error->code, ErrorCode::kInvalidArgument);
  ASSERT_EQ(usage.rows.size(), 1u);
  EXPECT_EQ(usage.rows[0].status, 400);
  EXPECT_EQ(usage.rows[0].cost.nano_usd, 0);
  ASSERT_EQ(usage.rows[0].attempts.size(), 2u);
  EXPECT_EQ(usage.rows[0].attempts[1].outcome, "rejected");
}

TEST_F(CallDriverTest, HedgesAfterTheConfiguredDelayAndTheFirstToAnswerWins) {
  policy.hedge_after = 500ms;
  BuildCatalog({primary.get(), fallback.get()});
  Start(UserSays("hi"));
  ASSERT_EQ(primary->calls.size(), 1u);
  executor->Advance(499ms);
  EXPECT_TRUE(fallback->calls.empty());
  executor->Advance(1ms);
  ASSERT_EQ(fallback->calls.size(), 1u) << "no first byte after 500 ms: the next endpoint starts too";
  fallback->calls[0].sink->OnEvent(TextDelta{0, "fast"});
  executor->RunUntilIdle();
  EXPECT_TRUE(primary->calls[0].cancel.stop_requested()) << "the loser is cancelled";
  EXPECT_EQ(client->commit->provider, "Fallback");
  // The loser's late output never reaches the client.
  primary->calls[0].sink->OnEvent(TextDelta{0, "slow"});
  primary->calls[0].sink->OnError(Error{ErrorCode::kCancelled, "cancelled"});
  fallback->calls[0].sink->OnEvent(FinishDelta{0, FinishReason::kStop, "stop"});
  fallback->calls[0].sink->OnEvent(UsageDelta{MakeUsage(3, 1)});
  fallback->calls[0].sink->OnComplete();
  executor->RunUntilIdle();
  EXPECT_EQ(client->text, "fast");
  ASSERT_EQ(usage.rows.size(), 1u);
  const auto& row = usage.rows[0];
  ASSERT_EQ(row.attempts.size(), 2u);
  EXPECT_EQ(row.attempts[0].outcome, "hedge_lost");
  EXPECT_GT(row.attempts[0].cost.nano_usd, 0) << "the operator sees what the loser cost";
  EXPECT_EQ(row.attempts[1].outcome, "served");
  EXPECT_EQ(row.cost, row.attempts[1].cost) << "the caller pays only the winner";
  EXPECT_EQ(admission.pending, row.cost.nano_usd);
}

TEST_F(CallDriverTest, NoHedgeWhenTheFirstEndpointAnsweredInTime) {
  policy.hedge_after = 500ms;
  BuildCatalog({primary.get(), fallback.get()});
  Start(UserSays("hi", /*stream=*/false));
  primary->calls[0].sink->OnEvent(UsageDelta{MakeUsage(3, 0)});
  executor->RunUntilIdle();
  executor->Advance(1s);
  EXPECT_TRUE(fallback->calls.empty());
}

TEST_F(CallDriverTest, AFullEndpointSpillsOverToTheNext) {
  max_concurrency = 1;
  BuildCatalog({primary.get(), fallback.get()});
  Start(UserSays("one"));
  auto first = driver;
  auto first_client = client;
  client = std::make_shared<FakeClient>();
  Start(UserSays("two"));
  EXPECT_EQ(primary->calls.size(), 1u);
  EXPECT_EQ(fallback->calls.size(), 1u) << "the primary is at its cap: overflow";
}

TEST_F(CallDriverTest, CallsBeyondEveryEndpointsCapacityWaitThenGetA429) {
  max_concurrency = 1;
  router_options.queue_timeout = 2s;
  BuildCatalog({primary.get()});
  Start(UserSays("one"));
  auto first_client = client;
  auto first = driver;
  client = std::make_shared<FakeClient>();
  Start(UserSays("two"));
  auto second = driver;
  auto second_client = client;
  EXPECT_EQ(primary->calls.size(), 1u);
  EXPECT_EQ(router->queued(catalog.models()[0]), 1u);
  // The first call ends: the waiting one gets the slot.
  Answer(*primary->calls[0].sink, "a", MakeUsage(1, 1));
  executor->RunUntilIdle();
  ASSERT_EQ(primary->calls.size(), 2u);
  EXPECT_EQ(router->queued(catalog.models()[0]), 0u);

  // A third waits, and nothing frees in time: 429 with Retry-After.
  client = std::make_shared<FakeClient>();
  Start(UserSays("three"));
  executor->Advance(2s);
  ASSERT_TRUE(client->error);
  EXPECT_EQ(client->error->code, ErrorCode::kResourceExhausted);
  EXPECT_FALSE(client->error->retry_after.empty());
  EXPECT_EQ(primary->calls.size(), 2u);
  EXPECT_EQ(router->queued(catalog.models()[0]), 0u);
}

TEST_F(CallDriverTest, AConversationSticksToTheEndpointThatServedIt) {
  policy.strategy = routing::RoutingPolicy::Strategy::kShares;
  pricing.cached_prompt = TokenPrice{100'000'000};  // cache reads 10x cheaper: stickiness pays
  BuildCatalog({primary.get(), fallback.get()});
  session = 42;
  std::vector<FakeProvider*> served;
  for (int i = 0; i < 12; ++i) {
    client = std::make_shared<FakeClient>();
    const size_t before = fallback->calls.size();
    Start(UserSays("hi"));
    FakeProvider* p = fallback->calls.size() > before ? fallback.get() : primary.get();
    Answer(*p->calls.back().sink, "ok", MakeUsage(1, 1));
    executor->RunUntilIdle();
    served.push_back(p);
  }
  for (FakeProvider* p : served) EXPECT_EQ(p, served.front()) << "every call went back to the first endpoint";

  // Without a session the same draws spread over both endpoints.
  session = 0;
  std::set<FakeProvider*> seen;
  for (int i = 0; i < 40; ++i) {
    client = std::make_shared<FakeClient>();
    const size_t before = fallback->calls.size();
    Start(UserSays("hi"));
    FakeProvider* p = fallback->calls.size() > before ? fallback.get() : primary.get();
    Answer(*p->calls.back().sink, "ok", MakeUsage(1, 1));
    executor->RunUntilIdle();
    seen.insert(p);
  }
  EXPECT_EQ(seen.size(), 2u);
}

}  // namespace
}  // namespace tollgate::gateway
