//===- GPUEmulator.cpp - the NVPTX lowering's kernels run on the CPU ------===//

#include "GPUEmulator.h"
#include "kvprec/Conversion/Passes.h"

#include "mlir/AsmParser/AsmParser.h"
#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/GPU/IR/GPUDialect.h"
#include "mlir/Dialect/LLVMIR/NVVMDialect.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Dialect/Vector/IR/VectorOps.h"
#include "mlir/ExecutionEngine/CRunnerUtils.h"
#include "mlir/ExecutionEngine/ExecutionEngine.h"
#include "mlir/ExecutionEngine/OptUtils.h"
#include "mlir/IR/AsmState.h"
#include "mlir/IR/Builders.h"
#include "mlir/IR/BuiltinAttributes.h"
#include "mlir/IR/SymbolTable.h"
#include "mlir/Pass/PassManager.h"

#include "llvm/ADT/DenseMap.h"
#include "llvm/ADT/StringMap.h"
#include "llvm/Support/raw_ostream.h"

#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <vector>

#if defined(__SANITIZE_ADDRESS__)
#define KVPREC_EMULATOR_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define KVPREC_EMULATOR_ASAN 1
#endif
#endif
#ifdef KVPREC_EMULATOR_ASAN
#include <sanitizer/common_interface_defs.h>
#endif

using namespace mlir;
using namespace ::kvprec::runtime::detail;
namespace emu = ::kvprec::runtime::detail;

//===----------------------------------------------------------------------===//
// The kernels for the CPU
//===----------------------------------------------------------------------===//

namespace {
constexpr llvm::StringLiteral kObjectPrefix = "kvprec-emulated-module:";

/// The runtime functions the rewritten kernels call, declared once.
class EmulatorCalls {
public:
  EmulatorCalls(ModuleOp kernels) : kernels(kernels) {}

  func::FuncOp get(StringRef name, TypeRange inputs, TypeRange results,
                   bool cInterface = false) {
    if (auto existing = kernels.lookupSymbol<func::FuncOp>(name))
      return existing;
    OpBuilder b(kernels.getContext());
    b.setInsertionPointToStart(kernels.getBody());
    auto fn =
        func::FuncOp::create(b, kernels.getLoc(), name,
                             b.getFunctionType(SmallVector<Type>(inputs),
                                               SmallVector<Type>(results)));
    fn.setPrivate();
    if (cInterface)
      fn->setAttr(LLVM::LLVMDialect::getEmitCWrapperAttrName(),
                  b.getUnitAttr());
    return fn;
  }

