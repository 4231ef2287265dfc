// Tokenizers for GGUF vocabularies: SentencePiece BPE (tokenizer.ggml.model =
// "llama") and GPT-2-style byte-level BPE (tokenizer.ggml.model = "gpt2"), with
// special and added tokens, BOS/EOS handling and the set of tokens that end
// generation. Both follow llama.cpp (src/llama-vocab.cpp), which in turn
// reproduces the Hugging Face `tokenizers` results for these models.
//
// Common steps (llama.cpp `llama_vocab::impl::tokenize`):
//   1. Special-token partition (llama.cpp `tokenizer_st_partition`; Hugging
//      Face `AddedVocabulary::split_with_indices`): the text is cut around
//      occurrences of special tokens, each found leftmost-longest. User-defined
//      tokens (added tokens that are not special, e.g. Qwen's "<think>",
//      "<tool_call>") are always matched, as both Hugging Face and llama.cpp
//      do. Control tokens ("<|im_start|>", "<|eot_id|>") and the unknown token
//      are matched only with `parse_special` (for rendered chat templates);
//      without it they are plain text, so user content can never inject them.
//      This is Hugging Face's `split_special_tokens=True` behaviour.
//   2. Every text piece between matched tokens is encoded by the model below.
//   3. With `add_special`, BOS is prepended when the vocabulary's add_bos is
//      true and EOS appended when add_eos is true.
//
// SentencePiece ("llama"; llama.cpp `llm_tokenizer_spm`, which reproduces
// SentencePiece's BPE model, Kudo & Richardson, EMNLP 2018, sentencepiece
// `bpe_model.cc`), per text piece:
//   1. if add_space_prefix and the piece is the first one or follows a
//      matched special token, prepend ' ';
//   2. replace every ' ' by U+2581 ("▁");
//   3. split into UTF-8 characters (an invalid lead byte is one character);
//   4. repeatedly merge the adjacent pair whose concatenation is a vocabulary
//      piece with the highest score (ties: the leftmost pair);
//   5. emit each final piece's id; a piece not in the vocabulary is re-split
//      along the merges that built it, and a character not in the vocabulary
//      falls back to its UTF-8 bytes as "<0xNN>" tokens (unknown id when even
//      those are missing).
//
// Byte-level BPE ("gpt2"; llama.cpp `llm_tokenizer_bpe`, Hugging Face
// `tokenizers` pre_tokenizers::split + models::bpe; Radford et al. 2019, GPT-2
// `encoder.py`), per text piece:
//   1. pre-tokenize: split with the regular expressions of the pre-tokenizer
//      named by tokenizer.ggml.pre, each applied to the pieces the previous one
//      left, keeping matches and the text between them ("Isolated"). Run with
//      PCRE2 in UTF + UCP mode, JIT-compiled. Supported names and their
//      expressions (copied from each model's tokenizer.json):
//        "llama-bpe", "llama3", "llama-v3", "smaug-bpe", "dbrx" (Llama 3, 3.1,
//          3.2, DeepSeek-R1-Distill-Llama): digits in runs of up to 3;
//        "qwen2", "deepseek-r1-qwen", "megrez", "stablelm2" (Qwen2, 2.5, 3,
//          DeepSeek-R1-Distill-Qwen): single digits;
//        "deepseek-v3" (DeepSeek V3, R1): digits by 3, CJK runs, then words;
//        "gpt-2", "gpt2": the original GPT-2 expression.
//      Llama 3 ("llama-bpe" and aliases) also looks each whole pre-token up in
//      the vocabulary before merging (Hugging Face BPE `ignore_merges`).
//   2. map each byte of a pre-token to its byte-level symbol (GPT-2
//      `bytes_to_unicode`: printable Latin-1 bytes map to themselves, the other
//      68 to U+0100..U+0143, so ' ' becomes "Ġ");
//   3. repeatedly merge the adjacent pair with the lowest rank in
//      tokenizer.ggml.merges (rank = index; ties: the leftmost pair);
//   4. emit each symbol's id (a byte without a vocabulary token is dropped,
//      as llama.cpp does).
//   No Unicode normalisation is applied (neither llama.cpp nor this engine
//   does Qwen's NFC step; text already in NFC, as almost all text is,
//   tokenizes identically).
//
// Decoding (llama.cpp `token_to_piece`): normal tokens -> their text (SPM:
// U+2581 -> ' '; byte-level: each symbol back to its byte); user-defined
// tokens -> their text verbatim; byte tokens "<0xNN>" -> the raw byte; control
// tokens -> nothing, or their text when special tokens are rendered; the SPM
// unknown token -> U+2585 as llama.cpp prints it. For SPM only, as in
// SentencePiece decode (and llama2.c run.c), the piece right after BOS drops
// one leading space.
//
// Thread-safety: a Tokenizer is immutable after creation; all const methods
// may be called concurrently (regular-expression scratch space is per thread).
// Copies share the immutable compiled state. IncrementalDetokenizer is
// single-threaded.
#pragma once

