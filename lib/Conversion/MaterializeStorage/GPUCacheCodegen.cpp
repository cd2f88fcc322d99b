//===- GPUCacheCodegen.cpp - NVPTX kernels and host code of one cache -----===//
//
// target=nvptx: the arena is device memory. A gpu.module `P_device` holds
// a device-side copy of the CPU emitter's tables, dispatchers and format
// kernels, and these kernels:
//
//  * P_init_kernel, P_append_kernel, P_load_kernel: one GPU thread runs the
//    CPU's P_init / P_append_impl / P_load_impl (the same IR, so appends
//    store the same bits as the CPU and the reference quantizer);
//  * P_attend_split: split-K decode attention. Block (c, s, h) takes the
//    query heads [c*GC, (c+1)*GC) of KV head h over split s (a run of
//    tiles: the sink, then blocks of the plan). Its 128 threads read each
//    row of K and V once for those heads: a row's codes are spread over L
//    lanes, each loading one aligned piece of up to 16 bytes (128 bits),
//    decoding it in registers with the CPU kernels' element arithmetic,
//    the partial dot products reduced by warp shuffles. The logits of the
//    split go to shared memory; the split's maximum, the weights
//    exp(s - max) and their sum follow; V is accumulated in registers,
//    reduced over the rows in flight by shuffles and over the warps in
//    shared memory in a fixed order. Each split leaves (max, sum, acc)
//    per query head.
//  * P_attend_combine: per query head, M = max of the splits' maxima, the
//    sums and accumulators rescaled once by e^(m - M), one division: the
//    contract's arithmetic (docs/analysis.md), with splits in place of
//    blocks; a split is at most GC rows per thread of one tile's rows, so
//    each sum's depth stays within the contract's min(B, T) + T/B.
////  * with the run-time certificate, P_attend_split_certified (the split
//    kernel with one query head per block, also forming the certificate's
//    terms of its rows in the same pass) and P_attend_combine_certified (a
//    thread per channel: the CPU's combine and combineCertificate), the
//    certificate of docs/lowering.md with splits in place of tiles.
//
// Tiles are visited in runs of one format (an scf.while per format inside
// an scf.index_switch), so the registers of a format's lane layout live
// across its run and are flushed once per run.
//
//===----------------------------------------------------------------------===//

#include "CacheCodegen.h"
#include "CacheEmitter.h"
#include "FormatCodegen.h"

#include "kvprec/Analysis/SoftFloat.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/GPU/IR/GPUDialect.h"
#include "mlir/Dialect/LLVMIR/NVVMDialect.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/Dialect/Vector/IR/VectorOps.h"
#include "mlir/IR/ImplicitLocOpBuilder.h"

#include "llvm/Support/MathExtras.h"

#include <limits>

using namespace mlir;
using namespace mlir::kvprec;
using namespace mlir::kvprec::detail;

namespace {
/// How the codes of one row of a format are spread over a warp's lanes.
struct LaneShape {
  int64_t bits = 0;
  /// Bytes of one row's codes; elements per byte (planar sub-byte codes:
  /// field f of byte k is element f * rowBytes + k).
  int64_t rowBytes = 0, fields = 1;
  /// Bytes one lane loads at a time (a power of two, at most 16, dividing
  /// rowBytes), pieces of a row, lanes per row (a power of two), pieces a
  /// lane loads per row.
  int64_t width = 0, pieces = 0, lanes = 0, chunks = 0;
  /// Elements per field of one piece, and per lane in all.
  int64_t perField = 0, elements = 0;

  int64_t slots(int64_t threads) const { return threads / lanes; }
};

/// `maxElements` > 0 narrows the pieces until a lane holds at most that
/// many elements where it can (the certified kernel's registers: it keeps
/// nine rows of them).
LaneShape getLaneShape(const an::StorageFormat &format, int64_t headDim,
                       int64_t maxElements = 0) {
  LaneShape s;
  s.bits = an::getBitWidth(format.kind);
  s.fields = s.bits >= 8 ? 1 : 8 / s.bits;
  s.rowBytes = s.bits >= 8 ? headDim * (s.bits / 8) : headDim / s.fields;
  s.width = 16;
  while (s.rowBytes % s.width)
    s.width /= 2;
  for (;;) {
    s.pieces = s.rowBytes / s.width;
    if (s.pieces <= 32) {
      s.chunks = 1;
      s.lanes = int64_t(llvm::PowerOf2Ceil(s.pieces));
    } else {
      s.lanes = 32;
      s.chunks = llvm::divideCeil(s.pieces, 32);
    }
    s.perField = s.bits >= 8 ? s.width * 8 / s.bits : s.width;
    s.elements = s.chunks * s.fields * s.perField;
    if (maxElements <= 0 || s.elements <= maxElements || s.width == 1 ||
        s.pieces * 2 > 32)
      return s;
    s.width /= 2;
  }
}
} // namespace

namespace mlir::kvprec::detail {

class GPUEmitter {
public:
  GPUEmitter(ModuleOp module, CacheType cache, const lay::ArenaLayout &layout,
             an::StorageKind dequantizer, const std::string &prefix,
             const NVPTXStorageTargetInfo &target, Operation *user,
             bool certified)
      : module(module), cache(cache), layout(layout), plan(layout.getPlan()),
        g(plan.geometry), dequantizer(dequantizer), prefix(prefix),
        target(target), user(user), context(module.getContext()),
        certified(certified) {}

  FailureOr<CacheFunctions> run();

private:
  using B = ImplicitLocOpBuilder;
  Type index() { return IndexType::get(context); }
  Type f32() { return Float32Type::get(context); }
  Type i32() { return IntegerType::get(context, 32); }
  Type i64() { return IntegerType::get(context, 64); }
  MemRefType floats() { return MemRefType::get({ShapedType::kDynamic}, f32()); }
  MemRefType shared(int64_t n) {
    return MemRefType::get(
        {n}, f32(), AffineMap(),
        gpu::AddressSpaceAttr::get(context, gpu::AddressSpace::Workgroup));
  }
  static Value idx(B &b, int64_t v) {
    return arith::ConstantIndexOp::create(b, v);
  }
  static Value fconst(B &b, float v) {
    return arith::ConstantFloatOp::create(b, b.getF32Type(), APFloat(v));
  }
  static Value add(B &b, Value x, Value y) {
    return arith::AddIOp::create(b, x, y);
  }
  static Value sub(B &b, Value x, Value y) {
    return arith::SubIOp::create(b, x, y);
  }
  static Value mul(B &b, Value x, Value y) {
    return arith::MulIOp::create(b, x, y);
  }
  static Value mul(B &b, Value x, int64_t y) { return mul(b, x, idx(b, y)); }
  static Value cmp(B &b, arith::CmpIPredicate p, Value x, Value y) {
    return arith::CmpIOp::create(b, p, x, y);
  }
  static Value lt(B &b, Value x, Value y) {
    return cmp(b, arith::CmpIPredicate::ult, x, y);
  }
  static Value andI(B &b, Value x, Value y) {
    return arith::AndIOp::create(b, x, y);
  }
  /// for (i = from; i < to; i += step) body(i).
  static void loop(B &b, Value from, Value to, Value step,
                   function_ref<void(B &, Value)> body) {
    scf::ForOp::create(b, from, to, step, ValueRange{},
                       [&](OpBuilder &n, Location l, Value i, ValueRange) {
                         B lb(l, n);
                         body(lb, i);
                         scf::YieldOp::create(lb);
                       });
  }
  static void ifThen(B &b, Value cond, function_ref<void(B &)> then) {
    scf::IfOp::create(b, cond, [&](OpBuilder &n, Location l) {
      B tb(l, n);
      then(tb);
      scf::YieldOp::create(tb);
    });
  }
  /// scf.if cond -> (types) { then } else { zeros of the types }.
  static SmallVector<Value>
  ifElseZero(B &b, Value cond, TypeRange types,
             function_ref<SmallVector<Value>(B &)> then) {
    auto op = scf::IfOp::create(
        b, cond,
        [&](OpBuilder &n, Location l) {
          B tb(l, n);
          scf::YieldOp::create(tb, then(tb));
        },
        [&](OpBuilder &n, Location l) {
          B eb(l, n);
          SmallVector<Value> zeros;
          for (Type type : types)
            zeros.push_back(arith::ConstantOp::create(
                eb, cast<TypedAttr>(eb.getZeroAttr(type))));
          scf::YieldOp::create(eb, zeros);
        });
    return SmallVector<Value>(op.getResults());
  }
  Value shuffleXor(B &b, Value v, int64_t offset) {
    auto shuffle = gpu::ShuffleOp::create(b, v, int32_t(offset), int32_t(32),
                                          gpu::ShuffleMode::XOR);
    return shuffle.getShuffleResult();
  }
  Value scalarExp(B &b, Value x) {
    VectorType one = VectorType::get({1}, f32());
    Value e = emitExp(b, vector::BroadcastOp::create(b, one, x));
    return vector::ExtractOp::create(b, e, ArrayRef<int64_t>{0});
  }

  /// A kernel `name` of `inputs` with `workgroup` buffers, at the end of the
  /// device module.
  gpu::GPUFuncOp createKernel(StringRef name, TypeRange inputs,
                              TypeRange workgroup = {}) {
    OpBuilder top = OpBuilder::atBlockEnd(deviceModule.getBody());
    auto kernel = gpu::GPUFuncOp::create(top, module.getLoc(), name,
                                         FunctionType::get(context, inputs, {}),
                                         workgroup);
    kernel->setAttr(gpu::GPUDialect::getKernelFuncAttrName(),
                    UnitAttr::get(context));
    return kernel;
  }

  LogicalResult checkShapes();
  void emitAttendKernels();
  /// P_attend_split, or with the certificate P_attend_split_certified.
  gpu::GPUFuncOp emitSplitKernel(bool withCertificate);
  void emitSimpleKernels(const Emitter::DeviceFunctions &device);
  void emitHostFunctions(CacheFunctions &result);

  /// The place and rows of tile `t` of stream `item` (the CPU attention's
  /// tiles: the sink when it holds rows, then one per block).
  /// With `arena`, also the tile's inherited bound (a re-quantized body
  /// block's; 0 elsewhere).
  struct Tile {
    Place place;
    Value rows;
    Value inherited = {};
  };
  Tile tileAt(B &b, Value item, Value t, Value hasSink, Value sinkRows,
              Value aged, Value bodyRows, Value arena = {});

  /// Element index (in the row) of (chunk, field, 0) of `lane`.
  Value elementBase(B &b, const LaneShape &s, Value lane, int64_t chunk,
                    int64_t field);
  /// Whether `lane` holds piece `chunk` (pieces past the row hold none).
  Value pieceActive(B &b, const LaneShape &s, Value lane, int64_t chunk);
  /// The lane's elements of row `r` of a run (f32, shape.elements lanes in
  /// (chunk, field, k) order): dequantized, or for keys whose scale folds
  /// the code values (the row's scale in `rowScale`).
  /// With `delta`, also each element's error bound in the same order
  /// (emitElementBounds; dequantized values, so not with a folded scale).
  Value decodeRow(B &b, const an::StorageFormat &format, const LaneShape &s,
                  const Place &place, Value arena, Value r, Value lane,
                  bool forKeys, Value *rowScale, Value *delta = nullptr);
  /// The lane's query values (or any shared f32 row `base`) in the same
  /// order.
  Value loadLaneRow(B &b, const LaneShape &s, Value sharedBuffer, Value base,
                    Value lane);

  ModuleOp module;
  CacheType cache;
  const lay::ArenaLayout &layout;
  const certify::Plan &plan;
  const certify::Geometry &g;
  an::StorageKind dequantizer;
  std::string prefix;
  const NVPTXStorageTargetInfo &target;
  Operation *user;
  MLIRContext *context;

  gpu::GPUModuleOp deviceModule;
  std::unique_ptr<FormatCodegen> deviceFormats;
  std::unique_ptr<Emitter> deviceEmitter, hostEmitter;
  gpu::GPUFuncOp initKernel, appendKernel, loadKernel, splitKernel,
      combineKernel, certifiedSplitKernel, certifiedCombineKernel;
  /// Whether to emit P_attend_certified.
  bool certified;
  /// P_append's threads: one per stream, at most 256.
  int64_t appendThreads() const { return std::min<int64_t>(2 * g.heads, 256); }
  /// The certified attention's partials of KV head `h` over `splits`
  /// splits, carved from the byte buffer `partials`: maxima, sums,
  /// accumulators, the certificate's scalars, vectors and ranges (the
  /// layout of the CPU's certified combine, a split in place of a tile).
  SmallVector<Value> certifiedPartials(B &b, Value partials, Value h,
                                       Value splits, Value group);
  /// The bytes of one KV head's partials.
  Value certifiedPartialBytes(B &b, Value splits, Value group);
  SmallVector<Value> certifiedPartialFloats(B &b, Value splits, Value group);
  void emitCertifiedCombineKernel();
  /// Query heads per block, tiles per split, rows per tile (at most).
  int64_t headsPerBlock = 1, tilesPerSplit = 1, tileRows = 1;
  /// Tiles per split of P_attend_split_certified.
  int64_t certifiedTilesPerSplit = 0;
  /// Elements a lane of P_attend_split_certified holds of a row, at most
  /// (it keeps nine rows of them: values, bounds, the accumulator and the
  /// certificate's six).
  static constexpr int64_t kCertifiedElements = 16;
  /// Static shared memory a block may take.
  static constexpr int64_t kSharedBytes = 48 * 1024;
  static constexpr int64_t kWarps = 4;
};

} // namespace mlir::kvprec::detail

