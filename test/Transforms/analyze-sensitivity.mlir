// RUN: python3 %S/Inputs/make-calibration.py %t.safetensors
// RUN: kvprec-opt %S/Inputs/toy-cache.mlir --kvprec-import-calibration="file=%t.safetensors" \
// RUN:   --kvprec-analyze-sensitivity="tolerance=1e-3" | FileCheck %s
//
// Every tensor of the toy calibration is one constant, so every figure below
// follows by hand from its values (the cache has no plan, so the geometry is
// the calibration's: capacity 64 = max_positions, sink 4, window 16, block 16,
// head_dim d = 8, softmax scale 1/sqrt(8); 3 body blocks at distances
// [16, 32), [32, 48), [48, 64)). The figures are the same for all four
// (layer, KV head) pairs, and the f32 masses (0.6f + 0.2f) show in the low
// digits, which the patterns leave open.
//  * mass (docs/analysis.md, "Position classes"): sink = attn_sink_mass =
//    0.5; window = the classes at distances [0, window + block - 1) =
//    [0, 31): attn_window_mass + the first body block = 0.6 + 0.2 = 0.8;
//    body = distances >= 16: 3 * 0.2 = 0.6.
//  * v_first_order: a unit value error moves o by the class mass: 0.5, 0.8,
//    0.6.
//  * k_first_order = mass * max_j span_j(V) * ||Q||_1 / sqrt(d), a unit key
//    error through E_t <= ||Q||_1 max dK / sqrt(d) and R <= span (§1, §5):
//    span = 1 - (-1) = 2, ||Q||_1 = 8 * 1.0, so mass * 16 / sqrt(8) =
//    mass * 4 sqrt(2): 2.8284271, 4.5254834, 3.3941126.
//  * k_curvature = mass * (1/2) ||Q||_1^2 / d * max R (§3) = mass * 0.5 * 64
//    / 8 * 2 = mass * 8: 4.0, 6.4, 4.8.
//  * k_necessary_bits = (1/2) log2(kappa * range(K)^2 / tolerance) with the
//    unweighted kappa = 8 and range(K) = 2 - (-2) = 4 (§3):
//    (1/2) log2(8 * 16 / 1e-3) = (1/2) log2(128000) = 8.4828921.
// A dropped factor (the 1/2 of kappa, the span, 1/sqrt(d), the window's
// extra block) moves one of them by 25% or more, far outside the patterns.
//
// CHECK: kvprec.alloc calibration @calibration {kvprec.sensitivity = {classes = ["sink", "window", "body"],
// CHECK-SAME: k_curvature = dense<{{\[\[}}[[KC:\[4\.000000e\+00, 6\.400000[0-9]*, 4\.800000[0-9]*\]]], [[KC]]], {{\[}}[[KC]], [[KC]]]]> : tensor<2x2x3xf64>
// CHECK-SAME: k_first_order = dense<{{\[\[}}[[KF:\[2\.828427[0-9]*, 4\.525483[0-9]*, 3\.394112[0-9]*\]]], [[KF]]], {{\[}}[[KF]], [[KF]]]]> : tensor<2x2x3xf64>
// CHECK-SAME: k_necessary_bits = dense<8.482892{{[0-9]*}}> : tensor<2x2x3xf64>
// CHECK-SAME: mass = dense<{{\[\[}}[[M:\[5\.000000e-01, 0\.800000[0-9]*, 0\.600000[0-9]*\]]], [[M]]], {{\[}}[[M]], [[M]]]]> : tensor<2x2x3xf64>
// CHECK-SAME: tolerance = 1.000000e-03 : f64
// CHECK-SAME: v_first_order = dense<{{\[\[}}[[M]], [[M]]], {{\[}}[[M]], [[M]]]]> : tensor<2x2x3xf64>}}
// RUN: not kvprec-opt %S/Inputs/toy-cache.mlir --kvprec-analyze-sensitivity 2>&1 | FileCheck %s --check-prefix=NOCAL
// NOCAL: error: kvprec-analyze-sensitivity: no kvprec.alloc has a calibration (run --kvprec-import-calibration first)
