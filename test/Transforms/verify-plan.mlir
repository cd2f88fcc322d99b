// RUN: python3 %S/Inputs/make-calibration.py %t.safetensors
// RUN: kvprec-opt %S/Inputs/toy-cache.mlir --kvprec-import-calibration="file=%t.safetensors" -o %t.calibrated.mlir

// A hand-written plan is checked with the tolerance given on the command
// line, and update=true records the recomputed certificate.
// RUN: sed 's/!kvprec.cache<2x2x64x8xf32>/!kvprec.cache<2x2x64x8xf32, #kvprec.plan<layers = 2, heads = 2, capacity = 64, block = 16, sink = 4, window = 16, formats = [#kvprec.format<f32>, #kvprec.format<i8, asymmetric, token_group = 8, scale = f16>], sink_formats = [0], body_formats = [1], window_formats = [0]>>/g' %t.calibrated.mlir > %t.hand.mlir
// The window holds the blocks overlapping the newest 16 positions: at
// capacity 64 with a 4-position sink that is 28 positions (36..63), the body
// 32: 4 x 32 + 28 x 32 + 32 x 12 bits = 22 bits per element.
// RUN: kvprec-opt %t.hand.mlir --kvprec-verify-plan="tolerance=1e-1 update=true" | FileCheck %s --check-prefix=UPDATE
// UPDATE: certificate = <deterministic, tolerance = [1.0e-01], bound = [[BOUND:[0-9.e+-]+]], layer_bounds = [{{[0-9.e+-]+}}, {{[0-9.e+-]+}}], necessary_bits = {{[0-9.e+-]+}}, average_bits = 2.2e+01, bytes_vs_f16 = 1.375e+00, calibrated_length = 64, query_samples = 2, extrapolation = none, softmax_scale = 3.5355339059327373e-01, dequant = f32, accumulate = f32, accumulate_block = 16, exp_ulps = 4, assumes = [sampled_query_bound, kv_ranges, calibrated_length]>

// The same plan cannot meet a tight tolerance.
// RUN: not kvprec-opt %t.hand.mlir --kvprec-verify-plan="tolerance=1e-6" 2>&1 | FileCheck %s --check-prefix=TIGHT
// TIGHT: error: 'kvprec.alloc' op plan of layer 0, KV head 0 has position-by-position bound 0.00983491, above the tolerance 1e-06

// i2 keys: their logit error makes the bound far exceed the tolerance.
// RUN: sed 's/#kvprec.format<i8, asymmetric, token_group = 8, scale = f16>/#kvprec.format<i2, asymmetric, token_group = 8, scale = f16>/' %t.hand.mlir > %t.i2.mlir
// RUN: not kvprec-opt %t.i2.mlir --kvprec-verify-plan="tolerance=1e-1" 2>&1 | FileCheck %s --check-prefix=I2
// I2: error: 'kvprec.alloc' op plan of layer 0, KV head 0 has position-by-position bound

// The allocator's own all-f32 plan verifies: the HNF bits are a necessary
// condition only, and its bound is the kernel arithmetic's rounding alone.
// RUN: kvprec-opt %t.calibrated.mlir --kvprec-assign-precision="tolerance=1e-4 formats=f32" --kvprec-verify-plan \
// RUN: | FileCheck %s --check-prefix=F32
// F32: formats = [#kvprec.format<f32>]{{.*}}certificate = <deterministic, tolerance = [1.0e-04], bound = {{[1-9][0-9.]*e-0[5-7]}},

