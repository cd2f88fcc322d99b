//===- LowerDeviceVectors.cpp - device vector ops the NVVM path takes -----===//

#include "kvprec/Conversion/Passes.h"

#include "mlir/Dialect/GPU/IR/GPUDialect.h"
#include "mlir/Dialect/Vector/Transforms/LoweringPatterns.h"
#include "mlir/Dialect/Vector/Transforms/VectorRewritePatterns.h"
#include "mlir/Transforms/GreedyPatternRewriteDriver.h"

namespace mlir::kvprec {
#define GEN_PASS_DEF_LOWERDEVICEVECTORS
#include "kvprec/Conversion/Passes.h.inc"
} // namespace mlir::kvprec

using namespace mlir;

namespace {
struct LowerDeviceVectorsPass
    : public mlir::kvprec::impl::LowerDeviceVectorsBase<
          LowerDeviceVectorsPass> {
  void runOnOperation() override {
    RewritePatternSet patterns(&getContext());
    vector::populateVectorInsertExtractStridedSliceTransforms(patterns);
    vector::populateVectorMultiReductionLoweringPatterns(
        patterns, vector::VectorMultiReductionLowering::InnerReduction);
    vector::populateVectorBroadcastLoweringPatterns(patterns);
    vector::populateVectorShapeCastLoweringPatterns(patterns);
    if (failed(applyPatternsGreedily(getOperation(), std::move(patterns))))
      return signalPassFailure();
  }
};
} // namespace
