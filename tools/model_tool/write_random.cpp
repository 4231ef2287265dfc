// write-random: a GGUF model file with random weights, llama.cpp's layout.
//
// Metadata keys, tensor names and shapes follow what llama.cpp loads
// (src/llama-arch.cpp LLM_KV_* / LLM_TENSOR_* names, src/llama-model.cpp
// load_tensors) and what convert_hf_to_gguf.py writes:
//   general.architecture, general.name, general.file_type (llama_ftype),
//   general.quantization_version (2, for quantized files);
//   {arch}.context_length, .embedding_length, .block_count,
//   .feed_forward_length, .attention.head_count, .attention.head_count_kv,
//   .attention.layer_norm_rms_epsilon, .rope.freq_base, .rope.dimension_count,
//   .attention.key_length/.value_length (when head_dim != hidden/heads, and
//   always for qwen3, as convert writes them from config.json head_dim),
//   .vocab_size, and .rope.scaling.{type,factor,original_context_length} for
//   linear and YaRN scaling; Llama 3 scaling is, as in convert's
//   LlamaModel.generate_extra_tensors, a `rope_freqs.weight` tensor of
//   head_dim/2 per-frequency divisors.
//   Tensors (ne = [in, out]): token_embd.weight [hidden, vocab];
//   blk.N.attn_norm.weight [hidden]; blk.N.attn_q.weight [hidden, heads*hd];
//   blk.N.attn_k.weight / attn_v.weight [hidden, kv_heads*hd];
//   blk.N.attn_output.weight [heads*hd, hidden]; blk.N.ffn_norm.weight [hidden];
//   blk.N.ffn_gate.weight / ffn_up.weight [hidden, ffn]; blk.N.ffn_down.weight
//   [ffn, hidden]; output_norm.weight [hidden]; output.weight [hidden, vocab]
//   unless the embeddings are tied; qwen2 adds blk.N.attn_{q,k,v}.bias, qwen3
//   blk.N.attn_q_norm.weight / attn_k_norm.weight [hd].
// `--arch mistral` writes general.architecture "llama": llama.cpp has no
// separate Mistral (7B) architecture; convert_hf_to_gguf.py maps
// MistralForCausalLM to LLAMA.
//
// Tokenizers: a Hugging Face tokenizer.json + tokenizer_config.json is turned
// into a "gpt2" vocabulary exactly as convert_hf_to_gguf.py get_vocab_base()
// does (ids without a token become "[PAD<id>]" UNUSED up to the model's vocab
// size; added tokens are CONTROL when special or when they look special
// (<|...|>, <｜...｜>), else USER_DEFINED with U+2581 -> ' '), merges as
// "a b" strings, tokenizer.ggml.pre by the model family (convert's
// get_vocab_base_pre names: "qwen2", "llama-bpe", "deepseek-v3",
// "deepseek-r1-qwen"; --tokenizer-pre overrides). Without a tokenizer
// directory: a small SentencePiece ("llama") vocabulary: <unk>, <s>, </s>,
// the 256 byte tokens, then printable characters and letter n-grams.
//
// Weights: normal(0, 0.02) (biases too), RMSNorm weights 1. Every row's values
// come from (seed, tensor name, row) alone, so files do not depend on the
// thread count. Norm and bias vectors stay F32 (as llama-quantize keeps 1-D
// tensors); 2-D tensors take --type, except that a block-quantized type whose
// block does not divide the row length (e.g. Q4_K's 256 and Qwen2.5-0.5B's
// 896-wide rows) falls back as llama-quantize does (src/llama-quant.cpp,
// llama_tensor_get_type): Q4_K -> Q5_0, Q5_K -> Q5_1, Q6_K -> Q8_0, and F16
// when that block does not divide the row either; other types -> F16
// (--fallback-type overrides). Fallbacks are reported on stdout.
#include "commands.hpp"

#include "tollgate/local_backend/gguf_writer.hpp"
#include "tollgate/local_backend/quant.hpp"

#include <boost/json.hpp>
#include <boost/program_options.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <numbers>
#include <optional>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

