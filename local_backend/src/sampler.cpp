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

Sampler::Sampler(const SamplingParams& params, std::span<const TokenId> prompt)
    : params_(params), rng_(SeedFrom(params.seed)) {
  if (!(params_.top_p > 0.0) || params_.top_p > 1.0) params_.top_p = 1.0;
  if (!(params_.min_p > 0.0)) params_.min_p = 0.0;
  params_.min_p = std::min(params_.min_p, 1.0);
  if (!(params_.repetition_penalty > 0.0)) params_.repetition_penalty = 1.0;
  if (params_.repetition_penalty != 1.0) {
    seen_.assign(prompt.begin(), prompt.end());
    std::sort(seen_.begin(), seen_.end());
    seen_.erase(std::unique(seen_.begin(), seen_.end()), seen_.end());
  }
}

bool Sampler::Penalised() const {
  return !params_.logit_bias.empty() || params_.repetition_penalty != 1.0 || params_.presence_penalty != 0.0 ||
         params_.frequency_penalty != 0.0;
}

void Sampler::Accept(TokenId token) {
  if (params_.repetition_penalty != 1.0) {
    auto it = std::lower_bound(seen_.begin(), seen_.end(), token);
    if (it == seen_.end() || *it != token) seen_.insert(it, token);
  }
  if (params_.presence_penalty != 0.0 || params_.frequency_penalty != 0.0) {
    auto it = std::lower_bound(counts_.begin(), counts_.end(), std::make_pair(token, 0));
    if (it != counts_.end() && it->first == token) {
      ++it->second;
    } else {
      counts_.insert(it, {token, 1});
    }
  }
}

TokenId Sampler::Sample(std::span<const float> raw) {
  // 1-3: sparse adjustments on a copy.
  std::span<const float> logits = raw;
  if (Penalised()) {
    work_.assign(raw.begin(), raw.end());
    const auto n = static_cast<TokenId>(work_.size());
    for (const auto& [token, bias] : params_.logit_bias) {
      if (token >= 0 && token < n) work_[token] += bias;
    }
    const float rp = static_cast<float>(params_.repetition_penalty);
    for (TokenId token : seen_) {
      if (token < 0 || token >= n) continue;
      float& v = work_[token];
      v = v > 0 ? v / rp : v * rp;
    }
    for (const auto& [token, count] : counts_) {
      if (token < 0 || token >= n) continue;
      work_[token] -= static_cast<float>(params_.presence_penalty + params_.frequency_penalty * count);
    }
    logits = work_;
  }
  // 4: greedy.
  if (!(params_.temperature > 0.0)) return Greedy(logits);

  float max_logit = -std::numeric_limits<float>::infinity();
  for (float v : logits) {
    if (!std::isnan(v)) max_logit = std::max(max_logit, v);
  }
  if (std::isinf(max_logit)) return Greedy(logits);  // all NaN, or a +inf / all -inf
  const double inv_t = 1.0 / params_.temperature;
  auto weight = [&](float v) { return std::exp((static_cast<double>(v) - max_logit) * inv_t); };
  const double u = static_cast<double>(rng_() >> 11) * 0x1.0p-53;  // [0, 1), reproducible

  const bool filtered = params_.top_k > 0 || params_.top_p < 1.0 || params_.min_p > 0.0;
  if (!filtered) {
    // One linear pass: the whole distribution.
    double total = 0.0;
    for (float v : logits) {
      if (!std::isnan(v)) total += weight(v);
    }
    const double target = u * total;
    double cumulative = 0.0;
    TokenId last = 0;
    for (size_t i = 0; i < logits.size(); ++i) {
      if (std::isnan(logits[i])) continue;
      cumulative += weight(logits[i]);
      last = static_cast<TokenId>(i);
      if (target < cumulative) return last;
    }
    return last;  // rounding at the top end
  }

  candidates_.clear();
  double total = 0.0;  // mass of the candidates top_p renormalises over (after top_k)
  for (size_t i = 0; i < logits.size(); ++i) {
    if (std::isnan(logits[i])) continue;
    candidates_.emplace_back(logits[i], static_cast<TokenId>(i));
  }
  // Most probable first; equal probabilities in id order, so the selection
  // is deterministic.
  auto before = [](const std::pair<float, TokenId>& a, const std::pair<float, TokenId>& b) {
    return a.first > b.first || (a.first == b.first && a.second < b.second);
  };
  size_t limit = candidates_.size();
  if (params_.top_k > 0) limit = std::min(limit, static_cast<size_t>(params_.top_k));
  if (limit < candidates_.size()) {
    std::nth_element(candidates_.begin(), candidates_.begin() + static_cast<ptrdiff_t>(limit), candidates_.end(),
                     before);
    candidates_.resize(limit);
  }
  for (const auto& c : candidates_) total += weight(c.first);

  // 6: sort only as many as the nucleus needs, growing the sorted prefix.
  size_t keep = candidates_.size();
  size_t sorted = std::min<size_t>(candidates_.size(), 256);
  for (;;) {
    std::partial_sort(candidates_.begin(), candidates_.begin() + static_cast<ptrdiff_t>(sorted), candidates_.end(),
                      before);
    if (params_.top_p >= 1.0) {
      if (params_.min_p <= 0.0 || sorted == candidates_.size()) break;
      // min_p needs the tokens above its threshold, all of them sorted.
      if (weight(candidates_[sorted - 1].first) < params_.min_p) break;
    } else {
      double cumulative = 0.0;
      bool reached = false;
      for (size_t i = 0; i < sorted; ++i) {
        cumulative += weight(candidates_[i].first) / total;
        if (cumulative >= params_.top_p) {
          keep = i + 1;
          reached = true;
          break;
        }
      }
      if (reached || sorted == candidates_.size()) break;
    }
    sorted = std::min(candidates_.size(), sorted * 4);
  }
  if (params_.top_p >= 1.0 && params_.min_p > 0.0) keep = sorted;
  // 7: min_p, relative to the most probable (weight 1 by construction).
  if (params_.min_p > 0.0) {
    size_t k = 1;
    while (k < keep && weight(candidates_[k].first) >= params_.min_p) ++k;
    keep = k;
  }
  // 8: one draw.
  probs_.resize(keep);
  double kept_mass = 0.0;
  for (size_t i = 0; i < keep; ++i) {
    probs_[i] = weight(candidates_[i].first);
    kept_mass += probs_[i];
  }
  const double target = u * kept_mass;
  double cumulative = 0.0;
  for (size_t i = 0; i < keep; ++i) {
    cumulative += probs_[i];
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
