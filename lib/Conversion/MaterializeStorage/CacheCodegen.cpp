//===- CacheCodegen.cpp - the C ABI functions of one planned cache --------===//

#include "CacheCodegen.h"
#include "CacheEmitter.h"
#include "FormatCodegen.h"

#include "kvprec/Analysis/SoftFloat.h"
#include "kvprec/Conversion/MaterializeStorage/TargetInfo.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/Dialect/Vector/IR/VectorOps.h"
#include "mlir/IR/ImplicitLocOpBuilder.h"

#include <cmath>
#include <limits>

using namespace mlir;
using namespace mlir::kvprec;
namespace an = ::kvprec::analysis;
namespace lay = ::kvprec::layout;
namespace cf = ::kvprec::certify;

using namespace mlir::kvprec::detail;

void Emitter::emitTables() {
  std::vector<int64_t> items, runs, groups;
  for (int64_t item = 0; item < plan.getNumItems(); ++item) {
    const lay::StreamLayout &s = layout.getStream(item);
    items.insert(items.end(),
                 {s.sink.formatIndex, s.sink.codeOffset, s.sink.scaleOffset,
                  s.sink.zeroOffset, s.window.formatIndex, s.window.codeOffset,
                  s.window.scaleOffset, s.window.zeroOffset, s.stagingOffset,
                  int64_t(runs.size() / kRunColumns), int64_t(s.body.size())});
    for (const lay::Run &run : s.body)
      runs.insert(runs.end(),
                  {run.formatIndex, run.firstPosition, run.rows, run.codeOffset,
                   run.scaleOffset, run.zeroOffset, run.inheritedOffset});
  }
  numRuns = runs.size() / kRunColumns;
  if (runs.empty())
    runs.assign(kRunColumns, 0); // A global needs at least one row.
  for (const an::StorageFormat &format : plan.formats)
    groups.push_back(an::isScaled(format) &&
                             format.granularity == an::Granularity::ChannelGroup
                         ? format.groupSize
                         : 0);
  // Unscaled f32, f16 and bf16 runs, which attention's tile kernels read
  // in place: per format its kind's place in directKinds plus one, else 0.
  std::vector<int64_t> direct;
  for (const an::StorageFormat &format : plan.formats) {
    bool inPlace =
        !an::isScaled(format) && (format.kind == an::StorageKind::F32 ||
                                  format.kind == an::StorageKind::F16 ||
                                  format.kind == an::StorageKind::BF16);
    if (!inPlace) {
      direct.push_back(0);
      continue;
    }
    auto *found = llvm::find(directKinds, format.kind);
    if (found == directKinds.end()) {
      directKinds.push_back(format.kind);
      found = directKinds.end() - 1;
    }
    direct.push_back(found - directKinds.begin() + 1);
  }
  OpBuilder builder = OpBuilder::atBlockBegin(&module->getRegion(0).front());
  auto global = [&](const std::string &name, ArrayRef<int64_t> values) {
    auto type = MemRefType::get({int64_t(values.size())}, i64());
    auto tensor = RankedTensorType::get({int64_t(values.size())}, i64());
    memref::GlobalOp::create(
        builder, module->getLoc(), builder.getStringAttr(name),
        builder.getStringAttr("private"), TypeAttr::get(type),
        DenseElementsAttr::get(tensor, values), builder.getUnitAttr(),
        IntegerAttr());
  };
  itemsName = prefix + "_streams";
  runsName = prefix + "_runs";
  groupsName = prefix + "_channel_groups";
  global(itemsName, items);
  global(runsName, runs);
  global(groupsName, groups);
  directName = prefix + "_direct";
  global(directName, direct);
}

void Emitter::forHeadBlocks(
    ImplicitLocOpBuilder &b, Value heads, int64_t largest,
    function_ref<void(ImplicitLocOpBuilder &, Value, int64_t)> block) {
  Value full = mul(b, arith::DivUIOp::create(b, heads, idx(b, largest)),
                   idx(b, largest));
  scf::ForOp::create(b, idx(b, 0), full, idx(b, largest), ValueRange{},
                     [&](OpBuilder &n, Location l, Value h0, ValueRange) {
                       ImplicitLocOpBuilder hb(l, n);
                       block(hb, h0, largest);
                       scf::YieldOp::create(hb);
                     });
  Value done = full;
  Value rest = sub(b, heads, full);
  for (int64_t size = largest / 2; size >= 1; size /= 2) {
    Value taken = arith::AndIOp::create(b, rest, idx(b, size));
    Value h0 = done;
    scf::IfOp::create(b, cmp(b, arith::CmpIPredicate::ne, taken, idx(b, 0)),
                      [&](OpBuilder &n, Location l) {
                        ImplicitLocOpBuilder hb(l, n);
                        block(hb, h0, size);
                        scf::YieldOp::create(hb);
                      });
    done = add(b, done, taken);
  }
}

Value Emitter::table(ImplicitLocOpBuilder &b, StringRef name, Value rowIndex,
                     int64_t column, int64_t columns) {
  int64_t size = name == itemsName ? plan.getNumItems() * kItemColumns
                 : name == runsName
                     ? std::max<int64_t>(numRuns, 1) * kRunColumns
                     : int64_t(plan.formats.size());
  Value global = memref::GetGlobalOp::create(
      b, MemRefType::get({size}, i64()), FlatSymbolRefAttr::get(context, name));
  Value at = add(b, mul(b, rowIndex, idx(b, columns)), idx(b, column));
  Value value = memref::LoadOp::create(b, global, ValueRange{at});
  return arith::IndexCastOp::create(b, indexType(), value);
}

Value Emitter::groupSizeOf(ImplicitLocOpBuilder &b, Value format) {
  return table(b, groupsName, format, 0, 1);
}

void Emitter::emitDispatchers() {
  int64_t numFormats = plan.formats.size();
  // Kernels first, so they come before the dispatchers in the module.
  auto kernelsOf =
      [&](const an::StorageFormat &format) -> const FormatKernels & {
    return formats.get(format, g.headDim, dequantizer, needsBounds());
  };
  for (const an::StorageFormat &format : plan.formats)
    (void)kernelsOf(format);
  SmallVector<int64_t> cases;
  for (int64_t f = 0; f < numFormats; ++f)
    cases.push_back(f);
  // Each dispatcher takes (format, <the kernel's arguments>) and calls the
  // format's kernel in its case; the default case is unreachable (formats
  // come from the tables) and does nothing.
  auto makeDispatcher = [&](StringRef name,
                            func::FuncOp FormatKernels::*member) {
    func::FuncOp first = (kernelsOf(plan.formats[0]).*member);
    SmallVector<Type> inputs{indexType()};
    llvm::append_range(inputs, first.getFunctionType().getInputs());
    TypeRange results = first.getFunctionType().getResults();
    func::FuncOp fn = createFunction(prefix + "_" + name.str(), inputs, results,
                                     /*isPublic=*/false);
    Block &entry = fn.front();
    ImplicitLocOpBuilder b(fn.getLoc(), OpBuilder::atBlockEnd(&entry));
    auto switchOp = scf::IndexSwitchOp::create(b, results, entry.getArgument(0),
                                               cases, numFormats);
    ValueRange forwarded = entry.getArguments().drop_front();
    for (int64_t f = 0; f < numFormats; ++f) {
      Block &block = switchOp.getCaseRegions()[f].emplaceBlock();
      ImplicitLocOpBuilder cb(fn.getLoc(), OpBuilder::atBlockEnd(&block));
      func::FuncOp kernel = (kernelsOf(plan.formats[f]).*member);
      auto call = func::CallOp::create(cb, kernel, forwarded);
      scf::YieldOp::create(cb, call.getResults());
    }
    Block &fallback = switchOp.getDefaultRegion().emplaceBlock();
    ImplicitLocOpBuilder db(fn.getLoc(), OpBuilder::atBlockEnd(&fallback));
    SmallVector<Value> defaults;
    for (Type type : results)
      defaults.push_back(
          arith::ConstantIntOp::create(db, int64_t(CacheStatus::BadArena),
                                       cast<IntegerType>(type).getWidth()));
    scf::YieldOp::create(db, defaults);
    func::ReturnOp::create(b, switchOp.getResults());
    return fn;
  };
  storeAny = makeDispatcher("store", &FormatKernels::store);
  loadAny = makeDispatcher("load_rows", &FormatKernels::load);
  loadKeysAny = makeDispatcher("load_keys", &FormatKernels::loadKeys);
  logitsAny = makeDispatcher("logits", &FormatKernels::logits);
  accumulateAny = makeDispatcher("accumulate", &FormatKernels::accumulate);
  if (needsBounds())
    boundsAny = makeDispatcher("load_bounds", &FormatKernels::bounds);
}

Value Emitter::callStore(ImplicitLocOpBuilder &b, Value arena,
                         const Place &place, Value src, Value srcOff,
                         Value rows, bool dry) {
  Value dryFlag = arith::ConstantIntOp::create(b, dry ? 1 : 0, 1);
  return func::CallOp::create(b, storeAny,
                              ValueRange{place.format, arena, place.code,
                                         place.scale, place.zero, src, srcOff,
                                         place.row, rows, dryFlag})
      .getResult(0);
}

void Emitter::callLoad(ImplicitLocOpBuilder &b, Value arena, const Place &place,
                       Value rows, Value dst, Value dstOff) {
  func::CallOp::create(b, loadAny,
                       ValueRange{place.format, arena, place.code, place.scale,
                                  place.zero, place.row, rows, dst, dstOff});
}

void Emitter::callLoadAndBounds(ImplicitLocOpBuilder &b, Value arena,
                                const Place &place, Value rows, Value dst,
                                Value bounds) {
  func::CallOp::create(b, boundsAny,
                       ValueRange{place.format, arena, place.code, place.scale,
                                  place.zero, place.row, rows, dst, idx(b, 0),
                                  bounds});
}

Emitter::RowSource Emitter::openRowSource(ImplicitLocOpBuilder &b,
                                          an::StorageKind kind,
                                          ValueRange args) {
  RowSource source;
  source.kind = kind;
  if (args.size() == 1) {
    source.values = args[0];
    return source;
  }
  // (arena, code, row0): the run's codes from byte `code`, row0 its first.
  Type element = kind == an::StorageKind::F32
                     ? f32()
                     : Type(IntegerType::get(context, 16));
  Value size = memref::DimOp::create(b, args[0], 0);
  Value elements = arith::DivUIOp::create(b, sub(b, size, args[1]),
                                          idx(b, source.elementBytes()));
  source.values = memref::ViewOp::create(
      b, MemRefType::get({ShapedType::kDynamic}, element), args[0], args[1],
      ValueRange{elements});
  source.firstRow = args[2];
  return source;
}

Value Emitter::loadPiece(ImplicitLocOpBuilder &b, const RowSource &source,
                         Value r, Value lane, int64_t width) {
  const int64_t d = g.headDim;
  Value row = source.firstRow ? add(b, source.firstRow, r) : r;
  Value at = add(b, mul(b, row, idx(b, d)), lane);
  if (source.kind == an::StorageKind::F32)
    return vector::LoadOp::create(b, VectorType::get({width}, f32()),
                                  source.values, ValueRange{at});
  // f16 and bf16 widen exactly with the native conversion.
  Type half = source.kind == an::StorageKind::F16
                  ? Type(Float16Type::get(context))
                  : Type(BFloat16Type::get(context));
  Value raw = vector::LoadOp::create(
      b, VectorType::get({width}, IntegerType::get(context, 16)), source.values,
      ValueRange{at});
  return arith::ExtFOp::create(
      b, VectorType::get({width}, f32()),
      Value(arith::BitcastOp::create(b, VectorType::get({width}, half), raw)));
}

void Emitter::prefetchPiece(ImplicitLocOpBuilder &b, const RowSource &source,
                            Value r, Value lane, int64_t width) {
  const int64_t distance = target.getPrefetchDistance();
  if (!source.firstRow || !distance)
    return;
  const int64_t d = g.headDim;
  const int64_t bytes = source.elementBytes();
  const int64_t ahead = llvm::divideCeil(distance, d * bytes);
  Value last = sub(b, memref::DimOp::create(b, source.values, 0), idx(b, 1));
  Value row = add(b, add(b, source.firstRow, r), idx(b, ahead));
  Value first = add(b, mul(b, row, idx(b, d)), lane);
  for (int64_t offset = 0; offset < width * bytes; offset += 64) {
    Value at =
        arith::MinUIOp::create(b, add(b, first, idx(b, offset / bytes)), last);
    memref::PrefetchOp::create(b, source.values, ValueRange{at},
                               /*isWrite=*/false, /*localityHint=*/2,
                               /*isDataCache=*/true);
  }
}

