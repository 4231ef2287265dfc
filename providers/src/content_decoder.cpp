#include "content_decoder.hpp"

#include <zlib.h>

#include <algorithm>
#include <cctype>
#include <utility>

namespace tollgate::providers::detail {

struct ContentDecoder::State {
  State() { zs = z_stream{}; }
  ~State() {
    if (initialized) inflateEnd(&zs);
  }
  z_stream zs;
  bool initialized = false;
  bool started = false;  // any encoded byte fed
  bool ended = false;    // zlib reported the end of the (current) stream
  std::string head;      // deflate: first bytes, until the format is known
};

namespace {

Error Bad(std::string message) { return Error{ErrorCode::kBadGateway, std::move(message), {}, {}, {}, {}}; }

std::string Printable(std::string_view s) {
  std::string out(s.substr(0, 32));
  for (char& c : out) {
    if (!std::isprint(static_cast<unsigned char>(c))) c = '?';
  }
  return out;
}

}  // namespace

Result<ContentDecoder> ContentDecoder::ForContentEncoding(std::string_view value) {
  while (!value.empty() && (value.front() == ' ' || value.front() == '\t')) value.remove_prefix(1);
  while (!value.empty() && (value.back() == ' ' || value.back() == '\t')) value.remove_suffix(1);
  std::string lower(value);
  std::transform(lower.begin(), lower.end(), lower.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  if (lower.empty() || lower == "identity") return ContentDecoder(Coding::kIdentity);
  if (lower == "gzip" || lower == "x-gzip") return ContentDecoder(Coding::kGzip);
  if (lower == "deflate") return ContentDecoder(Coding::kDeflate);
  return Bad("the upstream answered with an unsupported Content-Encoding (" + Printable(value) + ")");
}

ContentDecoder::ContentDecoder(Coding coding) : coding_(coding) {
  if (coding_ == Coding::kIdentity) return;
  state_ = std::make_unique<State>();
  if (coding_ == Coding::kGzip) {
    // 16 + 15: gzip wrapper, 32 KiB window (zlib.h, inflateInit2).
    state_->initialized = inflateInit2(&state_->zs, 16 + MAX_WBITS) == Z_OK;
  }
}

ContentDecoder::ContentDecoder(ContentDecoder&&) noexcept = default;
ContentDecoder& ContentDecoder::operator=(ContentDecoder&&) noexcept = default;
ContentDecoder::~ContentDecoder() = default;

std::string_view ContentDecoder::name() const {
  switch (coding_) {
    case Coding::kGzip: return "gzip";
    case Coding::kDeflate: return "deflate";
    case Coding::kIdentity: break;
  }
  return "identity";
}

void ContentDecoder::Feed(std::string_view encoded) {
  if (!state_ || encoded.empty()) return;
  State& s = *state_;
  s.started = true;
  if (coding_ == Coding::kDeflate && !s.initialized) {
    // RFC 9110's "deflate" is the zlib format, but servers also send raw
    // deflate; a zlib header (RFC 1950 section 2.2: CM = 8, CINFO <= 7,
    // CMF*256 + FLG a multiple of 31) tells them apart. Keep the bytes until
    // two have come (a stream may be split anywhere).
    s.head.append(encoded);
    if (s.head.size() < 2) return;
    const auto b0 = static_cast<unsigned char>(s.head[0]);
    const auto b1 = static_cast<unsigned char>(s.head[1]);
    const bool zlib = (b0 & 0x0f) == 8 && (b0 >> 4) <= 7 && ((b0 << 8) | b1) % 31 == 0;
    s.initialized = inflateInit2(&s.zs, zlib ? MAX_WBITS : -MAX_WBITS) == Z_OK;
    s.zs.next_in = reinterpret_cast<Bytef*>(s.head.data());
    s.zs.avail_in = static_cast<uInt>(s.head.size());
    return;
  }
  s.zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(encoded.data()));
  s.zs.avail_in = static_cast<uInt>(encoded.size());
}

Result<std::size_t> ContentDecoder::Next(char* out, std::size_t capacity) {
  if (!state_ || capacity == 0) return std::size_t{0};
  State& s = *state_;
  if (coding_ == Coding::kDeflate && s.head.size() < 2 && !s.initialized) return std::size_t{0};
  if (!s.initialized) return Bad("cannot set up the " + std::string(name()) + " decoder");
  while (s.zs.avail_in > 0) {
    if (s.ended) {
      // gzip(1) accepts several members back to back; deflate has one stream.
      if (coding_ != Coding::kGzip) return Bad("the upstream sent bytes after the end of its deflate body");
      inflateReset(&s.zs);
      s.ended = false;
    }
    s.zs.next_out = reinterpret_cast<Bytef*>(out);
    s.zs.avail_out = static_cast<uInt>(std::min<std::size_t>(capacity, 1u << 30));
    const uInt in_before = s.zs.avail_in;
    const uInt out_before = s.zs.avail_out;
    const int rc = inflate(&s.zs, Z_NO_FLUSH);
    const std::size_t produced = out_before - s.zs.avail_out;
    if (rc == Z_STREAM_END) {
      s.ended = true;
    } else if (rc != Z_OK && rc != Z_BUF_ERROR) {
      return Bad("the upstream sent a corrupt " + std::string(name()) + " body");
    }
    if (produced > 0) return produced;
    if (rc == Z_BUF_ERROR || (s.zs.avail_in == in_before && rc != Z_STREAM_END)) break;  // no progress
  }
  return std::size_t{0};
}

Result<void> ContentDecoder::Finish() const {
  if (!state_ || !state_->started) return {};
  if (!state_->ended) return Bad("the upstream's " + std::string(name()) + " body was cut short");
  return {};
}

}  // namespace tollgate::providers::detail
