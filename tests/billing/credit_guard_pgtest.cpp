// CreditGuard against a real PostgreSQL: two replicas (two guards with their
// own replica ids) admitting and settling from many threads, with a stand-in
// for the usage writer that writes each settlement as the real one does
// (ledger row, balance, period usage, lease decrement in one transaction);
// the SQL lease functions of migrations/005_leases.sql compared with the pure
// rules of billing/src/credit_pots.cpp; refusals, invalidation, expiry,
// outages.
#include "tollgate/billing/credit_guard.hpp"

#include "pg_test_database.hpp"

#include <libpq-fe.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <future>
#include <latch>
#include <mutex>
#include <random>
#include <string>
#include <tuple>
#include <thread>
#include <vector>

namespace tollgate::billing {
namespace {

using std::chrono::system_clock;
using testing::WaitFor;

constexpr int64_t kW = 1'000'000;  // one call's worst case: $0.001

std::string PotScopeSql(PotScope s) { return std::string(PotScopeName(s)); }
int64_t Micros(system_clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::microseconds>(t.time_since_epoch()).count();
}

// Writes settled calls behind, as the usage writer does: in ONE transaction
// the ledger 'usage' row (idempotency key = request id) and the balance, the
// period usage of the key and budget pots, and the cost taken off the lease
// rows of the call's lease holder (in pot order, like tollgate_lease_renew).
class UsageWriterStandIn {
 public:
  struct Item {
    std::string request_id;
    int64_t key_id = 0;
    int64_t account_id = 0;
    AdmitTicket ticket;
    int64_t charged = 0;
  };

  explicit UsageWriterStandIn(const std::string& url) : conn_(PQconnectdb(url.c_str())) {
    thread_ = std::thread([this] { Run(); });
  }
  ~UsageWriterStandIn() {
    {
      std::lock_guard lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    thread_.join();
    PQfinish(conn_);
  }
  void Push(Item item) {
    std::lock_guard lock(mu_);
    queue_.push_back(std::move(item));
    cv_.notify_all();
  }
  // Waits until everything pushed is written.
  bool Drain(int timeout_ms = 20'000) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, std::chrono::milliseconds(timeout_ms), [&] { return queue_.empty() && !busy_; });
  }
  int64_t failures() const { return failures_; }

 private:
  static std::string Sql(const Item& item) {
    const std::string c = std::to_string(item.charged);
    std::string sql = "BEGIN;";
    sql += "INSERT INTO ledger_entries (account_id, amount_nano_usd, kind, idempotency_key, request_id, api_key_id) "
           "VALUES (" + std::to_string(item.account_id) + ", -" + c + ", 'usage', '" + item.request_id + "', '" +
           item.request_id + "', " + std::to_string(item.key_id) + ");";
    sql += "UPDATE accounts SET balance_nano_usd = balance_nano_usd - " + c +
           " WHERE id = " + std::to_string(item.account_id) + ";";
    sql += "UPDATE api_keys SET spent_nano_usd = spent_nano_usd + " + c + " WHERE id = " +
           std::to_string(item.key_id) + ";";
    for (const PotRef& pot : item.ticket.pots) {
      if (pot.scope == PotScope::kCredits) continue;
      sql += "INSERT INTO period_usage (scope, owner_id, period_start, usage_nano_usd) VALUES ('" +
             PotScopeSql(pot.scope) + "', " + std::to_string(pot.owner_id) + ", tollgate_micros_ts(" +
             std::to_string(Micros(pot.period_start)) + "), " + c +
             ") ON CONFLICT (scope, owner_id, period_start) DO UPDATE "
             "SET usage_nano_usd = period_usage.usage_nano_usd + EXCLUDED.usage_nano_usd;";
    }
    std::vector<PotRef> ordered = item.ticket.pots;
    std::sort(ordered.begin(), ordered.end(), [](const PotRef& a, const PotRef& b) {
      return std::make_tuple(PotScopeSql(a.scope), a.owner_id, a.period_start) <
             std::make_tuple(PotScopeSql(b.scope), b.owner_id, b.period_start);
    });
    for (const PotRef& pot : ordered) {
      sql += "UPDATE credit_leases SET amount_nano_usd = GREATEST(amount_nano_usd - " + c +
             ", 0) WHERE replica_id = '" + item.ticket.lease_holder + "' AND scope = '" + PotScopeSql(pot.scope) +
             "' AND owner_id = " + std::to_string(pot.owner_id) +
             " AND period_start = tollgate_micros_ts(" + std::to_string(Micros(pot.period_start)) + ");";
    }
    sql += "COMMIT;";
    return sql;
  }

  void Run() {
    std::unique_lock lock(mu_);
    while (true) {
      cv_.wait(lock, [&] { return stop_ || !queue_.empty(); });
      if (queue_.empty()) return;
      Item item = queue_.front();
      busy_ = true;
      lock.unlock();
      for (int attempt = 0;; ++attempt) {  // retried like the real writer (deadlock, lost connection)
        PGresult* res = PQexec(conn_, Sql(item).c_str());
        const bool ok = PQresultStatus(res) == PGRES_COMMAND_OK;
        PQclear(res);
        if (ok) break;
        ++failures_;
        PQclear(PQexec(conn_, "ROLLBACK"));
        if (PQstatus(conn_) != CONNECTION_OK) PQreset(conn_);
        if (attempt > 50) break;
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
      }
      lock.lock();
      queue_.pop_front();
      busy_ = false;
      cv_.notify_all();
    }
  }

  PGconn* conn_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Item> queue_;
  bool busy_ = false;
  bool stop_ = false;
  std::atomic<int64_t> failures_{0};
  std::thread thread_;
};

AdmitResult AdmitSync(CreditGuard& guard, const KeyRecord& key, int64_t worst,
                      system_clock::time_point call_time = system_clock::now()) {
  auto promise = std::make_shared<std::promise<AdmitResult>>();
  std::future<AdmitResult> future = promise->get_future();
  guard.Admit(key, Money{worst}, call_time, [promise](AdmitResult r) { promise->set_value(std::move(r)); });
  if (future.wait_for(std::chrono::seconds(15)) != std::future_status::ready) {
    ADD_FAILURE() << "Admit never answered";
    return AdmitResult{};
  }
  return future.get();
}

class CreditGuardPg : public testing::MigratedPgTest {
 protected:
  int64_t MakeAccount(bool prepaid, std::optional<int64_t> budget = std::nullopt,
                      const std::string& budget_reset = "none") {
    return QueryInt("INSERT INTO accounts (name, prepaid, budget_nano_usd, budget_reset) VALUES ('acct', " +
                    std::string(prepaid ? "true" : "false") + ", " +
                    (budget ? std::to_string(*budget) : std::string("NULL")) + ", '" + budget_reset +
                    "') RETURNING id");
  }
  int64_t MakeKey(int64_t account, std::optional<int64_t> limit = std::nullopt,
                  const std::string& reset = "none") {
    return QueryInt("INSERT INTO api_keys (name, key_hash, account_id, credit_limit_nano_usd, limit_reset) "
                    "VALUES ('k', md5(random()::text), " + std::to_string(account) + ", " +
                    (limit ? std::to_string(*limit) : std::string("NULL")) + ", '" + reset + "') RETURNING id");
  }
  void AddCredits(int64_t account, int64_t amount) {
    Query("WITH l AS (INSERT INTO ledger_entries (account_id, amount_nano_usd, kind, idempotency_key) VALUES (" +
          std::to_string(account) + ", " + std::to_string(amount) + ", 'credit', 'topup-' || random()::text) "
          "RETURNING amount_nano_usd) "
          "UPDATE accounts SET balance_nano_usd = balance_nano_usd + (SELECT amount_nano_usd FROM l) WHERE id = " +
          std::to_string(account) + " RETURNING id");
  }
  static KeyRecord Record(int64_t key_id, int64_t account, bool prepaid, std::optional<int64_t> limit = std::nullopt,
                          LimitReset reset = LimitReset::kNone, std::optional<int64_t> budget = std::nullopt,
                          LimitReset budget_reset = LimitReset::kNone) {
    KeyRecord k;
    k.id = key_id;
    k.account_id = account;
    k.account.id = account;
    k.account.prepaid = prepaid;
    if (limit) k.credit_limit = Money{*limit};
    k.limit_reset = reset;
    if (budget) k.account.budget = Money{*budget};
    k.account.budget_reset = budget_reset;
    return k;
  }
  std::unique_ptr<CreditGuard> StartGuard(const std::string& replica, CreditGuardOptions options = {}) {
    auto guard = CreditGuard::Start(url(), replica, options);
    EXPECT_TRUE(guard) << guard.error().message;
    return guard ? std::move(*guard) : nullptr;
  }

