//===- Bound.h - Certified attention-output error bounds --------*- C++ -*-===//
//
// The certified bound of error-bounds.md for single-query decode attention
// (one head, one layer): the concrete Theorem of §2, the first-order estimate
// of §1, the position-class envelopes of §5 and the result type of the
// static certificate (computed from them by certify::computeClassBound), the
// §4 decoupling used by the allocator, the run-time a-posteriori certificate
// of §5, and a separate, labelled Higham gamma_n term for rounding inside the
// attention kernel (§5 "Other assumptions").
//
// Shapes: query q has d entries; keys K and their bounds deltaK are T x d;
// values V and deltaV are T x d_v. All arithmetic is in double; the results
// are accurate to about 1e-15 relative, far below every bound they certify.
//
//===----------------------------------------------------------------------===//

#ifndef KVPREC_ANALYSIS_BOUND_H
#define KVPREC_ANALYSIS_BOUND_H

#include "kvprec/Analysis/Matrix.h"
#include "kvprec/Format/Status.h"

#include <vector>

namespace kvprec {
namespace analysis {

/// Logits s_t = q.K_t/sqrt(d), weights a = softmax(s) (max-shifted), and
/// output o = sum_t a_t V_t.
struct AttentionResult {
  std::vector<double> logits;
  std::vector<double> weights;
  std::vector<double> output;
};

AttentionResult computeAttention(const std::vector<double> &query,
                                 const Matrix &keys, const Matrix &values);

/// Whether the inputs of a bound fit together: at least one position, a
/// query of the keys' width, as many values as keys, and finite
/// non-negative error bounds of the shapes of the keys and the values.
Status checkAttentionShapes(const std::vector<double> &query,
                            const Matrix &keys, const Matrix &values,
                            const Matrix &keyErrorBounds,
                            const Matrix &valueErrorBounds);

/// E_t = (1/sqrt(d)) sum_j Q_j deltaK_{t,j} (§0), with Q = |q| for a concrete
/// query or a per-channel envelope (C2).
std::vector<double>
computeLogitErrorBounds(const std::vector<double> &queryMagnitude,
                        const Matrix &keyErrorBounds);

/// R_{t,j} = |V_{t,j} - o_j| (§0).
Matrix computeResiduals(const Matrix &values,
                        const std::vector<double> &output);

/// phi(x) = e^x - 1, accurate for small x.
double phi(double x);

/// Lemma 2(c): ||softmax(s + e) - softmax(s)||_1 <= 2 tanh(E/2) <= E for
/// every s and every |e_t| <= E (sharp).
double computeSoftmaxPerturbationL1Bound(double maxLogitError);

/// The concrete certified bound for known q, K, V and error boxes.
struct CertifiedBound {
  std::vector<double> logitErrorBounds; // E_t.
  double meanLogitError = 0.0;          // Ebar = sum_t a_t E_t.
  /// Per output component j: min(e^Ebar sum_t a_t e^{E_t} deltaV_{t,j},
  /// max_t deltaV_{t,j}) (the Theorem's first term with its alternative).
  std::vector<double> valueTerm;
  /// Per j: e^Ebar sum_t a_t (e^{E_t} - 1) R_{t,j}.
  std::vector<double> keyTerm;
  /// Theorem of §2: |o^_j - o_j| <= valueTerm_j + keyTerm_j.
  std::vector<double> perComponent;
  double infNorm = 0.0;
  /// §1 first-order estimate sum_t a_t (E_t R_{t,j} + deltaV_{t,j}). It is
  /// the attained worst case at first order, NOT a bound: it is exceeded when
  /// E is not small.
  std::vector<double> firstOrderPerComponent;
  double firstOrderInfNorm = 0.0;
};

/// Evaluates the Theorem of §2 for |DeltaK| <= deltaK, |DeltaV| <= deltaV.
Status computeCertifiedBound(const std::vector<double> &query,
                             const Matrix &keys, const Matrix &values,
                             const Matrix &keyErrorBounds,
                             const Matrix &valueErrorBounds,
                             CertifiedBound &result);

/// Static certificate (§5): what is known about one class of positions B_i
/// (sink tokens, a body block, the recent window) for every deployment query.
struct PositionClassEnvelope {
  /// (C1) A_i >= sum_{t in B_i} a_t for every deployment query.
  double attentionMass = 1.0;
  /// max_{t in B_i} E_t, from the (C2) query envelope and deltaK.
  double maxLogitError = 0.0;
  /// Per output component j: max_{t in B_i} deltaV_{t,j}.
  std::vector<double> maxValueError;
  /// The caller's name for the class (kvprec/Certify's segment), -1 if none.
  int segment = -1;
};

/// The static certificate of §5 over position classes, as computed by
/// certify::computeClassBound (kvprec/Certify/PlanCertifier.h).
struct StaticCertifiedBound {
  /// Bound on Ebar: the largest sum_i a_i E_i over class masses a_i <= A_i
  /// that sum to one.
  double meanLogitErrorBound = 0.0;
  std::vector<double> valueTerm;
  std::vector<double> keyTerm;
  std::vector<double> perComponent;
  double infNorm = 0.0;
};

/// span_j(V) = max_t V_{t,j} - min_t V_{t,j}; o lies in the convex hull of
/// the values, so R_{t,j} <= span_j(V) (§5).
std::vector<double> computeValueSpan(const Matrix &values);

/// §4 item errors (one allocator item per block and per K or V):
/// value item A e^{E_cap} deltaV, key item A phi(E) R.
double computeValueItemError(double attentionMass, double maxValueError,
                             double logitErrorCap);
double computeKeyItemError(double attentionMass, double logitError,
                           double maxResidual);
/// eps' = eps e^{-E_cap}: the items' total error budget (§4).
double computeDecoupledTolerance(double tolerance, double logitErrorCap);

/// Run-time a-posteriori certificate (§5) for the actual query, from the
/// dequantized cache: a_t <= a^_t e^{E_t + sum_s a^_s E_s} (capped at 1) and
/// R_{t,j} <= max(V^_{t,j} + deltaV_{t,j} - min_s (V^_{s,j} - deltaV_{s,j}),
/// max_s (V^_{s,j} + deltaV_{s,j}) - V^_{t,j} + deltaV_{t,j}), a per-position
/// refinement of span_j(V^) + 2 max_s deltaV_{s,j}.
struct RuntimeCertificate {
  std::vector<double> logitErrorBounds;     // E_t.
  std::vector<double> attentionUpperBounds; // Bounds on the exact a_t.
  double meanLogitErrorBound = 0.0;         // Bound on Ebar.
  std::vector<double> valueTerm;
  std::vector<double> keyTerm;
  std::vector<double> perComponent;
  double infNorm = 0.0;
};

/// The Hoeffding levels of the probabilistic certificate (error-bounds.md
/// §9): with probability at least 1 - p1 every position's storage logit
/// error is at most `logit` sigma_t, and with 1 - p3 (1 - p2) every output
/// channel's linear key part (value part) at most `key` (`value`) times its
/// deviation.
struct ConcentrationLevels {
  double logit = 0.0, value = 0.0, key = 0.0;
};

/// With `levels`, the probabilistic run-time certificate of §9 instead:
/// under the rounding model (M) it holds with probability at least
/// 1 - p1 - p2 - p3. Each of its value and key parts is the smaller of the
/// Hoeffding form and the deterministic form at E~_t = min(E_t, lambda_1
/// sigma_t), and each component also at most the deterministic bound.
Status computeRuntimeCertificate(const std::vector<double> &query,
                                 const Matrix &dequantizedKeys,
                                 const Matrix &dequantizedValues,
                                 const Matrix &keyErrorBounds,
                                 const Matrix &valueErrorBounds,
                                 RuntimeCertificate &result,
                                 const ConcentrationLevels *levels = nullptr);

/// Rounding inside the attention kernel (excluded from the Theorem; §5
/// "Other assumptions"), modelled after Higham with gamma_n = nu/(1-nu):
///  * logits: s~_t = fl(fl(q.K^_t) fl(1/sqrt d)), error gamma_{d+2} S_t with
///    S_t = sum_j |q_j K^_{t,j}| / sqrt d;
///  * max shift fl(s~_t - m): error u |s~_t - m|;
///  * exp with relative error expRelativeError;
///  * normalisation Z = sum_t p_t (gamma_{T-1+R}) and the division (u);
///  * accumulation sum_t w_t V^_t (gamma_{T+1+R}, which also covers dividing
///    by Z after accumulating).
/// R = numRescales models online softmax, which rescales its running
/// numerator and denominator by computed factors exp(fl(m_old - m_new)) up to
/// R times: each factor adds one exp error to every earlier weight and one
/// rounding to the running sums; the rounded shift arguments telescope to at
/// most u (m - s~_t), as in the two-pass kernel (R = 0).
/// The effective logit error is E^k_t = gamma_{d+2} S_t + u (max_s s^_s -
/// s^_t + 2 max_s gamma_{d+2} S_s) + (1 + R) theta / (1 - theta), theta =
/// expRelativeError.
struct KernelRoundingModel {
  double unitRoundoff = 0x1p-24; // f32 kernel.
  double expRelativeError = 4 * 0x1p-24;
  unsigned numRescales = 0;
};

/// The kernel-rounding term, to ADD to the Theorem (quantization) bound:
/// |o~_j - o^_j| <= perComponent_j, where o^ is exact attention on the
/// dequantized cache and o~ what the kernel computes from it.
struct KernelRoundingBound {
  std::vector<double> logitErrorBounds; // Effective logit errors E^k_t.
  std::vector<double> perComponent;
  double infNorm = 0.0;
};

Status computeKernelRoundingBound(const std::vector<double> &query,
                                  const Matrix &dequantizedKeys,
                                  const Matrix &dequantizedValues,
                                  const KernelRoundingModel &model,
                                  KernelRoundingBound &result);

/// gamma_n = n u / (1 - n u) (Higham); +inf when n u >= 1.
double computeGamma(double n, double unitRoundoff);

} // namespace analysis
} // namespace kvprec

#endif // KVPREC_ANALYSIS_BOUND_H
