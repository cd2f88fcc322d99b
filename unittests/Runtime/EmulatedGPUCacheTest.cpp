//===- EmulatedGPUCacheTest.cpp - the NVPTX code in the GPU emulator ------===//
//
// The kernels kvprec-to-nvvm makes, run on this CPU by the GPU emulator
// (EmulatedGPUCache) and checked as CacheCases.h states for the GPU: after
// every append the arena equals the CPU code's byte for byte (and the plan
// emulator's), load returns the emulator's values, and attend matches
// double-precision attention and stays within the CPU's run-time
// certificate for the same query. sm_80's code decodes f8 with integer
// arithmetic, sm_90's with cvt (which the emulator decodes in C++). Then
// the emulator itself: shuffles and block ids as the GPU has them, and a
// barrier or shuffle that not every thread reaches reported, not hung on.
//
//===----------------------------------------------------------------------===//

#include "CacheCases.h"
#include "GPUEmulator.h"

#include "kvprec/InitKVPrec.h"
#include "kvprec/Runtime/CompiledCache.h"
#include "kvprec/Runtime/EmulatedGPUCache.h"

#include "mlir/ExecutionEngine/CRunnerUtils.h"
#include "mlir/ExecutionEngine/ExecutionEngine.h"
#include "mlir/IR/DialectRegistry.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/Parser/Parser.h"

#include "kvprec/Runtime/CompiledCache.h"
#include "llvm/Support/TargetSelect.h"

#include "gtest/gtest.h"

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

using namespace kvprec::testing;
namespace emu = kvprec::runtime::detail;

namespace {
void runFormat(const char *format, int64_t headDim, const char *chip) {
  Case c = gpuFormatCase(format, headDim);
  c.name += std::string(" ") + chip;
  c.emulatedChip = chip;
  runCase(c);
}
} // namespace

TEST(EmulatedGPUCache, EveryFormatHeadDim64) {
  for (const char *format : kEveryGPUFormat)
    runFormat(format, 64, "sm_80");
  emu::EmulatorCounts counts = emu::takeEmulatorCounts();
  // The attention kernels ran, with their barriers and shuffles.
  EXPECT_GT(counts.launches, 0);
  EXPECT_GT(counts.barriers, 0);
  EXPECT_GT(counts.shuffles, 0);
}

TEST(EmulatedGPUCache, EveryFormatHeadDim128) {
  for (const char *format : kEveryGPUFormat)
    runFormat(format, 128, "sm_80");
}

// sm_90's f8 decode is cvt.rn.f16x2.e4m3x2 / e5m2x2.
TEST(EmulatedGPUCache, F8ThroughCvtOnSm90) {
  for (int64_t headDim : {64, 128})
    for (const char *format : {kEveryGPUFormat[3], kEveryGPUFormat[4]})
      runFormat(format, headDim, "sm_90");
}

TEST(EmulatedGPUCache, MixedClassesAndLongerCaches) {
  Case c = gpuMixedCase();
  c.emulatedChip = "sm_80";
  runCase(c);
}

TEST(EmulatedGPUCache, CertifiedAttentionOverSeveralSplits) {
  // Blocks of 4 after a sink of 4: a full cache has 1 + 39 tiles. The
  // certified split kernel takes at most 32 tiles a split for int8 at
  // head_dim 64 (the 32 row slots of its lanes), so at the longer lengths
  // its combine joins two splits, the second one partly full.
  Case c = gpuFormatCase(kEveryGPUFormat[6], 64);
  c.name += " 40 tiles";
  c.capacity = 160;
  c.block = 4;
  c.sink = 4;
  c.window = 8;
  c.moreGroupRatios.clear();
  c.emulatedChip = "sm_80";
  runCase(c);
}