void Emitter::emitTileKernels() {
  const int64_t d = g.headDim;
  VectorType vt = VectorType::get({d}, f32());
  // logits(tile, rows, q, heads, scale, rowScales, out, outBase, stride):
  // out[outBase + h * stride + r] = scale * rowScales[r] * (q_h . tile_r),
  // the tile holding what the formats' load_keys give (code values where
  // the scale folds); abs_logits(tile, rows, q, heads, scale, out, outBase,
  // stride) the same with scale * (q_h . |tile_r|) (the caller passes |q|),
  // for the certificate. A tile's logits can so come in parts of its rows.
  // The direct variants (directKernels) take (arena, code, row0) of an
  // unscaled run in place of the tile, and no rowScales (all 1).
  SmallVector<Type> tileArgs{floats()},
      runArgs{arenaType(), indexType(), indexType()};
  auto emitLogits = [&](StringRef name, bool absolute, an::StorageKind source,
                        bool direct) {
    SmallVector<Type> inputs(direct ? runArgs : tileArgs);
    inputs.append({indexType(), floats(), indexType(), f32()});
    if (!absolute && !direct)
      inputs.push_back(floats());
    inputs.append({floats(), indexType(), indexType()});
    func::FuncOp fn = createFunction(name, inputs, {}, false);
    Block &entry = fn.front();
    ImplicitLocOpBuilder b(fn.getLoc(), OpBuilder::atBlockEnd(&entry));
    auto args = entry.getArguments();
    const size_t n = direct ? 3 : 1;
    RowSource rowsOf = openRowSource(b, source, args.take_front(n));
    Value rows = args[n], q = args[n + 1], heads = args[n + 2],
          scale = args[n + 3],
          rowScales = absolute || direct ? Value() : args[n + 4],
          out = args[args.size() - 3], outBase = args[args.size() - 2],
          stride = args.back();
    auto key = [&](ImplicitLocOpBuilder &rb, Value r) -> Value {
      Value row = loadPiece(rb, rowsOf, r, idx(rb, 0), d);
      return absolute ? Value(math::AbsFOp::create(rb, row)) : row;
    };
    // Rows [from, rows) of head h one at a time (a per-row tree).
    auto singleRows = [&](ImplicitLocOpBuilder &hb, Value h, Value from) {
      Value qh =
          vector::LoadOp::create(hb, vt, q, ValueRange{mul(hb, h, idx(hb, d))});
      Value base = add(hb, outBase, mul(hb, h, stride));
      scf::ForOp::create(
          hb, from, rows, idx(hb, 1), ValueRange{},
          [&](OpBuilder &n2, Location l2, Value r, ValueRange) {
            ImplicitLocOpBuilder rb(l2, n2);
            Value dot = emitLaneSum(
                rb, emitChunkDot(rb, qh, key(rb, r), getLaneChunk(d)));
            if (rowScales)
              dot = arith::MulFOp::create(
                  rb, dot,
                  memref::LoadOp::create(rb, rowScales, ValueRange{r}));
            memref::StoreOp::create(rb, arith::MulFOp::create(rb, dot, scale),
                                    out, ValueRange{add(rb, base, r)});
            scf::YieldOp::create(rb);
          });
    };
    const int64_t w = target.getF32Lanes();
    if (d % w != 0 || (w & (w - 1)) != 0 || w < 2) {
      scf::ForOp::create(b, idx(b, 0), heads, idx(b, 1), ValueRange{},
                         [&](OpBuilder &n, Location l, Value h, ValueRange) {
                           ImplicitLocOpBuilder hb(l, n);
                           singleRows(hb, h, idx(hb, 0));
                           scf::YieldOp::create(hb);
                         });
      func::ReturnOp::create(b);
      return fn;
    }
    // Heads [h0, h0 + H) together: groups of R = w / H rows, each w-lane
    // piece of a row loaded once for the H heads and each piece of a query
    // once for the R rows (an L1 load per fused multiply-add otherwise
    // bounds the loop), the H x R lane-wise partials (per (head, row) the
    // same chain as emitChunkDot's) reduced by one transposed tree
    // (emitRowSums) to lane h * R + i. The leftover rows one at a time.
    VectorType lanes = VectorType::get({w}, f32());
    auto headBlock = [&](ImplicitLocOpBuilder &hb, Value h0, int64_t heads) {
      const int64_t rowsPer = w / heads;
      Value grouped =
          mul(hb, arith::DivUIOp::create(hb, rows, idx(hb, rowsPer)),
              idx(hb, rowsPer));
      scf::ForOp::create(
          hb, idx(hb, 0), grouped, idx(hb, rowsPer), ValueRange{},
          [&](OpBuilder &n2, Location l2, Value r0, ValueRange) {
            ImplicitLocOpBuilder rb(l2, n2);
            SmallVector<Value> partials(heads * rowsPer);
            for (int64_t j = 0; j < d; j += w) {
              SmallVector<Value> qs;
              for (int64_t k = 0; k < heads; ++k)
                qs.push_back(vector::LoadOp::create(
                    rb, lanes, q,
                    ValueRange{add(rb,
                                   mul(rb, add(rb, h0, idx(rb, k)), idx(rb, d)),
                                   idx(rb, j))}));
              for (int64_t i = 0; i < rowsPer; ++i) {
                Value row = add(rb, r0, idx(rb, i));
                // One prefetch per line of a run read in place.
                const int64_t bytes = rowsOf.elementBytes();
                if (j * bytes % 64 == 0)
                  prefetchPiece(rb, rowsOf, row, idx(rb, j),
                                std::max<int64_t>(1, 64 / bytes));
                Value piece = loadPiece(rb, rowsOf, row, idx(rb, j), w);
                if (absolute)
                  piece = math::AbsFOp::create(rb, piece);
                for (int64_t k = 0; k < heads; ++k) {
                  Value &partial = partials[k * rowsPer + i];
                  partial = j == 0
                                ? Value(arith::MulFOp::create(rb, qs[k], piece))
                                : Value(vector::FMAOp::create(rb, qs[k], piece,
                                                              partial));
                }
              }
            }
            Value dots = emitRowSums(rb, partials);
            if (rowScales) {
              Value scales =
                  vector::LoadOp::create(rb, VectorType::get({rowsPer}, f32()),
                                         rowScales, ValueRange{r0});
              SmallVector<int64_t> mask;
              for (int64_t l = 0; l < w; ++l)
                mask.push_back(l % rowsPer);
              dots = arith::MulFOp::create(
                  rb, dots,
                  vector::ShuffleOp::create(rb, scales, scales, mask));
            }
            dots = arith::MulFOp::create(
                rb, dots, vector::BroadcastOp::create(rb, lanes, scale));
            for (int64_t k = 0; k < heads; ++k) {
              Value part = dots;
              if (heads > 1)
                part = vector::ExtractStridedSliceOp::create(
                    rb, dots, ArrayRef<int64_t>{k * rowsPer},
                    ArrayRef<int64_t>{rowsPer}, ArrayRef<int64_t>{1});
              Value base =
                  add(rb, outBase, mul(rb, add(rb, h0, idx(rb, k)), stride));
              vector::StoreOp::create(rb, part, out,
                                      ValueRange{add(rb, base, r0)});
            }
            scf::YieldOp::create(rb);
          });
      for (int64_t k = 0; k < heads; ++k)
        singleRows(hb, add(hb, h0, idx(hb, k)), grouped);
    };
    forHeadBlocks(b, heads, std::min<int64_t>(4, w), headBlock);
    func::ReturnOp::create(b);
    return fn;
  };
  tileLogits =
      emitLogits(prefix + "_tile_logits", false, an::StorageKind::F32, false);
  if (certified)
    tileAbsLogits = emitLogits(prefix + "_tile_abs_logits", true,
                               an::StorageKind::F32, false);
  {
    // softmax(logits, base, rows, oldMax, weights) -> (newMax, sum,
    // alpha): the tile's maximum joined with the running one, its weights
    // exp(logit - newMax) written to `weights` (which may be `logits`),
    // their sum, and exp(oldMax - newMax).
    func::FuncOp fn =
        createFunction(prefix + "_tile_softmax",
                       {floats(), indexType(), indexType(), f32(), floats()},
                       {f32(), f32(), f32()}, false);
    Block &entry = fn.front();
    ImplicitLocOpBuilder b(fn.getLoc(), OpBuilder::atBlockEnd(&entry));
    auto args = entry.getArguments();
    Value logits = args[0], base = args[1], rows = args[2], oldMax = args[3],
          weights = args[4];
    const int64_t w = target.getF32Lanes();
    VectorType lanes = VectorType::get({w}, f32());
    VectorType one = VectorType::get({1}, f32());
    Value full = mul(b, arith::DivUIOp::create(b, rows, idx(b, w)), idx(b, w));
    Value negInf = arith::ConstantOp::create(
        b,
        DenseElementsAttr::get(
            lanes, b.getF32FloatAttr(-std::numeric_limits<float>::infinity())));
    auto vmax = scf::ForOp::create(
        b, idx(b, 0), full, idx(b, w), ValueRange{negInf},
        [&](OpBuilder &n, Location l, Value r, ValueRange m) {
          ImplicitLocOpBuilder rb(l, n);
          Value v = vector::LoadOp::create(rb, lanes, logits,
                                           ValueRange{add(rb, base, r)});
          scf::YieldOp::create(
              rb, ValueRange{arith::MaximumFOp::create(rb, m[0], v)});
        });
    Value maxAll = vector::ReductionOp::create(
        b, vector::CombiningKind::MAXIMUMF, vmax.getResult(0));
    auto smax = scf::ForOp::create(
        b, full, rows, idx(b, 1),
        ValueRange{arith::MaximumFOp::create(b, maxAll, oldMax)},
        [&](OpBuilder &n, Location l, Value r, ValueRange m) {
          ImplicitLocOpBuilder rb(l, n);
          Value v =
              memref::LoadOp::create(rb, logits, ValueRange{add(rb, base, r)});
          scf::YieldOp::create(
              rb, ValueRange{arith::MaximumFOp::create(rb, m[0], v)});
        });
    Value newMax = smax.getResult(0);
    Value splatMax = vector::BroadcastOp::create(b, lanes, newMax);
    Value zeros = arith::ConstantOp::create(
        b, DenseElementsAttr::get(lanes, b.getF32FloatAttr(0.0)));
    auto vsum = scf::ForOp::create(
        b, idx(b, 0), full, idx(b, w), ValueRange{zeros},
        [&](OpBuilder &n, Location l, Value r, ValueRange s) {
          ImplicitLocOpBuilder rb(l, n);
          Value at = add(rb, base, r);
          Value v = vector::LoadOp::create(rb, lanes, logits, ValueRange{at});
          Value e = emitExp(rb, arith::SubFOp::create(rb, v, splatMax));
          vector::StoreOp::create(rb, e, weights, ValueRange{at});
          scf::YieldOp::create(rb,
                               ValueRange{arith::AddFOp::create(rb, s[0], e)});
        });
    auto scalarExp = [&](ImplicitLocOpBuilder &rb, Value v) -> Value {
      Value e = emitExp(rb, vector::BroadcastOp::create(rb, one, v));
      return vector::ExtractOp::create(rb, e, ArrayRef<int64_t>{0});
    };
    auto ssum = scf::ForOp::create(
        b, full, rows, idx(b, 1), ValueRange{emitLaneSum(b, vsum.getResult(0))},
        [&](OpBuilder &n, Location l, Value r, ValueRange s) {
          ImplicitLocOpBuilder rb(l, n);
          Value at = add(rb, base, r);
          Value v = memref::LoadOp::create(rb, logits, ValueRange{at});
          Value e = scalarExp(rb, arith::SubFOp::create(rb, v, newMax));
          memref::StoreOp::create(rb, e, weights, ValueRange{at});
          scf::YieldOp::create(rb,
                               ValueRange{arith::AddFOp::create(rb, s[0], e)});
        });
    Value alpha = scalarExp(b, arith::SubFOp::create(b, oldMax, newMax));
    func::ReturnOp::create(b, ValueRange{newMax, ssum.getResult(0), alpha});
    tileSoftmax = fn;
  }
  // accumulate(tile, rows, p, heads, acc, pBase, stride): acc_h +=
  // sum_r p[pBase + h * stride + r] tile_r, in row order.
  auto emitAccumulate = [&](StringRef name, an::StorageKind source,
                            bool direct) {
    SmallVector<Type> inputs(direct ? runArgs : tileArgs);
    inputs.append({indexType(), floats(), indexType(), floats(), indexType(),
                   indexType()});
    func::FuncOp fn = createFunction(name, inputs, {}, false);
    Block &entry = fn.front();
    ImplicitLocOpBuilder b(fn.getLoc(), OpBuilder::atBlockEnd(&entry));
    auto args = entry.getArguments();
    const size_t n = direct ? 3 : 1;
    RowSource rowsOf = openRowSource(b, source, args.take_front(n));
    Value rows = args[n], p = args[n + 1], heads = args[n + 2],
          acc = args[n + 3], pBase = args[n + 4], stride = args[n + 5];
    // Heads [h0, h0 + H) together, piece by piece of P lanes (P the widest
    // that divides head_dim and keeps at most 8 chains of 16 lanes, H * P /
    // 16, in flight): each piece of a row loaded once for the H heads, the
    // accumulators in registers over the rows. Per lane the same fused
    // multiply-adds in row order as one head at a time.
    const int64_t chunk = getLaneChunk(d);
    auto headBlock = [&](ImplicitLocOpBuilder &hb, Value h0, int64_t heads) {
      int64_t width = chunk;
      while (d % (2 * width) == 0 && heads * 2 * width <= 8 * chunk)
        width *= 2;
      VectorType piece = VectorType::get({width}, f32());
      scf::ForOp::create(
          hb, idx(hb, 0), idx(hb, d), idx(hb, width), ValueRange{},
          [&](OpBuilder &n, Location l, Value j, ValueRange) {
            ImplicitLocOpBuilder jb(l, n);
            SmallVector<Value> at, bases, initial;
            for (int64_t k = 0; k < heads; ++k) {
              Value h = add(jb, h0, idx(jb, k));
              at.push_back(add(jb, mul(jb, h, idx(jb, d)), j));
              bases.push_back(add(jb, pBase, mul(jb, h, stride)));
              initial.push_back(
                  vector::LoadOp::create(jb, piece, acc, ValueRange{at[k]}));
            }
            auto loop = scf::ForOp::create(
                jb, idx(jb, 0), rows, idx(jb, 1), initial,
                [&](OpBuilder &n2, Location l2, Value r, ValueRange current) {
                  ImplicitLocOpBuilder rb(l2, n2);
                  prefetchPiece(rb, rowsOf, r, j, width);
                  Value value = loadPiece(rb, rowsOf, r, j, width);
                  SmallVector<Value> next;
                  for (int64_t k = 0; k < heads; ++k) {
                    Value weight = memref::LoadOp::create(
                        rb, p, ValueRange{add(rb, bases[k], r)});
                    Value splat =
                        vector::BroadcastOp::create(rb, piece, weight);
                    next.push_back(
                        vector::FMAOp::create(rb, splat, value, current[k]));
                  }
                  scf::YieldOp::create(rb, next);
                });
            for (int64_t k = 0; k < heads; ++k)
              vector::StoreOp::create(jb, loop.getResult(k), acc,
                                      ValueRange{at[k]});
            scf::YieldOp::create(jb);
          });
    };
    forHeadBlocks(b, heads, 4, headBlock);
    func::ReturnOp::create(b);
    return fn;
  };
  tileAccumulate =
      emitAccumulate(prefix + "_tile_accumulate", an::StorageKind::F32, false);
  // Unscaled runs are read in place: their element decode is one exact
  // conversion, no more work than loading the f32 tile.
  for (an::StorageKind source : directKinds) {
    std::string kind = an::getStorageKindName(source);
    directKernels.push_back(
        {source,
         emitLogits(prefix + "_direct_logits_" + kind, false, source, true),
         emitAccumulate(prefix + "_direct_accumulate_" + kind, source, true)});
  }
}

