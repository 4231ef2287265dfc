// Decoder-only transformer graphs of the Llama family, run through a compute
// backend (backend.hpp): architectures "llama" (Llama 2/3/3.1/3.2, TinyLlama,
// SmolLM), "mistral", "qwen2" (Qwen2, Qwen2.5, DeepSeek-R1-Distill-Qwen) and
// "qwen3", as llama.cpp names them in `general.architecture`.
//
// Graph per layer (Touvron et al., "LLaMA", arXiv:2302.13971; llama.cpp
// `llm_build_llama`, `llm_build_qwen2`, `llm_build_qwen3`):
//   q, k, v = Wq n, Wk n, Wv n (+ bq, bk, bv when the file has attention biases:
//             qwen2), n = RMSNorm(x) (.) attn_norm
//   qwen3:    q, k = RMSNorm per head (.) attn_q_norm / attn_k_norm
//   q, k    = RoPE(q), RoPE(k)
//   h   = x + Wo Attn(q, k, v)
//   out = h + Wdown (SiLU(Wgate m) (.) Wup m), m = RMSNorm(h) (.) ffn_norm
// then logits = Woutput (RMSNorm(x_last) (.) output_norm).
//   RMSNorm: Zhang & Sennrich, NeurIPS 2019, eps = {arch}.attention.layer_norm_rms_epsilon.
//   RoPE: Su et al., RoFormer, arXiv:2104.09864. llama/mistral rotate
//     consecutive pairs (ggml rope type 0), qwen2/qwen3 the halves of each head
//     (GGML_ROPE_TYPE_NEOX); theta_i = pos * base^(-2i/dims) with base =
//     {arch}.rope.freq_base, divided by `rope_freqs.weight[i]` when present
//     (Llama 3.1's frequency factors); rope.scaling.type "linear" multiplies
//     theta by 1/factor; "yarn" blends interpolated and extrapolated theta per
//     dimension and scales cos/sin by 1 + 0.1 ln(factor) (Peng et al., "YaRN",
//     arXiv:2309.00071, as ggml's `rope_yarn`).
//   Attention: causal softmax(q k^T / sqrt(head_dim)) v, grouped-query
//     (Ainslie et al., arXiv:2305.13245).
//   SwiGLU: Shazeer, arXiv:2002.05202.
//
// Tensors (llama.cpp names, ".weight"/".bias"): token_embd, blk.N.{attn_norm,
// attn_q, attn_k, attn_v, attn_output, attn_q_norm, attn_k_norm, ffn_norm,
// ffn_gate, ffn_up, ffn_down}, output_norm, output (token_embd is reused when
// output.weight is absent), optional rope_freqs. A ggml matrix with
// ne = [in, out] is `out` rows of `in` values.
//
// Weights stay in their file type (F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0,
// Q5_1, Q4_K, Q5_K, Q6_K) and are used in place from the mapping (Q4_0 is
// repacked, backend.hpp); the backend computes with them directly
// (cpu_kernels.hpp). Norm weights and biases are converted to F32 (a few KB).
// Unsupported: MoE, sliding-window attention, other architectures.
#pragma once

#include "tollgate/core/error.hpp"
#include "tollgate/local_backend/backend.hpp"
#include "tollgate/local_backend/gguf.hpp"
#include "tollgate/local_backend/kv_cache.hpp"
#include "tollgate/local_backend/tokenizer.hpp"

#include <memory>
#include <span>
#include <string>
#include <vector>

