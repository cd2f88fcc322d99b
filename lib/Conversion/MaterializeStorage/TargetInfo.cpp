//===- TargetInfo.cpp - what storage materialization asks of a target -----===//

#include "kvprec/Conversion/MaterializeStorage/TargetInfo.h"
#include "kvprec/Conversion/Passes.h"

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

int64_t mlir::kvprec::getSMVersion(llvm::StringRef chip) {
  int64_t version = 0;
  if (!chip.consume_front("sm_") || chip.empty() ||
      chip.getAsInteger(10, version))
    return 0;
  return version;
}

std::string mlir::kvprec::getNVVMFeatures(llvm::StringRef chip) {
  // The first PTX version each architecture exists in (PTX ISA, "Release
  // notes"); sm_90 takes 8.0, which has every instruction kvprec emits.
  switch (getSMVersion(chip)) {
  case 80:
    return "+ptx70";
  case 86:
    return "+ptx71";
  case 87:
    return "+ptx74";
  case 89:
    return "+ptx78";
  case 90:
    return "+ptx80";
  case 100:
  case 101:
    return "+ptx86";
  case 120:
    return "+ptx87";
  default:
    return "";
  }
}
