//===- EncodeAndCheck.h - what the tokenizer fuzzers check ------*- C++ -*-===//
//
// Shared by tokenizer-fuzzer.cpp (llama2.c) and hf-tokenizer-fuzzer.cpp
// (tokenizer.json): an encoded text's ids are inside the vocabulary, and
// decoding them, whole and piece by piece, does not crash.
//
//===----------------------------------------------------------------------===//

#ifndef KVPREC_FUZZ_ENCODEANDCHECK_H
#define KVPREC_FUZZ_ENCODEANDCHECK_H

#include "kvprec/Calibration/TextTokenizer.h"

#include "llvm/Support/Error.h"

#include <cstdlib>

inline void encodeAndCheck(const kvprec::calib::TextTokenizer &tokenizer,
                           llvm::StringRef text, size_t maxTokens) {
  llvm::Expected<std::vector<int>> ids =
      tokenizer.encode(text, /*addBOS=*/true, /*addEOS=*/true, maxTokens);
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

#endif // KVPREC_FUZZ_ENCODEANDCHECK_H
