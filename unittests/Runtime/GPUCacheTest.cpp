//===- GPUCacheTest.cpp - the NVPTX code against the reference ------------===//
//
// Planned caches compiled with kvprec-to-nvvm and run on CUDA device 0
// (GPUCompiledCache), checked as CacheCases.h states: after every append the
// device arena equals the CPU's byte for byte (and the emulator's codes,
// scales and zero points), load returns the emulator's values, attend
// matches double-precision attention within f32 rounding and stays within
// the run-time certificate of the same query, for every format and
// granularity, GQA 1, 4 and 8, head_dim 64 and 128. Each test skips itself
// where no device is usable (the lit feature cuda-gpu says whether one is).
//
//===----------------------------------------------------------------------===//

#include "CacheCases.h"

#include "kvprec/Runtime/GPUCompiledCache.h"

#include "gtest/gtest.h"

using namespace kvprec::testing;

namespace {
#define REQUIRE_GPU()                                                          \
  do {                                                                         \
    std::string why;                                                           \
    if (!kvprec::runtime::isCudaDeviceAvailable(why))                          \
      GTEST_SKIP() << "no CUDA device: " << why;                               \
  } while (false)

void runEveryFormat(int64_t headDim) {
  for (const char *format : kEveryGPUFormat)
    runCase(gpuFormatCase(format, headDim));
}
} // namespace

// Without a device too: every format's host code compiles, JIT-links
// against the mgpu* runtime and exposes the C ABI entry points.
TEST(GPUCache, HostCodeLinksAgainstTheRuntime) {
  for (const char *format : kEveryGPUFormat)
    for (const char *chip : {"sm_80", "sm_90"}) {
      Case c;
      c.formats = {format};
      c.sink = 8;
      c.headDim = 64;
      llvm::Error error =
          kvprec::runtime::GPUCompiledCache::checkHostCode(typeText(c), chip);
      EXPECT_FALSE(bool(error))
          << format << " " << chip << ": " << llvm::toString(std::move(error));
    }
}

TEST(GPUCache, EveryFormatHeadDim64) {
  REQUIRE_GPU();
  runEveryFormat(64);
}

TEST(GPUCache, EveryFormatHeadDim128) {
  REQUIRE_GPU();
  runEveryFormat(128);
}

TEST(GPUCache, MixedClassesAndLongerCaches) {
  REQUIRE_GPU();
  runCase(gpuMixedCase());
}
