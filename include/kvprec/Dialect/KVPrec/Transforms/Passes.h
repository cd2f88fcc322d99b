//===- Passes.h - kvprec dialect passes -------------------------*- C++ -*-===//

#ifndef KVPREC_DIALECT_KVPREC_TRANSFORMS_PASSES_H
#define KVPREC_DIALECT_KVPREC_TRANSFORMS_PASSES_H

#include "kvprec/Certify/PlanCertifier.h"
#include "kvprec/Dialect/KVPrec/IR/KVPrecOps.h"
#include "mlir/IR/BuiltinOps.h"
#include "mlir/Pass/Pass.h"

namespace mlir::kvprec {
/// kvprec-assign-precision's modes.
enum class AssignMode { Certified, Uniform, Kivi, Seed };
/// Scale sharing of integer formats.
enum class GroupGranularity { Token, Channel };
/// kvprec-report's output formats.
enum class ReportFormat { Table, Json, Svg };
/// The option spelling of a mode, for messages.
const char *getAssignModeName(AssignMode mode);
} // namespace mlir::kvprec

namespace mlir::kvprec {

#define GEN_PASS_DECL
#include "kvprec/Dialect/KVPrec/Transforms/Passes.h.inc"

#define GEN_PASS_REGISTRATION
#include "kvprec/Dialect/KVPrec/Transforms/Passes.h.inc"

} // namespace mlir::kvprec

#endif // KVPREC_DIALECT_KVPREC_TRANSFORMS_PASSES_H
