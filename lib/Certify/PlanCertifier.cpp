//===- PlanCertifier.cpp - certificates and allocation for plans ----------===//

#include "kvprec/Certify/PlanCertifier.h"

#include "kvprec/Analysis/Allocator.h"
#include "kvprec/Analysis/Sensitivity.h"

#include <algorithm>
#include <cstdio>
#include <cmath>
#include <limits>

using namespace kvprec;
using namespace kvprec::certify;
namespace an = kvprec::analysis;
using calib::CalibrationStats;

static int64_t ceilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

/// A number as a message shows it: shortest %g form.
static std::string formatNumber(double value) {
  char buffer[32];
  std::snprintf(buffer, sizeof(buffer), "%g", value);
  return buffer;
}

int64_t Geometry::getNumBodyBlocks() const {
  return block > 0 ? ceilDiv(std::max<int64_t>(capacity - sink, 0), block) : 0;
}

int64_t Geometry::getWindowTokens() const {
  if (window == 0)
    return 0;
  // Whole blocks overlapping the newest `window` positions: `window` is a
  // multiple of `block`, so in a full cache that is exactly `window`
  // positions, or all of the body if it is shorter.
  return std::min(window, capacity - sink);
}

int64_t Geometry::getBodyTokens() const {
  return capacity - sink - getWindowTokens();
}

const char *certify::getSegmentName(int segment) {
  switch (segment) {
  case kSink:
    return "sink";
  case kWindow:
    return "window";
  default:
    return "body";
  }
}

std::string certify::checkGeometry(const CalibrationStats &stats,
                                   const Geometry &geometry) {
  const calib::CalibrationShape &shape = stats.shape;
  if (shape.layers != geometry.layers)
    return "the calibration has " + std::to_string(shape.layers) +
           " layers but the cache has " + std::to_string(geometry.layers);
  if (shape.kvHeads != geometry.heads)
    return "the calibration has " + std::to_string(shape.kvHeads) +
           " KV heads but the cache has " + std::to_string(geometry.heads);
  if (shape.headDim != geometry.headDim)
    return "the calibration has head_dim " + std::to_string(shape.headDim) +
           " but the cache has " + std::to_string(geometry.headDim);
  // Sink positions are absolute: a plan sink longer than the calibration's
  // would include positions whose mass was only measured by distance.
  if (geometry.sink > shape.sink)
    return "the calibration's sink is " + std::to_string(shape.sink) +
           " positions but the plan's is " + std::to_string(geometry.sink) +
           "; collect with --sink " + std::to_string(geometry.sink) +
           " or use sink=" + std::to_string(shape.sink);
  return "";
}

const char *certify::getExtrapolationName(Extrapolation rule) {
  return rule == Extrapolation::None ? "none" : "worst_case";
}

std::string certify::checkCoverage(const CalibrationStats &stats,
                                   const Geometry &geometry,
                                   const CertifyOptions &options) {
  if (std::string problem = checkGeometry(stats, geometry); !problem.empty())
    return problem;
  int64_t calibrated = stats.shape.maxPositions;
  if (geometry.capacity > calibrated) {
    if (options.extrapolation == Extrapolation::None)
      return "the cache holds " + std::to_string(geometry.capacity) +
             " positions but calibration observed only " +
             std::to_string(calibrated) +
             "; calibrate on longer sequences, plan a shorter cache, or "
             "state an extrapolation rule (extrapolate=worst-case margin=M)";
    if (!(options.extrapolationMargin >= 1.0) ||
        !std::isfinite(options.extrapolationMargin))
      return "the extrapolation margin must be finite and at least 1, got " +
             formatNumber(options.extrapolationMargin);
  }
  double d = double(geometry.headDim);
  double scale =
      options.softmaxScale > 0 ? options.softmaxScale : 1.0 / std::sqrt(d);
  if (!(stats.softmaxScale > 0) ||
      std::fabs(scale - stats.softmaxScale) > 1e-6 * stats.softmaxScale)
    return "the attention masses were calibrated at softmax scale " +
           formatNumber(stats.softmaxScale) + " but the cache is read at " +
           formatNumber(scale) + "; calibrate at the scale the model uses";
  return "";
}

/// Sum of the calibration's relative-class masses whose distance interval
/// [begin, end) meets [lo, hi), extrapolating past the calibrated blocks.
static double massOverDistances(const CalibrationStats &stats, size_t lh,
                                int64_t lo, int64_t hi) {
  const calib::CalibrationShape &shape = stats.shape;
  double mass = 0.0;
  if (lo < shape.window && hi > 0)
    mass += stats.attnWindowMass[lh];
  int64_t blocks = shape.getNumBodyBlocks();
  for (int64_t j = 0; j < blocks; ++j) {
    int64_t begin = shape.window + j * shape.block;
    int64_t end = begin + shape.block;
    if (begin < hi && end > lo)
      mass += stats.attnBodyMass[lh * blocks + j];
    if (mass >= 1.0)
      return 1.0;
  }
  // Distances beyond the calibrated ones: extrapolate with the farthest
  // calibrated block's mass per block.
  int64_t calibratedEnd = shape.window + blocks * shape.block;
  if (hi > calibratedEnd && blocks > 0) {
    int64_t extraBlocks =
        ceilDiv(hi - std::max(lo, calibratedEnd), shape.block);
    mass += extraBlocks * stats.attnBodyMass[lh * blocks + blocks - 1];
  }
  return std::min(mass, 1.0);
}

/// Channel ranges of `minima`/`maxima` (per channel) clipped to +-absMax.
static an::BlockStatistics clippedRanges(const std::vector<float> &minima,
                                         const std::vector<float> &maxima,
                                         size_t offset, int64_t headDim,
                                         double absMax, int64_t tokens) {
  an::BlockStatistics result;
  result.numTokens = static_cast<unsigned>(tokens);
  for (int64_t j = 0; j < headDim; ++j) {
    double lo = std::max<double>(minima[offset + j], -absMax);
    double hi = std::min<double>(maxima[offset + j], absMax);
    if (lo > hi)
      lo = hi = std::clamp<double>(0.0, minima[offset + j], maxima[offset + j]);
    result.channelRanges.push_back({lo, hi});
  }
  return result;
}

