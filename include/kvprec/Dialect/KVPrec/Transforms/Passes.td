//===- Passes.td - kvprec dialect passes -------------------*- tablegen -*-===//

#ifndef KVPREC_DIALECT_KVPREC_TRANSFORMS_PASSES_TD
#define KVPREC_DIALECT_KVPREC_TRANSFORMS_PASSES_TD

include "mlir/Pass/PassBase.td"

#endif // KVPREC_DIALECT_KVPREC_TRANSFORMS_PASSES_TD
