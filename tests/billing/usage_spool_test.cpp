#include "usage_spool.hpp"

#include "tollgate/billing/log.hpp"

#include <gtest/gtest.h>

#include <condition_variable>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <mutex>
#include <set>
#include <thread>

namespace tollgate::billing::internal {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

UsageEvent FullEvent(std::string request_id) {
  UsageEvent e;
  e.request_id = std::move(request_id);
  e.api_key_id = 42;
  e.model = "openai/gpt-4o-mini";
  e.provider = "OpenAI";
  e.upstream_model = "gpt-4o-mini-2024-07-18";
  e.usage = Usage{1200, 300, 1000, 40, 7};
  e.cost = Money{123'456'789};
  e.latency_ms = (int64_t{1} << 33) + 3;
  e.ttft_ms = 210;
  e.status = 200;
  e.finish_reason = "stop";
  e.streamed = true;
  e.cancelled = true;
  e.usage_estimated = true;
  e.error_code = "upstream_error";
  e.created_at = std::chrono::system_clock::time_point(std::chrono::nanoseconds(1'790'000'000'123'456'789));
  e.finished_at = std::chrono::system_clock::time_point(std::chrono::nanoseconds(1'790'000'004'444'567'891));
  e.endpoint_id = "openai-main";
  e.account_id = 9;
  e.lease_holder = "0123456789abcdef0123456789abcdef:boot1";
  e.leased_pots = {
      {"key", 42, std::chrono::system_clock::time_point(std::chrono::nanoseconds(1'789'948'800'000'000'000))},
      {"credits", 9, std::chrono::system_clock::time_point{}},
      {"budget", 9, std::chrono::system_clock::time_point(std::chrono::nanoseconds(1'788'220'800'000'000'001))},
  };
  e.price_snapshot = R"({"endpoint":"openai-main","tier":0,"prompt":150000000})";
  e.byok = true;
  e.provider_cost = Money{5'000'000};
  AttemptRecord failed;
  failed.attempt = 1;
  failed.endpoint_id = "openai-backup";
  failed.provider = "OpenAI";
  failed.upstream_model = "gpt-4o-mini";
  failed.outcome = "failed";
  failed.status = 503;
  failed.error_code = "overloaded";
  failed.started_ms = 1;
  failed.latency_ms = 40;
  failed.usage = Usage{10, 0, 0, 0, 0};
  failed.cost = Money{3};
  AttemptRecord served;
  served.attempt = 2;
  served.endpoint_id = "openai-main";
  served.provider = "OpenAI";
  served.upstream_model = "gpt-4o-mini-2024-07-18";
  served.outcome = "served";
  served.status = 200;
  served.started_ms = 45;
  served.latency_ms = 4000;
  served.ttft_ms = 200;
  served.usage = e.usage;
  served.cost = e.cost;
  e.attempts = {failed, served};
  return e;
}

UsageEvent SmallEvent(std::string request_id) {
  UsageEvent e;
  e.request_id = std::move(request_id);
  e.api_key_id = 1;
  e.model = "m";
  e.cost = Money{10};
  return e;
}

void ExpectSameAttempt(const AttemptRecord& a, const AttemptRecord& b) {
  EXPECT_EQ(a.attempt, b.attempt);
  EXPECT_EQ(a.endpoint_id, b.endpoint_id);
  EXPECT_EQ(a.provider, b.provider);
  EXPECT_EQ(a.upstream_model, b.upstream_model);
  EXPECT_EQ(a.outcome, b.outcome);
  EXPECT_EQ(a.status, b.status);
  EXPECT_EQ(a.error_code, b.error_code);
  EXPECT_EQ(a.started_ms, b.started_ms);
  EXPECT_EQ(a.latency_ms, b.latency_ms);
  EXPECT_EQ(a.ttft_ms, b.ttft_ms);
  EXPECT_EQ(a.usage, b.usage);
  EXPECT_EQ(a.cost, b.cost);
}

void ExpectSameEvent(const UsageEvent& a, const UsageEvent& b) {
  EXPECT_EQ(a.request_id, b.request_id);
  EXPECT_EQ(a.api_key_id, b.api_key_id);
  EXPECT_EQ(a.model, b.model);
  EXPECT_EQ(a.provider, b.provider);
  EXPECT_EQ(a.upstream_model, b.upstream_model);
  EXPECT_EQ(a.usage, b.usage);
  EXPECT_EQ(a.cost, b.cost);
  EXPECT_EQ(a.latency_ms, b.latency_ms);
  EXPECT_EQ(a.ttft_ms, b.ttft_ms);
  EXPECT_EQ(a.status, b.status);
  EXPECT_EQ(a.finish_reason, b.finish_reason);
  EXPECT_EQ(a.streamed, b.streamed);
  EXPECT_EQ(a.cancelled, b.cancelled);
  EXPECT_EQ(a.usage_estimated, b.usage_estimated);
  EXPECT_EQ(a.error_code, b.error_code);
  EXPECT_EQ(a.created_at, b.created_at);
  EXPECT_EQ(a.finished_at, b.finished_at);
  EXPECT_EQ(a.endpoint_id, b.endpoint_id);
  EXPECT_EQ(a.account_id, b.account_id);
  EXPECT_EQ(a.lease_holder, b.lease_holder);
  EXPECT_EQ(a.leased_pots, b.leased_pots);
  EXPECT_EQ(a.price_snapshot, b.price_snapshot);
  EXPECT_EQ(a.byok, b.byok);
  EXPECT_EQ(a.provider_cost, b.provider_cost);
  ASSERT_EQ(a.attempts.size(), b.attempts.size());
  for (size_t i = 0; i < a.attempts.size(); ++i) ExpectSameAttempt(a.attempts[i], b.attempts[i]);
}

std::string ReadBytes(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

void WriteBytes(const fs::path& path, std::string_view bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

// Counts on_written calls and lets a test wait for them.
struct Written {
  std::mutex mutex;
  std::condition_variable cv;
  int durable = 0;
  int failed = 0;
  std::set<std::thread::id> threads;

  UsageSpool::WrittenCallback Callback() {
    return [this](bool ok) {
      std::lock_guard lock(mutex);
      (ok ? durable : failed)++;
      threads.insert(std::this_thread::get_id());
      cv.notify_all();
    };
  }
  bool WaitFor(int n) {
    std::unique_lock lock(mutex);
    return cv.wait_for(lock, 10s, [&] { return durable + failed >= n; });
  }
};

// Holds the spool's writer thread inside a Defer'd function until Release.
struct WriterGate {
  std::mutex mutex;
  std::condition_variable cv;
  bool entered = false;
  bool released = false;

  void Close(UsageSpool& spool) {
    spool.Defer([this] {
      std::unique_lock lock(mutex);
      entered = true;
      cv.notify_all();
      cv.wait(lock, [&] { return released; });
    });
    std::unique_lock lock(mutex);
    cv.wait(lock, [&] { return entered; });
  }
  void Release() {
    std::lock_guard lock(mutex);
    released = true;
    cv.notify_all();
  }
};

class UsageSpoolTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string pattern = (fs::temp_directory_path() / "tg-spool-XXXXXX").string();
    ASSERT_NE(::mkdtemp(pattern.data()), nullptr);
    dir_ = pattern;
    SetLogHandler([this](LogLevel, std::string_view message) {
      std::lock_guard lock(log_mutex_);
      logs_.emplace_back(message);
    });
  }
  void TearDown() override {
    SetLogHandler(nullptr);
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }

  std::unique_ptr<UsageSpool> Open(int64_t segment_bytes = int64_t{64} << 20) {
    auto spool = UsageSpool::Open({dir_.string(), segment_bytes});
    EXPECT_TRUE(spool) << spool.error().message;
    return spool ? std::move(*spool) : nullptr;
  }

  // Appends `events` and waits until all are reported durable.
  std::vector<uint64_t> AppendAll(UsageSpool& spool, const std::vector<UsageEvent>& events) {
    Written written;
    std::vector<uint64_t> seqs;
    for (const UsageEvent& e : events) {
      seqs.push_back(spool.Append(std::make_shared<const UsageEvent>(e), written.Callback()));
    }
    EXPECT_TRUE(written.WaitFor(static_cast<int>(events.size())));
    EXPECT_EQ(written.durable, static_cast<int>(events.size()));
    return seqs;
  }

  std::vector<fs::path> Segments(std::string_view suffix = ".log") const {
    std::vector<fs::path> out;
    for (const auto& entry : fs::directory_iterator(dir_)) {
      std::string name = entry.path().filename().string();
      if (name.starts_with("segment-") && name.ends_with(suffix)) out.push_back(entry.path());
    }
    std::sort(out.begin(), out.end());
    return out;
  }

  bool Logged(std::string_view part) {
    std::lock_guard lock(log_mutex_);
    for (const std::string& line : logs_) {
      if (line.find(part) != std::string::npos) return true;
    }
    return false;
  }

  fs::path dir_;
  std::mutex log_mutex_;
  std::vector<std::string> logs_;
};

TEST(UsageSpoolCodec, Crc32cIsCastagnoli) {
  // RFC 3720 appendix B.4 and the common check value of CRC-32C.
  EXPECT_EQ(Crc32c("123456789"), 0xE3069283u);
  EXPECT_EQ(Crc32c(std::string(32, '\0')), 0x8A9136AAu);
}

TEST(UsageSpoolCodec, RoundTripsEveryField) {
  UsageEvent e = FullEvent("gen-abc");
  Result<UsageEvent> back = DecodeUsageEvent(EncodeUsageEvent(e));
  ASSERT_TRUE(back) << back.error().message;
  ExpectSameEvent(*back, e);

  // Optional fields unset, and text that is not UTF-8, survive too.
  UsageEvent sparse = SmallEvent("gen-\xff\xfe");
  sparse.model = "openai/\xc3";
  back = DecodeUsageEvent(EncodeUsageEvent(sparse));
  ASSERT_TRUE(back) << back.error().message;
  ExpectSameEvent(*back, sparse);
  EXPECT_FALSE(back->provider_cost);
  EXPECT_FALSE(back->ttft_ms);
}

TEST(UsageSpoolCodec, RefusesWhatItDidNotWrite) {
  EXPECT_FALSE(DecodeUsageEvent("not json"));
  EXPECT_FALSE(DecodeUsageEvent("[1,2]"));
  EXPECT_FALSE(DecodeUsageEvent(R"({"v":2,"request_id":"gen-1"})"));
  EXPECT_FALSE(DecodeUsageEvent(R"({"v":1})"));
  EXPECT_FALSE(DecodeUsageEvent(R"({"v":1,"request_id":"gen-1","cost":"12"})"));
  EXPECT_TRUE(DecodeUsageEvent(R"({"v":1,"request_id":"gen-1"})"));
}

TEST(UsageSpoolCodec, LeasedPotsRoundTripAndOlderRecordsHaveNone) {
  UsageEvent e = FullEvent("gen-pots");
  ASSERT_EQ(e.leased_pots.size(), 3u);
  Result<UsageEvent> back = DecodeUsageEvent(EncodeUsageEvent(e));
  ASSERT_TRUE(back) << back.error().message;
  EXPECT_EQ(back->leased_pots, e.leased_pots);
  EXPECT_EQ(back->leased_pots.at(2).period_start.time_since_epoch(), std::chrono::nanoseconds(1'788'220'800'000'000'001));

  // A record of a gateway from before leased_pots (same version): none.
  Result<UsageEvent> old = DecodeUsageEvent(R"({"v":1,"request_id":"gen-old","lease_holder":"r1:boot"})");
  ASSERT_TRUE(old) << old.error().message;
  EXPECT_EQ(old->lease_holder, "r1:boot");
  EXPECT_TRUE(old->leased_pots.empty());
  // A malformed list is refused, not half read.
  EXPECT_FALSE(DecodeUsageEvent(R"({"v":1,"request_id":"gen-1","leased_pots":{"scope":"key"}})"));
  EXPECT_FALSE(DecodeUsageEvent(R"({"v":1,"request_id":"gen-1","leased_pots":[{"owner_id":"1"}]})"));
}

TEST_F(UsageSpoolTest, RecordsSurviveAReopenInOrderWithTheSameReplicaId) {
  std::string replica;
  {
    auto spool = Open();
    ASSERT_TRUE(spool);
    replica = spool->replica_id();
    EXPECT_EQ(replica.size(), 32u);
    EXPECT_EQ(replica.find_first_not_of("0123456789abcdef"), std::string::npos);
    EXPECT_TRUE(spool->TakeRecovered().empty());
    std::vector<UsageEvent> events;
    for (int i = 0; i < 10; ++i) events.push_back(FullEvent("gen-" + std::to_string(i)));
    AppendAll(*spool, events);
    EXPECT_EQ(spool->stats().records_appended, 10);
  }
  auto spool = Open();
  ASSERT_TRUE(spool);
  EXPECT_EQ(spool->replica_id(), replica);
  std::vector<SpooledEvent> got = spool->TakeRecovered();
  ASSERT_EQ(got.size(), 10u);
  for (int i = 0; i < 10; ++i) {
    ExpectSameEvent(got[i].event, FullEvent("gen-" + std::to_string(i)));
    if (i > 0) {
      EXPECT_GT(got[i].seq, got[i - 1].seq);
    }
  }
  EXPECT_TRUE(spool->TakeRecovered().empty()) << "handed out once";
  EXPECT_EQ(spool->stats().records_recovered, 10);
  EXPECT_EQ(spool->stats().torn_tails, 0);
  EXPECT_EQ(spool->stats().corrupt_records, 0);
}

TEST_F(UsageSpoolTest, AGroupIsWrittenWithOneSyncAndEveryRecordIsCalledBackOffTheCallersThread) {
  auto spool = Open();
  ASSERT_TRUE(spool);
  WriterGate gate;
  gate.Close(*spool);  // the writer is busy: appends pile up into one group
  Written written;
  for (int i = 0; i < 50; ++i) {
    spool->Append(std::make_shared<const UsageEvent>(SmallEvent("gen-" + std::to_string(i))), written.Callback());
  }
  {
    std::lock_guard lock(written.mutex);
    EXPECT_EQ(written.durable + written.failed, 0) << "nothing is durable before the writer runs";
  }
  int64_t syncs_before = spool->stats().group_commits;
  gate.Release();
  ASSERT_TRUE(written.WaitFor(50));
  EXPECT_EQ(written.durable, 50);
  EXPECT_EQ(spool->stats().group_commits - syncs_before, 1) << "one fdatasync for the group";
  EXPECT_EQ(written.threads.size(), 1u);
  EXPECT_EQ(written.threads.count(std::this_thread::get_id()), 0u);
}

TEST_F(UsageSpoolTest, ManyThreadsAppendingAllGetDurableCallbacks) {
  auto spool = Open();
  ASSERT_TRUE(spool);
  Written written;
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 250; ++i) {
        spool->Append(std::make_shared<const UsageEvent>(SmallEvent("gen-" + std::to_string(t) + "-" +
                                                                    std::to_string(i))),
                      written.Callback());
      }
    });
  }
  for (auto& th : threads) th.join();
  ASSERT_TRUE(written.WaitFor(1000));
  EXPECT_EQ(written.durable, 1000);
  EXPECT_LE(spool->stats().group_commits, 1000);
  spool->Close();
  auto again = Open();
  ASSERT_TRUE(again);
  EXPECT_EQ(again->TakeRecovered().size(), 1000u);
}