// Every recorded field is recomputed and compared: forged average bits,
// necessary bits, bytes vs fp16, layer bounds, calibrated length and
// contract are each refused.
// RUN: kvprec-opt %t.calibrated.mlir --kvprec-assign-precision="tolerance=1e-2" -o %t.plan.mlir
// RUN: sed -E 's/average_bits = [0-9.e+-]+/average_bits = 3.1e+01/' %t.plan.mlir | not kvprec-opt --kvprec-verify-plan 2>&1 | FileCheck %s --check-prefix=AVG
// AVG: error: 'kvprec.alloc' op plan certificate records average_bits 31 but the recomputed value is 14
// RUN: sed -E 's/necessary_bits = [0-9.e+-]+/necessary_bits = 1.0e+30/' %t.plan.mlir | not kvprec-opt --kvprec-verify-plan 2>&1 | FileCheck %s --check-prefix=HNF
// HNF: error: 'kvprec.alloc' op plan certificate records necessary_bits 1e+30 but the recomputed value is
// RUN: sed -E 's/bytes_vs_f16 = [0-9.e+-]+/bytes_vs_f16 = 9.9e+01/' %t.plan.mlir | not kvprec-opt --kvprec-verify-plan 2>&1 | FileCheck %s --check-prefix=BYTES
// BYTES: error: 'kvprec.alloc' op plan certificate records bytes_vs_f16 99 but the recomputed value is 0.875
// RUN: sed -E 's/layer_bounds = \[[0-9.e+-]+,/layer_bounds = [1.0e-09,/' %t.plan.mlir | not kvprec-opt --kvprec-verify-plan 2>&1 | FileCheck %s --check-prefix=LAYERBOUND
// LAYERBOUND: error: 'kvprec.alloc' op plan certificate records layer_bounds[0] 1e-09 but the recomputed value is
// RUN: sed -E 's/calibrated_length = 64/calibrated_length = 512/' %t.plan.mlir | not kvprec-opt --kvprec-verify-plan 2>&1 | FileCheck %s --check-prefix=LENGTH
// LENGTH: error: 'kvprec.alloc' op plan certificate records calibrated_length 512 but the recomputed value is 64
// RUN: sed -E 's/exp_ulps = 4/exp_ulps = 0/' %t.plan.mlir | not kvprec-opt --kvprec-verify-plan 2>&1 | FileCheck %s --check-prefix=ULPS
// ULPS: error: 'kvprec.alloc' op plan certificate records exp_ulps 0 but the recomputed value is 4
// RUN: sed -E 's/accumulate_block = 16/accumulate_block = 1024/' %t.plan.mlir | not kvprec-opt --kvprec-verify-plan 2>&1 | FileCheck %s --check-prefix=ACCBLOCK
// ACCBLOCK: error: 'kvprec.alloc' op plan certificate records accumulate_block 1024 but the recomputed value is 16
// RUN: sed -E 's/dequant = f32/dequant = f16/' %t.plan.mlir | not kvprec-opt --kvprec-verify-plan 2>&1 | FileCheck %s --check-prefix=DEQUANT
// DEQUANT: error: 'kvprec.alloc' op plan certificate records dequant f16 but the recomputed value is f32

// Per-layer tolerances are recorded and checked per layer: a plan made for
// 1e-1 in both layers does not pass as a plan for 1e-1 and 1e-3.
// RUN: kvprec-opt %t.calibrated.mlir --kvprec-assign-precision="tolerance=1e-1" \
// RUN: | sed -E 's/tolerance = \[1.0e-01\]/tolerance = [1.0e-01, 1.0e-03]/' | not kvprec-opt --kvprec-verify-plan 2>&1 | FileCheck %s --check-prefix=PERLAYER
// PERLAYER: error: 'kvprec.alloc' op plan of layer 1, KV head 0 has position-by-position bound {{.*}}, above the tolerance 0.001

// A budget plan records its budget and is checked against it.
// RUN: kvprec-opt %t.calibrated.mlir --kvprec-assign-precision="budget=6000" --kvprec-verify-plan -o %t.budget.mlir
// RUN: sed -E 's/budget = [0-9.e+-]+/budget = 1.0e+03/' %t.budget.mlir | not kvprec-opt --kvprec-verify-plan 2>&1 | FileCheck %s --check-prefix=OVERBUDGET
// OVERBUDGET: error: 'kvprec.alloc' op plan stores {{[0-9]+}} bytes, above its budget of 1000

