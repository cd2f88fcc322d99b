//===- HFTokenizer.h - Hugging Face tokenizer.json BPE ----------*- C++ -*-===//
//
// The BPE tokenizers of Hugging Face's tokenizer.json in the SentencePiece
// style of Llama 2, Mistral and TinyLlama: normalizers Prepend and Replace
// (alone or in a Sequence), no pre-tokenizer, a BPE model with merges
// (ranked; "a b" strings or [a, b] pairs), byte_fallback, unk and fuse_unk,
// added tokens, and the decoders Replace, ByteFallback, Fuse and Strip. Any
// other component is an error naming it.
//
// Encoding follows the Rust `tokenizers` library: the text is split on added
// tokens that are not normalized, each piece is normalized and split on the
// normalized added tokens (matched in their normalized form), and every
// other piece is encoded by BPE: one symbol per character (its <0xNN> byte
// tokens when the character is not in the vocabulary and byte_fallback is
// set, else unk, consecutive unks fused with fuse_unk), then the adjacent
// pair of lowest merge rank is merged until none is left. A priority queue
// makes it O(n log n) in the length of the text.
//
//===----------------------------------------------------------------------===//

#ifndef KVPREC_CALIBRATION_HFTOKENIZER_H
#define KVPREC_CALIBRATION_HFTOKENIZER_H

#include "kvprec/Calibration/TextTokenizer.h"

#include "llvm/ADT/DenseMap.h"
#include "llvm/ADT/StringMap.h"

#include <array>
#include <utility>

namespace kvprec::calib {

class HFTokenizer final : public TextTokenizer {
public:
  /// Loads a tokenizer.json whose vocabulary (with added tokens) has at
  /// most `vocabSize` entries, ids below it; `bos` and `eos` are the
  /// model's ids (config.json).
  static llvm::Expected<HFTokenizer> load(llvm::StringRef path,
                                          int32_t vocabSize, int bos, int eos);
  /// The same from JSON text; `context` names it in errors.
  static llvm::Expected<HFTokenizer> fromJSON(llvm::StringRef text,
                                              llvm::StringRef context,
                                              int32_t vocabSize, int bos,
                                              int eos);

  llvm::Expected<std::vector<int>>
  encode(llvm::StringRef text, bool addBOS, bool addEOS,
         size_t maxTokens = std::numeric_limits<size_t>::max()) const override;
  /// The decoders applied to one token: a leading space is stripped after
  /// BOS (or at the start, previousToken < 0), <0xNN> tokens become their
  /// byte, BOS, EOS and special added tokens give nothing.
  std::string decodePiece(int previousToken, int token) const override;
  /// The decoder chain over all of `tokens` (BOS, EOS and special added
  /// tokens skipped).
  std::string decode(llvm::ArrayRef<int> tokens) const override;
  int32_t getVocabSize() const override { return vocabSize; }
  int getBOS() const override { return bos; }
  int getEOS() const override { return eos; }

private:
  HFTokenizer() = default;
  struct AddedToken {
    std::string content, match;
    int id;
    bool normalized, special;
  };
  /// One text normalization step.
  struct Rewrite {
    bool prepend; // Prepend `text`, else replace `from` by `text`.
    std::string from, text;
  };
  std::string normalize(llvm::StringRef text) const;
  /// Appends the ids of `piece` (normalized, not an added token).
  llvm::Error encodeWord(llvm::StringRef piece, std::vector<int> &ids) const;
  /// Splits `text` on added tokens of the given kind, encoding the rest
  /// with `rest`.
  llvm::Error
  splitOnAdded(llvm::StringRef text, bool normalizedTokens,
               std::vector<int> &ids,
               llvm::function_ref<llvm::Error(llvm::StringRef)> rest) const;
  /// The decoders on one token's text (Replace, ByteFallback).
  std::string tokenText(int token, bool &isByte, uint8_t &byte) const;

  int32_t vocabSize = 0;
  int bos = 1, eos = 2, unk = -1;
  bool byteFallback = false, fuseUnk = false, ignoreMerges = false;
  std::vector<std::string> pieces;
  std::vector<bool> isSpecial;
  llvm::StringMap<int> vocab;
  /// (left, right) -> (rank, merged id).
  llvm::DenseMap<std::pair<int, int>, std::pair<int, int>> merges;
  std::array<int, 256> byteTokens;
  std::vector<AddedToken> added;
  std::vector<Rewrite> normalizers;
  /// Decoder chain: Replace rules, then ByteFallback, Fuse, Strip.
  std::vector<std::pair<std::string, std::string>> decodeReplace;
  bool decodeByteFallback = false;
  std::string stripContent;
  int stripStart = 0, stripStop = 0;
};

} // namespace kvprec::calib

#endif // KVPREC_CALIBRATION_HFTOKENIZER_H