  Value call(OpBuilder &b, Location loc, StringRef name, ValueRange operands,
             TypeRange results, bool cInterface = false) {
    func::FuncOp fn = get(name, operands.getTypes(), results, cInterface);
    auto call = func::CallOp::create(b, loc, fn, operands);
    return results.empty() ? Value() : call.getResult(0);
  }

private:
  ModuleOp kernels;
};

Value i32Constant(OpBuilder &b, Location loc, int64_t v) {
  return arith::ConstantIntOp::create(b, loc, b.getI32Type(), v);
}

/// The kernel `kernel` as a func.func of the same name and inputs.
LogicalResult rewriteKernel(gpu::GPUFuncOp kernel, EmulatorCalls &calls) {
  MLIRContext *context = kernel.getContext();
  OpBuilder b(kernel);
  Location loc = kernel.getLoc();
  if (kernel.getNumPrivateAttributions())
    return kernel.emitError("the GPU emulator does not model private "
                            "attributions");
  auto fn = func::FuncOp::create(
      b, loc, kernel.getName(),
      b.getFunctionType(kernel.getArgumentTypes(), TypeRange{}));
  fn.getBody().takeBody(kernel.getBody());
  Block &entry = fn.getBody().front();
  unsigned inputs = kernel.getNumArguments();
  unsigned workgroup = kernel.getNumWorkgroupAttributions();
  b.setInsertionPointToStart(&entry);
  for (unsigned i = 0; i < workgroup; ++i) {
    BlockArgument buffer = entry.getArgument(inputs + i);
    auto type = cast<MemRefType>(buffer.getType());
    if (!type.hasStaticShape() || !type.getLayout().isIdentity() ||
        !type.getElementType().isIntOrFloat())
      return kernel.emitError("the GPU emulator models static, dense "
                              "workgroup buffers only, not ")
             << type;
    int64_t bytes =
        type.getNumElements() * int64_t(type.getElementTypeBitWidth() / 8);
    Type raw = MemRefType::get({ShapedType::kDynamic}, b.getI8Type());
    Value memory = calls.call(
        b, loc, "kvprec_emu_shared",
        {arith::ConstantIntOp::create(b, loc, b.getI64Type(), i),
         arith::ConstantIntOp::create(b, loc, b.getI64Type(), bytes)},
        raw, /*cInterface=*/true);
    Value zero = arith::ConstantIndexOp::create(b, loc, 0);
    Value view = memref::ViewOp::create(
        b, loc, MemRefType::get(type.getShape(), type.getElementType()), memory,
        zero, ValueRange{});
    buffer.replaceAllUsesWith(view);
  }
  entry.eraseArguments(inputs, workgroup);
  kernel.erase();

  Type index = IndexType::get(context);
  WalkResult walk = fn.walk([&](Operation *op) -> WalkResult {
    OpBuilder ob(op);
    Location at = op->getLoc();
    auto dimension = [&](gpu::Dimension d) {
      return i32Constant(ob, at, int64_t(d));
    };
    if (auto id = dyn_cast<gpu::ThreadIdOp>(op)) {
      id.replaceAllUsesWith(calls.call(ob, at, "kvprec_emu_thread_id",
                                       {dimension(id.getDimension())}, index));
    } else if (auto id = dyn_cast<gpu::BlockIdOp>(op)) {
      id.replaceAllUsesWith(calls.call(ob, at, "kvprec_emu_block_id",
                                       {dimension(id.getDimension())}, index));
    } else if (auto dim = dyn_cast<gpu::BlockDimOp>(op)) {
      dim.replaceAllUsesWith(calls.call(ob, at, "kvprec_emu_block_dim",
                                        {dimension(dim.getDimension())},
                                        index));
    } else if (auto dim = dyn_cast<gpu::GridDimOp>(op)) {
      dim.replaceAllUsesWith(calls.call(ob, at, "kvprec_emu_grid_dim",
                                        {dimension(dim.getDimension())},
                                        index));
    } else if (isa<gpu::BarrierOp>(op)) {
      calls.call(ob, at, "kvprec_emu_barrier", {}, {});
    } else if (auto shuffle = dyn_cast<gpu::ShuffleOp>(op)) {
      Type type = shuffle.getValue().getType();
      if (shuffle.getMode() != gpu::ShuffleMode::XOR ||
          !(type.isF32() || type.isInteger(32)))
        return shuffle.emitError("the GPU emulator models gpu.shuffle xor "
                                 "of f32 and i32 only");
      // The runtime checks the width and the offset (a lane of the same
      // warp), so every lane it returns is valid.
      Value result = calls.call(
          ob, at,
          type.isF32() ? "kvprec_emu_shuffle_xor_f32"
                       : "kvprec_emu_shuffle_xor_i32",
          {shuffle.getValue(), shuffle.getOffset(), shuffle.getWidth()}, type);
      shuffle.getShuffleResult().replaceAllUsesWith(result);
      shuffle.getValid().replaceAllUsesWith(
          arith::ConstantIntOp::create(ob, at, ob.getI1Type(), 1));
    } else if (auto convert = dyn_cast<NVVM::ConvertF8x2ToF16x2Op>(op)) {
      // Two f8 bytes in a 16-bit word, lane 0 the low byte, as the
      // instruction reads them; the result's lane 0 is the low half.
      Type i16 = ob.getI16Type(), i32 = ob.getI32Type();
      Value word = vector::BitCastOp::create(ob, at, VectorType::get({1}, i16),
                                             convert.getOperand());
      Value bits = arith::ExtUIOp::create(
          ob, at, i32, vector::ExtractOp::create(ob, at, word, 0));
      int64_t kind = isa<Float8E4M3FNType>(convert.getSrcType()) ? 0 : 1;
      if (!isa<Float8E4M3FNType, Float8E5M2Type>(convert.getSrcType()))
        return convert.emitError("the GPU emulator models cvt f16x2 from "
                                 "e4m3 and e5m2 only");
      Value halves = calls.call(ob, at, "kvprec_emu_cvt_f8x2_f16x2",
                                {bits, i32Constant(ob, at, kind),
                                 i32Constant(ob, at, convert.getRelu())},
                                i32);
      Value packed = vector::BroadcastOp::create(
          ob, at, VectorType::get({1}, i32), halves);
      Value result =
          vector::BitCastOp::create(ob, at, convert.getType(), packed);
      convert.getResult().replaceAllUsesWith(result);
    } else if (isa<gpu::ReturnOp>(op)) {
      func::ReturnOp::create(ob, at);
    } else if (isa<gpu::GPUDialect, NVVM::NVVMDialect>(op->getDialect())) {
      return op->emitError("the GPU emulator does not model this operation");
    } else {
      return WalkResult::advance();
    }
    op->erase();
    return WalkResult::skip();
  });
  return failure(walk.wasInterrupted());
}
} // namespace

