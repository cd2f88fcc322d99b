//===- TargetInfo.cpp - what storage materialization asks of a target -----===//

#include "kvprec/Conversion/MaterializeStorage/TargetInfo.h"

#include "mlir/Dialect/LLVMIR/LLVMDialect.h"

using namespace mlir;
using namespace mlir::kvprec;

StorageTargetInfo::~StorageTargetInfo() = default;

Value CPUStorageTargetInfo::emitTableLookup16(ImplicitLocOpBuilder &b,
                                              Value table,
                                              Value indices) const {
  // vpermps zmm: the low 4 bits of each index lane pick a table lane.
  return LLVM::CallIntrinsicOp::create(
             b, table.getType(),
             b.getStringAttr("llvm.x86.avx512.permvar.sf.512"),
             ValueRange{table, indices})
      .getResult(0);
}
