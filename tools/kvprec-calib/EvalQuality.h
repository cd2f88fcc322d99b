//===- EvalQuality.h - what a plan does to the model's output ---*- C++ -*-===//
//
// kvprec-calib eval-quality: for every prompt, the fp32 model's own greedy
// continuation makes a token sequence; the model runs over it twice,
// teacher-forced, once with the exact fp32 cache and once with the cache
// stored as the plan says, and per position the two next-token
// distributions are compared: KL(fp32 || plan), top-1 agreement, and the
// perplexity of both on the prompt's tokens. The same again with only one
// layer's cache planned (the others exact) gives each layer's sensitivity.
//
//===----------------------------------------------------------------------===//

#ifndef KVPREC_TOOLS_KVPREC_CALIB_EVALQUALITY_H
#define KVPREC_TOOLS_KVPREC_CALIB_EVALQUALITY_H

#include "Backends.h"

#include "kvprec/Calibration/Model.h"
#include "kvprec/Calibration/TextTokenizer.h"

#include "llvm/Support/raw_ostream.h"

#include <string>
#include <vector>

namespace kvprec::calib {

struct EvalQualityInputs {
  const LlamaModel *model = nullptr;
  const TextTokenizer *tokenizer = nullptr;
  std::string promptsPath;
  std::vector<std::string> prompts;
  int steps = 0;
  std::string irPath;
  BackendKind backend = BackendKind::Emulated;
  /// When set, the logits of both runs at every position (safetensors:
  /// "exact" and "plan" [T, vocab] F32, "targets" and "prompt" [T] I64).
  std::string dumpPath;
  /// When set, the planned module is written there with the measurement as
  /// a `kvprec.quality` dictionary on its planned kvprec.alloc (which
  /// kvprec-report shows beside the certificate).
  std::string annotatePath;
};

/// The running totals of one comparison (the whole plan, or one layer).
struct QualityTotals {
  double sumKL = 0.0, maxKL = 0.0;
  int64_t positions = 0, agreements = 0;
  double nllExact = 0.0, nllPlan = 0.0;
  int64_t promptPositions = 0;
  /// KL(fp32 || plan) at each position, in order: plans measured on the
  /// same prompts compare position by position (plan-budget's paired test).
  std::vector<double> kls;

  void add(llvm::ArrayRef<float> exact, llvm::ArrayRef<float> plan, int target,
           bool inPrompt);
  double getMeanKL() const { return positions ? sumKL / positions : 0.0; }
  double getTop1Agreement() const {
    return positions ? double(agreements) / positions : 1.0;
  }
};

/// What one plan does to the model, measured.
struct QualityMeasurement {
  PlannedCacheType cache;
  /// Positions the sequences stop at (the cache's capacity or the context).
  int64_t capacity = 0;
  QualityTotals whole;
  /// One per layer (only that layer's cache planned); empty when not asked.
  std::vector<QualityTotals> perLayer;
};

/// Runs the comparison of EvalQuality.h's header (and writes the logits
/// when inputs.dumpPath is set); the per-layer runs only with `perLayer`.
llvm::Expected<QualityMeasurement>
measureQuality(const EvalQualityInputs &inputs, bool perLayer = true);

/// Writes the planned module at `irPath` to `outPath` with `measurement` as
/// a `kvprec.quality` dictionary on its planned kvprec.alloc.
llvm::Error annotateQuality(llvm::StringRef irPath,
                            const QualityMeasurement &measurement,
                            BackendKind backend, llvm::StringRef promptsPath,
                            llvm::StringRef outPath);

/// Prints one JSON object (docs/calibration.md lists its fields).
llvm::Error runEvalQuality(const EvalQualityInputs &inputs,
                           llvm::raw_ostream &os);

} // namespace kvprec::calib

#endif // KVPREC_TOOLS_KVPREC_CALIB_EVALQUALITY_H
