//===- Plan.h - a precision plan as plain data ------------------*- C++ -*-===//
//
// The certificate of one (layer, KV head) of a plain plan
// (kvprec/Format/Plan.h).
//
//===----------------------------------------------------------------------===//

#ifndef KVPREC_CERTIFY_PLAN_H
#define KVPREC_CERTIFY_PLAN_H

#include "kvprec/Certify/PlanCertifier.h"

#include <cstdint>
#include <vector>

namespace kvprec {
namespace certify {

/// Recomputes the static certificate of one (layer, head) of `plan` from the
/// calibration alone. Per-block body formats are certified with each
/// block's own calibrated ranges and the worst block taken for the body.
Status certifyPlanHead(const calib::CalibrationStats &stats, const Plan &plan,
                       int64_t layer, int64_t head,
                       const CertifyOptions &options,
                       analysis::StaticCertifiedBound &result,
                       double &maxKeyLogitError);

} // namespace certify
} // namespace kvprec

#endif // KVPREC_CERTIFY_PLAN_H
