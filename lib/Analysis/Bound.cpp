//===- Bound.cpp - Certified attention-output error bounds ----------------===//

#include "kvprec/Analysis/Bound.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>

using namespace kvprec::analysis;

double kvprec::analysis::phi(double x) { return std::expm1(x); }

double
kvprec::analysis::computeSoftmaxPerturbationL1Bound(double maxLogitError) {
  return 2 * std::tanh(maxLogitError / 2);
}

double kvprec::analysis::computeGamma(double n, double unitRoundoff) {
  double nu = n * unitRoundoff;
  if (nu >= 1.0)
    return std::numeric_limits<double>::infinity();
  return nu / (1.0 - nu);
}

AttentionResult
kvprec::analysis::computeAttention(const std::vector<double> &query,
                                   const Matrix &keys, const Matrix &values) {
  AttentionResult result;
  const size_t numPositions = keys.rows, headDim = keys.cols;
  const double invSqrtD = 1.0 / std::sqrt(double(headDim));
  result.logits.resize(numPositions);
  for (size_t t = 0; t < numPositions; ++t) {
    const double *k = keys.row(t);
    double dot = 0.0;
    for (size_t j = 0; j < headDim; ++j)
      dot += query[j] * k[j];
    result.logits[t] = dot * invSqrtD;
  }
  result.weights.resize(numPositions);
  double maxLogit = -std::numeric_limits<double>::infinity();
  for (double s : result.logits)
    maxLogit = std::max(maxLogit, s);
  double sum = 0.0;
  for (size_t t = 0; t < numPositions; ++t) {
    result.weights[t] = std::exp(result.logits[t] - maxLogit);
    sum += result.weights[t];
  }
  for (double &w : result.weights)
    w /= sum;
  result.output.assign(values.cols, 0.0);
  for (size_t t = 0; t < numPositions; ++t) {
    const double *v = values.row(t);
    for (size_t j = 0; j < values.cols; ++j)
      result.output[j] += result.weights[t] * v[j];
  }
  return result;
}

std::vector<double>
kvprec::analysis::computeLogitErrorBounds(const std::vector<double> &queryMag,
                                          const Matrix &keyErrorBounds) {
  const size_t headDim = keyErrorBounds.cols;
  const double invSqrtD = 1.0 / std::sqrt(double(headDim));
  std::vector<double> bounds(keyErrorBounds.rows, 0.0);
  for (size_t t = 0; t < keyErrorBounds.rows; ++t) {
    const double *delta = keyErrorBounds.row(t);
    double sum = 0.0;
    for (size_t j = 0; j < headDim; ++j)
      sum += std::fabs(queryMag[j]) * delta[j];
    bounds[t] = sum * invSqrtD;
  }
  return bounds;
}

Matrix kvprec::analysis::computeResiduals(const Matrix &values,
                                          const std::vector<double> &output) {
  Matrix residuals(values.rows, values.cols);
  for (size_t t = 0; t < values.rows; ++t)
    for (size_t j = 0; j < values.cols; ++j)
      residuals(t, j) = std::fabs(values(t, j) - output[j]);
  return residuals;
}

std::vector<double> kvprec::analysis::computeValueSpan(const Matrix &values) {
  std::vector<double> span(values.cols, 0.0);
  for (size_t j = 0; j < values.cols; ++j) {
    double lo = std::numeric_limits<double>::infinity(), hi = -lo;
    for (size_t t = 0; t < values.rows; ++t) {
      lo = std::min(lo, values(t, j));
      hi = std::max(hi, values(t, j));
    }
    span[j] = values.rows ? hi - lo : 0.0;
  }
  return span;
}

/// Checks that an error-bound matrix has `like`'s shape and holds finite,
/// non-negative entries.
static Status checkErrorBounds(const Matrix &bounds, const Matrix &like,
                               const char *name) {
  if (!bounds.sameShape(like))
    return Status::failure(
        std::string(name) + " has shape " + std::to_string(bounds.rows) + "x" +
        std::to_string(bounds.cols) + ", expected " +
        std::to_string(like.rows) + "x" + std::to_string(like.cols));
  for (double delta : bounds.values)
    if (!(delta >= 0.0) || !std::isfinite(delta))
      return Status::failure(std::string(name) +
                             " must be finite and non-negative");
  return Status::success();
}

Status kvprec::analysis::checkAttentionShapes(const std::vector<double> &query,
                                              const Matrix &keys,
                                              const Matrix &values,
                                              const Matrix &keyErrorBounds,
                                              const Matrix &valueErrorBounds) {
  if (keys.rows == 0)
    return Status::failure("attention needs at least one position");
  if (query.size() != keys.cols)
    return Status::failure("query has " + std::to_string(query.size()) +
                           " entries, keys have " + std::to_string(keys.cols) +
                           " channels");
  if (values.rows != keys.rows)
    return Status::failure("keys and values hold different position counts");
  if (Status s = checkErrorBounds(keyErrorBounds, keys, "key error bounds");
      s.failed())
    return s;
  return checkErrorBounds(valueErrorBounds, values, "value error bounds");
}

