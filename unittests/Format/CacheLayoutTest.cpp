//===- CacheLayoutTest.cpp - the arena layout of planned caches -----------===//
//
// Every live position of every stream has its own row at every length,
// regions are aligned, disjoint and inside the arena, sizes follow the
// documented row shapes, and sizes from outside are checked. Also the
// plan's own byte counts (per item, per layer, in total).
//
//===----------------------------------------------------------------------===//

#include "kvprec/Format/CacheLayout.h"

#include "gtest/gtest.h"

#include <map>
#include <set>
#include <utility>

using namespace kvprec;
using namespace kvprec::layout;
using certify::Plan;
namespace an = kvprec::analysis;

namespace {
an::StorageFormat unscaled(an::StorageKind kind) {
  return an::StorageFormat::unscaled(kind);
}
an::StorageFormat scaled(an::StorageKind kind, an::QuantScheme scheme,
                         an::Granularity granularity, unsigned group,
                         an::StorageKind scaleKind = an::StorageKind::F16) {
  return an::StorageFormat::scaled(kind, scheme, granularity, group, scaleKind);
}

/// One layer, `heads` heads; every item stores sink, window and body in
/// formats 0, 1, 2 (per block: body block b in format 2 + b % 2 when
/// `perBlock`).
Plan makePlan(int64_t heads, int64_t capacity, int64_t headDim, int64_t block,
              int64_t sink, int64_t window,
              std::vector<an::StorageFormat> formats, bool perBlock = false) {
  Plan plan;
  plan.geometry = {1, heads, capacity, headDim, block, sink, window};
  plan.formats = std::move(formats);
  int64_t items = plan.getNumItems();
  plan.sinkFormats.assign(items, 0);
  plan.windowFormats.assign(items, 1);
  plan.perBlock = perBlock;
  if (!perBlock) {
    plan.bodyFormats.assign(items, 2);
    return plan;
  }
  int64_t blocks = plan.geometry.getNumBodyBlocks();
  for (int64_t item = 0; item < items; ++item)
    for (int64_t b = 0; b < blocks; ++b)
      plan.bodyFormats.push_back(static_cast<int8_t>(2 + b % 2));
  return plan;
}

struct Region {
  int64_t begin, end;
};

/// The regions a run occupies.
void addRegions(const Plan &plan, const Run &run, std::vector<Region> &out) {
  const an::StorageFormat &format = plan.formats[run.formatIndex];
  RowShape shape = getRowShape(format, plan.geometry.headDim);
  out.push_back({run.codeOffset, run.codeOffset + run.rows * shape.rowBytes});
  int64_t scaleBytes =
      run.getScaleRows(format) * shape.scaleValues * shape.scaleValueBytes;
  out.push_back({run.scaleOffset, run.scaleOffset + scaleBytes});
  if (format.scheme == an::QuantScheme::Asymmetric)
    out.push_back({run.zeroOffset, run.zeroOffset + scaleBytes});
  int64_t inherited =
      run.getInheritedBlocks(plan.geometry.block, plan.geometry.window > 0);
  if (run.segment == certify::kBody && plan.geometry.window > 0)
    EXPECT_EQ(inherited,
              (run.rows + plan.geometry.block - 1) / plan.geometry.block);
  else
    EXPECT_EQ(inherited, 0);
  out.push_back({run.inheritedOffset, run.inheritedOffset + 4 * inherited});
}

/// Checks that regions are aligned, inside the arena and disjoint, and that
/// every live position has a row of its own in the run of its class.
void checkLayout(const Plan &plan) {
  std::unique_ptr<ArenaLayout> layout;
  an::Status status = ArenaLayout::build(plan, layout);
  ASSERT_TRUE(status.ok()) << status.getMessage();
  const certify::Geometry &g = plan.geometry;
  std::vector<Region> regions;
  for (int64_t layer = 0; layer < g.layers; ++layer)
    regions.push_back(
        {layout->getFillOffset(layer), layout->getFillOffset(layer) + 8});
  for (int64_t item = 0; item < plan.getNumItems(); ++item) {
    const StreamLayout &stream = layout->getStream(item);
    addRegions(plan, stream.sink, regions);
    addRegions(plan, stream.window, regions);
    for (const Run &run : stream.body)
      addRegions(plan, run, regions);
    regions.push_back(
        {stream.stagingOffset,
         stream.stagingOffset + stream.stagingRows * 4 * g.headDim});
  }
  std::sort(regions.begin(), regions.end(),
            [](const Region &a, const Region &b) {
              return a.begin < b.begin || (a.begin == b.begin && a.end < b.end);
            });
  int64_t previousEnd = 0;
  for (const Region &region : regions) {
    if (region.end == region.begin)
      continue;
    EXPECT_EQ(region.begin % kRegionAlignment, 0) << region.begin;
    EXPECT_GE(region.begin, previousEnd) << "regions overlap";
    EXPECT_LE(region.end, layout->getTotalBytes());
    previousEnd = region.end;
  }
  // The layout stores at least what the plan counts (more only for the
  // ring's spare block and byte rounding of packed rows).
  EXPECT_GE(double(layout->getDataBytes()), plan.getTotalBytes() - 1e-6);

  for (int64_t item = 0; item < plan.getNumItems(); ++item)
    for (int64_t length = 1; length <= g.capacity; ++length) {
      std::set<std::pair<const Run *, int64_t>> used;
      for (int64_t p = 0; p < length; ++p) {
        int64_t row = -1;
        const Run *run = findRow(*layout, item, p, length, row);
        ASSERT_NE(run, nullptr) << "position " << p << " length " << length;
        EXPECT_EQ(run->segment, plan.getSegmentAt(p, length));
        EXPECT_EQ(&plan.formats[run->formatIndex],
                  &plan.getFormatAt(item, p, length));
        ASSERT_GE(row, 0);
        ASSERT_LT(row, run->rows) << "position " << p << " length " << length;
        EXPECT_TRUE(used.insert({run, row}).second)
            << "two live positions share row " << row << " at length "
            << length;
      }
      int64_t row;
      EXPECT_EQ(findRow(*layout, item, length, length, row), nullptr);
    }
}
} // namespace