void Emitter::emitRowHelpers() {
  const int64_t d = g.headDim;
  VectorType vt = VectorType::get({d}, f32());
  if (g.window > 0) {
    func::FuncOp fn = createFunction(prefix + "_rows_max",
                                     {floats(), indexType()}, {f32()}, false);
    Block &entry = fn.front();
    ImplicitLocOpBuilder b(fn.getLoc(), OpBuilder::atBlockEnd(&entry));
    Value buffer = entry.getArgument(0), rows = entry.getArgument(1);
    Value zeros = arith::ConstantOp::create(
        b, DenseElementsAttr::get(vt, b.getF32FloatAttr(0.0)));
    auto loop = scf::ForOp::create(
        b, idx(b, 0), rows, idx(b, 1), ValueRange{zeros},
        [&](OpBuilder &n, Location l, Value r, ValueRange acc) {
          ImplicitLocOpBuilder rb(l, n);
          Value v = vector::LoadOp::create(rb, vt, buffer,
                                           ValueRange{mul(rb, r, idx(rb, d))});
          scf::YieldOp::create(
              rb, ValueRange{arith::MaximumFOp::create(rb, acc[0], v)});
        });
    func::ReturnOp::create(
        b, ValueRange{vector::ReductionOp::create(
               b, vector::CombiningKind::MAXIMUMF, loop.getResult(0))});
    rowsMax = fn;
  }
  if (certified && g.window > 0) {
    func::FuncOp fn = createFunction(prefix + "_tile_add",
                                     {floats(), indexType(), f32()}, {}, false);
    Block &entry = fn.front();
    ImplicitLocOpBuilder b(fn.getLoc(), OpBuilder::atBlockEnd(&entry));
    Value buffer = entry.getArgument(0), rows = entry.getArgument(1);
    Value splat = vector::BroadcastOp::create(b, vt, entry.getArgument(2));
    scf::ForOp::create(
        b, idx(b, 0), rows, idx(b, 1), ValueRange{},
        [&](OpBuilder &n, Location l, Value r, ValueRange) {
          ImplicitLocOpBuilder rb(l, n);
          Value at = mul(rb, r, idx(rb, d));
          Value v = vector::LoadOp::create(rb, vt, buffer, ValueRange{at});
          vector::StoreOp::create(rb, arith::AddFOp::create(rb, v, splat),
                                  buffer, ValueRange{at});
          scf::YieldOp::create(rb);
        });
    func::ReturnOp::create(b);
    tileAdd = fn;
  }
}

void Emitter::emitCertificateKernels() {
  const int64_t d = g.headDim;
  const double u = 0x1p-24;
  VectorType vt = VectorType::get({d}, f32());
  auto fconst = [&](ImplicitLocOpBuilder &b, double v) -> Value {
    return arith::ConstantFloatOp::create(b, Float32Type::get(context),
                                          APFloat(float(v)));
  };
  {
    // keys(p, raw, E, S, base, rows, m, wV, wU, wG) -> (A1, A2, A3, Emax,
    // B1, B2, Cmax, DotMax) over rows [base, base + rows) of one query head
    // of a tile whose computed logits are `raw`, maximum `m` and weights
    // p = e^(raw - m): with E_t its storage logit bound, S_t the scaled
    // sum_j |q_j K^_tj|, dot_t = gamma_{d+2} S_t and c_t = dot_t +
    // u (m - raw_t):
    //   A1 = sum p E, A2 = sum p e^E E, A3 = sum p e^E phi(E), Emax = max E,
    //   B1 = sum p c, B2 = sum p phi(c), Cmax = max c, DotMax = max dot,
    // and the row weights wV = p e^{2E}, wU = p e^c, wG = e^E of the value
    // half (docs/lowering.md, the run-time certificate).
    func::FuncOp fn =
        createFunction(prefix + "_tile_certify_keys",
                       {floats(), floats(), floats(), floats(), indexType(),
                        indexType(), f32(), floats(), floats(), floats()},
                       SmallVector<Type>(8, f32()), false);
    Block &entry = fn.front();
    ImplicitLocOpBuilder b(fn.getLoc(), OpBuilder::atBlockEnd(&entry));
    auto args = entry.getArguments();
    Value p = args[0], raw = args[1], E = args[2], S = args[3], base = args[4],
          rows = args[5], m = args[6], wV = args[7], wU = args[8], wG = args[9];
    // gamma_{d+2} rounded up to f32.
    const double n = double(d) + 2;
    float gammaDot = float(n * u / (1 - n * u));
    gammaDot = std::nextafter(gammaDot, std::numeric_limits<float>::infinity());
    const int64_t w = target.getF32Lanes();
    // Sums (indices 0, 1, 2, 4, 5) and maxima (3, 6, 7).
    auto isMax = [](int k) { return k == 3 || k == 6 || k == 7; };
    auto body = [&](ImplicitLocOpBuilder &rb, int64_t lanes, Value at,
                    ValueRange acc) {
      VectorType lt = VectorType::get({lanes}, f32());
      auto splat = [&](Value x) -> Value {
        return vector::BroadcastOp::create(rb, lt, x);
      };
      auto load = [&](Value from) -> Value {
        return vector::LoadOp::create(rb, lt, from, ValueRange{at});
      };
      auto mulf = [&](Value x, Value y) -> Value {
        return arith::MulFOp::create(rb, x, y);
      };
      Value pv = load(p), e = load(E), sv = load(S), s = load(raw);
      Value dot = mulf(sv, splat(fconst(rb, gammaDot)));
      Value c =
          math::FmaOp::create(rb, splat(fconst(rb, u)),
                              arith::SubFOp::create(rb, splat(m), s), dot);
      Value grow = emitExp(rb, e);
      Value phiE = emitExpm1(rb, e);
      Value phiC = emitExpm1(rb, c);
      Value pg = mulf(pv, grow);
      Value terms[8] = {mulf(pv, e), mulf(pg, e), mulf(pg, phiE),
                        e,           mulf(pv, c), mulf(pv, phiC),
                        c,           dot};
      SmallVector<Value> next;
      for (int k = 0; k < 8; ++k)
        next.push_back(
            isMax(k) ? Value(arith::MaximumFOp::create(rb, acc[k], terms[k]))
                     : Value(arith::AddFOp::create(rb, acc[k], terms[k])));
      vector::StoreOp::create(rb, mulf(pg, grow), wV, ValueRange{at});
      vector::StoreOp::create(rb, mulf(pv, emitExp(rb, c)), wU, ValueRange{at});
      vector::StoreOp::create(rb, grow, wG, ValueRange{at});
      return next;
    };
    // Full groups of w rows as vectors, then the rest one row at a time.
    VectorType lanes = VectorType::get({w}, f32());
    VectorType one = VectorType::get({1}, f32());
    Value full = mul(b, arith::DivUIOp::create(b, rows, idx(b, w)), idx(b, w));
    SmallVector<Value> init(
        8, arith::ConstantOp::create(
               b, DenseElementsAttr::get(lanes, b.getF32FloatAttr(0.0))));
    auto vectorLoop = scf::ForOp::create(
        b, idx(b, 0), full, idx(b, w), init,
        [&](OpBuilder &n2, Location l2, Value r, ValueRange acc) {
          ImplicitLocOpBuilder rb(l2, n2);
          scf::YieldOp::create(rb, body(rb, w, add(rb, base, r), acc));
        });
    SmallVector<Value> reduced;
    for (int k = 0; k < 8; ++k) {
      Value x =
          vector::ReductionOp::create(b,
                                      isMax(k) ? vector::CombiningKind::MAXIMUMF
                                               : vector::CombiningKind::ADD,
                                      vectorLoop.getResult(k));
      reduced.push_back(vector::BroadcastOp::create(b, one, x));
    }
    auto tailLoop = scf::ForOp::create(
        b, full, rows, idx(b, 1), reduced,
        [&](OpBuilder &n2, Location l2, Value r, ValueRange acc) {
          ImplicitLocOpBuilder rb(l2, n2);
          scf::YieldOp::create(rb, body(rb, 1, add(rb, base, r), acc));
        });
    SmallVector<Value> results;
    for (int k = 0; k < 8; ++k)
      results.push_back(vector::ExtractOp::create(b, tailLoop.getResult(k),
                                                  ArrayRef<int64_t>{0}));
    func::ReturnOp::create(b, results);
    tileCertifyKeys = fn;
  }
  {
    // values(tile, delta, rows, wV, wU, wG, heads, vecs, vecAt, range,
    // rangeAt): for each query head i (weights at i * rows) writes
    // W = sum wV delta, U = sum wU |V^| and G = max wG delta to
    // vecs[vecAt + (3 i + k) d], and the tile's min V^, max V^ and
    // max delta to range[rangeAt + k d].
    func::FuncOp fn = createFunction(prefix + "_tile_certify_values",
                                     {floats(), floats(), indexType(), floats(),
                                      floats(), floats(), indexType(), floats(),
                                      indexType(), floats(), indexType()},
                                     {}, false);
    Block &entry = fn.front();
    ImplicitLocOpBuilder b(fn.getLoc(), OpBuilder::atBlockEnd(&entry));
    auto args = entry.getArguments();
    Value tile = args[0], delta = args[1], rows = args[2], wV = args[3],
          wU = args[4], wG = args[5], heads = args[6], vecs = args[7],
          vecAt = args[8], range = args[9], rangeAt = args[10];
    auto vconst = [&](ImplicitLocOpBuilder &cb, double v) -> Value {
      return arith::ConstantOp::create(
          cb, DenseElementsAttr::get(vt, cb.getF32FloatAttr(float(v))));
    };
    scf::ForOp::create(
        b, idx(b, 0), heads, idx(b, 1), ValueRange{},
        [&](OpBuilder &n, Location l, Value i, ValueRange) {
          ImplicitLocOpBuilder hb(l, n);
          Value base = mul(hb, i, rows);
          Value zeros = vconst(hb, 0.0);
          auto loop = scf::ForOp::create(
              hb, idx(hb, 0), rows, idx(hb, 1), ValueRange{zeros, zeros, zeros},
              [&](OpBuilder &n2, Location l2, Value r, ValueRange acc) {
                ImplicitLocOpBuilder rb(l2, n2);
                Value at = mul(rb, r, idx(rb, d));
                Value v = vector::LoadOp::create(rb, vt, tile, ValueRange{at});
                Value dv =
                    vector::LoadOp::create(rb, vt, delta, ValueRange{at});
                auto weight = [&](Value from) -> Value {
                  return vector::BroadcastOp::create(
                      rb, vt,
                      memref::LoadOp::create(rb, from,
                                             ValueRange{add(rb, base, r)}));
                };
                Value W = vector::FMAOp::create(rb, weight(wV), dv, acc[0]);
                Value U = vector::FMAOp::create(
                    rb, weight(wU), math::AbsFOp::create(rb, v), acc[1]);
                Value G = arith::MaximumFOp::create(
                    rb, acc[2], arith::MulFOp::create(rb, weight(wG), dv));
                scf::YieldOp::create(rb, ValueRange{W, U, G});
              });
          for (int k = 0; k < 3; ++k)
            vector::StoreOp::create(
                hb, loop.getResult(k), vecs,
                ValueRange{
                    add(hb, vecAt,
                        mul(hb, add(hb, mul(hb, i, idx(hb, 3)), idx(hb, k)),
                            idx(hb, d)))});
          scf::YieldOp::create(hb);
        });
    auto loop = scf::ForOp::create(
        b, idx(b, 0), rows, idx(b, 1),
        ValueRange{vconst(b, std::numeric_limits<float>::infinity()),
                   vconst(b, -std::numeric_limits<float>::infinity()),
                   vconst(b, 0.0)},
        [&](OpBuilder &n2, Location l2, Value r, ValueRange acc) {
          ImplicitLocOpBuilder rb(l2, n2);
          Value at = mul(rb, r, idx(rb, d));
          Value v = vector::LoadOp::create(rb, vt, tile, ValueRange{at});
          Value dv = vector::LoadOp::create(rb, vt, delta, ValueRange{at});
          scf::YieldOp::create(
              rb, ValueRange{arith::MinimumFOp::create(rb, acc[0], v),
                             arith::MaximumFOp::create(rb, acc[1], v),
                             arith::MaximumFOp::create(rb, acc[2], dv)});
        });
    for (int k = 0; k < 3; ++k)
      vector::StoreOp::create(b, loop.getResult(k), range,
                              ValueRange{add(b, rangeAt, idx(b, k * d))});
    func::ReturnOp::create(b);
    tileCertifyValues = fn;
  }
}

Place Emitter::sinkPlace(ImplicitLocOpBuilder &b, Value item, Value row) {
  return {itemField(b, item, kSinkFormat), itemField(b, item, kSinkCode),
          itemField(b, item, kSinkScale), itemField(b, item, kSinkZero), row};
}

Place Emitter::ringPlace(ImplicitLocOpBuilder &b, Value item, Value position) {
  int64_t ringRows = std::max<int64_t>(layout.getStream(0).window.rows, 1);
  Value row = arith::RemUIOp::create(b, sub(b, position, idx(b, g.sink)),
                                     idx(b, ringRows));
  return {itemField(b, item, kRingFormat), itemField(b, item, kRingCode),
          itemField(b, item, kRingScale), itemField(b, item, kRingZero), row};
}

