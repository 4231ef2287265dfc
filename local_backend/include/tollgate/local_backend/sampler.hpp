// Token sampling and stop-string handling.
//
// Sampler, per step, on a copy of the logits (the order of Hugging Face's
// logits processors and warpers, which vLLM follows too):
//   1. logit_bias: bias added to each listed token (OpenAI `logit_bias`);
//   2. repetition_penalty (Keskar et al., "CTRL", arXiv:1909.05858, as
//      Hugging Face's RepetitionPenaltyLogitsProcessor): every token of the
//      prompt or the output so far has its logit divided by the penalty when
//      positive, multiplied when negative;
//   3. presence and frequency penalties (OpenAI's definition,
//      platform.openai.com/docs/advanced-usage "frequency and presence
//      penalties"): logit -= presence * [count > 0] + frequency * count, over
//      the output tokens so far;
//   4. greedy (argmax) when temperature <= 0; otherwise
//      p_i = softmax(logits / temperature), then
//   5. top_k: the k most probable tokens;
//   6. top_p, the nucleus (Holtzman et al., ICLR 2020, arXiv:1904.09751):
//      the smallest set of most probable tokens whose renormalised
//      cumulative probability reaches top_p;
//   7. min_p (Nguyen et al., "Min P Sampling", arXiv:2407.01082): tokens with
//      p >= min_p * p_max;
//   8. one draw from what is left, renormalised, with a std::mt19937_64
//      seeded with `seed` (or std::random_device when absent). With a fixed
//      seed and the same logits the draws are identical on every run and
//      platform (the uniform variate is taken from the raw 64-bit output).
// Only the candidates a step keeps are sorted (a partial selection grows
// until the nucleus is covered), so a 150k-token vocabulary costs a linear
// pass per step, not a full sort.
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
  int64_t top_k = 0;              // <= 0: off
  double min_p = 0.0;             // [0, 1]; 0: off
  double repetition_penalty = 1.0;  // > 0; 1: off
  double presence_penalty = 0.0;    // [-2, 2]
  double frequency_penalty = 0.0;   // [-2, 2]
  std::vector<std::pair<TokenId, float>> logit_bias;  // ids outside the vocabulary are ignored
  std::optional<uint64_t> seed;   // absent: seeded from std::random_device
};

class Sampler {
 public:
  // `prompt`: the prompt's tokens, for the repetition penalty (copied as a
  // set; may be empty).
  explicit Sampler(const SamplingParams& params, std::span<const TokenId> prompt = {});

  // One token id from `logits` (vocab_size unnormalised scores, non-empty),
  // after the steps above. Greedy ties go to the lowest id; NaN scores are
  // never chosen unless all are NaN. Call Accept with the token the
  // generation goes on with.
  TokenId Sample(std::span<const float> logits);
  // Records a generated token for the penalties.
  void Accept(TokenId token);

 private:
  bool Penalised() const;

  SamplingParams params_;
  std::mt19937_64 rng_;
  std::vector<TokenId> seen_;                    // prompt and output tokens, sorted, unique
  std::vector<std::pair<TokenId, int>> counts_;  // output token counts, sorted by id
  std::vector<float> work_;                      // the adjusted logits (scratch)
  std::vector<std::pair<float, TokenId>> candidates_;  // scratch
  std::vector<double> probs_;                          // scratch
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
