#include "tollgate/billing/rate_limiter.hpp"

#include "log_internal.hpp"
#include "pg.hpp"

#include <algorithm>
#include <array>
#include <atomic>
#include <condition_variable>
#include <limits>
#include <mutex>
#include <thread>
#include <unordered_map>

namespace tollgate::billing {

namespace {

using std::chrono::system_clock;
using Millis = std::chrono::milliseconds;

constexpr int64_t kWindowSeconds = 60;
constexpr int64_t kNever = std::numeric_limits<int64_t>::min() / 2;

int64_t EpochSeconds(system_clock::time_point t) {
  return std::chrono::floor<std::chrono::seconds>(t.time_since_epoch()).count();
}

// Start of the UTC minute holding `t`, in seconds since the Unix epoch
// (system_clock is Unix time since C++20, so minutes are UTC minutes).
int64_t WindowOf(system_clock::time_point t) {
  int64_t s = EpochSeconds(t);
  int64_t r = s % kWindowSeconds;
  if (r < 0) r += kWindowSeconds;
  return s - r;
}

system_clock::time_point WindowTime(int64_t window) {
  return system_clock::time_point(std::chrono::seconds(window));
}

// One key on this replica: a key used here, or one only the other replicas
// use (ApplyOthers; then the local counts stay zero, ready for its first use
// here). Local counts are for `window`; the others' counts are for
// `others_window` as of the last sync.
struct Entry {
  int64_t window = kNever;
  int64_t requests = 0;
  int64_t tokens = 0;
  int64_t in_flight = 0;  // across windows

  int64_t others_window = kNever;
  int64_t others_requests = 0;
  int64_t others_tokens = 0;
  int64_t others_in_flight = 0;

  bool dirty = false;                 // counts changed since handed to a sync round
  int64_t written_window = kNever;    // window of the last row handed to a sync round
  int64_t written_at = kNever;        // and when (epoch seconds), for the heartbeat
  int64_t last_used_window = kNever;  // last Acquire/Release

