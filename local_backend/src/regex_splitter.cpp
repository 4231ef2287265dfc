#include "regex_splitter.hpp"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

namespace tollgate::local_backend::internal {
namespace {

// The expressions, as each model's tokenizer.json writes them (pre_tokenizer
// Split patterns), except that CJK ranges are spelled with \x{...} escapes.
// llama.cpp rewrites "(?i:'s|...)" as "(?:'[sS]|...)" because std::regex has
// no inline flags; PCRE2 has them, so the original stands, and like Hugging
// Face's Rust code it folds case by Unicode rules.

// GPT-2 (openai/gpt-2 src/encoder.py).
constexpr const char* kGpt2 = R"re('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)re";

// Llama 3 (meta-llama/Meta-Llama-3-8B tokenizer.json; tiktoken cl100k_base).
constexpr const char* kLlama3 =
    R"re((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)re";

// Qwen2 / Qwen2.5 / Qwen3 (Qwen/Qwen2.5-0.5B tokenizer.json): as Llama 3 with single digits.
constexpr const char* kQwen2 =
    R"re((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)re";

// DeepSeek V3 / R1 (deepseek-ai/DeepSeek-V3 tokenizer.json): three Splits in sequence.
// The CJK class is U+4E00..U+9FA5 (一-龥), hiragana U+3040..U+309F, katakana U+30A0..U+30FF.
constexpr const char* kDeepSeekV3Digits = R"re(\p{N}{1,3})re";
constexpr const char* kDeepSeekV3Cjk = R"re([\x{4E00}-\x{9FA5}\x{3040}-\x{309F}\x{30A0}-\x{30FF}]+)re";
constexpr const char* kDeepSeekV3Words =
    R"re([!"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+|[^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+| ?[\p{P}\p{S}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)re";

constexpr const char* kSupported =
    "llama-bpe, llama3, llama-v3, smaug-bpe, dbrx, qwen2, deepseek-r1-qwen, megrez, stablelm2, "
    "deepseek-v3, gpt-2, gpt2";

struct CodeDeleter {
  void operator()(pcre2_code* code) const { pcre2_code_free(code); }
};

// Per-thread scratch: PCRE2 match data and a JIT stack larger than the 32 KiB
// default (pcre2jit(3), "Controlling the JIT stack"), so long runs of one
// class (whitespace, a digit string) never hit the stack limit.
struct ThreadScratch {
  pcre2_match_data* data = nullptr;
  pcre2_match_context* context = nullptr;
  pcre2_jit_stack* jit_stack = nullptr;
  std::vector<std::string_view> a;
  std::vector<std::string_view> b;

  ThreadScratch() {
    // Only the whole match is read; ovector pairs beyond the first are unused.
    data = pcre2_match_data_create(4, nullptr);
    context = pcre2_match_context_create(nullptr);
    jit_stack = pcre2_jit_stack_create(64 * 1024, 8 * 1024 * 1024, nullptr);
    if (context != nullptr && jit_stack != nullptr) pcre2_jit_stack_assign(context, nullptr, jit_stack);
  }
  ~ThreadScratch() {
    pcre2_jit_stack_free(jit_stack);
    pcre2_match_context_free(context);
    pcre2_match_data_free(data);
  }
  ThreadScratch(const ThreadScratch&) = delete;
  ThreadScratch& operator=(const ThreadScratch&) = delete;
};

ThreadScratch& Scratch() {
  thread_local ThreadScratch scratch;
  return scratch;
}

size_t Utf8Len(unsigned char c) {
  if ((c & 0xE0) == 0xC0) return 2;
  if ((c & 0xF0) == 0xE0) return 3;
  if ((c & 0xF8) == 0xF0) return 4;
  return 1;
}

}  // namespace

struct RegexSplitter::Compiled {
  std::vector<std::unique_ptr<pcre2_code, CodeDeleter>> codes;
};

Result<RegexSplitter> RegexSplitter::Create(const std::vector<std::string>& patterns) {
  auto compiled = std::make_shared<Compiled>();
  for (const std::string& pattern : patterns) {
    int error = 0;
    PCRE2_SIZE offset = 0;
    pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                                     PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF, &error, &offset, nullptr);
    if (code == nullptr) {
      PCRE2_UCHAR message[256];
      pcre2_get_error_message(error, message, sizeof(message));
      return InvalidArgument("pre-tokenizer expression does not compile at offset " + std::to_string(offset) +
                             ": " + reinterpret_cast<const char*>(message));
    }
    // Without JIT support (or if JIT compilation fails) pcre2_match interprets.
    pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);
    compiled->codes.emplace_back(code);
  }
  RegexSplitter splitter;
  splitter.compiled_ = std::move(compiled);
  return splitter;
}

