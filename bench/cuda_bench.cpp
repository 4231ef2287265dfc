// CUDA backend benchmark (issue 8's table): for random-weight models at
// Qwen2.5-0.5B's and Qwen2.5-7B's shapes (qwen2 architecture) in F16, Q8_0
// and Q4_K, on CreateCudaBackend (cuda_backend.hpp), measured with
// LlamaRunner and PagedKvCache directly (no HTTP server):
//   - prefill: one sequence's --prefill-token prompt (default 512) in one
//     LlamaRunner::Decode (one forward of all its tokens, the last token's
//     logits read back), tokens/s = prompt tokens / time;
//   - TTFT: that prefill plus the first decode step (the next token, its
//     logits read back), ms: prompt submitted to the logits that sample the
//     token after the first generated one are in host memory, i.e. the first
//     token of the decode loop has gone through the model. The prefill alone
//     is in the JSON too (prefill_ms), with the argmax and L2 norm of its
//     logits (prefill_argmax, prefill_logits_norm: merge.py compares them
//     with the peer's, a check that both compute the same function);
//   - decode b1: one sequence, --decode tokens (default 128) one at a time
//     after a --prompt-token prompt (default 16), tokens/s;
//   - aggregate decode at --concurrency sequences (default 1,8,32,64): each
//     sequence gets its own --prompt-token prompt (prefilled untimed), then
//     each timed step is one LlamaRunner::Decode with one token of every
//     sequence and every sequence's logits (each would sample), aggregate
//     tokens/s = sequences * steps / time. 1 sequence is the b1 row.
// Every step is timed on the host clock around Decode, which returns only when
// the logits are in host memory (ReadRows waits for the device), so queued
// device work is inside the time. Each figure is the median of --reps timed
// runs after one untimed warm-up run (module load, cuBLAS handles, first
// touch of every page).
//
// Bandwidth bound of b1 decode. Bytes one decode step must read: the weights
// (LlamaModel::decode_weight_bytes(): every layer matrix and the classifier, in
// their GGUF types) plus the keys and values of every earlier position
// (KvBytesPerToken(kv) x the average context of the run, prompt + decode / 2).
// The ceiling is the device's memory bandwidth measured in the same run: a
// cudaMemcpy device-to-device of a 4 GiB buffer into another (--copy-mib),
// timed with CUDA events, median of 10 after 2 warm-ups, counting the bytes
// READ PLUS the bytes WRITTEN (2 x 4 GiB per copy): HBM bandwidth is one budget
// shared by reads and writes (the datasheet's 4.8 TB/s is a total too, and
// KINDS.md's 4.3 TB/s on this H200 is counted this way), and a read-only
// stream such as decode can use all of it. So
//   bound tok/s = (2 x copy bytes / copy time) / bytes read per token,
//   share      = measured b1 tok/s / bound tok/s.
// Counting the copy's bytes once would halve the bound and double the share;
// this convention is the strict one.
//
//   tollgate_cuda_bench [--model-dir DIR] [--shapes 0.5b,7b] [--types f16,q8_0,q4_k]
//                       [--quick] [--reps N] [--decode N] [--prompt N] [--prefill N]
//                       [--concurrency 1,8,32,64] [--kv f16|q8|f32] [--device N]
//                       [--copy-mib N] [--json PATH] [--tool PATH] [--write-only]
//
// --quick: --decode 32 --reps 2 (a smoke run of every row). Model files are
// DIR/qwen2.5-0.5b-TYPE.gguf and DIR/qwen2.5-7b-TYPE.gguf (default DIR:
// $TOLLGATE_BENCH_MODEL_DIR or ./bench-models); missing ones are written with
// `tollgate-model write-random --arch qwen2` (0.5B: --shape qwen2.5-0.5b; 7B:
// Qwen2.5-7B's config.json dims, 28 layers, 3584 hidden, 18944 ffn, 28/4
// heads of 128, vocab 152064, untied, rope base 1e6, eps 1e-6); --write-only
// writes the missing files and exits (scripts/gpu-check.sh writes them while
// the GPU tests run, so no writing overlaps a measurement). The tool is
// --tool, $TOLLGATE_MODEL_TOOL, tollgate-model beside this program or in
// ../bin, or on the PATH. Q4_K at the 0.5B shape is mostly Q5_0: its 896-wide
// rows are no multiple of 256, and write-random falls back as llama-quantize
// does; the 7B shape's rows (3584, 18944) are all Q4_K.
//
// Each model runs in a child process (this program with --child), so a
// failure or a crash costs one row and device memory is fully returned between
// models. Rows are printed as they finish (one markdown table on stdout,
// progress on stderr), and --json PATH is rewritten after every row with every
// number, so a run cut short by a time limit keeps what it measured.
//
// Without a usable CUDA device (no device, no driver, or a build without
// -DENABLE_CUDA=ON) it prints ProbeCudaDevice's Describe() and exits 2.
#include "tollgate/core/error.hpp"
#include "tollgate/local_backend/cuda_backend.hpp"
#include "tollgate/local_backend/gguf.hpp"
#include "tollgate/local_backend/kv_cache.hpp"
#include "bench_util.hpp"
#include "tollgate/local_backend/model.hpp"

