//===- PlanEmulationTest.cpp - the plan's storage semantics, executably ---===//
//
// The plain plan's class of every position at every length, the emulator
// that stores a stream exactly as the plan says (formats per position,
// demotions, element error bounds, the full cache), and allocatePlan's
// promise: every head it plans certifies within its tolerance, and no plan
// is larger than storing everything in f32.
//
//===----------------------------------------------------------------------===//

#include "kvprec/Certify/PlanEmulation.h"
#include "kvprec/Certify/Plan.h"

#include "kvprec/Calibration/Synthetic.h"
#include "gtest/gtest.h"

#include <cmath>
#include <cstdio>
#include <random>

using namespace kvprec;
using namespace kvprec::certify;
namespace an = kvprec::analysis;

namespace {
Plan makePlan(int64_t capacity, int64_t sink, int64_t window, int64_t block,
              std::vector<an::StorageFormat> formats) {
  Plan plan;
  plan.geometry = {1, 1, capacity, 4, block, sink, window};
  plan.formats = std::move(formats);
  // K: sink 0, window 1, body 2; V the same.
  plan.sinkFormats = {0, 0};
  plan.windowFormats = {1, 1};
  plan.bodyFormats = {2, 2};
  return plan;
}

an::StorageFormat scaled(an::StorageKind kind, an::Granularity granularity,
                         unsigned group) {
  return an::StorageFormat::scaled(kind, an::QuantScheme::Asymmetric,
                                   granularity, group, an::StorageKind::F16);
}
} // namespace

TEST(PlanEmulation, SegmentOfEveryPositionAtEveryLength) {
  // Sink 2, window 4 (whole blocks of 2), capacity 12: body blocks start at
  // 2, 4, 6, 8, 10. A block is in the window while it overlaps the newest 4
  // positions, including the one being filled.
  Plan plan = makePlan(12, 2, 4, 2,
                       {an::StorageFormat::unscaled(an::StorageKind::F32),
                        an::StorageFormat::unscaled(an::StorageKind::F16),
                        an::StorageFormat::unscaled(an::StorageKind::BF16)});
  // length 9: positions 5..8 are the newest 4; blocks [4,6) [6,8) [8,10)
  // overlap them, [2,4) does not.
  const int expected9[] = {kSink,   kSink,   kBody,   kBody,  kWindow,
                           kWindow, kWindow, kWindow, kWindow};
  for (int t = 0; t < 9; ++t)
    EXPECT_EQ(plan.getSegmentAt(t, 9), expected9[t]) << "position " << t;
  // length 12: the newest 4 are 8..11, so blocks [8,10) and [10,12).
  for (int t = 2; t < 8; ++t)
    EXPECT_EQ(plan.getSegmentAt(t, 12), kBody) << "position " << t;
  for (int t = 8; t < 12; ++t)
    EXPECT_EQ(plan.getSegmentAt(t, 12), kWindow) << "position " << t;
  EXPECT_EQ(plan.getFormatAt(0, 0, 12).kind, an::StorageKind::F32);
  EXPECT_EQ(plan.getFormatAt(0, 9, 12).kind, an::StorageKind::F16);
  EXPECT_EQ(plan.getFormatAt(0, 3, 12).kind, an::StorageKind::BF16);
}

TEST(PlanEmulation, ClassSizesCountTheSegmentsOfAFullCache) {
  // Geometry's class sizes (bytes, certificate classes) must be the number
  // of positions getSegmentAt puts in each class at full length. They once
  // counted `window` positions for the window even where the partial last
  // block makes it up to window + block - 1 (the certificate fuzzer found
  // the two certifiers disagreeing on a body that did not exist).
  int checked = 0;
  for (int64_t block : {1, 2, 4, 8})
    for (int64_t sink : {0, 1, 3, 8})
      for (int64_t windowBlocks : {0, 1, 2, 3})
        for (int64_t capacity = sink; capacity <= sink + 40; ++capacity) {
          Geometry g{1, 1, capacity, 8, block, sink, windowBlocks * block};
          Plan plan;
          plan.geometry = g;
          int64_t count[kNumSegments] = {0, 0, 0};
          for (int64_t t = 0; t < capacity; ++t)
            ++count[plan.getSegmentAt(t, capacity)];
          ASSERT_EQ(g.getSinkTokens(), std::min(sink, capacity));
          ASSERT_EQ(g.getWindowTokens(), count[kWindow])
              << "capacity " << capacity << " block " << block << " sink "
              << sink << " window " << g.window;
          ASSERT_EQ(g.getBodyTokens(), count[kBody])
              << "capacity " << capacity << " block " << block << " sink "
              << sink << " window " << g.window;
          ASSERT_LE(count[kWindow], std::max<int64_t>(g.window + block - 1, 0));
          ++checked;
        }
  EXPECT_EQ(checked, 4 * 4 * 4 * 41);
}

