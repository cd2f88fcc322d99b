//===- Quantizer.h - Bit-exact KV-cache quantization emulation --*- C++ -*-===//
//
// Emulates, bit for bit, how a kernel stores and reloads cache elements in
// every StorageFormat, and returns for every element the error bound delta of
// error-bounds.md §6 computed from stored data only (codes, stored scale and
// zero point), as a run-time certificate would.
//
// The emulated kernel (the pipeline's quantize-on-store and dequantize-on-load
// contract):
//  * Scale. Symmetric int-b: s = absmax / (2^{b-1}-1); asymmetric:
//    z = min, s = (max - z) / (2^b-1); fp8: s = absmax / maxFinite. The scale
//    and zero point are ROUNDED to the scale kind: z toward -inf and s toward
//    +inf, to the smallest stored value for which no element clips (checked
//    exactly). Elements are then quantized with the stored values themselves
//    (error-bounds.md §5 "Other assumptions"). An all-zero group gets the
//    smallest positive scale of the scale kind.
//  * Quantize (f32 arithmetic): int symmetric k = rne(x / s); asymmetric
//    k = rne((x - z) / s); fp8 c = rne_fp8(x / s); f16/bf16 c = rne(x).
//  * Dequantize in the dequantizer precision P (f32 by default):
//    x^ = fl_P(k * s), asymmetric x^ = fl_P(fl_P(k * s) + z).
//
// The per-element bound, with u_q = 2^-24 the quantizer's f32 unit roundoff,
// (u_P, eta_P) the dequantizer's unit roundoff and smallest subnormal, and
// (u_8, eta_8) those of the fp8 kind:
//  * int symmetric:  s (1/2 + 3 u_q (|k|+1)) + u_P |x^| + eta_P/2
//  * int asymmetric: s (1/2 + 4 u_q (k+1)) + u_P (|fl_P(k s)| + |x^|) + eta_P
//  * fp8:            s (u_8 |c| + eta_8/2 + 3 u_q (2|c| + eta_8))
//                      + u_P |x^| + eta_P/2
//  * f16/bf16:       u |x^| + eta/2;   f32: 0.
// The u_q terms cover the f32 rounding of x/s and x-z (also when a kernel
// multiplies by a rounded reciprocal instead of dividing); the u_P terms are
// the dequantize multiply (and add) of §5, which an fp16 dequantizer makes
// significant. A kernel that fuses the asymmetric multiply-add (one rounding)
// satisfies the same bound.
//
//===----------------------------------------------------------------------===//

#ifndef KVPREC_ANALYSIS_QUANTIZER_H
#define KVPREC_ANALYSIS_QUANTIZER_H

#include "kvprec/Analysis/Matrix.h"
#include "kvprec/Format/Status.h"
#include "kvprec/Format/StorageFormat.h"

#include <cstddef>
#include <cstdint>
#include <vector>

namespace kvprec {
namespace analysis {

/// Unit roundoff of the quantizer's own arithmetic (x/s and x-z in f32).
constexpr double kQuantizeUnitRoundoff = 0x1p-24;

/// The precision in which the dequantize multiply (and add) runs. It must
/// hold the stored scale, zero point and unscaled elements exactly
/// (verifyDequantizerConfig); a kernel with an f16 dequantizer stores f16
/// scales.
struct DequantizerConfig {
  StorageKind precision = StorageKind::F32;
};

/// Unit roundoff u_deq and smallest subnormal eta of the dequantizer.
double getDequantizerUnitRoundoff(const DequantizerConfig &config);
double getDequantizerMinSubnormal(const DequantizerConfig &config);

/// Checks that `format` is valid for analysis (Int3 allowed) and that the
/// dequantizer precision is F32, F16 or BF16 and represents the format's
/// stored values exactly.
Status verifyDequantizerConfig(const StorageFormat &format,
                               const DequantizerConfig &config);

/// Stored per-group parameters (both exact values of the scale kind).
/// Unscaled formats have scale == 0.
struct GroupScale {
  double scale = 0.0;
  double zeroPoint = 0.0; // Asymmetric only.
};

/// The stored scale of a symmetric group (int or fp8) with absolute maximum
/// `absMax`: the smallest value s of the scale kind with
/// s * maxCode >= absMax. Fails when it exceeds the scale kind's range.
Status computeSymmetricScale(const StorageFormat &format, double absMax,
                             GroupScale &result);
/// The stored zero point (min rounded down to the scale kind) and scale (the
/// smallest s with s * (2^b-1) >= fl32(max - z)) of an asymmetric int group.
Status computeAsymmetricScale(const StorageFormat &format, double minValue,
                              double maxValue, GroupScale &result);
/// The stored parameters for a group of values (dispatches on the scheme;
/// unscaled formats get a zero GroupScale).
Status computeGroupScale(const StorageFormat &format, const float *values,
                         size_t count, GroupScale &result);

/// The stored code of one element: an integer code for int formats, the bit
/// pattern for float formats (fp8, f16, bf16, f32).
int32_t quantizeElement(const StorageFormat &format, const GroupScale &scale,
                        float value);
/// The value the dequantizer produces for a stored code.
float dequantizeElement(const StorageFormat &format, const GroupScale &scale,
                        int32_t code, const DequantizerConfig &config);
/// The error bound delta for one stored element, from stored data only.
double computeStoredElementErrorBound(const StorageFormat &format,
                                      const GroupScale &scale, int32_t code,
                                      float dequantized,
                                      const DequantizerConfig &config);

struct QuantizedGroup {
  GroupScale scale;
  std::vector<int32_t> codes;
  std::vector<float> dequantized;
  std::vector<double> errorBounds; // delta per element.
};

/// Quantizes and dequantizes one scale group.
Status quantizeGroup(const StorageFormat &format, const float *values,
                     size_t count, const DequantizerConfig &config,
                     QuantizedGroup &result);

struct QuantizedMatrix {
  Matrix dequantized; // x^, same shape as the input.
  Matrix errorBounds; // delta per element.
  /// Stored parameters, one per group: token-major for TokenGroup
  /// (token t, group g at t * numGroupsPerToken + g), channel-major for
  /// ChannelGroup (channel j, token group g at j * numTokenGroups + g).
  std::vector<GroupScale> scales;
};

/// Quantizes a block of cache vectors, rows = tokens and columns = channels,
/// grouped by the format's granularity. TokenGroup needs groupSize to divide
/// the channel count; ChannelGroup allows a last partial token group (a
/// cache that is still filling). Values must be f32 values (the cache's
/// logical element type).
Status quantizeMatrix(const StorageFormat &format, const Matrix &values,
                      const DequantizerConfig &config, QuantizedMatrix &result);

} // namespace analysis
} // namespace kvprec

#endif // KVPREC_ANALYSIS_QUANTIZER_H
