#include "tollgate/core/text.hpp"

#include <algorithm>

#include <sys/random.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <stdexcept>

namespace tollgate {

std::size_t CompleteUtf8Prefix(std::string_view text) {
  const std::size_t n = text.size();
  // Find the last lead byte among the final 4 bytes.
  for (std::size_t back = 1; back <= 4 && back <= n; ++back) {
    const auto b = static_cast<unsigned char>(text[n - back]);
    if ((b & 0xC0) == 0x80) continue;  // continuation byte
    std::size_t need = 1;
    if ((b & 0xE0) == 0xC0) {
      need = 2;
    } else if ((b & 0xF0) == 0xE0) {
      need = 3;
    } else if ((b & 0xF8) == 0xF0) {
      need = 4;
    }
    return back < need ? n - back : n;
  }
  return n;  // no lead byte nearby: not a truncated sequence, pass it on
}

std::string Utf8Stitcher::Push(std::string_view fragment) {
  if (tail_.empty()) {
    const std::size_t k = CompleteUtf8Prefix(fragment);
    tail_.assign(fragment.substr(k));
    return std::string(fragment.substr(0, k));
  }
  std::string joined = std::move(tail_);
  joined.append(fragment);
  const std::size_t k = CompleteUtf8Prefix(joined);
  tail_ = joined.substr(k);
  joined.resize(k);
  return joined;
}

std::string Utf8Stitcher::Flush() {
  if (tail_.empty()) return {};
  tail_.clear();
  return "\xEF\xBF\xBD";  // U+FFFD
}

namespace {

// Length of the well-formed UTF-8 sequence starting at `i`, or 0.
std::size_t SequenceLength(std::string_view s, std::size_t i) {
  const auto b0 = static_cast<unsigned char>(s[i]);
  if (b0 < 0x80) return 1;
  std::size_t n = 0;
  uint32_t cp = 0;
  uint32_t min = 0;
  if ((b0 & 0xE0) == 0xC0) {
    n = 2, cp = b0 & 0x1Fu, min = 0x80;
  } else if ((b0 & 0xF0) == 0xE0) {
    n = 3, cp = b0 & 0x0Fu, min = 0x800;
  } else if ((b0 & 0xF8) == 0xF0) {
    n = 4, cp = b0 & 0x07u, min = 0x10000;
  } else {
    return 0;
  }
  if (i + n > s.size()) return 0;
  for (std::size_t k = 1; k < n; ++k) {
    const auto b = static_cast<unsigned char>(s[i + k]);
    if ((b & 0xC0) != 0x80) return 0;
    cp = (cp << 6) | (b & 0x3Fu);
  }
  if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
  return n;
}

}  // namespace

std::string ValidUtf8(std::string_view text) {
  std::size_t i = 0;
  while (i < text.size()) {
    const std::size_t n = SequenceLength(text, i);
    if (n == 0) break;
    i += n;
  }
  if (i == text.size()) return std::string(text);  // the common case: no copy but the result
  std::string out(text.substr(0, i));
  while (i < text.size()) {
    const std::size_t n = SequenceLength(text, i);
    if (n == 0) {
      out += "\xEF\xBF\xBD";  // U+FFFD
      ++i;
    } else {
      out.append(text.substr(i, n));
      i += n;
    }
  }
  return out;
}

std::string RandomBase62(std::size_t n) {
  static constexpr char kAlphabet[] = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
  // Kernel randomness fetched 256 bytes at a time per thread: one
  // getrandom(2) per ~10 ids of 20 characters rather than per id (an id is
  // minted per call). Reads of up to 256 bytes are never short (getrandom(2)).
  // Bytes are used once; a forked child would repeat its parent's unused
  // ones, and Tollgate does not fork.
  struct Pool {
    unsigned char bytes[256];
    std::size_t next = sizeof bytes;
  };
  thread_local Pool pool;
  std::string out;
  out.reserve(n);
  while (out.size() < n) {
    if (pool.next == sizeof pool.bytes) {
      ssize_t got = getrandom(pool.bytes, sizeof pool.bytes, 0);
      if (got < 0) {
        if (errno == EINTR) continue;
        throw std::runtime_error("getrandom failed");
      }
      pool.next = sizeof pool.bytes - static_cast<std::size_t>(got);  // short only if the kernel breaks its word
      std::memmove(pool.bytes + pool.next, pool.bytes, static_cast<std::size_t>(got));
    }
    const unsigned char b = pool.bytes[pool.next++];
    if (b >= 248) continue;  // 248 = 4 * 62: keep the distribution uniform
    out.push_back(kAlphabet[b % 62]);
  }
  return out;
}

std::string FormatUtc(std::chrono::system_clock::time_point t, std::string_view separator, int fraction_digits,
                      std::string_view zone) {
  using namespace std::chrono;
  const auto ns = floor<nanoseconds>(t);
  const auto day = floor<days>(ns);
  const year_month_day ymd{day};
  const hh_mm_ss hms{ns - day};
  char buf[64];
  char* p = buf;
  auto put = [&p](long long v, int width) {
    for (int i = width - 1; i >= 0; --i, v /= 10) p[i] = static_cast<char>('0' + v % 10);
    p += width;
  };
  put(static_cast<int>(ymd.year()), 4);
  *p++ = '-';
  put(static_cast<unsigned>(ymd.month()), 2);
  *p++ = '-';
  put(static_cast<unsigned>(ymd.day()), 2);
  std::string out(buf, p);
  out += separator;
  p = buf;
  put(hms.hours().count(), 2);
  *p++ = ':';
  put(hms.minutes().count(), 2);
  *p++ = ':';
  put(hms.seconds().count(), 2);
  fraction_digits = std::clamp(fraction_digits, 0, 9);
  if (fraction_digits > 0) {
    long long fraction = hms.subseconds().count();
    for (int i = fraction_digits; i < 9; ++i) fraction /= 10;
    *p++ = '.';
    put(fraction, fraction_digits);
  }
  out.append(buf, p);
  out += zone;
  return out;
}

std::string_view TrimOws(std::string_view text) {
  while (!text.empty() && (text.front() == ' ' || text.front() == '\t')) text.remove_prefix(1);
  while (!text.empty() && (text.back() == ' ' || text.back() == '\t')) text.remove_suffix(1);
  return text;
}

}  // namespace tollgate