  // Moves to window `w` if it is later; a window never moves back (threads
  // may pass slightly different `now`s around a minute boundary: the late
  // one counts in the newer window).
  int64_t Roll(int64_t w) {
    if (w > window) {
      window = w;
      requests = 0;
      tokens = 0;
    }
    return window;
  }
  // The others' counts that apply to the current window: requests and tokens
  // only when synced in it; calls in flight when synced in it or the one
  // before (so they survive a minute boundary until the next sync, but not a
  // long outage).
  int64_t OthersRequests() const { return others_window == window ? others_requests : 0; }
  int64_t OthersTokens() const { return others_window == window ? others_tokens : 0; }
  int64_t OthersInFlight() const {
    return others_window >= window - kWindowSeconds ? others_in_flight : 0;
  }
  // Nothing to keep once rolled to window `w`: not used here in this window or
  // the one before, nothing in flight, nothing left to write, and none of the
  // others' counts apply any more. So an entry kept for the others' counts
  // goes with their window (calls in flight: one window later, or at the
  // sync that reads them as zero).
  bool Forgettable(int64_t w) const {
    return !dirty && in_flight == 0 && last_used_window < w - kWindowSeconds &&
           OthersRequests() == 0 && OthersTokens() == 0 && OthersInFlight() == 0;
  }
};

constexpr size_t kShards = 16;

struct Shard {
  mutable std::mutex mutex;
  std::unordered_map<int64_t, Entry> entries;
};

size_t ShardOf(int64_t key_id) {
  // Keys are sequential ids; mix them so neighbours spread over shards.
  uint64_t x = static_cast<uint64_t>(key_id) * 0x9E3779B97F4A7C15ull;
  return static_cast<size_t>(x >> 60) % kShards;
}

int64_t RetrySeconds(Millis until_reset) {
  int64_t s = (until_reset.count() + 999) / 1000;
  return std::max<int64_t>(s, 1);
}

std::string BigintArray(const std::vector<int64_t>& values) {
  std::string out = "{";
  for (size_t i = 0; i < values.size(); ++i) {
    if (i > 0) out += ',';
    out += std::to_string(values[i]);
  }
  out += '}';
  return out;
}

// Upserts this replica's rows ($3..$6, absolute values) and reads the other
// replicas' sums for every key they have counts for, in one round trip: not
// only the keys used here, so a key's first call on this replica already
// counts what the others admitted (ApplyOthers keeps those sums). The read
// does not see the upsert (same snapshot), which is fine: it excludes this
// replica. Calls in flight come from each other replica's newest row of the
// last two windows (a replica carries its calls in flight into each new
// window's row), and only while that row is fresh ($7 seconds, database
// clock), so a dead replica's calls stop counting. Keys whose sums are all
// zero are left out (ApplyOthers reads a missing key as zeros), so the answer
// holds only the keys the others counted in this window or have calls in
// flight for. No index leads with window_start, so the read scans
// rate_counters, which holds only the last kKeepWindowsSeconds +
// kCleanupEverySeconds of windows (the cleanup below); the range keeps the
// aggregation to the last two windows' rows.
constexpr const char* kSyncSql = R"sql(
WITH upsert AS (
  INSERT INTO rate_counters AS c
    (api_key_id, window_start, replica_id, requests, tokens, in_flight, updated_at)
  SELECT u.k, $1::timestamptz, $2, u.r, u.t, u.f, now()
  FROM unnest($3::bigint[], $4::bigint[], $5::bigint[], $6::bigint[]) AS u(k, r, t, f)
  ON CONFLICT (api_key_id, window_start, replica_id) DO UPDATE
    SET requests = EXCLUDED.requests, tokens = EXCLUDED.tokens,
        in_flight = EXCLUDED.in_flight, updated_at = now()
  RETURNING 1
)
SELECT api_key_id, requests, tokens, in_flight
FROM (
  SELECT api_key_id,
         COALESCE(SUM(requests) FILTER (WHERE window_start = $1::timestamptz), 0)::bigint AS requests,
         COALESCE(SUM(tokens) FILTER (WHERE window_start = $1::timestamptz), 0)::bigint AS tokens,
         COALESCE(SUM(in_flight) FILTER (
           WHERE newest AND updated_at > now() - make_interval(secs => $7::int)), 0)::bigint AS in_flight
  FROM (
    SELECT api_key_id, window_start, requests, tokens, in_flight, updated_at,
           window_start = max(window_start) OVER (PARTITION BY api_key_id, replica_id) AS newest
    FROM rate_counters
    WHERE replica_id <> $2
      AND window_start >= $1::timestamptz - interval '1 minute'
      AND window_start <= $1::timestamptz
  ) r
  GROUP BY api_key_id
) s
WHERE requests <> 0 OR tokens <> 0 OR in_flight <> 0
)sql";

}  // namespace

std::string FormatRateLimitReset(Millis duration) {
  int64_t ms = duration.count();
  if (ms <= 0) return "0s";
  if (ms < 1000) return std::to_string(ms) + "ms";
  int64_t hours = ms / 3'600'000;
  int64_t minutes = ms / 60'000 % 60;
  int64_t seconds = ms / 1000 % 60;
  int64_t frac = ms % 1000;
  std::string out;
  if (hours > 0) out += std::to_string(hours) + "h";
  if (hours > 0 || minutes > 0) out += std::to_string(minutes) + "m";
  out += std::to_string(seconds);
  if (frac > 0) {
    std::string digits = std::to_string(frac);
    digits.insert(0, 3 - digits.size(), '0');
    while (digits.back() == '0') digits.pop_back();
    out += "." + digits;
  }
  out += "s";
  return out;
}

