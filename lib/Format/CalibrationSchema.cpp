//===- CalibrationSchema.cpp - the kvprec-calib-v1 tensors ----------------===//

#include "kvprec/Format/CalibrationSchema.h"

#include "llvm/Support/ErrorHandling.h"

#include <algorithm>

using namespace llvm;

namespace kvprec::calib {

/// ceil(a / b) for a >= 0, b > 0, without the overflow of (a + b - 1) / b.
static int64_t ceilDivide(int64_t a, int64_t b) {
  return a / b + (a % b != 0);
}

int64_t CalibrationShape::getNumBodyBlocks() const {
  if (block <= 0 || window < 0)
    return 0;
  int64_t beyondWindow = maxPositions > window ? maxPositions - window : 0;
  return ceilDivide(beyondWindow, block);
}

int64_t CalibrationShape::getNumSampleMassBins() const {
  return 3 + std::min(getNumBodyBlocks(), kSampleBodyBins);
}

int64_t CalibrationShape::getNumAbsoluteBlocks() const {
  if (block <= 0)
    return 0;
  return ceilDivide(std::max<int64_t>(maxPositions, 0), block);
}

using Kind = CalibrationTensorKind;
using Value = CalibrationValueKind;

ArrayRef<CalibrationTensorSchema> getCalibrationSchema() {
  static const CalibrationTensorSchema schema[] = {
      {"attn_sink_mass", false, Kind::LayerHead, Value::Mass,
       "max over queries and group query heads of the attention weight on positions t < sink"},
      {"attn_window_mass", false, Kind::LayerHead, Value::Mass,
       "max of the weight on the recent window p - t < window, sink excluded"},
      {"attn_body_mass", false, Kind::LayerHeadBody, Value::Mass,
       "max of the weight on relative body block j: t >= sink, window + j*block <= p - t < window + (j+1)*block"},
      {"attn_sink_mass_mean", false, Kind::LayerHead, Value::Mass,
       "mean of the sink mass"},
      {"attn_window_mass_mean", false, Kind::LayerHead, Value::Mass,
       "mean of the window mass"},
      {"attn_entropy_mean", false, Kind::LayerHead, Value::NonNegative,
       "mean attention entropy in nats"},
      {"attn_max_weight", false, Kind::LayerHead, Value::Mass,
       "max single-position attention weight"},
      {"q_absmax", false, Kind::LayerHeadChannel, Value::NonNegative,
       "max |q_j| over queries and group query heads (after RoPE, unscaled)"},
      {"q_l1_max", false, Kind::LayerHead, Value::NonNegative,
       "max ||q||_1 over queries and group query heads"},
      {"qk_logit_max", false, Kind::LayerHead, Value::NonNegative,
       "max over queries, group query heads and cached t <= p of (1/sqrt(D)) * sum_j |q_j| * |K_{t,j}|"},
      {"k_chan_min", false, Kind::LayerHeadChannel, Value::ChannelMin,
       "per-channel min of cached K (after RoPE)"},
      {"k_chan_max", false, Kind::LayerHeadChannel, Value::ChannelMax,
       "per-channel max of cached K (after RoPE)"},
      {"v_chan_min", false, Kind::LayerHeadChannel, Value::ChannelMin,
       "per-channel min of cached V"},
      {"v_chan_max", false, Kind::LayerHeadChannel, Value::ChannelMax,
       "per-channel max of cached V"},
      {"k_block_absmax", false, Kind::LayerHeadAbsBlock, Value::NonNegative,
       "max |K| over the positions of absolute block a and all channels"},
      {"v_block_absmax", false, Kind::LayerHeadAbsBlock, Value::NonNegative,
       "max |V| over the positions of absolute block a and all channels"},
      {"k_block_token_range", false, Kind::LayerHeadAbsBlock, Value::NonNegative,
       "max over tokens of block a of (max_j K - min_j K)"},
      {"v_block_token_range", false, Kind::LayerHeadAbsBlock, Value::NonNegative,
       "max over tokens of block a of (max_j V - min_j V)"},
      {"k_block_chan_span", false, Kind::LayerHeadAbsBlock, Value::NonNegative,
       "max over channels of (max_t K - min_t K) over the tokens of block a"},
      {"v_block_chan_span", false, Kind::LayerHeadAbsBlock, Value::NonNegative,
       "max over channels of (max_t V - min_t V) over the tokens of block a"},
      {"query_count", true, Kind::LayerHead, Value::Count,
       "number of (query, query head) samples reduced"},
      {"position_count", true, Kind::AbsBlock, Value::Count,
       "number of cached vectors observed per block"},
      {"query_sample_count", true, Kind::LayerHead, Value::Count,
       "query samples kept (a uniform reservoir of at most N)"},
      {"query_sample_mass", false, Kind::LayerHeadSampleMass, Value::Mass,
       "per sample: its attention mass on the sink, the window, relative body blocks 0 .. min(NB, 8) - 1 and the rest of the body"},
      {"query_sample_sqmass", false, Kind::LayerHeadSampleMass, Value::Mass,
       "per sample: sum of squared attention weights in each of its mass bins (at most the bin's mass; for the probabilistic certificate)"},
      {"query_sample_absq", false, Kind::LayerHeadSampleChannel, Value::NonNegative,
       "per sample: |q_j| (after RoPE, unscaled)"},
      {"query_sample_logit", false, Kind::LayerHeadSample, Value::NonNegative,
       "per sample: max over cached t of (1/sqrt(D)) sum_j |q_j| |K_{t,j}|"},
  };
  return schema;
}

SmallVector<int64_t, 3> getTensorShape(const CalibrationShape &shape,
                                       CalibrationTensorKind kind) {
  switch (kind) {
  case Kind::LayerHead:
    return {shape.layers, shape.kvHeads};
  case Kind::LayerHeadChannel:
    return {shape.layers, shape.kvHeads, shape.headDim};
  case Kind::LayerHeadBody:
    return {shape.layers, shape.kvHeads, shape.getNumBodyBlocks()};
  case Kind::LayerHeadAbsBlock:
    return {shape.layers, shape.kvHeads, shape.getNumAbsoluteBlocks()};
  case Kind::AbsBlock:
    return {shape.getNumAbsoluteBlocks()};
  case Kind::LayerHeadSample:
    return {shape.layers, shape.kvHeads, shape.querySamples};
  case Kind::LayerHeadSampleChannel:
    return {shape.layers, shape.kvHeads, shape.querySamples, shape.headDim};
  case Kind::LayerHeadSampleMass:
    return {shape.layers, shape.kvHeads, shape.querySamples,
            shape.getNumSampleMassBins()};
  }
  llvm_unreachable("unknown tensor kind");
}

StringRef getSymbolicShape(CalibrationTensorKind kind) {
  switch (kind) {
  case Kind::LayerHead:
    return "[L, H]";
  case Kind::LayerHeadChannel:
    return "[L, H, D]";
  case Kind::LayerHeadBody:
    return "[L, H, NB]";
  case Kind::LayerHeadAbsBlock:
    return "[L, H, NA]";
  case Kind::AbsBlock:
    return "[NA]";
  case Kind::LayerHeadSample:
    return "[L, H, N]";
  case Kind::LayerHeadSampleChannel:
    return "[L, H, N, D]";
  case Kind::LayerHeadSampleMass:
    return "[L, H, N, M]";
  }
  llvm_unreachable("unknown tensor kind");
}

} // namespace kvprec::calib
