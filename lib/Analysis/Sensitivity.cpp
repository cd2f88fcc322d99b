//===- Sensitivity.cpp - Derivatives and sensitivities of attention -------===//

#include "kvprec/Analysis/Sensitivity.h"

#include <algorithm>
#include <cassert>
#include <cmath>
#include <string>

using namespace kvprec::analysis;

Matrix kvprec::analysis::computeLogitJacobian(const AttentionResult &attention,
                                              const Matrix &values) {
  Matrix jacobian(values.rows, values.cols);
  for (size_t t = 0; t < values.rows; ++t)
    for (size_t j = 0; j < values.cols; ++j)
      jacobian(t, j) =
          attention.weights[t] * (values(t, j) - attention.output[j]);
  return jacobian;
}

Matrix kvprec::analysis::computeKeyJacobian(const std::vector<double> &query,
                                            const AttentionResult &attention,
                                            const Matrix &values,
                                            size_t position) {
  const double invSqrtD = 1.0 / std::sqrt(double(query.size()));
  Matrix jacobian(values.cols, query.size());
  for (size_t j = 0; j < values.cols; ++j) {
    double rowFactor = attention.weights[position] *
                       (values(position, j) - attention.output[j]) * invSqrtD;
    for (size_t i = 0; i < query.size(); ++i)
      jacobian(j, i) = rowFactor * query[i];
  }
  return jacobian;
}

double
kvprec::analysis::computeValueJacobianScale(const AttentionResult &attention,
                                            size_t position) {
  return attention.weights[position];
}

/// e_t = q.DeltaK_t / sqrt(d).
static std::vector<double> computeLogitDelta(const std::vector<double> &query,
                                             const Matrix &keyDelta) {
  const double invSqrtD = 1.0 / std::sqrt(double(query.size()));
  std::vector<double> e(keyDelta.rows, 0.0);
  for (size_t t = 0; t < keyDelta.rows; ++t) {
    double dot = 0.0;
    for (size_t i = 0; i < keyDelta.cols; ++i)
      dot += query[i] * keyDelta(t, i);
    e[t] = dot * invSqrtD;
  }
  return e;
}

std::vector<double> kvprec::analysis::computeOutputDirectionalDerivative(
    const std::vector<double> &query, const AttentionResult &attention,
    const Matrix &values, const Matrix &keyDelta, const Matrix &valueDelta) {
  std::vector<double> e = computeLogitDelta(query, keyDelta);
  std::vector<double> derivative(values.cols, 0.0);
  for (size_t t = 0; t < values.rows; ++t)
    for (size_t j = 0; j < values.cols; ++j)
      derivative[j] +=
          attention.weights[t] *
          (e[t] * (values(t, j) - attention.output[j]) + valueDelta(t, j));
  return derivative;
}

std::vector<double> kvprec::analysis::computeLogitSecondDerivative(
    const AttentionResult &attention, const Matrix &values,
    const std::vector<double> &logitDelta) {
  const std::vector<double> &a = attention.weights;
  double meanDelta = 0.0;
  for (size_t t = 0; t < a.size(); ++t)
    meanDelta += a[t] * logitDelta[t];
  std::vector<double> second(values.cols, 0.0);
  for (size_t t = 0; t < values.rows; ++t) {
    double centered = logitDelta[t] - meanDelta;
    for (size_t j = 0; j < values.cols; ++j)
      second[j] +=
          a[t] * centered * centered * (values(t, j) - attention.output[j]);
  }
  return second;
}

std::vector<double>
kvprec::analysis::computeLogitHessianEntry(const AttentionResult &attention,
                                           const Matrix &values,
                                           size_t position1, size_t position2) {
  const std::vector<double> &a = attention.weights;
  const std::vector<double> &o = attention.output;
  std::vector<double> entry(values.cols, 0.0);
  for (size_t j = 0; j < values.cols; ++j) {
    double value = -a[position1] * a[position2] *
                   (values(position1, j) + values(position2, j) - 2 * o[j]);
    if (position1 == position2)
      value += a[position1] * (values(position1, j) - o[j]);
    entry[j] = value;
  }
  return entry;
}

