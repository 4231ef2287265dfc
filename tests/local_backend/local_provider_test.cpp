#include "tollgate/local_backend/local_provider.hpp"

#include "tollgate/local_backend/cuda_backend.hpp"
#include "tollgate/local_backend/tokenizer.hpp"
#include "recording_sink.hpp"
#include "test_model.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <optional>
#include <thread>

namespace tollgate::local_backend {
namespace {

using namespace std::chrono_literals;

using test_support::RecordingSink;

class LocalProviderTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    // No assertions here (see TokenizerTest): SetUp fails each test instead.
    // On the CPU, whatever the machine: these tests compare with the exact
    // greedy references (CUDA is compared within a tolerance elsewhere).
    auto p = LocalProvider::Create(
        {.display_name = "Local test", .model_path = testing::ModelPath(), .device = LocalDevice::kCpu});
    if (p) provider_ = p->release();
  }
  void SetUp() override { ASSERT_NE(provider_, nullptr) << "cannot load " << testing::ModelPath() << testing::ModelHint(); }
  static void TearDownTestSuite() {
    delete provider_;
    provider_ = nullptr;
  }

  static std::shared_ptr<RecordingSink> Run(const ChatRequest& req, std::stop_token cancel = {},
                                            std::chrono::steady_clock::time_point deadline = {}) {
    auto sink = std::make_shared<RecordingSink>();
    provider_->Start({.request = &req, .upstream_model = "stories260K", .deadline = deadline}, sink, cancel);
    EXPECT_TRUE(sink->Wait());
    return sink;
  }
  static ChatRequest Completion(std::string prompt) {
    ChatRequest req;
    req.kind = RequestKind::kCompletion;
    req.prompt = std::move(prompt);
    req.temperature = 0.0;
    return req;
  }

  static inline LocalProvider* provider_ = nullptr;
};

TEST_F(LocalProviderTest, ReportsNameAndContextLength) {
  EXPECT_EQ(provider_->Name(), "Local test");
  EXPECT_EQ(provider_->ContextLength(), 512);
}

TEST_F(LocalProviderTest, GreedyCompletionStreamsTheReferenceContinuation) {
  const auto refs = testing::LoadReference();
  for (const auto& ref : refs) {
    ChatRequest req = Completion(ref.prompt);
    req.max_tokens = static_cast<int64_t>(ref.generated_ids.size());
    auto sink = Run(req);
    ASSERT_TRUE(sink->completion()) << (sink->error() ? sink->error()->message : "");
    ASSERT_EQ(ref.text.substr(0, ref.prompt.size()), ref.prompt);
    EXPECT_EQ(sink->Text(), ref.text.substr(ref.prompt.size())) << ref.prompt;
    const auto c = *sink->completion();
    EXPECT_EQ(c.finish_reason, FinishReason::kLength);
    EXPECT_TRUE(c.usage_known);
    EXPECT_EQ(c.usage.prompt_tokens, static_cast<int64_t>(ref.prompt_ids.size()));
    EXPECT_EQ(c.usage.completion_tokens, static_cast<int64_t>(ref.generated_ids.size()));
    EXPECT_EQ(c.usage.cached_tokens, 0);
    for (const std::string& d : sink->deltas()) {
      std::string copy = d;
      EXPECT_EQ(TakeCompleteUtf8(copy), d);  // every delta is complete, valid UTF-8
      EXPECT_FALSE(d.empty());
    }
  }
}

