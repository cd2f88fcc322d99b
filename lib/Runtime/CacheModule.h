//===- CacheModule.h - what the CPU and GPU caches share ---------*- C++
//-*-===//
//
// Both backends parse a cache type into a module that uses it, run their
// pipeline on it, JIT the result and look up the same C entry points; and
// both describe dense host or device arrays to those entry points as
// memrefs. Internal to KVPrecRuntime and KVPrecGPURuntime.
//
//===----------------------------------------------------------------------===//

#ifndef KVPREC_LIB_RUNTIME_CACHEMODULE_H
#define KVPREC_LIB_RUNTIME_CACHEMODULE_H

#include "kvprec/Dialect/KVPrec/IR/KVPrecTypes.h"
#include "kvprec/Runtime/CacheCode.h"

#include "mlir/ExecutionEngine/CRunnerUtils.h"
#include "mlir/ExecutionEngine/ExecutionEngine.h"
#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/Diagnostics.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/IR/OwningOpRef.h"
#include "mlir/Pass/PassManager.h"

#include "llvm/ADT/ArrayRef.h"
#include "llvm/ADT/STLExtras.h"
#include "llvm/Support/Error.h"
#include "llvm/Support/SourceMgr.h"
#include "llvm/Support/raw_ostream.h"

#include <memory>
#include <string>
#include <utility>

namespace kvprec::runtime::detail {

/// A dense row-major array of `sizes` at `data` as a memref descriptor.
template <typename T, int N>
StridedMemRefType<T, N> describeDense(void *data, const int64_t (&sizes)[N]) {
  StridedMemRefType<T, N> memref;
  memref.basePtr = static_cast<T *>(data);
  memref.data = static_cast<T *>(data);
  memref.offset = 0;
  int64_t stride = 1;
  for (int i = N - 1; i >= 0; --i) {
    memref.sizes[i] = sizes[i];
    memref.strides[i] = stride;
    stride *= sizes[i];
  }
  return memref;
}

/// A planned cache type parsed into a module that declares one use of it
/// (all a pipeline needs to generate the cache's functions), in a context
/// of its own whose diagnostics are collected for error messages.
class CacheModule {
public:
  /// Fails unless `cacheType` parses as a !kvprec.cache with element type
  /// f32 (the entry points' arrays); `backend` names the caller in that
  /// message.
  static llvm::Expected<std::unique_ptr<CacheModule>>
  parse(const std::string &cacheType, llvm::StringRef backend);

  mlir::ModuleOp getModule() { return *module; }
  mlir::kvprec::CacheType getCache() const { return cache; }
  mlir::MLIRContext *getContext() { return context.get(); }

  /// Runs the pipeline `build` adds; fails with "`name` failed: " and the
  /// diagnostics.
  llvm::Error run(llvm::StringRef name,
                  llvm::function_ref<void(mlir::PassManager &)> build);
  /// The same on another module of this context.
  llvm::Error run(llvm::StringRef name,
                  llvm::function_ref<void(mlir::PassManager &)> build,
                  mlir::ModuleOp other);

  /// Drops the module and hands over the context, which the JIT-compiled
  /// code's owner keeps.
  std::unique_ptr<mlir::MLIRContext> releaseContext();

private:
  CacheModule();

  std::unique_ptr<mlir::MLIRContext> context;
  std::string diagnostics;
  llvm::raw_string_ostream diagnosticStream{diagnostics};
  llvm::SourceMgr sourceMgr;
  std::unique_ptr<mlir::SourceMgrDiagnosticHandler> handler;
  mlir::OwningOpRef<mlir::ModuleOp> module;
  mlir::kvprec::CacheType cache;
};

/// Looks up `_mlir_ciface_kvprec_cache0_<name>` of every entry point
/// (attend_certified only when `certified`), and takes the cache's head
/// count and head dim.
llvm::Error lookupEntryPoints(mlir::ExecutionEngine &engine,
                              mlir::kvprec::CacheType cache, bool certified,
                              EntryPoints &entry);

} // namespace kvprec::runtime::detail

#endif // KVPREC_LIB_RUNTIME_CACHEMODULE_H
