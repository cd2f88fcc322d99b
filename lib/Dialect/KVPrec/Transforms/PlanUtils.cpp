//===- PlanUtils.cpp - plans between IR and the plain analysis ------------===//

#include "kvprec/Dialect/KVPrec/Transforms/PlanUtils.h"

#include "mlir/IR/AttrTypeSubElements.h"
#include "mlir/IR/Builders.h"
#include "mlir/IR/BuiltinTypes.h"
#include "llvm/ADT/StringSwitch.h"
#include "llvm/Support/MathExtras.h"

using namespace mlir;
using namespace mlir::kvprec;
namespace an = ::kvprec::analysis;

static Type toType(MLIRContext *context, an::StorageKind kind) {
  switch (kind) {
  case an::StorageKind::F32:
    return Float32Type::get(context);
  case an::StorageKind::F16:
    return Float16Type::get(context);
  case an::StorageKind::BF16:
    return BFloat16Type::get(context);
  case an::StorageKind::F8E4M3FN:
    return Float8E4M3FNType::get(context);
  case an::StorageKind::F8E5M2:
    return Float8E5M2Type::get(context);
  case an::StorageKind::Int8:
    return IntegerType::get(context, 8);
  case an::StorageKind::Int4:
    return IntegerType::get(context, 4);
  case an::StorageKind::Int2:
  case an::StorageKind::Int3:
    break;
  }
  return IntegerType::get(context, 2);
}

std::optional<an::StorageKind>
mlir::kvprec::parseStorageKind(llvm::StringRef name) {
  return llvm::StringSwitch<std::optional<an::StorageKind>>(name)
      .Case("f32", an::StorageKind::F32)
      .Case("f16", an::StorageKind::F16)
      .Case("bf16", an::StorageKind::BF16)
      .Case("f8E4M3FN", an::StorageKind::F8E4M3FN)
      .Case("f8E5M2", an::StorageKind::F8E5M2)
      .Case("i8", an::StorageKind::Int8)
      .Case("i4", an::StorageKind::Int4)
      .Case("i2", an::StorageKind::Int2)
      .Default(std::nullopt);
}

an::StorageFormat mlir::kvprec::toAnalysisFormat(StorageFormatAttr attr) {
  return attr.getAnalysisFormat();
}

StorageFormatAttr
mlir::kvprec::toFormatAttr(MLIRContext *context,
                           const an::StorageFormat &format) {
  Type storage = toType(context, format.kind);
  if (!an::isScaled(format))
    return StorageFormatAttr::get(context, storage);
  return StorageFormatAttr::get(
      context, storage,
      format.scheme == an::QuantScheme::Symmetric ? QuantScheme::symmetric
                                                  : QuantScheme::asymmetric,
      format.granularity == an::Granularity::TokenGroup
          ? Granularity::token_group
          : Granularity::channel_group,
      format.groupSize, toType(context, format.scaleKind));
}

std::optional<::kvprec::certify::Plan>
mlir::kvprec::toPlainPlan(CacheType cache) {
  if (!cache.getPlan())
    return std::nullopt;
  return cache.getPlan().getPlainPlan(cache.getHeadDim());
}

/// The compact form of an index list: one entry when all agree.
static DenseI8ArrayAttr compact(MLIRContext *context,
                                const std::vector<int8_t> &values) {
  bool uniform =
      !values.empty() && llvm::all_equal(ArrayRef<int8_t>(values));
  return DenseI8ArrayAttr::get(
      context, uniform ? ArrayRef<int8_t>(values.front())
                       : ArrayRef<int8_t>(values));
}

