#include "tollgate/billing/usage_recorder.hpp"

#include "pg_test_database.hpp"
#include "tollgate/billing/key_store.hpp"
#include "tollgate/billing/log.hpp"

#include <atomic>
#include <thread>
#include <vector>

namespace tollgate::billing {
namespace {

using testing::WaitFor;
using namespace std::chrono_literals;

class UsageRecorderPg : public testing::MigratedPgTest {
 protected:
  void SetUp() override {
    MigratedPgTest::SetUp();
    if (HasFatalFailure()) return;
    auto created = store_->Create("alice", std::nullopt);
    ASSERT_TRUE(created) << created.error().message;
    key_id_ = created->id;
  }

  UsageEvent Event(std::string request_id, int64_t cost_nano_usd) const {
    UsageEvent e;
    e.request_id = std::move(request_id);
    e.api_key_id = key_id_;
    e.model = "openai/gpt-4o-mini";
    e.provider = "OpenAI";
    e.upstream_model = "gpt-4o-mini";
    e.usage = Usage{10, 5, 2, 1};
    e.cost = Money{cost_nano_usd};
    e.latency_ms = 120;
    e.ttft_ms = 30;
    e.status = 200;
    e.finish_reason = "stop";
    e.streamed = true;
    e.created_at = std::chrono::system_clock::now() - 1s;
    e.finished_at = std::chrono::system_clock::now();
    return e;
  }

  int64_t Spent() {
    return QueryInt("SELECT spent_nano_usd FROM api_keys WHERE id = " + std::to_string(key_id_));
  }
  int64_t Rows() { return QueryInt("SELECT count(*) FROM usage_events"); }

