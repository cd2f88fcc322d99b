//===- CacheLayout.cpp - where a planned cache keeps its bytes ------------===//

#include "kvprec/Format/CacheLayout.h"

#include <algorithm>
#include <string>

using namespace kvprec;
using namespace kvprec::layout;
namespace an = kvprec::analysis;

static int64_t ceilDiv(int64_t a, int64_t b) { return a / b + (a % b != 0); }

/// Bytes of one value of a scale kind.
static int64_t getScaleValueBytes(an::StorageKind kind) {
  return kind == an::StorageKind::F32 ? 4 : 2;
}

static bool hasChannelGroups(const an::StorageFormat &format) {
  return an::isScaled(format) &&
         format.granularity == an::Granularity::ChannelGroup;
}

RowShape layout::getRowShape(const an::StorageFormat &format, int64_t headDim) {
  RowShape shape;
  unsigned bits = an::getBitWidth(format.kind);
  shape.rowBytes =
      bits >= 8 ? headDim * (bits / 8) : ceilDiv(headDim, 8 / bits);
  if (!an::isScaled(format))
    return shape;
  shape.scaleValues = format.granularity == an::Granularity::TokenGroup
                          ? headDim / format.groupSize
                          : headDim;
  shape.scaleValueBytes = getScaleValueBytes(format.scaleKind);
  return shape;
}

int64_t Run::getScaleRows(const an::StorageFormat &format) const {
  if (!an::isScaled(format))
    return 0;
  if (format.granularity == an::Granularity::TokenGroup)
    return rows;
  return ceilDiv(rows, format.groupSize);
}

int64_t Run::getInheritedBlocks(int64_t block, bool hasWindow) const {
  if (segment != certify::kBody || !hasWindow)
    return 0;
  return ceilDiv(rows, block);
}

namespace {
/// Hands out aligned regions of the arena with checked arithmetic.
class Allocator {
public:
  /// Reserves `count` x `size` bytes; returns the offset, or -1 once the
  /// arena would exceed kMaxArenaBytes (every later call fails too).
  int64_t allocate(int64_t count, int64_t size) {
    if (failed || count < 0 || size < 0 ||
        (size != 0 && count > kMaxArenaBytes / size)) {
      failed = true;
      return -1;
    }
    int64_t bytes = count * size;
    int64_t offset = ceilDiv(next, kRegionAlignment) * kRegionAlignment;
    if (offset > kMaxArenaBytes - bytes) {
      failed = true;
      return -1;
    }
    next = offset + bytes;
    data += bytes;
    return offset;
  }
  bool failed = false;
  int64_t next = 0;
  int64_t data = 0;
};
} // namespace

/// Places a run's codes, scales and zero points.
static void placeRun(Allocator &allocator, const an::StorageFormat &format,
                     int64_t headDim, Run &run) {
  RowShape shape = getRowShape(format, headDim);
  run.codeOffset = allocator.allocate(run.rows, shape.rowBytes);
  int64_t scaleRowBytes = shape.scaleValues * shape.scaleValueBytes;
  int64_t scaleRows = run.getScaleRows(format);
  run.scaleOffset = allocator.allocate(scaleRows, scaleRowBytes);
  run.zeroOffset = format.scheme == an::QuantScheme::Asymmetric
                       ? allocator.allocate(scaleRows, scaleRowBytes)
                       : run.scaleOffset;
}

