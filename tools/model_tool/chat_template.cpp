// tollgate-model chat-template: renders a chat template with the local
// engine's Jinja subset, so tests can compare it with @huggingface/jinja
// (tests/e2e/test/chat_templates.test.mjs).
#include "tollgate/local_backend/chat_template.hpp"

#include <boost/json.hpp>
#include <chrono>
#include <fstream>
#include <iostream>
#include <iterator>
#include <sstream>
#include <string>

#include "commands.hpp"
#include "tollgate/local_backend/gguf.hpp"

namespace tollgate::model_tool {
namespace {

namespace json = boost::json;

constexpr const char* kUsage = R"(usage: tollgate-model chat-template (--template-file FILE | --model FILE.gguf)
                                    [--add-generation-prompt] [--enable-thinking true|false]
                                    [--bos-token TEXT] [--eos-token TEXT] [--now UNIX_SECONDS] [--caps]

Reads a JSON object from stdin, {"messages": [...], "tools": [...], ...}, and writes the
rendered prompt to stdout (no newline added). Every key of the object becomes a template
variable as given (messages and tools in Hugging Face's shape, as apply_chat_template gets
them); `tools` is null when absent.

  --template-file FILE     the Jinja source of the template
  --model FILE.gguf        the template (tokenizer.chat_template) and BOS/EOS texts of a model
  --add-generation-prompt  end with the opening of an assistant turn
  --enable-thinking B      pass enable_thinking=B (Qwen3)
  --bos-token, --eos-token the special tokens' texts (default: from --model, else none)
  --now SECONDS            the time strftime_now formats (default: now)
  --caps                   print the template's detected capabilities as JSON instead
)";

int Usage(const std::string& message) {
  std::cerr << "tollgate-model chat-template: " << message << "\n" << kUsage;
  return 2;
}

int Fail(const std::string& message) {
  std::cerr << "tollgate-model chat-template: " << message << "\n";
  return 1;
}

// The text of token `id_key`'s id in tokenizer.ggml.tokens, or "".
std::string TokenText(const local_backend::GgufFile& file, std::string_view id_key) {
  auto id = file.GetInt(id_key);
  if (!id) return {};
  auto tokens = file.GetStringArray("tokenizer.ggml.tokens");
  if (!tokens || *id < 0 || static_cast<size_t>(*id) >= tokens->size()) return {};
  return (*tokens)[static_cast<size_t>(*id)];
}

}  // namespace

int ChatTemplate(int argc, char** argv) {
  std::string template_path;
  std::string model_path;
  bool add_generation_prompt = false;
  std::optional<bool> enable_thinking;
  std::optional<std::string> bos_token;
  std::optional<std::string> eos_token;
  std::optional<std::chrono::system_clock::time_point> now;
  bool caps = false;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    auto value = [&]() -> const char* { return i + 1 < argc ? argv[++i] : nullptr; };
    if (arg == "--help" || arg == "-h") {
      std::cout << kUsage;
      return 0;
    }
    if (arg == "--template-file" || arg == "--model" || arg == "--enable-thinking" || arg == "--bos-token" ||
        arg == "--eos-token" || arg == "--now") {
      const char* v = value();
      if (!v) return Usage(arg + " needs a value");
      if (arg == "--template-file") template_path = v;
      if (arg == "--model") model_path = v;
      if (arg == "--bos-token") bos_token = v;
      if (arg == "--eos-token") eos_token = v;
      if (arg == "--enable-thinking") {
        const std::string b = v;
        if (b != "true" && b != "false") return Usage("--enable-thinking takes true or false");
        enable_thinking = b == "true";
      }
      if (arg == "--now") {
        try {
          now = std::chrono::system_clock::time_point(std::chrono::seconds(std::stoll(v)));
        } catch (const std::exception&) {
          return Usage("--now takes whole seconds since 1970");
        }
      }
    } else if (arg == "--add-generation-prompt") {
      add_generation_prompt = true;
    } else if (arg == "--caps") {
      caps = true;
    } else {
      return Usage("unknown argument '" + arg + "'");
    }
  }
  if (template_path.empty() == model_path.empty()) return Usage("give one of --template-file and --model");
  // The conversation is read first, whatever fails later: a caller writing
  // it must never see a broken pipe.
  std::string input;
  if (!caps) input.assign(std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>());

  std::string source;
  std::string model_bos;
  std::string model_eos;
  if (!template_path.empty()) {
    std::ifstream in(template_path, std::ios::binary);
    if (!in) return Fail("cannot read " + template_path);
    std::ostringstream text;
    text << in.rdbuf();
    source = text.str();
  } else {
    auto file = local_backend::GgufFile::Open(model_path);
    if (!file) return Fail(file.error().message);
    auto text = (*file)->GetString("tokenizer.chat_template");
    if (!text) return Fail(model_path + " has no tokenizer.chat_template");
    source = std::string(*text);
    model_bos = TokenText(**file, "tokenizer.ggml.bos_token_id");
    model_eos = TokenText(**file, "tokenizer.ggml.eos_token_id");
  }

  auto parsed =
      local_backend::ChatTemplate::Parse(source, bos_token.value_or(model_bos), eos_token.value_or(model_eos));
  if (!parsed) return Fail(parsed.error().message);
  if (caps) {
    const auto& c = parsed->caps();
    std::cout << json::serialize(json::object{{"supports_tools", c.supports_tools},
                                              {"supports_enable_thinking", c.supports_enable_thinking},
                                              {"renders_tool_calls", c.renders_tool_calls},
                                              {"null_content_with_tool_calls", c.null_content_with_tool_calls},
                                              {"object_arguments", c.object_arguments}})
              << "\n";
    return 0;
  }

  boost::system::error_code ec;
  json::value body = json::parse(input, ec);
  if (ec || !body.is_object()) return Fail("stdin must hold a JSON object {\"messages\": [...], ...}");
  json::object variables = std::move(body.as_object());
  if (!variables.contains("tools")) variables["tools"] = nullptr;
  variables["add_generation_prompt"] = add_generation_prompt;
  if (enable_thinking) variables["enable_thinking"] = *enable_thinking;

  auto rendered = parsed->RenderVariables(variables, now);
  if (!rendered) return Fail(rendered.error().message);
  std::cout << *rendered << std::flush;
  return 0;
}

}  // namespace tollgate::model_tool