// Crash during the last group: the file ends anywhere inside the last record.
TEST_F(UsageSpoolTest, ATornLastRecordIsDroppedAtEveryByteOffsetAndNothingElseIsLost) {
  std::vector<UsageEvent> events;
  for (int i = 0; i < 3; ++i) events.push_back(FullEvent("gen-" + std::to_string(i)));
  events.push_back(SmallEvent("gen-3"));  // the last one: every byte offset of it is tried
  {
    auto spool = Open();
    ASSERT_TRUE(spool);
    AppendAll(*spool, events);
  }
  std::vector<fs::path> segments = Segments();
  ASSERT_EQ(segments.size(), 1u);
  const std::string whole = ReadBytes(segments[0]);
  const size_t last_size = FrameSpoolRecord(EncodeUsageEvent(events.back())).size();
  ASSERT_GT(whole.size(), last_size);
  const size_t last_start = whole.size() - last_size;

  for (size_t cut = last_start; cut < whole.size(); ++cut) {
    WriteBytes(segments[0], std::string_view(whole).substr(0, cut));
    auto spool = Open();
    ASSERT_TRUE(spool) << "cut at " << cut;
    std::vector<SpooledEvent> got = spool->TakeRecovered();
    ASSERT_EQ(got.size(), 3u) << "cut at " << cut;
    for (int i = 0; i < 3; ++i) EXPECT_EQ(got[i].event.request_id, events[i].request_id);
    EXPECT_EQ(spool->stats().torn_tails, cut > last_start ? 1 : 0) << "cut at " << cut;
    EXPECT_EQ(spool->stats().corrupt_records, 0) << "cut at " << cut;
    spool->Close();
    EXPECT_EQ(fs::file_size(segments[0]), last_start) << "the torn bytes are truncated away";
  }
  EXPECT_TRUE(Logged("torn record"));
}

