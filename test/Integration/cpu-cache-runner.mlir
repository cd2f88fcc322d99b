// A planned cache running on the CPU through kvprec-to-llvm and mlir-runner:
// append three tokens, attend, load a range, and the run-time errors.
// REQUIRES: mlir-runner
// RUN: kvprec-opt %s --kvprec-to-llvm -o %t.llvm.mlir
// RUN: %mlir_runner %t.llvm.mlir -O3 -e main -entry-point-result=void \
// RUN:   -shared-libs=%mlir_lib_dir/libmlir_runner_utils%shlibext,%mlir_lib_dir/libmlir_c_runner_utils%shlibext \
// RUN:   | FileCheck %s
// The same with attention split over 2 OpenMP threads (one of the splits
// gets the sink tile, the other the window blocks).
// RUN: %if libomp %{ kvprec-opt %s --kvprec-to-llvm="threads=2" -o %t.omp.mlir %}
// RUN: %if libomp %{ %mlir_runner %t.omp.mlir -O3 -e main -entry-point-result=void \
// RUN:   -shared-libs=%mlir_lib_dir/libmlir_runner_utils%shlibext,%mlir_lib_dir/libmlir_c_runner_utils%shlibext,%libomp \
// RUN:   | FileCheck %s %}
// RUN: %if libomp %{ FileCheck %s --check-prefix=OMP < %t.omp.mlir %}
// OMP: omp.parallel
// An object file for a C or C++ runtime: the C ABI entry points.
// RUN: mlir-translate --mlir-to-llvmir %t.llvm.mlir -o %t.ll
// RUN: llc -O3 -mcpu=znver4 -filetype=obj -relocation-model=pic %t.ll -o %t.o
// RUN: llvm-nm %t.o | FileCheck %s --check-prefix=SYMBOLS
// SYMBOLS-DAG: T _mlir_ciface_kvprec_cache0_append
// SYMBOLS-DAG: T _mlir_ciface_kvprec_cache0_attend
// SYMBOLS-DAG: T _mlir_ciface_kvprec_cache0_attend_certified
// SYMBOLS-DAG: T _mlir_ciface_kvprec_cache0_load
// SYMBOLS-DAG: T _mlir_ciface_kvprec_cache0_init
// SYMBOLS-DAG: T _mlir_ciface_kvprec_cache0_arena_bytes
// RUN: kvprec-opt %s --kvprec-to-llvm -o %t.bad.mlir
// cf.assert's lowering puts() the message to stdout and aborts without
// flushing it, so stdout is unbuffered here (docs/lowering.md).
// RUN: not --crash stdbuf -o0 %mlir_runner %t.bad.mlir -O3 -e wrong_position -entry-point-result=void \
// RUN:   -shared-libs=%mlir_lib_dir/libmlir_runner_utils%shlibext,%mlir_lib_dir/libmlir_c_runner_utils%shlibext \
// RUN:   2>&1 | FileCheck %s --check-prefix=ABORT
// RUN: not --crash stdbuf -o0 %mlir_runner %t.bad.mlir -O3 -e wrong_length -entry-point-result=void \
// RUN:   -shared-libs=%mlir_lib_dir/libmlir_runner_utils%shlibext,%mlir_lib_dir/libmlir_c_runner_utils%shlibext \
// RUN:   2>&1 | FileCheck %s --check-prefix=LENGTH

