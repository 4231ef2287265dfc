#include "usage_spool.hpp"

#include "log_internal.hpp"

#include <boost/crc.hpp>
#include <boost/json.hpp>

#include <fcntl.h>
#if defined(__x86_64__)
#include <nmmintrin.h>
#endif
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <charconv>
#include <condition_variable>
#include <cstring>
#include <filesystem>
#include <initializer_list>
#include <map>
#include <mutex>
#include <optional>
#include <random>
#include <set>
#include <system_error>
#include <thread>

namespace tollgate::billing::internal {
namespace {

namespace fs = std::filesystem;
namespace json = boost::json;

// CRC-32C (Castagnoli): RFC 3720 section 12.1; parameters as in its
// appendix B.4 (reflected input and output, init and final xor all ones).
using Crc32cEngine = boost::crc_optimal<32, 0x1EDC6F41, 0xFFFFFFFF, 0xFFFFFFFF, true, true>;

constexpr size_t kHeaderBytes = 8;
constexpr int kEventVersion = 1;
constexpr std::string_view kSegmentPrefix = "segment-";
constexpr std::string_view kSegmentSuffix = ".log";
constexpr std::string_view kCorruptSuffix = ".corrupt";
constexpr std::string_view kReplicaIdFile = "replica-id";
constexpr std::string_view kLockFile = "LOCK";

std::string SystemError(int err) { return std::system_category().message(err); }

Error IoError(std::string what, const std::string& path, int err) {
  return Error{ErrorCode::kInternal, "usage spool: " + what + " " + path + ": " + SystemError(err), {}, {}};
}

void PutU32(std::string& out, uint32_t v) {
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

uint32_t GetU32(const char* p) {
  uint32_t v = 0;
  for (int i = 3; i >= 0; --i) v = (v << 8) | static_cast<unsigned char>(p[i]);
  return v;
}

#if defined(__x86_64__)
// The same CRC with SSE 4.2's crc32 instruction, which computes CRC-32C
// (Intel SDM vol. 2A, "CRC32"), 8 bytes at a time; `crc` is the running
// register (no initial or final xor here). Chosen at run time (Crc32cOf).
__attribute__((target("sse4.2"))) uint32_t Crc32cSse42(uint32_t crc, std::string_view bytes) {
  const char* p = bytes.data();
  size_t n = bytes.size();
  uint64_t c = crc;
  for (; n >= 8; p += 8, n -= 8) {
    uint64_t word;
    std::memcpy(&word, p, 8);
    c = _mm_crc32_u64(c, word);
  }
  crc = static_cast<uint32_t>(c);
  for (; n > 0; ++p, --n) crc = _mm_crc32_u8(crc, static_cast<unsigned char>(*p));
  return crc;
}
#endif

// CRC-32C of the concatenation of `parts`: with SSE 4.2 where the CPU has
// it, else Boost's table-driven engine (the same checksum).
uint32_t Crc32cOf(std::initializer_list<std::string_view> parts) {
#if defined(__x86_64__)
  static const bool sse42 = __builtin_cpu_supports("sse4.2");
  if (sse42) {
    uint32_t crc = 0xFFFFFFFF;
    for (std::string_view part : parts) crc = Crc32cSse42(crc, part);
    return ~crc;
  }
#endif
  Crc32cEngine crc;
  for (std::string_view part : parts) crc.process_bytes(part.data(), part.size());
  return crc.checksum();
}

uint32_t RecordCrc(const char* length_bytes, std::string_view payload) {
  return Crc32cOf({std::string_view(length_bytes, 4), payload});
}

// ------------------------------------------------------------------ JSON

int64_t Nanos(std::chrono::system_clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
}
std::chrono::system_clock::time_point FromNanos(int64_t ns) {
  return std::chrono::system_clock::time_point(
      std::chrono::duration_cast<std::chrono::system_clock::duration>(std::chrono::nanoseconds(ns)));
}


// Readers: a missing field keeps its default (so a record written before a
// field existed still reads); a field of the wrong type throws.
struct Reader {
  const json::object& o;

  const json::value* Find(std::string_view key) const {
    const json::value* v = o.if_contains(key);
    return v == nullptr || v->is_null() ? nullptr : v;
  }
  void Str(std::string_view key, std::string& out) const {
    if (const json::value* v = Find(key)) out = std::string(v->as_string());
  }
  void OptStr(std::string_view key, std::optional<std::string>& out) const {
    out.reset();
    if (const json::value* v = Find(key)) out = std::string(v->as_string());
  }
  template <class Int>
  void Num(std::string_view key, Int& out) const {
    if (const json::value* v = Find(key)) out = v->to_number<Int>();
  }
  void OptNum(std::string_view key, std::optional<int64_t>& out) const {
    out.reset();
    if (const json::value* v = Find(key)) out = v->to_number<int64_t>();
  }
  void Bool(std::string_view key, bool& out) const {
    if (const json::value* v = Find(key)) out = v->as_bool();
  }
  void ReadUsage(std::string_view key, Usage& u) const {
    const json::value* v = Find(key);
    if (v == nullptr) return;
    Reader r{v->as_object()};
    r.Num("prompt", u.prompt_tokens);
    r.Num("completion", u.completion_tokens);
    r.Num("cached", u.cached_tokens);
    r.Num("reasoning", u.reasoning_tokens);
    r.Num("cache_write", u.cache_write_tokens);
  }
};

// ------------------------------------------------------------------ files

bool WriteAll(int fd, const char* data, size_t size, int* err) {
  while (size > 0) {
    ssize_t n = ::write(fd, data, size);
    if (n < 0) {
      if (errno == EINTR) continue;
      *err = errno;
      return false;
    }
    data += n;
    size -= static_cast<size_t>(n);
  }
  return true;
}

bool ReadFile(int fd, std::string& out, int* err) {
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    *err = errno;
    return false;
  }
  out.resize(static_cast<size_t>(st.st_size));
  size_t done = 0;
  while (done < out.size()) {
    ssize_t n = ::pread(fd, out.data() + done, out.size() - done, static_cast<off_t>(done));
    if (n < 0) {
      if (errno == EINTR) continue;
      *err = errno;
      return false;
    }
    if (n == 0) break;
    done += static_cast<size_t>(n);
  }
  out.resize(done);
  return true;
}

// fsync of a directory: makes the names created in it durable (fsync(2): "an
// explicit fsync() on a file descriptor for the directory is also needed").
int SyncDir(const std::string& dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return errno;
  int err = ::fsync(fd) == 0 ? 0 : errno;
  ::close(fd);
  return err;
}

std::string SegmentName(uint64_t number) {
  std::string digits = std::to_string(number);
  return std::string(kSegmentPrefix) + std::string(20 - std::min<size_t>(20, digits.size()), '0') + digits +
         std::string(kSegmentSuffix);
}

// The number of "segment-<n>.log" or "segment-<n>.log.corrupt"; `corrupt`
// says which.
std::optional<uint64_t> ParseSegmentName(std::string_view name, bool* corrupt) {
  if (!name.starts_with(kSegmentPrefix)) return std::nullopt;
  name.remove_prefix(kSegmentPrefix.size());
  *corrupt = name.ends_with(kCorruptSuffix);
  if (*corrupt) name.remove_suffix(kCorruptSuffix.size());
  if (!name.ends_with(kSegmentSuffix)) return std::nullopt;
  name.remove_suffix(kSegmentSuffix.size());
  uint64_t number = 0;
  auto [end, ec] = std::from_chars(name.data(), name.data() + name.size(), number);
  if (ec != std::errc() || end != name.data() + name.size() || name.empty()) return std::nullopt;
  return number;
}

bool IsReplicaId(std::string_view id) {
  return id.size() == 32 &&
         std::all_of(id.begin(), id.end(), [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
}

std::string RandomHex(size_t bytes) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::random_device rd;
  std::string out;
  for (size_t i = 0; i < bytes; i += 4) {
    uint32_t r = rd();
    for (size_t j = 0; j < 4 && i + j < bytes; ++j) {
      out.push_back(kHex[(r >> 4) & 0xf]);
      out.push_back(kHex[r & 0xf]);
      r >>= 8;
    }
  }
  return out;
}

Result<std::string> ReadOrCreateReplicaId(const std::string& dir) {
  const std::string path = dir + "/" + std::string(kReplicaIdFile);
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd >= 0) {
    std::string text;
    int err = 0;
    bool ok = ReadFile(fd, text, &err);
    ::close(fd);
    if (!ok) return IoError("cannot read", path, err);
    while (!text.empty() && (text.back() == '\n' || text.back() == '\r' || text.back() == ' ')) text.pop_back();
    if (!IsReplicaId(text)) {
      return Error{ErrorCode::kInvalidArgument,
                   "usage spool: " + path + " does not hold a replica id (32 lowercase hex characters); "
                   "delete it to have a new one made",
                   {}, {}};
    }
    return text;
  }
  if (errno != ENOENT) return IoError("cannot open", path, errno);
  // Written to a temporary name, synced and renamed, so a crash never leaves
  // a half-written id behind.
  std::string id = RandomHex(16);
  const std::string tmp = path + ".tmp";
  fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return IoError("cannot create", tmp, errno);
  std::string line = id + "\n";
  int err = 0;
  bool ok = WriteAll(fd, line.data(), line.size(), &err);
  if (ok && ::fsync(fd) != 0) ok = false, err = errno;
  ::close(fd);
  if (!ok) return IoError("cannot write", tmp, err);
  if (::rename(tmp.c_str(), path.c_str()) != 0) return IoError("cannot rename to", path, errno);
  if (int e = SyncDir(dir); e != 0) return IoError("cannot sync directory", dir, e);
  return id;
}

// One valid record at `off`, or nullopt.
std::optional<std::string_view> FrameAt(std::string_view data, size_t off) {
  if (off > data.size() || data.size() - off < kHeaderBytes) return std::nullopt;
  const char* h = data.data() + off;
  uint32_t length = GetU32(h);
  if (length == 0 || length > UsageSpool::kMaxRecordBytes || length > data.size() - off - kHeaderBytes) {
    return std::nullopt;
  }
  std::string_view payload = data.substr(off + kHeaderBytes, length);
  if (RecordCrc(h, payload) != GetU32(h + 4)) return std::nullopt;
  return payload;
}

struct Segment {
  uint64_t number = 0;
  std::string path;
  uint64_t first_seq = 0;  // valid when records > 0
  uint64_t records = 0;    // sequence numbers first_seq .. first_seq + records - 1
  uint64_t committed = 0;
  int64_t bytes = 0;
  bool sealed = false;     // no more records go to it
  bool corrupt = false;    // keep as .corrupt instead of deleting
};

struct Pending {
  uint64_t seq;
  std::shared_ptr<const UsageEvent> event;
  UsageSpool::WrittenCallback on_written;
};

}  // namespace

// ------------------------------------------------------------------ codec

uint32_t Crc32c(std::string_view bytes) { return Crc32cOf({bytes}); }

std::string FrameSpoolRecord(std::string_view payload) {
  std::string out;
  out.reserve(kHeaderBytes + payload.size());
  PutU32(out, static_cast<uint32_t>(payload.size()));
  PutU32(out, RecordCrc(out.data(), payload));
  out.append(payload);
  return out;
}

void WriteAttemptFields(JsonWriter& w, const AttemptRecord& a) {
  w.Key("attempt").Int(a.attempt);
  w.Key("endpoint_id").String(a.endpoint_id);
  w.Key("provider").String(a.provider);
  w.Key("upstream_model").String(a.upstream_model);
  w.Key("outcome").String(a.outcome);
  w.Key("status").Int(a.status);
  w.Key("error_code").OptionalString(a.error_code);
  w.Key("started_ms").Int(a.started_ms);
  w.Key("latency_ms").Int(a.latency_ms);
  w.Key("ttft_ms").OptionalInt(a.ttft_ms);
}

std::string EncodeUsageEvent(const UsageEvent& e) {
  // Written field by field (JsonWriter): this runs once per call, and a tree
  // cost several times more. DecodeUsageEvent reads it back.
  std::string out;
  out.reserve(1024 + e.price_snapshot.size() + 256 * e.attempts.size());
  JsonWriter w(out);
  auto usage = [&w](const Usage& u) {
    w.BeginObject();
    w.Key("prompt").Int(u.prompt_tokens);
    w.Key("completion").Int(u.completion_tokens);
    w.Key("cached").Int(u.cached_tokens);
    w.Key("reasoning").Int(u.reasoning_tokens);
    w.Key("cache_write").Int(u.cache_write_tokens);
    w.EndObject();
  };
  w.BeginObject();
  w.Key("v").Int(kEventVersion);
  w.Key("request_id").String(e.request_id);
  w.Key("api_key_id").Int(e.api_key_id);
  w.Key("model").String(e.model);
  w.Key("provider").String(e.provider);
  w.Key("upstream_model").String(e.upstream_model);
  w.Key("usage");
  usage(e.usage);
  w.Key("cost").Int(e.cost.nano_usd);
  w.Key("latency_ms").Int(e.latency_ms);
  w.Key("ttft_ms").OptionalInt(e.ttft_ms);
  w.Key("status").Int(e.status);
  w.Key("finish_reason").OptionalString(e.finish_reason);
  w.Key("streamed").Bool(e.streamed);
  w.Key("cancelled").Bool(e.cancelled);
  w.Key("usage_estimated").Bool(e.usage_estimated);
  w.Key("error_code").OptionalString(e.error_code);
  w.Key("created_at_ns").Int(Nanos(e.created_at));
  w.Key("finished_at_ns").Int(Nanos(e.finished_at));
  w.Key("endpoint_id").String(e.endpoint_id);
  w.Key("account_id").Int(e.account_id);
  w.Key("lease_holder").String(e.lease_holder);
  // Absent in records of older gateways (decoded as none).
  w.Key("leased_pots").BeginArray();
  for (const LeasedPot& p : e.leased_pots) {
    w.BeginObject();
    w.Key("scope").String(p.scope);
    w.Key("owner_id").Int(p.owner_id);
    w.Key("period_start_ns").Int(Nanos(p.period_start));
    w.EndObject();
  }
  w.EndArray();
  w.Key("price_snapshot").String(e.price_snapshot);
  w.Key("byok").Bool(e.byok);
  w.Key("provider_cost");
  if (e.provider_cost) {
    w.Int(e.provider_cost->nano_usd);
  } else {
    w.Null();
  }
  w.Key("attempts").BeginArray();
  for (const AttemptRecord& a : e.attempts) {
    w.BeginObject();
    WriteAttemptFields(w, a);
    w.Key("usage");
    usage(a.usage);
    w.Key("cost").Int(a.cost.nano_usd);
    w.EndObject();
  }
  w.EndArray();
  w.Key("app").String(e.app);
  w.Key("app_title").String(e.app_title);
  w.EndObject();
  return out;
}

Result<UsageEvent> DecodeUsageEvent(std::string_view payload) {
  auto bad = [](std::string why) {
    return Error{ErrorCode::kInvalidArgument, "usage spool record: " + std::move(why), {}, {}};
  };
  json::parse_options options;
  options.allow_invalid_utf8 = true;  // strings are stored byte for byte
  std::error_code ec;
  json::value root = json::parse(payload, ec, {}, options);
  if (ec) return bad("not JSON: " + ec.message());
  if (!root.is_object()) return bad("not a JSON object");
  try {
    Reader r{root.as_object()};
    int64_t version = 0;
    r.Num("v", version);
    if (version != kEventVersion) return bad("unknown version " + std::to_string(version));
    UsageEvent e;
    r.Str("request_id", e.request_id);
    if (e.request_id.empty()) return bad("no request_id");
    r.Num("api_key_id", e.api_key_id);
    r.Str("model", e.model);
    r.Str("provider", e.provider);
    r.Str("upstream_model", e.upstream_model);
    r.ReadUsage("usage", e.usage);
    r.Num("cost", e.cost.nano_usd);
    r.Num("latency_ms", e.latency_ms);
    r.OptNum("ttft_ms", e.ttft_ms);
    r.Num("status", e.status);
    r.OptStr("finish_reason", e.finish_reason);
    r.Bool("streamed", e.streamed);
    r.Bool("cancelled", e.cancelled);
    r.Bool("usage_estimated", e.usage_estimated);
    r.OptStr("error_code", e.error_code);
    int64_t ns = 0;
    r.Num("created_at_ns", ns);
    e.created_at = FromNanos(ns);
    ns = 0;
    r.Num("finished_at_ns", ns);
    e.finished_at = FromNanos(ns);
    r.Str("endpoint_id", e.endpoint_id);
    r.Num("account_id", e.account_id);
    r.Str("lease_holder", e.lease_holder);
    if (const json::value* pots = r.Find("leased_pots")) {
      for (const json::value& item : pots->as_array()) {
        Reader p{item.as_object()};
        LeasedPot pot;
        p.Str("scope", pot.scope);
        p.Num("owner_id", pot.owner_id);
        int64_t start_ns = 0;
        p.Num("period_start_ns", start_ns);
        pot.period_start = FromNanos(start_ns);
        e.leased_pots.push_back(std::move(pot));
      }
    }
    r.Str("price_snapshot", e.price_snapshot);
    r.Bool("byok", e.byok);
    std::optional<int64_t> provider_cost;
    r.OptNum("provider_cost", provider_cost);
    if (provider_cost) e.provider_cost = Money{*provider_cost};
    r.Str("app", e.app);
    r.Str("app_title", e.app_title);
    if (const json::value* attempts = r.Find("attempts")) {
      for (const json::value& item : attempts->as_array()) {
        Reader a{item.as_object()};
        AttemptRecord rec;
        a.Num("attempt", rec.attempt);
        a.Str("endpoint_id", rec.endpoint_id);
        a.Str("provider", rec.provider);
        a.Str("upstream_model", rec.upstream_model);
        a.Str("outcome", rec.outcome);
        a.Num("status", rec.status);
        a.OptStr("error_code", rec.error_code);
        a.Num("started_ms", rec.started_ms);
        a.Num("latency_ms", rec.latency_ms);
        a.OptNum("ttft_ms", rec.ttft_ms);
        a.ReadUsage("usage", rec.usage);
        a.Num("cost", rec.cost.nano_usd);
        e.attempts.push_back(std::move(rec));
      }
    }
    return e;
  } catch (const std::exception& ex) {
    // as_string()/as_object()/to_number() on a value of another type.
    return bad(std::string("a field has the wrong type: ") + ex.what());
  }
}

// ------------------------------------------------------------------ spool

struct UsageSpool::Impl {
  UsageSpoolOptions options;
  std::string replica_id;
  int lock_fd = -1;

