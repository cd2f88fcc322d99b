//===- EmulatedGPUCache.h - the NVPTX lowering run on the CPU ----*- C++
//-*-===//
//
// A planned cache's functions as kvprec-to-nvvm makes them, run without a
// GPU: the kernels of its device module (chip's code: the integer f8
// decode for sm_80, cvt for sm_90) compiled for this CPU and the host code
// lowered as for the GPU, its mgpu* calls served by an emulator that runs
// every thread of a block as a fiber with gpu.barrier and warp-shuffle
// semantics (lib/Runtime/GPUEmulator.h). It checks what the kernels
// compute (indexing, shuffles, barriers, shared memory, the store and
// decode code), not how fast or with which rounding of libdevice's
// functions the GPU computes it (docs/gpu.md).
//
//===----------------------------------------------------------------------===//

#ifndef KVPREC_RUNTIME_EMULATEDGPUCACHE_H
#define KVPREC_RUNTIME_EMULATEDGPUCACHE_H

#include "kvprec/Runtime/CacheCode.h"

#include "llvm/Support/Error.h"

#include <memory>
#include <string>

namespace mlir {
class MLIRContext;
} // namespace mlir

namespace kvprec::runtime {
namespace detail {
struct EmulatedProgram;
} // namespace detail

class EmulatedGPUCache final : public CacheCode {
public:
  /// Compiles `cacheType` (a planned !kvprec.cache with element type f32)
  /// as kvprec-to-nvvm{chip} does up to the device code, and the kernels
  /// for this CPU. Fails with the pipeline's, the emulator's or the JIT's
  /// diagnostics.
  /// With `runtimeCertificate`, also P_attend_certified
  /// (kvprec-to-nvvm{runtime-certificate}).
  static llvm::Expected<std::unique_ptr<EmulatedGPUCache>>
  compile(const std::string &cacheType, const std::string &chip = "sm_80",
          bool runtimeCertificate = false);
  ~EmulatedGPUCache() override;

  /// The calls run the emulated kernels on the host arrays themselves (the
  /// emulator's device memory is host memory). A launch the emulator
  /// stops (a barrier or shuffle not every thread reaches) makes the call
  /// return kEmulatorFailed; lastError() says why.
  static constexpr int32_t kEmulatorFailed = 1000;
  int64_t getArenaBytes() const override;
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
  int32_t attendCertified(uint8_t *arena, int64_t arenaBytes, int64_t layer,
                          const float *query, int64_t queryHeads,
                          int64_t length, float *output, float softmaxScale,
                          float *bounds) const override;
  int32_t load(uint8_t *arena, int64_t arenaBytes, int64_t layer, int64_t start,
               int64_t tokens, float *keys, float *values) const override;
  /// Why the last call returned kEmulatorFailed.
  const std::string &lastError() const { return error; }

private:
  EmulatedGPUCache();
  int32_t finish(int32_t status) const;
  std::unique_ptr<mlir::MLIRContext> context;
  std::unique_ptr<detail::EmulatedProgram> program;
  int64_t arenaBytes = 0;
  detail::EntryPoints entry;
  mutable std::string error;
};

} // namespace kvprec::runtime

#endif // KVPREC_RUNTIME_EMULATEDGPUCACHE_H
