//===- TextTokenizer.h - what commands ask of a tokenizer -----*- C++ -*-===//
//
// The interface kvprec-calib's commands use, implemented by the llama2.c
// tokenizer (Tokenizer.h) and the Hugging Face tokenizer.json BPE
// (HFTokenizer.h).
//
//===----------------------------------------------------------------------===//

#ifndef KVPREC_CALIBRATION_TEXTTOKENIZER_H
#define KVPREC_CALIBRATION_TEXTTOKENIZER_H

#include "llvm/ADT/ArrayRef.h"
#include "llvm/ADT/StringRef.h"
#include "llvm/Support/Error.h"

#include <cstdint>
#include <limits>
#include <string>
#include <vector>

namespace kvprec::calib {

class TextTokenizer {
public:
  virtual ~TextTokenizer();
  /// Encodes `text`, optionally with BOS first and EOS last. Fails with a
  /// message when the text cannot be encoded or would exceed `maxTokens`.
  virtual llvm::Expected<std::vector<int>>
  encode(llvm::StringRef text, bool addBOS, bool addEOS,
         size_t maxTokens = std::numeric_limits<size_t>::max()) const = 0;
  /// The bytes `token` contributes after `previousToken` when streaming.
  virtual std::string decodePiece(int previousToken, int token) const = 0;
  /// The text of `tokens`, without BOS and EOS.
  virtual std::string decode(llvm::ArrayRef<int> tokens) const = 0;
  virtual int32_t getVocabSize() const = 0;
  virtual int getBOS() const = 0;
  virtual int getEOS() const = 0;
};

} // namespace kvprec::calib

#endif // KVPREC_CALIBRATION_TEXTTOKENIZER_H
