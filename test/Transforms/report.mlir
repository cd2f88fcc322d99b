// RUN: python3 %S/Inputs/make-calibration.py %t.safetensors
// RUN: kvprec-opt %S/Inputs/toy-cache.mlir --kvprec-import-calibration="file=%t.safetensors" \
// RUN:   --kvprec-assign-precision="tolerance=1e-2 quiet=true" -o %t.planned.mlir
// RUN: kvprec-opt %t.planned.mlir --kvprec-report -o /dev/null | FileCheck %s --check-prefix=TABLE
// TABLE: kvprec precision report: cache 2x2x64x8xf32
// TABLE: shape: 2 layers x 2 KV heads x 64 positions x head_dim 8
// TABLE: classes: sink 4, window 16 (whole blocks), body blocks of 16
// TABLE: memory: {{[0-9]+}} bytes vs 8192 in fp16
// TABLE: layout: arena of {{[0-9]+}} bytes, {{[0-9]+}} of stored data
// TABLE: certificate (deterministic, joint over up to 2 query samples per head): tolerance 0.01, certified bound [[BOUND:[0-9.]+]] (recomputed [[BOUND]])
// TABLE: layer bounds: [[BOUND]] [[BOUND]]
// TABLE: HNF necessary bits (lower bound, not sufficient): {{[0-9.]+}} (necessary only)
// TABLE: arithmetic contract: softmax scale 0.353553, dequantize in f32, accumulate in f32 over blocks of 16 positions, exp within 4 ulps
// TABLE: assumes: sampled_query_bound, kv_ranges, calibrated_length
// TABLE: calibration: @calibration (model toy, 64 positions observed)
// TABLE: the static bound holds for queries whose attention masses (attention_mass){{.*}}(kv_ranges){{.*}}The run-time certificate of kvprec.attend needs none of these
// TABLE: layer head | K sink
// TABLE-SAME: |q|_1   |qK|    n
// The toy calibration's qk_logit_max is 2 (scale 1/sqrt(head_dim)).
// TABLE-COUNT-4: {{^[01] +[01] +\|.* 4 +2 +10 +\|}}

// RUN: kvprec-opt %t.planned.mlir --kvprec-report="format=json output=%t.json" -o /dev/null
// RUN: FileCheck %s --check-prefix=JSON < %t.json
// JSON: "certificate": {
// JSON: "accumulate": "f32",
// JSON: "accumulate_block": 16,
// JSON: "assumes": [
// JSON-NEXT: "sampled_query_bound",
// JSON-NEXT: "kv_ranges",
// JSON-NEXT: "calibrated_length"
// RUN: FileCheck %s --check-prefix=LAYOUT < %t.json
// LAYOUT: "layout": {
// LAYOUT-NEXT: "arena_bytes": 8768,
// LAYOUT-NEXT: "data_bytes": 7616
// JSON: "bytes_vs_f16":
// JSON: "calibrated_length": 64,
// JSON: "dequant": "f32",
// JSON: "exp_ulps": 4,
// JSON: "extrapolation": "none",
// JSON: "hnf_necessary_bits_lower_bound":
// JSON: "layer_bounds": [
// JSON: "model": "deterministic",
// JSON: "softmax_scale": 0.35355339059327373,
// JSON: "tolerance": [
// JSON-NEXT: 0.01
// JSON-NEXT: ]
// JSON: "envelope": {
// JSON: "logit_max": 2
// JSON: "sink_mass": 0.5
// JSON: "attention": {
// JSON: "entropy_mean": 1

// RUN: kvprec-opt %t.planned.mlir --kvprec-report="format=svg" -o /dev/null | FileCheck %s --check-prefix=SVG
// SVG: <svg xmlns="http://www.w3.org/2000/svg"
// SVG-COUNT-24: <rect
// SVG: </svg>

// RUN: not kvprec-opt %t.planned.mlir --kvprec-report="format=html" 2>&1 | FileCheck %s --check-prefix=BADFORMAT
// BADFORMAT: for the --format option: Cannot find option named 'html'!
// RUN: not kvprec-opt %S/Inputs/toy-cache.mlir --kvprec-report 2>&1 | FileCheck %s --check-prefix=NOPLAN
// NOPLAN: error: kvprec-report: no cache has a plan (run --kvprec-assign-precision first)
// RUN: not kvprec-opt %t.planned.mlir --kvprec-report="output=%t.missing/dir/report.txt" 2>&1 | FileCheck %s --check-prefix=BADFILE
// BADFILE: error: kvprec-report: cannot write '{{.*}}report.txt':

// A plan certified past its calibration by the worst-case rule says so.
// RUN: python3 %S/Inputs/make-calibration.py %t.short.safetensors --max-positions 32
// RUN: kvprec-opt %S/Inputs/toy-cache.mlir --kvprec-import-calibration="file=%t.short.safetensors" \
// RUN:   --kvprec-assign-precision="tolerance=1 extrapolate=worst-case margin=2 quiet=true" \
// RUN:   --kvprec-report -o /dev/null | FileCheck %s --check-prefix=EXTRAPOLATED
// EXTRAPOLATED: assumes: query_magnitude, logit_envelope, kv_ranges, extrapolation_margin
// EXTRAPOLATED: EXTRAPOLATED: the cache holds 64 positions, calibration observed 32; past them every class mass is 1 and every magnitude envelope is 2 times the calibrated one (a stated rule, not data)
// EXTRAPOLATED: calibration: @calibration (model toy, 32 positions observed)
// EXTRAPOLATED-COUNT-4: {{^[01] +[01] +\|.*\| 1.000  1.000  1.000  4 }}
