//===- SeedHeuristicTest.cpp - The prototype's heuristic rule -------------===//

#include "kvprec/Analysis/SeedHeuristic.h"

#include "gtest/gtest.h"

#include <cmath>
#include <string>

using namespace kvprec::analysis;

namespace {

TEST(SeedHeuristicTest, ScoreIsTheProductOfSignals) {
  SeedPositionSignals signals{0.5, 0.8, 2.0, 16.0};
  EXPECT_DOUBLE_EQ(computeSeedScore(signals), 0.5 * 0.8 * 2.0 * 4.0);
}

TEST(SeedHeuristicTest, PrecisionBits) {
  // p = log2(c kappa D^2 / eps).
  EXPECT_DOUBLE_EQ(computeSeedPrecisionBits(2.0, 4.0, 8.0, 1.0 / 1024),
                   std::log2(2.0 * 4.0 * 64.0 * 1024.0));
  EXPECT_TRUE(std::isinf(computeSeedPrecisionBits(1.0, 0.0, 1.0, 1e-3)));
}

TEST(SeedHeuristicTest, PrototypeThresholds) {
  EXPECT_EQ(mapSeedBitsToStorageKind(40.0), StorageKind::F32);
  EXPECT_EQ(mapSeedBitsToStorageKind(25.0), StorageKind::F32);
  EXPECT_EQ(mapSeedBitsToStorageKind(24.999), StorageKind::F16);
  EXPECT_EQ(mapSeedBitsToStorageKind(18.0), StorageKind::F16);
  EXPECT_EQ(mapSeedBitsToStorageKind(17.999), StorageKind::Int8);
  EXPECT_EQ(mapSeedBitsToStorageKind(14.0), StorageKind::Int8);
  EXPECT_EQ(mapSeedBitsToStorageKind(13.999), StorageKind::Int4);
  EXPECT_EQ(mapSeedBitsToStorageKind(-INFINITY), StorageKind::Int4);
}

TEST(SeedHeuristicTest, RunsPerPositionAndIsLabelledHeuristic) {
  std::vector<SeedPositionSignals> positions = {
      {1.0, 1.0, 1.0, 1.0}, {0.1, 1.0, 1.0, 1.0}, {0.0, 1.0, 1.0, 1.0}};
  std::vector<SeedDecision> decisions =
      runSeedHeuristic(positions, 1.0, 1.0, std::ldexp(1.0, -20));
  ASSERT_EQ(decisions.size(), 3u);
  EXPECT_DOUBLE_EQ(decisions[0].bits, 20.0);
  EXPECT_EQ(decisions[0].kind, StorageKind::F16);
  EXPECT_NEAR(decisions[1].bits, 20.0 + std::log2(0.1), 1e-12);
  EXPECT_EQ(decisions[1].kind, StorageKind::Int8);
  EXPECT_EQ(decisions[2].kind, StorageKind::Int4);
  EXPECT_NE(std::string(kSeedHeuristicLabel).find("not certified"),
            std::string::npos);
}

} // namespace
