//===- BlockOptions.cpp - Allocator options of one cache block ------------===//

#include "kvprec/Analysis/BlockOptions.h"
#include "kvprec/Analysis/Bound.h"

#include <algorithm>
#include <cmath>
#include <string>

using namespace kvprec::analysis;

static uint64_t getBlockBytes(const StorageFormat &format,
                              const BlockStatistics &stats) {
  return getStorageBytes(format, uint64_t(stats.numTokens) *
                                     stats.channelRanges.size());
}

Status kvprec::analysis::computeKeyBlockOptions(
    const std::vector<StorageFormat> &candidates, const BlockStatistics &stats,
    double attentionMass, const std::vector<double> &queryBound,
    double residualBound, double logitErrorCap,
    const DequantizerConfig &dequantizer, std::vector<BlockOption> &options) {
  options.clear();
  if (!(attentionMass >= 0.0) || !(residualBound >= 0.0) ||
      !(logitErrorCap >= 0.0))
    return Status::failure("key block options need a non-negative mass, "
                           "residual bound and logit-error cap");
  std::string pruned;
  for (const StorageFormat &format : candidates) {
    BlockOption option;
    option.format = format;
    if (Status s = computeKeyBlockLogitError(format, stats, queryBound,
                                             dequantizer, option.logitError);
        s.failed())
      return s;
    if (option.logitError > logitErrorCap) {
      pruned += (pruned.empty() ? "" : ", ") + getFormatName(format) +
                " (E=" + std::to_string(option.logitError) + ")";
      continue;
    }
    option.bytes = getBlockBytes(format, stats);
    option.error =
        computeKeyItemError(attentionMass, option.logitError, residualBound);
    options.push_back(option);
  }
  if (options.empty())
    return Status::failure("every key candidate exceeds the logit-error cap " +
                           std::to_string(logitErrorCap) + ": " + pruned);
  return Status::success();
}

Status kvprec::analysis::computeValueBlockOptions(
    const std::vector<StorageFormat> &candidates, const BlockStatistics &stats,
    double attentionMass, double logitErrorCap,
    const DequantizerConfig &dequantizer, std::vector<BlockOption> &options) {
  options.clear();
  if (!(attentionMass >= 0.0) || !(logitErrorCap >= 0.0) ||
      !std::isfinite(logitErrorCap))
    return Status::failure("value block options need a non-negative mass "
                           "and a finite, non-negative logit-error cap");
  if (candidates.empty())
    return Status::failure("no value candidates");
  for (const StorageFormat &format : candidates) {
    BlockOption option;
    option.format = format;
    if (Status s = computeValueBlockMaxError(format, stats, dequantizer,
                                             option.maxValueError);
        s.failed())
      return s;
    option.bytes = getBlockBytes(format, stats);
    option.error = computeValueItemError(attentionMass, option.maxValueError,
                                         logitErrorCap);
    options.push_back(option);
  }
  return Status::success();
}

Status
kvprec::analysis::addAllocationItem(AllocationProblem &problem,
                                    const std::vector<BlockOption> &options) {
  std::vector<double> costs(options.size()), errors(options.size());
  for (size_t k = 0; k < options.size(); ++k) {
    costs[k] = double(options[k].bytes);
    errors[k] = options[k].error;
  }
  return problem.addItem(costs, errors);
}
