//===- ReferenceCertifier.cpp - the certificate, position by position -----===//
//
// See ReferenceCertifier.h. Everything but the per-element error model is
// re-derived here from error-bounds.md and the plan's storage semantics
// (PlanEmulation.h), on purpose: kvprec-verify-plan must not inherit a
// mistake of the allocator's certifier.
//
//===----------------------------------------------------------------------===//

#include "kvprec/Certify/ReferenceCertifier.h"

#include "kvprec/Analysis/ErrorModel.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <tuple>

using namespace kvprec;
using namespace kvprec::certify;
namespace an = kvprec::analysis;
using calib::CalibrationStats;

namespace {
/// Unit roundoff of the f32 kernel the contract names.
constexpr double kUnitRoundoff = 0x1p-24;

double higham(double n) {
  double nu = n * kUnitRoundoff;
  return nu < 1 ? nu / (1 - nu) : INFINITY;
}

/// What determines a position's error terms.
struct PositionKey {
  int segment;
  /// Formats (indices into plan.formats) of K and V, and of the window the
  /// position was first stored in (-1 when it was stored once).
  int keyFormat, valueFormat, keyWindow, valueWindow;
  /// Absmax bounds that narrow the K and V ranges (+inf: none).
  double keyClip, valueClip;
  bool operator<(const PositionKey &o) const {
    return std::tie(segment, keyFormat, valueFormat, keyWindow, valueWindow,
                    keyClip, valueClip) <
           std::tie(o.segment, o.keyFormat, o.valueFormat, o.keyWindow,
                    o.valueWindow, o.keyClip, o.valueClip);
  }
};

/// The error terms of one distinct position.
struct PositionTerms {
  int segment;
  double logitError;               // E_t, kernel rounding included.
  std::vector<double> valueError;  // delta^V_{t,j}.
};

/// Everything about the head that does not depend on the position.
struct HeadData {
  int64_t d;
  double sqrtD;
  std::vector<double> queryBound; // Q_j scaled so (1/sqrt d) sum Q delta = E.
  double logitEnvelope;           // Lambda, scaled likewise.
  /// Channel ranges of positions that move past the calibrated length
  /// (widened when extrapolating), and as calibrated (the sink's positions
  /// are the first of every sequence, always observed).
  std::vector<an::ValueRange> keyRanges, valueRanges;
  std::vector<an::ValueRange> calibratedKeyRanges, calibratedValueRanges;
  std::vector<double> span;       // span_j(V).
  double mass[kNumSegments];
};
} // namespace

/// Masses of the calibration's relative classes (the window class at
/// distances [0, W_c), body block j at [W_c + j B_c, W_c + (j+1) B_c))
/// whose distances meet [lo, hi).
static double relativeMass(const CalibrationStats &stats, size_t lh,
                           int64_t lo, int64_t hi) {
  const calib::CalibrationShape &s = stats.shape;
  double mass = 0;
  if (s.window > 0 && lo < s.window && hi > 0)
    mass += stats.attnWindowMass[lh];
  int64_t blocks = s.getNumBodyBlocks();
  for (int64_t j = 0; j < blocks; ++j) {
    int64_t begin = s.window + j * s.block, end = begin + s.block;
    if (begin < hi && end > lo)
      mass += stats.attnBodyMass[lh * blocks + j];
  }
  return std::min(mass, 1.0);
}

/// The largest calibrated absmax over absolute positions [begin, end), or
/// +inf unless calibration observed every one of them.
static double observedAbsMax(const CalibrationStats &stats,
                             const std::vector<float> &absMax, size_t lh,
                             int64_t begin, int64_t end) {
  if (end > stats.shape.maxPositions || begin >= end)
    return INFINITY;
  int64_t blocks = stats.shape.getNumAbsoluteBlocks();
  double result = 0;
  for (int64_t a = begin / stats.shape.block;
       a <= (end - 1) / stats.shape.block; ++a)
    result = std::max<double>(result, absMax[lh * blocks + a]);
  return result;
}

/// `ranges` clipped to [-bound, bound] (a range wholly outside collapses to
/// its point nearest 0).
static an::BlockStatistics clip(const std::vector<an::ValueRange> &ranges,
                                double bound, unsigned tokens) {
  an::BlockStatistics result;
  result.numTokens = tokens;
  for (an::ValueRange r : ranges) {
    double lo = std::max(r.min, -bound), hi = std::min(r.max, bound);
    if (lo > hi)
      lo = hi = std::clamp(0.0, r.min, r.max);
    result.channelRanges.push_back({lo, hi});
  }
  return result;
}

