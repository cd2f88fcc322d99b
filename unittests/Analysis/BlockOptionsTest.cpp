//===- BlockOptionsTest.cpp - From statistics to a certified plan ---------===//
//
// The §4 chain end to end: block statistics and envelopes -> per-format
// options -> knapsack with eps' = eps e^{-E_cap} -> static certificate of the
// chosen plan <= eps -> the actual quantized cache's error <= certificate.
//
//===----------------------------------------------------------------------===//

#include "kvprec/Analysis/BlockOptions.h"
#include "kvprec/Analysis/Bound.h"

#include "TestUtil.h"

#include "gtest/gtest.h"

#include <algorithm>
#include <cmath>

using namespace kvprec::analysis;
using namespace kvprec::analysis::test;

namespace {

const size_t kBlockTokens = 32;

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

Matrix rowsOf(const Matrix &m, size_t begin, size_t end) {
  Matrix block(end - begin, m.cols);
  for (size_t t = begin; t < end; ++t)
    for (size_t j = 0; j < m.cols; ++j)
      block(t - begin, j) = m(t, j);
  return block;
}

std::vector<StorageFormat> keyCandidates() {
  return {
      StorageFormat::scaled(StorageKind::Int2, QuantScheme::Asymmetric,
                            Granularity::ChannelGroup, 32, StorageKind::F16),
      StorageFormat::scaled(StorageKind::Int4, QuantScheme::Asymmetric,
                            Granularity::ChannelGroup, 32, StorageKind::F16),
      StorageFormat::scaled(StorageKind::F8E4M3FN, QuantScheme::Symmetric,
                            Granularity::TokenGroup, 32, StorageKind::F16),
      StorageFormat::scaled(StorageKind::Int8, QuantScheme::Symmetric,
                            Granularity::TokenGroup, 32, StorageKind::F16),
      StorageFormat::unscaled(StorageKind::F16)};
}

std::vector<StorageFormat> valueCandidates() {
  return {StorageFormat::scaled(StorageKind::Int2, QuantScheme::Asymmetric,
                                Granularity::TokenGroup, 32, StorageKind::F16),
          StorageFormat::scaled(StorageKind::Int4, QuantScheme::Asymmetric,
                                Granularity::TokenGroup, 32, StorageKind::F16),
          StorageFormat::scaled(StorageKind::F8E5M2, QuantScheme::Symmetric,
                                Granularity::TokenGroup, 32, StorageKind::F16),
          StorageFormat::scaled(StorageKind::Int8, QuantScheme::Symmetric,
                                Granularity::TokenGroup, 32, StorageKind::F16),
          StorageFormat::unscaled(StorageKind::F16)};
}

TEST(BlockOptionsTest, AllocatedPlanIsCertified) {
  Rng rng(2025);
  TightnessTracker measuredVsCertificate;
  double sumSavingsVsF16 = 0.0, sumSavingsVsInt8 = 0.0;
  int numPlans = 0, numInt8Certified = 0;
  const double cap = 0.5;
  for (int c = 0; c < 40; ++c) {
    const size_t d = 32, numBlocks = uniformIndex(rng, 3, 12);
    const size_t T = numBlocks * kBlockTokens;
    Matrix K = randomCache(rng, T, d, 1.0, 0.02, 6.0);
    Matrix V = randomCache(rng, T, d, 1.0, 0.02, 4.0);
    // Recent tokens resemble the queries, so attention concentrates there.
    std::vector<std::vector<double>> queries;
    for (int i = 0; i < 8; ++i)
      queries.push_back(randomQuery(rng, d, uniform(rng, 0.2, 0.6)));
    for (size_t t = T - kBlockTokens; t < T; ++t)
      for (size_t j = 0; j < d; ++j)
        K(t, j) = toF32(K(t, j) + 2 * queries[0][j]);

    std::vector<double> queryBound(d, 0.0), massBound(numBlocks, 0.0);
    for (const std::vector<double> &q : queries) {
      for (size_t j = 0; j < d; ++j)
        queryBound[j] = std::max(queryBound[j], std::fabs(q[j]));
      AttentionResult attention = computeAttention(q, K, V);
      for (size_t b = 0; b < numBlocks; ++b) {
        double mass = 0.0;
        for (size_t t = b * kBlockTokens; t < (b + 1) * kBlockTokens; ++t)
          mass += attention.weights[t];
        massBound[b] = std::max(massBound[b], mass);
      }
    }
    std::vector<double> span = computeValueSpan(V);
    double residualBound = *std::max_element(span.begin(), span.end());

    AllocationProblem problem;
    std::vector<std::vector<BlockOption>> keyOptions(numBlocks),
        valueOptions(numBlocks);
    double uniformInt8Error = 0.0, uniformInt8Bytes = 0.0,
           uniformF16Bytes = 0.0;
    size_t numInt8Options = 0;
    for (size_t b = 0; b < numBlocks; ++b) {
      size_t begin = b * kBlockTokens, end = begin + kBlockTokens;
      ASSERT_TRUE(computeKeyBlockOptions(keyCandidates(),
                                         blockStatistics(K, begin, end),
                                         massBound[b], queryBound,
                                         residualBound, cap, {}, keyOptions[b])
                      .ok());
      ASSERT_TRUE(computeValueBlockOptions(
                      valueCandidates(), blockStatistics(V, begin, end),
                      massBound[b], cap, {}, valueOptions[b])
                      .ok());
      ASSERT_TRUE(addAllocationItem(problem, keyOptions[b]).ok());
      ASSERT_TRUE(addAllocationItem(problem, valueOptions[b]).ok());
      for (const std::vector<BlockOption> *options :
           {&keyOptions[b], &valueOptions[b]})
        for (const BlockOption &option : *options)
          if (option.format.kind == StorageKind::Int8) {
            uniformInt8Error += option.error;
            uniformInt8Bytes += double(option.bytes);
            ++numInt8Options;
          } else if (option.format.kind == StorageKind::F16) {
            uniformF16Bytes += double(option.bytes);
          }
    }
    // A tolerance around what uniform int8 would certify.
    double tolerance =
        std::exp(cap) * uniformInt8Error * uniform(rng, 0.3, 3.0);
    AllocationResult plan = minimizeCostForError(
        problem, computeDecoupledTolerance(tolerance, cap));
    if (!plan.ok())
      continue; // Tolerance below what the most precise options reach.
    ++numPlans;
    sumSavingsVsF16 += 1.0 - plan.totalCost / uniformF16Bytes;
    // Where uniform int8 is itself certified, the plan is no larger than it
    // (up to the greedy's last step).
    if (numInt8Options == 2 * numBlocks &&
        uniformInt8Error <= computeDecoupledTolerance(tolerance, cap)) {
      ++numInt8Certified;
      sumSavingsVsInt8 += 1.0 - plan.totalCost / uniformInt8Bytes;
      EXPECT_LE(plan.totalCost, uniformInt8Bytes + plan.maxUpgradeCost);
    }

    // Certify the chosen plan and quantize the cache with it.
    std::vector<PositionClassEnvelope> classes(numBlocks);
    Matrix Khat(T, d), Vhat(T, d);
    for (size_t b = 0; b < numBlocks; ++b) {
      size_t begin = b * kBlockTokens, end = begin + kBlockTokens;
      const BlockOption &keyChoice = keyOptions[b][plan.choice[2 * b]];
      const BlockOption &valueChoice = valueOptions[b][plan.choice[2 * b + 1]];
      classes[b].attentionMass = massBound[b];
      classes[b].maxLogitError = keyChoice.logitError;
      ASSERT_TRUE(computeBlockChannelErrorBounds(valueChoice.format,
                                                 blockStatistics(V, begin, end),
                                                 {}, classes[b].maxValueError)
                      .ok());
      QuantizedMatrix Kq, Vq;
      ASSERT_TRUE(
          quantizeMatrix(keyChoice.format, rowsOf(K, begin, end), {}, Kq).ok());
      ASSERT_TRUE(
          quantizeMatrix(valueChoice.format, rowsOf(V, begin, end), {}, Vq)
              .ok());
      for (size_t t = begin; t < end; ++t)
        for (size_t j = 0; j < d; ++j) {
          Khat(t, j) = Kq.dequantized(t - begin, j);
          Vhat(t, j) = Vq.dequantized(t - begin, j);
        }
    }
    StaticBoundOptions options;
    options.logitErrorCap = cap;
    StaticCertifiedBound certificate;
    ASSERT_TRUE(
        computeStaticCertifiedBound(classes, span, options, certificate).ok());
    EXPECT_LE(certificate.decoupledInfNorm, tolerance * (1 + 1e-12));
    EXPECT_LE(certificate.infNorm, certificate.decoupledInfNorm);
    for (const std::vector<double> &q : queries) {
      AttentionResult exact = computeAttention(q, K, V);
      AttentionResult quantized = computeAttention(q, Khat, Vhat);
      double error = 0.0;
      for (size_t j = 0; j < d; ++j)
        error =
            std::max(error, std::fabs(quantized.output[j] - exact.output[j]));
      measuredVsCertificate.record(error, certificate.infNorm, 1e-13);
    }
  }
  measuredVsCertificate.print("allocated plan: error / static certificate");
  std::printf("[allocator] %d certified plans, mean bytes saved vs uniform "
              "f16: %.1f%%; vs uniform int8 where int8 is certified (%d "
              "plans): %.1f%%\n",
              numPlans, 100.0 * sumSavingsVsF16 / std::max(numPlans, 1),
              numInt8Certified,
              100.0 * sumSavingsVsInt8 / std::max(numInt8Certified, 1));
  EXPECT_GT(numPlans, 20);
  EXPECT_EQ(measuredVsCertificate.violations, 0u);
}

TEST(BlockOptionsTest, PruningAndFailures) {
  BlockStatistics stats;
  stats.numTokens = 32;
  stats.channelRanges.assign(32, {-4.0, 4.0});
  std::vector<double> largeQuery(32, 10.0);
  std::vector<BlockOption> options;
  // Only f16 keys meet the cap with this query envelope.
  ASSERT_TRUE(computeKeyBlockOptions(keyCandidates(), stats, 0.5, largeQuery,
                                     1.0, 0.25, {}, options)
                  .ok());
  ASSERT_EQ(options.size(), 1u);
  for (const BlockOption &option : options) {
    EXPECT_LE(option.logitError, 0.25);
    EXPECT_EQ(option.format.kind, StorageKind::F16);
    EXPECT_DOUBLE_EQ(option.error, 0.5 * std::expm1(option.logitError));
    EXPECT_EQ(option.bytes, getStorageBytes(option.format, 32 * 32));
  }
  Status status = computeKeyBlockOptions({keyCandidates()[0]}, stats, 0.5,
                                         largeQuery, 1.0, 0.25, {}, options);
  ASSERT_TRUE(status.failed());
  EXPECT_NE(status.getMessage().find("cap"), std::string::npos);
  stats.numTokens = 24; // Not whole channel groups of 32.
  EXPECT_TRUE(computeKeyBlockOptions(keyCandidates(), stats, 0.5, largeQuery,
                                     1.0, 0.25, {}, options)
                  .failed());
  EXPECT_TRUE(
      computeValueBlockOptions({}, stats, 0.5, 0.25, {}, options).failed());
}

} // namespace
