// How attention's kernels serve the query heads of a GQA group: one query
// head through the formats' fused kernels; larger groups through an f32
// tile (or, for unscaled runs, the codes read in place) whose kernels take
// the heads in blocks of 4, then 2, then 1, so
// that each piece of a tile row is loaded once for the heads of a block (an
// L1 load per fused multiply-add bounded the loops when each head was done
// on its own).
// RUN: kvprec-opt %s --kvprec-materialize-storage --cse | FileCheck %s

#f16 = #kvprec.plan<layers = 1, heads = 1, capacity = 64, block = 16, sink = 0, window = 0,
    formats = [#kvprec.format<f16>],
    sink_formats = [0], body_formats = [0], window_formats = [0]>
func.func private @uses(!kvprec.cache<1x1x64x128xf32, #f16>)

// One query head has no group to share a decoded tile with: the format's
// logits and accumulate kernels dequantize each row in registers where
// they use it (f16: the native widening straight into the dot product and
// the fused multiply-add), with no f32 tile in between.
// CHECK-LABEL: func.func private @kvprec_f16_d128_f32_logits(
// CHECK-SAME: %[[ARENA:[^:]+]]: memref<?xi8>, %{{[^:]+}}: index, %{{[^:]+}}: index, %{{[^:]+}}: index, %{{[^:]+}}: index, %{{[^:]+}}: index, %[[LQ:[^:]+]]: memref<?xf32>, %[[LQOFF:[^:]+]]: index, %[[LSCALE:[^:]+]]: f32, %[[LOUT:[^:]+]]: memref<?xf32>
// CHECK: %[[CODES:.+]] = memref.view %[[ARENA]]
// CHECK: %[[QV:.+]] = vector.load %[[LQ]][%[[LQOFF]]] : memref<?xf32>, vector<128xf32>
// CHECK: scf.for
// CHECK: %[[RAW:.+]] = vector.load %[[CODES]][%{{.+}}] : memref<?xi16>, vector<128xi16>
// CHECK: %[[HALF:.+]] = arith.bitcast %[[RAW]] : vector<128xi16> to vector<128xf16>
// CHECK: %[[KEY:.+]] = arith.extf %[[HALF]] : vector<128xf16> to vector<128xf32>
// CHECK: vector.extract_strided_slice %[[KEY]] {offsets = [0], sizes = [16]
// CHECK: vector.store %{{.+}}, %[[LOUT]][%{{.+}}] : memref<?xf32>, vector<16xf32>
// CHECK: func.func private @kvprec_f16_d128_f32_accumulate(
// CHECK: scf.for {{.+}} iter_args(%[[ACC:.+]] = %{{.+}}) -> (vector<128xf32>) {
// CHECK: %[[VALUE:.+]] = arith.extf %{{.+}} : vector<128xf16> to vector<128xf32>
// CHECK: vector.fma %{{.+}}, %[[VALUE]], %[[ACC]] : vector<128xf32>

// Logits: blocks of 4 heads over groups of 4 rows (16 dot products per
// transposed reduction), each head's 4 results stored together; leftover
// rows one at a time.
// CHECK-LABEL: func.func private @kvprec_cache0_tile_logits(
// CHECK-SAME: %[[TILE:[^:]+]]: memref<?xf32>, %[[ROWS:[^:]+]]: index, %[[Q:[^:]+]]: memref<?xf32>, %[[HEADS:[^:]+]]: index
// CHECK: arith.divui %[[HEADS]], %c4{{.*}} : index
// CHECK: scf.for %{{.+}} = %{{.+}} to %{{.+}} step %c4{{.*}} {
// CHECK: scf.for %[[R0:.+]] = %{{.+}} to %{{.+}} step %{{c4.*}} {
// CHECK-COUNT-4: vector.load %[[Q]][%{{.+}}] : memref<?xf32>, vector<16xf32>
// CHECK: %[[PIECE:.+]] = vector.load %[[TILE]][%{{.+}}] : memref<?xf32>, vector<16xf32>
// CHECK-COUNT-4: arith.mulf %{{.+}}, %[[PIECE]] : vector<16xf32>
// CHECK: vector.fma
// CHECK: vector.shuffle %{{.+}} [0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3] : vector<4xf32>, vector<4xf32>
// CHECK: vector.extract_strided_slice %{{.+}} {offsets = [12], sizes = [4], strides = [1]} : vector<16xf32> to vector<4xf32>
// CHECK: vector.store %{{.+}}, %{{.+}}[%{{.+}}] : memref<?xf32>, vector<4xf32>
// CHECK: scf.for %{{.+}} = %{{.+}} to %[[ROWS]] step
// Then a block of 2 heads (groups of 8 rows) and one of 1 (16 rows), where
// the heads that remain need them.
// CHECK: arith.andi %{{.+}}, %c2{{.*}} : index
// CHECK: scf.if
// CHECK: step %c8
// CHECK: vector.extract_strided_slice %{{.+}} {offsets = [8], sizes = [8], strides = [1]} : vector<16xf32> to vector<8xf32>
// CHECK: arith.andi %{{.+}}, %c1{{.*}} : index
// CHECK: scf.if
// CHECK: step %c16
// CHECK: vector.store %{{.+}}, %{{.+}}[%{{.+}}] : memref<?xf32>, vector<16xf32>

// Accumulation: 4 heads over pieces of 32 lanes (8 chains of 16 lanes),
// 2 heads over 64, 1 head over the whole row; one load of the tile per
// piece and row, one fused multiply-add per head.
// CHECK-LABEL: func.func private @kvprec_cache0_tile_accumulate(
// CHECK-SAME: %[[VTILE:[^:]+]]: memref<?xf32>
// CHECK: scf.for %{{.+}} = %{{.+}} to %c128{{.*}} step %c32
// CHECK: scf.for {{.+}} iter_args({{.+}}) -> (vector<32xf32>, vector<32xf32>, vector<32xf32>, vector<32xf32>) {
// CHECK: %[[V:.+]] = vector.load %[[VTILE]][%{{.+}}] : memref<?xf32>, vector<32xf32>
// CHECK-COUNT-4: vector.fma %{{.+}}, %[[V]], %{{.+}} : vector<32xf32>
// CHECK: step %c64
// CHECK: -> (vector<64xf32>, vector<64xf32>) {
// CHECK: step %c128
// CHECK: -> (vector<128xf32>) {

// A group over an unscaled f32, f16 or bf16 run reads the run's codes in
// place: variants of the tile kernels whose pieces widen from the codes
// (one exact conversion, no decode pass into the tile).
// CHECK-LABEL: func.func private @kvprec_cache0_direct_logits_f16(
// CHECK-SAME: %[[DARENA:[^:]+]]: memref<?xi8>, %[[DCODE:[^:]+]]: index, %[[DROW0:[^:]+]]: index
// CHECK: %[[DVIEW:.+]] = memref.view %[[DARENA]][%[[DCODE]]][%{{.+}}] : memref<?xi8> to memref<?xi16>
// CHECK: %[[DRAW:.+]] = vector.load %[[DVIEW]][%{{.+}}] : memref<?xi16>, vector<16xi16>
// CHECK: %[[DHALF:.+]] = arith.bitcast %[[DRAW]] : vector<16xi16> to vector<16xf16>
// CHECK: arith.extf %[[DHALF]] : vector<16xf16> to vector<16xf32>
// CHECK-LABEL: func.func private @kvprec_cache0_direct_accumulate_f16(
// CHECK: arith.extf %{{.+}} : vector<32xf16> to vector<32xf32>
// CHECK-COUNT-4: vector.fma

// The attention of a KV head takes the fused kernels when the group is one
// query head, the direct tile kernels for a group over an unscaled run,
// the tile otherwise.
// CHECK-LABEL: func.func private @kvprec_cache0_attend_part(
// CHECK-SAME: %{{[^:]+}}: memref<?xi8>, %{{[^:]+}}: index, %{{[^:]+}}: memref<?x?xf32>, %{{[^:]+}}: f32, %{{[^:]+}}: index, %{{[^:]+}}: index, %[[GROUP:[^:]+]]: index
// CHECK: %[[SINGLE:.+]] = arith.cmpi eq, %[[GROUP]], %c1{{.*}} : index
// CHECK: scf.if %[[SINGLE]] {
// CHECK-NEXT: func.call @kvprec_cache0_logits(
// CHECK: } else {
// CHECK: memref.get_global @kvprec_cache0_direct
// CHECK: scf.index_switch
// CHECK-NEXT: case 1 {
// CHECK-NEXT: func.call @kvprec_cache0_direct_logits_f16(
// CHECK: default {
// CHECK: func.call @kvprec_cache0_load_keys(
// CHECK: func.call @kvprec_cache0_tile_logits(
// CHECK: scf.if %[[SINGLE]] {
// CHECK-NEXT: func.call @kvprec_cache0_accumulate(
// CHECK: } else {
// CHECK: scf.index_switch
// CHECK-NEXT: case 1 {
// CHECK-NEXT: func.call @kvprec_cache0_direct_accumulate_f16(
// CHECK: default {
// CHECK: func.call @kvprec_cache0_load_rows(
// CHECK: func.call @kvprec_cache0_tile_accumulate(
