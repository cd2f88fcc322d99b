// With x86-avx512, int4 and int2 token groups of 16 or more elements decode
// through a 16-entry table permute (vpermps): per group a table of the 16
// values the low 4 bits of a byte stand for, dequantized with the group's
// scale, then one permute per 16 elements; the fields in the high half of
// each byte shifted down by 4 first. Without the option, and for groups
// smaller than 16, the codes are unpacked with shifts and converted.
// RUN: kvprec-opt %s --kvprec-materialize-storage="x86-avx512=true" --cse | FileCheck %s
// RUN: kvprec-opt %s --kvprec-materialize-storage --cse | FileCheck %s --check-prefix=PORTABLE
// RUN: kvprec-opt %s --kvprec-to-llvm="x86-avx512=true" | mlir-translate --mlir-to-llvmir \
// RUN:   | llc -O2 -mcpu=x86-64-v4 | FileCheck %s --check-prefix=ASM
// PORTABLE-NOT: llvm.call_intrinsic
// The intrinsic translates and selects for an AVX-512 CPU.
// ASM-LABEL: kvprec_int4_sym_tg32_f16_d128_f32_load:
// ASM: vpermps {{.*}}%zmm

#tg32 = #kvprec.plan<layers = 1, heads = 1, capacity = 64, block = 16, sink = 0, window = 0,
    formats = [#kvprec.format<i4, symmetric, token_group = 32, scale = f16>],
    sink_formats = [0], body_formats = [0], window_formats = [0]>
#tg4 = #kvprec.plan<layers = 1, heads = 1, capacity = 64, block = 16, sink = 0, window = 0,
    formats = [#kvprec.format<i4, symmetric, token_group = 4, scale = f16>],
    sink_formats = [0], body_formats = [0], window_formats = [0]>
func.func private @uses(!kvprec.cache<1x1x64x128xf32, #tg32>, !kvprec.cache<1x1x64x128xf32, #tg4>)

// A row of 128 int4 codes is 64 bytes: elements 0-63 in the low nibbles,
// 64-127 in the high ones; groups of 32 elements, so the 16-byte piece k of
// the low nibbles is group k / 2 and of the high nibbles group 2 + k / 2.
// CHECK-LABEL: func.func private @kvprec_int4_sym_tg32_f16_d128_f32_load(
// CHECK: %[[BYTES:.+]] = vector.load %{{.+}} : memref<?xi8>, vector<64xi8>
// CHECK: %[[WIDE:.+]] = arith.extui %[[BYTES]] : vector<64xi8> to vector<64xi32>
// CHECK: %[[SCALES:.+]] = arith.extf %{{.+}} : vector<4xf16> to vector<4xf32>
// CHECK: %[[P0:.+]] = vector.extract_strided_slice %[[WIDE]] {offsets = [0], sizes = [16], strides = [1]}
// The table: the signed nibbles 0..7, -8..-1 times the group's scale.
// CHECK: %[[CODES:.+]] = arith.constant dense<[0, 1, 2, 3, 4, 5, 6, 7, -8, -7, -6, -5, -4, -3, -2, -1]> : vector<16xi32>
// CHECK: %[[S0:.+]] = vector.extract %[[SCALES]][0] : f32 from vector<4xf32>
// CHECK: %[[VALUES:.+]] = arith.sitofp %[[CODES]] : vector<16xi32> to vector<16xf32>
// CHECK: %[[TABLE0:.+]] = arith.mulf %[[VALUES]], %{{.+}} : vector<16xf32>
// CHECK: llvm.call_intrinsic "llvm.x86.avx512.permvar.sf.512"(%[[TABLE0]], %[[P0]]) : (vector<16xf32>, vector<16xi32>) -> vector<16xf32>
// CHECK: llvm.call_intrinsic "llvm.x86.avx512.permvar.sf.512"(%[[TABLE0]],
// CHECK: vector.extract %[[SCALES]][1]
// CHECK-COUNT-2: llvm.call_intrinsic "llvm.x86.avx512.permvar.sf.512"
// The high nibbles: shifted by 4, groups 2 and 3.
// CHECK: %[[HIGH:.+]] = arith.shrui %[[P0]], %{{.+}} : vector<16xi32>
// CHECK: vector.extract %[[SCALES]][2]
// CHECK: llvm.call_intrinsic "llvm.x86.avx512.permvar.sf.512"(%{{.+}}, %[[HIGH]])
// CHECK: vector.insert_strided_slice %{{.+}}, %{{.+}} {offsets = [112], strides = [1]} : vector<16xf32> into vector<128xf32>
// Groups of 4 elements do not fit a 16-element piece.
// CHECK-LABEL: func.func private @kvprec_int4_sym_tg4_f16_d128_f32_load(
// CHECK-NOT: llvm.call_intrinsic
// CHECK: return
