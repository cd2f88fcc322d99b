//===- KVPrecAttrs.cpp - kvprec attributes --------------------------------===//

#include "kvprec/Dialect/KVPrec/IR/KVPrecAttrs.h"

#include "mlir/IR/Builders.h"
#include "mlir/IR/BuiltinTypes.h"
#include "mlir/IR/DialectImplementation.h"
#include "llvm/ADT/SmallString.h"
#include "llvm/ADT/TypeSwitch.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/MathExtras.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>

using namespace mlir;
using namespace mlir::kvprec;

#include "kvprec/Dialect/KVPrec/IR/KVPrecEnums.cpp.inc"

#define GET_ATTRDEF_CLASSES
#include "kvprec/Dialect/KVPrec/IR/KVPrecAttrs.cpp.inc"

void KVPrecDialect::registerAttributes() {
  addAttributes<
#define GET_ATTRDEF_LIST
#include "kvprec/Dialect/KVPrec/IR/KVPrecAttrs.cpp.inc"
      >();
}

//===----------------------------------------------------------------------===//
// Element type classification
//===----------------------------------------------------------------------===//

static bool isUnscaledFloat(Type type) {
  return isa<Float32Type, Float16Type, BFloat16Type>(type);
}

static bool isScaledStorage(Type type) {
  if (isa<Float8E4M3FNType, Float8E5M2Type>(type))
    return true;
  auto intType = dyn_cast<IntegerType>(type);
  return intType && intType.isSignless() &&
         llvm::is_contained({2u, 4u, 8u}, intType.getWidth());
}

bool mlir::kvprec::isStorableElementType(Type type) {
  return isUnscaledFloat(type) || isScaledStorage(type);
}

bool mlir::kvprec::isScaleElementType(Type type) {
  return isUnscaledFloat(type);
}

//===----------------------------------------------------------------------===//
// StorageFormatAttr
//===----------------------------------------------------------------------===//

LogicalResult
StorageFormatAttr::verify(function_ref<InFlightDiagnostic()> emitError,
                          Type storageType, QuantScheme scheme,
                          Granularity granularity, unsigned groupSize,
                          Type scaleType) {
  if (!isStorableElementType(storageType))
    return emitError() << "storage type " << storageType
                       << " is not one of f32, f16, bf16, f8E4M3FN, f8E5M2, "
                          "i8, i4, i2";
  if (isUnscaledFloat(storageType)) {
    if (scaleType || groupSize != 0 || scheme != QuantScheme::symmetric ||
        granularity != Granularity::token_group)
      return emitError() << "unscaled float format " << storageType
                         << " takes no scheme, group or scale";
    return success();
  }
  if (!scaleType)
    return emitError() << "scaled format " << storageType
                       << " needs a scale type (scale = f16|bf16|f32)";
  if (!isScaleElementType(scaleType))
    return emitError() << "scale type " << scaleType
                       << " is not one of f32, f16, bf16";
  if (groupSize == 0)
    return emitError() << "group size of format " << storageType
                       << " must be positive";
  if (isa<Float8E4M3FNType, Float8E5M2Type>(storageType) &&
      scheme != QuantScheme::symmetric)
    return emitError() << "fp8 format " << storageType
                       << " must be symmetric";
  return success();
}

