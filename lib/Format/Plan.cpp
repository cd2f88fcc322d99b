//===- Plan.cpp - a precision plan as plain data --------------------------===//

#include "kvprec/Format/Plan.h"

#include <algorithm>

using namespace kvprec;
using namespace kvprec::certify;
namespace an = kvprec::analysis;

/// ceil(a / b) for a >= 0, b > 0, without the overflow of (a + b - 1) / b.
static int64_t ceilDiv(int64_t a, int64_t b) { return a / b + (a % b != 0); }

int64_t Geometry::getNumBodyBlocks() const {
  return block > 0 ? ceilDiv(std::max<int64_t>(capacity - sink, 0), block) : 0;
}

int64_t Geometry::getWindowTokens() const {
  if (window == 0)
    return 0;
  // Whole blocks overlapping the newest `window` positions (getSegmentAt):
  // `window` is a multiple of `block`, so in a full cache that is `window`
  // positions plus the partial last block, up to window + block - 1, or all
  // of the body if it is shorter. The body keeps the blocks that end at or
  // before capacity - window.
  int64_t stored = std::max<int64_t>(capacity - sink, 0);
  int64_t bodyBlocks =
      block > 0 ? std::max<int64_t>(capacity - window - sink, 0) / block : 0;
  return stored - std::min(stored, bodyBlocks * block);
}

int64_t Geometry::getBodyTokens() const {
  return std::max<int64_t>(capacity - sink, 0) - getWindowTokens();
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

int Plan::getSegmentAt(int64_t position, int64_t length) const {
  const Geometry &g = geometry;
  if (position < g.sink)
    return kSink;
  int64_t block = (position - g.sink) / g.block;
  if (g.window > 0 && g.sink + (block + 1) * g.block > length - g.window)
    return kWindow;
  return kBody;
}

const an::StorageFormat &Plan::getFormatAt(int64_t item, int64_t position,
                                           int64_t length) const {
  switch (getSegmentAt(position, length)) {
  case kSink:
    return getSink(item);
  case kWindow:
    return getWindow(item);
  default:
    return getBody(item, (position - geometry.sink) / geometry.block);
  }
}

double Plan::getItemBytes(int64_t item) const {
  const Geometry &g = geometry;
  int64_t aged = g.getBodyTokens();
  double total =
      getSegmentBytes(getSink(item), g.sink, g.headDim) +
      getSegmentBytes(getWindow(item), g.getWindowTokens(), g.headDim);
  if (!perBlock) {
    // One body format: full blocks cost the same, so the cost of sizing
    // does not grow with capacity.
    const an::StorageFormat &body = getBody(item, 0);
    int64_t fullBlocks = aged / g.block, rest = aged % g.block;
    total += double(fullBlocks) * getSegmentBytes(body, g.block, g.headDim);
    if (rest)
      total += getSegmentBytes(body, rest, g.headDim);
    return total;
  }
  for (int64_t b = 0; b * g.block < aged; ++b)
    total += getSegmentBytes(getBody(item, b),
                             std::min(g.block, aged - b * g.block), g.headDim);
  return total;
}

double Plan::getLayerBytes(int64_t layer) const {
  double total = 0.0;
  for (int64_t head = 0; head < geometry.heads; ++head)
    for (int kv = 0; kv < 2; ++kv)
      total += getItemBytes(getItem(layer, head, kv));
  return total;
}

double Plan::getTotalBytes() const {
  double total = 0.0;
  for (int64_t item = 0; item < getNumItems(); ++item)
    total += getItemBytes(item);
  return total;
}

double certify::getSegmentBytes(const StorageFormat &format, int64_t tokens,
                                int64_t headDim) {
  double bytes = double(tokens) * headDim * an::getBitWidth(format.kind) / 8.0;
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
