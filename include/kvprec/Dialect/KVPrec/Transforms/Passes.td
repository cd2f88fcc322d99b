//===- Passes.td - kvprec dialect passes -------------------*- tablegen -*-===//

#ifndef KVPREC_DIALECT_KVPREC_TRANSFORMS_PASSES_TD
#define KVPREC_DIALECT_KVPREC_TRANSFORMS_PASSES_TD

include "mlir/Pass/PassBase.td"

def ImportCalibration : Pass<"kvprec-import-calibration", "::mlir::ModuleOp"> {
  let summary = "Loads a calibration statistics file into the module";
  let description = [{
    Reads a `kvprec-calib-v1` safetensors file (docs/calibration.md), checks
    it (header, dtypes, shapes, finite values, masses in [0, 1], ranges) and
    against every cache in the module (layers, KV heads, head_dim, and the
    query heads of every `kvprec.attend`), then adds a `kvprec.calibration`
    op holding the statistics and points every `kvprec.alloc` of a matching
    cache at it. Tensors with more than `inline-limit` elements become
    `dense_resource` blobs, smaller ones dense attributes, so the module is
    self-contained and round-trips through text and bytecode.

    ```
    kvprec-opt model.mlir --kvprec-import-calibration="file=stats.safetensors"
    ```
  }];
  let dependentDialects = ["::mlir::kvprec::KVPrecDialect"];
  let options = [
    Option<"file", "file", "std::string", /*default=*/"",
           "The kvprec-calib-v1 safetensors file to import (required)">,
    Option<"symbolName", "name", "std::string", /*default=*/"\"calibration\"",
           "Symbol name of the kvprec.calibration op to create">,
    Option<"inlineLimit", "inline-limit", "int64_t", /*default=*/"64",
           "Tensors with more elements than this are stored as dense_resource "
           "blobs instead of dense attributes">
  ];
}

#endif // KVPREC_DIALECT_KVPREC_TRANSFORMS_PASSES_TD
