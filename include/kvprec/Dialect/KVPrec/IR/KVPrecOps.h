//===- KVPrecOps.h - kvprec operations --------------------------*- C++ -*-===//

#ifndef KVPREC_DIALECT_KVPREC_IR_KVPRECOPS_H
#define KVPREC_DIALECT_KVPREC_IR_KVPRECOPS_H

#include "kvprec/Dialect/KVPrec/IR/KVPrecTypes.h"
#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/OpDefinition.h"
#include "mlir/IR/SymbolTable.h"
#include "mlir/Interfaces/SideEffectInterfaces.h"

#define GET_OP_CLASSES
#include "kvprec/Dialect/KVPrec/IR/KVPrecOps.h.inc"

#endif // KVPREC_DIALECT_KVPREC_IR_KVPRECOPS_H
