#include "cpu_kernels.hpp"

#include <cmath>

namespace tollgate::local_backend::cpu {

#if defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define TOLLGATE_TSAN 1
#endif
#endif
#if defined(__SANITIZE_THREAD__)
#define TOLLGATE_TSAN 1
#endif

// The ifunc resolver runs during relocation, before ThreadSanitizer's runtime
// is up, and crashes when instrumented: TSan builds use the baseline kernel.
#if defined(__x86_64__) && defined(__ELF__) && defined(__GNUC__) && \
    !defined(TOLLGATE_LOCAL_BACKEND_NO_MULTIVERSION) && !defined(TOLLGATE_TSAN)
#define TOLLGATE_TARGET_CLONES \
  __attribute__((target_clones("default", "arch=x86-64-v3", "arch=x86-64-v4")))
#else
#define TOLLGATE_TARGET_CLONES
#endif

namespace {

TOLLGATE_TARGET_CLONES
void MatMulImpl(float* out, const float* w, const float* x, int batch, int rows, int cols) {
  for (int r = 0; r < rows; ++r) {
    const float* row = w + static_cast<long>(r) * cols;
    for (int b = 0; b < batch; ++b) {
      const float* v = x + static_cast<long>(b) * cols;
      // 16 independent partial sums: lets the compiler keep them in vector
      // registers without reassociating a single sum.
      float acc[16] = {};
      int i = 0;
      for (; i + 16 <= cols; i += 16) {
        for (int k = 0; k < 16; ++k) acc[k] += row[i + k] * v[i + k];
      }
      for (int k = 0; i < cols; ++i, ++k) acc[k] += row[i] * v[i];
      float s = 0.0f;
      for (int k = 0; k < 16; ++k) s += acc[k];
      out[static_cast<long>(b) * rows + r] = s;
    }
  }
}

}  // namespace

float Dot(const float* a, const float* b, int n) {
  float out;
  MatMulImpl(&out, a, b, 1, 1, n);
  return out;
}

void MatMul(float* out, const float* w, const float* x, int batch, int rows, int cols) {
  MatMulImpl(out, w, x, batch, rows, cols);
}

void RmsNorm(float* out, const float* x, const float* weight, int n, float eps) {
  float ss = 0.0f;
  for (int i = 0; i < n; ++i) ss += x[i] * x[i];
  ss /= static_cast<float>(n);
  ss += eps;
  const float scale = 1.0f / std::sqrt(ss);
  for (int i = 0; i < n; ++i) out[i] = weight[i] * (scale * x[i]);
}

}  // namespace tollgate::local_backend::cpu