Result<RegexSplitter::Preset> RegexSplitter::PresetFor(std::string_view pre) {
  // Names and flags as llama.cpp's llama_vocab::impl::load maps them.
  if (pre == "llama-bpe" || pre == "llama3" || pre == "llama-v3") {
    return Preset{{kLlama3}, /*ignore_merges=*/true, /*add_bos=*/true};
  }
  if (pre == "smaug-bpe" || pre == "dbrx") return Preset{{kLlama3}, false, false};
  if (pre == "qwen2" || pre == "deepseek-r1-qwen" || pre == "megrez" || pre == "stablelm2") {
    return Preset{{kQwen2}, false, false};
  }
  if (pre == "deepseek-v3") return Preset{{kDeepSeekV3Digits, kDeepSeekV3Cjk, kDeepSeekV3Words}, false, false};
  if (pre == "gpt-2" || pre == "gpt2") return Preset{{kGpt2}, false, false};
  if (pre.empty()) {
    return InvalidArgument(std::string("GGUF has no tokenizer.ggml.pre; byte-level BPE needs one of: ") + kSupported);
  }
  return InvalidArgument("tokenizer.ggml.pre '" + std::string(pre) + "' is not supported (supported: " +
                         kSupported + ")");
}

namespace {

// Hugging Face `SplitDelimiterBehavior::Isolated` for one expression over one piece.
void SplitOne(const pcre2_code* code, std::string_view piece, ThreadScratch& scratch,
              std::vector<std::string_view>& out) {
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(piece.data());
  size_t prev = 0;   // end of what has been emitted
  size_t start = 0;  // where the next search starts
  while (start <= piece.size()) {
    int rc = pcre2_match(code, subject, piece.size(), start, 0, scratch.data, scratch.context);
    if (rc == PCRE2_ERROR_JIT_STACKLIMIT) {
      rc = pcre2_match(code, subject, piece.size(), start, PCRE2_NO_JIT, scratch.data, scratch.context);
    }
    // No (further) match, or a resource limit of the interpreter: the rest is
    // one piece, which BPE still tokenizes exactly, only split less finely.
    if (rc < 0) break;
    const PCRE2_SIZE* ovector = pcre2_get_ovector_pointer(scratch.data);
    const size_t begin = ovector[0];
    const size_t end = ovector[1];
    if (begin > prev) out.push_back(piece.substr(prev, begin - prev));
    if (end > begin) {
      out.push_back(piece.substr(begin, end - begin));
      prev = start = end;
    } else {
      // An empty match emits nothing; step over one character.
      prev = begin;
      if (begin >= piece.size()) break;
      start = begin + Utf8Len(static_cast<unsigned char>(piece[begin]));
    }
  }
  if (prev < piece.size()) out.push_back(piece.substr(prev));
}

}  // namespace

void RegexSplitter::Split(std::string_view text, std::vector<std::string_view>& out) const {
  if (text.empty()) return;
  ThreadScratch& scratch = Scratch();
  const auto& codes = compiled_->codes;
  if (codes.empty()) {
    out.push_back(text);
    return;
  }
  if (codes.size() == 1) {
    SplitOne(codes[0].get(), text, scratch, out);
    return;
  }
  std::vector<std::string_view>& current = scratch.a;
  std::vector<std::string_view>& next = scratch.b;
  current.assign(1, text);
  for (size_t i = 0; i + 1 < codes.size(); ++i) {
    next.clear();
    for (std::string_view piece : current) SplitOne(codes[i].get(), piece, scratch, next);
    current.swap(next);
  }
  for (std::string_view piece : current) SplitOne(codes.back().get(), piece, scratch, out);
}

}  // namespace tollgate::local_backend::internal
