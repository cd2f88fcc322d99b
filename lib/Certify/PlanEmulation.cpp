//===- PlanEmulation.cpp - a KV cache stored exactly as a plan says -------===//

#include "kvprec/Certify/PlanEmulation.h"

#include <algorithm>
#include <cmath>
#include <string>

using namespace kvprec;
using namespace kvprec::certify;
namespace an = kvprec::analysis;

EmulatedStream::EmulatedStream(const certify::Plan &plan, int64_t item,
                               const an::DequantizerConfig &dequantizer)
    : plan(plan), item(item), dequantizer(dequantizer),
      headDim(plan.geometry.headDim), exact(0, plan.geometry.headDim),
      stored(0, plan.geometry.headDim), errorBounds(0, plan.geometry.headDim) {
  blockSegment.assign(plan.geometry.getNumBodyBlocks(), -1);
}

int64_t EmulatedStream::getUnitBegin(int64_t position) const {
  const certify::Geometry &g = plan.geometry;
  if (position < g.sink)
    return 0;
  return g.sink + (position - g.sink) / g.block * g.block;
}

an::Status EmulatedStream::store(int64_t begin, int64_t end,
                                 const an::StorageFormat &format) {
  an::Matrix input(end - begin, headDim);
  for (int64_t t = begin; t < end; ++t)
    for (int64_t j = 0; j < headDim; ++j)
      input(t - begin, j) = source[t * headDim + j];
  an::QuantizedMatrix quantized;
  if (an::Status status =
          an::quantizeMatrix(format, input, dequantizer, quantized);
      status.failed())
    return an::Status::failure(
        "positions " + std::to_string(begin) + ".." + std::to_string(end - 1) +
        " in " + an::getFormatName(format) + ": " + status.getMessage());
  const int64_t rows = end - begin;
  for (int64_t t = begin; t < end; ++t) {
    rowFormat[t] = &format;
    for (int64_t j = 0; j < headDim; ++j) {
      an::GroupScale scale;
      if (an::isScaled(format)) {
        size_t group = format.granularity == an::Granularity::TokenGroup
                           ? size_t((t - begin) * (headDim / format.groupSize) +
                                    j / format.groupSize)
                           : size_t(j * ((rows + format.groupSize - 1) /
                                         format.groupSize) +
                                    (t - begin) / format.groupSize);
        scale = quantized.scales[group];
      }
      scales[t * headDim + j] = scale;
      codes[t * headDim + j] =
          an::quantizeElement(format, scale, source[t * headDim + j]);
    }
    for (int64_t j = 0; j < headDim; ++j) {
      double value = quantized.dequantized(t - begin, j);
      // The bound relative to the exact value: this quantization's bound
      // (relative to its source) plus the source's own bound.
      double bound =
          quantized.errorBounds(t - begin, j) + sourceBound[t * headDim + j];
      stored(t, j) = value;
      errorBounds(t, j) = bound;
      if (!(std::fabs(value - exact(t, j)) <= bound))
        ++boundViolations;
    }
  }
  return an::Status::success();
}

an::Status EmulatedStream::append(const float *values) {
  const certify::Geometry &g = plan.geometry;
  int64_t position = getLength();
  if (position >= g.capacity)
    return an::Status::failure("the cache is full (capacity " +
                               std::to_string(g.capacity) + ")");
  int64_t length = position + 1;
  for (an::Matrix *m : {&exact, &stored, &errorBounds}) {
    m->rows = length;
    m->values.resize(length * headDim, 0.0);
  }
  for (int64_t j = 0; j < headDim; ++j)
    exact(position, j) = values[j];
  source.insert(source.end(), values, values + headDim);
  sourceBound.resize(length * headDim, 0.0);
  rowFormat.push_back(nullptr);
  codes.resize(length * headDim, 0);
  scales.resize(length * headDim);

  // Blocks whose class changed at this length are re-quantized from what
  // they stored (a real demotion has nothing else). With window > 0 only a
  // complete block can leave the window.
  for (int64_t b = 0; b < static_cast<int64_t>(blockSegment.size()); ++b) {
    int64_t begin = g.sink + b * g.block;
    if (begin >= position) // Empty, or holds only the new position.
      break;
    int segment = plan.getSegmentAt(begin, length);
    if (segment == blockSegment[b])
      continue;
    int64_t end = std::min(begin + g.block, position);
    for (int64_t t = begin; t < end; ++t)
      for (int64_t j = 0; j < headDim; ++j) {
        source[t * headDim + j] = static_cast<float>(stored(t, j));
        sourceBound[t * headDim + j] = errorBounds(t, j);
      }
    if (an::Status status =
            store(begin, end, plan.getFormatAt(item, begin, length));
        status.failed())
      return status;
    blockSegment[b] = segment;
    ++demotions;
  }

  // The new position, in the format of its class. Token-group and unscaled
  // formats store each position on its own; channel groups span the unit's
  // positions, which are re-quantized together from their sources (all of
  // them in this class: a unit's class is uniform).
  const an::StorageFormat &format = plan.getFormatAt(item, position, length);
  int64_t begin = an::isScaled(format) &&
                          format.granularity == an::Granularity::ChannelGroup
                      ? getUnitBegin(position)
                      : position;
  if (an::Status status = store(begin, length, format); status.failed())
    return status;
  if (position >= g.sink)
    blockSegment[(position - g.sink) / g.block] =
        plan.getSegmentAt(position, length);

  // Every position must now be in the format of its current class.
  for (int64_t t = 0; t < length; ++t)
    if (rowFormat[t] != &plan.getFormatAt(item, t, length))
      return an::Status::failure(
          "internal error: position " + std::to_string(t) + " is stored in " +
          (rowFormat[t] ? an::getFormatName(*rowFormat[t]) : "nothing") +
          " but the plan stores it in " +
          an::getFormatName(plan.getFormatAt(item, t, length)) + " at length " +
          std::to_string(length));
  return an::Status::success();
}

an::Matrix EmulatedStream::getBlockwiseErrorBounds() const {
  const certify::Geometry &g = plan.geometry;
  const int64_t length = getLength();
  an::Matrix bounds = errorBounds;
  for (int64_t begin = g.sink; begin < length; begin += g.block) {
    int64_t end = std::min(length, begin + g.block);
    double largest = 0;
    for (int64_t i = begin * headDim; i < end * headDim; ++i)
      largest = std::max(largest, sourceBound[i]);
    for (int64_t i = begin * headDim; i < end * headDim; ++i)
      bounds.values[i] += largest - sourceBound[i];
  }
  return bounds;
}
