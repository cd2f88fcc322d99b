//===- CacheModule.cpp - what the CPU and GPU compiled caches share -------===//

#include "CacheModule.h"

#include "kvprec/InitKVPrec.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/DialectRegistry.h"
#include "mlir/Parser/Parser.h"

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
  mlir::PassManager pm(context.get());
  build(pm);
  if (mlir::failed(pm.run(*module)))
    return llvm::createStringError(name.str() + " failed: " + diagnostics);
  return llvm::Error::success();
}

std::unique_ptr<mlir::MLIRContext> CacheModule::releaseContext() {
  module = nullptr;
  handler.reset();
  return std::move(context);
}

llvm::Error kvprec::runtime::detail::lookupEntryPoints(
    mlir::ExecutionEngine &engine,
    llvm::ArrayRef<std::pair<const char *, void **>> entries) {
  for (auto [name, slot] : entries) {
    auto symbol =
        engine.lookup(std::string("_mlir_ciface_kvprec_cache0_") + name);
    if (!symbol)
      return symbol.takeError();
    *slot = *symbol;
  }
  return llvm::Error::success();
}
