// RUN: python3 %S/Inputs/make-calibration.py %t.safetensors
// RUN: kvprec-opt %S/Inputs/toy-cache.mlir --kvprec-import-calibration="file=%t.safetensors" \
// RUN:   --kvprec-assign-precision="tolerance=1e-2" --kvprec-verify-plan \
// RUN: | FileCheck %s --check-prefix=CERT
// RUN: kvprec-opt %S/Inputs/toy-cache.mlir --kvprec-import-calibration="file=%t.safetensors" \
// RUN:   --kvprec-assign-precision="tolerance=1e-2" -o /dev/null 2>&1 \
// RUN: | FileCheck %s --check-prefix=STATS
// Every function signature that carries the cache gets the plan, and the
// certificate passes the independent check of kvprec-verify-plan.
// CERT: #[[PLAN:.+]] = #kvprec.plan<layers = 2, heads = 2, capacity = 64, block = 16, sink = 4, window = 16, formats = [{{.*}}], sink_formats = [{{.*}}], body_formats = [{{.*}}], window_formats = [{{.*}}], certificate = <deterministic, tolerance = [1.0e-02], bound = {{[0-9.e+-]+}}, layer_bounds = [{{[0-9.e+-]+}}, {{[0-9.e+-]+}}], necessary_bits = {{[0-9.e+-]+}}, average_bits = {{[0-9.e+-]+}}, bytes_vs_f16 = {{[0-9.e+-]+}}, calibrated_length = 64, query_samples = 2, extrapolation = none, softmax_scale = 3.5355339059327373e-01, dequant = f32, accumulate = f32, accumulate_block = 16, exp_ulps = 4, assumes = [sampled_query_bound, kv_ranges, calibrated_length]>>
// CERT-LABEL: func.func @init()
// CERT-SAME: -> !kvprec.cache<2x2x64x8xf32, #[[PLAN]]>
// CERT: kvprec.alloc calibration @calibration : !kvprec.cache<2x2x64x8xf32, #[[PLAN]]>
// CERT-LABEL: func.func @step
// CERT-SAME: !kvprec.cache<2x2x64x8xf32, #[[PLAN]]>
// STATS: toy-cache.mlir:5:10: remark: kvprec-assign-precision (mode=certified): {{[0-9]+}} bytes, {{[0-9.]+}} of fp16, {{[0-9.]+}} bits per element

// Without calibration a uniform plan has no certificate.
// RUN: kvprec-opt %S/Inputs/toy-cache.mlir --kvprec-assign-precision="mode=uniform format=i8 window=32" | FileCheck %s --check-prefix=UNIFORM
// UNIFORM: #kvprec.plan<layers = 2, heads = 2, capacity = 64, block = 32, sink = 4, window = 32, formats = [#kvprec.format<i8, asymmetric, token_group = 8, scale = f16>], sink_formats = [0], body_formats = [0], window_formats = [0]>

// Uniform channel groups: the sink (4 positions, not a whole group of 8)
// keeps the token-group form of the same format; the output parses again.
// RUN: kvprec-opt %S/Inputs/toy-cache.mlir --kvprec-assign-precision="mode=uniform format=i4 granularity=channel group=8 window=32" | FileCheck %s --check-prefix=UNIFORM-CG
// RUN: kvprec-opt %S/Inputs/toy-cache.mlir --kvprec-assign-precision="mode=uniform format=i4 granularity=channel group=8 window=32" | kvprec-opt -o /dev/null
// UNIFORM-CG: sink = 4, window = 32, formats = [#kvprec.format<i4, asymmetric, token_group = 8, scale = f16>, #kvprec.format<i4, asymmetric, channel_group = 8, scale = f16>], sink_formats = [0], body_formats = [1], window_formats = [1]>

// With calibration it records what it achieves.
// RUN: kvprec-opt %S/Inputs/toy-cache.mlir --kvprec-import-calibration="file=%t.safetensors" \
// RUN:   --kvprec-assign-precision="mode=uniform format=f8E4M3FN scale=f32" | FileCheck %s --check-prefix=UNIFORM-CAL
// Without a tolerance it records its own layer bounds as what it meets.
// UNIFORM-CAL: formats = [#kvprec.format<f8E4M3FN, symmetric, token_group = 8, scale = f32>]{{.*}}certificate = <deterministic, tolerance = [[[B0:[0-9.e+-]+]], [[B1:[0-9.e+-]+]]], bound = {{[0-9.e+-]+}}, layer_bounds = [[[B0]], [[B1]]],