TEST_F(LocalProviderTest, ChatJoinsMessageContentsWithNewlines) {
  ChatRequest chat;
  chat.kind = RequestKind::kChat;
  chat.messages = {Message{Role::kUser, {TextPart{"Once upon a time", {}}}, {}}};
  chat.temperature = 0.0;
  chat.max_tokens = 30;
  ChatRequest completion = Completion("Once upon a time");
  completion.max_tokens = 30;
  EXPECT_EQ(Run(chat)->Text(), Run(completion)->Text());

  chat.messages = {Message{Role::kSystem, {TextPart{"Tom and Lily", {}}}, {}},
                   Message{Role::kUser, {TextPart{"were friends", {}}}, {}}};
  ChatRequest joined = Completion("Tom and Lily\nwere friends");
  joined.max_tokens = 30;
  auto a = Run(chat);
  auto b = Run(joined);
  EXPECT_EQ(a->Text(), b->Text());
  EXPECT_EQ(a->completion()->usage.prompt_tokens, b->completion()->usage.prompt_tokens);
}

TEST_F(LocalProviderTest, StopStringSplitAcrossTokensEndsTheGeneration) {
  // Greedy text: ", there was a little girl named Lily. ..." and "le gi" spans
  // the tokens of " little" and " girl".
  ChatRequest req = Completion("Once upon a time");
  req.stop = {"le gi", "never appears"};
  auto sink = Run(req);
  ASSERT_TRUE(sink->completion());
  EXPECT_EQ(sink->Text(), ", there was a litt");
  EXPECT_EQ(sink->completion()->finish_reason, FinishReason::kStop);
  EXPECT_GE(sink->completion()->usage.completion_tokens, 6);
  EXPECT_LE(sink->completion()->usage.completion_tokens, 8);
}

TEST_F(LocalProviderTest, MaxTokensAndContextFillEndWithLength) {
  ChatRequest req = Completion("Once upon a time");
  req.max_tokens = 3;
  auto sink = Run(req);
  ASSERT_TRUE(sink->completion());
  EXPECT_EQ(sink->completion()->usage.completion_tokens, 3);
  EXPECT_EQ(sink->completion()->finish_reason, FinishReason::kLength);

  auto small =
      LocalProvider::Create({.model_path = testing::ModelPath(), .context_length = 32, .device = LocalDevice::kCpu})
          .value();
  EXPECT_EQ(small->ContextLength(), 32);
  EXPECT_EQ(small->Name(), "Local");
  ChatRequest fill = Completion("Once upon a time");  // 5 tokens with BOS, no max_tokens
  auto s2 = std::make_shared<RecordingSink>();
  small->Start({.request = &fill, .upstream_model = {}, .deadline = {}}, s2, {});
  ASSERT_TRUE(s2->Wait());
  ASSERT_TRUE(s2->completion());
  EXPECT_EQ(s2->completion()->usage.completion_tokens, 27);
  EXPECT_EQ(s2->completion()->finish_reason, FinishReason::kLength);
}

TEST_F(LocalProviderTest, PromptTooLongIsInvalidArgument) {
  std::string prompt;
  for (int i = 0; i < 200; ++i) prompt += "Once upon a time ";
  auto sink = Run(Completion(prompt));
  ASSERT_TRUE(sink->error());
  EXPECT_EQ(sink->error()->code, ErrorCode::kInvalidArgument);
  EXPECT_EQ(sink->error()->param, "prompt");
  EXPECT_NE(sink->error()->message.find("context"), std::string::npos);
  EXPECT_TRUE(sink->deltas().empty());

  ChatRequest zero = Completion("hi");
  zero.max_tokens = 0;
  EXPECT_EQ(Run(zero)->error()->code, ErrorCode::kInvalidArgument);
}

TEST_F(LocalProviderTest, CancelledBeforeStartReportsCancelled) {
  std::stop_source source;
  source.request_stop();
  auto sink = Run(Completion("Once upon a time"), source.get_token());
  ASSERT_TRUE(sink->error());
  EXPECT_EQ(sink->error()->code, ErrorCode::kCancelled);
  EXPECT_TRUE(sink->deltas().empty());
}

