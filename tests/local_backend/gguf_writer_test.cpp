// GgufWriter -> GgufFile round trips: every metadata type, tensors of every
// writable type and odd shapes, alignment, errors.
#include "tollgate/local_backend/gguf_writer.hpp"

#include "tollgate/local_backend/gguf.hpp"
#include "tollgate/local_backend/quant.hpp"

#include <gtest/gtest.h>

#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <vector>

namespace tollgate::local_backend {
namespace {

class GgufWriterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("gguf_writer_test_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string Path(const std::string& name) const { return (dir_ / name).string(); }

  std::filesystem::path dir_;
};

std::vector<float> RandomFloats(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> v(n);
  for (float& x : v) x = normal(rng);
  return v;
}

std::vector<float> QuantDequant(GgmlType type, const std::vector<float>& x) {
  const auto n = static_cast<int64_t>(x.size());
  std::vector<std::byte> q(static_cast<size_t>(RowBytes(type, n)));
  QuantizeRow(type, x.data(), q.data(), n);
  std::vector<float> y(x.size());
  DequantizeRow(type, q.data(), y.data(), n);
  return y;
}

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

TEST_F(GgufWriterTest, MetadataOfEveryTypeRoundTrips) {
  GgufWriter w;
  w.SetUint8("t.u8", 250);
  w.SetInt8("t.i8", -120);
  w.SetUint16("t.u16", 65000);
  w.SetInt16("t.i16", -32000);
  w.SetUint32("t.u32", 4000000000u);
  w.SetInt32("t.i32", -2000000000);
  w.SetUint64("t.u64", 18000000000000000000ull);
  w.SetInt64("t.i64", -9000000000000000000ll);
  w.SetFloat32("t.f32", 1.5f);
  w.SetFloat64("t.f64", 1e-300);
  w.SetBool("t.bool", true);
  w.SetString("t.str", "héllo\n\0x");
  w.SetString("t.empty", "");
  const std::vector<std::string> strings = {"a", "", "日本語", "<|im_end|>"};
  w.SetStringArray("t.strs", strings);
  const std::vector<int32_t> ints = {1, -2, 2147483647};
  w.SetInt32Array("t.i32s", ints);
  const std::vector<int64_t> longs = {-1, 1ll << 40};
  w.SetInt64Array("t.i64s", longs);
  const std::vector<uint32_t> uints = {7, 4000000000u};
  w.SetUint32Array("t.u32s", uints);
  const std::vector<float> floats = {0.25f, -3.0f, 1e-7f};
  w.SetFloat32Array("t.f32s", floats);
  const bool bools[] = {true, false, true};
  w.SetBoolArray("t.bools", bools);
  w.SetFloat32Array("t.empty_arr", std::span<const float>());
  // Nested array through SetValue.
  GgufValue inner{GgufType::kArray, GgufType::kUint16,
                  std::vector<GgufValue>{{GgufType::kUint16, GgufType::kUint8, uint64_t{3}}}};
  w.SetValue("t.nested", GgufValue{GgufType::kArray, GgufType::kArray, std::vector<GgufValue>{inner, inner}});
  w.SetUint32("t.replaced", 1);
  w.SetUint32("t.replaced", 2);
  ASSERT_TRUE(w.Remove("t.u8") && !w.Remove("t.u8"));
  w.SetUint8("t.u8", 250);
  ASSERT_TRUE(w.WriteFile(Path("meta.gguf")));

  auto f = GgufFile::Open(Path("meta.gguf"));
  ASSERT_TRUE(f) << f.error().message;
  const GgufFile& g = **f;
  EXPECT_EQ(g.version(), 3u);
  EXPECT_EQ(g.alignment(), 32u);
  EXPECT_TRUE(g.tensors().empty());
  EXPECT_EQ(g.metadata().size(), 22u);
  auto type_of = [&](const char* k) { return g.Find(k)->type; };
  EXPECT_EQ(type_of("t.u8"), GgufType::kUint8);
  EXPECT_EQ(type_of("t.i8"), GgufType::kInt8);
  EXPECT_EQ(type_of("t.u16"), GgufType::kUint16);
  EXPECT_EQ(type_of("t.i16"), GgufType::kInt16);
  EXPECT_EQ(type_of("t.u32"), GgufType::kUint32);
  EXPECT_EQ(type_of("t.i32"), GgufType::kInt32);
  EXPECT_EQ(type_of("t.u64"), GgufType::kUint64);
  EXPECT_EQ(type_of("t.i64"), GgufType::kInt64);
  EXPECT_EQ(type_of("t.f32"), GgufType::kFloat32);
  EXPECT_EQ(type_of("t.f64"), GgufType::kFloat64);
  EXPECT_EQ(type_of("t.bool"), GgufType::kBool);
  EXPECT_EQ(*g.GetInt("t.u8"), 250);
  EXPECT_EQ(*g.GetInt("t.i8"), -120);
  EXPECT_EQ(*g.GetInt("t.u16"), 65000);
  EXPECT_EQ(*g.GetInt("t.i16"), -32000);
  EXPECT_EQ(*g.GetInt("t.u32"), 4000000000ll);
  EXPECT_EQ(*g.GetInt("t.i32"), -2000000000);
  EXPECT_EQ(std::get<uint64_t>(g.Find("t.u64")->data), 18000000000000000000ull);
  EXPECT_EQ(*g.GetInt("t.i64"), -9000000000000000000ll);
  EXPECT_EQ(*g.GetFloat("t.f32"), 1.5);
  EXPECT_EQ(*g.GetFloat("t.f64"), 1e-300);
  EXPECT_TRUE(*g.GetBool("t.bool"));
  EXPECT_EQ(*g.GetString("t.str"), "héllo\n");  // the literal stops at its NUL
  EXPECT_EQ(*g.GetString("t.empty"), "");
  EXPECT_EQ(*g.GetStringArray("t.strs"), strings);
  EXPECT_EQ(*g.GetIntArray("t.i32s"), (std::vector<int64_t>{1, -2, 2147483647}));
  EXPECT_EQ(g.Find("t.i32s")->array_type, GgufType::kInt32);
  EXPECT_EQ(*g.GetIntArray("t.i64s"), longs);
  EXPECT_EQ(*g.GetIntArray("t.u32s"), (std::vector<int64_t>{7, 4000000000ll}));
  EXPECT_EQ(*g.GetFloatArray("t.f32s"), floats);
  const auto& b = std::get<std::vector<GgufValue>>(g.Find("t.bools")->data);
  ASSERT_EQ(b.size(), 3u);
  EXPECT_TRUE(std::get<bool>(b[0].data));
  EXPECT_FALSE(std::get<bool>(b[1].data));
  EXPECT_TRUE(g.GetFloatArray("t.empty_arr")->empty());
  const GgufValue* nested = g.Find("t.nested");
  ASSERT_EQ(nested->array_type, GgufType::kArray);
  const auto& outer = std::get<std::vector<GgufValue>>(nested->data);
  ASSERT_EQ(outer.size(), 2u);
  EXPECT_EQ(outer[1].array_type, GgufType::kUint16);
  EXPECT_EQ(std::get<uint64_t>(std::get<std::vector<GgufValue>>(outer[1].data)[0].data), 3u);
  EXPECT_EQ(*g.GetInt("t.replaced"), 2);
}

TEST_F(GgufWriterTest, TensorsOfEveryTypeReadBackAsTheirDequantizedData) {
  struct Case { std::string name; std::vector<int64_t> ne; GgmlType type; };
  const std::vector<Case> cases = {
      {"f32.odd", {3, 5}, GgmlType::kF32},           {"f16.seven", {7}, GgmlType::kF16},
      {"bf16.3d", {3, 2, 2}, GgmlType::kBF16},        {"q8_0", {64, 3}, GgmlType::kQ8_0},
      {"q4_0.3d", {32, 1, 3}, GgmlType::kQ4_0},       {"q4_k", {256, 2}, GgmlType::kQ4_K},
      {"q5_k", {512, 1}, GgmlType::kQ5_K},            {"q6_k.4d", {256, 1, 1, 2}, GgmlType::kQ6_K},
      {"q8_k", {256}, GgmlType::kQ8_K},               {"f32.one", {1}, GgmlType::kF32},
  };
  GgufWriter w;
  w.SetString("general.architecture", "test");
  std::vector<std::vector<float>> data;
  for (size_t i = 0; i < cases.size(); ++i) {
    int64_t n = 1;
    for (int64_t d : cases[i].ne) n *= d;
    data.push_back(RandomFloats(static_cast<size_t>(n), i));
    ASSERT_TRUE(w.AddTensor(cases[i].name, cases[i].ne, cases[i].type, data.back())) << cases[i].name;
  }
  // Raw bytes of a type the writer cannot quantize.
  const std::vector<int64_t> i8_ne = {5};
  const std::byte i8_data[5] = {std::byte{1}, std::byte{2}, std::byte{3}, std::byte{4}, std::byte{5}};
  ASSERT_TRUE(w.AddTensorBytes("raw.i8", i8_ne, GgmlType::kI8, i8_data));
  EXPECT_EQ(w.tensor_count(), cases.size() + 1);
  ASSERT_TRUE(w.WriteFile(Path("t.gguf")));

  auto f = GgufFile::Open(Path("t.gguf"));
  ASSERT_TRUE(f) << f.error().message;
  const GgufFile& g = **f;
  ASSERT_EQ(g.tensors().size(), cases.size() + 1);
  for (size_t i = 0; i < cases.size(); ++i) {
    const GgufTensorInfo& t = g.tensors()[i];
    EXPECT_EQ(t.name, cases[i].name);
    EXPECT_EQ(t.ne, cases[i].ne);
    EXPECT_EQ(t.type, cases[i].type);
    EXPECT_EQ(t.offset % 32, 0u);
    auto y = g.ToF32(t);
    ASSERT_TRUE(y) << y.error().message;
    EXPECT_EQ(*y, QuantDequant(cases[i].type, data[i])) << t.name;
  }
  const GgufTensorInfo* raw = g.FindTensor("raw.i8");
  ASSERT_NE(raw, nullptr);
  ASSERT_EQ(raw->size_bytes, 5u);
  EXPECT_EQ(std::memcmp(g.TensorData(*raw).data(), i8_data, 5), 0);
  EXPECT_FALSE(g.ToF32(*raw));  // I8 is not a float type
  // Data starts right after the padded header; the file ends padded too.
  const uint64_t size = std::filesystem::file_size(Path("t.gguf"));
  EXPECT_EQ(size % 32, 0u);
}

TEST_F(GgufWriterTest, HonoursGeneralAlignment) {
  GgufWriter w;
  w.SetUint32("general.alignment", 64);
  const std::vector<int64_t> ne = {3};
  const std::vector<float> v = {1, 2, 3};
  ASSERT_TRUE(w.AddTensor("a", ne, GgmlType::kF32, v));
  ASSERT_TRUE(w.AddTensor("b", ne, GgmlType::kF16, v));
  ASSERT_TRUE(w.WriteFile(Path("a.gguf")));
  auto f = GgufFile::Open(Path("a.gguf"));
  ASSERT_TRUE(f) << f.error().message;
  EXPECT_EQ((*f)->alignment(), 64u);
  EXPECT_EQ((*f)->tensors()[1].offset, 64u);
  EXPECT_EQ(*(*f)->ToF32((*f)->tensors()[1]), v);
  EXPECT_EQ(std::filesystem::file_size(Path("a.gguf")) % 64, 0u);

  GgufWriter bad;
  bad.SetUint32("general.alignment", 48);
  auto r = bad.WriteFile(Path("bad.gguf"));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, ErrorCode::kInvalidArgument);
  GgufWriter wrong_type;
  wrong_type.SetInt32("general.alignment", 64);
  EXPECT_FALSE(wrong_type.WriteFile(Path("bad.gguf")));
  EXPECT_FALSE(std::filesystem::exists(Path("bad.gguf")));
}

TEST_F(GgufWriterTest, RowSourceFilesAreIdenticalWhateverTheThreadCount) {
  auto build = [](GgufWriter& w) {
    for (GgmlType t : {GgmlType::kF32, GgmlType::kQ8_0, GgmlType::kQ4_K}) {
      const std::vector<int64_t> ne = {256, 37};
      ASSERT_TRUE(w.AddTensorRows(GgmlTypeName(t), ne, t, [](int64_t row, std::span<float> out) {
        for (size_t i = 0; i < out.size(); ++i) out[i] = std::sin(static_cast<float>(row * 1000 + i));
      }));
    }
  };
  GgufWriter one, four;
  build(one);
  build(four);
  ASSERT_TRUE(one.WriteFile(Path("1.gguf"), 1));
  ASSERT_TRUE(four.WriteFile(Path("4.gguf"), 4));
  EXPECT_EQ(ReadAll(Path("1.gguf")), ReadAll(Path("4.gguf")));

  auto f = GgufFile::Open(Path("4.gguf"));
  ASSERT_TRUE(f);
  std::vector<float> expected(256 * 37);
  for (int64_t r = 0; r < 37; ++r) {
    for (int64_t i = 0; i < 256; ++i) expected[r * 256 + i] = std::sin(static_cast<float>(r * 1000 + i));
  }
  EXPECT_EQ(*(*f)->ToF32(*(*f)->FindTensor("F32")), expected);
  EXPECT_EQ(*(*f)->ToF32(*(*f)->FindTensor("Q4_K")), QuantDequant(GgmlType::kQ4_K, expected));
}

TEST_F(GgufWriterTest, RejectsBadTensors) {
  GgufWriter w;
  const std::vector<float> v(64, 1.0f);
  const std::vector<int64_t> ok = {64};
  ASSERT_TRUE(w.AddTensor("x", ok, GgmlType::kQ8_0, v));
  auto dup = w.AddTensor("x", ok, GgmlType::kF32, v);
  ASSERT_FALSE(dup);
  EXPECT_NE(dup.error().message.find("duplicate"), std::string::npos);
  const std::vector<int64_t> not_block = {33, 2};
  const std::vector<float> v66(66, 1.0f);
  auto r = w.AddTensor("odd", not_block, GgmlType::kQ8_0, v66);
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find("block size 32"), std::string::npos) << r.error().message;
  EXPECT_FALSE(w.AddTensor("short", ok, GgmlType::kF32, std::span<const float>(v.data(), 63)));
  const std::vector<int64_t> five = {1, 1, 1, 1, 64};
  EXPECT_FALSE(w.AddTensor("5d", five, GgmlType::kF32, v));
  EXPECT_FALSE(w.AddTensor("", ok, GgmlType::kF32, v));
  const std::vector<int64_t> negative = {-64};
  EXPECT_FALSE(w.AddTensor("neg", negative, GgmlType::kF32, v));
  EXPECT_FALSE(w.AddTensor("q8_1", ok, GgmlType::kQ8_1, v));  // no quantizer for Q8_1
  std::vector<std::byte> wrong(10);
  EXPECT_FALSE(w.AddTensorBytes("bytes", ok, GgmlType::kQ8_0, wrong));
  std::vector<std::byte> right(68);
  EXPECT_TRUE(w.AddTensorBytes("bytes", ok, GgmlType::kQ8_0, right));  // the failed name is free again
  EXPECT_EQ(w.tensor_count(), 2u);
}

TEST_F(GgufWriterTest, RejectsInconsistentValuesAndUnwritablePaths) {
  GgufWriter w;
  w.SetValue("k", GgufValue{GgufType::kUint8, GgufType::kUint8, uint64_t{300}});
  auto r = w.WriteFile(Path("v.gguf"));
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find("'k'"), std::string::npos);
  w.SetValue("k", GgufValue{GgufType::kInt32, GgufType::kUint8, std::string("x")});
  EXPECT_FALSE(w.WriteFile(Path("v.gguf")));
  w.SetValue("k", GgufValue{GgufType::kArray, GgufType::kString,
                            std::vector<GgufValue>{{GgufType::kInt32, GgufType::kUint8, int64_t{1}}}});
  EXPECT_FALSE(w.WriteFile(Path("v.gguf")));
  w.SetUint8("k", 1);
  auto missing = w.WriteFile(Path("no/such/dir/v.gguf"));
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error().code, ErrorCode::kInternal);
  EXPECT_TRUE(w.WriteFile(Path("v.gguf")));
}

}  // namespace
}  // namespace tollgate::local_backend