  mutable std::mutex mutex;
  std::condition_variable wake;
  std::vector<Pending> queue;                   // appended, not yet taken by the writer
  std::vector<std::function<void()>> deferred;
  std::map<uint64_t, Segment> segments;         // by number (so also by first_seq)
  std::set<uint64_t> early_commits;             // marked before being placed in a segment
  std::set<uint64_t> unplaced;                  // failed before reaching any segment
  uint64_t next_seq = 1;
  uint64_t next_segment = 1;
  uint64_t active = 0;                          // number of the segment appended to; 0 = none
  bool retire_check = false;                    // the active segment may be fully committed
  bool closing = false;
  bool closed = false;
  std::vector<SpooledEvent> recovered;
  std::thread thread;
  std::mutex close_mutex;

  // Writer thread only.
  int active_fd = -1;
  bool failing = false;  // the last write failed (log once per streak)

  std::atomic<int64_t> records_appended{0}, group_commits{0}, write_failures{0}, records_recovered{0},
      torn_tails{0}, corrupt_records{0}, segments_deleted{0}, segment_files{0};

  ~Impl() {
    if (lock_fd >= 0) ::close(lock_fd);  // releases the flock
  }

  // ---- bookkeeping (callers hold `mutex`)

  Segment* FindSegment(uint64_t seq) {
    for (auto it = segments.rbegin(); it != segments.rend(); ++it) {
      Segment& s = it->second;
      if (s.records > 0 && seq >= s.first_seq) {
        return seq < s.first_seq + s.records ? &s : nullptr;
      }
    }
    return nullptr;
  }

