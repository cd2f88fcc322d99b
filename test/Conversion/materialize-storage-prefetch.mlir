// The row kernels ask for the codes `prefetch-distance` bytes ahead of the
// row they read, one prefetch per 64-byte line of a row, the row clamped to
// the last whole row of the codes' view; 0 emits none, and a distance out
// of range is an error.
// RUN: kvprec-opt %s --kvprec-materialize-storage | FileCheck %s
// RUN: kvprec-opt %s --kvprec-materialize-storage="prefetch-distance=0" | FileCheck %s --check-prefix=NONE
// RUN: kvprec-opt %s --kvprec-to-llvm | mlir-translate --mlir-to-llvmir | FileCheck %s --check-prefix=LLVM
// RUN: not kvprec-opt %s --kvprec-materialize-storage="prefetch-distance=-1" 2>&1 | FileCheck %s --check-prefix=RANGE
// RUN: not kvprec-opt %s --kvprec-materialize-storage="prefetch-distance=1048577" 2>&1 | FileCheck %s --check-prefix=RANGE
// RANGE: error: kvprec-materialize-storage: prefetch-distance must be between 0 and 1048576 bytes, got {{-1|1048577}}

#f16 = #kvprec.plan<layers = 1, heads = 1, capacity = 64, block = 16, sink = 0, window = 0,
    formats = [#kvprec.format<f16>],
    sink_formats = [0], body_formats = [0], window_formats = [0]>

// A row of 128 f16 codes is 256 bytes, 4 lines; 8192 bytes ahead is 32
// rows, 32 * 128 = 4096 i16 elements.
// CHECK-LABEL: func.func private @kvprec_f16_d128_f32_load(
// CHECK: %[[VIEW:.+]] = memref.view %{{.+}} : memref<?xi8> to memref<?xi16>
// CHECK: scf.for %[[I:.+]] = %{{.+}} to %{{.+}} step
// CHECK: %[[ROW:.+]] = arith.addi %{{.+}}, %[[I]] : index
// CHECK: %[[SIZE:.+]] = memref.dim %[[VIEW]], %{{.+}} : memref<?xi16>
// CHECK: %[[LASTROW:.+]] = arith.subi %[[SIZE]], %c128{{.*}} : index
// CHECK: %[[AHEAD:.+]] = arith.addi %[[ROW]], %c32{{.*}} : index
// CHECK: %[[START:.+]] = arith.muli %[[AHEAD]], %c128{{.*}} : index
// CHECK: %[[FIRST:.+]] = arith.minui %[[START]], %[[LASTROW]] : index
// CHECK: memref.prefetch %[[VIEW]][%[[FIRST]]], read, locality<2>, data : memref<?xi16>
// CHECK: %[[SECOND:.+]] = arith.addi %[[FIRST]], %c32{{.*}} : index
// CHECK: memref.prefetch %[[VIEW]][%[[SECOND]]]
// CHECK-COUNT-2: memref.prefetch %[[VIEW]]
// CHECK-NOT: memref.prefetch
// CHECK: vector.load %[[VIEW]][%{{.+}}] : memref<?xi16>, vector<128xi16>
// CHECK-LABEL: func.func private @kvprec_f16_d128_f32_load_keys(
// CHECK: memref.prefetch
// NONE-NOT: memref.prefetch
// LLVM: call void @llvm.prefetch.p0(ptr %{{.+}}, i32 0, i32 2, i32 1)
func.func @decode(%c: !kvprec.cache<1x1x64x128xf32, #f16>, %q: memref<1x128xf32>, %o: memref<1x128xf32>, %n: index) {
  kvprec.attend %q, %c[0] len %n into %o : memref<1x128xf32>, !kvprec.cache<1x1x64x128xf32, #f16> into memref<1x128xf32>
  return
}
