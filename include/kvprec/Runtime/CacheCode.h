//===- CacheCode.h - compiled code of one planned cache ----------*- C++
//-*-===//
//
// What tests, tools and benchmarks call on a planned cache's compiled code,
// whatever the target: the C ABI functions of docs/abi.md on host arrays.
// CompiledCache runs them on this CPU; GPUCompiledCache on an NVIDIA GPU;
// EmulatedGPUCache runs the NVPTX lowering's kernels on this CPU.
//
//===----------------------------------------------------------------------===//

#ifndef KVPREC_RUNTIME_CACHECODE_H
#define KVPREC_RUNTIME_CACHECODE_H

#include <cstdint>

namespace kvprec::runtime {

namespace detail {
/// The generated C entry points of one compiled cache (docs/abi.md) and
/// the calls that describe dense arrays to them as memrefs: on the CPU and
/// in the GPU emulator the arrays are host memory, on a GPU device memory.
struct EntryPoints {
  void *arenaBytes = nullptr, *init = nullptr, *append = nullptr,
       *attend = nullptr, *attendCertified = nullptr, *load = nullptr;
  int64_t kvHeads = 0, headDim = 0;

  int64_t callArenaBytes() const;
  int32_t callInit(void *arena, int64_t bytes) const;
  int32_t callAppend(void *arena, int64_t bytes, int64_t layer,
                     const void *keys, const void *values, int64_t tokens,
                     int64_t position) const;
  int32_t callAttend(void *arena, int64_t bytes, int64_t layer,
                     const void *query, int64_t queryHeads, int64_t length,
                     void *output, float softmaxScale) const;
  /// Stops the program (report_fatal_error) without attendCertified.
  int32_t callAttendCertified(void *arena, int64_t bytes, int64_t layer,
                              const void *query, int64_t queryHeads,
                              int64_t length, void *output, float softmaxScale,
                              float *bounds) const;
  int32_t callLoad(void *arena, int64_t bytes, int64_t layer, int64_t start,
                   int64_t tokens, void *keys, void *values) const;
};
} // namespace detail

class CacheCode {
public:
  virtual ~CacheCode();
  virtual int64_t getArenaBytes() const = 0;
  /// The generated functions; each returns the ABI status (0 on success).
  /// `arena` is host memory, 64-byte aligned, of `arenaBytes` bytes (a GPU
  /// implementation copies it to the device and back around each call).
  /// Token arrays are [tokens][kv_heads][head_dim], queries and outputs
  /// [q_heads][head_dim], all dense f32 host arrays.
  virtual int32_t init(uint8_t *arena, int64_t arenaBytes) const = 0;
  virtual int32_t append(uint8_t *arena, int64_t arenaBytes, int64_t layer,
                         const float *keys, const float *values, int64_t tokens,
                         int64_t position) const = 0;
  virtual int32_t attend(uint8_t *arena, int64_t arenaBytes, int64_t layer,
                         const float *query, int64_t queryHeads, int64_t length,
                         float *output, float softmaxScale) const = 0;
  /// Whether attendCertified exists (the run-time certificate).
  virtual bool hasRuntimeCertificate() const = 0;
  virtual int32_t attendCertified(uint8_t *arena, int64_t arenaBytes,
                                  int64_t layer, const float *query,
                                  int64_t queryHeads, int64_t length,
                                  float *output, float softmaxScale,
                                  float *bounds) const = 0;
  virtual int32_t load(uint8_t *arena, int64_t arenaBytes, int64_t layer,
                       int64_t start, int64_t tokens, float *keys,
                       float *values) const = 0;
};

} // namespace kvprec::runtime

#endif // KVPREC_RUNTIME_CACHECODE_H
