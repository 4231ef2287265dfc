// Pruning of expired stored responses, shared by ResponseStore::Prune and
// UsageMaintenance::Run (private to billing).
#pragma once

#include "pg.hpp"

#include <chrono>
#include <cstdint>

namespace tollgate::billing::internal {

// Deletes the rows of `responses` with expires_at <= now, at most
// kResponsePruneBatch per statement (each its own short transaction, rows
// another session holds locked are skipped), until a batch comes back short.
// Returns the number deleted. The caller holds whatever serialises `session`.
// Errors: those of PgOutcome::ToError.
Result<int64_t> PruneExpiredResponses(PgSession& session, std::chrono::system_clock::time_point now);

inline constexpr int64_t kResponsePruneBatch = 1000;

}  // namespace tollgate::billing::internal
