#include "tollgate/local_backend/model.hpp"

#include "tollgate/local_backend/sampler.hpp"
#include "test_model.hpp"

#include <gtest/gtest.h>

#include <boost/json.hpp>

#include <cmath>
#include <fstream>
#include <new>
#include <sstream>

namespace tollgate::local_backend {
namespace {

struct Loaded {
  std::shared_ptr<const LlamaModel> model;
  std::optional<Tokenizer> tokenizer;
};

Loaded Load(const std::string& path) {
  Loaded out;
  auto file = GgufFile::Open(path);
  if (!file) ADD_FAILURE() << file.error().message << testing::ModelHint();
  if (!file) return out;
  std::shared_ptr<const GgufFile> shared(std::move(*file));
  auto tok = Tokenizer::FromGguf(*shared);
  if (!tok) ADD_FAILURE() << path << ": " << tok.error().message;
  if (tok) out.tokenizer.emplace(std::move(*tok));
  auto model = LlamaModel::Load(shared);
  if (!model) ADD_FAILURE() << model.error().message;
  if (model) out.model = *model;
  return out;
}

// Greedy generation of `count` tokens after `prompt`, feeding each back.
std::vector<TokenId> GenerateGreedy(LlamaContext& ctx, const std::vector<TokenId>& prompt, size_t count) {
  std::vector<TokenId> out;
  auto logits = ctx.Decode(prompt);
  EXPECT_TRUE(logits);
  while (logits && out.size() < count) {
    out.push_back(Greedy(*logits));
    if (out.size() == count) break;
    const TokenId next[1] = {out.back()};
    logits = ctx.Decode(next);
    EXPECT_TRUE(logits);
  }
  return out;
}

TEST(LlamaModel, ReadsHyperparameters) {
  Loaded m = Load(testing::ModelPath());
  ASSERT_TRUE(m.model);
  const LlamaHparams& hp = m.model->hparams();
  EXPECT_EQ(hp.vocab_size, 512);
  EXPECT_EQ(hp.context_length, 512);
  EXPECT_EQ(hp.embedding_length, 64);
  EXPECT_EQ(hp.block_count, 5);
  EXPECT_EQ(hp.feed_forward_length, 172);
  EXPECT_EQ(hp.head_count, 8);
  EXPECT_EQ(hp.head_count_kv, 4);
  EXPECT_EQ(hp.head_dim, 8);
  EXPECT_EQ(hp.rope_dims, 8);
  EXPECT_FLOAT_EQ(hp.rms_eps, 1e-5f);
  EXPECT_FLOAT_EQ(hp.rope_freq_base, 10000.0f);
  EXPECT_EQ(m.model->layers().size(), 5u);
  EXPECT_EQ(m.model->layers()[0].w_down->rows(), 64);
  EXPECT_EQ(m.model->layers()[0].w_down->cols(), 172);
}

// The acceptance bar: every generated id of all four reference prompts,
// token for token (README "Greedy reference outputs"; run.c == llama.cpp F32).
TEST(LlamaModel, GreedyGenerationReproducesAllReferencePrompts) {
  Loaded m = Load(testing::ModelPath());
  ASSERT_TRUE(m.model);
  ASSERT_TRUE(m.tokenizer);
  auto ctx = LlamaContext::Create(m.model, 0);
  ASSERT_TRUE(ctx);
  const auto refs = testing::LoadReference();
  ASSERT_EQ(refs.size(), 4u);
  for (const auto& ref : refs) {
    // run.c -n 200 prints 200 tokens after BOS: 201 - len(prompt with BOS) are generated.
    ASSERT_EQ(ref.generated_ids.size(), 201 - ref.prompt_ids.size()) << ref.prompt;
    (*ctx)->Reset();
    const std::vector<TokenId> got = GenerateGreedy(**ctx, ref.prompt_ids, ref.generated_ids.size());
    ASSERT_EQ(got.size(), ref.generated_ids.size());
    for (size_t i = 0; i < got.size(); ++i) {
      ASSERT_EQ(got[i], ref.generated_ids[i]) << "prompt \"" << ref.prompt << "\", generated token " << i;
    }
    std::vector<TokenId> all = ref.prompt_ids;
    all.insert(all.end(), got.begin(), got.end());
    EXPECT_EQ(m.tokenizer->Decode(all), ref.text) << ref.prompt;
  }
}

TEST(LlamaModel, BatchedPrefillMatchesTokenByToken) {
  Loaded m = Load(testing::ModelPath());
  ASSERT_TRUE(m.model);
  ASSERT_TRUE(m.tokenizer);
  auto batched = LlamaContext::Create(m.model, 0).value();
  auto single = LlamaContext::Create(m.model, 0).value();
  std::vector<TokenId> prompt = m.tokenizer->Encode(
      "Tom and Lily were friends. They liked to play with their toys and run around the room. One day they saw a "
      "big box.",
      true);
  ASSERT_GT(prompt.size(), 33u);  // spans more than one internal batch
  auto a = batched->Decode(prompt).value();
  std::vector<float> last_batched(a.begin(), a.end());
  std::span<const float> b;
  for (TokenId t : prompt) {
    const TokenId one[1] = {t};
    b = single->Decode(one).value();
  }
  ASSERT_EQ(b.size(), last_batched.size());
  for (size_t i = 0; i < b.size(); ++i) EXPECT_EQ(b[i], last_batched[i]) << i;
  EXPECT_EQ(batched->position(), static_cast<int>(prompt.size()));
}

TEST(LlamaModel, ContextLengthOverrideBoundsTheSequence) {
  Loaded m = Load(testing::ModelPath());
  ASSERT_TRUE(m.model);
  auto ctx = LlamaContext::Create(m.model, 8).value();
  EXPECT_EQ(ctx->context_length(), 8);
  const std::vector<TokenId> five = {1, 403, 407, 261, 378};
  ASSERT_TRUE(ctx->Decode(five));
  auto too_many = ctx->Decode(five);
  ASSERT_FALSE(too_many);
  EXPECT_EQ(too_many.error().code, ErrorCode::kInvalidArgument);
  EXPECT_EQ(ctx->position(), 5);  // nothing was run
  const std::vector<TokenId> bad = {512};
  EXPECT_FALSE(ctx->Decode(bad));
  EXPECT_FALSE(ctx->Decode({}));
  EXPECT_FALSE(LlamaContext::Create(m.model, -1));
}

TEST(LlamaModel, FallsBackToTokenEmbeddingWithoutOutputWeight) {
  // output.weight is a copy of token_embd here (README), so renaming it away
  // must leave the greedy continuation unchanged.
  using namespace std::string_literals;
  const std::string len = "\x0d\0\0\0\0\0\0\0"s;  // gguf_string length 13
  std::vector<char> bytes;
  ASSERT_TRUE(testing::ReadModelFile(testing::ModelPath(), bytes));
  testing::TempFile tmp(testing::Patched(std::move(bytes), len + "output.weight", len + "output.weighx"));
  Loaded m = Load(tmp.path());
  ASSERT_TRUE(m.model);
  EXPECT_EQ(&m.model->output(), &m.model->token_embd());
  EXPECT_TRUE(m.model->hparams().tied_output);
  auto ctx = LlamaContext::Create(m.model, 0).value();
  const auto refs = testing::LoadReference();
  EXPECT_EQ(GenerateGreedy(*ctx, refs[0].prompt_ids, refs[0].generated_ids.size()), refs[0].generated_ids);
}

TEST(LlamaModel, MissingOrMisshapenTensorIsAClearError) {
  std::vector<char> bytes;
  ASSERT_TRUE(testing::ReadModelFile(testing::ModelPath(), bytes));
  {
    testing::TempFile tmp(testing::Patched(bytes, "blk.3.attn_q.weight", "blk.3.attn_q.weighx"));
    auto file = GgufFile::Open(tmp.path());
    ASSERT_TRUE(file);
    auto model = LlamaModel::Load(std::shared_ptr<const GgufFile>(std::move(*file)));
    ASSERT_FALSE(model);
    EXPECT_EQ(model.error().code, ErrorCode::kInvalidArgument);
    EXPECT_NE(model.error().message.find("blk.3.attn_q.weight"), std::string::npos);
  }
  {
    // blk.0.attn_q.weight: n_dims 2, ne [64, 64] -> [64, 32]: in bounds, wrong shape.
    using namespace std::string_literals;
    const std::string dims = "\x02\0\0\0"s + "\x40\0\0\0\0\0\0\0"s;
    testing::TempFile tmp(testing::Patched(bytes, "blk.0.attn_q.weight"s + dims + "\x40"s,
                                           "blk.0.attn_q.weight"s + dims + "\x20"s));
    auto file = GgufFile::Open(tmp.path());
    ASSERT_TRUE(file) << file.error().message;
    auto model = LlamaModel::Load(std::shared_ptr<const GgufFile>(std::move(*file)));
    ASSERT_FALSE(model);
    EXPECT_NE(model.error().message.find("shape [64, 32]"), std::string::npos) << model.error().message;
  }
  {
    using namespace std::string_literals;
    testing::TempFile tmp(testing::Patched(bytes, "\x05\0\0\0\0\0\0\0llama"s, "\x05\0\0\0\0\0\0\0llamb"s));
    auto file = GgufFile::Open(tmp.path());
    ASSERT_TRUE(file);
    auto model = LlamaModel::Load(std::shared_ptr<const GgufFile>(std::move(*file)));
    ASSERT_FALSE(model);
    EXPECT_NE(model.error().message.find("'llamb' is not supported"), std::string::npos);
  }
}

// llama.cpp's greedy ids on stories260K-q8_0.gguf (reference JSON,
// prompts[i].llama_cpp_q8_0.generated_ids).
std::vector<std::vector<TokenId>> LlamaCppQ8Ids() {
  std::ifstream in(testing::ModelDir() + "/stories260K-reference.json");
  std::stringstream buf;
  buf << in.rdbuf();
  std::vector<std::vector<TokenId>> out;
  const boost::json::value root = boost::json::parse(buf.str());
  for (const boost::json::value& p : root.at("prompts").as_array()) {
    std::vector<TokenId> ids;
    for (const auto& id : p.at("llama_cpp_q8_0").at("generated_ids").as_array()) {
      ids.push_back(static_cast<TokenId>(id.to_number<int64_t>()));
    }
    out.push_back(std::move(ids));
  }
  return out;
}

// The Q8_0 matrix products quantize activations exactly as llama.cpp's CPU
// backend does (cpu_kernels.hpp), so on the first two reference prompts every
// one of the 196 and 200 generated ids equals llama.cpp's own Q8_0 output. On
// the other two, llama.cpp's F16 flash attention and F16-rounded inputs to the
// F16 ffn_down tensors round differently and the tiny model's argmax flips
// after 6 and 117 tokens (those two prefixes are checked too).
TEST(LlamaModel, Q8_0ModelReproducesLlamaCppsQ8_0Ids) {
  Loaded m = Load(testing::Q8ModelPath());
  ASSERT_TRUE(m.model);
  const auto refs = testing::LoadReference();
  const auto want = LlamaCppQ8Ids();
  ASSERT_EQ(want.size(), 4u);
  auto ctx = LlamaContext::Create(m.model, 0).value();
  const size_t exact_prefix[4] = {want[0].size(), want[1].size(), 6, 117};
  for (size_t p = 0; p < 4; ++p) {
    ctx->Reset();
    const std::vector<TokenId> got = GenerateGreedy(*ctx, refs[p].prompt_ids, exact_prefix[p]);
    EXPECT_EQ(got, std::vector<TokenId>(want[p].begin(), want[p].begin() + static_cast<ptrdiff_t>(exact_prefix[p])))
        << "prompt \"" << refs[p].prompt << "\"";
  }
}

TEST(LlamaModel, Q8_0ModelLoadsAndStartsLikeTheReference) {
  Loaded m = Load(testing::Q8ModelPath());
  ASSERT_TRUE(m.model);
  auto ctx = LlamaContext::Create(m.model, 0).value();
  // F32 activations on dequantised weights; llama.cpp's own Q8_0 ids diverge
  // from F32 only after 110 tokens for this prompt, so the start must agree.
  const auto refs = testing::LoadReference();
  const std::vector<TokenId> got = GenerateGreedy(*ctx, refs[0].prompt_ids, 20);
  EXPECT_EQ(got, std::vector<TokenId>(refs[0].generated_ids.begin(), refs[0].generated_ids.begin() + 20));
}

// The CPU backend, except that activation memory is "over budget": it throws
// std::bad_alloc as a device backend does when its memory is spent
// (cuda_backend.hpp, "Memory").
class NoActivationMemoryBackend final : public Backend {
 public:
  explicit NoActivationMemoryBackend(std::shared_ptr<Backend> cpu) : cpu_(std::move(cpu)) {}
  std::string Name() const override { return "no-activations " + cpu_->Name(); }
  bool SupportsWeightType(GgmlType type) const override { return cpu_->SupportsWeightType(type); }
  Result<std::unique_ptr<BackendWeight>> PrepareWeight(const WeightData& data) override {
    return cpu_->PrepareWeight(data);
  }
  std::unique_ptr<BackendVector> PrepareVector(std::span<const float> values) override {
    return cpu_->PrepareVector(values);
  }
  std::unique_ptr<ActivationBuffer> AllocActivations(size_t) override { throw std::bad_alloc(); }
  Result<std::unique_ptr<KvPool>> CreateKvPool(const KvPoolShape& shape) override { return cpu_->CreateKvPool(shape); }
  void GetRows(const BackendWeight& table, std::span<const int32_t> ids, ActTensor out) override {
    cpu_->GetRows(table, ids, out);
  }
  void RmsNorm(const ActTensor& x, const BackendVector* weight, float eps, ActTensor out) override {
    cpu_->RmsNorm(x, weight, eps, out);
  }
  void MatMul(const ActTensor& x, std::span<const MatMulTarget> targets) override { cpu_->MatMul(x, targets); }
  void AddBias(ActTensor x, const BackendVector& bias) override { cpu_->AddBias(x, bias); }
  void Rope(ActTensor x, int heads, int head_dim, const RopeTable& table, RopeMode mode) override {
    cpu_->Rope(x, heads, head_dim, table, mode);
  }
  void Attention(int layer, KvPool& pool, const ActTensor& q, const ActTensor& k, const ActTensor& v,
                 std::span<const AttentionSeq> seqs, const AttentionShape& shape, ActTensor out) override {
    cpu_->Attention(layer, pool, q, k, v, seqs, shape, out);
  }
  void SwiGlu(const ActTensor& gate, const ActTensor& up, ActTensor out) override { cpu_->SwiGlu(gate, up, out); }
  void Add(ActTensor x, const ActTensor& y) override { cpu_->Add(x, y); }
  void ReadRows(const ActTensor& x, std::span<float> out) override { cpu_->ReadRows(x, out); }

