// A StreamSink for tests: records one call's events, lets a test wait for
// them, and flags contract breaches (an event after the terminal one, two
// calls at once; provider.hpp forbids both).
#pragma once

#include "tollgate/core/provider.hpp"

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace tollgate::test_support {

using namespace std::chrono_literals;

class RecordingSink final : public StreamSink {
 public:
  // Runs inside OnDelta with the delta and the number of deltas so far.
  std::function<void(const std::string&, std::size_t)> on_delta;

  void OnDelta(std::string_view text) override {
    Enter();
    std::size_t n;
    {
      std::lock_guard lock(mu_);
      if (terminal_count_ > 0) events_after_terminal_ = true;
      deltas_.emplace_back(text);
      n = deltas_.size();
    }
    cv_.notify_all();
    if (on_delta) on_delta(std::string(text), n);
    Leave();
  }
  void OnComplete(const Completion& completion) override {
    Enter();
    {
      std::lock_guard lock(mu_);
      ++terminal_count_;
      completion_ = completion;
    }
    cv_.notify_all();
    Leave();
  }
  void OnError(const Error& error) override {
    Enter();
    {
      std::lock_guard lock(mu_);
      ++terminal_count_;
      error_ = error;
    }
    cv_.notify_all();
    Leave();
  }

  bool WaitTerminal(std::chrono::milliseconds timeout = 10s) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, timeout, [&] { return terminal_count_ > 0; });
  }
  // True once the terminal event arrived and the contract held.
  bool Wait(std::chrono::milliseconds timeout = 60s) { return WaitTerminal(timeout) && !misbehaved(); }
  bool WaitDeltas(std::size_t n, std::chrono::milliseconds timeout = 10s) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, timeout, [&] { return deltas_.size() >= n; });
  }

  std::vector<std::string> deltas() const {
    std::lock_guard lock(mu_);
    return deltas_;
  }
  std::string text() const {
    std::string all;
    for (const auto& d : deltas()) all += d;
    return all;
  }
  std::string Text() const { return text(); }
  // Runs `hook` inside each OnDelta (set before the call starts).
  void set_on_delta(std::function<void()> hook) {
    on_delta = [hook = std::move(hook)](const std::string&, std::size_t) { hook(); };
  }
  std::optional<Completion> completion() const {
    std::lock_guard lock(mu_);
    return completion_;
  }
  std::optional<Error> error() const {
    std::lock_guard lock(mu_);
    return error_;
  }
  int terminal_count() const {
    std::lock_guard lock(mu_);
    return terminal_count_;
  }
  bool misbehaved() const {
    std::lock_guard lock(mu_);
    return events_after_terminal_ || concurrent_;
  }

 private:
  void Enter() {
    if (in_call_.fetch_add(1) != 0) {
      std::lock_guard lock(mu_);
      concurrent_ = true;
    }
  }
  void Leave() { in_call_.fetch_sub(1); }

  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::string> deltas_;
  std::optional<Completion> completion_;
  std::optional<Error> error_;
  int terminal_count_ = 0;
  bool events_after_terminal_ = false;
  bool concurrent_ = false;
  std::atomic<int> in_call_{0};
};

}  // namespace tollgate::test_support