LogicalResult GPUEmitter::checkShapes() {
  const int64_t d = g.headDim;
  // The attention grid's z (and the certified kernel's y) is the KV head:
  // CUDA launches at most 65535 blocks in those dimensions.
  if (g.heads > 65535)
    return user->emitError()
           << "the NVPTX lowering launches a block per KV head in a grid "
              "dimension of at most 65535, not "
           << g.heads;
  int64_t maxElements = 1, minSlots = target.getBlockThreads();
  int64_t certifiedMinSlots = minSlots;
  for (const an::StorageFormat &format : plan.formats) {
    LaneShape s = getLaneShape(format, d);
    if (s.bits < 8 && d % s.fields != 0)
      return user->emitError()
             << "the NVPTX lowering needs head_dim " << d
             << " to be a multiple of " << s.fields << " for "
             << an::getStorageKindName(format.kind) << " codes";
    SmallVector<LaneShape, 2> shapes{s};
    if (certified)
      shapes.push_back(getLaneShape(format, d, kCertifiedElements));
    for (const LaneShape &shape : shapes)
      if (an::isScaled(format) &&
          format.granularity == an::Granularity::TokenGroup &&
          format.groupSize % shape.perField != 0 &&
          shape.perField % format.groupSize != 0)
        return user->emitError()
               << "the NVPTX lowering cannot split token groups of "
               << format.groupSize << " over lanes of " << shape.perField
               << " elements (" << an::getStorageKindName(format.kind)
               << ", head_dim " << d << ")";
    maxElements = std::max(maxElements, s.elements);
    minSlots = std::min(minSlots, s.slots(target.getBlockThreads()));
    certifiedMinSlots = std::min(certifiedMinSlots,
                                 shapes.back().slots(target.getBlockThreads()));
  }
  if (maxElements > target.getAccumulatorRegisters())
    return user->emitError()
           << "the NVPTX lowering holds " << maxElements
           << " elements of a row per lane at head_dim " << d
           << ", more than its " << target.getAccumulatorRegisters()
           << " registers";
  // Query heads per block: the registers of the widest lane layout, and
  // the shared memory of the query, staging and accumulator rows.
  headsPerBlock = int64_t(llvm::bit_floor(
      uint64_t(target.getAccumulatorRegisters() / maxElements)));
  headsPerBlock = std::min<int64_t>(headsPerBlock, 8);
  // (head_dim is at most kMaxLoweredHeadDim = 1024 here.)
  while (headsPerBlock > 1 && headsPerBlock * d > 1024)
    headsPerBlock /= 2;
  tileRows = std::max<int64_t>({g.block, g.sink, 1});
  int64_t logitFloats = target.getLogitBytes() / 4;
  if (tileRows * headsPerBlock > logitFloats)
    return user->emitError()
           << "the NVPTX lowering keeps a tile's logits in shared memory: "
           << tileRows << " rows x " << headsPerBlock
           << " query heads exceed its " << logitFloats << " floats";
  // A split is at most `minSlots` tiles, so no thread sums more rows of a
  // split than one tile holds (the contract's depth per block).
  tilesPerSplit = std::max<int64_t>(
      1, std::min(logitFloats / (tileRows * headsPerBlock), minSlots));
  if (certified) {
    // P_attend_split_certified (one query head): the query, staging,
    // accumulator, W U G and range rows, the reductions, 16 bytes of
    // alignment for each of its 11 buffers, then four arrays of row slots
    // in what is left.
    int64_t fixedFloats =
        d * (1 + kWarps + 1 + 3 + 3) + kWarps + 2 + kWarps * 8 + 4 * 11;
    int64_t slotFloats =
        std::min(logitFloats, (kSharedBytes / 4 - fixedFloats) / 4);
    if (slotFloats < tileRows)
      return user->emitError()
             << "the NVPTX run-time certificate keeps a tile's rows in "
                "shared memory: head_dim "
             << d << " leaves room for " << std::max<int64_t>(slotFloats, 0)
             << " rows of " << kSharedBytes / 1024 << " KiB, not the "
             << tileRows << " of a tile (block and sink)";
    certifiedTilesPerSplit = std::max<int64_t>(
        1, std::min(slotFloats / tileRows, certifiedMinSlots));
  }
  // The splits of a full cache are a grid's y dimension (at most 65535).
  int64_t tiles =
      (g.sink > 0 ? 1 : 0) + llvm::divideCeil(g.capacity - g.sink, g.block);
  for (int64_t perSplit : {tilesPerSplit, certifiedTilesPerSplit})
    if (perSplit > 0 && llvm::divideCeil(tiles, perSplit) > 65535)
      return user->emitError()
             << "the NVPTX lowering launches a block per split of " << perSplit
             << " tiles in a grid dimension of at most 65535: " << tiles
             << " tiles (capacity " << g.capacity << ", block " << g.block
             << ") need " << llvm::divideCeil(tiles, perSplit);
  return success();
}

GPUEmitter::Tile GPUEmitter::tileAt(B &b, Value item, Value t, Value hasSink,
                                    Value sinkRows, Value aged, Value bodyRows,
                                    Value arena) {
  Emitter &e = *deviceEmitter;
  Value zero = idx(b, 0);
  Value isSink = andI(b, cmp(b, arith::CmpIPredicate::eq, t, zero),
                      cmp(b, arith::CmpIPredicate::ne, hasSink, zero));
  auto pick = [&](B &pb, const Place &p, Value rows) {
    SmallVector<Value> fields{p.format, p.code, p.scale, p.zero, p.row, rows};
    if (arena)
      fields.push_back(p.inherited ? Value(memref::LoadOp::create(
                                         pb, e.f32At(pb, arena, p.inherited),
                                         ValueRange{idx(pb, 0)}))
                                   : fconst(pb, 0.0f));
    scf::YieldOp::create(pb, fields);
  };
  auto op = scf::IfOp::create(
      b, isSink,
      [&](OpBuilder &n, Location l) {
        B sb(l, n);
        pick(sb, e.sinkPlace(sb, item, idx(sb, 0)), sinkRows);
      },
      [&](OpBuilder &n, Location l) {
        B bb(l, n);
        Value offset = mul(bb, sub(bb, t, hasSink), g.block);
        Value begin = add(bb, idx(bb, g.sink), offset);
        Value rows =
            arith::MinUIOp::create(bb, idx(bb, g.block), sub(bb, aged, offset));
        Value inBody = lt(bb, offset, bodyRows);
        auto inner = scf::IfOp::create(
            bb, inBody,
            [&](OpBuilder &n2, Location l2) {
              B ob(l2, n2);
              pick(ob, e.locateBody(ob, item, begin), rows);
            },
            [&](OpBuilder &n2, Location l2) {
              B wb(l2, n2);
              pick(wb, e.ringPlace(wb, item, begin), rows);
            });
        scf::YieldOp::create(bb, inner.getResults());
      });
  return {{op.getResult(0), op.getResult(1), op.getResult(2), op.getResult(3),
           op.getResult(4)},
          op.getResult(5),
          arena ? op.getResult(6) : Value()};
}

Value GPUEmitter::elementBase(B &b, const LaneShape &s, Value lane,
                              int64_t chunk, int64_t field) {
  Value piece = add(b, idx(b, chunk * s.lanes), lane);
  Value byte = mul(b, piece, s.width);
  if (s.bits < 8)
    return add(b, idx(b, field * s.rowBytes), byte);
  return arith::DivUIOp::create(b, mul(b, byte, 8), idx(b, s.bits));
}

Value GPUEmitter::pieceActive(B &b, const LaneShape &s, Value lane,
                              int64_t chunk) {
  return lt(b, add(b, idx(b, chunk * s.lanes), lane), idx(b, s.pieces));
}

Value GPUEmitter::loadLaneRow(B &b, const LaneShape &s, Value sharedBuffer,
                              Value base, Value lane) {
  VectorType piece = VectorType::get({s.perField}, f32());
  Value result = arith::ConstantOp::create(
      b, DenseElementsAttr::get(VectorType::get({s.elements}, f32()),
                                b.getF32FloatAttr(0.0f)));
  for (int64_t c = 0; c < s.chunks; ++c)
    for (int64_t f = 0; f < s.fields; ++f) {
      Value active = pieceActive(b, s, lane, c);
      Value at = add(b, base, elementBase(b, s, lane, c, f));
      Value values = ifElseZero(b, active, {piece}, [&](B &tb) {
        return SmallVector<Value>{
            vector::LoadOp::create(tb, piece, sharedBuffer, ValueRange{at})};
      })[0];
      result = vector::InsertStridedSliceOp::create(
          b, values, result, ArrayRef<int64_t>{(c * s.fields + f) * s.perField},
          ArrayRef<int64_t>{1});
    }
  return result;
}

