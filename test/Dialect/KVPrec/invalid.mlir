// RUN: kvprec-opt %s -split-input-file -verify-diagnostics

//===----------------------------------------------------------------------===//
// #kvprec.format
//===----------------------------------------------------------------------===//

// expected-error @+1 {{storage type 'i16' is not one of f32, f16, bf16, f8E4M3FN, f8E5M2, i8, i4, i2}}
#bad = #kvprec.format<i16, symmetric, token_group = 8, scale = f16>
func.func private @f() attributes {fmt = #bad}

// -----

// expected-error @+1 {{unscaled float format 'f16' takes no scheme, group or scale}}
#bad = #kvprec.format<f16, symmetric, token_group = 8, scale = f16>
func.func private @f() attributes {fmt = #bad}

// -----

// expected-error @+1 {{scaled format 'i8' needs a scale type (scale = f16|bf16|f32)}}
#bad = #kvprec.format<i8>
func.func private @f() attributes {fmt = #bad}

// -----

// expected-error @+1 {{scale type 'i8' is not one of f32, f16, bf16}}
#bad = #kvprec.format<i4, symmetric, token_group = 8, scale = i8>
func.func private @f() attributes {fmt = #bad}

// -----

// expected-error @+1 {{group size of format 'i4' must be positive}}
#bad = #kvprec.format<i4, symmetric, token_group = 0, scale = f16>
func.func private @f() attributes {fmt = #bad}

// -----

// expected-error @+1 {{fp8 format 'f8E4M3FN' must be symmetric}}
#bad = #kvprec.format<f8E4M3FN, asymmetric, token_group = 8, scale = f16>
func.func private @f() attributes {fmt = #bad}

// -----

// expected-error @+1 {{expected 'symmetric' or 'asymmetric'}}
#bad = #kvprec.format<i8, skewed, token_group = 8, scale = f16>

// -----

// expected-error @+1 {{expected 'token_group' or 'channel_group'}}
#bad = #kvprec.format<i8, symmetric, head_group = 8, scale = f16>

//===----------------------------------------------------------------------===//
// #kvprec.certificate
//===----------------------------------------------------------------------===//

// -----

// expected-error @+1 {{certificate field 'bound' must be finite and non-negative}}
#bad = #kvprec.certificate<deterministic, tolerance = [1.0e-3], bound = -1.0, layer_bounds = [1.0e-4], necessary_bits = 2.0, average_bits = 4.0, bytes_vs_f16 = 0.3, calibrated_length = 64, query_samples = 0, extrapolation = none, softmax_scale = 0.5, dequant = f32, accumulate = f32, accumulate_block = 16, exp_ulps = 4, assumes = [attention_mass, query_magnitude, logit_envelope, kv_ranges, calibrated_length]>
func.func private @f() attributes {cert = #bad}

// -----

// expected-error @+1 {{certificate tolerance must be positive and finite, got 0}}
#bad = #kvprec.certificate<deterministic, tolerance = [0.0], bound = 1.0e-4, layer_bounds = [1.0e-4], necessary_bits = 2.0, average_bits = 4.0, bytes_vs_f16 = 0.3, calibrated_length = 64, query_samples = 0, extrapolation = none, softmax_scale = 0.5, dequant = f32, accumulate = f32, accumulate_block = 16, exp_ulps = 4, assumes = [attention_mass, query_magnitude, logit_envelope, kv_ranges, calibrated_length]>
func.func private @f() attributes {cert = #bad}

// -----

// expected-error @+1 {{certificate records either a tolerance or a budget, not neither}}
#bad = #kvprec.certificate<deterministic, tolerance = [], bound = 1.0e-4, layer_bounds = [1.0e-4], necessary_bits = 2.0, average_bits = 4.0, bytes_vs_f16 = 0.3, calibrated_length = 64, query_samples = 0, extrapolation = none, softmax_scale = 0.5, dequant = f32, accumulate = f32, accumulate_block = 16, exp_ulps = 4, assumes = [attention_mass, query_magnitude, logit_envelope, kv_ranges, calibrated_length]>
func.func private @f() attributes {cert = #bad}

// -----

// expected-error @+1 {{certificate has no layer bounds}}
#bad = #kvprec.certificate<deterministic, tolerance = [1.0e-3], bound = 1.0e-4, layer_bounds = [], necessary_bits = 2.0, average_bits = 4.0, bytes_vs_f16 = 0.3, calibrated_length = 64, query_samples = 0, extrapolation = none, softmax_scale = 0.5, dequant = f32, accumulate = f32, accumulate_block = 16, exp_ulps = 4, assumes = [attention_mass, query_magnitude, logit_envelope, kv_ranges, calibrated_length]>
func.func private @f() attributes {cert = #bad}

// -----

// expected-error @+1 {{certificate calibrated_length must be positive}}
#bad = #kvprec.certificate<deterministic, tolerance = [1.0e-3], bound = 1.0e-4, layer_bounds = [1.0e-4], necessary_bits = 2.0, average_bits = 4.0, bytes_vs_f16 = 0.3, calibrated_length = 0, query_samples = 0, extrapolation = none, softmax_scale = 0.5, dequant = f32, accumulate = f32, accumulate_block = 16, exp_ulps = 4, assumes = [attention_mass, query_magnitude, logit_envelope, kv_ranges, calibrated_length]>
func.func private @f() attributes {cert = #bad}

// -----

// expected-error @+1 {{certificate margin must be at least 1}}
#bad = #kvprec.certificate<deterministic, tolerance = [1.0e-3], bound = 1.0e-4, layer_bounds = [1.0e-4], necessary_bits = 2.0, average_bits = 4.0, bytes_vs_f16 = 0.3, calibrated_length = 64, query_samples = 0, extrapolation = worst_case, margin = 0.5, softmax_scale = 0.5, dequant = f32, accumulate = f32, accumulate_block = 16, exp_ulps = 4, assumes = [query_magnitude, logit_envelope, kv_ranges, extrapolation_margin]>
func.func private @f() attributes {cert = #bad}

// -----

// expected-error @+1 {{certificate dequant must be f32, f16 or bf16, got 'i8'}}
#bad = #kvprec.certificate<deterministic, tolerance = [1.0e-3], bound = 1.0e-4, layer_bounds = [1.0e-4], necessary_bits = 2.0, average_bits = 4.0, bytes_vs_f16 = 0.3, calibrated_length = 64, query_samples = 0, extrapolation = none, softmax_scale = 0.5, dequant = i8, accumulate = f32, accumulate_block = 16, exp_ulps = 4, assumes = [attention_mass, query_magnitude, logit_envelope, kv_ranges, calibrated_length]>
func.func private @f() attributes {cert = #bad}

// -----

// expected-error @+1 {{certificate accumulate must be f32, got 'f16'}}
#bad = #kvprec.certificate<deterministic, tolerance = [1.0e-3], bound = 1.0e-4, layer_bounds = [1.0e-4], necessary_bits = 2.0, average_bits = 4.0, bytes_vs_f16 = 0.3, calibrated_length = 64, query_samples = 0, extrapolation = none, softmax_scale = 0.5, dequant = f32, accumulate = f16, accumulate_block = 16, exp_ulps = 4, assumes = [attention_mass, query_magnitude, logit_envelope, kv_ranges, calibrated_length]>
func.func private @f() attributes {cert = #bad}

// -----

// expected-error @+1 {{certificate assumes must be [attention_mass, query_magnitude, logit_envelope, kv_ranges, calibrated_length] for this certificate}}
#bad = #kvprec.certificate<deterministic, tolerance = [1.0e-3], bound = 1.0e-4, layer_bounds = [1.0e-4], necessary_bits = 2.0, average_bits = 4.0, bytes_vs_f16 = 0.3, calibrated_length = 64, query_samples = 0, extrapolation = none, softmax_scale = 0.5, dequant = f32, accumulate = f32, accumulate_block = 16, exp_ulps = 4, assumes = [attention_mass, query_magnitude, kv_ranges, calibrated_length]>
func.func private @f() attributes {cert = #bad}

// -----

// expected-error @+1 {{unknown certificate kind 'probable'}}
#bad = #kvprec.certificate<probable, tolerance = [1.0e-3], bound = 1.0e-4, layer_bounds = [1.0e-4], necessary_bits = 2.0, average_bits = 4.0, bytes_vs_f16 = 0.3, calibrated_length = 64, query_samples = 0, extrapolation = none, softmax_scale = 0.5, dequant = f32, accumulate = f32, accumulate_block = 16, exp_ulps = 4, assumes = [attention_mass, query_magnitude, logit_envelope, kv_ranges, calibrated_length]>
func.func private @f() attributes {cert = #bad}

// -----

// expected-error @+1 {{probabilistic certificate confidence must be a failure probability in (0, 1), got 0}}
#bad = #kvprec.certificate<probabilistic, confidence = 0.0, tolerance = [1.0e-3], bound = 1.0e-4, layer_bounds = [1.0e-4], necessary_bits = 2.0, average_bits = 4.0, bytes_vs_f16 = 0.3, calibrated_length = 64, query_samples = 0, extrapolation = none, softmax_scale = 0.5, dequant = f32, accumulate = f32, accumulate_block = 16, exp_ulps = 4, assumes = [attention_mass, query_magnitude, logit_envelope, kv_ranges, calibrated_length, rounding_model]>
func.func private @f() attributes {cert = #bad}

// -----

// expected-error @+1 {{probabilistic certificate confidence must be a failure probability in (0, 1), got 1}}
#bad = #kvprec.certificate<probabilistic, confidence = 1.0, tolerance = [1.0e-3], bound = 1.0e-4, layer_bounds = [1.0e-4], necessary_bits = 2.0, average_bits = 4.0, bytes_vs_f16 = 0.3, calibrated_length = 64, query_samples = 0, extrapolation = none, softmax_scale = 0.5, dequant = f32, accumulate = f32, accumulate_block = 16, exp_ulps = 4, assumes = [attention_mass, query_magnitude, logit_envelope, kv_ranges, calibrated_length, rounding_model]>
func.func private @f() attributes {cert = #bad}

// -----

// A probabilistic certificate rests on the rounding model and must say so.
// expected-error @+1 {{certificate assumes must be [attention_mass, query_magnitude, logit_envelope, kv_ranges, calibrated_length, rounding_model] for this certificate}}
#bad = #kvprec.certificate<probabilistic, confidence = 1.0e-9, tolerance = [1.0e-3], bound = 1.0e-4, layer_bounds = [1.0e-4], necessary_bits = 2.0, average_bits = 4.0, bytes_vs_f16 = 0.3, calibrated_length = 64, query_samples = 0, extrapolation = none, softmax_scale = 0.5, dequant = f32, accumulate = f32, accumulate_block = 16, exp_ulps = 4, assumes = [attention_mass, query_magnitude, logit_envelope, kv_ranges, calibrated_length]>
func.func private @f() attributes {cert = #bad}

// -----

// expected-error @+1 {{expected 'confidence'}}
#bad = #kvprec.certificate<probabilistic, tolerance = [1.0e-3], bound = 1.0e-4, layer_bounds = [1.0e-4], necessary_bits = 2.0, average_bits = 4.0, bytes_vs_f16 = 0.3, calibrated_length = 64, query_samples = 0, extrapolation = none, softmax_scale = 0.5, dequant = f32, accumulate = f32, accumulate_block = 16, exp_ulps = 4, assumes = [attention_mass, query_magnitude, logit_envelope, kv_ranges, calibrated_length, rounding_model]>
func.func private @f() attributes {cert = #bad}

// -----

// expected-error @+1 {{unknown extrapolation 'linear'}}
#bad = #kvprec.certificate<deterministic, tolerance = [1.0e-3], bound = 1.0e-4, layer_bounds = [1.0e-4], necessary_bits = 2.0, average_bits = 4.0, bytes_vs_f16 = 0.3, calibrated_length = 64, query_samples = 0, extrapolation = linear, softmax_scale = 0.5, dequant = f32, accumulate = f32, accumulate_block = 16, exp_ulps = 4, assumes = [attention_mass, query_magnitude, logit_envelope, kv_ranges, calibrated_length]>
func.func private @f() attributes {cert = #bad}

// -----

// expected-error @+1 {{expected 'tolerance' or 'budget', got 'target'}}
#bad = #kvprec.certificate<deterministic, target = [1.0], bound = 1.0e-4, layer_bounds = [1.0e-4], necessary_bits = 2.0, average_bits = 4.0, bytes_vs_f16 = 0.3, calibrated_length = 64, query_samples = 0, extrapolation = none, softmax_scale = 0.5, dequant = f32, accumulate = f32, accumulate_block = 16, exp_ulps = 4, assumes = [attention_mass, query_magnitude, logit_envelope, kv_ranges, calibrated_length]>
func.func private @f() attributes {cert = #bad}

// -----

// expected-error @+1 {{plan certificate has 3 tolerances; expected 1 or one per layer (2)}}
#bad = #kvprec.plan<layers = 2, heads = 1, capacity = 32, block = 8, sink = 0, window = 8, formats = [#kvprec.format<f16>], sink_formats = [0], body_formats = [0], window_formats = [0], certificate = <deterministic, tolerance = [1.0, 1.0, 1.0], bound = 1.0e-4, layer_bounds = [1.0e-4, 1.0e-4], necessary_bits = 2.0, average_bits = 4.0, bytes_vs_f16 = 0.3, calibrated_length = 64, query_samples = 0, extrapolation = none, softmax_scale = 0.5, dequant = f32, accumulate = f32, accumulate_block = 16, exp_ulps = 4, assumes = [attention_mass, query_magnitude, logit_envelope, kv_ranges, calibrated_length]>>
func.func private @f() attributes {plan = #bad}

// -----

// expected-error @+1 {{plan certificate has 1 layer bounds; expected one per layer (2)}}
#bad = #kvprec.plan<layers = 2, heads = 1, capacity = 32, block = 8, sink = 0, window = 8, formats = [#kvprec.format<f16>], sink_formats = [0], body_formats = [0], window_formats = [0], certificate = <deterministic, tolerance = [1.0e-3], bound = 1.0e-4, layer_bounds = [1.0e-4], necessary_bits = 2.0, average_bits = 4.0, bytes_vs_f16 = 0.3, calibrated_length = 64, query_samples = 0, extrapolation = none, softmax_scale = 0.5, dequant = f32, accumulate = f32, accumulate_block = 16, exp_ulps = 4, assumes = [attention_mass, query_magnitude, logit_envelope, kv_ranges, calibrated_length]>>
func.func private @f() attributes {plan = #bad}

// -----

// A window channel group must divide the block (the window quantizes block
// by block, as the body does).
// expected-error @+1 {{plan window_formats entry 0 (layer 0, head 0, K): channel_group size 16 does not divide the block size 8}}
#bad = #kvprec.plan<layers = 1, heads = 1, capacity = 64, block = 8, sink = 0, window = 16, formats = [#kvprec.format<f16>, #kvprec.format<i8, asymmetric, channel_group = 16, scale = f16>], sink_formats = [0], body_formats = [0], window_formats = [1, 0]>
func.func private @f() attributes {plan = #bad}

// -----

// expected-error @+1 {{'kvprec.calibration' op softmax_scale must be positive and finite, got -1}}
kvprec.calibration @calib <{layers = 1, kv_heads = 1, q_heads = 1, head_dim = 8, sink = 0, window = 0, block = 8, max_positions = 8, query_samples = 0, model = "toy", synthetic = false, softmax_scale = -1.0 : f64, stats = {}}>

// -----

// expected-error @+1 {{'kvprec.calibration' op layer_kl_sensitivity has 2 entries for 1 layers}}
kvprec.calibration @calib <{layers = 1, kv_heads = 1, q_heads = 1, head_dim = 8, sink = 0, window = 0, block = 8, max_positions = 8, query_samples = 0, model = "toy", synthetic = false, softmax_scale = 0.5 : f64, stats = {}, layer_kl_sensitivity = array<f64: 0.5, 0.25>, sensitivity_error = 0.01 : f64}>

// -----

// expected-error @+1 {{'kvprec.calibration' op layer_kl_sensitivity entries must be finite and non-negative, got -5.000000e-01}}
kvprec.calibration @calib <{layers = 1, kv_heads = 1, q_heads = 1, head_dim = 8, sink = 0, window = 0, block = 8, max_positions = 8, query_samples = 0, model = "toy", synthetic = false, softmax_scale = 0.5 : f64, stats = {}, layer_kl_sensitivity = array<f64: -0.5>, sensitivity_error = 0.01 : f64}>

// -----

// expected-error @+1 {{'kvprec.calibration' op layer_kl_sensitivity needs a positive, finite sensitivity_error}}
kvprec.calibration @calib <{layers = 1, kv_heads = 1, q_heads = 1, head_dim = 8, sink = 0, window = 0, block = 8, max_positions = 8, query_samples = 0, model = "toy", synthetic = false, softmax_scale = 0.5 : f64, stats = {}, layer_kl_sensitivity = array<f64: 0.5>}>

// -----

// expected-error @+1 {{'kvprec.calibration' op sensitivity_error without layer_kl_sensitivity}}
kvprec.calibration @calib <{layers = 1, kv_heads = 1, q_heads = 1, head_dim = 8, sink = 0, window = 0, block = 8, max_positions = 8, query_samples = 0, model = "toy", synthetic = false, softmax_scale = 0.5 : f64, stats = {}, sensitivity_error = 0.01 : f64}>

//===----------------------------------------------------------------------===//
// #kvprec.plan
//===----------------------------------------------------------------------===//

// -----

// expected-error @+1 {{plan layers, heads and capacity must be positive}}
#bad = #kvprec.plan<layers = 0, heads = 1, capacity = 16, block = 8, sink = 0, window = 0, formats = [#kvprec.format<f16>], sink_formats = [0], body_formats = [0], window_formats = [0]>
func.func private @f() attributes {plan = #bad}

// -----

// expected-error @+1 {{plan block size must be in [1, capacity 16], got 0}}
#bad = #kvprec.plan<layers = 1, heads = 1, capacity = 16, block = 0, sink = 0, window = 0, formats = [#kvprec.format<f16>], sink_formats = [0], body_formats = [0], window_formats = [0]>
func.func private @f() attributes {plan = #bad}

// -----

// Sizes near 2^63 are compared without wrapping (UBSan found signed
// overflow in sink + window and layers x heads x 2 here).
// expected-error @+1 {{plan block size must be in [1, capacity 16], got 9223372036854775807}}
#bad = #kvprec.plan<layers = 1, heads = 1, capacity = 16, block = 9223372036854775807, sink = 0, window = 0, formats = [#kvprec.format<f16>], sink_formats = [0], body_formats = [0], window_formats = [0]>
func.func private @f() attributes {plan = #bad}

// -----

// expected-error @+1 {{plan sink (9223372036854775807) plus window (8) exceed the capacity 16}}
#bad = #kvprec.plan<layers = 1, heads = 1, capacity = 16, block = 8, sink = 9223372036854775807, window = 8, formats = [#kvprec.format<f16>], sink_formats = [0], body_formats = [0], window_formats = [0]>
func.func private @f() attributes {plan = #bad}

// -----

// expected-error @+1 {{plan of 1 layers x 9223372036854775807 heads: kvprec handles at most 65536 (layer, KV head) pairs}}
#bad = #kvprec.plan<layers = 1, heads = 9223372036854775807, capacity = 16, block = 8, sink = 0, window = 8, formats = [#kvprec.format<f16>], sink_formats = [0], body_formats = [0], window_formats = [0]>
func.func private @f() attributes {plan = #bad}

// -----

// expected-error @+1 {{plan sink and window must be non-negative}}
#bad = #kvprec.plan<layers = 1, heads = 1, capacity = 16, block = 8, sink = -1, window = 0, formats = [#kvprec.format<f16>], sink_formats = [0], body_formats = [0], window_formats = [0]>
func.func private @f() attributes {plan = #bad}

// -----

// expected-error @+1 {{plan sink (4) plus window (16) exceed the capacity 16}}
#bad = #kvprec.plan<layers = 1, heads = 1, capacity = 16, block = 8, sink = 4, window = 16, formats = [#kvprec.format<f16>], sink_formats = [0], body_formats = [0], window_formats = [0]>
func.func private @f() attributes {plan = #bad}

// -----

// expected-error @+1 {{plan window (12) must be a multiple of the block size (8) so that whole blocks age out of it}}
#bad = #kvprec.plan<layers = 1, heads = 1, capacity = 64, block = 8, sink = 4, window = 12, formats = [#kvprec.format<f16>], sink_formats = [0], body_formats = [0], window_formats = [0]>
func.func private @f() attributes {plan = #bad}

// -----

// expected-error @+1 {{plan has an empty format table}}
#bad = #kvprec.plan<layers = 1, heads = 1, capacity = 64, block = 8, sink = 4, window = 8, formats = [], sink_formats = [0], body_formats = [0], window_formats = [0]>
func.func private @f() attributes {plan = #bad}

// -----

// expected-error @+1 {{plan format 1 is not a #kvprec.format}}
#bad = #kvprec.plan<layers = 1, heads = 1, capacity = 64, block = 8, sink = 4, window = 8, formats = [#kvprec.format<f16>, 3 : i32], sink_formats = [0], body_formats = [0], window_formats = [0]>
func.func private @f() attributes {plan = #bad}

// -----

// expected-error @+1 {{plan body_formats has 3 entries; expected 1 or 4 (layers x heads x {K, V}) or 32 (one per body block)}}
#bad = #kvprec.plan<layers = 1, heads = 2, capacity = 68, block = 8, sink = 4, window = 8, formats = [#kvprec.format<f16>], sink_formats = [0], body_formats = [0, 0, 0], window_formats = [0]>
func.func private @f() attributes {plan = #bad}

// -----

// expected-error @+1 {{plan sink_formats has 2 entries; expected 1 or 4 (layers x heads x {K, V})}}
#bad = #kvprec.plan<layers = 1, heads = 2, capacity = 68, block = 8, sink = 4, window = 8, formats = [#kvprec.format<f16>], sink_formats = [0, 0], body_formats = [0], window_formats = [0]>
func.func private @f() attributes {plan = #bad}

// -----

// expected-error @+1 {{plan window_formats entry 0 refers to format 2 but the table has 1}}
#bad = #kvprec.plan<layers = 1, heads = 1, capacity = 64, block = 8, sink = 4, window = 8, formats = [#kvprec.format<f16>], sink_formats = [0], body_formats = [0], window_formats = [2]>
func.func private @f() attributes {plan = #bad}

// -----

// expected-error @+1 {{plan body_formats entry 1 (layer 0, head 0, V): channel_group size 16 does not divide the block size 8}}
#bad = #kvprec.plan<layers = 1, heads = 1, capacity = 64, block = 8, sink = 4, window = 8, formats = [#kvprec.format<f16>, #kvprec.format<i2, asymmetric, channel_group = 16, scale = f16>], sink_formats = [0], body_formats = [0, 1], window_formats = [0]>
func.func private @f() attributes {plan = #bad}

// -----

// expected-error @+1 {{plan sink_formats entry 0 (layer 0, head 0, K): channel_group size 8 does not divide the sink length 4}}
#bad = #kvprec.plan<layers = 1, heads = 1, capacity = 64, block = 8, sink = 4, window = 8, formats = [#kvprec.format<f16>, #kvprec.format<i4, asymmetric, channel_group = 8, scale = f16>], sink_formats = [1], body_formats = [0], window_formats = [0]>
func.func private @f() attributes {plan = #bad}

//===----------------------------------------------------------------------===//
// !kvprec.cache
//===----------------------------------------------------------------------===//

// -----

// expected-error @+1 {{cache dimensions must be positive, got 2x0x64x8}}
func.func private @f(%c: !kvprec.cache<2x0x64x8xf32>)

// -----

// One entry gives every (layer, KV head) its format, so without a limit a
// few bytes would ask for 10^12 table entries.
// expected-error @+1 {{plan of 1000000 layers x 1000000 heads: kvprec handles at most 65536 (layer, KV head) pairs}}
#huge = #kvprec.plan<layers = 1000000, heads = 1000000, capacity = 16, block = 8, sink = 0, window = 8, formats = [#kvprec.format<f16>], sink_formats = [0], body_formats = [0], window_formats = [0]>
func.func private @f() attributes {plan = #huge}

// -----

// expected-error @+1 {{cache of 65537 layers x 1 KV heads: kvprec handles at most 65536 (layer, KV head) pairs}}
func.func private @f(%c: !kvprec.cache<65537x1x64x8xf32>)

// -----

// The limit itself is allowed.
func.func private @f(%c: !kvprec.cache<8192x8x64x8xf32>)

// -----

// expected-error @+1 {{cache element type must be f32, f16 or bf16, got 'i32'}}
func.func private @f(%c: !kvprec.cache<2x2x64x8xi32>)

// -----

// expected-error @+1 {{expected 4 dimensions (layers x kv_heads x capacity x head_dim), got 3}}
func.func private @f(%c: !kvprec.cache<2x64x8xf32>)

// -----

#plan = #kvprec.plan<layers = 2, heads = 2, capacity = 32, block = 8, sink = 0, window = 0, formats = [#kvprec.format<f16>], sink_formats = [0], body_formats = [0], window_formats = [0]>
// expected-error @+1 {{plan covers 2 layers x 2 heads x 32 positions but the cache is 2x2x64}}
func.func private @f(%c: !kvprec.cache<2x2x64x8xf32, #plan>)

// -----

#plan = #kvprec.plan<layers = 1, heads = 1, capacity = 64, block = 8, sink = 0, window = 0, formats = [#kvprec.format<f32>], sink_formats = [0], body_formats = [0], window_formats = [0]>
// expected-error @+1 {{plan format 0 ('f32') cannot hold the cache element type 'f16': it is wider}}
func.func private @f(%c: !kvprec.cache<1x1x64x8xf16, #plan>)

// -----

#plan = #kvprec.plan<layers = 1, heads = 1, capacity = 64, block = 8, sink = 0, window = 0, formats = [#kvprec.format<i8, symmetric, token_group = 3, scale = f16>], sink_formats = [0], body_formats = [0], window_formats = [0]>
// expected-error @+1 {{plan format 0: token_group size 3 does not divide head_dim 8}}
func.func private @f(%c: !kvprec.cache<1x1x64x8xf32, #plan>)

// -----

// expected-error @+1 {{expected a #kvprec.plan encoding, got #kvprec.format<f16>}}
func.func private @f(%c: !kvprec.cache<1x1x64x8xf32, #kvprec.format<f16>>)

//===----------------------------------------------------------------------===//
// kvprec.alloc
//===----------------------------------------------------------------------===//

// -----

func.func @alloc_missing_calibration() {
  // expected-error @+1 {{'kvprec.alloc' op calibration @nowhere does not name a kvprec.calibration op}}
  %c = kvprec.alloc calibration @nowhere : !kvprec.cache<1x1x64x8xf32>
  return
}

// -----

kvprec.calibration @calib <{layers = 2, kv_heads = 4, q_heads = 8, head_dim = 8, sink = 4, window = 16, block = 16, max_positions = 64, query_samples = 0, model = "toy", synthetic = false, softmax_scale = 0.35355339059327373 : f64,
  stats = {attn_sink_mass = dense<5.000000e-01> : tensor<2x4xf32>,
    attn_window_mass = dense<6.000000e-01> : tensor<2x4xf32>,
    attn_body_mass = dense<2.000000e-01> : tensor<2x4x3xf32>,
    attn_sink_mass_mean = dense<3.000000e-01> : tensor<2x4xf32>,
    attn_window_mass_mean = dense<4.000000e-01> : tensor<2x4xf32>,
    attn_entropy_mean = dense<1.000000e+00> : tensor<2x4xf32>,
    attn_max_weight = dense<4.000000e-01> : tensor<2x4xf32>,
    q_absmax = dense<1.000000e+00> : tensor<2x4x8xf32>,
    q_l1_max = dense<4.000000e+00> : tensor<2x4xf32>,
    qk_logit_max = dense<2.000000e+00> : tensor<2x4xf32>,
    k_chan_min = dense<-2.000000e+00> : tensor<2x4x8xf32>,
    k_chan_max = dense<2.000000e+00> : tensor<2x4x8xf32>,
    v_chan_min = dense<-1.000000e+00> : tensor<2x4x8xf32>,
    v_chan_max = dense<1.000000e+00> : tensor<2x4x8xf32>,
    k_block_absmax = dense<2.000000e+00> : tensor<2x4x4xf32>,
    v_block_absmax = dense<1.000000e+00> : tensor<2x4x4xf32>,
    k_block_token_range = dense<3.000000e+00> : tensor<2x4x4xf32>,
    v_block_token_range = dense<1.500000e+00> : tensor<2x4x4xf32>,
    k_block_chan_span = dense<3.000000e+00> : tensor<2x4x4xf32>,
    v_block_chan_span = dense<1.500000e+00> : tensor<2x4x4xf32>,
    query_count = dense<10> : tensor<2x4xi64>,
    position_count = dense<16> : tensor<4xi64>,
    query_sample_count = dense<0> : tensor<2x4xi64>,
    query_sample_mass = dense<0.0> : tensor<2x4x0x6xf32>,
    query_sample_sqmass = dense<0.0> : tensor<2x4x0x6xf32>,
    query_sample_absq = dense<0.0> : tensor<2x4x0x8xf32>,
    query_sample_logit = dense<0.0> : tensor<2x4x0xf32>}}>
func.func @alloc_calibration_mismatch() {
  // expected-error @+1 {{'kvprec.alloc' op calibration @calib describes 2 layers x 4 KV heads x head_dim 8 but the cache is 2x2x64x8}}
  %c = kvprec.alloc calibration @calib : !kvprec.cache<2x2x64x8xf32>
  return
}

//===----------------------------------------------------------------------===//
// kvprec.append
//===----------------------------------------------------------------------===//

// -----

func.func @append_layer(%c: !kvprec.cache<2x2x64x8xf32>, %k: memref<1x2x8xf32>, %p: index) {
  // expected-error @+1 {{'kvprec.append' op layer 2 is out of range: the cache has 2 layers}}
  kvprec.append %k, %k into %c[2] at %p : memref<1x2x8xf32>, memref<1x2x8xf32> into !kvprec.cache<2x2x64x8xf32>
  return
}

// -----

func.func @append_negative_layer(%c: !kvprec.cache<2x2x64x8xf32>, %k: memref<1x2x8xf32>, %p: index) {
  // expected-error @+1 {{'kvprec.append' op attribute 'layer' failed to satisfy constraint: 64-bit signless integer attribute whose value is non-negative}}
  "kvprec.append"(%k, %k, %c, %p) <{layer = -1 : i64}> : (memref<1x2x8xf32>, memref<1x2x8xf32>, !kvprec.cache<2x2x64x8xf32>, index) -> ()
  return
}

// -----

func.func @append_shapes(%c: !kvprec.cache<2x2x64x8xf32>, %k: memref<1x2x8xf32>, %v: memref<2x2x8xf32>, %p: index) {
  // expected-error @+1 {{'kvprec.append' op keys 'memref<1x2x8xf32>' and values 'memref<2x2x8xf32>' differ in shape}}
  kvprec.append %k, %v into %c[0] at %p : memref<1x2x8xf32>, memref<2x2x8xf32> into !kvprec.cache<2x2x64x8xf32>
  return
}

// -----

func.func @append_element_type(%c: !kvprec.cache<2x2x64x8xf32>, %k: memref<1x2x8xf16>, %p: index) {
  // expected-error @+1 {{'kvprec.append' op keys element type 'f16' does not match the cache element type 'f32'}}
  kvprec.append %k, %k into %c[0] at %p : memref<1x2x8xf16>, memref<1x2x8xf16> into !kvprec.cache<2x2x64x8xf32>
  return
}

// -----

func.func @append_heads(%c: !kvprec.cache<2x2x64x8xf32>, %k: memref<1x4x8xf32>, %p: index) {
  // expected-error @+1 {{'kvprec.append' op keys has 4 heads but the cache has 2 KV heads}}
  kvprec.append %k, %k into %c[0] at %p : memref<1x4x8xf32>, memref<1x4x8xf32> into !kvprec.cache<2x2x64x8xf32>
  return
}

// -----

func.func @append_head_dim(%c: !kvprec.cache<2x2x64x8xf32>, %k: memref<1x2x16xf32>, %p: index) {
  // expected-error @+1 {{'kvprec.append' op keys has head_dim 16 but the cache has head_dim 8}}
  kvprec.append %k, %k into %c[0] at %p : memref<1x2x16xf32>, memref<1x2x16xf32> into !kvprec.cache<2x2x64x8xf32>
  return
}

// -----

func.func @append_capacity(%c: !kvprec.cache<2x2x64x8xf32>, %k: memref<65x2x8xf32>, %p: index) {
  // expected-error @+1 {{'kvprec.append' op keys holds 65 tokens, more than the cache capacity 64}}
  kvprec.append %k, %k into %c[0] at %p : memref<65x2x8xf32>, memref<65x2x8xf32> into !kvprec.cache<2x2x64x8xf32>
  return
}

// -----

func.func @append_rank(%c: !kvprec.cache<2x2x64x8xf32>, %k: memref<2x8xf32>, %p: index) {
  // expected-error @+1 {{'kvprec.append' op operand #0 must be 3D memref of 32-bit float or 16-bit float or bfloat16 type values, but got 'memref<2x8xf32>'}}
  kvprec.append %k, %k into %c[0] at %p : memref<2x8xf32>, memref<2x8xf32> into !kvprec.cache<2x2x64x8xf32>
  return
}

//===----------------------------------------------------------------------===//
// kvprec.attend
//===----------------------------------------------------------------------===//

// -----

func.func @attend_layer(%c: !kvprec.cache<2x2x64x8xf32>, %q: memref<4x8xf32>, %n: index) {
  // expected-error @+1 {{'kvprec.attend' op layer 5 is out of range: the cache has 2 layers}}
  kvprec.attend %q, %c[5] len %n into %q : memref<4x8xf32>, !kvprec.cache<2x2x64x8xf32> into memref<4x8xf32>
  return
}

// -----

func.func @attend_query_type(%c: !kvprec.cache<2x2x64x8xf32>, %q: memref<4x8xf16>, %o: memref<4x8xf32>, %n: index) {
  // expected-error @+1 {{'kvprec.attend' op query element type 'f16' does not match the cache element type 'f32'}}
  kvprec.attend %q, %c[0] len %n into %o : memref<4x8xf16>, !kvprec.cache<2x2x64x8xf32> into memref<4x8xf32>
  return
}

// -----

func.func @attend_output_type(%c: !kvprec.cache<2x2x64x8xf32>, %q: memref<4x8xf32>, %o: memref<4x8xbf16>, %n: index) {
  // expected-error @+1 {{'kvprec.attend' op output element type 'bf16' does not match the cache element type 'f32'}}
  kvprec.attend %q, %c[0] len %n into %o : memref<4x8xf32>, !kvprec.cache<2x2x64x8xf32> into memref<4x8xbf16>
  return
}

// -----

func.func @attend_shapes(%c: !kvprec.cache<2x2x64x8xf32>, %q: memref<4x8xf32>, %o: memref<2x8xf32>, %n: index) {
  // expected-error @+1 {{'kvprec.attend' op query 'memref<4x8xf32>' and output 'memref<2x8xf32>' differ in shape}}
  kvprec.attend %q, %c[0] len %n into %o : memref<4x8xf32>, !kvprec.cache<2x2x64x8xf32> into memref<2x8xf32>
  return
}

// -----

func.func @attend_head_dim(%c: !kvprec.cache<2x2x64x8xf32>, %q: memref<4x4xf32>, %n: index) {
  // expected-error @+1 {{'kvprec.attend' op query head_dim 4 does not match the cache head_dim 8}}
  kvprec.attend %q, %c[0] len %n into %q : memref<4x4xf32>, !kvprec.cache<2x2x64x8xf32> into memref<4x4xf32>
  return
}

// -----

func.func @attend_gqa(%c: !kvprec.cache<2x2x64x8xf32>, %q: memref<3x8xf32>, %n: index) {
  // expected-error @+1 {{'kvprec.attend' op 3 query heads cannot be grouped over 2 KV heads: the GQA ratio must be a whole number}}
  kvprec.attend %q, %c[0] len %n into %q : memref<3x8xf32>, !kvprec.cache<2x2x64x8xf32> into memref<3x8xf32>
  return
}

// -----

func.func @attend_scale(%c: !kvprec.cache<2x2x64x8xf32>, %q: memref<4x8xf32>, %n: index) {
  // expected-error @+1 {{'kvprec.attend' op scale must be finite and positive, got -1}}
  kvprec.attend %q, %c[0] len %n into %q {scale = -1.0 : f32} : memref<4x8xf32>, !kvprec.cache<2x2x64x8xf32> into memref<4x8xf32>
  return
}

// -----

func.func @attend_bound_type(%c: !kvprec.cache<2x2x64x8xf32>, %q: memref<4x8xf32>, %n: index) {
  // expected-error @+1 {{'kvprec.attend' op result #0 must be 32-bit float, but got 'f16'}}
  %b = kvprec.attend %q, %c[0] len %n into %q : memref<4x8xf32>, !kvprec.cache<2x2x64x8xf32> into memref<4x8xf32> -> f16
  return
}

//===----------------------------------------------------------------------===//
// kvprec.load
//===----------------------------------------------------------------------===//

// -----

func.func @load_layer(%c: !kvprec.cache<2x2x64x8xf32>, %k: memref<?x2x8xf32>, %s: index) {
  // expected-error @+1 {{'kvprec.load' op layer 3 is out of range: the cache has 2 layers}}
  kvprec.load %c[3] from %s into %k, %k : !kvprec.cache<2x2x64x8xf32> into memref<?x2x8xf32>, memref<?x2x8xf32>
  return
}

// -----

func.func @load_shapes(%c: !kvprec.cache<2x2x64x8xf32>, %k: memref<4x2x8xf32>, %v: memref<?x2x8xf32>, %s: index) {
  // expected-error @+1 {{'kvprec.load' op keys 'memref<4x2x8xf32>' and values 'memref<?x2x8xf32>' differ in shape}}
  kvprec.load %c[0] from %s into %k, %v : !kvprec.cache<2x2x64x8xf32> into memref<4x2x8xf32>, memref<?x2x8xf32>
  return
}

// -----

func.func @load_heads(%c: !kvprec.cache<2x2x64x8xf32>, %k: memref<?x3x8xf32>, %s: index) {
  // expected-error @+1 {{'kvprec.load' op keys has 3 heads but the cache has 2 KV heads}}
  kvprec.load %c[0] from %s into %k, %k : !kvprec.cache<2x2x64x8xf32> into memref<?x3x8xf32>, memref<?x3x8xf32>
  return
}

//===----------------------------------------------------------------------===//
// kvprec.calibration
//===----------------------------------------------------------------------===//

// -----

// expected-error @+1 {{'kvprec.calibration' op 6 query heads cannot be grouped over 4 KV heads}}
kvprec.calibration @calib <{layers = 2, kv_heads = 4, q_heads = 6, head_dim = 8, sink = 4, window = 16, block = 16, max_positions = 64, query_samples = 0, model = "toy", synthetic = false, softmax_scale = 0.35355339059327373 : f64, stats = {}}>

// -----

// expected-error @+1 {{'kvprec.calibration' op statistic 'q_absmax' is not an elements attribute}}
kvprec.calibration @calib <{layers = 2, kv_heads = 4, q_heads = 8, head_dim = 8, sink = 4, window = 16, block = 16, max_positions = 64, query_samples = 0, model = "toy", synthetic = false, softmax_scale = 0.35355339059327373 : f64, stats = {q_absmax = 1.0 : f32}}>

// -----

// expected-error @+1 {{'kvprec.calibration' op statistic 'q_absmax' has element type 'f16'; expected f32}}
kvprec.calibration @calib <{layers = 2, kv_heads = 4, q_heads = 8, head_dim = 8, sink = 4, window = 16, block = 16, max_positions = 64, query_samples = 0, model = "toy", synthetic = false, softmax_scale = 0.35355339059327373 : f64, stats = {q_absmax = dense<1.0> : tensor<2x4x8xf16>}}>

// -----

// expected-error @+1 {{'kvprec.calibration' op attribute 'layers' failed to satisfy constraint: 64-bit signless integer attribute whose value is positive}}
kvprec.calibration @calib <{layers = 0, kv_heads = 4, q_heads = 8, head_dim = 8, sink = 4, window = 16, block = 16, max_positions = 64, query_samples = 0, model = "toy", synthetic = false, softmax_scale = 0.35355339059327373 : f64, stats = {}}>

// -----

// expected-error @+1 {{'kvprec.calibration' op statistic 'k_range' is not part of the kvprec-calib-v1 schema}}
kvprec.calibration @calib <{layers = 2, kv_heads = 4, q_heads = 8, head_dim = 8, sink = 4, window = 16, block = 16, max_positions = 64, query_samples = 0, model = "toy", synthetic = false, softmax_scale = 0.35355339059327373 : f64, stats = {k_range = dense<1.0> : tensor<2x4x8xf32>}}>

// -----

// expected-error @+1 {{'kvprec.calibration' op statistic 'attn_body_mass' has shape 'tensor<2x4x4xf32>' but the calibration's dimensions give [2, 4, 3]}}
kvprec.calibration @calib <{layers = 2, kv_heads = 4, q_heads = 8, head_dim = 8, sink = 4, window = 16, block = 16, max_positions = 64, query_samples = 0, model = "toy", synthetic = false, softmax_scale = 0.35355339059327373 : f64, stats = {attn_body_mass = dense<0.1> : tensor<2x4x4xf32>}}>

// -----

// expected-error @+1 {{'kvprec.calibration' op statistic 'query_count' has element type 'f32'; expected i64}}
kvprec.calibration @calib <{layers = 2, kv_heads = 4, q_heads = 8, head_dim = 8, sink = 4, window = 16, block = 16, max_positions = 64, query_samples = 0, model = "toy", synthetic = false, softmax_scale = 0.35355339059327373 : f64, stats = {query_count = dense<1.0> : tensor<2x4xf32>}}>

// -----

// expected-error @+1 {{'kvprec.calibration' op is missing statistic 'attn_sink_mass'}}
kvprec.calibration @calib <{layers = 2, kv_heads = 4, q_heads = 8, head_dim = 8, sink = 4, window = 16, block = 16, max_positions = 64, query_samples = 0, model = "toy", synthetic = false, softmax_scale = 0.35355339059327373 : f64, stats = {}}>

// -----

func.func @calibration_parent() {
  // expected-error @+1 {{'kvprec.calibration' op expects parent op 'builtin.module'}}
  "kvprec.calibration"() <{sym_name = "c", layers = 1, kv_heads = 1, q_heads = 1, head_dim = 8, sink = 0, window = 0, block = 8, max_positions = 8, query_samples = 0, model = "toy", synthetic = false, softmax_scale = 0.35355339059327373 : f64, stats = {}}> : () -> ()
  return
}
