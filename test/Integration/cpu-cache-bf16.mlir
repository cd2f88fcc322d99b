// A cache whose logical element type is bf16: append,
// attend and load convert at the boundary; values exact in both types
// come back exactly.
// REQUIRES: mlir-runner
// RUN: kvprec-opt %s --kvprec-to-llvm -o %t.llvm.mlir
// RUN: %mlir_runner %t.llvm.mlir -O3 -e main -entry-point-result=void \
// RUN:   -shared-libs=%mlir_lib_dir/libmlir_runner_utils%shlibext,%mlir_lib_dir/libmlir_c_runner_utils%shlibext \
// RUN:   | FileCheck %s

#plan = #kvprec.plan<layers = 1, heads = 1, capacity = 4, block = 2, sink = 0, window = 0,
    formats = [#kvprec.format<i8, symmetric, token_group = 8, scale = f32>],
    sink_formats = [0], body_formats = [0], window_formats = [0]>

func.func private @printMemrefF32(memref<*xf32>)

func.func @run(%dummy: f32) {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %c2 = arith.constant 2 : index
  %c8 = arith.constant 8 : index
  %cache = kvprec.alloc : !kvprec.cache<1x1x4x8xbf16, #plan>
  %k = memref.alloc() : memref<2x1x8xbf16>
  %v = memref.alloc() : memref<2x1x8xbf16>
  %q = memref.alloc() : memref<1x8xbf16>
  %o = memref.alloc() : memref<1x8xbf16>
  %zero = arith.constant 0.0 : bf16
  // V rows 127 and -127 with K = 0: i8 stores them exactly (scale 1).
  %a = arith.constant 127.0 : bf16
  %b = arith.constant -127.0 : bf16
  scf.for %j = %c0 to %c8 step %c1 {
    memref.store %zero, %k[%c0, %c0, %j] : memref<2x1x8xbf16>
    memref.store %zero, %k[%c1, %c0, %j] : memref<2x1x8xbf16>
    memref.store %a, %v[%c0, %c0, %j] : memref<2x1x8xbf16>
    memref.store %b, %v[%c1, %c0, %j] : memref<2x1x8xbf16>
    memref.store %zero, %q[%c0, %j] : memref<1x8xbf16>
  }
  kvprec.append %k, %v into %cache[0] at %c0 : memref<2x1x8xbf16>, memref<2x1x8xbf16> into !kvprec.cache<1x1x4x8xbf16, #plan>
  kvprec.attend %q, %cache[0] len %c2 into %o : memref<1x8xbf16>, !kvprec.cache<1x1x4x8xbf16, #plan> into memref<1x8xbf16>
  %lk = memref.alloc() : memref<2x1x8xbf16>
  %lv = memref.alloc() : memref<2x1x8xbf16>
  kvprec.load %cache[0] from %c0 into %lk, %lv : !kvprec.cache<1x1x4x8xbf16, #plan> into memref<2x1x8xbf16>, memref<2x1x8xbf16>
  // Print as f32: the mean of 127 and -127, then the loaded values.
  %out = memref.alloc() : memref<3x8xf32>
  scf.for %j = %c0 to %c8 step %c1 {
    %x = memref.load %o[%c0, %j] : memref<1x8xbf16>
    %y = memref.load %lv[%c0, %c0, %j] : memref<2x1x8xbf16>
    %z = memref.load %lv[%c1, %c0, %j] : memref<2x1x8xbf16>
    %xf = arith.extf %x : bf16 to f32
    %yf = arith.extf %y : bf16 to f32
    %zf = arith.extf %z : bf16 to f32
    memref.store %xf, %out[%c0, %j] : memref<3x8xf32>
    memref.store %yf, %out[%c1, %j] : memref<3x8xf32>
    memref.store %zf, %out[%c2, %j] : memref<3x8xf32>
  }
  %u = memref.cast %out : memref<3x8xf32> to memref<*xf32>
  call @printMemrefF32(%u) : (memref<*xf32>) -> ()
  kvprec.dealloc %cache : !kvprec.cache<1x1x4x8xbf16, #plan>
  return
}

// CHECK: sizes = [3, 8]
// CHECK-NEXT: [0,   0,   0,   0,   0,   0,   0,   0]
// CHECK-NEXT: [127,   127,   127,   127,   127,   127,   127,   127]
// CHECK-NEXT: [-127,   -127,   -127,   -127,   -127,   -127,   -127,   -127]
func.func @main() {
  %f = arith.constant 0.0 : f32
  call @run(%f) : (f32) -> ()
  return
}