TEST(CacheLayout, RowShapes) {
  // Packed codes: ceil(D / (8 / bits)) bytes, planar.
  EXPECT_EQ(
      getRowShape(scaled(an::StorageKind::Int4, an::QuantScheme::Symmetric,
                         an::Granularity::TokenGroup, 2),
                  10)
          .rowBytes,
      5);
  EXPECT_EQ(
      getRowShape(scaled(an::StorageKind::Int2, an::QuantScheme::Symmetric,
                         an::Granularity::TokenGroup, 2),
                  10)
          .rowBytes,
      3);
  EXPECT_EQ(getRowShape(unscaled(an::StorageKind::BF16), 24).rowBytes, 48);
  RowShape token =
      getRowShape(scaled(an::StorageKind::Int8, an::QuantScheme::Asymmetric,
                         an::Granularity::TokenGroup, 32, an::StorageKind::F32),
                  128);
  EXPECT_EQ(token.rowBytes, 128);
  EXPECT_EQ(token.scaleValues, 4);
  EXPECT_EQ(token.scaleValueBytes, 4);
  RowShape channel =
      getRowShape(scaled(an::StorageKind::F8E4M3FN, an::QuantScheme::Symmetric,
                         an::Granularity::ChannelGroup, 16),
                  64);
  EXPECT_EQ(channel.scaleValues, 64);
  EXPECT_EQ(channel.scaleValueBytes, 2);
}

