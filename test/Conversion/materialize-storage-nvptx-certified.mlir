// The run-time certificate on the NVPTX target: kvprec.attend with an f32
// result (or runtime-certificate) makes P_attend_certified, host code that
// launches the certified split kernel (a block per query head, split and
// KV head: the output's partials and the certificate's terms in the same
// pass) and the certified combine (a block per query head, a thread per
// channel), docs/gpu.md.
// RUN: kvprec-opt %s --kvprec-materialize-storage="target=nvptx chip=sm_80" | FileCheck %s
// The whole lowering, with ptxas assembling the certified kernels
// (kvprec-to-nvvm-formats.test checks their spills for every format).
// RUN: %if libdevice && ptxas %{ kvprec-opt %s --kvprec-to-nvvm="chip=sm_80 format=bin" | FileCheck %s --check-prefix=BIN %}

#plan = #kvprec.plan<layers = 1, heads = 2, capacity = 64, block = 16, sink = 4, window = 16,
    formats = [#kvprec.format<f16>, #kvprec.format<i8, symmetric, token_group = 32, scale = f16>],
    sink_formats = [0], body_formats = [1], window_formats = [0]>
!cache = !kvprec.cache<1x2x64x32xf32, #plan>

// The user's op: the bounds in device memory, copied back, the largest
// the result.
// CHECK-LABEL: func.func @certified
// CHECK: %[[HOST:.+]] = memref.alloc
// CHECK: %[[DEVICE:.+]], %{{.+}} = gpu.alloc async
// CHECK: call @kvprec_cache0_attend_certified({{.*}}, %[[DEVICE]])
// CHECK: gpu.memcpy async [%{{.+}}] %[[HOST]], %[[DEVICE]]
// CHECK: gpu.dealloc async [%{{.+}}] %[[DEVICE]]
// CHECK: scf.for
// CHECK: memref.load %[[HOST]]
func.func @certified(%c: !cache, %q: memref<4x32xf32>, %o: memref<4x32xf32>, %n: index) -> f32 {
  %b = kvprec.attend %q, %c[0] len %n into %o : memref<4x32xf32>, !cache into memref<4x32xf32> -> f32
  return %b : f32
}

// The device module: the two certified kernels beside the others, none of
// the CPU's certified functions.
// CHECK: gpu.module @kvprec_cache0_device
// CHECK-NOT: attend_part_certified
// CHECK-DAG: gpu.func @kvprec_cache0_attend_split_certified({{.*}}) workgroup({{.*}}) kernel
// CHECK-DAG: gpu.func @kvprec_cache0_attend_combine_certified({{.*}}) workgroup({{.*}}) kernel
// The host function: the same checks as P_attend, then a block per (query
// head, split, KV head) of 128 threads, and one per (KV head, query head).
// CHECK-LABEL: func.func @kvprec_cache0_attend_certified(
// CHECK: gpu.launch_func async {{.*}} @kvprec_cache0_device::@kvprec_cache0_attend_split_certified blocks in (%{{.+}}, %{{.+}}, %c2{{.*}}) threads in (%c128{{.*}}, %{{.+}}, %{{.+}})
// CHECK: gpu.launch_func async {{.*}} @kvprec_cache0_device::@kvprec_cache0_attend_combine_certified blocks in (%c2{{.*}}, %{{.+}}, %{{.+}}) threads in (%c128{{.*}}, %{{.+}}, %{{.+}})

// BIN: gpu.binary @kvprec_cache0_device
// BIN-SAME: bin = "
