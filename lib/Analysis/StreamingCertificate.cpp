//===- StreamingCertificate.cpp - the run-time certificate in one pass ----===//

#include "kvprec/Analysis/StreamingCertificate.h"

#include <algorithm>
#include <cmath>
#include <limits>

using namespace kvprec::analysis;

Status kvprec::analysis::computeStreamingCertificate(
    const std::vector<double> &query, const Matrix &dequantizedKeys,
    const Matrix &dequantizedValues, const Matrix &keyErrorBounds,
    const Matrix &valueErrorBounds, double softmaxScale,
    const KernelRoundingModel &model, StreamingCertificate &result) {
  if (Status s = checkAttentionShapes(query, dequantizedKeys, dequantizedValues,
                                      keyErrorBounds, valueErrorBounds);
      s.failed())
    return s;
  if (!(softmaxScale > 0.0) || !std::isfinite(softmaxScale))
    return Status::failure("the softmax scale must be positive and finite");
  const double u = model.unitRoundoff, theta = model.expRelativeError;
  if (!(u > 0.0 && u < 0.5) || !(theta >= 0.0 && theta < 0.5))
    return Status::failure("kernel rounding model needs 0 < u < 1/2 and "
                           "0 <= exp error < 1/2");
  const size_t T = dequantizedKeys.rows, d = dequantizedKeys.cols,
               dv = dequantizedValues.cols;
  const double inf = std::numeric_limits<double>::infinity();

  // Logits, their storage errors E_t and dot-product rounding errors.
  std::vector<double> logits(T), E(T), dotError(T);
  const double gammaDot = computeGamma(double(d) + 2, u);
  double maxLogit = -inf, maxE = 0.0, maxDot = 0.0;
  for (size_t t = 0; t < T; ++t) {
    double dot = 0.0, storage = 0.0, magnitude = 0.0;
    for (size_t j = 0; j < d; ++j) {
      dot += query[j] * dequantizedKeys(t, j);
      storage += std::fabs(query[j]) * keyErrorBounds(t, j);
      magnitude += std::fabs(query[j] * dequantizedKeys(t, j));
    }
    logits[t] = softmaxScale * dot;
    E[t] = softmaxScale * storage;
    dotError[t] = gammaDot * softmaxScale * magnitude;
    maxLogit = std::max(maxLogit, logits[t]);
    maxE = std::max(maxE, E[t]);
    maxDot = std::max(maxDot, dotError[t]);
  }
  std::vector<double> p(T);
  double Z = 0.0;
  for (size_t t = 0; t < T; ++t)
    Z += p[t] = std::exp(logits[t] - maxLogit);

  // R_j = span_j(V^) + 2 max_s deltaV_{s,j} (error-bounds.md section 5).
  std::vector<double> lo(dv, inf), hi(dv, -inf), maxDelta(dv, 0.0), span(dv);
  for (size_t t = 0; t < T; ++t)
    for (size_t j = 0; j < dv; ++j) {
      lo[j] = std::min(lo[j], dequantizedValues(t, j));
      hi[j] = std::max(hi[j], dequantizedValues(t, j));
      maxDelta[j] = std::max(maxDelta[j], valueErrorBounds(t, j));
    }
  for (size_t j = 0; j < dv; ++j)
    span[j] = hi[j] - lo[j] + 2 * maxDelta[j];

  // Storage part: M = sum a^ E, the exact weights a_t <= a^_t e^{E_t + M}.
  double meanUnderHat = 0.0, massWeighted = 0.0, keyWeighted = 0.0;
  std::vector<double> valueWeighted(dv, 0.0), valueMaxGrown(dv, 0.0),
      valueMax(dv, 0.0);
  for (size_t t = 0; t < T; ++t) {
    double a = p[t] / Z, grow = std::exp(E[t]);
    meanUnderHat += a * E[t];
    massWeighted += a * grow * E[t];
    keyWeighted += a * grow * phi(E[t]);
    for (size_t j = 0; j < dv; ++j) {
      double delta = valueErrorBounds(t, j);
      valueWeighted[j] += a * grow * grow * delta;
      valueMaxGrown[j] = std::max(valueMaxGrown[j], grow * delta);
      valueMax[j] = std::max(valueMax[j], delta);
    }
  }
  const double attentionGrowth = std::exp(meanUnderHat);
  const double meanLogit = std::min(attentionGrowth * massWeighted, maxE);
  const double globalFactor = std::exp(meanLogit);
  const double keyFactor =
      std::min(attentionGrowth * keyWeighted, phi(maxE)) * globalFactor;

  // Kernel part: E^k_t = dot error + u (max logit - logit + 4 max dot error)
  // + (1 + R) theta / (1 - theta).
  const double rescales = model.numRescales;
  const double shared = 4 * u * maxDot + (1 + rescales) * theta / (1 - theta);
  double meanKernel = 0.0, kernelWeighted = 0.0, maxKernel = 0.0;
  std::vector<double> Ek(T);
  for (size_t t = 0; t < T; ++t) {
    Ek[t] = dotError[t] + u * (maxLogit - logits[t]) + shared;
    double a = p[t] / Z;
    meanKernel += a * Ek[t];
    kernelWeighted += a * phi(Ek[t]);
    maxKernel = std::max(maxKernel, Ek[t]);
  }
  const double kernelGrowth = std::exp(meanKernel);
  std::vector<double> magnitude(dv, 0.0);
  for (size_t t = 0; t < T; ++t) {
    double w = p[t] / Z * std::exp(Ek[t]);
    for (size_t j = 0; j < dv; ++j)
      magnitude[j] += w * std::fabs(dequantizedValues(t, j));
  }
  const double gammaSum =
      computeGamma(std::max(0.0, double(T) - 1) + rescales, u);
  const double weightError = (1 + u) / (1 - gammaSum) - 1;
  const double gammaAccumulate = computeGamma(double(T) + 1 + rescales, u);
  const double relativeFactor =
      weightError + gammaAccumulate * (1 + weightError);
  const double logitFactor =
      kernelGrowth * std::min(kernelWeighted, phi(maxKernel));

  result.storage.assign(dv, 0.0);
  result.kernel.assign(dv, 0.0);
  result.hull.clear();
  result.perComponent.assign(dv, 0.0);
  result.infNorm = 0.0;
  for (size_t j = 0; j < dv; ++j) {
    double value =
        std::min(globalFactor * std::min(attentionGrowth * valueWeighted[j],
                                         valueMaxGrown[j]),
                 valueMax[j]);
    result.storage[j] = value + keyFactor * span[j];
    result.kernel[j] =
        logitFactor * span[j] + relativeFactor * kernelGrowth * magnitude[j];
    // Whatever the logit errors: the computed output is within the
    // accumulation's rounding of a convex combination of the stored values,
    // and the exact one within deltaV of the hull of the stored values.
    double largest = std::max(std::fabs(lo[j]), std::fabs(hi[j]));
    result.hull.push_back(span[j] + relativeFactor * largest);
    double formula = result.storage[j] + result.kernel[j];
    result.perComponent[j] = std::isnan(formula)
                                 ? result.hull[j]
                                 : std::min(formula, result.hull[j]);
    result.infNorm = std::max(result.infNorm, result.perComponent[j]);
  }
  return Status::success();
}
