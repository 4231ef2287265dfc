#include "tollgate/billing/generation_store.hpp"

#include "pg_test_database.hpp"
#include "tollgate/billing/usage_recorder.hpp"

#include <boost/json.hpp>

#include <atomic>
#include <thread>
#include <vector>

namespace tollgate::billing {
namespace {

using namespace std::chrono_literals;

class GenerationStorePg : public testing::MigratedPgTest {
 protected:
  void SetUp() override {
    MigratedPgTest::SetUp();
    if (HasFatalFailure()) return;
    account_ = QueryInt("INSERT INTO accounts (name) VALUES ('acme') RETURNING id");
    alice_ = CreateKey("alice");
    bob_ = CreateKey("bob");
  }
  int64_t CreateKey(const std::string& name) {
    return QueryInt("INSERT INTO api_keys (name, key_hash, account_id) VALUES ('" + name + "', md5('" + name +
                    "'), " + std::to_string(account_) + ") RETURNING id");
  }
  int64_t account_ = 0;
  int64_t alice_ = 0;
  int64_t bob_ = 0;
};

TEST_F(GenerationStorePg, ReturnsOnlyTheOwnersRowWithEveryField) {
  auto recorder = UsageRecorder::Start(url(), 60'000, 100);
  ASSERT_TRUE(recorder) << recorder.error().message;
  UsageEvent e;
  e.request_id = "gen-abc";
  e.api_key_id = alice_;
  e.model = "deepseek/deepseek-chat";
  e.provider = "DeepSeek";
  e.upstream_model = "deepseek-chat";
  e.usage = Usage{1200, 300, 1000, 40};
  e.cost = Money{123'456'789};
  e.latency_ms = 4321;
  e.ttft_ms = 210;
  e.status = 200;
  e.finish_reason = "length";
  e.streamed = true;
  e.cancelled = false;
  e.usage_estimated = true;
  // Microsecond precision survives the round trip exactly.
  e.created_at = std::chrono::system_clock::time_point(1'790'000'000'123'456us);
  e.finished_at = std::chrono::system_clock::time_point(1'790'000'004'444'567us);
  e.usage.cache_write_tokens = 17;
  e.endpoint_id = "deepseek-direct";
  e.account_id = account_;
  e.lease_holder = "0123456789abcdef0123456789abcdef:b1";
  e.price_snapshot = R"({"endpoint":"deepseek-direct","tier":0,"prompt":270000000,"completion":1100000000})";
  e.byok = true;
  e.provider_cost = Money{2'469'135'780};
  UsageEvent failed = e;
  failed.request_id = "gen-bob";
  failed.api_key_id = bob_;
  failed.ttft_ms.reset();
  failed.finish_reason.reset();
  failed.status = 502;
  failed.error_code = "upstream_error";
  failed.cancelled = true;
  failed.endpoint_id.clear();
  failed.account_id = 0;  // filled from the key
  failed.lease_holder.clear();
  failed.price_snapshot.clear();
  failed.byok = false;
  failed.provider_cost.reset();
  (*recorder)->Record(e);
  (*recorder)->Record(failed);
  (*recorder)->Flush();

  auto store = GenerationStore::Connect(url());
  ASSERT_TRUE(store) << store.error().message;
  auto found = (*store)->Find("gen-abc", alice_);
  ASSERT_TRUE(found) << found.error().message;
  ASSERT_TRUE(found->has_value());
  const UsageEvent& got = **found;
  EXPECT_EQ(got.request_id, e.request_id);
  EXPECT_EQ(got.api_key_id, alice_);
  EXPECT_EQ(got.model, e.model);
  EXPECT_EQ(got.provider, e.provider);
  EXPECT_EQ(got.upstream_model, e.upstream_model);
  EXPECT_EQ(got.usage.prompt_tokens, 1200);
  EXPECT_EQ(got.usage.completion_tokens, 300);
  EXPECT_EQ(got.usage.cached_tokens, 1000);
  EXPECT_EQ(got.usage.reasoning_tokens, 40);
  EXPECT_EQ(got.cost, e.cost);
  EXPECT_EQ(got.latency_ms, 4321);
  EXPECT_EQ(got.ttft_ms, std::optional<int64_t>(210));
  EXPECT_EQ(got.status, 200);
  EXPECT_EQ(got.finish_reason, std::optional<std::string>("length"));
  EXPECT_TRUE(got.streamed);
  EXPECT_FALSE(got.cancelled);
  EXPECT_TRUE(got.usage_estimated);
  EXPECT_FALSE(got.error_code);
  EXPECT_EQ(got.created_at, e.created_at);
  EXPECT_EQ(got.finished_at, e.finished_at);
  EXPECT_EQ(got.usage.cache_write_tokens, 17);
  EXPECT_EQ(got.endpoint_id, "deepseek-direct");
  EXPECT_EQ(got.account_id, account_);
  EXPECT_EQ(got.lease_holder, e.lease_holder);
  // jsonb normalises the text; the value is the same.
  EXPECT_EQ(boost::json::parse(got.price_snapshot), boost::json::parse(e.price_snapshot)) << got.price_snapshot;
  EXPECT_TRUE(got.byok);
  EXPECT_EQ(got.provider_cost, std::optional<Money>(Money{2'469'135'780}));

  // Someone else's id looks exactly like a missing one.
  auto foreign = (*store)->Find("gen-abc", bob_);
  ASSERT_TRUE(foreign);
  EXPECT_FALSE(foreign->has_value());
  // Any key's row (the admin token's lookup).
  auto any = (*store)->Find("gen-abc", std::nullopt);
  ASSERT_TRUE(any);
  ASSERT_TRUE(any->has_value());
  EXPECT_EQ((*any)->api_key_id, alice_);
  auto missing = (*store)->Find("gen-nope", alice_);
  ASSERT_TRUE(missing);
  EXPECT_FALSE(missing->has_value());

  auto bobs = (*store)->Find("gen-bob", bob_);
  ASSERT_TRUE(bobs);
  ASSERT_TRUE(bobs->has_value());
  EXPECT_FALSE((*bobs)->ttft_ms);
  EXPECT_FALSE((*bobs)->finish_reason);
  EXPECT_EQ((*bobs)->error_code, std::optional<std::string>("upstream_error"));
  EXPECT_EQ((*bobs)->status, 502);
  EXPECT_TRUE((*bobs)->cancelled);
  EXPECT_EQ((*bobs)->endpoint_id, "");
  EXPECT_EQ((*bobs)->account_id, account_);
  EXPECT_EQ((*bobs)->lease_holder, "");
  EXPECT_EQ((*bobs)->price_snapshot, "");
  EXPECT_FALSE((*bobs)->byok);
  EXPECT_FALSE((*bobs)->provider_cost);
}

TEST_F(GenerationStorePg, ReadsBackCountsAndDurationsBeyondInt32) {
  auto recorder = UsageRecorder::Start(url(), 60'000, 100);
  ASSERT_TRUE(recorder) << recorder.error().message;
  UsageEvent e;
  e.request_id = "gen-big";
  e.api_key_id = alice_;
  e.model = e.provider = e.upstream_model = "x";
  e.usage = Usage{int64_t{5} << 40, int64_t{3} << 33, int64_t{1} << 40, (int64_t{1} << 32) + 1};
  e.latency_ms = int64_t{1} << 41;
  e.ttft_ms = (int64_t{1} << 31) + 5;
  (*recorder)->Record(e);
  (*recorder)->Stop();
  EXPECT_EQ((*recorder)->rows_written(), 1);

  auto store = GenerationStore::Connect(url());
  ASSERT_TRUE(store) << store.error().message;
  auto found = (*store)->Find("gen-big", alice_);
  ASSERT_TRUE(found) << found.error().message;
  ASSERT_TRUE(found->has_value());
  EXPECT_EQ((*found)->usage.prompt_tokens, e.usage.prompt_tokens);
  EXPECT_EQ((*found)->usage.completion_tokens, e.usage.completion_tokens);
  EXPECT_EQ((*found)->usage.cached_tokens, e.usage.cached_tokens);
  EXPECT_EQ((*found)->usage.reasoning_tokens, e.usage.reasoning_tokens);
  EXPECT_EQ((*found)->latency_ms, e.latency_ms);
  EXPECT_EQ((*found)->ttft_ms, e.ttft_ms);
}

TEST_F(GenerationStorePg, IsSafeFromManyThreadsAndReconnects) {
  auto recorder = UsageRecorder::Start(url(), 60'000, 100);
  ASSERT_TRUE(recorder) << recorder.error().message;
  UsageEvent e;
  e.request_id = "gen-1";
  e.api_key_id = alice_;
  e.model = e.provider = e.upstream_model = "x";
  (*recorder)->Record(e);
  (*recorder)->Stop();

  auto store = GenerationStore::Connect(url());
  ASSERT_TRUE(store) << store.error().message;
  ASSERT_TRUE((*store)->Find("gen-1", alice_));
  KillConnections();
  std::vector<std::thread> threads;
  std::atomic<int> found{0};
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 25; ++i) {
        auto r = (*store)->Find("gen-1", alice_);
        if (r && r->has_value()) ++found;
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(found.load(), 100);
}

TEST_F(GenerationStorePg, ReportsUnavailableDuringAnOutage) {
  auto store = GenerationStore::Connect(url());
  ASSERT_TRUE(store) << store.error().message;
  BeginOutage();
  auto r = (*store)->Find("gen-1", alice_);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, ErrorCode::kUnavailable);
  EndOutage();
  EXPECT_TRUE(testing::WaitFor([&] { return static_cast<bool>((*store)->Find("gen-1", alice_)); }));
}

}  // namespace
}  // namespace tollgate::billing
