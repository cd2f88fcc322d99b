//===- SegmentError.cpp - error models of one class -------------------------===//
//
// The error a class (or a demoted body block) introduces in one format:
// value errors per channel, and key logit errors as a function of the
// query (KeyLogitModel).
//
//===----------------------------------------------------------------------===//

#include "kvprec/Certify/PlanCertifier.h"

#include "CertifyInternal.h"

#include <algorithm>
#include <cmath>
#include <limits>

using namespace kvprec;
using namespace kvprec::certify;
using namespace kvprec::certify::detail;
namespace an = kvprec::analysis;
using calib::CalibrationStats;

double KeyLogitModel::evaluate(const std::vector<double> &absQuery,
                               double lambda) const {
  double storage = evaluateStorage(absQuery, lambda);
  return storage + evaluateKernel(absQuery, lambda, storage);
}

double KeyLogitModel::evaluateDeviation(
    const std::vector<double> &absQuery) const {
  double sum = 0.0;
  for (size_t j = 0; j < absQuery.size(); ++j)
    sum += absQuery[j] * absQuery[j] * delta[j] * delta[j];
  return std::sqrt(sum / double(absQuery.size()));
}

double KeyLogitModel::evaluateStorage(const std::vector<double> &absQuery,
                                      double lambda) const {
  const double inf = std::numeric_limits<double>::infinity();
  double sqrtD = std::sqrt(double(absQuery.size()));
  auto dot = [&](const std::vector<double> &v) {
    double sum = 0.0;
    for (size_t j = 0; j < absQuery.size(); ++j)
      sum += absQuery[j] * v[j];
    return sum / sqrtD;
  };
  bool envelope = std::isfinite(lambda);
  // The relative form: delta_j <= slope |x_j| + offset_j for the stored
  // element x, whose magnitude exceeds |K_j| by at most what `prior`
  // bounds, gives E <= slope (Lambda + prior) + (1/sqrt d) sum_j q_j
  // offset_j.
  auto relativeError = [&](bool valid, double s, const std::vector<double> &o,
                           double prior) {
    return valid && envelope ? s * (lambda + prior) + dot(o) : inf;
  };
  double error = dot(delta);
  if (demoted) {
    // |x^_body - K| <= |x^_body - x^_window| + |x^_window - K|.
    double windowError =
        std::min(dot(windowDelta),
                 relativeError(windowRelative, windowSlope, windowOffset, 0.0));
    double relative =
        exact ? windowError
              : windowError +
                    relativeError(this->relative, slope, offset, windowError);
    error = std::min(error, relative);
  } else {
    error = std::min(error, relativeError(relative, slope, offset, 0.0));
  }
  return error;
}

double KeyLogitModel::evaluateKernel(const std::vector<double> &absQuery,
                                     double lambda, double error) const {
  if (!kernel)
    return 0.0;
  const double inf = std::numeric_limits<double>::infinity();
  double sqrtD = std::sqrt(double(absQuery.size()));
  auto dot = [&](const std::vector<double> &v) {
    double sum = 0.0;
    for (size_t j = 0; j < absQuery.size(); ++j)
      sum += absQuery[j] * v[j];
    return sum / sqrtD;
  };
  // The kernel's rounding (error-bounds.md §8): (1/sqrt d) sum_j |q_j||K^_j|
  // <= Lambda' + E with Lambda' the smaller of the logit envelope and the
  // channel-wise one; the dot product and scaling (gamma_{d+2}), the max
  // shift fl(s - m) with |s - m| <= 2 (Lambda' + E)(1 + gamma_{d+2}), and
  // exp and the one rescale per block, each a relative theta, a logit error
  // ln(1 + theta) <= theta / (1 - theta).
  const double u = 0x1p-24;
  // (An envelope built by hand may leave keyReach empty: then only Lambda.)
  double reach = keyReach.size() == absQuery.size() ? dot(keyReach) : inf;
  double magnitude = std::min(lambda, reach) + error;
  double gammaDot = an::computeGamma(double(absQuery.size()) + 2, u);
  double theta = double(expUlps) * u;
  return gammaDot * magnitude + 2 * u * (1 + gammaDot) * magnitude +
         2 * theta / (1 - theta);
}

/// The relative form of `format` over `keys`, when it has one.
static void getRelativeForm(const StorageFormat &format,
                            const an::BlockStatistics &keys,
                            const CertifyOptions &options, bool &relative,
                            double &slope, std::vector<double> &offset) {
  // (The error model has none for integer formats.)
  relative = an::computeBlockAffineErrorBounds(format, keys,
                                               options.dequantizer, slope,
                                               offset)
                 .ok();
}

static KeyLogitModel makeKeyModel(const HeadEnvelope &envelope,
                                  const CertifyOptions &options) {
  KeyLogitModel model;
  model.kernel = options.kernel.enabled;
  model.expUlps = options.kernel.expUlps;
  model.keyReach = envelope.keyReach;
  return model;
}