  void Place(Segment& s, uint64_t seq) {
    if (s.records == 0) s.first_seq = seq;
    ++s.records;
    if (early_commits.erase(seq) > 0) ++s.committed;
  }

  void Unplace(uint64_t seq) {
    if (early_commits.erase(seq) == 0) unplaced.insert(seq);
  }

  // Removes finished segments from the map; the caller deletes the returned
  // files without holding the mutex.
  std::vector<Segment> TakeFinished() {
    std::vector<Segment> done;
    for (auto it = segments.begin(); it != segments.end();) {
      if (it->second.sealed && it->second.committed >= it->second.records) {
        done.push_back(std::move(it->second));
        it = segments.erase(it);
      } else {
        ++it;
      }
    }
    return done;
  }

  void DeleteFiles(const std::vector<Segment>& done) {
    for (const Segment& s : done) {
      if (s.corrupt) {
        std::string kept = s.path + std::string(kCorruptSuffix);
        if (::rename(s.path.c_str(), kept.c_str()) != 0) {
          Log(LogLevel::kWarning, "usage spool: cannot rename " + s.path + ": " + SystemError(errno));
        } else {
          Log(LogLevel::kWarning, "usage spool: kept the corrupt segment as " + kept +
                                      " (its readable records are in the database)");
        }
      } else if (::unlink(s.path.c_str()) != 0 && errno != ENOENT) {
        Log(LogLevel::kWarning, "usage spool: cannot delete " + s.path + ": " + SystemError(errno));
        continue;
      }
      segments_deleted.fetch_add(1, std::memory_order_relaxed);
      segment_files.fetch_sub(1, std::memory_order_relaxed);
    }
  }

