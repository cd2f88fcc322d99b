//===- TestUtils.h - Helpers for the calibration unit tests -----*- C++ -*-===//

#ifndef KVPREC_UNITTESTS_CALIBRATION_TESTUTILS_H
#define KVPREC_UNITTESTS_CALIBRATION_TESTUTILS_H

#include "kvprec/Calibration/Model.h"

#include "llvm/ADT/StringRef.h"
#include "llvm/Support/Error.h"

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace kvprec::calib::test {

/// A fresh directory, removed with its contents on destruction.
class TempDir {
public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir &) = delete;
  TempDir &operator=(const TempDir &) = delete;

  /// `name` inside the directory.
  std::string path(llvm::StringRef name) const;

private:
  std::string root;
};

/// Writes `bytes` to `path` (asserts on failure).
void writeFile(llvm::StringRef path, llvm::StringRef bytes);
std::string readFile(llvm::StringRef path);

/// The shared models folder from $KVPREC_MODELS_DIR, if it holds stories260K.
std::optional<std::string> getStories260KDir();

/// Bytes of a llama2.c checkpoint with random weights for `config`
/// (vocabSize > 0; sharedClassifier selects the header sign). `ropeTheta`
/// sets the legacy RoPE tables; 10000 is what the loader accepts.
std::string makeCheckpoint(const LlamaConfig &config, uint64_t seed,
                           double ropeTheta = 10000.0);

/// A small GQA config: dim 16, hidden 24, 2 layers, 4 heads, 2 KV heads,
/// vocab 32, seq_len 40.
LlamaConfig getTinyConfig();

/// The message of an error (consumes it); "" for success.
std::string errorMessage(llvm::Error error);
template <typename T> std::string errorMessage(llvm::Expected<T> &value) {
  if (value)
    return "";
  return errorMessage(value.takeError());
}

} // namespace kvprec::calib::test

#endif // KVPREC_UNITTESTS_CALIBRATION_TESTUTILS_H
