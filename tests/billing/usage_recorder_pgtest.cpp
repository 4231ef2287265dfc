#include "tollgate/billing/usage_recorder.hpp"

#include "pg_test_database.hpp"
#include "tollgate/billing/log.hpp"

#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <filesystem>
#include <mutex>
#include <set>
#include <thread>
#include <vector>

namespace tollgate::billing {
namespace {

namespace fs = std::filesystem;
using testing::WaitFor;
using namespace std::chrono_literals;

// 2026-03-15T12:00:00Z, a Sunday: its day starts 2026-03-15, its week
// 2026-03-09 (Monday), its month 2026-03-01 (UTC).
const std::chrono::system_clock::time_point kCallTime{std::chrono::seconds(1'773'576'000)};
constexpr const char* kDay = "'2026-03-15 00:00:00+00'";
constexpr const char* kMonth = "'2026-03-01 00:00:00+00'";
constexpr const char* kUnreachable = "postgresql://postgres@127.0.0.1:1/x?connect_timeout=2";

// Counts on_durable calls.
struct Durable {
  std::mutex mutex;
  std::condition_variable cv;
  int calls = 0;
  std::set<std::thread::id> threads;

  std::function<void()> Callback() {
    return [this] {
      std::lock_guard lock(mutex);
      ++calls;
      threads.insert(std::this_thread::get_id());
      cv.notify_all();
    };
  }
  bool WaitFor(int n) {
    std::unique_lock lock(mutex);
    return cv.wait_for(lock, 10s, [&] { return calls >= n; });
  }
  int Calls() {
    std::lock_guard lock(mutex);
    return calls;
  }
};

class UsageRecorderPg : public testing::MigratedPgTest {
 protected:
  void SetUp() override {
    MigratedPgTest::SetUp();
    if (HasFatalFailure()) return;
    // Like a key from before accounts existed: a postpaid account of its own,
    // no limit, no budget.
    account_id_ = CreateAccount(/*prepaid=*/false, 0);
    key_id_ = CreateKey(account_id_, std::nullopt);
  }
  void TearDown() override {
    SetLogHandler(nullptr);
    if (!spool_dir_.empty()) {
      std::error_code ec;
      fs::remove_all(spool_dir_, ec);
    }
    MigratedPgTest::TearDown();
  }

  // An account with `credits` added through the ledger (so balance = sum).
  int64_t CreateAccount(bool prepaid, int64_t credits, std::optional<int64_t> budget = std::nullopt,
                        const std::string& budget_reset = "none") {
    int64_t id = QueryInt("INSERT INTO accounts (name, prepaid, budget_nano_usd, budget_reset) VALUES ('acct', " +
                          std::string(prepaid ? "true" : "false") + ", " +
                          (budget ? std::to_string(*budget) : std::string("NULL")) + ", '" + budget_reset +
                          "') RETURNING id");
    if (credits != 0) {
      std::string a = std::to_string(id);
      Query("INSERT INTO ledger_entries (account_id, amount_nano_usd, kind, idempotency_key, reason) VALUES (" + a +
            ", " + std::to_string(credits) + ", 'credit', 'topup-" + a + "', 'test');" +
            "UPDATE accounts SET balance_nano_usd = balance_nano_usd + " + std::to_string(credits) +
            " WHERE id = " + a);
    }
    return id;
  }

  int64_t CreateKey(int64_t account, std::optional<int64_t> limit, const std::string& reset = "none") {
    return QueryInt("INSERT INTO api_keys (name, key_hash, account_id, credit_limit_nano_usd, limit_reset)"
                    " VALUES ('k', md5(random()::text || clock_timestamp()::text), " +
                    std::to_string(account) + ", " + (limit ? std::to_string(*limit) : std::string("NULL")) +
                    ", '" + reset + "') RETURNING id");
  }

  void Lease(const std::string& replica, const std::string& scope, int64_t owner, const std::string& period,
             int64_t amount) {
    Query("INSERT INTO credit_leases (replica_id, scope, owner_id, period_start, amount_nano_usd, expires_at)"
          " VALUES ('" + replica + "', '" + scope + "', " + std::to_string(owner) + ", " + period + ", " +
          std::to_string(amount) + ", now() + interval '1 hour')");
  }
  int64_t LeaseAmount(const std::string& replica, const std::string& scope, int64_t owner,
                      const std::string& period) {
    return QueryInt("SELECT amount_nano_usd FROM credit_leases WHERE replica_id = '" + replica + "' AND scope = '" +
                    scope + "' AND owner_id = " + std::to_string(owner) + " AND period_start = " + period);
  }
  int64_t PeriodUsage(const std::string& scope, int64_t owner, const std::string& period) {
    return QueryInt("SELECT COALESCE((SELECT usage_nano_usd FROM period_usage WHERE scope = '" + scope +
                    "' AND owner_id = " + std::to_string(owner) + " AND period_start = " + period + "), 0)");
  }
  int64_t Balance(int64_t account) {
    return QueryInt("SELECT balance_nano_usd FROM accounts WHERE id = " + std::to_string(account));
  }
  int64_t LedgerSum(int64_t account) {
    return QueryInt("SELECT COALESCE(sum(amount_nano_usd), 0) FROM ledger_entries WHERE account_id = " +
                    std::to_string(account));
  }
  int64_t UsageLedgerRows() { return QueryInt("SELECT count(*) FROM ledger_entries WHERE kind = 'usage'"); }

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

  const std::string& SpoolDir() {
    if (spool_dir_.empty()) {
      std::string pattern = (fs::temp_directory_path() / "tg-usage-spool-XXXXXX").string();
      EXPECT_NE(::mkdtemp(pattern.data()), nullptr);
      spool_dir_ = pattern;
    }
    return spool_dir_;
  }
  UsageRecorderOptions Spooled(int flush_interval_ms = 60'000, int batch_size = 100) {
    UsageRecorderOptions options;
    options.flush_interval_ms = flush_interval_ms;
    options.batch_size = batch_size;
    options.spool_dir = SpoolDir();
    return options;
  }
  std::vector<fs::path> SpoolSegments() {
    std::vector<fs::path> out;
    for (const auto& entry : fs::directory_iterator(SpoolDir())) {
      if (entry.path().filename().string().starts_with("segment-")) out.push_back(entry.path());
    }
    return out;
  }

  int64_t Spent() {
    return QueryInt("SELECT spent_nano_usd FROM api_keys WHERE id = " + std::to_string(key_id_));
  }
  int64_t Rows() { return QueryInt("SELECT count(*) FROM usage_events"); }

  int64_t account_id_ = 0;
  int64_t key_id_ = 0;
  std::string spool_dir_;
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

// ---------------------------------------------------------------- ledger, periods, leases

class UsageLedgerPg : public UsageRecorderPg {
 protected:
  void SetUp() override {
    UsageRecorderPg::SetUp();
    if (HasFatalFailure()) return;
    // Prepaid with 1000 credits, a monthly budget of 10000; the key has a
    // daily limit of 5000. Replica r1 holds a lease of 500 on each pot.
    prepaid_ = CreateAccount(/*prepaid=*/true, 1000, 10'000, "monthly");
    limited_key_ = CreateKey(prepaid_, 5000, "daily");
    Lease("r1:boot", "credits", prepaid_, "'epoch'", 500);
    Lease("r1:boot", "key", limited_key_, kDay, 500);
    Lease("r1:boot", "budget", prepaid_, kMonth, 500);
    Lease("r2:boot", "credits", prepaid_, "'epoch'", 300);  // another replica's: never touched
  }

  UsageEvent Call(std::string request_id, int64_t cost) const {
    UsageEvent e = Event(std::move(request_id), cost);
    e.api_key_id = limited_key_;
    e.account_id = prepaid_;
    e.lease_holder = "r1:boot";
    e.created_at = kCallTime;
    e.finished_at = kCallTime + 2s;
    return e;
  }

  // Everything the writer changes, for comparing before and after a replay.
  std::string State() {
    return Query("SELECT concat_ws(' ',"
                 " (SELECT count(*) FROM usage_events), (SELECT count(*) FROM call_attempts),"
                 " (SELECT string_agg(id || ':' || spent_nano_usd, ',' ORDER BY id) FROM api_keys),"
                 " (SELECT string_agg(id || ':' || balance_nano_usd, ',' ORDER BY id) FROM accounts),"
                 " (SELECT string_agg(idempotency_key || ':' || amount_nano_usd, ',' ORDER BY id) FROM ledger_entries),"
                 " (SELECT string_agg(scope || owner_id || period_start || ':' || usage_nano_usd, ','"
                 "   ORDER BY scope, owner_id, period_start) FROM period_usage),"
                 " (SELECT string_agg(replica_id || scope || owner_id || ':' || amount_nano_usd, ','"
                 "   ORDER BY replica_id, scope, owner_id, period_start) FROM credit_leases))")
        .value_or("");
  }

  void ExpectBalancesMatchTheLedger() {
    EXPECT_EQ(QueryInt("SELECT count(*) FROM accounts a WHERE balance_nano_usd <>"
                       " (SELECT COALESCE(sum(amount_nano_usd), 0) FROM ledger_entries l WHERE l.account_id = a.id)"),
              0);
  }

  int64_t prepaid_ = 0;
  int64_t limited_key_ = 0;
};

TEST_F(UsageLedgerPg, ChargesTheLedgerBalancePeriodsAndLeasesOnce) {
  auto recorder = UsageRecorder::Start(url(), 60'000, 100);
  ASSERT_TRUE(recorder) << recorder.error().message;
  (*recorder)->Record(Call("gen-1", 100));
  (*recorder)->Record(Call("gen-2", 30));
  (*recorder)->Flush();

  EXPECT_EQ(QueryInt("SELECT amount_nano_usd FROM ledger_entries WHERE idempotency_key = 'gen-1'"
                     " AND kind = 'usage' AND request_id = 'gen-1' AND api_key_id = " +
                     std::to_string(limited_key_) + " AND account_id = " + std::to_string(prepaid_)),
            -100);
  EXPECT_EQ(Balance(prepaid_), 870);
  EXPECT_EQ(LedgerSum(prepaid_), 870);
  EXPECT_EQ(PeriodUsage("key", limited_key_, kDay), 130);
  EXPECT_EQ(PeriodUsage("budget", prepaid_, kMonth), 130);
  EXPECT_EQ(LeaseAmount("r1:boot", "credits", prepaid_, "'epoch'"), 370);
  EXPECT_EQ(LeaseAmount("r1:boot", "key", limited_key_, kDay), 370);
  EXPECT_EQ(LeaseAmount("r1:boot", "budget", prepaid_, kMonth), 370);
  EXPECT_EQ(LeaseAmount("r2:boot", "credits", prepaid_, "'epoch'"), 300);
  EXPECT_EQ(QueryInt("SELECT spent_nano_usd FROM api_keys WHERE id = " + std::to_string(limited_key_)), 130);
  std::string once = State();

  // The same ids again: from this recorder, and from another one (a replica,
  // or a restart replaying a batch whose COMMIT reply was lost).
  (*recorder)->Record(Call("gen-1", 100));
  (*recorder)->Flush();
  auto other = UsageRecorder::Start(url(), 60'000, 100);
  ASSERT_TRUE(other) << other.error().message;
  (*other)->Record(Call("gen-1", 100));
  (*other)->Record(Call("gen-2", 30));
  (*other)->Stop();
  EXPECT_EQ((*other)->rows_duplicate(), 2);
  EXPECT_EQ(State(), once);
  ExpectBalancesMatchTheLedger();
}

TEST_F(UsageLedgerPg, ALeaseNeverGoesBelowZero) {
  auto recorder = UsageRecorder::Start(url(), 60'000, 100);
  ASSERT_TRUE(recorder) << recorder.error().message;
  (*recorder)->Record(Call("gen-big", 700));  // more than the lease (the operator absorbs the rest)
  (*recorder)->Flush();
  EXPECT_EQ(LeaseAmount("r1:boot", "credits", prepaid_, "'epoch'"), 0);
  EXPECT_EQ(LeaseAmount("r1:boot", "key", limited_key_, kDay), 0);
  EXPECT_EQ(Balance(prepaid_), 300);
  ExpectBalancesMatchTheLedger();
}

TEST_F(UsageLedgerPg, PotsThatDoNotExistAreNotTakenFrom) {
  // Postpaid, no budget; the key has no limit. Stale lease rows of those
  // pots stay as they are; the balance records spend and goes negative.
  int64_t postpaid = CreateAccount(/*prepaid=*/false, 0);
  int64_t unlimited = CreateKey(postpaid, std::nullopt);
  Lease("r1:boot", "credits", postpaid, "'epoch'", 50);
  Lease("r1:boot", "key", unlimited, "'epoch'", 50);
  Lease("r1:boot", "budget", postpaid, "'epoch'", 50);
  auto recorder = UsageRecorder::Start(url(), 60'000, 100);
  ASSERT_TRUE(recorder) << recorder.error().message;
  UsageEvent e = Call("gen-1", 40);
  e.api_key_id = unlimited;
  e.account_id = postpaid;
  (*recorder)->Record(e);
  (*recorder)->Flush();
  EXPECT_EQ(Balance(postpaid), -40);
  EXPECT_EQ(LedgerSum(postpaid), -40);
  EXPECT_EQ(LeaseAmount("r1:boot", "credits", postpaid, "'epoch'"), 50);
  EXPECT_EQ(LeaseAmount("r1:boot", "key", unlimited, "'epoch'"), 50);
  EXPECT_EQ(LeaseAmount("r1:boot", "budget", postpaid, "'epoch'"), 50);
  // Spend is still counted per period, so a limit set later starts right.
  EXPECT_EQ(PeriodUsage("key", unlimited, "'epoch'"), 40);
  EXPECT_EQ(PeriodUsage("budget", postpaid, "'epoch'"), 40);
}

TEST_F(UsageLedgerPg, WithoutALeaseHolderNoLeaseChanges) {
  auto recorder = UsageRecorder::Start(url(), 60'000, 100);
  ASSERT_TRUE(recorder) << recorder.error().message;
  UsageEvent e = Call("gen-1", 40);
  e.lease_holder.clear();
  (*recorder)->Record(e);
  (*recorder)->Flush();
  EXPECT_EQ(LeaseAmount("r1:boot", "credits", prepaid_, "'epoch'"), 500);
  EXPECT_EQ(Balance(prepaid_), 960);
  EXPECT_EQ(QueryInt("SELECT count(*) FROM usage_events WHERE lease_holder IS NULL"), 1);
}

// The pots a call was admitted under, as CreditGuard's ticket names them.
const std::chrono::system_clock::time_point kDayStart{std::chrono::seconds(1'773'532'800)};    // kDay
const std::chrono::system_clock::time_point kMonthStart{std::chrono::seconds(1'772'323'200)};  // kMonth

TEST_F(UsageLedgerPg, ALimitAddedInFlightLeavesTheNewPotsLeaseAlone) {
  // Admitted when the key had no limit: credits and budget only. Before the
  // row is written the key gets a daily limit and this replica a lease of it
  // (for later calls); the call never reserved anything in that pot.
  int64_t key = CreateKey(prepaid_, std::nullopt);
  UsageEvent e = Call("gen-1", 40);
  e.api_key_id = key;
  e.leased_pots = {{"credits", prepaid_, std::chrono::system_clock::time_point{}},
                   {"budget", prepaid_, kMonthStart}};
  Query("UPDATE api_keys SET credit_limit_nano_usd = 5000, limit_reset = 'daily' WHERE id = " + std::to_string(key));
  Lease("r1:boot", "key", key, kDay, 200);
  auto recorder = UsageRecorder::Start(url(), 60'000, 100);
  ASSERT_TRUE(recorder) << recorder.error().message;
  (*recorder)->Record(e);
  (*recorder)->Flush();
  EXPECT_EQ(LeaseAmount("r1:boot", "key", key, kDay), 200);
  EXPECT_EQ(LeaseAmount("r1:boot", "credits", prepaid_, "'epoch'"), 460);
  EXPECT_EQ(LeaseAmount("r1:boot", "budget", prepaid_, kMonth), 460);
  EXPECT_EQ(LeaseAmount("r2:boot", "credits", prepaid_, "'epoch'"), 300);
  // The spend is still accounted by the settings at write time.
  EXPECT_EQ(PeriodUsage("key", key, kDay), 40);
  EXPECT_EQ(PeriodUsage("budget", prepaid_, kMonth), 40);
  EXPECT_EQ(Balance(prepaid_), 960);
  ExpectBalancesMatchTheLedger();
}

TEST_F(UsageLedgerPg, AResetOrPrepaidChangedInFlightTakesFromTheAdmittedPots) {
  // Admitted under the daily key pot, credits and the monthly budget; then
  // the key's reset becomes monthly (this replica leases that period too)
  // and the account turns postpaid with its budget dropped.
  Lease("r1:boot", "key", limited_key_, kMonth, 500);
  UsageEvent e = Call("gen-1", 70);
  e.leased_pots = {{"key", limited_key_, kDayStart},
                   {"credits", prepaid_, std::chrono::system_clock::time_point{}},
                   {"budget", prepaid_, kMonthStart}};
  Query("UPDATE api_keys SET limit_reset = 'monthly' WHERE id = " + std::to_string(limited_key_));
  Query("UPDATE accounts SET prepaid = false, budget_nano_usd = NULL WHERE id = " + std::to_string(prepaid_));
  auto recorder = UsageRecorder::Start(url(), 60'000, 100);
  ASSERT_TRUE(recorder) << recorder.error().message;
  (*recorder)->Record(e);
  // Another call of the same batch admitted after the change: the monthly pot.
  UsageEvent later = Call("gen-2", 5);
  later.leased_pots = {{"key", limited_key_, kMonthStart}};
  (*recorder)->Record(later);
  (*recorder)->Flush();
  EXPECT_EQ(LeaseAmount("r1:boot", "key", limited_key_, kDay), 430);
  EXPECT_EQ(LeaseAmount("r1:boot", "key", limited_key_, kMonth), 495);
  EXPECT_EQ(LeaseAmount("r1:boot", "credits", prepaid_, "'epoch'"), 430);
  EXPECT_EQ(LeaseAmount("r1:boot", "budget", prepaid_, kMonth), 430);
  EXPECT_EQ(PeriodUsage("key", limited_key_, kMonth), 75);
  EXPECT_EQ(PeriodUsage("key", limited_key_, kDay), 0);
  EXPECT_EQ(Balance(prepaid_), 925);

  // Written again (a replay): nothing is taken twice.
  std::string once = State();
  (*recorder)->Record(e);
  (*recorder)->Record(later);
  (*recorder)->Flush();
  EXPECT_EQ(State(), once);
  ExpectBalancesMatchTheLedger();
}

TEST_F(UsageLedgerPg, ARowWithALeaseHolderButNoPotsTakesFromThePotsOfTheSettingsNow) {
  // A spool record of an older gateway: the pots derived at write time.
  Query("UPDATE api_keys SET limit_reset = 'monthly' WHERE id = " + std::to_string(limited_key_));
  Lease("r1:boot", "key", limited_key_, kMonth, 500);
  auto recorder = UsageRecorder::Start(url(), 60'000, 100);
  ASSERT_TRUE(recorder) << recorder.error().message;
  UsageEvent e = Call("gen-1", 10);
  ASSERT_TRUE(e.leased_pots.empty());
  (*recorder)->Record(e);
  (*recorder)->Flush();
  EXPECT_EQ(LeaseAmount("r1:boot", "key", limited_key_, kMonth), 490);
  EXPECT_EQ(LeaseAmount("r1:boot", "key", limited_key_, kDay), 500);
  EXPECT_EQ(LeaseAmount("r1:boot", "credits", prepaid_, "'epoch'"), 490);
}

TEST_F(UsageLedgerPg, TakesTheAccountFromTheKeyWhenTheEventHasNone) {
  auto recorder = UsageRecorder::Start(url(), 60'000, 100);
  ASSERT_TRUE(recorder) << recorder.error().message;
  UsageEvent e = Call("gen-1", 25);
  e.account_id = 0;
  (*recorder)->Record(e);
  (*recorder)->Flush();
  EXPECT_EQ(QueryInt("SELECT account_id FROM usage_events WHERE request_id = 'gen-1'"), prepaid_);
  EXPECT_EQ(Balance(prepaid_), 975);
  EXPECT_EQ(LeaseAmount("r1:boot", "credits", prepaid_, "'epoch'"), 475);
}

TEST_F(UsageLedgerPg, FreeCallsWriteNoLedgerRow) {
  auto recorder = UsageRecorder::Start(url(), 60'000, 100);
  ASSERT_TRUE(recorder) << recorder.error().message;
  (*recorder)->Record(Call("gen-free", 0));
  UsageEvent anonymous = Event("gen-anon", 0);
  anonymous.api_key_id = 0;
  (*recorder)->Record(anonymous);
  (*recorder)->Flush();
  EXPECT_EQ(Rows(), 2);
  EXPECT_EQ(UsageLedgerRows(), 0);
  EXPECT_EQ(Balance(prepaid_), 1000);
  EXPECT_EQ(QueryInt("SELECT count(*) FROM period_usage WHERE usage_nano_usd = 0"), 0);
}

TEST_F(UsageLedgerPg, StoresThePriceSnapshotAndByokColumns) {
  auto recorder = UsageRecorder::Start(url(), 60'000, 100);
  ASSERT_TRUE(recorder) << recorder.error().message;
  UsageEvent e = Call("gen-byok", 5);
  e.price_snapshot = R"({"endpoint":"openai-main","tier":0,"prompt":150000000,"completion":600000000})";
  e.byok = true;
  e.provider_cost = Money{100};
  (*recorder)->Record(e);
  UsageEvent broken = Call("gen-broken-snapshot", 7);
  broken.price_snapshot = "{not json";
  (*recorder)->Record(broken);
  (*recorder)->Flush();
  EXPECT_EQ((*recorder)->rows_rejected(), 0);
  EXPECT_EQ(QueryInt("SELECT count(*) FROM usage_events WHERE request_id = 'gen-byok' AND byok"
                     " AND provider_cost_nano_usd = 100 AND lease_holder = 'r1:boot' AND account_id = " +
                     std::to_string(prepaid_) +
                     " AND price_snapshot = '{\"tier\": 0, \"prompt\": 150000000, \"endpoint\": \"openai-main\","
                     " \"completion\": 600000000}'::jsonb"),
            1);
  EXPECT_EQ(QueryInt("SELECT count(*) FROM usage_events WHERE request_id = 'gen-broken-snapshot'"
                     " AND price_snapshot IS NULL AND NOT byok AND provider_cost_nano_usd IS NULL"),
            1);
  EXPECT_EQ(Balance(prepaid_), 988);  // the fee is what is charged
}

TEST_F(UsageLedgerPg, AnUnknownAccountRejectsOnlyThatRow) {
  SetLogHandler([](LogLevel, std::string_view) {});
  auto recorder = UsageRecorder::Start(url(), 60'000, 100);
  ASSERT_TRUE(recorder) << recorder.error().message;
  UsageEvent bad = Call("gen-bad-account", 10);
  bad.account_id = 987654;  // ledger_entries.account_id references accounts
  (*recorder)->Record(Call("gen-ok", 10));
  (*recorder)->Record(bad);
  (*recorder)->Flush();
  EXPECT_EQ((*recorder)->rows_rejected(), 1);
  EXPECT_EQ(Rows(), 1);
  EXPECT_EQ(Balance(prepaid_), 990);
  ExpectBalancesMatchTheLedger();
}

TEST_F(UsageLedgerPg, BalanceEqualsTheLedgerUnderConcurrentReplicas) {
  int64_t second_key = CreateKey(prepaid_, 1'000'000, "daily");
  auto a = UsageRecorder::Start(url(), 5, 16);
  auto b = UsageRecorder::Start(url(), 7, 23);
  ASSERT_TRUE(a) << a.error().message;
  ASSERT_TRUE(b) << b.error().message;
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      UsageRecorder& r = t % 2 == 0 ? **a : **b;
      // Ids overlap between the two replicas: each call is charged once.
      for (int i = 0; i < 150; ++i) {
        UsageEvent e = Call("gen-" + std::to_string(t / 2) + "-" + std::to_string(i), 1 + i % 7);
        if (i % 3 == 0) e.api_key_id = second_key;
        if (i % 5 == 0) e.account_id = 0;
        r.Record(e);
      }
    });
  }
  for (auto& th : threads) th.join();
  (*a)->Flush();
  (*b)->Flush();
  EXPECT_EQ(Rows(), 300);
  EXPECT_EQ(UsageLedgerRows(), 300);
  int64_t charged = QueryInt("SELECT sum(cost_nano_usd) FROM usage_events");
  EXPECT_EQ(Balance(prepaid_), 1000 - charged);
  ExpectBalancesMatchTheLedger();
  EXPECT_EQ(PeriodUsage("budget", prepaid_, kMonth), charged);
  EXPECT_EQ(PeriodUsage("key", limited_key_, kDay) + PeriodUsage("key", second_key, kDay), charged);
  EXPECT_EQ(LeaseAmount("r1:boot", "credits", prepaid_, "'epoch'"), std::max<int64_t>(500 - charged, 0));
  EXPECT_EQ((*a)->rows_written() + (*b)->rows_written(), 300);
}

// ---------------------------------------------------------------- the spool

TEST_F(UsageLedgerPg, ReplayingRowsTheDatabaseHasChargesNothingTwice) {
  fs::path backup = fs::path(SpoolDir()).string() + "-copy";
  fs::create_directories(backup);
  std::string once;
  {
    auto recorder = UsageRecorder::Start(url(), Spooled());
    ASSERT_TRUE(recorder) << recorder.error().message;
    Durable durable;
    for (int i = 0; i < 20; ++i) (*recorder)->Record(Call("gen-" + std::to_string(i), 10 + i), durable.Callback());
    ASSERT_TRUE(durable.WaitFor(20));
    // What a crash after the COMMIT, before the spool file was deleted, leaves.
    for (const fs::path& segment : SpoolSegments()) fs::copy_file(segment, backup / segment.filename());
    (*recorder)->Stop();
    EXPECT_EQ((*recorder)->rows_written(), 20);
    EXPECT_TRUE(SpoolSegments().empty()) << "committed segments are deleted";
    once = State();
  }
  for (const auto& entry : fs::directory_iterator(backup)) {
    fs::copy_file(entry.path(), fs::path(SpoolDir()) / entry.path().filename());
  }
  fs::remove_all(backup);
  auto recorder = UsageRecorder::Start(url(), Spooled());
  ASSERT_TRUE(recorder) << recorder.error().message;
  EXPECT_EQ((*recorder)->rows_replayed(), 20);
  (*recorder)->Flush();
  EXPECT_EQ((*recorder)->rows_duplicate(), 20);
  EXPECT_EQ((*recorder)->rows_written(), 0);
  EXPECT_EQ(State(), once);
  ExpectBalancesMatchTheLedger();
  (*recorder)->Stop();
  EXPECT_TRUE(SpoolSegments().empty());
}

TEST_F(UsageLedgerPg, RowsSpooledWithoutADatabaseLandOnceAfterARestart) {
  std::string stable_id;
  {
    SetLogHandler([](LogLevel, std::string_view) {});
    // No database at all: Start still succeeds with a spool.
    auto recorder = UsageRecorder::Start(kUnreachable, Spooled(10));
    ASSERT_TRUE(recorder) << recorder.error().message;
    stable_id = (*recorder)->replica_stable_id();
    Durable durable;
    for (int i = 0; i < 25; ++i) (*recorder)->Record(Call("gen-" + std::to_string(i), 4), durable.Callback());
    ASSERT_TRUE(durable.WaitFor(25)) << "durable in the spool, with no database";
    EXPECT_EQ(durable.threads.count(std::this_thread::get_id()), 0u);
    EXPECT_TRUE((*recorder)->StopWithin(0ms)) << "spooled rows are not lost";
    EXPECT_EQ((*recorder)->rows_left_in_spool(), 25);
    EXPECT_EQ((*recorder)->rows_lost(), 0);
    SetLogHandler(nullptr);
  }
  // Twice: the first start writes them, the second finds nothing left.
  for (int round = 0; round < 2; ++round) {
    auto recorder = UsageRecorder::Start(url(), Spooled());
    ASSERT_TRUE(recorder) << recorder.error().message;
    EXPECT_EQ((*recorder)->replica_stable_id(), stable_id);
    EXPECT_EQ((*recorder)->rows_replayed(), round == 0 ? 25 : 0);
    (*recorder)->Flush();
    (*recorder)->Stop();
    EXPECT_EQ(Rows(), 25);
    EXPECT_EQ(UsageLedgerRows(), 25);
    EXPECT_EQ(QueryInt("SELECT count(DISTINCT request_id) FROM usage_events"), 25);
    EXPECT_EQ(Balance(prepaid_), 900);
    EXPECT_EQ(PeriodUsage("key", limited_key_, kDay), 100);
    EXPECT_EQ(LeaseAmount("r1:boot", "credits", prepaid_, "'epoch'"), 400);
    EXPECT_TRUE(SpoolSegments().empty());
  }
}

TEST_F(UsageLedgerPg, AnUnreachableDatabaseAtStartKeepsRowsUntilItComesBack) {
  std::atomic<int> warnings{0};
  SetLogHandler([&](LogLevel level, std::string_view message) {
    if (level == LogLevel::kWarning && message.find("unreachable at start") != std::string_view::npos) ++warnings;
  });
  BeginOutage();
  auto recorder = UsageRecorder::Start(url(), Spooled(10));
  ASSERT_TRUE(recorder) << recorder.error().message;
  EXPECT_EQ(warnings.load(), 1);
  Durable durable;
  for (int i = 0; i < 5; ++i) (*recorder)->Record(Call("gen-" + std::to_string(i), 10), durable.Callback());
  ASSERT_TRUE(durable.WaitFor(5));
  EXPECT_TRUE(WaitFor([&] { return (*recorder)->failures() >= 2; }));
  EXPECT_FALSE((*recorder)->FlushFor(50ms));
  EXPECT_EQ((*recorder)->pending(), 5);
  EXPECT_TRUE((*recorder)->FindPending("gen-3"));
  EndOutage();
  EXPECT_TRUE((*recorder)->FlushFor(30s));
  EXPECT_EQ(Rows(), 5);
  EXPECT_EQ(Balance(prepaid_), 950);
  (*recorder)->Stop();
  EXPECT_TRUE(SpoolSegments().empty());
  EXPECT_EQ(durable.Calls(), 5) << "each callback ran once";
}

TEST_F(UsageRecorderPg, OnDurableRunsOnceForEveryRecord) {
  {
    // Without a spool: at once, inside Record.
    auto recorder = UsageRecorder::Start(url(), 60'000, 100);
    ASSERT_TRUE(recorder) << recorder.error().message;
    Durable durable;
    (*recorder)->Record(Event("gen-1", 1), durable.Callback());
    EXPECT_EQ(durable.Calls(), 1);
    (*recorder)->Record(Event("gen-1", 1), durable.Callback());  // a duplicate
    EXPECT_EQ(durable.Calls(), 2);
    (*recorder)->Record(Event("gen-2", 1));  // none
    (*recorder)->Stop();
    SetLogHandler([](LogLevel, std::string_view) {});
    (*recorder)->Record(Event("gen-late", 1), durable.Callback());  // lost, but nobody hangs
    EXPECT_EQ(durable.Calls(), 3);
    SetLogHandler(nullptr);
  }
  // With a spool: on the spool thread, once synced; a duplicate's too.
  auto recorder = UsageRecorder::Start(url(), Spooled());
  ASSERT_TRUE(recorder) << recorder.error().message;
  Durable durable;
  (*recorder)->Record(Event("gen-3", 1), durable.Callback());
  (*recorder)->Record(Event("gen-3", 1), durable.Callback());
  ASSERT_TRUE(durable.WaitFor(2));
  (*recorder)->Record(Event("gen-3", 1), durable.Callback());  // the first is durable already
  ASSERT_TRUE(durable.WaitFor(3));
  EXPECT_EQ(durable.threads.count(std::this_thread::get_id()), 0u);
  EXPECT_EQ((*recorder)->duplicates_ignored(), 2);
  EXPECT_GE((*recorder)->spool_syncs(), 1);
  (*recorder)->Flush();
  EXPECT_EQ(durable.Calls(), 3);
}

TEST_F(UsageRecorderPg, ASpoolDirectoryServesOneRecorder) {
  auto first = UsageRecorder::Start(url(), Spooled());
  ASSERT_TRUE(first) << first.error().message;
  auto second = UsageRecorder::Start(url(), Spooled());
  ASSERT_FALSE(second);
  EXPECT_EQ(second.error().code, ErrorCode::kConflict);
  EXPECT_NE(second.error().message.find(SpoolDir()), std::string::npos) << second.error().message;
  std::string id = (*first)->replica_stable_id();
  EXPECT_EQ(id.size(), 32u);
  (*first)->Stop();
  first->reset();
  auto third = UsageRecorder::Start(url(), Spooled());
  ASSERT_TRUE(third) << third.error().message;
  EXPECT_EQ((*third)->replica_stable_id(), id);

  auto no_spool_a = UsageRecorder::Start(url(), 60'000, 100);
  auto no_spool_b = UsageRecorder::Start(url(), 60'000, 100);
  ASSERT_TRUE(no_spool_a && no_spool_b);
  EXPECT_EQ((*no_spool_a)->replica_stable_id().size(), 32u);
  EXPECT_NE((*no_spool_a)->replica_stable_id(), (*no_spool_b)->replica_stable_id());
  EXPECT_NE((*no_spool_a)->replica_stable_id(), id);
}

TEST_F(UsageRecorderPg, StopWithinLosesNothingThatIsSpooled) {
  SetLogHandler([](LogLevel, std::string_view) {});
  auto recorder = UsageRecorder::Start(url(), Spooled(10));
  ASSERT_TRUE(recorder) << recorder.error().message;
  BeginOutage();
  Durable durable;
  (*recorder)->Record(Event("gen-1", 1), durable.Callback());
  ASSERT_TRUE(durable.WaitFor(1));
  EXPECT_TRUE((*recorder)->StopWithin(200ms));
  EXPECT_EQ((*recorder)->rows_lost(), 0);
  EXPECT_EQ((*recorder)->rows_left_in_spool(), 1);
  EXPECT_EQ(SpoolSegments().size(), 1u);
  EndOutage();
  auto again = UsageRecorder::Start(url(), Spooled());
  ASSERT_TRUE(again) << again.error().message;
  (*again)->Flush();
  EXPECT_EQ(Rows(), 1);
  EXPECT_EQ(Spent(), 1);
}

// A reachable database without the schema fails Start with a spool too.
class UsageRecorderNoSchemaPg : public testing::PgTest {};

TEST_F(UsageRecorderNoSchemaPg, StartSaysToRunMigrateEvenWithASpool) {
  std::string pattern = (fs::temp_directory_path() / "tg-usage-spool-XXXXXX").string();
  ASSERT_NE(::mkdtemp(pattern.data()), nullptr);
  UsageRecorderOptions options;
  options.spool_dir = pattern;
  auto recorder = UsageRecorder::Start(url(), options);
  ASSERT_FALSE(recorder);
  EXPECT_NE(recorder.error().message.find("tollgate migrate"), std::string::npos) << recorder.error().message;
  // The spool was released: a fixed start can take it.
  Migrate();
  auto fixed = UsageRecorder::Start(url(), options);
  EXPECT_TRUE(fixed) << fixed.error().message;
  if (fixed) fixed->reset();
  std::error_code ec;
  fs::remove_all(pattern, ec);
}

}  // namespace
}  // namespace tollgate::billing
