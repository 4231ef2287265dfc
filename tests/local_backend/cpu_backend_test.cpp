// The CPU backend's operations (backend.hpp) against direct float64
// computations, and its preparation errors.
#include "tollgate/local_backend/backend.hpp"
#include "tollgate/local_backend/quant.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

namespace tollgate::local_backend {
namespace {

std::shared_ptr<Backend> Cpu(int threads = 2) {
  CpuBackendOptions o;
  o.threads = threads;
  return CreateCpuBackend(o).value();
}

std::vector<float> Randoms(std::mt19937& rng, size_t n) {
  std::normal_distribution<float> d;
  std::vector<float> v(n);
  for (float& f : v) f = d(rng);
  return v;
}

TEST(CpuBackend, OptionsAreChecked) {
  CpuBackendOptions bad;
  bad.threads = -1;
  EXPECT_FALSE(CreateCpuBackend(bad));
  CpuBackendOptions isa;
  isa.isa = "sse9";
  auto r = CreateCpuBackend(isa);
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find("'sse9'"), std::string::npos);
  CpuBackendOptions generic;
  generic.isa = "generic";
  generic.threads = 3;
  auto g = CreateCpuBackend(generic);
  ASSERT_TRUE(g);
  EXPECT_EQ((*g)->Name(), "cpu generic x3 threads");
}

TEST(CpuBackend, PrepareWeightRejectsWhatItCannotCompute) {
  auto be = Cpu();
  std::vector<std::byte> bytes(static_cast<size_t>(RowBytes(GgmlType::kQ8_0, 64)) * 2);
  WeightData d{"w", GgmlType::kQ8_1, 2, 64, bytes};
  auto r = be->PrepareWeight(d);
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find("tensor w has type Q8_1"), std::string::npos) << r.error().message;
  d.type = GgmlType::kQ4_K;  // rows of 64 cannot hold 256-value superblocks
  r = be->PrepareWeight(d);
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find("not a multiple of Q4_K's block of 256"), std::string::npos) << r.error().message;
  d.type = GgmlType::kQ8_0;
  d.bytes = std::span<const std::byte>(bytes.data(), bytes.size() - 1);
  EXPECT_FALSE(be->PrepareWeight(d));
  d.bytes = bytes;
  auto ok = be->PrepareWeight(d);
  ASSERT_TRUE(ok);
  EXPECT_EQ((*ok)->owned_bytes(), 0u);  // used in place
}

// Q4_0 and Q5_0 are repacked at load into an interleaved copy of the same
// bytes per row, padded to whole groups of 8 rows.
TEST(CpuBackend, Q4_0AndQ5_0WeightsOwnARepackedCopy) {
  auto be = Cpu();
  for (GgmlType type : {GgmlType::kQ4_0, GgmlType::kQ5_0}) {
    const int rows = 13, cols = 96;
    std::vector<std::byte> bytes(static_cast<size_t>(RowBytes(type, cols)) * rows);
    auto w = be->PrepareWeight({"w", type, rows, cols, bytes});
    ASSERT_TRUE(w) << GgmlTypeName(type);
    EXPECT_EQ((*w)->owned_bytes(), static_cast<size_t>(RowBytes(type, cols)) * 16) << GgmlTypeName(type);
  }
}

TEST(CpuBackend, GetRowsDequantizesExactly) {
  auto be = Cpu();
  std::mt19937 rng(1);
  for (GgmlType type : {GgmlType::kF32, GgmlType::kF16, GgmlType::kBF16, GgmlType::kQ8_0, GgmlType::kQ4_0,
                        GgmlType::kQ4_1, GgmlType::kQ5_0, GgmlType::kQ5_1, GgmlType::kQ4_K, GgmlType::kQ5_K,
                        GgmlType::kQ6_K}) {
    const int rows = 7, cols = 512;
    const size_t rb = static_cast<size_t>(RowBytes(type, cols));
    std::vector<std::byte> bytes(rb * rows);
    for (int r = 0; r < rows; ++r) QuantizeRow(type, Randoms(rng, cols).data(), bytes.data() + r * rb, cols);
    auto w = be->PrepareWeight({"t", type, rows, cols, bytes}).value();
    auto buf = be->AllocActivations(3 * cols);
    ActTensor out = buf->Tensor(0, 3, cols);
    const int32_t ids[] = {6, 0, 3};
    be->GetRows(*w, ids, out);
    std::vector<float> want(cols);
    for (int i = 0; i < 3; ++i) {
      DequantizeRow(type, bytes.data() + static_cast<size_t>(ids[i]) * rb, want.data(), cols);
      for (int c = 0; c < cols; ++c) ASSERT_EQ(out.data[i * cols + c], want[c]) << GgmlTypeName(type);
    }
  }
}

