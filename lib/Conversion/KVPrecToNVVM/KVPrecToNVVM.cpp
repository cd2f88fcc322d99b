//===- KVPrecToNVVM.cpp - the kvprec-to-nvvm pipeline ---------------------===//
//
// kvprec-materialize-storage{target=nvptx chip=...}, the GPU module's
// strided vector slices rewritten first (kvprec-lower-device-vectors:
// upstream's GPU-to-NVVM conversion handles no
// vector.extract_strided_slice, ../shared/docs/mlir22-lowering-facts.md),
// then the steps of upstream's gpu-lower-to-nvvm-pipeline with the chip,
// the PTX feature level it needs, the binary format and libdevice linked
// (the NVVM conversion turns math ops such as absf and roundeven into
// libdevice calls, which neither ptxas nor the driver resolves alone): a
// gpu.binary holding PTX (isa) or a cubin (bin), and host code in the LLVM
// dialect whose gpu.launch_func, gpu.alloc and gpu.memcpy become mgpu*
// calls when mlir-translate makes LLVM IR (runtime/ provides them).
//
//===----------------------------------------------------------------------===//

#include "kvprec/Conversion/Passes.h"

#include "mlir/Conversion/Passes.h"
#include "mlir/Dialect/GPU/IR/GPUDialect.h"
#include "mlir/Dialect/GPU/Transforms/Passes.h"
#include "mlir/Dialect/LLVMIR/Transforms/Passes.h"
#include "mlir/Dialect/MemRef/Transforms/Passes.h"
#include "mlir/Pass/PassRegistry.h"
#include "mlir/Transforms/Passes.h"

#include <cstdlib>

using namespace mlir;

std::string mlir::kvprec::getDefaultLibdevicePath() {
  for (const char *variable : {"CUDA_PATH", "CUDA_HOME"})
    if (const char *root = std::getenv(variable); root && *root)
      return std::string(root) + "/nvvm/libdevice/libdevice.10.bc";
  return "/usr/local/cuda/nvvm/libdevice/libdevice.10.bc";
}

void mlir::kvprec::buildKVPrecToNVVMPipeline(
    OpPassManager &pm, const KVPrecToNVVMOptions &options) {
  buildNVVMMaterializePipeline(pm, options);
  buildNVVMLoweringPipeline(pm, options);
}

void mlir::kvprec::buildNVVMMaterializePipeline(
    OpPassManager &pm, const KVPrecToNVVMOptions &options) {
  MaterializeStorageOptions materialize;
  materialize.target = "nvptx";
  materialize.chip = options.chip;
  materialize.symbolPrefix = options.symbolPrefix;
  materialize.runtimeCertificate = options.runtimeCertificate;
  pm.addPass(createMaterializeStorage(materialize));
  pm.addPass(createCanonicalizerPass());
  pm.addPass(createCSEPass());
  // The device module holds every format kernel and dispatcher the CPU
  // emitter makes; only those the kernels reach are kept.
  pm.addNestedPass<gpu::GPUModuleOp>(createSymbolDCEPass());
  pm.addNestedPass<gpu::GPUModuleOp>(createLowerDeviceVectors());
}

void mlir::kvprec::buildNVVMLoweringPipeline(
    OpPassManager &pm, const KVPrecToNVVMOptions &options) {

  // gpu-lower-to-nvvm-pipeline's common part, its target with libdevice.
  pm.addPass(createConvertNVGPUToNVVMPass());
  pm.addPass(createConvertVectorToSCFPass());
  pm.addPass(createSCFToControlFlowPass());
  pm.addPass(createConvertNVVMToLLVMPass());
  pm.addPass(createConvertFuncToLLVMPass());
  pm.addPass(memref::createExpandStridedMetadataPass());
  GpuNVVMAttachTargetOptions target;
  target.chip = options.chip;
  target.features = getNVVMFeatures(options.chip);
  std::string libdevice = options.libdevice.empty()
                              ? getDefaultLibdevicePath()
                              : std::string(options.libdevice);
  target.linkLibs.push_back(libdevice);
  pm.addPass(createGpuNVVMAttachTarget(target));
  pm.addPass(createLowerAffinePass());
  pm.addPass(createArithToLLVMConversionPass());
  pm.addPass(createConvertIndexToLLVMPass());
  pm.addPass(createCanonicalizerPass());
  pm.addPass(createCSEPass());
  // The device code.
  pm.addNestedPass<gpu::GPUModuleOp>(createStripDebugInfoPass());
  pm.addNestedPass<gpu::GPUModuleOp>(createConvertGpuOpsToNVVMOps());
  pm.addNestedPass<gpu::GPUModuleOp>(LLVM::createNVVMOptimizeForTargetPass());
  pm.addNestedPass<gpu::GPUModuleOp>(createCanonicalizerPass());
  pm.addNestedPass<gpu::GPUModuleOp>(createCSEPass());
  pm.addNestedPass<gpu::GPUModuleOp>(createReconcileUnrealizedCastsPass());
  // The host code, and the binary.
  pm.addPass(createGpuToLLVMConversionPass());
  GpuModuleToBinaryPassOptions binary;
  binary.compilationTarget = options.format;
  pm.addPass(createGpuModuleToBinaryPass(binary));
  pm.addPass(createConvertMathToLLVMPass());
  pm.addPass(createCanonicalizerPass());
  pm.addPass(createCSEPass());
  pm.addPass(createReconcileUnrealizedCastsPass());
}
