// A planned cache for test/Conversion/kvprec-to-nvvm*.test.
func.func private @uses(!kvprec.cache<1x2x512x64xf32, #kvprec.plan<layers = 1, heads = 2, capacity = 512, block = 64, sink = 4, window = 128, formats = [#kvprec.format<f16>, #kvprec.format<i4, asymmetric, channel_group = 64, scale = f16>], sink_formats = [0], body_formats = [0, 1, 0, 1], window_formats = [0]>>)
