//===- KVPrecDialect.td - kvprec dialect definition --------*- tablegen -*-===//
//
// The kvprec dialect models transformer KV caches: allocation, appends of new
// tokens, single-query decode attention and range loads, plus the calibration
// statistics and the precision plan that decide how each part is stored.
//
//===----------------------------------------------------------------------===//

#ifndef KVPREC_DIALECT_KVPREC_IR_KVPRECDIALECT_TD
#define KVPREC_DIALECT_KVPREC_IR_KVPRECDIALECT_TD

include "mlir/IR/OpBase.td"

def KVPrec_Dialect : Dialect {
  let name = "kvprec";
  let cppNamespace = "::mlir::kvprec";
  let summary = "Mixed-precision transformer KV caches with certified error";
  let description = [{
    The `kvprec` dialect describes the KV cache of a transformer decoder as a
    first-class resource. A `!kvprec.cache` value names a cache of
    `layers x kv_heads x capacity x head_dim` logical elements. Once the
    precision analysis has run, the cache type also carries a
    `#kvprec.plan` encoding: for every layer, KV head and K/V, the storage
    formats of the sink prefix, the body blocks and the recent window, and
    the error certificate that justifies them. Every op that touches a cache
    therefore sees its plan, and the verifiers check that the plan agrees
    with the cache's shape.

    Ops: `kvprec.alloc` creates a cache, `kvprec.append` stores the K and V
    of new tokens of one layer (quantize on store), `kvprec.attend` computes
    single-query grouped-query decode attention over positions `[0, len)`
    (dequantize on load) and can return the run-time error certificate, and
    `kvprec.load` dequantizes a position range for interoperation.
    `kvprec.calibration` holds the calibration statistics that the analysis
    consumes.
  }];
  let useDefaultTypePrinterParser = 1;
  let useDefaultAttributePrinterParser = 1;
  let dependentDialects = ["::mlir::memref::MemRefDialect",
                           "::mlir::arith::ArithDialect"];
  let extraClassDeclaration = [{
    void registerAttributes();
    void registerTypes();
  }];
  let discardableAttrs = (ins
    "::mlir::StringAttr":$model
  );
}

class KVPrec_Op<string mnemonic, list<Trait> traits = []>
    : Op<KVPrec_Dialect, mnemonic, traits>;

#endif // KVPREC_DIALECT_KVPREC_IR_KVPRECDIALECT_TD
