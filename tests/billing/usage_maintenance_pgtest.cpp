#include "tollgate/billing/usage_maintenance.hpp"

#include "pg_test_database.hpp"
#include "tollgate/billing/usage_recorder.hpp"

#include <chrono>
#include <string>

namespace tollgate::billing {
namespace {

using namespace std::chrono_literals;
using std::chrono::sys_days;
using std::chrono::system_clock;
using std::chrono::year;

// A UTC day long before the real today (whose partitions the migration made,
// and which retention as of a day in 2021 leaves alone).
constexpr auto kJan15 = sys_days{year{2021} / 1 / 15};

class UsageMaintenancePg : public testing::MigratedPgTest {
 protected:
  void SetUp() override {
    MigratedPgTest::SetUp();
    if (HasFatalFailure()) return;
    account_ = QueryInt("INSERT INTO accounts (name) VALUES ('acme') RETURNING id");
    key_ = QueryInt("INSERT INTO api_keys (name, key_hash, account_id) VALUES ('k', md5('k'), " +
                    std::to_string(account_) + ") RETURNING id");
    auto m = UsageMaintenance::Connect(url());
    ASSERT_TRUE(m) << m.error().message;
    maintenance_ = std::move(*m);
  }

  UsageEvent Event(const std::string& id, system_clock::time_point at, int64_t cost = 1000) {
    UsageEvent e;
    e.request_id = id;
    e.api_key_id = key_;
    e.model = "m/one";
    e.provider = "P";
    e.upstream_model = "one";
    e.usage = Usage{10, 5, 0, 0};
    e.cost = Money{cost};
    e.latency_ms = 100;
    e.status = 200;
    e.created_at = at;
    e.finished_at = at + 100ms;
    AttemptRecord a;
    a.attempt = 1;
    a.endpoint_id = "e1";
    a.provider = "P";
    a.upstream_model = "one";
    a.outcome = "served";
    a.status = 200;
    e.attempts.push_back(a);
    return e;
  }

