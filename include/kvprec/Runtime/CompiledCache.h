//===- CompiledCache.h - a planned cache compiled and loaded ----*- C++ -*-===//
//
// Runs the code kvprec-to-llvm generates for a planned cache type in this
// process: the pipeline lowers a module holding the type, MLIR's
// ExecutionEngine compiles it for the host CPU (-O3), and the generated C
// ABI functions (docs/abi.md) are called through typed wrappers. Used by
// kvprec-calib --backend=compiled and by the tests that compare the
// generated code with the reference quantizer and the emulator.
//
//===----------------------------------------------------------------------===//

#ifndef KVPREC_RUNTIME_COMPILEDCACHE_H
#define KVPREC_RUNTIME_COMPILEDCACHE_H

#include "kvprec/Runtime/CacheCode.h"

#include "llvm/Support/Error.h"

#include <cstdint>
#include <memory>
#include <string>

namespace mlir {
class ExecutionEngine;
class MLIRContext;
} // namespace mlir

namespace kvprec::runtime {

class CompiledCache final : public CacheCode {
public:
  /// Compiles the functions of `cacheType`, the text of a planned
  /// !kvprec.cache type with element type f32, with kvprec-to-llvm{threads}
  /// (threads > 1 loads the OpenMP runtime). Fails with the pipeline's or
  /// the JIT's diagnostics.
  /// With `runtimeCertificate` it also compiles P_attend_certified
  /// (attendCertified); without, that code is not generated.
  /// `prefetchDistance` is kvprec-to-llvm's prefetch-distance (bytes);
  /// `storePieces` its store-pieces (0: whole rows; the NVPTX target's 16
  /// lanes, for testing that form on the CPU).
  static llvm::Expected<std::unique_ptr<CompiledCache>>
  compile(const std::string &cacheType, int64_t threads = 1,
          bool runtimeCertificate = false, int64_t prefetchDistance = 8192,
          int64_t storePieces = 0);
  ~CompiledCache() override;

  int64_t getArenaBytes() const override;
  /// The generated functions; each returns the ABI status (0 on success).
  /// `arena` must be 64-byte aligned and hold `arenaBytes` bytes. Token
  /// arrays are [tokens][kv_heads][head_dim], queries and outputs
  /// [q_heads][head_dim], all dense f32.
  int32_t init(uint8_t *arena, int64_t arenaBytes) const override;
  int32_t append(uint8_t *arena, int64_t arenaBytes, int64_t layer,
                 const float *keys, const float *values, int64_t tokens,
                 int64_t position) const override;
  int32_t attend(uint8_t *arena, int64_t arenaBytes, int64_t layer,
                 const float *query, int64_t queryHeads, int64_t length,
                 float *output, float softmaxScale) const override;
  bool hasRuntimeCertificate() const override {
    return entry.attendCertified != nullptr;
  }
  /// attend, and the run-time certificate of each query head in
  /// bounds[queryHeads]: a bound on |output - exact attention over the
  /// appended keys and values| (docs/abi.md, P_attend_certified). Needs a
  /// cache compiled with `runtimeCertificate`.
  int32_t attendCertified(uint8_t *arena, int64_t arenaBytes, int64_t layer,
                          const float *query, int64_t queryHeads,
                          int64_t length, float *output, float softmaxScale,
                          float *bounds) const override;
  int32_t load(uint8_t *arena, int64_t arenaBytes, int64_t layer, int64_t start,
               int64_t tokens, float *keys, float *values) const override;

private:
  CompiledCache();
  std::unique_ptr<mlir::MLIRContext> context;
  std::unique_ptr<mlir::ExecutionEngine> engine;
  detail::EntryPoints entry;
};

/// An arena: 64-byte aligned bytes.
struct Arena {
  explicit Arena(int64_t bytes);
  ~Arena();
  Arena(const Arena &) = delete;
  Arena &operator=(const Arena &) = delete;
  uint8_t *data = nullptr;
  int64_t size = 0;
};

} // namespace kvprec::runtime

#endif // KVPREC_RUNTIME_COMPILEDCACHE_H
