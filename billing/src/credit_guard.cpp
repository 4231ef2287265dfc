#include "tollgate/billing/credit_guard.hpp"

#include "credit_pots.hpp"
#include "log_internal.hpp"
#include "pg.hpp"

#include <algorithm>
#include <cassert>
#include <condition_variable>
#include <deque>
#include <map>
#include <mutex>
#include <set>
#include <thread>
#include <utility>

namespace tollgate::billing {
namespace {

using Steady = std::chrono::steady_clock;
using internal::PgOutcome;
using internal::PgParam;
using internal::PotSpec;

const std::string kGrantSql =
    "SELECT granted, lease_amount, lost, room, capacity "
    "FROM tollgate_lease_grant($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11::bigint[])";
const std::string kReturnSql =
    "SELECT tollgate_lease_return($1, $2::text[], $3::bigint[], $4::bigint[], $5::bigint[])";
const std::string kRenewSql =
    "SELECT scope, owner_id, period_us, amount, lost FROM tollgate_lease_renew($1, $2)";
const std::string kDropEarlierBootsSql = "SELECT tollgate_lease_drop_earlier_boots($1)";
const std::string kSchemaCheckSql =
    "SELECT count(*) FROM pg_proc WHERE proname IN "
    "('tollgate_lease_grant', 'tollgate_lease_return', 'tollgate_lease_renew', "
    "'tollgate_lease_drop_earlier_boots', 'tollgate_replica_lock_key', 'tollgate_replica_lock_held')";
constexpr int kLeaseFunctions = 6;
// The replica lock (005_leases.sql tollgate_replica_lock_key): a session-level
// advisory lock, held on a connection of its own for the guard's lifetime.
const std::string kTryLockSql = "SELECT pg_try_advisory_lock(tollgate_replica_lock_key($1))";
// The server notices a lock holder whose host died (no FIN) after about 25 s
// instead of the OS default (hours), and releases its lock then. Ignored on
// Unix-domain sockets, where a dead client is noticed at once.
const std::string kLockSessionSql =
    "SET tcp_keepalives_idle = 10; SET tcp_keepalives_interval = 5; SET tcp_keepalives_count = 3";
// While the lock cannot be taken, try again this often.
constexpr std::chrono::seconds kLockRetry{1};
constexpr std::chrono::milliseconds kStartLockPoll{100};

const std::string kLockedOutMessage =
    "credit check unavailable: another running gateway uses this gateway's replica id (a copied usage.spool_dir?); "
    "each gateway process needs its own spool directory";

// The part of a replica id before its last ':' (the whole id without one), as
// tollgate_replica_lock_key and tollgate_lease_drop_earlier_boots read it.
std::string StableId(const std::string& replica) {
  const size_t colon = replica.rfind(':');
  return colon == std::string::npos ? replica : replica.substr(0, colon);
}

enum class LockState {
  kHeld,
  kHeldByOther,  // another session holds it: another process with this stable id
  kUnknown,      // could not ask (the database is unreachable), or stopped
};

int64_t PeriodMicros(std::chrono::system_clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::microseconds>(t.time_since_epoch()).count();
}

std::optional<PotScope> ParseScope(std::string_view name) {
  if (name == "key") return PotScope::kKey;
  if (name == "credits") return PotScope::kCredits;
  if (name == "budget") return PotScope::kBudget;
  return std::nullopt;
}

// A PostgreSQL array literal of plain tokens (scope names, integers: nothing
// that needs quoting).
template <class T, class F>
std::string ArrayLiteral(const std::vector<T>& items, F text) {
  std::string out = "{";
  for (size_t i = 0; i < items.size(); ++i) {
    if (i > 0) out += ',';
    out += text(items[i]);
  }
  return out + "}";
}

AdmitResult Unavailable(std::string message) {
  AdmitResult r;
  r.outcome = AdmitOutcome::kUnavailable;
  r.message = std::move(message);
  return r;
}

struct PotMeta {
  PotSpec spec;                       // from the latest admission
  Steady::time_point valid_until{};   // admitting from free is allowed before this
  Steady::time_point last_used{};     // last admission attempt
  // Exhausted (a grant gave less than asked: the room could not cover the
  // waiting calls): until then, calls that need more than the local free
  // amount plus refused_room are refused without a query.
  Steady::time_point refused_until{};
  // What the database could still lease this replica after that grant (room
  // not granted, plus what this replica returned right after it).
  int64_t refused_room = 0;
  int waiting = 0;                    // queued calls that need this pot
  bool capacity_known = false;
  std::optional<int64_t> capacity;    // at the last grant; nullopt = unlimited
  int64_t spent_since = 0;            // charged by this replica since that grant
  bool return_requested = false;      // Invalidate*
};

struct Waiter {
  std::vector<PotSpec> specs;
  std::vector<PotRef> refs;
  int64_t worst = 0;
  std::function<void(AdmitResult)> done;
};

using Answer = std::pair<std::function<void(AdmitResult)>, AdmitResult>;

}  // namespace

std::string_view PotScopeName(PotScope scope) {
  switch (scope) {
    case PotScope::kKey: return "key";
    case PotScope::kCredits: return "credits";
    case PotScope::kBudget: return "budget";
  }
  return "credits";
}

Error AdmitError(const AdmitResult& result) {
  if (result.outcome == AdmitOutcome::kRefused) {
    return Error{ErrorCode::kPaymentRequired, result.message, {}, "insufficient_credits", {}, {}};
  }
  return Error{ErrorCode::kUnavailable, result.message.empty() ? "credit check unavailable" : result.message, {},
               "credit_unavailable", "1", {}};
}

struct CreditGuard::Impl {
  Impl(std::string database_url, std::string replica_id, CreditGuardOptions options)
      : url(std::move(database_url)),
        replica(std::move(replica_id)),
        stable_id(StableId(replica)),
        opt(options),
        db(url) {}

