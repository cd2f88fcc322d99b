//===- Synthetic.h - Synthetic calibration statistics -----------*- C++ -*-===//
//
// Generates kvprec-calib-v1 statistics for model shapes we cannot run here
// (e.g. an 80-layer, 128k-context model), with the structure measured models
// show: attention sinks that grow with depth, recency (high window mass and
// body-block mass decaying roughly as a power law of distance, slower in a
// few "retrieval" heads), a few outlier key channels (RoPE pairs in the
// low-frequency half) with 10-30x the K range and matching large |q|, a
// q-K logit envelope (qk_logit_max) of 20-50 % of its channel-wise bound, and
// modest V ranges. The result is deterministic in the seed and always passes
// validateCalibrationStats. Files are labelled model = "synthetic",
// synthetic = "true": they are test inputs, not measurements.
//
//===----------------------------------------------------------------------===//

#ifndef KVPREC_CALIBRATION_SYNTHETIC_H
#define KVPREC_CALIBRATION_SYNTHETIC_H

#include "kvprec/Calibration/CalibrationStats.h"

#include "llvm/Support/Error.h"

#include <cstdint>

namespace kvprec::calib {

struct SyntheticOptions {
  int64_t layers = 80;
  int64_t kvHeads = 8;
  /// Total query heads; must be a multiple of kvHeads.
  int64_t qHeads = 64;
  /// Must be even (RoPE pairs).
  int64_t headDim = 128;
  /// Positions described (P = capacity).
  int64_t capacity = 131072;
  int64_t block = 64;
  int64_t sink = 4;
  int64_t window = 128;
  uint64_t seed = 1;
};

/// Generates the statistics. Fails on invalid options (non-positive sizes,
/// q_heads not a multiple of kv_heads, odd head_dim, too large a shape).
/// Counts describe one nominal full-length sequence: query_count = G * P and
/// position_count = positions per block; metadata prompts = steps = 0.
llvm::Expected<CalibrationStats>
generateSyntheticStats(const SyntheticOptions &options);

} // namespace kvprec::calib

#endif // KVPREC_CALIBRATION_SYNTHETIC_H
