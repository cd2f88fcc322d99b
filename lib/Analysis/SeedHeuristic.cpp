//===- SeedHeuristic.cpp - The seed prototype's precision rule ------------===//
//
// Heuristic comparison mode only; see SeedHeuristic.h.
//
//===----------------------------------------------------------------------===//

#include "kvprec/Analysis/SeedHeuristic.h"

#include <cmath>

using namespace kvprec::analysis;

double kvprec::analysis::computeSeedScore(const SeedPositionSignals &signals) {
  return signals.attention * signals.recency * signals.gradientNorm *
         std::sqrt(signals.hessianTrace);
}

double kvprec::analysis::computeSeedPrecisionBits(double constant, double score,
                                                  double diameter,
                                                  double tolerance) {
  return std::log2(constant * score * diameter * diameter / tolerance);
}

StorageKind kvprec::analysis::mapSeedBitsToStorageKind(double bits) {
  if (bits >= kSeedF32Bits)
    return StorageKind::F32;
  if (bits >= kSeedF16Bits)
    return StorageKind::F16;
  if (bits >= kSeedInt8Bits)
    return StorageKind::Int8;
  return StorageKind::Int4;
}

std::vector<SeedDecision> kvprec::analysis::runSeedHeuristic(
    const std::vector<SeedPositionSignals> &positions, double constant,
    double diameter, double tolerance) {
  std::vector<SeedDecision> decisions;
  decisions.reserve(positions.size());
  for (const SeedPositionSignals &signals : positions) {
    SeedDecision decision;
    decision.score = computeSeedScore(signals);
    decision.bits =
        computeSeedPrecisionBits(constant, decision.score, diameter, tolerance);
    decision.kind = mapSeedBitsToStorageKind(decision.bits);
    decisions.push_back(decision);
  }
  return decisions;
}
