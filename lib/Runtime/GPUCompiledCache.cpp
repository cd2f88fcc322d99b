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
using Arena1 = StridedMemRefType<int8_t, 1>;
using Tokens3 = StridedMemRefType<float, 3>;
using Heads2 = StridedMemRefType<float, 2>;

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
                          const std::string &chipName) {
  std::string why;
  if (!isCudaDeviceAvailable(why))
    return llvm::createStringError("no CUDA device: " + why);
  std::string chip = chipName.empty() ? getCudaChip() : chipName;
  // A device newer than the chips kvprec-to-nvvm knows runs PTX made for
  // the newest it knows (the driver compiles PTX for newer devices).
  if (mlir::kvprec::getNVVMFeatures(chip).empty())
    chip = "sm_90";
  return build(cacheType, chip, /*load=*/true);
}

llvm::Error GPUCompiledCache::checkHostCode(const std::string &cacheType,
                                            const std::string &chip) {
  auto built = build(cacheType, chip, /*load=*/false);
  return built ? llvm::Error::success() : built.takeError();
}

llvm::Expected<std::unique_ptr<GPUCompiledCache>>
GPUCompiledCache::build(const std::string &cacheType, const std::string &chip,
                        bool load) {
  auto parsed = detail::CacheModule::parse(cacheType, "GPU");
  if (!parsed)
    return parsed.takeError();
  detail::CacheModule &cacheModule = **parsed;
  mlir::kvprec::CacheType cache = cacheModule.getCache();
  if (llvm::Error error =
          cacheModule.run("kvprec-to-nvvm", [&](mlir::PassManager &pm) {
            mlir::kvprec::KVPrecToNVVMOptions options;
            options.chip = chip;
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
  result->kvHeads = cache.getHeads();
  result->headDim = cache.getHeadDim();
  if (llvm::Error error = detail::lookupEntryPoints(
          *result->engine, {{"arena_bytes", &result->arenaBytesFn},
                            {"init", &result->initFn},
                            {"append", &result->appendFn},
                            {"attend", &result->attendFn},
                            {"load", &result->loadFn}}))
    return std::move(error);
  // Host code only: nothing here touches the device.
  result->arenaBytes = reinterpret_cast<int64_t (*)()>(result->arenaBytesFn)();
  result->context = cacheModule.releaseContext();
  return result;
}

int64_t GPUCompiledCache::getArenaBytes() const { return arenaBytes; }

int32_t GPUCompiledCache::deviceInit(void *arena) const {
  Arena1 a = detail::describeDense<int8_t, 1>(arena, {arenaBytes});
  return reinterpret_cast<int32_t (*)(Arena1 *)>(initFn)(&a);
}

int32_t GPUCompiledCache::deviceAppend(void *arena, int64_t layer, void *keys,
                                       void *values, int64_t tokens,
                                       int64_t position) const {
  Arena1 a = detail::describeDense<int8_t, 1>(arena, {arenaBytes});
  Tokens3 k = detail::describeDense<float, 3>(keys, {tokens, kvHeads, headDim});
  Tokens3 v =
      detail::describeDense<float, 3>(values, {tokens, kvHeads, headDim});
  return reinterpret_cast<int32_t (*)(Arena1 *, int64_t, Tokens3 *, Tokens3 *,
                                      int64_t)>(appendFn)(&a, layer, &k, &v,
                                                          position);
}

int32_t GPUCompiledCache::deviceAttend(void *arena, int64_t layer, void *query,
                                       int64_t queryHeads, int64_t length,
                                       void *output, float softmaxScale) const {
  Arena1 a = detail::describeDense<int8_t, 1>(arena, {arenaBytes});
  Heads2 q = detail::describeDense<float, 2>(query, {queryHeads, headDim});
  Heads2 o = detail::describeDense<float, 2>(output, {queryHeads, headDim});
  return reinterpret_cast<int32_t (*)(Arena1 *, int64_t, Heads2 *, int64_t,
                                      Heads2 *, float)>(attendFn)(
      &a, layer, &q, length, &o, softmaxScale);
}

// The host-array calls: the arena and the operands copied to the device and
// the arena (and outputs) back, so that a caller sees the arena as on the
// CPU. A host arena smaller than the layout is passed on with its size, so
// the device code reports BadArena as the CPU code does.
int32_t GPUCompiledCache::init(uint8_t *arena, int64_t bytes) const {
  DeviceBuffer device(bytes);
  copyToDevice(device.pointer, arena, bytes);
  Arena1 a = detail::describeDense<int8_t, 1>(device.pointer, {bytes});
  int32_t status = reinterpret_cast<int32_t (*)(Arena1 *)>(initFn)(&a);
  copyToHost(arena, device.pointer, bytes);
  return status;
}

int32_t GPUCompiledCache::append(uint8_t *arena, int64_t bytes, int64_t layer,
                                 const float *keys, const float *values,
                                 int64_t tokens, int64_t position) const {
  int64_t tokenBytes = tokens * kvHeads * headDim * 4;
  DeviceBuffer device(bytes), k(tokenBytes), v(tokenBytes);
  copyToDevice(device.pointer, arena, bytes);
  copyToDevice(k.pointer, keys, tokenBytes);
  copyToDevice(v.pointer, values, tokenBytes);
  Arena1 a = detail::describeDense<int8_t, 1>(device.pointer, {bytes});
  Tokens3 kd =
      detail::describeDense<float, 3>(k.pointer, {tokens, kvHeads, headDim});
  Tokens3 vd =
      detail::describeDense<float, 3>(v.pointer, {tokens, kvHeads, headDim});
  int32_t status = reinterpret_cast<int32_t (*)(Arena1 *, int64_t, Tokens3 *,
                                                Tokens3 *, int64_t)>(appendFn)(
      &a, layer, &kd, &vd, position);
  copyToHost(arena, device.pointer, bytes);
  return status;
}

int32_t GPUCompiledCache::attend(uint8_t *arena, int64_t bytes, int64_t layer,
                                 const float *query, int64_t queryHeads,
                                 int64_t length, float *output,
                                 float softmaxScale) const {
  int64_t headBytes = queryHeads * headDim * 4;
  DeviceBuffer device(bytes), q(headBytes), o(headBytes);
  copyToDevice(device.pointer, arena, bytes);
  copyToDevice(q.pointer, query, headBytes);
  copyToDevice(o.pointer, output, headBytes);
  Arena1 a = detail::describeDense<int8_t, 1>(device.pointer, {bytes});
  Heads2 qd = detail::describeDense<float, 2>(q.pointer, {queryHeads, headDim});
  Heads2 od = detail::describeDense<float, 2>(o.pointer, {queryHeads, headDim});
  int32_t status = reinterpret_cast<int32_t (*)(Arena1 *, int64_t, Heads2 *,
                                                int64_t, Heads2 *, float)>(
      attendFn)(&a, layer, &qd, length, &od, softmaxScale);
  copyToHost(output, o.pointer, headBytes);
  return status;
}

int32_t GPUCompiledCache::attendCertified(uint8_t *, int64_t, int64_t,
                                          const float *, int64_t, int64_t,
                                          float *, float, float *) const {
  llvm::report_fatal_error("GPUCompiledCache: the NVPTX lowering does not "
                           "compute the run-time certificate");
}

int32_t GPUCompiledCache::load(uint8_t *arena, int64_t bytes, int64_t layer,
                               int64_t start, int64_t tokens, float *keys,
                               float *values) const {
  int64_t tokenBytes = tokens * kvHeads * headDim * 4;
  DeviceBuffer device(bytes), k(tokenBytes), v(tokenBytes);
  copyToDevice(device.pointer, arena, bytes);
  copyToDevice(k.pointer, keys, tokenBytes);
  copyToDevice(v.pointer, values, tokenBytes);
  Arena1 a = detail::describeDense<int8_t, 1>(device.pointer, {bytes});
  Tokens3 kd =
      detail::describeDense<float, 3>(k.pointer, {tokens, kvHeads, headDim});
  Tokens3 vd =
      detail::describeDense<float, 3>(v.pointer, {tokens, kvHeads, headDim});
  int32_t status = reinterpret_cast<int32_t (*)(Arena1 *, int64_t, int64_t,
                                                Tokens3 *, Tokens3 *)>(loadFn)(
      &a, layer, start, &kd, &vd);
  copyToHost(keys, k.pointer, tokenBytes);
  copyToHost(values, v.pointer, tokenBytes);
  return status;
}