Place Emitter::locateBody(ImplicitLocOpBuilder &b, Value item, Value position) {
  Value first = itemField(b, item, kFirstRun);
  Value count = itemField(b, item, kRunCount);
  Value zero = idx(b, 0);
  // Scan the item's runs; the one holding the position wins.
  SmallVector<Value> init(6, zero);
  auto loop = scf::ForOp::create(
      b, zero, count, idx(b, 1), init,
      [&](OpBuilder &nested, Location loc, Value i, ValueRange found) {
        ImplicitLocOpBuilder lb(loc, nested);
        Value run = add(lb, first, i);
        Value begin = runField(lb, run, kRunFirstPosition);
        Value end = add(lb, begin, runField(lb, run, kRunRows));
        Value inside = arith::AndIOp::create(
            lb, cmp(lb, arith::CmpIPredicate::sge, position, begin),
            cmp(lb, arith::CmpIPredicate::slt, position, end));
        Value row = sub(lb, position, begin);
        Value inherited =
            add(lb, runField(lb, run, kRunInherited),
                mul(lb, arith::DivUIOp::create(lb, row, idx(lb, g.block)),
                    idx(lb, 4)));
        Value values[6] = {runField(lb, run, kRunFormat),
                           runField(lb, run, kRunCode),
                           runField(lb, run, kRunScale),
                           runField(lb, run, kRunZero),
                           row,
                           inherited};
        SmallVector<Value> next;
        for (int k = 0; k < 6; ++k)
          next.push_back(
              arith::SelectOp::create(lb, inside, values[k], found[k]));
        scf::YieldOp::create(lb, next);
      });
  Place place{loop.getResult(0), loop.getResult(1), loop.getResult(2),
              loop.getResult(3), loop.getResult(4)};
  if (g.window > 0)
    place.inherited = loop.getResult(5);
  return place;
}

Place Emitter::locate(ImplicitLocOpBuilder &b, Value item, Value position,
                      Value length) {
  // Plan::getSegmentAt: sink; window while the block overlaps the newest
  // `window` positions; body otherwise.
  Value inSink = cmp(b, arith::CmpIPredicate::slt, position, idx(b, g.sink));
  Value inWindow = arith::ConstantIntOp::create(b, 0, 1);
  if (g.window > 0) {
    Value block = arith::DivSIOp::create(b, sub(b, position, idx(b, g.sink)),
                                         idx(b, g.block));
    Value blockEnd = add(b, idx(b, g.sink),
                         mul(b, add(b, block, idx(b, 1)), idx(b, g.block)));
    inWindow = cmp(b, arith::CmpIPredicate::sgt, blockEnd,
                   sub(b, length, idx(b, g.window)));
  }
  auto pick = scf::IfOp::create(
      b, inSink,
      [&](OpBuilder &nested, Location loc) {
        ImplicitLocOpBuilder tb(loc, nested);
        Place p = sinkPlace(tb, item, position);
        scf::YieldOp::create(
            tb, ValueRange{p.format, p.code, p.scale, p.zero, p.row});
      },
      [&](OpBuilder &nested, Location loc) {
        ImplicitLocOpBuilder eb(loc, nested);
        auto inner = scf::IfOp::create(
            eb, inWindow,
            [&](OpBuilder &n2, Location l2) {
              ImplicitLocOpBuilder wb(l2, n2);
              Place p = ringPlace(wb, item, position);
              scf::YieldOp::create(
                  wb, ValueRange{p.format, p.code, p.scale, p.zero, p.row});
            },
            [&](OpBuilder &n2, Location l2) {
              ImplicitLocOpBuilder bb(l2, n2);
              Place p = locateBody(bb, item, position);
              scf::YieldOp::create(
                  bb, ValueRange{p.format, p.code, p.scale, p.zero, p.row});
            });
        scf::YieldOp::create(eb, inner.getResults());
      });
  return {pick.getResult(0), pick.getResult(1), pick.getResult(2),
          pick.getResult(3), pick.getResult(4)};
}

void Emitter::copyIn(ImplicitLocOpBuilder &b, Value from, Value t, Value h,
                     Value to, Value at) {
  scf::ForOp::create(
      b, idx(b, 0), idx(b, g.headDim), idx(b, 1), ValueRange{},
      [&](OpBuilder &nested, Location loc, Value j, ValueRange) {
        ImplicitLocOpBuilder lb(loc, nested);
        Value v = memref::LoadOp::create(lb, from, ValueRange{t, h, j});
        if (!v.getType().isF32())
          v = arith::ExtFOp::create(lb, f32(), v);
        memref::StoreOp::create(lb, v, to, ValueRange{add(lb, at, j)});
        scf::YieldOp::create(lb);
      });
}

Value Emitter::tokenShapeMismatch(ImplicitLocOpBuilder &b, Value keys,
                                  Value values) {
  Value bad = arith::ConstantIntOp::create(b, 0, 1);
  for (int64_t dim = 0; dim < 3; ++dim) {
    Value k = memref::DimOp::create(b, keys, dim);
    Value v = memref::DimOp::create(b, values, dim);
    bad = arith::OrIOp::create(b, bad, cmp(b, arith::CmpIPredicate::ne, k, v));
    if (dim > 0)
      bad = arith::OrIOp::create(b, bad,
                                 cmp(b, arith::CmpIPredicate::ne, k,
                                     idx(b, dim == 1 ? g.heads : g.headDim)));
  }
  return bad;
}

Value Emitter::attendShapeMismatch(ImplicitLocOpBuilder &b, Value query,
                                   Value output) {
  Value numQueries = memref::DimOp::create(b, query, 0);
  Value badShape = arith::OrIOp::create(
      b,
      cmp(b, arith::CmpIPredicate::ne, memref::DimOp::create(b, query, 1),
          idx(b, g.headDim)),
      arith::OrIOp::create(b,
                           cmp(b, arith::CmpIPredicate::ne,
                               memref::DimOp::create(b, output, 0), numQueries),
                           cmp(b, arith::CmpIPredicate::ne,
                               memref::DimOp::create(b, output, 1),
                               idx(b, g.headDim))));
  return arith::OrIOp::create(
      b, badShape,
      arith::OrIOp::create(
          b, cmp(b, arith::CmpIPredicate::eq, numQueries, idx(b, 0)),
          cmp(b, arith::CmpIPredicate::ne,
              arith::RemUIOp::create(b, numQueries, idx(b, g.heads)),
              idx(b, 0))));
}

Emitter::AttendTiles Emitter::attendTiles(ImplicitLocOpBuilder &b,
                                          Value length) {
  AttendTiles t;
  Value zero = idx(b, 0);
  t.sinkRows = arith::MinUIOp::create(b, length, idx(b, g.sink));
  t.hasSink = arith::IndexCastOp::create(
      b, indexType(),
      arith::ExtUIOp::create(
          b, i32(), cmp(b, arith::CmpIPredicate::ugt, t.sinkRows, zero)));
  t.aged = arith::SubIOp::create(
      b, arith::MaxUIOp::create(b, length, idx(b, g.sink)), idx(b, g.sink));
  Value blocks = arith::CeilDivUIOp::create(b, t.aged, idx(b, g.block));
  t.tiles = add(b, t.hasSink, blocks);
  t.bodyRows = t.aged;
  if (g.window > 0) {
    Value beyond = arith::SubIOp::create(
        b, arith::MaxUIOp::create(b, t.aged, idx(b, g.window)),
        idx(b, g.window));
    t.bodyRows = mul(b, arith::DivUIOp::create(b, beyond, idx(b, g.block)),
                     idx(b, g.block));
  }
  return t;
}

Value Emitter::guardEntry(
    ImplicitLocOpBuilder &b, Value arena, Value layer, Value badShape,
    function_ref<Value(ImplicitLocOpBuilder &, Value fill)> body,
    function_ref<Value(ImplicitLocOpBuilder &, Value, Value)> readFill) {
  Value st =
      failIf(b, cmp(b, arith::CmpIPredicate::uge, layer, idx(b, g.layers)),
             CacheStatus::BadLayer);
  st = firstFailure(b, st,
                    failIf(b, arenaTooSmall(b, arena), CacheStatus::BadArena));
  st = firstFailure(b, st, failIf(b, badShape, CacheStatus::BadShape));
  Value ok = cmp(b, arith::CmpIPredicate::eq, st, status(b, CacheStatus::Ok));
  return guard(b, ok, st, [&](ImplicitLocOpBuilder &gb) -> Value {
    Value fill = readFill ? readFill(gb, arena, layer)
                          : Value(memref::LoadOp::create(
                                gb, fillCounts(gb, arena), ValueRange{layer}));
    return body(gb, arith::IndexCastOp::create(gb, indexType(), fill));
  });
}

void Emitter::emitArenaBytes(CacheFunctions &result) {
  func::FuncOp fn = createFunction(prefix + "_arena_bytes", {}, {i64()}, true);
  ImplicitLocOpBuilder b(fn.getLoc(), OpBuilder::atBlockEnd(&fn.front()));
  func::ReturnOp::create(b, ValueRange{arith::ConstantIntOp::create(
                                b, layout.getTotalBytes(), 64)});
  result.arenaBytes = fn;
}

void Emitter::emitInit(CacheFunctions &result) {
  func::FuncOp fn =
      createFunction(prefix + "_init", {arenaType()}, {i32()}, true);
  Block &entry = fn.front();
  ImplicitLocOpBuilder b(fn.getLoc(), OpBuilder::atBlockEnd(&entry));
  Value arena = entry.getArgument(0);
  Value st =
      guard(b,
            arith::XOrIOp::create(b, arenaTooSmall(b, arena),
                                  arith::ConstantIntOp::create(b, 1, 1)),
            status(b, CacheStatus::BadArena), [&](ImplicitLocOpBuilder &tb) {
              Value fills = fillCounts(tb, arena);
              Value zero = arith::ConstantIntOp::create(tb, 0, 64);
              scf::ForOp::create(
                  tb, idx(tb, 0), idx(tb, g.layers), idx(tb, 1), ValueRange{},
                  [&](OpBuilder &nested, Location loc, Value l, ValueRange) {
                    ImplicitLocOpBuilder lb(loc, nested);
                    memref::StoreOp::create(lb, zero, fills, ValueRange{l});
                    scf::YieldOp::create(lb);
                  });
              return status(tb, CacheStatus::Ok);
            });
  func::ReturnOp::create(b, ValueRange{st});
  result.init = fn;
}