static Status computeKeyLogitError(const HeadEnvelope &envelope,
                                   const StorageFormat &format,
                                   const an::BlockStatistics &keys,
                                   const CertifyOptions &options,
                                   SegmentError &result) {
  if (envelope.queryBound.size() != keys.channelRanges.size())
    return Status::failure("query bound has " +
                           std::to_string(envelope.queryBound.size()) +
                           " channels, the key block " +
                           std::to_string(keys.channelRanges.size()));
  KeyLogitModel model = makeKeyModel(envelope, options);
  if (Status status = an::computeBlockChannelErrorBounds(
          format, keys, options.dequantizer, model.delta);
      status.failed())
    return status;
  getRelativeForm(format, keys, options, model.relative, model.slope,
                  model.offset);
  result.logitError =
      model.evaluate(envelope.queryBound, envelope.logitEnvelope);
  result.keyModel = std::move(model);
  return Status::success();
}

double detail::getMaxValueSpan(const HeadEnvelope &envelope) {
  double maxSpan = 0.0;
  for (double span : envelope.valueSpan)
    maxSpan = std::max(maxSpan, span);
  return maxSpan;
}

Status certify::evaluateSegment(const HeadEnvelope &envelope, int segment,
                                int kv, const StorageFormat &format,
                                const CertifyOptions &options,
                                SegmentError &result) {
  result = SegmentError();
  const an::BlockStatistics &block =
      kv == 0 ? envelope.keys[segment] : envelope.values[segment];
  double mass = envelope.mass[segment];
  if (kv == 0) {
    if (Status status =
            computeKeyLogitError(envelope, format, block, options, result);
        status.failed())
      return status;
    result.itemError = an::computeKeyItemError(mass, result.logitError,
                                               getMaxValueSpan(envelope));
    return Status::success();
  }
  if (Status status = an::computeBlockChannelErrorBounds(
          format, block, options.dequantizer, result.valueErrorPerChannel);
      status.failed())
    return status;
  for (double delta : result.valueErrorPerChannel)
    result.maxValueError = std::max(result.maxValueError, delta);
  result.itemError = an::computeValueItemError(mass, result.maxValueError,
                                               options.logitErrorCap);
  return Status::success();
}

bool certify::demotesExactly(const StorageFormat &windowFormat,
                             const StorageFormat &bodyFormat) {
  if (bodyFormat.kind == an::StorageKind::F32)
    return true;
  return !an::isScaled(windowFormat) && windowFormat == bodyFormat;
}

Status certify::evaluateDemotedBody(const HeadEnvelope &envelope, int kv,
                                   const StorageFormat &windowFormat,
                                   const StorageFormat &bodyFormat,
                                   const Geometry &geometry,
                                   const CertifyOptions &options,
                                   SegmentError &result) {
  if (geometry.getWindowTokens() == 0)
    return evaluateSegment(envelope, kBody, kv, bodyFormat, options, result);
  result = SegmentError();
  const an::BlockStatistics &body =
      kv == 0 ? envelope.keys[kBody] : envelope.values[kBody];
  // The window quantizes block by block, as the body does.
  an::BlockStatistics asWindow = body;
  std::vector<double> windowDelta, bodyDelta;
  if (Status status = an::computeBlockChannelErrorBounds(
          windowFormat, asWindow, options.dequantizer, windowDelta);
      status.failed())
    return status;
  bool exact = demotesExactly(windowFormat, bodyFormat);
  an::BlockStatistics widened = body;
  for (size_t j = 0; j < widened.channelRanges.size(); ++j) {
    widened.channelRanges[j].min -= windowDelta[j];
    widened.channelRanges[j].max += windowDelta[j];
  }
  if (exact)
    bodyDelta.assign(windowDelta.size(), 0.0);
  else if (Status status = an::computeBlockChannelErrorBounds(
               bodyFormat, widened, options.dequantizer, bodyDelta);
           status.failed())
    return status;
  std::vector<double> total(bodyDelta.size());
  for (size_t j = 0; j < total.size(); ++j)
    total[j] = windowDelta[j] + bodyDelta[j];
  double mass = envelope.mass[kBody];
  if (kv == 0) {
    // The body re-quantizes x^_window, whose magnitude exceeds |K| by at
    // most the window's error (KeyLogitModel::evaluate).
    KeyLogitModel model = makeKeyModel(envelope, options);
    model.delta = total;
    model.demoted = true;
    model.exact = exact;
    model.windowDelta = windowDelta;
    getRelativeForm(windowFormat, asWindow, options, model.windowRelative,
                    model.windowSlope, model.windowOffset);
    if (!exact)
      getRelativeForm(bodyFormat, widened, options, model.relative,
                      model.slope, model.offset);
    result.logitError =
        model.evaluate(envelope.queryBound, envelope.logitEnvelope);
    result.keyModel = std::move(model);
    result.itemError = an::computeKeyItemError(mass, result.logitError,
                                               getMaxValueSpan(envelope));
    return Status::success();
  }
  for (double delta : total)
    result.maxValueError = std::max(result.maxValueError, delta);
  result.valueErrorPerChannel = std::move(total);
  result.itemError = an::computeValueItemError(mass, result.maxValueError,
                                               options.logitErrorCap);
  return Status::success();
}
