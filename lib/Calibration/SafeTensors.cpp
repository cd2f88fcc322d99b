//===- SafeTensors.cpp - Read and write safetensors files -----------------===//

#include "kvprec/Calibration/SafeTensors.h"
#include "kvprec/Calibration/InputFile.h"

#include "llvm/ADT/STLExtras.h"
#include "llvm/ADT/StringSwitch.h"
#include "llvm/Support/Endian.h"
#include "llvm/Support/EndianStream.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/JSON.h"
#include "llvm/Support/MathExtras.h"
#include "llvm/Support/raw_ostream.h"

#include <algorithm>
#include <cassert>
#include <cstring>
#include <optional>

using namespace llvm;

namespace kvprec::calib {

// The reference implementation refuses headers above 100 MB; a header that
// large is a corrupt length field, not a real file.
static constexpr uint64_t kMaxHeaderBytes = 100'000'000;
/// A safetensors header nests three levels (the root object, a tensor's
/// object, its shape and offset arrays). llvm::json parses (and destroys)
/// recursively, so a header of tens of thousands of nested arrays would
/// overflow the stack: deeper headers are refused before parsing.
static constexpr unsigned kMaxHeaderNesting = 16;

/// The byte offset at which `text` (JSON) first nests deeper than `limit`
/// arrays and objects, if it does. Brackets inside strings do not count.
static std::optional<size_t> findExcessNesting(StringRef text, unsigned limit) {
  unsigned depth = 0;
  bool inString = false;
  for (size_t i = 0; i < text.size(); ++i) {
    char c = text[i];
    if (inString) {
      if (c == '\\')
        ++i;
      else if (c == '"')
        inString = false;
      continue;
    }
    if (c == '"')
      inString = true;
    else if (c == '[' || c == '{') {
      if (++depth > limit)
        return i;
    } else if ((c == ']' || c == '}') && depth > 0)
      --depth;
  }
  return std::nullopt;
}

std::optional<DType> parseDType(StringRef name) {
  return StringSwitch<std::optional<DType>>(name)
      .Case("BOOL", DType::Bool)
      .Case("U8", DType::U8)
      .Case("I8", DType::I8)
      .Case("U16", DType::U16)
      .Case("I16", DType::I16)
      .Case("U32", DType::U32)
      .Case("I32", DType::I32)
      .Case("U64", DType::U64)
      .Case("I64", DType::I64)
      .Case("F16", DType::F16)
      .Case("BF16", DType::BF16)
      .Case("F32", DType::F32)
      .Case("F64", DType::F64)
      .Case("F8_E4M3", DType::F8E4M3)
      .Case("F8_E5M2", DType::F8E5M2)
      .Default(std::nullopt);
}

StringRef getDTypeName(DType dtype) {
  switch (dtype) {
  case DType::Bool:
    return "BOOL";
  case DType::U8:
    return "U8";
  case DType::I8:
    return "I8";
  case DType::U16:
    return "U16";
  case DType::I16:
    return "I16";
  case DType::U32:
    return "U32";
  case DType::I32:
    return "I32";
  case DType::U64:
    return "U64";
  case DType::I64:
    return "I64";
  case DType::F16:
    return "F16";
  case DType::BF16:
    return "BF16";
  case DType::F32:
    return "F32";
  case DType::F64:
    return "F64";
  case DType::F8E4M3:
    return "F8_E4M3";
  case DType::F8E5M2:
    return "F8_E5M2";
  }
  llvm_unreachable("unknown dtype");
}

size_t getDTypeSize(DType dtype) {
  switch (dtype) {
  case DType::Bool:
  case DType::U8:
  case DType::I8:
  case DType::F8E4M3:
  case DType::F8E5M2:
    return 1;
  case DType::U16:
  case DType::I16:
  case DType::F16:
  case DType::BF16:
    return 2;
  case DType::U32:
  case DType::I32:
  case DType::F32:
    return 4;
  case DType::U64:
  case DType::I64:
  case DType::F64:
    return 8;
  }
  llvm_unreachable("unknown dtype");
}

std::optional<int64_t> getNumElements(ArrayRef<int64_t> shape) {
  int64_t count = 1;
  for (int64_t dim : shape) {
    if (dim < 0 || MulOverflow(count, dim, count))
      return std::nullopt;
  }
  return count;
}

std::string formatShape(ArrayRef<int64_t> shape) {
  std::string text = "[";
  raw_string_ostream os(text);
  interleave(shape, os, ", ");
  os << "]";
  return text;
}

int64_t SafeTensorEntry::getNumElements() const {
  return calib::getNumElements(shape).value_or(0);
}

//===----------------------------------------------------------------------===//
// Reader
//===----------------------------------------------------------------------===//

static Error makeError(StringRef file, const Twine &message) {
  return createStringError(inconvertibleErrorCode(), file + ": " + message);
}

Expected<SafeTensorsFile> SafeTensorsFile::open(StringRef path) {
  Expected<std::unique_ptr<MemoryBuffer>> buffer =
      openRegularFile(path, "file", uint64_t(1) << 40);
  if (!buffer)
    return buffer.takeError();
  return parse(std::move(*buffer));
}

/// Reads a JSON number that must be a non-negative integer.
static std::optional<int64_t> getNonNegativeInteger(const json::Value &value) {
  std::optional<int64_t> integer = value.getAsInteger();
  if (!integer || *integer < 0)
    return std::nullopt;
  return integer;
}

Expected<SafeTensorsFile>
SafeTensorsFile::parse(std::unique_ptr<MemoryBuffer> buffer) {
  SafeTensorsFile file;
  file.name = buffer->getBufferIdentifier().str();
  StringRef name = file.name;
  StringRef bytes = buffer->getBuffer();

  if (bytes.size() < 8)
    return makeError(name, "file is " + Twine(bytes.size()) +
                               " bytes, shorter than the 8-byte safetensors "
                               "header length");
  uint64_t headerLength = support::endian::read64le(bytes.data());
  uint64_t available = bytes.size() - 8;
  if (headerLength > available)
    return makeError(name, "safetensors header length " + Twine(headerLength) +
                               " exceeds the " + Twine(available) +
                               " bytes that follow the length field");
  if (headerLength > kMaxHeaderBytes)
    return makeError(name, "safetensors header length " + Twine(headerLength) +
                               " exceeds the limit of " +
                               Twine(kMaxHeaderBytes) + " bytes");
  if (headerLength == 0)
    return makeError(name, "safetensors header is empty");

  StringRef headerText = bytes.substr(8, headerLength);
  if (std::optional<size_t> offset =
          findExcessNesting(headerText, kMaxHeaderNesting))
    return makeError(
        name, "safetensors header nests arrays and objects more "
              "than " +
                  Twine(kMaxHeaderNesting) + " levels deep (at header byte " +
                  Twine(*offset) + ", file byte " + Twine(*offset + 8) +
                  "); a safetensors header needs 3");
  Expected<json::Value> header = json::parse(headerText);
  if (!header)
    return makeError(name, "safetensors header is not valid JSON: " +
                               toString(header.takeError()));
  const json::Object *root = header->getAsObject();
  if (!root)
    return makeError(name, "safetensors header is not a JSON object");

  file.dataStart = 8 + headerLength;
  uint64_t dataSize = bytes.size() - file.dataStart;

  for (const auto &[key, value] : *root) {
    StringRef tensorName = key;
    if (tensorName == "__metadata__") {
      const json::Object *metadata = value.getAsObject();
      if (!metadata)
        return makeError(name, "\"__metadata__\" is not a JSON object");
      for (const auto &[metaKey, metaValue] : *metadata) {
        std::optional<StringRef> text = metaValue.getAsString();
        if (!text)
          return makeError(name, "\"__metadata__\" entry \"" + metaKey +
                                     "\" is not a string");
        file.metadata[metaKey.str()] = text->str();
      }
      file.metadataPresent = true;
      continue;
    }

    std::string where = ("tensor '" + tensorName + "'").str();
    const json::Object *info = value.getAsObject();
    if (!info)
      return makeError(name, where + ": header entry is not a JSON object");

    SafeTensorEntry entry;
    entry.name = tensorName.str();
    std::optional<StringRef> dtypeName = info->getString("dtype");
    if (!dtypeName)
      return makeError(name, where + ": missing string \"dtype\"");
    std::optional<DType> dtype = parseDType(*dtypeName);
    if (!dtype)
      return makeError(name, where + ": unknown dtype \"" + *dtypeName + "\"");
    entry.dtype = *dtype;

    const json::Array *shape = info->getArray("shape");
    if (!shape)
      return makeError(name, where + ": missing array \"shape\"");
    for (const json::Value &dim : *shape) {
      std::optional<int64_t> size = getNonNegativeInteger(dim);
      if (!size)
        return makeError(
            name, where + ": shape entries must be non-negative integers");
      entry.shape.push_back(*size);
    }
    std::optional<int64_t> numElements = calib::getNumElements(entry.shape);
    if (!numElements)
      return makeError(name, where + ": shape " + formatShape(entry.shape) +
                                 " has too many elements");

    const json::Array *offsets = info->getArray("data_offsets");
    if (!offsets || offsets->size() != 2)
      return makeError(name, where + ": \"data_offsets\" must be an array of "
                                     "two integers [begin, end]");
    std::optional<int64_t> begin = getNonNegativeInteger((*offsets)[0]);
    std::optional<int64_t> end = getNonNegativeInteger((*offsets)[1]);
    if (!begin || !end)
      return makeError(name, where + ": \"data_offsets\" must be non-negative "
                                     "integers");
    if (*begin > *end)
      return makeError(name, where + ": data_offsets [" + Twine(*begin) + ", " +
                                 Twine(*end) + "] has begin > end");
    if (static_cast<uint64_t>(*end) > dataSize)
      return makeError(name, where + ": data_offsets [" + Twine(*begin) + ", " +
                                 Twine(*end) +
                                 "] is out of range: the data section has " +
                                 Twine(dataSize) + " bytes");
    entry.begin = *begin;
    entry.end = *end;
    bool overflowed = false;
    uint64_t expectedBytes = SaturatingMultiply(
        static_cast<uint64_t>(*numElements),
        static_cast<uint64_t>(getDTypeSize(entry.dtype)), &overflowed);
    if (overflowed || expectedBytes != entry.end - entry.begin)
      return makeError(
          name, where + ": data_offsets [" + Twine(*begin) + ", " +
                    Twine(*end) + "] span " + Twine(entry.end - entry.begin) +
                    " bytes, but shape " + formatShape(entry.shape) + " of " +
                    getDTypeName(entry.dtype) + " needs " +
                    Twine(*numElements * getDTypeSize(entry.dtype)) + " bytes");
    file.tensors.push_back(std::move(entry));
  }

  // The data section must be covered exactly once: sort by range and check
  // neighbours, so a corrupt header cannot alias or hide bytes.
  llvm::sort(file.tensors, [](const SafeTensorEntry &a,
                              const SafeTensorEntry &b) {
    return std::tie(a.begin, a.end, a.name) < std::tie(b.begin, b.end, b.name);
  });
  uint64_t covered = 0;
  const SafeTensorEntry *previous = nullptr;
  for (const SafeTensorEntry &entry : file.tensors) {
    if (entry.begin < covered)
      return makeError(name, "tensor '" + entry.name + "' data_offsets [" +
                                 Twine(entry.begin) + ", " + Twine(entry.end) +
                                 "] overlap tensor '" + previous->name + "' [" +
                                 Twine(previous->begin) + ", " +
                                 Twine(previous->end) + "]");
    if (entry.begin > covered)
      return makeError(name, "tensor '" + entry.name + "' starts at byte " +
                                 Twine(entry.begin) +
                                 " but the data before it "
                                 "ends at byte " +
                                 Twine(covered) + " (gap in the data section)");
    covered = entry.end;
    previous = &entry;
  }
  if (covered != dataSize)
    return makeError(name, "the data section has " + Twine(dataSize) +
                               " bytes but the tensors cover " +
                               Twine(covered));

  file.buffer = std::move(buffer);
  return file;
}

const SafeTensorEntry *SafeTensorsFile::lookup(StringRef tensorName) const {
  for (const SafeTensorEntry &entry : tensors)
    if (entry.name == tensorName)
      return &entry;
  return nullptr;
}

ArrayRef<uint8_t>
SafeTensorsFile::getBytes(const SafeTensorEntry &entry) const {
  const auto *data = reinterpret_cast<const uint8_t *>(
      buffer->getBufferStart() + dataStart + entry.begin);
  return ArrayRef<uint8_t>(data, entry.end - entry.begin);
}

std::vector<float>
SafeTensorsFile::readF32(const SafeTensorEntry &entry) const {
  assert(entry.dtype == DType::F32 && "tensor is not F32");
  ArrayRef<uint8_t> bytes = getBytes(entry);
  std::vector<float> values(bytes.size() / 4);
  for (size_t i = 0; i < values.size(); ++i)
    values[i] =
        bit_cast<float>(support::endian::read32le(bytes.data() + 4 * i));
  return values;
}

std::vector<int64_t>
SafeTensorsFile::readI64(const SafeTensorEntry &entry) const {
  assert(entry.dtype == DType::I64 && "tensor is not I64");
  ArrayRef<uint8_t> bytes = getBytes(entry);
  std::vector<int64_t> values(bytes.size() / 8);
  for (size_t i = 0; i < values.size(); ++i)
    values[i] =
        static_cast<int64_t>(support::endian::read64le(bytes.data() + 8 * i));
  return values;
}

//===----------------------------------------------------------------------===//
// Writer
//===----------------------------------------------------------------------===//

void SafeTensorsWriter::setMetadata(StringRef key, StringRef value) {
  metadata[key.str()] = value.str();
}

void SafeTensorsWriter::removeMetadata(StringRef key) {
  metadata.erase(key.str());
}

void SafeTensorsWriter::add(PendingTensor tensor) {
  removeTensor(tensor.name);
  tensors.push_back(std::move(tensor));
}

void SafeTensorsWriter::addF32(StringRef name, ArrayRef<int64_t> shape,
                               ArrayRef<float> values) {
  add({name.str(), DType::F32, SmallVector<int64_t, 4>(shape), Source::HostF32,
       values.data(), values.size() * sizeof(float)});
}

void SafeTensorsWriter::addI64(StringRef name, ArrayRef<int64_t> shape,
                               ArrayRef<int64_t> values) {
  add({name.str(), DType::I64, SmallVector<int64_t, 4>(shape), Source::HostI64,
       values.data(), values.size() * sizeof(int64_t)});
}

void SafeTensorsWriter::addRaw(StringRef name, DType dtype,
                               ArrayRef<int64_t> shape,
                               ArrayRef<uint8_t> littleEndianBytes) {
  add({name.str(), dtype, SmallVector<int64_t, 4>(shape), Source::RawBytes,
       littleEndianBytes.data(), littleEndianBytes.size()});
}

void SafeTensorsWriter::removeTensor(StringRef name) {
  llvm::erase_if(tensors,
                 [&](const PendingTensor &t) { return t.name == name; });
}

Error SafeTensorsWriter::write(StringRef path) const {
  json::Object header;
  uint64_t offset = 0;
  for (const PendingTensor &tensor : tensors) {
    if (tensor.name.empty() || tensor.name == "__metadata__")
      return makeError(path, "invalid tensor name \"" + tensor.name + "\"");
    std::optional<int64_t> numElements = getNumElements(tensor.shape);
    if (!numElements)
      return makeError(path, "tensor '" + tensor.name + "' has invalid shape " +
                                 formatShape(tensor.shape));
    uint64_t expectedBytes =
        static_cast<uint64_t>(*numElements) * getDTypeSize(tensor.dtype);
    if (expectedBytes != tensor.numBytes)
      return makeError(
          path, "tensor '" + tensor.name + "' has " + Twine(tensor.numBytes) +
                    " bytes of data but shape " + formatShape(tensor.shape) +
                    " of " + getDTypeName(tensor.dtype) + " needs " +
                    Twine(expectedBytes));
    json::Array shape;
    for (int64_t dim : tensor.shape)
      shape.push_back(dim);
    header[tensor.name] = json::Object{
        {"dtype", getDTypeName(tensor.dtype)},
        {"shape", std::move(shape)},
        {"data_offsets",
         json::Array{static_cast<int64_t>(offset),
                     static_cast<int64_t>(offset + tensor.numBytes)}}};
    offset += tensor.numBytes;
  }
  if (!metadata.empty()) {
    json::Object meta;
    for (const auto &[key, value] : metadata)
      meta[key] = value;
    header["__metadata__"] = std::move(meta);
  }

  std::string headerText;
  raw_string_ostream(headerText) << json::Value(std::move(header));
  headerText.append((8 - headerText.size() % 8) % 8, ' ');

  std::error_code ec;
  raw_fd_ostream os(path, ec, sys::fs::OF_None);
  if (ec)
    return makeError(path, "cannot open for writing: " + ec.message());
  support::endian::write<uint64_t>(os, uint64_t(headerText.size()),
                                   llvm::endianness::little);
  os << headerText;
  for (const PendingTensor &tensor : tensors) {
    bool needsSwap =
        !sys::IsLittleEndianHost && tensor.source != Source::RawBytes;
    if (!needsSwap) {
      os.write(static_cast<const char *>(tensor.data), tensor.numBytes);
      continue;
    }
    if (tensor.source == Source::HostF32) {
      const auto *values = static_cast<const float *>(tensor.data);
      for (size_t i = 0; i < tensor.numBytes / 4; ++i)
        support::endian::write<uint32_t>(os, bit_cast<uint32_t>(values[i]),
                                         llvm::endianness::little);
    } else {
      const auto *values = static_cast<const int64_t *>(tensor.data);
      for (size_t i = 0; i < tensor.numBytes / 8; ++i)
        support::endian::write<int64_t>(os, values[i],
                                        llvm::endianness::little);
    }
  }
  os.close();
  if (os.has_error()) {
    std::error_code writeError = os.error();
    os.clear_error();
    return makeError(path, "write failed: " + writeError.message());
  }
  return Error::success();
}

} // namespace kvprec::calib
