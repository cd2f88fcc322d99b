//===- Passes.h - kvprec conversion passes ----------------------*- C++ -*-===//

#ifndef KVPREC_CONVERSION_PASSES_H
#define KVPREC_CONVERSION_PASSES_H

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/ControlFlow/IR/ControlFlow.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/GPU/IR/GPUDialect.h"
#include "mlir/Dialect/LLVMIR/NVVMDialect.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/Dialect/Vector/IR/VectorOps.h"
#include "mlir/IR/BuiltinOps.h"
#include "mlir/Pass/Pass.h"
#include "mlir/Pass/PassManager.h"

namespace mlir::kvprec {

#define GEN_PASS_DECL
#include "kvprec/Conversion/Passes.h.inc"

#define GEN_PASS_REGISTRATION
#include "kvprec/Conversion/Passes.h.inc"

/// Options of the kvprec-to-llvm pipeline.
struct KVPrecToLLVMOptions : public PassPipelineOptions<KVPrecToLLVMOptions> {
  PassOptions::Option<int64_t> threads{
      *this, "threads",
      llvm::cl::desc("Split attention over each KV head's positions into "
                     "this many parts run on OpenMP threads (1: sequential, "
                     "no OpenMP runtime needed)"),
      llvm::cl::init(1)};
  PassOptions::Option<bool> runtimeCertificate{
      *this, "runtime-certificate",
      llvm::cl::desc("Also emit P_attend_certified (the run-time "
                     "certificate) for caches whose attends do not ask for "
                     "it"),
      llvm::cl::init(false)};
  PassOptions::Option<int64_t> prefetchDistance{
      *this, "prefetch-distance",
      llvm::cl::desc("Bytes ahead of each row of codes that attention "
                     "prefetches into L2 (0: no prefetches)"),
      llvm::cl::init(8192)};
  PassOptions::Option<std::string> symbolPrefix{
      *this, "symbol-prefix",
      llvm::cl::desc("Names of the generated functions: <prefix><N>_append, "
                     "... for the N-th cache type"),
      llvm::cl::init("kvprec_cache")};
  PassOptions::Option<int64_t> storePieces{
      *this, "store-pieces",
      llvm::cl::desc("Quantize rows in pieces of at most this many elements "
                     "(0: whole rows); the NVPTX target's form (16), the "
                     "same bits"),
      llvm::cl::init(0)};
  PassOptions::Option<bool> x86Avx512{
      *this, "x86-avx512",
      llvm::cl::desc("Use AVX-512F instructions with no portable vector "
                     "form (int4/int2 decode by a 16-entry table permute); "
                     "the object then needs an AVX-512 CPU"),
      llvm::cl::init(false)};
};

/// Options of the kvprec-to-nvvm pipeline.
struct KVPrecToNVVMOptions : public PassPipelineOptions<KVPrecToNVVMOptions> {
  PassOptions::Option<std::string> chip{
      *this, "chip",
      llvm::cl::desc("NVIDIA architecture: sm_80 (PTX 7.0) or sm_90 (PTX "
                     "8.0), or another sm_XY from 80 up"),
      llvm::cl::init("sm_80")};
  PassOptions::Option<std::string> format{
      *this, "format",
      llvm::cl::desc("What the gpu.binary holds: isa (PTX text, which the "
                     "driver compiles when the module loads) or bin (a "
                     "cubin, made by ptxas at compile time)"),
      llvm::cl::init("isa")};
  PassOptions::Option<std::string> libdevice{
      *this, "libdevice",
      llvm::cl::desc("libdevice bitcode to link (default: "
                     "$CUDA_PATH or $CUDA_HOME, else /usr/local/cuda, "
                     "/nvvm/libdevice/libdevice.10.bc)"),
      llvm::cl::init("")};
  PassOptions::Option<std::string> symbolPrefix{
      *this, "symbol-prefix",
      llvm::cl::desc("Names of the generated functions: <prefix><N>_append, "
                     "... for the N-th cache type"),
      llvm::cl::init("kvprec_cache")};
  PassOptions::Option<bool> runtimeCertificate{
      *this, "runtime-certificate",
      llvm::cl::desc("Also generate P_attend_certified for every cache: "
                     "attention with its run-time certificate computed in "
                     "the same pass (docs/gpu.md)"),
      llvm::cl::init(false)};
};

/// libdevice's default place (KVPrecToNVVMOptions::libdevice).
std::string getDefaultLibdevicePath();

/// The PTX feature level kvprec-to-nvvm uses for `chip` (sm_XY): +ptx70 for
/// sm_80 to sm_86, +ptx78 for sm_87 and sm_89, +ptx80 for sm_90 and later;
/// empty when `chip` is not sm_XY with XY >= 80.
std::string getNVVMFeatures(llvm::StringRef chip);
/// The XY of sm_XY, or 0 when `chip` has another form.
int64_t getSMVersion(llvm::StringRef chip);

/// kvprec-to-nvvm: materialize storage for target=nvptx, lower the GPU
/// module's vector code, then upstream's gpu-lower-to-nvvm-pipeline: the
/// result holds a gpu.binary with the kernels and host code in the LLVM
/// dialect whose launches call the mgpu* runtime (runtime/, docs/gpu.md).
void buildKVPrecToNVVMPipeline(OpPassManager &pm,
                               const KVPrecToNVVMOptions &options);
/// kvprec-to-nvvm's first half: storage materialized for target=nvptx,
/// the device module's unused functions dropped and its vector code
/// lowered, the kernels still gpu.func.
void buildNVVMMaterializePipeline(OpPassManager &pm,
                                  const KVPrecToNVVMOptions &options);
/// Its second half, after the GPU module's vector code is lowered: the device
/// code to NVVM and a gpu.binary, the host code to the LLVM dialect. With
/// no gpu.module left (the GPU emulator's host code, whose gpu.binary is
/// already made) only the host half does anything.
void buildNVVMLoweringPipeline(OpPassManager &pm,
                               const KVPrecToNVVMOptions &options);

/// kvprec-to-llvm: materialize storage, then lower everything to the LLVM
/// dialect (mlir-translate --mlir-to-llvmir makes LLVM IR of the result).
/// With threads > 1 the code calls the OpenMP runtime (libomp).
void buildKVPrecToLLVMPipeline(OpPassManager &pm,
                               const KVPrecToLLVMOptions &options);
void buildKVPrecToLLVMPipeline(OpPassManager &pm);
/// kvprec-to-llvm after materialization: everything to the LLVM dialect,
/// scf.parallel through OpenMP when `threads` > 1. The GPU emulator lowers
/// the kernels it took out of a gpu.module with it.
void buildLLVMLoweringPipeline(OpPassManager &pm, int64_t threads);
/// Registers the kvprec-to-llvm and kvprec-to-nvvm pipelines
/// (registerKVPrecConversionPasses, generated, registers the passes).
void registerKVPrecConversionPipelines();

} // namespace mlir::kvprec

#endif // KVPREC_CONVERSION_PASSES_H
