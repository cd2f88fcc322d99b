//===- BlockOptions.h - Allocator options of one cache block ----*- C++ -*-===//
//
// The "KV sensitivity analysis" step of the pipeline: for one block of one
// layer/head (K or V), evaluate every candidate storage format from the
// block's calibration statistics and envelopes, giving the allocator's
// (cost, error) options of error-bounds.md §4:
//   key block:   err(f) = A phi(E(f)) R,   E(f) from (C2) and delta^K(f);
//                options with E(f) > E_cap are pruned;
//   value block: err(f) = A e^{E_cap} max_j delta^V_j(f);
// with A the block's (C1) attention-mass envelope and R a bound on the
// block's residuals |V_{t,j} - o_j| (e.g. max_j span_j(V), §5). Solving the
// allocation with tolerance eps' = eps e^{-E_cap} then certifies eps.
//
//===----------------------------------------------------------------------===//

#ifndef KVPREC_ANALYSIS_BLOCKOPTIONS_H
#define KVPREC_ANALYSIS_BLOCKOPTIONS_H

#include "kvprec/Analysis/Allocator.h"
#include "kvprec/Analysis/ErrorModel.h"
#include "kvprec/Analysis/Quantizer.h"
#include "kvprec/Analysis/Status.h"
#include "kvprec/Analysis/StorageFormat.h"

#include <cstdint>
#include <vector>

namespace kvprec {
namespace analysis {

struct BlockOption {
  StorageFormat format;
  uint64_t bytes = 0; // getStorageBytes() of the block.
  double error = 0.0; // The §4 item error.
  /// Keys: the block's logit error bound E(f). Values: 0.
  double logitError = 0.0;
  /// Values: max_j delta^V_j(f). Keys: 0.
  double maxValueError = 0.0;
};

/// Options of a key block; candidates whose E exceeds `logitErrorCap` are
/// dropped. Fails on invalid candidates, statistics the format cannot
/// describe, or when every candidate is pruned.
Status computeKeyBlockOptions(const std::vector<StorageFormat> &candidates,
                              const BlockStatistics &stats,
                              double attentionMass,
                              const std::vector<double> &queryBound,
                              double residualBound, double logitErrorCap,
                              const DequantizerConfig &dequantizer,
                              std::vector<BlockOption> &options);

/// Options of a value block.
Status computeValueBlockOptions(const std::vector<StorageFormat> &candidates,
                                const BlockStatistics &stats,
                                double attentionMass, double logitErrorCap,
                                const DequantizerConfig &dequantizer,
                                std::vector<BlockOption> &options);

/// Appends one allocator item whose option k is options[k].
Status addAllocationItem(AllocationProblem &problem,
                         const std::vector<BlockOption> &options);

} // namespace analysis
} // namespace kvprec

#endif // KVPREC_ANALYSIS_BLOCKOPTIONS_H