/// The largest calibrated block absmax over absolute positions
/// [begin, end), or +inf when part of it was never observed (positions at
/// or past the calibrated length: a partly observed block only bounds the
/// positions calibration saw).
static double blockAbsMax(const CalibrationStats &stats,
                          const std::vector<float> &absMax, size_t lh,
                          int64_t begin, int64_t end) {
  int64_t numBlocks = stats.shape.getNumAbsoluteBlocks();
  int64_t first = begin / stats.shape.block;
  int64_t last = ceilDiv(end, stats.shape.block);
  if (end > stats.shape.maxPositions || last > numBlocks)
    return std::numeric_limits<double>::infinity();
  double result = 0.0;
  for (int64_t a = first; a < last; ++a)
    result = std::max<double>(result, absMax[lh * numBlocks + a]);
  return result;
}

HeadEnvelope certify::buildHeadEnvelope(const CalibrationStats &stats,
                                        const Geometry &geometry,
                                        int64_t layer, int64_t head,
                                        const CertifyOptions &options) {
  HeadEnvelope envelope;
  size_t lh = stats.index(layer, head);
  int64_t d = geometry.headDim;
  size_t channelOffset = lh * d;
  double scale = options.softmaxScale > 0
                     ? options.softmaxScale * std::sqrt(double(d))
                     : 1.0;
  for (int64_t j = 0; j < d; ++j) {
    envelope.queryBound.push_back(stats.qAbsMax[channelOffset + j] * scale);
    envelope.valueSpan.push_back(double(stats.vChanMax[channelOffset + j]) -
                                 stats.vChanMin[channelOffset + j]);
  }
  envelope.logitEnvelope = double(stats.qkLogitMax[lh]) * scale;
  envelope.queryL1Max = stats.qL1Max[lh];
  envelope.calibratedPositions = stats.shape.maxPositions;
  envelope.extrapolated = geometry.capacity > stats.shape.maxPositions;
  double margin = envelope.extrapolated ? options.extrapolationMargin : 1.0;

  // (C1) masses. The plan's window holds whole blocks, so its positions lie
  // at distances [0, window + block - 1); body positions at >= window.
  envelope.mass[kSink] = geometry.sink > 0 ? stats.attnSinkMass[lh] : 0.0;
  int64_t farthest = geometry.capacity;
  envelope.mass[kWindow] =
      geometry.window > 0
          ? massOverDistances(stats, lh, 0,
                              geometry.window + geometry.block - 1)
          : 0.0;
  envelope.mass[kBody] =
      geometry.getBodyTokens() > 0
          ? massOverDistances(stats, lh, geometry.window, farthest)
          : 0.0;
  // Calibrated sink positions that the plan stores in the window or body
  // (a plan with a shorter sink) add the sink's mass to both classes.
  if (geometry.sink < stats.shape.sink)
    for (int segment : {kWindow, kBody})
      if (envelope.mass[segment] > 0.0)
        envelope.mass[segment] =
            std::min(1.0, envelope.mass[segment] + stats.attnSinkMass[lh]);

  // K and V ranges of each class: the sink may use its own blocks' absmax;
  // the window and body move through the cache, so they use the ranges over
  // all positions.
  double inf = std::numeric_limits<double>::infinity();
  double sinkK = blockAbsMax(stats, stats.kBlockAbsMax, lh, 0, geometry.sink);
  double sinkV = blockAbsMax(stats, stats.vBlockAbsMax, lh, 0, geometry.sink);
  envelope.keys[kSink] = clippedRanges(stats.kChanMin, stats.kChanMax,
                                       channelOffset, d, sinkK, geometry.sink);
  envelope.values[kSink] = clippedRanges(
      stats.vChanMin, stats.vChanMax, channelOffset, d, sinkV, geometry.sink);
  // Channel groups of every class but the sink run over the tokens of one
  // block (a group divides the block), the window's too.
  int64_t windowExtent = geometry.getWindowTokens() > 0 ? geometry.block : 0;
  envelope.keys[kWindow] = clippedRanges(stats.kChanMin, stats.kChanMax,
                                         channelOffset, d, inf, windowExtent);
  envelope.values[kWindow] = clippedRanges(stats.vChanMin, stats.vChanMax,
                                           channelOffset, d, inf, windowExtent);
  envelope.keys[kBody] = clippedRanges(stats.kChanMin, stats.kChanMax,
                                       channelOffset, d, inf, geometry.block);
  envelope.values[kBody] = clippedRanges(
      stats.vChanMin, stats.vChanMax, channelOffset, d, inf, geometry.block);

  if (envelope.extrapolated) {
    // The stated worst-case rule: no attention knowledge, and every
    // magnitude widened by the margin.
    int64_t tokens[kNumSegments] = {geometry.getSinkTokens(),
                                    geometry.getWindowTokens(),
                                    geometry.getBodyTokens()};
    for (int segment = 0; segment < kNumSegments; ++segment)
      envelope.mass[segment] = tokens[segment] > 0 ? 1.0 : 0.0;
    for (double &q : envelope.queryBound)
      q *= margin;
    for (double &span : envelope.valueSpan)
      span *= margin;
    envelope.logitEnvelope *= margin * margin;
    // The sink's positions are the first of every sequence, which
    // calibration observed: only the classes that move past the calibrated
    // length are widened.
    for (int segment : {kWindow, kBody})
      for (an::BlockStatistics *ranges :
           {&envelope.keys[segment], &envelope.values[segment]})
        for (an::ValueRange &range : ranges->channelRanges) {
          double mid = 0.5 * (range.min + range.max);
          double half = 0.5 * (range.max - range.min);
          double reach = std::max(std::fabs(range.min), std::fabs(range.max));
          // Widen about the midpoint, and far enough that the magnitude
          // grows by the margin too.
          double newHalf = std::max(half * margin,
                                    reach * margin - std::fabs(mid));
          range.min = mid - newHalf;
          range.max = mid + newHalf;
        }
  }

  // Magnitudes the kernel-rounding terms use (every class, after any
  // extrapolation).
  envelope.valueMagnitude.assign(d, 0.0);
  envelope.keyReach.assign(d, 0.0);
  for (int64_t j = 0; j < d; ++j) {
    double keyReach = 0.0;
    for (int segment = 0; segment < kNumSegments; ++segment) {
      const an::ValueRange &k = envelope.keys[segment].channelRanges[j];
      const an::ValueRange &v = envelope.values[segment].channelRanges[j];
      keyReach = std::max({keyReach, std::fabs(k.min), std::fabs(k.max)});
      envelope.valueMagnitude[j] = std::max(
          {envelope.valueMagnitude[j], std::fabs(v.min), std::fabs(v.max)});
    }
    envelope.keyReach[j] = keyReach;
  }

  // The query samples, for the joint certificate: within the calibrated
  // length only (past it nothing is known of any query).
  const calib::CalibrationShape &shape = stats.shape;
  if (options.jointEnvelope && !envelope.extrapolated &&
      shape.querySamples > 0 && stats.querySampleCount[lh] > 0) {
    int64_t bins = shape.getNumSampleMassBins();
    int64_t bodyBins = bins - 3;
    for (int64_t i = 0; i < stats.querySampleCount[lh]; ++i) {
      size_t sample = lh * shape.querySamples + i;
      const float *mass = stats.querySampleMass.data() + sample * bins;
      // A sample's relative classes: the window at distances [0, W_c), body
      // block j at [W_c + j B_c, W_c + (j+1) B_c), the rest beyond; each
      // counts in every plan class whose distances it meets.
      auto over = [&](int64_t lo, int64_t hi) {
        double total = 0.0;
        if (lo < shape.window && hi > 0)
          total += mass[1];
        for (int64_t j = 0; j < bodyBins; ++j) {
          int64_t begin = shape.window + j * shape.block;
          if (begin < hi && begin + shape.block > lo)
            total += mass[2 + j];
        }
        if (hi > shape.window + bodyBins * shape.block)
          total += mass[bins - 1];
        return std::min(total, 1.0);
      };
      QuerySample q;
      q.mass[kSink] = geometry.sink > 0 ? mass[0] : 0.0;
      q.mass[kWindow] = geometry.getWindowTokens() > 0
                            ? over(0, geometry.window + geometry.block - 1)
                            : 0.0;
      q.mass[kBody] = geometry.getBodyTokens() > 0
                          ? over(geometry.window, geometry.capacity)
                          : 0.0;
      if (geometry.sink < shape.sink)
        for (int segment : {kWindow, kBody})
          if (q.mass[segment] > 0.0)
            q.mass[segment] = std::min(1.0, q.mass[segment] + mass[0]);
      for (int64_t j = 0; j < d; ++j)
        q.absQuery.push_back(stats.querySampleAbsQ[sample * d + j] * scale);
      q.logitEnvelope = double(stats.querySampleLogit[sample]) * scale;
      envelope.samples.push_back(std::move(q));
    }
  }
  return envelope;
}