func::FuncOp Emitter::emitAppendImpl(AppendKind kind) {
  // The scratch rows (a block of f32 rows, and as many for the bounds of a
  // block leaving the window) come from the caller: the CPU entry point
  // allocates them, a GPU kernel passes device memory.
  SmallVector<Type> inputs{arenaType(), indexType(), tokens(),
                           tokens(),    indexType(), floats()};
  if (kind != AppendKind::Check)
    inputs.push_back(floats());
  MemRefType ranksType =
      MemRefType::get({ShapedType::kDynamic}, IntegerType::get(context, 64));
  if (kind != AppendKind::Whole)
    inputs.append({indexType(), indexType(), ranksType, indexType()});
  const char *name = kind == AppendKind::Whole   ? "_append_impl"
                     : kind == AppendKind::Check ? "_append_check"
                                                 : "_append_store";
  func::FuncOp fn = createFunction(prefix + name, inputs, {i32()}, false);
  Block &entry = fn.front();
  ImplicitLocOpBuilder b(fn.getLoc(), OpBuilder::atBlockEnd(&entry));
  Value arena = entry.getArgument(0), layer = entry.getArgument(1);
  Value keys = entry.getArgument(2), values = entry.getArgument(3);
  Value position = entry.getArgument(4);
  Value scratch = entry.getArgument(5);
  Value boundScratch = g.window > 0 && kind != AppendKind::Check
                           ? entry.getArgument(6)
                           : Value();
  // A thread's streams, and where it reports the rank of its first failure.
  Value firstItem, itemStep, ranks, rankSlot;
  if (kind != AppendKind::Whole) {
    unsigned at = kind == AppendKind::Check ? 6 : 7;
    firstItem = entry.getArgument(at);
    itemStep = entry.getArgument(at + 1);
    ranks = entry.getArgument(at + 2);
    rankSlot = entry.getArgument(at + 3);
  }
  // The first failure among a thread's streams: its rank in the CPU's
  // (token, stream) order.
  auto noteRank = [&](ImplicitLocOpBuilder &rb, Value before, Value after,
                      Value t, Value item) {
    if (!ranks)
      return;
    Value okStatus = status(rb, CacheStatus::Ok);
    Value first = arith::AndIOp::create(
        rb, cmp(rb, arith::CmpIPredicate::eq, before, okStatus),
        cmp(rb, arith::CmpIPredicate::ne, after, okStatus));
    scf::IfOp::create(rb, first, [&](OpBuilder &n, Location l) {
      ImplicitLocOpBuilder ib(l, n);
      Value stream = sub(ib, item, mul(ib, layer, idx(ib, 2 * g.heads)));
      Value rank = add(ib, add(ib, mul(ib, t, idx(ib, 2 * g.heads)), stream),
                       idx(ib, 1));
      memref::StoreOp::create(ib, arith::IndexCastOp::create(ib, i64(), rank),
                              ranks, ValueRange{rankSlot});
      scf::YieldOp::create(ib);
    });
  };
  Value count = memref::DimOp::create(b, keys, 0);
  Value out = guardEntry(
      b, arena, layer, tokenShapeMismatch(b, keys, values),
      [&](ImplicitLocOpBuilder &b, Value fill) -> Value {
        Value fills = fillCounts(b, arena);
        Value badPosition = cmp(b, arith::CmpIPredicate::ne, position, fill);
        Value full = cmp(b, arith::CmpIPredicate::ugt, count,
                         sub(b, idx(b, g.capacity), fill));
        Value st =
            firstFailure(b, failIf(b, badPosition, CacheStatus::BadLength),
                         failIf(b, full, CacheStatus::Full));
        Value ok =
            cmp(b, arith::CmpIPredicate::eq, st, status(b, CacheStatus::Ok));
        return guard(b, ok, st, [&](ImplicitLocOpBuilder &b) -> Value {
          Value staging = memref::ViewOp::create(
              b, floats(), arena, idx(b, 0),
              ValueRange{arith::DivUIOp::create(
                  b, memref::DimOp::create(b, arena, 0), idx(b, 4))});
          Value zero = idx(b, 0), one = idx(b, 1);
          Value okStatus = status(b, CacheStatus::Ok);
          // A dry run first: every new row must be storable in its class
          // on its own (finite, within its formats' range), so that bad
          // input writes nothing. The store half runs only after every
          // thread's check half passed its dry run, so it skips it.
          Value dryStatus = okStatus;
          if (kind != AppendKind::Store) {
            auto dry = scf::ForOp::create(
                b, zero, count, one, ValueRange{okStatus},
                [&](OpBuilder &n, Location l, Value t, ValueRange acc) {
                  ImplicitLocOpBuilder tb(l, n);
                  Value p = add(tb, fill, t);
                  Value length = add(tb, p, idx(tb, 1));
                  Value st = forItems(
                      tb, layer, keys, values, acc[0],
                      [&](ImplicitLocOpBuilder &ib, Value item, Value h,
                          Value from, Value st) {
                        copyIn(ib, from, t, h, scratch, idx(ib, 0));
                        Place place = locate(ib, item, p, length);
                        Place single = place;
                        single.row = idx(ib, 0);
                        // Row 0 of the run: a dry run writes nothing, and a
                        // channel group's row must start a group.
                        Value after = firstFailure(
                            ib, st,
                            callStore(ib, arena, single, scratch, idx(ib, 0),
                                      idx(ib, 1), true));
                        noteRank(ib, st, after, t, item);
                        return after;
                      },
                      firstItem, itemStep);
                  scf::YieldOp::create(tb, ValueRange{st});
                });
            dryStatus = dry.getResult(0);
          }
          if (kind == AppendKind::Check)
            return dryStatus;
          Value dryOk = cmp(b, arith::CmpIPredicate::eq, dryStatus, okStatus);
          Value res = guard(b, dryOk, dryStatus, [&](ImplicitLocOpBuilder &b) {
            auto loop = scf::ForOp::create(
                b, zero, count, one, ValueRange{status(b, CacheStatus::Ok)},
                [&](OpBuilder &n, Location l, Value t, ValueRange acc) {
                  ImplicitLocOpBuilder tb(l, n);
                  Value p = add(tb, fill, t);
                  Value length = add(tb, p, idx(tb, 1));
                  Value st = acc[0];
                  // Demotion: the block that leaves the window at this
                  // length (Plan::getSegmentAt) is re-quantized from its
                  // window values into its body run.
                  Value leaving;
                  Value demote = arith::ConstantIntOp::create(tb, 0, 1);
                  if (g.window > 0) {
                    Value past = sub(tb, length, idx(tb, g.sink + g.window));
                    Value positive =
                        cmp(tb, arith::CmpIPredicate::sgt, past, idx(tb, 0));
                    Value aligned =
                        cmp(tb, arith::CmpIPredicate::eq,
                            arith::RemSIOp::create(tb, past, idx(tb, g.block)),
                            idx(tb, 0));
                    demote = arith::AndIOp::create(tb, positive, aligned);
                    leaving = sub(
                        tb, arith::DivSIOp::create(tb, past, idx(tb, g.block)),
                        idx(tb, 1));
                  }
                  st = forItems(
                      tb, layer, keys, values, st,
                      [&](ImplicitLocOpBuilder &tb, Value item, Value h,
                          Value from, Value st) -> Value {
                        Value before = st;
                        if (g.window > 0) {
                          Value demoted = guard(
                              tb, demote, status(tb, CacheStatus::Ok),
                              [&](ImplicitLocOpBuilder &db) {
                                Value begin =
                                    add(db, idx(db, g.sink),
                                        mul(db, leaving, idx(db, g.block)));
                                // The block's window values, and what it
                                // inherits: the largest bound of them.
                                Place ring = ringPlace(db, item, begin);
                                callLoadAndBounds(db, arena, ring,
                                                  idx(db, g.block), scratch,
                                                  boundScratch);
                                Place body = locateBody(db, item, begin);
                                Value st = callStore(db, arena, body, scratch,
                                                     idx(db, 0),
                                                     idx(db, g.block), false);
                                Value inherited =
                                    func::CallOp::create(
                                        db, rowsMax,
                                        ValueRange{boundScratch,
                                                   idx(db, g.block)})
                                        .getResult(0);
                                memref::StoreOp::create(
                                    db, inherited,
                                    f32At(db, arena, body.inherited),
                                    ValueRange{idx(db, 0)});
                                return st;
                              });
                          st = firstFailure(tb, st, demoted);
                        }
                        Place place = locate(tb, item, p, length);
                        Value group = groupSizeOf(tb, place.format);
                        Value grouped = cmp(tb, arith::CmpIPredicate::ne, group,
                                            idx(tb, 0));
                        Value stored = guard(
                            tb, grouped, status(tb, CacheStatus::Ok),
                            [&](ImplicitLocOpBuilder &gb) {
                              // Channel groups: stage the row, then re-quantize
                              // the group from the staged rows.
                              Value inGroup =
                                  arith::RemUIOp::create(gb, place.row, group);
                              Value stagingAt =
                                  add(gb,
                                      arith::DivUIOp::create(
                                          gb, itemField(gb, item, kStaging),
                                          idx(gb, 4)),
                                      mul(gb, inGroup, idx(gb, g.headDim)));
                              copyIn(gb, from, t, h, staging, stagingAt);
                              Place groupPlace = place;
                              groupPlace.row = sub(gb, place.row, inGroup);
                              Value stagingBegin = arith::DivUIOp::create(
                                  gb, itemField(gb, item, kStaging),
                                  idx(gb, 4));
                              return callStore(
                                  gb, arena, groupPlace, staging, stagingBegin,
                                  add(gb, inGroup, idx(gb, 1)), false);
                            });
                        Value single = guard(
                            tb,
                            arith::XOrIOp::create(
                                tb, grouped,
                                arith::ConstantIntOp::create(tb, 1, 1)),
                            status(tb, CacheStatus::Ok),
                            [&](ImplicitLocOpBuilder &sb) {
                              copyIn(sb, from, t, h, scratch, idx(sb, 0));
                              return callStore(sb, arena, place, scratch,
                                               idx(sb, 0), idx(sb, 1), false);
                            });
                        Value after = firstFailure(
                            tb, st, firstFailure(tb, stored, single));
                        noteRank(tb, before, after, t, item);
                        return after;
                      },
                      firstItem, itemStep);
                  if (kind == AppendKind::Whole)
                    memref::StoreOp::create(
                        tb, arith::IndexCastOp::create(tb, i64(), length),
                        fills, ValueRange{layer});
                  scf::YieldOp::create(tb, ValueRange{st});
                });
            return loop.getResult(0);
          });
          return res;
        });
      });
  func::ReturnOp::create(b, ValueRange{out});
  return fn;
}

Value Emitter::forItems(
    ImplicitLocOpBuilder &b, Value layer, Value keys, Value values, Value st,
    function_ref<Value(ImplicitLocOpBuilder &, Value, Value, Value, Value)>
        body,
    Value first, Value step) {
  auto loop = scf::ForOp::create(
      b, first ? first : idx(b, 0), idx(b, 2 * g.heads),
      step ? step : idx(b, 1), ValueRange{st},
      [&](OpBuilder &n, Location l, Value i, ValueRange acc) {
        ImplicitLocOpBuilder ib(l, n);
        Value h = arith::DivUIOp::create(ib, i, idx(ib, 2));
        Value isValue =
            cmp(ib, arith::CmpIPredicate::ne,
                arith::RemUIOp::create(ib, i, idx(ib, 2)), idx(ib, 0));
        // ((layer * H) + h) * 2 + kv = layer * 2H + i.
        Value item = add(ib, mul(ib, layer, idx(ib, 2 * g.heads)), i);
        Value from = arith::SelectOp::create(ib, isValue, values, keys);
        scf::YieldOp::create(ib, ValueRange{body(ib, item, h, from, acc[0])});
      });
  return loop.getResult(0);
}

void Emitter::emitAppend(CacheFunctions &result, func::FuncOp impl) {
  func::FuncOp fn = createFunction(
      prefix + "_append",
      {arenaType(), indexType(), tokens(), tokens(), indexType()}, {i32()},
      true);
  Block &entry = fn.front();
  ImplicitLocOpBuilder b(fn.getLoc(), OpBuilder::atBlockEnd(&entry));
  Value scratchFloats = idx(b, getAppendScratchFloats());
  Value scratch =
      memref::AllocOp::create(b, floats(), ValueRange{scratchFloats});
  // The error bounds of a block leaving the window.
  Value boundScratch =
      g.window > 0 ? Value(memref::AllocOp::create(b, floats(),
                                                   ValueRange{scratchFloats}))
                   : scratch;
  SmallVector<Value> operands(entry.getArguments());
  operands.append({scratch, boundScratch});
  Value st = func::CallOp::create(b, impl, operands).getResult(0);
  memref::DeallocOp::create(b, scratch);
  if (g.window > 0)
    memref::DeallocOp::create(b, boundScratch);
  func::ReturnOp::create(b, ValueRange{st});
  result.append = fn;
}

