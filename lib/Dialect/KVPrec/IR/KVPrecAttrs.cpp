//===- KVPrecAttrs.cpp - kvprec attributes --------------------------------===//

#include "kvprec/Dialect/KVPrec/IR/KVPrecAttrs.h"

#include "mlir/IR/Builders.h"
#include "mlir/IR/BuiltinTypes.h"
#include "mlir/IR/DialectImplementation.h"
#include "llvm/Support/CheckedArithmetic.h"
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

/// Shortest decimal form of `value` that parses back to the same double,
/// with the '.' MLIR float literals need.
static std::string formatExact(double value) {
  std::string text;
  for (int digits = 1; digits <= 17; ++digits) {
    char buffer[32];
    std::snprintf(buffer, sizeof(buffer), "%.*e", digits - 1, value);
    text = buffer;
    if (text.find('.') == std::string::npos)
      text.insert(text.find('e'), ".0");
    if (std::strtod(text.c_str(), nullptr) == value)
      break;
  }
  return text;
}

SmallVector<StringRef> CertificateAttr::getAssumptions() const {
  // Within the calibrated length the static bound rests on the (C1) mass,
  // (C2) query and logit envelopes and the (C3) K/V ranges, and on (C4)
  // the cache not outgrowing the calibration; past it on the worst-case
  // rule's margin instead of the masses and the length.
  SmallVector<StringRef> result;
  if (getExtrapolated())
    result = {"query_magnitude", "logit_envelope", "kv_ranges",
              "extrapolation_margin"};
  // The joint certificate replaces the three query-side envelopes by one:
  // a new query's bound is no larger than the worst sampled query's.
  else if (getQuerySamples() > 0)
    result = {"sampled_query_bound", "kv_ranges", "calibrated_length"};
  else
    result = {"attention_mass", "query_magnitude", "logit_envelope",
              "kv_ranges", "calibrated_length"};
  // The probabilistic certificate also rests on the rounding model (M).
  if (getProbabilistic())
    result.push_back("rounding_model");
  return result;
}

LogicalResult CertificateAttr::verify(
    function_ref<InFlightDiagnostic()> emitError, bool probabilistic,
    APFloat confidence, DenseF64ArrayAttr tolerance,
    APFloat budget, APFloat bound, DenseF64ArrayAttr layerBounds,
    APFloat necessaryBits, APFloat averageBits, APFloat bytesVsF16,
    int64_t calibratedLength, int64_t querySamples, bool extrapolated,
    APFloat margin,
    APFloat softmaxScale, Type dequant, Type accumulate,
    int64_t accumulateBlock, int64_t expUlps) {
  std::pair<StringRef, APFloat> values[] = {
      {"budget", budget},           {"bound", bound},
      {"necessary_bits", necessaryBits}, {"average_bits", averageBits},
      {"bytes_vs_f16", bytesVsF16}, {"margin", margin},
      {"softmax_scale", softmaxScale}};
  for (auto &[name, value] : values)
    if (!value.isFinite() || value.isNegative())
      return emitError() << "certificate field '" << name
                         << "' must be finite and non-negative";
  double p = confidence.convertToDouble();
  if (probabilistic ? !(p > 0.0 && p < 1.0) : p != 0.0)
    return emitError() << (probabilistic
                               ? "probabilistic certificate confidence must "
                                 "be a failure probability in (0, 1), got "
                               : "deterministic certificate has no "
                                 "confidence, got ")
                       << p;
  if (!tolerance || !layerBounds)
    return emitError() << "certificate needs tolerance and layer_bounds lists";
  for (double value : tolerance.asArrayRef())
    if (!(value > 0) || !std::isfinite(value))
      return emitError() << "certificate tolerance must be positive and "
                            "finite, got "
                         << value;
  for (double value : layerBounds.asArrayRef())
    if (!(value >= 0) || !std::isfinite(value))
      return emitError() << "certificate layer bound must be finite and "
                            "non-negative, got "
                         << value;
  if (tolerance.empty() == budget.isZero())
    return emitError() << "certificate records either a tolerance or a "
                          "budget, not "
                       << (tolerance.empty() ? "neither" : "both");
  if (layerBounds.empty())
    return emitError() << "certificate has no layer bounds";
  if (calibratedLength <= 0)
    return emitError() << "certificate calibrated_length must be positive";
  if (querySamples < 0 || (extrapolated && querySamples != 0))
    return emitError() << "certificate query_samples must be non-negative, "
                          "and 0 for an extrapolated certificate";
  if (extrapolated ? margin.convertToDouble() < 1.0
                   : margin.convertToDouble() != 1.0)
    return emitError() << "certificate margin must be "
                       << (extrapolated ? "at least 1" : "1 without "
                                                         "extrapolation");
  if (softmaxScale.isZero())
    return emitError() << "certificate softmax_scale must be positive";
  if (!isa<Float32Type, Float16Type, BFloat16Type>(dequant))
    return emitError() << "certificate dequant must be f32, f16 or bf16, got "
                       << dequant;
  if (!isa<Float32Type>(accumulate))
    return emitError() << "certificate accumulate must be f32, got "
                       << accumulate;
  if (accumulateBlock <= 0 || expUlps < 0)
    return emitError() << "certificate accumulate_block must be positive and "
                          "exp_ulps non-negative";
  return success();
}