TEST_F(LocalProviderTest, CancelledMidStreamStopsGenerating) {
  std::stop_source source;
  auto sink = std::make_shared<RecordingSink>();
  int seen = 0;
  sink->set_on_delta([&] {
    if (++seen == 3) source.request_stop();
  });
  ChatRequest req = Completion("Once upon a time");
  provider_->Start({.request = &req, .upstream_model = {}, .deadline = {}}, sink, source.get_token());
  ASSERT_TRUE(sink->Wait());
  // Cancelled after deltas: completes with the exact usage of what was generated.
  ASSERT_FALSE(sink->error());
  ASSERT_TRUE(sink->completion());
  EXPECT_EQ(sink->deltas().size(), 3u);
  EXPECT_TRUE(sink->completion()->usage_known);
  EXPECT_EQ(sink->completion()->usage.prompt_tokens, 5);
  EXPECT_GE(sink->completion()->usage.completion_tokens, 3);
  EXPECT_LE(sink->completion()->usage.completion_tokens, 4);
}

TEST_F(LocalProviderTest, PassedDeadlineBeforeFirstTokenIsDeadlineExceeded) {
  auto sink = Run(Completion("Once upon a time"), {}, std::chrono::steady_clock::now() - 1s);
  ASSERT_TRUE(sink->error());
  EXPECT_EQ(sink->error()->code, ErrorCode::kDeadlineExceeded);
}

TEST_F(LocalProviderTest, DeadlineAfterFirstDeltaCompletesWithLength) {
  const auto deadline = std::chrono::steady_clock::now() + 1s;
  auto sink = std::make_shared<RecordingSink>();
  bool slept = false;
  sink->set_on_delta([&] {
    if (!slept) std::this_thread::sleep_until(deadline + 10ms);
    slept = true;
  });
  ChatRequest req = Completion("Once upon a time");
  provider_->Start({.request = &req, .upstream_model = {}, .deadline = deadline}, sink, {});
  ASSERT_TRUE(sink->Wait());
  ASSERT_TRUE(sink->completion());
  EXPECT_EQ(sink->completion()->finish_reason, FinishReason::kLength);
  EXPECT_EQ(sink->deltas().size(), 1u);
  EXPECT_EQ(sink->completion()->usage.completion_tokens, 1);
}

TEST_F(LocalProviderTest, SeededSamplingIsReproducible) {
  ChatRequest req = Completion("The little dog");
  req.temperature = 1.0;
  req.top_p = 0.9;
  req.seed = 1234;
  req.max_tokens = 40;
  const std::string a = Run(req)->Text();
  EXPECT_EQ(Run(req)->Text(), a);
  req.seed = 99;
  EXPECT_NE(Run(req)->Text(), a);
}

TEST_F(LocalProviderTest, QueuedRequestsAllComplete) {
  std::vector<std::shared_ptr<RecordingSink>> sinks;
  std::vector<ChatRequest> reqs(4, Completion("Tom and Lily were friends"));
  for (auto& r : reqs) r.max_tokens = 20;
  for (auto& r : reqs) {
    sinks.push_back(std::make_shared<RecordingSink>());
    provider_->Start({.request = &r, .upstream_model = {}, .deadline = {}}, sinks.back(), {});
  }
  for (auto& s : sinks) {
    ASSERT_TRUE(s->Wait());
    ASSERT_TRUE(s->completion());
    EXPECT_EQ(s->Text(), sinks[0]->Text());
  }
}

TEST(LocalProvider, CreateReportsBadModelFiles) {
  // The last check needs a good model, or it would pass for the wrong reason.
  auto good = LocalProvider::Create({.model_path = testing::ModelPath()});
  ASSERT_TRUE(good) << good.error().message << testing::ModelHint();
  good->reset();
  auto missing = LocalProvider::Create({.model_path = "/nonexistent/x.gguf"});
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error().code, ErrorCode::kInvalidArgument);
  EXPECT_FALSE(LocalProvider::Create({.model_path = testing::ModelPath(), .context_length = -1}));
}

