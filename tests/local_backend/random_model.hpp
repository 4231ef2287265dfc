// Small random-weight GGUF models of every architecture and tensor type, and a
// float64 reference forward pass over their exact (dequantized) weights.
// Used by model_reference_test.cpp and cpu_backend_test.cpp.
#pragma once

#include "tollgate/local_backend/gguf.hpp"
#include "tollgate/local_backend/gguf_writer.hpp"
#include "tollgate/local_backend/kv_cache.hpp"
#include "tollgate/local_backend/model.hpp"
#include "tollgate/local_backend/quant.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <random>
#include <span>
#include <string>
#include <unistd.h>
#include <vector>

namespace tollgate::local_backend::testing {

struct RandomModelSpec {
  std::string arch = "llama";  // general.architecture
  GgmlType type = GgmlType::kF32;
  int layers = 2;
  int hidden = 256;
  int heads = 4;
  int kv_heads = 2;
  int head_dim = 64;
  int ffn = 512;
  int vocab = 320;
  int context = 256;
  bool tied = false;
  float rope_base = 10000.0f;
  std::string rope_scaling;  // "", "linear", "yarn"
  float rope_factor = 1.0f;
  int rope_original_context = 0;
  bool rope_freq_factors = false;  // rope_freqs.weight (Llama 3.1 style)
  uint32_t seed = 7;
};

inline bool HasQkNorm(const RandomModelSpec& s) { return s.arch == "qwen3"; }
inline bool HasBias(const RandomModelSpec& s) { return s.arch == "qwen2"; }

// Writes the model to a fresh temporary file and removes it on destruction.
// A .gguf path under the temp directory, unique in this process; the file,
// if any was written there, is removed when this is destroyed.
class TempGgufPath {
 public:
  explicit TempGgufPath(const std::string& prefix)
      : path_((std::filesystem::temp_directory_path() /
               ("tollgate_" + prefix + "_" + std::to_string(::getpid()) + "_" + std::to_string(counter_++) + ".gguf"))
                  .string()) {}
  ~TempGgufPath() { std::filesystem::remove(path_); }
  TempGgufPath(const TempGgufPath&) = delete;
  TempGgufPath& operator=(const TempGgufPath&) = delete;
  const std::string& path() const { return path_; }

