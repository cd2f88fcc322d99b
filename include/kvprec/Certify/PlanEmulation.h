//===- PlanEmulation.h - a KV cache stored as a plan says -------*- C++ -*-===//
//
// Emulates, bit for bit, the storage of one (layer, KV head, K or V) stream
// of a planned cache as it grows one position at a time: the executable
// statement of store and demotion semantics, which `kvprec-calib
// eval-bounds` and the unit tests measure certificates against and the
// lowering must reproduce:
//  * a new position is quantized from its fp32 value in the format of its
//    current class (sink, window, or its body block);
//  * channel-group formats group tokens within a quantization unit (the
//    sink, or one block of `block` positions), so a unit that is still
//    filling is re-quantized over the positions it holds each time one
//    arrives, from their sources;
//  * when a block changes class (it leaves the window), it is re-quantized
//    from the values the old class stored, as a real demotion does; sink
//    positions never change class and are quantized once.
// Every stored element carries an error bound relative to its fp32 value:
// the quantizer's bound from stored data (Quantizer.h) plus, after a
// demotion, the bound of the values it was re-quantized from.
//
//===----------------------------------------------------------------------===//

#ifndef KVPREC_CERTIFY_PLANEMULATION_H
#define KVPREC_CERTIFY_PLANEMULATION_H

#include "kvprec/Analysis/Matrix.h"
#include "kvprec/Analysis/Quantizer.h"
#include "kvprec/Certify/Plan.h"
#include "kvprec/Format/Status.h"

#include <cstdint>
#include <vector>

namespace kvprec::certify {

class EmulatedStream {
public:
  EmulatedStream(const Plan &plan, int64_t item,
                 const analysis::DequantizerConfig &dequantizer);

  /// Appends the fp32 vector of the next position (head_dim values), then
  /// stores every position as the plan says at the new length. Fails when
  /// the cache is full, a format cannot store the data, or (an internal
  /// check) a position is not in the format the plan gives it.
  analysis::Status append(const float *values);

  int64_t getLength() const { return static_cast<int64_t>(exact.rows); }
  /// The fp32 values, the values the dequantizer returns, and per element a
  /// bound on |stored - exact| computable from stored data; rows are
  /// positions.
  const analysis::Matrix &getExact() const { return exact; }
  const analysis::Matrix &getStored() const { return stored; }
  const analysis::Matrix &getErrorBounds() const { return errorBounds; }
  /// What the arena holds for each element, row-major like getStored():
  /// the stored code (Quantizer.h's quantizeElement) and its group's stored
  /// scale and zero point (zero for unscaled formats).
  const std::vector<int32_t> &getCodes() const { return codes; }
  const std::vector<analysis::GroupScale> &getScales() const { return scales; }
  /// Per element, row-major: the part of getErrorBounds() inherited from
  /// the storage a re-quantized element was re-quantized from (0 for
  /// elements quantized from their fp32 values).
  const std::vector<double> &getInheritedBounds() const { return sourceBound; }
  /// getErrorBounds() as the generated code keeps the inherited part: one
  /// inherited bound per block of the plan after the sink, the largest of
  /// its elements' (CacheLayout.h).
  analysis::Matrix getBlockwiseErrorBounds() const;
  /// Elements whose |stored - exact| exceeded their bound when stored (a
  /// check of the quantizer; always 0 for a sound one).
  uint64_t getElementBoundViolations() const { return boundViolations; }
  /// Number of block demotions (window -> body) performed.
  uint64_t getNumDemotions() const { return demotions; }

private:
  /// First position of the quantization unit (the sink, or a block)
  /// holding `position`.
  int64_t getUnitBegin(int64_t position) const;
  /// Quantizes rows [begin, end) from their sources in `format`.
  analysis::Status store(int64_t begin, int64_t end,
                         const analysis::StorageFormat &format);

  const Plan &plan;
  int64_t item;
  analysis::DequantizerConfig dequantizer;
  int64_t headDim;
  analysis::Matrix exact, stored, errorBounds;
  /// What the current class quantized each row from (f32 values) and that
  /// source's own error bound relative to the exact values.
  std::vector<float> source;
  std::vector<double> sourceBound;
  /// The class of each body block (index (position - sink) / block) at the
  /// current length, -1 before the block has positions.
  std::vector<int> blockSegment;
  /// The plan format (an entry of plan.formats) each row is stored in.
  std::vector<const analysis::StorageFormat *> rowFormat;
  std::vector<int32_t> codes;
  std::vector<analysis::GroupScale> scales;
  uint64_t boundViolations = 0;
  uint64_t demotions = 0;
};

} // namespace kvprec::certify

#endif // KVPREC_CERTIFY_PLANEMULATION_H
