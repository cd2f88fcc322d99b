// RUN: kvprec-opt %s -split-input-file --kvprec-materialize-storage | FileCheck %s
// RUN: not kvprec-opt %s -split-input-file --kvprec-materialize-storage="threads=0" 2>&1 | FileCheck %s --check-prefix=THREADS
// THREADS: error: kvprec-materialize-storage: threads must be between 1 and 1024, got 0
// A calibrated module translates to LLVM IR: the kvprec.calibration op is
// gone once the allocs are lowered.
// RUN: python3 %S/../Transforms/Inputs/make-calibration.py %t.safetensors
// RUN: kvprec-opt %S/../Transforms/Inputs/toy-cache.mlir --kvprec-import-calibration="file=%t.safetensors" \
// RUN:   --kvprec-assign-precision="mode=uniform format=i8 window=16 block=16 quiet=true" --kvprec-to-llvm \
// RUN:   | mlir-translate --mlir-to-llvmir | FileCheck %s --check-prefix=CALIBRATED
// CALIBRATED: define {{.*}}i32 @kvprec_cache0_attend(
// RUN: kvprec-opt %s -split-input-file --kvprec-materialize-storage="threads=4" | FileCheck %s --check-prefix=PARALLEL
// PARALLEL: scf.parallel ({{.+}}) = ({{.+}}) to ({{.+}}) step
// PARALLEL-NEXT: func.call @kvprec_cache0_attend_part