 private:
  static inline int counter_ = 0;
  std::string path_;
};

class RandomModelFile {
 public:
  explicit RandomModelFile(const RandomModelSpec& spec) : path_("random") {
    std::mt19937 rng(spec.seed);
    GgufWriter w;
    const std::string a = spec.arch + ".";
    w.SetString("general.architecture", spec.arch);
    w.SetUint32(a + "context_length", static_cast<uint32_t>(spec.context));
    w.SetUint32(a + "embedding_length", static_cast<uint32_t>(spec.hidden));
    w.SetUint32(a + "block_count", static_cast<uint32_t>(spec.layers));
    w.SetUint32(a + "feed_forward_length", static_cast<uint32_t>(spec.ffn));
    w.SetUint32(a + "attention.head_count", static_cast<uint32_t>(spec.heads));
    w.SetUint32(a + "attention.head_count_kv", static_cast<uint32_t>(spec.kv_heads));
    w.SetUint32(a + "attention.key_length", static_cast<uint32_t>(spec.head_dim));
    w.SetUint32(a + "attention.value_length", static_cast<uint32_t>(spec.head_dim));
    w.SetFloat32(a + "attention.layer_norm_rms_epsilon", 1e-6f);
    w.SetFloat32(a + "rope.freq_base", spec.rope_base);
    w.SetUint32(a + "rope.dimension_count", static_cast<uint32_t>(spec.head_dim));
    if (!spec.rope_scaling.empty()) {
      w.SetString(a + "rope.scaling.type", spec.rope_scaling);
      w.SetFloat32(a + "rope.scaling.factor", spec.rope_factor);
      if (spec.rope_original_context > 0) {
        w.SetUint32(a + "rope.scaling.original_context_length", static_cast<uint32_t>(spec.rope_original_context));
      }
    }
    auto add = [&](const std::string& name, std::vector<int64_t> ne, GgmlType type, float std_dev, float mean = 0.0f) {
      int64_t n = 1;
      for (int64_t d : ne) n *= d;
      std::normal_distribution<float> dist(mean, std_dev);
      std::vector<float> data(static_cast<size_t>(n));
      for (float& f : data) f = dist(rng);
      auto r = w.AddTensor(name, ne, type, data);
      if (!r) ADD_FAILURE() << r.error().message;
    };
    const int64_t q_dim = static_cast<int64_t>(spec.heads) * spec.head_dim;
    const int64_t kv_dim = static_cast<int64_t>(spec.kv_heads) * spec.head_dim;
    // Larger q/k weights than a trained model's scale so that attention is far
    // from uniform and its errors show in the logits.
    add("token_embd.weight", {spec.hidden, spec.vocab}, spec.type, 1.0f);
    if (spec.rope_freq_factors) {
      std::vector<float> ff(static_cast<size_t>(spec.head_dim / 2));
      for (size_t i = 0; i < ff.size(); ++i) ff[i] = 1.0f + static_cast<float>(i) * 0.25f;
      auto r = w.AddTensor("rope_freqs.weight", std::vector<int64_t>{spec.head_dim / 2}, GgmlType::kF32, ff);
      if (!r) ADD_FAILURE() << r.error().message;
    }
    for (int l = 0; l < spec.layers; ++l) {
      const std::string p = "blk." + std::to_string(l) + ".";
      add(p + "attn_norm.weight", {spec.hidden}, GgmlType::kF32, 0.1f, 1.0f);
      add(p + "attn_q.weight", {spec.hidden, q_dim}, spec.type, 0.12f);
      add(p + "attn_k.weight", {spec.hidden, kv_dim}, spec.type, 0.12f);
      add(p + "attn_v.weight", {spec.hidden, kv_dim}, spec.type, 0.06f);
      if (HasBias(spec)) {
        add(p + "attn_q.bias", {q_dim}, GgmlType::kF32, 0.3f);
        add(p + "attn_k.bias", {kv_dim}, GgmlType::kF32, 0.3f);
        add(p + "attn_v.bias", {kv_dim}, GgmlType::kF32, 0.3f);
      }
      if (HasQkNorm(spec)) {
        add(p + "attn_q_norm.weight", {spec.head_dim}, GgmlType::kF32, 0.2f, 1.0f);
        add(p + "attn_k_norm.weight", {spec.head_dim}, GgmlType::kF32, 0.2f, 1.0f);
      }
      add(p + "attn_output.weight", {q_dim, spec.hidden}, spec.type, 0.06f);
      add(p + "ffn_norm.weight", {spec.hidden}, GgmlType::kF32, 0.1f, 1.0f);
      add(p + "ffn_gate.weight", {spec.hidden, spec.ffn}, spec.type, 0.06f);
      add(p + "ffn_up.weight", {spec.hidden, spec.ffn}, spec.type, 0.06f);
      add(p + "ffn_down.weight", {spec.ffn, spec.hidden}, spec.type, 0.06f);
    }
    add("output_norm.weight", {spec.hidden}, GgmlType::kF32, 0.1f, 1.0f);
    if (!spec.tied) add("output.weight", {spec.hidden, spec.vocab}, spec.type, 0.06f);
    auto r = w.WriteFile(path_.path());
    if (!r) ADD_FAILURE() << r.error().message;
  }
  const std::string& path() const { return path_.path(); }

