//===- SeedHeuristic.h - The seed prototype's precision rule ----*- C++ -*-===//
//
// HEURISTIC, NOT CERTIFIED. This is the earlier prototype's per-position rule,
// kept only as a named comparison mode so its plans can be measured against
// certified ones on the same data (design.md, "The error certificate"):
//
//   kappa_t = attention_t * recency_t * gradientNorm_t * sqrt(hessianTrace_t)
//   p_t     = log2(c * kappa_t * D^2 / eps)
//
// and the prototype's fixed thresholds map p_t to a format:
//   p >= 25 -> f32,   p >= 18 -> f16,   p >= 14 -> int8,   otherwise int4.
//
// Nothing here bounds the attention error: kappa mixes unrelated signals, the
// thresholds are fixed rather than set by eps, and error-bounds.md §4 shows
// that the correct constant is the first-order sensitivity per element, not a
// curvature.
//
//===----------------------------------------------------------------------===//

#ifndef KVPREC_ANALYSIS_SEEDHEURISTIC_H
#define KVPREC_ANALYSIS_SEEDHEURISTIC_H

#include "kvprec/Format/StorageFormat.h"

#include <vector>

namespace kvprec {
namespace analysis {

/// The per-position signals the prototype multiplied together.
struct SeedPositionSignals {
  double attention = 0.0;
  double recency = 0.0;
  double gradientNorm = 0.0;
  double hessianTrace = 0.0;
};

/// The prototype's thresholds, in bits.
constexpr double kSeedF32Bits = 25.0;
constexpr double kSeedF16Bits = 18.0;
constexpr double kSeedInt8Bits = 14.0;
constexpr const char *kSeedHeuristicLabel =
    "seed heuristic (prototype score and fixed thresholds; not certified)";

/// kappa_t = attention * recency * gradientNorm * sqrt(hessianTrace).
double computeSeedScore(const SeedPositionSignals &signals);
/// p = log2(c kappa D^2 / eps); -inf when kappa is 0.
double computeSeedPrecisionBits(double constant, double score, double diameter,
                                double tolerance);
/// The prototype's mapping: >= 25 f32, >= 18 f16, >= 14 int8, else int4.
StorageKind mapSeedBitsToStorageKind(double bits);

struct SeedDecision {
  double score = 0.0;
  double bits = 0.0;
  StorageKind kind = StorageKind::Int4;
};

/// The heuristic for every position.
std::vector<SeedDecision>
runSeedHeuristic(const std::vector<SeedPositionSignals> &positions,
                 double constant, double diameter, double tolerance);

} // namespace analysis
} // namespace kvprec

#endif // KVPREC_ANALYSIS_SEEDHEURISTIC_H