std::vector<double> certify::getKernelAccumulationError(
    const HeadEnvelope &envelope, const Geometry &geometry,
    const CertifyOptions &options, const std::vector<double> &maxValueError) {
  std::vector<double> result(envelope.valueMagnitude.size(), 0.0);
  if (!options.kernel.enabled)
    return result;
  const double u = 0x1p-24;
  int64_t block = options.kernel.accumulateBlock > 0
                      ? options.kernel.accumulateBlock
                      : std::max<int64_t>(geometry.block, 1);
  // Blocked sums: block - 1 additions in a block, then one rescale and
  // ceil(T / block) - 1 additions across blocks.
  double terms = double(std::min(block, geometry.capacity)) +
                 double(ceilDiv(geometry.capacity, block));
  double gammaSum = an::computeGamma(terms, u);
  double gammaAccumulate = an::computeGamma(terms + 1, u);
  // The computed normalised weights against the exactly normalised ones
  // (the sum of positive weights, then the division), then the weighted sum
  // of values: |o~_j - o'_j| <= factor * sum_t a'_t |V^_{t,j}|.
  double weightError = (1 + u) / (1 - gammaSum) - 1;
  double factor = weightError + gammaAccumulate * (1 + weightError);
  for (size_t j = 0; j < result.size(); ++j)
    result[j] = factor * (envelope.valueMagnitude[j] +
                          (j < maxValueError.size() ? maxValueError[j] : 0.0));
  return result;
}

