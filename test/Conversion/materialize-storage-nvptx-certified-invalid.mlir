// The NVPTX run-time certificate keeps four arrays of a split's row slots
// beside the query, staging and certificate rows in a block's 48 KiB of
// shared memory: a cache whose rows leave no room for one tile is refused
// where it is lowered, with the room there is.
// RUN: kvprec-opt %s -split-input-file -verify-diagnostics --kvprec-materialize-storage="target=nvptx chip=sm_80 runtime-certificate=true"

// head_dim 1024: the rows alone (with 16 bytes of alignment per buffer)
// take 12,370 of the 12,288 floats.
#wide = #kvprec.plan<layers = 1, heads = 1, capacity = 64, block = 16, sink = 0, window = 0,
    formats = [#kvprec.format<f16>], sink_formats = [0], body_formats = [0], window_formats = [0]>
// expected-error @below {{the NVPTX run-time certificate keeps a tile's rows in shared memory: head_dim 1024 leaves room for 0 rows of 48 KiB, not the 16 of a tile (block and sink)}}
func.func private @wide(!kvprec.cache<1x1x64x1024xf32, #wide>)

// -----

// head_dim 512 leaves room for 1,515 rows; blocks of 2048 do not fit.
#long = #kvprec.plan<layers = 1, heads = 1, capacity = 4096, block = 2048, sink = 0, window = 0,
    formats = [#kvprec.format<f16>], sink_formats = [0], body_formats = [0], window_formats = [0]>
// expected-error @below {{head_dim 512 leaves room for 1515 rows of 48 KiB, not the 2048 of a tile (block and sink)}}
func.func private @long(!kvprec.cache<1x1x4096x512xf32, #long>)

// -----

// head_dim 512 with blocks of 1024: certified.
#fits = #kvprec.plan<layers = 1, heads = 1, capacity = 4096, block = 1024, sink = 0, window = 0,
    formats = [#kvprec.format<f16>], sink_formats = [0], body_formats = [0], window_formats = [0]>
func.func private @fits(!kvprec.cache<1x1x4096x512xf32, #fits>)
