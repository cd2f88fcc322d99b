// The shipped examples parse, verify and round-trip.
// RUN: kvprec-opt %kvprec_src_root/examples/stories260K.mlir --verify-roundtrip | FileCheck %s
// CHECK: module attributes {kvprec.model = "stories260K"}
// CHECK: kvprec.alloc : !kvprec.cache<5x4x512x8xf32>
// CHECK-COUNT-5: kvprec.attend
