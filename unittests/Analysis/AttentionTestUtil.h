//===- AttentionTestUtil.h - Attention trials shared by tests --*- C++ -*-===//
//
// Helpers for trials that compare measured attention errors with certified
// bounds: the reference slack, the measured error, the first-order worst-case
// corner of the error boxes, random shapes and block statistics. Used by the
// analysis tests and by unittests/Certify/ClassBoundTest.cpp.
//
//===----------------------------------------------------------------------===//

#ifndef KVPREC_UNITTESTS_ANALYSIS_ATTENTIONTESTUTIL_H
#define KVPREC_UNITTESTS_ANALYSIS_ATTENTIONTESTUTIL_H

#include "kvprec/Analysis/Bound.h"
#include "kvprec/Analysis/ErrorModel.h"

#include "TestUtil.h"

#include <algorithm>
#include <cmath>
#include <vector>

namespace kvprec {
namespace analysis {
namespace test {

/// Allowance for the double reference computation: 1e-13 (1 + max |V|).
inline double referenceSlack(const Matrix &values) {
  double maxAbs = 0.0;
  for (double v : values.values)
    maxAbs = std::max(maxAbs, std::fabs(v));
  return 1e-13 * (1 + maxAbs);
}

/// |o(perturbed) - o(exact)| per output component.
inline std::vector<double> outputError(const std::vector<double> &query,
                                       const Matrix &keys, const Matrix &values,
                                       const Matrix &perturbedKeys,
                                       const Matrix &perturbedValues) {
  AttentionResult exact = computeAttention(query, keys, values);
  AttentionResult perturbed =
      computeAttention(query, perturbedKeys, perturbedValues);
  std::vector<double> error(values.cols);
  for (size_t j = 0; j < values.cols; ++j)
    error[j] = std::fabs(perturbed.output[j] - exact.output[j]);
  return error;
}

inline size_t randomHeadDim(Rng &rng) {
  const size_t dims[] = {8, 16, 32, 64, 128};
  return dims[uniformIndex(rng, 0, 4)];
}

inline size_t randomLength(Rng &rng, double lo, double hi) {
  return size_t(std::exp(uniform(rng, std::log(lo), std::log(hi))));
}

/// Builds the first-order worst case of §1 for output component j: every
/// key error at its box corner with sign(q_i) sign(V_{t,j} - o_j), every
/// value error at +delta.
inline void makeAdversarialCorner(const std::vector<double> &q, const Matrix &K,
                                  const Matrix &V, const Matrix &deltaK,
                                  const Matrix &deltaV, size_t j, Matrix &Khat,
                                  Matrix &Vhat) {
  AttentionResult attention = computeAttention(q, K, V);
  Khat = K;
  Vhat = V;
  for (size_t t = 0; t < K.rows; ++t) {
    double direction = V(t, j) >= attention.output[j] ? 1.0 : -1.0;
    for (size_t i = 0; i < K.cols; ++i)
      Khat(t, i) += deltaK(t, i) * (q[i] >= 0 ? 1.0 : -1.0) * direction;
    for (size_t k = 0; k < V.cols; ++k)
      Vhat(t, k) += deltaV(t, k);
  }
}

/// Block statistics of rows [begin, end) of a cache.
inline BlockStatistics blockStatistics(const Matrix &m, size_t begin,
                                       size_t end) {
  BlockStatistics stats;
  stats.numTokens = unsigned(end - begin);
  stats.channelRanges.resize(m.cols);
  for (size_t j = 0; j < m.cols; ++j) {
    ValueRange range{m(begin, j), m(begin, j)};
    for (size_t t = begin; t < end; ++t) {
      range.min = std::min(range.min, m(t, j));
      range.max = std::max(range.max, m(t, j));
    }
    stats.channelRanges[j] = range;
  }
  return stats;
}

} // namespace test
} // namespace analysis
} // namespace kvprec

#endif // KVPREC_UNITTESTS_ANALYSIS_ATTENTIONTESTUTIL_H