func::FuncOp Emitter::emitAttendPart(bool withCertificate) {
  const int64_t d = g.headDim;
  int64_t tileRows = std::max<int64_t>({g.block, g.sink, 1});
  // Rows decoded at a time (f32): within the target's decode buffer.
  const int64_t chunkRows = std::max<int64_t>(
      1, std::min<int64_t>(tileRows, target.getDecodeBufferBytes() / (4 * d)));
  SmallVector<Type> inputs{arenaType(), indexType(), heads(),     f32(),
                           indexType(), indexType(), indexType(), indexType(),
                           indexType(), indexType(), indexType(), indexType(),
                           floats(),    floats(),    floats()};
  if (withCertificate)
    inputs.append({floats(), floats(), floats()});
  // The number of splits.
  inputs.push_back(indexType());
  func::FuncOp fn = createFunction(
      prefix + (withCertificate ? "_attend_part_certified" : "_attend_part"),
      inputs, {}, false);
  Block &entry = fn.front();
  ImplicitLocOpBuilder hb(fn.getLoc(), OpBuilder::atBlockEnd(&entry));
  auto args = entry.getArguments();
  Value arena = args[0], layer = args[1], query = args[2],
        softmaxScale = args[3], h = args[4], split = args[5], group = args[6],
        tiles = args[7], hasSink = args[8], sinkRows = args[9], aged = args[10],
        bodyRows = args[11], partialMax = args[12], partialSum = args[13],
        partialAcc = args[14];
  // The certificate's partials: 8 scalars and 3 vectors per (KV head,
  // tile, query head), 3 vectors per (KV head, tile).
  Value partialCert, partialCertVec, partialRange;
  if (withCertificate) {
    partialCert = args[15];
    partialCertVec = args[16];
    partialRange = args[17];
  }
  Value splits = args[withCertificate ? 18 : 15];
  Value zero = idx(hb, 0), one = idx(hb, 1);
  Value negInf = arith::ConstantFloatOp::create(
      hb, Float32Type::get(context),
      APFloat::getInf(APFloat::IEEEsingle(), true));
  Value fzero = arith::ConstantFloatOp::create(hb, Float32Type::get(context),
                                               APFloat(0.0f));
  VectorType vt = VectorType::get({d}, f32());
  {
    Value itemK = itemOf(hb, layer, h, 0);
    Value itemV = add(hb, itemK, idx(hb, 1));
    // Buffers of this split.
    SmallVector<Value> buffers;
    for (Value n : attendPartBufferFloats(hb, group, withCertificate))
      buffers.push_back(memref::AllocOp::create(hb, floats(), ValueRange{n}));
    // The group's queries and accumulators, a tile's logits; each tile of
    // K, then of V, is dequantized once into `tileBuffer` for all query
    // heads of the group.
    Value q = buffers[0], acc = buffers[1], logits = buffers[2],
          tileBuffer = buffers[3], maxima = buffers[4], sums = buffers[5],
          rowScales = buffers[6];
    // The certificate's buffers: |q|, the computed logits, E_t, S_t, the
    // value weights, and the value error bounds.
    Value qAbs, raw, logitBounds, magnitudes, wV, wU, wG, deltaBuffer;
    if (withCertificate) {
      qAbs = buffers[7];
      raw = buffers[8];
      logitBounds = buffers[9];
      magnitudes = buffers[10];
      wV = buffers[11];
      wU = buffers[12];
      wG = buffers[13];
      deltaBuffer = buffers[14];
    }
    scf::ForOp::create(
        hb, zero, group, one, ValueRange{},
        [&](OpBuilder &n2, Location l2, Value i, ValueRange) {
          ImplicitLocOpBuilder ib(l2, n2);
          Value row = add(ib, mul(ib, h, group), i);
          scf::ForOp::create(
              ib, zero, idx(ib, d), one, ValueRange{},
              [&](OpBuilder &n3, Location l3, Value j, ValueRange) {
                ImplicitLocOpBuilder jb(l3, n3);
                Value v = memref::LoadOp::create(jb, query, ValueRange{row, j});
                if (!v.getType().isF32())
                  v = arith::ExtFOp::create(jb, f32(), v);
                Value at = add(jb, mul(jb, i, idx(jb, d)), j);
                memref::StoreOp::create(jb, v, q, ValueRange{at});
                if (withCertificate)
                  memref::StoreOp::create(jb, math::AbsFOp::create(jb, v), qAbs,
                                          ValueRange{at});
                memref::StoreOp::create(jb, fzero, acc, ValueRange{at});
                scf::YieldOp::create(jb);
              });
          memref::StoreOp::create(ib, negInf, maxima, ValueRange{i});
          memref::StoreOp::create(ib, fzero, sums, ValueRange{i});
          scf::YieldOp::create(ib);
        });
    // One tile: logits from K, online softmax update, V.
    // A re-quantized block's elements are off their appended values by
    // their stored bound plus the block's inherited one.
    auto addInherited = [&](ImplicitLocOpBuilder &tb, const Place &place,
                            Value buffer, Value rows) {
      if (!place.inherited)
        return;
      Value inherited = memref::LoadOp::create(
          tb, f32At(tb, arena, place.inherited), ValueRange{zero});
      func::CallOp::create(tb, tileAdd, ValueRange{buffer, rows, inherited});
    };
    // The softmax weights: over the logits, or (certified) beside them.
    Value weights = withCertificate ? raw : logits;
    // `slot` is the first partial slot of this (KV head, tile).
    auto tile = [&](ImplicitLocOpBuilder &tb, const Place &kPlace,
                    const Place &vPlace, Value rows, Value slot,
                    Value rangeSlot) {
      // Without the certificate the tile is decoded in parts of
      // `chunkRows` rows, each used while it is in L1: the same arithmetic
      // per row, the accumulators kept in memory between parts.
      auto inChunks =
          [&](ImplicitLocOpBuilder &ob,
              function_ref<void(ImplicitLocOpBuilder &, Value, Value)> body) {
            if (withCertificate) {
              body(ob, zero, rows);
              return;
            }
            scf::ForOp::create(
                ob, zero, rows, idx(ob, chunkRows), ValueRange{},
                [&](OpBuilder &n2, Location l2, Value c, ValueRange) {
                  ImplicitLocOpBuilder cb(l2, n2);
                  body(cb, c,
                       arith::MinUIOp::create(cb, idx(cb, chunkRows),
                                              sub(cb, rows, c)));
                  scf::YieldOp::create(cb);
                });
          };
      // How a tile's K or V at `place` is used, the first that applies:
      //  * fused: one query head (no group to share a decoded tile with):
      //    the formats' logits and accumulate kernels dequantize each row
      //    in registers where they use it;
      //  * direct: a group over an unscaled f32, f16 or bf16 run: the tile
      //    kernels read the run in place (no decode pass);
      //  * tiled: decoded into the f32 tile. The certificate always takes
      //    the tile.
      Value single = withCertificate
                         ? Value()
                         : cmp(tb, arith::CmpIPredicate::eq, group, one);
      auto dispatchRows =
          [&](const Place &place,
              function_ref<void(ImplicitLocOpBuilder &)> fused,
              function_ref<void(ImplicitLocOpBuilder &, const DirectKernels &)>
                  direct,
              function_ref<void(ImplicitLocOpBuilder &)> tiled) {
            if (withCertificate) {
              tiled(tb);
              return;
            }
            auto directOrTiled = [&](ImplicitLocOpBuilder &ob) {
              if (directKernels.empty()) {
                tiled(ob);
                return;
              }
              SmallVector<int64_t> cases;
              for (size_t k = 0; k < directKernels.size(); ++k)
                cases.push_back(k + 1);
              auto which = scf::IndexSwitchOp::create(
                  ob, TypeRange{}, table(ob, directName, place.format, 0, 1),
                  cases, cases.size());
              for (size_t k = 0; k < directKernels.size(); ++k) {
                Block &block = which.getCaseRegions()[k].emplaceBlock();
                ImplicitLocOpBuilder cb(ob.getLoc(),
                                        OpBuilder::atBlockEnd(&block));
                direct(cb, directKernels[k]);
                scf::YieldOp::create(cb);
              }
              Block &fallback = which.getDefaultRegion().emplaceBlock();
              ImplicitLocOpBuilder fb(ob.getLoc(),
                                      OpBuilder::atBlockEnd(&fallback));
              tiled(fb);
              scf::YieldOp::create(fb);
            };
            scf::IfOp::create(
                tb, single,
                [&](OpBuilder &n2, Location l2) {
                  ImplicitLocOpBuilder fb(l2, n2);
                  fused(fb);
                  scf::YieldOp::create(fb);
                },
                [&](OpBuilder &n2, Location l2) {
                  ImplicitLocOpBuilder eb(l2, n2);
                  directOrTiled(eb);
                  scf::YieldOp::create(eb);
                });
          };
      // The keys as the logits take them (scales folded where they can
      // be); the certificate also needs the dequantized tile and bounds.
      dispatchRows(
          kPlace,
          [&](ImplicitLocOpBuilder &fb) {
            func::CallOp::create(fb, logitsAny,
                                 ValueRange{kPlace.format, arena, kPlace.code,
                                            kPlace.scale, kPlace.zero,
                                            kPlace.row, rows, q, zero,
                                            softmaxScale, logits, zero});
          },
          [&](ImplicitLocOpBuilder &db, const DirectKernels &k) {
            func::CallOp::create(db, k.logits,
                                 ValueRange{arena, kPlace.code, kPlace.row,
                                            rows, q, group, softmaxScale,
                                            logits, zero, rows});
          },
          [&](ImplicitLocOpBuilder &ob) {
            inChunks(ob, [&](ImplicitLocOpBuilder &cb, Value c, Value n) {
              func::CallOp::create(cb, loadKeysAny,
                                   ValueRange{kPlace.format, arena, kPlace.code,
                                              kPlace.scale, kPlace.zero,
                                              add(cb, kPlace.row, c), n,
                                              tileBuffer, zero, rowScales});
              func::CallOp::create(cb, tileLogits,
                                   ValueRange{tileBuffer, n, q, group,
                                              softmaxScale, rowScales, logits,
                                              c, rows});
            });
          });
      if (withCertificate) {
        callLoadAndBounds(tb, arena, kPlace, rows, tileBuffer, deltaBuffer);
        // The computed logits stay (the weights go to `raw`); S_t from
        // |K^|, then E_t from the keys' error bounds, both against |q|.
        func::CallOp::create(tb, tileAbsLogits,
                             ValueRange{tileBuffer, rows, qAbs, group,
                                        softmaxScale, magnitudes, zero, rows});
        addInherited(tb, kPlace, deltaBuffer, rows);
        func::CallOp::create(tb, tileAbsLogits,
                             ValueRange{deltaBuffer, rows, qAbs, group,
                                        softmaxScale, logitBounds, zero, rows});
      }
      scf::ForOp::create(
          tb, zero, group, one, ValueRange{},
          [&](OpBuilder &n2, Location l2, Value i, ValueRange) {
            ImplicitLocOpBuilder ib(l2, n2);
            Value base = mul(ib, i, rows);
            Value oldMax = memref::LoadOp::create(ib, maxima, ValueRange{i});
            auto softmax = func::CallOp::create(
                ib, tileSoftmax,
                ValueRange{logits, base, rows, oldMax, weights});
            Value newMax = softmax.getResult(0);
            Value alpha = softmax.getResult(2);
            Value oldSum = memref::LoadOp::create(ib, sums, ValueRange{i});
            memref::StoreOp::create(
                ib,
                arith::AddFOp::create(ib,
                                      arith::MulFOp::create(ib, oldSum, alpha),
                                      softmax.getResult(1)),
                sums, ValueRange{i});
            memref::StoreOp::create(ib, newMax, maxima, ValueRange{i});
            Value at = mul(ib, i, idx(ib, d));
            Value a = vector::LoadOp::create(ib, vt, acc, ValueRange{at});
            a = arith::MulFOp::create(
                ib, a, vector::BroadcastOp::create(ib, vt, alpha));
            vector::StoreOp::create(ib, a, acc, ValueRange{at});
            if (withCertificate) {
              auto keys = func::CallOp::create(
                  ib, tileCertifyKeys,
                  ValueRange{weights, logits, logitBounds, magnitudes, base,
                             rows, newMax, wV, wU, wG});
              Value first = mul(ib, add(ib, slot, i), idx(ib, 8));
              for (int k = 0; k < 8; ++k)
                memref::StoreOp::create(ib, keys.getResult(k), partialCert,
                                        ValueRange{add(ib, first, idx(ib, k))});
            }
            scf::YieldOp::create(ib);
          });
      dispatchRows(
          vPlace,
          [&](ImplicitLocOpBuilder &fb) {
            func::CallOp::create(fb, accumulateAny,
                                 ValueRange{vPlace.format, arena, vPlace.code,
                                            vPlace.scale, vPlace.zero,
                                            vPlace.row, rows, weights, zero,
                                            acc, zero});
          },
          [&](ImplicitLocOpBuilder &db, const DirectKernels &k) {
            func::CallOp::create(db, k.accumulate,
                                 ValueRange{arena, vPlace.code, vPlace.row,
                                            rows, weights, group, acc, zero,
                                            rows});
          },
          [&](ImplicitLocOpBuilder &ob) {
            inChunks(ob, [&](ImplicitLocOpBuilder &cb, Value c, Value n) {
              if (withCertificate) {
                callLoadAndBounds(cb, arena, vPlace, rows, tileBuffer,
                                  deltaBuffer);
              } else {
                Place part = vPlace;
                part.row = add(cb, vPlace.row, c);
                callLoad(cb, arena, part, n, tileBuffer, zero);
              }
              func::CallOp::create(
                  cb, tileAccumulate,
                  ValueRange{tileBuffer, n, weights, group, acc, c, rows});
            });
          });
      if (withCertificate) {
        addInherited(tb, vPlace, deltaBuffer, rows);
        func::CallOp::create(
            tb, tileCertifyValues,
            ValueRange{tileBuffer, deltaBuffer, rows, wV, wU, wG, group,
                       partialCertVec, mul(tb, slot, idx(tb, 3 * d)),
                       partialRange, mul(tb, rangeSlot, idx(tb, 3 * d))});
      }
    };
    // This split's contiguous range of tiles.
    Value first = arith::DivUIOp::create(hb, mul(hb, split, tiles), splits);
    Value last =
        arith::DivUIOp::create(hb, mul(hb, add(hb, split, one), tiles), splits);
    scf::ForOp::create(
        hb, first, last, one, ValueRange{},
        [&](OpBuilder &n2, Location l2, Value t, ValueRange) {
          ImplicitLocOpBuilder tb(l2, n2);
          // The partials hold one KV head's tiles (the combine follows
          // each head).
          Value rangeSlot = t;
          Value slot = mul(tb, rangeSlot, group);
          // Every tile starts afresh: the contract keeps one maximum, sum
          // and accumulator per block, rescaled once when blocks combine.
          scf::ForOp::create(
              tb, zero, group, one, ValueRange{},
              [&](OpBuilder &n3, Location l3, Value i, ValueRange) {
                ImplicitLocOpBuilder ib(l3, n3);
                memref::StoreOp::create(ib, negInf, maxima, ValueRange{i});
                memref::StoreOp::create(ib, fzero, sums, ValueRange{i});
                vector::StoreOp::create(
                    ib,
                    arith::ConstantOp::create(
                        ib,
                        DenseElementsAttr::get(vt, ib.getF32FloatAttr(0.0))),
                    acc, ValueRange{mul(ib, i, idx(ib, d))});
                scf::YieldOp::create(ib);
              });
          Value isSink = arith::AndIOp::create(
              tb, cmp(tb, arith::CmpIPredicate::eq, t, zero),
              cmp(tb, arith::CmpIPredicate::ne, hasSink, zero));
          scf::IfOp::create(
              tb, isSink,
              [&](OpBuilder &n3, Location l3) {
                ImplicitLocOpBuilder sb(l3, n3);
                tile(sb, sinkPlace(sb, itemK, zero), sinkPlace(sb, itemV, zero),
                     sinkRows, slot, rangeSlot);
                scf::YieldOp::create(sb);
              },
              [&](OpBuilder &n3, Location l3) {
                ImplicitLocOpBuilder bb(l3, n3);
                Value offset = mul(bb, sub(bb, t, hasSink), idx(bb, g.block));
                Value begin = add(bb, idx(bb, g.sink), offset);
                Value rows = arith::MinUIOp::create(bb, idx(bb, g.block),
                                                    sub(bb, aged, offset));
                Value inBody =
                    cmp(bb, arith::CmpIPredicate::ult, offset, bodyRows);
                scf::IfOp::create(
                    bb, inBody,
                    [&](OpBuilder &n4, Location l4) {
                      ImplicitLocOpBuilder ob(l4, n4);
                      tile(ob, locateBody(ob, itemK, begin),
                           locateBody(ob, itemV, begin), rows, slot, rangeSlot);
                      scf::YieldOp::create(ob);
                    },
                    [&](OpBuilder &n4, Location l4) {
                      ImplicitLocOpBuilder wb(l4, n4);
                      tile(wb, ringPlace(wb, itemK, begin),
                           ringPlace(wb, itemV, begin), rows, slot, rangeSlot);
                      scf::YieldOp::create(wb);
                    });
                scf::YieldOp::create(bb);
              });
          // Leave the tile's partial results.
          scf::ForOp::create(
              tb, zero, group, one, ValueRange{},
              [&](OpBuilder &n3, Location l3, Value i, ValueRange) {
                ImplicitLocOpBuilder ib(l3, n3);
                Value at = add(ib, slot, i);
                memref::StoreOp::create(
                    ib, memref::LoadOp::create(ib, maxima, ValueRange{i}),
                    partialMax, ValueRange{at});
                memref::StoreOp::create(
                    ib, memref::LoadOp::create(ib, sums, ValueRange{i}),
                    partialSum, ValueRange{at});
                vector::StoreOp::create(
                    ib,
                    vector::LoadOp::create(ib, vt, acc,
                                           ValueRange{mul(ib, i, idx(ib, d))}),
                    partialAcc, ValueRange{mul(ib, at, idx(ib, d))});
                scf::YieldOp::create(ib);
              });
          scf::YieldOp::create(tb);
        });
    for (Value buffer : buffers)
      memref::DeallocOp::create(hb, buffer);
  }
  func::ReturnOp::create(hb);
  return fn;
}

SmallVector<Value> Emitter::attendPartBufferFloats(ImplicitLocOpBuilder &b,
                                                   Value group,
                                                   bool withCertificate) {
  const int64_t d = g.headDim;
  const int64_t tileRows = std::max<int64_t>({g.block, g.sink, 1});
  Value perHead = mul(b, group, idx(b, d));
  Value perRow = mul(b, group, idx(b, tileRows));
  Value tile = idx(b, tileRows * d);
  // q, acc, logits, tile, maxima, sums, row scales.
  SmallVector<Value> sizes{perHead, perHead, perRow,          tile,
                           group,   group,   idx(b, tileRows)};
  // |q|, the computed logits, E_t, S_t, three value weights, the bounds.
  if (withCertificate)
    sizes.append(
        {perHead, perRow, perRow, perRow, perRow, perRow, perRow, tile});
  return sizes;
}

Value Emitter::scratchBytes(ImplicitLocOpBuilder &b, Value floats) {
  // 16-byte steps keep every buffer aligned for vector loads.
  return mul(b, arith::CeilDivUIOp::create(b, floats, idx(b, 4)), idx(b, 16));
}