// A damaged byte anywhere in the last record (length, checksum or payload).
TEST_F(UsageSpoolTest, ADamagedLastRecordIsDroppedAtEveryByteOffsetAndNothingElseIsLost) {
  std::vector<UsageEvent> events;
  for (int i = 0; i < 3; ++i) events.push_back(FullEvent("gen-" + std::to_string(i)));
  events.push_back(SmallEvent("gen-3"));  // the last one: every byte offset of it is tried
  {
    auto spool = Open();
    ASSERT_TRUE(spool);
    AppendAll(*spool, events);
  }
  std::vector<fs::path> segments = Segments();
  ASSERT_EQ(segments.size(), 1u);
  const std::string whole = ReadBytes(segments[0]);
  const size_t last_start = whole.size() - FrameSpoolRecord(EncodeUsageEvent(events.back())).size();
  for (size_t at = last_start; at < whole.size(); ++at) {
    std::string damaged = whole;
    damaged[at] = static_cast<char>(damaged[at] ^ 0x5a);
    WriteBytes(segments[0], damaged);
    auto spool = Open();
    ASSERT_TRUE(spool) << "damage at " << at;
    std::vector<SpooledEvent> got = spool->TakeRecovered();
    ASSERT_EQ(got.size(), 3u) << "damage at " << at;
    EXPECT_EQ(got[2].event.request_id, "gen-2");
    EXPECT_EQ(spool->stats().torn_tails, 1) << "damage at " << at;
    EXPECT_EQ(spool->stats().corrupt_records, 0) << "damage at " << at;
  }
}