// The softmax scale is part of the certificate: the same plan read at
// scale 4 by its attend is refused against a calibration measured at
// 1/sqrt(8), and against a calibration measured at scale 4 its bound
// (0.12) exceeds the tolerance that held at 1/sqrt(8) (0.0098).
// RUN: sed 's/into %arg4 : memref/into %arg4 {scale = 4.0 : f32} : memref/' %t.hand.mlir > %t.scaled.mlir
// RUN: not kvprec-opt %t.scaled.mlir --kvprec-verify-plan="tolerance=1e-1" 2>&1 | FileCheck %s --check-prefix=SCALE
// SCALE: error: 'kvprec.alloc' op plan cannot be certified from calibration @calibration: the attention masses were calibrated at softmax scale 0.353553 but the cache is read at 4; calibrate at the scale the model uses
// RUN: python3 %S/Inputs/make-calibration.py %t.scale4.safetensors --softmax-scale 4
// RUN: sed 's/into %o : memref/into %o {scale = 4.0 : f32} : memref/' %S/Inputs/toy-cache.mlir \
// RUN: | kvprec-opt --kvprec-import-calibration="file=%t.scale4.safetensors" \
// RUN: | sed 's/!kvprec.cache<2x2x64x8xf32>/!kvprec.cache<2x2x64x8xf32, #kvprec.plan<layers = 2, heads = 2, capacity = 64, block = 16, sink = 4, window = 16, formats = [#kvprec.format<f32>, #kvprec.format<i8, asymmetric, token_group = 8, scale = f16>], sink_formats = [0], body_formats = [1], window_formats = [0]>>/g' > %t.hand4.mlir
// RUN: kvprec-opt %t.hand.mlir --kvprec-verify-plan="tolerance=1e-2" -o /dev/null
// RUN: not kvprec-opt %t.hand4.mlir --kvprec-verify-plan="tolerance=1e-2" 2>&1 | FileCheck %s --check-prefix=SCALE4
// SCALE4: error: 'kvprec.alloc' op plan of layer 0, KV head 0 has position-by-position bound 0.121{{[0-9]*}}, above the tolerance 0.01

// A cache longer than its calibration: refused without a rule; with the
// worst-case rule the certificate says so, and verify applies the rule the
// certificate records.
// RUN: python3 %S/Inputs/make-calibration.py %t.short.safetensors --max-positions 32
// RUN: kvprec-opt %S/Inputs/toy-cache.mlir --kvprec-import-calibration="file=%t.short.safetensors" \
// RUN: | sed 's/!kvprec.cache<2x2x64x8xf32>/!kvprec.cache<2x2x64x8xf32, #kvprec.plan<layers = 2, heads = 2, capacity = 64, block = 16, sink = 4, window = 16, formats = [#kvprec.format<f32>, #kvprec.format<i8, asymmetric, token_group = 8, scale = f16>], sink_formats = [0], body_formats = [1], window_formats = [0]>>/g' > %t.long.mlir
// RUN: not kvprec-opt %t.long.mlir --kvprec-verify-plan="tolerance=1" 2>&1 | FileCheck %s --check-prefix=LONG
// LONG: error: 'kvprec.alloc' op plan cannot be certified from calibration @calibration: the cache holds 64 positions but calibration observed only 32
// RUN: kvprec-opt %t.long.mlir --kvprec-verify-plan="tolerance=1 extrapolate=worst-case margin=2 update=true" -o %t.extrapolated.mlir
// RUN: FileCheck %s --check-prefix=EXTRAPOLATED < %t.extrapolated.mlir
// EXTRAPOLATED: calibrated_length = 32, query_samples = 0, extrapolation = worst_case, margin = 2.0e+00,{{.*}}assumes = [query_magnitude, logit_envelope, kv_ranges, extrapolation_margin]
// RUN: kvprec-opt %t.extrapolated.mlir --kvprec-verify-plan -o /dev/null
// The worst-case rule with margin 2 certifies a looser bound than the
// calibrated envelope with margin 1.
// RUN: sed -E 's/margin = 2.0e\+00/margin = 1.0e+00/' %t.extrapolated.mlir | not kvprec-opt --kvprec-verify-plan 2>&1 | FileCheck %s --check-prefix=MARGIN
// MARGIN: error: 'kvprec.alloc' op plan certificate records bound {{.*}} but the recomputed value is

