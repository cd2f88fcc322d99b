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

static an::StorageKind toKind(Type type) {
  if (type.isF32())
    return an::StorageKind::F32;
  if (type.isF16())
    return an::StorageKind::F16;
  if (type.isBF16())
    return an::StorageKind::BF16;
  if (isa<Float8E4M3FNType>(type))
    return an::StorageKind::F8E4M3FN;
  if (isa<Float8E5M2Type>(type))
    return an::StorageKind::F8E5M2;
  switch (type.getIntOrFloatBitWidth()) {
  case 8:
    return an::StorageKind::Int8;
  case 4:
    return an::StorageKind::Int4;
  default:
    return an::StorageKind::Int2;
  }
}

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
  an::StorageKind kind = toKind(attr.getStorageType());
  if (!attr.isScaled())
    return an::StorageFormat::unscaled(kind);
  return an::StorageFormat::scaled(
      kind,
      attr.getScheme() == QuantScheme::symmetric ? an::QuantScheme::Symmetric
                                                 : an::QuantScheme::Asymmetric,
      attr.getGranularity() == Granularity::token_group
          ? an::Granularity::TokenGroup
          : an::Granularity::ChannelGroup,
      attr.getGroupSize(), toKind(attr.getScaleType()));
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

/// Expands a compact index list (one entry for all) to `count` entries.
static std::vector<int8_t> expand(DenseI8ArrayAttr entries, int64_t count) {
  ArrayRef<int8_t> values = entries.asArrayRef();
  if (values.size() == 1)
    return std::vector<int8_t>(count, values[0]);
  return std::vector<int8_t>(values.begin(), values.end());
}

std::optional<::kvprec::certify::Plan>
mlir::kvprec::toPlainPlan(CacheType cache) {
  PlanAttr attr = cache.getPlan();
  if (!attr)
    return std::nullopt;
  ::kvprec::certify::Plan plan;
  ::kvprec::certify::Geometry &g = plan.geometry;
  g.layers = attr.getLayers();
  g.heads = attr.getHeads();
  g.capacity = attr.getCapacity();
  g.headDim = cache.getHeadDim();
  g.block = attr.getBlock();
  g.sink = attr.getSink();
  g.window = attr.getWindow();
  for (Attribute format : attr.getFormats())
    plan.formats.push_back(toAnalysisFormat(cast<StorageFormatAttr>(format)));
  int64_t items = plan.getNumItems();
  plan.perBlock = attr.isPerBlock();
  plan.sinkFormats = expand(attr.getSinkFormats(), items);
  plan.windowFormats = expand(attr.getWindowFormats(), items);
  plan.bodyFormats = expand(attr.getBodyFormats(), items);
  return plan;
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
