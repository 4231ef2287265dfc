// Admission of calls against credits, key limits and account budgets, exact
// across gateway replicas, without a database round trip per call: each
// replica leases spendable amounts of every "pot" it needs in chunks and
// admits calls against its local lease.
//
// Pots (migrations/004_ledger.sql credit_leases, 005_leases.sql):
//   credits  owner = account id, period = the epoch; capacity = the balance
//            (only for prepaid accounts);
//   key      owner = key id, period = PeriodStart(limit_reset, call time);
//            capacity = credit_limit - period_usage of that period;
//   budget   owner = account id, period = PeriodStart(budget_reset, call time);
//            capacity = budget - period_usage of that period.
// A call needs every pot its key record implies (credits if account.prepaid,
// key if credit_limit, budget if account.budget); a postpaid account's key
// with neither limit nor budget needs none and is admitted at once.
//
// The protocol (all amounts nano-USD):
//   grant   tollgate_lease_grant locks the pot's owner row and leases
//           min(want, capacity - sum of the pot's unexpired leases) to this
//           replica, so the sum of a pot's unexpired leases never exceeds its
//           capacity when granted. want = max(need, chunk), chunk =
//           clamp(room / room_divisor, min_chunk, max_chunk) (LeaseChunkPolicy);
//           but when the room cannot cover every waiting call, want = what
//           the calls that fit (in arrival order) lack, so a refused call
//           leases nothing.
//   admit   locally, iff worst_case <= free in EVERY pot (all-or-nothing);
//           then free -= worst_case, reserved += worst_case in each.
//   settle  charged = min(cost, worst_case); reserved -= worst_case,
//           free += worst_case - charged. The charged cost stays part of the
//           database lease until the usage writer writes the call: in one
//           transaction it takes it off the balance (ledger row 'usage'), adds
//           it to period_usage and takes it off this replica's lease rows
//           (usage_events.lease_holder = replica_id()). So for every pot, at
//           every commit: lease amount in the database = local free +
//           reserved + settled-not-yet-written.
//   return  lease amount -= x, x <= local free (idle pots after
//           idle_return_after, invalidated owners, past periods, Stop).
//   renew   all of this replica's unexpired leases get expires_at = now() +
//           lease_ttl, one statement every renew_interval.
//   lock    the replica lock: a PostgreSQL session-level advisory lock on the
//           replica id's stable id (tollgate_replica_lock_key in
//           005_leases.sql), taken by Start and held on a connection of the
//           guard's own until Stop. A second live process with the same
//           stable id (a gateway started on a copy of a running gateway's
//           usage spool directory: a restored snapshot, a cloned VM) cannot
//           start (kConflict), so DropEarlierBoots, which only runs under the
//           lock, never deletes a live process's leases. The database URL must
//           reach PostgreSQL directly or through a session-pooling proxy (a
//           transaction pooler cannot hold session locks). If the lock's
//           connection is lost (a database restart), the guard takes the lock
//           again before its next grant (and renews first, to find leases
//           deleted meanwhile); if another session holds it by then, the guard
//           logs an error, returns its free lease amounts and answers every
//           admission kUnavailable (and DropEarlierBoots fails) until it gets
//           the lock back. A loss is noticed within a housekeeping tick (at
//           most 250 ms) without a query; while the database cannot be
//           reached the guard keeps admitting from unexpired leases as
//           before. The database ends the session of a holder whose host
//           died after about 25 s of TCP keepalive.
//
// Largest possible overspend. For prepaid credits it is ZERO, provided
//   (a) every call is admitted here and settled with Settle, whose charge is
//       clamped to the reservation (the operator absorbs a provider cost above
//       the worst case; that excess is never billed), and
//   (b) no usage is written under a lease after that lease expired in the
//       database (lease_ttl after its last renewal), and
//   (c) credits are removed only down to the sum of unexpired leases
//       (tollgate_credits_removable in 005_leases.sql), and
//   (d) no lease row is deleted while its replica may still admit under it:
//       DropEarlierBoots deletes only rows of the stable id whose replica lock
//       this process holds, so of processes that are gone (or, see below,
//       that lost the lock);
// then balance >= 0 at every commit (tests/billing/credit_guard_test.cpp
// checks it on random histories, credit_guard_pgtest.cpp on two replicas).
// Likewise a key's period usage never exceeds its limit, nor an account's
// its budget, unless an admin lowers the limit below what is leased or used.
// The exception is (b): a replica that could not renew for lease_ttl (the
// database unreachable for it that long, or a crash followed by a spool
// replay later than lease_ttl) may find its lease taken by other replicas;
// the usage of the calls it admitted under that lease is still written (never
// lost), so the pot can be overspent by at most what that lease held reserved
// or settled-but-unwritten when it expired in the database, summed over such
// expiries: the worst cases of the calls that replica had in flight plus the
// costs it had not written yet (never more than the lease amount; the
// partition property test checks this bound). The replica stops admitting
// under a lease expiry_margin before it can expire, so no call admitted after
// that point adds to it. When a lease is revived after such an expiry only
// what still fits is kept (tollgate_lease_renew reports the rest as lost).
// The exception to (d): a process whose lock session ended while it kept
// running (its connection cut, the database restarted) while another process
// with the same stable id took the lock and dropped its leases; it admits no
// call from then on once it notices (at most a housekeeping tick, 250 ms,
// later), and the renewal it runs before granting again finds the rows gone.
// What its calls in flight had reserved, plus what it admitted before it
// noticed, can then be overspent (at most what its leases held). Two
// processes on copies of one spool directory that start while both can reach
// the database never run together: the second fails Start.
//
// When a statement's outcome is unknown (the connection broke mid-way), the
// guard assumes the grant did not happen and the return did: either way the
// database may then hold more lease than this replica uses, until the lease
// expires after Stop; that holds credit back and never overspends.
//
// Calls that need more than the local free amount wait (in arrival order per
// pot) for the background thread, which asks once per pot for all of them.
// It asks pots in one global order (key, credits, budget; PotRef order), each
// for the calls that got past the pots before it, so replicas whose calls
// need the same pots cannot each take all of a different pot and starve one
// another. A waiting call is usually answered after one grant statement per
// pot it needs, plus one return statement in a round that refuses a call
// (each may take up to libpq's connect timeout, 10 s by default, when the
// database host does not answer at all).
//
// Refusals (402) come only after asking the database for more: a pot that
// cannot cover a call after a grant is "exhausted" for refusal_backoff, during
// which calls that need more than it has locally plus what the database had
// left for it are refused at once without a query, so a flood of 402s costs
// about one grant (and one return) per pot per window; smaller calls still
// ask. A refusal leaves no room leased to the refusing replica: the grant
// leases only what the calls that fit lack, and in the same background step,
// before the refused calls are answered, every pot asked in that round that
// could not cover a call (or whose call another pot refused) returns its
// free amount, less what calls still waiting for it need; so another replica
// can lease it at once. Capacity leased to other replicas counts as used
// until they return it (idle pots return their free amount after
// idle_return_after).
#pragma once

