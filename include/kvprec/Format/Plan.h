//===- Plan.h - a precision plan as plain data ------------------*- C++ -*-===//
//
// The plain C++ form of a #kvprec.plan: the cache geometry and its position
// classes, the formats of every (layer, KV head, K/V) and class, and their
// storage bytes. Part of the small format library the dialect depends on;
// the passes, the certifiers and kvprec-calib use the same structures.
//
//===----------------------------------------------------------------------===//

#ifndef KVPREC_FORMAT_PLAN_H
#define KVPREC_FORMAT_PLAN_H

#include "kvprec/Format/StorageFormat.h"

#include <cstdint>
#include <vector>

namespace kvprec {
namespace certify {

using analysis::StorageFormat;

/// The most (layer, KV head) pairs a cache may have. Plans, layouts and the
/// generated tables hold entries per pair (and per K/V), and a plan can
/// give one format for all of them in one entry, so without a limit a few
/// bytes of IR would ask for terabytes. 2^16 is seven times the largest
/// multi-head model in use (96 layers x 96 heads); grouped-query models
/// have far fewer (80 x 8).
inline constexpr int64_t kMaxLayerHeadPairs = int64_t(1) << 16;

/// Whether `layers` x `heads` (both positive) is within kMaxLayerHeadPairs.
inline bool withinLayerHeadLimit(int64_t layers, int64_t heads) {
  return layers <= kMaxLayerHeadPairs && heads <= kMaxLayerHeadPairs / layers;
}

/// The shape of a cache and the position classes of its plan.
struct Geometry {
  int64_t layers = 0, heads = 0, capacity = 0, headDim = 0;
  int64_t block = 0, sink = 0, window = 0;
  int64_t getNumBodyBlocks() const;
  /// Positions of each class in a full cache: sink, the window (whole blocks
  /// overlapping the newest `window` positions) and the older body.
  int64_t getSinkTokens() const { return sink; }
  int64_t getWindowTokens() const;
  int64_t getBodyTokens() const;
};

/// The three position classes; every (layer, head, K/V) stores each in one
/// format (the body can further be refined per block).
enum Segment : int { kSink = 0, kWindow = 1, kBody = 2 };
constexpr int kNumSegments = 3;
const char *getSegmentName(int segment);

/// Storage bytes of `tokens` positions of `headDim` channels, including
/// scales and zero points (one per group; token groups per token, channel
/// groups per channel and group of tokens).
double getSegmentBytes(const StorageFormat &format, int64_t tokens,
                       int64_t headDim);

/// Whether `format` can store a class of `tokens` positions of `headDim`
/// channels (group sizes must tile them).
bool fitsSegment(const StorageFormat &format, int64_t tokens, int64_t headDim);

/// Item index ((layer * heads) + head) * 2 + kv, kv 0 for K and 1 for V.
/// The index lists are expanded: one entry per item, and for a per-block
/// plan one body entry per item and body block.
struct Plan {
  Geometry geometry;
  std::vector<analysis::StorageFormat> formats;
  std::vector<int8_t> sinkFormats, windowFormats, bodyFormats;
  bool perBlock = false;

  int64_t getNumItems() const { return geometry.layers * geometry.heads * 2; }
  int64_t getItem(int64_t layer, int64_t head, int kv) const {
    return (layer * geometry.heads + head) * 2 + kv;
  }
  const analysis::StorageFormat &getSink(int64_t item) const {
    return formats[sinkFormats[item]];
  }
  const analysis::StorageFormat &getWindow(int64_t item) const {
    return formats[windowFormats[item]];
  }
  const analysis::StorageFormat &getBody(int64_t item, int64_t block) const {
    return formats[bodyFormats[perBlock
                                   ? item * geometry.getNumBodyBlocks() + block
                                   : item]];
  }
  /// Which class stores `position` when the cache holds `length` positions:
  /// the sink, the window (body blocks that overlap the newest `window`
  /// positions, including the block being filled), or its body block.
  int getSegmentAt(int64_t position, int64_t length) const;
  const analysis::StorageFormat &getFormatAt(int64_t item, int64_t position,
                                             int64_t length) const;
  /// Storage bytes of one item's (layer, KV head, K/V) full cache.
  double getItemBytes(int64_t item) const;
  /// Storage bytes of one layer's full cache (K and V of every KV head).
  double getLayerBytes(int64_t layer) const;
  /// Storage bytes of a full cache: the sum over the items.
  double getTotalBytes() const;
};

} // namespace certify
} // namespace kvprec

#endif // KVPREC_FORMAT_PLAN_H
