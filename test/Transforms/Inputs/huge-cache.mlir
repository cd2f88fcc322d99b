// The toy cache of toy-cache.mlir with capacity 10^12: planning cost must not
// grow with capacity unless per-block plans are asked for.
module {
  func.func @init() -> !kvprec.cache<2x2x1000000000000x8xf32> {
    %c = kvprec.alloc : !kvprec.cache<2x2x1000000000000x8xf32>
    return %c : !kvprec.cache<2x2x1000000000000x8xf32>
  }
  func.func @step(%c: !kvprec.cache<2x2x1000000000000x8xf32>, %pos: index, %k: memref<1x2x8xf32>,
                  %q: memref<4x8xf32>, %o: memref<4x8xf32>) {
    kvprec.append %k, %k into %c[1] at %pos : memref<1x2x8xf32>, memref<1x2x8xf32> into !kvprec.cache<2x2x1000000000000x8xf32>
    kvprec.attend %q, %c[1] len %pos into %o : memref<4x8xf32>, !kvprec.cache<2x2x1000000000000x8xf32> into memref<4x8xf32>
    return
  }
}
