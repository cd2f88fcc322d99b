//===- Backends.h - planned caches behind the model's attention -*- C++ -*-===//
//
// kvprec-calib --ir PLANNED.mlir [--backend=emulated|compiled]: the model's
// K and V go into a cache stored as the module's first planned cache says,
// and attention reads it back:
//  * emulated: the plan emulator (kvprec/Certify/PlanEmulation.h), with the
//    fp32 reference attention over its stored values;
//  * compiled: the code kvprec-to-llvm generates for the cache type, run
//    in-process (kvprec/Runtime/CompiledCache.h).
//
//===----------------------------------------------------------------------===//

#ifndef KVPREC_TOOLS_KVPREC_CALIB_BACKENDS_H
#define KVPREC_TOOLS_KVPREC_CALIB_BACKENDS_H

#include "kvprec/Calibration/Model.h"
#include "kvprec/Certify/Plan.h"

#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/Location.h"
#include "mlir/IR/OwningOpRef.h"

#include "llvm/ADT/STLFunctionalExtras.h"
#include "llvm/ADT/StringRef.h"
#include "llvm/Support/Error.h"

#include <memory>
#include <string>

namespace mlir::kvprec {
class AllocOp;
} // namespace mlir::kvprec

namespace kvprec::calib {

/// "file:line:col" of `loc`, or "<unknown location>".
std::string formatLocation(mlir::Location loc);

/// The first planned cache of a module.
struct PlannedCacheType {
  /// The !kvprec.cache type as text (what the compiled backend compiles).
  std::string typeText;
  certify::Plan plan;
  /// FILE:LINE:COL of its kvprec.alloc.
  std::string location;
  bool f32Elements = false;
};

/// Parses the MLIR module at `path` (`what` names it in errors) into
/// `context`, whose diagnostic handler collects into `diagnostics`; fails
/// with those diagnostics, located.
llvm::Expected<mlir::OwningOpRef<mlir::ModuleOp>>
parseModuleFile(llvm::StringRef path, llvm::StringRef what,
                mlir::MLIRContext &context, const std::string &diagnostics);

/// Opens and parses the planned module at `path` (a regular text file;
/// parser and verifier diagnostics become one located error), finds its
/// first kvprec.alloc whose cache has a plan and calls `use` with it, the
/// cache read from it, and the diagnostics collected so far, while the
/// module is alive (`use` may read more of it, such as the calibration).
llvm::Error
withPlannedCache(llvm::StringRef path,
                 llvm::function_ref<llvm::Error(mlir::kvprec::AllocOp planned,
                                                const PlannedCacheType &cache,
                                                const std::string &diagnostics)>
                     use);

llvm::Expected<PlannedCacheType> loadPlannedCacheType(llvm::StringRef path);

enum class BackendKind { Emulated, Compiled };

/// A backend for `model`'s attention over the planned cache; fails, naming
/// the mismatch, when the cache's shape does not fit the model or it holds
/// fewer than `positions` positions (default: the model's seq_len).
llvm::Expected<std::unique_ptr<AttentionBackend>>
createAttentionBackend(BackendKind kind, const PlannedCacheType &cache,
                       const LlamaConfig &config, int64_t positions = -1);

/// Attention through `inner` (not owned) at `layer` only, and the runner's
/// fp32 attention over exact K and V at every other layer (eval-quality's
/// per-layer sensitivity). Every run starts with a reset of `inner`, so one
/// inner backend can serve runs one after another.
std::unique_ptr<AttentionBackend>
createSingleLayerBackend(AttentionBackend &inner, int layer,
                         const LlamaConfig &config);

} // namespace kvprec::calib

#endif // KVPREC_TOOLS_KVPREC_CALIB_BACKENDS_H
