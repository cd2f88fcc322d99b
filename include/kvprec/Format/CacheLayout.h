//===- CacheLayout.h - where a planned cache keeps its bytes ----*- C++ -*-===//
//
// The storage layout of a planned KV cache as plain data: for every
// (layer, KV head, K/V) stream, where the codes, scales and zero points of
// each run of positions live, how positions map to rows, and where the fill
// state and the channel-group staging are. The lowering reads nothing else
// about storage, so a paged layout (pools of fixed-size pages per format and
// a block table per sequence) can implement the same interface later; the
// kernels' inner loops see only (codes, scales, zero points, rows) of one
// run in one format. docs/abi.md states the layout for runtimes.
//
//===----------------------------------------------------------------------===//

#ifndef KVPREC_FORMAT_CACHELAYOUT_H
#define KVPREC_FORMAT_CACHELAYOUT_H

#include "kvprec/Format/Plan.h"
#include "kvprec/Format/Status.h"

#include <cstdint>
#include <memory>
#include <vector>

namespace kvprec::layout {

/// Every region of an arena starts at a multiple of this many bytes, so that
/// a full-width (512-bit) vector load of a run never straddles a cache line
/// at its start.
inline constexpr int64_t kRegionAlignment = 64;

/// Largest arena a layout describes (2^48 bytes, 256 TiB): far beyond any
/// machine, small enough that every offset computation stays exact.
inline constexpr int64_t kMaxArenaBytes = int64_t(1) << 48;

/// Where one run of rows of one stream is stored. A row is one position's
/// head_dim elements. Rows are `rowBytes` apart; scales and zero points
/// are `scaleGroups` values of the scale kind per scale row:
///  * token groups: one scale row per position row, head_dim / group values;
///  * channel groups: one scale row per `groupSize` position rows (a token
///    group), head_dim values (one per channel).
/// Integer codes of fewer than 8 bits are packed planar within a row: with
/// n = 8 / bits codes per byte and R = rowBytes, element j of the row is in
/// byte j % R, bits [(j / R) * bits, (j / R + 1) * bits). Symmetric codes
/// are stored in two's complement of `bits` bits, asymmetric ones unsigned.
struct Run {
  certify::Segment segment = certify::kBody;
  /// Index of the format in Plan::formats.
  int8_t formatIndex = 0;
  /// Rows the run holds. For the sink and body, row r stores position
  /// firstPosition + r; the window ring is described by CacheLayout.
  int64_t firstPosition = 0;
  int64_t rows = 0;
  int64_t codeOffset = 0;
  int64_t scaleOffset = 0;
  /// Zero points, for asymmetric formats; otherwise equal to scaleOffset
  /// and of size 0.
  int64_t zeroOffset = 0;
  /// Body runs of a plan with a window: one f32 per block, the largest
  /// error bound of the window values the block was re-quantized from
  /// (written when it leaves the window; the run-time certificate adds it
  /// to every element's bound). Otherwise of size 0.
  int64_t inheritedOffset = 0;
  int64_t getScaleRows(const analysis::StorageFormat &format) const;
  /// Blocks whose inherited bound the run keeps (0 when none).
  int64_t getInheritedBlocks(int64_t block, bool hasWindow) const;
};

/// Byte sizes of a stored row and of its scale row in a format.
struct RowShape {
  int64_t rowBytes = 0;
  /// Values per scale row (0 for unscaled formats) and bytes per value.
  int64_t scaleValues = 0;
  int64_t scaleValueBytes = 0;
};
RowShape getRowShape(const analysis::StorageFormat &format, int64_t headDim);

/// One stream's storage: its sink, its window ring and its body runs.
struct StreamLayout {
  /// Empty (rows 0) when the plan has no sink.
  Run sink;
  /// Ring slots of `block` rows in the window format: the body block b
  /// (positions sink + b*block ...) is in slot b % ringBlocks while it is in
  /// the window. `rows` is ringBlocks * block; firstPosition is unused.
  Run window;
  int64_t ringBlocks = 0;
  /// Maximal runs of consecutive body blocks in one format, in position
  /// order; together they hold every block that can leave the window.
  std::vector<Run> body;
  /// f32 sources of the token group being filled, for formats with channel
  /// groups (their groups are re-quantized as positions arrive):
  /// stagingRows x head_dim floats, or none (stagingRows 0).
  int64_t stagingOffset = 0;
  int64_t stagingRows = 0;
};

/// The layout interface the lowering programs against.
class CacheLayout {
public:
  virtual ~CacheLayout() = default;
  virtual const certify::Plan &getPlan() const = 0;
  /// Total bytes a cache needs (its allocation size).
  virtual int64_t getTotalBytes() const = 0;
  /// The arena bytes that hold stored data (codes, scales, zero points) of
  /// a full cache, without alignment padding, staging or fill state: what
  /// Plan::getTotalBytes counts, rounded up to whole bytes per run.
  virtual int64_t getDataBytes() const = 0;
  /// Byte offset of layer `layer`'s fill count (an int64: the number of
  /// positions appended so far).
  virtual int64_t getFillOffset(int64_t layer) const = 0;
  virtual const StreamLayout &getStream(int64_t item) const = 0;
};

/// The contiguous arena of one cache, in this order: the fill counts of
/// every layer, then per stream (item order of certify::Plan) its sink,
/// window ring, body runs and staging, each region aligned to
/// kRegionAlignment.
class ArenaLayout final : public CacheLayout {
public:
  /// Computes the layout of `plan`. Fails, with a message naming the size,
  /// when a format cannot store its class (group sizes), a region does not
  /// fit kMaxArenaBytes, or the plan is inconsistent.
  static analysis::Status build(const certify::Plan &plan,
                                std::unique_ptr<ArenaLayout> &result);

  const certify::Plan &getPlan() const override { return plan; }
  int64_t getTotalBytes() const override { return totalBytes; }
  int64_t getDataBytes() const override { return dataBytes; }
  int64_t getFillOffset(int64_t layer) const override { return layer * 8; }
  const StreamLayout &getStream(int64_t item) const override {
    return streams[item];
  }

private:
  explicit ArenaLayout(const certify::Plan &plan) : plan(plan) {}
  certify::Plan plan;
  std::vector<StreamLayout> streams;
  int64_t totalBytes = 0;
  int64_t dataBytes = 0;
};

/// Where position `position` of a stream is stored when the cache holds
/// `length` positions: the run and the row within it (window positions map
/// into the ring). Returns null for a position not below `length`.
const Run *findRow(const CacheLayout &layout, int64_t item, int64_t position,
                   int64_t length, int64_t &row);

} // namespace kvprec::layout

#endif // KVPREC_FORMAT_CACHELAYOUT_H
