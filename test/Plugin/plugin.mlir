// REQUIRES: system-mlir-opt
// An instrumented plugin cannot load into the uninstrumented mlir-opt (the
// ASan runtime must come first in the process), so not under sanitizers.
// UNSUPPORTED: sanitizer
// Debian's own mlir-opt loads the kvprec dialect from the plugin library,
// parses the dialect's round-trip test, prints it, and parses the result back.
// RUN: %system_mlir_opt --load-dialect-plugin=%kvprec_lib_dir/libKVPrecPlugin%shlibext \
// RUN:   %S/../Dialect/KVPrec/ops.mlir \
// RUN: | %system_mlir_opt --load-dialect-plugin=%kvprec_lib_dir/libKVPrecPlugin%shlibext \
// RUN: | FileCheck %S/../Dialect/KVPrec/ops.mlir
// RUN: %system_mlir_opt --load-dialect-plugin=%kvprec_lib_dir/libKVPrecPlugin%shlibext \
// RUN:   %S/../Dialect/KVPrec/invalid.mlir -split-input-file -verify-diagnostics
