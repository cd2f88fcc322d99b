//===- PassSupport.cpp - helpers shared by the kvprec passes --------------===//

#include "PassSupport.h"

#include "kvprec/Dialect/KVPrec/Transforms/CalibrationIR.h"

#include <cmath>
#include <cstdio>

using namespace mlir;
using namespace mlir::kvprec;
namespace an = ::kvprec::analysis;

FailureOr<std::vector<CalibratedAlloc>>
mlir::kvprec::collectCalibratedAllocs(ModuleOp module) {
  std::vector<CalibratedAlloc> result;
  SymbolTableCollection symbols;
  // Each calibration op is read once, however many caches use it.
  DenseMap<Operation *, std::optional<::kvprec::calib::CalibrationStats>>
      cache;
  bool failed = false;
  module.walk([&](AllocOp alloc) {
    CalibratedAlloc entry{alloc, {}, std::nullopt};
    if (FlatSymbolRefAttr name = alloc.getCalibrationAttr()) {
      entry.calibration =
          symbols.lookupNearestSymbolFrom<CalibrationOp>(alloc, name);
      if (!entry.calibration) {
        alloc.emitOpError() << "names calibration " << name
                            << ", which is not a kvprec.calibration op";
        failed = true;
        return;
      }
      auto it = cache.find(entry.calibration);
      if (it == cache.end()) {
        FailureOr<::kvprec::calib::CalibrationStats> stats =
            readCalibrationOp(entry.calibration);
        it = cache
                 .try_emplace(entry.calibration.getOperation(),
                              succeeded(stats)
                                  ? std::optional(std::move(*stats))
                                  : std::nullopt)
                 .first;
      }
      if (!it->second) {
        failed = true;
        return;
      }
      entry.stats = it->second;
    }
    result.push_back(std::move(entry));
  });
  if (failed)
    return failure();
  return result;
}

::kvprec::certify::Geometry mlir::kvprec::getGeometry(CacheType cache) {
  ::kvprec::certify::Geometry g;
  g.layers = cache.getLayers();
  g.heads = cache.getHeads();
  g.capacity = cache.getCapacity();
  g.headDim = cache.getHeadDim();
  if (PlanAttr plan = cache.getPlan()) {
    g.block = plan.getBlock();
    g.sink = plan.getSink();
    g.window = plan.getWindow();
  }
  return g;
}

FailureOr<double> mlir::kvprec::getCacheSoftmaxScale(AllocOp alloc) {
  CacheType base = alloc.getCache().getType().withPlan({});
  auto module = alloc->getParentOfType<ModuleOp>();
  std::optional<double> scale;
  AttendOp first;
  bool failed = false;
  module.walk([&](AttendOp attend) {
    if (attend.getCache().getType().withPlan({}) != base)
      return WalkResult::advance();
    double value = attend.getEffectiveScale();
    if (!scale) {
      scale = value;
      first = attend;
      return WalkResult::advance();
    }
    if (std::fabs(value - *scale) > 1e-6 * std::fabs(*scale)) {
      char buffer[96];
      std::snprintf(buffer, sizeof(buffer),
                    "reads the cache at softmax scale %g but another attend "
                    "reads it at %g",
                    value, *scale);
      InFlightDiagnostic diag = attend.emitOpError()
                                << buffer
                                << "; one certificate covers one scale";
      diag.attachNote(first.getLoc()) << "the other attend";
      failed = true;
      return WalkResult::interrupt();
    }
    return WalkResult::advance();
  });
  if (failed)
    return failure();
  if (scale)
    return *scale;
  return 1.0 / std::sqrt(double(base.getHeadDim()));
}

