//===- PlanAttrTest.cpp - plan and format attribute helpers ---------------===//

#include "kvprec/Dialect/KVPrec/IR/KVPrecOps.h"

#include "mlir/AsmParser/AsmParser.h"
#include "mlir/IR/BuiltinTypes.h"
#include "mlir/IR/MLIRContext.h"
#include "gtest/gtest.h"

using namespace mlir;
using namespace mlir::kvprec;

namespace {
class PlanAttrTest : public ::testing::Test {
protected:
  PlanAttrTest() { context.loadDialect<KVPrecDialect>(); }

  Attribute parse(StringRef text) { return parseAttribute(text, &context); }

  MLIRContext context;
};

TEST_F(PlanAttrTest, UnscaledFormatBytes) {
  auto f16 = StorageFormatAttr::get(&context, Float16Type::get(&context));
  EXPECT_FALSE(f16.isScaled());
  EXPECT_EQ(f16.getElementBits(), 16u);
  EXPECT_DOUBLE_EQ(f16.getSegmentBytes(10, 8), 160.0);
}

TEST_F(PlanAttrTest, ScaledFormatBytesCountScalesAndZeroPoints) {
  // i4 asymmetric, 8 channels per group, f16 scale + f16 zero point:
  // 12 tokens x 16 channels x 0.5 B + 12 x 2 groups x 4 B.
  auto tokenGroup = cast<StorageFormatAttr>(parse(
      "#kvprec.format<i4, asymmetric, token_group = 8, scale = f16>"));
  EXPECT_DOUBLE_EQ(tokenGroup.getSegmentBytes(12, 16), 96.0 + 24 * 4.0);
  // Channel groups of 8 tokens: ceil(12 / 8) = 2 groups per channel.
  auto channelGroup = cast<StorageFormatAttr>(parse(
      "#kvprec.format<i2, symmetric, channel_group = 8, scale = f32>"));
  EXPECT_DOUBLE_EQ(channelGroup.getSegmentBytes(12, 16), 48.0 + 32 * 4.0);
  EXPECT_DOUBLE_EQ(channelGroup.getSegmentBytes(0, 16), 0.0);
}

TEST_F(PlanAttrTest, LookupsFollowTheDocumentedOrder) {
  auto plan = cast<PlanAttr>(parse(
      "#kvprec.plan<layers = 2, heads = 2, capacity = 36, block = 8, sink = "
      "4, window = 8, formats = [#kvprec.format<f16>, #kvprec.format<i8, "
      "symmetric, token_group = 4, scale = f16>, #kvprec.format<bf16>], "
      "sink_formats = [0], body_formats = [0, 1, 1, 1, 1, 1, 1, 2], "
      "window_formats = [2, 0, 0, 0, 0, 0, 0, 0]>"));
  ASSERT_TRUE(plan);
  EXPECT_EQ(plan.getNumBodyBlocks(), 4);
  EXPECT_FALSE(plan.isPerBlock());
  // Item index ((layer * heads) + head) * 2 + kv.
  EXPECT_EQ(plan.getBodyFormat(0, 0, 0, 3).getElementBits(), 16u);
  EXPECT_EQ(plan.getBodyFormat(0, 0, 1, 0).getElementBits(), 8u);
  EXPECT_TRUE(isa<BFloat16Type>(plan.getBodyFormat(1, 1, 1, 2).getStorageType()));
  EXPECT_TRUE(isa<BFloat16Type>(plan.getWindowFormat(0, 0, 0).getStorageType()));
  EXPECT_TRUE(isa<Float16Type>(plan.getWindowFormat(1, 0, 1).getStorageType()));
  EXPECT_TRUE(isa<Float16Type>(plan.getSinkFormat(1, 1, 1).getStorageType()));
}

TEST_F(PlanAttrTest, PerBlockPlanAndTotalBytes) {
  // One item pair (K, V), capacity 20 = sink 4 + body 16 in blocks of 4,
  // window 4. K blocks: f16,i8,i8,f16; V blocks: all i8.
  auto plan = cast<PlanAttr>(parse(
      "#kvprec.plan<layers = 1, heads = 1, capacity = 20, block = 4, sink = "
      "4, window = 4, formats = [#kvprec.format<f16>, #kvprec.format<i8, "
      "symmetric, token_group = 2, scale = f16>], sink_formats = [0], "
      "body_formats = [0, 1, 1, 0, 1, 1, 1, 1], window_formats = [0]>"));
  ASSERT_TRUE(plan);
  EXPECT_TRUE(plan.isPerBlock());
  EXPECT_EQ(plan.getBodyFormat(0, 0, 0, 0).getElementBits(), 16u);
  EXPECT_EQ(plan.getBodyFormat(0, 0, 0, 1).getElementBits(), 8u);
  EXPECT_EQ(plan.getBodyFormat(0, 0, 1, 3).getElementBits(), 8u);
  // head_dim 2: per position f16 = 4 B; i8 = 2 B + one f16 scale = 4 B.
  // Full cache, per K or V: sink 4 pos, window 4 pos, aged body 12 pos.
  double f16Position = 4, i8Position = 2 + 2;
  double k = 4 * f16Position + 4 * f16Position +
             (4 * f16Position + 8 * i8Position);
  double v = 4 * f16Position + 4 * f16Position + 12 * i8Position;
  EXPECT_DOUBLE_EQ(plan.getTotalBytes(2), k + v);
}

TEST_F(PlanAttrTest, ShortLastBlockIsCountedExactly) {
  // Body of 10 positions in blocks of 4 (4, 4, 2), window 4: aged body is
  // the first 6 positions.
  auto plan = cast<PlanAttr>(parse(
      "#kvprec.plan<layers = 1, heads = 1, capacity = 10, block = 4, sink = "
      "0, window = 4, formats = [#kvprec.format<f16>, #kvprec.format<bf16>], "
      "sink_formats = [0], body_formats = [1], window_formats = [0]>"));
  ASSERT_TRUE(plan);
  // head_dim 1: 2 bytes per position in either format; 10 positions x 2.
  EXPECT_DOUBLE_EQ(plan.getTotalBytes(1), 2 * 10 * 2.0);
}

TEST_F(PlanAttrTest, CacheTypeCarriesPlan) {
  auto plan = cast<PlanAttr>(parse(
      "#kvprec.plan<layers = 1, heads = 1, capacity = 10, block = 4, sink = "
      "0, window = 0, formats = [#kvprec.format<f16>], sink_formats = [0], "
      "body_formats = [0], window_formats = [0]>"));
  auto cache = CacheType::get(1, 1, 10, 4, Float32Type::get(&context));
  EXPECT_FALSE(cache.getPlan());
  CacheType planned = cache.withPlan(plan);
  EXPECT_EQ(planned.getPlan(), plan);
  EXPECT_EQ(planned.withPlan({}), cache);
}
} // namespace
