// Planning a cache of 10^12 positions. Every mode plans, verifies and
// reports it without visiting positions one by one: a uniform body costs
// the same as a short cache, per-block plans cost per block (here 2^20
// blocks of 2^20). This is not a timed test; a regression makes it run
// for hours instead of a fraction of a second.
// RUN: python3 %S/Inputs/make-calibration.py %t.safetensors
// RUN: kvprec-opt %S/Inputs/huge-cache.mlir --kvprec-import-calibration="file=%t.safetensors" \
// RUN:   --kvprec-assign-precision="mode=certified tolerance=1 block=1048576 window=1048576 extrapolate=worst-case margin=1" \
// RUN:   --kvprec-verify-plan --kvprec-report="output=%t.cert.txt" 2>&1 | FileCheck %s --check-prefix=CERT
// RUN: FileCheck %s --check-prefix=REPORT < %t.cert.txt
// CERT: remark: kvprec-assign-precision (mode=certified): {{[0-9]+}} bytes
// CERT-NOT: error
// REPORT: kvprec precision report: cache 2x2x1000000000000x8xf32
// REPORT: memory: 80000000000000 bytes
// REPORT: layout: arena of 80000087863360 bytes, 80000057344320 of stored data

// RUN: kvprec-opt %S/Inputs/huge-cache.mlir --kvprec-import-calibration="file=%t.safetensors" \
// RUN:   --kvprec-assign-precision="mode=certified certificate=probabilistic tolerance=1 block=1048576 window=1048576 extrapolate=worst-case margin=1" \
// RUN:   --kvprec-verify-plan="certificate=probabilistic extrapolate=worst-case margin=1" 2>&1 | FileCheck %s --check-prefix=PROB
// PROB: remark: kvprec-assign-precision (mode=certified): {{[0-9]+}} bytes
// PROB-NOT: error

// RUN: kvprec-opt %S/Inputs/huge-cache.mlir --kvprec-import-calibration="file=%t.safetensors" \
// RUN:   --kvprec-assign-precision="mode=certified per-block=true tolerance=1 block=1048576 window=1048576 extrapolate=worst-case margin=1" \
// RUN:   --kvprec-verify-plan 2>&1 | FileCheck %s --check-prefix=PERBLOCK
// PERBLOCK: remark: kvprec-assign-precision (mode=certified): {{[0-9]+}} bytes
// PERBLOCK-NOT: error

// RUN: kvprec-opt %S/Inputs/huge-cache.mlir --kvprec-import-calibration="file=%t.safetensors" \
// RUN:   --kvprec-assign-precision="mode=uniform format=i8 block=1048576 window=1048576 extrapolate=worst-case margin=1" \
// RUN:   --kvprec-verify-plan 2>&1 | FileCheck %s --check-prefix=UNIFORM
// UNIFORM: remark: kvprec-assign-precision (mode=uniform): 96000000000000 bytes
// UNIFORM-NOT: error

// RUN: kvprec-opt %S/Inputs/huge-cache.mlir --kvprec-import-calibration="file=%t.safetensors" \
// RUN:   --kvprec-assign-precision="mode=kivi bits=2 block=1048576 window=1048576 extrapolate=worst-case margin=1" \
// RUN:   --kvprec-verify-plan 2>&1 | FileCheck %s --check-prefix=KIVI
// KIVI: remark: kvprec-assign-precision (mode=kivi): {{[0-9]+}} bytes
// KIVI-NOT: error

// Without calibration, uniform and KIVI plans need no statistics at all.
// RUN: kvprec-opt %S/Inputs/huge-cache.mlir --kvprec-assign-precision="mode=kivi bits=2 window=32" --kvprec-report="output=%t.kivi.txt" | FileCheck %s --check-prefix=KIVI-NOCAL
// KIVI-NOCAL: capacity = 1000000000000, block = 32, sink = 0, window = 32

// With the default 16-position blocks the f32 kernel sums 6.25e10 terms per
// output, past its rounding model: the certificate refuses rather than
// certify the NaN that the model would produce (it used to certify 0).
// RUN: not kvprec-opt %S/Inputs/huge-cache.mlir --kvprec-import-calibration="file=%t.safetensors" \
// RUN:   --kvprec-assign-precision="mode=certified tolerance=1 extrapolate=worst-case margin=1" 2>&1 | FileCheck %s --check-prefix=KERNEL
// RUN: not kvprec-opt %S/Inputs/huge-cache.mlir --kvprec-import-calibration="file=%t.safetensors" \
// RUN:   --kvprec-assign-precision="mode=uniform format=i8 extrapolate=worst-case margin=1" 2>&1 | FileCheck %s --check-prefix=KERNEL
// KERNEL: huge-cache.mlir:5:10: error: 'kvprec.alloc' op cannot be certified from calibration @calibration: the f32 kernel sums 6.25e+10 terms per output over 1000000000000 positions in blocks of 16, past what its rounding model bounds (n u < 1/2, n < 2^23); plan larger blocks or a shorter cache
