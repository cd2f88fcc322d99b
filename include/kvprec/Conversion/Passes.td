//===- Passes.td - kvprec conversion passes ----------------*- tablegen -*-===//

#ifndef KVPREC_CONVERSION_PASSES_TD
#define KVPREC_CONVERSION_PASSES_TD

include "mlir/Pass/PassBase.td"

def MaterializeStorage : Pass<"kvprec-materialize-storage", "::mlir::ModuleOp"> {
  let summary = "Lowers planned caches and kvprec ops to arenas, memref, scf, vector and arith";
  let description = [{
    Every `!kvprec.cache` with a plan becomes an arena (`memref<?xi8>`) laid
    out as docs/abi.md states (kvprec/Format/CacheLayout.h), and every
    kvprec op on it a call to functions generated once per cache type:
    `P_arena_bytes`, `P_init`, `P_append`, `P_attend` and `P_load`, where
    `P` is `kvprec_cache<N>` for the N-th distinct cache type of the
    module. They carry `llvm.emit_c_interface`, return a status (0 on
    success, docs/abi.md lists the others) and are usable from C.

    Stores quantize exactly as lib/Analysis/Quantizer does (the arena's
    codes, scales and zero points are bit-identical to the reference) with
    the dequantizer precision the plan's certificate names; blocks leaving
    the window are re-quantized from their window values, as the emulator
    (kvprec/Certify/PlanEmulation.h) does. Each format has its own kernels,
    shared by every (layer, head) that uses it; a run's format is chosen
    once per run, never per element.

    In the input, `kvprec.alloc` becomes `memref.alloc` plus `P_init`,
    `kvprec.dealloc` becomes `memref.dealloc`, and append, attend and load
    become calls whose non-zero status stops the program through
    `cf.assert` with a message naming the failure. A `kvprec.attend` with
    an `f32` result calls `P_attend_certified`, which computes the run-time
    certificate (docs/error-bounds.md sections 5 and 8, in the one-pass
    form of kvprec/Analysis/StreamingCertificate.h) in the same pass over
    the cache, and returns the largest bound over the query heads. `kvprec.calibration` ops
    are removed: they served the analysis, and nothing refers to them once
    the allocs are lowered.

    ```
    kvprec-opt planned.mlir --kvprec-materialize-storage
    ```
  }];
  let options = [
    Option<"threads", "threads", "int64_t", /*default=*/"1",
           "Split each KV head's positions in attention into this many "
           "contiguous parts, run as an scf.parallel over (KV head, part) "
           "and joined by a combine step; kvprec-to-llvm{threads=N} with "
           "N > 1 runs them on OpenMP threads">,
    Option<"runtimeCertificate", "runtime-certificate", "bool",
           /*default=*/"false",
           "Also emit P_attend_certified (the run-time certificate, "
           "docs/abi.md) for caches whose kvprec.attend ops do not ask for "
           "it; attends with an f32 result get it in any case">,
    Option<"prefetchDistance", "prefetch-distance", "int64_t",
           /*default=*/"8192",
           "Bytes ahead of each row of codes that attention's loads ask the "
           "memory system for (into L2), so that memory stays busy while "
           "the kernels compute; 0 emits no prefetches (at most 1 MiB)">,
    Option<"x86Avx512", "x86-avx512", "bool", /*default=*/"false",
           "Use AVX-512F instructions that no portable vector op expresses: "
           "int4 and int2 codes decode through a 16-entry table permute "
           "(vpermps) of their group's dequantized values; the object then "
           "needs an AVX-512 CPU">,
    Option<"storePieces", "store-pieces", "int64_t", /*default=*/"0",
           "Quantize rows in pieces of at most this many elements (0: "
           "whole rows as head_dim-lane vectors); target=nvptx uses 16 so "
           "that one GPU thread's registers hold a piece. The same bits "
           "either way">,
    Option<"symbolPrefix", "symbol-prefix", "std::string",
           /*default=*/"\"kvprec_cache\"",
           "Names of the generated functions: <prefix><N>_append, ... for "
           "the N-th cache type (distinct prefixes let several compiled "
           "modules link into one program)">,
    Option<"target", "target", "std::string", /*default=*/"\"cpu\"",
           "Where the cache lives and attention runs: cpu (the functions "
           "run on the host), or nvptx (the arena is device memory; the "
           "functions launch kernels of a gpu.module, docs/gpu.md)">,
    Option<"chip", "chip", "std::string", /*default=*/"\"sm_80\"",
           "target=nvptx: the NVIDIA architecture, sm_80 or later (f8 "
           "decodes through cvt.rn.f16x2.e4m3x2 from sm_90)">
  ];
  let dependentDialects = [
    "::mlir::arith::ArithDialect", "::mlir::cf::ControlFlowDialect",
    "::mlir::func::FuncDialect", "::mlir::gpu::GPUDialect",
    "::mlir::LLVM::LLVMDialect", "::mlir::math::MathDialect",
    "::mlir::memref::MemRefDialect", "::mlir::NVVM::NVVMDialect",
    "::mlir::scf::SCFDialect", "::mlir::vector::VectorDialect"
  ];
}

def LowerDeviceVectors
    : Pass<"kvprec-lower-device-vectors", "::mlir::gpu::GPUModuleOp"> {
  let summary = "Rewrites the vector ops of device code that the NVVM "
                "conversion does not handle";
  let description = [{
    kvprec's format kernels take and give slices of row vectors
    (`vector.extract_strided_slice`, `vector.insert_strided_slice`), which
    upstream's GPU-to-NVVM conversion leaves unconverted on MLIR 22 (its
    vector patterns expect them gone; `convert-vector-to-llvm` removes them
    but also converts memrefs in GPU address spaces, which it cannot).
    This pass rewrites them into shuffles, element extracts and inserts,
    and lowers multi-reductions and transfers, in a gpu.module, so that
    `gpu-lower-to-nvvm-pipeline` converts everything. kvprec-to-nvvm runs it.
  }];
  let dependentDialects = ["::mlir::vector::VectorDialect",
                           "::mlir::scf::SCFDialect"];
}

#endif // KVPREC_CONVERSION_PASSES_TD