func::FuncOp Emitter::emitAttendCombine(bool withCertificate) {
  // (partialMax, partialSum, partialAcc, [cert, certVec, range], i, group,
  //  tiles, length, outRow, output, [bounds]): query head `i` of a group.
  SmallVector<Type> inputs{floats(), floats(), floats()};
  if (withCertificate)
    inputs.append({floats(), floats(), floats()});
  inputs.append({indexType(), indexType(), indexType(), indexType(),
                 indexType(), heads()});
  if (withCertificate)
    inputs.push_back(floats());
  func::FuncOp fn =
      createFunction(prefix + (withCertificate ? "_attend_combine_certified"
                                               : "_attend_combine"),
                     inputs, {}, false);
  Block &entry = fn.front();
  ImplicitLocOpBuilder rb(fn.getLoc(), OpBuilder::atBlockEnd(&entry));
  auto args = entry.getArguments();
  Value partialMax = args[0], partialSum = args[1], partialAcc = args[2];
  unsigned next = 3;
  Value partialCert, partialCertVec, partialRange;
  if (withCertificate) {
    partialCert = args[3];
    partialCertVec = args[4];
    partialRange = args[5];
    next = 6;
  }
  Value i = args[next], group = args[next + 1], tiles = args[next + 2],
        length = args[next + 3], outRow = args[next + 4],
        output = args[next + 5];
  Value bounds = withCertificate ? args[next + 6] : Value();
  const int64_t d = g.headDim;
  Value zero = idx(rb, 0), one = idx(rb, 1);
  Value negInf = arith::ConstantFloatOp::create(
      rb, Float32Type::get(context),
      APFloat::getInf(APFloat::IEEEsingle(), true));
  Value fzero = arith::ConstantFloatOp::create(rb, Float32Type::get(context),
                                               APFloat(0.0f));
  VectorType vt = VectorType::get({d}, f32());
  // Combine the tiles: M = max_t m_t, L = sum_t l_t e^(m_t - M), and the
  // output sum_t acc_t e^(m_t - M) / L: one rescale per tile, one division
  // at the end (docs/analysis.md, the contract).
  auto scalarExp = [&](ImplicitLocOpBuilder &eb, Value v) -> Value {
    VectorType single = VectorType::get({1}, f32());
    Value e = emitExp(eb, vector::BroadcastOp::create(eb, single, v));
    return vector::ExtractOp::create(eb, e, ArrayRef<int64_t>{0});
  };
  auto slotOf = [&](ImplicitLocOpBuilder &sb, Value t) {
    return add(sb, mul(sb, t, group), i);
  };
  auto maxLoop = scf::ForOp::create(
      rb, zero, tiles, one, ValueRange{negInf},
      [&](OpBuilder &n2, Location l2, Value s, ValueRange m) {
        ImplicitLocOpBuilder sb(l2, n2);
        Value v =
            memref::LoadOp::create(sb, partialMax, ValueRange{slotOf(sb, s)});
        scf::YieldOp::create(
            sb, ValueRange{arith::MaximumFOp::create(sb, m[0], v)});
      });
  Value total = maxLoop.getResult(0);
  Value zeros = arith::ConstantOp::create(
      rb, DenseElementsAttr::get(vt, rb.getF32FloatAttr(0.0)));
  auto sumLoop = scf::ForOp::create(
      rb, zero, tiles, one, ValueRange{fzero, zeros},
      [&](OpBuilder &n2, Location l2, Value s, ValueRange acc) {
        ImplicitLocOpBuilder sb(l2, n2);
        Value at = slotOf(sb, s);
        Value weight = scalarExp(
            sb, arith::SubFOp::create(
                    sb, memref::LoadOp::create(sb, partialMax, ValueRange{at}),
                    total));
        Value sum = arith::AddFOp::create(
            sb, acc[0],
            arith::MulFOp::create(
                sb, weight,
                memref::LoadOp::create(sb, partialSum, ValueRange{at})));
        Value part = vector::LoadOp::create(
            sb, vt, partialAcc, ValueRange{mul(sb, at, idx(sb, d))});
        Value vec = vector::FMAOp::create(
            sb, vector::BroadcastOp::create(sb, vt, weight), part, acc[1]);
        scf::YieldOp::create(sb, ValueRange{sum, vec});
      });
  Value normalized = arith::DivFOp::create(
      rb, sumLoop.getResult(1),
      vector::BroadcastOp::create(rb, vt, sumLoop.getResult(0)));
  if (withCertificate) {
    Value bound = combineCertificate(
        rb, {partialMax, partialSum, partialCert, partialCertVec, partialRange},
        i, group, tiles, total, normalized, length);
    memref::StoreOp::create(rb, bound, bounds, ValueRange{outRow});
  }
  Type element = cache.getElementType();
  if (!element.isF32())
    normalized =
        arith::TruncFOp::create(rb, VectorType::get({d}, element), normalized);
  vector::StoreOp::create(rb, normalized, output, ValueRange{outRow, zero});
  func::ReturnOp::create(rb);
  return fn;
}

Value Emitter::combineCertificate(ImplicitLocOpBuilder &b,
                                  const CertificatePartials &parts, Value i,
                                  Value group, Value tiles, Value total,
                                  Value normalized, Value length, Value channel,
                                  int64_t width) {
  const int64_t d = g.headDim;
  if (width == 0)
    width = d;
  const int64_t tileRows =
      std::max<int64_t>({g.block, g.sink, 1, certificatePartRows});
  const double u = 0x1p-24, theta = 4 * u;
  VectorType vt = VectorType::get({width}, f32());
  VectorType one = VectorType::get({1}, f32());
  Value zero = idx(b, 0), step = idx(b, 1);
  if (!channel)
    channel = zero;
  auto fc = [&](ImplicitLocOpBuilder &cb, double v) -> Value {
    return arith::ConstantFloatOp::create(cb, Float32Type::get(context),
                                          APFloat(float(v)));
  };
  auto vc = [&](ImplicitLocOpBuilder &cb, double v) -> Value {
    return arith::ConstantOp::create(
        cb, DenseElementsAttr::get(vt, cb.getF32FloatAttr(float(v))));
  };
  auto scalar = [&](ImplicitLocOpBuilder &cb, Value v,
                    Value (*fn)(ImplicitLocOpBuilder &, Value)) -> Value {
    Value r = fn(cb, vector::BroadcastOp::create(cb, one, v));
    return vector::ExtractOp::create(cb, r, ArrayRef<int64_t>{0});
  };
  auto slotOf = [&](ImplicitLocOpBuilder &sb, Value t) {
    return add(sb, mul(sb, t, group), i);
  };
  auto certAt = [&](ImplicitLocOpBuilder &sb, Value slot, int k) -> Value {
    return memref::LoadOp::create(
        sb, parts.cert,
        ValueRange{add(sb, mul(sb, slot, idx(sb, 8)), idx(sb, k))});
  };
  auto mulf = [&](ImplicitLocOpBuilder &sb, Value x, Value y) -> Value {
    return arith::MulFOp::create(sb, x, y);
  };
  auto addf = [&](ImplicitLocOpBuilder &sb, Value x, Value y) -> Value {
    return arith::AddFOp::create(sb, x, y);
  };
  auto maxf = [&](ImplicitLocOpBuilder &sb, Value x, Value y) -> Value {
    return arith::MaximumFOp::create(sb, x, y);
  };
  auto minf = [&](ImplicitLocOpBuilder &sb, Value x, Value y) -> Value {
    return arith::MinimumFOp::create(sb, x, y);
  };
  auto splat = [&](ImplicitLocOpBuilder &sb, Value x) -> Value {
    return vector::BroadcastOp::create(sb, vt, x);
  };
  // The largest dot-product error over all tiles, for E^k's shared part
  // K = 4 u maxDot + 2 theta / (1 - theta) (one rescale per tile).
  auto dotLoop = scf::ForOp::create(
      b, zero, tiles, step, ValueRange{fc(b, 0.0)},
      [&](OpBuilder &n, Location l, Value t, ValueRange m) {
        ImplicitLocOpBuilder sb(l, n);
        scf::YieldOp::create(
            sb, ValueRange{maxf(sb, m[0], certAt(sb, slotOf(sb, t), 7))});
      });
  float sharedConstant = float(2 * theta / (1 - theta));
  sharedConstant = std::nextafter(sharedConstant, 1.0f);
  Value shared = math::FmaOp::create(b, fc(b, 4 * u), dotLoop.getResult(0),
                                     fc(b, sharedConstant));
  // Sums (weighted by e^(m_t - M)), maxima and minima over the tiles.
  enum { Z, A1, A2, A3, Emax, B1, B2, Cz, W, U, G, Lo, Hi, Dmax, N };
  SmallVector<Value> init(N);
  for (int k : {Z, A1, A2, A3, Emax, B1, B2, Cz})
    init[k] = fc(b, 0.0);
  for (int k : {W, U, G, Dmax})
    init[k] = vc(b, 0.0);
  init[Lo] = vc(b, std::numeric_limits<float>::infinity());
  init[Hi] = vc(b, -std::numeric_limits<float>::infinity());
  auto loop = scf::ForOp::create(
      b, zero, tiles, step, init,
      [&](OpBuilder &n, Location l, Value t, ValueRange acc) {
        ImplicitLocOpBuilder sb(l, n);
        Value at = slotOf(sb, t);
        Value m = memref::LoadOp::create(sb, parts.partialMax, ValueRange{at});
        Value w = scalar(sb, arith::SubFOp::create(sb, m, total), emitExp);
        Value zt = memref::LoadOp::create(sb, parts.partialSum, ValueRange{at});
        Value z = math::FmaOp::create(
            sb, fc(sb, u), arith::SubFOp::create(sb, total, m), shared);
        Value c[8];
        for (int k = 0; k < 8; ++k)
          c[k] = certAt(sb, at, k);
        SmallVector<Value> next(N);
        next[Z] = math::FmaOp::create(sb, w, zt, acc[Z]);
        next[A1] = math::FmaOp::create(sb, w, c[0], acc[A1]);
        next[A2] = math::FmaOp::create(sb, w, c[1], acc[A2]);
        next[A3] = math::FmaOp::create(sb, w, c[2], acc[A3]);
        next[Emax] = maxf(sb, acc[Emax], c[3]);
        next[B1] = math::FmaOp::create(
            sb, w, math::FmaOp::create(sb, z, zt, c[4]), acc[B1]);
        // sum p phi(c + z) = sum p phi(c) + phi(z) (sum p + sum p phi(c)).
        next[B2] = math::FmaOp::create(
            sb, w,
            math::FmaOp::create(sb, scalar(sb, z, emitExpm1),
                                addf(sb, zt, c[5]), c[5]),
            acc[B2]);
        next[Cz] = maxf(sb, acc[Cz], addf(sb, c[6], z));
        auto vecAt = [&](int k) -> Value {
          return vector::LoadOp::create(
              sb, vt, parts.vec,
              ValueRange{
                  add(sb,
                      mul(sb, add(sb, mul(sb, at, idx(sb, 3)), idx(sb, k)),
                          idx(sb, d)),
                      channel)});
        };
        Value rangeSlot = t;
        auto rangeAt = [&](int k) -> Value {
          return vector::LoadOp::create(
              sb, vt, parts.range,
              ValueRange{add(
                  sb,
                  mul(sb, add(sb, mul(sb, rangeSlot, idx(sb, 3)), idx(sb, k)),
                      idx(sb, d)),
                  channel)});
        };
        next[W] = vector::FMAOp::create(sb, splat(sb, w), vecAt(0), acc[W]);
        next[U] = vector::FMAOp::create(
            sb, splat(sb, mulf(sb, w, scalar(sb, z, emitExp))), vecAt(1),
            acc[U]);
        next[G] = maxf(sb, acc[G], vecAt(2));
        next[Lo] = minf(sb, acc[Lo], rangeAt(0));
        next[Hi] = maxf(sb, acc[Hi], rangeAt(1));
        next[Dmax] = maxf(sb, acc[Dmax], rangeAt(2));
        scf::YieldOp::create(sb, next);
      });
  auto r = [&](int k) { return loop.getResult(k); };
  auto over = [&](Value x) -> Value {
    return arith::DivFOp::create(b, x, r(Z));
  };
  // Storage part: M = sum a^ E, a_t <= a^_t e^{E_t + M}.
  Value growth = scalar(b, over(r(A1)), emitExp);
  Value meanLogit = minf(b, mulf(b, growth, over(r(A2))), r(Emax));
  Value global = scalar(b, meanLogit, emitExp);
  Value keyFactor = mulf(
      b, minf(b, mulf(b, growth, over(r(A3))), scalar(b, r(Emax), emitExpm1)),
      global);
  // Kernel part.
  Value meanKernel = over(r(B1));
  Value kernelGrowth = scalar(b, meanKernel, emitExp);
  Value logitFactor =
      mulf(b, kernelGrowth, minf(b, over(r(B2)), scalar(b, r(Cz), emitExpm1)));
  Value positions = arith::UIToFPOp::create(
      b, f32(), arith::IndexCastOp::create(b, i64(), length));
  auto gamma = [&](Value count) -> Value {
    Value nu = mulf(b, count, fc(b, u));
    Value value =
        arith::DivFOp::create(b, nu, arith::SubFOp::create(b, fc(b, 1.0), nu));
    return arith::SelectOp::create(
        b, arith::CmpFOp::create(b, arith::CmpFPredicate::OLT, nu, fc(b, 1.0)),
        value, fc(b, std::numeric_limits<float>::infinity()));
  };
  // (1 + u) / (1 - gamma_T) - 1 = (u + gamma_T) / (1 - gamma_T).
  Value gammaSum = gamma(positions);
  Value weightError =
      arith::DivFOp::create(b, addf(b, fc(b, u), gammaSum),
                            arith::SubFOp::create(b, fc(b, 1.0), gammaSum));
  Value gammaAccumulate = gamma(addf(b, positions, fc(b, 2.0)));
  Value relative = math::FmaOp::create(
      b, gammaAccumulate, addf(b, fc(b, 1.0), weightError), weightError);
  Value span = vector::FMAOp::create(b, vc(b, 2.0), r(Dmax),
                                     arith::SubFOp::create(b, r(Hi), r(Lo)));
  Value value =
      minf(b,
           mulf(b, splat(b, global),
                minf(b,
                     mulf(b, splat(b, growth),
                          arith::DivFOp::create(b, r(W), splat(b, r(Z)))),
                     r(G))),
           r(Dmax));
  Value formula = vector::FMAOp::create(
      b, splat(b, addf(b, keyFactor, logitFactor)), span, value);
  formula = vector::FMAOp::create(
      b, splat(b, mulf(b, relative, kernelGrowth)),
      arith::DivFOp::create(b, r(U), splat(b, r(Z))), formula);
  // The hull bound R_j + relative max |V^_j|, which holds whatever the
  // logit errors (StreamingCertificate.h).
  Value largest =
      maxf(b, math::AbsFOp::create(b, r(Lo)), math::AbsFOp::create(b, r(Hi)));
  Value hull = vector::FMAOp::create(b, splat(b, relative), largest, span);
  // The certificate's own f32 rounding (docs/lowering.md): a relative
  // (rows + tiles + d + 256) 2^-23, times (1 + 2 X) for the formula, X its
  // largest exponent.
  Value count = addf(b,
                     arith::UIToFPOp::create(
                         b, f32(), arith::IndexCastOp::create(b, i64(), tiles)),
                     fc(b, double(tileRows + d + 256)));
  Value hullMargin = mulf(b, count, fc(b, 0x1p-23));
  Value exponent =
      maxf(b, maxf(b, r(Emax), r(Cz)), maxf(b, meanLogit, meanKernel));
  Value formulaMargin = mulf(
      b, hullMargin, math::FmaOp::create(b, fc(b, 2.0), exponent, fc(b, 1.0)));
  formula = vector::FMAOp::create(b, formula, splat(b, formulaMargin), formula);
  hull = vector::FMAOp::create(b, hull, splat(b, hullMargin), hull);
  // Overflow in f32 (a huge E_t) can leave inf * 0 = NaN in the formula;
  // the hull bound stands then.
  Value formulaIsNaN =
      arith::CmpFOp::create(b, arith::CmpFPredicate::UNO, formula, formula);
  Value perComponent =
      arith::SelectOp::create(b, formulaIsNaN, hull, minf(b, formula, hull));
  Type element = cache.getElementType();
  if (!element.isF32()) {
    // The output's rounding to its element type: u_e |o| + eta_e / 2.
    const an::FloatFormatInfo &info = an::getFloatFormatInfo(
        element.isF16() ? an::StorageKind::F16 : an::StorageKind::BF16);
    perComponent =
        addf(b, perComponent,
             vector::FMAOp::create(b, vc(b, info.unitRoundoff),
                                   math::AbsFOp::create(b, normalized),
                                   vc(b, info.minSubnormal / 2)));
  }
  // A NaN output (a logit that overflowed to inf makes inf - inf) has no
  // bound, whatever the hull says.
  perComponent = arith::SelectOp::create(
      b,
      arith::CmpFOp::create(b, arith::CmpFPredicate::UNO, normalized,
                            normalized),
      vc(b, std::numeric_limits<float>::infinity()), perComponent);
  Value bound = vector::ReductionOp::create(b, vector::CombiningKind::MAXIMUMF,
                                            perComponent);
  Value isNaN =
      arith::CmpFOp::create(b, arith::CmpFPredicate::UNO, bound, bound);
  return arith::SelectOp::create(
      b, isNaN, fc(b, std::numeric_limits<float>::infinity()), bound);
}