TEST(LocalProvider, DestroyingWithQueuedWorkFailsItCleanly) {
  auto created = LocalProvider::Create({.model_path = testing::ModelPath()});
  ASSERT_TRUE(created) << created.error().message << testing::ModelHint();
  auto provider = std::move(*created);
  std::vector<std::shared_ptr<RecordingSink>> sinks;
  ChatRequest req;
  req.kind = RequestKind::kCompletion;
  req.prompt = "Once upon a time";
  req.temperature = 0.0;
  for (int i = 0; i < 5; ++i) {
    sinks.push_back(std::make_shared<RecordingSink>());
    provider->Start({.request = &req, .upstream_model = {}, .deadline = {}}, sinks.back(), {});
  }
  provider.reset();
  for (auto& s : sinks) {
    ASSERT_TRUE(s->Wait(1s));  // every request got its terminal event
    if (s->error()) {
      EXPECT_EQ(s->error()->code, ErrorCode::kUnavailable);
    }
  }
}


// ---- continuous batching

// A provider of its own with `options` over the test model, on the device
// `options` names.
std::unique_ptr<LocalProvider> MakeProviderOnDevice(LocalProviderOptions options) {
  options.model_path = testing::ModelPath();
  auto created = LocalProvider::Create(options);
  EXPECT_TRUE(created) << (created ? "" : created.error().message) << testing::ModelHint();
  return created ? std::move(*created) : nullptr;
}

// The same on the CPU (exact references, as LocalProviderTest).
std::unique_ptr<LocalProvider> MakeProvider(LocalProviderOptions options) {
  options.device = LocalDevice::kCpu;
  return MakeProviderOnDevice(std::move(options));
}

ChatRequest GreedyCompletion(const std::string& prompt, int64_t max_tokens) {
  ChatRequest req;
  req.kind = RequestKind::kCompletion;
  req.prompt = prompt;
  req.temperature = 0.0;
  req.max_tokens = max_tokens;
  return req;
}

// Every reference prompt at once: decoded together in one batch per step,
// each still gives exactly its own greedy continuation.
TEST(LocalProviderBatching, ConcurrentRequestsEachGiveTheirOwnReferenceContinuation) {
  auto provider = MakeProvider({.max_sequences = 8});
  ASSERT_NE(provider, nullptr);
  const auto refs = testing::LoadReference();
  ASSERT_GE(refs.size(), 3u);
  std::vector<ChatRequest> reqs;
  for (const auto& ref : refs) reqs.push_back(GreedyCompletion(ref.prompt, static_cast<int64_t>(ref.generated_ids.size())));
  std::vector<std::shared_ptr<RecordingSink>> sinks;
  std::atomic<int> most_running = 0;  // seen from the worker thread, between steps
  for (const auto& req : reqs) {
    sinks.push_back(std::make_shared<RecordingSink>());
    sinks.back()->set_on_delta([&] { most_running = std::max(most_running.load(), provider->Stats().running); });
    provider->Start({.request = &req, .upstream_model = {}, .deadline = {}}, sinks.back(), {});
  }
  for (size_t i = 0; i < refs.size(); ++i) {
    ASSERT_TRUE(sinks[i]->Wait());
    ASSERT_TRUE(sinks[i]->completion()) << (sinks[i]->error() ? sinks[i]->error()->message : "");
    EXPECT_EQ(sinks[i]->Text(), refs[i].text.substr(refs[i].prompt.size())) << refs[i].prompt;
    EXPECT_EQ(sinks[i]->completion()->usage.completion_tokens, static_cast<int64_t>(refs[i].generated_ids.size()));
  }
  EXPECT_GT(most_running, 1);  // they did run together
  // Stats are as of the end of the worker's last step, just after the last
  // completion.
  const auto until = std::chrono::steady_clock::now() + 5s;
  while (provider->Stats().running > 0 && std::chrono::steady_clock::now() < until) std::this_thread::sleep_for(1ms);
  EXPECT_EQ(provider->Stats().running, 0);
  EXPECT_EQ(provider->Stats().kv.used_pages, 0);  // every page given back
}

