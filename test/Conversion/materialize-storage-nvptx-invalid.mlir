// RUN: kvprec-opt %s -split-input-file -verify-diagnostics --kvprec-materialize-storage="target=nvptx chip=sm_80"
// RUN: not kvprec-opt %s -split-input-file --kvprec-materialize-storage="target=gpu" 2>&1 | FileCheck %s --check-prefix=TARGET
// RUN: not kvprec-opt %s -split-input-file --kvprec-materialize-storage="target=nvptx chip=sm_70" 2>&1 | FileCheck %s --check-prefix=CHIP
// RUN: not kvprec-opt %s -split-input-file --kvprec-materialize-storage="target=nvptx chip=ampere" 2>&1 | FileCheck %s --check-prefix=NAME
// RUN: not kvprec-opt %s -split-input-file --kvprec-to-nvvm="chip=sm_85" 2>&1 | FileCheck %s --check-prefix=UNKNOWN
// UNKNOWN: got 'sm_85'
// RUN: not kvprec-opt %s -split-input-file --kvprec-materialize-storage="symbol-prefix=7x" 2>&1 | FileCheck %s --check-prefix=PREFIX
// PREFIX: kvprec-materialize-storage: symbol-prefix must be a C identifier, got '7x'
// TARGET: kvprec-materialize-storage: target must be cpu or nvptx, got 'gpu'
// CHIP: kvprec-materialize-storage: chip must be one of sm_80, sm_86, sm_87, sm_89, sm_90, sm_100, sm_101, sm_120, got 'sm_70'
// NAME: got 'ampere'

// A lane holds whole 16-element pieces of int8 codes; token groups of 24
// neither fit one piece nor tile it.
#i8 = #kvprec.plan<layers = 1, heads = 1, capacity = 64, block = 16, sink = 0, window = 0,
    formats = [#kvprec.format<i8, symmetric, token_group = 24, scale = f16>], sink_formats = [0], body_formats = [0], window_formats = [0]>
// expected-error @below {{the NVPTX lowering cannot split token groups of 24 over lanes of 16 elements (int8, head_dim 48)}}
func.func private @groups(!kvprec.cache<1x1x64x48xf32, #i8>)

// -----

// A tile's logits live in shared memory: blocks of 8192 rows do not fit.
#long = #kvprec.plan<layers = 1, heads = 1, capacity = 16384, block = 8192, sink = 0, window = 0,
    formats = [#kvprec.format<f16>], sink_formats = [0], body_formats = [0], window_formats = [0]>
// expected-error @below {{the NVPTX lowering keeps a tile's logits in shared memory: 8192 rows x 8 query heads exceed its 4096 floats}}
func.func private @long(!kvprec.cache<1x1x16384x128xf32, #long>)

// -----

#wide = #kvprec.plan<layers = 1, heads = 1, capacity = 64, block = 16, sink = 0, window = 0,
    formats = [#kvprec.format<f16>], sink_formats = [0], body_formats = [0], window_formats = [0]>
// expected-error @below {{head_dim 2048 exceeds 1024, the most the lowering takes}}
func.func private @wide(!kvprec.cache<1x1x64x2048xf32, #wide>)

// -----

// A block per KV head in a grid dimension CUDA caps at 65535.
#wide = #kvprec.plan<layers = 1, heads = 65536, capacity = 16, block = 16, sink = 0, window = 0,
    formats = [#kvprec.format<f16>], sink_formats = [0], body_formats = [0], window_formats = [0]>
// expected-error @below {{the NVPTX lowering launches a block per KV head in a grid dimension of at most 65535, not 65536}}
func.func private @wide(!kvprec.cache<1x65536x16x8xf32, #wide>)

// -----

// The splits of a full cache in a grid dimension CUDA caps at 65535: 2^24
// positions in blocks of 1, 128 tiles a split.
#many = #kvprec.plan<layers = 1, heads = 1, capacity = 16777216, block = 1, sink = 0, window = 0,
    formats = [#kvprec.format<f16>], sink_formats = [0], body_formats = [0], window_formats = [0]>
// expected-error @below {{the NVPTX lowering launches a block per split of 128 tiles in a grid dimension of at most 65535: 16777216 tiles (capacity 16777216, block 1) need 131072}}
func.func private @many(!kvprec.cache<1x1x16777216x8xf32, #many>)
