//===- GPUCompiledCache.cpp - a planned cache compiled for a GPU ----------===//

#include "kvprec/Runtime/GPUCompiledCache.h"
#include "CacheModule.h"
#include "kvprec/Conversion/Passes.h"
#include "kvprec/Dialect/KVPrec/IR/KVPrecTypes.h"

#include "mlir/ExecutionEngine/ExecutionEngine.h"
#include "mlir/ExecutionEngine/OptUtils.h"
#include "mlir/Pass/PassManager.h"

#include <vector>

// runtime/CudaRuntime.cpp.
extern "C" {
int kvprecCudaStatus(char *message, int size);
int kvprecCudaComputeCapability();
void *mgpuMemAlloc(uint64_t bytes, void *stream, bool isHostShared);
void mgpuMemFree(void *pointer, void *stream);
void mgpuMemcpy(void *dst, void *src, size_t bytes, void *stream);
void mgpuStreamSynchronize(void *stream);
}

using namespace kvprec::runtime;

namespace {
/// Device memory for the length of one call.
struct DeviceBuffer {
  explicit DeviceBuffer(int64_t bytes)
      : pointer(bytes ? GPUCompiledCache::deviceAlloc(bytes) : nullptr) {}
  ~DeviceBuffer() { GPUCompiledCache::deviceFree(pointer); }
  DeviceBuffer(const DeviceBuffer &) = delete;
  DeviceBuffer &operator=(const DeviceBuffer &) = delete;
  void *pointer;
};
} // namespace

bool kvprec::runtime::isCudaDeviceAvailable(std::string &why) {
  char message[512] = {};
  bool ok = kvprecCudaStatus(message, sizeof(message)) == 1;
  why = ok ? "" : message;
  return ok;
}

std::string kvprec::runtime::getCudaChip() {
  int capability = kvprecCudaComputeCapability();
  return capability ? "sm_" + std::to_string(capability) : "";
}

void *GPUCompiledCache::deviceAlloc(int64_t bytes) {
  void *pointer = mgpuMemAlloc(uint64_t(bytes), nullptr, false);
  return pointer;
}
void GPUCompiledCache::deviceFree(void *pointer) {
  if (pointer)
    mgpuMemFree(pointer, nullptr);
}
void GPUCompiledCache::copyToDevice(void *device, const void *host,
                                    int64_t bytes) {
  mgpuMemcpy(device, const_cast<void *>(host), size_t(bytes), nullptr);
  mgpuStreamSynchronize(nullptr);
}
void GPUCompiledCache::copyToHost(void *host, const void *device,
                                  int64_t bytes) {
  mgpuMemcpy(host, const_cast<void *>(device), size_t(bytes), nullptr);
  mgpuStreamSynchronize(nullptr);
}

GPUCompiledCache::GPUCompiledCache() = default;
GPUCompiledCache::~GPUCompiledCache() = default;

llvm::Expected<std::unique_ptr<GPUCompiledCache>>
GPUCompiledCache::compile(const std::string &cacheType,
                          const std::string &chipName,
                          bool runtimeCertificate) {
  std::string why;
  if (!isCudaDeviceAvailable(why))
    return llvm::createStringError("no CUDA device: " + why);
  std::string chip = chipName.empty() ? getCudaChip() : chipName;
  // A device newer than the chips kvprec-to-nvvm knows runs PTX made for
  // the newest it knows (the driver compiles PTX for newer devices).
  if (mlir::kvprec::getNVVMFeatures(chip).empty())
    chip = "sm_90";
  return build(cacheType, chip, /*load=*/true, runtimeCertificate);
}

llvm::Error GPUCompiledCache::checkHostCode(const std::string &cacheType,
                                            const std::string &chip) {
  auto built =
      build(cacheType, chip, /*load=*/false, /*runtimeCertificate=*/true);
  return built ? llvm::Error::success() : built.takeError();
}

llvm::Expected<std::unique_ptr<GPUCompiledCache>>
GPUCompiledCache::build(const std::string &cacheType, const std::string &chip,
                        bool load, bool runtimeCertificate) {
  auto parsed = detail::CacheModule::parse(cacheType, "GPU");
  if (!parsed)
    return parsed.takeError();
  detail::CacheModule &cacheModule = **parsed;
  mlir::kvprec::CacheType cache = cacheModule.getCache();
  if (llvm::Error error =
          cacheModule.run("kvprec-to-nvvm", [&](mlir::PassManager &pm) {
            mlir::kvprec::KVPrecToNVVMOptions options;
            options.chip = chip;
            options.runtimeCertificate = runtimeCertificate;
            mlir::kvprec::buildKVPrecToNVVMPipeline(pm, options);
          }))
    return std::move(error);

  mlir::ExecutionEngineOptions engineOptions;
  auto transformer = mlir::makeOptimizingTransformer(2, 0, nullptr);
  engineOptions.transformer = transformer;
  auto engine =
      mlir::ExecutionEngine::create(cacheModule.getModule(), engineOptions);
  if (!engine)
    return engine.takeError();
  // The global constructors load the kernels' module on the device.
  if (load)
    (*engine)->initialize();

  std::unique_ptr<GPUCompiledCache> result(new GPUCompiledCache());
  result->engine = std::move(*engine);
  if (llvm::Error error = detail::lookupEntryPoints(
          *result->engine, cache, runtimeCertificate, result->entry))
    return std::move(error);
  // Host code only: nothing here touches the device.
  result->arenaBytes = result->entry.callArenaBytes();
  result->context = cacheModule.releaseContext();
  return result;
}

