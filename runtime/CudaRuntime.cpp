//===- CudaRuntime.cpp - the mgpu* runtime of kvprec-to-nvvm's host code --===//
//
// The functions upstream's gpu-to-llvm conversion makes host code call
// (Debian's MLIR ships no CUDA runtime wrappers): module load, kernel
// launch, streams, events, memory, on the CUDA driver API. The driver is
// loaded with dlopen on first use, so a program linked with this library
// starts on a machine without one and fails with a message saying so,
// instead of a loader error. These functions return nothing (their callers
// are generated), so a driver error is fatal: it is printed, with the call
// that failed, and the process aborts. kvprecCudaStatus lets a program ask
// first.
//
// Built only where cuda.h exists (runtime/CMakeLists.txt); docs/gpu.md.
//
//===----------------------------------------------------------------------===//

#include <cuda.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <dlfcn.h>
#include <mutex>
#include <string>

#define KVPREC_EXPORT extern "C" __attribute__((visibility("default")))
// The driver's exported name of an API function (cuda.h maps many to
// versioned names, cuMemAlloc to cuMemAlloc_v2).
#define KVPREC_NAME2(x) #x
#define KVPREC_NAME(x) KVPREC_NAME2(x)

namespace {
struct Driver {
#define KVPREC_DRIVER_FUNCTIONS(X)                                             \
  X(cuInit)                                                                    \
  X(cuDeviceGetCount)                                                          \
  X(cuDeviceGet)                                                               \
  X(cuDeviceGetName)                                                           \
  X(cuDevicePrimaryCtxRetain)                                                  \
  X(cuCtxSetCurrent)                                                           \
  X(cuGetErrorName)                                                            \
  X(cuGetErrorString)                                                          \
  X(cuModuleLoadData)                                                          \
  X(cuModuleLoadDataEx)                                                        \
  X(cuModuleUnload)                                                            \
  X(cuModuleGetFunction)                                                       \
  X(cuLaunchKernel)                                                            \
  X(cuStreamCreate)                                                            \
  X(cuStreamDestroy)                                                           \
  X(cuStreamSynchronize)                                                       \
  X(cuStreamWaitEvent)                                                         \
  X(cuEventCreate)                                                             \
  X(cuEventDestroy)                                                            \
  X(cuEventSynchronize)                                                        \
  X(cuEventRecord)                                                             \
  X(cuEventElapsedTime)                                                        \
  X(cuMemAlloc)                                                                \
  X(cuMemFree)                                                                 \
  X(cuMemAllocAsync)                                                           \
  X(cuMemFreeAsync)                                                            \
  X(cuMemcpyAsync)                                                             \
  X(cuMemsetD32Async)                                                          \
  X(cuMemsetD16Async)
#define KVPREC_DECLARE(name) decltype(&::name) name = nullptr;
  KVPREC_DRIVER_FUNCTIONS(KVPREC_DECLARE)
#undef KVPREC_DECLARE
  CUcontext context = nullptr;
  CUdevice device = 0;
  /// Empty when the driver and a device are usable; otherwise why not.
  std::string failure;
};

Driver &driver() {
  static Driver d;
  static std::once_flag once;
  std::call_once(once, [] {
    void *library = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!library) {
      const char *why = dlerror();
      d.failure = std::string("cannot load the CUDA driver (libcuda.so.1): ") +
                  (why ? why : "unknown error");
      return;
    }
#define KVPREC_RESOLVE(name)                                                   \
  d.name =                                                                     \
      reinterpret_cast<decltype(d.name)>(dlsym(library, KVPREC_NAME(name)));
    KVPREC_DRIVER_FUNCTIONS(KVPREC_RESOLVE)
#undef KVPREC_RESOLVE
    // The stream-ordered allocator is optional (CUDA 11.2 and later).
#define KVPREC_REQUIRED(name)                                                  \
  if (!d.name && std::string(#name) != "cuMemAllocAsync" &&                    \
      std::string(#name) != "cuMemFreeAsync" && d.failure.empty())             \
    d.failure = "the CUDA driver has no " KVPREC_NAME(name);
    KVPREC_DRIVER_FUNCTIONS(KVPREC_REQUIRED)
#undef KVPREC_REQUIRED
    if (!d.failure.empty())
      return;
    auto describe = [](CUresult result) {
      const char *name = nullptr, *text = nullptr;
      d.cuGetErrorName(result, &name);
      d.cuGetErrorString(result, &text);
      return std::string(name ? name : "CUDA_ERROR_UNKNOWN") + " (" +
             (text ? text : "no description") + ")";
    };
    if (CUresult r = d.cuInit(0); r != CUDA_SUCCESS) {
      d.failure = "cuInit failed: " + describe(r);
      return;
    }
    int count = 0;
    if (CUresult r = d.cuDeviceGetCount(&count); r != CUDA_SUCCESS) {
      d.failure = "cuDeviceGetCount failed: " + describe(r);
      return;
    }
    if (count == 0) {
      d.failure = "the CUDA driver sees no device";
      return;
    }
    CUresult r = d.cuDeviceGet(&d.device, 0);
    if (r == CUDA_SUCCESS)
      r = d.cuDevicePrimaryCtxRetain(&d.context, d.device);
    if (r == CUDA_SUCCESS)
      r = d.cuCtxSetCurrent(d.context);
    if (r != CUDA_SUCCESS)
      d.failure = "cannot use CUDA device 0: " + describe(r);
  });
  return d;
}

/// The driver, made current on this thread; aborts with the reason when
/// it is not usable.
Driver &ready(const char *caller) {
  Driver &d = driver();
  if (!d.failure.empty()) {
    std::fprintf(stderr, "kvprec CUDA runtime: %s: %s\n", caller,
                 d.failure.c_str());
    std::abort();
  }
  d.cuCtxSetCurrent(d.context);
  return d;
}

void check(CUresult result, const char *call) {
  if (result == CUDA_SUCCESS)
    return;
  Driver &d = driver();
  const char *name = nullptr, *text = nullptr;
  d.cuGetErrorName(result, &name);
  d.cuGetErrorString(result, &text);
  std::fprintf(stderr, "kvprec CUDA runtime: %s failed: %s (%s)\n", call,
               name ? name : "CUDA_ERROR_UNKNOWN",
               text ? text : "no description");
  std::abort();
}
} // namespace

/// Writes why no CUDA device can be used (empty and returns 1 when one
/// can) to `message` (at most `size` bytes with the terminator).
KVPREC_EXPORT int kvprecCudaStatus(char *message, int size) {
  Driver &d = driver();
  if (message && size > 0) {
    std::string text = d.failure;
    if (d.failure.empty()) {
      char name[256] = {};
      d.cuDeviceGetName(name, sizeof(name), d.device);
      text = name;
    }
    std::snprintf(message, size_t(size), "%s", text.c_str());
  }
  return d.failure.empty() ? 1 : 0;
}

// Modules load from global constructors, before main: without a usable
// driver they load as null, and the first launch (or any other call) stops
// the program with the reason, so that a program can ask kvprecCudaStatus
// first.
KVPREC_EXPORT CUmodule mgpuModuleLoad(void *data, size_t /*gpuBlobSize*/) {
  if (!driver().failure.empty())
    return nullptr;
  Driver &d = ready("mgpuModuleLoad");
  CUmodule module = nullptr;
  check(d.cuModuleLoadData(&module, data), "cuModuleLoadData");
  return module;
}

/// PTX, compiled by the driver at `optLevel`; its log is printed when it
/// fails.
KVPREC_EXPORT CUmodule mgpuModuleLoadJIT(void *data, int optLevel) {
  if (!driver().failure.empty())
    return nullptr;
  Driver &d = ready("mgpuModuleLoadJIT");
  CUmodule module = nullptr;
  char log[8192] = {};
  CUjit_option options[] = {CU_JIT_OPTIMIZATION_LEVEL, CU_JIT_ERROR_LOG_BUFFER,
                            CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES};
  void *values[] = {reinterpret_cast<void *>(intptr_t(optLevel)), log,
                    reinterpret_cast<void *>(uintptr_t(sizeof(log)))};
  CUresult result = d.cuModuleLoadDataEx(&module, data, 3, options, values);
  if (result != CUDA_SUCCESS && log[0])
    std::fprintf(stderr, "kvprec CUDA runtime: the PTX JIT says:\n%s\n", log);
  check(result, "cuModuleLoadDataEx");
  return module;
}

KVPREC_EXPORT void mgpuModuleUnload(CUmodule module) {
  // Module destructors run at exit; a driver that never loaded has nothing
  // to unload.
  Driver &d = driver();
  if (d.failure.empty() && module)
    d.cuModuleUnload(module);
}

KVPREC_EXPORT CUfunction mgpuModuleGetFunction(CUmodule module,
                                               const char *name) {
  Driver &d = ready("mgpuModuleGetFunction");
  CUfunction function = nullptr;
  check(d.cuModuleGetFunction(&function, module, name), name);
  return function;
}

namespace {
/// Kernel timing for benchmarks (kvprecKernelTiming): every launch between
/// two events, waited for, its time added up.
std::mutex timingMutex;
bool timingOn = false;
double timedMs = 0;
int64_t timedLaunches = 0;
} // namespace

KVPREC_EXPORT void mgpuLaunchKernel(CUfunction function, intptr_t gridX,
                                    intptr_t gridY, intptr_t gridZ,
                                    intptr_t blockX, intptr_t blockY,
                                    intptr_t blockZ, int32_t smem,
                                    CUstream stream, void **params,
                                    void **extra, size_t /*paramsCount*/) {
  Driver &d = ready("mgpuLaunchKernel");
  bool timed;
  {
    std::lock_guard<std::mutex> lock(timingMutex);
    timed = timingOn;
  }
  CUevent start = nullptr, stop = nullptr;
  if (timed) {
    check(d.cuEventCreate(&start, CU_EVENT_DEFAULT), "cuEventCreate");
    check(d.cuEventCreate(&stop, CU_EVENT_DEFAULT), "cuEventCreate");
    check(d.cuEventRecord(start, stream), "cuEventRecord");
  }
  check(d.cuLaunchKernel(function, unsigned(gridX), unsigned(gridY),
                         unsigned(gridZ), unsigned(blockX), unsigned(blockY),
                         unsigned(blockZ), unsigned(smem), stream, params,
                         extra),
        "cuLaunchKernel");
  if (timed) {
    check(d.cuEventRecord(stop, stream), "cuEventRecord");
    check(d.cuEventSynchronize(stop), "cuEventSynchronize");
    float ms = 0;
    check(d.cuEventElapsedTime(&ms, start, stop), "cuEventElapsedTime");
    d.cuEventDestroy(start);
    d.cuEventDestroy(stop);
    std::lock_guard<std::mutex> lock(timingMutex);
    timedMs += ms;
    ++timedLaunches;
  }
}

/// Turns kernel timing on or off (benchmarks): each launch then waits for
/// its kernel, whose time kvprecKernelTimeMs adds up. Resets the total.
KVPREC_EXPORT void kvprecKernelTiming(int enable) {
  std::lock_guard<std::mutex> lock(timingMutex);
  timingOn = enable != 0;
  timedMs = 0;
  timedLaunches = 0;
}

/// The kernels' time since the last call (or kvprecKernelTiming), in ms,
/// and how many launches it covers; resets both.
KVPREC_EXPORT double kvprecKernelTimeMs(int64_t *launches) {
  std::lock_guard<std::mutex> lock(timingMutex);
  double ms = timedMs;
  if (launches)
    *launches = timedLaunches;
  timedMs = 0;
  timedLaunches = 0;
  return ms;
}

/// The time of one device-to-device copy of `bytes` (the fastest of
/// `reps`), in ms: the reference a benchmark sets its reads against.
KVPREC_EXPORT double kvprecCopyTimeMs(void *dst, void *src, size_t bytes,
                                      int reps) {
  Driver &d = ready("kvprecCopyTimeMs");
  CUstream stream = nullptr;
  check(d.cuStreamCreate(&stream, CU_STREAM_NON_BLOCKING), "cuStreamCreate");
  CUevent start = nullptr, stop = nullptr;
  check(d.cuEventCreate(&start, CU_EVENT_DEFAULT), "cuEventCreate");
  check(d.cuEventCreate(&stop, CU_EVENT_DEFAULT), "cuEventCreate");
  double best = 1e300;
  for (int r = 0; r < reps + 1; ++r) {
    check(d.cuEventRecord(start, stream), "cuEventRecord");
    check(d.cuMemcpyAsync(reinterpret_cast<CUdeviceptr>(dst),
                          reinterpret_cast<CUdeviceptr>(src), bytes, stream),
          "cuMemcpyAsync");
    check(d.cuEventRecord(stop, stream), "cuEventRecord");
    check(d.cuEventSynchronize(stop), "cuEventSynchronize");
    float ms = 0;
    check(d.cuEventElapsedTime(&ms, start, stop), "cuEventElapsedTime");
    if (r > 0) // The first warms up.
      best = std::min(best, double(ms));
  }
  d.cuEventDestroy(start);
  d.cuEventDestroy(stop);
  d.cuStreamDestroy(stream);
  return best;
}

KVPREC_EXPORT CUstream mgpuStreamCreate() {
  Driver &d = ready("mgpuStreamCreate");
  CUstream stream = nullptr;
  check(d.cuStreamCreate(&stream, CU_STREAM_NON_BLOCKING), "cuStreamCreate");
  return stream;
}

KVPREC_EXPORT void mgpuStreamDestroy(CUstream stream) {
  check(ready("mgpuStreamDestroy").cuStreamDestroy(stream), "cuStreamDestroy");
}

KVPREC_EXPORT void mgpuStreamSynchronize(CUstream stream) {
  check(ready("mgpuStreamSynchronize").cuStreamSynchronize(stream),
        "cuStreamSynchronize");
}

KVPREC_EXPORT void mgpuStreamWaitEvent(CUstream stream, CUevent event) {
  check(ready("mgpuStreamWaitEvent").cuStreamWaitEvent(stream, event, 0),
        "cuStreamWaitEvent");
}

KVPREC_EXPORT CUevent mgpuEventCreate() {
  CUevent event = nullptr;
  check(ready("mgpuEventCreate").cuEventCreate(&event, CU_EVENT_DISABLE_TIMING),
        "cuEventCreate");
  return event;
}

KVPREC_EXPORT void mgpuEventDestroy(CUevent event) {
  check(ready("mgpuEventDestroy").cuEventDestroy(event), "cuEventDestroy");
}

KVPREC_EXPORT void mgpuEventSynchronize(CUevent event) {
  check(ready("mgpuEventSynchronize").cuEventSynchronize(event),
        "cuEventSynchronize");
}

KVPREC_EXPORT void mgpuEventRecord(CUevent event, CUstream stream) {
  check(ready("mgpuEventRecord").cuEventRecord(event, stream), "cuEventRecord");
}

/// Device memory; stream-ordered where the driver has cuMemAllocAsync (no
/// synchronization per allocation), host-shared memory is not offered.
KVPREC_EXPORT void *mgpuMemAlloc(uint64_t bytes, CUstream stream,
                                 bool isHostShared) {
  Driver &d = ready("mgpuMemAlloc");
  if (isHostShared) {
    std::fprintf(stderr, "kvprec CUDA runtime: mgpuMemAlloc: host-shared "
                         "memory is not supported\n");
    std::abort();
  }
  CUdeviceptr pointer = 0;
  if (bytes == 0)
    return nullptr;
  if (d.cuMemAllocAsync && stream)
    check(d.cuMemAllocAsync(&pointer, bytes, stream), "cuMemAllocAsync");
  else
    check(d.cuMemAlloc(&pointer, bytes), "cuMemAlloc");
  return reinterpret_cast<void *>(pointer);
}

KVPREC_EXPORT void mgpuMemFree(void *pointer, CUstream stream) {
  Driver &d = ready("mgpuMemFree");
  if (!pointer)
    return;
  CUdeviceptr p = reinterpret_cast<CUdeviceptr>(pointer);
  if (d.cuMemFreeAsync && stream)
    check(d.cuMemFreeAsync(p, stream), "cuMemFreeAsync");
  else
    check(d.cuMemFree(p), "cuMemFree");
}

KVPREC_EXPORT void mgpuMemcpy(void *dst, void *src, size_t bytes,
                              CUstream stream) {
  check(ready("mgpuMemcpy")
            .cuMemcpyAsync(reinterpret_cast<CUdeviceptr>(dst),
                           reinterpret_cast<CUdeviceptr>(src), bytes, stream),
        "cuMemcpyAsync");
}

KVPREC_EXPORT void mgpuMemset32(void *dst, unsigned int value, size_t count,
                                CUstream stream) {
  check(ready("mgpuMemset32")
            .cuMemsetD32Async(reinterpret_cast<CUdeviceptr>(dst), value, count,
                              stream),
        "cuMemsetD32Async");
}

KVPREC_EXPORT void mgpuMemset16(void *dst, unsigned short value, size_t count,
                                CUstream stream) {
  check(ready("mgpuMemset16")
            .cuMemsetD16Async(reinterpret_cast<CUdeviceptr>(dst), value, count,
                              stream),
        "cuMemsetD16Async");
}

/// Milliseconds between two events recorded with timing (for benchmarks:
/// kvprecEventCreateTimed makes them).
KVPREC_EXPORT CUevent kvprecEventCreateTimed() {
  CUevent event = nullptr;
  check(ready("kvprecEventCreateTimed").cuEventCreate(&event, CU_EVENT_DEFAULT),
        "cuEventCreate");
  return event;
}

KVPREC_EXPORT float kvprecEventElapsedMs(CUevent start, CUevent stop) {
  float ms = 0;
  check(ready("kvprecEventElapsedMs").cuEventElapsedTime(&ms, start, stop),
        "cuEventElapsedTime");
  return ms;
}

/// The device's compute capability as major * 10 + minor (90 for an
/// H100), or 0 without a usable device.
KVPREC_EXPORT int kvprecCudaComputeCapability() {
  Driver &d = driver();
  if (!d.failure.empty())
    return 0;
  using GetAttribute = CUresult (*)(int *, CUdevice_attribute, CUdevice);
  static GetAttribute getAttribute = reinterpret_cast<GetAttribute>(
      dlsym(RTLD_DEFAULT, "cuDeviceGetAttribute"));
  if (!getAttribute) {
    void *library = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
    getAttribute = library ? reinterpret_cast<GetAttribute>(
                                 dlsym(library, "cuDeviceGetAttribute"))
                           : nullptr;
  }
  int major = 0, minor = 0;
  if (!getAttribute ||
      getAttribute(&major, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR,
                   d.device) != CUDA_SUCCESS ||
      getAttribute(&minor, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR,
                   d.device) != CUDA_SUCCESS)
    return 0;
  return major * 10 + minor;
}