/// E of keys stored in `format` over `keys` whose values are first off by
/// at most `prior` in logit terms (0 for a first quantization): the
/// channel-wise (1/sqrt d) sum_j Q_j delta_j, or for relative-error formats
/// slope (Lambda + prior) + (1/sqrt d) sum_j Q_j offset_j when smaller.
static an::Status keyLogitError(const HeadData &head,
                                const an::StorageFormat &format,
                                const an::BlockStatistics &keys,
                                const CertifyOptions &options,
                                const std::vector<double> *channelDelta,
                                double prior, double &result) {
  std::vector<double> delta;
  if (!channelDelta) {
    if (an::Status s = an::computeBlockChannelErrorBounds(
            format, keys, options.dequantizer, delta);
        s.failed())
      return s;
    channelDelta = &delta;
  }
  double channelwise = 0;
  for (int64_t j = 0; j < head.d; ++j)
    channelwise += head.queryBound[j] * (*channelDelta)[j];
  channelwise /= head.sqrtD;
  result = channelwise;
  double slope;
  std::vector<double> offsets;
  if (!an::isIntegerKind(format.kind) && std::isfinite(head.logitEnvelope) &&
      an::computeBlockAffineErrorBounds(format, keys, options.dequantizer,
                                        slope, offsets)
          .ok()) {
    double relative = slope * (head.logitEnvelope + prior);
    for (int64_t j = 0; j < head.d; ++j)
      relative += head.queryBound[j] * offsets[j] / head.sqrtD;
    result = std::min(result, relative);
  }
  return an::Status::success();
}

/// The terms of one position: its K and V quantized as the plan's storage
/// history says (once, or in the window format then re-quantized into the
/// body format from the window's values).
static an::Status positionTerms(const HeadData &head, const Plan &plan,
                                const PositionKey &key,
                                const CertifyOptions &options,
                                PositionTerms &terms) {
  const Geometry &g = plan.geometry;
  unsigned tokens = key.segment == kSink ? unsigned(g.sink) : unsigned(g.block);
  terms.segment = key.segment;
  for (int kv = 0; kv < 2; ++kv) {
    const an::StorageFormat &format =
        plan.formats[kv == 0 ? key.keyFormat : key.valueFormat];
    int window = kv == 0 ? key.keyWindow : key.valueWindow;
    bool sink = key.segment == kSink;
    an::BlockStatistics ranges =
        clip(kv == 0 ? (sink ? head.calibratedKeyRanges : head.keyRanges)
                     : (sink ? head.calibratedValueRanges : head.valueRanges),
             kv == 0 ? key.keyClip : key.valueClip, tokens);
    std::vector<double> delta, windowDelta;
    double windowLogit = 0;
    bool exact = false;
    if (window >= 0) {
      const an::StorageFormat &windowFormat = plan.formats[window];
      if (an::Status s = an::computeBlockChannelErrorBounds(
              windowFormat, ranges, options.dequantizer, windowDelta);
          s.failed())
        return s;
      if (kv == 0)
        if (an::Status s = keyLogitError(head, windowFormat, ranges, options,
                                         &windowDelta, 0.0, windowLogit);
            s.failed())
          return s;
      // Re-quantizing into f32, or into the same unscaled float, stores
      // the window's values exactly.
      exact = format.kind == an::StorageKind::F32 ||
              (!an::isScaled(windowFormat) && windowFormat == format);
      // The window's values lie within the ranges widened by its error.
      for (int64_t j = 0; j < head.d; ++j) {
        ranges.channelRanges[j].min -= windowDelta[j];
        ranges.channelRanges[j].max += windowDelta[j];
      }
    }
    if (exact)
      delta.assign(head.d, 0.0);
    else if (an::Status s = an::computeBlockChannelErrorBounds(
                 format, ranges, options.dequantizer, delta);
             s.failed())
      return s;
    if (window >= 0)
      for (int64_t j = 0; j < head.d; ++j)
        delta[j] += windowDelta[j];
    if (kv == 1) {
      terms.valueError = std::move(delta);
      continue;
    }
    double logit = 0;
    if (window < 0) {
      if (an::Status s = keyLogitError(head, format, ranges, options, &delta,
                                       0.0, logit);
          s.failed())
        return s;
    } else {
      // |x^_body - K| <= |x^_body - x^_window| + |x^_window - K|: the
      // channel-wise total, or the window's E plus the body's relative
      // error of the window's values (whose magnitudes exceed |K| by at most
      // the window's error).
      double channelwise = 0;
      for (int64_t j = 0; j < head.d; ++j)
        channelwise += head.queryBound[j] * delta[j];
      channelwise /= head.sqrtD;
      double relative = windowLogit;
      if (!exact) {
        double bodyRelative;
        std::vector<double> bodyDelta(head.d);
        for (int64_t j = 0; j < head.d; ++j)
          bodyDelta[j] = INFINITY; // Only the relative form is wanted.
        if (an::Status s = keyLogitError(head, format, ranges, options,
                                         &bodyDelta, windowLogit,
                                         bodyRelative);
            s.failed())
          return s;
        relative += bodyRelative;
      }
      logit = std::min(channelwise, relative);
    }
    // The kernel's rounding (error-bounds.md §8): the dot product and the
    // scaling, the max shift, then exp and one rescale as logit errors.
    if (options.kernel.enabled) {
      double magnitude =
          std::min(head.logitEnvelope, [&] {
            double sum = 0;
            for (int64_t j = 0; j < head.d; ++j)
              sum += head.queryBound[j] *
                     std::max(std::fabs(head.keyRanges[j].min),
                              std::fabs(head.keyRanges[j].max));
            return sum / head.sqrtD;
          }()) +
          logit;
      double gd = higham(double(head.d) + 2);
      double theta = double(options.kernel.expUlps) * kUnitRoundoff;
      logit += gd * magnitude + 2 * kUnitRoundoff * (1 + gd) * magnitude +
               2 * theta / (1 - theta);
    }
    terms.logitError = logit;
  }
  return an::Status::success();
}

