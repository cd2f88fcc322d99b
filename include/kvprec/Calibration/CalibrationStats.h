//===- CalibrationStats.h - kvprec-calib-v1 statistics ----------*- C++ -*-===//
//
// The calibration statistics that the precision analysis consumes
// (docs/calibration.md, docs/error-bounds.md §5): attention mass per position
// class (C1), per-channel query magnitudes (C2), and K/V ranges and spans per
// channel and per absolute block. They travel as a safetensors file with
// schema "kvprec-calib-v1"; this header holds the in-memory form, the schema
// table, the validator, and the reader/writer.
//
// Notation: L layers, H KV heads, G = q_heads / H query heads per KV head,
// D head_dim, S sink, W window, B block, P max_positions,
// NB = ceil(max(P - W, 0) / B) relative body blocks, NA = ceil(P / B)
// absolute blocks. All tensors are row-major.
//
//===----------------------------------------------------------------------===//

#ifndef KVPREC_CALIBRATION_CALIBRATIONSTATS_H
#define KVPREC_CALIBRATION_CALIBRATIONSTATS_H

#include "kvprec/Calibration/SafeTensors.h"
#include "kvprec/Format/CalibrationSchema.h"

#include "llvm/ADT/ArrayRef.h"
#include "llvm/ADT/SmallVector.h"
#include "llvm/ADT/StringRef.h"
#include "llvm/Support/Error.h"

#include <cstdint>
#include <string>
#include <vector>

namespace kvprec::calib {

/// Value of the "schema" metadata entry.
inline constexpr llvm::StringLiteral kCalibrationSchema = "kvprec-calib-v1";

struct CalibrationStats;

/// One row of the schema (kvprec/Format/CalibrationSchema.h) with where its
/// values live in CalibrationStats.
struct CalibrationTensorSpec {
  llvm::StringRef name;
  DType dtype;
  CalibrationTensorKind kind;
  CalibrationValueKind valueKind;
  /// Exactly one of these is set, matching dtype.
  std::vector<float> CalibrationStats::*f32Member;
  std::vector<int64_t> CalibrationStats::*i64Member;
  llvm::StringRef description;
};

/// Calibration statistics in memory. Plain data: fill the vectors in the
/// row-major shapes of the schema (allocate() sizes them) and validate().
struct CalibrationStats {
  CalibrationShape shape;
  /// Checkpoint name, or "synthetic".
  std::string model;
  /// Optional (metadata "layer_kl_sensitivity", "sensitivity_error"): per
  /// layer, the mean KL divergence of the next-token distribution per
  /// squared infinity-norm error of the layer's attention outputs, measured
  /// with random-sign errors of size sensitivityError; empty when not
  /// measured.
  std::vector<double> layerKLSensitivity;
  double sensitivityError = 0.0;
  /// The dtypes the model's weights were stored in ("F32", "BF16", ...),
  /// before the forward pass converted them to f32; empty when unknown
  /// (metadata "model_dtype", optional).
  std::string modelDType;
  /// True for generated (not measured) statistics.
  bool synthetic = false;
  /// Number of prompts run and generated tokens per prompt.
  int64_t prompts = 0;
  int64_t steps = 0;
  /// The softmax scale the model's attention used while calibrating (the
  /// attention masses are only valid at it): 1/sqrt(head_dim) for Llama.
  double softmaxScale = 0.0;