llvm::Expected<OwningOpRef<ModuleOp>>
emu::extractEmulatedKernels(ModuleOp host, int64_t moduleId) {
  MLIRContext *context = host.getContext();
  std::string diagnostics;
  llvm::raw_string_ostream stream(diagnostics);
  ScopedDiagnosticHandler handler(context, [&](Diagnostic &diagnostic) {
    stream << diagnostic.getLocation() << ": " << diagnostic << "\n";
    return success();
  });
  auto fail = [&](const Twine &what) {
    return llvm::createStringError("the GPU emulator: " + what + "\n" +
                                   diagnostics);
  };

  auto devices = llvm::to_vector(host.getOps<gpu::GPUModuleOp>());
  if (devices.size() != 1)
    return fail("expected one gpu.module, found " +
                Twine(int64_t(devices.size())));
  gpu::GPUModuleOp device = devices.front();
  OpBuilder b(context);
  OwningOpRef<ModuleOp> kernels = ModuleOp::create(device.getLoc());
  Block &body = device.getBodyRegion().front();
  for (Operation &op : llvm::make_early_inc_range(body)) {
    if (op.hasTrait<OpTrait::IsTerminator>())
      continue;
    op.remove();
    kernels->getBody()->push_back(&op);
  }
  EmulatorCalls calls(*kernels);
  for (auto kernel : llvm::to_vector(kernels->getOps<gpu::GPUFuncOp>()))
    if (failed(rewriteKernel(kernel, calls)))
      return fail("the kernels could not be rewritten for the CPU");
  // Nothing may still live in GPU memory spaces.
  WalkResult spaces = kernels->walk([&](Operation *op) {
    for (Type type : op->getResultTypes())
      if (auto memref = dyn_cast<MemRefType>(type);
          memref && memref.getMemorySpace()) {
        op->emitError("the GPU emulator left a value in memory space ")
            << memref.getMemorySpace();
        return WalkResult::interrupt();
      }
    return WalkResult::advance();
  });
  if (spaces.wasInterrupted())
    return fail("the kernels could not be rewritten for the CPU");

  // The host's launches now name a binary whose object is the module id.
  b.setInsertionPoint(device);
  Attribute object = parseAttribute(("#gpu.object<#nvvm.target, bin = \"" +
                                     kObjectPrefix + Twine(moduleId) + "\">")
                                        .str(),
                                    context);
  if (!object)
    return fail("could not make the emulated binary's object");
  gpu::BinaryOp::create(b, device.getLoc(), device.getName(), Attribute(),
                        b.getArrayAttr({object}));
  device.erase();
  return kernels;
}

EmulatedProgram::~EmulatedProgram() {
  // The host code's global destructors unload the module first.
  host.reset();
  if (moduleId)
    unregisterEmulatedModule(moduleId);
}

llvm::Expected<std::unique_ptr<EmulatedProgram>>
emu::compileEmulatedProgram(ModuleOp host, llvm::StringRef chip) {
  MLIRContext *context = host.getContext();
  auto program = std::make_unique<EmulatedProgram>();
  int64_t id = reserveEmulatedModuleId();
  auto kernels = extractEmulatedKernels(host, id);
  if (!kernels)
    return kernels.takeError();
  std::string diagnostics;
  llvm::raw_string_ostream stream(diagnostics);
  ScopedDiagnosticHandler handler(context, [&](Diagnostic &diagnostic) {
    stream << diagnostic.getLocation() << ": " << diagnostic << "\n";
    return success();
  });
  PassManager kernelLowering(context);
  mlir::kvprec::buildLLVMLoweringPipeline(kernelLowering, /*threads=*/1);
  if (failed(kernelLowering.run(**kernels)))
    return llvm::createStringError("the emulated kernels' lowering failed: " +
                                   diagnostics);
  PassManager hostLowering(context);
  mlir::kvprec::KVPrecToNVVMOptions options;
  options.chip = chip.str();
  mlir::kvprec::buildNVVMLoweringPipeline(hostLowering, options);
  if (failed(hostLowering.run(host)))
    return llvm::createStringError("kvprec-to-nvvm's host lowering failed: " +
                                   diagnostics);

  auto symbols = [](llvm::orc::MangleAndInterner interner) {
    return getEmulatorSymbols(interner);
  };
  ExecutionEngineOptions engineOptions;
  auto transformer = makeOptimizingTransformer(2, 0, nullptr);
  engineOptions.transformer = transformer;
  auto kernelEngine = ExecutionEngine::create(**kernels, engineOptions);
  if (!kernelEngine)
    return kernelEngine.takeError();
  (*kernelEngine)->registerSymbols(symbols);
  program->kernels = std::move(*kernelEngine);
  program->moduleId = id;
  registerEmulatedModule(id, program->kernels.get());
  auto hostEngine = ExecutionEngine::create(host, engineOptions);
  if (!hostEngine)
    return hostEngine.takeError();
  (*hostEngine)->registerSymbols(symbols);
  // The global constructors load the kernels' module (the emulator's).
  (*hostEngine)->initialize();
  program->host = std::move(*hostEngine);
  if (std::string why = takeEmulatorError(); !why.empty())
    return llvm::createStringError("the GPU emulator: " + why);
  return program;
}

//===----------------------------------------------------------------------===//
// The runtime
//===----------------------------------------------------------------------===//