Attribute StorageFormatAttr::parse(AsmParser &parser, Type) {
  SMLoc loc = parser.getCurrentLocation();
  Type storageType;
  if (parser.parseLess() || parser.parseType(storageType))
    return {};
  QuantScheme scheme = QuantScheme::symmetric;
  Granularity granularity = Granularity::token_group;
  unsigned groupSize = 0;
  Type scaleType;
  if (succeeded(parser.parseOptionalComma())) {
    StringRef schemeName, granularityName;
    SMLoc schemeLoc = parser.getCurrentLocation();
    if (parser.parseKeyword(&schemeName))
      return {};
    std::optional<QuantScheme> parsedScheme = symbolizeQuantScheme(schemeName);
    if (!parsedScheme) {
      parser.emitError(schemeLoc, "expected 'symmetric' or 'asymmetric'");
      return {};
    }
    scheme = *parsedScheme;
    SMLoc granularityLoc = parser.getCurrentLocation();
    if (parser.parseComma() || parser.parseKeyword(&granularityName))
      return {};
    std::optional<Granularity> parsedGranularity =
        symbolizeGranularity(granularityName);
    if (!parsedGranularity) {
      parser.emitError(granularityLoc,
                       "expected 'token_group' or 'channel_group'");
      return {};
    }
    granularity = *parsedGranularity;
    if (parser.parseEqual() || parser.parseInteger(groupSize) ||
        parser.parseComma() || parser.parseKeyword("scale") ||
        parser.parseEqual() || parser.parseType(scaleType))
      return {};
  }
  if (parser.parseGreater())
    return {};
  return parser.getChecked<StorageFormatAttr>(
      loc, parser.getContext(), storageType, scheme, granularity, groupSize,
      scaleType);
}

void StorageFormatAttr::print(AsmPrinter &printer) const {
  printer << "<" << getStorageType();
  if (isScaled()) {
    printer << ", " << stringifyQuantScheme(getScheme()) << ", "
            << stringifyGranularity(getGranularity()) << " = "
            << getGroupSize() << ", scale = " << getScaleType();
  }
  printer << ">";
}

unsigned StorageFormatAttr::getElementBits() const {
  return getStorageType().getIntOrFloatBitWidth();
}

namespace an = ::kvprec::analysis;

