// RUN: python3 %S/Inputs/make-calibration.py %t.safetensors
// RUN: kvprec-opt %S/Inputs/toy-cache.mlir --kvprec-import-calibration="file=%t.safetensors" \
// RUN:   --kvprec-analyze-sensitivity="tolerance=1e-3" | FileCheck %s
// CHECK: kvprec.alloc calibration @calibration {kvprec.sensitivity = {classes = ["sink", "window", "body"],
// CHECK-SAME: k_curvature = dense<{{[^>]*}}> : tensor<2x2x3xf64>
// CHECK-SAME: k_first_order = dense<{{[^>]*}}> : tensor<2x2x3xf64>
// CHECK-SAME: k_necessary_bits = dense<{{[^>]*}}> : tensor<2x2x3xf64>
// CHECK-SAME: mass = dense<{{[^>]*}}> : tensor<2x2x3xf64>
// CHECK-SAME: tolerance = 1.000000e-03 : f64
// CHECK-SAME: v_first_order = dense<{{[^>]*}}> : tensor<2x2x3xf64>}}
// RUN: not kvprec-opt %S/Inputs/toy-cache.mlir --kvprec-analyze-sensitivity 2>&1 | FileCheck %s --check-prefix=NOCAL
// NOCAL: error: kvprec-analyze-sensitivity: no kvprec.alloc has a calibration (run --kvprec-import-calibration first)
