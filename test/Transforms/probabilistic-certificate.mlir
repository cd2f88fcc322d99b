// certificate=probabilistic (error-bounds.md §9): assign records the kind,
// its failure probability and the rounding model among the assumptions;
// verify-plan recomputes it with both certifiers; report labels it.
// RUN: python3 %S/Inputs/make-calibration.py %t.safetensors
// RUN: kvprec-opt %S/Inputs/toy-cache.mlir --kvprec-import-calibration="file=%t.safetensors" -o %t.calibrated.mlir
// RUN: kvprec-opt %t.calibrated.mlir --kvprec-assign-precision="tolerance=5e-2 certificate=probabilistic confidence=1e-9 quiet=true" \
// RUN:   --kvprec-verify-plan -o %t.plan.mlir
// RUN: FileCheck %s --check-prefix=CERT < %t.plan.mlir
// CERT: certificate = <probabilistic, confidence = 1.0e-09, tolerance = [5.0e-02], bound = {{[0-9.e+-]+}}, layer_bounds = [{{[0-9.e+-]+}}, {{[0-9.e+-]+}}], necessary_bits = {{[0-9.e+-]+}}, average_bits = {{[0-9.e+-]+}}, bytes_vs_f16 = {{[0-9.e+-]+}}, calibrated_length = 64, query_samples = 2, extrapolation = none, softmax_scale = 3.5355339059327373e-01, dequant = f32, accumulate = f32, accumulate_block = 16, exp_ulps = 4, assumes = [sampled_query_bound, kv_ranges, calibrated_length, rounding_model]>

// Relabelled as deterministic, the same formats are checked against the
// deterministic certificate: its recomputed bound differs from the
// recorded one.
// RUN: sed -E 's/<probabilistic, confidence = 1.0e-09,/<deterministic,/; s/, rounding_model\]/]/' %t.plan.mlir \
// RUN: | not kvprec-opt --kvprec-verify-plan 2>&1 | FileCheck %s --check-prefix=RELABEL
// RELABEL: error: 'kvprec.alloc' op plan {{.*}}bound

// A forged bound and a different failure probability are refused.
// RUN: sed -E 's/, bound = [0-9.e+-]+/, bound = 1.0e-09/' %t.plan.mlir | not kvprec-opt --kvprec-verify-plan 2>&1 | FileCheck %s --check-prefix=FORGED
// FORGED: error: 'kvprec.alloc' op plan certificate records bound 1e-09 but the recomputed value is
// RUN: sed -E 's/confidence = 1.0e-09/confidence = 1.0e-01/' %t.plan.mlir | not kvprec-opt --kvprec-verify-plan 2>&1 | FileCheck %s --check-prefix=LOOSER
// LOOSER: error: 'kvprec.alloc' op plan certificate records {{.*}}bound{{.*}} but the recomputed value is

// The report says what the certificate is.
// RUN: kvprec-opt %t.plan.mlir --kvprec-report -o /dev/null | FileCheck %s --check-prefix=REPORT
// REPORT: certificate (PROBABILISTIC: holds with probability >= 1 - 1e-09 per decode step under rounding model (M), not a proof; joint over up to 2 query samples per head): tolerance 0.05
// REPORT: assumes: sampled_query_bound, kv_ranges, calibrated_length, rounding_model
// REPORT: rounding_model (M): stored K/V rounding errors are independent, mean zero
// RUN: kvprec-opt %t.plan.mlir --kvprec-report="format=json" -o /dev/null | FileCheck %s --check-prefix=JSON
// JSON: "confidence": 1.0000000000000001e-09,
// JSON: "model": "probabilistic",

// Impossible failure probabilities get a located error.
// RUN: not kvprec-opt %t.calibrated.mlir --kvprec-assign-precision="tolerance=5e-2 certificate=probabilistic confidence=0" 2>&1 | FileCheck %s --check-prefix=ZERO
// ZERO: error: 'kvprec.alloc' op certificate=probabilistic needs a failure probability confidence in (0, 1), got 0
// RUN: not kvprec-opt %t.calibrated.mlir --kvprec-assign-precision="tolerance=5e-2 certificate=probabilistic confidence=1.5" 2>&1 | FileCheck %s --check-prefix=ONE
// ONE: error: 'kvprec.alloc' op certificate=probabilistic needs a failure probability confidence in (0, 1), got 1.5
// RUN: not kvprec-opt %t.calibrated.mlir --kvprec-assign-precision="tolerance=5e-2 certificate=maybe" 2>&1 | FileCheck %s --check-prefix=KIND
// KIND: for the --certificate option: Cannot find option named 'maybe'!
