//===- BoundTest.cpp - Certified bound trials -----------------------------===//
//
// Random and adversarial trials of the Theorem of error-bounds.md §2, the
// run-time certificate of §5, and the kernel rounding term (the static
// certificate of §5, certify::computeClassBound, and the §4 decoupled
// tolerance are tried in unittests/Certify/ClassBoundTest.cpp). Every trial
// must show zero violations. Measured errors are differences of two double
// evaluations of attention, so comparisons allow 1e-13 * (1 + max|V|) for
// the reference arithmetic itself.
//
//===----------------------------------------------------------------------===//

#include "kvprec/Analysis/Bound.h"
#include "kvprec/Analysis/ErrorModel.h"
#include "kvprec/Analysis/Quantizer.h"

#include "AttentionTestUtil.h"
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

namespace {
/// The §9 levels for one head at failure probability p (split in three).
ConcentrationLevels levelsFor(double p, size_t positions, size_t channels) {
  ConcentrationLevels levels;
  levels.logit = std::sqrt(2 * std::log(2 * double(positions) / (p / 3)));
  levels.value = levels.key =
      std::sqrt(2 * std::log(2 * double(channels) / (p / 3)));
  return levels;
}
} // namespace

// The probabilistic run-time certificate under its own model (M): stored
// errors drawn independently, uniformly within their bounds (mean zero).
// At p = 1e-6 per trial, no trial may exceed it; it never exceeds the
// deterministic certificate, and for spread attention it is much smaller.
TEST(BoundTest, ProbabilisticRuntimeCertificateHoldsUnderTheRoundingModel) {
  Rng rng(41);
  size_t trials = 0, violations = 0, muchTighter = 0;
  double worstRatio = 0.0;
  for (int trial = 0; trial < 300; ++trial) {
    size_t d = randomHeadDim(rng), T = randomLength(rng, 8, 1024);
    Matrix K = randomCache(rng, T, d, 1.0, 0.02);
    Matrix V = randomCache(rng, T, d, 1.0, 0.02);
    std::vector<double> q = randomQuery(rng, d, uniform(rng, 0.2, 2.0));
    double scale = std::exp(uniform(rng, std::log(1e-4), std::log(0.2)));
    Matrix deltaK(T, d), deltaV(T, d), Khat = K, Vhat = V;
    for (size_t t = 0; t < T; ++t)
      for (size_t j = 0; j < d; ++j) {
        deltaK(t, j) = scale * uniform(rng, 0.2, 1.0);
        deltaV(t, j) = scale * uniform(rng, 0.2, 1.0);
        Khat(t, j) += uniform(rng, -1.0, 1.0) * deltaK(t, j);
        Vhat(t, j) += uniform(rng, -1.0, 1.0) * deltaV(t, j);
      }
    RuntimeCertificate deterministic, probabilistic;
    ConcentrationLevels levels = levelsFor(1e-6, T, d);
    ASSERT_TRUE(computeRuntimeCertificate(q, Khat, Vhat, deltaK, deltaV,
                                          deterministic)
                    .ok());
    ASSERT_TRUE(computeRuntimeCertificate(q, Khat, Vhat, deltaK, deltaV,
                                          probabilistic, &levels)
                    .ok());
    std::vector<double> error = outputError(q, K, V, Khat, Vhat);
    double measured = *std::max_element(error.begin(), error.end());
    ++trials;
    violations += measured > probabilistic.infNorm + referenceSlack(V);
    worstRatio = std::max(worstRatio, measured / probabilistic.infNorm);
    EXPECT_LE(probabilistic.infNorm, deterministic.infNorm * (1 + 1e-12));
    muchTighter += probabilistic.infNorm < 0.5 * deterministic.infNorm;
  }
  std::printf("[probabilistic] %zu trials, %zu violations, worst "
              "error/bound %.3f, %zu at most half the deterministic bound\n",
              trials, violations, worstRatio, muchTighter);
  EXPECT_EQ(violations, 0u);
  EXPECT_GT(muchTighter, trials / 4);
}

// Outside its model the probabilistic certificate is no promise: value
// errors that all push the same way (not mean zero, not independent) over
// spread attention exceed it, while the deterministic certificate, which
// assumes nothing about the errors but their bounds, holds.
TEST(BoundTest, ProbabilisticRuntimeCertificateRestsOnTheRoundingModel) {
  Rng rng(43);
  size_t d = 64, T = 1024;
  Matrix K = randomCache(rng, T, d, 1.0, 0.0);
  Matrix V = randomCache(rng, T, d, 1.0, 0.0);
  std::vector<double> q = randomQuery(rng, d, 0.05);
  Matrix deltaK(T, d), deltaV(T, d), Vhat = V;
  for (size_t t = 0; t < T; ++t)
    for (size_t j = 0; j < d; ++j) {
      deltaV(t, j) = 1e-3;
      Vhat(t, j) += deltaV(t, j);
    }
  RuntimeCertificate deterministic, probabilistic;
  ConcentrationLevels levels = levelsFor(1e-9, T, d);
  ASSERT_TRUE(
      computeRuntimeCertificate(q, K, Vhat, deltaK, deltaV, deterministic)
          .ok());
  ASSERT_TRUE(computeRuntimeCertificate(q, K, Vhat, deltaK, deltaV,
                                        probabilistic, &levels)
                  .ok());
  std::vector<double> error = outputError(q, K, V, K, Vhat);
  double measured = *std::max_element(error.begin(), error.end());
  EXPECT_NEAR(measured, 1e-3, 1e-12);
  EXPECT_LE(measured, deterministic.infNorm + referenceSlack(V));
  EXPECT_GT(measured, 2 * probabilistic.infNorm);
  std::printf("[probabilistic] aligned errors: measured %.3g, deterministic "
              "%.3g, probabilistic %.3g\n",
              measured, deterministic.infNorm, probabilistic.infNorm);
}
