//===- safetensors-fuzzer.cpp - the safetensors reader and stats import ---===//
//
// Feeds arbitrary bytes to the safetensors reader, decodes every tensor it
// accepts and imports the file as calibration statistics, as
// `kvprec-calib inspect` and --kvprec-import-calibration do.
//
//===----------------------------------------------------------------------===//

#include "kvprec/Calibration/CalibrationStats.h"
#include "kvprec/Calibration/SafeTensors.h"

#include "llvm/Support/Error.h"
#include "llvm/Support/MemoryBuffer.h"

#include <cstdint>
#include <cstdlib>

using namespace kvprec::calib;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  llvm::Expected<SafeTensorsFile> file =
      SafeTensorsFile::parse(llvm::MemoryBuffer::getMemBufferCopy(
          llvm::StringRef(reinterpret_cast<const char *>(data), size),
          "<fuzz input>"));
  if (!file) {
    llvm::consumeError(file.takeError());
    return 0;
  }
  for (const SafeTensorEntry &entry : file->getTensors()) {
    // The reader promised every accepted entry lies inside the data.
    llvm::ArrayRef<uint8_t> bytes = file->getBytes(entry);
    if (bytes.size() != entry.end - entry.begin ||
        uint64_t(entry.getNumElements()) * getDTypeSize(entry.dtype) !=
            bytes.size())
      std::abort();
    if (entry.dtype == DType::F32)
      (void)file->readF32(entry);
    else if (entry.dtype == DType::I64)
      (void)file->readI64(entry);
  }
  llvm::Expected<CalibrationStats> stats = readCalibrationStats(*file);
  if (!stats) {
    llvm::consumeError(stats.takeError());
    return 0;
  }
  // What the import accepted must pass its own validation again.
  if (llvm::Error error = validateCalibrationStats(*stats, "<fuzz input>")) {
    llvm::consumeError(std::move(error));
    std::abort();
  }
  return 0;
}