 private:
  TempGgufPath path_;
};

// The forward pass of model.hpp in float64 over the file's weights dequantized
// exactly (quant.hpp), with exact exp/cos/sin: what the engine approximates.
class ReferenceModel {
 public:
  ReferenceModel(const GgufFile& gguf, const RandomModelSpec& spec) : s_(spec) {
    auto mat = [&](const std::string& name) {
      const GgufTensorInfo* t = gguf.FindTensor(name);
      if (!t) {
        ADD_FAILURE() << "missing " << name;
        return std::vector<double>();
      }
      std::vector<float> f(static_cast<size_t>(t->element_count()));
      const int64_t cols = t->ne[0];
      const int64_t rows = t->element_count() / cols;
      const auto bytes = gguf.TensorData(*t);
      const int64_t row_bytes = RowBytes(t->type, cols);
      for (int64_t r = 0; r < rows; ++r) {
        DequantizeRow(t->type, bytes.data() + r * row_bytes, f.data() + r * cols, cols);
      }
      return std::vector<double>(f.begin(), f.end());
    };
    embd_ = mat("token_embd.weight");
    output_ = spec.tied ? embd_ : mat("output.weight");
    output_norm_ = mat("output_norm.weight");
    if (spec.rope_freq_factors) freq_factors_ = mat("rope_freqs.weight");
    for (int l = 0; l < spec.layers; ++l) {
      const std::string p = "blk." + std::to_string(l) + ".";
      Layer L;
      L.attn_norm = mat(p + "attn_norm.weight");
      L.wq = mat(p + "attn_q.weight");
      L.wk = mat(p + "attn_k.weight");
      L.wv = mat(p + "attn_v.weight");
      L.wo = mat(p + "attn_output.weight");
      if (HasBias(spec)) {
        L.bq = mat(p + "attn_q.bias");
        L.bk = mat(p + "attn_k.bias");
        L.bv = mat(p + "attn_v.bias");
      }
      if (HasQkNorm(spec)) {
        L.q_norm = mat(p + "attn_q_norm.weight");
        L.k_norm = mat(p + "attn_k_norm.weight");
      }
      L.ffn_norm = mat(p + "ffn_norm.weight");
      L.gate = mat(p + "ffn_gate.weight");
      L.up = mat(p + "ffn_up.weight");
      L.down = mat(p + "ffn_down.weight");
      layers_.push_back(std::move(L));
    }
  }

  // Logits after each of `tokens` (positions 0..n-1), vocab values per position.
  std::vector<std::vector<double>> Logits(const std::vector<int32_t>& tokens) const {
    const int n = static_cast<int>(tokens.size());
    const int H = s_.hidden, hd = s_.head_dim, q_dim = s_.heads * hd, kv_dim = s_.kv_heads * hd;
    std::vector<std::vector<double>> x(static_cast<size_t>(n));
    for (int t = 0; t < n; ++t) {
      x[t].assign(embd_.begin() + static_cast<ptrdiff_t>(tokens[t]) * H, embd_.begin() + static_cast<ptrdiff_t>(tokens[t] + 1) * H);
    }
    for (const Layer& L : layers_) {
      std::vector<std::vector<double>> q(n), k(n), v(n);
      for (int t = 0; t < n; ++t) {
        const std::vector<double> h = Norm(x[t], L.attn_norm);
        q[t] = MatVec(L.wq, h, q_dim);
        k[t] = MatVec(L.wk, h, kv_dim);
        v[t] = MatVec(L.wv, h, kv_dim);
        if (HasBias(s_)) {
          for (int i = 0; i < q_dim; ++i) q[t][i] += L.bq[i];
          for (int i = 0; i < kv_dim; ++i) k[t][i] += L.bk[i], v[t][i] += L.bv[i];
        }
        if (HasQkNorm(s_)) {
          HeadNorm(q[t], L.q_norm);
          HeadNorm(k[t], L.k_norm);
        }
        Rope(q[t], s_.heads, t);
        Rope(k[t], s_.kv_heads, t);
      }
      for (int t = 0; t < n; ++t) {
        std::vector<double> att(static_cast<size_t>(q_dim), 0.0);
        for (int h = 0; h < s_.heads; ++h) {
          const int g = h / (s_.heads / s_.kv_heads);
          std::vector<double> sc(static_cast<size_t>(t + 1));
          double mx = -1e300;
          for (int u = 0; u <= t; ++u) {
            double d = 0;
            for (int i = 0; i < hd; ++i) d += q[t][h * hd + i] * k[u][g * hd + i];
            sc[u] = d / std::sqrt(static_cast<double>(hd));
            mx = std::max(mx, sc[u]);
          }
          double sum = 0;
          for (double& e : sc) sum += (e = std::exp(e - mx));
          for (int u = 0; u <= t; ++u) {
            for (int i = 0; i < hd; ++i) att[h * hd + i] += sc[u] / sum * v[u][g * hd + i];
          }
        }
        const std::vector<double> o = MatVec(L.wo, att, H);
        for (int i = 0; i < H; ++i) x[t][i] += o[i];
        const std::vector<double> m = Norm(x[t], L.ffn_norm);
        const std::vector<double> g = MatVec(L.gate, m, s_.ffn);
        const std::vector<double> u = MatVec(L.up, m, s_.ffn);
        std::vector<double> a(static_cast<size_t>(s_.ffn));
        for (int i = 0; i < s_.ffn; ++i) a[i] = g[i] / (1.0 + std::exp(-g[i])) * u[i];
        const std::vector<double> d = MatVec(L.down, a, H);
        for (int i = 0; i < H; ++i) x[t][i] += d[i];
      }
    }
    std::vector<std::vector<double>> out;
    for (int t = 0; t < n; ++t) out.push_back(MatVec(output_, Norm(x[t], output_norm_), s_.vocab));
    return out;
  }

