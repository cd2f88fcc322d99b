// RUN: kvprec-opt %s | kvprec-opt | FileCheck %s
// RUN: kvprec-opt %s --mlir-print-op-generic | kvprec-opt | FileCheck %s
// RUN: kvprec-opt %s --verify-roundtrip | FileCheck %s

// Every op, type and attribute of the dialect, in custom form; the second
// RUN line reads them back from the generic form.

// CHECK: #[[PLAN:.+]] = #kvprec.plan<layers = 2, heads = 2, capacity = 64, block = 16, sink = 4, window = 16, formats = [#kvprec.format<f16>, #kvprec.format<i4, asymmetric, channel_group = 4, scale = f16>, #kvprec.format<i8, symmetric, token_group = 8, scale = f32>, #kvprec.format<f8E4M3FN, symmetric, token_group = 4, scale = bf16>, #kvprec.format<f8E5M2, symmetric, token_group = 8, scale = f16>, #kvprec.format<i2, asymmetric, token_group = 8, scale = f16>, #kvprec.format<bf16>, #kvprec.format<f32>], sink_formats = [0], body_formats = [1, 2, 3, 4, 5, 6, 7, 0], window_formats = [0], certificate = <deterministic, tolerance = [1.0e-03], bound = 9.5e-04, layer_bounds = [9.5e-04, 8.0e-04], necessary_bits = 2.5e+00, average_bits = 5.25e+00, bytes_vs_f16 = 3.3e-01, calibrated_length = 64, query_samples = 0, extrapolation = none, softmax_scale = 5.0e-01, dequant = f32, accumulate = f32, accumulate_block = 16, exp_ulps = 4, assumes = [attention_mass, query_magnitude, logit_envelope, kv_ranges, calibrated_length]>>
#plan = #kvprec.plan<layers = 2, heads = 2, capacity = 64, block = 16, sink = 4, window = 16,
  formats = [#kvprec.format<f16>,
             #kvprec.format<i4, asymmetric, channel_group = 4, scale = f16>,
             #kvprec.format<i8, symmetric, token_group = 8, scale = f32>,
             #kvprec.format<f8E4M3FN, symmetric, token_group = 4, scale = bf16>,
             #kvprec.format<f8E5M2, symmetric, token_group = 8, scale = f16>,
             #kvprec.format<i2, asymmetric, token_group = 8, scale = f16>,
             #kvprec.format<bf16>, #kvprec.format<f32>],
  sink_formats = [0], body_formats = [1, 2, 3, 4, 5, 6, 7, 0], window_formats = [0],
  certificate = #kvprec.certificate<deterministic, tolerance = [1.0e-3], bound = 9.5e-4,
    layer_bounds = [9.5e-4, 8.0e-4], necessary_bits = 2.5, average_bits = 5.25, bytes_vs_f16 = 0.33,
    calibrated_length = 64, query_samples = 0, extrapolation = none, softmax_scale = 0.5, dequant = f32, accumulate = f32,
    accumulate_block = 16, exp_ulps = 4,
    assumes = [attention_mass, query_magnitude, logit_envelope, kv_ranges, calibrated_length]>>

// A budget plan's certificate past the calibrated length, by the stated rule.
#budget = #kvprec.certificate<deterministic, budget = 4096.0, bound = 0.02, layer_bounds = [0.02],
  necessary_bits = 0.0, average_bits = 4.0, bytes_vs_f16 = 0.25, calibrated_length = 99,
  query_samples = 0, extrapolation = worst_case, margin = 2.0, softmax_scale = 0.125, dequant = bf16, accumulate = f32,
  accumulate_block = 64, exp_ulps = 4,
  assumes = [query_magnitude, logit_envelope, kv_ranges, extrapolation_margin]>

// A probabilistic certificate (error-bounds.md §9) and its failure
// probability.
#probable = #kvprec.certificate<probabilistic, confidence = 1.0e-9, tolerance = [0.1], bound = 0.05,
  layer_bounds = [0.05], necessary_bits = 0.0, average_bits = 4.0, bytes_vs_f16 = 0.25,
  calibrated_length = 64, query_samples = 8, extrapolation = none, softmax_scale = 0.125, dequant = f32,
  accumulate = f32, accumulate_block = 16, exp_ulps = 4,
  assumes = [sampled_query_bound, kv_ranges, calibrated_length, rounding_model]>

// CHECK: #[[BLOCKS:.+]] = #kvprec.plan<layers = 1, heads = 1, capacity = 40, block = 8, sink = 0, window = 8, formats = [#kvprec.format<f16>, #kvprec.format<i8, symmetric, token_group = 4, scale = f16>], sink_formats = [0, 0], body_formats = [0, 1, 1, 0, 1, 1, 1, 1, 0, 0], window_formats = [0, 0]>
#blocks = #kvprec.plan<layers = 1, heads = 1, capacity = 40, block = 8, sink = 0, window = 8,
  formats = [#kvprec.format<f16>, #kvprec.format<i8, symmetric, token_group = 4, scale = f16>],
  sink_formats = [0, 0], body_formats = [0, 1, 1, 0, 1, 1, 1, 1, 0, 0], window_formats = [0, 0]>

module {
  // CHECK: kvprec.calibration @toy <{block = 16 : i64, head_dim = 8 : i64, kv_heads = 2 : i64, layers = 2 : i64, max_positions = 64 : i64, model = "toy", q_heads = 4 : i64, query_samples = 1 : i64, sink = 4 : i64, softmax_scale = 0.35355339059327373 : f64, stats = {
  // CHECK-SAME: attn_body_mass = dense<2.000000e-01> : tensor<2x2x3xf32>
  // CHECK-SAME: position_count = dense<16> : tensor<4xi64>
  // CHECK-SAME: query_sample_mass = dense<{{\[}}[{{\[}}[3.000000e-01, 5.000000e-01, 2.000000e-01, 0.000000e+00, 0.000000e+00, 0.000000e+00]]
  // CHECK-SAME: query_sample_sqmass = dense<{{\[}}[{{\[}}[9.000000e-02, 2.500000e-01, 4.000000e-02, 0.000000e+00, 0.000000e+00, 0.000000e+00]]
  // CHECK-SAME: synthetic = true, window = 16 : i64}>
  kvprec.calibration @toy <{layers = 2, kv_heads = 2, q_heads = 4, head_dim = 8, sink = 4,
      window = 16, block = 16, max_positions = 64, query_samples = 1, model = "toy", synthetic = true, softmax_scale = 0.35355339059327373 : f64,
      stats = {attn_sink_mass = dense<5.000000e-01> : tensor<2x2xf32>,
               attn_window_mass = dense<6.000000e-01> : tensor<2x2xf32>,
               attn_body_mass = dense<2.000000e-01> : tensor<2x2x3xf32>,
               attn_sink_mass_mean = dense<3.000000e-01> : tensor<2x2xf32>,
               attn_window_mass_mean = dense<4.000000e-01> : tensor<2x2xf32>,
               attn_entropy_mean = dense<1.000000e+00> : tensor<2x2xf32>,
               attn_max_weight = dense<4.000000e-01> : tensor<2x2xf32>,
               q_absmax = dense<1.000000e+00> : tensor<2x2x8xf32>,
               q_l1_max = dense<4.000000e+00> : tensor<2x2xf32>,
               qk_logit_max = dense<2.000000e+00> : tensor<2x2xf32>,
               k_chan_min = dense<-2.000000e+00> : tensor<2x2x8xf32>,
               k_chan_max = dense<2.000000e+00> : tensor<2x2x8xf32>,
               v_chan_min = dense<-1.000000e+00> : tensor<2x2x8xf32>,
               v_chan_max = dense<1.000000e+00> : tensor<2x2x8xf32>,
               k_block_absmax = dense<2.000000e+00> : tensor<2x2x4xf32>,
               v_block_absmax = dense<1.000000e+00> : tensor<2x2x4xf32>,
               k_block_token_range = dense<3.000000e+00> : tensor<2x2x4xf32>,
               v_block_token_range = dense<1.500000e+00> : tensor<2x2x4xf32>,
               k_block_chan_span = dense<3.000000e+00> : tensor<2x2x4xf32>,
               v_block_chan_span = dense<1.500000e+00> : tensor<2x2x4xf32>,
               query_count = dense<10> : tensor<2x2xi64>,
               position_count = dense<16> : tensor<4xi64>,
               query_sample_count = dense<1> : tensor<2x2xi64>,
               query_sample_mass = dense<[[[[3.0e-01, 5.0e-01, 2.0e-01, 0.0, 0.0, 0.0]], [[3.0e-01, 5.0e-01, 2.0e-01, 0.0, 0.0, 0.0]]], [[[3.0e-01, 5.0e-01, 2.0e-01, 0.0, 0.0, 0.0]], [[3.0e-01, 5.0e-01, 2.0e-01, 0.0, 0.0, 0.0]]]]> : tensor<2x2x1x6xf32>,
               query_sample_sqmass = dense<[[[[9.0e-02, 2.5e-01, 4.0e-02, 0.0, 0.0, 0.0]], [[9.0e-02, 2.5e-01, 4.0e-02, 0.0, 0.0, 0.0]]], [[[9.0e-02, 2.5e-01, 4.0e-02, 0.0, 0.0, 0.0]], [[9.0e-02, 2.5e-01, 4.0e-02, 0.0, 0.0, 0.0]]]]> : tensor<2x2x1x6xf32>,
               query_sample_absq = dense<1.000000e+00> : tensor<2x2x1x8xf32>,
               query_sample_logit = dense<1.500000e+00> : tensor<2x2x1xf32>}}>

  // CHECK-LABEL: func.func @plain
  func.func @plain(%pos: index, %len: index, %k: memref<1x2x8xf16>, %v: memref<1x2x8xf16>,
                   %q: memref<2x8xf16>, %o: memref<2x8xf16>) {
    // CHECK: %[[CACHE:.+]] = kvprec.alloc : !kvprec.cache<3x2x128x8xf16>
    %c = kvprec.alloc : !kvprec.cache<3x2x128x8xf16>
    // CHECK: kvprec.append %{{.+}}, %{{.+}} into %[[CACHE]][2] at %{{.+}} : memref<1x2x8xf16>, memref<1x2x8xf16> into !kvprec.cache<3x2x128x8xf16>
    kvprec.append %k, %v into %c[2] at %pos : memref<1x2x8xf16>, memref<1x2x8xf16> into !kvprec.cache<3x2x128x8xf16>
    // CHECK: kvprec.attend %{{.+}}, %[[CACHE]][2] len %{{.+}} into %{{.+}} : memref<2x8xf16>, !kvprec.cache<3x2x128x8xf16> into memref<2x8xf16>
    kvprec.attend %q, %c[2] len %len into %o : memref<2x8xf16>, !kvprec.cache<3x2x128x8xf16> into memref<2x8xf16>
    // CHECK: kvprec.dealloc %[[CACHE]] : !kvprec.cache<3x2x128x8xf16>
    kvprec.dealloc %c : !kvprec.cache<3x2x128x8xf16>
    return
  }

  // CHECK-LABEL: func.func @planned
  func.func @planned(%pos: index, %k: memref<?x2x8xf32>, %v: memref<?x2x8xf32>,
                     %q: memref<4x8xf32>, %o: memref<4x8xf32>) -> f32 {
    // CHECK: %[[CACHE:.+]] = kvprec.alloc calibration @toy : !kvprec.cache<2x2x64x8xf32, #[[PLAN]]>
    %c = kvprec.alloc calibration @toy : !kvprec.cache<2x2x64x8xf32, #plan>
    // CHECK: kvprec.append %{{.+}}, %{{.+}} into %[[CACHE]][1] at %{{.+}} : memref<?x2x8xf32>, memref<?x2x8xf32> into !kvprec.cache<2x2x64x8xf32, #[[PLAN]]>
    kvprec.append %k, %v into %c[1] at %pos : memref<?x2x8xf32>, memref<?x2x8xf32> into !kvprec.cache<2x2x64x8xf32, #plan>
    // CHECK: %[[BOUND:.+]] = kvprec.attend %{{.+}}, %[[CACHE]][1] len %{{.+}} into %{{.+}} {scale = 5.000000e-01 : f32} : memref<4x8xf32>, !kvprec.cache<2x2x64x8xf32, #[[PLAN]]> into memref<4x8xf32> -> f32
    %b = kvprec.attend %q, %c[1] len %pos into %o {scale = 0.5 : f32} : memref<4x8xf32>, !kvprec.cache<2x2x64x8xf32, #plan> into memref<4x8xf32> -> f32
    // CHECK: kvprec.load %[[CACHE]][0] from %{{.+}} into %{{.+}}, %{{.+}} : !kvprec.cache<2x2x64x8xf32, #[[PLAN]]> into memref<?x2x8xf32>, memref<?x2x8xf32>
    kvprec.load %c[0] from %pos into %k, %v : !kvprec.cache<2x2x64x8xf32, #plan> into memref<?x2x8xf32>, memref<?x2x8xf32>
    // CHECK: return %[[BOUND]]
    return %b : f32
  }

  // CHECK-LABEL: func.func private @budget_certificate
  // CHECK-SAME: cert = #kvprec.certificate<deterministic, budget = 4.096e+03, bound = 2.0e-02, layer_bounds = [2.0e-02], necessary_bits = 0.0e+00, average_bits = 4.0e+00, bytes_vs_f16 = 2.5e-01, calibrated_length = 99, query_samples = 0, extrapolation = worst_case, margin = 2.0e+00, softmax_scale = 1.25e-01, dequant = bf16, accumulate = f32, accumulate_block = 64, exp_ulps = 4, assumes = [query_magnitude, logit_envelope, kv_ranges, extrapolation_margin]>
  func.func private @budget_certificate() attributes {cert = #budget}

  // CHECK-LABEL: func.func private @probabilistic_certificate
  // CHECK-SAME: cert = #kvprec.certificate<probabilistic, confidence = 1.0e-09, tolerance = [1.0e-01], bound = 5.0e-02, layer_bounds = [5.0e-02], necessary_bits = 0.0e+00, average_bits = 4.0e+00, bytes_vs_f16 = 2.5e-01, calibrated_length = 64, query_samples = 8, extrapolation = none, softmax_scale = 1.25e-01, dequant = f32, accumulate = f32, accumulate_block = 16, exp_ulps = 4, assumes = [sampled_query_bound, kv_ranges, calibrated_length, rounding_model]>
  func.func private @probabilistic_certificate() attributes {cert = #probable}

  // CHECK-LABEL: func.func @per_block
  // CHECK-SAME: !kvprec.cache<1x1x40x4xbf16, #[[BLOCKS]]>
  func.func @per_block(%c: !kvprec.cache<1x1x40x4xbf16, #blocks>, %start: index,
                       %k: memref<8x1x4xbf16>, %v: memref<8x1x4xbf16>) {
    kvprec.load %c[0] from %start into %k, %v : !kvprec.cache<1x1x40x4xbf16, #blocks> into memref<8x1x4xbf16>, memref<8x1x4xbf16>
    return
  }
}
