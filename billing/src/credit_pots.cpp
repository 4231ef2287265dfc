#include "credit_pots.hpp"

#include <algorithm>
#include <cassert>
#include <limits>

namespace tollgate::billing::internal {
namespace {

int64_t NonNegative(int64_t v) { return v < 0 ? 0 : v; }

// a - b without overflow for the magnitudes that reach here (capacity may be
// any bigint an admin wrote).
int64_t SatSub(int64_t a, int64_t b) {
  int64_t out;
  if (__builtin_sub_overflow(a, b, &out)) {
    return b > 0 ? std::numeric_limits<int64_t>::min() : std::numeric_limits<int64_t>::max();
  }
  return out;
}
int64_t SatAdd(int64_t a, int64_t b) {
  int64_t out;
  if (__builtin_add_overflow(a, b, &out)) {
    return b > 0 ? std::numeric_limits<int64_t>::max() : std::numeric_limits<int64_t>::min();
  }
  return out;
}

std::string PeriodAdjective(LimitReset reset) {
  switch (reset) {
    case LimitReset::kDaily: return "daily ";
    case LimitReset::kWeekly: return "weekly ";
    case LimitReset::kMonthly: return "monthly ";
    case LimitReset::kNone: break;
  }
  return "";
}

// Built by appending: "$" + std::string&& trips GCC 12's -Wrestrict false positive.
std::string Usd(int64_t nano) {
  std::string out = "$";
  out += FormatUsd(Money{nano});
  return out;
}

}  // namespace

std::vector<PotSpec> PotsFor(const KeyRecord& key, std::chrono::system_clock::time_point call_time) {
  std::vector<PotSpec> out;
  const AccountRecord& account = key.account;
  if (key.credit_limit) {
    out.push_back({PotRef{PotScope::kKey, key.id, PeriodStart(key.limit_reset, call_time)},
                   key.limit_reset, key.credit_limit->nano_usd,
                   key.soft_limit ? std::optional<int64_t>(key.soft_limit->nano_usd) : std::nullopt});
  }
  // The account's soft limit watches the budget when there is one, else the
  // balance (migrations/004_ledger.sql accounts.soft_limit_nano_usd).
  std::optional<int64_t> account_soft =
      account.soft_limit ? std::optional<int64_t>(account.soft_limit->nano_usd) : std::nullopt;
  if (account.prepaid) {
    out.push_back({PotRef{PotScope::kCredits, account.id, std::chrono::system_clock::time_point{}},
                   LimitReset::kNone, std::nullopt, account.budget ? std::nullopt : account_soft});
  }
  if (account.budget) {
    out.push_back({PotRef{PotScope::kBudget, account.id, PeriodStart(account.budget_reset, call_time)},
                   account.budget_reset, account.budget->nano_usd, account_soft});
  }
  return out;
}

const PotState* PotBook::Find(const PotRef& pot) const {
  auto it = pots_.find(pot);
  return it == pots_.end() ? nullptr : &it->second;
}

PotState& PotBook::At(const PotRef& pot) { return pots_[pot]; }

bool PotBook::Fits(std::span<const PotRef> pots, int64_t worst_case) const {
  worst_case = NonNegative(worst_case);
  for (const PotRef& pot : pots) {
    const PotState* state = Find(pot);
    if ((state ? state->free : 0) < worst_case) return false;
  }
  return true;
}

bool PotBook::Reserve(std::span<const PotRef> pots, int64_t worst_case) {
  if (!Fits(pots, worst_case)) return false;
  worst_case = NonNegative(worst_case);
  for (const PotRef& pot : pots) {
    PotState& state = At(pot);
    state.free -= worst_case;
    state.reserved += worst_case;
  }
  return true;
}

int64_t PotBook::Settle(std::span<const PotRef> pots, int64_t worst_case, int64_t cost) {
  worst_case = NonNegative(worst_case);
  const int64_t charged = std::clamp<int64_t>(cost, 0, worst_case);
  const int64_t back = worst_case - charged;
  for (const PotRef& pot : pots) {
    PotState& state = At(pot);
    assert(state.reserved >= worst_case && "Settle without a matching Reserve");
    state.reserved -= worst_case;
    const int64_t absorbed = std::min(back, state.deficit);
    state.deficit -= absorbed;
    state.free += back - absorbed;
  }
  return charged;
}

void PotBook::Grant(const PotRef& pot, int64_t amount) {
  if (amount > 0) At(pot).free += amount;
}

int64_t PotBook::TakeFree(const PotRef& pot, int64_t keep) {
  auto it = pots_.find(pot);
  if (it == pots_.end()) return 0;
  const int64_t x = std::max<int64_t>(it->second.free - NonNegative(keep), 0);
  it->second.free -= x;
  return x;
}

void PotBook::Restore(const PotRef& pot, int64_t amount) {
  if (amount > 0) At(pot).free += amount;
}

void PotBook::Lose(const PotRef& pot, int64_t lost) {
  if (lost <= 0) return;
  PotState& state = At(pot);
  const int64_t from_free = std::min(lost, state.free);
  state.free -= from_free;
  state.deficit += lost - from_free;
}

void PotBook::LoseAll(const PotRef& pot) {
  auto it = pots_.find(pot);
  if (it == pots_.end()) return;
  PotState& state = it->second;
  // The calls in flight may still be written and charged; what they
  // return when they settle must not become free against a lease that no
  // longer holds it.
  state.free = 0;
  state.deficit = state.reserved;
}

int64_t KeepOnRevive(std::optional<int64_t> capacity, int64_t others, int64_t own) {
  if (!capacity) return own;
  return std::min(own, NonNegative(SatSub(*capacity, others)));
}

GrantDecision DecideGrant(const GrantInput& in, const LeaseChunkPolicy& policy) {
  GrantDecision out;
  int64_t keep = in.own.value_or(0);
  if (in.own && in.own_expired) {
    keep = KeepOnRevive(in.capacity, in.others, *in.own);
    out.lost = *in.own - keep;
  }
  const int64_t need = NonNegative(in.need);
  if (!in.capacity) {
    out.granted = std::max(need, policy.max_chunk.nano_usd);
  } else {
    const int64_t room = NonNegative(SatSub(SatSub(*in.capacity, in.others), keep));
    out.room = room;
    if (need > room && !in.calls.empty()) {
      // Not every waiting call fits: lease only what those that fit lack.
      const int64_t free = NonNegative(in.free);
      const int64_t budget = SatAdd(free, room);
      int64_t fit = 0;
      for (int64_t call : in.calls) {
        call = NonNegative(call);
        if (call <= SatSub(budget, fit)) fit = SatAdd(fit, call);
      }
      out.granted = std::min(NonNegative(SatSub(fit, free)), room);
    } else {
      const int64_t divisor = std::max<int64_t>(policy.room_divisor, 1);
      const int64_t chunk = std::clamp(room / divisor, policy.min_chunk.nano_usd,
                                       std::max(policy.min_chunk, policy.max_chunk).nano_usd);
      out.granted = std::min(std::max(need, chunk), room);
    }
  }
  out.lease_amount = SatAdd(keep, out.granted);
  return out;
}

std::string RefusalMessage(const PotSpec& pot, int64_t needed, int64_t available) {
  std::string head;
  std::string of;
  switch (pot.ref.scope) {
    case PotScope::kKey:
      head = "key limit";
      of = "the key's " + (pot.limit ? Usd(*pot.limit) + " " : std::string()) + PeriodAdjective(pot.reset) + "limit";
      break;
    case PotScope::kCredits:
      head = "account credits";
      of = "the account's credits";
      break;
    case PotScope::kBudget:
      head = "account budget";
      of = "the account's " + (pot.limit ? Usd(*pot.limit) + " " : std::string()) + PeriodAdjective(pot.reset) + "budget";
      break;
  }
  return head + ": this call may cost up to " + Usd(NonNegative(needed)) + " but only " +
         Usd(NonNegative(available)) + " of " + of + " is left";
}

bool SoftLimitReached(const PotSpec& pot, std::optional<int64_t> capacity_estimate) {
  if (!pot.soft_limit || !capacity_estimate) return false;
  if (pot.ref.scope == PotScope::kCredits) return *capacity_estimate <= *pot.soft_limit;
  if (!pot.limit) return false;
  return SatSub(*pot.limit, *capacity_estimate) >= *pot.soft_limit;
}

}  // namespace tollgate::billing::internal
