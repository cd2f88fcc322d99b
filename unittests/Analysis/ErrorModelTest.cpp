//===- ErrorModelTest.cpp - Error bounds from range statistics ------------===//

#include "kvprec/Analysis/ErrorModel.h"
#include "kvprec/Analysis/SoftFloat.h"

#include "TestUtil.h"

#include "gtest/gtest.h"

#include <algorithm>
#include <cmath>

using namespace kvprec::analysis;
using namespace kvprec::analysis::test;

namespace {

std::vector<StorageFormat> blockFormats(Granularity granularity,
                                        unsigned groupSize) {
  std::vector<StorageFormat> formats = {
      StorageFormat::unscaled(StorageKind::F32),
      StorageFormat::unscaled(StorageKind::F16),
      StorageFormat::unscaled(StorageKind::BF16)};
  for (StorageKind kind : {StorageKind::F8E4M3FN, StorageKind::F8E5M2})
    formats.push_back(StorageFormat::scaled(kind, QuantScheme::Symmetric,
                                            granularity, groupSize,
                                            StorageKind::F16));
  for (StorageKind kind : {StorageKind::Int8, StorageKind::Int4,
                           StorageKind::Int3, StorageKind::Int2})
    for (QuantScheme scheme : {QuantScheme::Symmetric, QuantScheme::Asymmetric})
      for (StorageKind scaleKind : {StorageKind::F32, StorageKind::F16})
        formats.push_back(StorageFormat::scaled(kind, scheme, granularity,
                                                groupSize, scaleKind));
  return formats;
}

BlockStatistics statisticsOf(const Matrix &block, double inflate) {
  BlockStatistics stats;
  stats.numTokens = unsigned(block.rows);
  stats.channelRanges.resize(block.cols);
  for (size_t j = 0; j < block.cols; ++j) {
    double lo = block(0, j), hi = block(0, j);
    for (size_t t = 1; t < block.rows; ++t) {
      lo = std::min(lo, block(t, j));
      hi = std::max(hi, block(t, j));
    }
    double pad = inflate * (hi - lo);
    stats.channelRanges[j] = {lo - pad, hi + pad};
  }
  return stats;
}

// The statistics-based delta bounds the actual error of every element of
// every block whose data lies inside the statistics, for both granularities
// and every format.
TEST(ErrorModelTest, StatisticsBoundDominatesQuantizer) {
  Rng rng(42);
  const DequantizerConfig dequantizers[] = {{StorageKind::F32},
                                            {StorageKind::F16}};
  TightnessTracker tracker;
  size_t numChecked = 0;
  for (int trial = 0; trial < 60; ++trial) {
    const size_t tokens = 32, channels = 16;
    double scale = std::pow(10.0, uniform(rng, -2.0, 2.0));
    Matrix block = randomCache(rng, tokens, channels, scale, 0.02, 20.0,
                               uniform(rng, -1.0, 1.0) * scale);
    double inflate = trial % 2 ? 0.0 : uniform(rng, 0.0, 0.3);
    BlockStatistics stats = statisticsOf(block, inflate);
    for (Granularity granularity :
         {Granularity::TokenGroup, Granularity::ChannelGroup}) {
      unsigned groupSize = granularity == Granularity::TokenGroup ? 8 : 16;
      for (const StorageFormat &format : blockFormats(granularity, groupSize))
        for (const DequantizerConfig &dequantizer : dequantizers) {
          if (verifyDequantizerConfig(format, dequantizer).failed())
            continue;
          std::vector<double> delta;
          Status status =
              computeBlockChannelErrorBounds(format, stats, dequantizer, delta);
          ASSERT_TRUE(status.ok()) << status.getMessage();
          QuantizedMatrix quantized;
          ASSERT_TRUE(
              quantizeMatrix(format, block, dequantizer, quantized).ok());
          for (size_t t = 0; t < tokens; ++t)
            for (size_t j = 0; j < channels; ++j) {
              ++numChecked;
              tracker.record(
                  std::fabs(quantized.dequantized(t, j) - block(t, j)),
                  delta[j]);
            }
        }
    }
  }
  tracker.print("error model: actual error / statistics delta");
  EXPECT_EQ(tracker.violations, 0u);
  EXPECT_GT(numChecked, 1000000u);
}

TEST(ErrorModelTest, Fp8RelativeModel) {
  // §6: delta = u|x| + s eta / 2 up to the quantizer's f32 terms.
  StorageFormat format =
      StorageFormat::scaled(StorageKind::F8E4M3FN, QuantScheme::Symmetric,
                            Granularity::TokenGroup, 32, StorageKind::F32);
  GroupErrorModel model;
  ASSERT_TRUE(buildGroupErrorModel(format, {-448.0, 448.0}, {}, model).ok());
  EXPECT_EQ(model.scale.scale, 1.0);
  for (double m : {0.0, 0.001, 1.0, 10.0, 448.0}) {
    double relativeModel = 0x1p-4 * m + 0x1p-9 / 2;
    double bound = model.elementBound({-m, m});
    EXPECT_GE(bound, relativeModel);
    EXPECT_LE(bound, relativeModel * (1 + 1e-5) + 1e-12);
  }
}

TEST(ErrorModelTest, IntSymmetricModelIsHalfStep) {
  StorageFormat format =
      StorageFormat::scaled(StorageKind::Int4, QuantScheme::Symmetric,
                            Granularity::TokenGroup, 32, StorageKind::F32);
  GroupErrorModel model;
  ASSERT_TRUE(buildGroupErrorModel(format, {-7.0, 3.0}, {}, model).ok());
  EXPECT_EQ(model.scale.scale, 1.0);
  EXPECT_NEAR(model.maxBound(), 0.5, 1e-5);
  EXPECT_GE(model.maxBound(), 0.5);
}

TEST(ErrorModelTest, LogitErrorFromQueryEnvelope) {
  // E = (1/sqrt d) sum_j Q_j delta_j bounds the actual logit error of every
  // position for every query inside the envelope, per granularity.
  Rng rng(9);
  for (Granularity granularity :
       {Granularity::TokenGroup, Granularity::ChannelGroup}) {
    StorageFormat format =
        StorageFormat::scaled(StorageKind::Int4, QuantScheme::Asymmetric,
                              granularity, 16, StorageKind::F16);
    for (int trial = 0; trial < 50; ++trial) {
      Matrix keys = randomCache(rng, 32, 32, 1.0, 0.05, 10.0);
      BlockStatistics stats = statisticsOf(keys, 0.0);
      std::vector<double> envelope(32);
      for (double &q : envelope)
        q = std::fabs(normal(rng, 0.0, 2.0));
      double blockE;
      ASSERT_TRUE(
          computeKeyBlockLogitError(format, stats, envelope, {}, blockE).ok());
      QuantizedMatrix quantized;
      ASSERT_TRUE(quantizeMatrix(format, keys, {}, quantized).ok());
      std::vector<double> query(32);
      for (size_t j = 0; j < 32; ++j)
        query[j] = envelope[j] * uniform(rng, -1.0, 1.0);
      double maxError = 0.0;
      for (size_t t = 0; t < 32; ++t) {
        // The actual logit error q.(K^_t - K_t)/sqrt(d).
        double logitError = 0.0;
        for (size_t j = 0; j < 32; ++j) {
          double error = quantized.dequantized(t, j) - keys(t, j);
          logitError += query[j] * error;
          maxError = std::max(maxError, std::fabs(error));
        }
        EXPECT_LE(std::fabs(logitError) / std::sqrt(32.0), blockE);
      }
      double maxDelta;
      ASSERT_TRUE(computeValueBlockMaxError(format, stats, {}, maxDelta).ok());
      EXPECT_LE(maxError, maxDelta);
    }
  }
}

TEST(ErrorModelTest, FailuresAreReported) {
  BlockStatistics stats;
  stats.numTokens = 24;
  stats.channelRanges.assign(8, {-1.0, 1.0});
  std::vector<double> delta;
  StorageFormat kivi =
      StorageFormat::scaled(StorageKind::Int2, QuantScheme::Asymmetric,
                            Granularity::ChannelGroup, 32, StorageKind::F16);
  Status status = computeBlockChannelErrorBounds(kivi, stats, {}, delta);
  ASSERT_TRUE(status.failed());
  EXPECT_NE(status.getMessage().find("whole channel groups"),
            std::string::npos);

  StorageFormat tokenGroups = kivi;
  tokenGroups.granularity = Granularity::TokenGroup;
  tokenGroups.groupSize = 3;
  EXPECT_TRUE(
      computeBlockChannelErrorBounds(tokenGroups, stats, {}, delta).failed());

  GroupErrorModel model;
  EXPECT_TRUE(buildGroupErrorModel(StorageFormat::unscaled(StorageKind::F16),
                                   {-1e6, 1.0}, {}, model)
                  .failed());
  EXPECT_TRUE(buildGroupErrorModel(kivi, {2.0, 1.0}, {}, model).failed());
  double logitError;
  EXPECT_TRUE(computeKeyBlockLogitError(tokenGroups, stats,
                                        std::vector<double>(3, 1.0), {},
                                        logitError)
                  .failed());
}

// The affine bounds of the relative-error formats (|x^ - x| <= slope |x| +
// offset_j for every element x of channel j, which the logit envelope uses)
// hold for the real quantizer element by element, and are attained: the
// worst relative error of the normal elements reaches the slope (up to the
// factor 1/(1+u) of round to nearest, 0.889 for f8E5M2), and elements small
// enough to be stored subnormal reach the offset. Every block gets such
// elements, below offset_j / slope where the offset dominates. Channel
// groups give every channel its own scale and so its own offset.
TEST(ErrorModelTest, AffineBoundHoldsForQuantizerAndIsAttained) {
  struct Case {
    const char *label;
    StorageFormat format;
    DequantizerConfig dequantizer;
  };
  auto fp8 = [](StorageKind kind, Granularity granularity, unsigned groupSize,
                StorageKind scaleKind) {
    return StorageFormat::scaled(kind, QuantScheme::Symmetric, granularity,
                                 groupSize, scaleKind);
  };
  const Case cases[] = {
      {"f16", StorageFormat::unscaled(StorageKind::F16), {StorageKind::F32}},
      {"f16, f16 dequantizer",
       StorageFormat::unscaled(StorageKind::F16),
       {StorageKind::F16}},
      {"bf16", StorageFormat::unscaled(StorageKind::BF16), {StorageKind::F32}},
      {"f8E4M3FN token groups",
       fp8(StorageKind::F8E4M3FN, Granularity::TokenGroup, 8, StorageKind::F16),
       {StorageKind::F32}},
      {"f8E4M3FN token groups, f16 dequantizer",
       fp8(StorageKind::F8E4M3FN, Granularity::TokenGroup, 8, StorageKind::F16),
       {StorageKind::F16}},
      {"f8E4M3FN channel groups",
       fp8(StorageKind::F8E4M3FN, Granularity::ChannelGroup, 16,
           StorageKind::F32),
       {StorageKind::F32}},
      {"f8E5M2 token groups",
       fp8(StorageKind::F8E5M2, Granularity::TokenGroup, 8, StorageKind::F16),
       {StorageKind::F32}},
      {"f8E5M2 channel groups",
       fp8(StorageKind::F8E5M2, Granularity::ChannelGroup, 16,
           StorageKind::F32),
       {StorageKind::F32}},
  };
  Rng rng(5);
  for (const Case &c : cases) {
    ASSERT_TRUE(verifyDequantizerConfig(c.format, c.dequantizer).ok())
        << c.label;
    size_t numElements = 0, violations = 0, numRelative = 0, numOffset = 0;
    double relativeRatio = 0.0, offsetRatio = 0.0;
    for (int trial = 0; trial < 40; ++trial) {
      const size_t tokens = 32, channels = 16;
      double scale = std::pow(10.0, uniform(rng, -2.0, 2.0));
      Matrix block = randomCache(rng, tokens, channels, scale, 0.02, 20.0,
                                 uniform(rng, -1.0, 1.0) * scale);
      double inflate = trial % 2 ? 0.0 : uniform(rng, 0.0, 0.3);
      double slope = -1.0;
      std::vector<double> offsets;
      Status status =
          computeBlockAffineErrorBounds(c.format, statisticsOf(block, inflate),
                                        c.dequantizer, slope, offsets);
      ASSERT_TRUE(status.ok()) << c.label << ": " << status.getMessage();
      ASSERT_EQ(offsets.size(), channels);
      for (size_t t = 0; t < tokens; ++t)
        for (size_t j = 0; j < channels; ++j)
          if (uniform(rng, 0.0, 1.0) < 0.1)
            block(t, j) = toF32((block(t, j) < 0 ? -1 : 1) * offsets[j] /
                                slope * std::exp2(uniform(rng, -8.0, 0.0)));
      // The bounds of the block as it is now (the tiny elements can move a
      // channel's range toward zero).
      status =
          computeBlockAffineErrorBounds(c.format, statisticsOf(block, inflate),
                                        c.dequantizer, slope, offsets);
      ASSERT_TRUE(status.ok()) << c.label << ": " << status.getMessage();
      QuantizedMatrix quantized;
      ASSERT_TRUE(
          quantizeMatrix(c.format, block, c.dequantizer, quantized).ok());
      for (size_t t = 0; t < tokens; ++t)
        for (size_t j = 0; j < channels; ++j) {
          double x = block(t, j);
          double error = std::fabs(quantized.dequantized(t, j) - x);
          double relative = slope * std::fabs(x), bound = relative + offsets[j];
          ++numElements;
          if (error > bound) {
            ++violations;
            ADD_FAILURE() << c.label << ": x = " << x << " stored as "
                          << quantized.dequantized(t, j) << ", error " << error
                          << " > " << slope << " |x| + " << offsets[j];
          }
          if (bound <= 0)
            continue;
          // Which term the element can attain: the slope far above the
          // offset, the offset where the slope term is below it.
          if (relative >= 64 * offsets[j]) {
            ++numRelative;
            relativeRatio = std::max(relativeRatio, error / bound);
          } else if (relative <= offsets[j]) {
            ++numOffset;
            offsetRatio = std::max(offsetRatio, error / bound);
          }
        }
    }
    std::printf("[tightness] affine bound, %-40s elements=%zu violations=%zu "
                "max error/bound: relative=%.4f (%zu), offset=%.4f (%zu)\n",
                c.label, numElements, violations, relativeRatio, numRelative,
                offsetRatio, numOffset);
    EXPECT_EQ(violations, 0u) << c.label;
    EXPECT_GT(relativeRatio, 0.85) << c.label;
    EXPECT_GT(offsetRatio, 0.5) << c.label;
  }
}

// Integer formats have no affine form: their error does not shrink with the
// element.
TEST(ErrorModelTest, IntegerFormatsHaveNoAffineBound) {
  DequantizerConfig dequantizer;
  BlockStatistics stats;
  stats.numTokens = 4;
  stats.channelRanges.assign(8, {-1.0, 1.0});
  for (StorageKind kind : {StorageKind::Int8, StorageKind::Int4,
                           StorageKind::Int3, StorageKind::Int2}) {
    double slope = 0;
    std::vector<double> offsets;
    Status status = computeBlockAffineErrorBounds(
        StorageFormat::scaled(kind, QuantScheme::Symmetric,
                              Granularity::TokenGroup, 4, StorageKind::F16),
        stats, dequantizer, slope, offsets);
    EXPECT_TRUE(status.failed()) << getStorageKindName(kind);
    EXPECT_NE(status.getMessage().find("no relative error bound"),
              std::string::npos);
  }
}

} // namespace
