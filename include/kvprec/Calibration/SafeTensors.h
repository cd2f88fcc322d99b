//===- SafeTensors.h - Read and write safetensors files ---------*- C++ -*-===//
//
// A small, dependency-free implementation of the safetensors container
// (https://huggingface.co/docs/safetensors): an 8-byte little-endian header
// length N, N bytes of JSON describing every tensor (dtype, shape, byte range
// in the data section) plus an optional "__metadata__" string map, then the
// raw little-endian tensor data.
//
// The reader validates the container completely (header bounds, JSON shape,
// known dtypes, byte ranges that match shape * dtype size, no overlaps or
// gaps), so a schema layer on top only has to check names, dtypes and shapes.
//
//===----------------------------------------------------------------------===//

#ifndef KVPREC_CALIBRATION_SAFETENSORS_H
#define KVPREC_CALIBRATION_SAFETENSORS_H

#include "llvm/ADT/ArrayRef.h"
#include "llvm/ADT/SmallVector.h"
#include "llvm/ADT/StringRef.h"
#include "llvm/Support/Error.h"
#include "llvm/Support/MemoryBuffer.h"

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace kvprec::calib {

/// Element types of the safetensors format.
enum class DType : uint8_t {
  Bool,
  U8,
  I8,
  U16,
  I16,
  U32,
  I32,
  U64,
  I64,
  F16,
  BF16,
  F32,
  F64,
  F8E4M3,
  F8E5M2,
};

/// Parses a safetensors dtype name ("F32", "I64", "F8_E4M3", ...).
std::optional<DType> parseDType(llvm::StringRef name);
/// The safetensors spelling of a dtype.
llvm::StringRef getDTypeName(DType dtype);
/// Size of one element in bytes.
size_t getDTypeSize(DType dtype);

/// Number of elements of a shape, or std::nullopt when a dimension is negative
/// or the product overflows int64_t.
std::optional<int64_t> getNumElements(llvm::ArrayRef<int64_t> shape);

/// Formats a shape as "[2, 3, 4]" for messages.
std::string formatShape(llvm::ArrayRef<int64_t> shape);

/// One tensor described by a safetensors header.
struct SafeTensorEntry {
  std::string name;
  DType dtype;
  llvm::SmallVector<int64_t, 4> shape;
  /// Byte range [begin, end) relative to the start of the data section.
  uint64_t begin = 0;
  uint64_t end = 0;

  int64_t getNumElements() const;
};

/// A parsed, validated safetensors file. Owns the file contents.
class SafeTensorsFile {
public:
  /// Reads and validates `path`. Errors name the file and what is wrong.
  static llvm::Expected<SafeTensorsFile> open(llvm::StringRef path);
  /// Validates an in-memory file; the buffer identifier names it in errors.
  static llvm::Expected<SafeTensorsFile>
  parse(std::unique_ptr<llvm::MemoryBuffer> buffer);

  /// The file name used in messages.
  llvm::StringRef getName() const { return name; }
  /// Whether the header had a "__metadata__" object.
  bool hasMetadata() const { return metadataPresent; }
  const std::map<std::string, std::string> &getMetadata() const {
    return metadata;
  }
  /// Tensors in data-offset order.
  llvm::ArrayRef<SafeTensorEntry> getTensors() const { return tensors; }
  /// The tensor called `name`, or nullptr.
  const SafeTensorEntry *lookup(llvm::StringRef name) const;

  /// Raw little-endian bytes of a tensor.
  llvm::ArrayRef<uint8_t> getBytes(const SafeTensorEntry &entry) const;
  /// Decoded values; the entry's dtype must be F32 (resp. I64).
  std::vector<float> readF32(const SafeTensorEntry &entry) const;
  std::vector<int64_t> readI64(const SafeTensorEntry &entry) const;

private:
  SafeTensorsFile() = default;

  std::string name;
  std::unique_ptr<llvm::MemoryBuffer> buffer;
  uint64_t dataStart = 0;
  bool metadataPresent = false;
  std::map<std::string, std::string> metadata;
  std::vector<SafeTensorEntry> tensors;
};

/// Builds a safetensors file. Tensor data is referenced, not copied: keep it
/// alive until write() returns. Data is laid out in insertion order and the
/// header is padded with spaces to a multiple of 8 bytes, as the reference
/// implementation does, so the data section is 8-byte aligned.
class SafeTensorsWriter {
public:
  /// Sets (or replaces) one "__metadata__" entry.
  void setMetadata(llvm::StringRef key, llvm::StringRef value);
  void removeMetadata(llvm::StringRef key);

  /// Adds a tensor, replacing any earlier tensor of the same name.
  void addF32(llvm::StringRef name, llvm::ArrayRef<int64_t> shape,
              llvm::ArrayRef<float> values);
  void addI64(llvm::StringRef name, llvm::ArrayRef<int64_t> shape,
              llvm::ArrayRef<int64_t> values);
  /// Adds a tensor of any dtype from raw little-endian bytes.
  void addRaw(llvm::StringRef name, DType dtype, llvm::ArrayRef<int64_t> shape,
              llvm::ArrayRef<uint8_t> littleEndianBytes);
  void removeTensor(llvm::StringRef name);

  /// Writes the file. Fails if a tensor's data does not match its shape, a
  /// name is empty or "__metadata__", or the file cannot be written.
  llvm::Error write(llvm::StringRef path) const;

private:
  /// How a pending tensor's data is stored in memory.
  enum class Source { RawBytes, HostF32, HostI64 };
  struct PendingTensor {
    std::string name;
    DType dtype;
    llvm::SmallVector<int64_t, 4> shape;
    Source source;
    const void *data;
    size_t numBytes;
  };
  void add(PendingTensor tensor);

  std::map<std::string, std::string> metadata;
  std::vector<PendingTensor> tensors;
};

} // namespace kvprec::calib

#endif // KVPREC_CALIBRATION_SAFETENSORS_H
