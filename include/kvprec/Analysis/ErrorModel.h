//===- ErrorModel.h - Per-element error bounds from statistics --*- C++ -*-===//
//
// When the data is not at hand (the static analysis works from calibration
// ranges), the per-element bound delta of error-bounds.md §6 is derived from
// a range that bounds a scale group: the model computes the stored scale and
// zero point the quantizer would produce for that range, and a delta valid
// for every element of every group whose range lies inside it.
//
// Soundness rests on monotonicity: a group whose range lies inside the model
// range gets a stored scale no larger (and a zero point no smaller), and every
// formula below is non-decreasing in the scale and in the element magnitude.
// With s the model scale, m the element's magnitude bound, [lo, hi] its range,
// u_q = 2^-24 and (u_P, eta_P) the dequantizer's unit roundoff and smallest
// subnormal:
//  * int symmetric:  core = s/2 + 3 u_q m,
//                    delta = (core + u_P m + eta_P/2) / (1 - u_P)
//  * int asymmetric: core = s/2 + 4 u_q (hi - z),
//                    p = (1 + u_P) min(hi - z + core, q_max s) + eta_P/2
//                    (bounds the dequantizer's product |fl_P(k s)|),
//                    delta = (core + u_P (p + max(|lo|,|hi|)) + eta_P)
//                            / (1 - u_P)
//  * fp8 (u_8, eta_8): core = u_8 m (1 + 3 u_q) + 3 u_q m + s eta_8/2,
//                    delta = (core + u_P m + eta_P/2) / (1 - u_P)
//                    (the relative model u|x| + s eta/2 of §6)
//  * f16/bf16:       delta = u m (1 + u) + eta/2;  f32: 0.
// These use the element's magnitude where Quantizer.h's stored-data bounds
// must use the stored code, so they can be smaller than the stored-data bound
// of the same element; both bound the actual error.
//
//===----------------------------------------------------------------------===//

#ifndef KVPREC_ANALYSIS_ERRORMODEL_H
#define KVPREC_ANALYSIS_ERRORMODEL_H

#include "kvprec/Analysis/Quantizer.h"
#include "kvprec/Format/Status.h"
#include "kvprec/Format/StorageFormat.h"

#include <vector>

namespace kvprec {
namespace analysis {

struct ValueRange {
  double min = 0.0;
  double max = 0.0;
  double absMax() const;
  bool contains(const ValueRange &inner) const {
    return min <= inner.min && inner.max <= max;
  }
};

/// The error model of one scale group known only through a bounding range.
struct GroupErrorModel {
  StorageFormat format;
  DequantizerConfig dequantizer;
  ValueRange groupRange;
  /// The stored parameters the quantizer produces for a group spanning
  /// exactly `groupRange`; every group inside it has a scale <= this one.
  GroupScale scale;

  /// delta for an element known to lie in `elementRange` (which must lie in
  /// groupRange), valid for every group whose range lies in groupRange.
  double elementBound(const ValueRange &elementRange) const;
  /// delta for any element of the group.
  double maxBound() const { return elementBound(groupRange); }
  /// For the relative-error formats (f32, f16, bf16 and scaled fp8), the
  /// affine form of elementBound: delta <= slope * |x| + offset for every
  /// element x of every group inside groupRange. False for int formats,
  /// whose error does not shrink with the element.
  bool getAffineBound(double &slope, double &offset) const;
};

/// Builds the model; fails for invalid formats, non-finite ranges, or ranges
/// the format cannot hold (f16 overflow, scale overflow).
Status buildGroupErrorModel(const StorageFormat &format,
                            const ValueRange &groupRange,
                            const DequantizerConfig &dequantizer,
                            GroupErrorModel &result);

/// Calibration statistics of one block of cached vectors (K or V) of one
/// layer/head: per channel, the range over the block's tokens.
struct BlockStatistics {
  unsigned numTokens = 0;
  std::vector<ValueRange> channelRanges;
};

/// Per-channel delta valid for every element of the block. TokenGroup: a
/// channel group's range is the hull of its channels' ranges. ChannelGroup
/// (KIVI keys): each channel's range is its group range, which needs the
/// block to consist of whole token groups (numTokens % groupSize == 0); for
/// other layouts pass statistics over the group-aligned span instead.
Status computeBlockChannelErrorBounds(const StorageFormat &format,
                                      const BlockStatistics &stats,
                                      const DequantizerConfig &dequantizer,
                                      std::vector<double> &deltaPerChannel);

/// The affine bounds of a block in a relative-error format (see
/// GroupErrorModel::getAffineBound): delta_j <= slope * |x| + offset_j for
/// every element x of channel j. Fails for int formats and for the same
/// layouts computeBlockChannelErrorBounds rejects.
Status computeBlockAffineErrorBounds(const StorageFormat &format,
                                     const BlockStatistics &stats,
                                     const DequantizerConfig &dequantizer,
                                     double &slope,
                                     std::vector<double> &offsetPerChannel);

/// (1/sqrt(d)) sum_j Q_j delta_j: the logit error bound E_t of a position
/// whose key errors are bounded by `keyDelta`, for every query with
/// |q_j| <= Q_j (error-bounds.md §0 and §5 (C2)); d = keyDelta.size().
double computeLogitErrorBound(const std::vector<double> &queryBound,
                              const std::vector<double> &keyDelta);

/// max_j delta^V_j of a value block in `format` (the block's delta^V).
Status computeValueBlockMaxError(const StorageFormat &format,
                                 const BlockStatistics &stats,
                                 const DequantizerConfig &dequantizer,
                                 double &maxDelta);
/// The largest E_t over a key block in `format`, given query bounds Q (C2).
Status computeKeyBlockLogitError(const StorageFormat &format,
                                 const BlockStatistics &stats,
                                 const std::vector<double> &queryBound,
                                 const DequantizerConfig &dequantizer,
                                 double &logitError);

} // namespace analysis
} // namespace kvprec

#endif // KVPREC_ANALYSIS_ERRORMODEL_H
