//===- CacheEmitter.h - the generator of one planned cache's code -*- C++
//-*-===//
//
// The emitter behind emitCacheFunctions (CacheCodegen.h). Its tables,
// lookups and per-format dispatchers are shared by the CPU entry points
// (CacheCodegen.cpp) and the NVPTX kernels (GPUCacheCodegen.cpp): a GPU
// module holds a second emitter's tables and dispatchers, so the kernels
// there read the arena exactly as the CPU code does.
//
//===----------------------------------------------------------------------===//

#ifndef KVPREC_LIB_CONVERSION_MATERIALIZESTORAGE_CACHEEMITTER_H
#define KVPREC_LIB_CONVERSION_MATERIALIZESTORAGE_CACHEEMITTER_H

#include "CacheCodegen.h"
#include "FormatCodegen.h"

#include "kvprec/Certify/Plan.h"
#include "kvprec/Conversion/MaterializeStorage/TargetInfo.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/IR/ImplicitLocOpBuilder.h"

#include <string>

namespace mlir::kvprec::detail {
namespace an = ::kvprec::analysis;
namespace lay = ::kvprec::layout;
namespace certify = ::kvprec::certify;

/// Columns of the stream table, one row per item.
enum ItemColumn : int64_t {
  kSinkFormat,
  kSinkCode,
  kSinkScale,
  kSinkZero,
  kRingFormat,
  kRingCode,
  kRingScale,
  kRingZero,
  kStaging,
  kFirstRun,
  kRunCount,
  kItemColumns
};
/// Columns of the body-run table.
enum RunColumn : int64_t {
  kRunFormat,
  kRunFirstPosition,
  kRunRows,
  kRunCode,
  kRunScale,
  kRunZero,
  kRunInherited,
  kRunColumns
};

/// Where a range of rows of one stream is: format index, region offsets
/// and first row.
struct Place {
  Value format, code, scale, zero, row;
  /// Body blocks of a plan with a window: the byte offset of the block's
  /// inherited bound (CacheLayout.h); null elsewhere.
  Value inherited = {};
};

class GPUEmitter;

class Emitter {
  friend class GPUEmitter;

public:
  /// `module` is the builtin module, or a GPU module for device code.
  Emitter(Operation *module, CacheType cache, const lay::ArenaLayout &layout,
          FormatCodegen &formats, an::StorageKind dequantizer,
          const std::string &prefix, const StorageTargetInfo &target,
          bool certified)
      : module(module), cache(cache), layout(layout), target(target),
        threads(target.getPositionSplits()), plan(layout.getPlan()),
        g(plan.geometry), prefix(prefix), context(module->getContext()),
        formats(formats), dequantizer(dequantizer), certified(certified) {}

  LogicalResult run(CacheFunctions &result);

  /// The functions device code shares with the CPU, emitted into a GPU
  /// module: the tables, the per-format dispatchers, P_init, and
  /// P_append_impl and P_load_impl (each for one GPU thread). Nothing is
  /// public there.
  struct DeviceFunctions {
    func::FuncOp init, appendCheck, appendStore, loadImpl;
  };
  LogicalResult runDevice(DeviceFunctions &result);

private:
  // Types.
  Type indexType() { return IndexType::get(context); }
  Type i1() { return IntegerType::get(context, 1); }
  Type i32() { return IntegerType::get(context, 32); }
  Type i64() { return IntegerType::get(context, 64); }
  Type f32() { return Float32Type::get(context); }
  MemRefType arenaType() {
    return MemRefType::get({ShapedType::kDynamic},
                           IntegerType::get(context, 8));
  }
  MemRefType floats() { return MemRefType::get({ShapedType::kDynamic}, f32()); }
  MemRefType tokens() {
    return MemRefType::get(
        {ShapedType::kDynamic, ShapedType::kDynamic, ShapedType::kDynamic},
        cache.getElementType());
  }
  MemRefType heads() {
    return MemRefType::get({ShapedType::kDynamic, ShapedType::kDynamic},
                           cache.getElementType());
  }