/// max sum_t a_t x_t over a_t >= 0 with sum_t a_t = 1 and the mass of each
/// class at most its cap; max_t x_t when the caps cannot reach 1.
static double worstAttention(const std::vector<PositionTerms> &positions,
                             const double caps[kNumSegments],
                             const std::vector<double> &x) {
  std::vector<size_t> order(positions.size());
  for (size_t i = 0; i < order.size(); ++i)
    order[i] = i;
  std::sort(order.begin(), order.end(),
            [&](size_t a, size_t b) { return x[a] > x[b]; });
  double capTotal = 0;
  bool present[kNumSegments] = {false, false, false};
  for (const PositionTerms &p : positions)
    present[p.segment] = true;
  for (int c = 0; c < kNumSegments; ++c)
    if (present[c])
      capTotal += std::min(caps[c], 1.0);
  if (capTotal < 1.0)
    return order.empty() ? 0.0 : x[order.front()];
  double left[kNumSegments], remaining = 1.0, result = 0;
  for (int c = 0; c < kNumSegments; ++c)
    left[c] = std::min(caps[c], 1.0);
  for (size_t i : order) {
    double take = std::min(remaining, left[positions[i].segment]);
    result += take * x[i];
    left[positions[i].segment] -= take;
    remaining -= take;
    if (remaining <= 0)
      break;
  }
  return result;
}

