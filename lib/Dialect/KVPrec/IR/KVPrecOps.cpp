//===- KVPrecOps.cpp - kvprec operations ----------------------------------===//

#include "kvprec/Dialect/KVPrec/IR/KVPrecOps.h"
#include "kvprec/Format/CalibrationSchema.h"

#include "mlir/IR/Builders.h"
#include "mlir/IR/BuiltinTypes.h"
#include "mlir/IR/OpImplementation.h"

#include "llvm/ADT/StringMap.h"

#include <cmath>

using namespace mlir;
using namespace mlir::kvprec;

#define GET_OP_CLASSES
#include "kvprec/Dialect/KVPrec/IR/KVPrecOps.cpp.inc"

/// Checks that `layer` exists in `cache`.
static LogicalResult verifyLayer(Operation *op, CacheType cache,
                                 int64_t layer) {
  if (layer >= cache.getLayers())
    return op->emitOpError() << "layer " << layer << " is out of range: the "
                             << "cache has " << cache.getLayers() << " layers";
  return success();
}

/// Checks a [tokens, kv_heads, head_dim] memref against the cache.
static LogicalResult verifyTokenMemRef(Operation *op, StringRef name,
                                       MemRefType type, CacheType cache) {
  if (type.getElementType() != cache.getElementType())
    return op->emitOpError()
           << name << " element type " << type.getElementType()
           << " does not match the cache element type "
           << cache.getElementType();
  ArrayRef<int64_t> shape = type.getShape();
  if (!ShapedType::isDynamic(shape[1]) && shape[1] != cache.getHeads())
    return op->emitOpError()
           << name << " has " << shape[1] << " heads but the cache has "
           << cache.getHeads() << " KV heads";
  if (!ShapedType::isDynamic(shape[2]) && shape[2] != cache.getHeadDim())
    return op->emitOpError()
           << name << " has head_dim " << shape[2]
           << " but the cache has head_dim " << cache.getHeadDim();
  if (!ShapedType::isDynamic(shape[0]) && shape[0] > cache.getCapacity())
    return op->emitOpError()
           << name << " holds " << shape[0]
           << " tokens, more than the cache capacity " << cache.getCapacity();
  return success();
}

//===----------------------------------------------------------------------===//
// AllocOp
//===----------------------------------------------------------------------===//

LogicalResult AllocOp::verifySymbolUses(SymbolTableCollection &symbolTable) {
  if (!getCalibration())
    return success();
  auto calibration = symbolTable.lookupNearestSymbolFrom<CalibrationOp>(
      *this, getCalibrationAttr());
  if (!calibration)
    return emitOpError() << "calibration " << getCalibrationAttr()
                         << " does not name a kvprec.calibration op";
  CacheType cache = getCache().getType();
  // The I64Attr getters return uint64_t; the verifier keeps them positive.
  if (static_cast<int64_t>(calibration.getLayers()) != cache.getLayers() ||
      static_cast<int64_t>(calibration.getKvHeads()) != cache.getHeads() ||
      static_cast<int64_t>(calibration.getHeadDim()) != cache.getHeadDim())
    return emitOpError() << "calibration " << getCalibrationAttr()
                         << " describes " << calibration.getLayers()
                         << " layers x " << calibration.getKvHeads()
                         << " KV heads x head_dim " << calibration.getHeadDim()
                         << " but the cache is " << cache.getLayers() << "x"
                         << cache.getHeads() << "x" << cache.getCapacity()
                         << "x" << cache.getHeadDim();
  return success();
}

//===----------------------------------------------------------------------===//
// AppendOp
//===----------------------------------------------------------------------===//

LogicalResult AppendOp::verify() {
  CacheType cache = getCache().getType();
  if (failed(verifyLayer(*this, cache, getLayer())))
    return failure();
  if (getKeys().getType().getShape() != getValues().getType().getShape())
    return emitOpError() << "keys " << getKeys().getType() << " and values "
                         << getValues().getType() << " differ in shape";
  if (failed(verifyTokenMemRef(*this, "keys", getKeys().getType(), cache)) ||
      failed(verifyTokenMemRef(*this, "values", getValues().getType(), cache)))
    return failure();
  return success();
}

//===----------------------------------------------------------------------===//
// AttendOp
//===----------------------------------------------------------------------===//

LogicalResult AttendOp::verify() {
  CacheType cache = getCache().getType();
  if (failed(verifyLayer(*this, cache, getLayer())))
    return failure();
  MemRefType queryType = getQuery().getType();
  MemRefType outputType = getOutput().getType();
  if (queryType.getElementType() != cache.getElementType())
    return emitOpError() << "query element type " << queryType.getElementType()
                         << " does not match the cache element type "
                         << cache.getElementType();
  if (outputType.getElementType() != cache.getElementType())
    return emitOpError() << "output element type "
                         << outputType.getElementType()
                         << " does not match the cache element type "
                         << cache.getElementType();
  if (queryType.getShape() != outputType.getShape())
    return emitOpError() << "query " << queryType << " and output "
                         << outputType << " differ in shape";
  int64_t queryHeads = queryType.getDimSize(0);
  int64_t headDim = queryType.getDimSize(1);
  if (!ShapedType::isDynamic(headDim) && headDim != cache.getHeadDim())
    return emitOpError() << "query head_dim " << headDim
                         << " does not match the cache head_dim "
                         << cache.getHeadDim();
  if (!ShapedType::isDynamic(queryHeads) &&
      (queryHeads == 0 || queryHeads % cache.getHeads() != 0))
    return emitOpError() << queryHeads << " query heads cannot be grouped over "
                         << cache.getHeads()
                         << " KV heads: the GQA ratio must be a whole number";
  if (std::optional<APFloat> scale = getScale()) {
    double value = scale->convertToDouble();
    if (!std::isfinite(value) || value <= 0)
      return emitOpError() << "scale must be finite and positive, got "
                           << value;
  }
  return success();
}

