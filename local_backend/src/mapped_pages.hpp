// Releasing pages of a read-only file mapping (GgufFile) once a backend holds
// its own copy of a tensor (the CPU's repacked weights, the GPU's upload).
#pragma once

#include <sys/mman.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <span>

namespace tollgate::local_backend {

// Drops the whole pages inside `bytes` from the process (MADV_DONTNEED); a
// later read refaults them from the page cache. `bytes` must lie in a
// read-only file mapping.
inline void DropMappedPages(std::span<const std::byte> bytes) {
  const uintptr_t page = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));
  const uintptr_t begin = (reinterpret_cast<uintptr_t>(bytes.data()) + page - 1) / page * page;
  const uintptr_t end = (reinterpret_cast<uintptr_t>(bytes.data()) + bytes.size()) / page * page;
  if (end > begin) madvise(reinterpret_cast<void*>(begin), end - begin, MADV_DONTNEED);
}

}  // namespace tollgate::local_backend