/// Parses `[v, v, ...]` (possibly empty) into `values`.
static ParseResult parseFloatList(AsmParser &parser,
                                  SmallVectorImpl<double> &values) {
  return parser.parseCommaSeparatedList(
      AsmParser::Delimiter::Square, [&]() -> ParseResult {
        double value;
        if (parser.parseFloat(value))
          return failure();
        values.push_back(value);
        return success();
      });
}

Attribute CertificateAttr::parse(AsmParser &parser, Type) {
  SMLoc loc = parser.getCurrentLocation();
  MLIRContext *context = parser.getContext();
  SmallVector<double> tolerance, layerBounds;
  double budget = 0, bound, necessaryBits, averageBits, bytesVsF16,
         margin = 1.0, softmaxScale, confidence = 0.0;
  int64_t calibratedLength, querySamples, accumulateBlock, expUlps;
  Type dequant, accumulate;
  StringRef model, extrapolation;
  auto field = [&](StringRef name) -> ParseResult {
    return failure(parser.parseComma() || parser.parseKeyword(name) ||
                   parser.parseEqual());
  };
  if (parser.parseLess() || parser.parseKeyword(&model))
    return {};
  if (model != "deterministic" && model != "probabilistic") {
    parser.emitError(loc) << "unknown certificate kind '" << model
                          << "'; expected 'deterministic' or 'probabilistic'";
    return {};
  }
  bool probabilistic = model == "probabilistic";
  if (probabilistic && (field("confidence") || parser.parseFloat(confidence)))
    return {};
  if (parser.parseComma())
    return {};
  StringRef target;
  if (parser.parseKeyword(&target) || parser.parseEqual())
    return {};
  if (target == "tolerance") {
    if (parseFloatList(parser, tolerance))
      return {};
  } else if (target == "budget") {
    if (parser.parseFloat(budget))
      return {};
  } else {
    parser.emitError(parser.getCurrentLocation())
        << "expected 'tolerance' or 'budget', got '" << target << "'";
    return {};
  }
  if (field("bound") || parser.parseFloat(bound) || field("layer_bounds") ||
      parseFloatList(parser, layerBounds) || field("necessary_bits") ||
      parser.parseFloat(necessaryBits) || field("average_bits") ||
      parser.parseFloat(averageBits) || field("bytes_vs_f16") ||
      parser.parseFloat(bytesVsF16) || field("calibrated_length") ||
      parser.parseInteger(calibratedLength) || field("query_samples") ||
      parser.parseInteger(querySamples) || field("extrapolation") ||
      parser.parseKeyword(&extrapolation))
    return {};
  if (extrapolation != "none" && extrapolation != "worst_case") {
    parser.emitError(parser.getCurrentLocation())
        << "unknown extrapolation '" << extrapolation
        << "'; expected 'none' or 'worst_case'";
    return {};
  }
  bool extrapolated = extrapolation == "worst_case";
  if (extrapolated && (field("margin") || parser.parseFloat(margin)))
    return {};
  if (field("softmax_scale") || parser.parseFloat(softmaxScale) ||
      field("dequant") || parser.parseType(dequant) || field("accumulate") ||
      parser.parseType(accumulate) || field("accumulate_block") ||
      parser.parseInteger(accumulateBlock) || field("exp_ulps") ||
      parser.parseInteger(expUlps) || field("assumes"))
    return {};
  SMLoc assumesLoc = parser.getCurrentLocation();
  SmallVector<std::string> assumes;
  if (parser.parseCommaSeparatedList(
          AsmParser::Delimiter::Square, [&]() -> ParseResult {
            StringRef name;
            if (parser.parseKeyword(&name))
              return failure();
            assumes.push_back(name.str());
            return success();
          }) ||
      parser.parseGreater())
    return {};
  auto attr = parser.getChecked<CertificateAttr>(
      loc, context, probabilistic, APFloat(confidence),
      DenseF64ArrayAttr::get(context, tolerance),
      APFloat(budget), APFloat(bound),
      DenseF64ArrayAttr::get(context, layerBounds), APFloat(necessaryBits),
      APFloat(averageBits), APFloat(bytesVsF16), calibratedLength,
      querySamples, extrapolated, APFloat(margin), APFloat(softmaxScale), dequant,
      accumulate, accumulateBlock, expUlps);
  if (!attr)
    return {};
  // The assumptions follow from the other fields; a certificate that lists
  // others (or leaves one out) is not what the analysis proved.
  SmallVector<StringRef> expected = attr.getAssumptions();
  if (assumes.size() != expected.size() ||
      !llvm::equal(assumes, expected,
                   [](const std::string &a, StringRef b) { return a == b; })) {
    InFlightDiagnostic diag = parser.emitError(assumesLoc)
                              << "certificate assumes must be [";
    llvm::interleaveComma(expected, diag);
    diag << "] for this certificate";
    return {};
  }
  return attr;
}