TEST(PlanEmulation, StoresDemotesAndBoundsEveryElement) {
  // i8 window, i4 channel-group body: every block leaving the window is
  // re-quantized from its window values, and channel groups of a block that
  // is still filling are re-quantized as positions arrive.
  Plan plan = makePlan(
      40, 4, 8, 4,
      {an::StorageFormat::unscaled(an::StorageKind::F16),
       scaled(an::StorageKind::Int8, an::Granularity::TokenGroup, 4),
       scaled(an::StorageKind::Int4, an::Granularity::ChannelGroup, 4)});
  EmulatedStream stream(plan, 0, an::DequantizerConfig());
  std::mt19937 rng(3);
  std::normal_distribution<float> normal(0.0f, 2.0f);
  for (int p = 0; p < 40; ++p) {
    float values[4];
    for (float &v : values)
      v = normal(rng);
    an::Status status = stream.append(values);
    ASSERT_TRUE(status.ok()) << "position " << p << ": " << status.getMessage();
    EXPECT_EQ(stream.getLength(), p + 1);
  }
  // Body blocks [4,8) .. [28,32) left the window (the newest 8 positions
  // lie in [32,40)): 7 demotions, once each.
  EXPECT_EQ(stream.getNumDemotions(), 7u);
  EXPECT_EQ(stream.getElementBoundViolations(), 0u);
  // Every stored element within its bound, and a demoted element's bound
  // covers both quantizations (it exceeds the body format's own step).
  const an::Matrix &exact = stream.getExact(), &stored = stream.getStored(),
                   &bounds = stream.getErrorBounds();
  for (size_t t = 0; t < exact.rows; ++t)
    for (size_t j = 0; j < exact.cols; ++j)
      EXPECT_LE(std::fabs(stored(t, j) - exact(t, j)), bounds(t, j));
  // The sink is f16: relative error at most 2^-11.
  for (size_t j = 0; j < exact.cols; ++j)
    EXPECT_LE(std::fabs(stored(0, j) - exact(0, j)),
              0x1p-11 * std::fabs(exact(0, j)));
  // The cache is full: one more position is refused and stores nothing.
  float more[4] = {0, 0, 0, 0};
  an::Status full = stream.append(more);
  ASSERT_TRUE(full.failed());
  EXPECT_NE(full.getMessage().find("the cache is full (capacity 40)"),
            std::string::npos);
  EXPECT_EQ(stream.getLength(), 40);
}

/// Synthetic statistics of 2 layers x 2 KV heads (GQA 2), head_dim 8, 96
/// positions, block 8, sink 4, window 16: the geometry {2, 2, 96, 8, 8, 4,
/// 16} of the allocation tests.
static llvm::Expected<calib::CalibrationStats> makeTwoLayerStats() {
  calib::SyntheticOptions synth;
  synth.layers = 2;
  synth.kvHeads = 2;
  synth.qHeads = 4;
  synth.headDim = 8;
  synth.capacity = 96;
  synth.block = 8;
  synth.sink = 4;
  synth.window = 16;
  return calib::generateSyntheticStats(synth);
}