std::vector<Matrix> kvprec::analysis::computeKeyHessianDiagonalBlock(
    const std::vector<double> &query, const AttentionResult &attention,
    const Matrix &values, size_t position) {
  const size_t headDim = query.size();
  const double a = attention.weights[position];
  std::vector<Matrix> block;
  block.reserve(values.cols);
  for (size_t j = 0; j < values.cols; ++j) {
    double coefficient = a * (1 - 2 * a) *
                         (values(position, j) - attention.output[j]) /
                         double(headDim);
    Matrix hessian(headDim, headDim);
    for (size_t i1 = 0; i1 < headDim; ++i1)
      for (size_t i2 = 0; i2 < headDim; ++i2)
        hessian(i1, i2) = coefficient * query[i1] * query[i2];
    block.push_back(std::move(hessian));
  }
  return block;
}

double kvprec::analysis::computeMaxResidual(const Matrix &values,
                                            const std::vector<double> &output) {
  double maxResidual = 0.0;
  for (size_t t = 0; t < values.rows; ++t)
    for (size_t j = 0; j < values.cols; ++j)
      maxResidual = std::max(maxResidual, std::fabs(values(t, j) - output[j]));
  return maxResidual;
}

double
kvprec::analysis::computeKeyCurvatureBound(const std::vector<double> &query,
                                           double maxResidual) {
  double l1 = 0.0;
  for (double q : query)
    l1 += std::fabs(q);
  return 0.5 * l1 * l1 / double(query.size()) * maxResidual;
}

double kvprec::analysis::computeSecondOrderTermBound(
    const AttentionResult &attention, const std::vector<double> &logitDelta,
    double maxResidual) {
  const std::vector<double> &a = attention.weights;
  double mean = 0.0;
  for (size_t t = 0; t < a.size(); ++t)
    mean += a[t] * logitDelta[t];
  double variance = 0.0;
  for (size_t t = 0; t < a.size(); ++t)
    variance += a[t] * (logitDelta[t] - mean) * (logitDelta[t] - mean);
  return 0.5 * variance * maxResidual;
}

double kvprec::analysis::computeHnfNecessaryBits(double constant,
                                                 double curvature, double range,
                                                 double tolerance) {
  return 0.5 * std::log2(constant * curvature * range * range / tolerance);
}

double kvprec::analysis::computeValueBlockSensitivity(
    const std::vector<double> &attentionMass,
    const std::vector<double> &valueRange) {
  assert(attentionMass.size() == valueRange.size());
  double g = 0.0;
  for (size_t t = 0; t < attentionMass.size(); ++t)
    g += attentionMass[t] * valueRange[t] / 2;
  return g;
}

double kvprec::analysis::computeKeyBlockSensitivity(
    const std::vector<double> &attentionMass,
    const std::vector<double> &keyRange, const std::vector<double> &residual,
    double queryL1Norm, size_t headDim) {
  assert(attentionMass.size() == keyRange.size() &&
         attentionMass.size() == residual.size());
  double g = 0.0;
  for (size_t t = 0; t < attentionMass.size(); ++t)
    g += attentionMass[t] * keyRange[t] * residual[t];
  return g * queryL1Norm / (2 * std::sqrt(double(headDim)));
}

Status kvprec::analysis::computeWaterFillingBits(
    const std::vector<double> &sensitivity,
    const std::vector<double> &numElements, double tolerance,
    WaterFillingPlan &result) {
  if (sensitivity.size() != numElements.size())
    return Status::failure("water-filling: sensitivity and element counts "
                           "differ in length");
  if (!(tolerance > 0.0) || !std::isfinite(tolerance))
    return Status::failure("water-filling: tolerance must be positive");
  double totalElements = 0.0;
  for (size_t i = 0; i < sensitivity.size(); ++i) {
    if (!(sensitivity[i] > 0.0) || !(numElements[i] > 0.0) ||
        !std::isfinite(sensitivity[i]) || !std::isfinite(numElements[i]))
      return Status::failure("water-filling: block " + std::to_string(i) +
                             " needs a positive sensitivity and size");
    totalElements += numElements[i];
  }
  result.bits.resize(sensitivity.size());
  result.errors.resize(sensitivity.size());
  for (size_t i = 0; i < sensitivity.size(); ++i) {
    result.bits[i] =
        std::log2(sensitivity[i] / numElements[i] * totalElements / tolerance);
    result.errors[i] = sensitivity[i] * std::exp2(-result.bits[i]);
  }
  return Status::success();
}
