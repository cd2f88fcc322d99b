//===- SoftFloatTest.cpp - Bit-exact float conversions --------------------===//

#include "kvprec/Analysis/SoftFloat.h"

#include "TestUtil.h"

#include "gtest/gtest.h"

#include <cmath>
#include <cstring>
#include <limits>

using namespace kvprec::analysis;
using namespace kvprec::analysis::test;

namespace {

const StorageKind kFloatKinds[] = {StorageKind::F32, StorageKind::F16,
                                   StorageKind::BF16, StorageKind::F8E4M3FN,
                                   StorageKind::F8E5M2};

TEST(SoftFloatTest, FormatProperties) {
  const FloatFormatInfo &e4m3 = getFloatFormatInfo(StorageKind::F8E4M3FN);
  EXPECT_EQ(e4m3.maxFinite, 448.0);
  EXPECT_EQ(e4m3.minNormal, std::ldexp(1.0, -6));
  EXPECT_EQ(e4m3.minSubnormal, std::ldexp(1.0, -9));
  EXPECT_EQ(e4m3.unitRoundoff, std::ldexp(1.0, -4));
  const FloatFormatInfo &e5m2 = getFloatFormatInfo(StorageKind::F8E5M2);
  EXPECT_EQ(e5m2.maxFinite, 57344.0);
  EXPECT_EQ(e5m2.minNormal, std::ldexp(1.0, -14));
  EXPECT_EQ(e5m2.minSubnormal, std::ldexp(1.0, -16));
  EXPECT_EQ(e5m2.unitRoundoff, std::ldexp(1.0, -3));
  const FloatFormatInfo &f16 = getFloatFormatInfo(StorageKind::F16);
  EXPECT_EQ(f16.maxFinite, 65504.0);
  EXPECT_EQ(f16.minSubnormal, std::ldexp(1.0, -24));
  EXPECT_EQ(f16.unitRoundoff, std::ldexp(1.0, -11));
  const FloatFormatInfo &bf16 = getFloatFormatInfo(StorageKind::BF16);
  EXPECT_EQ(bf16.unitRoundoff, std::ldexp(1.0, -8));
  EXPECT_EQ(bf16.minSubnormal, std::ldexp(1.0, -133));
  EXPECT_EQ(getFloatFormatInfo(StorageKind::F32).maxFinite,
            double(std::numeric_limits<float>::max()));
}

TEST(SoftFloatTest, KnownEncodings) {
  EXPECT_EQ(floatToHalfBits(1.0f), 0x3C00);
  EXPECT_EQ(floatToHalfBits(-2.0f), 0xC000);
  EXPECT_EQ(floatToHalfBits(65504.0f), 0x7BFF);
  EXPECT_EQ(floatToHalfBits(65519.0f), 0x7BFF);
  EXPECT_EQ(floatToHalfBits(65520.0f), 0x7C00); // Tie rounds to even: inf.
  EXPECT_EQ(floatToHalfBits(std::ldexp(1.0f, -24)), 0x0001);
  EXPECT_EQ(floatToHalfBits(std::ldexp(1.0f, -25)), 0x0000); // Tie to even.
  EXPECT_EQ(floatToHalfBits(std::ldexp(1.5f, -25)), 0x0001);
  EXPECT_EQ(floatToHalfBits(std::ldexp(3.0f, -25)), 0x0002); // Tie to even.
  EXPECT_EQ(floatToHalfBits(-0.0f), 0x8000);
  EXPECT_EQ(floatToHalfBits(std::numeric_limits<float>::infinity()), 0x7C00);
  EXPECT_EQ(floatToHalfBits(std::numeric_limits<float>::quiet_NaN()), 0x7E00);
  EXPECT_EQ(floatToHalfBits(1.0f + std::ldexp(1.0f, -11)), 0x3C00);
  EXPECT_EQ(floatToHalfBits(1.0f + 3 * std::ldexp(1.0f, -11)), 0x3C02);

  EXPECT_EQ(floatToBFloat16Bits(1.0f), 0x3F80);
  EXPECT_EQ(floatToBFloat16Bits(3.14159265f), 0x4049);
  EXPECT_EQ(floatToBFloat16Bits(-1.0f), 0xBF80);
  EXPECT_EQ(floatToBFloat16Bits(std::numeric_limits<float>::max()), 0x7F80);
  EXPECT_EQ(floatToBFloat16Bits(std::numeric_limits<float>::denorm_min()),
            0x0000);

  EXPECT_EQ(floatToF8E4M3FNBits(1.0f), 0x38);
  EXPECT_EQ(floatToF8E4M3FNBits(448.0f), 0x7E);
  EXPECT_EQ(floatToF8E4M3FNBits(464.0f), 0x7E); // Tie to even: 448.
  EXPECT_EQ(floatToF8E4M3FNBits(465.0f), 0x7F); // Overflow: NaN (no inf).
  EXPECT_EQ(floatToF8E4M3FNBits(465.0f, /*saturate=*/true), 0x7E);
  EXPECT_EQ(floatToF8E4M3FNBits(-448.0f), 0xFE);
  EXPECT_EQ(floatToF8E4M3FNBits(std::ldexp(1.0f, -9)), 0x01);
  EXPECT_EQ(floatToF8E4M3FNBits(std::ldexp(1.0f, -10)), 0x00);
  EXPECT_EQ(floatToF8E4M3FNBits(std::ldexp(1.0f, -6)), 0x08);
  EXPECT_EQ(floatToF8E4M3FNBits(std::numeric_limits<float>::infinity()), 0x7F);
  EXPECT_TRUE(std::isnan(f8E4M3FNBitsToFloat(0x7F)));
  EXPECT_TRUE(std::isnan(f8E4M3FNBitsToFloat(0xFF)));
  EXPECT_EQ(f8E4M3FNBitsToFloat(0x78), 256.0f); // Exponent 1111 is normal.

  EXPECT_EQ(floatToF8E5M2Bits(1.0f), 0x3C);
  EXPECT_EQ(floatToF8E5M2Bits(57344.0f), 0x7B);
  EXPECT_EQ(floatToF8E5M2Bits(61440.0f), 0x7C); // Tie to even: inf.
  EXPECT_EQ(floatToF8E5M2Bits(61439.0f), 0x7B);
  EXPECT_EQ(floatToF8E5M2Bits(1e6f, /*saturate=*/true), 0x7B);
  EXPECT_EQ(floatToF8E5M2Bits(std::ldexp(1.0f, -16)), 0x01);
  EXPECT_TRUE(std::isinf(f8E5M2BitsToFloat(0x7C)));
  EXPECT_TRUE(std::isnan(f8E5M2BitsToFloat(0x7D)));
}

/// Every code decodes to a value that encodes back to the same code
/// (NaNs to a NaN).
void checkExhaustiveRoundTrip(StorageKind kind) {
  const FloatFormatInfo &info = getFloatFormatInfo(kind);
  const uint32_t numCodes = uint32_t(1) << info.totalBits();
  size_t numNaN = 0;
  for (uint32_t code = 0; code < numCodes; ++code) {
    double value = decodeFloat(kind, code);
    uint32_t back = encodeFloat(kind, value);
    if (std::isnan(value)) {
      ++numNaN;
      EXPECT_TRUE(std::isnan(decodeFloat(kind, back)));
      continue;
    }
    ASSERT_EQ(back, code) << getStorageKindName(kind) << " value " << value;
    if (!std::isinf(value)) {
      // The decoded value is a float, and f32 rounding agrees.
      EXPECT_EQ(double(static_cast<float>(value)), value);
    }
  }
  size_t expectedNaN =
      info.hasInfinity ? 2 * ((size_t(1) << info.mantissaBits) - 1) : 2;
  EXPECT_EQ(numNaN, expectedNaN) << getStorageKindName(kind);
}

TEST(SoftFloatTest, ExhaustiveRoundTripFp8) {
  checkExhaustiveRoundTrip(StorageKind::F8E4M3FN);
  checkExhaustiveRoundTrip(StorageKind::F8E5M2);
}

TEST(SoftFloatTest, ExhaustiveRoundTrip16Bit) {
  checkExhaustiveRoundTrip(StorageKind::F16);
  checkExhaustiveRoundTrip(StorageKind::BF16);
}

/// Independent reference: binary search over the (value-monotone) positive
/// codes, then pick the nearer neighbour, ties to the even code.
uint32_t referenceEncode(StorageKind kind, double value) {
  const FloatFormatInfo &info = getFloatFormatInfo(kind);
  uint32_t signBit = uint32_t(1) << (info.totalBits() - 1);
  uint32_t sign = std::signbit(value) ? signBit : 0;
  double magnitude = std::fabs(value);
  uint32_t lo = 0, hi = info.maxFiniteBits;
  if (magnitude >= info.maxFinite) {
    lo = info.maxFiniteBits;
  } else {
    while (hi - lo > 1) {
      uint32_t mid = lo + (hi - lo) / 2;
      if (decodeFloat(kind, mid) <= magnitude)
        lo = mid;
      else
        hi = mid;
    }
  }
  double below = decodeFloat(kind, lo);
  // Above the largest finite value, the next "value" is one more ulp.
  double above =
      lo == info.maxFiniteBits
          ? below + std::ldexp(info.unitRoundoff * 2, std::ilogb(below))
          : decodeFloat(kind, lo + 1);
  uint32_t rounded;
  if (magnitude == below)
    rounded = lo;
  else if (magnitude - below < above - magnitude)
    rounded = lo;
  else if (magnitude - below > above - magnitude)
    rounded = lo + 1;
  else
    rounded = (lo & 1) ? lo + 1 : lo;
  if (rounded > info.maxFiniteBits)
    return sign | (info.hasInfinity ? info.infinityBits : info.nanBits);
  return sign | rounded;
}

TEST(SoftFloatTest, RoundToNearestEvenMatchesReference) {
  Rng rng(1234);
  for (StorageKind kind : kFloatKinds) {
    const FloatFormatInfo &info = getFloatFormatInfo(kind);
    int minExp = std::ilogb(info.minSubnormal) - 3;
    int maxExp = std::ilogb(info.maxFinite) + 2;
    for (int i = 0; i < 100000; ++i) {
      double value;
      if (i % 3 == 0) {
        // An exact midpoint between two neighbouring codes: a tie.
        uint32_t code = uint32_t(uniformIndex(rng, 0, info.maxFiniteBits - 1));
        value = (decodeFloat(kind, code) + decodeFloat(kind, code + 1)) / 2;
      } else {
        value = std::ldexp(uniform(rng, 1.0, 2.0),
                           int(uniformIndex(rng, 0, maxExp - minExp)) + minExp);
      }
      if (i % 2)
        value = -value;
      ASSERT_EQ(encodeFloat(kind, value), referenceEncode(kind, value))
          << getStorageKindName(kind) << " value " << value;
    }
  }
}

TEST(SoftFloatTest, F32KindMatchesHardwareRounding) {
  Rng rng(77);
  for (int i = 0; i < 200000; ++i) {
    double value = std::ldexp(uniform(rng, -2.0, 2.0),
                              int(uniformIndex(rng, 0, 290)) - 160);
    float hardware = static_cast<float>(value);
    uint32_t bits;
    std::memcpy(&bits, &hardware, sizeof(bits));
    if (std::isinf(hardware))
      continue;
    ASSERT_EQ(encodeFloat(StorageKind::F32, value), bits) << value;
  }
}

#ifdef __FLT16_MAX__
TEST(SoftFloatTest, F16MatchesCompilerFloat16) {
  Rng rng(99);
  for (int i = 0; i < 200000; ++i) {
    double value =
        std::ldexp(uniform(rng, -2.0, 2.0), int(uniformIndex(rng, 0, 46)) - 28);
    _Float16 h = static_cast<_Float16>(static_cast<float>(value));
    uint16_t bits;
    std::memcpy(&bits, &h, sizeof(bits));
    ASSERT_EQ(floatToHalfBits(static_cast<float>(value)), bits) << value;
  }
}
#endif

TEST(SoftFloatTest, DirectedRounding) {
  Rng rng(5);
  for (StorageKind kind : kFloatKinds) {
    for (int i = 0; i < 20000; ++i) {
      double value = std::ldexp(uniform(rng, -2.0, 2.0),
                                int(uniformIndex(rng, 0, 40)) - 20);
      if (std::fabs(value) >= getFloatFormatInfo(kind).maxFinite)
        continue;
      double up = roundUpToFloatKind(kind, value);
      double down = roundDownToFloatKind(kind, value);
      ASSERT_GE(up, value);
      ASSERT_LE(down, value);
      ASSERT_TRUE(isRepresentable(kind, up));
      ASSERT_TRUE(isRepresentable(kind, down));
      if (up != value) {
        ASSERT_LT(nextDownInKind(kind, up), value);
      }
      if (down != value) {
        ASSERT_GT(nextUpInKind(kind, down), value);
      }
    }
    const FloatFormatInfo &info = getFloatFormatInfo(kind);
    EXPECT_TRUE(std::isinf(roundUpToFloatKind(kind, info.maxFinite * 1.01)));
    EXPECT_EQ(roundDownToFloatKind(kind, info.maxFinite * 1.01),
              info.maxFinite);
    EXPECT_EQ(nextUpInKind(kind, 0.0), info.minSubnormal);
    EXPECT_EQ(nextDownInKind(kind, 0.0), -info.minSubnormal);
  }
}

} // namespace
