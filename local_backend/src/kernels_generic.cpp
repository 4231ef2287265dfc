// Portable kernels (any CPU): kernels_impl.inc over the scalar SIMD emulation.
#define TOLLGATE_KERNEL_NS generic
#include "cpu_kernels.hpp"
#include "simd_generic.hpp"
#include "kernels_impl.inc"

namespace tollgate::local_backend::cpu {

const Kernels& GenericKernels() {
  static const Kernels table = generic::MakeTable(Isa::kGeneric);
  return table;
}

float ExpApprox(float x) { return generic::ExpScalar(x); }

}  // namespace tollgate::local_backend::cpu
