//===- ImportCalibration.cpp - load statistics into the module ------------===//

#include "kvprec/Calibration/CalibrationStats.h"
#include "kvprec/Dialect/KVPrec/Transforms/CalibrationIR.h"
#include "kvprec/Dialect/KVPrec/Transforms/Passes.h"

#include "mlir/IR/Builders.h"
#include "mlir/IR/SymbolTable.h"

namespace mlir::kvprec {
#define GEN_PASS_DEF_IMPORTCALIBRATION
#include "kvprec/Dialect/KVPrec/Transforms/Passes.h.inc"
} // namespace mlir::kvprec

using namespace mlir;
using namespace mlir::kvprec;

namespace {
struct ImportCalibrationPass
    : public mlir::kvprec::impl::ImportCalibrationBase<ImportCalibrationPass> {
  using Base::Base;

  void runOnOperation() override {
    ModuleOp module = getOperation();
    if (file.empty()) {
      module.emitError("kvprec-import-calibration needs a statistics file: "
                       "--kvprec-import-calibration=\"file=STATS.safetensors\"");
      return signalPassFailure();
    }
    // An empty symbol name prints as IR that does not parse again.
    if (symbolName.empty()) {
      module.emitError("kvprec-import-calibration: name= must not be empty");
      return signalPassFailure();
    }
    if (inlineLimit < 0) {
      module.emitError() << "kvprec-import-calibration: inline-limit must be "
                            "non-negative, got "
                         << static_cast<int64_t>(inlineLimit);
      return signalPassFailure();
    }
    if (SymbolTable::lookupSymbolIn(module, symbolName)) {
      module.emitError() << "kvprec-import-calibration: the module already "
                            "has a symbol named @"
                         << symbolName << "; choose another with name=...";
      return signalPassFailure();
    }

    llvm::Expected<::kvprec::calib::CalibrationStats> stats =
        ::kvprec::calib::readCalibrationFile(file);
    if (!stats) {
      InFlightDiagnostic diag =
          module.emitError() << "kvprec-import-calibration: "
                             << llvm::toString(stats.takeError());
      diag.attachNote(FileLineColLoc::get(&getContext(), file, 0, 0))
          << "while reading this statistics file";
      return signalPassFailure();
    }

    // Every cache in the module must be one these statistics describe, and
    // every attention must use the calibrated number of query heads.
    bool mismatch = false;
    SmallVector<AllocOp> allocs;
    module.walk([&](Operation *op) {
      if (auto alloc = dyn_cast<AllocOp>(op)) {
        allocs.push_back(alloc);
        std::string problem =
            describeCalibrationMismatch(stats->shape, alloc.getCache().getType());
        if (!problem.empty()) {
          alloc.emitOpError() << "cannot be calibrated by '" << file
                              << "': " << problem;
          mismatch = true;
        }
      } else if (auto attend = dyn_cast<AttendOp>(op)) {
        std::string problem = describeCalibrationMismatch(
            stats->shape, attend.getCache().getType());
        int64_t queryHeads = attend.getQuery().getType().getDimSize(0);
        if (problem.empty() && !ShapedType::isDynamic(queryHeads) &&
            queryHeads != stats->shape.qHeads)
          problem = "the statistics describe " +
                    std::to_string(stats->shape.qHeads) +
                    " query heads but this attention has " +
                    std::to_string(queryHeads);
        if (!problem.empty()) {
          attend.emitOpError() << "cannot be calibrated by '" << file
                               << "': " << problem;
          mismatch = true;
        }
      }
    });
    if (mismatch)
      return signalPassFailure();
    if (allocs.empty()) {
      module.emitError() << "kvprec-import-calibration: the module has no "
                            "kvprec.alloc to calibrate";
      return signalPassFailure();
    }

    OpBuilder builder = OpBuilder::atBlockBegin(module.getBody());
    Location loc = FileLineColLoc::get(&getContext(), file, 0, 0);
    buildCalibrationOp(builder, loc, symbolName, *stats, inlineLimit);
    for (AllocOp alloc : allocs)
      alloc.setCalibrationAttr(
          FlatSymbolRefAttr::get(&getContext(), symbolName));
  }
};
} // namespace
