// A manual Executor for call-driver tests: posted functions run only when the
// test says so (RunUntilIdle), and time moves only by Advance(), which fires
// the timers that came due. Thread-safe Post (providers may post from their
// own threads); everything else from the test's thread.
#pragma once

#include "call_driver.hpp"

#include <chrono>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <vector>

namespace tollgate::gateway::testing {

class ManualExecutor final : public Executor, public std::enable_shared_from_this<ManualExecutor> {
 public:
  void Post(std::function<void()> fn) override {
    std::lock_guard lock(mu_);
    queue_.push_back(std::move(fn));
  }

  std::unique_ptr<Timer> StartTimer(SteadyTime at, std::function<void()> fn) override {
    auto state = std::make_shared<TimerState>();
    state->at = at;
    state->fn = std::move(fn);
    timers_.push_back(state);
    return std::make_unique<Handle>(state);
  }

  SteadyTime Now() const override { return now_; }
  WallTime WallNow() const override { return wall_ + (now_ - SteadyTime{}); }

  // Runs posted functions (and what they post) until none is left.
  // Returns how many ran.
  int RunUntilIdle() {
    int ran = 0;
    for (;;) {
      std::function<void()> fn;
      {
        std::lock_guard lock(mu_);
        if (queue_.empty()) return ran;
        fn = std::move(queue_.front());
        queue_.pop_front();
      }
      fn();
      ++ran;
    }
  }

  // Moves the clock forward, firing due timers in time order (each through
  // the queue, as a real executor would), and runs everything posted.
  void Advance(std::chrono::milliseconds by) {
    const SteadyTime until = now_ + by;
    for (;;) {
      RunUntilIdle();
      std::shared_ptr<TimerState> next;
      for (const auto& t : timers_) {
        if (!t->cancelled && !t->fired && t->at <= until && (!next || t->at < next->at)) next = t;
      }
      if (!next) break;
      now_ = std::max(now_, next->at);
      next->fired = true;
      Post([next] {
        if (!next->cancelled) next->fn();
      });
    }
    now_ = until;
    RunUntilIdle();
  }

  int pending_timers() const {
    int n = 0;
    for (const auto& t : timers_) n += !t->cancelled && !t->fired ? 1 : 0;
    return n;
  }

 private:
  struct TimerState {
    SteadyTime at;
    std::function<void()> fn;
    bool cancelled = false;
    bool fired = false;
  };
  struct Handle final : Timer {
    explicit Handle(std::shared_ptr<TimerState> s) : state(std::move(s)) {}
    ~Handle() override { Cancel(); }
    void Cancel() override { state->cancelled = true; }
    std::shared_ptr<TimerState> state;
  };

  std::mutex mu_;
  std::deque<std::function<void()>> queue_;
  std::vector<std::shared_ptr<TimerState>> timers_;
  SteadyTime now_ = SteadyTime{} + std::chrono::hours(1);
  WallTime wall_ = WallTime{} + std::chrono::hours(24 * 365 * 50);
};

}  // namespace tollgate::gateway::testing