PlanAttr mlir::kvprec::buildPlanAttr(MLIRContext *context,
                                     const ::kvprec::certify::Plan &plan,
                                     CertificateAttr certificate) {
  SmallVector<Attribute> formats;
  for (const an::StorageFormat &format : plan.formats)
    formats.push_back(toFormatAttr(context, format));
  std::vector<int8_t> body = plan.bodyFormats;
  // A per-block list whose blocks agree within each item is stored per item.
  if (plan.perBlock) {
    int64_t blocks = plan.geometry.getNumBodyBlocks();
    bool uniformPerItem = true;
    for (int64_t item = 0; item < plan.getNumItems() && uniformPerItem; ++item)
      for (int64_t b = 1; b < blocks; ++b)
        if (body[item * blocks + b] != body[item * blocks]) {
          uniformPerItem = false;
          break;
        }
    if (uniformPerItem) {
      std::vector<int8_t> perItem;
      for (int64_t item = 0; item < plan.getNumItems(); ++item)
        perItem.push_back(body[item * blocks]);
      body = std::move(perItem);
    }
  }
  const ::kvprec::certify::Geometry &g = plan.geometry;
  return PlanAttr::get(context, g.layers, g.heads, g.capacity, g.block, g.sink,
                       g.window,
                       ArrayAttr::get(context, formats),
                       compact(context, plan.sinkFormats),
                       compact(context, body),
                       compact(context, plan.windowFormats), certificate);
}

void mlir::kvprec::replaceCacheTypes(
    Operation *root, llvm::function_ref<CacheType(CacheType)> newType) {
  AttrTypeReplacer replacer;
  replacer.addReplacement(
      [&](CacheType type) -> std::pair<Type, WalkResult> {
        CacheType replacement = newType(type);
        return {replacement ? replacement : type, WalkResult::skip()};
      });
  replacer.recursivelyReplaceElementsIn(root, /*replaceAttrs=*/true,
                                        /*replaceLocs=*/false,
                                        /*replaceTypes=*/true);
}

CertificateAttr
mlir::kvprec::buildCertificateAttr(MLIRContext *context,
                                   const CertificateRecord &record) {
  Type f32 = Float32Type::get(context);
  return CertificateAttr::get(
      context, record.probabilistic, APFloat(record.confidence),
      DenseF64ArrayAttr::get(context, record.tolerances),
      APFloat(record.budget), APFloat(record.bound),
      DenseF64ArrayAttr::get(context, record.layerBounds),
      APFloat(record.necessaryBits), APFloat(record.averageBits),
      APFloat(record.bytesVsF16), record.calibratedLength,
      record.querySamples, record.extrapolated, APFloat(record.margin),
      APFloat(record.softmaxScale), toType(context, record.dequant), f32,
      record.accumulateBlock, record.expUlps);
}

CertificateRecord mlir::kvprec::readCertificateAttr(CertificateAttr attr) {
  CertificateRecord record;
  record.probabilistic = attr.getProbabilistic();
  record.confidence = attr.getConfidence().convertToDouble();
  llvm::append_range(record.tolerances, attr.getTolerance().asArrayRef());
  record.budget = attr.getBudget().convertToDouble();
  record.bound = attr.getBound().convertToDouble();
  llvm::append_range(record.layerBounds, attr.getLayerBounds().asArrayRef());
  record.necessaryBits = attr.getNecessaryBits().convertToDouble();
  record.averageBits = attr.getAverageBits().convertToDouble();
  record.bytesVsF16 = attr.getBytesVsF16().convertToDouble();
  record.calibratedLength = attr.getCalibratedLength();
  record.querySamples = attr.getQuerySamples();
  record.extrapolated = attr.getExtrapolated();
  record.margin = attr.getMargin().convertToDouble();
  record.softmaxScale = attr.getSoftmaxScale().convertToDouble();
  Type dequant = attr.getDequant();
  record.dequant = isa<Float16Type>(dequant)    ? an::StorageKind::F16
                   : isa<BFloat16Type>(dequant) ? an::StorageKind::BF16
                                                : an::StorageKind::F32;
  record.accumulateBlock = attr.getAccumulateBlock();
  record.expUlps = attr.getExpUlps();
  return record;
}