Status certify::certifyHeadByPosition(const CalibrationStats &stats,
                                      const Plan &plan, int64_t layer,
                                      int64_t head, const CertifyOptions &options,
                                      double &bound) {
  const Geometry &g = plan.geometry;
  if (std::string problem = checkCoverage(stats, g, options); !problem.empty())
    return Status::failure(problem);
  size_t lh = stats.index(layer, head);
  HeadData data;
  data.d = g.headDim;
  data.sqrtD = std::sqrt(double(g.headDim));
  double scale =
      (options.softmaxScale > 0 ? options.softmaxScale : 1.0 / data.sqrtD) *
      data.sqrtD;
  bool extrapolated = g.capacity > stats.shape.maxPositions;
  double margin = extrapolated ? options.extrapolationMargin : 1.0;
  for (int64_t j = 0; j < data.d; ++j) {
    size_t c = lh * data.d + j;
    data.queryBound.push_back(stats.qAbsMax[c] * scale * margin);
    auto widen = [&](double lo, double hi) {
      if (!extrapolated)
        return an::ValueRange{lo, hi};
      double mid = (lo + hi) / 2, half = (hi - lo) / 2;
      double reach = std::max(std::fabs(lo), std::fabs(hi));
      half = std::max(half * margin, reach * margin - std::fabs(mid));
      return an::ValueRange{mid - half, mid + half};
    };
    data.calibratedKeyRanges.push_back({stats.kChanMin[c], stats.kChanMax[c]});
    data.calibratedValueRanges.push_back(
        {stats.vChanMin[c], stats.vChanMax[c]});
    data.keyRanges.push_back(widen(stats.kChanMin[c], stats.kChanMax[c]));
    data.valueRanges.push_back(widen(stats.vChanMin[c], stats.vChanMax[c]));
    data.span.push_back((double(stats.vChanMax[c]) - stats.vChanMin[c]) *
                        margin);
  }
  data.logitEnvelope = stats.qkLogitMax[lh] * scale * margin * margin;

  // (C1): the plan's window holds whole blocks, at distances [0, W + B - 1)
  // from the query; the body lies at distances >= W.
  int64_t windowTokens = std::min(g.window, g.capacity - g.sink);
  int64_t bodyTokens = g.capacity - g.sink - windowTokens;
  data.mass[kSink] = g.sink > 0 ? stats.attnSinkMass[lh] : 0.0;
  data.mass[kWindow] =
      windowTokens > 0 ? relativeMass(stats, lh, 0, g.window + g.block - 1)
                       : 0.0;
  data.mass[kBody] =
      bodyTokens > 0 ? relativeMass(stats, lh, g.window, g.capacity) : 0.0;
  // Calibrated sink positions that this plan keeps outside its sink.
  if (g.sink < stats.shape.sink)
    for (int c : {kWindow, kBody})
      if (data.mass[c] > 0)
        data.mass[c] = std::min(1.0, data.mass[c] + stats.attnSinkMass[lh]);
  if (extrapolated)
    for (int c = 0; c < kNumSegments; ++c)
      data.mass[c] = 1.0;

  // Every position of the full cache, with its storage history.
  double sinkKeyClip = observedAbsMax(stats, stats.kBlockAbsMax, lh, 0, g.sink);
  double sinkValueClip =
      observedAbsMax(stats, stats.vBlockAbsMax, lh, 0, g.sink);
  std::map<PositionKey, size_t> seen;
  std::vector<PositionTerms> positions;
  int64_t keyItem = plan.getItem(layer, head, 0),
          valueItem = plan.getItem(layer, head, 1);
  auto formatIndex = [&](const an::StorageFormat &format) {
    return int(&format - plan.formats.data());
  };
  for (int64_t t = 0; t < g.capacity; ++t) {
    PositionKey key;
    key.segment = plan.getSegmentAt(t, g.capacity);
    key.keyFormat = formatIndex(plan.getFormatAt(keyItem, t, g.capacity));
    key.valueFormat = formatIndex(plan.getFormatAt(valueItem, t, g.capacity));
    key.keyWindow = key.valueWindow = -1;
    key.keyClip = key.valueClip = INFINITY;
    if (key.segment == kSink) {
      key.keyClip = sinkKeyClip;
      key.valueClip = sinkValueClip;
    } else if (key.segment == kBody) {
      // Stored in the window format while recent, when the plan has one.
      if (windowTokens > 0) {
        key.keyWindow = formatIndex(plan.getWindow(keyItem));
        key.valueWindow = formatIndex(plan.getWindow(valueItem));
      }
      if (plan.perBlock) {
        int64_t begin = g.sink + (t - g.sink) / g.block * g.block;
        int64_t end = std::min(begin + g.block, g.capacity);
        key.keyClip =
            observedAbsMax(stats, stats.kBlockAbsMax, lh, begin, end);
        key.valueClip =
            observedAbsMax(stats, stats.vBlockAbsMax, lh, begin, end);
      }
    }
    if (seen.count(key))
      continue;
    PositionTerms terms;
    if (Status s = positionTerms(data, plan, key, options, terms); s.failed())
      return Status::failure("position " + std::to_string(t) + " (" +
                             getSegmentName(key.segment) +
                             "): " + s.getMessage());
    seen[key] = positions.size();
    positions.push_back(std::move(terms));
  }

  // The Theorem with the worst attention the envelopes allow.
  std::vector<double> x(positions.size());
  for (size_t i = 0; i < positions.size(); ++i)
    x[i] = positions[i].logitError;
  double growth = std::exp(worstAttention(positions, data.mass, x));
  // The kernel's accumulation error (error-bounds.md §8), blocked sums.
  double accumulation = 0;
  if (options.kernel.enabled) {
    int64_t b = options.kernel.accumulateBlock > 0
                    ? options.kernel.accumulateBlock
                    : std::max<int64_t>(g.block, 1);
    double n = double(std::min(b, g.capacity)) +
               double((g.capacity + b - 1) / b);
    double w = (1 + kUnitRoundoff) / (1 - higham(n)) - 1;
    accumulation = w + higham(n + 1) * (1 + w);
  }
  bound = 0;
  for (int64_t j = 0; j < data.d; ++j) {
    std::vector<double> value(positions.size()), key(positions.size()),
        both(positions.size());
    double largestDelta = 0;
    for (size_t i = 0; i < positions.size(); ++i) {
      double e = positions[i].logitError;
      value[i] = std::exp(e) * positions[i].valueError[j];
      key[i] = std::expm1(e) * data.span[j];
      both[i] = value[i] + key[i];
      largestDelta = std::max(largestDelta, positions[i].valueError[j]);
    }
    double valueTerm = std::min(
        growth * worstAttention(positions, data.mass, value), largestDelta);
    double keyTerm = growth * worstAttention(positions, data.mass, key);
    double joint = growth * worstAttention(positions, data.mass, both);
    double magnitude = std::max(std::fabs(data.valueRanges[j].min),
                                std::fabs(data.valueRanges[j].max)) +
                       largestDelta;
    bound = std::max(bound, std::min(joint, valueTerm + keyTerm) +
                                accumulation * magnitude);
  }
  return Status::success();
}
