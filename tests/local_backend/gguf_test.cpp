#include "tollgate/local_backend/gguf.hpp"

#include "test_model.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>

namespace tollgate::local_backend {
namespace {

using testing::ModelPath;
using testing::Q8ModelPath;

using testing::ReadModelFile;
using testing::TempFile;

TEST(GgufFile, ReadsHeaderAndMetadataOfRealModel) {
  auto file = GgufFile::Open(ModelPath());
  ASSERT_TRUE(file) << file.error().message << testing::ModelHint();
  const GgufFile& f = **file;
  EXPECT_EQ(f.version(), 3u);
  EXPECT_EQ(f.alignment(), 32u);
  EXPECT_EQ(f.metadata().size(), 23u);
  EXPECT_EQ(f.GetString("general.architecture").value(), "llama");
  EXPECT_EQ(f.GetString("general.name").value(), "stories260K");
  EXPECT_EQ(f.GetInt("llama.embedding_length").value(), 64);
  EXPECT_EQ(f.GetInt("llama.context_length").value(), 512);
  EXPECT_EQ(f.GetInt("llama.attention.head_count_kv").value(), 4);
  EXPECT_FLOAT_EQ(static_cast<float>(f.GetFloat("llama.attention.layer_norm_rms_epsilon").value()), 1e-5f);
  EXPECT_DOUBLE_EQ(f.GetFloat("llama.rope.freq_base").value(), 10000.0);
  EXPECT_TRUE(f.GetBool("tokenizer.ggml.add_bos_token").value());
  EXPECT_FALSE(f.GetBool("tokenizer.ggml.add_eos_token").value());
  EXPECT_EQ(f.Find("llama.vocab_size")->type, GgufType::kUint32);

  const auto tokens = f.GetStringArray("tokenizer.ggml.tokens").value();
  ASSERT_EQ(tokens.size(), 512u);
  EXPECT_EQ(tokens[0], "<unk>");
  EXPECT_EQ(tokens[1], "<s>");
  EXPECT_EQ(tokens[2], "</s>");
  EXPECT_EQ(tokens[3], "<0x00>");
  EXPECT_EQ(tokens[258], "<0xFF>");
  EXPECT_EQ(f.GetFloatArray("tokenizer.ggml.scores").value().size(), 512u);
  const auto types = f.GetIntArray("tokenizer.ggml.token_type").value();
  ASSERT_EQ(types.size(), 512u);
  EXPECT_EQ(types[0], 2);
  EXPECT_EQ(types[1], 3);
  EXPECT_EQ(types[3], 6);
  EXPECT_EQ(types[300], 1);
}

TEST(GgufFile, TypedAccessorsReportAbsentAndMistypedKeys) {
  auto file = GgufFile::Open(ModelPath());
  ASSERT_TRUE(file) << file.error().message << testing::ModelHint();
  const GgufFile& f = **file;
  EXPECT_EQ(f.GetInt("no.such.key").error().code, ErrorCode::kNotFound);
  EXPECT_EQ(f.GetString("llama.block_count").error().code, ErrorCode::kInvalidArgument);
  EXPECT_EQ(f.GetInt("general.name").error().code, ErrorCode::kInvalidArgument);
  EXPECT_EQ(f.GetStringArray("tokenizer.ggml.scores").error().code, ErrorCode::kInvalidArgument);
  EXPECT_EQ(f.GetFloatArray("tokenizer.ggml.tokens").error().code, ErrorCode::kInvalidArgument);
  EXPECT_EQ(f.Find("nope"), nullptr);
}

TEST(GgufFile, ListsTensorsWithShapesTypesAndData) {
  auto file = GgufFile::Open(ModelPath());
  ASSERT_TRUE(file) << file.error().message << testing::ModelHint();
  const GgufFile& f = **file;
  ASSERT_EQ(f.tensors().size(), 48u);  // token_embd + 5 x 9 + output_norm + output
  const GgufTensorInfo* embd = f.FindTensor("token_embd.weight");
  ASSERT_NE(embd, nullptr);
  EXPECT_EQ(embd->ne, (std::vector<int64_t>{64, 512}));
  EXPECT_EQ(embd->type, GgmlType::kF32);
  EXPECT_EQ(embd->size_bytes, 64u * 512u * 4u);
  EXPECT_EQ(embd->offset % 32, 0u);
  const GgufTensorInfo* down = f.FindTensor("blk.4.ffn_down.weight");
  ASSERT_NE(down, nullptr);
  EXPECT_EQ(down->ne, (std::vector<int64_t>{172, 64}));
  const GgufTensorInfo* norm = f.FindTensor("output_norm.weight");
  ASSERT_NE(norm, nullptr);
  EXPECT_EQ(norm->ne, (std::vector<int64_t>{64}));
  EXPECT_EQ(f.FindTensor("blk.5.attn_q.weight"), nullptr);

  const auto bytes = f.TensorData(*embd);
  ASSERT_EQ(bytes.size(), embd->size_bytes);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(bytes.data()) % 32, 0u);
  const std::vector<float> values = f.ToF32(*embd).value();
  float first;
  std::memcpy(&first, bytes.data(), 4);
  EXPECT_EQ(values[0], first);
  // The shared classifier is a copy of the embedding table (README).
  const GgufTensorInfo* out = f.FindTensor("output.weight");
  ASSERT_NE(out, nullptr);
  EXPECT_EQ(f.ToF32(*out).value(), values);
}

TEST(GgufFile, DequantisesQ8_0AndF16CloseToF32) {
  auto f32 = GgufFile::Open(ModelPath());
  auto q8 = GgufFile::Open(Q8ModelPath());
  ASSERT_TRUE(f32) << f32.error().message << testing::ModelHint();
  ASSERT_TRUE(q8) << q8.error().message << testing::ModelHint();
  const GgufTensorInfo* embd = (*q8)->FindTensor("token_embd.weight");
  const GgufTensorInfo* down = (*q8)->FindTensor("blk.0.ffn_down.weight");
  ASSERT_NE(embd, nullptr);
  ASSERT_NE(down, nullptr);
  EXPECT_EQ(embd->type, GgmlType::kQ8_0);
  EXPECT_EQ(embd->size_bytes, 512u * 2u * 34u);
  EXPECT_EQ(down->type, GgmlType::kF16);
  for (const auto* info : {embd, down}) {
    const auto approx = (*q8)->ToF32(*info).value();
    const auto exact = (*f32)->ToF32(*(*f32)->FindTensor(info->name)).value();
    ASSERT_EQ(approx.size(), exact.size());
    // Q8_0 error is at most half a step of max|x|/127 per 32-block; the
    // weights here are below 1 in magnitude. F16 is far tighter.
    const float tolerance = info->type == GgmlType::kQ8_0 ? 0.02f : 2e-3f;
    for (size_t i = 0; i < exact.size(); ++i) ASSERT_NEAR(approx[i], exact[i], tolerance) << info->name << " " << i;
  }
  const GgufTensorInfo* norm = (*q8)->FindTensor("blk.0.attn_norm.weight");
  ASSERT_NE(norm, nullptr);
  EXPECT_EQ(norm->type, GgmlType::kF32);
}

TEST(GgufFile, HalfToFloatIsExact) {
  EXPECT_EQ(HalfToFloat(0x3C00), 1.0f);
  EXPECT_EQ(HalfToFloat(0xC000), -2.0f);
  EXPECT_EQ(HalfToFloat(0x0001), std::ldexp(1.0f, -24));  // smallest subnormal
  EXPECT_EQ(HalfToFloat(0x7BFF), 65504.0f);
  EXPECT_TRUE(std::isinf(HalfToFloat(0x7C00)));
  EXPECT_TRUE(std::isnan(HalfToFloat(0x7E00)));
}

TEST(GgufFile, TruncatedCopiesGiveErrorsNotCrashes) {
  std::vector<char> bytes;
  ASSERT_TRUE(ReadModelFile(ModelPath(), bytes));
  ASSERT_EQ(bytes.size(), 1185504u);
  // Cut inside the header, the metadata (token strings), the tensor infos and the data.
  for (size_t size : {size_t{0}, size_t{3}, size_t{10}, size_t{23}, size_t{30}, size_t{100}, size_t{5000},
                      size_t{9000}, size_t{12000}, bytes.size() / 2, bytes.size() - 1}) {
    TempFile tmp(std::vector<char>(bytes.begin(), bytes.begin() + static_cast<std::ptrdiff_t>(size)));
    auto file = GgufFile::Open(tmp.path());
    ASSERT_FALSE(file) << "size " << size;
    EXPECT_EQ(file.error().code, ErrorCode::kInvalidArgument);
    EXPECT_FALSE(file.error().message.empty());
  }
  TempFile whole(bytes);
  EXPECT_TRUE(GgufFile::Open(whole.path()));
}

TEST(GgufFile, CorruptFieldsGiveErrors) {
  std::vector<char> bytes;
  ASSERT_TRUE(ReadModelFile(ModelPath(), bytes));
  // The errors below must come from the corruption, not from a bad original.
  auto pristine = GgufFile::Open(ModelPath());
  ASSERT_TRUE(pristine) << pristine.error().message << testing::ModelHint();
  ASSERT_GE(bytes.size(), 32u);  // the fields patched below
  {
    auto bad = bytes;
    bad[0] = 'X';
    TempFile tmp(bad);
    auto file = GgufFile::Open(tmp.path());
    ASSERT_FALSE(file);
    EXPECT_NE(file.error().message.find("magic"), std::string::npos);
  }
  {
    auto bad = bytes;
    const uint32_t version = 4;
    std::memcpy(bad.data() + 4, &version, 4);
    TempFile tmp(bad);
    auto file = GgufFile::Open(tmp.path());
    ASSERT_FALSE(file);
    EXPECT_NE(file.error().message.find("version"), std::string::npos);
  }
  {
    auto bad = bytes;  // first key length -> huge
    const uint64_t len = uint64_t{1} << 60;
    std::memcpy(bad.data() + 24, &len, 8);
    TempFile tmp(bad);
    EXPECT_FALSE(GgufFile::Open(tmp.path()));
  }
  {
    auto bad = bytes;  // metadata count -> huge
    const uint64_t count = uint64_t{1} << 40;
    std::memcpy(bad.data() + 16, &count, 8);
    TempFile tmp(bad);
    EXPECT_FALSE(GgufFile::Open(tmp.path()));
  }
  EXPECT_EQ(GgufFile::Open("/nonexistent/model.gguf").error().code, ErrorCode::kInvalidArgument);
}

TEST(GgufFile, RandomByteFlipsNeverCrash) {
  std::vector<char> bytes;
  ASSERT_TRUE(ReadModelFile(ModelPath(), bytes));
  auto pristine = GgufFile::Open(ModelPath());
  ASSERT_TRUE(pristine) << pristine.error().message << testing::ModelHint();
  ASSERT_GE(bytes.size(), 12000u);  // the region corrupted below
  uint64_t state = 12345;
  for (int round = 0; round < 200; ++round) {
    auto bad = bytes;
    // Corrupt the header/metadata/tensor-info region (the first 12 KiB).
    for (int k = 0; k < 4; ++k) {
      state = state * 6364136223846793005ull + 1442695040888963407ull;
      bad[(state >> 33) % 12000] = static_cast<char>(state >> 24);
    }
    TempFile tmp(bad);
    auto file = GgufFile::Open(tmp.path());  // must not crash; either outcome is fine
    if (!file) {
      EXPECT_EQ(file.error().code, ErrorCode::kInvalidArgument);
    }
  }
}

}  // namespace
}  // namespace tollgate::local_backend