TEST(CacheLayout, SizesOfOneStream) {
  // int8, token groups of 8 with f16 scales: 8 code bytes and one 2-byte
  // scale per row. Capacity 100, sink 4, window 32, block 16: 6 blocks, a
  // ring of 3, and 4 blocks that can leave the window.
  an::StorageFormat i8 =
      scaled(an::StorageKind::Int8, an::QuantScheme::Symmetric,
             an::Granularity::TokenGroup, 8);
  Plan plan = makePlan(1, 100, 8, 16, 4, 32, {i8, i8, i8});
  std::unique_ptr<ArenaLayout> layout;
  ASSERT_TRUE(ArenaLayout::build(plan, layout).ok());
  const StreamLayout &stream = layout->getStream(0);
  EXPECT_EQ(stream.sink.rows, 4);
  EXPECT_EQ(stream.ringBlocks, 3);
  EXPECT_EQ(stream.window.rows, 48);
  ASSERT_EQ(stream.body.size(), 1u);
  EXPECT_EQ(stream.body[0].firstPosition, 4);
  EXPECT_EQ(stream.body[0].rows, 64);
  EXPECT_EQ(stream.stagingRows, 0);
  // (4 + 48 + 64) rows x 10 bytes, two streams.
  EXPECT_EQ(layout->getDataBytes(), 2 * 116 * 10);
  // The plan counts the window at its largest (47 positions) ...
  EXPECT_DOUBLE_EQ(plan.getTotalBytes(), 2 * (4 + 32 + 64) * 10.0);
  // ... the ring keeps one more whole block.
  EXPECT_EQ(layout->getFillOffset(0), 0);
  EXPECT_EQ(stream.sink.codeOffset, 64);
}

TEST(CacheLayout, EveryLivePositionHasItsOwnRow) {
  an::StorageFormat f16 = unscaled(an::StorageKind::F16);
  an::StorageFormat i4 =
      scaled(an::StorageKind::Int4, an::QuantScheme::Asymmetric,
             an::Granularity::ChannelGroup, 2);
  an::StorageFormat i2 =
      scaled(an::StorageKind::Int2, an::QuantScheme::Symmetric,
             an::Granularity::TokenGroup, 4);
  an::StorageFormat f8 =
      scaled(an::StorageKind::F8E5M2, an::QuantScheme::Symmetric,
             an::Granularity::TokenGroup, 4, an::StorageKind::BF16);
  int checked = 0;
  for (int64_t capacity : {1, 5, 8, 13, 16, 29})
    for (int64_t sink : {0, 2, 4})
      for (int64_t block : {2, 4})
        for (int64_t window : {0, 4, 8})
          for (bool perBlock : {false, true}) {
            if (sink > capacity || window > capacity - sink)
              continue;
            SCOPED_TRACE(testing::Message()
                         << "capacity " << capacity << " sink " << sink
                         << " block " << block << " window " << window
                         << (perBlock ? " per block" : ""));
            checkLayout(makePlan(2, capacity, 8, block, sink, window,
                                 {f16, i4, i2, f8}, perBlock));
            ++checked;
          }
  EXPECT_GT(checked, 100);
}

TEST(CacheLayout, StagingHoldsTheChannelGroupBeingFilled) {
  an::StorageFormat f32 = unscaled(an::StorageKind::F32);
  an::StorageFormat kivi =
      scaled(an::StorageKind::Int2, an::QuantScheme::Asymmetric,
             an::Granularity::ChannelGroup, 8);
  std::unique_ptr<ArenaLayout> layout;
  // The body fills in its own format only without a window.
  ASSERT_TRUE(ArenaLayout::build(
                  makePlan(1, 64, 8, 16, 0, 16, {f32, f32, kivi}), layout)
                  .ok());
  EXPECT_EQ(layout->getStream(0).stagingRows, 0);
  ASSERT_TRUE(
      ArenaLayout::build(makePlan(1, 64, 8, 16, 0, 0, {f32, f32, kivi}), layout)
          .ok());
  EXPECT_EQ(layout->getStream(0).stagingRows, 8);
  ASSERT_TRUE(ArenaLayout::build(
                  makePlan(1, 64, 8, 16, 8, 16, {kivi, f32, f32}), layout)
                  .ok());
  EXPECT_EQ(layout->getStream(0).stagingRows, 8);
}

