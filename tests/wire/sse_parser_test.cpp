#include "tollgate/wire/sse_parser.hpp"

#include <gtest/gtest.h>

#include <string>
#include <tuple>
#include <vector>

namespace tollgate::wire {
namespace {

using namespace std::string_literals;
using Events = std::vector<std::tuple<std::string, std::string, std::string>>;  // type, data, id

// A realistic OpenAI chat stream (chat.completion.chunk objects, usage chunk,
// [DONE]) with an OpenRouter keep-alive comment and raw multi-byte UTF-8
// ("héllo 🙂": 2-byte é, 4-byte emoji).
std::string OpenAiStream(std::string_view eol) {
  const std::vector<std::string> lines = {
      ": OPENROUTER PROCESSING",
      "",
      R"(data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"gpt-4o","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}],"usage":null})",
      "",
      R"(data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"gpt-4o","choices":[{"index":0,"delta":{"content":"héllo 🙂"},"finish_reason":null}],"usage":null})",
      "",
      R"(data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"gpt-4o","choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"usage":null})",
      "",
      R"(data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"gpt-4o","choices":[],"usage":{"prompt_tokens":9,"completion_tokens":3,"total_tokens":12}})",
      "",
      "data: [DONE]",
      "",
  };
  std::string out;
  for (const auto& l : lines) {
    out += l;
    out += eol;
  }
  return out;
}

Result<void> FeedAll(SseParser& parser, const std::vector<std::string_view>& slices,
                     Events& events) {
  for (auto slice : slices) {
    auto r = parser.Feed(slice, [&](const SseEvent& e) {
      events.emplace_back(e.type, e.data, e.last_event_id);
      return true;
    });
    if (!r) return r;
  }
  return {};
}

Events ParseWhole(std::string_view stream) {
  SseParser parser;
  Events events;
  EXPECT_TRUE(FeedAll(parser, {stream}, events));
  return events;
}

TEST(SseParser, OpenAiStreamYieldsOneEventPerChunk) {
  const Events events = ParseWhole(OpenAiStream("\n"));
  ASSERT_EQ(events.size(), 5u);
  EXPECT_EQ(std::get<0>(events[0]), "message");
  EXPECT_NE(std::get<1>(events[1]).find("héllo 🙂"), std::string::npos);
  EXPECT_EQ(std::get<1>(events[4]), "[DONE]");
}

TEST(SseParser, SplitAtEveryByteBoundaryYieldsSameEvents) {
  for (std::string_view eol : {"\n", "\r\n", "\r"}) {
    const std::string stream = OpenAiStream(eol);
    const Events expected = ParseWhole(stream);
    ASSERT_EQ(expected.size(), 5u);
    EXPECT_EQ(expected, ParseWhole(OpenAiStream("\n")));  // line endings don't matter
    for (std::size_t cut = 0; cut <= stream.size(); ++cut) {
      SseParser parser;
      Events events;
      const std::string_view s = stream;
      ASSERT_TRUE(FeedAll(parser, {s.substr(0, cut), s.substr(cut)}, events));
      ASSERT_EQ(events, expected) << "cut at byte " << cut << " eol size " << eol.size();
    }
  }
}

TEST(SseParser, ByteByByteYieldsSameEvents) {
  for (std::string_view eol : {"\n", "\r\n", "\r"}) {
    const std::string stream = OpenAiStream(eol);
    SseParser parser;
    Events events;
    std::vector<std::string_view> bytes;
    for (std::size_t i = 0; i < stream.size(); ++i) bytes.push_back(std::string_view(stream).substr(i, 1));
    ASSERT_TRUE(FeedAll(parser, bytes, events));
    EXPECT_EQ(events, ParseWhole(stream));
  }
}

TEST(SseParser, MultiByteCharacterSplitAcrossFeedsIsReassembled) {
  const std::string text = "data: héllo 🙂\n\n";
  const std::size_t emoji = text.find("🙂");
  for (std::size_t cut = emoji + 1; cut < emoji + 4; ++cut) {  // inside the 4-byte emoji
    SseParser parser;
    Events events;
    ASSERT_TRUE(FeedAll(parser, {std::string_view(text).substr(0, cut), std::string_view(text).substr(cut)},
                        events));
    ASSERT_EQ(events.size(), 1u);
    EXPECT_EQ(std::get<1>(events[0]), "héllo 🙂");
  }
}

TEST(SseParser, CrLfSplitAcrossFeedsIsOneLineEnding) {
  SseParser parser;
  Events events;
  ASSERT_TRUE(FeedAll(parser, {"data: a\r", "\n", "data: b\r", "\n\r", "\n"}, events));
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(std::get<1>(events[0]), "a\nb");
}

