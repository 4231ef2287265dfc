// CPU float32 kernels used by LlamaContext. Internal to local_backend.
//
// Summation order is fixed by the code (16 interleaved partial sums, then a
// sequential reduction), not by the instruction set: the x86-64 builds carry
// AVX2 and AVX-512 clones selected at load time (GCC/Clang target_clones), and
// because the build does not contract a*b+c into FMA (ISO mode,
// -ffp-contract=off), every clone returns bit-identical results.
#pragma once

namespace tollgate::local_backend::cpu {

// sum_i a[i] * b[i], n >= 0.
float Dot(const float* a, const float* b, int n);

// out[b * rows + r] = Dot(w + r * cols, x + b * cols, cols) for b < batch, r < rows.
// w is row-major (rows x cols); x is batch x cols; out is batch x rows.
void MatMul(float* out, const float* w, const float* x, int batch, int rows, int cols);

// out[i] = weight[i] * x[i] / sqrt(mean(x^2) + eps) (RMSNorm; out may alias x).
void RmsNorm(float* out, const float* x, const float* weight, int n, float eps);

}  // namespace tollgate::local_backend::cpu
