// Where the billing library's background threads report problems.
//
// Background threads (KeyCache refresh, UsageRecorder flush) cannot return
// errors to a caller, so they log: one line per event, never containing keys,
// key hashes, database passwords or database URLs.
#pragma once

#include <functional>
#include <string_view>

namespace tollgate::billing {

enum class LogLevel { kInfo, kWarning, kError };

// Receives one message without trailing newline. Called from billing's
// background threads, possibly concurrently; must be thread-safe and fast.
using LogHandler = std::function<void(LogLevel level, std::string_view message)>;

// Replaces the handler (default: "tollgate billing <level>: <message>" on
// stderr). An empty handler restores the default. Thread-safe; messages
// already being delivered may still reach the old handler.
void SetLogHandler(LogHandler handler);

}  // namespace tollgate::billing