  const std::string url;
  const std::string replica;
  const std::string stable_id;
  const CreditGuardOptions opt;
  internal::PgSession db;  // the background thread's; Stop's after the join

  // The replica lock. lock_mu is taken before mu, never while holding it.
  std::mutex lock_mu;
  internal::PgConnPtr lock_conn;  // the session that holds (or tries to take) the lock
  bool lock_held = false;         // lock_conn holds it, as of the last check
  bool lock_lost = false;         // held once, lost since, not taken again yet
  bool lock_released = false;     // Stop closed lock_conn for good
  LockState last_lock = LockState::kHeld;
  Steady::time_point next_lock_try{};
  std::string lock_error;         // why the last try could not ask (kUnknown)

  mutable std::mutex mu;
  std::condition_variable cv;
  internal::PotBook book;
  std::map<PotRef, PotMeta> meta;
  std::deque<std::shared_ptr<Waiter>> waiters;
  bool stopping = false;
  bool invalidations = false;
  Steady::time_point db_down_until{};
  bool db_failing = false;
  // Another session holds the replica lock: every admission is answered 503
  // until it is taken back.
  bool locked_out = false;
  // The lock was taken again after it was lost: renew (which finds lease rows
  // deleted meanwhile) before the next grant.
  bool renew_due = false;
  CreditGuardCounters counters;

  std::mutex stop_mu;  // serialises Stop
  bool stopped = false;
  std::thread thread;

  // ---- under mu

  bool Valid(const PotRef& ref, Steady::time_point now) const {
    auto it = meta.find(ref);
    return it != meta.end() && it->second.valid_until > now;
  }
  int64_t Usable(const PotRef& ref, Steady::time_point now) const {
    if (!Valid(ref, now)) return 0;
    const internal::PotState* state = book.Find(ref);
    return state ? state->free : 0;
  }
  Steady::duration LeaseLife() const { return opt.lease_ttl - opt.expiry_margin; }

  AdmitResult Admitted(const std::vector<PotSpec>& specs, std::vector<PotRef> refs, int64_t worst) {
    AdmitResult r;
    r.outcome = AdmitOutcome::kAdmitted;
    r.ticket.pots = std::move(refs);
    r.ticket.worst_case = Money{worst};
    r.ticket.lease_holder = replica;
    for (const PotSpec& spec : specs) {
      const PotMeta& m = meta[spec.ref];
      std::optional<int64_t> estimate;
      if (m.capacity_known && m.capacity) estimate = *m.capacity - m.spent_since;
      if (internal::SoftLimitReached(spec, estimate)) {
        r.soft_limit_pot = spec.ref.scope;
        break;
      }
    }
    return r;
  }

  AdmitResult Refused(const PotSpec& spec, int64_t worst, int64_t available) {
    AdmitResult r;
    r.outcome = AdmitOutcome::kRefused;
    r.refused_pot = spec.ref.scope;
    r.needed = Money{worst};
    r.available = Money{std::max<int64_t>(available, 0)};
    r.message = internal::RefusalMessage(spec, worst, available);
    return r;
  }

  // A call of `worst` that `ref` cannot cover, known without a query: the pot
  // was found exhausted less than refusal_backoff ago, and the call needs
  // more than the local free amount plus what the database had left then.
  bool KnownRefusal(const PotRef& ref, int64_t worst, Steady::time_point now) {
    const int64_t usable = Usable(ref, now);
    const PotMeta& m = meta[ref];
    return usable < worst && m.refused_until > now && worst > usable + m.refused_room;
  }
  // A refusal decided without a query: the first pot that lacks and is a
  // KnownRefusal (or, with `exhausted`, was found exhausted in this very
  // round).
  std::optional<AdmitResult> RefuseExhausted(const std::vector<PotSpec>& specs, int64_t worst,
                                             Steady::time_point now, const std::set<PotRef>* exhausted = nullptr) {
    for (const PotSpec& spec : specs) {
      const int64_t usable = Usable(spec.ref, now);
      if (usable >= worst) continue;
      const bool exhausted_now = exhausted != nullptr && exhausted->count(spec.ref) > 0;
      if (exhausted_now || KnownRefusal(spec.ref, worst, now)) {
        return Refused(spec, worst, usable + meta[spec.ref].refused_room);
      }
    }
    return std::nullopt;
  }
  bool Doomed(const Waiter& w, Steady::time_point now) {
    return std::any_of(w.refs.begin(), w.refs.end(), [&](const PotRef& ref) { return KnownRefusal(ref, w.worst, now); });
  }

  void NoteDbError(const Error& error, Steady::time_point now) {
    ++counters.db_errors;
    db_down_until = now + opt.refusal_backoff;
    if (!db_failing) {
      db_failing = true;
      internal::Log(LogLevel::kWarning,
                    "credit guard: " + error.message +
                        "; calls that need more credit lease are answered 503 until the database is back");
    }
  }
  void NoteDbOk() {
    if (db_failing) {
      db_failing = false;
      internal::Log(LogLevel::kInfo, "credit guard: database reachable again");
    }
  }

  // ---- the replica lock (lock_mu held)