  func::FuncOp createFunction(StringRef name, TypeRange inputs,
                              TypeRange results, bool isPublic) {
    OpBuilder builder = OpBuilder::atBlockEnd(&module->getRegion(0).front());
    auto fn = func::FuncOp::create(builder, module->getLoc(), name,
                                   FunctionType::get(context, inputs, results));
    if (isPublic && !device) {
      fn->setAttr("llvm.emit_c_interface", UnitAttr::get(context));
    } else {
      fn.setPrivate();
      fn->setAttr("llvm.linkage",
                  LLVM::LinkageAttr::get(context, LLVM::Linkage::Internal));
    }
    fn.addEntryBlock();
    return fn;
  }

  static Value idx(ImplicitLocOpBuilder &b, int64_t v) {
    return arith::ConstantIndexOp::create(b, v);
  }
  static Value status(ImplicitLocOpBuilder &b, CacheStatus s) {
    return arith::ConstantIntOp::create(b, int64_t(s), 32);
  }
  static Value cmp(ImplicitLocOpBuilder &b, arith::CmpIPredicate p, Value x,
                   Value y) {
    return arith::CmpIOp::create(b, p, x, y);
  }
  static Value add(ImplicitLocOpBuilder &b, Value x, Value y) {
    return arith::AddIOp::create(b, x, y);
  }
  static Value sub(ImplicitLocOpBuilder &b, Value x, Value y) {
    return arith::SubIOp::create(b, x, y);
  }
  static Value mul(ImplicitLocOpBuilder &b, Value x, Value y) {
    return arith::MulIOp::create(b, x, y);
  }

  /// scf.if `cond` -> i32 { then() } else { yield otherwise }.
  static Value guard(ImplicitLocOpBuilder &b, Value cond, Value otherwise,
                     function_ref<Value(ImplicitLocOpBuilder &)> then) {
    // The result types follow from the yields.
    auto ifOp = scf::IfOp::create(
        b, cond,
        [&](OpBuilder &nested, Location loc) {
          ImplicitLocOpBuilder tb(loc, nested);
          scf::YieldOp::create(tb, ValueRange{then(tb)});
        },
        [&](OpBuilder &nested, Location loc) {
          ImplicitLocOpBuilder eb(loc, nested);
          scf::YieldOp::create(eb, ValueRange{otherwise});
        });
    return ifOp.getResult(0);
  }

  /// The first non-zero of two statuses.
  static Value firstFailure(ImplicitLocOpBuilder &b, Value a, Value c) {
    Value aFailed = cmp(b, arith::CmpIPredicate::ne, a,
                        arith::ConstantIntOp::create(b, 0, 32));
    return arith::SelectOp::create(b, aFailed, a, c);
  }

  void emitTables();
  Value table(ImplicitLocOpBuilder &b, StringRef name, Value rowIndex,
              int64_t column, int64_t columns);
  Value itemField(ImplicitLocOpBuilder &b, Value item, ItemColumn column) {
    return table(b, itemsName, item, column, kItemColumns);
  }
  Value runField(ImplicitLocOpBuilder &b, Value run, RunColumn column) {
    return table(b, runsName, run, column, kRunColumns);
  }