  struct LoadResult {
    int admitted = 0;
    int refused = 0;
    int other = 0;
    int64_t charged = 0;
    std::vector<std::string> messages;
  };
  // kBurst: 200 concurrent calls, released together, 100 per replica, each
  // lasting up to 20 ms. kSteady: 16 threads (8 per replica) making 400 calls
  // one after the other, with pots returned after 20 ms idle, so returns race
  // admissions. Every call has worst case kW and a real cost in
  // [kW/2, 3kW/2] (above the worst case half the time: clamped).
  enum class Shape { kBurst, kSteady };
  LoadResult RunLoad(const std::vector<KeyRecord>& keys, system_clock::time_point call_time,
                     Shape shape = Shape::kBurst) {
    const bool burst = shape == Shape::kBurst;
    CreditGuardOptions options;
    // No idle returns during a burst: the check below compares the leases
    // with the local free amounts, which a return in flight would race.
    options.idle_return_after = burst ? std::chrono::milliseconds(600'000) : std::chrono::milliseconds(20);
    auto a = StartGuard("gw-a:1", options);
    auto b = StartGuard("gw-b:1", options);
    if (!a || !b) return {};
    UsageWriterStandIn writer(url());
    std::mutex mu;
    LoadResult out;
    const int calls = burst ? 200 : 400;
    const int thread_count = burst ? 200 : 16;
    std::latch start(thread_count);
    std::atomic<int> next{0};
    auto one_call = [&](CreditGuard& guard, int call, std::mt19937_64& rng) {
      const KeyRecord& key = keys[static_cast<size_t>(call / 2) % keys.size()];
      AdmitResult r = AdmitSync(guard, key, kW, call_time);
      if (!r.admitted()) {
        std::lock_guard lock(mu);
        (r.outcome == AdmitOutcome::kRefused ? out.refused : out.other)++;
        if (out.messages.size() < 3) out.messages.push_back(r.message);
        return;
      }
      std::this_thread::sleep_for(std::chrono::microseconds(rng() % (burst ? 20'000 : 3'000)));
      const int64_t cost = kW / 2 + static_cast<int64_t>(rng() % static_cast<uint64_t>(kW));
      const int64_t charged = guard.Settle(r.ticket, Money{cost}).nano_usd;
      EXPECT_EQ(charged, std::min(cost, kW));
      writer.Push({"req-" + std::to_string(call), key.id, key.account_id, r.ticket, charged});
      std::lock_guard lock(mu);
      ++out.admitted;
      out.charged += charged;
    };
    std::vector<std::thread> threads;
    for (int t = 0; t < thread_count; ++t) {
      threads.emplace_back([&, t] {
        CreditGuard& guard = t % 2 == 0 ? *a : *b;
        std::mt19937_64 rng(static_cast<uint64_t>(t) + 1);
        start.arrive_and_wait();
        for (int call; (call = next.fetch_add(1)) < calls;) one_call(guard, call, rng);
      });
    }
    for (auto& th : threads) th.join();
    EXPECT_TRUE(writer.Drain());
    // Everything written: each replica's database lease is exactly its local
    // free amount (nothing reserved, nothing unwritten).
    for (CreditGuard* g : {a.get(), b.get()}) {
      if (!burst) break;
      int64_t local_free = 0;
      const int64_t leased = QueryInt("SELECT COALESCE(sum(amount_nano_usd), 0) FROM credit_leases WHERE replica_id = '" +
                                      g->replica_id() + "'");
      for (const auto& pot : PotsOf(keys, call_time)) {
        if (auto view = g->Pot(pot)) {
          EXPECT_EQ(view->reserved.nano_usd, 0);
          local_free += view->free.nano_usd;
        }
      }
      EXPECT_EQ(leased, local_free) << g->replica_id();
    }
    a->Stop();
    b->Stop();
    EXPECT_EQ(QueryInt("SELECT COALESCE(sum(amount_nano_usd), 0) FROM credit_leases"), 0)
        << "every lease returned or used up after Stop";
    const CreditGuardCounters ca = a->counters(), cb = b->counters();
    std::printf("load: admitted %d refused %d other %d charged %lld; grants %lld+%lld round trips %lld+%lld "
                "inline %lld+%lld\n",
                out.admitted, out.refused, out.other, static_cast<long long>(out.charged),
                static_cast<long long>(ca.lease_grants), static_cast<long long>(cb.lease_grants),
                static_cast<long long>(ca.db_round_trips), static_cast<long long>(cb.db_round_trips),
                static_cast<long long>(ca.admitted_inline), static_cast<long long>(cb.admitted_inline));
    EXPECT_EQ(ca.lost_nano_usd + cb.lost_nano_usd, 0);
    return out;
  }

  static std::vector<PotRef> PotsOf(const std::vector<KeyRecord>& keys, system_clock::time_point call_time) {
    std::vector<PotRef> out;
    for (const KeyRecord& k : keys) {
      if (k.credit_limit) out.push_back({PotScope::kKey, k.id, PeriodStart(k.limit_reset, call_time)});
      PotRef credits{PotScope::kCredits, k.account_id, {}};
      if (k.account.prepaid && std::find(out.begin(), out.end(), credits) == out.end()) out.push_back(credits);
      if (k.account.budget) {
        PotRef budget{PotScope::kBudget, k.account_id, PeriodStart(k.account.budget_reset, call_time)};
        if (std::find(out.begin(), out.end(), budget) == out.end()) out.push_back(budget);
      }
    }
    return out;
  }
};

TEST_F(CreditGuardPg, TwoReplicasNeverOverspendPrepaidCredits) {
  const int64_t account = MakeAccount(/*prepaid=*/true);
  const int64_t key = MakeKey(account);
  const int64_t credits = 50 * kW;
  AddCredits(account, credits);
  LoadResult load = RunLoad({Record(key, account, true)}, system_clock::now());
  const int64_t balance = QueryInt("SELECT balance_nano_usd FROM accounts WHERE id = " + std::to_string(account));
  EXPECT_GE(balance, 0);
  EXPECT_EQ(balance, credits - load.charged);
  EXPECT_EQ(balance, QueryInt("SELECT sum(amount_nano_usd) FROM ledger_entries WHERE account_id = " +
                              std::to_string(account)));
  EXPECT_EQ(load.other, 0);
  EXPECT_GT(load.refused, 100);
  // Leasing strands little: what each replica held free at the end (what
  // its last settlements gave back after its last refusal).
  EXPECT_GT(load.charged, credits - 20 * kW);
  ASSERT_FALSE(load.messages.empty());
  EXPECT_NE(load.messages[0].find("account credits: this call may cost up to $0.001 but only $"), std::string::npos)
      << load.messages[0];
}

TEST_F(CreditGuardPg, TwoReplicasUnderSteadyLoadWithIdleReturns) {
  const int64_t account = MakeAccount(/*prepaid=*/true);
  const int64_t key = MakeKey(account);
  const int64_t credits = 50 * kW;
  AddCredits(account, credits);
  LoadResult load = RunLoad({Record(key, account, true)}, system_clock::now(), Shape::kSteady);
  const int64_t balance = QueryInt("SELECT balance_nano_usd FROM accounts WHERE id = " + std::to_string(account));
  EXPECT_GE(balance, 0);
  EXPECT_EQ(balance, credits - load.charged);
  EXPECT_EQ(load.other, 0);
  EXPECT_GT(load.refused, 100);
  EXPECT_GT(load.charged, credits - 20 * kW);
}

TEST_F(CreditGuardPg, TwoReplicasNeverOverspendAKeyLimit) {
  const int64_t account = MakeAccount(/*prepaid=*/false);
  const int64_t limit = 50 * kW;
  const int64_t key = MakeKey(account, limit, "daily");
  const auto call_time = system_clock::now();
  LoadResult load = RunLoad({Record(key, account, false, limit, LimitReset::kDaily)}, call_time);
  const int64_t used = QueryInt(
      "SELECT usage_nano_usd FROM period_usage WHERE scope = 'key' AND owner_id = " + std::to_string(key) +
      " AND period_start = tollgate_micros_ts(" + std::to_string(Micros(PeriodStart(LimitReset::kDaily, call_time))) +
      ")");
  EXPECT_LE(used, limit);
  EXPECT_EQ(used, load.charged);
  EXPECT_EQ(QueryInt("SELECT balance_nano_usd FROM accounts WHERE id = " + std::to_string(account)), -load.charged);
  EXPECT_EQ(load.other, 0);
  EXPECT_GT(load.refused, 100);
  EXPECT_GT(load.charged, limit - 20 * kW);
  ASSERT_FALSE(load.messages.empty());
  EXPECT_NE(load.messages[0].find("key limit: this call may cost up to $0.001 but only $"), std::string::npos);
  EXPECT_NE(load.messages[0].find(" of the key's $0.05 daily limit is left"), std::string::npos) << load.messages[0];
}

TEST_F(CreditGuardPg, TwoReplicasNeverOverspendASharedAccountBudget) {
  const int64_t budget = 50 * kW;
  const int64_t account = MakeAccount(/*prepaid=*/false, budget, "monthly");
  const int64_t key1 = MakeKey(account);
  const int64_t key2 = MakeKey(account);
  const auto call_time = system_clock::now();
  LoadResult load = RunLoad({Record(key1, account, false, std::nullopt, LimitReset::kNone, budget, LimitReset::kMonthly),
                             Record(key2, account, false, std::nullopt, LimitReset::kNone, budget, LimitReset::kMonthly)},
                            call_time);
  const int64_t used = QueryInt(
      "SELECT usage_nano_usd FROM period_usage WHERE scope = 'budget' AND owner_id = " + std::to_string(account) +
      " AND period_start = tollgate_micros_ts(" +
      std::to_string(Micros(PeriodStart(LimitReset::kMonthly, call_time))) + ")");
  EXPECT_LE(used, budget);
  EXPECT_EQ(used, load.charged);
  EXPECT_EQ(load.other, 0);
  EXPECT_GT(load.refused, 100);
  EXPECT_GT(load.charged, budget - 20 * kW);
  ASSERT_FALSE(load.messages.empty());
  EXPECT_NE(load.messages[0].find(" of the account's $0.05 monthly budget is left"), std::string::npos)
      << load.messages[0];
}

TEST_F(CreditGuardPg, AllThreePotsAtOnce) {
  // Prepaid credits, a key limit and a budget: the smallest one binds.
  const int64_t account = MakeAccount(/*prepaid=*/true, 40 * kW, "monthly");
  const int64_t key = MakeKey(account, 30 * kW, "daily");
  AddCredits(account, 50 * kW);
  const auto call_time = system_clock::now();
  LoadResult load = RunLoad(
      {Record(key, account, true, 30 * kW, LimitReset::kDaily, 40 * kW, LimitReset::kMonthly)}, call_time);
  EXPECT_LE(load.charged, 30 * kW);
  EXPECT_GT(load.charged, 10 * kW);
  EXPECT_EQ(QueryInt("SELECT balance_nano_usd FROM accounts WHERE id = " + std::to_string(account)),
            50 * kW - load.charged);
}

TEST_F(CreditGuardPg, PostpaidWithoutLimitsIsAdmittedWithoutPots) {
  const int64_t account = MakeAccount(/*prepaid=*/false);
  const int64_t key = MakeKey(account);
  auto guard = StartGuard("gw:1");
  ASSERT_TRUE(guard);
  bool inline_answer = false;
  guard->Admit(Record(key, account, false), Money{kW}, system_clock::now(), [&](AdmitResult r) {
    inline_answer = r.admitted() && r.ticket.pots.empty() && r.ticket.lease_holder.empty();
  });
  EXPECT_TRUE(inline_answer);
  AdmitTicket ticket{{}, Money{kW}, ""};
  EXPECT_EQ(guard->Settle(ticket, Money{3 * kW}).nano_usd, 3 * kW);  // nothing to clamp against
  EXPECT_EQ(guard->counters().db_round_trips, 0);
}

TEST_F(CreditGuardPg, RefusalsShareOneQueryAndCreditsAddedAdmitRightAfterInvalidate) {
  const int64_t account = MakeAccount(/*prepaid=*/true);
  const int64_t key = MakeKey(account);
  AddCredits(account, kW / 2);
  CreditGuardOptions options;
  options.refusal_backoff = std::chrono::seconds(30);  // only Invalidate can end it within the test
  auto guard = StartGuard("gw:1", options);
  ASSERT_TRUE(guard);
  const KeyRecord record = Record(key, account, true);

  AdmitResult first = AdmitSync(*guard, record, kW);
  ASSERT_EQ(first.outcome, AdmitOutcome::kRefused);
  EXPECT_EQ(first.refused_pot, PotScope::kCredits);
  EXPECT_EQ(first.needed.nano_usd, kW);
  EXPECT_EQ(first.available.nano_usd, kW / 2);
  EXPECT_EQ(first.message,
            "account credits: this call may cost up to $0.001 but only $0.0005 of the account's credits is left");
  EXPECT_EQ(AdmitError(first).code, ErrorCode::kPaymentRequired);
  const int64_t trips = guard->counters().db_round_trips;

  // A flood of calls that cannot fit: answered inline, no query.
  int refused_inline = 0;
  for (int i = 0; i < 100; ++i) {
    guard->Admit(record, Money{kW}, system_clock::now(), [&](AdmitResult r) {
      if (r.outcome == AdmitOutcome::kRefused) ++refused_inline;
    });
  }
  EXPECT_EQ(refused_inline, 100);
  EXPECT_EQ(guard->counters().db_round_trips, trips);
  EXPECT_GE(guard->counters().refused_without_query, 100);
  // The refusal leased nothing (the room stays for other replicas), and a
  // call that fits what is left still asks and is admitted.
  EXPECT_EQ(QueryInt("SELECT count(*) FROM credit_leases"), 0);
  AdmitResult small = AdmitSync(*guard, record, kW / 4);
  EXPECT_TRUE(small.admitted()) << small.message;
  guard->Settle(small.ticket, Money{0});
  AdmitResult again = AdmitSync(*guard, record, kW);  // asks again: the grant ended the backoff
  ASSERT_EQ(again.outcome, AdmitOutcome::kRefused);
  EXPECT_EQ(again.available.nano_usd, kW / 2) << "the free quarter plus the room left";

  AddCredits(account, 10 * kW);
  EXPECT_EQ(AdmitSync(*guard, record, kW).outcome, AdmitOutcome::kRefused) << "still in the backoff window";
  const auto t0 = std::chrono::steady_clock::now();
  guard->InvalidateAccount(account);
  AdmitResult after = AdmitSync(*guard, record, kW);
  const auto elapsed = std::chrono::steady_clock::now() - t0;
  EXPECT_TRUE(after.admitted()) << after.message;
  EXPECT_LT(elapsed, std::chrono::seconds(1));
  ASSERT_EQ(after.ticket.pots.size(), 1u);
  EXPECT_EQ(after.ticket.lease_holder, "gw:1");
}

TEST_F(CreditGuardPg, ReportsTheSoftLimit) {
  const int64_t account = MakeAccount(/*prepaid=*/false);
  const int64_t key = MakeKey(account, 10 * kW, "none");
  Query("INSERT INTO period_usage VALUES ('key', " + std::to_string(key) + ", 'epoch', " + std::to_string(3 * kW) +
        ") RETURNING 1");
  CreditGuardOptions options;
  options.chunk.room_divisor = 1;  // one grant covers both calls: the estimate counts what was charged since
  auto guard = StartGuard("gw:1", options);
  ASSERT_TRUE(guard);
  KeyRecord record = Record(key, account, false, 10 * kW);
  record.soft_limit = Money{4 * kW};
  AdmitResult r = AdmitSync(*guard, record, kW);
  ASSERT_TRUE(r.admitted());
  EXPECT_FALSE(r.soft_limit_pot);  // 3 used of a soft 4
  guard->Settle(r.ticket, Money{kW});
  r = AdmitSync(*guard, record, kW);
  ASSERT_TRUE(r.admitted());
  ASSERT_TRUE(r.soft_limit_pot);  // 4 used (3 + this replica's 1 since)
  EXPECT_EQ(*r.soft_limit_pot, PotScope::kKey);
}

TEST_F(CreditGuardPg, AnExpiredLeaseOfADeadReplicaIsReclaimed) {
  const int64_t account = MakeAccount(/*prepaid=*/true);
  const int64_t key = MakeKey(account);
  AddCredits(account, 10 * kW);
  // A replica that died holding everything; its lease runs out in a second.
  Query("INSERT INTO credit_leases VALUES ('dead:1', 'credits', " + std::to_string(account) + ", 'epoch', " +
        std::to_string(10 * kW) + ", now() + interval '1 second') RETURNING 1");
  const auto inserted = std::chrono::steady_clock::now();
  CreditGuardOptions options;
  options.refusal_backoff = std::chrono::milliseconds(50);
  auto guard = StartGuard("gw:1", options);
  ASSERT_TRUE(guard);
  const KeyRecord record = Record(key, account, true);
  AdmitResult r = AdmitSync(*guard, record, kW);
  ASSERT_EQ(r.outcome, AdmitOutcome::kRefused);
  EXPECT_EQ(r.available.nano_usd, 0);
  EXPECT_TRUE(WaitFor([&] { return AdmitSync(*guard, record, kW).admitted(); }, 5000));
  EXPECT_GT(std::chrono::steady_clock::now() - inserted, std::chrono::milliseconds(900));
}

TEST_F(CreditGuardPg, DropEarlierBootsFreesTheirLeasesAtOnce) {
  const int64_t account = MakeAccount(/*prepaid=*/true);
  const int64_t key = MakeKey(account);
  AddCredits(account, 10 * kW);
  Query("INSERT INTO credit_leases VALUES ('gw:old', 'credits', " + std::to_string(account) + ", 'epoch', " +
        std::to_string(9 * kW) + ", now() + interval '1 hour'), ('gw:x:new', 'credits', " + std::to_string(account) +
        ", 'epoch', " + std::to_string(kW) + ", now() + interval '1 hour') RETURNING 1");
  CreditGuardOptions options;
  options.refusal_backoff = std::chrono::milliseconds(0);
  auto guard = StartGuard("gw:new", options);
  ASSERT_TRUE(guard);
  const KeyRecord record = Record(key, account, true);
  EXPECT_EQ(AdmitSync(*guard, record, kW).outcome, AdmitOutcome::kRefused);
  auto dropped = guard->DropEarlierBoots();
  ASSERT_TRUE(dropped) << dropped.error().message;
  EXPECT_EQ(*dropped, 1);  // gw:old; not gw:x:new, whose stable id is "gw:x"
  EXPECT_EQ(QueryInt("SELECT count(*) FROM credit_leases WHERE replica_id = 'gw:x:new'"), 1);
  EXPECT_TRUE(AdmitSync(*guard, record, kW).admitted());

  auto bare = StartGuard("no-colon");
  ASSERT_TRUE(bare);
  EXPECT_EQ(bare->DropEarlierBoots().error().code, ErrorCode::kInvalidArgument);
}

// A session of the test's own, kept open (Query opens one per statement).
class Session {
 public:
  explicit Session(const std::string& url) : conn_(PQconnectdb(url.c_str())) {}
  ~Session() { PQfinish(conn_); }
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;
  // The first column of the first row ("" for none or a void result), or
  // "error: ..." when the statement failed.
  std::string Exec(const std::string& sql) {
    PGresult* res = PQexec(conn_, sql.c_str());
    std::string out;
    const ExecStatusType status = PQresultStatus(res);
    if (status == PGRES_TUPLES_OK && PQntuples(res) > 0) {
      out = PQgetvalue(res, 0, 0);
    } else if (status != PGRES_TUPLES_OK && status != PGRES_COMMAND_OK) {
      out = std::string("error: ") + PQerrorMessage(conn_);
    }
    PQclear(res);
    return out;
  }