// What a file system may leave after a crash: the size grew, the data did not land.
TEST_F(UsageSpoolTest, AZeroFilledTailIsDropped) {
  {
    auto spool = Open();
    ASSERT_TRUE(spool);
    AppendAll(*spool, {SmallEvent("gen-1"), SmallEvent("gen-2")});
  }
  fs::path segment = Segments().at(0);
  std::string bytes = ReadBytes(segment);
  size_t good = bytes.size();
  WriteBytes(segment, bytes + std::string(4096, '\0'));
  auto spool = Open();
  ASSERT_TRUE(spool);
  EXPECT_EQ(spool->TakeRecovered().size(), 2u);
  EXPECT_EQ(spool->stats().torn_tails, 1);
  spool->Close();
  EXPECT_EQ(fs::file_size(segment), good);
}

TEST_F(UsageSpoolTest, CorruptionInTheMiddleSkipsTheRestOfTheSegmentAndIsCounted) {
  std::vector<UsageEvent> events;
  for (int i = 0; i < 5; ++i) events.push_back(FullEvent("gen-" + std::to_string(i)));
  {
    auto spool = Open();
    ASSERT_TRUE(spool);
    AppendAll(*spool, events);
  }
  fs::path segment = Segments().at(0);
  std::string bytes = ReadBytes(segment);
  const size_t record = FrameSpoolRecord(EncodeUsageEvent(events[0])).size();  // all the same size
  ASSERT_EQ(bytes.size(), 5 * record);
  bytes[record + 8 + 20] ^= 0x01;  // inside the payload of the second record
  WriteBytes(segment, bytes);

  std::vector<SpooledEvent> got;
  {
    auto spool = Open();
    ASSERT_TRUE(spool);
    got = spool->TakeRecovered();
    ASSERT_EQ(got.size(), 1u);
    EXPECT_EQ(got[0].event.request_id, "gen-0");
    EXPECT_EQ(spool->stats().corrupt_records, 1);
    EXPECT_EQ(spool->stats().torn_tails, 0);
    EXPECT_EQ(fs::file_size(segment), bytes.size()) << "not truncated: kept for the operator";
    EXPECT_TRUE(Logged("skipped the rest of the segment"));
    // Once the readable record is in the database the segment is set aside.
    std::vector<uint64_t> seqs{got[0].seq};
    spool->MarkCommitted(seqs);
    EXPECT_TRUE(Segments().empty());
    EXPECT_EQ(Segments(".corrupt").size(), 1u);
    AppendAll(*spool, {SmallEvent("gen-new")});
  }
  // The set-aside file is never read again; new segments never reuse its number.
  auto spool = Open();
  ASSERT_TRUE(spool);
  got = spool->TakeRecovered();
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].event.request_id, "gen-new");
  EXPECT_EQ(spool->stats().corrupt_records, 0);
  EXPECT_GT(Segments().at(0).filename().string(), Segments(".corrupt").at(0).filename().string());
}