  // ---- recovery (Open, before the writer thread starts)

  Result<void> Recover() {
    std::error_code ec;
    std::vector<std::pair<uint64_t, std::string>> found;
    for (const fs::directory_entry& entry : fs::directory_iterator(options.dir, ec)) {
      bool corrupt = false;
      std::string name = entry.path().filename().string();
      std::optional<uint64_t> number = ParseSegmentName(name, &corrupt);
      if (!number) continue;
      next_segment = std::max(next_segment, *number + 1);
      if (!corrupt) found.emplace_back(*number, entry.path().string());
    }
    if (ec) return IoError("cannot list", options.dir, ec.value());
    std::sort(found.begin(), found.end());
    for (auto& [number, path] : found) {
      if (auto ok = RecoverSegment(number, path); !ok) return ok;
    }
    std::vector<Segment> empty = TakeFinished();  // segments with nothing readable left
    DeleteFiles(empty);
    return {};
  }

  Result<void> RecoverSegment(uint64_t number, const std::string& path) {
    int fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
    if (fd < 0) return IoError("cannot open", path, errno);
    std::string data;
    int err = 0;
    if (!ReadFile(fd, data, &err)) {
      ::close(fd);
      return IoError("cannot read", path, err);
    }
    Segment seg;
    seg.number = number;
    seg.path = path;
    seg.sealed = true;
    seg.bytes = static_cast<int64_t>(data.size());
    std::string_view view(data);
    size_t off = 0;
    while (off < view.size()) {
      std::optional<std::string_view> payload = FrameAt(view, off);
      if (!payload) break;
      Result<UsageEvent> event = DecodeUsageEvent(*payload);
      if (event) {
        uint64_t seq = next_seq++;
        Place(seg, seq);
        recovered.push_back(SpooledEvent{seq, std::move(*event)});
      } else {
        corrupt_records.fetch_add(1, std::memory_order_relaxed);
        Log(LogLevel::kError, "usage spool: skipped an unreadable record at offset " + std::to_string(off) +
                                  " of " + path + ": " + event.error().message);
      }
      off += kHeaderBytes + payload->size();
    }
    if (off < view.size()) {
      bool more = false;
      for (size_t p = off + 1; p + kHeaderBytes <= view.size() && !more; ++p) more = FrameAt(view, p).has_value();
      if (more) {
        seg.corrupt = true;
        corrupt_records.fetch_add(1, std::memory_order_relaxed);
        Log(LogLevel::kError, "usage spool: corrupt record at offset " + std::to_string(off) + " of " + path +
                                  " with records after it; skipped the rest of the segment (" +
                                  std::to_string(view.size() - off) + " bytes)");
      } else {
        torn_tails.fetch_add(1, std::memory_order_relaxed);
        Log(LogLevel::kWarning, "usage spool: dropped a torn record at the end of " + path + " (offset " +
                                    std::to_string(off) + ", " + std::to_string(view.size() - off) +
                                    " bytes): a write interrupted by a crash, never reported durable");
        // Not synced: appends never go to this file, so a truncation lost in
        // another crash only means the tail is found and dropped again.
        if (::ftruncate(fd, static_cast<off_t>(off)) != 0) {
          int e = errno;
          ::close(fd);
          return IoError("cannot truncate", path, e);
        }
        seg.bytes = static_cast<int64_t>(off);
      }
    }
    ::close(fd);
    segment_files.fetch_add(1, std::memory_order_relaxed);
    segments.emplace(number, std::move(seg));
    return {};
  }

