// Streaming decoder for an upstream response's Content-Encoding (internal to
// providers/), on zlib.
//
// Tollgate asks upstreams for `Accept-Encoding: identity` (RFC 9110 section
// 12.5.3), but some still compress. Supported codings (RFC 9110 section 8.4.1):
//   gzip, x-gzip  RFC 1952, several members in a row allowed (as gzip(1));
//   deflate       the zlib format (RFC 1950) that the RFC names, and also the
//                 raw deflate data (RFC 1951) that some servers send instead;
//                 told apart by the zlib header check on the first two bytes;
//   identity / absent / empty  bytes pass through.
// Anything else (br, zstd, compress, a list of several codings) is refused
// by ForContentEncoding: better a clear error than compressed bytes handed
// to an SSE parser.
//
// Decoding is incremental: each network read is fed as it comes, and its
// output is pulled in pieces no larger than the caller's buffer, so an SSE
// stream that the server flushes per event (Z_SYNC_FLUSH) is handed on event
// by event, and a highly compressed body never needs more memory than one
// piece (the caller may stop pulling between pieces: flow control).
//
// Not thread-safe; one decoder per response, used on that call's strand.
#pragma once

#include "tollgate/core/error.hpp"

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>

namespace tollgate::providers::detail {

class ContentDecoder {
 public:
  enum class Coding { kIdentity, kGzip, kDeflate };

  // For a Content-Encoding header value (case-insensitive, blanks trimmed).
  // Errors: kBadGateway for an unsupported coding, with a message that names
  // it (at most 32 characters, non-printable ones replaced by '?').
  static Result<ContentDecoder> ForContentEncoding(std::string_view value);

  explicit ContentDecoder(Coding coding = Coding::kIdentity);
  ContentDecoder(ContentDecoder&&) noexcept;
  ContentDecoder& operator=(ContentDecoder&&) noexcept;
  ~ContentDecoder();

  Coding coding() const { return coding_; }
  bool identity() const { return coding_ == Coding::kIdentity; }
  std::string_view name() const;  // "gzip", "deflate", "identity"

  // Hands the decoder the next encoded bytes. They must stay valid until
  // Next() has returned 0; Feed() again only after that. Not for identity.
  void Feed(std::string_view encoded);
  // Decodes into out[0, capacity): the number of bytes written, 0 when the
  // fed input is used up (feed more), or kBadGateway for corrupt data or
  // bytes after the end of the compressed stream.
  Result<std::size_t> Next(char* out, std::size_t capacity);
  // At the end of the body: kBadGateway when the compressed stream was cut
  // short (an empty body is fine).
  Result<void> Finish() const;

 private:
  struct State;
  Coding coding_;
  std::unique_ptr<State> state_;  // zlib state; the z_stream must not move
};

}  // namespace tollgate::providers::detail
