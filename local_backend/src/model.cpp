#include "tollgate/local_backend/model.hpp"

#include "cpu_kernels.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <optional>
#include <string>

namespace tollgate::local_backend {
namespace {

// Prompt tokens run through the layers together so each weight row is read
// once per batch rather than once per token.
constexpr int kMaxBatch = 32;

std::string Shape(const std::vector<int64_t>& ne) {
  std::string s = "[";
  for (size_t i = 0; i < ne.size(); ++i) s += (i ? ", " : "") + std::to_string(ne[i]);
  return s + "]";
}

Result<int> ReadDim(const GgufFile& gguf, const std::string& key, std::optional<int> fallback) {
  if (!gguf.Find(key)) {
    if (fallback) return *fallback;
    return InvalidArgument("GGUF lacks required metadata " + key);
  }
  auto v = gguf.GetInt(key);
  if (!v || *v <= 0 || *v > (int64_t{1} << 24)) {
    return InvalidArgument("GGUF metadata " + key + " must be a positive integer below 2^24");
  }
  return static_cast<int>(*v);
}

}  // namespace

Result<const float*> LlamaModel::Vector(const std::string& name, int n) {
  const GgufTensorInfo* t = gguf_->FindTensor(name);
  if (!t) return InvalidArgument("model lacks tensor " + name);
  if (t->ne.size() != 1 || t->ne[0] != n) {
    return InvalidArgument("tensor " + name + " has shape " + Shape(t->ne) + ", expected [" +
                           std::to_string(n) + "]");
  }
  Result<Matrix> m = Mat(name, n, 1);  // shares the conversion path
  if (!m) return m.error();
  return m->data;
}

Result<LlamaModel::Matrix> LlamaModel::Mat(const std::string& name, int in, int out) {
  const GgufTensorInfo* t = gguf_->FindTensor(name);
  if (!t) return InvalidArgument("model lacks tensor " + name);
  const bool shape_ok = (t->ne.size() == 2 && t->ne[0] == in && t->ne[1] == out) ||
                        (out == 1 && t->ne.size() == 1 && t->ne[0] == in);
  if (!shape_ok) {
    return InvalidArgument("tensor " + name + " has shape " + Shape(t->ne) + ", expected [" +
                           std::to_string(in) + ", " + std::to_string(out) + "]");
  }
  const std::span<const std::byte> bytes = gguf_->TensorData(*t);
  const bool aligned = reinterpret_cast<uintptr_t>(bytes.data()) % alignof(float) == 0;
  if (t->type == GgmlType::kF32 && aligned) {
    return Matrix{reinterpret_cast<const float*>(bytes.data()), out, in};
  }
  auto converted = gguf_->ToF32(*t);
  if (!converted) return converted.error();
  converted_.push_back(std::move(*converted));
  return Matrix{converted_.back().data(), out, in};
}

Result<std::shared_ptr<const LlamaModel>> LlamaModel::Load(std::shared_ptr<const GgufFile> gguf) {
  auto arch = gguf->GetString("general.architecture");
  if (!arch) return InvalidArgument("GGUF lacks general.architecture");
  if (*arch != "llama") {
    return InvalidArgument("architecture '" + std::string(*arch) + "' is not supported (only \"llama\")");
  }
  std::shared_ptr<LlamaModel> m(new LlamaModel());
  m->gguf_ = gguf;
  LlamaHparams& hp = m->hparams_;
  auto dim = [&](const char* key, std::optional<int> fallback, int* out) -> Result<void> {
    auto v = ReadDim(*gguf, key, fallback);
    if (!v) return v.error();
    *out = *v;
    return {};
  };
  if (auto r = dim("llama.embedding_length", {}, &hp.embedding_length); !r) return r.error();
  if (auto r = dim("llama.block_count", {}, &hp.block_count); !r) return r.error();
  if (auto r = dim("llama.feed_forward_length", {}, &hp.feed_forward_length); !r) return r.error();
  if (auto r = dim("llama.attention.head_count", {}, &hp.head_count); !r) return r.error();
  if (auto r = dim("llama.attention.head_count_kv", hp.head_count, &hp.head_count_kv); !r) return r.error();
  if (auto r = dim("llama.context_length", {}, &hp.context_length); !r) return r.error();
  if (hp.embedding_length % hp.head_count != 0 && !gguf->Find("llama.attention.key_length")) {
    return InvalidArgument("llama.embedding_length is not a multiple of llama.attention.head_count");
  }
  if (auto r = dim("llama.attention.key_length", hp.embedding_length / hp.head_count, &hp.head_dim); !r) {
    return r.error();
  }
  if (gguf->Find("llama.attention.value_length")) {
    auto v = gguf->GetInt("llama.attention.value_length");
    if (!v || *v != hp.head_dim) {
      return InvalidArgument("llama.attention.value_length different from key_length is not supported");
    }
  }
  if (auto r = dim("llama.rope.dimension_count", hp.head_dim, &hp.rope_dims); !r) return r.error();
  if (hp.rope_dims > hp.head_dim || hp.rope_dims % 2 != 0) {
    return InvalidArgument("llama.rope.dimension_count must be even and at most the head size");
  }
  if (hp.head_count % hp.head_count_kv != 0) {
    return InvalidArgument("llama.attention.head_count must be a multiple of head_count_kv");
  }
  if (gguf->Find("llama.attention.layer_norm_rms_epsilon")) {
    auto eps = gguf->GetFloat("llama.attention.layer_norm_rms_epsilon");
    if (!eps || !(*eps > 0.0)) return InvalidArgument("llama.attention.layer_norm_rms_epsilon must be > 0");
    hp.rms_eps = static_cast<float>(*eps);
  }
  if (gguf->Find("llama.rope.freq_base")) {
    auto base = gguf->GetFloat("llama.rope.freq_base");
    if (!base || !(*base > 0.0)) return InvalidArgument("llama.rope.freq_base must be > 0");
    hp.rope_freq_base = static_cast<float>(*base);
  }

  const GgufTensorInfo* embd = gguf->FindTensor("token_embd.weight");
  if (!embd || embd->ne.size() != 2) return InvalidArgument("model lacks a 2-D token_embd.weight");
  if (auto r = dim("llama.vocab_size", static_cast<int>(std::min<int64_t>(embd->ne[1], INT32_MAX)), &hp.vocab_size);
      !r) {
    return r.error();
  }

  const int n_embd = hp.embedding_length;
  const int q_dim = hp.head_count * hp.head_dim;
  const int kv_dim = hp.head_count_kv * hp.head_dim;
  const int n_ff = hp.feed_forward_length;
  auto te = m->Mat("token_embd.weight", n_embd, hp.vocab_size);
  if (!te) return te.error();
  m->token_embd_ = *te;
  m->layers_.resize(static_cast<size_t>(hp.block_count));
  for (int l = 0; l < hp.block_count; ++l) {
    Layer& layer = m->layers_[static_cast<size_t>(l)];
    const std::string p = "blk." + std::to_string(l) + ".";
    auto attn_norm = m->Vector(p + "attn_norm.weight", n_embd);
    if (!attn_norm) return attn_norm.error();
    layer.attn_norm = *attn_norm;
    auto ffn_norm = m->Vector(p + "ffn_norm.weight", n_embd);
    if (!ffn_norm) return ffn_norm.error();
    layer.ffn_norm = *ffn_norm;
    struct Spec {
      const char* name;
      int in;
      int out;
      Matrix* dst;
    } specs[] = {
        {"attn_q.weight", n_embd, q_dim, &layer.wq},       {"attn_k.weight", n_embd, kv_dim, &layer.wk},
        {"attn_v.weight", n_embd, kv_dim, &layer.wv},      {"attn_output.weight", q_dim, n_embd, &layer.wo},
        {"ffn_gate.weight", n_embd, n_ff, &layer.w_gate},  {"ffn_up.weight", n_embd, n_ff, &layer.w_up},
        {"ffn_down.weight", n_ff, n_embd, &layer.w_down},
    };
    for (const Spec& s : specs) {
      auto mat = m->Mat(p + s.name, s.in, s.out);
      if (!mat) return mat.error();
      *s.dst = *mat;
    }
  }
  auto out_norm = m->Vector("output_norm.weight", n_embd);
  if (!out_norm) return out_norm.error();
  m->output_norm_ = *out_norm;
  if (gguf->FindTensor("output.weight")) {
    auto out = m->Mat("output.weight", n_embd, hp.vocab_size);
    if (!out) return out.error();
    m->output_ = *out;
  } else {
    m->output_ = m->token_embd_;  // tied classifier
  }
  return std::shared_ptr<const LlamaModel>(std::move(m));
}

Result<std::unique_ptr<LlamaContext>> LlamaContext::Create(std::shared_ptr<const LlamaModel> model,
                                                           int context_length) {
  if (context_length < 0) return InvalidArgument("context_length must be >= 0");
  const LlamaHparams& hp = model->hparams();
  std::unique_ptr<LlamaContext> c(new LlamaContext());
  c->context_length_ = context_length == 0 ? hp.context_length : context_length;
  const size_t kv_dim = static_cast<size_t>(hp.head_count_kv) * static_cast<size_t>(hp.head_dim);
  const size_t cache = static_cast<size_t>(hp.block_count) * static_cast<size_t>(c->context_length_) * kv_dim;
  c->k_cache_.assign(cache, 0.0f);
  c->v_cache_.assign(cache, 0.0f);
  const size_t b = kMaxBatch;
  const size_t q_dim = static_cast<size_t>(hp.head_count) * static_cast<size_t>(hp.head_dim);
  c->x_.resize(b * static_cast<size_t>(hp.embedding_length));
  c->xb_.resize(b * std::max<size_t>(static_cast<size_t>(hp.embedding_length), q_dim));
  c->q_.resize(b * q_dim);
  c->att_out_.resize(b * q_dim);
  c->hb_.resize(b * static_cast<size_t>(hp.feed_forward_length));
  c->hb2_.resize(b * static_cast<size_t>(hp.feed_forward_length));
  c->scores_.resize(static_cast<size_t>(c->context_length_));
  c->rope_cos_.resize(static_cast<size_t>(hp.rope_dims / 2));
  c->rope_sin_.resize(static_cast<size_t>(hp.rope_dims / 2));
  c->logits_.resize(static_cast<size_t>(hp.vocab_size));
  c->model_ = std::move(model);
  return c;
}

Result<std::span<const float>> LlamaContext::Decode(std::span<const TokenId> tokens) {
  if (tokens.empty()) return InvalidArgument("Decode called with no tokens");
  const int vocab = model_->hparams().vocab_size;
  for (TokenId t : tokens) {
    if (t < 0 || t >= vocab) return InvalidArgument("token id " + std::to_string(t) + " is outside the vocabulary");
  }
  if (tokens.size() > static_cast<size_t>(context_length_ - position_)) {
    return InvalidArgument("sequence of " + std::to_string(position_ + tokens.size()) +
                           " tokens exceeds the context length " + std::to_string(context_length_));
  }
  for (size_t done = 0; done < tokens.size();) {
    const int n = static_cast<int>(std::min<size_t>(kMaxBatch, tokens.size() - done));
    ForwardBatch(tokens.data() + done, n);
    done += static_cast<size_t>(n);
  }
  return std::span<const float>(logits_);
}

void LlamaContext::ForwardBatch(const TokenId* tokens, int n) {
  const LlamaModel& m = *model_;
  const LlamaHparams& hp = m.hparams();
  const int dim = hp.embedding_length;
  const int hd = hp.head_dim;
  const int q_dim = hp.head_count * hd;
  const int kv_dim = hp.head_count_kv * hd;
  const int n_ff = hp.feed_forward_length;
  const int group = hp.head_count / hp.head_count_kv;
  const float inv_sqrt_hd = 1.0f / std::sqrt(static_cast<float>(hd));
  const size_t layer_stride = static_cast<size_t>(context_length_) * static_cast<size_t>(kv_dim);

  for (int b = 0; b < n; ++b) {
    const float* row = m.token_embd().data + static_cast<size_t>(tokens[b]) * static_cast<size_t>(dim);
    std::copy(row, row + dim, x_.data() + static_cast<size_t>(b) * dim);
  }

  for (int l = 0; l < hp.block_count; ++l) {
    const LlamaModel::Layer& layer = m.layers()[static_cast<size_t>(l)];
    float* k_layer = k_cache_.data() + static_cast<size_t>(l) * layer_stride;
    float* v_layer = v_cache_.data() + static_cast<size_t>(l) * layer_stride;

    for (int b = 0; b < n; ++b) {
      cpu::RmsNorm(xb_.data() + static_cast<size_t>(b) * dim, x_.data() + static_cast<size_t>(b) * dim,
                   layer.attn_norm, dim, hp.rms_eps);
    }
    cpu::MatMul(q_.data(), layer.wq.data, xb_.data(), n, q_dim, dim);
    // K and V go straight into the cache rows of their positions.
    float* k_rows = k_layer + static_cast<size_t>(position_) * kv_dim;
    float* v_rows = v_layer + static_cast<size_t>(position_) * kv_dim;
    cpu::MatMul(k_rows, layer.wk.data, xb_.data(), n, kv_dim, dim);
    cpu::MatMul(v_rows, layer.wv.data, xb_.data(), n, kv_dim, dim);

    for (int b = 0; b < n; ++b) {
      const int pos = position_ + b;
      // Frequencies as llama2.c run.c computes them (float powf, then cos/sin
      // of pos * freq), which the greedy reference outputs were produced with.
      for (int i = 0; i < hp.rope_dims / 2; ++i) {
        const float freq =
            1.0f / std::pow(hp.rope_freq_base, static_cast<float>(2 * i) / static_cast<float>(hp.rope_dims));
        const float val = static_cast<float>(pos) * freq;
        rope_cos_[static_cast<size_t>(i)] = std::cos(val);
        rope_sin_[static_cast<size_t>(i)] = std::sin(val);
      }
      auto rotate = [&](float* vec, int heads) {
        for (int h = 0; h < heads; ++h) {
          float* v = vec + static_cast<size_t>(h) * hd;
          for (int i = 0; i < hp.rope_dims / 2; ++i) {
            const float c = rope_cos_[static_cast<size_t>(i)];
            const float s = rope_sin_[static_cast<size_t>(i)];
            const float v0 = v[2 * i];
            const float v1 = v[2 * i + 1];
            v[2 * i] = v0 * c - v1 * s;
            v[2 * i + 1] = v0 * s + v1 * c;
          }
        }
      };
      rotate(q_.data() + static_cast<size_t>(b) * q_dim, hp.head_count);
      rotate(k_rows + static_cast<size_t>(b) * kv_dim, hp.head_count_kv);
    }

    // Causal attention: token b sees positions 0 .. position_ + b.
    for (int b = 0; b < n; ++b) {
      const int last = position_ + b;
      for (int h = 0; h < hp.head_count; ++h) {
        const float* q = q_.data() + static_cast<size_t>(b) * q_dim + static_cast<size_t>(h) * hd;
        const size_t kv_off = static_cast<size_t>(h / group) * hd;
        float max_score = -std::numeric_limits<float>::infinity();
        for (int t = 0; t <= last; ++t) {
          // Head vectors are short (8..128): a plain loop beats a dispatched call.
          const float* k = k_layer + static_cast<size_t>(t) * kv_dim + kv_off;
          float dot = 0.0f;
          for (int i = 0; i < hd; ++i) dot += q[i] * k[i];
          const float score = dot * inv_sqrt_hd;
          scores_[static_cast<size_t>(t)] = score;
          max_score = std::max(max_score, score);
        }
        float sum = 0.0f;
        for (int t = 0; t <= last; ++t) {
          scores_[static_cast<size_t>(t)] = std::exp(scores_[static_cast<size_t>(t)] - max_score);
          sum += scores_[static_cast<size_t>(t)];
        }
        float* out = att_out_.data() + static_cast<size_t>(b) * q_dim + static_cast<size_t>(h) * hd;
        std::fill(out, out + hd, 0.0f);
        for (int t = 0; t <= last; ++t) {
          const float a = scores_[static_cast<size_t>(t)] / sum;
          const float* v = v_layer + static_cast<size_t>(t) * kv_dim + kv_off;
          for (int i = 0; i < hd; ++i) out[i] += a * v[i];
        }
      }
    }
    cpu::MatMul(xb_.data(), layer.wo.data, att_out_.data(), n, dim, q_dim);
    for (size_t i = 0; i < static_cast<size_t>(n) * dim; ++i) x_[i] += xb_[i];

    for (int b = 0; b < n; ++b) {
      cpu::RmsNorm(xb_.data() + static_cast<size_t>(b) * dim, x_.data() + static_cast<size_t>(b) * dim,
                   layer.ffn_norm, dim, hp.rms_eps);
    }
    cpu::MatMul(hb_.data(), layer.w_gate.data, xb_.data(), n, n_ff, dim);
    cpu::MatMul(hb2_.data(), layer.w_up.data, xb_.data(), n, n_ff, dim);
    for (size_t i = 0; i < static_cast<size_t>(n) * n_ff; ++i) {
      const float g = hb_[i];
      hb_[i] = g * (1.0f / (1.0f + std::exp(-g))) * hb2_[i];  // SiLU(gate) * up
    }
    cpu::MatMul(xb_.data(), layer.w_down.data, hb_.data(), n, dim, n_ff);
    for (size_t i = 0; i < static_cast<size_t>(n) * dim; ++i) x_[i] += xb_[i];
  }

  // Logits only for the batch's last token: that is all generation needs.
  float* last = x_.data() + static_cast<size_t>(n - 1) * dim;
  cpu::RmsNorm(xb_.data(), last, m.output_norm(), dim, hp.rms_eps);
  cpu::MatMul(logits_.data(), m.output().data, xb_.data(), 1, hp.vocab_size, dim);
  position_ += n;
}

}  // namespace tollgate::local_backend