// A plan edited by hand to be unsound: its body values moved from i8 to i2
// under the certificate of the i8 plan. The position-by-position check,
// which shares only the per-element error model with the allocator's
// certifier, refuses it.
// RUN: kvprec-opt %t.calibrated.mlir --kvprec-assign-precision="tolerance=1e-2 formats=f32,f16,i8" -o %t.i8plan.mlir
// RUN: grep -c 'format<i8, asymmetric' %t.i8plan.mlir | FileCheck %s --check-prefix=HASI8
// HASI8: {{^[1-9]}}
// RUN: sed 's/#kvprec.format<i8, asymmetric, token_group = 8, scale = f16>/#kvprec.format<i2, asymmetric, token_group = 8, scale = f16>/' %t.i8plan.mlir \
// RUN: | not kvprec-opt --kvprec-verify-plan 2>&1 | FileCheck %s --check-prefix=EDITED
// EDITED: error: 'kvprec.alloc' op plan of layer 0, KV head 0 has position-by-position bound {{[0-9.e+-]+}}, above the tolerance 0.01

// A plan whose recorded certificate claims a smaller bound than provable.
// RUN: kvprec-opt %t.calibrated.mlir --kvprec-assign-precision="tolerance=1e-2" | sed -E 's/bound = [0-9.e+-]+/bound = 1.0e-12/' > %t.forged.mlir
// RUN: not kvprec-opt %t.forged.mlir --kvprec-verify-plan 2>&1 | FileCheck %s --check-prefix=FORGED
// FORGED: error: 'kvprec.alloc' op plan certificate records bound 1e-12 but the recomputed value is

// Without query samples the certificate combines the envelopes coordinate
// by coordinate (0.0298 for the same plan), and says so; the joint
// certificate over the toy's 2 samples per head is 0.0098. A recorded
// sample count that differs from the calibration's is refused.
// RUN: python3 %S/Inputs/make-calibration.py %t.nosamples.safetensors --query-samples 0
// RUN: sed 's/!kvprec.cache<2x2x64x8xf32>/!kvprec.cache<2x2x64x8xf32, #kvprec.plan<layers = 2, heads = 2, capacity = 64, block = 16, sink = 4, window = 16, formats = [#kvprec.format<f32>, #kvprec.format<i8, asymmetric, token_group = 8, scale = f16>], sink_formats = [0], body_formats = [1], window_formats = [0]>>/g' %S/Inputs/toy-cache.mlir \
// RUN: | kvprec-opt --kvprec-import-calibration="file=%t.nosamples.safetensors" \
// RUN: | kvprec-opt --kvprec-verify-plan="tolerance=1 update=true" | FileCheck %s --check-prefix=COORD
// COORD: certificate = <deterministic, tolerance = [1.0e+00], bound = 2.97{{[0-9]+}}e-02,{{.*}}calibrated_length = 64, query_samples = 0, extrapolation = none,{{.*}}assumes = [attention_mass, query_magnitude, logit_envelope, kv_ranges, calibrated_length]>
// RUN: kvprec-opt %t.hand.mlir --kvprec-verify-plan="tolerance=1 update=true" | FileCheck %s --check-prefix=JOINT
// JOINT: certificate = <deterministic, tolerance = [1.0e+00], bound = 9.83{{[0-9]+}}e-03,{{.*}}query_samples = 2,{{.*}}assumes = [sampled_query_bound, kv_ranges, calibrated_length]>
// RUN: kvprec-opt %t.hand.mlir --kvprec-verify-plan="tolerance=1 update=true" \
// RUN: | sed -e 's/query_samples = 2,/query_samples = 0,/' -e 's/assumes = \[sampled_query_bound, kv_ranges, calibrated_length\]/assumes = [attention_mass, query_magnitude, logit_envelope, kv_ranges, calibrated_length]/' \
// RUN: | not kvprec-opt --kvprec-verify-plan 2>&1 | FileCheck %s --check-prefix=SAMPLES
// SAMPLES: error: 'kvprec.alloc' op plan certificate records query_samples 0 but the recomputed value is 2

// Without calibration there is nothing to check against.
// RUN: kvprec-opt %S/Inputs/toy-cache.mlir --kvprec-assign-precision="mode=uniform format=i8 window=32" \
// RUN: | not kvprec-opt --kvprec-verify-plan 2>&1 | FileCheck %s --check-prefix=NOCAL
// NOCAL: error: 'kvprec.alloc' op has a plan but no calibration to certify it against (run --kvprec-import-calibration first)

// Without a certificate, a tolerance must be given.
// RUN: not kvprec-opt %t.hand.mlir --kvprec-verify-plan 2>&1 | FileCheck %s --check-prefix=NOTOL
// NOTOL: error: 'kvprec.alloc' op plan has no certificate and no tolerance was given
