//===- StreamingCertificateTest.cpp - the one-pass run-time certificate ---===//

#include "kvprec/Analysis/StreamingCertificate.h"
#include "kvprec/Analysis/Quantizer.h"

#include "AttentionTestUtil.h"

#include <gtest/gtest.h>

using namespace kvprec::analysis;
using namespace kvprec::analysis::test;

namespace {

/// The f32 arithmetic of the generated attention: tiles of `block` rows,
/// each with its own maximum, sum and accumulator, combined once.
std::vector<double> runTiledF32Kernel(const std::vector<double> &q,
                                      const Matrix &K, const Matrix &V,
                                      float scale, size_t block) {
  const size_t T = K.rows, d = K.cols, dv = V.cols;
  struct Tile {
    float max = -INFINITY, sum = 0.0f;
    std::vector<float> acc;
  };
  std::vector<Tile> tiles;
  for (size_t begin = 0; begin < T; begin += block) {
    size_t end = std::min(T, begin + block);
    Tile tile;
    tile.acc.assign(dv, 0.0f);
    std::vector<float> s(end - begin);
    for (size_t t = begin; t < end; ++t) {
      float dot = 0.0f;
      for (size_t j = 0; j < d; ++j)
        dot += float(q[j]) * float(K(t, j));
      s[t - begin] = dot * scale;
      tile.max = std::max(tile.max, s[t - begin]);
    }
    for (size_t t = begin; t < end; ++t) {
      float p = std::exp(s[t - begin] - tile.max);
      tile.sum += p;
      for (size_t j = 0; j < dv; ++j)
        tile.acc[j] = std::fma(p, float(V(t, j)), tile.acc[j]);
    }
    tiles.push_back(std::move(tile));
  }
  float M = -INFINITY;
  for (const Tile &tile : tiles)
    M = std::max(M, tile.max);
  float Z = 0.0f;
  std::vector<float> acc(dv, 0.0f);
  for (const Tile &tile : tiles) {
    float w = std::exp(tile.max - M);
    Z += w * tile.sum;
    for (size_t j = 0; j < dv; ++j)
      acc[j] = std::fma(w, tile.acc[j], acc[j]);
  }
  std::vector<double> out(dv);
  for (size_t j = 0; j < dv; ++j)
    out[j] = acc[j] / Z;
  return out;
}

StorageFormat randomFormat(Rng &rng, size_t d) {
  const StorageKind kinds[] = {StorageKind::F32,    StorageKind::F16,
                               StorageKind::BF16,   StorageKind::F8E4M3FN,
                               StorageKind::F8E5M2, StorageKind::Int8,
                               StorageKind::Int4,   StorageKind::Int2};
  StorageKind kind = kinds[uniformIndex(rng, 0, 7)];
  if (kind == StorageKind::F32 || kind == StorageKind::F16 ||
      kind == StorageKind::BF16)
    return StorageFormat::unscaled(kind);
  QuantScheme scheme = isFp8Kind(kind) || uniformIndex(rng, 0, 1)
                           ? QuantScheme::Symmetric
                           : QuantScheme::Asymmetric;
  unsigned group = unsigned(std::min<size_t>(d, 8u << uniformIndex(rng, 0, 2)));
  return StorageFormat::scaled(kind, scheme, Granularity::TokenGroup, group,
                               uniformIndex(rng, 0, 1) ? StorageKind::F16
                                                       : StorageKind::F32);
}

} // namespace

