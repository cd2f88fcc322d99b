//===- BoundTest.cpp - Certified bound trials -----------------------------===//
//
// Random and adversarial trials of the Theorem of error-bounds.md §2, the
// static certificate and the run-time certificate of §5, and the kernel
// rounding term. Every trial must show zero violations. Measured errors are
// differences of two double evaluations of attention, so comparisons allow
// 1e-13 * (1 + max|V|) for the reference arithmetic itself.
//
//===----------------------------------------------------------------------===//

#include "kvprec/Analysis/Bound.h"
#include "kvprec/Analysis/ErrorModel.h"
#include "kvprec/Analysis/Quantizer.h"

#include "TestUtil.h"

#include "gtest/gtest.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <string>

using namespace kvprec::analysis;
using namespace kvprec::analysis::test;

namespace {

struct NamedFormat {
  const char *label;
  StorageFormat format;
};

/// Key/value formats of the trials; token groups always divide d.
std::vector<NamedFormat> trialFormats(size_t headDim) {
  unsigned g = unsigned(std::min<size_t>(32, headDim));
  auto scaled = [&](StorageKind kind, QuantScheme scheme,
                    Granularity granularity, unsigned groupSize,
                    StorageKind scaleKind) {
    return StorageFormat::scaled(kind, scheme, granularity, groupSize,
                                 scaleKind);
  };
  return {
      {"int8", scaled(StorageKind::Int8, QuantScheme::Symmetric,
                      Granularity::TokenGroup, g, StorageKind::F16)},
      {"f8E4M3FN", scaled(StorageKind::F8E4M3FN, QuantScheme::Symmetric,
                          Granularity::TokenGroup, g, StorageKind::F32)},
      {"f8E5M2", scaled(StorageKind::F8E5M2, QuantScheme::Symmetric,
                        Granularity::TokenGroup, g, StorageKind::F16)},
      {"int4 (KIVI channel groups)",
       scaled(StorageKind::Int4, QuantScheme::Asymmetric,
              Granularity::ChannelGroup, 32, StorageKind::F16)},
      {"int3", scaled(StorageKind::Int3, QuantScheme::Symmetric,
                      Granularity::TokenGroup, g, StorageKind::F32)},
      {"int2 (KIVI channel groups)",
       scaled(StorageKind::Int2, QuantScheme::Asymmetric,
              Granularity::ChannelGroup, 32, StorageKind::F16)},
      {"f16", StorageFormat::unscaled(StorageKind::F16)},
      {"bf16", StorageFormat::unscaled(StorageKind::BF16)},
  };
}

double maxAbs(const Matrix &m) {
  double result = 0.0;
  for (double v : m.values)
    result = std::max(result, std::fabs(v));
  return result;
}

double referenceSlack(const Matrix &values) {
  return 1e-13 * (1 + maxAbs(values));
}

std::vector<double> outputError(const std::vector<double> &query,
                                const Matrix &keys, const Matrix &values,
                                const Matrix &perturbedKeys,
                                const Matrix &perturbedValues) {
  AttentionResult exact = computeAttention(query, keys, values);
  AttentionResult perturbed =
      computeAttention(query, perturbedKeys, perturbedValues);
  std::vector<double> error(values.cols);
  for (size_t j = 0; j < values.cols; ++j)
    error[j] = std::fabs(perturbed.output[j] - exact.output[j]);
  return error;
}

size_t randomHeadDim(Rng &rng) {
  const size_t dims[] = {8, 16, 32, 64, 128};
  return dims[uniformIndex(rng, 0, 4)];
}

size_t randomLength(Rng &rng, double lo, double hi) {
  return size_t(std::exp(uniform(rng, std::log(lo), std::log(hi))));
}

TEST(BoundTest, QuantizedCachesNeverViolate) {
  Rng rng(1);
  std::map<std::string, TightnessTracker> byKeyFormat;
  TightnessTracker runtime;
  size_t violations = 0;
  double maxE = 0.0, maxOverFirstOrder = 0.0;
  const int numCases = 400;
  for (int c = 0; c < numCases; ++c) {
    size_t d = randomHeadDim(rng), T = randomLength(rng, 1, 300);
    std::vector<NamedFormat> formats = trialFormats(d);
    const NamedFormat &keyFormat = formats[c % formats.size()];
    const NamedFormat &valueFormat =
        formats[uniformIndex(rng, 0, formats.size() - 1)];
    std::vector<double> q =
        randomQuery(rng, d, std::pow(10.0, uniform(rng, -0.5, 1.0)));
    Matrix K = randomCache(rng, T, d, 1.0, 0.02, 8.0);
    Matrix V = randomCache(rng, T, d, 1.0, 0.02, 5.0);
    QuantizedMatrix Kq, Vq;
    ASSERT_TRUE(quantizeMatrix(keyFormat.format, K, {}, Kq).ok());
    ASSERT_TRUE(quantizeMatrix(valueFormat.format, V, {}, Vq).ok());

    CertifiedBound bound;
    ASSERT_TRUE(
        computeCertifiedBound(q, K, V, Kq.errorBounds, Vq.errorBounds, bound)
            .ok());
    RuntimeCertificate certificate;
    ASSERT_TRUE(computeRuntimeCertificate(q, Kq.dequantized, Vq.dequantized,
                                          Kq.errorBounds, Vq.errorBounds,
                                          certificate)
                    .ok());
    std::vector<double> error =
        outputError(q, K, V, Kq.dequantized, Vq.dequantized);
    double slack = referenceSlack(V), measured = 0.0;
    for (size_t j = 0; j < d; ++j) {
      measured = std::max(measured, error[j]);
      if (error[j] > bound.perComponent[j] + slack ||
          error[j] > certificate.perComponent[j] + slack)
        ++violations;
    }
    byKeyFormat[keyFormat.label].record(measured, bound.infNorm, slack);
    runtime.record(measured, certificate.infNorm, slack);
    for (double E : bound.logitErrorBounds)
      maxE = std::max(maxE, E);
    if (bound.firstOrderInfNorm > 0)
      maxOverFirstOrder =
          std::max(maxOverFirstOrder, measured / bound.firstOrderInfNorm);
  }
  for (auto &[label, tracker] : byKeyFormat)
    tracker.print(("quantized caches, keys " + label).c_str());
  runtime.print("quantized caches, run-time certificate");
  std::printf("[tightness] quantized caches: max E_t = %.3f, max "
              "measured/first-order = %.3f\n",
              maxE, maxOverFirstOrder);
  EXPECT_EQ(violations, 0u);
  EXPECT_GT(maxE, 1.0); // The trials reach the E >~ 1 regime.
}

/// Builds the first-order worst case of §1 for output component j: every
/// key error at its box corner with sign(q_i) sign(V_{t,j} - o_j), every
/// value error at +delta.
void makeAdversarialCorner(const std::vector<double> &q, const Matrix &K,
                           const Matrix &V, const Matrix &deltaK,
                           const Matrix &deltaV, size_t j, Matrix &Khat,
                           Matrix &Vhat) {
  AttentionResult attention = computeAttention(q, K, V);
  Khat = K;
  Vhat = V;
  for (size_t t = 0; t < K.rows; ++t) {
    double direction = V(t, j) >= attention.output[j] ? 1.0 : -1.0;
    for (size_t i = 0; i < K.cols; ++i)
      Khat(t, i) += deltaK(t, i) * (q[i] >= 0 ? 1.0 : -1.0) * direction;
    for (size_t k = 0; k < V.cols; ++k)
      Vhat(t, k) += deltaV(t, k);
  }
}

struct CornerStats {
  TightnessTracker theorem, runtime, randomCorners;
  double sumE = 0.0, maxE = 0.0, maxOverFirstOrder = 0.0;
  size_t numE = 0, numLargeE = 0;
};

void runCornerTrials(Rng &rng, int numCases, StorageKind keyKind,
                     double queryScaleLo, double queryScaleHi,
                     CornerStats &stats) {
  for (int c = 0; c < numCases; ++c) {
    size_t d = randomHeadDim(rng), T = randomLength(rng, 8, 256);
    unsigned g = unsigned(std::min<size_t>(32, d));
    StorageFormat keyFormat =
        StorageFormat::scaled(keyKind, QuantScheme::Symmetric,
                              Granularity::TokenGroup, g, StorageKind::F16);
    StorageFormat valueFormat =
        StorageFormat::scaled(StorageKind::Int8, QuantScheme::Symmetric,
                              Granularity::TokenGroup, g, StorageKind::F16);
    std::vector<double> q = randomQuery(
        rng, d, std::pow(10.0, uniform(rng, queryScaleLo, queryScaleHi)));
    Matrix K = randomCache(rng, T, d, 1.0, 0.01, 4.0);
    Matrix V = randomCache(rng, T, d, 1.0, 0.01, 4.0);
    QuantizedMatrix Kq, Vq;
    ASSERT_TRUE(quantizeMatrix(keyFormat, K, {}, Kq).ok());
    ASSERT_TRUE(quantizeMatrix(valueFormat, V, {}, Vq).ok());
    CertifiedBound bound;
    ASSERT_TRUE(
        computeCertifiedBound(q, K, V, Kq.errorBounds, Vq.errorBounds, bound)
            .ok());
    size_t jStar = size_t(
        std::max_element(bound.perComponent.begin(), bound.perComponent.end()) -
        bound.perComponent.begin());
    Matrix Khat, Vhat;
    makeAdversarialCorner(q, K, V, Kq.errorBounds, Vq.errorBounds, jStar, Khat,
                          Vhat);
    std::vector<double> error = outputError(q, K, V, Khat, Vhat);
    double slack = referenceSlack(V);
    for (size_t j = 0; j < d; ++j)
      if (error[j] > bound.perComponent[j] + slack)
        stats.theorem.violations++;
    stats.theorem.record(error[jStar], bound.perComponent[jStar], slack);
    stats.maxOverFirstOrder =
        std::max(stats.maxOverFirstOrder,
                 error[jStar] / bound.firstOrderPerComponent[jStar]);
    for (double E : bound.logitErrorBounds) {
      stats.sumE += E;
      stats.maxE = std::max(stats.maxE, E);
      ++stats.numE;
      stats.numLargeE += E > 1.0;
    }

    RuntimeCertificate certificate;
    ASSERT_TRUE(computeRuntimeCertificate(q, Khat, Vhat, Kq.errorBounds,
                                          Vq.errorBounds, certificate)
                    .ok());
    for (size_t j = 0; j < d; ++j)
      if (error[j] > certificate.perComponent[j] + slack)
        stats.runtime.violations++;
    stats.runtime.record(error[jStar], certificate.perComponent[jStar], slack);

    // Random corners and interior points of the same boxes.
    for (int r = 0; r < 4; ++r) {
      Matrix Kr = K, Vr = V;
      for (size_t i = 0; i < K.values.size(); ++i)
        Kr.values[i] += Kq.errorBounds.values[i] *
                        (r % 2 ? uniform(rng, -1.0, 1.0)
                               : (uniform(rng, 0, 1) < 0.5 ? -1.0 : 1.0));
      for (size_t i = 0; i < V.values.size(); ++i)
        Vr.values[i] += Vq.errorBounds.values[i] *
                        (r % 2 ? uniform(rng, -1.0, 1.0)
                               : (uniform(rng, 0, 1) < 0.5 ? -1.0 : 1.0));
      std::vector<double> randomError = outputError(q, K, V, Kr, Vr);
      for (size_t j = 0; j < d; ++j)
        stats.randomCorners.record(randomError[j], bound.perComponent[j],
                                   slack);
    }
  }
}

TEST(BoundTest, AdversarialCornersAt8BitsAreNearlyTight) {
  Rng rng(8);
  CornerStats stats;
  runCornerTrials(rng, 300, StorageKind::Int8, -0.7, -0.2, stats);
  stats.theorem.print("8-bit adversarial corners, Theorem");
  stats.runtime.print("8-bit adversarial corners, run-time certificate");
  stats.randomCorners.print("8-bit random corners/interior, Theorem");
  std::printf("[tightness] 8-bit corners: mean E_t = %.4f, max E_t = %.4f\n",
              stats.sumE / double(stats.numE), stats.maxE);
  EXPECT_EQ(stats.theorem.violations, 0u);
  EXPECT_EQ(stats.runtime.violations, 0u);
  EXPECT_EQ(stats.randomCorners.violations, 0u);
  // The first-order worst case is attained, so the bound is nearly sharp.
  EXPECT_GT(stats.theorem.maxRatio, 0.94);
}

TEST(BoundTest, LowBitKeysWithLargeQueriesNeverViolate) {
  Rng rng(23);
  for (StorageKind keyKind : {StorageKind::Int2, StorageKind::Int3}) {
    CornerStats stats;
    runCornerTrials(rng, 160, keyKind, -0.5, 0.3, stats);
    std::string label =
        std::string(getStorageKindName(keyKind)) + " keys, large |q|";
    stats.theorem.print((label + ", Theorem").c_str());
    stats.runtime.print((label + ", run-time certificate").c_str());
    stats.randomCorners.print((label + ", random corners").c_str());
    std::printf("[tightness] %s: mean E_t = %.3f, max E_t = %.3f, "
                "E_t > 1 for %.0f%% of positions, max measured/first-order = "
                "%.2f\n",
                label.c_str(), stats.sumE / double(stats.numE), stats.maxE,
                100.0 * double(stats.numLargeE) / double(stats.numE),
                stats.maxOverFirstOrder);
    EXPECT_EQ(stats.theorem.violations, 0u);
    EXPECT_EQ(stats.runtime.violations, 0u);
    EXPECT_EQ(stats.randomCorners.violations, 0u);
    EXPECT_GT(stats.maxE, 1.0);
    // The linearisation is not a bound in this regime.
    EXPECT_GT(stats.maxOverFirstOrder, 1.0);
  }
}

// At boxes of 1e-7 the §1 first-order estimate is the attained worst case:
// the adversarial corner for component j moves o_j by it to within the
// second-order terms (about E_t relative), so the corner's measured error
// is a finite-difference check of firstOrderPerComponent, and the Theorem
// must lie between that error and the estimate.
TEST(BoundTest, ReducesToFirstOrderForSmallErrors) {
  Rng rng(31);
  size_t numComponents = 0;
  double maxDeviation = 0.0, minTheoremOverMeasured = HUGE_VAL;
  for (int c = 0; c < 50; ++c) {
    size_t d = randomHeadDim(rng), T = randomLength(rng, 1, 100);
    std::vector<double> q = randomQuery(rng, d, 1.0);
    Matrix K = randomCache(rng, T, d, 1.0), V = randomCache(rng, T, d, 1.0);
    Matrix deltaK(T, d), deltaV(T, d);
    for (double &x : deltaK.values)
      x = 1e-7 * uniform(rng, 0.0, 1.0);
    for (double &x : deltaV.values)
      x = 1e-7 * uniform(rng, 0.0, 1.0);
    CertifiedBound bound;
    ASSERT_TRUE(computeCertifiedBound(q, K, V, deltaK, deltaV, bound).ok());
    // The measured errors are about 1e-8, so the reference arithmetic's
    // 1e-13 is a visible part of them.
    double slack = referenceSlack(V);
    for (size_t j = 0; j < d; ++j) {
      Matrix Khat, Vhat;
      makeAdversarialCorner(q, K, V, deltaK, deltaV, j, Khat, Vhat);
      double measured = outputError(q, K, V, Khat, Vhat)[j];
      double firstOrder = bound.firstOrderPerComponent[j];
      ++numComponents;
      maxDeviation =
          std::max(maxDeviation, std::fabs(measured / firstOrder - 1));
      minTheoremOverMeasured =
          std::min(minTheoremOverMeasured, bound.perComponent[j] / measured);
      EXPECT_NEAR(measured, firstOrder, 1e-5 * firstOrder + slack)
          << "d=" << d << " T=" << T << " j=" << j;
      EXPECT_GE(bound.perComponent[j] + slack, measured);
      EXPECT_LE(bound.perComponent[j], firstOrder * (1 + 1e-5));
    }
  }
  std::printf("[tightness] first order at 1e-7 boxes: components=%zu, max "
              "|corner error / first-order - 1| = %.2e, min Theorem / corner "
              "error = %.8f\n",
              numComponents, maxDeviation, minTheoremOverMeasured);
}

TEST(BoundTest, AlternativeFirstTermNeedsNoAttention) {
  // A single huge E on a position with large deltaV: the max_t deltaV
  // alternative caps the value term.
  std::vector<double> q = {4.0, -4.0};
  Matrix K(2, 2), V(2, 1);
  K(0, 0) = 1.0;
  K(1, 1) = 1.0;
  V(0, 0) = 1.0;
  V(1, 0) = -1.0;
  Matrix deltaK(2, 2, 0.5), deltaV(2, 1, 0.25);
  CertifiedBound bound;
  ASSERT_TRUE(computeCertifiedBound(q, K, V, deltaK, deltaV, bound).ok());
  EXPECT_DOUBLE_EQ(bound.valueTerm[0], 0.25);
  EXPECT_GT(bound.keyTerm[0], 0.0);
}

TEST(BoundTest, SoftmaxPerturbationLemma) {
  Rng rng(2);
  // Sharpness: two positions with e = (E, -E) reach tanh(E/2) of total
  // variation at the best split.
  for (double E : {0.01, 0.3, 1.0, 3.0}) {
    double bestTotalVariation = 0.0;
    for (int i = 1; i < 2000; ++i) {
      double p = i / 2000.0;
      double Z = p * std::exp(E) + (1 - p) * std::exp(-E);
      bestTotalVariation =
          std::max(bestTotalVariation, p * (std::exp(E) / Z - 1));
    }
    EXPECT_NEAR(2 * bestTotalVariation, computeSoftmaxPerturbationL1Bound(E),
                1e-5 * E);
  }
  for (int c = 0; c < 300; ++c) {
    size_t T = randomLength(rng, 2, 200);
    double E = std::pow(10.0, uniform(rng, -3.0, 0.7));
    std::vector<double> s(T), e(T);
    for (size_t t = 0; t < T; ++t) {
      s[t] = normal(rng, 0.0, 2.0);
      e[t] =
          c % 2 ? E * (uniform(rng, 0, 1) < 0.5 ? -1 : 1) : uniform(rng, -E, E);
    }
    auto softmax = [](const std::vector<double> &x) {
      double m = *std::max_element(x.begin(), x.end()), sum = 0.0;
      std::vector<double> y(x.size());
      for (size_t i = 0; i < x.size(); ++i)
        sum += y[i] = std::exp(x[i] - m);
      for (double &v : y)
        v /= sum;
      return y;
    };
    std::vector<double> a = softmax(s), se = s;
    for (size_t t = 0; t < T; ++t)
      se[t] += e[t];
    std::vector<double> aHat = softmax(se);
    double l1 = 0.0;
    for (size_t t = 0; t < T; ++t) {
      l1 += std::fabs(aHat[t] - a[t]);
      // Lemma 2(b): a^_t / a_t in [e^{-2E}, e^{2E}].
      EXPECT_LE(aHat[t], a[t] * std::exp(2 * E) * (1 + 1e-12));
      EXPECT_GE(aHat[t], a[t] * std::exp(-2 * E) * (1 - 1e-12));
    }
    EXPECT_LE(l1, computeSoftmaxPerturbationL1Bound(E) + 1e-14);
    EXPECT_LE(computeSoftmaxPerturbationL1Bound(E), E);
  }
}

/// Block statistics of rows [begin, end) of a cache.
BlockStatistics blockStatistics(const Matrix &m, size_t begin, size_t end) {
  BlockStatistics stats;
  stats.numTokens = unsigned(end - begin);
  stats.channelRanges.resize(m.cols);
  for (size_t j = 0; j < m.cols; ++j) {
    ValueRange range{m(begin, j), m(begin, j)};
    for (size_t t = begin; t < end; ++t) {
      range.min = std::min(range.min, m(t, j));
      range.max = std::max(range.max, m(t, j));
    }
    stats.channelRanges[j] = range;
  }
  return stats;
}

// End to end from statistics: per-block calibration ranges give delta
// (ErrorModel), position-class envelopes give (C1) and (C2); the static
// certificate must bound the error of the actual quantized cache for every
// query that satisfies the envelopes.
TEST(BoundTest, StaticCertificateFromStatisticsHolds) {
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
    ASSERT_TRUE(
        computeStaticCertifiedBound(classes, valueSpan, {}, staticBound).ok());

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
// envelopes. The tolerance is the smallest one the items fit, so the
// measured errors are compared with the allocator's own acceptance test.
TEST(BoundTest, DecoupledToleranceCertifiesQuantizedCaches) {
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
    StaticBoundOptions options;
    options.logitErrorCap = cap;
    StaticCertifiedBound staticBound;
    ASSERT_TRUE(
        computeStaticCertifiedBound(classes, valueSpan, options, staticBound)
            .ok());
    EXPECT_LE(staticBound.meanLogitErrorBound, cap);
    EXPECT_LE(staticBound.infNorm, staticBound.decoupledInfNorm * (1 + 1e-12));
    double tolerance =
        smallestAcceptedTolerance(sumItemErrors(classes, valueSpan, cap), cap);

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
TEST(BoundTest, StaticAndDecoupledBoundsAreAttained) {
  Rng rng(6);
  double minStatic = HUGE_VAL, minDecoupled = HUGE_VAL;
  size_t numCases = 0;
  for (double cap : {0.05, 0.25}) {
    StaticBoundOptions options;
    options.logitErrorCap = cap;
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
      ASSERT_TRUE(
          computeStaticCertifiedBound(classes, span, options, bound).ok());
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
      ASSERT_TRUE(
          computeStaticCertifiedBound(classes, span, options, bound).ok());
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

TEST(BoundTest, StaticEnvelopeChecks) {
  // A class above the cap is rejected; envelopes summing below one too.
  std::vector<PositionClassEnvelope> classes(1);
  classes[0].maxLogitError = 0.3;
  classes[0].maxValueError = {0.01};
  StaticBoundOptions options;
  options.logitErrorCap = 0.25;
  StaticCertifiedBound bound;
  Status status = computeStaticCertifiedBound(classes, {1.0}, options, bound);
  ASSERT_TRUE(status.failed());
  EXPECT_NE(status.getMessage().find("cap"), std::string::npos);
  classes[0].maxLogitError = 0.1;
  classes[0].attentionMass = 0.5;
  status = computeStaticCertifiedBound(classes, {1.0}, options, bound);
  ASSERT_TRUE(status.failed());
  EXPECT_NE(status.getMessage().find("sum"), std::string::npos);
  // With no attention knowledge (A = 1 everywhere) the bound is the uniform
  // one (§5 honesty note): classes that are better in every respect than
  // the worst one add nothing to it.
  std::vector<PositionClassEnvelope> uniformClasses(3);
  for (size_t i = 0; i < 3; ++i) {
    uniformClasses[i].attentionMass = 1.0;
    uniformClasses[i].maxLogitError = 0.01 * double(i + 1);
    uniformClasses[i].maxValueError = {0.001 * double(i + 1)};
  }
  StaticCertifiedBound worstAlone;
  ASSERT_TRUE(
      computeStaticCertifiedBound(uniformClasses, {2.0}, {}, bound).ok());
  ASSERT_TRUE(
      computeStaticCertifiedBound({uniformClasses[2]}, {2.0}, {}, worstAlone)
          .ok());
  EXPECT_NEAR(bound.infNorm, worstAlone.infNorm, 1e-15);
  EXPECT_GT(bound.infNorm, 0.0);
}

/// A straightforward f32 decode-attention kernel: two-pass softmax, or online
/// softmax (running max, rescaled numerator and denominator).
std::vector<double> runF32Kernel(const std::vector<double> &q, const Matrix &K,
                                 const Matrix &V, bool online,
                                 unsigned &numRescales) {
  const size_t T = K.rows, d = K.cols, dv = V.cols;
  const float scale = float(1.0 / std::sqrt(double(d)));
  std::vector<float> s(T);
  for (size_t t = 0; t < T; ++t) {
    float dot = 0.0f;
    for (size_t j = 0; j < d; ++j)
      dot += float(q[j]) * float(K(t, j));
    s[t] = dot * scale;
  }
  std::vector<float> accumulator(dv, 0.0f);
  numRescales = 0;
  if (!online) {
    float m = *std::max_element(s.begin(), s.end()), Z = 0.0f;
    std::vector<float> p(T);
    for (size_t t = 0; t < T; ++t)
      Z += p[t] = std::exp(s[t] - m);
    for (size_t t = 0; t < T; ++t) {
      float w = p[t] / Z;
      for (size_t j = 0; j < dv; ++j)
        accumulator[j] += w * float(V(t, j));
    }
    return std::vector<double>(accumulator.begin(), accumulator.end());
  }
  float m = -INFINITY, l = 0.0f;
  for (size_t t = 0; t < T; ++t) {
    if (s[t] > m) {
      if (t > 0) {
        float alpha = std::exp(m - s[t]);
        l *= alpha;
        for (float &a : accumulator)
          a *= alpha;
        ++numRescales;
      }
      m = s[t];
    }
    float p = std::exp(s[t] - m);
    l += p;
    for (size_t j = 0; j < dv; ++j)
      accumulator[j] += p * float(V(t, j));
  }
  std::vector<double> output(dv);
  for (size_t j = 0; j < dv; ++j)
    output[j] = accumulator[j] / l;
  return output;
}

TEST(BoundTest, KernelRoundingTermBoundsF32Kernel) {
  Rng rng(13);
  TightnessTracker twoPass, online, total;
  for (int c = 0; c < 300; ++c) {
    size_t d = randomHeadDim(rng), T = randomLength(rng, 1, 2000);
    std::vector<double> q =
        randomQuery(rng, d, std::pow(10.0, uniform(rng, -0.5, 0.7)));
    Matrix K = randomCache(rng, T, d, 1.0, 0.02, 5.0);
    Matrix V = randomCache(rng, T, d, 1.0, 0.02, 5.0,
                           c % 3 ? 0.0 : uniform(rng, -5.0, 5.0));
    unsigned g = unsigned(std::min<size_t>(32, d));
    StorageFormat format =
        StorageFormat::scaled(StorageKind::Int8, QuantScheme::Symmetric,
                              Granularity::TokenGroup, g, StorageKind::F16);
    QuantizedMatrix Kq, Vq;
    ASSERT_TRUE(quantizeMatrix(format, K, {}, Kq).ok());
    ASSERT_TRUE(quantizeMatrix(format, V, {}, Vq).ok());
    AttentionResult exactOnDequantized =
        computeAttention(q, Kq.dequantized, Vq.dequantized);
    for (bool isOnline : {false, true}) {
      unsigned numRescales;
      std::vector<double> kernelOutput = runF32Kernel(
          q, Kq.dequantized, Vq.dequantized, isOnline, numRescales);
      KernelRoundingModel model;
      model.numRescales = numRescales;
      KernelRoundingBound kernelBound;
      ASSERT_TRUE(computeKernelRoundingBound(q, Kq.dequantized, Vq.dequantized,
                                             model, kernelBound)
                      .ok());
      TightnessTracker &tracker = isOnline ? online : twoPass;
      for (size_t j = 0; j < d; ++j)
        tracker.record(
            std::fabs(kernelOutput[j] - exactOnDequantized.output[j]),
            kernelBound.perComponent[j]);
      // The complete certificate: quantization + kernel rounding.
      CertifiedBound quantizationBound;
      ASSERT_TRUE(computeCertifiedBound(q, K, V, Kq.errorBounds, Vq.errorBounds,
                                        quantizationBound)
                      .ok());
      AttentionResult exact = computeAttention(q, K, V);
      for (size_t j = 0; j < d; ++j)
        total.record(std::fabs(kernelOutput[j] - exact.output[j]),
                     quantizationBound.perComponent[j] +
                         kernelBound.perComponent[j],
                     referenceSlack(V));
    }
  }
  twoPass.print("kernel rounding term, f32 two-pass kernel");
  online.print("kernel rounding term, f32 online-softmax kernel");
  total.print("quantization + kernel rounding, f32 kernel");
  EXPECT_EQ(twoPass.violations, 0u);
  EXPECT_EQ(online.violations, 0u);
  EXPECT_EQ(total.violations, 0u);
}

TEST(BoundTest, ShapeErrorsAreReported) {
  std::vector<double> q(4, 1.0);
  Matrix K(3, 4), V(3, 2), deltaK(3, 4), deltaV(3, 2);
  CertifiedBound bound;
  EXPECT_TRUE(computeCertifiedBound(q, K, V, deltaK, deltaV, bound).ok());
  EXPECT_TRUE(
      computeCertifiedBound({1.0}, K, V, deltaK, deltaV, bound).failed());
  EXPECT_TRUE(
      computeCertifiedBound(q, K, Matrix(2, 2), deltaK, Matrix(2, 2), bound)
          .failed());
  EXPECT_TRUE(
      computeCertifiedBound(q, K, V, Matrix(3, 3), deltaV, bound).failed());
  Matrix negative(3, 2, -1.0);
  Status status = computeCertifiedBound(q, K, V, deltaK, negative, bound);
  ASSERT_TRUE(status.failed());
  EXPECT_NE(status.getMessage().find("non-negative"), std::string::npos);
  RuntimeCertificate certificate;
  EXPECT_TRUE(computeRuntimeCertificate(q, Matrix(0, 4), Matrix(0, 2),
                                        Matrix(0, 4), Matrix(0, 2), certificate)
                  .failed());
  KernelRoundingModel badModel;
  badModel.unitRoundoff = 0.0;
  KernelRoundingBound kernelBound;
  EXPECT_TRUE(
      computeKernelRoundingBound(q, K, V, badModel, kernelBound).failed());
}

} // namespace
