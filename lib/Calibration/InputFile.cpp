//===- InputFile.cpp - reading files named on the command line ------------===//

#include "kvprec/Calibration/InputFile.h"

#include "llvm/ADT/Twine.h"
#include "llvm/Support/FileSystem.h"

using namespace llvm;

namespace kvprec::calib {

Expected<std::unique_ptr<MemoryBuffer>> openRegularFile(StringRef path,
                                                        StringRef what,
                                                        uint64_t maxBytes,
                                                        bool isText) {
  auto fail = [&](const Twine &message) {
    return createStringError(inconvertibleErrorCode(), path + ": " + message);
  };
  sys::fs::file_status status;
  if (std::error_code error = sys::fs::status(path, status))
    return fail("cannot open " + what + ": " + error.message());
  if (status.type() != sys::fs::file_type::regular_file)
    return fail(what + " is not a regular file (a device, FIFO or directory "
                       "cannot be read to a known size)");
  if (status.getSize() > maxBytes)
    return fail(what + " is " + Twine(status.getSize()) +
                " bytes, more than the limit of " + Twine(maxBytes));
  ErrorOr<std::unique_ptr<MemoryBuffer>> buffer =
      MemoryBuffer::getFile(path, isText, /*RequiresNullTerminator=*/false);
  if (!buffer)
    return fail("cannot open " + what + ": " + buffer.getError().message());
  return std::move(*buffer);
}

} // namespace kvprec::calib