// The streaming form only relaxes the refined run-time certificate plus
// the kernel term, and still bounds what an f32 tiled kernel computes from
// the stored cache against exact attention on the original keys and values.
TEST(StreamingCertificateTest, BoundsTiledF32KernelAndDominatesRefinedForm) {
  Rng rng(29);
  TightnessTracker measured, refined;
  for (int c = 0; c < 400; ++c) {
    size_t d = randomHeadDim(rng), T = randomLength(rng, 1, 1500);
    std::vector<double> q =
        randomQuery(rng, d, std::pow(10.0, uniform(rng, -0.5, 0.8)));
    Matrix K = randomCache(rng, T, d, 1.0, 0.02, 5.0);
    Matrix V = randomCache(rng, T, d, 1.0, 0.02, 5.0,
                           c % 3 ? 0.0 : uniform(rng, -5.0, 5.0));
    StorageFormat kFormat = randomFormat(rng, d),
                  vFormat = randomFormat(rng, d);
    QuantizedMatrix Kq, Vq;
    ASSERT_TRUE(quantizeMatrix(kFormat, K, {}, Kq).ok());
    ASSERT_TRUE(quantizeMatrix(vFormat, V, {}, Vq).ok());
    const double scale = double(float(1.0 / std::sqrt(double(d))));
    // The refined forms use 1/sqrt(d); give them the query scaled so that
    // both see the same logits.
    std::vector<double> scaled(q);
    for (double &x : scaled)
      x *= scale * std::sqrt(double(d));
    KernelRoundingModel model;
    model.numRescales = 1;
    StreamingCertificate streaming;
    ASSERT_TRUE(computeStreamingCertificate(q, Kq.dequantized, Vq.dequantized,
                                            Kq.errorBounds, Vq.errorBounds,
                                            scale, model, streaming)
                    .ok());
    RuntimeCertificate runtime;
    ASSERT_TRUE(computeRuntimeCertificate(scaled, Kq.dequantized,
                                          Vq.dequantized, Kq.errorBounds,
                                          Vq.errorBounds, runtime)
                    .ok());
    KernelRoundingBound kernel;
    ASSERT_TRUE(computeKernelRoundingBound(scaled, Kq.dequantized,
                                           Vq.dequantized, model, kernel)
                    .ok());
    std::vector<double> out =
        runTiledF32Kernel(q, Kq.dequantized, Vq.dequantized, float(scale),
                          size_t(16) << uniformIndex(rng, 0, 3));
    AttentionResult exact = computeAttention(scaled, K, V);
    for (size_t j = 0; j < d; ++j) {
      measured.record(std::fabs(out[j] - exact.output[j]),
                      streaming.perComponent[j], referenceSlack(V));
      double tighter = runtime.perComponent[j] + kernel.perComponent[j];
      refined.record(tighter, streaming.storage[j] + streaming.kernel[j],
                     1e-12 * (1 + tighter));
      EXPECT_LE(streaming.perComponent[j], streaming.hull[j]);
      EXPECT_GE(streaming.kernel[j], 0.0);
    }
  }
  measured.print("streaming certificate vs tiled f32 kernel");
  refined.print("refined certificate vs streaming form");
  EXPECT_EQ(measured.violations, 0u);
  EXPECT_EQ(refined.violations, 0u);
  // The relaxations cost little on these caches: the refined form is
  // within a factor of 3 of the streaming one on average.
  EXPECT_GT(refined.sumRatio / double(refined.numRatios), 0.33);
}

TEST(StreamingCertificateTest, ExactCacheLeavesOnlyKernelRounding) {
  Rng rng(3);
  std::vector<double> q = randomQuery(rng, 16, 1.0);
  Matrix K = randomCache(rng, 40, 16, 1.0), V = randomCache(rng, 40, 16, 1.0);
  Matrix zero(40, 16);
  StreamingCertificate result;
  ASSERT_TRUE(computeStreamingCertificate(q, K, V, zero, zero, 0.25,
                                          KernelRoundingModel(), result)
                  .ok());
  for (size_t j = 0; j < 16; ++j) {
    EXPECT_EQ(result.storage[j], 0.0);
    EXPECT_GT(result.kernel[j], 0.0);
    EXPECT_LT(result.kernel[j], 1e-4);
  }
}

TEST(StreamingCertificateTest, BadInputsAreReported) {
  std::vector<double> q(4, 1.0);
  Matrix K(3, 4), V(3, 4), dK(3, 4), dV(3, 4), wrong(2, 4);
  StreamingCertificate result;
  KernelRoundingModel model;
  EXPECT_TRUE(
      computeStreamingCertificate(q, K, V, dK, dV, 0.5, model, result).ok());
  EXPECT_FALSE(
      computeStreamingCertificate(q, K, V, wrong, dV, 0.5, model, result).ok());
  Status s = computeStreamingCertificate(q, K, V, dK, dV, 0.0, model, result);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.getMessage().find("softmax scale"), std::string::npos);
  dV(1, 1) = -1.0;
  EXPECT_FALSE(
      computeStreamingCertificate(q, K, V, dK, dV, 0.5, model, result).ok());
  model.unitRoundoff = 0.0;
  dV(1, 1) = 0.0;
  EXPECT_FALSE(
      computeStreamingCertificate(q, K, V, dK, dV, 0.5, model, result).ok());
}
