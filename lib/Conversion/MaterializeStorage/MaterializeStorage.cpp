//===- MaterializeStorage.cpp - caches become arenas and calls ------------===//

#include "CacheCodegen.h"
#include "FormatCodegen.h"

#include "kvprec/Conversion/Passes.h"
#include "kvprec/Dialect/KVPrec/IR/KVPrecAttrs.h"
#include "kvprec/Dialect/KVPrec/IR/KVPrecOps.h"
#include "kvprec/Dialect/KVPrec/Transforms/PlanUtils.h"
#include "kvprec/Format/CacheLayout.h"

#include "mlir/Dialect/ControlFlow/IR/ControlFlowOps.h"
#include "mlir/Dialect/Func/Transforms/FuncConversions.h"
#include "mlir/Dialect/GPU/IR/GPUDialect.h"
#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/Transforms/DialectConversion.h"

#include "llvm/ADT/DenseSet.h"
#include "llvm/ADT/MapVector.h"
#include "llvm/ADT/STLExtras.h"
#include "llvm/ADT/StringExtras.h"

#include <memory>

namespace mlir::kvprec {
#define GEN_PASS_DEF_MATERIALIZESTORAGE
#include "kvprec/Conversion/Passes.h.inc"
} // namespace mlir::kvprec

using namespace mlir;
using namespace mlir::kvprec;
namespace an = ::kvprec::analysis;
namespace lay = ::kvprec::layout;

