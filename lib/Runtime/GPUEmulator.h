//===- GPUEmulator.h - the NVPTX lowering's kernels run on the CPU -*- C++
//-*-===//
//
// A test harness for the GPU code on machines without a GPU: the kernels of
// kvprec-to-nvvm's device module, taken out before they become NVVM, are
// compiled for the CPU; the host code, lowered exactly as for the GPU,
// calls an mgpu* runtime that keeps "device" memory on the host and runs
// each launch block by block, every thread of a block a fiber of its own
// with the semantics the kernels rely on: gpu.barrier waits for every
// thread of the block, gpu.shuffle xor exchanges values among the 32 lanes
// of a warp once all of them reach it, workgroup memory is per block and
// starts as NaN bytes (0xFF), and cvt f8x2 -> f16x2 is decoded in C++. A
// barrier or shuffle that not every thread of its block or warp reaches is
// reported as an error (a deadlock or undefined behaviour on the GPU),
// never waited on. docs/gpu.md says what this does and does not check.
// Internal to KVPrecRuntime.
//
//===----------------------------------------------------------------------===//

#ifndef KVPREC_LIB_RUNTIME_GPUEMULATOR_H
#define KVPREC_LIB_RUNTIME_GPUEMULATOR_H

#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/OwningOpRef.h"

#include "llvm/ExecutionEngine/Orc/Core.h"
#include "llvm/ExecutionEngine/Orc/Mangling.h"
#include "llvm/Support/Error.h"

#include <cstdint>
#include <memory>
#include <string>

namespace mlir {
class ExecutionEngine;
} // namespace mlir

namespace kvprec::runtime::detail {

/// Moves the functions of `host`'s gpu.module into a module of their own
/// for the CPU: each gpu.func kernel becomes a func.func whose GPU
/// operations call the emulator (kvprec_emu_*), its workgroup buffers
/// views of per-block memory. The gpu.module becomes a gpu.binary of the
/// same name whose one object names emulated module `moduleId`, which the
/// host code's mgpuModuleLoad then finds. Fails with a located error on an
/// operation the emulator does not model.
llvm::Expected<mlir::OwningOpRef<mlir::ModuleOp>>
extractEmulatedKernels(mlir::ModuleOp host, int64_t moduleId);

/// Makes `kernels` (a JIT of extractEmulatedKernels' module) the emulated
/// module `moduleId` names, until unregistered. Returns the id.
int64_t reserveEmulatedModuleId();
void registerEmulatedModule(int64_t moduleId, mlir::ExecutionEngine *kernels);
void unregisterEmulatedModule(int64_t moduleId);

/// A host module as buildNVVMMaterializePipeline leaves it, compiled for
/// the emulator: its kernels extracted, both halves lowered and JIT-compiled,
/// the kernels registered and the host code's module loaded. The host
/// engine's functions then run the kernels in the emulator.
struct EmulatedProgram {
  std::unique_ptr<mlir::ExecutionEngine> host, kernels;
  int64_t moduleId = 0;
  ~EmulatedProgram();
};
llvm::Expected<std::unique_ptr<EmulatedProgram>>
compileEmulatedProgram(mlir::ModuleOp host, llvm::StringRef chip);

/// The emulator's mgpu* runtime, and the kvprec_emu_* functions the
/// kernels call, for an ExecutionEngine's symbol map.
llvm::orc::SymbolMap getEmulatorSymbols(llvm::orc::MangleAndInterner interner);

/// The first error an emulated launch (or module load) met since the last
/// call, or "" when there was none; clears it.
std::string takeEmulatorError();

/// The order the threads of a block resume in after each barrier or
/// shuffle: 0 (the default) by thread id, any other seed a fresh random
/// permutation per round. Kernels without races give the same bits under
/// every order.
void setEmulatorSchedule(uint64_t seed);

/// The emulator's counts since the last call, for tests that check it ran
/// what they think: launches, blocks, threads, block barriers and warp
/// shuffles completed. Clears them.
struct EmulatorCounts {
  int64_t launches = 0, blocks = 0, threads = 0, barriers = 0, shuffles = 0;
};
EmulatorCounts takeEmulatorCounts();

} // namespace kvprec::runtime::detail

#endif // KVPREC_LIB_RUNTIME_GPUEMULATOR_H
