#include "log_internal.hpp"

#include <cstdio>
#include <memory>
#include <mutex>
#include <string>

namespace tollgate::billing {
namespace {

std::mutex& HandlerMutex() {
  static std::mutex mutex;
  return mutex;
}

// Shared so that a message being delivered keeps its handler alive while
// another thread replaces it.
std::shared_ptr<const LogHandler>& Handler() {
  static std::shared_ptr<const LogHandler> handler;
  return handler;
}

std::string_view LevelName(LogLevel level) {
  switch (level) {
    case LogLevel::kInfo: return "info";
    case LogLevel::kWarning: return "warning";
    case LogLevel::kError: return "error";
  }
  return "error";
}

}  // namespace

void SetLogHandler(LogHandler handler) {
  auto next = handler ? std::make_shared<const LogHandler>(std::move(handler)) : nullptr;
  std::lock_guard lock(HandlerMutex());
  Handler() = std::move(next);
}

namespace internal {

void Log(LogLevel level, std::string_view message) {
  std::shared_ptr<const LogHandler> handler;
  {
    std::lock_guard lock(HandlerMutex());
    handler = Handler();
  }
  if (handler) {
    (*handler)(level, message);
    return;
  }
  std::string line = "tollgate billing ";
  line += LevelName(level);
  line += ": ";
  line += message;
  line += '\n';
  std::fwrite(line.data(), 1, line.size(), stderr);
}

}  // namespace internal
}  // namespace tollgate::billing