namespace {
/// What the pass generated for one cache type.
struct LoweredCache {
  std::unique_ptr<lay::ArenaLayout> layout;
  CacheFunctions functions;
};
using LoweredCaches = llvm::MapVector<Type, LoweredCache>;

/// The dequantizer precision a plan's certificate assumes (f32 without
/// one; the certificate's verifier allows only f32, f16 and bf16).
an::StorageKind getDequantizer(CacheType cache) {
  CertificateAttr certificate = cache.getPlan().getCertificate();
  return certificate ? readCertificateAttr(certificate).dequant
                     : an::StorageKind::F32;
}

/// Emits `cf.assert`s that stop with a message naming a failed status,
/// one for each status in `possible`.
void assertOk(OpBuilder &builder, Location loc, Value status, StringRef op,
              ArrayRef<CacheStatus> possible) {
  static const std::pair<CacheStatus, const char *> messages[] = {
      {CacheStatus::Full, "the append would exceed the cache capacity"},
      {CacheStatus::BadLength,
       "the position or length disagrees with the layer's fill count"},
      {CacheStatus::BadLayer, "the layer is outside the cache"},
      {CacheStatus::BadArena, "the arena is smaller than the cache layout"},
      {CacheStatus::Unrepresentable,
       "a value cannot be stored in its format (non-finite, or its scale "
       "overflows)"},
      {CacheStatus::BadShape, "an operand's shape does not match the cache"},
  };
  for (auto [code, message] : messages) {
    if (!llvm::is_contained(possible, code))
      continue;
    Value failed = arith::CmpIOp::create(
        builder, loc, arith::CmpIPredicate::ne, status,
        arith::ConstantIntOp::create(builder, loc, int64_t(code), 32));
    cf::AssertOp::create(builder, loc, failed,
                         builder.getStringAttr(op.str() + ": " + message));
  }
}

/// A memref value cast to the fully dynamic type the generated functions
/// take.
Value castToDynamic(OpBuilder &builder, Location loc, Value value) {
  auto type = cast<MemRefType>(value.getType());
  SmallVector<int64_t> shape(type.getRank(), ShapedType::kDynamic);
  auto dynamic = MemRefType::get(shape, type.getElementType());
  if (dynamic == type)
    return value;
  return memref::CastOp::create(builder, loc, dynamic, value);
}

LogicalResult checkIdentityLayout(Operation *op, Value value, StringRef name) {
  auto type = cast<MemRefType>(value.getType());
  if (!type.getLayout().isIdentity())
    return op->emitOpError() << "cannot be lowered: " << name
                             << " must have the identity layout, not " << type;
  return success();
}

template <typename OpTy>
struct CachePattern : public OpConversionPattern<OpTy> {
  /// `onDevice`: arenas are GPU memory (target=nvptx).
  CachePattern(const TypeConverter &converter, MLIRContext *context,
               LoweredCaches &caches, bool onDevice)
      : OpConversionPattern<OpTy>(converter, context), caches(caches),
        onDevice(onDevice) {}
  const CacheFunctions &functionsOf(Value cache) const {
    return caches.find(cache.getType())->second.functions;
  }
  LoweredCaches &caches;
  bool onDevice;
};

/// gpu.wait async: the start of a chain of device operations.
Value startChain(OpBuilder &builder, Location loc) {
  return gpu::WaitOp::create(builder, loc,
                             gpu::AsyncTokenType::get(builder.getContext()),
                             ValueRange{})
      .getAsyncToken();
}

struct AllocLowering : public CachePattern<AllocOp> {
  using CachePattern::CachePattern;
  LogicalResult
  matchAndRewrite(AllocOp op, OpAdaptor,
                  ConversionPatternRewriter &rewriter) const override {
    Location loc = op.getLoc();
    const LoweredCache &lowered = caches.find(op.getType())->second;
    Value bytes = arith::ConstantIndexOp::create(
        rewriter, loc, lowered.layout->getTotalBytes());
    auto arenaType =
        MemRefType::get({ShapedType::kDynamic}, rewriter.getI8Type());
    Value arena;
    if (onDevice) {
      // Device memory (cuMemAlloc aligns to 256 bytes, more than the
      // layout's 64).
      Value token = startChain(rewriter, loc);
      auto alloc = gpu::AllocOp::create(rewriter, loc, arenaType,
                                        token.getType(), ValueRange{token},
                                        ValueRange{bytes}, ValueRange{}, false);
      gpu::WaitOp::create(rewriter, loc, Type(),
                          ValueRange{alloc.getAsyncToken()});
      arena = alloc.getMemref();
    } else {
      arena =
          memref::AllocOp::create(rewriter, loc, arenaType, ValueRange{bytes},
                                  rewriter.getI64IntegerAttr(64));
    }
    auto init = func::CallOp::create(rewriter, loc, lowered.functions.init,
                                     ValueRange{arena});
    assertOk(rewriter, loc, init.getResult(0), "kvprec.alloc",
             {CacheStatus::BadArena});
    rewriter.replaceOp(op, arena);
    return success();
  }
};

struct DeallocLowering : public CachePattern<DeallocOp> {
  using CachePattern::CachePattern;
  LogicalResult
  matchAndRewrite(DeallocOp op, OpAdaptor adaptor,
                  ConversionPatternRewriter &rewriter) const override {
    if (onDevice) {
      Location loc = op.getLoc();
      Value token = startChain(rewriter, loc);
      auto dealloc =
          gpu::DeallocOp::create(rewriter, loc, token.getType(),
                                 ValueRange{token}, adaptor.getCache());
      gpu::WaitOp::create(rewriter, loc, Type(),
                          ValueRange{dealloc.getAsyncToken()});
      rewriter.eraseOp(op);
      return success();
    }
    rewriter.replaceOpWithNewOp<memref::DeallocOp>(op, adaptor.getCache());
    return success();
  }
};

struct AppendLowering : public CachePattern<AppendOp> {
  using CachePattern::CachePattern;
  LogicalResult
  matchAndRewrite(AppendOp op, OpAdaptor adaptor,
                  ConversionPatternRewriter &rewriter) const override {
    Location loc = op.getLoc();
    Value layer = arith::ConstantIndexOp::create(rewriter, loc, op.getLayer());
    auto call = func::CallOp::create(
        rewriter, loc, functionsOf(op.getCache()).append,
        ValueRange{adaptor.getCache(), layer,
                   castToDynamic(rewriter, loc, op.getKeys()),
                   castToDynamic(rewriter, loc, op.getValues()),
                   op.getPosition()});
    assertOk(rewriter, loc, call.getResult(0), "kvprec.append",
             {CacheStatus::Full, CacheStatus::BadLength,
              CacheStatus::Unrepresentable, CacheStatus::BadShape});
    rewriter.eraseOp(op);
    return success();
  }
};

struct AttendLowering : public CachePattern<AttendOp> {
  using CachePattern::CachePattern;
  LogicalResult
  matchAndRewrite(AttendOp op, OpAdaptor adaptor,
                  ConversionPatternRewriter &rewriter) const override {
    Location loc = op.getLoc();
    Value layer = arith::ConstantIndexOp::create(rewriter, loc, op.getLayer());
    Value scale =
        arith::ConstantFloatOp::create(rewriter, loc, rewriter.getF32Type(),
                                       APFloat(float(op.getEffectiveScale())));
    SmallVector<Value> operands{adaptor.getCache(),
                                layer,
                                castToDynamic(rewriter, loc, op.getQuery()),
                                op.getLength(),
                                castToDynamic(rewriter, loc, op.getOutput()),
                                scale};
    const CacheFunctions &functions = functionsOf(op.getCache());
    if (!op.getBound()) {
      auto call =
          func::CallOp::create(rewriter, loc, functions.attend, operands);
      assertOk(rewriter, loc, call.getResult(0), "kvprec.attend",
               {CacheStatus::BadLength, CacheStatus::BadShape});
      rewriter.eraseOp(op);
      return success();
    }
    // The certified entry writes one bound per query head; the op's result
    // is the largest. On the GPU the bounds are device memory, copied back.
    Value zero = arith::ConstantIndexOp::create(rewriter, loc, 0);
    Value one = arith::ConstantIndexOp::create(rewriter, loc, 1);
    Value heads = memref::DimOp::create(rewriter, loc, op.getQuery(), 0);
    auto boundsType =
        MemRefType::get({ShapedType::kDynamic}, rewriter.getF32Type());
    Value bounds =
        memref::AllocOp::create(rewriter, loc, boundsType, ValueRange{heads});
    Value deviceBounds = bounds;
    if (onDevice) {
      Value token = startChain(rewriter, loc);
      auto alloc = gpu::AllocOp::create(rewriter, loc, boundsType,
                                        token.getType(), ValueRange{token},
                                        ValueRange{heads}, ValueRange{}, false);
      gpu::WaitOp::create(rewriter, loc, Type(),
                          ValueRange{alloc.getAsyncToken()});
      deviceBounds = alloc.getMemref();
    }
    operands.push_back(deviceBounds);
    auto call = func::CallOp::create(rewriter, loc, functions.attendCertified,
                                     operands);
    assertOk(rewriter, loc, call.getResult(0), "kvprec.attend",
             {CacheStatus::BadLength, CacheStatus::BadShape});
    if (onDevice) {
      Value token = startChain(rewriter, loc);
      token = gpu::MemcpyOp::create(rewriter, loc, token.getType(),
                                    ValueRange{token}, bounds, deviceBounds)
                  .getAsyncToken();
      token = gpu::DeallocOp::create(rewriter, loc, token.getType(),
                                     ValueRange{token}, deviceBounds)
                  .getAsyncToken();
      gpu::WaitOp::create(rewriter, loc, Type(), ValueRange{token});
    }
    Value initial = arith::ConstantFloatOp::create(
        rewriter, loc, rewriter.getF32Type(), APFloat(0.0f));
    auto loop = scf::ForOp::create(
        rewriter, loc, zero, heads, one, ValueRange{initial},
        [&](OpBuilder &nested, Location l, Value head, ValueRange acc) {
          Value bound =
              memref::LoadOp::create(nested, l, bounds, ValueRange{head});
          scf::YieldOp::create(
              nested, l,
              ValueRange{arith::MaximumFOp::create(nested, l, acc[0], bound)});
        });
    memref::DeallocOp::create(rewriter, loc, bounds);
    rewriter.replaceOp(op, loop.getResult(0));
    return success();
  }
};

struct LoadLowering : public CachePattern<LoadOp> {
  using CachePattern::CachePattern;
  LogicalResult
  matchAndRewrite(LoadOp op, OpAdaptor adaptor,
                  ConversionPatternRewriter &rewriter) const override {
    Location loc = op.getLoc();
    Value layer = arith::ConstantIndexOp::create(rewriter, loc, op.getLayer());
    auto call = func::CallOp::create(
        rewriter, loc, functionsOf(op.getCache()).load,
        ValueRange{adaptor.getCache(), layer, op.getStart(),
                   castToDynamic(rewriter, loc, op.getKeys()),
                   castToDynamic(rewriter, loc, op.getValues())});
    assertOk(rewriter, loc, call.getResult(0), "kvprec.load",
             {CacheStatus::BadLength, CacheStatus::BadShape});
    rewriter.eraseOp(op);
    return success();
  }
};

struct MaterializeStoragePass
    : public mlir::kvprec::impl::MaterializeStorageBase<
          MaterializeStoragePass> {
  using Base::Base;
  void runOnOperation() override;
};
} // namespace

