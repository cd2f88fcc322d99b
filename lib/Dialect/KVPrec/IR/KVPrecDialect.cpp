//===- KVPrecDialect.cpp - kvprec dialect ---------------------------------===//

#include "kvprec/Dialect/KVPrec/IR/KVPrecDialect.h"
#include "kvprec/Dialect/KVPrec/IR/KVPrecOps.h"

#include "mlir/IR/OpImplementation.h"

#include "mlir/IR/Builders.h"
#include "mlir/IR/DialectImplementation.h"
#include "llvm/ADT/TypeSwitch.h"

using namespace mlir;
using namespace mlir::kvprec;

#include "kvprec/Dialect/KVPrec/IR/KVPrecOpsDialect.cpp.inc"

namespace {
/// Prints plans once, as `#plan = #kvprec.plan<...>` at the top of the
/// module, since every cache type that carries one would repeat it.
struct KVPrecOpAsmDialectInterface : public OpAsmDialectInterface {
  using OpAsmDialectInterface::OpAsmDialectInterface;
  AliasResult getAlias(Attribute attr, raw_ostream &os) const override {
    if (isa<PlanAttr>(attr)) {
      os << "plan";
      return AliasResult::OverridableAlias;
    }
    return AliasResult::NoAlias;
  }
};
} // namespace

void KVPrecDialect::initialize() {
  addInterfaces<KVPrecOpAsmDialectInterface>();
  addOperations<
#define GET_OP_LIST
#include "kvprec/Dialect/KVPrec/IR/KVPrecOps.cpp.inc"
      >();
  registerAttributes();
  registerTypes();
}