namespace {
using Kernel = void (*)(void **);

#if defined(__x86_64__)
// Switching fibers is the emulator's inner loop (twice per thread and
// shuffle): swapcontext's signal-mask system call made it several times
// slower. This saves what the SysV ABI says a call preserves (rbx, rbp,
// r12-r15, MXCSR and the x87 control word) and swaps stacks.
extern "C" void kvprecEmuSwitch(void **saveSp, void *newSp);
asm(R"(
  .text
  .p2align 4
  .type kvprecEmuSwitch,@function
kvprecEmuSwitch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  subq $8, %rsp
  stmxcsr (%rsp)
  fnstcw 4(%rsp)
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  ldmxcsr (%rsp)
  fldcw 4(%rsp)
  addq $8, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size kvprecEmuSwitch, .-kvprecEmuSwitch
)");

/// A suspended execution context: its saved stack pointer.
struct Context {
  void *sp = nullptr;
  /// A context that enters `entry` (which never returns) on the stack
  /// [low, low + bytes).
  void start(char *low, size_t bytes, void (*entry)()) {
    auto top = reinterpret_cast<uintptr_t>(low + bytes) & ~uintptr_t(15);
    auto *slots = reinterpret_cast<uint64_t *>(top);
    *--slots = 0; // entry's return address: none
    *--slots = reinterpret_cast<uint64_t>(entry); // kvprecEmuSwitch's ret
    for (int r = 0; r < 6; ++r)
      *--slots = 0;                               // rbp, rbx, r12-r15
    *--slots = 0x1F80 | (uint64_t(0x037F) << 32); // MXCSR, x87 CW
    sp = slots;
  }
  static void swap(Context &from, Context &to) {
    kvprecEmuSwitch(&from.sp, to.sp);
  }
};
#else
struct Context {
  ucontext_t context;
  void start(char *low, size_t bytes, void (*entry)()) {
    getcontext(&context);
    context.uc_stack.ss_sp = low;
    context.uc_stack.ss_size = bytes;
    context.uc_link = nullptr;
    makecontext(&context, entry, 0);
  }
  static void swap(Context &from, Context &to) {
    swapcontext(&from.context, &to.context);
  }
};
#endif

struct EmulatedFunction {
  std::string name;
  Kernel kernel;
};

struct EmulatedModule {
  mlir::ExecutionEngine *engine = nullptr;
  std::map<std::string, std::unique_ptr<EmulatedFunction>> functions;
};

/// What every thread of the process shares: modules, the first error and
/// the counts.
struct Emulator {
  std::mutex mutex;
  int64_t nextId = 1;
  std::map<int64_t, EmulatedModule> modules;
  std::string error;
  EmulatorCounts counts;
  /// 0: threads resume in order; otherwise the seed of a random order.
  uint64_t schedule = 0;

