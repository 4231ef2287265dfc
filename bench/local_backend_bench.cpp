// Local engine benchmark: prefill and decode speed, load time and peak memory
// for random-weight models at Qwen2.5-0.5B's shape (qwen2 architecture) in F16,
// Q8_0, Q4_0 and Q4_K, at 1 and 2 threads (issue 7's table). Decode is also
// shown as a share of the memory-bandwidth bound: bytes of weights and KV
// cache read per token over this machine's read bandwidth, measured in the
// same run. When llama.cpp's `llama-bench` is on the PATH it runs on the same
// files and threads and the table shows our speed over its speed.
//
//   tollgate_local_bench [--model-dir DIR] [--types f16,q8_0,q4_0,q4_k]
//                        [--threads 1,2] [--reps N] [--decode N]
//
// Model files are DIR/qwen2.5-0.5b-TYPE.gguf (default DIR: $TOLLGATE_BENCH_MODEL_DIR
// or ./bench-models). Missing ones are written with `tollgate-model
// write-random --arch qwen2 --shape qwen2.5-0.5b` from the build's bin/
// directory, with the tokenizer in $TOLLGATE_QWEN_TOKENIZER_DIR when set
// (token ids are synthetic here, so the vocabulary only matters for size).
//
// Each (type, threads) cell runs in a child process (this program with
// --child), so its peak resident memory (getrusage ru_maxrss: weights touched
// in the mapping, KV cache, scratch) is its own. Times are medians over --reps
// runs after one warm-up; load time (open, parse, prepare weights, create a
// context) is measured with the file already in the page cache.
// Batch-8 aggregate decode is not measured yet: it needs continuous batching.
#include "tollgate/local_backend/gguf.hpp"
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
#include <sstream>
#include <string>
#include <thread>
#include <vector>

extern char** environ;

