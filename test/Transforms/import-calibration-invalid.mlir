// Every way a statistics file can be wrong gets a located error, never a
// crash. Each RUN line makes one bad file with make-calibration.py.

// RUN: not kvprec-opt %S/Inputs/toy-cache.mlir --kvprec-import-calibration 2>&1 | FileCheck %s --check-prefix=NOFILE
// NOFILE: toy-cache.mlir:3:1: error: kvprec-import-calibration needs a statistics file

// RUN: not kvprec-opt %S/Inputs/toy-cache.mlir --kvprec-import-calibration="file=%t.does-not-exist" 2>&1 | FileCheck %s --check-prefix=MISSING
// MISSING: toy-cache.mlir:3:1: error: kvprec-import-calibration: {{.*}}does-not-exist{{.*}}
// MISSING: note: while reading this statistics file

// RUN: python3 %S/Inputs/make-calibration.py %t.short --corrupt short
// RUN: not kvprec-opt %S/Inputs/toy-cache.mlir --kvprec-import-calibration="file=%t.short" 2>&1 | FileCheck %s --check-prefix=SHORT
// SHORT: error: kvprec-import-calibration: {{.*}}: file is 5 bytes, shorter than the 8-byte safetensors header length

// RUN: python3 %S/Inputs/make-calibration.py %t.truncated --corrupt truncated
// RUN: not kvprec-opt %S/Inputs/toy-cache.mlir --kvprec-import-calibration="file=%t.truncated" 2>&1 | FileCheck %s --check-prefix=TRUNCATED
// TRUNCATED: error: kvprec-import-calibration: {{.*}}: tensor 'query_sample_absq': data_offsets [{{[0-9]+}}, {{[0-9]+}}] is out of range

// RUN: python3 %S/Inputs/make-calibration.py %t.hlen --corrupt header-length
// RUN: not kvprec-opt %S/Inputs/toy-cache.mlir --kvprec-import-calibration="file=%t.hlen" 2>&1 | FileCheck %s --check-prefix=HLEN
// HLEN: error: kvprec-import-calibration: {{.*}}: safetensors header length 1099511627776 exceeds the {{[0-9]+}} bytes that follow the length field

// RUN: python3 %S/Inputs/make-calibration.py %t.json --corrupt json
// RUN: not kvprec-opt %S/Inputs/toy-cache.mlir --kvprec-import-calibration="file=%t.json" 2>&1 | FileCheck %s --check-prefix=JSON
// JSON: error: kvprec-import-calibration: {{.*}}: safetensors header is not valid JSON

// RUN: python3 %S/Inputs/make-calibration.py %t.nometa --corrupt no-metadata
// RUN: not kvprec-opt %S/Inputs/toy-cache.mlir --kvprec-import-calibration="file=%t.nometa" 2>&1 | FileCheck %s --check-prefix=NOMETA
// NOMETA: error: kvprec-import-calibration: {{.*}}: missing "__metadata__"

// RUN: python3 %S/Inputs/make-calibration.py %t.schema --corrupt schema
// RUN: not kvprec-opt %S/Inputs/toy-cache.mlir --kvprec-import-calibration="file=%t.schema" 2>&1 | FileCheck %s --check-prefix=SCHEMA
// SCHEMA: error: kvprec-import-calibration: {{.*}}schema mismatch{{.*}}kvprec-calib-v0

// RUN: python3 %S/Inputs/make-calibration.py %t.dtype --corrupt dtype
// RUN: not kvprec-opt %S/Inputs/toy-cache.mlir --kvprec-import-calibration="file=%t.dtype" 2>&1 | FileCheck %s --check-prefix=DTYPE
// DTYPE: error: kvprec-import-calibration: {{.*}}: tensor 'attn_sink_mass' has dtype F16, schema kvprec-calib-v1 requires F32

// RUN: python3 %S/Inputs/make-calibration.py %t.shape --corrupt shape
// RUN: not kvprec-opt %S/Inputs/toy-cache.mlir --kvprec-import-calibration="file=%t.shape" 2>&1 | FileCheck %s --check-prefix=SHAPE
// SHAPE: error: kvprec-import-calibration: {{.*}}: tensor 'attn_body_mass' has shape [2, 3, 3], expected [L, H, NB] = [2, 2, 3]

// RUN: python3 %S/Inputs/make-calibration.py %t.offsets --corrupt offsets
// RUN: not kvprec-opt %S/Inputs/toy-cache.mlir --kvprec-import-calibration="file=%t.offsets" 2>&1 | FileCheck %s --check-prefix=OFFSETS
// OFFSETS: error: kvprec-import-calibration: {{.*}}: tensor 'k_chan_max': data_offsets [{{[0-9]+}}, {{[0-9]+}}] is out of range