// A KV budget too small for all of them at once: the youngest sequences are
// preempted and recomputed, and every output is still exact.
TEST(LocalProviderBatching, PreemptedSequencesResumeWithIdenticalOutput) {
  // stories260K: 5 layers x (K, V) x 4 KV heads x 8 dims x 2 bytes = 640 bytes
  // per token; four 64-token pages.
  auto provider = MakeProvider({.max_sequences = 4, .kv_cache_bytes = 4 * 64 * 640});
  ASSERT_NE(provider, nullptr);
  EXPECT_EQ(provider->ContextLength(), 256);  // lowered to what the budget holds
  const auto refs = testing::LoadReference();
  std::vector<ChatRequest> reqs;
  for (size_t i = 0; i < 4; ++i) reqs.push_back(GreedyCompletion(refs[i % refs.size()].prompt, 100));
  std::vector<std::shared_ptr<RecordingSink>> sinks;
  for (const auto& req : reqs) {
    sinks.push_back(std::make_shared<RecordingSink>());
    provider->Start({.request = &req, .upstream_model = {}, .deadline = {}}, sinks.back(), {});
  }
  for (size_t i = 0; i < reqs.size(); ++i) {
    ASSERT_TRUE(sinks[i]->Wait());
    ASSERT_TRUE(sinks[i]->completion()) << (sinks[i]->error() ? sinks[i]->error()->message : "");
    const auto& ref = refs[i % refs.size()];
    // Alone, the same request gives the reference's first 100 tokens.
    auto alone = std::make_shared<RecordingSink>();
    provider->Start({.request = &reqs[i], .upstream_model = {}, .deadline = {}}, alone, {});
    ASSERT_TRUE(alone->Wait());
    EXPECT_EQ(sinks[i]->Text(), alone->Text()) << ref.prompt;
    EXPECT_EQ(sinks[i]->completion()->usage.completion_tokens, 100);
  }
  EXPECT_GT(provider->Stats().preemptions, 0);
}

// A consumer that is behind pauses its own sequence only.
TEST(LocalProviderBatching, SlowConsumerPausesOnlyItsOwnSequence) {
  auto provider = MakeProvider({.max_sequences = 2});
  ASSERT_NE(provider, nullptr);
  const ChatRequest req = GreedyCompletion("Once upon a time", 30);
  auto slow = std::make_shared<RecordingSink>();
  slow->Pause();
  provider->Start({.request = &req, .upstream_model = {}, .deadline = {}}, slow, {});
  ASSERT_TRUE(slow->WaitRefused());
  auto fast = std::make_shared<RecordingSink>();
  provider->Start({.request = &req, .upstream_model = {}, .deadline = {}}, fast, {});
  ASSERT_TRUE(fast->Wait());
  ASSERT_TRUE(fast->completion());
  EXPECT_EQ(slow->terminal_count(), 0);
  EXPECT_LE(slow->deltas().size(), 1u);
  slow->Resume();
  ASSERT_TRUE(slow->Wait());
  ASSERT_TRUE(slow->completion());
  EXPECT_EQ(slow->Text(), fast->Text());
}

// Beyond max_sequences running and max_queue waiting: 429 with Retry-After.
TEST(LocalProviderBatching, FullQueueAnswersResourceExhausted) {
  auto provider = MakeProvider({.max_sequences = 1, .max_queue = 1});
  ASSERT_NE(provider, nullptr);
  const ChatRequest req = GreedyCompletion("Once upon a time", 5);
  auto holder = std::make_shared<RecordingSink>();
  holder->Pause();
  provider->Start({.request = &req, .upstream_model = {}, .deadline = {}}, holder, {});
  ASSERT_TRUE(holder->WaitRefused());  // running, and holding the only slot
  auto queued = std::make_shared<RecordingSink>();
  provider->Start({.request = &req, .upstream_model = {}, .deadline = {}}, queued, {});
  auto refused = std::make_shared<RecordingSink>();
  provider->Start({.request = &req, .upstream_model = {}, .deadline = {}}, refused, {});
  ASSERT_TRUE(refused->Wait(5s));
  ASSERT_TRUE(refused->error());
  EXPECT_EQ(refused->error()->code, ErrorCode::kResourceExhausted);
  EXPECT_EQ(refused->error()->retry_after, "1");
  EXPECT_EQ(provider->Stats().queued, 1);
  holder->Resume();
  ASSERT_TRUE(holder->Wait());
  ASSERT_TRUE(queued->Wait());
  EXPECT_TRUE(queued->completion());
}