 private:
  PGconn* conn_;
};

// The backend pid holding the replica lock of `replica`'s stable id in this
// database (pg_locks shows a bigint advisory key as classid/objid halves).
std::string LockHolderSql(const std::string& replica) {
  return "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 1 "
         "AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
         "AND ((classid::bigint << 32) | objid::bigint) = tollgate_replica_lock_key('" + replica + "')";
}

// A gateway started on a copy of a running gateway's spool directory has the
// same stable id: it must not start, let alone drop the running one's leases
// (which let both lease the same credits: a prepaid balance went negative).
TEST_F(CreditGuardPg, ASecondProcessWithTheSameStableIdCannotStartNorDropTheFirstsLeases) {
  const int64_t account = MakeAccount(/*prepaid=*/true);
  const int64_t key = MakeKey(account);
  AddCredits(account, 10 * kW);
  CreditGuardOptions options;
  options.idle_return_after = std::chrono::minutes(10);
  auto first = StartGuard("gw:boot1", options);
  ASSERT_TRUE(first);
  const KeyRecord record = Record(key, account, true);
  AdmitResult r = AdmitSync(*first, record, kW);
  ASSERT_TRUE(r.admitted());
  const std::string first_lease = "SELECT COALESCE(sum(amount_nano_usd), 0) FROM credit_leases WHERE replica_id = 'gw:boot1'";
  const int64_t leased = QueryInt(first_lease);
  EXPECT_GT(leased, 0);

  CreditGuardOptions copy = options;
  copy.replica_lock_wait = std::chrono::milliseconds(300);
  const auto t0 = std::chrono::steady_clock::now();
  auto second = CreditGuard::Start(url(), "gw:boot2", copy);
  const auto waited = std::chrono::steady_clock::now() - t0;
  if (second) {
    (*second)->DropEarlierBoots();  // what the gateway does once its spool is replayed
    ADD_FAILURE() << "a second process with the stable id of a running one started";
  } else {
    EXPECT_EQ(second.error().code, ErrorCode::kConflict);
    EXPECT_EQ(second.error().message,
              "credit guard: another running gateway uses the same replica id \"gw\" (a copied usage.spool_dir?): "
              "each gateway process needs its own spool directory");
    EXPECT_GE(waited, std::chrono::milliseconds(300)) << "it waits for a predecessor's session to end first";
  }
  EXPECT_EQ(QueryInt(first_lease), leased) << "the running process's lease is intact";
  first->Settle(r.ticket, Money{kW / 2});  // not written by any writer here: stays leased after Stop
  EXPECT_TRUE(AdmitSync(*first, record, kW / 2).admitted());
  auto own = first->DropEarlierBoots();  // the lock holder may
  ASSERT_TRUE(own) << own.error().message;
  EXPECT_EQ(*own, 0);

  // A successor started while its predecessor is still stopping (or its
  // killed process's session still ending) waits for the lock, then drops
  // the predecessor's leases.
  std::thread stopper([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    first->Stop();
  });
  CreditGuardOptions patient = options;
  patient.replica_lock_wait = std::chrono::seconds(5);
  auto third = CreditGuard::Start(url(), "gw:boot3", patient);
  stopper.join();
  ASSERT_TRUE(third) << third.error().message;
  EXPECT_GT(QueryInt(first_lease), 0);
  auto dropped = (*third)->DropEarlierBoots();
  ASSERT_TRUE(dropped) << dropped.error().message;
  EXPECT_EQ(*dropped, 1);
  EXPECT_EQ(QueryInt(first_lease), 0);
  // Only a session that holds the lock may drop (the SQL function checks).
  EXPECT_NE(Session(url()).Exec("SELECT tollgate_lease_drop_earlier_boots('gw:boot9')").find("replica lock"),
            std::string::npos);
}

// The lock's session ends while the gateway runs and another process with the
// same stable id takes the lock: the gateway admits nothing more (it could
// lose its leases to the other's DropEarlierBoots) until it has the lock back.
TEST_F(CreditGuardPg, LosingTheReplicaLockToAnotherProcessStopsAdmissionsUntilItIsBack) {
  const int64_t account = MakeAccount(/*prepaid=*/true);
  const int64_t key = MakeKey(account);
  AddCredits(account, 10 * kW);
  CreditGuardOptions options;
  options.idle_return_after = std::chrono::minutes(10);
  options.refusal_backoff = std::chrono::milliseconds(20);
  auto guard = StartGuard("gw:1", options);
  ASSERT_TRUE(guard);
  const KeyRecord record = Record(key, account, true);
  AdmitResult r = AdmitSync(*guard, record, kW);
  ASSERT_TRUE(r.admitted());
  guard->Settle(r.ticket, Money{0});  // all of the lease free again
  const std::optional<std::string> holder = Query(LockHolderSql("gw:1"));
  ASSERT_TRUE(holder) << "the guard holds its replica lock";

  Session intruder(url());
  ASSERT_EQ(intruder.Exec("SELECT pg_terminate_backend(" + *holder + ")"), "t");
  // Blocks until the guard's lock session has ended, then holds the lock.
  ASSERT_EQ(intruder.Exec("SELECT pg_advisory_lock(tollgate_replica_lock_key('gw:2'))"), "");
  auto admit_settled = [&](int64_t worst) {
    AdmitResult a = AdmitSync(*guard, record, worst);
    if (a.admitted()) guard->Settle(a.ticket, Money{0});
    return a;
  };
  // Even calls its free lease covers are answered 503 once it notices.
  EXPECT_TRUE(WaitFor([&] { return admit_settled(kW).outcome == AdmitOutcome::kUnavailable; }, 3000));
  AdmitResult out = admit_settled(kW / 10);
  ASSERT_EQ(out.outcome, AdmitOutcome::kUnavailable);
  EXPECT_EQ(out.message,
            "credit check unavailable: another running gateway uses this gateway's replica id (a copied "
            "usage.spool_dir?); each gateway process needs its own spool directory");
  EXPECT_EQ(AdmitError(out).code_string, "credit_unavailable");
  EXPECT_EQ(AdmitError(out).retry_after, "1");
  // It gives its free lease back, and drops nobody's leases.
  EXPECT_TRUE(WaitFor([&] { return QueryInt("SELECT count(*) FROM credit_leases WHERE replica_id = 'gw:1'") == 0; },
                      3000));
  Query("INSERT INTO credit_leases VALUES ('gw:0', 'credits', " + std::to_string(account) + ", 'epoch', " +
        std::to_string(kW) + ", now() + interval '1 hour') RETURNING 1");
  auto refused_drop = guard->DropEarlierBoots();
  ASSERT_FALSE(refused_drop);
  EXPECT_EQ(refused_drop.error().code, ErrorCode::kConflict);
  EXPECT_EQ(QueryInt("SELECT count(*) FROM credit_leases WHERE replica_id = 'gw:0'"), 1);

  // The other process goes away: the lock is taken back, calls are admitted.
  ASSERT_EQ(intruder.Exec("SELECT pg_advisory_unlock_all()"), "");
  EXPECT_TRUE(WaitFor([&] { return admit_settled(kW).admitted(); }, 5000));
  EXPECT_TRUE(Query(LockHolderSql("gw:1")));
  auto dropped = guard->DropEarlierBoots();
  ASSERT_TRUE(dropped) << dropped.error().message;
  EXPECT_EQ(*dropped, 1);

  // A session lost with nobody else waiting (a database restart): taken back.
  const std::optional<std::string> second_holder = Query(LockHolderSql("gw:1"));
  ASSERT_TRUE(second_holder);
  Query("SELECT pg_terminate_backend(" + *second_holder + ")");
  EXPECT_TRUE(WaitFor([&] {
    const std::optional<std::string> now_holder = Query(LockHolderSql("gw:1"));
    return now_holder && *now_holder != *second_holder;
  }, 3000));
  EXPECT_TRUE(WaitFor([&] { return admit_settled(kW).admitted(); }, 3000));
}

// A call refused on replica A leaves the pot's room to the others: with
// $0.0027 left, a $0.0047 call refused on A must not make B refuse a $0.0014
// call ("only $0 left") until A's idle return, however many big calls keep
// arriving at A.
TEST_F(CreditGuardPg, ARefusedCallLeavesTheRoomToOtherReplicas) {
  const int64_t account = MakeAccount(/*prepaid=*/true);
  const int64_t key = MakeKey(account);
  AddCredits(account, 2'700'000);
  auto a = StartGuard("gw-a:1");  // refusal backoff 100 ms, idle return 2 s
  CreditGuardOptions b_options;
  b_options.idle_return_after = std::chrono::milliseconds(50);  // B leases anew for each call below
  auto b = StartGuard("gw-b:1", b_options);
  ASSERT_TRUE(a && b);
  const KeyRecord record = Record(key, account, true);
  const std::string a_lease = "SELECT COALESCE(sum(amount_nano_usd), 0) FROM credit_leases WHERE replica_id = 'gw-a:1'";

  AdmitResult big = AdmitSync(*a, record, 4'700'000);
  ASSERT_EQ(big.outcome, AdmitOutcome::kRefused);
  EXPECT_EQ(big.available.nano_usd, 2'700'000);
  EXPECT_EQ(big.message,
            "account credits: this call may cost up to $0.0047 but only $0.0027 of the account's credits is left");
  EXPECT_EQ(QueryInt(a_lease), 0) << "the refusal holds no room";

  std::atomic<bool> stop{false};
  std::atomic<int> a_refused{0};
  std::atomic<int> a_other{0};
  std::thread flood([&] {
    while (!stop.load()) {
      AdmitResult r = AdmitSync(*a, record, 4'700'000);
      (r.outcome == AdmitOutcome::kRefused ? a_refused : a_other)++;
      if (r.admitted()) a->Settle(r.ticket, Money{0});
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
  });
  const auto started = std::chrono::steady_clock::now();
  const int64_t a_trips_before = a->counters().db_round_trips;
  for (int round = 0; round < 5; ++round) {
    const auto t0 = std::chrono::steady_clock::now();
    AdmitResult small = AdmitSync(*b, record, 1'400'000);
    const auto elapsed = std::chrono::steady_clock::now() - t0;
    EXPECT_TRUE(small.admitted()) << "round " << round << ": " << small.message;
    EXPECT_LT(elapsed, std::chrono::seconds(1)) << "round " << round;
    if (small.admitted()) b->Settle(small.ticket, Money{0});
    // B gives it back when idle; A asks again once per refusal window meanwhile.
    EXPECT_TRUE(WaitFor([&] { return QueryInt("SELECT count(*) FROM credit_leases WHERE replica_id = 'gw-b:1'") == 0; },
                        3000));
    std::this_thread::sleep_for(std::chrono::milliseconds(150));
  }
  stop = true;
  flood.join();
  const auto run = std::chrono::steady_clock::now() - started;
  EXPECT_EQ(a_other.load(), 0);
  EXPECT_GT(a_refused.load(), 50);
  EXPECT_EQ(QueryInt(a_lease), 0);
  // The refusal backoff still holds: about one grant per 100 ms window.
  const int64_t a_trips = a->counters().db_round_trips - a_trips_before;
  EXPECT_LE(a_trips, 2 * (run / std::chrono::milliseconds(100)) + 4) << a_trips << " statements in " <<
      std::chrono::duration_cast<std::chrono::milliseconds>(run).count() << " ms";
  std::printf("refusal flood: %d refused on A with %lld statements in %lld ms\n", a_refused.load(),
              static_cast<long long>(a_trips),
              static_cast<long long>(std::chrono::duration_cast<std::chrono::milliseconds>(run).count()));
}

// A call that one pot refuses gives back what its other pots leased for it:
// the key limit's lease taken for a call the credits refused would make
// another replica refuse calls under the key limit.
TEST_F(CreditGuardPg, ACallRefusedByOnePotGivesBackWhatItsOtherPotsLeased) {
  const int64_t account = MakeAccount(/*prepaid=*/true);
  const int64_t key = MakeKey(account, 5 * kW / 2);
  AddCredits(account, kW);
  auto a = StartGuard("gw-a:1");
  auto b = StartGuard("gw-b:1");
  ASSERT_TRUE(a && b);
  const KeyRecord record = Record(key, account, true, 5 * kW / 2);
  AdmitResult r = AdmitSync(*a, record, 2 * kW);
  ASSERT_EQ(r.outcome, AdmitOutcome::kRefused);
  EXPECT_EQ(r.refused_pot, PotScope::kCredits);
  EXPECT_EQ(r.available.nano_usd, kW);
  EXPECT_EQ(QueryInt("SELECT COALESCE(sum(amount_nano_usd), 0) FROM credit_leases WHERE replica_id = 'gw-a:1'"), 0)
      << "the key limit's lease went back with the refusal";
  AdmitResult small = AdmitSync(*b, record, kW);
  EXPECT_TRUE(small.admitted()) << small.message;
}

TEST_F(CreditGuardPg, IdlePotsAndStopReturnTheirFreeLease) {
  const int64_t account = MakeAccount(/*prepaid=*/true);
  const int64_t key = MakeKey(account);
  AddCredits(account, 100 * kW);
  CreditGuardOptions options;
  options.idle_return_after = std::chrono::milliseconds(100);
  auto guard = StartGuard("gw1:1", options);
  ASSERT_TRUE(guard);
  const KeyRecord record = Record(key, account, true);
  AdmitResult r = AdmitSync(*guard, record, kW);
  ASSERT_TRUE(r.admitted());
  // A quarter of the room was leased, more than the call needs.
  EXPECT_EQ(QueryInt("SELECT amount_nano_usd FROM credit_leases"), 25 * kW);
  EXPECT_EQ(guard->Pot(r.ticket.pots[0])->free.nano_usd, 24 * kW);
  EXPECT_EQ(guard->Pot(r.ticket.pots[0])->reserved.nano_usd, kW);
  // Idle: the free part goes back; the reservation stays leased.
  EXPECT_TRUE(WaitFor([&] { return QueryInt("SELECT amount_nano_usd FROM credit_leases") == kW; }, 3000));
  guard->Settle(r.ticket, Money{0});  // a refund: all of it free again
  EXPECT_TRUE(WaitFor([&] { return QueryInt("SELECT count(*) FROM credit_leases") == 0; }, 3000));
  // The counters move after the return's commit, so the row can be gone first.
  EXPECT_TRUE(WaitFor([&] { return guard->counters().returned_nano_usd == 25 * kW; }, 3000));
  EXPECT_GE(guard->counters().lease_returns, 2);
  EXPECT_EQ(guard->counters().returned_nano_usd, 25 * kW);

  options.idle_return_after = std::chrono::minutes(10);
  auto other = StartGuard("gw2:1", options);  // its own stable id: two live processes cannot share one
  ASSERT_TRUE(other);
  AdmitResult s = AdmitSync(*other, record, kW);
  ASSERT_TRUE(s.admitted());
  other->Settle(s.ticket, Money{kW / 2});  // not written by any writer here
  other->Stop();
  EXPECT_EQ(QueryInt("SELECT amount_nano_usd FROM credit_leases WHERE replica_id = 'gw2:1'"), kW / 2)
      << "Stop returns the free part; the unwritten cost stays leased for the usage writer";
  EXPECT_EQ(AdmitSync(*other, record, kW).outcome, AdmitOutcome::kUnavailable);
}

TEST_F(CreditGuardPg, StopsAdmittingWhenItsLeaseCannotBeRenewedAndRecovers) {
  const int64_t account = MakeAccount(/*prepaid=*/true);
  const int64_t key = MakeKey(account);
  AddCredits(account, 100 * kW);
  CreditGuardOptions options;
  options.lease_ttl = std::chrono::milliseconds(1500);
  options.renew_interval = std::chrono::milliseconds(300);
  options.expiry_margin = std::chrono::milliseconds(700);
  options.idle_return_after = std::chrono::minutes(10);
  options.refusal_backoff = std::chrono::milliseconds(20);
  auto guard = StartGuard("gw:1", options);
  ASSERT_TRUE(guard);
  const KeyRecord record = Record(key, account, true);
  AdmitResult r = AdmitSync(*guard, record, kW);
  ASSERT_TRUE(r.admitted());
  guard->Settle(r.ticket, Money{0});
  const PotRef pot = r.ticket.pots[0];

  BeginOutage();
  // Still within the lease: admitted from memory.
  EXPECT_TRUE(AdmitSync(*guard, record, kW).admitted());
  // Past ttl - margin without a renewal: no more admissions.
  EXPECT_TRUE(WaitFor([&] { return !guard->Pot(pot)->lease_valid; }, 3000));
  AdmitResult down = AdmitSync(*guard, record, kW);
  EXPECT_EQ(down.outcome, AdmitOutcome::kUnavailable);
  EXPECT_EQ(AdmitError(down).code, ErrorCode::kUnavailable);
  std::this_thread::sleep_for(std::chrono::milliseconds(900));  // let the database lease expire as well
  EndOutage();
  EXPECT_TRUE(WaitFor([&] { return AdmitSync(*guard, record, kW).admitted(); }, 5000));
  EXPECT_EQ(guard->counters().lost_nano_usd, 0);  // nobody took the expired lease meanwhile
  EXPECT_GT(guard->counters().db_errors, 0);
}

TEST_F(CreditGuardPg, ARevivedLeaseKeepsOnlyWhatStillFits) {
  const int64_t account = MakeAccount(/*prepaid=*/true);
  const int64_t key = MakeKey(account);
  AddCredits(account, 10 * kW);
  CreditGuardOptions options;
  options.refusal_backoff = std::chrono::milliseconds(0);
  options.idle_return_after = std::chrono::minutes(10);
  options.chunk.room_divisor = 1;  // lease everything
  options.renew_interval = std::chrono::milliseconds(300);
  auto guard = StartGuard("gw:1", options);
  ASSERT_TRUE(guard);
  const KeyRecord record = Record(key, account, true);
  AdmitResult r = AdmitSync(*guard, record, 2 * kW);
  ASSERT_TRUE(r.admitted());
  ASSERT_EQ(QueryInt("SELECT amount_nano_usd FROM credit_leases WHERE replica_id = 'gw:1'"), 10 * kW);
  // The lease expired (as if the database had been out of reach) and another
  // replica leased 7 of the 10 meanwhile.
  Query("UPDATE credit_leases SET expires_at = now() - interval '1 second' RETURNING 1");
  Query("INSERT INTO credit_leases VALUES ('gw2:1', 'credits', " + std::to_string(account) + ", 'epoch', " +
        std::to_string(7 * kW) + ", now() + interval '1 hour') RETURNING 1");
  // The next renewal revives 3 (2 of them reserved by the call in flight) and loses 7.
  EXPECT_TRUE(WaitFor([&] { return guard->counters().lost_nano_usd > 0; }, 5000));
  EXPECT_EQ(guard->counters().lost_nano_usd, 7 * kW);
  EXPECT_EQ(QueryInt("SELECT amount_nano_usd FROM credit_leases WHERE replica_id = 'gw:1'"), 3 * kW);
  auto view = guard->Pot(r.ticket.pots[0]);
  ASSERT_TRUE(view);
  EXPECT_EQ(view->free.nano_usd, kW);
  EXPECT_EQ(view->reserved.nano_usd, 2 * kW);
  EXPECT_EQ(view->deficit.nano_usd, 0);
}

// The SQL rules equal the pure ones (billing/src/credit_pots.cpp DecideGrant).
TEST_F(CreditGuardPg, SqlGrantFollowsTheRule) {
  const int64_t account = MakeAccount(/*prepaid=*/true);
  AddCredits(account, 1000);
  const std::string a = std::to_string(account);
  auto grant = [&](const std::string& replica, int64_t need, int64_t divisor, int64_t min_chunk, int64_t max_chunk,
                   int64_t free = 0, const std::string& calls = "{}", const std::string& account = "") {
    return Query("SELECT granted || '/' || lease_amount || '/' || lost || '/' || COALESCE(room::text, 'null') || '/' "
                 "|| COALESCE(capacity::text, 'null') FROM tollgate_lease_grant('" + replica + "', 'credits', " +
                 (account.empty() ? a : account) + ", 0, " + std::to_string(need) + ", " + std::to_string(divisor) +
                 ", " + std::to_string(min_chunk) + ", " + std::to_string(max_chunk) + ", 60000, " +
                 std::to_string(free) + ", '" + calls + "')")
        .value_or("");
  };
  EXPECT_EQ(grant("r1:1", 50, 4, 0, 100000), "250/250/0/1000/1000");  // a quarter of the room
  EXPECT_EQ(grant("r2:1", 600, 4, 0, 100000), "600/600/0/750/1000");  // the need
  EXPECT_EQ(grant("r1:1", 500, 4, 0, 100000), "150/400/0/150/1000");  // what is left
  EXPECT_EQ(grant("r3:1", 1, 4, 0, 100000), "0/0/0/0/1000");           // nothing: no row
  EXPECT_EQ(QueryInt("SELECT count(*) FROM credit_leases WHERE replica_id = 'r3:1'"), 0);
  // r2 expires; r1 grows into the room; r2 revives with what still fits.
  Query("UPDATE credit_leases SET expires_at = now() - interval '1 second' WHERE replica_id = 'r2:1' RETURNING 1");
  EXPECT_EQ(grant("r1:1", 200, 4, 0, 100000), "200/600/0/600/1000");
  EXPECT_EQ(grant("r2:1", 0, 4, 0, 100000), "0/400/200/0/1000");
  // Returns: amount -= x; a row at 0 is deleted.
  EXPECT_EQ(QueryInt("SELECT tollgate_lease_return('r1:1', '{credits}', '{" + a + "}', '{0}', '{100}')"), 100);
  EXPECT_EQ(QueryInt("SELECT amount_nano_usd FROM credit_leases WHERE replica_id = 'r1:1'"), 500);
  EXPECT_EQ(QueryInt("SELECT tollgate_lease_return('r2:1', '{credits}', '{" + a + "}', '{0}', '{400}')"), 400);
  EXPECT_EQ(QueryInt("SELECT count(*) FROM credit_leases WHERE replica_id = 'r2:1'"), 0);
  // Removable credits: the balance less the unexpired leases.
  EXPECT_EQ(QueryInt("SELECT tollgate_credits_removable(" + a + ")"), 500);
  // Renewal revives an expired lease with what fits and reports the loss.
  Query("UPDATE credit_leases SET expires_at = now() - interval '1 second' WHERE replica_id = 'r1:1' RETURNING 1");
  EXPECT_EQ(grant("r4:1", 800, 100, 0, 100000), "800/800/0/1000/1000");
  EXPECT_EQ(Query("SELECT scope || '/' || owner_id || '/' || period_us || '/' || amount || '/' || lost "
                  "FROM tollgate_lease_renew('r1:1', 60000)"),
            "credits/" + a + "/0/200/300");
  EXPECT_EQ(QueryInt("SELECT count(*) FROM credit_leases WHERE replica_id = 'r1:1' AND expires_at > now()"), 1);
  // Unlimited (a postpaid account's credits): the maximum chunk or the need.
  const int64_t postpaid = MakeAccount(/*prepaid=*/false);
  EXPECT_EQ(Query("SELECT granted || '/' || COALESCE(room::text, 'null') FROM tollgate_lease_grant('r1:1', "
                  "'credits', " + std::to_string(postpaid) + ", 0, 5, 4, 0, 70, 60000, 0, '{}')"),
            "70/null");
  // When the room cannot cover the waiting calls, only what the calls that
  // fit (in arrival order) lack (DecideGrant, credit_guard_test.cpp
  // ARefusedCallLeasesNothing: the same numbers).
  const int64_t small = MakeAccount(/*prepaid=*/true);
  AddCredits(small, 1000);
  const std::string sm = std::to_string(small);
  EXPECT_EQ(grant("g1:1", 4700, 4, 0, 100000, 0, "{4700}", sm), "0/0/0/1000/1000");
  EXPECT_EQ(QueryInt("SELECT count(*) FROM credit_leases WHERE owner_id = " + sm), 0);
  EXPECT_EQ(grant("g1:1", 1400, 4, 0, 100000, 0, "{700,500,200}", sm), "900/900/0/1000/1000");
  EXPECT_EQ(grant("g2:1", 200, 4, 0, 100000, 0, "{150,50}", sm), "50/50/0/100/1000");  // 150 does not fit, 50 does
  EXPECT_EQ(grant("g2:1", 1000, 4, 0, 100000, 0, "{1000}", sm), "0/50/0/50/1000");
  EXPECT_EQ(grant("g2:1", 1000, 4, 0, 100000, 100, "{100,1000}", sm), "0/50/0/50/1000");  // free covers the 100
  // The room covers the need: the calls do not matter.
  const int64_t roomy = MakeAccount(/*prepaid=*/true);
  AddCredits(roomy, 1000);
  EXPECT_EQ(grant("g1:1", 100, 4, 0, 100000, 0, "{100}", std::to_string(roomy)), "250/250/0/1000/1000");
}

TEST_F(CreditGuardPg, KeysWithoutResetKeepTheirOldSpendAsUsage) {
  // Migration 005 carried api_keys.spent_nano_usd into the 'none' period;
  // here the table was empty then, so the capacity is the whole limit.
  const int64_t account = MakeAccount(/*prepaid=*/false);
  const int64_t key = MakeKey(account, 5 * kW);
  EXPECT_EQ(QueryInt("SELECT tollgate_pot_capacity('key', " + std::to_string(key) + ", 'epoch')"), 5 * kW);
}

TEST_F(CreditGuardPg, StartChecksItsArguments) {
  EXPECT_EQ(CreditGuard::Start(url(), "").error().code, ErrorCode::kInvalidArgument);
  CreditGuardOptions bad;
  bad.renew_interval = bad.lease_ttl;
  EXPECT_EQ(CreditGuard::Start(url(), "gw:1", bad).error().code, ErrorCode::kInvalidArgument);
  CreditGuardOptions negative_wait;
  negative_wait.replica_lock_wait = std::chrono::milliseconds(-1);
  EXPECT_EQ(CreditGuard::Start(url(), "gw:1", negative_wait).error().code, ErrorCode::kInvalidArgument);
  EXPECT_EQ(CreditGuard::Start("postgresql://postgres@127.0.0.1:1/postgres?connect_timeout=2", "gw:1")
                .error()
                .code,
            ErrorCode::kUnavailable);
}

class CreditGuardUnmigratedPg : public testing::PgTest {};

TEST_F(CreditGuardUnmigratedPg, StartSaysToMigrate) {
  auto guard = CreditGuard::Start(url(), "gw:1");
  ASSERT_FALSE(guard);
  EXPECT_EQ(guard.error().code, ErrorCode::kInternal);
  EXPECT_NE(guard.error().message.find("tollgate migrate"), std::string::npos) << guard.error().message;
}

}  // namespace
}  // namespace tollgate::billing
