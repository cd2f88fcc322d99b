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

const char *kEveryFormat[] = {
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

void runEveryFormat(int64_t headDim) {
  for (const char *format : kEveryFormat) {
    Case c;
    c.name = std::string(format) + " head_dim " + std::to_string(headDim);
    c.gpu = true;
    c.layers = 1;
    c.headDim = headDim;
    c.sink = 8; // Channel groups of 8 must tile the sink.
    c.groupRatio = 1;
    c.moreGroupRatios = {4, 8};
    c.formats = {format};
    runCase(c);
  }
}
} // namespace

// Without a device too: every format's host code compiles, JIT-links
// against the mgpu* runtime and exposes the C ABI entry points.
TEST(GPUCache, HostCodeLinksAgainstTheRuntime) {
  for (const char *format : kEveryFormat)
    for (const char *chip : {"sm_80", "sm_90"}) {
      Case c;
      c.formats = {format};
      c.sink = 8;
      c.headDim = 64;
      llvm::Error error =
          kvprec::runtime::GPUCompiledCache::checkHostCode(typeText(c), chip);
      EXPECT_FALSE(bool(error)) << format << " " << chip << ": "
                                << llvm::toString(std::move(error));
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

// Mixed classes (f16 sink and window, int8 keys and int4 values in the
// body), per-block bodies, a longer cache whose splits span several tiles
// of different formats, and demotion across many blocks.
TEST(GPUCache, MixedClassesAndLongerCaches) {
  REQUIRE_GPU();
  Case c;
  c.name = "mixed";
  c.gpu = true;
  c.layers = 1;
  c.heads = 2;
  c.headDim = 128;
  c.capacity = 300;
  c.block = 16;
  c.sink = 4;
  c.window = 32;
  c.groupRatio = 1;
  c.moreGroupRatios = {4};
  c.formats = {"#kvprec.format<f16>",
               "#kvprec.format<i8, symmetric, token_group = 128, scale = f16>",
               "#kvprec.format<i4, asymmetric, token_group = 32, scale = f16>"};
  c.sinkFormats = "[0]";
  c.windowFormats = "[0]";
  c.bodyFormats = "[1, 2, 1, 2]";
  runCase(c);
}
