//===- SoftFloat.cpp - Bit-exact small float conversions ------------------===//
//
// One generic routine handles every kind: decompose the double into an
// integer significand and exponent, shift the significand to the target's
// quantum at that exponent (the subnormal quantum below the minimum normal
// exponent) with round-to-nearest-even on the discarded bits, and assemble the
// bit pattern. Because the biased encoding of positive values is monotone in
// the value, a carry out of the significand simply increments the exponent
// field, and overflow is "magnitude bits above the largest finite pattern".
//
//===----------------------------------------------------------------------===//

#include "kvprec/Analysis/SoftFloat.h"

#include <cassert>
#include <cmath>
#include <cstring>
#include <limits>

using namespace kvprec::analysis;

static FloatFormatInfo makeInfo(unsigned exponentBits, unsigned mantissaBits,
                                int bias, bool hasInfinity) {
  FloatFormatInfo info;
  info.exponentBits = exponentBits;
  info.mantissaBits = mantissaBits;
  info.bias = bias;
  info.hasInfinity = hasInfinity;
  uint32_t allOnesExponent = ((uint32_t(1) << exponentBits) - 1)
                             << mantissaBits;
  uint32_t allOnesMantissa = (uint32_t(1) << mantissaBits) - 1;
  if (hasInfinity) {
    info.maxFiniteBits = allOnesExponent - 1;
    info.infinityBits = allOnesExponent;
    info.nanBits = allOnesExponent | (uint32_t(1) << (mantissaBits - 1));
  } else {
    // f8E4M3FN: the all-ones exponent still holds normal values; only the
    // all-ones mantissa there is NaN.
    info.maxFiniteBits = allOnesExponent | (allOnesMantissa - 1);
    info.infinityBits = 0;
    info.nanBits = allOnesExponent | allOnesMantissa;
  }
  int emin = 1 - bias;
  int maxExponentField = int(info.maxFiniteBits >> mantissaBits);
  double maxFraction = double(info.maxFiniteBits & allOnesMantissa);
  info.maxFinite = std::ldexp(maxFraction + std::ldexp(1.0, int(mantissaBits)),
                              maxExponentField - bias - int(mantissaBits));
  info.minNormal = std::ldexp(1.0, emin);
  info.minSubnormal = std::ldexp(1.0, emin - int(mantissaBits));
  info.unitRoundoff = std::ldexp(1.0, -int(mantissaBits) - 1);
  return info;
}

const FloatFormatInfo &kvprec::analysis::getFloatFormatInfo(StorageKind kind) {
  static const FloatFormatInfo f32 = makeInfo(8, 23, 127, true);
  static const FloatFormatInfo f16 = makeInfo(5, 10, 15, true);
  static const FloatFormatInfo bf16 = makeInfo(8, 7, 127, true);
  static const FloatFormatInfo e4m3fn = makeInfo(4, 3, 7, false);
  static const FloatFormatInfo e5m2 = makeInfo(5, 2, 15, true);
  switch (kind) {
  case StorageKind::F32:
    return f32;
  case StorageKind::F16:
    return f16;
  case StorageKind::BF16:
    return bf16;
  case StorageKind::F8E4M3FN:
    return e4m3fn;
  case StorageKind::F8E5M2:
    return e5m2;
  default:
    break;
  }
  assert(false && "getFloatFormatInfo needs a float kind");
  return f32;
}

