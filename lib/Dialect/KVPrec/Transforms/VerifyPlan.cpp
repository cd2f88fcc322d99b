//===- VerifyPlan.cpp - recompute and check plan certificates -------------===//
//
// Recomputes every plan's certificate from the plan and its calibration
// alone (not the allocator), so it checks hand-written plans and plans from
// any mode the same way, and compares every recorded field with the
// recomputed one.
//
//===----------------------------------------------------------------------===//

#include "PassSupport.h"

#include "kvprec/Certify/Plan.h"
#include "kvprec/Certify/ReferenceCertifier.h"
#include "kvprec/Dialect/KVPrec/Transforms/Passes.h"
#include "kvprec/Dialect/KVPrec/Transforms/PlanUtils.h"

#include <cmath>
#include <cstdio>

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

  /// Checks one cache; returns the recomputed certificate.
  FailureOr<CertificateRecord> verifyCache(const CalibratedAlloc &entry);

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
      FailureOr<CertificateRecord> record = verifyCache(entry);
      if (failed(record)) {
        failedAny = true;
        continue;
      }
      if (update)
        updated[cache] = cache.withPlan(buildPlanAttr(
            &getContext(), *toPlainPlan(cache),
            buildCertificateAttr(&getContext(), *record)));
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

/// A number as messages show it: %.6g.
static std::string formatShortest(double value) {
  char buffer[32];
  std::snprintf(buffer, sizeof(buffer), "%.6g", value);
  return buffer;
}

/// Whether two recomputed figures agree up to the decimal printing of the
/// recorded one.
static bool agrees(double recorded, double recomputed) {
  return std::fabs(recorded - recomputed) <=
         1e-12 * std::max(std::fabs(recorded), std::fabs(recomputed)) + 1e-300;
}

