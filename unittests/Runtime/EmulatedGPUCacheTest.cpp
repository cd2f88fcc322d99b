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
#include "kvprec/Runtime/EmulatedGPUCache.h"

#include "mlir/ExecutionEngine/CRunnerUtils.h"
#include "mlir/ExecutionEngine/ExecutionEngine.h"
#include "mlir/IR/DialectRegistry.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/Parser/Parser.h"

#include "llvm/Support/TargetSelect.h"

#include "gtest/gtest.h"

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
