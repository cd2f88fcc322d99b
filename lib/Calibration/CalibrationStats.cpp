//===- CalibrationStats.cpp - kvprec-calib-v1 statistics ------------------===//

#include "kvprec/Calibration/CalibrationStats.h"
#include "kvprec/Format/Plan.h"

#include "llvm/ADT/STLExtras.h"
#include "llvm/Support/Format.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/MathExtras.h"
#include "llvm/Support/raw_ostream.h"

#include <algorithm>
#include <cassert>
#include <cmath>
#include <iterator>

using namespace llvm;

namespace kvprec::calib {

using Kind = CalibrationTensorKind;
using Value = CalibrationValueKind;
using S = CalibrationStats;

ArrayRef<CalibrationTensorSpec> getCalibrationTensorSpecs() {
  // Where each schema tensor lives, in schema order.
  struct Members {
    std::vector<float> CalibrationStats::*f32;
    std::vector<int64_t> CalibrationStats::*i64;
  };
  static const Members members[] = {
      {&S::attnSinkMass, nullptr},       // attn_sink_mass
      {&S::attnWindowMass, nullptr},     // attn_window_mass
      {&S::attnBodyMass, nullptr},       // attn_body_mass
      {&S::attnSinkMassMean, nullptr},   // attn_sink_mass_mean
      {&S::attnWindowMassMean, nullptr}, // attn_window_mass_mean
      {&S::attnEntropyMean, nullptr},    // attn_entropy_mean
      {&S::attnMaxWeight, nullptr},      // attn_max_weight
      {&S::qAbsMax, nullptr},            // q_absmax
      {&S::qL1Max, nullptr},             // q_l1_max
      {&S::qkLogitMax, nullptr},         // qk_logit_max
      {&S::kChanMin, nullptr},           // k_chan_min
      {&S::kChanMax, nullptr},           // k_chan_max
      {&S::vChanMin, nullptr},           // v_chan_min
      {&S::vChanMax, nullptr},           // v_chan_max
      {&S::kBlockAbsMax, nullptr},       // k_block_absmax
      {&S::vBlockAbsMax, nullptr},       // v_block_absmax
      {&S::kBlockTokenRange, nullptr},   // k_block_token_range
      {&S::vBlockTokenRange, nullptr},   // v_block_token_range
      {&S::kBlockChanSpan, nullptr},     // k_block_chan_span
      {&S::vBlockChanSpan, nullptr},     // v_block_chan_span
      {nullptr, &S::queryCount},         // query_count
      {nullptr, &S::positionCount},      // position_count
      {nullptr, &S::querySampleCount},   // query_sample_count
      {&S::querySampleMass, nullptr},    // query_sample_mass
      {&S::querySampleSqMass, nullptr},  // query_sample_sqmass
      {&S::querySampleAbsQ, nullptr},    // query_sample_absq
      {&S::querySampleLogit, nullptr},   // query_sample_logit
  };
  static const std::vector<CalibrationTensorSpec> specs = [] {
    std::vector<CalibrationTensorSpec> result;
    ArrayRef<CalibrationTensorSchema> schema = getCalibrationSchema();
    assert(schema.size() == std::size(members) && "schema and members differ");
    for (size_t i = 0; i < schema.size(); ++i)
      result.push_back({schema[i].name,
                        schema[i].isCount ? DType::I64 : DType::F32,
                        schema[i].kind, schema[i].valueKind, members[i].f32,
                        members[i].i64, schema[i].description});
    return result;
  }();
  return specs;
}

void CalibrationStats::allocate() {
  for (const CalibrationTensorSpec &spec : getCalibrationTensorSpecs()) {
    size_t count = static_cast<size_t>(
        getNumElements(getTensorShape(shape, spec.kind)).value_or(0));
    if (spec.f32Member)
      (this->*spec.f32Member).assign(count, 0.0f);
    else
      (this->*spec.i64Member).assign(count, 0);
  }
}

static Error makeError(StringRef context, const Twine &message) {
  return createStringError(inconvertibleErrorCode(), context + ": " + message);
}

/// A value for a message: up to 7 significant digits, no trailing zeros.
static std::string num(double value) {
  std::string text;
  raw_string_ostream(text) << format("%.7g", value);
  return text;
}

/// "[l, h, j]" for a flat index into `shape`.
static std::string formatMultiIndex(ArrayRef<int64_t> shape, size_t flat) {
  SmallVector<int64_t, 3> index(shape.size());
  for (size_t d = shape.size(); d-- > 0;) {
    index[d] = static_cast<int64_t>(flat) % shape[d];
    flat /= shape[d];
  }
  return formatShape(index);
}

Error validateCalibrationShape(const CalibrationShape &shape,
                               StringRef context) {
  auto requireAtLeast = [&](StringRef key, int64_t value,
                            int64_t minimum) -> Error {
    if (value < minimum)
      return makeError(context, formatv("{0} is {1}, must be at least {2}", key,
                                        value, minimum)
                                    .str());
    return Error::success();
  };
  if (Error e = requireAtLeast("layers", shape.layers, 1))
    return e;
  if (Error e = requireAtLeast("kv_heads", shape.kvHeads, 1))
    return e;
  if (Error e = requireAtLeast("q_heads", shape.qHeads, 1))
    return e;
  if (Error e = requireAtLeast("head_dim", shape.headDim, 1))
    return e;
  if (Error e = requireAtLeast("sink", shape.sink, 0))
    return e;
  if (Error e = requireAtLeast("window", shape.window, 0))
    return e;
  if (Error e = requireAtLeast("block", shape.block, 1))
    return e;
  if (Error e = requireAtLeast("max_positions", shape.maxPositions, 1))
    return e;
  if (Error e = requireAtLeast("query_samples", shape.querySamples, 0))
    return e;
  if (shape.qHeads % shape.kvHeads != 0)
    return makeError(context,
                     formatv("q_heads {0} is not a multiple of kv_heads {1}",
                             shape.qHeads, shape.kvHeads)
                         .str());
  // The cache these statistics describe must be one kvprec can hold.
  if (!::kvprec::certify::withinLayerHeadLimit(shape.layers, shape.kvHeads))
    return makeError(context,
                     formatv("{0} layers x {1} KV heads: kvprec handles at most "
                             "{2} (layer, KV head) pairs",
                             shape.layers, shape.kvHeads,
                             ::kvprec::certify::kMaxLayerHeadPairs)
                         .str());
  // The tensors are allocated from the shape before any value is read, so
  // a corrupt header or absurd options must not ask for absurd memory: all
  // of them together hold at most 2^30 values (4 GiB), a hundred times the
  // statistics of an 80-layer, 8-KV-head model at 131072 positions. (A
  // limit per tensor of 2^34 let head_dim 10^9 through to run out of
  // memory.)
  constexpr int64_t kMaxTotalElements = int64_t(1) << 30;
  int64_t total = 0;
  for (const CalibrationTensorSpec &spec : getCalibrationTensorSpecs()) {
    std::optional<int64_t> count =
        getNumElements(getTensorShape(shape, spec.kind));
    if (!count || *count > kMaxTotalElements - total)
      return makeError(context, "tensor '" + spec.name + "' with shape " +
                                    getSymbolicShape(spec.kind) +
                                    " would take the statistics past 2^30 "
                                    "values (4 GiB)");
    total += *count;
  }
  return Error::success();
}

namespace {
/// Runs the per-tensor and cross-tensor value checks.
class StatsValidator {
public:
  StatsValidator(const CalibrationStats &stats, StringRef context)
      : stats(stats), context(context) {}

