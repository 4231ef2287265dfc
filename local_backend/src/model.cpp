#include "tollgate/local_backend/model.hpp"

#include "tollgate/local_backend/quant.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <new>
#include <optional>
#include <string>

namespace tollgate::local_backend {
namespace {

constexpr float kPi = 3.14159265358979323846f;

std::string Shape(const std::vector<int64_t>& ne) {
  std::string s = "[";
  for (size_t i = 0; i < ne.size(); ++i) s += (i ? ", " : "") + std::to_string(ne[i]);
  return s + "]";
}

struct ArchTraits {
  const char* name;
  RopeMode rope_mode;
  bool qk_norm;
};

// Per architecture what llama.cpp's graph builders do differently
// (llama-model.cpp `llama_model_rope_type` and `llm_build_*`).
const ArchTraits* FindArch(std::string_view arch) {
  static constexpr ArchTraits kArchs[] = {
      {"llama", RopeMode::kNormal, false},
      {"mistral", RopeMode::kNormal, false},
      {"qwen2", RopeMode::kNeox, false},
      {"qwen3", RopeMode::kNeox, true},
  };
  for (const ArchTraits& a : kArchs) {
    if (arch == a.name) return &a;
  }
  return nullptr;
}

// ggml.c `ggml_rope_yarn_corr_dim`: the dimension whose wavelength spans
// `n_rot` turns over the original context.
float YarnCorrDim(int n_dims, int n_ctx_orig, float n_rot, float base) {
  return static_cast<float>(n_dims) * std::log(static_cast<float>(n_ctx_orig) / (n_rot * 2 * kPi)) /
         (2 * std::log(base));
}

}  // namespace

// Reads metadata and tensors for LlamaModel::Load.
class ModelLoader {
 public:
  ModelLoader(const GgufFile& gguf, Backend& backend, std::string arch)
      : gguf_(gguf), backend_(backend), arch_(std::move(arch)) {}

  std::string Key(const char* suffix) const { return arch_ + "." + suffix; }

  // A positive integer below 2^24, or `fallback` when absent.
  Result<int> Dim(const char* suffix, std::optional<int> fallback) const {
    const std::string key = Key(suffix);
    if (!gguf_.Find(key)) {
      if (fallback) return *fallback;
      return InvalidArgument("GGUF lacks required metadata " + key);
    }
    auto v = gguf_.GetInt(key);
    if (!v || *v <= 0 || *v > (int64_t{1} << 24)) {
      return InvalidArgument("GGUF metadata " + key + " must be a positive integer below 2^24");
    }
    return static_cast<int>(*v);
  }

  // A positive float, or `fallback` when absent.
  Result<float> Positive(const char* suffix, float fallback) const {
    const std::string key = Key(suffix);
    if (!gguf_.Find(key)) return fallback;
    auto v = gguf_.GetFloat(key);
    if (!v || !(*v > 0.0) || !std::isfinite(*v)) return InvalidArgument("GGUF metadata " + key + " must be > 0");
    return static_cast<float>(*v);
  }

  Result<std::unique_ptr<BackendWeight>> Matrix(const std::string& name, int in, int out) {
    const GgufTensorInfo* t = gguf_.FindTensor(name);
    if (!t) return InvalidArgument("model lacks tensor " + name);
    if (t->ne.size() != 2 || t->ne[0] != in || t->ne[1] != out) {
      return InvalidArgument("tensor " + name + " has shape " + Shape(t->ne) + ", expected [" + std::to_string(in) +
                             ", " + std::to_string(out) + "]");
    }
    WeightData d;
    d.name = name;
    d.type = t->type;
    d.rows = out;
    d.cols = in;
    d.bytes = gguf_.TensorData(*t);
    d.file_mapped = true;
    auto w = backend_.PrepareWeight(d);
    if (w) decode_bytes_ += d.bytes.size();
    return w;
  }