an::Status ArenaLayout::build(const certify::Plan &plan,
                              std::unique_ptr<ArenaLayout> &result) {
  const certify::Geometry &g = plan.geometry;
  if (g.layers <= 0 || g.heads <= 0 || g.capacity <= 0 || g.headDim <= 0 ||
      g.block <= 0 || g.sink < 0 || g.window < 0 || g.sink > g.capacity ||
      g.window % g.block != 0)
    return an::Status::failure("the plan's geometry is inconsistent");
  if (!certify::withinLayerHeadLimit(g.layers, g.heads))
    return an::Status::failure(
        "the cache has more than " +
        std::to_string(certify::kMaxLayerHeadPairs) +
        " (layer, KV head) pairs");
  // Every position and channel needs at least a bit, so larger sizes cannot
  // fit the arena; bounding them first keeps the products below exact.
  if (g.layers > kMaxArenaBytes / 8 || g.heads > kMaxArenaBytes / g.layers ||
      g.capacity > kMaxArenaBytes || g.headDim > kMaxArenaBytes)
    return an::Status::failure("the cache's arena needs more than " +
                               std::to_string(kMaxArenaBytes) +
                               " bytes (2^48)");
  // The format tables index `formats`: each must have one entry per item
  // (per item and body block for per-block bodies) naming a format.
  const int64_t items = plan.getNumItems();
  int64_t bodyEntries = items;
  bool entriesOverflow =
      plan.perBlock &&
      __builtin_mul_overflow(items, g.getNumBodyBlocks(), &bodyEntries);
  auto indexesFormats = [&](const std::vector<int8_t> &table, int64_t size) {
    return int64_t(table.size()) == size &&
           std::all_of(table.begin(), table.end(), [&](int8_t f) {
             return f >= 0 && size_t(f) < plan.formats.size();
           });
  };
  if (entriesOverflow || !indexesFormats(plan.sinkFormats, items) ||
      !indexesFormats(plan.windowFormats, items) ||
      !indexesFormats(plan.bodyFormats, bodyEntries))
    return an::Status::failure(
        "the plan's format tables do not match its geometry or name a format "
        "it does not have");
  std::unique_ptr<ArenaLayout> layout(new ArenaLayout(plan));
  Allocator allocator;
  allocator.allocate(g.layers, 8);

  const int64_t aged = std::max<int64_t>(g.capacity - g.sink, 0);
  const int64_t numBlocks = g.getNumBodyBlocks();
  // Blocks that can be in the body of a full cache: with a window, those
  // that end at or before capacity - window; without one, every block.
  const int64_t bodyBlocks =
      g.window > 0
          ? std::max<int64_t>(g.capacity - g.window - g.sink, 0) / g.block
          : numBlocks;
  const int64_t ringBlocks =
      g.window > 0 ? std::min(g.window / g.block + 1, numBlocks) : 0;

  auto checkFits = [&](const an::StorageFormat &format, int64_t unit,
                       const char *segment) -> an::Status {
    if (unit > 0 && !certify::fitsSegment(format, unit, g.headDim))
      return an::Status::failure(std::string("the ") + segment + " format " +
                                 an::getFormatName(format) +
                                 " cannot store units of " +
                                 std::to_string(unit) + " positions of " +
                                 std::to_string(g.headDim) + " channels");
    return an::Status::success();
  };

  layout->streams.resize(items);
  int64_t inheritedBytes = 0;
  for (int64_t item = 0; item < items && !allocator.failed; ++item) {
    StreamLayout &stream = layout->streams[item];
    int64_t stagingRows = 0;
    auto noteStaging = [&](const an::StorageFormat &format) {
      if (hasChannelGroups(format))
        stagingRows = std::max<int64_t>(stagingRows, format.groupSize);
    };

    const an::StorageFormat &sinkFormat = plan.getSink(item);
    if (an::Status s = checkFits(sinkFormat, g.sink, "sink"); s.failed())
      return s;
    stream.sink.segment = certify::kSink;
    stream.sink.formatIndex = plan.sinkFormats[item];
    stream.sink.rows = g.sink;
    placeRun(allocator, sinkFormat, g.headDim, stream.sink);
    if (g.sink > 0)
      noteStaging(sinkFormat);

    const an::StorageFormat &windowFormat = plan.getWindow(item);
    stream.ringBlocks = ringBlocks;
    stream.window.segment = certify::kWindow;
    stream.window.formatIndex = plan.windowFormats[item];
    stream.window.firstPosition = g.sink;
    // A ring as long as the whole body region holds it without wrapping.
    stream.window.rows = ringBlocks == numBlocks ? aged : ringBlocks * g.block;
    if (ringBlocks > 0) {
      if (an::Status s = checkFits(windowFormat, g.block, "window"); s.failed())
        return s;
      noteStaging(windowFormat);
    }
    placeRun(allocator, windowFormat, g.headDim, stream.window);

    for (int64_t b = 0; b < bodyBlocks && !allocator.failed;) {
      int8_t index = plan.perBlock ? plan.bodyFormats[item * numBlocks + b]
                                   : plan.bodyFormats[item];
      int64_t end = b + 1;
      if (!plan.perBlock)
        end = bodyBlocks;
      else
        while (end < bodyBlocks &&
               plan.bodyFormats[item * numBlocks + end] == index)
          ++end;
      const an::StorageFormat &format = plan.formats[index];
      if (an::Status s = checkFits(format, g.block, "body"); s.failed())
        return s;
      // Without a window a body block fills in its body format.
      if (g.window == 0)
        noteStaging(format);
      Run run;
      run.segment = certify::kBody;
      run.formatIndex = index;
      run.firstPosition = g.sink + b * g.block;
      run.rows = std::min(end * g.block, aged) - b * g.block;
      placeRun(allocator, format, g.headDim, run);
      int64_t inherited = run.getInheritedBlocks(g.block, g.window > 0);
      run.inheritedOffset = allocator.allocate(inherited, 4);
      inheritedBytes += inherited * 4;
      stream.body.push_back(run);
      b = end;
    }
    stream.stagingRows = stagingRows;
    stream.stagingOffset = allocator.allocate(stagingRows, 4 * g.headDim);
  }
  if (allocator.failed)
    return an::Status::failure("the cache's arena needs more than " +
                               std::to_string(kMaxArenaBytes) +
                               " bytes (2^48)");
  layout->totalBytes =
      ceilDiv(allocator.next, kRegionAlignment) * kRegionAlignment;
  // Data bytes: everything allocated except fill counts, staging and the
  // inherited bounds.
  int64_t staging = 0;
  for (const StreamLayout &stream : layout->streams)
    staging += stream.stagingRows * 4 * g.headDim;
  layout->dataBytes = allocator.data - g.layers * 8 - staging - inheritedBytes;
  result = std::move(layout);
  return an::Status::success();
}

const Run *layout::findRow(const CacheLayout &layout, int64_t item,
                           int64_t position, int64_t length, int64_t &row) {
  const certify::Plan &plan = layout.getPlan();
  const certify::Geometry &g = plan.geometry;
  if (position < 0 || position >= length || length > g.capacity)
    return nullptr;
  const StreamLayout &stream = layout.getStream(item);
  switch (plan.getSegmentAt(position, length)) {
  case certify::kSink:
    row = position;
    return &stream.sink;
  case certify::kWindow:
    row = (position - g.sink) % stream.window.rows;
    return &stream.window;
  default:
    break;
  }
  // Body runs are in position order: find the one holding the position.
  auto it = std::upper_bound(
      stream.body.begin(), stream.body.end(), position,
      [](int64_t p, const Run &run) { return p < run.firstPosition; });
  if (it == stream.body.begin())
    return nullptr;
  --it;
  if (position >= it->firstPosition + it->rows)
    return nullptr;
  row = position - it->firstPosition;
  return &*it;
}
