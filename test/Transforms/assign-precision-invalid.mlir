// Impossible or malformed requests get a located error.
// RUN: python3 %S/Inputs/make-calibration.py %t.safetensors
// RUN: not kvprec-opt %S/Inputs/toy-cache.mlir --kvprec-assign-precision 2>&1 | FileCheck %s --check-prefix=NOCAL
// NOCAL: toy-cache.mlir:5:10: error: 'kvprec.alloc' op has no calibration: mode=certified needs one (run --kvprec-import-calibration first, or use mode=uniform)
// RUN: not kvprec-opt %S/Inputs/toy-cache.mlir --kvprec-assign-precision="mode=seed" 2>&1 | FileCheck %s --check-prefix=NOCAL-SEED
// NOCAL-SEED: error: 'kvprec.alloc' op has no calibration: mode=seed needs one
// RUN: not kvprec-opt %S/Inputs/toy-cache.mlir --kvprec-assign-precision="mode=fancy" 2>&1 | FileCheck %s --check-prefix=MODE
// Fixed choices are enum options: the option parser names the bad value.
// MODE: for the --mode option: Cannot find option named 'fancy'!
// RUN: not kvprec-opt %S/Inputs/toy-cache.mlir --kvprec-assign-precision="formats=i8,i3" 2>&1 | FileCheck %s --check-prefix=FORMATS
// FORMATS: error: kvprec-assign-precision: unknown format 'i3'; expected f32, f16, bf16, f8E4M3FN, f8E5M2, i8, i4 or i2
// RUN: not kvprec-opt %S/Inputs/toy-cache.mlir --kvprec-assign-precision="mode=uniform format=i3 window=32" 2>&1 | FileCheck %s --check-prefix=UFORMAT
// UFORMAT: error: 'kvprec.alloc' op mode=uniform needs format=T with T one of f32, f16, bf16, f8E4M3FN, f8E5M2, i8, i4, i2; got 'i3'
// RUN: not kvprec-opt %S/Inputs/toy-cache.mlir --kvprec-assign-precision="scheme=skew" 2>&1 | FileCheck %s --check-prefix=SCHEME
// SCHEME: for the --scheme option: Cannot find option named 'skew'!
// RUN: not kvprec-opt %S/Inputs/toy-cache.mlir --kvprec-assign-precision="granularity=head" 2>&1 | FileCheck %s --check-prefix=GRAN
// GRAN: for the --granularity option: Cannot find option named 'head'!
// RUN: not kvprec-opt %S/Inputs/toy-cache.mlir --kvprec-assign-precision="scale=i8" 2>&1 | FileCheck %s --check-prefix=SCALE
// SCALE: error: kvprec-assign-precision: scale must be f16, bf16 or f32, got 'i8'
// RUN: not kvprec-opt %S/Inputs/toy-cache.mlir --kvprec-assign-precision="mode=kivi bits=3" 2>&1 | FileCheck %s --check-prefix=KIVI
// KIVI: error: kvprec-assign-precision: mode=kivi takes bits=2 or bits=4, got 3
// RUN: not kvprec-opt %S/Inputs/toy-cache.mlir --kvprec-assign-precision="tolerance=-1" 2>&1 | FileCheck %s --check-prefix=TOL
// TOL: error: kvprec-assign-precision: tolerance must be positive and finite, got -1
// RUN: not kvprec-opt %S/Inputs/toy-cache.mlir --kvprec-assign-precision="mode=uniform format=f16 window=24" 2>&1 | FileCheck %s --check-prefix=WINDOW
// WINDOW: error: 'kvprec.alloc' op cannot take a plan with window 24: it must be a multiple of the block size 32
// Negative sizes other than the defaults' -1 (sink, window) and 0 (block),
// a NaN margin, and groups that do not tile their unit (1e12 used to wrap
// to 3567587328 in the attribute, and 3 to be written unchecked: both gave
// output that did not parse again).
// RUN: not kvprec-opt %S/Inputs/toy-cache.mlir --kvprec-assign-precision="mode=uniform format=f16 block=-7" 2>&1 | FileCheck %s --check-prefix=BLOCK
// BLOCK: error: kvprec-assign-precision: block must be positive (or 0 for the default), got -7
// RUN: not kvprec-opt %S/Inputs/toy-cache.mlir --kvprec-assign-precision="mode=uniform format=f16 sink=-5" 2>&1 | FileCheck %s --check-prefix=NEGSINK
// NEGSINK: error: kvprec-assign-precision: sink and window must be non-negative (or -1 for the default), got sink=-5 window=-1
// RUN: not kvprec-opt %S/Inputs/toy-cache.mlir --kvprec-assign-precision="mode=uniform format=f16 margin=nan" 2>&1 | FileCheck %s --check-prefix=NANMARGIN
// NANMARGIN: error: kvprec-assign-precision: margin must be finite and at least 1, got nan
// RUN: not kvprec-opt %S/Inputs/toy-cache.mlir --kvprec-assign-precision="mode=uniform format=i4 window=32 group=3" 2>&1 | FileCheck %s --check-prefix=TGROUP
// TGROUP: toy-cache.mlir:5:10: error: 'kvprec.alloc' op cannot take group=3: token groups must divide head_dim 8
// RUN: not kvprec-opt %S/Inputs/toy-cache.mlir --kvprec-assign-precision="mode=uniform format=i4 window=32 group=1000000000000" 2>&1 | FileCheck %s --check-prefix=HUGEGROUP
// HUGEGROUP: error: 'kvprec.alloc' op cannot take group=1000000000000: token groups must divide head_dim 8
// RUN: not kvprec-opt %S/Inputs/toy-cache.mlir --kvprec-assign-precision="mode=uniform format=i4 window=32 granularity=channel group=5" 2>&1 | FileCheck %s --check-prefix=CGROUP
// CGROUP: error: 'kvprec.alloc' op cannot take group=5: channel groups must divide the block 32
// The default group (head_dim) past 32 bits wrapped to 0 and divided by it.
// RUN: not kvprec-opt %S/Inputs/wide-cache.mlir --kvprec-assign-precision="mode=uniform format=i8 window=32" 2>&1 | FileCheck %s --check-prefix=WIDEGROUP
// WIDEGROUP: wide-cache.mlir:4:8: error: 'kvprec.alloc' op cannot take scaled formats with groups of 4294967296 elements: a format holds at most 4294967295 (choose group=)
// Options the chosen mode does not read are refused, not ignored, and an
// ecap whose e^ecap overflows (it gave an allocator-internal message).
// RUN: not kvprec-opt %S/Inputs/toy-cache.mlir --kvprec-assign-precision="mode=kivi bits=2 granularity=channel group=5" 2>&1 | FileCheck %s --check-prefix=KIVIOPT
// KIVIOPT: error: kvprec-assign-precision: mode=kivi fixes its formats (asymmetric, f16 scales, keys in channel groups of 32 positions, values in token groups of up to 32 channels); group=, granularity=, scheme=, scale= and format= do not apply
// RUN: not kvprec-opt %S/Inputs/toy-cache.mlir --kvprec-assign-precision="mode=uniform format=i8 bits=2" 2>&1 | FileCheck %s --check-prefix=BITS
// BITS: error: kvprec-assign-precision: bits= applies to mode=kivi only
// RUN: not kvprec-opt %S/Inputs/toy-cache.mlir --kvprec-assign-precision="format=i8" 2>&1 | FileCheck %s --check-prefix=FORMATOPT
// FORMATOPT: error: kvprec-assign-precision: format= applies to mode=uniform only (the other modes choose from formats=)
// RUN: not kvprec-opt %S/Inputs/toy-cache.mlir --kvprec-assign-precision="ecap=1e6" 2>&1 | FileCheck %s --check-prefix=ECAP
// ECAP: error: kvprec-assign-precision: ecap must be in (0, 100], got 1.000000e+06
// RUN: not kvprec-opt %S/Inputs/toy-cache.mlir --kvprec-assign-precision="mode=uniform format=f16" 2>&1 | FileCheck %s --check-prefix=CAPACITY
// CAPACITY: error: 'kvprec.alloc' op cannot take a plan with sink 4 and window 64: the cache holds only 64 positions

