//===- kvprec-opt.cpp - the kvprec optimizer driver -----------------------===//
//
// mlir-opt with the kvprec dialect, passes and pipelines, and the upstream
// dialects, passes and translations that kvprec's lowering uses.
//
//===----------------------------------------------------------------------===//

#include "kvprec/CommandLine.h"
#include "kvprec/InitKVPrec.h"
#include "kvprec/InputCheck.h"

#include "mlir/IR/DialectRegistry.h"
#include "mlir/InitAllPasses.h"
#include "mlir/Support/FileUtilities.h"
#include "mlir/Tools/mlir-opt/MlirOptMain.h"

#include "llvm/Support/CommandLine.h"
#include "llvm/Support/InitLLVM.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/ToolOutputFile.h"
#include "llvm/Support/WithColor.h"
#include "llvm/Support/thread.h"

#include <optional>
#include <string>

/// The MLIR parser, verifiers and printer recurse once per nesting level of
/// an attribute, type or region, and upstream sets no limit: on the default
/// 8 MiB main stack an attribute nested about 20,000 levels deep crashes
/// mlir-opt (SIGSEGV). kvprec-opt runs on a thread with a 1 GiB stack
/// (reserved address space; only what a parse touches is committed), which
/// held 200,000 levels of nested arrays here, and refuses input nested more
/// than kMaxInputNesting levels before parsing it (docs/testing.md).
static constexpr unsigned kDriverStackBytes = 1u << 30;
static constexpr unsigned kMaxInputNesting = 100000;

/// MlirOptMain's file handling, with checkInput between reading the
/// input and parsing it.
static int runDriver(int argc, char **argv, mlir::DialectRegistry &registry) {
  // mlir::registerAndParseCLIOptions, with llvm::cl's errors in the tool's
  // one-line `kvprec-opt: error: ...` form instead of printed and exited on.
  std::string helpHeader = mlir::registerCLIOptions(
      "kvprec optimizer driver: certified mixed-precision KV caches\n",
      registry);
  static llvm::cl::opt<std::string> inputFilename(
      llvm::cl::Positional, llvm::cl::desc("<input file>"),
      llvm::cl::init("-"));
  static llvm::cl::opt<std::string> outputFilename(
      "o", llvm::cl::desc("Output filename"),
      llvm::cl::value_desc("filename"), llvm::cl::init("-"));
  if (!kvprec::parseCommandLine(argc, argv, helpHeader, "kvprec-opt"))
    return 1;
  mlir::MlirOptMainConfig config =
      mlir::MlirOptMainConfig::createFromCLOptions();
  if (config.shouldShowDialects() || config.shouldListPasses())
    return mlir::asMainReturnCode(mlir::MlirOptMain(
        argc, argv, inputFilename, outputFilename, registry));
  auto fail = [&](const llvm::Twine &message) {
    llvm::WithColor::error(llvm::errs(), "kvprec-opt") << message << "\n";
    return 1;
  };
  std::string errorMessage;
  std::unique_ptr<llvm::MemoryBuffer> input =
      mlir::openInputFile(inputFilename, &errorMessage);
  if (!input)
    return fail(errorMessage);
  if (std::optional<kvprec::InputProblem> problem =
          kvprec::checkInput(input->getBuffer(), kMaxInputNesting))
    return fail(llvm::Twine(inputFilename) + ":" + llvm::Twine(problem->line) +
                ":" + llvm::Twine(problem->column) + ": " + problem->message);
  std::unique_ptr<llvm::ToolOutputFile> output =
      mlir::openOutputFile(outputFilename, &errorMessage);
  if (!output)
    return fail(errorMessage);
  if (mlir::failed(
          mlir::MlirOptMain(output->os(), std::move(input), registry, config)))
    return 1;
  output->keep();
  return 0;
}

int main(int argc, char **argv) {
  llvm::InitLLVM initLLVM(argc, argv);
  mlir::registerAllPasses();
  kvprec::registerKVPrecPasses();

  mlir::DialectRegistry registry;
  kvprec::registerKVPrecToolDialects(registry);
  int result = 1;
  llvm::thread driver(std::optional<unsigned>(kDriverStackBytes),
                      [&] { result = runDriver(argc, argv, registry); });
  driver.join();
  return result;
}