Value GPUEmitter::decodeRow(B &b, const an::StorageFormat &format,
                            const LaneShape &s, const Place &place, Value arena,
                            Value r, Value lane, bool forKeys, Value *rowScale,
                            Value *delta) {
  const int64_t d = g.headDim;
  Type i8 = b.getI8Type(), i16 = b.getI16Type();
  Value row = add(b, place.row, r);
  bool scaled = an::isScaled(format);
  bool asymmetric = scaled && format.scheme == an::QuantScheme::Asymmetric;
  bool folds = forKeys && foldsKeyScale(format, d, dequantizer);
  // Views of the run's regions, as the format kernels open them.
  auto view = [&](Value offset, Type element, int64_t bytes) -> Value {
    Value size = arith::DivUIOp::create(
        b, sub(b, memref::DimOp::create(b, arena, 0), offset), idx(b, bytes));
    return memref::ViewOp::create(
        b, MemRefType::get({ShapedType::kDynamic}, element), arena, offset,
        ValueRange{size});
  };
  int64_t scaleBytes =
      scaled && format.scaleKind != an::StorageKind::F32 ? 2 : 4;
  Type scaleElement = !scaled || format.scaleKind == an::StorageKind::F32
                          ? Type(b.getF32Type())
                          : Type(i16);
  Value codes = s.width >= 4 ? view(place.code, b.getI32Type(), 4)
                             : view(place.code, i8, 1);
  Value scales = scaled ? view(place.scale, scaleElement, scaleBytes) : Value();
  Value zeros =
      asymmetric ? view(place.zero, scaleElement, scaleBytes) : Value();
  int64_t scaleLanes = !scaled ? 0
                       : format.granularity == an::Granularity::TokenGroup
                           ? d / format.groupSize
                           : d;
  Value scaleRow =
      !scaled ? Value()
      : format.granularity == an::Granularity::ChannelGroup
          ? mul(b, arith::DivUIOp::create(b, row, idx(b, format.groupSize)),
                scaleLanes)
          : mul(b, row, scaleLanes);

  VectorType laneF32 = VectorType::get({s.perField}, f32());
  Value result = arith::ConstantOp::create(
      b, DenseElementsAttr::get(VectorType::get({s.elements}, f32()),
                                b.getF32FloatAttr(0.0f)));
  assert(!(delta && folds) && "bounds are of dequantized values");
  Value deltaResult = result;
  // The scale (or zero point) lanes of `count` elements from `element`
  // of the row, widened to f32.
  auto scaleLanesAt = [&](B &tb, Value view, Value element,
                          int64_t count) -> Value {
    VectorType raw = VectorType::get({count}, scaleElement);
    if (format.granularity == an::Granularity::ChannelGroup) {
      Value v = vector::LoadOp::create(tb, raw, view,
                                       ValueRange{add(tb, scaleRow, element)});
      return emitWidenScales(tb, format, v);
    }
    int64_t group = format.groupSize;
    if (group % count == 0) {
      Value at = add(tb, scaleRow,
                     arith::DivUIOp::create(tb, element, idx(tb, group)));
      Value one = vector::LoadOp::create(tb, VectorType::get({1}, scaleElement),
                                         view, ValueRange{at});
      Value wide = emitWidenScales(tb, format, one);
      return vector::BroadcastOp::create(
          tb, VectorType::get({count}, f32()),
          vector::ExtractOp::create(tb, wide, ArrayRef<int64_t>{0}));
    }
    // Several groups in the piece: one scale each, expanded.
    int64_t groups = count / group;
    Value at =
        add(tb, scaleRow, arith::DivUIOp::create(tb, element, idx(tb, group)));
    Value v = vector::LoadOp::create(
        tb, VectorType::get({groups}, scaleElement), view, ValueRange{at});
    Value wide = emitWidenScales(tb, format, v);
    SmallVector<int64_t> mask;
    for (int64_t k = 0; k < count; ++k)
      mask.push_back(k / group);
    return vector::ShuffleOp::create(tb, wide, wide, mask);
  };

  for (int64_t c = 0; c < s.chunks; ++c) {
    Value active = pieceActive(b, s, lane, c);
    // The fields' values, then (with `delta`) their bounds.
    SmallVector<Type> fieldTypes(delta ? 2 * s.fields : s.fields, laneF32);
    SmallVector<Value> fieldValues =
        ifElseZero(b, active, fieldTypes, [&](B &tb) {
          Value piece = add(tb, mul(tb, lane, 1), idx(tb, c * s.lanes));
          Value byte =
              add(tb, mul(tb, row, s.rowBytes), mul(tb, piece, s.width));
          // The piece's bytes as i32 words (or bytes for pieces under 4).
          Value words;
          int64_t wordCount = std::max<int64_t>(s.width / 4, 1);
          VectorType wordType = VectorType::get({wordCount}, tb.getI32Type());
          if (s.width >= 4) {
            auto load = vector::LoadOp::create(
                tb, wordType, codes,
                ValueRange{arith::DivUIOp::create(tb, byte, idx(tb, 4))});
            load.setAlignment(uint64_t(s.width));
            words = load;
          } else {
            auto load = vector::LoadOp::create(
                tb, VectorType::get({s.width}, i8), codes, ValueRange{byte});
            load.setAlignment(uint64_t(s.width));
            SmallVector<int64_t> pad;
            for (int64_t k = 0; k < 4; ++k)
              pad.push_back(k < s.width ? k : s.width);
            Value zeroBytes = arith::ConstantOp::create(
                tb, DenseElementsAttr::get(VectorType::get({s.width}, i8),
                                           tb.getI8IntegerAttr(0)));
            Value four = vector::ShuffleOp::create(tb, load, zeroBytes, pad);
            words = vector::BitCastOp::create(tb, wordType, four);
          }
          SmallVector<Value> out, bounds;
          if (format.kind == an::StorageKind::F32) {
            out.push_back(vector::BitCastOp::create(tb, laneF32, words));
          } else if (format.kind == an::StorageKind::F16 ||
                     format.kind == an::StorageKind::BF16) {
            Type half = format.kind == an::StorageKind::F16
                            ? Type(tb.getF16Type())
                            : Type(tb.getBF16Type());
            Value halves = vector::BitCastOp::create(
                tb, VectorType::get({s.perField}, half), words);
            out.push_back(arith::ExtFOp::create(tb, laneF32, halves));
          }
          if (!scaled && delta)
            bounds.push_back(emitElementBounds(tb, format, dequantizer, Value(),
                                               out[0], Value()));
          if (scaled) {
            // Code lanes (i32), field by field.
            SmallVector<Value> codeFields;
            int64_t lanesPerWord = 4 * s.fields;
            (void)lanesPerWord;
            if (s.bits == 8) {
              Value bytes = vector::BitCastOp::create(
                  tb, VectorType::get({wordCount * 4}, i8), words);
              if (s.width < 4)
                bytes = vector::ExtractStridedSliceOp::create(
                    tb, bytes, ArrayRef<int64_t>{0}, ArrayRef<int64_t>{s.width},
                    ArrayRef<int64_t>{1});
              bool signExtend = an::isIntegerKind(format.kind) && !asymmetric;
              VectorType laneI32 =
                  VectorType::get({s.perField}, tb.getI32Type());
              codeFields.push_back(
                  signExtend
                      ? Value(arith::ExtSIOp::create(tb, laneI32, bytes))
                      : Value(arith::ExtUIOp::create(tb, laneI32, bytes)));
            } else {
              // Sub-byte fields by shifts and masks on 32-bit words: four
              // fields per instruction. Symmetric codes are signed: x ^ h
              // - h (h the sign bit) sign-extends a field exactly.
              int64_t fieldMask = (1 << s.bits) - 1;
              uint32_t spread = 0;
              for (int k = 0; k < 4; ++k)
                spread |= uint32_t(fieldMask) << (8 * k);
              uint32_t signSpread = 0;
              for (int k = 0; k < 4; ++k)
                signSpread |= uint32_t(1u << (s.bits - 1)) << (8 * k);
              auto splatWord = [&](uint32_t v) -> Value {
                return arith::ConstantOp::create(
                    tb, DenseElementsAttr::get(
                            wordType, tb.getI32IntegerAttr(int32_t(v))));
              };
              VectorType laneI32 =
                  VectorType::get({s.perField}, tb.getI32Type());
              for (int64_t f = 0; f < s.fields; ++f) {
                Value field = words;
                if (f)
                  field = arith::ShRUIOp::create(
                      tb, field, splatWord(uint32_t(f * s.bits)));
                field = arith::AndIOp::create(tb, field, splatWord(spread));
                if (!asymmetric)
                  field =
                      arith::XOrIOp::create(tb, field, splatWord(signSpread));
                Value bytes = vector::BitCastOp::create(
                    tb, VectorType::get({wordCount * 4}, i8), field);
                if (s.width < 4)
                  bytes = vector::ExtractStridedSliceOp::create(
                      tb, bytes, ArrayRef<int64_t>{0},
                      ArrayRef<int64_t>{s.width}, ArrayRef<int64_t>{1});
                Value lanes = arith::ExtUIOp::create(tb, laneI32, bytes);
                if (!asymmetric)
                  lanes = arith::SubIOp::create(
                      tb, lanes,
                      arith::ConstantOp::create(
                          tb, DenseElementsAttr::get(
                                  laneI32,
                                  tb.getI32IntegerAttr(1 << (s.bits - 1)))));
                codeFields.push_back(lanes);
              }
            }
            for (int64_t f = 0; f < s.fields; ++f) {
              Value values;
              if (an::isFp8Kind(format.kind) && target.hasFp8Convert()) {
                // cvt.rn.f16x2.e4m3x2 / e5m2x2: every f8 value is an f16
                // value, so the same values as the integer decode.
                Value bytes = vector::BitCastOp::create(
                    tb, VectorType::get({wordCount * 4}, i8), words);
                Type f8 = format.kind == an::StorageKind::F8E4M3FN
                              ? Type(tb.getType<Float8E4M3FNType>())
                              : Type(tb.getType<Float8E5M2Type>());
                VectorType pair = VectorType::get({2}, i8);
                VectorType halfPair = VectorType::get({2}, tb.getF16Type());
                Value all = arith::ConstantOp::create(
                    tb,
                    DenseElementsAttr::get(laneF32, tb.getF32FloatAttr(0.0f)));
                for (int64_t k = 0; k < s.perField; k += 2) {
                  Value two = vector::ExtractStridedSliceOp::create(
                      tb, bytes, ArrayRef<int64_t>{k}, ArrayRef<int64_t>{2},
                      ArrayRef<int64_t>{1});
                  Value h = NVVM::ConvertF8x2ToF16x2Op::create(
                      tb, halfPair, two, /*relu=*/false, f8);
                  (void)pair;
                  Value w =
                      arith::ExtFOp::create(tb, VectorType::get({2}, f32()), h);
                  all = vector::InsertStridedSliceOp::create(
                      tb, w, all, ArrayRef<int64_t>{k}, ArrayRef<int64_t>{1});
                }
                values = all;
              } else {
                values = emitCodeValues(tb, format, codeFields[f]);
              }
              if (!scaled || folds) {
                out.push_back(values);
                continue;
              }
              Value element = elementBase(tb, s, lane, c, f);
              Value scale = scaleLanesAt(tb, scales, element, s.perField);
              Value zero = asymmetric
                               ? scaleLanesAt(tb, zeros, element, s.perField)
                               : Value();
              out.push_back(emitDequantizeValues(tb, format, dequantizer,
                                                 values, scale, zero));
              if (delta)
                bounds.push_back(emitElementBounds(tb, format, dequantizer,
                                                   values, out.back(), scale));
            }
          }
          llvm::append_range(out, bounds);
          return out;
        });
    for (int64_t f = 0; f < s.fields; ++f) {
      SmallVector<int64_t, 1> at{(c * s.fields + f) * s.perField};
      result = vector::InsertStridedSliceOp::create(b, fieldValues[f], result,
                                                    at, ArrayRef<int64_t>{1});
      if (delta)
        deltaResult = vector::InsertStridedSliceOp::create(
            b, fieldValues[s.fields + f], deltaResult, at,
            ArrayRef<int64_t>{1});
    }
  }
  if (delta)
    *delta = deltaResult;
  if (rowScale) {
    if (folds) {
      Value one = vector::LoadOp::create(b, VectorType::get({1}, scaleElement),
                                         scales, ValueRange{row});
      *rowScale = vector::ExtractOp::create(b, emitWidenScales(b, format, one),
                                            ArrayRef<int64_t>{0});
    } else {
      *rowScale = fconst(b, 1.0f);
    }
  }
  return result;
}

