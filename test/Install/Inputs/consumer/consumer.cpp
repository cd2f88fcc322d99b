// Parses kvprec IR with the installed dialect, verifies it, and prints it.
#include "kvprec/Dialect/KVPrec/IR/KVPrecOps.h"
#include "kvprec/InitKVPrec.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/DialectRegistry.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/Parser/Parser.h"
#include "llvm/Support/raw_ostream.h"

int main() {
  mlir::DialectRegistry registry;
  kvprec::registerKVPrecDialect(registry);
  registry.insert<mlir::func::FuncDialect>();
  mlir::MLIRContext context(registry);
  const char *source = R"mlir(
    func.func @init() -> !kvprec.cache<2x4x128x16xf16> {
      %c = kvprec.alloc : !kvprec.cache<2x4x128x16xf16>
      return %c : !kvprec.cache<2x4x128x16xf16>
    })mlir";
  mlir::OwningOpRef<mlir::ModuleOp> module =
      mlir::parseSourceString<mlir::ModuleOp>(source, &context);
  if (!module)
    return 1;
  int caches = 0;
  module->walk([&](mlir::kvprec::AllocOp op) {
    mlir::kvprec::CacheType type = op.getCache().getType();
    llvm::outs() << "cache layers=" << type.getLayers()
                 << " heads=" << type.getHeads() << "\n";
    ++caches;
  });
  module->print(llvm::outs());
  return caches == 1 ? 0 : 2;
}
