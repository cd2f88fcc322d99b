//===- CommandLine.h - llvm::cl parsing in the tools' error form -*- C++ -*-===//
//
// kvprec-opt and kvprec-calib parse their options with llvm::cl, whose
// messages ("TOOL: for the --steps option: ...", "Unknown command line
// argument") carry no "error:". This parses with everything llvm::cl
// writes to stderr captured, and rewrites it into the tools' form: the
// first line `TOOL: error: ...`, the rest (suggestions) as notes.
//
//===----------------------------------------------------------------------===//

#ifndef KVPREC_COMMANDLINE_H
#define KVPREC_COMMANDLINE_H

#include "llvm/ADT/StringRef.h"

namespace kvprec {

/// cl::ParseCommandLineOptions(argc, argv, overview). On an error prints it
/// to stderr as `tool: error: ...` and returns false. Help and version
/// output go to stdout as before.
bool parseCommandLine(int argc, char **argv, llvm::StringRef overview,
                      llvm::StringRef tool);

} // namespace kvprec

#endif // KVPREC_COMMANDLINE_H