TEST(CpuBackend, MatMulRunsSeveralWeightsOnOneInput) {
  auto be = Cpu(2);
  std::mt19937 rng(2);
  const int cols = 512, tokens = 5;
  struct W {
    GgmlType type;
    int rows;
    std::vector<std::byte> bytes;
    std::unique_ptr<BackendWeight> weight;
  };
  std::vector<W> ws;
  // Q4_0, Q5_0 and Q5_1 share one Q8_0 copy of the input.
  for (auto [type, rows] : {std::pair{GgmlType::kQ4_0, 40}, {GgmlType::kQ5_0, 19}, {GgmlType::kQ5_1, 21},
                            {GgmlType::kQ4_K, 24}, {GgmlType::kF16, 33}}) {
    W w{type, rows, std::vector<std::byte>(static_cast<size_t>(RowBytes(type, cols)) * rows), nullptr};
    for (int r = 0; r < rows; ++r) {
      QuantizeRow(type, Randoms(rng, cols).data(), w.bytes.data() + r * RowBytes(type, cols), cols);
    }
    w.weight = be->PrepareWeight({"w", type, rows, cols, w.bytes}).value();
    ws.push_back(std::move(w));
  }
  const int all_rows = 200;  // at least the sum of the weights' rows
  auto buf = be->AllocActivations(tokens * cols + 2 * tokens * all_rows);
  ActTensor x = buf->Tensor(0, tokens, cols);
  const std::vector<float> xv = Randoms(rng, tokens * cols);
  std::copy(xv.begin(), xv.end(), x.data);
  std::vector<ActTensor> together, alone;
  size_t offset = tokens * cols;
  for (const W& w : ws) {
    together.push_back(buf->Tensor(offset, tokens, w.rows));
    alone.push_back(buf->Tensor(offset + tokens * all_rows, tokens, w.rows));
    offset += static_cast<size_t>(tokens) * w.rows;
  }
  std::vector<MatMulTarget> targets;
  for (size_t i = 0; i < ws.size(); ++i) targets.push_back({ws[i].weight.get(), together[i], false});
  be->MatMul(x, targets);
  for (size_t i = 0; i < ws.size(); ++i) {
    const MatMulTarget one[] = {{ws[i].weight.get(), alone[i], false}};
    be->MatMul(x, one);
    for (int j = 0; j < tokens * ws[i].rows; ++j) ASSERT_EQ(together[i].data[j], alone[i].data[j]);
    const MatMulTarget acc[] = {{ws[i].weight.get(), alone[i], true}};
    be->MatMul(x, acc);
    for (int j = 0; j < tokens * ws[i].rows; ++j) ASSERT_EQ(alone[i].data[j], together[i].data[j] + together[i].data[j]);
  }
}

TEST(CpuBackend, RopeRotatesPairsOrHalves) {
  auto be = Cpu();
  auto buf = be->AllocActivations(2 * 16);
  const float cs[] = {0.6f, 0.8f, 0.0f, 1.0f};  // two pairs: (cos, sin)
  for (RopeMode mode : {RopeMode::kNormal, RopeMode::kNeox}) {
    ActTensor x = buf->Tensor(0, 1, 16);  // 2 heads of 8, 4 rotated dims
    for (int i = 0; i < 16; ++i) x.data[i] = static_cast<float>(i + 1);
    be->Rope(x, 2, 8, RopeTable{cs, 4}, mode);
    for (int h = 0; h < 2; ++h) {
      const float* v = x.data + 8 * h;
      const float base = static_cast<float>(8 * h + 1);
      const int a0 = 0, b0 = mode == RopeMode::kNormal ? 1 : 2, a1 = mode == RopeMode::kNormal ? 2 : 1, b1 = 3;
      EXPECT_FLOAT_EQ(v[a0], (base + a0) * 0.6f - (base + b0) * 0.8f);
      EXPECT_FLOAT_EQ(v[b0], (base + a0) * 0.8f + (base + b0) * 0.6f);
      EXPECT_FLOAT_EQ(v[a1], -(base + b1));  // rotation by 90 degrees
      EXPECT_FLOAT_EQ(v[b1], base + a1);
      for (int i = 4; i < 8; ++i) EXPECT_EQ(v[i], base + i);  // beyond the rotated dims
    }
  }
}

