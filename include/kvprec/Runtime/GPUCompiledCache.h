//===- GPUCompiledCache.h - a planned cache compiled for a GPU ---*- C++
//-*-===//
//
// A planned cache's functions compiled with kvprec-to-nvvm and its host
// code JIT-compiled with MLIR's ExecutionEngine; the kernels run on CUDA
// device 0 through the mgpu* runtime (runtime/CudaRuntime.cpp). The
// CacheCode calls copy host arrays to device memory and back around each
// call (tests compare arenas on the host); the Device* calls take device
// memory for benchmarks and real use. Built where cuda.h exists.
//
//===----------------------------------------------------------------------===//

#ifndef KVPREC_RUNTIME_GPUCOMPILEDCACHE_H
#define KVPREC_RUNTIME_GPUCOMPILEDCACHE_H

#include "kvprec/Runtime/CacheCode.h"

#include "llvm/Support/Error.h"

#include <memory>
#include <string>

namespace mlir {
class ExecutionEngine;
class MLIRContext;
} // namespace mlir

namespace kvprec::runtime {

/// Whether a CUDA device can run kernels (the reason in `why` otherwise),
/// and its sm_XY name.
bool isCudaDeviceAvailable(std::string &why);
std::string getCudaChip();

class GPUCompiledCache final : public CacheCode {
public:
  /// Compiles `cacheType` (a planned !kvprec.cache with element type f32)
  /// for `chip` (empty: the device's) and loads its kernels. Fails with the
  /// pipeline's or the JIT's diagnostics, or when no device is usable.
  /// With `runtimeCertificate`, also P_attend_certified
  /// (kvprec-to-nvvm{runtime-certificate}).
  static llvm::Expected<std::unique_ptr<GPUCompiledCache>>
  compile(const std::string &cacheType, const std::string &chip = "",
          bool runtimeCertificate = false);
  /// The same compilation without a device: kvprec-to-nvvm, then the host
  /// code JIT-compiled and its entry points and mgpu* calls resolved, but
  /// no kernel loaded (nothing runs). For machines without a GPU.
  static llvm::Error checkHostCode(const std::string &cacheType,
                                   const std::string &chip);
  ~GPUCompiledCache() override;

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

  /// The same functions on device memory (pointers from deviceAlloc).
  int32_t deviceInit(void *arena) const;
  int32_t deviceAppend(void *arena, int64_t layer, void *keys, void *values,
                       int64_t tokens, int64_t position) const;
  int32_t deviceAttend(void *arena, int64_t layer, void *query,
                       int64_t queryHeads, int64_t length, void *output,
                       float softmaxScale) const;

  /// Device memory helpers (mgpu* underneath).
  static void *deviceAlloc(int64_t bytes);
  static void deviceFree(void *pointer);
  static void copyToDevice(void *device, const void *host, int64_t bytes);
  static void copyToHost(void *host, const void *device, int64_t bytes);

private:
  GPUCompiledCache();
  static llvm::Expected<std::unique_ptr<GPUCompiledCache>>
  build(const std::string &cacheType, const std::string &chip, bool load,
        bool runtimeCertificate);
  std::unique_ptr<mlir::MLIRContext> context;
  std::unique_ptr<mlir::ExecutionEngine> engine;
  int64_t arenaBytes = 0;
  detail::EntryPoints entry;
};

} // namespace kvprec::runtime

#endif // KVPREC_RUNTIME_GPUCOMPILEDCACHE_H