 private:
  struct Layer {
    std::vector<double> attn_norm, wq, wk, wv, wo, bq, bk, bv, q_norm, k_norm, ffn_norm, gate, up, down;
  };

  static std::vector<double> MatVec(const std::vector<double>& w, const std::vector<double>& x, int rows) {
    const size_t cols = x.size();
    std::vector<double> y(static_cast<size_t>(rows));
    for (int r = 0; r < rows; ++r) {
      double s = 0;
      for (size_t c = 0; c < cols; ++c) s += w[r * cols + c] * x[c];
      y[r] = s;
    }
    return y;
  }
  static std::vector<double> Norm(const std::vector<double>& x, const std::vector<double>& w) {
    double ss = 0;
    for (double v : x) ss += v * v;
    const double scale = 1.0 / std::sqrt(ss / static_cast<double>(x.size()) + 1e-6);
    std::vector<double> y(x.size());
    for (size_t i = 0; i < x.size(); ++i) y[i] = x[i] * scale * w[i];
    return y;
  }
  void HeadNorm(std::vector<double>& v, const std::vector<double>& w) const {
    const size_t hd = w.size();
    for (size_t h = 0; h * hd < v.size(); ++h) {
      std::vector<double> part(v.begin() + h * hd, v.begin() + (h + 1) * hd);
      part = Norm(part, w);
      std::copy(part.begin(), part.end(), v.begin() + h * hd);
    }
  }
  // RoPE with the scaling of model.hpp in float64 (ggml's rope_yarn formulas).
  void Rope(std::vector<double>& v, int heads, int pos) const {
    const int dims = s_.head_dim;
    const int half = dims / 2;
    const bool neox = s_.arch == "qwen2" || s_.arch == "qwen3";
    double freq_scale = 1.0, mscale = 1.0, ext = 0.0, corr0 = 0.0, corr1 = 0.0;
    if (s_.rope_scaling == "linear" || s_.rope_scaling == "yarn") freq_scale = 1.0 / s_.rope_factor;
    if (s_.rope_scaling == "yarn") {
      ext = 1.0;
      mscale = 1.0 + 0.1 * std::log(1.0 / freq_scale);
      const int orig = s_.rope_original_context > 0 ? s_.rope_original_context : s_.context;
      auto corr = [&](double n_rot) {
        return dims * std::log(orig / (n_rot * 2 * M_PI)) / (2 * std::log(static_cast<double>(s_.rope_base)));
      };
      corr0 = std::max(0.0, std::floor(corr(32.0)));
      corr1 = std::min(static_cast<double>(dims - 1), std::ceil(corr(1.0)));
    }
    for (int h = 0; h < heads; ++h) {
      double* x = v.data() + static_cast<size_t>(h) * dims;
      for (int i = 0; i < half; ++i) {
        double theta_extrap = pos * std::pow(static_cast<double>(s_.rope_base), -2.0 * i / dims);
        if (!freq_factors_.empty()) theta_extrap /= freq_factors_[i];
        double theta = freq_scale * theta_extrap;
        if (ext != 0.0) {
          const double y = (i - corr0) / std::max(0.001, corr1 - corr0);
          const double ramp = (1.0 - std::min(1.0, std::max(0.0, y))) * ext;
          theta = theta * (1 - ramp) + theta_extrap * ramp;
        }
        const double c = std::cos(theta) * mscale, s = std::sin(theta) * mscale;
        const int a = neox ? i : 2 * i;
        const int b = neox ? i + half : 2 * i + 1;
        const double x0 = x[a], x1 = x[b];
        x[a] = x0 * c - x1 * s;
        x[b] = x0 * s + x1 * c;
      }
    }
  }

