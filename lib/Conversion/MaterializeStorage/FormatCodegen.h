//===- FormatCodegen.h - store and load kernels of one format ---*- C++ -*-===//
//
// Emits, once per (storage format, head_dim, dequantizer precision), the
// functions that read and write runs of that format in an arena
// (docs/abi.md): quantize-on-store with exactly the rounding of
// kvprec/Analysis/Quantizer.h, dequantize-on-load (decode attention with a
// GQA group dequantizes each tile of rows once through load), and the
// logits and accumulation of one query head with each row dequantized in
// registers.
// Every kernel works on whole rows as vector<head_dim x ...> values, so each
// format has its own straight-line loop body and no per-element branch.
//
//===----------------------------------------------------------------------===//

#ifndef KVPREC_LIB_CONVERSION_MATERIALIZESTORAGE_FORMATCODEGEN_H
#define KVPREC_LIB_CONVERSION_MATERIALIZESTORAGE_FORMATCODEGEN_H

#include "kvprec/Conversion/MaterializeStorage/TargetInfo.h"
#include "kvprec/Format/StorageFormat.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/ImplicitLocOpBuilder.h"

#include <map>
#include <string>
#include <tuple>

namespace mlir::kvprec {

/// Status codes every generated function returns (docs/abi.md).
enum class CacheStatus : int32_t {
  Ok = 0,
  /// An append would exceed the capacity.
  Full = 1,
  /// A position or length that disagrees with the fill count, or a range
  /// outside the positions appended.
  BadLength = 2,
  /// A layer index outside the cache.
  BadLayer = 3,
  /// An arena smaller than the layout needs.
  BadArena = 4,
  /// A value the format cannot store (non-finite input, or a scale or
  /// dequantized value that overflows).
  Unrepresentable = 5,
  /// A memref whose shape does not match the cache.
  BadShape = 6,
};

/// The kernels of one format, both taking the arena (memref<?xi8>) and a
/// run's region offsets (codes, scales, zero points; index, in bytes) first:
///  * store(arena, code, scale, zero, src: memref<?xf32>, srcOff, row0,
///          rows, dry: i1) -> i32: quantizes `rows` rows of head_dim floats
///    from src[srcOff...] into rows [row0, row0 + rows) of the run as one
///    unit (channel groups start at row0, which must be group-aligned).
///    With `dry` it only computes the status.
///  * load(arena, code, scale, zero, row0, rows, dst: memref<?xf32>,
///         dstOff): dequantizes rows into dst.
///  * load_bounds(<the arguments of load>, bounds: memref<?xf32>), where
///    asked for: load, and each element's error bound delta (never below
///    an::computeStoredElementErrorBound) at the same places of `bounds`.
///  * load_keys(<the arguments of load>, rowScales: memref<?xf32>): the
///    rows as attention's logits take them: code values and the row's scale
///    in rowScales[r] for symmetric whole-row token groups with the f32
///    dequantizer (the scale folds into the logit), the dequantized row and
///    1 elsewhere.
///  * logits(arena, code, scale, zero, row0, rows, q: memref<?xf32>, qOff,
///           scale: f32, out: memref<?xf32>, outOff): the scaled logits of
///    one query head against the rows, each row dequantized in registers
///    (what load_keys and attention's tile_logits compute together);
///  * accumulate(arena, code, scale, zero, row0, rows, p: memref<?xf32>,
///               pOff, acc: memref<?xf32>, accOff): acc += sum of the
///    weighted dequantized rows in row order (load and tile_accumulate
///    together, for one head).
struct FormatKernels {
  func::FuncOp store, load, bounds, loadKeys, logits, accumulate;
};

/// The sum of the lanes of an f32 vector as a fixed tree of vector adds:
/// chunks of up to 16 lanes are added lane-wise, then the last chunk is
/// halved with shuffles. (vector.reduction <add> without reassociation is
/// an ordered chain of scalar adds, one per lane.)
Value emitLaneSum(ImplicitLocOpBuilder &b, Value v);

/// The sums of `w` f32 vectors of head_dim lanes (w a power of two that
/// divides head_dim) as one vector of w lanes, lane i the sum of rows[i]:
/// each row's lanes are added lane-wise over its w-lane chunks, then one
/// transposed tree of shuffles and adds reduces the w partial vectors
/// (about 2 instructions per row instead of a reduction per row).
Value emitRowSums(ImplicitLocOpBuilder &b, ArrayRef<Value> rows);

/// The lane-wise dot product of two f32 vectors of the same width over
/// their `chunk`-lane pieces (chunk divides the width): x_0 y_0, then one
/// fused multiply-add per further piece, in order; a vector of `chunk`
/// lanes whose lane sum is x . y. One rounding per product and sum instead
/// of two (the dot-product bound gamma_d holds either way).
Value emitChunkDot(ImplicitLocOpBuilder &b, Value x, Value y, int64_t chunk);

/// The largest power of two, at most 16, that divides `width`.
int64_t getLaneChunk(int64_t width);

/// e^x for the lanes of an f32 vector, without library calls: Cody-Waite
/// reduction by ln 2 with FMAs, a degree-6 polynomial (Cephes expf), and
/// the scaling by 2^n in two exact steps (so that subnormal results are
/// rounded once). 0 below -104, inf above 88.8. Its measured error is in
/// unittests/Runtime (kvprec's attention contract allows 4 ulps).
Value emitExp(ImplicitLocOpBuilder &b, Value x);

/// e^x - 1 for non-negative f32 lanes, accurate to a few ulps also near 0
/// (a series below 1/8, emitExp(x) - 1 above); the run-time certificate's
/// phi.
Value emitExpm1(ImplicitLocOpBuilder &b, Value x);

/// Element-wise building blocks of the format kernels, for kernels that
/// decode other shapes than whole rows (the NVPTX attention's lane slices):
/// each computes exactly what the row kernels compute for the same lanes.
///
/// The value of code lanes (i32, one stored code each: sign-extended for
/// symmetric integers, the raw byte for f8 and asymmetric integers) before
/// scaling, as f32 lanes.
Value emitCodeValues(ImplicitLocOpBuilder &b,
                     const ::kvprec::analysis::StorageFormat &format,
                     Value codes);
/// Code values (f32 lanes) dequantized with per-lane scale and zero-point
/// lanes (f32; `zero` null for symmetric formats) in the dequantizer's
/// precision: fl_P(k s), then fl_P(fl_P(k s) + z). Unscaled formats return
/// the values.
Value emitDequantizeValues(ImplicitLocOpBuilder &b,
                           const ::kvprec::analysis::StorageFormat &format,
                           ::kvprec::analysis::StorageKind dequantizer,
                           Value values, Value scale, Value zero);
/// Each element's error bound delta (the bounds kernel's: never below
/// an::computeStoredElementErrorBound, rounded up to f32) from its code
/// value lanes (emitCodeValues'; null for unscaled formats), its
/// dequantized value lanes and its scale lanes (null for unscaled formats).
Value emitElementBounds(ImplicitLocOpBuilder &b,
                        const ::kvprec::analysis::StorageFormat &format,
                        ::kvprec::analysis::StorageKind dequantizer,
                        Value codes, Value value, Value scale);
/// Scale or zero-point lanes as stored (i16 lanes for f16 and bf16 scales,
/// f32 lanes for f32) widened to f32.
Value emitWidenScales(ImplicitLocOpBuilder &b,
                      const ::kvprec::analysis::StorageFormat &format,
                      Value raw);
/// Whether attention multiplies a row's scale into its logit instead of
/// dequantizing each key element: symmetric token groups of a whole row
/// with the f32 dequantizer (s (q . c) rounds within the contract's
/// gamma_{d+2} of q . fl(s c); an asymmetric zero point would not).
bool foldsKeyScale(const ::kvprec::analysis::StorageFormat &format,
                   int64_t headDim,
                   ::kvprec::analysis::StorageKind dequantizer);

class FormatCodegen {
public:
  /// One instance serves a whole module, so that caches sharing a format
  /// share its kernels. `module` is a builtin module, or a GPU module for
  /// the kernels device code calls.
  FormatCodegen(Operation *module, const StorageTargetInfo &target)
      : module(module), target(target) {}

  /// The kernels of `format` for rows of `headDim` elements and the
  /// dequantize multiply in `dequantizer`, emitted at the end of the module
  /// on first use; the bounds kernel only when `withBounds`.
  const FormatKernels &get(const ::kvprec::analysis::StorageFormat &format,
                           int64_t headDim,
                           ::kvprec::analysis::StorageKind dequantizer,
                           bool withBounds = false);

  /// A symbol-safe name of a format, e.g. "int4_asym_cg32_f16".
  static std::string
  getMangledName(const ::kvprec::analysis::StorageFormat &format);

private:
  Operation *module;
  const StorageTargetInfo &target;
  std::map<std::string, FormatKernels> kernels;
};

} // namespace mlir::kvprec

#endif // KVPREC_LIB_CONVERSION_MATERIALIZESTORAGE_FORMATCODEGEN_H