#ifdef TOLLGATE_HAVE_CUDA
#include <cuda_runtime.h>
#endif

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

namespace {

using namespace tollgate::local_backend;
using tollgate::Error;
using tollgate::ErrorCode;
using tollgate::InvalidArgument;
using tollgate::Result;
using namespace tollgate::bench;

// A JSON number, or null for NaN/inf.
std::string JsonNumber(double v) {
  if (!std::isfinite(v)) return "null";
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%.9g", v);
  return buf;
}

std::string JsonString(const std::string& s) {
  std::string out = "\"";
  for (unsigned char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof(buf), "\\u%04x", c);
      out += buf;
    } else {
      out += static_cast<char>(c);
    }
  }
  return out + "\"";
}

// The two model shapes: their write-random arguments and a description.
struct ShapeSpec {
  const char* key;   // command-line name
  const char* file;  // file name stem
  std::vector<std::string> args;
  const char* text;
};
const std::vector<ShapeSpec>& Shapes() {
  static const std::vector<ShapeSpec> shapes = {
      {"0.5b", "qwen2.5-0.5b", {"--shape", "qwen2.5-0.5b"},
       "Qwen2.5-0.5B: 24 layers, 896 hidden, 4864 ffn, 14/2 heads of 64, vocab 151936, tied"},
      // Qwen2.5-7B's config.json (write-random has no named shape for it).
      {"7b", "qwen2.5-7b",
       {"--shape", "layers=28,hidden=3584,ffn=18944,heads=28,kv-heads=4,head-dim=128,vocab=152064,context=32768",
        "--rope-base", "1000000", "--rms-eps", "1e-6", "--tied", "false", "--name", "random qwen2 qwen2.5-7b"},
       "Qwen2.5-7B: 28 layers, 3584 hidden, 18944 ffn, 28/4 heads of 128, vocab 152064, untied"},
  };
  return shapes;
}

// ------------------------------------------------------------- the child

#ifdef TOLLGATE_HAVE_CUDA
// --bandwidth DEVICE MIB: device-to-device cudaMemcpy of MIB MiB, 2 warm-ups
// then 10 timed with events; prints the median and best rate counting bytes
// read plus bytes written (2 x MIB MiB per copy).
int CopyBandwidth(int device, int64_t mib) {
  auto check = [](cudaError_t e, const char* what) {
    if (e != cudaSuccess) {
      std::fprintf(stderr, "%s: %s\n", what, cudaGetErrorString(e));
      return false;
    }
    return true;
  };
  const size_t bytes = static_cast<size_t>(mib) << 20;
  void* src = nullptr;
  void* dst = nullptr;
  if (!check(cudaSetDevice(device), "cudaSetDevice")) return 1;
  if (!check(cudaMalloc(&src, bytes), "cudaMalloc") || !check(cudaMalloc(&dst, bytes), "cudaMalloc")) return 1;
  // Non-zero data (zeros can run faster than real data, METHOD.md).
  if (!check(cudaMemset(src, 0x5a, bytes), "cudaMemset") || !check(cudaMemset(dst, 0x33, bytes), "cudaMemset")) return 1;
  cudaEvent_t start, stop;
  cudaEventCreate(&start);
  cudaEventCreate(&stop);
  std::vector<double> rates;
  for (int i = 0; i < 12; ++i) {
    cudaEventRecord(start);
    if (!check(cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToDevice), "cudaMemcpy")) return 1;
    cudaEventRecord(stop);
    if (!check(cudaEventSynchronize(stop), "cudaEventSynchronize")) return 1;
    float ms = 0;
    cudaEventElapsedTime(&ms, start, stop);
    if (i >= 2 && ms > 0) rates.push_back(2.0 * static_cast<double>(bytes) / (ms * 1e-3) / 1e9);
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  cudaFree(src);
  cudaFree(dst);
  if (!check(cudaGetLastError(), "copy")) return 1;
  std::printf("copy_GBps=%.6g\n", Median(rates));
  std::printf("copy_best_GBps=%.6g\n", *std::max_element(rates.begin(), rates.end()));
  std::printf("copy_bytes=%zu\n", bytes);
  return 0;
}
#endif

