// Fuzz target: the GGUF reader (local_backend/include/tollgate/local_backend/gguf.hpp)
// and what the engine reads from a model file before it runs it: the
// tokenizer (Tokenizer::FromGguf) and the chat template
// (tokenizer.chat_template through ChatTemplate::Parse).
//
// The input is a whole file. GgufFile::Open maps a path, so the bytes go to
// a memfd (no disk I/O) opened as /proc/self/fd/N. Every metadata value is
// read through each typed accessor, and every tensor small enough (at most
// 1 Mi elements) is converted with ToF32; its data must lie inside the file.
#include "tollgate/local_backend/chat_template.hpp"
#include "tollgate/local_backend/gguf.hpp"
#include "tollgate/local_backend/tokenizer.hpp"

#include <sys/mman.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

using namespace tollgate;
using namespace tollgate::local_backend;

namespace {

int MemFd() {
  static const int fd = [] {
    int f = memfd_create("gguf_fuzz", 0);
    if (f < 0) {
      std::perror("gguf_fuzz: memfd_create");
      std::abort();
    }
    return f;
  }();
  return fd;
}

void WriteAll(int fd, const std::uint8_t* data, std::size_t size) {
  if (ftruncate(fd, 0) != 0 || lseek(fd, 0, SEEK_SET) != 0) std::abort();
  while (size > 0) {
    ssize_t n = write(fd, data, size);
    if (n <= 0) std::abort();
    data += n;
    size -= static_cast<std::size_t>(n);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const int fd = MemFd();
  WriteAll(fd, data, size);
  auto file = GgufFile::Open("/proc/self/fd/" + std::to_string(fd));
  if (!file) return 0;
  const GgufFile& gguf = **file;
  for (const auto& [key, value] : gguf.metadata()) {
    (void)gguf.GetString(key);
    (void)gguf.GetInt(key);
    (void)gguf.GetFloat(key);
    (void)gguf.GetBool(key);
    (void)gguf.GetStringArray(key);
    (void)gguf.GetFloatArray(key);
    (void)gguf.GetIntArray(key);
    if (gguf.Find(key) != &value) std::abort();
  }
  for (const auto& info : gguf.tensors()) {
    if (gguf.FindTensor(info.name) == nullptr) std::abort();
    const auto bytes = gguf.TensorData(info);
    if (bytes.size() != info.size_bytes) {
      std::fprintf(stderr, "gguf_fuzz: tensor data size differs from size_bytes\n");
      std::abort();
    }
    if (info.element_count() <= (1 << 20)) {
      auto values = gguf.ToF32(info);
      if (values && static_cast<int64_t>(values->size()) != info.element_count()) {
        std::fprintf(stderr, "gguf_fuzz: ToF32 gave %zu values for %lld elements\n", values->size(),
                     static_cast<long long>(info.element_count()));
        std::abort();
      }
    }
  }
  if (auto tokenizer = Tokenizer::FromGguf(gguf)) {
    auto ids = tokenizer->Encode("Hello, world! <|im_start|> 123 \xE4\xBD\xA0", EncodeOptions{});
    for (TokenId id : ids) {
      if (id < 0 || id >= tokenizer->vocab_size()) std::abort();
    }
    (void)tokenizer->Decode(ids, true);
  }
  if (auto source = gguf.GetString("tokenizer.chat_template")) {
    (void)ChatTemplate::Parse(*source, "<s>", "</s>");
  }
  return 0;
}
