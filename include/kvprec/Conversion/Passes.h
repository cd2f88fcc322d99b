//===- Passes.h - kvprec conversion passes ----------------------*- C++ -*-===//

#ifndef KVPREC_CONVERSION_PASSES_H
#define KVPREC_CONVERSION_PASSES_H

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/ControlFlow/IR/ControlFlow.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
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
  PassOptions::Option<bool> x86Avx512{
      *this, "x86-avx512",
      llvm::cl::desc("Use AVX-512F instructions with no portable vector "
                     "form (int4/int2 decode by a 16-entry table permute); "
                     "the object then needs an AVX-512 CPU"),
      llvm::cl::init(false)};
};

/// kvprec-to-llvm: materialize storage, then lower everything to the LLVM
/// dialect (mlir-translate --mlir-to-llvmir makes LLVM IR of the result).
/// With threads > 1 the code calls the OpenMP runtime (libomp).
void buildKVPrecToLLVMPipeline(OpPassManager &pm,
                               const KVPrecToLLVMOptions &options);
void buildKVPrecToLLVMPipeline(OpPassManager &pm);
/// Registers the kvprec-to-llvm pipeline (registerKVPrecConversionPasses,
/// generated, registers the passes).
void registerKVPrecConversionPipelines();

} // namespace mlir::kvprec

#endif // KVPREC_CONVERSION_PASSES_H
