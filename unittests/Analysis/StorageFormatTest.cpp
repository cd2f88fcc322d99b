//===- StorageFormatTest.cpp - Storage format helpers ---------------------===//

#include "kvprec/Format/StorageFormat.h"

#include "gtest/gtest.h"

using namespace kvprec::analysis;

namespace {

StorageFormat int4Sym32F16() {
  return StorageFormat::scaled(StorageKind::Int4, QuantScheme::Symmetric,
                               Granularity::TokenGroup, 32, StorageKind::F16);
}

TEST(StorageFormatTest, BitWidths) {
  EXPECT_EQ(getBitWidth(StorageKind::F32), 32u);
  EXPECT_EQ(getBitWidth(StorageKind::F16), 16u);
  EXPECT_EQ(getBitWidth(StorageKind::BF16), 16u);
  EXPECT_EQ(getBitWidth(StorageKind::F8E4M3FN), 8u);
  EXPECT_EQ(getBitWidth(StorageKind::F8E5M2), 8u);
  EXPECT_EQ(getBitWidth(StorageKind::Int8), 8u);
  EXPECT_EQ(getBitWidth(StorageKind::Int4), 4u);
  EXPECT_EQ(getBitWidth(StorageKind::Int3), 3u);
  EXPECT_EQ(getBitWidth(StorageKind::Int2), 2u);
}

TEST(StorageFormatTest, KindPredicates) {
  EXPECT_FALSE(isScaledKind(StorageKind::F16));
  EXPECT_FALSE(isScaledKind(StorageKind::BF16));
  EXPECT_TRUE(isScaledKind(StorageKind::F8E4M3FN));
  EXPECT_TRUE(isScaledKind(StorageKind::Int2));
  EXPECT_TRUE(isFp8Kind(StorageKind::F8E5M2));
  EXPECT_FALSE(isFp8Kind(StorageKind::Int8));
  EXPECT_TRUE(isIntegerKind(StorageKind::Int3));
  EXPECT_FALSE(isStorableKind(StorageKind::Int3));
  EXPECT_TRUE(isStorableKind(StorageKind::Int2));
}

TEST(StorageFormatTest, CodeRanges) {
  EXPECT_EQ(getIntegerCodeRange(StorageKind::Int8, QuantScheme::Symmetric),
            std::make_pair(-127, 127));
  EXPECT_EQ(getIntegerCodeRange(StorageKind::Int2, QuantScheme::Symmetric),
            std::make_pair(-1, 1));
  EXPECT_EQ(getIntegerCodeRange(StorageKind::Int3, QuantScheme::Symmetric),
            std::make_pair(-3, 3));
  EXPECT_EQ(getIntegerCodeRange(StorageKind::Int4, QuantScheme::Asymmetric),
            std::make_pair(0, 15));
  EXPECT_EQ(getIntegerCodeRange(StorageKind::Int8, QuantScheme::Asymmetric),
            std::make_pair(0, 255));
}

TEST(StorageFormatTest, GroupOverheadIsScaleAndZeroPoint) {
  // One f16 scale per group; asymmetric adds an f16 zero point.
  EXPECT_EQ(getGroupOverheadBits(int4Sym32F16()), 16u);
  StorageFormat asym = int4Sym32F16();
  asym.scheme = QuantScheme::Asymmetric;
  EXPECT_EQ(getGroupOverheadBits(asym), 32u);
  EXPECT_EQ(getGroupOverheadBits(StorageFormat::unscaled(StorageKind::F16)),
            0u);
  StorageFormat e4m3 =
      StorageFormat::scaled(StorageKind::F8E4M3FN, QuantScheme::Symmetric,
                            Granularity::ChannelGroup, 64, StorageKind::F32);
  EXPECT_EQ(getGroupOverheadBits(e4m3), 32u);
  // llama.cpp's q4_0 and q8_0 averages.
  EXPECT_DOUBLE_EQ(getEffectiveBitsPerElement(int4Sym32F16()), 4.5);
  StorageFormat q8 = int4Sym32F16();
  q8.kind = StorageKind::Int8;
  EXPECT_DOUBLE_EQ(getEffectiveBitsPerElement(q8), 8.5);
  EXPECT_DOUBLE_EQ(
      getEffectiveBitsPerElement(StorageFormat::unscaled(StorageKind::BF16)),
      16.0);
}

TEST(StorageFormatTest, Names) {
  EXPECT_EQ(getFormatName(StorageFormat::unscaled(StorageKind::F16)), "f16");
  EXPECT_EQ(getFormatName(int4Sym32F16()),
            "int4<sym,token_group=32,scale=f16>");
  StorageFormat kivi =
      StorageFormat::scaled(StorageKind::Int2, QuantScheme::Asymmetric,
                            Granularity::ChannelGroup, 32, StorageKind::F16);
  EXPECT_EQ(getFormatName(kivi), "int2<asym,channel_group=32,scale=f16>");
}

TEST(StorageFormatTest, Verification) {
  EXPECT_TRUE(verifyStorageFormat(int4Sym32F16()).ok());
  EXPECT_TRUE(
      verifyStorageFormat(StorageFormat::unscaled(StorageKind::BF16)).ok());

  StorageFormat zeroGroup = int4Sym32F16();
  zeroGroup.groupSize = 0;
  Status status = verifyStorageFormat(zeroGroup);
  ASSERT_TRUE(status.failed());
  EXPECT_NE(status.getMessage().find("group size"), std::string::npos);

  StorageFormat fp8Asym =
      StorageFormat::scaled(StorageKind::F8E5M2, QuantScheme::Asymmetric,
                            Granularity::TokenGroup, 32, StorageKind::F32);
  status = verifyStorageFormat(fp8Asym);
  ASSERT_TRUE(status.failed());
  EXPECT_NE(status.getMessage().find("symmetric"), std::string::npos);

  StorageFormat intScale = int4Sym32F16();
  intScale.scaleKind = StorageKind::Int8;
  EXPECT_TRUE(verifyStorageFormat(intScale).failed());
  intScale.scaleKind = StorageKind::F8E4M3FN;
  EXPECT_TRUE(verifyStorageFormat(intScale).failed());

  StorageFormat int3 = int4Sym32F16();
  int3.kind = StorageKind::Int3;
  EXPECT_TRUE(verifyStorageFormat(int3).failed());
  EXPECT_TRUE(verifyStorageFormat(int3, /*requireStorable=*/false).ok());

  StorageFormat f16Asym = StorageFormat::unscaled(StorageKind::F16);
  f16Asym.scheme = QuantScheme::Asymmetric;
  EXPECT_TRUE(verifyStorageFormat(f16Asym).failed());
}

TEST(StorageFormatTest, EqualityIgnoresUnusedFieldsOfUnscaledFormats) {
  StorageFormat a = StorageFormat::unscaled(StorageKind::F16);
  StorageFormat b = a;
  b.groupSize = 64;
  EXPECT_EQ(a, b);
  StorageFormat c = int4Sym32F16(), d = int4Sym32F16();
  d.groupSize = 64;
  EXPECT_NE(c, d);
}

} // namespace
