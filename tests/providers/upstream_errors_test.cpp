// Upstream failures -> the caller's errors (providers/src/upstream_errors.hpp),
// against the mapping documented on RemoteProvider (remote_provider.hpp):
//   400, 422, 413 -> kInvalidArgument with the upstream's message and `param`
//   404 -> kBadGateway; 401, 403 -> kBadGateway without the upstream's text
//   402 -> kUnavailable; 408, 504 -> kUpstreamTimeout
//   429 -> kResourceExhausted with Retry-After and the upstream's error code
//   503, 529 -> kUnavailable; other 5xx and anything else -> kBadGateway.
// Error bodies are the documented shapes: OpenAI `{"error": {message, type,
// param, code}}` (platform.openai.com/docs/guides/error-codes), Anthropic
// `{"type": "error", "error": {type, message}}` (docs.anthropic.com/en/api/errors),
// Gemini `{"error": {code, message, status}}` (ai.google.dev/gemini-api/docs/troubleshooting,
// google.rpc.Status), vLLM `{"object": "error", "message"}`, FastAPI `{"detail"}`
// (WIRE-FORMATS.md 3.1).
#include "upstream_errors.hpp"

#include "tollgate/core/text.hpp"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace tollgate::providers::detail {
namespace {

constexpr const char* kKey = "sk-live-123456";

TEST(UpstreamErrors, StatusMappingFollowsTheDocumentedTable) {
  const std::string body =
      R"({"error":{"message":"Incorrect API key provided: sk-live-123456","type":"invalid_request_error"}})";
  struct Case {
    int status;
    ErrorCode code;
    int http;  // what the caller sees
  };
  for (const Case& c : {Case{400, ErrorCode::kInvalidArgument, 400}, Case{413, ErrorCode::kInvalidArgument, 400},
                        Case{422, ErrorCode::kInvalidArgument, 400}, Case{404, ErrorCode::kBadGateway, 502},
                        Case{401, ErrorCode::kBadGateway, 502}, Case{403, ErrorCode::kBadGateway, 502},
                        Case{402, ErrorCode::kUnavailable, 503}, Case{408, ErrorCode::kUpstreamTimeout, 504},
                        Case{504, ErrorCode::kUpstreamTimeout, 504}, Case{429, ErrorCode::kResourceExhausted, 429},
                        Case{503, ErrorCode::kUnavailable, 503}, Case{529, ErrorCode::kUnavailable, 503},
                        Case{500, ErrorCode::kBadGateway, 502}, Case{502, ErrorCode::kBadGateway, 502},
                        Case{418, ErrorCode::kBadGateway, 502}, Case{301, ErrorCode::kBadGateway, 502}}) {
    const Error e = MapUpstreamStatus(c.status, body, kKey);
    EXPECT_EQ(e.code, c.code) << c.status << ": " << e.message;
    EXPECT_EQ(HttpStatus(e.code), c.http) << c.status;
    EXPECT_FALSE(e.message.empty()) << c.status;
    EXPECT_EQ(e.message.find(kKey), std::string::npos) << c.status << ": " << e.message;
    // Provider display names are added by RemoteProvider, not here.
    EXPECT_EQ(e.provider_name, "") << c.status;
  }
}

TEST(UpstreamErrors, CredentialFailuresPassNothingFromTheBodyOn) {
  // A 401 body often echoes part of the key ("Incorrect API key provided:
  // sk-live-...3456"), which redaction of the whole key cannot catch.
  const std::string body =
      R"({"error":{"message":"Incorrect API key provided: sk-liv*****3456","type":"invalid_request_error","param":"key","code":"invalid_api_key"}})";
  for (int status : {401, 403}) {
    const Error e = MapUpstreamStatus(status, body, kKey, "5");
    EXPECT_EQ(e.message, "the provider rejected Tollgate's credentials (HTTP " + std::to_string(status) + ")");
    EXPECT_EQ(e.param, "");
    EXPECT_EQ(e.code_string, kProviderCredentialsRejected) << "marked, so a BYOK caller is told it is their key";
    EXPECT_EQ(e.retry_after, "");
  }
}

TEST(UpstreamErrors, InvalidRequestsCarryTheUpstreamMessage) {
  EXPECT_EQ(MapUpstreamStatus(400, R"({"error":{"message":"max_tokens is too large"}})", kKey).message,
            "max_tokens is too large");
  // Anthropic's shape (docs.anthropic.com/en/api/errors).
  EXPECT_EQ(MapUpstreamStatus(400,
                              R"({"type":"error","error":{"type":"invalid_request_error","message":"messages: roles must alternate"}})",
                              kKey)
                .message,
            "messages: roles must alternate");
  // Gemini's google.rpc.Status shape.
  EXPECT_EQ(MapUpstreamStatus(400,
                              R"({"error":{"code":400,"message":"Invalid value at 'generation_config.temperature'","status":"INVALID_ARGUMENT"}})",
                              kKey)
                .message,
            "Invalid value at 'generation_config.temperature'");
  // Without any message the caller still learns what happened.
  const Error bare = MapUpstreamStatus(422, "", kKey);
  EXPECT_EQ(bare.code, ErrorCode::kInvalidArgument);
  EXPECT_NE(bare.message.find("HTTP 422"), std::string::npos) << bare.message;
}

TEST(UpstreamErrors, GeminiRejectingTheKeyIsACredentialsFailureNotTheCallers) {
  // What the Gemini API answers a bad key: HTTP 400 with ErrorInfo reason
  // API_KEY_INVALID (google.rpc.Status details).
  const std::string body =
      R"({"error":{"code":400,"message":"API key not valid. Please pass a valid API key.","status":"INVALID_ARGUMENT",)"
      R"("details":[{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"API_KEY_INVALID","domain":"googleapis.com"}]}})";
  const Error e = MapUpstreamStatus(400, body, kKey);
  EXPECT_EQ(e.code, ErrorCode::kBadGateway);
  EXPECT_EQ(HttpStatus(e.code), 502);
  EXPECT_EQ(e.message.find("API key not valid"), std::string::npos) << "nothing from the body: " << e.message;
  EXPECT_TRUE(IsRetryable(e.code));
}

TEST(UpstreamErrors, GeminiRetryInfoStandsInForRetryAfter) {
  const std::string body =
      R"({"error":{"code":429,"message":"Resource has been exhausted","status":"RESOURCE_EXHAUSTED",)"
      R"("details":[{"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"21.4s"}]}})";
  const Error e = MapUpstreamStatus(429, body, kKey);
  EXPECT_EQ(e.code, ErrorCode::kResourceExhausted);
  EXPECT_EQ(e.retry_after, "22");
  EXPECT_EQ(e.code_string, "RESOURCE_EXHAUSTED");
  EXPECT_EQ(MapUpstreamStatus(429, body, kKey, "3").retry_after, "3") << "a Retry-After header wins";
}