// Logits that overflow f32, on the CPU and on the GPU: a row whose logit
// is -inf still counts in the certificate (its inf terms leave the bound
// to the hull bound, on both), and an output that is NaN (every logit
// +inf, so inf - inf) has no bound.
TEST(EmulatedGPUCache, CertificateWhenLogitsOverflow) {
  const int64_t d = 64, tokens = 8;
  const char *type =
      "!kvprec.cache<1x1x16x64xf32, #kvprec.plan<layers = 1, heads = 1, "
      "capacity = 16, block = 4, sink = 0, window = 0, formats = "
      "[#kvprec.format<f32>], sink_formats = [0], body_formats = [0], "
      "window_formats = [0]>>";
  auto cpu = kvprec::runtime::CompiledCache::compile(
      type, /*threads=*/1, /*runtimeCertificate=*/true);
  ASSERT_TRUE(bool(cpu)) << llvm::toString(cpu.takeError());
  auto gpu = kvprec::runtime::EmulatedGPUCache::compile(
      type, "sm_80", /*runtimeCertificate=*/true);
  ASSERT_TRUE(bool(gpu)) << llvm::toString(gpu.takeError());
  std::mt19937 rng(5);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> keys(tokens * d), values(tokens * d), query(d);
  for (float &x : values)
    x = normal(rng);
  for (float &x : query)
    x = normal(rng);
  query[0] = 3e38f;
  // Bounds of (CPU, GPU) for keys whose channel 0 is `channel0(row)`.
  auto boundsWith = [&](auto channel0, float *outputs) {
    for (int64_t t = 0; t < tokens; ++t)
      for (int64_t j = 0; j < d; ++j)
        keys[t * d + j] = j == 0 ? channel0(t) : normal(rng);
    std::pair<float, float> bounds;
    int side = 0;
    for (const kvprec::runtime::CacheCode *code :
         {static_cast<const kvprec::runtime::CacheCode *>(cpu->get()),
          static_cast<const kvprec::runtime::CacheCode *>(gpu->get())}) {
      kvprec::runtime::Arena arena(code->getArenaBytes());
      EXPECT_EQ(code->init(arena.data, arena.size), 0);
      EXPECT_EQ(code->append(arena.data, arena.size, 0, keys.data(),
                             values.data(), tokens, 0),
                0);
      float bound = -1;
      EXPECT_EQ(code->attendCertified(arena.data, arena.size, 0, query.data(),
                                      1, tokens, outputs + side * d, 0.125f,
                                      &bound),
                0);
      (side ? bounds.second : bounds.first) = bound;
      ++side;
    }
    return bounds;
  };
  std::vector<float> outputs(2 * d);
  // Row 3's logit is -3e38 * 3e38 = -inf; the others' channel 0 is 0.
  auto [cpuBound, gpuBound] = boundsWith(
      [](int64_t t) { return t == 3 ? -3e38f : 0.0f; }, outputs.data());
  // The output: softmax over the other rows, computed in double.
  std::vector<double> logits(tokens, 0.0);
  double largest = -INFINITY;
  for (int64_t t = 0; t < tokens; ++t) {
    if (t == 3)
      continue;
    for (int64_t j = 1; j < d; ++j)
      logits[t] += double(query[j]) * keys[t * d + j] * 0.125;
    largest = std::max(largest, logits[t]);
  }
  double total = 0;
  for (int64_t t = 0; t < tokens; ++t)
    total += t == 3 ? 0.0 : std::exp(logits[t] - largest);
  double error[2] = {0, 0};
  for (int64_t j = 0; j < d; ++j) {
    double exact = 0;
    for (int64_t t = 0; t < tokens; ++t)
      if (t != 3)
        exact += std::exp(logits[t] - largest) / total * values[t * d + j];
    for (int side = 0; side < 2; ++side)
      error[side] =
          std::max(error[side], std::fabs(outputs[side * d + j] - exact));
  }
  EXPECT_TRUE(std::isfinite(cpuBound)) << cpuBound;
  EXPECT_LE(error[0], cpuBound);
  EXPECT_LE(error[1], gpuBound);
  // Both the hull bound: the same quantity up to f32 rounding.
  EXPECT_NEAR(gpuBound, cpuBound, 1e-3 * cpuBound);
  // Every logit +inf: a NaN output, and no bound.
  auto [cpuNaN, gpuNaN] =
      boundsWith([](int64_t) { return 3e38f; }, outputs.data());
  EXPECT_TRUE(std::isnan(outputs[0])) << outputs[0];
  EXPECT_TRUE(std::isnan(outputs[d])) << outputs[d];
  EXPECT_EQ(cpuNaN, INFINITY);
  EXPECT_EQ(gpuNaN, INFINITY);
}

