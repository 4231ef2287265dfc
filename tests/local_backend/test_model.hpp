// Paths to the real test model and its greedy reference outputs
// (../shared/models/README.md), overridable with $TOLLGATE_MODEL_DIR.
#pragma once

#include <boost/json.hpp>

#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace tollgate::local_backend::testing {

inline std::string ModelDir() {
  if (const char* dir = std::getenv("TOLLGATE_MODEL_DIR"); dir != nullptr && *dir != '\0') return dir;
  return TOLLGATE_SOURCE_DIR "/../shared/models";
}
inline std::string ModelPath() { return ModelDir() + "/stories260K.gguf"; }
inline std::string Q8ModelPath() { return ModelDir() + "/stories260K-q8_0.gguf"; }

struct ReferencePrompt {
  std::string prompt;
  std::vector<int32_t> prompt_ids;     // with BOS
  std::vector<int32_t> generated_ids;  // greedy continuation (run.c == llama.cpp F32)
  std::string text;                    // prompt + continuation as run.c prints it
};

// stories260K-reference.json: per prompt, `llama2c_run_c.generated_ids` are the
// tokens after the prompt (its printed_ids also repeat the prompt after BOS).
inline std::vector<ReferencePrompt> LoadReference() {
  std::ifstream in(ModelDir() + "/stories260K-reference.json");
  if (!in) throw std::runtime_error("cannot open stories260K-reference.json in " + ModelDir());
  std::stringstream buf;
  buf << in.rdbuf();
  const boost::json::value root = boost::json::parse(buf.str());
  std::vector<ReferencePrompt> out;
  for (const boost::json::value& p : root.at("prompts").as_array()) {
    ReferencePrompt r;
    r.prompt = std::string(p.at("prompt").as_string());
    for (const auto& id : p.at("prompt_ids_with_bos").as_array()) r.prompt_ids.push_back(static_cast<int32_t>(id.to_number<int64_t>()));
    const auto& run_c = p.at("llama2c_run_c");
    for (const auto& id : run_c.at("generated_ids").as_array()) r.generated_ids.push_back(static_cast<int32_t>(id.to_number<int64_t>()));
    r.text = std::string(run_c.at("text").as_string());
    out.push_back(std::move(r));
  }
  return out;
}

}  // namespace tollgate::local_backend::testing