// A prompt that begins with the whole pages of an earlier one reuses their
// keys and values: same output, and usage reports them as cached.
TEST(LocalProviderBatching, SharedPromptPrefixIsPrefilledOnce) {
  auto provider = MakeProvider({});
  ASSERT_NE(provider, nullptr);
  std::string system;
  while (system.size() < 400) system += "Lily and Tom went to the park to play with a big red ball. ";
  const ChatRequest first = GreedyCompletion(system + "One day", 20);
  const ChatRequest second = GreedyCompletion(system + "The sun", 20);
  auto a = std::make_shared<RecordingSink>();
  provider->Start({.request = &first, .upstream_model = {}, .deadline = {}}, a, {});
  ASSERT_TRUE(a->Wait());
  ASSERT_TRUE(a->completion());
  EXPECT_EQ(a->completion()->usage.cached_tokens, 0);
  auto b = std::make_shared<RecordingSink>();
  provider->Start({.request = &second, .upstream_model = {}, .deadline = {}}, b, {});
  ASSERT_TRUE(b->Wait());
  ASSERT_TRUE(b->completion());
  const int64_t cached = b->completion()->usage.cached_tokens;
  EXPECT_GE(cached, 64);
  EXPECT_EQ(cached % 64, 0);
  EXPECT_LT(cached, b->completion()->usage.prompt_tokens);
  // The same output as without a prefix cache.
  auto plain = MakeProvider({.prefix_cache = false});
  ASSERT_NE(plain, nullptr);
  auto c = std::make_shared<RecordingSink>();
  plain->Start({.request = &second, .upstream_model = {}, .deadline = {}}, c, {});
  ASSERT_TRUE(c->Wait());
  EXPECT_EQ(b->Text(), c->Text());
  EXPECT_EQ(c->completion()->usage.cached_tokens, 0);
}

TEST(LocalProviderBatching, CreateRejectsBadSchedulerOptions) {
  for (LocalProviderOptions o : {LocalProviderOptions{.max_sequences = 0}, LocalProviderOptions{.max_queue = -1},
                                 LocalProviderOptions{.max_batch_tokens = 0}, LocalProviderOptions{.kv_cache_bytes = -1}}) {
    o.model_path = testing::ModelPath();
    auto p = LocalProvider::Create(o);
    ASSERT_FALSE(p);
    EXPECT_EQ(p.error().code, ErrorCode::kInvalidArgument);
  }
}

// ---- device selection

// The greedy reference continuation of the first reference prompt, or a
// failure naming what went wrong.
::testing::AssertionResult GeneratesTheReference(LocalProvider& provider) {
  const auto refs = testing::LoadReference();
  ChatRequest req = GreedyCompletion(refs[0].prompt, static_cast<int64_t>(refs[0].generated_ids.size()));
  auto sink = std::make_shared<RecordingSink>();
  provider.Start({.request = &req, .upstream_model = {}, .deadline = {}}, sink, {});
  if (!sink->Wait()) return ::testing::AssertionFailure() << "no terminal event";
  if (!sink->completion()) return ::testing::AssertionFailure() << sink->error()->message;
  const std::string want = refs[0].text.substr(refs[0].prompt.size());
  if (sink->Text() != want) {
    return ::testing::AssertionFailure() << "generated \"" << sink->Text() << "\", want \"" << want << "\"";
  }
  return ::testing::AssertionSuccess();
}

