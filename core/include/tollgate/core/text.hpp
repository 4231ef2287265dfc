// Small shared helpers for text that crosses the wire: UTF-8 hold-back for
// streamed fragments, random identifiers, UTC timestamps.
#pragma once

#include <chrono>
#include <cstddef>
#include <string>
#include <string_view>

namespace tollgate {

// Length of the longest prefix of `text` that does not end inside a UTF-8
// multi-byte sequence (a truncated lead + continuation tail is held back).
// Bytes that cannot start a sequence pass through as they are.
std::size_t CompleteUtf8Prefix(std::string_view text);

// Joins streamed fragments so that every piece it returns is complete UTF-8:
// a character split across fragments is held back until it completes.
// Not thread-safe; one per stream of text.
class Utf8Stitcher {
 public:
  // The complete part of (held-back bytes + `fragment`); keeps the rest.
  std::string Push(std::string_view fragment);
  // What is still held back, as U+FFFD (a stream that ended inside a
  // character), or "" when nothing is.
  std::string Flush();
  bool empty() const { return tail_.empty(); }

 private:
  std::string tail_;
};

// `text` with every byte that is not part of a well-formed UTF-8 sequence
// (RFC 3629 section 4: no overlong forms, no surrogates, nothing above
// U+10FFFF) replaced by U+FFFD. Upstream JSON is parsed with invalid UTF-8
// allowed (a character split across chunks arrives in invalid halves); what
// leaves a decoder goes through this, so no event carries bytes that would
// make the JSON serialized from it invalid.
std::string ValidUtf8(std::string_view text);

// `text` without leading and trailing spaces and tabs: HTTP's optional
// whitespace (OWS, RFC 9110 section 5.6.3) around a header value or a list
// item. A view into `text`.
std::string_view TrimOws(std::string_view text);

// `n` characters from [0-9A-Za-z], from the kernel's CSPRNG (getrandom(2),
// fetched in blocks per thread), uniformly distributed (rejection sampling).
// Thread-safe. Throws std::runtime_error only if the kernel refuses randomness.
std::string RandomBase62(std::size_t n);

// `t` in UTC as "YYYY-MM-DD" + `separator` + "hh:mm:ss", then "." and
// `fraction_digits` digits (0 to 9; none and no "." for 0), truncated toward
// the past, then `zone`. RFC 3339 with milliseconds: FormatUtc(t, "T", 3, "Z");
// a PostgreSQL timestamptz literal: FormatUtc(t, " ", 6, "+00"). Years before
// 0000 or after 9999 are not supported (the digits are then wrong). Pure,
// thread-safe; no locale, no allocation beyond the result (per call on the
// metering path, where snprintf and gmtime_r cost more than the rest).
std::string FormatUtc(std::chrono::system_clock::time_point t, std::string_view separator, int fraction_digits,
                      std::string_view zone);

}  // namespace tollgate
