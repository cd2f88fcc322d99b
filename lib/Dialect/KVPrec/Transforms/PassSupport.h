//===- PassSupport.h - helpers shared by the kvprec passes ------*- C++ -*-===//

#ifndef KVPREC_LIB_DIALECT_KVPREC_TRANSFORMS_PASSSUPPORT_H
#define KVPREC_LIB_DIALECT_KVPREC_TRANSFORMS_PASSSUPPORT_H

#include "kvprec/Certify/Plan.h"
#include "kvprec/Dialect/KVPrec/IR/KVPrecOps.h"
#include "kvprec/Dialect/KVPrec/Transforms/PlanUtils.h"

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

/// The softmax scale at which the module reads caches of `alloc`'s type
/// (plans ignored): the scale of every kvprec.attend over such a cache,
/// which must agree (a located error at the first that does not), or
/// 1/sqrt(head_dim) when no attend reads it.
FailureOr<double> getCacheSoftmaxScale(AllocOp alloc);

/// A recomputed certificate and the bound of every (layer, KV head).
struct ComputedCertificate {
  CertificateRecord record;
  std::vector<double> headBounds;
};

/// Certifies `plan` from `stats` with `options` (checkCoverage first) and
/// fills every field of the certificate for the given tolerances (or
/// budget). Emits located errors on `alloc` and fails when the plan cannot
/// be certified.
FailureOr<ComputedCertificate>
computeCertificate(AllocOp alloc, const ::kvprec::calib::CalibrationStats &stats,
                   const ::kvprec::certify::Plan &plan,
                   const ::kvprec::certify::CertifyOptions &options,
                   const std::vector<double> &tolerances, double budget);

/// Human-readable name of a format ("f16", "i4 asym token_group=8 f16").
std::string describeFormat(const ::kvprec::analysis::StorageFormat &format);

} // namespace mlir::kvprec

#endif // KVPREC_LIB_DIALECT_KVPREC_TRANSFORMS_PASSSUPPORT_H
