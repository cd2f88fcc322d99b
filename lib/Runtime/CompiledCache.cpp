//===- CompiledCache.cpp - a planned cache compiled and loaded ------------===//

#include "kvprec/Runtime/CompiledCache.h"
#include "CacheModule.h"
#include "kvprec/Conversion/Passes.h"
#include "kvprec/Dialect/KVPrec/IR/KVPrecTypes.h"

#include "mlir/ExecutionEngine/ExecutionEngine.h"
#include "mlir/ExecutionEngine/OptUtils.h"
#include "mlir/Pass/PassManager.h"
#include "mlir/Target/LLVMIR/Dialect/All.h"

#include "llvm/ExecutionEngine/Orc/JITTargetMachineBuilder.h"
#include "llvm/Support/ErrorHandling.h"
#include "llvm/TargetParser/Host.h"
#include "llvm/TargetParser/SubtargetFeature.h"

#include <cstdlib>

using namespace kvprec::runtime;

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
  auto parsed = detail::CacheModule::parse(cacheType, "compiled");
  if (!parsed)
    return parsed.takeError();
  detail::CacheModule &cacheModule = **parsed;
  mlir::kvprec::CacheType cache = cacheModule.getCache();
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
  if (llvm::Error error =
          cacheModule.run("kvprec-to-llvm", [&](mlir::PassManager &pm) {
            mlir::kvprec::buildKVPrecToLLVMPipeline(pm, pipelineOptions);
          }))
    return std::move(error);

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
  auto engine = mlir::ExecutionEngine::create(cacheModule.getModule(), options,
                                              std::move(*machine));
  if (!engine)
    return engine.takeError();

  std::unique_ptr<CompiledCache> result(new CompiledCache());
  result->engine = std::move(*engine);
  if (llvm::Error error = detail::lookupEntryPoints(
          *result->engine, cache, runtimeCertificate, result->entry))
    return std::move(error);
  result->context = cacheModule.releaseContext();
  return result;
}

int64_t CompiledCache::getArenaBytes() const { return entry.callArenaBytes(); }

int32_t CompiledCache::init(uint8_t *arena, int64_t arenaBytes) const {
  return entry.callInit(arena, arenaBytes);
}

int32_t CompiledCache::append(uint8_t *arena, int64_t arenaBytes, int64_t layer,
                              const float *keys, const float *values,
                              int64_t tokens, int64_t position) const {
  return entry.callAppend(arena, arenaBytes, layer, keys, values, tokens,
                          position);
}

int32_t CompiledCache::attend(uint8_t *arena, int64_t arenaBytes, int64_t layer,
                              const float *query, int64_t queryHeads,
                              int64_t length, float *output,
                              float softmaxScale) const {
  return entry.callAttend(arena, arenaBytes, layer, query, queryHeads, length,
                          output, softmaxScale);
}

int32_t CompiledCache::attendCertified(uint8_t *arena, int64_t arenaBytes,
                                       int64_t layer, const float *query,
                                       int64_t queryHeads, int64_t length,
                                       float *output, float softmaxScale,
                                       float *bounds) const {
  return entry.callAttendCertified(arena, arenaBytes, layer, query, queryHeads,
                                   length, output, softmaxScale, bounds);
}

int32_t CompiledCache::load(uint8_t *arena, int64_t arenaBytes, int64_t layer,
                            int64_t start, int64_t tokens, float *keys,
                            float *values) const {
  return entry.callLoad(arena, arenaBytes, layer, start, tokens, keys, values);
}
