// Paths to the real test model and its greedy reference outputs
// (../shared/models/README.md), overridable with $TOLLGATE_MODEL_DIR.
//
// Every test that needs the model must FAIL, with a message naming the file,
// when it is missing: never crash (e.g. by indexing the empty buffer a missing
// file reads as) and never skip. Read model bytes with
// ASSERT_TRUE(ReadModelFile(path, bytes)) and check every GgufFile::Open /
// Create of the model with ASSERT_TRUE(...) << ... before using it.
#pragma once

#include <boost/json.hpp>
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <iterator>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include <unistd.h>

namespace tollgate::local_backend::testing {

inline std::string ModelDir() {
  if (const char* dir = std::getenv("TOLLGATE_MODEL_DIR"); dir != nullptr && *dir != '\0') return dir;
  return TOLLGATE_SOURCE_DIR "/../shared/models";
}
inline std::string ModelPath() { return ModelDir() + "/stories260K.gguf"; }
inline std::string Q8ModelPath() { return ModelDir() + "/stories260K-q8_0.gguf"; }

// Where the model files are expected and how to point elsewhere, for failure messages.
inline std::string ModelHint() {
  return " (model directory " + ModelDir() + "; see ../shared/models/README.md, or set TOLLGATE_MODEL_DIR)";
}

// The whole file, or an empty vector if it cannot be read. For model files use
// ReadModelFile, which fails the test instead.
inline std::vector<char> ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// Reads model file `path` whole into `out`. Fails, naming the file, if it
// cannot be opened, cannot be read to its end, or is empty:
//   std::vector<char> bytes;
//   ASSERT_TRUE(testing::ReadModelFile(testing::ModelPath(), bytes));
inline ::testing::AssertionResult ReadModelFile(const std::string& path, std::vector<char>& out) {
  out.clear();
  std::ifstream in(path, std::ios::binary);
  if (!in) return ::testing::AssertionFailure() << "cannot open model file " << path << ModelHint();
  out.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  if (in.bad()) return ::testing::AssertionFailure() << "error reading model file " << path;
  if (out.empty()) return ::testing::AssertionFailure() << "model file " << path << " is empty" << ModelHint();
  return ::testing::AssertionSuccess();
}

// A file under the temp directory holding `bytes`, removed when destroyed.
class TempFile {
 public:
  explicit TempFile(const std::vector<char>& bytes) {
    path_ = (std::filesystem::temp_directory_path() /
             ("tollgate_gguf_" + std::to_string(::getpid()) + "_" + std::to_string(counter_++) + ".gguf"))
                .string();
    std::ofstream out(path_, std::ios::binary);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  }
  ~TempFile() { std::filesystem::remove(path_); }
  TempFile(const TempFile&) = delete;
  TempFile& operator=(const TempFile&) = delete;
  const std::string& path() const { return path_; }

 private:
  static inline int counter_ = 0;
  std::string path_;
};

// `bytes` with the first occurrence of `from` replaced by `to` (same length).
inline std::vector<char> Patched(std::vector<char> bytes, const std::string& from, const std::string& to) {
  auto it = std::search(bytes.begin(), bytes.end(), from.begin(), from.end());
  if (it == bytes.end() || from.size() != to.size()) throw std::runtime_error("cannot patch " + from);
  std::copy(to.begin(), to.end(), it);
  return bytes;
}

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
