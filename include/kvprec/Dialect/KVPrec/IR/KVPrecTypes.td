//===- KVPrecTypes.td - kvprec types -----------------------*- tablegen -*-===//

#ifndef KVPREC_DIALECT_KVPREC_IR_KVPRECTYPES_TD
#define KVPREC_DIALECT_KVPREC_IR_KVPRECTYPES_TD

include "kvprec/Dialect/KVPrec/IR/KVPrecAttrs.td"
include "mlir/IR/AttrTypeBase.td"

class KVPrec_Type<string name, string typeMnemonic, list<Trait> traits = []>
    : TypeDef<KVPrec_Dialect, name, traits> {
  let mnemonic = typeMnemonic;
}

def KVPrec_CacheType : KVPrec_Type<"Cache", "cache"> {
  let summary = "A transformer KV cache";
  let description = [{
    `!kvprec.cache<LxHxCxDxT>` is the K and V cache of a decoder with `L`
    layers, `H` KV heads, a capacity of `C` positions, head dimension `D` and
    logical element type `T` (`f32`, `f16` or `bf16`): the type the model
    computes K and V in, and the type that loads and attention produce.

    Once a precision plan is assigned it travels with the type as an
    encoding, the way `sparse_tensor` encodings travel with tensors:

    `!kvprec.cache<5x4x512x8xf32, #kvprec.plan<...>>`

    The verifier checks that the plan covers exactly this shape and that its
    formats fit the head dimension and the logical type. `L x H` is at most
    65536 (`kvprec::certify::kMaxLayerHeadPairs`): plans and layouts hold
    entries per (layer, KV head), and one plan entry can stand for all of
    them, so a larger type would ask for unbounded memory from a few bytes
    of IR.
  }];
  let parameters = (ins
    "int64_t":$layers,
    "int64_t":$heads,
    "int64_t":$capacity,
    "int64_t":$headDim,
    "::mlir::Type":$elementType,
    OptionalParameter<"PlanAttr">:$plan
  );
  let builders = [
    TypeBuilderWithInferredContext<(ins "int64_t":$layers, "int64_t":$heads,
        "int64_t":$capacity, "int64_t":$headDim, "::mlir::Type":$elementType,
        CArg<"PlanAttr", "{}">:$plan), [{
      return $_get(elementType.getContext(), layers, heads, capacity, headDim,
                   elementType, plan);
    }]>
  ];
  let hasCustomAssemblyFormat = 1;
  let genVerifyDecl = 1;
  let skipDefaultBuilders = 0;
  let extraClassDeclaration = [{
    /// The same cache with a different (or no) plan.
    CacheType withPlan(PlanAttr plan) const;
  }];
}

#endif // KVPREC_DIALECT_KVPREC_IR_KVPRECTYPES_TD