  /// Where the tile kernels read rows: an f32 tile (values, no firstRow),
  /// or the codes of an unscaled f32, f16 or bf16 run read in place (the
  /// run's view and its first row), which need no decode pass.
  struct RowSource {
    an::StorageKind kind = an::StorageKind::F32;
    Value values, firstRow;
    /// Bytes of one element of `values`: 4 for f32, 2 for f16 and bf16.
    int64_t elementBytes() const {
      return kind == an::StorageKind::F32 ? 4 : 2;
    }
  };
  /// The source of a kernel whose row arguments are `args`: (tile) for the
  /// tile, (arena, code, row0) for a run of `kind`.
  RowSource openRowSource(ImplicitLocOpBuilder &b, an::StorageKind kind,
                          ValueRange args);
  /// `width` f32 lanes of row `r` of the source from lane `lane`.
  Value loadPiece(ImplicitLocOpBuilder &b, const RowSource &source, Value r,
                  Value lane, int64_t width);
  /// For a run read in place: prefetches (into L2) the 64-byte lines of
  /// lanes [lane, lane + width) of the row prefetch-distance bytes ahead of
  /// row `r`, clamped to the run's view, as the row kernels prefetch ahead
  /// of what they decode. Nothing for a tile.
  void prefetchPiece(ImplicitLocOpBuilder &b, const RowSource &source, Value r,
                     Value lane, int64_t width);
  /// The unscaled formats among the plan's whose runs the tile kernels read
  /// in place, with their logits and accumulate kernels.
  struct DirectKernels {
    an::StorageKind kind;
    func::FuncOp logits, accumulate;
  };
  SmallVector<DirectKernels> directKernels;
  /// The kinds of directKernels, in the order of the `direct` table.
  SmallVector<an::StorageKind> directKinds;

  /// Calls block(b, h0, H) on consecutive blocks of the heads [0, heads):
  /// blocks of `largest` heads (a power of two) while that many remain,
  /// then one block of each smaller power of two the rest needs.
  void forHeadBlocks(
      ImplicitLocOpBuilder &b, Value heads, int64_t largest,
      function_ref<void(ImplicitLocOpBuilder &, Value, int64_t)> block);

  /// Dispatchers: one scf.index_switch over the plan's formats each.
  void emitDispatchers();
  Value callStore(ImplicitLocOpBuilder &b, Value arena, const Place &place,
                  Value src, Value srcOff, Value rows, bool dry);
  void callLoad(ImplicitLocOpBuilder &b, Value arena, const Place &place,
                Value rows, Value dst, Value dstOff);
  /// The f32 parts of attention after the formats' logits kernels:
  /// softmax over a tile's logits, accumulate(tile, rows, p, heads, acc):
  /// acc_h += sum_r p[h * rows + r] tile_r over a dequantized tile of V, and
  /// (certified) abs_logits over |K^| and the keys' bounds.
  void emitTileKernels();
  /// The attention of one (KV head, split): its tiles, left as partial
  /// maxima, sums and accumulators.
  func::FuncOp emitAttendPart(bool withCertificate);
  /// The f32 buffers of one (KV head, split) of attention, in floats, in
  /// the order P_attend_part uses them.
  SmallVector<Value> attendPartBufferFloats(ImplicitLocOpBuilder &b,
                                            Value group, bool withCertificate);
  /// The bytes a buffer of `floats` takes in a region of several (16-byte
  /// aligned).
  Value scratchBytes(ImplicitLocOpBuilder &b, Value floats);
  /// P_attend_combine[_certified]: query head `i`'s output (and bound)
  /// from the partials of its KV head's tiles, written to row `outRow`.
  func::FuncOp emitAttendCombine(bool withCertificate);
  /// The per-tile halves of the run-time certificate (P_attend_certified).
  void emitCertificateKernels();
  /// load into `dst`, and the rows' error bounds into `bounds`.
  void callLoadAndBounds(ImplicitLocOpBuilder &b, Value arena,
                         const Place &place, Value rows, Value dst,
                         Value bounds);
  /// Bounds kernels: for the certificate, and for the inherited bounds
  /// that demotion writes.
  bool needsBounds() const { return certified || g.window > 0; }
  /// The f32 at byte offset `offset` of the arena, as a memref<1xf32>.
  Value f32At(ImplicitLocOpBuilder &b, Value arena, Value offset) {
    return memref::ViewOp::create(b, MemRefType::get({1}, f32()), arena, offset,
                                  ValueRange{});
  }
  /// rows_max(buffer, rows) -> f32: the largest of rows x head_dim
  /// non-negative floats; tile_add(buffer, rows, x): adds x to each.
  func::FuncOp rowsMax, tileAdd;
  void emitRowHelpers();
  Value groupSizeOf(ImplicitLocOpBuilder &b, Value format);