TEST(UpstreamErrors, OtherStatusesNameTheStatusAndPassTheUpstreamTextOn) {
  const Error nginx = MapUpstreamStatus(502, "Bad gateway from nginx", kKey);
  EXPECT_NE(nginx.message.find("nginx"), std::string::npos) << nginx.message;
  EXPECT_NE(nginx.message.find("HTTP 502"), std::string::npos) << nginx.message;
  const Error overloaded =
      MapUpstreamStatus(529, R"({"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}})", kKey);
  EXPECT_EQ(overloaded.code, ErrorCode::kUnavailable);
  EXPECT_NE(overloaded.message.find("Overloaded"), std::string::npos) << overloaded.message;
  EXPECT_NE(overloaded.message.find("HTTP 529"), std::string::npos) << overloaded.message;
  const Error missing = MapUpstreamStatus(404, R"({"error":{"message":"The model `gpt-9` does not exist"}})", kKey);
  EXPECT_NE(missing.message.find("gpt-9"), std::string::npos) << missing.message;
}

TEST(UpstreamErrors, RateLimitsKeepRetryAfterAndTheUpstreamCode) {
  // OpenAI: error.code (platform.openai.com/docs/guides/error-codes).
  const Error openai = MapUpstreamStatus(
      429, R"({"error":{"message":"Rate limit reached for gpt-4o","type":"requests","param":null,"code":"rate_limit_exceeded"}})",
      kKey, "7");
  EXPECT_EQ(openai.code, ErrorCode::kResourceExhausted);
  EXPECT_EQ(openai.retry_after, "7");
  EXPECT_EQ(openai.code_string, "rate_limit_exceeded");
  EXPECT_NE(openai.message.find("Rate limit reached"), std::string::npos) << openai.message;
  // Anthropic: error.type, not the outer "error".
  const Error anthropic = MapUpstreamStatus(
      429, R"({"type":"error","error":{"type":"rate_limit_error","message":"Number of request tokens has exceeded your per-minute rate limit"}})",
      kKey, "Wed, 21 Oct 2015 07:28:00 GMT");
  EXPECT_EQ(anthropic.code_string, "rate_limit_error");
  EXPECT_EQ(anthropic.retry_after, "Wed, 21 Oct 2015 07:28:00 GMT");
  // Gemini: google.rpc.Status `status` names the code; its `code` is only the
  // HTTP status number again.
  const Error gemini = MapUpstreamStatus(
      429, R"({"error":{"code":429,"message":"You exceeded your current quota.","status":"RESOURCE_EXHAUSTED"}})", kKey,
      "22");
  EXPECT_EQ(gemini.code_string, "RESOURCE_EXHAUSTED");
  EXPECT_EQ(gemini.retry_after, "22");
  // No body code: a generic one; no Retry-After: none.
  const Error bare = MapUpstreamStatus(429, "{}", kKey);
  EXPECT_EQ(bare.code_string, "rate_limit_exceeded");
  EXPECT_EQ(bare.retry_after, "");
  // Retry-After is passed on only when printable and short; surrounding
  // blanks are trimmed.
  EXPECT_EQ(MapUpstreamStatus(429, "{}", kKey, " 3 ").retry_after, "3");
  EXPECT_EQ(MapUpstreamStatus(429, "{}", kKey, std::string(60, '9')).retry_after, "");
  EXPECT_EQ(MapUpstreamStatus(429, "{}", kKey, std::string("1\x01", 2)).retry_after, "");
  // Never the key, even when the upstream put it in its code.
  EXPECT_EQ(MapUpstreamStatus(429, R"({"error":{"code":"sk-live-123456"}})", kKey).code_string.find(kKey),
            std::string::npos);
  // Retry-After belongs to 429 only.
  EXPECT_EQ(MapUpstreamStatus(503, "{}", kKey, "7").retry_after, "");
}

