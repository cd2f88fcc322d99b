//===- hf-tokenizer-fuzzer.cpp - the tokenizer.json loader and BPE --------===//
//
// Input: tokenizer.json text. A tokenizer the loader accepts (vocabulary of
// 4096, BOS 1, EOS 2) encodes a fixed text and the input's last bytes, and
// decodes what it produced: every id must be inside the vocabulary.
//
//===----------------------------------------------------------------------===//

#include "kvprec/Calibration/HFTokenizer.h"

#include "llvm/Support/Error.h"

#include <cstdint>
#include <cstdlib>

using namespace kvprec::calib;

static void encodeAndCheck(const HFTokenizer &tokenizer, llvm::StringRef text) {
  llvm::Expected<std::vector<int>> ids =
      tokenizer.encode(text, /*addBOS=*/true, /*addEOS=*/true, 1 << 16);
  if (!ids) {
    llvm::consumeError(ids.takeError());
    return;
  }
  (void)tokenizer.decode(*ids);
  int previous = tokenizer.getBOS();
  for (int id : *ids) {
    if (id < 0 || id >= tokenizer.getVocabSize())
      std::abort();
    (void)tokenizer.decodePiece(previous, id);
    previous = id;
  }
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  llvm::StringRef text(reinterpret_cast<const char *>(data), size);
  llvm::Expected<HFTokenizer> tokenizer =
      HFTokenizer::fromJSON(text, "<fuzz input>", 4096, 1, 2);
  if (!tokenizer) {
    llvm::consumeError(tokenizer.takeError());
    return 0;
  }
  encodeAndCheck(*tokenizer,
                 "Once upon a time, <s> caf\xC3\xA9 \xF0\x9F\x99\x82");
  encodeAndCheck(*tokenizer, text.take_back(std::min<size_t>(size, 256)));
  return 0;
}