#include "tollgate/billing/key_cache.hpp"
#include "tollgate/core/error.hpp"
#include "tollgate/core/money.hpp"

#include <chrono>
#include <compare>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace tollgate::billing {

enum class PotScope { kKey, kCredits, kBudget };
// "key", "credits", "budget" (credit_leases.scope).
std::string_view PotScopeName(PotScope scope);

// One pot: (scope, owner, period). Ordered, so it can key a map.
struct PotRef {
  PotScope scope = PotScope::kCredits;
  int64_t owner_id = 0;  // api_keys.id for kKey, accounts.id otherwise
  std::chrono::system_clock::time_point period_start;  // the epoch for kCredits and never-resetting limits
  friend auto operator<=>(const PotRef&, const PotRef&) = default;
};

// What an admitted call holds. Copyable; pass it to Settle exactly once.
struct AdmitTicket {
  std::vector<PotRef> pots;  // empty: nothing reserved (postpaid, no limit, no budget)
  Money worst_case;          // reserved in every pot (>= 0)
  // CreditGuard::replica_id() when pots is not empty, else empty: store it as
  // usage_events.lease_holder, and `pots` as UsageEvent::leased_pots, so the
  // usage writer takes the cost off exactly these pots' lease rows. Pass the
  // row's created_at as Admit's call_time (the period_usage the writer adds
  // to is the period of created_at).
  std::string lease_holder;
};

enum class AdmitOutcome {
  kAdmitted,
  kRefused,      // a pot cannot cover worst_case (402)
  kUnavailable,  // the database is needed and unreachable, or the guard stopped (503)
};