  void fail(const std::string &message) {
    std::lock_guard<std::mutex> lock(mutex);
    if (error.empty())
      error = message;
  }
};

Emulator &emulator() {
  static Emulator *instance = new Emulator();
  return *instance;
}

/// One GPU thread: a fiber with a stack of its own, run until it reaches a
/// barrier, a shuffle or its end.
struct Fiber {
  enum class State { Ready, AtBarrier, AtShuffle, Done };
  Context context;
  char *stack = nullptr;
  State state = State::Ready;
  uint32_t shuffleValue = 0, shuffleResult = 0;
  int32_t shuffleOffset = 0;
};

constexpr size_t kStackBytes = size_t(1) << 20;
constexpr size_t kGuardBytes = 4096;

/// A launch: its grid, its kernel and arguments, its fibers and the block
/// that runs now.
struct Launch {
  Kernel kernel = nullptr;
  void **params = nullptr;
  int64_t grid[3] = {1, 1, 1}, block[3] = {1, 1, 1};
  int64_t blockId[3] = {0, 0, 0};
  std::vector<Fiber> fibers;
  std::vector<std::vector<uint8_t>> shared;
  Context scheduler;
  Fiber *current = nullptr;
  std::string error;
  EmulatorCounts counts;
  uint64_t schedule = 0;
#ifdef KVPREC_EMULATOR_ASAN
  const void *schedulerStack = nullptr;
  size_t schedulerStackSize = 0;
#endif
};

thread_local Launch *currentLaunch = nullptr;

Launch &launch(const char *caller) {
  if (!currentLaunch) {
    std::fprintf(stderr, "kvprec GPU emulator: %s called outside a launch\n",
                 caller);
    std::abort();
  }
  return *currentLaunch;
}

/// From the running fiber back to the scheduler.
void yieldToScheduler(Launch &l, Fiber &f, bool finished) {
#ifdef KVPREC_EMULATOR_ASAN
  void *save = nullptr;
  __sanitizer_start_switch_fiber(finished ? nullptr : &save, l.schedulerStack,
                                 l.schedulerStackSize);
  Context::swap(f.context, l.scheduler);
  __sanitizer_finish_switch_fiber(save, nullptr, nullptr);
#else
  (void)finished;
  Context::swap(f.context, l.scheduler);
#endif
}

void fiberMain() {
  Launch &l = launch("a fiber");
  Fiber &f = *l.current;
#ifdef KVPREC_EMULATOR_ASAN
  __sanitizer_finish_switch_fiber(nullptr, &l.schedulerStack,
                                  &l.schedulerStackSize);
#endif
  l.kernel(l.params);
  f.state = Fiber::State::Done;
  yieldToScheduler(l, f, /*finished=*/true);
}

/// From the scheduler into fiber `f` until it yields.
void resume(Launch &l, Fiber &f) {
  l.current = &f;
#ifdef KVPREC_EMULATOR_ASAN
  void *save = nullptr;
  __sanitizer_start_switch_fiber(&save, f.stack + kGuardBytes,
                                 kStackBytes - kGuardBytes);
  Context::swap(l.scheduler, f.context);
  __sanitizer_finish_switch_fiber(save, &l.schedulerStack,
                                  &l.schedulerStackSize);
#else
  Context::swap(l.scheduler, f.context);
#endif
  l.current = nullptr;
}

const char *stateName(Fiber::State state) {
  switch (state) {
  case Fiber::State::Ready:
    return "running";
  case Fiber::State::AtBarrier:
    return "at gpu.barrier";
  case Fiber::State::AtShuffle:
    return "at gpu.shuffle";
  case Fiber::State::Done:
    return "finished";
  }
  return "?";
}

/// Runs the block `l.blockId` to its end. Returns false (with l.error) when
/// its threads cannot all go on: a barrier or a warp's shuffle that some
/// thread of the block or warp does not reach.
bool runBlock(Launch &l) {
  const int64_t threads = l.fibers.size();
  for (auto &buffer : l.shared)
    std::memset(buffer.data(), 0xFF, buffer.size());
  for (int64_t t = 0; t < threads; ++t) {
    Fiber &f = l.fibers[t];
    f.state = Fiber::State::Ready;
    f.context.start(f.stack + kGuardBytes, kStackBytes - kGuardBytes,
                    fiberMain);
  }
  auto describe = [&](const char *what, int64_t from, int64_t to) {
    std::string text;
    llvm::raw_string_ostream os(text);
    os << what << " in block (" << l.blockId[0] << ", " << l.blockId[1] << ", "
       << l.blockId[2] << "):";
    for (int64_t t = from; t < to; ++t)
      if (t == from || l.fibers[t].state != l.fibers[t - 1].state)
        os << " thread " << t << " " << stateName(l.fibers[t].state) << ";";
    return text;
  };
  // The order threads resume in: by thread id, or (a schedule seed) a
  // fresh random permutation every round, so that a result that depends
  // on the order of threads between two barriers (a race on the GPU)
  // changes with the seed.
  std::vector<int64_t> order(threads);
  for (int64_t t = 0; t < threads; ++t)
    order[t] = t;
  std::mt19937_64 random(l.schedule ^ uint64_t(l.blockId[0] * 73856093 +
                                               l.blockId[1] * 19349663 +
                                               l.blockId[2] * 83492791));
  while (true) {
    if (l.schedule)
      std::shuffle(order.begin(), order.end(), random);
    for (int64_t t : order)
      if (l.fibers[t].state == Fiber::State::Ready)
        resume(l, l.fibers[t]);
    // Every thread waits or has finished: release what can go on.
    bool progress = false;
    for (int64_t warp = 0; warp * 32 < threads; ++warp) {
      int64_t from = warp * 32, to = std::min(threads, from + 32);
      bool any = false, all = true;
      for (int64_t t = from; t < to; ++t) {
        bool at = l.fibers[t].state == Fiber::State::AtShuffle;
        any |= at;
        all &= at;
      }
      if (!any)
        continue;
      if (!all || to - from != 32) {
        l.error =
            describe(to - from != 32 ? "gpu.shuffle in a warp of fewer than 32 "
                                       "threads"
                                     : "gpu.shuffle that not every lane of its "
                                       "warp reaches",
                     from, to);
        return false;
      }
      for (int64_t t = from; t < to; ++t) {
        Fiber &f = l.fibers[t];
        int64_t lane = t - from, source = lane ^ f.shuffleOffset;
        f.shuffleResult = l.fibers[from + source].shuffleValue;
        f.state = Fiber::State::Ready;
      }
      ++l.counts.shuffles;
      progress = true;
    }
    if (progress)
      continue;
    int64_t atBarrier = 0, done = 0;
    for (Fiber &f : l.fibers) {
      atBarrier += f.state == Fiber::State::AtBarrier;
      done += f.state == Fiber::State::Done;
    }
    if (done == threads)
      return true;
    if (atBarrier == threads) {
      for (Fiber &f : l.fibers)
        f.state = Fiber::State::Ready;
      ++l.counts.barriers;
      continue;
    }
    l.error = describe("gpu.barrier that not every thread of its block "
                       "reaches",
                       0, threads);
    return false;
  }
}

void recordError(Launch &l, const std::string &message) {
  if (l.error.empty())
    l.error = message;
}
} // namespace

int64_t emu::reserveEmulatedModuleId() {
  Emulator &e = emulator();
  std::lock_guard<std::mutex> lock(e.mutex);
  return e.nextId++;
}

