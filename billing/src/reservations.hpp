// Credit reserved by calls in flight in this process (KeyCache::TryReserve).
// Private to KeyCache; not thread-safe (KeyCache holds its mutex, the same one
// that guards the snapshot and the pending spend, so an admission decision sees
// all three at one instant).
#pragma once

#include <cstddef>
#include <cstdint>
#include <unordered_map>

namespace tollgate::billing::internal {

class Reservations {
 public:
  // The admission rule. `committed` is spent (latest snapshot) + pending
  // spend of key `key_id`, `limit` its credit limit, both nano-USD. With
  // reserved = the sum of the key's outstanding reservations and
  // used = committed + reserved, admits (and reserves `worst_case`) when
  //   used + worst_case <= limit, or
  //   the key has no outstanding reservation and used < limit
  // (a key with little credit left can still make one call). A negative
  // worst_case counts as 0. Sums are computed without overflow.
  bool TryReserve(int64_t key_id, int64_t limit, int64_t committed, int64_t worst_case);

  // Removes one reservation of `worst_case` (clamped as above) from key
  // `key_id`. Ignored when the key has no outstanding reservation (e.g. the
  // call was admitted as unlimited, so nothing was reserved). Never goes below
  // zero; the key's entry is dropped with its last reservation.
  void Release(int64_t key_id, int64_t worst_case);

  // Sum and number of key `key_id`'s outstanding reservations (0 if none).
  int64_t Sum(int64_t key_id) const;
  int64_t Count(int64_t key_id) const;
  // Number of keys with outstanding reservations.
  size_t size() const { return entries_.size(); }

 private:
  struct Entry {
    int64_t sum = 0;
    int64_t count = 0;
  };
  std::unordered_map<int64_t, Entry> entries_;
};

}  // namespace tollgate::billing::internal
