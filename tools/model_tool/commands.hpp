// `tollgate-model`: offline tools for the local engine's model files, one
// subcommand per file of this folder. Each takes the arguments after its
// name (argv[0] is the subcommand) and returns the process exit status
// (0 ok, 1 failure, 2 usage error), writing errors to stderr.
#pragma once

namespace tollgate::model_tool {

// write-random: a GGUF file of any architecture, shape and tensor type with
// random weights and a chosen tokenizer (write_random.cpp).
int WriteRandom(int argc, char** argv);

// tokenize: token ids of texts with a GGUF file's tokenizer, and decoding
// back (tokenize.cpp).
int Tokenize(int argc, char** argv);

// chat-template: renders a GGUF file's (or a given) chat template for
// messages and tools given as JSON (chat_template.cpp).
int ChatTemplate(int argc, char** argv);

}  // namespace tollgate::model_tool