namespace tollgate::local_backend {

struct RopeScaling {
  enum class Type { kNone, kLinear, kYarn };
  Type type = Type::kNone;           // {arch}.rope.scaling.type ("none", "linear", "yarn")
  float factor = 1.0f;               // {arch}.rope.scaling.factor (context extension factor)
  float attn_factor = 1.0f;          // {arch}.rope.scaling.attn_factor (cos/sin magnitude)
  int original_context_length = 0;   // {arch}.rope.scaling.original_context_length (YaRN)
  float yarn_ext_factor = 0.0f;      // 1 for YaRN unless {arch}.rope.scaling.yarn_ext_factor
  float yarn_beta_fast = 32.0f;      // {arch}.rope.scaling.yarn_beta_fast
  float yarn_beta_slow = 1.0f;       // {arch}.rope.scaling.yarn_beta_slow
};

struct LlamaHparams {
  std::string architecture;   // general.architecture: "llama", "mistral", "qwen2", "qwen3"
  int vocab_size = 0;         // {arch}.vocab_size, default token_embd rows
  int context_length = 0;     // {arch}.context_length (trained), tokens
  int embedding_length = 0;   // {arch}.embedding_length
  int block_count = 0;        // {arch}.block_count
  int feed_forward_length = 0;
  int head_count = 0;
  int head_count_kv = 0;      // {arch}.attention.head_count_kv, default head_count
  int head_dim = 0;           // {arch}.attention.key_length, default embedding_length / head_count
  int rope_dims = 0;          // {arch}.rope.dimension_count, default head_dim
  float rms_eps = 1e-5f;      // {arch}.attention.layer_norm_rms_epsilon
  float rope_freq_base = 10000.0f;  // {arch}.rope.freq_base
  RopeMode rope_mode = RopeMode::kNormal;
  RopeScaling rope_scaling;
  bool rope_freq_factors = false;  // rope_freqs.weight present
  bool attention_bias = false;     // attn_q/k/v.bias present
  bool qk_norm = false;            // attn_q_norm / attn_k_norm (qwen3)
  bool tied_output = false;        // output.weight absent: token_embd is the classifier
};

struct ModelOptions {
  // Backend that holds the weights and runs every context of this model. Null:
  // a CPU backend with `threads` threads (0 = every core).
  std::shared_ptr<Backend> backend;
  int threads = 0;
};

// Immutable weights. Thread-safety: const after Load. Contexts of one model
// share its backend, so their Decode calls must not overlap (see backend.hpp).
class LlamaModel {
 public:
  // Reads hyperparameters and weights from `gguf`; keeps `gguf` alive (weights
  // point into its mapping). Errors (kInvalidArgument): unsupported
  // architecture, missing or inconsistent hyperparameters or rope scaling, a
  // missing tensor, a tensor whose shape does not match the hyperparameters, a
  // tensor type the backend cannot compute; or the backend's own error.
  static Result<std::shared_ptr<const LlamaModel>> Load(std::shared_ptr<const GgufFile> gguf,
                                                        const ModelOptions& options = {});

  const LlamaHparams& hparams() const { return hparams_; }
  Backend& backend() const { return *backend_; }

  struct Layer {
    std::unique_ptr<BackendVector> attn_norm;
    std::unique_ptr<BackendWeight> wq, wk, wv, wo;
    std::unique_ptr<BackendVector> bq, bk, bv;          // null without attention biases
    std::unique_ptr<BackendVector> q_norm, k_norm;      // qwen3 only
    std::unique_ptr<BackendVector> ffn_norm;
    std::unique_ptr<BackendWeight> w_gate, w_up, w_down;
  };
  const BackendWeight& token_embd() const { return *token_embd_; }
  const std::vector<Layer>& layers() const { return layers_; }
  const BackendVector& output_norm() const { return *output_norm_; }
  // The classifier: output.weight, or token_embd when tied.
  const BackendWeight& output() const { return output_ ? *output_ : *token_embd_; }

  // Bytes of weights one decode step reads: every layer matrix and the
  // classifier (one embedding row is negligible).
  size_t decode_weight_bytes() const { return decode_weight_bytes_; }

  // The KV pool shape for this model: `type`, and as many pages as fit in
  // `budget_bytes` (at least one).
  KvPoolShape KvShape(KvType type, int64_t budget_bytes) const;
  // Bytes of keys and values per token in `type` (every layer).
  size_t KvBytesPerToken(KvType type) const;

  // cos/sin of each rotated pair at `pos` (hparams().rope_dims floats, layout of
  // RopeTable), with the file's frequency factors and rope scaling.
  void RopeRow(int pos, float* out) const;

 private:
  LlamaModel() = default;

  std::shared_ptr<const GgufFile> gguf_;
  std::shared_ptr<Backend> backend_;
  LlamaHparams hparams_;
  std::unique_ptr<BackendWeight> token_embd_;
  std::vector<Layer> layers_;
  std::unique_ptr<BackendVector> output_norm_;
  std::unique_ptr<BackendWeight> output_;  // null when tied
  std::vector<float> inv_freq_;            // base^(-2i/dims) / freq factor, i < rope_dims / 2
  float yarn_corr_[2] = {0.0f, 0.0f};
  size_t decode_weight_bytes_ = 0;

