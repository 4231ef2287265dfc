// A provider the router only looks at: its name and declared parameters.
// Routing never calls a provider, so Start fails the test.
#pragma once

#include "tollgate/core/provider.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <string>

namespace tollgate::routing::testing {

class FakeProvider final : public Provider {
 public:
  explicit FakeProvider(std::string name, ParameterSet supported = ParameterSet::All())
      : name_(std::move(name)), supported_(supported) {}
  std::string_view Name() const override { return name_; }
  const ParameterSet& SupportedParameters() const override { return supported_; }
  void Start(const ProviderRequest&, std::shared_ptr<StreamSink>, std::stop_token) override {
    ADD_FAILURE() << "routing never calls a provider";
  }

 private:
  std::string name_;
  ParameterSet supported_;
};

// Prices in USD per million tokens, as configs write them.
inline TokenPrice PerMillion(double usd) { return TokenPrice{std::llround(usd * 1e9)}; }

}  // namespace tollgate::routing::testing