// A tolerance no allowed format meets.
// RUN: not kvprec-opt %S/Inputs/toy-cache.mlir --kvprec-import-calibration="file=%t.safetensors" \
// RUN:   --kvprec-assign-precision="tolerance=1e-4 formats=i8,i4" 2>&1 | FileCheck %s --check-prefix=INFEASIBLE
// INFEASIBLE: toy-cache.mlir:5:10: error: 'kvprec.alloc' op cannot be planned: layer 0, KV head 0: tolerance 0.0001 cannot be met by the allowed formats
// A tolerance below what the kernel's own f32 arithmetic can promise.
// RUN: not kvprec-opt %S/Inputs/toy-cache.mlir --kvprec-import-calibration="file=%t.safetensors" \
// RUN:   --kvprec-assign-precision="tolerance=1e-9" 2>&1 | FileCheck %s --check-prefix=KERNEL
// KERNEL: toy-cache.mlir:5:10: error: 'kvprec.alloc' op cannot be planned: layer 0, KV head 0: tolerance 1e-09 is below the kernel's own rounding error 5.0068e-06

// A cache longer than the calibration observed, without and with a stated
// extrapolation rule, and a margin below 1.
// RUN: python3 %S/Inputs/make-calibration.py %t.short.safetensors --max-positions 32
// RUN: not kvprec-opt %S/Inputs/toy-cache.mlir --kvprec-import-calibration="file=%t.short.safetensors" \
// RUN:   --kvprec-assign-precision="tolerance=1e-1" 2>&1 | FileCheck %s --check-prefix=LONG
// LONG: toy-cache.mlir:5:10: error: 'kvprec.alloc' op cannot be certified from calibration @calibration: the cache holds 64 positions but calibration observed only 32; calibrate on longer sequences, plan a shorter cache, or state an extrapolation rule (extrapolate=worst-case margin=M)
// RUN: not kvprec-opt %S/Inputs/toy-cache.mlir --kvprec-import-calibration="file=%t.short.safetensors" \
// RUN:   --kvprec-assign-precision="tolerance=1e-1 extrapolate=worst-case margin=0.5" 2>&1 | FileCheck %s --check-prefix=MARGIN
// MARGIN: error: kvprec-assign-precision: margin must be finite and at least 1, got 5.000000e-01
// RUN: not kvprec-opt %S/Inputs/toy-cache.mlir --kvprec-import-calibration="file=%t.short.safetensors" \
// RUN:   --kvprec-assign-precision="extrapolate=linear" 2>&1 | FileCheck %s --check-prefix=RULE
// RULE: for the --extrapolate option: Cannot find option named 'linear'!

