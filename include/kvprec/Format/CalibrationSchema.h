//===- CalibrationSchema.h - the kvprec-calib-v1 tensors --------*- C++ -*-===//
//
// The shape of calibration statistics as plain data: the dimensions, and
// per tensor its name, element kind, shape kind and what its values are.
// The kvprec.calibration op verifies against it; the calibration library
// (kvprec/Calibration/CalibrationStats.h) reads, writes and validates the
// values. Notation as in docs/calibration.md.
//
//===----------------------------------------------------------------------===//

#ifndef KVPREC_FORMAT_CALIBRATIONSCHEMA_H
#define KVPREC_FORMAT_CALIBRATIONSCHEMA_H

#include "llvm/ADT/ArrayRef.h"
#include "llvm/ADT/SmallVector.h"
#include "llvm/ADT/StringRef.h"

#include <cstdint>

namespace kvprec::calib {

/// Relative body blocks a query sample keeps apart; farther ones share one
/// bin.
inline constexpr int64_t kSampleBodyBins = 8;

/// Masses may exceed 1 by this much (float rounding of a sum of weights).
inline constexpr double kMassTolerance = 1e-6;

/// The dimensions every tensor shape is derived from.
struct CalibrationShape {
  int64_t layers = 0;
  int64_t kvHeads = 0;
  /// Total query heads of the model (not per group).
  int64_t qHeads = 0;
  int64_t headDim = 0;
  int64_t sink = 0;
  int64_t window = 0;
  int64_t block = 0;
  int64_t maxPositions = 0;
  /// N: query samples kept per (layer, KV head) for the joint certificate
  /// (error-bounds.md §7); 0 when none were kept.
  int64_t querySamples = 0;

  /// G: query heads sharing one KV head.
  int64_t getQueryHeadsPerKVHead() const {
    return kvHeads > 0 ? qHeads / kvHeads : 0;
  }
  /// NB = ceil(max(P - W, 0) / B).
  int64_t getNumBodyBlocks() const;
  /// NA = ceil(P / B).
  int64_t getNumAbsoluteBlocks() const;
  /// M = 3 + min(NB, kSampleBodyBins): a query sample's mass bins: sink,
  /// window, the first body blocks, and the rest of the body.
  int64_t getNumSampleMassBins() const;
};

/// The shapes a schema tensor can have.
enum class CalibrationTensorKind {
  LayerHead,         ///< [L, H]
  LayerHeadChannel,  ///< [L, H, D]
  LayerHeadBody,     ///< [L, H, NB]
  LayerHeadAbsBlock, ///< [L, H, NA]
  AbsBlock,          ///< [NA]
  LayerHeadSample,   ///< [L, H, N]
  LayerHeadSampleChannel, ///< [L, H, N, D]
  LayerHeadSampleMass,    ///< [L, H, N, M]
};

/// What a tensor holds, which fixes the value checks the validator applies.
enum class CalibrationValueKind {
  Mass,        ///< attention mass, in [0, 1 + kMassTolerance]
  NonNegative, ///< magnitudes, ranges, entropies
  ChannelMin,  ///< lower end of a channel range; paired with a ChannelMax
  ChannelMax,
  Count, ///< I64 sample counts, >= 0
};

/// One tensor of the schema.
struct CalibrationTensorSchema {
  llvm::StringLiteral name;
  /// I64 sample counts; every other tensor is F32.
  bool isCount;
  CalibrationTensorKind kind;
  CalibrationValueKind valueKind;
  llvm::StringLiteral description;
};

/// The schema, in the order tensors are written.
llvm::ArrayRef<CalibrationTensorSchema> getCalibrationSchema();

/// Shape of a tensor kind for given dimensions.
llvm::SmallVector<int64_t, 3> getTensorShape(const CalibrationShape &shape,
                                             CalibrationTensorKind kind);

/// The symbolic form of a tensor kind's shape ("[L, H, NB]"), for messages.
llvm::StringRef getSymbolicShape(CalibrationTensorKind kind);

} // namespace kvprec::calib

#endif // KVPREC_FORMAT_CALIBRATIONSCHEMA_H
