// A StreamSink for tests: records one call's events, lets a test wait for
// them, and flags contract breaches (an event after the terminal one, two
// calls at once; provider.hpp forbids both). Text deltas are also kept apart
// (deltas()), and the terminal OnComplete is summarised as completion().
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

// What a completed call added up to: the finish reason of choice 0 and the
// last usage report.
struct RecordedCompletion {
  FinishReason finish_reason = FinishReason::kStop;
  Usage usage;
  bool usage_known = false;
};

class RecordingSink final : public StreamSink {
 public:
  // Runs inside OnEvent for text deltas, with the delta and the number of
  // text deltas so far.
  std::function<void(const std::string&, std::size_t)> on_delta;

  void OnEvent(StreamEvent event) override {
    Enter();
    std::size_t n = 0;
    std::string text;
    bool is_text = false;
    {
      std::lock_guard lock(mu_);
      if (terminal_count_ > 0) events_after_terminal_ = true;
      if (const auto* t = std::get_if<TextDelta>(&event)) {
        deltas_.push_back(t->text);
        n = deltas_.size();
        text = t->text;
        is_text = true;
      }
      accumulator_.Add(event);
      events_.push_back(std::move(event));
    }
    cv_.notify_all();
    if (is_text && on_delta) on_delta(text, n);
    Leave();
  }
  void OnComplete() override {
    Enter();
    {
      std::lock_guard lock(mu_);
      ++terminal_count_;
      const ChatResponse r = accumulator_.Take();
      RecordedCompletion c;
      if (!r.choices.empty() && r.choices.front().finish) c.finish_reason = *r.choices.front().finish;
      if (r.usage) {
        c.usage = *r.usage;
        c.usage_known = true;
      }
      completion_ = c;
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

  // Flow control: while paused, Ready() says no and keeps `resume`; Resume()
  // calls it (from the caller's thread, as a consumer catching up would).
  bool Ready(std::function<void()> resume) override {
    std::lock_guard lock(mu_);
    if (!paused_) return true;
    resume_ = std::move(resume);
    ++refusals_;
    cv_.notify_all();
    return false;
  }
  void Pause() {
    std::lock_guard lock(mu_);
    paused_ = true;
  }
  void Resume() {
    std::function<void()> resume;
    {
      std::lock_guard lock(mu_);
      paused_ = false;
      resume.swap(resume_);
    }
    if (resume) resume();
  }
  // Waits until Ready() has said no at least once.
  bool WaitRefused(std::chrono::milliseconds timeout = 10s) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, timeout, [&] { return refusals_ > 0; });
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
  std::optional<RecordedCompletion> completion() const {
    std::lock_guard lock(mu_);
    return completion_;
  }
  std::vector<StreamEvent> events() const {
    std::lock_guard lock(mu_);
    return events_;
  }
  ChatResponse response() const {
    std::lock_guard lock(mu_);
    return accumulator_.Take();
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
  bool paused_ = false;            // guarded by mu_
  std::function<void()> resume_;   // guarded by mu_
  int refusals_ = 0;               // guarded by mu_
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
  std::vector<StreamEvent> events_;
  ResponseAccumulator accumulator_;
  std::optional<RecordedCompletion> completion_;
  std::optional<Error> error_;
  int terminal_count_ = 0;
  bool events_after_terminal_ = false;
  bool concurrent_ = false;
  std::atomic<int> in_call_{0};
};

}  // namespace tollgate::test_support
