//===- SensitivityTest.cpp - Finite-difference checks of derivatives ------===//

#include "kvprec/Analysis/Sensitivity.h"

#include "TestUtil.h"

#include "gtest/gtest.h"

#include <algorithm>
#include <cmath>

using namespace kvprec::analysis;
using namespace kvprec::analysis::test;

namespace {

struct Instance {
  std::vector<double> q;
  Matrix K, V;
};

Instance randomInstance(Rng &rng) {
  size_t d = uniformIndex(rng, 2, 12), T = uniformIndex(rng, 1, 16);
  size_t dv = uniformIndex(rng, 1, 6);
  Instance instance;
  instance.q = randomQuery(rng, d, uniform(rng, 0.3, 2.0));
  instance.K = randomCache(rng, T, d, 1.0);
  instance.V = randomCache(rng, T, dv, 1.0);
  return instance;
}

/// o as a function of the logits alone.
std::vector<double> outputFromLogits(const std::vector<double> &logits,
                                     const Matrix &values) {
  double m = *std::max_element(logits.begin(), logits.end()), sum = 0.0;
  std::vector<double> w(logits.size());
  for (size_t t = 0; t < logits.size(); ++t)
    sum += w[t] = std::exp(logits[t] - m);
  std::vector<double> o(values.cols, 0.0);
  for (size_t t = 0; t < logits.size(); ++t)
    for (size_t j = 0; j < values.cols; ++j)
      o[j] += w[t] / sum * values(t, j);
  return o;
}

double maxAbsDiff(const std::vector<double> &x, const std::vector<double> &y) {
  double result = 0.0;
  for (size_t i = 0; i < x.size(); ++i)
    result = std::max(result, std::fabs(x[i] - y[i]));
  return result;
}

double maxAbs(const std::vector<double> &x) {
  double result = 0.0;
  for (double v : x)
    result = std::max(result, std::fabs(v));
  return result;
}

/// Relative error of an analytic derivative against a finite difference,
/// with a floor so that derivatives that vanish are compared absolutely.
double relativeError(const std::vector<double> &analytic,
                     const std::vector<double> &finiteDifference) {
  return maxAbsDiff(analytic, finiteDifference) /
         std::max(maxAbs(analytic), 1e-3);
}

std::vector<double> axpy(double h, const std::vector<double> &x,
                         const std::vector<double> &y) {
  std::vector<double> r(y);
  for (size_t i = 0; i < r.size(); ++i)
    r[i] += h * x[i];
  return r;
}

std::vector<double> centralDifference(const std::vector<double> &plus,
                                      const std::vector<double> &minus,
                                      double h) {
  std::vector<double> r(plus.size());
  for (size_t i = 0; i < r.size(); ++i)
    r[i] = (plus[i] - minus[i]) / (2 * h);
  return r;
}

const int kNumInstances = 40;

TEST(SensitivityTest, LogitJacobianMatchesFiniteDifferences) {
  Rng rng(1);
  double worst = 0.0;
  for (int c = 0; c < kNumInstances; ++c) {
    Instance in = randomInstance(rng);
    AttentionResult attention = computeAttention(in.q, in.K, in.V);
    Matrix jacobian = computeLogitJacobian(attention, in.V);
    const double h = 1e-5;
    for (size_t t = 0; t < in.K.rows; ++t) {
      std::vector<double> plus = attention.logits, minus = attention.logits;
      plus[t] += h;
      minus[t] -= h;
      std::vector<double> fd = centralDifference(
          outputFromLogits(plus, in.V), outputFromLogits(minus, in.V), h);
      std::vector<double> analytic(jacobian.row(t),
                                   jacobian.row(t) + jacobian.cols);
      worst = std::max(worst, relativeError(analytic, fd));
    }
  }
  std::printf("[fd] do/ds_t max relative error %.2e\n", worst);
  EXPECT_LT(worst, 1e-6);
}

TEST(SensitivityTest, KeyAndValueJacobiansMatchFiniteDifferences) {
  Rng rng(2);
  double worstKey = 0.0, worstValue = 0.0;
  for (int c = 0; c < kNumInstances; ++c) {
    Instance in = randomInstance(rng);
    AttentionResult attention = computeAttention(in.q, in.K, in.V);
    const double h = 1e-5;
    for (size_t t = 0; t < in.K.rows; ++t) {
      Matrix keyJacobian = computeKeyJacobian(in.q, attention, in.V, t);
      for (size_t i = 0; i < in.K.cols; ++i) {
        Matrix plus = in.K, minus = in.K;
        plus(t, i) += h;
        minus(t, i) -= h;
        std::vector<double> fd =
            centralDifference(computeAttention(in.q, plus, in.V).output,
                              computeAttention(in.q, minus, in.V).output, h);
        std::vector<double> analytic(in.V.cols);
        for (size_t j = 0; j < in.V.cols; ++j)
          analytic[j] = keyJacobian(j, i);
        worstKey = std::max(worstKey, relativeError(analytic, fd));
      }
      double scale = computeValueJacobianScale(attention, t);
      for (size_t k = 0; k < in.V.cols; ++k) {
        Matrix plus = in.V, minus = in.V;
        plus(t, k) += h;
        minus(t, k) -= h;
        std::vector<double> fd =
            centralDifference(computeAttention(in.q, in.K, plus).output,
                              computeAttention(in.q, in.K, minus).output, h);
        std::vector<double> analytic(in.V.cols, 0.0);
        analytic[k] = scale;
        worstValue = std::max(worstValue, relativeError(analytic, fd));
      }
    }
  }
  std::printf("[fd] do/dK_t max relative error %.2e, do/dV_t %.2e\n", worstKey,
              worstValue);
  EXPECT_LT(worstKey, 1e-6);
  EXPECT_LT(worstValue, 1e-6);
}

TEST(SensitivityTest, DirectionalDerivativeMatchesFiniteDifferences) {
  Rng rng(3);
  double worst = 0.0;
  for (int c = 0; c < kNumInstances; ++c) {
    Instance in = randomInstance(rng);
    AttentionResult attention = computeAttention(in.q, in.K, in.V);
    Matrix dK = randomCache(rng, in.K.rows, in.K.cols, 1.0);
    Matrix dV = randomCache(rng, in.V.rows, in.V.cols, 1.0);
    std::vector<double> analytic =
        computeOutputDirectionalDerivative(in.q, attention, in.V, dK, dV);
    const double h = 1e-5;
    Matrix Kp = in.K, Km = in.K, Vp = in.V, Vm = in.V;
    for (size_t i = 0; i < dK.values.size(); ++i) {
      Kp.values[i] += h * dK.values[i];
      Km.values[i] -= h * dK.values[i];
    }
    for (size_t i = 0; i < dV.values.size(); ++i) {
      Vp.values[i] += h * dV.values[i];
      Vm.values[i] -= h * dV.values[i];
    }
    std::vector<double> fd =
        centralDifference(computeAttention(in.q, Kp, Vp).output,
                          computeAttention(in.q, Km, Vm).output, h);
    worst = std::max(worst, relativeError(analytic, fd));
  }
  std::printf("[fd] Do[dK, dV] max relative error %.2e\n", worst);
  EXPECT_LT(worst, 1e-6);
}

/// Richardson-extrapolated second difference: `secondDifference(h)` returns
/// an O(h^2)-accurate estimate; combining h and h/2 cancels the h^2 term.
template <typename F>
std::vector<double> extrapolate(F secondDifference, double h) {
  std::vector<double> coarse = secondDifference(h);
  std::vector<double> fine = secondDifference(h / 2);
  std::vector<double> result(coarse.size());
  for (size_t i = 0; i < result.size(); ++i)
    result[i] = (4 * fine[i] - coarse[i]) / 3;
  return result;
}

/// Relative error for second derivatives, normalised by the instance's value
/// scale so entries that nearly vanish are compared absolutely.
double secondOrderError(const std::vector<double> &analytic,
                        const std::vector<double> &estimate,
                        const Matrix &values) {
  double scale = 0.0;
  for (double v : values.values)
    scale = std::max(scale, std::fabs(v));
  return maxAbsDiff(analytic, estimate) /
         std::max(maxAbs(analytic), std::max(scale, 1e-3));
}

TEST(SensitivityTest, SecondDerivativesMatchFiniteDifferences) {
  Rng rng(4);
  double worstDirectional = 0.0, worstEntry = 0.0, worstKeyBlock = 0.0,
         worstKeyDirectional = 0.0;
  const double h = 2e-3;
  for (int c = 0; c < kNumInstances; ++c) {
    Instance in = randomInstance(rng);
    AttentionResult attention = computeAttention(in.q, in.K, in.V);
    const std::vector<double> &s = attention.logits;
    const std::vector<double> &o = attention.output;
    const size_t T = s.size();

    // D^2_s o[e, e] against the second difference along e.
    std::vector<double> e(T);
    for (double &x : e)
      x = normal(rng);
    auto alongE = [&](double step) {
      std::vector<double> op = outputFromLogits(axpy(step, e, s), in.V);
      std::vector<double> om = outputFromLogits(axpy(-step, e, s), in.V);
      std::vector<double> fd(o.size());
      for (size_t j = 0; j < o.size(); ++j)
        fd[j] = (op[j] - 2 * o[j] + om[j]) / (step * step);
      return fd;
    };
    worstDirectional = std::max(
        worstDirectional,
        secondOrderError(computeLogitSecondDerivative(attention, in.V, e),
                         extrapolate(alongE, h), in.V));

    // d^2 o / ds_t ds_u against mixed differences.
    for (size_t t = 0; t < T; ++t)
      for (size_t u = 0; u < T; ++u) {
        auto mixed = [&](double step) {
          auto at = [&](double ht, double hu) {
            std::vector<double> x = s;
            x[t] += ht;
            x[u] += hu;
            return outputFromLogits(x, in.V);
          };
          std::vector<double> pp = at(step, step), pm = at(step, -step),
                              mp = at(-step, step), mm = at(-step, -step);
          std::vector<double> fd(o.size());
          for (size_t j = 0; j < o.size(); ++j)
            fd[j] = (pp[j] - pm[j] - mp[j] + mm[j]) / (4 * step * step);
          return fd;
        };
        worstEntry = std::max(
            worstEntry,
            secondOrderError(computeLogitHessianEntry(attention, in.V, t, u),
                             extrapolate(mixed, h), in.V));
      }

    // The diagonal key block d^2 o / dK_t^2 against mixed differences in K.
    size_t t = uniformIndex(rng, 0, T - 1);
    std::vector<Matrix> block =
        computeKeyHessianDiagonalBlock(in.q, attention, in.V, t);
    for (size_t i1 = 0; i1 < in.K.cols; ++i1)
      for (size_t i2 = 0; i2 < in.K.cols; ++i2) {
        auto mixed = [&](double step) {
          auto at = [&](double h1, double h2) {
            Matrix K = in.K;
            K(t, i1) += h1;
            K(t, i2) += h2;
            return computeAttention(in.q, K, in.V).output;
          };
          std::vector<double> pp = at(step, step), pm = at(step, -step),
                              mp = at(-step, step), mm = at(-step, -step);
          std::vector<double> fd(o.size());
          for (size_t j = 0; j < o.size(); ++j)
            fd[j] = (pp[j] - pm[j] - mp[j] + mm[j]) / (4 * step * step);
          return fd;
        };
        std::vector<double> analytic(o.size());
        for (size_t j = 0; j < o.size(); ++j)
          analytic[j] = block[j](i1, i2);
        worstKeyBlock =
            std::max(worstKeyBlock,
                     secondOrderError(analytic, extrapolate(mixed, h), in.V));
      }

    // D^2_K o[dK, dK] = D^2_s o[e, e] with e_t = q.dK_t / sqrt(d).
    Matrix dK = randomCache(rng, in.K.rows, in.K.cols, 1.0);
    std::vector<double> eK(T, 0.0);
    for (size_t r = 0; r < T; ++r) {
      for (size_t i = 0; i < in.K.cols; ++i)
        eK[r] += in.q[i] * dK(r, i);
      eK[r] /= std::sqrt(double(in.K.cols));
    }
    auto alongK = [&](double step) {
      Matrix Kp = in.K, Km = in.K;
      for (size_t i = 0; i < dK.values.size(); ++i) {
        Kp.values[i] += step * dK.values[i];
        Km.values[i] -= step * dK.values[i];
      }
      std::vector<double> kp = computeAttention(in.q, Kp, in.V).output;
      std::vector<double> km = computeAttention(in.q, Km, in.V).output;
      std::vector<double> fd(o.size());
      for (size_t j = 0; j < o.size(); ++j)
        fd[j] = (kp[j] - 2 * o[j] + km[j]) / (step * step);
      return fd;
    };
    worstKeyDirectional = std::max(
        worstKeyDirectional,
        secondOrderError(computeLogitSecondDerivative(attention, in.V, eK),
                         extrapolate(alongK, h), in.V));
  }
  std::printf("[fd] D2_s o[e,e] %.2e, d2o/ds_t ds_u %.2e, d2o/dK_t^2 %.2e, "
              "D2_K o[dK,dK] %.2e (max relative errors)\n",
              worstDirectional, worstEntry, worstKeyBlock, worstKeyDirectional);
  EXPECT_LT(worstDirectional, 1e-6);
  EXPECT_LT(worstEntry, 1e-6);
  EXPECT_LT(worstKeyBlock, 1e-6);
  EXPECT_LT(worstKeyDirectional, 1e-6);
}

TEST(SensitivityTest, TaylorRemainderIsThirdOrder) {
  // o(K + h dK) - o - h Do[dK] - h^2/2 D2o[dK, dK] = O(h^3): halving h divides
  // the remainder by about 8.
  Rng rng(5);
  for (int c = 0; c < 20; ++c) {
    Instance in = randomInstance(rng);
    AttentionResult attention = computeAttention(in.q, in.K, in.V);
    Matrix dK = randomCache(rng, in.K.rows, in.K.cols, 1.0);
    Matrix zeroV(in.V.rows, in.V.cols);
    std::vector<double> first =
        computeOutputDirectionalDerivative(in.q, attention, in.V, dK, zeroV);
    std::vector<double> e(in.K.rows, 0.0);
    for (size_t t = 0; t < in.K.rows; ++t) {
      for (size_t i = 0; i < in.K.cols; ++i)
        e[t] += in.q[i] * dK(t, i);
      e[t] /= std::sqrt(double(in.K.cols));
    }
    std::vector<double> second =
        computeLogitSecondDerivative(attention, in.V, e);
    auto remainder = [&](double h) {
      Matrix K = in.K;
      for (size_t i = 0; i < dK.values.size(); ++i)
        K.values[i] += h * dK.values[i];
      std::vector<double> o = computeAttention(in.q, K, in.V).output;
      double r = 0.0;
      for (size_t j = 0; j < o.size(); ++j)
        r = std::max(r, std::fabs(o[j] - attention.output[j] - h * first[j] -
                                  h * h / 2 * second[j]));
      return r;
    };
    double r1 = remainder(1e-2), r2 = remainder(5e-3);
    if (r1 < 1e-12)
      continue; // A degenerate instance (T = 1 or constant values).
    EXPECT_NEAR(r1 / r2, 8.0, 1.0);
  }
}

TEST(SensitivityTest, CurvatureBounds) {
  Rng rng(6);
  for (int c = 0; c < 200; ++c) {
    Instance in = randomInstance(rng);
    AttentionResult attention = computeAttention(in.q, in.K, in.V);
    double maxResidual = computeMaxResidual(in.V, attention.output);
    double kappa = computeKeyCurvatureBound(in.q, maxResidual);
    Matrix dK = randomCache(rng, in.K.rows, in.K.cols, 1.0);
    double dKNorm = 0.0;
    for (double x : dK.values)
      dKNorm = std::max(dKNorm, std::fabs(x));
    std::vector<double> e(in.K.rows, 0.0);
    double E = 0.0;
    for (size_t t = 0; t < in.K.rows; ++t) {
      for (size_t i = 0; i < in.K.cols; ++i)
        e[t] += in.q[i] * dK(t, i);
      e[t] /= std::sqrt(double(in.K.cols));
      E = std::max(E, std::fabs(e[t]));
    }
    double halfSecond =
        0.5 * maxAbs(computeLogitSecondDerivative(attention, in.V, e));
    double varianceBound =
        computeSecondOrderTermBound(attention, e, maxResidual);
    EXPECT_LE(halfSecond, varianceBound * (1 + 1e-12) + 1e-300);
    EXPECT_LE(varianceBound, 0.5 * E * E * maxResidual * (1 + 1e-12));
    EXPECT_LE(halfSecond, kappa * dKNorm * dKNorm * (1 + 1e-12));
  }
}

TEST(SensitivityTest, HnfNecessaryBitsAreWeakerThanFirstOrder) {
  EXPECT_NE(std::string(kHnfNecessaryBitsLabel).find("necessary"),
            std::string::npos);
  EXPECT_NE(std::string(kHnfNecessaryBitsLabel).find("not sufficient"),
            std::string::npos);
  EXPECT_DOUBLE_EQ(computeHnfNecessaryBits(1.0, 2.0, 4.0, 0.5), 3.0);
  // For int-b keys, delta ~ range 2^-b / 2 and the first-order worst case
  // is about ||q||_1 delta max R / sqrt(d); the HNF bit count is smaller for
  // every meaningful tolerance.
  Rng rng(7);
  for (int c = 0; c < 100; ++c) {
    Instance in = randomInstance(rng);
    AttentionResult attention = computeAttention(in.q, in.K, in.V);
    double maxResidual = computeMaxResidual(in.V, attention.output);
    if (maxResidual == 0.0)
      continue; // One position: no key sensitivity at all.
    double l1 = 0.0;
    for (double x : in.q)
      l1 += std::fabs(x);
    double range = uniform(rng, 1.0, 10.0);
    double tolerance = maxResidual * std::pow(10.0, uniform(rng, -6, -1));
    double sqrtD = std::sqrt(double(in.q.size()));
    double firstOrderBits =
        std::log2(l1 * range * maxResidual / (2 * sqrtD * tolerance));
    double hnfBits = computeHnfNecessaryBits(
        1.0, computeKeyCurvatureBound(in.q, maxResidual), range, tolerance);
    EXPECT_LT(hnfBits, firstOrderBits);
  }
}

TEST(SensitivityTest, BlockSensitivities) {
  EXPECT_DOUBLE_EQ(computeValueBlockSensitivity({0.5, 0.25}, {2.0, 4.0}), 1.0);
  // g = sum A_t range_t R_t * ||q||_1 / (2 sqrt d).
  EXPECT_DOUBLE_EQ(
      computeKeyBlockSensitivity({0.5, 0.5}, {1.0, 2.0}, {2.0, 1.0}, 8.0, 16),
      (0.5 * 1 * 2 + 0.5 * 2 * 1) * 8.0 / 8.0);
}

TEST(SensitivityTest, WaterFillingEqualisesErrorPerElement) {
  Rng rng(8);
  for (int c = 0; c < 50; ++c) {
    size_t n = uniformIndex(rng, 1, 30);
    std::vector<double> g(n), sizes(n);
    for (size_t i = 0; i < n; ++i) {
      g[i] = std::pow(10.0, uniform(rng, -4, 2));
      sizes[i] = double(uniformIndex(rng, 64, 8192));
    }
    double tolerance = std::pow(10.0, uniform(rng, -5, -2));
    WaterFillingPlan plan;
    ASSERT_TRUE(computeWaterFillingBits(g, sizes, tolerance, plan).ok());
    double totalSize = 0.0, totalError = 0.0, totalBits = 0.0;
    for (size_t i = 0; i < n; ++i) {
      totalSize += sizes[i];
      totalError += plan.errors[i];
      totalBits += sizes[i] * plan.bits[i];
    }
    EXPECT_NEAR(totalError, tolerance, 1e-12 * tolerance);
    for (size_t i = 0; i < n; ++i)
      EXPECT_NEAR(plan.errors[i], sizes[i] * tolerance / totalSize,
                  1e-12 * tolerance);
    // Optimality: moving bits between blocks at equal total cost never lowers
    // the total error (the objective is convex and stationary here).
    for (int r = 0; r < 20 && n > 1; ++r) {
      size_t i = uniformIndex(rng, 0, n - 1), k = uniformIndex(rng, 0, n - 1);
      if (i == k)
        continue;
      double shift = uniform(rng, -0.5, 0.5);
      std::vector<double> bits = plan.bits;
      bits[i] += shift / sizes[i];
      bits[k] -= shift / sizes[k];
      double perturbed = 0.0;
      for (size_t m = 0; m < n; ++m)
        perturbed += g[m] * std::exp2(-bits[m]);
      EXPECT_GE(perturbed, totalError * (1 - 1e-12));
    }
  }
  WaterFillingPlan plan;
  EXPECT_TRUE(computeWaterFillingBits({1.0}, {1.0, 2.0}, 1e-3, plan).failed());
  EXPECT_TRUE(computeWaterFillingBits({0.0}, {1.0}, 1e-3, plan).failed());
  EXPECT_TRUE(computeWaterFillingBits({1.0}, {1.0}, 0.0, plan).failed());
}

} // namespace