  /// The body run of `item` holding `position` (a body position).
  Place locateBody(ImplicitLocOpBuilder &b, Value item, Value position);
  /// Where `position` of `item` is when the layer holds `length` positions.
  Place locate(ImplicitLocOpBuilder &b, Value item, Value position,
               Value length);
  Place sinkPlace(ImplicitLocOpBuilder &b, Value item, Value row);
  Place ringPlace(ImplicitLocOpBuilder &b, Value item, Value position);

  /// Arena views and checks shared by the entry points.
  Value fillCounts(ImplicitLocOpBuilder &b, Value arena) {
    return memref::ViewOp::create(
        b, MemRefType::get({ShapedType::kDynamic}, i64()), arena, idx(b, 0),
        ValueRange{idx(b, g.layers)});
  }
  Value arenaTooSmall(ImplicitLocOpBuilder &b, Value arena) {
    Value size = memref::DimOp::create(b, arena, 0);
    return cmp(b, arith::CmpIPredicate::ult, size,
               idx(b, layout.getTotalBytes()));
  }
  /// Copies row (t, h) of a [tokens, heads, D] memref to floats at `at`.
  void copyIn(ImplicitLocOpBuilder &b, Value from, Value t, Value h, Value to,
              Value at);
  /// `code` where `failed` holds, Ok elsewhere.
  static Value failIf(ImplicitLocOpBuilder &b, Value failed, CacheStatus code) {
    return arith::SelectOp::create(b, failed, status(b, code),
                                   status(b, CacheStatus::Ok));
  }
  /// Whether keys and values ([tokens, heads, D]) differ in shape or do
  /// not match the cache's heads and head_dim.
  Value tokenShapeMismatch(ImplicitLocOpBuilder &b, Value keys, Value values);
  /// The checks every entry point makes first (the layer, the arena's size,
  /// `badShape`); when they pass, `body` runs with the layer's fill count
  /// and gives the status, otherwise the first failure is returned.
  /// `readFill(b, arena, layer)` gives the layer's fill count (i64) where
  /// the arena is not host memory; by default a load from the arena.
  Value guardEntry(
      ImplicitLocOpBuilder &b, Value arena, Value layer, Value badShape,
      function_ref<Value(ImplicitLocOpBuilder &, Value fill)> body,
      function_ref<Value(ImplicitLocOpBuilder &, Value, Value)> readFill = {});
  /// Whether attend's query ([q_heads, head_dim]) and output disagree with
  /// the cache or each other (q_heads a positive multiple of the KV heads).
  Value attendShapeMismatch(ImplicitLocOpBuilder &b, Value query, Value output);
  /// Attention's tiles at `length` positions: the sink (its rows, and
  /// whether it holds any), then one tile per block of the positions past
  /// it (`aged`), the first `bodyRows` of them in the body runs, the rest
  /// in the window ring.
  struct AttendTiles {
    Value sinkRows, hasSink, aged, tiles, bodyRows;
  };
  AttendTiles attendTiles(ImplicitLocOpBuilder &b, Value length);
  /// The stream index ((layer * H) + head) * 2 + kv.
  Value itemOf(ImplicitLocOpBuilder &b, Value layer, Value head, int kv) {
    return add(b,
               mul(b, add(b, mul(b, layer, idx(b, g.heads)), head), idx(b, 2)),
               idx(b, kv));
  }

