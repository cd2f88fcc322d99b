//===- kvprec-opt.cpp - the kvprec optimizer driver -----------------------===//
//
// mlir-opt with the kvprec dialect, passes and pipelines, and the upstream
// dialects, passes and translations that kvprec's lowering uses.
//
//===----------------------------------------------------------------------===//

#include "kvprec/InitKVPrec.h"

#include "mlir/IR/DialectRegistry.h"
#include "mlir/InitAllPasses.h"
#include "mlir/Tools/mlir-opt/MlirOptMain.h"

int main(int argc, char **argv) {
  mlir::registerAllPasses();
  kvprec::registerKVPrecPasses();

  mlir::DialectRegistry registry;
  kvprec::registerKVPrecToolDialects(registry);
  return mlir::asMainReturnCode(mlir::MlirOptMain(
      argc, argv, "kvprec optimizer driver: certified mixed-precision KV "
                  "caches\n",
      registry));
}
