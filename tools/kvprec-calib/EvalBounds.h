//===- EvalBounds.h - kvprec-calib eval-bounds ------------------*- C++ -*-===//
//
// Checks the static certificate of a planned module against measured
// attention errors on a real checkpoint: every decode step of every prompt
// is run in fp32 while an emulated cache stores K and V exactly as the plan
// says (PlanEmulation.h); the error of exact attention over the emulated
// cache, with the model's own query, is compared with the certified bound of
// that (layer, KV head) and with the run-time a-posteriori certificate.
//
//===----------------------------------------------------------------------===//

#ifndef KVPREC_TOOLS_KVPREC_CALIB_EVALBOUNDS_H
#define KVPREC_TOOLS_KVPREC_CALIB_EVALBOUNDS_H

#include "kvprec/Calibration/Model.h"
#include "kvprec/Calibration/TextTokenizer.h"

#include "llvm/Support/Error.h"
#include "llvm/Support/raw_ostream.h"

#include <string>
#include <vector>

namespace kvprec::calib {

struct EvalBoundsInputs {
  const LlamaModel *model = nullptr;
  const TextTokenizer *tokenizer = nullptr;
  std::string checkpointPath;
  std::string promptsPath;
  std::vector<std::string> prompts;
  /// Greedy tokens generated (and run) after each prompt.
  int steps = 0;
  /// The planned module (kvprec-assign-precision output).
  std::string irPath;
  /// Optional JSON Lines file with one record per case.
  std::string casesPath;
  /// Also run the code kvprec-to-llvm generates for the cache and report
  /// how its attention differs (--backend=compiled).
  bool compiled = false;
};

/// Runs the evaluation and prints one JSON object to `os`. Errors name the
/// file (and, for the module, the location) of the problem.
llvm::Error runEvalBounds(const EvalBoundsInputs &inputs,
                          llvm::raw_ostream &os);

} // namespace kvprec::calib

#endif // KVPREC_TOOLS_KVPREC_CALIB_EVALBOUNDS_H
