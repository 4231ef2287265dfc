#include "thread_pool.hpp"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

namespace tollgate::local_backend::cpu {
namespace {

// Tens of microseconds of polling before sleeping: long enough to bridge the
// gaps between the operations of one forward pass, short enough not to burn a
// core while the engine is idle.
constexpr int kSpinIterations = 2000;

inline void Pause() {
#if defined(__x86_64__) || defined(__i386__)
  _mm_pause();
#else
  std::this_thread::yield();
#endif
}

}  // namespace

ThreadPool::ThreadPool(int threads) : size_(threads < 1 ? 1 : threads) {
  threads_.reserve(static_cast<size_t>(size_ - 1));
  for (int i = 1; i < size_; ++i) threads_.emplace_back([this, i] { WorkerLoop(i); });
}

ThreadPool::~ThreadPool() {
  stop_.store(true, std::memory_order_relaxed);
  generation_.fetch_add(1, std::memory_order_release);
  generation_.notify_all();
  for (std::thread& t : threads_) t.join();
}

void ThreadPool::Work(uint32_t gen, int thread) {
  // The job read here belongs to `gen` whenever a claim below succeeds:
  // RunImpl closes the state to claims (newer generation, no free task) before
  // it writes the next job, and these acquire loads make that closing visible
  // to the state loads below whenever they see any part of a newer job.
  const int tasks = tasks_.load(std::memory_order_acquire);
  const Call call = call_.load(std::memory_order_acquire);
  void* const ctx = ctx_.load(std::memory_order_acquire);
  uint64_t s = state_.load(std::memory_order_acquire);
  while (true) {
    if (static_cast<uint32_t>(s >> 32) != gen) return;
    const uint32_t task = static_cast<uint32_t>(s);
    if (task >= static_cast<uint32_t>(tasks)) return;
    if (!state_.compare_exchange_weak(s, s + 1, std::memory_order_acq_rel, std::memory_order_acquire)) continue;
    call(ctx, static_cast<int>(task), thread);
    if (done_.fetch_add(1, std::memory_order_acq_rel) + 1 == tasks) done_.notify_one();
    s = state_.load(std::memory_order_acquire);
  }
}

void ThreadPool::RunImpl(int tasks, Call call, void* ctx) {
  const uint32_t gen = generation_.load(std::memory_order_relaxed) + 1;
  // Closed: a thread still inside the previous generation cannot claim, and
  // no task index of this one is free yet.
  state_.store(static_cast<uint64_t>(gen) << 32 | 0xFFFFFFFFu, std::memory_order_release);
  tasks_.store(tasks, std::memory_order_release);
  call_.store(call, std::memory_order_release);
  ctx_.store(ctx, std::memory_order_release);
  done_.store(0, std::memory_order_relaxed);
  state_.store(static_cast<uint64_t>(gen) << 32, std::memory_order_release);
  generation_.store(gen, std::memory_order_release);
  generation_.notify_all();
  Work(gen, 0);
  for (int spin = 0;; ++spin) {
    const int done = done_.load(std::memory_order_acquire);
    if (done == tasks) break;
    if (spin < kSpinIterations) {
      Pause();
    } else {
      done_.wait(done, std::memory_order_acquire);
    }
  }
}

void ThreadPool::WorkerLoop(int thread) {
  uint32_t seen = 0;
  while (true) {
    uint32_t gen;
    for (int spin = 0;; ++spin) {
      gen = generation_.load(std::memory_order_acquire);
      if (gen != seen) break;
      if (spin < kSpinIterations) {
        Pause();
      } else {
        generation_.wait(seen, std::memory_order_acquire);
      }
    }
    seen = gen;
    if (stop_.load(std::memory_order_relaxed)) return;
    // A generation may have been published after `gen`; Work only claims
    // within `gen` and the next loop picks the newer one up.
    Work(gen, thread);
  }
}

}  // namespace tollgate::local_backend::cpu