struct ChildOptions {
  std::string path;
  int device = 0;
  int reps = 3;
  int decode = 128;
  int prompt = 16;
  int prefill = 512;
  std::vector<int> concurrency = {1, 8, 32, 64};
  KvType kv = KvType::kF16;
};

// Aggregate decode tokens/s of `n` sequences decoded together, and each timed
// run's rate. Prompts (untimed) go in calls of at most max_batch_tokens tokens.
Result<std::vector<double>> Concurrent(LlamaRunner& runner, PagedKvCache& cache, int n, const ChildOptions& o) {
  const int vocab = runner.model().hparams().vocab_size;
  std::vector<std::vector<TokenId>> prompts, gens;
  for (int i = 0; i < n; ++i) {
    prompts.push_back(Tokens(o.prompt, vocab, 100 + 37 * i));
    gens.push_back(Tokens(o.decode, vocab, 5000 + 53 * i));
  }
  std::vector<KvSequence> seqs(static_cast<size_t>(n));
  std::vector<BatchItem> items;
  std::vector<double> rates;
  for (int r = 0; r <= o.reps; ++r) {
    for (KvSequence& s : seqs) cache.Release(s);
    for (int i = 0; i < n;) {
      items.clear();
      int tokens = 0;
      for (; i < n && tokens + o.prompt <= runner.max_batch_tokens(); ++i) {
        items.push_back(BatchItem{&seqs[static_cast<size_t>(i)], prompts[static_cast<size_t>(i)], true});
        tokens += o.prompt;
      }
      if (items.empty()) return InvalidArgument("prompt longer than the runner's batch");
      if (auto out = runner.Decode(cache, items); !out) return out.error();
    }
    items.resize(static_cast<size_t>(n));
    const auto t0 = Clock::now();
    for (int step = 0; step < o.decode; ++step) {
      for (int i = 0; i < n; ++i) {
        const auto u = static_cast<size_t>(i);
        items[u] = BatchItem{&seqs[u], std::span<const TokenId>(&gens[u][static_cast<size_t>(step)], 1), true};
      }
      auto out = runner.Decode(cache, items);
      if (!out) return out.error();
      if (out->size() != static_cast<size_t>(n) * static_cast<size_t>(vocab)) {
        return Error{ErrorCode::kInternal, "decode returned " + std::to_string(out->size()) + " logits"};
      }
    }
    const double s = Seconds(t0);
    if (r > 0) rates.push_back(static_cast<double>(n) * o.decode / s);  // run 0 warms up
  }
  for (KvSequence& s : seqs) cache.Release(s);
  return rates;
}

std::string Join(const std::vector<double>& v) {
  std::string s;
  for (double x : v) {
    if (!s.empty()) s += ',';
    s += JsonNumber(x);
  }
  return s;
}