  friend class ModelLoader;
};

// One sequence's part of a batch (LlamaRunner::Decode).
struct BatchItem {
  KvSequence* seq = nullptr;
  std::span<const TokenId> tokens;  // stored at positions seq->tokens(), ...
  bool logits = false;              // return the logits after its last token
};

// Runs batches of sequences through a model: the continuous-batching step
// (Yu et al., "Orca", OSDI 2022; llama.cpp's llama_batch): the prompt chunks
// and decode tokens of all running sequences go through the layers together,
// so each weight is read once per step for all of them; attention reads each
// sequence's own pages. Owns the activation scratch for `max_batch_tokens`
// rows. Thread-safety: none; runners sharing a model's backend must not
// Decode concurrently (backend.hpp).
class LlamaRunner {
 public:
  // Errors: kInvalidArgument when max_batch_tokens or max_logits < 1;
  // kResourceExhausted when the backend cannot hold the activation scratch
  // (a device backend over its memory budget).
  static Result<std::unique_ptr<LlamaRunner>> Create(std::shared_ptr<const LlamaModel> model, int max_batch_tokens,
                                                     int max_logits);

  // Runs every item's tokens, stores their keys and values in `cache` and
  // appends them to the item's sequence. Returns the logits (vocab_size
  // unnormalised floats each) of the items with `logits`, in item order, one
  // row after another; valid until the next Decode.
  // Errors (nothing run, no sequence advanced; pages already taken stay with
  // their sequences): kInvalidArgument for no items, an item without tokens,
  // more than max_batch_tokens tokens or max_logits logits in all, a sequence
  // named twice, a token id outside the vocabulary; kResourceExhausted when
  // the cache has no page left for the new positions.
  Result<std::span<const float>> Decode(PagedKvCache& cache, std::span<const BatchItem> items);

  int max_batch_tokens() const { return max_batch_; }
  const LlamaModel& model() const { return *model_; }

 private:
  LlamaRunner() = default;
  void Forward(PagedKvCache& cache, std::span<const BatchItem> items, int tokens, int logit_rows);

  std::shared_ptr<const LlamaModel> model_;
  int max_batch_ = 0;
  int max_logits_ = 0;
  std::unique_ptr<ActivationBuffer> buffer_;
  ActTensor x_, xb_, q_, k_, v_, att_, hb_, hb2_, last_, logits_act_;
  std::vector<float> rope_;  // max_batch * rope_dims
  std::vector<int32_t> ids_;
  std::vector<AttentionSeq> seqs_;
  std::vector<float> logits_;
};

struct ContextOptions {
  // Longest sequence, tokens; 0 means the model's trained context length. The
  // KV cache grows with the sequence (kKvPageTokens-token pages), so this
  // costs nothing until used.
  int context_length = 0;
  KvType kv_type = KvType::kF16;  // as llama.cpp's default
  // Prompt tokens run through the layers together (each weight is read once
  // per batch); larger batches use more scratch memory.
  int max_batch = 64;
};

// One sequence with its own KV cache: LlamaRunner and PagedKvCache for the
// simple case (tests, benchmarks, tools). Thread-safety: none; one context
// per thread, and Decode calls of contexts sharing a model's backend must not
// overlap.
class LlamaContext {
 public:
  // Errors: kInvalidArgument when context_length < 0 or max_batch < 1.
  static Result<std::unique_ptr<LlamaContext>> Create(std::shared_ptr<const LlamaModel> model,
                                                      const ContextOptions& options);
  // Same as Create(model, {.context_length = context_length}).
  static Result<std::unique_ptr<LlamaContext>> Create(std::shared_ptr<const LlamaModel> model,
                                                      int context_length);
  ~LlamaContext();

  // Runs `tokens` at positions position() .. position()+size-1 (a prompt is
  // processed in batches), appends them to the KV cache and returns the
  // logits (vocab_size floats, unnormalised) for the last one. The span is
  // valid until the next Decode/Reset.
  // Errors: kInvalidArgument for empty input, a token id outside the
  // vocabulary, or position() + size > context_length() (nothing is run
  // then); kResourceExhausted when KV memory cannot be allocated (the position
  // is unchanged).
  Result<std::span<const float>> Decode(std::span<const TokenId> tokens);

  // Forgets the sequence (position 0); the KV pages are kept for reuse.
  void Reset();
  int position() const { return seq_.tokens(); }
  int context_length() const { return context_length_; }
  const LlamaModel& model() const { return runner_->model(); }
  // Bytes held by the KV cache now.
  size_t kv_bytes() const { return cache_->pool().bytes(); }

 private:
  LlamaContext() = default;

  int context_length_ = 0;
  std::unique_ptr<LlamaRunner> runner_;
  std::unique_ptr<PagedKvCache> cache_;
  KvSequence seq_;
};

}  // namespace tollgate::local_backend
