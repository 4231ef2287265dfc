#include "tollgate/local_backend/local_provider.hpp"

#include "tollgate/local_backend/tokenizer.hpp"
#include "recording_sink.hpp"
#include "test_model.hpp"

#include <gtest/gtest.h>

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
    auto p = LocalProvider::Create({.display_name = "Local test", .model_path = testing::ModelPath()});
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

  auto small = LocalProvider::Create({.model_path = testing::ModelPath(), .context_length = 32}).value();
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

}  // namespace
}  // namespace tollgate::local_backend
