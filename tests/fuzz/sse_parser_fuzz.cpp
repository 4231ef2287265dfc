// Fuzz target: wire::SseParser (wire/include/tollgate/wire/sse_parser.hpp),
// the Server-Sent Events framing every streamed upstream answer goes through.
//
// The input is an event stream. It is parsed twice: in one Feed(), and in
// slices whose lengths come from the input itself (1 to 16 bytes, so CRLF
// pairs, the BOM and lines are split everywhere). Both runs must dispatch the
// same events, reach the same final state (retry, error) and never hold more
// than the cap. A 512-byte cap makes the kPayloadTooLarge path reachable.
#include "tollgate/wire/sse_parser.hpp"

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstdio>
#include <algorithm>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace {

using tollgate::wire::SseEvent;
using tollgate::wire::SseParser;

constexpr std::size_t kMaxEventBytes = 512;

struct Outcome {
  std::vector<SseEvent> events;
  bool failed = false;
  std::optional<std::uint64_t> retry_ms;
};

void Check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "sse_parser_fuzz: %s\n", what);
    std::abort();
  }
}

Outcome Parse(std::string_view input, bool sliced) {
  Outcome out;
  SseParser parser(kMaxEventBytes);
  auto on_event = [&](const SseEvent& e) {
    Check(e.type.find_first_of("\r\n") == std::string::npos, "event type holds a line break");
    Check(e.data.find('\r') == std::string::npos, "event data holds a CR");
    Check(e.last_event_id.find('\0') == std::string::npos, "event id holds NUL");
    Check(e.data.size() <= kMaxEventBytes, "event data over the cap");
    out.events.push_back(e);
    return true;
  };
  std::size_t pos = 0;
  std::size_t k = 0;
  while (pos < input.size() || (!sliced && pos == 0)) {
    std::size_t n = input.size() - pos;
    if (sliced) {
      n = std::min<std::size_t>(n, 1 + static_cast<unsigned char>(input[k++ % input.size()]) % 16);
    }
    auto r = parser.Feed(input.substr(pos, n), on_event);
    pos += n;
    if (!r) {
      Check(r.error().code == tollgate::ErrorCode::kPayloadTooLarge, "error other than kPayloadTooLarge");
      out.failed = true;
      // A poisoned parser keeps failing without events.
      const std::size_t before = out.events.size();
      Check(!parser.Feed("data: x\n\n", on_event), "poisoned parser accepted input");
      Check(out.events.size() == before, "poisoned parser dispatched");
      break;
    }
    Check(parser.buffered_bytes() <= kMaxEventBytes + 3, "parser holds more than the cap");
    if (input.empty()) break;
  }
  out.retry_ms = parser.retry_ms();
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  const Outcome whole = Parse(input, false);
  const Outcome sliced = Parse(input, true);
  Check(whole.failed == sliced.failed, "slicing changed the error");
  Check(whole.events.size() == sliced.events.size(), "slicing changed the number of events");
  for (std::size_t i = 0; i < whole.events.size(); ++i) {
    Check(whole.events[i].type == sliced.events[i].type, "slicing changed an event type");
    Check(whole.events[i].data == sliced.events[i].data, "slicing changed event data");
    Check(whole.events[i].last_event_id == sliced.events[i].last_event_id, "slicing changed an event id");
  }
  if (!whole.failed) Check(whole.retry_ms == sliced.retry_ms, "slicing changed retry");
  return 0;
}