  // (C1) attention mass per position class, [L, H] or [L, H, NB].
  std::vector<float> attnSinkMass;
  std::vector<float> attnWindowMass;
  std::vector<float> attnBodyMass;
  std::vector<float> attnSinkMassMean;
  std::vector<float> attnWindowMassMean;
  std::vector<float> attnEntropyMean;
  std::vector<float> attnMaxWeight;
  // (C2) query magnitudes: [L, H, D] and [L, H].
  std::vector<float> qAbsMax;
  std::vector<float> qL1Max;
  /// [L, H]: max over queries q and cached positions t <= p of
  /// (1/sqrt D) * sum_j |q_j| |K_{t,j}|, the envelope of the logit magnitude
  /// that relative-error key formats (f16/bf16) scale with. Unlike q_absmax
  /// it includes the 1/sqrt(D) factor.
  std::vector<float> qkLogitMax;
  // Per-channel K/V ranges over all cached positions, [L, H, D].
  std::vector<float> kChanMin;
  std::vector<float> kChanMax;
  std::vector<float> vChanMin;
  std::vector<float> vChanMax;
  // Per absolute block of B positions, [L, H, NA].
  std::vector<float> kBlockAbsMax;
  std::vector<float> vBlockAbsMax;
  std::vector<float> kBlockTokenRange;
  std::vector<float> vBlockTokenRange;
  std::vector<float> kBlockChanSpan;
  std::vector<float> vBlockChanSpan;
  // Sample counts: [L, H] and [NA].
  std::vector<int64_t> queryCount;
  std::vector<int64_t> positionCount;
  // Query samples (error-bounds.md §7): a uniform random sample (reservoir)
  // of at most N queries per (layer, KV head), each with its own class
  // masses, |q_j| and logit envelope, so a certificate can take the worst
  // per-query bound instead of combining coordinate-wise maxima.
  /// [L, H]: samples kept (min(N, query_count)).
  std::vector<int64_t> querySampleCount;
  /// [L, H, N, M]: mass bins (sink, window, body blocks 0..S-1, the rest).
  std::vector<float> querySampleMass;
  /// [L, H, N, M]: sum of a_t^2 over each mass bin (error-bounds.md §9).
  std::vector<float> querySampleSqMass;
  /// [L, H, N, D]: |q_j| of the sample.
  std::vector<float> querySampleAbsQ;
  /// [L, H, N]: max over cached t of (1/sqrt D) sum_j |q_j||K_{t,j}|.
  std::vector<float> querySampleLogit;

  /// Resizes every tensor to its schema shape and zero-fills it.
  void allocate();

  /// Flat index of [layer, head] and [layer, head, inner] elements.
  size_t index(int64_t layer, int64_t head) const {
    return static_cast<size_t>(layer * shape.kvHeads + head);
  }
  size_t index(int64_t layer, int64_t head, int64_t inner,
               int64_t innerSize) const {
    return static_cast<size_t>((layer * shape.kvHeads + head) * innerSize +
                               inner);
  }
};

/// The schema, in the order tensors are written.
llvm::ArrayRef<CalibrationTensorSpec> getCalibrationTensorSpecs();


/// Checks the dimensions (positive sizes, q_heads divisible by kv_heads, ...).
/// `context` (usually a file name) prefixes every message.
llvm::Error validateCalibrationShape(const CalibrationShape &shape,
                                     llvm::StringRef context);

/// Checks everything a consumer relies on: shapes, tensor sizes, finite
/// values, masses in [0, 1 + kMassTolerance], non-negative magnitudes and
/// counts, chan_min <= chan_max, and the derived consistency of the block and
/// query statistics, including qk_logit_max <= (1/sqrt D) * sum_j q_absmax_j *
/// max(|k_chan_min_j|, |k_chan_max_j|) (docs/calibration.md lists every rule).
/// (1/sqrt D) * sum_j q_absmax_j * max(|k_chan_min_j|, |k_chan_max_j|) of the
/// flat (layer, KV head) `lh`: the channel-wise bound that qk_logit_max can
/// never exceed, because every |q_j| and |K_{t,j}| lies within it.
double getChannelwiseLogitBound(const CalibrationStats &stats, size_t lh);

llvm::Error validateCalibrationStats(const CalibrationStats &stats,
                                     llvm::StringRef context);

/// Reads and validates a kvprec-calib-v1 file. Errors name the file and the
/// offending tensor, metadata key or element.
llvm::Expected<CalibrationStats> readCalibrationFile(llvm::StringRef path);
/// Same, for a safetensors file that is already parsed.
llvm::Expected<CalibrationStats>
readCalibrationStats(const SafeTensorsFile &file);

/// Validates `stats` and writes it to `path`.
llvm::Error writeCalibrationFile(const CalibrationStats &stats,
                                 llvm::StringRef path);

/// Fills a writer with the metadata and tensors of `stats` without validating
/// (the writer references the vectors of `stats`). Useful to build files that
/// deviate from the schema on purpose, e.g. in tests.
void addCalibrationTensors(SafeTensorsWriter &writer,
                           const CalibrationStats &stats);

} // namespace kvprec::calib

#endif // KVPREC_CALIBRATION_CALIBRATIONSTATS_H
