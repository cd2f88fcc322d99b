//===- tokenizer-fuzzer.cpp - the llama2.c tokenizer loader and BPE -------===//
//
// Input: a 2-byte little-endian vocabulary size (1 to 4096), then the
// tokenizer file. A tokenizer the loader accepts encodes its own pieces,
// a text made of the input's bytes, and decodes what it produced: every id
// must be inside the vocabulary.
//
//===----------------------------------------------------------------------===//

#include "kvprec/Calibration/Tokenizer.h"

#include "llvm/Support/Error.h"

#include "EncodeAndCheck.h"

#include <cstdint>
#include <cstdlib>
#include <string>

using namespace kvprec::calib;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 2)
    return 0;
  int32_t vocabSize = 1 + ((data[0] | (data[1] << 8)) % 4096);
  llvm::StringRef bytes(reinterpret_cast<const char *>(data) + 2, size - 2);
  llvm::Expected<Tokenizer> tokenizer =
      Tokenizer::fromBytes(bytes, "<fuzz input>", vocabSize);
  if (!tokenizer) {
    llvm::consumeError(tokenizer.takeError());
    return 0;
  }
  std::string pieces;
  for (int32_t token = 0; token < vocabSize && pieces.size() < 2048; ++token)
    pieces += tokenizer->getPiece(token).str();
  encodeAndCheck(*tokenizer, pieces, 4096);
  encodeAndCheck(*tokenizer,
                 bytes.take_back(std::min<size_t>(bytes.size(), 512)), 4096);
  return 0;
}
