//===- hf-tokenizer-fuzzer.cpp - the tokenizer.json loader and BPE --------===//
//
// Input: tokenizer.json text. A tokenizer the loader accepts (vocabulary of
// 4096, BOS 1, EOS 2) encodes a fixed text and the input's last bytes, and
// decodes what it produced: every id must be inside the vocabulary.
//
//===----------------------------------------------------------------------===//

#include "kvprec/Calibration/HFTokenizer.h"

#include "llvm/Support/Error.h"

#include "EncodeAndCheck.h"

#include <cstdint>
#include <cstdlib>

using namespace kvprec::calib;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  llvm::StringRef text(reinterpret_cast<const char *>(data), size);
  llvm::Expected<HFTokenizer> tokenizer =
      HFTokenizer::fromJSON(text, "<fuzz input>", 4096, 1, 2);
  if (!tokenizer) {
    llvm::consumeError(tokenizer.takeError());
    return 0;
  }
  encodeAndCheck(*tokenizer,
                 "Once upon a time, <s> caf\xC3\xA9 \xF0\x9F\x99\x82", 1 << 16);
  encodeAndCheck(*tokenizer, text.take_back(std::min<size_t>(size, 256)),
                 1 << 16);
  return 0;
}
