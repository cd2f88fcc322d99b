// RUN: python3 %S/Inputs/make-calibration.py %t.safetensors
// RUN: kvprec-opt %S/Inputs/toy-cache.mlir --kvprec-import-calibration="file=%t.safetensors" \
// RUN:   --kvprec-assign-precision="tolerance=1e-2 quiet=true" -o %t.planned.mlir
// RUN: kvprec-opt %t.planned.mlir --kvprec-report -o /dev/null | FileCheck %s --check-prefix=TABLE
// TABLE: kvprec precision report: cache 2x2x64x8xf32
// TABLE: shape: 2 layers x 2 KV heads x 64 positions x head_dim 8
// TABLE: classes: sink 4, window 16 (whole blocks), body blocks of 16
// TABLE: memory: {{[0-9]+}} bytes vs 8192 in fp16
// TABLE: certificate: tolerance 0.01, certified bound
// TABLE: HNF necessary bits (lower bound, not sufficient):
// TABLE: calibration: @calibration (model toy, 64 positions observed)
// TABLE: layer head | K sink
// TABLE-SAME: |q|_1   |qK|    n
// The toy calibration's qk_logit_max is 2 (scale 1/sqrt(head_dim)).
// TABLE-COUNT-4: {{^[01] +[01] +\|.* 4 +2 +10 +\|}}

// RUN: kvprec-opt %t.planned.mlir --kvprec-report="format=json output=%t.json" -o /dev/null
// RUN: FileCheck %s --check-prefix=JSON < %t.json
// JSON: "bytes_vs_f16":
// JSON: "hnf_necessary_bits_lower_bound":
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
// BADFORMAT: error: kvprec-report: format must be table, json or svg, got 'html'
// RUN: not kvprec-opt %S/Inputs/toy-cache.mlir --kvprec-report 2>&1 | FileCheck %s --check-prefix=NOPLAN
// NOPLAN: error: kvprec-report: no cache has a plan (run --kvprec-assign-precision first)
// RUN: not kvprec-opt %t.planned.mlir --kvprec-report="output=%t.missing/dir/report.txt" 2>&1 | FileCheck %s --check-prefix=BADFILE
// BADFILE: error: kvprec-report: cannot write '{{.*}}report.txt':