TEST(UpstreamErrors, UpstreamErrorMessageShapes) {
  EXPECT_EQ(UpstreamErrorMessage(R"({"error":{"message":"a"}})"), "a");
  EXPECT_EQ(UpstreamErrorMessage(R"({"error":"b"})"), "b");
  EXPECT_EQ(UpstreamErrorMessage(R"({"object":"error","message":"c"})"), "c");  // vLLM
  EXPECT_EQ(UpstreamErrorMessage(R"({"detail":"d"})"), "d");                    // FastAPI
  EXPECT_EQ(UpstreamErrorMessage(R"({"detail":[{"loc":["body"],"msg":"x"}]})"),
            R"([{"loc":["body"],"msg":"x"}])");
  EXPECT_EQ(UpstreamErrorMessage(R"([{"error":{"code":400,"message":"e","status":"INVALID_ARGUMENT"}}])"), "e");
  EXPECT_EQ(UpstreamErrorMessage(R"({"error":null,"message":"f"})"), "f");
  EXPECT_EQ(UpstreamErrorMessage("  plain text\n"), "plain text");
  EXPECT_EQ(UpstreamErrorMessage(""), "");
  EXPECT_EQ(UpstreamErrorMessage(R"({"unrelated":1})"), "");
  EXPECT_EQ(UpstreamErrorMessage(std::string("\x01\x02", 2)), "");
  const std::string capped = UpstreamErrorMessage(std::string(5000, 'x'));
  EXPECT_EQ(kMaxUpstreamMessageBytes, 2000u);
  EXPECT_EQ(capped.size(), kMaxUpstreamMessageBytes);
  EXPECT_EQ(capped.substr(capped.size() - 3), "...");
  EXPECT_EQ(UpstreamErrorMessage(std::string(2000, 'y')), std::string(2000, 'y'));  // not cut
  // Multi-byte text is cut on a character boundary.
  std::string accents;
  for (int i = 0; i < 1500; ++i) accents += "é";
  const std::string cut = UpstreamErrorMessage(R"({"error":{"message":")" + accents + R"("}})");
  EXPECT_LE(cut.size(), 2000u);
  EXPECT_GE(cut.size(), 1990u);
  EXPECT_EQ(CompleteUtf8Prefix(cut.substr(0, cut.size() - 3)), cut.size() - 3);
}

