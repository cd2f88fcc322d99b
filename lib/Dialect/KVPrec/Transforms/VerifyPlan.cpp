//===- VerifyPlan.cpp - recompute and check plan certificates -------------===//
//
// Recomputes every plan's certificate from the plan and its calibration
// alone (kvprec/Certify's certifyPlanHead, not the allocator), so it checks
// hand-written plans and plans from any mode the same way.
//
//===----------------------------------------------------------------------===//

#include "PassSupport.h"

#include "kvprec/Analysis/Sensitivity.h"
#include "kvprec/Certify/Plan.h"
#include "kvprec/Dialect/KVPrec/Transforms/Passes.h"
#include "kvprec/Dialect/KVPrec/Transforms/PlanUtils.h"

#include "llvm/ADT/DenseSet.h"

namespace mlir::kvprec {
#define GEN_PASS_DEF_VERIFYPLAN
#include "kvprec/Dialect/KVPrec/Transforms/Passes.h.inc"
} // namespace mlir::kvprec

using namespace mlir;
using namespace mlir::kvprec;
namespace an = ::kvprec::analysis;
namespace cf = ::kvprec::certify;

namespace {
struct VerifyPlanPass
    : public mlir::kvprec::impl::VerifyPlanBase<VerifyPlanPass> {
  using Base::Base;

  /// Checks one cache; returns the recomputed certificate bound.
  FailureOr<double> verifyCache(const CalibratedAlloc &entry,
                                double &necessaryBitsOut);

  void runOnOperation() override {
    ModuleOp module = getOperation();
    FailureOr<std::vector<CalibratedAlloc>> allocs =
        collectCalibratedAllocs(module);
    if (failed(allocs))
      return signalPassFailure();
    bool failedAny = false;
    llvm::DenseMap<Type, Type> updated;
    for (const CalibratedAlloc &entry : *allocs) {
      AllocOp alloc = entry.alloc;
      CacheType cache = alloc.getCache().getType();
      if (!cache.getPlan())
        continue;
      double necessaryBits = 0.0;
      FailureOr<double> bound = verifyCache(entry, necessaryBits);
      if (failed(bound)) {
        failedAny = true;
        continue;
      }
      if (update) {
        PlanAttr plan = cache.getPlan();
        CertificateAttr old = plan.getCertificate();
        double tol = tolerance.empty() ? (old ? old.getTolerance()
                                                     .convertToDouble()
                                              : *bound)
                                       : *llvm::max_element(tolerance);
        std::optional<cf::Plan> plain = toPlainPlan(cache);
        double elements = double(plain->getNumItems()) *
                          plain->geometry.capacity * plain->geometry.headDim;
        double bytes = plain->getTotalBytes();
        auto certificate = CertificateAttr::get(
            &getContext(), APFloat(std::max(tol, 1e-300)), APFloat(*bound),
            APFloat(std::max(necessaryBits, 0.0)),
            APFloat(bytes * 8 / elements), APFloat(bytes / (2 * elements)));
        updated[cache] = cache.withPlan(PlanAttr::get(
            &getContext(), plan.getLayers(), plan.getHeads(),
            plan.getCapacity(), plan.getBlock(), plan.getSink(),
            plan.getWindow(), plan.getFormats(), plan.getSinkFormats(),
            plan.getBodyFormats(), plan.getWindowFormats(), certificate));
      }
    }
    if (failedAny)
      return signalPassFailure();
    if (!updated.empty())
      replaceCacheTypes(module, [&](CacheType type) -> CacheType {
        auto it = updated.find(type);
        return it == updated.end() ? CacheType() : cast<CacheType>(it->second);
      });
  }
};
} // namespace

