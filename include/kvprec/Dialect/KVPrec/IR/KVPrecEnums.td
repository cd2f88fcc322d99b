//===- KVPrecEnums.td - kvprec enumerations ----------------*- tablegen -*-===//

#ifndef KVPREC_DIALECT_KVPREC_IR_KVPRECENUMS_TD
#define KVPREC_DIALECT_KVPREC_IR_KVPRECENUMS_TD

include "mlir/IR/EnumAttr.td"

def KVPrec_QuantScheme : I32EnumAttr<"QuantScheme",
    "how a scaled format maps stored codes to values", [
      I32EnumAttrCase<"symmetric", 0>,
      I32EnumAttrCase<"asymmetric", 1>
    ]> {
  let cppNamespace = "::mlir::kvprec";
  let genSpecializedAttr = 0;
}

def KVPrec_Granularity : I32EnumAttr<"Granularity",
    "which elements share one scale", [
      // A group of consecutive head_dim channels of one token.
      I32EnumAttrCase<"token_group", 0>,
      // One channel over a group of consecutive tokens (KIVI's keys).
      I32EnumAttrCase<"channel_group", 1>
    ]> {
  let cppNamespace = "::mlir::kvprec";
  let genSpecializedAttr = 0;
}

#endif // KVPREC_DIALECT_KVPREC_IR_KVPRECENUMS_TD
