//===- CompiledCache.cpp - a planned cache compiled and loaded ------------===//

#include "kvprec/Runtime/CompiledCache.h"
#include "kvprec/Conversion/Passes.h"
#include "kvprec/Dialect/KVPrec/IR/KVPrecTypes.h"
#include "kvprec/InitKVPrec.h"

#include "mlir/ExecutionEngine/CRunnerUtils.h"
#include "mlir/ExecutionEngine/ExecutionEngine.h"
#include "mlir/ExecutionEngine/OptUtils.h"
#include "mlir/IR/AsmState.h"
#include "mlir/IR/DialectRegistry.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/Parser/Parser.h"
#include "mlir/Pass/PassManager.h"
#include "mlir/Target/LLVMIR/Dialect/All.h"

#include "llvm/ExecutionEngine/Orc/JITTargetMachineBuilder.h"
#include "llvm/Support/ErrorHandling.h"
#include "llvm/Support/SourceMgr.h"
#include "llvm/Support/TargetSelect.h"
#include "llvm/Support/raw_ostream.h"
#include "llvm/TargetParser/Host.h"
#include "llvm/TargetParser/SubtargetFeature.h"

#include <cstdlib>
#include <mutex>

using namespace kvprec::runtime;

namespace {
template <int N>
StridedMemRefType<float, N> describe(float *data, const int64_t (&sizes)[N]) {
  StridedMemRefType<float, N> memref;
  memref.basePtr = data;
  memref.data = data;
  memref.offset = 0;
  int64_t stride = 1;
  for (int i = N - 1; i >= 0; --i) {
    memref.sizes[i] = sizes[i];
    memref.strides[i] = stride;
    stride *= sizes[i];
  }
  return memref;
}
StridedMemRefType<int8_t, 1> describeArena(uint8_t *data, int64_t bytes) {
  StridedMemRefType<int8_t, 1> memref;
  memref.basePtr = reinterpret_cast<int8_t *>(data);
  memref.data = reinterpret_cast<int8_t *>(data);
  memref.offset = 0;
  memref.sizes[0] = bytes;
  memref.strides[0] = 1;
  return memref;
}
using Arena1 = StridedMemRefType<int8_t, 1>;
using Tokens3 = StridedMemRefType<float, 3>;
using Heads2 = StridedMemRefType<float, 2>;
using Floats1 = StridedMemRefType<float, 1>;
} // namespace

Arena::Arena(int64_t bytes) : size(bytes) {
  data = static_cast<uint8_t *>(
      std::aligned_alloc(64, std::max<int64_t>((bytes + 63) / 64 * 64, 64)));
}
Arena::~Arena() { std::free(data); }

CacheCode::~CacheCode() = default;

CompiledCache::CompiledCache() = default;
CompiledCache::~CompiledCache() = default;

llvm::Expected<std::unique_ptr<CompiledCache>>
CompiledCache::compile(const std::string &cacheType, int64_t threads,
                       bool runtimeCertificate, int64_t prefetchDistance,
                       int64_t storePieces) {
  static std::once_flag initialized;
  std::call_once(initialized, [] {
    llvm::InitializeNativeTarget();
    llvm::InitializeNativeTargetAsmPrinter();
    kvprec::registerKVPrecPasses();
  });
  mlir::DialectRegistry registry;
  kvprec::registerKVPrecToolDialects(registry);
  auto context = std::make_unique<mlir::MLIRContext>(registry);
  context->loadAllAvailableDialects();

  std::string diagnostics;
  llvm::raw_string_ostream diagnosticStream(diagnostics);
  llvm::SourceMgr sourceMgr;
  mlir::SourceMgrDiagnosticHandler handler(sourceMgr, context.get(),
                                           diagnosticStream);
  // A declaration that uses the type is all the pass needs to generate its
  // functions.
  std::string text = "func.func private @kvprec_uses(" + cacheType + ")\n";
  mlir::OwningOpRef<mlir::ModuleOp> module =
      mlir::parseSourceString<mlir::ModuleOp>(text, context.get());
  if (!module)
    return llvm::createStringError("cannot parse the cache type: " +
                                   diagnostics);
  auto function = *module->getOps<mlir::func::FuncOp>().begin();
  auto cache =
      llvm::dyn_cast<mlir::kvprec::CacheType>(function.getArgumentTypes()[0]);
  if (!cache || !cache.getElementType().isF32())
    return llvm::createStringError(
        "the compiled backend takes a !kvprec.cache with element type f32");
  mlir::PassManager pm(context.get());
  mlir::kvprec::KVPrecToLLVMOptions pipelineOptions;
  pipelineOptions.threads = threads;
  pipelineOptions.runtimeCertificate = runtimeCertificate;
  pipelineOptions.prefetchDistance = prefetchDistance;
  pipelineOptions.storePieces = storePieces;
  // The code is compiled for this CPU: AVX-512F instructions where it has
  // them.
  auto hostFeatures = llvm::sys::getHostCPUFeatures();
  auto avx512 = hostFeatures.find("avx512f");
  pipelineOptions.x86Avx512 = avx512 != hostFeatures.end() && avx512->second;
  mlir::kvprec::buildKVPrecToLLVMPipeline(pm, pipelineOptions);
  if (mlir::failed(pm.run(*module)))
    return llvm::createStringError("kvprec-to-llvm failed: " + diagnostics);

  // Compile for this CPU (its vector width and instruction set), as
  // `llc -mcpu=native` would; the default JIT target is generic x86-64.
  auto machineBuilder = llvm::orc::JITTargetMachineBuilder::detectHost();
  if (!machineBuilder)
    return machineBuilder.takeError();
  machineBuilder->setCPU(llvm::sys::getHostCPUName().str());
  llvm::SubtargetFeatures features;
  for (const auto &[feature, enabled] : hostFeatures)
    features.AddFeature(feature, enabled);
  machineBuilder->addFeatures(features.getFeatures());
  machineBuilder->setCodeGenOptLevel(llvm::CodeGenOptLevel::Aggressive);
  auto machine = machineBuilder->createTargetMachine();
  if (!machine)
    return machine.takeError();
  mlir::ExecutionEngineOptions options;
  auto transformer = mlir::makeOptimizingTransformer(3, 0, machine->get());
  options.transformer = transformer;
  options.jitCodeGenOptLevel = llvm::CodeGenOptLevel::Aggressive;
  llvm::SmallVector<llvm::StringRef, 1> libraries;
  if (threads > 1) {
#ifdef KVPREC_LIBOMP_PATH
    libraries.push_back(KVPREC_LIBOMP_PATH);
#else
    return llvm::createStringError(
        "threads > 1 needs the OpenMP runtime (libomp.so.5), which was not "
        "found when kvprec was configured");
#endif
  }
  options.sharedLibPaths = libraries;
  auto engine =
      mlir::ExecutionEngine::create(*module, options, std::move(*machine));
  if (!engine)
    return engine.takeError();

  std::unique_ptr<CompiledCache> result(new CompiledCache());
  result->engine = std::move(*engine);
  result->kvHeads = cache.getHeads();
  result->headDim = cache.getHeadDim();
  auto find = [&](const char *name, void *&slot) -> llvm::Error {
    auto symbol = result->engine->lookup(
        std::string("_mlir_ciface_kvprec_cache0_") + name);
    if (!symbol)
      return symbol.takeError();
    slot = *symbol;
    return llvm::Error::success();
  };
  for (auto [name, slot] :
       {std::pair<const char *, void **>{"arena_bytes", &result->arenaBytesFn},
        {"init", &result->initFn},
        {"append", &result->appendFn},
        {"attend", &result->attendFn},
        {"load", &result->loadFn}})
    if (llvm::Error error = find(name, *slot))
      return std::move(error);
  if (runtimeCertificate)
    if (llvm::Error error = find("attend_certified", result->attendCertifiedFn))
      return std::move(error);
  module = nullptr;
  result->context = std::move(context);
  return result;
}