Status kvprec::analysis::computeCertifiedBound(const std::vector<double> &query,
                                               const Matrix &keys,
                                               const Matrix &values,
                                               const Matrix &keyErrorBounds,
                                               const Matrix &valueErrorBounds,
                                               CertifiedBound &result) {
  if (Status s = checkAttentionShapes(query, keys, values, keyErrorBounds,
                                      valueErrorBounds);
      s.failed())
    return s;
  const size_t numPositions = keys.rows, valueDim = values.cols;
  AttentionResult attention = computeAttention(query, keys, values);
  result.logitErrorBounds = computeLogitErrorBounds(query, keyErrorBounds);
  const std::vector<double> &a = attention.weights;
  const std::vector<double> &E = result.logitErrorBounds;
  result.meanLogitError = 0.0;
  for (size_t t = 0; t < numPositions; ++t)
    result.meanLogitError += a[t] * E[t];
  const double globalFactor = std::exp(result.meanLogitError);

  result.valueTerm.assign(valueDim, 0.0);
  result.keyTerm.assign(valueDim, 0.0);
  result.perComponent.assign(valueDim, 0.0);
  result.firstOrderPerComponent.assign(valueDim, 0.0);
  std::vector<double> maxValueError(valueDim, 0.0);
  for (size_t t = 0; t < numPositions; ++t) {
    const double growth = std::exp(E[t]), growthMinusOne = phi(E[t]);
    const double *v = values.row(t);
    const double *deltaV = valueErrorBounds.row(t);
    for (size_t j = 0; j < valueDim; ++j) {
      double residual = std::fabs(v[j] - attention.output[j]);
      result.valueTerm[j] += a[t] * growth * deltaV[j];
      result.keyTerm[j] += a[t] * growthMinusOne * residual;
      result.firstOrderPerComponent[j] += a[t] * (E[t] * residual + deltaV[j]);
      maxValueError[j] = std::max(maxValueError[j], deltaV[j]);
    }
  }
  result.infNorm = result.firstOrderInfNorm = 0.0;
  for (size_t j = 0; j < valueDim; ++j) {
    // The alternative first term sum_t a^_t deltaV <= max_t deltaV.
    result.valueTerm[j] =
        std::min(globalFactor * result.valueTerm[j], maxValueError[j]);
    result.keyTerm[j] *= globalFactor;
    result.perComponent[j] = result.valueTerm[j] + result.keyTerm[j];
    result.infNorm = std::max(result.infNorm, result.perComponent[j]);
    result.firstOrderInfNorm =
        std::max(result.firstOrderInfNorm, result.firstOrderPerComponent[j]);
  }
  return Status::success();
}

double kvprec::analysis::computeValueItemError(double attentionMass,
                                               double maxValueError,
                                               double logitErrorCap) {
  return attentionMass * std::exp(logitErrorCap) * maxValueError;
}

double kvprec::analysis::computeKeyItemError(double attentionMass,
                                             double logitError,
                                             double maxResidual) {
  return attentionMass * phi(logitError) * maxResidual;
}

double kvprec::analysis::computeDecoupledTolerance(double tolerance,
                                                   double logitErrorCap) {
  return tolerance * std::exp(-logitErrorCap);
}

