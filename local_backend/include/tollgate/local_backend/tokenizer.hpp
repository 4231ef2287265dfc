// SentencePiece BPE tokenizer for GGUF vocabularies with
// tokenizer.ggml.model = "llama".
//
// Encoding follows llama.cpp `llm_tokenizer_spm` (src/llama-vocab.cpp), which
// reproduces SentencePiece's BPE model (Kudo & Richardson, "SentencePiece",
// EMNLP 2018; sentencepiece `bpe_model.cc`):
//   1. if add_space_prefix and the text is non-empty, prepend ' ';
//   2. replace every ' ' by U+2581 ("▁");
//   3. split into UTF-8 characters (an invalid lead byte is one character);
//   4. repeatedly merge the adjacent pair whose concatenation is a vocabulary
//      piece with the highest score (ties: the leftmost pair);
//   5. emit each final piece's id; a piece not in the vocabulary is re-split
//      along the merges that built it, and a character not in the vocabulary
//      falls back to its UTF-8 bytes as "<0xNN>" tokens (unknown id when even
//      those are missing).
// BOS is prepended when `add_bos` is requested and the vocabulary adds it
// (tokenizer.ggml.add_bos_token, default true). Text is never parsed for
// special tokens: "<s>" in the input is plain text.
//
// Decoding (llama.cpp `token_to_piece`): normal and user-defined pieces with
// U+2581 -> ' ', byte tokens "<0xNN>" -> the raw byte, control tokens (BOS,
// EOS) -> nothing, the unknown token -> U+2585 as llama.cpp prints it. As in
// SentencePiece decode (and llama2.c run.c), the piece right after BOS drops
// one leading space.
//
// Thread-safety: a Tokenizer is immutable after FromGguf(); all const methods
// may be called concurrently. IncrementalDetokenizer is single-threaded.
#pragma once

#include "tollgate/core/error.hpp"

#include <cstdint>
#include <functional>
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

class Tokenizer {
 public:
  // Reads tokenizer.ggml.{model, tokens, scores, token_type, bos_token_id,
  // eos_token_id, unknown_token_id, add_bos_token, add_space_prefix}.
  // Errors (kInvalidArgument): model is not "llama", tokens missing or empty,
  // scores/token_type lengths differ from tokens, special ids out of range.
  // Missing optional keys default to: scores 0, token_type normal (byte tokens
  // recognised by their "<0xNN>" text), bos 1, eos 2, unk 0, add_bos true,
  // add_space_prefix true.
  static Result<Tokenizer> FromGguf(const GgufFile& gguf);

  // Token ids for `text` (UTF-8; invalid bytes go through byte fallback),
  // with BOS first when `add_bos` and the vocabulary's add_bos_token are true.
  std::vector<TokenId> Encode(std::string_view text, bool add_bos) const;

  // The bytes a token contributes to the output, without the after-BOS space
  // rule. Byte tokens give one raw byte (possibly part of a UTF-8 sequence).
  // An id out of range gives "".
  std::string Piece(TokenId id) const;

  // Whole-sequence decode: concatenated pieces, dropping one leading space of
  // the piece that directly follows BOS. May hold incomplete UTF-8 if the ids
  // end mid-character.
  std::string Decode(const std::vector<TokenId>& ids) const;

  int vocab_size() const { return static_cast<int>(pieces_.size()); }
  TokenId bos_id() const { return bos_id_; }
  TokenId eos_id() const { return eos_id_; }
  TokenId unk_id() const { return unk_id_; }
  bool add_bos() const { return add_bos_; }
  bool add_space_prefix() const { return add_space_prefix_; }
  // The vocabulary text of a token (with U+2581), or "" when out of range.
  const std::string& Text(TokenId id) const;
  TokenType Type(TokenId id) const;

 private:
  TokenId Lookup(std::string_view piece) const;  // -1 when absent
  TokenId ByteToken(uint8_t byte) const;

  std::vector<std::string> pieces_;
  std::vector<float> scores_;
  std::vector<TokenType> types_;
  std::vector<int> byte_values_;  // per token: 0..255 for byte tokens, else -1
  struct StringHash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
  };
  std::unordered_map<std::string, TokenId, StringHash, std::equal_to<>> index_;
  TokenId byte_tokens_[256];
  TokenId bos_id_ = 1;
  TokenId eos_id_ = 2;
  TokenId unk_id_ = 0;
  bool add_bos_ = true;
  bool add_space_prefix_ = true;
};

// Turns a stream of generated tokens into text deltas that are always complete,
// valid UTF-8: bytes of a multi-byte character split across byte tokens are
// held back until the character is complete. Invalid sequences become U+FFFD.
// Applies the after-BOS leading-space rule when constructed with the id of the
// token that precedes the first pushed one.
class IncrementalDetokenizer {
 public:
  // `tokenizer` must outlive this object. `previous` is the last prompt token
  // (BOS for an empty prompt), or -1 when there is none.
  IncrementalDetokenizer(const Tokenizer& tokenizer, TokenId previous);

  // Text that became complete with `id`; may be empty.
  std::string Push(TokenId id);
  // Whatever is still held (an incomplete character at the end of the
  // stream) rendered as U+FFFD; resets the hold.
  std::string Flush();

 private:
  const Tokenizer& tokenizer_;
  TokenId previous_;
  std::string pending_;  // bytes not yet emitted
};

// Splits `bytes` into the longest prefix that is complete UTF-8 (invalid
// sequences replaced by U+FFFD) and leaves in `bytes` only a trailing
// incomplete-but-so-far-valid sequence. Exposed for tests.
std::string TakeCompleteUtf8(std::string& bytes);

}  // namespace tollgate::local_backend
