// CPU compute kernels of the local engine. Internal to local_backend.
//
// One kernel source (kernels_impl.inc) is compiled three times against a small
// SIMD layer: for the baseline ISA with portable scalar primitives
// (kernels_generic.cpp, simd_generic.hpp), with -mavx2 -mfma -mf16c
// (kernels_avx2.cpp) and with AVX-512 F/BW/VL/VNNI in addition
// (kernels_avx512.cpp; its int8 dot products use VPDPBUSD). The scalar
// primitives reproduce the vector ones bit for bit, so all three tables return
// identical floats for identical inputs: tests compare the vector kernels with
// the generic ones exactly, and the backend checks each vector table against
// the generic one when it is created (MatchesGeneric; a table that disagrees
// is not used). AMX is never used. The table is chosen at run time from CPUID
// (KernelsFor / BestIsa).
//
// Shapes: matrix-vector products (1..3 tokens) stream the weights once with
// software prefetch one row group ahead; matrix-matrix products (prefill,
// batches) run register tiles of rows x tokens (per type, kernels_impl.inc)
// so each weight block is unpacked once per tile. Activations are converted to
// the weight type's format (ActFormatFor) once per product, by the backend.
//
// Summation order (the contract every table implements):
//   - float weights (F32, F16, BF16) x float activations: 8 lane partial sums,
//     lane l accumulating elements k = 8i + l with fused multiply-add, then the
//     fixed tree ((a0+a4) + (a2+a6)) + ((a1+a5) + (a3+a7)), then the tail
//     (k >= 8 * floor(n / 8)) summed by fmaf from 0 and added last;
//   - Q8_0 weights x Q8_0 activations: per 32-block the exact int32 sums of
//     the 8 groups of 4 products, scaled by fp16(d_w) * fp16(d_x) and
//     fused-added into 8 float lanes; the same tree at the end. This is ggml's
//     AVX2 `ggml_vec_dot_q8_0_q8_0` (so the engine reproduces llama.cpp's Q8_0
//     outputs), and the Q8_0 activation quantizer is ggml's AVX2
//     `quantize_row_q8_0` (scale 127 / amax, round half to even);
//   - Q5_0 weights (repacked, RepackQ5_0x8) x Q8_0 activations: as Q8_0, on
//     the values q - 16 (ggml's AVX2 `ggml_vec_dot_q5_0_q8_0`): per row the
//     same 8 lanes, block sums, fused steps and tree, only computed for 8 rows
//     at once with the rows in the lanes (kernels_impl.inc Q5_0x8Tile), so the
//     results are those of the file-layout kernel this replaced, bit for bit;
//   - Q4_1 and Q5_1 weights x Q8_0 activations (ggml's
//     `ggml_vec_dot_{q4_1,q5_1}_q8_1`, with our Q8_0 rows and their block sums
//     in place of Q8_1): per block the exact int32 lane sums of q_w * q_x fused
//     into 8 float lanes with fp16(d_w) * fp16(d_x) as Q8_0, and the minimum's
//     term fused block after block into one float from 0:
//     m = fma(fp16(m_w), fp16(d_x) * float(sum q_x), m); the result is the
//     lane tree plus m. (ggml rounds d_x * sum q_x to fp16 in Q8_1's `s`; we
//     do not, so these two types differ from llama.cpp in the last bits.)
//   - Q4_0 weights (repacked, RepackQ4_0x8) x Q8_0 activations: one float per
//     output, acc = fma(fp16(d_w) * fp16(d_x), exact int32 block sum, acc)
//     block after block from 0;
//   - Q4_K, Q5_K and Q6_K x Q8_K: exact int32 lane sums per 256-superblock
//     (scales applied in integers, as ggml's AVX2 kernels), fused into 8 float
//     lanes with d_w * d_x, Q4_K/Q5_K minimums fused after with
//     -(dmin_w * d_x); Q8_K activations are ggml's `quantize_row_q8_K_ref`.
// A result never depends on how many rows or tokens a call covers, so batched
// prefill gives the same logits as one token at a time.
#pragma once

#include "kernel_table.hpp"
#include "tollgate/local_backend/gguf.hpp"

#include <cstddef>
#include <cstdint>

namespace tollgate::local_backend::cpu {

const char* IsaName(Isa isa);

// Format for `weight` (F32/F16/BF16 -> F32; Q8_0/Q4_0/Q4_1/Q5_0/Q5_1 -> Q8_0;
// K-quants -> Q8_K).
ActFormat ActFormatFor(GgmlType weight);
// Bytes of one activation row of `cols` values (cols a multiple of the block size).
size_t ActRowBytes(ActFormat format, int cols);

// GemmSlot for `type`, or -1 when no kernel multiplies `type`.
int GemmIndex(GgmlType type);

// Whether this CPU (and OS, for the register state) can run `isa`.
bool CpuSupports(Isa isa);
// The widest table this CPU supports and the build has.
Isa BestIsa();
// The table for `isa`; nullptr when unsupported by the CPU or absent from the build.
const Kernels* KernelsFor(Isa isa);

// Q4_0 weights as the kernels read them: groups of 8 rows, block by block
// (kernel_table.hpp Q4_0x8Block), the same bytes per row as Q4_0, so a group
// starting at row r (r a multiple of 8) sits at r * RowBytes(Q4_0, cols). The
// last group is padded by repeating the last row; `dst` must hold
// RepackedQ4_0Bytes(rows, cols).
size_t RepackedQ4_0Bytes(int rows, int cols);
void RepackQ4_0x8(const std::byte* src, int rows, int cols, std::byte* dst, int first_group, int groups);
// Row `row` of a repacked tensor at `base`, dequantized exactly as DequantizeRow.
void DequantizeQ4_0x8Row(const std::byte* base, int row, int cols, float* out);

// Q5_0 weights likewise (kernel_table.hpp Q5_0x8Block): groups of 8 rows,
// block by block, each block the 8 scales, the 8 rows' fifth bits (inverted,
// bit m of byte 4r + e for value 4m + e) and their nibbles as Q4_0x8; the same
// bytes per row as Q5_0, so a group starting at row r sits at
// r * RowBytes(Q5_0, cols). The last group is padded by repeating the last
// row; `dst` must hold RepackedQ5_0Bytes(rows, cols).
size_t RepackedQ5_0Bytes(int rows, int cols);
void RepackQ5_0x8(const std::byte* src, int rows, int cols, std::byte* dst, int first_group, int groups);
// Row `row` of a repacked tensor at `base`, dequantized exactly as DequantizeRow.
void DequantizeQ5_0x8Row(const std::byte* base, int row, int cols, float* out);

// Runs every kernel of `k` and of GenericKernels() on the same pseudo-random
// inputs and returns whether all results are bit-identical (about a
// millisecond). The backend checks a vector table with it before using it.
bool MatchesGeneric(const Kernels& k);

// RMSNorm (Zhang & Sennrich 2019): out[i] = (x[i] * s) * w[i] (w may be null:
// weight 1), s = 1 / sqrtf(float(sum x^2 in double) / n + eps), as ggml's
// `ggml_compute_forward_rms_norm_f32` followed by its multiply. out may alias x.
void RmsNorm(const float* x, const float* w, int n, float eps, float* out);

// Fast exp used by softmax and SiLU, in scalar form (bit-identical to the
// vector kernels): Cephes expf polynomial on a Cody-Waite reduced argument,
// inputs clamped to [-87.3, 88.7]; relative error below 2e-7.
float ExpApprox(float x);

}  // namespace tollgate::local_backend::cpu
