//===- InitKVPrec.h - register kvprec dialects and passes -------*- C++ -*-===//
//
// One place that tools (kvprec-opt, the mlir-opt plugin, consumers linking
// the library) call to make kvprec usable.
//
//===----------------------------------------------------------------------===//

#ifndef KVPREC_INITKVPREC_H
#define KVPREC_INITKVPREC_H

namespace mlir {
class DialectRegistry;
} // namespace mlir

namespace kvprec {
/// Adds the kvprec dialect to `registry`.
void registerKVPrecDialect(mlir::DialectRegistry &registry);
/// Registers every kvprec pass and pipeline with the global pass registry.
void registerKVPrecPasses();
/// Adds everything kvprec-opt offers: the kvprec dialect plus the upstream
/// dialects, extensions and LLVM/NVVM translations that lowering needs.
void registerKVPrecToolDialects(mlir::DialectRegistry &registry);
} // namespace kvprec

#endif // KVPREC_INITKVPREC_H
