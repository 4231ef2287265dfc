// AVX2 + FMA + F16C kernels (Haswell, Zen and later). This file alone is
// compiled with -mavx2 -mfma -mf16c (local_backend/CMakeLists.txt); it defines
// nothing with external linkage except Avx2Kernels(), and it is only called
// after CpuSupports(Isa::kAvx2).
#if defined(__x86_64__) && !defined(TOLLGATE_LOCAL_BACKEND_NO_SIMD)
#define TOLLGATE_KERNEL_NS avx2
#include "kernel_table.hpp"
#include "simd_x86.hpp"
#include "kernels_impl.inc"

namespace tollgate::local_backend::cpu {
const Kernels* Avx2Kernels() {
  static const Kernels table = avx2::MakeTable(Isa::kAvx2);
  return &table;
}
}  // namespace tollgate::local_backend::cpu
#else
#include "kernel_table.hpp"
namespace tollgate::local_backend::cpu {
const Kernels* Avx2Kernels() { return nullptr; }
}  // namespace tollgate::local_backend::cpu
#endif