TEST(CacheLayout, PerBlockBodiesMergeRunsOfOneFormat) {
  an::StorageFormat f16 = unscaled(an::StorageKind::F16);
  Plan plan = makePlan(1, 40, 8, 4, 0, 8, {f16, f16, f16, f16}, true);
  // Blocks 0..9; 8 can leave the window; formats 2, 3, 2, 3, ... differ.
  std::unique_ptr<ArenaLayout> layout;
  ASSERT_TRUE(ArenaLayout::build(plan, layout).ok());
  EXPECT_EQ(layout->getStream(0).body.size(), 8u);
  for (int8_t &entry : plan.bodyFormats)
    entry = 2;
  ASSERT_TRUE(ArenaLayout::build(plan, layout).ok());
  ASSERT_EQ(layout->getStream(0).body.size(), 1u);
  EXPECT_EQ(layout->getStream(0).body[0].rows, 32);
}

TEST(CacheLayout, RefusesWhatCannotBeLaidOut) {
  an::StorageFormat f16 = unscaled(an::StorageKind::F16);
  std::unique_ptr<ArenaLayout> layout;
  an::Status status = ArenaLayout::build(
      makePlan(8, int64_t(1) << 50, 128, 32, 4, 64, {f16, f16, f16}), layout);
  ASSERT_TRUE(status.failed());
  EXPECT_NE(status.getMessage().find("2^48"), std::string::npos);
  // Large enough to overflow a 64-bit byte count if multiplied naively.
  status = ArenaLayout::build(makePlan(1, (int64_t(1) << 47), int64_t(1) << 40,
                                       32, 4, 64, {f16, f16, f16}),
                              layout);
  ASSERT_TRUE(status.failed());
  EXPECT_NE(status.getMessage().find("2^48"), std::string::npos);
  // More (layer, KV head) pairs than kvprec handles: refused before any
  // table is read or any stream laid out (the tables here are empty).
  Plan many;
  many.geometry = {int64_t(1) << 20, 64, 8, 16, 4, 0, 0};
  many.formats = {f16};
  status = ArenaLayout::build(many, layout);
  ASSERT_TRUE(status.failed());
  EXPECT_NE(status.getMessage().find("(layer, KV head) pairs"),
            std::string::npos);
  // One pair past the limit is refused for the limit (the tables are
  // filled, so no other check could refuse it); the limit itself is laid
  // out.
  Plan atLimit = makePlan(8, 8, 16, 4, 0, 0, {f16, f16, f16});
  atLimit.geometry.layers = certify::kMaxLayerHeadPairs / 8;
  const int64_t items = atLimit.getNumItems();
  atLimit.sinkFormats.assign(items, 0);
  atLimit.windowFormats.assign(items, 1);
  atLimit.bodyFormats.assign(items, 2);
  ASSERT_TRUE(ArenaLayout::build(atLimit, layout).ok());
  Plan past = atLimit;
  past.geometry.heads = 9;
  const int64_t pastItems = past.getNumItems();
  past.sinkFormats.assign(pastItems, 0);
  past.windowFormats.assign(pastItems, 1);
  past.bodyFormats.assign(pastItems, 2);
  status = ArenaLayout::build(past, layout);
  ASSERT_TRUE(status.failed());
  EXPECT_NE(status.getMessage().find("(layer, KV head) pairs"),
            std::string::npos);
  // A channel group that does not tile the block.
  an::StorageFormat cg =
      scaled(an::StorageKind::Int8, an::QuantScheme::Symmetric,
             an::Granularity::ChannelGroup, 3);
  status =
      ArenaLayout::build(makePlan(1, 64, 8, 16, 0, 16, {f16, cg, f16}), layout);
  ASSERT_TRUE(status.failed());
  EXPECT_NE(status.getMessage().find("window format"), std::string::npos);
  Plan broken = makePlan(1, 64, 8, 16, 0, 8, {f16, f16, f16});
  status = ArenaLayout::build(broken, layout);
  ASSERT_TRUE(status.failed());
  EXPECT_NE(status.getMessage().find("inconsistent"), std::string::npos);
  // Format tables that name a format the plan does not have (makePlan's
  // per-block bodies alternate formats 2 and 3), or have the wrong size.
  Plan unnamed = makePlan(1, 64, 8, 16, 4, 16, {f16, f16, f16},
                          /*perBlock=*/true);
  status = ArenaLayout::build(unnamed, layout);
  ASSERT_TRUE(status.failed());
  EXPECT_NE(status.getMessage().find("format tables"), std::string::npos);
  Plan negative = makePlan(1, 64, 8, 16, 4, 16, {f16, f16, f16});
  negative.sinkFormats[1] = -1;
  EXPECT_TRUE(ArenaLayout::build(negative, layout).failed());
  Plan short_ = makePlan(1, 64, 8, 16, 4, 16, {f16, f16, f16});
  short_.windowFormats.pop_back();
  EXPECT_TRUE(ArenaLayout::build(short_, layout).failed());
  Plan blocksShort = makePlan(1, 64, 8, 16, 4, 16, {f16, f16, f16, f16},
                              /*perBlock=*/true);
  ASSERT_TRUE(ArenaLayout::build(blocksShort, layout).ok());
  blocksShort.bodyFormats.pop_back();
  EXPECT_TRUE(ArenaLayout::build(blocksShort, layout).failed());
}

