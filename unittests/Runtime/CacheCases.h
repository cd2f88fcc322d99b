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

} // namespace kvprec::testing

#endif // KVPREC_UNITTESTS_RUNTIME_CACHECASES_H
