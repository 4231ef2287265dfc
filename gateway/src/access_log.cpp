#include "access_log.hpp"

#include <boost/json.hpp>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <ctime>

#include <unistd.h>

namespace tollgate::gateway {

namespace {

std::string Rfc3339Millis(std::chrono::system_clock::time_point t) {
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch()).count();
  const std::time_t secs = static_cast<std::time_t>(ms >= 0 ? ms / 1000 : (ms - 999) / 1000);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char out[64];
  std::snprintf(out, sizeof out, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
                tm.tm_hour, tm.tm_min, tm.tm_sec, static_cast<int>(((ms % 1000) + 1000) % 1000));
  return out;
}

boost::json::value IdOrNull(int64_t id) { return id > 0 ? boost::json::value(id) : boost::json::value(nullptr); }

boost::json::value TextOrNull(const std::string& s) {
  return s.empty() ? boost::json::value(nullptr) : boost::json::value(s);
}

boost::json::object AccessLogObject(const billing::UsageEvent& row, std::string_view model, bool metered) {
  boost::json::object o;
  o["log"] = "access";
  o["ts"] = Rfc3339Millis(row.finished_at);
  o["request_id"] = row.request_id;
  o["key_id"] = IdOrNull(row.api_key_id);
  o["account_id"] = IdOrNull(row.account_id);
  o["model"] = model;
  o["provider"] = TextOrNull(row.provider);
  o["endpoint"] = TextOrNull(row.endpoint_id);
  o["app"] = TextOrNull(row.app);
  o["status"] = row.status;
  o["error_code"] = row.error_code ? boost::json::value(*row.error_code) : boost::json::value(nullptr);
  o["prompt_tokens"] = row.usage.prompt_tokens;
  o["completion_tokens"] = row.usage.completion_tokens;
  o["cached_tokens"] = row.usage.cached_tokens;
  o["cache_write_tokens"] = row.usage.cache_write_tokens;
  o["reasoning_tokens"] = row.usage.reasoning_tokens;
  o["usage_reported"] = metered && !row.usage_estimated;
  o["cost_usd"] = static_cast<double>(row.cost.nano_usd) / 1e9;
  o["cost_nano_usd"] = row.cost.nano_usd;
  o["latency_ms"] = row.latency_ms;
  o["ttft_ms"] = row.ttft_ms ? boost::json::value(*row.ttft_ms) : boost::json::value(nullptr);
  o["streamed"] = row.streamed;
  o["attempts"] = static_cast<int64_t>(row.attempts.size());
  o["byok"] = row.byok;
  o["metered"] = metered;
  return o;
}

}  // namespace

std::string AccessLogLine(const billing::UsageEvent& row, std::string_view model, bool metered) {
  return boost::json::serialize(AccessLogObject(row, model, metered));
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
  boost::json::object o = AccessLogObject(row, call.model, /*metered=*/false);
  if (!call.error->code_string.empty()) o["reason"] = call.error->code_string;
  return boost::json::serialize(o);
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
