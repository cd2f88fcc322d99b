//===- ErrorModel.cpp - Per-element error bounds from statistics ----------===//

#include "kvprec/Analysis/ErrorModel.h"
#include "kvprec/Analysis/SoftFloat.h"

#include <algorithm>
#include <cassert>
#include <cmath>

using namespace kvprec::analysis;

double ValueRange::absMax() const {
  return std::max(std::fabs(min), std::fabs(max));
}

Status kvprec::analysis::buildGroupErrorModel(
    const StorageFormat &format, const ValueRange &groupRange,
    const DequantizerConfig &dequantizer, GroupErrorModel &result) {
  Status status = verifyDequantizerConfig(format, dequantizer);
  if (status.failed())
    return status;
  if (!std::isfinite(groupRange.min) || !std::isfinite(groupRange.max) ||
      groupRange.min > groupRange.max)
    return Status::failure(getFormatName(format) +
                           ": invalid or non-finite group range");
  result.format = format;
  result.dequantizer = dequantizer;
  result.groupRange = groupRange;
  result.scale = GroupScale();
  if (!isScaled(format)) {
    if (!std::isfinite(roundToFloatKind(format.kind, groupRange.absMax())))
      return Status::failure(getFormatName(format) + ": range magnitude " +
                             std::to_string(groupRange.absMax()) +
                             " overflows the format");
    return Status::success();
  }
  if (format.scheme == QuantScheme::Symmetric)
    return computeSymmetricScale(format, groupRange.absMax(), result.scale);
  return computeAsymmetricScale(format, groupRange.min, groupRange.max,
                                result.scale);
}

double GroupErrorModel::elementBound(const ValueRange &elementRange) const {
  assert(groupRange.contains(elementRange) && "element outside the group");
  const double m = elementRange.absMax();
  // Float formats (f32, f16, bf16, fp8): affine in the magnitude.
  double slope = 0.0, relativeOffset = 0.0;
  if (getAffineBound(slope, relativeOffset))
    return slope * m + relativeOffset;
  const double uq = kQuantizeUnitRoundoff;
  const double uP = getDequantizerUnitRoundoff(dequantizer);
  const double etaP = getDequantizerMinSubnormal(dequantizer);
  const double s = scale.scale;
  const double maxCode = getIntegerCodeRange(format.kind, format.scheme).second;
  if (format.scheme == QuantScheme::Symmetric) {
    // |k - x/s| <= 1/2 + 3 u_q |x/s|.
    double core = s / 2 + 3 * uq * m;
    return (core + uP * m + etaP / 2) / (1 - uP);
  }
  // |k - (x-z)/s| <= 1/2 + 4 u_q (x-z)/s, and k s <= (x - z) + that error.
  const double offset = elementRange.max - scale.zeroPoint;
  double core = s / 2 + 4 * uq * offset;
  double product = (1 + uP) * std::min(offset + core, maxCode * s) + etaP / 2;
  return (core + uP * (product + m) + etaP) / (1 - uP);
}

bool GroupErrorModel::getAffineBound(double &slope, double &offset) const {
  slope = offset = 0.0;
  if (format.kind == StorageKind::F32)
    return true;
  if (!isScaled(format)) {
    // u m (1 + u) + eta/2 (the (1 + u) because m bounds |x|, not |fl(x)|).
    const FloatFormatInfo &info = getFloatFormatInfo(format.kind);
    double u = info.unitRoundoff;
    slope = u * (1 + u);
    offset = info.minSubnormal / 2;
    return true;
  }
  if (!isFp8Kind(format.kind))
    return false;
  // |x/s - c| <= |y - x/s| + |c - y| with y = fl32(x/s):
  // 3 u_q |x/s| + u_8 |y| + eta_8/2 and |y| <= (1 + 3 u_q) |x/s|; then the
  // dequantize multiply adds u_P |x^| + eta_P/2, with |x^| <= |x| + delta.
  const double uq = kQuantizeUnitRoundoff;
  const double uP = getDequantizerUnitRoundoff(dequantizer);
  const double etaP = getDequantizerMinSubnormal(dequantizer);
  const FloatFormatInfo &info = getFloatFormatInfo(format.kind);
  slope = (info.unitRoundoff * (1 + 3 * uq) + 3 * uq + uP) / (1 - uP);
  offset = (scale.scale * info.minSubnormal / 2 + etaP / 2) / (1 - uP);
  return true;
}