TEST(CpuBackend, KvPoolGrowsPageByPageUpToItsBudget) {
  auto be = Cpu();
  for (KvType type : {KvType::kF32, KvType::kF16, KvType::kQ8}) {
    KvPoolShape shape{3, 2, 64, type, 2};
    auto pool = be->CreateKvPool(shape).value();
    EXPECT_EQ(pool->allocated_pages(), 0);
    EXPECT_EQ(pool->bytes(), 0u);
    // 3 layers x (K, V) x 2 KV heads x 64 positions x one row.
    const size_t row = type == KvType::kF32 ? 256 : (type == KvType::kF16 ? 128 : 66);
    EXPECT_EQ(pool->page_bytes(), 3u * 2 * 2 * 64 * row);
    ASSERT_TRUE(pool->Grow(1));
    EXPECT_EQ(pool->bytes(), pool->page_bytes());
    ASSERT_TRUE(pool->Grow(2));
    auto over = pool->Grow(3);
    ASSERT_FALSE(over);
    EXPECT_EQ(over.error().code, ErrorCode::kInvalidArgument);
    EXPECT_EQ(pool->allocated_pages(), 2);
  }
  EXPECT_FALSE(be->CreateKvPool({3, 2, 60, KvType::kF16, 100}));  // head size not a multiple of 8
  // 8 bits per value and one half scale per row: 1.94x the rows of F16 at head size 64.
  EXPECT_NEAR(static_cast<double>(KvRowBytes(KvType::kF16, 64)) / KvRowBytes(KvType::kQ8, 64), 1.94, 0.01);
}

// What the pool holds for one row of a head: rounded to F16, or 8-bit
// quantized as the kernels do (d = half(max|x| / 127), q = round(x * (1/d))).
void RoundAsStored(KvType type, float* row, int n) {
  if (type == KvType::kF16) {
    for (int i = 0; i < n; ++i) row[i] = HalfToFloat(FloatToHalf(row[i]));
  } else if (type == KvType::kQ8) {
    float amax = 0;
    for (int i = 0; i < n; ++i) amax = std::max(amax, std::fabs(row[i]));
    const float d = HalfToFloat(FloatToHalf(amax / 127.0f));
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    for (int i = 0; i < n; ++i) {
      const float q = std::clamp(std::nearbyint(row[i] * id), -127.0f, 127.0f);
      row[i] = q * d;
    }
  }
}