// The bytes of one item and one layer, which eval-quality reports for each
// layer planned alone, add up to the plan's total.
TEST(PlanBytes, ItemsAndLayersAddUpToTheTotal) {
  Plan plan;
  plan.geometry = {/*layers=*/2,   /*heads=*/1, /*capacity=*/64,
                   /*headDim=*/16,
                   /*block=*/16,   /*sink=*/4,  /*window=*/16};
  plan.formats = {unscaled(an::StorageKind::F16),
                  unscaled(an::StorageKind::F32),
                  scaled(an::StorageKind::Int4, an::QuantScheme::Symmetric,
                         an::Granularity::TokenGroup, 16)};
  // Layer 0: K all f16, V all f32; layer 1: f16 sink and window, int4 body.
  plan.sinkFormats = {0, 1, 0, 0};
  plan.windowFormats = {0, 1, 0, 0};
  plan.bodyFormats = {0, 1, 2, 2};
  const certify::Geometry &g = plan.geometry;
  int64_t body = g.getBodyTokens();
  ASSERT_GT(body, 0);
  EXPECT_EQ(plan.getItemBytes(0), 64 * 16 * 2);
  EXPECT_EQ(plan.getItemBytes(1), 64 * 16 * 4);
  // An int4 position: 16 channels of 4 bits and one f16 scale.
  double layer1Item = (64 - body) * 16 * 2 + body * (16 * 4 / 8 + 2);
  EXPECT_EQ(plan.getItemBytes(2), layer1Item);
  EXPECT_EQ(plan.getLayerBytes(0), 64 * 16 * 6);
  EXPECT_EQ(plan.getLayerBytes(1), 2 * layer1Item);
  EXPECT_EQ(plan.getTotalBytes(),
            plan.getLayerBytes(0) + plan.getLayerBytes(1));

  // Per-block bodies (makePlan alternates formats 2 and 3 over the
  // blocks): the blocks of each item add up the same way.
  std::vector<an::StorageFormat> blockFormats = plan.formats;
  blockFormats.push_back(scaled(an::StorageKind::Int8,
                                an::QuantScheme::Asymmetric,
                                an::Granularity::TokenGroup, 16));
  Plan blocks = makePlan(/*heads=*/2, /*capacity=*/64, /*headDim=*/16,
                         /*block=*/16, /*sink=*/4, /*window=*/16, blockFormats,
                         /*perBlock=*/true);
  std::unique_ptr<ArenaLayout> blockLayout;
  ASSERT_TRUE(ArenaLayout::build(blocks, blockLayout).ok());
  double items = 0.0;
  for (int64_t item = 0; item < blocks.getNumItems(); ++item)
    items += blocks.getItemBytes(item);
  EXPECT_EQ(blocks.getLayerBytes(0), items);
  EXPECT_EQ(blocks.getTotalBytes(), items);
}