  void emitArenaBytes(CacheFunctions &result);
  void emitInit(CacheFunctions &result);
  /// The append as one function, or in the two halves a GPU block runs
  /// with a thread per stream (a barrier between them):
  ///  * Whole: P_append_impl(<P_append's arguments>, scratch, boundScratch)
  ///    -> i32, the append with its scratch rows (getAppendScratchFloats()
  ///    floats each; boundScratch only read with a window) from the caller;
  ///  * Check: P_append_check(<P_append's arguments>, scratch, first, step,
  ///    ranks, slot) -> i32, the entry checks and the dry run of streams
  ///    first, first + step, ...; a dry-run failure writes its rank
  ///    (token * 2 * heads + stream + 1) to ranks[slot], so that the first
  ///    failure in the CPU's order can be chosen;
  ///  * Store: P_append_store(<P_append's arguments>, scratch,
  ///    boundScratch, first, step, ranks, slot) -> i32, the demotions and
  ///    stores of those streams after a successful check, without the fill
  ///    count (the caller writes it once every stream is stored).
  enum class AppendKind { Whole, Check, Store };
  func::FuncOp emitAppendImpl(AppendKind kind = AppendKind::Whole);
  /// Runs `body(b, item, head, tokens, status) -> status` for the K and V
  /// streams of every KV head of `layer` in item order (or streams first,
  /// first + step, ... of the 2 x heads), a loop at run time (`tokens` is
  /// `keys` or `values`), from status `st`.
  Value forItems(
      ImplicitLocOpBuilder &b, Value layer, Value keys, Value values, Value st,
      function_ref<Value(ImplicitLocOpBuilder &, Value, Value, Value, Value)>
          body,
      Value first = Value(), Value step = Value());
  /// P_append: allocates the scratch and calls `impl`.
  void emitAppend(CacheFunctions &result, func::FuncOp impl);
  int64_t getAppendScratchFloats() const {
    return std::max<int64_t>(g.block, 1) * g.headDim;
  }
  func::FuncOp emitAttend(bool withCertificate);
  /// The partial results of attention's tiles.
  struct CertificatePartials {
    Value partialMax, partialSum, cert, vec, range;
  };
  /// The run-time certificate of query head `i` of the KV head whose tiles'
  /// partials `parts` hold, M = `total` its largest logit and `normalized`
  /// its f32 output: over every channel, or (`width` > 0) over the `width`
  /// channels from `channel`, `normalized` holding just those (a GPU
  /// thread's).
  Value combineCertificate(ImplicitLocOpBuilder &b,
                           const CertificatePartials &parts, Value i,
                           Value group, Value tiles, Value total,
                           Value normalized, Value length, Value channel = {},
                           int64_t width = 0);
  /// P_load_impl(<P_load's arguments>, row) -> i32, `row` a head_dim f32
  /// scratch row from the caller.
  func::FuncOp emitLoadImpl();
  void emitLoad(CacheFunctions &result, func::FuncOp impl);

  Operation *module;
  CacheType cache;
  const lay::ArenaLayout &layout;
  const StorageTargetInfo &target;
  /// Parts each KV head's positions are split into (scf.parallel).
  int64_t threads;
  const certify::Plan &plan;
  const certify::Geometry &g;
  std::string prefix;
  MLIRContext *context;
  FormatCodegen &formats;
  an::StorageKind dequantizer;
  /// Whether to emit P_attend_certified (the run-time certificate).
  bool certified;
  /// Emitting into a GPU module (runDevice): no public C interfaces.
  bool device = false;
  /// The most rows one part of the certified combine's partials sums (its
  /// rounding margin): a tile's, or where device kernels write a split of
  /// several tiles per part, theirs (GPUEmitter sets it).
  int64_t certificatePartRows = 0;
  std::string itemsName, runsName, groupsName, directName;
  int64_t numRuns = 0;
  func::FuncOp storeAny, loadAny, loadKeysAny, logitsAny, accumulateAny,
      boundsAny, tileLogits, tileAbsLogits, tileAccumulate, tileSoftmax,
      tileCertifyKeys, tileCertifyValues, attendPart, attendPartCertified,
      attendCombine, attendCombineCertified;
};

} // namespace mlir::kvprec::detail

#endif // KVPREC_LIB_CONVERSION_MATERIALIZESTORAGE_CACHEEMITTER_H
