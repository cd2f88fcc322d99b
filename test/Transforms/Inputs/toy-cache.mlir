// A 2-layer, 2-KV-head cache with 4 query heads, matching the default
// shape of make-calibration.py.
module {
  func.func @init() -> !kvprec.cache<2x2x64x8xf32> {
    %c = kvprec.alloc : !kvprec.cache<2x2x64x8xf32>
    return %c : !kvprec.cache<2x2x64x8xf32>
  }
  func.func @step(%c: !kvprec.cache<2x2x64x8xf32>, %pos: index, %k: memref<1x2x8xf32>,
                  %q: memref<4x8xf32>, %o: memref<4x8xf32>) {
    kvprec.append %k, %k into %c[1] at %pos : memref<1x2x8xf32>, memref<1x2x8xf32> into !kvprec.cache<2x2x64x8xf32>
    kvprec.attend %q, %c[1] len %pos into %o : memref<4x8xf32>, !kvprec.cache<2x2x64x8xf32> into memref<4x8xf32>
    return
  }
}