  Error run();

private:
  Error checkSizes();
  Error checkTensorValues(const CalibrationTensorSpec &spec);
  Error checkRanges();
  Error checkMeansAndEntropy();
  Error checkQueryNorms();
  Error checkLogitEnvelope();
  Error checkSamples();
  Error checkQuerySamples();
  Error checkBlocks(StringRef prefix, const std::vector<float> &chanMin,
                    const std::vector<float> &chanMax,
                    const std::vector<float> &absMax,
                    const std::vector<float> &tokenRange,
                    const std::vector<float> &chanSpan);

  Error elementError(StringRef tensor, CalibrationTensorKind kind, size_t flat,
                     const Twine &what) {
    return makeError(
        context, "tensor '" + tensor + "' element " + Twine(flat) + " " +
                     formatMultiIndex(getTensorShape(stats.shape, kind), flat) +
                     " " + what);
  }

  const CalibrationStats &stats;
  StringRef context;
};
} // namespace

/// Relative slack for checks between quantities computed in float.
static float slack(float reference) {
  return 1e-5f * std::fabs(reference) + 1e-6f;
}

double getChannelwiseLogitBound(const CalibrationStats &stats, size_t lh) {
  const int64_t headDim = stats.shape.headDim;
  double sum = 0.0;
  for (int64_t j = 0; j < headDim; ++j) {
    size_t c = lh * headDim + j;
    double keyBound =
        std::max(std::fabs(stats.kChanMin[c]), std::fabs(stats.kChanMax[c]));
    sum += static_cast<double>(stats.qAbsMax[c]) * keyBound;
  }
  return sum / std::sqrt(static_cast<double>(headDim));
}

Error StatsValidator::run() {
  if (Error e = validateCalibrationShape(stats.shape, context))
    return e;
  if (!(stats.softmaxScale > 0) || !std::isfinite(stats.softmaxScale))
    return makeError(context, "the softmax scale the statistics were measured "
                              "at must be positive and finite, got " +
                                  num(stats.softmaxScale));
  if (Error e = checkSizes())
    return e;
  if (!stats.layerKLSensitivity.empty()) {
    if (int64_t(stats.layerKLSensitivity.size()) != stats.shape.layers)
      return makeError(
          context, formatv("the layer sensitivities have {0} entries for "
                           "{1} layers",
                           stats.layerKLSensitivity.size(), stats.shape.layers)
                       .str());
    for (double s : stats.layerKLSensitivity)
      if (!(s >= 0) || !std::isfinite(s))
        return makeError(context, "a layer sensitivity is " + num(s) +
                                      "; they must be finite and "
                                      "non-negative");
    if (!(stats.sensitivityError > 0) || !std::isfinite(stats.sensitivityError))
      return makeError(context, "the sensitivity error must be positive");
  }
  for (const CalibrationTensorSpec &spec : getCalibrationTensorSpecs())
    if (Error e = checkTensorValues(spec))
      return e;
  if (Error e = checkRanges())
    return e;
  if (Error e = checkMeansAndEntropy())
    return e;
  if (Error e = checkQueryNorms())
    return e;
  if (Error e = checkLogitEnvelope())
    return e;
  if (Error e = checkSamples())
    return e;
  if (Error e = checkQuerySamples())
    return e;
  if (Error e =
          checkBlocks("k", stats.kChanMin, stats.kChanMax, stats.kBlockAbsMax,
                      stats.kBlockTokenRange, stats.kBlockChanSpan))
    return e;
  return checkBlocks("v", stats.vChanMin, stats.vChanMax, stats.vBlockAbsMax,
                     stats.vBlockTokenRange, stats.vBlockChanSpan);
}

Error StatsValidator::checkSizes() {
  for (const CalibrationTensorSpec &spec : getCalibrationTensorSpecs()) {
    SmallVector<int64_t, 3> shape = getTensorShape(stats.shape, spec.kind);
    size_t expected = static_cast<size_t>(*getNumElements(shape));
    size_t actual = spec.f32Member ? (stats.*spec.f32Member).size()
                                   : (stats.*spec.i64Member).size();
    if (actual != expected)
      return makeError(context, "tensor '" + spec.name + "' has " +
                                    Twine(actual) + " values, expected " +
                                    Twine(expected) + " for shape " +
                                    getSymbolicShape(spec.kind) + " = " +
                                    formatShape(shape));
  }
  return Error::success();
}

Error StatsValidator::checkTensorValues(const CalibrationTensorSpec &spec) {
  if (spec.i64Member) {
    const std::vector<int64_t> &values = stats.*spec.i64Member;
    for (size_t i = 0; i < values.size(); ++i)
      if (values[i] < 0)
        return elementError(spec.name, spec.kind, i,
                            "is negative (" + Twine(values[i]) + ")");
    return Error::success();
  }
  const std::vector<float> &values = stats.*spec.f32Member;
  for (size_t i = 0; i < values.size(); ++i) {
    float value = values[i];
    if (std::isnan(value))
      return elementError(spec.name, spec.kind, i, "is NaN");
    if (std::isinf(value))
      return elementError(spec.name, spec.kind, i, "is infinite");
    switch (spec.valueKind) {
    case Value::Mass:
      if (value < 0.0f || value > 1.0 + kMassTolerance)
        return elementError(
            spec.name, spec.kind, i,
            formatv("is {0}, outside the mass range [0, 1]", num(value)).str());
      break;
    case Value::NonNegative:
      if (value < 0.0f)
        return elementError(spec.name, spec.kind, i,
                            formatv("is negative ({0})", num(value)).str());
      break;
    case Value::ChannelMin:
    case Value::ChannelMax:
    case Value::Count:
      break;
    }
  }
  return Error::success();
}

Error StatsValidator::checkRanges() {
  auto check = [&](StringRef minName, const std::vector<float> &minValues,
                   StringRef maxName,
                   const std::vector<float> &maxValues) -> Error {
    for (size_t i = 0; i < minValues.size(); ++i)
      if (minValues[i] > maxValues[i])
        return elementError(
            minName, Kind::LayerHeadChannel, i,
            formatv("is {0}, greater than {1} = {2} (min > max)",
                    num(minValues[i]), maxName, num(maxValues[i]))
                .str());
    return Error::success();
  };
  if (Error e =
          check("k_chan_min", stats.kChanMin, "k_chan_max", stats.kChanMax))
    return e;
  return check("v_chan_min", stats.vChanMin, "v_chan_max", stats.vChanMax);
}

Error StatsValidator::checkMeansAndEntropy() {
  // Entropy of a distribution over at most P positions is at most ln P.
  float maxEntropy = std::log(static_cast<float>(stats.shape.maxPositions));
  for (size_t i = 0; i < stats.attnSinkMass.size(); ++i) {
    if (stats.attnSinkMassMean[i] > stats.attnSinkMass[i] + kMassTolerance)
      return elementError("attn_sink_mass_mean", Kind::LayerHead, i,
                          formatv("is {0}, above the max attn_sink_mass {1}",
                                  num(stats.attnSinkMassMean[i]),
                                  num(stats.attnSinkMass[i]))
                              .str());
    if (stats.attnWindowMassMean[i] > stats.attnWindowMass[i] + kMassTolerance)
      return elementError("attn_window_mass_mean", Kind::LayerHead, i,
                          formatv("is {0}, above the max attn_window_mass {1}",
                                  num(stats.attnWindowMassMean[i]),
                                  num(stats.attnWindowMass[i]))
                              .str());
    float meanSum = stats.attnSinkMassMean[i] + stats.attnWindowMassMean[i];
    if (meanSum > 1.0 + kMassTolerance)
      return elementError(
          "attn_window_mass_mean", Kind::LayerHead, i,
          formatv("plus attn_sink_mass_mean is {0}, above 1", num(meanSum))
              .str());
    if (stats.attnEntropyMean[i] > maxEntropy + slack(maxEntropy))
      return elementError("attn_entropy_mean", Kind::LayerHead, i,
                          formatv("is {0}, above ln(max_positions) = {1}",
                                  num(stats.attnEntropyMean[i]),
                                  num(maxEntropy))
                              .str());
  }
  return Error::success();
}

Error StatsValidator::checkQueryNorms() {
  // For every sample |q_j| <= ||q||_1 <= sum_j |q_j|, so the maxima obey
  // max_j Q_j <= q_l1_max <= sum_j Q_j.
  int64_t headDim = stats.shape.headDim;
  for (size_t i = 0; i < stats.qL1Max.size(); ++i) {
    double sum = 0.0;
    float largest = 0.0f;
    for (int64_t j = 0; j < headDim; ++j) {
      float value = stats.qAbsMax[i * headDim + j];
      sum += value;
      largest = std::max(largest, value);
    }
    float l1 = stats.qL1Max[i];
    if (l1 > sum + slack(sum))
      return elementError(
          "q_l1_max", Kind::LayerHead, i,
          formatv("is {0}, above the sum of q_absmax {1}", num(l1), num(sum))
              .str());
    if (l1 + slack(largest) < largest)
      return elementError("q_l1_max", Kind::LayerHead, i,
                          formatv("is {0}, below the largest q_absmax {1}",
                                  num(l1), num(largest))
                              .str());
  }
  return Error::success();
}

Error StatsValidator::checkLogitEnvelope() {
  for (size_t i = 0; i < stats.qkLogitMax.size(); ++i) {
    float bound = static_cast<float>(getChannelwiseLogitBound(stats, i));
    float value = stats.qkLogitMax[i];
    if (value > bound + slack(bound))
      return elementError(
          "qk_logit_max", Kind::LayerHead, i,
          formatv("is {0}, above (1/sqrt(head_dim)) * sum_j q_absmax_j * "
                  "max(|k_chan_min_j|, |k_chan_max_j|) = {1}",
                  num(value), num(bound))
              .str());
  }
  return Error::success();
}

Error StatsValidator::checkSamples() {
  // Statistics that cannot have come from attention over observed data are
  // refused rather than certified: a plan certified from them (for example
  // all-zero envelopes, which make every format look exact) says nothing.
  const CalibrationShape &shape = stats.shape;
  int64_t numBlocks = shape.getNumAbsoluteBlocks();
  // Positions 0 .. max_positions - 1 were observed, so the first and last
  // absolute blocks have samples, and at most one per prompt and position.
  if (stats.positionCount.front() <= 0 || stats.positionCount.back() <= 0)
    return elementError("position_count", Kind::AbsBlock,
                        stats.positionCount.front() <= 0 ? 0 : numBlocks - 1,
                        "is 0: no position of that block was observed, but "
                        "max_positions says it was");
  // Synthetic statistics describe one sequence.
  int64_t sequences = stats.synthetic ? 1 : stats.prompts;
  int64_t perBlock = std::min<int64_t>(shape.block, shape.maxPositions);
  for (int64_t a = 0; a < numBlocks; ++a) {
    int64_t limit;
    // (IR calibration ops do not carry the prompt count: 0 there.)
    if (sequences > 0 &&
        !llvm::MulOverflow<int64_t>(sequences, perBlock, limit) &&
        stats.positionCount[a] > limit)
      return elementError(
          "position_count", Kind::AbsBlock, a,
          formatv("is {0}, more than prompts ({1}) x block positions ({2})",
                  stats.positionCount[a], sequences, perBlock)
              .str());
  }
  int64_t group = shape.getQueryHeadsPerKVHead();
  int64_t totalPositions = 0;
  for (int64_t count : stats.positionCount)
    if (llvm::AddOverflow<int64_t>(totalPositions, count, totalPositions))
      return makeError(context, "tensor 'position_count' sums past 2^63");
  int64_t queryLimit = 0;
  bool limitOverflows =
      llvm::MulOverflow<int64_t>(totalPositions, group, queryLimit);
  float minWeight = 1.0f / static_cast<float>(shape.maxPositions);
  int64_t bodyBlocks = shape.getNumBodyBlocks();
  // Classes longer than the observed positions are legal (short prompts
  // leave the window unfilled), but then nothing can have been observed
  // beyond them: mass there means the file does not describe its geometry.
  int64_t sinkAndWindow = 0;
  bool bodyObserved =
      !llvm::AddOverflow<int64_t>(shape.sink, shape.window, sinkAndWindow) &&
      sinkAndWindow < shape.maxPositions;
  bool windowObserved = shape.sink < shape.maxPositions;
  for (size_t i = 0; i < stats.queryCount.size(); ++i) {
    if (!windowObserved && stats.attnWindowMass[i] != 0.0f)
      return elementError(
          "attn_window_mass", Kind::LayerHead, i,
          formatv("is {0}, but the sink of {1} positions covers all "
                  "max_positions = {2} observed positions",
                  num(stats.attnWindowMass[i]), shape.sink, shape.maxPositions)
              .str());
    for (int64_t j = 0; !bodyObserved && j < bodyBlocks; ++j)
      if (float mass = stats.attnBodyMass[i * bodyBlocks + j]; mass != 0.0f)
        return elementError(
            "attn_body_mass", Kind::LayerHeadBody, i * bodyBlocks + j,
            formatv("is {0}, but sink {1} + window {2} cover all "
                    "max_positions = {3} observed positions",
                    num(mass), shape.sink, shape.window, shape.maxPositions)
                .str());
    if (stats.queryCount[i] <= 0)
      return elementError("query_count", Kind::LayerHead, i,
                          "is 0: no query was observed for this head");
    if (!limitOverflows && stats.queryCount[i] > queryLimit)
      return elementError(
          "query_count", Kind::LayerHead, i,
          formatv("is {0}, more than the observed positions ({1}) x query "
                  "heads per KV head ({2})",
                  stats.queryCount[i], totalPositions, group)
              .str());
    // Every query's weights sum to 1 over the sink, window and body
    // blocks, so the maxima of the class masses sum to at least 1.
    double total = double(stats.attnSinkMass[i]) + stats.attnWindowMass[i];
    for (int64_t j = 0; j < bodyBlocks; ++j)
      total += stats.attnBodyMass[i * bodyBlocks + j];
    if (total < 1.0 - 1e-4)
      return elementError(
          "attn_sink_mass", Kind::LayerHead, i,
          formatv("plus attn_window_mass and attn_body_mass sum to {0}, "
                  "below 1: every query's attention sums to 1",
                  num(float(total)))
              .str());
    // Some weight of every query is at least 1 / (its length).
    if (stats.attnMaxWeight[i] + slack(minWeight) < minWeight)
      return elementError("attn_max_weight", Kind::LayerHead, i,
                          formatv("is {0}, below 1 / max_positions = {1}",
                                  num(stats.attnMaxWeight[i]), num(minWeight))
                              .str());
  }
  return Error::success();
}

Error StatsValidator::checkQuerySamples() {
  // Every kept sample is one of the queries the envelopes were taken over,
  // so it lies inside them, and its masses sum to 1; unused slots are 0.
  const CalibrationShape &shape = stats.shape;
  int64_t n = shape.querySamples, d = shape.headDim,
          bins = shape.getNumSampleMassBins(),
          bodyBlocks = shape.getNumBodyBlocks();
  for (size_t lh = 0; lh < stats.querySampleCount.size(); ++lh) {
    int64_t kept = stats.querySampleCount[lh];
    if (kept > std::min(n, stats.queryCount[lh]))
      return elementError(
          "query_sample_count", Kind::LayerHead, lh,
          formatv("is {0}, more than query_samples ({1}) or query_count ({2})",
                  kept, n, stats.queryCount[lh])
              .str());
    for (int64_t i = 0; i < n; ++i) {
      size_t sample = lh * n + i;
      const float *mass = stats.querySampleMass.data() + sample * bins;
      const float *squares = stats.querySampleSqMass.data() + sample * bins;
      const float *absQ = stats.querySampleAbsQ.data() + sample * d;
      float logit = stats.querySampleLogit[sample];
      if (i >= kept) {
        bool zero = logit == 0.0f;
        for (int64_t b = 0; b < bins; ++b)
          zero &= mass[b] == 0.0f && squares[b] == 0.0f;
        for (int64_t j = 0; j < d; ++j)
          zero &= absQ[j] == 0.0f;
        if (!zero)
          return elementError("query_sample_logit", Kind::LayerHeadSample,
                              sample,
                              "belongs to an unused sample slot but its "
                              "sample is not all zero");
        continue;
      }
      for (int64_t j = 0; j < d; ++j)
        if (absQ[j] >
            stats.qAbsMax[lh * d + j] + slack(stats.qAbsMax[lh * d + j]))
          return elementError(
              "query_sample_absq", Kind::LayerHeadSampleChannel, sample * d + j,
              formatv("is {0}, above q_absmax {1}", num(absQ[j]),
                      num(stats.qAbsMax[lh * d + j]))
                  .str());
      if (logit > stats.qkLogitMax[lh] + slack(stats.qkLogitMax[lh]))
        return elementError("query_sample_logit", Kind::LayerHeadSample, sample,
                            formatv("is {0}, above qk_logit_max {1}",
                                    num(logit), num(stats.qkLogitMax[lh]))
                                .str());
      // Each bin within its class's maximum (the rest bin within the sum of
      // the remaining blocks' maxima), and the bins sum to 1.
      double restMax = 0.0, total = 0.0;
      for (int64_t j = kSampleBodyBins; j < bodyBlocks; ++j)
        restMax += stats.attnBodyMass[lh * bodyBlocks + j];
      for (int64_t b = 0; b < bins; ++b) {
        double cap = b == 0   ? stats.attnSinkMass[lh]
                     : b == 1 ? stats.attnWindowMass[lh]
                     : b < bins - 1
                         ? stats.attnBodyMass[lh * bodyBlocks + (b - 2)]
                         : restMax;
        if (mass[b] > cap + 1e-5)
          return elementError("query_sample_mass", Kind::LayerHeadSampleMass,
                              sample * bins + b,
                              formatv("is {0}, above the class maximum {1}",
                                      num(mass[b]), num(cap))
                                  .str());
        // sum_t a_t^2 <= (sum_t a_t)^2 <= sum_t a_t over a bin.
        if (squares[b] > mass[b])
          return elementError("query_sample_sqmass", Kind::LayerHeadSampleMass,
                              sample * bins + b,
                              formatv("is {0}, above its bin's mass {1}",
                                      num(squares[b]), num(mass[b]))
                                  .str());
        total += mass[b];
      }
      if (total < 1.0 - 1e-4 || total > 1.0 + 1e-4)
        return elementError(
            "query_sample_mass", Kind::LayerHeadSampleMass, sample * bins,
            formatv("starts a sample whose masses sum to {0}, not 1",
                    num(float(total)))
                .str());
    }
  }
  return Error::success();
}

Error StatsValidator::checkBlocks(StringRef prefix,
                                  const std::vector<float> &chanMin,
                                  const std::vector<float> &chanMax,
                                  const std::vector<float> &absMax,
                                  const std::vector<float> &tokenRange,
                                  const std::vector<float> &chanSpan) {
  // A block's values lie inside the per-channel ranges, so its absmax is
  // bounded by the largest channel bound, its per-token range and per-channel
  // span by twice its absmax, and its span by the widest channel range.
  int64_t headDim = stats.shape.headDim;
  int64_t numBlocks = stats.shape.getNumAbsoluteBlocks();
  for (size_t lh = 0; lh < stats.attnSinkMass.size(); ++lh) {
    float channelBound = 0.0f, widestChannel = 0.0f;
    for (int64_t j = 0; j < headDim; ++j) {
      float lo = chanMin[lh * headDim + j], hi = chanMax[lh * headDim + j];
      channelBound = std::max({channelBound, std::fabs(lo), std::fabs(hi)});
      widestChannel = std::max(widestChannel, hi - lo);
    }
    for (int64_t a = 0; a < numBlocks; ++a) {
      size_t i = lh * numBlocks + a;
      if (absMax[i] > channelBound + slack(channelBound))
        return elementError(
            (prefix + "_block_absmax").str(), Kind::LayerHeadAbsBlock, i,
            formatv("is {0}, above the largest |{1}_chan_min|, |{1}_chan_max| "
                    "= {2}",
                    num(absMax[i]), prefix, num(channelBound))
                .str());
      float twiceAbsMax = 2.0f * absMax[i];
      if (tokenRange[i] > twiceAbsMax + slack(twiceAbsMax))
        return elementError((prefix + "_block_token_range").str(),
                            Kind::LayerHeadAbsBlock, i,
                            formatv("is {0}, above twice {1}_block_absmax {2}",
                                    num(tokenRange[i]), prefix, num(absMax[i]))
                                .str());
      if (chanSpan[i] > twiceAbsMax + slack(twiceAbsMax))
        return elementError((prefix + "_block_chan_span").str(),
                            Kind::LayerHeadAbsBlock, i,
                            formatv("is {0}, above twice {1}_block_absmax {2}",
                                    num(chanSpan[i]), prefix, num(absMax[i]))
                                .str());
      if (chanSpan[i] > widestChannel + slack(widestChannel))
        return elementError(
            (prefix + "_block_chan_span").str(), Kind::LayerHeadAbsBlock, i,
            formatv("is {0}, above the widest channel range {1}_chan_max - "
                    "{1}_chan_min = {2}",
                    num(chanSpan[i]), prefix, num(widestChannel))
                .str());
    }
  }
  return Error::success();
}

Error validateCalibrationStats(const CalibrationStats &stats,
                               StringRef context) {
  return StatsValidator(stats, context).run();
}

//===----------------------------------------------------------------------===//
// File I/O
//===----------------------------------------------------------------------===//

/// The integer metadata entries and where they live; `StatsT` is
/// CalibrationStats or const CalibrationStats, so one table serves the reader
/// and the writer.
template <typename StatsT> static auto getIntegerMetadata(StatsT &stats) {
  using Slot = decltype(&stats.prompts);
  struct Entry {
    StringLiteral key;
    Slot slot;
  };
  auto &shape = stats.shape;
  return SmallVector<Entry, 11>{{"layers", &shape.layers},
                                {"kv_heads", &shape.kvHeads},
                                {"q_heads", &shape.qHeads},
                                {"head_dim", &shape.headDim},
                                {"sink", &shape.sink},
                                {"window", &shape.window},
                                {"block", &shape.block},
                                {"max_positions", &shape.maxPositions},
                                {"query_samples", &shape.querySamples},
                                {"prompts", &stats.prompts},
                                {"steps", &stats.steps}};
}

Expected<CalibrationStats> readCalibrationStats(const SafeTensorsFile &file) {
  StringRef name = file.getName();
  if (!file.hasMetadata())
    return makeError(name, "missing \"__metadata__\" (a " + kCalibrationSchema +
                               " file needs schema, shape and provenance "
                               "metadata)");
  const std::map<std::string, std::string> &metadata = file.getMetadata();
  auto lookupKey = [&](StringRef key) -> const std::string * {
    auto it = metadata.find(key.str());
    return it == metadata.end() ? nullptr : &it->second;
  };

  const std::string *schema = lookupKey("schema");
  if (!schema)
    return makeError(name, "metadata has no \"schema\" entry (expected \"" +
                               kCalibrationSchema + "\")");
  if (*schema != kCalibrationSchema)
    return makeError(name, "schema mismatch: metadata \"schema\" is \"" +
                               *schema + "\", expected \"" +
                               kCalibrationSchema + "\"");

  CalibrationStats stats;
  for (const auto &entry : getIntegerMetadata(stats)) {
    const std::string *text = lookupKey(entry.key);
    if (!text)
      return makeError(name, "metadata has no \"" + entry.key + "\" entry");
    if (StringRef(*text).getAsInteger(10, *entry.slot))
      return makeError(name, "metadata \"" + entry.key + "\" is \"" + *text +
                                 "\", not an integer");
  }
  if (stats.prompts < 0 || stats.steps < 0)
    return makeError(name, "metadata \"prompts\" and \"steps\" must be "
                           "non-negative");
  const std::string *model = lookupKey("model");
  if (!model)
    return makeError(name, "metadata has no \"model\" entry");
  stats.model = *model;
  if (const std::string *dtype = lookupKey("model_dtype"))
    stats.modelDType = *dtype;
  const std::string *sensitivity = lookupKey("layer_kl_sensitivity");
  const std::string *sensitivityError = lookupKey("sensitivity_error");
  if (bool(sensitivity) != bool(sensitivityError))
    return makeError(name, "metadata \"layer_kl_sensitivity\" and "
                           "\"sensitivity_error\" come together");
  if (sensitivity) {
    SmallVector<StringRef> parts;
    StringRef(*sensitivity).split(parts, ',');
    for (StringRef part : parts) {
      double value;
      if (part.trim().getAsDouble(value) || !(value >= 0) ||
          !std::isfinite(value))
        return makeError(name, "metadata \"layer_kl_sensitivity\" entry \"" +
                                   part +
                                   "\" is not a finite, non-negative "
                                   "number");
      stats.layerKLSensitivity.push_back(value);
    }
    if (StringRef(*sensitivityError).getAsDouble(stats.sensitivityError) ||
        !(stats.sensitivityError > 0) || !std::isfinite(stats.sensitivityError))
      return makeError(name, "metadata \"sensitivity_error\" is \"" +
                                 *sensitivityError +
                                 "\", not a positive finite number");
  }
  const std::string *synthetic = lookupKey("synthetic");
  if (!synthetic)
    return makeError(name, "metadata has no \"synthetic\" entry");
  if (*synthetic != "true" && *synthetic != "false")
    return makeError(name, "metadata \"synthetic\" is \"" + *synthetic +
                               "\", expected \"true\" or \"false\"");
  stats.synthetic = *synthetic == "true";
  if (!stats.synthetic && stats.prompts == 0)
    return makeError(name, "metadata \"prompts\" is 0: measured statistics "
                           "come from at least one prompt");
  const std::string *scale = lookupKey("softmax_scale");
  if (!scale)
    return makeError(name, "metadata has no \"softmax_scale\" entry (the "
                           "softmax scale the attention masses were "
                           "measured at)");
  if (StringRef(*scale).getAsDouble(stats.softmaxScale) ||
      !(stats.softmaxScale > 0) || !std::isfinite(stats.softmaxScale))
    return makeError(name, "metadata \"softmax_scale\" is \"" + *scale +
                               "\", not a positive finite number");
  if (Error e = validateCalibrationShape(stats.shape, name))
    return std::move(e);

  const CalibrationShape &shape = stats.shape;
  std::string dims =
      formatv("layers={0}, kv_heads={1}, head_dim={2}, NB={3}, NA={4}",
              shape.layers, shape.kvHeads, shape.headDim,
              shape.getNumBodyBlocks(), shape.getNumAbsoluteBlocks())
          .str();
  for (const CalibrationTensorSpec &spec : getCalibrationTensorSpecs()) {
    const SafeTensorEntry *entry = file.lookup(spec.name);
    if (!entry)
      return makeError(name, "missing required tensor '" + spec.name + "'");
    if (entry->dtype != spec.dtype)
      return makeError(name, "tensor '" + spec.name + "' has dtype " +
                                 getDTypeName(entry->dtype) + ", schema " +
                                 kCalibrationSchema + " requires " +
                                 getDTypeName(spec.dtype));
    SmallVector<int64_t, 3> expected = getTensorShape(shape, spec.kind);
    if (ArrayRef<int64_t>(entry->shape) != ArrayRef<int64_t>(expected))
      return makeError(name, "tensor '" + spec.name + "' has shape " +
                                 formatShape(entry->shape) + ", expected " +
                                 getSymbolicShape(spec.kind) + " = " +
                                 formatShape(expected) + " (" + dims + ")");
    if (spec.f32Member)
      stats.*spec.f32Member = file.readF32(*entry);
    else
      stats.*spec.i64Member = file.readI64(*entry);
  }
  if (Error e = validateCalibrationStats(stats, name))
    return std::move(e);
  return stats;
}

Expected<CalibrationStats> readCalibrationFile(StringRef path) {
  Expected<SafeTensorsFile> file = SafeTensorsFile::open(path);
  if (!file)
    return file.takeError();
  return readCalibrationStats(*file);
}

void addCalibrationTensors(SafeTensorsWriter &writer,
                           const CalibrationStats &stats) {
  writer.setMetadata("schema", kCalibrationSchema);
  for (const auto &entry : getIntegerMetadata(stats))
    writer.setMetadata(entry.key, std::to_string(*entry.slot));
  writer.setMetadata("model", stats.model);
  if (!stats.modelDType.empty())
    writer.setMetadata("model_dtype", stats.modelDType);
  if (!stats.layerKLSensitivity.empty()) {
    std::string list;
    for (double s : stats.layerKLSensitivity)
      list += (list.empty() ? "" : ",") +
              formatv("{0}", llvm::format("%.17g", s)).str();
    writer.setMetadata("layer_kl_sensitivity", list);
    writer.setMetadata(
        "sensitivity_error",
        formatv("{0}", llvm::format("%.17g", stats.sensitivityError)).str());
  }
  writer.setMetadata("synthetic", stats.synthetic ? "true" : "false");
  writer.setMetadata(
      "softmax_scale",
      formatv("{0}", llvm::format("%.17g", stats.softmaxScale)).str());
  for (const CalibrationTensorSpec &spec : getCalibrationTensorSpecs()) {
    SmallVector<int64_t, 3> shape = getTensorShape(stats.shape, spec.kind);
    if (spec.f32Member)
      writer.addF32(spec.name, shape, stats.*spec.f32Member);
    else
      writer.addI64(spec.name, shape, stats.*spec.i64Member);
  }
}

Error writeCalibrationFile(const CalibrationStats &stats, StringRef path) {
  if (Error e = validateCalibrationStats(stats, path))
    return e;
  SafeTensorsWriter writer;
  addCalibrationTensors(writer, stats);
  return writer.write(path);
}

} // namespace kvprec::calib
