//===- Plan.h - a precision plan as plain data ------------------*- C++ -*-===//
//
// The plain C++ form of a #kvprec.plan, shared by the passes, the
// certificate code and kvprec-calib eval-bounds (which emulates storage
// exactly as the plan says).
//
//===----------------------------------------------------------------------===//

#ifndef KVPREC_CERTIFY_PLAN_H
#define KVPREC_CERTIFY_PLAN_H

#include "kvprec/Analysis/StorageFormat.h"
#include "kvprec/Certify/PlanCertifier.h"

#include <cstdint>
#include <vector>

namespace kvprec {
namespace certify {

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
    return formats[bodyFormats[perBlock ? item * geometry.getNumBodyBlocks() +
                                              block
                                        : item]];
  }
  /// Which class stores `position` when the cache holds `length` positions:
  /// the sink, the window (body blocks that overlap the newest `window`
  /// positions, including the block being filled), or its body block.
  int getSegmentAt(int64_t position, int64_t length) const;
  const analysis::StorageFormat &getFormatAt(int64_t item, int64_t position,
                                             int64_t length) const;
  /// Storage bytes of a full cache.
  double getTotalBytes() const;
};

/// Recomputes the static certificate of one (layer, head) of `plan` from the
/// calibration alone. Per-block body formats are certified with each
/// block's own calibrated ranges and the worst block taken for the body.
Status certifyPlanHead(const calib::CalibrationStats &stats, const Plan &plan,
                       int64_t layer, int64_t head,
                       const CertifyOptions &options,
                       analysis::StaticCertifiedBound &result,
                       double &maxKeyLogitError);

} // namespace certify
} // namespace kvprec

#endif // KVPREC_CERTIFY_PLAN_H
