// A plan with two int8 formats (symmetric and asymmetric) for the SVG
// report: one kind, two formats, told apart by shade (2 layers x 2 KV heads
// x 64 positions, block 8).
#plan = #kvprec.plan<layers = 2, heads = 2, capacity = 64, block = 8, sink = 4, window = 16,
  formats = [#kvprec.format<f16>, #kvprec.format<i8, symmetric, token_group = 8, scale = f16>,
             #kvprec.format<i8, asymmetric, token_group = 8, scale = f16>,
             #kvprec.format<i4, symmetric, token_group = 8, scale = f16>],
  sink_formats = [0], window_formats = [0],
  body_formats = [1, 2, 1, 2, 3, 1, 2, 3]>
func.func @cache() {
  %c = kvprec.alloc : !kvprec.cache<2x2x64x8xf32, #plan>
  kvprec.dealloc %c : !kvprec.cache<2x2x64x8xf32, #plan>
  return
}
