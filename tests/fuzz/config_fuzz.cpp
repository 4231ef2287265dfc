// Fuzz target: the config loader (gateway/include/tollgate/gateway/config.hpp):
// ParseConfig over arbitrary YAML text, and Interpolate (the ${VAR} and
// ${VAR:-default} expansion). The environment is a fixed fake: variables
// named FUZZ_* are set (FUZZ_EMPTY to ""), all others unset. Relative paths
// resolve against a directory that does not exist, so nothing is read from
// disk. ParseConfig must return a Config or an Error, never throw or crash.
#include "tollgate/gateway/config.hpp"

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string>
#include <string_view>

using namespace tollgate;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  const gateway::EnvLookup env = [](std::string_view name) -> std::optional<std::string> {
    if (name == "FUZZ_EMPTY") return std::string();
    if (name.starts_with("FUZZ_")) return "sk-fuzz-" + std::string(name.substr(5));
    return std::nullopt;
  };
  auto config = gateway::ParseConfig(input, "/nonexistent/tollgate-fuzz", env);
  if (!config && config.error().message.empty()) {
    std::fprintf(stderr, "config_fuzz: an error without a message\n");
    std::abort();
  }
  std::string missing;
  (void)gateway::Interpolate(input, env, &missing);
  return 0;
}