TEST_F(UsageSpoolTest, AnUndecodableRecordIsSkippedAlone) {
  std::string bytes = FrameSpoolRecord(EncodeUsageEvent(SmallEvent("gen-1"))) +
                      FrameSpoolRecord("{\"v\":1,\"no\":\"request id\"}") +
                      FrameSpoolRecord(EncodeUsageEvent(SmallEvent("gen-3")));
  WriteBytes(dir_ / "segment-00000000000000000007.log", bytes);
  auto spool = Open();
  ASSERT_TRUE(spool);
  std::vector<SpooledEvent> got = spool->TakeRecovered();
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[0].event.request_id, "gen-1");
  EXPECT_EQ(got[1].event.request_id, "gen-3");
  EXPECT_EQ(spool->stats().corrupt_records, 1);
}

TEST_F(UsageSpoolTest, NewRecordsGoToANewSegmentAndOldOnesStayUntilCommitted) {
  std::vector<SpooledEvent> first;
  {
    auto spool = Open();
    ASSERT_TRUE(spool);
    AppendAll(*spool, {SmallEvent("gen-1"), SmallEvent("gen-2")});
  }
  {
    auto spool = Open();
    ASSERT_TRUE(spool);
    first = spool->TakeRecovered();
    ASSERT_EQ(first.size(), 2u);
    std::vector<uint64_t> seqs = AppendAll(*spool, {SmallEvent("gen-3")});
    EXPECT_EQ(Segments().size(), 2u);
    std::vector<uint64_t> one{first[0].seq};
    spool->MarkCommitted(one);
    EXPECT_EQ(Segments().size(), 2u) << "gen-2 is not committed yet";
    std::vector<uint64_t> two{first[1].seq};
    spool->MarkCommitted(two);
    EXPECT_EQ(Segments().size(), 1u);
    EXPECT_GT(seqs[0], first[1].seq);
  }
  auto spool = Open();
  ASSERT_TRUE(spool);
  std::vector<SpooledEvent> got = spool->TakeRecovered();
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].event.request_id, "gen-3");
}

