#include "tollgate/core/error.hpp"

#include <boost/json.hpp>
#include <gtest/gtest.h>

namespace tollgate {
namespace {

TEST(Error, BodyHasOpenAiShape) {
  Error e = InvalidArgument("messages must be an array", "messages");
  auto v = boost::json::parse(ErrorBody(e));
  const auto& err = v.at("error").as_object();
  EXPECT_EQ(err.at("message").as_string(), "messages must be an array");
  EXPECT_EQ(err.at("type").as_string(), "invalid_request_error");
  EXPECT_EQ(err.at("param").as_string(), "messages");
  EXPECT_TRUE(err.at("code").is_null());
}

TEST(Error, OpenRouterFlavorHasAnIntegerCode) {
  Error e{ErrorCode::kNotFound, "no such model", "model", "model_not_found"};
  auto v = boost::json::parse(ErrorBody(e, ErrorFlavor::kOpenRouter));
  const auto& err = v.at("error").as_object();
  EXPECT_EQ(err.at("code").as_int64(), 404);
  EXPECT_EQ(err.at("message").as_string(), "no such model");
  EXPECT_EQ(err.at("type").as_string(), "not_found_error");
  EXPECT_EQ(err.at("param").as_string(), "model");
  EXPECT_EQ(err.at("metadata").at("reason").as_string(), "model_not_found");
  auto openai = boost::json::parse(ErrorBody(e));
  EXPECT_EQ(openai.at("error").at("code").as_string(), "model_not_found");
}

TEST(Error, EachCodeMapsToItsStatus) {
  EXPECT_EQ(HttpStatus(ErrorCode::kInvalidArgument), 400);
  EXPECT_EQ(HttpStatus(ErrorCode::kUnauthenticated), 401);
  EXPECT_EQ(HttpStatus(ErrorCode::kPaymentRequired), 402);
  EXPECT_EQ(HttpStatus(ErrorCode::kNotFound), 404);
  EXPECT_EQ(HttpStatus(ErrorCode::kPayloadTooLarge), 413);
  EXPECT_EQ(HttpStatus(ErrorCode::kResourceExhausted), 429);
  EXPECT_EQ(HttpStatus(ErrorCode::kCancelled), 499);
  EXPECT_EQ(HttpStatus(ErrorCode::kBadGateway), 502);
  EXPECT_EQ(HttpStatus(ErrorCode::kUnavailable), 503);
  EXPECT_EQ(HttpStatus(ErrorCode::kUpstreamTimeout), 504);
}

TEST(Error, ResultCarriesError) {
  Result<int> r = InvalidArgument("bad");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, ErrorCode::kInvalidArgument);
  EXPECT_THROW(r.value(), std::runtime_error);
}

}  // namespace
}  // namespace tollgate

namespace tollgate {
namespace {

TEST(Error, AnthropicFlavorHasAnthropicsShape) {
  Error e{ErrorCode::kUnavailable, "overloaded", "", ""};
  auto v = boost::json::parse(ErrorBody(e, ErrorFlavor::kAnthropic));
  EXPECT_EQ(v.at("type").as_string(), "error");
  EXPECT_EQ(v.at("error").at("type").as_string(), "overloaded_error");
  EXPECT_EQ(v.at("error").at("message").as_string(), "overloaded");
  EXPECT_EQ(AnthropicErrorType(ErrorCode::kResourceExhausted), "rate_limit_error");
  EXPECT_EQ(AnthropicErrorType(ErrorCode::kPaymentRequired), "billing_error");
}

TEST(Error, UpstreamErrorsNameTheirProvider) {
  Error e{ErrorCode::kBadGateway, "the provider failed", "", ""};
  e.provider_name = "Anthropic";
  auto openai = boost::json::parse(ErrorBody(e, ErrorFlavor::kOpenAi));
  EXPECT_EQ(openai.at("error").at("metadata").at("provider_name").as_string(), "Anthropic");
  auto openrouter = boost::json::parse(ErrorBody(e, ErrorFlavor::kOpenRouter));
  EXPECT_EQ(openrouter.at("error").at("metadata").at("provider_name").as_string(), "Anthropic");
  EXPECT_EQ(openrouter.at("error").at("code").as_int64(), 502);
}

}  // namespace
}  // namespace tollgate