  void Write(const std::vector<UsageEvent>& events) {
    auto recorder = UsageRecorder::Start(url(), 60'000, 100);
    ASSERT_TRUE(recorder) << recorder.error().message;
    for (const UsageEvent& e : events) (*recorder)->Record(e);
    (*recorder)->Flush();
  }

  std::string PartitionOf(const std::string& id) {
    return Query("SELECT tableoid::regclass::text FROM usage_events WHERE request_id = '" + id + "'")
        .value_or("(none)");
  }
  int64_t Count(const std::string& table, const std::string& id) {
    return QueryInt("SELECT count(*) FROM " + table + " WHERE request_id = '" + id + "'");
  }
  int64_t Partitions() {
    return QueryInt("SELECT count(*) FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                    "WHERE i.inhparent = 'usage_events'::regclass AND c.relname ~ '^usage_events_p[0-9]{8}$'");
  }

  int64_t account_ = 0;
  int64_t key_ = 0;
  std::unique_ptr<UsageMaintenance> maintenance_;
};

TEST_F(UsageMaintenancePg, CreatesPartitionsAheadAndRowsLandInTheirDay) {
  const int64_t before = Partitions();
  auto created = maintenance_->EnsurePartitions(kJan15 + 12h);
  ASSERT_TRUE(created) << created.error().message;
  EXPECT_EQ(*created, 9);  // Jan 14 .. Jan 22
  EXPECT_EQ(Partitions(), before + 9);
  EXPECT_EQ(Query("SELECT to_regclass('usage_events_p20210114')::text"), "usage_events_p20210114");
  EXPECT_EQ(Query("SELECT to_regclass('usage_events_p20210122')::text"), "usage_events_p20210122");
  EXPECT_EQ(Query("SELECT to_regclass('usage_events_p20210123')::text"), std::nullopt);
  // Again: nothing to do.
  auto again = maintenance_->EnsurePartitions(kJan15 + 23h);
  ASSERT_TRUE(again) << again.error().message;
  EXPECT_EQ(*again, 0);

  // The boundaries are UTC midnights: the last microsecond of Jan 16 and the
  // first of Jan 17 land in different partitions.
  Write({Event("gen-a", kJan15 + 24h + 5h), Event("gen-b", kJan15 + 48h - 1us), Event("gen-c", kJan15 + 48h)});
  EXPECT_EQ(PartitionOf("gen-a"), "usage_events_p20210116");
  EXPECT_EQ(PartitionOf("gen-b"), "usage_events_p20210116");
  EXPECT_EQ(PartitionOf("gen-c"), "usage_events_p20210117");
  EXPECT_EQ(QueryInt("SELECT count(*) FROM usage_events_default"), 0);
}

TEST_F(UsageMaintenancePg, RetentionDropsOldRowsAndKeepsRollups) {
  ASSERT_TRUE(maintenance_->EnsurePartitions(kJan15 + 12h));
  // Jan 14 and 16 (dropped), Jan 20 (kept), and one older than every
  // partition, in the default partition (dropped).
  Write({Event("gen-14", kJan15 - 24h + 1h, 100), Event("gen-16", kJan15 + 48h - 1s, 200),
         Event("gen-20", kJan15 + 5 * 24h + 1h, 400), Event("gen-old", kJan15 - 60 * 24h, 800)});
  EXPECT_EQ(PartitionOf("gen-old"), "usage_events_default");
  EXPECT_EQ(QueryInt("SELECT count(*) FROM call_attempts"), 4);
  const std::string rollups =
      "SELECT (SELECT sum(requests) || '/' || sum(cost_nano_usd) FROM usage_rollup_1d) || ' ' ||"
      " (SELECT sum(requests) || '/' || sum(cost_nano_usd) FROM usage_rollup_15m)";
  EXPECT_EQ(Query(rollups), "4/1500 4/1500");

  // Now Jan 20 12:00 with 3 days' retention: raw rows before Jan 17 12:00 go,
  // so the partitions of Jan 14, 15 and 16 (ending by then) are dropped.
  auto report = maintenance_->Run(kJan15 + 5 * 24h + 12h, 3);
  ASSERT_TRUE(report) << report.error().message;
  EXPECT_TRUE(report->retention_applied);
  EXPECT_EQ(report->partitions_dropped, 3);
  EXPECT_EQ(report->partitions_created, 5);  // Jan 19 .. 27 wanted; 19 .. 22 were there
  EXPECT_EQ(Query("SELECT to_regclass('usage_events_p20210116')::text"), std::nullopt);
  EXPECT_EQ(Query("SELECT to_regclass('usage_events_p20210117')::text"), "usage_events_p20210117");
  for (const char* id : {"gen-14", "gen-16", "gen-old"}) {
    EXPECT_EQ(Count("usage_events", id), 0) << id;
    EXPECT_EQ(Count("call_attempts", id), 0) << id;
    EXPECT_EQ(Count("usage_request_ids", id), 0) << id;
  }
  EXPECT_EQ(Count("usage_events", "gen-20"), 1);
  EXPECT_EQ(Count("call_attempts", "gen-20"), 1);
  EXPECT_EQ(Count("usage_request_ids", "gen-20"), 1);
  // Rollups and the key's spend outlive the raw rows.
  EXPECT_EQ(Query(rollups), "4/1500 4/1500");
  EXPECT_EQ(QueryInt("SELECT spent_nano_usd FROM api_keys WHERE id = " + std::to_string(key_)), 1500);

  // 0 keeps raw rows forever.
  auto forever = maintenance_->Run(kJan15 + 400 * 24h, 0);
  ASSERT_TRUE(forever) << forever.error().message;
  EXPECT_FALSE(forever->retention_applied);
  EXPECT_EQ(forever->partitions_dropped, 0);
  EXPECT_EQ(Count("usage_events", "gen-20"), 1);
  auto negative = maintenance_->Run(kJan15, -1);
  ASSERT_FALSE(negative);
  EXPECT_EQ(negative.error().code, ErrorCode::kInvalidArgument);
}

TEST_F(UsageMaintenancePg, ReplayedRowOlderThanEveryPartitionLandsInDefaultOnce) {
  const auto old = sys_days{year{2021} / 6 / 1} + 10h;
  Write({Event("gen-replayed", old, 700)});
  // A spool replay of the same row (a second writer, as after a crash).
  Write({Event("gen-replayed", old, 700)});
  EXPECT_EQ(PartitionOf("gen-replayed"), "usage_events_default");
  EXPECT_EQ(Count("usage_events", "gen-replayed"), 1);
  EXPECT_EQ(QueryInt("SELECT sum(requests) FROM usage_rollup_1d WHERE bucket_start = '2021-06-01T00:00:00Z'"), 1);
  EXPECT_EQ(QueryInt("SELECT sum(cost_nano_usd) FROM usage_rollup_15m"), 700);
  EXPECT_EQ(QueryInt("SELECT spent_nano_usd FROM api_keys WHERE id = " + std::to_string(key_)), 700);
  // Its day keeps no partition of its own (its row would have to move).
  auto created = maintenance_->EnsurePartitions(old, 1, 1);
  ASSERT_TRUE(created) << created.error().message;
  EXPECT_EQ(*created, 2);  // May 31 and June 2 only
  EXPECT_EQ(Query("SELECT to_regclass('usage_events_p20210601')::text"), std::nullopt);
  // Retention deletes it from the default partition.
  auto dropped = maintenance_->DropBefore(old + 1h);
  ASSERT_TRUE(dropped) << dropped.error().message;
  EXPECT_EQ(*dropped, 1);  // May 31
  EXPECT_EQ(Count("usage_events", "gen-replayed"), 0);
  EXPECT_EQ(Count("usage_request_ids", "gen-replayed"), 0);
  EXPECT_EQ(QueryInt("SELECT sum(requests) FROM usage_rollup_1d"), 1);

  // Replayed again after retention deleted its id: it may have been charged,
  // so it is skipped, not written and charged a second time.
  Write({Event("gen-replayed", old, 700)});
  EXPECT_EQ(Count("usage_events", "gen-replayed"), 0);
  EXPECT_EQ(QueryInt("SELECT sum(requests) FROM usage_rollup_1d"), 1);
  EXPECT_EQ(QueryInt("SELECT spent_nano_usd FROM api_keys WHERE id = " + std::to_string(key_)), 700);
  // A row after the horizon is written as usual.
  Write({Event("gen-later", old + 2h, 300)});
  EXPECT_EQ(Count("usage_events", "gen-later"), 1);
  EXPECT_EQ(QueryInt("SELECT spent_nano_usd FROM api_keys WHERE id = " + std::to_string(key_)), 1000);
}

}  // namespace
}  // namespace tollgate::billing
