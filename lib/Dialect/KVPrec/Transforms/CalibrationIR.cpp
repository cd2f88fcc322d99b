//===- CalibrationIR.cpp - calibration statistics <-> IR ------------------===//

#include "kvprec/Dialect/KVPrec/Transforms/CalibrationIR.h"

#include "mlir/IR/Builders.h"
#include "mlir/IR/BuiltinAttributes.h"
#include "mlir/IR/BuiltinTypes.h"
#include "mlir/IR/DialectResourceBlobManager.h"
#include "llvm/Support/raw_ostream.h"

#include <cstring>

using namespace mlir;
using namespace mlir::kvprec;
namespace calib = ::kvprec::calib;
using namespace ::kvprec::calib;

static Type getElementType(Builder &builder, DType dtype) {
  return dtype == DType::I64 ? Type(builder.getI64Type())
                             : Type(builder.getF32Type());
}

template <typename T>
static ElementsAttr makeElements(RankedTensorType type, StringRef blobName,
                                 const std::vector<T> &values,
                                 int64_t inlineLimit) {
  if (static_cast<int64_t>(values.size()) <= inlineLimit)
    return DenseElementsAttr::get(type, llvm::ArrayRef<T>(values));
  AsmResourceBlob blob =
      HeapAsmResourceBlob::allocateAndCopyInferAlign<T>(values);
  return DenseResourceElementsAttr::get(type, blobName, std::move(blob));
}

CalibrationOp mlir::kvprec::buildCalibrationOp(OpBuilder &builder, Location loc,
                                               StringRef symbolName,
                                               const CalibrationStats &stats,
                                               int64_t inlineLimit) {
  SmallVector<NamedAttribute> entries;
  for (const CalibrationTensorSpec &spec : getCalibrationTensorSpecs()) {
    auto type = RankedTensorType::get(getTensorShape(stats.shape, spec.kind),
                                      getElementType(builder, spec.dtype));
    std::string blobName = (symbolName + "." + spec.name).str();
    ElementsAttr value =
        spec.f32Member
            ? makeElements(type, blobName, stats.*spec.f32Member, inlineLimit)
            : makeElements(type, blobName, stats.*spec.i64Member, inlineLimit);
    entries.push_back(builder.getNamedAttr(spec.name, value));
  }
  const CalibrationShape &shape = stats.shape;
  CalibrationOp op = CalibrationOp::create(
      builder, loc, builder.getStringAttr(symbolName),
      builder.getI64IntegerAttr(shape.layers),
      builder.getI64IntegerAttr(shape.kvHeads),
      builder.getI64IntegerAttr(shape.qHeads),
      builder.getI64IntegerAttr(shape.headDim),
      builder.getI64IntegerAttr(shape.sink),
      builder.getI64IntegerAttr(shape.window),
      builder.getI64IntegerAttr(shape.block),
      builder.getI64IntegerAttr(shape.maxPositions),
      builder.getI64IntegerAttr(shape.querySamples),
      builder.getStringAttr(stats.model), builder.getBoolAttr(stats.synthetic),
      builder.getF64FloatAttr(stats.softmaxScale),
      builder.getDictionaryAttr(entries), DenseF64ArrayAttr(), FloatAttr());
  if (!stats.layerKLSensitivity.empty()) {
    op.setLayerKlSensitivity(stats.layerKLSensitivity);
    op.setSensitivityErrorAttr(builder.getF64FloatAttr(stats.sensitivityError));
  }
  return op;
}

/// Copies the elements of `attr` into `values`; returns an error message on
/// failure.
template <typename T>
static std::string readElements(ElementsAttr attr, std::vector<T> &values) {
  int64_t count = attr.getNumElements();
  values.assign(count, T());
  if (auto dense = dyn_cast<DenseElementsAttr>(attr)) {
    llvm::copy(dense.getValues<T>(), values.begin());
    return "";
  }
  if (auto resource = dyn_cast<DenseResourceElementsAttr>(attr)) {
    AsmResourceBlob *blob = resource.getRawHandle().getBlob();
    if (!blob)
      return "its dense_resource blob '" +
             resource.getRawHandle().getKey().str() +
             "' is missing from the file";
    ArrayRef<char> data = blob->getData();
    if (data.size() != count * sizeof(T))
      return "its dense_resource blob holds " + std::to_string(data.size()) +
             " bytes, expected " + std::to_string(count * sizeof(T));
    if (!data.empty()) // memcpy from or to null is UB even for 0 bytes
      std::memcpy(values.data(), data.data(), data.size());
    return "";
  }
  return "it is neither a dense nor a dense_resource elements attribute";
}

FailureOr<CalibrationStats> mlir::kvprec::readCalibrationOp(CalibrationOp op) {
  CalibrationStats stats;
  stats.shape.layers = op.getLayers();
  stats.shape.kvHeads = op.getKvHeads();
  stats.shape.qHeads = op.getQHeads();
  stats.shape.headDim = op.getHeadDim();
  stats.shape.sink = op.getSink();
  stats.shape.window = op.getWindow();
  stats.shape.block = op.getBlock();
  stats.shape.maxPositions = op.getMaxPositions();
  stats.shape.querySamples = op.getQuerySamples();
  stats.model = op.getModel().str();
  stats.synthetic = op.getSynthetic();
  stats.softmaxScale = op.getSoftmaxScale().convertToDouble();
  if (std::optional<ArrayRef<double>> sensitivity =
          op.getLayerKlSensitivity()) {
    stats.layerKLSensitivity.assign(sensitivity->begin(), sensitivity->end());
    stats.sensitivityError = op.getSensitivityError()->convertToDouble();
  }
  std::string context = ("kvprec.calibration @" + op.getSymName()).str();
  // Splat attributes make huge statistics a few bytes of IR: the shape's
  // size limits come before anything is expanded.
  if (llvm::Error error = validateCalibrationShape(stats.shape, context)) {
    InFlightDiagnostic diag = op.emitOpError();
    diag << llvm::toString(std::move(error));
    return diag;
  }
  for (const CalibrationTensorSpec &spec : getCalibrationTensorSpecs()) {
    // The verifier already checked presence, shape and element type.
    ElementsAttr attr = op.getStat(spec.name);
    if (!attr)
      return op.emitOpError() << "has no statistic '" << spec.name << "'";
    std::string error = spec.f32Member
                            ? readElements(attr, stats.*spec.f32Member)
                            : readElements(attr, stats.*spec.i64Member);
    if (!error.empty())
      return op.emitOpError()
             << "cannot read statistic '" << spec.name << "': " << error;
  }
  if (llvm::Error error = validateCalibrationStats(stats, context)) {
    InFlightDiagnostic diag = op.emitOpError();
    diag << llvm::toString(std::move(error));
    return diag;
  }
  return stats;
}

std::string
mlir::kvprec::describeCalibrationMismatch(const CalibrationShape &shape,
                                          CacheType cache) {
  std::string message;
  llvm::raw_string_ostream os(message);
  if (shape.layers != cache.getLayers())
    os << "the statistics describe " << shape.layers
       << " layers but the cache has " << cache.getLayers();
  else if (shape.kvHeads != cache.getHeads())
    os << "the statistics describe " << shape.kvHeads
       << " KV heads but the cache has " << cache.getHeads();
  else if (shape.headDim != cache.getHeadDim())
    os << "the statistics describe head_dim " << shape.headDim
       << " but the cache has head_dim " << cache.getHeadDim();
  return message;
}
