//===- KVPrecTypes.h - kvprec types -----------------------------*- C++ -*-===//

#ifndef KVPREC_DIALECT_KVPREC_IR_KVPRECTYPES_H
#define KVPREC_DIALECT_KVPREC_IR_KVPRECTYPES_H

#include "kvprec/Dialect/KVPrec/IR/KVPrecAttrs.h"
#include "mlir/IR/Types.h"

#define GET_TYPEDEF_CLASSES
#include "kvprec/Dialect/KVPrec/IR/KVPrecOpsTypes.h.inc"

#endif // KVPREC_DIALECT_KVPREC_IR_KVPRECTYPES_H
