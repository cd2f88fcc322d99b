//===- CacheCodegen.h - the C ABI functions of one planned cache -*- C++
//-*-===//
//
// For one planned cache type, emits the functions docs/abi.md specifies
// (arena size, init, append, attend, load) on top of the per-format kernels
// of FormatCodegen. The layout of every stream comes from tables (memref
// globals) indexed by (layer, head, K/V), and each run's format is one
// scf.index_switch over the formats of the plan, so code size grows with
// the number of distinct formats, not with layers x heads.
//
//===----------------------------------------------------------------------===//

#ifndef KVPREC_LIB_CONVERSION_MATERIALIZESTORAGE_CACHECODEGEN_H
#define KVPREC_LIB_CONVERSION_MATERIALIZESTORAGE_CACHECODEGEN_H

#include "kvprec/Conversion/MaterializeStorage/TargetInfo.h"
#include "kvprec/Dialect/KVPrec/IR/KVPrecTypes.h"
#include "kvprec/Format/CacheLayout.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/BuiltinOps.h"

#include <string>

namespace mlir::kvprec {

/// The public functions of one cache type. `P` is the prefix:
///  * P_arena_bytes() -> i64
///  * P_init(arena) -> i32
///  * P_append(arena, layer: index, keys, values: memref<?x?x?xT>,
///             position: index) -> i32
///  * P_attend(arena, layer: index, query: memref<?x?xT>, length: index,
///             output: memref<?x?xT>, softmaxScale: f32) -> i32
///  * P_load(arena, layer: index, start: index, keys, values) -> i32
///  * where asked for, P_attend_certified(<the arguments of P_attend>,
///    bounds: memref<?xf32>) -> i32, which also writes the run-time
///    certificate of every query head to `bounds`
/// with arena a memref<?xi8>; all carry llvm.emit_c_interface.
struct CacheFunctions {
  func::FuncOp arenaBytes, init, append, attend, attendCertified, load;
};

class FormatCodegen;

/// Emits the functions of `cache` (which has a plan) at the end of `module`.
/// `dequantizer` is the precision of the dequantize multiply the plan's
/// certificate assumes; `target` answers the target questions (vector
/// width, position splits of attention: an scf.parallel over heads and
/// parts, then a combine step).
/// `formats` holds the module's format kernels (shared between caches);
/// with `certified` P_attend_certified is emitted too.
FailureOr<CacheFunctions> emitCacheFunctions(
    ModuleOp module, CacheType cache,
    const ::kvprec::layout::ArenaLayout &layout, FormatCodegen &formats,
    ::kvprec::analysis::StorageKind dequantizer, const std::string &prefix,
    const StorageTargetInfo &target, bool certified);

/// The same functions for a cache in NVIDIA GPU memory (target=nvptx):
/// host functions with the signatures above whose memrefs are device
/// memory, each launching kernels of a gpu.module `P_device` emitted beside
/// them (docs/gpu.md). Append, init and load run the CPU's code in one GPU
/// thread (the same IR, so the same bits); attention is split-K over
/// (query-head chunk, split, KV head) blocks with a combine kernel. Fails
/// with a diagnostic at `user` for shapes the kernels do not handle, and
/// for `certified` (no run-time certificate on the GPU yet).
FailureOr<CacheFunctions> emitGPUCacheFunctions(
    ModuleOp module, CacheType cache,
    const ::kvprec::layout::ArenaLayout &layout,
    ::kvprec::analysis::StorageKind dequantizer, const std::string &prefix,
    const NVPTXStorageTargetInfo &target, bool certified, Operation *user);

} // namespace mlir::kvprec

#endif // KVPREC_LIB_CONVERSION_MATERIALIZESTORAGE_CACHECODEGEN_H
