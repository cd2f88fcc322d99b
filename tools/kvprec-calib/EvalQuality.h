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

/// Prints one JSON object (docs/calibration.md lists its fields).
llvm::Error runEvalQuality(const EvalQualityInputs &inputs,
                           llvm::raw_ostream &os);

} // namespace kvprec::calib

#endif // KVPREC_TOOLS_KVPREC_CALIB_EVALQUALITY_H