  int64_t key_id_ = 0;
};

TEST_F(UsageRecorderPg, WritesRowsAndChargesTheKey) {
  auto recorder = UsageRecorder::Start(url(), 60'000, 100);
  ASSERT_TRUE(recorder) << recorder.error().message;
  (*recorder)->Record(Event("gen-1", 100));
  (*recorder)->Record(Event("gen-2", 250));
  (*recorder)->Record(Event("gen-3", 7));

  // Not written yet (60 s interval, batch of 100): visible as pending only.
  std::optional<UsageEvent> pending = (*recorder)->FindPending("gen-2");
  ASSERT_TRUE(pending);
  EXPECT_EQ(pending->cost, Money{250});
  EXPECT_FALSE((*recorder)->FindPending("gen-404"));
  EXPECT_EQ((*recorder)->pending(), 3);
  EXPECT_EQ(Rows(), 0);

  (*recorder)->Flush();
  EXPECT_EQ(Rows(), 3);
  EXPECT_EQ(Spent(), 357);
  EXPECT_FALSE((*recorder)->FindPending("gen-2"));
  EXPECT_EQ((*recorder)->pending(), 0);
  EXPECT_EQ((*recorder)->rows_written(), 3);
  EXPECT_EQ((*recorder)->batches(), 1);
  EXPECT_EQ((*recorder)->failures(), 0);
  EXPECT_EQ(QueryInt("SELECT sum(cost_nano_usd) FROM usage_events"), 357);
}

TEST_F(UsageRecorderPg, FlushesOnTheIntervalWithoutBeingAsked) {
  auto recorder = UsageRecorder::Start(url(), 20, 100);
  ASSERT_TRUE(recorder) << recorder.error().message;
  (*recorder)->Record(Event("gen-1", 1));
  EXPECT_TRUE(WaitFor([&] { return (*recorder)->rows_written() == 1; }));
  EXPECT_EQ(Rows(), 1);
}

TEST_F(UsageRecorderPg, WritesInBatchesOfBatchSize) {
  auto recorder = UsageRecorder::Start(url(), 60'000, 2);
  ASSERT_TRUE(recorder) << recorder.error().message;
  for (int i = 0; i < 5; ++i) (*recorder)->Record(Event("gen-" + std::to_string(i), 10));
  (*recorder)->Flush();
  EXPECT_EQ(Rows(), 5);
  EXPECT_EQ((*recorder)->batches(), 3);
  EXPECT_EQ(Spent(), 50);
}

TEST_F(UsageRecorderPg, ReplayedRequestIdIsNeitherInsertedNorChargedTwice) {
  auto recorder = UsageRecorder::Start(url(), 60'000, 100);
  ASSERT_TRUE(recorder) << recorder.error().message;
  (*recorder)->Record(Event("gen-1", 100));
  (*recorder)->Record(Event("gen-1", 100));  // same id while queued
  EXPECT_EQ((*recorder)->duplicates_ignored(), 1);
  (*recorder)->Flush();
  (*recorder)->Record(Event("gen-1", 100));  // same id after it was written
  (*recorder)->Record(Event("gen-2", 5));
  (*recorder)->Flush();
  EXPECT_EQ(Rows(), 2);
  EXPECT_EQ(Spent(), 105);
  EXPECT_EQ((*recorder)->rows_written(), 2);
  EXPECT_EQ((*recorder)->rows_duplicate(), 1);

  // A second recorder (another replica, or a restart replaying a batch).
  auto other = UsageRecorder::Start(url(), 60'000, 100);
  ASSERT_TRUE(other) << other.error().message;
  (*other)->Record(Event("gen-1", 100));
  (*other)->Record(Event("gen-2", 5));
  (*other)->Stop();
  EXPECT_EQ(Rows(), 2);
  EXPECT_EQ(Spent(), 105);
  EXPECT_EQ((*other)->rows_duplicate(), 2);
}

TEST_F(UsageRecorderPg, StopFlushesEverything) {
  auto recorder = UsageRecorder::Start(url(), 60'000, 1000);
  ASSERT_TRUE(recorder) << recorder.error().message;
  for (int i = 0; i < 50; ++i) (*recorder)->Record(Event("gen-" + std::to_string(i), 2));
  (*recorder)->Stop();
  EXPECT_EQ(Rows(), 50);
  EXPECT_EQ(Spent(), 100);
  (*recorder)->Stop();  // idempotent
  (*recorder)->Record(Event("gen-late", 1));
  EXPECT_EQ((*recorder)->rows_lost(), 1);
}

TEST_F(UsageRecorderPg, ConcurrentRecordersChargeExactly) {
  auto recorder = UsageRecorder::Start(url(), 5, 16);
  ASSERT_TRUE(recorder) << recorder.error().message;
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 250; ++i) {
        (*recorder)->Record(Event("gen-" + std::to_string(t) + "-" + std::to_string(i), 3));
      }
    });
  }
  for (auto& th : threads) th.join();
  (*recorder)->Flush();
  EXPECT_EQ(Rows(), 1000);
  EXPECT_EQ(Spent(), 3000);
}

TEST_F(UsageRecorderPg, KeepsRowsThroughAnOutageAndWritesThemAfter) {
  std::atomic<int> error_logs{0};
  SetLogHandler([&](LogLevel level, std::string_view) {
    if (level == LogLevel::kError) ++error_logs;
  });
  auto recorder = UsageRecorder::Start(url(), 10, 100);
  ASSERT_TRUE(recorder) << recorder.error().message;
  (*recorder)->Record(Event("gen-before", 1));
  (*recorder)->Flush();

  BeginOutage();
  (*recorder)->Record(Event("gen-during-1", 10));
  (*recorder)->Record(Event("gen-during-2", 20));
  EXPECT_TRUE(WaitFor([&] { return (*recorder)->failures() >= 2; }));
  EXPECT_FALSE((*recorder)->FlushFor(50ms));
  EXPECT_TRUE((*recorder)->FindPending("gen-during-2"));
  EXPECT_EQ((*recorder)->pending(), 2);
  EndOutage();

  EXPECT_TRUE((*recorder)->FlushFor(30s));
  EXPECT_EQ(Rows(), 3);
  EXPECT_EQ(Spent(), 31);
  EXPECT_EQ((*recorder)->rows_written(), 3);
  (*recorder)->Stop();
  SetLogHandler(nullptr);
  EXPECT_EQ(error_logs.load(), 1) << "one log line per outage";
}

TEST_F(UsageRecorderPg, ReconnectsAfterTheServerDroppedTheConnection) {
  auto recorder = UsageRecorder::Start(url(), 10, 100);
  ASSERT_TRUE(recorder) << recorder.error().message;
  (*recorder)->Record(Event("gen-1", 1));
  (*recorder)->Flush();
  KillConnections();  // what clients see when the server restarts
  (*recorder)->Record(Event("gen-2", 1));
  EXPECT_TRUE((*recorder)->FlushFor(30s));
  EXPECT_EQ(Rows(), 2);
  EXPECT_EQ(Spent(), 2);
}

TEST_F(UsageRecorderPg, RejectsOnlyTheRowsThatCannotBeStored) {
  SetLogHandler([](LogLevel, std::string_view) {});
  auto recorder = UsageRecorder::Start(url(), 60'000, 100);
  ASSERT_TRUE(recorder) << recorder.error().message;
  (*recorder)->Record(Event("gen-ok-1", 1));
  UsageEvent unknown_key = Event("gen-bad-key", 1000);
  unknown_key.api_key_id = 987654;  // violates the foreign key
  (*recorder)->Record(unknown_key);
  UsageEvent bad_text = Event("gen-bad-utf8", 1000);
  bad_text.model = "openai/\xff\xfe";  // not UTF-8: SQLSTATE 22021
  (*recorder)->Record(bad_text);
  (*recorder)->Record(Event("gen-ok-2", 2));
  (*recorder)->Flush();
  SetLogHandler(nullptr);
  EXPECT_EQ(Rows(), 2);
  EXPECT_EQ(Spent(), 3);
  EXPECT_EQ((*recorder)->rows_rejected(), 2);
  EXPECT_EQ((*recorder)->rows_written(), 2);
  EXPECT_EQ(QueryInt("SELECT count(*) FROM usage_events WHERE request_id LIKE 'gen-ok-%'"), 2);
}

TEST_F(UsageRecorderPg, StoresCountsAndDurationsBeyondInt32) {
  auto recorder = UsageRecorder::Start(url(), 60'000, 100);
  ASSERT_TRUE(recorder) << recorder.error().message;
  UsageEvent big = Event("gen-big", 5);
  big.usage = Usage{int64_t{1} << 40, (int64_t{1} << 33) + 7, int64_t{1} << 39, int64_t{1} << 32};
  big.latency_ms = (int64_t{1} << 31) + 1;  // ~24.9 days: over int4
  big.ttft_ms = int64_t{1} << 31;
  (*recorder)->Record(big);
  (*recorder)->Record(Event("gen-small", 1));
  (*recorder)->Flush();
  EXPECT_EQ((*recorder)->rows_rejected(), 0);
  EXPECT_EQ((*recorder)->rows_written(), 2);
  EXPECT_EQ(QueryInt("SELECT prompt_tokens FROM usage_events WHERE request_id = 'gen-big'"), int64_t{1} << 40);
  EXPECT_EQ(QueryInt("SELECT completion_tokens FROM usage_events WHERE request_id = 'gen-big'"),
            (int64_t{1} << 33) + 7);
  EXPECT_EQ(QueryInt("SELECT latency_ms FROM usage_events WHERE request_id = 'gen-big'"),
            (int64_t{1} << 31) + 1);
  // The columns themselves are bigint (migrations/001_init.sql).
  EXPECT_EQ(QueryInt("SELECT count(*) FROM information_schema.columns WHERE table_name = 'usage_events'"
                     " AND column_name IN ('prompt_tokens', 'completion_tokens', 'cached_tokens',"
                     " 'reasoning_tokens', 'latency_ms', 'ttft_ms') AND data_type = 'bigint'"),
            6);
  EXPECT_EQ((*recorder)->pending(), 0);
}

TEST_F(UsageRecorderPg, StoresCallsWithoutAKeyAsNull) {
  auto recorder = UsageRecorder::Start(url(), 60'000, 100);
  ASSERT_TRUE(recorder) << recorder.error().message;
  UsageEvent anonymous = Event("gen-anon", 0);
  anonymous.api_key_id = 0;
  anonymous.status = 401;
  anonymous.error_code = "invalid_api_key";
  anonymous.finish_reason.reset();
  (*recorder)->Record(anonymous);
  (*recorder)->Flush();
  EXPECT_EQ(QueryInt("SELECT count(*) FROM usage_events WHERE api_key_id IS NULL"), 1);
}

TEST_F(UsageRecorderPg, StopWithinAbandonsRowsWhenTheDatabaseStaysDown) {
  SetLogHandler([](LogLevel, std::string_view) {});
  auto recorder = UsageRecorder::Start(url(), 10, 100);
  ASSERT_TRUE(recorder) << recorder.error().message;
  BeginOutage();
  (*recorder)->Record(Event("gen-1", 1));
  EXPECT_FALSE((*recorder)->StopWithin(200ms));
  EXPECT_EQ((*recorder)->rows_lost(), 1);
  EndOutage();
  SetLogHandler(nullptr);
}

TEST_F(UsageRecorderPg, StartValidatesArguments) {
  auto bad = UsageRecorder::Start(url(), 0, 10);
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().code, ErrorCode::kInvalidArgument);
  auto down = UsageRecorder::Start("postgresql://postgres@127.0.0.1:1/x?connect_timeout=2", 10, 10);
  ASSERT_FALSE(down);
  EXPECT_EQ(down.error().code, ErrorCode::kUnavailable);
}

}  // namespace
}  // namespace tollgate::billing
