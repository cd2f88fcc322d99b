//===- ir-fuzzer.cpp - kvprec attributes, types, ops and passes on text ---===//
//
// Parses arbitrary text as MLIR with every dialect kvprec-opt registers,
// after the same pre-parse scan kvprec-opt runs (kvprec/InputCheck.h, here
// with a lower nesting limit: the fuzzer parses on the main thread's
// stack). What parses is verified, printed (generic and custom form) and
// run through the passes that need no calibration file: uniform planning,
// plan verification and the report; then the storage materialization of
// both targets runs on the input as written (its own plans, whatever they
// say) and on the uniformly planned module.
//
//===----------------------------------------------------------------------===//

#include "kvprec/InitKVPrec.h"
#include "kvprec/InputCheck.h"

#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/Diagnostics.h"
#include "mlir/IR/DialectRegistry.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/IR/Verifier.h"
#include "mlir/Parser/Parser.h"
#include "mlir/Pass/PassManager.h"
#include "mlir/Pass/PassRegistry.h"

#include "llvm/Support/raw_ostream.h"

#include <cstdint>
#include <string>

static constexpr unsigned kFuzzNestingLimit = 200;

static const mlir::DialectRegistry &getRegistry() {
  static mlir::DialectRegistry *registry = [] {
    auto *r = new mlir::DialectRegistry();
    kvprec::registerKVPrecToolDialects(*r);
    kvprec::registerKVPrecPasses();
    return r;
  }();
  return *registry;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  std::string text(reinterpret_cast<const char *>(data), size);
  if (kvprec::checkInput(text, kFuzzNestingLimit))
    return 0;
  mlir::MLIRContext context(getRegistry(),
                            mlir::MLIRContext::Threading::DISABLED);
  mlir::ScopedDiagnosticHandler quiet(
      &context, [](mlir::Diagnostic &) { return mlir::success(); });
  mlir::OwningOpRef<mlir::ModuleOp> module =
      mlir::parseSourceString<mlir::ModuleOp>(text, &context);
  if (!module)
    return 0;
  if (mlir::failed(mlir::verify(*module)))
    return 0;
  llvm::raw_null_ostream sink;
  module->print(sink, mlir::OpPrintingFlags().printGenericOpForm());
  module->print(sink);
  auto runPipeline = [&](mlir::ModuleOp target, const char *pipeline) {
    mlir::PassManager pm(&context);
    if (mlir::failed(mlir::parsePassPipeline(pipeline, pm)))
      __builtin_trap();
    return pm.run(target);
  };
  // The lowering's input is a planned module, whoever wrote the plan.
  static const char *const kMaterialize[] = {
      "builtin.module(kvprec-materialize-storage{threads=2 "
      "runtime-certificate=true})",
      "builtin.module(kvprec-materialize-storage{target=nvptx chip=sm_90})"};
  for (const char *pipeline : kMaterialize) {
    mlir::OwningOpRef<mlir::ModuleOp> copy = module->clone();
    (void)runPipeline(*copy, pipeline);
  }
  if (mlir::failed(runPipeline(
          *module, "builtin.module(kvprec-assign-precision{mode=uniform "
                   "format=i8},kvprec-report{output=/dev/null})")))
    return 0;
  (void)runPipeline(*module, kMaterialize[0]);
  return 0;
}