Status certify::finishCertificate(
    const HeadEnvelope &envelope, const Geometry &geometry,
    const CertifyOptions &options,
    const std::vector<an::PositionClassEnvelope> &classes,
    const std::vector<std::vector<KeyLogitModel>> &keyModels,
    an::StaticCertifiedBound &result) {
  if (Status status = computeClassBound(classes, envelope.valueSpan, result);
      status.failed())
    return status;
  if (!envelope.samples.empty()) {
    if (keyModels.size() != classes.size())
      return Status::failure("the joint certificate needs the key models of "
                             "every class");
    // The joint certificate (error-bounds.md §7): the §2 bound of each
    // sampled query, with its masses, |q| and logit envelope, and the
    // class-wide value errors (C3); the largest over the samples.
    an::StaticCertifiedBound joint;
    size_t dims = envelope.valueSpan.size();
    joint.perComponent.assign(dims, 0.0);
    joint.valueTerm.assign(dims, 0.0);
    joint.keyTerm.assign(dims, 0.0);
    std::vector<an::PositionClassEnvelope> perQuery = classes;
    for (const QuerySample &q : envelope.samples) {
      for (size_t c = 0; c < classes.size(); ++c) {
        double e = 0.0;
        for (const KeyLogitModel &model : keyModels[c])
          e = std::max(e, model.evaluate(q.absQuery, q.logitEnvelope));
        perQuery[c].maxLogitError = e;
      }
      // The classes' masses for this query (in the order of `classes`,
      // which lists the present segments in order).
      std::vector<double> masses;
      for (const an::PositionClassEnvelope &cls : classes)
        masses.push_back(cls.segment >= 0 ? q.mass[cls.segment] : 1.0);
      for (size_t c = 0; c < classes.size(); ++c)
        perQuery[c].attentionMass = masses[c];
      an::StaticCertifiedBound one;
      if (Status status = computeClassBound(perQuery, envelope.valueSpan, one);
          status.failed())
        return status;
      joint.meanLogitErrorBound =
          std::max(joint.meanLogitErrorBound, one.meanLogitErrorBound);
      for (size_t j = 0; j < dims; ++j) {
        joint.perComponent[j] = std::max(joint.perComponent[j],
                                         one.perComponent[j]);
        joint.valueTerm[j] = std::max(joint.valueTerm[j], one.valueTerm[j]);
        joint.keyTerm[j] = std::max(joint.keyTerm[j], one.keyTerm[j]);
      }
    }
    result = std::move(joint);
  }
  std::vector<double> maxValueError(envelope.valueSpan.size(), 0.0);
  for (const an::PositionClassEnvelope &cls : classes)
    for (size_t j = 0; j < maxValueError.size(); ++j)
      maxValueError[j] = std::max(maxValueError[j], cls.maxValueError[j]);
  std::vector<double> kernel =
      getKernelAccumulationError(envelope, geometry, options, maxValueError);
  result.infNorm = 0.0;
  for (size_t j = 0; j < result.perComponent.size(); ++j) {
    result.perComponent[j] += kernel[j];
    result.infNorm = std::max(result.infNorm, result.perComponent[j]);
  }
  return Status::success();
}

/// Clips `ranges` to +-bound in place, from the class-wide `wide` ranges;
/// returns whether any channel got narrower.
static bool clipInPlace(const an::BlockStatistics &wide, double bound,
                        an::BlockStatistics &ranges) {
  bool changed = false;
  for (size_t j = 0; j < wide.channelRanges.size(); ++j) {
    an::ValueRange range = wide.channelRanges[j];
    double lo = std::max(range.min, -bound), hi = std::min(range.max, bound);
    if (lo > hi)
      lo = hi = std::clamp(0.0, range.min, range.max);
    changed |= lo != range.min || hi != range.max;
    ranges.channelRanges[j] = {lo, hi};
  }
  return changed;
}

bool certify::narrowToBlock(const CalibrationStats &stats, int64_t layer,
                            int64_t head, const HeadEnvelope &envelope,
                            int64_t begin, int64_t end, HeadEnvelope &local) {
  size_t lh = stats.index(layer, head);
  double keyBound = blockAbsMax(stats, stats.kBlockAbsMax, lh, begin, end);
  double valueBound = blockAbsMax(stats, stats.vBlockAbsMax, lh, begin, end);
  bool changed = clipInPlace(envelope.keys[kBody], keyBound, local.keys[kBody]);
  changed |=
      clipInPlace(envelope.values[kBody], valueBound, local.values[kBody]);
  return changed;
}

double certify::getSegmentBytes(const StorageFormat &format, int64_t tokens,
                                int64_t headDim) {
  double bytes =
      double(tokens) * headDim * an::getBitWidth(format.kind) / 8.0;
  if (!an::isScaled(format) || tokens == 0)
    return bytes;
  int64_t groups = format.granularity == an::Granularity::TokenGroup
                       ? tokens * ceilDiv(headDim, format.groupSize)
                       : headDim * ceilDiv(tokens, format.groupSize);
  return bytes + groups * an::getGroupOverheadBits(format) / 8.0;
}

bool certify::fitsSegment(const StorageFormat &format, int64_t tokens,
                          int64_t headDim) {
  if (!an::isScaled(format))
    return true;
  if (format.granularity == an::Granularity::TokenGroup)
    return headDim % format.groupSize == 0;
  return tokens > 0 && tokens % format.groupSize == 0;
}

double KeyLogitModel::evaluate(const std::vector<double> &absQuery,
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
  if (!kernel)
    return error;
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
  return error + gammaDot * magnitude + 2 * u * (1 + gammaDot) * magnitude +
         2 * theta / (1 - theta);
}

