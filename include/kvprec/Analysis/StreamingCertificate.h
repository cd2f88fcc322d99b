//===- StreamingCertificate.h - run-time certificate, one pass -*- C++ -*-===//
//
// The run-time certificate of error-bounds.md section 5 plus the kernel
// rounding term of section 8, in the form a decode-attention kernel can
// compute in the same pass over the cache that computes the output: every
// quantity is a sum over positions weighted by the unnormalised softmax
// weights (rescaled like the softmax sum when tiles combine), a maximum or
// a minimum. It differs from computeRuntimeCertificate +
// computeKernelRoundingBound (Bound.h) only by three relaxations, each of
// which can only raise the bound:
//  * the exact weights' bounds a_t <= a^_t e^{E_t + sum_s a^_s E_s} are not
//    capped at 1;
//  * every residual |V_{t,j} - o_j| (and |V^_{t,j} - o^_j| in the kernel
//    term) is bounded by R_j = span_j(V^) + 2 max_s deltaV_{s,j} (section
//    5), because the exact and the perturbed outputs lie in the convex hull
//    of the values;
//  * the kernel term's logit error uses 4 (not 2) times the largest
//    dot-product error, so that the kernel may shift by its own computed
//    maximum logit instead of the exact one.
// This file is the double-precision reference of what
// kvprec-materialize-storage generates (P_attend_certified, docs/abi.md).
//
//===----------------------------------------------------------------------===//

#ifndef KVPREC_ANALYSIS_STREAMINGCERTIFICATE_H
#define KVPREC_ANALYSIS_STREAMINGCERTIFICATE_H

#include "kvprec/Analysis/Bound.h"

namespace kvprec {
namespace analysis {

struct StreamingCertificate {
  /// Per output component: the storage part (values and keys) and the
  /// kernel rounding part of the Theorem's bound; the hull bound R_j +
  /// (kernel's relative accumulation error) max_t |V^_{t,j}|, which holds
  /// whatever the logit errors (the computed output is a rounded convex
  /// combination of the stored values, the exact one lies within deltaV of
  /// their hull); and the smaller of the two. infNorm is the largest.
  std::vector<double> storage, kernel, hull, perComponent;
  double infNorm = 0.0;
};

/// The streaming certificate for one query head: `query` (d entries), the
/// dequantized keys and values (T x d) with their per-element error bounds
/// deltaK, deltaV, and the softmax scale (logits scale * q . K^_t; 1/sqrt(d)
/// is the default of kvprec.attend). `model` is the kernel's arithmetic
/// (Bound.h); generated kernels rescale each tile once (numRescales = 1).
Status computeStreamingCertificate(
    const std::vector<double> &query, const Matrix &dequantizedKeys,
    const Matrix &dequantizedValues, const Matrix &keyErrorBounds,
    const Matrix &valueErrorBounds, double softmaxScale,
    const KernelRoundingModel &model, StreamingCertificate &result);

} // namespace analysis
} // namespace kvprec

#endif // KVPREC_ANALYSIS_STREAMINGCERTIFICATE_H
