// A planned cache for test/Conversion/kvprec-to-nvvm*.test.
func.func private @uses(!kvprec.cache<1x2x512x128xf32, #kvprec.plan<layers = 1, heads = 2, capacity = 512, block = 64, sink = 4, window = 128, formats = [#kvprec.format<f8E5M2, symmetric, token_group = 32, scale = bf16>], sink_formats = [0], body_formats = [0], window_formats = [0]>>)