void emu::registerEmulatedModule(int64_t moduleId,
                                 mlir::ExecutionEngine *kernels) {
  Emulator &e = emulator();
  std::lock_guard<std::mutex> lock(e.mutex);
  e.modules[moduleId].engine = kernels;
}

void emu::unregisterEmulatedModule(int64_t moduleId) {
  Emulator &e = emulator();
  std::lock_guard<std::mutex> lock(e.mutex);
  e.modules.erase(moduleId);
}

std::string emu::takeEmulatorError() {
  Emulator &e = emulator();
  std::lock_guard<std::mutex> lock(e.mutex);
  return std::exchange(e.error, std::string());
}

void emu::setEmulatorSchedule(uint64_t seed) {
  Emulator &e = emulator();
  std::lock_guard<std::mutex> lock(e.mutex);
  e.schedule = seed;
}

EmulatorCounts emu::takeEmulatorCounts() {
  Emulator &e = emulator();
  std::lock_guard<std::mutex> lock(e.mutex);
  return std::exchange(e.counts, EmulatorCounts());
}

//===----------------------------------------------------------------------===//
// The mgpu* entry points and what the kernels call
//===----------------------------------------------------------------------===//

namespace {
/// The stack of thread `t`, mapped once per host thread and reused by
/// every launch (null when the memory cannot be mapped).
char *fiberStack(int64_t t) {
  thread_local std::vector<char *> stacks;
  while (int64_t(stacks.size()) <= t) {
    void *memory = mmap(nullptr, kStackBytes, PROT_READ | PROT_WRITE,
                        MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (memory == MAP_FAILED)
      return nullptr;
    // A stack overflow faults here instead of writing over another.
    mprotect(memory, kGuardBytes, PROT_NONE);
    stacks.push_back(static_cast<char *>(memory));
  }
  return stacks[t];
}

void *emuModuleLoad(void *data, size_t size) {
  llvm::StringRef object(static_cast<const char *>(data), size);
  int64_t id = 0;
  Emulator &e = emulator();
  if (!object.consume_front(kObjectPrefix) || object.getAsInteger(10, id)) {
    e.fail("mgpuModuleLoad: the binary is not an emulated module");
    return nullptr;
  }
  std::lock_guard<std::mutex> lock(e.mutex);
  auto found = e.modules.find(id);
  if (found == e.modules.end()) {
    if (e.error.empty())
      e.error = "mgpuModuleLoad: emulated module " + std::to_string(id) +
                " is not registered";
    return nullptr;
  }
  return &found->second;
}

void *emuModuleLoadJIT(void *data, int) {
  return emuModuleLoad(data, std::strlen(static_cast<const char *>(data)));
}

void emuModuleUnload(void *) {}

void *emuModuleGetFunction(void *module, const char *name) {
  Emulator &e = emulator();
  if (!module) {
    e.fail(std::string("mgpuModuleGetFunction(") + name +
           "): the module did not load");
    return nullptr;
  }
  auto *m = static_cast<EmulatedModule *>(module);
  std::lock_guard<std::mutex> lock(e.mutex);
  auto &slot = m->functions[name];
  if (!slot) {
    auto kernel = m->engine->lookupPacked(name);
    if (!kernel) {
      if (e.error.empty())
        e.error = std::string("mgpuModuleGetFunction: no kernel ") + name +
                  ": " + llvm::toString(kernel.takeError());
      return nullptr;
    }
    slot = std::make_unique<EmulatedFunction>(
        EmulatedFunction{name, reinterpret_cast<Kernel>(*kernel)});
  }
  return slot.get();
}

void emuLaunchKernel(void *function, intptr_t gridX, intptr_t gridY,
                     intptr_t gridZ, intptr_t blockX, intptr_t blockY,
                     intptr_t blockZ, int32_t smem, void *, void **params,
                     void **extra, size_t) {
  Emulator &e = emulator();
  if (!function) {
    e.fail("mgpuLaunchKernel: no kernel (its lookup failed)");
    return;
  }
  auto *f = static_cast<EmulatedFunction *>(function);
  if (blockY != 1 || blockZ != 1 || smem != 0 || extra) {
    e.fail("mgpuLaunchKernel(" + f->name +
           "): the emulator models blocks of threads in x only, without "
           "dynamic shared memory or extra arguments");
    return;
  }
  // CUDA's limits: a grid of at most 2^31 - 1 x 65535 x 65535 blocks of
  // at most 1024 threads.
  if (gridX < 1 || gridY < 1 || gridZ < 1 || gridX > 0x7FFFFFFF ||
      gridY > 65535 || gridZ > 65535 || blockX < 1 || blockX > 1024) {
    e.fail("mgpuLaunchKernel(" + f->name +
           "): grid or block beyond CUDA's limits");
    return;
  }
  Launch l;
  {
    std::lock_guard<std::mutex> lock(e.mutex);
    l.schedule = e.schedule;
  }
  l.kernel = f->kernel;
  l.params = params;
  l.grid[0] = gridX, l.grid[1] = gridY, l.grid[2] = gridZ;
  l.block[0] = blockX;
  l.fibers.resize(blockX);
  for (int64_t t = 0; t < blockX; ++t) {
    l.fibers[t].stack = fiberStack(t);
    if (!l.fibers[t].stack) {
      e.fail("mgpuLaunchKernel: no memory for the threads' stacks");
      return;
    }
  }
  currentLaunch = &l;
  bool ok = true;
  for (int64_t z = 0; ok && z < gridZ; ++z)
    for (int64_t y = 0; ok && y < gridY; ++y)
      for (int64_t x = 0; ok && x < gridX; ++x) {
        l.blockId[0] = x, l.blockId[1] = y, l.blockId[2] = z;
        ok = runBlock(l);
        ++l.counts.blocks;
        l.counts.threads += blockX;
      }
  // Fibers an error stopped are never resumed; the next launch starts its
  // threads afresh on the same stacks.
  currentLaunch = nullptr;
  std::lock_guard<std::mutex> lock(e.mutex);
  if (!l.error.empty() && e.error.empty())
    e.error = "kernel " + f->name + ": " + l.error;
  ++e.counts.launches;
  e.counts.blocks += l.counts.blocks;
  e.counts.threads += l.counts.threads;
  e.counts.barriers += l.counts.barriers;
  e.counts.shuffles += l.counts.shuffles;
}

/// "Device" memory is host memory, aligned as cudaMalloc's.
void *emuMemAlloc(uint64_t bytes, void *, bool) {
  void *pointer =
      std::aligned_alloc(256, (std::max<uint64_t>(bytes, 1) + 255) / 256 * 256);
  if (!pointer)
    emulator().fail("mgpuMemAlloc: out of memory");
  return pointer;
}
void emuMemFree(void *pointer, void *) { std::free(pointer); }
void emuMemcpy(void *dst, void *src, size_t bytes, void *) {
  std::memmove(dst, src, bytes);
}
void emuMemset32(void *dst, unsigned value, size_t count, void *) {
  auto *words = static_cast<uint32_t *>(dst);
  for (size_t i = 0; i < count; ++i)
    words[i] = value;
}
void emuMemset16(void *dst, unsigned short value, size_t count, void *) {
  auto *halves = static_cast<uint16_t *>(dst);
  for (size_t i = 0; i < count; ++i)
    halves[i] = value;
}
// Streams and events: every call runs to its end before it returns.
int streamToken;
void *emuStreamCreate() { return &streamToken; }
void emuStreamDestroy(void *) {}
void emuStreamSynchronize(void *) {}
void emuStreamWaitEvent(void *, void *) {}
void *emuEventCreate() { return &streamToken; }
void emuEventDestroy(void *) {}
void emuEventSynchronize(void *) {}
void emuEventRecord(void *, void *) {}
void emuSetDefaultDevice(int32_t) {}

int64_t emuThreadId(int32_t dimension) {
  Launch &l = launch("gpu.thread_id");
  return dimension == 0 ? l.current - l.fibers.data() : 0;
}
int64_t emuBlockId(int32_t dimension) {
  return launch("gpu.block_id").blockId[std::clamp(dimension, 0, 2)];
}
int64_t emuBlockDim(int32_t dimension) {
  return launch("gpu.block_dim").block[std::clamp(dimension, 0, 2)];
}
int64_t emuGridDim(int32_t dimension) {
  return launch("gpu.grid_dim").grid[std::clamp(dimension, 0, 2)];
}
void emuBarrier() {
  Launch &l = launch("gpu.barrier");
  Fiber &f = *l.current;
  f.state = Fiber::State::AtBarrier;
  yieldToScheduler(l, f, false);
}
uint32_t shuffle(uint32_t value, int32_t offset, int32_t width) {
  Launch &l = launch("gpu.shuffle");
  Fiber &f = *l.current;
  if (width != 32 || offset < 0 || offset >= 32) {
    recordError(l, "gpu.shuffle xor with offset " + std::to_string(offset) +
                       " and width " + std::to_string(width) +
                       " (the kernels use whole warps: width 32, offsets "
                       "0 to 31)");
    offset = 0;
  }
  f.shuffleValue = value;
  f.shuffleOffset = offset;
  f.state = Fiber::State::AtShuffle;
  yieldToScheduler(l, f, false);
  return f.shuffleResult;
}
float emuShuffleXorF32(float value, int32_t offset, int32_t width) {
  uint32_t bits;
  std::memcpy(&bits, &value, 4);
  bits = shuffle(bits, offset, width);
  std::memcpy(&value, &bits, 4);
  return value;
}
int32_t emuShuffleXorI32(int32_t value, int32_t offset, int32_t width) {
  return int32_t(shuffle(uint32_t(value), offset, width));
}
void emuShared(StridedMemRefType<int8_t, 1> *result, int64_t index,
               int64_t bytes) {
  Launch &l = launch("a workgroup buffer");
  if (index < 0 || index > 64 || bytes < 0 || bytes > (int64_t(1) << 20)) {
    recordError(l, "workgroup buffer out of range");
    index = 0, bytes = 0;
  }
  if (int64_t(l.shared.size()) <= index)
    l.shared.resize(index + 1);
  std::vector<uint8_t> &buffer = l.shared[index];
  if (int64_t(buffer.size()) < bytes) {
    // The first thread of the first block to ask sizes it; the memory is
    // NaN bytes, as runBlock leaves it before every block.
    buffer.resize(bytes, 0xFF);
  }
  result->basePtr = reinterpret_cast<int8_t *>(buffer.data());
  result->data = result->basePtr;
  result->offset = 0;
  result->sizes[0] = bytes;
  result->strides[0] = 1;
}

/// The f16 bits of one f8 value (every e4m3fn and e5m2 value is an f16
/// value): e5m2 is the high byte of its f16; e4m3fn's NaN (S.1111.111)
/// becomes the f16 quiet NaN, its subnormals f16 normals.
uint16_t f8ToF16(uint8_t byte, bool e4m3, bool relu) {
  uint16_t sign = uint16_t(byte & 0x80) << 8;
  uint16_t bits;
  if (!e4m3) {
    bits = uint16_t(byte) << 8;
    if ((byte & 0x7C) == 0x7C && (byte & 0x03)) // NaN
      bits = 0x7E00 | sign;
  } else {
    int exponent = (byte >> 3) & 0xF, mantissa = byte & 7;
    if (exponent == 15 && mantissa == 7) {
      bits = 0x7E00 | sign;
    } else if (exponent == 0 && mantissa == 0) {
      bits = sign;
    } else if (exponent == 0) {
      // m * 2^-9: normalize.
      int shift = 0;
      while (!(mantissa & 8)) {
        mantissa <<= 1;
        ++shift;
      }
      int e16 = 1 - 7 - shift + 15;
      bits = sign | uint16_t(e16 << 10) | uint16_t((mantissa & 7) << 7);
    } else {
      bits =
          sign | uint16_t((exponent - 7 + 15) << 10) | uint16_t(mantissa << 7);
    }
  }
  if (relu && (bits & 0x8000))
    bits = (bits & 0x7C00) == 0x7C00 && (bits & 0x3FF) ? 0x7E00 : 0;
  return bits;
}
int32_t emuCvtF8x2F16x2(int32_t bytes, int32_t kind, int32_t relu) {
  uint16_t low = f8ToF16(uint8_t(bytes), kind == 0, relu != 0);
  uint16_t high = f8ToF16(uint8_t(bytes >> 8), kind == 0, relu != 0);
  return int32_t(uint32_t(low) | (uint32_t(high) << 16));
}
} // namespace

llvm::orc::SymbolMap
emu::getEmulatorSymbols(llvm::orc::MangleAndInterner interner) {
  llvm::orc::SymbolMap symbols;
  auto add = [&](const char *name, auto *function) {
    symbols[interner(name)] = {llvm::orc::ExecutorAddr::fromPtr(function),
                               llvm::JITSymbolFlags::Exported};
  };
  add("mgpuModuleLoad", &emuModuleLoad);
  add("mgpuModuleLoadJIT", &emuModuleLoadJIT);
  add("mgpuModuleUnload", &emuModuleUnload);
  add("mgpuModuleGetFunction", &emuModuleGetFunction);
  add("mgpuLaunchKernel", &emuLaunchKernel);
  add("mgpuMemAlloc", &emuMemAlloc);
  add("mgpuMemFree", &emuMemFree);
  add("mgpuMemcpy", &emuMemcpy);
  add("mgpuMemset32", &emuMemset32);
  add("mgpuMemset16", &emuMemset16);
  add("mgpuStreamCreate", &emuStreamCreate);
  add("mgpuStreamDestroy", &emuStreamDestroy);
  add("mgpuStreamSynchronize", &emuStreamSynchronize);
  add("mgpuStreamWaitEvent", &emuStreamWaitEvent);
  add("mgpuEventCreate", &emuEventCreate);
  add("mgpuEventDestroy", &emuEventDestroy);
  add("mgpuEventSynchronize", &emuEventSynchronize);
  add("mgpuEventRecord", &emuEventRecord);
  add("mgpuSetDefaultDevice", &emuSetDefaultDevice);
  add("kvprec_emu_thread_id", &emuThreadId);
  add("kvprec_emu_block_id", &emuBlockId);
  add("kvprec_emu_block_dim", &emuBlockDim);
  add("kvprec_emu_grid_dim", &emuGridDim);
  add("kvprec_emu_barrier", &emuBarrier);
  add("kvprec_emu_shuffle_xor_f32", &emuShuffleXorF32);
  add("kvprec_emu_shuffle_xor_i32", &emuShuffleXorI32);
  add("_mlir_ciface_kvprec_emu_shared", &emuShared);
  add("kvprec_emu_cvt_f8x2_f16x2", &emuCvtF8x2F16x2);
  return symbols;
}
