#include "tollgate/local_backend/sampler.hpp"

#include <algorithm>
#include <cmath>
#include <limits>

namespace tollgate::local_backend {
namespace {

uint64_t SeedFrom(const std::optional<uint64_t>& seed) {
  if (seed) return *seed;
  std::random_device rd;
  return (static_cast<uint64_t>(rd()) << 32) ^ rd();
}

}  // namespace

TokenId Greedy(std::span<const float> logits) {
  TokenId best = 0;
  float best_value = -std::numeric_limits<float>::infinity();
  bool found = false;
  for (size_t i = 0; i < logits.size(); ++i) {
    const float v = logits[i];
    if (std::isnan(v)) continue;
    if (!found || v > best_value) {  // strict: ties keep the lower id
      best = static_cast<TokenId>(i);
      best_value = v;
      found = true;
    }
  }
  return best;
}

Sampler::Sampler(const SamplingParams& params) : params_(params), rng_(SeedFrom(params.seed)) {
  if (!(params_.top_p > 0.0) || params_.top_p > 1.0) params_.top_p = 1.0;
}

TokenId Sampler::Sample(std::span<const float> logits) {
  if (!(params_.temperature > 0.0)) return Greedy(logits);

  candidates_.clear();
  float max_logit = -std::numeric_limits<float>::infinity();
  for (size_t i = 0; i < logits.size(); ++i) {
    if (std::isnan(logits[i])) continue;
    candidates_.emplace_back(logits[i], static_cast<TokenId>(i));
    max_logit = std::max(max_logit, logits[i]);
  }
  if (candidates_.empty() || std::isinf(max_logit)) return Greedy(logits);

  // Most probable first; equal probabilities in id order so the nucleus is
  // deterministic.
  std::sort(candidates_.begin(), candidates_.end(), [](const auto& a, const auto& b) {
    return a.first > b.first || (a.first == b.first && a.second < b.second);
  });
  std::vector<double> probs(candidates_.size());
  double total = 0.0;
  for (size_t i = 0; i < candidates_.size(); ++i) {
    probs[i] = std::exp((static_cast<double>(candidates_[i].first) - max_logit) / params_.temperature);
    total += probs[i];
  }
  // Nucleus: keep the shortest prefix whose mass reaches top_p (at least one).
  size_t keep = candidates_.size();
  if (params_.top_p < 1.0) {
    double cumulative = 0.0;
    for (size_t i = 0; i < candidates_.size(); ++i) {
      cumulative += probs[i] / total;
      if (cumulative >= params_.top_p) {
        keep = i + 1;
        break;
      }
    }
  }
  double kept_mass = 0.0;
  for (size_t i = 0; i < keep; ++i) kept_mass += probs[i];
  // Uniform in [0, 1) from the top 53 bits: reproducible across standard libraries.
  const double u = static_cast<double>(rng_() >> 11) * 0x1.0p-53;
  const double target = u * kept_mass;
  double cumulative = 0.0;
  for (size_t i = 0; i < keep; ++i) {
    cumulative += probs[i];
    if (target < cumulative) return candidates_[i].second;
  }
  return candidates_[keep - 1].second;  // rounding at the top end
}

StopMatcher::StopMatcher(std::vector<std::string> stops) {
  for (std::string& s : stops) {
    if (!s.empty()) stops_.push_back(std::move(s));
  }
}

StopMatcher::Output StopMatcher::Push(std::string_view text) {
  Output out;
  if (stopped_) return out;
  held_ += text;
  size_t first = std::string::npos;
  const std::string* matched = nullptr;
  for (const std::string& stop : stops_) {
    const size_t at = held_.find(stop);
    if (at < first) {
      first = at;
      matched = &stop;
    }
  }
  if (matched != nullptr) {
    out.text = held_.substr(0, first);
    out.stopped = true;
    out.matched = *matched;
    stopped_ = true;
    held_.clear();
    return out;
  }
  // Hold back the longest tail of held_ that is a proper prefix of a stop string.
  size_t hold = 0;
  for (const std::string& stop : stops_) {
    for (size_t k = std::min(stop.size() - 1, held_.size()); k > hold; --k) {
      if (held_.compare(held_.size() - k, k, stop, 0, k) == 0) {
        hold = k;
        break;
      }
    }
  }
  out.text = held_.substr(0, held_.size() - hold);
  held_.erase(0, held_.size() - hold);
  return out;
}

std::string StopMatcher::Flush() {
  std::string out = stopped_ ? std::string() : std::move(held_);
  held_.clear();
  return out;
}

}  // namespace tollgate::local_backend