FailureOr<ComputedCertificate> mlir::kvprec::computeCertificate(
    AllocOp alloc, const ::kvprec::calib::CalibrationStats &stats,
    const ::kvprec::certify::Plan &plan,
    const ::kvprec::certify::CertifyOptions &options,
    const std::vector<double> &tolerances, double budget) {
  namespace cf = ::kvprec::certify;
  const cf::Geometry &g = plan.geometry;
  if (std::string problem = cf::checkCoverage(stats, g, options);
      !problem.empty())
    return alloc.emitOpError()
           << "plan cannot be certified from calibration @"
           << alloc.getCalibrationAttr().getValue() << ": " << problem;
  ComputedCertificate result;
  CertificateRecord &record = result.record;
  record.tolerances = tolerances;
  record.budget = budget;
  record.layerBounds.assign(g.layers, 0.0);
  for (int64_t layer = 0; layer < g.layers; ++layer)
    for (int64_t head = 0; head < g.heads; ++head) {
      an::StaticCertifiedBound bound;
      double keyLogitError = 0.0;
      if (an::Status status = cf::certifyPlanHead(stats, plan, layer, head,
                                                  options, bound,
                                                  keyLogitError);
          status.failed())
        return alloc.emitOpError()
               << "plan of layer " << layer << ", KV head " << head
               << " cannot be certified: " << status.getMessage();
      // A bound that overflows certifies nothing: keys so coarse that
      // e^E of their logit error overflows (uniform int2 keys, or what a
      // large ecap lets into a budget).
      if (!std::isfinite(bound.infNorm))
        return alloc.emitOpError()
               << "plan of layer " << layer << ", KV head " << head
               << " certifies no finite bound (the exponential of its keys' "
                  "logit error bound overflows); no certificate can be "
                  "attached: store its keys in a more precise format";
      result.headBounds.push_back(bound.infNorm);
      record.layerBounds[layer] =
          std::max(record.layerBounds[layer], bound.infNorm);
      record.bound = std::max(record.bound, bound.infNorm);
      double tolerance = tolerances.empty()      ? bound.infNorm
                         : tolerances.size() == 1 ? tolerances[0]
                                                  : tolerances[layer];
      cf::HeadEnvelope envelope =
          cf::buildHeadEnvelope(stats, g, layer, head, options);
      record.necessaryBits =
          std::max(record.necessaryBits,
                   cf::computeKeyNecessaryBits(envelope,
                                               std::max(tolerance, 1e-300)));
    }
  record.necessaryBits = std::max(record.necessaryBits, 0.0);
  double elements = double(plan.getNumItems()) * g.capacity * g.headDim;
  double bytes = plan.getTotalBytes();
  record.averageBits = bytes * 8 / elements;
  record.bytesVsF16 = bytes / (2 * elements);
  record.calibratedLength = stats.shape.maxPositions;
  record.probabilistic =
      options.certificate == cf::CertificateKind::Probabilistic;
  record.confidence = record.probabilistic ? options.failureProbability : 0.0;
  record.extrapolated = g.capacity > stats.shape.maxPositions;
  record.querySamples = options.jointEnvelope && !record.extrapolated
                            ? stats.shape.querySamples
                            : 0;
  record.margin = record.extrapolated ? options.extrapolationMargin : 1.0;
  record.softmaxScale = options.softmaxScale > 0
                            ? options.softmaxScale
                            : 1.0 / std::sqrt(double(g.headDim));
  record.dequant = options.dequantizer.precision;
  record.accumulateBlock = options.kernel.accumulateBlock > 0
                               ? options.kernel.accumulateBlock
                               : g.block;
  record.expUlps = options.kernel.expUlps;
  return result;
}

std::string mlir::kvprec::describeFormat(const an::StorageFormat &format) {
  std::string name = an::getStorageKindName(format.kind);
  if (!an::isScaled(format))
    return name;
  // "int4" -> "i4" to match the MLIR spelling used everywhere else.
  if (name.rfind("int", 0) == 0)
    name = "i" + name.substr(3);
  name += format.scheme == an::QuantScheme::Symmetric ? " sym" : " asym";
  name += format.granularity == an::Granularity::TokenGroup ? " tok"
                                                            : " chan";
  name += std::to_string(format.groupSize);
  name += " ";
  name += an::getStorageKindName(format.scaleKind);
  return name;
}
