//===- KVPrecPlugin.cpp - kvprec as an mlir-opt plugin --------------------===//
//
// One shared library that serves as both a dialect plugin
// (mlir-opt --load-dialect-plugin) and a pass plugin (--load-pass-plugin).
//
//===----------------------------------------------------------------------===//

#include "kvprec/InitKVPrec.h"

#include "mlir/IR/DialectRegistry.h"
#include "mlir/Tools/Plugins/DialectPlugin.h"
#include "mlir/Tools/Plugins/PassPlugin.h"
#include "llvm/Config/llvm-config.h"
#include "llvm/Support/Compiler.h"

extern "C" LLVM_ATTRIBUTE_WEAK mlir::DialectPluginLibraryInfo
mlirGetDialectPluginInfo() {
  return {MLIR_PLUGIN_API_VERSION, "KVPrec", LLVM_VERSION_STRING,
          [](mlir::DialectRegistry *registry) {
            kvprec::registerKVPrecDialect(*registry);
          }};
}

extern "C" LLVM_ATTRIBUTE_WEAK mlir::PassPluginLibraryInfo
mlirGetPassPluginInfo() {
  return {MLIR_PLUGIN_API_VERSION, "KVPrecPasses", LLVM_VERSION_STRING,
          []() { kvprec::registerKVPrecPasses(); }};
}