// Attends that read one cache at two softmax scales.
// RUN: sed 's/into %o : memref/into %o {scale = 0.5 : f32} : memref/' %S/Inputs/toy-cache.mlir > %t.scale.mlir
// RUN: sed -n 's/    kvprec.attend %q, %c\[1\] len \([^ ]*\) into/    kvprec.attend %q, %c[0] len \1 into/p' %S/Inputs/toy-cache.mlir > %t.second.txt
// RUN: sed '/kvprec.attend/r %t.second.txt' %t.scale.mlir > %t.two.mlir
// RUN: not kvprec-opt %t.two.mlir --kvprec-import-calibration="file=%t.safetensors" \
// RUN:   --kvprec-assign-precision="tolerance=1e-1" 2>&1 | FileCheck %s --check-prefix=SCALES
// SCALES: error: 'kvprec.attend' op reads the cache at softmax scale 0.353553 but another attend reads it at 0.5; one certificate covers one scale
// SCALES: note: the other attend
// An attend at a scale the calibration was not measured at.
// RUN: not kvprec-opt %t.scale.mlir --kvprec-import-calibration="file=%t.safetensors" \
// RUN:   --kvprec-assign-precision="tolerance=1e-1" 2>&1 | FileCheck %s --check-prefix=SOFTMAX
// SOFTMAX: error: 'kvprec.alloc' op cannot be certified from calibration @calibration: the attention masses were calibrated at softmax scale 0.353553 but the cache is read at 0.5; calibrate at the scale the model uses
// Keys whose every allowed format exceeds the logit error cap.
// RUN: not kvprec-opt %S/Inputs/toy-cache.mlir --kvprec-import-calibration="file=%t.safetensors" \
// RUN:   --kvprec-assign-precision="formats=i2" 2>&1 | FileCheck %s --check-prefix=CAP
// CAP: error: 'kvprec.alloc' op cannot be planned: layer 0, KV head 0: no allowed format can store the sink keys within the logit error cap
// A budget below the cheapest plan.
// RUN: not kvprec-opt %S/Inputs/toy-cache.mlir --kvprec-import-calibration="file=%t.safetensors" \
// RUN:   --kvprec-assign-precision="budget=10" 2>&1 | FileCheck %s --check-prefix=BUDGET
// BUDGET: error: 'kvprec.alloc' op cannot be planned: {{.*}}budget
// RUN: not kvprec-opt %S/Inputs/toy-cache.mlir --kvprec-import-calibration="file=%t.safetensors" \
// RUN:   --kvprec-assign-precision="tolerance=1e-2,1e-2,1e-2" 2>&1 | FileCheck %s --check-prefix=COUNT
// COUNT: error: 'kvprec.alloc' op has 2 layers but 3 tolerances were given
// A sink longer than the calibrated one has no mass envelope.
// RUN: not kvprec-opt %S/Inputs/toy-cache.mlir --kvprec-import-calibration="file=%t.safetensors" \
// RUN:   --kvprec-assign-precision="sink=8" 2>&1 | FileCheck %s --check-prefix=SINK
// SINK: error: 'kvprec.alloc' op cannot use its calibration @calibration: the calibration's sink is 4 positions but the plan's is 8
// RUN: echo 'module {}' | not kvprec-opt --kvprec-assign-precision="mode=uniform format=f16" 2>&1 | FileCheck %s --check-prefix=EMPTY
// EMPTY: error: kvprec-assign-precision: the module has no kvprec.alloc to plan
// A format wider than the cache's element type.
// RUN: sed 's/xf32/xf16/g' %S/Inputs/toy-cache.mlir | not kvprec-opt --kvprec-assign-precision="mode=uniform format=f32 window=32" 2>&1 | FileCheck %s --check-prefix=WIDE
// WIDE: error: 'kvprec.alloc' op cannot store its 'f16' elements in the wider format f32

// Class sizes near 2^63 are compared without wrapping (UBSan found signed
// overflow in sink + window here).
// RUN: not kvprec-opt %S/Inputs/toy-cache.mlir --kvprec-assign-precision="mode=uniform format=f16 sink=9223372036854775807" 2>&1 | FileCheck %s --check-prefix=HUGESINK
// HUGESINK: error: 'kvprec.alloc' op cannot take a plan with sink 9223372036854775807 and window 64: the cache holds only 64 positions
