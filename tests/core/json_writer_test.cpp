#include "tollgate/core/json_writer.hpp"
#include "tollgate/core/text.hpp"

#include <boost/json.hpp>
#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <limits>
#include <random>
#include <string>

namespace tollgate {
namespace {

namespace json = boost::json;

json::value Parse(const std::string& text) {
  json::parse_options options;
  options.allow_invalid_utf8 = true;
  std::error_code ec;
  json::value v = json::parse(text, ec, {}, options);
  EXPECT_FALSE(ec) << ec.message() << " in " << text;
  return v;
}

TEST(JsonWriter, WritesNestedContainersWithCommasInPlace) {
  std::string out;
  JsonWriter w(out);
  w.BeginObject();
  w.Key("a").Int(1);
  w.Key("empty").BeginArray();
  w.EndArray();
  w.Key("list").BeginArray();
  w.Int(-9223372036854775807 - 1);
  w.BeginObject();
  w.EndObject();
  w.BeginObject();
  w.Key("x").Null();
  w.Key("y").Bool(true);
  w.EndObject();
  w.String("s");
  w.EndArray();
  w.Key("opt").OptionalString(std::nullopt);
  w.Key("opt_int").OptionalInt(7);
  w.Key("raw").Raw(R"({"k":[1,2]})");
  w.Key("last").Bool(false);
  w.EndObject();
  EXPECT_EQ(out, R"({"a":1,"empty":[],"list":[-9223372036854775808,{},{"x":null,"y":true},"s"],)"
                 R"("opt":null,"opt_int":7,"raw":{"k":[1,2]},"last":false})");
  Parse(out);
}

// Every byte value, at every offset from a word boundary and in runs longer
// than a word, reads back as written (the 8-byte scan and its tail).
TEST(JsonWriter, EveryByteRoundTripsThroughBoostJson) {
  for (int c = 0; c < 256; ++c) {
    for (size_t before = 0; before < 10; ++before) {
      std::string s(before, 'a');
      s.push_back(static_cast<char>(c));
      s += std::string(9, 'b');
      std::string out;
      JsonWriter w(out);
      w.String(s);
      const json::value v = Parse(out);
      ASSERT_TRUE(v.is_string()) << c;
      EXPECT_EQ(std::string(v.as_string()), s) << "byte " << c << " after " << before;
    }
  }
}

TEST(JsonWriter, EscapesAsRfc8259Asks) {
  std::string out;
  JsonWriter w(out);
  w.String(std::string("q\"b\\n\nr\rt\tb\bf\fz\x01\x1f\x7f\xc3\xa9\0", 21));  // ends in a NUL
  EXPECT_EQ(out, "\"q\\\"b\\\\n\\nr\\rt\\tb\\bf\\fz\\u0001\\u001f\x7f\xc3\xa9\\u0000\"");
}

TEST(JsonWriter, RandomStringsMatchBoostsReading) {
  std::mt19937 rng(7);
  for (int i = 0; i < 2000; ++i) {
    std::string s(rng() % 64, '\0');
    for (char& c : s) c = static_cast<char>(rng() % 4 == 0 ? "\"\\\n\x02"[rng() % 4] : 0x20 + rng() % 200);
    std::string out;
    JsonWriter w(out);
    w.BeginArray();
    w.String(s);
    w.String(s);
    w.EndArray();
    const json::value v = Parse(out);
    ASSERT_EQ(v.as_array().size(), 2u);
    EXPECT_EQ(std::string(v.as_array()[1].as_string()), s);
  }
}

TEST(JsonWriter, DoublesReadBackExactlyAndNonFiniteIsNull) {
  for (double d : {0.0, 3.09e-5, 1e300, -2.5, 0.1, 123456789.125}) {
    std::string out;
    JsonWriter w(out);
    w.Double(d);
    EXPECT_EQ(Parse(out).to_number<double>(), d) << out;
  }
  std::string out;
  JsonWriter w(out);
  w.BeginArray();
  w.Double(std::numeric_limits<double>::infinity());
  w.Double(std::nan(""));
  w.EndArray();
  EXPECT_EQ(out, "[null,null]");
}

TEST(FormatUtc, Rfc3339AndPostgresForms) {
  using namespace std::chrono;
  const sys_time<nanoseconds> t = sys_days{2026y / 12 / 5} + 14h + 3min + 9s + 123456789ns;
  EXPECT_EQ(FormatUtc(t, "T", 3, "Z"), "2026-12-05T14:03:09.123Z");
  EXPECT_EQ(FormatUtc(t, " ", 6, "+00"), "2026-12-05 14:03:09.123456+00");
  EXPECT_EQ(FormatUtc(t, "T", 0, "Z"), "2026-12-05T14:03:09Z");
  EXPECT_EQ(FormatUtc(t, "T", 9, "Z"), "2026-12-05T14:03:09.123456789Z");
  // Before the epoch: truncated toward the past, as a calendar reads.
  const sys_time<nanoseconds> before = sys_days{1969y / 12 / 31} + 23h + 59min + 59s + 500ms;
  EXPECT_EQ(FormatUtc(before, "T", 3, "Z"), "1969-12-31T23:59:59.500Z");
  EXPECT_EQ(FormatUtc(sys_days{2024y / 2 / 29}, " ", 6, "+00"), "2024-02-29 00:00:00.000000+00");
}

}  // namespace
}  // namespace tollgate