FailureOr<CertificateRecord>
VerifyPlanPass::verifyCache(const CalibratedAlloc &entry) {
  AllocOp alloc = entry.alloc;
  CacheType cache = alloc.getCache().getType();
  CertificateAttr recordedAttr = cache.getPlan().getCertificate();
  if (!entry.stats)
    return alloc.emitOpError()
           << "has a plan but no calibration to certify it against (run "
              "--kvprec-import-calibration first)";
  std::optional<cf::Plan> plain = toPlainPlan(cache);
  const cf::Geometry &g = plain->geometry;
  std::optional<CertificateRecord> recorded;
  if (recordedAttr)
    recorded = readCertificateAttr(recordedAttr);

  // What to check against: the tolerance option, else the recorded
  // tolerances or budget.
  std::vector<double> tolerances(tolerance.begin(), tolerance.end());
  double budget = 0.0;
  if (tolerances.empty()) {
    if (!recorded)
      return alloc.emitOpError()
             << "plan has no certificate and no tolerance was given "
                "(--kvprec-verify-plan=\"tolerance=...\")";
    tolerances = recorded->tolerances;
    budget = recorded->budget;
  }
  for (double value : tolerances)
    if (!(value > 0) || !std::isfinite(value))
      return alloc.emitOpError()
             << "tolerance must be positive and finite, got " << value;
  if (budget == 0.0 && tolerances.size() != 1 &&
      tolerances.size() != size_t(g.layers))
    return alloc.emitOpError() << "has " << g.layers << " layers but "
                               << tolerances.size() << " tolerances were given";

  // The contract: the scale the module reads the cache at, the kernel
  // arithmetic kvprec's lowering performs, and the extrapolation rule the
  // certificate states (or this pass's options without a certificate).
  cf::CertifyOptions options;
  FailureOr<double> scale = getCacheSoftmaxScale(alloc);
  if (failed(scale))
    return failure();
  options.softmaxScale = *scale;
  options.extrapolation = extrapolate;
  options.extrapolationMargin = margin;
  options.certificate = certificate;
  options.failureProbability = confidence;
  if (recorded) {
    options.certificate = recorded->probabilistic
                              ? cf::CertificateKind::Probabilistic
                              : cf::CertificateKind::Deterministic;
    options.failureProbability = recorded->confidence;
  } else if (certificate == cf::CertificateKind::Probabilistic &&
             !(confidence > 0.0 && confidence < 1.0))
    return alloc.emitOpError()
           << "certificate=probabilistic needs a failure probability "
              "confidence in (0, 1), got "
           << confidence.getValue();
  if (recorded && recorded->extrapolated) {
    options.extrapolation = cf::Extrapolation::WorstCase;
    options.extrapolationMargin = recorded->margin;
  }
  FailureOr<ComputedCertificate> computed = computeCertificate(
      alloc, *entry.stats, *plain, options, tolerances, budget);
  if (failed(computed))
    return failure();
  const CertificateRecord &fresh = computed->record;

  // The independent check: the certificate recomputed position by position
  // (ReferenceCertifier.h), which shares only the per-element error model
  // with the certifier above. It must meet the tolerance on its own, and
  // the certifier must never claim a smaller bound than it.
  bool ok = true;
  std::vector<double> referenceBounds(g.layers * g.heads, 0.0);
  for (int64_t flat = 0; flat < g.layers * g.heads; ++flat) {
    int64_t layer = flat / g.heads, head = flat % g.heads;
    if (an::Status status = cf::certifyHeadByPosition(
            *entry.stats, *plain, layer, head, options, referenceBounds[flat]);
        status.failed())
      return alloc.emitOpError()
             << "plan of layer " << layer << ", KV head " << head
             << " cannot be certified position by position: "
             << status.getMessage();
    if (computed->headBounds[flat] <
        referenceBounds[flat] * (1 - 1e-9)) {
      alloc.emitOpError() << "plan of layer " << layer << ", KV head " << head
                          << ": the certifier's bound "
                          << formatShortest(computed->headBounds[flat])
                          << " is below the position-by-position bound "
                          << formatShortest(referenceBounds[flat])
                          << " (an internal inconsistency; the certificate "
                             "is not trusted)";
      ok = false;
    }
  }

  if (budget > 0) {
    double bytes = plain->getTotalBytes();
    if (bytes > budget) {
      alloc.emitOpError() << "plan stores " << formatShortest(bytes)
                          << " bytes, above its budget of "
                          << formatShortest(budget);
      ok = false;
    }
  } else {
    for (int64_t flat = 0; flat < g.layers * g.heads; ++flat) {
      int64_t layer = flat / g.heads;
      double tol = tolerances.size() == 1 ? tolerances[0] : tolerances[layer];
      // (A relative 1e-12 absorbs the rounding between the two certifiers
      // and the printing of the tolerance.)
      if (referenceBounds[flat] > tol * (1 + 1e-12)) {
        alloc.emitOpError()
            << "plan of layer " << layer << ", KV head " << flat % g.heads
            << " has position-by-position bound "
            << formatShortest(referenceBounds[flat]) << ", above the tolerance "
            << formatShortest(tol);
        ok = false;
      } else if (computed->headBounds[flat] > tol * (1 + 1e-12)) {
        alloc.emitOpError() << "plan of layer " << layer << ", KV head "
                            << flat % g.heads << " has certified bound "
                            << computed->headBounds[flat]
                            << ", above the tolerance " << tol;
        ok = false;
      }
    }
  }
  if (!ok)
    return failure();
  if (!recorded || update)
    return fresh;

  // Every recorded field must be the one the plan and calibration give.
  auto mismatch = [&](StringRef field, const std::string &recordedValue,
                      const std::string &freshValue) {
    alloc.emitOpError() << "plan certificate records " << field << " "
                        << recordedValue << " but the recomputed value is "
                        << freshValue;
    ok = false;
  };
  auto compare = [&](const std::string &field, double a, double b) {
    if (!agrees(a, b))
      mismatch(field, formatShortest(a), formatShortest(b));
  };
  compare("bound", recorded->bound, fresh.bound);
  if (recorded->layerBounds.size() != fresh.layerBounds.size())
    mismatch("layer_bounds of size", std::to_string(recorded->layerBounds.size()),
             std::to_string(fresh.layerBounds.size()));
  else
    for (size_t l = 0; l < fresh.layerBounds.size(); ++l)
      compare("layer_bounds[" + std::to_string(l) + "]",
              recorded->layerBounds[l], fresh.layerBounds[l]);
  compare("necessary_bits", recorded->necessaryBits, fresh.necessaryBits);
  compare("average_bits", recorded->averageBits, fresh.averageBits);
  compare("bytes_vs_f16", recorded->bytesVsF16, fresh.bytesVsF16);
  if (recorded->calibratedLength != fresh.calibratedLength)
    mismatch("calibrated_length", std::to_string(recorded->calibratedLength),
             std::to_string(fresh.calibratedLength));
  if (recorded->querySamples != fresh.querySamples)
    mismatch("query_samples", std::to_string(recorded->querySamples),
             std::to_string(fresh.querySamples));
  if (recorded->extrapolated != fresh.extrapolated)
    mismatch("extrapolation",
             recorded->extrapolated ? "worst_case" : "none",
             fresh.extrapolated ? "worst_case" : "none");
  compare("softmax_scale", recorded->softmaxScale, fresh.softmaxScale);
  if (recorded->dequant != fresh.dequant)
    mismatch("dequant", an::getStorageKindName(recorded->dequant),
             an::getStorageKindName(fresh.dequant));
  if (recorded->accumulateBlock != fresh.accumulateBlock)
    mismatch("accumulate_block", std::to_string(recorded->accumulateBlock),
             std::to_string(fresh.accumulateBlock));
  if (recorded->expUlps != fresh.expUlps)
    mismatch("exp_ulps", std::to_string(recorded->expUlps),
             std::to_string(fresh.expUlps));
  if (!ok)
    return failure();
  return fresh;
}