namespace tollgate::model_tool {
namespace {

namespace po = boost::program_options;
namespace json = boost::json;
using local_backend::GgmlType;
using local_backend::GgufWriter;

// llama.cpp llama_token_type values (tokenizer.ggml.token_type).
constexpr int32_t kTokNormal = 1;
constexpr int32_t kTokUnknown = 2;
constexpr int32_t kTokControl = 3;
constexpr int32_t kTokUserDefined = 4;
constexpr int32_t kTokUnused = 5;
constexpr int32_t kTokByte = 6;

constexpr float kWeightStd = 0.02f;

struct RopeScaling {
  std::string type;  // "", "linear", "yarn", "llama3"
  double factor = 1.0;
  double low_freq_factor = 1.0;   // llama3
  double high_freq_factor = 4.0;  // llama3
  int64_t original_context = 0;
};

struct Shape {
  std::string name;
  int64_t layers = 0;
  int64_t hidden = 0;
  int64_t ffn = 0;
  int64_t heads = 0;
  int64_t kv_heads = 0;
  int64_t head_dim = 0;  // 0: hidden / heads
  int64_t vocab = 0;
  int64_t context = 0;
  double rope_base = 10000.0;
  double rms_eps = 1e-5;
  bool tied = false;
  RopeScaling rope_scaling;
};

// Hyperparameters from each model's Hugging Face config.json.
std::vector<Shape> KnownShapes() {
  std::vector<Shape> s;
  // Small enough for unit tests; 256-multiples so every K-quant applies.
  s.push_back({"tiny", 2, 256, 512, 4, 2, 64, 512, 512, 10000.0, 1e-5, false, {}});
  s.push_back({"qwen2.5-0.5b", 24, 896, 4864, 14, 2, 64, 151936, 32768, 1000000.0, 1e-6, true, {}});
  s.push_back({"qwen2.5-1.5b", 28, 1536, 8960, 12, 2, 128, 151936, 32768, 1000000.0, 1e-6, true, {}});
  s.push_back({"qwen3-0.6b", 28, 1024, 3072, 16, 8, 128, 151936, 40960, 1000000.0, 1e-6, true, {}});
  s.push_back({"llama-3.2-1b", 16, 2048, 8192, 32, 8, 64, 128256, 131072, 500000.0, 1e-5, true,
               {"llama3", 32.0, 1.0, 4.0, 8192}});
  s.push_back({"tinyllama-1.1b", 22, 2048, 5632, 32, 4, 64, 32000, 2048, 10000.0, 1e-5, false, {}});
  s.push_back({"mistral-7b", 32, 4096, 14336, 32, 8, 128, 32768, 32768, 1000000.0, 1e-5, false, {}});
  return s;
}

struct TypeChoice {
  const char* name;
  GgmlType type;
  uint32_t file_type;  // llama.h llama_ftype
};
constexpr TypeChoice kTypes[] = {
    {"f32", GgmlType::kF32, 0},   {"f16", GgmlType::kF16, 1},   {"bf16", GgmlType::kBF16, 32},
    {"q8_0", GgmlType::kQ8_0, 7}, {"q4_0", GgmlType::kQ4_0, 2}, {"q4_1", GgmlType::kQ4_1, 3},
    {"q5_0", GgmlType::kQ5_0, 8}, {"q5_1", GgmlType::kQ5_1, 9}, {"q4_k", GgmlType::kQ4_K, 14},  // Q4_K_S
    {"q5_k", GgmlType::kQ5_K, 16},  // Q5_K_S
    {"q6_k", GgmlType::kQ6_K, 18},
};

const TypeChoice& ParseType(const std::string& name) {
  std::string lower;
  for (char c : name) lower += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  for (const TypeChoice& t : kTypes) {
    if (lower == t.name) return t;
  }
  throw std::runtime_error("unknown tensor type '" + name +
                           "' (f32, f16, bf16, q8_0, q4_0, q4_1, q5_0, q5_1, q4_k, q5_k, q6_k)");
}

bool IsQuantized(GgmlType t) { return local_backend::QuantBlockSize(t) > 1; }

// ----------------------------------------------------------------- random

uint64_t SplitMix64(uint64_t& state) {
  uint64_t z = (state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

uint64_t Fnv1a(std::string_view s) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char c : s) h = (h ^ c) * 0x100000001b3ull;
  return h;
}

// Fills `row` with normal(0, std) values determined by (seed, name hash, row).
void NormalRow(uint64_t seed, uint64_t name_hash, int64_t row_index, float std_dev, std::span<float> row) {
  uint64_t state = seed ^ (name_hash * 0x9e3779b97f4a7c15ull) ^ (static_cast<uint64_t>(row_index) << 1);
  SplitMix64(state);
  constexpr double kTwoPi = 2.0 * std::numbers::pi;
  for (size_t i = 0; i < row.size(); i += 2) {
    // Box-Muller; u1 in (0, 1] so the log is finite.
    const double u1 = (static_cast<double>(SplitMix64(state) >> 11) + 1.0) * 0x1.0p-53;
    const double u2 = static_cast<double>(SplitMix64(state) >> 11) * 0x1.0p-53;
    const double r = std::sqrt(-2.0 * std::log(u1));
    row[i] = static_cast<float>(std_dev * r * std::cos(kTwoPi * u2));
    if (i + 1 < row.size()) row[i + 1] = static_cast<float>(std_dev * r * std::sin(kTwoPi * u2));
  }
}

// ------------------------------------------------------------- vocabulary

struct Vocab {
  std::string model;  // "llama" (SentencePiece) or "gpt2" (byte-level BPE)
  std::string pre;    // tokenizer.ggml.pre (gpt2 only)
  std::vector<std::string> tokens;
  std::vector<float> scores;  // llama only
  std::vector<int32_t> types;
  std::vector<std::string> merges;  // gpt2 only
  std::optional<int64_t> bos, eos, pad, unk;
  std::optional<bool> add_bos, add_eos, add_space_prefix;
  std::string chat_template;
  std::vector<std::pair<std::string, std::string>> named_templates;  // tokenizer.chat_template.NAME
  std::string source;  // for the summary
};

std::string ReadFile(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot read " + path.string());
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

json::value ParseJsonFile(const std::filesystem::path& path) {
  boost::system::error_code ec;
  json::value v = json::parse(ReadFile(path), ec);
  if (ec) throw std::runtime_error("cannot parse " + path.string() + ": " + ec.message());
  return v;
}

// convert_hf_to_gguf.py does_token_look_special.
bool LooksSpecial(std::string_view t) {
  auto starts = [&](std::string_view p) { return t.substr(0, p.size()) == p; };
  auto ends = [&](std::string_view p) { return t.size() >= p.size() && t.substr(t.size() - p.size()) == p; };
  if (t == "<pad>" || t == "<mask>" || t == "<2mass>" || t == "[@BOS@]") return true;
  if (starts("<|") && ends("|>") && t.size() >= 4) return true;
  if (starts("<｜") && ends("｜>") && t.size() >= 2 * std::string_view("<｜").size()) return true;
  return starts("<unused") && ends(">");
}

std::string ReplaceAll(std::string s, std::string_view from, std::string_view to) {
  for (size_t pos = 0; (pos = s.find(from, pos)) != std::string::npos; pos += to.size()) {
    s.replace(pos, from.size(), to);
  }
  return s;
}

// tokenizer_config.json special tokens are a string, an AddedToken object
// ({"content": ...}), or null.
std::optional<std::string> TokenContent(const json::object& cfg, std::string_view key) {
  const json::value* v = cfg.if_contains(key);
  if (!v || v->is_null()) return std::nullopt;
  if (v->is_string()) return std::string(v->as_string());
  if (v->is_object()) {
    if (const json::value* c = v->as_object().if_contains("content"); c && c->is_string()) {
      return std::string(c->as_string());
    }
  }
  return std::nullopt;
}

// Whether tokenizer.json's post-processor (TemplateProcessing, possibly inside
// a Sequence) puts `bos` first in a single sequence; nullopt when it has none.
std::optional<bool> PostProcessorAddsBos(const json::value& pp, const std::string& bos) {
  if (!pp.is_object()) return std::nullopt;
  const json::object& o = pp.as_object();
  const json::value* type = o.if_contains("type");
  if (!type || !type->is_string()) return std::nullopt;
  if (type->as_string() == "Sequence") {
    if (const json::value* items = o.if_contains("processors"); items && items->is_array()) {
      for (const json::value& item : items->as_array()) {
        if (auto r = PostProcessorAddsBos(item, bos)) return r;
      }
    }
    return std::nullopt;
  }
  if (type->as_string() != "TemplateProcessing") return std::nullopt;
  const json::value* single = o.if_contains("single");
  if (!single || !single->is_array() || single->as_array().empty()) return false;
  const json::value& first = single->as_array()[0];
  if (first.is_object()) {
    if (const json::value* st = first.as_object().if_contains("SpecialToken"); st && st->is_object()) {
      const json::value* id = st->as_object().if_contains("id");
      return id && id->is_string() && id->as_string() == bos;
    }
  }
  return false;
}

Vocab LoadHfTokenizer(const std::filesystem::path& dir, const std::string& pre_override) {
  const json::value tok_json = ParseJsonFile(dir / "tokenizer.json");
  json::value cfg_json = json::object();
  if (std::filesystem::exists(dir / "tokenizer_config.json")) cfg_json = ParseJsonFile(dir / "tokenizer_config.json");
  if (!tok_json.is_object() || !cfg_json.is_object()) throw std::runtime_error("tokenizer files must hold JSON objects");
  const json::object& tok = tok_json.as_object();
  const json::object& cfg = cfg_json.as_object();

  const json::value* model = tok.if_contains("model");
  if (!model || !model->is_object()) throw std::runtime_error("tokenizer.json has no model");
  const json::object& m = model->as_object();
  if (const json::value* t = m.if_contains("type"); !t || !t->is_string() || t->as_string() != "BPE") {
    throw std::runtime_error("tokenizer.json model is not BPE; only byte-level BPE (gpt2) tokenizers are supported");
  }

  struct Entry {
    std::string text;
    int32_t type = kTokUnused;
    bool present = false;
  };
  std::vector<Entry> entries;
  auto put = [&](int64_t id, std::string text, int32_t type) {
    if (id < 0 || id > (int64_t{1} << 24)) throw std::runtime_error("token id " + std::to_string(id) + " out of range");
    if (static_cast<size_t>(id) >= entries.size()) entries.resize(static_cast<size_t>(id) + 1);
    entries[static_cast<size_t>(id)] = {std::move(text), type, true};
  };
  const json::value* vocab = m.if_contains("vocab");
  if (!vocab || !vocab->is_object()) throw std::runtime_error("tokenizer.json model has no vocab object");
  for (const auto& kv : vocab->as_object()) {
    put(kv.value().to_number<int64_t>(), std::string(kv.key()), kTokNormal);
  }
  if (const json::value* added = tok.if_contains("added_tokens"); added && added->is_array()) {
    for (const json::value& a : added->as_array()) {
      const json::object& o = a.as_object();
      const int64_t id = o.at("id").to_number<int64_t>();
      std::string text(o.at("content").as_string());
      const json::value* special = o.if_contains("special");
      // convert re-encodes non-normalized added tokens with the HF tokenizer
      // (decode(encode(t))), which gives the text back for these tokenizers.
      if ((special && special->is_bool() && special->as_bool()) || LooksSpecial(text)) {
        put(id, std::move(text), kTokControl);
      } else {
        put(id, ReplaceAll(std::move(text), "\xE2\x96\x81", " "), kTokUserDefined);
      }
    }
  }

  Vocab v;
  v.model = "gpt2";
  v.source = dir.string();
  std::unordered_map<std::string, int64_t> ids;
  for (size_t i = 0; i < entries.size(); ++i) {
    if (entries[i].present) {
      v.tokens.push_back(entries[i].text);
      ids.emplace(entries[i].text, static_cast<int64_t>(i));
    } else {
      v.tokens.push_back("[PAD" + std::to_string(i) + "]");
    }
    v.types.push_back(entries[i].type);
  }

  if (const json::value* merges = m.if_contains("merges"); merges && merges->is_array()) {
    v.merges.reserve(merges->as_array().size());
    for (const json::value& mv : merges->as_array()) {
      if (mv.is_string()) {
        v.merges.emplace_back(mv.as_string());
      } else if (mv.is_array() && mv.as_array().size() == 2) {  // newer tokenizers: ["a", "b"]
        v.merges.push_back(std::string(mv.as_array()[0].as_string()) + " " + std::string(mv.as_array()[1].as_string()));
      } else {
        throw std::runtime_error("tokenizer.json merges must be strings or pairs");
      }
    }
  }

  auto lookup = [&](std::string_view key) -> std::optional<int64_t> {
    auto content = TokenContent(cfg, key);
    if (!content) return std::nullopt;
    auto it = ids.find(*content);
    if (it == ids.end()) throw std::runtime_error(std::string(key) + " '" + *content + "' is not in the vocabulary");
    return it->second;
  };
  v.bos = lookup("bos_token");
  v.eos = lookup("eos_token");
  v.pad = lookup("pad_token");
  v.unk = lookup("unk_token");
  if (const json::value* b = cfg.if_contains("add_bos_token"); b && b->is_bool()) {
    v.add_bos = b->as_bool();
  } else if (const json::value* pp = tok.if_contains("post_processor"); pp && v.bos) {
    v.add_bos = PostProcessorAddsBos(*pp, v.tokens[static_cast<size_t>(*v.bos)]);
  }
  if (const json::value* e = cfg.if_contains("add_eos_token"); e && e->is_bool()) v.add_eos = e->as_bool();

  if (const json::value* t = cfg.if_contains("chat_template")) {
    if (t->is_string()) {
      v.chat_template = std::string(t->as_string());
    } else if (t->is_array()) {  // [{"name": ..., "template": ...}]
      for (const json::value& item : t->as_array()) {
        const json::object& o = item.as_object();
        const std::string name(o.at("name").as_string());
        const std::string text(o.at("template").as_string());
        if (name == "default") {
          v.chat_template = text;
        } else {
          v.named_templates.emplace_back(name, text);
        }
      }
    }
  }

  // tokenizer.ggml.pre: convert_hf_to_gguf.py identifies the pre-tokenizer by
  // hashing the HF tokenizer's output on a probe text, which needs the HF
  // library; we tell the families apart by their special tokens instead.
  if (!pre_override.empty()) {
    v.pre = pre_override;
  } else {
    const bool qwen = ids.count("<|im_start|>") > 0;
    const bool deepseek = ids.count("<｜begin▁of▁sentence｜>") > 0;
    const bool llama3 = ids.count("<|begin_of_text|>") > 0;
    if (qwen && deepseek) {
      v.pre = "deepseek-r1-qwen";
    } else if (qwen) {
      v.pre = "qwen2";
    } else if (deepseek) {
      v.pre = "deepseek-v3";
    } else if (llama3) {
      v.pre = "llama-bpe";
    } else {
      throw std::runtime_error("cannot tell which llama.cpp pre-tokenizer " + dir.string() +
                               " needs; pass --tokenizer-pre NAME");
    }
  }
  return v;
}

// A small SentencePiece-style vocabulary: <unk> <s> </s>, the byte tokens, then
// single printable characters, "▁"-prefixed letters and lowercase n-grams with
// and without "▁", scored so earlier pieces merge first (as SentencePiece's
// negative log-frequency scores would).
Vocab DefaultVocab(int64_t size) {
  constexpr int64_t kMin = 3 + 256 + 1;
  if (size < kMin) throw std::runtime_error("the default vocabulary needs --vocab >= " + std::to_string(kMin));
  Vocab v;
  v.model = "llama";
  v.source = "default SentencePiece-style vocabulary";
  std::set<std::string> seen;
  auto add = [&](std::string piece, int32_t type) {
    if (static_cast<int64_t>(v.tokens.size()) >= size || !seen.insert(piece).second) return;
    v.scores.push_back(type == kTokNormal ? -static_cast<float>(v.tokens.size()) : 0.0f);
    v.tokens.push_back(std::move(piece));
    v.types.push_back(type);
  };
  add("<unk>", kTokUnknown);
  add("<s>", kTokControl);
  add("</s>", kTokControl);
  for (int b = 0; b < 256; ++b) {
    char buf[8];
    std::snprintf(buf, sizeof buf, "<0x%02X>", b);
    add(buf, kTokByte);
  }
  const std::string kSpace = "\xE2\x96\x81";  // U+2581
  add(kSpace, kTokNormal);
  for (char c = 'a'; c <= 'z'; ++c) add(kSpace + c, kTokNormal);
  for (char c = 33; c < 127; ++c) add(std::string(1, c), kTokNormal);
  for (char c = 'A'; c <= 'Z'; ++c) add(kSpace + c, kTokNormal);
  // Lowercase n-grams of growing length until the vocabulary is full.
  for (int len = 2; static_cast<int64_t>(v.tokens.size()) < size; ++len) {
    std::string gram(static_cast<size_t>(len), 'a');
    while (static_cast<int64_t>(v.tokens.size()) < size) {
      add(kSpace + gram, kTokNormal);
      add(gram, kTokNormal);
      int i = len - 1;  // next n-gram in lexicographic order
      while (i >= 0 && gram[static_cast<size_t>(i)] == 'z') gram[static_cast<size_t>(i--)] = 'a';
      if (i < 0) break;
      ++gram[static_cast<size_t>(i)];
    }
  }
  v.bos = 1;
  v.eos = 2;
  v.unk = 0;
  v.add_bos = true;
  v.add_space_prefix = true;
  return v;
}

// ---------------------------------------------------------------- tensors

enum class Init { kNormal, kOnes, kValues };

struct TensorSpec {
  std::string name;
  std::vector<int64_t> ne;
  GgmlType type = GgmlType::kF32;
  Init init = Init::kNormal;
  std::vector<float> values;  // Init::kValues
};

GgmlType FallbackFor(GgmlType wanted, std::optional<GgmlType> forced) {
  if (forced) return *forced;
  switch (wanted) {
    case GgmlType::kQ4_K: return GgmlType::kQ5_0;
    case GgmlType::kQ5_K: return GgmlType::kQ5_1;
    case GgmlType::kQ6_K: return GgmlType::kQ8_0;
    default: return GgmlType::kF16;
  }
}

// Llama 3 rope_freqs: per-frequency divisors of theta (convert_hf_to_gguf.py
// LlamaModel.generate_extra_tensors, after Meta's apply_scaling).
std::vector<float> Llama3RopeFactors(const Shape& s, int64_t head_dim) {
  const RopeScaling& r = s.rope_scaling;
  const double low_wavelen = static_cast<double>(r.original_context) / r.low_freq_factor;
  const double high_wavelen = static_cast<double>(r.original_context) / r.high_freq_factor;
  std::vector<float> factors;
  for (int64_t i = 0; i < head_dim; i += 2) {
    const double freq = 1.0 / std::pow(s.rope_base, static_cast<double>(i) / static_cast<double>(head_dim));
    const double wavelen = 2.0 * std::numbers::pi / freq;
    if (wavelen < high_wavelen) {
      factors.push_back(1.0f);
    } else if (wavelen > low_wavelen) {
      factors.push_back(static_cast<float>(r.factor));
    } else {
      const double smooth = (static_cast<double>(r.original_context) / wavelen - r.low_freq_factor) /
                            (r.high_freq_factor - r.low_freq_factor);
      factors.push_back(static_cast<float>(1.0 / ((1.0 - smooth) / r.factor + smooth)));
    }
  }
  return factors;
}

int64_t ParsePositive(const std::string& key, const std::string& value) {
  size_t used = 0;
  long long v = 0;
  try {
    v = std::stoll(value, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used != value.size() || v <= 0) throw std::runtime_error(key + " must be a positive integer, got '" + value + "'");
  return v;
}

// `--shape` is a known name or a list "layers=2,hidden=256,..." over `tiny`.
Shape ResolveShape(const std::string& spec) {
  for (const Shape& s : KnownShapes()) {
    if (s.name == spec) return s;
  }
  if (spec.find('=') == std::string::npos) {
    std::string names;
    for (const Shape& s : KnownShapes()) names += (names.empty() ? "" : ", ") + s.name;
    throw std::runtime_error("unknown shape '" + spec + "' (known: " + names + "; or key=value,... dims)");
  }
  Shape s = KnownShapes().front();
  s.name = "custom";
  std::stringstream ss(spec);
  std::string item;
  while (std::getline(ss, item, ',')) {
    const size_t eq = item.find('=');
    if (eq == std::string::npos) throw std::runtime_error("shape item '" + item + "' is not key=value");
    const std::string key = item.substr(0, eq);
    const int64_t v = ParsePositive(key, item.substr(eq + 1));
    if (key == "layers") s.layers = v;
    else if (key == "hidden") s.hidden = v;
    else if (key == "ffn") s.ffn = v;
    else if (key == "heads") s.heads = v;
    else if (key == "kv-heads") s.kv_heads = v;
    else if (key == "head-dim") s.head_dim = v;
    else if (key == "vocab") s.vocab = v;
    else if (key == "context") s.context = v;
    else throw std::runtime_error("unknown shape key '" + key + "'");
  }
  return s;
}

constexpr const char* kDescription = R"(usage: tollgate-model write-random --out FILE [options]

Writes a GGUF model file with random weights (normal(0, 0.02), norms 1) in
llama.cpp's layout, for tests and benchmarks.

shapes (--shape): tiny (2 layers, 256 hidden, 512 ffn, 4 heads, 2 KV heads,
  vocab 512), qwen2.5-0.5b, qwen2.5-1.5b, qwen3-0.6b, llama-3.2-1b,
  tinyllama-1.1b, mistral-7b, or key=value,... over tiny (keys: layers, hidden,
  ffn, heads, kv-heads, head-dim, vocab, context); the flags below override.
tokenizer: --tokenizer-dir DIR with a Hugging Face tokenizer.json (and
  tokenizer_config.json) gives a "gpt2" vocabulary with its merges, special
  ids and chat template; without it a small SentencePiece-style vocabulary.

options)";

}  // namespace

int WriteRandom(int argc, char** argv) {
  std::string arch_opt, shape_opt, type_opt, out_path, tokenizer_dir, tokenizer_pre, name, fallback_opt;
  std::string embd_type_opt, output_type_opt, rope_scaling_opt;
  uint64_t seed = 0;
  int threads = 0;
  po::options_description desc(kDescription);
  // clang-format off
  desc.add_options()
    ("help,h", "this text")
    ("arch", po::value(&arch_opt)->default_value("llama"), "llama | qwen2 | qwen3 | mistral")
    ("shape", po::value(&shape_opt)->default_value("tiny"), "named shape or key=value,... dims")
    ("layers", po::value<int64_t>(), "number of blocks")
    ("hidden", po::value<int64_t>(), "embedding length")
    ("ffn", po::value<int64_t>(), "feed-forward length")
    ("heads", po::value<int64_t>(), "attention heads")
    ("kv-heads", po::value<int64_t>(), "key/value heads")
    ("head-dim", po::value<int64_t>(), "per-head dimension (default hidden / heads)")
    ("vocab", po::value<int64_t>(), "vocabulary size (rows of token_embd)")
    ("context", po::value<int64_t>(), "context length")
    ("rope-base", po::value<double>(), "rope.freq_base")
    ("rms-eps", po::value<double>(), "attention.layer_norm_rms_epsilon")
    ("tied", po::value<bool>(), "tie output to token_embd (true/false; default per shape)")
    ("rope-scaling", po::value(&rope_scaling_opt), "none | linear:FACTOR | yarn:FACTOR:ORIG_CTX | llama3:FACTOR:ORIG_CTX")
    ("type", po::value(&type_opt)->default_value("f32"), "f32 | f16 | bf16 | q8_0 | q4_0 | q4_1 | q5_0 | q5_1 | q4_k | q5_k | q6_k")
    ("embd-type", po::value(&embd_type_opt), "type of token_embd (default --type)")
    ("output-type", po::value(&output_type_opt), "type of output.weight (default --type)")
    ("fallback-type", po::value(&fallback_opt), "type for rows a quantized --type cannot divide")
    ("seed", po::value(&seed)->default_value(1), "random seed")
    ("tokenizer-dir", po::value(&tokenizer_dir), "directory with tokenizer.json and tokenizer_config.json")
    ("tokenizer-pre", po::value(&tokenizer_pre), "tokenizer.ggml.pre (default: by tokenizer family)")
    ("name", po::value(&name), "general.name")
    ("threads", po::value(&threads)->default_value(0), "conversion threads (0: all cores)")
    ("out", po::value(&out_path), "output .gguf file");
  // clang-format on
  po::variables_map vm;
  try {
    po::store(po::command_line_parser(argc, argv).options(desc).run(), vm);
    po::notify(vm);
  } catch (const po::error& e) {
    std::cerr << "tollgate-model write-random: " << e.what() << "\n" << desc << "\n";
    return 2;
  }
  if (vm.count("help")) {
    std::cout << desc << "\n";
    return 0;
  }
  if (out_path.empty()) {
    std::cerr << "tollgate-model write-random: --out is required\n" << desc << "\n";
    return 2;
  }

  try {
    const auto started = std::chrono::steady_clock::now();
    if (arch_opt != "llama" && arch_opt != "qwen2" && arch_opt != "qwen3" && arch_opt != "mistral") {
      throw std::runtime_error("unknown --arch '" + arch_opt + "' (llama, qwen2, qwen3, mistral)");
    }
    const std::string arch = arch_opt == "mistral" ? "llama" : arch_opt;
    Shape shape = ResolveShape(shape_opt);
    auto override_int = [&](const char* key, int64_t* field) {
      if (vm.count(key)) {
        *field = vm[key].as<int64_t>();
        if (*field <= 0) throw std::runtime_error(std::string("--") + key + " must be positive");
      }
    };
    override_int("layers", &shape.layers);
    override_int("hidden", &shape.hidden);
    override_int("ffn", &shape.ffn);
    override_int("heads", &shape.heads);
    override_int("kv-heads", &shape.kv_heads);
    override_int("head-dim", &shape.head_dim);
    override_int("vocab", &shape.vocab);
    override_int("context", &shape.context);
    if (vm.count("hidden") || vm.count("heads")) {
      if (!vm.count("head-dim")) shape.head_dim = 0;  // re-derive from the new hidden/heads
    }
    if (vm.count("rope-base")) shape.rope_base = vm["rope-base"].as<double>();
    if (vm.count("rms-eps")) shape.rms_eps = vm["rms-eps"].as<double>();
    if (vm.count("tied")) shape.tied = vm["tied"].as<bool>();
    if (vm.count("rope-scaling")) {
      std::vector<std::string> parts;
      std::stringstream ss(rope_scaling_opt);
      for (std::string p; std::getline(ss, p, ':');) parts.push_back(p);
      RopeScaling r;
      if (parts.empty() || parts[0] == "none") {
        // no scaling
      } else if ((parts[0] == "linear" && parts.size() == 2) ||
                 ((parts[0] == "yarn" || parts[0] == "llama3") && parts.size() == 3)) {
        r.type = parts[0];
        r.factor = std::stod(parts[1]);
        if (parts.size() == 3) r.original_context = ParsePositive("rope-scaling ORIG_CTX", parts[2]);
        if (!(r.factor > 0)) throw std::runtime_error("--rope-scaling factor must be positive");
      } else {
        throw std::runtime_error("--rope-scaling must be none, linear:F, yarn:F:ORIG_CTX or llama3:F:ORIG_CTX");
      }
      shape.rope_scaling = r;
    }
    if (shape.head_dim == 0) {
      if (shape.hidden % shape.heads != 0) throw std::runtime_error("hidden must be a multiple of heads (or give --head-dim)");
      shape.head_dim = shape.hidden / shape.heads;
    }
    if (shape.heads % shape.kv_heads != 0) throw std::runtime_error("heads must be a multiple of kv-heads");
    if (shape.head_dim % 2 != 0) throw std::runtime_error("head-dim must be even (rotary pairs)");

    const TypeChoice& main_type = ParseType(type_opt);
    const GgmlType embd_type = embd_type_opt.empty() ? main_type.type : ParseType(embd_type_opt).type;
    const GgmlType output_type = output_type_opt.empty() ? main_type.type : ParseType(output_type_opt).type;
    std::optional<GgmlType> forced_fallback;
    if (!fallback_opt.empty()) forced_fallback = ParseType(fallback_opt).type;

    // Vocabulary, then the model's vocab size: a tokenizer's tokens are padded
    // up to the shape's vocab (as convert pads to config.json vocab_size).
    Vocab vocab;
    if (!tokenizer_dir.empty()) {
      vocab = LoadHfTokenizer(tokenizer_dir, tokenizer_pre);
      const auto n_tokens = static_cast<int64_t>(vocab.tokens.size());
      if (vm.count("vocab") && shape.vocab < n_tokens) {
        throw std::runtime_error("--vocab " + std::to_string(shape.vocab) + " is smaller than the tokenizer's " +
                                 std::to_string(n_tokens) + " tokens");
      }
      shape.vocab = std::max(shape.vocab, n_tokens);
      for (int64_t i = n_tokens; i < shape.vocab; ++i) {
        vocab.tokens.push_back("[PAD" + std::to_string(i) + "]");
        vocab.types.push_back(kTokUnused);
      }
    } else {
      vocab = DefaultVocab(shape.vocab);
    }

    const int64_t hd = shape.head_dim;
    const int64_t q_dim = shape.heads * hd;
    const int64_t kv_dim = shape.kv_heads * hd;
    std::vector<TensorSpec> specs;
    std::map<std::string, int> fallbacks;  // "Q4_K -> Q5_0 (rows of 896)" -> count
    auto matrix = [&](std::string tname, int64_t in, int64_t out, GgmlType wanted) {
      GgmlType type = wanted;
      if (in % local_backend::QuantBlockSize(type) != 0) {
        type = FallbackFor(wanted, forced_fallback);
        if (in % local_backend::QuantBlockSize(type) != 0) type = GgmlType::kF16;
        ++fallbacks[local_backend::GgmlTypeName(wanted) + " -> " + local_backend::GgmlTypeName(type) + " (rows of " +
                    std::to_string(in) + ")"];
      }
      specs.push_back({std::move(tname), {in, out}, type, Init::kNormal, {}});
    };
    auto vector = [&](std::string tname, int64_t n, Init init) {
      specs.push_back({std::move(tname), {n}, GgmlType::kF32, init, {}});
    };
    matrix("token_embd.weight", shape.hidden, shape.vocab, embd_type);
    if (shape.rope_scaling.type == "llama3") {
      specs.push_back({"rope_freqs.weight", {hd / 2}, GgmlType::kF32, Init::kValues, Llama3RopeFactors(shape, hd)});
    }
    for (int64_t l = 0; l < shape.layers; ++l) {
      const std::string b = "blk." + std::to_string(l) + ".";
      vector(b + "attn_norm.weight", shape.hidden, Init::kOnes);
      matrix(b + "attn_q.weight", shape.hidden, q_dim, main_type.type);
      matrix(b + "attn_k.weight", shape.hidden, kv_dim, main_type.type);
      matrix(b + "attn_v.weight", shape.hidden, kv_dim, main_type.type);
      if (arch == "qwen2") {
        vector(b + "attn_q.bias", q_dim, Init::kNormal);
        vector(b + "attn_k.bias", kv_dim, Init::kNormal);
        vector(b + "attn_v.bias", kv_dim, Init::kNormal);
      }
      if (arch == "qwen3") {
        vector(b + "attn_q_norm.weight", hd, Init::kOnes);
        vector(b + "attn_k_norm.weight", hd, Init::kOnes);
      }
      matrix(b + "attn_output.weight", q_dim, shape.hidden, main_type.type);
      vector(b + "ffn_norm.weight", shape.hidden, Init::kOnes);
      matrix(b + "ffn_gate.weight", shape.hidden, shape.ffn, main_type.type);
      matrix(b + "ffn_up.weight", shape.hidden, shape.ffn, main_type.type);
      matrix(b + "ffn_down.weight", shape.ffn, shape.hidden, main_type.type);
    }
    vector("output_norm.weight", shape.hidden, Init::kOnes);
    if (!shape.tied) matrix("output.weight", shape.hidden, shape.vocab, output_type);

    GgufWriter w;
    w.SetString("general.architecture", arch);
    w.SetString("general.name", name.empty() ? "random " + arch_opt + " " + shape.name : name);
    w.SetUint32("general.file_type", main_type.file_type);
    bool any_quantized = false;
    for (const TensorSpec& t : specs) any_quantized = any_quantized || IsQuantized(t.type);
    if (any_quantized) w.SetUint32("general.quantization_version", 2);  // GGML_QNT_VERSION
    const std::string a = arch + ".";
    w.SetUint32(a + "context_length", static_cast<uint32_t>(shape.context));
    w.SetUint32(a + "embedding_length", static_cast<uint32_t>(shape.hidden));
    w.SetUint32(a + "block_count", static_cast<uint32_t>(shape.layers));
    w.SetUint32(a + "feed_forward_length", static_cast<uint32_t>(shape.ffn));
    w.SetUint32(a + "attention.head_count", static_cast<uint32_t>(shape.heads));
    w.SetUint32(a + "attention.head_count_kv", static_cast<uint32_t>(shape.kv_heads));
    w.SetFloat32(a + "attention.layer_norm_rms_epsilon", static_cast<float>(shape.rms_eps));
    w.SetFloat32(a + "rope.freq_base", static_cast<float>(shape.rope_base));
    w.SetUint32(a + "rope.dimension_count", static_cast<uint32_t>(hd));
    if (hd * shape.heads != shape.hidden || arch == "qwen3") {
      w.SetUint32(a + "attention.key_length", static_cast<uint32_t>(hd));
      w.SetUint32(a + "attention.value_length", static_cast<uint32_t>(hd));
    }
    w.SetUint32(a + "vocab_size", static_cast<uint32_t>(shape.vocab));
    if (shape.rope_scaling.type == "linear" || shape.rope_scaling.type == "yarn") {
      w.SetString(a + "rope.scaling.type", shape.rope_scaling.type);
      w.SetFloat32(a + "rope.scaling.factor", static_cast<float>(shape.rope_scaling.factor));
      if (shape.rope_scaling.original_context > 0) {
        w.SetUint32(a + "rope.scaling.original_context_length",
                    static_cast<uint32_t>(shape.rope_scaling.original_context));
      }
    }

    w.SetString("tokenizer.ggml.model", vocab.model);
    if (!vocab.pre.empty()) w.SetString("tokenizer.ggml.pre", vocab.pre);
    w.SetStringArray("tokenizer.ggml.tokens", vocab.tokens);
    if (!vocab.scores.empty()) w.SetFloat32Array("tokenizer.ggml.scores", vocab.scores);
    w.SetInt32Array("tokenizer.ggml.token_type", vocab.types);
    if (!vocab.merges.empty()) w.SetStringArray("tokenizer.ggml.merges", vocab.merges);
    auto set_id = [&](const char* key, const std::optional<int64_t>& id) {
      if (id) w.SetUint32(key, static_cast<uint32_t>(*id));
    };
    set_id("tokenizer.ggml.bos_token_id", vocab.bos);
    set_id("tokenizer.ggml.eos_token_id", vocab.eos);
    set_id("tokenizer.ggml.unknown_token_id", vocab.unk);
    set_id("tokenizer.ggml.padding_token_id", vocab.pad);
    if (vocab.add_bos) w.SetBool("tokenizer.ggml.add_bos_token", *vocab.add_bos);
    if (vocab.add_eos) w.SetBool("tokenizer.ggml.add_eos_token", *vocab.add_eos);
    if (vocab.add_space_prefix) w.SetBool("tokenizer.ggml.add_space_prefix", *vocab.add_space_prefix);
    if (!vocab.chat_template.empty()) w.SetString("tokenizer.chat_template", vocab.chat_template);
    if (!vocab.named_templates.empty()) {
      std::vector<std::string> names;
      for (const auto& [tname, text] : vocab.named_templates) {
        names.push_back(tname);
        w.SetString("tokenizer.chat_template." + tname, text);
      }
      w.SetStringArray("tokenizer.chat_templates", names);
    }

    int64_t params = 0;
    for (TensorSpec& t : specs) {
      int64_t n = 1;
      for (int64_t d : t.ne) n *= d;
      params += n;
      const uint64_t name_hash = Fnv1a(t.name);
      GgufWriter::RowSource rows;
      switch (t.init) {
        case Init::kNormal:
          rows = [seed, name_hash](int64_t r, std::span<float> row) { NormalRow(seed, name_hash, r, kWeightStd, row); };
          break;
        case Init::kOnes:
          rows = [](int64_t, std::span<float> row) { std::fill(row.begin(), row.end(), 1.0f); };
          break;
        case Init::kValues:
          rows = [values = t.values](int64_t, std::span<float> row) { std::copy(values.begin(), values.end(), row.begin()); };
          break;
      }
      if (auto r = w.AddTensorRows(t.name, t.ne, t.type, std::move(rows)); !r) throw std::runtime_error(r.error().message);
    }

    if (threads <= 0) threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
    if (auto r = w.WriteFile(out_path, threads); !r) throw std::runtime_error(r.error().message);

    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    std::cout << "wrote " << out_path << ": " << arch << " (" << arch_opt << "), shape " << shape.name << " ("
              << shape.layers << " layers, " << shape.hidden << " hidden, " << shape.ffn << " ffn, " << shape.heads
              << "/" << shape.kv_heads << " heads of " << hd << ", vocab " << shape.vocab << ", context "
              << shape.context << (shape.tied ? ", tied" : "") << "), " << params << " parameters, type "
              << local_backend::GgmlTypeName(main_type.type) << ", " << specs.size() << " tensors, "
              << std::filesystem::file_size(out_path) << " bytes, tokenizer: " << vocab.source
              << (vocab.pre.empty() ? "" : " (pre " + vocab.pre + ")") << ", " << seconds << " s\n";
    for (const auto& [what, count] : fallbacks) {
      std::cout << "  fallback: " << count << " tensors " << what << "\n";
    }
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "tollgate-model write-random: " << e.what() << "\n";
    return 1;
  }
}

}  // namespace tollgate::model_tool
