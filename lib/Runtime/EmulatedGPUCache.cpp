//===- EmulatedGPUCache.cpp - the NVPTX lowering run on the CPU -----------===//

#include "kvprec/Runtime/EmulatedGPUCache.h"
#include "CacheModule.h"
#include "GPUEmulator.h"
#include "kvprec/Conversion/Passes.h"

#include "mlir/ExecutionEngine/ExecutionEngine.h"
#include "mlir/Pass/PassManager.h"

#include "llvm/Support/ErrorHandling.h"
#include "llvm/Support/raw_ostream.h"

using namespace kvprec::runtime;

EmulatedGPUCache::EmulatedGPUCache() = default;
EmulatedGPUCache::~EmulatedGPUCache() = default;

llvm::Expected<std::unique_ptr<EmulatedGPUCache>>
EmulatedGPUCache::compile(const std::string &cacheType, const std::string &chip,
                          bool runtimeCertificate) {
  if (mlir::kvprec::getNVVMFeatures(chip).empty())
    return llvm::createStringError("the GPU emulator runs kvprec-to-nvvm's "
                                   "code for a chip it knows (sm_80 and up), "
                                   "not '" +
                                   chip + "'");
  auto parsed = detail::CacheModule::parse(cacheType, "emulated GPU");
  if (!parsed)
    return parsed.takeError();
  detail::CacheModule &cacheModule = **parsed;
  mlir::kvprec::KVPrecToNVVMOptions options;
  options.chip = chip;
  options.runtimeCertificate = runtimeCertificate;
  if (llvm::Error error =
          cacheModule.run("kvprec-to-nvvm", [&](mlir::PassManager &pm) {
            mlir::kvprec::buildNVVMMaterializePipeline(pm, options);
          }))
    return std::move(error);

  std::unique_ptr<EmulatedGPUCache> result(new EmulatedGPUCache());
  auto program = detail::compileEmulatedProgram(cacheModule.getModule(), chip);
  if (!program)
    return program.takeError();
  result->program = std::move(*program);
  if (llvm::Error error = detail::lookupEntryPoints(
          *result->program->host, cacheModule.getCache(), runtimeCertificate,
          result->entry))
    return std::move(error);
  result->arenaBytes = result->entry.callArenaBytes();
  result->context = cacheModule.releaseContext();
  return result;
}

int32_t EmulatedGPUCache::finish(int32_t status) const {
  error = detail::takeEmulatorError();
  if (error.empty())
    return status;
  llvm::errs() << "kvprec GPU emulator: " << error << "\n";
  return kEmulatorFailed;
}

int64_t EmulatedGPUCache::getArenaBytes() const { return arenaBytes; }

int32_t EmulatedGPUCache::init(uint8_t *arena, int64_t bytes) const {
  return finish(entry.callInit(arena, bytes));
}

int32_t EmulatedGPUCache::append(uint8_t *arena, int64_t bytes, int64_t layer,
                                 const float *keys, const float *values,
                                 int64_t tokens, int64_t position) const {
  return finish(
      entry.callAppend(arena, bytes, layer, keys, values, tokens, position));
}

int32_t EmulatedGPUCache::attend(uint8_t *arena, int64_t bytes, int64_t layer,
                                 const float *query, int64_t queryHeads,
                                 int64_t length, float *output,
                                 float softmaxScale) const {
  return finish(entry.callAttend(arena, bytes, layer, query, queryHeads, length,
                                 output, softmaxScale));
}

int32_t EmulatedGPUCache::attendCertified(uint8_t *arena, int64_t bytes,
                                          int64_t layer, const float *query,
                                          int64_t queryHeads, int64_t length,
                                          float *output, float softmaxScale,
                                          float *bounds) const {
  return finish(entry.callAttendCertified(arena, bytes, layer, query,
                                          queryHeads, length, output,
                                          softmaxScale, bounds));
}

int32_t EmulatedGPUCache::load(uint8_t *arena, int64_t bytes, int64_t layer,
                               int64_t start, int64_t tokens, float *keys,
                               float *values) const {
  return finish(
      entry.callLoad(arena, bytes, layer, start, tokens, keys, values));
}
