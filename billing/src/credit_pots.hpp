// The pure accounting of CreditGuard (credit_guard.hpp), without a database or
// threads, so property tests can run it against a model of the database
// (tests/billing/credit_guard_test.cpp). migrations/005_leases.sql mirrors
// DecideGrant and KeepOnRevive in SQL (credit_guard_pgtest.cpp compares them).
// All amounts are nano-USD. Not thread-safe: CreditGuard holds its mutex.
#pragma once

#include "tollgate/billing/credit_guard.hpp"
#include "tollgate/billing/key_cache.hpp"

#include <cstdint>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <vector>

namespace tollgate::billing::internal {

// A pot as a call needs it, with what the refusal message and the soft limit
// need to know (from the key record at admission).
struct PotSpec {
  PotRef ref;
  LimitReset reset = LimitReset::kNone;  // the period kind (kNone for credits)
  std::optional<int64_t> limit;          // key limit / budget; nullopt for credits
  std::optional<int64_t> soft_limit;     // nullopt = none
};

// The pots a call of `key` at `call_time` needs, in the order key, credits,
// budget: key if credit_limit, credits if account.prepaid, budget if
// account.budget.
std::vector<PotSpec> PotsFor(const KeyRecord& key, std::chrono::system_clock::time_point call_time);

// One replica's share of a pot.
struct PotState {
  int64_t free = 0;      // leased, not reserved
  int64_t reserved = 0;  // worst cases of calls in flight
  // The database lease lost more than `free` (Lose): settlements pay this off
  // before anything becomes free again. Database lease amount = free +
  // reserved + settled-not-yet-written - deficit.
  int64_t deficit = 0;
};

class PotBook {
 public:
  const PotState* Find(const PotRef& pot) const;
  PotState& At(const PotRef& pot);  // creates an empty state
  void Erase(const PotRef& pot) { pots_.erase(pot); }
  const std::map<PotRef, PotState>& pots() const { return pots_; }

  // worst_case (< 0 counts as 0) <= free in every pot (a missing pot has 0).
  bool Fits(std::span<const PotRef> pots, int64_t worst_case) const;
  // All-or-nothing: if Fits, moves worst_case from free to reserved in every
  // pot and returns true; else changes nothing.
  bool Reserve(std::span<const PotRef> pots, int64_t worst_case);
  // Ends a reservation made by Reserve(pots, worst_case): returns charged =
  // clamp(cost, 0, worst_case); in every pot reserved -= worst_case and
  // worst_case - charged goes to the deficit first, then to free.
  int64_t Settle(std::span<const PotRef> pots, int64_t worst_case, int64_t cost);
  // A grant of `amount` (>= 0) arrived.
  void Grant(const PotRef& pot, int64_t amount);
  // Takes the free amount above `keep` (>= 0) out for a return; returns it
  // (0 if none). keep = 0: all of it.
  int64_t TakeFree(const PotRef& pot, int64_t keep = 0);
  // A return of `amount` taken by TakeFree failed: it is free again.
  void Restore(const PotRef& pot, int64_t amount);
  // The database lease shrank by `lost` (a revival after expiry): taken from
  // free, the rest becomes deficit.
  void Lose(const PotRef& pot, int64_t lost);
  // The database lease row is gone: nothing of free or reserved is backed.
  void LoseAll(const PotRef& pot);

 private:
  std::map<PotRef, PotState> pots_;
};

// One grant in the database (tollgate_lease_grant), decided from what the
// function reads under the owner's row lock.
struct GrantInput {
  std::optional<int64_t> capacity;  // balance or limit - period usage; nullopt = unlimited
  int64_t others = 0;               // sum of other replicas' unexpired leases of the pot
  std::optional<int64_t> own;       // this replica's lease amount; nullopt = no row
  bool own_expired = false;
  int64_t need = 0;                 // what the waiting calls lack (>= 0)
  // When the room cannot cover `need` and `calls` is not empty: the worst
  // cases of the waiting calls in arrival order (need = their sum - free);
  // only what the calls that fit (taken in order while they fit in free +
  // room) lack is granted, so a refused call leases nothing. Empty: the room
  // (all there is) is granted, as before.
  int64_t free = 0;                 // this replica's local free amount of the pot (>= 0)
  std::vector<int64_t> calls;
};
struct GrantDecision {
  int64_t granted = 0;       // added to the lease
  int64_t lease_amount = 0;  // the lease after the grant (keep + granted)
  int64_t lost = 0;          // own expired lease amount that no longer fits
  // capacity - others - kept own, >= 0, before granting; nullopt = unlimited.
  // free + room is all this replica could have of the pot.
  std::optional<int64_t> room;
};
GrantDecision DecideGrant(const GrantInput& in, const LeaseChunkPolicy& policy);

// An expired own lease of `own` revived: the part that still fits next to the
// other replicas' unexpired leases (own when capacity is unlimited).
int64_t KeepOnRevive(std::optional<int64_t> capacity, int64_t others, int64_t own);

// "key limit: this call may cost up to $0.01 but only $0.002 of the key's $5
// daily limit is left"; "account credits: ... only $0.002 of the account's
// credits is left"; "account budget: ... of the account's $50 monthly budget
// is left".
std::string RefusalMessage(const PotSpec& pot, int64_t needed, int64_t available);

// Whether the pot's soft limit is reached, given its capacity estimate
// (balance, or limit - usage): key/budget when limit - capacity >= soft;
// credits when capacity <= soft. False without a soft limit or estimate.
bool SoftLimitReached(const PotSpec& pot, std::optional<int64_t> capacity_estimate);

}  // namespace tollgate::billing::internal
