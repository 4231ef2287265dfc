// Pre-tokenizer splitting with PCRE2 (UTF + UCP, JIT), internal to the
// tokenizer. See tokenizer.hpp for the expressions per tokenizer.ggml.pre.
#pragma once

#include "tollgate/core/error.hpp"

#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace tollgate::local_backend::internal {

// A sequence of regular expressions applied as Hugging Face's
// `Sequence[Split(pattern, behavior = Isolated)]` (tokenizers
// pre_tokenizers/split.rs): each expression splits every piece the previous
// one produced into its matches and the (non-empty) text between them, in
// order. Matches never cross piece boundaries, and lookarounds see only the
// piece (as a Rust &str slice would).
//
// Invalid UTF-8 is allowed (PCRE2_MATCH_INVALID_UTF): no expression matches
// inside an invalid sequence, so those bytes end up in the in-between pieces.
//
// Immutable after Create(); Split() may run concurrently from many threads
// (match data and JIT stack are per thread).
class RegexSplitter {
 public:
  // Compiles `patterns` (PCRE2 syntax; Hugging Face's Rust/Oniguruma syntax
  // for these expressions is the same). Errors (kInvalidArgument): a pattern
  // that does not compile, with PCRE2's message and offset.
  static Result<RegexSplitter> Create(const std::vector<std::string>& patterns);

  // The expressions for tokenizer.ggml.pre `pre` (tokenizer.hpp), and whether
  // that pre-tokenizer also matches whole pre-tokens against the vocabulary
  // before merging (Hugging Face BPE `ignore_merges`) and adds BOS by default.
  // Errors (kInvalidArgument): an unknown name, listing the supported ones.
  struct Preset {
    std::vector<std::string> patterns;
    bool ignore_merges = false;
    bool add_bos = false;
  };
  static Result<Preset> PresetFor(std::string_view pre);

  // Appends the pieces of `text` to `out` (views into `text`, never empty,
  // covering `text` exactly in order).
  void Split(std::string_view text, std::vector<std::string_view>& out) const;

 private:
  struct Compiled;
  std::shared_ptr<const Compiled> compiled_;
};

}  // namespace tollgate::local_backend::internal