#include "tollgate/core/error.hpp"

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace tollgate::local_backend {

class GgufFile;

using TokenId = int32_t;

// llama.cpp `llama_token_type` values stored in tokenizer.ggml.token_type.
enum class TokenType : int32_t {
  kUndefined = 0,
  kNormal = 1,
  kUnknown = 2,
  kControl = 3,
  kUserDefined = 4,
  kUnused = 5,
  kByte = 6,
};

enum class TokenizerKind {
  kSentencePiece,  // tokenizer.ggml.model "llama"
  kByteLevelBpe,   // tokenizer.ggml.model "gpt2"
};

// A vocabulary as GGUF's tokenizer.ggml.* metadata describes it (gguf.md,
// "Tokenizer"), as plain values: FromGguf() reads one from a file, tests
// build them by hand. Absent optionals take the per-model defaults below.
struct TokenizerSpec {
  std::string model;                 // tokenizer.ggml.model: "llama" or "gpt2"
  std::string pre;                   // tokenizer.ggml.pre (gpt2 only; required there)
  std::vector<std::string> tokens;   // tokenizer.ggml.tokens: the id -> text table
  std::vector<float> scores;         // tokenizer.ggml.scores; empty: all 0
  std::vector<TokenType> types;      // tokenizer.ggml.token_type; empty: see FromSpec
  std::vector<std::string> merges;   // tokenizer.ggml.merges: "left right", rank = index (gpt2)
  std::optional<TokenId> bos_id;     // tokenizer.ggml.bos_token_id
  std::optional<TokenId> eos_id;     // tokenizer.ggml.eos_token_id
  std::optional<TokenId> eot_id;     // tokenizer.ggml.eot_token_id
  std::optional<TokenId> eom_id;     // tokenizer.ggml.eom_token_id
  std::optional<TokenId> unk_id;     // tokenizer.ggml.unknown_token_id
  std::optional<bool> add_bos;       // tokenizer.ggml.add_bos_token
  std::optional<bool> add_eos;       // tokenizer.ggml.add_eos_token
  std::optional<bool> add_space_prefix;  // tokenizer.ggml.add_space_prefix (llama only)
};

// How Encode() treats special tokens.
struct EncodeOptions {
  // Prepend BOS / append EOS as the vocabulary's add_bos / add_eos say
  // (Hugging Face `add_special_tokens`).
  bool add_special = true;
  // Match control tokens written in the text (step 1 above). Only for text
  // the engine itself produced, e.g. a rendered chat template.
  bool parse_special = false;
};

class Tokenizer {
 public:
  // Reads tokenizer.ggml.{model, pre, tokens, scores, token_type, merges,
  // bos_token_id, eos_token_id, eot_token_id, eom_token_id, unknown_token_id,
  // add_bos_token, add_eos_token, add_space_prefix} and
  // calls FromSpec(). Errors (kInvalidArgument): a key of the wrong type,
  // tokenizer.ggml.merges absent for "gpt2", and those of FromSpec().
  static Result<Tokenizer> FromGguf(const GgufFile& gguf);

  // Builds a tokenizer (compiling the pre-tokenizer's regular expressions).
  // Errors (kInvalidArgument): model not "llama" or "gpt2"; tokens empty;
  // scores/types lengths differ from tokens; a given special id out of range;
  // a merge without a space; for "gpt2": pre missing or unsupported (the
  // message lists the supported names); add_bos/add_eos true without the id.
  // Defaults when absent:
  //   llama: types normal (byte tokens recognised by their "<0xNN>" text),
  //     bos 1, eos 2, unk 0, add_bos true, add_eos false, add_space_prefix true.
  //   gpt2: types normal, no bos/eos/unk (llama.cpp's default id 11 is not
  //     used), add_bos true for the Llama 3 pre-tokenizers and false otherwise,
  //     add_eos false.
  // The end-of-generation set is eos, eot and eom plus every token whose text
  // is one llama.cpp treats as ending generation ("<|eot_id|>", "<|im_end|>",
  // "<|end_of_text|>", "<|endoftext|>", "<|eom_id|>", "<｜end▁of▁sentence｜>",
  // "<|end|>", "<end_of_turn>", "<EOT>", "<|fim_pad|>", "<|repo_name|>",
  // "<|file_sep|>", ...); such a token typed normal is treated as control.
  static Result<Tokenizer> FromSpec(TokenizerSpec spec);

  // Token ids for `text` (UTF-8; invalid bytes are tokenized as bytes), see
  // the steps above.
  std::vector<TokenId> Encode(std::string_view text, EncodeOptions options) const;
  // Encode(text, {.add_special = add_bos, .parse_special = false}).
  std::vector<TokenId> Encode(std::string_view text, bool add_bos) const {
    return Encode(text, EncodeOptions{.add_special = add_bos, .parse_special = false});
  }

  // The bytes a token contributes to the output, without the SPM after-BOS
  // space rule. May be part of a UTF-8 sequence (byte tokens, byte-level
  // symbols of a multi-byte character). Control tokens give "" unless
  // `render_special`, then their text. An id out of range gives "".
  std::string Piece(TokenId id, bool render_special = false) const;

  // Whole-sequence decode: concatenated pieces (SPM: dropping one leading
  // space of the piece that directly follows BOS). With `render_special`,
  // control tokens appear as their text, so Decode(Encode(t, {.add_special =
  // false, .parse_special = true}), true) == t for valid UTF-8 `t`. May hold
  // incomplete UTF-8 if the ids end mid-character.
  std::string Decode(const std::vector<TokenId>& ids, bool render_special = false) const;

  TokenizerKind kind() const { return kind_; }
  // tokenizer.ggml.pre ("" for SentencePiece).
  const std::string& pre() const { return pre_; }
  int vocab_size() const { return static_cast<int>(pieces_.size()); }
  // -1 when the vocabulary has none.
  TokenId bos_id() const { return bos_id_; }
  TokenId eos_id() const { return eos_id_; }
  TokenId eot_id() const { return eot_id_; }
  TokenId unk_id() const { return unk_id_; }
  bool add_bos() const { return add_bos_; }
  bool add_eos() const { return add_eos_; }
  bool add_space_prefix() const { return add_space_prefix_; }
  // True for every token that ends generation (see FromSpec); false for ids
  // out of range.
  bool IsEndOfGeneration(TokenId id) const;
  // The end-of-generation ids, ascending.
  const std::vector<TokenId>& end_of_generation_ids() const { return eog_ids_; }
  // The vocabulary text of a token (SPM with U+2581, byte-level with its
  // byte symbols such as "Ġ"), or "" when out of range.
  const std::string& Text(TokenId id) const;
  TokenType Type(TokenId id) const;
  // The id whose vocabulary text is exactly `text` (e.g. "<|im_end|>"), if any.
  std::optional<TokenId> Find(std::string_view text) const;

 private:
  struct ByteLevelState;  // regular expressions and merge table (tokenizer.cpp)

  TokenId Lookup(std::string_view piece) const;  // -1 when absent
  TokenId ByteToken(uint8_t byte) const;
  void EncodeSentencePiece(std::string_view text, std::vector<TokenId>& out) const;
  void EncodeByteLevel(std::string_view text, std::vector<TokenId>& out) const;
  bool DropsSpaceAfter(TokenId previous) const {
    return kind_ == TokenizerKind::kSentencePiece && previous >= 0 && previous == bos_id_;
  }

  TokenizerKind kind_ = TokenizerKind::kSentencePiece;
  std::string pre_;
  std::vector<std::string> pieces_;
  std::vector<float> scores_;
  std::vector<TokenType> types_;
  std::vector<std::string> decoded_;  // per token: Piece(id, false) for normal/user/byte tokens
  struct StringHash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
  };
  std::unordered_map<std::string, TokenId, StringHash, std::equal_to<>> index_;
  TokenId byte_tokens_[256];
  // Tokens matched in text (step 1), per first byte, longest first:
  // [0] user-defined only, [1] also control and unknown.
  std::vector<std::vector<TokenId>> special_by_byte_[2];
  std::vector<TokenId> eog_ids_;
  std::vector<bool> is_eog_;
  std::shared_ptr<const ByteLevelState> byte_level_;
  TokenId bos_id_ = -1;
  TokenId eos_id_ = -1;
  TokenId eot_id_ = -1;
  TokenId unk_id_ = -1;
  bool add_bos_ = false;
  bool add_eos_ = false;
  bool add_space_prefix_ = false;

  friend class IncrementalDetokenizer;
};

