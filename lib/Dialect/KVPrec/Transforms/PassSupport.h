//===- PassSupport.h - helpers shared by the kvprec passes ------*- C++ -*-===//

#ifndef KVPREC_LIB_DIALECT_KVPREC_TRANSFORMS_PASSSUPPORT_H
#define KVPREC_LIB_DIALECT_KVPREC_TRANSFORMS_PASSSUPPORT_H

#include "kvprec/Certify/Plan.h"
#include "kvprec/Dialect/KVPrec/IR/KVPrecOps.h"

#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/SymbolTable.h"

#include <optional>
#include <vector>

namespace mlir::kvprec {

/// A cache allocation and, if it names one, its calibration statistics.
struct CalibratedAlloc {
  AllocOp alloc;
  CalibrationOp calibration;
  std::optional<::kvprec::calib::CalibrationStats> stats;
};

/// Collects every kvprec.alloc of `module` with its statistics read from
/// the kvprec.calibration it names. Emits located errors and fails when a
/// calibration cannot be read.
FailureOr<std::vector<CalibratedAlloc>> collectCalibratedAllocs(ModuleOp module);

/// The geometry of a cache under its plan.
::kvprec::certify::Geometry getGeometry(CacheType cache);

/// Human-readable name of a format ("f16", "i4 asym token_group=8 f16").
std::string describeFormat(const ::kvprec::analysis::StorageFormat &format);

} // namespace mlir::kvprec

#endif // KVPREC_LIB_DIALECT_KVPREC_TRANSFORMS_PASSSUPPORT_H