// Two sequences in one call (their own pages of one pool, start positions, one
// crossing a page), grouped-query heads, against float64 attention over the
// same keys and values (rounded to F16 for the F16 cache).
TEST(CpuBackend, AttentionMatchesFloat64) {
  auto be = Cpu(2);
  std::mt19937 rng(11);
  const int heads = 4, kv_heads = 2, hd = 64, q_dim = heads * hd, kv_dim = kv_heads * hd;
  for (KvType kv_type : {KvType::kF32, KvType::kF16, KvType::kQ8}) {
    auto round = [&](std::vector<float>& kv_row) {
      for (int g = 0; g < kv_heads; ++g) RoundAsStored(kv_type, kv_row.data() + g * hd, hd);
    };
    // Pages of the two sequences interleaved in one pool, not in order.
    auto pool = be->CreateKvPool(KvPoolShape{2, kv_heads, hd, kv_type, 8}).value();
    ASSERT_TRUE(pool->Grow(8));
    const std::vector<int32_t> tables[2] = {{5, 0}, {3}};
    // Sequence s has `before[s]` earlier positions already cached, then `rows[s]` new rows.
    const int before[2] = {60, 3};
    const int rows[2] = {9, 4};
    std::vector<std::vector<float>> keys[2], values[2];  // per position, kv_dim (as the cache holds them)
    const int layer = 1;
    for (int s = 0; s < 2; ++s) {
      // Fill the earlier positions through Attention itself, one row at a time.
      auto buf = be->AllocActivations(4 * q_dim);
      for (int p = 0; p < before[s]; ++p) {
        ActTensor q = buf->Tensor(0, 1, q_dim), k = buf->Tensor(q_dim, 1, kv_dim), v = buf->Tensor(2 * q_dim, 1, kv_dim);
        ActTensor o = buf->Tensor(3 * q_dim, 1, q_dim);
        for (ActTensor* t : {&q, &k, &v}) {
          const std::vector<float> r = Randoms(rng, static_cast<size_t>(t->cols));
          std::copy(r.begin(), r.end(), t->data);
        }
        std::vector<float> kr(k.data, k.data + kv_dim), vr(v.data, v.data + kv_dim);
        round(kr);
        round(vr);
        keys[s].push_back(kr);
        values[s].push_back(vr);
        const AttentionSeq seq{tables[s], 0, 1, p};
        be->Attention(layer, *pool, q, k, v, std::span<const AttentionSeq>(&seq, 1),
                      AttentionShape{heads, kv_heads, hd, 0.125f}, o);
      }
    }
    const int total = rows[0] + rows[1];
    auto buf = be->AllocActivations(static_cast<size_t>(total) * (2 * q_dim + 2 * kv_dim));
    ActTensor q = buf->Tensor(0, total, q_dim), k = buf->Tensor(total * q_dim, total, kv_dim);
    ActTensor v = buf->Tensor(total * (q_dim + kv_dim), total, kv_dim);
    ActTensor out = buf->Tensor(total * (q_dim + 2 * kv_dim), total, q_dim);
    for (ActTensor* t : {&q, &k, &v}) {
      const std::vector<float> r = Randoms(rng, static_cast<size_t>(t->rows * t->cols));
      std::copy(r.begin(), r.end(), t->data);
    }
    const AttentionSeq seqs[2] = {{tables[0], 0, rows[0], before[0]}, {tables[1], rows[0], rows[1], before[1]}};
    be->Attention(layer, *pool, q, k, v, seqs, AttentionShape{heads, kv_heads, hd, 0.125f}, out);
    for (int s = 0; s < 2; ++s) {
      for (int i = 0; i < rows[s]; ++i) {
        const int row = seqs[s].first_row + i;
        std::vector<float> kr(k.data + row * kv_dim, k.data + (row + 1) * kv_dim);
        std::vector<float> vr(v.data + row * kv_dim, v.data + (row + 1) * kv_dim);
        round(kr);
        round(vr);
        keys[s].push_back(kr);
        values[s].push_back(vr);
      }
      for (int i = 0; i < rows[s]; ++i) {
        const int row = seqs[s].first_row + i;
        const int n = before[s] + i + 1;
        for (int h = 0; h < heads; ++h) {
          const int g = h / (heads / kv_heads);
          std::vector<double> sc(static_cast<size_t>(n));
          double mx = -1e300, sum = 0;
          for (int p = 0; p < n; ++p) {
            double d = 0;
            for (int j = 0; j < hd; ++j) d += static_cast<double>(q.data[row * q_dim + h * hd + j]) * keys[s][p][g * hd + j];
            sc[p] = d * 0.125;
            mx = std::max(mx, sc[p]);
          }
          for (double& e : sc) sum += (e = std::exp(e - mx));
          for (int j = 0; j < hd; ++j) {
            double o = 0;
            for (int p = 0; p < n; ++p) o += sc[p] / sum * values[s][p][g * hd + j];
            ASSERT_NEAR(out.data[row * q_dim + h * hd + j], o, 2e-5)
                << KvTypeName(kv_type) << " seq " << s << " row " << i << " head " << h;
          }
        }
      }
    }
  }
}

}  // namespace
}  // namespace tollgate::local_backend