TEST(EmulatedGPUCache, RefusesAChipItDoesNotKnow) {
  Case c;
  c.formats = {kF32};
  auto compiled =
      kvprec::runtime::EmulatedGPUCache::compile(typeText(c), "sm_70");
  ASSERT_FALSE(bool(compiled));
  EXPECT_NE(llvm::toString(compiled.takeError()).find("sm_70"),
            std::string::npos);
}

namespace {
// Kernels written for the emulator's own checks: each host function
// launches one block of 64 threads (two warps).
const char *kKernels = R"mlir(
module attributes {gpu.container_module} {
  gpu.module @checks {
    // out[t] = (t xor 5) + 100 * block id.
    gpu.func @exchange(%out: memref<?xf32>) kernel {
      %t = gpu.thread_id x
      %b = gpu.block_id x
      %c64 = arith.constant 64 : index
      %c100 = arith.constant 100 : index
      %five = arith.constant 5 : i32
      %width = arith.constant 32 : i32
      %ti = arith.index_cast %t : index to i32
      %v = arith.sitofp %ti : i32 to f32
      %r, %ok = gpu.shuffle xor %v, %five, %width : f32
      %base = arith.muli %b, %c100 : index
      %bi = arith.index_cast %base : index to i32
      %bf = arith.sitofp %bi : i32 to f32
      %sum = arith.addf %r, %bf : f32
      %row = arith.muli %b, %c64 : index
      %at = arith.addi %row, %t : index
      memref.store %sum, %out[%at] : memref<?xf32>
      gpu.return
    }
    // Each thread writes its id to shared memory and reads its neighbour's:
    // without a barrier between the two (racy) what it reads depends on
    // the order threads run in.
    gpu.func @racy(%out: memref<?xf32>) workgroup(%buf : memref<64xf32, #gpu.address_space<workgroup>>) kernel {
      %t = gpu.thread_id x
      %c1 = arith.constant 1 : index
      %c64 = arith.constant 64 : index
      %ti = arith.index_cast %t : index to i32
      %v = arith.sitofp %ti : i32 to f32
      memref.store %v, %buf[%t] : memref<64xf32, #gpu.address_space<workgroup>>
      %n = arith.addi %t, %c1 : index
      %next = arith.remui %n, %c64 : index
      %r = memref.load %buf[%next] : memref<64xf32, #gpu.address_space<workgroup>>
      memref.store %r, %out[%t] : memref<?xf32>
      gpu.return
    }
    gpu.func @synchronized(%out: memref<?xf32>) workgroup(%buf : memref<64xf32, #gpu.address_space<workgroup>>) kernel {
      %t = gpu.thread_id x
      %c1 = arith.constant 1 : index
      %c64 = arith.constant 64 : index
      %ti = arith.index_cast %t : index to i32
      %v = arith.sitofp %ti : i32 to f32
      memref.store %v, %buf[%t] : memref<64xf32, #gpu.address_space<workgroup>>
      gpu.barrier
      %n = arith.addi %t, %c1 : index
      %next = arith.remui %n, %c64 : index
      %r = memref.load %buf[%next] : memref<64xf32, #gpu.address_space<workgroup>>
      memref.store %r, %out[%t] : memref<?xf32>
      gpu.return
    }
    gpu.func @partial_barrier(%out: memref<?xf32>) kernel {
      %t = gpu.thread_id x
      %c16 = arith.constant 16 : index
      %low = arith.cmpi ult, %t, %c16 : index
      scf.if %low {
        gpu.barrier
      }
      gpu.return
    }
    gpu.func @partial_shuffle(%out: memref<?xf32>) kernel {
      %t = gpu.thread_id x
      %c16 = arith.constant 16 : index
      %one = arith.constant 1 : i32
      %width = arith.constant 32 : i32
      %v = arith.constant 1.0 : f32
      %low = arith.cmpi ult, %t, %c16 : index
      scf.if %low {
        %r, %ok = gpu.shuffle xor %v, %one, %width : f32
        memref.store %r, %out[%t] : memref<?xf32>
      }
      gpu.return
    }
  }
  func.func @racy(%out: memref<?xf32>) attributes {llvm.emit_c_interface} {
    %c1 = arith.constant 1 : index
    %c64 = arith.constant 64 : index
    gpu.launch_func @checks::@racy blocks in (%c1, %c1, %c1)
        threads in (%c64, %c1, %c1) args(%out : memref<?xf32>)
    return
  }
  func.func @synchronized(%out: memref<?xf32>) attributes {llvm.emit_c_interface} {
    %c1 = arith.constant 1 : index
    %c64 = arith.constant 64 : index
    gpu.launch_func @checks::@synchronized blocks in (%c1, %c1, %c1)
        threads in (%c64, %c1, %c1) args(%out : memref<?xf32>)
    return
  }
  func.func @exchange(%out: memref<?xf32>) attributes {llvm.emit_c_interface} {
    %c1 = arith.constant 1 : index
    %c2 = arith.constant 2 : index
    %c64 = arith.constant 64 : index
    gpu.launch_func @checks::@exchange blocks in (%c2, %c1, %c1)
        threads in (%c64, %c1, %c1) args(%out : memref<?xf32>)
    return
  }
  func.func @partial_barrier(%out: memref<?xf32>) attributes {llvm.emit_c_interface} {
    %c1 = arith.constant 1 : index
    %c64 = arith.constant 64 : index
    gpu.launch_func @checks::@partial_barrier blocks in (%c1, %c1, %c1)
        threads in (%c64, %c1, %c1) args(%out : memref<?xf32>)
    return
  }
  func.func @partial_shuffle(%out: memref<?xf32>) attributes {llvm.emit_c_interface} {
    %c1 = arith.constant 1 : index
    %c64 = arith.constant 64 : index
    gpu.launch_func @checks::@partial_shuffle blocks in (%c1, %c1, %c1)
        threads in (%c64, %c1, %c1) args(%out : memref<?xf32>)
    return
  }
}
)mlir";