TEST(PlanEmulation, AllocatedPlansCertifyWithinTheirTolerance) {
  llvm::Expected<calib::CalibrationStats> stats = makeTwoLayerStats();
  ASSERT_TRUE(bool(stats));
  using K = an::StorageKind;
  std::vector<an::StorageFormat> candidates = {
      an::StorageFormat::unscaled(K::F32), an::StorageFormat::unscaled(K::F16),
      scaled(K::Int8, an::Granularity::TokenGroup, 8),
      scaled(K::Int4, an::Granularity::TokenGroup, 8),
      scaled(K::Int4, an::Granularity::ChannelGroup, 8)};
  for (double tolerance : {1e-3, 1e-2, 1e-1, 1.0}) {
    AllocationRequest request;
    request.geometry = {2, 2, 96, 8, 8, 4, 16};
    request.tolerances = {tolerance};
    request.keyCandidates = request.valueCandidates = candidates;
    AllocationOutcome outcome;
    an::Status status = allocatePlan(*stats, request, outcome);
    ASSERT_TRUE(status.ok()) << tolerance << ": " << status.getMessage();
    double f32Bytes = 2 * 2 * 2 * 96 * 8 * 4.0;
    EXPECT_LE(outcome.totalBytes, f32Bytes);
    for (int64_t flat = 0; flat < 4; ++flat) {
      EXPECT_LE(outcome.bounds[flat], tolerance) << "head " << flat;
      // The same formats, certified as a plain plan by the other entry
      // point, give the same bound.
      HeadEnvelope envelope = buildHeadEnvelope(
          *stats, request.geometry, flat / 2, flat % 2, request.options);
      an::StaticCertifiedBound again;
      ASSERT_TRUE(certifyHead(envelope, outcome.formats[flat], request.geometry,
                              request.options, again)
                      .ok());
      EXPECT_DOUBLE_EQ(again.infNorm, outcome.bounds[flat]);
    }
    std::printf("tolerance %g: %.0f bytes (f32: %.0f)\n", tolerance,
                outcome.totalBytes, f32Bytes);
  }
}

TEST(PlanEmulation, BudgetLayerWeightsSpendBytesOnTheWeightedLayer) {
  llvm::Expected<calib::CalibrationStats> stats = makeTwoLayerStats();
  ASSERT_TRUE(bool(stats));
  using K = an::StorageKind;
  AllocationRequest request;
  request.geometry = {2, 2, 96, 8, 8, 4, 16};
  request.keyCandidates = request.valueCandidates = {
      an::StorageFormat::unscaled(K::F32), an::StorageFormat::unscaled(K::F16),
      scaled(K::Int8, an::Granularity::TokenGroup, 8),
      scaled(K::Int4, an::Granularity::TokenGroup, 8)};
  request.tolerances = {1e-3}; // checked, unused by the budget
  // Half of the f32 bytes: the budget binds.
  request.budgetBytes = 2 * 2 * 2 * 96 * 8 * 4.0 / 2;
  // The largest bound of each layer's heads under `weights`.
  auto layerBounds = [&](std::vector<double> weights) {
    request.layerWeights = std::move(weights);
    AllocationOutcome outcome;
    an::Status status = allocatePlan(*stats, request, outcome);
    EXPECT_TRUE(status.ok()) << status.getMessage();
    EXPECT_LE(outcome.totalBytes, request.budgetBytes);
    return std::make_pair(std::max(outcome.bounds[0], outcome.bounds[1]),
                          std::max(outcome.bounds[2], outcome.bounds[3]));
  };
  auto first = layerBounds({100.0, 1.0});
  auto second = layerBounds({1.0, 100.0});
  // Weighting a layer's errors buys it precision from the other layer.
  EXPECT_LE(first.first, second.first);
  EXPECT_LE(second.second, first.second);
  EXPECT_TRUE(first.first < second.first || second.second < first.second);
  std::printf("layer weights 100:1 bounds %.3g %.3g; 1:100 bounds %.3g %.3g\n",
              first.first, first.second, second.first, second.second);

  // Weights that do not fit the geometry are refused.
  AllocationOutcome outcome;
  request.layerWeights = {1.0};
  an::Status wrongCount = allocatePlan(*stats, request, outcome);
  ASSERT_TRUE(wrongCount.failed());
  EXPECT_NE(wrongCount.getMessage().find(
                "the budget's layer weights number 1 for 2 layers"),
            std::string::npos);
  request.layerWeights = {1.0, 0.0};
  an::Status zero = allocatePlan(*stats, request, outcome);
  ASSERT_TRUE(zero.failed());
  EXPECT_NE(zero.getMessage().find("not a positive finite number"),
            std::string::npos);
}
