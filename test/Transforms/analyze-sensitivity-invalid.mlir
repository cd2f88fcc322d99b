// Calibration classes that cannot fit the cache are refused with the alloc's
// location (a window of 2^63-1 wrapped the envelope's distance arithmetic,
// and analyze-sensitivity exited 0 with window mass 0 and curvature 0).
// RUN: python3 %S/Inputs/make-calibration.py %t.window.safetensors --window 9223372036854775807 --query-samples 0
// RUN: not kvprec-opt %S/Inputs/toy-cache.mlir --kvprec-import-calibration="file=%t.window.safetensors" \
// RUN:   --kvprec-analyze-sensitivity 2>&1 | FileCheck %s --check-prefix=WINDOW
// WINDOW: toy-cache.mlir:5:10: error: 'kvprec.alloc' op cannot be analyzed: a sink of 4 and a window of 9223372036854775807 positions do not fit the cache's 64

// A block of 2^63-1 in a statistics file: its shapes are computed without
// wrapping, and the file is refused for what its counts say.
// RUN: python3 %S/Inputs/make-calibration.py %t.block.safetensors --block 9223372036854775807 --query-samples 0
// RUN: not kvprec-opt %S/Inputs/toy-cache.mlir --kvprec-import-calibration="file=%t.block.safetensors" 2>&1 \
// RUN: | FileCheck %s --check-prefix=BLOCK
// BLOCK: error: kvprec-import-calibration: {{.*}}block.safetensors: tensor 'position_count' element 0 [0] is 9223372036854775807, more than prompts (1) x block positions (64)

// An infinite tolerance gave -inf necessary bits.
// RUN: python3 %S/Inputs/make-calibration.py %t.ok.safetensors
// RUN: not kvprec-opt %S/Inputs/toy-cache.mlir --kvprec-import-calibration="file=%t.ok.safetensors" \
// RUN:   --kvprec-analyze-sensitivity="tolerance=inf" 2>&1 | FileCheck %s --check-prefix=INF
// INF: error: kvprec-analyze-sensitivity: tolerance must be positive and finite