  // A 1-D tensor of n values as float32 (exact conversion from F16/BF16/...).
  Result<std::vector<float>> Floats(const std::string& name, int n) {
    const GgufTensorInfo* t = gguf_.FindTensor(name);
    if (!t) return InvalidArgument("model lacks tensor " + name);
    if (t->ne.size() != 1 || t->ne[0] != n) {
      return InvalidArgument("tensor " + name + " has shape " + Shape(t->ne) + ", expected [" + std::to_string(n) + "]");
    }
    if (!IsDequantizeSupported(t->type) || n % QuantBlockSize(t->type) != 0) {
      return InvalidArgument("tensor " + name + " has type " + GgmlTypeName(t->type) + ", which cannot be read");
    }
    std::vector<float> out(static_cast<size_t>(n));
    DequantizeRow(t->type, gguf_.TensorData(*t).data(), out.data(), n);
    return out;
  }

  Result<std::unique_ptr<BackendVector>> Vector(const std::string& name, int n) {
    auto v = Floats(name, n);
    if (!v) return v.error();
    return backend_.PrepareVector(*v);
  }

  // The vector when the tensor exists, null when it does not.
  Result<std::unique_ptr<BackendVector>> OptionalVector(const std::string& name, int n) {
    if (!gguf_.FindTensor(name)) return std::unique_ptr<BackendVector>();
    return Vector(name, n);
  }

  size_t decode_bytes() const { return decode_bytes_; }
  void forget_decode_bytes(size_t bytes) { decode_bytes_ -= bytes; }

  Result<void> ReadHparams(LlamaHparams& hp, const ArchTraits& traits);
  Result<void> ReadRopeScaling(LlamaHparams& hp);

