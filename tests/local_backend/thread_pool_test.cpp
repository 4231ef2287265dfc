#include "../../local_backend/src/thread_pool.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <vector>

namespace tollgate::local_backend::cpu {
namespace {

TEST(ThreadPool, RunsEveryTaskExactlyOnceOnAValidThread) {
  for (int threads : {1, 2, 3, 8}) {
    ThreadPool pool(threads);
    EXPECT_EQ(pool.size(), threads);
    for (int round = 0; round < 2000; ++round) {
      const int tasks = 1 + round % 37;
      std::vector<std::atomic<int>> hits(static_cast<size_t>(tasks));
      std::atomic<int> bad_thread{0};
      pool.Run(tasks, [&](int task, int thread) {
        hits[static_cast<size_t>(task)].fetch_add(1, std::memory_order_relaxed);
        if (thread < 0 || thread >= threads) bad_thread.fetch_add(1);
      });
      for (int t = 0; t < tasks; ++t) ASSERT_EQ(hits[static_cast<size_t>(t)].load(), 1) << "round " << round;
      ASSERT_EQ(bad_thread.load(), 0);
    }
  }
}

TEST(ThreadPool, WritesOfTasksAreVisibleAfterRun) {
  ThreadPool pool(4);
  std::vector<int> data(1000, 0);
  for (int round = 1; round <= 200; ++round) {
    pool.Run(static_cast<int>(data.size()), [&](int task, int) { data[static_cast<size_t>(task)] += round; });
    long sum = 0;
    for (int v : data) sum += v;
    ASSERT_EQ(sum, static_cast<long>(data.size()) * round * (round + 1) / 2);
  }
}

TEST(ThreadPool, ZeroTasksReturnAtOnceAndTheDestructorJoins) {
  ThreadPool pool(3);
  bool called = false;
  pool.Run(0, [&](int, int) { called = true; });
  EXPECT_FALSE(called);
}

}  // namespace
}  // namespace tollgate::local_backend::cpu
