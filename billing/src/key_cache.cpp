#include "tollgate/billing/key_cache.hpp"

#include "log_internal.hpp"
#include "pg.hpp"
#include "tollgate/billing/api_key.hpp"

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <vector>

namespace tollgate::billing {

namespace {

// One immutable generation of the key table; readers share it through a
// shared_ptr, so a refresh never mutates what a Lookup is reading.
struct Snapshot {
  std::vector<KeyRecord> records;
  std::unordered_map<std::string, size_t> by_hash;    // key_hash -> index
  std::unordered_map<int64_t, size_t> by_id;          // id -> index
  // When the reload that built it started querying: the snapshot shows every
  // key committed before then.
  std::chrono::steady_clock::time_point load_started;

  void Add(KeyRecord record, std::string key_hash) {
    if (!key_hash.empty()) by_hash.emplace(std::move(key_hash), records.size());
    by_id.emplace(record.id, records.size());
    records.push_back(std::move(record));
  }
  const KeyRecord* Find(int64_t id) const {
    auto it = by_id.find(id);
    return it == by_id.end() ? nullptr : &records[it->second];
  }
};

}  // namespace

std::string_view LimitResetName(LimitReset reset) {
  switch (reset) {
    case LimitReset::kNone: return "none";
    case LimitReset::kDaily: return "daily";
    case LimitReset::kWeekly: return "weekly";
    case LimitReset::kMonthly: return "monthly";
  }
  return "none";
}

std::optional<LimitReset> ParseLimitReset(std::string_view name) {
  if (name == "none") return LimitReset::kNone;
  if (name == "daily") return LimitReset::kDaily;
  if (name == "weekly") return LimitReset::kWeekly;
  if (name == "monthly") return LimitReset::kMonthly;
  return std::nullopt;
}

std::chrono::system_clock::time_point PeriodStart(LimitReset reset,
                                                  std::chrono::system_clock::time_point at) {
  using namespace std::chrono;
  // floor, not duration_cast: times before the epoch round down too.
  const sys_days day = floor<days>(at);
  switch (reset) {
    case LimitReset::kNone:
      return system_clock::time_point{};
    case LimitReset::kDaily:
      return day;
    case LimitReset::kWeekly:
      // weekday arithmetic is modulo 7: days since the Monday on or before `day`.
      return day - (weekday{day} - Monday);
    case LimitReset::kMonthly: {
      const year_month_day ymd{day};
      return sys_days{ymd.year() / ymd.month() / 1};
    }
  }
  return system_clock::time_point{};
}

bool KeyUsable(const KeyRecord& record, std::chrono::system_clock::time_point now) {
  if (record.revoked || record.account.disabled) return false;
  return !record.expires_at || now < *record.expires_at;
}

struct KeyCache::Impl {
  explicit Impl(std::string url, int interval_ms)
      : session(std::move(url)), refresh_interval(interval_ms) {}

  // Database side: used by the refresh thread, RefreshNow and
  // RefreshIfLoadedBefore. Held from the query until the snapshot is
  // installed, so reloads install in the order they queried (an older
  // snapshot never replaces a newer one). Lock order: session, then state.
  std::mutex session_mutex;
  internal::PgSession session;
  const std::chrono::milliseconds refresh_interval;

  // Memory side: the current snapshot.
  mutable std::mutex state_mutex;
  std::shared_ptr<const Snapshot> snapshot;

  // Refresh thread.
  std::mutex stop_mutex;
  std::condition_variable stop_cv;
  bool stop_requested = false;
  std::thread thread;
  std::mutex join_mutex;
  bool failing = false;  // refresh thread only: logs an outage once

  std::atomic<int64_t> refreshes{0};
  std::atomic<int64_t> refresh_failures{0};

  std::shared_ptr<const Snapshot> Current() const {
    std::lock_guard lock(state_mutex);
    return snapshot;
  }

  Result<void> Reload() {
    std::lock_guard lock(session_mutex);
    return ReloadLocked();
  }

  // Reloads unless the installed snapshot's load started at or after `t`.
  // Checked under session_mutex, after any reload in flight has installed.
  Result<void> ReloadIfLoadedBefore(std::chrono::steady_clock::time_point t) {
    std::lock_guard lock(session_mutex);
    if (std::shared_ptr<const Snapshot> current = Current();
        current != nullptr && current->load_started >= t) {
      return {};
    }
    return ReloadLocked();
  }

