//===- KVPrecDialect.h - kvprec dialect -------------------------*- C++ -*-===//

#ifndef KVPREC_DIALECT_KVPREC_IR_KVPRECDIALECT_H
#define KVPREC_DIALECT_KVPREC_IR_KVPRECDIALECT_H

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/IR/Dialect.h"
#include "mlir/Interfaces/SideEffectInterfaces.h"

#include "kvprec/Dialect/KVPrec/IR/KVPrecOpsDialect.h.inc"

namespace mlir::kvprec {
/// The storage behind `!kvprec.cache` values, for memory-effect modelling.
struct CacheResource : public SideEffects::Resource::Base<CacheResource> {
  StringRef getName() final { return "KVCache"; }
};
} // namespace mlir::kvprec

#endif // KVPREC_DIALECT_KVPREC_IR_KVPRECDIALECT_H
