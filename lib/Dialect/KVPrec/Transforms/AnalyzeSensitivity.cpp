//===- AnalyzeSensitivity.cpp - attach the allocation's inputs ------------===//

#include "PassSupport.h"

#include "kvprec/Certify/PlanCertifier.h"
#include "kvprec/Dialect/KVPrec/Transforms/Passes.h"

#include "mlir/IR/Builders.h"
#include "mlir/IR/BuiltinTypes.h"

#include <cmath>

namespace mlir::kvprec {
#define GEN_PASS_DEF_ANALYZESENSITIVITY
#include "kvprec/Dialect/KVPrec/Transforms/Passes.h.inc"
} // namespace mlir::kvprec

using namespace mlir;
using namespace mlir::kvprec;
namespace cf = ::kvprec::certify;

namespace {
struct AnalyzeSensitivityPass
    : public mlir::kvprec::impl::AnalyzeSensitivityBase<
          AnalyzeSensitivityPass> {
  using Base::Base;

  void runOnOperation() override {
    ModuleOp module = getOperation();
    // An infinite tolerance gave -inf necessary bits.
    if (!(tolerance > 0) || !std::isfinite(tolerance)) {
      module.emitError("kvprec-analyze-sensitivity: tolerance must be "
                       "positive and finite");
      return signalPassFailure();
    }
    FailureOr<std::vector<CalibratedAlloc>> allocs =
        collectCalibratedAllocs(module);
    if (failed(allocs))
      return signalPassFailure();
    bool any = false;
    for (CalibratedAlloc &entry : *allocs) {
      if (!entry.stats)
        continue;
      any = true;
      AllocOp alloc = entry.alloc;
      CacheType cache = alloc.getCache().getType();
      cf::Geometry g = getGeometry(cache);
      if (!cache.getPlan()) {
        g.block = entry.stats->shape.block;
        g.sink = entry.stats->shape.sink;
        g.window = entry.stats->shape.window;
      }
      if (std::string problem = cf::checkGeometry(*entry.stats, g);
          !problem.empty()) {
        alloc.emitOpError() << "cannot be analyzed: " << problem;
        return signalPassFailure();
      }
      int64_t count = g.layers * g.heads * cf::kNumSegments;
      std::vector<double> mass(count), kFirst(count), vFirst(count),
          kCurvature(count), kBits(count);
      double scale = 1.0 / std::sqrt(double(g.headDim));
      for (int64_t l = 0; l < g.layers; ++l)
        for (int64_t h = 0; h < g.heads; ++h) {
          cf::HeadEnvelope envelope =
              cf::buildHeadEnvelope(*entry.stats, g, l, h, {});
          double queryL1 = 0.0, maxSpan = 0.0;
          for (double q : envelope.queryBound)
            queryL1 += q;
          for (double span : envelope.valueSpan)
            maxSpan = std::max(maxSpan, span);
          double necessary = cf::computeKeyNecessaryBits(envelope, tolerance);
          for (int s = 0; s < cf::kNumSegments; ++s) {
            int64_t i = (l * g.heads + h) * cf::kNumSegments + s;
            double a = envelope.mass[s];
            mass[i] = a;
            // |Delta o| <= sum_t a_t (E_t R + dV_t), E_t <= scale ||Q||_1
            // max dK: per unit key and value error (section 1).
            kFirst[i] = a * maxSpan * queryL1 * scale;
            vFirst[i] = a;
            // kappa_K <= (1/2) ||q||_1^2 / d * max R (section 3).
            kCurvature[i] = a * 0.5 * queryL1 * queryL1 / g.headDim * maxSpan;
            kBits[i] = necessary;
          }
        }
      Builder b(&getContext());
      auto type = RankedTensorType::get({g.layers, g.heads, cf::kNumSegments},
                                        b.getF64Type());
      auto tensor = [&](const std::vector<double> &values) {
        return DenseElementsAttr::get(type, ArrayRef<double>(values));
      };
      alloc->setAttr(
          "kvprec.sensitivity",
          b.getDictionaryAttr({
              b.getNamedAttr("classes", b.getStrArrayAttr(
                                            {"sink", "window", "body"})),
              b.getNamedAttr("mass", tensor(mass)),
              b.getNamedAttr("k_first_order", tensor(kFirst)),
              b.getNamedAttr("v_first_order", tensor(vFirst)),
              b.getNamedAttr("k_curvature", tensor(kCurvature)),
              b.getNamedAttr("k_necessary_bits", tensor(kBits)),
              b.getNamedAttr("tolerance", b.getF64FloatAttr(tolerance)),
          }));
    }
    if (!any) {
      module.emitError("kvprec-analyze-sensitivity: no kvprec.alloc has a "
                       "calibration (run --kvprec-import-calibration first)");
      return signalPassFailure();
    }
  }
};
} // namespace
