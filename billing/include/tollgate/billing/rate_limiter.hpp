// Per-key rate limits (requests per minute, tokens per minute, concurrent
// calls) that hold across gateway replicas sharing one PostgreSQL database,
// with no database call on the request path.
//
// Model. Fixed one-minute windows aligned to UTC minutes
// ([hh:mm:00, hh:mm+1:00) of system_clock, which is Unix time). Each replica
// counts, per key and for the current window, the requests it admitted and
// their tokens, plus the calls it has in flight (across windows: a call that
// straddles a minute stays in flight). A background thread upserts this
// replica's counts into rate_counters (migrations/004_ledger.sql), one row per
// (key, window, replica), and reads back the sums of the other replicas' rows
// for every key they have counts for, used here or not, and keeps them. A
// decision compares the local counts plus the others' last synced counts with
// the key's limits.
//
// Tolerance (what the limits guarantee). A sync round is: take this
// replica's changed counts, one statement (upsert them, read the others'
// sums), keep the sums; rounds follow each other one sync interval apart
// (from the end of one to the start of the next). An admission reaches the
// table by the end of this replica's next round, and another replica has it
// in memory by the end of its first round that starts after that: so each
// replica decides with the others' counts as of at most
//   T = 2 sync intervals + 4 round durations
// ago (a round lasts one database round trip plus a pass over the keys in
// memory). This holds for every key from the replica's first successful
// round on (Start runs the first round before it returns), for a key's first
// call on this replica too: a round reads the others' counts of all keys, not
// only of the keys used here. In one window a key is therefore admitted at
// most
//   limit + what the other replicas admitted within the T before the
//   window's last admission (counted from the replica that made it)
// requests (likewise tokens as counted, and calls in flight): with N replicas
// the overshoot is bounded by what N-1 replicas admit within T, which is
// 2 x 250 ms plus 4 round trips with the default interval, and it is zero
// with one replica. Ex.: rpm 30, two replicas each receiving 5 requests a
// second, round trips well under 25 ms: T < 600 ms, in which the other
// replica admits at most 3, so at most 33 are admitted in the minute.
// Windows follow each replica's own clock, so replicas should run NTP; skew
// of d seconds shifts counts by up to d seconds across a minute boundary.
// While the database is unreachable (or before a replica's first successful
// round) each replica keeps counting locally with the others' counts of its
// last successful sync (dropped when the window ends): the limits then hold
// per replica only (N replicas may admit up to N times a limit). The first
// successful sync restores the shared view.
// Calls in flight of a replica that died stop counting after
// kStaleInFlightSeconds (its rows are no longer refreshed).
//
// Token limits count the caller's estimate of a call's tokens at admission
// (e.g. prompt tokens plus max_tokens) and correct it to the actual tokens
// when the call ends, if its window is still current. A call is never refused
// on tokens while the key's window holds no tokens yet (across replicas, as
// synced): so a single call estimated above tokens_per_minute still gets
// through once per minute instead of never.
//
// Headers: OpenAI's x-ratelimit-* names and value formats
// (platform.openai.com/docs/guides/rate-limits, "Rate limits in headers",
// as of 2026-06: limit and remaining as integers, reset as a Go duration
// such as "1s", "6m0s", "59.5s" or "120ms").
#pragma once