Status kvprec::analysis::computeRuntimeCertificate(
    const std::vector<double> &query, const Matrix &dequantizedKeys,
    const Matrix &dequantizedValues, const Matrix &keyErrorBounds,
    const Matrix &valueErrorBounds, RuntimeCertificate &result,
    const ConcentrationLevels *levels) {
  if (Status s = checkAttentionShapes(query, dequantizedKeys, dequantizedValues,
                                      keyErrorBounds, valueErrorBounds);
      s.failed())
    return s;
  const size_t numPositions = dequantizedKeys.rows;
  const size_t valueDim = dequantizedValues.cols;
  AttentionResult attention =
      computeAttention(query, dequantizedKeys, dequantizedValues);
  const std::vector<double> &aHat = attention.weights;
  std::vector<double> E = computeLogitErrorBounds(query, keyErrorBounds);

  // The deterministic certificate of logit bounds `bound` (E_t, or E~_t on
  // the probabilistic event): per component its value and key terms.
  struct Terms {
    std::vector<double> attention, value, key;
    double meanLogit = 0.0;
  };
  // The exact output and every exact value lie in [lo_j, hi_j].
  std::vector<double> lo(valueDim, std::numeric_limits<double>::infinity()),
      hi(valueDim, -std::numeric_limits<double>::infinity());
  for (size_t j = 0; j < valueDim; ++j)
    for (size_t t = 0; t < numPositions; ++t) {
      lo[j] = std::min(lo[j], dequantizedValues(t, j) - valueErrorBounds(t, j));
      hi[j] = std::max(hi[j], dequantizedValues(t, j) + valueErrorBounds(t, j));
    }
  auto residual = [&](size_t t, size_t j) {
    double vHat = dequantizedValues(t, j), deltaV = valueErrorBounds(t, j);
    return std::max(vHat + deltaV - lo[j], hi[j] - vHat + deltaV);
  };
  auto deterministic = [&](const std::vector<double> &bound) {
    Terms terms;
    // Lemma 2(a) with the roles of exact and perturbed logits swapped.
    double meanUnderHat = 0.0, maxE = 0.0;
    for (size_t t = 0; t < numPositions; ++t) {
      meanUnderHat += aHat[t] * bound[t];
      maxE = std::max(maxE, bound[t]);
    }
    terms.attention.resize(numPositions);
    double massWeightedE = 0.0;
    for (size_t t = 0; t < numPositions; ++t) {
      terms.attention[t] =
          std::min(1.0, aHat[t] * std::exp(bound[t] + meanUnderHat));
      massWeightedE += terms.attention[t] * bound[t];
    }
    terms.meanLogit = std::min(massWeightedE, maxE);
    const double globalFactor = std::exp(terms.meanLogit);
    for (size_t j = 0; j < valueDim; ++j) {
      double keyWeighted = 0.0, keyMax = 0.0;
      double valueWeighted = 0.0, valueMaxGrown = 0.0, valueMax = 0.0;
      for (size_t t = 0; t < numPositions; ++t) {
        double deltaV = valueErrorBounds(t, j);
        double keyContribution = phi(bound[t]) * residual(t, j);
        keyWeighted += terms.attention[t] * keyContribution;
        keyMax = std::max(keyMax, keyContribution);
        double grown = std::exp(bound[t]) * deltaV;
        valueWeighted += terms.attention[t] * grown;
        valueMaxGrown = std::max(valueMaxGrown, grown);
        valueMax = std::max(valueMax, deltaV);
      }
      terms.value.push_back(std::min(
          globalFactor * std::min(valueWeighted, valueMaxGrown), valueMax));
      terms.key.push_back(globalFactor * std::min(keyWeighted, keyMax));
    }
    return terms;
  };

  Terms exact = deterministic(E);
  result.logitErrorBounds = E;
  result.attentionUpperBounds = exact.attention;
  result.meanLogitErrorBound = exact.meanLogit;
  result.valueTerm = exact.value;
  result.keyTerm = exact.key;
  result.perComponent.assign(valueDim, 0.0);
  result.infNorm = 0.0;
  for (size_t j = 0; j < valueDim; ++j)
    result.perComponent[j] = result.valueTerm[j] + result.keyTerm[j];

  if (levels) {
    // sigma_t = ((1/d) sum_j q_j^2 (delta^K_{t,j})^2)^{1/2} and E~_t.
    const size_t headDim = keyErrorBounds.cols;
    std::vector<double> sigma(numPositions), tilde(numPositions);
    for (size_t t = 0; t < numPositions; ++t) {
      double sum = 0.0;
      for (size_t j = 0; j < headDim; ++j) {
        double x = query[j] * keyErrorBounds(t, j);
        sum += x * x;
      }
      sigma[t] = std::sqrt(sum / double(headDim));
      tilde[t] = std::min(E[t], levels->logit * sigma[t]);
    }
    Terms event = deterministic(tilde);
    double growth = std::exp(event.meanLogit);
    for (size_t j = 0; j < valueDim; ++j) {
      // Value part sum_t a^_t dV_t with the weights a^ the kernel computes
      // from the stored keys (independent of dV under (M)); key part
      // (1/Z)(L_j + N_j) with the exact a_t <= the event's bounds.
      double valueSquares = 0.0, keySquares = 0.0, remainder = 0.0,
             remainderMax = 0.0;
      for (size_t t = 0; t < numPositions; ++t) {
        double deltaV = valueErrorBounds(t, j), r = residual(t, j);
        valueSquares += aHat[t] * aHat[t] * deltaV * deltaV;
        double a = event.attention[t];
        keySquares += a * a * r * r * sigma[t] * sigma[t];
        double rest = (std::expm1(tilde[t]) - tilde[t]) * r;
        remainder += a * rest;
        remainderMax = std::max(remainderMax, rest);
      }
      double valueTerm =
          std::min(event.value[j], levels->value * std::sqrt(valueSquares));
      double keyTerm =
          std::min(event.key[j], growth * (levels->key * std::sqrt(keySquares) +
                                           std::min(remainder, remainderMax)));
      if (valueTerm + keyTerm < result.perComponent[j]) {
        result.valueTerm[j] = valueTerm;
        result.keyTerm[j] = keyTerm;
        result.perComponent[j] = valueTerm + keyTerm;
      }
    }
  }
  for (size_t j = 0; j < valueDim; ++j)
    result.infNorm = std::max(result.infNorm, result.perComponent[j]);
  return Status::success();
}

