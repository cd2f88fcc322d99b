//===- ReferenceCertifier.h - the certificate, position by position -*- C++ -*-===//
//
// A second implementation of the static certificate, written straight from
// error-bounds.md (§2 with the envelopes of §5, the kernel terms of §8) in
// its simplest form, for kvprec-verify-plan. It shares only the per-element
// error model (kvprec/Analysis/ErrorModel.h) and the plan's position-to-
// format map with the allocator's certifier (PlanCertifier.h); it builds no
// class envelope, segment error or class bound of its own kind:
//
//  * every position t of the full cache gets its own storage history (the
//    format it is quantized in, and for a body position the window format
//    it was first stored in), its own K/V ranges (class-wide, the sink's
//    calibrated absmax, or its block's for per-block plans), and from them
//    delta^K_{t,j}, delta^V_{t,j}, E_t and the kernel's rounding;
//  * the mass envelope of each class is re-derived from the calibration's
//    relative classes; the worst attention is the linear program
//    max sum_t a_t x_t over a_t >= 0, sum_t a_t = 1 and the class caps,
//    solved by filling positions largest-first;
//  * the certificate is the §2 Theorem with that worst attention, per
//    output channel, plus the kernel's accumulation error;
//  * for certificate=probabilistic (§9), every position also gets its
//    Hoeffding deviation sigma_t and the capped logit error
//    E~_t = min(E_t, lambda_1 sigma_t) + kernel rounding, and each class
//    its cap on sum_t a_t^2 (from the sample's squared-weight bins, or
//    attn_max_weight times its mass); the key and value parts are the
//    smaller of their Hoeffding and deterministic forms at E~.
//
// Positions whose every input is identical (same class, formats and ranges)
// have identical terms and are evaluated once; that is an exact
// deduplication, not an approximation. The full length dominates every
// shorter one: at length L < capacity the window holds blocks stored in the
// window format with the class-wide ranges and the body a subset of the
// full cache's body blocks, and the mass envelopes do not depend on L, so
// every term at L also occurs at the capacity.
//
//===----------------------------------------------------------------------===//

#ifndef KVPREC_CERTIFY_REFERENCECERTIFIER_H
#define KVPREC_CERTIFY_REFERENCECERTIFIER_H

#include "kvprec/Certify/Plan.h"

namespace kvprec {
namespace certify {

/// The static certificate (infinity norm over the output channels) of
/// (layer, head) of `plan` from `stats` under `options`. Fails with a
/// message when a format cannot store its positions or the calibration does
/// not cover the plan (checkCoverage).
Status certifyHeadByPosition(const calib::CalibrationStats &stats,
                             const Plan &plan, int64_t layer, int64_t head,
                             const CertifyOptions &options, double &bound);

} // namespace certify
} // namespace kvprec

#endif // KVPREC_CERTIFY_REFERENCECERTIFIER_H
