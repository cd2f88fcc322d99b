//===- SyntheticTest.cpp - Synthetic statistics generator -----------------===//

#include "kvprec/Calibration/Synthetic.h"

#include "TestUtils.h"

#include "gtest/gtest.h"

#include <algorithm>
#include <cstring>

using namespace llvm;
using namespace kvprec::calib;
using namespace kvprec::calib::test;

namespace {

SyntheticOptions smallOptions() {
  SyntheticOptions options;
  options.layers = 12;
  options.kvHeads = 4;
  options.qHeads = 16;
  options.headDim = 64;
  options.capacity = 4096;
  options.block = 64;
  options.sink = 4;
  options.window = 128;
  options.seed = 7;
  return options;
}

double median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  return values[values.size() / 2];
}

TEST(SyntheticTest, ValidAndLabelled) {
  Expected<CalibrationStats> stats = generateSyntheticStats(smallOptions());
  ASSERT_TRUE(bool(stats)) << errorMessage(stats);
  EXPECT_EQ(errorMessage(validateCalibrationStats(*stats, "synthetic")), "");
  EXPECT_TRUE(stats->synthetic);
  EXPECT_EQ(stats->model, "synthetic");
  EXPECT_EQ(stats->shape.maxPositions, 4096);
  EXPECT_EQ(stats->shape.getNumBodyBlocks(), 62); // ceil(3968 / 64)
  EXPECT_EQ(stats->shape.getNumAbsoluteBlocks(), 64);
  EXPECT_EQ(stats->queryCount[0], 4 * 4096);
  for (int64_t count : stats->positionCount)
    EXPECT_EQ(count, 64);
}

TEST(SyntheticTest, DeterministicInSeed) {
  Expected<CalibrationStats> a = generateSyntheticStats(smallOptions());
  Expected<CalibrationStats> b = generateSyntheticStats(smallOptions());
  SyntheticOptions other = smallOptions();
  other.seed = 8;
  Expected<CalibrationStats> c = generateSyntheticStats(other);
  ASSERT_TRUE(a && b && c);
  for (const CalibrationTensorSpec &spec : getCalibrationTensorSpecs()) {
    if (!spec.f32Member)
      continue;
    const std::vector<float> &x = a.get().*spec.f32Member;
    const std::vector<float> &y = b.get().*spec.f32Member;
    // Bitwise (NaN-safe); memcmp of an empty vector's null data is UB.
    ASSERT_EQ(x.size(), y.size()) << spec.name.str();
    EXPECT_TRUE(x.empty() || std::memcmp(x.data(), y.data(), 4 * x.size()) == 0)
        << spec.name.str();
  }
  EXPECT_NE(a->kChanMax, c->kChanMax);
  EXPECT_NE(a->attnBodyMass, c->attnBodyMass);
}

TEST(SyntheticTest, HasTheStructureOfRealModels) {
  Expected<CalibrationStats> stats = generateSyntheticStats(smallOptions());
  ASSERT_TRUE(bool(stats));
  const CalibrationShape &shape = stats->shape;
  const int64_t L = shape.layers, H = shape.kvHeads, D = shape.headDim,
                NB = shape.getNumBodyBlocks();

  // Sinks grow with depth.
  double firstLayerSink = 0, lastLayerSink = 0;
  for (int64_t h = 0; h < H; ++h) {
    firstLayerSink += stats->attnSinkMass[stats->index(0, h)];
    lastLayerSink += stats->attnSinkMass[stats->index(L - 1, h)];
  }
  EXPECT_GT(lastLayerSink, 2 * firstLayerSink);

  for (int64_t l = 0; l < L; ++l)
    for (int64_t h = 0; h < H; ++h) {
      size_t lh = stats->index(l, h);
      // Recency: the nearest body block outweighs the farthest.
      EXPECT_GT(stats->attnBodyMass[lh * NB],
                stats->attnBodyMass[lh * NB + NB - 1]);
      EXPECT_GT(stats->attnWindowMass[lh], stats->attnBodyMass[lh * NB]);

      // Outlier key channels: a few channels with >= 10x the median K range,
      // in RoPE pairs, with matching large |q|.
      std::vector<double> kRange(D), qAbs(D), vRange(D);
      for (int64_t j = 0; j < D; ++j) {
        size_t c = lh * D + j;
        kRange[j] = stats->kChanMax[c] - stats->kChanMin[c];
        vRange[j] = stats->vChanMax[c] - stats->vChanMin[c];
        qAbs[j] = stats->qAbsMax[c];
      }
      double kMedian = median(kRange), qMedian = median(qAbs);
      int outliers = 0;
      for (int64_t j = 0; j < D; ++j) {
        if (kRange[j] < 8 * kMedian)
          continue;
        ++outliers;
        int64_t partner = j ^ 1;
        EXPECT_GE(kRange[partner], 8 * kMedian) << "outliers come in pairs";
        EXPECT_GE(qAbs[j], 2 * qMedian) << "q matches key outliers";
      }
      EXPECT_GE(outliers, 2);
      EXPECT_LE(outliers, D / 8);
      // V ranges are modest next to the K outliers.
      EXPECT_LT(*std::max_element(vRange.begin(), vRange.end()),
                *std::max_element(kRange.begin(), kRange.end()) / 3);
    }
}

TEST(SyntheticTest, RejectsBadOptions) {
  SyntheticOptions options = smallOptions();
  options.qHeads = 10;
  EXPECT_NE(errorMessage(generateSyntheticStats(options).takeError())
                .find("--q-heads 10 is not a multiple of --kv-heads 4"),
            std::string::npos);
  options = smallOptions();
  options.headDim = 63;
  EXPECT_NE(errorMessage(generateSyntheticStats(options).takeError())
                .find("--head-dim 63 is odd"),
            std::string::npos);
  options = smallOptions();
  options.block = 0;
  EXPECT_NE(errorMessage(generateSyntheticStats(options).takeError())
                .find("--block is 0, must be at least 1"),
            std::string::npos);
}

TEST(SyntheticTest, EdgeShapes) {
  // No sink, no window, one block, head_dim 2.
  SyntheticOptions options;
  options.layers = 1;
  options.kvHeads = 1;
  options.qHeads = 1;
  options.headDim = 2;
  options.capacity = 3;
  options.block = 8;
  options.sink = 0;
  options.window = 0;
  Expected<CalibrationStats> stats = generateSyntheticStats(options);
  ASSERT_TRUE(bool(stats)) << errorMessage(stats);
  EXPECT_EQ(stats->attnSinkMass[0], 0.0f);
  EXPECT_EQ(stats->attnWindowMass[0], 0.0f);
  EXPECT_EQ(stats->positionCount, std::vector<int64_t>{3});
}

TEST(SyntheticTest, LargeShapeIsCheap) {
  // The shape from the design docs: 80 layers, 8 KV heads, 128k context.
  Expected<CalibrationStats> stats = generateSyntheticStats(SyntheticOptions());
  ASSERT_TRUE(bool(stats)) << errorMessage(stats);
  EXPECT_EQ(stats->kBlockAbsMax.size(), 80u * 8u * 2048u);
  EXPECT_EQ(stats->attnBodyMass.size(), 80u * 8u * 2046u);
}

} // namespace
