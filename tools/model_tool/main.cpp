// tollgate-model: offline tools for the local engine's model files.
#include "commands.hpp"

#include <cstring>
#include <iostream>

namespace {

constexpr const char* kUsage = R"(usage: tollgate-model COMMAND [ARGS...]

commands:
  write-random   write a GGUF file with random weights (architecture, shape, tensor type, tokenizer)
  tokenize       token ids of texts with a GGUF file's tokenizer
  chat-template  render a chat template for messages and tools

`tollgate-model COMMAND --help` describes a command's arguments.
)";

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || std::strcmp(argv[1], "--help") == 0 || std::strcmp(argv[1], "-h") == 0) {
    std::cout << kUsage;
    return argc < 2 ? 2 : 0;
  }
  const std::string command = argv[1];
  if (command == "write-random") return tollgate::model_tool::WriteRandom(argc - 1, argv + 1);
  if (command == "tokenize") return tollgate::model_tool::Tokenize(argc - 1, argv + 1);
  if (command == "chat-template") return tollgate::model_tool::ChatTemplate(argc - 1, argv + 1);
  std::cerr << "tollgate-model: unknown command '" << command << "'\n" << kUsage;
  return 2;
}
