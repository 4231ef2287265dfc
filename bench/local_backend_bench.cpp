// Local engine benchmark: prefill and decode speed, load time and peak memory
// for random-weight models at Qwen2.5-0.5B's shape (qwen2 architecture) in F16,
// Q8_0, Q4_0 and Q4_K, at 1 and 2 threads (issue 7's table). Decode is
// measured for one sequence (LlamaContext) and for a batch of --batch
// sequences (default 8) decoded together: each with its own short prompt, all
// of them in one LlamaRunner::Decode call per step (one token each, logits for
// each) over a PagedKvCache big enough for all; its speed is the aggregate,
// batch * steps / time, and the table shows it over the one-sequence speed.
// One-sequence decode is also shown as a share of the memory-bandwidth bound:
// bytes of weights and KV cache read per token over this machine's read
// bandwidth, measured in the same run. When llama.cpp's `llama-bench` is on
// the PATH it runs on the same files and threads and the table shows our speed
// over its speed (prefill and one-sequence decode; llama-bench has no batch of
// parallel sequences, that is llama-batched-bench's job, so none for batch).
//
// A second table, KV capacity, loads one model (the first of --types) and
// counts how many sequences of --kv-seq-tokens tokens (default 1024) fit in a
// KV budget of --kv-budget-mib MiB (default 256) with F16 and with Q8 keys and
// values: computed from LlamaModel::KvShape(type, budget).max_pages and the
// pages one sequence needs, and verified by reserving sequences in a
// PagedKvCache of that shape until Reserve fails with kResourceExhausted.
//
//   tollgate_local_bench [--model-dir DIR] [--types f16,q8_0,q4_0,q4_k]
//                        [--threads 1,2] [--reps N] [--decode N] [--batch N]
//                        [--kv f16|q8] [--kv-budget-mib N] [--kv-seq-tokens N]
//
// --decode: tokens each sequence decodes per timed run (default 64); --kv: the
// KV type of the speed table (default f16, llama.cpp's default).
//
// Model files are DIR/qwen2.5-0.5b-TYPE.gguf (default DIR: $TOLLGATE_BENCH_MODEL_DIR
// or ./bench-models). Missing ones are written with `tollgate-model
// write-random --arch qwen2 --shape qwen2.5-0.5b` from the build's bin/
// directory, with the tokenizer in $TOLLGATE_QWEN_TOKENIZER_DIR when set
// (token ids are synthetic here, so the vocabulary only matters for size).
//
// Each (type, threads) cell runs in a child process (this program with
// --child), so its peak resident memory (getrusage ru_maxrss: weights touched
// in the mapping, KV cache, scratch) is its own; it is read after the
// one-sequence runs, before the batch runs add their KV pages and scratch.
// Times are medians over --reps runs after one warm-up; load time (open,
// parse, prepare weights, create a context) is measured with the file already
// in the page cache.
#include "tollgate/core/error.hpp"
#include "tollgate/local_backend/gguf.hpp"
#include "tollgate/local_backend/kv_cache.hpp"
#include "bench_util.hpp"
#include "tollgate/local_backend/model.hpp"

#include <fcntl.h>
#include <spawn.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
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
#include <thread>
#include <vector>

