// Statistics of an absurd shape are refused from the shape, before the
// (splat, a few bytes) attributes are expanded: head_dim 2^28 used to make
// every pass that reads the calibration allocate until it ran out of memory.
// RUN: not kvprec-opt %s --kvprec-report=output=%t.txt 2>&1 | FileCheck %s
// RUN: not kvprec-opt %s --kvprec-assign-precision="mode=uniform format=i8" 2>&1 | FileCheck %s
// CHECK: calibration-limits.mlir:[[#@LINE+3]]:3: error: 'kvprec.calibration' op kvprec.calibration @calibration: tensor '{{[a-z_]+}}' with shape [L, H, D] would take the statistics past 2^30 values (4 GiB)

module attributes {kvprec.model = "synthetic"} {
  kvprec.calibration @calibration <{block = 32 : i64, head_dim = 268435456 : i64, kv_heads = 1 : i64, layers = 1 : i64, max_positions = 64 : i64, model = "synthetic", q_heads = 1 : i64, query_samples = 0 : i64, sink = 4 : i64, softmax_scale = 0.35355339059327373 : f64, stats = {attn_body_mass = dense<0.13279748> : tensor<1x1x1xf32>, attn_entropy_mean = dense<2.0904181> : tensor<1x1xf32>, attn_max_weight = dense<0.626021504> : tensor<1x1xf32>, attn_sink_mass = dense<0.727464973> : tensor<1x1xf32>, attn_sink_mass_mean = dense<0.444242656> : tensor<1x1xf32>, attn_window_mass = dense<0.924444794> : tensor<1x1xf32>, attn_window_mass_mean = dense<0.446049333> : tensor<1x1xf32>, k_block_absmax = dense<[[[19.2420654, 15.270586]]]> : tensor<1x1x2xf32>, k_block_chan_span = dense<[[[24.1304836, 17.1155052]]]> : tensor<1x1x2xf32>, k_block_token_range = dense<[[[25.9384804, 21.9492722]]]> : tensor<1x1x2xf32>, k_chan_max = dense<1.0> : tensor<1x1x268435456xf32>, k_chan_min = dense<-1.0> : tensor<1x1x268435456xf32>, position_count = dense<32> : tensor<2xi64>, q_absmax = dense<1.0> : tensor<1x1x268435456xf32>, q_l1_max = dense<12.0225554> : tensor<1x1xf32>, qk_logit_max = dense<35.7486038> : tensor<1x1xf32>, query_count = dense<64> : tensor<1x1xi64>, query_sample_absq = dense<> : tensor<1x1x0x268435456xf32>, query_sample_count = dense<0> : tensor<1x1xi64>, query_sample_logit = dense<> : tensor<1x1x0xf32>, query_sample_mass = dense<> : tensor<1x1x0x4xf32>, query_sample_sqmass = dense<> : tensor<1x1x0x4xf32>, v_block_absmax = dense<[[[1.11354196, 0.902691721]]]> : tensor<1x1x2xf32>, v_block_chan_span = dense<[[[1.86510491, 1.07100201]]]> : tensor<1x1x2xf32>, v_block_token_range = dense<[[[1.65349221, 1.12693894]]]> : tensor<1x1x2xf32>, v_chan_max = dense<1.0> : tensor<1x1x268435456xf32>, v_chan_min = dense<-1.0> : tensor<1x1x268435456xf32>}, synthetic = true, window = 32 : i64}>
  func.func @init() -> !kvprec.cache<1x1x64x268435456xf32> {
    %0 = kvprec.alloc calibration @calibration : !kvprec.cache<1x1x64x268435456xf32>
    return %0 : !kvprec.cache<1x1x64x268435456xf32>
  }
}