class EmulatorSemantics : public ::testing::Test {
protected:
  void SetUp() override {
    llvm::InitializeNativeTarget();
    llvm::InitializeNativeTargetAsmPrinter();
    mlir::DialectRegistry registry;
    kvprec::registerKVPrecToolDialects(registry);
    context = std::make_unique<mlir::MLIRContext>(registry);
    context->loadAllAvailableDialects();
    auto module =
        mlir::parseSourceString<mlir::ModuleOp>(kKernels, context.get());
    ASSERT_TRUE(module);
    auto compiled = emu::compileEmulatedProgram(*module, "sm_80");
    ASSERT_TRUE(bool(compiled)) << llvm::toString(compiled.takeError());
    program = std::move(*compiled);
    emu::takeEmulatorError();
    emu::takeEmulatorCounts();
  }
  /// Runs host function `name` on out[128], returns the emulator's error.
  std::string run(const char *name) {
    auto symbol = program->host->lookup(std::string("_mlir_ciface_") + name);
    if (!symbol)
      return "no " + std::string(name) + ": " +
             llvm::toString(symbol.takeError());
    StridedMemRefType<float, 1> memref{out, out, 0, {128}, {1}};
    reinterpret_cast<void (*)(StridedMemRefType<float, 1> *)> (*symbol)(
        &memref);
    return emu::takeEmulatorError();
  }
  float out[128] = {};
  std::unique_ptr<mlir::MLIRContext> context;
  std::unique_ptr<emu::EmulatedProgram> program;
};
} // namespace

TEST_F(EmulatorSemantics, ShuffleXorAndBlockIds) {
  EXPECT_EQ(run("exchange"), "");
  for (int b = 0; b < 2; ++b)
    for (int t = 0; t < 64; ++t)
      EXPECT_EQ(out[b * 64 + t], float((t ^ 5) + 100 * b)) << b << " " << t;
  emu::EmulatorCounts counts = emu::takeEmulatorCounts();
  EXPECT_EQ(counts.launches, 1);
  EXPECT_EQ(counts.blocks, 2);
  EXPECT_EQ(counts.threads, 128);
  EXPECT_EQ(counts.shuffles, 4); // Two warps in each of two blocks.
}

TEST_F(EmulatorSemantics, BarrierNotEveryThreadReachesIsAnError) {
  std::string error = run("partial_barrier");
  EXPECT_NE(error.find("kernel partial_barrier: gpu.barrier that not every "
                       "thread of its block reaches in block (0, 0, 0): "
                       "thread 0 at gpu.barrier; thread 16 finished;"),
            std::string::npos)
      << error;
}