struct AdmitResult {
  AdmitOutcome outcome = AdmitOutcome::kUnavailable;
  AdmitTicket ticket;  // kAdmitted only
  // kRefused: the first pot (in the order key, credits, budget) that cannot
  // cover the call, the call's worst case, and what that pot has left for
  // this replica (local free plus what the database could still lease, as of
  // this replica's last grant of the pot).
  PotScope refused_pot = PotScope::kCredits;
  Money needed;
  Money available;
  // kRefused: "key limit: this call may cost up to $0.01 but only $0.002 of
  // the key's $5 daily limit is left" (account credits / account budget
  // alike). kUnavailable: why. Empty when admitted. Never holds secrets.
  std::string message;
  // kAdmitted: the first pot whose soft limit (KeyRecord::soft_limit for the
  // key; AccountRecord::soft_limit for the budget, else for the credits) was
  // reached: usage >= soft limit (key, budget), balance <= soft limit
  // (credits). Estimated from the capacity read at this replica's last grant
  // less what it charged since; nullopt when none was reached.
  std::optional<PotScope> soft_limit_pot;

  bool admitted() const { return outcome == AdmitOutcome::kAdmitted; }
};

// The Error to answer with for a result that is not admitted:
// kPaymentRequired (402, code_string "insufficient_credits", no retry_after)
// or kUnavailable (503, code_string "credit_unavailable", retry_after "1":
// the database or the replica lock may be back within seconds), with the
// result's message.
Error AdmitError(const AdmitResult& result);