// RUN: python3 %S/Inputs/make-calibration.py %t.missing --corrupt missing-tensor
// RUN: not kvprec-opt %S/Inputs/toy-cache.mlir --kvprec-import-calibration="file=%t.missing" 2>&1 | FileCheck %s --check-prefix=MISSINGT
// MISSINGT: error: kvprec-import-calibration: {{.*}}: missing required tensor 'v_block_chan_span'

// RUN: python3 %S/Inputs/make-calibration.py %t.nan --corrupt nan
// RUN: not kvprec-opt %S/Inputs/toy-cache.mlir --kvprec-import-calibration="file=%t.nan" 2>&1 | FileCheck %s --check-prefix=NAN
// NAN: error: kvprec-import-calibration: {{.*}}: tensor 'q_absmax' element 3 [0, 0, 3] is NaN

// RUN: python3 %S/Inputs/make-calibration.py %t.inf --corrupt inf
// RUN: not kvprec-opt %S/Inputs/toy-cache.mlir --kvprec-import-calibration="file=%t.inf" 2>&1 | FileCheck %s --check-prefix=INF
// INF: error: kvprec-import-calibration: {{.*}}: tensor 'v_chan_max' element 5 [0, 0, 5] is infinite

// RUN: python3 %S/Inputs/make-calibration.py %t.mass --corrupt mass
// RUN: not kvprec-opt %S/Inputs/toy-cache.mlir --kvprec-import-calibration="file=%t.mass" 2>&1 | FileCheck %s --check-prefix=MASS
// MASS: error: kvprec-import-calibration: {{.*}}: tensor 'attn_body_mass' element 1 [0, 0, 1] is 1.5{{0?}}, outside the mass range [0, 1]

// The file is well formed but describes another model.
// RUN: python3 %S/Inputs/make-calibration.py %t.layers --layers 3
// RUN: not kvprec-opt %S/Inputs/toy-cache.mlir --kvprec-import-calibration="file=%t.layers" 2>&1 | FileCheck %s --check-prefix=LAYERS
// LAYERS: toy-cache.mlir:5:10: error: 'kvprec.alloc' op cannot be calibrated by '{{.*}}': the statistics describe 3 layers but the cache has 2

// RUN: python3 %S/Inputs/make-calibration.py %t.heads --kv-heads 4 --q-heads 8
// RUN: not kvprec-opt %S/Inputs/toy-cache.mlir --kvprec-import-calibration="file=%t.heads" 2>&1 | FileCheck %s --check-prefix=HEADS
// HEADS: toy-cache.mlir:5:10: error: 'kvprec.alloc' op cannot be calibrated by '{{.*}}': the statistics describe 4 KV heads but the cache has 2

// RUN: python3 %S/Inputs/make-calibration.py %t.dim --head-dim 16
// RUN: not kvprec-opt %S/Inputs/toy-cache.mlir --kvprec-import-calibration="file=%t.dim" 2>&1 | FileCheck %s --check-prefix=DIM
// DIM: error: 'kvprec.alloc' op cannot be calibrated by '{{.*}}': the statistics describe head_dim 16 but the cache has head_dim 8

// RUN: python3 %S/Inputs/make-calibration.py %t.qheads --q-heads 8
// RUN: not kvprec-opt %S/Inputs/toy-cache.mlir --kvprec-import-calibration="file=%t.qheads" 2>&1 | FileCheck %s --check-prefix=QHEADS
// QHEADS: toy-cache.mlir:11:5: error: 'kvprec.attend' op cannot be calibrated by '{{.*}}': the statistics describe 8 query heads but this attention has 4

// A second import under the same name is refused.
// RUN: python3 %S/Inputs/make-calibration.py %t.ok
// RUN: kvprec-opt %S/Inputs/toy-cache.mlir --kvprec-import-calibration="file=%t.ok" \
// RUN: | not kvprec-opt --kvprec-import-calibration="file=%t.ok" 2>&1 | FileCheck %s --check-prefix=TWICE
// TWICE: error: kvprec-import-calibration: the module already has a symbol named @calibration

// An empty name printed as IR that did not parse again; a negative
// inline-limit was taken silently.
// RUN: not kvprec-opt %S/Inputs/toy-cache.mlir --kvprec-import-calibration="file=%t.ok name=" 2>&1 | FileCheck %s --check-prefix=NONAME
// NONAME: error: kvprec-import-calibration: name= must not be empty
// RUN: not kvprec-opt %S/Inputs/toy-cache.mlir --kvprec-import-calibration="file=%t.ok inline-limit=-5" 2>&1 | FileCheck %s --check-prefix=LIMIT
// LIMIT: error: kvprec-import-calibration: inline-limit must be non-negative, got -5

