//===- Tokenizer.cpp - llama2.c BPE tokenizer -----------------------------===//

#include "kvprec/Calibration/Tokenizer.h"
#include "kvprec/Calibration/InputFile.h"

#include "llvm/ADT/StringExtras.h"
#include "llvm/Support/Endian.h"
#include "llvm/Support/Format.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/raw_ostream.h"

#include <cassert>
#include <cctype>

using namespace llvm;

namespace kvprec::calib {

static Error makeError(StringRef context, const Twine &message) {
  return createStringError(inconvertibleErrorCode(), context + ": " + message);
}

/// The piece llama2.c uses for a raw byte: "<0x0A>".
static std::string getBytePiece(unsigned byte) {
  std::string piece;
  raw_string_ostream(piece) << format("<0x%02X>", byte);
  return piece;
}

/// Parses "<0xHH>" into HH; -1 for any other piece.
static int parseBytePiece(StringRef piece) {
  if (piece.size() != 6 || !piece.starts_with("<0x") || !piece.ends_with(">"))
    return -1;
  unsigned value;
  if (piece.substr(3, 2).getAsInteger(16, value))
    return -1;
  return static_cast<int>(value);
}

void Tokenizer::buildIndex() {
  pieceToToken.clear();
  // Keep the first token of a duplicated piece so lookups are deterministic.
  for (size_t i = 0; i < pieces.size(); ++i)
    pieceToToken.try_emplace(pieces[i], static_cast<int>(i));
  for (unsigned byte = 0; byte < 256; ++byte)
    byteTokens[byte] = lookup(getBytePiece(byte));
}

int Tokenizer::lookup(StringRef piece) const {
  auto it = pieceToToken.find(piece);
  return it == pieceToToken.end() ? -1 : it->second;
}

Expected<Tokenizer> Tokenizer::load(StringRef path, int32_t vocabSize) {
  if (vocabSize <= 0)
    return makeError(path, "vocabulary size must be positive, got " +
                               Twine(vocabSize));
  Expected<std::unique_ptr<MemoryBuffer>> buffer =
      openRegularFile(path, "tokenizer", uint64_t(1) << 30);
  if (!buffer)
    return buffer.takeError();
  StringRef bytes = (*buffer)->getBuffer();
  if (bytes.size() < 4)
    return makeError(path, "tokenizer file is " + Twine(bytes.size()) +
                               " bytes, too short for its max_token_length "
                               "field");

  Tokenizer tokenizer;
  tokenizer.maxTokenLength =
      static_cast<int32_t>(support::endian::read32le(bytes.data()));
  if (tokenizer.maxTokenLength <= 0)
    return makeError(path, "tokenizer max_token_length is " +
                               Twine(tokenizer.maxTokenLength) +
                               ", must be positive");
  tokenizer.pieces.reserve(vocabSize);
  tokenizer.scores.reserve(vocabSize);
  size_t offset = 4;
  for (int32_t token = 0; token < vocabSize; ++token) {
    if (bytes.size() - offset < 8)
      return makeError(path,
                       formatv("tokenizer is truncated: token {0} of {1} needs "
                               "8 bytes of score and length at offset {2}, but "
                               "the file has {3} bytes",
                               token, vocabSize, offset, bytes.size())
                           .str());
    float score =
        bit_cast<float>(support::endian::read32le(bytes.data() + offset));
    int32_t length = static_cast<int32_t>(
        support::endian::read32le(bytes.data() + offset + 4));
    offset += 8;
    if (length < 0)
      return makeError(path, formatv("tokenizer token {0} has negative length "
                                     "{1} at offset {2}",
                                     token, length, offset - 4)
                                 .str());
    if (bytes.size() - offset < static_cast<size_t>(length))
      return makeError(path,
                       formatv("tokenizer is truncated: token {0} of {1} needs "
                               "{2} bytes at offset {3}, but the file has {4} "
                               "bytes",
                               token, vocabSize, length, offset, bytes.size())
                           .str());
    tokenizer.scores.push_back(score);
    tokenizer.pieces.push_back(bytes.substr(offset, length).str());
    offset += length;
  }
  if (offset != bytes.size())
    return makeError(path,
                     formatv("tokenizer has {0} bytes after its {1} tokens; "
                             "it does not match the model's vocab_size {1}",
                             bytes.size() - offset, vocabSize)
                         .str());
  tokenizer.buildIndex();
  return tokenizer;
}

Expected<Tokenizer> Tokenizer::fromPieces(std::vector<std::string> pieces,
                                          std::vector<float> scores) {
  if (pieces.size() != scores.size() || pieces.empty())
    return makeError("tokenizer", "needs one score per piece and at least one "
                                  "piece");
  Tokenizer tokenizer;
  for (const std::string &piece : pieces)
    tokenizer.maxTokenLength =
        std::max<int32_t>(tokenizer.maxTokenLength, piece.size());
  tokenizer.pieces = std::move(pieces);
  tokenizer.scores = std::move(scores);
  tokenizer.buildIndex();
  return tokenizer;
}

Expected<std::vector<int>> Tokenizer::encode(StringRef text, bool addBOS,
                                             bool addEOS) const {
  std::vector<int> tokens;
  auto appendBytes = [&](StringRef chunk) -> Error {
    for (unsigned char byte : chunk) {
      if (byteTokens[byte] < 0)
        return makeError("tokenizer",
                         "cannot encode byte " + getBytePiece(byte) +
                             ": no piece for it and no byte fallback token");
      tokens.push_back(byteTokens[byte]);
    }
    return Error::success();
  };
  auto appendChunk = [&](StringRef chunk) -> Error {
    int token = lookup(chunk);
    if (token >= 0) {
      tokens.push_back(token);
      return Error::success();
    }
    return appendBytes(chunk);
  };

  // sentencepiece's add_dummy_prefix: words start with a space piece.
  if (!text.empty())
    if (Error e = appendChunk(" "))
      return std::move(e);

  // One chunk per UTF-8 character (at most 4 bytes), as llama2.c splits.
  size_t start = 0;
  while (start < text.size()) {
    size_t end = start + 1;
    while (end < text.size() && end - start < 4 &&
           (static_cast<unsigned char>(text[end]) & 0xC0) == 0x80)
      ++end;
    if (Error e = appendChunk(text.slice(start, end)))
      return std::move(e);
    start = end;
  }

  // Greedy BPE: merge the adjacent pair that forms the best-scoring piece.
  std::string merged;
  while (tokens.size() > 1) {
    float bestScore = -1e10f;
    int bestToken = -1;
    size_t bestIndex = 0;
    for (size_t i = 0; i + 1 < tokens.size(); ++i) {
      merged = pieces[tokens[i]];
      merged += pieces[tokens[i + 1]];
      int token = lookup(merged);
      if (token >= 0 && scores[token] > bestScore) {
        bestScore = scores[token];
        bestToken = token;
        bestIndex = i;
      }
    }
    if (bestToken < 0)
      break;
    tokens[bestIndex] = bestToken;
    tokens.erase(tokens.begin() + bestIndex + 1);
  }

  if (addBOS)
    tokens.insert(tokens.begin(), kBOSToken);
  if (addEOS)
    tokens.push_back(kEOSToken);
  return tokens;
}

std::string Tokenizer::decodePiece(int previousToken, int token) const {
  assert(token >= 0 && token < getVocabSize() && "token out of range");
  StringRef piece = pieces[token];
  // sentencepiece strips the dummy-prefix space of the first word.
  if (previousToken == kBOSToken && piece.starts_with(" "))
    piece = piece.drop_front();
  int byte = parseBytePiece(piece);
  if (byte >= 0)
    return std::string(1, static_cast<char>(byte));
  return piece.str();
}

std::string Tokenizer::decode(ArrayRef<int> tokens) const {
  std::string text;
  for (size_t i = 0; i < tokens.size(); ++i) {
    if (tokens[i] == kBOSToken || tokens[i] == kEOSToken)
      continue;
    text += decodePiece(i > 0 ? tokens[i - 1] : -1, tokens[i]);
  }
  return text;
}

bool Tokenizer::isPrintable(StringRef piece) {
  if (piece.size() != 1)
    return true;
  unsigned char byte = piece[0];
  return std::isprint(byte) || std::isspace(byte);
}

} // namespace kvprec::calib