#include "tollgate/billing/key_cache.hpp"
#include "tollgate/core/error.hpp"

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace tollgate::billing {

// Which limit refused a call.
enum class RateLimitKind { kNone, kRequests, kTokens, kConcurrency };

// The outcome of RateLimiter::Acquire, with what the response headers need.
// Keep it for Release when `allowed`.
struct RateDecision {
  bool allowed = true;
  RateLimitKind refused_by = RateLimitKind::kNone;  // kNone when allowed

  // The key's requests-per-minute limit and what is left of it in the current
  // window after this decision (this call counted when allowed; >= 0);
  // nullopt when the key has no such limit (no headers then).
  std::optional<int64_t> limit_requests;
  int64_t remaining_requests = 0;
  std::chrono::milliseconds reset_requests{0};  // until the window ends
  // Same for tokens per minute (remaining counts this call's estimate).
  std::optional<int64_t> limit_tokens;
  int64_t remaining_tokens = 0;
  std::chrono::milliseconds reset_tokens{0};
  // The key's concurrent-call limit (no header; OpenAI has none).
  std::optional<int64_t> max_concurrent;

  // Refusals only: whole seconds to wait (>= 1): until the window ends for
  // requests and tokens, 1 for concurrency. And a message for the 429 body,
  // e.g. "rate limit: 60 requests per minute for this key; retry in 12 s".
  int64_t retry_after_s = 0;
  std::string message;

  // For Release: the key, whether anything was counted (false for refusals
  // and for keys without limits), the window admitted in, and the tokens
  // counted for the call (its estimate, negative taken as 0).
  int64_t key_id = 0;
  bool counted = false;
  std::chrono::system_clock::time_point window_start;
  int64_t estimated_tokens = 0;
};

// The response headers for `decision`, as (lower-case name, value) pairs:
//   x-ratelimit-limit-requests, x-ratelimit-remaining-requests,
//   x-ratelimit-reset-requests   (only when the key has a request limit)
//   x-ratelimit-limit-tokens, x-ratelimit-remaining-tokens,
//   x-ratelimit-reset-tokens     (only when the key has a token limit)
//   retry-after                  (only when refused; whole seconds, RFC 9110 10.2.3)
// Empty for a key without request and token limits that was allowed.
std::vector<std::pair<std::string, std::string>> RateLimitHeaders(const RateDecision& decision);

// A duration as Go's time.Duration.String() writes it, to the millisecond
// (the format of OpenAI's x-ratelimit-reset-*): "0s", "120ms", "1s", "59.5s",
// "6m0s", "1h2m3.004s". Negative durations render as "0s".
std::string FormatRateLimitReset(std::chrono::milliseconds duration);

// One key's counts for one window (rate_counters columns).
struct RateCounterRow {
  int64_t key_id = 0;
  int64_t requests = 0;
  int64_t tokens = 0;
  int64_t in_flight = 0;
};

// What one sync round has to do (RateLimiter::PrepareSync): write `changed`,
// then read the other replicas' sums of window_start for all keys.
struct RateSyncBatch {
  std::chrono::system_clock::time_point window_start;  // the current window
  std::vector<RateCounterRow> changed;   // this replica's counts to upsert (absolute values)
};

// A key's counts as this replica sees them now (RateLimiter::Usage).
struct RateUsage {
  RateCounterRow local;   // this replica's (requests and tokens of the current window)
  RateCounterRow others;  // the other replicas', as last synced (0 when not synced this
                          // window), also for a key not used here yet
};

class RateLimiter {
 public:
  using Clock = std::function<std::chrono::system_clock::time_point()>;

  // Rows with calls in flight are rewritten at least this often, and other
  // replicas' in-flight counts are ignored once their row is older than
  // kStaleInFlightSeconds (database time), so a dead replica's calls stop
  // counting.
  static constexpr int kInFlightHeartbeatSeconds = 10;
  static constexpr int kStaleInFlightSeconds = 30;
  // Rows of windows that ended more than this long ago are deleted (by any
  // replica, about every kCleanupEverySeconds).
  static constexpr int kKeepWindowsSeconds = 120;
  static constexpr int kCleanupEverySeconds = 30;

  // A limiter with no database and no thread: it counts this process only,
  // unless someone drives the sync API below by hand (tests).
  RateLimiter();

  // Connects to `database_url` (libpq connection string or URI), runs one
  // sync round (blocking; a failed one is logged and counted as below, not an
  // error of Start) and starts the sync thread: `sync_interval_ms` (>= 1)
  // after each round's end it runs the next, which upserts this replica's
  // changed counts and reads the other replicas' sums for all keys they have
  // counts for, in one statement, also when nothing changed here; about every
  // kCleanupEverySeconds it deletes windows older than kKeepWindowsSeconds. `replica_id` (non-empty) names
  // this process in rate_counters.replica_id and must differ between live
  // processes ("<stable id>:<boot nonce>"). `clock` (tests; default
  // system_clock::now) gives the sync thread's time; pass the same times to
  // Acquire and Release.
  // When a sync fails (database down) the thread keeps trying every interval;
  // the first failure and the recovery are logged once each (log.hpp) and
  // every failure counts in sync_failures().
  // Errors: kInvalidArgument (bad URL, interval or replica id), kUnavailable
  // (cannot connect at start).
  static Result<std::unique_ptr<RateLimiter>> Start(const std::string& database_url,
                                                    std::string replica_id,
                                                    int sync_interval_ms = 250,
                                                    Clock clock = {});

  // Stops the sync thread (Stop()).
  ~RateLimiter();
  RateLimiter(const RateLimiter&) = delete;
  RateLimiter& operator=(const RateLimiter&) = delete;

  // Decides whether a call of `key` may start at `now`. With W = the UTC
  // minute of `now`, requests/tokens = local + others' counts of W, and
  // in_flight = local + others' calls in flight, it refuses when
  //   requests + 1 > requests_per_minute                        (kRequests), or
  //   tokens > 0 and tokens + estimated_tokens > tokens_per_minute (kTokens), or
  //   in_flight + 1 > max_concurrent                            (kConcurrency)
  // (checked in this order; absent limits never refuse); otherwise it counts
  // one request, `estimated_tokens` (negative taken as 0) and one call in
  // flight, and returns allowed with counted = true. Only the key's id and
  // its three limits are read. A key without any of the three limits is
  // allowed at once, counting nothing and taking no lock.
  // Never touches the database; thread-safe (per-key locking, sharded).
  RateDecision Acquire(const KeyRecord& key, int64_t estimated_tokens,
                       std::chrono::system_clock::time_point now);

  // Ends a call admitted by Acquire (pass its decision): one call fewer in
  // flight, and, when the window it was admitted in is still the window of
  // `now`, its tokens corrected from the estimate to `actual_tokens`
  // (negative taken as 0; the window's tokens never drop below 0). Call it
  // exactly once per allowed decision, whether the call succeeded, failed or
  // was cancelled. Does nothing when !decision.counted. Thread-safe.
  void Release(const RateDecision& decision, int64_t actual_tokens,
               std::chrono::system_clock::time_point now);

  // Key `key_id`'s counts at `now` (zeros for a key not used here). Thread-safe.
  RateUsage Usage(int64_t key_id, std::chrono::system_clock::time_point now) const;

  // --- Sync API: one round is PrepareSync, then (after the database work)
  // either ApplyOthers or SyncFailed with the same batch. The sync thread of
  // Start drives it; a limiter built with RateLimiter() can be driven by hand
  // (tests: feed two limiters each other's counts). Thread-safe, but rounds
  // must not overlap.

  // Moves every key to the window of `now`, and returns that window and the
  // counts to write (keys whose counts changed since the last round, plus
  // keys with calls in flight not written in this window or for
  // kInFlightHeartbeatSeconds). Forgets keys not used here in this window or
  // the one before, with nothing in flight and nothing left to write, once
  // none of the others' counts apply to the window of `now` (their requests
  // and tokens only to the window they were read for, their calls in flight
  // also to the next one). So the keys in memory are those used here in the
  // last two windows, those with calls in flight here, and those the others
  // counted in this window or the one before.
  RateSyncBatch PrepareSync(std::chrono::system_clock::time_point now);
  // The rows of `batch` were not written: write them again next round.
  void SyncFailed(const RateSyncBatch& batch);
  // The rows of `batch` were written, and `others` holds the other replicas'
  // sums for batch.window_start of every key they have counts for (requests
  // and tokens of that window; calls in flight from each replica's newest
  // row of that window or the one before, if written in the last
  // kStaleInFlightSeconds; at most one row per key). Every key missing from
  // `others` has zeros, whether used here or not. A key not in memory gets an
  // entry with just the others' counts (unless all zero), so its first call
  // here counts them; PrepareSync drops it once they no longer apply.
  void ApplyOthers(const RateSyncBatch& batch, const std::vector<RateCounterRow>& others);

  // One sync round now, on the calling thread (blocking; serialised with the
  // sync thread). Errors: kUnavailable, kInternal (schema missing: the
  // message says to run `tollgate migrate`), kInvalidArgument for a limiter
  // built with RateLimiter().
  Result<void> SyncNow();

  // Stops and joins the sync thread; Acquire and Release keep working
  // locally. Idempotent; thread-safe; not from a log handler.
  void Stop();

  // Counters for metrics. Thread-safe.
  int64_t syncs() const;          // successful sync rounds
  int64_t sync_failures() const;  // failed sync rounds
  size_t tracked_keys() const;    // keys in memory (used here, or with the others' counts)

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace tollgate::billing
