// The CUDA backend's entry points in a build without CUDA (ENABLE_CUDA=OFF):
// they say so, and callers fall back or report it (cuda_backend.hpp).
#include "tollgate/local_backend/cuda_backend.hpp"

namespace tollgate::local_backend {
namespace {
constexpr const char* kNotBuilt =
    "this build has no CUDA backend (configure with -DENABLE_CUDA=ON; scripts/run.sh does when it finds nvcc and an NVIDIA GPU, scripts/test.sh wherever nvcc is)";
}  // namespace

bool CudaBuilt() { return false; }

CudaDeviceStatus ProbeCudaDevice(int device) {
  CudaDeviceStatus s;
  s.device = device;
  s.reason = kNotBuilt;
  return s;
}

Result<std::shared_ptr<Backend>> CreateCudaBackend(const CudaBackendOptions&) {
  return Error{ErrorCode::kUnavailable, kNotBuilt};
}

}  // namespace tollgate::local_backend