gpu::GPUFuncOp GPUEmitter::emitSplitKernel(bool withCertificate) {
  const int64_t d = g.headDim, TR = tileRows;
  // The certified kernel takes one query head per block (its per-head
  // terms would pass the registers otherwise) and fewer tiles per split
  // (four arrays of row slots).
  const int64_t GC = withCertificate ? 1 : headsPerBlock;
  const int64_t splitTiles =
      withCertificate ? certifiedTilesPerSplit : tilesPerSplit;
  const int64_t threads = target.getBlockThreads();
  const int64_t logitSlots = splitTiles * TR * GC;
  Type element = cache.getElementType();
  MemRefType arenaType =
      MemRefType::get({ShapedType::kDynamic}, IntegerType::get(context, 8));
  MemRefType heads =
      MemRefType::get({ShapedType::kDynamic, ShapedType::kDynamic}, element);
  Location loc = module.getLoc();

  // P_attend_split(arena, layer, query, softmaxScale, group, tiles, hasSink,
  //                sinkRows, aged, bodyRows, splits, partMax, partSum,
  //                partAcc), grid (chunks, splits, KV heads).
  // P_attend_split_certified(<the same to splits>, partials): one query
  // head per block, grid (group, splits, KV heads); its partials and the
  // certificate's in the layout of the CPU's certified combine
  // (certifiedPartials, the splits in place of its tiles).
  SmallVector<Type> inputs{arenaType, index(), heads,   f32(),
                           index(),   index(), index(), index(),
                           index(),   index(), index()};
  if (withCertificate)
    inputs.push_back(arenaType);
  else
    inputs.append({floats(), floats(), floats()});
  // Shared memory: the chunk's queries, the split's logits (then weights),
  // per-warp staging rows, the accumulated rows, and the block's
  // reductions (per warp and head, then max and sum per head). The
  // certificate's: E_t (then wV), S_t (then wU) and wG per row slot, the
  // block's W, U, G rows and its min V^, max V^, max deltaV rows, and the
  // warps' eight key terms.
  SmallVector<Type> workgroup{shared(GC * d), shared(logitSlots),
                              shared(kWarps * GC * d), shared(GC * d),
                              shared(kWarps * GC + 2 * GC)};
  if (withCertificate)
    workgroup.append({shared(logitSlots), shared(logitSlots),
                      shared(logitSlots), shared(3 * d), shared(3 * d),
                      shared(kWarps * 8)});
  gpu::GPUFuncOp kernel = createKernel(
      prefix + (withCertificate ? "_attend_split_certified" : "_attend_split"),
      inputs, workgroup);
  {
    Block &entry = kernel.getBody().front();
    B b(loc, OpBuilder::atBlockEnd(&entry));
    ValueRange args = kernel.getArguments();
    Value arena = args[0], layer = args[1], query = args[2],
          softmaxScale = args[3], group = args[4], tiles = args[5],
          hasSink = args[6], sinkRows = args[7], aged = args[8],
          bodyRows = args[9], splits = args[10];
    Value partMax, partSum, partAcc, partials;
    if (withCertificate) {
      partials = args[11];
    } else {
      partMax = args[11];
      partSum = args[12];
      partAcc = args[13];
    }
    ArrayRef<BlockArgument> smem = kernel.getWorkgroupAttributions();
    Value qs = smem[0], logits = smem[1], stage = smem[2], accs = smem[3],
          red = smem[4];
    Value keyBounds, magnitudes, growths, certVecs, ranges, keyTerms;
    if (withCertificate) {
      keyBounds = smem[5];
      magnitudes = smem[6];
      growths = smem[7];
      certVecs = smem[8];
      ranges = smem[9];
      keyTerms = smem[10];
    }
    Value zero = idx(b, 0), one = idx(b, 1), step = idx(b, threads);
    Value tid = gpu::ThreadIdOp::create(b, gpu::Dimension::x);
    Value chunk = gpu::BlockIdOp::create(b, gpu::Dimension::x);
    Value split = gpu::BlockIdOp::create(b, gpu::Dimension::y);
    Value h = gpu::BlockIdOp::create(b, gpu::Dimension::z);
    Value warp = arith::DivUIOp::create(b, tid, idx(b, 32));
    Value lane32 = arith::RemUIOp::create(b, tid, idx(b, 32));
    Value h0 = mul(b, chunk, GC);
    Value count = arith::MinUIOp::create(b, idx(b, GC), sub(b, group, h0));
    auto queryHead = [&](B &qb, Value i) {
      return add(qb, add(qb, mul(qb, h, group), h0), i);
    };
    Value negInf = fconst(b, -std::numeric_limits<float>::infinity());
    Value fzero = fconst(b, 0.0f);
    // The chunk's queries (zero beyond the group), zero accumulators,
    // and -inf logits (a row no tile fills weighs e^-inf = 0).
    loop(b, tid, idx(b, GC * d), step, [&](B &lb, Value at) {
      Value i = arith::DivUIOp::create(lb, at, idx(lb, d));
      Value j = arith::RemUIOp::create(lb, at, idx(lb, d));
      Value q = ifElseZero(lb, lt(lb, i, count), {f32()}, [&](B &tb) {
        Value v =
            memref::LoadOp::create(tb, query, ValueRange{queryHead(tb, i), j});
        if (!v.getType().isF32())
          v = arith::ExtFOp::create(tb, f32(), v);
        return SmallVector<Value>{v};
      })[0];
      memref::StoreOp::create(lb, q, qs, ValueRange{at});
      memref::StoreOp::create(lb, fzero, accs, ValueRange{at});
    });
    loop(b, tid, idx(b, logitSlots), step, [&](B &lb, Value at) {
      memref::StoreOp::create(lb, negInf, logits, ValueRange{at});
      if (withCertificate) {
        // S_t of -1 marks a slot no row fills (a row's is >= 0, inf or
        // NaN).
        memref::StoreOp::create(lb, fconst(lb, -1.0f), magnitudes,
                                ValueRange{at});
        for (Value slots : {keyBounds, growths})
          memref::StoreOp::create(lb, fzero, slots, ValueRange{at});
      }
    });
    if (withCertificate) {
      // W, U, G from 0; min V^ from +inf, max V^ from -inf, max deltaV
      // from 0.
      Value posInf = fconst(b, std::numeric_limits<float>::infinity());
      loop(b, tid, idx(b, d), step, [&](B &lb, Value j) {
        for (int64_t k = 0; k < 3; ++k)
          memref::StoreOp::create(lb, fzero, certVecs,
                                  ValueRange{add(lb, j, idx(lb, k * d))});
        memref::StoreOp::create(lb, posInf, ranges, ValueRange{j});
        memref::StoreOp::create(lb, negInf, ranges,
                                ValueRange{add(lb, j, idx(lb, d))});
        memref::StoreOp::create(lb, fzero, ranges,
                                ValueRange{add(lb, j, idx(lb, 2 * d))});
      });
    }
    gpu::BarrierOp::create(b);

    Value first = mul(b, split, splitTiles);
    Value last =
        arith::MinUIOp::create(b, tiles, add(b, first, idx(b, splitTiles)));
    Value itemK = deviceEmitter->itemOf(b, layer, h, 0);
    Value itemV = add(b, itemK, one);

    // Runs of tiles of one format: for each run, `body` gets the format's
    // index, its lane shape, and loops over the run's tiles with
    // `perTile(tileIndexInSplit, place, rows, carried) -> carried`; the
    // run's carried values start from `init` and end in `finish`.
    auto overRuns = [&](B &rb, Value item, ValueRange outerInit,
                        function_ref<SmallVector<Value>(
                            B &, int64_t, const LaneShape &, ValueRange outer)>
                            runBody) -> SmallVector<Value> {
      SmallVector<Type> outerTypes;
      for (Value v : outerInit)
        outerTypes.push_back(v.getType());
      SmallVector<Value> init{first};
      llvm::append_range(init, outerInit);
      SmallVector<Type> types{index()};
      llvm::append_range(types, outerTypes);
      auto whileOp = scf::WhileOp::create(
          rb, types, init,
          [&](OpBuilder &n, Location l, ValueRange a) {
            B cb(l, n);
            scf::ConditionOp::create(cb, lt(cb, a[0], last), a);
          },
          [&](OpBuilder &n, Location l, ValueRange a) {
            B wb(l, n);
            Tile tile =
                tileAt(wb, item, a[0], hasSink, sinkRows, aged, bodyRows);
            SmallVector<int64_t> cases;
            for (size_t f = 0; f < plan.formats.size(); ++f)
              cases.push_back(f);
            auto sw = scf::IndexSwitchOp::create(wb, types, tile.place.format,
                                                 cases, cases.size());
            for (size_t f = 0; f < plan.formats.size(); ++f) {
              Block &block = sw.getCaseRegions()[f].emplaceBlock();
              B sb(l, OpBuilder::atBlockEnd(&block));
              LaneShape shape = getLaneShape(
                  plan.formats[f], d, withCertificate ? kCertifiedElements : 0);
              // runBody yields (next tile, outer values).
              SmallVector<Value> out = runBody(sb, int64_t(f), shape, a);
              scf::YieldOp::create(sb, out);
            }
            Block &fallback = sw.getDefaultRegion().emplaceBlock();
            B fb(l, OpBuilder::atBlockEnd(&fallback));
            // Unreachable (formats come from the tables): stop the loop.
            SmallVector<Value> stop{last};
            llvm::append_range(stop, a.drop_front());
            scf::YieldOp::create(fb, stop);
            scf::YieldOp::create(wb, sw.getResults());
          });
      return SmallVector<Value>(whileOp.getResults().drop_front());
    };
    // Within a run: the tiles from `start` while their format is `f`,
    // carrying `carried`; `perTile` processes one tile.
    auto tilesOfFormat =
        [&](B &rb, Value item, int64_t f, Value start, ValueRange carried,
            function_ref<SmallVector<Value>(B &, Value t, const Tile &tile,
                                            ValueRange carried)>
                perTile) -> SmallVector<Value> {
      SmallVector<Type> types{index()};
      for (Value v : carried)
        types.push_back(v.getType());
      SmallVector<Value> init{start};
      llvm::append_range(init, carried);
      // The before region forwards (t, carried..., the tile's place and
      // rows, and for the certificate its inherited bound) to the body and
      // out of the loop.
      const int64_t fields = withCertificate ? 7 : 6;
      SmallVector<Type> tileTypes(6, index());
      if (withCertificate)
        tileTypes.push_back(f32());
      SmallVector<Type> afterTypes = types;
      llvm::append_range(afterTypes, tileTypes);
      auto whileOp = scf::WhileOp::create(
          rb, afterTypes, init,
          [&](OpBuilder &n, Location l, ValueRange a) {
            B cb(l, n);
            Value inRange = lt(cb, a[0], last);
            // The tile's place, only looked up inside the range.
            SmallVector<Value> found =
                ifElseZero(cb, inRange, tileTypes, [&](B &tb) {
                  Tile t = tileAt(tb, item, a[0], hasSink, sinkRows, aged,
                                  bodyRows, withCertificate ? arena : Value());
                  SmallVector<Value> fields{t.place.format, t.place.code,
                                            t.place.scale,  t.place.zero,
                                            t.place.row,    t.rows};
                  if (t.inherited)
                    fields.push_back(t.inherited);
                  return fields;
                });
            Value same =
                andI(cb, inRange,
                     cmp(cb, arith::CmpIPredicate::eq, found[0], idx(cb, f)));
            SmallVector<Value> forwarded(a);
            llvm::append_range(forwarded, found);
            scf::ConditionOp::create(cb, same, forwarded);
          },
          [&](OpBuilder &n, Location l, ValueRange a) {
            B wb(l, n);
            ValueRange place = a.take_back(fields);
            Tile tile{{place[0], place[1], place[2], place[3], place[4]},
                      place[5],
                      withCertificate ? place[6] : Value()};
            SmallVector<Value> next{add(wb, a[0], idx(wb, 1))};
            llvm::append_range(next, perTile(wb, a[0], tile,
                                             a.drop_front().drop_back(fields)));
            scf::YieldOp::create(wb, next);
          });
      return SmallVector<Value>(
          whileOp.getResults().take_front(1 + carried.size()));
    };

    // Phase 1: logits of every row of the split into shared memory, and
    // each thread's largest per query head.
    SmallVector<Value> maxInit(GC, negInf);
    SmallVector<Value> maxes = overRuns(
        b, itemK, maxInit,
        [&](B &sb, int64_t f, const LaneShape &s,
            ValueRange a) -> SmallVector<Value> {
          const an::StorageFormat &format = plan.formats[f];
          Value lane = arith::RemUIOp::create(sb, tid, idx(sb, s.lanes));
          Value slot = arith::DivUIOp::create(sb, tid, idx(sb, s.lanes));
          int64_t slots = s.slots(threads);
          // The lane's query values, once per run.
          SmallVector<Value> qv;
          for (int64_t i = 0; i < GC; ++i)
            qv.push_back(loadLaneRow(sb, s, qs, idx(sb, i * d), lane));
          VectorType laneVec = VectorType::get({s.elements}, f32());
          // The lanes' sum of `v` over the row (each slot's lanes).
          auto rowSum = [&](B &rb, Value v) {
            Value p = emitLaneSum(rb, v);
            for (int64_t off = s.lanes / 2; off >= 1; off /= 2)
              p = arith::AddFOp::create(rb, p, shuffleXor(rb, p, off));
            return p;
          };
          SmallVector<Value> run = tilesOfFormat(
              sb, itemK, int64_t(f), a[0], a.drop_front(),
              [&](B &tb, Value t, const Tile &tile,
                  ValueRange carried) -> SmallVector<Value> {
                Value tileBase = mul(tb, sub(tb, t, first), TR);
                auto rows = scf::ForOp::create(
                    tb, zero, tile.rows, idx(tb, slots), carried,
                    [&](OpBuilder &n, Location l, Value r0, ValueRange m) {
                      B rb(l, n);
                      Value r = add(rb, r0, slot);
                      Value active = lt(rb, r, tile.rows);
                      // The certificate takes the dequantized keys (no
                      // folded scale) and their bounds.
                      SmallVector<Value> decoded = ifElseZero(
                          rb, active,
                          {laneVec, withCertificate ? laneVec : f32()},
                          [&](B &ab) {
                            if (withCertificate) {
                              Value delta;
                              Value v = decodeRow(
                                  ab, format, s, tile.place, arena, r, lane,
                                  /*forKeys=*/false, nullptr, &delta);
                              delta = arith::AddFOp::create(
                                  ab, delta,
                                  vector::BroadcastOp::create(ab, laneVec,
                                                              tile.inherited));
                              return SmallVector<Value>{v, delta};
                            }
                            Value scale;
                            Value v = decodeRow(ab, format, s, tile.place,
                                                arena, r, lane,
                                                /*forKeys=*/true, &scale);
                            return SmallVector<Value>{v, scale};
                          });
                      Value vals = decoded[0];
                      Value rowScale = withCertificate ? Value() : decoded[1];
                      SmallVector<Value> next;
                      Value isLead =
                          andI(rb, active,
                               cmp(rb, arith::CmpIPredicate::eq, lane, zero));
                      for (int64_t i = 0; i < GC; ++i) {
                        Value p =
                            rowSum(rb, arith::MulFOp::create(rb, qv[i], vals));
                        if (rowScale)
                          p = arith::MulFOp::create(rb, p, rowScale);
                        Value logit =
                            arith::MulFOp::create(rb, p, softmaxScale);
                        Value at = add(rb, mul(rb, add(rb, tileBase, r), GC),
                                       idx(rb, i));
                        ifThen(rb, isLead, [&](B &wb) {
                          memref::StoreOp::create(wb, logit, logits,
                                                  ValueRange{at});
                        });
                        if (withCertificate) {
                          // E_t = scale sum_j |q_j| deltaK_tj and S_t =
                          // scale sum_j |q_j K^_tj|, as the CPU's
                          // P_tile_abs_logits forms them.
                          Value bound = arith::MulFOp::create(
                              rb,
                              rowSum(rb,
                                     arith::MulFOp::create(
                                         rb, math::AbsFOp::create(rb, qv[i]),
                                         decoded[1])),
                              softmaxScale);
                          Value magnitude = arith::MulFOp::create(
                              rb,
                              rowSum(rb, math::AbsFOp::create(
                                             rb, arith::MulFOp::create(
                                                     rb, qv[i], vals))),
                              softmaxScale);
                          ifThen(rb, isLead, [&](B &wb) {
                            memref::StoreOp::create(wb, bound, keyBounds,
                                                    ValueRange{at});
                            memref::StoreOp::create(wb, magnitude, magnitudes,
                                                    ValueRange{at});
                          });
                        }
                        Value candidate =
                            arith::SelectOp::create(rb, isLead, logit, negInf);
                        next.push_back(
                            arith::MaximumFOp::create(rb, m[i], candidate));
                      }
                      scf::YieldOp::create(rb, next);
                    });
                return SmallVector<Value>(rows.getResults());
              });
          return run;
        });
    // The split's maximum per query head: warps by shuffles, then across
    // the warps in shared memory.
    for (int64_t i = 0; i < GC; ++i) {
      Value m = maxes[i];
      for (int64_t off = 16; off >= 1; off /= 2)
        m = arith::MaximumFOp::create(b, m, shuffleXor(b, m, off));
      ifThen(b, cmp(b, arith::CmpIPredicate::eq, lane32, zero), [&](B &wb) {
        memref::StoreOp::create(
            wb, m, red, ValueRange{add(wb, mul(wb, warp, GC), idx(wb, i))});
      });
    }
    gpu::BarrierOp::create(b);
    SmallVector<Value> splitMax;
    for (int64_t i = 0; i < GC; ++i) {
      Value m = negInf;
      for (int64_t w = 0; w < kWarps; ++w)
        m = arith::MaximumFOp::create(
            b, m,
            memref::LoadOp::create(b, red, ValueRange{idx(b, w * GC + i)}));
      splitMax.push_back(m);
    }
    gpu::BarrierOp::create(b);
    // Weights exp(logit - max) in place and their sum per query head: the
    // thread of `tid` sums the slots of head tid % GC (threads % GC == 0).
    {
      Value head = arith::RemUIOp::create(b, tid, idx(b, GC));
      // This thread's head's maximum, picked from the registers.
      Value myMax = splitMax[0];
      for (int64_t i = 1; i < GC; ++i)
        myMax = arith::SelectOp::create(
            b, cmp(b, arith::CmpIPredicate::eq, head, idx(b, i)), splitMax[i],
            myMax);
      // With the certificate (one head per block) each thread also sums
      // and maximizes the key terms of its slots, those of the CPU's
      // P_tile_certify_keys: A1 = sum p E, A2 = sum p e^E E, A3 = sum p
      // e^E phi(E), Emax, B1 = sum p c, B2 = sum p phi(c), Cmax and the
      // largest dot-product error, with dot_t = gamma_{d+2} S_t and c_t =
      // dot_t + u (m - logit_t); and it leaves the value half's row weights
      // wV = p e^{2E}, wU = p e^c and wG = e^E in the slots of E, S and wG.
      auto isMaxTerm = [](int k) { return k == 3 || k == 6 || k == 7; };
      SmallVector<Value> init{fzero};
      if (withCertificate)
        init.append(8, fzero);
      const double u = 0x1p-24;
      float gammaDot = float((double(d) + 2) * u / (1 - (double(d) + 2) * u));
      gammaDot =
          std::nextafter(gammaDot, std::numeric_limits<float>::infinity());
      auto scalarOf = [&](B &eb, Value x, Value (*fn)(B &, Value)) {
        VectorType single = VectorType::get({1}, f32());
        return Value(vector::ExtractOp::create(
            eb, fn(eb, vector::BroadcastOp::create(eb, single, x)),
            ArrayRef<int64_t>{0}));
      };
      auto sums = scf::ForOp::create(
          b, tid, idx(b, logitSlots), step, init,
          [&](OpBuilder &n, Location l, Value at, ValueRange acc) {
            B lb(l, n);
            Value x = memref::LoadOp::create(lb, logits, ValueRange{at});
            Value w = scalarExp(lb, arith::SubFOp::create(lb, x, myMax));
            memref::StoreOp::create(lb, w, logits, ValueRange{at});
            SmallVector<Value> next{arith::AddFOp::create(lb, acc[0], w)};
            if (withCertificate) {
              // Slots no row filled add nothing. A row's logit may be
              // -inf or NaN after an overflow: it counts, and its inf or
              // NaN terms leave the formula to the hull bound, as on the
              // CPU.
              Value magnitude =
                  memref::LoadOp::create(lb, magnitudes, ValueRange{at});
              Value filled = arith::CmpFOp::create(
                  lb, arith::CmpFPredicate::UGE, magnitude, fzero);
              Value e = memref::LoadOp::create(lb, keyBounds, ValueRange{at});
              Value dot =
                  arith::MulFOp::create(lb, magnitude, fconst(lb, gammaDot));
              Value c =
                  math::FmaOp::create(lb, fconst(lb, float(u)),
                                      arith::SubFOp::create(lb, myMax, x), dot);
              Value grow = scalarOf(lb, e, emitExp);
              Value pg = arith::MulFOp::create(lb, w, grow);
              Value terms[8] = {
                  arith::MulFOp::create(lb, w, e),
                  arith::MulFOp::create(lb, pg, e),
                  arith::MulFOp::create(lb, pg, scalarOf(lb, e, emitExpm1)),
                  e,
                  arith::MulFOp::create(lb, w, c),
                  arith::MulFOp::create(lb, w, scalarOf(lb, c, emitExpm1)),
                  c,
                  dot};
              for (int k = 0; k < 8; ++k) {
                Value term =
                    arith::SelectOp::create(lb, filled, terms[k], fzero);
                next.push_back(
                    isMaxTerm(k)
                        ? Value(arith::MaximumFOp::create(lb, acc[1 + k], term))
                        : Value(arith::AddFOp::create(lb, acc[1 + k], term)));
              }
              Value weights[3] = {
                  arith::MulFOp::create(lb, pg, grow),
                  arith::MulFOp::create(lb, w, scalarOf(lb, c, emitExp)), grow};
              Value slots[3] = {keyBounds, magnitudes, growths};
              for (int k = 0; k < 3; ++k)
                memref::StoreOp::create(
                    lb, arith::SelectOp::create(lb, filled, weights[k], fzero),
                    slots[k], ValueRange{at});
            }
            scf::YieldOp::create(lb, next);
          });
      Value sum = sums.getResult(0);
      if (withCertificate)
        for (int k = 0; k < 8; ++k) {
          Value v = sums.getResult(1 + k);
          for (int64_t off = 16; off >= 1; off /= 2) {
            Value other = shuffleXor(b, v, off);
            v = isMaxTerm(k) ? Value(arith::MaximumFOp::create(b, v, other))
                             : Value(arith::AddFOp::create(b, v, other));
          }
          ifThen(b, cmp(b, arith::CmpIPredicate::eq, lane32, zero), [&](B &wb) {
            memref::StoreOp::create(
                wb, v, keyTerms,
                ValueRange{add(wb, mul(wb, warp, 8), idx(wb, k))});
          });
        }
      for (int64_t off = 16; off >= GC; off /= 2)
        sum = arith::AddFOp::create(b, sum, shuffleXor(b, sum, off));
      ifThen(b, lt(b, lane32, idx(b, GC)), [&](B &wb) {
        memref::StoreOp::create(wb, sum, red,
                                ValueRange{add(wb, mul(wb, warp, GC), lane32)});
      });
      gpu::BarrierOp::create(b);
      // Maxima and sums per head after the warps' slots.
      ifThen(b, lt(b, tid, idx(b, GC)), [&](B &wb) {
        Value total = memref::LoadOp::create(wb, red, ValueRange{tid});
        for (int64_t w = 1; w < kWarps; ++w)
          total = arith::AddFOp::create(
              wb, total,
              memref::LoadOp::create(
                  wb, red, ValueRange{add(wb, idx(wb, w * GC), tid)}));
        Value mine = splitMax[0];
        for (int64_t i = 1; i < GC; ++i)
          mine = arith::SelectOp::create(
              wb, cmp(wb, arith::CmpIPredicate::eq, tid, idx(wb, i)),
              splitMax[i], mine);
        memref::StoreOp::create(wb, mine, red,
                                ValueRange{add(wb, idx(wb, kWarps * GC), tid)});
        memref::StoreOp::create(
            wb, total, red,
            ValueRange{add(wb, idx(wb, kWarps * GC + GC), tid)});
      });
      gpu::BarrierOp::create(b);
    }

    // Phase 2: V, accumulated in registers per run of one format, then
    // reduced over the rows in flight (shuffles), the warps (shared
    // memory, a fixed order) and added to the block's accumulators.
    overRuns(
        b, itemV, ValueRange{},
        [&](B &sb, int64_t f, const LaneShape &s,
            ValueRange a) -> SmallVector<Value> {
          const an::StorageFormat &format = plan.formats[f];
          Value lane = arith::RemUIOp::create(sb, tid, idx(sb, s.lanes));
          Value slot = arith::DivUIOp::create(sb, tid, idx(sb, s.lanes));
          int64_t slots = s.slots(threads);
          VectorType laneVec = VectorType::get({s.elements}, f32());
          Value zeros = arith::ConstantOp::create(
              sb, DenseElementsAttr::get(laneVec, sb.getF32FloatAttr(0.0f)));
          // The accumulators; with the certificate (GC = 1) also W = sum
          // wV deltaV, U = sum wU |V^|, G = max wG deltaV, and the rows'
          // min V^, max V^ and max deltaV.
          enum { kW = 1, kU, kG, kLo, kHi, kDmax, kCertified };
          SmallVector<Value> accInit(GC, zeros);
          if (withCertificate) {
            accInit.append(3, zeros);
            for (float v : {std::numeric_limits<float>::infinity(),
                            -std::numeric_limits<float>::infinity(), 0.0f})
              accInit.push_back(arith::ConstantOp::create(
                  sb, DenseElementsAttr::get(laneVec, sb.getF32FloatAttr(v))));
          }
          SmallVector<Value> run = tilesOfFormat(
              sb, itemV, int64_t(f), a[0], accInit,
              [&](B &tb, Value t, const Tile &tile,
                  ValueRange carried) -> SmallVector<Value> {
                Value tileBase = mul(tb, sub(tb, t, first), TR);
                auto rows = scf::ForOp::create(
                    tb, zero, tile.rows, idx(tb, slots), carried,
                    [&](OpBuilder &n, Location l, Value r0, ValueRange acc) {
                      B rb(l, n);
                      Value r = add(rb, r0, slot);
                      Value active = lt(rb, r, tile.rows);
                      SmallVector<Type> decodedTypes(withCertificate ? 2 : 1,
                                                     laneVec);
                      SmallVector<Value> decoded =
                          ifElseZero(rb, active, decodedTypes, [&](B &ab) {
                            Value delta;
                            Value v = decodeRow(
                                ab, format, s, tile.place, arena, r, lane,
                                /*forKeys=*/false, nullptr,
                                withCertificate ? &delta : nullptr);
                            if (!withCertificate)
                              return SmallVector<Value>{v};
                            delta = arith::AddFOp::create(
                                ab, delta,
                                vector::BroadcastOp::create(ab, laneVec,
                                                            tile.inherited));
                            return SmallVector<Value>{v, delta};
                          });
                      Value vals = decoded[0];
                      Value rowAt = mul(rb, add(rb, tileBase, r), GC);
                      auto slotValue = [&](Value from, Value at) {
                        Value v = ifElseZero(rb, active, {f32()}, [&](B &ab) {
                          return SmallVector<Value>{
                              memref::LoadOp::create(ab, from, ValueRange{at})};
                        })[0];
                        return Value(
                            vector::BroadcastOp::create(rb, laneVec, v));
                      };
                      SmallVector<Value> next;
                      for (int64_t i = 0; i < GC; ++i)
                        next.push_back(vector::FMAOp::create(
                            rb, slotValue(logits, add(rb, rowAt, idx(rb, i))),
                            vals, acc[i]));
                      if (withCertificate) {
                        Value delta = decoded[1];
                        next.push_back(vector::FMAOp::create(
                            rb, slotValue(keyBounds, rowAt), delta, acc[kW]));
                        next.push_back(vector::FMAOp::create(
                            rb, slotValue(magnitudes, rowAt),
                            math::AbsFOp::create(rb, vals), acc[kU]));
                        next.push_back(arith::MaximumFOp::create(
                            rb, acc[kG],
                            arith::MulFOp::create(rb, slotValue(growths, rowAt),
                                                  delta)));
                        next.push_back(arith::SelectOp::create(
                            rb, active,
                            arith::MinimumFOp::create(rb, acc[kLo], vals),
                            acc[kLo]));
                        next.push_back(arith::SelectOp::create(
                            rb, active,
                            arith::MaximumFOp::create(rb, acc[kHi], vals),
                            acc[kHi]));
                        next.push_back(
                            arith::MaximumFOp::create(rb, acc[kDmax], delta));
                      }
                      scf::YieldOp::create(rb, next);
                    });
                return SmallVector<Value>(rows.getResults());
              });
          Value next = run[0];
          // Flush: the rows in flight of a warp hold the same elements.
          SmallVector<Value> reduced;
          for (int64_t i = 0; i < GC; ++i) {
            Value v = run[1 + i];
            SmallVector<Value> lanesOut;
            for (int64_t e = 0; e < s.elements; ++e) {
              Value x = vector::ExtractOp::create(sb, v, ArrayRef<int64_t>{e});
              for (int64_t off = s.lanes; off < 32; off *= 2)
                x = arith::AddFOp::create(sb, x, shuffleXor(sb, x, off));
              lanesOut.push_back(x);
            }
            reduced.push_back(
                vector::FromElementsOp::create(sb, laneVec, lanesOut));
          }
          Value leads = lt(sb, lane32, idx(sb, s.lanes));
          ifThen(sb, leads, [&](B &wb) {
            for (int64_t i = 0; i < GC; ++i)
              for (int64_t c = 0; c < s.chunks; ++c)
                for (int64_t fl = 0; fl < s.fields; ++fl) {
                  Value piece = vector::ExtractStridedSliceOp::create(
                      wb, reduced[i],
                      ArrayRef<int64_t>{(c * s.fields + fl) * s.perField},
                      ArrayRef<int64_t>{s.perField}, ArrayRef<int64_t>{1});
                  ifThen(wb, pieceActive(wb, s, lane, c), [&](B &pb) {
                    Value at = add(
                        pb, mul(pb, add(pb, mul(pb, warp, GC), idx(pb, i)), d),
                        elementBase(pb, s, lane, c, fl));
                    vector::StoreOp::create(pb, piece, stage, ValueRange{at});
                  });
                }
          });
          gpu::BarrierOp::create(sb);
          loop(sb, tid, idx(sb, GC * d), step, [&](B &lb, Value at) {
            Value total = memref::LoadOp::create(lb, accs, ValueRange{at});
            for (int64_t w = 0; w < kWarps; ++w)
              total = arith::AddFOp::create(
                  lb, total,
                  memref::LoadOp::create(
                      lb, stage, ValueRange{add(lb, idx(lb, w * GC * d), at)}));
            memref::StoreOp::create(lb, total, accs, ValueRange{at});
          });
          gpu::BarrierOp::create(sb);
          if (!withCertificate)
            return SmallVector<Value>{next};
          // The certificate's rows the same way, one at a time through the
          // staging rows, each joined with its kind: sums for W and U,
          // minima for min V^, maxima for the rest.
          for (int k = kW; k < kCertified; ++k) {
            auto join = [&](B &jb, Value x, Value y) -> Value {
              if (k == kW || k == kU)
                return arith::AddFOp::create(jb, x, y);
              if (k == kLo)
                return arith::MinimumFOp::create(jb, x, y);
              return arith::MaximumFOp::create(jb, x, y);
            };
            SmallVector<Value> lanesOut;
            for (int64_t e = 0; e < s.elements; ++e) {
              Value x = vector::ExtractOp::create(sb, run[1 + k],
                                                  ArrayRef<int64_t>{e});
              for (int64_t off = s.lanes; off < 32; off *= 2)
                x = join(sb, x, shuffleXor(sb, x, off));
              lanesOut.push_back(x);
            }
            Value reducedRow =
                vector::FromElementsOp::create(sb, laneVec, lanesOut);
            ifThen(sb, leads, [&](B &wb) {
              for (int64_t c = 0; c < s.chunks; ++c)
                for (int64_t fl = 0; fl < s.fields; ++fl) {
                  Value piece = vector::ExtractStridedSliceOp::create(
                      wb, reducedRow,
                      ArrayRef<int64_t>{(c * s.fields + fl) * s.perField},
                      ArrayRef<int64_t>{s.perField}, ArrayRef<int64_t>{1});
                  ifThen(wb, pieceActive(wb, s, lane, c), [&](B &pb) {
                    Value at = add(pb, mul(pb, warp, d),
                                   elementBase(pb, s, lane, c, fl));
                    vector::StoreOp::create(pb, piece, stage, ValueRange{at});
                  });
                }
            });
            gpu::BarrierOp::create(sb);
            Value target = k <= kG ? certVecs : ranges;
            int64_t base = (k <= kG ? k - kW : k - kLo) * d;
            loop(sb, tid, idx(sb, d), step, [&](B &lb, Value j) {
              Value at = add(lb, j, idx(lb, base));
              Value total = memref::LoadOp::create(lb, target, ValueRange{at});
              for (int64_t w = 0; w < kWarps; ++w)
                total = join(
                    lb, total,
                    memref::LoadOp::create(
                        lb, stage, ValueRange{add(lb, idx(lb, w * d), j)}));
              memref::StoreOp::create(lb, total, target, ValueRange{at});
            });
            gpu::BarrierOp::create(sb);
          }
          return SmallVector<Value>{next};
        });

    if (withCertificate) {
      // The CPU's certified combine reads (KV head, split, query head)
      // slots: maximum, sum, accumulator, the eight key terms and W, U, G;
      // and per (KV head, split) the value ranges, which every block of
      // the split computes alike and the first writes.
      SmallVector<Value> views =
          certifiedPartials(b, partials, h, splits, group);
      Value slotAt = add(b, mul(b, split, group), chunk);
      loop(b, tid, idx(b, d), step, [&](B &lb, Value j) {
        memref::StoreOp::create(
            lb, memref::LoadOp::create(lb, accs, ValueRange{j}), views[2],
            ValueRange{add(lb, mul(lb, slotAt, d), j)});
      });
      loop(b, tid, idx(b, 3 * d), step, [&](B &lb, Value k) {
        memref::StoreOp::create(
            lb, memref::LoadOp::create(lb, certVecs, ValueRange{k}), views[4],
            ValueRange{add(lb, mul(lb, slotAt, 3 * d), k)});
      });
      ifThen(b, cmp(b, arith::CmpIPredicate::eq, chunk, zero), [&](B &cb) {
        loop(cb, tid, idx(cb, 3 * d), step, [&](B &lb, Value k) {
          memref::StoreOp::create(
              lb, memref::LoadOp::create(lb, ranges, ValueRange{k}), views[5],
              ValueRange{add(lb, mul(lb, split, 3 * d), k)});
        });
      });
      ifThen(b, cmp(b, arith::CmpIPredicate::eq, tid, zero), [&](B &wb) {
        memref::StoreOp::create(
            wb, memref::LoadOp::create(wb, red, ValueRange{idx(wb, kWarps)}),
            views[0], ValueRange{slotAt});
        memref::StoreOp::create(
            wb,
            memref::LoadOp::create(wb, red, ValueRange{idx(wb, kWarps + 1)}),
            views[1], ValueRange{slotAt});
        for (int k = 0; k < 8; ++k) {
          bool isMax = k == 3 || k == 6 || k == 7;
          Value v =
              memref::LoadOp::create(wb, keyTerms, ValueRange{idx(wb, k)});
          for (int64_t w = 1; w < kWarps; ++w) {
            Value other = memref::LoadOp::create(
                wb, keyTerms, ValueRange{idx(wb, w * 8 + k)});
            v = isMax ? Value(arith::MaximumFOp::create(wb, v, other))
                      : Value(arith::AddFOp::create(wb, v, other));
          }
          memref::StoreOp::create(
              wb, v, views[3],
              ValueRange{add(wb, mul(wb, slotAt, 8), idx(wb, k))});
        }
      });
      gpu::ReturnOp::create(b);
      return kernel;
    }
    // The split's partials of each query head of the chunk.
    loop(b, tid, idx(b, GC * d), step, [&](B &lb, Value at) {
      Value i = arith::DivUIOp::create(lb, at, idx(lb, d));
      Value j = arith::RemUIOp::create(lb, at, idx(lb, d));
      ifThen(lb, lt(lb, i, count), [&](B &wb) {
        Value slotAt = add(wb, mul(wb, queryHead(wb, i), splits), split);
        memref::StoreOp::create(
            wb, memref::LoadOp::create(wb, accs, ValueRange{at}), partAcc,
            ValueRange{add(wb, mul(wb, slotAt, d), j)});
      });
    });
    ifThen(b, lt(b, tid, count), [&](B &wb) {
      Value slotAt = add(wb, mul(wb, queryHead(wb, tid), splits), split);
      memref::StoreOp::create(
          wb,
          memref::LoadOp::create(
              wb, red, ValueRange{add(wb, idx(wb, kWarps * GC), tid)}),
          partMax, ValueRange{slotAt});
      memref::StoreOp::create(
          wb,
          memref::LoadOp::create(
              wb, red, ValueRange{add(wb, idx(wb, kWarps * GC + GC), tid)}),
          partSum, ValueRange{slotAt});
    });
    gpu::ReturnOp::create(b);
  }
  return kernel;
}

