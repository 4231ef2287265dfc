// AVX-512 kernels: the AVX2 kernels with AVX-512 F/BW/VL/VNNI enabled, so the
// int8 dot products use VPDPBUSD (simd_x86.hpp DotI8) and the compiler may use
// the wider register file. Never AMX. Compiled with -mavx2 -mfma -mf16c
// -mavx512f -mavx512bw -mavx512vl -mavx512vnni (local_backend/CMakeLists.txt);
// only called after CpuSupports(Isa::kAvx512).
#if defined(__x86_64__) && !defined(TOLLGATE_LOCAL_BACKEND_NO_SIMD) && defined(TOLLGATE_HAVE_AVX512_FLAGS)
#define TOLLGATE_KERNEL_NS avx512
#include "kernel_table.hpp"
#include "simd_x86.hpp"
#include "kernels_impl.inc"

namespace tollgate::local_backend::cpu {
const Kernels* Avx512Kernels() {
  static const Kernels table = avx512::MakeTable(Isa::kAvx512);
  return &table;
}
}  // namespace tollgate::local_backend::cpu
#else
#include "kernel_table.hpp"
namespace tollgate::local_backend::cpu {
const Kernels* Avx512Kernels() { return nullptr; }
}  // namespace tollgate::local_backend::cpu
#endif