/// Calls `visit(j, model, range)` for every channel j of `stats` with the
/// error model of the scale group that holds it and the channel's range.
template <typename Visit>
static Status forEachChannelModel(const StorageFormat &format,
                                  const BlockStatistics &stats,
                                  const DequantizerConfig &dequantizer,
                                  Visit &&visit) {
  const size_t numChannels = stats.channelRanges.size();
  GroupErrorModel model;
  if (!isScaled(format) || format.granularity == Granularity::ChannelGroup) {
    if (isScaled(format) &&
        (format.groupSize == 0 || stats.numTokens % format.groupSize != 0))
      return Status::failure(
          getFormatName(format) + ": a block of " +
          std::to_string(stats.numTokens) +
          " tokens does not consist of whole channel groups; pass statistics "
          "over the group-aligned token span");
    for (size_t j = 0; j < numChannels; ++j) {
      const ValueRange &range = stats.channelRanges[j];
      if (Status s = buildGroupErrorModel(format, range, dequantizer, model);
          s.failed())
        return s;
      visit(j, model, range);
    }
    return Status::success();
  }
  const size_t g = format.groupSize;
  if (g == 0 || numChannels % g != 0)
    return Status::failure(getFormatName(format) + ": group size " +
                           std::to_string(g) + " does not divide " +
                           std::to_string(numChannels) + " channels");
  for (size_t begin = 0; begin < numChannels; begin += g) {
    ValueRange hull = stats.channelRanges[begin];
    for (size_t j = begin + 1; j < begin + g; ++j) {
      hull.min = std::min(hull.min, stats.channelRanges[j].min);
      hull.max = std::max(hull.max, stats.channelRanges[j].max);
    }
    if (Status s = buildGroupErrorModel(format, hull, dequantizer, model);
        s.failed())
      return s;
    for (size_t j = begin; j < begin + g; ++j)
      visit(j, model, stats.channelRanges[j]);
  }
  return Status::success();
}

Status kvprec::analysis::computeBlockChannelErrorBounds(
    const StorageFormat &format, const BlockStatistics &stats,
    const DequantizerConfig &dequantizer,
    std::vector<double> &deltaPerChannel) {
  deltaPerChannel.assign(stats.channelRanges.size(), 0.0);
  return forEachChannelModel(
      format, stats, dequantizer,
      [&](size_t j, const GroupErrorModel &model, const ValueRange &range) {
        deltaPerChannel[j] = model.elementBound(range);
      });
}

Status kvprec::analysis::computeBlockAffineErrorBounds(
    const StorageFormat &format, const BlockStatistics &stats,
    const DequantizerConfig &dequantizer, double &slope,
    std::vector<double> &offsetPerChannel) {
  if (isIntegerKind(format.kind))
    return Status::failure(getFormatName(format) +
                           ": integer formats have no relative error bound");
  slope = 0.0;
  offsetPerChannel.assign(stats.channelRanges.size(), 0.0);
  return forEachChannelModel(
      format, stats, dequantizer,
      [&](size_t j, const GroupErrorModel &model, const ValueRange &) {
        double channelSlope = 0.0;
        model.getAffineBound(channelSlope, offsetPerChannel[j]);
        // The slope depends on the format alone.
        slope = channelSlope;
      });
}

double
kvprec::analysis::computeLogitErrorBound(const std::vector<double> &queryBound,
                                         const std::vector<double> &keyDelta) {
  assert(queryBound.size() == keyDelta.size() && "dimension mismatch");
  double sum = 0.0;
  for (size_t j = 0; j < keyDelta.size(); ++j)
    sum += std::fabs(queryBound[j]) * keyDelta[j];
  return keyDelta.empty() ? 0.0 : sum / std::sqrt(double(keyDelta.size()));
}

Status kvprec::analysis::computeValueBlockMaxError(
    const StorageFormat &format, const BlockStatistics &stats,
    const DequantizerConfig &dequantizer, double &maxDelta) {
  std::vector<double> delta;
  Status status =
      computeBlockChannelErrorBounds(format, stats, dequantizer, delta);
  if (status.failed())
    return status;
  maxDelta =
      delta.empty() ? 0.0 : *std::max_element(delta.begin(), delta.end());
  return Status::success();
}

Status kvprec::analysis::computeKeyBlockLogitError(
    const StorageFormat &format, const BlockStatistics &stats,
    const std::vector<double> &queryBound, const DequantizerConfig &dequantizer,
    double &logitError) {
  if (queryBound.size() != stats.channelRanges.size())
    return Status::failure("query bound has " +
                           std::to_string(queryBound.size()) +
                           " channels, the key block " +
                           std::to_string(stats.channelRanges.size()));
  std::vector<double> delta;
  Status status =
      computeBlockChannelErrorBounds(format, stats, dequantizer, delta);
  if (status.failed())
    return status;
  // Every position of the block shares the per-channel bound, so the max over
  // positions equals the bound itself.
  logitError = computeLogitErrorBound(queryBound, delta);
  return Status::success();
}
