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

/// max(a, b) that keeps a NaN: std::max drops one and would certify less.
double worstOf(double a, double b) {
  return std::isnan(a) ? a : std::isnan(b) || b > a ? b : a;
}

/// x * y for non-negative factors where a zero factor wins: e^E dV with
/// dV = 0 is an exact term, not inf * 0 = NaN.
double times(double x, double y) { return x == 0 || y == 0 ? 0.0 : x * y; }

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

namespace {
/// What a position's key logit error depends on besides the query.
struct KeyTerms {
  /// Per-channel bound on |K^ - K| (window and body added for a demotion).
  std::vector<double> delta;
  /// The stored format's relative form delta_j <= slope |x| + offset_j.
  bool relative = false;
  double slope = 0;
  std::vector<double> offset;
  /// A body position first stored in the window format.
  bool demoted = false, exact = false;
  std::vector<double> windowDelta;
  bool windowRelative = false;
  double windowSlope = 0;
  std::vector<double> windowOffset;
};

/// The error terms of one distinct position.
struct PositionTerms {
  int segment;
  std::vector<double> valueError;  // delta^V_{t,j}.
  KeyTerms keys;
};
} // namespace

static void relativeForm(const an::StorageFormat &format,
                         const an::BlockStatistics &keys,
                         const CertifyOptions &options, bool &relative,
                         double &slope, std::vector<double> &offset) {
  // (The error model has none for integer formats.)
  relative = an::computeBlockAffineErrorBounds(format, keys,
                                               options.dequantizer, slope,
                                               offset)
                 .ok();
}

/// E_t for a query with scaled |q_j| = `q` and logit envelope `lambda`: the
/// channel-wise (1/sqrt d) sum_j q_j delta_j, or through the relative form
/// slope (lambda + prior) + (1/sqrt d) sum_j q_j offset_j (prior: what the
/// stored value's magnitude may exceed |K| by, in logit terms), plus the
/// kernel's rounding. The probabilistic certificate caps the storage part
/// at `storageCap` (lambda_1 sigma_t) and wants the kernel's part in
/// `kernelPart`.
static double keyLogit(const HeadData &head, const KeyTerms &terms,
                       const std::vector<double> &q, double lambda,
                       const CertifyOptions &options,
                       double storageCap = INFINITY,
                       double *kernelPart = nullptr) {
  auto weighted = [&](const std::vector<double> &v) {
    double sum = 0;
    for (int64_t j = 0; j < head.d; ++j)
      sum += q[j] * v[j];
    return sum / head.sqrtD;
  };
  auto through = [&](bool valid, double slope, const std::vector<double> &o,
                     double prior) {
    return valid && std::isfinite(lambda)
               ? slope * (lambda + prior) + weighted(o)
               : INFINITY;
  };
  double logit = weighted(terms.delta);
  if (!terms.demoted) {
    logit = std::min(logit, through(terms.relative, terms.slope, terms.offset,
                                    0.0));
  } else {
    // |x^_body - K| <= |x^_body - x^_window| + |x^_window - K|: the window's
    // E plus the body's relative error of the window's values (whose
    // magnitudes exceed |K| by at most the window's error).
    double window =
        std::min(weighted(terms.windowDelta),
                 through(terms.windowRelative, terms.windowSlope,
                         terms.windowOffset, 0.0));
    double relative =
        terms.exact ? window
                    : window + through(terms.relative, terms.slope,
                                       terms.offset, window);
    logit = std::min(logit, relative);
  }
  logit = std::min(logit, storageCap);
  double storage = logit;
  // The kernel's rounding (error-bounds.md §8): the dot product and the
  // scaling, the max shift, then exp and one rescale as logit errors.
  if (options.kernel.enabled) {
    double reach = 0;
    for (int64_t j = 0; j < head.d; ++j)
      reach += q[j] * std::max(std::fabs(head.keyRanges[j].min),
                               std::fabs(head.keyRanges[j].max));
    double magnitude = std::min(lambda, reach / head.sqrtD) + logit;
    double gd = higham(double(head.d) + 2);
    double theta = double(options.kernel.expUlps) * kUnitRoundoff;
    logit += gd * magnitude + 2 * kUnitRoundoff * (1 + gd) * magnitude +
             2 * theta / (1 - theta);
  }
  if (kernelPart)
    *kernelPart = logit - storage;
  return logit;
}