TEST(UpstreamErrors, KeyIsRedactedBeforeTheMessageIsCapped) {
  // A key straddling the cap must not leave a prefix of itself behind.
  const std::string key = "sk-live-ABCDEFGHIJKLMNOPQRSTUVWXYZ";
  const std::string body = R"({"error":{"message":")" + std::string(1985, 'x') + key + R"("}})";
  EXPECT_EQ(UpstreamErrorMessage(body, key).find("sk-live"), std::string::npos);
  for (int status : {400, 404, 429, 500, 503}) {
    const Error e = MapUpstreamStatus(status, body, key);
    EXPECT_EQ(e.message.find("sk-live"), std::string::npos) << status << ": " << e.message.substr(1980);
  }
}

TEST(UpstreamErrors, InvalidRequestParamIsPassedThrough) {
  EXPECT_EQ(MapUpstreamStatus(400, R"({"error":{"message":"bad","type":"invalid_request_error","param":"messages"}})", kKey).param,
            "messages");
  EXPECT_EQ(MapUpstreamStatus(422, R"({"error":{"message":"bad","param":"max_tokens"}})", kKey).param, "max_tokens");
  EXPECT_EQ(MapUpstreamStatus(413, R"({"error":{"message":"too big","param":"messages"}})", kKey).param, "messages");
  // Without a usable message the param still comes through.
  const Error no_message = MapUpstreamStatus(400, R"({"error":{"param":"temperature"}})", kKey);
  EXPECT_EQ(no_message.code, ErrorCode::kInvalidArgument);
  EXPECT_EQ(no_message.param, "temperature");
  // Strings only; absent, null, numbers and objects give no param.
  for (const char* body : {R"({"error":{"message":"bad"}})", R"({"error":{"message":"bad","param":null}})",
                           R"({"error":{"message":"bad","param":7}})", R"({"error":{"message":"bad","param":{"a":1}}})",
                           R"({"error":"bad"})", "not json"}) {
    EXPECT_EQ(MapUpstreamStatus(400, body, kKey).param, "") << body;
  }
  // Capped at 200 bytes, on a UTF-8 boundary.
  EXPECT_EQ(MapUpstreamStatus(400, R"({"error":{"message":"bad","param":")" + std::string(500, 'p') + R"("}})", kKey).param,
            std::string(200, 'p'));
  std::string accents;
  for (int i = 0; i < 150; ++i) accents += "é";  // 300 bytes
  const std::string p = MapUpstreamStatus(400, R"({"error":{"param":")" + accents + R"("}})", kKey).param;
  EXPECT_LE(p.size(), 200u);
  EXPECT_GE(p.size(), 199u);
  EXPECT_EQ(CompleteUtf8Prefix(p), p.size());
  // Never the key; nothing from 401/403 bodies; not for server errors.
  EXPECT_EQ(MapUpstreamStatus(400, R"({"error":{"message":"bad","param":"sk-live-123456"}})", kKey).param, "[redacted]");
  for (int status : {401, 403, 500, 503, 502, 504}) {
    EXPECT_EQ(MapUpstreamStatus(status, R"({"error":{"message":"bad","param":"api_key"}})", kKey).param, "") << status;
  }
}

TEST(UpstreamErrors, RedactReplacesEveryOccurrence) {
  EXPECT_EQ(Redact("k=abc, again abc", "abc"), "k=[redacted], again [redacted]");
  EXPECT_EQ(Redact("abcabc", "abc"), "[redacted][redacted]");
  EXPECT_EQ(Redact("nothing", ""), "nothing");
  EXPECT_EQ(Redact("", "abc"), "");
}

}  // namespace
}  // namespace tollgate::providers::detail
