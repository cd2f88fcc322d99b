//===- KVPrecToLLVM.cpp - the kvprec-to-llvm pipeline ---------------------===//
//
// kvprec-materialize-storage followed by the upstream conversions that
// lower memref, scf, vector, arith, math, cf and func to the LLVM dialect
// on this MLIR (../shared/docs/mlir22-lowering-facts.md): vector ops to scf
// first, scf to cf, strided metadata expanded (memref.view), affine maps
// lowered, bf16 arithmetic expanded so that truncation rounds subnormals
// correctly, then everything to LLVM.
//
//===----------------------------------------------------------------------===//

#include "kvprec/Conversion/Passes.h"

#include "mlir/Conversion/Passes.h"
#include "mlir/Dialect/Arith/Transforms/Passes.h"
#include "mlir/Dialect/MemRef/Transforms/Passes.h"
#include "mlir/Pass/PassRegistry.h"
#include "mlir/Transforms/Passes.h"

using namespace mlir;

void mlir::kvprec::buildKVPrecToLLVMPipeline(OpPassManager &pm) {
  buildKVPrecToLLVMPipeline(pm, KVPrecToLLVMOptions());
}

void mlir::kvprec::buildKVPrecToLLVMPipeline(
    OpPassManager &pm, const KVPrecToLLVMOptions &options) {
  MaterializeStorageOptions materialize;
  materialize.threads = options.threads;
  materialize.runtimeCertificate = options.runtimeCertificate;
  materialize.prefetchDistance = options.prefetchDistance;
  materialize.x86Avx512 = options.x86Avx512;
  materialize.storePieces = options.storePieces;
  materialize.symbolPrefix = options.symbolPrefix;
  pm.addPass(createMaterializeStorage(materialize));
  buildLLVMLoweringPipeline(pm, options.threads);
}

void mlir::kvprec::buildLLVMLoweringPipeline(OpPassManager &pm,
                                             int64_t threads) {
  pm.addPass(createCanonicalizerPass());
  pm.addPass(createCSEPass());
  // scf.parallel becomes OpenMP only when threads are asked for; otherwise
  // scf-to-cf runs it as a loop.
  if (threads > 1)
    pm.addPass(createConvertSCFToOpenMPPass());
  pm.addPass(createConvertVectorToSCFPass());
  pm.addPass(createSCFToControlFlowPass());
  pm.addPass(memref::createExpandStridedMetadataPass());
  pm.addPass(createLowerAffinePass());
  arith::ArithExpandOpsPassOptions expand;
  expand.includeBf16 = true;
  pm.addPass(arith::createArithExpandOpsPass(expand));
  pm.addPass(createConvertMathToLLVMPass());
  pm.addPass(createArithToLLVMConversionPass());
  pm.addPass(createConvertVectorToLLVMPass());
  pm.addPass(createFinalizeMemRefToLLVMConversionPass());
  if (threads > 1)
    pm.addPass(createConvertOpenMPToLLVMPass());
  pm.addPass(createConvertToLLVMPass());
  pm.addPass(createReconcileUnrealizedCastsPass());
}

void mlir::kvprec::registerKVPrecConversionPipelines() {
  PassPipelineRegistration<KVPrecToNVVMOptions>(
      "kvprec-to-nvvm",
      "Lowers planned kvprec caches and ops for NVIDIA GPUs "
      "(kvprec-materialize-storage{target=nvptx}, then "
      "gpu-lower-to-nvvm-pipeline): a gpu.binary with PTX or a cubin, and "
      "host code in the LLVM dialect",
      [](OpPassManager &pm, const KVPrecToNVVMOptions &options) {
        buildKVPrecToNVVMPipeline(pm, options);
      });
  PassPipelineRegistration<KVPrecToLLVMOptions>(
      "kvprec-to-llvm",
      "Lowers planned kvprec caches and ops to the LLVM dialect "
      "(kvprec-materialize-storage, then the upstream conversions)",
      [](OpPassManager &pm, const KVPrecToLLVMOptions &options) {
        buildKVPrecToLLVMPipeline(pm, options);
      });
}
