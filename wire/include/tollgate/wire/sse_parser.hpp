// Incremental Server-Sent Events parser.
//
// Implements the "event stream interpretation" of the WHATWG HTML Living
// Standard, section 9.2.6 "Interpreting an event stream"
// (https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation):
//
//   - lines end in CRLF, LF or CR; a CRLF split across two Feed() calls counts
//     as one line ending;
//   - a line starting with ':' is a comment and is ignored (OpenRouter keeps
//     streams alive with `: OPENROUTER PROCESSING`, WIRE-FORMATS.md 3.4);
//   - `field:value` with one optional space after the colon removed; a line with
//     no colon is a field with an empty value;
//   - `data` lines are appended to the data buffer, joined with '\n';
//     `event` sets the event type; `id` sets the last event id (ignored when the
//     value contains U+0000); `retry` (ASCII digits only) sets the reconnection
//     time; other fields are ignored;
//   - a blank line dispatches the event; an event whose data buffer is empty
//     (no `data` line at all) is not dispatched, but the event type is reset;
//   - one leading UTF-8 BOM (EF BB BF) at the start of the stream is skipped;
//   - an event that has not been terminated by a blank line when the stream ends
//     is discarded (the caller simply stops feeding).
//
// Bytes are opaque: the parser never decodes UTF-8, so a multi-byte character
// split across Feed() calls is reassembled byte for byte. Only CR and LF (which
// never occur inside a multi-byte UTF-8 sequence) are interpreted.
//
// The OpenAI API reference ("Chat Completions > Create > stream", and the
// "chat.completion.chunk" object) sends every chunk as `data: {json}\n\n` and
// ends the stream with `data: [DONE]`; that is one SseEvent per chunk here.
//
// Thread-safety: none; one parser per stream, used by one thread at a time.
#pragma once

#include "tollgate/core/error.hpp"

#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

namespace tollgate::wire {

// One dispatched event.
struct SseEvent {
  std::string type = "message";  // `event` field, "message" when absent
  std::string data;              // `data` lines joined with '\n' (no trailing '\n')
  std::string last_event_id;     // last `id` seen on this stream (persists across events)
};

class SseParser {
 public:
  // Default cap on one event: 1 MiB (bytes of the pending line, data, event
  // type and id together).
  static constexpr std::size_t kDefaultMaxEventBytes = 1 << 20;

  // Called once per dispatched event, in stream order. The reference is valid
  // only during the call. Return false to stop: Feed() then returns at once,
  // leaving the rest of the slice unparsed (the parser is not meant to be fed
  // again after that).
  using EventCallback = std::function<bool(const SseEvent&)>;

  explicit SseParser(std::size_t max_event_bytes = kDefaultMaxEventBytes);

  // Parses `bytes` (any slice of the stream, possibly empty) and calls
  // `on_event` for each event completed by it. Returns an error with code
  // kPayloadTooLarge when one event (or one line, comments included) grows past
  // `max_event_bytes`; the parser is then poisoned and every later Feed()
  // returns the same error without calling `on_event`.
  Result<void> Feed(std::string_view bytes, const EventCallback& on_event);

  // The last valid `retry` value seen, in milliseconds, if any.
  std::optional<std::uint64_t> retry_ms() const { return retry_ms_; }

  // Bytes held for an event not yet dispatched (pending line + buffers).
  std::size_t buffered_bytes() const;

 private:
  enum class Step { kContinue, kStop, kTooLarge };

  Result<void> FeedBody(std::string_view bytes, const EventCallback& on_event);
  // Handles one complete line (without its terminator).
  Step ProcessLine(std::string_view line, const EventCallback& on_event);
  Step Dispatch(const EventCallback& on_event);
  Error TooLarge();

  std::size_t max_event_bytes_;
  std::string line_;               // bytes of the current, unterminated line
  std::string data_;               // data buffer (each data line + '\n')
  std::string event_type_;         // event type buffer
  std::string last_event_id_;      // last event ID buffer (never reset)
  SseEvent event_;                 // reused for dispatch
  std::optional<std::uint64_t> retry_ms_;
  bool last_was_cr_ = false;       // previous byte was CR: skip one LF
  std::string bom_prefix_;         // leading bytes that may still be a BOM
  bool bom_checked_ = false;
  bool failed_ = false;
};

}  // namespace tollgate::wire
