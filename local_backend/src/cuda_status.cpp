// CudaDeviceStatus::Describe, shared by the CUDA build and the stub.
#include "tollgate/local_backend/cuda_backend.hpp"

#include <cstdio>

namespace tollgate::local_backend {

std::string CudaDeviceStatus::Describe() const {
  if (!usable) return "no CUDA device: " + reason;
  char buf[192];
  std::snprintf(buf, sizeof buf, "%s (cuda:%d, sm_%d%d, %.1f GiB free of %.1f GiB)", name.c_str(), device,
                compute_major, compute_minor, static_cast<double>(free_bytes) / (1 << 30),
                static_cast<double>(total_bytes) / (1 << 30));
  return buf;
}

}  // namespace tollgate::local_backend