TEST_F(UsageSpoolTest, SegmentsRollAtTheirSizeAndAreDeletedOnceCommitted) {
  const size_t record = FrameSpoolRecord(EncodeUsageEvent(FullEvent("gen-0"))).size();
  auto spool = Open(static_cast<int64_t>(2 * record));  // two records per segment
  ASSERT_TRUE(spool);
  std::vector<UsageEvent> events;
  for (int i = 0; i < 9; ++i) events.push_back(FullEvent("gen-" + std::to_string(i)));
  std::vector<uint64_t> seqs = AppendAll(*spool, events);
  std::vector<fs::path> segments = Segments();
  ASSERT_EQ(segments.size(), 5u);
  for (size_t i = 0; i + 1 < segments.size(); ++i) EXPECT_EQ(fs::file_size(segments[i]), 2 * record);
  EXPECT_EQ(spool->stats().segment_files, 5);

  // Out of order, and one record of a segment alone is not enough.
  std::vector<uint64_t> part{seqs[3], seqs[0], seqs[2]};
  spool->MarkCommitted(part);
  EXPECT_EQ(Segments().size(), 4u);
  EXPECT_FALSE(fs::exists(segments[1]));
  std::vector<uint64_t> rest(seqs.begin(), seqs.end());
  spool->MarkCommitted(rest);  // repeats are ignored
  // The last segment is the writer's; it goes once the writer sees it idle.
  for (int i = 0; i < 500 && spool->stats().segment_files != 0; ++i) std::this_thread::sleep_for(10ms);
  EXPECT_EQ(spool->stats().segment_files, 0);
  EXPECT_TRUE(Segments().empty());
  EXPECT_EQ(spool->stats().segments_deleted, 5);
  spool->Close();
  auto again = Open();
  ASSERT_TRUE(again);
  EXPECT_TRUE(again->TakeRecovered().empty());
}