// f16 storage in every class: the values below are exact in f16, so the
// results are exact too. Block 2, sink 1, window 2: with 3 tokens,
// position 0 is in the sink and positions 1-2 in the window.
#plan = #kvprec.plan<layers = 2, heads = 1, capacity = 8, block = 2, sink = 1, window = 2,
    formats = [#kvprec.format<f16>], sink_formats = [0], body_formats = [0], window_formats = [0]>
!cache = !kvprec.cache<2x1x8x8xf32, #plan>

func.func private @printMemrefF32(memref<*xf32>)

// keys[t] = 0 (uniform attention), values[t] = t + 1.
func.func @tokens(%n: index) -> (memref<?x1x8xf32>, memref<?x1x8xf32>) {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %c8 = arith.constant 8 : index
  %zero = arith.constant 0.0 : f32
  %k = memref.alloc(%n) : memref<?x1x8xf32>
  %v = memref.alloc(%n) : memref<?x1x8xf32>
  scf.for %t = %c0 to %n step %c1 {
    %ti = arith.index_cast %t : index to i32
    %tf = arith.sitofp %ti : i32 to f32
    %one = arith.constant 1.0 : f32
    %value = arith.addf %tf, %one : f32
    scf.for %j = %c0 to %c8 step %c1 {
      memref.store %zero, %k[%t, %c0, %j] : memref<?x1x8xf32>
      memref.store %value, %v[%t, %c0, %j] : memref<?x1x8xf32>
    }
  }
  return %k, %v : memref<?x1x8xf32>, memref<?x1x8xf32>
}

func.func @main() {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %c2 = arith.constant 2 : index
  %c3 = arith.constant 3 : index
  %cache = kvprec.alloc : !cache
  %k, %v = call @tokens(%c3) : (index) -> (memref<?x1x8xf32>, memref<?x1x8xf32>)
  kvprec.append %k, %v into %cache[1] at %c0 : memref<?x1x8xf32>, memref<?x1x8xf32> into !cache
  // Two query heads share the KV head (GQA 2).
  %q = memref.alloc() : memref<2x8xf32>
  %o = memref.alloc() : memref<2x8xf32>
  %qv = arith.constant 0.5 : f32
  %c8 = arith.constant 8 : index
  scf.for %i = %c0 to %c2 step %c1 {
    scf.for %j = %c0 to %c8 step %c1 {
      memref.store %qv, %q[%i, %j] : memref<2x8xf32>
    }
  }
  kvprec.attend %q, %cache[1] len %c3 into %o : memref<2x8xf32>, !cache into memref<2x8xf32>
  // Uniform weights over values 1, 2, 3.
  // CHECK: rank = 2 offset = 0 sizes = [2, 8]
  // CHECK-NEXT: [2,   2,   2,   2,   2,   2,   2,   2]
  // CHECK-NEXT: [2,   2,   2,   2,   2,   2,   2,   2]
  %ou = memref.cast %o : memref<2x8xf32> to memref<*xf32>
  call @printMemrefF32(%ou) : (memref<*xf32>) -> ()
  // The run-time certificate of the same attention: the f16 values t + 1
  // may be off by 2^-11 (t + 1) each (f16's unit roundoff; these happen to
  // be exact), about 9.8e-4 under uniform weights, plus the keys' and the
  // kernel's far smaller parts.
  %bound = kvprec.attend %q, %cache[1] len %c3 into %o : memref<2x8xf32>, !cache into memref<2x8xf32> -> f32
  // CHECK: 0.00097{{[0-9]+}}
  vector.print %bound : f32
  // Positions 1 and 2 back.
  %lk = memref.alloc() : memref<2x1x8xf32>
  %lv = memref.alloc() : memref<2x1x8xf32>
  kvprec.load %cache[1] from %c1 into %lk, %lv : !cache into memref<2x1x8xf32>, memref<2x1x8xf32>
  // CHECK: rank = 3 offset = 0 sizes = [2, 1, 8]
  // CHECK-NEXT: {{\[\[\[}}2,   2,   2,   2,   2,   2,   2,   2]],
  // CHECK-NEXT: {{\[\[}}3,   3,   3,   3,   3,   3,   3,   3]]]
  %lvu = memref.cast %lv : memref<2x1x8xf32> to memref<*xf32>
  call @printMemrefF32(%lvu) : (memref<*xf32>) -> ()
  kvprec.dealloc %cache : !cache
  return
}

// ABORT: kvprec.append: the position or length disagrees with the layer's fill count
func.func @wrong_position() {
  %c1 = arith.constant 1 : index
  %cache = kvprec.alloc : !cache
  %k, %v = call @tokens(%c1) : (index) -> (memref<?x1x8xf32>, memref<?x1x8xf32>)
  kvprec.append %k, %v into %cache[0] at %c1 : memref<?x1x8xf32>, memref<?x1x8xf32> into !cache
  return
}

// LENGTH: kvprec.attend: the position or length disagrees with the layer's fill count
func.func @wrong_length() {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %c2 = arith.constant 2 : index
  %cache = kvprec.alloc : !cache
  %k, %v = call @tokens(%c1) : (index) -> (memref<?x1x8xf32>, memref<?x1x8xf32>)
  kvprec.append %k, %v into %cache[0] at %c0 : memref<?x1x8xf32>, memref<?x1x8xf32> into !cache
  %q = memref.alloc() : memref<1x8xf32>
  %o = memref.alloc() : memref<1x8xf32>
  kvprec.attend %q, %cache[0] len %c2 into %o : memref<1x8xf32>, !cache into memref<1x8xf32>
  return
}