namespace {

using namespace tollgate::local_backend;
using Clock = std::chrono::steady_clock;

double Seconds(Clock::time_point since) { return std::chrono::duration<double>(Clock::now() - since).count(); }

std::vector<std::string> Split(const std::string& s, char sep) {
  std::vector<std::string> out;
  std::stringstream in(s);
  for (std::string item; std::getline(in, item, sep);) {
    if (!item.empty()) out.push_back(item);
  }
  return out;
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0.0 : v[v.size() / 2];
}

// Runs argv, returns its stdout (and its peak RSS in KiB and wall seconds).
struct ChildResult {
  int status = -1;
  std::string out;
  long max_rss_kib = 0;
  double seconds = 0;
};
ChildResult RunChild(const std::vector<std::string>& args, bool quiet_stderr) {
  ChildResult r;
  int pipe_fd[2];
  if (pipe(pipe_fd) != 0) return r;
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, pipe_fd[1], 1);
  posix_spawn_file_actions_addclose(&fa, pipe_fd[0]);
  if (quiet_stderr) posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
  std::vector<char*> argv;
  for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  pid_t pid;
  const auto start = Clock::now();
  const int rc = posix_spawnp(&pid, argv[0], &fa, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  close(pipe_fd[1]);
  if (rc != 0) {
    close(pipe_fd[0]);
    return r;
  }
  char buf[4096];
  for (ssize_t n; (n = read(pipe_fd[0], buf, sizeof(buf))) > 0;) r.out.append(buf, static_cast<size_t>(n));
  close(pipe_fd[0]);
  rusage ru{};
  wait4(pid, &r.status, 0, &ru);
  r.seconds = Seconds(start);
  r.max_rss_kib = ru.ru_maxrss;
  return r;
}

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

std::vector<TokenId> Tokens(int n, int vocab, int salt) {
  std::vector<TokenId> ids(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) ids[static_cast<size_t>(i)] = static_cast<TokenId>((1000 + 7919 * (i + salt)) % vocab);
  return ids;
}

// --child PATH THREADS REPS DECODE: measures one cell, prints key=value lines.
int Child(const std::string& path, int threads, int reps, int decode) {
  auto start = Clock::now();
  auto file = GgufFile::Open(path);
  if (!file) {
    std::fprintf(stderr, "%s\n", file.error().message.c_str());
    return 1;
  }
  ModelOptions mo;
  mo.threads = threads;
  auto model = LlamaModel::Load(std::shared_ptr<const GgufFile>(std::move(*file)), mo);
  if (!model) {
    std::fprintf(stderr, "%s\n", model.error().message.c_str());
    return 1;
  }
  ContextOptions co;
  co.context_length = 4096;
  auto ctx = LlamaContext::Create(*model, co).value();
  const double load_s = Seconds(start);
  const LlamaHparams& hp = (*model)->hparams();

  std::map<std::string, double> result;
  for (int n : {64, 512}) {
    const std::vector<TokenId> prompt = Tokens(n, hp.vocab_size, n);
    std::vector<double> rates;
    const int runs = n == 512 ? std::max(2, reps / 2) : reps;
    for (int r = 0; r <= runs; ++r) {
      ctx->Reset();
      const auto t0 = Clock::now();
      if (!ctx->Decode(prompt)) return 1;
      if (r > 0) rates.push_back(n / Seconds(t0));  // run 0 warms the weights up
    }
    result["pp" + std::to_string(n)] = Median(rates);
  }
  // Decode `decode` tokens one by one after a 16-token prompt.
  const std::vector<TokenId> prompt = Tokens(16, hp.vocab_size, 1);
  const std::vector<TokenId> gen = Tokens(decode, hp.vocab_size, 2);
  std::vector<double> rates;
  for (int r = 0; r <= reps; ++r) {
    ctx->Reset();
    if (!ctx->Decode(prompt)) return 1;
    const auto t0 = Clock::now();
    for (TokenId t : gen) {
      if (!ctx->Decode(std::span<const TokenId>(&t, 1))) return 1;
    }
    if (r > 0) rates.push_back(decode / Seconds(t0));
  }
  result["tg"] = Median(rates);
  // Bytes one decode step reads: weights, plus K and V of every earlier position
  // (F16), at the average position of the decode run.
  const double kv_row = 2.0 * hp.block_count * hp.head_count_kv * hp.head_dim * 2.0;
  result["bytes_per_token"] = static_cast<double>((*model)->decode_weight_bytes()) + kv_row * (16 + decode / 2.0);
  result["load_ms"] = load_s * 1000;
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  result["peak_mib"] = static_cast<double>(ru.ru_maxrss) / 1024.0;
  std::printf("backend=%s\n", (*model)->backend().Name().c_str());
  for (const auto& [k, v] : result) std::printf("%s=%.6g\n", k.c_str(), v);
  return 0;
}

std::map<std::string, std::string> ParseKv(const std::string& text) {
  std::map<std::string, std::string> m;
  for (const std::string& line : Split(text, '\n')) {
    const size_t eq = line.find('=');
    if (eq != std::string::npos) m[line.substr(0, eq)] = line.substr(eq + 1);
  }
  return m;
}

std::string Self() { return std::filesystem::read_symlink("/proc/self/exe").string(); }

bool OnPath(const std::string& name) {
  const char* path = std::getenv("PATH");
  if (!path) return false;
  for (const std::string& dir : Split(path, ':')) {
    if (access((dir + "/" + name).c_str(), X_OK) == 0) return true;
  }
  return false;
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

std::string Fixed(double v, int digits) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%.*f", digits, v);
  return buf;
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
  if (args.size() == 5 && args[0] == "--child") {
    return Child(args[1], std::atoi(args[2].c_str()), std::atoi(args[3].c_str()), std::atoi(args[4].c_str()));
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
  for (size_t i = 0; i + 1 < args.size(); i += 2) {
    if (args[i] == "--model-dir") dir = args[i + 1];
    else if (args[i] == "--types") types = Split(args[i + 1], ',');
    else if (args[i] == "--threads") {
      thread_counts.clear();
      for (const std::string& t : Split(args[i + 1], ',')) thread_counts.push_back(std::atoi(t.c_str()));
    } else if (args[i] == "--reps") reps = std::max(1, std::atoi(args[i + 1].c_str()));
    else if (args[i] == "--decode") decode = std::max(1, std::atoi(args[i + 1].c_str()));
    else {
      std::fprintf(stderr, "unknown option %s (see the comment at the top of local_backend_bench.cpp)\n", args[i].c_str());
      return 2;
    }
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
  const bool llama = OnPath("llama-bench");

  char date[32];
  const std::time_t now = std::time(nullptr);
  std::strftime(date, sizeof(date), "%Y-%m-%d", std::localtime(&now));
  std::printf("Tollgate local engine, %s, %s (%u hardware threads)\n", date, CpuName().c_str(),
              std::thread::hardware_concurrency());
  std::printf("Models: random weights at Qwen2.5-0.5B's shape (qwen2, 24 layers, 896 hidden, 14/2 heads, vocab 151936, tied)\n");
  std::printf("Decode: %d tokens after a 16-token prompt; bound = read bandwidth (measured with the same threads just\n"
              "before the row) / (weight + KV bytes read per token)\n", decode);
  std::printf("%s\n\n", llama ? "llama.cpp: llama-bench on the same files and threads; x = ours / llama.cpp"
                              : "llama.cpp: llama-bench not on PATH, no comparison");

  std::printf("| type | threads | load ms | peak MiB | prefill 64 tok/s | prefill 512 tok/s | decode tok/s | bandwidth GB/s | decode bound tok/s | %% of bound |%s\n",
              llama ? " llama.cpp pp64 | pp512 | decode | peak MiB |" : "");
  std::printf("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|%s\n", llama ? "---:|---:|---:|---:|" : "");
  std::string backend_name;
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
      ChildResult r = RunChild({Self(), "--child", path, std::to_string(t), std::to_string(reps), std::to_string(decode)}, false);
      std::map<std::string, std::string> kv = ParseKv(r.out);
      if (r.status != 0 || !kv.count("tg")) {
        std::printf("| %s | %d | failed (see stderr) |\n", type.c_str(), t);
        continue;
      }
      backend_name = kv["backend"].substr(0, kv["backend"].find(" x"));
      auto num = [&](const char* key) { return std::atof(kv[key].c_str()); };
      const double bound = bw * 1e9 / num("bytes_per_token");
      std::printf("| %s | %d | %s | %s | %s | %s | %s | %s | %s | %s%% |", type.c_str(), t, Fixed(num("load_ms"), 0).c_str(),
                  Fixed(num("peak_mib"), 0).c_str(), Fixed(num("pp64"), 1).c_str(), Fixed(num("pp512"), 1).c_str(),
                  Fixed(num("tg"), 1).c_str(), Fixed(bw, 1).c_str(), Fixed(bound, 1).c_str(),
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
  std::printf("\nkernels: %s; batch-8 aggregate decode: not measured yet (needs continuous batching)\n",
              backend_name.c_str());
  return 0;
}