/// sigma_t = ((1/d) sum_j q_j^2 (delta^K_{t,j})^2)^{1/2}: under (M) the
/// storage logit error is a sum of independent terms |q_j dK_j| / sqrt d <=
/// q_j delta_j / sqrt d, so Hoeffding bounds it by lambda sigma_t with
/// probability 1 - 2 exp(-lambda^2 / 2).
static double keyDeviation(const HeadData &head, const KeyTerms &terms,
                           const std::vector<double> &q) {
  double sum = 0;
  for (int64_t j = 0; j < head.d; ++j)
    sum += q[j] * terms.delta[j] * q[j] * terms.delta[j];
  return std::sqrt(sum) / head.sqrtD;
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
    KeyTerms k;
    std::vector<double> delta;
    if (window >= 0) {
      const an::StorageFormat &windowFormat = plan.formats[window];
      if (an::Status s = an::computeBlockChannelErrorBounds(
              windowFormat, ranges, options.dequantizer, k.windowDelta);
          s.failed())
        return s;
      k.demoted = true;
      relativeForm(windowFormat, ranges, options, k.windowRelative,
                   k.windowSlope, k.windowOffset);
      // Re-quantizing into f32, or into the same unscaled float, stores
      // the window's values exactly.
      k.exact = format.kind == an::StorageKind::F32 ||
                (!an::isScaled(windowFormat) && windowFormat == format);
      // The window's values lie within the ranges widened by its error.
      for (int64_t j = 0; j < head.d; ++j) {
        ranges.channelRanges[j].min -= k.windowDelta[j];
        ranges.channelRanges[j].max += k.windowDelta[j];
      }
    }
    if (k.exact)
      delta.assign(head.d, 0.0);
    else if (an::Status s = an::computeBlockChannelErrorBounds(
                 format, ranges, options.dequantizer, delta);
             s.failed())
      return s;
    if (!k.exact)
      relativeForm(format, ranges, options, k.relative, k.slope, k.offset);
    if (window >= 0)
      for (int64_t j = 0; j < head.d; ++j)
        delta[j] += k.windowDelta[j];
    if (kv == 1) {
      terms.valueError = std::move(delta);
      continue;
    }
    k.delta = std::move(delta);
    terms.keys = std::move(k);
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
    if (take > 0) // a class with no mass left adds nothing, even an inf
      result += take * x[i];
    left[positions[i].segment] -= take;
    remaining -= take;
    if (remaining <= 0)
      break;
  }
  return result;
}

static Status certifyByPosition(const CalibrationStats &stats,
                                const Plan &plan, int64_t layer, int64_t head,
                                const CertifyOptions &options, double &bound);

Status certify::certifyHeadByPosition(const CalibrationStats &stats,
                                      const Plan &plan, int64_t layer,
                                      int64_t head, const CertifyOptions &options,
                                      double &bound) {
  if (Status s = certifyByPosition(stats, plan, layer, head, options, bound);
      s.failed())
    return s;
  if (std::isnan(bound))
    return Status::failure("the position-by-position bound is not a number; "
                           "the calibration holds values the model cannot "
                           "bound");
  return Status::success();
}

