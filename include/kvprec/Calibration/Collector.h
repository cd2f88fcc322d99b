//===- Collector.h - Reduce attention steps into statistics -----*- C++ -*-===//
//
// An AttentionObserver that reduces every attention step of a forward pass
// into kvprec-calib-v1 statistics (CalibrationStats.h): attention mass per
// position class, per-channel |q|, the q-K logit envelope qk_logit_max, and
// K/V ranges per channel and per block.
//
// qk_logit_max needs every cached key of the current sequence, but a step only
// carries the key appended at its position, so the collector keeps its own
// copy of |K| for one sequence ([L, seq_len, H, D] floats).
//
// Every fed position is a query, prompt positions included: at decode time
// the prompt's positions are cached and attended to exactly like generated
// ones, and in prefill they are the queries of the same attention, so
// leaving them out would understate the masses near the sink.
//
//===----------------------------------------------------------------------===//

#ifndef KVPREC_CALIBRATION_COLLECTOR_H
#define KVPREC_CALIBRATION_COLLECTOR_H

#include "kvprec/Calibration/CalibrationStats.h"
#include "kvprec/Calibration/Model.h"

#include "llvm/Support/Error.h"

#include <cstdint>
#include <vector>

namespace kvprec::calib {

/// Position classes of the statistics.
struct PositionClasses {
  int64_t sink = 4;
  int64_t window = 64;
  int64_t block = 32;
};

class StatsCollector : public AttentionObserver {
public:
  /// Statistics for a model with `config`; `classes` must have block >= 1 and
  /// non-negative sink and window.
  /// `querySamples` (N) queries per (layer, KV head) are kept for the joint
  /// certificate: a uniform reservoir sample over all queries, drawn from a
  /// fixed seed so collection is deterministic.
  StatsCollector(const LlamaConfig &config, const PositionClasses &classes,
                 int64_t querySamples = 0);

  /// Reduces one attention step. A step at position 0 starts a new sequence:
  /// per-block channel spans are taken within one sequence's cache, so the
  /// open blocks of the previous sequence are closed first.
  void observe(const AttentionStep &step) override;

  /// Longest sequence observed so far, in positions.
  int64_t getMaxPositions() const { return maxPositions; }

  /// Closes the last sequence and returns the reduced statistics, sized for
  /// the positions actually observed. Fails when nothing was observed.
  llvm::Expected<CalibrationStats> finish(llvm::StringRef modelName,
                                          int64_t prompts, int64_t steps);

private:
  /// Closes the current block of one (layer, KV head): folds its per-channel
  /// spans into the block statistics.
  void flushBlock(size_t layerHead);

  LlamaConfig config;
  PositionClasses classes;
  int64_t layers, kvHeads, groupSize, headDim;
  /// Capacity-sized block counts (seq_len positions); finish() trims them.
  int64_t bodyBlockCapacity, absBlockCapacity;
  int64_t maxPositions = 0;

  // Reductions over [L, H] (flat lh = layer * H + head).
  std::vector<float> sinkMax, windowMax, maxWeight, l1Max, logitMax;
  std::vector<double> sinkSum, windowSum, entropySum;
  std::vector<int64_t> queryCount;
  std::vector<float> bodyMax; // [L, H, bodyBlockCapacity]
  std::vector<float> qAbsMax, kMin, kMax, vMin, vMax; // [L, H, D]
  // [L, H, absBlockCapacity]
  std::vector<float> kAbsMax, vAbsMax, kTokenRange, vTokenRange, kChanSpan,
      vChanSpan;
  std::vector<int64_t> positionCount; // [absBlockCapacity]

  // Running per-channel min/max inside the current block of the current
  // sequence, per (layer, KV head): [L, H, D], and the block it belongs to.
  std::vector<float> kBlockMin, kBlockMax, vBlockMin, vBlockMax;
  std::vector<int64_t> currentBlock;

  // |K| of the current sequence, [L, seq_len, H * D]; position p of a layer
  // is written when its key is appended (before the query at p reads it).
  std::vector<float> keyAbsCache;

  // Query samples: per (layer, KV head) N slots of kSampleSlotBins masses
  // (sink, window, body blocks 0..7, the rest), D |q_j| and the logit
  // envelope, and how many queries the reservoir has seen.
  static constexpr int64_t kSampleSlotBins = 11;
  int64_t querySamples;
  std::vector<float> sampleMass, sampleSqMass, sampleAbsQ, sampleLogit;
  std::vector<int64_t> samplesSeen;
  uint64_t sampleRandom = 0x9E3779B97F4A7C15ull;

  // Scratch for one query head's body-block masses and |q|.
  std::vector<double> bodyScratch;
  std::vector<double> queryAbsScratch;
};

} // namespace kvprec::calib

#endif // KVPREC_CALIBRATION_COLLECTOR_H
