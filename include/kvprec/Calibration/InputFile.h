//===- InputFile.h - reading files named on the command line ----*- C++ -*-===//
//
// Every file kvprec-calib and the calibration import read comes through
// here: it must be a regular file no larger than a stated limit. A device
// such as /dev/zero reports size 0 and would be read until memory runs out;
// a FIFO or directory cannot be sized at all.
//
//===----------------------------------------------------------------------===//

#ifndef KVPREC_CALIBRATION_INPUTFILE_H
#define KVPREC_CALIBRATION_INPUTFILE_H

#include "llvm/ADT/StringRef.h"
#include "llvm/Support/Error.h"
#include "llvm/Support/MemoryBuffer.h"

#include <cstdint>
#include <memory>

namespace kvprec::calib {

/// Opens `path` (a `what`, for messages: "checkpoint", "tokenizer", ...)
/// after checking that it is a regular file of at most `maxBytes` bytes.
/// Errors read "PATH: cannot open WHAT: ..." or "PATH: WHAT is not a
/// regular file" or "PATH: WHAT is N bytes, more than the limit of M".
llvm::Expected<std::unique_ptr<llvm::MemoryBuffer>>
openRegularFile(llvm::StringRef path, llvm::StringRef what, uint64_t maxBytes,
                bool isText = false);

} // namespace kvprec::calib

#endif // KVPREC_CALIBRATION_INPUTFILE_H