// --child: measures one model file, prints key=value lines.
int Child(const ChildOptions& o) {
  const auto start = Clock::now();
  auto file = GgufFile::Open(o.path);
  if (!file) return Fail(file.error());
  CudaBackendOptions bo;
  bo.device = o.device;
  auto backend = CreateCudaBackend(bo);
  if (!backend) return Fail(backend.error());
  ModelOptions mo;
  mo.backend = *backend;
  auto model = LlamaModel::Load(std::shared_ptr<const GgufFile>(std::move(*file)), mo);
  if (!model) return Fail(model.error());
  const LlamaHparams& hp = (*model)->hparams();
  const int max_conc = *std::max_element(o.concurrency.begin(), o.concurrency.end());
  auto runner = LlamaRunner::Create(*model, std::max({o.prefill, max_conc, o.prompt}), max_conc);
  if (!runner) return Fail(runner.error());
  // KV pages for the largest experiment (one runs at a time), plus slack.
  auto pages_for = [](int tokens) { return (tokens + kKvPageTokens - 1) / kKvPageTokens; };
  const int pages = std::max(max_conc * pages_for(o.prompt + o.decode), pages_for(o.prefill + 1)) + 2;
  const KvPoolShape shape =
      (*model)->KvShape(o.kv, static_cast<int64_t>(pages) * kKvPageTokens * static_cast<int64_t>((*model)->KvBytesPerToken(o.kv)));
  auto cache = PagedKvCache::Create((*model)->backend(), shape, /*prefix_cache=*/false);
  if (!cache) return Fail(cache.error());
  const double load_s = Seconds(start);
  std::fprintf(stderr, "  loaded %s on %s in %.1f s\n", o.path.c_str(), (*model)->backend().Name().c_str(), load_s);

  // Prefill and TTFT: run r = prefill of the prompt, then one decode step.
  const std::vector<TokenId> prompt = Tokens(o.prefill, hp.vocab_size, 7);
  const TokenId next = Tokens(1, hp.vocab_size, 11)[0];
  std::vector<double> prefill_ms, ttft_ms;
  KvSequence seq;
  for (int r = 0; r <= o.reps; ++r) {
    (*cache)->Release(seq);
    const BatchItem pre[] = {{&seq, prompt, true}};
    const auto t0 = Clock::now();
    if (auto out = (*runner)->Decode(**cache, pre); !out) return Fail(out.error());
    const double t_pre = Seconds(t0);
    const BatchItem dec[] = {{&seq, std::span<const TokenId>(&next, 1), true}};
    if (auto out = (*runner)->Decode(**cache, dec); !out) return Fail(out.error());
    const double t_first = Seconds(t0);
    if (r > 0) {
      prefill_ms.push_back(t_pre * 1e3);
      ttft_ms.push_back(t_first * 1e3);
    }
  }
  // Untimed: the prefill's logits, a sanity check against the peer (same
  // function, same argmax).
  int argmax = -1;
  double norm = 0;
  {
    (*cache)->Release(seq);
    const BatchItem pre[] = {{&seq, prompt, true}};
    auto logits = (*runner)->Decode(**cache, pre);
    if (!logits) return Fail(logits.error());
    argmax = static_cast<int>(std::max_element(logits->begin(), logits->end()) - logits->begin());
    for (float v : *logits) norm += static_cast<double>(v) * v;
    norm = std::sqrt(norm);
    (*cache)->Release(seq);
  }

  std::map<std::string, std::string> out;
  for (int n : o.concurrency) {
    auto rates = Concurrent(**runner, **cache, n, o);
    if (!rates) return Fail(rates.error());
    out["agg_" + std::to_string(n)] = JsonNumber(Median(*rates));
    out["agg_runs_" + std::to_string(n)] = Join(*rates);
    std::fprintf(stderr, "  %d sequences: %.1f tok/s\n", n, Median(*rates));
  }
  std::printf("backend=%s\n", (*model)->backend().Name().c_str());
  std::printf("load_s=%s\n", JsonNumber(load_s).c_str());
  std::printf("prefill_ms=%s\n", JsonNumber(Median(prefill_ms)).c_str());
  std::printf("prefill_runs_ms=%s\n", Join(prefill_ms).c_str());
  std::printf("prefill_tok_s=%s\n", JsonNumber(o.prefill / (Median(prefill_ms) * 1e-3)).c_str());
  std::printf("ttft_ms=%s\n", JsonNumber(Median(ttft_ms)).c_str());
  std::printf("ttft_runs_ms=%s\n", Join(ttft_ms).c_str());
  std::printf("prefill_argmax=%d\n", argmax);
  std::printf("prefill_logits_norm=%s\n", JsonNumber(norm).c_str());
  std::printf("weight_bytes_per_token=%zu\n", (*model)->decode_weight_bytes());
  std::printf("kv_bytes_per_position=%zu\n", (*model)->KvBytesPerToken(o.kv));
  std::printf("kv_positions_read=%s\n", JsonNumber(o.prompt + o.decode / 2.0).c_str());
  std::printf("kv_pool_bytes=%zu\n", (*cache)->pool().bytes());
  std::printf("layers=%d\nhidden=%d\nvocab=%d\n", hp.block_count, hp.embedding_length, hp.vocab_size);
  for (const auto& [k, v] : out) std::printf("%s=%s\n", k.c_str(), v.c_str());
  return 0;
}

