//===- kvprec-opt.cpp - the kvprec optimizer driver -----------------------===//
//
// mlir-opt with the kvprec dialect, passes and pipelines, and the upstream
// dialects, passes and translations that kvprec's lowering uses.
//
//===----------------------------------------------------------------------===//

#include "kvprec/InitKVPrec.h"

#include "mlir/IR/DialectRegistry.h"
#include "mlir/InitAllPasses.h"
#include "mlir/Support/FileUtilities.h"
#include "mlir/Tools/mlir-opt/MlirOptMain.h"

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

namespace {
/// What the scan before parsing refuses, and where.
struct InputProblem {
  unsigned line = 1, column = 1;
  std::string message;
};
} // namespace

/// Scans MLIR text before the parser sees it for two inputs that upstream
/// MLIR 22 mishandles:
///  * nesting: counts the brackets that make the parser recurse ( [ { ( < ),
///    outside string literals and comments; `->`, `<=` and `>=` are not
///    brackets. An estimate that errs both ways by a few levels, which does
///    not matter at a limit of 100,000.
///  * a string literal still open at the end of the input (a truncated
///    file, e.g. a cut `dialect_resources` hex blob): the lexer reports it,
///    but leaves its cursor one past the terminating NUL, so the next token
///    is lexed from memory past the end of the buffer (docs/testing.md).
///    A string also ends at a newline, where the lexer's error is safe.
static std::optional<InputProblem> checkInput(llvm::StringRef text,
                                              unsigned limit) {
  unsigned depth = 0, line = 1, column = 0, stringLine = 0, stringColumn = 0;
  bool inString = false, inComment = false;
  for (size_t i = 0; i < text.size(); ++i) {
    char c = text[i];
    ++column;
    if (c == '\n') {
      ++line;
      column = 0;
      inComment = false;
      inString = false;
      continue;
    }
    if (inComment)
      continue;
    if (inString) {
      if (c == '\\' && i + 1 < text.size() && text[i + 1] != '\n')
        ++i, ++column;
      else if (c == '"')
        inString = false;
      continue;
    }
    char next = i + 1 < text.size() ? text[i + 1] : '\0';
    char previous = i > 0 ? text[i - 1] : '\0';
    if (c == '"') {
      inString = true;
      stringLine = line;
      stringColumn = column;
    } else if (c == '/' && next == '/') {
      inComment = true;
    } else if (c == '[' || c == '{' || c == '(' || (c == '<' && next != '=')) {
      if (++depth > limit)
        return InputProblem{line, column,
                            "the input nests brackets more than " +
                                std::to_string(limit) +
                                " levels deep, past what kvprec-opt parses "
                                "safely"};
    } else if ((c == ']' || c == '}' || c == ')' ||
                (c == '>' && previous != '-' && next != '=')) &&
               depth > 0) {
      --depth;
    }
  }
  if (inString)
    return InputProblem{stringLine, stringColumn,
                        "the string literal that starts here is not closed "
                        "before the end of the input; the file is truncated"};
  return std::nullopt;
}

/// MlirOptMain's file handling, with checkInput between reading the
/// input and parsing it.
static int runDriver(int argc, char **argv, mlir::DialectRegistry &registry) {
  auto [inputFilename, outputFilename] = mlir::registerAndParseCLIOptions(
      argc, argv,
      "kvprec optimizer driver: certified mixed-precision KV caches\n",
      registry);
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
  if (std::optional<InputProblem> problem =
          checkInput(input->getBuffer(), kMaxInputNesting))
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
