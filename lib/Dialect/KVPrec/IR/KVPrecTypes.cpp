//===- KVPrecTypes.cpp - kvprec types -------------------------------------===//

#include "kvprec/Dialect/KVPrec/IR/KVPrecTypes.h"

#include "kvprec/Format/Plan.h"

#include "mlir/IR/Builders.h"
#include "mlir/IR/BuiltinTypes.h"
#include "mlir/IR/DialectImplementation.h"
#include "llvm/ADT/TypeSwitch.h"

using namespace mlir;
using namespace mlir::kvprec;

#define GET_TYPEDEF_CLASSES
#include "kvprec/Dialect/KVPrec/IR/KVPrecOpsTypes.cpp.inc"

void KVPrecDialect::registerTypes() {
  addTypes<
#define GET_TYPEDEF_LIST
#include "kvprec/Dialect/KVPrec/IR/KVPrecOpsTypes.cpp.inc"
      >();
}

LogicalResult CacheType::verify(function_ref<InFlightDiagnostic()> emitError,
                                int64_t layers, int64_t heads,
                                int64_t capacity, int64_t headDim,
                                Type elementType, PlanAttr plan) {
  if (layers <= 0 || heads <= 0 || capacity <= 0 || headDim <= 0)
    return emitError() << "cache dimensions must be positive, got " << layers
                       << "x" << heads << "x" << capacity << "x" << headDim;
  if (!::kvprec::certify::withinLayerHeadLimit(layers, heads))
    return emitError() << "cache of " << layers << " layers x " << heads
                       << " KV heads: kvprec handles at most "
                       << ::kvprec::certify::kMaxLayerHeadPairs
                       << " (layer, KV head) pairs";
  if (!isa<Float32Type, Float16Type, BFloat16Type>(elementType))
    return emitError() << "cache element type must be f32, f16 or bf16, got "
                       << elementType;
  if (!plan)
    return success();
  if (plan.getLayers() != layers || plan.getHeads() != heads ||
      plan.getCapacity() != capacity)
    return emitError() << "plan covers " << plan.getLayers() << " layers x "
                       << plan.getHeads() << " heads x " << plan.getCapacity()
                       << " positions but the cache is " << layers << "x"
                       << heads << "x" << capacity;
  unsigned elementBits = elementType.getIntOrFloatBitWidth();
  for (auto [index, attr] : llvm::enumerate(plan.getFormats())) {
    auto format = cast<StorageFormatAttr>(attr);
    // A format wider than the logical type stores nothing the model
    // computed, so it cannot be a storage of it.
    if (format.getElementBits() > elementBits)
      return emitError() << "plan format " << index << " ("
                         << format.getStorageType()
                         << ") cannot hold the cache element type "
                         << elementType << ": it is wider";
    if (format.isScaled() &&
        format.getGranularity() == Granularity::token_group &&
        headDim % format.getGroupSize() != 0)
      return emitError() << "plan format " << index << ": token_group size "
                         << format.getGroupSize()
                         << " does not divide head_dim " << headDim;
  }
  return success();
}

Type CacheType::parse(AsmParser &parser) {
  SMLoc loc = parser.getCurrentLocation();
  SmallVector<int64_t, 4> dims;
  Type elementType;
  PlanAttr plan;
  if (parser.parseLess() ||
      parser.parseDimensionList(dims, /*allowDynamic=*/false,
                                /*withTrailingX=*/true) ||
      parser.parseType(elementType))
    return {};
  if (dims.size() != 4) {
    parser.emitError(loc, "expected 4 dimensions (layers x kv_heads x "
                          "capacity x head_dim), got ")
        << dims.size();
    return {};
  }
  if (succeeded(parser.parseOptionalComma())) {
    SMLoc planLoc = parser.getCurrentLocation();
    Attribute encoding;
    if (parser.parseAttribute(encoding))
      return {};
    plan = dyn_cast<PlanAttr>(encoding);
    if (!plan) {
      parser.emitError(planLoc, "expected a #kvprec.plan encoding, got ")
          << encoding;
      return {};
    }
  }
  if (parser.parseGreater())
    return {};
  return parser.getChecked<CacheType>(loc, parser.getContext(), dims[0],
                                      dims[1], dims[2], dims[3], elementType,
                                      plan);
}

void CacheType::print(AsmPrinter &printer) const {
  printer << "<" << getLayers() << "x" << getHeads() << "x" << getCapacity()
          << "x" << getHeadDim() << "x" << getElementType();
  if (getPlan()) {
    printer << ", ";
    printer.printAttribute(getPlan());
  }
  printer << ">";
}

CacheType CacheType::withPlan(PlanAttr plan) const {
  return CacheType::get(getContext(), getLayers(), getHeads(), getCapacity(),
                        getHeadDim(), getElementType(), plan);
}
