//===- DownstreamSensitivity.h - layer errors and the logits ---*- C++ -*-===//
//
// The measured (not certified) half of an end-to-end quality target: how
// much an error in one layer's attention outputs moves the model's
// next-token distribution. For each layer, the model runs teacher-forced
// over calibration sequences with every attention output element of that
// layer off by +-error (random signs), and the mean KL divergence from the
// unperturbed distribution, divided by error^2 (KL is second order in a
// small error), is the layer's sensitivity. kvprec-assign-precision{kl=}
// turns a KL target into per-layer tolerances with it.
//
//===----------------------------------------------------------------------===//

#ifndef KVPREC_CALIBRATION_DOWNSTREAMSENSITIVITY_H
#define KVPREC_CALIBRATION_DOWNSTREAMSENSITIVITY_H

#include "kvprec/Calibration/Model.h"

#include "llvm/ADT/ArrayRef.h"
#include "llvm/Support/Error.h"

#include <vector>

namespace kvprec::calib {

/// log softmax(logits), in double.
std::vector<double> computeLogSoftmax(llvm::ArrayRef<float> logits);

/// KL(softmax(p) || softmax(q)) of two logit vectors, in nats, computed in
/// double; 0 exactly when they are equal.
double computeKLDivergence(llvm::ArrayRef<float> p, llvm::ArrayRef<float> q);

/// Per layer: mean over the positions of `sequences` (each predicting its
/// next token) of KL(unperturbed || perturbed) / error^2.
llvm::Expected<std::vector<double>>
measureLayerKLSensitivity(const LlamaModel &model,
                          llvm::ArrayRef<std::vector<int>> sequences,
                          float error, uint64_t seed);

} // namespace kvprec::calib

#endif // KVPREC_CALIBRATION_DOWNSTREAMSENSITIVITY_H