std::vector<std::pair<std::string, std::string>> RateLimitHeaders(const RateDecision& decision) {
  std::vector<std::pair<std::string, std::string>> headers;
  if (decision.limit_requests) {
    headers.emplace_back("x-ratelimit-limit-requests", std::to_string(*decision.limit_requests));
    headers.emplace_back("x-ratelimit-remaining-requests",
                         std::to_string(decision.remaining_requests));
    headers.emplace_back("x-ratelimit-reset-requests",
                         FormatRateLimitReset(decision.reset_requests));
  }
  if (decision.limit_tokens) {
    headers.emplace_back("x-ratelimit-limit-tokens", std::to_string(*decision.limit_tokens));
    headers.emplace_back("x-ratelimit-remaining-tokens", std::to_string(decision.remaining_tokens));
    headers.emplace_back("x-ratelimit-reset-tokens", FormatRateLimitReset(decision.reset_tokens));
  }
  if (!decision.allowed) {
    headers.emplace_back("retry-after", std::to_string(std::max<int64_t>(decision.retry_after_s, 1)));
  }
  return headers;
}

struct RateLimiter::Impl {
  explicit Impl(RateLimiter* owner) : self(owner) {}

  RateLimiter* const self;  // for the sync API from the sync thread
  std::array<Shard, kShards> shards;

  // Database side (Start only). Rounds run under session_mutex, so the sync
  // thread and SyncNow never overlap.
  bool has_database = false;
  std::string replica_id;
  std::chrono::milliseconds sync_interval{250};
  Clock clock;
  std::mutex session_mutex;
  std::unique_ptr<internal::PgSession> session;
  int64_t last_cleanup = kNever;  // epoch seconds; under session_mutex
  bool failing = false;           // under session_mutex: logs an outage once

  std::mutex stop_mutex;
  std::condition_variable stop_cv;
  bool stop_requested = false;
  std::thread thread;
  std::mutex join_mutex;

  std::atomic<int64_t> syncs{0};
  std::atomic<int64_t> sync_failures{0};

  Shard& ShardFor(int64_t key_id) { return shards[ShardOf(key_id)]; }
  const Shard& ShardFor(int64_t key_id) const { return shards[ShardOf(key_id)]; }

  system_clock::time_point Now() const { return clock ? clock() : system_clock::now(); }

  Result<void> Round() {
    std::lock_guard lock(session_mutex);
    Result<void> result = RoundLocked();
    if (!result) {
      sync_failures.fetch_add(1, std::memory_order_relaxed);
      if (!failing) {
        internal::Log(LogLevel::kError,
                      "rate limit sync failed, rate limits hold per replica until the database "
                      "is back: " + result.error().message);
        failing = true;
      }
    } else {
      syncs.fetch_add(1, std::memory_order_relaxed);
      if (failing) {
        internal::Log(LogLevel::kInfo, "rate limit sync recovered");
        failing = false;
      }
    }
    return result;
  }

  // Caller holds session_mutex.
  Result<void> RoundLocked();

  // The first round ran in Start.
  void Run() {
    std::unique_lock lock(stop_mutex);
    while (!stop_cv.wait_for(lock, sync_interval, [&] { return stop_requested; })) {
      lock.unlock();
      (void)Round();
      lock.lock();
    }
  }
};

RateLimiter::RateLimiter() : impl_(std::make_unique<Impl>(this)) {}

RateLimiter::~RateLimiter() { Stop(); }

Result<std::unique_ptr<RateLimiter>> RateLimiter::Start(const std::string& database_url,
                                                        std::string replica_id,
                                                        int sync_interval_ms, Clock clock) {
  if (sync_interval_ms < 1) {
    return InvalidArgument("rate limit sync interval must be >= 1 ms", "sync_interval_ms");
  }
  if (replica_id.empty()) return InvalidArgument("replica id must not be empty", "replica_id");
  auto limiter = std::unique_ptr<RateLimiter>(new RateLimiter());
  Impl& impl = *limiter->impl_;
  impl.has_database = true;
  impl.replica_id = std::move(replica_id);
  impl.sync_interval = std::chrono::milliseconds(sync_interval_ms);
  impl.clock = std::move(clock);
  impl.session = std::make_unique<internal::PgSession>(database_url);
  {
    std::lock_guard lock(impl.session_mutex);
    if (auto ok = impl.session->Ensure(); !ok) return ok.error();
  }
  // One round before the first Acquire: the others' counts of every key are
  // known from the start. A failure is logged and counted like any other
  // round's, and the thread tries again after an interval.
  (void)impl.Round();
  Impl* raw = &impl;
  impl.thread = std::thread([raw] { raw->Run(); });
  return limiter;
}

