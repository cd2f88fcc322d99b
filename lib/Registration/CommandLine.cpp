//===- CommandLine.cpp - llvm::cl parsing in the tools' error form --------===//

#include "kvprec/CommandLine.h"

#include "llvm/ADT/SmallVector.h"
#include "llvm/Support/CommandLine.h"
#include "llvm/Support/raw_ostream.h"

#include <cstdio>
#include <string>

#include <unistd.h>

using namespace llvm;

/// cl::ParseCommandLineOptions with everything it writes to stderr (its
/// own error stream and the value parsers', which write to llvm::errs()
/// directly) captured in `errors`; false when it found an error. Help and
/// version output go to stdout as before.
static bool parseCapturingErrors(int argc, char **argv,
                                            StringRef overview,
                                            std::string &errors) {
  std::FILE *capture = std::tmpfile();
  int savedStderr = capture ? ::dup(STDERR_FILENO) : -1;
  if (savedStderr < 0) {
    // Nothing to capture into: parse as the library does.
    raw_string_ostream stream(errors);
    return cl::ParseCommandLineOptions(argc, argv, overview, &stream);
  }
  errs().flush();
  ::dup2(::fileno(capture), STDERR_FILENO);
  raw_string_ostream stream(errors);
  bool parsed = cl::ParseCommandLineOptions(argc, argv, overview, &stream);
  errs().flush();
  ::dup2(savedStderr, STDERR_FILENO);
  ::close(savedStderr);
  std::rewind(capture);
  char buffer[4096];
  std::string direct;
  while (size_t n = std::fread(buffer, 1, sizeof(buffer), capture))
    direct.append(buffer, n);
  std::fclose(capture);
  errors = direct + errors;
  return parsed && direct.empty();
}

bool kvprec::parseCommandLine(int argc, char **argv, StringRef overview,
                              StringRef tool) {
  std::string errors;
  if (parseCapturingErrors(argc, argv, overview, errors))
    return true;
  SmallVector<StringRef> lines;
  StringRef(errors).split(lines, '\n', -1, /*KeepEmpty=*/false);
  std::string prefix = (tool + ":").str();
  for (size_t i = 0; i < lines.size(); ++i) {
    StringRef line = lines[i].trim();
    line.consume_front(prefix);
    errs() << tool << ": " << (i == 0 ? "error: " : "note: ") << line.trim()
           << "\n";
  }
  if (lines.empty())
    errs() << tool << ": error: invalid command line\n";
  return false;
}
