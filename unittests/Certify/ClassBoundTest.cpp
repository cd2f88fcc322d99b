//===- ClassBoundTest.cpp - the static certificate over class envelopes ---===//
//
// maximizeOverEnvelope against brute force, and computeClassBound against
// real attention on quantized caches whose position-class masses, query
// magnitudes and ranges stay inside the envelopes it is given, against the
// concrete Theorem (kvprec/Analysis/Bound.h) and the adversarial corners of
// the statistics boxes, and together with the §4 decoupled tolerance the
// allocator accepts plans at: zero violations, tightness printed.
//
//===----------------------------------------------------------------------===//

#include "kvprec/Certify/PlanCertifier.h"

#include "kvprec/Analysis/Bound.h"
#include "kvprec/Analysis/ErrorModel.h"
#include "kvprec/Analysis/Quantizer.h"

#include "../Analysis/AttentionTestUtil.h"

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
      ok = ok &&
           an::computeKeyBlockLogitError(keyFormat[c], keyStats, queryBound,
                                         dequantizer, logitError)
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
  std::printf(
      "[class bound] %d cases, %d violations, max measured/bound %.3f\n", cases,
      violations, maxRatio);
  EXPECT_GT(cases, 200);
  EXPECT_EQ(violations, 0);
}

namespace {
/// Random keys with a few outlier channels and queries that are large in
/// different channels from one another, so that the largest |q_j| and |K_j|
/// of different channels rarely meet in one (query, key) pair.
struct KeyTrial {
  size_t d = 0, tokens = 0;
  an::Matrix keys; // tokens x d, f32 values.
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
      trial.keys(t, j) = static_cast<float>(channelScale[j] * normal(rng) *
                                            (rng() % 3 == 0 ? 2.0 : 0.3));
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
      stats.channelRanges[j].min =
          std::min(stats.channelRanges[j].min, m(t, j));
      stats.channelRanges[j].max =
          std::max(stats.channelRanges[j].max, m(t, j));
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
          envelope.queryBound[j] =
              std::max(envelope.queryBound[j], std::fabs(q[j]));
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
  an::StorageFormat i8 =
      an::StorageFormat::scaled(K::Int8, an::QuantScheme::Symmetric,
                                an::Granularity::TokenGroup, 8, K::F16);
  EXPECT_TRUE(demotesExactly(f16, f16));
  EXPECT_TRUE(demotesExactly(bf16, bf16));
  EXPECT_TRUE(demotesExactly(i8, f32));
  EXPECT_TRUE(demotesExactly(f16, f32));
  EXPECT_FALSE(demotesExactly(f16, bf16));
  EXPECT_FALSE(demotesExactly(bf16, f16));
  EXPECT_FALSE(demotesExactly(i8, i8)); // A new scale over the block.
  EXPECT_FALSE(demotesExactly(f32, f16));
}

//===----------------------------------------------------------------------===//
// The certificate from block statistics, against the concrete Theorem and
// the adversarial corners of the statistics boxes, and with the §4 decoupled
// tolerance (helpers from unittests/Analysis/AttentionTestUtil.h).
//===----------------------------------------------------------------------===//

namespace {
using namespace kvprec::analysis;
using namespace kvprec::analysis::test;

// End to end from statistics: per-block calibration ranges give delta
// (ErrorModel), position-class envelopes give (C1) and (C2); the static
// certificate must bound the error of the actual quantized cache, and the
// concrete Theorem with the statistics boxes, for every query that
// satisfies the envelopes.
TEST(ClassBound, StaticCertificateFromStatisticsHolds) {
  Rng rng(77);
  TightnessTracker random, adversarial;
  size_t shapeChecks = 0;
  const size_t blockTokens = 32;
  for (int c = 0; c < 120; ++c) {
    size_t d = size_t(16) << uniformIndex(rng, 0, 2);
    size_t numBlocks = uniformIndex(rng, 2, 8), T = numBlocks * blockTokens;
    bool channelGroups = c % 2;
    unsigned g = channelGroups ? unsigned(blockTokens) : 16u;
    Granularity granularity =
        channelGroups ? Granularity::ChannelGroup : Granularity::TokenGroup;
    StorageKind keyKinds[] = {StorageKind::Int8, StorageKind::Int4,
                              StorageKind::Int2, StorageKind::F8E4M3FN};
    StorageKind keyKind = keyKinds[c % 4];
    StorageFormat keyFormat = StorageFormat::scaled(
        keyKind,
        isFp8Kind(keyKind) ? QuantScheme::Symmetric : QuantScheme::Asymmetric,
        granularity, g, StorageKind::F16);
    StorageFormat valueFormat =
        StorageFormat::scaled(StorageKind::Int4, QuantScheme::Symmetric,
                              Granularity::TokenGroup, 16, StorageKind::F16);
    Matrix K = randomCache(rng, T, d, 1.0, 0.02, 6.0);
    Matrix V = randomCache(rng, T, d, 1.0, 0.02, 4.0);
    // Sink tokens get large logits, as in real models.
    for (size_t j = 0; j < d; ++j)
      K(0, j) = toF32(K(0, j) * 3);

    std::vector<std::vector<double>> queries;
    for (int i = 0; i < 6; ++i)
      queries.push_back(randomQuery(rng, d, uniform(rng, 0.3, 1.5)));
    // Envelopes that hold for these queries: (C2) per channel, (C1) per block
    // with a margin.
    std::vector<double> queryBound(d, 0.0);
    for (const std::vector<double> &q : queries)
      for (size_t j = 0; j < d; ++j)
        queryBound[j] = std::max(queryBound[j], std::fabs(q[j]));
    std::vector<double> massBound(numBlocks, 0.0);
    for (const std::vector<double> &q : queries) {
      AttentionResult attention = computeAttention(q, K, V);
      for (size_t b = 0; b < numBlocks; ++b) {
        double mass = 0.0;
        for (size_t t = b * blockTokens; t < (b + 1) * blockTokens; ++t)
          mass += attention.weights[t];
        massBound[b] = std::max(massBound[b], mass);
      }
    }
    std::vector<PositionClassEnvelope> classes(numBlocks);
    std::vector<double> valueSpan = computeValueSpan(V);
    for (size_t b = 0; b < numBlocks; ++b) {
      size_t begin = b * blockTokens, end = begin + blockTokens;
      classes[b].attentionMass = std::min(1.0, massBound[b] * 1.05);
      ASSERT_TRUE(
          computeKeyBlockLogitError(keyFormat, blockStatistics(K, begin, end),
                                    queryBound, {}, classes[b].maxLogitError)
              .ok());
      ASSERT_TRUE(computeBlockChannelErrorBounds(valueFormat,
                                                 blockStatistics(V, begin, end),
                                                 {}, classes[b].maxValueError)
                      .ok());
    }
    StaticCertifiedBound staticBound;
    ASSERT_TRUE(computeClassBound(classes, valueSpan, staticBound).ok());

    QuantizedMatrix Kq, Vq;
    ASSERT_TRUE(quantizeMatrix(keyFormat, K, {}, Kq).ok());
    ASSERT_TRUE(quantizeMatrix(valueFormat, V, {}, Vq).ok());
    // The per-element statistics boxes, for the concrete Theorem.
    Matrix statsDeltaK(T, d), statsDeltaV(T, d);
    for (size_t b = 0; b < numBlocks; ++b) {
      std::vector<double> deltaK, deltaV;
      ASSERT_TRUE(
          computeBlockChannelErrorBounds(
              keyFormat,
              blockStatistics(K, b * blockTokens, (b + 1) * blockTokens), {},
              deltaK)
              .ok());
      deltaV = classes[b].maxValueError;
      for (size_t t = b * blockTokens; t < (b + 1) * blockTokens; ++t)
        for (size_t j = 0; j < d; ++j) {
          statsDeltaK(t, j) = deltaK[j];
          statsDeltaV(t, j) = deltaV[j];
        }
    }
    double slack = referenceSlack(V);
    for (const std::vector<double> &q : queries) {
      std::vector<double> error =
          outputError(q, K, V, Kq.dequantized, Vq.dequantized);
      for (size_t j = 0; j < d; ++j)
        random.record(error[j], staticBound.perComponent[j], slack);
      CertifiedBound concrete;
      ASSERT_TRUE(
          computeCertifiedBound(q, K, V, statsDeltaK, statsDeltaV, concrete)
              .ok());
      for (size_t j = 0; j < d; ++j) {
        ++shapeChecks;
        EXPECT_LE(concrete.perComponent[j],
                  staticBound.perComponent[j] * (1 + 1e-12));
      }
      size_t jStar = size_t(std::max_element(concrete.perComponent.begin(),
                                             concrete.perComponent.end()) -
                            concrete.perComponent.begin());
      Matrix Khat, Vhat;
      makeAdversarialCorner(q, K, V, statsDeltaK, statsDeltaV, jStar, Khat,
                            Vhat);
      std::vector<double> cornerError = outputError(q, K, V, Khat, Vhat);
      for (size_t j = 0; j < d; ++j)
        adversarial.record(cornerError[j], staticBound.perComponent[j], slack);
    }
  }
  random.print("static certificate, quantized cache");
  adversarial.print("static certificate, adversarial corners");
  EXPECT_EQ(random.violations, 0u);
  EXPECT_EQ(adversarial.violations, 0u);
  EXPECT_GT(shapeChecks, 0u);
}

/// The smallest tolerance the allocator accepts for items summing to
/// `itemSum`: the least eps (to 1e-12 relative) with itemSum <=
/// computeDecoupledTolerance(eps, cap). Bisection only calls the budget
/// function, so a wrong budget shows as a tolerance the errors exceed.
double smallestAcceptedTolerance(double itemSum, double cap) {
  double lo = 0.0, hi = 1e-300;
  while (computeDecoupledTolerance(hi, cap) < itemSum)
    hi *= 2;
  while (hi - lo > 1e-12 * hi) {
    double mid = 0.5 * (lo + hi);
    (computeDecoupledTolerance(mid, cap) >= itemSum ? hi : lo) = mid;
  }
  return hi;
}

/// The allocator's total over the classes: one value and one key item per
/// class, with the largest span standing in for every residual (§4).
double sumItemErrors(const std::vector<PositionClassEnvelope> &classes,
                     const std::vector<double> &valueSpan, double cap) {
  double maxSpan = *std::max_element(valueSpan.begin(), valueSpan.end());
  double sum = 0.0;
  for (const PositionClassEnvelope &c : classes) {
    double maxDelta =
        *std::max_element(c.maxValueError.begin(), c.maxValueError.end());
    sum += computeValueItemError(c.attentionMass, maxDelta, cap) +
           computeKeyItemError(c.attentionMass, c.maxLogitError, maxSpan);
  }
  return sum;
}

// §4's promise, end to end: when the items of a plan whose key options all
// pass the cap sum to at most computeDecoupledTolerance(eps, E_cap), the
// attention error is at most eps, for the quantized cache and for the
// adversarial corners of its statistics boxes, for every query inside the
// envelopes, and so is the static certificate of the plan. The tolerance is
// the smallest one the items fit, so the measured errors are compared with
// the allocator's own acceptance test.
TEST(ClassBound, DecoupledToleranceCertifiesQuantizedCaches) {
  Rng rng(5);
  TightnessTracker random, adversarial, againstStatic;
  size_t accepted = 0, pruned = 0;
  const size_t sinkTokens = 4, blockTokens = 32;
  const double cap = 0.25;
  for (int c = 0; c < 160; ++c) {
    size_t d = size_t(16) << uniformIndex(rng, 0, 2);
    size_t numBlocks = uniformIndex(rng, 1, 6);
    size_t T = sinkTokens + numBlocks * blockTokens;
    StorageKind keyKinds[] = {StorageKind::Int8, StorageKind::F8E4M3FN,
                              StorageKind::Int8};
    StorageKind valueKinds[] = {StorageKind::Int8, StorageKind::Int4,
                                StorageKind::Int2, StorageKind::F8E4M3FN};
    StorageFormat keyFormat =
        StorageFormat::scaled(keyKinds[c % 3], QuantScheme::Symmetric,
                              Granularity::TokenGroup, 16, StorageKind::F16);
    StorageFormat valueFormat = StorageFormat::scaled(
        valueKinds[uniformIndex(rng, 0, 3)], QuantScheme::Symmetric,
        Granularity::TokenGroup, 16, StorageKind::F16);
    Matrix K = randomCache(rng, T, d, 1.0, 0.02, 6.0);
    Matrix V = randomCache(rng, T, d, 1.0, 0.02, 4.0);
    // Sink tokens get large logits, as in real models.
    for (size_t t = 0; t < sinkTokens; ++t)
      for (size_t j = 0; j < d; ++j)
        K(t, j) = toF32(K(t, j) * 3);
    std::vector<std::vector<double>> queries;
    for (int i = 0; i < 6; ++i)
      queries.push_back(
          randomQuery(rng, d, std::pow(10.0, uniform(rng, -1.5, -0.5))));

    // Classes: the sink, then one per block; (C1) and (C2) from the queries.
    std::vector<std::pair<size_t, size_t>> spans = {{0, sinkTokens}};
    for (size_t b = 0; b < numBlocks; ++b)
      spans.push_back(
          {sinkTokens + b * blockTokens, sinkTokens + (b + 1) * blockTokens});
    std::vector<double> queryBound(d, 0.0), massBound(spans.size(), 0.0);
    for (const std::vector<double> &q : queries) {
      for (size_t j = 0; j < d; ++j)
        queryBound[j] = std::max(queryBound[j], std::fabs(q[j]));
      AttentionResult attention = computeAttention(q, K, V);
      for (size_t i = 0; i < spans.size(); ++i) {
        double mass = 0.0;
        for (size_t t = spans[i].first; t < spans[i].second; ++t)
          mass += attention.weights[t];
        massBound[i] = std::max(massBound[i], mass);
      }
    }
    std::vector<PositionClassEnvelope> classes(spans.size());
    Matrix statsDeltaK(T, d), statsDeltaV(T, d);
    bool keyPruned = false;
    for (size_t i = 0; i < spans.size(); ++i) {
      auto [begin, end] = spans[i];
      classes[i].attentionMass = std::min(1.0, massBound[i] * (1 + 1e-9));
      std::vector<double> deltaK;
      ASSERT_TRUE(computeBlockChannelErrorBounds(
                      keyFormat, blockStatistics(K, begin, end), {}, deltaK)
                      .ok());
      ASSERT_TRUE(computeBlockChannelErrorBounds(valueFormat,
                                                 blockStatistics(V, begin, end),
                                                 {}, classes[i].maxValueError)
                      .ok());
      ASSERT_TRUE(
          computeKeyBlockLogitError(keyFormat, blockStatistics(K, begin, end),
                                    queryBound, {}, classes[i].maxLogitError)
              .ok());
      keyPruned |= classes[i].maxLogitError > cap;
      for (size_t t = begin; t < end; ++t)
        for (size_t j = 0; j < d; ++j) {
          statsDeltaK(t, j) = deltaK[j];
          statsDeltaV(t, j) = classes[i].maxValueError[j];
        }
    }
    // The allocator never offers a key option above the cap.
    if (keyPruned) {
      ++pruned;
      continue;
    }
    ++accepted;
    std::vector<double> valueSpan = computeValueSpan(V);
    StaticCertifiedBound staticBound;
    ASSERT_TRUE(computeClassBound(classes, valueSpan, staticBound).ok());
    double tolerance =
        smallestAcceptedTolerance(sumItemErrors(classes, valueSpan, cap), cap);
    // e^Ebar <= e^{E_cap}, and the items bound the certificate's terms.
    EXPECT_LE(staticBound.meanLogitErrorBound, cap);
    EXPECT_LE(staticBound.infNorm, tolerance * (1 + 1e-12));

    QuantizedMatrix Kq, Vq;
    ASSERT_TRUE(quantizeMatrix(keyFormat, K, {}, Kq).ok());
    ASSERT_TRUE(quantizeMatrix(valueFormat, V, {}, Vq).ok());
    double slack = referenceSlack(V);
    for (const std::vector<double> &q : queries) {
      std::vector<double> error =
          outputError(q, K, V, Kq.dequantized, Vq.dequantized);
      CertifiedBound concrete;
      ASSERT_TRUE(
          computeCertifiedBound(q, K, V, statsDeltaK, statsDeltaV, concrete)
              .ok());
      size_t jStar = size_t(std::max_element(concrete.perComponent.begin(),
                                             concrete.perComponent.end()) -
                            concrete.perComponent.begin());
      Matrix Khat, Vhat;
      makeAdversarialCorner(q, K, V, statsDeltaK, statsDeltaV, jStar, Khat,
                            Vhat);
      std::vector<double> cornerError = outputError(q, K, V, Khat, Vhat);
      for (size_t j = 0; j < d; ++j) {
        random.record(error[j], tolerance, slack);
        adversarial.record(cornerError[j], tolerance, slack);
        againstStatic.record(std::max(error[j], cornerError[j]),
                             staticBound.perComponent[j], slack);
      }
    }
  }
  random.print("decoupled tolerance, quantized cache");
  adversarial.print("decoupled tolerance, adversarial corners");
  againstStatic.print("static certificate with cap, both");
  std::printf("[tightness] decoupled tolerance: %zu plans accepted, %zu with "
              "a key class above E_cap = %.2f\n",
              accepted, pruned, cap);
  EXPECT_EQ(random.violations, 0u);
  EXPECT_EQ(adversarial.violations, 0u);
  EXPECT_EQ(againstStatic.violations, 0u);
  EXPECT_GT(accepted, 60u);
}

// Two caches built so that the static certificate is attained up to O(E)
// and O(mass) factors, which bounds it from below: a bound (or a §4
// budget) that is too loose by a factor of two fails here. Values: every
// value error at +delta moves o by delta, whatever the weights. Keys: one
// position of small mass alpha with value +1 against the rest at -1 and a
// logit error E = E_cap toward it moves o by 2 alpha (1 - alpha) phi(E) /
// (1 + alpha phi(E)), and the certificate is 2 alpha phi(E) e^{alpha E}.
// The §4 form pays e^{E_cap} for the unknown Ebar (and a second e^{E_cap} on
// values), so its ratio is at least about e^{-2 E_cap}.
TEST(ClassBound, StaticAndDecoupledBoundsAreAttained) {
  Rng rng(6);
  double minStatic = HUGE_VAL, minDecoupled = HUGE_VAL;
  size_t numCases = 0;
  for (double cap : {0.05, 0.25}) {
    // Values: exact keys, one class.
    for (int c = 0; c < 20; ++c) {
      size_t d = randomHeadDim(rng), T = randomLength(rng, 1, 100);
      std::vector<double> q = randomQuery(rng, d, 1.0);
      Matrix K = randomCache(rng, T, d, 1.0), V = randomCache(rng, T, d, 1.0);
      std::vector<PositionClassEnvelope> classes(1);
      classes[0].maxValueError.resize(d);
      for (double &delta : classes[0].maxValueError)
        delta = std::pow(10.0, uniform(rng, -4.0, -2.0));
      Matrix deltaK(T, d), deltaV(T, d);
      for (size_t t = 0; t < T; ++t)
        for (size_t j = 0; j < d; ++j)
          deltaV(t, j) = classes[0].maxValueError[j];
      std::vector<double> span = computeValueSpan(V);
      StaticCertifiedBound bound;
      ASSERT_TRUE(computeClassBound(classes, span, bound).ok());
      double tolerance =
          smallestAcceptedTolerance(sumItemErrors(classes, span, cap), cap);
      Matrix Khat, Vhat;
      makeAdversarialCorner(q, K, V, deltaK, deltaV, 0, Khat, Vhat);
      std::vector<double> error = outputError(q, K, V, Khat, Vhat);
      double slack = referenceSlack(V), measured = 0.0;
      for (size_t j = 0; j < d; ++j) {
        EXPECT_LE(error[j], bound.perComponent[j] + slack);
        minStatic = std::min(minStatic, error[j] / bound.perComponent[j]);
        measured = std::max(measured, error[j]);
      }
      EXPECT_LE(measured, tolerance + slack);
      minDecoupled = std::min(minDecoupled, measured / tolerance);
      ++numCases;
    }
    // Keys: a light position against a heavy one, d = 1 and q = 1 so the
    // key error bound is the logit error.
    for (double alpha : {0.001, 0.01, 0.05}) {
      Matrix K(2, 1), V(2, 1), deltaK(2, 1), deltaV(2, 1);
      K(0, 0) = std::log(alpha / (1 - alpha));
      V(0, 0) = 1.0;
      V(1, 0) = -1.0;
      deltaK(0, 0) = cap;
      AttentionResult attention = computeAttention({1.0}, K, V);
      std::vector<PositionClassEnvelope> classes(2);
      classes[0].attentionMass = attention.weights[0] * (1 + 1e-12);
      classes[0].maxLogitError = cap;
      classes[0].maxValueError = {0.0};
      classes[1].attentionMass = 1.0;
      classes[1].maxValueError = {0.0};
      std::vector<double> span = computeValueSpan(V);
      StaticCertifiedBound bound;
      ASSERT_TRUE(computeClassBound(classes, span, bound).ok());
      double tolerance =
          smallestAcceptedTolerance(sumItemErrors(classes, span, cap), cap);
      Matrix Khat, Vhat;
      makeAdversarialCorner({1.0}, K, V, deltaK, deltaV, 0, Khat, Vhat);
      double measured = outputError({1.0}, K, V, Khat, Vhat)[0];
      double slack = referenceSlack(V);
      EXPECT_LE(measured, bound.perComponent[0] + slack);
      EXPECT_LE(measured, tolerance + slack);
      minStatic = std::min(minStatic, measured / bound.perComponent[0]);
      minDecoupled = std::min(minDecoupled, measured / tolerance);
      ++numCases;
    }
  }
  std::printf("[tightness] attained static certificate: cases=%zu, min "
              "measured/static = %.4f, min measured/decoupled tolerance = "
              "%.4f\n",
              numCases, minStatic, minDecoupled);
  EXPECT_GT(minStatic, 0.9);
  EXPECT_GT(minDecoupled, 0.5);
}

// What computeClassBound takes from the envelopes: the masses bound a
// distribution that sums to one, so the worst case fills the unit of mass
// largest errors first (not the plain sum over classes); envelopes that
// cannot hold a distribution contradict (C1) and give the uniform bound;
// malformed envelopes are refused. The E_cap of §4 is not checked here: the
// allocator prunes key options above it before certifying.
TEST(ClassBound, EnvelopeChecks) {
  std::vector<PositionClassEnvelope> classes(2);
  classes[0].attentionMass = classes[1].attentionMass = 0.7;
  classes[0].maxLogitError = 0.1;
  classes[1].maxLogitError = 0.2;
  classes[0].maxValueError = {0.0};
  classes[1].maxValueError = {0.0};
  StaticCertifiedBound bound;
  ASSERT_TRUE(computeClassBound(classes, {2.0}, bound).ok());
  // 0.7 on the class with E = 0.2, the remaining 0.3 on the other; the
  // plain sum would give min(0.7 (0.1 + 0.2), 0.2) = 0.2.
  double meanLogit = 0.7 * 0.2 + 0.3 * 0.1;
  EXPECT_NEAR(bound.meanLogitErrorBound, meanLogit, 1e-15);
  double keyTerm =
      std::exp(meanLogit) * 2.0 * (0.7 * phi(0.2) + 0.3 * phi(0.1));
  EXPECT_NEAR(bound.keyTerm[0], keyTerm, 1e-15);
  EXPECT_EQ(bound.valueTerm[0], 0.0);
  EXPECT_NEAR(bound.infNorm, keyTerm, 1e-15);

  // Masses summing to 0.6 < 1: the bound of no attention knowledge (A = 1
  // everywhere), which is that of the worst class alone.
  classes[0].attentionMass = classes[1].attentionMass = 0.3;
  StaticCertifiedBound tooLight, unknown, worstAlone;
  ASSERT_TRUE(computeClassBound(classes, {2.0}, tooLight).ok());
  classes[0].attentionMass = classes[1].attentionMass = 1.0;
  ASSERT_TRUE(computeClassBound(classes, {2.0}, unknown).ok());
  ASSERT_TRUE(computeClassBound({classes[1]}, {2.0}, worstAlone).ok());
  EXPECT_EQ(tooLight.meanLogitErrorBound, 0.2);
  EXPECT_EQ(tooLight.infNorm, unknown.infNorm);
  EXPECT_GT(tooLight.infNorm, bound.infNorm);

  // With no attention knowledge the bound is the uniform one (§5 honesty
  // note): classes that are better in every respect than the worst one add
  // nothing to it.
  std::vector<PositionClassEnvelope> uniformClasses(3);
  for (size_t i = 0; i < 3; ++i) {
    uniformClasses[i].attentionMass = 1.0;
    uniformClasses[i].maxLogitError = 0.01 * double(i + 1);
    uniformClasses[i].maxValueError = {0.001 * double(i + 1)};
  }
  ASSERT_TRUE(computeClassBound(uniformClasses, {2.0}, bound).ok());
  ASSERT_TRUE(computeClassBound({uniformClasses[2]}, {2.0}, worstAlone).ok());
  EXPECT_NEAR(bound.infNorm, worstAlone.infNorm, 1e-15);
  EXPECT_GT(bound.infNorm, 0.0);

  // Malformed envelopes.
  std::vector<PositionClassEnvelope> bad = {uniformClasses[0]};
  Status status = computeClassBound(bad, {2.0, 1.0}, bound);
  ASSERT_TRUE(status.failed());
  EXPECT_NE(status.getMessage().find("channels"), std::string::npos);
  bad[0].maxLogitError = INFINITY;
  EXPECT_TRUE(computeClassBound(bad, {2.0}, bound).failed());
  bad[0].maxLogitError = 0.01;
  bad[0].attentionMass = -0.5;
  EXPECT_TRUE(computeClassBound(bad, {2.0}, bound).failed());
  bad[0].attentionMass = NAN;
  EXPECT_TRUE(computeClassBound(bad, {2.0}, bound).failed());
}

} // namespace
