//===- KVPrecAttrs.h - kvprec attributes ------------------------*- C++ -*-===//

#ifndef KVPREC_DIALECT_KVPREC_IR_KVPRECATTRS_H
#define KVPREC_DIALECT_KVPREC_IR_KVPRECATTRS_H

#include "kvprec/Format/Plan.h"
#include "kvprec/Dialect/KVPrec/IR/KVPrecDialect.h"
#include "mlir/IR/Attributes.h"
#include "mlir/IR/BuiltinAttributes.h"

#include "kvprec/Dialect/KVPrec/IR/KVPrecEnums.h.inc"

#define GET_ATTRDEF_CLASSES
#include "kvprec/Dialect/KVPrec/IR/KVPrecAttrs.h.inc"

namespace mlir::kvprec {
/// True if `type` can be a storage element type of a format (f32, f16, bf16,
/// f8E4M3FN, f8E5M2, i8, i4, i2).
bool isStorableElementType(Type type);
/// True if `type` can be the scale type of a scaled format.
bool isScaleElementType(Type type);
} // namespace mlir::kvprec

#endif // KVPREC_DIALECT_KVPREC_IR_KVPRECATTRS_H