  // ---- writer thread

  // The segment to append to, creating one if needed; nullptr after an error
  // (logged).
  Segment* Active() {
    {
      std::lock_guard lock(mutex);
      if (active != 0 && active_fd >= 0) return &segments.at(active);
    }
    uint64_t number;
    {
      std::lock_guard lock(mutex);
      number = next_segment++;
    }
    std::string path = options.dir + "/" + SegmentName(number);
    int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0) {
      ReportFailure("cannot create " + path + ": " + SystemError(errno));
      return nullptr;
    }
    if (int e = SyncDir(options.dir); e != 0) {
      ::close(fd);
      ::unlink(path.c_str());
      ReportFailure("cannot sync directory " + options.dir + ": " + SystemError(e));
      return nullptr;
    }
    active_fd = fd;
    segment_files.fetch_add(1, std::memory_order_relaxed);
    std::lock_guard lock(mutex);
    Segment seg;
    seg.number = number;
    seg.path = std::move(path);
    active = number;
    return &segments.emplace(number, std::move(seg)).first->second;
  }

  // Stops appending to the active segment (after an error, a roll, or when
  // it is fully committed) and deletes it if it is done.
  void SealActive() {
    if (active_fd >= 0) ::close(active_fd);
    active_fd = -1;
    std::vector<Segment> done;
    {
      std::lock_guard lock(mutex);
      if (active != 0) segments.at(active).sealed = true;
      active = 0;
      done = TakeFinished();
    }
    DeleteFiles(done);
  }

