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

namespace {
/// Random keys with a few outlier channels and queries that are large in
/// different channels from one another, so that the largest |q_j| and |K_j|
/// of different channels rarely meet in one (query, key) pair.
struct KeyTrial {
  size_t d = 0, tokens = 0;
  an::Matrix keys;                        // tokens x d, f32 values.
  std::vector<std::vector<double>> queries;
};

KeyTrial makeKeyTrial(std::mt19937 &rng, size_t d, size_t tokens,
                      size_t numQueries) {
  std::normal_distribution<double> normal(0.0, 1.0);
  std::uniform_real_distribution<double> unit(0.0, 1.0);
  KeyTrial trial;
  trial.d = d;
  trial.tokens = tokens;
  trial.keys = an::Matrix(tokens, d);
  std::vector<double> channelScale(d);
  for (size_t j = 0; j < d; ++j)
    channelScale[j] = (rng() % 4 == 0 ? 10.0 : 1.0) * (0.5 + unit(rng));
  for (size_t t = 0; t < tokens; ++t)
    for (size_t j = 0; j < d; ++j)
      // Keys sit on a few tokens' spikes, as RoPE pairs trade magnitude.
      trial.keys(t, j) = static_cast<float>(
          channelScale[j] * normal(rng) * (rng() % 3 == 0 ? 2.0 : 0.3));
  for (size_t i = 0; i < numQueries; ++i) {
    std::vector<double> q(d);
    size_t spike = rng() % d;
    for (size_t j = 0; j < d; ++j)
      q[j] = (j == spike ? 8.0 : 0.5) * normal(rng);
    trial.queries.push_back(q);
  }
  return trial;
}

an::BlockStatistics rangesOf(const an::Matrix &m, unsigned numTokens) {
  an::BlockStatistics stats;
  stats.numTokens = numTokens;
  stats.channelRanges.assign(m.cols, {1e300, -1e300});
  for (size_t t = 0; t < m.rows; ++t)
    for (size_t j = 0; j < m.cols; ++j) {
      stats.channelRanges[j].min = std::min(stats.channelRanges[j].min, m(t, j));
      stats.channelRanges[j].max = std::max(stats.channelRanges[j].max, m(t, j));
    }
  return stats;
}
} // namespace