TEST(SseParser, LoneCrEndsALine) {
  SseParser parser;
  Events events;
  ASSERT_TRUE(FeedAll(parser, {"data: a\r\rdata: b\r", "\r"}, events));
  ASSERT_EQ(events.size(), 2u);
  EXPECT_EQ(std::get<1>(events[0]), "a");
  EXPECT_EQ(std::get<1>(events[1]), "b");
}

TEST(SseParser, CommentsAreSkipped) {
  const Events events =
      ParseWhole(": OPENROUTER PROCESSING\n\n: another\ndata: x\n: inside an event\n\n:\n\n");
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(std::get<1>(events[0]), "x");
}

TEST(SseParser, MultipleDataLinesAreJoinedWithNewline) {
  const Events events = ParseWhole("data: first\ndata:second\ndata:  third\n\n");
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(std::get<1>(events[0]), "first\nsecond\n third");  // only one space removed
}

TEST(SseParser, EventAndIdFields) {
  const Events events = ParseWhole(
      "event: message_start\nid: 7\ndata: {}\n\n"
      "data: second\n\n"  // type resets, id persists
      "id: bad\0id\ndata: third\n\n"
      "id\ndata: fourth\n\n"s);
  ASSERT_EQ(events.size(), 4u);
  EXPECT_EQ(events[0], std::make_tuple("message_start"s, "{}"s, "7"s));
  EXPECT_EQ(events[1], std::make_tuple("message"s, "second"s, "7"s));
  EXPECT_EQ(events[2], std::make_tuple("message"s, "third"s, "7"s));  // NUL: ignored
  EXPECT_EQ(events[3], std::make_tuple("message"s, "fourth"s, ""s));  // empty id resets
}

TEST(SseParser, EventWithoutDataIsNotDispatched) {
  const Events events = ParseWhole("event: ping\n\nid: 1\n\nretry: 10\n\ndata: x\n\n");
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(std::get<0>(events[0]), "message");  // `ping` did not leak into the next event
}

TEST(SseParser, EmptyDataFieldIsDispatched) {
  const Events events = ParseWhole("data\n\ndata:\n\n");
  ASSERT_EQ(events.size(), 2u);
  EXPECT_EQ(std::get<1>(events[0]), "");
  EXPECT_EQ(std::get<1>(events[1]), "");
}

TEST(SseParser, RetryFieldAcceptsDigitsOnly) {
  SseParser parser;
  Events events;
  ASSERT_TRUE(FeedAll(parser, {"retry: 1500\n", "retry: 12x\n\n"}, events));
  EXPECT_EQ(parser.retry_ms(), 1500u);
}

TEST(SseParser, LeadingBomIsSkippedEvenWhenSplit) {
  SseParser parser;
  Events events;
  ASSERT_TRUE(FeedAll(parser, {"\xEF", "\xBB", "\xBF" "data: x\n\n"}, events));
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(std::get<1>(events[0]), "x");

  // Not a BOM: the bytes are kept.
  SseParser other;
  Events kept;
  ASSERT_TRUE(FeedAll(other, {"\xEF", "data: x\n\n"}, kept));
  EXPECT_TRUE(kept.empty());  // "\xEF" + "data" is an unknown field name
}

TEST(SseParser, IncompleteEventIsNotDispatched) {
  const Events events = ParseWhole("data: complete\n\ndata: cut off\n");
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(std::get<1>(events[0]), "complete");
}

TEST(SseParser, OversizedEventIsAnErrorAndPoisonsTheParser) {
  SseParser parser(64);
  Events events;
  auto r = FeedAll(parser, {"data: " + std::string(40, 'a') + "\n", "data: " + std::string(40, 'b') + "\n\n"},
                   events);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, ErrorCode::kPayloadTooLarge);
  EXPECT_TRUE(events.empty());
  EXPECT_FALSE(parser.Feed("data: x\n\n", [](const SseEvent&) { return true; }));

  SseParser lines(64);  // one endless line (no terminator yet) also counts
  EXPECT_FALSE(lines.Feed(std::string(100, 'x'), [](const SseEvent&) { return true; }));
}

TEST(SseParser, EventsUnderTheLimitPassRepeatedly) {
  SseParser parser(64);
  Events events;
  for (int i = 0; i < 100; ++i) {
    ASSERT_TRUE(FeedAll(parser, {"data: " + std::string(50, 'a') + "\n\n"}, events));
  }
  EXPECT_EQ(events.size(), 100u);
}

TEST(SseParser, CallbackCanStopParsing) {
  SseParser parser;
  int calls = 0;
  ASSERT_TRUE(parser.Feed("data: 1\n\ndata: 2\n\n", [&](const SseEvent&) {
    ++calls;
    return false;
  }));
  EXPECT_EQ(calls, 1);
}

}  // namespace
}  // namespace tollgate::wire