RateDecision RateLimiter::Acquire(const KeyRecord& key, int64_t estimated_tokens,
                                  system_clock::time_point now) {
  RateDecision d;
  d.key_id = key.id;
  d.limit_requests = key.requests_per_minute;
  d.limit_tokens = key.tokens_per_minute;
  d.max_concurrent = key.max_concurrent;
  if (!key.requests_per_minute && !key.tokens_per_minute && !key.max_concurrent) return d;
  const int64_t estimate = std::max<int64_t>(estimated_tokens, 0);
  d.estimated_tokens = estimate;

  Shard& shard = impl_->ShardFor(key.id);
  std::lock_guard lock(shard.mutex);
  Entry& e = shard.entries[key.id];
  const int64_t window = e.Roll(WindowOf(now));
  // Refusals count as use too: a key refused because of the other replicas'
  // counts must keep reading them.
  e.last_used_window = window;
  d.window_start = WindowTime(window);
  Millis reset = std::chrono::duration_cast<Millis>(WindowTime(window + kWindowSeconds) - now);
  reset = std::clamp(reset, Millis(0), Millis(kWindowSeconds * 1000));
  d.reset_requests = reset;
  d.reset_tokens = reset;

  const int64_t requests = e.requests + e.OthersRequests();
  const int64_t tokens = e.tokens + e.OthersTokens();
  const int64_t in_flight = e.in_flight + e.OthersInFlight();

  if (key.requests_per_minute && requests + 1 > *key.requests_per_minute) {
    d.refused_by = RateLimitKind::kRequests;
    d.retry_after_s = RetrySeconds(reset);
    d.message = "rate limit: " + std::to_string(*key.requests_per_minute) +
                " requests per minute for this key; retry in " + std::to_string(d.retry_after_s) +
                " s";
  } else if (key.tokens_per_minute && (tokens > 0 || *key.tokens_per_minute <= 0) &&
             tokens + estimate > *key.tokens_per_minute) {
    // An empty window admits any one call (see the header): else a call
    // estimated above the limit could never run.
    d.refused_by = RateLimitKind::kTokens;
    d.retry_after_s = RetrySeconds(reset);
    d.message = "rate limit: " + std::to_string(*key.tokens_per_minute) +
                " tokens per minute for this key (" + std::to_string(tokens) +
                " used in this minute, this call may need " + std::to_string(estimate) +
                "); retry in " + std::to_string(d.retry_after_s) + " s";
  } else if (key.max_concurrent && in_flight + 1 > *key.max_concurrent) {
    d.refused_by = RateLimitKind::kConcurrency;
    d.retry_after_s = 1;
    d.message = "rate limit: " + std::to_string(*key.max_concurrent) +
                " concurrent calls for this key; retry in 1 s";
  }

  int64_t counted_requests = requests;
  int64_t counted_tokens = tokens;
  if (d.refused_by == RateLimitKind::kNone) {
    e.requests += 1;
    e.tokens += estimate;
    e.in_flight += 1;
    e.dirty = true;
    d.counted = true;
    counted_requests += 1;
    counted_tokens += estimate;
  } else {
    d.allowed = false;
  }
  if (key.requests_per_minute) {
    d.remaining_requests = std::max<int64_t>(*key.requests_per_minute - counted_requests, 0);
  }
  if (key.tokens_per_minute) {
    d.remaining_tokens = std::max<int64_t>(*key.tokens_per_minute - counted_tokens, 0);
  }
  return d;
}