FailureOr<double> VerifyPlanPass::verifyCache(const CalibratedAlloc &entry,
                                              double &necessaryBitsOut) {
  AllocOp alloc = entry.alloc;
  CacheType cache = alloc.getCache().getType();
  PlanAttr plan = cache.getPlan();
  CertificateAttr certificate = plan.getCertificate();
  if (!entry.stats)
    return alloc.emitOpError()
           << "has a plan but no calibration to certify it against (run "
              "--kvprec-import-calibration first)";
  std::optional<cf::Plan> plain = toPlainPlan(cache);
  const cf::Geometry &g = plain->geometry;
  if (std::string problem = cf::checkGeometry(*entry.stats, g);
      !problem.empty())
    return alloc.emitOpError() << "plan cannot be checked against calibration @"
                               << alloc.getCalibrationAttr().getValue() << ": "
                               << problem;

  std::vector<double> tolerances(tolerance.begin(), tolerance.end());
  if (tolerances.empty()) {
    if (!certificate)
      return alloc.emitOpError()
             << "plan has no certificate and no tolerance was given "
                "(--kvprec-verify-plan=\"tolerance=...\")";
    tolerances.push_back(certificate.getTolerance().convertToDouble());
  }
  if (tolerances.size() != 1 && tolerances.size() != size_t(g.layers))
    return alloc.emitOpError() << "has " << g.layers << " layers but "
                               << tolerances.size() << " tolerances were given";

  cf::CertifyOptions options;
  options.logitErrorCap = logitErrorCap;
  double worst = 0.0;
  necessaryBitsOut = 0.0;
  bool ok = true;
  for (int64_t layer = 0; layer < g.layers; ++layer) {
    double tol = tolerances.size() == 1 ? tolerances[0] : tolerances[layer];
    for (int64_t head = 0; head < g.heads; ++head) {
      an::StaticCertifiedBound bound;
      double keyLogitError = 0.0;
      if (an::Status status = cf::certifyPlanHead(
              *entry.stats, *plain, layer, head, options, bound, keyLogitError);
          status.failed()) {
        alloc.emitOpError() << "plan of layer " << layer << ", KV head "
                            << head << " cannot be certified: "
                            << status.getMessage();
        ok = false;
        continue;
      }
      worst = std::max(worst, bound.infNorm);
      if (bound.infNorm > tol) {
        alloc.emitOpError() << "plan of layer " << layer << ", KV head "
                            << head << " has certified bound "
                            << bound.infNorm << ", above the tolerance " << tol;
        ok = false;
      }
      // The HNF figure is only necessary: a key format with fewer bits than
      // it cannot reach the tolerance, whatever the bound says.
      cf::HeadEnvelope envelope =
          cf::buildHeadEnvelope(*entry.stats, g, layer, head, options);
      double needed = cf::computeKeyNecessaryBits(envelope, tol);
      necessaryBitsOut = std::max(necessaryBitsOut, needed);
      int64_t item = plain->getItem(layer, head, 0);
      auto checkBits = [&](const an::StorageFormat &format,
                           const char *segment) {
        if (an::getBitWidth(format.kind) < needed) {
          alloc.emitOpError()
              << "plan stores the " << segment << " keys of layer " << layer
              << ", KV head " << head << " in " << describeFormat(format)
              << " (" << an::getBitWidth(format.kind)
              << " bits), below the HNF necessary " << needed << " bits";
          ok = false;
        }
      };
      if (g.sink > 0)
        checkBits(plain->getSink(item), "sink");
      if (g.window > 0)
        checkBits(plain->getWindow(item), "window");
      for (int64_t b = 0; b < (plain->perBlock ? g.getNumBodyBlocks() : 1); ++b)
        checkBits(plain->getBody(item, b), "body");
    }
  }
  if (!ok)
    return failure();
  if (certificate && !update) {
    double recorded = certificate.getBound().convertToDouble();
    // The recorded bound must not claim more than can be proven (a relative
    // slack absorbs the decimal printing of the recorded value).
    if (recorded < worst * (1 - 1e-12))
      return alloc.emitOpError()
             << "plan certificate records bound " << recorded
             << " but the recomputed certified bound is " << worst;
  }
  return worst;
}