  // Whether lock_conn is still up, without a round trip: reads what the
  // server sent meanwhile (nothing, normally; a termination notice and the
  // end of the stream when its backend went away).
  bool LockConnAliveLocked() {
    PGconn* conn = lock_conn.get();
    if (conn == nullptr) return false;
    for (int i = 0; i < 2; ++i) {
      if (PQstatus(conn) != CONNECTION_OK || PQconsumeInput(conn) == 0) return false;
    }
    return PQstatus(conn) == CONNECTION_OK;
  }
  // (Re)connects lock_conn if needed and tries to take the lock once.
  // kUnknown sets lock_error (and *error, for Start).
  LockState TryLockLocked(Error* error = nullptr) {
    if (lock_conn == nullptr || PQstatus(lock_conn.get()) != CONNECTION_OK) {
      lock_conn.reset();
      auto conn = internal::PgConnect(url);
      if (!conn) {
        lock_error = conn.error().message;
        if (error != nullptr) *error = conn.error();
        return LockState::kUnknown;
      }
      lock_conn = std::move(*conn);
      internal::PgExec(lock_conn.get(), kLockSessionSql);  // best effort
    }
    PgOutcome out = internal::PgExec(lock_conn.get(), kTryLockSql, {replica});
    if (!out.ok() || PQntuples(out.result.get()) != 1) {
      Error e = out.ok() ? Error{ErrorCode::kInternal, "credit guard: taking the replica lock: no result row", {}, {}}
                         : out.ToError("taking the replica lock");
      lock_error = e.message;
      if (error != nullptr) *error = std::move(e);
      if (PQstatus(lock_conn.get()) != CONNECTION_OK) lock_conn.reset();
      return LockState::kUnknown;
    }
    if (internal::PgBool(out.result.get(), 0, 0)) {
      lock_held = true;
      return LockState::kHeld;
    }
    return LockState::kHeldByOther;
  }
  // The lock's connection broke (found by a check or a failed statement).
  void DropLockLocked() {
    lock_held = false;
    lock_lost = true;
    lock_conn.reset();
    next_lock_try = Steady::now();  // try to take it again at once
    internal::Log(LogLevel::kWarning, "credit guard: the connection holding the replica lock of \"" + stable_id +
                                          "\" was lost; taking the lock again");
  }

  // Whether this process holds the replica lock; takes it again when its
  // connection was lost (at once, then at most once per kLockRetry). On
  // losing it to another session: admissions answer 503 and the free lease
  // amounts are returned; on taking it back: renew before granting. Takes
  // lock_mu and mu. Background thread and DropEarlierBoots.
  // `why`: set to the reason when kUnknown.
  LockState CheckLock(std::string* why = nullptr);

  // ---- background thread