void RateLimiter::Release(const RateDecision& decision, int64_t actual_tokens,
                          system_clock::time_point now) {
  if (!decision.counted) return;
  Shard& shard = impl_->ShardFor(decision.key_id);
  std::lock_guard lock(shard.mutex);
  auto it = shard.entries.find(decision.key_id);
  // An entry with a call in flight is never forgotten; a missing one means a
  // Release without its Acquire.
  if (it == shard.entries.end()) return;
  Entry& e = it->second;
  const int64_t window = e.Roll(WindowOf(now));
  e.in_flight = std::max<int64_t>(e.in_flight - 1, 0);
  if (WindowTime(window) == decision.window_start) {
    const int64_t actual = std::max<int64_t>(actual_tokens, 0);
    e.tokens = std::max<int64_t>(e.tokens + actual - decision.estimated_tokens, 0);
  }
  e.dirty = true;
  e.last_used_window = window;
}

RateUsage RateLimiter::Usage(int64_t key_id, system_clock::time_point now) const {
  RateUsage usage;
  usage.local.key_id = key_id;
  usage.others.key_id = key_id;
  const Shard& shard = impl_->ShardFor(key_id);
  std::lock_guard lock(shard.mutex);
  auto it = shard.entries.find(key_id);
  if (it == shard.entries.end()) return usage;
  Entry e = it->second;  // a copy: Usage does not move the window
  e.Roll(WindowOf(now));
  usage.local.requests = e.requests;
  usage.local.tokens = e.tokens;
  usage.local.in_flight = e.in_flight;
  usage.others.requests = e.OthersRequests();
  usage.others.tokens = e.OthersTokens();
  usage.others.in_flight = e.OthersInFlight();
  return usage;
}

RateSyncBatch RateLimiter::PrepareSync(system_clock::time_point now) {
  RateSyncBatch batch;
  const int64_t window = WindowOf(now);
  const int64_t now_s = EpochSeconds(now);
  batch.window_start = WindowTime(window);
  for (Shard& shard : impl_->shards) {
    std::lock_guard lock(shard.mutex);
    for (auto it = shard.entries.begin(); it != shard.entries.end();) {
      Entry& e = it->second;
      // Counted by a caller whose clock is already in the next window: leave
      // it dirty for the next round rather than write it into this window.
      if (e.window > window) {
        ++it;
        continue;
      }
      e.Roll(window);
      if (e.Forgettable(window)) {
        it = shard.entries.erase(it);
        continue;
      }
      const bool heartbeat =
          e.in_flight > 0 && (e.written_window != window ||
                              now_s - e.written_at >= kInFlightHeartbeatSeconds);
      if (e.dirty || heartbeat) {
        batch.changed.push_back({it->first, e.requests, e.tokens, e.in_flight});
        e.dirty = false;
        e.written_window = window;
        e.written_at = now_s;
      }
      ++it;
    }
  }
  return batch;
}

void RateLimiter::SyncFailed(const RateSyncBatch& batch) {
  for (const RateCounterRow& row : batch.changed) {
    Shard& shard = impl_->ShardFor(row.key_id);
    std::lock_guard lock(shard.mutex);
    auto it = shard.entries.find(row.key_id);
    if (it == shard.entries.end()) continue;
    it->second.dirty = true;
    it->second.written_window = kNever;
  }
}

void RateLimiter::ApplyOthers(const RateSyncBatch& batch, const std::vector<RateCounterRow>& others) {
  // Bucketed by shard first, so each shard's lock is taken once and alone.
  std::array<std::unordered_map<int64_t, const RateCounterRow*>, kShards> by_shard;
  for (const RateCounterRow& row : others) by_shard[ShardOf(row.key_id)][row.key_id] = &row;
  const int64_t window = WindowOf(batch.window_start);
  for (size_t i = 0; i < kShards; ++i) {
    Shard& shard = impl_->shards[i];
    auto& rows = by_shard[i];
    std::lock_guard lock(shard.mutex);
    // The answer covers every key: a key tracked here and missing from it
    // has nothing on the other replicas.
    for (auto& [key_id, e] : shard.entries) {
      auto found = rows.find(key_id);
      e.others_window = window;
      if (found == rows.end()) {
        e.others_requests = 0;
        e.others_tokens = 0;
        e.others_in_flight = 0;
        continue;
      }
      e.others_requests = found->second->requests;
      e.others_tokens = found->second->tokens;
      e.others_in_flight = found->second->in_flight;
      rows.erase(found);
    }
    // Keys not used here yet: kept for their first call here.
    for (const auto& [key_id, row] : rows) {
      if (row->requests == 0 && row->tokens == 0 && row->in_flight == 0) continue;
      Entry& e = shard.entries[key_id];
      e.others_window = window;
      e.others_requests = row->requests;
      e.others_tokens = row->tokens;
      e.others_in_flight = row->in_flight;
    }
  }
}

