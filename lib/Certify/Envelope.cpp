//===- Envelope.cpp - what calibration says about a head --------------------===//
//
// Geometry of a plan's position classes, what a calibration covers
// (checkCoverage), and the envelope of one (layer, KV head): class masses,
// query and logit envelopes, K/V ranges, query samples, extrapolation.
//
//===----------------------------------------------------------------------===//

#include "kvprec/Certify/PlanCertifier.h"

#include "CertifyInternal.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <limits>

using namespace kvprec;
using namespace kvprec::certify;
using namespace kvprec::certify::detail;
namespace an = kvprec::analysis;
using calib::CalibrationStats;

std::string certify::checkGeometry(const CalibrationStats &stats,
                                   const Geometry &geometry) {
  const calib::CalibrationShape &shape = stats.shape;
  // The classes must fit the cache (sizes come from IR and files: compared
  // without forming sums that could wrap).
  if (geometry.block < 1 || geometry.block > geometry.capacity)
    return "the block of " + std::to_string(geometry.block) +
           " positions does not fit the cache's " +
           std::to_string(geometry.capacity);
  if (geometry.sink < 0 || geometry.window < 0 ||
      geometry.sink > geometry.capacity ||
      geometry.window > geometry.capacity - geometry.sink)
    return "a sink of " + std::to_string(geometry.sink) + " and a window of " +
           std::to_string(geometry.window) + " positions do not fit the "
           "cache's " + std::to_string(geometry.capacity);
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
  if (options.kernel.enabled) {
    // The kernel's rounding (error-bounds.md section 8) is a Higham bound
    // gamma_n = n u / (1 - n u); its weight and accumulation factors hold
    // only while gamma_n < 1, that is n u < 1/2 for the n terms an output
    // sums. Past that the model has no bound at all, not a large one.
    int64_t block = options.kernel.accumulateBlock > 0
                        ? options.kernel.accumulateBlock
                        : std::max<int64_t>(geometry.block, 1);
    double terms = double(std::min(block, geometry.capacity)) +
                   double(ceilDiv(geometry.capacity, block)) + 1;
    if (!(terms * 0x1p-24 < 0.5))
      return "the f32 kernel sums " + formatNumber(terms) +
             " terms per output over " + std::to_string(geometry.capacity) +
             " positions in blocks of " + std::to_string(block) +
             ", past what its rounding model bounds (n u < 1/2, n < 2^23); "
             "plan larger blocks or a shorter cache";
    if (!(double(options.kernel.expUlps) * 0x1p-24 < 0.5))
      return "exp_ulps " + std::to_string(options.kernel.expUlps) +
             " is past what the rounding model bounds (exp_ulps u < 1/2)";
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

/// The masses of a plan's classes from relative-class masses: `windowMass`
/// at distances [0, W_c), `body[j]` at [W_c + j B_c, W_c + (j+1) B_c) for
/// the `bodyCount` listed blocks, and `rest` beyond them. Each relative class
/// counts in every plan class whose distances it meets (the plan's window
/// holds whole blocks, at distances [0, window + block - 1); its body lies at
/// >= window), each capped at 1. Calibrated sink positions that a plan with a
/// shorter sink stores in its window or body add the sink's mass to both.
/// The coordinate-wise envelope passes the calibration's maxima (no rest),
/// a query sample its own mass bins.
static std::array<double, kNumSegments>
getPlanClassMasses(const calib::CalibrationShape &shape,
                   const Geometry &geometry, double sinkMass,
                   double windowMass, const float *body, int64_t bodyCount,
                   double rest) {
  auto over = [&](int64_t lo, int64_t hi) {
    double total = 0.0;
    if (lo < shape.window && hi > 0)
      total += windowMass;
    for (int64_t j = 0; j < bodyCount; ++j) {
      int64_t begin = shape.window + j * shape.block;
      if (begin < hi && begin + shape.block > lo)
        total += body[j];
    }
    if (hi > shape.window + bodyCount * shape.block)
      total += rest;
    return std::min(total, 1.0);
  };
  std::array<double, kNumSegments> mass;
  mass[kSink] = geometry.sink > 0 ? sinkMass : 0.0;
  mass[kWindow] = geometry.getWindowTokens() > 0
                      ? over(0, geometry.window + geometry.block - 1)
                      : 0.0;
  mass[kBody] = geometry.getBodyTokens() > 0
                    ? over(geometry.window, geometry.capacity)
                    : 0.0;
  if (geometry.sink < shape.sink)
    for (int segment : {kWindow, kBody})
      if (mass[segment] > 0.0)
        mass[segment] = std::min(1.0, mass[segment] + sinkMass);
  return mass;
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

double detail::blockAbsMax(const CalibrationStats &stats,
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
  envelope.maxWeight =
      envelope.extrapolated ? 1.0 : std::min(1.0, double(stats.attnMaxWeight[lh]));
  if (options.certificate == CertificateKind::Probabilistic)
    envelope.levels = getConcentrationLevels(
        options.failureProbability, geometry.layers * stats.shape.qHeads,
        geometry.capacity, d);

  // (C1) masses: the calibration's class maxima.
  int64_t bodyBlocks = stats.shape.getNumBodyBlocks();
  envelope.mass = getPlanClassMasses(
      stats.shape, geometry, stats.attnSinkMass[lh], stats.attnWindowMass[lh],
      stats.attnBodyMass.data() + lh * bodyBlocks, bodyBlocks, 0.0);

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
    for (int64_t i = 0; i < stats.querySampleCount[lh]; ++i) {
      size_t sample = lh * shape.querySamples + i;
      const float *mass = stats.querySampleMass.data() + sample * bins;
      const float *squares = stats.querySampleSqMass.data() + sample * bins;
      QuerySample q;
      q.mass = getPlanClassMasses(shape, geometry, mass[0], mass[1], mass + 2,
                                  bins - 3, mass[bins - 1]);
      // The bins' squares add up over a class like their masses, and
      // sum_{t in c} a_t^2 <= (sum_{t in c} a_t)^2.
      q.squares = getPlanClassMasses(shape, geometry, squares[0], squares[1],
                                     squares + 2, bins - 3, squares[bins - 1]);
      for (int c = 0; c < kNumSegments; ++c)
        q.squares[c] = std::min(q.squares[c], q.mass[c] * q.mass[c]);
      for (int64_t j = 0; j < d; ++j)
        q.absQuery.push_back(stats.querySampleAbsQ[sample * d + j] * scale);
      q.logitEnvelope = double(stats.querySampleLogit[sample]) * scale;
      envelope.samples.push_back(std::move(q));
    }
  }
  return envelope;
}

bool detail::clipInPlace(const an::BlockStatistics &wide, double bound,
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