void GPUEmitter::emitAttendKernels() {
  const int64_t d = g.headDim;
  const int64_t threads = target.getBlockThreads();
  Type element = cache.getElementType();
  MemRefType heads =
      MemRefType::get({ShapedType::kDynamic, ShapedType::kDynamic}, element);
  Location loc = module.getLoc();
  splitKernel = emitSplitKernel(/*withCertificate=*/false);
  if (certified)
    certifiedSplitKernel = emitSplitKernel(/*withCertificate=*/true);

  // P_attend_combine(output, splits, partMax, partSum, partAcc), one block
  // per query head: M = max_s m_s, L = sum_s l_s e^(m_s - M),
  // out = sum_s acc_s e^(m_s - M) / L, the splits in order.
  combineKernel = createKernel(prefix + "_attend_combine",
                               {heads, index(), floats(), floats(), floats()});
  {
    Block &entry = combineKernel.getBody().front();
    B b(loc, OpBuilder::atBlockEnd(&entry));
    ValueRange args = combineKernel.getArguments();
    Value output = args[0], splits = args[1], partMax = args[2],
          partSum = args[3], partAcc = args[4];
    Value zero = idx(b, 0), one = idx(b, 1);
    Value tid = gpu::ThreadIdOp::create(b, gpu::Dimension::x);
    Value q = gpu::BlockIdOp::create(b, gpu::Dimension::x);
    Value base = mul(b, q, splits);
    Value negInf = fconst(b, -std::numeric_limits<float>::infinity());
    auto maxLoop = scf::ForOp::create(
        b, zero, splits, one, ValueRange{negInf},
        [&](OpBuilder &n, Location l, Value s, ValueRange m) {
          B sb(l, n);
          Value v =
              memref::LoadOp::create(sb, partMax, ValueRange{add(sb, base, s)});
          scf::YieldOp::create(
              sb, ValueRange{arith::MaximumFOp::create(sb, m[0], v)});
        });
    Value total = maxLoop.getResult(0);
    loop(b, tid, idx(b, d), idx(b, threads), [&](B &jb, Value j) {
      auto sums = scf::ForOp::create(
          jb, zero, splits, one, ValueRange{fconst(jb, 0.0f), fconst(jb, 0.0f)},
          [&](OpBuilder &n, Location l, Value s, ValueRange acc) {
            B sb(l, n);
            Value at = add(sb, base, s);
            Value weight = scalarExp(
                sb, arith::SubFOp::create(
                        sb, memref::LoadOp::create(sb, partMax, ValueRange{at}),
                        total));
            Value sum = arith::AddFOp::create(
                sb, acc[0],
                arith::MulFOp::create(
                    sb, weight,
                    memref::LoadOp::create(sb, partSum, ValueRange{at})));
            Value part = memref::LoadOp::create(
                sb, partAcc, ValueRange{add(sb, mul(sb, at, d), j)});
            Value vec = math::FmaOp::create(sb, weight, part, acc[1]);
            scf::YieldOp::create(sb, ValueRange{sum, vec});
          });
      Value out =
          arith::DivFOp::create(jb, sums.getResult(1), sums.getResult(0));
      if (!element.isF32())
        out = arith::TruncFOp::create(jb, element, out);
      memref::StoreOp::create(jb, out, output, ValueRange{q, j});
    });
    gpu::ReturnOp::create(b);
  }
}

