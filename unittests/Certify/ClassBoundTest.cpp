//===- ClassBoundTest.cpp - the static certificate over class envelopes ---===//
//
// maximizeOverEnvelope against brute force, and computeClassBound against
// real attention on quantized caches whose position-class masses, query
// magnitudes and ranges stay inside the envelopes it is given: zero
// violations, tightness printed.
//
//===----------------------------------------------------------------------===//

#include "kvprec/Certify/PlanCertifier.h"

#include "kvprec/Analysis/Bound.h"
#include "kvprec/Analysis/Quantizer.h"
#include "gtest/gtest.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>

using namespace kvprec;
using namespace kvprec::certify;
namespace an = kvprec::analysis;

TEST(MaximizeOverEnvelope, MatchesVertexEnumeration) {
  std::mt19937 rng(7);
  std::uniform_real_distribution<double> unit(0.0, 1.0);
  for (int trial = 0; trial < 500; ++trial) {
    int n = 1 + trial % 4;
    std::vector<double> masses(n), values(n);
    for (int c = 0; c < n; ++c) {
      masses[c] = unit(rng);
      values[c] = unit(rng) * 10;
    }
    double result = maximizeOverEnvelope(masses, values);
    double total = 0;
    for (double m : masses)
      total += m;
    if (total < 1.0) {
      EXPECT_DOUBLE_EQ(result, *std::max_element(values.begin(), values.end()));
      continue;
    }
    // The LP optimum sits at a vertex: all classes but one at 0 or their
    // cap, the remaining one taking what is left. Enumerate them.
    double best = 0;
    for (int free = 0; free < n; ++free)
      for (int mask = 0; mask < (1 << n); ++mask) {
        double used = 0, value = 0;
        for (int c = 0; c < n; ++c)
          if (c != free && (mask >> c & 1)) {
            used += masses[c];
            value += masses[c] * values[c];
          }
        double rest = 1.0 - used;
        if (rest < -1e-12 || rest > masses[free] + 1e-12)
          continue;
        best = std::max(best, value + std::max(rest, 0.0) * values[free]);
      }
    EXPECT_NEAR(result, best, 1e-9 * (1 + best)) << "trial " << trial;
  }
}

namespace {
/// A random cache of T positions split into classes, quantized per class.
struct Trial {
  size_t d, T;
  std::vector<int> classOf; // Per position.
  an::Matrix K, V;
  std::vector<double> q;
};
} // namespace

