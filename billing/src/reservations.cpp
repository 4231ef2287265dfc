#include "reservations.hpp"

#include <algorithm>

namespace tollgate::billing::internal {

bool Reservations::TryReserve(int64_t key_id, int64_t limit, int64_t committed, int64_t worst_case) {
  worst_case = std::max<int64_t>(worst_case, 0);
  auto it = entries_.find(key_id);
  const int64_t reserved = it == entries_.end() ? 0 : it->second.sum;
  const int64_t outstanding = it == entries_.end() ? 0 : it->second.count;
  // 128-bit: a saturated worst case (CallCost caps at INT64_MAX) plus what is
  // used must not wrap into "fits".
  const __int128 used = static_cast<__int128>(committed) + reserved;
  const bool fits = used + worst_case <= limit;
  const bool alone = outstanding == 0 && used < limit;
  if (!fits && !alone) return false;
  Entry& entry = entries_[key_id];
  // Cannot overflow: a reservation is added only when it fits under the limit
  // (so the sum stays <= limit) or as the only one.
  entry.sum += worst_case;
  entry.count += 1;
  return true;
}

void Reservations::Release(int64_t key_id, int64_t worst_case) {
  worst_case = std::max<int64_t>(worst_case, 0);
  auto it = entries_.find(key_id);
  if (it == entries_.end()) return;
  it->second.sum = std::max<int64_t>(it->second.sum - worst_case, 0);
  it->second.count -= 1;
  if (it->second.count <= 0) entries_.erase(it);
}

int64_t Reservations::Sum(int64_t key_id) const {
  auto it = entries_.find(key_id);
  return it == entries_.end() ? 0 : it->second.sum;
}

int64_t Reservations::Count(int64_t key_id) const {
  auto it = entries_.find(key_id);
  return it == entries_.end() ? 0 : it->second.count;
}

}  // namespace tollgate::billing::internal
