#include "pending_spend.hpp"

namespace tollgate::billing::internal {

void PendingSpend::Add(int64_t key_id, int64_t nano_usd) {
  if (nano_usd <= 0) return;
  pending_[key_id] += nano_usd;
}

int64_t PendingSpend::Get(int64_t key_id) const {
  auto it = pending_.find(key_id);
  return it == pending_.end() ? 0 : it->second;
}

void PendingSpend::Settle(int64_t key_id, int64_t old_spent, int64_t new_spent) {
  // A decrease is an administrator resetting spend, not a write of ours.
  if (new_spent <= old_spent) return;
  auto it = pending_.find(key_id);
  if (it == pending_.end()) return;
  it->second -= new_spent - old_spent;
  if (it->second <= 0) pending_.erase(it);
}

}  // namespace tollgate::billing::internal
