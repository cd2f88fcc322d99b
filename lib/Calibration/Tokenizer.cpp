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
#include <cmath>
#include <queue>

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
  Expected<std::unique_ptr<MemoryBuffer>> buffer =
      openRegularFile(path, "tokenizer", uint64_t(1) << 30);
  if (!buffer)
    return buffer.takeError();
  return fromBytes((*buffer)->getBuffer(), path, vocabSize);
}

Expected<Tokenizer> Tokenizer::fromBytes(StringRef bytes, StringRef path,
                                         int32_t vocabSize) {
  // llama2.c reserves ids 0, 1 and 2 for <unk>, BOS and EOS; encode emits
  // the last two (the tokenizer fuzzer found a 1-token vocabulary that made
  // it return ids outside the vocabulary).
  if (vocabSize <= kEOSToken)
    return makeError(path, "vocabulary size must be at least 3 (<unk>, BOS "
                           "and EOS are ids 0, 1 and 2), got " +
                               Twine(vocabSize));
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
    if (!std::isfinite(score))
      return makeError(path, formatv("tokenizer token {0} has score {1} at "
                                     "offset {2}; scores must be finite",
                                     token, score, offset - 8)
                                 .str());
    if (length > tokenizer.maxTokenLength)
      return makeError(path, formatv("tokenizer token {0} is {1} bytes, longer "
                                     "than the header's max_token_length {2}",
                                     token, length, tokenizer.maxTokenLength)
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
  for (size_t i = 0; i < scores.size(); ++i)
    if (!std::isfinite(scores[i]))
      return makeError("tokenizer",
                       formatv("piece {0} has score {1}; scores must be finite",
                               i, scores[i])
                           .str());
  if (pieces.size() <= size_t(kEOSToken))
    return makeError("tokenizer", formatv("has {0} pieces; ids 0, 1 and 2 are "
                                          "<unk>, BOS and EOS, so it needs "
                                          "at least 3",
                                          pieces.size())
                                      .str());
  Tokenizer tokenizer;
  tokenizer.maxTokenLength = 1;
  for (const std::string &piece : pieces)
    tokenizer.maxTokenLength =
        std::max<int32_t>(tokenizer.maxTokenLength, piece.size());
  tokenizer.pieces = std::move(pieces);
  tokenizer.scores = std::move(scores);
  tokenizer.buildIndex();
  return tokenizer;
}

/// Greedy BPE as llama2.c runs it: repeatedly merge the adjacent pair whose
/// concatenation is the best-scoring piece, the leftmost on ties. llama2.c
/// rescans all pairs per merge (quadratic); here candidate pairs sit in a
/// max-heap over a doubly linked list, with stale entries skipped when
/// popped, so n symbols cost O(n log n) lookups and heap operations.
void Tokenizer::mergePairs(std::vector<int> &tokens) const {
  size_t n = tokens.size();
  if (n < 2)
    return;
  // Node i keeps its original index, so index order is sequence order and
  // the smallest live index is the leftmost pair.
  std::vector<size_t> next(n), prev(n);
  std::vector<uint32_t> version(n, 0);
  for (size_t i = 0; i < n; ++i) {
    next[i] = i + 1; // n marks the end
    prev[i] = i == 0 ? n : i - 1;
  }
  struct Candidate {
    float score;
    size_t left, right;
    int token;
    uint32_t leftVersion, rightVersion;
  };
  auto worse = [](const Candidate &a, const Candidate &b) {
    if (a.score != b.score)
      return a.score < b.score;
    return a.left > b.left;
  };
  std::priority_queue<Candidate, std::vector<Candidate>, decltype(worse)> heap(
      worse);
  std::string merged;
  auto push = [&](size_t left) {
    if (left >= n || next[left] >= n)
      return;
    size_t right = next[left];
    merged = pieces[tokens[left]];
    merged += pieces[tokens[right]];
    int token = lookup(merged);
    // llama2.c starts its search at -1e10: pieces scored at or below it
    // never merge.
    if (token < 0 || !(scores[token] > -1e10f))
      return;
    heap.push(
        {scores[token], left, right, token, version[left], version[right]});
  };
  for (size_t i = 0; i + 1 < n; ++i)
    push(i);
  std::vector<bool> alive(n, true);
  while (!heap.empty()) {
    Candidate best = heap.top();
    heap.pop();
    size_t left = best.left;
    size_t right = best.right;
    if (!alive[left] || next[left] != right ||
        version[left] != best.leftVersion ||
        version[right] != best.rightVersion)
      continue;
    tokens[left] = best.token;
    ++version[left];
    alive[right] = false;
    next[left] = next[right];
    if (next[right] < n)
      prev[next[right]] = left;
    if (prev[left] < n)
      push(prev[left]);
    push(left);
  }
  size_t out = 0;
  for (size_t i = 0; i < n; i = next[i])
    tokens[out++] = tokens[i];
  tokens.resize(out);
}

Expected<std::vector<int>> Tokenizer::encode(StringRef text, bool addBOS,
                                             bool addEOS,
                                             size_t maxTokens) const {
  // No piece covers more than max_token_length bytes of text, so the dummy
  // prefix plus `text` needs at least this many tokens; refuse before any
  // work when that already exceeds the caller's limit.
  uint64_t covered = uint64_t(text.size()) + (text.empty() ? 0 : 1);
  uint64_t atLeast = (covered + maxTokenLength - 1) / maxTokenLength +
                     (addBOS ? 1 : 0) + (addEOS ? 1 : 0);
  if (atLeast > maxTokens)
    return makeError(
        "tokenizer",
        formatv("text of {0} bytes needs at least {1} tokens (no piece is "
                "longer than {2} bytes), more than the limit of {3}",
                text.size(), atLeast, maxTokenLength, maxTokens)
            .str());
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

  mergePairs(tokens);

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
