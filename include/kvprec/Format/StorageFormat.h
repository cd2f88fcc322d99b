//===- StorageFormat.h - KV-cache element storage formats -------*- C++ -*-===//
//
// A plain description of how one K or V block is stored: the element kind,
// and for scaled kinds (integers and fp8) the quantization scheme, the scale
// granularity, the group size and the scale's own element type. It mirrors the
// kvprec dialect's storage-format attribute so the MLIR passes can convert
// between the two without loss.
//
//===----------------------------------------------------------------------===//

#ifndef KVPREC_FORMAT_STORAGEFORMAT_H
#define KVPREC_FORMAT_STORAGEFORMAT_H

#include "kvprec/Format/Status.h"

#include <cstdint>
#include <string>
#include <utility>

namespace kvprec {
namespace analysis {

/// Element kinds. The first eight are storable by the dialect. Int3 exists
/// only as an analysis option (error-bounds.md §4 lists int3 among the
/// candidate formats); it cannot be packed by the dialect, and
/// isStorableKind() returns false for it.
enum class StorageKind : uint8_t {
  F32,
  F16,
  BF16,
  F8E4M3FN,
  F8E5M2,
  Int8,
  Int4,
  Int2,
  Int3, // Analysis only: not storable.
};

enum class QuantScheme : uint8_t { Symmetric, Asymmetric };

enum class Granularity : uint8_t {
  /// One scale per group of `groupSize` consecutive channels of one token.
  TokenGroup,
  /// One scale per channel over `groupSize` consecutive tokens (KIVI keys).
  ChannelGroup,
};

struct StorageFormat {
  StorageKind kind = StorageKind::F32;
  QuantScheme scheme = QuantScheme::Symmetric;
  Granularity granularity = Granularity::TokenGroup;
  unsigned groupSize = 1;
  /// Element type of the stored scale and zero point: F32, F16 or BF16.
  StorageKind scaleKind = StorageKind::F32;

  /// An unscaled float format (F32, F16, BF16): fl(x) is stored directly.
  static StorageFormat unscaled(StorageKind kind);
  /// A scaled format (integers, fp8).
  static StorageFormat scaled(StorageKind kind, QuantScheme scheme,
                              Granularity granularity, unsigned groupSize,
                              StorageKind scaleKind);

  bool operator==(const StorageFormat &other) const;
  bool operator!=(const StorageFormat &other) const {
    return !(*this == other);
  }
};

/// Bits of one stored element (scale overhead excluded).
unsigned getBitWidth(StorageKind kind);
/// F32, F16, BF16, F8E4M3FN, F8E5M2.
bool isFloatKind(StorageKind kind);
bool isFp8Kind(StorageKind kind);
bool isIntegerKind(StorageKind kind);
/// False only for the analysis-only Int3.
bool isStorableKind(StorageKind kind);
/// Integer and fp8 kinds carry a scale; F32/F16/BF16 do not.
bool isScaledKind(StorageKind kind);
inline bool isScaled(const StorageFormat &format) {
  return isScaledKind(format.kind);
}

/// "f32", "f16", "bf16", "f8E4M3FN", "f8E5M2", "int8", "int4", "int2",
/// "int3".
const char *getStorageKindName(StorageKind kind);
const char *getQuantSchemeName(QuantScheme scheme);
const char *getGranularityName(Granularity granularity);
/// E.g. "f16" or "int4<asym,channel_group=32,scale=f16>".
std::string getFormatName(const StorageFormat &format);

/// Integer code range of a scaled integer format: symmetric
/// [-(2^{b-1}-1), 2^{b-1}-1] and asymmetric [0, 2^b-1].
std::pair<int32_t, int32_t> getIntegerCodeRange(StorageKind kind,
                                                QuantScheme scheme);

/// Bits stored per scale group besides the elements: one scale, plus one
/// zero point of the scale's type when asymmetric. Zero for unscaled formats.
/// (The bytes of a cache segment are certify::getSegmentBytes.)
unsigned getGroupOverheadBits(const StorageFormat &format);
/// Average bits per element including scale/zero-point overhead.
double getEffectiveBitsPerElement(const StorageFormat &format);

/// Checks: group size > 0; fp8 only symmetric; the scale kind is F32, F16 or
/// BF16; unscaled float formats are symmetric (they have no zero point); and,
/// when `requireStorable`, the kind is storable (not Int3).
Status verifyStorageFormat(const StorageFormat &format,
                           bool requireStorable = true);

} // namespace analysis
} // namespace kvprec

#endif // KVPREC_FORMAT_STORAGEFORMAT_H
