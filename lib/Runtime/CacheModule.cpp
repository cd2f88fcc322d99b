//===- CacheModule.cpp - what the CPU and GPU compiled caches share -------===//

#include "CacheModule.h"

#include "kvprec/InitKVPrec.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/DialectRegistry.h"
#include "mlir/Parser/Parser.h"

#include "llvm/Support/ErrorHandling.h"
#include "llvm/Support/TargetSelect.h"

#include <mutex>

using namespace kvprec::runtime::detail;

CacheModule::CacheModule() {
  static std::once_flag initialized;
  std::call_once(initialized, [] {
    llvm::InitializeNativeTarget();
    llvm::InitializeNativeTargetAsmPrinter();
    kvprec::registerKVPrecPasses();
  });
  mlir::DialectRegistry registry;
  kvprec::registerKVPrecToolDialects(registry);
  context = std::make_unique<mlir::MLIRContext>(registry);
  context->loadAllAvailableDialects();
  handler = std::make_unique<mlir::SourceMgrDiagnosticHandler>(
      sourceMgr, context.get(), diagnosticStream);
}

llvm::Expected<std::unique_ptr<CacheModule>>
CacheModule::parse(const std::string &cacheType, llvm::StringRef backend) {
  std::unique_ptr<CacheModule> result(new CacheModule());
  std::string text = "func.func private @kvprec_uses(" + cacheType + ")\n";
  result->module =
      mlir::parseSourceString<mlir::ModuleOp>(text, result->context.get());
  if (!result->module)
    return llvm::createStringError("cannot parse the cache type: " +
                                   result->diagnostics);
  auto function = *result->module->getOps<mlir::func::FuncOp>().begin();
  result->cache =
      llvm::dyn_cast<mlir::kvprec::CacheType>(function.getArgumentTypes()[0]);
  if (!result->cache || !result->cache.getElementType().isF32())
    return llvm::createStringError(
        "the " + backend.str() +
        " backend takes a !kvprec.cache with element type f32");
  return result;
}

llvm::Error
CacheModule::run(llvm::StringRef name,
                 llvm::function_ref<void(mlir::PassManager &)> build) {
  return run(name, build, *module);
}

llvm::Error
CacheModule::run(llvm::StringRef name,
                 llvm::function_ref<void(mlir::PassManager &)> build,
                 mlir::ModuleOp other) {
  mlir::PassManager pm(context.get());
  build(pm);
  if (mlir::failed(pm.run(other)))
    return llvm::createStringError(name.str() + " failed: " + diagnostics);
  return llvm::Error::success();
}

std::unique_ptr<mlir::MLIRContext> CacheModule::releaseContext() {
  module = nullptr;
  handler.reset();
  return std::move(context);
}

llvm::Error
kvprec::runtime::detail::lookupEntryPoints(mlir::ExecutionEngine &engine,
                                           mlir::kvprec::CacheType cache,
                                           bool certified, EntryPoints &entry) {
  std::pair<const char *, void **> entries[] = {
      {"arena_bytes", &entry.arenaBytes},
      {"init", &entry.init},
      {"append", &entry.append},
      {"attend", &entry.attend},
      {"load", &entry.load},
      {"attend_certified", nullptr}};
  if (certified)
    entries[5].second = &entry.attendCertified;
  for (auto [name, slot] : entries) {
    if (!slot)
      continue;
    auto symbol =
        engine.lookup(std::string("_mlir_ciface_kvprec_cache0_") + name);
    if (!symbol)
      return symbol.takeError();
    *slot = *symbol;
  }
  entry.kvHeads = cache.getHeads();
  entry.headDim = cache.getHeadDim();
  return llvm::Error::success();
}

namespace {
using Arena1 = StridedMemRefType<int8_t, 1>;
using Tokens3 = StridedMemRefType<float, 3>;
using Heads2 = StridedMemRefType<float, 2>;
using Floats1 = StridedMemRefType<float, 1>;
// The generated code reads but does not write the inputs it is given.
void *in(const void *pointer) { return const_cast<void *>(pointer); }
} // namespace

int64_t EntryPoints::callArenaBytes() const {
  return reinterpret_cast<int64_t (*)()>(arenaBytes)();
}

int32_t EntryPoints::callInit(void *arena, int64_t bytes) const {
  Arena1 a = describeDense<int8_t, 1>(arena, {bytes});
  return reinterpret_cast<int32_t (*)(Arena1 *)>(init)(&a);
}

int32_t EntryPoints::callAppend(void *arena, int64_t bytes, int64_t layer,
                                const void *keys, const void *values,
                                int64_t tokens, int64_t position) const {
  Arena1 a = describeDense<int8_t, 1>(arena, {bytes});
  Tokens3 k = describeDense<float, 3>(in(keys), {tokens, kvHeads, headDim});
  Tokens3 v = describeDense<float, 3>(in(values), {tokens, kvHeads, headDim});
  return reinterpret_cast<int32_t (*)(Arena1 *, int64_t, Tokens3 *, Tokens3 *,
                                      int64_t)>(append)(&a, layer, &k, &v,
                                                        position);
}

int32_t EntryPoints::callAttend(void *arena, int64_t bytes, int64_t layer,
                                const void *query, int64_t queryHeads,
                                int64_t length, void *output,
                                float softmaxScale) const {
  Arena1 a = describeDense<int8_t, 1>(arena, {bytes});
  Heads2 q = describeDense<float, 2>(in(query), {queryHeads, headDim});
  Heads2 o = describeDense<float, 2>(output, {queryHeads, headDim});
  return reinterpret_cast<int32_t (*)(Arena1 *, int64_t, Heads2 *, int64_t,
                                      Heads2 *, float)>(attend)(
      &a, layer, &q, length, &o, softmaxScale);
}

int32_t EntryPoints::callAttendCertified(void *arena, int64_t bytes,
                                         int64_t layer, const void *query,
                                         int64_t queryHeads, int64_t length,
                                         void *output, float softmaxScale,
                                         float *bounds) const {
  if (!attendCertified)
    llvm::report_fatal_error("attendCertified: the cache was compiled without "
                             "the run-time certificate");
  Arena1 a = describeDense<int8_t, 1>(arena, {bytes});
  Heads2 q = describeDense<float, 2>(in(query), {queryHeads, headDim});
  Heads2 o = describeDense<float, 2>(output, {queryHeads, headDim});
  Floats1 b = describeDense<float, 1>(bounds, {queryHeads});
  return reinterpret_cast<int32_t (*)(Arena1 *, int64_t, Heads2 *, int64_t,
                                      Heads2 *, float, Floats1 *)>(
      attendCertified)(&a, layer, &q, length, &o, softmaxScale, &b);
}

int32_t EntryPoints::callLoad(void *arena, int64_t bytes, int64_t layer,
                              int64_t start, int64_t tokens, void *keys,
                              void *values) const {
  Arena1 a = describeDense<int8_t, 1>(arena, {bytes});
  Tokens3 k = describeDense<float, 3>(keys, {tokens, kvHeads, headDim});
  Tokens3 v = describeDense<float, 3>(values, {tokens, kvHeads, headDim});
  return reinterpret_cast<int32_t (*)(Arena1 *, int64_t, int64_t, Tokens3 *,
                                      Tokens3 *)>(load)(&a, layer, start, &k,
                                                        &v);
}
