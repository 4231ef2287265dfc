// tollgate-model tokenize: the local engine's tokenizer as a filter, so tests
// can compare it with reference tokenizers (tests/e2e/test/tokenizers.test.mjs).
#include "commands.hpp"

#include "tollgate/local_backend/gguf.hpp"
#include "tollgate/local_backend/tokenizer.hpp"

#include <boost/json.hpp>

#include <chrono>
#include <cstring>
#include <iostream>
#include <iterator>
#include <string>

namespace tollgate::model_tool {
namespace {

namespace json = boost::json;
using local_backend::TokenId;

constexpr const char* kUsage = R"(usage: tollgate-model tokenize --model FILE.gguf [--special] [--no-bos] [--decode] [--stats]

Reads a JSON array from stdin and writes a JSON array to stdout, one entry per input:
  encode (default): texts ["...", ...] -> token id arrays [[1, 2, ...], ...]
  --decode:         token id arrays [[1, 2, ...], ...] -> texts ["...", ...]

  --model FILE   GGUF file whose tokenizer (tokenizer.ggml.*) is used
  --special      encode: match control tokens written in the text ("<|im_start|>"),
                 as for a rendered chat template; decode: render control tokens as text
  --no-bos       encode: add no BOS/EOS (by default they are added as the vocabulary's
                 add_bos_token / add_eos_token say)
  --stats        encode: print to stderr how long encoding took (one thread, excluding
                 loading the file and JSON), as "bytes tokens seconds tokens_per_second"
)";

int Usage(const std::string& message) {
  std::cerr << "tollgate-model tokenize: " << message << "\n" << kUsage;
  return 2;
}

}  // namespace

int Tokenize(int argc, char** argv) {
  std::string model_path;
  bool special = false;
  bool no_bos = false;
  bool decode = false;
  bool stats = false;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      std::cout << kUsage;
      return 0;
    }
    if (arg == "--model") {
      if (i + 1 >= argc) return Usage("--model needs a file");
      model_path = argv[++i];
    } else if (arg == "--special") {
      special = true;
    } else if (arg == "--no-bos") {
      no_bos = true;
    } else if (arg == "--decode") {
      decode = true;
    } else if (arg == "--stats") {
      stats = true;
    } else {
      return Usage("unknown argument '" + arg + "'");
    }
  }
  if (model_path.empty()) return Usage("--model is required");
  // The input is read first, whatever fails later: a caller writing it must
  // never see a broken pipe.
  const std::string input{std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>()};

  auto file = local_backend::GgufFile::Open(model_path);
  if (!file) {
    std::cerr << "tollgate-model tokenize: " << file.error().message << "\n";
    return 1;
  }
  auto tokenizer = local_backend::Tokenizer::FromGguf(**file);
  if (!tokenizer) {
    std::cerr << "tollgate-model tokenize: " << model_path << ": " << tokenizer.error().message << "\n";
    return 1;
  }

  boost::system::error_code ec;
  json::value parsed = json::parse(input, ec);
  if (ec || !parsed.is_array()) {
    std::cerr << "tollgate-model tokenize: stdin is not a JSON array"
              << (ec ? " (" + ec.message() + ")" : std::string()) << "\n";
    return 1;
  }

  json::array out;
  const json::array& items = parsed.as_array();
  size_t text_bytes = 0;
  size_t token_count = 0;
  std::chrono::steady_clock::duration encode_time{};
  out.reserve(items.size());
  for (size_t i = 0; i < items.size(); ++i) {
    const json::value& item = items[i];
    if (!decode) {
      if (!item.is_string()) {
        std::cerr << "tollgate-model tokenize: item " << i << " is not a string\n";
        return 1;
      }
      const json::string& text = item.as_string();
      const auto start = std::chrono::steady_clock::now();
      const std::vector<TokenId> ids = tokenizer->Encode(
          std::string_view(text.data(), text.size()),
          local_backend::EncodeOptions{.add_special = !no_bos, .parse_special = special});
      encode_time += std::chrono::steady_clock::now() - start;
      text_bytes += text.size();
      token_count += ids.size();
      json::array row;
      row.reserve(ids.size());
      for (TokenId id : ids) row.emplace_back(id);
      out.emplace_back(std::move(row));
    } else {
      if (!item.is_array()) {
        std::cerr << "tollgate-model tokenize: item " << i << " is not an array of token ids\n";
        return 1;
      }
      std::vector<TokenId> ids;
      for (const json::value& id : item.as_array()) {
        if (!id.is_int64() || id.as_int64() < 0 || id.as_int64() >= tokenizer->vocab_size()) {
          std::cerr << "tollgate-model tokenize: item " << i << " holds " << json::serialize(id)
                    << ", not a token id below " << tokenizer->vocab_size() << "\n";
          return 1;
        }
        ids.push_back(static_cast<TokenId>(id.as_int64()));
      }
      out.emplace_back(json::string(tokenizer->Decode(ids, special)));
    }
  }
  if (stats && !decode) {
    const double seconds = std::chrono::duration<double>(encode_time).count();
    std::cerr << text_bytes << " " << token_count << " " << seconds << " "
              << (seconds > 0 ? static_cast<double>(token_count) / seconds : 0.0) << "\n";
  }
  std::cout << json::serialize(out) << "\n";
  return std::cout.good() ? 0 : 1;
}

}  // namespace tollgate::model_tool
