//===- SafeTensorsTest.cpp - safetensors reader and writer ----------------===//

#include "kvprec/Calibration/SafeTensors.h"

#include "TestUtils.h"

#include "llvm/Support/Endian.h"

#include "gtest/gtest.h"

#include <cstring>

using namespace llvm;
using namespace kvprec::calib;
using namespace kvprec::calib::test;

namespace {

/// A file made of a header length, `header` and `data`.
std::string makeRawFile(StringRef header, StringRef data) {
  char length[8];
  support::endian::write64le(length, header.size());
  return std::string(length, 8) + header.str() + data.str();
}

/// Writes a raw file and tries to open it; returns the error message.
std::string openRaw(const TempDir &dir, StringRef bytes) {
  std::string path = dir.path("raw.safetensors");
  writeFile(path, bytes);
  Expected<SafeTensorsFile> file = SafeTensorsFile::open(path);
  return errorMessage(file);
}

TEST(SafeTensorsTest, RoundTrip) {
  TempDir dir;
  std::string path = dir.path("round.safetensors");
  std::vector<float> floats = {1.5f, -2.25f, 0.0f, 3e-38f, -1e30f, 7.0f};
  std::vector<int64_t> ints = {0, -1, int64_t(1) << 40};
  std::vector<uint8_t> halves = {0x00, 0x3c, 0x00, 0xc0}; // F16 1.0, -2.0
  std::vector<float> empty;
  SafeTensorsWriter writer;
  writer.setMetadata("schema", "test");
  writer.setMetadata("note", "quote \" and \\ survive");
  writer.addF32("floats", {2, 3}, floats);
  writer.addI64("ints", {3}, ints);
  writer.addRaw("halves", DType::F16, {2}, halves);
  writer.addF32("empty", {0, 4}, empty);
  ASSERT_FALSE(errorMessage(writer.write(path)).size());

  std::string bytes = readFile(path);
  uint64_t headerLength = support::endian::read64le(bytes.data());
  EXPECT_EQ((8 + headerLength) % 8, 0u) << "data section is 8-byte aligned";

  Expected<SafeTensorsFile> file = SafeTensorsFile::open(path);
  ASSERT_TRUE(bool(file)) << errorMessage(file);
  EXPECT_TRUE(file->hasMetadata());
  EXPECT_EQ(file->getMetadata().at("schema"), "test");
  EXPECT_EQ(file->getMetadata().at("note"), "quote \" and \\ survive");
  ASSERT_EQ(file->getTensors().size(), 4u);

  const SafeTensorEntry *floatEntry = file->lookup("floats");
  ASSERT_NE(floatEntry, nullptr);
  EXPECT_EQ(floatEntry->dtype, DType::F32);
  EXPECT_EQ(ArrayRef<int64_t>(floatEntry->shape), ArrayRef<int64_t>({2, 3}));
  std::vector<float> readFloats = file->readF32(*floatEntry);
  ASSERT_EQ(readFloats.size(), floats.size());
  EXPECT_EQ(std::memcmp(readFloats.data(), floats.data(), 4 * floats.size()),
            0);

  const SafeTensorEntry *intEntry = file->lookup("ints");
  ASSERT_NE(intEntry, nullptr);
  EXPECT_EQ(file->readI64(*intEntry), ints);

  const SafeTensorEntry *halfEntry = file->lookup("halves");
  ASSERT_NE(halfEntry, nullptr);
  EXPECT_EQ(halfEntry->dtype, DType::F16);
  ArrayRef<uint8_t> halfBytes = file->getBytes(*halfEntry);
  EXPECT_EQ(std::vector<uint8_t>(halfBytes.begin(), halfBytes.end()), halves);

  const SafeTensorEntry *emptyEntry = file->lookup("empty");
  ASSERT_NE(emptyEntry, nullptr);
  EXPECT_EQ(emptyEntry->getNumElements(), 0);
  EXPECT_EQ(file->lookup("missing"), nullptr);
}

TEST(SafeTensorsTest, WriterReplacesAndRejects) {
  TempDir dir;
  std::vector<float> one = {1.0f}, two = {1.0f, 2.0f};
  SafeTensorsWriter writer;
  writer.addF32("x", {1}, one);
  writer.addF32("x", {2}, two); // replaces
  ASSERT_EQ(errorMessage(writer.write(dir.path("ok.safetensors"))), "");
  Expected<SafeTensorsFile> file =
      SafeTensorsFile::open(dir.path("ok.safetensors"));
  ASSERT_TRUE(bool(file)) << errorMessage(file);
  EXPECT_EQ(file->lookup("x")->getNumElements(), 2);
  EXPECT_FALSE(file->hasMetadata());

  writer.addF32("bad", {3}, two);
  EXPECT_NE(errorMessage(writer.write(dir.path("bad.safetensors")))
                .find("tensor 'bad' has 8 bytes of data but shape [3]"),
            std::string::npos);
  writer.removeTensor("bad");
  writer.addF32("__metadata__", {2}, two);
  EXPECT_NE(errorMessage(writer.write(dir.path("bad.safetensors")))
                .find("invalid tensor name"),
            std::string::npos);
}

TEST(SafeTensorsTest, DTypeNames) {
  for (StringRef name :
       {"BOOL", "U8", "I8", "U16", "I16", "U32", "I32", "U64", "I64", "F16",
        "BF16", "F32", "F64", "F8_E4M3", "F8_E5M2"}) {
    std::optional<DType> dtype = parseDType(name);
    ASSERT_TRUE(dtype.has_value()) << name.str();
    EXPECT_EQ(getDTypeName(*dtype), name);
  }
  EXPECT_FALSE(parseDType("F31").has_value());
  EXPECT_EQ(getDTypeSize(DType::BF16), 2u);
  EXPECT_EQ(getDTypeSize(DType::I64), 8u);
  EXPECT_FALSE(
      getNumElements({int64_t(1) << 40, int64_t(1) << 40}).has_value());
}

struct RejectCase {
  const char *label;
  std::string bytes;
  const char *expected;
};

TEST(SafeTensorsTest, RejectsMalformedFiles) {
  TempDir dir;
  std::string fourFloats(16, '\0');
  const RejectCase cases[] = {
      {"short file", "abc", "shorter than the 8-byte safetensors header"},
      {"header beyond file", makeRawFile("{}", "").substr(0, 8) + "{",
       "exceeds the 1 bytes"},
      {"empty header", makeRawFile("", ""), "header is empty"},
      {"not JSON", makeRawFile("{\"a\": [1, 2", ""), "not valid JSON"},
      {"not an object", makeRawFile("[1, 2]", ""), "not a JSON object"},
      {"entry not an object", makeRawFile("{\"t\": 3}", ""),
       "tensor 't': header entry is not a JSON object"},
      {"unknown dtype",
       makeRawFile(R"({"t": {"dtype": "F31", "shape": [4], )"
                   R"("data_offsets": [0, 16]}})",
                   fourFloats),
       "tensor 't': unknown dtype \"F31\""},
      {"missing dtype",
       makeRawFile(R"({"t": {"shape": [4], "data_offsets": [0, 16]}})",
                   fourFloats),
       "missing string \"dtype\""},
      {"negative dim",
       makeRawFile(R"({"t": {"dtype": "F32", "shape": [-4], )"
                   R"("data_offsets": [0, 16]}})",
                   fourFloats),
       "shape entries must be non-negative integers"},
      {"offsets arity",
       makeRawFile(R"({"t": {"dtype": "F32", "shape": [4], )"
                   R"("data_offsets": [0]}})",
                   fourFloats),
       "must be an array of two integers"},
      {"offsets reversed",
       makeRawFile(R"({"t": {"dtype": "F32", "shape": [0], )"
                   R"("data_offsets": [16, 0]}})",
                   fourFloats),
       "has begin > end"},
      {"offsets out of range",
       makeRawFile(R"({"t": {"dtype": "F32", "shape": [8], )"
                   R"("data_offsets": [0, 32]}})",
                   fourFloats),
       "is out of range: the data section has 16 bytes"},
      {"size mismatch",
       makeRawFile(R"({"t": {"dtype": "F32", "shape": [3], )"
                   R"("data_offsets": [0, 16]}})",
                   fourFloats),
       "span 16 bytes, but shape [3] of F32 needs 12 bytes"},
      {"overlap",
       makeRawFile(R"({"a": {"dtype": "F32", "shape": [3], )"
                   R"("data_offsets": [0, 12]}, )"
                   R"("b": {"dtype": "F32", "shape": [2], )"
                   R"("data_offsets": [8, 16]}})",
                   fourFloats),
       "tensor 'b' data_offsets [8, 16] overlap tensor 'a' [0, 12]"},
      {"gap",
       makeRawFile(R"({"a": {"dtype": "F32", "shape": [1], )"
                   R"("data_offsets": [0, 4]}, )"
                   R"("b": {"dtype": "F32", "shape": [2], )"
                   R"("data_offsets": [8, 16]}})",
                   fourFloats),
       "gap in the data section"},
      {"uncovered tail",
       makeRawFile(R"({"a": {"dtype": "F32", "shape": [2], )"
                   R"("data_offsets": [0, 8]}})",
                   fourFloats),
       "the data section has 16 bytes but the tensors cover 8"},
      {"metadata not object", makeRawFile(R"({"__metadata__": [1]})", ""),
       "\"__metadata__\" is not a JSON object"},
      {"metadata value not string",
       makeRawFile(R"({"__metadata__": {"layers": 5}})", ""),
       "\"__metadata__\" entry \"layers\" is not a string"},
  };
  for (const RejectCase &c : cases) {
    std::string message = openRaw(dir, c.bytes);
    EXPECT_NE(message.find(c.expected), std::string::npos)
        << c.label << ": got \"" << message << "\"";
    EXPECT_NE(message.find("raw.safetensors"), std::string::npos)
        << c.label << ": message must name the file";
  }
}

TEST(SafeTensorsTest, MissingFile) {
  TempDir dir;
  Expected<SafeTensorsFile> file =
      SafeTensorsFile::open(dir.path("nope.safetensors"));
  std::string message = errorMessage(file);
  EXPECT_NE(message.find("nope.safetensors: cannot open file"),
            std::string::npos)
      << message;
}

TEST(SafeTensorsTest, AcceptsPaddedHeaderAndZeroSizeTensors) {
  TempDir dir;
  std::string header = R"({"a": {"dtype": "I64", "shape": [1], )"
                       R"("data_offsets": [0, 8]}, )"
                       R"("z": {"dtype": "F32", "shape": [0, 3], )"
                       R"("data_offsets": [8, 8]}})";
  header.append(5, ' ');
  std::string data(8, '\0');
  data[0] = 7;
  EXPECT_EQ(openRaw(dir, makeRawFile(header, data)), "");
}

} // namespace
