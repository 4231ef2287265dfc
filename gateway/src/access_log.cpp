#include "access_log.hpp"

#include "tollgate/core/json_writer.hpp"
#include "tollgate/core/text.hpp"

#include <cerrno>
#include <chrono>

#include <unistd.h>

namespace tollgate::gateway {

namespace {

// The line's fields, in the order of access_log.hpp, and `reason` when not
// empty (a refused call's), written straight into one string (JsonWriter):
// this runs once per call.
std::string AccessLogText(const billing::UsageEvent& row, std::string_view model, bool metered,
                          std::string_view reason) {
  std::string out;
  out.reserve(512);
  JsonWriter w(out);
  auto id_or_null = [&w](int64_t id) { id > 0 ? w.Int(id) : w.Null(); };
  auto text_or_null = [&w](const std::string& s) { s.empty() ? w.Null() : w.String(s); };
  w.BeginObject();
  w.Key("log").String("access");
  w.Key("ts").String(FormatUtc(row.finished_at, "T", 3, "Z"));
  w.Key("request_id").String(row.request_id);
  w.Key("key_id");
  id_or_null(row.api_key_id);
  w.Key("account_id");
  id_or_null(row.account_id);
  w.Key("model").String(model);
  w.Key("provider");
  text_or_null(row.provider);
  w.Key("endpoint");
  text_or_null(row.endpoint_id);
  w.Key("app");
  text_or_null(row.app);
  w.Key("status").Int(row.status);
  w.Key("error_code").OptionalString(row.error_code);
  w.Key("prompt_tokens").Int(row.usage.prompt_tokens);
  w.Key("completion_tokens").Int(row.usage.completion_tokens);
  w.Key("cached_tokens").Int(row.usage.cached_tokens);
  w.Key("cache_write_tokens").Int(row.usage.cache_write_tokens);
  w.Key("reasoning_tokens").Int(row.usage.reasoning_tokens);
  w.Key("usage_reported").Bool(metered && !row.usage_estimated);
  w.Key("cost_usd").Double(static_cast<double>(row.cost.nano_usd) / 1e9);
  w.Key("cost_nano_usd").Int(row.cost.nano_usd);
  w.Key("latency_ms").Int(row.latency_ms);
  w.Key("ttft_ms").OptionalInt(row.ttft_ms);
  w.Key("streamed").Bool(row.streamed);
  w.Key("attempts").Int(static_cast<int64_t>(row.attempts.size()));
  w.Key("byok").Bool(row.byok);
  w.Key("metered").Bool(metered);
  if (!reason.empty()) w.Key("reason").String(reason);
  w.EndObject();
  return out;
}

}  // namespace

std::string AccessLogLine(const billing::UsageEvent& row, std::string_view model, bool metered) {
  return AccessLogText(row, model, metered, "");
}

std::string RefusedCallLine(const RefusedCall& call) {
  billing::UsageEvent row;
  row.request_id = std::string(call.request_id);
  row.api_key_id = call.key_id;
  row.account_id = call.account_id;
  row.app = std::string(call.app);
  row.status = HttpStatus(call.error->code);
  row.error_code = std::string(ErrorType(call.error->code));
  row.latency_ms = call.latency_ms;
  row.streamed = call.streamed;
  row.finished_at = std::chrono::system_clock::now();
  return AccessLogText(row, call.model, /*metered=*/false, call.error->code_string);
}

void WriteLogLine(std::string_view line) {
  std::string out;
  out.reserve(line.size() + 1);
  out.append(line);
  out.push_back('\n');
  const char* p = out.data();
  size_t left = out.size();
  while (left > 0) {
    const ssize_t n = ::write(STDERR_FILENO, p, left);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;  // nowhere to log to: drop the line rather than block a call
    p += n;
    left -= static_cast<size_t>(n);
  }
}

}  // namespace tollgate::gateway