TEST_F(UsageSpoolTest, RecordsMayBeCommittedBeforeTheyAreWritten) {
  auto spool = Open();
  ASSERT_TRUE(spool);
  WriterGate gate;
  gate.Close(*spool);
  Written written;
  uint64_t first = spool->Append(std::make_shared<const UsageEvent>(SmallEvent("gen-1")), written.Callback());
  uint64_t second = spool->Append(std::make_shared<const UsageEvent>(SmallEvent("gen-2")), written.Callback());
  std::vector<uint64_t> seqs{first, second};
  spool->MarkCommitted(seqs);  // the database was faster than the disk
  gate.Release();
  ASSERT_TRUE(written.WaitFor(2));
  EXPECT_EQ(written.durable, 2);
  // Both count once written: the segment is fully committed and goes.
  for (int i = 0; i < 500 && !Segments().empty(); ++i) std::this_thread::sleep_for(10ms);
  EXPECT_TRUE(Segments().empty());
  spool->Close();
  auto again = Open();
  ASSERT_TRUE(again);
  EXPECT_TRUE(again->TakeRecovered().empty());
}

TEST_F(UsageSpoolTest, ASegmentWithAnUncommittedRecordIsReplayedWhole) {
  {
    auto spool = Open();
    ASSERT_TRUE(spool);
    std::vector<uint64_t> seqs = AppendAll(*spool, {SmallEvent("gen-1"), SmallEvent("gen-2")});
    seqs.pop_back();
    spool->MarkCommitted(seqs);
  }
  auto spool = Open();
  ASSERT_TRUE(spool);
  EXPECT_EQ(spool->TakeRecovered().size(), 2u) << "replay is idempotent; records are not marked one by one";
}