TEST(ClassBound, HoldsOnQuantizedCachesWithinTheEnvelopes) {
  std::mt19937 rng(1234);
  std::normal_distribution<double> normal(0.0, 1.0);
  std::uniform_real_distribution<double> unit(0.0, 1.0);
  const an::StorageKind kinds[] = {an::StorageKind::Int8, an::StorageKind::Int4,
                                   an::StorageKind::F8E4M3FN,
                                   an::StorageKind::F16, an::StorageKind::Int2};
  an::DequantizerConfig dequantizer;
  int cases = 0, violations = 0;
  double maxRatio = 0;
  for (int trial = 0; trial < 300; ++trial) {
    size_t d = 8 << (trial % 3), T = 24 + trial % 40;
    int numClasses = 3;
    // Classes: a sink, a body and a window, as positions.
    std::vector<int> classOf(T);
    for (size_t t = 0; t < T; ++t)
      classOf[t] = t < 4 ? 0 : (t + 8 >= T ? 1 : 2);
    double qScale = 0.5 + 3.0 * unit(rng), kScale = 1 + 4 * unit(rng);
    std::vector<double> q(d);
    for (double &x : q)
      x = qScale * normal(rng);
    an::Matrix K(T, d), V(T, d);
    for (size_t t = 0; t < T; ++t)
      for (size_t j = 0; j < d; ++j) {
        K(t, j) = kScale * normal(rng);
        V(t, j) = normal(rng);
      }
    // One format per class, for K and for V.
    an::StorageFormat keyFormat[3], valueFormat[3];
    for (int c = 0; c < numClasses; ++c) {
      auto pick = [&](bool channel) {
        an::StorageKind kind = kinds[rng() % 5];
        if (!an::isScaledKind(kind))
          return an::StorageFormat::unscaled(kind);
        return an::StorageFormat::scaled(
            kind,
            an::isFp8Kind(kind) ? an::QuantScheme::Symmetric
                                : an::QuantScheme::Asymmetric,
            an::Granularity::TokenGroup, channel ? 4 : d, an::StorageKind::F32);
      };
      keyFormat[c] = pick(true);
      valueFormat[c] = pick(false);
    }
    // Quantize each class and take the per-class statistics the analysis
    // would have from calibration: the channel ranges of the class.
    an::Matrix Kq(T, d), Vq(T, d);
    std::vector<an::PositionClassEnvelope> classes(numClasses);
    std::vector<double> span(d, 0.0);
    for (size_t j = 0; j < d; ++j) {
      double lo = 1e300, hi = -1e300;
      for (size_t t = 0; t < T; ++t) {
        lo = std::min(lo, V(t, j));
        hi = std::max(hi, V(t, j));
      }
      span[j] = hi - lo;
    }
    bool ok = true;
    for (int c = 0; c < numClasses && ok; ++c) {
      std::vector<size_t> rows;
      for (size_t t = 0; t < T; ++t)
        if (classOf[t] == c)
          rows.push_back(t);
      an::Matrix Kc(rows.size(), d), Vc(rows.size(), d);
      an::BlockStatistics keyStats, valueStats;
      keyStats.numTokens = valueStats.numTokens = rows.size();
      keyStats.channelRanges.assign(d, {1e300, -1e300});
      valueStats.channelRanges.assign(d, {1e300, -1e300});
      for (size_t r = 0; r < rows.size(); ++r)
        for (size_t j = 0; j < d; ++j) {
          Kc(r, j) = K(rows[r], j);
          Vc(r, j) = V(rows[r], j);
          auto grow = [](an::ValueRange &range, double x) {
            range.min = std::min(range.min, x);
            range.max = std::max(range.max, x);
          };
          grow(keyStats.channelRanges[j], Kc(r, j));
          grow(valueStats.channelRanges[j], Vc(r, j));
        }
      // Values go through f32 storage in the quantizer; use f32 data.
      for (double &x : Kc.values)
        x = static_cast<float>(x);
      for (double &x : Vc.values)
        x = static_cast<float>(x);
      an::QuantizedMatrix kq, vq;
      ok = an::quantizeMatrix(keyFormat[c], Kc, dequantizer, kq).ok() &&
           an::quantizeMatrix(valueFormat[c], Vc, dequantizer, vq).ok();
      for (size_t r = 0; ok && r < rows.size(); ++r)
        for (size_t j = 0; j < d; ++j) {
          Kq(rows[r], j) = kq.dequantized(r, j);
          Vq(rows[r], j) = vq.dequantized(r, j);
          K(rows[r], j) = Kc(r, j);
          V(rows[r], j) = Vc(r, j);
        }
      std::vector<double> queryBound(d);
      for (size_t j = 0; j < d; ++j)
        queryBound[j] = std::fabs(q[j]);
      double logitError = 0;
      ok = ok && an::computeKeyBlockLogitError(keyFormat[c], keyStats,
                                               queryBound, dequantizer,
                                               logitError)
                     .ok();
      std::vector<double> valueErrors;
      ok = ok && an::computeBlockChannelErrorBounds(valueFormat[c], valueStats,
                                                    dequantizer, valueErrors)
                     .ok();
      classes[c].maxLogitError = logitError;
      classes[c].maxValueError = valueErrors;
    }
    if (!ok)
      continue; // A format that cannot hold this data (e.g. fp8 range).
    an::AttentionResult exact = an::computeAttention(q, K, V);
    an::AttentionResult approx = an::computeAttention(q, Kq, Vq);
    // The envelope: each class's true mass, widened by a random margin.
    for (int c = 0; c < numClasses; ++c) {
      double mass = 0;
      for (size_t t = 0; t < T; ++t)
        if (classOf[t] == c)
          mass += exact.weights[t];
      classes[c].attentionMass = std::min(1.0, mass * (1 + unit(rng)) + 1e-3);
    }
    an::StaticCertifiedBound bound;
    ASSERT_TRUE(computeClassBound(classes, span, bound).ok());
    double error = 0;
    for (size_t j = 0; j < d; ++j)
      error = std::max(error, std::fabs(approx.output[j] - exact.output[j]));
    ++cases;
    if (error > bound.infNorm)
      ++violations;
    if (bound.infNorm > 0)
      maxRatio = std::max(maxRatio, error / bound.infNorm);
  }
  std::printf("[class bound] %d cases, %d violations, max measured/bound %.3f\n",
              cases, violations, maxRatio);
  EXPECT_GT(cases, 200);
  EXPECT_EQ(violations, 0);
}