// The lines of `text` that contain `needle`.
int CountLinesWith(const std::string& text, const std::string& needle) {
  int n = 0;
  size_t start = 0;
  while (start < text.size()) {
    size_t end = text.find('\n', start);
    if (end == std::string::npos) end = text.size();
    if (text.substr(start, end - start).find(needle) != std::string::npos) ++n;
    start = end + 1;
  }
  return n;
}

constexpr const char* kCudaRefused = "device: cuda was requested, but the GPU cannot be used: ";

TEST(LocalProviderDevice, CpuLoadsOnTheCpuBackend) {
  auto provider = MakeProvider({.threads = 1});
  ASSERT_NE(provider, nullptr);
  EXPECT_EQ(provider->DeviceName().rfind("cpu ", 0), 0u) << provider->DeviceName();
  EXPECT_NE(provider->DeviceName().find("x1 threads"), std::string::npos) << provider->DeviceName();
  EXPECT_EQ(provider->Stats().device, provider->DeviceName());
  EXPECT_TRUE(GeneratesTheReference(*provider));
}

// The default device is auto: the GPU when ProbeCudaDevice(0) finds one,
// else the CPU with one line on stderr saying why (so on a machine without a
// GPU, or in a build without CUDA, the model serves as before).
TEST(LocalProviderDevice, AutoUsesTheGpuWhenUsableElseTheCpuAndSaysWhy) {
  const CudaDeviceStatus gpu = ProbeCudaDevice(0);
  ::testing::internal::CaptureStderr();
  auto created = LocalProvider::Create({.model_path = testing::ModelPath()});
  const std::string log = ::testing::internal::GetCapturedStderr();
  ASSERT_TRUE(created) << created.error().message << testing::ModelHint();
  LocalProvider& provider = **created;
  if (gpu.usable) {
    EXPECT_EQ(provider.DeviceName().rfind("cuda:0", 0), 0u) << provider.DeviceName();
    EXPECT_EQ(CountLinesWith(log, "runs on the CPU"), 0) << log;
    ChatRequest req = GreedyCompletion("Once upon a time", 8);  // serves; CUDA output is compared elsewhere
    auto sink = std::make_shared<RecordingSink>();
    provider.Start({.request = &req, .upstream_model = {}, .deadline = {}}, sink, {});
    ASSERT_TRUE(sink->Wait());
    ASSERT_TRUE(sink->completion()) << sink->error()->message;
    EXPECT_GT(sink->completion()->usage.completion_tokens, 0);
  } else {
    EXPECT_FALSE(gpu.reason.empty());
    EXPECT_EQ(provider.DeviceName().rfind("cpu ", 0), 0u) << provider.DeviceName();
    EXPECT_EQ(CountLinesWith(log, "runs on the CPU (device: auto): " + gpu.reason), 1) << log;
    EXPECT_EQ(CountLinesWith(log, testing::ModelPath()), 1) << log;
    EXPECT_TRUE(GeneratesTheReference(provider));
  }
}

