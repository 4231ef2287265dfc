// A local, append-only, checksummed spool of usage events (private to billing;
// UsageRecorder is its only user). It makes a completed call's usage row
// durable on the gateway's own disk in well under a database round trip, so a
// crash or a database outage loses no row; UsageRecorder writes the rows to
// PostgreSQL behind it and replays the spool on start.
//
// Directory layout (one gateway process owns a directory):
//   LOCK          flock(2)ed exclusively for the spool's lifetime; a second
//                 opener (another process, or another UsageSpool in this one)
//                 is refused.
//   replica-id    32 lowercase hex characters and a newline, made once from
//                 random bytes: the stable part of the process's replica id.
//   segment-<20 decimal digits>.log
//                 records, appended in order; a new segment starts when the
//                 next record would take the current one past
//                 `segment_bytes` (a larger record gets a segment of its own).
//   segment-<n>.log.corrupt
//                 a segment in which corruption was found before its end,
//                 kept for the operator once its readable records are
//                 committed (never read again).
//
// Record format (little-endian):
//   u32 length   payload bytes, 1 .. kMaxRecordBytes
//   u32 crc      CRC-32C (Castagnoli, polynomial 0x1EDC6F41, reflected, init
//                and final xor 0xFFFFFFFF; RFC 3720 section 12.1 and appendix
//                B.4) of the 4 length bytes followed by the payload, so a
//                damaged length is caught too
//   payload      the UsageEvent as a JSON object (EncodeUsageEvent)
//
// Durability: Append() only queues. One writer thread takes everything queued,
// writes it with as few write(2)s as the segments allow, and fdatasync(2)s
// each touched segment once ("group commit"), then reports each record. A new
// segment's directory entry is fsynced when the file is created.
//
// Recovery (Open): every segment is read in order. A record that is short,
// has an impossible length or a bad CRC ends the readable part of its
// segment. If no valid record follows it anywhere in the segment, it is a torn
// tail (a group the crash interrupted, never reported durable): logged, counted
// in torn_tails and truncated away. Otherwise the segment is corrupt in the
// middle: logged, counted in corrupt_records, and the rest of the segment is
// skipped. A record with a good CRC whose payload does not decode is logged,
// counted in corrupt_records and skipped alone. Appends never go to a segment
// found on open; they start a new one.
//
// Deletion: every record gets a sequence number; once all records of a
// segment are marked committed (MarkCommitted: written to the database, or
// refused by it for good), the segment is deleted, including the segment
// being appended to once it is idle.
#pragma once

#include "tollgate/billing/usage_event.hpp"
#include "tollgate/core/error.hpp"
#include "tollgate/core/json_writer.hpp"

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace tollgate::billing::internal {

struct UsageSpoolOptions {
  std::string dir;                              // created (with parents) if missing
  int64_t segment_bytes = int64_t{64} << 20;    // >= 1; roll threshold per segment file
};

// A record found by Open, with the sequence number MarkCommitted takes.
struct SpooledEvent {
  uint64_t seq = 0;
  UsageEvent event;
};

// The payload of a record: every field of `event` (attempts, price snapshot,
// lease holder, BYOK fields included) as a JSON object with a version field
// "v": 1. Times are integer nanoseconds since the Unix epoch, so the round
// trip is exact. Strings are copied byte for byte, also when they are not
// valid UTF-8 (DecodeUsageEvent accepts them back).
std::string EncodeUsageEvent(const UsageEvent& event);

// The fields an attempt's record shares between the spool record
// (EncodeUsageEvent) and the usage batch's `attempts` JSON (usage_recorder.cpp),
// from "attempt" to "ttft_ms", as members of the object `w` has open.
void WriteAttemptFields(JsonWriter& w, const AttemptRecord& a);

// Inverse of EncodeUsageEvent. Errors: kInvalidArgument (not JSON, not an
// object, unknown version, a field of the wrong type, empty request_id).
Result<UsageEvent> DecodeUsageEvent(std::string_view payload);

// CRC-32C of `bytes` (the checksum used in records).
uint32_t Crc32c(std::string_view bytes);

// A whole record (header and payload) for `payload`, as written to a segment.
std::string FrameSpoolRecord(std::string_view payload);

struct UsageSpoolStats {
  int64_t records_appended = 0;   // Append calls
  int64_t group_commits = 0;      // fdatasync calls that made groups durable
  int64_t write_failures = 0;     // records reported not durable (I/O error, too large)
  int64_t records_recovered = 0;  // records handed out by TakeRecovered (found on Open)
  int64_t torn_tails = 0;         // torn tails truncated on Open
  int64_t corrupt_records = 0;    // mid-segment corruptions and undecodable records found on Open
  int64_t segments_deleted = 0;   // segment files deleted (or kept as .corrupt) once committed
  int64_t segment_files = 0;      // segment files on disk now (gauge)
};

class UsageSpool {
 public:
  static constexpr uint32_t kMaxRecordBytes = 16u << 20;

  // Called once per Append from the writer thread, never inside Append:
  // durable = true once the record is fdatasynced, false if it could not be
  // written (the error is logged; the caller must keep the event elsewhere).
  using WrittenCallback = std::function<void(bool durable)>;

  // Creates the directory if needed, takes its lock, reads or creates
  // replica-id, reads every segment (recovery, above) and starts the writer
  // thread.
  // Errors: kInvalidArgument (empty dir, segment_bytes < 1, a replica-id file
  // that is not 32 hex characters), kConflict (another process, or another
  // UsageSpool, holds the directory's lock), kInternal (an I/O error: the
  // message names the path and the system's reason).
  static Result<std::unique_ptr<UsageSpool>> Open(UsageSpoolOptions options);

  // Close()s.
  ~UsageSpool();
  UsageSpool(const UsageSpool&) = delete;
  UsageSpool& operator=(const UsageSpool&) = delete;

  // The directory's stable id (contents of replica-id). Thread-safe.
  const std::string& replica_id() const;

  // The records found on Open, in file order, each once: later calls return
  // nothing. They stay on disk until MarkCommitted covers them.
  std::vector<SpooledEvent> TakeRecovered();

  // Queues `event` (kept alive until written) and returns its sequence
  // number (> 0). No system call: serialising and writing happen on the
  // writer thread, which calls `on_written` afterwards. Thread-safe. Must
  // not be called after Close (it then returns 0 and calls on_written(false)
  // at once).
  uint64_t Append(std::shared_ptr<const UsageEvent> event, WrittenCallback on_written);

  // Runs `fn` on the writer thread soon (after the group being written, if
  // any). Thread-safe; after Close `fn` runs at once on the caller's thread.
  void Defer(std::function<void()> fn);

  // The records `seqs` (from Append or TakeRecovered) are in the database now
  // (or refused by it for good); they need not be replayed. A segment all of
  // whose records are committed is deleted (a finished segment at once on this
  // thread, the one being appended to by the writer thread once it is idle).
  // Sequence numbers may be marked before their record is written. Unknown or
  // repeated numbers are ignored. Thread-safe.
  void MarkCommitted(std::span<const uint64_t> seqs);

  // Writes and syncs everything appended, calls the pending callbacks, deletes
  // the current segment if all its records are committed, stops the writer
  // thread and releases the lock. Idempotent; thread-safe.
  void Close();

  UsageSpoolStats stats() const;  // thread-safe

 private:
  struct Impl;
  explicit UsageSpool(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace tollgate::billing::internal