  RandomModelSpec s_;
  std::vector<double> embd_, output_, output_norm_, freq_factors_;
  std::vector<Layer> layers_;
};

// ||a - b|| / ||b|| over one logits vector.
inline double RelativeError(std::span<const float> got, const std::vector<double>& want) {
  double num = 0, den = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    num += (got[i] - want[i]) * (got[i] - want[i]);
    den += want[i] * want[i];
  }
  return std::sqrt(num / den);
}

// Runs every prompt through one LlamaRunner and PagedKvCache (continuous
// batching): sequence i joins at step joins[i]; its prompt goes in chunks of
// at most `chunk` tokens (logits only with the last), alongside the other
// sequences' decode rows; then one decode row each per step, the token that
// next(i, logits) returns for its last logits, until each sequence has had
// `rows` logits rows. Expects every sequence to end at prompt + rows - 1
// tokens and the cache to hold no page afterwards. False (with a failure
// added) when a Decode fails.
inline bool DecodeTogether(const std::shared_ptr<const LlamaModel>& model,
                           const std::vector<std::vector<TokenId>>& prompts, const std::vector<int>& joins, int chunk,
                           int rows, const std::function<TokenId(size_t, std::span<const float>)>& next) {
  const size_t n = prompts.size();
  const int vocab = model->hparams().vocab_size;
  const KvPoolShape shape = model->KvShape(KvType::kF16, 32 * kKvPageTokens * model->KvBytesPerToken(KvType::kF16));
  auto cache = PagedKvCache::Create(model->backend(), shape, /*prefix_cache=*/false);
  auto runner = LlamaRunner::Create(model, 512, static_cast<int>(n));
  if (!cache || !runner) {
    ADD_FAILURE() << (!cache ? cache.error().message : runner.error().message);
    return false;
  }
  std::vector<KvSequence> seqs(n);
  std::vector<size_t> fed(n, 0);
  std::vector<int> got(n, 0);
  std::vector<TokenId> last(n, 0);
  for (int step = 0;; ++step) {
    std::vector<BatchItem> items;
    std::vector<size_t> owners;  // the sequence of each logits row
    for (size_t i = 0; i < n; ++i) {
      if (step < joins[i] || got[i] == rows) continue;
      BatchItem item;
      item.seq = &seqs[i];
      if (fed[i] < prompts[i].size()) {
        const size_t take = std::min(static_cast<size_t>(chunk), prompts[i].size() - fed[i]);
        item.tokens = std::span<const TokenId>(prompts[i]).subspan(fed[i], take);
        fed[i] += take;
        item.logits = fed[i] == prompts[i].size();
      } else {
        item.tokens = std::span<const TokenId>(&last[i], 1);
        item.logits = true;
      }
      items.push_back(item);
      if (item.logits) owners.push_back(i);
    }
    if (items.empty()) break;
    auto logits = (*runner)->Decode(**cache, items);
    if (!logits) {
      ADD_FAILURE() << logits.error().message;
      return false;
    }
    EXPECT_EQ(logits->size(), owners.size() * static_cast<size_t>(vocab));
    for (size_t r = 0; r < owners.size(); ++r) {
      const size_t i = owners[r];
      last[i] = next(i, logits->subspan(r * static_cast<size_t>(vocab), static_cast<size_t>(vocab)));
      ++got[i];
    }
  }
  for (size_t i = 0; i < n; ++i) {
    EXPECT_EQ(seqs[i].tokens(), static_cast<int>(prompts[i].size()) + rows - 1);
    (*cache)->Release(seqs[i]);
  }
  EXPECT_EQ((*cache)->stats().used_pages, 0);
  return true;
}

}  // namespace tollgate::local_backend::testing
