// Canonical request and result types, independent of any wire format.
//
// The gateway parses OpenAI Chat Completions / Completions bodies into a
// `ChatRequest`; providers translate it to their own wire format and report back
// text deltas and one `Completion`.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace tollgate {

struct ChatMessage {
  std::string role;     // "system", "user", "assistant", "developer", "tool"
  std::string content;  // text; array-of-parts content is flattened to its text parts
};

enum class RequestKind {
  kChat,        // POST /v1/chat/completions: `messages`
  kCompletion,  // POST /v1/completions: raw `prompt`, no chat template
};

struct ChatRequest {
  RequestKind kind = RequestKind::kChat;
  std::string model;                  // model slug as the caller wrote it ("local/stories260k")
  std::vector<ChatMessage> messages;  // kChat only
  std::string prompt;                 // kCompletion only
  std::optional<int64_t> max_tokens;  // max_tokens or max_completion_tokens (tokens)
  std::optional<double> temperature;  // 0..2; 0 = greedy
  std::optional<double> top_p;        // (0, 1]
  std::vector<std::string> stop;      // up to 4 stop strings
  std::optional<uint64_t> seed;
  bool stream = false;
  bool include_usage = false;         // stream_options.include_usage
  std::string user;                   // end-user id, passed through
};

enum class FinishReason { kStop, kLength, kToolCalls, kContentFilter, kError };

// "stop", "length", "tool_calls", "content_filter", "error".
std::string_view FinishReasonName(FinishReason reason);

// Token counts as OpenAI reports them (WIRE-FORMATS.md 3.1): `cached_tokens` is
// included in `prompt_tokens`, `reasoning_tokens` in `completion_tokens`.
struct Usage {
  int64_t prompt_tokens = 0;
  int64_t completion_tokens = 0;
  int64_t cached_tokens = 0;
  int64_t reasoning_tokens = 0;
  int64_t total_tokens() const { return prompt_tokens + completion_tokens; }
};

// How a generation ended. `usage_known` is false when an upstream never reported
// usage (an interrupted stream); the gateway then estimates and says so.
struct Completion {
  FinishReason finish_reason = FinishReason::kStop;
  Usage usage;
  bool usage_known = false;
  std::string upstream_id;  // the provider's own id for the call, or empty
};

}  // namespace tollgate