TEST_F(EmulatorSemantics, ShuffleNotEveryLaneReachesIsAnError) {
  std::string error = run("partial_shuffle");
  EXPECT_NE(error.find("gpu.shuffle that not every lane of its warp "
                       "reaches in block (0, 0, 0): thread 0 at gpu.shuffle; "
                       "thread 16 finished;"),
            std::string::npos)
      << error;
  // The next launch runs afresh.
  EXPECT_EQ(run("exchange"), "");
  EXPECT_EQ(out[0], 5.0f);
}

// A race shows as results that change with the order threads run in; with
// the barrier they do not.
TEST_F(EmulatorSemantics, ThreadOrderExposesARace) {
  std::vector<uint32_t> inOrder, shuffled;
  auto bits = [&] {
    std::vector<uint32_t> words(64);
    std::memcpy(words.data(), out, sizeof(float) * 64);
    return words;
  };
  EXPECT_EQ(run("racy"), "");
  inOrder = bits();
  emu::setEmulatorSchedule(7);
  EXPECT_EQ(run("racy"), "");
  shuffled = bits();
  emu::setEmulatorSchedule(0);
  EXPECT_NE(inOrder, shuffled);
  // In order, each thread reads before its neighbour writes: the 0xFF
  // bytes (NaN) the emulator fills workgroup memory with.
  EXPECT_EQ(inOrder[0], 0xFFFFFFFFu);

  EXPECT_EQ(run("synchronized"), "");
  inOrder = bits();
  emu::setEmulatorSchedule(7);
  EXPECT_EQ(run("synchronized"), "");
  shuffled = bits();
  emu::setEmulatorSchedule(0);
  EXPECT_EQ(inOrder, shuffled);
  for (int t = 0; t < 64; ++t)
    EXPECT_EQ(out[t], float((t + 1) % 64));
}

// The generated kernels have no such races: appends, loads and both
// attentions give the same bits whatever order the threads run in.
TEST(EmulatedGPUCache, SameBitsInEveryThreadOrder) {
  Case c = gpuMixedCase();
  c.capacity = 120;
  auto compiled = kvprec::runtime::EmulatedGPUCache::compile(
      typeText(c), "sm_80", /*runtimeCertificate=*/true);
  ASSERT_TRUE(bool(compiled)) << llvm::toString(compiled.takeError());
  const kvprec::runtime::EmulatedGPUCache &code = **compiled;
  const int64_t d = c.headDim, heads = c.heads, tokens = 100, q = heads * 4;
  std::mt19937 rng(99);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> keys(tokens * heads * d), values(keys.size()),
      query(q * d);
  for (float &x : keys)
    x = normal(rng);
  for (float &x : values)
    x = normal(rng);
  for (float &x : query)
    x = normal(rng);
  struct Run {
    std::vector<uint8_t> arena;
    std::vector<float> output, certified, bounds, loaded;
  };
  auto runWith = [&](uint64_t seed) {
    emu::setEmulatorSchedule(seed);
    Run r;
    kvprec::runtime::Arena arena(code.getArenaBytes());
    std::memset(arena.data, 0xA5, arena.size);
    EXPECT_EQ(code.init(arena.data, arena.size), 0);
    // In pieces, so that blocks leave the window between calls.
    for (int64_t at = 0; at < tokens; at += 25)
      EXPECT_EQ(code.append(arena.data, arena.size, 0,
                            keys.data() + at * heads * d,
                            values.data() + at * heads * d, 25, at),
                0);
    r.output.assign(q * d, 0);
    r.certified.assign(q * d, 0);
    r.bounds.assign(q, 0);
    r.loaded.assign(2 * tokens * heads * d, 0);
    float scale = 1.0f / std::sqrt(float(d));
    EXPECT_EQ(code.attend(arena.data, arena.size, 0, query.data(), q, tokens,
                          r.output.data(), scale),
              0);
    EXPECT_EQ(code.attendCertified(arena.data, arena.size, 0, query.data(), q,
                                   tokens, r.certified.data(), scale,
                                   r.bounds.data()),
              0);
    EXPECT_EQ(code.load(arena.data, arena.size, 0, 0, tokens, r.loaded.data(),
                        r.loaded.data() + tokens * heads * d),
              0);
    r.arena.assign(arena.data, arena.data + arena.size);
    emu::setEmulatorSchedule(0);
    return r;
  };
  Run inOrder = runWith(0);
  for (uint64_t seed : {1, 2}) {
    Run other = runWith(seed);
    EXPECT_TRUE(other.arena == inOrder.arena) << "seed " << seed;
    EXPECT_EQ(std::memcmp(other.output.data(), inOrder.output.data(),
                          inOrder.output.size() * sizeof(float)),
              0)
        << "seed " << seed;
    EXPECT_EQ(std::memcmp(other.certified.data(), inOrder.certified.data(),
                          inOrder.certified.size() * sizeof(float)),
              0)
        << "seed " << seed;
    EXPECT_EQ(std::memcmp(other.bounds.data(), inOrder.bounds.data(),
                          inOrder.bounds.size() * sizeof(float)),
              0)
        << "seed " << seed;
    EXPECT_EQ(std::memcmp(other.loaded.data(), inOrder.loaded.data(),
                          inOrder.loaded.size() * sizeof(float)),
              0)
        << "seed " << seed;
  }
}