// A module without caches has nothing to calibrate.
// RUN: echo 'module {}' | not kvprec-opt --kvprec-import-calibration="file=%t.ok" 2>&1 | FileCheck %s --check-prefix=EMPTY
// EMPTY: error: kvprec-import-calibration: the module has no kvprec.alloc to calibrate

// Statistics no attention over observed data can produce are refused, not
// certified: all-zero envelopes (which would make i2 look exact), heads with
// no query, an absurd query count, and a file without the softmax scale its
// masses were measured at.
// RUN: python3 %S/Inputs/make-calibration.py %t.zeros --corrupt zeros
// RUN: not kvprec-opt %S/Inputs/toy-cache.mlir --kvprec-import-calibration="file=%t.zeros" 2>&1 | FileCheck %s --check-prefix=ZEROS
// ZEROS: toy-cache.mlir:3:1: error: kvprec-import-calibration: {{.*}}zeros: tensor 'attn_sink_mass' element 0 [0, 0] plus attn_window_mass and attn_body_mass sum to 0, below 1: every query's attention sums to 1
// RUN: python3 %S/Inputs/make-calibration.py %t.noq --corrupt no-queries
// RUN: not kvprec-opt %S/Inputs/toy-cache.mlir --kvprec-import-calibration="file=%t.noq" 2>&1 | FileCheck %s --check-prefix=NOQUERIES
// NOQUERIES: error: kvprec-import-calibration: {{.*}}noq: tensor 'query_count' element 0 [0, 0] is 0: no query was observed for this head
// RUN: python3 %S/Inputs/make-calibration.py %t.manyq --corrupt too-many-queries
// RUN: not kvprec-opt %S/Inputs/toy-cache.mlir --kvprec-import-calibration="file=%t.manyq" 2>&1 | FileCheck %s --check-prefix=MANYQUERIES
// MANYQUERIES: error: kvprec-import-calibration: {{.*}}manyq: tensor 'query_count' element 0 [0, 0] is 9223372036854775807, more than the observed positions (64) x query heads per KV head (2)
// RUN: python3 %S/Inputs/make-calibration.py %t.noscale --corrupt no-scale
// RUN: not kvprec-opt %S/Inputs/toy-cache.mlir --kvprec-import-calibration="file=%t.noscale" 2>&1 | FileCheck %s --check-prefix=NOSCALE
// NOSCALE: error: kvprec-import-calibration: {{.*}}noscale: metadata has no "softmax_scale" entry (the softmax scale the attention masses were measured at)

// A statistics file whose header nests 35,000 levels is refused before
// parsing (it overflowed the stack inside llvm::json).
// RUN: python3 -c "import struct,sys; h=b'{'*35000+b'}'*35000; sys.stdout.buffer.write(struct.pack('<Q',len(h))+h)" > %t.deep
// RUN: not kvprec-opt %S/Inputs/toy-cache.mlir --kvprec-import-calibration="file=%t.deep" 2>&1 | FileCheck %s --check-prefix=DEEP
// DEEP: error: {{.*}}safetensors header nests arrays and objects more than 16 levels deep (at header byte 16, file byte 24)

// A device is not a statistics file.
// RUN: not kvprec-opt %S/Inputs/toy-cache.mlir --kvprec-import-calibration="file=/dev/zero" 2>&1 | FileCheck %s --check-prefix=DEVICE
// DEVICE: error: {{.*}}/dev/zero: file is not a regular file

// Classes that cover every observed position leave nothing for the classes
// after them: mass there means the file does not describe its geometry.
// RUN: python3 %S/Inputs/make-calibration.py %t.bigsink --sink 64 --max-positions 64
// RUN: not kvprec-opt %S/Inputs/toy-cache.mlir --kvprec-import-calibration="file=%t.bigsink" 2>&1 | FileCheck %s --check-prefix=BIGSINK
// BIGSINK: error: kvprec-import-calibration: {{.*}}bigsink: tensor 'attn_window_mass' element 0 [0, 0] is 0.6, but the sink of 64 positions covers all max_positions = 64 observed positions
// RUN: python3 %S/Inputs/make-calibration.py %t.bigwindow --sink 32 --window 32 --max-positions 64
// RUN: not kvprec-opt %S/Inputs/toy-cache.mlir --kvprec-import-calibration="file=%t.bigwindow" 2>&1 | FileCheck %s --check-prefix=BIGWINDOW
// BIGWINDOW: error: kvprec-import-calibration: {{.*}}bigwindow: tensor 'attn_body_mass' element 0 [0, 0, 0] is 0.2, but sink 32 + window 32 cover all max_positions = 64 observed positions