Result<void> RateLimiter::Impl::RoundLocked() {
  const system_clock::time_point now = Now();
  RateSyncBatch batch = self->PrepareSync(now);
  // Every round reads, also with nothing to write: the others' counts of
  // keys not used here yet are what a first call here is decided with.
  {
    std::vector<int64_t> keys, requests, tokens, in_flight;
    keys.reserve(batch.changed.size());
    requests.reserve(batch.changed.size());
    tokens.reserve(batch.changed.size());
    in_flight.reserve(batch.changed.size());
    for (const RateCounterRow& row : batch.changed) {
      keys.push_back(row.key_id);
      requests.push_back(row.requests);
      tokens.push_back(row.tokens);
      in_flight.push_back(row.in_flight);
    }
    // Absolute values, so a round retried after an unknown outcome (the
    // connection broke after the commit) writes the same rows again.
    internal::PgOutcome out = session->Exec(
        kSyncSql,
        {internal::PgTimestamp(batch.window_start), replica_id, BigintArray(keys),
         BigintArray(requests), BigintArray(tokens), BigintArray(in_flight),
         std::to_string(kStaleInFlightSeconds)},
        /*idempotent=*/true);
    if (!out.ok()) {
      session->DropIfBad();
      self->SyncFailed(batch);
      return out.ToError("syncing rate limit counters");
    }
    const PGresult* r = out.result.get();
    std::vector<RateCounterRow> others;
    others.reserve(PQntuples(r));
    for (int row = 0; row < PQntuples(r); ++row) {
      others.push_back({internal::PgInt64(r, row, 0), internal::PgInt64(r, row, 1),
                        internal::PgInt64(r, row, 2), internal::PgInt64(r, row, 3)});
    }
    self->ApplyOthers(batch, others);
  }
  const int64_t now_s = EpochSeconds(now);
  if (now_s - last_cleanup >= kCleanupEverySeconds) {
    // Any replica may delete any replica's old windows: nobody reads them.
    internal::PgOutcome out = session->Exec(
        "DELETE FROM rate_counters WHERE window_start < $1::timestamptz",
        {internal::PgTimestamp(WindowTime(WindowOf(now)) - std::chrono::seconds(kKeepWindowsSeconds))},
        /*idempotent=*/true);
    if (!out.ok()) {
      session->DropIfBad();
      return out.ToError("deleting old rate limit counters");
    }
    last_cleanup = now_s;
  }
  return {};
}

Result<void> RateLimiter::SyncNow() {
  if (!impl_->has_database) {
    return InvalidArgument("this rate limiter has no database (built without Start)");
  }
  return impl_->Round();
}

void RateLimiter::Stop() {
  {
    std::lock_guard lock(impl_->stop_mutex);
    impl_->stop_requested = true;
  }
  impl_->stop_cv.notify_all();
  std::lock_guard join_lock(impl_->join_mutex);
  if (impl_->thread.joinable()) impl_->thread.join();
}

int64_t RateLimiter::syncs() const { return impl_->syncs.load(std::memory_order_relaxed); }
int64_t RateLimiter::sync_failures() const {
  return impl_->sync_failures.load(std::memory_order_relaxed);
}
size_t RateLimiter::tracked_keys() const {
  size_t n = 0;
  for (const Shard& shard : impl_->shards) {
    std::lock_guard lock(shard.mutex);
    n += shard.entries.size();
  }
  return n;
}

}  // namespace tollgate::billing
