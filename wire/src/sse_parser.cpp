#include "tollgate/wire/sse_parser.hpp"

#include <utility>

namespace tollgate::wire {
namespace {

constexpr std::string_view kBom = "\xEF\xBB\xBF";

bool AllAsciiDigits(std::string_view s) {
  if (s.empty()) return false;
  for (char c : s) {
    if (c < '0' || c > '9') return false;
  }
  return true;
}

}  // namespace

SseParser::SseParser(std::size_t max_event_bytes) : max_event_bytes_(max_event_bytes) {}

std::size_t SseParser::buffered_bytes() const {
  return line_.size() + data_.size() + event_type_.size() + last_event_id_.size() +
         bom_prefix_.size();
}

Error SseParser::TooLarge() {
  failed_ = true;
  line_.clear();
  data_.clear();
  return Error{ErrorCode::kPayloadTooLarge,
               "server-sent event exceeds " + std::to_string(max_event_bytes_) + " bytes",
               {},
               {}};
}

Result<void> SseParser::Feed(std::string_view bytes, const EventCallback& on_event) {
  if (failed_) {
    return Error{ErrorCode::kPayloadTooLarge,
                 "server-sent event exceeds " + std::to_string(max_event_bytes_) + " bytes",
                 {},
                 {}};
  }
  if (!bom_checked_) {
    // The BOM may itself arrive split across feeds, so hold back a matching
    // prefix until it either completes or stops matching.
    bool mismatch = false;
    while (!bytes.empty() && bom_prefix_.size() < kBom.size()) {
      if (bytes.front() != kBom[bom_prefix_.size()]) {
        mismatch = true;
        break;
      }
      bom_prefix_.push_back(bytes.front());
      bytes.remove_prefix(1);
    }
    if (bom_prefix_.size() == kBom.size()) {
      bom_checked_ = true;
      bom_prefix_.clear();
    } else if (mismatch) {
      bom_checked_ = true;
      std::string held = std::move(bom_prefix_);
      bom_prefix_.clear();
      if (!held.empty()) {
        auto r = FeedBody(held, on_event);
        if (!r) return r;
      }
    } else {
      return {};  // everything so far is a BOM prefix
    }
  }
  return FeedBody(bytes, on_event);
}

Result<void> SseParser::FeedBody(std::string_view bytes, const EventCallback& on_event) {
  std::size_t i = 0;
  while (i < bytes.size()) {
    if (last_was_cr_) {
      // CRLF split across feeds (or across iterations): the LF belongs to the
      // line ending we already processed.
      last_was_cr_ = false;
      if (bytes[i] == '\n') {
        ++i;
        continue;
      }
    }
    const std::size_t end = bytes.find_first_of("\r\n", i);
    const std::size_t pending =
        data_.size() + event_type_.size() + last_event_id_.size() + line_.size();
    if (end == std::string_view::npos) {
      if (pending + (bytes.size() - i) > max_event_bytes_) return TooLarge();
      line_.append(bytes.substr(i));
      break;
    }
    if (pending + (end - i) > max_event_bytes_) return TooLarge();
    std::string_view line;
    if (line_.empty()) {
      line = bytes.substr(i, end - i);  // whole line in this slice: no copy
    } else {
      line_.append(bytes.substr(i, end - i));
      line = line_;
    }
    last_was_cr_ = bytes[end] == '\r';
    i = end + 1;
    const Step step = ProcessLine(line, on_event);
    line_.clear();
    if (step == Step::kTooLarge) return TooLarge();
    if (step == Step::kStop) return {};
  }
  return {};
}

SseParser::Step SseParser::ProcessLine(std::string_view line, const EventCallback& on_event) {
  if (line.empty()) return Dispatch(on_event);
  if (line.front() == ':') return Step::kContinue;  // comment

  std::string_view field = line;
  std::string_view value;
  if (const auto colon = line.find(':'); colon != std::string_view::npos) {
    field = line.substr(0, colon);
    value = line.substr(colon + 1);
    if (!value.empty() && value.front() == ' ') value.remove_prefix(1);
  }

  if (field == "data") {
    if (data_.size() + event_type_.size() + last_event_id_.size() + value.size() + 1 >
        max_event_bytes_) {
      return Step::kTooLarge;
    }
    data_.append(value);
    data_.push_back('\n');
  } else if (field == "event") {
    event_type_.assign(value);
  } else if (field == "id") {
    if (value.find('\0') == std::string_view::npos) last_event_id_.assign(value);
  } else if (field == "retry") {
    // 19 digits always fit in uint64_t; longer values are ignored like junk.
    if (AllAsciiDigits(value) && value.size() <= 19) {
      std::uint64_t ms = 0;
      for (char c : value) ms = ms * 10 + static_cast<std::uint64_t>(c - '0');
      retry_ms_ = ms;
    }
  }
  // Any other field name is ignored (spec).
  return Step::kContinue;
}

SseParser::Step SseParser::Dispatch(const EventCallback& on_event) {
  if (data_.empty()) {
    event_type_.clear();
    return Step::kContinue;
  }
  data_.pop_back();  // the '\n' after the last data line
  event_.type = event_type_.empty() ? std::string("message") : event_type_;
  event_.last_event_id = last_event_id_;
  event_.data.swap(data_);  // reuse capacity on both sides
  data_.clear();
  event_type_.clear();
  const bool keep_going = on_event(event_);
  return keep_going ? Step::kContinue : Step::kStop;
}

}  // namespace tollgate::wire