double AttendOp::getEffectiveScale() {
  if (std::optional<APFloat> scale = getScale())
    return scale->convertToDouble();
  return 1.0 /
         std::sqrt(static_cast<double>(getCache().getType().getHeadDim()));
}

//===----------------------------------------------------------------------===//
// LoadOp
//===----------------------------------------------------------------------===//

LogicalResult LoadOp::verify() {
  CacheType cache = getCache().getType();
  if (failed(verifyLayer(*this, cache, getLayer())))
    return failure();
  if (getKeys().getType().getShape() != getValues().getType().getShape())
    return emitOpError() << "keys " << getKeys().getType() << " and values "
                         << getValues().getType() << " differ in shape";
  if (failed(verifyTokenMemRef(*this, "keys", getKeys().getType(), cache)) ||
      failed(verifyTokenMemRef(*this, "values", getValues().getType(), cache)))
    return failure();
  return success();
}

//===----------------------------------------------------------------------===//
// CalibrationOp
//===----------------------------------------------------------------------===//

LogicalResult CalibrationOp::verify() {
  double scale = getSoftmaxScale().convertToDouble();
  if (!(scale > 0) || !std::isfinite(scale))
    return emitOpError() << "softmax_scale must be positive and finite, got "
                         << scale;
  if (getQHeads() % getKvHeads() != 0)
    return emitOpError() << getQHeads()
                         << " query heads cannot be grouped over "
                         << getKvHeads() << " KV heads";
  if (std::optional<ArrayRef<double>> sensitivity = getLayerKlSensitivity()) {
    if (sensitivity->size() != getLayers())
      return emitOpError() << "layer_kl_sensitivity has " << sensitivity->size()
                           << " entries for " << getLayers() << " layers";
    for (double s : *sensitivity)
      if (!(s >= 0) || !std::isfinite(s))
        return emitOpError() << "layer_kl_sensitivity entries must be finite "
                                "and non-negative, got "
                             << s;
    std::optional<APFloat> error = getSensitivityError();
    if (!error || !(error->convertToDouble() > 0) ||
        !std::isfinite(error->convertToDouble()))
      return emitOpError() << "layer_kl_sensitivity needs a positive, finite "
                              "sensitivity_error";
  } else if (getSensitivityError()) {
    return emitOpError() << "sensitivity_error without layer_kl_sensitivity";
  }
  ::kvprec::calib::CalibrationShape shape;
  shape.layers = getLayers();
  shape.kvHeads = getKvHeads();
  shape.qHeads = getQHeads();
  shape.headDim = getHeadDim();
  shape.sink = getSink();
  shape.window = getWindow();
  shape.block = getBlock();
  shape.maxPositions = getMaxPositions();
  shape.querySamples = getQuerySamples();
  // Every statistic of the kvprec-calib-v1 schema, with the shape the
  // dimensions above give it (docs/calibration.md).
  llvm::StringMap<const ::kvprec::calib::CalibrationTensorSchema *> specs;
  for (const ::kvprec::calib::CalibrationTensorSchema &spec :
       ::kvprec::calib::getCalibrationSchema())
    specs[spec.name] = &spec;
  for (NamedAttribute stat : getStats()) {
    StringRef name = stat.getName().getValue();
    auto elements = dyn_cast<ElementsAttr>(stat.getValue());
    if (!elements)
      return emitOpError() << "statistic '" << name
                           << "' is not an elements attribute";
    const ::kvprec::calib::CalibrationTensorSchema *spec = specs.lookup(name);
    if (!spec)
      return emitOpError() << "statistic '" << name
                           << "' is not part of the kvprec-calib-v1 schema";
    Type elementType = elements.getShapedType().getElementType();
    bool isCount = spec->isCount;
    if (isCount ? !elementType.isSignlessInteger(64) : !elementType.isF32())
      return emitOpError() << "statistic '" << name << "' has element type "
                           << elementType << "; expected "
                           << (isCount ? "i64" : "f32");
    SmallVector<int64_t, 3> expected =
        ::kvprec::calib::getTensorShape(shape, spec->kind);
    if (elements.getShapedType().getShape() != ArrayRef<int64_t>(expected)) {
      InFlightDiagnostic diag = emitOpError();
      diag << "statistic '" << name << "' has shape "
           << elements.getShapedType() << " but the calibration's dimensions "
           << "give [";
      llvm::interleaveComma(expected, diag);
      return diag << "]";
    }
  }
  for (const ::kvprec::calib::CalibrationTensorSchema &spec :
       ::kvprec::calib::getCalibrationSchema())
    if (!getStats().get(spec.name))
      return emitOpError() << "is missing statistic '" << spec.name << "'";
  return success();
}

ElementsAttr CalibrationOp::getStat(StringRef name) {
  return dyn_cast_or_null<ElementsAttr>(getStats().get(name));
}