  // Caller holds session_mutex.
  Result<void> ReloadLocked() {
    auto loaded = std::make_shared<Snapshot>();
    {
      loaded->load_started = std::chrono::steady_clock::now();
      internal::PgOutcome out = session.Exec(
          "SELECT id, name, key_hash, credit_limit_nano_usd, spent_nano_usd,"
          " revoked_at IS NOT NULL FROM api_keys",
          {}, /*idempotent=*/true);
      if (!out.ok()) {
        session.DropIfBad();
        return out.ToError("loading API keys");
      }
      const PGresult* r = out.result.get();
      int rows = PQntuples(r);
      loaded->records.reserve(rows);
      loaded->by_hash.reserve(rows);
      loaded->by_id.reserve(rows);
      for (int row = 0; row < rows; ++row) {
        KeyRecord record;
        record.id = internal::PgInt64(r, row, 0);
        record.name = internal::PgText(r, row, 1);
        if (auto limit = internal::PgOptInt64(r, row, 3)) record.credit_limit = Money{*limit};
        record.spent = Money{internal::PgInt64(r, row, 4)};
        record.revoked = internal::PgBool(r, row, 5);
        loaded->Add(std::move(record), std::string(internal::PgText(r, row, 2)));
      }
    }
    Install(std::move(loaded));
    return {};
  }

  void Install(std::shared_ptr<const Snapshot> loaded) {
    std::lock_guard lock(state_mutex);
    snapshot = std::move(loaded);
    refreshes.fetch_add(1, std::memory_order_relaxed);
  }

  void Run() {
    std::unique_lock lock(stop_mutex);
    while (!stop_requested) {
      if (stop_cv.wait_for(lock, refresh_interval, [&] { return stop_requested; })) break;
      lock.unlock();
      Result<void> result = Reload();
      if (!result) {
        refresh_failures.fetch_add(1, std::memory_order_relaxed);
        if (!failing) {
          internal::Log(LogLevel::kError,
                        "key cache refresh failed, serving the last loaded keys until the "
                        "database is back: " + result.error().message);
          failing = true;
        }
      } else if (failing) {
        internal::Log(LogLevel::kInfo, "key cache refresh recovered");
        failing = false;
      }
      lock.lock();
    }
  }

};

KeyCache::KeyCache(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

KeyCache::~KeyCache() { Stop(); }

Result<std::unique_ptr<KeyCache>> KeyCache::Start(const std::string& database_url,
                                                  int refresh_interval_ms) {
  if (refresh_interval_ms < 1) {
    return InvalidArgument("key cache refresh interval must be >= 1 ms", "refresh_interval_ms");
  }
  auto impl = std::make_unique<Impl>(database_url, refresh_interval_ms);
  {
    std::lock_guard lock(impl->session_mutex);
    if (auto ok = impl->session.Ensure(); !ok) return ok.error();
  }
  if (auto ok = impl->Reload(); !ok) return ok.error();
  Impl* raw = impl.get();
  impl->thread = std::thread([raw] { raw->Run(); });
  return std::unique_ptr<KeyCache>(new KeyCache(std::move(impl)));
}

std::optional<KeyRecord> KeyCache::Lookup(std::string_view plaintext_key) const {
  std::string hash = HashApiKey(plaintext_key);
  std::shared_ptr<const Snapshot> snap = impl_->Current();
  auto it = snap->by_hash.find(hash);
  if (it == snap->by_hash.end()) return std::nullopt;
  return snap->records[it->second];
}

std::optional<KeyRecord> KeyCache::FindById(int64_t id) const {
  std::shared_ptr<const Snapshot> snap = impl_->Current();
  auto it = snap->by_id.find(id);
  if (it == snap->by_id.end()) return std::nullopt;
  return snap->records[it->second];
}

Result<void> KeyCache::RefreshNow() { return impl_->Reload(); }

Result<void> KeyCache::RefreshIfLoadedBefore(std::chrono::steady_clock::time_point t) {
  return impl_->ReloadIfLoadedBefore(t);
}

void KeyCache::Stop() {
  {
    std::lock_guard lock(impl_->stop_mutex);
    impl_->stop_requested = true;
  }
  impl_->stop_cv.notify_all();
  // Two threads may call Stop at once; only one may join.
  std::lock_guard join_lock(impl_->join_mutex);
  if (impl_->thread.joinable()) impl_->thread.join();
}

size_t KeyCache::size() const { return impl_->Current()->records.size(); }
int64_t KeyCache::refreshes() const { return impl_->refreshes.load(std::memory_order_relaxed); }
int64_t KeyCache::refresh_failures() const {
  return impl_->refresh_failures.load(std::memory_order_relaxed);
}

}  // namespace tollgate::billing