TEST_F(UsageSpoolTest, CloseDeletesAFullyCommittedSegmentAndKeepsTheLockFileAndId) {
  auto spool = Open();
  ASSERT_TRUE(spool);
  std::vector<uint64_t> seqs = AppendAll(*spool, {SmallEvent("gen-1")});
  spool->MarkCommitted(seqs);
  spool->Close();
  EXPECT_TRUE(Segments().empty());
  EXPECT_TRUE(fs::exists(dir_ / "replica-id"));
  spool->Close();  // idempotent
}

TEST_F(UsageSpoolTest, OneProcessAtATime) {
  auto first = Open();
  ASSERT_TRUE(first);
  auto second = UsageSpool::Open({dir_.string(), 1 << 20});
  ASSERT_FALSE(second);
  EXPECT_EQ(second.error().code, ErrorCode::kConflict);
  EXPECT_NE(second.error().message.find("in use by another process"), std::string::npos)
      << second.error().message;
  first->Close();
  auto third = UsageSpool::Open({dir_.string(), 1 << 20});
  EXPECT_TRUE(third) << third.error().message;
}

TEST_F(UsageSpoolTest, RefusesABrokenReplicaIdFileAndBadOptions) {
  WriteBytes(dir_ / "replica-id", "not-an-id\n");
  auto spool = UsageSpool::Open({dir_.string(), 1 << 20});
  ASSERT_FALSE(spool);
  EXPECT_EQ(spool.error().code, ErrorCode::kInvalidArgument);
  EXPECT_FALSE(UsageSpool::Open({"", 1 << 20}));
  EXPECT_FALSE(UsageSpool::Open({dir_.string(), 0}));
}

TEST_F(UsageSpoolTest, CreatesTheDirectory) {
  fs::path nested = dir_ / "a" / "b";
  auto spool = UsageSpool::Open({nested.string(), 1 << 20});
  ASSERT_TRUE(spool) << spool.error().message;
  EXPECT_TRUE(fs::exists(nested / "replica-id"));
  EXPECT_TRUE(fs::exists(nested / "LOCK"));
}

TEST_F(UsageSpoolTest, ReportsRecordsItCannotWriteAndRecovers) {
  auto spool = Open();
  ASSERT_TRUE(spool);
  // The name of the next segment is taken (by a directory: this works for
  // root too, which ignores permissions), so it cannot be created.
  fs::create_directory(dir_ / "segment-00000000000000000001.log");
  Written written;
  spool->Append(std::make_shared<const UsageEvent>(SmallEvent("gen-1")), written.Callback());
  ASSERT_TRUE(written.WaitFor(1));
  EXPECT_EQ(written.failed, 1);
  EXPECT_EQ(spool->stats().write_failures, 1);
  EXPECT_TRUE(Logged("cannot create"));
  spool->Append(std::make_shared<const UsageEvent>(SmallEvent("gen-2")), written.Callback());
  ASSERT_TRUE(written.WaitFor(2));
  EXPECT_EQ(written.durable, 1) << "the next group gets a new segment";
  EXPECT_TRUE(Logged("usage spool writes recovered"));
  spool->Close();
  fs::remove(dir_ / "segment-00000000000000000001.log");
  auto again = Open();
  ASSERT_TRUE(again);
  std::vector<SpooledEvent> got = again->TakeRecovered();
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].event.request_id, "gen-2");
}

}  // namespace
}  // namespace tollgate::billing::internal
