//===- Tokenizer.h - llama2.c BPE tokenizer ---------------------*- C++ -*-===//
//
// The tokenizer format of llama2.c (tokenizer.bin / tok512.bin): an int32
// max_token_length, then for each of vocab_size tokens a float32 merge score,
// an int32 byte length and the token's bytes. The vocabulary size is not in
// the file; it comes from the model header.
//
// Encoding follows llama2.c (and sentencepiece with byte fallback): a " "
// dummy prefix before non-empty text, one token per UTF-8 character (or its
// <0xNN> byte tokens when the character is not in the vocabulary), then
// repeatedly merge the adjacent pair whose concatenation is the vocabulary
// entry with the highest score.
//
//===----------------------------------------------------------------------===//

#ifndef KVPREC_CALIBRATION_TOKENIZER_H
#define KVPREC_CALIBRATION_TOKENIZER_H

#include "kvprec/Calibration/TextTokenizer.h"

#include "llvm/ADT/ArrayRef.h"
#include "llvm/ADT/StringMap.h"
#include "llvm/ADT/StringRef.h"
#include "llvm/Support/Error.h"

#include <array>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

namespace kvprec::calib {

class Tokenizer final : public TextTokenizer {
public:
  static constexpr int kUnknownToken = 0;
  static constexpr int kBOSToken = 1;
  static constexpr int kEOSToken = 2;

  /// Loads `path` holding exactly `vocabSize` tokens. Fails with a message
  /// naming the file and the token on truncation, negative lengths or
  /// trailing bytes.
  static llvm::Expected<Tokenizer> load(llvm::StringRef path,
                                        int32_t vocabSize);
  /// The same from bytes in memory; `context` names them in errors.
  static llvm::Expected<Tokenizer>
  fromBytes(llvm::StringRef bytes, llvm::StringRef context, int32_t vocabSize);
  /// Builds a tokenizer from pieces and scores (tests, tools).
  static llvm::Expected<Tokenizer> fromPieces(std::vector<std::string> pieces,
                                              std::vector<float> scores);

  /// Encodes `text`, optionally with BOS first and EOS last. Fails when a
  /// byte has neither a character token nor a <0xNN> fallback token, or,
  /// before any merging, when `text` is too long to fit in `maxTokens`
  /// tokens. O(n log n) in the length of `text`.
  llvm::Expected<std::vector<int>>
  encode(llvm::StringRef text, bool addBOS, bool addEOS,
         size_t maxTokens = std::numeric_limits<size_t>::max()) const override;

  /// The bytes `token` contributes after `previousToken`: a leading space is
  /// dropped right after BOS, and <0xNN> tokens become the raw byte.
  std::string decodePiece(int previousToken, int token) const override;
  /// Concatenated pieces of `tokens`, skipping BOS and EOS, each piece decoded
  /// with its predecessor as context. Inverse of encode(text, true, false).
  std::string decode(llvm::ArrayRef<int> tokens) const override;

  /// llama2.c's safe_printf rule: a single-byte piece that is neither
  /// printable nor whitespace is dropped when printing to a terminal.
  static bool isPrintable(llvm::StringRef piece);

  int32_t getVocabSize() const override {
    return static_cast<int32_t>(pieces.size());
  }
  int getBOS() const override { return kBOSToken; }
  int getEOS() const override { return kEOSToken; }
  int32_t getMaxTokenLength() const { return maxTokenLength; }
  llvm::StringRef getPiece(int token) const { return pieces[token]; }
  float getScore(int token) const { return scores[token]; }
  /// The token whose piece is exactly `piece`, or -1.
  int lookup(llvm::StringRef piece) const;

private:
  Tokenizer() = default;
  void buildIndex();

  int32_t maxTokenLength = 0;

  void mergePairs(std::vector<int> &tokens) const;
  std::vector<std::string> pieces;
  std::vector<float> scores;
  llvm::StringMap<int> pieceToToken;
  /// Token of each "<0xNN>" piece, or -1.
  std::array<int, 256> byteTokens;
};

} // namespace kvprec::calib

#endif // KVPREC_CALIBRATION_TOKENIZER_H