void GPUEmitter::emitSimpleKernels(const Emitter::DeviceFunctions &device) {
  Location loc = module.getLoc();
  MemRefType status = MemRefType::get({1}, i32());
  // A kernel whose first thread calls `callee` with the kernel's arguments
  // (the last is the status word) and stores its status.
  auto single = [&](StringRef name, func::FuncOp callee) {
    SmallVector<Type> inputs(callee.getFunctionType().getInputs());
    inputs.push_back(status);
    gpu::GPUFuncOp kernel = createKernel(name, inputs);
    Block &entry = kernel.getBody().front();
    B b(loc, OpBuilder::atBlockEnd(&entry));
    Value tid = gpu::ThreadIdOp::create(b, gpu::Dimension::x);
    Value bid = gpu::BlockIdOp::create(b, gpu::Dimension::x);
    Value first = andI(b, cmp(b, arith::CmpIPredicate::eq, tid, idx(b, 0)),
                       cmp(b, arith::CmpIPredicate::eq, bid, idx(b, 0)));
    ifThen(b, first, [&](B &tb) {
      ValueRange args = kernel.getArguments();
      Value st =
          func::CallOp::create(tb, callee, args.drop_back()).getResult(0);
      memref::StoreOp::create(tb, st, args.back(), ValueRange{idx(tb, 0)});
    });
    gpu::ReturnOp::create(b);
    return kernel;
  };
  initKernel = single(prefix + "_init_kernel", device.init);
  loadKernel = single(prefix + "_load_kernel", device.loadImpl);

  // P_append's kernel: one block, a thread per stream (K or V of a KV
  // head; each thread takes every appendThreads()-th stream when there are
  // more), each with two scratch rows of its own in `scratch`. The entry
  // checks and the dry run of every stream first; after a barrier the
  // first thread chooses the status the CPU's order gives (the failure of
  // lowest (token, stream) rank); when it is Ok every thread stores its
  // streams, and after another barrier the first thread writes the fill
  // count and the status.
  {
    MemRefType bytes =
        MemRefType::get({ShapedType::kDynamic}, IntegerType::get(context, 8));
    MemRefType statuses = MemRefType::get({ShapedType::kDynamic}, i32());
    MemRefType ranks = MemRefType::get({ShapedType::kDynamic}, i64());
    FunctionType checkType = func::FuncOp(device.appendCheck).getFunctionType();
    // (arena, layer, keys, values, position, scratch, statuses, ranks,
    //  status)
    SmallVector<Type> inputs(checkType.getInputs().take_front(5));
    inputs.append({bytes, statuses, ranks, status});
    appendKernel = createKernel(prefix + "_append_kernel", inputs);
    Block &entry = appendKernel.getBody().front();
    B b(loc, OpBuilder::atBlockEnd(&entry));
    ValueRange args = appendKernel.getArguments();
    Value arena = args[0], layer = args[1], keys = args[2], values = args[3],
          position = args[4], scratch = args[5], statusOf = args[6],
          rankOf = args[7], word = args[8];
    Value tid = gpu::ThreadIdOp::create(b, gpu::Dimension::x);
    Value zero = idx(b, 0), threads = idx(b, appendThreads());
    int64_t rowFloats = deviceEmitter->getAppendScratchFloats();
    Value row = memref::ViewOp::create(b, floats(), scratch,
                                       mul(b, tid, 2 * rowFloats * 4),
                                       ValueRange{idx(b, rowFloats)});
    Value boundRow = memref::ViewOp::create(
        b, floats(), scratch,
        add(b, mul(b, tid, 2 * rowFloats * 4), idx(b, rowFloats * 4)),
        ValueRange{idx(b, rowFloats)});
    Value okStatus = Emitter::status(b, CacheStatus::Ok);
    Value isFirst = cmp(b, arith::CmpIPredicate::eq, tid, zero);
    auto clearRank = [&](B &cb) {
      memref::StoreOp::create(cb, arith::ConstantIntOp::create(cb, 0, 64),
                              rankOf, ValueRange{tid});
    };
    // The status of lowest rank among the threads' failures, or Ok.
    auto choose = [&](B &cb) -> Value {
      auto loop = scf::ForOp::create(
          cb, zero, threads, idx(cb, 1),
          ValueRange{okStatus,
                     arith::ConstantIntOp::create(
                         cb, std::numeric_limits<int64_t>::max(), 64)},
          [&](OpBuilder &n, Location l, Value j, ValueRange acc) {
            B lb(l, n);
            Value st = memref::LoadOp::create(lb, statusOf, ValueRange{j});
            Value rank = memref::LoadOp::create(lb, rankOf, ValueRange{j});
            Value take =
                andI(lb, cmp(lb, arith::CmpIPredicate::ne, st, okStatus),
                     cmp(lb, arith::CmpIPredicate::slt, rank, acc[1]));
            scf::YieldOp::create(
                lb,
                ValueRange{arith::SelectOp::create(lb, take, st, acc[0]),
                           arith::SelectOp::create(lb, take, rank, acc[1])});
          });
      return loop.getResult(0);
    };
    clearRank(b);
    Value checked =
        func::CallOp::create(b, device.appendCheck,
                             ValueRange{arena, layer, keys, values, position,
                                        row, tid, threads, rankOf, tid})
            .getResult(0);
    memref::StoreOp::create(b, checked, statusOf, ValueRange{tid});
    gpu::BarrierOp::create(b);
    ifThen(b, isFirst, [&](B &tb) {
      memref::StoreOp::create(tb, choose(tb), word, ValueRange{idx(tb, 0)});
    });
    gpu::BarrierOp::create(b);
    Value verdict = memref::LoadOp::create(b, word, ValueRange{idx(b, 0)});
    Value ok = cmp(b, arith::CmpIPredicate::eq, verdict, okStatus);
    // Every thread reads the verdict before the first thread rewrites it.
    gpu::BarrierOp::create(b);
    ifThen(b, ok, [&](B &tb) {
      clearRank(tb);
      Value stored = func::CallOp::create(tb, device.appendStore,
                                          ValueRange{arena, layer, keys, values,
                                                     position, row, boundRow,
                                                     tid, threads, rankOf, tid})
                         .getResult(0);
      memref::StoreOp::create(tb, stored, statusOf, ValueRange{tid});
    });
    gpu::BarrierOp::create(b);
    ifThen(b, andI(b, isFirst, ok), [&](B &tb) {
      Value count = memref::DimOp::create(tb, keys, 0);
      memref::StoreOp::create(
          tb, arith::IndexCastOp::create(tb, i64(), add(tb, position, count)),
          deviceEmitter->fillCounts(tb, arena), ValueRange{layer});
      memref::StoreOp::create(tb, choose(tb), word, ValueRange{idx(tb, 0)});
    });
    gpu::ReturnOp::create(b);
  }
}

