//===- CertifyInternal.h - helpers shared by KVPrecCertify ------*- C++ -*-===//

#ifndef KVPREC_LIB_CERTIFY_CERTIFYINTERNAL_H
#define KVPREC_LIB_CERTIFY_CERTIFYINTERNAL_H

#include "kvprec/Certify/PlanCertifier.h"

#include <cstdio>
#include <string>

namespace kvprec::certify::detail {

/// ceil(a / b) for a >= 0, b > 0, without the overflow of (a + b - 1) / b.
inline int64_t ceilDiv(int64_t a, int64_t b) { return a / b + (a % b != 0); }

/// A number as a message shows it: shortest %g form.
inline std::string formatNumber(double value) {
  char buffer[32];
  std::snprintf(buffer, sizeof(buffer), "%g", value);
  return buffer;
}

/// The largest calibrated block absmax over absolute positions
/// [begin, end), or +inf when part of it was never observed (positions at
/// or past the calibrated length: a partly observed block only bounds the
/// positions calibration saw).
double blockAbsMax(const calib::CalibrationStats &stats,
                   const std::vector<float> &absMax, size_t lh, int64_t begin,
                   int64_t end);

/// Clips `ranges` to +-bound in place, from the class-wide `wide` ranges;
/// returns whether any channel got narrower.
bool clipInPlace(const analysis::BlockStatistics &wide, double bound,
                 analysis::BlockStatistics &ranges);

/// max_j span_j(V) of a head.
double getMaxValueSpan(const HeadEnvelope &envelope);

} // namespace kvprec::certify::detail

#endif // KVPREC_LIB_CERTIFY_CERTIFYINTERNAL_H
