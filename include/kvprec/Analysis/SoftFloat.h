//===- SoftFloat.h - Bit-exact small float conversions ----------*- C++ -*-===//
//
// Software round-to-nearest-even conversion between double and the float
// kinds a KV cache stores (f32, f16, bf16, f8E4M3FN, f8E5M2), done on bit
// patterns so results do not depend on compiler or hardware support. These
// conversions are the ground truth the quantizer emulation is built on.
//
// Overflow follows IEEE/OCP non-saturating semantics unless `saturate` is
// set: kinds with infinities (f32, f16, bf16, e5m2) round to inf, and
// f8E4M3FN, which has no inf, produces NaN. With `saturate`, overflow clamps
// to the largest finite value.
//
//===----------------------------------------------------------------------===//

#ifndef KVPREC_ANALYSIS_SOFTFLOAT_H
#define KVPREC_ANALYSIS_SOFTFLOAT_H

#include "kvprec/Format/StorageFormat.h"

#include <cstdint>

namespace kvprec {
namespace analysis {

struct FloatFormatInfo {
  unsigned exponentBits;
  unsigned mantissaBits; // Explicit fraction bits.
  int bias;
  /// True for IEEE-like kinds (all-ones exponent is inf/NaN); false for
  /// f8E4M3FN, where only S.1111.111 is NaN.
  bool hasInfinity;
  uint32_t maxFiniteBits; // Magnitude bits of the largest finite value.
  uint32_t infinityBits;  // Meaningless when !hasInfinity.
  uint32_t nanBits;       // Canonical quiet NaN.
  double maxFinite;
  double minNormal;
  double minSubnormal; // eta: spacing of the subnormal range.
  double unitRoundoff; // u = 2^-(mantissaBits+1).
  unsigned totalBits() const { return 1 + exponentBits + mantissaBits; }
};

/// Properties of a float kind; `kind` must satisfy isFloatKind().
const FloatFormatInfo &getFloatFormatInfo(StorageKind kind);

/// Round `value` to the nearest value of `kind` (ties to even) and return its
/// bit pattern. NaN maps to the canonical NaN.
uint32_t encodeFloat(StorageKind kind, double value, bool saturate = false);
/// The value of a bit pattern (exact: every value of these kinds is a
/// double).
double decodeFloat(StorageKind kind, uint32_t bits);
/// decodeFloat(encodeFloat(value)).
double roundToFloatKind(StorageKind kind, double value, bool saturate = false);
/// True when `value` is a finite value of `kind`.
bool isRepresentable(StorageKind kind, double value);
/// Smallest finite value of `kind` that is >= value (round toward +inf), or
/// +inf when none exists.
double roundUpToFloatKind(StorageKind kind, double value);
/// Largest finite value of `kind` that is <= value (round toward -inf), or
/// -inf when none exists.
double roundDownToFloatKind(StorageKind kind, double value);
/// Neighbours of a finite representable value (+-inf past the largest).
double nextUpInKind(StorageKind kind, double representable);
double nextDownInKind(StorageKind kind, double representable);

// Convenience wrappers for the common conversions.
inline uint16_t floatToHalfBits(float x) {
  return static_cast<uint16_t>(encodeFloat(StorageKind::F16, x));
}
inline float halfBitsToFloat(uint16_t bits) {
  return static_cast<float>(decodeFloat(StorageKind::F16, bits));
}
inline uint16_t floatToBFloat16Bits(float x) {
  return static_cast<uint16_t>(encodeFloat(StorageKind::BF16, x));
}
inline float bfloat16BitsToFloat(uint16_t bits) {
  return static_cast<float>(decodeFloat(StorageKind::BF16, bits));
}
inline uint8_t floatToF8E4M3FNBits(float x, bool saturate = false) {
  return static_cast<uint8_t>(encodeFloat(StorageKind::F8E4M3FN, x, saturate));
}
inline float f8E4M3FNBitsToFloat(uint8_t bits) {
  return static_cast<float>(decodeFloat(StorageKind::F8E4M3FN, bits));
}
inline uint8_t floatToF8E5M2Bits(float x, bool saturate = false) {
  return static_cast<uint8_t>(encodeFloat(StorageKind::F8E5M2, x, saturate));
}
inline float f8E5M2BitsToFloat(uint8_t bits) {
  return static_cast<float>(decodeFloat(StorageKind::F8E5M2, bits));
}

} // namespace analysis
} // namespace kvprec

#endif // KVPREC_ANALYSIS_SOFTFLOAT_H
