//===- PlanBudget.h - a byte budget spent by measured KL --------*- C++ -*-===//
//
// kvprec-calib plan-budget: the certified allocator's budget mode
// (kvprec-assign-precision budget=B) minimises the sum of the heads'
// worst-case bounds, and which key formats it may use depends on its
// logit error cap (ecap): a cap that is right for the bound is often wrong
// for the model's output. plan-budget plans the budget at several caps,
// with integer scales shared per token and per channel (KIVI's keys),
// adds the uniform plans of every format that fit the budget,
// measures each plan's KL on the given (calibration) prompts as
// eval-quality does, and keeps, of the plans whose KL cannot be told from
// the lowest (a paired comparison position by position, within two
// standard errors), the one with the lowest certified bound. The plan it
// writes carries its own certificate, as every kvprec plan does; the
// choice between the candidates is measured, and the certificate breaks
// the ties the measurement cannot.
//
//===----------------------------------------------------------------------===//

#ifndef KVPREC_TOOLS_KVPREC_CALIB_PLANBUDGET_H
#define KVPREC_TOOLS_KVPREC_CALIB_PLANBUDGET_H

#include "EvalQuality.h"

#include "llvm/Support/raw_ostream.h"

#include <string>
#include <vector>

namespace kvprec::calib {

struct PlanBudgetInputs {
  /// The model, prompts and steps of the measurement; `irPath` is the
  /// calibrated module (kvprec-import-calibration output) to plan.
  EvalQualityInputs evaluation;
  /// Bytes of the whole cache.
  double budget = 0.0;
  /// The logit error caps tried (kvprec-assign-precision's ecap).
  std::vector<double> caps;
  /// More kvprec-assign-precision options for every candidate (formats=,
  /// per-block=, ...); not budget=, ecap=, mode=, tolerance= or kl=.
  std::string assignOptions;
  /// Where the chosen plan goes, with its measurement as kvprec.quality.
  std::string outPath;
};

/// The default caps: 0.25 (kvprec-assign-precision's default) to 32.
std::vector<double> getDefaultPlanBudgetCaps();

/// Plans, measures and chooses; prints one JSON object (docs/calibration.md
/// lists its fields) and writes the chosen plan.
llvm::Error runPlanBudget(const PlanBudgetInputs &inputs,
                          llvm::raw_ostream &os);

} // namespace kvprec::calib

#endif // KVPREC_TOOLS_KVPREC_CALIB_PLANBUDGET_H
