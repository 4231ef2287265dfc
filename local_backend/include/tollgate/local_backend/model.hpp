// Llama-architecture decoder on the CPU, float32 compute.
//
// Graph per layer (Touvron et al., "LLaMA", arXiv:2302.13971; same as llama2.c
// run.c and llama.cpp `llm_build_llama`):
//   h   = x + Wo * Attn(RoPE(Wq * RMSNorm(x)), RoPE(Wk * RMSNorm(x)), Wv * RMSNorm(x))
//   out = h + Wdown * (SiLU(Wgate * RMSNorm(h)) (.) (Wup * RMSNorm(h)))
// then logits = Woutput * RMSNorm(x_last).
//   RMSNorm: Zhang & Sennrich, "Root Mean Square Layer Normalization", NeurIPS 2019:
//     y = w (.) x / sqrt(mean(x^2) + eps), eps = llama.attention.layer_norm_rms_epsilon.
//   RoPE: Su et al., "RoFormer", arXiv:2104.09864, llama.cpp "normal" mode (rope
//     type 0): within each head, consecutive pairs (x[2i], x[2i+1]) for
//     2i < llama.rope.dimension_count rotate by pos * freq_base^(-2i/rope_dims).
//   Attention: causal softmax(q k^T / sqrt(head_dim)) v, grouped-query
//     (Ainslie et al., "GQA", arXiv:2305.13245): query head h reads KV head
//     h / (head_count / head_count_kv).
//   SwiGLU: Shazeer, "GLU Variants Improve Transformer", arXiv:2002.05202.
//
// Tensors (llama.cpp names): token_embd, blk.N.{attn_norm, attn_q, attn_k,
// attn_v, attn_output, ffn_norm, ffn_gate, ffn_up, ffn_down}, output_norm and
// output (token_embd is reused when output.weight is absent), all ".weight".
// A ggml matrix with ne = [in, out] is used as a row-major (out x in) matrix.
// F32 tensors are used in place from the mapping; F16, BF16 and Q8_0 are
// converted to F32 at load (4x the memory of Q8_0, exact values).
// Unsupported: rope scaling metadata, MoE, biases, other architectures.
#pragma once

#include "tollgate/core/error.hpp"
#include "tollgate/local_backend/gguf.hpp"
#include "tollgate/local_backend/tokenizer.hpp"

#include <memory>
#include <span>
#include <vector>

namespace tollgate::local_backend {

struct LlamaHparams {
  int vocab_size = 0;
  int context_length = 0;     // llama.context_length (trained), tokens
  int embedding_length = 0;   // llama.embedding_length
  int block_count = 0;        // llama.block_count
  int feed_forward_length = 0;
  int head_count = 0;
  int head_count_kv = 0;      // llama.attention.head_count_kv, default head_count
  int head_dim = 0;           // llama.attention.key_length, default embedding_length / head_count
  int rope_dims = 0;          // llama.rope.dimension_count, default head_dim
  float rms_eps = 1e-5f;      // llama.attention.layer_norm_rms_epsilon
  float rope_freq_base = 10000.0f;  // llama.rope.freq_base
};

// Immutable weights. Thread-safety: const after Load; share one across any
// number of LlamaContexts and threads.
class LlamaModel {
 public:
  // Reads hyperparameters and weights from a GGUF whose general.architecture
  // is "llama". Keeps `gguf` alive (F32 weights point into its mapping).
  // Errors (kInvalidArgument): other architecture, missing or inconsistent
  // hyperparameters, a missing tensor, a tensor whose shape does not match the
  // hyperparameters, or a tensor type the CPU engine cannot compute.
  static Result<std::shared_ptr<const LlamaModel>> Load(std::shared_ptr<const GgufFile> gguf);

  const LlamaHparams& hparams() const { return hparams_; }

  struct Matrix {
    const float* data = nullptr;  // rows x cols, row-major
    int rows = 0;
    int cols = 0;
  };
  struct Layer {
    const float* attn_norm = nullptr;  // embedding_length
    Matrix wq, wk, wv, wo;
    const float* ffn_norm = nullptr;
    Matrix w_gate, w_up, w_down;
  };
  const Matrix& token_embd() const { return token_embd_; }
  const std::vector<Layer>& layers() const { return layers_; }
  const float* output_norm() const { return output_norm_; }
  const Matrix& output() const { return output_; }

 private:
  LlamaModel() = default;
  Result<const float*> Vector(const std::string& name, int n);
  Result<Matrix> Mat(const std::string& name, int in, int out);

  std::shared_ptr<const GgufFile> gguf_;
  std::vector<std::vector<float>> converted_;  // owned storage of non-F32 tensors
  LlamaHparams hparams_;
  Matrix token_embd_;
  std::vector<Layer> layers_;
  const float* output_norm_ = nullptr;
  Matrix output_;
};

// One sequence's KV cache and scratch buffers. Thread-safety: none; use one
// context per thread. Memory: 2 * block_count * context_length *
// head_count_kv * head_dim floats for the cache.
class LlamaContext {
 public:
  // `context_length` tokens of KV cache; 0 means the model's trained length.
  // Errors: kInvalidArgument when context_length < 0.
  static Result<std::unique_ptr<LlamaContext>> Create(std::shared_ptr<const LlamaModel> model,
                                                      int context_length);

  // Runs `tokens` at positions position() .. position()+size-1 (a prompt is
  // processed in batches), appends them to the KV cache and returns the
  // logits (vocab_size floats, unnormalised) for the last one. The span is
  // valid until the next Decode/Reset.
  // Errors (kInvalidArgument): empty input, a token id outside the
  // vocabulary, or position() + size > context_length() (nothing is run then).
  Result<std::span<const float>> Decode(std::span<const TokenId> tokens);

  // Forgets the sequence (position 0).
  void Reset() { position_ = 0; }
  int position() const { return position_; }
  int context_length() const { return context_length_; }
  const LlamaModel& model() const { return *model_; }

 private:
  LlamaContext() = default;
  void ForwardBatch(const TokenId* tokens, int n);

  std::shared_ptr<const LlamaModel> model_;
  int context_length_ = 0;
  int position_ = 0;
  std::vector<float> k_cache_;  // [layer][pos][head_count_kv * head_dim]
  std::vector<float> v_cache_;
  // Scratch, sized for kMaxBatch tokens.
  std::vector<float> x_, xb_, q_, att_out_, hb_, hb2_, scores_, rope_cos_, rope_sin_, logits_;
};

}  // namespace tollgate::local_backend