// KIVI layout: per-channel keys over 32-token groups, per-token values, f16 window.
// RUN: kvprec-opt %S/Inputs/toy-cache.mlir --kvprec-assign-precision="mode=kivi bits=2 window=32" | FileCheck %s --check-prefix=KIVI
// KIVI: #kvprec.plan<layers = 2, heads = 2, capacity = 64, block = 32, sink = 0, window = 32, formats = [#kvprec.format<f16>, #kvprec.format<i2, asymmetric, channel_group = 32, scale = f16>, #kvprec.format<i2, asymmetric, token_group = 8, scale = f16>], sink_formats = [0], body_formats = [1, 2, 1, 2, 1, 2, 1, 2], window_formats = [0]>

// The prototype's rule, for comparison; it records its own bound.
// RUN: kvprec-opt %S/Inputs/toy-cache.mlir --kvprec-import-calibration="file=%t.safetensors" \
// RUN:   --kvprec-assign-precision="mode=seed tolerance=1e-3" | FileCheck %s --check-prefix=SEED
// SEED: #kvprec.plan<{{.*}}certificate = <deterministic, tolerance = [1.0e-03], bound =

// Per-layer tolerances, a budget, and per-block refinement.
// RUN: kvprec-opt %S/Inputs/toy-cache.mlir --kvprec-import-calibration="file=%t.safetensors" \
// RUN:   --kvprec-assign-precision="tolerance=1e-1,1e-3" --kvprec-verify-plan="tolerance=1e-1,1e-3" | FileCheck %s --check-prefix=LAYERS
// LAYERS: certificate = <deterministic, tolerance = [1.0e-01, 1.0e-03], bound = {{[0-9.e+-]+}}, layer_bounds = [{{[0-9.e+-]+}}, {{[0-9]\.[0-9]+e-0[4-9]}}],
// RUN: kvprec-opt %S/Inputs/toy-cache.mlir --kvprec-import-calibration="file=%t.safetensors" \
// RUN:   --kvprec-assign-precision="budget=6000" | FileCheck %s --check-prefix=BUDGET
// BUDGET: #kvprec.plan<{{.*}}certificate = <deterministic, budget = 6.0e+03, bound = {{[0-9.e+-]+}}, layer_bounds = [{{[0-9.e+-]+}}, {{[0-9.e+-]+}}], necessary_bits = {{[0-9.e+-]+}}, average_bits = {{[0-9.e+-]+}}, bytes_vs_f16 = {{[0-9.e+-]+}}, calibrated_length = 64, query_samples = 2, extrapolation = none, softmax_scale = 3.5355339059327373e-01, dequant = f32, accumulate = f32, accumulate_block = 16, exp_ulps = 4, assumes = [sampled_query_bound, kv_ranges, calibrated_length]>>
// RUN: kvprec-opt %S/Inputs/toy-cache.mlir --kvprec-import-calibration="file=%t.safetensors" \
// RUN:   --kvprec-assign-precision="tolerance=5e-2 per-block=true granularity=channel" --kvprec-verify-plan | FileCheck %s --check-prefix=BLOCKS
// The toy's blocks all have the same calibrated ranges, so every block of a
// (layer, head, K/V) keeps one format and the compact form stores one body
// entry per item; the joint certificate lets the descent move window keys
// to f16 and body values to i4 channel groups.
// BLOCKS: #kvprec.plan<layers = 2, heads = 2, capacity = 64, block = 16, sink = 4, window = 16, formats = [#kvprec.format<i8, asymmetric, token_group = 8, scale = f16>, #kvprec.format<f16>, #kvprec.format<i8, asymmetric, channel_group = 16, scale = f16>, #kvprec.format<i4, asymmetric, channel_group = 16, scale = f16>], sink_formats = [0], body_formats = [2, 3, 2, 3, 2, 3, 2, 3], window_formats = [1, 2, 1, 2, 1, 2, 1, 2], certificate = <deterministic, tolerance = [5.0e-02], bound = 4.2{{[0-9]+}}e-02,

// A tolerance the knapsack's decoupled item errors cannot meet but the
// certificate of the most precise formats does (the toy's all-f32 bound is
// 5.6e-6, the kernel's rounding): the allocator starts from those formats
// and descends on the certificate.
// RUN: kvprec-opt %S/Inputs/toy-cache.mlir --kvprec-import-calibration="file=%t.safetensors" \
// RUN:   --kvprec-assign-precision="tolerance=1e-5" --kvprec-verify-plan | FileCheck %s --check-prefix=PRECISE
// PRECISE: formats = [#kvprec.format<f32>], sink_formats = [0], body_formats = [0], window_formats = [0], certificate = <deterministic, tolerance = [1.0e-05], bound = 5.6{{[0-9]+}}e-06,
