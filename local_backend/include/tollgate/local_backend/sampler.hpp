// Token sampling and stop-string handling.
//
// Sampler: greedy (argmax) when temperature <= 0; otherwise
//   p_i = softmax(logits / temperature)
// restricted to the nucleus (Holtzman et al., "The Curious Case of Neural Text
// Degeneration", ICLR 2020, arXiv:1904.09751): the smallest set of most probable
// tokens whose cumulative probability reaches top_p, renormalised, then one
// draw from a std::mt19937_64 seeded with `seed` (or std::random_device when
// absent). With a fixed seed and the same logits the draws are identical on
// every run and platform (the uniform variate is taken from the raw 64-bit
// output, not from std::uniform_real_distribution).
//
// StopMatcher: finds OpenAI `stop` strings in the generated text even when they
// span several tokens. Text that could still be the beginning of a stop string
// is held back; the stop string and anything after it are never emitted.
//
// Thread-safety: neither class is thread-safe; use one per generation.
#pragma once

#include "tollgate/local_backend/tokenizer.hpp"

#include <cstdint>
#include <optional>
#include <random>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace tollgate::local_backend {

struct SamplingParams {
  double temperature = 0.0;       // <= 0: greedy
  double top_p = 1.0;             // (0, 1]; values outside are clamped into it
  std::optional<uint64_t> seed;   // absent: seeded from std::random_device
};

class Sampler {
 public:
  explicit Sampler(const SamplingParams& params);

  // One token id from `logits` (vocab_size unnormalised scores, non-empty).
  // Greedy ties go to the lowest id; NaN scores are never chosen unless all are NaN.
  TokenId Sample(std::span<const float> logits);

 private:
  SamplingParams params_;
  std::mt19937_64 rng_;
  std::vector<std::pair<float, TokenId>> candidates_;  // scratch
};

// Argmax, ties to the lowest id.
TokenId Greedy(std::span<const float> logits);

class StopMatcher {
 public:
  // Empty strings in `stops` are ignored.
  explicit StopMatcher(std::vector<std::string> stops);

  struct Output {
    std::string text;      // safe to emit now
    bool stopped = false;  // a stop string was found; `text` ends right before it
    std::string matched;   // that stop string (the earliest in the text)
  };

  // Appends generated text and returns what can be emitted. After a result
  // with stopped == true, further calls return nothing.
  Output Push(std::string_view text);
  // End of generation without a stop: everything still held back.
  std::string Flush();

 private:
  std::vector<std::string> stops_;
  std::string held_;
  bool stopped_ = false;
};

}  // namespace tollgate::local_backend