// How much to lease at a time: chunk = clamp(room / room_divisor, min_chunk,
// max_chunk), where room is what the pot could still lease to this replica;
// a grant asks for max(need, chunk) and gets at most room. A small divisor
// means fewer grants, a large one leaves more for other replicas.
struct LeaseChunkPolicy {
  int64_t room_divisor = 4;                   // >= 1
  Money min_chunk{0};                         // >= 0
  Money max_chunk{100'000'000'000};           // $100; >= min_chunk; bounds the overspend of exception (b)
};

struct CreditGuardOptions {
  std::chrono::milliseconds lease_ttl{60'000};        // a lease's life after each grant or renewal (>= 1 ms)
  std::chrono::milliseconds renew_interval{15'000};   // renew every lease of this replica this often (< lease_ttl)
  // Stop admitting under a lease this long before it would expire in the
  // database (it could not be renewed). 0 <= margin < lease_ttl.
  std::chrono::milliseconds expiry_margin{15'000};
  std::chrono::milliseconds idle_return_after{2'000};  // return a pot's free amount after this long without an admission
  std::chrono::milliseconds refusal_backoff{100};      // refuse/unavailable without a query for this long after one
  // Start waits this long (>= 0) for the replica lock when another session
  // holds it (a killed predecessor's session may take a moment to end).
  std::chrono::milliseconds replica_lock_wait{5'000};
  LeaseChunkPolicy chunk;
};

// Counters for metrics (monotonic since Start). Amounts in nano-USD.
struct CreditGuardCounters {
  int64_t admitted_inline = 0;       // admitted from local free inside Admit
  int64_t admitted_after_lease = 0;  // admitted by the background thread after asking the database
  int64_t admitted_without_pots = 0;
  int64_t refused = 0;               // kRefused answers
  int64_t refused_without_query = 0; // of those, answered within a refusal backoff window
  int64_t unavailable = 0;           // kUnavailable answers
  int64_t lease_grants = 0;          // grant statements that leased more than 0
  int64_t granted_nano_usd = 0;
  int64_t lease_returns = 0;         // pots whose free amount was returned
  int64_t returned_nano_usd = 0;
  int64_t renewals = 0;              // successful renew statements
  int64_t lost_nano_usd = 0;         // lease amounts found expired and taken by others (see above)
  int64_t db_round_trips = 0;        // statements sent (grant, return, renew)
  int64_t db_errors = 0;
};

// This replica's view of one pot (tests, metrics, debugging).
struct PotView {
  Money free;      // leased, not reserved
  Money reserved;  // worst cases of admitted calls not settled
  Money deficit;   // lost lease amount not yet covered (see tollgate_lease_renew); 0 normally
  bool lease_valid = false;  // admitting from free is allowed now
};

class CreditGuard {
 public:
  // Connects to `database_url` (libpq URI or connection string), checks the
  // lease functions exist, takes the replica lock (a second connection, kept
  // until Stop; see "lock" above), and starts the background thread (grants,
  // returns, renewals, lock checks). `replica_id` names this process in
  // credit_leases: "<stable id>:<boot nonce>" (non-empty, at most 200 bytes;
  // the part before the last ':', or the whole id without one, is the stable
  // id that the lock and DropEarlierBoots use). Blocks up to
  // options.replica_lock_wait while another session holds the lock.
  // Errors: kInvalidArgument (bad URL, empty or long replica id, options out
  // of range), kUnavailable (cannot connect), kInternal (schema missing: the
  // message says to run `tollgate migrate`), kConflict (another running
  // process holds the replica lock: the message says another running gateway
  // uses the same replica id, maybe a copied usage.spool_dir, and that each
  // process needs its own spool directory).
  static Result<std::unique_ptr<CreditGuard>> Start(const std::string& database_url,
                                                    std::string replica_id,
                                                    CreditGuardOptions options = {});

  // Stop().
  ~CreditGuard();
  CreditGuard(const CreditGuard&) = delete;
  CreditGuard& operator=(const CreditGuard&) = delete;

  // Decides whether a call of `key` that may cost up to `worst_case`
  // (nano-USD; negative counts as 0) may start, and reserves worst_case in
  // each of its pots if so. Does not check revoked/expired/disabled (KeyUsable
  // first). `call_time` picks the key and budget periods (pass the usage
  // row's created_at). Calls `done` exactly once:
  //   - inline, before Admit returns, when every pot has enough free lease
  //     (the common case), when the call needs no pot, when a pot is within a
  //     refusal or database-down backoff window, while another process holds
  //     the replica lock (kUnavailable), and after Stop;
  //   - otherwise later, from the guard's background thread, after it asked
  //     the database for more (one grant per pot for all waiting calls);
  //     calls wait in arrival order per pot.
  // `done` must not block for long nor call Stop; it may call Admit/Settle.
  // Never blocks on the database. Thread-safe.
  void Admit(const KeyRecord& key, Money worst_case, std::chrono::system_clock::time_point call_time,
             std::function<void(AdmitResult)> done);

  // Ends an admitted call: returns the charged cost = min(max(cost, 0),
  // ticket.worst_case) for a ticket with pots (record THAT as the usage cost);
  // max(cost, 0) for a ticket without. The unused part of the reservation
  // becomes free again. Call exactly once per admitted ticket, also when the
  // call failed (cost 0) or the client left. Thread-safe; never blocks on the
  // database.
  Money Settle(const AdmitTicket& ticket, Money cost);

  // The key's limit changed: returns the free part of its pots (in the
  // background) and forgets their capacity and refusal backoff, so the next
  // call leases again. Thread-safe; returns at once.
  void InvalidateKey(int64_t key_id);
  // The same for an account's credits and budget pots (credits added or
  // removed, budget changed).
  void InvalidateAccount(int64_t account_id);

  // Deletes the lease rows of earlier boots of this replica's stable id (the
  // part of replica_id before its last ':'), freeing what they held at once
  // instead of after their expiry. Call once after the usage spool of those
  // boots has been replayed (their usage then no longer needs the leases).
  // Runs only while this process holds the replica lock, on the lock's
  // session (the SQL function checks it too). Blocking: one statement, plus,
  // when the lock is not held, one try to take it again (waiting up to 1 s
  // for the next try). Returns the number of rows deleted. Errors:
  // kInvalidArgument (replica id without ':'), kConflict (another session
  // holds the lock), kUnavailable (lock not held and cannot be taken: the
  // database is unreachable; or after Stop), kInternal. Retry on kConflict
  // and kUnavailable.
  Result<int64_t> DropEarlierBoots();

  // Stops the background thread, answers waiting calls kUnavailable,
  // returns every pot's free amount (one statement; skipped if the database
  // is unreachable: the leases then expire after lease_ttl), and releases
  // the replica lock (closes its connection). Calls admitted before may
  // still Settle. Idempotent; thread-safe; blocks up to one statement; not
  // from a `done` callback.
  void Stop();

  const std::string& replica_id() const;
  CreditGuardCounters counters() const;
  // This replica's state of `pot`, or nullopt when it holds none.
  std::optional<PotView> Pot(const PotRef& pot) const;

 private:
  struct Impl;
  explicit CreditGuard(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace tollgate::billing
