// RUN: python3 %S/Inputs/make-calibration.py %t.safetensors
// RUN: kvprec-opt %S/Inputs/toy-cache.mlir --kvprec-import-calibration="file=%t.safetensors" | FileCheck %s
// Large tensors become dense_resource blobs; the result round-trips.
// RUN: kvprec-opt %S/Inputs/toy-cache.mlir --kvprec-import-calibration="file=%t.safetensors inline-limit=4 name=toy" --verify-roundtrip | FileCheck %s --check-prefix=BLOBS
// RUN: kvprec-opt %S/Inputs/toy-cache.mlir --kvprec-import-calibration="file=%t.safetensors inline-limit=4 name=toy" | kvprec-opt | FileCheck %s --check-prefix=BLOBS
// RUN: kvprec-opt %S/Inputs/toy-cache.mlir --kvprec-import-calibration="file=%t.safetensors inline-limit=4 name=toy" --emit-bytecode | kvprec-opt | FileCheck %s --check-prefix=BLOBS

// CHECK: kvprec.calibration @calibration <{block = 16 : i64, head_dim = 8 : i64, kv_heads = 2 : i64, layers = 2 : i64, max_positions = 64 : i64, model = "toy", q_heads = 4 : i64, query_samples = 2 : i64, sink = 4 : i64, softmax_scale = 0.35355339059327373 : f64, stats = {
// CHECK-SAME: attn_body_mass = dense<2.000000e-01> : tensor<2x2x3xf32>
// CHECK-SAME: position_count = dense<16> : tensor<4xi64>
// CHECK-SAME: q_absmax = dense<1.000000e+00> : tensor<2x2x8xf32>
// CHECK-SAME: synthetic = false, window = 16 : i64}>
// CHECK-LABEL: func.func @init
// CHECK: kvprec.alloc calibration @calibration : !kvprec.cache<2x2x64x8xf32>

// BLOBS: kvprec.calibration @toy
// BLOBS-SAME: attn_sink_mass = dense<5.000000e-01> : tensor<2x2xf32>
// BLOBS-SAME: k_chan_max = dense_resource<toy.k_chan_max> : tensor<2x2x8xf32>
// BLOBS: kvprec.alloc calibration @toy
// BLOBS: {-#
// BLOBS: dialect_resources: {
// BLOBS: toy.k_chan_max: "0x