 private:
  std::shared_ptr<Backend> cpu_;
};

TEST(LlamaRunner, ActivationMemoryBeyondTheBackendsBudgetIsResourceExhausted) {
  auto file = GgufFile::Open(testing::ModelPath());
  ASSERT_TRUE(file) << file.error().message << testing::ModelHint();
  auto cpu = CreateCpuBackend({.threads = 1});
  ASSERT_TRUE(cpu) << cpu.error().message;
  ModelOptions options;
  options.backend = std::make_shared<NoActivationMemoryBackend>(*cpu);
  auto model = LlamaModel::Load(std::shared_ptr<const GgufFile>(std::move(*file)), options);
  ASSERT_TRUE(model) << model.error().message;
  auto runner = LlamaRunner::Create(*model, 64, 8);
  ASSERT_FALSE(runner);
  EXPECT_EQ(runner.error().code, ErrorCode::kResourceExhausted);
  EXPECT_NE(runner.error().message.find("activations"), std::string::npos) << runner.error().message;
  EXPECT_NE(runner.error().message.find("no-activations cpu"), std::string::npos) << runner.error().message;
  // LlamaContext creates its runner the same way and passes the error on.
  auto ctx = LlamaContext::Create(*model, 32);
  ASSERT_FALSE(ctx);
  EXPECT_EQ(ctx.error().code, ErrorCode::kResourceExhausted);
}

}  // namespace
}  // namespace tollgate::local_backend