int64_t GPUCompiledCache::getArenaBytes() const { return arenaBytes; }

int32_t GPUCompiledCache::deviceInit(void *arena) const {
  return entry.callInit(arena, arenaBytes);
}

int32_t GPUCompiledCache::deviceAppend(void *arena, int64_t layer, void *keys,
                                       void *values, int64_t tokens,
                                       int64_t position) const {
  return entry.callAppend(arena, arenaBytes, layer, keys, values, tokens,
                          position);
}

int32_t GPUCompiledCache::deviceAttend(void *arena, int64_t layer, void *query,
                                       int64_t queryHeads, int64_t length,
                                       void *output, float softmaxScale) const {
  return entry.callAttend(arena, arenaBytes, layer, query, queryHeads, length,
                          output, softmaxScale);
}

// The host-array calls: the arena and the operands copied to the device and
// the arena (and outputs) back, so that a caller sees the arena as on the
// CPU. A host arena smaller than the layout is passed on with its size, so
// the device code reports BadArena as the CPU code does.
int32_t GPUCompiledCache::init(uint8_t *arena, int64_t bytes) const {
  DeviceBuffer device(bytes);
  copyToDevice(device.pointer, arena, bytes);
  int32_t status = entry.callInit(device.pointer, bytes);
  copyToHost(arena, device.pointer, bytes);
  return status;
}

int32_t GPUCompiledCache::append(uint8_t *arena, int64_t bytes, int64_t layer,
                                 const float *keys, const float *values,
                                 int64_t tokens, int64_t position) const {
  int64_t tokenBytes = tokens * entry.kvHeads * entry.headDim * 4;
  DeviceBuffer device(bytes), k(tokenBytes), v(tokenBytes);
  copyToDevice(device.pointer, arena, bytes);
  copyToDevice(k.pointer, keys, tokenBytes);
  copyToDevice(v.pointer, values, tokenBytes);
  int32_t status = entry.callAppend(device.pointer, bytes, layer, k.pointer,
                                    v.pointer, tokens, position);
  copyToHost(arena, device.pointer, bytes);
  return status;
}

int32_t GPUCompiledCache::attend(uint8_t *arena, int64_t bytes, int64_t layer,
                                 const float *query, int64_t queryHeads,
                                 int64_t length, float *output,
                                 float softmaxScale) const {
  int64_t headBytes = queryHeads * entry.headDim * 4;
  DeviceBuffer device(bytes), q(headBytes), o(headBytes);
  copyToDevice(device.pointer, arena, bytes);
  copyToDevice(q.pointer, query, headBytes);
  copyToDevice(o.pointer, output, headBytes);
  int32_t status =
      entry.callAttend(device.pointer, bytes, layer, q.pointer, queryHeads,
                       length, o.pointer, softmaxScale);
  copyToHost(output, o.pointer, headBytes);
  return status;
}

int32_t GPUCompiledCache::attendCertified(uint8_t *arena, int64_t bytes,
                                          int64_t layer, const float *query,
                                          int64_t queryHeads, int64_t length,
                                          float *output, float softmaxScale,
                                          float *bounds) const {
  int64_t headBytes = queryHeads * entry.headDim * 4;
  DeviceBuffer device(bytes), q(headBytes), o(headBytes),
      b(queryHeads * int64_t(sizeof(float)));
  copyToDevice(device.pointer, arena, bytes);
  copyToDevice(q.pointer, query, headBytes);
  copyToDevice(o.pointer, output, headBytes);
  copyToDevice(b.pointer, bounds, queryHeads * int64_t(sizeof(float)));
  int32_t status = entry.callAttendCertified(
      device.pointer, bytes, layer, q.pointer, queryHeads, length, o.pointer,
      softmaxScale, static_cast<float *>(b.pointer));
  copyToHost(output, o.pointer, headBytes);
  copyToHost(bounds, b.pointer, queryHeads * int64_t(sizeof(float)));
  return status;
}

int32_t GPUCompiledCache::load(uint8_t *arena, int64_t bytes, int64_t layer,
                               int64_t start, int64_t tokens, float *keys,
                               float *values) const {
  int64_t tokenBytes = tokens * entry.kvHeads * entry.headDim * 4;
  DeviceBuffer device(bytes), k(tokenBytes), v(tokenBytes);
  copyToDevice(device.pointer, arena, bytes);
  copyToDevice(k.pointer, keys, tokenBytes);
  copyToDevice(v.pointer, values, tokenBytes);
  int32_t status = entry.callLoad(device.pointer, bytes, layer, start, tokens,
                                  k.pointer, v.pointer);
  copyToHost(keys, k.pointer, tokenBytes);
  copyToHost(values, v.pointer, tokenBytes);
  return status;
}
