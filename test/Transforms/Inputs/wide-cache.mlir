// head_dim 2^32: more than a format's 32-bit group size holds
// (assign-precision-invalid.mlir).
func.func @f() {
  %c = kvprec.alloc : !kvprec.cache<1x1x64x4294967296xf32>
  return
}