// Turns a stream of generated tokens into text deltas that are always complete,
// valid UTF-8: bytes of a multi-byte character split across tokens are held
// back until the character is complete. Invalid sequences become U+FFFD.
// Applies the SPM after-BOS leading-space rule when constructed with the id of
// the token that precedes the first pushed one.
class IncrementalDetokenizer {
 public:
  // `tokenizer` must outlive this object. `previous` is the last prompt token
  // (BOS for an empty prompt), or -1 when there is none. With
  // `render_special`, control tokens appear as their text (as in Decode).
  IncrementalDetokenizer(const Tokenizer& tokenizer, TokenId previous, bool render_special = false);

  // Text that became complete with `id`; may be empty.
  std::string Push(TokenId id);
  // Whatever is still held (an incomplete character at the end of the
  // stream) rendered as U+FFFD; resets the hold.
  std::string Flush();

 private:
  const Tokenizer& tokenizer_;
  TokenId previous_;
  bool render_special_;
  std::string pending_;  // bytes not yet emitted
};

// Splits `bytes` into the longest prefix that is complete UTF-8 (invalid
// sequences replaced by U+FFFD) and leaves in `bytes` only a trailing
// incomplete-but-so-far-valid sequence. Exposed for tests.
std::string TakeCompleteUtf8(std::string& bytes);

}  // namespace tollgate::local_backend