  void ReportFailure(const std::string& message) {
    if (!failing) {
      Log(LogLevel::kError, "usage spool: " + message +
                                "; usage rows stay in memory until the database has them");
    }
    failing = true;
  }

  // Writes `buffer` to the active segment and fdatasyncs it.
  bool Commit(Segment& seg, std::string& buffer) {
    if (buffer.empty()) return true;
    int err = 0;
    bool ok = WriteAll(active_fd, buffer.data(), buffer.size(), &err);
    if (ok && ::fdatasync(active_fd) != 0) ok = false, err = errno;
    if (ok) {
      group_commits.fetch_add(1, std::memory_order_relaxed);
      std::lock_guard lock(mutex);
      seg.bytes += static_cast<int64_t>(buffer.size());
    } else {
      ReportFailure("cannot write " + seg.path + ": " + SystemError(err));
    }
    buffer.clear();
    return ok;
  }

  void WriteGroup(std::vector<Pending>& group) {
    // in_buffer[i]: record i was framed into the buffer of the current chunk;
    // durable[i]: that chunk was written and synced.
    std::vector<char> in_buffer(group.size(), 0), durable(group.size(), 0);
    std::string buffer;
    size_t chunk_begin = 0;  // first record of the chunk in `buffer`
    Segment* seg = nullptr;
    auto finish_chunk = [&](size_t end, bool ok) {
      for (size_t j = chunk_begin; j < end; ++j) durable[j] = ok && in_buffer[j];
      chunk_begin = end;
    };
    for (size_t i = 0; i < group.size(); ++i) {
      std::string payload = EncodeUsageEvent(*group[i].event);
      if (payload.size() > kMaxRecordBytes) {
        Log(LogLevel::kError, "usage spool: the record of request_id=" + group[i].event->request_id + " is " +
                                  std::to_string(payload.size()) + " bytes, over the limit; not spooled");
        std::lock_guard lock(mutex);
        Unplace(group[i].seq);
        continue;
      }
      int64_t size = static_cast<int64_t>(kHeaderBytes + payload.size());
      if (seg == nullptr) {
        finish_chunk(i, false);  // nothing is pending in the buffer here
        seg = Active();
      }
      if (seg != nullptr) {
        int64_t used = seg->bytes + static_cast<int64_t>(buffer.size());
        if (used > 0 && used + size > options.segment_bytes) {
          finish_chunk(i, Commit(*seg, buffer));
          SealActive();
          seg = Active();
        }
      }
      if (seg == nullptr) {
        std::lock_guard lock(mutex);
        Unplace(group[i].seq);
        continue;
      }
      buffer += FrameSpoolRecord(payload);
      in_buffer[i] = 1;
      std::lock_guard lock(mutex);
      Place(*seg, group[i].seq);
    }
    if (seg != nullptr) {
      bool ok = Commit(*seg, buffer);
      finish_chunk(group.size(), ok);
      if (!ok) SealActive();  // the next group starts a fresh file
    }
    int64_t failed = std::count(durable.begin(), durable.end(), 0);
    if (failed > 0) {
      write_failures.fetch_add(failed, std::memory_order_relaxed);
    } else if (failing) {
      failing = false;
      Log(LogLevel::kInfo, "usage spool writes recovered");
    }
    for (size_t i = 0; i < group.size(); ++i) group[i].on_written(durable[i] != 0);
  }