// Keys stored in a window format and re-quantized to a body format when they
// age out: every (query, key) pair's actual logit error stays within the
// window's and the demoted body's E, which for relative-error formats now
// come through the logit envelope Lambda. The envelope is what calibration
// would record over these queries and keys, so this is the case the static
// certificate covers.
TEST(ClassBound, KeyLogitErrorThroughTheLogitEnvelope) {
  using K = an::StorageKind;
  auto tokenGroup = [](K kind, an::QuantScheme scheme, unsigned g) {
    return an::StorageFormat::scaled(kind, scheme, an::Granularity::TokenGroup,
                                     g, an::StorageKind::F16);
  };
  const an::StorageFormat formats[] = {
      an::StorageFormat::unscaled(K::F32),
      an::StorageFormat::unscaled(K::F16),
      an::StorageFormat::unscaled(K::BF16),
      tokenGroup(K::F8E4M3FN, an::QuantScheme::Symmetric, 8),
      tokenGroup(K::F8E5M2, an::QuantScheme::Symmetric, 4),
      an::StorageFormat::scaled(K::F8E4M3FN, an::QuantScheme::Symmetric,
                                an::Granularity::ChannelGroup, 8,
                                an::StorageKind::F32),
      tokenGroup(K::Int8, an::QuantScheme::Asymmetric, 8),
      tokenGroup(K::Int4, an::QuantScheme::Symmetric, 8),
  };
  const size_t numFormats = sizeof(formats) / sizeof(formats[0]);
  std::mt19937 rng(99);
  an::DequantizerConfig dequantizer;
  CertifyOptions options;
  options.dequantizer = dequantizer;
  int pairs = 0, violations = 0, relativeTighter = 0, relativeClasses = 0;
  double maxRatio = 0.0;
  for (int trial = 0; trial < 240; ++trial) {
    size_t d = 8 << (trial % 3);
    const size_t tokens = 16; // One window of one block.
    KeyTrial keys = makeKeyTrial(rng, d, tokens, 6);
    Geometry geometry;
    geometry.layers = geometry.heads = 1;
    geometry.headDim = d;
    geometry.capacity = 2 * tokens;
    geometry.block = geometry.window = tokens;
    HeadEnvelope envelope;
    envelope.queryBound.assign(d, 0.0);
    envelope.valueSpan.assign(d, 1.0);
    double lambda = 0.0;
    for (const std::vector<double> &q : keys.queries)
      for (size_t t = 0; t < tokens; ++t) {
        double sum = 0.0;
        for (size_t j = 0; j < d; ++j) {
          envelope.queryBound[j] = std::max(envelope.queryBound[j],
                                            std::fabs(q[j]));
          sum += std::fabs(q[j]) * std::fabs(keys.keys(t, j));
        }
        lambda = std::max(lambda, sum / std::sqrt(double(d)));
      }
    envelope.logitEnvelope = lambda;
    envelope.keys[kWindow] = rangesOf(keys.keys, tokens);
    envelope.keys[kBody] = rangesOf(keys.keys, tokens);
    const an::StorageFormat &window = formats[trial % numFormats];
    const an::StorageFormat &body = formats[(trial / numFormats) % numFormats];

    SegmentError windowError, bodyError;
    ASSERT_TRUE(
        evaluateSegment(envelope, kWindow, 0, window, options, windowError)
            .ok());
    ASSERT_TRUE(evaluateDemotedBody(envelope, 0, window, body, geometry,
                                    options, bodyError)
                    .ok());
    // The relative path must tighten f16/bf16/fp8 keys on this data.
    if (!an::isIntegerKind(window.kind) && window.kind != K::F32) {
      double channelwise = 0.0;
      ASSERT_TRUE(an::computeKeyBlockLogitError(window, envelope.keys[kWindow],
                                                envelope.queryBound,
                                                dequantizer, channelwise)
                      .ok());
      ++relativeClasses;
      relativeTighter += windowError.logitError < channelwise;
    }

    an::QuantizedMatrix windowStored, bodyStored;
    ASSERT_TRUE(
        an::quantizeMatrix(window, keys.keys, dequantizer, windowStored).ok());
    ASSERT_TRUE(an::quantizeMatrix(body, windowStored.dequantized, dequantizer,
                                   bodyStored)
                    .ok());
    for (const std::vector<double> &q : keys.queries)
      for (size_t t = 0; t < tokens; ++t) {
        double inWindow = 0.0, inBody = 0.0;
        for (size_t j = 0; j < d; ++j) {
          inWindow += q[j] * (windowStored.dequantized(t, j) - keys.keys(t, j));
          inBody += q[j] * (bodyStored.dequantized(t, j) - keys.keys(t, j));
        }
        inWindow = std::fabs(inWindow) / std::sqrt(double(d));
        inBody = std::fabs(inBody) / std::sqrt(double(d));
        pairs += 2;
        violations += inWindow > windowError.logitError;
        violations += inBody > bodyError.logitError;
        if (bodyError.logitError > 0)
          maxRatio = std::max(maxRatio, inBody / bodyError.logitError);
        if (windowError.logitError > 0)
          maxRatio = std::max(maxRatio, inWindow / windowError.logitError);
      }
    // Demotion into the same unscaled float, or into f32, adds nothing.
    if (demotesExactly(window, body)) {
      EXPECT_EQ(bodyError.logitError, windowError.logitError)
          << an::getFormatName(window) << " -> " << an::getFormatName(body);
    }
  }
  std::printf("[logit envelope] %d (query, key) pairs, %d violations, max "
              "actual/bound %.3f; relative bound tighter in %d of %d "
              "f16/bf16/fp8 windows\n",
              pairs, violations, maxRatio, relativeTighter, relativeClasses);
  EXPECT_EQ(violations, 0);
  EXPECT_GT(pairs, 10000);
  EXPECT_GT(relativeTighter, relativeClasses / 2);
}

TEST(ClassBound, DemotionIsExactOnlyIntoTheSameFloatOrF32) {
  using K = an::StorageKind;
  an::StorageFormat f32 = an::StorageFormat::unscaled(K::F32);
  an::StorageFormat f16 = an::StorageFormat::unscaled(K::F16);
  an::StorageFormat bf16 = an::StorageFormat::unscaled(K::BF16);
  an::StorageFormat i8 = an::StorageFormat::scaled(
      K::Int8, an::QuantScheme::Symmetric, an::Granularity::TokenGroup, 8,
      K::F16);
  EXPECT_TRUE(demotesExactly(f16, f16));
  EXPECT_TRUE(demotesExactly(bf16, bf16));
  EXPECT_TRUE(demotesExactly(i8, f32));
  EXPECT_TRUE(demotesExactly(f16, f32));
  EXPECT_FALSE(demotesExactly(f16, bf16));
  EXPECT_FALSE(demotesExactly(bf16, f16));
  EXPECT_FALSE(demotesExactly(i8, i8)); // A new scale over the block.
  EXPECT_FALSE(demotesExactly(f32, f16));
}