int64_t CompiledCache::getArenaBytes() const {
  return reinterpret_cast<int64_t (*)()>(arenaBytesFn)();
}

int32_t CompiledCache::init(uint8_t *arena, int64_t arenaBytes) const {
  Arena1 a = describeArena(arena, arenaBytes);
  return reinterpret_cast<int32_t (*)(Arena1 *)>(initFn)(&a);
}

int32_t CompiledCache::append(uint8_t *arena, int64_t arenaBytes, int64_t layer,
                              const float *keys, const float *values,
                              int64_t tokens, int64_t position) const {
  Arena1 a = describeArena(arena, arenaBytes);
  Tokens3 k =
      describe<3>(const_cast<float *>(keys), {tokens, kvHeads, headDim});
  Tokens3 v =
      describe<3>(const_cast<float *>(values), {tokens, kvHeads, headDim});
  return reinterpret_cast<int32_t (*)(Arena1 *, int64_t, Tokens3 *, Tokens3 *,
                                      int64_t)>(appendFn)(&a, layer, &k, &v,
                                                          position);
}

int32_t CompiledCache::attend(uint8_t *arena, int64_t arenaBytes, int64_t layer,
                              const float *query, int64_t queryHeads,
                              int64_t length, float *output,
                              float softmaxScale) const {
  Arena1 a = describeArena(arena, arenaBytes);
  Heads2 q = describe<2>(const_cast<float *>(query), {queryHeads, headDim});
  Heads2 o = describe<2>(output, {queryHeads, headDim});
  return reinterpret_cast<int32_t (*)(Arena1 *, int64_t, Heads2 *, int64_t,
                                      Heads2 *, float)>(attendFn)(
      &a, layer, &q, length, &o, softmaxScale);
}

int32_t CompiledCache::attendCertified(uint8_t *arena, int64_t arenaBytes,
                                       int64_t layer, const float *query,
                                       int64_t queryHeads, int64_t length,
                                       float *output, float softmaxScale,
                                       float *bounds) const {
  if (!attendCertifiedFn)
    llvm::report_fatal_error("CompiledCache::attendCertified: the cache was "
                             "compiled without the run-time certificate");
  Arena1 a = describeArena(arena, arenaBytes);
  Heads2 q = describe<2>(const_cast<float *>(query), {queryHeads, headDim});
  Heads2 o = describe<2>(output, {queryHeads, headDim});
  Floats1 b = describe<1>(bounds, {queryHeads});
  return reinterpret_cast<int32_t (*)(Arena1 *, int64_t, Heads2 *, int64_t,
                                      Heads2 *, float, Floats1 *)>(
      attendCertifiedFn)(&a, layer, &q, length, &o, softmaxScale, &b);
}

int32_t CompiledCache::load(uint8_t *arena, int64_t arenaBytes, int64_t layer,
                            int64_t start, int64_t tokens, float *keys,
                            float *values) const {
  Arena1 a = describeArena(arena, arenaBytes);
  Tokens3 k = describe<3>(keys, {tokens, kvHeads, headDim});
  Tokens3 v = describe<3>(values, {tokens, kvHeads, headDim});
  return reinterpret_cast<int32_t (*)(Arena1 *, int64_t, int64_t, Tokens3 *,
                                      Tokens3 *)>(loadFn)(&a, layer, start, &k,
                                                          &v);
}
