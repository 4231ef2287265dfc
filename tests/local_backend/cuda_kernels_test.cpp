// The CUDA kernels' dequantization (cuda_kernels.cu Load8, compiled for the
// host as well) against quant.cpp's DequantizeRow, value for value, for every
// weight type: runs without a GPU wherever the CUDA backend is built.
#include "../../local_backend/src/cuda_kernels.hpp"

#include "tollgate/local_backend/quant.hpp"

#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

namespace tollgate::local_backend {
namespace {

TEST(CudaKernels, DequantizationMatchesQuantCppForEveryType) {
  const struct {
    GgmlType ggml;
    cuda::WType cuda;
  } types[] = {{GgmlType::kF32, cuda::WType::kF32},   {GgmlType::kF16, cuda::WType::kF16},
               {GgmlType::kBF16, cuda::WType::kBF16}, {GgmlType::kQ8_0, cuda::WType::kQ8_0},
               {GgmlType::kQ4_0, cuda::WType::kQ4_0}, {GgmlType::kQ4_1, cuda::WType::kQ4_1},
               {GgmlType::kQ5_0, cuda::WType::kQ5_0}, {GgmlType::kQ5_1, cuda::WType::kQ5_1},
               {GgmlType::kQ4_K, cuda::WType::kQ4_K}, {GgmlType::kQ5_K, cuda::WType::kQ5_K},
               {GgmlType::kQ6_K, cuda::WType::kQ6_K}};
  constexpr int kCols = 512;
  std::mt19937 rng(11);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  for (const auto& t : types) {
    SCOPED_TRACE(GgmlTypeName(t.ggml));
    for (int row = 0; row < 20; ++row) {
      std::vector<float> src(kCols);
      for (float& v : src) v = dist(rng) * (row % 3 == 0 ? 0.01f : 1.0f);
      // 8-byte aligned, as rows are on the device.
      std::vector<uint64_t> bytes((RowBytes(t.ggml, kCols) + 7) / 8);
      QuantizeRow(t.ggml, src.data(), bytes.data(), kCols);
      std::vector<float> want(kCols), got(kCols);
      DequantizeRow(t.ggml, bytes.data(), want.data(), kCols);
      cuda::DequantRowOnHost(t.cuda, bytes.data(), kCols, got.data());
      for (int i = 0; i < kCols; ++i) {
        ASSERT_EQ(std::memcmp(&got[i], &want[i], sizeof(float)), 0)
            << "value " << i << " of row " << row << ": " << got[i] << ", want " << want[i];
      }
    }
  }
}

}  // namespace
}  // namespace tollgate::local_backend
