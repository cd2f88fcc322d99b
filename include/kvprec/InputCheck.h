//===- InputCheck.h - refuse MLIR text the upstream parser mishandles -*- C++ -*-===//
//
// kvprec-opt and the IR fuzzer scan input with this before MLIR parses it.
//
//===----------------------------------------------------------------------===//

#ifndef KVPREC_INPUTCHECK_H
#define KVPREC_INPUTCHECK_H

#include "llvm/ADT/StringRef.h"

#include <optional>
#include <string>

namespace kvprec {

/// What the scan before parsing refuses, and where (1-based).
struct InputProblem {
  unsigned line = 1, column = 1;
  std::string message;
};

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
std::optional<InputProblem> checkInput(llvm::StringRef text, unsigned limit);

} // namespace kvprec

#endif // KVPREC_INPUTCHECK_H
