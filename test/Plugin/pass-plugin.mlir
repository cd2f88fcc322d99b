// REQUIRES: system-mlir-opt
// An instrumented plugin cannot load into the uninstrumented mlir-opt (the
// ASan runtime must come first in the process), so not under sanitizers.
// UNSUPPORTED: sanitizer
// Debian's mlir-opt runs kvprec passes loaded from the plugin library.
// Passes from a pass plugin are registered after mlir-opt has parsed its
// flags, so they are named in --pass-pipeline rather than as --flags.
// RUN: %system_mlir_opt --load-pass-plugin=%kvprec_lib_dir/libKVPrecPlugin%shlibext --help \
// RUN: | FileCheck %s --check-prefix=HELP
// HELP: --kvprec-import-calibration
// RUN: python3 %S/../Transforms/Inputs/make-calibration.py %t.safetensors
// RUN: %system_mlir_opt --load-dialect-plugin=%kvprec_lib_dir/libKVPrecPlugin%shlibext \
// RUN:   --load-pass-plugin=%kvprec_lib_dir/libKVPrecPlugin%shlibext \
// RUN:   %S/../Transforms/Inputs/toy-cache.mlir \
// RUN:   --pass-pipeline="builtin.module(kvprec-import-calibration{file=%t.safetensors})" \
// RUN: | FileCheck %s
// CHECK: kvprec.calibration @calibration
// CHECK: kvprec.alloc calibration @calibration : !kvprec.cache<2x2x64x8xf32>