// A device index no machine has: auto falls back everywhere, cuda fails
// everywhere, each with the probe's reason.
TEST(LocalProviderDevice, MissingGpuMakesAutoFallBackAndCudaFail) {
  const CudaDeviceStatus gpu = ProbeCudaDevice(99);
  ASSERT_FALSE(gpu.usable);
  ASSERT_FALSE(gpu.reason.empty());

  ::testing::internal::CaptureStderr();
  auto provider = MakeProviderOnDevice({.threads = 1, .device = LocalDevice::kAuto, .gpu_device = 99});
  const std::string log = ::testing::internal::GetCapturedStderr();
  ASSERT_NE(provider, nullptr);
  EXPECT_EQ(provider->DeviceName().rfind("cpu ", 0), 0u) << provider->DeviceName();
  EXPECT_EQ(CountLinesWith(log, "runs on the CPU (device: auto): " + gpu.reason), 1) << log;
  EXPECT_TRUE(GeneratesTheReference(*provider));

  ::testing::internal::CaptureStderr();
  auto cuda = LocalProvider::Create(
      {.model_path = testing::ModelPath(), .device = LocalDevice::kCuda, .gpu_device = 99});
  const std::string cuda_log = ::testing::internal::GetCapturedStderr();
  ASSERT_FALSE(cuda);
  EXPECT_EQ(cuda.error().code, ErrorCode::kUnavailable);
  EXPECT_EQ(cuda.error().message, kCudaRefused + gpu.reason);
  EXPECT_EQ(cuda.error().param, "device");
  EXPECT_EQ(CountLinesWith(cuda_log, "runs on the CPU"), 0) << cuda_log;  // no fallback
}

// device: cuda on device 0: the GPU when usable (in this environment, without
// one, the probe's reason: "this build has no CUDA backend ..." or "no CUDA
// device").
TEST(LocalProviderDevice, CudaLoadsOnTheGpuOrFailsWithTheProbesReason) {
  const CudaDeviceStatus gpu = ProbeCudaDevice(0);
  auto created = LocalProvider::Create({.model_path = testing::ModelPath(), .device = LocalDevice::kCuda});
  if (gpu.usable) {
    ASSERT_TRUE(created) << created.error().message;
    EXPECT_EQ((*created)->DeviceName().rfind("cuda:0", 0), 0u) << (*created)->DeviceName();
  } else {
    ASSERT_FALSE(created);
    EXPECT_EQ(created.error().code, ErrorCode::kUnavailable);
    EXPECT_EQ(created.error().message, kCudaRefused + gpu.reason);
    if (!CudaBuilt()) {
      EXPECT_NE(gpu.reason.find("this build has no CUDA backend"), std::string::npos) << gpu.reason;
    }
  }
}

// A GPU budget of one byte holds no model: cuda fails naming the memory, auto
// loads on the CPU. (Without a usable GPU the probe's reason comes first.)
TEST(LocalProviderDevice, TooLittleGpuMemoryMakesCudaFailAndAutoUseTheCpu) {
  const CudaDeviceStatus gpu = ProbeCudaDevice(0);
  const std::string why = gpu.usable ? std::string("too little GPU memory: ") : gpu.reason;
  auto cuda = LocalProvider::Create(
      {.model_path = testing::ModelPath(), .device = LocalDevice::kCuda, .gpu_memory_bytes = 1});
  ASSERT_FALSE(cuda);
  EXPECT_EQ(cuda.error().code, ErrorCode::kUnavailable);
  EXPECT_EQ(cuda.error().message.rfind(kCudaRefused + why, 0), 0u) << cuda.error().message;

  ::testing::internal::CaptureStderr();
  auto provider = MakeProviderOnDevice({.threads = 1, .device = LocalDevice::kAuto, .gpu_memory_bytes = 1});
  const std::string log = ::testing::internal::GetCapturedStderr();
  ASSERT_NE(provider, nullptr);
  EXPECT_EQ(provider->DeviceName().rfind("cpu ", 0), 0u) << provider->DeviceName();
  EXPECT_EQ(CountLinesWith(log, "runs on the CPU (device: auto): " + why), 1) << log;
  EXPECT_TRUE(GeneratesTheReference(*provider));
}

TEST(LocalProviderDevice, CreateRejectsBadGpuOptions) {
  for (LocalProviderOptions o :
       {LocalProviderOptions{.gpu_device = -1}, LocalProviderOptions{.gpu_memory_bytes = -1}}) {
    o.model_path = testing::ModelPath();
    auto p = LocalProvider::Create(o);
    ASSERT_FALSE(p);
    EXPECT_EQ(p.error().code, ErrorCode::kInvalidArgument);
  }
}

}  // namespace
}  // namespace tollgate::local_backend