// More streams than the append kernel's 256 threads: 130 KV heads make 260
// streams, so threads 0 to 3 store two each. The arena equals the CPU
// code's after every append (with window demotion), and so does load.
TEST(EmulatedGPUCache, MoreStreamsThanAppendThreads) {
  Case c;
  c.layers = 1;
  c.heads = 130;
  c.headDim = 16;
  c.capacity = 24;
  c.block = 4;
  c.sink = 0;
  c.window = 4;
  c.formats = {"#kvprec.format<f16>",
               "#kvprec.format<i8, symmetric, token_group = 16, scale = f16>"};
  c.bodyFormats = "[1]";
  auto cpu = kvprec::runtime::CompiledCache::compile(typeText(c));
  ASSERT_TRUE(bool(cpu)) << llvm::toString(cpu.takeError());
  auto gpu = kvprec::runtime::EmulatedGPUCache::compile(typeText(c));
  ASSERT_TRUE(bool(gpu)) << llvm::toString(gpu.takeError());
  const int64_t bytes = (*cpu)->getArenaBytes(), row = c.heads * c.headDim;
  kvprec::runtime::Arena cpuArena(bytes), gpuArena(bytes);
  std::memset(cpuArena.data, 0xA5, bytes);
  std::memset(gpuArena.data, 0xA5, bytes);
  ASSERT_EQ((*cpu)->init(cpuArena.data, bytes), 0);
  ASSERT_EQ((*gpu)->init(gpuArena.data, bytes), 0);
  std::mt19937 rng(5);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  int64_t fill = 0;
  for (int64_t tokens : {3, 1, 7, 2, 9}) {
    std::vector<float> keys(tokens * row), values(tokens * row);
    for (float &x : keys)
      x = normal(rng);
    for (float &x : values)
      x = normal(rng);
    for (int64_t layer = 0; layer < c.layers; ++layer) {
      ASSERT_EQ((*cpu)->append(cpuArena.data, bytes, layer, keys.data(),
                               values.data(), tokens, fill),
                0);
      ASSERT_EQ((*gpu)->append(gpuArena.data, bytes, layer, keys.data(),
                               values.data(), tokens, fill),
                0);
    }
    fill += tokens;
    ASSERT_EQ(std::memcmp(cpuArena.data, gpuArena.data, bytes), 0)
        << "after the append that reached " << fill;
  }
  std::vector<float> cpuLoaded(2 * fill * row), gpuLoaded(2 * fill * row);
  ASSERT_EQ((*cpu)->load(cpuArena.data, bytes, 0, 0, fill, cpuLoaded.data(),
                         cpuLoaded.data() + fill * row),
            0);
  ASSERT_EQ((*gpu)->load(gpuArena.data, bytes, 0, 0, fill, gpuLoaded.data(),
                         gpuLoaded.data() + fill * row),
            0);
  EXPECT_EQ(std::memcmp(cpuLoaded.data(), gpuLoaded.data(),
                        cpuLoaded.size() * sizeof(float)),
            0);
}