void CertificateAttr::print(AsmPrinter &printer) const {
  auto list = [&](DenseF64ArrayAttr values) {
    printer << "[";
    llvm::interleaveComma(values.asArrayRef(), printer,
                          [&](double v) { printer << formatExact(v); });
    printer << "]";
  };
  if (getProbabilistic())
    printer << "<probabilistic, confidence = "
            << formatExact(getConfidence().convertToDouble()) << ", ";
  else
    printer << "<deterministic, ";
  if (getTolerance().empty())
    printer << "budget = " << formatExact(getBudget().convertToDouble());
  else {
    printer << "tolerance = ";
    list(getTolerance());
  }
  printer << ", bound = " << formatExact(getBound().convertToDouble())
          << ", layer_bounds = ";
  list(getLayerBounds());
  printer << ", necessary_bits = "
          << formatExact(getNecessaryBits().convertToDouble())
          << ", average_bits = "
          << formatExact(getAverageBits().convertToDouble())
          << ", bytes_vs_f16 = "
          << formatExact(getBytesVsF16().convertToDouble())
          << ", calibrated_length = " << getCalibratedLength()
          << ", query_samples = " << getQuerySamples()
          << ", extrapolation = "
          << (getExtrapolated() ? "worst_case" : "none");
  if (getExtrapolated())
    printer << ", margin = " << formatExact(getMargin().convertToDouble());
  printer << ", softmax_scale = "
          << formatExact(getSoftmaxScale().convertToDouble())
          << ", dequant = " << getDequant()
          << ", accumulate = " << getAccumulate()
          << ", accumulate_block = " << getAccumulateBlock()
          << ", exp_ulps = " << getExpUlps() << ", assumes = [";
  llvm::interleaveComma(getAssumptions(), printer);
  printer << "]>";
}

//===----------------------------------------------------------------------===//
// PlanAttr
//===----------------------------------------------------------------------===//

static int64_t numBodyBlocks(int64_t capacity, int64_t sink, int64_t block) {
  if (block <= 0 || sink >= capacity)
    return 0;
  int64_t body = capacity - sink;
  return body / block + (body % block != 0);
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
  if (!::kvprec::certify::withinLayerHeadLimit(layers, heads))
    return emitError() << "plan of " << layers << " layers x " << heads
                       << " heads: kvprec handles at most "
                       << ::kvprec::certify::kMaxLayerHeadPairs
                       << " (layer, KV head) pairs";
  if (block <= 0 || block > capacity)
    return emitError() << "plan block size must be in [1, capacity " << capacity
                       << "], got " << block;
  if (sink < 0 || window < 0)
    return emitError() << "plan sink and window must be non-negative";
  if (sink > capacity || window > capacity - sink)
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

  // Within the limit above, so exact; the per-block count below is checked
  // (a wrapped product would accept garbage).
  int64_t items = layers * heads * 2;
  int64_t blocks = numBodyBlocks(capacity, sink, block);
  // -1 when the per-block entry count does not fit int64_t (no array can
  // have that many entries).
  std::optional<int64_t> perBlockCount =
      llvm::checkedMul<int64_t>(items, blocks);
  int64_t perBlockEntries = perBlockCount ? *perBlockCount : -1;
  auto checkEntries = [&](StringRef name, DenseI8ArrayAttr entries,
                          bool allowPerBlock, int64_t segmentLength,
                          bool tokensSplitByBlock) -> LogicalResult {
    int64_t size = entries.size();
    bool perBlock =
        allowPerBlock && size == perBlockEntries && size != items;
    if (size != 1 && size != items && !perBlock) {
      InFlightDiagnostic diag = emitError();
      diag << "plan " << name << " has " << size << " entries; expected 1 or "
           << items << " (layers x heads x {K, V})";
      if (allowPerBlock)
        diag << " or " << perBlockEntries << " (one per body block)";
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
                           << " does not divide the "
                           << (name == "sink_formats" ? "sink length "
                                                      : "block size ")
                           << segmentLength;
      }
    }
    return success();
  };
  if (certificate) {
    int64_t tolerances = certificate.getTolerance().size();
    if (tolerances != 0 && tolerances != 1 && tolerances != layers)
      return emitError() << "plan certificate has " << tolerances
                         << " tolerances; expected 1 or one per layer ("
                         << layers << ")";
    if (int64_t(certificate.getLayerBounds().size()) != layers)
      return emitError() << "plan certificate has "
                         << certificate.getLayerBounds().size()
                         << " layer bounds; expected one per layer ("
                         << layers << ")";
  }
  if (failed(checkEntries("sink_formats", sinkFormats, false, sink, false)) ||
      failed(checkEntries("window_formats", windowFormats, false,
                          window > 0 ? block : 0, false)) ||
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