uint32_t kvprec::analysis::encodeFloat(StorageKind kind, double value,
                                       bool saturate) {
  const FloatFormatInfo &info = getFloatFormatInfo(kind);
  const unsigned m = info.mantissaBits;
  const uint32_t signBit = uint32_t(1) << (info.exponentBits + m);
  if (std::isnan(value))
    return info.nanBits;
  uint32_t sign = std::signbit(value) ? signBit : 0;
  auto overflow = [&]() -> uint32_t {
    if (saturate)
      return sign | info.maxFiniteBits;
    return sign | (info.hasInfinity ? info.infinityBits : info.nanBits);
  };
  double magnitude = std::fabs(value);
  if (std::isinf(magnitude))
    return overflow();
  if (magnitude == 0.0)
    return sign;

  uint64_t bits;
  std::memcpy(&bits, &magnitude, sizeof(bits));
  int exponentField = int(bits >> 52);
  uint64_t fraction = bits & ((uint64_t(1) << 52) - 1);
  // magnitude = significand * 2^(exponent - 52).
  uint64_t significand;
  int exponent;
  if (exponentField == 0) {
    significand = fraction;
    exponent = -1022;
  } else {
    significand = fraction | (uint64_t(1) << 52);
    exponent = exponentField - 1023;
  }
  const int emin = 1 - info.bias;
  // The target quantum is 2^(max(exponent, emin) - m); `shift` divides the
  // significand down to that quantum.
  int shift = 52 - int(m) + (exponent < emin ? emin - exponent : 0);
  uint64_t rounded;
  if (shift >= 64) {
    rounded = 0; // significand < 2^53, so the quotient is below one half.
  } else {
    rounded = significand >> shift;
    uint64_t remainder = significand & ((uint64_t(1) << shift) - 1);
    uint64_t half = uint64_t(1) << (shift - 1);
    if (remainder > half || (remainder == half && (rounded & 1)))
      ++rounded;
  }
  uint64_t magnitudeBits =
      exponent >= emin ? (uint64_t(exponent - emin) << m) + rounded : rounded;
  if (magnitudeBits > info.maxFiniteBits)
    return overflow();
  return sign | uint32_t(magnitudeBits);
}

double kvprec::analysis::decodeFloat(StorageKind kind, uint32_t bits) {
  const FloatFormatInfo &info = getFloatFormatInfo(kind);
  const unsigned m = info.mantissaBits;
  const unsigned total = info.totalBits();
  if (total < 32)
    bits &= (uint32_t(1) << total) - 1;
  bool negative = (bits >> (total - 1)) & 1;
  uint32_t exponentMask = (uint32_t(1) << info.exponentBits) - 1;
  uint32_t exponentField = (bits >> m) & exponentMask;
  uint32_t fraction = bits & ((uint32_t(1) << m) - 1);
  uint32_t allOnesMantissa = (uint32_t(1) << m) - 1;
  if (exponentField == exponentMask) {
    if (info.hasInfinity) {
      if (fraction != 0)
        return std::numeric_limits<double>::quiet_NaN();
      return negative ? -std::numeric_limits<double>::infinity()
                      : std::numeric_limits<double>::infinity();
    }
    if (fraction == allOnesMantissa)
      return std::numeric_limits<double>::quiet_NaN();
  }
  double magnitude;
  if (exponentField == 0)
    magnitude = std::ldexp(double(fraction), 1 - info.bias - int(m));
  else
    magnitude = std::ldexp(double(fraction | (uint32_t(1) << m)),
                           int(exponentField) - info.bias - int(m));
  return negative ? -magnitude : magnitude;
}

double kvprec::analysis::roundToFloatKind(StorageKind kind, double value,
                                          bool saturate) {
  return decodeFloat(kind, encodeFloat(kind, value, saturate));
}

bool kvprec::analysis::isRepresentable(StorageKind kind, double value) {
  return std::isfinite(value) && roundToFloatKind(kind, value) == value;
}

double kvprec::analysis::nextUpInKind(StorageKind kind, double representable) {
  assert(isRepresentable(kind, representable) && "not a value of the kind");
  const FloatFormatInfo &info = getFloatFormatInfo(kind);
  if (representable == info.maxFinite)
    return std::numeric_limits<double>::infinity();
  if (representable >= 0.0) // Includes -0, whose successor is the smallest
                            // positive subnormal.
    return decodeFloat(kind, encodeFloat(kind, std::fabs(representable)) + 1);
  uint32_t magnitudeBits = encodeFloat(kind, -representable);
  return -decodeFloat(kind, magnitudeBits - 1);
}

double kvprec::analysis::nextDownInKind(StorageKind kind,
                                        double representable) {
  return -nextUpInKind(kind, -representable);
}

double kvprec::analysis::roundUpToFloatKind(StorageKind kind, double value) {
  if (std::isnan(value))
    return value;
  // Saturating rounding keeps the result finite; it is the nearest value, so
  // the smallest representable >= value is either it or its successor.
  double nearest = roundToFloatKind(kind, value, /*saturate=*/true);
  if (nearest < value)
    return nextUpInKind(kind, nearest);
  return nearest;
}

double kvprec::analysis::roundDownToFloatKind(StorageKind kind, double value) {
  return -roundUpToFloatKind(kind, -value);
}
