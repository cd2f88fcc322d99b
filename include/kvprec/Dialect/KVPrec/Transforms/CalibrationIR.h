//===- CalibrationIR.h - calibration statistics <-> IR ----------*- C++ -*-===//
//
// Converts between the in-memory statistics of kvprec/Calibration and the
// kvprec.calibration op, so passes read calibration from the module.
//
//===----------------------------------------------------------------------===//

#ifndef KVPREC_DIALECT_KVPREC_TRANSFORMS_CALIBRATIONIR_H
#define KVPREC_DIALECT_KVPREC_TRANSFORMS_CALIBRATIONIR_H

#include "kvprec/Calibration/CalibrationStats.h"
#include "kvprec/Dialect/KVPrec/IR/KVPrecOps.h"

namespace mlir::kvprec {

/// Builds a kvprec.calibration op named `symbolName` at the builder's
/// insertion point. Tensors with more than `inlineLimit` elements become
/// dense_resource blobs.
CalibrationOp buildCalibrationOp(OpBuilder &builder, Location loc,
                                 StringRef symbolName,
                                 const ::kvprec::calib::CalibrationStats &stats,
                                 int64_t inlineLimit);

/// Reads the statistics back from `op` and validates them; on failure emits
/// a located error on `op` and returns failure.
FailureOr<::kvprec::calib::CalibrationStats> readCalibrationOp(CalibrationOp op);

/// Checks that statistics describing `stats.shape` can calibrate `cache`
/// (layers, KV heads and head_dim agree). Returns a description of the first
/// mismatch, or an empty string.
std::string describeCalibrationMismatch(const ::kvprec::calib::CalibrationShape &shape,
                                        CacheType cache);

} // namespace mlir::kvprec

#endif // KVPREC_DIALECT_KVPREC_TRANSFORMS_CALIBRATIONIR_H
