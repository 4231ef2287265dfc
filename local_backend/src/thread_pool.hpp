// A fixed set of compute threads for the CPU backend. Internal to local_backend.
//
// Run() publishes `tasks` work items; the pool threads and the calling thread
// claim them one at a time and Run() returns once every item has finished. The
// caller never waits for a pool thread that has not claimed anything, so a
// thread that the OS has descheduled (a loaded machine) costs nothing beyond
// the work the others pick up. Pool threads spin briefly between runs (a
// decode step issues a few hundred runs, microseconds apart), then sleep on a
// futex (std::atomic::wait).
//
// Thread-safety: Run() must be called by one thread at a time (each backend
// serialises its operations); it is not reentrant. The destructor joins the
// threads.
#pragma once

#include <atomic>
#include <cstdint>
#include <thread>
#include <type_traits>
#include <vector>

namespace tollgate::local_backend::cpu {

class ThreadPool {
 public:
  // `threads` >= 1 in total, the caller included (threads - 1 are started).
  explicit ThreadPool(int threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return size_; }

  // Calls fn(task, thread) for every task in [0, tasks), thread in [0, size())
  // (each thread index runs its calls one after another); returns when every
  // call has returned. `fn` must not throw.
  template <class F>
  void Run(int tasks, F&& fn) {
    if (tasks <= 0) return;
    if (size_ == 1 || tasks == 1) {
      for (int t = 0; t < tasks; ++t) fn(t, 0);
      return;
    }
    using Fn = std::remove_reference_t<F>;
    RunImpl(tasks, [](void* ctx, int task, int thread) { (*static_cast<Fn*>(ctx))(task, thread); }, &fn);
  }

 private:
  using Call = void (*)(void* ctx, int task, int thread);
  void RunImpl(int tasks, Call call, void* ctx);
  // Claims and runs tasks of generation `gen` until none is left or a newer
  // generation started.
  void Work(uint32_t gen, int thread);
  void WorkerLoop(int thread);

  int size_ = 1;
  // (generation << 32) | next unclaimed task: a claim is a compare-and-swap, so
  // a thread that read an older generation can never claim a newer one's task.
  std::atomic<uint64_t> state_{0};
  std::atomic<uint32_t> generation_{0};  // what sleeping threads wait on
  std::atomic<int> done_{0};             // finished tasks of the current generation
  std::atomic<bool> stop_{false};
  // The current generation's job. Written before the generation is published,
  // never while a task of the previous one can still be claimed.
  std::atomic<int> tasks_{0};
  std::atomic<Call> call_{nullptr};
  std::atomic<void*> ctx_{nullptr};
  std::vector<std::thread> threads_;
};

}  // namespace tollgate::local_backend::cpu