func::FuncOp Emitter::emitAttend(bool withCertificate) {
  SmallVector<Type> inputs{arenaType(), indexType(), heads(),
                           indexType(), heads(),     f32()};
  if (withCertificate)
    inputs.push_back(floats());
  func::FuncOp fn = createFunction(
      prefix + (withCertificate ? "_attend_certified" : "_attend"), inputs,
      {i32()}, true);
  Block &entry = fn.front();
  ImplicitLocOpBuilder b(fn.getLoc(), OpBuilder::atBlockEnd(&entry));
  Value arena = entry.getArgument(0), layer = entry.getArgument(1);
  Value query = entry.getArgument(2), length = entry.getArgument(3);
  Value output = entry.getArgument(4), softmaxScale = entry.getArgument(5);
  Value bounds = withCertificate ? entry.getArgument(6) : Value();
  Value numQueries = memref::DimOp::create(b, query, 0);
  Value badShape = attendShapeMismatch(b, query, output);
  if (withCertificate)
    badShape = arith::OrIOp::create(b, badShape,
                                    cmp(b, arith::CmpIPredicate::ne,
                                        memref::DimOp::create(b, bounds, 0),
                                        numQueries));
  Value out = guardEntry(
      b, arena, layer, badShape,
      [&](ImplicitLocOpBuilder &b, Value fill) -> Value {
        Value bad = arith::OrIOp::create(
            b, cmp(b, arith::CmpIPredicate::ne, length, fill),
            cmp(b, arith::CmpIPredicate::eq, length, idx(b, 0)));
        return guard(
            b,
            arith::XOrIOp::create(b, bad,
                                  arith::ConstantIntOp::create(b, 1, 1)),
            status(b, CacheStatus::BadLength), [&](ImplicitLocOpBuilder &b) {
              Value group =
                  arith::DivUIOp::create(b, numQueries, idx(b, g.heads));
              const int64_t d = g.headDim, splits = threads;
              Value zero = idx(b, 0), one = idx(b, 1);
              auto alloc = [&](ImplicitLocOpBuilder &ab, Value n) {
                return memref::AllocOp::create(ab, floats(), ValueRange{n});
              };
              // Tiles: the sink (when it holds positions), then one per block.
              AttendTiles layoutOfTiles = attendTiles(b, length);
              Value sinkRows = layoutOfTiles.sinkRows,
                    hasSink = layoutOfTiles.hasSink, aged = layoutOfTiles.aged,
                    tiles = layoutOfTiles.tiles,
                    bodyRows = layoutOfTiles.bodyRows;
              // Each tile of one KV head leaves its maximum, sum and
              // accumulators here; the combine step joins the tiles right
              // after that head, while they are still in cache, and the next
              // head reuses the buffers (per-head partials for all heads
              // at once were 16 MiB at 64K positions and GQA 4, written to
              // and read back from memory).
              Value slots = mul(b, tiles, group);
              Value partialMax = alloc(b, slots), partialSum = alloc(b, slots);
              Value partialAcc = alloc(b, mul(b, slots, idx(b, d)));
              Value partialCert, partialCertVec, partialRange;
              SmallVector<Value> certificateBuffers;
              if (withCertificate) {
                partialCert = alloc(b, mul(b, slots, idx(b, 8)));
                partialCertVec = alloc(b, mul(b, slots, idx(b, 3 * d)));
                partialRange = alloc(b, mul(b, tiles, idx(b, 3 * d)));
                certificateBuffers = {partialCert, partialCertVec,
                                      partialRange};
              }
              auto perHead = scf::ForOp::create(b, zero, idx(b, g.heads), one);
              b.setInsertionPointToStart(perHead.getBody());
              Value h = perHead.getInductionVar();
              Value splitCount = idx(b, splits);
              // The body is a function of its own: scf-to-openmp wraps it in a
              // memref.alloca_scope, which must stay a single block.
              scf::ParallelOp::create(
                  b, ValueRange{zero}, ValueRange{idx(b, splits)},
                  ValueRange{one},
                  [&](OpBuilder &n, Location l, ValueRange ivs) {
                    ImplicitLocOpBuilder hb(l, n);
                    SmallVector<Value> operands{
                        arena,  layer,    query,      softmaxScale, h,
                        ivs[0], group,    tiles,      hasSink,      sinkRows,
                        aged,   bodyRows, partialMax, partialSum,   partialAcc};
                    llvm::append_range(operands, certificateBuffers);
                    operands.push_back(splitCount);
                    func::CallOp::create(
                        hb, withCertificate ? attendPartCertified : attendPart,
                        operands);
                  });
              // Combine the tiles of each query head of this KV head.
              scf::ForOp::create(
                  b, zero, group, one, ValueRange{},
                  [&](OpBuilder &n, Location l, Value i, ValueRange) {
                    ImplicitLocOpBuilder rb(l, n);
                    SmallVector<Value> operands{partialMax, partialSum,
                                                partialAcc};
                    llvm::append_range(operands, certificateBuffers);
                    operands.append({i, group, tiles, length,
                                     add(rb, mul(rb, h, group), i), output});
                    if (withCertificate)
                      operands.push_back(bounds);
                    func::CallOp::create(rb,
                                         withCertificate
                                             ? attendCombineCertified
                                             : attendCombine,
                                         operands);
                    scf::YieldOp::create(rb);
                  });
              b.setInsertionPointAfter(perHead);
              for (Value buffer : {partialMax, partialSum, partialAcc})
                memref::DeallocOp::create(b, buffer);
              for (Value buffer : certificateBuffers)
                memref::DeallocOp::create(b, buffer);
              return status(b, CacheStatus::Ok);
            });
      });
  func::ReturnOp::create(b, ValueRange{out});
  return fn;
}

func::FuncOp Emitter::emitLoadImpl() {
  // `row` is a head_dim f32 scratch row from the caller.
  func::FuncOp fn = createFunction(
      prefix + "_load_impl",
      {arenaType(), indexType(), indexType(), tokens(), tokens(), floats()},
      {i32()}, false);
  Block &entry = fn.front();
  ImplicitLocOpBuilder b(fn.getLoc(), OpBuilder::atBlockEnd(&entry));
  Value arena = entry.getArgument(0), layer = entry.getArgument(1);
  Value start = entry.getArgument(2);
  Value keys = entry.getArgument(3), values = entry.getArgument(4);
  Value row = entry.getArgument(5);
  Value count = memref::DimOp::create(b, keys, 0);
  Value out = guardEntry(
      b, arena, layer, tokenShapeMismatch(b, keys, values),
      [&](ImplicitLocOpBuilder &b, Value fill) -> Value {
        Value outside = arith::OrIOp::create(
            b, cmp(b, arith::CmpIPredicate::ugt, start, fill),
            cmp(b, arith::CmpIPredicate::ugt, count, sub(b, fill, start)));
        return guard(
            b,
            arith::XOrIOp::create(b, outside,
                                  arith::ConstantIntOp::create(b, 1, 1)),
            status(b, CacheStatus::BadLength), [&](ImplicitLocOpBuilder &b) {
              scf::ForOp::create(
                  b, idx(b, 0), count, idx(b, 1), ValueRange{},
                  [&](OpBuilder &n, Location l, Value t, ValueRange) {
                    ImplicitLocOpBuilder tb(l, n);
                    Value p = add(tb, start, t);
                    for (int64_t h = 0; h < g.heads; ++h)
                      for (int kv = 0; kv < 2; ++kv) {
                        Value item = itemOf(tb, layer, idx(tb, h), kv);
                        Place place = locate(tb, item, p, fill);
                        callLoad(tb, arena, place, idx(tb, 1), row, idx(tb, 0));
                        Value target = kv ? values : keys;
                        scf::ForOp::create(
                            tb, idx(tb, 0), idx(tb, g.headDim), idx(tb, 1),
                            ValueRange{},
                            [&](OpBuilder &n2, Location l2, Value j,
                                ValueRange) {
                              ImplicitLocOpBuilder jb(l2, n2);
                              Value v = memref::LoadOp::create(jb, row,
                                                               ValueRange{j});
                              Type element = cache.getElementType();
                              if (!element.isF32())
                                v = arith::TruncFOp::create(jb, element, v);
                              memref::StoreOp::create(
                                  jb, v, target, ValueRange{t, idx(jb, h), j});
                              scf::YieldOp::create(jb);
                            });
                      }
                    scf::YieldOp::create(tb);
                  });
              return status(b, CacheStatus::Ok);
            });
      });
  func::ReturnOp::create(b, ValueRange{out});
  return fn;
}

void Emitter::emitLoad(CacheFunctions &result, func::FuncOp impl) {
  func::FuncOp fn = createFunction(
      prefix + "_load",
      {arenaType(), indexType(), indexType(), tokens(), tokens()}, {i32()},
      true);
  Block &entry = fn.front();
  ImplicitLocOpBuilder b(fn.getLoc(), OpBuilder::atBlockEnd(&entry));
  Value row =
      memref::AllocOp::create(b, floats(), ValueRange{idx(b, g.headDim)});
  SmallVector<Value> operands(entry.getArguments());
  operands.push_back(row);
  Value st = func::CallOp::create(b, impl, operands).getResult(0);
  memref::DeallocOp::create(b, row);
  func::ReturnOp::create(b, ValueRange{st});
  result.load = fn;
}

LogicalResult Emitter::run(CacheFunctions &result) {
  emitTables();
  emitDispatchers();
  emitTileKernels();
  emitRowHelpers();
  attendPart = emitAttendPart(false);
  attendCombine = emitAttendCombine(false);
  if (certified) {
    emitCertificateKernels();
    attendPartCertified = emitAttendPart(true);
    attendCombineCertified = emitAttendCombine(true);
  }
  emitArenaBytes(result);
  emitInit(result);
  emitAppend(result, emitAppendImpl());
  result.attend = emitAttend(false);
  if (certified)
    result.attendCertified = emitAttend(true);
  emitLoad(result, emitLoadImpl());
  return success();
}

LogicalResult Emitter::runDevice(DeviceFunctions &result) {
  device = true;
  emitTables();
  emitDispatchers();
  emitRowHelpers();
  CacheFunctions functions;
  emitInit(functions);
  result.init = functions.init;
  result.appendCheck = emitAppendImpl(AppendKind::Check);
  result.appendStore = emitAppendImpl(AppendKind::Store);
  result.loadImpl = emitLoadImpl();
  return success();
}

FailureOr<CacheFunctions> mlir::kvprec::emitCacheFunctions(
    ModuleOp module, CacheType cache, const lay::ArenaLayout &layout,
    FormatCodegen &formats, an::StorageKind dequantizer,
    const std::string &prefix, const StorageTargetInfo &target,
    bool certified) {
  Emitter emitter(module, cache, layout, formats, dequantizer, prefix, target,
                  certified);
  CacheFunctions result;
  if (failed(emitter.run(result)))
    return failure();
  return result;
}
