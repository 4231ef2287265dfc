// Helpers shared by the local engine's benchmarks (local_backend_bench.cpp,
// cuda_bench.cpp): child processes, parsing of their key=value output, and
// small formatting. Header-only, one translation unit each.
#pragma once

#include "tollgate/core/error.hpp"
#include "tollgate/local_backend/backend.hpp"
#include "tollgate/local_backend/tokenizer.hpp"

#include <fcntl.h>
#include <spawn.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <sstream>
#include <string>
#include <vector>

extern char** environ;

namespace tollgate::bench {

using Clock = std::chrono::steady_clock;

inline double Seconds(Clock::time_point since) {
  return std::chrono::duration<double>(Clock::now() - since).count();
}

// The non-empty fields of `s` between `sep`s.
inline std::vector<std::string> Split(const std::string& s, char sep) {
  std::vector<std::string> out;
  std::stringstream in(s);
  for (std::string item; std::getline(in, item, sep);) {
    if (!item.empty()) out.push_back(item);
  }
  return out;
}

// 0 for none; the mean of the middle two for an even count.
inline double Median(std::vector<double> v) {
  if (v.empty()) return 0.0;
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 == 1 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

// `v` with `digits` decimals; "-" for NaN or infinity.
inline std::string Fixed(double v, int digits) {
  if (!std::isfinite(v)) return "-";
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%.*f", digits, v);
  return buf;
}

struct ChildResult {
  int status = -1;  // waitpid status; -1 when it could not start
  std::string out;  // its stdout
  long max_rss_kib = 0;
  double seconds = 0;
};

// Runs argv (argv[0] looked up on PATH) with stdout captured; stderr passes
// through unless `quiet_stderr`.
inline ChildResult RunChild(const std::vector<std::string>& args, bool quiet_stderr = false) {
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

// key=value lines.
inline std::map<std::string, std::string> ParseKv(const std::string& text) {
  std::map<std::string, std::string> m;
  for (const std::string& line : Split(text, '\n')) {
    const size_t eq = line.find('=');
    if (eq != std::string::npos) m[line.substr(0, eq)] = line.substr(eq + 1);
  }
  return m;
}

// This executable's path.
inline std::string Self() { return std::filesystem::read_symlink("/proc/self/exe").string(); }

// `name`'s path on $PATH, or "".
inline std::string FindOnPath(const std::string& name) {
  const char* path = std::getenv("PATH");
  if (!path) return "";
  for (const std::string& dir : Split(path, ':')) {
    const std::string p = dir + "/" + name;
    if (access(p.c_str(), X_OK) == 0) return p;
  }
  return "";
}

// `n` token ids spread over the vocabulary, different per `salt`.
inline std::vector<local_backend::TokenId> Tokens(int n, int vocab, int salt) {
  std::vector<local_backend::TokenId> ids(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) {
    ids[static_cast<size_t>(i)] = static_cast<local_backend::TokenId>((1000 + 7919 * (i + salt)) % vocab);
  }
  return ids;
}

inline Result<local_backend::KvType> ParseKvType(const std::string& name) {
  if (name == "f16") return local_backend::KvType::kF16;
  if (name == "q8") return local_backend::KvType::kQ8;
  if (name == "f32") return local_backend::KvType::kF32;
  return InvalidArgument("unknown KV type " + name + " (f16, q8 or f32)");
}

// Prints the error; returns the exit status 1.
inline int Fail(const Error& e) {
  std::fprintf(stderr, "%s\n", e.message.c_str());
  return 1;
}

}  // namespace tollgate::bench
