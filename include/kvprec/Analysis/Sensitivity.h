//===- Sensitivity.h - Derivatives and sensitivities of attention -*- C++ -*-=//
//
// First- and second-order derivatives of decode attention o(q, K, V) with
// respect to the logits and the cache (error-bounds.md §1 and §3), the HNF
// curvature bound, the HNF necessary bit count (a NECESSARY condition only,
// never sufficient), and the per-block sensitivities and water-filling bit
// widths of §4.
//
//===----------------------------------------------------------------------===//

#ifndef KVPREC_ANALYSIS_SENSITIVITY_H
#define KVPREC_ANALYSIS_SENSITIVITY_H

#include "kvprec/Analysis/Bound.h"
#include "kvprec/Analysis/Matrix.h"
#include "kvprec/Format/Status.h"

#include <vector>

namespace kvprec {
namespace analysis {

//===----------------------------------------------------------------------===//
// §1: first order
//===----------------------------------------------------------------------===//

/// do/ds_t = a_t (V_t - o): a T x d_v matrix, row t.
Matrix computeLogitJacobian(const AttentionResult &attention,
                            const Matrix &values);
/// do/dK_t = a_t (V_t - o) q^T / sqrt(d): a d_v x d matrix.
Matrix computeKeyJacobian(const std::vector<double> &query,
                          const AttentionResult &attention,
                          const Matrix &values, size_t position);
/// do/dV_t = a_t I: returns the scalar a_t.
double computeValueJacobianScale(const AttentionResult &attention,
                                 size_t position);
/// The linearised error Do[DeltaK, DeltaV] = sum_t a_t [e_t (V_t - o) +
/// DeltaV_t] with e_t = q.DeltaK_t / sqrt(d).
std::vector<double> computeOutputDirectionalDerivative(
    const std::vector<double> &query, const AttentionResult &attention,
    const Matrix &values, const Matrix &keyDelta, const Matrix &valueDelta);

//===----------------------------------------------------------------------===//
// §3: second order and curvature
//===----------------------------------------------------------------------===//

/// D^2_s o[e, e] = sum_t a_t (e_t - ebar)^2 (V_t - o), ebar = sum_t a_t e_t.
/// Since s is linear in K this also equals D^2_K o[DeltaK, DeltaK] for
/// e_t = q.DeltaK_t / sqrt(d).
std::vector<double>
computeLogitSecondDerivative(const AttentionResult &attention,
                             const Matrix &values,
                             const std::vector<double> &logitDelta);
/// d^2 o / ds_t ds_u = [t == u] a_t (V_t - o) - a_t a_u (V_t + V_u - 2o).
std::vector<double> computeLogitHessianEntry(const AttentionResult &attention,
                                             const Matrix &values,
                                             size_t position1,
                                             size_t position2);
/// The diagonal block d^2 o / dK_t^2 = a_t (1 - 2 a_t) (V_t - o) (x) q q^T/d:
/// for output component j, the d x d matrix c_j q q^T / d.
std::vector<Matrix>
computeKeyHessianDiagonalBlock(const std::vector<double> &query,
                               const AttentionResult &attention,
                               const Matrix &values, size_t position);

/// max_t R_t = max_{t,j} |V_{t,j} - o_j|.
double computeMaxResidual(const Matrix &values,
                          const std::vector<double> &output);
/// HNF curvature in the infinity norm on cache entries:
/// kappa_K <= (1/2) ||q||_1^2 / d * max_t R_t.
double computeKeyCurvatureBound(const std::vector<double> &query,
                                double maxResidual);
/// (1/2) ||D^2 o[e, e]||_inf <= (1/2) Var_a(e) max_t R_t: returns the right
/// side, which is itself <= (1/2) E^2 max_t R_t for |e_t| <= E.
double computeSecondOrderTermBound(const AttentionResult &attention,
                                   const std::vector<double> &logitDelta,
                                   double maxResidual);

/// NECESSARY CONDITION ONLY (HNF obstruction, §3): any format whose cells
/// have width about range * 2^-b must satisfy b >= (1/2) log2(c kappa
/// range^2 / eps) to reach tolerance eps. It is weaker than the first-order
/// condition and never certifies a plan; kvprec reports it beside the
/// certified bits, labelled.
double computeHnfNecessaryBits(double constant, double curvature, double range,
                               double tolerance);
/// The label every report of computeHnfNecessaryBits() must carry.
constexpr const char *kHnfNecessaryBitsLabel =
    "HNF necessary bits (lower bound, not sufficient)";

//===----------------------------------------------------------------------===//
// §4: per-element sensitivities and water-filling
//===----------------------------------------------------------------------===//

/// Value block: g = sum_{t in B} A_t range_{V,t} / 2.
double computeValueBlockSensitivity(const std::vector<double> &attentionMass,
                                    const std::vector<double> &valueRange);
/// Key block: g = sum_{t in B} A_t ||q||_1 range_{K,t} R_t / (2 sqrt(d)).
double computeKeyBlockSensitivity(const std::vector<double> &attentionMass,
                                  const std::vector<double> &keyRange,
                                  const std::vector<double> &residual,
                                  double queryL1Norm, size_t headDim);

/// The continuous water-filling solution of §4 for err_i = g_i 2^{-b_i},
/// cost n_i b_i, sum err <= eps': b_i* = log2(g_i / n_i * N / eps') with
/// N = sum n_i; every block then contributes err_i = n_i eps' / N.
struct WaterFillingPlan {
  std::vector<double> bits;
  std::vector<double> errors;
};
Status computeWaterFillingBits(const std::vector<double> &sensitivity,
                               const std::vector<double> &numElements,
                               double tolerance, WaterFillingPlan &result);

} // namespace analysis
} // namespace kvprec

#endif // KVPREC_ANALYSIS_SENSITIVITY_H