SmallVector<Value> GPUEmitter::certifiedPartialFloats(B &b, Value splits,
                                                      Value group) {
  const int64_t d = g.headDim;
  Value slots = mul(b, splits, group);
  return {slots,
          slots,
          mul(b, slots, d),
          mul(b, slots, 8),
          mul(b, slots, 3 * d),
          mul(b, splits, 3 * d)};
}

Value GPUEmitter::certifiedPartialBytes(B &b, Value splits, Value group) {
  Value bytes = idx(b, 0);
  for (Value n : certifiedPartialFloats(b, splits, group))
    bytes = add(b, bytes, deviceEmitter->scratchBytes(b, n));
  return bytes;
}

SmallVector<Value> GPUEmitter::certifiedPartials(B &b, Value partials, Value h,
                                                 Value splits, Value group) {
  Value offset = mul(b, h, certifiedPartialBytes(b, splits, group));
  SmallVector<Value> views;
  for (Value n : certifiedPartialFloats(b, splits, group)) {
    views.push_back(
        memref::ViewOp::create(b, floats(), partials, offset, ValueRange{n}));
    offset = add(b, offset, deviceEmitter->scratchBytes(b, n));
  }
  return views;
}

void GPUEmitter::emitCertifiedCombineKernel() {
  const int64_t d = g.headDim, threads = target.getBlockThreads();
  Location loc = module.getLoc();
  Type element = cache.getElementType();
  MemRefType bytes =
      MemRefType::get({ShapedType::kDynamic}, IntegerType::get(context, 8));
  MemRefType heads =
      MemRefType::get({ShapedType::kDynamic, ShapedType::kDynamic}, element);
  // P_attend_combine_certified(partials, splits, group, length, output,
  // bounds), a block per (KV head, query head of its group), a thread per
  // channel: the CPU's certified combine (the splits in place of its tiles)
  // channel by channel, the same arithmetic per channel, the bound the
  // largest over the channels (shuffles, then the warps' maxima in shared
  // memory).
  certifiedCombineKernel = createKernel(
      prefix + "_attend_combine_certified",
      {bytes, index(), index(), index(), heads, floats()}, {shared(kWarps)});
  Block &entry = certifiedCombineKernel.getBody().front();
  B b(loc, OpBuilder::atBlockEnd(&entry));
  ValueRange args = certifiedCombineKernel.getArguments();
  Value splits = args[1], group = args[2], length = args[3], output = args[4],
        bounds = args[5];
  Value warpMaxima = certifiedCombineKernel.getWorkgroupAttributions()[0];
  Value h = gpu::BlockIdOp::create(b, gpu::Dimension::x);
  Value i = gpu::BlockIdOp::create(b, gpu::Dimension::y);
  Value tid = gpu::ThreadIdOp::create(b, gpu::Dimension::x);
  Value zero = idx(b, 0), one = idx(b, 1);
  Value row = add(b, mul(b, h, group), i);
  SmallVector<Value> views = certifiedPartials(b, args[0], h, splits, group);
  Value partMax = views[0], partSum = views[1], partAcc = views[2];
  Emitter::CertificatePartials parts{partMax, partSum, views[3], views[4],
                                     views[5]};
  auto slotOf = [&](B &sb, Value s) { return add(sb, mul(sb, s, group), i); };
  Value negInf = fconst(b, -std::numeric_limits<float>::infinity());
  Value fzero = fconst(b, 0.0f);
  // M, and L = sum_s l_s e^(m_s - M), as the CPU's combine forms them.
  auto maxLoop = scf::ForOp::create(
      b, zero, splits, one, ValueRange{negInf},
      [&](OpBuilder &n, Location l, Value s, ValueRange m) {
        B sb(l, n);
        Value v =
            memref::LoadOp::create(sb, partMax, ValueRange{slotOf(sb, s)});
        scf::YieldOp::create(
            sb, ValueRange{arith::MaximumFOp::create(sb, m[0], v)});
      });
  Value total = maxLoop.getResult(0);
  auto weightOf = [&](B &sb, Value at) {
    return scalarExp(
        sb,
        arith::SubFOp::create(
            sb, memref::LoadOp::create(sb, partMax, ValueRange{at}), total));
  };
  auto sumLoop = scf::ForOp::create(
      b, zero, splits, one, ValueRange{fzero},
      [&](OpBuilder &n, Location l, Value s, ValueRange acc) {
        B sb(l, n);
        Value at = slotOf(sb, s);
        Value sum = arith::AddFOp::create(
            sb, acc[0],
            arith::MulFOp::create(
                sb, weightOf(sb, at),
                memref::LoadOp::create(sb, partSum, ValueRange{at})));
        scf::YieldOp::create(sb, ValueRange{sum});
      });
  Value sum = sumLoop.getResult(0);
  VectorType single = VectorType::get({1}, f32());
  auto channels = scf::ForOp::create(
      b, tid, idx(b, d), idx(b, threads), ValueRange{fzero},
      [&](OpBuilder &n, Location l, Value j, ValueRange largest) {
        B cb(l, n);
        auto accLoop = scf::ForOp::create(
            cb, zero, splits, one, ValueRange{fzero},
            [&](OpBuilder &n2, Location l2, Value s, ValueRange acc) {
              B sb(l2, n2);
              Value at = slotOf(sb, s);
              Value part = memref::LoadOp::create(
                  sb, partAcc, ValueRange{add(sb, mul(sb, at, d), j)});
              scf::YieldOp::create(
                  sb, ValueRange{math::FmaOp::create(sb, weightOf(sb, at), part,
                                                     acc[0])});
            });
        Value out = arith::DivFOp::create(cb, accLoop.getResult(0), sum);
        Value bound = deviceEmitter->combineCertificate(
            cb, parts, i, group, splits, total,
            vector::BroadcastOp::create(cb, single, out), length, j, 1);
        if (!element.isF32())
          out = arith::TruncFOp::create(cb, element, out);
        memref::StoreOp::create(cb, out, output, ValueRange{row, j});
        scf::YieldOp::create(
            cb, ValueRange{arith::MaximumFOp::create(cb, largest[0], bound)});
      });
  Value largest = channels.getResult(0);
  for (int64_t off = 16; off >= 1; off /= 2)
    largest =
        arith::MaximumFOp::create(b, largest, shuffleXor(b, largest, off));
  Value lane32 = arith::RemUIOp::create(b, tid, idx(b, 32));
  ifThen(b, cmp(b, arith::CmpIPredicate::eq, lane32, zero), [&](B &wb) {
    memref::StoreOp::create(
        wb, largest, warpMaxima,
        ValueRange{arith::DivUIOp::create(wb, tid, idx(wb, 32))});
  });
  gpu::BarrierOp::create(b);
  ifThen(b, cmp(b, arith::CmpIPredicate::eq, tid, zero), [&](B &wb) {
    Value v = memref::LoadOp::create(wb, warpMaxima, ValueRange{zero});
    for (int64_t w = 1; w < kWarps; ++w)
      v = arith::MaximumFOp::create(
          wb, v,
          memref::LoadOp::create(wb, warpMaxima, ValueRange{idx(wb, w)}));
    memref::StoreOp::create(wb, v, bounds, ValueRange{row});
  });
  gpu::ReturnOp::create(b);
}