// A mixed plan: f32 sink, f16 window, KIVI-style int4 body.
#mixed = #kvprec.plan<layers = 2, heads = 2, capacity = 40, block = 8, sink = 4, window = 16,
    formats = [#kvprec.format<f32>, #kvprec.format<f16>,
               #kvprec.format<i4, asymmetric, channel_group = 4, scale = f16>],
    sink_formats = [0], body_formats = [2], window_formats = [1]>
!mixed = !kvprec.cache<2x2x40x8xf32, #mixed>

// The layout tables: 8 streams x 11 columns, one body run per stream (7
// columns), and the channel-group size of each format.
// CHECK-DAG: memref.global "private" constant @kvprec_cache0_streams : memref<88xi64>
// CHECK-DAG: memref.global "private" constant @kvprec_cache0_runs : memref<56xi64>
// CHECK-DAG: memref.global "private" constant @kvprec_cache0_channel_groups : memref<3xi64> = dense<[0, 0, 4]>
// Which formats attention's tile kernels read in place (unscaled f32 and
// f16: kinds 1 and 2; the int4 body goes through the tile).
// CHECK-DAG: memref.global "private" constant @kvprec_cache0_direct : memref<3xi64> = dense<[1, 2, 0]>

// CHECK-LABEL: func.func @decode
// CHECK-SAME: (%[[CACHE:.+]]: memref<?xi8>, %[[POS:.+]]: index
func.func @decode(%c: !mixed, %pos: index, %k: memref<1x2x8xf32>, %v: memref<1x2x8xf32>,
                  %q: memref<4x8xf32>, %o: memref<4x8xf32>) {
  // CHECK: %[[KEYS:.+]] = memref.cast %{{.+}} : memref<1x2x8xf32> to memref<?x?x?xf32>
  // CHECK: %[[APPENDED:.+]] = call @kvprec_cache0_append(%[[CACHE]], %{{.+}}, %[[KEYS]], %{{.+}}, %[[POS]])
  // CHECK: %[[FULL:.+]] = arith.cmpi ne, %[[APPENDED]], %{{.+}} : i32
  // CHECK: cf.assert %[[FULL]], "kvprec.append: the append would exceed the cache capacity"
  // CHECK: cf.assert %{{.+}}, "kvprec.append: the position or length disagrees with the layer's fill count"
  kvprec.append %k, %v into %c[1] at %pos : memref<1x2x8xf32>, memref<1x2x8xf32> into !mixed
  // CHECK: %[[SCALE:.+]] = arith.constant 0.353553385 : f32
  // CHECK: call @kvprec_cache0_attend(%[[CACHE]], %{{.+}}, %{{.+}}, %[[POS]], %{{.+}}, %[[SCALE]])
  // CHECK-NOT: {{ kvprec\.[a-z]+ %}}
  kvprec.attend %q, %c[1] len %pos into %o : memref<4x8xf32>, !mixed into memref<4x8xf32>
  return
}

// CHECK-LABEL: func.func @lifetime
func.func @lifetime() {
  // CHECK: %[[BYTES:.+]] = arith.constant {{[0-9]+}} : index
  // CHECK: %[[ARENA:.+]] = memref.alloc(%[[BYTES]]) {alignment = 64 : i64} : memref<?xi8>
  // CHECK: call @kvprec_cache0_init(%[[ARENA]])
  // CHECK: memref.dealloc %[[ARENA]] : memref<?xi8>
  %c = kvprec.alloc : !mixed
  kvprec.dealloc %c : !mixed
  return
}

// One set of kernels per format, shared by every stream.
// CHECK: func.func private @kvprec_f32_d8_f32_store
// CHECK: func.func private @kvprec_f32_d8_f32_load
// CHECK: func.func private @kvprec_f16_d8_f32_store
// CHECK: func.func private @kvprec_int4_asym_cg4_f16_d8_f32_store
// A run's format is one switch over the plan's formats.
// CHECK-LABEL: func.func private @kvprec_cache0_store
// CHECK: scf.index_switch %{{.+}} -> i32
// CHECK: case 0
// CHECK: func.call @kvprec_f32_d8_f32_store
// CHECK: case 1
// CHECK: func.call @kvprec_f16_d8_f32_store
// CHECK: case 2
// CHECK: func.call @kvprec_int4_asym_cg4_f16_d8_f32_store
// Attention works on f32 tiles that `load` dequantized once per tile.
// CHECK: func.func private @kvprec_cache0_tile_logits
// CHECK: func.func private @kvprec_cache0_tile_softmax
// CHECK-NOT: math.exp
// CHECK: func.func private @kvprec_cache0_tile_accumulate
// The C ABI entry points.
// CHECK: func.func @kvprec_cache0_arena_bytes() -> i64 attributes {llvm.emit_c_interface}
// CHECK: func.func @kvprec_cache0_init(%{{.+}}: memref<?xi8>) -> i32 attributes {llvm.emit_c_interface}
// CHECK: func.func @kvprec_cache0_append(%{{.+}}: memref<?xi8>, %{{.+}}: index, %{{.+}}: memref<?x?x?xf32>, %{{.+}}: memref<?x?x?xf32>, %{{.+}}: index) -> i32 attributes {llvm.emit_c_interface}
// CHECK: func.func @kvprec_cache0_attend(%{{.+}}: memref<?xi8>, %{{.+}}: index, %{{.+}}: memref<?x?xf32>, %{{.+}}: index, %{{.+}}: memref<?x?xf32>, %{{.+}}: f32) -> i32 attributes {llvm.emit_c_interface}
// CHECK: func.func @kvprec_cache0_load(%{{.+}}: memref<?xi8>, %{{.+}}: index, %{{.+}}: index, %{{.+}}: memref<?x?x?xf32>, %{{.+}}: memref<?x?x?xf32>) -> i32 attributes {llvm.emit_c_interface}

// -----

// 80 layers x 8 KV heads in one format: one set of kernels, not 1280.
#wide = #kvprec.plan<layers = 80, heads = 8, capacity = 4096, block = 64, sink = 4, window = 128,
    formats = [#kvprec.format<i8, symmetric, token_group = 128, scale = f16>],
    sink_formats = [0], body_formats = [0], window_formats = [0]>
// CHECK: memref.global "private" constant @kvprec_cache0_streams : memref<14080xi64>
// CHECK: func.func private @uses(memref<?xi8>)
// CHECK-COUNT-1: func.func private @kvprec_int8_sym_tg128_f16_d128_f32_store
// CHECK-NOT: func.func private @kvprec_int8_sym_tg128_f16_d128_f32_store
// CHECK: func.func @kvprec_cache0_append({{.*}}memref<?x?x?xf16>
func.func private @uses(!kvprec.cache<80x8x4096x128xf16, #wide>)

// -----

// An attend that returns the run-time certificate calls P_attend_certified,
// which has the formats' bounds kernels; a cache whose attends do not ask
// for it gets none. Two cache types that share a format share its kernels.
#i8 = #kvprec.plan<layers = 1, heads = 2, capacity = 32, block = 8, sink = 0, window = 0,
    formats = [#kvprec.format<i8, symmetric, token_group = 8, scale = f16>],
    sink_formats = [0], body_formats = [0], window_formats = [0]>
#i8short = #kvprec.plan<layers = 1, heads = 2, capacity = 16, block = 8, sink = 0, window = 0,
    formats = [#kvprec.format<i8, symmetric, token_group = 8, scale = f16>],
    sink_formats = [0], body_formats = [0], window_formats = [0]>
// CHECK-LABEL: func.func @certified
// CHECK: %[[HEADS:.+]] = memref.dim %{{.+}}, %{{.+}} : memref<4x8xf32>
// CHECK: %[[BOUNDS:.+]] = memref.alloc(%[[HEADS]]) : memref<?xf32>
// CHECK: %[[STATUS:.+]] = call @kvprec_cache0_attend_certified(%{{.+}}, %[[BOUNDS]])
// CHECK: %[[MAX:.+]] = scf.for %{{.+}} = %{{.+}} to %[[HEADS]] step %{{.+}} iter_args(%[[ACC:.+]] = %{{.+}}) -> (f32)
// CHECK: %[[ONE:.+]] = memref.load %[[BOUNDS]]
// CHECK: arith.maximumf %[[ACC]], %[[ONE]] : f32
// CHECK: memref.dealloc %[[BOUNDS]]
// CHECK: call @kvprec_cache1_attend(
// CHECK: return %[[MAX]] : f32
func.func @certified(%c: !kvprec.cache<1x2x32x8xf32, #i8>, %d: !kvprec.cache<1x2x16x8xf32, #i8short>,
                     %q: memref<4x8xf32>, %o: memref<4x8xf32>, %n: index) -> f32 {
  %b = kvprec.attend %q, %c[0] len %n into %o : memref<4x8xf32>, !kvprec.cache<1x2x32x8xf32, #i8> into memref<4x8xf32> -> f32
  kvprec.attend %q, %d[0] len %n into %o : memref<4x8xf32>, !kvprec.cache<1x2x16x8xf32, #i8short> into memref<4x8xf32>
  return %b : f32
}
// CHECK-COUNT-1: func.func private @kvprec_int8_sym_tg8_f16_d8_f32_store
// CHECK-NOT: func.func private @kvprec_int8_sym_tg8_f16_d8_f32_store
// Whole-row symmetric token groups take their scale out of the logits:
// load_keys stores the code values themselves (and the rows' scales).
// CHECK: func.func private @kvprec_int8_sym_tg8_f16_d8_f32_load_keys
// CHECK: %[[CODES:.+]] = arith.sitofp %{{.+}} : vector<8xi32> to vector<8xf32>
// CHECK-NEXT: vector.store %[[CODES]]
// CHECK: func.func private @kvprec_int8_sym_tg8_f16_d8_f32_load_bounds
// CHECK: func.func private @kvprec_cache0_load_bounds
// CHECK: func.func private @kvprec_cache0_tile_abs_logits
// CHECK: func.func private @kvprec_cache0_tile_certify_keys
// CHECK: func.func private @kvprec_cache0_tile_certify_values
// CHECK: func.func private @kvprec_cache0_attend_part_certified
// CHECK: func.func @kvprec_cache0_attend_certified(%{{.+}}: memref<?xi8>, %{{.+}}: index, %{{.+}}: memref<?x?xf32>, %{{.+}}: index, %{{.+}}: memref<?x?xf32>, %{{.+}}: f32, %{{.+}}: memref<?xf32>) -> i32 attributes {llvm.emit_c_interface}
// CHECK-NOT: @kvprec_cache1_attend_certified
// CHECK-NOT: @kvprec_cache1_load_bounds
