//===- TestUtils.cpp - Helpers for the calibration unit tests -------------===//

#include "TestUtils.h"

#include "llvm/Support/Endian.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/Path.h"
#include "llvm/Support/raw_ostream.h"

#include "gtest/gtest.h"

#include <cmath>
#include <cstdlib>

using namespace llvm;

namespace kvprec::calib::test {

TempDir::TempDir() {
  SmallString<128> dir;
  std::error_code ec = sys::fs::createUniqueDirectory("kvprec-calib-test", dir);
  EXPECT_FALSE(ec) << ec.message();
  root = dir.str().str();
}

TempDir::~TempDir() { sys::fs::remove_directories(root); }

std::string TempDir::path(StringRef name) const {
  SmallString<128> full(root);
  sys::path::append(full, name);
  return full.str().str();
}

void writeFile(StringRef path, StringRef bytes) {
  std::error_code ec;
  raw_fd_ostream os(path, ec, sys::fs::OF_None);
  ASSERT_FALSE(ec) << ec.message();
  os << bytes;
}

std::string readFile(StringRef path) {
  ErrorOr<std::unique_ptr<MemoryBuffer>> buffer =
      MemoryBuffer::getFile(path, /*IsText=*/false,
                            /*RequiresNullTerminator=*/false);
  if (!buffer)
    return "";
  return (*buffer)->getBuffer().str();
}

std::optional<std::string> getStories260KDir() {
  const char *models = std::getenv("KVPREC_MODELS_DIR");
  if (!models)
    return std::nullopt;
  SmallString<128> dir(models);
  sys::path::append(dir, "stories260K");
  SmallString<128> checkpoint(dir);
  sys::path::append(checkpoint, "stories260K.bin");
  if (!sys::fs::exists(checkpoint))
    return std::nullopt;
  return dir.str().str();
}

LlamaConfig getTinyConfig() {
  LlamaConfig config;
  config.dim = 16;
  config.hiddenDim = 24;
  config.numLayers = 2;
  config.numHeads = 4;
  config.numKVHeads = 2;
  config.vocabSize = 32;
  config.seqLen = 40;
  config.sharedClassifier = true;
  return config;
}

std::string makeCheckpoint(const LlamaConfig &config, uint64_t seed,
                           double ropeTheta) {
  std::string bytes;
  auto putInt = [&](int32_t value) {
    char buffer[4];
    support::endian::write32le(buffer, static_cast<uint32_t>(value));
    bytes.append(buffer, 4);
  };
  auto putFloat = [&](float value) {
    char buffer[4];
    support::endian::write32le(buffer, bit_cast<uint32_t>(value));
    bytes.append(buffer, 4);
  };
  uint64_t state = seed * 0x9E3779B97F4A7C15ull + 1;
  auto random = [&]() {
    // xorshift64*, mapped to roughly N(0, 0.3^2) by summing uniforms.
    double sum = 0.0;
    for (int i = 0; i < 4; ++i) {
      state ^= state >> 12;
      state ^= state << 25;
      state ^= state >> 27;
      sum += static_cast<double>((state * 0x2545F4914F6CDD1Dull) >> 11) *
             0x1.0p-53;
    }
    return static_cast<float>((sum - 2.0) * 0.5);
  };
  auto putRandom = [&](uint64_t count) {
    for (uint64_t i = 0; i < count; ++i)
      putFloat(random());
  };
  auto putOnes = [&](uint64_t count) {
    for (uint64_t i = 0; i < count; ++i)
      putFloat(1.0f + 0.1f * random());
  };

  putInt(config.dim);
  putInt(config.hiddenDim);
  putInt(config.numLayers);
  putInt(config.numHeads);
  putInt(config.numKVHeads);
  putInt(config.sharedClassifier ? config.vocabSize : -config.vocabSize);
  putInt(config.seqLen);
  uint64_t d = config.dim, layers = config.numLayers, hidden = config.hiddenDim,
           kvDim = config.getKVDim();
  putRandom(uint64_t(config.vocabSize) * d); // embedding
  putOnes(layers * d);                       // rms_att
  putRandom(layers * d * d);                 // wq
  putRandom(layers * kvDim * d);             // wk
  putRandom(layers * kvDim * d);             // wv
  putRandom(layers * d * d);                 // wo
  putOnes(layers * d);                       // rms_ffn
  putRandom(layers * hidden * d);            // w1
  putRandom(layers * d * hidden);            // w2
  putRandom(layers * hidden * d);            // w3
  putOnes(d);                                // rms_final
  int headSize = config.getHeadSize();
  for (int table = 0; table < 2; ++table)
    for (int pos = 0; pos < config.seqLen; ++pos)
      for (int i = 0; i < headSize / 2; ++i) {
        double angle = pos * std::pow(ropeTheta, -2.0 * i / headSize);
        putFloat(
            static_cast<float>(table == 0 ? std::cos(angle) : std::sin(angle)));
      }
  if (!config.sharedClassifier)
    putRandom(uint64_t(config.vocabSize) * d);
  return bytes;
}

std::string errorMessage(Error error) {
  if (!error)
    return "";
  return toString(std::move(error));
}

} // namespace kvprec::calib::test
