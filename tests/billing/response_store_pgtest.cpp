#include "tollgate/billing/response_store.hpp"

#include "pg_test_database.hpp"
#include "tollgate/billing/usage_maintenance.hpp"

#include <atomic>
#include <chrono>
#include <string>
#include <thread>
#include <vector>

namespace tollgate::billing {
namespace {

using namespace std::chrono_literals;
using std::chrono::system_clock;

// A fixed instant (2026-09-20 UTC) with microseconds, so round trips are exact.
const system_clock::time_point kT0{1'790'000'000'123'456us};

class ResponseStorePg : public testing::MigratedPgTest {
 protected:
  void SetUp() override {
    MigratedPgTest::SetUp();
    if (HasFatalFailure()) return;
    account_ = QueryInt("INSERT INTO accounts (name) VALUES ('acme') RETURNING id");
    alice_ = CreateKey("alice");
    bob_ = CreateKey("bob");
    auto store = ResponseStore::Connect(url());
    ASSERT_TRUE(store) << store.error().message;
    store_ = std::move(*store);
  }
  int64_t CreateKey(const std::string& name) {
    return QueryInt("INSERT INTO api_keys (name, key_hash, account_id) VALUES ('" + name + "', md5('" + name +
                    "'), " + std::to_string(account_) + ") RETURNING id");
  }
  StoredResponse Make(const std::string& id, int64_t key, system_clock::time_point expires = kT0 + 30 * 24h) {
    StoredResponse r;
    r.id = id;
    r.request_id = "gen-" + id;
    r.api_key_id = key;
    r.account_id = account_;
    r.model = "openai/gpt-5";
    r.created_at = kT0;
    r.expires_at = expires;
    r.response = R"({"id":")" + id + R"(","object":"response","status":"completed","output":[]})";
    r.context = R"([{"type":"message","role":"user","content":"hi"}])";
    return r;
  }
  int64_t Rows() { return QueryInt("SELECT count(*) FROM responses"); }

  int64_t account_ = 0;
  int64_t alice_ = 0;
  int64_t bob_ = 0;
  std::unique_ptr<ResponseStore> store_;
};

TEST_F(ResponseStorePg, PutGetRoundTripKeepsEveryFieldAndTheJsonTextExactly) {
  StoredResponse r = Make("resp_abc", alice_);
  // Key order, spacing, number spellings, non-ASCII text and escapes (\u0000
  // included, which jsonb would refuse) come back as written.
  r.response =
      "{\"z\": 1, \"a\": [1.0e2, -0.000, 12345678901234567890123],\n \"text\": \"h\u00e9llo \U0001F30D "
      "\u65e5\u672c \\u0000 \\ud83d\\ude00 \\\"q\\\"\", \"dup\": 1, \"dup\": 2}";
  r.context =
      "[{\"type\":\"reasoning\",\"id\":\"rs_1\",\"encrypted_content\":\"tollgate.v1.eyJhIjoxfQ\"},"
      " {\"type\":\"function_call\",\"call_id\":\"c1\",\"name\":\"f\",\"arguments\":\"{\\\"x\\\":1}\"}]";
  r.created_at = kT0 + 1us;
  r.expires_at = kT0 + 30 * 24h + 7us;
  ASSERT_TRUE(store_->Put(r));

  auto got = store_->Get("resp_abc", alice_, kT0 + 1h);
  ASSERT_TRUE(got) << got.error().message;
  ASSERT_TRUE(got->has_value());
  const StoredResponse& g = **got;
  EXPECT_EQ(g.id, r.id);
  EXPECT_EQ(g.request_id, "gen-resp_abc");
  EXPECT_EQ(g.api_key_id, alice_);
  EXPECT_EQ(g.account_id, account_);
  EXPECT_EQ(g.model, "openai/gpt-5");
  EXPECT_EQ(g.created_at, r.created_at);
  EXPECT_EQ(g.expires_at, r.expires_at);
  EXPECT_EQ(g.response, r.response);
  EXPECT_EQ(g.context, r.context);

  auto unknown = store_->Get("resp_nope", alice_, kT0);
  ASSERT_TRUE(unknown) << unknown.error().message;
  EXPECT_FALSE(unknown->has_value());
}

TEST_F(ResponseStorePg, ScopedToTheKeyThatStoredIt) {
  ASSERT_TRUE(store_->Put(Make("resp_a", alice_)));
  auto foreign = store_->Get("resp_a", bob_, kT0);
  ASSERT_TRUE(foreign) << foreign.error().message;
  EXPECT_FALSE(foreign->has_value());
  // Bob cannot delete it either, and it is still there for Alice.
  auto deleted = store_->Delete("resp_a", bob_, kT0);
  ASSERT_TRUE(deleted) << deleted.error().message;
  EXPECT_FALSE(*deleted);
  auto mine = store_->Get("resp_a", alice_, kT0);
  ASSERT_TRUE(mine && mine->has_value());
}

TEST_F(ResponseStorePg, DeleteRemovesItOnce) {
  ASSERT_TRUE(store_->Put(Make("resp_a", alice_)));
  ASSERT_TRUE(store_->Put(Make("resp_b", alice_, kT0 + 100 * 365 * 24h)));
  auto deleted = store_->Delete("resp_a", alice_, kT0);
  ASSERT_TRUE(deleted) << deleted.error().message;
  EXPECT_TRUE(*deleted);
  auto gone = store_->Get("resp_a", alice_, kT0);
  ASSERT_TRUE(gone);
  EXPECT_FALSE(gone->has_value());
  auto again = store_->Delete("resp_a", alice_, kT0);
  ASSERT_TRUE(again);
  EXPECT_FALSE(*again);
  auto unknown = store_->Delete("resp_zzz", alice_, kT0);
  ASSERT_TRUE(unknown);
  EXPECT_FALSE(*unknown);
  EXPECT_EQ(Rows(), 1);
  // The default `now` is the wall clock (resp_b expires in 2126).
  auto other = store_->Delete("resp_b", alice_);
  ASSERT_TRUE(other) << other.error().message;
  EXPECT_TRUE(*other);
  EXPECT_EQ(Rows(), 0);
}

TEST_F(ResponseStorePg, ExpiredResponsesAreNeverReadAndPruneDeletesOnlyThem) {
  ASSERT_TRUE(store_->Put(Make("resp_old", alice_, kT0 + 1h)));
  ASSERT_TRUE(store_->Put(Make("resp_edge", alice_, kT0 + 2h)));
  ASSERT_TRUE(store_->Put(Make("resp_new", alice_, kT0 + 3h)));
  const auto now = kT0 + 2h;  // resp_edge expires exactly now
  for (const char* id : {"resp_old", "resp_edge"}) {
    auto r = store_->Get(id, alice_, now);
    ASSERT_TRUE(r) << r.error().message;
    EXPECT_FALSE(r->has_value()) << id;
  }
  auto edge_before = store_->Get("resp_edge", alice_, now - 1us);
  ASSERT_TRUE(edge_before && edge_before->has_value());
  auto fresh = store_->Get("resp_new", alice_, now);
  ASSERT_TRUE(fresh && fresh->has_value());
  EXPECT_EQ(Rows(), 3);  // not pruned yet

  auto pruned = store_->Prune(now);
  ASSERT_TRUE(pruned) << pruned.error().message;
  EXPECT_EQ(*pruned, 2);
  EXPECT_EQ(Query("SELECT string_agg(id, ',') FROM responses"), "resp_new");
  auto none = store_->Prune(now);
  ASSERT_TRUE(none);
  EXPECT_EQ(*none, 0);

  // Deleting an expired response reports false (as Get would say it is not
  // there) and removes it all the same.
  auto deleted = store_->Delete("resp_new", alice_, kT0 + 3h);
  ASSERT_TRUE(deleted);
  EXPECT_FALSE(*deleted);
  EXPECT_EQ(Rows(), 0);
}

TEST_F(ResponseStorePg, PruneWorksThroughMoreThanOneBatch) {
  Query("INSERT INTO responses (id, request_id, api_key_id, account_id, model, created_at, expires_at,"
        " response, context) SELECT 'resp_' || i, 'gen-' || i, " + std::to_string(alice_) + ", " +
        std::to_string(account_) +
        ", 'm', now(), CASE WHEN i <= 2500 THEN now() - interval '1 hour' ELSE now() + interval '1 hour' END,"
        " '{}', '[]' FROM generate_series(1, 2600) i RETURNING 1");
  ASSERT_EQ(Rows(), 2600);
  auto pruned = store_->Prune(system_clock::now());
  ASSERT_TRUE(pruned) << pruned.error().message;
  EXPECT_EQ(*pruned, 2500);
  EXPECT_EQ(Rows(), 100);
}

TEST_F(ResponseStorePg, AnIdCollisionIsAConflictAndKeepsTheFirst) {
  ASSERT_TRUE(store_->Put(Make("resp_dup", alice_)));
  for (int64_t key : {alice_, bob_}) {
    StoredResponse again = Make("resp_dup", key);
    again.context = "[]";
    auto put = store_->Put(again);
    ASSERT_FALSE(put);
    EXPECT_EQ(put.error().code, ErrorCode::kConflict);
  }
  auto got = store_->Get("resp_dup", alice_, kT0);
  ASSERT_TRUE(got && got->has_value());
  EXPECT_EQ((*got)->context, Make("resp_dup", alice_).context);
  EXPECT_EQ(Rows(), 1);
}

TEST_F(ResponseStorePg, ContextOverTheSizeLimitIsRefusedUnwritten) {
  // Exactly the limit is stored.
  StoredResponse at = Make("resp_at", alice_);
  at.context = "[\"" + std::string(kMaxStoredJsonBytes - 4, 'x') + "\"]";
  ASSERT_EQ(at.context.size(), kMaxStoredJsonBytes);
  auto put = store_->Put(at);
  ASSERT_TRUE(put) << put.error().message;
  auto got = store_->Get("resp_at", alice_, kT0);
  ASSERT_TRUE(got && got->has_value());
  EXPECT_EQ((*got)->context, at.context);

  StoredResponse over = Make("resp_over", alice_);
  over.context = "[\"" + std::string(kMaxStoredJsonBytes - 3, 'x') + "\"]";
  auto refused = store_->Put(over);
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code, ErrorCode::kPayloadTooLarge);
  EXPECT_NE(refused.error().message.find("context"), std::string::npos);
  StoredResponse big_response = Make("resp_over", alice_);
  big_response.response = "{\"a\":\"" + std::string(kMaxStoredJsonBytes, 'x') + "\"}";
  auto refused_response = store_->Put(big_response);
  ASSERT_FALSE(refused_response);
  EXPECT_EQ(refused_response.error().code, ErrorCode::kPayloadTooLarge);
  EXPECT_EQ(Rows(), 1);
}

TEST_F(ResponseStorePg, MalformedValuesAreInvalidArgument) {
  auto expect_invalid = [&](StoredResponse r, const char* what) {
    auto put = store_->Put(r);
    ASSERT_FALSE(put) << what;
    EXPECT_EQ(put.error().code, ErrorCode::kInvalidArgument) << what << ": " << put.error().message;
    EXPECT_EQ(put.error().message.find("secret-payload"), std::string::npos) << what;
  };
  StoredResponse r = Make("resp_x", alice_);
  r.context = R"({"secret-payload": 1})";  // an object, not an array
  expect_invalid(r, "context object");
  r = Make("resp_x", alice_);
  r.response = R"(["secret-payload"])";  // an array, not an object
  expect_invalid(r, "response array");
  r = Make("resp_x", alice_);
  r.context = R"([secret-payload)";
  expect_invalid(r, "context not JSON");
  r = Make("resp_x", alice_);
  r.context = "[\"secret-payload \xff\"]";
  expect_invalid(r, "invalid UTF-8");
  r = Make("resp_x", alice_);
  r.context = std::string("[\"secret-payload\0\"]", 20);
  expect_invalid(r, "NUL byte");
  r = Make("", alice_);
  expect_invalid(r, "empty id");
  r = Make("resp_x", 987654321);
  expect_invalid(r, "unknown key");
  EXPECT_EQ(Rows(), 0);
}

TEST_F(ResponseStorePg, AnIdWithANulByteNamesNothing) {
  ASSERT_TRUE(store_->Put(Make("resp_a", alice_)));
  // Cut at the NUL, as libpq would cut it, the id would be resp_a's.
  const std::string nul_id("resp_a\0zzz", 10);
  auto got = store_->Get(nul_id, alice_, kT0);
  ASSERT_TRUE(got) << got.error().message;
  EXPECT_FALSE(got->has_value());
  auto deleted = store_->Delete(nul_id, alice_, kT0);
  ASSERT_TRUE(deleted) << deleted.error().message;
  EXPECT_FALSE(*deleted);
  auto still = store_->Get("resp_a", alice_, kT0);
  ASSERT_TRUE(still) << still.error().message;
  EXPECT_TRUE(still->has_value());
}

// The state a lost answer leaves: the store's connection broke, and a row
// with the id is there (its first insert committed before the break). A
// retried Put takes the row for its own only when it has its request id and
// key.
TEST_F(ResponseStorePg, PutRetriedOnABrokenConnectionRecognisesItsOwnRow) {
  auto store = ResponseStore::Connect(url(), 1);
  ASSERT_TRUE(store) << store.error().message;
  ASSERT_TRUE((*store)->Put(Make("resp_0", alice_)));
  auto insert_row = [&](const std::string& id, const std::string& request_id, int64_t key) {
    Query("INSERT INTO responses (id, request_id, api_key_id, account_id, model, created_at, expires_at,"
          " response, context) VALUES ('" + id + "', '" + request_id + "', " + std::to_string(key) + ", " +
          std::to_string(account_) + ", 'openai/gpt-5', now(), now() + interval '1 day', '{}', '[]')"
          " RETURNING 1");
  };
  // Kills the store's connection and waits until its backend is gone, so
  // that the next Put's first try meets a broken connection.
  auto break_connection = [&] {
    KillConnections();
    for (int i = 0; i < 500; ++i) {
      if (QueryInt("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                   " AND pid <> pg_backend_pid()") == 0) {
        return;
      }
      std::this_thread::sleep_for(10ms);
    }
    ADD_FAILURE() << "the killed connections did not go away";
  };

  break_connection();
  insert_row("resp_lost", "gen-resp_lost", alice_);
  auto put = (*store)->Put(Make("resp_lost", alice_));
  ASSERT_TRUE(put) << put.error().message;
  EXPECT_EQ(QueryInt("SELECT count(*) FROM responses WHERE id = 'resp_lost'"), 1);

  // Without a broken connection the same row is a conflict.
  put = (*store)->Put(Make("resp_lost", alice_));
  ASSERT_FALSE(put);
  EXPECT_EQ(put.error().code, ErrorCode::kConflict);

  // Another call's row (request id), or another key's: a conflict after the retry too.
  break_connection();
  insert_row("resp_other", "gen-someone-else", alice_);
  put = (*store)->Put(Make("resp_other", alice_));
  ASSERT_FALSE(put);
  EXPECT_EQ(put.error().code, ErrorCode::kConflict);
  break_connection();
  insert_row("resp_bobs", "gen-resp_bobs", bob_);
  put = (*store)->Put(Make("resp_bobs", alice_));
  ASSERT_FALSE(put);
  EXPECT_EQ(put.error().code, ErrorCode::kConflict);
  EXPECT_EQ(Rows(), 4);
}

TEST_F(ResponseStorePg, DeletingTheKeyDeletesItsResponses) {
  // The cascade has an index to find the key's rows by.
  EXPECT_EQ(QueryInt("SELECT count(*) FROM pg_indexes WHERE tablename = 'responses'"
                     " AND indexname = 'responses_api_key_idx'"),
            1);
  ASSERT_TRUE(store_->Put(Make("resp_a", alice_)));
  ASSERT_TRUE(store_->Put(Make("resp_b", bob_)));
  Query("DELETE FROM api_keys WHERE id = " + std::to_string(alice_) + " RETURNING 1");
  EXPECT_EQ(Query("SELECT string_agg(id, ',') FROM responses"), "resp_b");
}

TEST_F(ResponseStorePg, SurvivesAServerRestartAndConcurrentCalls) {
  auto store = ResponseStore::Connect(url(), 2);
  ASSERT_TRUE(store) << store.error().message;
  ASSERT_TRUE((*store)->Put(Make("resp_0", alice_)));
  KillConnections();
  // The first call on the killed connection retries on a new one.
  auto put = (*store)->Put(Make("resp_1", alice_));
  ASSERT_TRUE(put) << put.error().message;
  std::vector<std::thread> threads;
  std::atomic<int> ok{0};
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 20; ++i) {
        const std::string id = "resp_t" + std::to_string(t) + "_" + std::to_string(i);
        if (!(*store)->Put(Make(id, alice_))) continue;
        auto got = (*store)->Get(id, alice_, kT0);
        if (got && got->has_value() && (**got).id == id) ++ok;
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(ok.load(), 80);
  EXPECT_EQ(Rows(), 82);
  KillConnections();
  auto got = (*store)->Get("resp_0", alice_, kT0);
  ASSERT_TRUE(got) << got.error().message;
  EXPECT_TRUE(got->has_value());
}

TEST_F(ResponseStorePg, ConnectRefusesNoConnections) {
  auto store = ResponseStore::Connect(url(), 0);
  ASSERT_FALSE(store);
  EXPECT_EQ(store.error().code, ErrorCode::kInvalidArgument);
}

TEST_F(ResponseStorePg, UsageMaintenanceRunPrunesExpiredResponses) {
  ASSERT_TRUE(store_->Put(Make("resp_old", alice_, kT0 + 1h)));
  ASSERT_TRUE(store_->Put(Make("resp_new", bob_, kT0 + 3h)));
  auto maintenance = UsageMaintenance::Connect(url());
  ASSERT_TRUE(maintenance) << maintenance.error().message;
  // Retention off: responses expire on their own clock all the same.
  auto report = (*maintenance)->Run(kT0 + 2h, 0);
  ASSERT_TRUE(report) << report.error().message;
  EXPECT_EQ(report->responses_pruned, 1);
  EXPECT_EQ(Query("SELECT string_agg(id, ',') FROM responses"), "resp_new");
  auto later = (*maintenance)->Run(kT0 + 2h, 0);
  ASSERT_TRUE(later);
  EXPECT_EQ(later->responses_pruned, 0);
}

}  // namespace
}  // namespace tollgate::billing
