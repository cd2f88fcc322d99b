//===- TestUtil.h - Shared helpers for the analysis unit tests -*- C++ -*-===//

#ifndef KVPREC_UNITTESTS_ANALYSIS_TESTUTIL_H
#define KVPREC_UNITTESTS_ANALYSIS_TESTUTIL_H

#include "kvprec/Analysis/Matrix.h"

#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

namespace kvprec {
namespace analysis {
namespace test {

using Rng = std::mt19937_64;

inline double uniform(Rng &rng, double lo, double hi) {
  return std::uniform_real_distribution<double>(lo, hi)(rng);
}
inline double normal(Rng &rng, double mean = 0.0, double stddev = 1.0) {
  return std::normal_distribution<double>(mean, stddev)(rng);
}
inline size_t uniformIndex(Rng &rng, size_t lo, size_t hi) {
  return std::uniform_int_distribution<size_t>(lo, hi)(rng);
}
inline double toF32(double x) { return double(static_cast<float>(x)); }

/// Normal entries (f32 values) with per-channel scales and a few outliers,
/// like real K/V caches: channel j has scale channelScale[j] and each entry is
/// an outlier (times outlierFactor) with probability outlierProbability.
inline Matrix randomCache(Rng &rng, size_t rows, size_t cols, double stddev,
                          double outlierProbability = 0.0,
                          double outlierFactor = 1.0, double mean = 0.0) {
  std::vector<double> channelScale(cols);
  for (double &s : channelScale)
    s = stddev * std::exp(normal(rng, 0.0, 0.5));
  Matrix m(rows, cols);
  for (size_t t = 0; t < rows; ++t)
    for (size_t j = 0; j < cols; ++j) {
      double x = mean + normal(rng, 0.0, channelScale[j]);
      if (uniform(rng, 0.0, 1.0) < outlierProbability)
        x *= outlierFactor;
      m(t, j) = toF32(x);
    }
  return m;
}

inline std::vector<double> randomQuery(Rng &rng, size_t dim, double stddev) {
  std::vector<double> q(dim);
  for (double &x : q)
    x = toF32(normal(rng, 0.0, stddev));
  return q;
}

/// Tracks measured / bound ratios (largest and mean) and counts violations.
struct TightnessTracker {
  size_t cases = 0;
  size_t violations = 0;
  double maxRatio = 0.0;
  double sumRatio = 0.0;
  size_t numRatios = 0;
  void record(double measured, double bound, double slack = 0.0) {
    ++cases;
    if (measured > bound + slack)
      ++violations;
    if (bound > 0) {
      maxRatio = std::max(maxRatio, measured / bound);
      sumRatio += measured / bound;
      ++numRatios;
    }
  }
  void print(const char *label) const {
    std::printf("[tightness] %-52s cases=%zu violations=%zu measured/bound: "
                "max=%.4f mean=%.4f\n",
                label, cases, violations, maxRatio,
                numRatios ? sumRatio / double(numRatios) : 0.0);
  }
};

} // namespace test
} // namespace analysis
} // namespace kvprec

#endif // KVPREC_UNITTESTS_ANALYSIS_TESTUTIL_H