// ------------------------------------------------------------- the parent

struct Row {
  std::string shape, type, path;
  bool ok = false;
  std::string error;
  std::map<std::string, std::string> kv;  // the child's output
  double bytes_per_token = NAN, bound_tok_s = NAN, share = NAN;
  double Num(const std::string& key) const {
    auto it = kv.find(key);
    return it == kv.end() || it->second == "null" || it->second.empty() ? NAN : std::atof(it->second.c_str());
  }
};

void WriteJson(const std::string& path, const std::map<std::string, std::string>& head, const std::vector<Row>& rows,
               const std::vector<int>& concurrency) {
  if (path.empty()) return;
  const std::string tmp = path + ".tmp";
  std::ofstream out(tmp);
  out << "{\n";
  for (const auto& [k, v] : head) out << "  " << JsonString(k) << ": " << v << ",\n";
  out << "  \"rows\": [";
  for (size_t i = 0; i < rows.size(); ++i) {
    const Row& r = rows[i];
    out << (i ? ",\n" : "\n") << "    {\"engine\": \"tollgate\", \"mode\": \"cuda\", \"shape\": " << JsonString(r.shape)
        << ", \"type\": " << JsonString(r.type) << ", \"file\": " << JsonString(r.path)
        << ", \"ok\": " << (r.ok ? "true" : "false");
    if (!r.ok) out << ", \"error\": " << JsonString(r.error);
    if (r.ok) {
      auto num = [&](const char* key) { return JsonNumber(r.Num(key)); };
      auto list = [&](const std::string& key) {
        auto it = r.kv.find(key);
        return "[" + (it == r.kv.end() ? std::string() : it->second) + "]";
      };
      out << ", \"backend\": " << JsonString(r.kv.count("backend") ? r.kv.at("backend") : "")
          << ", \"load_s\": " << num("load_s") << ", \"prefill_tokens_per_s\": " << num("prefill_tok_s")
          << ", \"prefill_ms\": " << num("prefill_ms") << ", \"prefill_runs_ms\": " << list("prefill_runs_ms")
          << ", \"prefill_argmax\": " << num("prefill_argmax")
          << ", \"prefill_logits_norm\": " << num("prefill_logits_norm") << ", \"ttft_ms\": " << num("ttft_ms") << ", \"ttft_runs_ms\": " << list("ttft_runs_ms")
          << ", \"decode_tokens_per_s\": " << num("agg_1") << ", \"decode_runs_tokens_per_s\": " << list("agg_runs_1")
          << ", \"weight_bytes_per_token\": " << num("weight_bytes_per_token")
          << ", \"kv_bytes_per_position\": " << num("kv_bytes_per_position")
          << ", \"kv_positions_read\": " << num("kv_positions_read")
          << ", \"bytes_per_token\": " << JsonNumber(r.bytes_per_token)
          << ", \"bound_tokens_per_s\": " << JsonNumber(r.bound_tok_s)
          << ", \"bound_share\": " << JsonNumber(r.share) << ", \"aggregate_tokens_per_s\": {";
      for (size_t c = 0; c < concurrency.size(); ++c) {
        const std::string n = std::to_string(concurrency[c]);
        out << (c ? ", " : "") << JsonString(n) << ": " << num(("agg_" + n).c_str());
      }
      out << "}, \"aggregate_runs_tokens_per_s\": {";
      for (size_t c = 0; c < concurrency.size(); ++c) {
        const std::string n = std::to_string(concurrency[c]);
        out << (c ? ", " : "") << JsonString(n) << ": " << list("agg_runs_" + n);
      }
      out << "}, \"layers\": " << num("layers") << ", \"hidden\": " << num("hidden") << ", \"vocab\": " << num("vocab")
          << ", \"kv_pool_bytes\": " << num("kv_pool_bytes");
    }
    out << "}";
  }
  out << "\n  ]\n}\n";
  out.close();
  std::filesystem::rename(tmp, path);
}

std::string FindTool(const std::string& flag) {
  if (!flag.empty()) return flag;
  if (const char* env = std::getenv("TOLLGATE_MODEL_TOOL"); env && *env) return env;
  const std::filesystem::path here = std::filesystem::path(Self()).parent_path();
  for (const auto& p : {here / "tollgate-model", here.parent_path() / "bin" / "tollgate-model"}) {
    if (access(p.c_str(), X_OK) == 0) return p.string();
  }
  const std::string on_path = FindOnPath("tollgate-model");
  return on_path.empty() ? "tollgate-model" : on_path;
}