  void Run();
  // One round: grants for what the waiting calls lack, then answers. False
  // when it neither queried nor answered anything.
  bool ServeWaiters();
  // Answers every waiting call 503 (the replica lock is not held; `why`:
  // CheckLock's reason for kUnknown).
  void AnswerAllUnavailable(LockState state, const std::string& why);
  bool Renew();
  void Housekeep();
  // Returns `amounts` (pot, amount > 0) in one statement; on failure gives
  // them back to free. Takes mu itself. `probe`: first check with SELECT 1
  // that the connection is up (not needed right after a statement on it).
  bool Return(const std::vector<std::pair<PotRef, int64_t>>& amounts, bool probe_first = true);
};

LockState CreditGuard::Impl::CheckLock(std::string* why) {
  std::lock_guard lock_guard(lock_mu);
  if (lock_released) {
    if (why != nullptr) *why = "the credit guard stopped";
    return LockState::kUnknown;
  }
  if (lock_held && LockConnAliveLocked()) return LockState::kHeld;
  if (lock_held) DropLockLocked();
  const Steady::time_point now = Steady::now();
  LockState state = last_lock;
  bool regained = false;
  if (now >= next_lock_try) {
    next_lock_try = now + kLockRetry;
    state = TryLockLocked();
    if (state == LockState::kHeld && lock_lost) {
      lock_lost = false;
      regained = true;
    }
  }
  last_lock = state;
  if (state == LockState::kUnknown && why != nullptr) *why = lock_error;

  std::lock_guard lock(mu);
  if (state == LockState::kHeldByOther && !locked_out) {
    locked_out = true;
    // Its holder may delete this replica's leases (DropEarlierBoots): admit
    // nothing more under them, and give back what is free.
    for (auto& [ref, m] : meta) {
      m.valid_until = {};
      m.return_requested = true;
    }
    invalidations = true;
    cv.notify_all();
    internal::Log(LogLevel::kError,
                  "credit guard: another running gateway holds the replica lock of \"" + stable_id +
                      "\" (it uses the same replica id: a copied usage.spool_dir?), or the database has not yet "
                      "noticed this gateway's lost connection; every call that needs credit is answered 503 until "
                      "this gateway gets the lock back. Each gateway process needs its own spool directory.");
  } else if (state == LockState::kHeld && regained) {
    renew_due = true;
    if (locked_out) locked_out = false;
    internal::Log(LogLevel::kWarning, "credit guard: took the replica lock of \"" + stable_id + "\" again");
  }
  return state;
}

void CreditGuard::Impl::Run() {
  const Steady::duration house_tick =
      std::clamp<Steady::duration>(opt.idle_return_after / 2, std::chrono::milliseconds(10),
                                   std::chrono::milliseconds(250));
  Steady::time_point next_renew = Steady::now() + opt.renew_interval;
  Steady::time_point next_house = Steady::now() + house_tick;
  std::unique_lock lock(mu);
  while (!stopping) {
    if (!waiters.empty()) {
      lock.unlock();
      const bool progress = ServeWaiters();
      lock.lock();
      // Calls that wait for a pot another waiter blocks, with nothing to ask:
      // wait for a settlement or the next tick instead of spinning.
      if (!progress && !stopping) cv.wait_for(lock, std::chrono::milliseconds(5));
    }
    if (stopping) break;
    // renew_due: at once (but after a failure, at the retry time).
    if (Steady::now() >= next_renew || (renew_due && !db_failing)) {
      lock.unlock();
      const bool ok = Renew();
      lock.lock();
      // A failed renewal is retried sooner: the lease keeps shrinking toward
      // its expiry meanwhile.
      next_renew = Steady::now() + (ok ? opt.renew_interval
                                       : std::min<Steady::duration>(opt.renew_interval, std::chrono::seconds(1)));
    }
    if (stopping) break;
    if (Steady::now() >= next_house || invalidations) {
      invalidations = false;
      lock.unlock();
      CheckLock();
      Housekeep();
      lock.lock();
      next_house = Steady::now() + house_tick;
    }
    if (stopping) break;
    if (waiters.empty() && !invalidations && !(renew_due && !db_failing)) {
      cv.wait_until(lock, std::min(next_renew, next_house),
                    [&] { return stopping || !waiters.empty() || invalidations; });
    }
  }
}

void CreditGuard::Impl::AnswerAllUnavailable(LockState state, const std::string& why) {
  std::deque<std::shared_ptr<Waiter>> left;
  {
    std::lock_guard lock(mu);
    left.swap(waiters);
    for (const auto& w : left) {
      for (const PotRef& ref : w->refs) --meta[ref].waiting;
    }
    counters.unavailable += static_cast<int64_t>(left.size());
    if (state == LockState::kUnknown) {
      NoteDbError(Error{ErrorCode::kUnavailable, "taking the replica lock: " + why, {}, {}}, Steady::now());
    }
  }
  const std::string message = state == LockState::kHeldByOther
                                  ? kLockedOutMessage
                                  : "credit check unavailable: the billing database cannot be reached and this "
                                    "gateway holds too little credit lease for the call";
  for (auto& w : left) w->done(Unavailable(message));
}

bool CreditGuard::Impl::ServeWaiters() {
  // 0. Grants need the replica lock (and, after it was lost and taken again,
  // a renewal, which finds the leases deleted meanwhile).
  std::string why;
  if (const LockState state = CheckLock(&why); state != LockState::kHeld) {
    AnswerAllUnavailable(state, why);
    return true;
  }
  bool renew_first = false;
  {
    std::lock_guard lock(mu);
    renew_first = renew_due;
  }
  if (renew_first) Renew();  // on failure db_down_until is set: the calls that lack are answered 503 below

  // 1. One grant per pot, for what the waiting calls lack in it. Pots go in
  // one global order (PotRef: key, credits, budget), and a pot is asked only
  // for the calls that got past the pots before it in this round. Otherwise
  // two replicas with calls that need the same pots could each take all of a
  // different one (A the key limit, B the credits) and neither admit a call.
  std::vector<PotRef> order;
  {
    std::lock_guard lock(mu);
    std::set<PotRef> pots;
    for (const auto& w : waiters) pots.insert(w->refs.begin(), w->refs.end());
    order.assign(pots.begin(), pots.end());
  }
  std::set<PotRef> processed;
  std::set<PotRef> asked;      // granted this round
  std::set<PotRef> exhausted;  // of those, could not cover the calls asked for
  std::set<PotRef> errored;
  int64_t queries = 0;
  for (const PotRef& pot : order) {
    int64_t need = 0;
    int64_t usable = 0;
    std::vector<int64_t> calls;
    {
      std::lock_guard lock(mu);
      const Steady::time_point now = Steady::now();
      // Admit, on paper and in arrival order, against the pots already
      // processed; count the worst cases of those that pass and need `pot`.
      // Calls that a pot is known not to cover are refused below without a
      // query and ask for nothing.
      std::map<PotRef, int64_t> free_left;
      for (const PotRef& q : processed) free_left[q] = Usable(q, now);
      int64_t demand = 0;
      for (const auto& w : waiters) {
        if (Doomed(*w, now)) continue;
        bool passes = true;
        for (const PotRef& q : w->refs) {
          if (processed.count(q) > 0 && free_left[q] < w->worst) passes = false;
        }
        if (!passes) continue;
        for (const PotRef& q : w->refs) {
          if (processed.count(q) > 0) free_left[q] -= w->worst;
        }
        if (std::find(w->refs.begin(), w->refs.end(), pot) != w->refs.end()) {
          demand += w->worst;
          calls.push_back(w->worst);
        }
      }
      processed.insert(pot);
      usable = Usable(pot, now);
      if (db_down_until > now || demand <= usable) continue;
      need = demand - usable;
    }

    const Steady::time_point sent = Steady::now();
    PgOutcome out = db.Exec(
        kGrantSql,
        {replica, std::string(PotScopeName(pot.scope)), std::to_string(pot.owner_id),
         std::to_string(PeriodMicros(pot.period_start)), std::to_string(need),
         std::to_string(opt.chunk.room_divisor), std::to_string(opt.chunk.min_chunk.nano_usd),
         std::to_string(opt.chunk.max_chunk.nano_usd), std::to_string(opt.lease_ttl.count()),
         std::to_string(usable), ArrayLiteral(calls, [](int64_t c) { return std::to_string(c); })},
        /*idempotent=*/false);
    ++queries;

    std::lock_guard lock(mu);
    const Steady::time_point now = Steady::now();
    ++counters.db_round_trips;
    if (!out.ok() || PQntuples(out.result.get()) != 1) {
      // Unknown whether it was granted: if it was, the database holds more
      // than this replica uses until the lease expires, which can only hold
      // credit back.
      errored.insert(pot);
      NoteDbError(out.ok() ? Error{ErrorCode::kInternal, "leasing credit: no result row", {}, {}}
                           : out.ToError("leasing credit"),
                  now);
      break;  // the database is likely down for the other pots too
    }
    NoteDbOk();
    const PGresult* res = out.result.get();
    const int64_t granted = internal::PgInt64(res, 0, 0);
    const int64_t lost = internal::PgInt64(res, 0, 2);
    PotMeta& m = meta[pot];
    if (lost > 0) {
      book.Lose(pot, lost);
      counters.lost_nano_usd += lost;
      internal::Log(LogLevel::kWarning,
                    "credit guard: an expired " + std::string(PotScopeName(pot.scope)) + " lease of owner " +
                        std::to_string(pot.owner_id) + " was revived without " + std::to_string(lost) +
                        " nano-USD that other replicas had leased meanwhile");
    }
    book.Grant(pot, granted);
    if (granted > 0) {
      ++counters.lease_grants;
      counters.granted_nano_usd += granted;
    }
    m.valid_until = sent + LeaseLife();
    m.capacity_known = true;
    m.capacity = internal::PgOptInt64(res, 0, 4);
    m.spent_since = 0;
    asked.insert(pot);
    // granted < need only when the room could not cover every waiting call;
    // then only what the calls that fit lack was granted (tollgate_lease_grant).
    if (granted < need) {
      exhausted.insert(pot);
      m.refused_until = now + opt.refusal_backoff;
      m.refused_room = std::max<int64_t>(internal::PgInt64(res, 0, 3) - granted, 0);
    } else {
      m.refused_until = {};
      m.refused_room = 0;
    }
  }

  // 2. Answer the waiting calls in arrival order.
  std::vector<Answer> answers;
  std::vector<std::pair<PotRef, int64_t>> returns;
  {
    std::lock_guard lock(mu);
    std::set<PotRef> refused_pots;  // pots of the calls refused this round
    const Steady::time_point now = Steady::now();
    std::set<PotRef> blocked;  // pots with an earlier call still waiting: keep the order
    for (auto it = waiters.begin(); it != waiters.end();) {
      Waiter& w = **it;
      bool fits = true;
      for (const PotRef& ref : w.refs) {
        if (blocked.count(ref) > 0 || Usable(ref, now) < w.worst) fits = false;
      }
      std::optional<AdmitResult> answer;
      if (fits) {
        const bool reserved = book.Reserve(w.refs, w.worst);
        assert(reserved);
        (void)reserved;
        answer = Admitted(w.specs, w.refs, w.worst);
        ++counters.admitted_after_lease;
      } else {
        answer = RefuseExhausted(w.specs, w.worst, now, &exhausted);
        if (answer) {
          refused_pots.insert(w.refs.begin(), w.refs.end());
          ++counters.refused;
          if (std::none_of(w.refs.begin(), w.refs.end(), [&](const PotRef& r) { return exhausted.count(r) > 0; })) {
            ++counters.refused_without_query;
          }
        } else {
          for (const PotSpec& spec : w.specs) {
            if (Usable(spec.ref, now) < w.worst && (errored.count(spec.ref) > 0 || db_down_until > now)) {
              answer = Unavailable("credit check unavailable: the billing database cannot be reached and this "
                                   "gateway holds too little credit lease for the call");
              ++counters.unavailable;
              break;
            }
          }
        }
      }
      if (!answer) {  // lacks a pot that was not asked this round: next round
        for (const PotRef& ref : w.refs) blocked.insert(ref);
        ++it;
        continue;
      }
      for (const PotRef& ref : w.refs) --meta[ref].waiting;
      answers.emplace_back(std::move(w.done), std::move(*answer));
      it = waiters.erase(it);
    }
    // 3. A pot asked this round that could not cover a call (or whose call
    // another pot refused) gives its free amount back at once, less what the
    // calls still waiting for it need: held here, it would make other
    // replicas refuse calls it could cover until this one's idle return.
    for (const PotRef& pot : asked) {
      if (exhausted.count(pot) == 0 && refused_pots.count(pot) == 0) continue;
      int64_t keep = 0;
      for (const auto& w : waiters) {
        if (std::find(w->refs.begin(), w->refs.end(), pot) != w->refs.end()) keep += w->worst;
      }
      const int64_t x = book.TakeFree(pot, keep);
      if (x <= 0) continue;
      returns.emplace_back(pot, x);
      PotMeta& m = meta[pot];
      if (m.refused_until > now) m.refused_room += x;  // the database can lease it again
    }
  }
  // Before answering: a refused caller that retries at once, here or on
  // another replica, finds the room in the database.
  Return(returns, /*probe=*/!errored.empty());
  const bool progress = queries > 0 || !answers.empty();
  for (auto& [done, result] : answers) done(std::move(result));
  return progress;
}

bool CreditGuard::Impl::Renew() {
  const Steady::time_point sent = Steady::now();
  PgOutcome out = db.Exec(kRenewSql, {replica, std::to_string(opt.lease_ttl.count())}, /*idempotent=*/true);
  std::lock_guard lock(mu);
  ++counters.db_round_trips;
  if (!out.ok()) {
    NoteDbError(out.ToError("renewing credit leases"), Steady::now());
    return false;
  }
  NoteDbOk();
  ++counters.renewals;
  renew_due = false;
  std::map<PotRef, int64_t> lost_by_pot;
  const PGresult* res = out.result.get();
  for (int row = 0; row < PQntuples(res); ++row) {
    std::optional<PotScope> scope = ParseScope(internal::PgText(res, row, 0));
    if (!scope) continue;
    PotRef ref{*scope, internal::PgInt64(res, row, 1),
               std::chrono::system_clock::time_point(std::chrono::duration_cast<std::chrono::system_clock::duration>(
                   std::chrono::microseconds(internal::PgInt64(res, row, 2))))};
    lost_by_pot[ref] = internal::PgInt64(res, row, 4);
  }
  std::vector<PotRef> held;
  for (const auto& [ref, state] : book.pots()) held.push_back(ref);
  for (const PotRef& ref : held) {
    PotMeta& m = meta[ref];
    m.valid_until = sent + LeaseLife();
    auto found = lost_by_pot.find(ref);
    if (found != lost_by_pot.end()) {
      if (found->second > 0) {
        book.Lose(ref, found->second);
        counters.lost_nano_usd += found->second;
        internal::Log(LogLevel::kWarning, "credit guard: an expired " + std::string(PotScopeName(ref.scope)) +
                                              " lease of owner " + std::to_string(ref.owner_id) +
                                              " was renewed without " + std::to_string(found->second) +
                                              " nano-USD that other replicas had leased meanwhile");
      }
      continue;
    }
    const internal::PotState* state = book.Find(ref);
    if (state != nullptr && state->free + state->reserved > 0) {
      counters.lost_nano_usd += state->free + state->reserved;
      internal::Log(LogLevel::kWarning, "credit guard: the " + std::string(PotScopeName(ref.scope)) +
                                            " lease of owner " + std::to_string(ref.owner_id) +
                                            " is gone from the database; leasing anew");
      book.LoseAll(ref);
    }
  }
  return true;
}

bool CreditGuard::Impl::Return(const std::vector<std::pair<PotRef, int64_t>>& amounts, bool probe_first) {
  if (amounts.empty()) return true;
  auto scope = [](const std::pair<PotRef, int64_t>& a) { return std::string(PotScopeName(a.first.scope)); };
  auto owner = [](const std::pair<PotRef, int64_t>& a) { return std::to_string(a.first.owner_id); };
  auto period = [](const std::pair<PotRef, int64_t>& a) { return std::to_string(PeriodMicros(a.first.period_start)); };
  auto amount = [](const std::pair<PotRef, int64_t>& a) { return std::to_string(a.second); };
  // A return whose outcome is unknown must count as done (see below); a
  // connection that died while idle (a database restart) would make the
  // first statement on it such a case, so probe it first.
  PgOutcome probe;
  if (probe_first) {
    probe = db.Exec("SELECT 1", {}, /*idempotent=*/true);
  } else {
    probe.success = true;
  }
  PgOutcome out;
  if (probe.ok()) {
    out = db.Exec(kReturnSql,
                  {replica, ArrayLiteral(amounts, scope), ArrayLiteral(amounts, owner),
                   ArrayLiteral(amounts, period), ArrayLiteral(amounts, amount)},
                  /*idempotent=*/false);
  }
  std::lock_guard lock(mu);
  counters.db_round_trips += (probe_first ? 1 : 0) + (probe.ok() ? 1 : 0);
  if (!probe.ok() || !out.ok()) {
    const PgOutcome& failed = probe.ok() ? out : probe;
    NoteDbError(failed.ToError("returning credit leases"), Steady::now());
    // Not applied for sure (never sent, or the server refused it and rolled
    // back): free again here. Unknown (the connection broke mid-statement):
    // the database may have taken it off, so it stays returned; if it did
    // not, the database holds more than this replica uses until the lease
    // expires after Stop, which can only hold credit back, never overspend.
    if (!probe.ok() || !out.sqlstate.empty()) {
      for (const auto& [ref, x] : amounts) book.Restore(ref, x);
    } else {
      internal::Log(LogLevel::kWarning,
                    "credit guard: the connection broke while returning credit leases; treating them as returned");
    }
    return false;
  }
  NoteDbOk();
  for (const auto& [ref, x] : amounts) {
    ++counters.lease_returns;
    counters.returned_nano_usd += x;
  }
  return true;
}

void CreditGuard::Impl::Housekeep() {
  std::vector<std::pair<PotRef, int64_t>> returns;
  {
    std::lock_guard lock(mu);
    const Steady::time_point now = Steady::now();
    const auto wall = std::chrono::system_clock::now();
    for (auto& [ref, m] : meta) {
      if (m.waiting > 0) continue;
      const bool past = m.spec.reset != LimitReset::kNone && PeriodStart(m.spec.reset, wall) > ref.period_start;
      const bool idle = m.last_used + opt.idle_return_after <= now;
      if (past || idle || m.return_requested) {
        m.return_requested = false;
        const int64_t x = book.TakeFree(ref);
        if (x > 0) returns.emplace_back(ref, x);
      }
    }
  }
  Return(returns);
  std::lock_guard lock(mu);
  const Steady::time_point now = Steady::now();
  const auto wall = std::chrono::system_clock::now();
  // Forget pots that hold nothing and are idle or past, so the maps stay the
  // size of the working set.
  for (auto it = meta.begin(); it != meta.end();) {
    const PotMeta& m = it->second;
    const internal::PotState* state = book.Find(it->first);
    const bool empty = state == nullptr || (state->free == 0 && state->reserved == 0 && state->deficit == 0);
    const bool past = m.spec.reset != LimitReset::kNone && PeriodStart(m.spec.reset, wall) > it->first.period_start;
    const bool idle = m.last_used + opt.idle_return_after <= now;
    if (empty && m.waiting == 0 && (idle || past)) {
      book.Erase(it->first);
      it = meta.erase(it);
    } else {
      ++it;
    }
  }
}

// ---------------------------------------------------------------- public

CreditGuard::CreditGuard(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

CreditGuard::~CreditGuard() { Stop(); }

Result<std::unique_ptr<CreditGuard>> CreditGuard::Start(const std::string& database_url, std::string replica_id,
                                                        CreditGuardOptions options) {
  auto invalid = [](std::string message) {
    return Error{ErrorCode::kInvalidArgument, "credit guard: " + std::move(message), {}, {}};
  };
  if (replica_id.empty() || replica_id.size() > 200) return invalid("replica id must have 1 to 200 bytes");
  using std::chrono::milliseconds;
  if (options.lease_ttl < milliseconds(1)) return invalid("lease_ttl must be at least 1 ms");
  if (options.renew_interval <= milliseconds(0) || options.renew_interval >= options.lease_ttl) {
    return invalid("renew_interval must be above 0 and below lease_ttl");
  }
  if (options.expiry_margin < milliseconds(0) || options.expiry_margin >= options.lease_ttl) {
    return invalid("expiry_margin must be at least 0 and below lease_ttl");
  }
  if (options.idle_return_after < milliseconds(0)) return invalid("idle_return_after must be at least 0");
  if (options.refusal_backoff < milliseconds(0)) return invalid("refusal_backoff must be at least 0");
  if (options.replica_lock_wait < milliseconds(0)) return invalid("replica_lock_wait must be at least 0");
  if (options.chunk.room_divisor < 1) return invalid("chunk room_divisor must be at least 1");
  if (options.chunk.min_chunk.nano_usd < 0 || options.chunk.max_chunk < options.chunk.min_chunk) {
    return invalid("chunk sizes must satisfy 0 <= min_chunk <= max_chunk");
  }

  auto impl = std::make_unique<Impl>(database_url, std::move(replica_id), options);
  if (auto ensured = impl->db.Ensure(); !ensured) return ensured.error();
  PgOutcome check = impl->db.Exec(kSchemaCheckSql, {}, /*idempotent=*/true);
  if (!check.ok()) return check.ToError("checking the credit lease functions");
  if (internal::PgInt64(check.result.get(), 0, 0) < kLeaseFunctions) {
    return Error{ErrorCode::kInternal,
                 "credit guard: the lease functions of migration 005 are missing; " +
                     std::string(internal::kSchemaMissingHint),
                 {}, {}};
  }
  // The replica lock: no other live process may use this stable id. A
  // killed predecessor's session may take a moment to end: wait for it.
  {
    Impl& s = *impl;
    std::lock_guard lock_guard(s.lock_mu);
    const Steady::time_point deadline = Steady::now() + s.opt.replica_lock_wait;
    while (true) {
      Error error;
      const LockState state = s.TryLockLocked(&error);
      if (state == LockState::kHeld) break;
      if (state == LockState::kUnknown) return error;
      if (Steady::now() >= deadline) {
        return Error{ErrorCode::kConflict,
                     "credit guard: another running gateway uses the same replica id \"" + s.stable_id +
                         "\" (a copied usage.spool_dir?): each gateway process needs its own spool directory",
                     {}, {}};
      }
      std::this_thread::sleep_for(std::min<Steady::duration>(kStartLockPoll, deadline - Steady::now()));
    }
  }
  std::unique_ptr<CreditGuard> guard(new CreditGuard(std::move(impl)));
  Impl* raw = guard->impl_.get();
  raw->thread = std::thread([raw] { raw->Run(); });
  return guard;
}

void CreditGuard::Admit(const KeyRecord& key, Money worst_case, std::chrono::system_clock::time_point call_time,
                        std::function<void(AdmitResult)> done) {
  Impl& s = *impl_;
  std::vector<PotSpec> specs = internal::PotsFor(key, call_time);
  const int64_t worst = std::max<int64_t>(worst_case.nano_usd, 0);
  if (specs.empty()) {
    {
      std::lock_guard lock(s.mu);
      ++s.counters.admitted_without_pots;
    }
    AdmitResult r;
    r.outcome = AdmitOutcome::kAdmitted;
    r.ticket.worst_case = Money{worst};
    done(std::move(r));
    return;
  }
  std::vector<PotRef> refs;
  refs.reserve(specs.size());
  for (const PotSpec& spec : specs) refs.push_back(spec.ref);

  AdmitResult result;
  {
    std::lock_guard lock(s.mu);
    const Steady::time_point now = Steady::now();
    if (s.stopping) {
      ++s.counters.unavailable;
      result = Unavailable("credit check unavailable: the gateway is shutting down");
    } else if (s.locked_out) {
      ++s.counters.unavailable;
      result = Unavailable(kLockedOutMessage);
    } else {
      bool fits = true;
      for (const PotSpec& spec : specs) {
        PotMeta& m = s.meta[spec.ref];
        m.spec = spec;
        m.last_used = now;
        if (m.waiting > 0 || s.Usable(spec.ref, now) < worst) fits = false;
      }
      if (fits) {
        s.book.Reserve(refs, worst);
        ++s.counters.admitted_inline;
        result = s.Admitted(specs, std::move(refs), worst);
      } else if (std::optional<AdmitResult> refused = s.RefuseExhausted(specs, worst, now)) {
        ++s.counters.refused;
        ++s.counters.refused_without_query;
        result = std::move(*refused);
      } else if (s.db_down_until > now) {
        ++s.counters.unavailable;
        result = Unavailable("credit check unavailable: the billing database cannot be reached and this "
                             "gateway holds too little credit lease for the call");
      } else {
        auto w = std::make_shared<Waiter>();
        w->specs = std::move(specs);
        w->refs = std::move(refs);
        w->worst = worst;
        w->done = std::move(done);
        for (const PotRef& ref : w->refs) ++s.meta[ref].waiting;
        s.waiters.push_back(std::move(w));
        s.cv.notify_all();
        return;
      }
    }
  }
  done(std::move(result));
}

Money CreditGuard::Settle(const AdmitTicket& ticket, Money cost) {
  if (ticket.pots.empty()) return Money{std::max<int64_t>(cost.nano_usd, 0)};
  Impl& s = *impl_;
  std::lock_guard lock(s.mu);
  const int64_t charged = s.book.Settle(ticket.pots, ticket.worst_case.nano_usd, cost.nano_usd);
  for (const PotRef& ref : ticket.pots) {
    auto it = s.meta.find(ref);
    if (it != s.meta.end()) it->second.spent_since += charged;
  }
  return Money{charged};
}

void CreditGuard::InvalidateKey(int64_t key_id) {
  Impl& s = *impl_;
  std::lock_guard lock(s.mu);
  for (auto& [ref, m] : s.meta) {
    if (ref.scope != PotScope::kKey || ref.owner_id != key_id) continue;
    m.return_requested = true;
    m.refused_until = {};
    m.capacity_known = false;
  }
  s.invalidations = true;
  s.cv.notify_all();
}

void CreditGuard::InvalidateAccount(int64_t account_id) {
  Impl& s = *impl_;
  std::lock_guard lock(s.mu);
  for (auto& [ref, m] : s.meta) {
    if (ref.scope == PotScope::kKey || ref.owner_id != account_id) continue;
    m.return_requested = true;
    m.refused_until = {};
    m.capacity_known = false;
  }
  s.invalidations = true;
  s.cv.notify_all();
}

Result<int64_t> CreditGuard::DropEarlierBoots() {
  Impl& s = *impl_;
  if (s.replica.find(':') == std::string::npos) {
    return Error{ErrorCode::kInvalidArgument,
                 "credit guard: the replica id has no ':' separating its stable id from its boot nonce", {}, {}};
  }
  // Only while this process holds the replica lock, on the lock's own
  // session (tollgate_lease_drop_earlier_boots checks that too): otherwise
  // the earlier boot may be another live process with this stable id.
  std::string why;
  LockState state = s.CheckLock(&why);
  if (state != LockState::kHeld) {
    {
      std::lock_guard lock_guard(s.lock_mu);
      if (s.lock_released) return Error{ErrorCode::kUnavailable, "credit guard: stopped", {}, {}};
    }
    // Paces a caller that retries: at most one try per kLockRetry.
    Steady::time_point next;
    {
      std::lock_guard lock_guard(s.lock_mu);
      next = s.next_lock_try;
    }
    std::this_thread::sleep_until(std::min(next, Steady::now() + kLockRetry));
    state = s.CheckLock(&why);
  }
  std::lock_guard lock_guard(s.lock_mu);
  if (s.lock_released) return Error{ErrorCode::kUnavailable, "credit guard: stopped", {}, {}};
  if (state == LockState::kHeldByOther) {
    return Error{ErrorCode::kConflict,
                 "credit guard: not dropping the leases of earlier boots: another running gateway holds the replica "
                 "lock of \"" + s.stable_id + "\" (a copied usage.spool_dir?)",
                 {}, {}};
  }
  if (state != LockState::kHeld || !s.lock_held) {
    return Error{ErrorCode::kUnavailable,
                 "credit guard: not dropping the leases of earlier boots without the replica lock: " +
                     (why.empty() ? std::string("it was lost") : why),
                 {}, {}};
  }
  PgOutcome out = internal::PgExec(s.lock_conn.get(), kDropEarlierBootsSql, {s.replica});
  if (!out.ok()) {
    if (PQstatus(s.lock_conn.get()) != CONNECTION_OK) s.DropLockLocked();
    return out.ToError("dropping the leases of earlier boots");
  }
  const int64_t dropped = internal::PgInt64(out.result.get(), 0, 0);
  if (dropped > 0) {
    internal::Log(LogLevel::kInfo,
                  "credit guard: dropped " + std::to_string(dropped) + " credit leases of earlier boots");
  }
  return dropped;
}

void CreditGuard::Stop() {
  Impl& s = *impl_;
  std::lock_guard stop_lock(s.stop_mu);
  if (s.stopped) return;
  assert(std::this_thread::get_id() != s.thread.get_id() && "Stop from a done callback");
  {
    std::lock_guard lock(s.mu);
    s.stopping = true;
  }
  s.cv.notify_all();
  if (s.thread.joinable()) s.thread.join();

  std::deque<std::shared_ptr<Waiter>> left;
  std::vector<std::pair<PotRef, int64_t>> returns;
  {
    std::lock_guard lock(s.mu);
    left.swap(s.waiters);
    for (auto& [ref, m] : s.meta) m.waiting = 0;
    s.counters.unavailable += static_cast<int64_t>(left.size());
    std::vector<PotRef> held;
    for (const auto& [ref, state] : s.book.pots()) held.push_back(ref);
    for (const PotRef& ref : held) {
      const int64_t x = s.book.TakeFree(ref);
      if (x > 0) returns.emplace_back(ref, x);
    }
  }
  for (auto& w : left) w->done(Unavailable("credit check unavailable: the gateway is shutting down"));
  s.Return(returns);
  {
    // Ends the lock's session: a successor on this spool may start now.
    std::lock_guard lock_guard(s.lock_mu);
    s.lock_released = true;
    s.lock_held = false;
    s.lock_conn.reset();
  }
  s.stopped = true;
}

const std::string& CreditGuard::replica_id() const { return impl_->replica; }

CreditGuardCounters CreditGuard::counters() const {
  std::lock_guard lock(impl_->mu);
  return impl_->counters;
}

std::optional<PotView> CreditGuard::Pot(const PotRef& pot) const {
  const Impl& s = *impl_;
  std::lock_guard lock(s.mu);
  const internal::PotState* state = s.book.Find(pot);
  if (state == nullptr) return std::nullopt;
  return PotView{Money{state->free}, Money{state->reserved}, Money{state->deficit}, s.Valid(pot, Steady::now())};
}

}  // namespace tollgate::billing
