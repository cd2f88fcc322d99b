// RUN: kvprec-opt %s -split-input-file -verify-diagnostics --kvprec-materialize-storage

func.func @unplanned() {
  // expected-error @below {{cannot lower '!kvprec.cache<1x1x8x8xf32>': it has no precision plan}}
  %c = kvprec.alloc : !kvprec.cache<1x1x8x8xf32>
  return
}

// -----

#f32 = #kvprec.plan<layers = 1, heads = 1, capacity = 8, block = 4, sink = 0, window = 0,
    formats = [#kvprec.format<f32>], sink_formats = [0], body_formats = [0], window_formats = [0]>
func.func @strided(%c: !kvprec.cache<1x1x8x8xf32, #f32>, %k: memref<1x1x8xf32, strided<[16, 16, 2]>>, %v: memref<1x1x8xf32>, %p: index) {
  // expected-error @below {{cannot be lowered: keys must have the identity layout}}
  kvprec.append %k, %v into %c[0] at %p : memref<1x1x8xf32, strided<[16, 16, 2]>>, memref<1x1x8xf32> into !kvprec.cache<1x1x8x8xf32, #f32>
  return
}

// -----

// Rows are vectors of head_dim lanes: a huge head_dim would take LLVM
// minutes and gigabytes, so the lowering stops at 1024.
#wide = #kvprec.plan<layers = 1, heads = 1, capacity = 16, block = 8, sink = 0, window = 0,
    formats = [#kvprec.format<f32>], sink_formats = [0], body_formats = [0], window_formats = [0]>
// expected-error @below {{head_dim 65536 exceeds 1024, the most the lowering takes (its kernels keep rows, or on NVPTX their lane pieces, in registers)}}
func.func private @wide(!kvprec.cache<1x1x16x65536xf32, #wide>)
// The limit itself lowers (no diagnostic).
func.func private @widest(!kvprec.cache<1x1x16x1024xf32, #wide>)

// -----

// Arenas are limited to 2^48 bytes.
#huge = #kvprec.plan<layers = 1, heads = 1, capacity = 1000000000000000, block = 1024, sink = 0, window = 0,
    formats = [#kvprec.format<f32>], sink_formats = [0], body_formats = [0], window_formats = [0]>
// expected-error @below {{cannot lay out '!kvprec.cache<1x1x1000000000000000x8xf32, #kvprec.plan}}
func.func private @uses(!kvprec.cache<1x1x1000000000000000x8xf32, #huge>)
