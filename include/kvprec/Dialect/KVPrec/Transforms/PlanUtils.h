//===- PlanUtils.h - plans between IR and the plain analysis ----*- C++ -*-===//
//
// Converts #kvprec.format / #kvprec.plan to and from plain C++ values that
// the analysis library (and tools such as kvprec-calib eval-bounds) use
// without touching IR.
//
//===----------------------------------------------------------------------===//

#ifndef KVPREC_DIALECT_KVPREC_TRANSFORMS_PLANUTILS_H
#define KVPREC_DIALECT_KVPREC_TRANSFORMS_PLANUTILS_H

#include "kvprec/Format/StorageFormat.h"
#include "kvprec/Certify/Plan.h"
#include "kvprec/Dialect/KVPrec/IR/KVPrecOps.h"

#include <optional>
#include <vector>

namespace mlir::kvprec {

/// The analysis view of a format attribute.
::kvprec::analysis::StorageFormat toAnalysisFormat(StorageFormatAttr attr);
/// The attribute of a storable analysis format.
StorageFormatAttr toFormatAttr(MLIRContext *context,
                               const ::kvprec::analysis::StorageFormat &format);

/// The plan of `cache` as plain data, or std::nullopt when it has none.
std::optional<::kvprec::certify::Plan> toPlainPlan(CacheType cache);

/// Builds a plan attribute, storing each index list in its most compact
/// form (one entry when all agree).
PlanAttr buildPlanAttr(MLIRContext *context,
                       const ::kvprec::certify::Plan &plan,
                       CertificateAttr certificate);

/// The fields of a #kvprec.certificate as plain data.
struct CertificateRecord {
  /// A probabilistic certificate (error-bounds.md §9) and its P, the
  /// failure probability per decode step; 0 for a deterministic one.
  bool probabilistic = false;
  double confidence = 0.0;
  /// One tolerance, one per layer, or none (then `budget` > 0).
  std::vector<double> tolerances;
  double budget = 0.0;
  double bound = 0.0;
  std::vector<double> layerBounds;
  double necessaryBits = 0.0, averageBits = 0.0, bytesVsF16 = 0.0;
  int64_t calibratedLength = 0;
  /// 0: coordinate-wise envelopes; else the joint certificate over up to
  /// this many calibration queries per (layer, KV head).
  int64_t querySamples = 0;
  bool extrapolated = false;
  double margin = 1.0;
  double softmaxScale = 0.0;
  ::kvprec::analysis::StorageKind dequant =
      ::kvprec::analysis::StorageKind::F32;
  int64_t accumulateBlock = 0;
  int64_t expUlps = 0;
};
CertificateAttr buildCertificateAttr(MLIRContext *context,
                                     const CertificateRecord &record);
CertificateRecord readCertificateAttr(CertificateAttr attr);

/// Parses a format spelled as an MLIR element type ("f16", "bf16", "f32",
/// "f8E4M3FN", "f8E5M2", "i8", "i4", "i2") into a storage kind.
std::optional<::kvprec::analysis::StorageKind>
parseStorageKind(llvm::StringRef name);

/// Replaces every `!kvprec.cache` type in `root` (op results, block
/// arguments, function signatures) for which `newType` returns a type.
void replaceCacheTypes(Operation *root,
                       llvm::function_ref<CacheType(CacheType)> newType);

} // namespace mlir::kvprec

#endif // KVPREC_DIALECT_KVPREC_TRANSFORMS_PLANUTILS_H