void MaterializeStoragePass::runOnOperation() {
  ModuleOp module = getOperation();
  // Every cache type that appears anywhere, with the first op that uses it
  // (for diagnostics).
  llvm::MapVector<Type, Operation *> cacheTypes;
  bool failedAny = false;
  module.walk([&](Operation *op) {
    auto note = [&](Type type) {
      if (auto cache = dyn_cast<CacheType>(type))
        cacheTypes.insert({cache, op});
    };
    for (Type type : op->getResultTypes())
      note(type);
    for (Type type : op->getOperandTypes())
      note(type);
    if (auto fn = dyn_cast<FunctionOpInterface>(op))
      for (Type type : fn.getArgumentTypes())
        note(type);
  });
  if (cacheTypes.empty())
    return;
  if (threads < 1 || threads > 1024) {
    cacheTypes.front().second->emitError()
        << "kvprec-materialize-storage: threads must be between 1 and 1024, "
           "got "
        << int64_t(threads);
    return signalPassFailure();
  }
  if (prefetchDistance < 0 || prefetchDistance > (int64_t(1) << 20)) {
    cacheTypes.front().second->emitError()
        << "kvprec-materialize-storage: prefetch-distance must be between 0 "
           "and 1048576 bytes, got "
        << int64_t(prefetchDistance);
    return signalPassFailure();
  }
  // What the patterns cannot lower, reported before anything changes; the
  // caches whose attention returns the run-time certificate.
  llvm::DenseSet<Type> certifiedCaches;
  module.walk([&](Operation *op) {
    auto check = [&](Value value, StringRef name) {
      if (failed(checkIdentityLayout(op, value, name)))
        failedAny = true;
    };
    if (auto append = dyn_cast<AppendOp>(op)) {
      check(append.getKeys(), "keys");
      check(append.getValues(), "values");
    } else if (auto load = dyn_cast<LoadOp>(op)) {
      check(load.getKeys(), "keys");
      check(load.getValues(), "values");
    } else if (auto attend = dyn_cast<AttendOp>(op)) {
      check(attend.getQuery(), "the query");
      check(attend.getOutput(), "the output");
      if (attend.getBound())
        certifiedCaches.insert(attend.getCache().getType());
    }
  });

  // The target's answers: the CPU's, or the NVPTX lowering's.
  bool onDevice = target == "nvptx";
  if (!onDevice && target != "cpu") {
    cacheTypes.front().second->emitError()
        << "kvprec-materialize-storage: target must be cpu or nvptx, got '"
        << target << "'";
    return signalPassFailure();
  }
  int64_t sm = getSMVersion(chip);
  if (onDevice && (sm < 80 || getNVVMFeatures(chip).empty())) {
    cacheTypes.front().second->emitError()
        << "kvprec-materialize-storage: chip must be one of sm_80, sm_86, "
           "sm_87, sm_89, sm_90, sm_100, sm_101, sm_120, got '"
        << chip << "'";
    return signalPassFailure();
  }
  if (symbolPrefix.empty() ||
      !llvm::all_of(symbolPrefix,
                    [](char c) { return llvm::isAlnum(c) || c == '_'; }) ||
      llvm::isDigit(symbolPrefix[0])) {
    cacheTypes.front().second->emitError()
        << "kvprec-materialize-storage: symbol-prefix must be a C "
           "identifier, got '"
        << symbolPrefix << "'";
    return signalPassFailure();
  }
  if (storePieces < 0 || storePieces > 1024) {
    cacheTypes.front().second->emitError()
        << "kvprec-materialize-storage: store-pieces must be between 0 and "
           "1024, got "
        << int64_t(storePieces);
    return signalPassFailure();
  }
  CPUStorageTargetInfo cpuInfo(threads, prefetchDistance, x86Avx512,
                               /*vectorBits=*/512, storePieces);
  NVPTXStorageTargetInfo gpuInfo(sm);
  const StorageTargetInfo &targetInfo =
      onDevice ? static_cast<const StorageTargetInfo &>(gpuInfo) : cpuInfo;
  FormatCodegen formats(module, targetInfo);
  LoweredCaches caches;
  int64_t index = 0;
  for (auto [type, user] : cacheTypes) {
    auto cache = cast<CacheType>(type);
    if (!cache.getPlan()) {
      user->emitError() << "cannot lower " << cache
                        << ": it has no precision plan (kvprec-assign-"
                           "precision=\"mode=uniform format=f32\" stores it "
                           "exactly)";
      failedAny = true;
      continue;
    }
    if (cache.getHeadDim() > kMaxLoweredHeadDim) {
      user->emitError() << "cannot lower " << cache << ": head_dim "
                        << cache.getHeadDim() << " exceeds "
                        << kMaxLoweredHeadDim
                        << ", the most the lowering takes (its kernels keep "
                           "rows, or on NVPTX their lane pieces, in "
                           "registers)";
      failedAny = true;
      continue;
    }
    ::kvprec::certify::Plan plan =
        cache.getPlan().getPlainPlan(cache.getHeadDim());
    LoweredCache lowered;
    an::Status status = lay::ArenaLayout::build(plan, lowered.layout);
    if (status.failed()) {
      user->emitError() << "cannot lay out " << cache << ": "
                        << status.getMessage();
      failedAny = true;
      continue;
    }
    std::string prefix = symbolPrefix + std::to_string(index++);
    bool certified = runtimeCertificate || certifiedCaches.contains(type);
    FailureOr<CacheFunctions> functions =
        onDevice ? emitGPUCacheFunctions(module, cache, *lowered.layout,
                                         getDequantizer(cache), prefix, gpuInfo,
                                         certified, user)
                 : emitCacheFunctions(module, cache, *lowered.layout, formats,
                                      getDequantizer(cache), prefix, targetInfo,
                                      certified);
    if (failed(functions)) {
      failedAny = true;
      continue;
    }
    lowered.functions = *functions;
    caches.insert({type, std::move(lowered)});
  }
  if (failedAny)
    return signalPassFailure();

  MLIRContext *context = &getContext();
  TypeConverter converter;
  converter.addConversion([](Type type) { return type; });
  converter.addConversion([](CacheType cache) -> Type {
    return MemRefType::get({ShapedType::kDynamic},
                           IntegerType::get(cache.getContext(), 8));
  });
  ConversionTarget target(*context);
  target.addIllegalDialect<KVPrecDialect>();
  target.addLegalOp<CalibrationOp>();
  target.markUnknownOpDynamicallyLegal([&](Operation *op) {
    if (auto fn = dyn_cast<FunctionOpInterface>(op))
      return converter.isSignatureLegal(
          cast<FunctionType>(fn.getFunctionType()));
    return converter.isLegal(op);
  });
  RewritePatternSet patterns(context);
  patterns.add<AllocLowering, DeallocLowering, AppendLowering, AttendLowering,
               LoadLowering>(converter, context, caches, onDevice);
  populateFunctionOpInterfaceTypeConversionPattern<func::FuncOp>(patterns,
                                                                 converter);
  populateCallOpTypeConversionPattern(patterns, converter);
  populateReturnOpTypeConversionPattern(patterns, converter);
  if (failed(applyPartialConversion(module, target, std::move(patterns))))
    return signalPassFailure();
  // The statistics served the analysis; nothing refers to them once the
  // allocs are gone, and no LLVM translation exists for them.
  for (CalibrationOp calibration :
       llvm::make_early_inc_range(module.getOps<CalibrationOp>()))
    calibration.erase();
}