static Status certifyByPosition(const CalibrationStats &stats,
                                const Plan &plan, int64_t layer, int64_t head,
                                const CertifyOptions &options, double &bound) {
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
  int64_t windowTokens = g.getWindowTokens(), bodyTokens = g.getBodyTokens();
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
  // A position's inputs are those of its whole run: the sink, a block of a
  // per-block body, the rest of a uniform body, or the window. The loop
  // evaluates the first position of each run and jumps to the next, so its
  // cost follows the number of runs, not the capacity.
  int64_t firstWindowBlock = g.getNumBodyBlocks();
  if (g.window > 0)
    firstWindowBlock =
        std::max<int64_t>(0, (g.capacity - g.window - g.sink) / g.block);
  for (int64_t t = 0, next = 0; t < g.capacity; t = next) {
    if (t < g.sink) {
      next = g.sink;
    } else {
      int64_t block = (t - g.sink) / g.block;
      bool uniformRun = !plan.perBlock || block >= firstWindowBlock;
      int64_t runEnd =
          uniformRun && block < firstWindowBlock ? firstWindowBlock
          : uniformRun                           ? g.getNumBodyBlocks()
                                                 : block + 1;
      next = std::min(g.capacity, g.sink + runEnd * g.block);
    }
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
    if (plan.getSegmentAt(next - 1, g.capacity) != key.segment)
      return Status::failure("internal error: positions " + std::to_string(t) +
                             " and " + std::to_string(next - 1) +
                             " are in different classes");
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

  // The kernel's accumulation error (error-bounds.md §8), blocked sums.
  double accumulation = 0;
  if (options.kernel.enabled) {
    int64_t b = options.kernel.accumulateBlock > 0
                    ? options.kernel.accumulateBlock
                    : std::max<int64_t>(g.block, 1);
    double n = double(std::min(b, g.capacity)) +
               double(g.capacity / b + (g.capacity % b != 0));
    double gn = higham(n);
    double w = gn < 1 ? (1 + kUnitRoundoff) / (1 - gn) - 1 : INFINITY;
    accumulation = w + higham(n + 1) * (1 + w);
  }
  // The probabilistic certificate (error-bounds.md §9): its concentration
  // levels for this step's heads and the cache's positions and channels.
  bool probabilistic = options.certificate == CertificateKind::Probabilistic;
  double headFailure = options.failureProbability /
                       (3.0 * double(g.layers) * double(stats.shape.qHeads));
  double logitLevel =
      std::sqrt(2 * std::log(2 * double(g.capacity) / headFailure));
  double channelLevel = std::sqrt(2 * std::log(2 * double(data.d) / headFailure));

  // The Theorem with the worst attention that `caps` allow, for logit
  // errors `logits` (one per distinct position). Probabilistic: `logits`
  // are the E~_t, on the event that every concentration inequality holds;
  // `deviation` and `kernelPart` the positions' sigma_t and kernel share,
  // and `squares` caps sum_t a_t^2 over each class.
  auto theorem = [&](const double caps[kNumSegments],
                     const std::vector<double> &logits,
                     const std::vector<double> *deviation = nullptr,
                     const std::vector<double> *kernelPart = nullptr,
                     const double *squares = nullptr) {
    double meanLogit = worstAttention(positions, caps, logits);
    double growth = std::exp(meanLogit);
    // Per class, the largest of a position's terms.
    auto classMax = [&](auto term) {
      std::vector<double> largest(kNumSegments, 0.0);
      for (size_t i = 0; i < positions.size(); ++i)
        largest[positions[i].segment] =
            std::max(largest[positions[i].segment], term(i));
      return largest;
    };
    double keySpread = 0, kernelShare = 0, remainderShare = 0;
    if (deviation) {
      std::vector<double> largest =
          classMax([&](size_t i) { return (*deviation)[i] * (*deviation)[i]; });
      for (int c = 0; c < kNumSegments; ++c)
        keySpread += times(squares[c], largest[c]);
      keySpread = times(channelLevel, std::sqrt(keySpread));
      kernelShare = worstAttention(positions, caps, *kernelPart);
      std::vector<double> remainder(positions.size());
      for (size_t i = 0; i < positions.size(); ++i)
        remainder[i] = std::expm1(logits[i]) - logits[i];
      remainderShare = worstAttention(positions, caps, remainder);
    }
    double result = 0;
    for (int64_t j = 0; j < data.d; ++j) {
      std::vector<double> value(positions.size()), key(positions.size()),
          both(positions.size());
      double largestDelta = 0;
      for (size_t i = 0; i < positions.size(); ++i) {
        double e = logits[i];
        value[i] = times(std::exp(e), positions[i].valueError[j]);
        key[i] = times(std::expm1(e), data.span[j]);
        both[i] = value[i] + key[i];
        largestDelta = std::max(largestDelta, positions[i].valueError[j]);
      }
      double valueTerm = std::min(
          times(growth, worstAttention(positions, caps, value)), largestDelta);
      double keyTerm = times(growth, worstAttention(positions, caps, key));
      double joint = times(growth, worstAttention(positions, caps, both));
      if (deviation) {
        // Key part e^{Ebar~} span_j (lambda_3 (sum_t a_t^2 sigma_t^2)^{1/2}
        // + sum_t a_t (kernel_t + e^{E~_t} - 1 - E~_t)); value part
        // lambda_2 (sum_t (a_t e^{E~_t + Ebar~} deltaV_t)^2)^{1/2}.
        keyTerm = std::min(keyTerm, times(times(growth, data.span[j]),
                                          keySpread + kernelShare +
                                              remainderShare));
        std::vector<double> grown = classMax([&](size_t i) {
          double x = times(std::exp(logits[i] + meanLogit),
                           positions[i].valueError[j]);
          return x * x;
        });
        double spread = 0;
        for (int c = 0; c < kNumSegments; ++c)
          spread += times(squares[c], grown[c]);
        valueTerm = std::min(valueTerm, times(channelLevel, std::sqrt(spread)));
      }
      double magnitude = std::max(std::fabs(data.valueRanges[j].min),
                                  std::fabs(data.valueRanges[j].max)) +
                         largestDelta;
      result = worstOf(result, std::min(joint, valueTerm + keyTerm) +
                                    times(accumulation, magnitude));
    }
    return result;
  };
  // The certificate of one query (or the envelope): |q| `q`, logit
  // envelope `lambda`, class caps on masses and squared weights.
  auto certifyQuery = [&](const std::vector<double> &q, double lambda,
                          const double caps[kNumSegments],
                          const double squares[kNumSegments]) {
    std::vector<double> logits(positions.size()), deviation(positions.size()),
        kernelPart(positions.size());
    for (size_t i = 0; i < positions.size(); ++i) {
      const KeyTerms &k = positions[i].keys;
      if (!probabilistic) {
        logits[i] = keyLogit(data, k, q, lambda, options);
        continue;
      }
      deviation[i] = keyDeviation(data, k, q);
      logits[i] = keyLogit(data, k, q, lambda, options,
                           logitLevel * deviation[i], &kernelPart[i]);
    }
    return probabilistic
               ? theorem(caps, logits, &deviation, &kernelPart, squares)
               : theorem(caps, logits);
  };

  const calib::CalibrationShape &shape = stats.shape;
  bool joint = options.jointEnvelope && !extrapolated &&
               shape.querySamples > 0 && stats.querySampleCount[lh] > 0;
  if (!joint) {
    // sum_{t in c} a_t^2 <= max_t a_t * mass_c, and <= mass_c^2.
    double maxWeight =
        extrapolated ? 1.0 : std::min(1.0, double(stats.attnMaxWeight[lh]));
    double squares[kNumSegments];
    for (int c = 0; c < kNumSegments; ++c) {
      double m = std::min(data.mass[c], 1.0);
      squares[c] = std::min(m * m, maxWeight * m);
    }
    bound = certifyQuery(data.queryBound, data.logitEnvelope, data.mass,
                         squares);
    return Status::success();
  }
  // The joint certificate (error-bounds.md §7): every sampled query with its
  // own class masses (re-derived from its mass bins), |q| and logit
  // envelope; the worst of them.
  int64_t bins = shape.getNumSampleMassBins();
  int64_t bodyBins = bins - 3;
  bound = 0;
  for (int64_t i = 0; i < stats.querySampleCount[lh]; ++i) {
    size_t sample = lh * shape.querySamples + i;
    // Relative classes of the sample meeting distances [lo, hi), from its
    // mass bins or its squared-weight bins.
    auto over = [&](const float *bin, int64_t lo, int64_t hi) {
      double m = 0;
      if (shape.window > 0 && lo < shape.window && hi > 0)
        m += bin[1];
      for (int64_t j = 0; j < bodyBins; ++j) {
        int64_t begin = shape.window + j * shape.block;
        if (begin < hi && begin + shape.block > lo)
          m += bin[2 + j];
      }
      if (hi > shape.window + bodyBins * shape.block)
        m += bin[bins - 1];
      return std::min(m, 1.0);
    };
    auto classCaps = [&](const float *bin, double caps[kNumSegments]) {
      caps[kSink] = g.sink > 0 ? bin[0] : 0.0;
      caps[kWindow] =
          windowTokens > 0 ? over(bin, 0, g.window + g.block - 1) : 0.0;
      caps[kBody] = bodyTokens > 0 ? over(bin, g.window, g.capacity) : 0.0;
      if (g.sink < shape.sink)
        for (int c : {kWindow, kBody})
          if (caps[c] > 0)
            caps[c] = std::min(1.0, caps[c] + bin[0]);
    };
    double caps[kNumSegments], squares[kNumSegments];
    classCaps(stats.querySampleMass.data() + sample * bins, caps);
    classCaps(stats.querySampleSqMass.data() + sample * bins, squares);
    for (int c = 0; c < kNumSegments; ++c)
      squares[c] = std::min(squares[c], caps[c] * caps[c]);
    std::vector<double> q(data.d);
    for (int64_t j = 0; j < data.d; ++j)
      q[j] = stats.querySampleAbsQ[sample * data.d + j] * scale;
    double lambda = stats.querySampleLogit[sample] * scale;
    bound = worstOf(bound, certifyQuery(q, lambda, caps, squares));
  }
  return Status::success();
}