// Writes `path` with write-random unless it exists (GgufWriter writes
// PATH.tmp and renames it when complete, so an interrupted write never leaves
// a file that looks whole).
bool EnsureModel(const std::string& tool, const ShapeSpec& shape, const std::string& type, const std::string& path) {
  if (std::filesystem::exists(path)) return true;
  std::vector<std::string> cmd = {tool, "write-random", "--arch", "qwen2", "--type", type, "--out", path};
  cmd.insert(cmd.end(), shape.args.begin(), shape.args.end());
  if (const char* tok = std::getenv("TOLLGATE_QWEN_TOKENIZER_DIR")) {
    cmd.push_back("--tokenizer-dir");
    cmd.push_back(tok);
  }
  std::fprintf(stderr, "writing %s ...\n", path.c_str());
  ChildResult r = RunChild(cmd);
  std::fprintf(stderr, "%s", r.out.c_str());
  if (r.status != 0 || !std::filesystem::exists(path)) {
    std::fprintf(stderr, "could not write %s with %s (build the tollgate-model target, or pass --tool)\n", path.c_str(),
                 tool.c_str());
    return false;
  }
  std::fprintf(stderr, "  written in %.1f s\n", r.seconds);
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
#ifdef TOLLGATE_HAVE_CUDA
  if (args.size() == 3 && args[0] == "--bandwidth") {
    return CopyBandwidth(std::atoi(args[1].c_str()), std::atoll(args[2].c_str()));
  }
#endif
  std::string dir = std::getenv("TOLLGATE_BENCH_MODEL_DIR") ? std::getenv("TOLLGATE_BENCH_MODEL_DIR") : "bench-models";
  std::vector<std::string> shapes = {"0.5b", "7b"};
  std::vector<std::string> types = {"f16", "q8_0", "q4_k"};
  std::string json_path, tool_flag, kv_name = "f16", child_path;
  ChildOptions co;
  int reps = -1, decode = -1;
  bool quick = false, write_only = false;
  int64_t copy_mib = 4096;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a == "--help" || a == "-h") {
      std::printf(
          "usage: tollgate_cuda_bench [--model-dir DIR] [--shapes 0.5b,7b] [--types f16,q8_0,q4_k] [--quick]\n"
          "         [--reps N] [--decode N] [--prompt N] [--prefill N] [--concurrency 1,8,32,64] [--kv f16|q8]\n"
          "         [--device N] [--copy-mib N] [--json PATH] [--tool PATH] [--write-only]\n"
          "The comment at the top of bench/cuda_bench.cpp says what each measures.\n");
      return 0;
    }
    if (a == "--quick" || a == "--write-only") {
      (a == "--quick" ? quick : write_only) = true;
      continue;
    }
    if (i + 1 >= args.size()) {
      std::fprintf(stderr, "option %s needs a value (see the comment at the top of cuda_bench.cpp)\n", a.c_str());
      return 64;
    }
    const std::string v = args[++i];
    if (a == "--model-dir") dir = v;
    else if (a == "--shapes") shapes = Split(v, ',');
    else if (a == "--types") types = Split(v, ',');
    else if (a == "--reps") reps = std::max(1, std::atoi(v.c_str()));
    else if (a == "--decode") decode = std::max(1, std::atoi(v.c_str()));
    else if (a == "--prompt") co.prompt = std::max(1, std::atoi(v.c_str()));
    else if (a == "--prefill") co.prefill = std::max(1, std::atoi(v.c_str()));
    else if (a == "--concurrency") {
      co.concurrency.clear();
      for (const std::string& c : Split(v, ',')) co.concurrency.push_back(std::max(1, std::atoi(c.c_str())));
    } else if (a == "--kv") kv_name = v;
    else if (a == "--device") co.device = std::max(0, std::atoi(v.c_str()));
    else if (a == "--copy-mib") copy_mib = std::max<int64_t>(1, std::atoll(v.c_str()));
    else if (a == "--json") json_path = v;
    else if (a == "--tool") tool_flag = v;
    else if (a == "--child") child_path = v;
    else {
      std::fprintf(stderr, "unknown option %s (see the comment at the top of cuda_bench.cpp)\n", a.c_str());
      return 64;
    }
  }
  co.reps = reps > 0 ? reps : quick ? 2 : 3;
  co.decode = decode > 0 ? decode : quick ? 32 : 128;
  auto kv = ParseKvType(kv_name);
  if (!kv) return Fail(kv.error());
  co.kv = *kv;
  if (co.concurrency.empty()) return Fail(InvalidArgument("--concurrency needs at least one value"));
  // b1 decode is the 1-sequence run: always measured.
  if (std::find(co.concurrency.begin(), co.concurrency.end(), 1) == co.concurrency.end()) co.concurrency.push_back(1);
  std::sort(co.concurrency.begin(), co.concurrency.end());
  co.concurrency.erase(std::unique(co.concurrency.begin(), co.concurrency.end()), co.concurrency.end());
  if (!child_path.empty()) {
    co.path = child_path;
    return Child(co);
  }

  std::vector<const ShapeSpec*> shape_specs;
  for (const std::string& s : shapes) {
    auto it = std::find_if(Shapes().begin(), Shapes().end(), [&](const ShapeSpec& sp) { return s == sp.key; });
    if (it == Shapes().end()) return Fail(InvalidArgument("unknown shape " + s + " (0.5b, 7b)"));
    shape_specs.push_back(&*it);
  }
  if (shape_specs.empty() || types.empty()) return Fail(InvalidArgument("--shapes and --types need a value"));
  const std::string tool = FindTool(tool_flag);
  auto model_path = [&](const ShapeSpec& s, const std::string& type) {
    return dir + "/" + s.file + "-" + type + ".gguf";
  };
  if (write_only) {
    std::filesystem::create_directories(dir);
    for (const ShapeSpec* s : shape_specs) {
      for (const std::string& type : types) {
        if (!EnsureModel(tool, *s, type, model_path(*s, type))) return 1;
      }
    }
    return 0;
  }

  const CudaDeviceStatus probe = ProbeCudaDevice(co.device);
  if (!probe.usable) {
    std::fprintf(stderr, "%s\n", probe.Describe().c_str());
    return 2;
  }
  std::filesystem::create_directories(dir);

  // Copy bandwidth, in a child so that this process holds no device memory.
  double copy_gbps = NAN, copy_best = NAN, copy_bytes = NAN;
  {
    ChildResult bw = RunChild({Self(), "--bandwidth", std::to_string(co.device), std::to_string(copy_mib)});
    std::map<std::string, std::string> m = ParseKv(bw.out);
    if (bw.status == 0 && m.count("copy_GBps")) {
      copy_gbps = std::atof(m["copy_GBps"].c_str());
      copy_best = std::atof(m["copy_best_GBps"].c_str());
      copy_bytes = std::atof(m["copy_bytes"].c_str());
    } else {
      std::fprintf(stderr, "copy bandwidth not measured (this build has no CUDA runtime of its own?)\n");
    }
  }

  char date[32];
  const std::time_t now = std::time(nullptr);
  std::strftime(date, sizeof(date), "%Y-%m-%d %H:%M", std::localtime(&now));
  std::string conc_list;
  for (int c : co.concurrency) {
    if (!conc_list.empty()) conc_list += ',';
    conc_list += std::to_string(c);
  }
  std::map<std::string, std::string> head = {
      {"engine", "\"tollgate\""},
      {"date", JsonString(date)},
      {"device", JsonString(probe.Describe())},
      {"copy_bandwidth_GBps", JsonNumber(copy_gbps)},
      {"copy_bandwidth_best_GBps", JsonNumber(copy_best)},
      {"copy_bytes", JsonNumber(copy_bytes)},
      {"bandwidth_convention",
       JsonString("device-to-device cudaMemcpy, bytes read + bytes written per second (median of 10); bound tok/s = "
                  "that / (weight bytes + KV bytes read per decode token)")},
      {"ttft_definition", JsonString("prefill of prefill_tokens tokens + one decode step, each with its logits in host memory")},
      {"prefill_tokens", std::to_string(co.prefill)},
      {"prompt_tokens", std::to_string(co.prompt)},
      {"decode_tokens", std::to_string(co.decode)},
      {"reps", std::to_string(co.reps)},
      {"kv_type", JsonString(kv_name)},
      {"logits", JsonString("host float32, every sequence, every step")},
      {"concurrency", "[" + conc_list + "]"},
      {"quick", quick ? "true" : "false"},
  };

  std::printf("Tollgate CUDA backend, %s, %s\n", date, probe.Describe().c_str());
  std::printf("Copy bandwidth (D2D cudaMemcpy of %s MiB, read + written): %s GB/s (best %s)\n",
              std::to_string(copy_mib).c_str(), Fixed(copy_gbps, 0).c_str(), Fixed(copy_best, 0).c_str());
  for (const ShapeSpec* s : shape_specs) std::printf("Model %s: random weights at %s\n", s->file, s->text);
  std::printf("prefill: %d-token prompt; TTFT: prefill + first decode step; decode b1: %d tokens after a %d-token\n"
              "prompt; cN: N sequences, %d steps of one token each; bound = copy bandwidth / (weight + KV bytes per\n"
              "token); KV %s; medians of %d runs after a warm-up\n\n",
              co.prefill, co.decode, co.prompt, co.decode, kv_name.c_str(), co.reps);
  std::printf("| model | type | load s | prefill %d tok/s | TTFT ms | decode b1 tok/s | bound tok/s | %% of bound |",
              co.prefill);
  for (int c : co.concurrency) std::printf(" c%d tok/s |", c);
  std::printf(" c%d / b1 |\n|---|---|---:|---:|---:|---:|---:|---:|", co.concurrency.back());
  for (size_t c = 0; c < co.concurrency.size(); ++c) std::printf("---:|");
  std::printf("---:|\n");
  std::fflush(stdout);

  std::vector<Row> rows;
  int failures = 0;
  for (const ShapeSpec* s : shape_specs) {
    for (const std::string& type : types) {
      Row row;
      row.shape = s->file;
      row.type = type;
      row.path = model_path(*s, type);
      if (!EnsureModel(tool, *s, type, row.path)) {
        row.error = "could not write the model file";
      } else {
        std::fprintf(stderr, "measuring %s ...\n", row.path.c_str());
        std::vector<std::string> cmd = {Self(), "--child", row.path, "--device", std::to_string(co.device),
                                        "--reps", std::to_string(co.reps), "--decode", std::to_string(co.decode),
                                        "--prompt", std::to_string(co.prompt), "--prefill", std::to_string(co.prefill),
                                        "--concurrency", conc_list, "--kv", kv_name};
        ChildResult r = RunChild(cmd);
        row.kv = ParseKv(r.out);
        if (r.status != 0 || !row.kv.count("agg_1")) {
          row.error = "child failed (status " + std::to_string(r.status) + "; see stderr)";
        } else {
          row.ok = true;
          row.bytes_per_token = row.Num("weight_bytes_per_token") + row.Num("kv_bytes_per_position") * row.Num("kv_positions_read");
          row.bound_tok_s = copy_gbps * 1e9 / row.bytes_per_token;
          row.share = row.Num("agg_1") / row.bound_tok_s;
        }
        std::fprintf(stderr, "  %.1f s\n", r.seconds);
      }
      if (!row.ok) {
        ++failures;
        std::printf("| %s | %s | failed: %s |\n", row.shape.c_str(), type.c_str(), row.error.c_str());
      } else {
        const double b1 = row.Num("agg_1");
        const std::string share = std::isfinite(row.share) ? Fixed(100 * row.share, 0) + "%" : "-";
        std::printf("| %s | %s | %s | %s | %s | %s | %s | %s |", row.shape.c_str(), type.c_str(),
                    Fixed(row.Num("load_s"), 1).c_str(), Fixed(row.Num("prefill_tok_s"), 0).c_str(),
                    Fixed(row.Num("ttft_ms"), 1).c_str(), Fixed(b1, 1).c_str(), Fixed(row.bound_tok_s, 1).c_str(),
                    share.c_str());
        for (int c : co.concurrency) std::printf(" %s |", Fixed(row.Num("agg_" + std::to_string(c)), 1).c_str());
        std::printf(" %s |\n", Fixed(row.Num("agg_" + std::to_string(co.concurrency.back())) / b1, 1).c_str());
      }
      std::fflush(stdout);
      rows.push_back(std::move(row));
      WriteJson(json_path, head, rows, co.concurrency);
    }
  }
  if (!rows.empty() && rows.front().ok) std::printf("\nbackend: %s\n", rows.front().kv["backend"].c_str());
  return failures == 0 ? 0 : 1;
}
