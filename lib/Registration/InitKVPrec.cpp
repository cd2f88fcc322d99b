//===- InitKVPrec.cpp - register kvprec dialects and passes ---------------===//

#include "kvprec/InitKVPrec.h"
#include "kvprec/Conversion/Passes.h"
#include "kvprec/Dialect/KVPrec/IR/KVPrecDialect.h"
#include "kvprec/Dialect/KVPrec/Transforms/Passes.h"

#include "mlir/IR/DialectRegistry.h"
#include "mlir/InitAllDialects.h"
#include "mlir/InitAllExtensions.h"
#include "mlir/Target/LLVM/NVVM/Target.h"
#include "mlir/Target/LLVMIR/Dialect/All.h"

void kvprec::registerKVPrecDialect(mlir::DialectRegistry &registry) {
  registry.insert<mlir::kvprec::KVPrecDialect>();
}

void kvprec::registerKVPrecPasses() {
  mlir::kvprec::registerKVPrecPasses();
  mlir::kvprec::registerKVPrecConversionPasses();
  mlir::kvprec::registerKVPrecConversionPipelines();
}

void kvprec::registerKVPrecToolDialects(mlir::DialectRegistry &registry) {
  registerKVPrecDialect(registry);
  // Upstream dialects and their extensions: without the extensions
  // (ConvertToLLVM interfaces, inliner, ...) --convert-to-llvm silently
  // leaves ops unconverted.
  mlir::registerAllDialects(registry);
  mlir::registerAllExtensions(registry);
  // gpu-module-to-binary needs the LLVM/NVVM translations and the NVVM
  // target attribute's interface.
  mlir::registerAllToLLVMIRTranslations(registry);
  mlir::registerAllGPUToLLVMIRTranslations(registry);
  mlir::NVVM::registerNVVMTargetInterfaceExternalModels(registry);
}