static an::StorageKind toAnalysisKind(Type type) {
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

an::StorageFormat StorageFormatAttr::getAnalysisFormat() const {
  an::StorageKind kind = toAnalysisKind(getStorageType());
  if (!isScaled())
    return an::StorageFormat::unscaled(kind);
  return an::StorageFormat::scaled(
      kind,
      getScheme() == QuantScheme::symmetric ? an::QuantScheme::Symmetric
                                            : an::QuantScheme::Asymmetric,
      getGranularity() == Granularity::token_group
          ? an::Granularity::TokenGroup
          : an::Granularity::ChannelGroup,
      getGroupSize(), toAnalysisKind(getScaleType()));
}

double StorageFormatAttr::getSegmentBytes(int64_t tokens,
                                          int64_t headDim) const {
  return ::kvprec::certify::getSegmentBytes(getAnalysisFormat(), tokens,
                                            headDim);
}

//===----------------------------------------------------------------------===//
// CertificateAttr
//===----------------------------------------------------------------------===//

static constexpr llvm::StringLiteral kCertificateFields[] = {
    "tolerance", "bound", "necessary_bits", "average_bits", "bytes_vs_f16"};

LogicalResult
CertificateAttr::verify(function_ref<InFlightDiagnostic()> emitError,
                        APFloat tolerance, APFloat bound, APFloat necessaryBits,
                        APFloat averageBits, APFloat bytesVsF16) {
  APFloat values[] = {tolerance, bound, necessaryBits, averageBits, bytesVsF16};
  for (auto [name, value] : llvm::zip(kCertificateFields, values)) {
    if (!value.isFinite() || value.isNegative())
      return emitError() << "certificate field '" << name
                         << "' must be finite and non-negative";
  }
  if (tolerance.isZero())
    return emitError() << "certificate tolerance must be positive";
  return success();
}

Attribute CertificateAttr::parse(AsmParser &parser, Type) {
  SMLoc loc = parser.getCurrentLocation();
  SmallVector<APFloat, 5> values;
  if (parser.parseLess())
    return {};
  for (auto [index, name] : llvm::enumerate(kCertificateFields)) {
    double value;
    if ((index > 0 && parser.parseComma()) || parser.parseKeyword(name) ||
        parser.parseEqual() || parser.parseFloat(value))
      return {};
    values.push_back(APFloat(value));
  }
  if (parser.parseGreater())
    return {};
  return parser.getChecked<CertificateAttr>(loc, parser.getContext(),
                                            values[0], values[1], values[2],
                                            values[3], values[4]);
}

void CertificateAttr::print(AsmPrinter &printer) const {
  APFloat values[] = {getTolerance(), getBound(), getNecessaryBits(),
                      getAverageBits(), getBytesVsF16()};
  printer << "<";
  for (auto [index, name] : llvm::enumerate(kCertificateFields)) {
    if (index > 0)
      printer << ", ";
    // Shortest decimal form that parses back to the same double.
    double value = values[index].convertToDouble();
    std::string text;
    for (int digits = 1; digits <= 17; ++digits) {
      char buffer[32];
      std::snprintf(buffer, sizeof(buffer), "%.*e", digits - 1, value);
      text = buffer;
      // MLIR float literals need a '.' in the mantissa.
      if (text.find('.') == std::string::npos)
        text.insert(text.find('e'), ".0");
      if (std::strtod(text.c_str(), nullptr) == value)
        break;
    }
    printer << name << " = " << text;
  }
  printer << ">";
}

//===----------------------------------------------------------------------===//
// PlanAttr
//===----------------------------------------------------------------------===//

static int64_t numBodyBlocks(int64_t capacity, int64_t sink, int64_t block) {
  return block > 0 ? llvm::divideCeil(std::max<int64_t>(capacity - sink, 0),
                                      block)
                   : 0;
}

/// Describes entry `index` of a per-(layer, head, kv) array for diagnostics.
static std::string describeItem(int64_t index, int64_t heads) {
  int64_t item = index;
  int kv = item % 2;
  int64_t head = (item / 2) % heads;
  int64_t layer = item / 2 / heads;
  return ("layer " + Twine(layer) + ", head " + Twine(head) + ", " +
          (kv ? "V" : "K"))
      .str();
}

LogicalResult
PlanAttr::verify(function_ref<InFlightDiagnostic()> emitError, int64_t layers,
                 int64_t heads, int64_t capacity, int64_t block, int64_t sink,
                 int64_t window, ArrayAttr formats, DenseI8ArrayAttr sinkFormats,
                 DenseI8ArrayAttr bodyFormats, DenseI8ArrayAttr windowFormats,
                 CertificateAttr certificate) {
  if (layers <= 0 || heads <= 0 || capacity <= 0)
    return emitError() << "plan layers, heads and capacity must be positive";
  if (block <= 0)
    return emitError() << "plan block size must be positive, got " << block;
  if (sink < 0 || window < 0)
    return emitError() << "plan sink and window must be non-negative";
  if (sink + window > capacity)
    return emitError() << "plan sink (" << sink << ") plus window (" << window
                       << ") exceed the capacity " << capacity;
  if (window % block != 0)
    return emitError() << "plan window (" << window
                       << ") must be a multiple of the block size (" << block
                       << ") so that whole blocks age out of it";
  if (formats.empty())
    return emitError() << "plan has an empty format table";
  if (formats.size() > 127)
    return emitError() << "plan format table has " << formats.size()
                       << " entries; at most 127 fit an i8 index";
  for (auto [index, format] : llvm::enumerate(formats))
    if (!isa<StorageFormatAttr>(format))
      return emitError() << "plan format " << index
                         << " is not a #kvprec.format";

  int64_t items = layers * heads * 2;
  int64_t blocks = numBodyBlocks(capacity, sink, block);
  auto checkEntries = [&](StringRef name, DenseI8ArrayAttr entries,
                          bool allowPerBlock, int64_t segmentLength,
                          bool tokensSplitByBlock) -> LogicalResult {
    int64_t size = entries.size();
    bool perBlock = allowPerBlock && size == items * blocks && size != items;
    if (size != 1 && size != items && !perBlock) {
      InFlightDiagnostic diag = emitError();
      diag << "plan " << name << " has " << size << " entries; expected 1 or "
           << items << " (layers x heads x {K, V})";
      if (allowPerBlock)
        diag << " or " << items * blocks << " (one per body block)";
      return diag;
    }
    for (auto [index, value] : llvm::enumerate(entries.asArrayRef())) {
      if (value < 0 || value >= static_cast<int64_t>(formats.size()))
        return emitError() << "plan " << name << " entry " << index
                           << " refers to format " << int(value)
                           << " but the table has " << formats.size();
      auto format = cast<StorageFormatAttr>(formats[value]);
      if (segmentLength == 0 || !format.isScaled() ||
          format.getGranularity() != Granularity::channel_group)
        continue;
      // A channel group runs over tokens, so it must tile the segment.
      if (segmentLength % format.getGroupSize() != 0 ||
          (tokensSplitByBlock && format.getGroupSize() > block)) {
        int64_t item = size == 1 ? 0 : (perBlock ? index / blocks : index);
        return emitError() << "plan " << name << " entry " << index << " ("
                           << describeItem(item, heads)
                           << "): channel_group size "
                           << format.getGroupSize()
                           << " does not divide the segment length "
                           << segmentLength;
      }
    }
    return success();
  };
  if (failed(checkEntries("sink_formats", sinkFormats, false, sink, false)) ||
      failed(checkEntries("window_formats", windowFormats, false, window,
                          false)) ||
      failed(checkEntries("body_formats", bodyFormats, true, block, true)))
    return failure();
  return success();
}

int64_t PlanAttr::getNumBodyBlocks() const {
  return numBodyBlocks(getCapacity(), getSink(), getBlock());
}

bool PlanAttr::isPerBlock() const {
  int64_t items = getLayers() * getHeads() * 2;
  int64_t size = getBodyFormats().size();
  return size != 1 && size != items;
}

static int64_t itemIndex(PlanAttr plan, int64_t layer, int64_t head, int kv) {
  return (layer * plan.getHeads() + head) * 2 + kv;
}

static StorageFormatAttr lookup(PlanAttr plan, DenseI8ArrayAttr entries,
                                int64_t index) {
  int8_t format = entries.size() == 1 ? entries[0] : entries[index];
  return cast<StorageFormatAttr>(plan.getFormats()[format]);
}

StorageFormatAttr PlanAttr::getSinkFormat(int64_t layer, int64_t head,
                                          int kv) const {
  return lookup(*this, getSinkFormats(), itemIndex(*this, layer, head, kv));
}

StorageFormatAttr PlanAttr::getWindowFormat(int64_t layer, int64_t head,
                                            int kv) const {
  return lookup(*this, getWindowFormats(), itemIndex(*this, layer, head, kv));
}

StorageFormatAttr PlanAttr::getBodyFormat(int64_t layer, int64_t head, int kv,
                                          int64_t block) const {
  int64_t item = itemIndex(*this, layer, head, kv);
  if (isPerBlock())
    return lookup(*this, getBodyFormats(), item * getNumBodyBlocks() + block);
  return lookup(*this, getBodyFormats(), item);
}

/// Expands a compact index list (one entry for all) to `count` entries.
static std::vector<int8_t> expand(DenseI8ArrayAttr entries, int64_t count) {
  ArrayRef<int8_t> values = entries.asArrayRef();
  if (values.size() == 1)
    return std::vector<int8_t>(count, values[0]);
  return std::vector<int8_t>(values.begin(), values.end());
}

::kvprec::certify::Plan PlanAttr::getPlainPlan(int64_t headDim) const {
  ::kvprec::certify::Plan plan;
  ::kvprec::certify::Geometry &g = plan.geometry;
  g.layers = getLayers();
  g.heads = getHeads();
  g.capacity = getCapacity();
  g.headDim = headDim;
  g.block = getBlock();
  g.sink = getSink();
  g.window = getWindow();
  for (Attribute format : getFormats())
    plan.formats.push_back(cast<StorageFormatAttr>(format).getAnalysisFormat());
  int64_t items = plan.getNumItems();
  plan.perBlock = isPerBlock();
  plan.sinkFormats = expand(getSinkFormats(), items);
  plan.windowFormats = expand(getWindowFormats(), items);
  plan.bodyFormats = expand(getBodyFormats(), items);
  return plan;
}

double PlanAttr::getTotalBytes(int64_t headDim) const {
  return getPlainPlan(headDim).getTotalBytes();
}