  // Deletes the active segment once every record in it is committed and
  // nothing waits to be appended.
  void MaybeRetireActive() {
    {
      std::lock_guard lock(mutex);
      if (active == 0 || !queue.empty()) return;
      const Segment& s = segments.at(active);
      if (s.records == 0 || s.committed < s.records) return;
    }
    SealActive();
  }

  void Run() {
    std::unique_lock lock(mutex);
    for (;;) {
      wake.wait(lock, [&] { return closing || !queue.empty() || !deferred.empty() || retire_check; });
      std::vector<Pending> group;
      group.swap(queue);
      std::vector<std::function<void()>> calls;
      calls.swap(deferred);
      retire_check = false;
      lock.unlock();
      if (!group.empty()) WriteGroup(group);
      group.clear();
      for (auto& fn : calls) fn();
      MaybeRetireActive();
      lock.lock();
      if (closing && queue.empty() && deferred.empty()) break;
    }
    lock.unlock();
    if (active_fd >= 0) {
      ::close(active_fd);
      active_fd = -1;
    }
  }
};

UsageSpool::UsageSpool(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

UsageSpool::~UsageSpool() { Close(); }

Result<std::unique_ptr<UsageSpool>> UsageSpool::Open(UsageSpoolOptions options) {
  if (options.dir.empty()) return InvalidArgument("usage spool directory must not be empty", "spool_dir");
  if (options.segment_bytes < 1) return InvalidArgument("usage spool segment size must be >= 1 byte", "spool_dir");
  while (options.dir.size() > 1 && options.dir.back() == '/') options.dir.pop_back();
  std::error_code ec;
  fs::create_directories(options.dir, ec);
  if (ec) return IoError("cannot create directory", options.dir, ec.value());

  auto impl = std::make_unique<Impl>();
  impl->options = options;
  const std::string lock_path = options.dir + "/" + std::string(kLockFile);
  impl->lock_fd = ::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (impl->lock_fd < 0) return IoError("cannot open", lock_path, errno);
  if (::flock(impl->lock_fd, LOCK_EX | LOCK_NB) != 0) {
    if (errno == EWOULDBLOCK) {
      return Error{ErrorCode::kConflict,
                   "usage spool directory " + options.dir + " is in use by another process (it holds " + lock_path +
                       "); give every gateway process its own usage.spool_dir",
                   {}, {}};
    }
    return IoError("cannot lock", lock_path, errno);
  }
  Result<std::string> id = ReadOrCreateReplicaId(options.dir);
  if (!id) return id.error();
  impl->replica_id = std::move(*id);
  if (auto ok = impl->Recover(); !ok) return ok.error();
  impl->records_recovered.store(static_cast<int64_t>(impl->recovered.size()));
  if (!impl->recovered.empty()) {
    Log(LogLevel::kInfo, "usage spool: found " + std::to_string(impl->recovered.size()) +
                             " usage row(s) not yet confirmed in the database; replaying them");
  }
  Impl* raw = impl.get();
  impl->thread = std::thread([raw] { raw->Run(); });
  return std::unique_ptr<UsageSpool>(new UsageSpool(std::move(impl)));
}

const std::string& UsageSpool::replica_id() const { return impl_->replica_id; }

std::vector<SpooledEvent> UsageSpool::TakeRecovered() {
  std::lock_guard lock(impl_->mutex);
  return std::move(impl_->recovered);
}

uint64_t UsageSpool::Append(std::shared_ptr<const UsageEvent> event, WrittenCallback on_written) {
  std::unique_lock lock(impl_->mutex);
  if (impl_->closing) {
    lock.unlock();
    if (on_written) on_written(false);
    return 0;
  }
  uint64_t seq = impl_->next_seq++;
  if (!on_written) on_written = [](bool) {};
  impl_->queue.push_back(Pending{seq, std::move(event), std::move(on_written)});
  lock.unlock();
  impl_->records_appended.fetch_add(1, std::memory_order_relaxed);
  // pthread_cond_signal makes no system call when nobody waits, i.e. while the
  // writer is busy with the previous group.
  impl_->wake.notify_one();
  return seq;
}

void UsageSpool::Defer(std::function<void()> fn) {
  std::unique_lock lock(impl_->mutex);
  if (impl_->closing) {
    lock.unlock();
    fn();
    return;
  }
  impl_->deferred.push_back(std::move(fn));
  lock.unlock();
  impl_->wake.notify_one();
}

void UsageSpool::MarkCommitted(std::span<const uint64_t> seqs) {
  std::vector<Segment> done;
  bool wake = false;
  {
    std::lock_guard lock(impl_->mutex);
    // After Close the directory may belong to another process already.
    if (impl_->closed) return;
    for (uint64_t seq : seqs) {
      if (seq == 0 || seq >= impl_->next_seq) continue;
      if (Segment* s = impl_->FindSegment(seq)) {
        ++s->committed;  // each seq is marked once by its one owner
        if (s->number == impl_->active && s->committed >= s->records) wake = true;
      } else if (impl_->unplaced.erase(seq) == 0) {
        impl_->early_commits.insert(seq);
      }
    }
    done = impl_->TakeFinished();
    if (wake) impl_->retire_check = true;
  }
  impl_->DeleteFiles(done);
  if (wake) impl_->wake.notify_one();
}

void UsageSpool::Close() {
  std::lock_guard close_lock(impl_->close_mutex);
  {
    std::lock_guard lock(impl_->mutex);
    if (impl_->closed) return;
    impl_->closing = true;
  }
  impl_->wake.notify_one();
  if (impl_->thread.joinable()) impl_->thread.join();
  // The writer may have sealed nothing; retire a fully committed segment.
  std::vector<Segment> done;
  {
    std::lock_guard lock(impl_->mutex);
    if (impl_->active != 0) {
      Segment& s = impl_->segments.at(impl_->active);
      s.sealed = true;
      impl_->active = 0;
    }
    done = impl_->TakeFinished();
    impl_->closed = true;
  }
  impl_->DeleteFiles(done);
  if (impl_->lock_fd >= 0) {
    ::close(impl_->lock_fd);
    impl_->lock_fd = -1;
  }
}

UsageSpoolStats UsageSpool::stats() const {
  UsageSpoolStats s;
  s.records_appended = impl_->records_appended.load();
  s.group_commits = impl_->group_commits.load();
  s.write_failures = impl_->write_failures.load();
  s.records_recovered = impl_->records_recovered.load();
  s.torn_tails = impl_->torn_tails.load();
  s.corrupt_records = impl_->corrupt_records.load();
  s.segments_deleted = impl_->segments_deleted.load();
  s.segment_files = impl_->segment_files.load();
  return s;
}

}  // namespace tollgate::billing::internal
