//===- Passes.h - kvprec dialect passes -------------------------*- C++ -*-===//

#ifndef KVPREC_DIALECT_KVPREC_TRANSFORMS_PASSES_H
#define KVPREC_DIALECT_KVPREC_TRANSFORMS_PASSES_H

#include "kvprec/Certify/PlanCertifier.h"
#include "kvprec/Dialect/KVPrec/IR/KVPrecOps.h"
#include "mlir/IR/BuiltinOps.h"
#include "mlir/Pass/Pass.h"

namespace mlir::kvprec {

#define GEN_PASS_DECL
#include "kvprec/Dialect/KVPrec/Transforms/Passes.h.inc"

#define GEN_PASS_REGISTRATION
#include "kvprec/Dialect/KVPrec/Transforms/Passes.h.inc"

} // namespace mlir::kvprec

#endif // KVPREC_DIALECT_KVPREC_TRANSFORMS_PASSES_H
