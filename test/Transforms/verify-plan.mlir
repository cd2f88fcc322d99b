// RUN: python3 %S/Inputs/make-calibration.py %t.safetensors
// RUN: kvprec-opt %S/Inputs/toy-cache.mlir --kvprec-import-calibration="file=%t.safetensors" -o %t.calibrated.mlir

// A hand-written plan is checked with the tolerance given on the command
// line, and update=true records the recomputed certificate.
// RUN: sed 's/!kvprec.cache<2x2x64x8xf32>/!kvprec.cache<2x2x64x8xf32, #kvprec.plan<layers = 2, heads = 2, capacity = 64, block = 16, sink = 4, window = 16, formats = [#kvprec.format<f32>, #kvprec.format<i8, asymmetric, token_group = 8, scale = f16>], sink_formats = [0], body_formats = [1], window_formats = [0]>>/g' %t.calibrated.mlir > %t.hand.mlir
// RUN: kvprec-opt %t.hand.mlir --kvprec-verify-plan="tolerance=1e-1 update=true" | FileCheck %s --check-prefix=UPDATE
// UPDATE: certificate = <tolerance = 1.0e-01, bound = {{[0-9.e+-]+}}, necessary_bits = {{[0-9.e+-]+}}, average_bits = {{[0-9.e+-]+}}, bytes_vs_f16 = {{[0-9.e+-]+}}>

// The same plan cannot meet a tight tolerance.
// RUN: not kvprec-opt %t.hand.mlir --kvprec-verify-plan="tolerance=1e-6" 2>&1 | FileCheck %s --check-prefix=TIGHT
// TIGHT: error: 'kvprec.alloc' op plan of layer 0, KV head 0 has certified bound {{.*}}, above the tolerance 1.000000e-06

// i2 keys exceed the logit error cap of the certificate.
// RUN: sed 's/#kvprec.format<i8, asymmetric, token_group = 8, scale = f16>/#kvprec.format<i2, asymmetric, token_group = 8, scale = f16>/' %t.hand.mlir > %t.i2.mlir
// RUN: not kvprec-opt %t.i2.mlir --kvprec-verify-plan="tolerance=1e-1" 2>&1 | FileCheck %s --check-prefix=CAP
// CAP: error: 'kvprec.alloc' op plan of layer 0, KV head 0 has certified bound

// A plan whose recorded certificate claims a smaller bound than provable.
// RUN: kvprec-opt %t.calibrated.mlir --kvprec-assign-precision="tolerance=1e-2" | sed -E 's/bound = [0-9.e+-]+/bound = 1.0e-12/' > %t.forged.mlir
// RUN: not kvprec-opt %t.forged.mlir --kvprec-verify-plan 2>&1 | FileCheck %s --check-prefix=FORGED
// FORGED: error: 'kvprec.alloc' op plan certificate records bound 1.000000e-12 but the recomputed certified bound is

// Without calibration there is nothing to check against.
// RUN: kvprec-opt %S/Inputs/toy-cache.mlir --kvprec-assign-precision="mode=uniform format=i8 window=32" \
// RUN: | not kvprec-opt --kvprec-verify-plan 2>&1 | FileCheck %s --check-prefix=NOCAL
// NOCAL: error: 'kvprec.alloc' op has a plan but no calibration to certify it against (run --kvprec-import-calibration first)

// Without a certificate, a tolerance must be given.
// RUN: not kvprec-opt %t.hand.mlir --kvprec-verify-plan 2>&1 | FileCheck %s --check-prefix=NOTOL
// NOTOL: error: 'kvprec.alloc' op plan has no certificate and no tolerance was given