void GPUEmitter::emitHostFunctions(CacheFunctions &result) {
  Location loc = module.getLoc();
  Type token = gpu::AsyncTokenType::get(context);
  MemRefType arenaType =
      MemRefType::get({ShapedType::kDynamic}, IntegerType::get(context, 8));
  Type element = cache.getElementType();
  MemRefType tokens = MemRefType::get(
      {ShapedType::kDynamic, ShapedType::kDynamic, ShapedType::kDynamic},
      element);
  MemRefType heads =
      MemRefType::get({ShapedType::kDynamic, ShapedType::kDynamic}, element);
  auto create = [&](StringRef name, ArrayRef<Type> inputs,
                    ArrayRef<Type> results) {
    OpBuilder top = OpBuilder::atBlockEnd(module.getBody());
    auto fn = func::FuncOp::create(top, loc, name,
                                   FunctionType::get(context, inputs, results));
    fn->setAttr("llvm.emit_c_interface", UnitAttr::get(context));
    fn.addEntryBlock();
    return fn;
  };
  auto dims = [](B &b, int64_t x, int64_t y, int64_t z) {
    return gpu::KernelDim3{idx(b, x), idx(b, y), idx(b, z)};
  };
  auto deviceAlloc = [&](B &b, Value &t, MemRefType type,
                         ValueRange sizes) -> Value {
    auto alloc = gpu::AllocOp::create(b, type, token, ValueRange{t}, sizes,
                                      ValueRange{}, false);
    t = alloc.getAsyncToken();
    return alloc.getMemref();
  };
  auto deviceFree = [&](B &b, Value &t, Value memref) {
    t = gpu::DeallocOp::create(b, token, ValueRange{t}, memref).getAsyncToken();
  };
  // Launches `kernel` on one thread with `operands` and a status word,
  // waits, and returns the status.
  auto runSingle = [&](B &b, gpu::GPUFuncOp kernel, ValueRange operands,
                       ArrayRef<Value> scratch = {}) -> Value {
    MemRefType word = MemRefType::get({1}, i32());
    Value t = gpu::WaitOp::create(b, token, ValueRange{}).getAsyncToken();
    Value status = deviceAlloc(b, t, word, {});
    SmallVector<Value> args(operands);
    args.push_back(status);
    t = gpu::LaunchFuncOp::create(b, kernel, dims(b, 1, 1, 1), dims(b, 1, 1, 1),
                                  Value(), args, token, ValueRange{t})
            .getAsyncToken();
    Value host = memref::AllocaOp::create(b, word);
    t = gpu::MemcpyOp::create(b, token, ValueRange{t}, host, status)
            .getAsyncToken();
    deviceFree(b, t, status);
    for (Value buffer : scratch)
      deviceFree(b, t, buffer);
    gpu::WaitOp::create(b, Type(), ValueRange{t});
    return memref::LoadOp::create(b, host, ValueRange{idx(b, 0)});
  };

  // P_arena_bytes: the layout's size, on the host.
  {
    func::FuncOp fn = create(prefix + "_arena_bytes", {}, {i64()});
    B b(loc, OpBuilder::atBlockEnd(&fn.front()));
    func::ReturnOp::create(b, ValueRange{arith::ConstantIntOp::create(
                                  b, layout.getTotalBytes(), 64)});
    result.arenaBytes = fn;
  }
  // P_init(arena).
  {
    func::FuncOp fn = create(prefix + "_init", {arenaType}, {i32()});
    B b(loc, OpBuilder::atBlockEnd(&fn.front()));
    func::ReturnOp::create(
        b, ValueRange{runSingle(b, initKernel, fn.getArguments())});
    result.init = fn;
  }
  // P_append(arena, layer, keys, values, position): the threads' scratch
  // rows, statuses and ranks in device memory, then one block of
  // appendThreads() threads.
  {
    func::FuncOp fn =
        create(prefix + "_append",
               {arenaType, index(), tokens, tokens, index()}, {i32()});
    B b(loc, OpBuilder::atBlockEnd(&fn.front()));
    int64_t threads = appendThreads();
    int64_t scratchBytes = 2 * deviceEmitter->getAppendScratchFloats() * 4;
    MemRefType word = MemRefType::get({1}, i32());
    Value t = gpu::WaitOp::create(b, token, ValueRange{}).getAsyncToken();
    Value scratch = deviceAlloc(
        b, t, MemRefType::get({threads * scratchBytes}, b.getI8Type()), {});
    Value statuses = deviceAlloc(b, t, MemRefType::get({threads}, i32()), {});
    Value ranks = deviceAlloc(b, t, MemRefType::get({threads}, i64()), {});
    Value status = deviceAlloc(b, t, word, {});
    SmallVector<Value> args(fn.getArguments());
    args.append(
        {memref::CastOp::create(
             b, MemRefType::get({ShapedType::kDynamic}, b.getI8Type()),
             scratch),
         memref::CastOp::create(
             b, MemRefType::get({ShapedType::kDynamic}, i32()), statuses),
         memref::CastOp::create(
             b, MemRefType::get({ShapedType::kDynamic}, i64()), ranks),
         status});
    t = gpu::LaunchFuncOp::create(b, appendKernel, dims(b, 1, 1, 1),
                                  dims(b, threads, 1, 1), Value(), args, token,
                                  ValueRange{t})
            .getAsyncToken();
    Value host = memref::AllocaOp::create(b, word);
    t = gpu::MemcpyOp::create(b, token, ValueRange{t}, host, status)
            .getAsyncToken();
    for (Value buffer : {scratch, statuses, ranks, status})
      deviceFree(b, t, buffer);
    gpu::WaitOp::create(b, Type(), ValueRange{t});
    func::ReturnOp::create(
        b, ValueRange{memref::LoadOp::create(b, host, ValueRange{idx(b, 0)})});
    result.append = fn;
  }
  // P_load(arena, layer, start, keys, values).
  {
    func::FuncOp fn =
        create(prefix + "_load", {arenaType, index(), index(), tokens, tokens},
               {i32()});
    B b(loc, OpBuilder::atBlockEnd(&fn.front()));
    MemRefType rowType = MemRefType::get({g.headDim}, f32());
    Value t = gpu::WaitOp::create(b, token, ValueRange{}).getAsyncToken();
    Value row = deviceAlloc(b, t, rowType, {});
    gpu::WaitOp::create(b, Type(), ValueRange{t});
    SmallVector<Value> operands(fn.getArguments());
    operands.push_back(memref::CastOp::create(b, floats(), row));
    func::ReturnOp::create(
        b, ValueRange{runSingle(b, loadKernel, operands, {row})});
    result.load = fn;
  }
  // P_attend_certified's kernels: the certified split kernel, a block per
  // (query head, split, KV head), then the certified combine.
  auto emitCertifiedLaunches = [&](B &ab, Value &t, Value arena, Value layer,
                                   Value query, Value softmaxScale,
                                   Value length, Value output, Value bounds,
                                   const Emitter::AttendTiles &tiles,
                                   Value group) {
    MemRefType bytes =
        MemRefType::get({ShapedType::kDynamic}, IntegerType::get(context, 8));
    Value splits = arith::CeilDivUIOp::create(ab, tiles.tiles,
                                              idx(ab, certifiedTilesPerSplit));
    Value partials = deviceAlloc(
        ab, t, bytes,
        {mul(ab, certifiedPartialBytes(ab, splits, group), g.heads)});
    t = gpu::LaunchFuncOp::create(
            ab, certifiedSplitKernel,
            gpu::KernelDim3{group, splits, idx(ab, g.heads)},
            dims(ab, target.getBlockThreads(), 1, 1), Value(),
            ValueRange{arena, layer, query, softmaxScale, group, tiles.tiles,
                       tiles.hasSink, tiles.sinkRows, tiles.aged,
                       tiles.bodyRows, splits, partials},
            token, ValueRange{t})
            .getAsyncToken();
    t = gpu::LaunchFuncOp::create(
            ab, certifiedCombineKernel,
            gpu::KernelDim3{idx(ab, g.heads), group, idx(ab, 1)},
            dims(ab, target.getBlockThreads(), 1, 1), Value(),
            ValueRange{partials, splits, group, length, output, bounds}, token,
            ValueRange{t})
            .getAsyncToken();
    deviceFree(ab, t, partials);
  };
  // P_attend(arena, layer, query, length, output, softmaxScale): the
  // checks of the CPU entry point (the fill count copied from the device),
  // then the split and combine kernels. P_attend_certified(..., bounds):
  // the same checks, then the certified kernels.
  auto emitAttendHost = [&](bool withCertificate) {
    SmallVector<Type> inputs{arenaType, index(), heads, index(), heads, f32()};
    if (withCertificate)
      inputs.push_back(floats());
    func::FuncOp fn =
        create(prefix + (withCertificate ? "_attend_certified" : "_attend"),
               inputs, {i32()});
    B b(loc, OpBuilder::atBlockEnd(&fn.front()));
    ValueRange args = fn.getArguments();
    Value arena = args[0], layer = args[1], query = args[2], length = args[3],
          output = args[4], softmaxScale = args[5];
    Value bounds = withCertificate ? args[6] : Value();
    Emitter &host = *hostEmitter;
    auto readFill = [&](B &rb, Value arenaValue, Value layerValue) -> Value {
      MemRefType fills = MemRefType::get({g.layers}, i64());
      Value view = memref::ViewOp::create(rb, fills, arenaValue, idx(rb, 0),
                                          ValueRange{});
      Value hostFills = memref::AllocaOp::create(rb, fills);
      Value t = gpu::WaitOp::create(rb, token, ValueRange{}).getAsyncToken();
      t = gpu::MemcpyOp::create(rb, token, ValueRange{t}, hostFills, view)
              .getAsyncToken();
      gpu::WaitOp::create(rb, Type(), ValueRange{t});
      return memref::LoadOp::create(rb, hostFills, ValueRange{layerValue});
    };
    Value badShape = host.attendShapeMismatch(b, query, output);
    if (withCertificate)
      badShape = arith::OrIOp::create(b, badShape,
                                      cmp(b, arith::CmpIPredicate::ne,
                                          memref::DimOp::create(b, bounds, 0),
                                          memref::DimOp::create(b, query, 0)));
    Value out = host.guardEntry(
        b, arena, layer, badShape,
        [&](B &gb, Value fill) -> Value {
          Value bad = arith::OrIOp::create(
              gb, cmp(gb, arith::CmpIPredicate::ne, length, fill),
              cmp(gb, arith::CmpIPredicate::eq, length, idx(gb, 0)));
          return Emitter::guard(
              gb,
              arith::XOrIOp::create(gb, bad,
                                    arith::ConstantIntOp::create(gb, 1, 1)),
              Emitter::status(gb, CacheStatus::BadLength), [&](B &ab) {
                Emitter::AttendTiles tiles = host.attendTiles(ab, length);
                Value numQueries = memref::DimOp::create(ab, query, 0);
                Value group =
                    arith::DivUIOp::create(ab, numQueries, idx(ab, g.heads));
                Value t = gpu::WaitOp::create(ab, token, ValueRange{})
                              .getAsyncToken();
                if (withCertificate) {
                  emitCertifiedLaunches(ab, t, arena, layer, query,
                                        softmaxScale, length, output, bounds,
                                        tiles, group);
                  gpu::WaitOp::create(ab, Type(), ValueRange{t});
                  return Emitter::status(ab, CacheStatus::Ok);
                }
                Value chunks = arith::CeilDivUIOp::create(
                    ab, group, idx(ab, headsPerBlock));
                Value splits = arith::CeilDivUIOp::create(
                    ab, tiles.tiles, idx(ab, tilesPerSplit));
                Value slots = mul(ab, numQueries, splits);
                Value partMax = deviceAlloc(ab, t, floats(), {slots});
                Value partSum = deviceAlloc(ab, t, floats(), {slots});
                Value partAcc =
                    deviceAlloc(ab, t, floats(), {mul(ab, slots, g.headDim)});
                gpu::KernelDim3 grid{chunks, splits, idx(ab, g.heads)};
                t = gpu::LaunchFuncOp::create(
                        ab, splitKernel, grid,
                        dims(ab, target.getBlockThreads(), 1, 1), Value(),
                        ValueRange{arena, layer, query, softmaxScale, group,
                                   tiles.tiles, tiles.hasSink, tiles.sinkRows,
                                   tiles.aged, tiles.bodyRows, splits, partMax,
                                   partSum, partAcc},
                        token, ValueRange{t})
                        .getAsyncToken();
                t = gpu::LaunchFuncOp::create(
                        ab, combineKernel,
                        gpu::KernelDim3{numQueries, idx(ab, 1), idx(ab, 1)},
                        dims(ab, target.getBlockThreads(), 1, 1), Value(),
                        ValueRange{output, splits, partMax, partSum, partAcc},
                        token, ValueRange{t})
                        .getAsyncToken();
                for (Value buffer : {partMax, partSum, partAcc})
                  deviceFree(ab, t, buffer);
                gpu::WaitOp::create(ab, Type(), ValueRange{t});
                return Emitter::status(ab, CacheStatus::Ok);
              });
        },
        readFill);
    func::ReturnOp::create(b, ValueRange{out});
    return fn;
  };
  result.attend = emitAttendHost(false);
  if (certified)
    result.attendCertified = emitAttendHost(true);
}

FailureOr<CacheFunctions> GPUEmitter::run() {
  if (failed(checkShapes()))
    return failure();
  module->setAttr(gpu::GPUDialect::getContainerModuleAttrName(),
                  UnitAttr::get(context));
  OpBuilder top = OpBuilder::atBlockEnd(module.getBody());
  deviceModule =
      gpu::GPUModuleOp::create(top, module.getLoc(), prefix + "_device");
  deviceFormats = std::make_unique<FormatCodegen>(deviceModule, target);
  // Device code takes none of the CPU's certified attention: the GPU's is
  // its own kernels (only combineCertificate's arithmetic is shared).
  deviceEmitter = std::make_unique<Emitter>(
      deviceModule, cache, layout, *deviceFormats, dequantizer, prefix, target,
      /*certified=*/false);
  deviceEmitter->certificatePartRows = certifiedTilesPerSplit * tileRows;
  Emitter::DeviceFunctions device;
  if (failed(deviceEmitter->runDevice(device)))
    return failure();
  // Host-side checks use the emitter's helpers (no tables on the host).
  hostEmitter = std::make_unique<Emitter>(module, cache, layout, *deviceFormats,
                                          dequantizer, prefix, target,
                                          /*certified=*/false);
  emitSimpleKernels(device);
  emitAttendKernels();
  if (certified)
    emitCertifiedCombineKernel();
  CacheFunctions result;
  emitHostFunctions(result);
  return result;
}

FailureOr<CacheFunctions> mlir::kvprec::emitGPUCacheFunctions(
    ModuleOp module, CacheType cache, const lay::ArenaLayout &layout,
    an::StorageKind dequantizer, const std::string &prefix,
    const NVPTXStorageTargetInfo &target, bool certified, Operation *user) {
  GPUEmitter emitter(module, cache, layout, dequantizer, prefix, target, user,
                     certified);
  return emitter.run();
}