 private:
  const GgufFile& gguf_;
  Backend& backend_;
  std::string arch_;
  size_t decode_bytes_ = 0;
};

Result<void> ModelLoader::ReadHparams(LlamaHparams& hp, const ArchTraits& traits) {
  hp.architecture = arch_;
  hp.rope_mode = traits.rope_mode;
  auto set = [](Result<int> r, int* out) -> Result<void> {
    if (!r) return r.error();
    *out = *r;
    return {};
  };
  if (auto r = set(Dim("embedding_length", {}), &hp.embedding_length); !r) return r;
  if (auto r = set(Dim("block_count", {}), &hp.block_count); !r) return r;
  if (auto r = set(Dim("feed_forward_length", {}), &hp.feed_forward_length); !r) return r;
  if (auto r = set(Dim("attention.head_count", {}), &hp.head_count); !r) return r;
  if (auto r = set(Dim("attention.head_count_kv", hp.head_count), &hp.head_count_kv); !r) return r;
  if (auto r = set(Dim("context_length", {}), &hp.context_length); !r) return r;
  if (hp.embedding_length % hp.head_count != 0 && !gguf_.Find(Key("attention.key_length"))) {
    return InvalidArgument(Key("embedding_length") + " is not a multiple of " + Key("attention.head_count"));
  }
  if (auto r = set(Dim("attention.key_length", hp.embedding_length / hp.head_count), &hp.head_dim); !r) return r;
  if (gguf_.Find(Key("attention.value_length"))) {
    auto v = gguf_.GetInt(Key("attention.value_length"));
    if (!v || *v != hp.head_dim) {
      return InvalidArgument(Key("attention.value_length") + " different from key_length is not supported");
    }
  }
  if (hp.head_dim % 8 != 0) {
    return InvalidArgument("head size " + std::to_string(hp.head_dim) + " is not a multiple of 8, which the engine needs");
  }
  if (auto r = set(Dim("rope.dimension_count", hp.head_dim), &hp.rope_dims); !r) return r;
  if (hp.rope_dims > hp.head_dim || hp.rope_dims % 2 != 0) {
    return InvalidArgument(Key("rope.dimension_count") + " must be even and at most the head size");
  }
  if (hp.head_count % hp.head_count_kv != 0) {
    return InvalidArgument(Key("attention.head_count") + " must be a multiple of head_count_kv");
  }
  auto eps = Positive("attention.layer_norm_rms_epsilon", 1e-5f);
  if (!eps) return eps.error();
  hp.rms_eps = *eps;
  auto base = Positive("rope.freq_base", 10000.0f);
  if (!base) return base.error();
  hp.rope_freq_base = *base;
  return ReadRopeScaling(hp);
}

// Keys as llama.cpp reads them (llama-model.cpp `load_hparams`,
// llama-context.cpp for the YaRN defaults).
Result<void> ModelLoader::ReadRopeScaling(LlamaHparams& hp) {
  RopeScaling& rs = hp.rope_scaling;
  std::string type = "none";
  if (gguf_.Find(Key("rope.scaling.type"))) {
    auto t = gguf_.GetString(Key("rope.scaling.type"));
    if (!t) return InvalidArgument(Key("rope.scaling.type") + " must be a string");
    type = std::string(*t);
  }
  float factor = 0.0f;
  for (const char* key : {"rope.scaling.factor", "rope.scale_linear"}) {
    if (factor != 0.0f || !gguf_.Find(Key(key))) continue;
    auto f = Positive(key, 1.0f);
    if (!f) return f.error();
    factor = *f;
  }
  if (type == "none") {
    rs.type = RopeScaling::Type::kNone;
  } else if (type == "linear") {
    // A file with a linear type but no factor scales nothing.
    rs.type = factor > 0.0f && factor != 1.0f ? RopeScaling::Type::kLinear : RopeScaling::Type::kNone;
  } else if (type == "yarn") {
    rs.type = RopeScaling::Type::kYarn;
  } else {
    return InvalidArgument("rope scaling type '" + type + "' is not supported (none, linear, yarn)");
  }
  rs.factor = factor > 0.0f ? factor : 1.0f;
  auto attn = Positive("rope.scaling.attn_factor", 1.0f);
  if (!attn) return attn.error();
  rs.attn_factor = *attn;
  auto orig = Dim("rope.scaling.original_context_length", hp.context_length);
  if (!orig) return orig.error();
  rs.original_context_length = *orig;
  if (rs.type == RopeScaling::Type::kYarn) {
    rs.yarn_ext_factor = 1.0f;
    if (gguf_.Find(Key("rope.scaling.yarn_ext_factor"))) {
      auto e = gguf_.GetFloat(Key("rope.scaling.yarn_ext_factor"));
      if (!e || *e < 0.0) return InvalidArgument(Key("rope.scaling.yarn_ext_factor") + " must be >= 0");
      rs.yarn_ext_factor = static_cast<float>(*e);
    }
    auto fast = Positive("rope.scaling.yarn_beta_fast", 32.0f);
    if (!fast) return fast.error();
    auto slow = Positive("rope.scaling.yarn_beta_slow", 1.0f);
    if (!slow) return slow.error();
    rs.yarn_beta_fast = *fast;
    rs.yarn_beta_slow = *slow;
  }
  return {};
}

Result<std::shared_ptr<const LlamaModel>> LlamaModel::Load(std::shared_ptr<const GgufFile> gguf,
                                                           const ModelOptions& options) {
  auto arch_name = gguf->GetString("general.architecture");
  if (!arch_name) return InvalidArgument("GGUF lacks general.architecture");
  const ArchTraits* traits = FindArch(*arch_name);
  if (!traits) {
    return InvalidArgument("architecture '" + std::string(*arch_name) +
                           "' is not supported (llama, mistral, qwen2, qwen3)");
  }
  std::shared_ptr<LlamaModel> m(new LlamaModel());
  m->gguf_ = gguf;
  m->backend_ = options.backend;
  if (!m->backend_) {
    CpuBackendOptions cpu;
    cpu.threads = options.threads;
    auto b = CreateCpuBackend(cpu);
    if (!b) return b.error();
    m->backend_ = *b;
  }
  ModelLoader ld(*gguf, *m->backend_, std::string(*arch_name));
  LlamaHparams& hp = m->hparams_;
  if (auto r = ld.ReadHparams(hp, *traits); !r) return r.error();

  const GgufTensorInfo* embd = gguf->FindTensor("token_embd.weight");
  if (!embd || embd->ne.size() != 2) return InvalidArgument("model lacks a 2-D token_embd.weight");
  auto vocab = ld.Dim("vocab_size", static_cast<int>(std::min<int64_t>(embd->ne[1], INT32_MAX)));
  if (!vocab) return vocab.error();
  hp.vocab_size = *vocab;

  const int n_embd = hp.embedding_length;
  const int hd = hp.head_dim;
  const int q_dim = hp.head_count * hd;
  const int kv_dim = hp.head_count_kv * hd;
  const int n_ff = hp.feed_forward_length;
  auto te = ld.Matrix("token_embd.weight", n_embd, hp.vocab_size);
  if (!te) return te.error();
  m->token_embd_ = std::move(*te);
  // Decode reads one embedding row, not the table, unless it is also the classifier.
  const size_t embd_bytes = gguf->TensorData(*embd).size();
  ld.forget_decode_bytes(embd_bytes);

  hp.attention_bias = gguf->FindTensor("blk.0.attn_q.bias") != nullptr;
  hp.qk_norm = traits->qk_norm;
  m->layers_.resize(static_cast<size_t>(hp.block_count));
  for (int l = 0; l < hp.block_count; ++l) {
    Layer& layer = m->layers_[static_cast<size_t>(l)];
    const std::string p = "blk." + std::to_string(l) + ".";
    struct VectorSpec {
      const char* name;
      int n;
      std::unique_ptr<BackendVector>* dst;
      bool required;
    } vectors[] = {
        {"attn_norm.weight", n_embd, &layer.attn_norm, true},
        {"ffn_norm.weight", n_embd, &layer.ffn_norm, true},
        {"attn_q.bias", q_dim, &layer.bq, hp.attention_bias},
        {"attn_k.bias", kv_dim, &layer.bk, hp.attention_bias},
        {"attn_v.bias", kv_dim, &layer.bv, hp.attention_bias},
        {"attn_q_norm.weight", hd, &layer.q_norm, hp.qk_norm},
        {"attn_k_norm.weight", hd, &layer.k_norm, hp.qk_norm},
    };
    for (const VectorSpec& s : vectors) {
      if (!s.required) continue;
      auto v = ld.Vector(p + s.name, s.n);
      if (!v) return v.error();
      *s.dst = std::move(*v);
    }
    struct MatrixSpec {
      const char* name;
      int in;
      int out;
      std::unique_ptr<BackendWeight>* dst;
    } matrices[] = {
        {"attn_q.weight", n_embd, q_dim, &layer.wq},      {"attn_k.weight", n_embd, kv_dim, &layer.wk},
        {"attn_v.weight", n_embd, kv_dim, &layer.wv},     {"attn_output.weight", q_dim, n_embd, &layer.wo},
        {"ffn_gate.weight", n_embd, n_ff, &layer.w_gate}, {"ffn_up.weight", n_embd, n_ff, &layer.w_up},
        {"ffn_down.weight", n_ff, n_embd, &layer.w_down},
    };
    for (const MatrixSpec& s : matrices) {
      auto w = ld.Matrix(p + s.name, s.in, s.out);
      if (!w) return w.error();
      *s.dst = std::move(*w);
    }
  }
  auto out_norm = ld.Vector("output_norm.weight", n_embd);
  if (!out_norm) return out_norm.error();
  m->output_norm_ = std::move(*out_norm);
  if (gguf->FindTensor("output.weight")) {
    auto out = ld.Matrix("output.weight", n_embd, hp.vocab_size);
    if (!out) return out.error();
    m->output_ = std::move(*out);
  } else {
    hp.tied_output = true;
  }
  m->decode_weight_bytes_ = ld.decode_bytes() + (hp.tied_output ? embd_bytes : 0);

  // RoPE frequencies, computed as llama2.c run.c does (float powf), which the
  // stories260K reference outputs were produced with; ggml's iterated product
  // differs in the last bits only.
  const int half = hp.rope_dims / 2;
  m->inv_freq_.resize(static_cast<size_t>(half));
  for (int i = 0; i < half; ++i) {
    m->inv_freq_[static_cast<size_t>(i)] =
        1.0f / std::pow(hp.rope_freq_base, static_cast<float>(2 * i) / static_cast<float>(hp.rope_dims));
  }
  if (gguf->FindTensor("rope_freqs.weight")) {
    auto ff = ld.Floats("rope_freqs.weight", half);
    if (!ff) return ff.error();
    for (int i = 0; i < half; ++i) {
      const float f = (*ff)[static_cast<size_t>(i)];
      if (!(f > 0.0f) || !std::isfinite(f)) return InvalidArgument("rope_freqs.weight must be positive");
    }
    hp.rope_freq_factors = true;
    for (int i = 0; i < half; ++i) m->inv_freq_[static_cast<size_t>(i)] /= (*ff)[static_cast<size_t>(i)];
  }
  if (hp.rope_scaling.type == RopeScaling::Type::kYarn) {
    // ggml.c `ggml_rope_yarn_corr_dims`.
    const RopeScaling& rs = hp.rope_scaling;
    const float start = std::floor(YarnCorrDim(hp.rope_dims, rs.original_context_length, rs.yarn_beta_fast, hp.rope_freq_base));
    const float end = std::ceil(YarnCorrDim(hp.rope_dims, rs.original_context_length, rs.yarn_beta_slow, hp.rope_freq_base));
    m->yarn_corr_[0] = std::max(0.0f, start);
    m->yarn_corr_[1] = std::min(static_cast<float>(hp.rope_dims - 1), end);
  }
  return std::shared_ptr<const LlamaModel>(std::move(m));
}

void LlamaModel::RopeRow(int pos, float* out) const {
  const LlamaHparams& hp = hparams_;
  const RopeScaling& rs = hp.rope_scaling;
  const int half = hp.rope_dims / 2;
  const float freq_scale = rs.type == RopeScaling::Type::kNone ? 1.0f : 1.0f / rs.factor;
  float mscale = rs.attn_factor;
  const bool yarn = rs.type == RopeScaling::Type::kYarn && rs.yarn_ext_factor != 0.0f;
  if (yarn) mscale *= 1.0f + 0.1f * std::log(1.0f / freq_scale);
  for (int i = 0; i < half; ++i) {
    // Frequency factors divide theta before scaling, as ggml's rope cache.
    const float theta_extrap = static_cast<float>(pos) * inv_freq_[static_cast<size_t>(i)];
    float theta = rs.type == RopeScaling::Type::kNone ? theta_extrap : freq_scale * theta_extrap;
    if (yarn) {
      // ggml-cpu ops.cpp `rope_yarn` / `rope_yarn_ramp` (i0 = 2i).
      const float y = (static_cast<float>(i) - yarn_corr_[0]) / std::max(0.001f, yarn_corr_[1] - yarn_corr_[0]);
      const float ramp_mix = (1.0f - std::min(1.0f, std::max(0.0f, y))) * rs.yarn_ext_factor;
      theta = theta * (1.0f - ramp_mix) + theta_extrap * ramp_mix;
    }
    out[2 * i] = std::cos(theta) * mscale;
    out[2 * i + 1] = std::sin(theta) * mscale;
  }
}

KvPoolShape LlamaModel::KvShape(KvType type, int64_t budget_bytes) const {
  KvPoolShape shape;
  shape.layers = hparams_.block_count;
  shape.kv_heads = hparams_.head_count_kv;
  shape.head_dim = hparams_.head_dim;
  shape.type = type;
  const auto page = static_cast<int64_t>(KvBytesPerToken(type)) * kKvPageTokens;
  shape.max_pages = static_cast<int>(std::clamp<int64_t>(budget_bytes / page, 1, 1 << 30));
  return shape;
}

size_t LlamaModel::KvBytesPerToken(KvType type) const {
  return static_cast<size_t>(hparams_.block_count) * 2 * static_cast<size_t>(hparams_.head_count_kv) *
         KvRowBytes(type, hparams_.head_dim);
}

Result<std::unique_ptr<LlamaRunner>> LlamaRunner::Create(std::shared_ptr<const LlamaModel> model, int max_batch_tokens,
                                                         int max_logits) {
  if (max_batch_tokens < 1) return InvalidArgument("max_batch_tokens must be >= 1");
  if (max_logits < 1) return InvalidArgument("max_logits must be >= 1");
  const LlamaHparams& hp = model->hparams();
  Backend& be = model->backend();
  std::unique_ptr<LlamaRunner> r(new LlamaRunner());
  r->max_batch_ = max_batch_tokens;
  r->max_logits_ = std::min(max_logits, max_batch_tokens);
  const int b = r->max_batch_;
  const int lb = r->max_logits_;
  const int q_dim = hp.head_count * hp.head_dim;
  const int kv_dim = hp.head_count_kv * hp.head_dim;
  struct Part {
    ActTensor* dst;
    int rows;
    int cols;
  } parts[] = {
      {&r->x_, b, hp.embedding_length},     {&r->xb_, b, hp.embedding_length}, {&r->q_, b, q_dim},
      {&r->k_, b, kv_dim},                  {&r->v_, b, kv_dim},               {&r->att_, b, q_dim},
      {&r->hb_, b, hp.feed_forward_length}, {&r->hb2_, b, hp.feed_forward_length},
      {&r->last_, lb, hp.embedding_length}, {&r->logits_act_, lb, hp.vocab_size},
  };
  // Each tensor starts on a 64-byte boundary.
  auto padded = [](size_t floats) { return (floats + 15) / 16 * 16; };
  size_t total = 0;
  for (const Part& p : parts) total += padded(static_cast<size_t>(p.rows) * static_cast<size_t>(p.cols));
  // A device backend allocates in its own memory and budget, and says it is
  // full the only way a unique_ptr-returning call can: std::bad_alloc. That is
  // a load-time resource error, not a crash (cuda_backend.hpp, "Memory").
  try {
    r->buffer_ = be.AllocActivations(total);
  } catch (const std::bad_alloc&) {
    return Error{ErrorCode::kResourceExhausted,
                 "cannot allocate " + std::to_string(total * sizeof(float) >> 20) + " MiB of activations for " +
                     std::to_string(b) + " batch tokens on " + be.Name(),
                 {}, {}, {}, {}};
  }
  size_t offset = 0;
  for (const Part& p : parts) {
    *p.dst = r->buffer_->Tensor(offset, p.rows, p.cols);
    offset += padded(static_cast<size_t>(p.rows) * static_cast<size_t>(p.cols));
  }
  r->rope_.resize(static_cast<size_t>(b) * static_cast<size_t>(hp.rope_dims));
  r->ids_.resize(static_cast<size_t>(b));
  r->logits_.resize(static_cast<size_t>(lb) * static_cast<size_t>(hp.vocab_size));
  r->model_ = std::move(model);
  return r;
}

Result<std::span<const float>> LlamaRunner::Decode(PagedKvCache& cache, std::span<const BatchItem> items) {
  if (items.empty()) return InvalidArgument("Decode called with no sequences");
  const int vocab = model_->hparams().vocab_size;
  size_t tokens = 0;
  int logit_rows = 0;
  for (size_t i = 0; i < items.size(); ++i) {
    const BatchItem& item = items[i];
    if (item.seq == nullptr || item.tokens.empty()) return InvalidArgument("Decode called with an empty sequence");
    for (size_t j = 0; j < i; ++j) {
      if (items[j].seq == item.seq) return InvalidArgument("Decode called with one sequence twice");
    }
    for (TokenId t : item.tokens) {
      if (t < 0 || t >= vocab) return InvalidArgument("token id " + std::to_string(t) + " is outside the vocabulary");
    }
    tokens += item.tokens.size();
    logit_rows += item.logits ? 1 : 0;
  }
  if (tokens > static_cast<size_t>(max_batch_)) {
    return InvalidArgument("batch of " + std::to_string(tokens) + " tokens exceeds max_batch_tokens " +
                           std::to_string(max_batch_));
  }
  if (logit_rows > max_logits_) {
    return InvalidArgument("batch asks for " + std::to_string(logit_rows) + " logit rows, more than " +
                           std::to_string(max_logits_));
  }
  for (const BatchItem& item : items) {
    if (auto r = cache.Reserve(*item.seq, item.seq->tokens() + static_cast<int>(item.tokens.size())); !r) {
      return r.error();
    }
  }
  Forward(cache, items, static_cast<int>(tokens), logit_rows);
  for (const BatchItem& item : items) cache.Append(*item.seq, item.tokens);
  return std::span<const float>(logits_.data(), static_cast<size_t>(logit_rows) * static_cast<size_t>(vocab));
}

void LlamaRunner::Forward(PagedKvCache& cache, std::span<const BatchItem> items, int n, int logit_rows) {
  const LlamaModel& m = *model_;
  const LlamaHparams& hp = m.hparams();
  Backend& be = m.backend();
  const float eps = hp.rms_eps;
  const ActTensor x = x_.Rows(0, n);
  const ActTensor xb = xb_.Rows(0, n);
  const ActTensor q = q_.Rows(0, n);
  const ActTensor k = k_.Rows(0, n);
  const ActTensor v = v_.Rows(0, n);
  const ActTensor att = att_.Rows(0, n);
  const ActTensor hb = hb_.Rows(0, n);
  const ActTensor hb2 = hb2_.Rows(0, n);

  seqs_.clear();
  int row = 0;
  for (const BatchItem& item : items) {
    const int first_pos = item.seq->tokens();
    const int rows = static_cast<int>(item.tokens.size());
    for (int i = 0; i < rows; ++i) {
      ids_[static_cast<size_t>(row + i)] = item.tokens[static_cast<size_t>(i)];
      m.RopeRow(first_pos + i, rope_.data() + static_cast<size_t>(row + i) * static_cast<size_t>(hp.rope_dims));
    }
    seqs_.push_back(AttentionSeq{item.seq->pages(), row, rows, first_pos});
    row += rows;
  }
  be.GetRows(m.token_embd(), std::span<const int32_t>(ids_.data(), static_cast<size_t>(n)), x);
  const RopeTable rope{rope_.data(), hp.rope_dims};
  AttentionShape shape;
  shape.head_count = hp.head_count;
  shape.head_count_kv = hp.head_count_kv;
  shape.head_dim = hp.head_dim;
  shape.scale = 1.0f / std::sqrt(static_cast<float>(hp.head_dim));

  for (int l = 0; l < hp.block_count; ++l) {
    const LlamaModel::Layer& L = m.layers()[static_cast<size_t>(l)];
    be.RmsNorm(x, L.attn_norm.get(), eps, xb);
    const MatMulTarget qkv[] = {{L.wq.get(), q, false}, {L.wk.get(), k, false}, {L.wv.get(), v, false}};
    be.MatMul(xb, qkv);
    if (L.bq) {
      be.AddBias(q, *L.bq);
      be.AddBias(k, *L.bk);
      be.AddBias(v, *L.bv);
    }
    if (L.q_norm) {
      be.RmsNorm(q.Split(hp.head_dim), L.q_norm.get(), eps, q.Split(hp.head_dim));
      be.RmsNorm(k.Split(hp.head_dim), L.k_norm.get(), eps, k.Split(hp.head_dim));
    }
    be.Rope(q, hp.head_count, hp.head_dim, rope, hp.rope_mode);
    be.Rope(k, hp.head_count_kv, hp.head_dim, rope, hp.rope_mode);
    be.Attention(l, cache.pool(), q, k, v, seqs_, shape, att);
    const MatMulTarget wo[] = {{L.wo.get(), x, true}};
    be.MatMul(att, wo);

    be.RmsNorm(x, L.ffn_norm.get(), eps, xb);
    const MatMulTarget gate_up[] = {{L.w_gate.get(), hb, false}, {L.w_up.get(), hb2, false}};
    be.MatMul(xb, gate_up);
    be.SwiGlu(hb, hb2, hb);
    const MatMulTarget down[] = {{L.w_down.get(), x, true}};
    be.MatMul(hb, down);
  }

  // Logits only for the last token of the items that want them: that is all
  // generation needs.
  if (logit_rows == 0) return;
  int out_row = 0;
  row = 0;
  for (const BatchItem& item : items) {
    row += static_cast<int>(item.tokens.size());
    if (!item.logits) continue;
    be.RmsNorm(x.Rows(row - 1, 1), &m.output_norm(), eps, last_.Rows(out_row, 1));
    ++out_row;
  }
  const ActTensor logits = logits_act_.Rows(0, logit_rows);
  const MatMulTarget out[] = {{&m.output(), logits, false}};
  be.MatMul(last_.Rows(0, logit_rows), out);
  be.ReadRows(logits, std::span<float>(logits_.data(), static_cast<size_t>(logit_rows) * static_cast<size_t>(hp.vocab_size)));
}

Result<std::unique_ptr<LlamaContext>> LlamaContext::Create(std::shared_ptr<const LlamaModel> model,
                                                           int context_length) {
  ContextOptions options;
  options.context_length = context_length;
  return Create(std::move(model), options);
}

Result<std::unique_ptr<LlamaContext>> LlamaContext::Create(std::shared_ptr<const LlamaModel> model,
                                                           const ContextOptions& options) {
  if (options.context_length < 0) return InvalidArgument("context_length must be >= 0");
  if (options.max_batch < 1) return InvalidArgument("max_batch must be >= 1");
  std::unique_ptr<LlamaContext> c(new LlamaContext());
  c->context_length_ = options.context_length == 0 ? model->hparams().context_length : options.context_length;
  // Exactly the pages one sequence of context_length tokens needs.
  const auto pages = (static_cast<int64_t>(c->context_length_) + kKvPageTokens - 1) / kKvPageTokens;
  const KvPoolShape shape = model->KvShape(
      options.kv_type, pages * kKvPageTokens * static_cast<int64_t>(model->KvBytesPerToken(options.kv_type)));
  auto cache = PagedKvCache::Create(model->backend(), shape, /*prefix_cache=*/false);
  if (!cache) return cache.error();
  c->cache_ = std::move(*cache);
  auto runner = LlamaRunner::Create(std::move(model), std::min(options.max_batch, c->context_length_), 1);
  if (!runner) return runner.error();
  c->runner_ = std::move(*runner);
  return c;
}

LlamaContext::~LlamaContext() {
  if (cache_) cache_->Release(seq_);
}

void LlamaContext::Reset() { cache_->Release(seq_); }

Result<std::span<const float>> LlamaContext::Decode(std::span<const TokenId> tokens) {
  if (tokens.empty()) return InvalidArgument("Decode called with no tokens");
  if (tokens.size() > static_cast<size_t>(context_length_ - position())) {
    return InvalidArgument("sequence of " + std::to_string(position() + tokens.size()) +
                           " tokens exceeds the context length " + std::to_string(context_length_));
  }
  const int vocab = model().hparams().vocab_size;
  for (TokenId t : tokens) {
    if (t < 0 || t >= vocab) return InvalidArgument("token id " + std::to_string(t) + " is outside the vocabulary");
  }
  if (auto r = cache_->Reserve(seq_, position() + static_cast<int>(tokens.size())); !r) return r.error();
  std::span<const float> logits;
  const auto batch = static_cast<size_t>(runner_->max_batch_tokens());
  for (size_t done = 0; done < tokens.size();) {
    const size_t n = std::min(batch, tokens.size() - done);
    const BatchItem item{&seq_, tokens.subspan(done, n), done + n == tokens.size()};
    auto r = runner_->Decode(*cache_, std::span<const BatchItem>(&item, 1));
    if (!r) return r.error();
    logits = *r;
    done += n;
  }
  return logits;
}

}  // namespace tollgate::local_backend
