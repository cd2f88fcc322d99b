//===- PassSupport.cpp - helpers shared by the kvprec passes --------------===//

#include "PassSupport.h"

#include "kvprec/Dialect/KVPrec/Transforms/CalibrationIR.h"

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