Status kvprec::analysis::computeKernelRoundingBound(
    const std::vector<double> &query, const Matrix &dequantizedKeys,
    const Matrix &dequantizedValues, const KernelRoundingModel &model,
    KernelRoundingBound &result) {
  Matrix zeroKeys(dequantizedKeys.rows, dequantizedKeys.cols);
  Matrix zeroValues(dequantizedValues.rows, dequantizedValues.cols);
  if (Status s = checkAttentionShapes(query, dequantizedKeys, dequantizedValues,
                                      zeroKeys, zeroValues);
      s.failed())
    return s;
  const double u = model.unitRoundoff, expError = model.expRelativeError;
  if (!(u > 0.0 && u < 0.5) || !(expError >= 0.0 && expError < 0.5))
    return Status::failure("kernel rounding model needs 0 < u < 1/2 and "
                           "0 <= exp error < 1/2");
  const size_t numPositions = dequantizedKeys.rows,
               headDim = dequantizedKeys.cols,
               valueDim = dequantizedValues.cols;
  const double rescales = model.numRescales;
  AttentionResult attention =
      computeAttention(query, dequantizedKeys, dequantizedValues);
  const std::vector<double> &aHat = attention.weights;

  // Logit rounding: dot product and scaling, then the max shift; the exp
  // error acts as a logit error ln(1 + theta) <= theta / (1 - theta).
  const double gammaDot = computeGamma(double(headDim) + 2, u);
  std::vector<double> dotError(numPositions);
  double maxDotError = 0.0, maxLogit = -std::numeric_limits<double>::infinity();
  for (size_t t = 0; t < numPositions; ++t) {
    double sum = 0.0;
    for (size_t j = 0; j < headDim; ++j)
      sum += std::fabs(query[j] * dequantizedKeys(t, j));
    dotError[t] = gammaDot * sum / std::sqrt(double(headDim));
    maxDotError = std::max(maxDotError, dotError[t]);
    maxLogit = std::max(maxLogit, attention.logits[t]);
  }
  result.logitErrorBounds.resize(numPositions);
  double meanKernelE = 0.0;
  for (size_t t = 0; t < numPositions; ++t) {
    double shiftedMagnitude = maxLogit - attention.logits[t] + 2 * maxDotError;
    result.logitErrorBounds[t] = dotError[t] + u * shiftedMagnitude +
                                 (1 + rescales) * expError / (1 - expError);
    meanKernelE += aHat[t] * result.logitErrorBounds[t];
  }
  const std::vector<double> &Ek = result.logitErrorBounds;
  const double globalFactor = std::exp(meanKernelE);

  // Relative error of the computed normalised weights against the exactly
  // normalised perturbed weights, then of the accumulation.
  const double gammaSum =
      computeGamma(std::max(0.0, double(numPositions) - 1) + rescales, u);
  const double weightError = (1 + u) / (1 - gammaSum) - 1;
  const double gammaAccumulate =
      computeGamma(double(numPositions) + 1 + rescales, u);
  const double relativeFactor =
      weightError + gammaAccumulate * (1 + weightError);

  result.perComponent.assign(valueDim, 0.0);
  result.infNorm = 0.0;
  for (size_t j = 0; j < valueDim; ++j) {
    double logitWeighted = 0.0, logitMax = 0.0, magnitudeWeighted = 0.0;
    for (size_t t = 0; t < numPositions; ++t) {
      double v = dequantizedValues(t, j);
      double contribution = phi(Ek[t]) * std::fabs(v - attention.output[j]);
      logitWeighted += aHat[t] * contribution;
      logitMax = std::max(logitMax, contribution);
      double weightBound =
          std::min(1.0, aHat[t] * std::exp(Ek[t] + meanKernelE));
      magnitudeWeighted += weightBound * std::fabs(v);
    }
    result.perComponent[j] = globalFactor * std::min(logitWeighted, logitMax) +
                             relativeFactor * magnitudeWeighted;
    result.infNorm = std::max(result.infNorm, result.perComponent[j]);
  }
  return Status::success();
}
