//===- CacheCases.h - generated cache code against the reference -*- C++
//-*-===//
//
// The cases of CompiledCacheTest and GPUCacheTest: a planned cache filled
// through its generated code, checked against the plan emulator after
// every append (arena bytes, load) and against double-precision attention
// and the run-time certificate after every append.
//
//===----------------------------------------------------------------------===//

#ifndef KVPREC_UNITTESTS_RUNTIME_CACHECASES_H
#define KVPREC_UNITTESTS_RUNTIME_CACHECASES_H

#include <cstdint>
#include <functional>
#include <random>
#include <string>
#include <vector>

namespace kvprec::testing {

struct Case {
  std::string name;
  int64_t layers = 2, heads = 2, capacity = 40, headDim = 8, block = 8,
          sink = 4, window = 16, groupRatio = 2;
  std::vector<std::string> formats;
  /// One entry each (every item), or per item.
  std::string sinkFormats = "[0]", windowFormats = "[0]", bodyFormats = "[0]";
  /// When above 1, attend is also run as compiled with this many position
  /// splits (kvprec-to-llvm{threads}), against the same reference.
  int64_t threads = 1;
  /// kvprec-to-llvm's store-pieces: 0 quantizes whole rows; the NVPTX
  /// target's form quantizes pieces of this many elements (the same bits).
  int64_t storePieces = 0;
  /// Further GQA ratios attend is checked with (the same compiled code).
  std::vector<int64_t> moreGroupRatios;
  /// Runs the cache on the GPU too (GPUCompiledCache): after every append
  /// its arena equals the CPU's and the emulator's, load the emulator's
  /// values, attend the reference within the same tolerance and within the
  /// CPU's run-time certificate for the same query.
  bool gpu = false;
  /// With `gpu`: run the NVPTX lowering's code for this chip in the GPU
  /// emulator (EmulatedGPUCache) instead of on a device.
  std::string emulatedChip;
  /// Element j of the n-th row appended (all heads, K and V), replacing the
  /// default random data when set.
  std::function<float(std::mt19937 &, int64_t row, int64_t j)> generate;
};

/// The type text of the case's planned cache.
std::string typeText(const Case &c);
/// Runs the case (gtest assertions inside).
void runCase(const Case &c);

inline const char *kF32 = "#kvprec.format<f32>";

/// Every format and granularity the GPU tests (on a device and in the GPU
/// emulator) run at head_dim 64 and 128.
inline const char *kEveryGPUFormat[] = {
    "#kvprec.format<f32>",
    "#kvprec.format<f16>",
    "#kvprec.format<bf16>",
    "#kvprec.format<f8E4M3FN, symmetric, token_group = 32, scale = f16>",
    "#kvprec.format<f8E5M2, symmetric, channel_group = 8, scale = bf16>",
    "#kvprec.format<i8, symmetric, token_group = 64, scale = f16>",
    "#kvprec.format<i8, asymmetric, token_group = 16, scale = f32>",
    "#kvprec.format<i8, symmetric, channel_group = 8, scale = f16>",
    "#kvprec.format<i4, symmetric, token_group = 32, scale = f16>",
    "#kvprec.format<i4, asymmetric, channel_group = 8, scale = f16>",
    "#kvprec.format<i2, asymmetric, token_group = 32, scale = f16>",
    "#kvprec.format<i2, symmetric, channel_group = 8, scale = f32>",
};

/// The GPU tests' case for `format` (one layer, GQA 1, 4 and 8).
Case gpuFormatCase(const char *format, int64_t headDim);
/// The GPU tests' mixed case: f16 sink and window, int8 keys and int4
/// values in the body, a longer cache whose splits span several tiles of
/// different formats, and demotion across many blocks.
Case gpuMixedCase();

} // namespace kvprec::testing

#endif // KVPREC_UNITTESTS_RUNTIME_CACHECASES_H
