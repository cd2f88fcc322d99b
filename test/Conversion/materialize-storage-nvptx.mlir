// kvprec-materialize-storage{target=nvptx}: the arena is device memory; a
// gpu.module holds the CPU's tables, dispatchers and store/load kernels
// (P_append_impl and P_load_impl, run by one GPU thread) and the split-K
// attention kernels; the C ABI functions are host code that launches them.
// RUN: kvprec-opt %s --kvprec-materialize-storage="target=nvptx chip=sm_90" | FileCheck %s
// Another prefix, so that several compiled modules link into one program.
// RUN: kvprec-opt %s --kvprec-materialize-storage="target=nvptx chip=sm_80 symbol-prefix=case3_" | FileCheck %s --check-prefix=PREFIX
// PREFIX: gpu.module @case3_0_device
// PREFIX: func.func @case3_0_attend(
// The whole lowering, host code translated to LLVM IR: every launch,
// allocation and copy is a call into the mgpu* runtime (runtime/), the
// kernels' PTX a string the runtime loads.
// (kvprec-to-nvvm links CUDA's libdevice: the lit feature says where it is.)
// RUN: %if libdevice %{ kvprec-opt %s --kvprec-to-nvvm="chip=sm_80" | mlir-translate --mlir-to-llvmir \
// RUN:   | FileCheck %s --check-prefix=HOST %}
// The same plan with cubins (format=bin) where ptxas exists.
// RUN: %if libdevice && ptxas %{ kvprec-opt %s --kvprec-to-nvvm="chip=sm_90 format=bin" | FileCheck %s --check-prefix=BIN %}

#plan = #kvprec.plan<layers = 2, heads = 2, capacity = 256, block = 16, sink = 4, window = 32,
    formats = [#kvprec.format<f16>, #kvprec.format<i4, symmetric, token_group = 32, scale = f16>],
    sink_formats = [0], body_formats = [1], window_formats = [0]>
!cache = !kvprec.cache<2x2x256x64xf32, #plan>

// CHECK: module attributes {gpu.container_module}
// The user's ops: the arena is gpu.alloc'd, then initialized on the device.
// CHECK-LABEL: func.func @step
// CHECK: gpu.alloc async
// CHECK: call @kvprec_cache0_init
// CHECK: call @kvprec_cache0_append
// CHECK: call @kvprec_cache0_attend
// CHECK: gpu.dealloc async
// CHECK: gpu.module @kvprec_cache0_device
// CHECK-DAG: memref.global "private" constant @kvprec_cache0_streams
// CHECK-DAG: func.func private @kvprec_int4_sym_tg32_f16_d64_f32_store
// CHECK-DAG: func.func private @kvprec_cache0_append_check
// CHECK-DAG: func.func private @kvprec_cache0_append_store
// CHECK-DAG: func.func private @kvprec_cache0_load_impl
// The append: a thread per stream (2 KV heads: 4 threads) checks and dry-runs
// its streams, the first thread chooses the status, every thread stores its
// streams, and the first writes the fill count.
// CHECK-LABEL: gpu.func @kvprec_cache0_append_kernel
// CHECK-SAME: kernel
// CHECK: %[[TID:.+]] = gpu.thread_id x
// CHECK: %[[THREADS:.+]] = arith.constant 4 : index
// CHECK: func.call @kvprec_cache0_append_check({{.*}}, %[[TID]], %[[THREADS]], %{{.+}}, %[[TID]])
// CHECK: gpu.barrier
// CHECK: gpu.barrier
// CHECK: gpu.barrier
// CHECK: func.call @kvprec_cache0_append_store({{.*}}, %[[TID]], %[[THREADS]], %{{.+}}, %[[TID]])
// CHECK: gpu.barrier
// The attention block: the chunk's queries, the split's logits, per-warp
// staging rows, accumulated rows and reductions in shared memory. At
// head_dim 64 f16 and int4 lanes hold 8 and 32 elements of a row: 2 query
// heads per block (64 registers); 16 rows per tile, 16 tiles per split (an
// int4 row takes 2 lanes, so 64 rows are in flight).
// CHECK-LABEL: gpu.func @kvprec_cache0_attend_split
// CHECK-SAME: workgroup(%{{.*}} : memref<128xf32, #gpu.address_space<workgroup>>, %{{.*}} : memref<512xf32, #gpu.address_space<workgroup>>, %{{.*}} : memref<512xf32, #gpu.address_space<workgroup>>, %{{.*}} : memref<128xf32, #gpu.address_space<workgroup>>, %{{.*}} : memref<12xf32, #gpu.address_space<workgroup>>) kernel
// CHECK: scf.while
// CHECK: scf.index_switch
// CHECK: vector.load %{{.*}} {alignment = 16 : i64} : memref<?xi32>, vector<4xi32>
// CHECK: gpu.shuffle  xor
// CHECK: gpu.barrier
// CHECK-LABEL: gpu.func @kvprec_cache0_attend_combine
// CHECK-LABEL: func.func @kvprec_cache0_append(
// CHECK-SAME: llvm.emit_c_interface
// CHECK: gpu.alloc async
// CHECK: gpu.launch_func async [%{{.*}}] @kvprec_cache0_device::@kvprec_cache0_append_kernel blocks in (%{{.*}}, %{{.*}}, %{{.*}}) threads in (%{{.*}}, %{{.*}}, %{{.*}})
// CHECK: gpu.memcpy async
// CHECK-LABEL: func.func @kvprec_cache0_attend(
// The fill count comes from the device before anything launches.
// CHECK: gpu.memcpy async
// CHECK: gpu.launch_func async [%{{.*}}] @kvprec_cache0_device::@kvprec_cache0_attend_split
// CHECK: gpu.launch_func async [%{{.*}}] @kvprec_cache0_device::@kvprec_cache0_attend_combine
// HOST-DAG: call ptr @mgpuModuleLoadJIT(
// HOST-DAG: call void @mgpuLaunchKernel(
// HOST-DAG: call ptr @mgpuMemAlloc(
// HOST-DAG: call void @mgpuMemcpy(
// HOST-DAG: call void @mgpuMemFree(
// HOST-DAG: call void @mgpuStreamSynchronize(
// HOST-DAG: define i32 @_mlir_ciface_kvprec_cache0_attend(
// HOST-DAG: define i32 @_mlir_ciface_kvprec_cache0_append(

// BIN: gpu.binary @kvprec_cache0_device  [#gpu.object<#nvvm.target<chip = "sm_90", features = "+ptx80", link = ["{{.*}}libdevice{{.*}}.bc"]>
// BIN-SAME: bin = "

func.func @step(%k: memref<1x2x64xf32>, %v: memref<1x2x64xf32>, %q: memref<4x64xf32>, %o: memref<4x64xf32>) {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %cache = kvprec.alloc : !cache
  kvprec.append %k, %v into %cache[0] at %c0 : memref<1x2x64xf32>, memref<1x2x64xf32> into !cache
  kvprec.attend %q, %cache[0] len %c1 into %o : memref<4x64xf32>, !cache into memref<4x64xf32>
  kvprec.dealloc %cache : !cache
  return
}