namespace {

using namespace tollgate::local_backend;
using tollgate::Error;
using tollgate::ErrorCode;
using tollgate::InvalidArgument;
using tollgate::Result;
using namespace tollgate::bench;

// Read bandwidth over a 1 GiB buffer (far beyond the caches), best of 5
// passes: every 64-byte line is read once, with software prefetch 4 KiB ahead
// as the decode kernels do (the hardware prefetchers alone keep too few lines
// in flight on this kind of machine, so a plain loop understates what a
// prefetching reader gets).
double ReadBandwidthGBs(int threads, bool huge_pages) {
  const size_t bytes = size_t{1} << 30;
  auto* buf = static_cast<uint64_t*>(std::aligned_alloc(size_t{1} << 21, bytes));
  if (huge_pages) madvise(buf, bytes, MADV_HUGEPAGE);
  std::memset(buf, 1, bytes);
  double best = 0;
  for (int rep = 0; rep < 5; ++rep) {
    std::vector<uint64_t> sums(static_cast<size_t>(threads) * 8);
    std::vector<std::thread> pool;
    const auto start = Clock::now();
    for (int t = 0; t < threads; ++t) {
      pool.emplace_back([&, t] {
        const size_t lines = bytes / 64 / static_cast<size_t>(threads);
        const uint64_t* p = buf + lines * 8 * static_cast<size_t>(t);
        uint64_t a = 0, b = 0, c = 0, d = 0;
        for (size_t i = 0; i + 4 <= lines; i += 4) {
          __builtin_prefetch(p + (i + 64) * 8, 0, 3);
          __builtin_prefetch(p + (i + 65) * 8, 0, 3);
          __builtin_prefetch(p + (i + 66) * 8, 0, 3);
          __builtin_prefetch(p + (i + 67) * 8, 0, 3);
          a += p[i * 8];
          b += p[(i + 1) * 8];
          c += p[(i + 2) * 8];
          d += p[(i + 3) * 8];
        }
        sums[static_cast<size_t>(t) * 8] = a + b + c + d;
      });
    }
    for (std::thread& t : pool) t.join();
    best = std::max(best, static_cast<double>(bytes) / Seconds(start) / 1e9);
  }
  std::free(buf);
  return best;
}

Result<std::shared_ptr<const LlamaModel>> LoadModel(const std::string& path, int threads) {
  auto file = GgufFile::Open(path);
  if (!file) return file.error();
  ModelOptions mo;
  mo.threads = threads;
  return LlamaModel::Load(std::shared_ptr<const GgufFile>(std::move(*file)), mo);
}

// Aggregate decode tokens/s of `batch` sequences decoded together: sequence i
// has its own prompt of 12 + i % 8 tokens (prefilled together in one call,
// untimed), then each timed step is one LlamaRunner::Decode with one token of
// every sequence, asking for every sequence's logits (each would sample).
Result<double> BatchDecode(const std::shared_ptr<const LlamaModel>& model, KvType kv, int batch, int reps,
                           int decode) {
  const LlamaHparams& hp = model->hparams();
  std::vector<std::vector<TokenId>> prompts, gens;
  int prompt_tokens = 0, pages = 0;
  for (int i = 0; i < batch; ++i) {
    prompts.push_back(Tokens(12 + i % 8, hp.vocab_size, 100 + 37 * i));
    gens.push_back(Tokens(decode, hp.vocab_size, 5000 + 53 * i));
    prompt_tokens += static_cast<int>(prompts.back().size());
    pages += (static_cast<int>(prompts.back().size()) + decode + kKvPageTokens - 1) / kKvPageTokens;
  }
  // Exactly the pages every sequence needs at its longest.
  const KvPoolShape shape = model->KvShape(
      kv, static_cast<int64_t>(pages) * kKvPageTokens * static_cast<int64_t>(model->KvBytesPerToken(kv)));
  auto cache = PagedKvCache::Create(model->backend(), shape, /*prefix_cache=*/false);
  if (!cache) return cache.error();
  auto runner = LlamaRunner::Create(model, std::max(prompt_tokens, batch), batch);
  if (!runner) return runner.error();
  std::vector<KvSequence> seqs(static_cast<size_t>(batch));
  std::vector<BatchItem> items(static_cast<size_t>(batch));
  std::vector<double> rates;
  for (int r = 0; r <= reps; ++r) {
    for (int i = 0; i < batch; ++i) {
      const auto u = static_cast<size_t>(i);
      (*cache)->Release(seqs[u]);
      items[u] = BatchItem{&seqs[u], prompts[u], true};
    }
    if (auto out = (*runner)->Decode(**cache, items); !out) return out.error();
    const auto t0 = Clock::now();
    for (int step = 0; step < decode; ++step) {
      for (int i = 0; i < batch; ++i) {
        const auto u = static_cast<size_t>(i);
        items[u] = BatchItem{&seqs[u], std::span<const TokenId>(&gens[u][static_cast<size_t>(step)], 1), true};
      }
      auto out = (*runner)->Decode(**cache, items);
      if (!out) return out.error();
      if (out->size() != static_cast<size_t>(batch) * static_cast<size_t>(hp.vocab_size)) {
        return Error{ErrorCode::kInternal, "batch decode returned " + std::to_string(out->size()) + " logits"};
      }
    }
    if (r > 0) rates.push_back(static_cast<double>(batch) * decode / Seconds(t0));  // run 0 warms up
  }
  for (KvSequence& seq : seqs) (*cache)->Release(seq);
  return Median(rates);
}

// --child PATH THREADS REPS DECODE BATCH KV: measures one cell, prints
// key=value lines.
int Child(const std::string& path, int threads, int reps, int decode, int batch, KvType kv) {
  auto start = Clock::now();
  auto model = LoadModel(path, threads);
  if (!model) return Fail(model.error());
  ContextOptions co;
  co.context_length = 4096;
  co.kv_type = kv;
  auto ctx = LlamaContext::Create(*model, co);
  if (!ctx) return Fail(ctx.error());
  const double load_s = Seconds(start);
  const LlamaHparams& hp = (*model)->hparams();

  std::map<std::string, double> result;
  for (int n : {64, 512}) {
    const std::vector<TokenId> prompt = Tokens(n, hp.vocab_size, n);
    std::vector<double> rates;
    const int runs = n == 512 ? std::max(2, reps / 2) : reps;
    for (int r = 0; r <= runs; ++r) {
      (*ctx)->Reset();
      const auto t0 = Clock::now();
      if (auto out = (*ctx)->Decode(prompt); !out) return Fail(out.error());
      if (r > 0) rates.push_back(n / Seconds(t0));  // run 0 warms the weights up
    }
    result["pp" + std::to_string(n)] = Median(rates);
  }
  // Decode `decode` tokens one by one after a 16-token prompt.
  const std::vector<TokenId> prompt = Tokens(16, hp.vocab_size, 1);
  const std::vector<TokenId> gen = Tokens(decode, hp.vocab_size, 2);
  std::vector<double> rates;
  for (int r = 0; r <= reps; ++r) {
    (*ctx)->Reset();
    if (auto out = (*ctx)->Decode(prompt); !out) return Fail(out.error());
    const auto t0 = Clock::now();
    for (TokenId t : gen) {
      if (auto out = (*ctx)->Decode(std::span<const TokenId>(&t, 1)); !out) return Fail(out.error());
    }
    if (r > 0) rates.push_back(decode / Seconds(t0));
  }
  result["tg"] = Median(rates);
  // Bytes one decode step reads: weights, plus K and V of every earlier
  // position, at the average position of the decode run.
  result["bytes_per_token"] = static_cast<double>((*model)->decode_weight_bytes()) +
                              static_cast<double>((*model)->KvBytesPerToken(kv)) * (16 + decode / 2.0);
  result["load_ms"] = load_s * 1000;
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  result["peak_mib"] = static_cast<double>(ru.ru_maxrss) / 1024.0;

  auto tg_batch = BatchDecode(*model, kv, batch, reps, decode);
  if (!tg_batch) return Fail(tg_batch.error());
  result["tg_batch"] = *tg_batch;
  getrusage(RUSAGE_SELF, &ru);
  result["peak_batch_mib"] = static_cast<double>(ru.ru_maxrss) / 1024.0;
  std::printf("backend=%s\n", (*model)->backend().Name().c_str());
  for (const auto& [k, v] : result) std::printf("%s=%.6g\n", k.c_str(), v);
  return 0;
}

// --kv-capacity PATH BUDGET_MIB SEQ_TOKENS: per KV type, how many sequences of
// SEQ_TOKENS tokens fit in the budget, computed and by reserving them.
int KvCapacity(const std::string& path, int64_t budget_mib, int seq_tokens) {
  auto model = LoadModel(path, 1);
  if (!model) return Fail(model.error());
  const int64_t budget = budget_mib << 20;
  const int pages_per_seq = (seq_tokens + kKvPageTokens - 1) / kKvPageTokens;
  std::printf("pages_per_seq=%d\n", pages_per_seq);
  for (const auto& [name, type] : {std::pair{"f16", KvType::kF16}, std::pair{"q8", KvType::kQ8}}) {
    const KvPoolShape shape = (*model)->KvShape(type, budget);
    auto cache = PagedKvCache::Create((*model)->backend(), shape, /*prefix_cache=*/false);
    if (!cache) return Fail(cache.error());
    std::vector<std::unique_ptr<KvSequence>> seqs;
    std::string stop = "none";
    // Bounded: a cache that never says no is a bug, reported as "none".
    while (seqs.size() <= static_cast<size_t>(shape.max_pages)) {
      auto seq = std::make_unique<KvSequence>();
      auto r = (*cache)->Reserve(*seq, seq_tokens);
      if (!r) {
        stop = r.error().code == ErrorCode::kResourceExhausted ? "resource_exhausted" : r.error().message;
        (*cache)->Release(*seq);
        break;
      }
      seqs.push_back(std::move(seq));
    }
    const std::string p = std::string(name) + "_";
    std::printf("%sbytes_per_token=%zu\n", p.c_str(), (*model)->KvBytesPerToken(type));
    std::printf("%spage_bytes=%zu\n", p.c_str(), (*cache)->pool().page_bytes());
    std::printf("%smax_pages=%d\n", p.c_str(), shape.max_pages);
    std::printf("%scomputed=%d\n", p.c_str(), shape.max_pages / pages_per_seq);
    std::printf("%sreserved=%zu\n", p.c_str(), seqs.size());
    std::printf("%spool_mib=%.6g\n", p.c_str(), static_cast<double>((*cache)->pool().bytes()) / (1 << 20));
    std::printf("%sstop=%s\n", p.c_str(), stop.c_str());
    for (auto& seq : seqs) (*cache)->Release(*seq);
  }
  return 0;
}

// llama-bench's mean tokens/s per test ("pp64", "pp512", "tg64") from its CSV
// output (-o csv: header row, then one row per test with n_prompt, n_gen, avg_ts).
std::map<std::string, double> LlamaBench(const std::string& model, int threads, int reps, int decode,
                                         long* max_rss_kib) {
  std::map<std::string, double> out;
  ChildResult r = RunChild({"llama-bench", "-m", model, "-t", std::to_string(threads), "-p", "64,512", "-n",
                            std::to_string(decode), "-r", std::to_string(reps), "-o", "csv"},
                           true);
  *max_rss_kib = r.max_rss_kib;
  const std::vector<std::string> lines = Split(r.out, '\n');
  if (lines.size() < 2) return out;
  auto cells = [](const std::string& line) {
    std::vector<std::string> c;
    for (std::string s : Split(line, ',')) {
      s.erase(std::remove(s.begin(), s.end(), '"'), s.end());
      c.push_back(s);
    }
    return c;
  };
  const std::vector<std::string> head = cells(lines[0]);
  auto col = [&](const char* name) {
    return static_cast<size_t>(std::find(head.begin(), head.end(), name) - head.begin());
  };
  const size_t np = col("n_prompt"), ng = col("n_gen"), ts = col("avg_ts");
  for (size_t i = 1; i < lines.size(); ++i) {
    const std::vector<std::string> c = cells(lines[i]);
    if (c.size() <= std::max({np, ng, ts})) continue;
    const std::string key = c[ng] != "0" ? "tg" : "pp" + c[np];
    out[key] = std::atof(c[ts].c_str());
  }
  return out;
}

std::string CpuName() {
  std::ifstream in("/proc/cpuinfo");
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("model name", 0) == 0) return line.substr(line.find(':') + 2);
  }
  return "unknown CPU";
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  if (args.size() == 7 && args[0] == "--child") {
    auto kv = ParseKvType(args[6]);
    if (!kv) return Fail(kv.error());
    return Child(args[1], std::atoi(args[2].c_str()), std::atoi(args[3].c_str()), std::atoi(args[4].c_str()),
                 std::atoi(args[5].c_str()), *kv);
  }
  if (args.size() == 4 && args[0] == "--kv-capacity") {
    return KvCapacity(args[1], std::atoll(args[2].c_str()), std::atoi(args[3].c_str()));
  }
  if (args.size() == 3 && args[0] == "--bandwidth") {
    std::printf("%.6g\n", ReadBandwidthGBs(std::atoi(args[1].c_str()), args[2] == "huge"));
    return 0;
  }
  std::string dir = std::getenv("TOLLGATE_BENCH_MODEL_DIR") ? std::getenv("TOLLGATE_BENCH_MODEL_DIR") : "bench-models";
  std::vector<std::string> types = {"f16", "q8_0", "q4_0", "q4_k"};
  std::vector<int> thread_counts = {1, 2};
  int reps = 5;
  int decode = 64;
  int batch = 8;
  std::string kv_name = "f16";
  int kv_budget_mib = 256;
  int kv_seq_tokens = 1024;
  for (size_t i = 0; i < args.size(); i += 2) {
    if (i + 1 >= args.size()) {
      std::fprintf(stderr, "option %s needs a value\n", args[i].c_str());
      return 2;
    }
    if (args[i] == "--model-dir") dir = args[i + 1];
    else if (args[i] == "--types") types = Split(args[i + 1], ',');
    else if (args[i] == "--threads") {
      thread_counts.clear();
      for (const std::string& t : Split(args[i + 1], ',')) thread_counts.push_back(std::atoi(t.c_str()));
    } else if (args[i] == "--reps") reps = std::max(1, std::atoi(args[i + 1].c_str()));
    else if (args[i] == "--decode") decode = std::max(1, std::atoi(args[i + 1].c_str()));
    else if (args[i] == "--batch") batch = std::max(1, std::atoi(args[i + 1].c_str()));
    else if (args[i] == "--kv") kv_name = args[i + 1];
    else if (args[i] == "--kv-budget-mib") kv_budget_mib = std::max(1, std::atoi(args[i + 1].c_str()));
    else if (args[i] == "--kv-seq-tokens") kv_seq_tokens = std::max(1, std::atoi(args[i + 1].c_str()));
    else {
      std::fprintf(stderr, "unknown option %s (see the comment at the top of local_backend_bench.cpp)\n", args[i].c_str());
      return 2;
    }
  }
  if (auto kv = ParseKvType(kv_name); !kv) return Fail(kv.error());
  if (types.empty() || thread_counts.empty()) {
    std::fprintf(stderr, "--types and --threads need at least one value\n");
    return 2;
  }

  std::filesystem::create_directories(dir);
  const std::string tool = (std::filesystem::path(Self()).parent_path().parent_path() / "bin" / "tollgate-model").string();
  for (const std::string& type : types) {
    const std::string path = dir + "/qwen2.5-0.5b-" + type + ".gguf";
    if (std::filesystem::exists(path)) continue;
    std::vector<std::string> cmd = {tool, "write-random", "--arch", "qwen2", "--shape", "qwen2.5-0.5b",
                                    "--type", type, "--out", path};
    if (const char* tok = std::getenv("TOLLGATE_QWEN_TOKENIZER_DIR")) {
      cmd.push_back("--tokenizer-dir");
      cmd.push_back(tok);
    }
    std::fprintf(stderr, "writing %s ...\n", path.c_str());
    ChildResult r = RunChild(cmd, false);
    if (r.status != 0) {
      std::fprintf(stderr, "could not run %s (build the tollgate-model target, or pass --model-dir)\n", tool.c_str());
      return 1;
    }
  }

  // Bandwidth is measured right before each cell (a virtual machine's share
  // drifts with its neighbours' load), in a child: the parent must stay small,
  // since a spawned child starts from the parent's memory high-water mark
  // (Linux keeps it across exec).
  auto bandwidth = [&](int t) {
    return std::atof(RunChild({Self(), "--bandwidth", std::to_string(t), "small"}, false).out.c_str());
  };
  const bool llama = !FindOnPath("llama-bench").empty();

  char date[32];
  const std::time_t now = std::time(nullptr);
  std::strftime(date, sizeof(date), "%Y-%m-%d", std::localtime(&now));
  std::printf("Tollgate local engine, %s, %s (%u hardware threads)\n", date, CpuName().c_str(),
              std::thread::hardware_concurrency());
  std::printf("Models: random weights at Qwen2.5-0.5B's shape (qwen2, 24 layers, 896 hidden, 14/2 heads, vocab 151936, tied)\n");
  std::printf("Decode b1: one sequence, %d tokens after a 16-token prompt; bound = read bandwidth (measured with the\n"
              "same threads just before the row) / (weight + KV bytes read per token)\n", decode);
  std::printf("Decode b%d: %d sequences (prompts of 12-19 tokens), %d steps of one LlamaRunner::Decode with one token\n"
              "and the logits of each; aggregate tok/s = %d * steps / time. KV cache: %s\n",
              batch, batch, decode, batch, kv_name.c_str());
  std::printf("%s\n\n", llama ? "llama.cpp: llama-bench on the same files and threads (b1 only); x = ours / llama.cpp"
                              : "llama.cpp: llama-bench not on PATH, no comparison");

  const std::string b = "b" + std::to_string(batch);
  std::printf("| type | threads | load ms | peak MiB | prefill 64 tok/s | prefill 512 tok/s | decode b1 tok/s | decode %s tok/s | %s / b1 | bandwidth GB/s | b1 bound tok/s | b1 %% of bound |%s\n",
              b.c_str(), b.c_str(), llama ? " llama.cpp pp64 | pp512 | decode b1 | peak MiB |" : "");
  std::printf("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|%s\n", llama ? "---:|---:|---:|---:|" : "");
  std::string backend_name;
  double max_batch_extra_mib = 0;
  for (const std::string& type : types) {
    const std::string path = dir + "/qwen2.5-0.5b-" + type + ".gguf";
    {
      // Into the page cache first, so every load below reads from memory.
      std::ifstream warm(path, std::ios::binary);
      std::vector<char> chunk(size_t{1} << 20);
      while (warm.read(chunk.data(), static_cast<std::streamsize>(chunk.size())) || warm.gcount() > 0) {
      }
    }
    for (int t : thread_counts) {
      const double bw = bandwidth(t);
      ChildResult r = RunChild({Self(), "--child", path, std::to_string(t), std::to_string(reps), std::to_string(decode),
                                std::to_string(batch), kv_name},
                               false);
      std::map<std::string, std::string> kv = ParseKv(r.out);
      if (r.status != 0 || !kv.count("tg_batch")) {
        std::printf("| %s | %d | failed (see stderr) |\n", type.c_str(), t);
        continue;
      }
      backend_name = kv["backend"].substr(0, kv["backend"].find(" x"));
      auto num = [&](const char* key) { return std::atof(kv[key].c_str()); };
      max_batch_extra_mib = std::max(max_batch_extra_mib, num("peak_batch_mib") - num("peak_mib"));
      const double bound = bw * 1e9 / num("bytes_per_token");
      std::printf("| %s | %d | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s%% |", type.c_str(), t,
                  Fixed(num("load_ms"), 0).c_str(), Fixed(num("peak_mib"), 0).c_str(), Fixed(num("pp64"), 1).c_str(),
                  Fixed(num("pp512"), 1).c_str(), Fixed(num("tg"), 1).c_str(), Fixed(num("tg_batch"), 1).c_str(),
                  Fixed(num("tg_batch") / num("tg"), 2).c_str(), Fixed(bw, 1).c_str(), Fixed(bound, 1).c_str(),
                  Fixed(100 * num("tg") / bound, 0).c_str());
      if (llama) {
        long rss = 0;
        std::map<std::string, double> lb = LlamaBench(path, t, reps, decode, &rss);
        auto ratio = [&](const char* key, double ours) {
          return lb.count(key) && lb[key] > 0 ? Fixed(lb[key], 1) + " (x" + Fixed(ours / lb[key], 2) + ")" : std::string("-");
        };
        std::printf(" %s | %s | %s | %s |", ratio("pp64", num("pp64")).c_str(), ratio("pp512", num("pp512")).c_str(),
                    ratio("tg", num("tg")).c_str(), Fixed(static_cast<double>(rss) / 1024.0, 0).c_str());
      }
      std::printf("\n");
      std::fflush(stdout);
    }
  }
  std::printf("\nkernels: %s; peak MiB is read after the b1 runs (the %s runs add at most %s MiB: their KV pages and\n"
              "scratch)\n",
              backend_name.c_str(), b.c_str(), Fixed(max_batch_extra_mib, 0).c_str());

  // KV capacity: one model, a fixed budget, F16 against Q8 keys and values.
  const std::string cap_path = dir + "/qwen2.5-0.5b-" + types.front() + ".gguf";
  ChildResult cap = RunChild({Self(), "--kv-capacity", cap_path, std::to_string(kv_budget_mib), std::to_string(kv_seq_tokens)},
                             false);
  std::map<std::string, std::string> kc = ParseKv(cap.out);
  std::printf("\nKV capacity: sequences of %d tokens (%s pages of %d) in a %d MiB KV budget (model: %s; computed =\n"
              "KvShape(type, budget).max_pages / pages per sequence; reserved = PagedKvCache::Reserve until\n"
              "kResourceExhausted)\n\n",
              kv_seq_tokens, kc.count("pages_per_seq") ? kc["pages_per_seq"].c_str() : "?", kKvPageTokens,
              kv_budget_mib, types.front().c_str());
  if (cap.status != 0 || !kc.count("q8_stop")) {
    std::printf("failed (see stderr)\n");
    return 1;
  }
  std::printf("| KV type | bytes/token | page KiB | pages | sequences computed | sequences reserved | pool MiB | stopped by |\n");
  std::printf("|---|---:|---:|---:|---:|---:|---:|---|\n");
  for (const char* name : {"f16", "q8"}) {
    auto get = [&](const char* key) { return kc[std::string(name) + "_" + key]; };
    std::printf("| %s | %s | %s | %s | %s | %s | %s | %s |\n", name, get("bytes_per_token").c_str(),
                Fixed(std::atof(get("page_bytes").c_str()) / 1024.0, 1).c_str(), get("max_pages").c_str(),
                get("computed").c_str(), get("reserved").c_str(), Fixed(std::atof(get("pool_mib").c_str()), 1).c_str(),
                get("stop").c_str());
  }
  const double f16 = std::atof(kc["f16_reserved"].c_str()), q8 = std::atof(kc["q8_reserved"].c_str());
  const bool agree = kc["f16_computed"] == kc["f16_reserved"] && kc["q8_computed"] == kc["q8_reserved"];
  std::printf("\nQ8 / F16 sequences: %s (target >= 1.9)%s\n", f16 > 0 ? ("x" + Fixed(q8 / f16, 2)).c_str() : "-",
              agree ? "" : "; computed and reserved DISAGREE");
  return 0;
}