/// The relative form of `format` over `keys`, when it has one.
static void getRelativeForm(const StorageFormat &format,
                            const an::BlockStatistics &keys,
                            const CertifyOptions &options, bool &relative,
                            double &slope, std::vector<double> &offset) {
  relative = !an::isIntegerKind(format.kind) &&
             an::computeBlockAffineErrorBounds(format, keys,
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

static double getMaxValueSpan(const HeadEnvelope &envelope) {
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

double certify::maximizeOverEnvelope(const std::vector<double> &masses,
                                     const std::vector<double> &values) {
  double total = 0.0, largest = 0.0;
  for (size_t c = 0; c < masses.size(); ++c) {
    total += masses[c];
    largest = std::max(largest, values[c]);
  }
  if (total < 1.0)
    return largest;
  // Fill the unit of mass greedily, largest values first.
  std::vector<size_t> order(masses.size());
  for (size_t c = 0; c < order.size(); ++c)
    order[c] = c;
  std::sort(order.begin(), order.end(),
            [&](size_t a, size_t b) { return values[a] > values[b]; });
  double remaining = 1.0, result = 0.0;
  for (size_t c : order) {
    double take = std::min(remaining, masses[c]);
    result += take * values[c];
    remaining -= take;
    if (remaining <= 0.0)
      break;
  }
  return result;
}

Status certify::computeClassBound(
    const std::vector<an::PositionClassEnvelope> &classes,
    const std::vector<double> &valueSpan, an::StaticCertifiedBound &result) {
  result = an::StaticCertifiedBound();
  size_t dims = valueSpan.size();
  std::vector<double> masses, logit;
  for (const an::PositionClassEnvelope &cls : classes) {
    if (cls.maxValueError.size() != dims)
      return Status::failure("value error bounds have " +
                             std::to_string(cls.maxValueError.size()) +
                             " channels, expected " + std::to_string(dims));
    if (!(cls.attentionMass >= 0.0) || !std::isfinite(cls.maxLogitError))
      return Status::failure("class envelope is not finite");
    masses.push_back(std::min(cls.attentionMass, 1.0));
    logit.push_back(cls.maxLogitError);
  }
  double meanLogit = maximizeOverEnvelope(masses, logit);
  result.meanLogitErrorBound = meanLogit;
  double growth = std::exp(meanLogit);
  for (size_t j = 0; j < dims; ++j) {
    std::vector<double> value(classes.size()), key(classes.size()),
        both(classes.size());
    double maxValue = 0.0;
    for (size_t c = 0; c < classes.size(); ++c) {
      double e = classes[c].maxLogitError;
      value[c] = std::exp(e) * classes[c].maxValueError[j];
      key[c] = an::phi(e) * valueSpan[j];
      both[c] = value[c] + key[c];
      maxValue = std::max(maxValue, classes[c].maxValueError[j]);
    }
    // The first term also has the alternative sum_t a^_t dV_t <= max dV.
    double valueTerm =
        std::min(growth * maximizeOverEnvelope(masses, value), maxValue);
    double keyTerm = growth * maximizeOverEnvelope(masses, key);
    double joint = growth * maximizeOverEnvelope(masses, both);
    double component = std::min(joint, valueTerm + keyTerm);
    result.valueTerm.push_back(valueTerm);
    result.keyTerm.push_back(keyTerm);
    result.perComponent.push_back(component);
    result.infNorm = std::max(result.infNorm, component);
  }
  return Status::success();
}

Status certify::certifyHead(const HeadEnvelope &envelope,
                            const HeadFormats &formats, const Geometry &geometry,
                            const CertifyOptions &options,
                            an::StaticCertifiedBound &result) {
  std::vector<an::PositionClassEnvelope> classes;
  std::vector<std::vector<KeyLogitModel>> keyModels;
  for (int segment = 0; segment < kNumSegments; ++segment) {
    if (envelope.keys[segment].numTokens == 0)
      continue;
    an::PositionClassEnvelope cls;
    cls.segment = segment;
    cls.attentionMass = envelope.mass[segment];
    keyModels.emplace_back();
    for (int kv = 0; kv < 2; ++kv) {
      SegmentError error;
      Status status =
          segment == kBody
              ? evaluateDemotedBody(envelope, kv, formats[kv][kWindow],
                                    formats[kv][kBody], geometry, options,
                                    error)
              : evaluateSegment(envelope, segment, kv, formats[kv][segment],
                                options, error);
      if (status.failed())
        return Status::failure(std::string(getSegmentName(segment)) +
                               (kv == 0 ? " keys: " : " values: ") +
                               status.getMessage());
      if (kv == 0) {
        cls.maxLogitError = error.logitError;
        keyModels.back().push_back(std::move(error.keyModel));
      } else {
        cls.maxValueError = error.valueErrorPerChannel;
      }
    }
    classes.push_back(std::move(cls));
  }
  return finishCertificate(envelope, geometry, options, classes, keyModels,
                           result);
}

double certify::computeKeyNecessaryBits(const HeadEnvelope &envelope,
                                        double tolerance) {
  double maxSpan = getMaxValueSpan(envelope), keyRange = 0.0;
  for (const an::ValueRange &range : envelope.keys[kBody].channelRanges)
    keyRange = std::max(keyRange, range.max - range.min);
  // kappa_K <= (1/2) ||q||_1^2 / d * max_t R_t (§3), with the (C2) bounds
  // standing in for |q| (so ||Q||_1 >= ||q||_1).
  double kappa = an::computeKeyCurvatureBound(envelope.queryBound, maxSpan);
  return an::computeHnfNecessaryBits(1.0, kappa, keyRange, tolerance);
}

namespace {
/// One allocator item: the sink of one (layer, head, kv), or its window and
/// body together (a body block's error depends on the window format it was
/// demoted from), with its usable options.
struct ItemOptions {
  int64_t head; // Flat (layer, head) index.
  int kv;
  /// The classes the item covers (one, or window and body).
  std::vector<int> segments;
  /// Per option, the candidate index of each covered class.
  std::vector<std::vector<int>> choices;
  /// Per covered class its mass envelope; per option its bytes and, per
  /// class, its error per unit of mass (the item error sums mass * it).
  std::vector<double> masses;
  std::vector<double> costs;
  std::vector<std::vector<double>> perMass;
};
} // namespace

/// Builds the items of one (layer, head).
static Status addHeadItems(const HeadEnvelope &envelope,
                           const AllocationRequest &request, int64_t flatHead,
                           std::vector<ItemOptions> &items) {
  const Geometry &geometry = request.geometry;
  int64_t tokens[kNumSegments] = {geometry.getSinkTokens(),
                                  geometry.getWindowTokens(),
                                  geometry.getBodyTokens()};
  // Channel groups run over the tokens of one quantization extent: the
  // sink, or one block (of the window or the body).
  int64_t extent[kNumSegments] = {tokens[kSink], geometry.block,
                                  geometry.block};
  const double cap = request.options.logitErrorCap;
  auto perMassOf = [&](int segment, const SegmentError &error) {
    return envelope.mass[segment] > 0 ? error.itemError / envelope.mass[segment]
                                      : 0.0;
  };
  for (int kv = 0; kv < 2; ++kv) {
    const std::vector<StorageFormat> &candidates =
        kv == 0 ? request.keyCandidates : request.valueCandidates;
    const char *what = kv == 0 ? " keys within the logit error cap" : " values";
    // Candidates usable for a class on their own, with their errors.
    auto usable = [&](int segment, std::vector<int> &indices,
                      std::vector<SegmentError> &errors) {
      for (size_t c = 0; c < candidates.size(); ++c) {
        if (!fitsSegment(candidates[c], extent[segment], geometry.headDim))
          continue;
        SegmentError error;
        if (evaluateSegment(envelope, segment, kv, candidates[c],
                            request.options, error)
                .failed())
          continue;
        // Keys whose logit error exceeds the cap are pruned (§4).
        if (kv == 0 && error.logitError > cap)
          continue;
        indices.push_back(static_cast<int>(c));
        errors.push_back(std::move(error));
      }
    };
    if (tokens[kSink] > 0) {
      ItemOptions item{flatHead, kv, {kSink}, {}, {envelope.mass[kSink]}, {},
                       {}};
      std::vector<int> indices;
      std::vector<SegmentError> errors;
      usable(kSink, indices, errors);
      for (size_t i = 0; i < indices.size(); ++i) {
        item.choices.push_back({indices[i]});
        item.costs.push_back(getSegmentBytes(candidates[indices[i]],
                                             tokens[kSink], geometry.headDim));
        item.perMass.push_back({perMassOf(kSink, errors[i])});
      }
      if (item.choices.empty())
        return Status::failure(std::string("no allowed format can store the "
                                           "sink") +
                               what);
      items.push_back(std::move(item));
    }
    if (tokens[kWindow] == 0 && tokens[kBody] == 0)
      continue;
    ItemOptions item{flatHead, kv, {}, {}, {}, {}, {}};
    std::vector<int> windows, bodies;
    std::vector<SegmentError> windowErrors, bodyErrors;
    if (tokens[kWindow] > 0)
      usable(kWindow, windows, windowErrors);
    if (tokens[kBody] > 0)
      usable(kBody, bodies, bodyErrors);
    if (tokens[kWindow] > 0 && windows.empty())
      return Status::failure(
          std::string("no allowed format can store the window") + what);
    if (tokens[kBody] > 0 && bodies.empty())
      return Status::failure(
          std::string("no allowed format can store the body") + what);
    if (tokens[kBody] == 0 || tokens[kWindow] == 0) {
      int segment = tokens[kBody] == 0 ? kWindow : kBody;
      std::vector<int> &indices = segment == kWindow ? windows : bodies;
      std::vector<SegmentError> &errors =
          segment == kWindow ? windowErrors : bodyErrors;
      item.segments = {segment};
      item.masses = {envelope.mass[segment]};
      for (size_t i = 0; i < indices.size(); ++i) {
        item.choices.push_back({indices[i]});
        item.costs.push_back(getSegmentBytes(
            candidates[indices[i]], tokens[segment], geometry.headDim));
        item.perMass.push_back({perMassOf(segment, errors[i])});
      }
      items.push_back(std::move(item));
      continue;
    }
    // Window and body together: every pair, the body error after demotion.
    item.segments = {kWindow, kBody};
    item.masses = {envelope.mass[kWindow], envelope.mass[kBody]};
    for (size_t w = 0; w < windows.size(); ++w)
      for (int b : bodies) {
        SegmentError demoted;
        if (evaluateDemotedBody(envelope, kv, candidates[windows[w]],
                                candidates[b], geometry, request.options,
                                demoted)
                .failed())
          continue;
        if (kv == 0 && demoted.logitError > cap)
          continue;
        item.choices.push_back({windows[w], b});
        item.costs.push_back(
            getSegmentBytes(candidates[windows[w]], tokens[kWindow],
                            geometry.headDim) +
            getSegmentBytes(candidates[b], tokens[kBody], geometry.headDim));
        item.perMass.push_back(
            {perMassOf(kWindow, windowErrors[w]), perMassOf(kBody, demoted)});
      }
    if (item.choices.empty())
      return Status::failure(
          std::string("no allowed pair of formats can store the window and "
                      "body") +
          what);
    items.push_back(std::move(item));
  }
  return Status::success();
}

/// The knapsack of `items` for a "free" error level lambda: since every
/// query's class masses sum to one, sum_c a_c x_c <= lambda + sum_c A_c
/// (x_c - lambda)^+ (LP duality), and splitting lambda evenly between K and
/// V keeps the items separable. lambda = 0 is the plain §4 sum.
static Status buildProblem(const std::vector<ItemOptions> &items,
                           double lambda, an::AllocationProblem &problem) {
  for (const ItemOptions &item : items) {
    std::vector<double> errors;
    for (const std::vector<double> &perMass : item.perMass) {
      double error = 0.0;
      for (size_t s = 0; s < perMass.size(); ++s)
        error += item.masses[s] * std::max(perMass[s] - lambda / 2, 0.0);
      errors.push_back(error);
    }
    if (Status status = problem.addItem(item.costs, errors); status.failed())
      return status;
  }
  return Status::success();
}

/// Lowers the bytes of one head's formats while its joint certificate stays
/// within `tolerance`: the knapsack above works on coordinate-wise item
/// errors, which the joint certificate (the worst sampled query) never
/// exceeds, so its plan is feasible but may be larger than needed. Each
/// step applies the single (K/V, class) format change that saves the most
/// bytes and keeps the certificate within the tolerance, until none does.
static Status descendOnJointCertificate(const HeadEnvelope &envelope,
                                        const AllocationRequest &request,
                                        double tolerance,
                                        HeadFormats &formats) {
  const Geometry &geometry = request.geometry;
  int64_t tokens[kNumSegments] = {geometry.getSinkTokens(),
                                  geometry.getWindowTokens(),
                                  geometry.getBodyTokens()};
  int64_t extent[kNumSegments] = {tokens[kSink], geometry.block,
                                  geometry.block};
  for (;;) {
    double bestSaving = 0.0;
    HeadFormats best = formats;
    for (int kv = 0; kv < 2; ++kv) {
      const std::vector<StorageFormat> &candidates =
          kv == 0 ? request.keyCandidates : request.valueCandidates;
      for (int segment = 0; segment < kNumSegments; ++segment) {
        if (tokens[segment] == 0)
          continue;
        double current = getSegmentBytes(formats[kv][segment], tokens[segment],
                                         geometry.headDim);
        for (const StorageFormat &candidate : candidates) {
          double saving = current - getSegmentBytes(candidate, tokens[segment],
                                                    geometry.headDim);
          if (saving <= bestSaving ||
              !fitsSegment(candidate, extent[segment], geometry.headDim))
            continue;
          HeadFormats trial = formats;
          trial[kv][segment] = candidate;
          an::StaticCertifiedBound bound;
          if (certifyHead(envelope, trial, geometry, request.options, bound)
                  .failed() ||
              !(bound.infNorm <= tolerance))
            continue;
          bestSaving = saving;
          best = trial;
        }
      }
    }
    if (bestSaving <= 0.0)
      return Status::success();
    formats = best;
  }
}

Status certify::allocatePlan(const CalibrationStats &stats,
                             const AllocationRequest &request,
                             AllocationOutcome &outcome) {
  const Geometry &geometry = request.geometry;
  if (std::string problem = checkCoverage(stats, geometry, request.options);
      !problem.empty())
    return Status::failure(problem);
  if (request.tolerances.size() != 1 &&
      request.tolerances.size() != size_t(geometry.layers))
    return Status::failure("expected 1 or " + std::to_string(geometry.layers) +
                           " tolerances, got " +
                           std::to_string(request.tolerances.size()));
  int64_t heads = geometry.layers * geometry.heads;
  outcome = AllocationOutcome();
  outcome.formats.resize(heads);
  outcome.bounds.assign(heads, 0.0);

  std::vector<HeadEnvelope> envelopes;
  envelopes.reserve(heads);
  for (int64_t l = 0; l < geometry.layers; ++l)
    for (int64_t h = 0; h < geometry.heads; ++h)
      envelopes.push_back(
          buildHeadEnvelope(stats, geometry, l, h, request.options));

  auto describeHead = [&](int64_t flat) {
    return "layer " + std::to_string(flat / geometry.heads) + ", KV head " +
           std::to_string(flat % geometry.heads);
  };
  auto apply = [&](const std::vector<ItemOptions> &items,
                   const an::AllocationResult &result, size_t firstItem) {
    for (size_t i = 0; i < items.size(); ++i) {
      const ItemOptions &item = items[i];
      const std::vector<StorageFormat> &candidates =
          item.kv == 0 ? request.keyCandidates : request.valueCandidates;
      const std::vector<int> &choice = item.choices[result.choice[firstItem + i]];
      for (size_t s = 0; s < item.segments.size(); ++s)
        outcome.formats[item.head][item.kv][item.segments[s]] =
            candidates[choice[s]];
    }
  };
  // Segments a geometry does not have still need a format in the plan; give
  // them the first candidate.
  for (HeadFormats &formats : outcome.formats)
    for (int kv = 0; kv < 2; ++kv)
      for (int s = 0; s < kNumSegments; ++s)
        formats[kv][s] = kv == 0 ? request.keyCandidates.front()
                                 : request.valueCandidates.front();

  if (request.budgetBytes > 0) {
    an::AllocationProblem problem;
    std::vector<ItemOptions> items;
    for (int64_t flat = 0; flat < heads; ++flat)
      if (Status status = addHeadItems(envelopes[flat], request, flat, items);
          status.failed())
        return Status::failure(describeHead(flat) + ": " +
                               status.getMessage());
    if (Status status = buildProblem(items, 0.0, problem); status.failed())
      return status;
    an::AllocationResult result =
        an::minimizeErrorForCost(problem, request.budgetBytes);
    if (!result.ok())
      return Status::failure(result.message);
    apply(items, result, 0);
    outcome.numItems = items.size();
    outcome.lowerBoundBytes = result.totalCost;
  } else {
    for (int64_t flat = 0; flat < heads; ++flat) {
      std::vector<ItemOptions> items;
      if (Status status = addHeadItems(envelopes[flat], request, flat, items);
          status.failed())
        return Status::failure(describeHead(flat) + ": " +
                               status.getMessage());
      double tolerance = request.tolerances.size() == 1
                             ? request.tolerances[0]
                             : request.tolerances[flat / geometry.heads];
      // The kernel's accumulation error is added to every plan's bound;
      // reserve it with the largest value error any candidate can have
      // (|V^| <= 2 max |V|).
      std::vector<double> reserveDelta = envelopes[flat].valueMagnitude;
      double reserve = 0.0;
      for (double r : getKernelAccumulationError(
               envelopes[flat], geometry, request.options, reserveDelta))
        reserve = std::max(reserve, r);
      if (!(tolerance > reserve))
        return Status::failure(
            describeHead(flat) + ": tolerance " + formatNumber(tolerance) +
            " is below the kernel's own rounding error " +
            formatNumber(reserve));
      double decoupled = an::computeDecoupledTolerance(
          tolerance - reserve, request.options.logitErrorCap);
      // Try a few free error levels and keep the cheapest feasible plan.
      an::AllocationResult best;
      std::string lastMessage;
      for (double theta : {0.0, 0.25, 0.5, 0.75, 0.9, 0.97}) {
        an::AllocationProblem problem;
        if (Status status = buildProblem(items, theta * decoupled, problem);
            status.failed())
          return status;
        // One head's problem is small: solve it exactly, and fall back to
        // the greedy (within one upgrade of the optimum) if it is not.
        an::AllocationResult result =
            an::minimizeCostForErrorExact(problem, (1 - theta) * decoupled);
        if (result.status == an::AllocationStatus::InvalidInput)
          result = an::minimizeCostForError(problem, (1 - theta) * decoupled);
        if (!result.ok()) {
          lastMessage = result.message;
          continue;
        }
        if (!best.ok() || result.totalCost < best.totalCost)
          best = std::move(result);
      }
      if (!best.ok())
        return Status::failure(describeHead(flat) + ": tolerance " +
                               formatNumber(tolerance) +
                               " cannot be met by the allowed formats (" +
                               lastMessage + ")");
      apply(items, best, 0);
      outcome.numItems += items.size();
      outcome.lowerBoundBytes += best.lowerBound;
      if (!envelopes[flat].samples.empty())
        if (Status status = descendOnJointCertificate(
                envelopes[flat], request, tolerance, outcome.formats[flat]);
            status.failed())
          return status;
    }
  }

  for (int64_t flat = 0; flat < heads; ++flat) {
    an::StaticCertifiedBound bound;
    if (Status status = certifyHead(envelopes[flat], outcome.formats[flat],
                                    geometry, request.options, bound);
        status.failed())
      return Status::failure(describeHead(flat) + ": " + status.getMessage());
    outcome.bounds[flat] = bound.infNorm;
    const HeadFormats &f = outcome.formats[flat];
    for (int kv = 0; kv < 2; ++kv)
      outcome.totalBytes +=
          getSegmentBytes(f[kv][kSink], geometry.getSinkTokens(),
                          geometry.headDim) +
          getSegmentBytes(f[kv][kWindow], geometry.getWindowTokens(),
                          geometry.headDim) +
          getSegmentBytes(f[kv][kBody], geometry.getBodyTokens(),
                          geometry.headDim);
  }
  return Status::success();
}

Status certify::refineBodyBlocks(const CalibrationStats &stats,
                                 const Geometry &geometry, int64_t layer,
                                 int64_t head, int kv,
                                 const HeadEnvelope &envelope,
                                 const StorageFormat &windowFormat,
                                 const StorageFormat &bodyFormat,
                                 const std::vector<StorageFormat> &candidates,
                                 const CertifyOptions &options,
                                 std::vector<int> &blockFormats) {
  SegmentError reference;
  if (Status status = evaluateDemotedBody(envelope, kv, windowFormat,
                                          bodyFormat, geometry, options,
                                          reference);
      status.failed())
    return status;
  // Candidates in increasing cost order (per element, with overhead).
  std::vector<int> order(candidates.size());
  for (size_t c = 0; c < candidates.size(); ++c)
    order[c] = static_cast<int>(c);
  std::sort(order.begin(), order.end(), [&](int a, int b) {
    return getSegmentBytes(candidates[a], geometry.block, geometry.headDim) <
           getSegmentBytes(candidates[b], geometry.block, geometry.headDim);
  });
  int fallback = -1;
  for (size_t c = 0; c < candidates.size(); ++c)
    if (candidates[c] == bodyFormat)
      fallback = static_cast<int>(c);
  if (fallback < 0)
    return Status::failure("the body format is not among the candidates");

  // A block's ranges are the class-wide ranges clipped to its calibrated
  // absmax, and every format's error grows with the ranges. So for each
  // cheaper candidate a binary search over the blocks' sorted bounds finds
  // the largest bound at which it is still dominated, and each block takes
  // the cheapest candidate whose threshold covers its bound: a few dozen
  // evaluations per (layer, head) instead of one per block and candidate.
  // (The plan is certified again afterwards, block by block.)
  int64_t blocks = geometry.getNumBodyBlocks();
  blockFormats.assign(blocks, fallback);
  size_t lh = stats.index(layer, head);
  const std::vector<float> &absMax =
      kv == 0 ? stats.kBlockAbsMax : stats.vBlockAbsMax;
  std::vector<double> bounds(blocks);
  for (int64_t b = 0; b < blocks; ++b) {
    int64_t begin = geometry.sink + b * geometry.block;
    int64_t end = std::min(begin + geometry.block, geometry.capacity);
    bounds[b] = blockAbsMax(stats, absMax, lh, begin, end);
  }
  std::vector<double> sorted(bounds);
  std::sort(sorted.begin(), sorted.end());
  sorted.erase(std::unique(sorted.begin(), sorted.end()), sorted.end());
  while (!sorted.empty() && std::isinf(sorted.back()))
    sorted.pop_back();

  HeadEnvelope local = envelope;
  const an::BlockStatistics &wide =
      kv == 0 ? envelope.keys[kBody] : envelope.values[kBody];
  an::BlockStatistics &narrow = kv == 0 ? local.keys[kBody] : local.values[kBody];
  auto dominatedAt = [&](int c, double bound) {
    clipInPlace(wide, bound, narrow);
    SegmentError error;
    if (evaluateDemotedBody(local, kv, windowFormat, candidates[c], geometry,
                            options, error)
            .failed())
      return false;
    // Dominated per channel (values) or in logit error (keys: at the
    // envelope and for every query sample of the joint certificate), so
    // every term of the certificate is no larger than with the body format.
    if (kv == 0) {
      if (!(error.logitError <= reference.logitError))
        return false;
      for (const QuerySample &q : envelope.samples)
        if (!(error.keyModel.evaluate(q.absQuery, q.logitEnvelope) <=
              reference.keyModel.evaluate(q.absQuery, q.logitEnvelope)))
          return false;
      return true;
    }
    for (size_t j = 0; j < error.valueErrorPerChannel.size(); ++j)
      if (error.valueErrorPerChannel[j] > reference.valueErrorPerChannel[j])
        return false;
    return true;
  };
  // thresholds[c]: number of sorted bounds at which candidate c works.
  std::vector<size_t> thresholds(candidates.size(), 0);
  double fallbackCost =
      getSegmentBytes(bodyFormat, geometry.block, geometry.headDim);
  for (int c : order) {
    if (c == fallback ||
        getSegmentBytes(candidates[c], geometry.block, geometry.headDim) >=
            fallbackCost ||
        !fitsSegment(candidates[c], geometry.block, geometry.headDim))
      continue;
    size_t lo = 0, hi = sorted.size(); // Works for sorted[0 .. lo).
    while (lo < hi) {
      size_t mid = (lo + hi) / 2;
      if (dominatedAt(c, sorted[mid]))
        lo = mid + 1;
      else
        hi = mid;
    }
    thresholds[c] = lo;
  }
  for (int64_t b = 0; b < blocks; ++b) {
    if (std::isinf(bounds[b]))
      continue; // Never observed: keep the class-wide format.
    size_t rank = std::lower_bound(sorted.begin(), sorted.end(), bounds[b]) -
                  sorted.begin();
    for (int c : order) {
      if (c == fallback)
        break;
      if (rank < thresholds[c]) {
        blockFormats[b] = c;
        break;
      }
    }
  }
  return Status::success();
}
